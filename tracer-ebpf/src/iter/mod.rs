//! BPF iterators (`iter/*`): programs that userspace runs on demand by reading an iterator
//! file, rather than hooks that fire on kernel events. Owner: tracer/src/kernel/iter.rs.
//! - `tcp` (Linux 5.9+): refreshes the tracked TCP connections' copied counters at read time.
//! - `task_file` (Linux 5.8+): names the owners of accepted connections that did no I/O yet,
//!   and of the sockets the start-up walk found.
//! - `seed` (Linux 5.9+, `iter/tcp` and `iter/udp`): the start-up walk, which tracks the
//!   sockets that existed before the tracer started.

pub mod seed;
pub mod task_file;
pub mod tcp;
