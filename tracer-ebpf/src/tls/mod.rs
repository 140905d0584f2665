//! HTTP/1.x inside TLS: uprobes on the TLS libraries' read and write functions see the plaintext
//! before encryption and after decryption, and feed it to the same pairing rules as the packet
//! capture (`tracer_common::http::HttpFlow`, `message_start`, `end_path`), which writes the same
//! [`HttpTransaction`] records to the capture's ring (`packet::http::finish`). So HTTPS is a
//! second source of the HTTP stats, not a second implementation of them.
//!
//! Owner of `NT_TLS_CONNS` (each TLS object tied to its socket, with its pairing state and its
//! in-flight record) and `NT_TLS_ARGS` (a read call's buffer, from its entry to its return).
//! The uprobes are attached per library file by userspace (`tracer/src/sources/tls/`).
//! Minimum kernel: the capture's ring (5.8); uprobes through the perf PMU are 4.17,
//! `bpf_probe_read_user` 5.5.
//!
//! # Tying a TLS object to its connection
//! OpenSSL's `SSL_set_fd(ssl, fd)` and GnuTLS's `gnutls_transport_set_int2(session, r, w)` name
//! the descriptor: it is resolved to its `struct sock` (`conn::fd::sock_of_fd`), the key of its
//! connection entry, and the object is keyed by (process, object address).
//!
//! A TLS object whose descriptor the tracer did not see (set before the tracer started, or a
//! custom BIO as curl's OpenSSL backend uses with `SSL_set_bio`) is tied by its first read or
//! write call that reaches a socket: the call's entry stashes the object per thread
//! (`NT_TLS_ARGS`), the socket-call path of every backend (`conn::io::on_call`, through
//! [`note_socket`]) writes the first socket that thread sends or receives on into the stash,
//! and the call's return ties the object to it (`tls_tied_by_socket`). One rule for every
//! backend, since they all end in that path. A call served from the library's buffers (no
//! socket call) of an object not tied yet is counted (`tls_untied`) and not parsed.
//! `SSL_shutdown` / `gnutls_bye` end the tie.
//!
//! # Calls as units
//! Each call's buffer, read at its return (the bytes a write moved, the bytes a read filled), is
//! one unit for the pairing rules, as a segment is for the packet parser: a unit
//! starting with a request line starts a transaction, one starting with a status line in the
//! other direction finishes it. There are no retransmissions above TLS, so no sequence numbers.
//! The connection entry's protocol stack gets `TLS` (encryption) and `HTTP` (application) once
//! seen (`conn::protocol::set`).

pub mod exec;

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user},
    macros::{map, uprobe, uretprobe},
    maps::{Array, LruHashMap},
    programs::{ProbeContext, RetProbeContext},
};
use tracer_common::{
    classify::{PROTO_HTTP, PROTO_TLS, PROTO_UNKNOWN},
    counters::Counter,
    http::{
        HTTP_FLAG_PATH_TRUNCATED, HTTP_PATH_MAX, HTTP_PREFIX_LEN, HTTP_ROLE_CLIENT,
        HTTP_ROLE_SERVER, HttpFlow, HttpTransaction, MessageStart, PACKET_KIND_HTTP, Step,
        end_path, message_start,
    },
    packet::{PACKET_EGRESS, PACKET_INGRESS},
    tls::{TlsArgs, TlsKey},
};

use crate::{
    conn::{self, fd::sock_of_fd, layout::layout, sock},
    counters::bump,
    packet::{http::zero_path, http_finish, verifier_len},
};

/// A TLS object tied to its socket.
#[repr(C)]
pub struct TlsConn {
    /// Kernel address of the socket (`ConnKey::sk` of its connection entry).
    sk: u64,
    flow: HttpFlow,
    /// `STACK_*` bits: what was written into the connection entry's protocol stack.
    stack: u8,
    _pad: [u8; 3],
    /// The request in flight.
    tx: HttpTransaction,
}

const STACK_TLS: u8 = 1;
const STACK_HTTP: u8 = 2;

/// Tied TLS objects. LRU: an object freed without `SSL_shutdown` (no hook sees `SSL_free`) is
/// evicted by newer ones. Sized by userspace (`TlsConfig::max_objects`).
#[map(name = "NT_TLS_CONNS")]
static NT_TLS_CONNS: LruHashMap<TlsKey, TlsConn> = LruHashMap::with_max_entries(4096, 0);

/// A read or write call's arguments, from its entry to its return, per thread (and the socket
/// the thread used meanwhile, [`note_socket`]).
#[map(name = "NT_TLS_ARGS")]
static NT_TLS_ARGS: LruHashMap<u64, TlsArgs> = LruHashMap::with_max_entries(4096, 0);

/// Read or write calls in flight, over every thread, on objects that were not tied at their
/// entry (`TlsArgs::untied`). [`note_socket`] runs on every socket call of every process (every
/// backend's `conn::io::on_call`) and does nothing else while this is 0, the usual case: an
/// array read, which the verifier inlines, instead of a hash lookup. A call whose return never
/// comes (its thread killed inside it, its stash evicted) leaves the count above 0 for good:
/// the lookups then run on every socket call again, a cost, not a wrong result.
#[map(name = "NT_TLS_UNTIED_CALLS")]
static NT_TLS_UNTIED_CALLS: Array<u64> = Array::with_max_entries(1, 0);

/// Adds one (`up`) or takes one from [`NT_TLS_UNTIED_CALLS`] (CPUs race on it: an atomic add).
#[inline(always)]
fn count_untied_call(up: bool) {
    if let Some(count) = NT_TLS_UNTIED_CALLS.get_ptr_mut(0) {
        // SAFETY: a map value, valid for the program's run.
        conn::add(unsafe { &mut *count }, if up { 1 } else { u64::MAX });
    }
}

#[inline(always)]
fn key(object: u64) -> TlsKey {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    TlsKey {
        tgid,
        _pad: 0,
        object,
    }
}

/// Ties the TLS object `object` of the current process to the socket behind `fd`.
#[inline(always)]
fn tie(object: u64, fd: i64) {
    if object == 0 {
        return;
    }
    let Some(sk) = sock_of_fd(fd, &layout().file) else {
        bump(Counter::TlsTieFailed);
        return;
    };
    if tie_sock(object, sk) {
        bump(Counter::TlsTied);
    }
}

/// Ties `object` of the current process to socket `sk`, afresh (a re-used object address is a
/// new connection). A subprogram: its record is built on its own frame, not on top of the
/// parsing's ([`data`]).
#[inline(never)]
fn tie_sock(object: u64, sk: u64) -> bool {
    let key = key(object);
    // Built in place: the record is too large for the stack. A re-used object address (a new
    // connection) starts afresh.
    let fresh = TlsConn {
        sk,
        flow: HttpFlow {
            req_seq: 0,
            resp_seq: 0,
            flags: 0,
            req_dir: 0,
            outstanding: 0,
            _pad: 0,
        },
        stack: 0,
        _pad: [0; 3],
        tx: HttpTransaction::EMPTY,
    };
    // The value is copied by the helper from the stack: 272 bytes, within the 512 limit.
    if NT_TLS_CONNS.insert(key, &fresh, 0).is_err() {
        bump(Counter::TlsTieFailed);
        return false;
    }
    true
}

/// The socket-call path (`conn::io::on_call`, every backend): a thread inside a TLS read or
/// write call (its arguments stashed) sends or receives on `sk`; the first such socket is
/// kept for the call's return, which ties an untied object to it. Inlined into every socket
/// program: one lookup, no stack beyond its key.
#[inline(always)]
pub fn note_socket(sk: u64) {
    match NT_TLS_UNTIED_CALLS.get(0) {
        Some(&n) if n != 0 => {}
        _ => return,
    }
    let id = bpf_get_current_pid_tgid();
    if let Some(args) = NT_TLS_ARGS.get_ptr_mut(id) {
        // SAFETY: a map value, valid for the program's run.
        unsafe {
            if (*args).untied != 0 && (*args).sk == 0 {
                (*args).sk = sk;
            }
        }
    }
}

/// `len` plaintext bytes at user address `buf` of `object`, in `direction`. A subprogram, so
/// the three probes that call it share one copy.
#[inline(never)]
fn data(object: u64, buf: u64, len: i64, direction: u8) {
    if len <= 0 || buf == 0 {
        return;
    }
    let key = key(object);
    let Some(conn) = NT_TLS_CONNS.get_ptr_mut(key) else {
        bump(Counter::TlsUntied);
        return;
    };
    // SAFETY: a map value, valid for the program's run.
    let conn = unsafe { &mut *conn };
    let len = len as u64;
    let start = if len >= HTTP_PREFIX_LEN as u64 {
        // SAFETY: a user-memory read through the helper; a fault returns an error.
        match unsafe { bpf_probe_read_user(buf as *const [u8; HTTP_PREFIX_LEN]) } {
            Ok(prefix) => message_start(&prefix),
            Err(_) => {
                bump(Counter::TlsReadFailed);
                return;
            }
        }
    } else {
        MessageStart::Other
    };
    mark_stack(conn, matches!(start, MessageStart::Other));
    match conn.flow.on_start(direction, start, None, true) {
        Step::Nothing => {}
        Step::Retransmission => bump(Counter::HttpRetransmission),
        Step::Pipelined(n) => {
            for _ in 0..n {
                bump(Counter::HttpPipelined);
            }
        }
        Step::WithoutRequest => bump(Counter::HttpResponseWithoutRequest),
        Step::Begin {
            method,
            target,
            superseded,
        } => {
            if superseded {
                bump(Counter::HttpRequestUnanswered);
            }
            // Two subprograms in turn, each with its own frame (see `begin`).
            if begin(conn, direction, method) != 0 {
                path(&mut conn.tx, buf, len, target);
                conn.flow.begun();
            }
        }
        Step::Finish { status } => http_finish(&mut conn.tx, status),
    }
}

/// Writes TLS (and HTTP once a message start was seen) into the connection's protocol stack,
/// once each. A subprogram: the connection key's lookup has its own frame.
#[inline(never)]
fn mark_stack(conn: &mut TlsConn, other: bool) {
    let want = if other {
        STACK_TLS
    } else {
        STACK_TLS | STACK_HTTP
    };
    if conn.stack & want == want {
        return;
    }
    let application = if want & STACK_HTTP != 0 || conn.stack & STACK_HTTP != 0 {
        PROTO_HTTP
    } else {
        PROTO_UNKNOWN
    };
    if conn::protocol::set(conn.sk, [PROTO_UNKNOWN, application, PROTO_TLS]) {
        conn.stack |= want;
    }
}

/// Fills the in-flight record of a request (all but its path, which [`path`] copies); 0 if the
/// socket's tuple could not be read.
///
/// BPF subprograms of their own, called one after the other from [`data`]: the verifier sums
/// the frames of a call chain against 512 bytes (on every kernel), and the socket's tuple here
/// and the path's reads there would not fit in one frame with [`data`]'s.
#[inline(never)]
fn begin(conn: &mut TlsConn, direction: u8, method: u8) -> u32 {
    // The tuple as the connection's entry has it (read in place: a copy of the socket's, read
    // from the kernel, would not fit this frame).
    let Some(stats) = conn::tracked(conn.sk) else {
        bump(Counter::TlsNoConnection);
        return 0;
    };
    let tuple = &stats.tuple;
    let cookie = stats.cookie;
    let tx = &mut conn.tx;
    // SAFETY: a helper allowed everywhere.
    tx.request_ns = unsafe { bpf_ktime_get_ns() };
    tx.cookie = cookie;
    tx.cgroup_id = sock::current_cgroup_id();
    tx.response_ns = 0;
    tx.netns = tuple.netns;
    tx.status = 0;
    tx.saddr = tuple.saddr;
    tx.daddr = tuple.daddr;
    tx.sport = tuple.sport;
    tx.dport = tuple.dport;
    tx.family = tuple.family;
    tx.method = method;
    tx.role = if direction == PACKET_EGRESS {
        HTTP_ROLE_CLIENT
    } else {
        HTTP_ROLE_SERVER
    };
    tx.kind = PACKET_KIND_HTTP;
    tx._pad = [0; 4];
    tx.flags = 0;
    1
}

/// Copies the path of the request target at `buf + target` (the call's buffer is `len` bytes)
/// and ends it with the shared rule (`end_path`).
#[inline(never)]
fn path(tx: &mut HttpTransaction, buf: u64, len: u64, target: u32) {
    zero_path(tx);
    let available = len.saturating_sub(u64::from(target));
    let n = available.min(HTTP_PATH_MAX as u64) as u32;
    tx.path_len = 0;
    tx.path_captured = 0;
    if n == 0 {
        return;
    }
    let n = verifier_len::<{ HTTP_PATH_MAX as u32 }>(n);
    let src = buf + u64::from(target);
    // SAFETY: the destination is the record's path array, `n` <= its length; the source is
    // user memory read through the helper.
    let read = unsafe {
        aya_ebpf::helpers::generated::bpf_probe_read_user(
            tx.path.as_mut_ptr().cast(),
            n,
            src as *const core::ffi::c_void,
        )
    };
    if read != 0 {
        bump(Counter::TlsReadFailed);
        return;
    }
    let next = if available > u64::from(n) {
        // SAFETY: as above.
        unsafe { bpf_probe_read_user((src + u64::from(n)) as *const u8) }.ok()
    } else {
        None
    };
    let (end, cut) = end_path(&mut tx.path, n, next);
    if cut {
        tx.flags |= HTTP_FLAG_PATH_TRUNCATED;
        bump(Counter::HttpFragmentTruncated);
    }
    tx.path_len = end;
    tx.path_captured = end;
}

/// The object's connection ends: a request in flight goes unanswered; the tie is removed.
#[inline(always)]
fn end(object: u64) {
    let key = key(object);
    if let Some(conn) = NT_TLS_CONNS.get_ptr_mut(key) {
        // SAFETY: a map value, valid for the program's run.
        if unsafe { (*conn).flow.on_close(true, None) } {
            bump(Counter::HttpRequestUnanswered);
        }
        let _ = NT_TLS_CONNS.remove(key);
    }
}

#[inline(always)]
fn arg(ctx: &ProbeContext, n: usize) -> u64 {
    ctx.arg::<u64>(n).unwrap_or(0)
}

/// Stashes a call's object, buffer, direction and (for `_ex` calls) where it writes its length.
#[inline(always)]
fn stash(ctx: &ProbeContext, length_at: u64, direction: u8) {
    let object = arg(ctx, 0);
    // SAFETY: the value is only tested for presence.
    let untied = u8::from(unsafe { NT_TLS_CONNS.get(key(object)) }.is_none());
    let id = bpf_get_current_pid_tgid();
    // A stash this thread's previous call left (its return never came) is replaced, and its
    // part of the count of untied calls with it.
    // SAFETY: copied out at once.
    let replaced = unsafe { NT_TLS_ARGS.get(id) }.map_or(0, |a| a.untied);
    let args = TlsArgs {
        object,
        buf: arg(ctx, 1),
        length_at,
        sk: 0,
        direction,
        untied,
        _pad: [0; 6],
    };
    if NT_TLS_ARGS.insert(id, args, 0).is_err() {
        bump(Counter::TlsReadFailed);
        return;
    }
    if untied != replaced {
        count_untied_call(untied != 0);
    }
}

/// The stashed call of this thread, removed.
#[inline(always)]
fn unstash() -> Option<TlsArgs> {
    let id = bpf_get_current_pid_tgid();
    // SAFETY: the value is copied out before the removal.
    let args = unsafe { NT_TLS_ARGS.get(id) }.copied()?;
    if NT_TLS_ARGS.remove(id).is_ok() && args.untied != 0 {
        count_untied_call(false);
    }
    Some(args)
}

/// `SSL_set_fd(SSL *ssl, int fd)`.
#[uprobe]
pub fn nt_ssl_set_fd(ctx: ProbeContext) -> u32 {
    tie(arg(&ctx, 0), i64::from(arg(&ctx, 1) as i32));
    0
}

/// `gnutls_transport_set_int2(session, recv_fd, send_fd)` (`gnutls_transport_set_int` is a
/// macro over it).
#[uprobe]
pub fn nt_gnutls_set_int(ctx: ProbeContext) -> u32 {
    tie(arg(&ctx, 0), i64::from(arg(&ctx, 2) as i32));
    0
}

/// Entry of `SSL_write(ssl, buf, num)` and `gnutls_record_send(session, data, size)`. The
/// buffer is parsed at the return: by then an object that names no descriptor is tied by the
/// socket the call wrote to, and a call that failed (would block, retried later with the same
/// bytes) is not counted twice.
#[uprobe]
pub fn nt_tls_write(ctx: ProbeContext) -> u32 {
    stash(&ctx, 0, PACKET_EGRESS);
    0
}

/// Entry of `SSL_write_ex(ssl, buf, num, size_t *written)`.
#[uprobe]
pub fn nt_tls_write_ex(ctx: ProbeContext) -> u32 {
    let at = arg(&ctx, 3);
    // 0 marks a plain call: an `_ex` call without its out-parameter cannot report anything.
    if at != 0 {
        stash(&ctx, at, PACKET_EGRESS);
    }
    0
}

/// Entry of `SSL_read(ssl, buf, num)` and `gnutls_record_recv(session, data, size)`.
#[uprobe]
pub fn nt_tls_read(ctx: ProbeContext) -> u32 {
    stash(&ctx, 0, PACKET_INGRESS);
    0
}

/// Entry of `SSL_read_ex(ssl, buf, num, size_t *readbytes)`.
#[uprobe]
pub fn nt_tls_read_ex(ctx: ProbeContext) -> u32 {
    let at = arg(&ctx, 3);
    // As for `SSL_write_ex`.
    if at != 0 {
        stash(&ctx, at, PACKET_INGRESS);
    }
    0
}

/// Return of every read and write call: `SSL_read` / `SSL_write` (an int: the bytes moved, or
/// <= 0), `gnutls_record_recv` / `_send` (an ssize_t, likewise) and `SSL_read_ex` /
/// `SSL_write_ex` (1 on success, the count in `*length_at`).
#[uretprobe]
pub fn nt_tls_ret(ctx: RetProbeContext) -> u32 {
    let Some(args) = unstash() else {
        return 0;
    };
    let ret: i64 = ctx.ret::<i64>();
    let len = if args.length_at == 0 {
        ret
    } else if ret as i32 == 1 {
        // SAFETY: user memory read through the helper.
        match unsafe { bpf_probe_read_user(args.length_at as *const u64) } {
            Ok(n) => n.min(i32::MAX as u64) as i64,
            Err(_) => {
                bump(Counter::TlsReadFailed);
                return 0;
            }
        }
    } else {
        0
    };
    let len = if args.length_at == 0 && len > i64::from(i32::MAX) {
        // An int return in a 64-bit register: only the low half is the value.
        i64::from(len as i32)
    } else {
        len
    };
    // An object not tied yet whose call reached a socket: tied to it now.
    // SAFETY: the value is only tested for presence.
    if args.sk != 0
        && args.object != 0
        && unsafe { NT_TLS_CONNS.get(key(args.object)) }.is_none()
        && tie_sock(args.object, args.sk)
    {
        bump(Counter::TlsTiedBySocket);
    }
    data(args.object, args.buf, len, args.direction);
    0
}

/// `SSL_shutdown(ssl)` and `gnutls_bye(session, how)`.
#[uprobe]
pub fn nt_tls_shutdown(ctx: ProbeContext) -> u32 {
    end(arg(&ctx, 0));
    0
}
