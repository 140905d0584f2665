//! The application layer of a connection: its protocol's name (from the kernel classifier's
//! [`ProtocolStack`]) and its HTTP requests in the interval (from `Connections::usm.http`).
//!
//! HTTP stats are keyed by (client address:port, server address:port), each end as the
//! observing socket saw it, which is how a connection's tuple is written too (`src`/`sport`
//! local, `dst`/`dport` remote). A connection is the client of the key (local, remote) and the
//! server of the key (remote, local); its requests are those of both keys (a connection is
//! normally only one of them). A local connection's two sockets (curl's and nginx's) both match
//! the key of their exchange, so both rows show its requests: each socket carried them. The
//! keys hold no network namespace, so two connections with the same addresses and ports in
//! different namespaces would both show the requests of either.
//!
//! Error rate: the share of requests answered 5xx (server errors). 4xx answers (the client's
//! mistakes: 404, 401, ...) are counted apart (`http_4xx` in the JSON lines) and are not errors
//! here.

use std::net::{IpAddr, SocketAddr};

use rustc_hash::FxHashMap;
use tracer::model::{ConnectionTuple, HttpKey, HttpStats, Protocol, ProtocolStack};
use tracer_common::classify::{
    PROTO_AMQP, PROTO_GRPC, PROTO_HTTP, PROTO_HTTP2, PROTO_KAFKA, PROTO_MONGO, PROTO_MYSQL,
    PROTO_POSTGRES, PROTO_REDIS, PROTO_TLS, PROTO_UNKNOWN,
};

/// The name of a protocol stack, top layer first, layers joined by `/` ("gRPC/HTTP2",
/// "HTTP/TLS"); `None` when nothing is classified. A code this program has no name for shows
/// as its layer and number ("app9").
pub fn protocol_name(stack: &ProtocolStack) -> Option<String> {
    let api = match stack.api {
        PROTO_UNKNOWN => None,
        PROTO_GRPC => Some("gRPC".to_owned()),
        code => Some(format!("api{code}")),
    };
    let application = match stack.application {
        PROTO_UNKNOWN => None,
        PROTO_HTTP => Some("HTTP".to_owned()),
        PROTO_HTTP2 => Some("HTTP2".to_owned()),
        PROTO_KAFKA => Some("Kafka".to_owned()),
        PROTO_MONGO => Some("Mongo".to_owned()),
        PROTO_POSTGRES => Some("Postgres".to_owned()),
        PROTO_AMQP => Some("AMQP".to_owned()),
        PROTO_REDIS => Some("Redis".to_owned()),
        PROTO_MYSQL => Some("MySQL".to_owned()),
        code => Some(format!("app{code}")),
    };
    let encryption = match stack.encryption {
        PROTO_UNKNOWN => None,
        PROTO_TLS => Some("TLS".to_owned()),
        code => Some(format!("enc{code}")),
    };
    let layers: Vec<String> = [api, application, encryption]
        .into_iter()
        .flatten()
        .collect();
    if layers.is_empty() {
        None
    } else {
        Some(layers.join("/"))
    }
}

/// HTTP requests of one connection in one interval.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HttpCounts {
    /// Requests answered, any status.
    pub requests: u64,
    /// Of those, answered 4xx.
    pub client_errors: u64,
    /// Of those, answered 5xx.
    pub server_errors: u64,
}

impl HttpCounts {
    fn of(stats: &HttpStats) -> Self {
        let mut counts = Self::default();
        for (status, requests) in &stats.0 {
            counts.requests = counts.requests.saturating_add(requests.count);
            match status {
                400..=499 => {
                    counts.client_errors = counts.client_errors.saturating_add(requests.count)
                }
                500..=599 => {
                    counts.server_errors = counts.server_errors.saturating_add(requests.count)
                }
                _ => {}
            }
        }
        counts
    }

    fn add(&mut self, other: &Self) {
        self.requests = self.requests.saturating_add(other.requests);
        self.client_errors = self.client_errors.saturating_add(other.client_errors);
        self.server_errors = self.server_errors.saturating_add(other.server_errors);
    }

    /// Requests per second over `interval_s`; `None` when the interval is not positive.
    pub fn per_second(&self, interval_s: f64) -> Option<f64> {
        (interval_s.is_finite() && interval_s > 0.0).then(|| self.requests as f64 / interval_s)
    }

    /// Share of requests answered 5xx, 0.0 to 1.0; `None` without requests.
    pub fn error_rate(&self) -> Option<f64> {
        (self.requests > 0).then(|| self.server_errors as f64 / self.requests as f64)
    }
}

/// One interval's HTTP stats by (client, server), every path, method and status summed.
#[derive(Debug, Default)]
pub struct HttpIndex {
    by_ends: FxHashMap<(SocketAddr, SocketAddr), HttpCounts>,
}

impl HttpIndex {
    /// Indexes `http` (`Connections::usm.http`).
    pub fn new<'a>(http: impl IntoIterator<Item = (&'a HttpKey, &'a HttpStats)>) -> Self {
        let mut by_ends: FxHashMap<(SocketAddr, SocketAddr), HttpCounts> = FxHashMap::default();
        for (key, stats) in http {
            by_ends
                .entry((canonical(key.client), canonical(key.server)))
                .or_default()
                .add(&HttpCounts::of(stats));
        }
        Self { by_ends }
    }

    /// The requests a TCP connection carried as client or as server; `None` if none (or UDP).
    pub fn counts(&self, tuple: &ConnectionTuple) -> Option<HttpCounts> {
        if tuple.protocol != Protocol::Tcp || self.by_ends.is_empty() {
            return None;
        }
        let local = canonical(SocketAddr::new(tuple.src, tuple.sport));
        let remote = canonical(SocketAddr::new(tuple.dst, tuple.dport));
        let mut found: Option<HttpCounts> = None;
        for ends in [(local, remote), (remote, local)] {
            if let Some(counts) = self.by_ends.get(&ends) {
                found.get_or_insert_with(HttpCounts::default).add(counts);
            }
        }
        found
    }
}

/// An IPv4-mapped IPv6 address as IPv4, so both spellings of one end compare equal.
fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(IpAddr::to_canonical(&addr.ip()), addr.port())
}

#[cfg(test)]
mod tests {
    use std::{net::Ipv4Addr, sync::Arc};

    use tracer::model::HttpMethod;

    use super::*;

    fn stack(api: u8, application: u8, encryption: u8) -> ProtocolStack {
        ProtocolStack {
            api,
            application,
            encryption,
        }
    }

    #[test]
    fn protocol_names_combine_layers_top_first() {
        assert_eq!(protocol_name(&ProtocolStack::default()), None);
        let named = [
            (stack(0, PROTO_HTTP, 0), "HTTP"),
            (stack(0, PROTO_HTTP2, 0), "HTTP2"),
            (stack(PROTO_GRPC, PROTO_HTTP2, 0), "gRPC/HTTP2"),
            (stack(0, 0, PROTO_TLS), "TLS"),
            (stack(0, PROTO_HTTP, PROTO_TLS), "HTTP/TLS"),
            (stack(PROTO_GRPC, PROTO_HTTP2, PROTO_TLS), "gRPC/HTTP2/TLS"),
            (stack(0, PROTO_KAFKA, 0), "Kafka"),
            (stack(0, PROTO_MONGO, 0), "Mongo"),
            (stack(0, PROTO_POSTGRES, 0), "Postgres"),
            (stack(0, PROTO_AMQP, 0), "AMQP"),
            (stack(0, PROTO_REDIS, 0), "Redis"),
            (stack(0, PROTO_MYSQL, 0), "MySQL"),
            (stack(PROTO_GRPC, 0, 0), "gRPC"),
            (stack(7, 42, 3), "api7/app42/enc3"),
        ];
        for (stack, name) in named {
            assert_eq!(protocol_name(&stack).as_deref(), Some(name), "{stack:?}");
        }
    }

    fn key(client: &str, server: &str, path: &str) -> HttpKey {
        HttpKey {
            client: client.parse().unwrap(),
            server: server.parse().unwrap(),
            path: Arc::from(path),
            path_complete: true,
            method: HttpMethod::Get,
        }
    }

    fn stats(by_status: &[(u16, u64)]) -> HttpStats {
        let mut stats = HttpStats::default();
        for &(status, n) in by_status {
            for _ in 0..n {
                stats.add(status, 1_000);
            }
        }
        stats
    }

    fn tuple(src: &str, dst: &str, protocol: Protocol) -> ConnectionTuple {
        let src: SocketAddr = src.parse().unwrap();
        let dst: SocketAddr = dst.parse().unwrap();
        ConnectionTuple {
            src: src.ip(),
            dst: dst.ip(),
            sport: src.port(),
            dport: dst.port(),
            pid: 1,
            netns: 1,
            protocol,
        }
    }

    #[test]
    fn keys_match_the_client_and_the_server_socket_and_sum_paths_and_statuses() {
        let usm = [
            (
                key("10.0.0.1:40000", "10.0.0.2:80", "/a"),
                stats(&[(200, 6), (404, 2), (503, 1)]),
            ),
            (
                key("10.0.0.1:40000", "10.0.0.2:80", "/b"),
                stats(&[(500, 1)]),
            ),
            (
                key("10.0.0.1:40001", "10.0.0.2:80", "/a"),
                stats(&[(200, 5)]),
            ),
        ];
        let index = HttpIndex::new(usm.iter().map(|(k, s)| (k, s)));
        let want = Some(HttpCounts {
            requests: 10,
            client_errors: 2,
            server_errors: 2,
        });
        // The client's socket: local is the key's client.
        let client = tuple("10.0.0.1:40000", "10.0.0.2:80", Protocol::Tcp);
        assert_eq!(index.counts(&client), want);
        // The server's socket: local is the key's server.
        let server = tuple("10.0.0.2:80", "10.0.0.1:40000", Protocol::Tcp);
        assert_eq!(index.counts(&server), want);
        // Another connection of the same client host, and one that carried none.
        let other = tuple("10.0.0.1:40001", "10.0.0.2:80", Protocol::Tcp);
        assert_eq!(index.counts(&other).map(|c| c.requests), Some(5));
        let none = tuple("10.0.0.1:40002", "10.0.0.2:80", Protocol::Tcp);
        assert_eq!(index.counts(&none), None);
        // Same addresses over UDP: never HTTP/1.x.
        let udp = tuple("10.0.0.1:40000", "10.0.0.2:80", Protocol::Udp);
        assert_eq!(index.counts(&udp), None);
        // Ports are not interchangeable: the reversed ports alone are another connection.
        let swapped = tuple("10.0.0.1:80", "10.0.0.2:40000", Protocol::Tcp);
        assert_eq!(index.counts(&swapped), None);
    }

    #[test]
    fn ipv4_mapped_ends_match_plain_ipv4() {
        let usm = [(
            key("127.0.0.1:5000", "127.0.0.1:80", "/"),
            stats(&[(200, 3)]),
        )];
        let index = HttpIndex::new(usm.iter().map(|(k, s)| (k, s)));
        let mapped = ConnectionTuple {
            src: IpAddr::V6(Ipv4Addr::LOCALHOST.to_ipv6_mapped()),
            dst: IpAddr::V6(Ipv4Addr::LOCALHOST.to_ipv6_mapped()),
            sport: 80,
            dport: 5000,
            pid: 1,
            netns: 1,
            protocol: Protocol::Tcp,
        };
        assert_eq!(index.counts(&mapped).map(|c| c.requests), Some(3));
    }

    #[test]
    fn rates_per_second_and_the_5xx_share() {
        let counts = HttpCounts {
            requests: 40,
            client_errors: 10,
            server_errors: 4,
        };
        assert_eq!(counts.per_second(2.0), Some(20.0));
        assert_eq!(counts.per_second(0.0), None);
        assert_eq!(counts.per_second(f64::NAN), None);
        assert_eq!(counts.error_rate(), Some(0.1));
        assert_eq!(HttpCounts::default().error_rate(), None);
        assert_eq!(
            HttpIndex::default().counts(&tuple("1.1.1.1:1", "2.2.2.2:2", Protocol::Tcp)),
            None
        );
    }
}
