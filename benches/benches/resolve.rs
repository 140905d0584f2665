//! The Resolve stage (`tracer::enrich::Enrichers`: NAT from conntrack and source containers
//! before the state, destination containers and routes after it) per call at 10k and 100k
//! connections with warm caches, against the state pipeline's own time (`get_delta`, one
//! client) on the same connections in the same run. Target (issue 9): the enrichments cost at
//! most 20 % of the pipeline.
//!
//! The connections use documentation addresses only (192.0.2.0/24 sources, 198.51.100.0/24
//! and 203.0.113.0/24 destinations): route lookups are netlink questions to this host's routing
//! table, never traffic. 60 % are outgoing to a few hundred remote hosts (route cache), 40 % are
//! intra-host pairs (LocalResolver), half of all carry this process's cgroup id (container
//! cache); conntrack answers from its table (dumped at start: root for a full table, otherwise
//! it says so and counts). The first call warms the caches and is not measured.

use std::{
    cell::RefCell,
    collections::HashSet,
    hint::black_box,
    net::{IpAddr, Ipv4Addr},
    os::unix::fs::MetadataExt,
    time::{Duration, Instant},
};

use criterion::{Criterion, criterion_group, criterion_main};
use tracer::{
    enrich::{EnrichConfig, Enrichers},
    model::{
        ConnectionStats, ConnectionTuple, CounterSet, Direction, DnsStatsBatch, EphemeralPortRange,
        Protocol, UsmStats, connection_cookie,
    },
    state::{ClientId, NetworkState, StateConfig},
};
use tracer_benches::summary::{number, upsert_fields};

/// This process's cgroup v2 id (the inode of its cgroup directory), 0 if unknown.
fn own_cgroup_id() -> u64 {
    let Some(mount) = tracer::kernel::capabilities::cgroup2_mount() else {
        return 0;
    };
    let Ok(text) = std::fs::read_to_string("/proc/self/cgroup") else {
        return 0;
    };
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .and_then(|path| std::fs::metadata(mount.join(path.trim_start_matches('/'))).ok())
        .map_or(0, |m| m.ino())
}

fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

/// Connection `i` of the workload (see the module docs).
fn connection(i: u64, cgroup_id: u64, netns: u32) -> ConnectionStats {
    let ports = EphemeralPortRange::default();
    let local = v4(192, 0, 2, 1 + (i % 7) as u8);
    let ephemeral = 32768 + (i % 28000) as u16;
    let (tuple, direction) = if i % 5 < 3 {
        let remote = if i.is_multiple_of(2) {
            v4(198, 51, 100, 1 + (i * 7919 % 150) as u8)
        } else {
            v4(203, 0, 113, 1 + (i * 7919 % 150) as u8)
        };
        let t = ConnectionTuple {
            src: local,
            dst: remote,
            sport: ephemeral,
            dport: 443,
            pid: 1000 + (i % 64) as u32,
            netns,
            protocol: Protocol::Tcp,
        };
        (t, Direction::Outgoing)
    } else {
        // Intra-host: client i%5==3 talks to server i%5==4 (the mirror tuple).
        let pair = i / 5;
        let client = v4(192, 0, 2, 100 + (pair % 50) as u8);
        let server = v4(192, 0, 2, 200 + (pair % 50) as u8);
        let sport = 32768 + (pair % 28000) as u16;
        let outgoing = i % 5 == 3;
        let t = ConnectionTuple {
            src: if outgoing { client } else { server },
            dst: if outgoing { server } else { client },
            sport: if outgoing { sport } else { 8080 },
            dport: if outgoing { 8080 } else { sport },
            pid: 2000 + (pair % 64) as u32,
            netns,
            protocol: Protocol::Tcp,
        };
        let direction = if outgoing {
            Direction::Outgoing
        } else {
            Direction::Incoming
        };
        (t, direction)
    };
    let mut c = ConnectionStats::new(tuple, direction, connection_cookie(0xBEEF_0000 + i, &tuple));
    c.sport_is_ephemeral = ports.classify(tuple.sport);
    c.monotonic.sent_bytes = 100 + i;
    c.monotonic.recv_bytes = 200 + i;
    c.monotonic.tcp_established = 1;
    c.cgroup_id = if i.is_multiple_of(2) { cgroup_id } else { 0 };
    c
}

#[derive(Default, Clone, Copy)]
struct Totals {
    enrich: Duration,
    pipeline: Duration,
    calls: u64,
    conns: u64,
}

struct Rig {
    enrich: Enrichers,
    state: NetworkState,
    client: ClientId,
    active: Vec<ConnectionStats>,
    netns: HashSet<u32>,
    now: u64,
    totals: Totals,
}

impl Rig {
    fn new(size: u64, config: &EnrichConfig) -> Result<Self, String> {
        let netns = std::fs::metadata("/proc/self/ns/net")
            .map(|m| m.ino() as u32)
            .map_err(|e| e.to_string())?;
        let cgroup_id = own_cgroup_id();
        let state = NetworkState::new(StateConfig::default()).map_err(|e| e.to_string())?;
        let client = ClientId::new("bench").map_err(|e| e.to_string())?;
        state
            .register_client(&client, 0)
            .map_err(|e| e.to_string())?;
        let mut rig = Self {
            enrich: Enrichers::start(config),
            state,
            client,
            active: (0..size).map(|i| connection(i, cgroup_id, netns)).collect(),
            netns: HashSet::from([netns]),
            now: 0,
            totals: Totals::default(),
        };
        rig.call(); // warms every cache
        rig.totals = Totals::default();
        Ok(rig)
    }

    /// One client call: enrich (before and after), state pipeline, timed apart.
    fn call(&mut self) -> Duration {
        self.now += 30_000_000_000;
        for c in &mut self.active {
            c.monotonic.sent_bytes += 10;
            c.last_update_ns = self.now;
        }
        let mut active = self.active.clone();
        let started = Instant::now();
        self.enrich.sync(&self.netns);
        self.enrich.attach_open(&mut active);
        let attached = started.elapsed();

        let started = Instant::now();
        let delta = self.state.get_delta(
            &self.client,
            self.now,
            active,
            DnsStatsBatch::default(),
            UsmStats::default(),
            &CounterSet::default(),
        );
        let pipeline = started.elapsed();
        let Ok(mut delta) = delta else {
            return attached + pipeline;
        };

        let started = Instant::now();
        self.enrich.resolve(&mut delta.conns);
        let resolved = started.elapsed();
        black_box(&delta);

        self.totals.enrich += attached + resolved;
        self.totals.pipeline += pipeline;
        self.totals.calls += 1;
        self.totals.conns += delta.conns.len() as u64;
        attached + resolved
    }
}

/// Every enrichment, then each alone (what each costs), then none (the seam's own passes).
fn configs() -> [(&'static str, EnrichConfig); 5] {
    let none = {
        let mut c = EnrichConfig::default();
        c.containers.enabled = false;
        c.conntrack.enabled = false;
        c.routes.enabled = false;
        c
    };
    let only = |pick: fn(&mut EnrichConfig)| {
        let mut c = none.clone();
        pick(&mut c);
        c
    };
    [
        ("all", EnrichConfig::default()),
        ("containers", only(|c| c.containers.enabled = true)),
        ("conntrack", only(|c| c.conntrack.enabled = true)),
        ("routes", only(|c| c.routes.enabled = true)),
        // The floor: the seam's passes over the connections with nothing enabled.
        ("none", none),
    ]
}

fn bench_resolve(c: &mut Criterion) {
    for (size, label) in [(10_000u64, "10k"), (100_000, "100k")] {
        for (which, config) in configs() {
            bench_one(c, size, label, which, &config);
        }
    }
}

fn bench_one(c: &mut Criterion, size: u64, label: &str, which: &str, config: &EnrichConfig) {
    {
        let name = format!("resolve/{label}_conns/{which}");
        let rig = match Rig::new(size, config) {
            Ok(rig) => RefCell::new(rig),
            Err(err) => {
                eprintln!("{name}: cannot set up: {err}");
                return;
            }
        };
        let mut group = c.benchmark_group("resolve");
        group.sample_size(10);
        group.warm_up_time(Duration::from_millis(500));
        group.measurement_time(Duration::from_secs(if size >= 100_000 { 4 } else { 2 }));
        group.bench_function(format!("{label}_conns/{which}"), |b| {
            b.iter_custom(|iters| {
                let mut rig = rig.borrow_mut();
                (0..iters).map(|_| rig.call()).sum()
            })
        });
        group.finish();
        report(&name, &rig.borrow());
    }
}

fn report(name: &str, rig: &Rig) {
    let t = rig.totals;
    if t.calls == 0 {
        return; // filtered out on the command line
    }
    let conns = t.conns.max(1) as f64;
    let enrich_ns = t.enrich.as_nanos() as f64 / conns;
    let pipeline_ns = t.pipeline.as_nanos() as f64 / conns;
    let share = enrich_ns / pipeline_ns.max(f64::MIN_POSITIVE);
    let mut counters = Vec::new();
    rig.enrich.collect(&mut counters);
    let counters = counters
        .iter()
        .filter(|s| s.value > 0)
        .map(|s| format!("{}={}", s.info.name, s.value))
        .collect::<Vec<_>>()
        .join(" ");
    println!(
        "{name}: enrichments {enrich_ns:.1} ns/conn per call, state pipeline {pipeline_ns:.1} \
         ns/conn, enrichments / pipeline = {:.1} % (target for all: <= 20 %); counters: \
         {counters}",
        share * 100.0
    );
    if let Some(path) = std::env::var_os(tracer_benches::summary::SUMMARY_ENV) {
        let fields = [
            ("ns_per_conn", number(enrich_ns)),
            ("floor_ns_per_conn", number(pipeline_ns)),
            ("ratio", number(share)),
        ];
        if let Err(err) = upsert_fields(std::path::Path::new(&path), name, fields) {
            eprintln!("{name}: cannot write the bench summary: {err}");
        }
    }
}

criterion_group!(benches, bench_resolve);
criterion_main!(benches);
