//! The kprobe backend: a kprobe on each socket function stashes the arguments the kretprobe needs
//! (a kretprobe only sees the return value), keyed by thread and function, in `NT_PROBE_ARGS`
//! (see `calls`). Needs CONFIG_KPROBES; no BTF needed to attach.
//!
//! Receive calls that peek are stashed as skipped (`sk == 0`) rather than not at all, so a
//! kretprobe that finds nothing always means a lost call (`probe_args_missing`): its entry was
//! evicted, or the call entered before the kprobe was attached (userspace attaches each
//! kretprobe before its kprobe, so no entry is left behind by a call whose return is not seen).
//!
//! State changes and retransmits come from the tracepoint programs shared by every backend;
//! owners of accepted sockets from their first I/O and the read-time `iter/task_file` walk.

use aya_ebpf::{
    macros::{kprobe, kretprobe},
    programs::{ProbeContext, RetProbeContext},
};

use super::calls::{self, CallArgs, Func, UdpCall, enter, int_ret, skipped_receive};

/// The arguments the kprobe of `func` stashed for this thread (`None` for a skipped call, or
/// counted when missing).
#[inline(always)]
fn take(func: Func) -> Option<CallArgs> {
    calls::leave(func, true).filter(|args| args.sk != 0)
}

/// Argument `n` of the probed function (0 when the architecture has no register for it).
#[inline(always)]
fn arg(ctx: &ProbeContext, n: usize) -> u64 {
    ctx.arg::<u64>(n).unwrap_or(0)
}

#[inline(always)]
fn ret(ctx: &RetProbeContext) -> i32 {
    int_ret(ctx.ret::<u64>())
}

/// Stashes `sk` (and `msg`) unless `flags` asks for a peek.
#[inline(always)]
fn stash_recv(func: Func, ctx: &ProbeContext, flags: usize, with_msg: bool) {
    let (sk, msg) = if skipped_receive(arg(ctx, flags)) {
        (0, 0)
    } else {
        (arg(ctx, 0), if with_msg { arg(ctx, 1) } else { 0 })
    };
    enter(func, sk, msg);
}

// tcp_sendmsg(sk, msg, size)
#[kprobe]
pub fn nt_kp_tcp_send(ctx: ProbeContext) -> u32 {
    enter(Func::TcpSendmsg, arg(&ctx, 0), 0);
    0
}

#[kretprobe]
pub fn nt_kr_tcp_send(ctx: RetProbeContext) -> u32 {
    if let Some(args) = take(Func::TcpSendmsg) {
        calls::tcp_sent(args.sk, ret(&ctx));
    }
    0
}

// tcp_sendpage(sk, page, offset, size, flags), before 6.5
#[kprobe]
pub fn nt_kp_tcp_page(ctx: ProbeContext) -> u32 {
    enter(Func::TcpSendpage, arg(&ctx, 0), 0);
    0
}

#[kretprobe]
pub fn nt_kr_tcp_page(ctx: RetProbeContext) -> u32 {
    if let Some(args) = take(Func::TcpSendpage) {
        calls::tcp_sent(args.sk, ret(&ctx));
    }
    0
}

// 5.19+: tcp_recvmsg(sk, msg, len, flags, addr_len)
#[kprobe]
pub fn nt_kp_tcp_rcv5(ctx: ProbeContext) -> u32 {
    stash_recv(Func::TcpRecvmsg, &ctx, 3, false);
    0
}

// Before 5.19: tcp_recvmsg(sk, msg, len, nonblock, flags, addr_len)
#[kprobe]
pub fn nt_kp_tcp_rcv6(ctx: ProbeContext) -> u32 {
    stash_recv(Func::TcpRecvmsg, &ctx, 4, false);
    0
}

#[kretprobe]
pub fn nt_kr_tcp_recv(ctx: RetProbeContext) -> u32 {
    if let Some(args) = take(Func::TcpRecvmsg) {
        calls::tcp_received(args.sk, ret(&ctx));
    }
    0
}

// tcp_splice_read(sock, ppos, pipe, len, flags): the socket is a `struct socket *`.
#[kprobe]
pub fn nt_kp_tcp_splc(ctx: ProbeContext) -> u32 {
    let sk = calls::sk_of_socket(arg(&ctx, 0)).unwrap_or(0);
    enter(Func::TcpSpliceRead, sk, 0);
    0
}

#[kretprobe]
pub fn nt_kr_tcp_splc(ctx: RetProbeContext) -> u32 {
    if let Some(args) = take(Func::TcpSpliceRead) {
        calls::tcp_received(args.sk, calls::ssize_ret(ctx.ret::<u64>()));
    }
    0
}

// udp_sendmsg(sk, msg, len)
#[kprobe]
pub fn nt_kp_udp_send(ctx: ProbeContext) -> u32 {
    enter(Func::UdpSendmsg, arg(&ctx, 0), arg(&ctx, 1));
    0
}

#[kretprobe]
pub fn nt_kr_udp_send(ctx: RetProbeContext) -> u32 {
    if let Some(args) = take(Func::UdpSendmsg) {
        calls::udp_call(UdpCall::SendV4, args.sk, args.msg, ret(&ctx));
    }
    0
}

// udpv6_sendmsg(sk, msg, len)
#[kprobe]
pub fn nt_kp_udp6_send(ctx: ProbeContext) -> u32 {
    enter(Func::Udpv6Sendmsg, arg(&ctx, 0), arg(&ctx, 1));
    0
}

#[kretprobe]
pub fn nt_kr_udp6_send(ctx: RetProbeContext) -> u32 {
    if let Some(args) = take(Func::Udpv6Sendmsg) {
        calls::udp_call(UdpCall::SendV6, args.sk, args.msg, ret(&ctx));
    }
    0
}

// udp_sendpage(sk, page, offset, size, flags), before 6.5
#[kprobe]
pub fn nt_kp_udp_page(ctx: ProbeContext) -> u32 {
    enter(Func::UdpSendpage, arg(&ctx, 0), 0);
    0
}

#[kretprobe]
pub fn nt_kr_udp_page(ctx: RetProbeContext) -> u32 {
    if let Some(args) = take(Func::UdpSendpage) {
        calls::udp_call(UdpCall::SendPage, args.sk, 0, ret(&ctx));
    }
    0
}

// 5.19+: udp_recvmsg(sk, msg, len, flags, addr_len)
#[kprobe]
pub fn nt_kp_udp_rcv5(ctx: ProbeContext) -> u32 {
    stash_recv(Func::UdpRecvmsg, &ctx, 3, true);
    0
}

// Before 5.19: udp_recvmsg(sk, msg, len, noblock, flags, addr_len)
#[kprobe]
pub fn nt_kp_udp_rcv6(ctx: ProbeContext) -> u32 {
    stash_recv(Func::UdpRecvmsg, &ctx, 4, true);
    0
}

#[kretprobe]
pub fn nt_kr_udp_recv(ctx: RetProbeContext) -> u32 {
    if let Some(args) = take(Func::UdpRecvmsg) {
        calls::udp_call(UdpCall::Recv, args.sk, args.msg, ret(&ctx));
    }
    0
}

// udpv6_recvmsg: same parameters as udp_recvmsg.
#[kprobe]
pub fn nt_kp_udp6_rcv5(ctx: ProbeContext) -> u32 {
    stash_recv(Func::Udpv6Recvmsg, &ctx, 3, true);
    0
}

#[kprobe]
pub fn nt_kp_udp6_rcv6(ctx: ProbeContext) -> u32 {
    stash_recv(Func::Udpv6Recvmsg, &ctx, 4, true);
    0
}

#[kretprobe]
pub fn nt_kr_udp6_recv(ctx: RetProbeContext) -> u32 {
    if let Some(args) = take(Func::Udpv6Recvmsg) {
        calls::udp_call(UdpCall::Recv, args.sk, args.msg, ret(&ctx));
    }
    0
}

// udp_destroy_sock(sk)
#[kprobe]
pub fn nt_kp_udp_dstr(ctx: ProbeContext) -> u32 {
    calls::udp_destroyed(arg(&ctx, 0));
    0
}

// udpv6_destroy_sock(sk)
#[kprobe]
pub fn nt_kp_udp6_dstr(ctx: ProbeContext) -> u32 {
    calls::udp_destroyed(arg(&ctx, 0));
    0
}
