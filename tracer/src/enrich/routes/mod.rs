//! The route ("Via": gateway and interface) of outgoing connections, from netlink
//! `RTM_GETROUTE`, cached with a TTL.
//!
//! STUB: to be filled in (issue 9 item 4). The seam below is fixed.

use crate::{
    counter_set,
    model::ConnectionStats,
    telemetry::{CounterSource, Sample},
};

/// Configuration of the route cache.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoutesConfig {
    /// Look routes up at all (default on).
    pub enabled: bool,
}

impl Default for RoutesConfig {
    fn default() -> Self {
        Self { enabled: true }
    }
}

impl RoutesConfig {
    /// Checks the sizes.
    pub fn validate(&self) -> crate::Result<()> {
        Ok(())
    }
}

counter_set! {
    /// Counters of the route cache.
    pub struct RouteCounters {
        /// Lookups answered from the cache.
        route_cache_hits: Activity,
    }
}

/// The route cache (see the module docs).
pub struct Routes {
    counters: RouteCounters,
}

impl Routes {
    /// Starts the cache as configured.
    pub fn start(_config: &RoutesConfig) -> Self {
        Self {
            counters: RouteCounters::default(),
        }
    }

    /// Fills `via` of the outgoing connections to other hosts.
    pub fn resolve(&self, _conns: &mut [ConnectionStats]) {}
}

impl CounterSource for Routes {
    fn collect(&self, out: &mut Vec<Sample>) {
        self.counters.collect(out);
    }
}
