//! Traces every TCP and UDP connection on a Linux host with eBPF and hands each client exact,
//! per-client deltas of what each connection did since that client's previous call.
//!
//! Layout (one concern per module):
//! - [`kernel`]: everything that touches the kernel: capability probes, BTF and tracefs readers,
//!   the embedded eBPF object, loading and attaching programs, reading maps.
//! - [`model`]: the userspace data model handed to callers (`ConnectionTuple`, `ConnectionStats`, ...).
//! - [`state`]: the per-client delta / merge / aggregate pipeline (pure Rust, no kernel access).
//! - [`enrich`]: one module per enrichment (containers, conntrack NAT, routes), one seam.
//! - [`sources`]: data sources fed by kernel captures other than connections (DNS, HTTP).
//! - [`telemetry`]: the typed counter set (name, kind, doc of every counter).
//! - [`error`]: the library's one error type.
//! - [`Tracer`] (with [`Config`], [`filter`], [`expiry`], [`decode`]): the public entry point.

pub mod config;
mod consumer;
pub mod decode;
pub mod enrich;
pub mod error;
pub mod expiry;
pub mod filter;
#[doc(hidden)]
pub mod fuzzing;
pub mod kernel;
pub mod model;
pub mod sources;
pub mod state;
pub mod telemetry;
mod tracer;

pub use config::Config;
pub use error::{Error, Result};
pub use kernel::KernelVersion;
pub use kernel::plan::{Backend, BackendChoice};
pub use tracer::{CallTimings, Tracer};
