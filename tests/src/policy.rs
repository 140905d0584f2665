//! The skip policy (cilium/ebpf's rule): a test may skip because a kernel feature is missing only
//! when the running kernel is older than the feature's first version. Under `cargo xtask test`
//! (`TRACER_TEST_STRICT=1`) a missing feature on a kernel that should have it fails the test.

use tracer::{Error, KernelVersion};

/// The attach backend this run tests (`TRACER_TEST_BACKEND`, default `tracepoint`).
pub fn backend() -> String {
    std::env::var("TRACER_TEST_BACKEND").unwrap_or_else(|_| "tracepoint".to_owned())
}

fn strict() -> bool {
    std::env::var("TRACER_TEST_STRICT").is_ok_and(|v| v == "1")
}

/// Unwraps a load result. On `Error::NotSupported` for a feature whose minimum kernel is newer
/// than the running one, prints a SKIP line and returns `None` (the test then returns early);
/// on any other error, or when the kernel should have had the feature, panics with the error.
pub fn loaded_or_skip<T>(result: Result<T, Error>) -> Option<T> {
    match result {
        Ok(value) => Some(value),
        Err(Error::NotSupported {
            feature,
            min_kernel,
            running,
        }) => {
            let min = KernelVersion::parse_release(min_kernel);
            let current = KernelVersion::current();
            let kernel_too_old = matches!((min, current), (Some(min), Some(cur)) if cur < min);
            assert!(
                kernel_too_old,
                "{feature} should exist on Linux {running} (it is in {min_kernel}+) but is missing"
            );
            assert!(
                !strict() || kernel_too_old,
                "strict mode: {feature} missing on {running}"
            );
            eprintln!("SKIP: {feature} needs Linux {min_kernel}+, running {running}");
            None
        }
        Err(other) => panic!("load failed: {other} ({other:?})"),
    }
}

/// Whether this run is the kernel's first backend run (`TRACER_TEST_FIRST_BACKEND=1`, set by
/// `cargo xtask test`; unset counts as first, so a run by hand runs everything). Tests whose
/// subject does not depend on the attach backend (userspace rules, the environment the tracer
/// starts in) run once per kernel, not once per backend: otherwise they print a SKIP line and
/// return.
pub fn first_backend_of_kernel(what: &str) -> bool {
    let first = std::env::var("TRACER_TEST_FIRST_BACKEND").map_or(true, |v| v != "0");
    if !first {
        eprintln!("SKIP: {what} does not depend on the backend: run with the kernel's first one");
    }
    first
}
