//! What the packet capture costs packets that are not DNS (privileged: needs root to load eBPF;
//! issue 10). The capture's `cgroup_skb` programs run for every packet of every socket, and
//! reject a packet on another port after reading its IP header and port bytes. This measures
//! that against the least any program on those hooks costs, in one run.
//!
//! Modes, each attached ingress + egress to the cgroup v2 root with bpf_links:
//! - `untraced`: nothing attached.
//! - `floor`: `nt_floor_in` / `nt_floor_out`, empty programs (return 1) of the benchmark-only
//!   eBPF object (`bench-floor`): the kernel's cost of running a program there at all.
//! - `capture`: the real `nt_packet_in` / `nt_packet_out` with the default capture config
//!   (ports [53], enabled), loaded from the embedded object on their own, without the
//!   connection tracer, so the row is the capture's cost alone.
//!
//! Workloads (`tracer_benches::workloads`), on 127.0.0.1 (not port 53): `udp_echo_64`,
//! `tcp_rr_64` (TCP_NODELAY) and `tcp_bulk_64k` (one-way bulk transfer, 64 KiB writes: TCP
//! traffic that is not HTTP, the HTTP parser's worst case after its first segments: every data
//! segment is a payload segment of a socket classified not HTTP). Packets per iteration are
//! counted, not assumed: UDP the datagrams sent; TCP the segments both sockets sent by their
//! `TCP_INFO` counters (data and pure ACKs, as the delayed-ACK timer and piggybacking made them;
//! 2.00 per round trip for `tcp_rr_64`: the ACKs ride on the data; loopback's MTU of 64 KiB
//! makes bulk segments up to that size, and the receiver's ACKs are counted too). Each packet
//! runs two programs: egress at the sender, ingress at the receiver.
//!
//! Method: as `overhead.rs` (whose header says why), every workload thread is pinned to one CPU,
//! the process's CPU time is compared, phases keep their cheapest block, each mode phase is
//! compared with the mean of the untraced phases on both sides of it, and medians are reported.
//! Unlike there, the phases are short (5 blocks of 5 ms) and many (U F U C U C U F ... U, 100
//! per mode and workload): the programs are loaded once and only their links come and go
//! between phases, because this machine's speed drifts by tens of percent over seconds (other
//! guests of the host), which 250 ms phases with a load in between did not cancel (per-phase
//! results swung by +-500 ns/packet on an effect of 100).
//!
//! Summary rows `capture/<workload>`:
//! - `floor_ns_per_packet`, `capture_ns_per_packet`: (t_mode - t_untraced) / packets, t = CPU
//!   time per iteration: what each adds to one packet (both of its program runs).
//! - `ratio` = capture_ns_per_packet / floor_ns_per_packet, against the target
//!   (`target_ratio`, 1.3).
//! - `wall_*`: the same with wall time.
//! - `bpf_floor_ns_per_run`, `bpf_capture_ns_per_run`, `bpf_*_runs_per_packet`: the programs'
//!   own run time per run and runs per packet, from the kernel's BPF run-time statistics, in a
//!   separate block per mode (the statistics add two clock reads per run) minus the background
//!   of the same duration without the workload (the programs see every process's packets).
//!
//! Not measured here: the whole tracer with the capture on against off (its syscall hooks add
//! several hundred ns per packet, which drowns a difference of this size at this machine's
//! noise, and loading it takes too long to alternate every few ms).

use std::{collections::BTreeSet, io, time::Duration};

use aya::{
    Ebpf, EbpfLoader,
    programs::{CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, cgroup_skb::CgroupSkbLinkId},
};
use criterion::{Criterion, criterion_group, criterion_main};
use tracer::kernel::{capabilities::find_cgroup2_root, object, packet::CaptureConfig};
use tracer_benches::{
    privileged::{
        bench_mode, enable_run_time_stats, euid, foreign_programs, last_allowed_cpu, median,
        phase_runs, pin_to_cpu, run_stats, wait_freed,
    },
    summary::{number, upsert_fields_from_env},
    workloads::{
        BLOCK, Kind, Phase, Status, Workload, calibrate, criterion_batch, phase, workloads,
    },
};
use tracer_common::names::{
    GLOBAL_CAPTURE_CONFIG, MAP_PACKETS, PROG_PACKET_EGRESS, PROG_PACKET_FLOOR_EGRESS,
    PROG_PACKET_FLOOR_INGRESS, PROG_PACKET_INGRESS,
};

const BENCH: &str = "capture";

/// Phases of each mode per workload in the summary (untraced phases: one more than both).
const ROUNDS: usize = 100;
/// Duration of a block in the summary's phases, in ms.
const SHORT_BLOCK_MS: u64 = 5;

/// The target: the capture adds at most this many times what the floor adds.
const TARGET_RATIO: f64 = 1.3;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Floor,
    Capture,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Self::Floor => "floor",
            Self::Capture => "capture",
        }
    }

    /// The ingress and egress programs.
    fn programs(self) -> [(&'static str, CgroupSkbAttachType); 2] {
        let (ingress, egress) = match self {
            Self::Floor => (PROG_PACKET_FLOOR_INGRESS, PROG_PACKET_FLOOR_EGRESS),
            Self::Capture => (PROG_PACKET_INGRESS, PROG_PACKET_EGRESS),
        };
        [
            (ingress, CgroupSkbAttachType::Ingress),
            (egress, CgroupSkbAttachType::Egress),
        ]
    }
}

/// One mode's two programs, loaded, and attached while `links` holds their links. Attaching
/// and detaching loaded programs is quick (no verifier, no RCU wait for the programs to be
/// freed), which is what lets the summary alternate modes every few milliseconds.
struct Pair {
    mode: Mode,
    ebpf: Ebpf,
    ids: BTreeSet<u32>,
    links: Vec<(&'static str, CgroupSkbLinkId)>,
}

impl Pair {
    /// Loads the embedded object with the capture's default configuration (what the tracer
    /// gives it: ports [53], enabled; ring sized as configured), or the floor's benchmark-only
    /// object, and loads `mode`'s two programs.
    /// The object's other programs are not loaded; its maps are created at their declared sizes,
    /// all valid (the connection maps are unused here), and `NT_LAYOUT`, which no packet
    /// program reads, keeps its zeros.
    fn load(mode: Mode) -> Result<Self, String> {
        let mut ebpf = match mode {
            // The benchmark-only object: no maps, no globals.
            Mode::Floor => {
                let bytes = object::floor_bytes().map_err(|e| format!("{e}"))?;
                EbpfLoader::new().load(bytes)
            }
            Mode::Capture => {
                let config = CaptureConfig::default();
                let bytes = object::bytes().map_err(|e| format!("{e}"))?;
                EbpfLoader::new()
                    .map_max_entries(MAP_PACKETS, config.ring_bytes)
                    .override_global(GLOBAL_CAPTURE_CONFIG, &config.to_kernel(), true)
                    .load(bytes)
            }
        }
        .map_err(|e| format!("loading the object: {e}"))?;
        let mut ids = BTreeSet::new();
        for (name, _) in mode.programs() {
            let program = program(&mut ebpf, name)?;
            program.load().map_err(|e| format!("loading {name}: {e}"))?;
            let info = program.info().map_err(|e| format!("{name}: {e}"))?;
            ids.insert(info.id());
        }
        Ok(Self {
            mode,
            ebpf,
            ids,
            links: Vec::new(),
        })
    }

    /// Attaches both programs to the cgroup v2 root with bpf_links, as the tracer's loader does.
    fn attach(&mut self) -> Result<(), String> {
        let root = find_cgroup2_root().ok_or("no cgroup v2 hierarchy to attach to")?;
        for (name, attach_type) in self.mode.programs() {
            let cgroup = root
                .open()
                .map_err(|e| format!("opening the {root}: {e}"))?;
            let link = program(&mut self.ebpf, name)?
                .attach(cgroup, attach_type, CgroupAttachMode::Single)
                .map_err(|e| format!("attaching {name}: {e}"))?;
            self.links.push((name, link));
        }
        Ok(())
    }

    /// Detaches both programs (they stay loaded).
    fn detach(&mut self) -> Result<(), String> {
        while let Some((name, link)) = self.links.pop() {
            program(&mut self.ebpf, name)?
                .detach(link)
                .map_err(|e| format!("detaching {name}: {e}"))?;
        }
        Ok(())
    }

    /// Drops the programs, and waits until the kernel has freed them.
    fn unload(self) {
        let Self { ebpf, ids, .. } = self;
        drop(ebpf);
        let left = wait_freed(&ids);
        if left > 0 {
            println!("{BENCH}: warning: {left} programs still loaded 10 s after dropping them");
        }
    }
}

fn program<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut CgroupSkb, String> {
    ebpf.program_mut(name)
        .ok_or_else(|| format!("no program {name} in the object"))?
        .try_into()
        .map_err(|e| format!("{name}: {e}"))
}

/// Loads and attaches `mode`'s programs.
fn attach(mode: Mode) -> Result<Pair, String> {
    let mut pair = Pair::load(mode)?;
    pair.attach()?;
    Ok(pair)
}

fn capture(c: &mut Criterion) {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!("{BENCH}: Linux {}, euid {}", release.trim(), euid());
    if euid() != 0 {
        println!(
            "{BENCH}: SKIP: not root (euid {}): loading eBPF programs needs root; no rows written",
            euid()
        );
        return;
    }
    for mode in [Mode::Floor, Mode::Capture] {
        match attach(mode) {
            Ok(pair) => {
                println!("{BENCH}: {} loads and attaches", mode.name());
                pair.unload();
            }
            Err(err) => {
                println!(
                    "{BENCH}: SKIP: {} does not load: {err}; no rows written",
                    mode.name()
                );
                return;
            }
        }
    }
    let cpu = match last_allowed_cpu().and_then(|cpu| pin_to_cpu(cpu).map(|()| cpu)) {
        Ok(cpu) => {
            println!("{BENCH}: every workload thread is pinned to CPU {cpu}");
            Some(cpu)
        }
        Err(err) => {
            println!("{BENCH}: warning: cannot pin the workload threads ({err}): not pinned");
            None
        }
    };
    let mut workloads = workloads(BENCH, cpu, &[Kind::UdpEcho, Kind::TcpRr, Kind::TcpBulk]);
    let mut statuses: Vec<Status> = workloads.iter().map(|_| Status::default()).collect();
    for (workload, status) in workloads.iter_mut().zip(&mut statuses) {
        let mut group = c.benchmark_group(format!("{BENCH}/{}", workload.name()));
        foreign_programs(BENCH, "criterion, untraced", 0);
        group.bench_function("untraced", |b| {
            b.iter_custom(|iters| criterion_batch(workload.as_mut(), iters, status))
        });
        for mode in [Mode::Floor, Mode::Capture] {
            match attach(mode) {
                Ok(pair) => {
                    group.bench_function(mode.name(), |b| {
                        b.iter_custom(|iters| criterion_batch(workload.as_mut(), iters, status))
                    });
                    pair.unload();
                }
                Err(err) => status.failure = Some(io::Error::other(err)),
            }
        }
        group.finish();
    }
    for (workload, status) in workloads.iter().zip(&statuses) {
        if let Some(err) = &status.failure {
            println!("{BENCH}/{}: failed: {err}", workload.name());
        }
    }
    if !bench_mode() {
        println!("{BENCH}: not in --bench mode: no summary rows");
        return;
    }
    let selected: Vec<bool> = statuses
        .iter()
        .map(|s| s.ran && s.failure.is_none())
        .collect();
    if let Err(err) = summary(&mut workloads, &selected) {
        println!("{BENCH}: summary failed: {err}; no rows written");
    }
}

/// The phases of one workload in sequence: `None` untraced, else the mode measured.
type Sequence = Vec<(Option<Mode>, Phase)>;

fn summary(workloads: &mut [Box<dyn Workload>], selected: &[bool]) -> Result<(), String> {
    let mut pairs = [Pair::load(Mode::Floor)?, Pair::load(Mode::Capture)?];
    let ours: usize = pairs.iter().map(|p| p.ids.len()).sum();
    let mut contaminated = foreign_programs(BENCH, "summary", ours) > 0;
    let mut sequences: Vec<Sequence> = workloads.iter().map(|_| Vec::new()).collect();
    let mut iters = Vec::new();
    for ((workload, &selected), sequence) in workloads.iter_mut().zip(selected).zip(&mut sequences)
    {
        if !selected {
            iters.push(None);
            continue;
        }
        let name = workload.name();
        let block = calibrate(workload.as_mut()).map_err(|e| format!("{name}: {e}"))?;
        // Phases of a few ms: this machine's speed drifts by tens of percent over seconds
        // (other guests of the host), which only adjacent phases this short cancel.
        let short = (block / (BLOCK.as_millis() as u64 / SHORT_BLOCK_MS)).max(1);
        iters.push(Some(block));
        for round in 0..ROUNDS {
            // The modes' order alternates, so that neither always follows the other.
            let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
            for index in order {
                let measured =
                    phase(workload.as_mut(), short).map_err(|e| format!("{name}: {e}"))?;
                sequence.push((None, measured));
                let Some(pair) = pairs.get_mut(index) else {
                    continue;
                };
                pair.attach()?;
                let measured = phase(workload.as_mut(), short);
                pair.detach()?;
                sequence.push((
                    Some(pair.mode),
                    measured.map_err(|e| format!("{name}: {e}"))?,
                ));
            }
        }
        let measured = phase(workload.as_mut(), short).map_err(|e| format!("{name}: {e}"))?;
        sequence.push((None, measured));
        contaminated |= foreign_programs(BENCH, name, ours) > 0;
    }
    let mut costs = Vec::new();
    for pair in &mut pairs {
        costs.push(
            program_costs(pair, workloads, &iters).unwrap_or_else(|err| {
                println!(
                    "{BENCH}/{}: no BPF run-time statistics: {err}",
                    pair.mode.name()
                );
                Vec::new()
            }),
        );
    }
    for pair in pairs {
        pair.unload();
    }
    for (index, workload) in workloads.iter().enumerate() {
        let Some(sequence) = sequences.get(index).filter(|s| !s.is_empty()) else {
            continue;
        };
        let cost = |mode: usize| costs.get(mode)?.get(index).cloned().flatten();
        report(workload.name(), sequence, [cost(0), cost(1)], contaminated);
    }
    Ok(())
}

/// What the kernel's BPF statistics say about one mode's two programs under one workload.
#[derive(Clone, Debug)]
struct ProgramCost {
    /// Program runs per packet (2 expected: egress, then ingress).
    runs_per_packet: f64,
    /// Their run time per run, both programs together.
    ns_per_run: f64,
    /// Program name, runs per packet, ns per run.
    programs: Vec<(String, f64, f64)>,
}

/// Runs one block of every workload with `pair` attached and the kernel's run-time statistics
/// on. Not part of the time comparison (the statistics add two clock reads per run).
fn program_costs(
    pair: &mut Pair,
    workloads: &mut [Box<dyn Workload>],
    iters: &[Option<u64>],
) -> Result<Vec<Option<ProgramCost>>, String> {
    let stats = enable_run_time_stats().map_err(|e| format!("BPF_ENABLE_STATS: {e}"))?;
    pair.attach()?;
    let mut costs = Vec::new();
    for (workload, iters) in workloads.iter_mut().zip(iters) {
        let Some(iters) = *iters else {
            costs.push(None);
            continue;
        };
        let cost = program_cost(&pair.ids, workload.as_mut(), iters);
        costs.push(Some(cost.map_err(|e| format!("{}: {e}", workload.name()))?));
    }
    pair.detach()?;
    drop(stats);
    Ok(costs)
}

fn program_cost(
    ids: &BTreeSet<u32>,
    workload: &mut dyn Workload,
    iters: u64,
) -> io::Result<ProgramCost> {
    workload.run((iters / 10).max(1))?;
    let before = run_stats(ids);
    let sample = workload.run(iters)?;
    let during = run_stats(ids);
    // The programs also run for every other process's packets: as long again without the
    // workload gives that background, which is subtracted.
    std::thread::sleep(sample.wall);
    let after = run_stats(ids);
    let packets = sample.packets.max(1) as f64;
    let mut cost = ProgramCost {
        runs_per_packet: 0.0,
        ns_per_run: 0.0,
        programs: Vec::new(),
    };
    let (mut total_runs, mut total_ns) = (0u64, 0.0);
    for (name, runs, ns) in phase_runs(&before, &during, &after) {
        total_runs += runs;
        total_ns += ns;
        cost.programs
            .push((name, runs as f64 / packets, ns / runs as f64));
    }
    cost.runs_per_packet = total_runs as f64 / packets;
    cost.ns_per_run = total_ns / total_runs.max(1) as f64;
    Ok(cost)
}

/// Per phase of `mode`: what it added to an iteration over the mean of the untraced phases on
/// both sides of it, per packet, in CPU and wall time.
fn added(sequence: &[(Option<Mode>, Phase)], mode: Mode) -> (Vec<f64>, Vec<f64>) {
    let (mut cpu, mut wall) = (Vec::new(), Vec::new());
    for window in sequence.windows(3) {
        let [(None, before), (Some(m), measured), (None, after)] = window else {
            continue;
        };
        if *m != mode {
            continue;
        }
        let packets = measured.packets.max(1.0);
        cpu.push((measured.cpu() - (before.cpu() + after.cpu()) / 2.0) / packets);
        wall.push((measured.wall() - (before.wall() + after.wall()) / 2.0) / packets);
    }
    (cpu, wall)
}

/// Prints and writes one workload's row.
fn report(
    name: &str,
    sequence: &[(Option<Mode>, Phase)],
    costs: [Option<ProgramCost>; 2],
    warn: bool,
) {
    let row = format!("{BENCH}/{name}");
    let phases_of = |mode: Option<Mode>| -> Vec<&Phase> {
        sequence
            .iter()
            .filter(|(m, _)| *m == mode)
            .map(|(_, p)| p)
            .collect()
    };
    let cpu_median =
        |mode: Option<Mode>| median(&phases_of(mode).iter().map(|p| p.cpu()).collect::<Vec<_>>());
    let mean = |values: Vec<f64>| values.iter().sum::<f64>() / values.len().max(1) as f64;
    let measured: Vec<&Phase> = sequence
        .iter()
        .filter(|(m, _)| m.is_some())
        .map(|(_, p)| p)
        .collect();
    let packets = mean(measured.iter().map(|p| p.packets).collect());
    let calls = mean(measured.iter().map(|p| p.calls).collect());
    let (floor, wall_floor) = added(sequence, Mode::Floor);
    let (capture, wall_capture) = added(sequence, Mode::Capture);
    let (floor_ns, capture_ns) = (median(&floor), median(&capture));
    let (wall_floor_ns, wall_capture_ns) = (median(&wall_floor), median(&wall_capture));
    let ratio = capture_ns / floor_ns;
    let wall_ratio = wall_capture_ns / wall_floor_ns;
    let verdict = if ratio <= TARGET_RATIO {
        "met"
    } else {
        "missed"
    };
    let (untraced_ns, floor_iter_ns, capture_iter_ns) = (
        cpu_median(None),
        cpu_median(Some(Mode::Floor)),
        cpu_median(Some(Mode::Capture)),
    );
    println!(
        "{row}: {packets:.2} packets/iter ({calls:.2} calls/iter), untraced {untraced_ns:.0} \
         ns/iter, floor {floor_iter_ns:.0}, capture {capture_iter_ns:.0}: per packet floor \
         {floor_ns:+.1} ns, capture {capture_ns:+.1} ns, ratio {ratio:.2} [target <= \
         {TARGET_RATIO} {verdict}]; wall time: floor {wall_floor_ns:+.1} ns, capture \
         {wall_capture_ns:+.1} ns, ratio {wall_ratio:.2}"
    );
    let list = |values: &[f64]| {
        values
            .iter()
            .map(|v| format!("{v:.0}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    println!(
        "{row}: per phase, ns/packet floor [{}], capture [{}]{}",
        list(&floor),
        list(&capture),
        if warn {
            " (another tracer was loaded meanwhile: see the warnings)"
        } else {
            ""
        }
    );
    let mut fields = vec![
        ("packets_per_iter", number(packets)),
        ("calls_per_iter", number(calls)),
        ("untraced_ns_per_iter", number(untraced_ns)),
        ("floor_ns_per_iter", number(floor_iter_ns)),
        ("capture_ns_per_iter", number(capture_iter_ns)),
        ("floor_ns_per_packet", number(floor_ns)),
        ("capture_ns_per_packet", number(capture_ns)),
        ("ratio", number(ratio)),
        ("target_ratio", number(TARGET_RATIO)),
        ("wall_floor_ns_per_packet", number(wall_floor_ns)),
        ("wall_capture_ns_per_packet", number(wall_capture_ns)),
        ("wall_ratio", number(wall_ratio)),
    ];
    let [floor_cost, capture_cost] = costs;
    for (mode, cost) in [(Mode::Floor, floor_cost), (Mode::Capture, capture_cost)] {
        let Some(cost) = cost else { continue };
        let programs: Vec<String> = cost
            .programs
            .iter()
            .map(|(name, runs, ns)| format!("{name} {runs:.2}x {ns:.1} ns"))
            .collect();
        println!(
            "{row}: BPF run-time statistics, {}: {:.2} runs per packet, {:.1} ns per run ({})",
            mode.name(),
            cost.runs_per_packet,
            cost.ns_per_run,
            programs.join(", ")
        );
        let (ns_key, runs_key) = match mode {
            Mode::Floor => ("bpf_floor_ns_per_run", "bpf_floor_runs_per_packet"),
            _ => ("bpf_capture_ns_per_run", "bpf_capture_runs_per_packet"),
        };
        fields.push((ns_key, number(cost.ns_per_run)));
        fields.push((runs_key, number(cost.runs_per_packet)));
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
    targets = capture
}
criterion_main!(benches);
