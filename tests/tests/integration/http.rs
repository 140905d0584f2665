//! HTTP/1.x transactions through the public API (`Connections.usm`): the kernel's parser
//! (`tracer-ebpf/src/packet/http.rs`) on the packet capture, the HTTP source, the per-client
//! delivery.
//!
//! Topology (documentation addresses only, nothing leaves the test's namespace): a fresh
//! namespace whose loopback carries 198.51.100.80 (servers) and 198.51.100.81 (clients).
//!
//! Two grounds of truth:
//! - nginx from Debian and curl (`nginx_and_curl_...`): nginx's access log
//!   (`$request_method $uri $status $request_time $connection $remote_port`) is the truth of
//!   every request; curl drives keep-alive runs of several URLs in one invocation, new
//!   connections, POSTs with bodies (one with `Expect: 100-continue`), a 404, a `return 500`
//!   location and a location proxied to the test's own upstream, which answers after 30 ms.
//!   `cargo xtask setup` installs both on the host and the initramfs ships them into the VMs; a
//!   run without them (a VM image built without them) prints a SKIP line, except in the host
//!   run, where it fails.
//! - The test's own HTTP/1.1 server and clients on `std::net` (`own_server_...`,
//!   `pipelined_...`, `responses_without_...`), which need nothing installed, so the kernel
//!   parser is exercised on every VM kernel. The server records what it served and how long it
//!   took; the clients time each exchange.
//!
//! Latency bounds: for the own server, exact brackets. The kernel stamps a request when its
//! first segment passes the cgroup hook and a response at its status line's segment: on the
//! client's socket, after the client's clock read before its write, and before its read of
//! the status line returns; on the server's socket, around the server's handling (from the
//! request read to the response write). So server handling <= recorded latency <= the client's
//! elapsed time, with no margin (both clocks are CLOCK_MONOTONIC). For nginx, its
//! `$request_time` has a millisecond resolution (and nginx's cached clock is updated once per
//! event-loop turn), so a recorded latency must be at least it minus [`NGINX_MARGIN_NS`], and at
//! most curl's `time_total` for the same requests (nginx's clock starts when it reads the
//! request, the kernel's when the packet arrives: scheduling delay before nginx runs is in the
//! latency, which is right, and in curl's time); the test prints the differences it measured.
//!
//! These tests do not depend on the attach backend (the capture is its own `cgroup_skb`
//! program): each runs with the kernel's first backend only.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Read, Write},
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use tracer::{BackendChoice, Config, Tracer, model::Connections, sources::http::HttpConfig};
use tracer_integration::{
    cmd::ip,
    netns::{in_fresh_netns, tcp_listening},
    policy::{first_backend_of_kernel, loaded_or_skip},
    tracer::{backend_under_test, counter},
};

const SERVER_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 80);
const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 81);
const NGINX_PORT: u16 = 8080;
const UPSTREAM_PORT: u16 = 8081;
const OWN_PORT: u16 = 80;

/// How far below nginx's `$request_time` a latency the tracer recorded may be: its 1 ms
/// resolution and the clock nginx caches per event-loop turn. (Above, the bound is curl's
/// time: the kernel's stamps include the scheduling around nginx's reads and writes, which
/// nginx's clock does not.)
const NGINX_MARGIN_NS: i64 = 2_000_000;

/// What the tracer's result is compared on: (client port, path, method, status).
type TxKey = (u16, String, String, u16);

/// Transactions seen per key: count and latencies (ns). A key with one request carries its
/// exact latency; with more, the sketch's exact sum only.
#[derive(Debug, Default, Clone)]
struct Seen {
    count: u64,
    latency_sum_ns: f64,
    complete: bool,
}

/// Adds the HTTP stats of `delta` whose server is `server` to `seen`.
fn observe(delta: &Connections, server: SocketAddr, seen: &mut BTreeMap<TxKey, Seen>) {
    for (key, stats) in &delta.usm.http {
        if key.server != server {
            continue;
        }
        for (status, requests) in &stats.0 {
            let entry = seen
                .entry((
                    key.client.port(),
                    key.path.to_string(),
                    key.method.as_str().to_owned(),
                    *status,
                ))
                .or_default();
            entry.count += requests.count;
            entry.latency_sum_ns += match &requests.latencies {
                Some(sketch) => sketch.sum().unwrap_or(0.0),
                None => requests.first_latency_ns as f64 * requests.count as f64,
            };
            entry.complete = key.path_complete;
        }
    }
}

fn total(seen: &BTreeMap<TxKey, Seen>) -> u64 {
    seen.values().map(|s| s.count).sum()
}

/// Calls until `want` transactions of `server` were seen (at most 10 s), then waits out the
/// HTTP source's dedup window (a server observation of a local connection waits that long for
/// its client's) and calls once more: a transaction counted twice would show there.
fn collect(
    tracer: &Tracer,
    client: &str,
    servers: &[SocketAddr],
    want: u64,
) -> Vec<BTreeMap<TxKey, Seen>> {
    let mut seen: Vec<BTreeMap<TxKey, Seen>> = servers.iter().map(|_| BTreeMap::new()).collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let delta = tracer.get_active_connections(client).expect("call");
        for (server, seen) in servers.iter().zip(&mut seen) {
            observe(&delta, *server, seen);
        }
        if seen.iter().map(total).sum::<u64>() >= want || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(HttpConfig::default().dedup_window + Duration::from_millis(500));
    let delta = tracer.get_active_connections(client).expect("call");
    for (server, seen) in servers.iter().zip(&mut seen) {
        observe(&delta, *server, seen);
    }
    seen
}

/// The addresses on the namespace's loopback.
fn addresses() {
    for ip4 in [SERVER_IP, CLIENT_IP] {
        ip(&["addr", "add", &format!("{ip4}/32"), "dev", "lo"]);
    }
}

/// The tracer with HTTP on and quantization off (paths are compared as the servers saw them).
fn new_tracer() -> Option<Tracer> {
    loaded_or_skip(Tracer::new(Config {
        backend: BackendChoice::Force(backend_under_test()),
        http: HttpConfig {
            quantize: false,
            ..HttpConfig::default()
        },
        ..Config::default()
    }))
}

/// The kernel and source counters whose names start with `http`, for failure messages.
fn http_counters(tracer: &Tracer) -> Vec<(&'static str, u64)> {
    tracer
        .counters()
        .expect("counters")
        .iter()
        .filter(|s| s.info.name.starts_with("http"))
        .map(|s| (s.info.name, s.value))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The test's own HTTP/1.1 server.

/// One request the own server answered.
#[derive(Clone, Debug)]
struct Served {
    client_port: u16,
    method: String,
    /// The request target up to `?`.
    path: String,
    status: u16,
    /// From the request's head read to just before the response's write.
    handling: Duration,
}

/// A keep-alive HTTP/1.1 server on `addr`, one thread per connection, answering by path:
/// `/missing*` 404, `/fail*` 500, `/slow*` 200 after [`SLOW`], `/hold*` waits for the next
/// request on its connection and answers both in order (to make pipelining certain), anything
/// else 200. `Expect: 100-continue` gets an interim `100 Continue` before the body is read.
struct OwnServer {
    served: Arc<Mutex<Vec<Served>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

const SLOW: Duration = Duration::from_millis(30);

impl OwnServer {
    fn start(addr: SocketAddr) -> Self {
        let listener = TcpListener::bind(addr).expect("bind the own server");
        listener.set_nonblocking(true).expect("nonblocking");
        let served = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (served, stop) = (Arc::clone(&served), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut workers = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, peer)) => {
                            let served = Arc::clone(&served);
                            workers.push(std::thread::spawn(move || {
                                serve_connection(stream, peer, &served);
                            }));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
                for worker in workers {
                    let _ = worker.join();
                }
            })
        };
        Self {
            served,
            stop,
            thread: Some(thread),
        }
    }

    fn served(&self) -> Vec<Served> {
        self.served.lock().expect("served").clone()
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A request head: method, target, body length, whether it expects 100-continue.
struct Head {
    method: String,
    target: String,
    content_length: usize,
    expect_continue: bool,
}

/// Reads one request head; `None` at the connection's end.
fn read_head(reader: &mut BufReader<TcpStream>) -> Option<Head> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_owned();
    let target = parts.next()?.to_owned();
    let (mut content_length, mut expect_continue) = (0, false);
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).ok()? == 0 {
            return None;
        }
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':')?;
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => content_length = value.trim().parse().ok()?,
            "expect" => expect_continue = value.trim().eq_ignore_ascii_case("100-continue"),
            _ => {}
        }
    }
    Some(Head {
        method,
        target,
        content_length,
        expect_continue,
    })
}

fn serve_connection(stream: TcpStream, peer: SocketAddr, served: &Mutex<Vec<Served>>) {
    stream.set_nodelay(true).expect("nodelay");
    let mut writer = stream.try_clone().expect("clone");
    let mut reader = BufReader::new(stream);
    let mut held: Option<(Head, Instant)> = None;
    while let Some(head) = read_head(&mut reader) {
        let started = Instant::now();
        if head.expect_continue {
            writer
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .expect("100 continue");
        }
        let mut body = vec![0u8; head.content_length];
        reader.read_exact(&mut body).expect("request body");
        let path = head.target.split('?').next().unwrap_or("").to_owned();
        if path.starts_with("/hold") && held.is_none() {
            held = Some((head, started));
            continue;
        }
        for (head, started) in held.take().into_iter().chain([(head, started)]) {
            let path = head.target.split('?').next().unwrap_or("").to_owned();
            let status = match path.as_str() {
                p if p.starts_with("/missing") => 404,
                p if p.starts_with("/fail") => 500,
                p if p.starts_with("/slow") => {
                    std::thread::sleep(SLOW);
                    200
                }
                _ => 200,
            };
            let reason = match status {
                404 => "Not Found",
                500 => "Internal Server Error",
                _ => "OK",
            };
            let body = format!("{} {}\n", head.method, path);
            let mut response = format!(
                "HTTP/1.1 {status} {reason}\r\nContent-Length: {}\r\nContent-Type: text/plain\r\n\r\n",
                body.len()
            );
            if head.method != "HEAD" {
                response.push_str(&body);
            }
            let handling = started.elapsed();
            served.lock().expect("served").push(Served {
                client_port: peer.port(),
                method: head.method.clone(),
                path,
                status,
                handling,
            });
            if writer.write_all(response.as_bytes()).is_err() {
                return;
            }
        }
    }
}

/// A keep-alive client of the own server, bound to [`CLIENT_IP`].
struct OwnClient {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    port: u16,
}

/// What the client measured of one exchange.
struct Exchange {
    status: u16,
    /// From before the request's write to after the status line was read.
    elapsed: Duration,
}

impl OwnClient {
    fn connect(server: SocketAddr) -> Self {
        let socket = connect_from_client(server);
        socket.set_nodelay(true).expect("nodelay");
        let port = socket.local_addr().expect("local").port();
        Self {
            writer: socket.try_clone().expect("clone"),
            reader: BufReader::new(socket),
            port,
        }
    }

    /// Sends one request (with `body`, and `Expect: 100-continue` if asked: then the body is
    /// sent after the interim response) and reads the final response.
    fn exchange(&mut self, method: &str, target: &str, body: &[u8], expect: bool) -> Exchange {
        let mut head = format!("{method} {target} HTTP/1.1\r\nHost: test\r\n");
        if !body.is_empty() {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        if expect {
            head.push_str("Expect: 100-continue\r\n");
        }
        head.push_str("\r\n");
        let start = Instant::now();
        self.writer
            .write_all(head.as_bytes())
            .expect("request head");
        if expect {
            let (status, _) = self.read_status();
            assert_eq!(status, 100, "interim response");
            self.skip_headers_and_body(method, status);
        }
        self.writer.write_all(body).expect("request body");
        let (status, at) = self.read_status();
        let elapsed = at.duration_since(start);
        self.skip_headers_and_body(method, status);
        Exchange { status, elapsed }
    }

    /// Reads a status line; returns the code and when it was read.
    fn read_status(&mut self) -> (u16, Instant) {
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("status line");
        let at = Instant::now();
        let code = line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("status line {line:?}"));
        (code, at)
    }

    fn skip_headers_and_body(&mut self, method: &str, status: u16) {
        let mut length = 0usize;
        loop {
            let mut header = String::new();
            self.reader.read_line(&mut header).expect("header");
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().expect("length");
            }
        }
        if method != "HEAD" && status >= 200 {
            let mut body = vec![0u8; length];
            self.reader.read_exact(&mut body).expect("body");
        }
    }
}

/// A TCP connection from [`CLIENT_IP`] (port chosen by the kernel) to `server`.
fn connect_from_client(server: SocketAddr) -> TcpStream {
    // std has no bind-before-connect: raw socket calls.
    // SAFETY: plain socket syscalls on a descriptor this function owns until it is wrapped.
    unsafe {
        use std::os::fd::FromRawFd;
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let stream = TcpStream::from_raw_fd(fd);
        let sockaddr = |ip4: Ipv4Addr, port: u16| libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(ip4).to_be(),
            },
            sin_zero: [0; 8],
        };
        let local = sockaddr(CLIENT_IP, 0);
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let rc = libc::bind(fd, (&raw const local).cast(), len);
        assert_eq!(rc, 0, "bind: {}", std::io::Error::last_os_error());
        let IpAddr::V4(server_ip) = server.ip() else {
            panic!("IPv4 server expected");
        };
        let remote = sockaddr(server_ip, server.port());
        let rc = libc::connect(fd, (&raw const remote).cast(), len);
        assert_eq!(rc, 0, "connect: {}", std::io::Error::last_os_error());
        stream
    }
}

/// The own server's log as the tracer's keys, with the handling times per key.
fn truth_of(served: &[Served]) -> BTreeMap<TxKey, (u64, Duration)> {
    let mut truth: BTreeMap<TxKey, (u64, Duration)> = BTreeMap::new();
    for s in served {
        let e = truth
            .entry((s.client_port, s.path.clone(), s.method.clone(), s.status))
            .or_default();
        e.0 += 1;
        e.1 += s.handling;
    }
    truth
}

#[test]
fn own_server_keep_alive_and_new_connections_every_transaction_once_within_its_brackets() {
    if !first_backend_of_kernel("HTTP transactions") {
        return;
    }
    in_fresh_netns(|| {
        addresses();
        let server_addr = SocketAddr::new(IpAddr::V4(SERVER_IP), OWN_PORT);
        let server = OwnServer::start(server_addr);
        let Some(tracer) = new_tracer() else {
            return;
        };
        tracer.register_client("http").expect("register");
        let retransmissions_before = counter(&tracer, "http_retransmission");
        // What each client measured, per key: elapsed sums.
        let mut elapsed: BTreeMap<TxKey, Duration> = BTreeMap::new();
        let mut record = |port: u16, method: &str, target: &str, ex: &Exchange| {
            let path = target.split('?').next().unwrap_or("").to_owned();
            *elapsed
                .entry((port, path, method.to_owned(), ex.status))
                .or_default() += ex.elapsed;
        };
        // A keep-alive connection: several methods, statuses, a query, bodies, an interim
        // response, a slow answer.
        let mut keep = OwnClient::connect(server_addr);
        let body = vec![b'b'; 3000];
        for (method, target, body, expect) in [
            ("GET", "/index", &[][..], false),
            ("GET", "/missing/page?x=1&y=2", &[], false),
            ("POST", "/form", &body[..], false),
            ("HEAD", "/index", &[], false),
            ("PUT", "/fail/put", &body[..100], false),
            ("POST", "/upload", &body[..], true),
            ("DELETE", "/things/thing", &[], false),
            ("GET", "/slow/answer", &[], false),
            ("OPTIONS", "/index", &[], false),
            ("PATCH", "/index", &b"p"[..], false),
        ] {
            let ex = keep.exchange(method, target, body, expect);
            record(keep.port, method, target, &ex);
        }
        // New connections, one request each, and one with the same path twice (keep-alive on
        // one key: a count of 2).
        for i in 0..3 {
            let mut client = OwnClient::connect(server_addr);
            let target = if i == 1 { "/slow/new" } else { "/index" };
            let ex = client.exchange("GET", target, &[], false);
            record(client.port, "GET", target, &ex);
        }
        let mut twice = OwnClient::connect(server_addr);
        for _ in 0..2 {
            let ex = twice.exchange("GET", "/again", &[], false);
            record(twice.port, "GET", "/again", &ex);
        }
        // A path longer than the record's 160 bytes: kept as its prefix, flagged.
        let long_path = format!("/long/{}", "segment-".repeat(30));
        let mut long = OwnClient::connect(server_addr);
        let ex = long.exchange("GET", &long_path, &[], false);
        let long_port = long.port;
        drop((keep, twice, long));

        let truth = truth_of(&server.served());
        let want: u64 = truth.values().map(|(n, _)| n).sum();
        assert_eq!(want, 16, "requests the server answered: {truth:?}");
        let seen = collect(&tracer, "http", &[server_addr], want).remove(0);
        let counters = http_counters(&tracer);

        // The long path: its 160-byte prefix, incomplete, once.
        let prefix: String = long_path.chars().take(160).collect();
        let long_key = (long_port, prefix, "GET".to_owned(), 200);
        let long_seen = seen.get(&long_key).cloned().unwrap_or_default();
        assert_eq!(
            (long_seen.count, long_seen.complete),
            (1, false),
            "the long path's prefix: {seen:#?}; counters {counters:?}"
        );
        assert!(long_seen.latency_sum_ns <= ex.elapsed.as_nanos() as f64);
        let mut seen = seen;
        seen.remove(&long_key);
        let mut truth = truth;
        truth.retain(|(port, ..), _| *port != long_port);

        assert_eq!(
            seen.iter()
                .map(|(k, s)| (k.clone(), s.count))
                .collect::<BTreeMap<_, _>>(),
            truth
                .iter()
                .map(|(k, (n, _))| (k.clone(), *n))
                .collect::<BTreeMap<_, _>>(),
            "transactions by (client port, path, method, status): tracer (left), server (right); \
             counters {counters:?}"
        );
        for (key, (_, handling)) in &truth {
            let got = seen[key].latency_sum_ns;
            let client = elapsed[key];
            assert!(
                handling.as_nanos() as f64 <= got && got <= client.as_nanos() as f64,
                "{key:?}: latency {got} ns not within the server's handling {handling:?} and \
                 the client's elapsed {client:?}"
            );
            assert!(seen[key].complete, "{key:?}: path complete");
        }
        let slow = &truth
            .iter()
            .find(|(k, _)| k.1 == "/slow/answer")
            .expect("the slow request")
            .0;
        assert!(seen[*slow].latency_sum_ns >= SLOW.as_nanos() as f64);
        // No segment was retransmitted on loopback, so nothing was dropped as one.
        assert_eq!(
            counter(&tracer, "http_retransmission"),
            retransmissions_before,
            "{counters:?}"
        );
    });
}

#[test]
fn pipelined_requests_are_counted_not_paired_and_the_connection_recovers() {
    if !first_backend_of_kernel("HTTP pipelining") {
        return;
    }
    in_fresh_netns(|| {
        addresses();
        let server_addr = SocketAddr::new(IpAddr::V4(SERVER_IP), OWN_PORT);
        let server = OwnServer::start(server_addr);
        let Some(tracer) = new_tracer() else {
            return;
        };
        tracer.register_client("http").expect("register");
        let pipelined_before = counter(&tracer, "http_pipelined");
        let mut client = OwnClient::connect(server_addr);
        // One normal exchange, then two requests in two writes before any answer (the server
        // holds the first until the second arrived), then a normal one again.
        let first = client.exchange("GET", "/before", &[], false);
        assert_eq!(first.status, 200);
        client
            .writer
            .write_all(b"GET /hold/one HTTP/1.1\r\nHost: test\r\n\r\n")
            .expect("first pipelined");
        // Two segments: the first is on the wire before the second is written.
        std::thread::sleep(Duration::from_millis(20));
        client
            .writer
            .write_all(b"GET /hold/two HTTP/1.1\r\nHost: test\r\n\r\n")
            .expect("second pipelined");
        for _ in 0..2 {
            let (status, _) = client.read_status();
            assert_eq!(status, 200);
            client.skip_headers_and_body("GET", status);
        }
        let after = client.exchange("GET", "/after", &[], false);
        assert_eq!(after.status, 200);
        let port = client.port;
        drop(client);
        assert_eq!(server.served().len(), 4);

        let seen = collect(&tracer, "http", &[server_addr], 2).remove(0);
        let counters = http_counters(&tracer);
        let keys: Vec<_> = seen.iter().map(|(k, s)| (k.clone(), s.count)).collect();
        assert_eq!(
            keys,
            vec![
                ((port, "/after".to_owned(), "GET".to_owned(), 200), 1),
                ((port, "/before".to_owned(), "GET".to_owned(), 200), 1),
            ],
            "the pipelined pair is not recorded, the exchanges around it are; counters {counters:?}"
        );
        // Two requests dropped on each of the two sockets (client and server).
        let pipelined = counter(&tracer, "http_pipelined") - pipelined_before;
        assert!(pipelined >= 4, "http_pipelined +{pipelined}; {counters:?}");
    });
}

const EMPTY_RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
const LATE_REQUEST: &[u8] = b"GET /late HTTP/1.1\r\nHost: late-test\r\n\r\n";

#[test]
fn responses_without_requests_and_other_protocols_make_no_transaction() {
    if !first_backend_of_kernel("HTTP hostile payloads") {
        return;
    }
    in_fresh_netns(|| {
        addresses();
        let Some(tracer) = new_tracer() else {
            return;
        };
        tracer.register_client("http").expect("register");
        let without_before = counter(&tracer, "http_response_without_request");
        let transactions_before = counter(&tracer, "http_transactions");
        let server_addr = SocketAddr::new(IpAddr::V4(SERVER_IP), 9000);
        let listener = TcpListener::bind(server_addr).expect("bind");
        let server = std::thread::spawn(move || {
            // Connection 1: a response nobody asked for. Connection 2: binary data both ways,
            // then bytes that look like a request (too late: the socket is not HTTP).
            let (mut one, _) = listener.accept().expect("accept");
            one.write_all(EMPTY_RESPONSE).expect("unsolicited");
            let (mut two, _) = listener.accept().expect("accept");
            let mut buf = [0u8; 4096];
            for _ in 0..5 {
                two.read_exact(&mut buf).expect("binary");
                two.write_all(&buf).expect("echo");
            }
            two.read_exact(&mut buf[..LATE_REQUEST.len()])
                .expect("late request");
            two.write_all(EMPTY_RESPONSE).expect("late response");
        });
        let mut one = connect_from_client(server_addr);
        let mut unsolicited = [0u8; EMPTY_RESPONSE.len()];
        one.read_exact(&mut unsolicited)
            .expect("unsolicited response");
        let mut two = connect_from_client(server_addr);
        let garbage: Vec<u8> = (0..4096u32).map(|i| (i * 7 + 3) as u8).collect();
        let mut back = vec![0u8; 4096];
        for _ in 0..5 {
            two.write_all(&garbage).expect("binary");
            two.read_exact(&mut back).expect("echo");
        }
        two.write_all(LATE_REQUEST).expect("late request");
        let mut response = [0u8; EMPTY_RESPONSE.len()];
        two.read_exact(&mut response).expect("late response");
        server.join().expect("server");

        let seen = collect(&tracer, "http", &[server_addr], 0).remove(0);
        let counters = http_counters(&tracer);
        assert!(seen.is_empty(), "{seen:#?}; {counters:?}");
        let without = counter(&tracer, "http_response_without_request") - without_before;
        // The unsolicited response, seen leaving the server's socket and reaching the client's.
        assert!(
            without >= 2,
            "http_response_without_request +{without}; {counters:?}"
        );
        // Nothing on this namespace's sockets became a transaction (other processes of the
        // host may add some: at most a bound is checked in the host run).
        if std::env::var("TRACER_TEST_HOST").is_err() {
            assert_eq!(
                counter(&tracer, "http_transactions"),
                transactions_before,
                "{counters:?}"
            );
        }
    });
}

// ---------------------------------------------------------------------------------------------
// nginx and curl.

/// Whether nginx and curl can run here; in the host run their absence fails the test.
fn nginx_and_curl_or_skip() -> bool {
    let runs = |program: &str, arg: &str| {
        Command::new(program)
            .arg(arg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let present = runs("nginx", "-v") && runs("curl", "--version");
    if !present {
        let host = std::env::var("TRACER_TEST_HOST").is_ok_and(|v| v == "1");
        assert!(
            !host,
            "nginx and curl are installed by `cargo xtask setup` for the host run"
        );
        eprintln!(
            "SKIP: nginx or curl cannot run here (not in this VM image): the own-server tests \
             cover the kernel parser"
        );
    }
    present
}

/// A private nginx in the calling thread's network namespace, killed on drop.
struct Nginx {
    child: Child,
    dir: PathBuf,
}

/// One line of nginx's access log.
#[derive(Clone, Debug)]
struct Logged {
    method: String,
    uri: String,
    status: u16,
    request_time_ns: i64,
    connection: u64,
    client_port: u16,
}

impl Nginx {
    fn start(upstream: SocketAddr) -> Self {
        let dir = std::env::temp_dir().join(format!("tracer-http-nginx-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("www")).expect("nginx dir");
        for (name, size) in [("alpha", 100), ("beta", 20_000), ("gamma", 5)] {
            std::fs::write(dir.join("www").join(name), vec![b'x'; size]).expect("file");
        }
        let d = dir.display();
        let conf = format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\n\
             error_log {d}/error.log;\nevents {{ worker_connections 1024; }}\n\
             http {{\n  default_type text/plain;\n\
             log_format t '$request_method $uri $status $request_time $connection $remote_port';\n\
             access_log {d}/access.log t;\n  keepalive_timeout 30;\n\
             client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n\
             scgi_temp_path {d}/scgi;\n\
             server {{\n    listen {SERVER_IP}:{NGINX_PORT};\n    root {d}/www;\n\
             location = /error {{ return 500; }}\n\
             location /slow {{ proxy_pass http://{upstream}; }}\n\
             location /upload {{ proxy_pass http://{upstream}; }}\n  }}\n}}\n"
        );
        std::fs::write(dir.join("nginx.conf"), conf).expect("conf");
        let child = Command::new("nginx")
            .arg("-e")
            .arg(dir.join("error.log"))
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .arg("-p")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("nginx");
        let deadline = Instant::now() + Duration::from_secs(10);
        // Wait for the listener without connecting to it (a probe would be one more
        // connection): this thread's /proc/net/tcp lists it.
        while !tcp_listening(NGINX_PORT) {
            assert!(Instant::now() < deadline, "nginx never listened");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { child, dir }
    }

    /// Stops nginx (graceful: the log is complete) and reads its access log.
    fn stop(mut self) -> Vec<Logged> {
        // SAFETY: plain kill(2) of our own child; SIGQUIT is nginx's graceful shutdown.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGQUIT) };
        let _ = self.child.wait();
        let log = std::fs::read_to_string(self.dir.join("access.log")).expect("access log");
        log.lines()
            .map(|line| {
                let f: Vec<&str> = line.split_whitespace().collect();
                let [method, uri, status, time, connection, port] = f[..] else {
                    panic!("access log line {line:?}");
                };
                let seconds: f64 = time.parse().expect("request time");
                Logged {
                    method: method.to_owned(),
                    uri: uri.to_owned(),
                    status: status.parse().expect("status"),
                    request_time_ns: (seconds * 1e9).round() as i64,
                    connection: connection.parse().expect("connection"),
                    client_port: port.parse().expect("port"),
                }
            })
            .collect()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One curl invocation: every URL over one connection (keep-alive), bodies discarded. Returns
/// each transfer's (local port, path without the query, `time_total` in ns): how long curl
/// took from the transfer's start to its end, which brackets any latency of that exchange
/// from above.
fn curl(extra: &[&str], urls: &[String]) -> Vec<(u16, String, i64)> {
    let mut command = Command::new("curl");
    command.args(["-s", "--interface", &CLIENT_IP.to_string()]);
    command.args(["-w", "%{local_port} %{url_effective} %{time_total}\\n"]);
    command.args(extra);
    for url in urls {
        command.args(["-o", "/dev/null", url]);
    }
    let out = command.output().expect("curl");
    assert!(
        out.status.success(),
        "curl {extra:?} {urls:?}: {:?} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let transfers: Vec<(u16, String, i64)> = text
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [port, url, total] = fields[..] else {
                panic!("curl -w line {line:?}");
            };
            let after_host = url.splitn(4, '/').nth(3).unwrap_or("");
            let path = format!("/{}", after_host.split('?').next().unwrap_or(""));
            let seconds: f64 = total.parse().expect("time_total");
            (
                port.parse().expect("local_port"),
                path,
                (seconds * 1e9).round() as i64,
            )
        })
        .collect();
    assert_eq!(transfers.len(), urls.len(), "curl -w output: {text:?}");
    transfers
}

#[test]
fn nginx_and_curl_every_request_of_the_access_log_once_within_nginxs_request_time() {
    if !first_backend_of_kernel("HTTP transactions with nginx") || !nginx_and_curl_or_skip() {
        return;
    }
    in_fresh_netns(|| {
        addresses();
        let upstream_addr = SocketAddr::new(IpAddr::V4(SERVER_IP), UPSTREAM_PORT);
        let upstream = OwnServer::start(upstream_addr);
        let nginx = Nginx::start(upstream_addr);
        let nginx_addr = SocketAddr::new(IpAddr::V4(SERVER_IP), NGINX_PORT);
        let Some(tracer) = new_tracer() else {
            return;
        };
        tracer.register_client("http").expect("register");
        let url = |path: &str| format!("http://{nginx_addr}{path}");
        // Keep-alive: six URLs on one connection, a 404, a query string, the proxied slow
        // location, and the 500 location last (nginx closes the connection after a 500).
        let mut transfers = curl(
            &[],
            &[
                url("/alpha"),
                url("/beta"),
                url("/missing"),
                url("/alpha?query=1"),
                url("/slow/keep"),
                url("/error"),
            ],
        );
        // New connections.
        for path in ["/alpha", "/gamma", "/slow/new"] {
            transfers.extend(curl(&[], &[url(path)]));
        }
        // POSTs with bodies: to the proxied location (nginx reads the body, then proxies), to
        // the 500 location, and one with an interim 100 Continue.
        let body = "k=".to_owned() + &"v".repeat(5000);
        transfers.extend(curl(&["--data-binary", &body], &[url("/upload/form")]));
        transfers.extend(curl(&["--data-binary", &body], &[url("/error")]));
        transfers.extend(curl(
            &["--data-binary", &body, "-H", "Expect: 100-continue"],
            &[url("/upload/continue")],
        ));
        // HEAD, keep-alive with a second URL.
        transfers.extend(curl(&["-I"], &[url("/alpha"), url("/gamma")]));
        let log = nginx.stop();
        // curl's time per (client port, path): the upper bracket of the recorded latencies.
        let mut curl_ns: BTreeMap<(u16, String), i64> = BTreeMap::new();
        for (port, path, ns) in transfers {
            *curl_ns.entry((port, path)).or_default() += ns;
        }
        let upstream_served = upstream.served();

        let want = (log.len() + upstream_served.len()) as u64;
        let mut seen = collect(&tracer, "http", &[nginx_addr, upstream_addr], want);
        let seen_upstream = seen.pop().expect("upstream");
        let seen_nginx = seen.pop().expect("nginx");
        let counters = http_counters(&tracer);

        // Keep-alive happened: one nginx connection served six requests.
        let mut per_connection: BTreeMap<u64, usize> = BTreeMap::new();
        for l in &log {
            *per_connection.entry(l.connection).or_default() += 1;
        }
        assert!(per_connection.values().any(|&n| n == 6), "{log:#?}");

        let mut truth: BTreeMap<TxKey, (u64, i64)> = BTreeMap::new();
        for l in &log {
            let e = truth
                .entry((l.client_port, l.uri.clone(), l.method.clone(), l.status))
                .or_default();
            e.0 += 1;
            e.1 += l.request_time_ns;
        }
        assert_eq!(
            seen_nginx
                .iter()
                .map(|(k, s)| (k.clone(), s.count))
                .collect::<BTreeMap<_, _>>(),
            truth
                .iter()
                .map(|(k, (n, _))| (k.clone(), *n))
                .collect::<BTreeMap<_, _>>(),
            "nginx's requests by (client port, uri, method, status): tracer (left), access log \
             (right); counters {counters:?}"
        );
        let mut differences = Vec::new();
        for (key, (n, nginx_ns)) in &truth {
            let got = seen_nginx[key].latency_sum_ns.round() as i64;
            let difference = got - nginx_ns;
            differences.push(difference / *n as i64);
            // Below: nginx's time, for requests without a body. A request with a body that
            // nginx answers before reading it (`return 500`) stays in nginx's clock until the
            // body is discarded, after the response (17 ms against 4.8 ms in a loaded VM).
            let (_, _, method, _) = key;
            assert!(
                method == "POST" || difference >= -NGINX_MARGIN_NS * *n as i64,
                "{key:?}: latency {got} ns below nginx's {nginx_ns} ns (margin {NGINX_MARGIN_NS} \
                 ns per request)"
            );
            // Above: curl's own time for the same requests (1 us resolution), whatever the
            // scheduling around nginx (in a loaded VM a request waited 35 ms for nginx to read
            // it; nginx's clock starts at its read, the kernel's stamp at the packet).
            let (port, uri, _, _) = key;
            let curl_total = curl_ns
                .get(&(*port, uri.clone()))
                .copied()
                .unwrap_or_else(|| panic!("{key:?}: no curl transfer; curl saw {curl_ns:?}"));
            assert!(
                got <= curl_total + 1_000 * *n as i64,
                "{key:?}: latency {got} ns above curl's {curl_total} ns for the same requests"
            );
        }
        differences.sort_unstable();
        eprintln!(
            "http: recorded latency minus nginx's $request_time per request, ns: {differences:?}"
        );
        // nginx's requests to the upstream, as the upstream served them.
        let upstream_truth = truth_of(&upstream_served);
        assert_eq!(
            seen_upstream
                .iter()
                .map(|(k, s)| (k.clone(), s.count))
                .collect::<BTreeMap<_, _>>(),
            upstream_truth
                .iter()
                .map(|(k, (n, _))| (k.clone(), *n))
                .collect::<BTreeMap<_, _>>(),
            "nginx -> upstream requests: tracer (left), upstream (right)"
        );
        for (key, (_, handling)) in &upstream_truth {
            assert!(seen_upstream[key].latency_sum_ns >= handling.as_nanos() as f64);
        }
    });
}

// ---------------------------------------------------------------------------------------------
// wrk: load.

/// Whether wrk can run here (`wrk -v` exits 1 after printing its version); in the host run its
/// absence fails the test.
fn wrk_or_skip() -> bool {
    let present = Command::new("wrk")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !present {
        let host = std::env::var("TRACER_TEST_HOST").is_ok_and(|v| v == "1");
        assert!(
            !host,
            "wrk is installed by `cargo xtask setup` for the host run"
        );
        eprintln!(
            "SKIP: wrk is not in this VM image: the nginx and own-server tests cover the parser"
        );
    }
    present
}

/// wrk from Debian drives nginx for two seconds over four keep-alive connections while a client
/// polls every 200 ms, as an agent would: every request in nginx's access log is handed out
/// exactly once per (client port, path, method, status), with nothing dropped on the way (the
/// failure message lists the kernel's HTTP counters: batch full, storage, unanswered).
#[test]
fn wrk_load_every_request_of_the_access_log_once() {
    if !first_backend_of_kernel("HTTP under wrk load")
        || !nginx_and_curl_or_skip()
        || !wrk_or_skip()
    {
        return;
    }
    in_fresh_netns(|| {
        addresses();
        let upstream_addr = SocketAddr::new(IpAddr::V4(SERVER_IP), UPSTREAM_PORT);
        let _upstream = OwnServer::start(upstream_addr);
        let nginx = Nginx::start(upstream_addr);
        let nginx_addr = SocketAddr::new(IpAddr::V4(SERVER_IP), NGINX_PORT);
        let Some(tracer) = new_tracer() else {
            return;
        };
        tracer.register_client("wrk").expect("register");
        let mut wrk = Command::new("wrk")
            .args(["-t1", "-c4", "-d2s", &format!("http://{nginx_addr}/alpha")])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("wrk");
        let mut seen = BTreeMap::new();
        let mut calls = 0;
        while wrk.try_wait().expect("wrk").is_none() {
            observe(
                &tracer.get_active_connections("wrk").expect("call"),
                nginx_addr,
                &mut seen,
            );
            calls += 1;
            std::thread::sleep(Duration::from_millis(200));
        }
        let out = wrk.wait_with_output().expect("wrk output");
        assert!(
            out.status.success(),
            "wrk: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let log = nginx.stop();
        assert!(log.len() > 1000, "wrk made only {} requests", log.len());
        let want = log.len() as u64;
        let rest = collect(
            &tracer,
            "wrk",
            &[nginx_addr],
            want.saturating_sub(total(&seen)),
        );
        for (key, s) in rest.into_iter().flatten() {
            seen.entry(key).or_default().count += s.count;
        }
        let mut truth: BTreeMap<TxKey, u64> = BTreeMap::new();
        for l in &log {
            *truth
                .entry((l.client_port, l.uri.clone(), l.method.clone(), l.status))
                .or_default() += 1;
        }
        assert_eq!(
            seen.iter()
                .map(|(k, s)| (k.clone(), s.count))
                .collect::<BTreeMap<_, _>>(),
            truth,
            "requests by (client port, uri, method, status): tracer (left, {calls} calls during \
             the load), access log (right); counters {:?}",
            http_counters(&tracer)
        );
        eprintln!(
            "http: wrk made {want} requests on {} connections, each handed out once ({calls} \
             calls during the load)",
            truth.len()
        );
    });
}
