//! Connections that existed before the tracer started are found when it starts (the start-up
//! walk, `iter/tcp` and `iter/udp`, Linux 5.9+), with their owner, direction and namespace; their
//! counters count from the start, and what the kernel had counted by then is in `before_start`,
//! checked against the kernel's own `TCP_INFO` (what `ss -ti` prints) taken while the
//! connection was idle. Each is closed exactly once.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::mpsc,
    time::{Duration, Instant},
};

use tracer::kernel::conn_tracer::{ConnTracer, KernelConfig};
use tracer_common::conn::{
    BeforeStart, ConnStats, DIRECTION_INCOMING, DIRECTION_OUTGOING, FLAG_CLOSED, FLAG_PREEXISTING,
    IPPROTO_TCP, IPPROTO_UDP,
};
use tracer_integration::{
    kernel_view::{TcpInfo, tcp_info},
    netns::{current_netns_inode, in_fresh_netns, loopback_up},
    tracer::{collect_closed, endpoints, load, summary, the_one},
};

/// The descriptor number the forked server moves its accepted socket to, so the parent can
/// borrow it (`pidfd_getfd`) to read its `TCP_INFO`.
const CHILD_SOCKET_FD: i32 = 900;

/// Forks; the child runs `child` (raw syscalls only: it is a fork of a multi-threaded process)
/// and exits with its return code.
fn fork_child(child: impl FnOnce() -> i32) -> libc::pid_t {
    // SAFETY: the child only runs async-signal-safe raw syscalls, then `_exit`s.
    match unsafe { libc::fork() } {
        -1 => panic!("fork: {}", std::io::Error::last_os_error()),
        0 => {
            let code = child();
            // SAFETY: leaves the child without running the parent's destructors or tests.
            unsafe { libc::_exit(code) }
        }
        pid => pid,
    }
}

fn wait_ok(pid: libc::pid_t) {
    let mut status = 0;
    // SAFETY: waiting on our own child.
    let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(rc, pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "child failed: status {status:#x}"
    );
}

fn raw_read_exact(fd: i32, mut n: usize) -> bool {
    let mut buf = [0u8; 512];
    while n > 0 {
        // SAFETY: valid buffer.
        let got = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), n.min(buf.len())) };
        if got <= 0 {
            return false;
        }
        n -= got as usize;
    }
    true
}

fn raw_write_all(fd: i32, mut n: usize) -> bool {
    let buf = [9u8; 512];
    while n > 0 {
        // SAFETY: valid buffer.
        let put = unsafe { libc::write(fd, buf.as_ptr().cast(), n.min(buf.len())) };
        if put <= 0 {
            return false;
        }
        n -= put as usize;
    }
    true
}

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

/// Waits (bounded) until the kernel says every byte `socket` sent is acknowledged, and returns
/// its `TCP_INFO` then: at rest, nothing more moves on the connection until the test sends.
fn settled(socket: &impl AsRawFd, sent: u64) -> TcpInfo {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let info = tcp_info(socket).expect("TCP_INFO");
        if info.bytes_acked == sent && info.unacked == 0 {
            return info;
        }
        assert!(
            Instant::now() < deadline,
            "{sent} bytes sent, still only {} acknowledged ({} segments unacknowledged)",
            info.bytes_acked,
            info.unacked
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// What `before_start` must hold for a TCP connection whose kernel counters were `info` at
/// rest before the start.
fn before(info: &TcpInfo) -> BeforeStart {
    BeforeStart {
        sent_bytes: info.bytes_acked,
        recv_bytes: info.bytes_received,
        sent_packets: info.segs_out,
        recv_packets: info.segs_in,
        retransmits: info.total_retrans,
        _pad: 0,
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

#[test]
fn tcp_connections_open_before_start_are_tracked_from_the_start_with_owner_direction_and_totals() {
    in_fresh_netns(|| {
        let netns = current_netns_inode().expect("netns") as u32;
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let server_addr = listener.local_addr().expect("addr");
        let listen_fd = listener.as_raw_fd();
        // Before the start: the client sends a1 and gets b1; after: a2 and b2.
        let (a1, b1, a2, b2) = (3000usize, 5000usize, 1234usize, 4321usize);
        // The server side is another process, so that its owner is not the test's pid.
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
        let client_info = settled(&client, a1 as u64);
        let server_info = {
            // Borrowed to read the kernel's view, and closed before the start: the owner is
            // the first process found holding the socket.
            let server_side = borrow_fd(server_pid, CHILD_SOCKET_FD);
            settled(&server_side, b1 as u64)
        };
        assert_eq!(client_info.bytes_received, b1 as u64);
        assert_eq!(server_info.bytes_received, a1 as u64);

        let Some(tracer) = load(KernelConfig::default()) else {
            return;
        };
        let stats = tracer.iter_stats();
        assert!(
            stats.seeded_tcp >= 2 && stats.seed_netns_visited >= 1,
            "the start-up walk: {stats:?}"
        );

        // Found at start, counting from zero, with what came before in `before_start`.
        let outgoing = the_open(&tracer, netns, IPPROTO_TCP, client_addr, server_addr);
        let incoming = the_open(&tracer, netns, IPPROTO_TCP, server_addr, client_addr);
        for (side, entry, info, direction, pid) in [
            (
                "client",
                &outgoing,
                &client_info,
                DIRECTION_OUTGOING,
                std::process::id(),
            ),
            (
                "accepted",
                &incoming,
                &server_info,
                DIRECTION_INCOMING,
                server_pid as u32,
            ),
        ] {
            assert_ne!(
                entry.flags & FLAG_PREEXISTING,
                0,
                "{side}: {}",
                summary(entry)
            );
            assert_eq!(entry.direction, direction, "{side}: {}", summary(entry));
            assert_eq!(entry.tuple.pid, pid, "{side}: the owner");
            assert_eq!(entry.before_start, before(info), "{side}: TCP_INFO at rest");
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
        // The listener is no connection.
        let listeners: Vec<String> = tracer
            .connections()
            .expect("read")
            .iter()
            .filter(|(_, s)| s.tuple.netns == netns && s.tuple.dport == 0)
            .map(|(_, s)| summary(s))
            .collect();
        assert!(
            listeners.is_empty(),
            "entries without a peer: {listeners:?}"
        );

        // After the start: exact sizes on the old connection, and a new one accepted by the
        // listener that existed before.
        client.write_all(&vec![2u8; a2]).expect("write");
        let mut reply = vec![0u8; b2];
        client.read_exact(&mut reply).expect("read");
        let client_after = tcp_info(&client).expect("TCP_INFO");
        let mut client2 = TcpStream::connect(server_addr).expect("connect");
        let client2_addr = client2.local_addr().expect("addr");
        let (mut accepted2, _) = listener.accept().expect("accept");
        client2.write_all(&[3u8; 77]).expect("write");
        let mut got = [0u8; 77];
        accepted2.read_exact(&mut got).expect("read");
        drop(client2);
        drop(accepted2);
        drop(client);
        wait_ok(server_pid);

        let closed = collect_closed(&tracer, netns, |c| c.len() >= 4);
        let outgoing = the_one(&closed, client_addr, server_addr);
        let incoming = the_one(&closed, server_addr, client_addr);
        assert_eq!(
            (outgoing.sent_bytes, outgoing.recv_bytes),
            (a2 as u64, b2 as u64)
        );
        assert_eq!(
            (incoming.sent_bytes, incoming.recv_bytes),
            (b2 as u64, a2 as u64)
        );
        for (side, entry, info, direction) in [
            ("client", outgoing, &client_info, DIRECTION_OUTGOING),
            ("accepted", incoming, &server_info, DIRECTION_INCOMING),
        ] {
            assert_eq!(
                entry.flags & (FLAG_PREEXISTING | FLAG_CLOSED),
                FLAG_PREEXISTING | FLAG_CLOSED,
                "{side}: {}",
                summary(entry)
            );
            assert_eq!(entry.direction, direction, "{side}");
            assert_eq!(entry.before_start, before(info), "{side}");
        }
        assert_eq!(outgoing.tuple.pid, std::process::id());
        assert_eq!(incoming.tuple.pid, server_pid as u32);
        // Segments count from the start too: the client's since the start, plus at most its
        // FIN and the ACKs of the close.
        let since_start = u64::from(client_after.segs_out - client_info.segs_out);
        assert!(
            (since_start..=since_start + 3).contains(&outgoing.sent_packets),
            "client segments since the start: {} (TCP_INFO before the close: {since_start})",
            outgoing.sent_packets
        );
        // The connection the old listener accepted after the start is an ordinary one.
        let new_incoming = the_one(&closed, server_addr, client2_addr);
        assert_eq!(new_incoming.flags & FLAG_PREEXISTING, 0);
        assert_eq!(new_incoming.direction, DIRECTION_INCOMING);
        assert_eq!(new_incoming.recv_bytes, 77);
        assert_eq!(new_incoming.before_start, BeforeStart::default());
        assert_eq!(the_one(&closed, client2_addr, server_addr).sent_bytes, 77);
    });
}

#[test]
fn udp_sockets_open_before_start_connected_ones_at_start_unconnected_ones_at_their_next_datagram() {
    in_fresh_netns(|| {
        let netns = current_netns_inode().expect("netns") as u32;
        let bind = || UdpSocket::bind("127.0.0.1:0").expect("bind");
        let (u1, u2) = (bind(), bind());
        let (u1_addr, u2_addr) = (u1.local_addr().unwrap(), u2.local_addr().unwrap());
        u1.connect(u2_addr).expect("connect");
        u2.connect(u1_addr).expect("connect");
        let mut buf = [0u8; 512];
        u1.send(&[1u8; 100]).expect("send");
        assert_eq!(u2.recv(&mut buf).expect("recv"), 100);
        u2.send(&[1u8; 200]).expect("send");
        assert_eq!(u1.recv(&mut buf).expect("recv"), 200);
        // An unconnected socket that already exchanged datagrams with a peer.
        let (u3, peer) = (bind(), bind());
        let (u3_addr, peer_addr) = (u3.local_addr().unwrap(), peer.local_addr().unwrap());
        u3.send_to(&[1u8; 30], peer_addr).expect("send_to");
        assert_eq!(peer.recv_from(&mut buf).expect("recv_from").0, 30);
        peer.send_to(&[1u8; 40], u3_addr).expect("send_to");
        assert_eq!(u3.recv_from(&mut buf).expect("recv_from").0, 40);

        let Some(tracer) = load(KernelConfig::default()) else {
            return;
        };
        assert!(
            tracer.iter_stats().seeded_udp >= 2,
            "{:?}",
            tracer.iter_stats()
        );
        for (local, remote) in [(u1_addr, u2_addr), (u2_addr, u1_addr)] {
            let entry = the_open(&tracer, netns, IPPROTO_UDP, local, remote);
            assert_ne!(entry.flags & FLAG_PREEXISTING, 0, "{}", summary(&entry));
            assert_eq!(entry.direction, DIRECTION_OUTGOING);
            assert_eq!(
                entry.tuple.pid,
                std::process::id(),
                "named by the owner walk"
            );
            // A UDP socket keeps no totals.
            assert_eq!(entry.before_start, BeforeStart::default());
            assert_eq!((entry.sent_bytes, entry.recv_bytes), (0, 0));
        }
        // The kernel keeps no peers for an unconnected socket: nothing to find at start.
        assert!(open_entries(&tracer, netns, IPPROTO_UDP, u3_addr, peer_addr).is_empty());

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
        assert_eq!(flow.tuple.pid, std::process::id());
        assert_eq!((flow.sent_bytes, flow.recv_bytes), (33, 44));
        drop((u1, u2, u3, peer));

        let closed = collect_closed(&tracer, netns, |c| c.len() >= 4);
        let first = the_one(&closed, u1_addr, u2_addr);
        assert_eq!(
            (
                first.sent_bytes,
                first.recv_bytes,
                first.sent_packets,
                first.recv_packets
            ),
            (11, 22, 1, 1)
        );
        assert_ne!(first.flags & FLAG_PREEXISTING, 0);
        let second = the_one(&closed, u2_addr, u1_addr);
        assert_eq!((second.sent_bytes, second.recv_bytes), (22, 11));
        let flow = the_one(&closed, u3_addr, peer_addr);
        assert_eq!((flow.sent_bytes, flow.recv_bytes), (33, 44));
    });
}

#[test]
fn a_connection_open_before_start_in_another_network_namespace_is_found() {
    in_fresh_netns(|| {
        let (ready_tx, ready_rx) = mpsc::channel();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        // A thread in a namespace of its own (`setns` and `unshare` move one thread), holding
        // a connection opened there before the start.
        let other = std::thread::spawn(move || {
            // SAFETY: plain syscall; it only affects this thread's namespaces.
            assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0);
            loopback_up().expect("lo up");
            let netns = current_netns_inode().expect("netns") as u32;
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
            let server_addr = listener.local_addr().expect("addr");
            let mut client = TcpStream::connect(server_addr).expect("connect");
            let (mut server, _) = listener.accept().expect("accept");
            client.write_all(&[5u8; 500]).expect("write");
            let mut buf = [0u8; 500];
            server.read_exact(&mut buf).expect("read");
            let info = settled(&client, 500);
            ready_tx
                .send((netns, client.local_addr().unwrap(), server_addr, info))
                .unwrap();
            go_rx.recv().expect("go");
            client.write_all(&[6u8; 300]).expect("write");
            server.read_exact(&mut buf[..300]).expect("read");
            drop(client);
            let mut eof = [0u8; 1];
            assert_eq!(server.read(&mut eof).expect("read"), 0);
        });
        let (other_netns, client_addr, server_addr, info) = ready_rx.recv().expect("ready");
        assert_ne!(
            u64::from(other_netns),
            current_netns_inode().expect("netns")
        );

        let Some(tracer) = load(KernelConfig::default()) else {
            return;
        };
        let found = the_open(&tracer, other_netns, IPPROTO_TCP, client_addr, server_addr);
        assert_ne!(found.flags & FLAG_PREEXISTING, 0);
        assert_eq!(found.direction, DIRECTION_OUTGOING);
        assert_eq!(found.before_start, before(&info));
        let accepted = the_open(&tracer, other_netns, IPPROTO_TCP, server_addr, client_addr);
        assert_eq!(accepted.direction, DIRECTION_INCOMING);
        assert_eq!(accepted.before_start.recv_bytes, 500);

        go_tx.send(()).unwrap();
        other.join().expect("the other namespace's thread");
        let closed = collect_closed(&tracer, other_netns, |c| c.len() >= 2);
        let client = the_one(&closed, client_addr, server_addr);
        assert_eq!(
            (client.sent_bytes, client.before_start.sent_bytes),
            (300, 500)
        );
        assert_eq!(client.tuple.pid, std::process::id());
        let server = the_one(&closed, server_addr, client_addr);
        assert_eq!(
            (server.recv_bytes, server.before_start.recv_bytes),
            (300, 500)
        );
    });
}
