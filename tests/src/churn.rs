//! Connection churn and its exact accounting, shared by the API churn test
//! (`integration/api.rs`) and the soak (`integration/soak.rs`): what the load generator moved
//! per flow ([`Moved`]), what each client of the tracer was told ([`Seen`]), and their
//! comparison ([`settle`]).

use std::{
    collections::{HashMap, HashSet},
    io::{Read, Write},
    net::{IpAddr, SocketAddr, TcpListener, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use tracer::model::{ConnectionStats, Protocol};

/// A connection as the tests name it: protocol, local and remote endpoints.
pub type Flow = (Protocol, SocketAddr, SocketAddr);

/// The flow of a connection the tracer reported.
pub fn flow(conn: &ConnectionStats) -> Flow {
    (
        conn.tuple.protocol,
        SocketAddr::new(conn.tuple.src, conn.tuple.sport),
        SocketAddr::new(conn.tuple.dst, conn.tuple.dport),
    )
}

/// What one client has been told, summed per flow.
#[derive(Default)]
pub struct Seen {
    pub sent: HashMap<Flow, u64>,
    pub recv: HashMap<Flow, u64>,
    pub closed: HashMap<Flow, u32>,
    /// TCP connections that failed before they were established (a connect refused or reset:
    /// a failure on a closed record that moved no byte), counted apart from the flows: the
    /// generator cannot name their port (`connect` returned no socket), only count them.
    pub failed: u64,
    /// Local endpoints whose flows are not compared (the unconnected UDP servers: one socket
    /// talking to every client, checked by the UDP tests), so they are not summed either.
    pub ignored_locals: HashSet<SocketAddr>,
}

impl Seen {
    /// Adds one delta's connections of namespace `netns`.
    pub fn add(&mut self, conns: &[ConnectionStats], netns: u32) {
        let mut in_this_call = HashSet::new();
        for conn in conns.iter().filter(|c| c.tuple.netns == netns) {
            let key = flow(conn);
            if self.ignored_locals.contains(&key.1) {
                continue;
            }
            assert!(
                in_this_call.insert((key, conn.is_closed)),
                "{key:?} reported twice in one delta"
            );
            let failed = if conn.is_closed && conn.tuple.protocol == Protocol::Tcp {
                conn.tcp_failures.iter().map(|(_, n)| n).sum::<u32>()
            } else {
                0
            };
            self.failed += u64::from(failed);
            if failed > 0
                && conn.last.sent_bytes == 0
                && conn.last.recv_bytes == 0
                && conn.last.tcp_closed <= failed
            {
                // Only failed connects: no flow of the books.
                continue;
            }
            *self.sent.entry(key).or_default() += conn.last.sent_bytes;
            *self.recv.entry(key).or_default() += conn.last.recv_bytes;
            if conn.is_closed {
                // Closed connections of one TCP flow within one interval (a reused port) are
                // aggregated into one record whose `tcp_closed` counts them; UDP flows use
                // ports that are not reused within an interval ([`next_udp_socket`]), so each
                // record is one connection.
                // A failed connect aggregated with connections of the flow is counted in
                // `failed`, not as one of its closes.
                let closes = match conn.tuple.protocol {
                    Protocol::Tcp => conn.last.tcp_closed.saturating_sub(failed),
                    Protocol::Udp => 1,
                };
                *self.closed.entry(key).or_default() += closes;
            }
        }
    }

    /// What this client was told about `key`: (sent, received, closes).
    pub fn of(&self, key: &Flow) -> (u64, u64, u32) {
        (
            self.sent.get(key).copied().unwrap_or(0),
            self.recv.get(key).copied().unwrap_or(0),
            self.closed.get(key).copied().unwrap_or(0),
        )
    }

    fn forget(&mut self, key: &Flow) {
        self.sent.remove(key);
        self.recv.remove(key);
        self.closed.remove(key);
    }

    /// Flows tracked (to show that settled ones are forgotten).
    pub fn len(&self) -> usize {
        self.sent.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sent.is_empty()
    }
}

/// What the load generator did on one flow (protocol + endpoints): ephemeral ports are reused
/// by later connections, so one flow can be several connections one after the other.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Moved {
    pub sent: u64,
    pub received: u64,
    pub connections: u32,
}

impl Moved {
    /// As [`Seen::of`] says it: (sent, received, closes).
    pub fn as_seen(&self) -> (u64, u64, u32) {
        (self.sent, self.received, self.connections)
    }
}

/// Records one finished connection of `flow` (after it closed).
pub fn record(moved: &mut HashMap<Flow, Moved>, flow: Flow, sent: u64, received: u64) {
    let entry = moved.entry(flow).or_default();
    entry.sent += sent;
    entry.received += received;
    entry.connections += 1;
}

/// Records both ends of a finished TCP connection that moved `out` bytes from `client` to
/// `server` and `back` bytes back.
pub fn record_tcp(
    moved: &mut HashMap<Flow, Moved>,
    client: SocketAddr,
    server: SocketAddr,
    out: u64,
    back: u64,
) {
    record(moved, (Protocol::Tcp, client, server), out, back);
    record(moved, (Protocol::Tcp, server, client), back, out);
}

/// Compares every flow of `moved` with what each client was told and forgets the flows on
/// which every client agrees exactly (bytes both ways and the number of closes); returns how
/// many were settled. What is left is either still in flight (a close not yet delivered) or
/// wrong: a long run calls this as it goes to keep the books small, and the final call's
/// leftovers are the mismatches.
pub fn settle(moved: &mut HashMap<Flow, Moved>, clients: &mut [&mut Seen]) -> usize {
    let agreed: Vec<Flow> = moved
        .iter()
        .filter(|(key, m)| clients.iter().all(|seen| seen.of(key) == m.as_seen()))
        .map(|(key, _)| *key)
        .collect();
    for key in &agreed {
        moved.remove(key);
        for seen in clients.iter_mut() {
            seen.forget(key);
        }
    }
    agreed.len()
}

/// A UDP socket on `ip` at the next free port of 20000..60000 (not the kernel's choice, which
/// may hand the same port out again within a run).
pub fn next_udp_socket(ip: IpAddr, next_port: &mut u16) -> UdpSocket {
    loop {
        let port = *next_port;
        *next_port = if port >= 60_000 { 20_000 } else { port + 1 };
        if let Ok(socket) = UdpSocket::bind((ip, port)) {
            return socket;
        }
    }
}

/// A TCP server on `listener` that echoes what each client sends, then closes after the
/// client's FIN, until `stop`. With `threaded` false it serves one connection at a time (a
/// client working one connection at a time needs no more: one blocked receive per side; a
/// thread per connection would leave many receives blocked at once, more than the kprobe
/// backend's return-probe instances on a 2-CPU kernel, whose lost calls are counted in
/// `probe_return_missed`, a known kretprobe limit reported, not hidden). With `threaded` true,
/// a thread per connection, for a few concurrent long-lived or slow connections.
pub fn echo_server(listener: TcpListener, stop: Arc<AtomicBool>, threaded: bool) -> JoinHandle<()> {
    std::thread::spawn(move || {
        listener.set_nonblocking(true).expect("nonblocking");
        let mut served = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((mut stream, _)) => {
                    stream.set_nonblocking(false).expect("blocking");
                    let mut serve = move || {
                        let mut buf = [0u8; 4096];
                        loop {
                            match stream.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => {
                                    if stream.write_all(&buf[..n]).is_err() {
                                        break;
                                    }
                                }
                            }
                        }
                    };
                    if threaded {
                        served.push(std::thread::spawn(serve));
                        served.retain(|t: &JoinHandle<()>| !t.is_finished());
                    } else {
                        serve();
                    }
                }
                Err(_) => std::thread::sleep(Duration::from_micros(200)),
            }
        }
        for thread in served {
            thread.join().expect("echo thread");
        }
    })
}
