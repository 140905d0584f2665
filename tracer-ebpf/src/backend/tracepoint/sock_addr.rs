//! Peers of unconnected UDP sockets on the tracepoint backend, from cgroup `sock_addr` programs
//! on the cgroup v2 root (no syscall tracepoint: those switch every syscall of every process
//! onto the kernel's slower traced path).
//!
//! `sock:sock_send_length` / `sock:sock_recv_length` give the socket and the byte count of every
//! datagram, but not its peer. An unconnected socket has one flow per peer, and these programs
//! see it, in process context, on the thread that makes the call:
//! - `cgroup/sendmsg4` / `sendmsg6` (Linux 4.18) run in `udp_sendmsg` / `udpv6_sendmsg` when
//!   the caller names a destination (`sendto`, `sendmsg` with `msg_name`, each message of a
//!   `sendmmsg`), before the datagram is sent; `sock_send_length` fires when the call returns.
//!   An IPv6 socket sending to an IPv4(-mapped) address goes through `udp_sendmsg`, so
//!   `sendmsg4` fires for it.
//! - `cgroup/recvmsg4` / `recvmsg6` (Linux 5.2) run in `udp_recvmsg` / `udpv6_recvmsg` after the
//!   datagram was copied, when the caller asked for the source address (`recvfrom` with an
//!   address, `recvmsg` with `msg_name`, each message of a `recvmmsg`); `sock_recv_length` fires
//!   when the call returns. IPv4 datagrams of an IPv6 socket come with a mapped address through
//!   `recvmsg6`, folded to IPv4 here.
//!
//! Each program hands the peer over to the length event of the same thread, which takes it
//! ([`take`]) and counts the datagram with it, through the same path as every other UDP
//! datagram (`crate::conn::io`). The hand-off is a slot of a plain array indexed by thread id
//! (`NT_UDP_HANDOFF`), tagged with the thread's pid_tgid: not a per-CPU slot (a blocked
//! sendmsg can sleep and move between CPUs), and not a hash map keyed by thread, which it was:
//! an LRU insert, lookup and delete cost ~600 ns per datagram on this project's host (their
//! locks and atomics), plain stores and loads ~20. Two threads whose ids are equal modulo the
//! array's size, in calls at the same time, share a slot: the second takes it and the first's
//! datagram loses its peer (`udp_handoff_collision`, then `udp_missing_peer`). The tags are
//! checked before and after the peer is copied, so a peer is never attributed to a datagram
//! whose slot was being rewritten. `sendmmsg`/`recvmmsg` go through `udp_sendmsg` /
//! `udp_recvmsg` and `sock_sendmsg` / `sock_recvmsg` once per message, so each message's hand-off
//! is taken by its own length event.
//!
//! What stays uncovered: a receive that does not ask for the address (`recv()`, `read()`,
//! `recvmsg` with a NULL `msg_name`) on an unconnected socket runs no `recvmsg` program, and its
//! datagram counts as `udp_missing_peer`. Sends without an address on an unconnected socket fail
//! (EDESTADDRREQ). Unlike the syscall tracepoints these programs replace, io_uring and 32-bit
//! compat tasks are covered (the hooks are in the UDP functions, not in the syscalls).
//!
//! The programs must allow the call: they return 1 whatever happens.

use core::sync::atomic::{Ordering, compiler_fence};

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::{cgroup_sock_addr, map},
    maps::Array,
    programs::SockAddrContext,
};
use tracer_common::{conn::IPPROTO_UDP, counters::Counter};

use crate::{
    conn::{
        layout::layout,
        peer::{self, Peer},
        sock::as_scalar,
    },
    counters::bump,
};

/// One datagram's peer, from its `sock_addr` program to its length event.
#[repr(C)]
#[derive(Clone, Copy)]
struct Handoff {
    /// pid_tgid of the thread whose datagram this is; 0 for a free slot.
    tag: u64,
    /// The socket the program ran for: the length event takes the peer only for the same one.
    sk: u64,
    addr: [u8; 16],
    /// Host byte order.
    port: u16,
    family: u16,
    /// 1 for a send, 0 for a receive.
    sending: u8,
    _pad: [u8; 3],
}

/// Slots of [`NT_UDP_HANDOFF`]: a power of two, so that a thread's slot is its id's low bits.
const HANDOFF_SLOTS: u32 = 16_384;

/// Thread -> the peer of the datagram it is sending or receiving, in slot `tid % HANDOFF_SLOTS`.
/// Every UDP length event of the thread frees its slot; one whose call has no length event
/// (a peek: [`forget`]) is freed too, and a slot left behind anyway is overwritten by the next
/// call of a thread with the same slot.
#[map(name = "NT_UDP_HANDOFF")]
static NT_UDP_HANDOFF: Array<Handoff> = Array::with_max_entries(HANDOFF_SLOTS, 0);

/// This thread's slot and its tag (pid_tgid).
#[inline(always)]
fn slot() -> Option<(&'static mut Handoff, u64)> {
    let tag = bpf_get_current_pid_tgid();
    // The thread id is the low half; its low bits spread threads over the slots.
    let index = (tag as u32) & (HANDOFF_SLOTS - 1);
    let slot = NT_UDP_HANDOFF.get_ptr_mut(index)?;
    // SAFETY: an array value, valid for the program's run; plain integers. Another thread that
    // shares the slot may write it at the same time: the tags say whose it is.
    Some((unsafe { &mut *slot }, tag))
}

/// `sendto`/`sendmsg` to an IPv4 destination (also from an IPv6 socket, IPv4-mapped).
#[cgroup_sock_addr(sendmsg4)]
pub fn nt_udp_sendmsg4(ctx: SockAddrContext) -> i32 {
    hand_over(&ctx, false, true);
    1
}

/// `sendto`/`sendmsg` to an IPv6 destination.
#[cgroup_sock_addr(sendmsg6)]
pub fn nt_udp_sendmsg6(ctx: SockAddrContext) -> i32 {
    hand_over(&ctx, true, true);
    1
}

/// `recvfrom`/`recvmsg` asking for an IPv4 source.
#[cgroup_sock_addr(recvmsg4)]
pub fn nt_udp_recvmsg4(ctx: SockAddrContext) -> i32 {
    hand_over(&ctx, false, false);
    1
}

/// `recvfrom`/`recvmsg` asking for an IPv6 source (IPv4 ones arrive mapped).
#[cgroup_sock_addr(recvmsg6)]
pub fn nt_udp_recvmsg6(ctx: SockAddrContext) -> i32 {
    hand_over(&ctx, true, false);
    1
}

/// Leaves the peer in `ctx` (`user_ip4`/`user_ip6` and `user_port`, network byte order) for the
/// length event of this thread's call.
#[inline(always)]
fn hand_over(ctx: &SockAddrContext, v6: bool, sending: bool) {
    let sa = ctx.sock_addr;
    // SAFETY: context field reads, rewritten by the verifier into reads of the kernel's context;
    // volatile so that the compiler keeps them 4-byte loads (the verifier refuses wider ones).
    let protocol = unsafe { core::ptr::read_volatile(&raw const (*sa).protocol) };
    if protocol != u32::from(IPPROTO_UDP) {
        // UDP-Lite shares these hooks; the length events count UDP only.
        return;
    }
    // SAFETY: as above; `sk` is the socket the call is on, never NULL in these hooks.
    let sk = as_scalar(unsafe { (*sa).__bindgen_anon_1.sk } as u64);
    if sk == 0 {
        return;
    }
    if peer::is_connected(sk, &layout().sock) {
        // A connected socket's flow is the socket: no peer needed, nothing left behind.
        return;
    }
    // SAFETY: as above.
    let port = u16::from_be(unsafe { core::ptr::read_volatile(&raw const (*sa).user_port) } as u16);
    let peer = if v6 {
        // SAFETY: as above, one 4-byte word at a time.
        let words = unsafe {
            [
                core::ptr::read_volatile(&raw const (*sa).user_ip6[0]),
                core::ptr::read_volatile(&raw const (*sa).user_ip6[1]),
                core::ptr::read_volatile(&raw const (*sa).user_ip6[2]),
                core::ptr::read_volatile(&raw const (*sa).user_ip6[3]),
            ]
        };
        let [w0, w1, w2, w3] = words.map(u32::to_ne_bytes);
        let [a0, a1, a2, a3] = w0;
        let [a4, a5, a6, a7] = w1;
        let [a8, a9, a10, a11] = w2;
        let [a12, a13, a14, a15] = w3;
        let addr = [
            a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, a14, a15,
        ];
        Peer::v6(addr, port)
    } else {
        // SAFETY: as above.
        let word = unsafe { core::ptr::read_volatile(&raw const (*sa).user_ip4) };
        Peer::v4(word.to_ne_bytes(), port)
    };
    let Some((slot, tag)) = slot() else {
        return;
    };
    // SAFETY: a valid slot (above); volatile so that the tag is written before the peer and
    // after it, in program order (see `take`).
    unsafe {
        let previous = core::ptr::read_volatile(&raw const slot.tag);
        if previous != 0 && previous != tag {
            bump(Counter::UdpHandoffCollision);
        }
        core::ptr::write_volatile(&raw mut slot.tag, 0);
        // The peer's plain stores stay between the two tag stores: volatile accesses alone do
        // not order the non-volatile ones around them.
        compiler_fence(Ordering::SeqCst);
        slot.sk = sk;
        slot.addr = peer.addr;
        slot.port = peer.port;
        slot.family = peer.family;
        slot.sending = u8::from(sending);
        compiler_fence(Ordering::SeqCst);
        core::ptr::write_volatile(&raw mut slot.tag, tag);
    }
}

/// The peer a `sock_addr` program left for this thread's datagram on `sk` in this direction,
/// removed: `None` when the call named no address. Called by every UDP length event of the
/// thread (whatever its outcome), so that no later call uses a stale peer.
#[inline(always)]
pub fn take(sk: u64, sending: bool) -> Option<Peer> {
    let (slot, tag) = slot()?;
    // SAFETY: a valid slot; the tag is read before and after the peer (volatile, in program
    // order), so a peer that another thread rewrote meanwhile is not taken.
    unsafe {
        if core::ptr::read_volatile(&raw const slot.tag) != tag {
            return None;
        }
        compiler_fence(Ordering::SeqCst);
        let ours = slot.sk == sk && slot.sending == u8::from(sending);
        let peer = Peer {
            family: slot.family,
            addr: slot.addr,
            port: slot.port,
        };
        compiler_fence(Ordering::SeqCst);
        if core::ptr::read_volatile(&raw const slot.tag) != tag {
            return None;
        }
        core::ptr::write_volatile(&raw mut slot.tag, 0);
        ours.then_some(peer)
    }
}

/// A peek took no datagram: its address (left by `recvmsg4/6`) must not name the datagram of a
/// later receive of this thread that asks for none.
#[inline(always)]
pub fn forget() {
    let Some((slot, tag)) = slot() else {
        return;
    };
    // SAFETY: a valid slot; only this thread's own tag is cleared.
    unsafe {
        if core::ptr::read_volatile(&raw const slot.tag) == tag {
            core::ptr::write_volatile(&raw mut slot.tag, 0);
        }
    }
}
