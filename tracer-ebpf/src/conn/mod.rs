//! The connection table shared by every backend: backends only turn their hook's arguments into
//! calls of [`on_send`], [`on_recv`], [`on_tcp_state`], [`on_tcp_event`] and [`close`], so every
//! backend has the same semantics.
//!
//! Owner of the maps `NT_CONNS` (open connections), `NT_CLOSED` (ring buffer of closed ones,
//! Linux 5.8+) and `NT_UNTRACKED` (LRU set of keys that did not fit, so each is counted once).
//! Other programs write into an entry only through this module ([`protocol::set`]).

pub mod at_read;
pub mod fd;
pub mod io;
pub mod layout;
pub mod peer;
pub mod protocol;
pub mod sock;
pub mod udp_peers;

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{bpf_get_prandom_u32, bpf_jiffies64, bpf_ktime_get_ns},
    macros::map,
    maps::{HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use tracer_common::{
    conn::{
        ClosedConn, ConnKey, ConnStats, DIRECTION_INCOMING, DIRECTION_OUTGOING, DIRECTION_UNKNOWN,
        FLAG_CLOSE_PENDING, FLAG_CLOSED, FLAG_ESTABLISHED, FLAG_PREEXISTING, IPPROTO_TCP,
    },
    counters::Counter,
    offsets::SockOffsets,
};

use crate::counters::bump;

/// Open connections. Sized from `Config::max_tracked_connections` at load time.
#[map(name = "NT_CONNS")]
static NT_CONNS: HashMap<ConnKey, ConnStats> = HashMap::with_max_entries(1, 0);

/// Closed connections with their final counters. Sized from `Config` at load time.
#[map(name = "NT_CLOSED")]
static NT_CLOSED: RingBuf = RingBuf::with_byte_size(4096, 0);

/// Keys that found `NT_CONNS` full, so the map-full counter counts connections, not events.
#[map(name = "NT_UNTRACKED")]
static NT_UNTRACKED: LruHashMap<ConnKey, u8> = LruHashMap::with_max_entries(4096, 0);

/// Scratch space to build a new entry in: a `ConnStats` does not fit on the 512-byte stack
/// together with everything else a hook holds. One slot per nesting level of programs on one
/// CPU: a process-context program building an entry can be interrupted by a softirq program
/// (a packet, a state change) that builds one too, and with a single slot the interrupted
/// program would then insert the other connection's tuple under its own key. Nested programs
/// run to completion before the one they interrupted resumes, so a per-CPU depth counter
/// ([`NT_SCRATCH_DEPTH`]) hands each level its own slot.
#[map(name = "NT_SCRATCH")]
static NT_SCRATCH: PerCpuArray<ConnStats> = PerCpuArray::with_max_entries(SCRATCH_DEPTH, 0);

/// How deep programs that build entries may nest on one CPU (process context, softirq, hard
/// interrupt, NMI: four).
pub const SCRATCH_DEPTH: u32 = 4;

/// The scratch slots in use on this CPU.
#[map(name = "NT_SCRATCH_DEPTH")]
static NT_SCRATCH_DEPTH: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

// Linux TCP states (include/net/tcp_states.h).
pub use tracer_common::linux::{
    TCP_CLOSE, TCP_CLOSE_WAIT, TCP_CLOSING, TCP_ESTABLISHED, TCP_FIN_WAIT1, TCP_FIN_WAIT2,
    TCP_LAST_ACK, TCP_LISTEN, TCP_SYN_RECV, TCP_SYN_SENT,
};

/// How an entry is created when it does not exist yet.
#[derive(Clone, Copy)]
pub struct Origin {
    pub direction: u8,
    /// The pid to record (0 when the hook runs outside the owning process, e.g. in softirq).
    pub pid: u32,
    /// The owner's cgroup id, taken with `pid` (0 with it).
    pub cgroup_id: u64,
    /// The socket existed before the tracer started (the start-up walk, `crate::iter::seed`):
    /// the new entry records the kernel's totals so far in `before_start` and is established.
    pub preexisting: bool,
}

impl Origin {
    /// An entry created in the owning process: the current task's tgid and cgroup.
    #[inline(always)]
    pub fn current(direction: u8) -> Self {
        Self {
            direction,
            pid: sock::current_tgid(),
            cgroup_id: sock::current_cgroup_id(),
            preexisting: false,
        }
    }

    /// An entry created outside its owner (softirq, a cgroup hook): no owner yet.
    #[inline(always)]
    pub fn unowned(direction: u8) -> Self {
        Self {
            direction,
            pid: 0,
            cgroup_id: 0,
            preexisting: false,
        }
    }

    /// A socket that existed before the tracer started, found by the start-up walk (no process
    /// context: the owner comes from the owner walk, `iter/task_file`).
    #[inline(always)]
    pub fn preexisting(direction: u8) -> Self {
        Self {
            direction,
            pid: 0,
            cgroup_id: 0,
            preexisting: true,
        }
    }
}

/// The entry for `key`, created from the socket's current tuple when missing. `None` when the
/// table is full (counted once per key) or the socket has no usable tuple (counted).
#[inline(always)]
pub fn entry(
    key: &ConnKey,
    protocol: u8,
    origin: Origin,
    offsets: &SockOffsets,
) -> Option<&'static mut ConnStats> {
    if let Some(stats) = NT_CONNS.get_ptr_mut(key) {
        // SAFETY: map values stay valid for the program's run; fields are plain integers.
        return Some(unsafe { &mut *stats });
    }
    let depth = NT_SCRATCH_DEPTH.get_ptr_mut(0)?;
    // SAFETY: this CPU's counter; a program nested on this CPU puts it back before this resumes.
    let level = unsafe { *depth };
    if level >= SCRATCH_DEPTH {
        bump(Counter::ScratchNested);
        return None;
    }
    // SAFETY: as above.
    unsafe { *depth = level + 1 };
    let created = build(key, protocol, origin, offsets, level);
    // SAFETY: as above.
    unsafe { *depth = level };
    created
}

/// [`entry`]'s creation of a missing entry, in scratch slot `level`.
#[inline(always)]
fn build(
    key: &ConnKey,
    protocol: u8,
    origin: Origin,
    offsets: &SockOffsets,
    level: u32,
) -> Option<&'static mut ConnStats> {
    let scratch = NT_SCRATCH.get_ptr_mut(level)?;
    // SAFETY: this CPU's slot of this nesting level: no other program uses it meanwhile.
    let stats = unsafe { &mut *scratch };
    let Ok(tuple) = sock::sock_tuple(key.sk, offsets, protocol) else {
        bump(Counter::MissingTuple);
        return None;
    };
    let now = now_ns();
    *stats = ConnStats::default();
    stats.tuple = tuple;
    stats.tuple.pid = origin.pid;
    stats.cgroup_id = origin.cgroup_id;
    if origin.pid != 0 {
        // An owned origin is the current task (`Origin::current`): its name, read once here
        // rather than on every call that builds an origin.
        stats.comm = sock::current_comm(offsets);
    }
    if key.peer_family != 0 {
        // An unconnected UDP flow: the socket has no remote end, the key's peer is it.
        if key.peer_family == tracer_common::conn::AF_INET && sock::is_v4_mapped(&stats.tuple.saddr)
        {
            // An IPv6 socket bound to an IPv4-mapped address talks IPv4 (the peer was folded).
            stats.tuple.saddr = sock::unmap(stats.tuple.saddr);
        }
        stats.tuple.family = key.peer_family;
        stats.tuple.daddr = key.peer_addr;
        stats.tuple.dport = key.peer_port;
    }
    if origin.preexisting {
        // Before the insert, so no other program ever sees the entry without them. The
        // counters proper stay zero: they count from the start.
        stats.flags |= FLAG_PREEXISTING;
        if protocol == IPPROTO_TCP {
            // Found in a data state (`crate::iter::seed`): the handshake is long done.
            stats.flags |= FLAG_ESTABLISHED;
            if sock::before_start(key.sk, offsets, &mut stats.before_start).is_err() {
                bump(Counter::KernelReadFailed);
            }
            // Packets and retransmits are copies of the kernel's totals less `before_start`.
            let _ = sock::refresh_tcp(key.sk, offsets, stats);
        }
    }
    stats.cookie = random_cookie();
    stats.created_ns = now;
    stats.updated_ns = now;
    stats.direction = origin.direction;
    // BPF_NOEXIST: when another CPU created the entry first, ours is dropped and theirs is used.
    // Passed by reference on purpose: by value it would be copied onto the 512-byte stack,
    // which is what the scratch slot is there to avoid.
    #[allow(clippy::needless_borrows_for_generic_args)]
    let created = NT_CONNS
        .insert(key, &*stats, u64::from(BPF_NOEXIST))
        .is_ok();
    if created && key.peer_family != 0 {
        // A new peer flow of an unconnected UDP socket: list it so the socket's close closes it.
        udp_peers::add(key, &stats.tuple);
    }
    match NT_CONNS.get_ptr_mut(key) {
        // SAFETY: as above.
        Some(stats) => Some(unsafe { &mut *stats }),
        None => {
            if NT_UNTRACKED
                .insert(key, 1u8, u64::from(BPF_NOEXIST))
                .is_ok()
            {
                bump(Counter::ConnMapFull);
            }
            None
        }
    }
}

#[inline(always)]
fn random_cookie() -> u64 {
    // SAFETY: no preconditions.
    let (high, low) = unsafe { (bpf_get_prandom_u32(), bpf_get_prandom_u32()) };
    (u64::from(high) << 32) | u64::from(low)
}

#[inline(always)]
fn now_ns() -> u64 {
    // SAFETY: no preconditions.
    unsafe { bpf_ktime_get_ns() }
}

/// Adds `n` to a counter another CPU may be adding to at the same time: a BPF atomic add
/// (`lock xadd`, every kernel the tracer supports), because `core`'s atomics have no
/// `fetch_add` on the BPF target and the old value is not needed.
#[inline(always)]
pub(crate) fn add(counter: &mut u64, n: u64) {
    let ptr: *mut u64 = counter;
    // SAFETY: `ptr` is a valid, 8-byte aligned u64 inside a map value.
    unsafe {
        core::arch::asm!(
            "lock *(u64 *)({ptr} + 0) += {n}",
            ptr = in(reg) ptr,
            n = in(reg) n,
            options(nostack),
        );
    }
}

/// The entry of a socket tracked under its own address (a TCP socket or a connected UDP
/// socket), if any.
#[inline(always)]
pub fn tracked(sk: u64) -> Option<&'static mut ConnStats> {
    let key = ConnKey {
        sk,
        ..ConnKey::default()
    };
    let stats = NT_CONNS.get_ptr_mut(key)?;
    // SAFETY: map values stay valid for the program's run; fields are plain integers.
    Some(unsafe { &mut *stats })
}

/// The data path's fast path (`io::on_call`): a call that moved `bytes` on `sk`, tracked under
/// its own address (a TCP socket or a connected UDP socket) with entry `stats`. One atomic add
/// and a read of `jiffies`; once per scheduler tick per connection (and on every zero-byte
/// call), the precise clock for `updated_ns` and, for TCP, the copied counters' probe reads.
///
/// Profiled on the 6.18 host (BPF run-time statistics, tracepoint backend, 64-byte TCP
/// ping-pong, each stage a build that returns there): the hash lookup ~75 ns, the atomic add
/// ~40-60 ns, `bpf_ktime_get_ns` and its store 60-100 ns on every call, against ~0 for a
/// `jiffies` compare. `bpf_ktime_get_coarse_ns` would be cheaper still but is refused to
/// tracing programs (not NMI-safe). So `updated_ns`, the last activity that drives idle expiry,
/// lags the last call by less than a tick (4 ms at HZ=250), and the packet, retransmit and RTT
/// copies by as much on a busy connection: state changes, retransmits, resets, zero-byte calls,
/// the close and every read (`at_read`) refresh them, so at rest and when read they are exact.
#[inline(always)]
pub fn on_tracked(sk: u64, stats: &mut ConnStats, bytes: u64, sending: bool) {
    let protocol = stats.tuple.protocol;
    account(stats, protocol, bytes, sending);
    if stats.flags & FLAG_CLOSE_PENDING != 0 {
        // Closed while bytes were still to be read: end it once they are (or at EOF).
        let offsets = layout::layout().sock;
        if bytes == 0 || !sock::has_unread_bytes(sk, &offsets) {
            finish_pending(sk, &offsets);
        }
        return;
    }
    touch(sk, stats, protocol, bytes);
}

/// The clock and the TCP copies of a call that moved `bytes` on a connection: read once per
/// scheduler tick per connection, and on every zero-byte call (see [`on_tracked`]).
#[inline(always)]
fn touch(sk: u64, stats: &mut ConnStats, protocol: u8, bytes: u64) {
    // SAFETY: no preconditions.
    let tick = unsafe { bpf_jiffies64() };
    if bytes != 0 && tick == stats.clock_jiffies {
        return;
    }
    stats.clock_jiffies = tick;
    if protocol == IPPROTO_TCP {
        let offsets = layout::layout().sock;
        refresh(sk, &offsets, stats);
    }
    stats.updated_ns = now_ns();
}

#[inline(always)]
fn refresh(sk: u64, offsets: &SockOffsets, stats: &mut ConnStats) {
    if sock::refresh_tcp(sk, offsets, stats).is_err() {
        bump(Counter::KernelReadFailed);
    }
}

/// Bytes and (UDP) datagrams of one successful call, and the owner if none is known yet.
#[inline(always)]
fn account(stats: &mut ConnStats, protocol: u8, bytes: u64, sending: bool) {
    // Syscall context: this process uses the socket. The first one to do so owns it, unless
    // connect (or the read-time walk of open files, for an accepted socket) already said who
    // does.
    if stats.tuple.pid == 0 {
        stats.tuple.pid = sock::current_tgid();
        stats.cgroup_id = sock::current_cgroup_id();
        stats.comm = sock::current_comm(&layout::layout().sock);
    }
    if bytes > 0 {
        if sending {
            add(&mut stats.sent_bytes, bytes);
        } else {
            add(&mut stats.recv_bytes, bytes);
        }
        if protocol != IPPROTO_TCP {
            // One datagram per successful send or receive call.
            if sending {
                add(&mut stats.sent_packets, 1);
            } else {
                add(&mut stats.recv_packets, 1);
            }
        }
    }
}

/// Whether an untracked TCP socket may get an entry from a send or receive: only a call that
/// moved bytes on a socket in a data state (established or closing down, with both ports), i.e.
/// a connection that existed before the tracer started. Anything else (a receive of EOF after
/// the close was emitted, a socket whose port was released) would start a second identity of a
/// connection that already ended, and nothing would ever end it.
#[inline(always)]
fn tcp_io_may_track(sk: u64, bytes: u64, offsets: &SockOffsets) -> bool {
    if bytes == 0 {
        return false;
    }
    let Ok(state) = layout::read_kernel::<u8>(sk, offsets.skc_state) else {
        return false;
    };
    let data_state = matches!(
        i32::from(state),
        TCP_ESTABLISHED
            | TCP_FIN_WAIT1
            | TCP_FIN_WAIT2
            | TCP_CLOSE_WAIT
            | TCP_LAST_ACK
            | TCP_CLOSING
    );
    data_state
        && layout::read_kernel::<u16>(sk, offsets.skc_num).is_ok_and(|port| port != 0)
        && layout::read_kernel::<u16>(sk, offsets.skc_dport).is_ok_and(|port| port != 0)
}

/// The slow path of a call on an untracked socket (`io::on_call`): creates the entry of `key`
/// where the rules allow, and accounts the call.
#[inline(always)]
fn on_io(key: &ConnKey, protocol: u8, bytes: u64, sending: bool, offsets: &SockOffsets) {
    if protocol == IPPROTO_TCP && !tcp_io_may_track(key.sk, bytes, offsets) {
        bump(Counter::TcpIoNotTracked);
        return;
    }
    let direction = match (protocol, sending) {
        // A TCP socket first seen on a send/receive existed before the tracer started.
        (IPPROTO_TCP, _) => DIRECTION_UNKNOWN,
        (_, true) => DIRECTION_OUTGOING,
        (_, false) => DIRECTION_INCOMING,
    };
    let origin = Origin::current(direction);
    let Some(stats) = entry(key, protocol, origin, offsets) else {
        return;
    };
    account(stats, protocol, bytes, sending);
    // A new entry (its tick is 0) gets the precise clock and, for TCP, its copies; a UDP peer
    // flow's later datagrams (they come this way: only sockets are found by address alone) are
    // stamped once per tick like the fast path's.
    touch(key.sk, stats, protocol, bytes);
}

/// A process holds socket `sk` (found by the read-time walk of every task's files): it owns
/// the connection tracked under the socket's own address (an accepted TCP socket, or any socket
/// found by the start-up walk) unless a process-context event already named an owner. Never
/// creates an entry. Returns whether it named the owner.
#[inline(always)]
pub fn set_owner(sk: u64, tgid: u32, cgroup_id: u64, comm: [u8; 16]) -> bool {
    match tracked(sk) {
        Some(stats) if stats.tuple.pid == 0 => {
            stats.tuple.pid = tgid;
            stats.cgroup_id = cgroup_id;
            stats.comm = comm;
            true
        }
        _ => false,
    }
}

/// The start-up walk (`crate::iter::seed`) found socket `sk`, which existed before the tracer
/// started and is in a state that carries data: track it from now on, with the same entry
/// rules as every backend ([`entry`]). Only creates: a socket the hooks already track (one
/// opened, or used, after they attached) keeps its entry, so nothing is counted twice.
/// Returns whether this call created the entry.
#[inline(always)]
pub fn seed(sk: u64, protocol: u8, direction: u8, offsets: &SockOffsets) -> bool {
    if tracked(sk).is_some() {
        return false;
    }
    let key = ConnKey {
        sk,
        ..ConnKey::default()
    };
    // If a hook creates the entry between the lookup above and the insert, `build`'s
    // BPF_NOEXIST keeps the hook's, and it has no `FLAG_PREEXISTING`.
    entry(&key, protocol, Origin::preexisting(direction), offsets)
        .is_some_and(|stats| stats.flags & FLAG_PREEXISTING != 0)
}

/// A TCP state change of socket `sk` (from `sock:inet_sock_set_state` or an equivalent hook).
#[inline(always)]
pub fn on_tcp_state(sk: u64, old: i32, new: i32, offsets: &SockOffsets) {
    let key = ConnKey {
        sk,
        ..ConnKey::default()
    };
    match new {
        TCP_SYN_SENT => {
            // connect(): runs in the connecting process.
            let origin = Origin::current(DIRECTION_OUTGOING);
            if let Some(stats) = entry(&key, IPPROTO_TCP, origin, offsets) {
                stats.updated_ns = now_ns();
            }
        }
        TCP_SYN_RECV if old == TCP_LISTEN => {
            // A child socket of a listener, created in softirq: the pid comes from its first
            // process-context event, or from the read-time walk of open files (iter/task_file).
            let origin = Origin::unowned(DIRECTION_INCOMING);
            if let Some(stats) = entry(&key, IPPROTO_TCP, origin, offsets) {
                stats.updated_ns = now_ns();
            }
        }
        TCP_ESTABLISHED => {
            established(&key, Origin::unowned(DIRECTION_UNKNOWN), offsets);
        }
        TCP_CLOSE => close(&key, IPPROTO_TCP, offsets),
        TCP_LISTEN => {}
        _ => on_tcp_event(sk, offsets),
    }
}

/// TCP socket `key` is established (state tracepoint, or `sock_ops`' established callbacks):
/// created if missing with `origin`, marked established, its tuple taken now that it is
/// complete (an outgoing connect's source port is assigned after SYN_SENT; an accepted child's
/// remote end after SYN_RECV).
#[inline(always)]
pub fn established(key: &ConnKey, origin: Origin, offsets: &SockOffsets) {
    if let Some(stats) = entry(key, IPPROTO_TCP, origin, offsets) {
        stats.flags |= FLAG_ESTABLISHED;
        if let Ok(tuple) = sock::sock_tuple(key.sk, offsets, IPPROTO_TCP) {
            let pid = stats.tuple.pid;
            stats.tuple = tuple;
            stats.tuple.pid = pid;
        }
        let _ = sock::refresh_tcp(key.sk, offsets, stats);
        stats.updated_ns = now_ns();
    }
}

/// Any other TCP event on `sk` (a retransmit, a state change that needs no action): refresh the
/// counters of a tracked connection. Never creates an entry.
#[inline(always)]
pub fn on_tcp_event(sk: u64, offsets: &SockOffsets) {
    if let Some(stats) = tracked(sk) {
        if sock::refresh_tcp(sk, offsets, stats).is_err() {
            bump(Counter::KernelReadFailed);
        }
        fill_source_port(sk, offsets, stats);
        stats.updated_ns = now_ns();
    }
}

/// The socket `sk` is being destroyed (or released by its last user): close its connection, and
/// for an unconnected UDP socket every peer flow it has.
///
/// Peer flows are found through the socket's list in [`udp_peers`] (bounded: flows beyond
/// `MAX_UDP_PEERS` were counted in `udp_peers_overflow` when created and are left to userspace
/// expiry). Each flow is emitted at most once: [`close`] removes the entry it emits.
#[inline(always)]
pub fn close_socket(sk: u64, protocol: u8, offsets: &SockOffsets) {
    let key = ConnKey {
        sk,
        ..ConnKey::default()
    };
    close(&key, protocol, offsets);
    if protocol == tracer_common::conn::IPPROTO_UDP {
        udp_peers::close_all(sk, offsets);
    }
}

/// A connect is recorded at SYN_SENT, before its source port is assigned, and by the time the
/// close is traced (after `inet_put_port`, on 6.x) the port is gone again: take the tuple at any
/// event in between (a SYN retransmit, a received reset), and at close where it is still there.
#[inline(always)]
fn fill_source_port(sk: u64, offsets: &SockOffsets, stats: &mut ConnStats) {
    if stats.tuple.sport != 0 {
        return;
    }
    if let Ok(tuple) = sock::sock_tuple(sk, offsets, IPPROTO_TCP)
        && tuple.sport != 0
    {
        let pid = stats.tuple.pid;
        stats.tuple = tuple;
        stats.tuple.pid = pid;
    }
}

/// The socket's pending error as the connection's failure, if it is one of those reported (a
/// later read of the error clears it: a pending close records it when the close happens).
#[inline(always)]
fn record_failure(sk: u64, offsets: &SockOffsets, stats: &mut ConnStats) {
    if let Ok(errno) = sock::sock_error(sk, offsets)
        && errno != 0
    {
        match reported_failure(errno) {
            Some(code) => stats.failure = code,
            None => bump(Counter::UnknownFailure),
        }
    }
}

/// The errno values reported as connection failures.
#[inline(always)]
fn reported_failure(errno: i32) -> Option<u16> {
    const ECONNRESET: i32 = 104;
    const ETIMEDOUT: i32 = 110;
    const ECONNREFUSED: i32 = 111;
    const EHOSTUNREACH: i32 = 113;
    const ENETUNREACH: i32 = 101;
    match errno {
        ECONNRESET | ETIMEDOUT | ECONNREFUSED | EHOSTUNREACH | ENETUNREACH => Some(errno as u16),
        _ => None,
    }
}

/// The connection `key` is over: emit its final counters on the ring buffer and remove it.
/// Called once per socket by construction: the entry is removed here, so a second close of the
/// same key finds nothing.
#[inline(always)]
pub fn close(key: &ConnKey, protocol: u8, offsets: &SockOffsets) {
    close_with_flags(key, protocol, offsets, 0);
}

/// [`close`], adding `flags` (`FLAG_*`, saying which hook saw the close) to the event.
///
/// A TCP connection whose application still has received bytes to read is not emitted yet: it
/// is marked `FLAG_CLOSE_PENDING` and [`finish_pending`] emits it once they are read, at EOF,
/// or when the application releases the socket, so that those bytes are counted. So is an
/// accepted connection the network closed before its application did any I/O, so that its
/// owner is known at its end (the application's next call names it).
#[inline(always)]
pub fn close_with_flags(key: &ConnKey, protocol: u8, offsets: &SockOffsets, flags: u8) {
    let _ = NT_UNTRACKED.remove(key);
    let Some(stats) = NT_CONNS.get_ptr_mut(key) else {
        return;
    };
    // SAFETY: see `entry`.
    let stats = unsafe { &mut *stats };
    if protocol == IPPROTO_TCP {
        if stats.flags & FLAG_CLOSE_PENDING != 0 {
            // A second hook saw the same close (sock_ops, then the tracepoint).
            stats.flags |= flags;
            return;
        }
        // An accepted connection that the network closed (a reset) before its application did
        // any I/O has no owner yet: wait for the application's next call on the socket (which
        // names it and ends the connection) or its release, as for unread bytes.
        let unowned = stats.tuple.pid == 0
            && sock::held_by_application(key.sk, offsets, layout::layout().file.socket_sk);
        if stats.flags & FLAG_ESTABLISHED != 0
            && (unowned || sock::has_unread_bytes(key.sk, offsets))
        {
            let _ = sock::refresh_tcp(key.sk, offsets, stats);
            fill_source_port(key.sk, offsets, stats);
            record_failure(key.sk, offsets, stats);
            stats.flags |= FLAG_CLOSE_PENDING | flags;
            stats.updated_ns = now_ns();
            return;
        }
    }
    emit_close(key, protocol, offsets, stats, flags);
}

/// Emits the end of TCP socket `sk` if its close is pending (see [`close_with_flags`]); called
/// after reads and when the application releases the socket.
#[inline(always)]
pub fn finish_pending(sk: u64, offsets: &SockOffsets) {
    let Some(stats) = tracked(sk) else {
        return;
    };
    if stats.flags & FLAG_CLOSE_PENDING != 0 {
        let key = ConnKey {
            sk,
            ..ConnKey::default()
        };
        emit_close(&key, IPPROTO_TCP, offsets, stats, 0);
    }
}

#[inline(always)]
fn emit_close(
    key: &ConnKey,
    protocol: u8,
    offsets: &SockOffsets,
    stats: &mut ConnStats,
    flags: u8,
) {
    if protocol == IPPROTO_TCP
        && stats.direction == DIRECTION_INCOMING
        && stats.flags & FLAG_ESTABLISHED == 0
    {
        // A listener's child that closes before its handshake completed (reset in SYN_RECV, or
        // the loser of two CPUs completing the same handshake): no application ever saw it,
        // and its tuple still has the listener's empty remote end.
        if NT_CONNS.remove(key).is_ok() {
            bump(Counter::EmbryonicClosed);
        }
        return;
    }
    if protocol == IPPROTO_TCP {
        let _ = sock::refresh_tcp(key.sk, offsets, stats);
        fill_source_port(key.sk, offsets, stats);
        record_failure(key.sk, offsets, stats);
    }
    stats.flags |= FLAG_CLOSED | flags;
    stats.updated_ns = now_ns();
    if stats.tuple.pid == 0 {
        bump(Counter::MissingPid);
    }
    // Whoever removes the entry ends the flow: userspace removes entries too (expiry, and flows
    // whose UDP socket is gone), so the record is copied first and submitted only if this
    // remove succeeded; otherwise userspace already reported the end, and ours is discarded.
    match NT_CLOSED.reserve::<ClosedConn>(0) {
        Some(mut event) => {
            let slot = event.as_mut_ptr();
            // SAFETY: the reservation is sized for a ClosedConn and owned until submit; the
            // fields are written in place, not built on the stack.
            unsafe {
                (*slot).key = *key;
                (*slot).stats = *stats;
            }
            if NT_CONNS.remove(key).is_ok() {
                event.submit(0);
                bump(Counter::ClosedEmitted);
            } else {
                event.discard(0);
                bump(Counter::CloseAlreadyEnded);
            }
        }
        None => {
            if NT_CONNS.remove(key).is_ok() {
                bump(Counter::RingBufFull);
            } else {
                bump(Counter::CloseAlreadyEnded);
            }
        }
    }
}
