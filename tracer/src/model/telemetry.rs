//! Telemetry handed to clients: what the pipeline refused, fixed or detected, and the one typed
//! counter set (kernel, userspace, enrichments).

use crate::telemetry::{CounterInfo, Sample};

/// Counters of the state pipeline. In a [`crate::model::Delta`] each field is what happened for
/// that client since its previous call; the `NetworkState` getters return totals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StateTelemetry {
    /// Active connections not reported because the client's per-client state was full.
    pub conn_dropped: u64,
    /// Closed connections that never reached the client because the closed store was full.
    pub closed_conn_dropped: u64,
    /// Counter readings that went down (see [`crate::model::StatCounters::delta_since`]).
    pub stats_underflows: u64,
    /// Two different tuples seen with the same cookie.
    pub stats_cookie_collisions: u64,
    /// DNS stats leaves (domain × query type) dropped by the DNS limit.
    pub dns_stats_dropped: u64,
    /// USM keys dropped by the USM limit.
    pub usm_stats_dropped: u64,
    /// UDP connections turned from incoming to outgoing.
    pub incoming_direction_fixes: u64,
    /// Intra-host connections turned from outgoing to incoming.
    pub outgoing_direction_fixes: u64,
    /// Client registrations or calls refused (client cap reached); not per client.
    pub clients_refused: u64,
}

impl StateTelemetry {
    /// The description of every field, in the order [`StateTelemetry::samples`] lists them.
    pub const INFO: [CounterInfo; 9] = [
        CounterInfo::loss(
            "conn_dropped",
            "Active connections not reported because the client's per-client state was full.",
        ),
        CounterInfo::loss(
            "closed_conn_dropped",
            "Closed connections that never reached the client because the closed store was full.",
        ),
        CounterInfo::loss("stats_underflows", "Counter readings that went down."),
        CounterInfo::loss(
            "stats_cookie_collisions",
            "Two different tuples seen with the same cookie.",
        ),
        CounterInfo::loss(
            "dns_stats_dropped",
            "DNS stats leaves (domain x query type) dropped by the DNS limit.",
        ),
        CounterInfo::loss("usm_stats_dropped", "USM keys dropped by the USM limit."),
        CounterInfo::activity(
            "incoming_direction_fixes",
            "UDP connections turned from incoming to outgoing.",
        ),
        CounterInfo::activity(
            "outgoing_direction_fixes",
            "Intra-host connections turned from outgoing to incoming.",
        ),
        CounterInfo::loss(
            "clients_refused",
            "Client registrations or calls refused (client cap reached).",
        ),
    ];

    /// Every field as a typed sample.
    pub fn samples(&self) -> impl Iterator<Item = Sample> + use<> {
        let values = [
            self.conn_dropped,
            self.closed_conn_dropped,
            self.stats_underflows,
            self.stats_cookie_collisions,
            self.dns_stats_dropped,
            self.usm_stats_dropped,
            self.incoming_direction_fixes,
            self.outgoing_direction_fixes,
            self.clients_refused,
        ];
        Self::INFO
            .into_iter()
            .zip(values)
            .map(|(info, value)| Sample::new(info, value))
    }

    /// Field-wise saturating sum.
    pub fn add(&self, other: &Self) -> Self {
        Self {
            conn_dropped: self.conn_dropped.saturating_add(other.conn_dropped),
            closed_conn_dropped: self
                .closed_conn_dropped
                .saturating_add(other.closed_conn_dropped),
            stats_underflows: self.stats_underflows.saturating_add(other.stats_underflows),
            stats_cookie_collisions: self
                .stats_cookie_collisions
                .saturating_add(other.stats_cookie_collisions),
            dns_stats_dropped: self
                .dns_stats_dropped
                .saturating_add(other.dns_stats_dropped),
            usm_stats_dropped: self
                .usm_stats_dropped
                .saturating_add(other.usm_stats_dropped),
            incoming_direction_fixes: self
                .incoming_direction_fixes
                .saturating_add(other.incoming_direction_fixes),
            outgoing_direction_fixes: self
                .outgoing_direction_fixes
                .saturating_add(other.outgoing_direction_fixes),
            clients_refused: self.clients_refused.saturating_add(other.clients_refused),
        }
    }
}

/// The one counter set: every counter of the kernel side, of userspace, of the enrichments and
/// of the state pipeline, each with its name, kind and doc line. From
/// [`crate::Tracer::counters`] these are totals since start; in [`crate::model::Connections`]
/// they are what changed since the same client's previous call (gauges: their level).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CounterSet(pub Vec<Sample>);

impl CounterSet {
    /// The value of the counter named `name`, if the set has it.
    pub fn get(&self, name: &str) -> Option<u64> {
        self.0.iter().find(|s| s.info.name == name).map(|s| s.value)
    }

    /// The value of the counter named `name`, 0 if the set lacks it.
    pub fn value(&self, name: &str) -> u64 {
        self.get(name).unwrap_or(0)
    }

    /// Every sample.
    pub fn iter(&self) -> impl Iterator<Item = &Sample> + '_ {
        self.0.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::CounterKind;

    #[test]
    fn state_samples_follow_the_fields_with_their_kinds() {
        let t = StateTelemetry {
            closed_conn_dropped: 3,
            outgoing_direction_fixes: 2,
            ..StateTelemetry::default()
        };
        let set = CounterSet(t.samples().collect());
        assert_eq!(set.get("closed_conn_dropped"), Some(3));
        assert_eq!(set.value("outgoing_direction_fixes"), 2);
        assert_eq!(set.get("no_such_counter"), None);
        let kinds: Vec<_> = set.iter().map(|s| (s.info.name, s.info.kind)).collect();
        assert!(kinds.contains(&("closed_conn_dropped", CounterKind::Loss)));
        assert!(kinds.contains(&("outgoing_direction_fixes", CounterKind::Activity)));
    }
}
