//! `nettrace serve`: the tracer's traffic and its own telemetry for a fleet, as a Prometheus
//! `/metrics` endpoint and/or OTLP/HTTP pushes to a collector.
//!
//! Each exporter is one client of the library ([`PROMETHEUS_CLIENT`], [`OTLP_CLIENT`]): a
//! scrape (or a push interval) reads that client's delta and adds it to cumulative counters,
//! so every byte is counted once per exporter, whatever the scrape interval.

pub mod args;
mod otlp;
mod prom;
pub mod series;

use std::{
    io::{self, Write as _},
    sync::Arc,
    thread,
    time::{Duration, Instant},
};

use rustc_hash::FxHashMap;
use tracer::{Config, Tracer, model::ConnectionStats};

pub use self::args::ServeArgs;
use crate::{process::ProcessNames, signal};

/// The tracer client each Prometheus scrape reads with.
pub const PROMETHEUS_CLIENT: &str = "nettrace-prometheus";
/// The tracer client the OTLP push loop reads with.
pub const OTLP_CLIENT: &str = "nettrace-otlp";
/// Longest wait between two checks for SIGINT / SIGTERM.
const SIGNAL_POLL: Duration = Duration::from_millis(100);
/// A client unread for this long is forgotten by the tracer (and its next read would start
/// again from every open connection's totals): longer than any sane scrape interval.
const CLIENT_EXPIRY: Duration = Duration::from_secs(15 * 60);

/// Names of connection owners: the kernel's `comm` first (right even after the process
/// exited), `/proc` when it is empty.
#[derive(Default)]
struct Names {
    procfs: ProcessNames,
    interned: FxHashMap<String, Arc<str>>,
}

impl Names {
    fn of(&mut self, conn: &ConnectionStats) -> Arc<str> {
        let name = if conn.comm.is_empty() {
            self.procfs.name(conn.tuple.pid)
        } else {
            conn.comm.to_string()
        };
        Arc::clone(
            self.interned
                .entry(name.clone())
                .or_insert_with(|| name.into()),
        )
    }

    fn end_read(&mut self) {
        self.procfs.end_snapshot();
        // Bounded: names of this read only are kept for the next.
        if self.interned.len() > 4096 {
            self.interned.clear();
        }
    }
}

/// Runs until SIGINT or SIGTERM.
pub fn run(args: &ServeArgs) -> Result<(), String> {
    signal::install().map_err(|err| format!("installing the signal handlers: {err}"))?;
    let mut config = Config {
        backend: args.backend,
        ..Config::default()
    };
    config.filters.collect_local_dns = true;
    let expiry = CLIENT_EXPIRY.max(args.otlp_interval.saturating_mul(3));
    config.state.client_expiry_ns = config
        .state
        .client_expiry_ns
        .max(u64::try_from(expiry.as_nanos()).unwrap_or(u64::MAX));
    let tracer = Arc::new(Tracer::new(config).map_err(|err| err.to_string())?);
    let _ = writeln!(
        io::stderr(),
        "nettrace serve: attached with {} ({})",
        tracer.backend(),
        tracer.plan().reason
    );
    let initial = tracer
        .counters()
        .map_err(|err| format!("reading the tracer's counters: {err}"))?;

    let pusher = match &args.otlp_endpoint {
        Some(endpoint) => {
            let exporter = otlp::OtlpExporter::new(endpoint, args.otlp_interval, args.max_series)?;
            tracer
                .register_client(OTLP_CLIENT)
                .map_err(|err| format!("registering {OTLP_CLIENT}: {err}"))?;
            let tracer = Arc::clone(&tracer);
            let interval = args.otlp_interval;
            let _ = writeln!(
                io::stderr(),
                "nettrace serve: pushing OTLP to {} every {:?}",
                otlp::metrics_url(endpoint),
                interval
            );
            Some(
                thread::Builder::new()
                    .name("otlp".into())
                    .spawn(move || push_loop(&tracer, exporter, interval))
                    .map_err(|err| format!("starting the OTLP thread: {err}"))?,
            )
        }
        None => None,
    };

    let served = match args.listen {
        Some(addr) => serve_prometheus(&tracer, addr, args.max_series, &initial.0),
        None => {
            while !signal::stop_requested() {
                thread::sleep(SIGNAL_POLL);
            }
            Ok(())
        }
    };
    // Stop the pusher (it sees the same flag) and report its last push.
    let pushed = match pusher {
        Some(handle) => handle
            .join()
            .unwrap_or_else(|_| Err("the OTLP thread panicked".to_owned())),
        None => Ok(()),
    };
    served.and(pushed)
}

/// Every `interval`: this client's delta into the instruments (the SDK's reader pushes on the
/// same period); at the stop, one last read and a final push.
fn push_loop(
    tracer: &Tracer,
    mut exporter: otlp::OtlpExporter,
    interval: Duration,
) -> Result<(), String> {
    let mut names = Names::default();
    let mut next = Instant::now();
    loop {
        let stop = signal::stop_requested();
        match tracer.get_active_connections(OTLP_CLIENT) {
            Ok(conns) => {
                exporter.apply(&conns, &mut |conn| names.of(conn));
                names.end_read();
            }
            Err(err) => {
                let _ = writeln!(io::stderr(), "nettrace serve: OTLP read: {err}");
            }
        }
        if stop {
            return exporter.shutdown();
        }
        next = next.checked_add(interval).unwrap_or_else(Instant::now);
        while Instant::now() < next && !signal::stop_requested() {
            thread::sleep(SIGNAL_POLL.min(next.saturating_duration_since(Instant::now())));
        }
    }
}

/// The Prometheus endpoint: `/metrics` reads [`PROMETHEUS_CLIENT`]'s delta and answers the
/// cumulative families; one request at a time (a scrape is one read of the tracer).
fn serve_prometheus(
    tracer: &Tracer,
    addr: std::net::SocketAddr,
    max_series: usize,
    initial: &[tracer::telemetry::Sample],
) -> Result<(), String> {
    tracer
        .register_client(PROMETHEUS_CLIENT)
        .map_err(|err| format!("registering {PROMETHEUS_CLIENT}: {err}"))?;
    let server =
        tiny_http::Server::http(addr).map_err(|err| format!("listening on {addr}: {err}"))?;
    let _ = writeln!(
        io::stderr(),
        "nettrace serve: Prometheus metrics on http://{}/metrics",
        server
            .server_addr()
            .to_ip()
            .map_or_else(|| addr.to_string(), |a| a.to_string())
    );
    let mut exporter = prom::PromExporter::new(max_series, initial);
    let mut names = Names::default();
    while !signal::stop_requested() {
        let request = match server.recv_timeout(SIGNAL_POLL) {
            Ok(Some(request)) => request,
            Ok(None) => continue,
            Err(err) => return Err(format!("accepting on {addr}: {err}")),
        };
        let response = match (request.method(), request.url()) {
            (tiny_http::Method::Get, "/metrics") => scrape(tracer, &mut exporter, &mut names),
            (tiny_http::Method::Get, "/") => text(
                200,
                "nettrace serve: metrics at /metrics\n".to_owned(),
                "text/plain",
            ),
            _ => text(404, "not found\n".to_owned(), "text/plain"),
        };
        if let Err(err) = request.respond(response) {
            let _ = writeln!(io::stderr(), "nettrace serve: answering a scrape: {err}");
        }
    }
    Ok(())
}

type Response = tiny_http::Response<io::Cursor<Vec<u8>>>;

fn text(status: u16, body: String, content_type: &str) -> Response {
    let mut response = tiny_http::Response::from_string(body).with_status_code(status);
    if let Ok(header) = tiny_http::Header::from_bytes("Content-Type", content_type) {
        response.add_header(header);
    }
    response
}

/// One scrape: this client's delta into the families, then their exposition.
fn scrape(tracer: &Tracer, exporter: &mut prom::PromExporter, names: &mut Names) -> Response {
    let conns = match tracer.get_active_connections(PROMETHEUS_CLIENT) {
        Ok(conns) => conns,
        Err(err) => return text(500, format!("reading connections: {err}\n"), "text/plain"),
    };
    exporter.apply(&conns, &mut |conn| names.of(conn));
    names.end_read();
    match exporter.encode() {
        Ok(body) => text(
            200,
            body,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ),
        Err(err) => text(500, format!("encoding: {err}\n"), "text/plain"),
    }
}

#[cfg(test)]
mod deploy_test;
