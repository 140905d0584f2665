//! The library's single error type.

use std::{io, path::PathBuf};

/// Result alias used across the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every way the library can fail. Kernel-feature errors name the missing piece and, where it
/// applies, the first kernel version that has it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The process lacks the privileges to load and attach the programs: root, or CAP_BPF,
    /// CAP_PERFMON and CAP_NET_ADMIN (or CAP_SYS_ADMIN, which implies all three).
    #[error(
        "insufficient privileges: {0} (run as root, or with CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN \
         and CAP_DAC_READ_SEARCH, CAP_DAC_OVERRIDE for the kprobe backend; see the README's \
         capabilities section)"
    )]
    NotPermitted(String),

    /// A kernel feature the tracer needs is missing.
    #[error(
        "kernel feature missing: {feature} (needs Linux {min_kernel} or newer; running {running})"
    )]
    NotSupported {
        /// What is missing, e.g. "BPF ring buffer".
        feature: &'static str,
        /// The first kernel version that has it, e.g. "5.8".
        min_kernel: &'static str,
        /// The running kernel release.
        running: String,
    },

    /// No attach backend can run on this kernel (or the forced one cannot).
    #[error("no usable attach backend on Linux {running}: {reasons}")]
    NoBackend {
        /// The running kernel release.
        running: String,
        /// Why each candidate backend was rejected.
        reasons: String,
    },

    /// tracefs is not mounted and could not be mounted (mounting needs CAP_SYS_ADMIN).
    #[error(
        "tracefs is not mounted at /sys/kernel/tracing and mounting it failed: {0} (mounting \
         needs CAP_SYS_ADMIN; or mount it beforehand: mount -t tracefs tracefs /sys/kernel/tracing)"
    )]
    TracefsUnavailable(#[source] io::Error),

    /// tracefs is mounted but this process may not read it: its directory is root-only (mode
    /// 700 on most systems) and the process is neither its owner nor holds CAP_DAC_READ_SEARCH.
    #[error(
        "tracefs is mounted at {path} but this process cannot read it: {source} (the directory \
         is mode {mode:o}, owner uid {owner}; this process runs as uid {uid} without \
         {missing}: run as root or add {missing})"
    )]
    TracefsUnreadable {
        /// The tracefs mount point.
        path: PathBuf,
        /// Permission bits of the mount point.
        mode: u32,
        /// Owner of the mount point.
        owner: u32,
        /// The process's effective uid.
        uid: u32,
        /// The capability that lets a non-owner read it: `CAP_DAC_READ_SEARCH`.
        missing: &'static str,
        /// The error reading it returned.
        #[source]
        source: io::Error,
    },

    /// A tracepoint's format file could not be read or lacks a field the programs need.
    #[error("tracepoint {tracepoint}: {reason}")]
    TracepointFormat {
        /// `category/name` of the tracepoint.
        tracepoint: String,
        /// What went wrong.
        reason: String,
    },

    /// Kernel BTF is missing or lacks a type or member the programs need.
    #[error("BTF ({path}): {reason}")]
    Btf {
        /// The BTF file that was read.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },

    /// The caller's configuration is invalid.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),

    /// Below Linux 5.11 the kernel charges BPF maps and programs to RLIMIT_MEMLOCK: creating
    /// one failed with EPERM under a finite limit this process could not raise to unlimited
    /// (that takes CAP_SYS_RESOURCE, or a hard limit of unlimited).
    #[error(
        "{what}: EPERM from RLIMIT_MEMLOCK: Linux {running} charges BPF maps and programs to it, \
         and it is {soft} bytes (hard limit {hard}), which could not be raised to unlimited \
         (grant CAP_SYS_RESOURCE or raise the limit)"
    )]
    MemlockLimit {
        /// What failed: `creating map <name>`, `loading program <name>`.
        what: String,
        /// The soft limit, bytes, when it failed.
        soft: u64,
        /// The hard limit, bytes.
        hard: u64,
        /// The running kernel's release.
        running: String,
    },

    /// Loading the eBPF object or creating its maps failed.
    #[error("loading eBPF object: {0}")]
    Load(#[source] Box<aya::EbpfError>),

    /// A program failed to load (verifier) or attach.
    #[error("program {program}: {source}")]
    Program {
        /// The program's name in the object.
        program: &'static str,
        /// The aya error; for verifier failures it carries the verifier log.
        #[source]
        source: Box<aya::programs::ProgramError>,
    },

    /// A map operation failed.
    #[error("map {map}: {source}")]
    Map {
        /// The map's name in the object.
        map: &'static str,
        /// The aya error.
        #[source]
        source: Box<aya::maps::MapError>,
    },

    /// The embedded eBPF object lacks a program or map the library expects (build mismatch).
    #[error(
        "the embedded eBPF object has no {kind} named {name} (was it built with AYA_BUILD_SKIP?)"
    )]
    MissingObject {
        /// "program" or "map".
        kind: &'static str,
        /// The missing name.
        name: &'static str,
    },

    /// This build of the library carries no eBPF object (built without nightly/bpf-linker or with
    /// `AYA_BUILD_SKIP`); run `cargo xtask setup` and rebuild.
    #[error(
        "this build has no eBPF object (built without nightly + bpf-linker, or with AYA_BUILD_SKIP)"
    )]
    EbpfObjectMissing,

    /// A client id was refused (too long) or the client cap is reached.
    #[error("client: {0}")]
    Client(#[from] ClientError),

    /// Any other I/O error, with what was being done.
    #[error("{context}: {source}")]
    Io {
        /// What the library was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}

/// Why a client was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The id is longer than [`crate::state::MAX_CLIENT_ID_LEN`].
    #[error("client id is {len} bytes long, the limit is {max}")]
    IdTooLong {
        /// Length of the refused id.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The registry already holds the configured number of clients.
    #[error("too many clients (limit {max})")]
    TooManyClients {
        /// The limit.
        max: usize,
    },
}
