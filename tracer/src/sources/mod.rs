//! Data sources fed by the kernel's packet capture (pure userspace: they consume ring records
//! decoded by [`crate::decode`] and never touch the kernel themselves).
//!
//! | module | needs | fills | when in a call |
//! |---|---|---|---|
//! | [`dns`] | the capture's records (DNS ports) | [`ConnectionStats::dns`] (through the state, per client) and [`Connections::dns`](crate::model::Connections) | stats before the state, names after the enrichments |
//! | [`http`] | the HTTP parser's finished transactions | [`Connections::usm`](crate::model::Connections) (through the state, per client) | stats before the state |
//! | [`tls`] | `/proc` (which processes map a TLS library) | where the TLS uprobes are attached: their records join the HTTP parser's in the capture's ring | its own thread, every `tls.refresh` |
//!
//! [`Sources`] is the one seam [`crate::Tracer`] calls: `ingest` (or `ingest_http` for a ring
//! that only carries HTTP transactions) from the capture's consumer thread and once per call to
//! drain what is left, `take_dns` and `take_http` before the state, and `names_for` on the
//! client's result. A disabled source ignores every record and returns nothing.

pub mod dns;
pub mod http;
pub mod tls;

use std::{net::IpAddr, sync::Arc};

use rustc_hash::FxHashMap;
use tracer_common::http::PACKET_KIND_HTTP;

use crate::{
    decode,
    model::{ConnectionStats, DnsStatsBatch, UsmStats},
    telemetry::{CounterSource, Sample},
};

/// Every source the capture feeds, as the tracer calls them.
#[derive(Debug)]
pub struct Sources {
    dns: dns::Dns,
    http: http::Http,
}

impl Sources {
    /// Starts every source with empty state.
    pub fn start(dns: &dns::DnsConfig, http: &http::HttpConfig) -> Self {
        Self {
            dns: dns::Dns::start(dns),
            http: http::Http::start(http),
        }
    }

    /// Consumes one raw record of the capture's ring, by its kind (the byte every record kind
    /// keeps at `tracer_common::http::RECORD_KIND_OFFSET`): HTTP transactions go to the HTTP
    /// source, everything else to the DNS source, which counts what is not DNS as invalid.
    pub fn ingest(&self, record: &[u8]) {
        match decode::record_kind(record) {
            Some(PACKET_KIND_HTTP) => self.http.ingest(record),
            _ => self.dns.ingest(record),
        }
    }

    /// Consumes one raw record of a ring that carries only HTTP transactions.
    pub fn ingest_http(&self, record: &[u8]) {
        self.http.ingest(record);
    }

    /// The DNS stats since the previous take; queries unanswered by `now_ns` past the timeout
    /// are in it as timeouts.
    pub fn take_dns(&self, now_ns: u64) -> DnsStatsBatch {
        self.dns.take_stats(now_ns)
    }

    /// The HTTP stats since the previous take (see [`http::Http::take_stats`]).
    pub fn take_http(&self, now_ns: u64) -> UsmStats {
        self.http.take_stats(now_ns)
    }

    /// Reverse DNS for the addresses of `conns`, and only those.
    pub fn names_for(
        &self,
        conns: &[ConnectionStats],
        now_ns: u64,
    ) -> FxHashMap<IpAddr, Vec<Arc<str>>> {
        self.dns.names_for(conns, now_ns)
    }

    /// The DNS source itself (its counters, for tests and exporters).
    pub fn dns(&self) -> &dns::Dns {
        &self.dns
    }

    /// The HTTP source itself (its counters, for tests and exporters).
    pub fn http(&self) -> &http::Http {
        &self.http
    }
}

impl CounterSource for Sources {
    fn collect(&self, out: &mut Vec<Sample>) {
        self.dns.collect(out);
        self.http.collect(out);
    }
}

#[cfg(test)]
mod tests {
    use tracer_common::http::{HTTP_ROLE_CLIENT, HTTP_TRANSACTION_LEN, HttpTransaction};

    use super::*;

    fn counter(sources: &Sources, name: &str) -> u64 {
        let mut out = Vec::new();
        sources.collect(&mut out);
        out.iter()
            .find(|s| s.info.name == name)
            .map(|s| s.value)
            .unwrap_or_else(|| panic!("no counter {name}"))
    }

    #[test]
    fn ingest_dispatches_by_record_kind_and_collect_lists_both_sources() {
        let sources = Sources::start(&dns::DnsConfig::default(), &http::HttpConfig::default());
        let mut tx = HttpTransaction::EMPTY;
        tx.family = tracer_common::conn::AF_INET;
        tx.role = HTTP_ROLE_CLIENT;
        tx.method = 1;
        tx.status = 200;
        tx.request_ns = 1;
        tx.response_ns = 2;
        tx.path[0] = b'/';
        tx.path_len = 1;
        tx.path_captured = 1;
        // SAFETY: plain old data viewed as bytes.
        let bytes = unsafe {
            std::slice::from_raw_parts((&raw const tx).cast::<u8>(), HTTP_TRANSACTION_LEN)
        };
        sources.ingest(bytes);
        sources.ingest_http(bytes);
        sources.ingest(&[0u8; 4]);
        assert_eq!(counter(&sources, "http_records"), 2);
        assert_eq!(counter(&sources, "http_recorded"), 2);
        assert_eq!(counter(&sources, "dns_records"), 1);
        assert_eq!(counter(&sources, "dns_records_invalid"), 1);
        let usm = sources.take_http(10);
        assert_eq!(usm.http.values().map(|s| s.count()).sum::<u64>(), 2);
        assert!(sources.take_http(20).is_empty());
    }
}
