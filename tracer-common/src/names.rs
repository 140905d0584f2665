//! Names of the programs, maps and globals in the eBPF object, used by both sides.

/// Tracepoint program on `sock:inet_sock_set_state` recording TCP state transitions.
pub const PROG_TCP_STATE: &str = "nt_tcp_state";
/// Map: socket address -> [`crate::tcp_state::TcpStateRecord`].
pub const MAP_TCP_STATES: &str = "NT_TCP_STATES";
/// Per-CPU array of kernel-side counters, indexed by [`crate::counters::Counter`].
pub const MAP_COUNTERS: &str = "NT_COUNTERS";
/// Global: field offsets of the `sock:inet_sock_set_state` tracepoint record.
pub const GLOBAL_INET_SOCK_SET_STATE: &str = "NT_INET_SOCK_SET_STATE";
/// Map: [`crate::conn::ConnKey`] -> [`crate::conn::ConnStats`], the open connections.
pub const MAP_CONNS: &str = "NT_CONNS";
/// Ring buffer of [`crate::conn::ClosedConn`] events.
pub const MAP_CLOSED: &str = "NT_CLOSED";
/// LRU set of connection keys that did not fit in `NT_CONNS` (so each is counted once).
pub const MAP_UNTRACKED: &str = "NT_UNTRACKED";
/// Global: [`crate::offsets::KernelLayout`].
pub const GLOBAL_LAYOUT: &str = "NT_LAYOUT";
/// Tracepoint backend: `sock:sock_send_length`.
pub const PROG_TP_SEND: &str = "nt_tp_send";
/// Tracepoint backend: `sock:sock_recv_length`.
pub const PROG_TP_RECV: &str = "nt_tp_recv";
/// Tracepoint backend: `sock:inet_sock_set_state`.
pub const PROG_TP_STATE: &str = "nt_tp_state";
/// Tracepoint backend: `tcp:tcp_retransmit_skb`.
pub const PROG_TP_RETRANSMIT: &str = "nt_tp_retrans";
/// All backends: `syscalls:sys_exit_accept4` (owner of accepted connections).
pub const PROG_ACCEPT4: &str = "nt_tp_accept4";
/// All backends: `syscalls:sys_exit_accept`.
pub const PROG_ACCEPT: &str = "nt_tp_accept";
// Tracepoint backend, UDP: the send/receive syscalls give the peers of unconnected sockets.
/// Tracepoint backend: `syscalls:sys_enter_sendto`.
pub const PROG_TP_SENDTO: &str = "nt_tp_sendto";
/// Tracepoint backend: `syscalls:sys_enter_sendmsg`.
pub const PROG_TP_SENDMSG: &str = "nt_tp_sendmsg";
/// Tracepoint backend: `syscalls:sys_enter_sendmmsg`.
pub const PROG_TP_SENDMMSG: &str = "nt_tp_sendmmsg";
/// Tracepoint backend: `syscalls:sys_enter_recvfrom`.
pub const PROG_TP_RECVFROM: &str = "nt_tp_recvfrom";
/// Tracepoint backend: `syscalls:sys_enter_recvmsg`.
pub const PROG_TP_RECVMSG: &str = "nt_tp_recvmsg";
/// Tracepoint backend: `syscalls:sys_enter_recvmmsg`.
pub const PROG_TP_RECVMMSG: &str = "nt_tp_recvmmsg";
/// Tracepoint backend: `syscalls:sys_exit_sendto`.
pub const PROG_TPX_SENDTO: &str = "nt_tpx_sendto";
/// Tracepoint backend: `syscalls:sys_exit_sendmsg`.
pub const PROG_TPX_SENDMSG: &str = "nt_tpx_sendmsg";
/// Tracepoint backend: `syscalls:sys_exit_sendmmsg`.
pub const PROG_TPX_SENDMMSG: &str = "nt_tpx_sendmmsg";
/// Tracepoint backend: `syscalls:sys_exit_recvfrom`.
pub const PROG_TPX_RECVFROM: &str = "nt_tpx_recvfrom";
/// Tracepoint backend: `syscalls:sys_exit_recvmsg`.
pub const PROG_TPX_RECVMSG: &str = "nt_tpx_recvmsg";
/// Tracepoint backend: `syscalls:sys_exit_recvmmsg`.
pub const PROG_TPX_RECVMMSG: &str = "nt_tpx_recvmmsg";
/// Tracepoint backend: cgroup `sock_release` on the cgroup v2 root, closing UDP sockets.
pub const PROG_UDP_RELEASE: &str = "nt_udp_release";
/// Tracepoint backend: hash map pid_tgid -> the UDP send/receive syscall in progress.
pub const MAP_UDP_CALLS: &str = "NT_UDP_CALLS";
/// Hash map {socket, slot} -> peer: the peer flows of each unconnected UDP socket, closed with it.
pub const MAP_UDP_PEERS: &str = "NT_UDP_PEERS";
