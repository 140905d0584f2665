//! HTTPS through the TLS uprobes (`tracer-ebpf/src/tls/`, `tracer/src/sources/tls/`): the
//! plaintext of OpenSSL and GnuTLS calls becomes the same HTTP transactions as plaintext HTTP.
//!
//! Grounds of truth: nginx's access log (nginx from Debian links libssl; its `SSL_set_fd` ties
//! each connection), with curl `-k` (OpenSSL, keep-alive runs and new connections) and
//! `gnutls-cli` (GnuTLS) as clients; `/proc/<pid>/maps` for the file registry. curl's own
//! OpenSSL objects go through curl's custom BIO (`SSL_set_bio`), which names no descriptor:
//! they are tied by the socket curl's thread writes to inside its first `SSL_write`
//! (`tls_tied_by_socket`), so both sides of every exchange are recorded and the HTTP source
//! counts each transaction once (the server's observation is the duplicate).
//!
//! Backend-independent (uprobes and the capture's ring, not the connection hooks): each test
//! runs with the kernel's first backend only. Cost: about 3 s each (the HTTP source's dedup
//! window for the nginx tests, a few registry refreshes for the others).

use std::{
    collections::BTreeMap,
    io::Write,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use tracer::{
    BackendChoice, Config, Tracer,
    sources::{http::HttpConfig, tls::TlsConfig},
};
use tracer_common::classify::{PROTO_HTTP, PROTO_TLS};
use tracer_integration::{
    cmd::ip,
    netns::{in_fresh_netns, tcp_listening},
    policy::{first_backend_of_kernel, loaded_or_skip},
    tracer::{backend_under_test, counter},
};

const SERVER_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 82);
const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 83);
const TLS_PORT: u16 = 8443;
const REFRESH: Duration = Duration::from_millis(200);

/// (client port, path, method, status).
type TxKey = (u16, String, String, u16);

fn new_tracer() -> Option<Tracer> {
    new_tracer_refreshing(REFRESH)
}

fn new_tracer_refreshing(refresh: Duration) -> Option<Tracer> {
    loaded_or_skip(Tracer::new(Config {
        backend: BackendChoice::Force(backend_under_test()),
        http: HttpConfig {
            quantize: false,
            ..HttpConfig::default()
        },
        tls: TlsConfig {
            refresh,
            ..TlsConfig::default()
        },
        ..Config::default()
    }))
}

fn tls_counters(tracer: &Tracer) -> Vec<(&'static str, u64)> {
    tracer
        .counters()
        .expect("counters")
        .iter()
        .filter(|s| s.info.name.starts_with("tls") || s.info.name.starts_with("http"))
        .map(|s| (s.info.name, s.value))
        .collect()
}

fn host_run() -> bool {
    std::env::var("TRACER_TEST_HOST").is_ok_and(|v| v == "1")
}

/// Whether every program runs here; in the host run (where `cargo xtask setup` installs them)
/// their absence fails the test.
fn programs_or_skip(programs: &[(&str, &str)]) -> bool {
    let missing: Vec<&str> = programs
        .iter()
        .filter(|(program, arg)| {
            !Command::new(program)
                .arg(arg)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .map(|(program, _)| *program)
        .collect();
    if missing.is_empty() {
        return true;
    }
    assert!(
        !host_run(),
        "{missing:?} are installed by `cargo xtask setup` for the host run"
    );
    eprintln!("SKIP: {missing:?} cannot run here (not in this VM image)");
    false
}

/// The directory of a test's files, removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new(what: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("tracer-tls-{what}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        Self(dir)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// nginx with TLS (a self-signed certificate made here by `openssl req`) on
/// `SERVER_IP:TLS_PORT`, logging `$request_method $uri $status $connection $remote_port`.
struct Nginx {
    child: Child,
    dir: Dir,
}

impl Nginx {
    fn start() -> Self {
        let dir = Dir::new("nginx");
        let d = dir.0.display().to_string();
        std::fs::create_dir_all(dir.0.join("www")).expect("www");
        for (name, size) in [("alpha", 100), ("beta", 20_000), ("gamma", 5)] {
            std::fs::write(dir.0.join("www").join(name), vec![b'x'; size]).expect("file");
        }
        let cert = tracer_integration::cmd::openssl_req(&dir.0)
            .args(["-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"])
            .args(["-subj", "/CN=tracer-test"])
            .arg("-keyout")
            .arg(dir.0.join("key.pem"))
            .arg("-out")
            .arg(dir.0.join("cert.pem"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("openssl");
        assert!(cert.success(), "openssl req");
        let conf = format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\n\
             error_log {d}/error.log;\nevents {{ worker_connections 1024; }}\n\
             http {{\n  default_type text/plain;\n\
             log_format t '$request_method $uri $status $connection $remote_port';\n\
             access_log {d}/access.log t;\n  keepalive_timeout 30;\n\
             client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n\
             scgi_temp_path {d}/scgi;\n\
             server {{\n    listen {SERVER_IP}:{TLS_PORT} ssl;\n    root {d}/www;\n\
             ssl_certificate {d}/cert.pem;\n    ssl_certificate_key {d}/key.pem;\n\
             location = /error {{ return 500; }}\n  }}\n}}\n"
        );
        std::fs::write(dir.0.join("nginx.conf"), conf).expect("conf");
        let child = Command::new("nginx")
            .arg("-e")
            .arg(dir.0.join("error.log"))
            .arg("-c")
            .arg(dir.0.join("nginx.conf"))
            .arg("-p")
            .arg(&dir.0)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("nginx");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !tcp_listening(TLS_PORT) {
            assert!(Instant::now() < deadline, "nginx never listened");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { child, dir }
    }

    /// Stops nginx gracefully and reads its access log: (client port, uri, method, status) →
    /// count, and the connections' request counts.
    fn stop(mut self) -> (BTreeMap<TxKey, u64>, BTreeMap<u64, usize>) {
        // SAFETY: kill(2) of our own child; SIGQUIT is nginx's graceful shutdown.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGQUIT) };
        let _ = self.child.wait();
        let log = std::fs::read_to_string(self.dir.0.join("access.log")).expect("access log");
        let mut truth = BTreeMap::new();
        let mut connections = BTreeMap::new();
        for line in log.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            let [method, uri, status, connection, port] = f[..] else {
                panic!("access log line {line:?}");
            };
            *truth
                .entry((
                    port.parse().expect("port"),
                    uri.to_owned(),
                    method.to_owned(),
                    status.parse().expect("status"),
                ))
                .or_default() += 1;
            *connections
                .entry(connection.parse::<u64>().expect("connection"))
                .or_default() += 1;
        }
        (truth, connections)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn curl(extra: &[&str], paths: &[&str]) {
    let mut command = Command::new("curl");
    command.args(["-s", "-k", "--interface", &CLIENT_IP.to_string()]);
    command.args(extra);
    for path in paths {
        command.args([
            "-o",
            "/dev/null",
            &format!("https://{SERVER_IP}:{TLS_PORT}{path}"),
        ]);
    }
    let out = command.output().expect("curl");
    assert!(
        out.status.success(),
        "curl {extra:?} {paths:?}: {:?} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Calls until `want` transactions with server `server` were seen (at most 10 s), then once
/// more after the HTTP source's dedup window; returns them and the protocol stacks
/// (application, encryption) of the connections to or from `server`.
fn collect(
    tracer: &Tracer,
    server: SocketAddr,
    want: u64,
) -> (BTreeMap<TxKey, u64>, Vec<(u8, u8)>) {
    let mut seen: BTreeMap<TxKey, u64> = BTreeMap::new();
    let mut stacks = Vec::new();
    let observe = |delta: &tracer::model::Connections,
                   seen: &mut BTreeMap<TxKey, u64>,
                   stacks: &mut Vec<(u8, u8)>| {
        for (key, stats) in &delta.usm.http {
            if key.server != server {
                continue;
            }
            for (status, requests) in &stats.0 {
                *seen
                    .entry((
                        key.client.port(),
                        key.path.to_string(),
                        key.method.as_str().to_owned(),
                        *status,
                    ))
                    .or_default() += requests.count;
            }
        }
        for c in &delta.conns {
            let ends = [
                SocketAddr::new(c.tuple.src, c.tuple.sport),
                SocketAddr::new(c.tuple.dst, c.tuple.dport),
            ];
            // Both ends are local: nginx's (tied through SSL_set_fd) and curl's (tied by its
            // socket calls).
            if ends.contains(&server) {
                stacks.push((c.protocol_stack.application, c.protocol_stack.encryption));
            }
        }
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let delta = tracer.get_active_connections("tls").expect("call");
        observe(&delta, &mut seen, &mut stacks);
        let total: u64 = seen.values().sum();
        if total >= want || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(HttpConfig::default().dedup_window + Duration::from_millis(500));
    let delta = tracer.get_active_connections("tls").expect("call");
    observe(&delta, &mut seen, &mut stacks);
    (seen, stacks)
}

fn addresses() {
    for ip4 in [SERVER_IP, CLIENT_IP] {
        ip(&["addr", "add", &format!("{ip4}/32"), "dev", "lo"]);
    }
}

#[test]
fn nginx_over_tls_with_curl_every_request_of_the_access_log_once_and_tls_in_the_stack() {
    if !first_backend_of_kernel("HTTPS through TLS uprobes with nginx")
        || !programs_or_skip(&[
            ("nginx", "-v"),
            ("curl", "--version"),
            ("openssl", "version"),
        ])
    {
        return;
    }
    in_fresh_netns(|| {
        addresses();
        let nginx = Nginx::start();
        let Some(tracer) = new_tracer() else {
            return;
        };
        tracer.register_client("tls").expect("register");
        assert!(
            counter(&tracer, "tls_files_hooked") >= 1,
            "nginx's libssl is hooked at start: {:?}",
            tls_counters(&tracer)
        );
        let duplicates = counter(&tracer, "http_duplicates");
        let by_socket = counter(&tracer, "tls_tied_by_socket");
        // Keep-alive: five requests on one connection (the 500 last: nginx closes after it).
        curl(
            &[],
            &["/alpha", "/beta", "/missing", "/alpha?q=1", "/error"],
        );
        // New connections, a POST with a body, HEAD.
        for path in ["/alpha", "/gamma"] {
            curl(&[], &[path]);
        }
        let body = "k=".to_owned() + &"v".repeat(3000);
        curl(&["--data-binary", &body], &["/error"]);
        curl(&["-I"], &["/alpha", "/gamma"]);
        let (truth, connections) = nginx.stop();
        assert!(
            connections.values().any(|&n| n == 5),
            "keep-alive: {connections:?}"
        );
        let want: u64 = truth.values().sum();
        let server = SocketAddr::new(IpAddr::V4(SERVER_IP), TLS_PORT);
        let (seen, stacks) = collect(&tracer, server, want);
        let counters = tls_counters(&tracer);
        eprintln!("tls: counters {counters:?}");
        assert_eq!(
            seen, truth,
            "HTTPS requests by (client port, uri, method, status): tracer (left), nginx's access \
             log (right); counters {counters:?}"
        );
        // nginx's objects tied by SSL_set_fd, curl's (one per connection) by their sockets.
        assert!(counter(&tracer, "tls_tied") >= connections.len() as u64);
        assert!(
            counter(&tracer, "tls_tied_by_socket") >= by_socket + connections.len() as u64,
            "{counters:?}"
        );
        // Every transaction came from curl's side too: the client's observations are the ones
        // counted, each server observation a duplicate (one per access-log line).
        assert_eq!(
            counter(&tracer, "http_duplicates") - duplicates,
            want,
            "each transaction seen by both sides; {counters:?}"
        );
        assert_eq!(
            stacks
                .iter()
                .filter(|s| **s == (PROTO_HTTP, PROTO_TLS))
                .count(),
            stacks.len(),
            "every connection of both ends is HTTP over TLS: {stacks:?}"
        );
        assert!(
            stacks.len() >= 2 * connections.len(),
            "both ends of each connection: {stacks:?} {connections:?}"
        );
    });
}

#[test]
fn gnutls_cli_against_nginx_is_counted_from_both_sides_once() {
    if !first_backend_of_kernel("HTTPS through TLS uprobes with gnutls-cli")
        || !programs_or_skip(&[
            ("nginx", "-v"),
            ("gnutls-cli", "--version"),
            ("openssl", "version"),
        ])
    {
        return;
    }
    in_fresh_netns(|| {
        addresses();
        let nginx = Nginx::start();
        let Some(tracer) = new_tracer() else {
            return;
        };
        tracer.register_client("tls").expect("register");
        // A process that maps a library first is hooked at the next refresh: TLS objects it
        // ties before then are missed (counted untied). So libgnutls is kept mapped (and hooked)
        // before gnutls-cli starts.
        let attached = counter(&tracer, "tls_files_attached");
        let Some(gnutls) = system_library("libgnutls.so.30") else {
            panic!("gnutls-cli runs but libgnutls.so.30 is not found");
        };
        // Another process of the host may map it already (qemu links libgnutls): then it is
        // attached once for all, and the holder adds no attach.
        let mapped_elsewhere = mapped_by_any_process(&gnutls);
        let mut holder = holding(&gnutls);
        if mapped_elsewhere {
            std::thread::sleep(REFRESH * 2);
        } else {
            wait_counter(&tracer, "tls_files_attached", attached + 1);
        }
        let before_tied = counter(&tracer, "tls_tied");
        // Two requests on one connection, the second sent once the first's response is out
        // (the last one asks `Connection: close`, so gnutls-cli exits after nginx answered).
        // Sent together, as a slow VM's handshake made them, they leave in one TLS record,
        // i.e. pipelined: the HTTP rules see the first request of a buffer only (the second's
        // response counts as `http_response_without_request`).
        let mut child = Command::new("gnutls-cli")
            .args(["--insecure", "--port", &TLS_PORT.to_string()])
            .arg(SERVER_IP.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("gnutls-cli");
        let mut stdin = child.stdin.take().expect("stdin");
        let mut stdout = child.stdout.take().expect("stdout");
        let (lines, output) = std::sync::mpsc::channel::<Vec<u8>>();
        let reader = std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n) = std::io::Read::read(&mut stdout, &mut chunk) {
                if n == 0 || lines.send(chunk[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        stdin
            .write_all(b"GET /alpha HTTP/1.1\r\nHost: t\r\n\r\n")
            .expect("write");
        let mut seen_output = Vec::new();
        let answered = Instant::now() + Duration::from_secs(30);
        while !seen_output.windows(12).any(|w| w == b"HTTP/1.1 200") {
            let left = answered.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "no response to the first request");
            if let Ok(chunk) = output.recv_timeout(left) {
                seen_output.extend(chunk);
            }
        }
        stdin
            .write_all(b"GET /nothing HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .expect("write");
        std::thread::sleep(Duration::from_millis(300));
        drop(stdin);
        let deadline = Instant::now() + Duration::from_secs(10);
        while child.try_wait().expect("wait").is_none() {
            assert!(Instant::now() < deadline, "gnutls-cli did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = reader.join();
        let (truth, _) = nginx.stop();
        assert_eq!(truth.values().sum::<u64>(), 2, "{truth:?}");
        let server = SocketAddr::new(IpAddr::V4(SERVER_IP), TLS_PORT);
        let (seen, _) = collect(&tracer, server, 2);
        let counters = tls_counters(&tracer);
        assert_eq!(
            seen, truth,
            "tracer (left), access log (right); {counters:?}"
        );
        // Both ends tied: nginx's (OpenSSL) and gnutls-cli's (GnuTLS) session.
        assert!(
            counter(&tracer, "tls_tied") >= before_tied + 2,
            "{counters:?}"
        );
        // Both sides observed the same transactions: the HTTP source counted them once.
        assert!(counter(&tracer, "http_duplicates") >= 2, "{counters:?}");
        let _ = holder.kill();
        let _ = holder.wait();
    });
}

/// A copy of the system's libssl under a name and inode of its own, so that whether it is
/// hooked does not depend on what else on the host maps the system's file.
fn private_libssl(dir: &Path) -> Option<PathBuf> {
    let system = system_library("libssl.so.3")?;
    let copy = dir.join("libssl.so.3");
    std::fs::copy(system, &copy).ok()?;
    Some(copy)
}

/// The system's copy of library `name`: from the loader's cache, or where Debian puts it (the
/// VM images have no `ldconfig`).
fn system_library(name: &str) -> Option<PathBuf> {
    let from_cache = Command::new("ldconfig")
        .arg("-p")
        .output()
        .ok()
        .and_then(|out| {
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|line| line.trim_start().starts_with(&format!("{name} ")))
                .filter_map(|line| line.split("=> ").nth(1))
                .map(|path| PathBuf::from(path.trim()))
                .find(|path| path.exists())
        });
    from_cache.or_else(|| {
        ["/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu"]
            .iter()
            .map(|dir| Path::new(dir).join(name))
            .find(|path| path.exists())
    })
}

/// A long-running, dynamically linked process with `library` preloaded, so that it maps it
/// until killed: `ip monitor` (iproute2, on the host and in the VM images, where `sleep` is
/// static busybox and ignores `LD_PRELOAD`).
fn holding(library: &Path) -> Child {
    Command::new("ip")
        .args(["monitor", "link"])
        .env("LD_PRELOAD", library)
        .stdout(Stdio::null())
        .spawn()
        .expect("ip monitor")
}

/// Whether any process of the host maps `library` now (maps name the file its links resolve to).
fn mapped_by_any_process(library: &Path) -> bool {
    let real = std::fs::canonicalize(library).unwrap_or_else(|_| library.to_owned());
    let name = real.to_string_lossy();
    std::fs::read_dir("/proc")
        .map(|dir| {
            dir.filter_map(Result::ok).any(|entry| {
                std::fs::read_to_string(entry.path().join("maps"))
                    .is_ok_and(|maps| maps.lines().any(|l| l.ends_with(name.as_ref())))
            })
        })
        .unwrap_or(false)
}

/// Waits (at most ten refreshes, plus the first hook's load of the TLS programs) until
/// `counter` reaches `value`.
fn wait_counter(tracer: &Tracer, name: &str, value: u64) {
    // The first file the registry tries to hook loads the TLS programs (the verifier's walk:
    // about 10 s in the emulated 6.1 VM, under 1 s on the host).
    let deadline = Instant::now() + REFRESH * 10 + Duration::from_secs(30);
    while counter(tracer, name) < value {
        assert!(
            Instant::now() < deadline,
            "{name} stayed below {value}: {:?}",
            tls_counters(tracer)
        );
        std::thread::sleep(REFRESH / 4);
    }
}

/// [`private_libssl`], or `None` after a SKIP line where there is no libssl; the host and the VM
/// images have one (curl and nginx link it).
fn private_libssl_or_skip(dir: &Path) -> Option<PathBuf> {
    let lib = private_libssl(dir);
    if lib.is_none() {
        assert!(
            !host_run(),
            "libssl.so.3 is on the host (curl, nginx link it)"
        );
        eprintln!("SKIP: no libssl.so.3 here");
    }
    lib
}

#[test]
fn a_process_started_later_is_hooked_at_the_next_refresh_and_released_when_it_exits() {
    if !first_backend_of_kernel("TLS file registry") {
        return;
    }
    let dir = Dir::new("registry");
    let Some(lib) = private_libssl_or_skip(&dir.0) else {
        return;
    };
    let Some(tracer) = new_tracer() else {
        return;
    };
    let attached = counter(&tracer, "tls_files_attached");
    let released = counter(&tracer, "tls_files_released");
    // A process with the copy preloaded maps it (its libcrypto comes from the system).
    let mut child = holding(&lib);
    wait_counter(&tracer, "tls_files_attached", attached + 1);
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", child.id())).expect("maps");
    assert!(
        maps.contains(&lib.display().to_string()),
        "preloaded: {maps}"
    );
    assert!(counter(&tracer, "tls_processes") >= 1);
    child.kill().expect("kill");
    let _ = child.wait();
    wait_counter(&tracer, "tls_files_released", released + 1);
    assert_eq!(
        counter(&tracer, "tls_files_attached"),
        attached + 1,
        "hooked once: {:?}",
        tls_counters(&tracer)
    );
}

#[test]
fn a_file_without_tls_symbols_and_a_corrupt_elf_are_counted_and_refused() {
    if !first_backend_of_kernel("TLS file registry refusals") {
        return;
    }
    let dir = Dir::new("refusals");
    // Named as the registry looks for them, mapped by this process.
    let no_symbols = dir.0.join("libssl.so.97");
    std::fs::copy("/bin/true", &no_symbols).expect("copy");
    let corrupt = dir.0.join("libgnutls.so.98");
    let mut bytes = b"\x7fELF\x02\x01\x01".to_vec();
    bytes.extend((0..8192u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
    std::fs::write(&corrupt, &bytes).expect("corrupt");
    let Some(tracer) = new_tracer() else {
        return;
    };
    let no_symbol = counter(&tracer, "tls_attach_failed_no_symbol");
    let bad_file = counter(&tracer, "tls_attach_failed_bad_file");
    let maps: Vec<(*mut libc::c_void, usize)> = [&no_symbols, &corrupt]
        .iter()
        .map(|path| {
            let file = std::fs::File::open(path).expect("open");
            let len = 4096;
            // SAFETY: a private read-only mapping of a file this test owns, unmapped below.
            let at = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ,
                    libc::MAP_PRIVATE,
                    std::os::fd::AsRawFd::as_raw_fd(&file),
                    0,
                )
            };
            assert_ne!(at, libc::MAP_FAILED);
            (at, len)
        })
        .collect();
    wait_counter(&tracer, "tls_attach_failed_no_symbol", no_symbol + 1);
    wait_counter(&tracer, "tls_attach_failed_bad_file", bad_file + 1);
    // Blocked: not retried at later refreshes.
    std::thread::sleep(REFRESH * 3);
    assert_eq!(
        counter(&tracer, "tls_attach_failed_no_symbol"),
        no_symbol + 1
    );
    assert_eq!(counter(&tracer, "tls_attach_failed_bad_file"), bad_file + 1);
    assert!(counter(&tracer, "tls_files_blocked") >= 2);
    tracer.tls().log();
    for (at, len) in maps {
        // SAFETY: the mappings made above.
        unsafe { libc::munmap(at, len) };
    }
}

/// A TLS 1.2/1.3 ClientHello record as a client sends it first (random zero, one cipher suite,
/// no extensions): what the packet classifier takes for TLS.
fn client_hello() -> Vec<u8> {
    let mut body = vec![0x03, 0x03];
    body.extend([0u8; 32]);
    // Session id (empty), cipher suites (TLS_AES_128_GCM_SHA256), compression (null), no
    // extensions.
    body.extend([0x00, 0x00, 0x02, 0x13, 0x01, 0x01, 0x00, 0x00, 0x00]);
    let mut handshake = vec![0x01, 0x00];
    handshake.extend((body.len() as u16).to_be_bytes());
    handshake.extend(body);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend((handshake.len() as u16).to_be_bytes());
    record.extend(handshake);
    record
}

#[test]
fn a_process_talking_tls_without_a_hooked_library_is_counted_not_hookable() {
    if !first_backend_of_kernel("TLS not hookable") {
        return;
    }
    // This test process is the client that speaks TLS without a TLS library (as a statically
    // linked or Go binary does): it must map none.
    let maps = std::fs::read_to_string("/proc/self/maps").expect("maps");
    assert!(
        !maps.contains("libssl.so") && !maps.contains("libgnutls.so"),
        "the test binary maps no TLS library"
    );
    let Some(tracer) = new_tracer() else {
        return;
    };
    tracer.register_client("nohook").expect("register");
    let pid = std::process::id();
    assert!(!tracer.tls().not_hookable(pid));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let mut client = std::net::TcpStream::connect(addr).expect("connect");
    let (mut server, _) = listener.accept().expect("accept");
    let hello = client_hello();
    client.write_all(&hello).expect("write");
    let mut buf = vec![0u8; hello.len()];
    std::io::Read::read_exact(&mut server, &mut buf).expect("read");
    let port = client.local_addr().expect("local").port();
    // The classifier marks the connection TLS at its first payload; the call that reports it
    // notes its owner.
    let deadline = Instant::now() + Duration::from_secs(10);
    let conn = loop {
        let delta = tracer.get_active_connections("nohook").expect("call");
        if let Some(c) = delta
            .conns
            .iter()
            .find(|c| c.tuple.sport == port && c.tuple.dport == addr.port())
            .filter(|c| c.protocol_stack.encryption == PROTO_TLS)
        {
            break c.clone();
        }
        assert!(
            Instant::now() < deadline,
            "the connection is never classified TLS: {:?}",
            delta.conns
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(conn.tuple.pid, pid, "{conn:?}");
    assert!(
        tracer.tls().not_hookable(pid),
        "{:?}",
        tls_counters(&tracer)
    );
    assert!(counter(&tracer, "tls_processes_not_hookable") >= 1);
    drop((client, server));
}

#[test]
fn a_process_started_later_is_hooked_by_the_exec_watch_without_a_periodic_scan() {
    if !first_backend_of_kernel("TLS exec watch") {
        return;
    }
    let dir = Dir::new("exec");
    let Some(lib) = private_libssl_or_skip(&dir.0) else {
        return;
    };
    // No periodic scan during the test: only the start's, then the exec watch's.
    let Some(tracer) = new_tracer_refreshing(Duration::from_secs(3600)) else {
        return;
    };
    assert_eq!(
        counter(&tracer, "tls_scans"),
        1,
        "{:?}",
        tls_counters(&tracer)
    );
    let attached = counter(&tracer, "tls_files_attached");
    let mut child = holding(&lib);
    wait_counter(&tracer, "tls_files_attached", attached + 1);
    assert!(counter(&tracer, "tls_exec_scans") >= 1);
    assert!(counter(&tracer, "tls_exec_processes") >= 1);
    assert_eq!(
        counter(&tracer, "tls_scans"),
        1,
        "hooked without a periodic scan: {:?}",
        tls_counters(&tracer)
    );
    child.kill().expect("kill");
    let _ = child.wait();
}
