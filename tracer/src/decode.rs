//! The one decoder of kernel records (`tracer_common::conn`, `tracer_common::packet`,
//! `tracer_common::http`): ring-buffer bytes into records, records into the userspace model,
//! and the rule for when an open record may be reported.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use tracer_common::conn::{
    AF_INET6, ClosedConn, ConnStats, DIRECTION_INCOMING, FLAG_CLOSED, FLAG_CLOSED_BY_SWEEP,
    FLAG_ESTABLISHED, FLAG_EXPIRED, FLAG_PREEXISTING, IPPROTO_TCP, PROTOCOL_API,
    PROTOCOL_APPLICATION, PROTOCOL_ENCRYPTION,
};

use tracer_common::{
    http::{HTTP_TRANSACTION_LEN, HttpTransaction, RECORD_KIND_OFFSET},
    packet::{PACKET_HEADER_LEN, PacketHeader},
};

use crate::model::{
    BeforeStart, Comm, ConnectionStats, ConnectionTuple, Direction, EndReason, EphemeralPortRange,
    Protocol, ProtocolStack, StatCounters, connection_cookie,
};

/// Whether an open kernel entry's identity is final, so that it may be reported before it
/// closes. The identity of a connection is its tuple, pid included, and it must never change
/// between the first report and the close; but the kernel completes some of it after the entry
/// is created: an outgoing connect gets its source port after SYN_SENT, an accepted socket gets
/// its owner when a process accepts or first uses it (the handshake ran in softirq, pid 0). So
/// an open entry is held back until its tuple has both ports, a remote address and an owner;
/// if it closes before that, it is reported once, at its close, as it is then. Past this point
/// the kernel side never changes a tuple: the pid is only ever set from 0, a port only from 0.
pub fn identity_complete(stats: &ConnStats) -> bool {
    let t = &stats.tuple;
    let has_remote = t.daddr != [0u8; 16];
    t.pid != 0 && t.sport != 0 && t.dport != 0 && (has_remote || t.protocol != IPPROTO_TCP)
}

/// How a closed record ended, from the flags the kernel or the tracer set.
fn end_reason(flags: u8) -> EndReason {
    if flags & FLAG_EXPIRED != 0 {
        EndReason::Expired
    } else if flags & FLAG_CLOSED_BY_SWEEP != 0 {
        EndReason::SocketGone
    } else {
        EndReason::Closed
    }
}

/// The model tuple of a kernel record.
pub fn tuple(stats: &ConnStats) -> ConnectionTuple {
    let t = &stats.tuple;
    let ip = |bytes: [u8; 16]| -> IpAddr {
        if t.family == AF_INET6 {
            IpAddr::V6(Ipv6Addr::from(bytes))
        } else {
            let [a, b, c, d, ..] = bytes;
            IpAddr::V4(Ipv4Addr::new(a, b, c, d))
        }
    };
    ConnectionTuple {
        src: ip(t.saddr),
        dst: ip(t.daddr),
        sport: t.sport,
        dport: t.dport,
        pid: t.pid,
        netns: t.netns,
        protocol: if t.protocol == IPPROTO_TCP {
            Protocol::Tcp
        } else {
            Protocol::Udp
        },
    }
}

/// A kernel record as a [`ConnectionStats`]: the cookie re-hashed with the tuple, an unknown
/// direction reported as outgoing, the local port classified with `ports`, TCP flags and the
/// failure errno as counters, the owner's cgroup id, the protocol stack the kernel classified
/// (its codes passed through), and, if `closed`, the end and its reason.
pub fn connection(stats: &ConnStats, ports: &EphemeralPortRange, closed: bool) -> ConnectionStats {
    let tuple = tuple(stats);
    let direction = match stats.direction {
        DIRECTION_INCOMING => Direction::Incoming,
        // DIRECTION_OUTGOING, and unknown (a connection that existed before the tracer).
        _ => Direction::Outgoing,
    };
    let is_tcp = tuple.protocol == Protocol::Tcp;
    let tcp_flag = |flag: u8| u32::from(is_tcp && stats.flags & flag != 0);
    let cookie = connection_cookie(stats.cookie, &tuple);
    let mut conn = ConnectionStats::new(tuple, direction, cookie);
    conn.monotonic = StatCounters {
        sent_bytes: stats.sent_bytes,
        recv_bytes: stats.recv_bytes,
        sent_packets: stats.sent_packets,
        recv_packets: stats.recv_packets,
        retransmits: if is_tcp { stats.retransmits } else { 0 },
        tcp_established: tcp_flag(FLAG_ESTABLISHED),
        tcp_closed: tcp_flag(FLAG_CLOSED),
    };
    conn.created_ns = stats.created_ns;
    conn.last_update_ns = stats.updated_ns;
    if is_tcp {
        conn.rtt_us = stats.rtt_us;
        conn.rtt_var_us = stats.rtt_var_us;
        if stats.failure != 0 {
            conn.tcp_failures.record(stats.failure, 1);
        }
    }
    conn.sport_is_ephemeral = ports.classify(conn.tuple.sport);
    conn.is_closed = closed;
    conn.end_reason = closed.then(|| end_reason(stats.flags));
    conn.is_assured = stats.sent_packets > 0 && stats.recv_packets > 0;
    conn.cgroup_id = stats.cgroup_id;
    conn.comm = Comm::new(stats.comm);
    conn.protocol_stack = protocol_stack(stats);
    conn.before_start = (stats.flags & FLAG_PREEXISTING != 0).then(|| {
        let b = &stats.before_start;
        BeforeStart {
            sent_bytes: b.sent_bytes,
            recv_bytes: b.recv_bytes,
            sent_packets: u64::from(b.sent_packets),
            recv_packets: u64::from(b.recv_packets),
            retransmits: b.retransmits,
        }
    });
    conn
}

/// The kernel's `ConnStats::protocol_stack` bytes as the model's layers.
fn protocol_stack(stats: &ConnStats) -> ProtocolStack {
    let layer = |i: usize| stats.protocol_stack.get(i).copied().unwrap_or(0);
    ProtocolStack {
        api: layer(PROTOCOL_API),
        application: layer(PROTOCOL_APPLICATION),
        encryption: layer(PROTOCOL_ENCRYPTION),
    }
}

/// A ring-buffer record as a [`ClosedConn`]; `None` for a record of the wrong size (cannot
/// happen with a matching object; such records are skipped, and counted, rather than misread).
pub(crate) fn closed_record(bytes: &[u8]) -> Option<ClosedConn> {
    if bytes.len() < std::mem::size_of::<ClosedConn>() {
        return None;
    }
    // SAFETY: ClosedConn is plain old data (any bit pattern is valid) and the slice holds at
    // least size_of::<ClosedConn>() bytes; read_unaligned has no alignment requirement.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<ClosedConn>()) })
}

/// A packet-capture ring record (`NT_PACKETS`) as its header and its captured payload; `None`
/// when the record is shorter than a header or than the `captured_len` bytes the header
/// announces (a mismatched object or a corrupt record: never read past the slice). Bytes past
/// `captured_len` (ring padding) are ignored.
pub fn packet_record(record: &[u8]) -> Option<(PacketHeader, &[u8])> {
    let payload = record.get(PACKET_HEADER_LEN..)?;
    // SAFETY: PacketHeader is plain old data (any bit pattern is valid), the slice holds at
    // least PACKET_HEADER_LEN bytes (checked above) and read_unaligned has no alignment
    // requirement.
    let header = unsafe { std::ptr::read_unaligned(record.as_ptr().cast::<PacketHeader>()) };
    let len = usize::try_from(header.captured_len).ok()?;
    Some((header, payload.get(..len)?))
}

/// The kind of a capture ring record (`PACKET_KIND_DNS`, `PACKET_KIND_HTTP`): the byte every
/// record kind keeps at [`RECORD_KIND_OFFSET`]; `None` for a record too short to have one.
pub fn record_kind(record: &[u8]) -> Option<u8> {
    record.get(RECORD_KIND_OFFSET).copied()
}

/// An HTTP ring record as its [`HttpTransaction`]; `None` when the record is shorter than one
/// (a mismatched object or a corrupt record: never read past the slice). Bytes past the
/// transaction (ring padding) are ignored. The fields are not checked here: any bit pattern is
/// a transaction, and the HTTP source judges (and counts) the values.
pub fn http_record(record: &[u8]) -> Option<HttpTransaction> {
    if record.len() < HTTP_TRANSACTION_LEN {
        return None;
    }
    // SAFETY: HttpTransaction is plain old data (integers and byte arrays, explicit padding:
    // any bit pattern is valid), the slice holds at least HTTP_TRANSACTION_LEN bytes (checked
    // above) and read_unaligned has no alignment requirement.
    Some(unsafe { std::ptr::read_unaligned(record.as_ptr().cast::<HttpTransaction>()) })
}

#[cfg(test)]
mod tests {
    use tracer_common::conn::{AF_INET, ConnTuple, DIRECTION_OUTGOING, IPPROTO_UDP};

    use super::*;
    use crate::model::EphemeralPort;

    #[test]
    fn before_start_is_reported_only_for_connections_found_at_start() {
        let mut raw = ConnStats {
            tuple: ConnTuple {
                sport: 40000,
                dport: 80,
                family: AF_INET,
                protocol: IPPROTO_TCP,
                pid: 3,
                ..ConnTuple::default()
            },
            sent_bytes: 5,
            before_start: tracer_common::conn::BeforeStart {
                sent_bytes: 1000,
                recv_bytes: 2000,
                sent_packets: 10,
                recv_packets: 20,
                retransmits: 1,
                _pad: 0,
            },
            ..ConnStats::default()
        };
        let ports = EphemeralPortRange::default();
        // Without the flag the field is not trusted (it is zero for every other entry anyway).
        assert_eq!(connection(&raw, &ports, false).before_start, None);
        raw.flags = FLAG_PREEXISTING;
        let conn = connection(&raw, &ports, false);
        assert_eq!(
            conn.before_start,
            Some(BeforeStart {
                sent_bytes: 1000,
                recv_bytes: 2000,
                sent_packets: 10,
                recv_packets: 20,
                retransmits: 1,
            })
        );
        // The counters proper stay the ones since the start.
        assert_eq!(conn.monotonic.sent_bytes, 5);
    }

    #[test]
    fn unknown_direction_is_outgoing_and_derived_fields_are_filled() {
        let mut raw = ConnStats {
            tuple: ConnTuple {
                sport: 40000,
                dport: 80,
                family: AF_INET,
                protocol: IPPROTO_TCP,
                pid: 3,
                netns: 4,
                ..ConnTuple::default()
            },
            cookie: 99,
            created_ns: 1,
            updated_ns: 2,
            flags: FLAG_ESTABLISHED | FLAG_EXPIRED,
            failure: 111,
            cgroup_id: 77,
            comm: *b"curl\0\0\0\0\0\0\0\0\0\0\0\0",
            protocol_stack: [1, 2, 0],
            ..ConnStats::default()
        };
        raw.tuple.saddr[..4].copy_from_slice(&[127, 0, 0, 1]);
        raw.tuple.daddr[..4].copy_from_slice(&[127, 0, 0, 1]);
        let conn = connection(&raw, &EphemeralPortRange::default(), true);
        assert_eq!(conn.direction, Direction::Outgoing);
        assert_eq!(conn.cookie, connection_cookie(99, &conn.tuple));
        assert_eq!(conn.sport_is_ephemeral, EphemeralPort::Ephemeral);
        assert_eq!(conn.monotonic.tcp_established, 1);
        assert_eq!(conn.tcp_failures.iter().collect::<Vec<_>>(), vec![(111, 1)]);
        assert_eq!(conn.end_reason, Some(EndReason::Expired));
        assert_eq!(conn.cgroup_id, 77);
        assert_eq!(conn.comm.to_string(), "curl");
        assert_eq!(
            conn.protocol_stack,
            ProtocolStack {
                api: 1,
                application: 2,
                encryption: 0
            }
        );
        assert!(conn.last.is_zero());
        let open = connection(&raw, &EphemeralPortRange::default(), false);
        assert_eq!((open.is_closed, open.end_reason), (false, None));
    }

    fn packet_bytes(header: &PacketHeader, payload: &[u8]) -> Vec<u8> {
        // SAFETY: plain old data viewed as bytes.
        let head = unsafe {
            std::slice::from_raw_parts((&raw const *header).cast::<u8>(), PACKET_HEADER_LEN)
        };
        [head, payload].concat()
    }

    #[test]
    fn packet_records_are_bounds_checked() {
        let header = PacketHeader {
            timestamp_ns: 5,
            cookie: 0,
            cgroup_id: 0,
            seq: 0,
            netns: 0,
            payload_len: 3,
            captured_len: 3,
            saddr: [0; 16],
            daddr: [0; 16],
            sport: 53,
            dport: 4000,
            family: 2,
            protocol: 17,
            direction: 1,
            kind: 1,
            tcp_flags: 0,
            _pad: [0; 6],
        };
        let bytes = packet_bytes(&header, b"abcXX");
        let (h, payload) = packet_record(&bytes).unwrap();
        assert_eq!((h, payload), (header, &b"abc"[..]));
        // Unaligned: the same record one byte into a buffer.
        let mut shifted = vec![0u8];
        shifted.extend_from_slice(&bytes);
        assert_eq!(packet_record(&shifted[1..]).unwrap().1, b"abc");
        assert!(packet_record(&bytes[..PACKET_HEADER_LEN + 2]).is_none());
        assert!(packet_record(&bytes[..PACKET_HEADER_LEN - 1]).is_none());
        assert!(packet_record(&[]).is_none());
        let huge = PacketHeader {
            captured_len: u32::MAX,
            ..header
        };
        assert!(packet_record(&packet_bytes(&huge, b"abc")).is_none());
    }

    #[test]
    fn http_records_are_bounds_checked_and_carry_their_kind_where_packets_do() {
        use tracer_common::{http::PACKET_KIND_HTTP, packet::PACKET_KIND_DNS};
        let mut tx = HttpTransaction::EMPTY;
        tx.status = 200;
        tx.path[0] = b'/';
        // SAFETY: plain old data viewed as bytes.
        let bytes = unsafe {
            std::slice::from_raw_parts((&raw const tx).cast::<u8>(), HTTP_TRANSACTION_LEN)
        };
        assert_eq!(http_record(bytes), Some(tx));
        let mut padded = vec![0xAAu8];
        padded.extend_from_slice(bytes);
        padded.extend_from_slice(&[1, 2, 3]);
        assert_eq!(http_record(&padded[1..]), Some(tx));
        assert_eq!(http_record(&bytes[..HTTP_TRANSACTION_LEN - 1]), None);
        assert_eq!(http_record(&[]), None);
        assert_eq!(record_kind(bytes), Some(PACKET_KIND_HTTP));
        let header = PacketHeader {
            kind: PACKET_KIND_DNS,
            ..zero_header()
        };
        assert_eq!(
            record_kind(&packet_bytes(&header, b"")),
            Some(PACKET_KIND_DNS)
        );
        assert_eq!(record_kind(&bytes[..RECORD_KIND_OFFSET]), None);
    }

    fn zero_header() -> PacketHeader {
        PacketHeader {
            timestamp_ns: 0,
            cookie: 0,
            cgroup_id: 0,
            seq: 0,
            netns: 0,
            payload_len: 0,
            captured_len: 0,
            saddr: [0; 16],
            daddr: [0; 16],
            sport: 0,
            dport: 0,
            family: 0,
            protocol: 0,
            direction: 0,
            kind: 0,
            tcp_flags: 0,
            _pad: [0; 6],
        }
    }

    #[test]
    fn ring_records_shorter_than_a_record_are_refused() {
        let record = ClosedConn::default();
        // SAFETY: plain old data viewed as bytes.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (&raw const record).cast::<u8>(),
                std::mem::size_of::<ClosedConn>(),
            )
        };
        assert_eq!(closed_record(bytes), Some(record));
        assert_eq!(closed_record(&bytes[1..]), None);
        assert_eq!(closed_record(&[]), None);
    }

    #[test]
    fn ipv4_udp_record_decodes_with_bytes_and_direction() {
        let mut raw = ConnStats {
            tuple: ConnTuple {
                sport: 5000,
                dport: 53,
                family: AF_INET,
                protocol: IPPROTO_UDP,
                netns: 7,
                pid: 42,
                ..ConnTuple::default()
            },
            cookie: 9,
            sent_bytes: 100,
            recv_bytes: 200,
            sent_packets: 1,
            recv_packets: 2,
            direction: DIRECTION_OUTGOING,
            ..ConnStats::default()
        };
        raw.tuple.saddr[..4].copy_from_slice(&[10, 0, 0, 1]);
        raw.tuple.daddr[..4].copy_from_slice(&[10, 0, 0, 2]);
        let conn = connection(&raw, &EphemeralPortRange::default(), true);
        assert_eq!(conn.tuple.src, "10.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(conn.tuple.dst, "10.0.0.2".parse::<IpAddr>().unwrap());
        assert_eq!(conn.tuple.protocol, Protocol::Udp);
        assert_eq!(conn.tuple.pid, 42);
        assert_eq!(conn.monotonic.sent_bytes, 100);
        assert_eq!(conn.monotonic.recv_packets, 2);
        assert_eq!(conn.direction, Direction::Outgoing);
        assert!(conn.is_closed);
        assert!(conn.is_assured);
    }

    #[test]
    fn tcp_flags_and_failure_survive_decoding() {
        let raw = ConnStats {
            tuple: ConnTuple {
                family: AF_INET6,
                protocol: IPPROTO_TCP,
                ..ConnTuple::default()
            },
            flags: FLAG_ESTABLISHED | FLAG_CLOSED,
            failure: 104,
            retransmits: 3,
            rtt_us: 50,
            ..ConnStats::default()
        };
        let conn = connection(&raw, &EphemeralPortRange::default(), true);
        assert!(conn.tuple.src.is_ipv6());
        assert_eq!(conn.monotonic.tcp_established, 1);
        assert_eq!(conn.monotonic.tcp_closed, 1);
        assert_eq!(conn.monotonic.retransmits, 3);
        assert_eq!(conn.rtt_us, 50);
        assert_eq!(conn.tcp_failures.iter().collect::<Vec<_>>(), vec![(104, 1)]);
    }
}
