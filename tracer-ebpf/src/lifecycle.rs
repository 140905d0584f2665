//! Hooks every backend shares: TCP state changes (`sock:inet_sock_set_state`), retransmits
//! (`tcp:tcp_retransmit_skb`), incoming resets (`tcp:tcp_receive_reset`), all Linux 4.16+, and
//! the release of a socket by its application (cgroup `sock_release`, 5.9+; required by the
//! tracepoint backend, which has no other UDP close, optional on the others). The backends
//! (`backend/`) only count send and receive calls.

use aya_ebpf::{
    macros::{cgroup_sock, tracepoint},
    programs::{SockContext, TracePointContext},
};
use tracer_common::{
    conn::{IPPROTO_TCP, IPPROTO_UDP},
    counters::Counter,
};

use crate::{
    conn::{self, layout::layout},
    counters::bump,
};

#[inline(always)]
fn field<T>(ctx: &TracePointContext, offset: u16) -> Result<T, i32> {
    // SAFETY: bpf_probe_read_kernel of the tracepoint record; a bad offset fails, never faults.
    unsafe { ctx.read_at::<T>(usize::from(offset)) }
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

/// The last descriptor of a socket was closed (`inet_release`, for user sockets only). No
/// tracepoint fires when a UDP socket goes away; this cgroup hook does, for every socket of every
/// process (attached to the cgroup v2 root; the program runs for the socket's cgroup and its
/// ancestors). The context is the `struct sock` itself, the same address the tracepoints report.
#[cgroup_sock(sock_release)]
pub fn nt_udp_release(ctx: SockContext) -> i32 {
    // SAFETY: context field reads are rewritten by the verifier into reads of the socket.
    let protocol = unsafe { (*ctx.sock).protocol };
    let sk = ctx.sock as u64;
    if protocol == u32::from(IPPROTO_UDP) {
        release_udp(sk);
    } else if protocol == u32::from(IPPROTO_TCP) {
        release_tcp(sk);
    }
    // The return value of sock_release programs is ignored; 1 is "allow" for the others.
    1
}

// The two branches of `nt_udp_release` are subprograms of their own: the verifier limits the
// sum of the frames along a call chain to 512 bytes, and with both inlined the program's frame
// (376 bytes, the TCP branch's) plus that of the UDP peer-closing subprogram below it passed it.

/// A UDP socket is released: its flows end.
#[inline(never)]
fn release_udp(sk: u64) {
    conn::close_socket(sk, IPPROTO_UDP, &layout().sock);
}

/// A TCP connection that closed while bytes were still to be read ends when its application
/// lets go of the socket, read or not.
#[inline(never)]
fn release_tcp(sk: u64) {
    conn::finish_pending(sk, &layout().sock);
}
