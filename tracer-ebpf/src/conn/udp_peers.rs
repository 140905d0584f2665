//! The peer flows of each unconnected UDP socket, so that closing the socket closes all of them:
//! such a socket has one flow per peer (keyed `{sk, peer}`), but its close hook only knows `sk`.
//!
//! Owner of `NT_UDP_PEERS`: `{sk, slot} -> peer`, slots `0..MAX_UDP_PEERS` per socket. A slot is
//! claimed with a `BPF_NOEXIST` insert, which the kernel performs atomically: two CPUs listing new
//! peers of one socket at the same time get different slots. (A `{count, peers[N]}` value would
//! need an atomic fetch-add to claim a slot, which BPF only has from 5.12 on, or a spin lock.)
//!
//! Owner of `NT_UDP_SOCKS` too: `sk -> generation` of every unconnected UDP socket with peer
//! flows. A flow's key carries its socket's generation, so a new socket at a freed socket's
//! address starts new flows, and a flow whose generation is no longer in `NT_UDP_SOCKS` belongs
//! to a closed socket.
//!
//! Flows beyond `MAX_UDP_PEERS` are counted in `udp_peers_overflow` and not listed: their entries
//! stay in `NT_CONNS` after the socket closes, and userspace ends them at its next read (their
//! generation is gone). Flows that find the peer map full (`udp_peers_map_full`) are ended the
//! same way. So a server socket with any number of peers ends every flow exactly once.

use aya_ebpf::{bindings::BPF_NOEXIST, helpers::bpf_get_prandom_u32, macros::map, maps::HashMap};
use tracer_common::{
    conn::{
        ConnKey, ConnTuple, IPPROTO_UDP, MAX_UDP_PEERS, UdpPeerSlot as PeerSlot,
        UdpPeerSlotKey as PeerSlotKey,
    },
    counters::Counter,
    offsets::SockOffsets,
};

use crate::counters::bump;

/// `EEXIST`: the slot is taken.
const EEXIST: i32 = 17;

/// Peer lists of unconnected UDP sockets. Every slot names an entry of `NT_CONNS`, so userspace
/// sizes this like `NT_CONNS` at load time.
#[map(name = "NT_UDP_PEERS")]
static NT_UDP_PEERS: HashMap<PeerSlotKey, PeerSlot> = HashMap::with_max_entries(65_536, 0);

/// Generations of unconnected UDP sockets with peer flows. Sized like `NT_UDP_PEERS`.
#[map(name = "NT_UDP_SOCKS")]
static NT_UDP_SOCKS: HashMap<u64, u32> = HashMap::with_max_entries(65_536, 0);

/// The generation of unconnected UDP socket `sk`, drawn when its first peer flow is created.
/// 0 when `NT_UDP_SOCKS` is full (counted): such flows are left to expiry.
#[inline(always)]
pub fn socket_gen(sk: u64) -> u32 {
    if let Some(generation) = NT_UDP_SOCKS.get_ptr(sk) {
        // SAFETY: a map value, valid for this program run.
        return unsafe { *generation };
    }
    // SAFETY: no preconditions. `| 1`: 0 means "no generation".
    let fresh = unsafe { bpf_get_prandom_u32() } | 1;
    // BPF_NOEXIST: two CPUs creating the first flows of one socket agree on the first insert.
    let _ = NT_UDP_SOCKS.insert(sk, fresh, u64::from(BPF_NOEXIST));
    match NT_UDP_SOCKS.get_ptr(sk) {
        // SAFETY: as above.
        Some(generation) => unsafe { *generation },
        None => {
            bump(Counter::UdpSocksMapFull);
            0
        }
    }
}

/// Lists the new peer flow `key` (`key.peer_family != 0`) under its socket. Called once per flow,
/// by whoever created its `NT_CONNS` entry.
// Not inlined: a BPF subprogram keeps its loop's stack out of every caller of `entry` (several
// of them are close to the 512-byte limit).
#[inline(never)]
pub fn add(key: &ConnKey, tuple: &ConnTuple) {
    if tuple.saddr == [0u8; 16] {
        // Bound to 0.0.0.0 / :: (or not bound before its first send): the kernel picks the
        // source address per datagram, after these hooks; the flow reports the wildcard.
        bump(Counter::UdpWildcardLocal);
    }
    let peer = PeerSlot {
        addr: key.peer_addr,
        port: key.peer_port,
        family: key.peer_family,
    };
    for slot in 0..MAX_UDP_PEERS {
        let slot_key = PeerSlotKey {
            sk: key.sk,
            slot,
            _pad: 0,
        };
        match NT_UDP_PEERS.insert(slot_key, peer, u64::from(BPF_NOEXIST)) {
            Ok(()) => return,
            Err(e) if e == -EEXIST => {}
            Err(_) => {
                bump(Counter::UdpPeersMapFull);
                return;
            }
        }
    }
    // More peers than the list holds: this flow is closed by userspace expiry, not by the
    // socket's close.
    bump(Counter::UdpPeersOverflow);
}

/// Socket `sk` is closing: forget its generation (userspace then ends the flows that are not
/// listed), close (emit, once) every listed peer flow and delete the list.
#[inline(always)]
pub fn close_all(sk: u64, offsets: &SockOffsets) {
    // 0: no peer flow was created, or only while `NT_UDP_SOCKS` was full (those flows carry 0).
    let socket_gen = match NT_UDP_SOCKS.get_ptr(sk) {
        // SAFETY: a map value, valid for this program run; copied out before the delete.
        Some(generation) => unsafe { *generation },
        None => 0,
    };
    let _ = NT_UDP_SOCKS.remove(sk);
    for slot in 0..MAX_UDP_PEERS {
        close_slot(sk, slot, socket_gen, offsets);
    }
}

/// One slot of [`close_all`]: closes the flow it lists, if any, and frees it.
// Not inlined, on purpose: the verifier walks a bounded loop once per iteration, and with the
// close inlined every path through one iteration's close (entry found or not, ring reserved or
// full, entry removed or not) reached the next iteration as a state of its own. The release
// program took 887,288 verified instructions of the kernel's 1,000,000 (seconds of loading,
// tens of seconds under an emulated CPU); as a subprogram, the paths of one close end at its
// return and the loop goes on from one state.
#[inline(never)]
fn close_slot(sk: u64, slot: u32, socket_gen: u32, offsets: &SockOffsets) {
    let slot_key = PeerSlotKey { sk, slot, _pad: 0 };
    let Some(peer) = NT_UDP_PEERS.get_ptr(slot_key) else {
        // Slots are claimed in order, so the first empty one normally ends the list; looking
        // at every slot anyway costs little and does not depend on that.
        return;
    };
    // SAFETY: a map value, valid for this program run; copied out before the delete.
    let peer = unsafe { *peer };
    let key = ConnKey {
        sk,
        peer_addr: peer.addr,
        peer_port: peer.port,
        peer_family: peer.family,
        socket_gen,
    };
    super::close(&key, IPPROTO_UDP, offsets);
    let _ = NT_UDP_PEERS.remove(slot_key);
}
