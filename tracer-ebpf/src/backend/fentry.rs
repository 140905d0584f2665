//! The fentry backend: fexit programs on the kernel's socket functions (arguments and return
//! value in one context, no state between entry and return), fentry where only the arguments
//! matter. Needs kernel BTF and BPF trampolines (x86_64 5.5+); the return value of an fexit is
//! the context slot after the last parameter, so a function whose parameter count changed has
//! one program per signature (userspace attaches the one matching the running kernel).
//!
//! State changes and retransmits come from the tracepoint programs shared by every backend;
//! owners of accepted sockets from their first I/O and the read-time `iter/task_file` walk.

use aya_ebpf::{
    macros::{fentry, fexit},
    programs::{FEntryContext, FExitContext},
};

use super::calls::{self, Func, UdpCall, int_ret, skipped_receive, ssize_ret};

/// Argument `n` of the hooked function (for an fexit, `n` = parameter count is the return value).
#[inline(always)]
fn arg(ctx: &FExitContext, n: usize) -> u64 {
    ctx.arg::<u64>(n)
}

// `int tcp_sendmsg(struct sock *sk, struct msghdr *msg, size_t size)`
#[fexit(function = "tcp_sendmsg")]
pub fn nt_fx_tcp_send(ctx: FExitContext) -> u32 {
    calls::tcp_sent(arg(&ctx, 0), int_ret(arg(&ctx, 3)));
    0
}

// `int tcp_sendpage(struct sock *sk, struct page *page, int offset, size_t size, int flags)`,
// removed in 6.5.
#[fexit(function = "tcp_sendpage")]
pub fn nt_fx_tcp_page(ctx: FExitContext) -> u32 {
    calls::tcp_sent(arg(&ctx, 0), int_ret(arg(&ctx, 5)));
    0
}

// 5.19+: `int tcp_recvmsg(struct sock *sk, struct msghdr *msg, size_t len, int flags,
// int *addr_len)`
#[fexit(function = "tcp_recvmsg")]
pub fn nt_fx_tcp_rcv5(ctx: FExitContext) -> u32 {
    if !skipped_receive(arg(&ctx, 3)) {
        calls::tcp_received(arg(&ctx, 0), int_ret(arg(&ctx, 5)));
    }
    0
}

// Before 5.19: `int tcp_recvmsg(struct sock *sk, struct msghdr *msg, size_t len, int nonblock,
// int flags, int *addr_len)`
#[fexit(function = "tcp_recvmsg")]
pub fn nt_fx_tcp_rcv6(ctx: FExitContext) -> u32 {
    if !skipped_receive(arg(&ctx, 4)) {
        calls::tcp_received(arg(&ctx, 0), int_ret(arg(&ctx, 6)));
    }
    0
}

// `ssize_t tcp_splice_read(struct socket *sock, loff_t *ppos, struct pipe_inode_info *pipe,
// size_t len, unsigned int flags)`
#[fexit(function = "tcp_splice_read")]
pub fn nt_fx_tcp_splc(ctx: FExitContext) -> u32 {
    if let Some(sk) = calls::sk_of_socket(arg(&ctx, 0)) {
        calls::tcp_received(sk, ssize_ret(arg(&ctx, 5)));
    }
    0
}

// `int udp_sendmsg(struct sock *sk, struct msghdr *msg, size_t len)`
#[fexit(function = "udp_sendmsg")]
pub fn nt_fx_udp_send(ctx: FExitContext) -> u32 {
    calls::udp_call(
        UdpCall::SendV4,
        arg(&ctx, 0),
        arg(&ctx, 1),
        int_ret(arg(&ctx, 3)),
    );
    0
}

// `int udpv6_sendmsg(struct sock *sk, struct msghdr *msg, size_t len)`
#[fexit(function = "udpv6_sendmsg")]
pub fn nt_fx_udp6_send(ctx: FExitContext) -> u32 {
    calls::udp_call(
        UdpCall::SendV6,
        arg(&ctx, 0),
        arg(&ctx, 1),
        int_ret(arg(&ctx, 3)),
    );
    0
}

// `int udp_sendpage(struct sock *sk, struct page *page, int offset, size_t size, int flags)`,
// removed in 6.5. It may send through `udp_sendmsg`: the fentry marks the call so that
// `udp_sendmsg` leaves its bytes to the fexit.
#[fentry(function = "udp_sendpage")]
pub fn nt_fe_udp_page(ctx: FEntryContext) -> u32 {
    calls::enter(Func::UdpSendpage, ctx.arg::<u64>(0), 0);
    0
}

#[fexit(function = "udp_sendpage")]
pub fn nt_fx_udp_page(ctx: FExitContext) -> u32 {
    // Not counted when missing: a call already running when the fentry was attached.
    let _ = calls::leave(Func::UdpSendpage, false);
    calls::udp_call(UdpCall::SendPage, arg(&ctx, 0), 0, int_ret(arg(&ctx, 5)));
    0
}

// 5.19+: `int udp_recvmsg(struct sock *sk, struct msghdr *msg, size_t len, int flags,
// int *addr_len)`
#[fexit(function = "udp_recvmsg")]
pub fn nt_fx_udp_rcv5(ctx: FExitContext) -> u32 {
    udp_recv(&ctx, 3, 5);
    0
}

// Before 5.19: `int udp_recvmsg(struct sock *sk, struct msghdr *msg, size_t len, int noblock,
// int flags, int *addr_len)`
#[fexit(function = "udp_recvmsg")]
pub fn nt_fx_udp_rcv6(ctx: FExitContext) -> u32 {
    udp_recv(&ctx, 4, 6);
    0
}

// `udpv6_recvmsg`: same parameters as `udp_recvmsg`.
#[fexit(function = "udpv6_recvmsg")]
pub fn nt_fx_udp6_rcv5(ctx: FExitContext) -> u32 {
    udp_recv(&ctx, 3, 5);
    0
}

#[fexit(function = "udpv6_recvmsg")]
pub fn nt_fx_udp6_rcv6(ctx: FExitContext) -> u32 {
    udp_recv(&ctx, 4, 6);
    0
}

/// A UDP receive whose `flags` parameter is argument `flags` and whose return value is argument
/// `ret` (both constants after inlining: the verifier only allows constant context offsets).
#[inline(always)]
fn udp_recv(ctx: &FExitContext, flags: usize, ret: usize) {
    if !skipped_receive(arg(ctx, flags)) {
        calls::udp_call(
            UdpCall::Recv,
            arg(ctx, 0),
            arg(ctx, 1),
            int_ret(arg(ctx, ret)),
        );
    }
}

// `void udp_destroy_sock(struct sock *sk)`
#[fentry(function = "udp_destroy_sock")]
pub fn nt_fe_udp_dstr(ctx: FEntryContext) -> u32 {
    calls::udp_destroyed(ctx.arg::<u64>(0));
    0
}

// `void udpv6_destroy_sock(struct sock *sk)`
#[fentry(function = "udpv6_destroy_sock")]
pub fn nt_fe_udp6_dstr(ctx: FEntryContext) -> u32 {
    calls::udp_destroyed(ctx.arg::<u64>(0));
    0
}
