//! Helpers for the privileged integration tests: fresh network namespaces, the skip policy, and
//! leak checks. The tests themselves are in `tests/integration/`; they run only through
//! `cargo xtask test` (as root, one at a time, on the host and in qemu).

// This crate is test support: a failed step must fail the test that called it, with the
// reason, which is what a panic does (aya's test guidelines: panic rather than return errors,
// which lose their backtraces).
#![allow(
    clippy::expect_used,
    clippy::panic,
    clippy::unwrap_used,
    clippy::indexing_slicing
)]

pub mod churn;
pub mod cmd;
pub mod dns;
pub mod environment;
pub mod fork;
pub mod kernel_view;
pub mod leaks;
pub mod netns;
pub mod nettrace;
pub mod policy;
pub mod protocols;
pub mod tracer;
