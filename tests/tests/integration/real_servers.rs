//! Real servers and clients nobody here wrote, as a user runs them, against the public API:
//! nginx (sendfile on, keep-alive) and curl, while a client polls. Ground truth is nginx's own
//! access log (`$bytes_sent`, `$request_length` per request, by client port) and its pid.
//!
//! These run in the host run (`TRACER_TEST_HOST=1`, set by `cargo xtask test`), where `cargo
//! xtask setup` installs nginx and curl; there a missing server fails the test. Inside the VMs,
//! whose initramfs holds only the test binary and busybox, the same kernel paths are driven by
//! the project's own clients and servers (`identity`, `tcp_bytes`, `io_paths`).

use std::{
    collections::HashMap,
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use tracer::{BackendChoice, Config, Tracer, model::Protocol};
use tracer_integration::{
    netns::{current_netns_inode, in_fresh_netns, tcp_listening},
    policy::loaded_or_skip,
    tracer::backend_under_test,
};

fn on_the_host() -> bool {
    let host = std::env::var("TRACER_TEST_HOST").is_ok_and(|v| v == "1");
    if !host {
        eprintln!("SKIP: real servers run in the host run (TRACER_TEST_HOST=1)");
    }
    host
}

/// A private nginx in the calling thread's network namespace, killed on drop.
struct Nginx {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl Nginx {
    fn start(body_sizes: &[(&str, usize)]) -> Self {
        let dir = std::env::temp_dir()
            .join(format!(
                "tracer-nginx-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ))
            .to_string_lossy()
            .replace(['(', ')'], "");
        let dir = PathBuf::from(dir);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("www")).expect("nginx dir");
        for (name, size) in body_sizes {
            std::fs::write(dir.join("www").join(name), vec![b'x'; *size]).expect("body");
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let d = dir.display();
        let conf = format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\n\
             error_log {d}/error.log;\nevents {{ worker_connections 1024; }}\n\
             http {{\n  log_format t '$remote_port $bytes_sent $request_length';\n\
             access_log {d}/access.log t;\n  sendfile on;\n  keepalive_timeout 30;\n\
             client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n\
             scgi_temp_path {d}/scgi;\n  server {{ listen 127.0.0.1:{port}; root {d}/www; }}\n}}\n"
        );
        std::fs::write(dir.join("nginx.conf"), conf).expect("conf");
        let child = Command::new("nginx")
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .arg("-p")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("nginx is installed by cargo xtask setup");
        let deadline = Instant::now() + Duration::from_secs(10);
        // Wait for the listener without connecting to it (a probe connection would be one more
        // connection for the tracer to report): this thread's /proc/net/tcp lists it.
        while !tcp_listening(port) {
            assert!(Instant::now() < deadline, "nginx never listened on {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { child, dir, port }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops nginx and returns (bytes sent, request bytes read) per client port, summed over
    /// the requests of each connection.
    fn stop(mut self) -> HashMap<u16, (u64, u64)> {
        // SAFETY: plain kill(2) of our own child; SIGQUIT is nginx's graceful shutdown.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGQUIT) };
        let _ = self.child.wait();
        read_access_log(&self.dir.join("access.log"))
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn read_access_log(path: &Path) -> HashMap<u16, (u64, u64)> {
    let log = std::fs::read_to_string(path).expect("access log");
    let mut by_port: HashMap<u16, (u64, u64)> = HashMap::new();
    for line in log.lines() {
        let fields: Vec<u64> = line
            .split_whitespace()
            .map(|f| f.parse().expect("numeric log field"))
            .collect();
        let [port, sent, read] = fields[..] else {
            panic!("access log line {line:?}");
        };
        let entry = by_port.entry(port as u16).or_default();
        entry.0 += sent;
        entry.1 += read;
    }
    by_port
}

#[test]
fn nginx_and_curl_every_connection_once_with_the_bytes_of_nginx_access_log() {
    if !on_the_host() {
        return;
    }
    in_fresh_netns(|| {
        let Some(tracer) = loaded_or_skip(Tracer::new(Config {
            backend: BackendChoice::Force(backend_under_test()),
            ..Config::default()
        })) else {
            return;
        };
        let tracer = Arc::new(tracer);
        let netns = current_netns_inode().expect("netns") as u32;
        tracer.register_client("poller").expect("register");
        let nginx = Nginx::start(&[("big", 300_000), ("small", 700)]);
        let server: SocketAddr = ([127, 0, 0, 1], nginx.port).into();
        let stop = Arc::new(AtomicBool::new(false));
        let poller = {
            let (tracer, stop) = (Arc::clone(&tracer), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut all = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    all.extend(tracer.get_active_connections("poller").expect("poll").conns);
                    std::thread::sleep(Duration::from_millis(5));
                }
                std::thread::sleep(Duration::from_millis(500));
                all.extend(tracer.get_active_connections("poller").expect("poll").conns);
                all
            })
        };
        const RUNS: u16 = 40;
        let mut curl_pids = HashMap::new();
        for i in 0..RUNS {
            // Explicit, distinct client ports: the kernel's choice could repeat a tuple.
            let local_port = 31_000 + i;
            let mut curl = Command::new("curl");
            curl.args(["-s", "-o", "/dev/null", "--local-port"])
                .arg(local_port.to_string());
            // Odd runs fetch two files over one keep-alive connection.
            curl.arg(format!("http://{server}/big"));
            if i % 2 == 1 {
                curl.arg(format!("http://{server}/small"));
            }
            let child = curl
                .spawn()
                .expect("curl is installed by cargo xtask setup");
            curl_pids.insert(local_port, child.id());
            let out = child.wait_with_output().expect("curl");
            assert!(out.status.success(), "curl {i}: {:?}", out.status);
        }
        std::thread::sleep(Duration::from_millis(300));
        let nginx_pid = nginx.pid();
        let log = nginx.stop();
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, Ordering::Relaxed);
        let reports = poller.join().expect("poller");

        // Per identity (the full tuple, pid included): bytes summed over the calls, ends.
        let mut seen: HashMap<_, (u64, u64, u32)> = HashMap::new();
        for c in reports.iter().filter(|c| c.tuple.netns == netns) {
            assert_eq!(c.tuple.protocol, Protocol::Tcp, "{c:?}");
            if !c.is_closed {
                assert!(
                    c.tuple.pid != 0 && c.tuple.sport != 0 && c.tuple.dport != 0,
                    "open connection shown with an incomplete identity: {:?}",
                    c.tuple
                );
            }
            let e = seen.entry(c.tuple).or_default();
            e.0 += c.last.sent_bytes;
            e.1 += c.last.recv_bytes;
            e.2 += u32::from(c.is_closed) * c.last.tcp_closed.max(1);
        }
        assert_eq!(
            log.len(),
            usize::from(RUNS),
            "one connection per curl: {log:?}"
        );
        for (port, (nginx_sent, nginx_read)) in &log {
            let client: SocketAddr = ([127, 0, 0, 1], *port).into();
            let server_side: Vec<_> = seen
                .iter()
                .filter(|(t, _)| t.sport == server.port() && t.dport == *port)
                .collect();
            assert_eq!(
                server_side.len(),
                1,
                "nginx side of {client}: {server_side:?}"
            );
            let (t, (sent, recv, ends)) = server_side[0];
            assert_eq!(t.pid, nginx_pid, "nginx side of {client} owner");
            assert_eq!(
                (*sent, *recv),
                (*nginx_sent, *nginx_read),
                "nginx side of {client}"
            );
            assert_eq!(*ends, 1, "nginx side of {client} ends");
            let client_side: Vec<_> = seen
                .iter()
                .filter(|(t, _)| t.sport == *port && t.dport == server.port())
                .collect();
            assert_eq!(
                client_side.len(),
                1,
                "curl side of {client}: {client_side:?}"
            );
            let (t, (sent, recv, ends)) = client_side[0];
            assert_eq!(t.pid, curl_pids[port], "curl side of {client} owner");
            assert_eq!(
                (*sent, *recv),
                (*nginx_read, *nginx_sent),
                "curl side of {client}"
            );
            assert_eq!(*ends, 1, "curl side of {client} ends");
        }
        // The listener moves no bytes and is never a connection; nothing else was seen.
        assert_eq!(seen.len(), 2 * usize::from(RUNS), "{:?}", seen.keys());
    });
}
