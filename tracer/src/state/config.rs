//! Limits and switches of the state pipeline.

use crate::{
    error::{Error, Result},
    model::EphemeralPortRange,
    state::{aggregate::AggregationConfig, snapshot::MAX_POSITION},
};

/// Configuration of [`super::NetworkState`]. Defaults follow Datadog where it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateConfig {
    /// Most clients at once; more are refused (`clients_refused`). Default 64.
    pub max_clients: usize,
    /// A client that made no call for this long is forgotten. Default 2 min (Datadog).
    pub client_expiry_ns: u64,
    /// Most connections tracked per client in one call; more are not reported
    /// (`conn_dropped`). Default 131 072 (Datadog: 75 000 with a 65 536-entry kernel map).
    pub max_tracked_per_client: usize,
    /// Most closed connections held for all clients together (`closed_conn_dropped` beyond).
    /// Default 131 072.
    pub max_closed_connections: usize,
    /// Most DNS leaves (domain × query type) held (`dns_stats_dropped` beyond). Default 75 000.
    pub max_dns_stats: usize,
    /// Most USM keys held (`usm_stats_dropped` beyond). Default 100 000, as Datadog's
    /// `max_http_stats_buffered` (which bounds both its HTTP stat keeper and its state): at least
    /// the HTTP source's `max_stats`, since a batch heavier than this is refused whole.
    pub max_usm_stats: usize,
    /// The ephemeral port range, for the direction fixes (read it with
    /// [`EphemeralPortRange::read`]).
    pub ephemeral_ports: EphemeralPortRange,
    /// Aggregation switches.
    pub aggregation: AggregationConfig,
}

/// Upper bound of the per-client and closed limits (positions must fit the snapshot mark).
pub const MAX_CONNECTION_LIMIT: usize = MAX_POSITION / 2;

impl Default for StateConfig {
    fn default() -> Self {
        Self {
            max_clients: 64,
            client_expiry_ns: 120_000_000_000,
            max_tracked_per_client: 131_072,
            max_closed_connections: 131_072,
            max_dns_stats: 75_000,
            max_usm_stats: 100_000,
            ephemeral_ports: EphemeralPortRange::default(),
            aggregation: AggregationConfig::default(),
        }
    }
}

impl StateConfig {
    /// Checks the limits.
    pub fn validate(&self) -> Result<()> {
        let check = |ok: bool, what: &str| {
            if ok {
                Ok(())
            } else {
                Err(Error::InvalidConfig(format!("state: {what}")))
            }
        };
        check(self.max_clients >= 1, "max_clients must be at least 1")?;
        check(
            self.client_expiry_ns >= 1,
            "client_expiry_ns must be at least 1",
        )?;
        check(
            (1..=MAX_CONNECTION_LIMIT).contains(&self.max_tracked_per_client),
            "max_tracked_per_client must be in 1..=MAX_CONNECTION_LIMIT",
        )?;
        check(
            (1..=MAX_CONNECTION_LIMIT).contains(&self.max_closed_connections),
            "max_closed_connections must be in 1..=MAX_CONNECTION_LIMIT",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_valid_and_zero_limits_are_rejected() {
        assert!(StateConfig::default().validate().is_ok());
        for bad in [
            StateConfig {
                max_clients: 0,
                ..Default::default()
            },
            StateConfig {
                max_tracked_per_client: 0,
                ..Default::default()
            },
            StateConfig {
                max_closed_connections: usize::MAX,
                ..Default::default()
            },
            StateConfig {
                client_expiry_ns: 0,
                ..Default::default()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }
}
