//! The exec watch of the TLS file registry: `sched:sched_process_exec` (a tracepoint, present
//! without kprobes) tells userspace that a process started, so that a new process that maps a
//! TLS library is hooked sooner than the registry's periodic scan (which stays as the
//! backstop: a full ring, or a library opened later with `dlopen`).
//!
//! Owner of `NT_TLS_EXEC` (the ring of started processes' ids; userspace owner:
//! `tracer/src/sources/tls/`). Minimum kernel: the ring (5.8); the raw tracepoint is 4.17.

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid, macros::map, macros::raw_tracepoint, maps::RingBuf,
    programs::RawTracePointContext,
};

/// Thread-group ids of processes that called `execve`. Sized by userspace. A full ring drops
/// the event: the periodic scan finds the process.
#[map(name = "NT_TLS_EXEC")]
static NT_TLS_EXEC: RingBuf = RingBuf::with_byte_size(4096, 0);

/// A process replaced its image: its id, for the registry to read its maps.
#[raw_tracepoint(tracepoint = "sched_process_exec")]
pub fn nt_tls_exec(_ctx: RawTracePointContext) -> i32 {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let _ = NT_TLS_EXEC.output::<u32>(tgid, 0);
    0
}
