//! Connections that existed before the tracer started are found when it starts (the start-up
//! walk, `iter/tcp` and `iter/udp`, Linux 5.9+), with their owner, direction and namespace; their
//! counters count from the start, and what the kernel had counted by then is in `before_start`,
//! checked against the test's own byte counts and the kernel's `TCP_INFO` (what `ss -ti` prints)
//! taken while the connection was idle. Each is closed exactly once. One test, one tracer load.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::mpsc,
    time::{Duration, Instant},
};

use tracer::kernel::conn_tracer::ConnTracer;
use tracer_common::conn::{
    BeforeStart, ClosedConn, ConnStats, DIRECTION_INCOMING, DIRECTION_OUTGOING, FLAG_CLOSED,
    FLAG_PREEXISTING, IPPROTO_TCP, IPPROTO_UDP,
};
use tracer_integration::{
    fork::{fork_child, raw_read_exact, raw_write_all, wait_ok},
    kernel_view::{TcpInfo, ss_tcp_info, tcp_info},
    netns::{current_netns_inode, in_fresh_netns, loopback_up},
    tracer::{core_config, endpoints, load, summary, the_one},
};

/// `tcpi_state` values (include/net/tcp_states.h).
const CLOSE_WAIT: u8 = 8;
const FIN_WAIT2: u8 = 5;

/// The descriptor number the forked server moves its accepted socket to, so the parent can
/// borrow it (`pidfd_getfd`) to read its `TCP_INFO`.
const CHILD_SOCKET_FD: i32 = 900;

/// A duplicate of descriptor `fd` of process `pid` (`pidfd_getfd`, 5.6+).
fn borrow_fd(pid: libc::pid_t, fd: i32) -> OwnedFd {
    // SAFETY: plain syscalls; the returned descriptors are new and ours.
    unsafe {
        let pidfd = libc::syscall(libc::SYS_pidfd_open, pid, 0);
        assert!(
            pidfd >= 0,
            "pidfd_open: {}",
            std::io::Error::last_os_error()
        );
        let pidfd = OwnedFd::from_raw_fd(pidfd as i32);
        let dup = libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0);
        assert!(dup >= 0, "pidfd_getfd: {}", std::io::Error::last_os_error());
        OwnedFd::from_raw_fd(dup as i32)
    }
}

/// `tcpi_bytes_acked` and `tcpi_bytes_received` follow sequence numbers: the SYN of the side
/// that connected counts as one acknowledged byte (the accepted side is created past it), and so
/// does a FIN. The tracer reports payload bytes.
const SYN: u64 = 1;
const FIN: u64 = 1;

/// Waits (bounded) until the kernel says `acked` (sequence bytes: payload, SYN, FIN) of what
/// `socket` sent are acknowledged and nothing is in flight: the connection is at rest, nothing
/// more moves on it until the test sends.
fn settled(socket: &impl AsRawFd, acked: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let info = tcp_info(socket).expect("TCP_INFO");
        if info.bytes_acked == acked && info.unacked == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{acked} bytes sent, {} acknowledged ({} segments unacknowledged)",
            info.bytes_acked,
            info.unacked
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// What `before_start` must hold for a TCP connection that moved `sent` and `received` payload
/// bytes before the start, whose kernel counters were `info` at rest then.
fn before(sent: usize, received: usize, info: &TcpInfo) -> BeforeStart {
    BeforeStart {
        sent_bytes: sent as u64,
        recv_bytes: received as u64,
        sent_packets: info.segs_out,
        recv_packets: info.segs_in,
        retransmits: info.total_retrans,
        _pad: 0,
    }
}

/// `ss -tin` (where it exists: not in the VM images) says these sockets moved these payload
/// bytes before the start: sent once each (`bytes_sent - bytes_retrans`), and received
/// (`bytes_received`, less the peer's FIN where `fin` says it arrived).
fn ss_agrees(sockets: &[(SocketAddr, SocketAddr, usize, usize, bool)]) {
    let Some(ss) = ss_tcp_info() else {
        return;
    };
    for &(local, remote, sent, received, fin) in sockets {
        let line = ss
            .get(&(local.to_string(), remote.to_string()))
            .unwrap_or_else(|| panic!("ss -tin lists no {local} -> {remote}"));
        assert_eq!(
            (
                line.bytes_sent - line.bytes_retrans,
                line.bytes_received - u64::from(fin)
            ),
            (sent as u64, received as u64),
            "ss -tin for {local} -> {remote}: {line:?}"
        );
    }
}

/// The open entries of namespace `netns` with these endpoints and protocol.
fn open_entries(
    tracer: &ConnTracer,
    netns: u32,
    protocol: u8,
    local: SocketAddr,
    remote: SocketAddr,
) -> Vec<ConnStats> {
    tracer
        .connections()
        .expect("read connections")
        .into_iter()
        .map(|(_, stats)| stats)
        .filter(|s| {
            s.tuple.netns == netns
                && s.tuple.protocol == protocol
                && endpoints(&s.tuple) == (local, remote)
        })
        .collect()
}

fn the_open(
    tracer: &ConnTracer,
    netns: u32,
    protocol: u8,
    local: SocketAddr,
    remote: SocketAddr,
) -> ConnStats {
    match open_entries(tracer, netns, protocol, local, remote).as_slice() {
        [one] => *one,
        other => panic!(
            "expected one open entry {local} -> {remote}, found {:?}",
            other.iter().map(summary).collect::<Vec<_>>()
        ),
    }
}

/// The drained closes of the namespaces `netns`, until there are `count` (bounded wait).
fn closed_in(tracer: &ConnTracer, netns: &[u32], count: usize) -> Vec<ClosedConn> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut all = Vec::new();
    loop {
        tracer.drain_closed(&mut all);
        all.retain(|c| netns.contains(&c.stats.tuple.netns));
        if all.len() >= count || Instant::now() > deadline {
            return all;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A TCP connection opened before the start in a namespace of its own, on a thread of this
/// process (`unshare` moves one thread): what it moved before, and how to let it go on.
struct OtherNamespace {
    netns: u32,
    client: SocketAddr,
    server: SocketAddr,
    client_info: TcpInfo,
    go: mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

/// Sizes the connection in the other namespace moves before and after the start.
const OTHER_BEFORE: usize = 500;
const OTHER_AFTER: usize = 300;

impl OtherNamespace {
    fn open() -> Self {
        let (ready_tx, ready_rx) = mpsc::channel();
        let (go, go_rx) = mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            // SAFETY: plain syscall; it only affects this thread's namespaces.
            assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0);
            loopback_up().expect("lo up");
            let netns = current_netns_inode().expect("netns") as u32;
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
            let server_addr = listener.local_addr().expect("addr");
            let mut client = TcpStream::connect(server_addr).expect("connect");
            let (mut server, _) = listener.accept().expect("accept");
            client.write_all(&[5u8; OTHER_BEFORE]).expect("write");
            let mut buf = [0u8; OTHER_BEFORE];
            server.read_exact(&mut buf).expect("read");
            settled(&client, OTHER_BEFORE as u64 + SYN);
            let info = tcp_info(&client).expect("TCP_INFO");
            ready_tx
                .send((netns, client.local_addr().expect("addr"), server_addr, info))
                .expect("ready");
            go_rx.recv().expect("go");
            client.write_all(&[6u8; OTHER_AFTER]).expect("write");
            server.read_exact(&mut buf[..OTHER_AFTER]).expect("read");
            drop(client);
            let mut eof = [0u8; 1];
            assert_eq!(server.read(&mut eof).expect("read"), 0);
        });
        let (netns, client, server, client_info) = ready_rx.recv().expect("ready");
        Self {
            netns,
            client,
            server,
            client_info,
            go,
            thread,
        }
    }
}

/// One tracer load (each costs seconds of verifier time in the CI's VMs) for every case:
/// connections opened BEFORE the start, in this namespace and in another one, are found by the
/// start-up walk with their owner, direction and what the kernel counted on them by then
/// (`before_start`, against the test's own byte counts, `TCP_INFO` and `ss -tin`), and their
/// counters count from the start; each close is reported once.
#[test]
fn connections_open_before_start_are_found_at_start_and_counted_from_it() {
    in_fresh_netns(|| {
        let netns = current_netns_inode().expect("netns") as u32;

        // --- Before the start. ---
        // TCP: a client of a listener whose accepted side is another process (a known pid that
        // is not the test's). The client sends a1 and gets b1 before the start, a2 and b2 after.
        let (a1, b1, a2, b2) = (3000usize, 5000usize, 1234usize, 4321usize);
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let server_addr = listener.local_addr().expect("addr");
        let listen_fd = listener.as_raw_fd();
        // The server waits for a byte on this pipe before its reads of after the start: a
        // receive call blocked since before the start is not seen whole by the fentry and
        // kprobe backends (their return probe needs the call's entry; see the README).
        let mut go_pipe = [0i32; 2];
        // SAFETY: a pipe into a 2-descriptor array.
        assert_eq!(unsafe { libc::pipe(go_pipe.as_mut_ptr()) }, 0);
        let [go_read, go_write] = go_pipe;
        let server_pid = fork_child(|| {
            // SAFETY: raw accept on the inherited listener, then our own descriptors.
            let fd = unsafe { libc::accept(listen_fd, std::ptr::null_mut(), std::ptr::null_mut()) };
            if fd < 0 || unsafe { libc::dup2(fd, CHILD_SOCKET_FD) } != CHILD_SOCKET_FD {
                return 1;
            }
            // SAFETY: our descriptor.
            unsafe { libc::close(fd) };
            let fd = CHILD_SOCKET_FD;
            if !raw_read_exact(fd, a1) || !raw_write_all(fd, b1) {
                return 2;
            }
            if !raw_read_exact(go_read, 1) {
                return 5;
            }
            if !raw_read_exact(fd, a2) || !raw_write_all(fd, b2) {
                return 3;
            }
            let mut byte = [0u8; 1];
            // SAFETY: valid buffer.
            let eof = unsafe { libc::read(fd, byte.as_mut_ptr().cast(), 1) };
            // SAFETY: our descriptor.
            unsafe { libc::close(fd) };
            if eof == 0 { 0 } else { 4 }
        });
        let mut client = TcpStream::connect(server_addr).expect("connect");
        let client_addr = client.local_addr().expect("addr");
        client.write_all(&vec![1u8; a1]).expect("write");
        let mut reply = vec![0u8; b1];
        client.read_exact(&mut reply).expect("read");

        // A connection the server side half-closed before the start (the closing states count
        // the FINs in the kernel's totals: the client is in CLOSE_WAIT, the server in
        // FIN_WAIT2). The client sends c1 and gets d1 before, sends c2 after.
        let (c1, d1, c2) = (100usize, 200usize, 50usize);
        let mut half_client = TcpStream::connect(server_addr).expect("connect");
        let half_client_addr = half_client.local_addr().expect("addr");
        let (mut half_server, _) = listener.accept().expect("accept");
        half_client.write_all(&[7u8; 100]).expect("write");
        let mut buf = [0u8; 512];
        half_server.read_exact(&mut buf[..c1]).expect("read");
        half_server.write_all(&[8u8; 200]).expect("write");
        half_server
            .shutdown(std::net::Shutdown::Write)
            .expect("shutdown");
        half_client.read_exact(&mut buf[..d1]).expect("read");
        assert_eq!(half_client.read(&mut buf).expect("read"), 0, "the FIN");

        // Everything at rest, then the kernel's view, which must not move until the start.
        let server_side = borrow_fd(server_pid, CHILD_SOCKET_FD);
        settled(&client, a1 as u64 + SYN);
        settled(&server_side, b1 as u64);
        settled(&half_client, c1 as u64 + SYN);
        settled(&half_server, d1 as u64 + FIN);
        let client_info = tcp_info(&client).expect("TCP_INFO");
        let server_info = tcp_info(&server_side).expect("TCP_INFO");
        let half_client_info = tcp_info(&half_client).expect("TCP_INFO");
        let half_server_info = tcp_info(&half_server).expect("TCP_INFO");
        // The owner is the first process found holding the socket: let go of the borrowed one.
        drop(server_side);
        assert_eq!(
            (client_info.bytes_received, server_info.bytes_received),
            (b1 as u64, a1 as u64)
        );
        assert_eq!(
            (half_client_info.state, half_server_info.state),
            (CLOSE_WAIT, FIN_WAIT2)
        );
        assert_eq!(half_client_info.bytes_received, d1 as u64 + FIN);
        ss_agrees(&[
            (client_addr, server_addr, a1, b1, false),
            (server_addr, client_addr, b1, a1, false),
            (half_client_addr, server_addr, c1, d1, true),
            (server_addr, half_client_addr, d1, c1, false),
        ]);

        // UDP: two connected sockets that talked, and an unconnected one that already
        // exchanged datagrams with a peer.
        let bind = || UdpSocket::bind("127.0.0.1:0").expect("bind");
        let (u1, u2) = (bind(), bind());
        let (u1_addr, u2_addr) = (
            u1.local_addr().expect("addr"),
            u2.local_addr().expect("addr"),
        );
        u1.connect(u2_addr).expect("connect");
        u2.connect(u1_addr).expect("connect");
        u1.send(&[1u8; 100]).expect("send");
        assert_eq!(u2.recv(&mut buf).expect("recv"), 100);
        u2.send(&[1u8; 200]).expect("send");
        assert_eq!(u1.recv(&mut buf).expect("recv"), 200);
        let (u3, peer) = (bind(), bind());
        let (u3_addr, peer_addr) = (
            u3.local_addr().expect("addr"),
            peer.local_addr().expect("addr"),
        );
        u3.send_to(&[1u8; 30], peer_addr).expect("send_to");
        assert_eq!(peer.recv_from(&mut buf).expect("recv_from").0, 30);
        peer.send_to(&[1u8; 40], u3_addr).expect("send_to");
        assert_eq!(u3.recv_from(&mut buf).expect("recv_from").0, 40);

        // A connection in another namespace.
        let other = OtherNamespace::open();
        assert_ne!(other.netns, netns);

        // --- The start. ---
        let Some(tracer) = load(core_config()) else {
            return;
        };
        let stats = tracer.iter_stats();
        assert!(
            stats.seeded_tcp >= 6 && stats.seeded_udp >= 2 && stats.seed_netns_visited >= 2,
            "the start-up walk: {stats:?}"
        );

        // Found at start, counting from zero, with what came before in `before_start`.
        let me = std::process::id();
        for (side, local, remote, direction, pid, before_start) in [
            (
                "client",
                client_addr,
                server_addr,
                DIRECTION_OUTGOING,
                me,
                before(a1, b1, &client_info),
            ),
            (
                "accepted",
                server_addr,
                client_addr,
                DIRECTION_INCOMING,
                server_pid as u32,
                before(b1, a1, &server_info),
            ),
            (
                "half-closed client",
                half_client_addr,
                server_addr,
                DIRECTION_OUTGOING,
                me,
                before(c1, d1, &half_client_info),
            ),
            (
                "half-closed accepted",
                server_addr,
                half_client_addr,
                DIRECTION_INCOMING,
                me,
                before(d1, c1, &half_server_info),
            ),
        ] {
            let entry = the_open(&tracer, netns, IPPROTO_TCP, local, remote);
            assert_ne!(
                entry.flags & FLAG_PREEXISTING,
                0,
                "{side}: {}",
                summary(&entry)
            );
            assert_eq!(entry.direction, direction, "{side}: {}", summary(&entry));
            assert_eq!(entry.tuple.pid, pid, "{side}: the owner");
            assert_eq!(entry.before_start, before_start, "{side}");
            assert_eq!(
                (
                    entry.sent_bytes,
                    entry.recv_bytes,
                    entry.sent_packets,
                    entry.recv_packets
                ),
                (0, 0, 0, 0),
                "{side}: nothing moved since the start"
            );
        }
        // The listener is no connection, and the unconnected UDP socket has no flow yet (the
        // kernel keeps no peers for it).
        let unpaired: Vec<String> = tracer
            .connections()
            .expect("read")
            .iter()
            .filter(|(_, s)| s.tuple.netns == netns && s.tuple.dport == 0)
            .map(|(_, s)| summary(s))
            .collect();
        assert!(unpaired.is_empty(), "entries without a peer: {unpaired:?}");
        assert!(open_entries(&tracer, netns, IPPROTO_UDP, u3_addr, peer_addr).is_empty());
        assert!(open_entries(&tracer, netns, IPPROTO_UDP, peer_addr, u3_addr).is_empty());
        for (local, remote) in [(u1_addr, u2_addr), (u2_addr, u1_addr)] {
            let entry = the_open(&tracer, netns, IPPROTO_UDP, local, remote);
            assert_ne!(entry.flags & FLAG_PREEXISTING, 0, "{}", summary(&entry));
            assert_eq!(entry.direction, DIRECTION_OUTGOING);
            assert_eq!(entry.tuple.pid, me, "named by the owner walk");
            // A UDP socket keeps no totals.
            assert_eq!(entry.before_start, BeforeStart::default());
            assert_eq!((entry.sent_bytes, entry.recv_bytes), (0, 0));
        }
        let found = the_open(
            &tracer,
            other.netns,
            IPPROTO_TCP,
            other.client,
            other.server,
        );
        assert_ne!(found.flags & FLAG_PREEXISTING, 0);
        assert_eq!(found.direction, DIRECTION_OUTGOING);
        assert_eq!(found.tuple.pid, me);
        assert_eq!(
            found.before_start,
            before(OTHER_BEFORE, 0, &other.client_info)
        );
        let accepted = the_open(
            &tracer,
            other.netns,
            IPPROTO_TCP,
            other.server,
            other.client,
        );
        assert_eq!(accepted.direction, DIRECTION_INCOMING);
        assert_eq!(
            (
                accepted.before_start.sent_bytes,
                accepted.before_start.recv_bytes
            ),
            (0, OTHER_BEFORE as u64)
        );

        // --- After the start: exact sizes on the old connections, a new one accepted by the
        // listener that existed before, then every close. ---
        // SAFETY: our descriptor; one byte from a valid buffer.
        assert_eq!(
            unsafe { libc::write(go_write, [1u8].as_ptr().cast(), 1) },
            1
        );
        client.write_all(&vec![2u8; a2]).expect("write");
        let mut reply = vec![0u8; b2];
        client.read_exact(&mut reply).expect("read");
        let client_after = tcp_info(&client).expect("TCP_INFO");
        let mut client2 = TcpStream::connect(server_addr).expect("connect");
        let client2_addr = client2.local_addr().expect("addr");
        let (mut accepted2, _) = listener.accept().expect("accept");
        client2.write_all(&[3u8; 77]).expect("write");
        accepted2.read_exact(&mut buf[..77]).expect("read");
        half_client.write_all(&[9u8; 50]).expect("write");
        half_server.read_exact(&mut buf[..c2]).expect("read");
        u1.send(&[2u8; 11]).expect("send");
        assert_eq!(u2.recv(&mut buf).expect("recv"), 11);
        u2.send(&[2u8; 22]).expect("send");
        assert_eq!(u1.recv(&mut buf).expect("recv"), 22);
        u3.send_to(&[2u8; 33], peer_addr).expect("send_to");
        assert_eq!(peer.recv_from(&mut buf).expect("recv_from").0, 33);
        peer.send_to(&[2u8; 44], u3_addr).expect("send_to");
        assert_eq!(u3.recv_from(&mut buf).expect("recv_from").0, 44);
        // The unconnected socket's flow starts at its next datagram, by the data path's rules.
        let flow = the_open(&tracer, netns, IPPROTO_UDP, u3_addr, peer_addr);
        assert_eq!(flow.flags & FLAG_PREEXISTING, 0);
        assert_eq!(flow.tuple.pid, me);
        assert_eq!((flow.sent_bytes, flow.recv_bytes), (33, 44));
        other.go.send(()).expect("go");
        other.thread.join().expect("the other namespace's thread");
        drop((client2, accepted2, half_client, half_server, client));
        drop((u1, u2, u3, peer));
        wait_ok(server_pid);
        // SAFETY: our descriptors, not used again.
        unsafe {
            libc::close(go_read);
            libc::close(go_write);
        }

        // TCP: 6 here and 2 there; UDP: 4 flows.
        let closed = closed_in(&tracer, &[netns, other.netns], 12);
        let one = |local, remote| the_one(&closed, local, remote);
        let tcp_flags = FLAG_PREEXISTING | FLAG_CLOSED;
        for (side, local, remote, sent, received, pid, before_start) in [
            (
                "client",
                client_addr,
                server_addr,
                a2,
                b2,
                me,
                before(a1, b1, &client_info),
            ),
            (
                "accepted",
                server_addr,
                client_addr,
                b2,
                a2,
                server_pid as u32,
                before(b1, a1, &server_info),
            ),
            (
                "half-closed client",
                half_client_addr,
                server_addr,
                c2,
                0,
                me,
                before(c1, d1, &half_client_info),
            ),
            (
                "half-closed accepted",
                server_addr,
                half_client_addr,
                0,
                c2,
                me,
                before(d1, c1, &half_server_info),
            ),
        ] {
            let entry = one(local, remote);
            assert_eq!(
                entry.flags & tcp_flags,
                tcp_flags,
                "{side}: {}",
                summary(entry)
            );
            assert_eq!(
                (entry.sent_bytes, entry.recv_bytes),
                (sent as u64, received as u64),
                "{side}"
            );
            assert_eq!(entry.tuple.pid, pid, "{side}");
            assert_eq!(entry.before_start, before_start, "{side}");
        }
        // Segments count from the start too: the client's since the start, plus at most its
        // FIN and the ACKs of the close.
        let outgoing = one(client_addr, server_addr);
        let since_start = u64::from(client_after.segs_out - client_info.segs_out);
        assert!(
            (since_start..=since_start + 3).contains(&outgoing.sent_packets),
            "client segments since the start: {} (TCP_INFO before the close: {since_start})",
            outgoing.sent_packets
        );
        // The connection the old listener accepted after the start is an ordinary one.
        let new_incoming = one(server_addr, client2_addr);
        assert_eq!(new_incoming.flags & FLAG_PREEXISTING, 0);
        assert_eq!(new_incoming.direction, DIRECTION_INCOMING);
        assert_eq!(new_incoming.recv_bytes, 77);
        assert_eq!(new_incoming.before_start, BeforeStart::default());
        assert_eq!(one(client2_addr, server_addr).sent_bytes, 77);
        // UDP: the connected ones from the start; the unconnected one's flow from its datagram.
        let first = one(u1_addr, u2_addr);
        assert_ne!(first.flags & FLAG_PREEXISTING, 0);
        assert_eq!(
            (
                first.sent_bytes,
                first.recv_bytes,
                first.sent_packets,
                first.recv_packets
            ),
            (11, 22, 1, 1)
        );
        assert_eq!(
            (
                one(u2_addr, u1_addr).sent_bytes,
                one(u2_addr, u1_addr).recv_bytes
            ),
            (22, 11)
        );
        assert_eq!(
            (
                one(u3_addr, peer_addr).sent_bytes,
                one(u3_addr, peer_addr).recv_bytes
            ),
            (33, 44)
        );
        assert_eq!(
            (
                one(peer_addr, u3_addr).sent_bytes,
                one(peer_addr, u3_addr).recv_bytes
            ),
            (44, 33)
        );
        // The other namespace.
        let there = one(other.client, other.server);
        assert_eq!(
            (
                there.sent_bytes,
                there.before_start.sent_bytes,
                there.tuple.pid
            ),
            (OTHER_AFTER as u64, OTHER_BEFORE as u64, me)
        );
        let there = one(other.server, other.client);
        assert_eq!(
            (there.recv_bytes, there.before_start.recv_bytes),
            (OTHER_AFTER as u64, OTHER_BEFORE as u64)
        );
        assert_eq!(
            closed.len(),
            12,
            "one close each: {:?}",
            closed.iter().map(|c| summary(&c.stats)).collect::<Vec<_>>()
        );
    });
}
