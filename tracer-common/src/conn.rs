//! The connection records kept by the eBPF programs and emitted when a connection closes.
//!
//! A connection is keyed by the kernel address of its socket plus, for unconnected UDP sockets
//! only, the peer: the socket's lifetime bounds the key (the entry is removed when the socket
//! closes), so a close by another process or by the kernel finds the entry, and the pid recorded
//! at connect/accept time survives events that fire in softirq context.

pub use crate::linux::{AF_INET, AF_INET6, IPPROTO_TCP, IPPROTO_UDP};

/// Direction is not known (the connection existed before the tracer started, or a UDP socket).
pub const DIRECTION_UNKNOWN: u8 = 0;
/// This host accepted the connection (TCP) or received first (UDP).
pub const DIRECTION_INCOMING: u8 = 1;
/// This host connected (TCP) or sent first (UDP).
pub const DIRECTION_OUTGOING: u8 = 2;

/// `flags`: the connection reached ESTABLISHED while traced.
pub const FLAG_ESTABLISHED: u8 = 1;
/// `flags`: the connection closed while traced.
pub const FLAG_CLOSED: u8 = 2;
/// The close was seen by the cgroup `sock_ops` state callback, which no recursion guard can
/// skip (tracer-ebpf/src/backend/sock_ops.rs), rather than by the `inet_sock_set_state`
/// tracepoint alone.
pub const FLAG_CLOSED_BY_SOCK_OPS: u8 = 4;

/// Map key: the socket, plus the peer for unconnected UDP sockets (all zero otherwise).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ConnKey {
    /// Kernel address of the `struct sock`.
    pub sk: u64,
    /// Peer address of an unconnected UDP flow (IPv4 in the first 4 bytes).
    pub peer_addr: [u8; 16],
    /// Peer port of an unconnected UDP flow, host byte order.
    pub peer_port: u16,
    /// Family of `peer_addr`, or 0.
    pub peer_family: u16,
    /// Unconnected UDP flows: the generation of their socket (`NT_UDP_SOCKS`), drawn at random
    /// when the socket's first peer flow is created, so that a new socket at a freed socket's
    /// address never adds to the old socket's flows, and userspace can tell flows whose socket
    /// is gone (their generation is no longer the socket's). 0 otherwise.
    pub socket_gen: u32,
}

/// Who talks to whom.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ConnTuple {
    /// Local address (IPv4 in the first 4 bytes; IPv4-mapped IPv6 folded to IPv4).
    pub saddr: [u8; 16],
    /// Remote address.
    pub daddr: [u8; 16],
    /// Local port, host byte order.
    pub sport: u16,
    /// Remote port, host byte order.
    pub dport: u16,
    /// [`AF_INET`] or [`AF_INET6`].
    pub family: u16,
    /// [`IPPROTO_TCP`] or [`IPPROTO_UDP`].
    pub protocol: u8,
    pub _pad: u8,
    /// Inode of the socket's network namespace.
    pub netns: u32,
    /// Thread-group id of the process that connected, accepted, or first used the socket.
    pub pid: u32,
}

/// Counters and metadata of one connection. Byte and UDP packet counters are added atomically
/// (several CPUs may send on one socket); TCP packet, retransmit and RTT fields are copies of the
/// kernel's own `tcp_sock` counters taken at the latest event.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnStats {
    pub tuple: ConnTuple,
    /// Random per-connection cookie drawn when the entry is created.
    pub cookie: u64,
    /// `bpf_ktime_get_ns` when the entry was created.
    pub created_ns: u64,
    /// `bpf_ktime_get_ns` of the latest update.
    pub updated_ns: u64,
    /// Payload bytes sent.
    pub sent_bytes: u64,
    /// Payload bytes received (MSG_PEEK excluded).
    pub recv_bytes: u64,
    /// TCP: `segs_out`; UDP: datagrams sent.
    pub sent_packets: u64,
    /// TCP: `segs_in`; UDP: datagrams received.
    pub recv_packets: u64,
    /// TCP: `total_retrans`.
    pub retransmits: u32,
    /// TCP: smoothed RTT in microseconds (`srtt_us >> 3`).
    pub rtt_us: u32,
    /// TCP: RTT variance in microseconds (`mdev_us >> 2`).
    pub rtt_var_us: u32,
    /// One of the `DIRECTION_*` values.
    pub direction: u8,
    /// `FLAG_*` bits.
    pub flags: u8,
    /// errno of a failed connection (ECONNREFUSED, ECONNRESET, ETIMEDOUT, EHOSTUNREACH,
    /// ENETUNREACH), else 0.
    pub failure: u16,
    /// The scheduler tick (`bpf_jiffies64`) of the send/receive fast path's last clock read: it
    /// stamps `updated_ns` with `bpf_ktime_get_ns` and refreshes the copied `tcp_sock` counters
    /// at most once per tick per connection (a clock read costs more than the rest of a call's
    /// accounting on a virtualised host). 0 until the first fast-path call.
    pub clock_jiffies: u64,
    /// The owner's cgroup v2 id (`bpf_get_current_cgroup_id`, the inode of its cgroup
    /// directory), taken in process context together with `tuple.pid`; 0 until the owner is
    /// known.
    pub cgroup_id: u64,
    /// The owner's command name (`bpf_get_current_comm`: the thread's `comm`, at most 15 bytes
    /// and a NUL), taken with `tuple.pid`; all zero until the owner is known. Kept by the
    /// kernel so a process that exited before userspace looked it up still has a name.
    pub comm: [u8; 16],
    /// TCP: the application protocol stack the packet capture classified from the connection's
    /// first payloads (`tracer-ebpf/src/packet/http.rs`), written into the entry by
    /// `conn::protocol::set`: [`PROTOCOL_API`], [`PROTOCOL_APPLICATION`] and
    /// [`PROTOCOL_ENCRYPTION`] hold the codes of `crate::classify` (0: unknown). All zero until
    /// classified, and for UDP.
    pub protocol_stack: [u8; 3],
    /// Keeps the struct a multiple of 8 bytes (its 8-byte fields stay aligned in arrays).
    pub _pad_stack: [u8; 5],
    /// A connection that existed before the tracer started ([`FLAG_PREEXISTING`]): what the
    /// kernel had counted on it by then. The counters above count from the start only.
    pub before_start: BeforeStart,
}

/// The kernel's own lifetime totals of a connection that existed before the tracer started,
/// read once when the start-up walk (`iter/tcp`, tracer-ebpf/src/iter/seed.rs) found it. TCP
/// only: a UDP socket keeps no per-socket totals, so these stay zero for UDP.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BeforeStart {
    /// `tcp_sock.bytes_sent - bytes_retrans`: payload bytes sent (once each, retransmits not
    /// counted again).
    pub sent_bytes: u64,
    /// `tcp_sock.bytes_received` less the peer's FIN (counted as a byte there): payload bytes
    /// received in sequence.
    pub recv_bytes: u64,
    /// `tcp_sock.segs_out`.
    pub sent_packets: u32,
    /// `tcp_sock.segs_in`.
    pub recv_packets: u32,
    /// `tcp_sock.total_retrans`.
    pub retransmits: u32,
    pub _pad: u32,
}

/// Index of the API layer (`classify::PROTO_GRPC`) in [`ConnStats::protocol_stack`].
pub const PROTOCOL_API: usize = 0;
/// Index of the application layer (`classify::PROTO_HTTP` ..= `PROTO_MYSQL`).
pub const PROTOCOL_APPLICATION: usize = 1;
/// Index of the encryption layer (`classify::PROTO_TLS`).
pub const PROTOCOL_ENCRYPTION: usize = 2;

/// `flags`: the TCP connection reached CLOSE while its application still had received bytes
/// to read (a client that shut down its sending side first, then got the reply and the peer's
/// FIN): its end is emitted once those bytes are read (or at EOF, or when the application
/// releases the socket), so they are counted.
pub const FLAG_CLOSE_PENDING: u8 = 32;

/// `flags`: the connection existed before the tracer started; the start-up walk of every
/// socket found it, and [`ConnStats::before_start`] holds what the kernel had counted by then.
pub const FLAG_PREEXISTING: u8 = 64;

/// `flags`, set by userspace only: the flow idled out (Datadog's expiry rules) and was ended by
/// the tracer, not by the kernel.
pub const FLAG_EXPIRED: u8 = 8;
/// `flags`, set by userspace only: the flow's socket is gone but the kernel did not end the flow
/// (an unconnected UDP flow past its socket's peer list), so the tracer ended it at read time.
pub const FLAG_CLOSED_BY_SWEEP: u8 = 16;

/// What the ring buffer carries for each closed connection: its key and final counters.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClosedConn {
    pub key: ConnKey,
    pub stats: ConnStats,
}

/// How many peer flows of one unconnected UDP socket are listed for closing with the socket by
/// the kernel; flows beyond it are counted in `udp_peers_overflow` and closed by userspace at
/// its next read, which finds their socket generation gone from `NT_UDP_SOCKS`.
pub const MAX_UDP_PEERS: u32 = 16;

/// Key of `NT_UDP_PEERS`: one of the peer-list slots of an unconnected UDP socket.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UdpPeerSlotKey {
    pub sk: u64,
    /// `0..MAX_UDP_PEERS`.
    pub slot: u32,
    pub _pad: u32,
}

/// Value of `NT_UDP_PEERS`: the peer part of a flow's [`ConnKey`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UdpPeerSlot {
    pub addr: [u8; 16],
    pub port: u16,
    pub family: u16,
}
