//! NAT translations from the kernel's conntrack table, over netlink.
//!
//! STUB: to be filled in (issue 9 item 3). The seam below is fixed.

use std::collections::HashSet;

use crate::{
    counter_set,
    model::{ConnectionStats, IpTranslation},
    telemetry::{CounterSource, Sample},
};

/// Configuration of the conntrack enrichment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConntrackConfig {
    /// Follow conntrack at all (default on).
    pub enabled: bool,
}

impl Default for ConntrackConfig {
    fn default() -> Self {
        Self { enabled: true }
    }
}

impl ConntrackConfig {
    /// Checks the sizes.
    pub fn validate(&self) -> crate::Result<()> {
        Ok(())
    }
}

counter_set! {
    /// Counters of the conntrack enrichment.
    pub struct ConntrackCounters {
        /// NAT entries evicted from the bounded table before their connection ended.
        conntrack_evicted: Loss,
    }
}

/// The conntrack follower (see the module docs).
pub struct Conntrack {
    counters: ConntrackCounters,
}

impl Conntrack {
    /// Starts following conntrack as configured.
    pub fn start(_config: &ConntrackConfig) -> Self {
        Self {
            counters: ConntrackCounters::default(),
        }
    }

    /// Opens what is missing for `netns` and takes in the events received since the last sync.
    pub fn sync(&self, _netns: &HashSet<u32>) {}

    /// The NAT translation of an open connection, if conntrack has one.
    pub fn translation(&self, _conn: &ConnectionStats) -> Option<IpTranslation> {
        None
    }

    /// The NAT translation of a connection that ended; the entry is forgotten.
    pub fn take_translation(&self, _conn: &ConnectionStats) -> Option<IpTranslation> {
        None
    }
}

impl CounterSource for Conntrack {
    fn collect(&self, out: &mut Vec<Sample>) {
        self.counters.collect(out);
    }
}
