//! UDP flows, exactly: an unconnected socket has one flow per peer, a connected socket one flow;
//! each flow's bytes and datagrams equal what the test sent and received, and each flow is
//! emitted once when its socket closes. Also the bounded peer list (overflow counted exactly),
//! every send/receive syscall shape (`sendto`/`recvfrom`, `sendmsg`/`recvmsg`,
//! `sendmmsg`/`recvmmsg`), and the documented gaps (receives without an address, wildcard
//! local addresses) with their counters. Backend-neutral: the same expectations hold on every
//! backend.

use std::{
    net::{IpAddr, SocketAddr, UdpSocket},
    os::fd::AsRawFd,
};

use tracer::kernel::{
    conn_tracer::ConnTracer,
    counters::{Counter, KernelCounters},
};
use tracer_common::conn::{
    ClosedConn, ConnStats, DIRECTION_INCOMING, DIRECTION_OUTGOING, FLAG_CLOSED, IPPROTO_UDP,
    MAX_UDP_PEERS,
};
use tracer_integration::{
    netns::{current_netns_inode, in_fresh_netns},
    tracer::{collect_closed, core_config, endpoints, load, the_one},
};

/// What one flow must report, from the test's side.
#[derive(Clone, Copy, Debug, Default)]
struct Expected {
    sent_bytes: u64,
    sent_datagrams: u64,
    recv_bytes: u64,
    recv_datagrams: u64,
    direction: u8,
}

impl Expected {
    fn sent(&mut self, bytes: usize) {
        if self.sent_datagrams == 0 && self.recv_datagrams == 0 {
            self.direction = DIRECTION_OUTGOING;
        }
        self.sent_bytes += bytes as u64;
        self.sent_datagrams += 1;
    }

    fn received(&mut self, bytes: usize) {
        if self.sent_datagrams == 0 && self.recv_datagrams == 0 {
            self.direction = DIRECTION_INCOMING;
        }
        self.recv_bytes += bytes as u64;
        self.recv_datagrams += 1;
    }
}

/// Asserts every field the test controls.
fn check(flow: &ConnStats, expected: Expected, netns: u32, what: &str) {
    assert_eq!(flow.sent_bytes, expected.sent_bytes, "{what}: sent bytes");
    assert_eq!(
        flow.sent_packets, expected.sent_datagrams,
        "{what}: sent datagrams"
    );
    assert_eq!(
        flow.recv_bytes, expected.recv_bytes,
        "{what}: received bytes"
    );
    assert_eq!(
        flow.recv_packets, expected.recv_datagrams,
        "{what}: received datagrams"
    );
    assert_eq!(flow.direction, expected.direction, "{what}: direction");
    assert_eq!(flow.tuple.pid, std::process::id(), "{what}: pid");
    assert_eq!(flow.tuple.netns, netns, "{what}: netns");
    assert_eq!(flow.tuple.protocol, IPPROTO_UDP, "{what}: protocol");
    assert_eq!(flow.flags, FLAG_CLOSED, "{what}: flags");
    assert_eq!(flow.retransmits, 0, "{what}: retransmits");
    assert_eq!(flow.failure, 0, "{what}: failure");
}

fn bind(ip: IpAddr) -> UdpSocket {
    UdpSocket::bind((ip, 0)).expect("bind")
}

fn addr(socket: &UdpSocket) -> SocketAddr {
    socket.local_addr().expect("local addr")
}

/// Receives one datagram with `recvfrom`, checking its source and size.
fn recv_from(socket: &UdpSocket, from: SocketAddr, len: usize) {
    let mut buf = vec![0u8; 65_536];
    let (n, source) = socket.recv_from(&mut buf).expect("recv_from");
    assert_eq!((n, source), (len, from), "datagram received");
}

fn counters(tracer: &ConnTracer) -> KernelCounters {
    tracer.counters().expect("counters")
}

fn delta(before: &KernelCounters, after: &KernelCounters, counter: Counter) -> u64 {
    after.get(counter) - before.get(counter)
}

/// Waits for exactly `n` closed flows of this namespace and checks that there are no more.
fn closed_flows(tracer: &mut ConnTracer, netns: u32, n: usize) -> Vec<ClosedConn> {
    let closed = collect_closed(tracer, netns, |c| c.len() >= n);
    // Anything emitted twice or unexpectedly would arrive with the rest: look once more.
    std::thread::sleep(std::time::Duration::from_millis(50));
    let mut more = Vec::new();
    tracer.drain_closed(&mut more);
    let more: Vec<_> = more
        .iter()
        .filter(|c| c.stats.tuple.netns == netns)
        .collect();
    assert_eq!(
        closed.len(),
        n,
        "closed flows in this namespace: {closed:#?}"
    );
    assert!(
        more.is_empty(),
        "flows emitted after the expected ones: {more:#?}"
    );
    closed
}

/// One unconnected socket `sendto`s different amounts to three peers (unconnected too), each
/// peer answers with its own amounts, and the socket `recvfrom`s every answer.
fn unconnected_three_peers(ip: &'static str) {
    in_fresh_netns(move || {
        let Some(mut tracer) = load(core_config()) else {
            return;
        };
        let netns = current_netns_inode().expect("netns") as u32;
        let ip: IpAddr = ip.parse().expect("ip");
        let before = counters(&tracer);
        let client = bind(ip);
        let peers: Vec<UdpSocket> = (0..3).map(|_| bind(ip)).collect();
        let client_addr = addr(&client);
        let mut client_side = [Expected::default(); 3];
        let mut peer_side = [Expected::default(); 3];
        for (i, peer) in peers.iter().enumerate() {
            let peer_addr = addr(peer);
            // Peer i gets i + 1 datagrams of 100 * (i + 1) + j bytes and answers with i + 2
            // datagrams of 7 * (i + 1) + j bytes.
            for j in 0..=i {
                let len = 100 * (i + 1) + j;
                client.send_to(&vec![1u8; len], peer_addr).expect("send_to");
                client_side[i].sent(len);
                recv_from(peer, client_addr, len);
                peer_side[i].received(len);
            }
            for j in 0..i + 2 {
                let len = 7 * (i + 1) + j;
                peer.send_to(&vec![2u8; len], client_addr).expect("reply");
                peer_side[i].sent(len);
                recv_from(&client, peer_addr, len);
                client_side[i].received(len);
            }
        }
        let peer_addrs: Vec<SocketAddr> = peers.iter().map(addr).collect();
        drop(client);
        drop(peers);

        let closed = closed_flows(&mut tracer, netns, 6);
        for (i, peer_addr) in peer_addrs.iter().enumerate() {
            let flow = the_one(&closed, client_addr, *peer_addr);
            check(flow, client_side[i], netns, &format!("client -> peer {i}"));
            let flow = the_one(&closed, *peer_addr, client_addr);
            check(flow, peer_side[i], netns, &format!("peer {i} -> client"));
        }
        // Keys: every flow of an unconnected socket is keyed by that socket and its peer, so the
        // client's three flows share one socket address and differ by peer.
        let client_flows: Vec<&ClosedConn> = closed
            .iter()
            .filter(|c| endpoints(&c.stats.tuple).0 == client_addr)
            .collect();
        assert_eq!(client_flows.len(), 3);
        for flow in &client_flows {
            assert_ne!(flow.key.sk, 0);
            assert_eq!(flow.key.sk, client_flows[0].key.sk, "one socket");
            assert_eq!(
                (flow.key.peer_family, flow.key.peer_port),
                (flow.stats.tuple.family, flow.stats.tuple.dport),
                "the key's peer is the flow's remote end"
            );
            assert_eq!(flow.key.peer_addr, flow.stats.tuple.daddr);
        }
        let after = counters(&tracer);
        for counter in [
            Counter::UdpMissingPeer,
            Counter::UdpPeersOverflow,
            Counter::UdpPeersMapFull,
            Counter::UdpWildcardLocal,
            Counter::RingBufFull,
            Counter::ConnMapFull,
        ] {
            assert_eq!(delta(&before, &after, counter), 0, "{}", counter.name());
        }
    });
}

#[test]
fn udp_v4_unconnected_socket_has_one_exact_flow_per_peer() {
    unconnected_three_peers("127.0.0.1");
}

#[test]
fn udp_v6_unconnected_socket_has_one_exact_flow_per_peer() {
    unconnected_three_peers("::1");
}

/// A connected pair: `a` sends first (three datagrams), `b` answers with two.
fn connected_pair(ip: &'static str) {
    in_fresh_netns(move || {
        let Some(mut tracer) = load(core_config()) else {
            return;
        };
        let netns = current_netns_inode().expect("netns") as u32;
        let ip: IpAddr = ip.parse().expect("ip");
        let (a, b) = (bind(ip), bind(ip));
        let (a_addr, b_addr) = (addr(&a), addr(&b));
        a.connect(b_addr).expect("connect a");
        b.connect(a_addr).expect("connect b");
        let (mut a_side, mut b_side) = (Expected::default(), Expected::default());
        let mut buf = vec![0u8; 65_536];
        for len in [1usize, 1000, 1472] {
            assert_eq!(a.send(&vec![3u8; len]).expect("send"), len);
            a_side.sent(len);
            assert_eq!(b.recv(&mut buf).expect("recv"), len);
            b_side.received(len);
        }
        for len in [33usize, 9000] {
            assert_eq!(b.send(&vec![4u8; len]).expect("send"), len);
            b_side.sent(len);
            assert_eq!(a.recv(&mut buf).expect("recv"), len);
            a_side.received(len);
        }
        drop(a);
        drop(b);

        let closed = closed_flows(&mut tracer, netns, 2);
        check(the_one(&closed, a_addr, b_addr), a_side, netns, "a -> b");
        check(the_one(&closed, b_addr, a_addr), b_side, netns, "b -> a");
        for record in &closed {
            assert_eq!(
                record.key.peer_family, 0,
                "a connected flow is keyed by its socket"
            );
        }
    });
}

#[test]
fn udp_v4_connected_pair_is_one_exact_flow_per_socket() {
    connected_pair("127.0.0.1");
}

#[test]
fn udp_v6_connected_pair_is_one_exact_flow_per_socket() {
    connected_pair("::1");
}

/// A socket that talks to more peers than its peer list holds: the listed flows close with it,
/// exactly; the others are counted and stay open for userspace expiry.
#[test]
fn udp_peers_beyond_the_list_are_counted_exactly_and_the_listed_ones_close_exactly() {
    in_fresh_netns(|| {
        let Some(mut tracer) = load(core_config()) else {
            return;
        };
        let netns = current_netns_inode().expect("netns") as u32;
        let ip: IpAddr = "127.0.0.1".parse().expect("ip");
        let extra = 5usize;
        let n = MAX_UDP_PEERS as usize + extra;
        let before = counters(&tracer);
        let client = bind(ip);
        let client_addr = addr(&client);
        // The peers never read: their sockets have no flows of their own.
        let peers: Vec<UdpSocket> = (0..n).map(|_| bind(ip)).collect();
        let peer_addrs: Vec<SocketAddr> = peers.iter().map(addr).collect();
        for (i, peer) in peer_addrs.iter().enumerate() {
            client.send_to(&vec![5u8; i + 1], *peer).expect("send_to");
        }
        drop(client);

        let listed = MAX_UDP_PEERS as usize;
        let closed = closed_flows(&mut tracer, netns, listed);
        // Slots are taken in the order the flows were created: the first peers are listed.
        for (i, peer) in peer_addrs.iter().enumerate().take(listed) {
            let mut expected = Expected::default();
            expected.sent(i + 1);
            check(
                the_one(&closed, client_addr, *peer),
                expected,
                netns,
                &format!("peer {i}"),
            );
        }
        let after = counters(&tracer);
        assert_eq!(
            delta(&before, &after, Counter::UdpPeersOverflow),
            extra as u64,
            "udp_peers_overflow"
        );
        assert_eq!(delta(&before, &after, Counter::UdpPeersMapFull), 0);
        // The unlisted flows are still open (userspace expiry closes them), with exact counts.
        let open: Vec<_> = tracer
            .connections()
            .expect("connections")
            .into_iter()
            .filter(|(_, s)| s.tuple.netns == netns)
            .collect();
        assert_eq!(open.len(), extra, "unlisted flows left open: {open:#?}");
        for (i, peer) in peer_addrs.iter().enumerate().skip(listed) {
            let flow = open
                .iter()
                .find(|(_, s)| endpoints(&s.tuple) == (client_addr, *peer))
                .unwrap_or_else(|| panic!("peer {i} left open: {open:#?}"));
            assert_eq!(
                (flow.1.sent_bytes, flow.1.sent_packets),
                ((i + 1) as u64, 1)
            );
        }
        drop(peers);
    });
}

fn sockaddr(address: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: an all-zero sockaddr_storage is valid.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match address {
        SocketAddr::V4(v4) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(v4.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is large enough and suitably aligned for sockaddr_in.
            unsafe { std::ptr::write((&raw mut storage).cast(), sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(v6) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: v6.port().to_be(),
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: v6.ip().octets(),
                },
                sin6_scope_id: 0,
            };
            // SAFETY: as above, for sockaddr_in6.
            unsafe { std::ptr::write((&raw mut storage).cast(), sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

fn from_sockaddr(storage: &libc::sockaddr_storage) -> SocketAddr {
    match i32::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says this is a sockaddr_in.
            let sin: libc::sockaddr_in = unsafe { std::ptr::read((&raw const *storage).cast()) };
            SocketAddr::from((
                sin.sin_addr.s_addr.to_ne_bytes(),
                u16::from_be(sin.sin_port),
            ))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says this is a sockaddr_in6.
            let sin6: libc::sockaddr_in6 = unsafe { std::ptr::read((&raw const *storage).cast()) };
            SocketAddr::from((sin6.sin6_addr.s6_addr, u16::from_be(sin6.sin6_port)))
        }
        family => panic!("unexpected family {family}"),
    }
}

/// `sendmsg` of one datagram of `len` bytes to `to`.
fn sendmsg(socket: &UdpSocket, to: SocketAddr, len: usize) {
    let (mut name, name_len) = sockaddr(to);
    let mut payload = vec![6u8; len];
    let mut iov = libc::iovec {
        iov_base: payload.as_mut_ptr().cast(),
        iov_len: len,
    };
    // SAFETY: an all-zero msghdr is valid; the pointers set below outlive the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&raw mut name).cast();
    msg.msg_namelen = name_len;
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    // SAFETY: valid descriptor and message.
    let sent = unsafe { libc::sendmsg(socket.as_raw_fd(), &msg, 0) };
    assert_eq!(sent, len as isize, "sendmsg");
}

/// `recvmsg` of one datagram, checking its source and size.
fn recvmsg(socket: &UdpSocket, from: SocketAddr, len: usize) {
    // SAFETY: an all-zero sockaddr_storage / msghdr is valid.
    let mut name: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut buf = vec![0u8; 65_536];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: as above.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&raw mut name).cast();
    msg.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    // SAFETY: valid descriptor and message.
    let n = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut msg, 0) };
    assert_eq!((n, from_sockaddr(&name)), (len as isize, from), "recvmsg");
}

/// `sendmmsg` of one datagram per `(destination, len)`, in one call.
fn sendmmsg(socket: &UdpSocket, datagrams: &[(SocketAddr, usize)]) {
    let mut names: Vec<_> = datagrams.iter().map(|(to, _)| sockaddr(*to)).collect();
    let mut payloads: Vec<Vec<u8>> = datagrams.iter().map(|(_, len)| vec![8u8; *len]).collect();
    let mut iovs: Vec<libc::iovec> = payloads
        .iter_mut()
        .map(|p| libc::iovec {
            iov_base: p.as_mut_ptr().cast(),
            iov_len: p.len(),
        })
        .collect();
    let mut messages: Vec<libc::mmsghdr> = names
        .iter_mut()
        .zip(iovs.iter_mut())
        .map(|((name, name_len), iov)| {
            // SAFETY: an all-zero mmsghdr is valid.
            let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
            m.msg_hdr.msg_name = (name as *mut libc::sockaddr_storage).cast();
            m.msg_hdr.msg_namelen = *name_len;
            m.msg_hdr.msg_iov = iov;
            m.msg_hdr.msg_iovlen = 1;
            m
        })
        .collect();
    // SAFETY: valid descriptor; every pointer in `messages` outlives the call.
    let sent = unsafe {
        libc::sendmmsg(
            socket.as_raw_fd(),
            messages.as_mut_ptr(),
            messages.len() as u32,
            0,
        )
    };
    assert_eq!(sent, datagrams.len() as i32, "sendmmsg");
    for (m, (_, len)) in messages.iter().zip(datagrams) {
        assert_eq!(m.msg_len as usize, *len);
    }
}

/// `recvmmsg` of exactly `expected.len()` datagrams in one blocking call, checking each one's
/// source and size in order.
fn recvmmsg(socket: &UdpSocket, expected: &[(SocketAddr, usize)]) {
    // SAFETY: all-zero sockaddr_storage / mmsghdr values are valid.
    let mut names: Vec<libc::sockaddr_storage> = expected
        .iter()
        .map(|_| unsafe { std::mem::zeroed() })
        .collect();
    let mut buffers: Vec<Vec<u8>> = expected.iter().map(|_| vec![0u8; 65_536]).collect();
    let mut iovs: Vec<libc::iovec> = buffers
        .iter_mut()
        .map(|b| libc::iovec {
            iov_base: b.as_mut_ptr().cast(),
            iov_len: b.len(),
        })
        .collect();
    let mut messages: Vec<libc::mmsghdr> = names
        .iter_mut()
        .zip(iovs.iter_mut())
        .map(|(name, iov)| {
            // SAFETY: as above.
            let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
            m.msg_hdr.msg_name = (name as *mut libc::sockaddr_storage).cast();
            m.msg_hdr.msg_namelen =
                std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            m.msg_hdr.msg_iov = iov;
            m.msg_hdr.msg_iovlen = 1;
            m
        })
        .collect();
    // SAFETY: valid descriptor; every pointer in `messages` outlives the call. Blocking socket,
    // no timeout: returns once every entry holds a datagram.
    let n = unsafe {
        libc::recvmmsg(
            socket.as_raw_fd(),
            messages.as_mut_ptr(),
            messages.len() as u32,
            0,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(n, expected.len() as i32, "recvmmsg");
    let got: Vec<(SocketAddr, usize)> = messages
        .iter()
        .zip(&names)
        .map(|(m, name)| (from_sockaddr(name), m.msg_len as usize))
        .collect();
    assert_eq!(got, expected, "recvmmsg datagrams");
}

/// Every send/receive syscall shape on unconnected sockets: the client `sendmsg`s to peer A and
/// `sendmmsg`s to A and B interleaved; A `recvmsg`s, B `recvmmsg`s; A answers with `sendto`, B
/// with `sendmsg`, and the client `recvmmsg`s both answers in one call.
fn every_syscall_shape(ip: &'static str) {
    in_fresh_netns(move || {
        let Some(mut tracer) = load(core_config()) else {
            return;
        };
        let netns = current_netns_inode().expect("netns") as u32;
        let ip: IpAddr = ip.parse().expect("ip");
        let before = counters(&tracer);
        let (client, a, b) = (bind(ip), bind(ip), bind(ip));
        let (client_addr, a_addr, b_addr) = (addr(&client), addr(&a), addr(&b));
        let (mut to_a, mut to_b) = (Expected::default(), Expected::default());
        let (mut a_side, mut b_side) = (Expected::default(), Expected::default());

        sendmsg(&client, a_addr, 11);
        to_a.sent(11);
        recvmsg(&a, client_addr, 11);
        a_side.received(11);

        let batch = [(a_addr, 21), (b_addr, 22), (a_addr, 23), (b_addr, 24)];
        sendmmsg(&client, &batch);
        for (to, len) in batch {
            if to == a_addr {
                to_a.sent(len);
            } else {
                to_b.sent(len);
            }
        }
        recvmsg(&a, client_addr, 21);
        recvmsg(&a, client_addr, 23);
        a_side.received(21);
        a_side.received(23);
        recvmmsg(&b, &[(client_addr, 22), (client_addr, 24)]);
        b_side.received(22);
        b_side.received(24);

        a.send_to(&[9u8; 31], client_addr).expect("send_to");
        a_side.sent(31);
        sendmsg(&b, client_addr, 32);
        b_side.sent(32);
        recvmmsg(&client, &[(a_addr, 31), (b_addr, 32)]);
        to_a.received(31);
        to_b.received(32);
        drop((client, a, b));

        let closed = closed_flows(&mut tracer, netns, 4);
        check(
            the_one(&closed, client_addr, a_addr),
            to_a,
            netns,
            "client -> a",
        );
        check(
            the_one(&closed, client_addr, b_addr),
            to_b,
            netns,
            "client -> b",
        );
        check(
            the_one(&closed, a_addr, client_addr),
            a_side,
            netns,
            "a -> client",
        );
        check(
            the_one(&closed, b_addr, client_addr),
            b_side,
            netns,
            "b -> client",
        );
        let after = counters(&tracer);
        assert_eq!(delta(&before, &after, Counter::UdpMissingPeer), 0);
    });
}

#[test]
fn udp_v4_every_send_and_receive_syscall_is_counted_per_peer() {
    every_syscall_shape("127.0.0.1");
}

#[test]
fn udp_v6_every_send_and_receive_syscall_is_counted_per_peer() {
    every_syscall_shape("::1");
}

/// The documented gaps, each with its counter: a receive without an address buffer on an
/// unconnected socket cannot name the peer (`udp_missing_peer`, the datagram is not in any
/// flow), and a socket bound to the wildcard address reports it as its local address
/// (`udp_wildcard_local`, once per flow).
#[test]
fn udp_gaps_are_counted_exactly() {
    in_fresh_netns(|| {
        let Some(mut tracer) = load(core_config()) else {
            return;
        };
        let netns = current_netns_inode().expect("netns") as u32;
        let before = counters(&tracer);
        let wildcard = UdpSocket::bind("0.0.0.0:0").expect("bind wildcard");
        let port = addr(&wildcard).port();
        let peer = bind("127.0.0.1".parse().expect("ip"));
        let peer_addr = addr(&peer);
        let to_wildcard: SocketAddr = (IpAddr::from([127, 0, 0, 1]), port).into();

        // Three datagrams read with recv(): no address, no flow, three missing peers.
        let mut buf = [0u8; 64];
        for len in [5usize, 6, 7] {
            peer.send_to(&vec![1u8; len], to_wildcard).expect("send_to");
            assert_eq!(wildcard.recv(&mut buf).expect("recv"), len);
        }
        // One datagram read with recvfrom: a flow with the wildcard local address.
        peer.send_to(&[2u8; 9], to_wildcard).expect("send_to");
        let (n, from) = wildcard.recv_from(&mut buf).expect("recv_from");
        assert_eq!((n, from), (9, peer_addr));
        drop(wildcard);
        drop(peer);

        // The wildcard socket's one flow, and the peer's flow to the wildcard socket.
        let closed = closed_flows(&mut tracer, netns, 2);
        let local: SocketAddr = (IpAddr::from([0, 0, 0, 0]), port).into();
        let mut expected = Expected::default();
        expected.received(9);
        check(
            the_one(&closed, local, peer_addr),
            expected,
            netns,
            "wildcard <- peer",
        );
        let mut expected = Expected::default();
        for len in [5, 6, 7, 9] {
            expected.sent(len);
        }
        check(
            the_one(&closed, peer_addr, to_wildcard),
            expected,
            netns,
            "peer -> wildcard",
        );
        let after = counters(&tracer);
        assert_eq!(
            delta(&before, &after, Counter::UdpMissingPeer),
            3,
            "udp_missing_peer"
        );
        assert_eq!(
            delta(&before, &after, Counter::UdpWildcardLocal),
            1,
            "udp_wildcard_local"
        );
    });
}

/// An IPv6 socket bound to an IPv4-mapped address talks IPv4: its flow is reported as an IPv4
/// flow (local and remote folded), like the IPv4 peer's own flow.
#[test]
fn udp_dual_stack_socket_talking_ipv4_reports_an_ipv4_flow() {
    in_fresh_netns(|| {
        let Some(mut tracer) = load(core_config()) else {
            return;
        };
        let netns = current_netns_inode().expect("netns") as u32;
        let client = UdpSocket::bind("[::ffff:127.0.0.1]:0").expect("bind v4-mapped");
        let peer = bind("127.0.0.1".parse().expect("ip"));
        let client_v4: SocketAddr = (IpAddr::from([127, 0, 0, 1]), addr(&client).port()).into();
        let peer_v4 = addr(&peer);
        let peer_mapped: SocketAddr = format!("[::ffff:127.0.0.1]:{}", peer_v4.port())
            .parse()
            .expect("mapped");
        let (mut client_side, mut peer_side) = (Expected::default(), Expected::default());
        client.send_to(&[1u8; 40], peer_mapped).expect("send_to");
        client_side.sent(40);
        recv_from(&peer, client_v4, 40);
        peer_side.received(40);
        peer.send_to(&[2u8; 50], client_v4).expect("reply");
        peer_side.sent(50);
        recv_from(&client, peer_mapped, 50);
        client_side.received(50);
        drop((client, peer));

        let closed = closed_flows(&mut tracer, netns, 2);
        check(
            the_one(&closed, client_v4, peer_v4),
            client_side,
            netns,
            "dual-stack client",
        );
        check(
            the_one(&closed, peer_v4, client_v4),
            peer_side,
            netns,
            "IPv4 peer",
        );
    });
}
