//! The tracer's eBPF programs. Each program lives in its own module with a thin `#[tracepoint]` /
//! `#[kprobe]` / ... entry that calls a `try_*` function; maps are declared next to the program
//! that owns them, except the shared counters.
//!
//! Rules for this crate: no `unwrap`, `expect` or panicking index (the verifier rejects the panic
//! path), no logging on per-packet or per-send paths, and every drop is counted in `NT_COUNTERS`.
#![no_std]
#![no_main]
// BPF inline assembly (atomic adds): the crate is always built with nightly.
#![feature(asm_experimental_arch)]

mod backend;
mod conn;
mod counters;
mod iter;
mod lifecycle;
mod packet;
mod tls;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // Unreachable by construction: the crate never panics. The verifier rejects any program that
    // could reach this loop, which is the check that the rule above holds.
    loop {}
}

/// GPL-compatible, required for `bpf_probe_read_kernel` and other GPL-only helpers.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
