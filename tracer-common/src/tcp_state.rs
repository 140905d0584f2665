//! Per-socket TCP state-transition records (`sock:inet_sock_set_state`).

/// How many transitions one record keeps; later ones are counted in `count` and in
/// [`crate::counters::Counter::TcpStateOverflow`].
pub const MAX_TRANSITIONS: usize = 16;

/// One `oldstate -> newstate` transition, with the kernel's `TCP_*` state numbers.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpTransition {
    pub old: u8,
    pub new: u8,
}

/// Everything seen for one socket: its latest addresses and ports (the source port is only known
/// after `SYN_SENT`, so the tuple is overwritten on every transition) and its transitions in order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpStateRecord {
    /// `AF_INET` (2) or `AF_INET6` (10).
    pub family: u16,
    /// Local port, host byte order.
    pub sport: u16,
    /// Remote port, host byte order.
    pub dport: u16,
    /// Transitions seen, including those beyond [`MAX_TRANSITIONS`].
    pub count: u16,
    /// Local address (4 bytes used for IPv4).
    pub saddr: [u8; 16],
    /// Remote address (4 bytes used for IPv4).
    pub daddr: [u8; 16],
    pub transitions: [TcpTransition; MAX_TRANSITIONS],
}
