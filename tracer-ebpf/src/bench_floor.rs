//! A benchmark-only eBPF object, apart from the production one (`main.rs`): programs that do
//! nothing, for the floors of the privileged benchmarks. Attached to the same hooks as the
//! tracer's per-call or per-packet programs, they measure what the kernel charges for running any
//! program there (the hook's dispatch, the program's entry and exit), so that the tracer's own
//! work is what it adds on top. Loaded by `benches/benches/{overhead,capture,tls}.rs` through
//! `tracer::kernel::object::floor_bytes`; the tracer never loads them (they are in no probe
//! table, and the production object does not carry them).
//!
//! Program names fit the kernel's 15 characters, so that each stays apart in `bpftool` and in
//! the run-time statistics.
#![no_std]
#![no_main]

use aya_ebpf::{
    macros::{cgroup_skb, cgroup_sock_addr, raw_tracepoint, uprobe, uretprobe},
    programs::{
        ProbeContext, RawTracePointContext, RetProbeContext, SkBuffContext, SockAddrContext,
    },
};

// The packet capture's floor (`capture.rs`): both `cgroup_skb` directions, every packet let
// through.

#[cgroup_skb(ingress)]
pub fn nt_floor_in(_ctx: SkBuffContext) -> i32 {
    1
}

#[cgroup_skb(egress)]
pub fn nt_floor_out(_ctx: SkBuffContext) -> i32 {
    1
}

// The tracepoint backend's per-call floor (`overhead.rs`): the raw tracepoints every send and
// receive call runs, and the `sock_addr` hooks an unconnected UDP socket's calls with an address
// run. The `sock_addr` ones must allow the call (1); a raw tracepoint's return is ignored.

#[raw_tracepoint(tracepoint = "sock_send_length")]
pub fn nt_fl_send(_ctx: RawTracePointContext) -> i32 {
    0
}

#[raw_tracepoint(tracepoint = "sock_recv_length")]
pub fn nt_fl_recv(_ctx: RawTracePointContext) -> i32 {
    0
}

#[cgroup_sock_addr(sendmsg4)]
pub fn nt_fl_sendmsg4(_ctx: SockAddrContext) -> i32 {
    1
}

#[cgroup_sock_addr(sendmsg6)]
pub fn nt_fl_sendmsg6(_ctx: SockAddrContext) -> i32 {
    1
}

#[cgroup_sock_addr(recvmsg4)]
pub fn nt_fl_recvmsg4(_ctx: SockAddrContext) -> i32 {
    1
}

#[cgroup_sock_addr(recvmsg6)]
pub fn nt_fl_recvmsg6(_ctx: SockAddrContext) -> i32 {
    1
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // Unreachable: nothing here can panic.
    loop {}
}

/// GPL-compatible, as the production object.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

// The TLS uprobes' floor (`tls.rs`): an empty program at the entry and one at the return of
// each hooked call, i.e. the traps and the uretprobe trampoline alone.

#[uprobe]
pub fn nt_fl_uprobe(_ctx: ProbeContext) -> u32 {
    0
}

#[uretprobe]
pub fn nt_fl_uretprobe(_ctx: RetProbeContext) -> u32 {
    0
}
