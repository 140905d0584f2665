//! `nettrace serve`'s arguments (clap, derive).

use std::{net::SocketAddr, time::Duration};

use clap::{ArgGroup, Args};
use tracer::BackendChoice;

use crate::args::{parse_backend, parse_interval};

/// Default series bound.
pub const DEFAULT_MAX_SERIES: usize = 10_000;

/// Serve the host's traffic and the tracer's own counters as Prometheus metrics and/or push
/// them over OTLP/HTTP.
#[derive(Debug, Clone, PartialEq, Args)]
#[command(group(
    ArgGroup::new("export")
        .args(["listen", "otlp_endpoint"])
        .required(true)
        .multiple(true)
))]
pub struct ServeArgs {
    /// serve Prometheus metrics at http://ADDR/metrics (e.g. 0.0.0.0:9464)
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// push OTLP/HTTP (protobuf) metrics to this collector (e.g. http://collector:4318;
    /// /v1/metrics is added when the URL has no path)
    #[arg(long, value_name = "URL")]
    pub otlp_endpoint: Option<String>,
    /// seconds between two OTLP pushes (0.1 to 86400)
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_interval)]
    pub otlp_interval: Duration,
    /// most series per exporter; updates of series past it are dropped and counted
    /// (nettrace_series_dropped_total)
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_SERIES)]
    pub max_series: usize,
    /// auto, fentry, kprobe or tracepoint
    #[arg(long, value_name = "NAME", default_value = "auto", value_parser = parse_backend)]
    pub backend: BackendChoice,
}
