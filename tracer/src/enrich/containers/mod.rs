//! Container ids: the source container of every connection from the owner's cgroup, and the
//! destination container of intra-host connections (Datadog's LocalResolver).
//!
//! STUB: to be filled in (issue 9 item 2). The seam below is fixed.

use std::sync::Arc;

use crate::{
    counter_set,
    model::ConnectionStats,
    telemetry::{CounterSource, Sample},
};

/// Configuration of container resolution.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainersConfig {
    /// Resolve container ids at all (default on).
    pub enabled: bool,
}

impl Default for ContainersConfig {
    fn default() -> Self {
        Self { enabled: true }
    }
}

impl ContainersConfig {
    /// Checks the sizes.
    pub fn validate(&self) -> crate::Result<()> {
        Ok(())
    }
}

counter_set! {
    /// Counters of container resolution.
    pub struct ContainerCounters {
        /// Cgroup ids looked up that no cgroup directory had.
        container_cgroup_unknown: Loss,
    }
}

/// Container resolution (see the module docs).
pub struct Containers {
    counters: ContainerCounters,
}

impl Containers {
    /// Starts resolution as configured.
    pub fn start(_config: &ContainersConfig) -> Self {
        Self {
            counters: ContainerCounters::default(),
        }
    }

    /// The container id of the cgroup with id `cgroup_id` (0: unknown owner), if it is a
    /// container's.
    pub fn source(&self, _cgroup_id: u64) -> Option<Arc<str>> {
        None
    }

    /// Fills `containers.dest` of intra-host connections (LocalResolver).
    pub fn resolve_dest(&self, _conns: &mut [ConnectionStats]) {}
}

impl CounterSource for Containers {
    fn collect(&self, out: &mut Vec<Sample>) {
        self.counters.collect(out);
    }
}
