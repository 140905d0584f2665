//! The eBPF objects built by `tracer/build.rs`, embedded in the library.

use crate::{Error, Result};

/// The object's bytes, aligned for the ELF parser. Empty when the crate was built without the eBPF
/// toolchain (see `build.rs`).
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tracer"));

/// The embedded object, or a typed error when this build carries only the stub. Public for the
/// benchmarks that load single programs of it on their own (`benches/benches/capture.rs`).
pub fn bytes() -> Result<&'static [u8]> {
    if OBJECT.is_empty() {
        return Err(Error::EbpfObjectMissing);
    }
    Ok(OBJECT)
}

/// The test-only object of the TCP state probe (`kernel::tcp_state`), apart from the production
/// object so that this does not carry it.
static TCP_STATE_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tcp-state-probe"));

/// The TCP state probe's object, or a typed error when this build carries only the stub.
pub fn tcp_state_bytes() -> Result<&'static [u8]> {
    if TCP_STATE_OBJECT.is_empty() {
        return Err(Error::EbpfObjectMissing);
    }
    Ok(TCP_STATE_OBJECT)
}

/// The benchmark-only object of empty programs on the tracer's hooks (the floors of
/// `benches/benches/{overhead,capture}.rs`), apart from the production object.
static FLOOR_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/bench-floor"));

/// The floor object, or a typed error when this build carries only the stub.
pub fn floor_bytes() -> Result<&'static [u8]> {
    if FLOOR_OBJECT.is_empty() {
        return Err(Error::EbpfObjectMissing);
    }
    Ok(FLOOR_OBJECT)
}
