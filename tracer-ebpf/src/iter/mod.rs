//! BPF iterators (`iter/*`, Linux 5.9+): programs that userspace runs on demand by reading an
//! iterator file, rather than hooks that fire on kernel events. Owner: tracer/src/kernel/iter.rs.

pub mod tcp;
