//! Userspace memory of the state pipeline under churn (issue 8, item 7): 3 clients, 10k and
//! 100k active connections with counters moving, 10% of them replaced by new connections
//! (fresh cookies) every interval, and 50k connections closed per interval (the replaced ones
//! plus short-lived ones never seen active), each client calling `get_delta` every interval.
//! The identities seen grow by 50k per interval while the active set stays at N.
//!
//! Measured with a counting global allocator (live and peak heap bytes, exact) and from
//! `/proc/self/status` (VmRSS, and VmHWM reset through `/proc/self/clear_refs`: what a user
//! sees). Each row runs in a child process of its own, so that one row's freed-but-kept
//! allocator pages do not show in the next row's RSS.
//!
//! Phases of a row: `churn` intervals (the first `WARM_UP` are warm-up), then `QUIET`
//! intervals with no closed connection, then `churn` intervals again. Reported:
//! - peak heap: the highest live heap during any interval, minus the baseline (the heap before
//!   `NetworkState` was created, which holds the simulated kernel map);
//! - bytes per tracked connection = peak heap / (active + closed per interval), all 3 clients
//!   and everything transient included (the active list of each call, which becomes its
//!   delta; the decoded closed batch; scratch). Target: at most 1 KiB;
//! - the same from RSS (VmHWM minus the RSS before `NetworkState` was created);
//! - plateau: repeated churn does not grow it: the second churn phase exceeds neither the
//!   first phase's peak nor its retained heap by more than 1%, and the retained heap is flat
//!   across the second phase. Growth after warm-up and the interval at which the retained heap
//!   last rose are printed beside it (hash tables reach their churn size late: see below);
//! - the state's own accounting (`shared_state_bytes` + `client_state_bytes`), sampled after
//!   the closed batch is stored, against the allocator's retained bytes at the same moment;
//! - an estimate of what `Tracer` adds on top per connection: its map-read buffer of
//!   `(ConnKey, ConnStats)` pairs (kept at its peak capacity, up to twice the entries read) and
//!   the ring drain buffer of `ClosedConn` records (bounded by one drain; counted as if one
//!   drain held the whole interval's closes), from `size_of`.
//!
//! Run: `cargo bench -p tracer-benches --bench memory` (or `cargo xtask bench -- --bench
//! memory`). An argument filters rows by name (e.g. `100k`).

use std::{
    alloc::{GlobalAlloc, Layout, System},
    process::Command,
    sync::atomic::{AtomicUsize, Ordering},
};

use serde_json::{Value, json};
use tracer::{
    model::{ConnectionStats, CounterSet, DnsStatsBatch, UsmStats},
    state::{ClientId, NetworkState, StateConfig},
};
use tracer_benches::{
    data::Churn,
    summary::{number, upsert_fields_from_env},
};
use tracer_common::conn::{ClosedConn, ConnKey, ConnStats};

/// Counts live heap bytes and their peak (since the last [`reset_peak`]).
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(bytes: usize) {
    let now = LIVE.fetch_add(bytes, Ordering::Relaxed) + bytes;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

fn shrank(bytes: usize) {
    LIVE.fetch_sub(bytes, Ordering::Relaxed);
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged; the
// counters are only bookkeeping.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded contract.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            grew(layout.size());
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded contract.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            grew(layout.size());
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded contract.
        unsafe { System.dealloc(ptr, layout) };
        shrank(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded contract.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            // Counted as allocate-then-free: the old and new blocks may coexist in a move.
            grew(new_size);
            shrank(layout.size());
        }
        new
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live() -> usize {
    LIVE.load(Ordering::Relaxed)
}

fn peak() -> usize {
    PEAK.load(Ordering::Relaxed)
}

fn reset_peak() {
    PEAK.store(live(), Ordering::Relaxed);
}

/// VmRSS and VmHWM in bytes (0 if unreadable).
fn rss() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .map_or(0, |kib| kib * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Resets VmHWM to the current RSS (Linux 4.0+); false if the kernel refused.
fn reset_hwm() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

const CLIENTS: usize = 3;
const CLOSED_PER_INTERVAL: usize = 50_000;
/// Intervals per churn phase (`TRACER_MEMORY_BENCH_INTERVALS` overrides, at least 2 × WARM_UP).
const CHURN_INTERVALS: usize = 30;
const WARM_UP: usize = 10;
const QUIET: usize = 5;
const TARGET_BYTES_PER_CONN: f64 = 1024.0;
const INTERVAL_NS: u64 = 10_000_000_000;

#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    /// Highest live heap during the interval, minus the baseline.
    peak: usize,
    /// Live heap after the interval (every delta dropped), minus the baseline.
    retained: usize,
    /// VmHWM during the interval (reset at its start) and VmRSS after it.
    hwm: u64,
    rss: u64,
}

struct Rig {
    state: NetworkState,
    ids: Vec<ClientId>,
    churn: Churn,
    baseline: usize,
    now: u64,
    /// The state's own accounting and the allocator's retained bytes, sampled right after a
    /// closed batch was stored (the state then holds everything it holds between calls).
    accounted: usize,
    measured: usize,
    reported: usize,
}

impl Rig {
    fn interval(&mut self, closed_per_interval: usize) -> Result<Sample, String> {
        reset_peak();
        let hwm_reset = reset_hwm();
        let closed = if closed_per_interval == 0 {
            Vec::new()
        } else {
            self.churn.advance()
        };
        self.now += INTERVAL_NS;
        // Moved in, as `Tracer` does with its decoded batch.
        self.state.store_closed_batch(closed);
        let clients: usize = self
            .ids
            .iter()
            .filter_map(|id| self.state.client_state_bytes(id))
            .sum();
        self.accounted = self.state.shared_state_bytes() + clients;
        self.measured = live().saturating_sub(self.baseline);
        for id in &self.ids {
            let active: Vec<ConnectionStats> = self.churn.read_map();
            let delta = self
                .state
                .get_delta(
                    id,
                    self.now,
                    active,
                    DnsStatsBatch::default(),
                    UsmStats::default(),
                    &CounterSet::default(),
                )
                .map_err(|e| e.to_string())?;
            self.reported = delta.conns.len();
            drop(delta);
        }
        let (rss, hwm) = rss();
        Ok(Sample {
            peak: peak().saturating_sub(self.baseline),
            retained: live().saturating_sub(self.baseline),
            hwm: if hwm_reset { hwm } else { 0 },
            rss,
        })
    }
}

fn max_by(samples: &[Sample], f: impl Fn(&Sample) -> u64) -> u64 {
    samples.iter().map(f).max().unwrap_or(0)
}

fn growth(late: u64, early: u64) -> f64 {
    late as f64 / early.max(1) as f64 - 1.0
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn run_row(active: usize) -> Result<(), String> {
    let label = if active >= 1000 && active.is_multiple_of(1000) {
        format!("{}k", active / 1000)
    } else {
        active.to_string()
    };
    let name = format!(
        "memory/{label}_active/{}k_closed/{CLIENTS}_clients",
        CLOSED_PER_INTERVAL / 1000
    );
    let churn = Churn::new(active, active / 10, CLOSED_PER_INTERVAL);
    let (rss_baseline, _) = rss();
    let baseline = live();
    let state = NetworkState::new(StateConfig::default()).map_err(|e| e.to_string())?;
    let ids = (0..CLIENTS)
        .map(|c| ClientId::new(&format!("mem-{c}")))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    for id in &ids {
        state.register_client(id, 0).map_err(|e| e.to_string())?;
    }
    let mut rig = Rig {
        state,
        ids,
        churn,
        baseline,
        now: 0,
        accounted: 0,
        measured: 0,
        reported: 0,
    };

    let churn_intervals = std::env::var("TRACER_MEMORY_BENCH_INTERVALS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(CHURN_INTERVALS)
        .max(2 * WARM_UP);
    let mut first = Vec::new();
    for _ in 0..churn_intervals {
        first.push(rig.interval(CLOSED_PER_INTERVAL)?);
    }
    let mut quiet = Vec::new();
    for _ in 0..QUIET {
        quiet.push(rig.interval(0)?);
    }
    let mut second = Vec::new();
    for _ in 0..churn_intervals {
        second.push(rig.interval(CLOSED_PER_INTERVAL)?);
    }
    let (accounted, measured) = (rig.accounted, rig.measured);
    // Where the retained bytes are, by the state's own accounting (after the last interval).
    let per_client: Vec<String> = rig
        .ids
        .iter()
        .map(|id| {
            let bytes = rig.state.client_state_bytes(id).unwrap_or(0) as u64;
            let tracked = rig.state.client_tracked(id).unwrap_or(0);
            format!("{:.1} MiB for {tracked}", mib(bytes))
        })
        .collect();
    let breakdown = format!(
        "per-client snapshots [{}], shared (closed store + scratch) {:.1} MiB",
        per_client.join(", "),
        mib(rig.state.shared_state_bytes() as u64)
    );

    let warm = first.get(..WARM_UP).unwrap_or(&[]);
    let after_warm = first.get(WARM_UP..).unwrap_or(&[]);
    let peak_of = |s: &[Sample]| max_by(s, |x| x.peak as u64);
    let retained_of = |s: &[Sample]| max_by(s, |x| x.retained as u64);
    let hwm_of = |s: &[Sample]| max_by(s, |x| x.hwm);
    let all: Vec<Sample> = first.iter().chain(&second).copied().collect();

    let tracked = (active + CLOSED_PER_INTERVAL) as f64;
    let peak_heap = peak_of(&all);
    let bytes_per_conn = peak_heap as f64 / tracked;
    let retained = retained_of(&all);
    let peak_rss = hwm_of(&all);
    let rss_per_conn = peak_rss.saturating_sub(rss_baseline) as f64 / tracked;
    let quiet_retained = quiet.last().map_or(0, |s| s.retained as u64);
    let final_rss = second.last().map_or(0, |s| s.rss);

    // Plateau: repeated churn does not grow it: the second churn phase (after a quiet one)
    // exceeds neither the first phase's peak nor its retained heap, and the retained heap is
    // flat across the second phase. Growth after warm-up is reported beside it, with the
    // interval at which the retained heap last rose (tables reaching their churn size).
    let peak_growth = growth(peak_of(after_warm), peak_of(warm));
    let retained_growth = growth(retained_of(after_warm), retained_of(warm));
    let repeat_peak_growth = growth(peak_of(&second), peak_of(&first));
    let repeat_retained_growth = growth(retained_of(&second), retained_of(&first));
    let second_phase_growth = growth(
        second.last().map_or(0, |s| s.retained as u64),
        second.first().map_or(0, |s| s.retained as u64),
    );
    let rss_growth = growth(hwm_of(&second), hwm_of(&first));
    let plateau = [
        repeat_peak_growth,
        repeat_retained_growth,
        second_phase_growth,
    ]
    .iter()
    .all(|&g| g <= 0.01);
    let mut settled_at = 0;
    let mut high = 0usize;
    for (i, sample) in first.iter().enumerate() {
        if sample.retained as f64 > high as f64 * 1.01 {
            settled_at = i + 1;
        }
        high = high.max(sample.retained);
    }
    let meets = bytes_per_conn <= TARGET_BYTES_PER_CONN;

    // What `Tracer` holds beyond the state pipeline, per connection, from sizes.
    let read_pair = std::mem::size_of::<(ConnKey, ConnStats)>();
    let ring_record = std::mem::size_of::<ClosedConn>();
    let tracer_extra =
        (2 * read_pair * active + ring_record * CLOSED_PER_INTERVAL) as f64 / tracked;

    println!(
        "{name}: peak heap {:.1} MiB = {bytes_per_conn:.0} B/conn (target {TARGET_BYTES_PER_CONN:.0}: {}), \
         retained between intervals {:.1} MiB ({:.0} B/conn), peak RSS {:.1} MiB above a {:.1} MiB baseline = {rss_per_conn:.0} B/conn, \
         VmRSS at the end {:.1} MiB, plateau {} (second churn phase vs first: peak {:+.2}%, retained {:+.2}%, VmHWM {:+.2}%; across the second phase {:+.2}%; after warm-up: peak {:+.2}%, retained {:+.2}%, last rise at interval {settled_at}), \
         after {QUIET} quiet intervals {:.1} MiB retained; state accounting {:.1} MiB vs allocator {:.1} MiB ({:.2}); \
         {} identities over {} intervals, {} conns in the last delta; \
         Tracer adds about {tracer_extra:.0} B/conn (read buffer {read_pair} B x 2 per active, ring record {ring_record} B per closed); \
         sizes: ConnectionStats {} B",
        mib(peak_heap),
        if meets { "met" } else { "NOT met" },
        mib(retained),
        retained as f64 / tracked,
        mib(peak_rss.saturating_sub(rss_baseline)),
        mib(rss_baseline),
        mib(final_rss),
        if plateau { "yes" } else { "NO" },
        repeat_peak_growth * 100.0,
        repeat_retained_growth * 100.0,
        rss_growth * 100.0,
        second_phase_growth * 100.0,
        peak_growth * 100.0,
        retained_growth * 100.0,
        mib(quiet_retained),
        mib(accounted as u64),
        mib(measured as u64),
        accounted as f64 / measured.max(1) as f64,
        rig.churn.identities(),
        2 * churn_intervals + QUIET,
        rig.reported,
        std::mem::size_of::<ConnectionStats>(),
    );
    println!("  retained by the state's accounting: {breakdown}");
    for (phase, samples) in [("churn 1", &first), ("quiet", &quiet), ("churn 2", &second)] {
        let line: Vec<String> = samples
            .iter()
            .map(|s| format!("{:.1}/{:.1}", mib(s.peak as u64), mib(s.retained as u64)))
            .collect();
        println!(
            "  {phase} peak/retained MiB per interval: {}",
            line.join(" ")
        );
    }

    let fields: [(&str, Value); 25] = [
        ("active", json!(active)),
        ("closed_per_interval", json!(CLOSED_PER_INTERVAL)),
        ("churn_per_interval", json!(active / 10)),
        ("clients", json!(CLIENTS)),
        ("intervals", json!(2 * churn_intervals + QUIET)),
        ("identities", json!(rig.churn.identities())),
        ("peak_heap_bytes", json!(peak_heap)),
        ("retained_heap_bytes", json!(retained)),
        ("bytes_per_conn", number(bytes_per_conn)),
        ("target_bytes_per_conn", number(TARGET_BYTES_PER_CONN)),
        ("meets_target", json!(meets)),
        ("peak_rss_bytes", json!(peak_rss)),
        ("baseline_rss_bytes", json!(rss_baseline)),
        ("final_rss_bytes", json!(final_rss)),
        ("rss_bytes_per_conn", number(rss_per_conn)),
        ("peak_growth_after_warm_up", number(peak_growth)),
        ("retained_growth_after_warm_up", number(retained_growth)),
        ("repeat_peak_growth", number(repeat_peak_growth)),
        ("repeat_retained_growth", number(repeat_retained_growth)),
        ("second_phase_retained_growth", number(second_phase_growth)),
        ("retained_last_rise_interval", json!(settled_at)),
        ("plateau", json!(plateau)),
        ("quiet_retained_heap_bytes", json!(quiet_retained)),
        (
            "state_accounting_ratio",
            number(accounted as f64 / measured.max(1) as f64),
        ),
        ("tracer_extra_bytes_per_conn_estimate", number(tracer_extra)),
    ];
    upsert_fields_from_env(&name, fields)
        .map_err(|e| format!("{name}: cannot write the bench summary: {e}"))
}

const ROW_ENV: &str = "TRACER_MEMORY_BENCH_ROW";
const ROWS: [(usize, &str); 2] = [(10_000, "10k_active"), (100_000, "100k_active")];

fn main() {
    if let Some(row) = std::env::var_os(ROW_ENV) {
        let result = row
            .to_str()
            .and_then(|r| r.parse::<usize>().ok())
            .ok_or_else(|| format!("{ROW_ENV}: not a number"))
            .and_then(run_row);
        if let Err(err) = result {
            eprintln!("memory: {err}");
            std::process::exit(1);
        }
        return;
    }
    // `cargo bench` passes `--bench` (and criterion-style options); a plain argument filters.
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(err) => {
            eprintln!("memory: cannot find this executable: {err}");
            std::process::exit(1);
        }
    };
    let mut failed = false;
    for (active, label) in ROWS {
        if filter.as_deref().is_some_and(|f| !label.contains(f)) {
            continue;
        }
        match Command::new(&exe).env(ROW_ENV, active.to_string()).status() {
            Ok(status) if status.success() => {}
            Ok(status) => {
                eprintln!("memory: {label}: {status}");
                failed = true;
            }
            Err(err) => {
                eprintln!("memory: {label}: cannot run: {err}");
                failed = true;
            }
        }
    }
    if failed {
        std::process::exit(1);
    }
}
