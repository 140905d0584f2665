//! The one socket-call path of every backend: what one send or receive call on a socket does to
//! the connection table. Each backend only gets the call's socket, return value and flags from
//! its hooks (fexit arguments, a kprobe -> kretprobe stash, a raw tracepoint's registers) and,
//! for an unconnected UDP socket, says where the peer comes from (the kernel `msghdr`, or the
//! cgroup `sock_addr` hand-off); the rules are here, once:
//! - A receive that peeks or reads the error queue moves no payload: not counted
//!   ([`skipped_receive`], checked by the backends, which see the flags at different times).
//! - A tracked socket (TCP, or connected UDP) is found by its address alone: bytes added, the
//!   copied TCP counters refreshed on a zero-byte call or when stale. A failed or empty call on
//!   a UDP flow counts nothing (`udp_empty_datagram` for an empty one).
//! - An untracked TCP socket gets an entry only from a call that moved bytes in a data state (a
//!   connection that existed before the tracer: `conn::on_io`).
//! - An untracked UDP socket gets an entry from a call that moved bytes: the socket's flow when
//!   connected, else the peer's flow; a datagram whose peer is unknown counts as
//!   `udp_missing_peer`.
//! - Other protocols (UDP-Lite shares the UDP functions) are not counted.

use tracer_common::{
    conn::{ConnKey, IPPROTO_TCP, IPPROTO_UDP},
    counters::Counter,
    linux::{MSG_ERRQUEUE, MSG_PEEK},
};

use super::{
    layout::{layout, read_kernel},
    peer::{self, Peer},
};
use crate::counters::bump;

/// Where a backend gets the peer of an unconnected UDP socket's datagram. A trait with
/// always-inlined implementations rather than a closure: the compiler outlined the closure as a
/// BPF subprogram, whose stack frame comes on top of the caller's (the fentry and kprobe UDP
/// send programs then passed the 512-byte limit on 5.10 and 6.1).
pub trait PeerSource {
    /// The peer, or `None` when the call named none.
    fn peer(self) -> Option<Peer>;
}

/// A socket that never needs a peer (TCP).
pub struct NoPeer;

impl PeerSource for NoPeer {
    #[inline(always)]
    fn peer(self) -> Option<Peer> {
        None
    }
}

/// Whether a receive call with these `flags` moves no payload to count: a peek (the bytes are
/// read again later) or a read of the socket's error queue (timestamps, ICMP errors, zerocopy
/// notifications).
#[inline(always)]
pub fn skipped_receive(flags: u32) -> bool {
    flags & (MSG_PEEK | MSG_ERRQUEUE) != 0
}

/// A send (`sending`) or receive call on `sk` returned `ret` (bytes moved, or a negative errno).
/// `udp_peer` names the peer of an unconnected UDP socket; it is asked only for one, after the
/// call moved bytes, so that backends read the peer only when it is needed (and no `Option` is
/// carried across paths the older verifiers would have to merge).
#[inline(always)]
pub fn on_call(sk: u64, ret: i32, sending: bool, udp_peer: impl PeerSource) {
    // A TLS read or write call of this thread in progress learns its socket (ties an object
    // that names no descriptor, such as curl's).
    crate::tls::note_socket(sk);
    let bytes = if ret > 0 { ret as u64 } else { 0 };
    if let Some(stats) = super::tracked(sk) {
        if stats.tuple.protocol == IPPROTO_UDP && ret <= 0 {
            if ret == 0 {
                bump(Counter::UdpEmptyDatagram);
            }
            return;
        }
        super::on_tracked(sk, stats, bytes, sending);
        return;
    }
    let layout = layout();
    let offsets = &layout.sock;
    let Ok(protocol) = read_kernel::<u16>(sk, offsets.sk_protocol) else {
        bump(Counter::KernelReadFailed);
        return;
    };
    if protocol == u16::from(IPPROTO_TCP) {
        let key = ConnKey {
            sk,
            ..ConnKey::default()
        };
        super::on_io(&key, IPPROTO_TCP, bytes, sending, offsets);
        return;
    }
    if protocol != u16::from(IPPROTO_UDP) || ret < 0 {
        return;
    }
    if ret == 0 {
        // A datagram is only counted with its bytes.
        bump(Counter::UdpEmptyDatagram);
        return;
    }
    // Each branch ends in a key or a return: no `Option<Peer>` is merged across paths, whose
    // undefined `None` payload the compiler may copy around as uninitialised stack (which the
    // 5.10/6.1 verifiers reject).
    let key = if peer::is_connected(sk, offsets) {
        peer::udp_key(sk, None, offsets)
    } else {
        let Some(peer) = udp_peer.peer() else {
            bump(Counter::UdpMissingPeer);
            return;
        };
        peer::udp_key(sk, Some(peer), offsets)
    };
    let Some(key) = key else {
        bump(Counter::UdpMissingPeer);
        return;
    };
    super::on_io(&key, IPPROTO_UDP, bytes, sending, offsets);
}
