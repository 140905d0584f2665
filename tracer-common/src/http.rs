//! HTTP/1.x transactions: the record the kernel's HTTP parser emits for each finished
//! request/response exchange, and the constants both sides read it with. Owner:
//! `tracer-ebpf/src/packet/http.rs` (kernel side, to come) and `tracer/src/sources/http/`
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
/// RST) rather than by the next request on the connection; informational.
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
    /// `bpf_ktime_get_ns` when the response was last seen before the transaction was finished
    /// (Datadog's `response_last_seen`): latency = `response_ns - request_ns`.
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
