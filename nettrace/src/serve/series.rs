//! One client's deltas turned into metric updates, grouped by (process, container, remote,
//! ports, direction, protocol), with the number of series bounded.
//!
//! Both exporters (Prometheus, OTLP) are each one client of the library and own one
//! [`Aggregator`]: every call's delta becomes [`Point`]s that the exporter adds to its
//! cumulative instruments, so every byte is counted once per exporter.

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use rustc_hash::{FxHashMap, FxHashSet};
use tracer::model::{ConnectionStats, Connections, Direction, Protocol};

use crate::errno;

/// The traffic metrics, with their OTel-style names ([`Metric::otel_name`]) and Prometheus
/// names ([`Metric::prom_name`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Metric {
    /// Bytes moved, by `network.io.direction`.
    IoBytes,
    /// Packets (segments for TCP) moved, by `network.io.direction`.
    IoPackets,
    /// TCP retransmitted segments.
    Retransmits,
    /// Smoothed TCP round trip of each connection that moved, one observation per connection
    /// per call (seconds).
    Rtt,
    /// TCP connections established.
    Opened,
    /// Connections closed (TCP closes, expired UDP flows).
    Closed,
    /// Connections open now (seen open and not yet seen closed).
    Active,
    /// TCP connections that failed, by `error.type` (the errno's name).
    Failures,
    /// DNS responses, by question name and response code.
    DnsResponses,
    /// DNS queries unanswered within the tracer's timeout, by question name.
    DnsTimeouts,
    /// Summed latency of DNS responses, seconds, by question name and response code.
    DnsLatency,
    /// HTTP/1.x requests, by method and status code.
    HttpRequests,
    /// Summed latency of HTTP/1.x requests, seconds, by method and status code.
    HttpLatency,
}

/// How a metric's values combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Monotonic, integer increments.
    Counter,
    /// Monotonic, fractional increments.
    FloatCounter,
    /// A level, replaced at each call.
    Gauge,
    /// Observations into a histogram.
    Histogram,
}

impl Metric {
    pub const ALL: [Self; 13] = [
        Self::IoBytes,
        Self::IoPackets,
        Self::Retransmits,
        Self::Rtt,
        Self::Opened,
        Self::Closed,
        Self::Active,
        Self::Failures,
        Self::DnsResponses,
        Self::DnsTimeouts,
        Self::DnsLatency,
        Self::HttpRequests,
        Self::HttpLatency,
    ];

    pub fn kind(self) -> Kind {
        match self {
            Self::Rtt => Kind::Histogram,
            Self::Active => Kind::Gauge,
            Self::DnsLatency | Self::HttpLatency => Kind::FloatCounter,
            _ => Kind::Counter,
        }
    }

    /// The name in Prometheus, without the `_total` prometheus-client adds to counters.
    pub fn prom_name(self) -> &'static str {
        match self {
            Self::IoBytes => "nettrace_network_io_bytes",
            Self::IoPackets => "nettrace_network_packets",
            Self::Retransmits => "nettrace_network_tcp_retransmits",
            Self::Rtt => "nettrace_network_tcp_rtt_seconds",
            Self::Opened => "nettrace_network_connections_opened",
            Self::Closed => "nettrace_network_connections_closed",
            Self::Active => "nettrace_network_connections_active",
            Self::Failures => "nettrace_network_connection_failures",
            Self::DnsResponses => "nettrace_dns_responses",
            Self::DnsTimeouts => "nettrace_dns_timeouts",
            Self::DnsLatency => "nettrace_dns_latency_seconds",
            Self::HttpRequests => "nettrace_http_requests",
            Self::HttpLatency => "nettrace_http_latency_seconds",
        }
    }

    /// The name in OTLP (OTel-network's `*.network.io`, `*.network.packets` where they fit).
    pub fn otel_name(self) -> &'static str {
        match self {
            Self::IoBytes => "nettrace.network.io",
            Self::IoPackets => "nettrace.network.packets",
            Self::Retransmits => "nettrace.network.tcp.retransmits",
            Self::Rtt => "nettrace.network.tcp.rtt",
            Self::Opened => "nettrace.network.connections.opened",
            Self::Closed => "nettrace.network.connections.closed",
            Self::Active => "nettrace.network.connections.active",
            Self::Failures => "nettrace.network.connection.failures",
            Self::DnsResponses => "nettrace.dns.responses",
            Self::DnsTimeouts => "nettrace.dns.timeouts",
            Self::DnsLatency => "nettrace.dns.latency",
            Self::HttpRequests => "nettrace.http.requests",
            Self::HttpLatency => "nettrace.http.latency",
        }
    }

    pub fn unit(self) -> &'static str {
        match self {
            Self::IoBytes => "By",
            Self::IoPackets => "{packet}",
            Self::Retransmits => "{segment}",
            Self::Rtt | Self::DnsLatency | Self::HttpLatency => "s",
            Self::Opened | Self::Closed | Self::Active | Self::Failures => "{connection}",
            Self::DnsResponses | Self::DnsTimeouts => "{query}",
            Self::HttpRequests => "{request}",
        }
    }

    pub fn help(self) -> &'static str {
        match self {
            Self::IoBytes => "Bytes moved by the connections, by network_io_direction.",
            Self::IoPackets => "Packets (TCP segments) moved, by network_io_direction.",
            Self::Retransmits => "TCP segments retransmitted.",
            Self::Rtt => {
                "Smoothed TCP round trip, one observation per connection that moved per read."
            }
            Self::Opened => "TCP connections established.",
            Self::Closed => "Connections closed (TCP) or expired (UDP).",
            Self::Active => "Connections seen open and not yet seen closed.",
            Self::Failures => "TCP connections that failed, by error_type (errno name).",
            Self::DnsResponses => "DNS responses, by question name and response code.",
            Self::DnsTimeouts => "DNS queries unanswered within the tracer's timeout.",
            Self::DnsLatency => "Summed DNS response latency, by question name and response code.",
            Self::HttpRequests => "HTTP/1.x requests, by method and status code.",
            Self::HttpLatency => "Summed HTTP/1.x request latency, by method and status code.",
        }
    }
}

/// A label: its Prometheus name and its OpenTelemetry semantic-convention attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Label {
    Process,
    Container,
    Remote,
    RemotePort,
    LocalPort,
    Direction,
    Protocol,
    IoDirection,
    ErrorType,
    DnsQuestion,
    DnsRcode,
    HttpMethod,
    HttpStatus,
}

impl Label {
    pub fn prom_name(self) -> &'static str {
        match self {
            Self::Process => "process",
            Self::Container => "container",
            Self::Remote => "remote",
            Self::RemotePort => "remote_port",
            Self::LocalPort => "local_port",
            Self::Direction => "direction",
            Self::Protocol => "protocol",
            Self::IoDirection => "network_io_direction",
            Self::ErrorType => "error_type",
            Self::DnsQuestion => "dns_question_name",
            Self::DnsRcode => "dns_response_code",
            Self::HttpMethod => "http_request_method",
            Self::HttpStatus => "http_response_status_code",
        }
    }

    pub fn otel_name(self) -> &'static str {
        match self {
            Self::Process => "process.executable.name",
            Self::Container => "container.id",
            // The remote's DNS name when the tracer saw one, else its address.
            Self::Remote => "network.peer.address",
            Self::RemotePort => "network.peer.port",
            Self::LocalPort => "network.local.port",
            Self::Direction => "nettrace.connection.direction",
            Self::Protocol => "network.transport",
            Self::IoDirection => "network.io.direction",
            Self::ErrorType => "error.type",
            Self::DnsQuestion => "dns.question.name",
            Self::DnsRcode => "dns.response_code",
            Self::HttpMethod => "http.request.method",
            Self::HttpStatus => "http.response.status_code",
        }
    }
}

/// The labels of a group of connections: (process, container, remote address or name, remote
/// port, local port, direction, protocol).
///
/// An incoming connection's remote port is the client's ephemeral port (one series per
/// connection), so it is left empty and the local (listening) port is given instead; an
/// outgoing connection has its remote port and no local port.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Group {
    pub process: Arc<str>,
    pub container: Arc<str>,
    pub remote: Arc<str>,
    pub remote_port: Option<u16>,
    pub local_port: Option<u16>,
    pub direction: &'static str,
    pub protocol: &'static str,
}

impl Group {
    /// Every label, in a fixed order, with empty values for what does not apply.
    pub fn labels(&self) -> [(Label, String); 7] {
        let port = |p: Option<u16>| p.map(|p| p.to_string()).unwrap_or_default();
        [
            (Label::Process, self.process.to_string()),
            (Label::Container, self.container.to_string()),
            (Label::Remote, self.remote.to_string()),
            (Label::RemotePort, port(self.remote_port)),
            (Label::LocalPort, port(self.local_port)),
            (Label::Direction, self.direction.to_owned()),
            (Label::Protocol, self.protocol.to_owned()),
        ]
    }
}

/// What a point adds to a group's labels.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Extra {
    None,
    IoDirection(&'static str),
    ErrorType(Arc<str>),
    Dns { question: Arc<str>, rcode: Arc<str> },
    DnsQuestion(Arc<str>),
    Http { method: Arc<str>, status: u16 },
}

impl Extra {
    pub fn labels(&self) -> Vec<(Label, String)> {
        match self {
            Self::None => Vec::new(),
            Self::IoDirection(d) => vec![(Label::IoDirection, (*d).to_owned())],
            Self::ErrorType(e) => vec![(Label::ErrorType, e.to_string())],
            Self::Dns { question, rcode } => vec![
                (Label::DnsQuestion, question.to_string()),
                (Label::DnsRcode, rcode.to_string()),
            ],
            Self::DnsQuestion(q) => vec![(Label::DnsQuestion, q.to_string())],
            Self::Http { method, status } => vec![
                (Label::HttpMethod, method.to_string()),
                (Label::HttpStatus, status.to_string()),
            ],
        }
    }
}

/// One series: a metric, its group, and its own labels.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeriesKey {
    pub metric: Metric,
    pub group: Group,
    pub extra: Extra,
}

impl SeriesKey {
    /// Every label of the series, named by `name` (Prometheus or OTel).
    pub fn labels(&self, name: fn(Label) -> &'static str) -> Vec<(&'static str, String)> {
        self.group
            .labels()
            .into_iter()
            .chain(self.extra.labels())
            .map(|(label, value)| (name(label), value))
            .collect()
    }
}

/// A value to apply to a series.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    /// Add to a counter.
    Add(u64),
    /// Add to a fractional counter.
    AddF(f64),
    /// Set a gauge.
    Set(i64),
    /// Record one observation.
    Observe(f64),
}

/// One update of one series.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub key: Arc<SeriesKey>,
    pub value: Value,
}

/// Turns each delta of one client into points, admitting at most `max_series` series.
#[derive(Debug)]
pub struct Aggregator {
    max_series: usize,
    admitted: FxHashMap<SeriesKey, Arc<SeriesKey>>,
    /// Updates refused because their series would have passed `max_series`.
    refused: u64,
    /// Open connections by cookie, with the series of their group's `Active` gauge.
    open: FxHashMap<u64, Arc<SeriesKey>>,
    /// The `Active` level of each admitted group.
    active: FxHashMap<Arc<SeriesKey>, i64>,
}

/// Most open connections tracked for the `Active` gauge (a connection whose close the tracer
/// lost would otherwise stay forever); beyond it a connection is not counted as active, and
/// the refusal is counted with [`Aggregator::refused`].
const MAX_OPEN: usize = 1 << 20;

impl Aggregator {
    pub fn new(max_series: usize) -> Self {
        Self {
            max_series,
            admitted: FxHashMap::default(),
            refused: 0,
            open: FxHashMap::default(),
            active: FxHashMap::default(),
        }
    }

    /// Updates refused so far because of the series bound.
    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// Series admitted so far.
    pub fn series(&self) -> usize {
        self.admitted.len()
    }

    /// The admitted key for `key`, or `None` (counted) past the bound.
    fn admit(&mut self, key: SeriesKey) -> Option<Arc<SeriesKey>> {
        if let Some(found) = self.admitted.get(&key) {
            return Some(Arc::clone(found));
        }
        if self.admitted.len() >= self.max_series {
            self.refused = self.refused.saturating_add(1);
            return None;
        }
        let shared = Arc::new(key.clone());
        self.admitted.insert(key, Arc::clone(&shared));
        Some(shared)
    }

    fn push(
        &mut self,
        out: &mut Vec<Point>,
        metric: Metric,
        group: &Group,
        extra: Extra,
        value: Value,
    ) {
        let zero = match value {
            Value::Add(v) => v == 0,
            Value::AddF(v) => v == 0.0,
            Value::Set(_) | Value::Observe(_) => false,
        };
        if zero {
            return;
        }
        let key = SeriesKey {
            metric,
            group: group.clone(),
            extra,
        };
        if let Some(key) = self.admit(key) {
            out.push(Point { key, value });
        }
    }

    /// The points of one delta (`conns`, this client's call).
    pub fn points(
        &mut self,
        conns: &Connections,
        names: &mut dyn FnMut(&ConnectionStats) -> Arc<str>,
    ) -> Vec<Point> {
        let mut out = Vec::new();
        let mut groups: FxHashMap<(SocketAddr, SocketAddr), Group> = FxHashMap::default();
        let mut touched_active: FxHashSet<Arc<SeriesKey>> = FxHashSet::default();
        for conn in &conns.conns {
            let group = group_of(conn, &conns.dns, names(conn));
            let (local, remote) = ends(conn);
            groups.insert((local, remote), group.clone());
            let m = &conn.last;
            self.push(
                &mut out,
                Metric::IoBytes,
                &group,
                Extra::IoDirection("transmit"),
                Value::Add(m.sent_bytes),
            );
            self.push(
                &mut out,
                Metric::IoBytes,
                &group,
                Extra::IoDirection("receive"),
                Value::Add(m.recv_bytes),
            );
            self.push(
                &mut out,
                Metric::IoPackets,
                &group,
                Extra::IoDirection("transmit"),
                Value::Add(m.sent_packets),
            );
            self.push(
                &mut out,
                Metric::IoPackets,
                &group,
                Extra::IoDirection("receive"),
                Value::Add(m.recv_packets),
            );
            self.push(
                &mut out,
                Metric::Retransmits,
                &group,
                Extra::None,
                Value::Add(u64::from(m.retransmits)),
            );
            self.push(
                &mut out,
                Metric::Opened,
                &group,
                Extra::None,
                Value::Add(u64::from(m.tcp_established)),
            );
            if conn.tuple.protocol == Protocol::Tcp && conn.rtt_us > 0 {
                let rtt = f64::from(conn.rtt_us) / 1e6;
                self.push(
                    &mut out,
                    Metric::Rtt,
                    &group,
                    Extra::None,
                    Value::Observe(rtt),
                );
            }
            for (code, count) in conn.tcp_failures.iter() {
                let name: Arc<str> = errno::describe(code).into();
                self.push(
                    &mut out,
                    Metric::Failures,
                    &group,
                    Extra::ErrorType(name),
                    Value::Add(u64::from(count)),
                );
            }
            if let Some(dns) = &conn.dns {
                for (question, by_type) in &dns.0 {
                    for stats in by_type.values() {
                        let q = Arc::clone(question);
                        self.push(
                            &mut out,
                            Metric::DnsTimeouts,
                            &group,
                            Extra::DnsQuestion(Arc::clone(&q)),
                            Value::Add(u64::from(stats.timeouts)),
                        );
                        let answered: u64 =
                            stats.count_by_rcode.values().map(|&n| u64::from(n)).sum();
                        for (&rcode, &count) in &stats.count_by_rcode {
                            let extra = Extra::Dns {
                                question: Arc::clone(&q),
                                rcode: rcode_name(rcode),
                            };
                            self.push(
                                &mut out,
                                Metric::DnsResponses,
                                &group,
                                extra,
                                Value::Add(u64::from(count)),
                            );
                        }
                        // The sums are split only into success (rcode 0) and failure.
                        if answered > 0 {
                            let ok = Extra::Dns {
                                question: Arc::clone(&q),
                                rcode: rcode_name(0),
                            };
                            self.push(
                                &mut out,
                                Metric::DnsLatency,
                                &group,
                                ok,
                                Value::AddF(stats.success_latency_sum_us as f64 / 1e6),
                            );
                            let failed = Extra::Dns {
                                question: Arc::clone(&q),
                                rcode: "failure".into(),
                            };
                            self.push(
                                &mut out,
                                Metric::DnsLatency,
                                &group,
                                failed,
                                Value::AddF(stats.failure_latency_sum_us as f64 / 1e6),
                            );
                        }
                    }
                }
            }
            // The Active gauge: one per group, from the connections seen open and not closed.
            let active_key = SeriesKey {
                metric: Metric::Active,
                group,
                extra: Extra::None,
            };
            let closed = conn.is_closed || m.tcp_closed > 0;
            if closed {
                if let Some(key) = self.open.remove(&conn.cookie) {
                    *self.active.entry(Arc::clone(&key)).or_default() -= 1;
                    touched_active.insert(key);
                }
                self.push(
                    &mut out,
                    Metric::Closed,
                    &active_key.group,
                    Extra::None,
                    Value::Add(1),
                );
            } else if !self.open.contains_key(&conn.cookie) {
                if self.open.len() >= MAX_OPEN {
                    self.refused = self.refused.saturating_add(1);
                } else if let Some(key) = self.admit(active_key) {
                    self.open.insert(conn.cookie, Arc::clone(&key));
                    *self.active.entry(Arc::clone(&key)).or_default() += 1;
                    touched_active.insert(key);
                }
            }
        }
        for key in touched_active {
            let level = self.active.get(&key).copied().unwrap_or(0).max(0);
            out.push(Point {
                key,
                value: Value::Set(level),
            });
        }
        for (key, stats) in &conns.usm.http {
            let client = canonical(key.client);
            let server = canonical(key.server);
            let group = groups
                .get(&(client, server))
                .or_else(|| groups.get(&(server, client)))
                .cloned()
                .unwrap_or_else(|| Group {
                    remote: server.ip().to_string().into(),
                    remote_port: Some(server.port()),
                    direction: "unknown",
                    protocol: "tcp",
                    ..Group::default()
                });
            let method: Arc<str> = key.method.as_str().into();
            for (&status, req) in &stats.0 {
                let extra = Extra::Http {
                    method: Arc::clone(&method),
                    status,
                };
                self.push(
                    &mut out,
                    Metric::HttpRequests,
                    &group,
                    extra.clone(),
                    Value::Add(req.count),
                );
                let sum_ns = match &req.latencies {
                    Some(sketch) => sketch.sum().unwrap_or(0.0),
                    None => req.first_latency_ns as f64,
                };
                self.push(
                    &mut out,
                    Metric::HttpLatency,
                    &group,
                    extra,
                    Value::AddF(sum_ns / 1e9),
                );
            }
        }
        out
    }
}

/// The group of a connection: the remote's first DNS name when the tracer saw one.
pub fn group_of(
    conn: &ConnectionStats,
    dns: &FxHashMap<IpAddr, Vec<Arc<str>>>,
    process: Arc<str>,
) -> Group {
    let t = &conn.tuple;
    let remote = dns
        .get(&t.dst)
        .and_then(|names| names.first())
        .map(Arc::clone)
        .unwrap_or_else(|| t.dst.to_canonical().to_string().into());
    let incoming = conn.direction == Direction::Incoming;
    Group {
        process,
        container: conn.containers.source.clone().unwrap_or_else(|| "".into()),
        remote,
        remote_port: (!incoming).then_some(t.dport),
        local_port: incoming.then_some(t.sport),
        direction: match conn.direction {
            Direction::Incoming => "incoming",
            Direction::Outgoing => "outgoing",
            Direction::Unknown => "unknown",
        },
        protocol: match t.protocol {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        },
    }
}

fn ends(conn: &ConnectionStats) -> (SocketAddr, SocketAddr) {
    let t = &conn.tuple;
    (
        canonical(SocketAddr::new(t.src, t.sport)),
        canonical(SocketAddr::new(t.dst, t.dport)),
    )
}

/// An IPv4-mapped IPv6 address as IPv4, so both spellings of one end compare equal.
fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// The DNS response code's mnemonic (RFC 1035, 2136), or its number.
fn rcode_name(rcode: u32) -> Arc<str> {
    let name = match rcode {
        0 => "NOERROR",
        1 => "FORMERR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        4 => "NOTIMP",
        5 => "REFUSED",
        other => return other.to_string().into(),
    };
    name.into()
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use tracer::model::{ConnectionTuple, Protocol};

    use super::*;

    /// An outgoing TCP connection of `pid` to 192.0.2.1:`dport` that moved these bytes.
    fn conn(pid: u32, dport: u16, sent: u64, recv: u64, cookie: u64) -> ConnectionStats {
        let tuple = ConnectionTuple {
            src: IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1)),
            dst: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
            sport: 40000 + (cookie as u16),
            dport,
            pid,
            netns: 1,
            protocol: Protocol::Tcp,
        };
        let mut c = ConnectionStats::new(tuple, Direction::Outgoing, cookie);
        c.last.sent_bytes = sent;
        c.last.recv_bytes = recv;
        c
    }

    fn delta(conns: Vec<ConnectionStats>) -> Connections {
        Connections {
            conns,
            ..Connections::default()
        }
    }

    /// Process name from the pid, as the server's resolver would give it.
    fn names(conn: &ConnectionStats) -> Arc<str> {
        format!("p{}", conn.tuple.pid).into()
    }

    /// The sum of the `Add` points of `metric` with this extra, per process.
    fn sums(points: &[Point], metric: Metric, extra: &Extra) -> BTreeMapOf {
        let mut out = BTreeMapOf::new();
        for p in points {
            if p.key.metric == metric
                && &p.key.extra == extra
                && let Value::Add(v) = p.value
            {
                *out.entry(p.key.group.process.to_string()).or_default() += v;
            }
        }
        out
    }
    type BTreeMapOf = std::collections::BTreeMap<String, u64>;

    #[test]
    fn connections_of_one_group_add_up_in_one_series() {
        let mut agg = Aggregator::new(100);
        let points = agg.points(
            &delta(vec![conn(7, 443, 100, 5, 1), conn(7, 443, 23, 0, 2)]),
            &mut names,
        );
        let sent = sums(&points, Metric::IoBytes, &Extra::IoDirection("transmit"));
        let recv = sums(&points, Metric::IoBytes, &Extra::IoDirection("receive"));
        assert_eq!(sent.get("p7"), Some(&123));
        assert_eq!(recv.get("p7"), Some(&5));
        // Bytes each way, and the Active gauge: three series, both connections open in it.
        assert_eq!(agg.series(), 3);
        assert!(
            points
                .iter()
                .any(|p| p.key.metric == Metric::Active && matches!(p.value, Value::Set(2)))
        );
        assert_eq!(agg.refused(), 0);
    }

    #[test]
    fn the_series_bound_admits_the_first_series_and_counts_every_refused_update() {
        // Room for one process's two byte series only.
        let mut agg = Aggregator::new(2);
        let first = agg.points(&delta(vec![conn(1, 80, 10, 20, 1)]), &mut names);
        assert_eq!(agg.series(), 2);
        // Its Active gauge did not fit: refused and counted.
        assert_eq!(agg.refused(), 1);
        assert_eq!(
            sums(&first, Metric::IoBytes, &Extra::IoDirection("transmit")).get("p1"),
            Some(&10)
        );
        // Two more processes: each update of theirs (bytes each way, Active) is refused, as is
        // process 1's Active again (an update per call), and the admitted series keep counting.
        let second = agg.points(
            &delta(vec![
                conn(1, 80, 5, 0, 1),
                conn(2, 80, 1, 1, 2),
                conn(3, 80, 1, 1, 3),
            ]),
            &mut names,
        );
        assert_eq!(agg.series(), 2, "the bound holds");
        assert_eq!(agg.refused(), 1 + 1 + 3 + 3);
        let sent = sums(&second, Metric::IoBytes, &Extra::IoDirection("transmit"));
        assert_eq!(sent, BTreeMapOf::from([("p1".to_owned(), 5)]));
    }

    #[test]
    fn a_close_moves_the_active_gauge_down_and_counts_one_close() {
        let mut agg = Aggregator::new(100);
        let _ = agg.points(&delta(vec![conn(4, 22, 1, 1, 9)]), &mut names);
        let mut closed = conn(4, 22, 0, 3, 9);
        closed.is_closed = true;
        let points = agg.points(&delta(vec![closed]), &mut names);
        assert_eq!(
            sums(&points, Metric::Closed, &Extra::None).get("p4"),
            Some(&1)
        );
        assert!(
            points
                .iter()
                .any(|p| p.key.metric == Metric::Active && matches!(p.value, Value::Set(0)))
        );
    }
}
