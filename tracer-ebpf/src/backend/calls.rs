//! What the fentry and kprobe backends do with one socket call once they have its arguments and
//! return value: both hook the same kernel functions, so they share this, and only differ in how
//! they get the arguments (fexit context vs. a kprobe -> kretprobe stash).
//!
//! Which calls are counted, so that every byte is counted exactly once:
//! - TCP sends: `tcp_sendmsg` and, before 6.5, `tcp_sendpage` (sendfile/splice). They never nest:
//!   `tcp_sendpage` falls back to `tcp_sendmsg_locked`, not `tcp_sendmsg`.
//! - TCP receives: `tcp_recvmsg` (MSG_PEEK skipped: those bytes are read again) and
//!   `tcp_splice_read` (splice from a socket). Not `tcp_read_sock`, which `tcp_splice_read` uses:
//!   Debian's 5.10 and 6.1 builds inline it there, so its probes never see splices (measured),
//!   and hooking both would count splices twice where it is not inlined.
//! - UDP sends: `udp_sendmsg`, `udpv6_sendmsg` and, before 6.5, `udp_sendpage`. `udpv6_sendmsg`
//!   hands IPv4-mapped destinations to `udp_sendmsg`, so `udp_sendmsg` skips IPv6 sockets (their
//!   bytes are counted by `udpv6_sendmsg`). `udp_sendpage` calls `udp_sendmsg` to set up the cork
//!   and falls back to it when the route cannot take pages (measured on 6.1 loopback: the bytes
//!   went through both), so `udp_sendmsg` skips the socket a `udp_sendpage` of the same thread is
//!   in the middle of ([`Func::UdpSendpage`] in `NT_PROBE_ARGS`).
//! - UDP receives: `udp_recvmsg`, `udpv6_recvmsg` (independent), MSG_PEEK skipped.
//!
//! Like the tracepoint backend, only sockets whose `sk_protocol` is UDP are counted by the UDP
//! hooks (UDP-Lite shares them).

use aya_ebpf::{
    bindings::BPF_NOEXIST, helpers::bpf_get_current_pid_tgid, macros::map, maps::LruHashMap,
};
use tracer_common::{
    conn::{AF_INET6, IPPROTO_UDP},
    counters::Counter,
};

use crate::{
    conn::{
        self, io,
        layout::{layout, read_kernel},
        peer,
    },
    counters::bump,
};

/// A hooked kernel function whose calls are followed from entry to return (functions nest:
/// `udpv6_sendmsg` and `udp_sendpage` call `udp_sendmsg` on the same thread).
#[repr(u32)]
#[derive(Clone, Copy)]
pub enum Func {
    TcpSendmsg = 1,
    TcpSendpage = 2,
    TcpRecvmsg = 3,
    TcpSpliceRead = 4,
    UdpSendmsg = 5,
    Udpv6Sendmsg = 6,
    UdpSendpage = 7,
    UdpRecvmsg = 8,
    Udpv6Recvmsg = 9,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CallKey {
    pid_tgid: u64,
    func: u32,
    _pad: u32,
}

/// The arguments of an in-flight call.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct CallArgs {
    /// The socket, or 0 when the call is not to be counted (a peek).
    pub sk: u64,
    /// The `struct msghdr *` (UDP), or 0.
    pub msg: u64,
}

/// In-flight calls: (thread, function) -> arguments, written at entry and taken at return. The
/// kprobe backend keeps every call's arguments here (a kretprobe sees only the return value);
/// the fentry backend only marks `udp_sendpage` calls. An LRU map: the entries of calls whose
/// return was never seen (the kernel's kretprobe instances ran out) age out instead of filling
/// it, and a thread's next call of the same function overwrites its stale entry.
#[map(name = "NT_PROBE_ARGS")]
static NT_PROBE_ARGS: LruHashMap<CallKey, CallArgs> = LruHashMap::with_max_entries(4096, 0);

#[inline(always)]
fn call_key(func: Func) -> CallKey {
    CallKey {
        pid_tgid: bpf_get_current_pid_tgid(),
        func: func as u32,
        _pad: 0,
    }
}

/// The current thread entered `func` with these arguments.
#[inline(always)]
pub fn enter(func: Func, sk: u64, msg: u64) {
    let key = call_key(func);
    let args = CallArgs { sk, msg };
    match NT_PROBE_ARGS.insert(key, args, u64::from(BPF_NOEXIST)) {
        Ok(()) => {}
        Err(EEXIST) => {
            // Returns always remove their entry: this thread's previous call of `func` returned
            // without its kretprobe (none of these functions recurse).
            bump(Counter::ProbeReturnMissed);
            if NT_PROBE_ARGS.insert(key, args, 0).is_err() {
                bump(Counter::ProbeArgsFull);
            }
        }
        Err(_) => bump(Counter::ProbeArgsFull),
    }
}

/// `-EEXIST`, as the map helpers return it.
const EEXIST: i32 = -17;

/// The current thread returns from `func`: its arguments, removed from the map. `None` when the
/// entry was not seen (counted as `probe_args_missing` when `count_missing`).
#[inline(always)]
pub fn leave(func: Func, count_missing: bool) -> Option<CallArgs> {
    let key = call_key(func);
    // SAFETY: the value is copied out before the entry is removed.
    let args = unsafe { NT_PROBE_ARGS.get(key) }.copied();
    if args.is_some() {
        let _ = NT_PROBE_ARGS.remove(key);
    } else if count_missing {
        bump(Counter::ProbeArgsMissing);
    }
    args
}

/// Whether the current thread is inside `func` on socket `sk`.
#[inline(always)]
fn inside(func: Func, sk: u64) -> bool {
    // SAFETY: read-only look at a plain value.
    unsafe { NT_PROBE_ARGS.get(call_key(func)) }.is_some_and(|args| args.sk == sk)
}

/// A return value as the `int` the hooked functions return: the upper half of the register is
/// not defined by the ABI, so it is dropped before the sign is looked at.
#[inline(always)]
pub fn int_ret(raw: u64) -> i32 {
    raw as u32 as i32
}

/// Whether a receive call with these `flags` (the hooked function's `int flags`, in a 64-bit
/// argument slot) moves no payload to count (`conn::io::skipped_receive`).
#[inline(always)]
pub fn skipped_receive(flags: u64) -> bool {
    io::skipped_receive(flags as u32)
}

/// `tcp_sendmsg`/`tcp_sendpage` on `sk` returned `ret`.
#[inline(always)]
pub fn tcp_sent(sk: u64, ret: i32) {
    tcp_io(sk, ret, true);
}

/// `tcp_recvmsg` (not peeking) or `tcp_splice_read` on `sk` returned `ret`.
#[inline(always)]
pub fn tcp_received(sk: u64, ret: i32) {
    tcp_io(sk, ret, false);
}

#[inline(always)]
fn tcp_io(sk: u64, ret: i32, sending: bool) {
    // A TCP socket never needs a peer.
    io::on_call(sk, ret, sending, io::NoPeer);
}

/// Which UDP function returned.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum UdpCall {
    /// `udp_sendmsg`: IPv6 sockets are skipped (counted by `udpv6_sendmsg`, which calls it), and
    /// so are calls made by `udp_sendpage` (counted by it).
    SendV4,
    /// `udpv6_sendmsg`.
    SendV6,
    /// `udp_sendpage`: no `msghdr`.
    SendPage,
    /// `udp_recvmsg` / `udpv6_recvmsg`.
    Recv,
}

/// A UDP send or receive on `sk` with message `msg` (0 for `udp_sendpage`) returned `ret`. The
/// peer of an unconnected socket is `msg->msg_name`: the destination a send was given, or the
/// source a receive filled in (kernel memory: the syscalls copy it in and out).
#[inline(always)]
pub fn udp_call(call: UdpCall, sk: u64, msg: u64, ret: i32) {
    if ret < 0 {
        return;
    }
    let layout = layout();
    let offsets = &layout.sock;
    if call == UdpCall::SendV4 {
        if inside(Func::UdpSendpage, sk) {
            // Counted by the `udp_sendpage` this call is part of.
            return;
        }
        match read_kernel::<u16>(sk, offsets.skc_family) {
            Ok(AF_INET6) => return,
            Ok(_) => {}
            Err(_) => {
                bump(Counter::KernelReadFailed);
                return;
            }
        }
    }
    let sending = call != UdpCall::Recv;
    // The peer of an unconnected socket is `msg->msg_name`, read only when needed.
    let peer = MsgPeer {
        msg,
        msg_name_offset: layout.msghdr_msg_name,
    };
    io::on_call(sk, ret, sending, peer);
}

/// The peer in a call's kernel `msghdr`.
struct MsgPeer {
    msg: u64,
    msg_name_offset: u16,
}

impl io::PeerSource for MsgPeer {
    #[inline(always)]
    fn peer(self) -> Option<peer::Peer> {
        msg_peer(self.msg, self.msg_name_offset)
    }
}

/// The address in `msg->msg_name` (kernel memory), if there is one.
#[inline(always)]
fn msg_peer(msg: u64, msg_name_offset: u16) -> Option<peer::Peer> {
    if msg == 0 {
        return None;
    }
    let name = read_kernel::<u64>(msg, msg_name_offset).ok()?;
    peer::read_sockaddr(name)
}

/// A UDP socket is being destroyed (its last descriptor closed): close its flows.
#[inline(always)]
pub fn udp_destroyed(sk: u64) {
    let layout = layout();
    conn::close_socket(sk, IPPROTO_UDP, &layout.sock);
}

/// `sock->sk` of a `struct socket *` (hooks that get the socket, like `tcp_splice_read`).
#[inline(always)]
pub fn sk_of_socket(socket: u64) -> Option<u64> {
    match read_kernel::<u64>(socket, layout().file.socket_sk) {
        Ok(sk) if sk != 0 => Some(sk),
        _ => {
            bump(Counter::KernelReadFailed);
            None
        }
    }
}

/// A `ssize_t` return value as the `int` the other hooks return (a splice moves at most a
/// pipe's worth, far below 2 GiB; errors keep their sign).
#[inline(always)]
pub fn ssize_ret(raw: u64) -> i32 {
    let ret = raw as i64;
    ret.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32
}
