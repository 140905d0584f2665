//! Names of the programs, maps and globals in the eBPF object, used by both sides.

/// Tracepoint program on `sock:inet_sock_set_state` recording TCP state transitions.
pub const PROG_TCP_STATE: &str = "nt_tcp_state";
/// Map: socket address -> [`crate::tcp_state::TcpStateRecord`].
pub const MAP_TCP_STATES: &str = "NT_TCP_STATES";
/// Per-CPU array of kernel-side counters, indexed by [`crate::counters::Counter`].
pub const MAP_COUNTERS: &str = "NT_COUNTERS";
/// Global: field offsets of the `sock:inet_sock_set_state` tracepoint record.
pub const GLOBAL_INET_SOCK_SET_STATE: &str = "NT_INET_SOCK_SET_STATE";
