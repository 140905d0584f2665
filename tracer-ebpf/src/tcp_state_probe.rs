//! A test-only eBPF object, apart from the production one (`main.rs`): the `tcp_state` probe
//! that records every TCP state transition per socket, which the integration tests compare the
//! tracer with. Loaded by `tracer::kernel::tcp_state`; the production object does not carry it.
#![no_std]
#![no_main]

mod counters;
mod tcp_state;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // Unreachable by construction, as in the production object.
    loop {}
}

/// GPL-compatible, required for `bpf_probe_read_kernel`.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
