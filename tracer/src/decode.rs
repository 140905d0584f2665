//! Kernel records (`tracer_common::conn`) into the userspace model.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use tracer_common::conn::{
    AF_INET6, ConnStats, DIRECTION_INCOMING, DIRECTION_OUTGOING, FLAG_CLOSED, FLAG_CLOSED_BY_SWEEP,
    FLAG_ESTABLISHED, FLAG_EXPIRED, IPPROTO_TCP,
};

use crate::model::{
    ConnectionStats, ConnectionTuple, Direction, EndReason, EphemeralPortRange, KernelRecord,
    KernelTcpStats, Protocol,
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

/// A kernel record as a [`ConnectionStats`] (cookie re-hashed, derived fields filled).
pub fn connection(stats: &ConnStats, ports: &EphemeralPortRange, closed: bool) -> ConnectionStats {
    let tuple = tuple(stats);
    let tcp = (tuple.protocol == Protocol::Tcp).then_some(KernelTcpStats {
        retransmits: stats.retransmits,
        srtt_us: stats.rtt_us,
        rttvar_us: stats.rtt_var_us,
        established: stats.flags & FLAG_ESTABLISHED != 0,
        closed: stats.flags & FLAG_CLOSED != 0,
        failure_errno: stats.failure,
    });
    let mut conn = KernelRecord {
        tuple,
        direction: match stats.direction {
            DIRECTION_INCOMING => Direction::Incoming,
            DIRECTION_OUTGOING => Direction::Outgoing,
            _ => Direction::Unknown,
        },
        kernel_cookie: stats.cookie,
        created_ns: stats.created_ns,
        last_update_ns: stats.updated_ns,
        sent_bytes: stats.sent_bytes,
        recv_bytes: stats.recv_bytes,
        sent_packets: stats.sent_packets,
        recv_packets: stats.recv_packets,
        is_assured: stats.sent_packets > 0 && stats.recv_packets > 0,
        tcp,
        end_reason: end_reason(stats.flags),
    }
    .into_stats(ports, closed);
    conn.cgroup_id = stats.cgroup_id;
    conn
}

#[cfg(test)]
mod tests {
    use tracer_common::conn::{AF_INET, ConnTuple, IPPROTO_UDP};

    use super::*;

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
