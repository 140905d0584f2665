//! HTTP/1.x transactions: the record the kernel's HTTP parser emits for each finished
//! request/response exchange, and the constants both sides read it with. Owner:
//! `tracer-ebpf/src/packet/http.rs` (kernel side) and `tracer/src/sources/http/`
//! (userspace, which aggregates the records into per-path latency sketches).
//!
//! # One record per transaction per observing socket
//! The capture runs on every socket of the host (`cgroup_skb` on the cgroup v2 root), so a
//! transaction between two local sockets is observed twice: once by the client's socket (which
//! sent the request) and once by the server's socket (which received it). Each observation is
//! its own record, with its own socket's cookie and [`HttpTransaction::role`]. The tuple is
//! always the observing socket's: `saddr:sport` is its local end, `daddr:dport` its peer. So:
//!
//! - role [`HTTP_ROLE_CLIENT`]: client = `saddr:sport`, server = `daddr:dport`;
//! - role [`HTTP_ROLE_SERVER`]: client = `daddr:dport`, server = `saddr:sport`.
//!
//! Userspace keys both observations on the same (client, server) pair and counts a local
//! transaction once (it prefers the client's observation; see `sources/http`).
//!
//! # Ring records and their kind
//! Every record of the capture's rings carries its kind at byte [`RECORD_KIND_OFFSET`]
//! ([`crate::packet::PacketHeader::kind`] for packets, [`HttpTransaction::kind`] here), so one
//! reader can dispatch records of either kind from one ring, and HTTP may as well get a ring of
//! its own.

use crate::packet::PacketHeader;

/// Most path bytes a record carries. A longer path is cut (and flagged
/// [`HTTP_FLAG_PATH_TRUNCATED`]); userspace may use fewer (`HttpConfig::path_bytes`).
pub const HTTP_PATH_MAX: usize = 160;

/// [`HttpTransaction::kind`] (and the byte at [`RECORD_KIND_OFFSET`] of any capture record): an
/// HTTP transaction. DNS packets are [`crate::packet::PACKET_KIND_DNS`].
pub const PACKET_KIND_HTTP: u8 = 2;

/// Byte offset of the record kind in every capture ring record (packet headers and HTTP
/// transactions alike).
pub const RECORD_KIND_OFFSET: usize = core::mem::offset_of!(PacketHeader, kind);

/// [`HttpTransaction::role`]: the observing socket sent the request (it is the client's).
pub const HTTP_ROLE_CLIENT: u8 = 1;
/// [`HttpTransaction::role`]: the observing socket received the request (it is the server's).
pub const HTTP_ROLE_SERVER: u8 = 2;

/// [`HttpTransaction::flags`]: the path was longer than the bytes copied into
/// [`HttpTransaction::path`] (or its end was beyond what the kernel parsed): the path is a
/// prefix.
pub const HTTP_FLAG_PATH_TRUNCATED: u8 = 1;
/// [`HttpTransaction::flags`]: the transaction was finished by the connection's end (FIN or
/// RST) rather than by its status line; informational. Reserved: the kernel parser finishes
/// every transaction at its response's status line, so it never sets it.
pub const HTTP_FLAG_FINISHED_BY_CLOSE: u8 = 2;

/// Request methods, as [`HttpTransaction::method`] carries them (0 = not one of these).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HttpMethod {
    /// GET.
    Get = 1,
    /// POST.
    Post = 2,
    /// PUT.
    Put = 3,
    /// DELETE.
    Delete = 4,
    /// HEAD.
    Head = 5,
    /// OPTIONS.
    Options = 6,
    /// PATCH.
    Patch = 7,
    /// CONNECT.
    Connect = 8,
    /// TRACE.
    Trace = 9,
}

impl HttpMethod {
    /// Every method, in wire-value order.
    pub const ALL: [HttpMethod; 9] = [
        Self::Get,
        Self::Post,
        Self::Put,
        Self::Delete,
        Self::Head,
        Self::Options,
        Self::Patch,
        Self::Connect,
        Self::Trace,
    ];

    /// The method of a record's `method` byte; `None` for 0 or an unknown value.
    pub const fn from_u8(value: u8) -> Option<Self> {
        match value {
            1 => Some(Self::Get),
            2 => Some(Self::Post),
            3 => Some(Self::Put),
            4 => Some(Self::Delete),
            5 => Some(Self::Head),
            6 => Some(Self::Options),
            7 => Some(Self::Patch),
            8 => Some(Self::Connect),
            9 => Some(Self::Trace),
            _ => None,
        }
    }

    /// The method token as sent on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Post => "POST",
            Self::Put => "PUT",
            Self::Delete => "DELETE",
            Self::Head => "HEAD",
            Self::Options => "OPTIONS",
            Self::Patch => "PATCH",
            Self::Connect => "CONNECT",
            Self::Trace => "TRACE",
        }
    }
}

/// One finished HTTP/1.x transaction (request + the status line of its response) as one socket
/// observed it: a ring record of exactly [`HTTP_TRANSACTION_LEN`] bytes.
///
/// The fields up to `kind` are laid out so that `kind` sits at [`RECORD_KIND_OFFSET`], where a
/// packet record has its own kind.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpTransaction {
    /// `bpf_ktime_get_ns` (CLOCK_MONOTONIC) when the request's first packet was seen.
    pub request_ns: u64,
    /// Socket cookie of the observing socket.
    pub cookie: u64,
    /// `bpf_ktime_get_ns` when the segment that starts the response (its status line) was seen:
    /// latency = `response_ns - request_ns`, the time to the response's first byte. (Datadog
    /// takes the response's last packet seen before the next request; a record here is sent at
    /// the status line, so it needs no later packet and no close to be finished.)
    pub response_ns: u64,
    /// cgroup v2 id of the observing socket's owner (`bpf_skb_cgroup_id`); 0 if unknown.
    pub cgroup_id: u64,
    /// Network namespace inode of the observing socket; 0 if unknown.
    pub netns: u32,
    /// Length of the path as sent: the bytes of the request target before its first `?`, `#`
    /// or space (saturating at `u16::MAX`). When the kernel did not find the path's end within
    /// the bytes it parsed, the bytes it saw, with [`HTTP_FLAG_PATH_TRUNCATED`].
    pub path_len: u16,
    /// The response's status code (three digits, 100..=999 on the wire; 0 never leaves the
    /// kernel: a request without a status line is not a transaction).
    pub status: u16,
    /// Local address of the observing socket (IPv4 in the first 4 bytes, rest 0).
    pub saddr: [u8; 16],
    /// Remote address of the observing socket.
    pub daddr: [u8; 16],
    /// Local port, host byte order.
    pub sport: u16,
    /// Remote port, host byte order.
    pub dport: u16,
    /// `AF_INET` or `AF_INET6`.
    pub family: u16,
    /// [`HttpMethod`] as `u8` (0: unknown).
    pub method: u8,
    /// [`HTTP_ROLE_CLIENT`] or [`HTTP_ROLE_SERVER`]: which end the observing socket is.
    pub role: u8,
    /// [`PACKET_KIND_HTTP`].
    pub kind: u8,
    /// `HTTP_FLAG_*` bits.
    pub flags: u8,
    /// Bytes of `path` the kernel filled: `min(path_len, HTTP_PATH_MAX)`; the rest of `path`
    /// is 0.
    pub path_captured: u16,
    pub _pad: [u8; 4],
    /// The first bytes of the path (the request target up to `?`, `#` or space).
    pub path: [u8; HTTP_PATH_MAX],
}

/// Size of [`HttpTransaction`]: one ring record.
pub const HTTP_TRANSACTION_LEN: usize = core::mem::size_of::<HttpTransaction>();

const _: () = {
    assert!(HTTP_TRANSACTION_LEN == 88 + HTTP_PATH_MAX);
    assert!(HTTP_TRANSACTION_LEN.is_multiple_of(8));
    assert!(core::mem::offset_of!(HttpTransaction, kind) == RECORD_KIND_OFFSET);
    assert!(core::mem::offset_of!(HttpTransaction, path) == 88);
    // `path_captured` counts bytes of `path`.
    assert!(HTTP_PATH_MAX <= u16::MAX as usize);
};

impl HttpTransaction {
    /// A record with every field 0 but its kind (a starting point for the kernel's per-CPU
    /// scratch and for tests).
    pub const EMPTY: Self = Self {
        request_ns: 0,
        cookie: 0,
        response_ns: 0,
        cgroup_id: 0,
        netns: 0,
        path_len: 0,
        status: 0,
        saddr: [0; 16],
        daddr: [0; 16],
        sport: 0,
        dport: 0,
        family: 0,
        method: 0,
        role: 0,
        kind: PACKET_KIND_HTTP,
        flags: 0,
        path_captured: 0,
        _pad: [0; 4],
        path: [0; HTTP_PATH_MAX],
    };
}

/// Payload bytes the kernel parser reads to recognise a message start ([`message_start`]):
/// the longest method and its space (8), the target's first byte, and a status line up to the
/// byte after its code (13). A shorter segment starts no message for the parser (the shortest
/// whole request, `GET / HTTP/1.0` and an empty line, is 18 bytes; the shortest response 17).
pub const HTTP_PREFIX_LEN: usize = 16;

/// What the first bytes of a TCP segment start, for the kernel's HTTP parser.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageStart {
    /// A request line: the method (an [`HttpMethod`] as `u8`) and the offset of the request
    /// target (the method token's length and its space).
    Request { method: u8, target: u32 },
    /// A status line (`HTTP/1.0` or `HTTP/1.1`, a space, three digits, then a space or the
    /// line's end) with this code.
    Response { status: u16 },
    /// Neither: a body, another protocol, or a segment too short to tell.
    Other,
}

/// A method token and its space as the little-endian word of a prefix's first 8 bytes.
const fn word(token: &[u8]) -> u64 {
    let mut w = 0u64;
    let mut shift = 0;
    let mut rest = token;
    while let [byte, tail @ ..] = rest {
        if shift < 64 {
            w |= (*byte as u64) << shift;
        }
        shift += 8;
        rest = tail;
    }
    w
}

/// The bits of the first `len` bytes of such a word.
const fn mask(len: usize) -> u64 {
    if len >= 8 {
        u64::MAX
    } else {
        (1u64 << (8 * len)) - 1
    }
}

/// (word, mask, method, token length with its space) of the nine methods of [`HttpMethod`].
const METHODS: [(u64, u64, u8, u32); 9] = {
    const fn m(token: &[u8], method: HttpMethod) -> (u64, u64, u8, u32) {
        (
            word(token),
            mask(token.len()),
            method as u8,
            token.len() as u32,
        )
    }
    [
        m(b"GET ", HttpMethod::Get),
        m(b"POST ", HttpMethod::Post),
        m(b"PUT ", HttpMethod::Put),
        m(b"DELETE ", HttpMethod::Delete),
        m(b"HEAD ", HttpMethod::Head),
        m(b"OPTIONS ", HttpMethod::Options),
        m(b"PATCH ", HttpMethod::Patch),
        m(b"CONNECT ", HttpMethod::Connect),
        m(b"TRACE ", HttpMethod::Trace),
    ]
};

const STATUS_LINE: u64 = word(b"HTTP/1.");
const STATUS_LINE_MASK: u64 = mask(7);

/// What a segment whose payload starts with `prefix` starts: a request (one of the nine
/// methods, a space, then a visible ASCII byte: `/`, `*` or an absolute form), a status line,
/// or neither. Word compares, no loop over bytes and no index that can fail: the kernel parser
/// runs it on every segment of an HTTP socket (and the verifier rejects a panic path).
#[inline(always)]
pub fn message_start(prefix: &[u8; HTTP_PREFIX_LEN]) -> MessageStart {
    let [b0, b1, b2, b3, b4, b5, b6, b7, b8, b9, b10, b11, b12, ..] = *prefix;
    let w = u64::from_le_bytes([b0, b1, b2, b3, b4, b5, b6, b7]);
    if w & STATUS_LINE_MASK == STATUS_LINE {
        let digit = |b: u8| b.is_ascii_digit();
        if (b7 == b'0' || b7 == b'1')
            && b8 == b' '
            && digit(b9)
            && digit(b10)
            && digit(b11)
            && (b12 == b' ' || b12 == b'\r')
        {
            let status =
                u16::from(b9 - b'0') * 100 + u16::from(b10 - b'0') * 10 + u16::from(b11 - b'0');
            return MessageStart::Response { status };
        }
        return MessageStart::Other;
    }
    for (pattern, mask, method, len) in METHODS {
        if w & mask == pattern {
            let first = prefix.get(len as usize).copied().unwrap_or(0);
            if (0x21..=0x7e).contains(&first) {
                return MessageStart::Request {
                    method,
                    target: len,
                };
            }
            return MessageStart::Other;
        }
    }
    MessageStart::Other
}

/// Whether `byte` ends a request target's path: a space, `?`, `#`, or the line's end.
#[inline(always)]
pub fn is_path_end(byte: u8) -> bool {
    matches!(byte, b' ' | b'?' | b'#' | b'\r' | b'\n')
}

/// The request/response pairing of one HTTP/1.x connection as one observing end sees it: the
/// rules every source of [`HttpTransaction`]s shares (the packet capture's TCP segments, and the
/// plaintext of TLS library calls: `tracer-ebpf/src/packet/http.rs`, `tracer-ebpf/src/tls/`).
/// A source reads the first [`HTTP_PREFIX_LEN`] bytes of each unit (a segment, a call's
/// buffer), asks [`message_start`] what they start, and hands that to [`HttpFlow::on_start`];
/// the [`Step`] says what to do with the in-flight record. Pure: unit-tested here.
///
/// Retransmissions: a source with sequence numbers passes them; a message start at the same
/// sequence number as the last one in its direction is ignored. Keep-alive: a request after an
/// answered one starts afresh. Pipelining (a second request before any response byte): every
/// request of the run is dropped until as many final responses as requests came (see the
/// kernel parser's docs).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HttpFlow {
    /// Sequence number of the last request start (valid with [`FLOW_REQ_SEQ`]).
    pub req_seq: u32,
    /// Sequence number of the last response start (valid with [`FLOW_RESP_SEQ`]).
    pub resp_seq: u32,
    /// `FLOW_*` bits.
    pub flags: u8,
    /// Direction of the last request start (`PACKET_EGRESS`: this end is the client); 0 before
    /// any.
    pub req_dir: u8,
    /// Pipelined mode: requests whose final response has not been seen.
    pub outstanding: u8,
    pub _pad: u8,
}

/// [`HttpFlow::flags`]: a request is in flight (its record is being kept by the source).
pub const FLOW_PENDING: u8 = 1;
/// Payload came in the response's direction since the request in flight started.
pub const FLOW_ANSWERED: u8 = 2;
/// Requests overlapped: pipelined mode.
pub const FLOW_PIPELINED: u8 = 4;
/// [`HttpFlow::req_seq`] is valid.
pub const FLOW_REQ_SEQ: u8 = 8;
/// [`HttpFlow::resp_seq`] is valid.
pub const FLOW_RESP_SEQ: u8 = 16;

/// What a source does after [`HttpFlow::on_start`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Nothing (a body, an interim response, bytes in the request's direction that look like a
    /// status line, a response of a pipelined run).
    Nothing,
    /// A message start at the sequence number of the last one: a retransmission, ignored
    /// (`http_retransmission`).
    Retransmission,
    /// This many requests were dropped as pipelined (`http_pipelined`).
    Pipelined(u8),
    /// A request starts: fill the in-flight record (method, the path at `target`), then call
    /// [`HttpFlow::begun`] if it could be. `superseded`: the previous request had response
    /// bytes but no status line, and is dropped (`http_request_unanswered`).
    Begin {
        method: u8,
        target: u32,
        superseded: bool,
    },
    /// The in-flight request's final status line: finish the record with `status` and hand it
    /// out (`http_transactions`).
    Finish { status: u16 },
    /// A final response with no request in flight (`http_response_without_request`).
    WithoutRequest,
}

impl HttpFlow {
    /// A unit (segment, call) in `direction` that starts `start`; `seq` its sequence number
    /// where the source has one (only read for message starts); `payload` whether it carries
    /// bytes (a bare FIN does not).
    #[inline(always)]
    pub fn on_start(
        &mut self,
        direction: u8,
        start: MessageStart,
        seq: Option<u32>,
        payload: bool,
    ) -> Step {
        match start {
            MessageStart::Request { method, target } => {
                self.request(direction, seq, method, target)
            }
            MessageStart::Response { status } => self.response(direction, seq, status),
            MessageStart::Other => {
                if payload && self.flags & FLOW_PENDING != 0 && direction != self.req_dir {
                    self.flags |= FLOW_ANSWERED;
                }
                Step::Nothing
            }
        }
    }

    #[inline(always)]
    fn request(&mut self, direction: u8, seq: Option<u32>, method: u8, target: u32) -> Step {
        if let Some(seq) = seq {
            if self.flags & FLOW_REQ_SEQ != 0 && self.req_seq == seq && self.req_dir == direction {
                return Step::Retransmission;
            }
            self.req_seq = seq;
            self.flags |= FLOW_REQ_SEQ;
        }
        self.req_dir = direction;
        let mut superseded = false;
        if self.flags & FLOW_PIPELINED != 0 {
            if self.outstanding > 0 {
                self.outstanding = self.outstanding.saturating_add(1);
                return Step::Pipelined(1);
            }
            // Every request of the pipelined run was answered: this one starts afresh.
            self.flags &= !FLOW_PIPELINED;
        } else if self.flags & FLOW_PENDING != 0 {
            if self.flags & FLOW_ANSWERED == 0 {
                // Sent before the one in flight was answered: pipelining. Neither can be paired.
                self.flags = (self.flags | FLOW_PIPELINED) & !(FLOW_PENDING | FLOW_ANSWERED);
                self.outstanding = 2;
                return Step::Pipelined(2);
            }
            // Response bytes came, but no status line at a unit's start.
            superseded = true;
        }
        self.flags &= !(FLOW_PENDING | FLOW_ANSWERED);
        Step::Begin {
            method,
            target,
            superseded,
        }
    }

    /// The source filled the record of the request [`Step::Begin`] announced: it is in flight.
    #[inline(always)]
    pub fn begun(&mut self) {
        self.flags |= FLOW_PENDING;
    }

    #[inline(always)]
    fn response(&mut self, direction: u8, seq: Option<u32>, status: u16) -> Step {
        if self.req_dir == direction {
            // Bytes in the request's direction that look like a status line: a request body.
            return Step::Nothing;
        }
        if let Some(seq) = seq {
            if self.flags & FLOW_RESP_SEQ != 0 && self.resp_seq == seq {
                return Step::Retransmission;
            }
            self.resp_seq = seq;
            self.flags |= FLOW_RESP_SEQ;
        }
        if (100..200).contains(&status) && status != 101 {
            // Interim (100 Continue, 103 Early Hints): the final response is still to come.
            return Step::Nothing;
        }
        if self.flags & FLOW_PIPELINED != 0 {
            // Its request was counted when the run became pipelined.
            self.outstanding = self.outstanding.saturating_sub(1);
            return Step::Nothing;
        }
        if self.flags & FLOW_PENDING == 0 {
            return Step::WithoutRequest;
        }
        self.flags &= !(FLOW_PENDING | FLOW_ANSWERED);
        Step::Finish { status }
    }

    /// The connection ends (`reset`: either way; `fin_from_responder`: the responder's FIN, not
    /// the client's half-close after its request): true when a request in flight goes
    /// unanswered (`http_request_unanswered`).
    #[inline(always)]
    pub fn on_close(&mut self, reset: bool, fin_direction: Option<u8>) -> bool {
        let closing = reset || fin_direction.is_some_and(|d| d != self.req_dir);
        if closing && self.flags & FLOW_PENDING != 0 {
            self.flags &= !(FLOW_PENDING | FLOW_ANSWERED);
            return true;
        }
        false
    }
}

/// Ends the path copied into `path[..n]` (the bytes of the request target from its start):
/// zeroes from its first [`is_path_end`] byte on (the query must not leave the kernel). Returns
/// the path's length and whether it was cut: no end within `n` bytes, and `next` (the byte after
/// them, when the source has it) does not end it either.
#[inline(always)]
pub fn end_path(path: &mut [u8; HTTP_PATH_MAX], n: u32, next: Option<u8>) -> (u16, bool) {
    let mut end = n;
    let mut found = false;
    for (i, byte) in path.iter_mut().enumerate() {
        let i = i as u32;
        if i >= n {
            break;
        }
        if found {
            *byte = 0;
        } else if is_path_end(*byte) {
            found = true;
            end = i;
            *byte = 0;
        }
    }
    let cut = !found && !next.is_some_and(is_path_end);
    // `end` <= HTTP_PATH_MAX, which fits in u16.
    (end as u16, cut)
}

#[cfg(test)]
mod tests {
    extern crate std;

    use std::format;

    use super::*;

    const OUT: u8 = 1;
    const IN: u8 = 2;
    fn req() -> MessageStart {
        MessageStart::Request {
            method: 1,
            target: 4,
        }
    }
    fn resp(status: u16) -> MessageStart {
        MessageStart::Response { status }
    }

    #[test]
    fn flow_pairs_keep_alive_exchanges_and_skips_interim() {
        let mut f = HttpFlow::default();
        for _ in 0..3 {
            assert!(matches!(
                f.on_start(OUT, req(), None, true),
                Step::Begin {
                    superseded: false,
                    ..
                }
            ));
            f.begun();
            assert_eq!(f.on_start(IN, resp(100), None, true), Step::Nothing);
            assert_eq!(
                f.on_start(IN, resp(200), None, true),
                Step::Finish { status: 200 }
            );
            assert_eq!(
                f.on_start(IN, MessageStart::Other, None, true),
                Step::Nothing
            );
        }
        assert_eq!(f.on_start(IN, resp(200), None, true), Step::WithoutRequest);
    }

    #[test]
    fn flow_drops_retransmissions_and_pipelined_runs() {
        let mut f = HttpFlow::default();
        assert!(matches!(
            f.on_start(OUT, req(), Some(10), true),
            Step::Begin { .. }
        ));
        f.begun();
        assert_eq!(f.on_start(OUT, req(), Some(10), true), Step::Retransmission);
        // A second request before any response byte: pipelined, both dropped.
        assert_eq!(f.on_start(OUT, req(), Some(20), true), Step::Pipelined(2));
        assert_eq!(f.on_start(OUT, req(), Some(30), true), Step::Pipelined(1));
        for seq in [1, 2, 3] {
            assert_eq!(f.on_start(IN, resp(200), Some(seq), true), Step::Nothing);
        }
        assert!(matches!(
            f.on_start(OUT, req(), Some(40), true),
            Step::Begin { .. }
        ));
        f.begun();
        assert_eq!(
            f.on_start(IN, resp(200), Some(3), true),
            Step::Retransmission
        );
        assert_eq!(
            f.on_start(IN, resp(404), Some(4), true),
            Step::Finish { status: 404 }
        );
    }

    #[test]
    fn flow_supersedes_and_closes_unanswered_requests() {
        let mut f = HttpFlow::default();
        assert!(matches!(
            f.on_start(OUT, req(), None, true),
            Step::Begin { .. }
        ));
        f.begun();
        f.on_start(IN, MessageStart::Other, None, true);
        assert!(matches!(
            f.on_start(OUT, req(), None, true),
            Step::Begin {
                superseded: true,
                ..
            }
        ));
        f.begun();
        // The client's half-close does not end it; the server's FIN does.
        assert!(!f.on_close(false, Some(OUT)));
        assert!(f.on_close(false, Some(IN)));
        assert!(!f.on_close(true, None));
    }

    #[test]
    fn path_ends_at_its_first_end_byte_or_is_cut() {
        let mut path = [0u8; HTTP_PATH_MAX];
        path[..12].copy_from_slice(b"/a/b?q=1 HTT");
        assert_eq!(end_path(&mut path, 12, None), (4, false));
        assert!(path[4..].iter().all(|b| *b == 0));
        let mut path = [b'x'; HTTP_PATH_MAX];
        assert_eq!(end_path(&mut path, 160, Some(b' ')), (160, false));
        assert_eq!(end_path(&mut path, 160, Some(b'y')), (160, true));
        assert_eq!(end_path(&mut path, 160, None), (160, true));
    }

    fn start(bytes: &[u8]) -> MessageStart {
        let mut prefix = [0u8; HTTP_PREFIX_LEN];
        for (dst, src) in prefix.iter_mut().zip(bytes) {
            *dst = *src;
        }
        message_start(&prefix)
    }

    #[test]
    fn every_method_starts_a_request_at_its_target() {
        for method in HttpMethod::ALL {
            let line = format!("{} /x HTTP/1.1\r\n", method.as_str());
            assert_eq!(
                start(line.as_bytes()),
                MessageStart::Request {
                    method: method as u8,
                    target: method.as_str().len() as u32 + 1,
                },
                "{line:?}"
            );
        }
        assert_eq!(
            start(b"OPTIONS * HTTP/1.1"),
            MessageStart::Request {
                method: HttpMethod::Options as u8,
                target: 8
            }
        );
        assert_eq!(
            start(b"GET http://h/ HTTP/1.1"),
            MessageStart::Request {
                method: 1,
                target: 4
            }
        );
    }

    #[test]
    fn near_misses_are_not_requests() {
        for bytes in [
            &b"GET  / HTTP/1.1"[..],
            b"GET\t/ HTTP/1.1",
            b"get / HTTP/1.1",
            b"GETS / HTTP/1.1",
            b"POS / HTTP/1.1",
            b"PUTT / HTTP/1.1",
            b"DELETE\r\n",
            b"OPTIONS\t*",
            b"",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
            b"*2\r\n$3\r\nGET\r\n",
        ] {
            assert_eq!(start(bytes), MessageStart::Other, "{bytes:?}");
        }
    }

    #[test]
    fn status_lines_carry_their_code() {
        for (line, status) in [
            (&b"HTTP/1.1 200 OK\r\n"[..], 200),
            (b"HTTP/1.0 404 Not Found", 404),
            (b"HTTP/1.1 100 Continue", 100),
            (b"HTTP/1.1 500\r\n", 500),
            (b"HTTP/1.1 999 x", 999),
        ] {
            assert_eq!(start(line), MessageStart::Response { status }, "{line:?}");
        }
        for line in [
            &b"HTTP/2 200 OK\r\n\r\n"[..],
            b"HTTP/1.2 200 OK",
            b"HTTP/1.1 20 OK\r\n",
            b"HTTP/1.1 2000 OK",
            b"HTTP/1.1  200 OK",
            b"HTTP/1.1 2x0 OK",
            b"http/1.1 200 OK",
        ] {
            assert_eq!(start(line), MessageStart::Other, "{line:?}");
        }
    }

    #[test]
    fn the_path_ends_at_a_space_query_fragment_or_line_end() {
        for byte in [b' ', b'?', b'#', b'\r', b'\n'] {
            assert!(is_path_end(byte));
        }
        for byte in [b'/', b'a', b'%', b'.', b'-', b'&', b'='] {
            assert!(!is_path_end(byte));
        }
    }
}
