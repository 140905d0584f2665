//! UDP on the tracepoint backend: each datagram counted at its length event, with the peer of an
//! unconnected socket from the cgroup `sock_addr` programs (`super::sock_addr`), and the
//! socket's close from a cgroup `sock_release` program.
//!
//! Connected sockets need no peer: their flow is the socket (`udp_key`). Datagrams of an
//! unconnected socket whose peer is unknown count as `udp_missing_peer`: receives that do not ask
//! for the source address (`recv()`, `read()`, `recvmsg` with a NULL `msg_name`), the one gap of
//! the `sock_addr` hooks. Zero-length datagrams are not counted (`udp_empty_datagram`).
//!
//! Minimum kernels: `sock_*_length` 6.3; `BPF_CGROUP_INET_SOCK_RELEASE` 5.9; the `sock_addr`
//! hooks 4.18 (sendmsg) and 5.2 (recvmsg).

use aya_ebpf::{macros::cgroup_sock, programs::SockContext};
use tracer_common::{conn::IPPROTO_UDP, counters::Counter, offsets::KernelLayout};

use super::sock_addr;
use crate::{
    conn::{self, layout::layout, peer},
    counters::bump,
};

/// `MSG_ERRQUEUE`: a receive from the socket's error queue (ICMP errors, timestamps) carries no
/// datagram from the peer.
const MSG_ERRQUEUE: i32 = 0x2000;

/// `sock_send_length` / `sock_recv_length` on a UDP socket `sk` returned `ret` (`flags`: the
/// receive flags, MSG_PEEK already excluded by the caller).
#[inline(always)]
pub fn on_length(sk: u64, ret: i32, flags: i32, sending: bool, layout: &KernelLayout) {
    // Taken whatever the outcome: the hand-off was for this call, and no later call may use it.
    let peer = sock_addr::take(sk, sending);
    if !sending && flags & MSG_ERRQUEUE != 0 {
        return;
    }
    if ret < 0 {
        // Failed: nothing was sent or received.
        return;
    }
    if ret == 0 {
        bump(Counter::UdpEmptyDatagram);
        return;
    }
    let bytes = ret as u64;
    let Some(key) = peer::udp_key(sk, peer, &layout.sock) else {
        // Unconnected, and the call named no address (a receive without one).
        bump(Counter::UdpMissingPeer);
        return;
    };
    if sending {
        conn::on_send(&key, IPPROTO_UDP, bytes, &layout.sock);
    } else {
        conn::on_recv(&key, IPPROTO_UDP, bytes, &layout.sock);
    }
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
