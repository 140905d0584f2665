//! The protocol classification of every TCP socket, and the HTTP/1.x parser: TCP segments from
//! the capture's triage (`mod.rs`: a segment with payload, FIN or RST, on no DNS port) give each
//! socket its protocol stack, written into its connection entry, and, on HTTP/1.x sockets,
//! become [`HttpTransaction`] records in `NT_PACKETS`, one per request/response exchange per
//! observing socket.
//!
//! Owner of the socket storages `NT_HTTP_SOCKS` and `NT_HTTP_INFLIGHT` (freed by the kernel with
//! their socket: nothing to clean up, nothing keyed by a tuple that could be reused; 5.2+) and
//! of the per-CPU classifier buffer `NT_CLASSIFY_BUF`. Minimum kernel: the capture's, 5.8.
//!
//! # Per socket: classification, then one request in flight
//! `NT_HTTP_SOCKS` holds a 16-byte [`HttpSock`] for each TCP socket that sent or received
//! payload. Its `class` is decided from the first payload segments, in either direction, by
//! `tracer_common::classify` (every rule matches a message only one role sends, so either
//! direction will do) on the payload's first [`CLASSIFY_BYTES`], loaded into `NT_CLASSIFY_BUF`
//! (a map value: kernels before 5.12 refuse the classifier's variable-offset reads on the
//! stack). HTTP/1.x makes the socket HTTP (the parser below); HTTP/2 makes it look at its next
//! [`MAX_H2_TRIES`] segments for a response HEADERS frame (`classify_http2_headers`: gRPC when
//! its content-type says so); any other protocol is kept; [`MAX_TRIES`] segments that match
//! nothing make the socket unknown and not HTTP for good. The stack (api, application,
//! encryption) is kept in the socket storage and written into the connection entry by
//! `conn::protocol::set` (`conn` owns that map): when the entry does not exist yet (an accepted
//! socket whose entry the backends' hooks create later), the write is retried on the socket's
//! next segments, at most [`MAX_WRITE_TRIES`] of them. Then the socket is done
//! ([`CLASS_NOT_HTTP`]): a segment of such a socket costs `bpf_sk_fullsock` +
//! `bpf_sk_storage_get` + one compare, and no read of its payload: that is the price of bulk
//! traffic that is not HTTP (the capture benchmark's `tcp_bulk_64k` row). A connection that was
//! in the middle of a message when the tracer started, and stays in the middle of messages for
//! [`MAX_TRIES`] segments, is missed (unknown).
//!
//! For an HTTP socket, each segment's first [`HTTP_PREFIX_LEN`] payload bytes are read
//! ([`message_start`], `tracer-common`, unit-tested there):
//! - a request start (direction = the request's: egress on the client's socket, ingress on the
//!   server's) fills `NT_HTTP_INFLIGHT`, the record to be: method, path (the request target up
//!   to a space, `?`, `#` or the line's end, at most [`HTTP_PATH_MAX`] bytes, flagged
//!   truncated when cut), start time, the observing socket's tuple and role;
//! - a status line in the other direction finishes it: status and time, then the record is
//!   copied to the ring straight from the socket storage. `1xx` interim responses (`100
//!   Continue`) are skipped, `101` finishes it;
//! - anything else in the response's direction marks the request as answered (response bytes
//!   seen without a status line at a segment's start).
//!
//! # Retransmissions, keep-alive, pipelining
//! The sequence number of the last request start and of the last response start are kept; a
//! segment that starts a message at the same sequence number is a retransmission and ignored
//! (`http_retransmission`). Keep-alive works by construction: the next request starts a new
//! transaction once the previous one was answered.
//!
//! Pipelining (a request sent before the previous one was answered: a second request start
//! while one is in flight and no response byte came) cannot be paired from segment starts
//! alone: several responses may share a segment, so a response can be missed and every later
//! pairing would be off by one. Datadog keeps one request in flight and pairs whatever comes;
//! here the connection enters a pipelined mode that drops every request, each counted once in
//! `http_pipelined`, until as many final responses as requests have been seen; then the next
//! request starts afresh. A response missed in that mode keeps the connection there (its
//! transactions keep being counted, never recorded wrongly).
//!
//! Other drops, each counted: a response with no request in flight
//! (`http_response_without_request`), a request superseded by the next after response bytes
//! without a status line, or ended by the server's FIN or an RST (`http_request_unanswered`),
//! the ring full (`http_batch_full`), no memory for the storage (`http_storage_failed`).
//!
//! Not synchronised: a socket's ingress and egress can run at once on two CPUs. A request
//! cannot be answered before its segment left, so the two programs of one exchange do not
//! overlap; pipelined traffic may, and is dropped anyway.

use aya_ebpf::{
    bindings::{__sk_buff, BPF_SK_STORAGE_GET_F_CREATE, bpf_sock},
    btf_maps::SkStorage,
    helpers::{
        bpf_get_socket_cookie, bpf_ktime_get_ns, bpf_sk_fullsock, bpf_sk_storage_get,
        bpf_skb_cgroup_id, bpf_skb_load_bytes,
    },
    macros::{btf_map, map},
    maps::PerCpuArray,
};
use tracer_common::{
    classify::{
        CLASSIFY_BYTES, Classification, ClassifyBuf, PROTO_HTTP, PROTO_HTTP2, PROTO_UNKNOWN,
        classify, classify_http2_headers,
    },
    counters::Counter,
    http::{
        HTTP_FLAG_PATH_TRUNCATED, HTTP_PATH_MAX, HTTP_PREFIX_LEN, HTTP_ROLE_CLIENT,
        HTTP_ROLE_SERVER, HTTP_TRANSACTION_LEN, HttpFlow, HttpTransaction, MessageStart as Start,
        PACKET_KIND_HTTP, Step, end_path, message_start,
    },
    packet::PACKET_EGRESS,
};

use super::{Segment, TCP_FIN, TCP_RST, ip_header, load, ring_output, verifier_len};
use crate::{conn, counters::bump};

/// A TCP socket's HTTP state (`NT_HTTP_SOCKS`).
#[repr(C)]
pub struct HttpSock {
    /// The request/response pairing (`tracer_common::http::HttpFlow`: the rules the TLS
    /// source shares).
    flow: HttpFlow,
    /// [`CLASS_UNKNOWN`], [`CLASS_HTTP`], [`CLASS_NOT_HTTP`], [`CLASS_HTTP2`] or
    /// [`CLASS_CLASSIFIED`].
    class: u8,
    /// While [`CLASS_UNKNOWN`]: payload segments seen. Once classified: segments seen since
    /// (while a stack write is pending or HTTP/2 is searched for gRPC), which bounds both.
    tries: u8,
    /// `SOCK_*` bits.
    flags: u8,
    /// The protocol stack classified (api, application, encryption: `classify` codes), kept
    /// here until [`conn::protocol::set`] wrote it into the connection entry.
    stack: [u8; 3],
}

/// Not classified yet: each payload segment goes through `classify`.
const CLASS_UNKNOWN: u8 = 0;
/// HTTP/1.x: the parser runs on every segment.
const CLASS_HTTP: u8 = 1;
/// Nothing left to do for this socket (not HTTP/1.x, its stack written or given up): the bulk
/// fast path, one storage lookup and this compare.
const CLASS_NOT_HTTP: u8 = 2;
/// HTTP/2: its later payloads go through `classify_http2_headers` (gRPC), for at most
/// [`MAX_H2_TRIES`] segments.
const CLASS_HTTP2: u8 = 3;
/// Classified, not HTTP/1.x, its stack not yet written into the connection entry: each segment
/// retries the write, for at most [`MAX_WRITE_TRIES`] segments.
const CLASS_CLASSIFIED: u8 = 4;

/// The kernel's `TCP_LISTEN` as `bpf_sock::state` has it (the kernel's TCP state numbers).
const TCP_LISTEN: u32 = tracer_common::linux::TCP_LISTEN as u32;

/// `stack` changed and is not yet in the connection entry.
const SOCK_STACK_PENDING: u8 = 1;

/// Payload segments that `classify` does not recognise before a socket is given up (unknown,
/// and not HTTP).
const MAX_TRIES: u8 = 4;
/// Segments after an HTTP/2 classification in which a response HEADERS frame is looked for
/// (gRPC): grpcio's server sends its response HEADERS in its third payload, the client's
/// request goes in between.
const MAX_H2_TRIES: u8 = 8;
/// Segments after a classification in which the connection entry may appear (an accepted
/// socket's entry is created by the backends' hooks, which may run after its first segment);
/// past them the stack is given up (`protocol_stack_unwritten`), so a socket whose entry never
/// comes (a full table, a socket outside the tracer) pays one lookup per segment only this long.
const MAX_WRITE_TRIES: u8 = 32;

#[btf_map(name = "NT_HTTP_SOCKS")]
static NT_HTTP_SOCKS: SkStorage<HttpSock> = SkStorage::new();

#[btf_map(name = "NT_HTTP_INFLIGHT")]
static NT_HTTP_INFLIGHT: SkStorage<HttpTransaction> = SkStorage::new();

/// The payload bytes handed to the classifier, one per CPU: `classify` reads at offsets that
/// depend on earlier bytes, which kernels before 5.12 refuse on the stack (see
/// `tracer_common::classify`); a map value is fine everywhere.
#[map(name = "NT_CLASSIFY_BUF")]
static NT_CLASSIFY_BUF: PerCpuArray<ClassifyBuf> = PerCpuArray::with_max_entries(1, 0);

/// The storage of `sk` in `map`, created zeroed with `create`; null if absent or if it could
/// not be created.
#[inline(always)]
fn storage<T>(map: &SkStorage<T>, sk: *mut bpf_sock, create: bool) -> *mut T {
    let flags = if create {
        u64::from(BPF_SK_STORAGE_GET_F_CREATE)
    } else {
        0
    };
    // SAFETY: `sk` is a full socket (from `bpf_sk_fullsock`); the map is a socket storage.
    unsafe {
        bpf_sk_storage_get(
            core::ptr::from_ref(map).cast_mut().cast(),
            sk.cast(),
            core::ptr::null_mut(),
            flags,
        )
    }
    .cast()
}

/// Entry from the capture: one TCP segment with payload, FIN or RST of the packet `skb`.
#[inline(always)]
pub(super) fn segment(skb: *mut __sk_buff, protocol: u32, direction: u8, seg: &Segment) {
    // SAFETY: a context field read (the verifier rewrites it into the skb's socket, or null).
    let sk = unsafe { (*skb).__bindgen_anon_2.sk };
    if sk.is_null() {
        return;
    }
    // SAFETY: `sk` is the skb's socket, checked non-null; the helper returns null unless it is
    // a full socket (not a request or time-wait socket).
    let sk = unsafe { bpf_sk_fullsock(sk) };
    if sk.is_null() {
        return;
    }
    let state = storage(&NT_HTTP_SOCKS, sk, false);
    // The cheap end for bulk traffic that is not HTTP: one lookup and this compare.
    // SAFETY: a non-null storage pointer is this socket's value.
    if !state.is_null() && unsafe { (*state).class } == CLASS_NOT_HTTP {
        return;
    }
    parse(skb, protocol, direction, seg, sk, state);
}

#[inline(always)]
fn parse(
    skb: *mut __sk_buff,
    protocol: u32,
    direction: u8,
    seg: &Segment,
    sk: *mut bpf_sock,
    state: *mut HttpSock,
) {
    let state = if state.is_null() {
        if seg.payload_len == 0 {
            // A FIN or RST of a socket never seen with payload: nothing to finish.
            return;
        }
        // SAFETY: a context field of the full socket `sk`.
        if unsafe { (*sk).state } == TCP_LISTEN {
            // Data that came with the handshake's last ACK reaches the listener, before the
            // accepted socket exists: not a connection's segment (the client's socket still
            // records the exchange).
            return;
        }
        let created = storage(&NT_HTTP_SOCKS, sk, true);
        if created.is_null() {
            bump(Counter::HttpStorageFailed);
            return;
        }
        created
    } else {
        state
    };
    // SAFETY: this socket's storage value; see the module docs on concurrent runs.
    let st = unsafe { &mut *state };
    let mut fresh = false;
    if st.class == CLASS_UNKNOWN {
        if seg.payload_len == 0 {
            return;
        }
        let found = classify_segment(skb, seg);
        if found.is_unknown() {
            st.tries = st.tries.saturating_add(1);
            if st.tries >= MAX_TRIES {
                st.class = CLASS_NOT_HTTP;
            }
            return;
        }
        bump(Counter::ProtocolClassified);
        st.stack = [found.api, found.application, found.encryption];
        st.flags |= SOCK_STACK_PENDING;
        st.tries = 0;
        st.class = match found.application {
            PROTO_HTTP => CLASS_HTTP,
            PROTO_HTTP2 => CLASS_HTTP2,
            _ => CLASS_CLASSIFIED,
        };
        fresh = true;
    }
    if st.flags & SOCK_STACK_PENDING != 0 || st.class == CLASS_HTTP2 {
        st.tries = st.tries.saturating_add(1);
    }
    if st.class == CLASS_HTTP2 && !fresh && seg.payload_len > 0 {
        grpc(skb, seg, st);
    }
    write_stack(sk, st);
    if st.class != CLASS_HTTP {
        if st.class == CLASS_CLASSIFIED && st.flags & SOCK_STACK_PENDING == 0 {
            st.class = CLASS_NOT_HTTP;
        }
        return;
    }
    let start = if seg.payload_len >= HTTP_PREFIX_LEN as u32 {
        prefix(skb, seg.payload).map_or(Start::Other, |p| message_start(&p))
    } else {
        Start::Other
    };
    // The sequence number is read only for message starts (retransmissions are told by it); a
    // start whose number cannot be read is skipped.
    let step = match start {
        Start::Other => st
            .flow
            .on_start(direction, start, None, seg.payload_len > 0),
        _ => match seq_of(skb, seg) {
            Some(seq) => st.flow.on_start(direction, start, Some(seq), true),
            None => Step::Nothing,
        },
    };
    match step {
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
            request(skb, protocol, direction, seg, sk, st, method, target);
        }
        Step::Finish { status } => response(sk, status),
    }
    // The connection ends: the responder's FIN, or an RST either way (the client's FIN may
    // be a half-close after its request, still answered).
    let fin = (seg.flags & TCP_FIN != 0).then_some(direction);
    if st.flow.on_close(seg.flags & TCP_RST != 0, fin) {
        bump(Counter::HttpRequestUnanswered);
    }
}

/// The classification of the segment's first payload bytes (unknown if they cannot be read).
#[inline(always)]
fn classify_segment(skb: *mut __sk_buff, seg: &Segment) -> Classification {
    unpack(classify_at(skb, seg.payload, seg.payload_len, 0))
}

/// An HTTP/2 socket's later payload: a response HEADERS frame at its start ends the search,
/// adding gRPC to the stack when its content-type says so; [`MAX_H2_TRIES`] segments without
/// one end it too.
#[inline(always)]
fn grpc(skb: *mut __sk_buff, seg: &Segment, st: &mut HttpSock) {
    let found = unpack(classify_at(skb, seg.payload, seg.payload_len, 1));
    if found.application == PROTO_HTTP2 {
        if found.api != PROTO_UNKNOWN {
            st.stack[0] = found.api;
            st.flags |= SOCK_STACK_PENDING;
            bump(Counter::ProtocolClassified);
        }
        st.class = CLASS_CLASSIFIED;
    } else if st.tries >= MAX_H2_TRIES {
        st.class = CLASS_CLASSIFIED;
    }
}

/// Loads the payload at `payload` (`len` bytes long) into this CPU's classifier buffer and
/// classifies it: with `classify` (`headers` 0) or `classify_http2_headers` (1). Returns the
/// [`Classification`] packed as api | application << 8 | encryption << 16, 0 if unreadable.
///
/// A BPF subprogram of its own, not inlined: the classifier's spills then live in this
/// function's frame instead of the capture program's, which already holds the HTTP parser's.
/// Kernels before 5.12 (measured on 5.10) sum the frames of a call chain rounded up to 32 bytes
/// each against the 512-byte limit: with the classifier inlined, the capture's frame was 488
/// bytes, 544 with the program's entry stub ("combined stack size of 2 calls is 544"); this way
/// it is 464, plus this function's 32.
#[inline(never)]
fn classify_at(skb: *mut __sk_buff, payload: u32, len: u32, headers: u32) -> u32 {
    let n = len.min(CLASSIFY_BYTES as u32);
    if n == 0 {
        return 0;
    }
    let Some(buf) = NT_CLASSIFY_BUF.get_ptr_mut(0) else {
        return 0;
    };
    // The verifier needs the length proved in 1..=CLASSIFY_BYTES at the call.
    let n = verifier_len::<{ CLASSIFY_BYTES as u32 }>(n);
    // SAFETY: the destination is this CPU's buffer, `n` <= its length; preemption is off for
    // the program's run, and the buffer is only used within it.
    let loaded =
        unsafe { bpf_skb_load_bytes(skb.cast(), payload, (*buf).bytes.as_mut_ptr().cast(), n) };
    if loaded != 0 {
        return 0;
    }
    // SAFETY: as above; bytes from `n` on are stale and the classifier does not read them.
    let buf = unsafe { &*buf };
    let found = if headers == 0 {
        classify(buf, len as usize)
    } else {
        classify_http2_headers(buf, len as usize)
    };
    u32::from(found.api) | u32::from(found.application) << 8 | u32::from(found.encryption) << 16
}

/// [`classify_at`]'s result as a [`Classification`].
#[inline(always)]
fn unpack(packed: u32) -> Classification {
    Classification {
        api: packed as u8,
        application: (packed >> 8) as u8,
        encryption: (packed >> 16) as u8,
    }
}

/// Writes a pending stack into the connection entry (`conn` owns it); after
/// [`MAX_WRITE_TRIES`] segments without an entry, gives it up.
#[inline(always)]
fn write_stack(sk: *mut bpf_sock, st: &mut HttpSock) {
    if st.flags & SOCK_STACK_PENDING == 0 {
        return;
    }
    if conn::protocol::set(sock_addr(sk), st.stack) {
        st.flags &= !SOCK_STACK_PENDING;
    } else if st.tries >= MAX_WRITE_TRIES {
        st.flags &= !SOCK_STACK_PENDING;
        bump(Counter::ProtocolStackUnwritten);
    }
}

/// The kernel address of the full socket `sk`: the key of its connection entry (`ConnKey::sk`,
/// what the backends' hooks get as `struct sock *`).
#[inline(always)]
fn sock_addr(sk: *mut bpf_sock) -> u64 {
    let mut addr = sk as u64;
    // The verifier types the value as a socket pointer and refuses to store it in a map key;
    // negating it twice gives the same number typed as a plain scalar (allowed to privileged
    // loaders, as in `backend/sock_ops.rs`); as asm, the compiler cannot fold it away.
    // SAFETY: register-only arithmetic.
    unsafe {
        core::arch::asm!(
            "{v} = -{v}",
            "{v} = -{v}",
            v = inout(reg) addr,
            options(pure, nomem, nostack),
        );
    }
    addr
}

/// A request start in `direction` that the flow let begin: fills the socket's in-flight
/// record.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn request(
    skb: *mut __sk_buff,
    protocol: u32,
    direction: u8,
    seg: &Segment,
    sk: *mut bpf_sock,
    st: &mut HttpSock,
    method: u8,
    target: u32,
) {
    let tx = storage(&NT_HTTP_INFLIGHT, sk, true);
    if tx.is_null() {
        bump(Counter::HttpStorageFailed);
        return;
    }
    // SAFETY: this socket's storage value.
    let tx = unsafe { &mut *tx };
    if begin(skb, protocol, direction, seg, tx, method, target) {
        st.flow.begun();
    }
}

/// Fills the record of a request starting in this segment; false if its headers could not be
/// read again (the request is not in flight then).
#[inline(always)]
fn begin(
    skb: *mut __sk_buff,
    protocol: u32,
    direction: u8,
    seg: &Segment,
    tx: &mut HttpTransaction,
    method: u8,
    target: u32,
) -> bool {
    let Some(ip) = ip_header(skb, protocol) else {
        return false;
    };
    let egress = direction == PACKET_EGRESS;
    // The observing socket's tuple: its own end first.
    let (saddr, daddr, sport, dport) = if egress {
        (ip.saddr, ip.daddr, seg.sport, seg.dport)
    } else {
        (ip.daddr, ip.saddr, seg.dport, seg.sport)
    };
    // SAFETY: helpers allowed in cgroup_skb programs; they take the context.
    tx.request_ns = unsafe { bpf_ktime_get_ns() };
    tx.cookie = unsafe { bpf_get_socket_cookie(skb.cast()) };
    tx.cgroup_id = unsafe { bpf_skb_cgroup_id(skb) };
    tx.response_ns = 0;
    tx.netns = 0;
    tx.status = 0;
    tx.saddr = saddr;
    tx.daddr = daddr;
    tx.sport = sport;
    tx.dport = dport;
    tx.family = ip.family;
    tx.method = method;
    tx.role = if egress {
        HTTP_ROLE_CLIENT
    } else {
        HTTP_ROLE_SERVER
    };
    tx.kind = PACKET_KIND_HTTP;
    tx._pad = [0; 4];
    tx.flags = 0;
    zero_path(tx);
    path(skb, seg, tx, target);
    true
}

/// Copies the request target's path (the bytes from `target` up to a space, `?`, `#` or the
/// line's end) into `tx.path`, zeroing the rest, and sets its length and truncation flag.
#[inline(always)]
fn path(skb: *mut __sk_buff, seg: &Segment, tx: &mut HttpTransaction, target: u32) {
    // The target is within the prefix, so within the payload.
    let available = seg.payload_len.saturating_sub(target);
    let n = available.min(HTTP_PATH_MAX as u32);
    if n == 0 {
        tx.path_len = 0;
        tx.path_captured = 0;
        return;
    }
    // The verifier needs the length proved in 1..=HTTP_PATH_MAX at the call.
    let n = verifier_len::<{ HTTP_PATH_MAX as u32 }>(n);
    // SAFETY: the destination is the record's path array, `n` <= its length.
    let loaded = unsafe {
        bpf_skb_load_bytes(
            skb.cast(),
            seg.payload + target,
            tx.path.as_mut_ptr().cast(),
            n,
        )
    };
    if loaded != 0 {
        tx.path_len = 0;
        tx.path_captured = 0;
        return;
    }
    // The byte after the copy, when the segment has it: a path exactly as long as the copy is
    // not cut.
    let next = if available > n {
        load::<u8>(skb, seg.payload + target + n).ok()
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

/// Zeroes `tx.path` with 8-byte stores (an assignment becomes a call to a byte-wise `memset`
/// subprogram: 160 iterations on every request).
#[inline(always)]
pub(crate) fn zero_path(tx: &mut HttpTransaction) {
    const WORDS: usize = HTTP_PATH_MAX / 8;
    const _: () = assert!(HTTP_PATH_MAX.is_multiple_of(8));
    const _: () = assert!(core::mem::offset_of!(HttpTransaction, path).is_multiple_of(8));
    let words = tx.path.as_mut_ptr().cast::<u64>();
    for i in 0..WORDS {
        // SAFETY: word `i` < WORDS is inside the path array, 8-aligned (the record is a map
        // value, 8-aligned, and the path sits at an 8-aligned offset).
        unsafe { core::ptr::write_volatile(words.add(i), 0) };
    }
}

/// The segment's sequence number (read again: only message starts need it).
#[inline(always)]
fn seq_of(skb: *mut __sk_buff, seg: &Segment) -> Option<u32> {
    load::<[u8; 4]>(skb, seg.l4 + 4)
        .ok()
        .map(u32::from_be_bytes)
}

/// The final status line of the request in flight: finishes the socket's record and hands it
/// out.
#[inline(always)]
fn response(sk: *mut bpf_sock, status: u16) {
    let tx = storage(&NT_HTTP_INFLIGHT, sk, false);
    if tx.is_null() {
        // Created with the request: gone only if the kernel freed it meanwhile.
        bump(Counter::HttpStorageFailed);
        return;
    }
    // SAFETY: this socket's storage value.
    finish(unsafe { &mut *tx }, status);
}

/// Finishes an in-flight record with its status and the time, and writes it to the capture's
/// ring (counted either way). Shared by every source of records (here and `tls`).
#[inline(always)]
pub(crate) fn finish(record: &mut HttpTransaction, status: u16) {
    record.status = status;
    // SAFETY: a helper allowed everywhere.
    record.response_ns = unsafe { bpf_ktime_get_ns() };
    let ptr: *mut HttpTransaction = record;
    // SAFETY: the record is a whole HttpTransaction in a map value.
    if unsafe { ring_output(ptr.cast(), HTTP_TRANSACTION_LEN as u64) } {
        bump(Counter::HttpTransactions);
    } else {
        bump(Counter::HttpBatchFull);
    }
}

/// The first [`HTTP_PREFIX_LEN`] payload bytes, in place when they are in the linear area.
#[inline(always)]
fn prefix(skb: *mut __sk_buff, payload: u32) -> Option<[u8; HTTP_PREFIX_LEN]> {
    // SAFETY: context field reads; the bytes are read only after the bound check, which the
    // verifier also proves.
    let (start, end) = unsafe { ((*skb).data as usize, (*skb).data_end as usize) };
    let at = start + payload as usize;
    if at + HTTP_PREFIX_LEN <= end {
        // SAFETY: HTTP_PREFIX_LEN bytes from `at` are inside the packet (checked above).
        return Some(unsafe { core::ptr::read_unaligned(at as *const [u8; HTTP_PREFIX_LEN]) });
    }
    load(skb, payload).ok()
}
