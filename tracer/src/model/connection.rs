//! One connection as handed to a client: identity, counters and enrichment.

use std::{net::IpAddr, sync::Arc};

use crate::model::{
    comm::Comm,
    counters::StatCounters,
    dns::{DnsKey, DomainStats},
    ephemeral::EphemeralPort,
    nat::IpTranslation,
    protocol::ProtocolStack,
    tuple::{ConnectionTuple, Direction},
    via::Via,
};

/// Container ids of the two ends, when known.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct ContainerIds {
    /// Container of the local process.
    pub source: Option<Arc<str>>,
    /// Container of the remote end, when it is local and resolved.
    pub dest: Option<Arc<str>>,
}

/// TCP failures by errno (ECONNRESET 104, ETIMEDOUT 110, ECONNREFUSED 111, ...). One kernel
/// record carries at most one; aggregated connections may carry several. Kept as a small sorted
/// vector: it is empty (and allocation-free) for almost every connection.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct TcpFailures(Vec<(u16, u32)>);

impl TcpFailures {
    /// Records `count` failures with `errno`.
    pub fn record(&mut self, errno: u16, count: u32) {
        match self.0.binary_search_by_key(&errno, |(e, _)| *e) {
            Ok(pos) => {
                if let Some((_, c)) = self.0.get_mut(pos) {
                    *c = c.saturating_add(count);
                }
            }
            Err(pos) => self.0.insert(pos, (errno, count)),
        }
    }

    /// Adds every failure of `other`.
    pub fn merge(&mut self, other: &Self) {
        for (errno, count) in &other.0 {
            self.record(*errno, *count);
        }
    }

    /// Whether there is no failure.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `(errno, count)` pairs, by errno.
    pub fn iter(&self) -> impl Iterator<Item = (u16, u32)> + '_ {
        self.0.iter().copied()
    }
}

/// How a closed connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum EndReason {
    /// The kernel saw the socket (or the TCP connection) close.
    #[default]
    Closed,
    /// The flow's socket no longer exists and the kernel did not end the flow itself (an
    /// unconnected UDP flow past its socket's peer list): the tracer ended it at read time.
    SocketGone,
    /// The flow idled out under the expiry rules (UDP timeouts; TCP idle with its process gone).
    Expired,
}

/// What the kernel had counted on a connection that existed before the tracer started, at the
/// moment the start-up walk found it ([`ConnectionStats::before_start`]). The connection's own
/// counters ([`ConnectionStats::monotonic`], [`ConnectionStats::last`]) count from the start
/// only; add these to get its lifetime totals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BeforeStart {
    /// TCP: payload bytes sent, each once (`tcpi_bytes_sent - tcpi_bytes_retrans`). Bytes
    /// still queued unsent at the start are in neither this nor the counters from the start.
    pub sent_bytes: u64,
    /// TCP: payload bytes received (`tcpi_bytes_received`, less the peer's FIN which it counts
    /// as a byte).
    pub recv_bytes: u64,
    /// TCP: segments sent (`tcpi_segs_out`).
    pub sent_packets: u64,
    /// TCP: segments received (`tcpi_segs_in`).
    pub recv_packets: u64,
    /// TCP: retransmitted segments (`tcpi_total_retrans`).
    pub retransmits: u32,
}

/// One connection: the record the kernel side decodes and the state pipeline hands to clients.
///
/// Only [`ConnectionStats::last`] is meant to be shipped: it holds what happened since the same
/// client's previous call. [`ConnectionStats::monotonic`] holds totals since the kernel entry
/// was created.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectionStats {
    /// Identity.
    pub tuple: ConnectionTuple,
    /// Who opened the connection.
    pub direction: Direction,
    /// 64-bit cookie, [`crate::model::connection_cookie`] of the kernel cookie and the tuple.
    pub cookie: u64,
    /// Totals since the kernel entry was created.
    pub monotonic: StatCounters,
    /// What happened since this client's previous call (filled by the pipeline).
    pub last: StatCounters,
    /// Kernel monotonic time (ns) the entry was created.
    pub created_ns: u64,
    /// Kernel monotonic time (ns) of the last counter update (the close time once closed).
    pub last_update_ns: u64,
    /// Smoothed RTT, µs (the mean across merged connections after aggregation).
    pub rtt_us: u32,
    /// RTT variance, µs (the mean across merged connections after aggregation).
    pub rtt_var_us: u32,
    /// Whether the local port is ephemeral.
    pub sport_is_ephemeral: EphemeralPort,
    /// Both ends are on this host (computed by the pipeline).
    pub intra_host: bool,
    /// The record came from the close path.
    pub is_closed: bool,
    /// Why a closed connection ended (`None` while open).
    pub end_reason: Option<EndReason>,
    /// UDP: traffic was seen both ways.
    pub is_assured: bool,
    /// NAT translation, if conntrack knows one.
    pub nat: Option<IpTranslation>,
    /// Container ids.
    pub containers: ContainerIds,
    /// The cgroup (v2) id of the owner process, recorded by the kernel when the owner was set
    /// (`bpf_get_current_cgroup_id`); 0 when unknown. It is what [`ContainerIds::source`] is
    /// resolved from.
    pub cgroup_id: u64,
    /// The owner's command name, recorded by the kernel with the pid (empty when unknown).
    pub comm: Comm,
    /// Outgoing connections to other hosts: the route's gateway and interface.
    pub via: Option<Via>,
    /// Protocol classification.
    pub protocol_stack: ProtocolStack,
    /// Static protocol tags (bit set, e.g. TLS), passed through.
    pub static_tags: u64,
    /// TCP failures.
    pub tcp_failures: TcpFailures,
    /// DNS stats attached to this (client→server:53) connection by the pipeline.
    pub dns: Option<Box<DomainStats>>,
    /// The connection existed before the tracer started (found by the start-up walk, Linux
    /// 5.9+): what the kernel had counted on it by then. All zero for UDP, whose sockets keep
    /// no totals. `None` for a connection opened after the start.
    pub before_start: Option<BeforeStart>,
}

impl ConnectionStats {
    /// A connection with zero counters and no enrichment.
    pub fn new(tuple: ConnectionTuple, direction: Direction, cookie: u64) -> Self {
        Self {
            tuple,
            direction,
            cookie,
            monotonic: StatCounters::default(),
            last: StatCounters::default(),
            created_ns: 0,
            last_update_ns: 0,
            rtt_us: 0,
            rtt_var_us: 0,
            sport_is_ephemeral: EphemeralPort::Unknown,
            intra_host: false,
            is_closed: false,
            end_reason: None,
            is_assured: false,
            nat: None,
            containers: ContainerIds::default(),
            cgroup_id: 0,
            comm: Comm::default(),
            via: None,
            protocol_stack: ProtocolStack::default(),
            static_tags: 0,
            tcp_failures: TcpFailures::default(),
            dns: None,
            before_start: None,
        }
    }

    /// Time from creation to the last update (for a closed connection: its lifetime).
    pub fn duration_ns(&self) -> u64 {
        self.last_update_ns.saturating_sub(self.created_ns)
    }

    /// Idle for at least `timeout_ns` at `now_ns`.
    pub fn is_expired(&self, now_ns: u64, timeout_ns: u64) -> bool {
        self.last_update_ns.saturating_add(timeout_ns) <= now_ns
    }

    /// No traffic and no failure ever (the TCP flags are ignored, as in Datadog): such closed
    /// connections are the first to go when the closed store is full.
    pub fn is_empty(&self) -> bool {
        let m = &self.monotonic;
        m.sent_bytes == 0
            && m.recv_bytes == 0
            && m.sent_packets == 0
            && m.recv_packets == 0
            && m.retransmits == 0
            && self.tcp_failures.is_empty()
    }

    /// The remote end as the real peer sees it: the NAT reply source if translated.
    pub fn remote_endpoint(&self) -> (IpAddr, u16) {
        match &self.nat {
            Some(t) => (t.repl_src_ip, t.repl_sport),
            None => (self.tuple.dst, self.tuple.dport),
        }
    }

    /// The local end as the peer sees it: the NAT reply destination if translated.
    pub fn local_endpoint(&self) -> (IpAddr, u16) {
        match &self.nat {
            Some(t) => (t.repl_dst_ip, t.repl_dport),
            None => (self.tuple.src, self.tuple.sport),
        }
    }

    /// The DNS conversation this connection carries, if it is a query to port 53.
    pub fn dns_key(&self) -> Option<DnsKey> {
        if self.tuple.dport != 53 {
            return None;
        }
        let (server, _) = self.remote_endpoint();
        let (client, client_port) = self.local_endpoint();
        Some(DnsKey {
            server,
            client,
            client_port,
            protocol: self.tuple.protocol,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::model::Protocol;

    fn conn(dport: u16) -> ConnectionStats {
        let tuple = ConnectionTuple {
            src: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
            dst: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 53)),
            sport: 5000,
            dport,
            pid: 1,
            netns: 1,
            protocol: Protocol::Udp,
        };
        ConnectionStats::new(tuple, Direction::Outgoing, 1)
    }

    #[test]
    fn dns_key_exists_only_for_port_53_and_uses_nat_reply_addresses() {
        assert!(conn(80).dns_key().is_none());
        let mut c = conn(53);
        assert_eq!(c.dns_key().map(|k| k.client_port), Some(5000));
        c.nat = Some(IpTranslation {
            repl_src_ip: IpAddr::V4(Ipv4Addr::new(10, 9, 9, 9)),
            repl_dst_ip: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
            repl_sport: 53,
            repl_dport: 6000,
        });
        let key = c.dns_key().unwrap();
        assert_eq!(key.server, IpAddr::V4(Ipv4Addr::new(10, 9, 9, 9)));
        assert_eq!(
            (key.client, key.client_port),
            (IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 6000)
        );
    }

    #[test]
    fn is_empty_ignores_tcp_flags_but_not_failures() {
        let mut c = conn(80);
        c.monotonic.tcp_established = 1;
        c.monotonic.tcp_closed = 1;
        assert!(c.is_empty());
        c.tcp_failures.record(111, 1);
        assert!(!c.is_empty());
    }

    #[test]
    fn tcp_failures_merge_sums_per_errno() {
        let mut a = TcpFailures::default();
        a.record(111, 1);
        let mut b = TcpFailures::default();
        b.record(104, 2);
        b.record(111, 3);
        a.merge(&b);
        assert_eq!(a.iter().collect::<Vec<_>>(), vec![(104, 2), (111, 4)]);
    }

    #[test]
    fn expiry_and_duration_never_overflow() {
        let mut c = conn(80);
        c.created_ns = 10;
        c.last_update_ns = 5;
        assert_eq!(c.duration_ns(), 0);
        c.last_update_ns = u64::MAX;
        assert!(!c.is_expired(u64::MAX - 1, u64::MAX));
    }
}
