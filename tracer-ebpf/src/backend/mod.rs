//! Attach backends: thin entry points that turn one kind of hook into calls of the shared
//! connection table (`crate::conn`). Userspace attaches the programs of one backend only.

pub mod calls;
pub mod fentry;
pub mod kprobe;
pub mod sock_ops;
pub mod tracepoint;
