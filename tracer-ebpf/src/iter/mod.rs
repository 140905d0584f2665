//! BPF iterators (`iter/*`): programs that userspace runs on demand by reading an iterator
//! file, rather than hooks that fire on kernel events. Owner: tracer/src/kernel/iter.rs.
//! - `tcp` (Linux 5.9+): refreshes the tracked TCP connections' copied counters at read time.
//! - `task_file` (Linux 5.8+): names the owners of accepted connections that did no I/O yet.

pub mod task_file;
pub mod tcp;
