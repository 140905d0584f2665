//! The bridge from what the kernel reports about a connection to [`ConnectionStats`].
//!
//! The eBPF side fills a [`KernelRecord`] field by field from its `#[repr(C)]` structs and calls
//! [`KernelRecord::into_stats`]; every userspace rule of decoding (cookie re-hash, unknown
//! direction, ephemeral port, TCP flags, failure) lives here, once.

use crate::model::{
    connection::{ConnectionStats, EndReason},
    cookie::connection_cookie,
    counters::StatCounters,
    ephemeral::EphemeralPortRange,
    tuple::{ConnectionTuple, Direction},
};

/// TCP-only kernel fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KernelTcpStats {
    /// Retransmitted segments.
    pub retransmits: u32,
    /// Smoothed RTT, µs.
    pub srtt_us: u32,
    /// RTT variance, µs.
    pub rttvar_us: u32,
    /// Seen established after the tracer started.
    pub established: bool,
    /// Seen closed.
    pub closed: bool,
    /// errno of a failure (ECONNREFUSED, ...), 0 if none.
    pub failure_errno: u16,
}

/// Everything the kernel reports about one connection entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelRecord {
    /// Identity (IPv4-mapped IPv6 addresses already folded to IPv4).
    pub tuple: ConnectionTuple,
    /// Direction as the kernel knows it.
    pub direction: Direction,
    /// The kernel's 64-bit socket cookie.
    pub kernel_cookie: u64,
    /// Creation time, kernel monotonic ns.
    pub created_ns: u64,
    /// Last update time, kernel monotonic ns.
    pub last_update_ns: u64,
    /// Payload bytes sent.
    pub sent_bytes: u64,
    /// Payload bytes received.
    pub recv_bytes: u64,
    /// Packets sent.
    pub sent_packets: u64,
    /// Packets received.
    pub recv_packets: u64,
    /// UDP: traffic was seen both ways.
    pub is_assured: bool,
    /// TCP fields (`None` for UDP).
    pub tcp: Option<KernelTcpStats>,
    /// How the connection ended, used when it is decoded as closed.
    pub end_reason: EndReason,
}

impl KernelRecord {
    /// Decodes into a [`ConnectionStats`]: re-hashes the cookie, maps an unknown direction to
    /// outgoing, classifies the local port with `ports`, and marks it closed if `closed`.
    pub fn into_stats(self, ports: &EphemeralPortRange, closed: bool) -> ConnectionStats {
        let direction = match self.direction {
            Direction::Unknown => Direction::Outgoing,
            other => other,
        };
        let cookie = connection_cookie(self.kernel_cookie, &self.tuple);
        let mut stats = ConnectionStats::new(self.tuple, direction, cookie);
        let tcp = self.tcp.unwrap_or_default();
        stats.monotonic = StatCounters {
            sent_bytes: self.sent_bytes,
            recv_bytes: self.recv_bytes,
            sent_packets: self.sent_packets,
            recv_packets: self.recv_packets,
            retransmits: tcp.retransmits,
            tcp_established: u32::from(tcp.established),
            tcp_closed: u32::from(tcp.closed),
        };
        stats.created_ns = self.created_ns;
        stats.last_update_ns = self.last_update_ns;
        stats.rtt_us = tcp.srtt_us;
        stats.rtt_var_us = tcp.rttvar_us;
        stats.sport_is_ephemeral = ports.classify(self.tuple.sport);
        stats.is_closed = closed;
        stats.end_reason = closed.then_some(self.end_reason);
        stats.is_assured = self.is_assured;
        if tcp.failure_errno != 0 {
            stats.tcp_failures.record(tcp.failure_errno, 1);
        }
        stats
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;
    use crate::model::{EphemeralPort, Protocol};

    fn record() -> KernelRecord {
        KernelRecord {
            tuple: ConnectionTuple {
                src: IpAddr::V4(Ipv4Addr::LOCALHOST),
                dst: IpAddr::V4(Ipv4Addr::LOCALHOST),
                sport: 40000,
                dport: 80,
                pid: 3,
                netns: 4,
                protocol: Protocol::Tcp,
            },
            direction: Direction::Unknown,
            kernel_cookie: 99,
            created_ns: 1,
            last_update_ns: 2,
            sent_bytes: 10,
            recv_bytes: 20,
            sent_packets: 1,
            recv_packets: 2,
            is_assured: false,
            tcp: Some(KernelTcpStats {
                established: true,
                failure_errno: 111,
                ..Default::default()
            }),
            end_reason: EndReason::Expired,
        }
    }

    #[test]
    fn decoding_maps_unknown_direction_to_outgoing_and_fills_derived_fields() {
        let stats = record().into_stats(&EphemeralPortRange::default(), true);
        assert_eq!(stats.direction, Direction::Outgoing);
        assert_eq!(stats.cookie, connection_cookie(99, &record().tuple));
        assert_eq!(stats.sport_is_ephemeral, EphemeralPort::Ephemeral);
        assert_eq!(stats.monotonic.tcp_established, 1);
        assert_eq!(
            stats.tcp_failures.iter().collect::<Vec<_>>(),
            vec![(111, 1)]
        );
        assert!(stats.is_closed);
        assert_eq!(stats.end_reason, Some(EndReason::Expired));
        assert!(stats.last.is_zero());
        let open = record().into_stats(&EphemeralPortRange::default(), false);
        assert_eq!(open.end_reason, None);
    }
}
