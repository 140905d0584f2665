//! Traces every TCP and UDP connection on a Linux host with eBPF and hands each client exact,
//! per-client deltas of what each connection did since that client's previous call.
//!
//! Layout (one concern per module):
//! - [`kernel`]: everything that touches the kernel: capability probes, BTF and tracefs readers,
//!   the embedded eBPF object, loading and attaching programs, reading maps.
//! - [`model`]: the userspace data model handed to callers (`ConnectionTuple`, `ConnectionStats`, ...).
//! - [`state`]: the per-client delta / merge / aggregate pipeline (pure Rust, no kernel access).
//! - [`error`]: the library's one error type.

pub mod error;
pub mod kernel;
pub mod model;
pub mod state;

pub use error::{Error, Result};
pub use kernel::KernelVersion;
