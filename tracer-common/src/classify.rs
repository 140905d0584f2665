//! Protocol classification of a TCP connection from the first payload bytes of one direction:
//! pure functions that the kernel runs (inlined into a `cgroup_skb` program) and the host tests
//! run on bytes recorded from real clients and servers (`tracer-common/tests/classify.rs`).
//! [`classify`] takes a connection's first payloads; [`classify_http2_headers`] a later payload
//! of an HTTP/2 connection, for gRPC.
//!
//! The protocols are numbered per layer as Datadog's USM classifier numbers them within each
//! layer of its `protocol_t` (the low byte, which is what its `protocol_stack_t` stores), so a
//! [`Classification`] is the tracer's `ProtocolStack` as is.
//!
//! Rules are strict: a false positive is worse than a miss. Every rule needs several fixed bytes
//! or structural checks (lengths, ranges, terminators), so bulk data (iperf3) and text lines
//! ("hello\n", an SSH banner) are [`PROTO_UNKNOWN`], and so are uniformly random payloads but
//! about 1.7e-8 of them (5 of 300 million: TLS application data and a Redis integer or bulk
//! length line, the two weakest rules). Not detected, on purpose or for size: Redis inline
//! commands, RESP3-only replies and arrays of 10 or more elements, Kafka responses (they carry
//! only a correlation id), Postgres and MySQL error messages, MongoDB OP_REPLY and
//! OP_COMPRESSED, TLS alerts and SSLv2 hellos, HTTP/2 request HEADERS, queries longer than the
//! payload, and gRPC from a connection's first payloads (see [`PROTO_GRPC`]).
//!
//! The direction is not an input: every rule matches a message that only one role sends (a
//! request, a greeting, a reply), so the caller may pass either direction's first bytes and
//! classify the connection when either matches.
//!
//! eBPF: no panics, no allocation, no loops (the compiler unrolls the few fixed-count ones), no
//! function pointers. Multi-byte fields are read as aligned 64-bit words of the 8-aligned
//! [`ClassifyBuf`]; a few reads are at offsets that depend on earlier bytes (always below
//! [`CLASSIFY_BYTES`]), which kernels before 5.12 refuse on the stack: keep the buffer in a map
//! value (as the capture's per-CPU scratch). Size, measured with `llvm-objdump` on the release
//! BPF object: `classify` is about 960 instructions on its own (about 1030 more in
//! `nt_packet_in` when inlined there), `classify_http2_headers` about 80.

/// Payload bytes the caller hands over. The rules read 41 at most (a gRPC content-type after a
/// literal header name ends there); rounded up to a multiple of 16.
pub const CLASSIFY_BYTES: usize = 48;

/// The payload bytes handed to [`classify`], 8-byte aligned so that multi-byte fields are read
/// as aligned 64-bit words (one BPF load each).
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClassifyBuf {
    pub bytes: [u8; CLASSIFY_BYTES],
}

impl ClassifyBuf {
    /// All zero.
    pub const ZERO: Self = Self {
        bytes: [0; CLASSIFY_BYTES],
    };

    /// The first [`CLASSIFY_BYTES`] of `payload` (zero after its end), for userspace.
    pub fn from_prefix(payload: &[u8]) -> Self {
        let mut buf = Self::ZERO;
        for (to, from) in buf.bytes.iter_mut().zip(payload) {
            *to = *from;
        }
        buf
    }
}

/// Not classified (any layer).
pub const PROTO_UNKNOWN: u8 = 0;

// Application layer (`Classification::application`), Datadog's order.
/// HTTP/1.0 and HTTP/1.1.
pub const PROTO_HTTP: u8 = 1;
/// HTTP/2 in cleartext (h2c; h2 over TLS is [`PROTO_TLS`]).
pub const PROTO_HTTP2: u8 = 2;
/// Kafka (requests only).
pub const PROTO_KAFKA: u8 = 3;
/// MongoDB wire protocol.
pub const PROTO_MONGO: u8 = 4;
/// PostgreSQL frontend/backend protocol 3.0.
pub const PROTO_POSTGRES: u8 = 5;
/// AMQP (0-9-1 frames; protocol headers of 0-9-1, 0-10 and 1.0).
pub const PROTO_AMQP: u8 = 6;
/// Redis (RESP).
pub const PROTO_REDIS: u8 = 7;
/// MySQL and MariaDB client/server protocol.
pub const PROTO_MYSQL: u8 = 8;

// API layer (`Classification::api`).
/// gRPC: `content-type: application/grpc` in an HTTP/2 HEADERS frame. Only a server's response
/// HEADERS frame at the start of a payload is recognised (`:status` first, content-type second,
/// as python3-grpcio's server sends it, and as an HPACK encoder with Huffman coding and indexed
/// names writes it); a client's request HEADERS has `:path` and `:authority` of any length before
/// its content-type. The first payloads of a connection do not hold it (client: preface,
/// SETTINGS, WINDOW_UPDATE; server: SETTINGS, WINDOW_UPDATE, SETTINGS ACK), so a caller that
/// wants gRPC classifies the server's later payloads of an HTTP/2 connection too.
pub const PROTO_GRPC: u8 = 1;

// Encryption layer (`Classification::encryption`).
/// TLS (and SSL 3.0) records.
pub const PROTO_TLS: u8 = 1;

/// The protocol of each layer found in a payload; [`PROTO_UNKNOWN`] where none.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Classification {
    /// [`PROTO_GRPC`] or unknown.
    pub api: u8,
    /// [`PROTO_HTTP`] ..= [`PROTO_MYSQL`] or unknown.
    pub application: u8,
    /// [`PROTO_TLS`] or unknown.
    pub encryption: u8,
}

impl Classification {
    /// Nothing recognised.
    pub const UNKNOWN: Self = Self {
        api: PROTO_UNKNOWN,
        application: PROTO_UNKNOWN,
        encryption: PROTO_UNKNOWN,
    };

    /// Only the application layer known.
    #[inline(always)]
    pub const fn application(protocol: u8) -> Self {
        Self {
            api: PROTO_UNKNOWN,
            application: protocol,
            encryption: PROTO_UNKNOWN,
        }
    }

    /// Whether no layer is known.
    #[inline(always)]
    pub const fn is_unknown(&self) -> bool {
        self.api == PROTO_UNKNOWN
            && self.application == PROTO_UNKNOWN
            && self.encryption == PROTO_UNKNOWN
    }
}

/// Classifies the first payload bytes of one direction of a TCP connection.
///
/// `buf` holds the payload's first bytes; `len` is the payload's length, which may exceed
/// [`CLASSIFY_BYTES`] (then only the first [`CLASSIFY_BYTES`] count; a few rules compare `len`
/// with a message's own length). Bytes of `buf` from `len` on do not count.
#[inline(always)]
pub fn classify(buf: &ClassifyBuf, len: usize) -> Classification {
    let p = Payload {
        b: buf,
        len: if len < CLASSIFY_BYTES {
            len
        } else {
            CLASSIFY_BYTES
        },
        total: len,
    };
    if p.len == 0 {
        return Classification::UNKNOWN;
    }
    // Text protocols and magic numbers, by their first byte.
    let by_first = match p.at(0) {
        0x16 | 0x17 => {
            if tls(&p.fresh()) {
                return Classification {
                    api: PROTO_UNKNOWN,
                    application: PROTO_UNKNOWN,
                    encryption: PROTO_TLS,
                };
            }
            PROTO_UNKNOWN
        }
        b'G' | b'P' | b'H' | b'D' | b'O' | b'T' | b'C' => http(&p.fresh()),
        b'*' | b'$' | b':' | b'+' | b'-' => redis(&p.fresh()),
        b'A' => amqp_header(&p.fresh()),
        b'R' => postgres_auth(&p.fresh()),
        _ => PROTO_UNKNOWN,
    };
    if by_first != PROTO_UNKNOWN {
        return Classification::application(by_first);
    }
    // Binary protocols whose first bytes are a length (any first byte for the little-endian
    // ones), in an order where no rule takes an earlier one's fixtures.
    let mut protocol = PROTO_UNKNOWN;
    if p.at(0) == 0 {
        protocol = http2_settings(&p.fresh());
        if protocol == PROTO_UNKNOWN {
            protocol = postgres_startup(&p.fresh());
        }
        if protocol == PROTO_UNKNOWN {
            protocol = kafka(&p.fresh());
        }
    }
    if protocol == PROTO_UNKNOWN {
        protocol = sql_query(&p.fresh());
    }
    if protocol == PROTO_UNKNOWN {
        protocol = mysql(&p.fresh());
    }
    if protocol == PROTO_UNKNOWN {
        protocol = mongo(&p.fresh());
    }
    if protocol == PROTO_UNKNOWN {
        protocol = amqp_frame(&p.fresh());
    }
    Classification::application(protocol)
}

/// Classifies a later payload of an HTTP/2 connection (see [`PROTO_GRPC`]): one that starts
/// with the HEADERS frame of a response. HTTP/2 and, when its content-type says so, gRPC;
/// unknown for anything else. Same arguments as [`classify`].
#[inline(always)]
pub fn classify_http2_headers(buf: &ClassifyBuf, len: usize) -> Classification {
    let p = Payload {
        b: buf,
        len: if len < CLASSIFY_BYTES {
            len
        } else {
            CLASSIFY_BYTES
        },
        total: len,
    };
    match http2_headers(&p) {
        None => Classification::UNKNOWN,
        Some(api) => Classification {
            api,
            application: PROTO_HTTP2,
            encryption: PROTO_UNKNOWN,
        },
    }
}

/// The bytes under classification: `len` of them count (at most [`CLASSIFY_BYTES`]); `total` is
/// the payload's length.
#[derive(Clone, Copy)]
struct Payload<'a> {
    b: &'a ClassifyBuf,
    len: usize,
    total: usize,
}

impl Payload<'_> {
    /// The same bytes, read again: each rule loads what it needs itself (one BPF load a byte
    /// or a word) instead of the compiler keeping bytes extracted for another rule in registers
    /// and on the stack.
    #[inline(always)]
    fn fresh(&self) -> Self {
        Self {
            b: core::hint::black_box(self.b),
            ..*self
        }
    }

    /// Byte `i` (0 past the array, which no rule reaches).
    #[inline(always)]
    fn at(&self, i: usize) -> u8 {
        match self.b.bytes.get(i) {
            Some(&b) => b,
            None => 0,
        }
    }

    /// Bytes `8 * i .. 8 * i + 8`, little-endian: one aligned load.
    #[inline(always)]
    fn word(&self, i: usize) -> u64 {
        match self.b.bytes.as_chunks::<8>().0.get(i) {
            Some(&chunk) => u64::from_le_bytes(chunk),
            None => 0,
        }
    }

    /// The 8 bytes at offset `i`, little-endian: one or two aligned loads and shifts.
    #[inline(always)]
    fn word_at(&self, i: usize) -> u64 {
        let shift = 8 * (i % 8);
        let low = self.word(i / 8) >> shift;
        if shift == 0 {
            low
        } else {
            low | (self.word(i / 8 + 1) << (64 - shift))
        }
    }

    /// Bytes 0..8 with those past `len` zeroed: a literal prefix whose last byte is not zero
    /// only matches when the payload has all of it.
    #[inline(always)]
    fn head(&self) -> u64 {
        self.word(0) & mask(self.len)
    }

    /// Little-endian 32-bit at `i`.
    #[inline(always)]
    fn le32(&self, i: usize) -> u32 {
        self.word_at(i) as u32
    }

    /// Big-endian 32-bit at `i`.
    #[inline(always)]
    fn be32(&self, i: usize) -> u32 {
        self.le32(i).swap_bytes()
    }

    /// Big-endian 16-bit at `i`.
    #[inline(always)]
    fn be16(&self, i: usize) -> u32 {
        u32::from((self.word_at(i) as u16).swap_bytes())
    }
}

/// `s` (up to 8 bytes) as [`Payload::word`] reads it.
const fn lit(s: &[u8]) -> u64 {
    let mut v = 0u64;
    let mut i = 0;
    let mut rest = s;
    while let [first, tail @ ..] = rest {
        if i < 8 {
            // `as` widens a u8 (`u64::from` is not const).
            v |= (*first as u64) << (8 * i);
        }
        rest = tail;
        i += 1;
    }
    v
}

/// The low `n` bytes of a word.
const fn mask(n: usize) -> u64 {
    if n >= 8 {
        u64::MAX
    } else {
        (1u64 << (8 * n)) - 1
    }
}

/// Whether `head` ([`Payload::head`]) starts with `s`, whose last byte is not zero.
#[inline(always)]
fn starts(head: u64, s: &[u8]) -> bool {
    head & mask(s.len()) == lit(s)
}

/// TLS record header (RFC 8446 5.1): content type, legacy version 3.0..=3.4, length at most
/// 2^14 + 2048 (TLSCiphertext's limit). Handshake (22) records must start a ClientHello (1) or a
/// ServerHello (2), whose 24-bit length fits 16 bits (first byte 0) and whose own legacy version
/// is 3.x as well: what `curl -k https://`, `openssl s_client` and nginx/`openssl s_server` send
/// first. Application data (23) stands for a connection already past its handshake (a segment
/// that starts at a record boundary): version 3.3 (TLS 1.2, and TLS 1.3's records) and at least
/// 17 bytes (a TLS 1.3 record's type byte and AEAD tag). That is 3 fixed bytes and a range, the
/// weakest rule here: about 1e-8 of uniformly random payloads pass it (3 of 300 million).
#[inline(always)]
fn tls(p: &Payload) -> bool {
    let record = p.be16(3);
    if p.len < 5 || p.at(1) != 3 || record == 0 || record > 16384 + 2048 {
        return false;
    }
    if p.at(0) == 0x16 {
        p.len >= 11
            && p.at(2) <= 4
            && matches!(p.at(5), 1 | 2)
            && p.at(6) == 0
            && p.at(9) == 3
            && p.at(10) <= 4
    } else {
        p.at(2) == 3 && record >= 17
    }
}

/// HTTP/1.x (RFC 9112) and the HTTP/2 connection preface (RFC 9113 3.4).
/// - A response starts `HTTP/1.0 ` or `HTTP/1.1 ` and a 3-digit status 100..=599 followed by a
///   space (or CR: some servers omit the reason phrase and its space).
/// - A request starts with a method in capitals (Datadog's list and CONNECT), one space and a
///   request target: `/` (origin form), `h` of `http://` (absolute form, to proxies), `*`
///   (OPTIONS only) or a host name or `[` (CONNECT only).
/// - The preface, `PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`, all 24 bytes, is HTTP/2 (`curl
///   --http2-prior-knowledge`, gRPC clients without TLS).
#[inline(always)]
fn http(p: &Payload) -> u8 {
    let head = p.head();
    if p.len >= 24
        && head == lit(b"PRI * HT")
        && p.word(1) == lit(b"TP/2.0\r\n")
        && p.word(2) == lit(b"\r\nSM\r\n\r\n")
    {
        return PROTO_HTTP2;
    }
    if starts(head, b"HTTP/1.") {
        let ok = p.len >= 13
            && matches!(p.at(7), b'0' | b'1')
            && p.at(8) == b' '
            && matches!(p.at(9), b'1'..=b'5')
            && p.at(10).is_ascii_digit()
            && p.at(11).is_ascii_digit()
            && matches!(p.at(12), b' ' | b'\r');
        return if ok { PROTO_HTTP } else { PROTO_UNKNOWN };
    }
    // The one method the first two letters allow, with its space, and its length.
    const fn method(s: &[u8]) -> (u64, usize) {
        (lit(s), s.len())
    }
    let (method, n) = match (p.at(0), p.at(1)) {
        (b'G', _) => const { method(b"GET ") },
        (b'P', b'O') => const { method(b"POST ") },
        (b'P', b'U') => const { method(b"PUT ") },
        (b'P', _) => const { method(b"PATCH ") },
        (b'H', _) => const { method(b"HEAD ") },
        (b'D', _) => const { method(b"DELETE ") },
        (b'T', _) => const { method(b"TRACE ") },
        (b'O', _) => const { method(b"OPTIONS ") },
        _ => const { method(b"CONNECT ") },
    };
    if head & mask(n) != method || p.len <= n {
        return PROTO_UNKNOWN;
    }
    let t = p.at(n);
    let ok = match p.at(0) {
        b'C' => t.is_ascii_alphanumeric() || t == b'[',
        b'O' => t == b'/' || t == b'*',
        _ => t == b'/' || t == b'h',
    };
    if ok { PROTO_HTTP } else { PROTO_UNKNOWN }
}

/// Redis RESP2 (https://redis.io/docs/latest/develop/reference/protocol-spec/), every line
/// checked to its CRLF:
/// - A command (`redis-cli`) is an array of 1..=9 bulk strings, `*<n>\r\n$<m>\r\n` (m < 100),
///   then the command name's first letter.
/// - Replies: the simple strings `+OK`, `+PONG`, `+QUEUED`; an error with a code a server
///   answers a first command with and a space (`-ERR `, `-NOAUTH `, `-NOPERM `, `-MOVED `, `-ASK `,
///   `-BUSY `, `-LOADING`, `-READONL`, `-WRONGTY`, `-WRONGPA`; any word of capitals would take
///   text lines like `-ABC x`); an integer of 1..=5 digits or -1 (`:1\r\n`); a bulk string
///   header of 1..=5 digits or the null one (`$5\r\n`, `$-1\r\n`).
///
/// Datadog takes any RESP type byte alone: one byte of evidence is too weak.
#[inline(always)]
fn redis(p: &Payload) -> u8 {
    let head = p.head();
    let yes = match p.at(0) {
        b'*' => {
            // "*" digit CR LF "$" digit, with bytes 1 and 5 masked out.
            let ok = p.len >= 9
                && head & 0x00FF_FFFF_00FF == lit(b"*\0\r\n$")
                && matches!(p.at(1), b'1'..=b'9')
                && p.at(5).is_ascii_digit();
            // The bulk string's length has 1 or 2 digits.
            let cr = if p.at(6).is_ascii_digit() { 7 } else { 6 };
            ok && cr + 2 < p.len
                && p.at(cr) == b'\r'
                && p.at(cr + 1) == b'\n'
                && p.at(cr + 2).is_ascii_alphabetic()
        }
        b'+' => {
            starts(head, b"+OK\r\n")
                || starts(head, b"+PONG\r\n")
                || (p.len >= 9 && head == lit(b"+QUEUED\r") && p.at(8) == b'\n')
        }
        b'-' => {
            starts(head, b"-ERR ")
                || starts(head, b"-NOAUTH ")
                || starts(head, b"-NOPERM ")
                || starts(head, b"-MOVED ")
                || starts(head, b"-ASK ")
                || starts(head, b"-BUSY ")
                || head == lit(b"-LOADING")
                || head == lit(b"-READONL")
                || head == lit(b"-WRONGTY")
                || head == lit(b"-WRONGPA")
        }
        _ => {
            // '$' and ':': -1, or 1..=5 digits; then CRLF.
            let digit = |i: usize| p.at(i).is_ascii_digit();
            let cr = if !digit(1) {
                1
            } else if !digit(2) {
                2
            } else if !digit(3) {
                3
            } else if !digit(4) {
                4
            } else if !digit(5) {
                5
            } else {
                6
            };
            starts(head, b"$-1\r\n")
                || starts(head, b":-1\r\n")
                || (cr > 1 && cr + 1 < p.len && p.at(cr) == b'\r' && p.at(cr + 1) == b'\n')
        }
    };
    if yes { PROTO_REDIS } else { PROTO_UNKNOWN }
}

/// AMQP protocol header, the first bytes a client sends (`amqp-declare-queue` of amqp-tools):
/// `AMQP` then 0-9-1 (`0 0 9 1`, RabbitMQ), 0-10 (`1 1 0 10`) or 1.0 (`0 1 0 0`, and `3 1 0 0`
/// for its SASL layer).
#[inline(always)]
fn amqp_header(p: &Payload) -> u8 {
    let head = p.head();
    let yes = head == lit(b"AMQP\x00\x00\x09\x01")
        || head == lit(b"AMQP\x01\x01\x00\x0a")
        || head == lit(b"AMQP\x00\x01\x00\x00")
        || head == lit(b"AMQP\x03\x01\x00\x00");
    if yes { PROTO_AMQP } else { PROTO_UNKNOWN }
}

/// AMQP 0-9-1 method frame (spec 4.2.3) on channel 0 or 1..=255: type 1, 32-bit size 4..65535,
/// then class and method: connection.start (10, 10; the server's first frame, version 0-9 next),
/// connection.start-ok (10, 11; the client's first frame after the header), basic.publish
/// (60, 40), basic.deliver (60, 60) and basic.consume (60, 20), the frames of connections
/// already open.
#[inline(always)]
fn amqp_frame(p: &Payload) -> u8 {
    // Bytes 0..3 (type, channel), 3..7 (size) and 7..11 (class, method), big-endian.
    let head = p.word(0);
    let size = p.be32(3);
    let class_method = p.be32(7);
    let yes = p.len >= 13
        && head & 0xFFFF == 1
        && (4..65536).contains(&size)
        && match class_method {
            0x000A_000A => p.at(11) == 0 && p.at(12) == 9,
            0x000A_000B | 0x003C_0028 | 0x003C_003C | 0x003C_0014 => true,
            _ => false,
        };
    if yes { PROTO_AMQP } else { PROTO_UNKNOWN }
}

/// A PostgreSQL server's first message after a startup (or an SSLRequest answered 'N'): an
/// authentication request, 'R', of length 8 (ok 0, Kerberos 2, cleartext 3, GSS 7, SSPI 9) or
/// 12 (MD5 5, with its salt), or longer for SASL (10), whose first mechanism name is in
/// capitals (SCRAM-SHA-256, OAUTHBEARER).
#[inline(always)]
fn postgres_auth(p: &Payload) -> u8 {
    let length = p.be32(1);
    let yes = p.len >= 10
        && match p.be32(5) {
            0 | 2 | 3 | 7 | 9 => length == 8,
            5 => length == 12,
            10 => length > 8 && length < 256 && p.at(9).is_ascii_uppercase(),
            _ => false,
        };
    if yes { PROTO_POSTGRES } else { PROTO_UNKNOWN }
}

/// A PostgreSQL client's first message (protocol 3.0, section 55.7): the StartupMessage, its
/// length 9..=10000 (10000 is the server's limit), version 3.0 (00 03 00 00), then a parameter
/// name in lower case (`user`, `database`, `_pq_.`); or the 8-byte SSLRequest (80877103) and
/// GSSENCRequest (80877104) that `psql` sends first by default, or the 16-byte CancelRequest
/// (80877102), each sent alone, so the payload is exactly that long.
#[inline(always)]
fn postgres_startup(p: &Payload) -> u8 {
    const SSL: u64 = lit(b"\x00\x00\x00\x08\x04\xd2\x16\x2f");
    const GSSENC: u64 = lit(b"\x00\x00\x00\x08\x04\xd2\x16\x30");
    const CANCEL: u64 = lit(b"\x00\x00\x00\x10\x04\xd2\x16\x2e");
    let head = p.head();
    let length = p.be32(0);
    let yes = ((head == SSL || head == GSSENC) && p.total == 8)
        || (head == CANCEL && p.total == 16)
        || (p.len >= 12
            && head >> 32 == 0x0000_0300
            && length > 8
            && length <= 10000
            && is_param_char(p.at(8))
            && is_param_char(p.at(9))
            && is_param_char(p.at(10))
            && is_param_char(p.at(11)));
    if yes { PROTO_POSTGRES } else { PROTO_UNKNOWN }
}

#[inline(always)]
fn is_param_char(c: u8) -> bool {
    c.is_ascii_lowercase() || c == b'_'
}

/// A Kafka request (header v1/v2, https://kafka.apache.org/protocol#protocol_messages): size,
/// api_key 0..=90, api_version 0..=20, a non-negative correlation_id and a client_id string of
/// 1..=255 bytes that fits the size, its first (up to 4) characters in [A-Za-z0-9._-]. The whole
/// request must be in the payload (a Produce longer than a segment is missed): without that, a
/// StartupMessage of Postgres with a damaged length reads as Metadata v0 from client "ostg...".
/// Clients start with ApiVersions (librdkafka/`kcat`: v3; kafka-python: v0) or Metadata;
/// connections already open carry Produce and Fetch. Null (-1) and empty client ids are not
/// accepted: they would leave a few zero bytes as the only evidence. Responses (size,
/// correlation_id, body) are not classified.
#[inline(always)]
fn kafka(p: &Payload) -> u8 {
    let size = p.be32(0) as usize;
    let id_len = p.at(13) as usize;
    let header_ok = p.len >= 15
        && p.at(4) == 0
        && p.at(5) <= 90
        && p.at(6) == 0
        && p.at(7) <= 20
        && p.at(8) < 0x80
        && p.at(12) == 0
        && id_len != 0
        && 10 + id_len <= size
        && size + 4 <= p.total;
    if !header_ok {
        return PROTO_UNKNOWN;
    }
    // The client id's first characters (as many as it has, up to 4), straight-line.
    let id_char = |i: usize| {
        let c = p.at(14 + i);
        i >= id_len
            || (14 + i < p.len && (c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-')))
    };
    if !(id_char(0) && id_char(1) && id_char(2) && id_char(3)) {
        return PROTO_UNKNOWN;
    }
    PROTO_KAFKA
}

/// MySQL/MariaDB connection start (https://dev.mysql.com/doc/dev/mysql-server/latest/
/// PAGE_PROTOCOL.html): a packet is a 3-byte little-endian length and a sequence id.
/// - The server's greeting (sequence 0): protocol 10, 22..=1024 bytes, a version string
///   starting `M.m` (`5.5.5-10.11.19-MariaDB-0+deb12u1`, `8.0.36`).
/// - The client's handshake response or SSLRequest (sequence 1): at least 32 bytes, capability
///   CLIENT_PROTOCOL_41, a character set, and zero filler bytes 13..24 (MySQL's filler is 23
///   bytes; MariaDB keeps its extended capabilities in the last 4).
#[inline(always)]
fn mysql(p: &Payload) -> u8 {
    let head = p.word(0);
    let length = head as u32 & 0xFF_FFFF;
    let greeting = head >> 24 & 0xFFFF == 0x0A00
        && p.len >= 9
        && (22..=1024).contains(&length)
        && p.at(5).is_ascii_digit()
        && ((p.at(6) == b'.' && p.at(7).is_ascii_digit())
            || (p.at(6).is_ascii_digit() && p.at(7) == b'.' && p.at(8).is_ascii_digit()));
    let response = p.at(3) == 1
        && p.len >= 24
        && length >= 32
        && p.at(5) & 0x02 != 0
        && p.at(12) != 0
        && p.word(1) >> 40 == 0
        && p.word(2) == 0;
    if greeting || response {
        PROTO_MYSQL
    } else {
        PROTO_UNKNOWN
    }
}

/// A query of a connection already open (what Datadog also classifies): a PostgreSQL simple
/// query, 'Q' and a 32-bit length, or a MySQL COM_QUERY (3) or COM_STMT_PREPARE (22) packet of
/// sequence 0 (after MySQL 8's query attribute counts `00 01` when present), the whole message
/// in the payload (a query longer than a segment is missed; without that, a MySQL COM_QUERY
/// whose first length byte is 'Q' would read as a Postgres query). The SQL text must start with
/// SELE(CT), INSE(RT), UPDA(TE), DELE(TE), BEGI(N), COMM(IT), SET, SHOW, WITH or CREA(TE), in any
/// case.
#[inline(always)]
fn sql_query(p: &Payload) -> u8 {
    let pg_length = p.be32(1) as usize;
    let my_length = (p.le32(0) & 0xFF_FFFF) as usize;
    let protocol = if p.at(0) == b'Q' && p.at(1) == 0 && pg_length >= 8 && p.total > pg_length {
        PROTO_POSTGRES
    } else if p.at(3) == 0
        && matches!(p.at(4), 0x03 | 0x16)
        && my_length >= 5
        && p.total >= my_length + 4
    {
        PROTO_MYSQL
    } else {
        return PROTO_UNKNOWN;
    };
    // The text's first 4 bytes, upper case (`& 0xDF` gives an ASCII capital iff the byte was an
    // ASCII letter; it turns a space into 0).
    let at7 = protocol == PROTO_MYSQL && p.at(5) == 0 && p.at(6) == 1;
    let text = if at7 { p.le32(7) } else { p.le32(5) } & 0xDFDF_DFDF;
    let start = if at7 { 7 } else { 5 };
    const SELECT: u64 = lit(b"SELE");
    const INSERT: u64 = lit(b"INSE");
    const UPDATE: u64 = lit(b"UPDA");
    const DELETE: u64 = lit(b"DELE");
    const BEGIN: u64 = lit(b"BEGI");
    const COMMIT: u64 = lit(b"COMM");
    const SET: u64 = lit(b"SET\0");
    const SHOW: u64 = lit(b"SHOW");
    const WITH: u64 = lit(b"WITH");
    const CREATE: u64 = lit(b"CREA");
    let yes = p.len >= start + 4
        && matches!(
            u64::from(text),
            SELECT | INSERT | UPDATE | DELETE | BEGIN | COMMIT | SET | SHOW | WITH | CREATE
        );
    if yes { protocol } else { PROTO_UNKNOWN }
}

/// A server's first HTTP/2 frame (RFC 9113 3.4, 4.1, 6.5): SETTINGS (4), flags 0 (not an ACK),
/// stream 0, a length that is a multiple of 6 up to 20 settings, and a first setting id in
/// 1..=16 (nginx with `listen ... http2`, python3-grpcio). Datadog classifies it too.
#[inline(always)]
fn http2_settings(p: &Payload) -> u8 {
    let head = p.word(0);
    let length = p.be32(0) >> 8;
    let ok = p.len >= 9
        && head >> 24 & 0xFFFF == 0x0004
        && head >> 40 == 0
        && p.at(8) == 0
        && length.is_multiple_of(6)
        && length <= 120
        && (length == 0 || (p.len >= 11 && p.at(9) == 0 && matches!(p.at(10), 1..=16)));
    if ok { PROTO_HTTP2 } else { PROTO_UNKNOWN }
}

/// An HTTP/2 response's HEADERS frame (RFC 9113 6.2, RFC 7541): type 1, END_HEADERS without
/// padding or priority, an odd stream below 65536, its first field an indexed `:status`
/// (static entries 8..=14, 0x88..=0x8E). Then gRPC when the second field is `content-type:
/// application/grpc`, its name either indexed (0x5F, static entry 31) and its value
/// Huffman-coded (`1d 75 d0 62 0d 26 3d 4c 4d 65 64` is exactly "application/grpc", checked with
/// the hpack Python library), or a literal name (`@\x0ccontent-type`) and a plain value, as
/// python3-grpcio (grpc-core) writes them (bytes 12, 19, 20, 23 of the name and 25, 36..41 of
/// the value are compared: `c`, `-t`, `e`, `a`, `/grpc`).
///
/// `None` when not such a frame, else the API layer (gRPC or unknown).
#[inline(always)]
fn http2_headers(p: &Payload) -> Option<u8> {
    let head = p.word(0);
    let length = p.be32(0) >> 8;
    let ok = p.len >= 10
        && (1..=16384).contains(&length)
        && matches!(head >> 24 & 0xFFFF, 0x0401 | 0x0501)
        && head >> 40 & 0xFFFF == 0
        && p.at(8) & 1 == 1
        && matches!(p.at(9), 0x88..=0x8E);
    if !ok {
        return None;
    }
    let grpc = match p.at(10) {
        0x5F => {
            p.len >= 23
                && p.at(11) >= 0x80 | 11
                && p.word_at(12) == lit(&[0x1d, 0x75, 0xd0, 0x62, 0x0d, 0x26, 0x3d, 0x4c])
                && p.word_at(20) & mask(3) == lit(&[0x4d, 0x65, 0x64])
        }
        0x40 | 0x00 | 0x10 => {
            p.len >= 41
                && p.at(11) == 12
                && p.at(12) == b'c'
                && p.at(19) == b'-'
                && p.at(20) == b't'
                && p.at(23) == b'e'
                && matches!(p.at(24), 16..=0x7F)
                && p.at(25) == b'a'
                && p.le32(36) == lit(b"/grp") as u32
                && p.at(40) == b'c'
        }
        _ => false,
    };
    Some(if grpc { PROTO_GRPC } else { PROTO_UNKNOWN })
}

/// MongoDB wire protocol (https://www.mongodb.com/docs/manual/reference/mongodb-wire-protocol/):
/// a little-endian header of messageLength (26..=48 MB here), requestID, responseTo and opCode,
/// then by opCode:
/// - OP_MSG (2013), requests and replies: flagBits with only checksumPresent, moreToCome and
///   exhaustAllowed, then a body section (kind 0): a BSON document of 5 bytes or more that fits,
///   whose first element has a BSON type 1..=19. (A document sequence first, kind 1, is legal
///   but drivers put the body first.)
/// - OP_QUERY (2004) on `admin.$cmd`, responseTo 0, flags in bits 1..=7: the `isMaster`/`hello`
///   drivers send first.
///
/// Datadog also accepts OP_REPLY when it saw the request, OP_COMPRESSED (compression is only
/// agreed during the handshake) and the legacy OP_UPDATE, OP_INSERT, OP_DELETE and OP_GET_MORE
/// (removed in MongoDB 5.1 and 6.0), and requires a non-negative requestID: pymongo's request
/// ids are random 32-bit values, negative half of the time, so that check is not made here.
#[inline(always)]
fn mongo(p: &Payload) -> u8 {
    let length = p.le32(0);
    let header = p.word(1);
    let body = p.word(2);
    let ok = p.len >= 26
        && (26..=48_000_000).contains(&length)
        && match header >> 32 {
            2013 => {
                let doc_len = p.le32(21);
                body as u32 & !0x0001_0003 == 0
                    && p.at(20) == 0
                    && doc_len >= 5
                    && doc_len <= length - 21
                    && matches!(p.at(25), 1..=19)
            }
            2004 => {
                p.len >= 28
                    && header as u32 == 0
                    && body as u32 & !0xFE == 0
                    && p.word_at(20) == lit(b"admin.$c")
            }
            _ => false,
        };
    if ok { PROTO_MONGO } else { PROTO_UNKNOWN }
}
