//! The DNS source: consumes the packet capture's DNS records (UDP payloads and TCP segments),
//! and keeps what Datadog's DNS snooper keeps (`network/dns`, behaviour only):
//!
//! - stats per conversation ([`DnsKey`]: server, client address and port, protocol) → domain →
//!   query type: latency sums of successful and failed answers, answers by response code,
//!   timeouts; handed out by [`Dns::take_stats`] (see `stats.rs` for the matching rules,
//!   including the deduplication of the two observations of a local conversation);
//! - reverse DNS: IP → the names it was given for, by [`Dns::names_for`] (see `reverse.rs`).
//!
//! Records come from the capture's ring (`tracer_common::packet`), decoded by
//! [`crate::decode::packet_record`]. Nothing here touches the kernel. Every record, whatever
//! its content, is either used or counted in one of [`DnsCounters`]; none can panic, loop or
//! grow the state past its bounds (pending queries, stats leaves, TCP streams, IPs, names).
//!
//! A message cut at the snap length (UDP; `captured_len < payload_len`) still counts for the
//! stats when its header and question were captured, and gives the answers captured before the
//! cut. A message whose answer section is malformed still counts for the stats (its header and
//! question are sound and it matched a pending query) but gives no reverse DNS.

pub(crate) mod parse;
mod reverse;
mod stats;
mod tcp;

#[cfg(test)]
mod tests;

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use parking_lot::Mutex;
use rustc_hash::FxHashMap;
use tracer_common::{
    conn::{AF_INET6, IPPROTO_TCP, IPPROTO_UDP},
    packet::{PACKET_KIND_DNS, PacketHeader},
};

use self::{
    parse::{Answers, Malformed},
    reverse::ReverseCache,
    stats::{QueryOutcome, ResponseOutcome, StatsKeeper, TakeReport},
    tcp::{Segment, StreamKey, TcpStreams},
};
use crate::{
    Error, counter_set, decode,
    model::{ConnectionStats, DnsKey, DnsStatsBatch, Protocol},
    telemetry::{CounterSource, Sample, bump},
};

/// Which query types the stats record (reverse DNS takes A/AAAA answers whatever this says).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum DnsQueryTypes {
    /// A (1) and AAAA (28).
    #[default]
    AddressOnly,
    /// Every type.
    All,
    /// These types (numbers as on the wire).
    Only(Vec<u16>),
}

impl DnsQueryTypes {
    fn records(&self, qtype: u16) -> bool {
        match self {
            Self::AddressOnly => qtype == 1 || qtype == 28,
            Self::All => true,
            Self::Only(types) => types.contains(&qtype),
        }
    }
}

/// Configuration of the DNS source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsConfig {
    /// Consume DNS records at all (default on).
    pub enabled: bool,
    /// A query without a response after this long is a timeout (default 15 s, as Datadog).
    pub timeout: Duration,
    /// Most (key, domain, query type) stats leaves between two takes (default 20 000, as
    /// Datadog's `max_dns_stats`); the rest is dropped and counted.
    pub max_stats: usize,
    /// Which query types the stats record (default A and AAAA).
    pub query_types: DnsQueryTypes,
    /// Most IPs in the reverse DNS cache (default 100 000, as Datadog).
    pub max_ips: usize,
    /// Most names per IP (default 1 000, as Datadog).
    pub max_names_per_ip: usize,
    /// Most queries waiting for their response (default 65 536: 4 000 new queries per second
    /// for the 15 s timeout, about 6 MB at most).
    pub max_pending: usize,
    /// Most TCP streams reassembled at once (default 4 096; least recently used evicted).
    pub max_tcp_streams: usize,
}

impl Default for DnsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            timeout: Duration::from_secs(15),
            max_stats: 20_000,
            query_types: DnsQueryTypes::AddressOnly,
            max_ips: 100_000,
            max_names_per_ip: 1_000,
            max_pending: 65_536,
            max_tcp_streams: 4_096,
        }
    }
}

impl DnsConfig {
    /// Checks the sizes: no zero timeout or size, no empty list of query types.
    pub fn validate(&self) -> crate::Result<()> {
        let zero = |what: &str| Err(Error::InvalidConfig(format!("dns: {what} must not be 0")));
        if self.timeout.is_zero() {
            return zero("timeout");
        }
        for (what, value) in [
            ("max_stats", self.max_stats),
            ("max_ips", self.max_ips),
            ("max_names_per_ip", self.max_names_per_ip),
            ("max_pending", self.max_pending),
            ("max_tcp_streams", self.max_tcp_streams),
        ] {
            if value == 0 {
                return zero(what);
            }
        }
        if self.query_types == DnsQueryTypes::Only(Vec::new()) {
            return Err(Error::InvalidConfig(
                "dns: query_types must name at least one type".into(),
            ));
        }
        Ok(())
    }
}

counter_set! {
    /// Counters of the DNS source.
    pub struct DnsCounters {
        /// Capture records received.
        dns_records: Activity,
        /// Records refused before parsing: shorter than their header or than the bytes it announces, not DNS, or neither TCP nor UDP.
        dns_records_invalid: Loss,
        /// DNS messages parsed (UDP payloads and reassembled TCP messages), duplicates included.
        dns_messages: Activity,
        /// Messages refused: they end inside the header, a name or a record.
        dns_malformed_truncated: Loss,
        /// Messages refused: header counts that cannot fit in the message.
        dns_malformed_counts: Loss,
        /// Messages refused: a compression pointer forward, to itself, or in too long a chain.
        dns_malformed_compression: Loss,
        /// Messages refused: a label of a reserved type (64 bytes or more) or a name of 255 bytes or more.
        dns_malformed_label: Loss,
        /// Messages refused for another reason (bad record data).
        dns_malformed_other: Loss,
        /// Messages without a question (nothing to key them on).
        dns_no_question: Loss,
        /// UDP messages cut at the snap length (their header and question are still used).
        dns_snapped: Activity,
        /// Responses cut at the snap length inside their answers: reverse DNS got only the answers before the cut.
        dns_snapped_answers: Loss,
        /// Queries recorded as pending.
        dns_queries: Activity,
        /// Further observations of a pending query (the other end of a local conversation, retransmissions).
        dns_queries_duplicate: Activity,
        /// Queries and responses of a type the configuration does not record.
        dns_messages_filtered: Activity,
        /// Queries not recorded because the pending table was full.
        dns_pending_dropped: Loss,
        /// Responses that ended a pending query.
        dns_responses_matched: Activity,
        /// Responses with no pending query (the second observation of a local response, or a query not seen).
        dns_responses_unmatched: Activity,
        /// Queries counted as timeouts (no response within the timeout, or a later one).
        dns_timeouts: Activity,
        /// Answers or timeouts not recorded because the stats were at `max_stats` leaves.
        dns_stats_dropped: Loss,
        /// TCP segments received.
        dns_tcp_segments: Activity,
        /// TCP segments dropped as retransmissions of bytes already seen.
        dns_tcp_duplicates: Activity,
        /// TCP streams reset because bytes were missed.
        dns_tcp_gaps: Loss,
        /// TCP streams reset because a segment was cut at the snap length.
        dns_tcp_truncated: Loss,
        /// TCP streams evicted (least recently used) to make room.
        dns_tcp_streams_evicted: Activity,
        /// TCP streams ended by FIN or RST.
        dns_tcp_streams_closed: Activity,
        /// Zero-length TCP DNS messages skipped.
        dns_tcp_empty_messages: Activity,
        /// (IP, name) bindings added or refreshed in the reverse cache.
        dns_reverse_bindings: Activity,
        /// IPs evicted from the reverse cache (least recently used).
        dns_reverse_evicted: Activity,
        /// IPs not added to the reverse cache because every held IP was pinned.
        dns_reverse_ips_dropped: Loss,
        /// Names not added because their IP had `max_names_per_ip` unexpired names.
        dns_reverse_names_dropped: Loss,
        /// IPs looked up in the reverse cache.
        dns_reverse_lookups: Activity,
        /// Lookups that found unexpired names.
        dns_reverse_hits: Activity,
        /// IPs dropped from the reverse cache because all their names had expired.
        dns_reverse_expired: Activity,
        /// Queries waiting for their response.
        dns_pending: Gauge,
        /// TCP streams being reassembled.
        dns_tcp_streams: Gauge,
        /// IPs in the reverse cache.
        dns_reverse_ips: Gauge,
    }
}

/// Where a message came from.
#[derive(Clone, Copy, Debug)]
struct Origin {
    src: IpAddr,
    sport: u16,
    dst: IpAddr,
    dport: u16,
    protocol: Protocol,
    at_ns: u64,
    /// The bytes are the whole message (not cut at the snap length).
    complete: bool,
}

/// The DNS source. `&self` everywhere: fed by the capture's consumer thread, read by
/// `get_active_connections`. Three locks, taken in the order tcp → stats → reverse, and the
/// readers take one each, so a take never waits for a reverse lookup or the reverse versa.
#[derive(Debug)]
pub struct Dns {
    enabled: bool,
    query_types: DnsQueryTypes,
    tcp: Mutex<TcpStreams>,
    stats: Mutex<StatsKeeper>,
    reverse: Mutex<ReverseCache>,
    counters: DnsCounters,
}

impl Dns {
    /// A DNS source with empty state (a disabled one ignores every record).
    pub fn start(config: &DnsConfig) -> Self {
        Self {
            enabled: config.enabled,
            query_types: config.query_types.clone(),
            tcp: Mutex::new(TcpStreams::new(config.max_tcp_streams)),
            stats: Mutex::new(StatsKeeper::new(
                u64::try_from(config.timeout.as_nanos()).unwrap_or(u64::MAX),
                config.max_stats,
                config.max_pending,
            )),
            reverse: Mutex::new(ReverseCache::new(config.max_ips, config.max_names_per_ip)),
            counters: DnsCounters::default(),
        }
    }

    /// Consumes one raw ring record of the capture.
    pub fn ingest(&self, record: &[u8]) {
        if !self.enabled {
            return;
        }
        let c = &self.counters;
        bump(&c.dns_records, 1);
        let Some((header, payload)) = decode::packet_record(record) else {
            bump(&c.dns_records_invalid, 1);
            return;
        };
        if header.kind != PACKET_KIND_DNS {
            bump(&c.dns_records_invalid, 1);
            return;
        }
        let ip = |bytes: [u8; 16]| -> IpAddr {
            if header.family == AF_INET6 {
                IpAddr::V6(Ipv6Addr::from(bytes))
            } else {
                let [a, b, c, d, ..] = bytes;
                IpAddr::V4(Ipv4Addr::new(a, b, c, d))
            }
        };
        let mut origin = Origin {
            src: ip(header.saddr),
            sport: header.sport,
            dst: ip(header.daddr),
            dport: header.dport,
            protocol: Protocol::Udp,
            at_ns: header.timestamp_ns,
            complete: u64::from(header.captured_len) >= u64::from(header.payload_len),
        };
        match header.protocol {
            IPPROTO_UDP => {
                if !origin.complete {
                    bump(&c.dns_snapped, 1);
                }
                self.message(&origin, payload);
            }
            IPPROTO_TCP => {
                origin.protocol = Protocol::Tcp;
                origin.complete = true;
                self.tcp_segment(&header, &origin, payload);
            }
            _ => bump(&c.dns_records_invalid, 1),
        }
    }

    fn tcp_segment(&self, header: &PacketHeader, origin: &Origin, payload: &[u8]) {
        let c = &self.counters;
        bump(&c.dns_tcp_segments, 1);
        let key = StreamKey {
            saddr: header.saddr,
            sport: header.sport,
            daddr: header.daddr,
            dport: header.dport,
            cookie: header.cookie,
            direction: header.direction,
        };
        let segment = Segment {
            seq: header.seq,
            flags: header.tcp_flags,
            payload_len: header.payload_len,
            payload,
        };
        let mut tcp = self.tcp.lock();
        let report = tcp.segment(key, segment, &mut |message| self.message(origin, message));
        c.dns_tcp_streams.store(tcp.len() as u64, Ordering::Relaxed);
        drop(tcp);
        bump(&c.dns_tcp_duplicates, u64::from(report.duplicate));
        bump(&c.dns_tcp_gaps, u64::from(report.gap));
        bump(&c.dns_tcp_truncated, u64::from(report.truncated));
        bump(&c.dns_tcp_streams_closed, u64::from(report.closed));
        bump(&c.dns_tcp_streams_evicted, u64::from(report.evicted));
        bump(&c.dns_tcp_empty_messages, report.empty_messages);
    }

    fn malformed(&self, m: Malformed) {
        let c = &self.counters;
        bump(
            match m {
                Malformed::Truncated => &c.dns_malformed_truncated,
                Malformed::Counts => &c.dns_malformed_counts,
                Malformed::Compression => &c.dns_malformed_compression,
                Malformed::Label => &c.dns_malformed_label,
                Malformed::NoQuestion => &c.dns_no_question,
                Malformed::Other => &c.dns_malformed_other,
            },
            1,
        );
    }

    /// One whole (or snapped) DNS message.
    fn message(&self, origin: &Origin, bytes: &[u8]) {
        let c = &self.counters;
        bump(&c.dns_messages, 1);
        let msg = match parse::parse(bytes, origin.complete) {
            Ok(msg) => msg,
            Err(m) => {
                self.malformed(m);
                return;
            }
        };
        let recorded = self.query_types.records(msg.qtype);
        if !recorded {
            bump(&c.dns_messages_filtered, 1);
        }
        if !msg.response {
            if !recorded {
                return;
            }
            let key = DnsKey {
                server: origin.dst,
                client: origin.src,
                client_port: origin.sport,
                protocol: origin.protocol,
            };
            let mut stats = self.stats.lock();
            let (outcome, report) = stats.query(key, msg.id, msg.qtype, origin.at_ns, || {
                Arc::from(msg.qname())
            });
            c.dns_pending
                .store(stats.pending_len() as u64, Ordering::Relaxed);
            drop(stats);
            self.timeouts(report);
            bump(
                match outcome {
                    QueryOutcome::New => &c.dns_queries,
                    QueryOutcome::Duplicate => &c.dns_queries_duplicate,
                    QueryOutcome::Dropped => &c.dns_pending_dropped,
                },
                1,
            );
            return;
        }
        if recorded {
            let key = DnsKey {
                server: origin.src,
                client: origin.dst,
                client_port: origin.dport,
                protocol: origin.protocol,
            };
            let mut stats = self.stats.lock();
            let outcome = stats.response(key, msg.id, msg.rcode, origin.at_ns);
            c.dns_pending
                .store(stats.pending_len() as u64, Ordering::Relaxed);
            drop(stats);
            match outcome {
                ResponseOutcome::Matched => bump(&c.dns_responses_matched, 1),
                ResponseOutcome::Late => {
                    bump(&c.dns_responses_matched, 1);
                    bump(&c.dns_timeouts, 1);
                }
                ResponseOutcome::Unmatched => bump(&c.dns_responses_unmatched, 1),
                ResponseOutcome::Dropped => {
                    bump(&c.dns_responses_matched, 1);
                    bump(&c.dns_stats_dropped, 1);
                }
            }
        }
        let mut answers = Answers::default();
        match msg.answers(&mut answers) {
            None => {}
            Some(Malformed::Truncated) if !origin.complete => bump(&c.dns_snapped_answers, 1),
            Some(m) => {
                self.malformed(m);
                return;
            }
        }
        if answers.addrs.is_empty() {
            return;
        }
        let mut reverse = self.reverse.lock();
        for (ip, ttl) in &answers.addrs {
            let r = reverse.insert(*ip, &answers.names, *ttl, origin.at_ns);
            bump(&c.dns_reverse_bindings, r.bindings);
            bump(&c.dns_reverse_evicted, r.ips_evicted);
            bump(&c.dns_reverse_ips_dropped, r.ips_dropped);
            bump(&c.dns_reverse_names_dropped, r.names_dropped);
        }
        c.dns_reverse_ips
            .store(reverse.len() as u64, Ordering::Relaxed);
    }

    fn timeouts(&self, report: TakeReport) {
        bump(&self.counters.dns_timeouts, report.timeouts);
        bump(&self.counters.dns_stats_dropped, report.dropped);
    }

    /// The stats since the previous take, with the queries that timed out by `now_ns`
    /// (CLOCK_MONOTONIC ns, the clock of the records' timestamps) as timeouts.
    pub fn take_stats(&self, now_ns: u64) -> DnsStatsBatch {
        let mut stats = self.stats.lock();
        let (batch, report) = stats.take(now_ns);
        self.counters
            .dns_pending
            .store(stats.pending_len() as u64, Ordering::Relaxed);
        drop(stats);
        self.timeouts(report);
        batch
    }

    /// Reverse DNS for the IPs of `conns` (both ends of each tuple, and the NAT reply addresses
    /// when there is a translation): the names each was given for, unexpired at `now_ns`. The
    /// IPs returned stay in the cache (not evicted, not pruned) until the next call.
    pub fn names_for(
        &self,
        conns: &[ConnectionStats],
        now_ns: u64,
    ) -> FxHashMap<IpAddr, Vec<Arc<str>>> {
        let mut out = FxHashMap::default();
        if !self.enabled {
            return out;
        }
        let ips = conns.iter().flat_map(|conn| {
            let nat = conn.nat.iter().flat_map(|t| [t.repl_src_ip, t.repl_dst_ip]);
            [conn.tuple.src, conn.tuple.dst].into_iter().chain(nat)
        });
        let mut reverse = self.reverse.lock();
        let report = reverse.names_for(ips, now_ns, &mut out);
        let c = &self.counters;
        c.dns_reverse_ips
            .store(reverse.len() as u64, Ordering::Relaxed);
        drop(reverse);
        bump(&c.dns_reverse_lookups, report.lookups);
        bump(&c.dns_reverse_hits, report.hits);
        bump(&c.dns_reverse_expired, report.expired);
        out
    }

    /// The counters (see [`DnsCounters`]).
    pub fn counters(&self) -> &DnsCounters {
        &self.counters
    }

    /// Appends every counter with its current value to `out`.
    pub fn collect(&self, out: &mut Vec<Sample>) {
        self.counters.collect(out);
    }
}

impl CounterSource for Dns {
    fn collect(&self, out: &mut Vec<Sample>) {
        self.counters.collect(out);
    }
}
