//! Container ids through the public API: processes placed in cgroups named as container
//! runtimes name them get their container as `containers.source`, and intra-host connections
//! get their peer's as `containers.dest` (LocalResolver), between two "containers" in network
//! namespaces of their own (joined by veth pairs through the test's namespace), and between a
//! container and the host (the test process, in no container), over veth and over loopback,
//! TCP and UDP, open and closed.
//!
//! The "containers" are this test binary re-run in child mode (`containers::child`), moved
//! into its cgroup before it opens any socket, driven by lines on its stdin. The cgroups are
//! created after the tracer started (so resolving them takes a walk on a miss), under one
//! top directory of the test's own, and removed at the end, on failure too.

use std::{
    collections::HashMap,
    io::{BufRead, BufReader, Read, Write},
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::unix::{fs::MetadataExt, process::CommandExt},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use tracer::{
    BackendChoice, Config, Tracer,
    kernel::capabilities::{Cgroup2Root, find_cgroup2_root},
    model::{ConnectionStats, Protocol},
};
use tracer_integration::{
    cmd::run,
    netns::{current_netns_inode, in_fresh_netns},
    policy::{first_backend_of_kernel, loaded_or_skip},
    tracer::backend_under_test,
};

const CHILD: &str = "TRACER_CONTAINERS_CHILD";
const REPLY: &str = "CTR-REPLY ";
const CLIENT: &str = "containers-test";
/// Bytes each client sends and gets back.
const MESSAGE: usize = 100;

/// Docker, systemd cgroup driver.
const DOCKER_ID: &str = "4f1c6e2d9a8b7c3e5f0a1b2c3d4e5f60718293a4b5c6d7e8f9012345678abcde";
/// containerd under Kubernetes (burstable pod), systemd driver.
const CRI_ID: &str = "9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d9c8b7a6f5e4d3c2b1a0f9e8d";
/// Podman, with the split `container` sub-cgroup.
const PODMAN_ID: &str = "0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9";
/// ECS.
const ECS_ID: &str = "55091c13b8ea4d9a9d2d6ac4e3ef5aa3-1362397412";

// -------------------------------------------------------------------------------------------
// Echo servers and clients, shared by the children and the host side.

/// An echo server's stop flag: set, its threads end and drop their sockets.
type Stop = Arc<AtomicBool>;

fn serve_tcp(listener: TcpListener, stop: Stop) {
    listener.set_nonblocking(true).expect("nonblocking");
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let mut stream = match listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
                Err(_) => return,
            };
            stream.set_nonblocking(false).expect("blocking");
            // Echoes until the client closes.
            std::thread::spawn(move || {
                let mut buf = [0u8; MESSAGE];
                while stream.read_exact(&mut buf).is_ok() && stream.write_all(&buf).is_ok() {}
            });
        }
    });
}

fn serve_udp(socket: UdpSocket, stop: Stop) {
    socket
        .set_read_timeout(Some(Duration::from_millis(20)))
        .expect("timeout");
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while !stop.load(Ordering::Relaxed) {
            match socket.recv_from(&mut buf) {
                Ok((n, from)) => {
                    let _ = socket.send_to(&buf[..n], from);
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return,
            }
        }
    });
}

/// One message each way (idle connections are left out of a call's result: the test keeps
/// them moving while it polls).
fn tcp_ping(stream: &mut TcpStream) {
    stream.write_all(&[7u8; MESSAGE]).expect("tcp write");
    let mut buf = [0u8; MESSAGE];
    stream.read_exact(&mut buf).expect("tcp echo");
}

fn udp_ping(socket: &UdpSocket) {
    socket.send(&[7u8; MESSAGE]).expect("udp send");
    let mut buf = [0u8; MESSAGE];
    assert_eq!(socket.recv(&mut buf).expect("udp echo"), MESSAGE);
}

fn tcp_client(to: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect_timeout(&to, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect {to}: {e}"));
    tcp_ping(&mut stream);
    stream
}

fn udp_client(to: SocketAddr) -> UdpSocket {
    let socket = UdpSocket::bind("0.0.0.0:0").expect("udp bind");
    socket.connect(to).expect("udp connect");
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    udp_ping(&socket);
    socket
}

/// Child mode: one "container". Reads commands on stdin, answers each with one
/// `CTR-REPLY ...` line:
/// - `net ADDR/PREFIX GATEWAY`: configures `eth0` (the veth end the parent moved here), `lo`
///   and the default route;
/// - `serve tcp|udp IP PORT`: an echo server;
/// - `connect tcp|udp IP PORT`: a client that exchanges one message and stays open; answers
///   its local address;
/// - `ping`: one more message each way on every client;
/// - `close`: closes every client;
/// - `exit`: exits (closing every socket).
#[test]
#[ignore = "child mode of the containers test"]
fn child() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    let mut tcp = Vec::new();
    let mut udp = Vec::new();
    for line in std::io::stdin().lock().lines() {
        let line = line.expect("stdin");
        let words: Vec<&str> = line.split_whitespace().collect();
        let addr = |ip: &str, port: &str| -> SocketAddr {
            SocketAddr::new(ip.parse().expect("ip"), port.parse().expect("port"))
        };
        let reply = match words[..] {
            ["net", cidr, gateway] => {
                run("ip", &["addr", "add", cidr, "dev", "eth0"]);
                run("ip", &["link", "set", "eth0", "up"]);
                run("ip", &["link", "set", "lo", "up"]);
                run("ip", &["route", "add", "default", "via", gateway]);
                "ok".to_owned()
            }
            ["serve", "tcp", ip, port] => {
                serve_tcp(
                    TcpListener::bind(addr(ip, port)).expect("listen"),
                    Stop::default(),
                );
                "ok".to_owned()
            }
            ["serve", "udp", ip, port] => {
                serve_udp(
                    UdpSocket::bind(addr(ip, port)).expect("udp bind"),
                    Stop::default(),
                );
                "ok".to_owned()
            }
            ["connect", "tcp", ip, port] => {
                let stream = tcp_client(addr(ip, port));
                let local = stream.local_addr().expect("local");
                tcp.push(stream);
                local.to_string()
            }
            ["connect", "udp", ip, port] => {
                let socket = udp_client(addr(ip, port));
                let local = socket.local_addr().expect("local");
                udp.push(socket);
                local.to_string()
            }
            ["ping"] => {
                tcp.iter_mut().for_each(tcp_ping);
                udp.iter().for_each(udp_ping);
                "ok".to_owned()
            }
            ["close"] => {
                tcp.clear();
                udp.clear();
                "ok".to_owned()
            }
            ["exit"] => {
                println!("{REPLY}ok");
                std::process::exit(0);
            }
            _ => panic!("unknown command {line:?}"),
        };
        println!("{REPLY}{reply}");
    }
}

// -------------------------------------------------------------------------------------------
// The parent's side.

/// The test's cgroups, removed (deepest first) on drop.
struct Cgroups {
    top: PathBuf,
    created: Vec<PathBuf>,
}

impl Cgroups {
    fn new(root: &Path) -> Self {
        let top = root.join(format!("nettracer-test-{}", std::process::id()));
        let mut cgroups = Self {
            top: top.clone(),
            created: Vec::new(),
        };
        std::fs::create_dir(&top).unwrap_or_else(|e| panic!("mkdir {}: {e}", top.display()));
        cgroups.created.push(top);
        cgroups
    }

    /// Creates `rel` (and its parents) below the test's top directory.
    fn create(&mut self, rel: &str) -> PathBuf {
        let mut dir = self.top.clone();
        for part in rel.split('/') {
            dir.push(part);
            if !dir.exists() {
                std::fs::create_dir(&dir)
                    .unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
                self.created.push(dir.clone());
            }
        }
        dir
    }
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        for dir in self.created.iter().rev() {
            // A cgroup whose last process just exited may be busy for a moment.
            let mut tries = 0;
            while let Err(e) = std::fs::remove_dir(dir) {
                tries += 1;
                if tries > 50 {
                    eprintln!("rmdir {}: {e}", dir.display());
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// One running "container".
struct Container {
    name: &'static str,
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    netns: u32,
}

impl Container {
    /// Starts a child in its own network namespace (`own_netns`) or the test's, and moves it
    /// into `cgroup` before it does anything.
    fn start(name: &'static str, cgroup: &Path, own_netns: bool) -> Self {
        let exe = std::env::current_exe().expect("current_exe");
        let mut command = Command::new(exe);
        command
            .args([
                "--exact",
                "containers::child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD, "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        if own_netns {
            // SAFETY: unshare is a raw syscall, fine between fork and exec.
            unsafe {
                command.pre_exec(|| {
                    if libc::unshare(libc::CLONE_NEWNET) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
        let mut child = command.spawn().expect("spawn child");
        let pid = child.id();
        std::fs::write(cgroup.join("cgroup.procs"), pid.to_string())
            .unwrap_or_else(|e| panic!("moving {pid} into {}: {e}", cgroup.display()));
        let netns = std::fs::metadata(format!("/proc/{pid}/ns/net"))
            .expect("child netns")
            .ino() as u32;
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        Self {
            name,
            child,
            stdin,
            stdout,
            netns,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends one command and returns the reply.
    fn cmd(&mut self, line: &str) -> String {
        writeln!(self.stdin, "{line}").expect("write to child");
        self.stdin.flush().expect("flush");
        let mut text = String::new();
        loop {
            text.clear();
            let n = self.stdout.read_line(&mut text).expect("read child");
            assert!(n > 0, "{}: exited during {line:?}", self.name);
            if let Some(at) = text.find(REPLY) {
                return text[at + REPLY.len()..].trim().to_owned();
            }
        }
    }

    fn connect(&mut self, protocol: &str, to: SocketAddr) -> SocketAddr {
        let reply = self.cmd(&format!("connect {protocol} {} {}", to.ip(), to.port()));
        reply
            .parse()
            .unwrap_or_else(|_| panic!("{}: {reply:?}", self.name))
    }

    fn exit(&mut self) {
        assert_eq!(self.cmd("exit"), "ok");
        let status = self.child.wait().expect("wait");
        assert!(status.success(), "{}: {status}", self.name);
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Joins a container's namespace to the test's: a veth pair, `host_cidr` on the test's end.
fn veth(container: &mut Container, host_if: &str, host_cidr: &str, cidr: &str) {
    let gateway = host_cidr.split('/').next().expect("cidr");
    let pid = container.pid().to_string();
    run(
        "ip",
        &[
            "link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns", &pid,
        ],
    );
    run("ip", &["addr", "add", host_cidr, "dev", host_if]);
    run("ip", &["link", "set", host_if, "up"]);
    assert_eq!(container.cmd(&format!("net {cidr} {gateway}")), "ok");
}

/// One connection the test expects, with its containers.
#[derive(Clone, Debug)]
struct Expect {
    what: String,
    protocol: Protocol,
    local: SocketAddr,
    remote: SocketAddr,
    netns: u32,
    source: Option<&'static str>,
    dest: Option<&'static str>,
}

type Seen = (Option<String>, Option<String>);

fn containers_of(conn: &ConnectionStats) -> Seen {
    (
        conn.containers.source.as_deref().map(str::to_owned),
        conn.containers.dest.as_deref().map(str::to_owned),
    )
}

fn find<'a>(conns: &'a [ConnectionStats], e: &Expect, closed: bool) -> Option<&'a ConnectionStats> {
    conns.iter().find(|c| {
        let t = &c.tuple;
        c.is_closed == closed
            && t.protocol == e.protocol
            && t.netns == e.netns
            && SocketAddr::new(t.src, t.sport) == e.local
            && SocketAddr::new(t.dst, t.dport) == e.remote
    })
}

fn want(e: &Expect) -> Seen {
    (e.source.map(str::to_owned), e.dest.map(str::to_owned))
}

/// Polls while the connections are open until one call shows every expectation exactly.
fn assert_open(tracer: &Tracer, expected: &[Expect], mut ping: impl FnMut()) {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut last: HashMap<String, Option<Seen>> = HashMap::new();
    loop {
        ping();
        let conns = tracer.get_active_connections(CLIENT).expect("get").conns;
        let mut all = true;
        for e in expected {
            let seen = find(&conns, e, false).map(containers_of);
            all &= seen.as_ref() == Some(&want(e));
            last.insert(e.what.clone(), seen);
        }
        if all {
            return;
        }
        if Instant::now() > deadline {
            let netns: std::collections::HashSet<u32> = expected.iter().map(|e| e.netns).collect();
            for conn in conns.iter().filter(|c| netns.contains(&c.tuple.netns)) {
                eprintln!(
                    "seen: {:?} {}:{} -> {}:{} netns {} closed {} {:?} cgroup {}",
                    conn.tuple.protocol,
                    conn.tuple.src,
                    conn.tuple.sport,
                    conn.tuple.dst,
                    conn.tuple.dport,
                    conn.tuple.netns,
                    conn.is_closed,
                    containers_of(conn),
                    conn.cgroup_id
                );
            }
            for e in expected {
                eprintln!(
                    "{}: {} -> {} netns {}: want {:?}, last seen {:?}",
                    e.what,
                    e.local,
                    e.remote,
                    e.netns,
                    want(e),
                    last[&e.what]
                );
            }
            panic!("open connections never showed their containers (above)");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Collects every expected connection's closed record (each is reported once) and checks its
/// containers.
fn assert_closed(tracer: &Tracer, expected: &[Expect]) {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut got: HashMap<String, Seen> = HashMap::new();
    while got.len() < expected.len() {
        let conns = tracer.get_active_connections(CLIENT).expect("get").conns;
        for e in expected {
            if let Some(conn) = find(&conns, e, true) {
                assert!(
                    got.insert(e.what.clone(), containers_of(conn)).is_none(),
                    "{}: closed twice",
                    e.what
                );
            }
        }
        if Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut bad = Vec::new();
    for e in expected {
        let seen = got.get(&e.what);
        if seen != Some(&want(e)) {
            bad.push(format!("{}: want {:?}, got {seen:?}", e.what, want(e)));
        }
    }
    assert!(bad.is_empty(), "closed connections:\n{}", bad.join("\n"));
}

/// Both sides of one flow: the client's (outgoing) and the server's.
#[allow(clippy::too_many_arguments)]
fn pair(
    what: &str,
    protocol: Protocol,
    client: SocketAddr,
    client_netns: u32,
    client_ctr: Option<&'static str>,
    server: SocketAddr,
    server_netns: u32,
    server_ctr: Option<&'static str>,
) -> [Expect; 2] {
    [
        Expect {
            what: format!("{what}: client side"),
            protocol,
            local: client,
            remote: server,
            netns: client_netns,
            source: client_ctr,
            dest: server_ctr,
        },
        Expect {
            what: format!("{what}: server side"),
            protocol,
            local: server,
            remote: client,
            netns: server_netns,
            source: server_ctr,
            dest: client_ctr,
        },
    ]
}

fn v4(a: u8, b: u8, c: u8, d: u8, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(a, b, c, d)), port)
}

#[test]
fn source_and_destination_containers_between_containers_and_the_host() {
    if !first_backend_of_kernel("container ids") {
        return;
    }
    in_fresh_netns(|| {
        let root = match find_cgroup2_root() {
            Some(Cgroup2Root::Mounted(path) | Cgroup2Root::ViaPid1(path)) => path,
            other => panic!("no cgroup v2 mount to create test cgroups in: {other:?}"),
        };
        let config = Config {
            backend: BackendChoice::Force(backend_under_test()),
            ..Config::default()
        };
        let Some(tracer) = loaded_or_skip(Tracer::new(config)) else {
            return;
        };
        tracer.register_client(CLIENT).expect("register");
        let host_netns = current_netns_inode().expect("netns") as u32;
        // The test's namespace routes between the two containers' veths.
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").expect("ip_forward");

        // Created after the tracer started: found by a walk on a miss.
        let mut cgroups = Cgroups::new(&root);
        let docker = cgroups.create(&format!("system.slice/docker-{DOCKER_ID}.scope"));
        let cri = cgroups.create(&format!(
            "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0c9f3b5e_1a2b_4c3d_8e9f_0123456789ab.slice/cri-containerd-{CRI_ID}.scope"
        ));
        let ecs = cgroups.create(&format!("ecs/55091c13b8ea4d9a9d2d6ac4e3ef5aa3/{ECS_ID}"));
        let podman = cgroups.create(&format!("machine.slice/libpod-{PODMAN_ID}.scope/container"));
        // Podman's monitor (conmon) of the same container: not in the container.
        let conmon = cgroups.create(&format!("machine.slice/libpod-conmon-{PODMAN_ID}.scope"));

        // S: a server container (Docker) with its own namespace, 192.0.2.2.
        let mut s = Container::start("docker", &docker, true);
        veth(&mut s, "vs0", "192.0.2.1/24", "192.0.2.2/24");
        // C: a client container (Kubernetes, containerd), 198.51.100.2.
        let mut c = Container::start("cri", &cri, true);
        veth(&mut c, "vc0", "198.51.100.1/24", "198.51.100.2/24");
        // E: a container on the host's network (ECS), talking to the host over loopback.
        let mut e = Container::start("ecs", &ecs, false);
        assert_eq!(e.netns, host_netns);
        // P and M: Podman's container and its monitor, also on the host's network.
        let mut p = Container::start("podman", &podman, false);
        let mut m = Container::start("conmon", &conmon, false);

        let s_tcp = v4(192, 0, 2, 2, 7001);
        let s_udp = v4(192, 0, 2, 2, 7002);
        let host_tcp = v4(127, 0, 0, 1, 7003);
        let e_udp = v4(127, 0, 0, 1, 7004);
        let host_udp = v4(198, 51, 100, 1, 7005);
        assert_eq!(
            s.cmd(&format!("serve tcp {} {}", s_tcp.ip(), s_tcp.port())),
            "ok"
        );
        assert_eq!(
            s.cmd(&format!("serve udp {} {}", s_udp.ip(), s_udp.port())),
            "ok"
        );
        assert_eq!(
            e.cmd(&format!("serve udp {} {}", e_udp.ip(), e_udp.port())),
            "ok"
        );
        let host_servers = Stop::default();
        serve_tcp(
            TcpListener::bind(host_tcp).expect("host listen"),
            Arc::clone(&host_servers),
        );
        serve_udp(
            UdpSocket::bind(host_udp).expect("host udp"),
            Arc::clone(&host_servers),
        );

        let (dk, cr, ec, pm) = (Some(DOCKER_ID), Some(CRI_ID), Some(ECS_ID), Some(PODMAN_ID));
        let (sn, cn, hn) = (s.netns, c.netns, host_netns);
        let mut expected = Vec::new();
        // Container to container, through the test's namespace.
        let from = c.connect("tcp", s_tcp);
        expected.extend(pair(
            "cri->docker tcp",
            Protocol::Tcp,
            from,
            cn,
            cr,
            s_tcp,
            sn,
            dk,
        ));
        let from = c.connect("udp", s_udp);
        expected.extend(pair(
            "cri->docker udp",
            Protocol::Udp,
            from,
            cn,
            cr,
            s_udp,
            sn,
            dk,
        ));
        // The host to a container and a container to the host, over veth.
        let host_stream = tcp_client(s_tcp);
        let from = host_stream.local_addr().expect("local");
        expected.extend(pair(
            "host->docker tcp",
            Protocol::Tcp,
            from,
            hn,
            None,
            s_tcp,
            sn,
            dk,
        ));
        let from = c.connect("udp", host_udp);
        expected.extend(pair(
            "cri->host udp",
            Protocol::Udp,
            from,
            cn,
            cr,
            host_udp,
            hn,
            None,
        ));
        // The same over loopback, with a container in the host's namespace.
        let from = e.connect("tcp", host_tcp);
        expected.extend(pair(
            "ecs->host tcp",
            Protocol::Tcp,
            from,
            hn,
            ec,
            host_tcp,
            hn,
            None,
        ));
        let host_socket = udp_client(e_udp);
        let from = host_socket.local_addr().expect("local");
        expected.extend(pair(
            "host->ecs udp",
            Protocol::Udp,
            from,
            hn,
            None,
            e_udp,
            hn,
            ec,
        ));
        let from = p.connect("tcp", host_tcp);
        expected.extend(pair(
            "podman->host tcp",
            Protocol::Tcp,
            from,
            hn,
            pm,
            host_tcp,
            hn,
            None,
        ));
        let from = m.connect("udp", e_udp);
        expected.extend(pair(
            "conmon->ecs udp",
            Protocol::Udp,
            from,
            hn,
            None,
            e_udp,
            hn,
            ec,
        ));

        let (mut host_stream, host_socket) = (host_stream, host_socket);
        assert_open(&tracer, &expected, || {
            for ctr in [&mut c, &mut e, &mut p, &mut m] {
                assert_eq!(ctr.cmd("ping"), "ok");
            }
            tcp_ping(&mut host_stream);
            udp_ping(&host_socket);
        });

        // Close everything (clients first, then the servers' processes), then read the closes.
        for ctr in [&mut c, &mut e, &mut p, &mut m] {
            assert_eq!(ctr.cmd("close"), "ok");
        }
        drop(host_stream);
        drop(host_socket);
        std::thread::sleep(Duration::from_millis(200));
        for ctr in [&mut s, &mut c, &mut e, &mut p, &mut m] {
            ctr.exit();
        }
        host_servers.store(true, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(200));
        assert_closed(&tracer, &expected);
    });
}
