//! The DNS tests' ground truth: a real server (dnsmasq) and a real client (dig), both from
//! Debian (`cargo xtask setup` installs them on the host, the initramfs ships them into the
//! VMs), plus a tiny query encoder and response reader for the tests that resolve and then
//! connect themselves, and for the test's own upstream servers (one that answers every query
//! with a fixed rcode, one that never answers).

use std::{
    fs::File,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket},
    os::fd::AsRawFd,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

/// DNS query type numbers (RFC 1035, RFC 3596).
pub const TYPE_A: u16 = 1;
pub const TYPE_CNAME: u16 = 5;
pub const TYPE_AAAA: u16 = 28;

/// The number of a query type as dig names it.
pub fn qtype_number(name: &str) -> u16 {
    match name {
        "A" => TYPE_A,
        "CNAME" => TYPE_CNAME,
        "AAAA" => TYPE_AAAA,
        other => panic!("no query type number for {other}"),
    }
}

/// The rcode of a status as dig prints it (RFC 1035 4.1.1).
pub fn rcode_number(status: &str) -> u32 {
    match status {
        "NOERROR" => 0,
        "FORMERR" => 1,
        "SERVFAIL" => 2,
        "NXDOMAIN" => 3,
        "NOTIMP" => 4,
        "REFUSED" => 5,
        other => panic!("unknown dig status {other}"),
    }
}

/// A domain name as the tests compare it: lower case, without the root's trailing dot.
pub fn normalized(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

static DIR_COUNTER: AtomicU32 = AtomicU32::new(0);

/// A dnsmasq in a named network namespace (`ip netns exec`, which execs it: the child is
/// dnsmasq itself), in the foreground (`-k`), with no upstream but the `--server` lines given,
/// no /etc/hosts and no /etc/resolv.conf; killed on drop. It runs as root (`--user= --group=`:
/// no user switch, so it needs no /etc/passwd, which the VMs lack) and logs every query to its
/// log file, printed when a test fails.
pub struct Dnsmasq {
    child: Child,
    dir: PathBuf,
}

impl Dnsmasq {
    /// Starts dnsmasq in `netns`, listening on `listen` port 53 (UDP and TCP), with `args`
    /// added (the zone); returns once its pid file is written and its sockets are bound.
    pub fn start(netns: &str, listen: IpAddr, args: &[String]) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "nttest-dnsmasq-{}-{}",
            std::process::id(),
            DIR_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dnsmasq dir");
        let pid_file = dir.join("dnsmasq.pid");
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", netns, "dnsmasq", "--keep-in-foreground"])
            .args([
                "--no-resolv",
                "--no-hosts",
                "--port=53",
                "--bind-interfaces",
            ])
            .arg(format!("--listen-address={listen}"))
            .args(["--user=", "--group=", "--log-queries"])
            .arg(format!("--pid-file={}", pid_file.display()))
            .arg(format!(
                "--log-facility={}",
                dir.join("dnsmasq.log").display()
            ))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit());
        let child = command.spawn().unwrap_or_else(|e| {
            panic!("dnsmasq: {e} (cargo xtask setup installs dnsmasq-base; the VMs ship it)")
        });
        let mut server = Self { child, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = server.child.try_wait().expect("wait dnsmasq") {
                panic!("dnsmasq exited at start ({status}): {}", server.log());
            }
            let written = std::fs::read_to_string(&pid_file)
                .ok()
                .and_then(|t| t.trim().parse::<u32>().ok());
            if written == Some(server.child.id()) && server.listening() {
                return server;
            }
            assert!(
                Instant::now() < deadline,
                "dnsmasq did not start: {}",
                server.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether dnsmasq's UDP and TCP sockets on port 53 are bound, from its own view of its
    /// namespace (/proc/PID/net), without a probe query (that would be one more query for the
    /// tracer to count).
    fn listening(&self) -> bool {
        let pid = self.child.id();
        let bound = |file: &str, state: Option<&str>| {
            let table =
                std::fs::read_to_string(format!("/proc/{pid}/net/{file}")).unwrap_or_default();
            table.lines().skip(1).any(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                fields.get(1).is_some_and(|local| local.ends_with(":0035"))
                    && state.is_none_or(|s| fields.get(3) == Some(&s))
            })
        };
        let udp = bound("udp", None) || bound("udp6", None);
        let tcp = bound("tcp", Some("0A")) || bound("tcp6", Some("0A"));
        udp && tcp
    }

    /// dnsmasq's query log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("dnsmasq.log")).unwrap_or_default()
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- dnsmasq log:\n{}---", self.log());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One record of dig's answer section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigRecord {
    pub name: String,
    pub ttl: u32,
    pub rtype: String,
    pub data: String,
}

/// What dig reported for one query.
#[derive(Debug, Clone)]
pub struct DigAnswer {
    /// The response code, from dig's `status:`.
    pub rcode: u32,
    /// dig's `;; Query time:` (run with `-u`: microseconds).
    pub query_time_us: u64,
    /// The answer section.
    pub answers: Vec<DigRecord>,
}

impl DigAnswer {
    /// The addresses of the A and AAAA records of the answer.
    pub fn addresses(&self) -> Vec<IpAddr> {
        self.answers
            .iter()
            .filter(|r| r.rtype == "A" || r.rtype == "AAAA")
            .map(|r| r.data.parse().expect("address"))
            .collect()
    }
}

/// Runs `dig -u @server name qtype +tries=1 +time=5` plus `extra` (e.g. `+tcp`), one query and
/// no retry, in the calling thread's network namespace, or in the named `netns` through `ip
/// netns exec`; returns what it printed. Panics when dig cannot run or gets no answer.
///
/// `-u` makes dig print its query time in microseconds from `CLOCK_REALTIME` (without it dig
/// reads the coarse clock, a jiffy of resolution, and prints whole milliseconds). dig reads
/// the clock before its send and after its receive returns, so its time brackets the moments
/// the query and the answer crossed its socket.
pub fn dig(
    netns: Option<&str>,
    server: IpAddr,
    name: &str,
    qtype: &str,
    extra: &[&str],
) -> DigAnswer {
    let mut command = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, "dig"]);
            c
        }
        None => Command::new("dig"),
    };
    command
        .arg("-u")
        .arg(format!("@{server}"))
        .args([name, qtype, "+tries=1", "+time=5"])
        .args(extra);
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("dig: {e} (cargo xtask setup installs bind9-dnsutils)"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "dig {name} {qtype} {extra:?} failed ({}): {text}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    parse_dig(&text)
}

/// Reads dig's default output: the header's status, `;; Query time: N usec` and the answer
/// section.
pub fn parse_dig(text: &str) -> DigAnswer {
    let status = text
        .lines()
        .find_map(|l| l.split_once("status: "))
        .and_then(|(_, rest)| rest.split(',').next())
        .unwrap_or_else(|| panic!("no status in dig's output: {text}"));
    let query_time_us = text
        .lines()
        .find_map(|l| l.strip_prefix(";; Query time: "))
        .and_then(|rest| rest.strip_suffix(" usec"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no `;; Query time: N usec` in dig's output: {text}"));
    let mut answers = Vec::new();
    let mut in_answer = false;
    for line in text.lines() {
        if line.starts_with(";; ANSWER SECTION:") {
            in_answer = true;
            continue;
        }
        if in_answer {
            if line.trim().is_empty() || line.starts_with(";;") {
                break;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [name, ttl, _class, rtype, data, ..] = fields[..] else {
                panic!("unexpected answer line {line:?}");
            };
            answers.push(DigRecord {
                name: normalized(name),
                ttl: ttl.parse().expect("ttl"),
                rtype: rtype.to_owned(),
                data: normalized(data),
            });
        }
    }
    DigAnswer {
        rcode: rcode_number(status),
        query_time_us,
        answers,
    }
}

/// A DNS query message (RFC 1035 4.1): header with RD set, one question of class IN.
pub fn query_message(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut msg = Vec::with_capacity(32 + name.len());
    msg.extend_from_slice(&id.to_be_bytes());
    msg.extend_from_slice(&[0x01, 0x00]); // RD
    msg.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]); // one question
    for label in name.trim_end_matches('.').split('.') {
        let len = u8::try_from(label.len()).expect("label length");
        assert!(len > 0 && len < 64, "label {label:?}");
        msg.push(len);
        msg.extend_from_slice(label.as_bytes());
    }
    msg.push(0);
    msg.extend_from_slice(&qtype.to_be_bytes());
    msg.extend_from_slice(&1u16.to_be_bytes()); // IN
    msg
}

/// What the tests read from a response: its id, rcode and the addresses of its A and AAAA
/// answers with their TTLs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub id: u16,
    pub rcode: u32,
    pub addresses: Vec<(IpAddr, u32)>,
}

/// Reads a response message (panics on anything malformed: the test's server is real).
pub fn parse_response(msg: &[u8]) -> Response {
    let u16_at = |at: usize| u16::from_be_bytes([msg[at], msg[at + 1]]);
    let id = u16_at(0);
    assert!(msg[2] & 0x80 != 0, "not a response");
    let rcode = u32::from(msg[3] & 0x0f);
    let questions = u16_at(4);
    let answers = u16_at(6);
    let mut at = 12;
    let skip_name = |mut at: usize| loop {
        let len = msg[at];
        if len & 0xc0 == 0xc0 {
            return at + 2;
        }
        at += 1 + usize::from(len);
        if len == 0 {
            return at;
        }
    };
    for _ in 0..questions {
        at = skip_name(at) + 4;
    }
    let mut addresses = Vec::new();
    for _ in 0..answers {
        at = skip_name(at);
        let rtype = u16_at(at);
        let ttl = u32::from_be_bytes([msg[at + 4], msg[at + 5], msg[at + 6], msg[at + 7]]);
        let len = usize::from(u16_at(at + 8));
        let data = &msg[at + 10..at + 10 + len];
        match (rtype, len) {
            (TYPE_A, 4) => addresses.push((
                IpAddr::V4(Ipv4Addr::new(data[0], data[1], data[2], data[3])),
                ttl,
            )),
            (TYPE_AAAA, 16) => {
                let bytes: [u8; 16] = data.try_into().expect("16 bytes");
                addresses.push((IpAddr::V6(Ipv6Addr::from(bytes)), ttl));
            }
            _ => {}
        }
        at += 10 + len;
    }
    Response {
        id,
        rcode,
        addresses,
    }
}

/// Sends one query for `name` of `qtype` on `socket` (connected to the server) and returns the
/// response with the same id.
pub fn resolve_on(socket: &UdpSocket, id: u16, name: &str, qtype: u16) -> Response {
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    socket
        .send(&query_message(id, name, qtype))
        .expect("send query");
    let mut buf = [0u8; 4096];
    loop {
        let n = socket.recv(&mut buf).expect("a response");
        let response = parse_response(&buf[..n]);
        if response.id == id {
            return response;
        }
    }
}

/// Runs `f` on a new thread inside the named network namespace `netns` (`ip netns add`).
pub fn in_named_netns<T: Send + 'static>(
    netns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> JoinHandle<T> {
    let path = format!("/run/netns/{netns}");
    std::thread::spawn(move || {
        let ns = File::open(&path).expect("open the named namespace");
        // SAFETY: plain syscall on a valid descriptor; it moves only this thread.
        let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        f()
    })
}

/// An upstream server the test runs in a named namespace: a UDP socket on `addr` that answers
/// every query with `rcode` (an empty answer), or, with `None`, reads nothing and never answers.
/// Stopped on drop.
pub struct TestUpstream {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TestUpstream {
    pub fn start(netns: &str, addr: SocketAddr, rcode: Option<u8>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = in_named_netns(netns, move || {
            let socket = UdpSocket::bind(addr).expect("bind the upstream");
            socket
                .set_read_timeout(Some(Duration::from_millis(50)))
                .expect("read timeout");
            tx.send(()).expect("ready");
            let mut buf = [0u8; 1500];
            while !flag.load(Ordering::Relaxed) {
                let Some(rcode) = rcode else {
                    // Silent: the socket stays bound (no ICMP port unreachable) and unread.
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                };
                let Ok((n, peer)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                if n < 12 {
                    continue;
                }
                let reply = &mut buf[..n];
                reply[2] |= 0x80; // QR
                reply[3] = (reply[3] & 0xf0) | 0x80 | (rcode & 0x0f); // RA, rcode
                let _ = socket.send_to(reply, peer);
            }
        });
        rx.recv().expect("upstream ready");
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for TestUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_digs_output() {
        let text = "; <<>> DiG 9.18 <<>> -u @198.51.100.53 c1.test A\n\
;; ->>HEADER<<- opcode: QUERY, status: NOERROR, id: 35987\n\
;; ANSWER SECTION:\n\
c1.test.\t\t300\tIN\tCNAME\tc2.test.\n\
h.test.\t\t\t300\tIN\tA\t203.0.113.6\n\
\n\
;; Query time: 143 usec\n";
        let answer = parse_dig(text);
        assert_eq!(answer.rcode, 0);
        assert_eq!(answer.query_time_us, 143);
        assert_eq!(answer.answers.len(), 2);
        assert_eq!(answer.answers[0].data, "c2.test");
        assert_eq!(
            answer.addresses(),
            vec![IpAddr::V4(Ipv4Addr::new(203, 0, 113, 6))]
        );
    }

    #[test]
    fn a_query_reads_back_as_its_own_question() {
        let mut msg = query_message(0x1234, "h.test", TYPE_A);
        msg[2] |= 0x80;
        msg[3] |= 3;
        let response = parse_response(&msg);
        assert_eq!((response.id, response.rcode), (0x1234, 3));
        assert!(response.addresses.is_empty());
    }
}
