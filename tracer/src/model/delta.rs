//! What a client gets back from one call.

use std::{net::IpAddr, sync::Arc};

use rustc_hash::FxHashMap;

use crate::model::{
    connection::ConnectionStats,
    telemetry::{CounterSet, StateTelemetry},
    usm::UsmStats,
};

/// The state pipeline's answer to one client call.
#[derive(Debug, Clone, Default)]
pub struct Delta {
    /// Connections with something to report: active ones first, then closed ones
    /// ([`ConnectionStats::is_closed`]). Each appears once; `last` holds its delta.
    pub conns: Vec<ConnectionStats>,
    /// USM stats accumulated since this client's previous call.
    pub usm: UsmStats,
    /// Pipeline telemetry since this client's previous call.
    pub telemetry: StateTelemetry,
    /// The counters handed in, as they changed since this client's previous call, followed by
    /// `telemetry`'s.
    pub counters: CounterSet,
}

/// Everything the library returns to a client for one call: the [`Delta`] plus the parts that
/// come from outside the state pipeline.
#[derive(Debug, Clone, Default)]
pub struct Connections {
    /// Connections, as in [`Delta::conns`].
    pub conns: Vec<ConnectionStats>,
    /// Reverse DNS: hostnames for the IPs in `conns`.
    pub dns: FxHashMap<IpAddr, Vec<Arc<str>>>,
    /// USM stats, as in [`Delta::usm`].
    pub usm: UsmStats,
    /// Pipeline telemetry since this client's previous call (also in `counters`).
    pub state_telemetry: StateTelemetry,
    /// Every counter (kernel, userspace, enrichments, pipeline), typed, as it changed since this
    /// client's previous call (gauges: their level).
    pub counters: CounterSet,
}

impl Connections {
    /// Wraps a delta; `dns` is filled by the caller.
    pub fn from_delta(delta: Delta) -> Self {
        Self {
            conns: delta.conns,
            dns: FxHashMap::default(),
            usm: delta.usm,
            state_telemetry: delta.telemetry,
            counters: delta.counters,
        }
    }
}
