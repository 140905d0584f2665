//! Everything that touches the kernel: the embedded eBPF object, kernel and tracefs probes, the
//! loaders of each program group, and map readers. Pure parsing lives in small functions beside
//! the code that does I/O, so it is unit-tested without root.

pub mod btf;
pub mod capabilities;
pub mod conn_tracer;
pub mod counters;
pub mod iter;
pub(crate) mod kretprobe;
pub mod layout;
pub mod map_reader;
pub mod netns;
pub(crate) mod object;
pub mod packet;
pub mod plan;
pub(crate) mod privileges;
pub mod probes;
mod skipped_runs;
pub mod tcp_state;
pub mod tracefs;
pub mod version;

pub use version::KernelVersion;
