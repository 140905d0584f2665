//! Support for the privileged benchmarks (`overhead`, `e2e`, `capture`), which load the real eBPF tracer:
//! loading a tracer and waiting for the kernel to free its programs after dropping it, the
//! backends that load on this host, the descriptor limit, and criterion's run mode.

use std::{
    collections::{BTreeMap, BTreeSet},
    io,
    os::fd::OwnedFd,
    sync::atomic::{AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use tracer::{Backend, BackendChoice, Config, Error, Tracer};

/// How long [`Loaded::unload`] waits for the kernel to free the programs.
pub const UNLOAD_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether the binary runs as a benchmark (`cargo bench` passes `--bench`), rather than in
/// criterion's test mode (`cargo test --benches`, `cargo bench -- --test`) or `--list`: the
/// parts that criterion does not drive (summary loops, creating 100k sockets) run only then.
pub fn bench_mode() -> bool {
    let args: Vec<String> = std::env::args().collect();
    args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--test" || a == "--list")
}

/// The effective user id.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Ids of the loaded BPF programs named `nt_*`: every tracer's, this process's or another's.
pub fn tracer_programs() -> BTreeSet<u32> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter(|p| p.name_as_str().is_some_and(|n| n.starts_with("nt_")))
        .map(|p| p.id())
        .collect()
}

/// Ids of the BPF programs this process holds a descriptor of (program or link descriptors,
/// from `/proc/self/fdinfo`): those of the tracers it loaded, never another process's.
pub fn own_programs() -> BTreeSet<u32> {
    let Ok(entries) = std::fs::read_dir("/proc/self/fdinfo") else {
        return BTreeSet::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| std::fs::read_to_string(entry.path()).ok())
        .filter_map(|info| {
            info.lines()
                .find_map(|line| line.strip_prefix("prog_id:"))
                .and_then(|id| id.trim().parse().ok())
        })
        .collect()
}

/// A loaded tracer and the ids of its programs.
pub struct Loaded {
    pub tracer: Tracer,
    programs: BTreeSet<u32>,
}

impl Loaded {
    /// Loads a tracer with `config`.
    pub fn new(config: Config) -> Result<Self, Error> {
        let before = own_programs();
        let tracer = Tracer::new(config)?;
        let programs = own_programs().difference(&before).copied().collect();
        Ok(Self { tracer, programs })
    }

    /// Loads a tracer with `backend` forced and the default configuration otherwise.
    pub fn with_backend(backend: Backend) -> Result<Self, Error> {
        Self::new(Config {
            backend: BackendChoice::Force(backend),
            ..Config::default()
        })
    }

    /// Number of programs this tracer attached.
    pub fn program_count(&self) -> usize {
        self.programs.len()
    }

    /// The ids of this tracer's programs.
    pub fn program_ids(&self) -> &BTreeSet<u32> {
        &self.programs
    }

    /// Run time and run count so far of each of this tracer's programs (by name), as the
    /// kernel's BPF statistics report them (they only move while [`enable_run_time_stats`] is
    /// held).
    pub fn run_stats(&self) -> BTreeMap<String, (Duration, u64)> {
        run_stats(&self.programs)
    }

    /// Drops the tracer (which detaches its programs and closes its descriptors), then waits,
    /// at most [`UNLOAD_TIMEOUT`], until the kernel has freed its programs (it does so
    /// asynchronously, after an RCU grace period). Returns how many were still loaded when
    /// it stopped waiting (0: all freed).
    pub fn unload(self) -> usize {
        let Self { tracer, programs } = self;
        drop(tracer);
        wait_freed(&programs)
    }
}

/// Run time and run count so far of each of the programs `ids` (by name), as the kernel's BPF
/// statistics report them (they only move while [`enable_run_time_stats`] is held).
pub fn run_stats(ids: &BTreeSet<u32>) -> BTreeMap<String, (Duration, u64)> {
    let mut stats = BTreeMap::new();
    for program in aya::programs::loaded_programs().filter_map(Result::ok) {
        if ids.contains(&program.id()) {
            let name = program.name_as_str().unwrap_or("?").to_owned();
            let entry = stats.entry(name).or_insert((Duration::ZERO, 0));
            entry.0 += program.run_time();
            entry.1 += program.run_count();
        }
    }
    stats
}

/// Each program's runs and run time (ns) in a measured phase: the statistics `during` minus
/// those `before` it, minus the background of an equally long stretch without the workload
/// (`after` minus `during`: the programs run for every other process's sockets and packets
/// too). Programs that did not run are left out.
pub fn phase_runs(
    before: &BTreeMap<String, (Duration, u64)>,
    during: &BTreeMap<String, (Duration, u64)>,
    after: &BTreeMap<String, (Duration, u64)>,
) -> Vec<(String, u64, f64)> {
    let mut out = Vec::new();
    for (name, &(time_during, count_during)) in during {
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
        out.push((name.clone(), runs, ns));
    }
    out
}

/// Waits, at most [`UNLOAD_TIMEOUT`], until the kernel has freed the programs `ids` (after
/// their last descriptor and link are dropped, asynchronously, after an RCU grace period).
/// Returns how many were still loaded when it stopped waiting (0: all freed).
pub fn wait_freed(ids: &BTreeSet<u32>) -> usize {
    let deadline = Instant::now() + UNLOAD_TIMEOUT;
    loop {
        let left = tracer_programs().intersection(ids).count();
        if left == 0 || Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Counts the programs (`nt_*`) loaded besides the `ours` this benchmark loaded: another
/// tracer's, which make an untraced measurement a traced one. Warns, naming `bench` and
/// `when`, when that count changes.
pub fn foreign_programs(bench: &str, when: &str, ours: usize) -> usize {
    static LAST: AtomicUsize = AtomicUsize::new(0);
    let foreign = tracer_programs().len().saturating_sub(ours);
    if LAST.swap(foreign, Ordering::Relaxed) != foreign {
        if foreign == 0 {
            println!("{bench}: no other tracer's programs are loaded any more ({when})");
        } else {
            println!(
                "{bench}: warning: {foreign} nt_* programs of another tracer are loaded from \
                 now on ({when}): they hook these workloads too, untraced or not"
            );
        }
    }
    foreign
}

/// Turns on the kernel's run-time statistics of every BPF program (`BPF_ENABLE_STATS`, 5.8+)
/// until the returned descriptor is dropped. They cost two clock reads per program run.
pub fn enable_run_time_stats() -> io::Result<OwnedFd> {
    aya::sys::enable_stats(aya::sys::Stats::RunTime).map_err(|e| io::Error::other(e.to_string()))
}

/// Pins the calling thread to `cpu`.
pub fn pin_to_cpu(cpu: usize) -> io::Result<()> {
    // SAFETY: an all-zero cpu_set_t is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(io::Error::other(format!("cpu {cpu} out of range")));
    }
    // SAFETY: `cpu` is below CPU_SETSIZE; `set` is a valid set.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a valid cpu_set_t of the size passed; pid 0 is the calling thread.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The highest CPU the calling thread may run on.
pub fn last_allowed_cpu() -> io::Result<usize> {
    // SAFETY: an all-zero cpu_set_t is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a writable cpu_set_t of the size passed; pid 0 is the calling thread.
    let rc =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    (0..libc::CPU_SETSIZE as usize)
        .rev()
        // SAFETY: every index is below CPU_SETSIZE.
        .find(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .ok_or_else(|| io::Error::other("no allowed CPU"))
}

/// Which backends load here. Prints one line per backend: the plan's reason for those that
/// load, the typed error for those that do not. Each tracer is unloaded again before the next.
pub fn loadable_backends(bench: &str) -> Vec<Backend> {
    let mut loaded = Vec::new();
    for backend in Backend::PREFERENCE {
        match Loaded::with_backend(backend) {
            Ok(tracer) => {
                println!(
                    "{bench}: backend {backend} loads ({} programs; {})",
                    tracer.program_count(),
                    tracer.tracer.plan().reason
                );
                let left = tracer.unload();
                if left > 0 {
                    println!("{bench}: warning: {left} {backend} programs not freed after drop");
                }
                loaded.push(backend);
            }
            Err(err) => println!("{bench}: backend {backend} does not load: {err:?}"),
        }
    }
    loaded
}

/// The soft and hard `RLIMIT_NOFILE`.
pub fn nofile_limits() -> io::Result<(u64, u64)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid rlimit to write to.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((limit.rlim_cur, limit.rlim_max))
}

/// Raises the soft `RLIMIT_NOFILE` to `want`, raising the hard limit too if needed and
/// permitted (`CAP_SYS_RESOURCE`, which root may lack in a container), else to the hard limit.
/// Returns the new soft limit.
pub fn raise_nofile(want: u64) -> io::Result<u64> {
    let (soft, hard) = nofile_limits()?;
    if soft >= want {
        return Ok(soft);
    }
    let set = |soft: u64, hard: u64| {
        let limit = libc::rlimit {
            rlim_cur: soft,
            rlim_max: hard,
        };
        // SAFETY: `limit` is a valid rlimit to read from.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(soft)
    };
    if want <= hard {
        return set(want, hard);
    }
    set(want, want).or_else(|_| set(hard, hard))
}

/// CPU time of the whole process so far (every thread, user and system, including the softirq
/// work the kernel charges to them), from `CLOCK_PROCESS_CPUTIME_ID`.
pub fn process_cpu_time() -> Duration {
    cpu_clock(libc::CLOCK_PROCESS_CPUTIME_ID)
}

/// CPU time of the calling thread so far, from `CLOCK_THREAD_CPUTIME_ID`.
pub fn thread_cpu_time() -> Duration {
    cpu_clock(libc::CLOCK_THREAD_CPUTIME_ID)
}

fn cpu_clock(clock: libc::clockid_t) -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid timespec pointer; both CPU-time clocks always exist on Linux.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    Duration::new(
        u64::try_from(ts.tv_sec).unwrap_or(0),
        u32::try_from(ts.tv_nsec).unwrap_or(0),
    )
}

/// The median of `values` (the mean of the two middle ones for an even count); `NaN` if empty.
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let (Some(&upper), Some(&lower)) = (sorted.get(n / 2), sorted.get(n.saturating_sub(1) / 2))
    else {
        return f64::NAN;
    };
    (lower + upper) / 2.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&[5.0]), 5.0);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn cpu_times_move_forward() {
        let (process, thread) = (process_cpu_time(), thread_cpu_time());
        let mut x = 0u64;
        for i in 0..1_000_000u64 {
            x = std::hint::black_box(x.wrapping_add(i));
        }
        assert!(process_cpu_time() > process, "{x}");
        assert!(thread_cpu_time() > thread, "{x}");
    }
}
