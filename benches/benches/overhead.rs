//! Kernel overhead of tracing (privileged: needs root to load eBPF). Loopback workloads are
//! measured untraced (no tracer loaded at all: dropped, and its programs freed by the kernel)
//! and traced (a tracer loaded with one backend), for every backend that loads on this host,
//! in one run. Backends that do not load get a line with their typed error; when none loads
//! (not root, no eBPF object, ...) the benchmark prints a SKIP line and writes no rows.
//!
//! Workloads (`tracer_benches::workloads`), on 127.0.0.1 sockets created once and reused by
//! every measurement: `tcp_rr_64` (TCP request/response, 64 B each way), `tcp_bulk_64k` (64 KiB
//! writes to a reader) and `udp_echo_64` (a 64 B datagram echoed).
//!
//! Every workload thread (and the measuring thread) is pinned to one CPU. Unpinned, the
//! scheduler sometimes runs the two ends of a round trip on different CPUs of this VM, where a
//! cross-CPU wake-up costs 3-4 times a same-CPU one: blocks jump between the two modes and no
//! comparison survives that. Pinned, one thread of the workload is always runnable on that CPU
//! (loopback delivers in the sender's syscall), so the process's CPU time is the time the
//! workload took minus the time other jobs ran on that CPU (this kernel charges softirq time to
//! the task it interrupts and leaves hypervisor steal time out). On this shared, often
//! oversubscribed 2-core machine (load average 6 when this was written), the wall-time
//! comparison of one phase pair swung by several µs per call from pair to pair while the
//! CPU-time comparison stayed within about 10%. The summary therefore compares CPU time, and
//! reports the wall-time comparison beside it.
//!
//! Definitions (the summary rows `overhead/<backend>/<workload>`):
//! - calls per iteration `c`: the send and receive syscalls both sides make per iteration,
//!   counted (not assumed): 4 for `tcp_rr_64` and `udp_echo_64` (client send + recv, server
//!   recv + send; a short read or write would count one more), and for `tcp_bulk_64k` the
//!   64 KiB write plus the receiver's reads of those 64 KiB. Taken from the traced
//!   measurements, the calls that carry the overhead.
//! - `ns_added` = (t_traced - t_untraced) / c, t = the process's CPU time per iteration: the
//!   time the hooks add to each call.
//! - `throughput_ratio` = t_untraced / t_traced: traced throughput relative to untraced (of the
//!   CPU that runs the workload).
//! - `wall_ns_added`, `wall_throughput_ratio`: the same with wall time.
//! - `untraced_ns_per_iter`, `traced_ns_per_iter`: the medians of t over the phases below.
//! - `bpf_ns_per_call`, `bpf_runs_per_call`: the tracer's programs' own run time and runs per
//!   call, from the kernel's BPF run-time statistics (`BPF_ENABLE_STATS`), in a separate traced
//!   block (the statistics cost two clock reads per run), minus the background of the same
//!   duration without the workload (the programs run for every process's sockets). The rest of
//!   `ns_added` is the kernel's cost of calling them: tracepoint dispatch, and the slow syscall
//!   path that syscall tracepoints switch on (unless another tracer already did).
//!
//! The summary numbers come from interleaved phases, not from criterion's runs: U0 T0 U1 T1 ...
//! T7 U8 (U untraced, T traced: the tracer is loaded for each T phase and unloaded after it).
//! A phase runs every workload for a short warm-up (which also creates the traced sockets' map
//! entries) and 5 blocks of about 50 ms, and keeps the cheapest block (CPU and wall time each),
//! the least disturbed by other jobs. Each T phase is compared with the mean of the U phases on
//! both sides of it (cancelling drift that is linear over the three phases), and the medians
//! over the 8 T phases are reported. Criterion also measures both variants of every workload
//! in one group (`overhead/<backend>/<workload>/{untraced,traced}`, wall time), for its usual
//! report.

use std::{io, time::Duration};

use criterion::{Criterion, criterion_group, criterion_main};
use tracer::Backend;
use tracer_benches::{
    privileged::{
        Loaded, bench_mode, enable_run_time_stats, euid, foreign_programs, last_allowed_cpu,
        loadable_backends, median, pin_to_cpu,
    },
    summary::{number, upsert_fields_from_env},
    workloads::{Kind, Phase, Status, Workload, calibrate, criterion_batch, phase, workloads},
};

/// Traced phases of the summary (untraced phases: one more).
const TRACED_PHASES: usize = 8;

/// The targets.
const TARGET_NS_ADDED: f64 = 100.0;
const TARGET_RATIO: f64 = 0.95;

fn overhead(c: &mut Criterion) {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!("overhead: Linux {}, euid {}", release.trim(), euid());
    let backends = loadable_backends("overhead");
    if backends.is_empty() {
        let why = if euid() == 0 {
            "no backend loads (see the errors above)".to_owned()
        } else {
            format!(
                "not root (euid {}): loading eBPF programs needs root",
                euid()
            )
        };
        println!("overhead: SKIP: {why}; no rows written");
        return;
    }
    let cpu = match last_allowed_cpu().and_then(|cpu| pin_to_cpu(cpu).map(|()| cpu)) {
        Ok(cpu) => {
            println!("overhead: every workload thread is pinned to CPU {cpu}");
            Some(cpu)
        }
        Err(err) => {
            println!("overhead: warning: cannot pin the workload threads ({err}): not pinned");
            None
        }
    };
    let mut workloads = workloads(
        "overhead",
        cpu,
        &[Kind::TcpRr, Kind::TcpBulk, Kind::UdpEcho],
    );
    for &backend in &backends {
        let mut statuses: Vec<Status> = workloads.iter().map(|_| Status::default()).collect();
        for (workload, status) in workloads.iter_mut().zip(&mut statuses) {
            let mut group = c.benchmark_group(format!("overhead/{backend}/{}", workload.name()));
            foreign_programs("overhead", "criterion, untraced", 0);
            group.bench_function("untraced", |b| {
                b.iter_custom(|iters| criterion_batch(workload.as_mut(), iters, status))
            });
            match Loaded::with_backend(backend) {
                Ok(loaded) => {
                    group.bench_function("traced", |b| {
                        b.iter_custom(|iters| criterion_batch(workload.as_mut(), iters, status))
                    });
                    unload(loaded);
                }
                Err(err) => {
                    status.failure = Some(io::Error::other(format!("loading {backend}: {err:?}")))
                }
            }
            group.finish();
        }
        for (workload, status) in workloads.iter().zip(&statuses) {
            if let Some(err) = &status.failure {
                println!("overhead/{backend}/{}: failed: {err}", workload.name());
            }
        }
        if !bench_mode() {
            println!("overhead/{backend}: not in --bench mode: no summary rows");
            continue;
        }
        let selected: Vec<bool> = statuses
            .iter()
            .map(|s| s.ran && s.failure.is_none())
            .collect();
        if let Err(err) = summary(backend, &mut workloads, &selected) {
            println!("overhead/{backend}: summary failed: {err}; no rows written");
        }
    }
}

fn unload(loaded: Loaded) {
    let left = loaded.unload();
    if left > 0 {
        println!("overhead: warning: {left} programs still loaded 10 s after dropping the tracer");
    }
}

/// What the kernel's BPF statistics say about one workload: the tracer's programs' own run
/// time and run count per send/receive call, in all and per program.
#[derive(Clone, Debug)]
struct ProgramCost {
    ns_per_call: f64,
    runs_per_call: f64,
    /// Program name, runs per call, ns per run; the programs that ran.
    programs: Vec<(String, f64, f64)>,
}

/// Runs one block of every workload with a tracer loaded and the kernel's run-time statistics
/// on. Not part of the wall-time comparison (the statistics add two clock reads per run).
fn program_costs(
    backend: Backend,
    workloads: &mut [Box<dyn Workload>],
    iters: &[Option<u64>],
) -> Result<Vec<Option<ProgramCost>>, String> {
    let loaded = Loaded::with_backend(backend).map_err(|e| format!("loading: {e:?}"))?;
    let stats = enable_run_time_stats().map_err(|e| format!("BPF_ENABLE_STATS: {e}"));
    let mut costs = Vec::new();
    for (workload, iters) in workloads.iter_mut().zip(iters) {
        let (Some(iters), Ok(_)) = (*iters, &stats) else {
            costs.push(None);
            continue;
        };
        workload
            .run((iters / 10).max(1))
            .map_err(|e| e.to_string())?;
        let before = loaded.run_stats();
        let sample = workload.run(iters).map_err(|e| e.to_string())?;
        let during = loaded.run_stats();
        // The programs also run for every other process's sockets: as long again without
        // the workload gives that background, which is subtracted.
        std::thread::sleep(sample.wall);
        let after = loaded.run_stats();
        let calls = sample.calls.max(1) as f64;
        let mut cost = ProgramCost {
            ns_per_call: 0.0,
            runs_per_call: 0.0,
            programs: Vec::new(),
        };
        for (name, &(time_during, count_during)) in &during {
            let (time_before, count_before) = before.get(name).copied().unwrap_or_default();
            let (time_after, count_after) = after.get(name).copied().unwrap_or_default();
            let background_runs = count_after.saturating_sub(count_during);
            let background_time = time_after.saturating_sub(time_during);
            let runs = count_during
                .saturating_sub(count_before)
                .saturating_sub(background_runs);
            if runs == 0 {
                continue;
            }
            let ns = time_during
                .saturating_sub(time_before)
                .saturating_sub(background_time)
                .as_nanos() as f64;
            cost.ns_per_call += ns / calls;
            cost.runs_per_call += runs as f64 / calls;
            cost.programs
                .push((name.clone(), runs as f64 / calls, ns / runs as f64));
        }
        costs.push(Some(cost));
    }
    drop(stats);
    unload(loaded);
    Ok(costs)
}

fn summary(
    backend: Backend,
    workloads: &mut [Box<dyn Workload>],
    selected: &[bool],
) -> Result<(), String> {
    let mut iters = Vec::new();
    for (workload, &selected) in workloads.iter_mut().zip(selected) {
        iters.push(if selected {
            Some(calibrate(workload.as_mut()).map_err(|e| format!("{}: {e}", workload.name()))?)
        } else {
            None
        });
    }
    if iters.iter().all(Option::is_none) {
        return Ok(());
    }
    let mut untraced: Vec<Vec<Phase>> = workloads.iter().map(|_| Vec::new()).collect();
    let mut traced: Vec<Vec<Phase>> = workloads.iter().map(|_| Vec::new()).collect();
    let mut contaminated = false;
    for index in 0..2 * TRACED_PHASES + 1 {
        let loaded = if index % 2 == 1 {
            let loaded = Loaded::with_backend(backend).map_err(|e| format!("loading: {e:?}"))?;
            contaminated |=
                foreign_programs("overhead", "summary, traced", loaded.program_count()) > 0;
            Some(loaded)
        } else {
            contaminated |= foreign_programs("overhead", "summary, untraced", 0) > 0;
            None
        };
        let phases = if loaded.is_some() {
            &mut traced
        } else {
            &mut untraced
        };
        for ((workload, iters), phases) in workloads.iter_mut().zip(&iters).zip(phases) {
            if let Some(iters) = *iters {
                let result = phase(workload.as_mut(), iters);
                phases.push(result.map_err(|e| format!("{}: {e}", workload.name()))?);
            }
        }
        if let Some(loaded) = loaded {
            unload(loaded);
        }
    }
    let costs = program_costs(backend, workloads, &iters).unwrap_or_else(|err| {
        println!("overhead/{backend}: no BPF run-time statistics: {err}");
        Vec::new()
    });
    for (index, workload) in workloads.iter().enumerate() {
        let (Some(untraced), Some(traced)) = (untraced.get(index), traced.get(index)) else {
            continue;
        };
        if traced.is_empty() {
            continue;
        }
        let cost = costs.get(index).cloned().flatten();
        report(
            backend,
            workload.name(),
            untraced,
            traced,
            cost,
            contaminated,
        );
    }
    Ok(())
}

/// Compares each traced phase with the mean of the untraced phases around it; prints and
/// writes the medians.
fn report(
    backend: Backend,
    name: &str,
    untraced: &[Phase],
    traced: &[Phase],
    cost: Option<ProgramCost>,
    warn: bool,
) {
    let mut added = Vec::new();
    let mut ratios = Vec::new();
    let mut wall_added = Vec::new();
    let mut wall_ratios = Vec::new();
    for (t, u) in traced.iter().zip(untraced.windows(2)) {
        let (Some(before), Some(after)) = (u.first(), u.get(1)) else {
            continue;
        };
        let cpu = (before.cpu() + after.cpu()) / 2.0;
        let wall = (before.wall() + after.wall()) / 2.0;
        let calls = t.calls.max(1.0);
        added.push((t.cpu() - cpu) / calls);
        ratios.push(cpu / t.cpu());
        wall_added.push((t.wall() - wall) / calls);
        wall_ratios.push(wall / t.wall());
    }
    let cpus = |phases: &[Phase]| median(&phases.iter().map(Phase::cpu).collect::<Vec<_>>());
    let calls = traced.iter().map(|p| p.calls).sum::<f64>() / traced.len().max(1) as f64;
    let (ns_added, ratio) = (median(&added), median(&ratios));
    let (wall_ns_added, wall_ratio) = (median(&wall_added), median(&wall_ratios));
    let (untraced_ns, traced_ns) = (cpus(untraced), cpus(traced));
    let row = format!("overhead/{backend}/{name}");
    let request_response = name != "tcp_bulk_64k";
    let verdict = |ok: bool| if ok { "met" } else { "missed" };
    let mut targets = format!(
        "target <= {TARGET_NS_ADDED} ns/call {}",
        verdict(ns_added <= TARGET_NS_ADDED)
    );
    if request_response {
        targets += &format!(
            ", target ratio >= {TARGET_RATIO} {}",
            verdict(ratio >= TARGET_RATIO)
        );
    }
    println!(
        "{row}: {calls:.2} calls/iter, untraced {untraced_ns:.0} ns/iter, traced {traced_ns:.0} \
         ns/iter: {ns_added:+.1} ns per call, throughput ratio {ratio:.3} [{targets}]; wall \
         time: {wall_ns_added:+.1} ns per call, ratio {wall_ratio:.3}"
    );
    let list = |values: &[f64]| {
        values
            .iter()
            .map(|v| format!("{v:.0}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let spread = |values: &[f64]| {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let quartile = |q: usize| {
            let index = (sorted.len().saturating_sub(1) * q).div_ceil(4);
            sorted.get(index).copied().unwrap_or(f64::NAN)
        };
        format!("{:.0}..{:.0}", quartile(1), quartile(3))
    };
    println!(
        "{row}: per traced phase, ns/call [{}] (interquartile range {}), wall ns/call [{}] \
         (interquartile range {}){}",
        list(&added),
        spread(&added),
        list(&wall_added),
        spread(&wall_added),
        if warn {
            " (another tracer was loaded meanwhile: see the warnings)"
        } else {
            ""
        }
    );
    let mut fields = vec![
        ("ns_added", number(ns_added)),
        ("throughput_ratio", number(ratio)),
        ("wall_ns_added", number(wall_ns_added)),
        ("wall_throughput_ratio", number(wall_ratio)),
        ("calls_per_iter", number(calls)),
        ("untraced_ns_per_iter", number(untraced_ns)),
        ("traced_ns_per_iter", number(traced_ns)),
    ];
    if let Some(cost) = cost {
        let programs: Vec<String> = cost
            .programs
            .iter()
            .map(|(name, runs, ns)| format!("{name} {runs:.2}x {ns:.0} ns"))
            .collect();
        println!(
            "{row}: BPF run-time statistics: the tracer's programs ran {:.2} times and {:.1} ns \
             per call ({})",
            cost.runs_per_call,
            cost.ns_per_call,
            programs.join(", ")
        );
        fields.push(("bpf_ns_per_call", number(cost.ns_per_call)));
        fields.push(("bpf_runs_per_call", number(cost.runs_per_call)));
    }
    if let Err(err) = upsert_fields_from_env(&row, fields) {
        eprintln!("{row}: cannot write the bench summary: {err}");
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_millis(1500))
        .sample_size(20);
    targets = overhead
}
criterion_main!(benches);
