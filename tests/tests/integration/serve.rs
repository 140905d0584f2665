//! `nettrace serve` against real parts nobody here wrote: Debian's Prometheus scrapes its
//! `/metrics`, and an OTLP/HTTP receiver decodes its pushes with the OpenTelemetry project's
//! own protobuf definitions (the `opentelemetry-proto` Python package). The series of a known
//! loopback transfer must carry exactly the bytes the test sent and received, in both.
//!
//! Host run only (`TRACER_TEST_HOST=1`): `cargo xtask setup` installs Prometheus and the
//! protobuf definitions there, and a missing tool fails the test; the VM images have neither.
//! Backend-independent (userspace export), so once per kernel. About 10 s: the tracer's load,
//! Prometheus's start, a few 1 s scrapes and 1 s pushes.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Read, Write},
    net::{Shutdown, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, ChildStdout, Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;
use tracer_integration::{
    netns::in_fresh_netns, policy::first_backend_of_kernel, tracer::backend_under_test,
};

/// The venv `cargo xtask setup` makes with `opentelemetry-proto` (xtask/src/setup.rs, OTLP_VENV).
const OTLP_PYTHON: &str = "/opt/tracer-test/otlp-venv/bin/python3";

/// Bytes the client sends, and the server answers.
const SENT: usize = 300_001;
const ANSWERED: usize = 4_321;

/// An OTLP/HTTP metrics receiver: each request's body is decoded as an
/// `ExportMetricsServiceRequest` and its sum and gauge data points printed, one JSON line per
/// request: [{"name", "attrs": {key: value}, "value"}].
const RECEIVER: &str = r#"
import json, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest, ExportMetricsServiceResponse)

def value(attr):
    v = attr.value
    return getattr(v, v.WhichOneof("value")) if v.WhichOneof("value") else None

class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        request = ExportMetricsServiceRequest()
        request.ParseFromString(body)
        points = []
        for rm in request.resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    kind = m.WhichOneof("data")
                    if kind not in ("sum", "gauge"):
                        continue
                    data = getattr(m, kind)
                    for p in data.data_points:
                        v = p.as_int if p.WhichOneof("value") == "as_int" else p.as_double
                        points.append({"name": m.name, "kind": kind,
                                       "monotonic": kind == "sum" and data.is_monotonic,
                                       "temporality": kind == "sum" and data.aggregation_temporality,
                                       "attrs": {a.key: value(a) for a in p.attributes},
                                       "value": v})
        print(json.dumps(points), flush=True)
        answer = ExportMetricsServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args):
        pass

server = HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
print("listening", flush=True)
server.serve_forever()
"#;

fn on_the_host() -> bool {
    let host = std::env::var("TRACER_TEST_HOST").is_ok_and(|v| v == "1");
    if !host {
        eprintln!("SKIP: nettrace serve's tests run in the host run (TRACER_TEST_HOST=1)");
    }
    host
}

/// The `nettrace` binary of this build.
fn nettrace_bin() -> PathBuf {
    tracer_integration::nettrace::bin()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A child process killed on drop.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `GET path` over HTTP/1.0: (status, body); `None` while nothing listens.
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}

fn wait_for(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ready() {
        assert!(
            Instant::now() < deadline,
            "{what} not ready after {timeout:?}"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// Percent-encodes a PromQL query for a URL.
fn encode(query: &str) -> String {
    query
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The value of an instant query's single sample (`sum(...)`), `None` while it has none.
fn prom_value(port: u16, query: &str) -> Option<f64> {
    let (status, body) = http_get(port, &format!("/api/v1/query?query={}", encode(query)))?;
    assert_eq!(status, 200, "{query}: {body}");
    let answer: Value = serde_json::from_str(&body).expect("Prometheus answers JSON");
    assert_eq!(answer["status"], "success", "{body}");
    let sample = answer["data"]["result"].as_array()?.first()?.clone();
    sample["value"][1].as_str()?.parse().ok()
}

/// A loopback transfer: the client sends [`SENT`] bytes, the server reads them to the end and
/// answers [`ANSWERED`] bytes; both close. Returns what each side counted.
fn transfer(port: u16) -> (usize, usize) {
    let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind");
    let server = thread::spawn(move || {
        let (mut conn, _) = listener.accept().expect("accept");
        let mut got = Vec::new();
        conn.read_to_end(&mut got).expect("read");
        conn.write_all(&vec![b'a'; ANSWERED]).expect("answer");
        got.len()
    });
    let mut client = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    client.write_all(&vec![b'q'; SENT]).expect("send");
    client.shutdown(Shutdown::Write).expect("shutdown");
    let mut answer = Vec::new();
    client.read_to_end(&mut answer).expect("read the answer");
    drop(client);
    (server.join().expect("server"), answer.len())
}

/// The OTLP receiver's requests, as they arrive.
fn receiver_lines(stdout: ChildStdout) -> mpsc::Receiver<Vec<Value>> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if let Ok(Value::Array(points)) = serde_json::from_str(&line)
                && tx.send(points).is_err()
            {
                return;
            }
        }
    });
    rx
}

/// The value of the data point of metric `name` whose attributes include every one of `attrs`
/// (`None`: no such point in this request).
fn otlp_value(points: &[Value], name: &str, attrs: &[(&str, &str)]) -> Option<f64> {
    let matching: Vec<f64> = points
        .iter()
        .filter(|p| p["name"] == name)
        .filter(|p| {
            attrs.iter().all(|(k, v)| match &p["attrs"][*k] {
                Value::String(s) => s == v,
                Value::Number(n) => n.to_string() == *v,
                _ => false,
            })
        })
        .filter_map(|p| p["value"].as_f64())
        .collect();
    (!matching.is_empty()).then(|| matching.iter().sum())
}

#[test]
fn serve_counts_a_known_transfer_exactly_in_prometheus_and_otlp() {
    if !on_the_host() || !first_backend_of_kernel("nettrace serve's export") {
        return;
    }
    assert!(
        Path::new(OTLP_PYTHON).is_file(),
        "{OTLP_PYTHON} is missing: cargo xtask setup installs it"
    );
    let nettrace = nettrace_bin();
    in_fresh_netns(move || {
        let dir = std::env::temp_dir().join(format!("tracer-serve-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let (metrics_port, otlp_port, prom_port, transfer_port) =
            (free_port(), free_port(), free_port(), free_port());

        // The OTLP receiver first, so that the first push finds it.
        let script = dir.join("otlp_receiver.py");
        std::fs::write(&script, RECEIVER).expect("write the receiver");
        let mut receiver = Killed(
            Command::new(OTLP_PYTHON)
                .arg(&script)
                .arg(otlp_port.to_string())
                .stdout(Stdio::piped())
                .spawn()
                .expect("the OTLP receiver starts"),
        );
        let requests = receiver_lines(receiver.0.stdout.take().expect("stdout"));

        let _serve = Killed(
            Command::new(&nettrace)
                .args(["serve", "--listen", &format!("127.0.0.1:{metrics_port}")])
                .args(["--otlp-endpoint", &format!("http://127.0.0.1:{otlp_port}")])
                .args([
                    "--otlp-interval",
                    "1",
                    "--backend",
                    backend_under_test().name(),
                ])
                .spawn()
                .expect("nettrace serve starts"),
        );
        wait_for("nettrace serve", Duration::from_secs(60), || {
            http_get(metrics_port, "/metrics").is_some_and(|(status, _)| status == 200)
        });

        // Prometheus: its own config, data dir and port, scraping every second.
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: nettrace\n    \
                 static_configs:\n      - targets: ['127.0.0.1:{metrics_port}']\n"
            ),
        )
        .expect("write the Prometheus config");
        let prometheus = Killed(
            Command::new("prometheus")
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("prometheus is installed by cargo xtask setup"),
        );
        wait_for("Prometheus", Duration::from_secs(60), || {
            http_get(prom_port, "/-/ready").is_some_and(|(status, _)| status == 200)
        });

        let (server_got, client_got) = transfer(transfer_port);
        assert_eq!((server_got, client_got), (SENT, ANSWERED));

        // Prometheus: once the client's close is in (its last bytes come with it or before),
        // the series hold their final values.
        let port = transfer_port;
        let client = format!("remote_port=\"{port}\",direction=\"outgoing\",protocol=\"tcp\"");
        let server = format!("local_port=\"{port}\",direction=\"incoming\",protocol=\"tcp\"");
        let closed = |group: &str| {
            prom_value(
                prom_port,
                &format!("sum(nettrace_network_connections_closed_total{{{group}}})"),
            )
            .is_some_and(|v| v >= 1.0)
        };
        wait_for("the closes in Prometheus", Duration::from_secs(30), || {
            closed(&client) && closed(&server)
        });
        let bytes = |group: &str, way: &str| {
            prom_value(
                prom_port,
                &format!(
                    "sum(nettrace_network_io_bytes_total{{{group},network_io_direction=\"{way}\"}})"
                ),
            )
        };
        let found: BTreeMap<&str, Option<f64>> = [
            ("client transmit", bytes(&client, "transmit")),
            ("client receive", bytes(&client, "receive")),
            ("server transmit", bytes(&server, "transmit")),
            ("server receive", bytes(&server, "receive")),
        ]
        .into();
        let expected: BTreeMap<&str, Option<f64>> = [
            ("client transmit", Some(SENT as f64)),
            ("client receive", Some(ANSWERED as f64)),
            ("server transmit", Some(ANSWERED as f64)),
            ("server receive", Some(SENT as f64)),
        ]
        .into();
        assert_eq!(found, expected, "Prometheus's series of the transfer");
        // One connection each way, and the tracer's own counters are there too.
        assert_eq!(
            prom_value(
                prom_port,
                &format!("sum(nettrace_network_connections_closed_total{{{client}}})")
            ),
            Some(1.0)
        );
        let tracer_series = prom_value(prom_port, "count({__name__=~\"nettrace_tracer_.+\"})");
        assert!(
            tracer_series.is_some_and(|n| n >= 10.0),
            "tracer counters: {tracer_series:?}"
        );

        // OTLP: the first request whose points hold both closes; its byte points must be exact.
        let port = port.to_string();
        let client = [
            ("network.peer.port", port.as_str()),
            ("nettrace.connection.direction", "outgoing"),
            ("network.transport", "tcp"),
        ];
        let server = [
            ("network.local.port", port.as_str()),
            ("nettrace.connection.direction", "incoming"),
            ("network.transport", "tcp"),
        ];
        let deadline = Instant::now() + Duration::from_secs(30);
        let points = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let points = requests
                .recv_timeout(left)
                .expect("an OTLP request with both closes");
            let closes = |group: &[(&str, &str)]| {
                otlp_value(&points, "nettrace.network.connections.closed", group)
            };
            if closes(&client).is_some() && closes(&server).is_some() {
                break points;
            }
        };
        let with = |group: &[(&str, &str)], way: &'static str| {
            let mut attrs = group.to_vec();
            attrs.push(("network.io.direction", way));
            otlp_value(&points, "nettrace.network.io", &attrs)
        };
        let found: BTreeMap<&str, Option<f64>> = [
            ("client transmit", with(&client, "transmit")),
            ("client receive", with(&client, "receive")),
            ("server transmit", with(&server, "transmit")),
            ("server receive", with(&server, "receive")),
        ]
        .into();
        assert_eq!(found, expected, "OTLP data points of the transfer");
        let io = points
            .iter()
            .find(|p| p["name"] == "nettrace.network.io")
            .expect("a nettrace.network.io point");
        // Cumulative (AGGREGATION_TEMPORALITY_CUMULATIVE = 2), monotonic sums.
        assert_eq!(
            (io["monotonic"].clone(), io["temporality"].clone()),
            (Value::Bool(true), Value::from(2))
        );
        drop((receiver, prometheus));
        let _ = std::fs::remove_dir_all(&dir);
    });
}
