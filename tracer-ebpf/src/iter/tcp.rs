//! `iter/tcp` (Linux 5.9+): visits every TCP socket of the network namespace that opened the
//! iterator, and refreshes the copied counters (packets, retransmits, RTT) of the tracked ones, so
//! that a read of the connection table reports what the kernel has at the moment of the read,
//! also for connections that have been idle since their last segments and ACKs.
//!
//! Writes one byte to the iterator's output per socket it refreshed (userspace counts them).

use core::ffi::c_void;

use aya_ebpf::{
    bindings::seq_file,
    helpers::{bpf_probe_read_kernel, bpf_seq_write},
};

use tracer_common::linux::{TCP_NEW_SYN_RECV, TCP_TIME_WAIT};

use crate::conn::{at_read, layout};

/// `struct bpf_iter__tcp { struct bpf_iter_meta *meta; struct sock_common *sk_common; uid_t uid; }`
/// (stable since 5.9): the two pointers at offsets 0 and 8.
const CTX_META: usize = 0;
const CTX_SK_COMMON: usize = 8;

#[unsafe(no_mangle)]
#[unsafe(link_section = "iter/tcp")]
pub fn nt_iter_tcp(ctx: *mut c_void) -> i32 {
    // The socket as a plain number (a probe read, not a load: the verifier would keep a loaded
    // `sock_common *` typed and refuse the variable offsets the layout reads add to it). NULL on
    // the iterator's final call.
    // SAFETY: bpf_probe_read_kernel validates the address.
    let Ok(sk) = (unsafe {
        bpf_probe_read_kernel(ctx.cast::<u8>().wrapping_add(CTX_SK_COMMON).cast::<u64>())
    }) else {
        return 0;
    };
    if sk == 0 {
        return 0;
    }
    let offsets = &layout::layout().sock;
    let Ok(state) = layout::read_kernel::<u8>(sk, offsets.skc_state) else {
        return 0;
    };
    // A timewait sock (`inet_timewait_sock`) or a request sock has no `tcp_sock` behind its
    // `sock_common`.
    if matches!(i32::from(state), TCP_TIME_WAIT | TCP_NEW_SYN_RECV) {
        return 0;
    }
    if at_read::refresh_tracked_tcp(sk) {
        count(ctx);
    }
    0
}

/// One byte of output for one refreshed socket.
#[inline(always)]
fn count(ctx: *mut c_void) {
    // `ctx->meta->seq`, both loaded directly: `bpf_seq_write` wants the typed `seq_file *`.
    // SAFETY: the iterator context always holds a valid `meta`, whose `seq` is valid for the
    // program's run; the verifier checks both loads against BTF.
    unsafe {
        let meta = core::ptr::read_volatile(ctx.cast::<u8>().add(CTX_META).cast::<*const u8>());
        let seq = core::ptr::read_volatile(meta.cast::<*mut seq_file>());
        let byte: u8 = 1;
        let _ = bpf_seq_write(seq, (&raw const byte).cast(), 1);
    }
}
