//! Helpers for the privileged integration tests: fresh network namespaces, the skip policy, and
//! leak checks. The tests themselves are in `tests/integration/`; they run only through
//! `cargo xtask test` (as root, one at a time, on the host and in qemu).

pub mod kernel_view;
pub mod leaks;
pub mod netns;
pub mod policy;
pub mod tracer;
