//! Telemetry handed to clients: what the pipeline refused, fixed or detected.

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

/// Named monotonic counters from the kernel side (e.g. `"tcp_sent_miscounts"`), turned into
/// per-client deltas by `NetworkState::kernel_telemetry_delta`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KernelCounters(pub Vec<(&'static str, u64)>);
