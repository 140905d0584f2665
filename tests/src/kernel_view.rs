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
