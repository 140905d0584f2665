//! The DNS source (`tracer::sources::dns::Dns`), pure userspace, no privileges:
//!
//! (a) parse + stats: a UDP query and its response (CNAME + 2 A + OPT, compressed names) as
//!     capture records built by hand (`PacketHeader` + payload bytes) through `Dns::ingest`,
//!     1 000 conversations (distinct client ports and ids) per batch, then `take_stats`;
//!     reported per response (one query + one response), against a floor measured in the same
//!     run: `decode::packet_record` of both records and an `FxHashMap` insert and remove of
//!     (client, port, id).
//! (b) the DNS stage of one `get_active_connections` call at 10k connections: `take_stats` +
//!     `names_for` over 10k `ConnectionStats` whose destinations all have names in a warm
//!     reverse cache, against a floor: one `FxHashMap` lookup per distinct address and a clone
//!     of its names into the result.
//!
//! Reported: ns per response and per call, their floors, and the ratios.

use std::{
    hint::black_box,
    net::{IpAddr, Ipv4Addr},
    sync::Arc,
    time::{Duration, Instant},
};

use criterion::{Criterion, criterion_group, criterion_main};
use rustc_hash::FxHashMap;
use tracer::{
    decode,
    model::{ConnectionStats, ConnectionTuple, Direction, Protocol},
    sources::dns::{Dns, DnsConfig},
};
use tracer_benches::summary::{number, upsert_fields_from_env};
use tracer_common::{
    conn::{AF_INET, IPPROTO_UDP},
    packet::{PACKET_EGRESS, PACKET_HEADER_LEN, PACKET_INGRESS, PACKET_KIND_DNS, PacketHeader},
};

const PAIRS: usize = 1_000;
const CONNS: usize = 10_000;

/// `name` in wire format (uncompressed).
fn wire_name(name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for label in name.split('.') {
        out.push(u8::try_from(label.len()).unwrap_or(0));
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    out
}

/// A query for `name`, type A, id `id`, RD set.
fn query(id: u16, name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 1]);
    out.extend_from_slice(&wire_name(name));
    out.extend_from_slice(&[0, 1, 0, 1]);
    // OPT (EDNS0, 1232 bytes).
    out.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0]);
    out
}

/// The response: question, `name` CNAME `alias` (compressed: the owner points at the
/// question), two A records of `alias` (pointing at the CNAME's target), an OPT record.
fn response(id: u16, name: &str, alias: &str, a: [Ipv4Addr; 2]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&[0x81, 0x80, 0, 1, 0, 3, 0, 0, 0, 1]);
    out.extend_from_slice(&wire_name(name));
    out.extend_from_slice(&[0, 1, 0, 1]);
    // CNAME: owner = pointer to the question name at 12.
    let target = wire_name(alias);
    out.extend_from_slice(&[0xc0, 12, 0, 5, 0, 1, 0, 0, 0x0e, 0x10]);
    out.extend_from_slice(&u16::try_from(target.len()).unwrap_or(0).to_be_bytes());
    let target_at = u16::try_from(out.len()).unwrap_or(0);
    out.extend_from_slice(&target);
    for addr in a {
        out.extend_from_slice(&(0xc000 | target_at).to_be_bytes());
        out.extend_from_slice(&[0, 1, 0, 1, 0, 0, 0x0e, 0x10, 0, 4]);
        out.extend_from_slice(&addr.octets());
    }
    out.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0]);
    out
}

/// A UDP capture record.
fn record(
    at_ns: u64,
    src: (Ipv4Addr, u16),
    dst: (Ipv4Addr, u16),
    direction: u8,
    payload: &[u8],
) -> Vec<u8> {
    let mut saddr = [0u8; 16];
    saddr[..4].copy_from_slice(&src.0.octets());
    let mut daddr = [0u8; 16];
    daddr[..4].copy_from_slice(&dst.0.octets());
    let len = u32::try_from(payload.len()).unwrap_or(0);
    let header = PacketHeader {
        timestamp_ns: at_ns,
        cookie: 1,
        cgroup_id: 0,
        seq: 0,
        netns: 0,
        payload_len: len,
        captured_len: len,
        saddr,
        daddr,
        sport: src.1,
        dport: dst.1,
        family: AF_INET,
        protocol: IPPROTO_UDP,
        direction,
        kind: PACKET_KIND_DNS,
        tcp_flags: 0,
        _pad: [0; 6],
    };
    // SAFETY: PacketHeader is plain old data; viewed as its bytes.
    let head =
        unsafe { std::slice::from_raw_parts((&raw const header).cast::<u8>(), PACKET_HEADER_LEN) };
    [head, payload].concat()
}

const CLIENT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const SERVER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 53);

/// `PAIRS` query/response record pairs, distinct client ports and ids, 1 ms apart.
fn pairs() -> Vec<(Vec<u8>, Vec<u8>)> {
    (0..PAIRS)
        .map(|i| {
            let n = u16::try_from(i).unwrap_or(0);
            let port = 30_000 + n;
            let at = 1_000_000_000 + i as u64 * 1_000_000;
            let q = query(n, "www.example.com");
            let r = response(
                n,
                "www.example.com",
                "www.example.com.cdn.example.net",
                [
                    Ipv4Addr::new(198, 51, 100, 1),
                    Ipv4Addr::new(198, 51, 100, 2),
                ],
            );
            (
                record(at, (CLIENT, port), (SERVER, 53), PACKET_EGRESS, &q),
                record(
                    at + 500_000,
                    (SERVER, 53),
                    (CLIENT, port),
                    PACKET_INGRESS,
                    &r,
                ),
            )
        })
        .collect()
}

/// The transaction id (first two bytes) of a payload, 0 if shorter.
fn txid(payload: &[u8]) -> u16 {
    match payload {
        [hi, lo, ..] => u16::from_be_bytes([*hi, *lo]),
        _ => 0,
    }
}

/// The IPv4 address in the first 4 bytes of a record's address.
fn v4(addr: [u8; 16]) -> u32 {
    let [a, b, c, d, ..] = addr;
    u32::from_ne_bytes([a, b, c, d])
}

fn floor_pairs(pairs: &[(Vec<u8>, Vec<u8>)], map: &mut FxHashMap<(u32, u16, u16), u64>) {
    for (q, r) in pairs {
        if let Some((h, payload)) = decode::packet_record(q) {
            map.insert((v4(h.saddr), h.sport, txid(payload)), h.timestamp_ns);
        }
        if let Some((h, payload)) = decode::packet_record(r) {
            black_box(map.remove(&(v4(h.daddr), h.dport, txid(payload))));
        }
    }
}

fn bench_ingest(c: &mut Criterion) {
    let dns = Dns::start(&DnsConfig::default());
    let pairs = pairs();
    let mut floor_map = FxHashMap::default();
    let mut ingest_total = Duration::ZERO;
    let mut floor_total = Duration::ZERO;
    let mut batches = 0u64;
    let mut leaves = 0usize;
    let mut group = c.benchmark_group("dns");
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(2));
    group.bench_function("ingest_pair/1k", |b| {
        b.iter_custom(|iters| {
            let mut measured = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                for (q, r) in &pairs {
                    dns.ingest(black_box(q));
                    dns.ingest(black_box(r));
                }
                leaves = dns.take_stats(10_000_000_000).leaf_count();
                let elapsed = start.elapsed();
                let start = Instant::now();
                floor_pairs(black_box(&pairs), &mut floor_map);
                floor_total += start.elapsed();
                ingest_total += elapsed;
                measured += elapsed;
                batches += 1;
            }
            measured
        })
    });
    group.finish();
    assert_eq!(leaves, PAIRS, "each conversation gives one stats leaf");
    let per = (batches.max(1) * PAIRS as u64) as f64;
    let ns = ingest_total.as_nanos() as f64 / per;
    let floor = floor_total.as_nanos() as f64 / per;
    let ratio = ns / floor.max(f64::MIN_POSITIVE);
    println!(
        "dns/ingest_pair: {ns:.1} ns/response (query + response, CNAME + 2 A + OPT, with \
         take_stats), floor (packet_record x2 + hash insert/remove) {floor:.1} ns, ratio {ratio:.1}"
    );
    if let Err(err) = upsert_fields_from_env(
        "dns/ingest_pair",
        [
            ("ns_per_response", number(ns)),
            ("floor_ns_per_response", number(floor)),
            ("ratio", number(ratio)),
        ],
    ) {
        eprintln!("dns: cannot write the bench summary: {err}");
    }
}

fn dst(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 1)) + u32::try_from(i).unwrap_or(0))
}

fn bench_stage(c: &mut Criterion) {
    let dns = Dns::start(&DnsConfig::default());
    // Warm: one response per destination (its name and one alias, TTL 1 h).
    for i in 0..CONNS {
        let n = u16::try_from(i % 65_536).unwrap_or(0);
        let name = format!("host{i}.example.com");
        let alias = format!("host{i}.cdn.example.net");
        let r = response(n, &name, &alias, [dst(i), dst(i)]);
        dns.ingest(&record(
            1_000_000_000,
            (SERVER, 53),
            (CLIENT, 40_000),
            PACKET_INGRESS,
            &r,
        ));
    }
    let conns: Vec<ConnectionStats> = (0..CONNS)
        .map(|i| {
            ConnectionStats::new(
                ConnectionTuple {
                    src: IpAddr::V4(CLIENT),
                    dst: IpAddr::V4(dst(i)),
                    sport: 40_000 + u16::try_from(i % 20_000).unwrap_or(0),
                    dport: 443,
                    pid: 1,
                    netns: 1,
                    protocol: Protocol::Tcp,
                },
                Direction::Outgoing,
                i as u64,
            )
        })
        .collect();
    let now = 2_000_000_000;
    let got = dns.names_for(&conns, now);
    assert_eq!(got.len(), CONNS, "every destination has names");
    let floor_map: FxHashMap<IpAddr, Vec<Arc<str>>> = got;
    let floor = |conns: &[ConnectionStats]| {
        let mut out: FxHashMap<IpAddr, Vec<Arc<str>>> = FxHashMap::default();
        for conn in conns {
            for ip in [conn.tuple.src, conn.tuple.dst] {
                if !out.contains_key(&ip)
                    && let Some(names) = floor_map.get(&ip)
                {
                    out.insert(ip, names.clone());
                }
            }
        }
        out
    };

    let mut stage_total = Duration::ZERO;
    let mut floor_total = Duration::ZERO;
    let mut calls = 0u64;
    let mut group = c.benchmark_group("dns");
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(2));
    group.bench_function("stage/10k", |b| {
        b.iter_custom(|iters| {
            let mut measured = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                black_box(dns.take_stats(now));
                black_box(dns.names_for(black_box(&conns), now));
                let elapsed = start.elapsed();
                let start = Instant::now();
                black_box(floor(black_box(&conns)));
                floor_total += start.elapsed();
                stage_total += elapsed;
                measured += elapsed;
                calls += 1;
            }
            measured
        })
    });
    group.finish();
    let per = calls.max(1) as f64;
    let us = stage_total.as_nanos() as f64 / per / 1_000.0;
    let floor_us = floor_total.as_nanos() as f64 / per / 1_000.0;
    let ratio = us / floor_us.max(f64::MIN_POSITIVE);
    let per_conn = us * 1_000.0 / CONNS as f64;
    println!(
        "dns/stage/10k: {us:.0} us/call ({per_conn:.1} ns/conn: take_stats + names_for, warm \
         cache of {CONNS} IPs), floor (FxHashMap lookup + clone per address) {floor_us:.0} us, \
         ratio {ratio:.2}"
    );
    if let Err(err) = upsert_fields_from_env(
        "dns/stage/10k",
        [
            ("us_per_call", number(us)),
            ("ns_per_conn", number(per_conn)),
            ("floor_us_per_call", number(floor_us)),
            ("ratio", number(ratio)),
        ],
    ) {
        eprintln!("dns: cannot write the bench summary: {err}");
    }
}

criterion_group!(benches, bench_ingest, bench_stage);
criterion_main!(benches);
