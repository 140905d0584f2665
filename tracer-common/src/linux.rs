//! Linux ABI constants the programs and the library use, defined once (include/linux/socket.h,
//! include/uapi/linux/in.h, include/net/tcp_states.h).

/// `AF_INET`.
pub const AF_INET: u16 = 2;
/// `AF_INET6`.
pub const AF_INET6: u16 = 10;
/// `IPPROTO_TCP`.
pub const IPPROTO_TCP: u8 = 6;
/// `IPPROTO_UDP`.
pub const IPPROTO_UDP: u8 = 17;

/// `MSG_PEEK`: a receive that leaves the bytes in the queue (they are read again later).
pub const MSG_PEEK: u32 = 0x2;
/// `MSG_ERRQUEUE`: a receive from the socket's error queue (ICMP errors, timestamps, zerocopy
/// notifications), no payload from the peer.
pub const MSG_ERRQUEUE: u32 = 0x2000;

/// TCP states (`enum { TCP_ESTABLISHED = 1, ... }`), as `int` like the tracepoints and
/// `sock_ops` report them; `sock.__sk_common.skc_state` holds them in a byte.
pub const TCP_ESTABLISHED: i32 = 1;
pub const TCP_SYN_SENT: i32 = 2;
pub const TCP_SYN_RECV: i32 = 3;
pub const TCP_FIN_WAIT1: i32 = 4;
pub const TCP_FIN_WAIT2: i32 = 5;
pub const TCP_TIME_WAIT: i32 = 6;
pub const TCP_CLOSE: i32 = 7;
pub const TCP_CLOSE_WAIT: i32 = 8;
pub const TCP_LAST_ACK: i32 = 9;
pub const TCP_LISTEN: i32 = 10;
pub const TCP_CLOSING: i32 = 11;
pub const TCP_NEW_SYN_RECV: i32 = 12;
