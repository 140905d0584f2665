//! Resolves [`KernelLayout`] (kernel struct offsets from BTF, tracepoint offsets from tracefs) for
//! the running kernel. Rust eBPF gets no CO-RE relocations, so this is how one object reads the
//! right bytes on every kernel.

use std::path::Path;

use tracer_common::{
    offsets::{FdOffsets, KernelLayout, SockLengthFormat, SockOffsets, UdpSyscallFormats},
    tracepoint::InetSockSetStateFormat,
};

use super::{btf::Btf, tracefs::EventFormat};
use crate::{Error, Result};

/// Offsets of every `struct sock` / `tcp_sock` / `net` field the programs read.
pub fn sock_offsets(btf: &Btf, btf_path: &Path) -> Result<SockOffsets> {
    let offset = |structure: &str, path: &str| -> Result<u16> {
        let offset = btf.member_offset(structure, path).map_err(|e| Error::Btf {
            path: btf_path.to_owned(),
            reason: format!("{structure}.{path}: {e}"),
        })?;
        u16::try_from(offset).map_err(|_| Error::Btf {
            path: btf_path.to_owned(),
            reason: format!("{structure}.{path} at offset {offset} does not fit in 16 bits"),
        })
    };
    Ok(SockOffsets {
        skc_daddr: offset("sock", "__sk_common.skc_daddr")?,
        skc_rcv_saddr: offset("sock", "__sk_common.skc_rcv_saddr")?,
        skc_dport: offset("sock", "__sk_common.skc_dport")?,
        skc_num: offset("sock", "__sk_common.skc_num")?,
        skc_family: offset("sock", "__sk_common.skc_family")?,
        skc_net: offset("sock", "__sk_common.skc_net")?,
        skc_v6_daddr: offset("sock", "__sk_common.skc_v6_daddr")?,
        skc_v6_rcv_saddr: offset("sock", "__sk_common.skc_v6_rcv_saddr")?,
        sk_err: offset("sock", "sk_err")?,
        sk_protocol: offset("sock", "sk_protocol")?,
        net_ns_inum: offset("net", "ns.inum")?,
        tcp_srtt_us: offset("tcp_sock", "srtt_us")?,
        tcp_mdev_us: offset("tcp_sock", "mdev_us")?,
        tcp_segs_in: offset("tcp_sock", "segs_in")?,
        tcp_segs_out: offset("tcp_sock", "segs_out")?,
        tcp_total_retrans: offset("tcp_sock", "total_retrans")?,
        skc_state: offset("sock", "__sk_common.skc_state")?,
        tcp_rcv_nxt: offset("tcp_sock", "rcv_nxt")?,
        tcp_copied_seq: offset("tcp_sock", "copied_seq")?,
        sk_socket: offset("sock", "sk_socket")?,
        task_group_leader: offset("task_struct", "group_leader")?,
        task_comm: offset("task_struct", "comm")?,
        sk_receive_queue_qlen: offset("sock", "sk_receive_queue.qlen")?,
    })
}

/// The `sock:inet_sock_set_state` record layout.
pub fn inet_sock_set_state(tracefs: &Path) -> Result<InetSockSetStateFormat> {
    let name = "sock/inet_sock_set_state";
    let format = EventFormat::read(tracefs, "sock", "inet_sock_set_state")?;
    let offset = |field: &str| format.field(name, field).map(|f| f.offset);
    let protocol = format.field(name, "protocol")?;
    Ok(InetSockSetStateFormat {
        skaddr: offset("skaddr")?,
        oldstate: offset("oldstate")?,
        newstate: offset("newstate")?,
        sport: offset("sport")?,
        dport: offset("dport")?,
        family: offset("family")?,
        protocol: protocol.offset,
        protocol_size: protocol.size,
        saddr: offset("saddr")?,
        daddr: offset("daddr")?,
        saddr_v6: offset("saddr_v6")?,
        daddr_v6: offset("daddr_v6")?,
    })
}

/// The `sock:sock_send_length` layout (`sock_recv_length` has the same one), or zeros on kernels
/// without it (the tracepoint backend is then not planned, and nothing reads these).
fn sock_length(tracefs: &Path) -> Result<SockLengthFormat> {
    let name = "sock/sock_send_length";
    if !tracefs.join("events/sock/sock_send_length").is_dir() {
        return Ok(SockLengthFormat::default());
    }
    let format = EventFormat::read(tracefs, "sock", "sock_send_length")?;
    let offset = |field: &str| format.field(name, field).map(|f| f.offset);
    Ok(SockLengthFormat {
        sk: offset("sk")?,
        protocol: offset("protocol")?,
        ret: offset("ret")?,
        flags: offset("flags")?,
    })
}

/// Offsets from the current task to the socket behind a file descriptor.
pub(crate) fn fd_offsets(btf: &Btf, btf_path: &Path) -> Result<FdOffsets> {
    let offset = |structure: &str, path: &str| -> Result<u16> {
        btf.member_offset(structure, path)
            .ok()
            .and_then(|o| u16::try_from(o).ok())
            .ok_or_else(|| Error::Btf {
                path: btf_path.to_owned(),
                reason: format!("{structure}.{path}: missing or beyond 64 KiB"),
            })
    };
    Ok(FdOffsets {
        task_files: offset("task_struct", "files")?,
        files_fdt: offset("files_struct", "fdt")?,
        fdtable_max_fds: offset("fdtable", "max_fds")?,
        fdtable_fd: offset("fdtable", "fd")?,
        file_private_data: offset("file", "private_data")?,
        socket_sk: offset("socket", "sk")?,
    })
}

/// Everything at once.
pub fn resolve(btf: &Btf, btf_path: &Path, tracefs: &Path) -> Result<KernelLayout> {
    let retransmit = EventFormat::read(tracefs, "tcp", "tcp_retransmit_skb")?;
    Ok(KernelLayout {
        sock: sock_offsets(btf, btf_path)?,
        inet_sock_set_state: inet_sock_set_state(tracefs)?,
        sock_length: sock_length(tracefs)?,
        tcp_retransmit_skaddr: retransmit.field("tcp/tcp_retransmit_skb", "skaddr")?.offset,
        tcp_receive_reset_skaddr: EventFormat::read(tracefs, "tcp", "tcp_receive_reset")?
            .field("tcp/tcp_receive_reset", "skaddr")?
            .offset,
        msghdr_msg_name: btf
            .member_offset("msghdr", "msg_name")
            .ok()
            .and_then(|o| u16::try_from(o).ok())
            .ok_or_else(|| Error::Btf {
                path: btf_path.to_owned(),
                reason: "msghdr.msg_name not found".to_owned(),
            })?,
        fd: fd_offsets(btf, btf_path)?,
        sys_exit_ret: EventFormat::read(tracefs, "syscalls", "sys_exit_accept4")?
            .field("syscalls/sys_exit_accept4", "ret")?
            .offset,
        udp_syscalls: udp_syscalls(tracefs)?,
    })
}

/// The UDP send/receive syscall tracepoints' layouts (tracepoint backend), or zeros on kernels
/// without syscall tracepoints (CONFIG_FTRACE_SYSCALLS off: the tracepoint backend is then not
/// planned, and nothing reads these).
fn udp_syscalls(tracefs: &Path) -> Result<UdpSyscallFormats> {
    if !tracefs.join("events/syscalls/sys_enter_sendto").is_dir() {
        return Ok(UdpSyscallFormats::default());
    }
    let offset = |event: &str, field: &str| -> Result<u16> {
        let format = EventFormat::read(tracefs, "syscalls", event)?;
        Ok(format.field(&format!("syscalls/{event}"), field)?.offset)
    };
    Ok(UdpSyscallFormats {
        sendto_addr: offset("sys_enter_sendto", "addr")?,
        sendmsg_msg: offset("sys_enter_sendmsg", "msg")?,
        sendmmsg_mmsg: offset("sys_enter_sendmmsg", "mmsg")?,
        recvfrom_addr: offset("sys_enter_recvfrom", "addr")?,
        recvmsg_msg: offset("sys_enter_recvmsg", "msg")?,
        recvmmsg_mmsg: offset("sys_enter_recvmmsg", "mmsg")?,
        recvfrom_ret: offset("sys_exit_recvfrom", "ret")?,
        recvmsg_ret: offset("sys_exit_recvmsg", "ret")?,
        recvmmsg_ret: offset("sys_exit_recvmmsg", "ret")?,
    })
}
