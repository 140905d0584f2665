//! Kernel overhead of tracing (privileged: needs root to load eBPF). Loopback workloads are
//! measured untraced (no tracer loaded at all: dropped, and its programs freed by the kernel)
//! and traced (a tracer loaded with one backend), for every backend that loads on this host,
//! in one run. Backends that do not load get a line with their typed error; when none loads
//! (not root, no eBPF object, ...) the benchmark prints a SKIP line and writes no rows.
//!
//! Workloads (`tracer_benches::workloads`), on 127.0.0.1 sockets created once and reused by
//! every measurement: `tcp_rr_64` (TCP request/response, 64 B each way), `tcp_bulk_64k` (64 KiB
//! writes to a reader) and `udp_echo_64` (a 64 B datagram echoed); and `unrelated_syscalls`, a
//! `getppid()` loop: no socket, what the tracer costs work it does not trace (target ratio at
//! least 0.99).
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
//!   `ns_added` is the kernel's cost of calling them (tracepoint and cgroup hook dispatch),
//!   which the floor row measures on its own.
//!
//! Rows besides the workloads', tracepoint backend only:
//! - `overhead/tracepoint/floor`: the same workloads with the benchmark-only object's empty
//!   programs (`tracer-ebpf/src/bench_floor.rs`) on the hooks the tracer runs per call or per
//!   packet: raw `sock_send_length` / `sock_recv_length`, the four `sock_addr` hooks and both
//!   `cgroup_skb` directions (the default configuration captures packets). Fields
//!   `<workload>_ns_added`, ... and `<workload>_traced_to_floor` (the tracer's `ns_added` over
//!   the floor's; target at most 2); each workload's row gets `floor_ns_added` and
//!   `ratio_to_floor`, and from the BPF run-time statistics `bpf_ns_above_floor` (the
//!   tracer's programs' run time per call minus the empty programs', i.e. its own work beyond
//!   attaching) and `bpf_to_floor` (their ratio).
//! - `overhead/tracepoint/peer_bpftrace`: Debian's bpftrace running a one-line script that sums
//!   bytes per socket on the same two tracepoints ([`PEER_SCRIPT`]), on `tcp_rr_64`: its
//!   `ns_added` beside ours (`tracer_ns_added`, `tracer_to_peer`). When bpftrace is missing or
//!   does not attach, the row carries the reason as `note`.
//!
//! The summary numbers come from interleaved phases, not from criterion's runs: U T U F U P U
//! T ... U (U untraced, T traced, F floor, P peer; 8 of each of T, F, P: each is loaded before
//! its phase and unloaded after it; F and P only on the tracepoint backend).
//! A phase runs every workload for a short warm-up (which also creates the traced sockets' map
//! entries) and 5 blocks of about 50 ms, and keeps the cheapest block (CPU and wall time each),
//! the least disturbed by other jobs. Each T (F, P) phase is compared with the mean of the U
//! phases on both sides of it (cancelling drift that is linear over the three phases), and the
//! medians over the 8 phases of each mode are reported. Criterion also measures both variants of every workload
//! in one group (`overhead/<backend>/<workload>/{untraced,traced}`, wall time), for its usual
//! report.

use std::{collections::BTreeSet, io, time::Duration};

use criterion::{Criterion, criterion_group, criterion_main};
use tracer::{
    Backend,
    kernel::{capabilities::find_cgroup2_root, object},
};
use tracer_benches::{
    privileged::{
        Loaded, bench_mode, enable_run_time_stats, euid, foreign_programs, last_allowed_cpu,
        loadable_backends, median, phase_runs, pin_to_cpu, run_stats, wait_freed,
    },
    summary::{number, upsert_fields_from_env},
    workloads::{Kind, Phase, Status, Workload, calibrate, criterion_batch, phase, workloads},
};
use tracer_common::names;

/// Traced phases of the summary (untraced phases: one more).
const TRACED_PHASES: usize = 8;

/// The targets.
const TARGET_NS_ADDED: f64 = 100.0;
const TARGET_RATIO: f64 = 0.95;
/// `unrelated_syscalls`: the tracer must not slow down what it does not trace.
const TARGET_UNRELATED_RATIO: f64 = 0.99;
/// What the tracer may add per call, in multiples of what the floor adds.
const TARGET_TO_FLOOR: f64 = 2.0;

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
        &[Kind::TcpRr, Kind::TcpBulk, Kind::UdpEcho, Kind::Getppid],
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

/// What a phase of the summary measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Nothing loaded.
    Untraced,
    /// The tracer, with the backend measured.
    Traced,
    /// The floor: empty programs on the hooks the traced phases run per call ([`Floor`]).
    Floor,
    /// The peer: bpftrace counting bytes per socket ([`Peer`]), on `tcp_rr_64` only.
    Peer,
}

impl Mode {
    /// Whether this mode's phases run `workload`.
    fn runs(self, workload: &str) -> bool {
        self != Self::Peer || workload == PEER_WORKLOAD
    }
}

/// The peer's workload (the issue's: 64 B request/response).
const PEER_WORKLOAD: &str = "tcp_rr_64";

/// bpftrace's one-line script: bytes per socket on the tracepoint backend's two tracepoints, as
/// a user of bpftrace would write it (classic tracepoints, `args->`).
const PEER_SCRIPT: &str = "tracepoint:sock:sock_send_length,tracepoint:sock:sock_recv_length \
                           /args->ret > 0/ { @bytes[args->sk] = sum(args->ret); }";

/// The floor of the tracepoint backend: the benchmark-only object's empty programs, loaded and
/// attached, on the hooks the tracer's programs run on per call and per packet:
/// `sock:sock_send_length` / `sock:sock_recv_length` (raw), the four `sock_addr` hooks (the UDP
/// peers) and, since the tracer's default configuration captures packets, both `cgroup_skb`
/// directions. The hooks of events that do not happen per call (state changes, retransmits,
/// releases, `sock_ops`' state callbacks) are left out.
struct Floor {
    _ebpf: aya::Ebpf,
    ids: BTreeSet<u32>,
}

impl Floor {
    fn attach() -> Result<Self, String> {
        use aya::programs::{
            CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, CgroupSockAddr, RawTracePoint,
        };
        let bytes = object::floor_bytes().map_err(|e| e.to_string())?;
        let mut ebpf = aya::Ebpf::load(bytes).map_err(|e| format!("loading the floor: {e}"))?;
        let root = find_cgroup2_root().ok_or("no cgroup v2 hierarchy to attach to")?;
        let mut ids = BTreeSet::new();
        let mut id = |program: &aya::programs::Program, name: &str| -> Result<(), String> {
            let info = program.info().map_err(|e| format!("{name}: {e}"))?;
            ids.insert(info.id());
            Ok(())
        };
        for (name, tracepoint) in [
            (names::PROG_FLOOR_TP_SEND, "sock_send_length"),
            (names::PROG_FLOOR_TP_RECV, "sock_recv_length"),
        ] {
            let program: &mut RawTracePoint = floor_program(&mut ebpf, name)?;
            program.load().map_err(|e| format!("loading {name}: {e}"))?;
            program
                .attach(tracepoint)
                .map_err(|e| format!("attaching {name}: {e}"))?;
        }
        for name in names::PROG_FLOOR_SOCK_ADDR {
            let cgroup = root.open().map_err(|e| format!("opening {root}: {e}"))?;
            let program: &mut CgroupSockAddr = floor_program(&mut ebpf, name)?;
            program.load().map_err(|e| format!("loading {name}: {e}"))?;
            program
                .attach(cgroup, CgroupAttachMode::Single)
                .map_err(|e| format!("attaching {name}: {e}"))?;
        }
        for (name, direction) in [
            (
                names::PROG_PACKET_FLOOR_INGRESS,
                CgroupSkbAttachType::Ingress,
            ),
            (names::PROG_PACKET_FLOOR_EGRESS, CgroupSkbAttachType::Egress),
        ] {
            let cgroup = root.open().map_err(|e| format!("opening {root}: {e}"))?;
            let program: &mut CgroupSkb = floor_program(&mut ebpf, name)?;
            program.load().map_err(|e| format!("loading {name}: {e}"))?;
            program
                .attach(cgroup, direction, CgroupAttachMode::Single)
                .map_err(|e| format!("attaching {name}: {e}"))?;
        }
        // The programs attached above (the object has others, for other benchmarks' floors).
        let attached = [names::PROG_FLOOR_TP_SEND, names::PROG_FLOOR_TP_RECV]
            .into_iter()
            .chain(names::PROG_FLOOR_SOCK_ADDR)
            .chain([
                names::PROG_PACKET_FLOOR_INGRESS,
                names::PROG_PACKET_FLOOR_EGRESS,
            ]);
        for name in attached {
            let program = ebpf
                .program(name)
                .ok_or_else(|| format!("no program {name} in the floor object"))?;
            id(program, name)?;
        }
        Ok(Self { _ebpf: ebpf, ids })
    }

    /// Detaches and drops the programs, and waits until the kernel has freed them.
    fn unload(self) {
        let Self { _ebpf: ebpf, ids } = self;
        drop(ebpf);
        let left = wait_freed(&ids);
        if left > 0 {
            println!("overhead: warning: {left} floor programs still loaded 10 s after dropping");
        }
    }
}

fn floor_program<'a, T>(ebpf: &'a mut aya::Ebpf, name: &str) -> Result<&'a mut T, String>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or_else(|| format!("no program {name} in the floor object"))?
        .try_into()
        .map_err(|e| format!("{name}: {e}"))
}

/// The peer: a bpftrace process running [`PEER_SCRIPT`], attached (it printed that it is).
struct Peer {
    child: std::process::Child,
    ids: BTreeSet<u32>,
}

impl Peer {
    fn attach() -> Result<Self, String> {
        use std::io::{BufRead, BufReader};
        let before = all_programs();
        let mut child = std::process::Command::new("bpftrace")
            .args(["-e", PEER_SCRIPT])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| format!("running bpftrace: {e}"))?;
        // bpftrace prints "Attaching N probes..." before it attaches and nothing after: the
        // programs are attached once they are loaded and both tracepoints' links exist; wait
        // for its programs to appear, then a little for the links.
        let stdout = child.stdout.take().ok_or("bpftrace: no stdout")?;
        let mut line = String::new();
        let read = BufReader::new(stdout).read_line(&mut line);
        if !matches!(read, Ok(n) if n > 0) || !line.starts_with("Attaching") {
            let _ = child.kill();
            let output = child.wait_with_output().map_err(|e| e.to_string())?;
            return Err(format!(
                "bpftrace did not attach: {}{}",
                line.trim(),
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let ids = loop {
            let ids: BTreeSet<u32> = all_programs().difference(&before).copied().collect();
            if ids.len() >= 2 || std::time::Instant::now() > deadline {
                break ids;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        std::thread::sleep(Duration::from_millis(200));
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("bpftrace exited: {status}"));
        }
        Ok(Self { child, ids })
    }

    /// Stops bpftrace (SIGINT: it prints its map and exits) and waits until its programs are
    /// freed.
    fn unload(mut self) {
        // SAFETY: kill has no memory preconditions; the pid is our child's, not yet reaped.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGINT) };
        let _ = self.child.wait();
        let left = wait_freed_any(&self.ids);
        if left > 0 {
            println!(
                "overhead: warning: {left} bpftrace programs still loaded 10 s after it ended"
            );
        }
    }
}

/// Ids of every loaded BPF program.
fn all_programs() -> BTreeSet<u32> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .map(|p| p.id())
        .collect()
}

/// [`wait_freed`] for programs of any name.
fn wait_freed_any(ids: &BTreeSet<u32>) -> usize {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left = all_programs().intersection(ids).count();
        if left == 0 || std::time::Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whatever a phase holds loaded.
enum Held {
    None,
    // Boxed: a loaded tracer is hundreds of bytes, the other variants a few words.
    Tracer(Box<Loaded>),
    Floor(Floor),
    Peer(Peer),
}

impl Held {
    fn attach(mode: Mode, backend: Backend) -> Result<Self, String> {
        Ok(match mode {
            Mode::Untraced => Self::None,
            Mode::Traced => Self::Tracer(Box::new(
                Loaded::with_backend(backend).map_err(|e| format!("loading: {e:?}"))?,
            )),
            Mode::Floor => Self::Floor(Floor::attach()?),
            Mode::Peer => Self::Peer(Peer::attach()?),
        })
    }

    /// Programs this benchmark holds loaded (named `nt_*`: not another tracer's).
    fn own_nt_programs(&self) -> usize {
        match self {
            Self::Tracer(loaded) => loaded.program_count(),
            Self::Floor(floor) => floor.ids.len(),
            Self::None | Self::Peer(_) => 0,
        }
    }

    fn ids(&self) -> BTreeSet<u32> {
        match self {
            Self::None => BTreeSet::new(),
            Self::Tracer(loaded) => loaded.program_ids().clone(),
            Self::Floor(floor) => floor.ids.clone(),
            Self::Peer(peer) => peer.ids.clone(),
        }
    }

    fn unload(self) {
        match self {
            Self::None => {}
            Self::Tracer(loaded) => unload(*loaded),
            Self::Floor(floor) => floor.unload(),
            Self::Peer(peer) => peer.unload(),
        }
    }
}

/// What the kernel's BPF statistics say about one workload: the programs' own run time and run
/// count per send/receive call, in all and per program.
#[derive(Clone, Debug)]
struct ProgramCost {
    ns_per_call: f64,
    runs_per_call: f64,
    /// Program name, runs per call, ns per run; the programs that ran.
    programs: Vec<(String, f64, f64)>,
}

/// Runs one block of every workload that `mode` runs with its programs loaded and the kernel's
/// run-time statistics on. Not part of the comparison (the statistics add two clock reads per
/// run).
fn program_costs(
    mode: Mode,
    backend: Backend,
    workloads: &mut [Box<dyn Workload>],
    iters: &[Option<u64>],
) -> Result<Vec<Option<ProgramCost>>, String> {
    let held = Held::attach(mode, backend)?;
    let ids = held.ids();
    print_sizes(mode, &ids);
    let stats = enable_run_time_stats().map_err(|e| format!("BPF_ENABLE_STATS: {e}"));
    let mut costs = Vec::new();
    for (workload, iters) in workloads.iter_mut().zip(iters) {
        let (Some(iters), Ok(_), true) = (*iters, &stats, mode.runs(workload.name())) else {
            costs.push(None);
            continue;
        };
        let cost = program_cost(&ids, workload.as_mut(), iters).map_err(|e| e.to_string());
        match cost {
            Ok(cost) => costs.push(Some(cost)),
            Err(err) => {
                drop(stats);
                held.unload();
                return Err(err);
            }
        }
    }
    drop(stats);
    held.unload();
    Ok(costs)
}

/// Prints the size of each program of `ids` as the kernel holds it: instructions after the
/// verifier's rewrites (`xlated`, what `bpftool prog dump xlated` shows), bytes of machine code,
/// and the instructions the verifier walked to prove it.
fn print_sizes(mode: Mode, ids: &BTreeSet<u32>) {
    let sizes: Vec<String> = aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter(|p| ids.contains(&p.id()))
        .map(|p| {
            format!(
                "{} {} insns / {} B jited / {} verified",
                p.name_as_str().unwrap_or("?"),
                p.size_translated().unwrap_or(0) / 8,
                p.size_jitted(),
                p.verified_instruction_count().unwrap_or(0)
            )
        })
        .collect();
    println!("overhead: {mode:?} programs: {}", sizes.join(", "));
}

fn program_cost(
    ids: &BTreeSet<u32>,
    workload: &mut dyn Workload,
    iters: u64,
) -> std::io::Result<ProgramCost> {
    workload.run((iters / 10).max(1))?;
    let before = run_stats(ids);
    let sample = workload.run(iters)?;
    let during = run_stats(ids);
    // The programs also run for every other process's sockets: as long again without the
    // workload gives that background, which is subtracted.
    std::thread::sleep(sample.wall);
    let after = run_stats(ids);
    let calls = sample.calls.max(1) as f64;
    let mut cost = ProgramCost {
        ns_per_call: 0.0,
        runs_per_call: 0.0,
        programs: Vec::new(),
    };
    for (name, runs, ns) in phase_runs(&before, &during, &after) {
        cost.ns_per_call += ns / calls;
        cost.runs_per_call += runs as f64 / calls;
        cost.programs
            .push((name, runs as f64 / calls, ns / runs as f64));
    }
    Ok(cost)
}

/// The modes of the summary's phases for `backend`, in order: U T U F U P ... U. The floor is
/// built for the tracepoint backend (the only one with a floor object); the peer runs when
/// bpftrace is installed.
fn sequence(backend: Backend) -> Vec<Mode> {
    let mut modes = vec![Mode::Traced];
    if backend == Backend::Tracepoint {
        modes.push(Mode::Floor);
        match std::process::Command::new("bpftrace")
            .arg("--version")
            .output()
        {
            Ok(out) if out.status.success() => modes.push(Mode::Peer),
            Ok(out) => println!(
                "overhead/{backend}/peer_bpftrace: bpftrace --version failed ({}): no peer row",
                out.status
            ),
            Err(err) => println!(
                "overhead/{backend}/peer_bpftrace: bpftrace is not installed ({err}): no peer row"
            ),
        }
    }
    let mut sequence = vec![Mode::Untraced];
    for _ in 0..TRACED_PHASES {
        for &mode in &modes {
            sequence.push(mode);
            sequence.push(Mode::Untraced);
        }
    }
    sequence
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
    let mut modes = sequence(backend);
    // Per workload, the phases in sequence order (`None`: the mode did not run the workload).
    let mut phases: Vec<Vec<Option<Phase>>> = workloads.iter().map(|_| Vec::new()).collect();
    let mut contaminated = false;
    let mut index = 0;
    while let Some(&mode) = modes.get(index) {
        let held = match Held::attach(mode, backend) {
            Ok(held) => held,
            Err(err) if mode == Mode::Peer => {
                // Recorded as the peer row's note; the other modes go on.
                println!("overhead/{backend}/peer_bpftrace: {err}");
                write_note(&format!("overhead/{backend}/peer_bpftrace"), &err);
                modes = without_peer(&modes, index, &mut phases);
                continue;
            }
            Err(err) => return Err(err),
        };
        contaminated |= foreign_programs("overhead", "summary", held.own_nt_programs()) > 0;
        for ((workload, iters), phases) in workloads.iter_mut().zip(&iters).zip(&mut phases) {
            match *iters {
                Some(iters) if mode.runs(workload.name()) => {
                    let result = phase(workload.as_mut(), iters);
                    phases.push(Some(
                        result.map_err(|e| format!("{}: {e}", workload.name()))?,
                    ));
                }
                _ => phases.push(None),
            }
        }
        held.unload();
        index += 1;
    }
    let mut costs = Vec::new();
    for mode in [Mode::Traced, Mode::Floor, Mode::Peer] {
        if !modes.contains(&mode) {
            costs.push(Vec::new());
            continue;
        }
        costs.push(
            program_costs(mode, backend, workloads, &iters).unwrap_or_else(|err| {
                println!("overhead/{backend}: {mode:?}: no BPF run-time statistics: {err}");
                Vec::new()
            }),
        );
    }
    let cost = |mode: usize, workload: usize| {
        costs
            .get(mode)
            .and_then(|c| c.get(workload))
            .cloned()
            .flatten()
    };
    let mut floor_fields = Vec::new();
    for (index, workload) in workloads.iter().enumerate() {
        let Some(sequence) = phases.get(index) else {
            continue;
        };
        let name = workload.name();
        let traced = compare(&modes, sequence, Mode::Traced);
        let Some(traced) = traced else {
            continue;
        };
        let floor = compare(&modes, sequence, Mode::Floor);
        let row = format!("overhead/{backend}/{name}");
        let mut fields = report(&row, name, &traced, cost(0, index), contaminated);
        if let Some(floor) = &floor {
            let floor_row = format!("overhead/{backend}/floor ({name})");
            let floor_report = report(&floor_row, name, floor, cost(1, index), contaminated);
            let to_floor = traced.ns_added / floor.ns_added;
            println!(
                "{row}: against the floor: traced adds {:+.1} ns per call, the floor {:+.1}: \
                 {to_floor:.2}x the floor [target <= {TARGET_TO_FLOOR}x {}]",
                traced.ns_added,
                floor.ns_added,
                if to_floor <= TARGET_TO_FLOOR && to_floor > 0.0 {
                    "met"
                } else {
                    "missed"
                }
            );
            fields.push(("floor_ns_added", number(floor.ns_added)));
            fields.push(("ratio_to_floor", number(to_floor)));
            if let (Some(ours), Some(empty)) = (cost(0, index), cost(1, index))
                && empty.ns_per_call > 0.0
            {
                // The programs' own time against the empty programs' on the same hooks: both
                // include the statistics' two clock reads per run, so the difference is what
                // the tracer's work costs beyond attaching at all. Steadier than the phase
                // comparisons above, whose noise on this machine exceeds 100 ns per call.
                let above = ours.ns_per_call - empty.ns_per_call;
                let ratio = ours.ns_per_call / empty.ns_per_call;
                println!(
                    "{row}: BPF run time against the floor's: {:.1} vs {:.1} ns per call, \
                     {above:+.1} ns ({ratio:.2}x)",
                    ours.ns_per_call, empty.ns_per_call
                );
                fields.push(("bpf_ns_above_floor", number(above)));
                fields.push(("bpf_to_floor", number(ratio)));
            }
            for (key, value) in floor_report {
                floor_fields.push((format!("{name}_{key}"), value));
            }
            floor_fields.push((format!("{name}_traced_to_floor"), number(to_floor)));
        }
        if let Err(err) = upsert_fields_from_env(&row, fields) {
            eprintln!("{row}: cannot write the bench summary: {err}");
        }
        if let Some(peer) = compare(&modes, sequence, Mode::Peer) {
            let peer_row = format!("overhead/{backend}/peer_bpftrace");
            let mut peer_fields = report(&peer_row, name, &peer, cost(2, index), contaminated);
            println!(
                "{peer_row}: {name}: bpftrace adds {:+.1} ns per call, the tracer {:+.1} ns \
                 ({:.2}x bpftrace)",
                peer.ns_added,
                traced.ns_added,
                traced.ns_added / peer.ns_added
            );
            peer_fields.push(("workload", serde_json::Value::from(name)));
            peer_fields.push(("tracer_ns_added", number(traced.ns_added)));
            peer_fields.push(("tracer_to_peer", number(traced.ns_added / peer.ns_added)));
            peer_fields.push(("script", serde_json::Value::from(PEER_SCRIPT)));
            if let Err(err) = upsert_fields_from_env(&peer_row, peer_fields) {
                eprintln!("{peer_row}: cannot write the bench summary: {err}");
            }
        }
    }
    if !floor_fields.is_empty() {
        let row = format!("overhead/{backend}/floor");
        let fields: Vec<(&str, serde_json::Value)> = floor_fields
            .iter()
            .map(|(key, value)| (key.as_str(), value.clone()))
            .collect();
        if let Err(err) = upsert_fields_from_env(&row, fields) {
            eprintln!("{row}: cannot write the bench summary: {err}");
        }
    }
    Ok(())
}

/// The sequence without its peer phases from `index` on (bpftrace did not attach), with the
/// untraced phase after each dropped; the phases measured so far keep their places.
fn without_peer(modes: &[Mode], index: usize, phases: &mut [Vec<Option<Phase>>]) -> Vec<Mode> {
    let (done, rest) = modes.split_at(index.min(modes.len()));
    let mut kept = done.to_vec();
    let mut skip_next = false;
    for &mode in rest {
        if mode == Mode::Peer {
            skip_next = true;
        } else if skip_next && mode == Mode::Untraced {
            skip_next = false;
        } else {
            kept.push(mode);
        }
    }
    for sequence in phases {
        sequence.truncate(index);
    }
    kept
}

/// Writes a row that only carries a note (a measurement that could not be made here).
fn write_note(row: &str, note: &str) {
    if let Err(err) = upsert_fields_from_env(row, [("note", serde_json::Value::from(note))]) {
        eprintln!("{row}: cannot write the bench summary: {err}");
    }
}

/// Each `mode` phase of one workload compared with the mean of the untraced phases on both
/// sides of it.
struct Comparison {
    added: Vec<f64>,
    ratios: Vec<f64>,
    wall_added: Vec<f64>,
    wall_ratios: Vec<f64>,
    calls: f64,
    untraced_ns: f64,
    mode_ns: f64,
    ns_added: f64,
    ratio: f64,
}

fn compare(modes: &[Mode], sequence: &[Option<Phase>], mode: Mode) -> Option<Comparison> {
    let mut comparison = Comparison {
        added: Vec::new(),
        ratios: Vec::new(),
        wall_added: Vec::new(),
        wall_ratios: Vec::new(),
        calls: 0.0,
        untraced_ns: f64::NAN,
        mode_ns: f64::NAN,
        ns_added: f64::NAN,
        ratio: f64::NAN,
    };
    let mut untraced = Vec::new();
    let mut measured = Vec::new();
    for (index, (&m, phase)) in modes.iter().zip(sequence).enumerate() {
        let Some(phase) = phase else {
            continue;
        };
        if m == Mode::Untraced {
            untraced.push(phase.cpu());
        }
        if m != mode {
            continue;
        }
        let neighbour = |i: Option<usize>| {
            i.and_then(|i| sequence.get(i))
                .and_then(Option::as_ref)
                .filter(|_| i.and_then(|i| modes.get(i)) == Some(&Mode::Untraced))
        };
        let (Some(before), Some(after)) =
            (neighbour(index.checked_sub(1)), neighbour(Some(index + 1)))
        else {
            continue;
        };
        let cpu = (before.cpu() + after.cpu()) / 2.0;
        let wall = (before.wall() + after.wall()) / 2.0;
        let calls = phase.calls.max(1.0);
        comparison.added.push((phase.cpu() - cpu) / calls);
        comparison.ratios.push(cpu / phase.cpu());
        comparison.wall_added.push((phase.wall() - wall) / calls);
        comparison.wall_ratios.push(wall / phase.wall());
        comparison.calls += phase.calls;
        measured.push(phase.cpu());
    }
    if measured.is_empty() {
        return None;
    }
    comparison.calls /= measured.len() as f64;
    comparison.untraced_ns = median(&untraced);
    comparison.mode_ns = median(&measured);
    comparison.ns_added = median(&comparison.added);
    comparison.ratio = median(&comparison.ratios);
    Some(comparison)
}

/// Prints one comparison and returns its summary fields.
fn report(
    row: &str,
    name: &str,
    c: &Comparison,
    cost: Option<ProgramCost>,
    warn: bool,
) -> Vec<(&'static str, serde_json::Value)> {
    let (ns_added, ratio) = (c.ns_added, c.ratio);
    let (wall_ns_added, wall_ratio) = (median(&c.wall_added), median(&c.wall_ratios));
    let (untraced_ns, traced_ns, calls) = (c.untraced_ns, c.mode_ns, c.calls);
    let verdict = |ok: bool| if ok { "met" } else { "missed" };
    let targets = if name == Kind::Getppid.name() {
        format!(
            "target ratio >= {TARGET_UNRELATED_RATIO} {}",
            verdict(ratio >= TARGET_UNRELATED_RATIO)
        )
    } else if name == "tcp_bulk_64k" {
        format!(
            "target <= {TARGET_NS_ADDED} ns/call {}",
            verdict(ns_added <= TARGET_NS_ADDED)
        )
    } else {
        format!(
            "target <= {TARGET_NS_ADDED} ns/call {}, target ratio >= {TARGET_RATIO} {}",
            verdict(ns_added <= TARGET_NS_ADDED),
            verdict(ratio >= TARGET_RATIO)
        )
    };
    println!(
        "{row}: {name}: {calls:.2} calls/iter, untraced {untraced_ns:.0} ns/iter, measured \
         {traced_ns:.0} ns/iter: {ns_added:+.1} ns per call, throughput ratio {ratio:.3} \
         [{targets}]; wall time: {wall_ns_added:+.1} ns per call, ratio {wall_ratio:.3}"
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
        "{row}: {name}: per phase, ns/call [{}] (interquartile range {}), wall ns/call [{}] \
         (interquartile range {}){}",
        list(&c.added),
        spread(&c.added),
        list(&c.wall_added),
        spread(&c.wall_added),
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
            "{row}: {name}: BPF run-time statistics: the programs ran {:.2} times and {:.1} ns \
             per call ({})",
            cost.runs_per_call,
            cost.ns_per_call,
            programs.join(", ")
        );
        fields.push(("bpf_ns_per_call", number(cost.ns_per_call)));
        fields.push(("bpf_runs_per_call", number(cost.runs_per_call)));
    }
    fields
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
