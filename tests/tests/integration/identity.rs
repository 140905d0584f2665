//! One identity per connection and every end reported once, as a client of the public API sees
//! them (issue 8, items 1-3): a client polls while connections wait in the accept queue, are
//! accepted, shut down half-way and closed; UDP flows idle across a poll before they end; a UDP
//! server socket talks to 10,000 peers; idle flows expire. Every identity (tuple, pid included)
//! a client is ever shown while open must be complete (owner, both ports) and must end exactly
//! once, under that same identity, with exactly the bytes the programs moved.

use std::{
    collections::{HashMap, HashSet},
    io::{Read, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use tracer::{
    BackendChoice, Config, Tracer,
    expiry::ExpiryConfig,
    model::{ConnectionStats, ConnectionTuple, EndReason, Protocol},
};
use tracer_common::conn::MAX_UDP_PEERS;
use tracer_integration::{
    netns::{current_netns_inode, in_fresh_netns},
    policy::{first_backend_of_kernel, loaded_or_skip},
    tracer::backend_under_test,
};

fn new_tracer(expiry: ExpiryConfig) -> Option<Tracer> {
    loaded_or_skip(Tracer::new(Config {
        backend: BackendChoice::Force(backend_under_test()),
        expiry,
        ..Config::default()
    }))
}

/// One record of an identity: (call number, cookie, closed, closes counted in it, last sent,
/// last received).
type Record = (u32, u64, bool, u32, u64, u64);

/// Everything one client was told about the connections of one namespace, by identity.
#[derive(Default)]
struct Identities {
    /// Identity -> (sent, received, ends, last end reason).
    seen: HashMap<ConnectionTuple, (u64, u64, u32, Option<EndReason>)>,
    /// Identities that were shown while open.
    shown_open: HashSet<ConnectionTuple>,
    /// Problems found while recording (reported all at once by the test).
    problems: Vec<String>,
    /// Every record, by identity.
    history: HashMap<ConnectionTuple, Vec<Record>>,
    calls: u32,
}

impl Identities {
    fn add(&mut self, conns: &[ConnectionStats], netns: u32) {
        self.calls += 1;
        for conn in conns.iter().filter(|c| c.tuple.netns == netns) {
            let t = conn.tuple;
            if !conn.is_closed {
                if t.pid == 0 || t.sport == 0 || t.dport == 0 {
                    self.problems.push(format!(
                        "open connection shown with an incomplete identity: {t:?}"
                    ));
                }
                self.shown_open.insert(t);
            }
            self.history.entry(t).or_default().push((
                self.calls,
                conn.cookie,
                conn.is_closed,
                conn.last.tcp_closed,
                conn.last.sent_bytes,
                conn.last.recv_bytes,
            ));
            let entry = self.seen.entry(t).or_default();
            entry.0 += conn.last.sent_bytes;
            entry.1 += conn.last.recv_bytes;
            if conn.is_closed {
                // One record per end: connections here never share a tuple (no port reuse),
                // so an aggregated record would be a second end of the same identity.
                entry.2 += match t.protocol {
                    Protocol::Tcp => conn.last.tcp_closed.max(1),
                    Protocol::Udp => 1,
                };
                entry.3 = conn.end_reason;
            }
        }
    }

    /// Every identity ever shown ended exactly once.
    fn check_every_identity_ended_once(&self) {
        let mut problems = self.problems.clone();
        for (t, (_, _, ends, _)) in &self.seen {
            if *ends != 1 {
                let open = self.shown_open.contains(t);
                // Its records (call, cookie, closed, closes, sent, received) tell a second end from
                // an aggregated one.
                problems.push(format!(
                    "{t:?} ended {ends} times (shown open: {open}); records {:?}",
                    self.history.get(t)
                ));
            }
        }
        assert!(
            problems.is_empty(),
            "{} problems, first 20:\n{}",
            problems.len(),
            problems
                .iter()
                .take(20)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n")
        );
    }

    /// One call of `client`, recorded.
    fn poll(&mut self, tracer: &Tracer, client: &str, netns: u32) {
        let delta = tracer.get_active_connections(client).expect("poll");
        self.add(&delta.conns, netns);
    }

    /// Both sides of the TCP connection between `a` and `b` were seen as one identity each,
    /// with `a` having sent `a_sent` and received `a_received` (and `b` the reverse).
    fn assert_pair(&self, a: SocketAddr, b: SocketAddr, a_sent: u64, a_received: u64) {
        for (local, remote, sent, received) in
            [(a, b, a_sent, a_received), (b, a, a_received, a_sent)]
        {
            let found = self.by_endpoints(local, remote);
            assert_eq!(found.len(), 1, "{local} -> {remote}: {found:?}");
            let (s, r, _, _) = self.seen[&found[0]];
            assert_eq!((s, r), (sent, received), "{local} -> {remote}");
        }
    }

    fn by_endpoints(&self, local: SocketAddr, remote: SocketAddr) -> Vec<ConnectionTuple> {
        self.seen
            .keys()
            .filter(|t| {
                SocketAddr::new(t.src, t.sport) == local
                    && SocketAddr::new(t.dst, t.dport) == remote
            })
            .copied()
            .collect()
    }
}

/// Polls `tracer` as `client` every `interval` until `stop` is set, then once more after the
/// closes have had time to arrive.
fn poll_until(
    tracer: &Tracer,
    client: &str,
    interval: Duration,
    stop: &AtomicBool,
    netns: u32,
) -> Identities {
    let mut ids = Identities::default();
    while !stop.load(Ordering::Relaxed) {
        let delta = tracer.get_active_connections(client).expect("poll");
        ids.add(&delta.conns, netns);
        std::thread::sleep(interval);
    }
    std::thread::sleep(Duration::from_millis(300));
    let delta = tracer.get_active_connections(client).expect("last poll");
    ids.add(&delta.conns, netns);
    ids
}

const REQUEST: usize = 64;
const RESPONSE: usize = 300;

#[test]
fn a_client_polling_during_handshakes_and_accepts_sees_one_identity_per_connection_ending_once() {
    in_fresh_netns(|| {
        let Some(tracer) = new_tracer(ExpiryConfig::default()) else {
            return;
        };
        let tracer = Arc::new(tracer);
        let netns = current_netns_inode().expect("netns") as u32;
        tracer.register_client("fast").expect("register");
        tracer.register_client("slow").expect("register");
        let stop = Arc::new(AtomicBool::new(false));
        let pollers: Vec<_> = [("fast", 1u64), ("slow", 50)]
            .into_iter()
            .map(|(name, ms)| {
                let (tracer, stop) = (Arc::clone(&tracer), Arc::clone(&stop));
                std::thread::spawn(move || {
                    poll_until(&tracer, name, Duration::from_millis(ms), &stop, netns)
                })
            })
            .collect();

        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let server = listener.local_addr().expect("addr");
        let mut clients = Vec::new();
        const ROUNDS: usize = 20;
        const BATCH: usize = 10;
        for round in 0..ROUNDS {
            // A batch completes its handshakes and sends its requests while nobody accepts:
            // the server sides sit in the accept queue (created in softirq, no owner yet).
            let mut batch = Vec::new();
            for _ in 0..BATCH {
                let mut c = TcpStream::connect(server).expect("connect");
                c.write_all(&[1u8; REQUEST]).expect("request");
                batch.push(c);
            }
            std::thread::sleep(Duration::from_millis(20));
            for (i, mut c) in batch.into_iter().enumerate() {
                let (mut s, peer) = listener.accept().expect("accept");
                let mut request = [0u8; REQUEST];
                s.read_exact(&mut request).expect("read request");
                s.write_all(&[2u8; RESPONSE]).expect("response");
                let half_close_first = (round + i) % 2 == 0;
                if half_close_first {
                    // Like Python's http.server: the server shuts its sending side first,
                    // the client reads to EOF and closes, the server sees EOF and closes.
                    s.shutdown(Shutdown::Write).expect("shutdown");
                }
                if half_close_first {
                    let mut response = Vec::new();
                    c.read_to_end(&mut response).expect("response and EOF");
                    assert_eq!(response.len(), RESPONSE);
                } else {
                    let mut response = [0u8; RESPONSE];
                    c.read_exact(&mut response).expect("response");
                }
                drop(c);
                let mut rest = Vec::new();
                s.read_to_end(&mut rest).expect("EOF");
                drop(s);
                clients.push(peer);
                if !half_close_first {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
        std::thread::sleep(Duration::from_millis(200));
        stop.store(true, Ordering::Relaxed);
        for poller in pollers {
            let ids = poller.join().expect("poller");
            ids.check_every_identity_ended_once();
            for client in &clients {
                for (local, remote, sent, received) in [
                    (*client, server, REQUEST, RESPONSE),
                    (server, *client, RESPONSE, REQUEST),
                ] {
                    let found = ids.by_endpoints(local, remote);
                    assert_eq!(found.len(), 1, "{local} -> {remote}: identities {found:?}");
                    let (s, r, _, _) = ids.seen[&found[0]];
                    assert_eq!(
                        (s, r),
                        (sent as u64, received as u64),
                        "{local} -> {remote} bytes: {:?}",
                        ids.history.get(&found[0])
                    );
                    assert_eq!(
                        found[0].pid,
                        std::process::id(),
                        "{local} -> {remote} owner"
                    );
                }
            }
            let tcp = ids
                .seen
                .keys()
                .filter(|t| t.protocol == Protocol::Tcp)
                .count();
            assert_eq!(tcp, 2 * ROUNDS * BATCH, "identities in the namespace");
        }
    });
}

#[test]
fn a_udp_flow_idle_across_a_poll_and_then_closed_is_reported_closed_once() {
    in_fresh_netns(|| {
        let Some(tracer) = new_tracer(ExpiryConfig::default()) else {
            return;
        };
        let netns = current_netns_inode().expect("netns") as u32;
        let server = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let client = UdpSocket::bind("127.0.0.1:0").expect("bind");
        client
            .connect(server.local_addr().expect("addr"))
            .expect("connect");
        let mut ids = Identities::default();
        tracer.register_client("a").expect("register");
        client.send(&[5u8; 100]).expect("send");
        let mut buf = [0u8; 200];
        server.recv_from(&mut buf).expect("recv");
        ids.poll(&tracer, "a", netns);
        // Idle across this poll: nothing moved.
        let idle = tracer.get_active_connections("a").expect("poll");
        let client_flow = (
            client.local_addr().expect("local"),
            server.local_addr().expect("addr"),
        );
        assert!(
            !idle.conns.iter().any(|c| c.tuple.netns == netns
                && SocketAddr::new(c.tuple.src, c.tuple.sport) == client_flow.0),
            "an idle flow is not reported"
        );
        drop(client);
        drop(server);
        std::thread::sleep(Duration::from_millis(100));
        let delta = tracer.get_active_connections("a").expect("poll");
        let ended: Vec<_> = delta
            .conns
            .iter()
            .filter(|c| {
                c.tuple.netns == netns
                    && SocketAddr::new(c.tuple.src, c.tuple.sport) == client_flow.0
            })
            .collect();
        assert_eq!(ended.len(), 1, "{ended:?}");
        assert!(
            ended[0].is_closed && ended[0].last.is_zero(),
            "{:?}",
            ended[0]
        );
        assert_eq!(ended[0].end_reason, Some(EndReason::Closed));
        ids.add(&delta.conns, netns);
        ids.poll(&tracer, "a", netns);
        ids.check_every_identity_ended_once();
        let (sent, _, _, _) = ids.seen[&ids.by_endpoints(client_flow.0, client_flow.1)[0]];
        assert_eq!(sent, 100);
    });
}

#[test]
fn a_udp_server_socket_with_10000_peers_gets_10000_exact_flows_each_ending_once() {
    if !first_backend_of_kernel("the peer-list and generation sweep (shared by every backend)") {
        return;
    }
    in_fresh_netns(|| {
        let Some(tracer) = new_tracer(ExpiryConfig::default()) else {
            return;
        };
        let netns = current_netns_inode().expect("netns") as u32;
        tracer.register_client("a").expect("register");
        let server = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let server_addr = server.local_addr().expect("addr");
        let mut ids = Identities::default();
        const PEERS: u16 = 10_000;
        let mut buf = [0u8; 64];
        for i in 0..PEERS {
            // Distinct, explicit ports: the kernel's choice could hand a port out again.
            let client = UdpSocket::bind(("127.0.0.1", 20_000 + i)).expect("client bind");
            client.send_to(&[1u8; 32], server_addr).expect("send");
            let (n, from) = server.recv_from(&mut buf).expect("server recv");
            assert_eq!((n, from), (32, client.local_addr().expect("local")));
            server.send_to(&[2u8; 16], from).expect("reply");
            client.recv_from(&mut buf).expect("client recv");
            if i % 2_000 == 0 {
                ids.poll(&tracer, "a", netns);
            }
        }
        ids.poll(&tracer, "a", netns);
        drop(server);
        std::thread::sleep(Duration::from_millis(100));
        ids.poll(&tracer, "a", netns);
        ids.poll(&tracer, "a", netns);
        ids.check_every_identity_ended_once();
        // Identities by endpoints, once (a scan per peer would be quadratic).
        let mut by_ends: HashMap<(SocketAddr, SocketAddr), Vec<ConnectionTuple>> = HashMap::new();
        for t in ids.seen.keys() {
            by_ends
                .entry((
                    SocketAddr::new(t.src, t.sport),
                    SocketAddr::new(t.dst, t.dport),
                ))
                .or_default()
                .push(*t);
        }
        let mut reasons: HashMap<Option<EndReason>, usize> = HashMap::new();
        for i in 0..PEERS {
            let peer: SocketAddr = ([127, 0, 0, 1], 20_000 + i).into();
            let found = by_ends
                .get(&(server_addr, peer))
                .cloned()
                .unwrap_or_default();
            assert_eq!(found.len(), 1, "server flow to {peer}: {found:?}");
            let (sent, received, _, reason) = ids.seen[&found[0]];
            assert_eq!((sent, received), (16, 32), "server flow to {peer}");
            *reasons.entry(reason).or_default() += 1;
            let client = by_ends
                .get(&(peer, server_addr))
                .cloned()
                .unwrap_or_default();
            assert_eq!(client.len(), 1, "client flow {peer}");
            assert_eq!(ids.seen[&client[0]].0, 32, "client flow {peer} sent");
        }
        // The kernel ends the flows its peer list names when the socket closes; the tracer ends
        // the rest at its next read, when their socket's generation is gone.
        assert_eq!(
            reasons.get(&Some(EndReason::Closed)).copied().unwrap_or(0),
            MAX_UDP_PEERS as usize,
            "{reasons:?}"
        );
        assert_eq!(
            reasons
                .get(&Some(EndReason::SocketGone))
                .copied()
                .unwrap_or(0),
            usize::from(PEERS) - MAX_UDP_PEERS as usize,
            "{reasons:?}"
        );
    });
}

#[test]
fn an_idle_udp_flow_that_expires_is_reported_as_an_end_once() {
    if !first_backend_of_kernel("expiry (a userspace rule)") {
        return;
    }
    in_fresh_netns(|| {
        let expiry = ExpiryConfig {
            udp: Duration::from_millis(500),
            udp_stream: Duration::from_millis(500),
            ..ExpiryConfig::default()
        };
        let Some(tracer) = new_tracer(expiry) else {
            return;
        };
        let netns = current_netns_inode().expect("netns") as u32;
        tracer.register_client("a").expect("register");
        let server = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let client = UdpSocket::bind("127.0.0.1:0").expect("bind");
        client
            .send_to(&[7u8; 40], server.local_addr().expect("addr"))
            .expect("send");
        let mut buf = [0u8; 64];
        server.recv_from(&mut buf).expect("recv");
        let mut ids = Identities::default();
        ids.poll(&tracer, "a", netns);
        let started = Instant::now();
        let mut expired = Vec::new();
        while started.elapsed() < Duration::from_secs(5) && expired.len() < 2 {
            std::thread::sleep(Duration::from_millis(200));
            let delta = tracer.get_active_connections("a").expect("poll");
            expired.extend(
                delta
                    .conns
                    .iter()
                    .filter(|c| c.tuple.netns == netns && c.is_closed)
                    .map(|c| (c.tuple, c.end_reason)),
            );
            ids.add(&delta.conns, netns);
        }
        // Both sockets are still open: both flows (client and server side) idled out.
        assert_eq!(expired.len(), 2, "{expired:?}");
        assert!(
            expired.iter().all(|(_, r)| *r == Some(EndReason::Expired)),
            "{expired:?}"
        );
        ids.poll(&tracer, "a", netns);
        ids.check_every_identity_ended_once();
        let client_flow = ids.by_endpoints(
            client.local_addr().expect("local"),
            server.local_addr().expect("addr"),
        );
        assert_eq!(ids.seen[&client_flow[0]].0, 40);
    });
}

#[test]
fn a_tcp_connection_opened_before_the_tracer_ends_once_on_both_sides() {
    in_fresh_netns(|| {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let server_addr = listener.local_addr().expect("addr");
        let mut client = TcpStream::connect(server_addr).expect("connect");
        let (mut server, client_addr) = listener.accept().expect("accept");
        let Some(tracer) = new_tracer(ExpiryConfig::default()) else {
            return;
        };
        let netns = current_netns_inode().expect("netns") as u32;
        tracer.register_client("a").expect("register");
        client.write_all(&[1u8; 500]).expect("write");
        let mut buf = [0u8; 500];
        server.read_exact(&mut buf).expect("read");
        server.write_all(&[2u8; 700]).expect("write");
        let mut back = [0u8; 700];
        client.read_exact(&mut back).expect("read");
        let mut ids = Identities::default();
        ids.poll(&tracer, "a", netns);
        // The client closes first, then the server sees EOF and closes.
        drop(client);
        let mut rest = Vec::new();
        server.read_to_end(&mut rest).expect("EOF");
        drop(server);
        std::thread::sleep(Duration::from_millis(200));
        ids.poll(&tracer, "a", netns);
        ids.poll(&tracer, "a", netns);
        ids.check_every_identity_ended_once();
        ids.assert_pair(client_addr, server_addr, 500, 700);
    });
}

/// A TCP exchange where the client sends `request` bytes and shuts down its sending side first,
/// the server reads them to EOF, replies `reply` bytes and closes; returns once the reply and the
/// server's FIN had time to arrive, the reply still unread: (client, its address, server address).
fn client_shuts_down_first(request: usize, reply: usize) -> (TcpStream, SocketAddr, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let server_addr = listener.local_addr().expect("addr");
    let mut client = TcpStream::connect(server_addr).expect("connect");
    let client_addr = client.local_addr().expect("local");
    let (mut server, _) = listener.accept().expect("accept");
    client.write_all(&vec![1u8; request]).expect("request");
    // The client is done sending (like `nc -N` or an HTTP/1.0 client): FIN_WAIT.
    client.shutdown(Shutdown::Write).expect("shutdown");
    let mut received = Vec::new();
    server.read_to_end(&mut received).expect("request and EOF");
    assert_eq!(received.len(), request);
    server.write_all(&vec![2u8; reply]).expect("reply");
    drop(server);
    // The reply and the server's FIN arrive before the client reads: the client socket goes
    // through TIME_WAIT to CLOSE with the whole reply still unread.
    std::thread::sleep(Duration::from_millis(300));
    (client, client_addr, server_addr)
}

#[test]
fn a_client_that_shuts_down_first_and_reads_the_reply_after_the_close_counts_every_byte() {
    in_fresh_netns(|| {
        let Some(tracer) = new_tracer(ExpiryConfig::default()) else {
            return;
        };
        let netns = current_netns_inode().expect("netns") as u32;
        tracer.register_client("a").expect("register");
        let mut ids = Identities::default();
        const REPLY: usize = 70_001;
        let (mut client, client_addr, server_addr) = client_shuts_down_first(3_000, REPLY);
        ids.poll(&tracer, "a", netns);
        let mut reply = Vec::new();
        client.read_to_end(&mut reply).expect("reply and EOF");
        assert_eq!(reply.len(), REPLY);
        drop(client);
        std::thread::sleep(Duration::from_millis(100));
        ids.poll(&tracer, "a", netns);
        ids.poll(&tracer, "a", netns);
        ids.check_every_identity_ended_once();
        ids.assert_pair(client_addr, server_addr, 3_000, REPLY as u64);
    });
}

#[test]
fn a_connection_closed_with_unread_bytes_that_are_never_read_ends_when_the_socket_is_released() {
    in_fresh_netns(|| {
        let Some(tracer) = new_tracer(ExpiryConfig::default()) else {
            return;
        };
        let netns = current_netns_inode().expect("netns") as u32;
        tracer.register_client("a").expect("register");
        let (client, client_addr, server_addr) = client_shuts_down_first(100, 5_000);
        let mut ids = Identities::default();
        ids.poll(&tracer, "a", netns);
        // The client never reads the reply: its close is pending until it lets go of the socket.
        drop(client);
        std::thread::sleep(Duration::from_millis(100));
        ids.poll(&tracer, "a", netns);
        ids.poll(&tracer, "a", netns);
        ids.check_every_identity_ended_once();
        let found = ids.by_endpoints(client_addr, server_addr);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(
            (ids.seen[&found[0]].0, ids.seen[&found[0]].1),
            (100, 0),
            "nothing was read"
        );
    });
}
