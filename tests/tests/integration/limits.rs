//! Limits are exact: a tiny ring buffer loses exactly the closes it had no room for (and says
//! so), and a small connection map counts exactly the connections that did not fit.

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
};

use tracer::kernel::{conn_tracer::KernelConfig, counters::Counter};
use tracer_integration::{
    netns::{current_netns_inode, in_fresh_netns},
    tracer::{core_config, endpoints, load},
};

/// `n` connected pairs, the client of pair `i` having sent `i + 1` bytes.
fn pairs(n: usize) -> Vec<(TcpStream, TcpStream)> {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    (0..n)
        .map(|i| {
            let mut client = TcpStream::connect(addr).expect("connect");
            let (mut server, _) = listener.accept().expect("accept");
            client.write_all(&vec![1u8; i + 1]).expect("write");
            let mut buf = vec![0u8; i + 1];
            server.read_exact(&mut buf).expect("read");
            (client, server)
        })
        .collect()
}

#[test]
fn a_tiny_ring_buffer_loses_exactly_the_closes_it_has_no_room_for() {
    in_fresh_netns(|| {
        let page = 4096;
        let Some(tracer) = load(KernelConfig {
            ring_buffer_bytes: page,
            ..core_config()
        }) else {
            return;
        };
        let netns = current_netns_inode().expect("netns") as u32;
        let n = 60;
        let before = tracer.counters().expect("counters");
        drop(pairs(n));
        // Nobody drains during the burst: 2n closes into a ring that holds about 25 records.
        let mut received = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            tracer.drain_closed(&mut received);
            let after = tracer.counters().expect("counters");
            let lost = after.get(Counter::RingBufFull) - before.get(Counter::RingBufFull);
            let emitted = after.get(Counter::ClosedEmitted) - before.get(Counter::ClosedEmitted);
            if lost + emitted >= 2 * n as u64 || std::time::Instant::now() > deadline {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let ours: Vec<_> = received
            .iter()
            .filter(|c| c.stats.tuple.netns == netns)
            .collect();
        let after = tracer.counters().expect("counters");
        let lost = after.get(Counter::RingBufFull) - before.get(Counter::RingBufFull);
        assert!(lost > 0, "the burst must overflow a one-page ring");
        assert_eq!(
            lost,
            2 * n as u64 - ours.len() as u64,
            "lost = closes - received"
        );
        // What was delivered is exact: pair i's client sent i + 1 bytes.
        for record in &ours {
            let (local, remote) = endpoints(&record.stats.tuple);
            let bytes = if record.stats.sent_bytes > 0 {
                record.stats.sent_bytes
            } else {
                record.stats.recv_bytes
            };
            assert!(
                (1..=n as u64).contains(&bytes),
                "{local} -> {remote}: {bytes}"
            );
            assert_eq!(record.stats.sent_bytes + record.stats.recv_bytes, bytes);
        }
    });
}

#[test]
fn a_small_connection_map_counts_exactly_the_connections_that_did_not_fit() {
    in_fresh_netns(|| {
        let capacity = 8;
        let Some(tracer) = load(KernelConfig {
            max_tracked_connections: capacity,
            // The map must hold this test's connections only, not the host's.
            track_existing: false,
            ..core_config()
        }) else {
            return;
        };
        let n = 10;
        let mut open = pairs(n);
        let full = tracer
            .counters()
            .expect("counters")
            .get(Counter::ConnMapFull);
        assert_eq!(tracer.connections().expect("read").len(), capacity as usize);
        assert_eq!(
            full,
            2 * n as u64 - u64::from(capacity),
            "one count per socket that did not fit"
        );
        // More traffic on the untracked sockets does not count them again.
        for (client, server) in &mut open {
            client.write_all(b"x").expect("write");
            let mut byte = [0u8; 1];
            server.read_exact(&mut byte).expect("read");
        }
        assert_eq!(
            tracer
                .counters()
                .expect("counters")
                .get(Counter::ConnMapFull),
            full
        );
    });
}
