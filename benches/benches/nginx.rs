//! wrk against nginx on loopback, untraced, traced, untraced again, in one run (privileged:
//! needs root to load the tracer; issue 11).
//!
//! nginx is Debian's (`nginx-light`, installed by `cargo xtask setup`, as is `wrk`), with a
//! minimal configuration in a temporary directory: no master process, one worker,
//! `access_log off`, listening on a free port of 127.0.0.1, serving
//! - `/return200`: `return 200 "ok\n"` (no file access: the tracer's share is largest), and
//! - `/static`: a 1 KiB static file.
//!
//! Each location gets four phases of wrk (`-t1 -c4 -d<secs>s --latency`, 5 s by default,
//! `NGINX_BENCH_SECS` to change): untraced; connections only (a `tracer::Tracer` with the
//! capture's HTTP parser off: `capture.http = false`); traced (the default configuration: the
//! connection tracer, the packet capture and its HTTP/1.x parser, the HTTP source); untraced.
//! Each traced phase has a client thread calling `get_active_connections` every second, as an
//! agent would. Each tracer is loaded once for both locations (loading takes seconds) and
//! dropped before the next phase. traced / connections only is the HTTP parser's own share;
//! traced / untraced is the whole tracer's, whose syscall-path cost is issue 12's.
//!
//! Printed per location: requests/s and wrk's p50/p99 latency of each phase, and the ratio of
//! the traced requests/s to the mean of the two untraced phases around it (target >= 0.95).
//! Also printed: the HTTP requests the tracer's client saw during the traced phases against
//! what wrk counted (the parser did run; the last wrk connections' requests may be in flight),
//! and the calls' duration. No timed assertion: this machine (2 vCPUs, shared with other
//! guests) drifts by tens of percent over seconds, and wrk, nginx and the tracer share both
//! CPUs, so single runs vary; the summary rows go to `TRACER_BENCH_SUMMARY` as the other
//! benches' do.
//!
//! Run: `TRACER_REQUIRE_EBPF=1 cargo bench -p tracer-benches --bench nginx`.

use std::{
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use criterion::{Criterion, criterion_group, criterion_main};
use tracer::Config;
use tracer_benches::{
    privileged::{Loaded, bench_mode, euid, foreign_programs},
    summary::{number, upsert_fields_from_env},
    wrk::{Wrk, run_wrk},
};

const BENCH: &str = "nginx";
/// The target: traced requests/s at least this share of untraced.
const TARGET_RATIO: f64 = 0.95;
/// wrk's connections and threads.
const CONNECTIONS: u32 = 4;
const THREADS: u32 = 1;
/// Default seconds per phase.
const DEFAULT_SECS: u64 = 5;
/// The agent's call interval.
const POLL: Duration = Duration::from_secs(1);
/// The tracer's client id.
const CLIENT: &str = "nginx-bench";

/// The locations measured: (name, path).
const LOCATIONS: [(&str, &str); 2] = [("return200", "/return200"), ("static", "/static")];

/// A private nginx on 127.0.0.1, stopped on drop.
struct Nginx {
    child: Child,
    dir: PathBuf,
    addr: SocketAddr,
}

impl Nginx {
    fn start() -> Result<Self, String> {
        let dir = std::env::temp_dir().join(format!("tracer-bench-nginx-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("www")).map_err(|e| format!("{e}"))?;
        std::fs::write(dir.join("www").join("static"), vec![b'x'; 1024])
            .map_err(|e| format!("{e}"))?;
        // A free port: bound and released (nginx binds it a moment later).
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("finding a free port: {e}"))?
            .port();
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let d = dir.display();
        let conf = format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\n\
             error_log {d}/error.log;\nevents {{ worker_connections 1024; }}\n\
             http {{\n  default_type text/plain;\n  access_log off;\n  keepalive_requests 1000000;\n\
             client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n\
             scgi_temp_path {d}/scgi;\n\
             server {{\n    listen {addr};\n    root {d}/www;\n\
             location = /return200 {{ return 200 \"ok\\n\"; }}\n  }}\n}}\n"
        );
        std::fs::write(dir.join("nginx.conf"), conf).map_err(|e| format!("{e}"))?;
        let child = Command::new("nginx")
            .arg("-e")
            .arg(dir.join("error.log"))
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .arg("-p")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("starting nginx: {e}"))?;
        let nginx = Self { child, dir, addr };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(addr).is_err() {
            if Instant::now() > deadline {
                return Err("nginx never listened".to_owned());
            }
            thread::sleep(Duration::from_millis(20));
        }
        Ok(nginx)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The agent: `get_active_connections` every second until stopped; counts the HTTP requests
/// to `server` it was handed, and the calls' durations.
struct Agent {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Result<(u64, Vec<Duration>), String>>,
}

impl Agent {
    fn start(loaded: Arc<Loaded>, server: SocketAddr) -> Result<Self, String> {
        loaded
            .tracer
            .register_client(CLIENT)
            .map_err(|e| format!("register: {e}"))?;
        loaded
            .tracer
            .get_active_connections(CLIENT)
            .map_err(|e| format!("first call: {e}"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let handle = thread::spawn(move || {
            let mut requests = 0u64;
            let mut calls = Vec::new();
            let mut next = Instant::now() + POLL;
            loop {
                // Until the next call is due or the bench stops (then one last call hands out
                // what is left).
                while Instant::now() < next && !flag.load(Ordering::Relaxed) {
                    thread::sleep(Duration::from_millis(20));
                }
                next += POLL;
                let start = Instant::now();
                let conns = loaded
                    .tracer
                    .get_active_connections(CLIENT)
                    .map_err(|e| format!("get_active_connections: {e}"))?;
                calls.push(start.elapsed());
                requests += conns
                    .usm
                    .http
                    .iter()
                    .filter(|(key, _)| key.server == server)
                    .map(|(_, stats)| stats.count())
                    .sum::<u64>();
                if flag.load(Ordering::Relaxed) {
                    return Ok((requests, calls));
                }
            }
        });
        Ok(Self { stop, handle })
    }

    fn finish(self) -> Result<(u64, Vec<Duration>), String> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle
            .join()
            .map_err(|_| "the agent thread panicked".to_owned())?
    }
}

fn nginx(_c: &mut Criterion) {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!("{BENCH}: Linux {}, euid {}", release.trim(), euid());
    if euid() != 0 {
        println!("{BENCH}: SKIP: not root: loading eBPF programs needs root; no rows written");
        return;
    }
    if !bench_mode() {
        println!("{BENCH}: not in --bench mode: nothing run (the phases take half a minute)");
        return;
    }
    let present = |program: &str, arg: &str| {
        Command::new(program)
            .arg(arg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    };
    if !present("nginx", "-v") || !present("wrk", "-v") {
        println!("{BENCH}: SKIP: nginx or wrk missing (`cargo xtask setup` installs both)");
        return;
    }
    let secs = std::env::var("NGINX_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&s| s > 0)
        .unwrap_or(DEFAULT_SECS);
    if let Err(err) = run(secs) {
        println!("{BENCH}: failed: {err}; no rows written");
    }
}

fn run(secs: u64) -> Result<(), String> {
    let server = Nginx::start()?;
    let url = |path: &str| format!("http://{}{path}", server.addr);
    println!(
        "{BENCH}: nginx (1 worker, access_log off) on {}; wrk -t{THREADS} -c{CONNECTIONS} \
         -d{secs}s --latency; phases untraced, traced, untraced",
        server.addr
    );
    // Warm-up: nginx's first requests, the page cache, wrk's binary.
    for (_, path) in LOCATIONS {
        run_wrk(&url(path), THREADS, CONNECTIONS, 1)?;
    }
    foreign_programs(BENCH, "untraced", 0);
    let before: Vec<Wrk> = LOCATIONS
        .iter()
        .map(|(_, path)| run_wrk(&url(path), THREADS, CONNECTIONS, secs))
        .collect::<Result<_, _>>()?;

    // Connections only (the capture's HTTP parser off), then everything: the difference is
    // what HTTP parsing costs on top of the connection tracing.
    let mut without_http = Config::default();
    without_http.capture.http = false;
    let (conns_only, _, _) =
        traced_phases(secs, &url, server.addr, without_http, "connections only")?;
    let (traced, seen, calls) = traced_phases(secs, &url, server.addr, Config::default(), "full")?;
    let after: Vec<Wrk> = LOCATIONS
        .iter()
        .map(|(_, path)| run_wrk(&url(path), THREADS, CONNECTIONS, secs))
        .collect::<Result<_, _>>()?;
    drop(server);

    let wrk_requests: u64 = traced.iter().map(|w| w.requests).sum();
    let mut sorted = calls.clone();
    sorted.sort_unstable();
    let call_ms = |q: f64| {
        let index = ((sorted.len().saturating_sub(1)) as f64 * q).round() as usize;
        sorted.get(index).map_or(0.0, |d| d.as_secs_f64() * 1e3)
    };
    println!(
        "{BENCH}: the agent saw {seen} HTTP requests to nginx in {} calls; wrk counted \
         {wrk_requests} in the traced phases ({:.1} %); get_active_connections p50 {:.2} ms, max \
         {:.2} ms",
        calls.len(),
        100.0 * seen as f64 / wrk_requests.max(1) as f64,
        call_ms(0.5),
        call_ms(1.0)
    );
    for (i, (name, _)) in LOCATIONS.iter().enumerate() {
        if let (Some(b), Some(c), Some(t), Some(a)) = (
            before.get(i),
            conns_only.get(i),
            traced.get(i),
            after.get(i),
        ) {
            report(name, b, c, t, a);
        }
    }
    Ok(())
}

type Phases = (Vec<Wrk>, u64, Vec<Duration>);

/// Loads a tracer with `config`, runs wrk on every location with an agent polling, unloads it:
/// the phases' results, the HTTP requests the agent saw and its calls' durations.
fn traced_phases(
    secs: u64,
    url: &dyn Fn(&str) -> String,
    server: SocketAddr,
    config: Config,
    label: &str,
) -> Result<Phases, String> {
    let load_start = Instant::now();
    let loaded = Arc::new(Loaded::new(config).map_err(|e| format!("loading: {e}"))?);
    println!(
        "{BENCH}: tracer ({label}) loaded in {:.1} s: backend {}, {} programs",
        load_start.elapsed().as_secs_f64(),
        loaded.tracer.backend(),
        loaded.program_count()
    );
    let agent = Agent::start(Arc::clone(&loaded), server)?;
    let traced: Vec<Wrk> = LOCATIONS
        .iter()
        .map(|(_, path)| run_wrk(&url(path), THREADS, CONNECTIONS, secs))
        .collect::<Result<_, _>>()?;
    // One more call after the last phase, so that its transactions are handed out.
    thread::sleep(Duration::from_millis(200));
    let (seen, calls) = agent.finish()?;
    let loaded = Arc::try_unwrap(loaded).map_err(|_| "the tracer is still shared".to_owned())?;
    let left = loaded.unload();
    if left > 0 {
        println!("{BENCH}: warning: {left} programs still loaded 10 s after dropping the tracer");
    }
    Ok((traced, seen, calls))
}

fn report(name: &str, before: &Wrk, conns_only: &Wrk, traced: &Wrk, after: &Wrk) {
    let row = format!("{BENCH}/{name}");
    let untraced = (before.requests_per_s + after.requests_per_s) / 2.0;
    let ratio = traced.requests_per_s / untraced;
    let conns_ratio = conns_only.requests_per_s / untraced;
    // HTTP parsing's own share: everything against connections only.
    let http_ratio = traced.requests_per_s / conns_only.requests_per_s;
    let verdict = if ratio >= TARGET_RATIO {
        "met"
    } else {
        "missed"
    };
    let phase = |w: &Wrk| {
        format!(
            "{:.0} req/s (p50 {:.0} us, p99 {:.0} us)",
            w.requests_per_s, w.p50_us, w.p99_us
        )
    };
    println!(
        "{row}: untraced {}, connections only {}, traced {}, untraced {}: ratio traced/untraced \
         {ratio:.3} [target >= {TARGET_RATIO} {verdict}]; connections only/untraced \
         {conns_ratio:.3}; traced/connections only {http_ratio:.3} (the HTTP parser's share)",
        phase(before),
        phase(conns_only),
        phase(traced),
        phase(after)
    );
    let errors = before.errors + conns_only.errors + traced.errors + after.errors;
    if errors > 0 {
        println!("{row}: warning: wrk reported {errors} errors or non-2xx responses");
    }
    let fields = vec![
        ("untraced_before_rps", number(before.requests_per_s)),
        ("traced_rps", number(traced.requests_per_s)),
        ("untraced_after_rps", number(after.requests_per_s)),
        ("ratio", number(ratio)),
        ("connections_only_rps", number(conns_only.requests_per_s)),
        ("connections_only_ratio", number(conns_ratio)),
        ("http_share_ratio", number(http_ratio)),
        ("target_ratio", number(TARGET_RATIO)),
        ("untraced_before_p50_us", number(before.p50_us)),
        ("untraced_before_p99_us", number(before.p99_us)),
        ("traced_p50_us", number(traced.p50_us)),
        ("traced_p99_us", number(traced.p99_us)),
        ("untraced_after_p50_us", number(after.p50_us)),
        ("untraced_after_p99_us", number(after.p99_us)),
    ];
    if let Err(err) = upsert_fields_from_env(&row, fields) {
        eprintln!("{row}: cannot write the bench summary: {err}");
    }
}

criterion_group!(benches, nginx);
criterion_main!(benches);
