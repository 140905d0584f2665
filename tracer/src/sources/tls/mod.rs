//! HTTPS: the userspace owner of the TLS uprobes (`tracer-ebpf/src/tls/`). The uprobes turn
//! the plaintext of TLS library calls into the same `HttpTransaction` records the packet
//! capture writes, in the same ring, so the HTTP source (`sources/http`) counts them with the
//! same rules; this module decides where the uprobes are attached.
//!
//! The file registry ([`registry`], the seed's): a periodic scan of `/proc/<pid>/maps`
//! ([`scan`]) finds the processes that map a TLS library (by file-name prefix:
//! `libssl.so`, `libgnutls.so`); each distinct file (device + inode) is hooked once and
//! released when no process maps it any more. The exec watch (`sched:sched_process_exec`,
//! `tracer-ebpf/src/tls/exec.rs`) names the processes that start: their maps are read
//! [`EXEC_SETTLE`] later (the loader maps their libraries after the exec; the execs of that
//! wait are taken with it, so a burst is one scan), so a process that starts is hooked before
//! the next periodic scan, which stays the backstop (and the only one that releases). Counters: files hooked, processes, attach
//! failures by reason, files blocked, released, over the cap; [`Tls::log`] is the seed's `Log`.
//!
//! Statically linked TLS (Go's crypto/tls, a binary with OpenSSL built in) is not hookable
//! here: a process with connections classified TLS that maps no hooked library is counted
//! (`tls_processes_not_hookable`), so users know what is missing.

pub mod registry;
pub mod scan;

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    sync::atomic::Ordering,
    time::Duration,
};

use aya::programs::{ProgramError, uprobe::UProbeLinkId};
use parking_lot::Mutex;

pub use crate::kernel::probes::TlsLibrary as Library;
use crate::{
    Error, Result, counter_set,
    kernel::conn_tracer::ConnTracer,
    telemetry::{CounterSource, Sample},
};
use registry::{AttachFailure, Hooker, Registry};

/// How long after a process's exec its maps are read: the dynamic loader maps its libraries
/// after the exec returns (a few milliseconds).
pub const EXEC_SETTLE: Duration = Duration::from_millis(50);

/// Processes remembered as not hookable (distinct pids), at most.
const MAX_NOT_HOOKABLE: usize = 4096;

/// HTTPS through uprobes on TLS libraries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsConfig {
    /// On by default; needs the capture's HTTP path (`capture.http`, `http.enabled`).
    pub enabled: bool,
    /// The libraries hooked (default: OpenSSL and GnuTLS).
    pub libraries: Vec<Library>,
    /// At most this many library files hooked at once (default 64); more are counted
    /// (`tls_files_capped`) and hooked when others are released.
    pub max_files: usize,
    /// How often `/proc` is scanned for processes that map a TLS library (default 2 s): a
    /// process that starts is hooked within one refresh.
    pub refresh: Duration,
    /// TLS objects (connections) tied to their sockets at once, kernel side (default 4096,
    /// LRU).
    pub max_objects: u32,
    /// Where processes are listed (default `/proc`).
    pub proc_root: PathBuf,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            libraries: Library::ALL.to_vec(),
            max_files: 64,
            refresh: Duration::from_secs(2),
            max_objects: tracer_common::tls::TLS_DEFAULT_MAX_OBJECTS,
            proc_root: PathBuf::from("/proc"),
        }
    }
}

impl TlsConfig {
    /// Rejects what cannot work.
    pub fn validate(&self) -> Result<()> {
        if !self.enabled {
            return Ok(());
        }
        if self.libraries.is_empty() || self.max_files == 0 {
            return Err(Error::InvalidConfig(
                "tls: libraries and max_files must not be empty or 0 (use enabled = false)"
                    .to_owned(),
            ));
        }
        if self.max_objects == 0 || self.max_objects > 1 << 20 {
            return Err(Error::InvalidConfig(format!(
                "tls.max_objects must be in 1..={}, got {}",
                1 << 20,
                self.max_objects
            )));
        }
        if self.refresh < Duration::from_millis(10) {
            return Err(Error::InvalidConfig(
                "tls.refresh must be at least 10 ms".to_owned(),
            ));
        }
        Ok(())
    }
}

counter_set! {
    /// Counters of the TLS file registry.
    pub struct TlsCounters {
        /// TLS library files hooked now.
        tls_files_hooked: Gauge,
        /// Processes that map a hooked TLS library file now.
        tls_processes: Gauge,
        /// TLS library files refused and not retried (a required symbol missing, a bad file, the kernel refused).
        tls_files_blocked: Gauge,
        /// TLS library files hooked (each distinct file once per time it was mapped).
        tls_files_attached: Activity,
        /// TLS library files released: no process mapped them any more.
        tls_files_released: Activity,
        /// Attach failures: a required symbol is missing from the file.
        tls_attach_failed_no_symbol: Loss,
        /// Attach failures: the file could not be read or is not a valid ELF object.
        tls_attach_failed_bad_file: Loss,
        /// Attach failures: the kernel refused the uprobe.
        tls_attach_failed_kernel: Loss,
        /// TLS library files not hooked because max_files were (retried at the next scan).
        tls_files_capped: Loss,
        /// Scans of /proc for TLS libraries.
        tls_scans: Activity,
        /// Scans of started processes' maps, on the exec watch's word.
        tls_exec_scans: Activity,
        /// Processes scanned on the exec watch's word.
        tls_exec_processes: Activity,
        /// Processes seen with TLS connections that map no hooked TLS library (statically linked TLS, Go's crypto/tls): their HTTPS is not seen.
        tls_processes_not_hookable: Gauge,
    }
}

/// The registry's attacher: the kernel's loaded TLS programs.
struct Kernel<'a>(&'a ConnTracer);

impl Hooker for Kernel<'_> {
    type Link = UProbeLinkId;

    fn attach(
        &self,
        program: &'static str,
        path: &Path,
        symbol: &str,
    ) -> std::result::Result<UProbeLinkId, AttachFailure> {
        self.0
            .attach_uprobe(program, path, symbol)
            .map_err(classify_failure)
    }

    fn detach(&self, program: &'static str, link: UProbeLinkId) {
        if let Err(e) = self.0.detach_uprobe(program, link) {
            tracing::warn!(program, error = %e, "TLS uprobe detach failed");
        }
    }
}

/// Sorts aya's error into a reason (its symbol errors are only told apart by their text).
fn classify_failure(e: ProgramError) -> AttachFailure {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    match &e {
        ProgramError::UProbeError(aya::programs::uprobe::UProbeError::SymbolError { .. })
            // Not in the file's symbols; a stripped file's search goes on to its debuglink
            // file, whose absence (or another build) is the same answer.
            if ["unknown symbol", "does not appear", "debuglink", "mismatched build IDs"]
                .iter()
                .any(|needle| text.contains(needle)) =>
        {
            AttachFailure::NoSymbol(text)
        }
        ProgramError::UProbeError(_) => AttachFailure::BadFile(text),
        _ => AttachFailure::Kernel(text),
    }
}

/// The TLS source: its registry and counters.
#[derive(Debug)]
pub struct Tls {
    config: TlsConfig,
    prefixes: Vec<(Library, String)>,
    registry: Mutex<Registry<UProbeLinkId>>,
    not_hookable: Mutex<BTreeSet<u32>>,
    /// When the last scan of every process ran.
    last_full: Mutex<std::time::Instant>,
    counters: TlsCounters,
}

impl Tls {
    /// An empty registry for `config`.
    pub fn new(config: &TlsConfig) -> Self {
        Self {
            prefixes: config
                .libraries
                .iter()
                .map(|l| (*l, l.file_prefix().to_owned()))
                .collect(),
            registry: Mutex::new(Registry::new(config.max_files)),
            not_hookable: Mutex::new(BTreeSet::new()),
            last_full: Mutex::new(std::time::Instant::now()),
            counters: TlsCounters::default(),
            config: config.clone(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &TlsConfig {
        &self.config
    }

    /// One refresh: scans `/proc` and attaches or releases hooks in `kernel`.
    pub fn refresh(&self, kernel: &ConnTracer) {
        let scan = scan::scan(&self.config.proc_root, &self.prefixes);
        crate::telemetry::bump(&self.counters.tls_scans, 1);
        *self.last_full.lock() = std::time::Instant::now();
        self.registry
            .lock()
            .update(&scan, &Kernel(kernel), &self.counters);
    }

    /// The registry thread's wake-up: the exec watch's ring became readable, or `refresh`
    /// passed. Scans the processes that started, then every process when `refresh` passed
    /// since the last full scan.
    pub fn wake(&self, kernel: &ConnTracer) {
        let mut pids = Vec::new();
        kernel.drain_tls_exec(&mut pids);
        if !pids.is_empty() {
            std::thread::sleep(EXEC_SETTLE);
            kernel.drain_tls_exec(&mut pids);
            let pids: BTreeSet<u32> = pids.into_iter().collect();
            let scan = scan::scan_pids(&self.config.proc_root, &pids, &self.prefixes);
            crate::telemetry::bump(&self.counters.tls_exec_scans, 1);
            crate::telemetry::bump(&self.counters.tls_exec_processes, pids.len() as u64);
            self.registry
                .lock()
                .add(&scan, &Kernel(kernel), &self.counters);
        }
        // A poll that timed out a little early still counts as a period.
        let due = self.config.refresh.mul_f32(0.9);
        if self.last_full.lock().elapsed() >= due {
            self.refresh(kernel);
        }
    }

    /// Notes the owners of connections classified TLS: those that map no hooked library are
    /// counted as not hookable.
    pub fn note_tls_owners(&self, pids: impl IntoIterator<Item = u32>) {
        let registry = self.registry.lock();
        let mut seen = self.not_hookable.lock();
        for pid in pids {
            if pid != 0 && !registry.hooks_pid(pid) && seen.len() < MAX_NOT_HOOKABLE {
                seen.insert(pid);
            }
        }
        // Processes that exited are forgotten.
        let root = &self.config.proc_root;
        seen.retain(|pid| root.join(pid.to_string()).exists());
        self.counters
            .tls_processes_not_hookable
            .store(seen.len() as u64, Ordering::Relaxed);
    }

    /// Whether process `pid` is counted as not hookable (`tls_processes_not_hookable`).
    pub fn not_hookable(&self, pid: u32) -> bool {
        self.not_hookable.lock().contains(&pid)
    }

    /// Detaches every hook.
    pub fn clear(&self, kernel: &ConnTracer) {
        self.registry.lock().clear(&Kernel(kernel));
    }

    /// The seed's `Log`: the registry's files, through `tracing`.
    pub fn log(&self) {
        self.registry.lock().log();
    }

    /// The counters.
    pub fn counters(&self) -> &TlsCounters {
        &self.counters
    }
}

impl CounterSource for Tls {
    fn collect(&self, out: &mut Vec<Sample>) {
        self.counters.collect(out);
    }
}
