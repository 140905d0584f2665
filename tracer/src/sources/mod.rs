//! Data sources fed by the kernel's packet capture (pure userspace: they consume ring records
//! decoded by [`crate::decode::packet_record`] and never touch the kernel themselves).
//!
//! | module | needs | fills | when in a call |
//! |---|---|---|---|
//! | [`dns`] | the capture's records (DNS ports) | [`ConnectionStats::dns`] (through the state, per client) and [`Connections::dns`](crate::model::Connections) | stats before the state, names after the enrichments |
//!
//! [`Sources`] is the one seam [`crate::Tracer`] calls: `ingest` from the capture's consumer
//! thread (and once per call to drain what is left), `take_dns` before the state and
//! `names_for` on the client's result. A disabled source ignores every record and returns
//! nothing.

pub mod dns;

use std::{net::IpAddr, sync::Arc};

use rustc_hash::FxHashMap;

use crate::{
    model::{ConnectionStats, DnsStatsBatch},
    telemetry::{CounterSource, Sample},
};

/// Every source the capture feeds, as the tracer calls them.
#[derive(Debug)]
pub struct Sources {
    dns: dns::Dns,
}

impl Sources {
    /// Starts every source with empty state.
    pub fn start(dns: &dns::DnsConfig) -> Self {
        Self {
            dns: dns::Dns::start(dns),
        }
    }

    /// Consumes one raw record of the capture's ring.
    pub fn ingest(&self, record: &[u8]) {
        self.dns.ingest(record);
    }

    /// The DNS stats since the previous take; queries unanswered by `now_ns` past the timeout
    /// are in it as timeouts.
    pub fn take_dns(&self, now_ns: u64) -> DnsStatsBatch {
        self.dns.take_stats(now_ns)
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
}

impl CounterSource for Sources {
    fn collect(&self, out: &mut Vec<Sample>) {
        self.dns.collect(out);
    }
}
