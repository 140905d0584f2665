//! Every TCP close is emitted exactly once, by the hook that cannot be skipped where the kernel
//! has it: the cgroup `sock_ops` state callback (5.10+), whichever backend counts the bytes.
//! The `inet_sock_set_state` tracepoint alone loses closes that a softirq delivers while another
//! tracing program runs on the same CPU (seen in qemu: 12 of 200 server sockets on 6.12).

use std::{
    collections::HashMap,
    io::{Read, Write},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream},
};

use tracer::KernelVersion;
use tracer_common::conn::{FLAG_CLOSED, FLAG_CLOSED_BY_SOCK_OPS, FLAG_ESTABLISHED};
use tracer_integration::{
    netns::{current_netns_inode, in_fresh_netns},
    tracer::{closes_by_sock_ops, collect_closed, core_config, endpoints, load, summary, the_one},
};

const CONNECTIONS: usize = 20;

/// Which side closes first: the other one's close then completes in softirq (the FIN of the
/// last side reaches a socket in FIN_WAIT2, or the ACK of it one in LAST_ACK).
#[derive(Clone, Copy, Debug)]
enum FirstToClose {
    Client,
    Server,
}

fn closes_are_emitted_once_each(ip: &'static str, first: FirstToClose) {
    in_fresh_netns(move || {
        let Some(tracer) = load(core_config()) else {
            return;
        };
        let by_sock_ops = closes_by_sock_ops(&tracer);
        let netns = current_netns_inode().expect("netns") as u32;
        let listener = TcpListener::bind((ip.parse::<IpAddr>().expect("ip"), 0)).expect("bind");
        let server_addr = listener.local_addr().expect("addr");
        let mut pairs = Vec::new();
        for i in 0..CONNECTIONS {
            let mut client = TcpStream::connect(server_addr).expect("connect");
            let (mut server, _) = listener.accept().expect("accept");
            client.write_all(&vec![1u8; 10 + i]).expect("write");
            let mut buf = vec![0u8; 10 + i];
            server.read_exact(&mut buf).expect("read");
            pairs.push((client, server));
        }
        let mut addrs = Vec::new();
        for (client, mut server) in pairs {
            let client_addr = client.local_addr().expect("addr");
            addrs.push(client_addr);
            match first {
                FirstToClose::Client => {
                    drop(client);
                    let mut rest = Vec::new();
                    server.read_to_end(&mut rest).expect("eof");
                    drop(server);
                }
                FirstToClose::Server => {
                    drop(server);
                    drop(client);
                }
            }
        }

        let closed = collect_closed(&tracer, netns, |c| c.len() >= 2 * CONNECTIONS);
        assert_eq!(
            closed.len(),
            2 * CONNECTIONS,
            "{first:?} closing first: {:?}",
            closed.iter().map(|c| summary(&c.stats)).collect::<Vec<_>>()
        );
        let expected = if by_sock_ops {
            FLAG_ESTABLISHED | FLAG_CLOSED | FLAG_CLOSED_BY_SOCK_OPS
        } else {
            FLAG_ESTABLISHED | FLAG_CLOSED
        };
        for (i, client) in addrs.into_iter().enumerate() {
            let sent = (10 + i) as u64;
            let client_side = the_one(&closed, client, server_addr);
            assert_eq!(client_side.sent_bytes, sent, "sent by {client}");
            assert_eq!(client_side.flags, expected, "flags of {client}");
            let server_side = the_one(&closed, server_addr, client);
            assert_eq!(server_side.recv_bytes, sent, "received from {client}");
            assert_eq!(
                server_side.flags, expected,
                "flags of the server of {client}"
            );
        }
    });
}

#[test]
fn tcp_v4_closes_by_the_client_first_are_emitted_once_each() {
    closes_are_emitted_once_each("127.0.0.1", FirstToClose::Client);
}

#[test]
fn tcp_v4_closes_by_the_server_first_are_emitted_once_each() {
    closes_are_emitted_once_each("127.0.0.1", FirstToClose::Server);
}

#[test]
fn tcp_v6_closes_by_the_client_first_are_emitted_once_each() {
    closes_are_emitted_once_each("::1", FirstToClose::Client);
}

#[test]
fn tcp_v6_closes_by_the_server_first_are_emitted_once_each() {
    closes_are_emitted_once_each("::1", FirstToClose::Server);
}

/// Skipped runs are what the sock_ops close guards against; where the kernel counts them
/// (`bpf_prog_info.recursion_misses`, 5.12+) the tracer reports them, and it says "unknown"
/// (`None`) rather than 0 where the kernel does not.
#[test]
fn skipped_program_runs_are_reported_where_the_kernel_counts_them() {
    in_fresh_netns(|| {
        let Some(tracer) = load(core_config()) else {
            return;
        };
        let kernel = KernelVersion::current().expect("kernel");
        let counters = tracer.counters().expect("counters");
        let skipped = counters.program_runs_skipped();
        assert_eq!(
            skipped.is_some(),
            kernel >= KernelVersion::new(5, 12, 0),
            "program_runs_skipped on {kernel}: {skipped:?}"
        );
        assert_eq!(
            counters
                .iter()
                .any(|(name, _)| name == "program_runs_skipped"),
            skipped.is_some()
        );
    });
}

/// A server that reads part of a request and closes: the kernel purges the unread bytes, resets
/// the connection and sets CLOSE before it orphans the socket, after the release hook ran.
/// The end must still be emitted once, at that CLOSE (it was left pending forever, waiting for
/// bytes nobody could read), with the bytes that were read; the client sees the reset.
#[test]
fn a_server_closing_with_unread_bytes_ends_its_connection_once() {
    in_fresh_netns(|| {
        let Some(tracer) = load(core_config()) else {
            return;
        };
        let netns = current_netns_inode().expect("netns") as u32;
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let server_addr = listener.local_addr().expect("addr");
        let mut client = TcpStream::connect(server_addr).expect("connect");
        let client_addr = client.local_addr().expect("addr");
        client.write_all(&[7u8; 40]).expect("write");
        let (mut conn, _) = listener.accept().expect("accept");
        let mut head = [0u8; 2];
        conn.read_exact(&mut head).expect("read");
        // Wait until all 40 bytes are queued on the server side, so the close finds 38 unread.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let mut peeked = [0u8; 64];
        while conn.peek(&mut peeked).expect("peek") < 38 {
            assert!(
                std::time::Instant::now() < deadline,
                "the bytes never arrived"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        drop(conn);
        let mut rest = [0u8; 1];
        let reset = client.read(&mut rest);
        assert!(
            matches!(&reset, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
            "the client sees the reset: {reset:?}"
        );
        drop(client);
        let closed = collect_closed(&tracer, netns, |c| c.len() >= 2);
        assert_eq!(
            closed.len(),
            2,
            "{:?}",
            closed.iter().map(|c| summary(&c.stats)).collect::<Vec<_>>()
        );
        let server_side = the_one(&closed, server_addr, client_addr);
        assert_eq!((server_side.sent_bytes, server_side.recv_bytes), (0, 2));
        assert_ne!(server_side.flags & FLAG_CLOSED, 0);
        let client_side = the_one(&closed, client_addr, server_addr);
        assert_eq!(client_side.sent_bytes, 40);
        assert_eq!(client_side.failure, 104, "ECONNRESET");
        let open = tracer.connections().expect("read");
        assert!(
            !open.iter().any(|(_, s)| s.tuple.netns == netns),
            "nothing left open in the map"
        );
    });
}

/// Sets the calling thread's CPU affinity to CPU 0 only (threads it spawns inherit it).
fn pin_to_cpu0() {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET writes inside it; 0 is the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        assert_eq!(
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set),
            0,
            "sched_setaffinity: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Entries created in softirq (a listener's children, at the handshake's last ACK, delivered on
/// loopback in the sender's softirq) and in process context (connects) on one CPU, hundreds of
/// times: each entry is built in the scratch slot of its nesting level (`conn::entry`), so none
/// carries another connection's tuple. Every connection ends once on each side, under its own
/// ports, with its bytes, and nothing else ends in the namespace.
#[test]
fn entries_built_in_softirq_and_process_context_on_one_cpu_keep_their_own_tuples() {
    const N: usize = 300;
    in_fresh_netns(|| {
        let Some(tracer) = load(core_config()) else {
            return;
        };
        let netns = current_netns_inode().expect("netns") as u32;
        pin_to_cpu0();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let server = listener.local_addr().expect("addr");
        let acceptor = std::thread::spawn(move || {
            for _ in 0..N {
                let (mut conn, _) = listener.accept().expect("accept");
                let mut byte = [0u8; 3];
                conn.read_exact(&mut byte).expect("read");
                conn.write_all(&[7u8; 5]).expect("write");
            }
        });
        let mut clients = Vec::with_capacity(N);
        for _ in 0..N {
            let mut stream = TcpStream::connect(server).expect("connect");
            stream.write_all(&[1u8; 3]).expect("write");
            let mut reply = [0u8; 5];
            stream.read_exact(&mut reply).expect("read");
            clients.push(stream.local_addr().expect("addr"));
        }
        acceptor.join().expect("acceptor");
        let closed = collect_closed(&tracer, netns, |c| c.len() >= 2 * N);
        assert_eq!(
            closed.len(),
            2 * N,
            "one close per side of each connection, nothing else"
        );
        // A client port can come back for a later connection to the same server: on loopback
        // the kernel reuses a TIME_WAIT tuple a second after (net.ipv4.tcp_tw_reuse = 2, the
        // default). Each connection of a tuple ends once: as many records as connections.
        let mut connections: HashMap<SocketAddr, usize> = HashMap::new();
        for client in &clients {
            *connections.entry(*client).or_default() += 1;
        }
        for (client, count) in &connections {
            let sides = [(*client, server, (3, 5)), (server, *client, (5, 3))];
            for (local, remote, bytes) in sides {
                let records: Vec<(u64, u64)> = closed
                    .iter()
                    .filter(|c| endpoints(&c.stats.tuple) == (local, remote))
                    .map(|c| (c.stats.sent_bytes, c.stats.recv_bytes))
                    .collect();
                assert_eq!(
                    records,
                    vec![bytes; *count],
                    "{local} -> {remote}: one close with its bytes per connection ({count})"
                );
            }
        }
    });
}
