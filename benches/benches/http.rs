//! The HTTP source (`tracer::sources::http::Http`), pure userspace, no privileges: finished
//! transactions as the kernel will write them (`HttpTransaction` records built by hand) through
//! `Http::ingest`, then `take_stats`, per batch of 10 000 transactions:
//!
//! - `client`: each transaction observed by the client's socket only (a remote server): 200
//!   connections × 50 requests, paths `/api/v1/users/<id>/orders` (quantized to one path),
//!   `/static/app.js`, `/health`, statuses 200 / 404 / 500, latencies 0.1..50 ms (so every
//!   key's sketch holds many samples).
//! - `local_pair`: the same transactions observed by both sockets (a local server): 20 000
//!   records per batch, half of them duplicates that the source must not count; reported per
//!   transaction (two records).
//!
//! The floor, measured in the same run: `decode::http_record` of each record and one
//! `FxHashMap` insert (key: ports, status, path length; value: latency sum). Reported: ns per
//! transaction, the floor, and the ratio.

use std::{
    hint::black_box,
    time::{Duration, Instant},
};

use criterion::{Criterion, criterion_group, criterion_main};
use rustc_hash::FxHashMap;
use tracer::{
    decode,
    sources::http::{Http, HttpConfig},
};
use tracer_benches::summary::{number, upsert_fields_from_env};
use tracer_common::{
    conn::AF_INET,
    http::{
        HTTP_PATH_MAX, HTTP_ROLE_CLIENT, HTTP_ROLE_SERVER, HTTP_TRANSACTION_LEN, HttpMethod,
        HttpTransaction,
    },
};

const CONNECTIONS: usize = 200;
const PER_CONNECTION: usize = 50;
const TRANSACTIONS: usize = CONNECTIONS * PER_CONNECTION;

fn v4(a: [u8; 4]) -> [u8; 16] {
    let mut out = [0u8; 16];
    if let Some(head) = out.get_mut(..4) {
        head.copy_from_slice(&a);
    }
    out
}

fn record(t: &HttpTransaction) -> Vec<u8> {
    // SAFETY: HttpTransaction is plain old data; viewed as its bytes.
    unsafe {
        std::slice::from_raw_parts(
            (t as *const HttpTransaction).cast::<u8>(),
            HTTP_TRANSACTION_LEN,
        )
    }
    .to_vec()
}

/// The client's observation of transaction `i`.
fn transaction(i: usize) -> HttpTransaction {
    let conn = i / PER_CONNECTION;
    let n = i % PER_CONNECTION;
    let path = match n % 5 {
        0 => "/static/app.js".to_owned(),
        1 => "/health".to_owned(),
        _ => format!("/api/v1/users/{}/orders", 1_000 + i),
    };
    let status = match n % 10 {
        7 => 404,
        9 => 500,
        _ => 200,
    };
    // 0.1 .. 50 ms, spread so that sketches hold many distinct bins.
    let latency = 100_000 + (i as u64 * 7_919) % 49_900_000;
    let mut t = HttpTransaction::EMPTY;
    t.request_ns = 1_000_000_000 + i as u64 * 1_000;
    t.response_ns = t.request_ns + latency;
    t.cookie = conn as u64 + 1;
    t.saddr = v4([10, 0, 0, 1]);
    t.sport = 30_000 + u16::try_from(conn).unwrap_or(0);
    t.daddr = v4([10, 0, 1, 1]);
    t.dport = 8080;
    t.family = AF_INET;
    t.method = if n % 4 == 3 {
        HttpMethod::Post as u8
    } else {
        HttpMethod::Get as u8
    };
    t.role = HTTP_ROLE_CLIENT;
    t.status = status;
    let bytes = path.as_bytes();
    let len = bytes.len().min(HTTP_PATH_MAX);
    if let (Some(dst), Some(src)) = (t.path.get_mut(..len), bytes.get(..len)) {
        dst.copy_from_slice(src);
    }
    t.path_len = u16::try_from(bytes.len()).unwrap_or(u16::MAX);
    t.path_captured = u16::try_from(len).unwrap_or(0);
    t
}

/// The server's observation of the same transaction.
fn server_side(mut t: HttpTransaction) -> HttpTransaction {
    std::mem::swap(&mut t.saddr, &mut t.daddr);
    std::mem::swap(&mut t.sport, &mut t.dport);
    t.role = HTTP_ROLE_SERVER;
    t.cookie += 1_000_000;
    t
}

fn floor(records: &[Vec<u8>], map: &mut FxHashMap<(u16, u16, u16, u16), u64>) {
    map.clear();
    for r in records {
        if let Some(t) = decode::http_record(r) {
            *map.entry((t.sport, t.dport, t.status, t.path_len))
                .or_default() += t.response_ns.wrapping_sub(t.request_ns);
        }
    }
    black_box(map.len());
}

fn run(c: &mut Criterion, name: &str, records: &[Vec<u8>], per_transaction: usize) {
    let http = Http::start(&HttpConfig::default());
    let mut floor_map = FxHashMap::default();
    let (mut total, mut floor_total, mut batches) = (Duration::ZERO, Duration::ZERO, 0u64);
    let mut keys = 0usize;
    let mut requests = 0u64;
    let mut group = c.benchmark_group("http");
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(3));
    group.bench_function(format!("{name}/10k"), |b| {
        b.iter_custom(|iters| {
            let mut measured = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                for r in records {
                    http.ingest(black_box(r));
                }
                // Past the dedup window, so a batch settles everything it ingested.
                let usm = http.take_stats(u64::MAX);
                let elapsed = start.elapsed();
                keys = usm.len();
                requests = usm.http.values().map(|s| s.count()).sum();
                drop(usm);
                let start = Instant::now();
                floor(black_box(records), &mut floor_map);
                floor_total += start.elapsed();
                total += elapsed;
                measured += elapsed;
                batches += 1;
            }
            measured
        })
    });
    group.finish();
    assert_eq!(
        requests, TRANSACTIONS as u64,
        "{name}: every transaction counted once"
    );
    let per = (batches.max(1) * TRANSACTIONS as u64) as f64;
    let ns = total.as_nanos() as f64 / per;
    let floor_ns = floor_total.as_nanos() as f64 / per;
    let ratio = ns / floor_ns.max(f64::MIN_POSITIVE);
    println!(
        "http/{name}: {ns:.1} ns/transaction ({per_transaction} record(s) each, ingest + \
         take_stats, {keys} keys), floor (http_record + one FxHashMap insert per record) \
         {floor_ns:.1} ns, ratio {ratio:.1}"
    );
    if let Err(err) = upsert_fields_from_env(
        &format!("http/{name}"),
        [
            ("ns_per_transaction", number(ns)),
            ("floor_ns_per_transaction", number(floor_ns)),
            ("ratio", number(ratio)),
        ],
    ) {
        eprintln!("http: cannot write the bench summary: {err}");
    }
}

fn bench_client(c: &mut Criterion) {
    let records: Vec<Vec<u8>> = (0..TRANSACTIONS).map(|i| record(&transaction(i))).collect();
    run(c, "client", &records, 1);
}

fn bench_local_pair(c: &mut Criterion) {
    // Server first, as its socket usually finishes a transaction first.
    let records: Vec<Vec<u8>> = (0..TRANSACTIONS)
        .flat_map(|i| {
            let t = transaction(i);
            [record(&server_side(t)), record(&t)]
        })
        .collect();
    run(c, "local_pair", &records, 2);
}

criterion_group!(benches, bench_client, bench_local_pair);
criterion_main!(benches);
