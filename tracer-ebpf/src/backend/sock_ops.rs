//! A cgroup `sock_ops` program shared by every backend, for the one TCP event that must never be
//! lost: the close. Needs Linux 5.10 (`bpf_sock_ops.sk`).
//!
//! Why: the kernel runs kprobe and classic tracepoint programs under a per-CPU guard
//! (`bpf_prog_active`), and raw tracepoint and fentry programs under a per-program one (6.2+).
//! A softirq that interrupts one of our programs, say to deliver a FIN that moves an orphaned
//! socket to CLOSE, finds the guard taken and the kernel skips `inet_sock_set_state` for it.
//! The connection would then never be emitted (seen: 12 of 200 server sockets on 6.12 in qemu).
//! cgroup programs run without such a guard, so a socket that asked for state callbacks gets
//! its CLOSE here, before the tracepoint (`tcp_set_state` calls `sock_ops` first, while the
//! source port is still bound). The tracepoint then finds the entry gone: one close, exactly.
//!
//! Sockets opened before the tracer started never pass the callbacks that ask for state
//! callbacks; they keep the tracepoint alone.

use aya_ebpf::{
    bindings::{
        BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB, BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB,
        BPF_SOCK_OPS_STATE_CB, BPF_SOCK_OPS_STATE_CB_FLAG, BPF_SOCK_OPS_TCP_CONNECT_CB,
    },
    macros::sock_ops,
    programs::SockOpsContext,
};
use tracer_common::{
    conn::{ConnKey, DIRECTION_INCOMING, DIRECTION_OUTGOING, FLAG_CLOSED_BY_SOCK_OPS, IPPROTO_TCP},
    counters::Counter,
};

use crate::{
    conn::{self, Origin, TCP_CLOSE, layout::layout, sock::as_scalar},
    counters::bump,
};

#[sock_ops]
pub fn nt_sock_ops(ctx: SockOpsContext) -> u32 {
    match ctx.op() {
        BPF_SOCK_OPS_TCP_CONNECT_CB => want_state(&ctx),
        // Softirq (the SYN-ACK, or the handshake's last ACK), like the SYN_RECV/ESTABLISHED
        // tracepoints this repeats: if those were skipped, the entry still gets its direction,
        // the established mark and its complete tuple (an accepted child closed before this is
        // not reported, see `conn::close`).
        BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB => on_established(&ctx, DIRECTION_OUTGOING),
        BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB => on_established(&ctx, DIRECTION_INCOMING),
        BPF_SOCK_OPS_STATE_CB => {
            // SAFETY: a context field read, rewritten by the verifier.
            let new_state = unsafe { (*ctx.ops).__bindgen_anon_1.args }[1] as i32;
            if new_state == TCP_CLOSE
                && let Some(sk) = socket(&ctx)
            {
                let by = FLAG_CLOSED_BY_SOCK_OPS;
                conn::close_with_flags(&key(sk), IPPROTO_TCP, &layout().sock, by);
            }
        }
        _ => {}
    }
    // sock_ops return values only matter for ops that ask for a reply; 1 is "ok".
    1
}

/// A connection of this socket is established, in `direction` if it is new to the table.
#[inline(always)]
fn on_established(ctx: &SockOpsContext, direction: u8) {
    want_state(ctx);
    if let Some(sk) = socket(ctx) {
        let origin = Origin::unowned(direction);
        conn::established(&key(sk), origin, &layout().sock);
    }
}

/// Asks for `BPF_SOCK_OPS_STATE_CB` on this socket from now on.
#[inline(always)]
fn want_state(ctx: &SockOpsContext) {
    let flags = ctx.cb_flags() | BPF_SOCK_OPS_STATE_CB_FLAG;
    if ctx.set_cb_flags(flags as i32).is_err() {
        bump(Counter::SockOpsFlagsRefused);
    }
}

/// The kernel address of the context's socket: the same key the tracepoints use.
#[inline(always)]
fn socket(ctx: &SockOpsContext) -> Option<u64> {
    // SAFETY: a context field read, rewritten by the verifier into a load of the socket pointer.
    let sk = as_scalar(unsafe { (*ctx.ops).__bindgen_anon_2.sk } as u64);
    (sk != 0).then_some(sk)
}

#[inline(always)]
fn key(sk: u64) -> ConnKey {
    ConnKey {
        sk,
        ..ConnKey::default()
    }
}
