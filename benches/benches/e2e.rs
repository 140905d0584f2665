//! `Tracer::get_active_connections` end to end with 10k and 100k real entries in the kernel's
//! connection map (privileged: needs root to load eBPF; without it, or when the tracer cannot
//! load, the benchmark prints a SKIP line and writes no rows).
//!
//! The entries are real connections: connected UDP sockets, each sending one 1-byte datagram
//! to a sink socket that never reads: one map entry per socket. A process may hold only as many
//! sockets as its descriptor limit allows, and root in a container may lack the
//! `CAP_SYS_RESOURCE` needed to raise the hard limit (this host: 20 000), so the sockets are
//! held by helper processes (this binary, started with `TRACER_E2E_HOLDER` set), each holding
//! up to its hard limit minus a margin (at most 25 000) bound to its own loopback address
//! (127.77.0.x, so that the 28k-port ephemeral range is no limit either). They open their
//! sockets in parallel, report `ready`, and keep them open until their stdin closes. 10k
//! sockets are opened and measured, then 90k more; the tracer is dropped before they close.
//!
//! The tracer is configured as a host with that many connections would be: the kernel map and
//! the per-client limit hold 262 144, and the UDP idle timeouts are one hour (idle one-way UDP
//! flows would otherwise expire after the conntrack timeout of 30 s, during the run).
//!
//! For each size, a new client's first call reports every connection (timed once, printed and
//! written as `first_call_ms`); then criterion times the steady state: calls of the same client
//! with nothing moving in between (every entry is still read and decoded, and the pipeline
//! compares it with the client's previous snapshot). The row `get_active_connections/<size>`
//! gives the steady state's mean ms per call (wall time of the call) split with
//! `Tracer::last_call_timings` into the kernel map read (`map_read_ms`), expiry, decoding,
//! filters and the enrichments (`enrich_ms`), the state pipeline (`pipeline_ms`), the sources
//! (`sources_ms`: packet capture, DNS) and draining closed connections (`flush_ms`), the
//! entries read (the smallest count seen, every call is checked to read at least the size) and
//! whether the map was read with batched lookups. `cpu_ms_per_call` is the calling thread's
//! CPU time per call (the whole call runs in it): on this shared 2-core machine, wall times
//! can double when other jobs run; CPU time moves much less.
//!
//! The map read's floor, in the same run: a bare batched read of the same kernel map
//! (`BPF_MAP_LOOKUP_BATCH` in chunks of 4096 into buffers reused across reads, the entries
//! neither copied out nor looked at), opened by id from this process's descriptors. After
//! criterion's steady state, [`FLOOR_PAIRS`] pairs (one call, one bare read) alternate, and the
//! medians give `floor_map_read_ms`, `pair_map_read_ms` and `map_read_to_floor` (the issue's
//! target: at most 1.5).

use std::{
    cell::RefCell,
    hint::black_box,
    io::{self, BufRead, BufReader, Write},
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use criterion::{Criterion, SamplingMode, criterion_group};
use serde_json::Value;
use tracer::{BackendChoice, CallTimings, Config, Tracer};
use tracer_benches::{
    privileged::{Loaded, bench_mode, euid, median, nofile_limits, raise_nofile, thread_cpu_time},
    summary::{number, upsert_fields_from_env},
};
use tracer_common::{
    conn::{ConnKey, ConnStats},
    names::MAP_CONNS,
};

const SIZES: [(usize, &str); 2] = [(10_000, "10k"), (100_000, "100k")];
/// Alternating (call, bare read) pairs for the map read's floor.
const FLOOR_PAIRS: usize = 30;
/// The target: the map read takes at most this many times the bare read.
const TARGET_TO_FLOOR: f64 = 1.5;
/// Entries per bare batch: the tracer's (`tracer::kernel::map_reader`).
const FLOOR_BATCH: u32 = 4096;
/// Kernel map capacity and per-client limit.
const CAPACITY: u32 = 1 << 18;
const FIRST_ADDRESS: Ipv4Addr = Ipv4Addr::new(127, 77, 0, 1);

/// Set in the environment of a holder process: `<count> <local address> <sink address>`.
const HOLDER_ENV: &str = "TRACER_E2E_HOLDER";

/// A holder process's body: opens `count` connected UDP sockets bound to `local`, each sending
/// one datagram to `sink`, prints `ready`, and keeps them open until stdin closes.
fn hold(spec: &str) -> Result<(), String> {
    let mut words = spec.split_whitespace();
    let (Some(count), Some(local), Some(sink)) = (words.next(), words.next(), words.next()) else {
        return Err(format!("bad {HOLDER_ENV}: {spec:?}"));
    };
    let count: usize = count.parse().map_err(|e| format!("count {count:?}: {e}"))?;
    let local: Ipv4Addr = local
        .parse()
        .map_err(|e| format!("address {local:?}: {e}"))?;
    let sink: SocketAddr = sink.parse().map_err(|e| format!("sink {sink:?}: {e}"))?;
    let limit = raise_nofile(count as u64 + FD_MARGIN).map_err(|e| e.to_string())?;
    if limit < count as u64 + FD_MARGIN {
        return Err(format!(
            "descriptor limit {limit} is too low for {count} sockets"
        ));
    }
    let mut sockets = Vec::with_capacity(count);
    for _ in 0..count {
        let open = || -> io::Result<UdpSocket> {
            let socket = UdpSocket::bind((local, 0))?;
            socket.connect(sink)?;
            socket.send(&[1])?;
            Ok(socket)
        };
        let socket = open().map_err(|e| format!("socket {} on {local}: {e}", sockets.len()))?;
        sockets.push(socket);
    }
    println!("ready");
    io::stdout().flush().map_err(|e| e.to_string())?;
    // Until the parent closes our stdin (or dies).
    let _ = io::copy(&mut io::stdin(), &mut io::sink());
    drop(sockets);
    Ok(())
}

/// Descriptors a holder keeps free for everything else.
const FD_MARGIN: u64 = 64;
/// Most sockets per holder (each holder has one local address: stay below the 28k ephemeral
/// ports).
const MAX_PER_HOLDER: u64 = 25_000;

struct Holder {
    child: Child,
    count: usize,
}

/// The connections: helper processes holding connected UDP sockets that each sent one
/// datagram to `sink`.
struct Connections {
    sink: UdpSocket,
    holders: Vec<Holder>,
    per_holder: usize,
}

impl Connections {
    fn new() -> io::Result<Self> {
        // Holders inherit the hard limit and raise their soft limit to it.
        let (_, hard) = nofile_limits()?;
        let per_holder = hard.saturating_sub(FD_MARGIN).min(MAX_PER_HOLDER) as usize;
        if per_holder == 0 {
            return Err(io::Error::other(format!(
                "descriptor hard limit {hard} is too low"
            )));
        }
        Ok(Self {
            sink: UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?,
            holders: Vec::new(),
            per_holder,
        })
    }

    fn count(&self) -> usize {
        self.holders.iter().map(|h| h.count).sum()
    }

    /// Starts holders until they hold `count` sockets in all, and waits until they are ready.
    fn grow(&mut self, count: usize) -> io::Result<()> {
        let exe = std::env::current_exe()?;
        let sink = self.sink.local_addr()?;
        let first_new = self.holders.len();
        while self.count() < count {
            let n = self.per_holder.min(count - self.count());
            let index = u32::try_from(self.holders.len()).unwrap_or(u32::MAX);
            let local = Ipv4Addr::from(u32::from(FIRST_ADDRESS).saturating_add(index));
            let child = Command::new(&exe)
                .env(HOLDER_ENV, format!("{n} {local} {sink}"))
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()?;
            self.holders.push(Holder { child, count: n });
        }
        for holder in self.holders.iter_mut().skip(first_new) {
            let mut line = String::new();
            if let Some(stdout) = holder.child.stdout.as_mut() {
                BufReader::new(stdout).read_line(&mut line)?;
            }
            if line.trim() != "ready" {
                let status = holder.child.wait()?;
                return Err(io::Error::other(format!(
                    "a holder of {} sockets did not get ready: {:?} ({status})",
                    holder.count,
                    line.trim()
                )));
            }
        }
        Ok(())
    }
}

impl Drop for Connections {
    fn drop(&mut self) {
        for holder in &mut self.holders {
            drop(holder.child.stdin.take());
        }
        for holder in &mut self.holders {
            let _ = holder.child.wait();
        }
    }
}

/// Steady-state calls of one client, and where their time went.
struct Rig<'a> {
    tracer: &'a Tracer,
    client: String,
    calls: u32,
    wall: Duration,
    /// CPU time of the calling thread (the whole call runs in it).
    cpu: Duration,
    split: CallTimings,
    min_entries: usize,
    all_batched: bool,
    failure: Option<tracer::Error>,
}

impl<'a> Rig<'a> {
    fn new(tracer: &'a Tracer, client: String) -> Self {
        Self {
            tracer,
            client,
            calls: 0,
            wall: Duration::ZERO,
            cpu: Duration::ZERO,
            split: CallTimings::default(),
            min_entries: usize::MAX,
            all_batched: true,
            failure: None,
        }
    }

    fn call(&mut self) -> Duration {
        if self.failure.is_some() {
            return Duration::from_nanos(1);
        }
        let cpu = thread_cpu_time();
        let start = Instant::now();
        let result = self.tracer.get_active_connections(&self.client);
        let elapsed = start.elapsed();
        let cpu = thread_cpu_time().saturating_sub(cpu);
        match result {
            Ok(connections) => {
                drop(black_box(connections));
                let t = self.tracer.last_call_timings();
                self.calls += 1;
                self.wall += elapsed;
                self.cpu += cpu;
                self.split.flush += t.flush;
                self.split.map_read += t.map_read;
                self.split.pipeline += t.pipeline;
                self.split.enrich += t.enrich;
                self.split.sources += t.sources;
                self.min_entries = self.min_entries.min(t.entries);
                self.all_batched &= t.batched;
            }
            Err(err) => self.failure = Some(err),
        }
        elapsed
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn e2e(c: &mut Criterion) {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!("e2e: Linux {}, euid {}", release.trim(), euid());
    if !bench_mode() {
        println!("e2e: SKIP: not in --bench mode (criterion's test or list mode); no rows written");
        return;
    }
    let mut config = Config {
        backend: BackendChoice::Auto,
        max_tracked_connections: CAPACITY,
        ..Config::default()
    };
    config.state.max_tracked_per_client = CAPACITY as usize;
    config.expiry.udp = Duration::from_secs(3600);
    config.expiry.udp_stream = Duration::from_secs(3600);
    let loaded = match Loaded::new(config) {
        Ok(loaded) => loaded,
        Err(err) => {
            let root = if euid() == 0 { "" } else { "not root; " };
            println!("e2e: SKIP: {root}the tracer does not load: {err:?}; no rows written");
            return;
        }
    };
    let tracer = &loaded.tracer;
    println!(
        "e2e: backend {} ({})",
        tracer.backend(),
        tracer.plan().reason
    );
    let mut connections = match Connections::new() {
        Ok(connections) => connections,
        Err(err) => {
            println!("e2e: SKIP: cannot set up the connections: {err}; no rows written");
            return;
        }
    };
    for (size, label) in SIZES {
        let name = format!("get_active_connections/{label}");
        let start = Instant::now();
        if let Err(err) = connections.grow(size) {
            println!("{name}: cannot open {size} sockets: {err}; no row written");
            break;
        }
        println!(
            "{name}: {} connected UDP sockets open in {} holder processes ({:.2} s to open the \
             new ones)",
            connections.count(),
            connections.holders.len(),
            start.elapsed().as_secs_f64()
        );
        let rig = RefCell::new(Rig::new(tracer, format!("e2e-{label}")));
        let first = first_call(&name, &rig.borrow(), size);
        let Some(first) = first else {
            continue;
        };

        let mut group = c.benchmark_group("get_active_connections");
        group.warm_up_time(Duration::from_millis(500));
        group.sampling_mode(SamplingMode::Flat);
        group.sample_size(10);
        group.measurement_time(Duration::from_secs(if size >= 100_000 { 4 } else { 2 }));
        group.bench_function(label, |b| {
            b.iter_custom(|iters| {
                let mut rig = rig.borrow_mut();
                (0..iters).map(|_| rig.call()).sum()
            })
        });
        group.finish();
        report(&name, &rig.borrow(), size, first);
        floor(&name, &mut rig.borrow_mut(), size);
    }
    let left = loaded.unload();
    if left > 0 {
        println!("e2e: warning: {left} programs still loaded 10 s after dropping the tracer");
    }
    drop(connections);
}

/// The client's first call (every connection is new to it): prints it, checks that the map
/// holds at least `size` entries, and returns its duration in ms.
fn first_call(name: &str, rig: &Rig<'_>, size: usize) -> Option<f64> {
    let start = Instant::now();
    let result = rig.tracer.get_active_connections(&rig.client);
    let elapsed = start.elapsed();
    let connections = match result {
        Ok(connections) => connections,
        Err(err) => {
            println!("{name}: first call failed: {err:?}; no row written");
            return None;
        }
    };
    let t = rig.tracer.last_call_timings();
    println!(
        "{name}: first call of a new client: {:.2} ms (map read {:.2} ms, pipeline {:.2} ms, \
         flush {:.2} ms), {} entries read{}, {} connections reported",
        ms(elapsed),
        ms(t.map_read),
        ms(t.pipeline),
        ms(t.flush),
        t.entries,
        if t.batched { " (batched)" } else { "" },
        connections.conns.len()
    );
    if t.entries < size {
        let counters = rig.tracer.counters().map(|c| {
            c.iter()
                .filter(|s| s.value > 0)
                .map(|s| format!("{}={}", s.info.name, s.value))
                .collect::<Vec<_>>()
                .join(" ")
        });
        println!(
            "{name}: only {} entries in the kernel map, expected at least {size} (counters: \
             {counters:?}); no row written",
            t.entries
        );
        return None;
    }
    Some(ms(elapsed))
}

fn report(name: &str, rig: &Rig<'_>, size: usize, first_call_ms: f64) {
    if let Some(err) = &rig.failure {
        println!("{name}: a call failed: {err:?}; no row written");
        return;
    }
    if rig.calls == 0 {
        return; // filtered out on the command line
    }
    if rig.min_entries < size {
        println!(
            "{name}: a call read only {} entries, expected at least {size}; no row written",
            rig.min_entries
        );
        return;
    }
    let per_call = |d: Duration| ms(d) / f64::from(rig.calls);
    let (total, map_read) = (per_call(rig.wall), per_call(rig.split.map_read));
    let cpu = per_call(rig.cpu);
    let (pipeline, flush) = (per_call(rig.split.pipeline), per_call(rig.split.flush));
    let (enrich, sources) = (per_call(rig.split.enrich), per_call(rig.split.sources));
    println!(
        "{name}: steady state: {total:.3} ms per call = map read {map_read:.3} ms + expiry, \
         decoding and enrichments {enrich:.3} ms + pipeline {pipeline:.3} ms + sources \
         {sources:.3} ms + flush {flush:.3} ms (+ {:.3} ms outside the split), {} entries, \
         {}batched, {} calls; CPU time of the calling thread {cpu:.3} ms per call; first call \
         {first_call_ms:.3} ms",
        total - map_read - enrich - pipeline - sources - flush,
        rig.min_entries,
        if rig.all_batched { "" } else { "not " },
        rig.calls
    );
    let fields = [
        ("ms_per_call", number(total)),
        ("map_read_ms", number(map_read)),
        ("pipeline_ms", number(pipeline)),
        ("enrich_ms", number(enrich)),
        ("sources_ms", number(sources)),
        ("flush_ms", number(flush)),
        ("cpu_ms_per_call", number(cpu)),
        ("entries", Value::from(rig.min_entries)),
        ("batched", Value::from(rig.all_batched)),
        ("first_call_ms", number(first_call_ms)),
        ("calls", Value::from(rig.calls)),
        ("backend", Value::from(rig.tracer.backend().name())),
    ];
    if let Err(err) = upsert_fields_from_env(name, fields) {
        eprintln!("{name}: cannot write the bench summary: {err}");
    }
}

/// `union bpf_attr` for `BPF_MAP_LOOKUP_BATCH`.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// The bare read: the map's descriptor and reused buffers.
struct BareRead {
    map: aya::maps::MapData,
    keys: Vec<ConnKey>,
    values: Vec<ConnStats>,
}

impl BareRead {
    /// Opens this process's `NT_CONNS` map (the loaded tracer's) by id.
    fn open() -> Result<Self, String> {
        let own: std::collections::BTreeSet<u32> = std::fs::read_dir("/proc/self/fdinfo")
            .map_err(|e| e.to_string())?
            .filter_map(Result::ok)
            .filter_map(|entry| std::fs::read_to_string(entry.path()).ok())
            .filter_map(|info| {
                info.lines()
                    .find_map(|line| line.strip_prefix("map_id:"))
                    .and_then(|id| id.trim().parse().ok())
            })
            .collect();
        let id = aya::maps::loaded_maps()
            .filter_map(Result::ok)
            .find(|m| own.contains(&m.id()) && m.name_as_str() == Some(MAP_CONNS))
            .map(|m| m.id())
            .ok_or_else(|| format!("no {MAP_CONNS} map among this process's descriptors"))?;
        let map = aya::maps::MapData::from_id(id).map_err(|e| e.to_string())?;
        Ok(Self {
            map,
            keys: vec![ConnKey::default(); FLOOR_BATCH as usize],
            values: vec![ConnStats::default(); FLOOR_BATCH as usize],
        })
    }

    /// Reads every entry once; returns how many.
    fn read(&mut self) -> io::Result<usize> {
        use std::os::fd::{AsFd, AsRawFd};
        let fd = self.map.fd().as_fd().as_raw_fd() as u32;
        let (mut cursor_in, mut cursor_out, mut first, mut entries) = (0u64, 0u64, true, 0);
        loop {
            let mut attr = BatchAttr {
                in_batch: if first {
                    0
                } else {
                    (&raw const cursor_in) as u64
                },
                out_batch: (&raw mut cursor_out) as u64,
                keys: self.keys.as_mut_ptr() as u64,
                values: self.values.as_mut_ptr() as u64,
                count: FLOOR_BATCH,
                map_fd: fd,
                ..BatchAttr::default()
            };
            // SAFETY: the buffers hold `count` keys and values and outlive the call.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_bpf,
                    24, // BPF_MAP_LOOKUP_BATCH
                    &raw mut attr,
                    std::mem::size_of::<BatchAttr>(),
                )
            };
            entries += attr.count as usize;
            if rc < 0 {
                let err = io::Error::last_os_error();
                return match err.raw_os_error() {
                    Some(libc::ENOENT) => Ok(entries),
                    _ => Err(err),
                };
            }
            cursor_in = cursor_out;
            first = false;
        }
    }
}

/// The map read against its floor, in alternating pairs; prints and writes
/// `get_active_connections/<size>/floor` and the ratio into the size's row.
fn floor(name: &str, rig: &mut Rig<'_>, size: usize) {
    if rig.failure.is_some() || rig.calls == 0 {
        return;
    }
    let mut bare = match BareRead::open() {
        Ok(bare) => bare,
        Err(err) => {
            println!("{name}: no floor: {err}");
            return;
        }
    };
    let (mut map_reads, mut floors) = (Vec::new(), Vec::new());
    for _ in 0..FLOOR_PAIRS {
        rig.call();
        map_reads.push(ms(rig.tracer.last_call_timings().map_read));
        let start = Instant::now();
        match bare.read() {
            Ok(entries) if entries >= size => floors.push(ms(start.elapsed())),
            Ok(entries) => {
                println!(
                    "{name}: the bare read saw {entries} entries, fewer than {size}: no floor"
                );
                return;
            }
            Err(err) => {
                println!("{name}: the bare read failed: {err}: no floor");
                return;
            }
        }
    }
    let (map_read, floor) = (median(&map_reads), median(&floors));
    let ratio = map_read / floor;
    println!(
        "{name}: map read {map_read:.3} ms against a bare batched read of the same map \
         {floor:.3} ms (medians of {FLOOR_PAIRS} alternating pairs): {ratio:.2}x [target <= \
         {TARGET_TO_FLOOR}x {}]",
        if ratio <= TARGET_TO_FLOOR {
            "met"
        } else {
            "missed"
        }
    );
    let fields = [
        ("floor_map_read_ms", number(floor)),
        ("pair_map_read_ms", number(map_read)),
        ("map_read_to_floor", number(ratio)),
    ];
    if let Err(err) = upsert_fields_from_env(name, fields) {
        eprintln!("{name}: cannot write the bench summary: {err}");
    }
    let row = format!("{name}/floor");
    if let Err(err) = upsert_fields_from_env(&row, [("map_read_ms", number(floor))]) {
        eprintln!("{row}: cannot write the bench summary: {err}");
    }
}

criterion_group!(benches, e2e);

/// `criterion_main!`, except that a holder process (see [`hold`]) only holds its sockets.
fn main() {
    if let Ok(spec) = std::env::var(HOLDER_ENV) {
        if let Err(err) = hold(&spec) {
            println!("error: {err}");
            std::process::exit(1);
        }
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
