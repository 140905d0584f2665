//! Resolves [`KernelLayout`] (kernel struct offsets from BTF, tracepoint offsets from tracefs) for
//! the running kernel. Rust eBPF gets no CO-RE relocations, so this is how one object reads the
//! right bytes on every kernel.

use std::path::Path;

use tracer_common::{
    offsets::{FileOffsets, KernelLayout, SockLengthFormat, SockOffsets},
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
        tcp_bytes_sent: offset("tcp_sock", "bytes_sent")?,
        tcp_bytes_retrans: offset("tcp_sock", "bytes_retrans")?,
        tcp_bytes_received: offset("tcp_sock", "bytes_received")?,
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

/// Offsets from a file to its socket and from a task to its owner fields (the `iter/task_file`
/// owner walk).
pub(crate) fn file_offsets(btf: &Btf, btf_path: &Path) -> Result<FileOffsets> {
    let offset = |structure: &str, path: &str| -> Result<u16> {
        btf.member_offset(structure, path)
            .ok()
            .and_then(|o| u16::try_from(o).ok())
            .ok_or_else(|| Error::Btf {
                path: btf_path.to_owned(),
                reason: format!("{structure}.{path}: missing or beyond 64 KiB"),
            })
    };
    Ok(FileOffsets {
        file_private_data: offset("file", "private_data")?,
        socket_sk: offset("socket", "sk")?,
        socket_file: offset("socket", "file")?,
        task_tgid: offset("task_struct", "tgid")?,
        task_cgroups: offset("task_struct", "cgroups")?,
        css_set_dfl_cgrp: offset("css_set", "dfl_cgrp")?,
        cgroup_kn: offset("cgroup", "kn")?,
        kernfs_node_id: offset("kernfs_node", "id")?,
        task_files: offset("task_struct", "files")?,
        files_fdt: offset("files_struct", "fdt")?,
        fdtable_max_fds: offset("fdtable", "max_fds")?,
        fdtable_fd: offset("fdtable", "fd")?,
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
        file: file_offsets(btf, btf_path)?,
    })
}
