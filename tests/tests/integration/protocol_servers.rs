//! Protocol classification (`ConnectionStats::protocol_stack`) against real servers and clients
//! nobody here wrote: the ground truth is the protocol the programs speak.
//!
//! Each case runs in a fresh network namespace on its loopback (127.0.0.1, fixed ports: the
//! namespace is the test's own, nothing leaves it), starts its server as the test's child (killed
//! on drop), runs the clients, stops the server, and only then calls the tracer: every
//! connection closed before that call, and must come back with its stack. The Redis case also
//! holds one `redis-cli` connection open across a call (the open path). Connections are picked
//! by the namespace's inode and the server's port: a client's side has the server port as its
//! destination, the server's side as its source; both sides are on this host and both are
//! traced, so both are asserted, paired by the client's port.
//!
//! | case | server | client | stack (api, application, encryption) |
//! |---|---|---|---|
//! | HTTP/1.1 | nginx | curl --http1.1 | (0, 1 HTTP, 0) |
//! | h2c | nginx (`http2` on a cleartext listener) | curl --http2-prior-knowledge | (0, 2 HTTP/2, 0) |
//! | TLS | nginx (`ssl`, a self-signed certificate made by `openssl req` in the test) | curl -k | (0, 0, 1 TLS) |
//! | Redis | redis-server (no persistence) | redis-cli PING, SET, GET | (0, 7 Redis, 0) |
//! | PostgreSQL | postgres (initdb into a temporary directory, run as the `postgres` user) | psql (SSLRequest first, and `sslmode=disable`: StartupMessage first) | (0, 5 PostgreSQL, 0) |
//! | text lines | the test's own TCP echo | the test's own client | (0, 0, 0) |
//!
//! The stacks are compared whole and exactly on every report of every such connection: a wrong
//! layer, a missing one or one too many fails.
//!
//! Where the programs are: `cargo xtask setup` installs all of them on the host (nginx-light,
//! curl, openssl, redis-server, redis-tools, postgresql). The VM images ship nginx, curl and
//! openssl (no redis, no postgres): there a case whose programs are missing prints a SKIP
//! line with the reason; in the host run (`TRACER_TEST_HOST=1`, which `cargo xtask test` sets
//! with `TRACER_TEST_STRICT=1`) a missing program fails the case. The echo case needs nothing and runs everywhere. Each case runs with
//! the kernel's first backend only: what the real servers check is the classifier on their
//! bytes, which no backend changes; how the stack reaches each backend's entries (open, and
//! closed before any call) is `protocols::`, which runs with every backend.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    time::{Duration, Instant},
};

use tracer::{
    BackendChoice, Config, Tracer,
    model::{ConnectionStats, Protocol, ProtocolStack},
    sources::tls::TlsConfig,
};
use tracer_common::classify::{
    PROTO_HTTP, PROTO_HTTP2, PROTO_POSTGRES, PROTO_REDIS, PROTO_TLS, PROTO_UNKNOWN,
};
use tracer_integration::{
    netns::{current_netns_inode, in_fresh_netns, tcp_listening},
    policy::{first_backend_of_kernel, loaded_or_skip},
    tracer::backend_under_test,
};

const LOOPBACK: Ipv4Addr = Ipv4Addr::LOCALHOST;
const HTTP_PORT: u16 = 8080;
const H2C_PORT: u16 = 8082;
const TLS_PORT: u16 = 8443;
const REDIS_PORT: u16 = 16379;
const POSTGRES_PORT: u16 = 15432;
const ECHO_PORT: u16 = 7007;

/// How long a call loop waits for the reports it needs (a bound on waiting, not an assertion:
/// what is missing then fails on its own).
const COLLECT_FOR: Duration = Duration::from_secs(10);

fn stack(api: u8, application: u8, encryption: u8) -> ProtocolStack {
    ProtocolStack {
        api,
        application,
        encryption,
    }
}

/// The tracer for the backend under test, everything else as a user gets it but the TLS
/// uprobes: these cases check the packet classifier's stacks. With the uprobes, HTTP inside TLS
/// is named too (application HTTP, encryption TLS), but only once the TLS library of the
/// process is hooked, which for a fresh curl races its handshake; `tls.rs` tests that path.
fn new_tracer() -> Option<Tracer> {
    loaded_or_skip(Tracer::new(Config {
        backend: BackendChoice::Force(backend_under_test()),
        tls: TlsConfig {
            enabled: false,
            ..TlsConfig::default()
        },
        ..Config::default()
    }))
}

fn own_netns() -> u32 {
    u32::try_from(current_netns_inode().expect("netns")).expect("inode")
}

fn host_run() -> bool {
    std::env::var("TRACER_TEST_HOST").is_ok_and(|v| v == "1")
}

/// `program` as `$PATH` resolves it, or an absolute path that exists.
fn find_program(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        let path = PathBuf::from(program);
        return path.is_file().then_some(path);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// Whether every one of `programs` is here. In the host run a missing one fails the test; in a
/// VM (whose image ships nginx and curl only) the case prints a SKIP line and returns.
fn programs_or_skip(case: &str, programs: &[&str]) -> bool {
    if !first_backend_of_kernel(case) {
        return false;
    }
    let missing: Vec<&str> = programs
        .iter()
        .copied()
        .filter(|p| find_program(p).is_none())
        .collect();
    if missing.is_empty() {
        return true;
    }
    assert!(
        !host_run(),
        "{case}: {missing:?} not found; `cargo xtask setup` installs them for the host run"
    );
    eprintln!("SKIP: {case}: {missing:?} not in this image (the host run has them)");
    false
}

/// A temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(what: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("tracer-proto-{what}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A server process of the test's, stopped on drop: `signal` first (its graceful shutdown),
/// then SIGKILL if it has not exited after a while.
struct Server {
    name: &'static str,
    child: Option<Child>,
    signal: i32,
}

impl Server {
    fn new(name: &'static str, child: Child, signal: i32) -> Self {
        Self {
            name,
            child: Some(child),
            signal,
        }
    }

    /// Panics if the server already exited (it failed to start).
    fn check_running(&mut self, log: &Path) {
        let child = self.child.as_mut().expect("running");
        if let Some(status) = child.try_wait().expect("try_wait") {
            panic!(
                "{} exited at start ({status}); its log:\n{}",
                self.name,
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Graceful stop, waited for: every connection of the server is closed after it.
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SAFETY: kill(2) of our own child, which has not been waited for (its pid is ours).
        unsafe { libc::kill(child.id() as i32, self.signal) };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) if Instant::now() > deadline => break,
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        eprintln!(
            "{} did not stop on signal {}: killed",
            self.name, self.signal
        );
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn wait_listening(server: &mut Server, port: u16, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !tcp_listening(port) {
        server.check_running(log);
        assert!(
            Instant::now() < deadline,
            "{} never listened on {port}",
            server.name
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs a client to completion; it must succeed. Returns its standard output.
fn run_client(command: &mut Command) -> String {
    let out = command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?}: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

// ---------------------------------------------------------------------------------------------
// Collecting and asserting.

/// Every report of this namespace's TCP connections to or from `server_port`, across calls.
#[derive(Default)]
struct Reports {
    all: Vec<ConnectionStats>,
}

impl Reports {
    fn add(&mut self, tracer: &Tracer, client: &str, netns: u32, server_port: u16) {
        let delta = tracer.get_active_connections(client).expect("call");
        self.all.extend(delta.conns.into_iter().filter(|c| {
            c.tuple.netns == netns
                && c.tuple.protocol == Protocol::Tcp
                && (c.tuple.sport == server_port || c.tuple.dport == server_port)
        }));
    }

    /// Client sides (destination `server_port`) by client port, and server sides (source
    /// `server_port`) by client port.
    #[allow(clippy::type_complexity)]
    fn sides(
        &self,
        server_port: u16,
    ) -> (
        BTreeMap<u16, Vec<&ConnectionStats>>,
        BTreeMap<u16, Vec<&ConnectionStats>>,
    ) {
        let (mut clients, mut servers): (BTreeMap<_, Vec<_>>, BTreeMap<_, Vec<_>>) =
            Default::default();
        for c in &self.all {
            if c.tuple.dport == server_port {
                clients.entry(c.tuple.sport).or_default().push(c);
            } else {
                servers.entry(c.tuple.dport).or_default().push(c);
            }
        }
        (clients, servers)
    }

    fn closed_pairs(&self, server_port: u16) -> usize {
        let (clients, servers) = self.sides(server_port);
        clients
            .iter()
            .filter(|(port, reports)| {
                reports.iter().any(|c| c.is_closed)
                    && servers
                        .get(port)
                        .is_some_and(|s| s.iter().any(|c| c.is_closed))
            })
            .count()
    }
}

/// Calls until `connections` client/server pairs on `server_port` were each reported closed on
/// both sides (at most [`COLLECT_FOR`]), then once more.
fn collect_closed(
    tracer: &Tracer,
    client: &str,
    netns: u32,
    server_port: u16,
    connections: usize,
    reports: &mut Reports,
) {
    let deadline = Instant::now() + COLLECT_FOR;
    loop {
        reports.add(tracer, client, netns, server_port);
        if reports.closed_pairs(server_port) >= connections || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(200));
    reports.add(tracer, client, netns, server_port);
}

fn layers(s: &ProtocolStack) -> [(&'static str, u8); 3] {
    [
        ("api", s.api),
        ("application", s.application),
        ("encryption", s.encryption),
    ]
}

/// "expected application 7, got 0; ..." for each layer that differs, or `None`.
fn mismatch(want: &ProtocolStack, got: &ProtocolStack) -> Option<String> {
    let differences: Vec<String> = layers(want)
        .iter()
        .zip(layers(got))
        .filter(|((_, w), (_, g))| w != g)
        .map(|((layer, w), (_, g))| format!("expected {layer} {w}, got {g}"))
        .collect();
    (!differences.is_empty()).then(|| differences.join("; "))
}

/// One line per report for failure messages.
fn line(c: &ConnectionStats) -> String {
    format!(
        "{}:{} -> {}:{} pid {} comm {:?} {} sent {} recv {} stack {:?}",
        c.tuple.src,
        c.tuple.sport,
        c.tuple.dst,
        c.tuple.dport,
        c.tuple.pid,
        c.comm,
        if c.is_closed { "closed" } else { "open" },
        c.monotonic.sent_bytes,
        c.monotonic.recv_bytes,
        c.protocol_stack
    )
}

/// Asserts that exactly `connections` connections reached `server_port`, each seen on both sides
/// and closed on both, and that every report of each carries exactly `want`; `earlier_failures`
/// (of checks made before) fail it too, listed first.
fn assert_stacks(
    case: &str,
    reports: &Reports,
    server_port: u16,
    connections: usize,
    want: ProtocolStack,
    earlier_failures: Vec<String>,
) {
    let (clients, servers) = reports.sides(server_port);
    let everything: Vec<String> = reports.all.iter().map(line).collect();
    eprintln!("{case}: reports on port {server_port}:");
    for l in &everything {
        eprintln!("  {l}");
    }
    assert_eq!(
        clients.len(),
        connections,
        "{case}: client connections to port {server_port} (one per client run): {everything:#?}"
    );
    assert_eq!(
        servers.keys().collect::<Vec<_>>(),
        clients.keys().collect::<Vec<_>>(),
        "{case}: the server's sides, by client port, against the clients' sides: {everything:#?}"
    );
    let mut failures = earlier_failures;
    for (side, by_port) in [("client", &clients), ("server", &servers)] {
        for (port, seen) in by_port {
            if !seen.iter().any(|c| c.is_closed) {
                failures.push(format!(
                    "{side} side of client port {port}: never reported closed"
                ));
            }
            failures.extend(stack_failures(side, seen.iter().copied(), want));
        }
    }
    assert!(
        failures.is_empty(),
        "{case}: stack {want:?} wanted on every report of both sides:\n{}",
        failures.join("\n")
    );
}

/// A line for each report among `seen` whose stack is not exactly `want`.
fn stack_failures<'a>(
    side: &str,
    seen: impl IntoIterator<Item = &'a ConnectionStats>,
    want: ProtocolStack,
) -> Vec<String> {
    seen.into_iter()
        .filter_map(|c| {
            let why = mismatch(&want, &c.protocol_stack)?;
            Some(format!("{side} side: {why} ({})", line(c)))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// nginx.

/// nginx's version from `nginx -v` (printed on stderr: `nginx version: nginx/1.22.1`).
fn nginx_version() -> (u32, u32, u32) {
    let out = Command::new("nginx").arg("-v").output().expect("nginx -v");
    let text = String::from_utf8_lossy(&out.stderr);
    let version = text
        .split("nginx/")
        .nth(1)
        .and_then(|v| v.split_whitespace().next())
        .unwrap_or_else(|| panic!("nginx -v: {text:?}"));
    let mut parts = version
        .split('.')
        .map(|p| p.parse().expect("version number"));
    (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    )
}

/// The `listen` line and extra directives for an h2c server on `port`: `listen ... http2` up to
/// nginx 1.25.0, the `http2 on;` directive from 1.25.1 (Debian 12 ships 1.22).
fn h2c_listen(port: u16) -> String {
    if nginx_version() >= (1, 25, 1) {
        format!("listen {LOOPBACK}:{port};\n    http2 on;")
    } else {
        format!("listen {LOOPBACK}:{port} http2;")
    }
}

/// A private nginx (one worker, no master) serving `dir/www` with `server_directives` in its
/// one server block, in the calling thread's network namespace.
fn start_nginx(dir: &TempDir, port: u16, server_directives: &str) -> Server {
    let d = dir.path().display();
    std::fs::create_dir_all(dir.path().join("www")).expect("www");
    std::fs::write(dir.path().join("www/index.html"), "hello from nginx\n").expect("index");
    std::fs::write(dir.path().join("www/big"), vec![b'x'; 50_000]).expect("big");
    let conf = format!(
        "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\n\
         error_log {d}/error.log;\nevents {{ worker_connections 1024; }}\n\
         http {{\n  default_type text/plain;\n  access_log {d}/access.log;\n\
         keepalive_timeout 30;\n\
         client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
         fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n\
         scgi_temp_path {d}/scgi;\n\
         server {{\n    {server_directives}\n    root {d}/www;\n  }}\n}}\n"
    );
    std::fs::write(dir.path().join("nginx.conf"), conf).expect("conf");
    let log = dir.path().join("error.log");
    let child = Command::new("nginx")
        .arg("-e")
        .arg(&log)
        .arg("-c")
        .arg(dir.path().join("nginx.conf"))
        .arg("-p")
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("nginx");
    // SIGQUIT: nginx's graceful shutdown.
    let mut server = Server::new("nginx", child, libc::SIGQUIT);
    wait_listening(&mut server, port, &log);
    eprintln!(
        "nginx {:?} (pid {}) listens on {port}",
        nginx_version(),
        server.pid()
    );
    server
}

/// Each of `runs` is one curl invocation (its own connection; several URLs in one run share
/// it). Returns what curl printed: `-w` writes the HTTP version and status of each transfer.
fn curl_runs(extra: &[&str], port: u16, scheme: &str, runs: &[&[&str]]) -> Vec<String> {
    runs.iter()
        .map(|paths| {
            let mut curl = Command::new("curl");
            curl.args([
                "-sS",
                "--max-time",
                "20",
                "-w",
                "%{http_version} %{response_code}\\n",
            ]);
            curl.args(extra);
            for path in *paths {
                curl.args([
                    "-o",
                    "/dev/null",
                    &format!("{scheme}://{LOOPBACK}:{port}{path}"),
                ]);
            }
            let out = run_client(&mut curl);
            eprintln!(
                "curl {extra:?} {paths:?}: {}",
                out.trim().replace('\n', ", ")
            );
            out
        })
        .collect()
}

/// Three curl runs: two URLs over one keep-alive connection, one URL, a 404.
const KEEP_ALIVE_RUNS: &[&[&str]] = &[&["/", "/big"], &["/index.html"], &["/missing"]];

/// The nginx cases: start it with `server_directives`, run `runs` with curl (one connection
/// each), stop it, call.
#[allow(clippy::too_many_arguments)]
fn nginx_case(
    case: &str,
    port: u16,
    server_directives: impl FnOnce(&TempDir) -> String,
    runs: &'static [&'static [&'static str]],
    curl_extra: &[&str],
    scheme: &str,
    want_version: &str,
    want: ProtocolStack,
) {
    in_fresh_netns({
        let (case, curl_extra, scheme, want_version) = (
            case.to_owned(),
            curl_extra
                .iter()
                .map(|s| (*s).to_owned())
                .collect::<Vec<_>>(),
            scheme.to_owned(),
            want_version.to_owned(),
        );
        let dir = TempDir::new(&case);
        let directives = server_directives(&dir);
        move || {
            let Some(tracer) = new_tracer() else {
                return;
            };
            tracer.register_client("proto").expect("register");
            let netns = own_netns();
            let mut nginx = start_nginx(&dir, port, &directives);
            let extra: Vec<&str> = curl_extra.iter().map(String::as_str).collect();
            let printed = curl_runs(&extra, port, &scheme, runs);
            // The protocol curl and nginx spoke, and the statuses.
            let want_printed: Vec<String> = runs
                .iter()
                .map(|paths| {
                    paths
                        .iter()
                        .map(|p| {
                            let status = if *p == "/missing" { 404 } else { 200 };
                            format!("{want_version} {status}\n")
                        })
                        .collect()
                })
                .collect();
            assert_eq!(printed, want_printed, "{case}: curl's transfers");
            nginx.stop();
            let mut reports = Reports::default();
            collect_closed(&tracer, "proto", netns, port, runs.len(), &mut reports);
            assert_stacks(&case, &reports, port, runs.len(), want, Vec::new());
        }
    });
}

#[test]
fn nginx_and_curl_over_http_1_1_are_http() {
    if !programs_or_skip("HTTP/1.1", &["nginx", "curl"]) {
        return;
    }
    nginx_case(
        "http1",
        HTTP_PORT,
        |_| format!("listen {LOOPBACK}:{HTTP_PORT};"),
        KEEP_ALIVE_RUNS,
        &["--http1.1"],
        "http",
        "1.1",
        stack(PROTO_UNKNOWN, PROTO_HTTP, PROTO_UNKNOWN),
    );
}

#[test]
fn nginx_and_curl_over_cleartext_http2_are_http2() {
    if !programs_or_skip("h2c", &["nginx", "curl"]) {
        return;
    }
    nginx_case(
        "h2c",
        H2C_PORT,
        |_| h2c_listen(H2C_PORT),
        // One URL per connection: curl 7.88 (Debian 12) fails a second transfer over a
        // prior-knowledge h2c connection ("Error in the HTTP2 framing layer"), with or
        // without -Z.
        &[&["/big"], &["/index.html"], &["/missing"]],
        &["--http2-prior-knowledge"],
        "http",
        "2",
        stack(PROTO_UNKNOWN, PROTO_HTTP2, PROTO_UNKNOWN),
    );
}

#[test]
fn nginx_and_curl_over_tls_are_tls() {
    if !programs_or_skip("TLS", &["nginx", "curl", "openssl"]) {
        return;
    }
    nginx_case(
        "tls",
        TLS_PORT,
        |dir| {
            let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
            run_client(
                tracer_integration::cmd::openssl_req(dir.path())
                    .args(["-x509", "-newkey", "ec", "-pkeyopt"])
                    .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
                    .args(["-subj", "/CN=tracer-test", "-keyout"])
                    .arg(&key)
                    .arg("-out")
                    .arg(&cert),
            );
            format!(
                "listen {LOOPBACK}:{TLS_PORT} ssl;\n    ssl_certificate {};\n    \
                 ssl_certificate_key {};",
                cert.display(),
                key.display()
            )
        },
        KEEP_ALIVE_RUNS,
        // HTTP/1.1 inside (nginx's listener offers no h2 here anyway): the test pins what it
        // checks curl printed.
        &["-k", "--http1.1"],
        "https",
        "1.1",
        stack(PROTO_UNKNOWN, PROTO_UNKNOWN, PROTO_TLS),
    );
}

// ---------------------------------------------------------------------------------------------
// Redis.

/// A `redis-cli` in its line mode (stdin not a terminal): one connection, a command per line.
struct RedisRepl {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<std::process::ChildStdout>,
}

impl RedisRepl {
    fn start() -> Self {
        let mut child = Command::new("redis-cli")
            .args(["-h", &LOOPBACK.to_string(), "-p", &REDIS_PORT.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("redis-cli");
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        Self {
            child,
            stdin,
            stdout,
        }
    }

    fn command(&mut self, line: &str) -> String {
        let stdin = self.stdin.as_mut().expect("stdin");
        writeln!(stdin, "{line}").expect("write to redis-cli");
        stdin.flush().expect("flush");
        let mut reply = String::new();
        self.stdout.read_line(&mut reply).expect("redis-cli reply");
        reply.trim_end().to_owned()
    }

    /// Ends the session (EOF on its input) and waits for redis-cli.
    fn finish(mut self) {
        drop(self.stdin.take());
        let status = self.child.wait().expect("wait redis-cli");
        assert!(status.success(), "redis-cli: {status}");
    }
}

impl Drop for RedisRepl {
    fn drop(&mut self) {
        drop(self.stdin.take());
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[test]
fn redis_server_and_redis_cli_are_redis() {
    if !programs_or_skip("Redis", &["redis-server", "redis-cli"]) {
        return;
    }
    let want = stack(PROTO_UNKNOWN, PROTO_REDIS, PROTO_UNKNOWN);
    let dir = TempDir::new("redis");
    in_fresh_netns(move || {
        let Some(tracer) = new_tracer() else {
            return;
        };
        tracer.register_client("proto").expect("register");
        let netns = own_netns();
        let log = dir.path().join("redis.log");
        let child = Command::new("redis-server")
            .args(["--bind", &LOOPBACK.to_string()])
            .args(["--port", &REDIS_PORT.to_string()])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(dir.path())
            .arg("--logfile")
            .arg(&log)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("redis-server");
        // SIGTERM: redis-server's shutdown (no save: persistence is off).
        let mut redis = Server::new("redis-server", child, libc::SIGTERM);
        wait_listening(&mut redis, REDIS_PORT, &log);
        eprintln!("redis-server (pid {}) listens on {REDIS_PORT}", redis.pid());

        // One connection held open across a call: its stack while open.
        let mut repl = RedisRepl::start();
        assert_eq!(repl.command("PING"), "PONG");
        assert_eq!(repl.command("SET held yes"), "OK");
        let mut open = Reports::default();
        open.add(&tracer, "proto", netns, REDIS_PORT);
        let open_lines: Vec<String> = open.all.iter().map(line).collect();
        eprintln!("redis: reports while redis-cli is connected: {open_lines:#?}");
        let (clients, servers) = open.sides(REDIS_PORT);
        assert_eq!(
            (clients.len(), servers.len()),
            (1, 1),
            "redis: the open connection's two sides: {open_lines:#?}"
        );
        for c in &open.all {
            assert!(!c.is_closed, "redis: closed already: {}", line(c));
        }
        // Checked with the closed ones below, so that one failure shows the whole picture.
        let open_failures = stack_failures("while open, either", &open.all, want);
        repl.finish();

        // Three more connections, one command each.
        for (args, reply) in [
            (&["PING"][..], "PONG"),
            (&["SET", "k", "v"][..], "OK"),
            (&["GET", "k"][..], "v"),
        ] {
            let out = run_client(
                Command::new("redis-cli")
                    .args(["-h", &LOOPBACK.to_string(), "-p", &REDIS_PORT.to_string()])
                    .args(args),
            );
            eprintln!("redis-cli {args:?}: {}", out.trim());
            assert_eq!(out.trim(), reply, "redis-cli {args:?}");
        }
        redis.stop();
        // From here on, the calls after the open one: the held connection comes back once
        // more, closed.
        let mut reports = Reports::default();
        collect_closed(&tracer, "proto", netns, REDIS_PORT, 4, &mut reports);
        assert_stacks("redis", &reports, REDIS_PORT, 4, want, open_failures);
    });
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL.

/// Debian's server binaries: the newest `/usr/lib/postgresql/<version>/bin` with `initdb` and
/// `postgres`.
fn postgres_bin_dir() -> Option<PathBuf> {
    let mut dirs: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            (bin.join("initdb").is_file() && bin.join("postgres").is_file())
                .then_some((version, bin))
        })
        .collect();
    dirs.sort();
    dirs.pop().map(|(_, bin)| bin)
}

/// The uid and gid of `user` from the passwd database.
fn user_ids(user: &str) -> Option<(u32, u32)> {
    let name = std::ffi::CString::new(user).expect("user name");
    // SAFETY: getpwnam with a NUL-terminated name; the record is read at once, before any other
    // passwd call (the tests run one at a time).
    unsafe {
        let pw = libc::getpwnam(name.as_ptr());
        if pw.is_null() {
            return None;
        }
        Some(((*pw).pw_uid, (*pw).pw_gid))
    }
}

/// Whether the postmaster says it accepts connections: its pid file's status line (the 8th,
/// PostgreSQL 10+) reads `ready` (read without connecting).
fn postgres_ready(data: &Path) -> bool {
    std::fs::read_to_string(data.join("postmaster.pid"))
        .ok()
        .and_then(|pid_file| pid_file.lines().nth(7).map(|l| l.trim() == "ready"))
        .unwrap_or(false)
}

#[test]
fn postgres_and_psql_are_postgres() {
    let bin = postgres_bin_dir();
    let postgres_user = user_ids("postgres");
    if bin.is_none() || postgres_user.is_none() {
        assert!(
            !host_run(),
            "PostgreSQL: no /usr/lib/postgresql/*/bin with initdb and postgres ({bin:?}) or no \
             postgres user ({postgres_user:?}); `cargo xtask setup` installs postgresql for the \
             host run"
        );
        eprintln!("SKIP: PostgreSQL: its server is not in this image (the host run has it)");
        return;
    }
    let (Some(bin), Some((uid, gid))) = (bin, postgres_user) else {
        return;
    };
    // Debian's /usr/bin/psql is a wrapper script; the versioned client is next to the server.
    let psql = [bin.join("psql"), PathBuf::from("psql")]
        .into_iter()
        .find(|p| find_program(&p.to_string_lossy()).is_some())
        .expect("psql: `cargo xtask setup` installs postgresql");
    let want = stack(PROTO_UNKNOWN, PROTO_POSTGRES, PROTO_UNKNOWN);
    let dir = TempDir::new("postgres");
    // The server runs as `postgres` (it refuses root) and owns its directories.
    std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown");
    let data = dir.path().join("data");
    let log = dir.path().join("postgres.log");
    let as_postgres = move |program: &Path, cwd: &Path| {
        let mut command = Command::new(program);
        command.uid(uid).gid(gid).current_dir(cwd);
        command
    };
    let out = as_postgres(&bin.join("initdb"), dir.path())
        .arg("-D")
        .arg(&data)
        .args([
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-locale",
            "-E",
            "UTF8",
            "--no-sync",
        ])
        .output()
        .expect("initdb");
    assert!(
        out.status.success(),
        "initdb: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    in_fresh_netns(move || {
        let Some(tracer) = new_tracer() else {
            return;
        };
        tracer.register_client("proto").expect("register");
        let netns = own_netns();
        let log_file = std::fs::File::create(&log).expect("postgres log");
        let child = as_postgres(&bin.join("postgres"), dir.path())
            .arg("-D")
            .arg(&data)
            .args(["-p", &POSTGRES_PORT.to_string()])
            .arg("-k")
            .arg(dir.path())
            .args(["-c", &format!("listen_addresses={LOOPBACK}")])
            .args(["-c", "fsync=off", "-c", "logging_collector=off"])
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("postgres");
        // SIGINT: the fast shutdown (backends end, then the postmaster).
        let mut postgres = Server::new("postgres", child, libc::SIGINT);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !(postgres_ready(&data) && tcp_listening(POSTGRES_PORT)) {
            postgres.check_running(&log);
            assert!(Instant::now() < deadline, "postgres never became ready");
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("postgres (pid {}) ready on {POSTGRES_PORT}", postgres.pid());
        // psql's default (sslmode=prefer): an SSLRequest first, answered 'N' (ssl is off),
        // then the StartupMessage on the same connection; with sslmode=disable the
        // StartupMessage comes first.
        for sslmode in ["prefer", "disable"] {
            let out = run_client(
                Command::new(&psql)
                    .env("PGSSLMODE", sslmode)
                    .args(["-X", "-At", "-h", &LOOPBACK.to_string()])
                    .args(["-p", &POSTGRES_PORT.to_string(), "-U", "postgres"])
                    .args(["-d", "postgres", "-c", "select 1"]),
            );
            eprintln!("psql (sslmode={sslmode}) select 1: {}", out.trim());
            assert_eq!(out.trim(), "1", "psql sslmode={sslmode}");
        }
        postgres.stop();
        let mut reports = Reports::default();
        collect_closed(&tracer, "proto", netns, POSTGRES_PORT, 2, &mut reports);
        assert_stacks("postgres", &reports, POSTGRES_PORT, 2, want, Vec::new());
    });
}

// ---------------------------------------------------------------------------------------------
// Text lines: no protocol.

const LINES: &[&str] = &[
    "hello\n",
    "this is a line of text\n",
    "a second line, then a third\n",
    "the last line\n",
];

#[test]
fn text_lines_over_an_echo_are_unknown() {
    in_fresh_netns(|| {
        let Some(tracer) = new_tracer() else {
            return;
        };
        tracer.register_client("proto").expect("register");
        let netns = own_netns();
        let listener = TcpListener::bind((LOOPBACK, ECHO_PORT)).expect("bind echo");
        let server = std::thread::spawn(move || {
            // Two connections, each echoed line by line until EOF.
            for _ in 0..2 {
                let (stream, _) = listener.accept().expect("accept");
                let mut writer = stream.try_clone().expect("clone");
                let mut reader = BufReader::new(stream);
                let mut line = String::new();
                while reader.read_line(&mut line).expect("read line") > 0 {
                    writer.write_all(line.as_bytes()).expect("echo");
                    line.clear();
                }
            }
        });
        let server_addr = SocketAddr::from((LOOPBACK, ECHO_PORT));
        for _ in 0..2 {
            let stream = TcpStream::connect(server_addr).expect("connect");
            stream.set_nodelay(true).expect("nodelay");
            let mut writer = stream.try_clone().expect("clone");
            let mut reader = BufReader::new(stream);
            for text in LINES {
                writer.write_all(text.as_bytes()).expect("write line");
                let mut back = String::new();
                reader.read_line(&mut back).expect("read echo");
                assert_eq!(back, *text, "echo");
            }
        }
        server.join().expect("echo server");
        let mut reports = Reports::default();
        collect_closed(&tracer, "proto", netns, ECHO_PORT, 2, &mut reports);
        assert_stacks(
            "echo",
            &reports,
            ECHO_PORT,
            2,
            stack(PROTO_UNKNOWN, PROTO_UNKNOWN, PROTO_UNKNOWN),
            Vec::new(),
        );
    });
}
