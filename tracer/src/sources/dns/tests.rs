//! The DNS source through its seam, [`Dns::ingest`]: records built by hand (header + payload)
//! around messages built with `domain`'s `MessageBuilder`.

use std::{net::IpAddr, str::FromStr, sync::Arc};

use domain::base::{Rtype, iana::Rcode};
use proptest::prelude::*;
use tracer_common::{
    conn::{AF_INET, AF_INET6, IPPROTO_TCP, IPPROTO_UDP},
    packet::{PACKET_EGRESS, PACKET_HEADER_LEN, PACKET_INGRESS, PACKET_KIND_DNS, PacketHeader},
};

use super::{
    parse::tests::{query, response},
    *,
};
use crate::model::{ConnectionTuple, Direction, DnsQueryType, DnsStats, IpTranslation, Protocol};

const MS: u64 = 1_000_000;
const S: u64 = 1_000_000_000;

fn ip(s: &str) -> IpAddr {
    IpAddr::from_str(s).unwrap()
}

fn addr(ip: IpAddr) -> [u8; 16] {
    let mut out = [0u8; 16];
    match ip {
        IpAddr::V4(v4) => out[..4].copy_from_slice(&v4.octets()),
        IpAddr::V6(v6) => out = v6.octets(),
    }
    out
}

/// A packet as the capture records it.
#[derive(Clone, Copy)]
struct Pkt {
    src: (IpAddr, u16),
    dst: (IpAddr, u16),
    at_ns: u64,
    tcp: bool,
    direction: u8,
    cookie: u64,
    seq: u32,
    flags: u8,
    /// The payload length on the wire, when more than captured.
    wire_len: Option<u32>,
}

const CLIENT: (&str, u16) = ("10.0.0.1", 40000);
const SERVER: (&str, u16) = ("10.0.0.53", 53);

fn q_pkt(at_ns: u64) -> Pkt {
    Pkt {
        src: (ip(CLIENT.0), CLIENT.1),
        dst: (ip(SERVER.0), SERVER.1),
        at_ns,
        tcp: false,
        direction: PACKET_EGRESS,
        cookie: 1,
        seq: 0,
        flags: 0,
        wire_len: None,
    }
}

fn r_pkt(at_ns: u64) -> Pkt {
    Pkt {
        src: (ip(SERVER.0), SERVER.1),
        dst: (ip(CLIENT.0), CLIENT.1),
        direction: PACKET_INGRESS,
        ..q_pkt(at_ns)
    }
}

fn record(p: Pkt, payload: &[u8]) -> Vec<u8> {
    let header = PacketHeader {
        timestamp_ns: p.at_ns,
        cookie: p.cookie,
        cgroup_id: 0,
        seq: p.seq,
        netns: 0,
        payload_len: p.wire_len.unwrap_or(payload.len() as u32),
        captured_len: payload.len() as u32,
        saddr: addr(p.src.0),
        daddr: addr(p.dst.0),
        sport: p.src.1,
        dport: p.dst.1,
        family: if p.src.0.is_ipv6() { AF_INET6 } else { AF_INET },
        protocol: if p.tcp { IPPROTO_TCP } else { IPPROTO_UDP },
        direction: p.direction,
        kind: PACKET_KIND_DNS,
        tcp_flags: p.flags,
        _pad: [0; 6],
    };
    // SAFETY: plain old data viewed as bytes.
    let head =
        unsafe { std::slice::from_raw_parts((&raw const header).cast::<u8>(), PACKET_HEADER_LEN) };
    [head, payload].concat()
}

fn udp_key() -> DnsKey {
    DnsKey {
        server: ip(SERVER.0),
        client: ip(CLIENT.0),
        client_port: CLIENT.1,
        protocol: Protocol::Udp,
    }
}

fn leaf(batch: &DnsStatsBatch, key: DnsKey, domain: &str, qtype: u16) -> DnsStats {
    batch.0[&key].0[&Arc::<str>::from(domain)][&DnsQueryType(qtype)].clone()
}

fn counter(dns: &Dns, name: &str) -> u64 {
    let mut out = Vec::new();
    dns.collect(&mut out);
    out.iter()
        .find(|s| s.info.name == name)
        .map(|s| s.value)
        .unwrap_or_else(|| panic!("no counter {name}"))
}

fn a_response(id: u16, name: &str) -> Vec<u8> {
    response(
        id,
        name,
        Rtype::A,
        Rcode::NOERROR,
        &["alias.cdn.example"],
        &[(ip("192.0.2.10"), 60), (ip("192.0.2.11"), 30)],
    )
}

fn conn(src: &str, dst: &str) -> ConnectionStats {
    ConnectionStats::new(
        ConnectionTuple {
            src: ip(src),
            dst: ip(dst),
            sport: 50000,
            dport: 443,
            pid: 1,
            netns: 1,
            protocol: Protocol::Tcp,
        },
        Direction::Outgoing,
        1,
    )
}

fn names(map: &FxHashMap<IpAddr, Vec<Arc<str>>>, ip_s: &str) -> Vec<String> {
    map.get(&ip(ip_s))
        .map(|v| v.iter().map(|s| s.to_string()).collect())
        .unwrap_or_default()
}

#[test]
fn udp_query_and_response_give_stats_and_reverse_names() {
    let dns = Dns::start(&DnsConfig::default());
    dns.ingest(&record(
        q_pkt(10 * MS),
        &query(42, "WWW.example.com", Rtype::A),
    ));
    dns.ingest(&record(r_pkt(13 * MS), &a_response(42, "www.example.com")));
    let batch = dns.take_stats(14 * MS);
    assert_eq!(batch.leaf_count(), 1);
    let st = leaf(&batch, udp_key(), "www.example.com", 1);
    assert_eq!(st.success_latency_sum_us, 3_000);
    assert_eq!(st.count_by_rcode.into_iter().collect::<Vec<_>>(), [(0, 1)]);
    let got = dns.names_for(&[conn("10.0.0.1", "192.0.2.10")], 14 * MS);
    assert_eq!(got.len(), 1);
    assert_eq!(
        names(&got, "192.0.2.10"),
        ["www.example.com", "alias.cdn.example"]
    );
    assert_eq!(counter(&dns, "dns_queries"), 1);
    assert_eq!(counter(&dns, "dns_responses_matched"), 1);
    assert_eq!(counter(&dns, "dns_reverse_bindings"), 4);
    assert_eq!(counter(&dns, "dns_reverse_ips"), 2);
    assert_eq!(counter(&dns, "dns_reverse_hits"), 1);
    assert_eq!(counter(&dns, "dns_reverse_lookups"), 2);
}

#[test]
fn a_local_conversation_seen_at_both_sockets_counts_once() {
    let dns = Dns::start(&DnsConfig::default());
    let q = query(7, "local.example", Rtype::AAAA);
    let r = response(
        7,
        "local.example",
        Rtype::AAAA,
        Rcode::NOERROR,
        &[],
        &[(ip("2001:db8::1"), 60)],
    );
    // Client egress, server ingress, server egress, client ingress.
    dns.ingest(&record(q_pkt(0), &q));
    dns.ingest(&record(
        Pkt {
            direction: PACKET_INGRESS,
            cookie: 2,
            ..q_pkt(MS)
        },
        &q,
    ));
    dns.ingest(&record(
        Pkt {
            direction: PACKET_EGRESS,
            cookie: 2,
            ..r_pkt(5 * MS)
        },
        &r,
    ));
    dns.ingest(&record(r_pkt(6 * MS), &r));
    let batch = dns.take_stats(10 * MS);
    let st = leaf(&batch, udp_key(), "local.example", 28);
    assert_eq!(st.success_latency_sum_us, 5_000);
    assert_eq!(st.count_by_rcode[&0], 1);
    assert_eq!(counter(&dns, "dns_queries"), 1);
    assert_eq!(counter(&dns, "dns_queries_duplicate"), 1);
    assert_eq!(counter(&dns, "dns_responses_matched"), 1);
    assert_eq!(counter(&dns, "dns_responses_unmatched"), 1);
    assert_eq!(counter(&dns, "dns_messages"), 4);
}

#[test]
fn failures_timeouts_and_filtered_types() {
    let dns = Dns::start(&DnsConfig::default());
    dns.ingest(&record(q_pkt(0), &query(1, "nx.example", Rtype::A)));
    dns.ingest(&record(
        r_pkt(2 * MS),
        &response(1, "nx.example", Rtype::A, Rcode::NXDOMAIN, &[], &[]),
    ));
    dns.ingest(&record(q_pkt(0), &query(2, "slow.example", Rtype::A)));
    dns.ingest(&record(q_pkt(0), &query(3, "mx.example", Rtype::MX)));
    dns.ingest(&record(
        r_pkt(MS),
        &response(3, "mx.example", Rtype::MX, Rcode::NOERROR, &[], &[]),
    ));
    let batch = dns.take_stats(15 * S + 1);
    assert_eq!(batch.leaf_count(), 2);
    let nx = leaf(&batch, udp_key(), "nx.example", 1);
    assert_eq!(
        (nx.failure_latency_sum_us, nx.success_latency_sum_us),
        (2_000, 0)
    );
    assert_eq!(nx.count_by_rcode[&3], 1);
    assert_eq!(leaf(&batch, udp_key(), "slow.example", 1).timeouts, 1);
    assert_eq!(counter(&dns, "dns_messages_filtered"), 2);
    assert_eq!(counter(&dns, "dns_timeouts"), 1);
    assert_eq!(counter(&dns, "dns_responses_unmatched"), 0);
    assert_eq!(counter(&dns, "dns_pending"), 0);
}

#[test]
fn configured_query_types_are_recorded() {
    let config = DnsConfig {
        query_types: DnsQueryTypes::Only(vec![15]),
        ..DnsConfig::default()
    };
    let dns = Dns::start(&config);
    for (id, qtype) in [(1, Rtype::MX), (2, Rtype::A)] {
        dns.ingest(&record(q_pkt(0), &query(id, "x.example", qtype)));
        dns.ingest(&record(
            r_pkt(MS),
            &response(id, "x.example", qtype, Rcode::NOERROR, &[], &[]),
        ));
    }
    let batch = dns.take_stats(2 * MS);
    assert_eq!(batch.leaf_count(), 1);
    assert_eq!(
        leaf(&batch, udp_key(), "x.example", 15).count_by_rcode[&0],
        1
    );
    let all = Dns::start(&DnsConfig {
        query_types: DnsQueryTypes::All,
        ..DnsConfig::default()
    });
    for (id, qtype) in [(1, Rtype::MX), (2, Rtype::A), (3, Rtype::TXT)] {
        all.ingest(&record(q_pkt(0), &query(id, "x.example", qtype)));
    }
    assert_eq!(all.take_stats(20 * S).leaf_count(), 3);
}

#[test]
fn the_stats_cap_drops_and_counts() {
    let dns = Dns::start(&DnsConfig {
        max_stats: 2,
        ..DnsConfig::default()
    });
    for id in 0..5u16 {
        let name = format!("d{id}.example");
        dns.ingest(&record(q_pkt(0), &query(id, &name, Rtype::A)));
        dns.ingest(&record(
            r_pkt(MS),
            &response(id, &name, Rtype::A, Rcode::NOERROR, &[], &[]),
        ));
    }
    assert_eq!(dns.take_stats(MS).leaf_count(), 2);
    assert_eq!(counter(&dns, "dns_stats_dropped"), 3);
}

#[test]
fn the_pending_cap_drops_and_counts() {
    let dns = Dns::start(&DnsConfig {
        max_pending: 3,
        ..DnsConfig::default()
    });
    for id in 0..5u16 {
        dns.ingest(&record(q_pkt(0), &query(id, "p.example", Rtype::A)));
    }
    assert_eq!(counter(&dns, "dns_pending_dropped"), 2);
    assert_eq!(counter(&dns, "dns_pending"), 3);
    assert_eq!(
        leaf(&dns.take_stats(16 * S), udp_key(), "p.example", 1).timeouts,
        3
    );
}

#[test]
fn tcp_messages_split_and_batched_over_segments() {
    let dns = Dns::start(&DnsConfig::default());
    let frame = |m: &[u8]| [&(m.len() as u16).to_be_bytes()[..], m].concat();
    let q1 = frame(&query(1, "t1.example", Rtype::A));
    let q2 = frame(&query(2, "t2.example", Rtype::A));
    let both = [q1.clone(), q2].concat();
    let tq = |at_ns, seq, flags| Pkt {
        tcp: true,
        seq,
        flags,
        ..q_pkt(at_ns)
    };
    // Two queries in one segment, sent again (retransmission), then the responses split.
    dns.ingest(&record(tq(0, 1000, 0x18), &both));
    dns.ingest(&record(tq(MS, 1000, 0x18), &both));
    let r = frame(&a_response(1, "t1.example"));
    let tr = |at_ns, seq, flags| Pkt {
        tcp: true,
        seq,
        flags,
        ..r_pkt(at_ns)
    };
    dns.ingest(&record(tr(3 * MS, 5000, 0x10), &r[..1]));
    dns.ingest(&record(tr(4 * MS, 5001, 0x10), &r[1..20]));
    dns.ingest(&record(tr(5 * MS, 5020, 0x19), &r[20..]));
    let key = DnsKey {
        protocol: Protocol::Tcp,
        ..udp_key()
    };
    let batch = dns.take_stats(6 * MS);
    assert_eq!(batch.leaf_count(), 1);
    assert_eq!(
        leaf(&batch, key, "t1.example", 1).success_latency_sum_us,
        5_000
    );
    assert_eq!(counter(&dns, "dns_queries"), 2);
    assert_eq!(counter(&dns, "dns_tcp_duplicates"), 1);
    assert_eq!(counter(&dns, "dns_tcp_segments"), 5);
    assert_eq!(counter(&dns, "dns_tcp_streams_closed"), 1);
    assert_eq!(counter(&dns, "dns_tcp_streams"), 1);
    let got = dns.names_for(&[conn("10.0.0.1", "192.0.2.11")], 6 * MS);
    assert_eq!(
        names(&got, "192.0.2.11"),
        ["t1.example", "alias.cdn.example"]
    );
    // A cut segment resets the stream and is counted.
    dns.ingest(&record(
        Pkt {
            wire_len: Some(2000),
            ..tq(7 * MS, 2000, 0x18)
        },
        &q1,
    ));
    assert_eq!(counter(&dns, "dns_tcp_truncated"), 1);
    assert_eq!(counter(&dns, "dns_tcp_streams"), 0);
}

#[test]
fn snapped_udp_response_counts_and_keeps_the_answers_captured() {
    let dns = Dns::start(&DnsConfig::default());
    dns.ingest(&record(q_pkt(0), &query(5, "s.example", Rtype::A)));
    let r = response(
        5,
        "s.example",
        Rtype::A,
        Rcode::NOERROR,
        &[],
        &[(ip("192.0.2.1"), 60), (ip("192.0.2.2"), 60)],
    );
    // Header + question (27) + the first A record (16) + 4 bytes of the second.
    let cut = &r[..27 + 16 + 4];
    dns.ingest(&record(
        Pkt {
            wire_len: Some(r.len() as u32),
            ..r_pkt(MS)
        },
        cut,
    ));
    assert_eq!(
        leaf(&dns.take_stats(MS), udp_key(), "s.example", 1).count_by_rcode[&0],
        1
    );
    let got = dns.names_for(&[conn("192.0.2.1", "192.0.2.2")], MS);
    assert_eq!(names(&got, "192.0.2.1"), ["s.example"]);
    assert!(names(&got, "192.0.2.2").is_empty());
    assert_eq!(counter(&dns, "dns_snapped"), 1);
    assert_eq!(counter(&dns, "dns_snapped_answers"), 1);
}

#[test]
fn reverse_names_expire_cover_nat_addresses_and_stay_pinned() {
    let dns = Dns::start(&DnsConfig {
        max_ips: 2,
        ..DnsConfig::default()
    });
    let resp = |id, name: &str, last: u8, ttl| {
        response(
            id,
            name,
            Rtype::A,
            Rcode::NOERROR,
            &[],
            &[(IpAddr::from([192, 0, 2, last]), ttl)],
        )
    };
    dns.ingest(&record(r_pkt(0), &resp(1, "one.example", 1, 10)));
    dns.ingest(&record(r_pkt(0), &resp(2, "two.example", 2, 100)));
    let mut nat = conn("10.0.0.1", "10.96.0.1");
    nat.nat = Some(IpTranslation {
        repl_src_ip: ip("192.0.2.1"),
        repl_dst_ip: ip("10.0.0.1"),
        repl_sport: 443,
        repl_dport: 50000,
    });
    let got = dns.names_for(std::slice::from_ref(&nat), S);
    assert_eq!(names(&got, "192.0.2.1"), ["one.example"]);
    assert_eq!(got.len(), 1);
    // 192.0.2.1 is pinned: a third IP evicts 192.0.2.2, the least recently used unpinned one.
    dns.ingest(&record(r_pkt(2 * S), &resp(3, "three.example", 3, 100)));
    assert_eq!(counter(&dns, "dns_reverse_evicted"), 1);
    let all = [
        conn("192.0.2.1", "192.0.2.2"),
        conn("192.0.2.3", "10.0.0.1"),
    ];
    let got = dns.names_for(&all, 3 * S);
    assert_eq!(names(&got, "192.0.2.1"), ["one.example"]);
    assert!(names(&got, "192.0.2.2").is_empty());
    assert_eq!(names(&got, "192.0.2.3"), ["three.example"]);
    // TTL 10 s: gone at 10 s.
    let got = dns.names_for(&all, 10 * S);
    assert!(names(&got, "192.0.2.1").is_empty());
    assert_eq!(counter(&dns, "dns_reverse_expired"), 1);
    // Unmatched responses still feed reverse DNS but not the stats.
    assert!(dns.take_stats(10 * S).is_empty());
    assert_eq!(counter(&dns, "dns_responses_unmatched"), 3);
}

#[test]
fn invalid_records_and_malformed_messages_are_counted() {
    let dns = Dns::start(&DnsConfig::default());
    let good = record(q_pkt(0), &query(1, "a.example", Rtype::A));
    dns.ingest(&good[..PACKET_HEADER_LEN - 1]);
    dns.ingest(&good[..good.len() - 1]);
    let mut not_dns = good.clone();
    not_dns[PACKET_HEADER_LEN - 8] = 9; // kind (after protocol, direction)
    dns.ingest(&not_dns);
    assert_eq!(counter(&dns, "dns_records_invalid"), 3);
    let payload = |bytes: &[u8]| dns.ingest(&record(q_pkt(0), bytes));
    payload(&[0u8; 5]);
    let q = query(1, "a.example", Rtype::A);
    let mut counts = q.clone();
    counts[4] = 0xff;
    payload(&counts);
    let mut ptr = q[..12].to_vec();
    ptr.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
    payload(&ptr);
    let mut label = q.clone();
    label[12] = 0x80;
    payload(&label);
    let mut none = q.clone();
    none[5] = 0;
    payload(&none[..12]);
    for (name, value) in [
        ("dns_malformed_truncated", 1),
        ("dns_malformed_counts", 1),
        ("dns_malformed_compression", 1),
        ("dns_malformed_label", 1),
        ("dns_no_question", 1),
        ("dns_malformed_other", 0),
        ("dns_messages", 5),
        ("dns_records", 8),
        ("dns_queries", 0),
    ] {
        assert_eq!(counter(&dns, name), value, "{name}");
    }
}

#[test]
fn disabled_source_ignores_everything_and_zero_sizes_are_refused() {
    let dns = Dns::start(&DnsConfig {
        enabled: false,
        ..DnsConfig::default()
    });
    dns.ingest(&record(q_pkt(0), &query(1, "a.example", Rtype::A)));
    assert_eq!(counter(&dns, "dns_records"), 0);
    assert!(DnsConfig::default().validate().is_ok());
    for bad in [
        DnsConfig {
            max_stats: 0,
            ..DnsConfig::default()
        },
        DnsConfig {
            max_pending: 0,
            ..DnsConfig::default()
        },
        DnsConfig {
            max_ips: 0,
            ..DnsConfig::default()
        },
        DnsConfig {
            max_names_per_ip: 0,
            ..DnsConfig::default()
        },
        DnsConfig {
            max_tcp_streams: 0,
            ..DnsConfig::default()
        },
        DnsConfig {
            timeout: std::time::Duration::ZERO,
            ..DnsConfig::default()
        },
        DnsConfig {
            query_types: DnsQueryTypes::Only(vec![]),
            ..DnsConfig::default()
        },
    ] {
        assert!(
            matches!(bad.validate(), Err(Error::InvalidConfig(_))),
            "{bad:?}"
        );
    }
}

/// Small bounds so that the property tests reach them.
fn small() -> DnsConfig {
    DnsConfig {
        max_stats: 8,
        max_pending: 8,
        max_ips: 8,
        max_names_per_ip: 3,
        max_tcp_streams: 4,
        query_types: DnsQueryTypes::All,
        ..DnsConfig::default()
    }
}

fn check_bounds(dns: &Dns) {
    let config = small();
    assert!(counter(dns, "dns_pending") <= config.max_pending as u64);
    assert!(counter(dns, "dns_tcp_streams") <= config.max_tcp_streams as u64);
    assert!(counter(dns, "dns_reverse_ips") <= config.max_ips as u64);
    assert!(dns.take_stats(0).leaf_count() <= config.max_stats);
    let got = dns.names_for(&[conn("192.0.2.1", "192.0.2.2")], 0);
    assert!(
        got.values()
            .all(|names| names.len() <= config.max_names_per_ip)
    );
}

fn real_messages() -> Vec<Vec<u8>> {
    vec![
        query(1, "a.example", Rtype::A),
        a_response(1, "a.example"),
        response(
            2,
            "b.example",
            Rtype::AAAA,
            Rcode::SERVFAIL,
            &["c.example", "d.example"],
            &[(ip("2001:db8::2"), 5)],
        ),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn garbage_records_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let dns = Dns::start(&small());
        dns.ingest(&bytes);
        check_bounds(&dns);
    }

    #[test]
    fn garbage_payloads_never_panic(
        payloads in proptest::collection::vec(
            (proptest::collection::vec(any::<u8>(), 0..300), any::<bool>(), any::<u32>(), any::<u8>(), 0u32..400),
            1..16,
        ),
    ) {
        let dns = Dns::start(&small());
        for (i, (payload, tcp, seq, flags, extra)) in payloads.into_iter().enumerate() {
            let p = Pkt {
                tcp,
                seq,
                flags,
                cookie: i as u64 % 3,
                wire_len: (extra > 300).then_some(payload.len() as u32 + extra),
                ..if i % 2 == 0 { q_pkt(i as u64 * MS) } else { r_pkt(i as u64 * MS) }
            };
            dns.ingest(&record(p, &payload));
        }
        check_bounds(&dns);
    }

    #[test]
    fn mutated_real_messages_never_panic(
        which in 0usize..3,
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
        tcp in any::<bool>(),
    ) {
        let dns = Dns::start(&small());
        let mut msg = real_messages().swap_remove(which);
        for (at, byte) in flips {
            let i = at.index(msg.len());
            msg[i] = byte;
        }
        let end = cut.index(msg.len() + 1);
        let msg = &msg[..end.max(1)];
        let payload = if tcp {
            [&(msg.len() as u16).to_be_bytes()[..], msg].concat()
        } else {
            msg.to_vec()
        };
        for i in 0..3u64 {
            let p = Pkt { tcp, seq: 7, ..if i == 1 { r_pkt(i * MS) } else { q_pkt(i * MS) } };
            dns.ingest(&record(p, &payload));
        }
        check_bounds(&dns);
    }

    #[test]
    fn many_distinct_conversations_stay_bounded(ids in proptest::collection::vec((any::<u16>(), 0u8..40), 1..200)) {
        let dns = Dns::start(&small());
        for (id, host) in ids {
            let name = format!("h{host}.example");
            let q = Pkt { src: (ip("10.0.0.1"), 1000 + u16::from(host)), ..q_pkt(0) };
            let r = Pkt { dst: q.src, ..r_pkt(MS) };
            dns.ingest(&record(q, &query(id, &name, Rtype::A)));
            dns.ingest(&record(r, &response(id, &name, Rtype::A, Rcode::NOERROR, &[], &[(IpAddr::from([192, 0, 2, host]), 60), (IpAddr::from([198, 51, 100, host]), 60)])));
        }
        check_bounds(&dns);
    }
}
