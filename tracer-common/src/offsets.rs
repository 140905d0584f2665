//! Kernel struct and tracepoint layouts resolved in userspace from the running kernel (BTF and
//! tracefs) and handed to the programs as one read-only global.

use crate::tracepoint::InetSockSetStateFormat;

/// Byte offsets of the kernel struct fields the programs read with `bpf_probe_read_kernel`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockOffsets {
    /// `sock.__sk_common.skc_daddr`
    pub skc_daddr: u16,
    /// `sock.__sk_common.skc_rcv_saddr`
    pub skc_rcv_saddr: u16,
    /// `sock.__sk_common.skc_dport` (network order)
    pub skc_dport: u16,
    /// `sock.__sk_common.skc_num` (host order)
    pub skc_num: u16,
    /// `sock.__sk_common.skc_family`
    pub skc_family: u16,
    /// `sock.__sk_common.skc_net` (a `struct net *`)
    pub skc_net: u16,
    /// `sock.__sk_common.skc_v6_daddr`
    pub skc_v6_daddr: u16,
    /// `sock.__sk_common.skc_v6_rcv_saddr`
    pub skc_v6_rcv_saddr: u16,
    /// `sock.sk_err`
    pub sk_err: u16,
    /// `sock.sk_protocol` (u16 since 5.6)
    pub sk_protocol: u16,
    /// `net.ns.inum`
    pub net_ns_inum: u16,
    /// `tcp_sock.srtt_us`
    pub tcp_srtt_us: u16,
    /// `tcp_sock.mdev_us`
    pub tcp_mdev_us: u16,
    /// `tcp_sock.segs_in`
    pub tcp_segs_in: u16,
    /// `tcp_sock.segs_out`
    pub tcp_segs_out: u16,
    /// `tcp_sock.total_retrans`
    pub tcp_total_retrans: u16,
    /// `sock.__sk_common.skc_state` (a `u8`: a TCP state; new TCP entries need a data state,
    /// the TCP iterator skips request and timewait socks)
    pub skc_state: u16,
    /// `tcp_sock.rcv_nxt`: the next sequence number expected from the peer
    pub tcp_rcv_nxt: u16,
    /// `tcp_sock.copied_seq`: the first byte the application has not read yet
    pub tcp_copied_seq: u16,
    /// `sock.sk_socket`: the user's `struct socket`, NULL once the application closed it
    pub sk_socket: u16,
    /// `task_struct.group_leader`: the process's main thread (whose `comm` is the process name
    /// that `ps` and `/proc/<pid>/comm` show; a worker thread may be named otherwise, as dig's
    /// `isc-net-0000`)
    pub task_group_leader: u16,
    /// `task_struct.comm`
    pub task_comm: u16,
    /// `sock.sk_receive_queue.qlen`: empty when unread bytes were discarded (a close with
    /// unread data purges the queue before the state becomes CLOSE)
    pub sk_receive_queue_qlen: u16,
    /// `tcp_sock.bytes_sent` (a `u64`, retransmits included): read once, for a connection
    /// found at start
    pub tcp_bytes_sent: u16,
    /// `tcp_sock.bytes_retrans` (a `u64`): read once, for a connection found at start
    pub tcp_bytes_retrans: u16,
    /// `tcp_sock.bytes_received` (a `u64`): read once, for a connection found at start
    pub tcp_bytes_received: u16,
}

/// Offsets of the `sock:sock_send_length` / `sock:sock_recv_length` records (same layout).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockLengthFormat {
    pub sk: u16,
    pub protocol: u16,
    pub ret: u16,
    pub flags: u16,
}

/// Everything the connection programs need to know about the running kernel.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelLayout {
    pub sock: SockOffsets,
    pub inet_sock_set_state: InetSockSetStateFormat,
    pub sock_length: SockLengthFormat,
    /// `tcp:tcp_retransmit_skb` field `skaddr`.
    pub tcp_retransmit_skaddr: u16,
    /// `tcp:tcp_receive_reset` field `skaddr`.
    pub tcp_receive_reset_skaddr: u16,
    /// `msghdr.msg_name` (kernel `struct msghdr`, for fentry/kprobe UDP hooks).
    pub msghdr_msg_name: u16,
    /// From a file to its socket, and from a task to its owner fields.
    pub file: FileOffsets,
}

impl KernelLayout {
    /// All offsets zero: the placeholder the eBPF global starts from; userspace patches the
    /// running kernel's layout in at load time.
    // SAFETY: every field, nested ones included, is an integer or an array of integers, for
    // which all-zero bytes are a valid value.
    pub const UNRESOLVED: Self = unsafe { core::mem::zeroed() };
}

/// Offsets from an open file to its socket, and from a task to its owner fields and descriptors:
/// the `iter/task_file` walk (`tracer-ebpf/src/iter/task_file.rs`) that names the owners of
/// accepted connections, hooks that get a `struct socket *` (`tcp_splice_read`), and hooks that
/// get a descriptor of the current task (`SSL_set_fd`: `conn::fd`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FileOffsets {
    /// `file.private_data` (a `struct socket *` for a socket file)
    pub file_private_data: u16,
    /// `socket.sk`
    pub socket_sk: u16,
    /// `socket.file`: the file a socket belongs to, to check that `private_data` was a socket
    pub socket_file: u16,
    /// `task_struct.tgid`
    pub task_tgid: u16,
    /// `task_struct.cgroups` (a `struct css_set *`)
    pub task_cgroups: u16,
    /// `css_set.dfl_cgrp`: the task's cgroup v2 cgroup
    pub css_set_dfl_cgrp: u16,
    /// `cgroup.kn`
    pub cgroup_kn: u16,
    /// `kernfs_node.id`: the cgroup id (`bpf_get_current_cgroup_id` returns the same one)
    pub kernfs_node_id: u16,
    /// `task_struct.files`
    pub task_files: u16,
    /// `files_struct.fdt`
    pub files_fdt: u16,
    /// `fdtable.max_fds`
    pub fdtable_max_fds: u16,
    /// `fdtable.fd`
    pub fdtable_fd: u16,
}
