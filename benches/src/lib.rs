//! Support for the benchmarks in `benches/`: realistic data sets and the summary file.
//!
//! - [`data`]: connection sets with unique cookies and a steady-state workload.
//! - [`summary`]: the `TRACER_BENCH_SUMMARY` JSON file that `cargo xtask bench` prints.
//! - [`privileged`]: loading and unloading the real tracer for the benchmarks that need root
//!   (`overhead`, `e2e`, `capture`).
//! - [`workloads`]: the loopback TCP/UDP workloads of `overhead` and `capture`, measured in
//!   phases of blocks.
//! - [`wrk`]: running wrk and parsing its report (`nginx`).

pub mod data;
pub mod privileged;
pub mod summary;
pub mod workloads;
pub mod wrk;
