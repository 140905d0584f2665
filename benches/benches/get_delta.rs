//! `get_delta` at 1k, 10k and 100k active connections (half as many closed per round), with 1
//! and 3 clients, against a floor measured in the same run: one pass over the same connections
//! doing one hash-map lookup (the previous call's map) and one insert (into this call's map),
//! i.e. Datadog's per-call rebuild of a client's stats map and nothing else.
//!
//! Reported per row: mean ns per connection per client call (connections = active + closed
//! processed by the call), the floor's ns per connection, their ratio, and the per-client state
//! in bytes per tracked connection: `NetworkState::client_state_bytes` (the snapshot table's
//! allocated capacity × slot size, plus the client handle) divided by the client's tracked
//! connections. Shared memory (closed store, pooled scratch) is printed beside it.

use std::{
    cell::RefCell,
    hint::black_box,
    time::{Duration, Instant},
};

use criterion::{Criterion, criterion_group, criterion_main};
use rustc_hash::FxHashMap;
use tracer::{
    model::{ConnectionStats, CounterSet, DnsStatsBatch, StatCounters, UsmStats},
    state::{ClientId, NetworkState, StateConfig},
};
use tracer_benches::{
    data::Workload,
    summary::{Row, upsert_from_env},
};

/// One lookup in the previous map and one insert in the next, per connection.
#[derive(Default)]
struct Floor {
    prev: FxHashMap<u64, StatCounters>,
    next: FxHashMap<u64, StatCounters>,
}

impl Floor {
    fn pass<'a>(&mut self, conns: impl Iterator<Item = &'a ConnectionStats>) -> u64 {
        self.next.clear();
        let mut acc = 0u64;
        for c in conns {
            if let Some(p) = self.prev.get(&c.cookie) {
                acc = acc.wrapping_add(p.sent_bytes);
            }
            self.next.insert(c.cookie, c.monotonic);
        }
        std::mem::swap(&mut self.prev, &mut self.next);
        acc
    }
}

#[derive(Default, Clone, Copy)]
struct Totals {
    get_delta: Duration,
    floor: Duration,
    conns: u64,
}

struct Rig {
    state: NetworkState,
    clients: Vec<ClientId>,
    floors: Vec<Floor>,
    workload: Workload,
    closed: Vec<ConnectionStats>,
    next_client: usize,
    now: u64,
    totals: Totals,
}

impl Rig {
    fn new(active: usize, clients: usize) -> Result<Self, String> {
        let state = NetworkState::new(StateConfig::default()).map_err(|e| e.to_string())?;
        let clients = (0..clients)
            .map(|c| ClientId::new(&format!("bench-{c}")))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        for client in &clients {
            state
                .register_client(client, 0)
                .map_err(|e| e.to_string())?;
        }
        let mut rig = Self {
            state,
            floors: clients.iter().map(|_| Floor::default()).collect(),
            clients,
            workload: Workload::new(active),
            closed: Vec::new(),
            next_client: 0,
            now: 0,
            totals: Totals::default(),
        };
        // Two rounds to reach steady state (every client tracks every active connection).
        for _ in 0..2 * rig.clients.len() {
            rig.call();
        }
        rig.totals = Totals::default();
        Ok(rig)
    }

    /// One client call; a new round (counters move, connections close) starts with client 0.
    fn call(&mut self) -> Duration {
        let client = self.next_client;
        if client == 0 {
            self.closed = self.workload.advance();
            self.state.store_closed_batch(self.closed.iter().cloned());
            self.now += 30_000_000_000;
        }
        self.next_client = (client + 1) % self.clients.len();
        let active = self.workload.read_map();
        let (Some(id), Some(floor)) = (self.clients.get(client), self.floors.get_mut(client))
        else {
            return Duration::ZERO;
        };

        let start = Instant::now();
        let delta = self.state.get_delta(
            id,
            self.now,
            active,
            DnsStatsBatch::default(),
            UsmStats::default(),
            &CounterSet::default(),
        );
        let elapsed = start.elapsed();
        drop(black_box(delta));

        let start = Instant::now();
        black_box(floor.pass(self.workload.active().iter().chain(self.closed.iter())));
        let floor_elapsed = start.elapsed();

        self.totals.get_delta += elapsed;
        self.totals.floor += floor_elapsed;
        self.totals.conns += (self.workload.active_len() + self.closed.len()) as u64;
        elapsed
    }
}

fn bench_get_delta(c: &mut Criterion) {
    for (active, label) in [(1_000usize, "1k"), (10_000, "10k"), (100_000, "100k")] {
        for clients in [1usize, 3] {
            let name = format!("get_delta/{label}_active/{clients}_clients");
            let rig = match Rig::new(active, clients) {
                Ok(rig) => RefCell::new(rig),
                Err(err) => {
                    eprintln!("{name}: cannot set up: {err}");
                    continue;
                }
            };
            let mut group = c.benchmark_group("get_delta");
            group.sample_size(10);
            group.warm_up_time(Duration::from_millis(500));
            group.measurement_time(Duration::from_secs(if active >= 100_000 { 4 } else { 2 }));
            group.bench_function(format!("{label}_active/{clients}_clients"), |b| {
                b.iter_custom(|iters| {
                    let mut rig = rig.borrow_mut();
                    (0..iters).map(|_| rig.call()).sum()
                })
            });
            group.finish();
            report(&name, &rig.borrow());
        }
    }
}

fn report(name: &str, rig: &Rig) {
    let t = rig.totals;
    if t.conns == 0 {
        return; // filtered out on the command line
    }
    let conns = t.conns.max(1) as f64;
    let ns_per_conn = t.get_delta.as_nanos() as f64 / conns;
    let floor_ns_per_conn = t.floor.as_nanos() as f64 / conns;
    let ratio = ns_per_conn / floor_ns_per_conn.max(f64::MIN_POSITIVE);
    let (bytes, tracked) = rig
        .clients
        .first()
        .and_then(|id| {
            Some((
                rig.state.client_state_bytes(id)?,
                rig.state.client_tracked(id)?,
            ))
        })
        .unwrap_or((0, 0));
    let bytes_per_conn = bytes as f64 / tracked.max(1) as f64;
    println!(
        "{name}: {ns_per_conn:.1} ns/conn per client call, floor {floor_ns_per_conn:.1} ns/conn, \
         ratio {ratio:.2}, per-client state {bytes_per_conn:.1} B/conn ({bytes} B for {tracked} \
         tracked), shared {} B",
        rig.state.shared_state_bytes()
    );
    let row = Row {
        name: name.to_owned(),
        ns_per_conn,
        floor_ns_per_conn,
        ratio,
        bytes_per_conn,
    };
    if let Err(err) = upsert_from_env(&row) {
        eprintln!("{name}: cannot write the bench summary: {err}");
    }
}

criterion_group!(benches, bench_get_delta);
criterion_main!(benches);
