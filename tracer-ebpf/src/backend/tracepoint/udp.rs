//! UDP on the tracepoint backend: peers of unconnected sockets from the send/receive syscalls,
//! and the socket's close from a cgroup `sock_release` program.
//!
//! `sock:sock_send_length` / `sock:sock_recv_length` give the socket and the byte count of every
//! datagram, but not its peer. An unconnected socket has one flow per peer, so the peer comes
//! from the syscall that is running (same thread, so keyed by pid_tgid in `NT_UDP_CALLS`):
//! - `sys_enter_sendto` / `sys_enter_recvfrom` stash the user `sockaddr` pointer (nothing when
//!   it is NULL: `send()` and `recv()` are these syscalls without an address);
//!   `sys_enter_sendmsg` / `sys_enter_recvmsg` stash the user `msghdr` pointer, whose `msg_name`
//!   is at offset 0 of the user ABI struct; `sys_enter_sendmmsg` / `sys_enter_recvmmsg` stash the
//!   `mmsghdr` array, one entry per datagram in order (the kernel sends/receives them one by one
//!   and stops at the first error, each time through `sock_sendmsg`/`sock_recvmsg`, so the n-th
//!   length event of the call is entry n).
//! - Sends: the destination is in user memory when `sock_send_length` fires (the kernel has just
//!   copied it in), so the datagram is counted right there.
//! - Receives: the source address is written to user memory only after `sock_recv_length`, just
//!   before the syscall returns. The datagram (socket, bytes) is kept in the stash and counted at
//!   `sys_exit_*`, or for `recvmmsg` at the next datagram's length event (entry n's address is
//!   written before entry n+1 is received) and at exit for the last one.
//! - `sys_exit_*` deletes the stash, so a later send or receive of the thread that is not one of
//!   these syscalls (io_uring, `write()`) never uses a stale peer.
//!
//! Connected sockets need none of this: their flow is the socket (`udp_key`). Datagrams of an
//! unconnected socket whose peer is unknown count as `udp_missing_peer`: receives without an
//! address buffer (`recv()`, `read()`, `recvmsg` with a NULL `msg_name`), and sends or receives
//! outside these syscalls (io_uring; 32-bit compat tasks, for which syscall tracepoints do not
//! fire). Zero-length datagrams are not counted (`udp_empty_datagram`).
//!
//! Minimum kernels: syscall tracepoints and BPF on tracepoints 4.7; `sock_*_length` 6.3;
//! `BPF_CGROUP_INET_SOCK_RELEASE` 5.9.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user},
    macros::{cgroup_sock, map, tracepoint},
    maps::HashMap,
    programs::{SockContext, TracePointContext},
};
use tracer_common::{conn::IPPROTO_UDP, counters::Counter, offsets::KernelLayout};

use super::field;
use crate::{
    conn::{
        self,
        layout::layout,
        peer::{self, Memory},
    },
    counters::bump,
};

/// What the stashed user pointer points to.
const SHAPE_SOCKADDR: u8 = 1;
const SHAPE_MSGHDR: u8 = 2;
const SHAPE_MMSGHDR: u8 = 3;

/// User ABI (LP64): `struct mmsghdr { struct user_msghdr msg_hdr; unsigned int msg_len; }` is 64
/// bytes (`user_msghdr` is 56), and `msg_name` is the first field of `user_msghdr`.
const MMSGHDR_SIZE: u64 = 64;

/// `MSG_ERRQUEUE`: a receive from the socket's error queue (ICMP errors, timestamps) carries no
/// datagram from the peer.
const MSG_ERRQUEUE: i32 = 0x2000;

/// The UDP send or receive syscall a thread is in.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct UdpCall {
    /// User pointer from the syscall's arguments: a `sockaddr`, a `user_msghdr` or an array of
    /// `mmsghdr`, by `shape`.
    user: u64,
    /// A received datagram waiting for its source address: its socket (0: none) ...
    pending_sk: u64,
    /// ... its payload bytes ...
    pending_bytes: u64,
    /// ... and its entry in a `recvmmsg` array.
    pending_index: u32,
    /// `sendmmsg`/`recvmmsg`: the entry of the call's next datagram.
    next_index: u32,
    shape: u8,
    /// 1 for a send syscall, 0 for a receive.
    sending: u8,
    _pad: [u8; 6],
}

/// Threads in a UDP-capable send/receive syscall. A thread is in at most one syscall, and every
/// entry is deleted at the syscall's exit (the exit programs are attached before the enter
/// programs), so the map holds one entry per thread blocked in such a call.
#[map(name = "NT_UDP_CALLS")]
static NT_UDP_CALLS: HashMap<u64, UdpCall> = HashMap::with_max_entries(16_384, 0);

/// Which syscall an enter program saw.
#[derive(Clone, Copy)]
struct Enter {
    /// Offset of the pointer argument in the `sys_enter_*` record.
    offset: u16,
    shape: u8,
    sending: bool,
}

#[inline(always)]
fn enter(ctx: &TracePointContext, which: Enter) {
    let Ok(user) = field::<u64>(ctx, which.offset) else {
        bump(Counter::TracepointReadFailed);
        return;
    };
    if user == 0 {
        // No address given (send()/recv(), or a NULL msghdr that the syscall will refuse).
        return;
    }
    let call = UdpCall {
        user,
        pending_sk: 0,
        pending_bytes: 0,
        pending_index: 0,
        next_index: 0,
        shape: which.shape,
        sending: u8::from(which.sending),
        _pad: [0; 6],
    };
    if NT_UDP_CALLS
        .insert(bpf_get_current_pid_tgid(), call, 0)
        .is_err()
    {
        bump(Counter::UdpCallsFull);
    }
}

#[tracepoint(category = "syscalls", name = "sys_enter_sendto")]
pub fn nt_tp_sendto(ctx: TracePointContext) -> u32 {
    let offset = layout().udp_syscalls.sendto_addr;
    enter(
        &ctx,
        Enter {
            offset,
            shape: SHAPE_SOCKADDR,
            sending: true,
        },
    );
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_sendmsg")]
pub fn nt_tp_sendmsg(ctx: TracePointContext) -> u32 {
    let offset = layout().udp_syscalls.sendmsg_msg;
    enter(
        &ctx,
        Enter {
            offset,
            shape: SHAPE_MSGHDR,
            sending: true,
        },
    );
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_sendmmsg")]
pub fn nt_tp_sendmmsg(ctx: TracePointContext) -> u32 {
    let offset = layout().udp_syscalls.sendmmsg_mmsg;
    enter(
        &ctx,
        Enter {
            offset,
            shape: SHAPE_MMSGHDR,
            sending: true,
        },
    );
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_recvfrom")]
pub fn nt_tp_recvfrom(ctx: TracePointContext) -> u32 {
    let offset = layout().udp_syscalls.recvfrom_addr;
    enter(
        &ctx,
        Enter {
            offset,
            shape: SHAPE_SOCKADDR,
            sending: false,
        },
    );
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_recvmsg")]
pub fn nt_tp_recvmsg(ctx: TracePointContext) -> u32 {
    let offset = layout().udp_syscalls.recvmsg_msg;
    enter(
        &ctx,
        Enter {
            offset,
            shape: SHAPE_MSGHDR,
            sending: false,
        },
    );
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_recvmmsg")]
pub fn nt_tp_recvmmsg(ctx: TracePointContext) -> u32 {
    let offset = layout().udp_syscalls.recvmmsg_mmsg;
    enter(
        &ctx,
        Enter {
            offset,
            shape: SHAPE_MMSGHDR,
            sending: false,
        },
    );
    0
}

/// A send syscall returned: forget its arguments.
#[inline(always)]
fn exit_send() {
    let _ = NT_UDP_CALLS.remove(bpf_get_current_pid_tgid());
}

/// A receive syscall returned `ret` (read at `ret_offset`): count the datagram still waiting
/// for its source address, which the kernel has now written, and forget the arguments.
#[inline(always)]
fn exit_recv(ctx: &TracePointContext, ret_offset: u16) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(call) = NT_UDP_CALLS.get_ptr(pid_tgid) else {
        return;
    };
    // SAFETY: a map value of this thread only; copied out before the delete.
    let call = unsafe { *call };
    let _ = NT_UDP_CALLS.remove(pid_tgid);
    if call.pending_sk == 0 {
        return;
    }
    let layout = layout();
    match field::<i64>(ctx, ret_offset) {
        // A failure after the datagram was taken (copying the address out faulted): the address
        // in user memory is not the datagram's.
        Ok(ret) if ret < 0 => bump(Counter::UdpMissingPeer),
        Ok(_) => flush(&call, layout),
        Err(_) => bump(Counter::TracepointReadFailed),
    }
}

#[tracepoint(category = "syscalls", name = "sys_exit_sendto")]
pub fn nt_tpx_sendto(_ctx: TracePointContext) -> u32 {
    exit_send();
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_sendmsg")]
pub fn nt_tpx_sendmsg(_ctx: TracePointContext) -> u32 {
    exit_send();
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_sendmmsg")]
pub fn nt_tpx_sendmmsg(_ctx: TracePointContext) -> u32 {
    exit_send();
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_recvfrom")]
pub fn nt_tpx_recvfrom(ctx: TracePointContext) -> u32 {
    let offset = layout().udp_syscalls.recvfrom_ret;
    exit_recv(&ctx, offset);
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_recvmsg")]
pub fn nt_tpx_recvmsg(ctx: TracePointContext) -> u32 {
    let offset = layout().udp_syscalls.recvmsg_ret;
    exit_recv(&ctx, offset);
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_recvmmsg")]
pub fn nt_tpx_recvmmsg(ctx: TracePointContext) -> u32 {
    let offset = layout().udp_syscalls.recvmmsg_ret;
    exit_recv(&ctx, offset);
    0
}

#[inline(always)]
fn read_user<T>(address: u64) -> Option<T> {
    // SAFETY: bpf_probe_read_user validates the address and fails instead of faulting.
    unsafe { bpf_probe_read_user(address as *const T) }.ok()
}

/// The user address of the `sockaddr` of datagram `index` of `call`, or `None` when the call
/// gave none.
#[inline(always)]
fn sockaddr_of(call: &UdpCall, index: u32) -> Option<u64> {
    let name = match call.shape {
        SHAPE_SOCKADDR => call.user,
        SHAPE_MSGHDR => read_user::<u64>(call.user)?,
        SHAPE_MMSGHDR => {
            let entry = call
                .user
                .wrapping_add(u64::from(index).wrapping_mul(MMSGHDR_SIZE));
            read_user::<u64>(entry)?
        }
        _ => 0,
    };
    (name != 0).then_some(name)
}

/// Counts one datagram of `bytes` on socket `sk` to or from `peer`.
#[inline(always)]
fn count(sk: u64, peer: Option<peer::Peer>, bytes: u64, sending: bool, layout: &KernelLayout) {
    let Some(key) = peer::udp_key(sk, peer, &layout.sock) else {
        bump(Counter::UdpMissingPeer);
        return;
    };
    if sending {
        conn::on_send(&key, IPPROTO_UDP, bytes, &layout.sock);
    } else {
        conn::on_recv(&key, IPPROTO_UDP, bytes, &layout.sock);
    }
}

/// Counts the received datagram waiting in `call`: its source address is in user memory now.
#[inline(always)]
fn flush(call: &UdpCall, layout: &KernelLayout) {
    let peer = sockaddr_of(call, call.pending_index)
        .and_then(|address| peer::read_sockaddr(Memory::User, address));
    count(call.pending_sk, peer, call.pending_bytes, false, layout);
}

/// `sock_send_length` / `sock_recv_length` on a UDP socket `sk` returned `ret` (`flags`: the
/// receive flags, MSG_PEEK already excluded by the caller).
#[inline(always)]
pub fn on_length(sk: u64, ret: i32, flags: i32, sending: bool, layout: &KernelLayout) {
    if !sending && flags & MSG_ERRQUEUE != 0 {
        return;
    }
    if ret < 0 {
        // Failed: nothing was sent or received, and a `*mmsg` call stops here.
        return;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let mut call = match NT_UDP_CALLS.get_ptr_mut(pid_tgid) {
        // SAFETY: a map value of this thread only (the key is the thread's pid_tgid).
        Some(call) if unsafe { (*call).sending } == u8::from(sending) => {
            Some(unsafe { &mut *call })
        }
        _ => None,
    };
    // The datagram's entry in a `*mmsg` array; the call's next datagram uses the next one.
    let index = match &mut call {
        Some(call) => {
            let index = call.next_index;
            call.next_index = index.wrapping_add(1);
            index
        }
        None => 0,
    };
    if ret == 0 {
        bump(Counter::UdpEmptyDatagram);
        return;
    }
    let bytes = ret as u64;
    if peer::is_connected(sk, &layout.sock) {
        count(sk, None, bytes, sending, layout);
        return;
    }
    let Some(call) = call else {
        // Not inside a send/receive syscall with an address (io_uring, a compat task, recv()).
        bump(Counter::UdpMissingPeer);
        return;
    };
    if sending {
        let peer =
            sockaddr_of(call, index).and_then(|address| peer::read_sockaddr(Memory::User, address));
        count(sk, peer, bytes, true, layout);
        return;
    }
    if call.pending_sk != 0 {
        // recvmmsg: the previous datagram's address was written before this one was received.
        flush(call, layout);
    }
    call.pending_sk = sk;
    call.pending_bytes = bytes;
    call.pending_index = index;
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
        conn::close_socket(sk, IPPROTO_UDP, &layout().sock);
    } else if protocol == u32::from(tracer_common::conn::IPPROTO_TCP) {
        // A TCP connection that closed while bytes were still to be read ends when its
        // application lets go of the socket, read or not.
        conn::finish_pending(sk, &layout().sock);
    }
    // The return value of sock_release programs is ignored; 1 is "allow" for the others.
    1
}
