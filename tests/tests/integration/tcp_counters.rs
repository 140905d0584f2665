//! TCP packets, retransmits and RTT equal what the kernel itself reports: `TCP_INFO` (what
//! `ss -ti` shows) per socket, and the namespace's `TcpRetransSegs`, with loss induced by an
//! nftables rule that drops a share of the packets in the test's namespace.
//!
//! Nothing touches the sockets between the transfers and the comparison: the counters must be
//! those of the moment of the read (the read-time `iter/tcp` refresh), not of the latest call.

use std::{
    collections::HashMap,
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    time::{Duration, Instant},
};

use tracer::{
    KernelVersion,
    kernel::{conn_tracer::ConnTracer, plan::Hook},
};
use tracer_common::conn::ConnStats;
use tracer_integration::{
    kernel_view::{TcpInfo, nft, snmp, ss_tcp_info, tcp_info},
    netns::{current_netns_inode, in_fresh_netns},
    tracer::{collect_closed, core_config, endpoints, load, the_active, the_one},
};

/// Waits (bounded) until neither socket has unacknowledged data and their segment counters have
/// not moved for a while, so the kernel's counters and ours are read at rest.
fn settle(a: &TcpStream, b: &TcpStream) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let snapshot = || {
        let (x, y) = (tcp_info(a).expect("info"), tcp_info(b).expect("info"));
        (
            x.segs_out, x.segs_in, x.unacked, y.segs_out, y.segs_in, y.unacked,
        )
    };
    let mut last = snapshot();
    let mut stable_since = Instant::now();
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        let now = snapshot();
        if now != last {
            last = now;
            stable_since = Instant::now();
        } else if now.2 == 0 && now.5 == 0 && stable_since.elapsed() > Duration::from_millis(600) {
            return;
        }
    }
    panic!("sockets never settled: {last:?}");
}

fn assert_matches_kernel(ours: &ConnStats, kernel: &TcpInfo, side: &str) {
    assert_eq!(
        ours.sent_packets,
        u64::from(kernel.segs_out),
        "{side} segs_out"
    );
    assert_eq!(
        ours.recv_packets,
        u64::from(kernel.segs_in),
        "{side} segs_in"
    );
    assert_eq!(
        ours.retransmits, kernel.total_retrans,
        "{side} total_retrans"
    );
    assert_eq!(ours.rtt_us, kernel.rtt, "{side} rtt");
    assert_eq!(ours.rtt_var_us, kernel.rttvar, "{side} rttvar");
}

/// Lets the pair settle, then (without touching the sockets) compares each side's
/// open-connection record with its `TCP_INFO`. Returns (client, server) `TCP_INFO`.
fn both_sides_match_kernel_at_rest(
    tracer: &ConnTracer,
    client: &TcpStream,
    server: &TcpStream,
    client_addr: SocketAddr,
    server_addr: SocketAddr,
) -> (TcpInfo, TcpInfo) {
    settle(client, server);
    let client_info = tcp_info(client).expect("info");
    let server_info = tcp_info(server).expect("info");
    let client_record = the_active(tracer, client_addr, server_addr);
    assert_matches_kernel(&client_record, &client_info, "client");
    let server_record = the_active(tracer, server_addr, client_addr);
    assert_matches_kernel(&server_record, &server_info, "server");
    (client_info, server_info)
}

/// A connected pair inside the current namespace.
fn pair(ip: &str) -> (TcpStream, TcpStream, SocketAddr, SocketAddr) {
    let listener = TcpListener::bind((ip, 0)).expect("bind");
    let server_addr = listener.local_addr().expect("addr");
    let client = TcpStream::connect(server_addr).expect("connect");
    let client_addr = client.local_addr().expect("addr");
    let (server, _) = listener.accept().expect("accept");
    (client, server, client_addr, server_addr)
}

/// Request/response rounds, then a bulk transfer each way.
fn traffic(client: &mut TcpStream, server: &mut TcpStream, bulk: usize) {
    let mut buf = vec![0u8; bulk.max(100)];
    for _ in 0..20 {
        client.write_all(&[1u8; 100]).expect("write");
        server.read_exact(&mut buf[..100]).expect("read");
        server.write_all(&[2u8; 100]).expect("write");
        client.read_exact(&mut buf[..100]).expect("read");
    }
    let sender = {
        let mut client = client.try_clone().expect("clone");
        std::thread::spawn(move || client.write_all(&vec![3u8; bulk]).expect("bulk"))
    };
    server.read_exact(&mut buf[..bulk]).expect("bulk read");
    sender.join().expect("sender");
}

#[test]
fn tcp_packets_retransmits_and_rtt_equal_tcp_info_at_rest() {
    in_fresh_netns(|| {
        let Some(tracer) = load(core_config()) else {
            return;
        };
        let (mut client, mut server, client_addr, server_addr) = pair("127.0.0.1");
        traffic(&mut client, &mut server, 2 << 20);
        let (client_info, server_info) =
            both_sides_match_kernel_at_rest(&tracer, &client, &server, client_addr, server_addr);
        // A loaded host can make even loopback retransmit (2 segments seen once during a
        // parallel build): whatever the kernel did, both sides add up to the namespace's count.
        assert_eq!(
            u64::from(client_info.total_retrans) + u64::from(server_info.total_retrans),
            snmp("Tcp", "RetransSegs"),
            "retransmits of both sides vs the fresh namespace's TcpRetransSegs"
        );
    });
}

#[test]
fn tcp_retransmits_under_loss_equal_the_namespace_retrans_segs() {
    in_fresh_netns(|| {
        let Some(tracer) = load(core_config()) else {
            return;
        };
        let netns = current_netns_inode().expect("netns") as u32;
        let retrans_before = snmp("Tcp", "RetransSegs");
        let (mut client, mut server, client_addr, server_addr) = pair("127.0.0.1");
        // Drop TCP packets once the connection is up.
        nft(
            "add table inet loss; add chain inet loss out { type filter hook output priority 0; }; add rule inet loss out meta l4proto tcp numgen inc mod 20 < 1 drop",
        );
        // Every 20th TCP packet is dropped. With segmentation offload a burst is few packets, and
        // a dropped pure ACK is not retransmitted: repeat (bounded) until a segment was.
        for _ in 0..10 {
            traffic(&mut client, &mut server, 1 << 20);
            if snmp("Tcp", "RetransSegs") > retrans_before {
                break;
            }
        }
        nft("delete table inet loss");
        both_sides_match_kernel_at_rest(&tracer, &client, &server, client_addr, server_addr);
        let namespace_retrans = snmp("Tcp", "RetransSegs") - retrans_before;
        assert!(
            namespace_retrans > 0,
            "the drop rule caused no retransmit: make it drop more"
        );

        drop(client);
        drop(server);
        let closed = collect_closed(&tracer, netns, |c| c.len() >= 2);
        let client_final = the_one(&closed, client_addr, server_addr);
        let server_final = the_one(&closed, server_addr, client_addr);
        let ours = u64::from(client_final.retransmits) + u64::from(server_final.retransmits);
        assert_eq!(
            ours,
            snmp("Tcp", "RetransSegs") - retrans_before,
            "sum of retransmits vs TcpRetransSegs"
        );
    });
}

/// The read-time refresh is planned wherever the kernel has TCP iterators (5.9+: every test
/// kernel), whatever the backend.
fn assert_tcp_iterator_planned(tracer: &ConnTracer) {
    let kernel = KernelVersion::current().expect("kernel version");
    let planned = tracer.plan().probes.iter().any(|p| p.hook == Hook::IterTcp);
    assert_eq!(
        planned,
        kernel >= KernelVersion::new(5, 9, 0),
        "iter/tcp planned on {kernel}: {}",
        tracer.plan().reason
    );
}

/// How one tracer read compares with the kernel.
struct Comparison {
    /// One line per difference (TCP_INFO or ss).
    wrong: Vec<String>,
    /// Sockets with any difference.
    sockets_wrong: usize,
    /// Sockets whose sent and received packets equal TCP_INFO's.
    packets_equal: usize,
    /// Sockets whose RTT equals TCP_INFO's.
    rtt_equal: usize,
}

/// Mismatches of one tracer read against the kernel's `TCP_INFO` (and `ss -tin` where `ss` is
/// installed), for each socket: `(socket, local, peer)`.
fn mismatches(tracer: &ConnTracer, sockets: &[(&TcpStream, SocketAddr, SocketAddr)]) -> Comparison {
    // One read of the tracer, then the kernel's view: the sockets are idle, nothing moves.
    let open = tracer.connections().expect("read connections");
    let kernel: Vec<TcpInfo> = sockets
        .iter()
        .map(|(s, _, _)| tcp_info(*s).expect("info"))
        .collect();
    let ss = ss_tcp_info();
    let ours: HashMap<(SocketAddr, SocketAddr), ConnStats> = open
        .iter()
        .map(|(_, s)| (endpoints(&s.tuple), *s))
        .collect();
    let mut wrong = Vec::new();
    let (mut packets_equal, mut rtt_equal, mut sockets_wrong) = (0, 0, 0);
    for ((_, local, peer), info) in sockets.iter().zip(&kernel) {
        let before = wrong.len();
        let Some(stats) = ours.get(&(*local, *peer)) else {
            wrong.push(format!("{local} -> {peer}: not tracked"));
            continue;
        };
        let got = (
            stats.sent_packets,
            stats.recv_packets,
            stats.retransmits,
            stats.rtt_us,
            stats.rtt_var_us,
        );
        let want = (
            u64::from(info.segs_out),
            u64::from(info.segs_in),
            info.total_retrans,
            info.rtt,
            info.rttvar,
        );
        if (got.0, got.1) == (want.0, want.1) {
            packets_equal += 1;
        }
        if got.3 == want.3 {
            rtt_equal += 1;
        }
        if got != want {
            wrong.push(format!(
                "{local} -> {peer}: ours (segs_out, segs_in, retrans, rtt, rttvar) {got:?}, TCP_INFO {want:?}"
            ));
        }
        if let Some(ss) = &ss {
            let line = ss.get(&(local.to_string(), peer.to_string()));
            let Some(line) = line else {
                wrong.push(format!("{local} -> {peer}: not in ss -tin"));
                continue;
            };
            let ms = |us: u32| f64::from(us) / 1000.0;
            if (line.segs_out, line.segs_in, line.total_retrans) != (got.0, got.1, got.2)
                || (line.rtt_ms - ms(got.3)).abs() > 0.0005
                || (line.rttvar_ms - ms(got.4)).abs() > 0.0005
            {
                wrong.push(format!("{local} -> {peer}: ours {got:?}, ss -tin {line:?}"));
            }
        }
        if wrong.len() > before {
            sockets_wrong += 1;
        }
    }
    Comparison {
        wrong,
        sockets_wrong,
        packets_equal,
        rtt_equal,
    }
}

#[test]
fn idle_connections_match_tcp_info_and_ss_without_being_touched() {
    in_fresh_netns(|| {
        let Some(tracer) = load(core_config()) else {
            return;
        };
        assert_tcp_iterator_planned(&tracer);
        let mut pairs: Vec<(TcpStream, TcpStream, SocketAddr, SocketAddr)> = Vec::new();
        for i in 0..20 {
            let (mut client, mut server, client_addr, server_addr) = pair("127.0.0.1");
            // Known transfers: request/response rounds, one bulk send of 1 MiB, others smaller.
            let bulk = if i == 0 { 1 << 20 } else { 1000 * (i + 1) };
            traffic(&mut client, &mut server, bulk);
            pairs.push((client, server, client_addr, server_addr));
        }
        // Idle: trailing segments and ACKs land after the applications' last calls.
        std::thread::sleep(Duration::from_secs(2));
        let sockets: Vec<(&TcpStream, SocketAddr, SocketAddr)> = pairs
            .iter()
            .flat_map(|(c, s, ca, sa)| [(c, *ca, *sa), (s, *sa, *ca)])
            .collect();
        let c = mismatches(&tracer, &sockets);
        assert!(
            c.wrong.is_empty(),
            "{} of {} sockets differ from the kernel (packets equal on {}, RTT on {}): {:#?}",
            c.sockets_wrong,
            sockets.len(),
            c.packets_equal,
            c.rtt_equal,
            c.wrong
        );
    });
}

#[test]
fn a_connection_matches_tcp_info_right_after_a_burst() {
    in_fresh_netns(|| {
        let Some(tracer) = load(core_config()) else {
            return;
        };
        assert_tcp_iterator_planned(&tracer);
        let (mut client, mut server, client_addr, server_addr) = pair("127.0.0.1");
        for round in 0..3 {
            traffic(&mut client, &mut server, 256 << 10);
            // Idle right after the burst: as soon as nothing is unacknowledged on either side.
            let deadline = Instant::now() + Duration::from_secs(5);
            while tcp_info(&client).expect("info").unacked != 0
                || tcp_info(&server).expect("info").unacked != 0
            {
                assert!(Instant::now() < deadline, "data never acknowledged");
                std::thread::sleep(Duration::from_millis(1));
            }
            let sockets = [
                (&client, client_addr, server_addr),
                (&server, server_addr, client_addr),
            ];
            let c = mismatches(&tracer, &sockets);
            assert!(c.wrong.is_empty(), "round {round}: {:#?}", c.wrong);
        }
    });
}
