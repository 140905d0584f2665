//! What the TLS uprobes cost (privileged: needs root to load the tracer; issue 15), in one run:
//!
//! - `tls/call`: ns added per hooked OpenSSL call. This process loads a private copy of the
//!   system's `libssl.so.3` (its own inode: no other process's calls, and no other hook made
//!   for the system's file, land on it) with `dlopen`, and calls `SSL_write` and `SSL_read`
//!   on an `SSL` object without a handshake in a loop: each returns at once (an error), so the
//!   loop is the calls and little else. Phases: untraced, traced (the default `Tracer`, whose
//!   file registry hooks the copy: an uprobe at each call's entry and a uretprobe at its
//!   return, the programs stashing the arguments and finding the object untied), untraced
//!   again; each phase keeps its cheapest block of calls. `ns_per_call` = traced - the mean
//!   of the untraced phases, per call. Then the floor: the benchmark-only object's empty
//!   uprobe and uretprobe on the same two calls (`floor_ns_per_call`: the traps and the
//!   uretprobe trampoline alone) against a last untraced phase, and the tracer's cost over it
//!   (`ratio_to_floor`). A tied object whose call starts an HTTP message adds the parsing of
//!   its prefix (a few hundred instructions).
//! - `tls/https`: wrk over HTTPS against nginx on 127.0.0.1 (`-t1 -c4`, keep-alive,
//!   `return 200`), untraced, traced, untraced: requests/s and the ratio traced / mean of the
//!   untraced phases (target >= 0.95). Both nginx and wrk link the system's libssl: each
//!   request is four hooked calls (wrk's write and read, nginx's read and write) and two
//!   parsed messages on each side, besides the connection tracer's own hooks.
//!
//! No timed assertion: this machine (2 vCPUs, shared) drifts by tens of percent over seconds;
//! the rows go to `TRACER_BENCH_SUMMARY`.
//!
//! Run: `TRACER_REQUIRE_EBPF=1 cargo bench -p tracer-benches --bench tls`
//! (`TLS_BENCH_SECS`: seconds per wrk phase, default 5).

use std::{
    ffi::{CString, c_void},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use criterion::{Criterion, criterion_group, criterion_main};
use tracer::{Config, kernel::object};
use tracer_benches::{
    privileged::{Loaded, bench_mode, euid, foreign_programs},
    summary::{number, upsert_fields_from_env},
    wrk::{Wrk, run_wrk},
};
use tracer_common::names;

const BENCH: &str = "tls";
const TARGET_RATIO: f64 = 0.95;
/// Calls per block (each an `SSL_write` and an `SSL_read`), blocks per phase.
const CALLS: u32 = 20_000;
const BLOCKS: u32 = 15;

type Method = unsafe extern "C" fn() -> *const c_void;
type CtxNew = unsafe extern "C" fn(*const c_void) -> *mut c_void;
type SslNew = unsafe extern "C" fn(*mut c_void) -> *mut c_void;
type SslIo = unsafe extern "C" fn(*mut c_void, *mut c_void, i32) -> i32;
type SslFree = unsafe extern "C" fn(*mut c_void);
type ErrClear = unsafe extern "C" fn();

/// The functions of a `dlopen`ed libssl and one `SSL` object.
struct Ssl {
    ssl: *mut c_void,
    write: SslIo,
    read: SslIo,
    free: SslFree,
    clear: ErrClear,
}

/// `dlsym` of `name` in `handle`, as a function pointer of type `T`.
///
/// # Safety
/// `T` must be the symbol's C signature.
unsafe fn symbol<T: Copy>(handle: *mut c_void, name: &str) -> Result<T, String> {
    let c = CString::new(name).map_err(|e| e.to_string())?;
    // SAFETY: a valid handle and C string.
    let at = unsafe { libc::dlsym(handle, c.as_ptr()) };
    if at.is_null() {
        return Err(format!("{name} not found"));
    }
    // SAFETY: the caller names the signature; a function pointer has a pointer's size.
    Ok(unsafe { std::mem::transmute_copy::<*mut c_void, T>(&at) })
}

impl Ssl {
    fn open(path: &Path) -> Result<Self, String> {
        let c = CString::new(path.as_os_str().as_encoded_bytes()).map_err(|e| e.to_string())?;
        // SAFETY: a valid C string; the library stays loaded for the process's life.
        let handle = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        if handle.is_null() {
            return Err(format!("dlopen {}", path.display()));
        }
        // SAFETY: OpenSSL 3's signatures; the objects are freed on drop.
        unsafe {
            let method: Method = symbol(handle, "TLS_client_method")?;
            let ctx_new: CtxNew = symbol(handle, "SSL_CTX_new")?;
            let ssl_new: SslNew = symbol(handle, "SSL_new")?;
            let ctx = ctx_new(method());
            if ctx.is_null() {
                return Err("SSL_CTX_new".to_owned());
            }
            let ssl = ssl_new(ctx);
            if ssl.is_null() {
                return Err("SSL_new".to_owned());
            }
            Ok(Self {
                ssl,
                write: symbol(handle, "SSL_write")?,
                read: symbol(handle, "SSL_read")?,
                free: symbol(handle, "SSL_free")?,
                clear: symbol(libc::RTLD_DEFAULT, "ERR_clear_error")
                    .or_else(|_| symbol(handle, "ERR_clear_error"))?,
            })
        }
    }

    /// `n` times `SSL_write` then `SSL_read` of 64 bytes (each fails at once: no handshake).
    fn calls(&self, n: u32) -> Duration {
        let mut buf = [0u8; 64];
        let start = Instant::now();
        for _ in 0..n {
            // SAFETY: a live SSL object and a 64-byte buffer.
            unsafe {
                std::hint::black_box((self.write)(self.ssl, buf.as_mut_ptr().cast(), 64));
                std::hint::black_box((self.read)(self.ssl, buf.as_mut_ptr().cast(), 64));
            }
        }
        let elapsed = start.elapsed();
        // SAFETY: clears this thread's OpenSSL error queue (each failed call queued one).
        unsafe { (self.clear)() };
        elapsed
    }

    /// The cheapest of [`BLOCKS`] blocks, ns per call (two calls per iteration).
    fn phase(&self) -> f64 {
        (0..BLOCKS)
            .map(|_| self.calls(CALLS))
            .min()
            .map_or(0.0, |d| d.as_nanos() as f64 / f64::from(2 * CALLS))
    }
}

impl Drop for Ssl {
    fn drop(&mut self) {
        // SAFETY: the object made in `open` (its context is freed with the process).
        unsafe { (self.free)(self.ssl) };
    }
}

fn system_libssl() -> Option<PathBuf> {
    [
        "/usr/lib/x86_64-linux-gnu",
        "/lib/x86_64-linux-gnu",
        "/usr/lib64",
        "/usr/lib",
    ]
    .iter()
    .map(|dir| Path::new(dir).join("libssl.so.3"))
    .find(|p| p.exists())
}

fn call_cost(dir: &Path) -> Result<(), String> {
    let system = system_libssl().ok_or("no libssl.so.3")?;
    let copy = dir.join("libssl.so.3");
    std::fs::copy(&system, &copy).map_err(|e| format!("copying libssl: {e}"))?;
    let ssl = Ssl::open(&copy)?;
    ssl.phase(); // warm-up
    foreign_programs(BENCH, "untraced", 0);
    let before = ssl.phase();
    let loaded = Loaded::new(Config::default()).map_err(|e| format!("loading: {e}"))?;
    loaded.tracer.refresh_tls();
    let hooked = loaded
        .tracer
        .tls()
        .counters()
        .tls_processes
        .load(std::sync::atomic::Ordering::Relaxed);
    let traced = ssl.phase();
    let counters = loaded.tracer.counters().map_err(|e| e.to_string())?;
    let untied = counters.value("tls_untied");
    let left = loaded.unload();
    if left > 0 {
        println!("{BENCH}: warning: {left} programs still loaded 10 s after dropping the tracer");
    }
    let after = ssl.phase();
    // The floor: empty programs at the entry and the return of the same two calls (the traps
    // and the uretprobe trampoline alone), then untraced once more.
    let floor = {
        let _floor = FloorUprobes::attach(&copy)?;
        ssl.phase()
    };
    let last = ssl.phase();
    let untraced = (before + after) / 2.0;
    let added = traced - untraced;
    let floor_added = floor - (after + last) / 2.0;
    println!(
        "{BENCH}/call: SSL_write + SSL_read on a private libssl copy ({hooked} processes map \
         hooked TLS files; {untied} untied calls counted): untraced {before:.1} ns/call, traced \
         {traced:.1} ns/call, untraced {after:.1} ns/call: {added:.1} ns added per hooked call \
         (uprobe + uretprobe); ratio traced/untraced {:.2}; floor (empty uprobe + uretprobe on \
         the same calls) {floor:.1} ns/call, untraced {last:.1}: {floor_added:.1} ns added, the \
         tracer {:.2}x the floor",
        traced / untraced,
        added / floor_added
    );
    let fields = vec![
        ("untraced_before_ns_per_call", number(before)),
        ("traced_ns_per_call", number(traced)),
        ("untraced_after_ns_per_call", number(after)),
        ("ns_per_call", number(added)),
        ("ratio", number(traced / untraced)),
        ("floor_ns_per_call", number(floor_added)),
        ("ratio_to_floor", number(added / floor_added)),
    ];
    if let Err(err) = upsert_fields_from_env(&format!("{BENCH}/call"), fields) {
        eprintln!("{BENCH}/call: cannot write the bench summary: {err}");
    }
    Ok(())
}

/// The benchmark-only object's empty uprobe and uretprobe
/// (`tracer-ebpf/src/bench_floor.rs`), attached to `SSL_write` and `SSL_read` of `library`;
/// detached on drop.
struct FloorUprobes {
    _ebpf: aya::Ebpf,
}

impl FloorUprobes {
    fn attach(library: &Path) -> Result<Self, String> {
        use aya::programs::{UProbe, uprobe::UProbeScope};
        let bytes = object::floor_bytes().map_err(|e| e.to_string())?;
        let mut ebpf = aya::Ebpf::load(bytes).map_err(|e| format!("loading the floor: {e}"))?;
        for name in [names::PROG_FLOOR_UPROBE, names::PROG_FLOOR_URETPROBE] {
            let program: &mut UProbe = ebpf
                .program_mut(name)
                .ok_or_else(|| format!("no program {name} in the floor object"))?
                .try_into()
                .map_err(|e| format!("{name}: {e}"))?;
            program.load().map_err(|e| format!("loading {name}: {e}"))?;
            for symbol in ["SSL_write", "SSL_read"] {
                program
                    .attach(symbol, library, UProbeScope::AllProcesses)
                    .map_err(|e| format!("attaching {name} to {symbol}: {e}"))?;
            }
        }
        Ok(Self { _ebpf: ebpf })
    }
}

/// nginx with TLS on 127.0.0.1 (a self-signed certificate made here), stopped on drop.
struct Nginx {
    child: Child,
    addr: SocketAddr,
}

impl Nginx {
    fn start(dir: &Path) -> Result<Self, String> {
        let ok = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            ])
            .args(["-subj", "/CN=tracer-bench"])
            .arg("-keyout")
            .arg(dir.join("key.pem"))
            .arg("-out")
            .arg(dir.join("cert.pem"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(|e| format!("openssl: {e}"))?;
        if !ok.success() {
            return Err("openssl req failed".to_owned());
        }
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
             server {{\n    listen {addr} ssl;\n    ssl_certificate {d}/cert.pem;\n\
             ssl_certificate_key {d}/key.pem;\n\
             location = /return200 {{ return 200 \"ok\\n\"; }}\n  }}\n}}\n"
        );
        std::fs::write(dir.join("nginx.conf"), conf).map_err(|e| format!("{e}"))?;
        let child = Command::new("nginx")
            .arg("-e")
            .arg(dir.join("error.log"))
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .arg("-p")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("starting nginx: {e}"))?;
        let nginx = Self { child, addr };
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
    }
}

fn https(dir: &Path, secs: u64) -> Result<(), String> {
    let nginx = Nginx::start(dir)?;
    let url = format!("https://{}/return200", nginx.addr);
    run_wrk(&url, 1, 4, 1)?; // warm-up
    foreign_programs(BENCH, "untraced", 0);
    let before = run_wrk(&url, 1, 4, secs)?;
    // nginx runs already: the tracer's first scan hooks the system's libssl it maps.
    let loaded = Loaded::new(Config::default()).map_err(|e| format!("loading: {e}"))?;
    loaded
        .tracer
        .register_client(BENCH)
        .map_err(|e| e.to_string())?;
    let traced = run_wrk(&url, 1, 4, secs)?;
    thread::sleep(Duration::from_millis(200));
    let delta = loaded
        .tracer
        .get_active_connections(BENCH)
        .map_err(|e| e.to_string())?;
    let seen: u64 = delta
        .usm
        .http
        .iter()
        .filter(|(key, _)| key.server == nginx.addr)
        .map(|(_, stats)| stats.count())
        .sum();
    let left = loaded.unload();
    if left > 0 {
        println!("{BENCH}: warning: {left} programs still loaded 10 s after dropping the tracer");
    }
    let after = run_wrk(&url, 1, 4, secs)?;
    drop(nginx);
    let untraced = (before.requests_per_s + after.requests_per_s) / 2.0;
    let ratio = traced.requests_per_s / untraced;
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
        "{BENCH}/https: wrk -t1 -c4 -d{secs}s https://…/return200: untraced {}, traced {}, \
         untraced {}: ratio {ratio:.3} [target >= {TARGET_RATIO} {verdict}]; the tracer's \
         client saw {seen} HTTPS requests of the {} wrk counted traced",
        phase(&before),
        phase(&traced),
        phase(&after),
        traced.requests
    );
    let errors = before.errors + traced.errors + after.errors;
    if errors > 0 {
        println!("{BENCH}/https: warning: wrk reported {errors} errors or non-2xx responses");
    }
    let fields = vec![
        ("untraced_before_rps", number(before.requests_per_s)),
        ("traced_rps", number(traced.requests_per_s)),
        ("untraced_after_rps", number(after.requests_per_s)),
        ("ratio", number(ratio)),
        ("target_ratio", number(TARGET_RATIO)),
        ("traced_p50_us", number(traced.p50_us)),
        ("traced_p99_us", number(traced.p99_us)),
        ("requests_seen", number(seen as f64)),
        ("requests_wrk", number(traced.requests as f64)),
    ];
    if let Err(err) = upsert_fields_from_env(&format!("{BENCH}/https"), fields) {
        eprintln!("{BENCH}/https: cannot write the bench summary: {err}");
    }
    Ok(())
}

fn tls(_c: &mut Criterion) {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!("{BENCH}: Linux {}, euid {}", release.trim(), euid());
    if euid() != 0 {
        println!("{BENCH}: SKIP: not root: loading eBPF programs needs root; no rows written");
        return;
    }
    if !bench_mode() {
        println!("{BENCH}: not in --bench mode: nothing run");
        return;
    }
    let dir = std::env::temp_dir().join(format!("tracer-bench-tls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(e) = std::fs::create_dir_all(&dir) {
        println!("{BENCH}: failed: {e}");
        return;
    }
    if let Err(err) = call_cost(&dir) {
        println!("{BENCH}/call: failed: {err}; no rows written");
    }
    let secs = std::env::var("TLS_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&s| s > 0)
        .unwrap_or(5);
    let present = |program: &str, arg: &str| {
        Command::new(program)
            .arg(arg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    };
    if !present("nginx", "-v") || !present("wrk", "-v") || !present("openssl", "version") {
        println!("{BENCH}/https: SKIP: nginx, wrk or openssl missing (`cargo xtask setup`)");
    } else if let Err(err) = https(&dir, secs) {
        println!("{BENCH}/https: failed: {err}; no rows written");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, tls);
criterion_main!(benches);
