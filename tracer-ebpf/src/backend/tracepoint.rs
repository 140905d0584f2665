//! The tracepoint backend: the only way to trace on kernels without kprobes and fentry (like the
//! project's 6.18 host). Counts send and receive calls at `sock:sock_send_length` /
//! `sock:sock_recv_length` (6.3+, attached as raw tracepoints) through the one socket-call path
//! (`conn::io`). UDP peers come from cgroup `sock_addr` programs (`sock_addr`); state changes,
//! retransmits, resets and UDP closes from the hooks every backend shares (`crate::lifecycle`).
//! No syscall tracepoint: owners of accepted sockets come from their first I/O and the read-time
//! `iter/task_file` walk.

use aya_ebpf::{macros::raw_tracepoint, programs::RawTracePointContext};

use crate::conn::io;

mod sock_addr;

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
    let flags = ctx.arg::<u64>(2) as u32;
    if !sending && io::skipped_receive(flags) {
        // A peek or an error-queue read takes no datagram: a UDP source address that recvmsg4/6
        // left for it must not name the datagram of a later receive of this thread that asks
        // for none (a map delete, on these calls only).
        sock_addr::forget();
        return;
    }
    if !sending && ret == 0 {
        // An empty datagram (or a TCP EOF) takes no peer, but recvmsg4/6 may have left one for
        // it: drop it, so that it does not name a later receive's datagram.
        sock_addr::forget();
    }
    // The peer of an unconnected UDP socket: the hand-off its `sock_addr` program left.
    io::on_call(sk, ret, sending, Handoff { sk, sending });
}

/// The peer a `sock_addr` program handed to this call.
struct Handoff {
    sk: u64,
    sending: bool,
}

impl io::PeerSource for Handoff {
    #[inline(always)]
    fn peer(self) -> Option<crate::conn::peer::Peer> {
        sock_addr::take(self.sk, self.sending)
    }
}
