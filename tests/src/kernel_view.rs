//! What the kernel itself says about the test's sockets and namespace, to compare the tracer
//! with: `TCP_INFO` (the same `struct tcp_info` that `ss -ti` and sock_diag report), the
//! namespace's SNMP counters, and per-namespace sysctls.

use std::{io, os::fd::AsRawFd};

/// The head of `struct tcp_info` (include/uapi/linux/tcp.h) up to `tcpi_segs_in`, laid out as
/// the kernel writes it. The kernel copies at most the length we pass, so a shorter struct than
/// the kernel's is fine.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct TcpInfo {
    pub state: u8,
    pub ca_state: u8,
    pub retransmits: u8,
    pub probes: u8,
    pub backoff: u8,
    pub options: u8,
    pub wscale: u8,
    pub flags: u8,
    pub rto: u32,
    pub ato: u32,
    pub snd_mss: u32,
    pub rcv_mss: u32,
    pub unacked: u32,
    pub sacked: u32,
    pub lost: u32,
    pub retrans: u32,
    pub fackets: u32,
    pub last_data_sent: u32,
    pub last_ack_sent: u32,
    pub last_data_recv: u32,
    pub last_ack_recv: u32,
    pub pmtu: u32,
    pub rcv_ssthresh: u32,
    pub rtt: u32,
    pub rttvar: u32,
    pub snd_ssthresh: u32,
    pub snd_cwnd: u32,
    pub advmss: u32,
    pub reordering: u32,
    pub rcv_rtt: u32,
    pub rcv_space: u32,
    pub total_retrans: u32,
    pub pacing_rate: u64,
    pub max_pacing_rate: u64,
    pub bytes_acked: u64,
    pub bytes_received: u64,
    pub segs_out: u32,
    pub segs_in: u32,
}

/// `getsockopt(fd, IPPROTO_TCP, TCP_INFO)`.
pub fn tcp_info(socket: &impl AsRawFd) -> io::Result<TcpInfo> {
    let mut info = TcpInfo::default();
    let mut len = std::mem::size_of::<TcpInfo>() as libc::socklen_t;
    // SAFETY: `info` is a writable buffer of `len` bytes.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut info).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(info)
}

/// A counter of `/proc/thread-self/net/snmp` (the calling thread's network namespace), e.g.
/// `("Tcp", "RetransSegs")`.
pub fn snmp(group: &str, name: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/thread-self/net/snmp").expect("read snmp");
    let mut lines = text.lines().filter(|l| l.starts_with(&format!("{group}:")));
    let header = lines.next().expect("snmp header line");
    let values = lines.next().expect("snmp value line");
    let index = header
        .split_whitespace()
        .position(|h| h == name)
        .unwrap_or_else(|| panic!("no {group} {name} in snmp"));
    values
        .split_whitespace()
        .nth(index)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("bad {group} {name} value"))
}

/// Writes a sysctl of the calling thread's network namespace, e.g. `net/ipv4/tcp_syn_retries`.
pub fn set_sysctl(path: &str, value: &str) {
    std::fs::write(format!("/proc/sys/{path}"), value)
        .unwrap_or_else(|e| panic!("sysctl {path}={value}: {e}"));
}

/// Runs `nft` with `args` in the calling thread's network namespace (the child inherits it).
pub fn nft(script: &str) {
    let output = std::process::Command::new("nft")
        .arg(script)
        .output()
        .expect("run nft");
    assert!(
        output.status.success(),
        "nft {script}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A non-blocking receive that finds nothing: it makes every backend look at the socket once
/// more (refreshing the TCP counters it copies) without moving any byte.
pub fn poke(socket: &impl AsRawFd) {
    let mut byte = [0u8; 1];
    // SAFETY: valid descriptor and buffer.
    let n = unsafe {
        libc::recv(
            socket.as_raw_fd(),
            byte.as_mut_ptr().cast(),
            1,
            libc::MSG_DONTWAIT,
        )
    };
    let err = io::Error::last_os_error();
    assert!(
        n < 0 && err.kind() == io::ErrorKind::WouldBlock,
        "poke expected EAGAIN, got {n} ({err})"
    );
}

/// What `ss -tin` prints for one socket: its counters as `ss` formats them.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SsInfo {
    pub segs_out: u64,
    pub segs_in: u64,
    /// `retrans:<now>/<total>`: the total (absent, i.e. 0, when both are 0).
    pub total_retrans: u32,
    /// `rtt:<rtt>/<rttvar>` in milliseconds (`tcpi_rtt / 1000`, printed with `%g`).
    pub rtt_ms: f64,
    pub rttvar_ms: f64,
    /// `bytes_sent`, `bytes_retrans` (absent, i.e. 0, when 0), `bytes_acked`,
    /// `bytes_received`: the `tcpi_*` fields as is (`bytes_acked` and `bytes_received` follow
    /// sequence numbers: the connecting side's SYN and a FIN count as a byte each).
    pub bytes_sent: u64,
    pub bytes_retrans: u64,
    pub bytes_acked: u64,
    pub bytes_received: u64,
}

/// `ss -tin` in the calling thread's network namespace, per (local, peer) address pair; `None`
/// where the `ss` binary is missing (the qemu images carry busybox only).
pub fn ss_tcp_info() -> Option<std::collections::HashMap<(String, String), SsInfo>> {
    let output = std::process::Command::new("ss")
        .args(["-tinH"])
        .output()
        .ok()?;
    assert!(output.status.success(), "ss -tin failed");
    Some(parse_ss(&String::from_utf8_lossy(&output.stdout)))
}

/// Parses `ss -tinH`: a header line per socket (`State Recv-Q Send-Q Local Peer`), then an
/// indented line of `key:value` items.
pub fn parse_ss(text: &str) -> std::collections::HashMap<(String, String), SsInfo> {
    let mut out = std::collections::HashMap::new();
    let mut current: Option<(String, String)> = None;
    for line in text.lines() {
        if !line.starts_with(char::is_whitespace) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            current = match fields.as_slice() {
                [_, _, _, local, peer, ..] => Some(((*local).to_owned(), (*peer).to_owned())),
                _ => None,
            };
            continue;
        }
        let Some(key) = current.take() else { continue };
        let mut info = SsInfo::default();
        for item in line.split_whitespace() {
            let Some((name, value)) = item.split_once(':') else {
                continue;
            };
            let pair = || {
                value
                    .split_once('/')
                    .map(|(a, b)| (a.to_owned(), b.to_owned()))
            };
            match name {
                "segs_out" => info.segs_out = value.parse().expect("segs_out"),
                "segs_in" => info.segs_in = value.parse().expect("segs_in"),
                "bytes_sent" => info.bytes_sent = value.parse().expect("bytes_sent"),
                "bytes_retrans" => info.bytes_retrans = value.parse().expect("bytes_retrans"),
                "bytes_acked" => info.bytes_acked = value.parse().expect("bytes_acked"),
                "bytes_received" => info.bytes_received = value.parse().expect("bytes_received"),
                "rtt" => {
                    let (a, b) = pair().expect("rtt");
                    info.rtt_ms = a.parse().expect("rtt");
                    info.rttvar_ms = b.parse().expect("rttvar");
                }
                "retrans" => {
                    info.total_retrans = pair().expect("retrans").1.parse().expect("retrans")
                }
                _ => {}
            }
        }
        out.insert(key, info);
    }
    out
}

/// One BPF link in the kernel: the program it attaches, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttachedLink {
    /// The attached program's name (the kernel keeps the first 15 bytes).
    pub program: String,
    pub target: LinkTarget,
}

/// Where a link attaches, as far as these tests need to tell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkTarget {
    /// A classic tracepoint (perf-event link), by event name, e.g. `sys_enter_sendto`.
    Tracepoint(String),
    /// A raw tracepoint, by name, e.g. `sock_send_length`.
    RawTracepoint(String),
    /// A cgroup program, by attach type (`enum bpf_attach_type`).
    Cgroup(u32),
    /// Any other link type, or a perf-event link that is not a tracepoint.
    Other(u32),
}

/// `bpf(2)` commands and constants (include/uapi/linux/bpf.h).
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_LINK_GET_FD_BY_ID: libc::c_long = 30;
const BPF_LINK_TYPE_RAW_TRACEPOINT: u32 = 1;
const BPF_LINK_TYPE_CGROUP: u32 = 3;
const BPF_LINK_TYPE_PERF_EVENT: u32 = 7;
const BPF_PERF_EVENT_TRACEPOINT: u32 = 5;

/// `bpf(cmd, attr, size)` with a zero-padded `attr`.
fn bpf(cmd: libc::c_long, attr: &mut [u64; 8]) -> io::Result<i64> {
    // SAFETY: `attr` is a valid, writable buffer of the size passed.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.as_mut_ptr(),
            std::mem::size_of_val(attr),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(rc)
}

/// `struct bpf_link_info` of link `fd`, with `name` as the buffer of the name the kernel copies
/// out (raw tracepoint, or perf-event tracepoint).
fn link_info(fd: &std::os::fd::OwnedFd, name: &mut [u8; 128]) -> io::Result<[u64; 16]> {
    let mut info = [0u64; 16];
    let u32_at = |info: &mut [u64; 16], byte: usize, value: u32| {
        let word = &mut info[byte / 8];
        let shift = (byte % 8) * 8;
        *word = (*word & !(0xffff_ffffu64 << shift)) | (u64::from(value) << shift);
    };
    // First pass: the type, to know where the name buffer goes.
    let mut attr = [0u64; 8];
    let get = |info: &mut [u64; 16], attr: &mut [u64; 8]| -> io::Result<()> {
        attr.fill(0);
        attr[0] = fd.as_raw_fd() as u32 as u64 | ((std::mem::size_of_val(info) as u64) << 32);
        attr[1] = info.as_mut_ptr() as u64;
        bpf(BPF_OBJ_GET_INFO_BY_FD, attr).map(drop)
    };
    get(&mut info, &mut attr)?;
    let link_type = info[0] as u32;
    let perf_type = info[2] as u32;
    let name_ptr = name.as_mut_ptr() as u64;
    let name_len = name.len() as u32;
    match link_type {
        // raw_tracepoint { __aligned_u64 tp_name; __u32 tp_name_len; } at byte 16.
        BPF_LINK_TYPE_RAW_TRACEPOINT => {
            info = [0; 16];
            info[2] = name_ptr;
            u32_at(&mut info, 24, name_len);
        }
        // perf_event { __u32 type; __u32 :32; tracepoint { __aligned_u64 tp_name; __u32
        // name_len; ... } } at byte 16 (6.6+).
        BPF_LINK_TYPE_PERF_EVENT if perf_type == BPF_PERF_EVENT_TRACEPOINT => {
            info = [0; 16];
            info[3] = name_ptr;
            u32_at(&mut info, 32, name_len);
        }
        _ => return Ok(info),
    }
    get(&mut info, &mut attr)?;
    Ok(info)
}

/// Every BPF link in the kernel whose program's name starts with `prefix`, and where it
/// attaches (read with `BPF_LINK_GET_NEXT_ID`, `BPF_LINK_GET_FD_BY_ID` and
/// `BPF_OBJ_GET_INFO_BY_FD`, like `bpftool link`). Perf-event links name their tracepoint from
/// Linux 6.6 on; before, they come back as `Other`.
pub fn attached_links(prefix: &str) -> Vec<AttachedLink> {
    let names: std::collections::HashMap<u32, String> = aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter_map(|p| Some((p.id(), p.name_as_str()?.to_owned())))
        .filter(|(_, name)| name.starts_with(prefix))
        .collect();
    let mut out = Vec::new();
    for link in aya::programs::loaded_links().filter_map(Result::ok) {
        let Some(program) = names.get(&link.program_id()) else {
            continue;
        };
        let mut attr = [0u64; 8];
        attr[0] = u64::from(link.id());
        let fd = match bpf(BPF_LINK_GET_FD_BY_ID, &mut attr) {
            // SAFETY: the kernel returned a new descriptor that nothing else owns.
            Ok(fd) => unsafe {
                <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32)
            },
            // Detached between the listing and now.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
            Err(e) => panic!("BPF_LINK_GET_FD_BY_ID {}: {e}", link.id()),
        };
        let mut name = [0u8; 128];
        let info = link_info(&fd, &mut name).expect("BPF_OBJ_GET_INFO_BY_FD of a link");
        let text = || {
            let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
            String::from_utf8_lossy(&name[..end]).into_owned()
        };
        let link_type = info[0] as u32;
        let target = match link_type {
            BPF_LINK_TYPE_RAW_TRACEPOINT => LinkTarget::RawTracepoint(text()),
            BPF_LINK_TYPE_PERF_EVENT if info[2] as u32 == BPF_PERF_EVENT_TRACEPOINT => {
                LinkTarget::Tracepoint(text())
            }
            // cgroup { __u64 cgroup_id; __u32 attach_type; } at byte 16.
            BPF_LINK_TYPE_CGROUP => LinkTarget::Cgroup(info[3] as u32),
            other => LinkTarget::Other(other),
        };
        out.push(AttachedLink {
            program: program.clone(),
            target,
        });
    }
    out
}

/// `BPF_TASK_FD_QUERY` (Linux 4.15+) and its `fd_type`s.
const BPF_TASK_FD_QUERY: libc::c_long = 20;
const BPF_FD_TYPE_RAW_TRACEPOINT: u32 = 0;
const BPF_FD_TYPE_TRACEPOINT: u32 = 1;

/// The tracepoints (classic or raw) that this process's descriptors attach BPF programs to, by
/// name, as the kernel reports them for each descriptor (`BPF_TASK_FD_QUERY`, what
/// `bpftool perf` shows; Linux 4.15+). Unlike [`attached_links`], this sees tracepoints attached
/// without a BPF link too (perf-event attachments before 5.15).
pub fn own_attached_tracepoints() -> Vec<String> {
    let pid = std::process::id();
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return out;
    };
    for entry in dir.filter_map(Result::ok) {
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let mut name = [0u8; 128];
        // struct { u32 pid; u32 fd; u32 flags; u32 buf_len; u64 buf; u32 prog_id;
        // u32 fd_type; u64 probe_offset; u64 probe_addr; } task_fd_query
        let mut attr = [0u64; 8];
        attr[0] = u64::from(pid) | (u64::from(fd) << 32);
        attr[1] = (name.len() as u64) << 32;
        attr[2] = name.as_mut_ptr() as u64;
        // Not a perf event or raw tracepoint with a program (most descriptors): an error.
        if bpf(BPF_TASK_FD_QUERY, &mut attr).is_err() {
            continue;
        }
        let fd_type = (attr[3] >> 32) as u32;
        if fd_type == BPF_FD_TYPE_TRACEPOINT || fd_type == BPF_FD_TYPE_RAW_TRACEPOINT {
            let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
            out.push(String::from_utf8_lossy(&name[..end]).into_owned());
        }
    }
    out
}
