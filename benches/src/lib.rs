//! Support for the benchmarks in `benches/`: realistic data sets and the summary file.
//!
//! - [`data`]: connection sets with unique cookies and a steady-state workload.
//! - [`summary`]: the `TRACER_BENCH_SUMMARY` JSON file that `cargo xtask bench` prints.

pub mod data;
pub mod summary;
