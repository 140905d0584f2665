//! Enrichment: what the tracer adds to the connections the kernel reports, one module each.
//!
//! | module | needs | fills | when in a call |
//! |---|---|---|---|
//! | [`conntrack`] | netlink conntrack (NEW/DESTROY events, a dump at start) in every namespace with traced connections | [`ConnectionStats::nat`] | before the state (aggregation keys on it), open and closed |
//! | [`containers`] | the kernel's cgroup id of the owner ([`ConnectionStats::cgroup_id`]), the cgroup v2 hierarchy | [`ContainerIds::source`](crate::model::ContainerIds) before the state, [`ContainerIds::dest`](crate::model::ContainerIds) after it (LocalResolver) | both |
//! | [`routes`] | netlink `RTM_GETROUTE` | [`ConnectionStats::via`] | after the state, on the client's result |
//!
//! Each module has its own config (on/off, sizes, TTLs) in [`EnrichConfig`] and its own
//! counters ([`crate::telemetry::CounterSource`]); none fails the tracer: a facility the host
//! lacks (conntrack not loaded, no cgroup v2 mount) is said once in the log and counted.
//! [`Enrichers`] is the one seam [`crate::Tracer`] calls, at three fixed points of
//! `get_active_connections` (see `tracer.rs`), plus once per stored closed connection.

pub mod conntrack;
pub mod containers;
pub mod routes;

use std::collections::HashSet;

use crate::{
    model::ConnectionStats,
    telemetry::{CounterSource, Sample},
};

/// The configuration of every enrichment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EnrichConfig {
    /// Container ids from cgroups.
    pub containers: containers::ContainersConfig,
    /// NAT translations from conntrack.
    pub conntrack: conntrack::ConntrackConfig,
    /// Gateway and interface of outgoing connections.
    pub routes: routes::RoutesConfig,
}

impl EnrichConfig {
    /// Checks every size and TTL.
    pub fn validate(&self) -> crate::Result<()> {
        self.containers.validate()?;
        self.conntrack.validate()?;
        self.routes.validate()
    }
}

/// Every enrichment, as the tracer calls them.
pub struct Enrichers {
    containers: containers::Containers,
    conntrack: conntrack::Conntrack,
    routes: routes::Routes,
}

impl Enrichers {
    /// Starts every enabled enrichment. Never fails: what cannot start says why once and
    /// counts what it could not enrich.
    pub fn start(config: &EnrichConfig) -> Self {
        Self {
            containers: containers::Containers::start(&config.containers),
            conntrack: conntrack::Conntrack::start(&config.conntrack),
            routes: routes::Routes::start(&config.routes),
        }
    }

    /// Takes in what the event sources delivered since the last call (conntrack's events), for
    /// the namespaces that have traced connections (`netns`: `ConnectionTuple::netns` inodes).
    /// Called before any connection of a call or of a flush is enriched.
    pub fn sync(&self, netns: &HashSet<u32>) {
        self.conntrack.sync(netns);
    }

    /// What aggregation needs, on connections read from the kernel map: NAT and the source
    /// container.
    pub fn attach_open(&self, conns: &mut [ConnectionStats]) {
        self.conntrack.attach(conns);
        self.containers.attach_sources(conns);
    }

    /// The same on a connection that ended, as it is stored: its NAT entry is looked up and
    /// then forgotten (the connection will not be seen again).
    pub fn attach_closed(&self, conn: &mut ConnectionStats) {
        conn.nat = self.conntrack.take_translation(conn);
        conn.containers.source = self.containers.source(conn.cgroup_id);
    }

    /// On a client's result (after merge, intra-host and aggregation): destination containers
    /// of intra-host connections, and the route of the others.
    pub fn resolve(&self, conns: &mut [ConnectionStats]) {
        self.containers.resolve_dest(conns);
        self.routes.resolve(conns);
    }

    /// Every enrichment's counters.
    pub fn collect(&self, out: &mut Vec<Sample>) {
        self.containers.collect(out);
        self.conntrack.collect(out);
        self.routes.collect(out);
    }
}
