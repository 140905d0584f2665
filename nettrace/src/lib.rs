//! `nettrace`'s parts, as a library so that the binary (`main.rs`) and the benchmarks (the live
//! view's refresh cost, `benches/benches/view.rs`) use the same code. Everything here is built
//! on the `tracer` library's public API only.

pub mod addr;
pub mod app;
pub mod args;
pub mod clock;
pub mod errno;
pub mod filter;
pub mod json;
pub mod process;
pub mod row;
pub mod serve;
pub mod signal;
pub mod table;
pub mod telemetry;
pub mod units;
pub mod view;
