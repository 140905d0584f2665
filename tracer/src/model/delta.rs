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
    /// Application-protocol stats since this client's previous call, as in [`Delta::usm`]:
    /// every transaction the sources recorded reaches every client once. HTTP/1.x stats are
    /// keyed by (client, server, quantized path, method), then by status code, each with a
    /// request count and a latency sketch (ns, 1 % relative accuracy).
    ///
    /// Requests and p50/p99 latency per path and status, over every client and server:
    ///
    /// ```no_run
    /// use std::{collections::BTreeMap, sync::Arc};
    ///
    /// use tracer::{Config, Tracer, model::RequestStats};
    ///
    /// let tracer = Tracer::new(Config::default())?;
    /// tracer.register_client("my-agent")?;
    /// std::thread::sleep(std::time::Duration::from_secs(30));
    /// let conns = tracer.get_active_connections("my-agent")?;
    /// let mut by_path: BTreeMap<(&'static str, Arc<str>, u16), RequestStats> = BTreeMap::new();
    /// for (key, stats) in &conns.usm.http {
    ///     for (status, requests) in &stats.0 {
    ///         let slot = (key.method.as_str(), Arc::clone(&key.path), *status);
    ///         // Counts add up and sketches merge.
    ///         by_path.entry(slot).or_default().merge(requests);
    ///     }
    /// }
    /// for ((method, path, status), requests) in &by_path {
    ///     let ms = |q: f64| requests.latency_quantile(q).unwrap_or(0.0) / 1e6;
    ///     println!(
    ///         "{method} {path} {status}: {} requests, p50 {:.2} ms, p99 {:.2} ms",
    ///         requests.count,
    ///         ms(0.5),
    ///         ms(0.99),
    ///     );
    /// }
    /// # Ok::<(), tracer::Error>(())
    /// ```
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
