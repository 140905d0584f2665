//! The tracepoint backend: the only way to trace on kernels without kprobes and fentry (like the
//! project's 6.18 host). Needs `sock:sock_send_length` / `sock:sock_recv_length` (6.3+, attached
//! as raw tracepoints),
//! `sock:inet_sock_set_state` (4.16+) and `tcp:tcp_retransmit_skb` (4.16+). UDP peers come from
//! cgroup `sock_addr` programs (`sock_addr`), UDP closes from a cgroup `sock_release` program
//! (`udp`). No syscall tracepoint: owners of accepted sockets come from their first I/O and the
//! read-time `iter/task_file` walk.

use aya_ebpf::{
    macros::{raw_tracepoint, tracepoint},
    programs::{RawTracePointContext, TracePointContext},
};
use tracer_common::{
    conn::{ConnKey, IPPROTO_TCP},
    counters::Counter,
};

use crate::{
    conn::{self, layout::layout},
    counters::bump,
};

mod sock_addr;
mod udp;

const MSG_PEEK: i32 = 2;

#[inline(always)]
fn field<T>(ctx: &TracePointContext, offset: u16) -> Result<T, i32> {
    // SAFETY: bpf_probe_read_kernel of the tracepoint record; a bad offset fails, never faults.
    unsafe { ctx.read_at::<T>(usize::from(offset)) }
}

// The send/receive hooks are raw tracepoints: the arguments arrive in registers
// (`TP_PROTO(struct sock *sk, int ret, int flags)`), no record is formatted and no field is
// probe-read, which is most of a classic tracepoint's cost on these, the hottest hooks.
#[raw_tracepoint(tracepoint = "sock_send_length")]
pub fn nt_tp_send(ctx: RawTracePointContext) -> i32 {
    on_length(&ctx, true);
    0
}

#[raw_tracepoint(tracepoint = "sock_recv_length")]
pub fn nt_tp_recv(ctx: RawTracePointContext) -> i32 {
    on_length(&ctx, false);
    0
}

#[inline(always)]
fn on_length(ctx: &RawTracePointContext, sending: bool) {
    let sk: u64 = ctx.arg(0);
    // `int` arguments arrive sign-extended in 64-bit slots.
    let ret = ctx.arg::<u64>(1) as i32;
    let flags = ctx.arg::<u64>(2) as i32;
    if !sending && flags & MSG_PEEK != 0 {
        // Peeked bytes are read again by a later receive: counting them would count them twice.
        // A UDP peek that asked for the source address left it for this call: drop it, so that
        // a later receive of this thread that asks for none is not given it (a map delete, on
        // peeks only).
        sock_addr::forget();
        return;
    }
    let bytes = if ret > 0 { ret as u64 } else { 0 };
    // Fast path: a tracked TCP socket (or connected UDP socket) is found by its address alone.
    if conn::on_tracked_io(sk, bytes, sending) {
        return;
    }
    let layout = layout();
    let Ok(protocol) = conn::layout::read_kernel::<u16>(sk, layout.sock.sk_protocol) else {
        bump(Counter::KernelReadFailed);
        return;
    };
    match protocol {
        6 => {
            let key = ConnKey {
                sk,
                ..ConnKey::default()
            };
            if sending {
                conn::on_send(&key, IPPROTO_TCP, bytes, &layout.sock);
            } else {
                conn::on_recv(&key, IPPROTO_TCP, bytes, &layout.sock);
            }
        }
        17 => udp::on_length(sk, ret, flags, sending, layout),
        _ => {}
    }
}

#[tracepoint(category = "sock", name = "inet_sock_set_state")]
pub fn nt_tp_state(ctx: TracePointContext) -> u32 {
    if try_state(&ctx).is_err() {
        bump(Counter::TracepointReadFailed);
    }
    0
}

fn try_state(ctx: &TracePointContext) -> Result<(), i32> {
    let layout = layout();
    let format = layout.inet_sock_set_state;
    let protocol: u16 = if format.protocol_size == 1 {
        u16::from(field::<u8>(ctx, format.protocol)?)
    } else {
        field::<u16>(ctx, format.protocol)?
    };
    if protocol != u16::from(IPPROTO_TCP) {
        return Ok(());
    }
    let sk: u64 = field(ctx, format.skaddr)?;
    let old: i32 = field(ctx, format.oldstate)?;
    let new: i32 = field(ctx, format.newstate)?;
    conn::on_tcp_state(sk, old, new, &layout.sock);
    Ok(())
}

#[tracepoint(category = "tcp", name = "tcp_retransmit_skb")]
pub fn nt_tp_retrans(ctx: TracePointContext) -> u32 {
    let layout = layout();
    match field::<u64>(&ctx, layout.tcp_retransmit_skaddr) {
        Ok(sk) => conn::on_tcp_event(sk, &layout.sock),
        Err(_) => bump(Counter::TracepointReadFailed),
    }
    0
}

/// A reset arrived on `skaddr` (shared by every backend): refresh the connection, and catch the
/// source port of a connect the reset is about to refuse.
#[tracepoint(category = "tcp", name = "tcp_receive_reset")]
pub fn nt_tp_rst_in(ctx: TracePointContext) -> u32 {
    let layout = layout();
    match field::<u64>(&ctx, layout.tcp_receive_reset_skaddr) {
        Ok(sk) => conn::on_tcp_event(sk, &layout.sock),
        Err(_) => bump(Counter::TracepointReadFailed),
    }
    0
}
