//! `Routes::resolve` on 10k outgoing connections with a warm cache, against a floor measured in
//! the same run: one `FxHashMap` lookup per connection of the same (netns, source, destination)
//! key and a clone of the stored answer into the connection.
//!
//! The cache is warmed by one real `resolve` (10k netlink route questions in this process's
//! network namespace; questions only, no traffic): destinations are 10k distinct addresses of
//! 198.18.0.0/15 (RFC 2544, benchmarking) with an unspecified source, in this namespace. Where
//! the namespace has no default route the answers are negative entries (printed: how many
//! connections got a Via); the cached path is the same.
//!
//! Reported: mean ns per connection for `resolve`, for the floor, and their ratio.

use std::{
    hint::black_box,
    net::{IpAddr, Ipv4Addr},
    os::unix::fs::MetadataExt,
    time::{Duration, Instant},
};

use criterion::{Criterion, criterion_group, criterion_main};
use rustc_hash::FxHashMap;
use serde_json::json;
use tracer::{
    enrich::routes::{Routes, RoutesConfig},
    model::{ConnectionStats, ConnectionTuple, Direction, Protocol, Via},
    telemetry::CounterSource,
};
use tracer_benches::summary::{number, upsert_fields_from_env};

const CONNS: usize = 10_000;

fn connections(netns: u32) -> Vec<ConnectionStats> {
    (0..CONNS)
        .map(|i| {
            let n = u32::try_from(i).unwrap_or(0);
            let dst = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 1)) + n);
            ConnectionStats::new(
                ConnectionTuple {
                    src: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                    dst: IpAddr::V4(dst),
                    sport: 40_000,
                    dport: 443,
                    pid: 1,
                    netns,
                    protocol: Protocol::Tcp,
                },
                Direction::Outgoing,
                u64::from(n),
            )
        })
        .collect()
}

type Key = (u32, IpAddr, IpAddr);

fn floor_pass(map: &FxHashMap<Key, Option<Via>>, conns: &mut [ConnectionStats]) {
    for conn in conns.iter_mut() {
        let key = (conn.tuple.netns, conn.tuple.src, conn.tuple.dst);
        conn.via = map.get(&key).cloned().flatten();
    }
}

fn counter(routes: &Routes, name: &str) -> u64 {
    let mut out = Vec::new();
    routes.collect(&mut out);
    out.iter()
        .find(|s| s.info.name == name)
        .map_or(0, |s| s.value)
}

fn bench_routes(c: &mut Criterion) {
    let netns = std::fs::metadata("/proc/thread-self/ns/net")
        .map(|m| u32::try_from(m.ino()).unwrap_or(0))
        .unwrap_or(0);
    let routes = Routes::start(&RoutesConfig {
        ttl: Duration::from_secs(3600),
        negative_ttl: Duration::from_secs(3600),
        ..RoutesConfig::default()
    });
    let mut conns = connections(netns);
    routes.resolve(&mut conns);
    let misses = counter(&routes, "route_cache_misses");
    let with_via = conns.iter().filter(|c| c.via.is_some()).count();
    if misses != CONNS as u64 {
        eprintln!(
            "routes: warm-up asked {misses} routes of {CONNS} (netlink unavailable?): not measured"
        );
        return;
    }
    let map: FxHashMap<Key, Option<Via>> = conns
        .iter()
        .map(|c| ((c.tuple.netns, c.tuple.src, c.tuple.dst), c.via.clone()))
        .collect();

    let mut resolve_total = Duration::ZERO;
    let mut floor_total = Duration::ZERO;
    let mut calls = 0u64;
    let mut group = c.benchmark_group("routes");
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(2));
    group.bench_function("resolve_warm/10k", |b| {
        b.iter_custom(|iters| {
            let mut measured = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                routes.resolve(black_box(&mut conns));
                let elapsed = start.elapsed();
                let start = Instant::now();
                floor_pass(&map, black_box(&mut conns));
                floor_total += start.elapsed();
                resolve_total += elapsed;
                measured += elapsed;
                calls += 1;
            }
            measured
        })
    });
    group.finish();
    let after = counter(&routes, "route_cache_misses");
    assert_eq!(after, misses, "a warm cache asks the kernel nothing");
    let per = (calls.max(1) * CONNS as u64) as f64;
    let ns = resolve_total.as_nanos() as f64 / per;
    let floor = floor_total.as_nanos() as f64 / per;
    let ratio = ns / floor.max(f64::MIN_POSITIVE);
    println!(
        "routes/resolve_warm/10k: {ns:.1} ns/conn, floor (FxHashMap lookup + clone) {floor:.1} \
         ns/conn, ratio {ratio:.2}; {with_via} of {CONNS} connections have a Via in this namespace"
    );
    if let Err(err) = upsert_fields_from_env(
        "routes/resolve_warm/10k",
        [
            ("ns_per_conn", number(ns)),
            ("floor_ns_per_conn", number(floor)),
            ("ratio", number(ratio)),
            ("with_via", json!(with_via)),
        ],
    ) {
        eprintln!("routes: cannot write the bench summary: {err}");
    }
}

criterion_group!(benches, bench_routes);
criterion_main!(benches);
