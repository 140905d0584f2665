//! The start-up walk (Linux 5.9+): `iter/tcp` and `iter/udp` programs that userspace runs once,
//! in every network namespace, right after every hook is attached
//! (tracer/src/kernel/iter.rs, `Seeder`). They track the sockets that existed before the tracer
//! started, through [`conn::seed`]: the same entry rules as every backend, marked
//! `FLAG_PREEXISTING`, with the kernel's totals so far in `ConnStats::before_start`.
//!
//! - TCP: every socket in a state that carries data (established, or closing down with both
//!   ports). Listeners are no connections (as at `listen()`, which creates no entry either):
//!   they are only remembered in [`NT_SEED_LISTENERS`], to tell accepted connections (a local
//!   port and address a listener of the same namespace has: incoming) from the ones this host
//!   opened (outgoing). The kernel's TCP iterator visits every listener before any other socket
//!   (`tcp_seq_next` walks the listening hash, then the established one), so the listeners are
//!   known when the children come. Request socks and timewait socks are skipped (no
//!   application holds them). A connect still in SYN_SENT is left to the state hooks, which
//!   track it when it is established.
//! - UDP: every connected socket (outgoing: it chose its peer). An unconnected socket is keyed
//!   by peer, and the kernel keeps no peers for it: its flows start at its next send or receive
//!   with a peer, by the data path's rules.
//!
//! The owners are named afterwards by the owner walk (`iter/task_file`), which names every
//! tracked socket without an owner. Each program writes one byte per socket it started to
//! track (userspace counts them).
//!
//! Owner of the map `NT_SEED_LISTENERS`.

use core::ffi::c_void;

use aya_ebpf::{
    bindings::{BPF_ANY, seq_file},
    helpers::{bpf_probe_read_kernel, bpf_seq_write},
    macros::map,
    maps::LruHashMap,
};
use tracer_common::{
    conn::{DIRECTION_INCOMING, DIRECTION_OUTGOING, IPPROTO_TCP, IPPROTO_UDP},
    linux::{
        TCP_CLOSE_WAIT, TCP_CLOSING, TCP_ESTABLISHED, TCP_FIN_WAIT1, TCP_FIN_WAIT2, TCP_LAST_ACK,
        TCP_LISTEN,
    },
    offsets::SockOffsets,
};

use crate::conn::{self, layout, sock};

/// `struct bpf_iter__tcp { meta; struct sock_common *sk_common; uid_t uid; }` and
/// `struct bpf_iter__udp { meta; struct udp_sock *udp_sk; uid_t uid; int bucket; }` (both
/// stable since 5.9): the meta pointer at 0, the socket at 8.
const CTX_META: usize = 0;
const CTX_SOCK: usize = 8;

/// A TCP listener seen by the walk: its namespace, local port and local address (all zero for
/// a wildcard bind).
#[repr(C)]
#[derive(Clone, Copy)]
struct ListenerKey {
    netns: u32,
    port: u16,
    _pad: u16,
    addr: [u8; 16],
}

/// The listeners of the current walk. LRU: a host with more listeners than this loses the
/// direction of some (reported as outgoing), never the connections.
#[map(name = "NT_SEED_LISTENERS")]
static NT_SEED_LISTENERS: LruHashMap<ListenerKey, u8> = LruHashMap::with_max_entries(4096, 0);

#[unsafe(no_mangle)]
#[unsafe(link_section = "iter/tcp")]
pub fn nt_seed_tcp(ctx: *mut c_void) -> i32 {
    let Some(sk) = socket(ctx) else {
        return 0;
    };
    let offsets = &layout::layout().sock;
    let Ok(state) = layout::read_kernel::<u8>(sk, offsets.skc_state) else {
        return 0;
    };
    let state = i32::from(state);
    if state == TCP_LISTEN {
        if let Some(key) = listener_key(sk, offsets) {
            let _ = NT_SEED_LISTENERS.insert(key, 1u8, u64::from(BPF_ANY));
        }
        return 0;
    }
    // Only the states of `conn::tcp_io_may_track`: a timewait or request sock has no
    // `tcp_sock` behind it, a closed one is over, a connect in progress is the hooks' to see.
    let data_state = matches!(
        state,
        TCP_ESTABLISHED
            | TCP_FIN_WAIT1
            | TCP_FIN_WAIT2
            | TCP_CLOSE_WAIT
            | TCP_LAST_ACK
            | TCP_CLOSING
    );
    if !data_state {
        return 0;
    }
    let direction = if accepted(sk, offsets) {
        DIRECTION_INCOMING
    } else {
        DIRECTION_OUTGOING
    };
    if conn::seed(sk, IPPROTO_TCP, direction, offsets) {
        count(ctx);
    }
    0
}

#[unsafe(no_mangle)]
#[unsafe(link_section = "iter/udp")]
pub fn nt_seed_udp(ctx: *mut c_void) -> i32 {
    let Some(sk) = socket(ctx) else {
        return 0;
    };
    let offsets = &layout::layout().sock;
    // Connected: it has a remote port (and is keyed by its own address on the data path).
    if !conn::peer::is_connected(sk, offsets) {
        return 0;
    }
    if conn::seed(sk, IPPROTO_UDP, DIRECTION_OUTGOING, offsets) {
        count(ctx);
    }
    0
}

/// The socket of this step as a plain number (a probe read, not a load: the verifier would
/// keep a loaded socket pointer typed and refuse the variable offsets the layout reads add to
/// it). `None` on the iterator's final call (NULL).
#[inline(always)]
fn socket(ctx: *mut c_void) -> Option<u64> {
    // SAFETY: bpf_probe_read_kernel validates the address.
    let sk: u64 =
        unsafe { bpf_probe_read_kernel(ctx.cast::<u8>().wrapping_add(CTX_SOCK).cast::<u64>()) }
            .ok()?;
    (sk != 0).then_some(sk)
}

/// The listener key of socket `sk`'s own end (namespace, local port, local address).
#[inline(always)]
fn listener_key(sk: u64, offsets: &SockOffsets) -> Option<ListenerKey> {
    let tuple = sock::sock_tuple(sk, offsets, IPPROTO_TCP).ok()?;
    Some(ListenerKey {
        netns: tuple.netns,
        port: tuple.sport,
        _pad: 0,
        addr: tuple.saddr,
    })
}

/// Whether TCP socket `sk` is a listener's child: a listener of its namespace has its local
/// port, bound to its local address or to the wildcard. (The tuple folds an IPv4 connection on
/// an IPv6 socket to IPv4, so the child of a dual-stack `[::]` listener matches the wildcard.)
#[inline(always)]
fn accepted(sk: u64, offsets: &SockOffsets) -> bool {
    let Some(mut key) = listener_key(sk, offsets) else {
        return false;
    };
    // SAFETY: map values are plain bytes, only tested for presence.
    if unsafe { NT_SEED_LISTENERS.get(key) }.is_some() {
        return true;
    }
    key.addr = [0; 16];
    // SAFETY: as above.
    unsafe { NT_SEED_LISTENERS.get(key) }.is_some()
}

/// One byte of output for one socket tracked.
#[inline(always)]
fn count(ctx: *mut c_void) {
    // `ctx->meta->seq`, both loaded directly: `bpf_seq_write` wants the typed `seq_file *`.
    // SAFETY: the iterator context always holds a valid `meta`, whose `seq` is valid for the
    // program's run; the verifier checks both loads against BTF.
    unsafe {
        let meta = core::ptr::read_volatile(ctx.cast::<u8>().add(CTX_META).cast::<*const u8>());
        let seq = core::ptr::read_volatile(meta.cast::<*mut seq_file>());
        let byte: u8 = 1;
        let _ = bpf_seq_write(seq, (&raw const byte).cast(), 1);
    }
}
