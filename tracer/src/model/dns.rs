//! DNS statistics as collected by the DNS snooper and attached to the client→server:53
//! connection they belong to.

use std::{collections::BTreeMap, net::IpAddr, sync::Arc};

use rustc_hash::FxHashMap;

use crate::model::tuple::Protocol;

/// Identifies the DNS conversation stats belong to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DnsKey {
    /// The DNS server (the real one, after NAT).
    pub server: IpAddr,
    /// The querying client address (after SNAT).
    pub client: IpAddr,
    /// The querying client port (after SNAT).
    pub client_port: u16,
    /// UDP or TCP.
    pub protocol: Protocol,
}

/// A DNS query type (1 = A, 28 = AAAA, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DnsQueryType(pub u16);

/// Outcome counters of the queries of one type for one domain.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DnsStats {
    /// Queries that got no answer within the snooper's timeout.
    pub timeouts: u32,
    /// Sum of latencies of successful queries, µs.
    pub success_latency_sum_us: u64,
    /// Sum of latencies of failed queries, µs.
    pub failure_latency_sum_us: u64,
    /// Answers by response code.
    pub count_by_rcode: BTreeMap<u32, u32>,
}

impl DnsStats {
    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &Self) {
        self.timeouts = self.timeouts.saturating_add(other.timeouts);
        self.success_latency_sum_us = self
            .success_latency_sum_us
            .saturating_add(other.success_latency_sum_us);
        self.failure_latency_sum_us = self
            .failure_latency_sum_us
            .saturating_add(other.failure_latency_sum_us);
        for (rcode, count) in &other.count_by_rcode {
            let slot = self.count_by_rcode.entry(*rcode).or_default();
            *slot = slot.saturating_add(*count);
        }
    }
}

/// DNS stats of one conversation: domain → query type → stats.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DomainStats(pub FxHashMap<Arc<str>, FxHashMap<DnsQueryType, DnsStats>>);

impl DomainStats {
    /// Number of (domain, query type) leaves, the unit DNS limits are counted in.
    pub fn leaf_count(&self) -> usize {
        self.0.values().map(|by_type| by_type.len()).sum()
    }

    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &Self) {
        for (domain, by_type) in &other.0 {
            let mine = self.0.entry(Arc::clone(domain)).or_default();
            for (qtype, stats) in by_type {
                mine.entry(*qtype).or_default().merge(stats);
            }
        }
    }
}

/// What the DNS snooper collected since its previous batch, by conversation.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DnsStatsBatch(pub FxHashMap<DnsKey, DomainStats>);

impl DnsStatsBatch {
    /// Number of (key, domain, query type) leaves.
    pub fn leaf_count(&self) -> usize {
        self.0.values().map(DomainStats::leaf_count).sum()
    }

    /// Whether the batch holds nothing.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_domain_stats_adds_counts_per_domain_type_and_rcode() {
        let mut a = DomainStats::default();
        let mut stats = DnsStats {
            timeouts: 1,
            ..Default::default()
        };
        stats.count_by_rcode.insert(0, 2);
        a.0.entry(Arc::from("x.com"))
            .or_default()
            .insert(DnsQueryType(1), stats.clone());
        let b = a.clone();
        a.merge(&b);
        let merged = &a.0[&Arc::<str>::from("x.com")][&DnsQueryType(1)];
        assert_eq!(merged.timeouts, 2);
        assert_eq!(merged.count_by_rcode[&0], 4);
        assert_eq!(a.leaf_count(), 1);
    }
}
