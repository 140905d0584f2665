//! TCP packets, retransmits and RTT equal what the kernel itself reports: `TCP_INFO` (what
//! `ss -ti` shows) per socket, and the namespace's `TcpRetransSegs`, with loss induced by an
//! nftables rule that drops a share of the packets in the test's namespace.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    time::{Duration, Instant},
};

use tracer::kernel::conn_tracer::{ConnTracer, KernelConfig};
use tracer_common::conn::ConnStats;
use tracer_integration::{
    kernel_view::{TcpInfo, nft, poke, snmp, tcp_info},
    netns::{current_netns_inode, in_fresh_netns},
    tracer::{collect_closed, load, the_active, the_one},
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

/// Lets the pair settle, makes every backend look at both sockets once more, then compares each
/// side's open-connection record with its `TCP_INFO`. Returns (client, server) `TCP_INFO`.
fn both_sides_match_kernel_at_rest(
    tracer: &ConnTracer,
    client: &TcpStream,
    server: &TcpStream,
    client_addr: SocketAddr,
    server_addr: SocketAddr,
) -> (TcpInfo, TcpInfo) {
    settle(client, server);
    poke(client);
    poke(server);
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
        let Some(tracer) = load(KernelConfig::default()) else {
            return;
        };
        let (mut client, mut server, client_addr, server_addr) = pair("127.0.0.1");
        traffic(&mut client, &mut server, 2 << 20);
        let (client_info, _) =
            both_sides_match_kernel_at_rest(&tracer, &client, &server, client_addr, server_addr);
        assert_eq!(client_info.total_retrans, 0, "no loss on a clean loopback");
    });
}

#[test]
fn tcp_retransmits_under_loss_equal_the_namespace_retrans_segs() {
    in_fresh_netns(|| {
        let Some(tracer) = load(KernelConfig::default()) else {
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
