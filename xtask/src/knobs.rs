//! Environment knobs of `cargo xtask test`, read by the host runner, the VM runner and the
//! initramfs builder alike (a module of its own, so none of them imports another for them).

use std::time::Duration;

/// Per run of the test binary, on the host and in a VM: a hung test must not eat CI's budget.
const DEFAULT_TIMEOUT_SECS: u64 = 30 * 60;

pub fn timeout() -> Duration {
    let secs = std::env::var("XTASK_TIMEOUT_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_TIMEOUT_SECS);
    Duration::from_secs(secs)
}

/// XTASK_TEST_FILTER: only the integration tests whose names contain this (a debugging aid).
pub fn filter() -> Option<String> {
    std::env::var("XTASK_TEST_FILTER")
        .ok()
        .filter(|f| !f.is_empty())
}
