//! Application-protocol (USM) statistics, passed through the pipeline to every client.

use std::{net::SocketAddr, sync::Arc};

use rustc_hash::FxHashMap;

/// Application protocol of a USM statistic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AppProtocol {
    /// HTTP/1.x.
    Http,
    /// HTTP/2 (and gRPC).
    Http2,
    /// Kafka.
    Kafka,
    /// PostgreSQL.
    Postgres,
    /// Redis.
    Redis,
}

/// What a USM statistic is about: a client, a server and a resource (path, topic, command).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UsmKey {
    /// The protocol.
    pub protocol: AppProtocol,
    /// Client end.
    pub client: SocketAddr,
    /// Server end.
    pub server: SocketAddr,
    /// Path, topic, query verb or command.
    pub resource: Arc<str>,
}

/// Request counters of one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UsmCounters {
    /// Requests seen.
    pub requests: u64,
    /// Requests that failed (protocol-specific meaning, e.g. HTTP status >= 500).
    pub errors: u64,
    /// Sum of request latencies, ns.
    pub latency_sum_ns: u64,
}

/// USM statistics since the previous batch (as produced by the USM monitor) or since a
/// client's previous call (as handed to the client).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UsmStats(pub FxHashMap<UsmKey, UsmCounters>);

impl UsmStats {
    /// Number of keys.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no keys.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &Self) {
        for (key, counters) in &other.0 {
            let mine = self.0.entry(key.clone()).or_default();
            mine.requests = mine.requests.saturating_add(counters.requests);
            mine.errors = mine.errors.saturating_add(counters.errors);
            mine.latency_sum_ns = mine.latency_sum_ns.saturating_add(counters.latency_sum_ns);
        }
    }
}
