//! The route ("Via") of outgoing connections through the public API, against `ip route get` as
//! the ground truth, in a topology of the test's own namespaces (documentation addresses only):
//!
//! ```text
//!   C (container)                H (the tracer's netns)                R (router)          S (server)
//!   ch0 198.51.100.146 ── hc0 198.51.100.145
//!                                hr0 192.0.2.209 ─────────── rh0 192.0.2.210
//!                                hr1 192.0.2.225 ─────────── rh1 192.0.2.226
//!                                                            rs0 203.0.113.177 ── sr0 203.0.113.180
//! ```
//!
//! H routes 203.0.113.176/28 via 192.0.2.210 (hr0), then via 192.0.2.226 (hr1); C's default route
//! is H, which forwards. IPv6 the same way: the links are 2001:db8:10::/64 (hr0), 2001:db8:11::/64
//! (hr1), 2001:db8:12::/64 (hc0), 2001:db8:13::/64 (rs0), ::1 on the H or R side and ::2 on the
//! other; S is 2001:db8:13::2, routed from H via 2001:db8:10::2. Connections from H and from C to S, open and closed, carry the gateway
//! and interface `ip route get` names in H (for C: `from SRC iif hc0`), and the new one once
//! the cache's TTL has passed after the route changed. The tracer sees the whole host: its
//! filters keep only connections to S's listening address and port, so the route counters move
//! only for this test's connections and are checked exactly.

use std::{
    io::{Read, Write},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use tracer::{
    BackendChoice, Config, Tracer,
    enrich::routes::RoutesConfig,
    filter::Exclusion,
    model::{ConnectionStats, Via},
};
use tracer_integration::{
    cmd::ip,
    environment::NamedNetns,
    netns::{current_netns_inode, in_fresh_netns},
    policy::{first_backend_of_kernel, loaded_or_skip},
    tracer::backend_under_test,
};

const SERVER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 180);
const SERVER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x13, 0, 0, 0, 0, 2);
const GATEWAY6: &str = "2001:db8:10::2";
const GATEWAY_A: &str = "192.0.2.210";
const GATEWAY_B: &str = "192.0.2.226";
const TTL: Duration = Duration::from_secs(5);

/// Runs `f` on a thread inside the named namespace.
fn in_netns<T: Send + 'static>(ns: &NamedNetns, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{}", ns.name);
    thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        // SAFETY: setns on a namespace descriptor we own; it only moves this thread.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// Forwarding on, reverse-path filtering off (the route change makes paths asymmetric), no IPv6
/// duplicate address detection (addresses usable at once), in the calling thread's namespace;
/// before any interface exists, so they inherit `default`.
fn forwarding_without_rp_filter() {
    for (path, value) in [
        ("/proc/sys/net/ipv4/ip_forward", "1"),
        ("/proc/sys/net/ipv4/conf/all/rp_filter", "0"),
        ("/proc/sys/net/ipv4/conf/default/rp_filter", "0"),
        ("/proc/sys/net/ipv6/conf/all/forwarding", "1"),
        ("/proc/sys/net/ipv6/conf/default/accept_dad", "0"),
    ] {
        std::fs::write(path, value).unwrap_or_else(|e| panic!("write {path}: {e}"));
    }
}

/// The route `ip route get` prints in the calling thread's namespace, as a [`Via`].
fn ground_truth(args: &[&str]) -> Via {
    let mut all = vec!["route", "get"];
    all.extend_from_slice(args);
    let out = ip(&all);
    let words: Vec<&str> = out.split_whitespace().collect();
    let after = |key: &str| {
        words
            .windows(2)
            .find(|w| w[0] == key)
            .map(|w| w[1].to_owned())
    };
    let dev = after("dev").unwrap_or_else(|| panic!("no dev in {out:?}"));
    let name = std::ffi::CString::new(dev.clone()).expect("name");
    // SAFETY: a NUL-terminated name; the lookup opens a socket in this thread's namespace.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    assert_ne!(index, 0, "if_nametoindex({dev})");
    Via {
        gateway: after("via").map(|g| g.parse().expect("gateway address")),
        interface_index: index,
        interface_name: Some(Arc::from(dev.as_str())),
    }
}

/// The topology of the module docs, built from H (the calling thread's namespace).
struct Topology {
    r: NamedNetns,
    s: NamedNetns,
    c: NamedNetns,
}

impl Topology {
    fn build() -> Self {
        let topology = Self {
            r: NamedNetns::add(),
            s: NamedNetns::add(),
            c: NamedNetns::add(),
        };
        forwarding_without_rp_filter();
        for ns in [&topology.r, &topology.s, &topology.c] {
            in_netns(ns, forwarding_without_rp_filter);
        }
        let (r, s, c) = (
            topology.r.name.as_str(),
            topology.s.name.as_str(),
            topology.c.name.as_str(),
        );
        // `ip [-n NS] WORDS...`, from H when `ns` is empty.
        let run = |ns: &str, command: &str| {
            let mut args: Vec<&str> = if ns.is_empty() {
                vec![]
            } else {
                vec!["-n", ns]
            };
            args.extend(command.split_whitespace());
            ip(&args);
        };
        run(
            "",
            &format!("link add hr0 type veth peer name rh0 netns {r}"),
        );
        run(
            "",
            &format!("link add hr1 type veth peer name rh1 netns {r}"),
        );
        run(
            "",
            &format!("link add hc0 type veth peer name ch0 netns {c}"),
        );
        run(
            r,
            &format!("link add rs0 type veth peer name sr0 netns {s}"),
        );
        for (ns, dev, v4, v6) in [
            ("", "hr0", "192.0.2.209/28", "2001:db8:10::1/64"),
            ("", "hr1", "192.0.2.225/28", "2001:db8:11::1/64"),
            ("", "hc0", "198.51.100.145/28", "2001:db8:12::1/64"),
            (r, "rh0", "192.0.2.210/28", "2001:db8:10::2/64"),
            (r, "rh1", "192.0.2.226/28", "2001:db8:11::2/64"),
            (r, "rs0", "203.0.113.177/28", "2001:db8:13::1/64"),
            (s, "sr0", "203.0.113.180/28", "2001:db8:13::2/64"),
            (c, "ch0", "198.51.100.146/28", "2001:db8:12::2/64"),
        ] {
            run(ns, &format!("addr add {v4} dev {dev}"));
            run(ns, &format!("addr add {v6} dev {dev} nodad"));
            run(ns, &format!("link set {dev} up"));
        }
        for ns in [r, s, c] {
            run(ns, "link set lo up");
        }
        run(r, "route add 198.51.100.144/28 via 192.0.2.209");
        run(s, "route add default via 203.0.113.177");
        run(c, "route add default via 198.51.100.145");
        run(
            "",
            &format!("route add 203.0.113.176/28 via {GATEWAY_A} dev hr0"),
        );
        run(r, "-6 route add 2001:db8:12::/64 via 2001:db8:10::1");
        run(s, "-6 route add ::/0 via 2001:db8:13::1");
        run(c, "-6 route add ::/0 via 2001:db8:12::1");
        run(
            "",
            &format!("-6 route add 2001:db8:13::/64 via {GATEWAY6} dev hr0"),
        );
        topology
    }
}

/// A TCP server in S that accepts and drains every connection until stopped.
struct Server {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Server {
    fn start(s: &NamedNetns, address: IpAddr) -> Self {
        let listener = in_netns(s, move || {
            let listener = TcpListener::bind((address, 0)).expect("bind in S");
            listener.set_nonblocking(true).expect("nonblocking");
            listener
        });
        let port = listener.local_addr().expect("addr").port();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = thread::spawn(move || {
            let mut readers = Vec::new();
            while !stopped.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut conn, _)) => {
                        conn.set_nonblocking(false).expect("blocking");
                        readers.push(thread::spawn(move || {
                            let mut buf = [0u8; 4096];
                            while matches!(conn.read(&mut buf), Ok(n) if n > 0) {}
                        }));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
            drop(listener);
            drop(readers);
        });
        Self {
            port,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Every network of `net`'s family outside `net/prefix`, as CIDRs (with `prefix` 0: the whole
/// family, as two halves).
fn complement(net: IpAddr, prefix: u32) -> Vec<String> {
    let (v4, net) = match net {
        IpAddr::V4(v4) => (true, u128::from(u32::from(v4)) << 96),
        IpAddr::V6(v6) => (false, u128::from(v6)),
    };
    let cidr = |value: u128, len: u32| {
        if v4 {
            format!("{}/{len}", Ipv4Addr::from((value >> 96) as u32))
        } else {
            format!("{}/{len}", Ipv6Addr::from(value))
        }
    };
    if prefix == 0 {
        return vec![cidr(0, 1), cidr(1 << 127, 1)];
    }
    (0..prefix)
        .map(|bit| {
            let len = bit + 1;
            let mask = u128::MAX << (128 - len);
            cidr((net ^ (1 << (127 - bit))) & mask, len)
        })
        .collect()
}

/// The tracer's config: the backend under test, a short route TTL, and filters that keep only
/// connections to the server's address (in `net/prefix`) and port.
fn config(server: SocketAddr, net: IpAddr, prefix: u32) -> Config {
    let port = server.port();
    let mut config = Config {
        backend: BackendChoice::Force(backend_under_test()),
        ..Config::default()
    };
    config.enrich.routes = RoutesConfig {
        ttl: TTL,
        ..RoutesConfig::default()
    };
    // The other family whole (as two halves: an exclusion of prefix 0 matches both families).
    let other_family = match net {
        IpAddr::V4(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    };
    let mut excludes: Vec<Exclusion> = complement(net, prefix)
        .into_iter()
        .chain(complement(other_family, 0))
        .map(|cidr| Exclusion::parse(&cidr, &["*"]).expect("exclusion"))
        .collect();
    let other_ports = [
        format!("0-{}", port - 1),
        format!("{}-65535", port.saturating_add(1)),
    ];
    let other_ports: Vec<&str> = other_ports.iter().map(String::as_str).collect();
    excludes
        .push(Exclusion::parse(&format!("{net}/{prefix}"), &other_ports).expect("ports exclusion"));
    config.filters.dest_excludes = excludes;
    config
}

/// Route counters (hits, misses, expired, failed, negative), totals since start.
fn route_counters(tracer: &Tracer) -> [u64; 5] {
    let counters = tracer.counters().expect("counters");
    let get = |name: &str| {
        counters
            .get(name)
            .unwrap_or_else(|| panic!("no counter {name}"))
    };
    [
        get("route_cache_hits"),
        get("route_cache_misses"),
        get("route_cache_expired"),
        get("route_lookups_failed"),
        get("route_negative_answers"),
    ]
}

fn delta(after: [u64; 5], before: [u64; 5]) -> [u64; 5] {
    let mut out = [0; 5];
    for ((o, a), b) in out.iter_mut().zip(after).zip(before) {
        *o = a - b;
    }
    out
}

/// Connects from the calling thread's namespace and sends one byte.
fn connect(server: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(server).expect("connect to S");
    stream.write_all(b"x").expect("write");
    stream
}

/// One call; the test's connections in it (by local address), each checked against the
/// ground truth for its own source. `c_netns`: C's connections are looked up with `iif hc0`.
fn call_and_check(
    tracer: &Tracer,
    server: SocketAddr,
    h_netns: u32,
    c_netns: u32,
    expect: &[(SocketAddr, bool)],
) -> Vec<Via> {
    let delta = tracer.get_active_connections("c").expect("call");
    let ours: Vec<&ConnectionStats> = delta
        .conns
        .iter()
        .filter(|c| c.tuple.dst == server.ip() && c.tuple.dport == server.port())
        .collect();
    let mut seen: Vec<(SocketAddr, bool)> = ours
        .iter()
        .map(|c| (SocketAddr::new(c.tuple.src, c.tuple.sport), c.is_closed))
        .collect();
    seen.sort();
    let mut want = expect.to_vec();
    want.sort();
    assert_eq!(seen, want, "the test's connections in the call");
    let dst = server.ip().to_string();
    let mut vias = Vec::new();
    for conn in ours {
        assert!(!conn.intra_host, "{:?} is not intra-host", conn.tuple);
        let src = conn.tuple.src.to_string();
        let truth = if conn.tuple.netns == h_netns {
            ground_truth(&[&dst, "from", &src])
        } else {
            assert_eq!(conn.tuple.netns, c_netns, "{:?}", conn.tuple);
            ground_truth(&[&dst, "from", &src, "iif", "hc0"])
        };
        assert_eq!(
            conn.via.as_ref(),
            Some(&truth),
            "{:?} (closed: {})",
            conn.tuple,
            conn.is_closed
        );
        vias.push(truth);
    }
    vias
}

fn local(stream: &TcpStream) -> (SocketAddr, bool) {
    (stream.local_addr().expect("local addr"), false)
}

fn closed(stream: TcpStream) -> (SocketAddr, bool) {
    let addr = stream.local_addr().expect("local addr");
    drop(stream);
    (addr, true)
}

#[test]
fn outgoing_connections_carry_the_route_ip_route_get_names_and_a_changed_route_after_the_ttl() {
    if !first_backend_of_kernel("route lookups") {
        return;
    }
    in_fresh_netns(|| {
        let topology = Topology::build();
        let s = Server::start(&topology.s, IpAddr::V4(SERVER));
        let server = SocketAddr::new(IpAddr::V4(SERVER), s.port);
        let net = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 176));
        let Some(tracer) = loaded_or_skip(Tracer::new(config(server, net, 28))) else {
            return;
        };
        let h_netns = current_netns_inode().expect("netns") as u32;
        let c_netns = in_netns(&topology.c, || current_netns_inode().expect("netns") as u32);
        tracer.register_client("c").expect("register");
        let base = route_counters(&tracer);
        drop(tracer.get_active_connections("c").expect("first call"));
        assert_eq!(
            delta(route_counters(&tracer), base),
            [0; 5],
            "nothing of ours yet"
        );

        // Call 1: open and closed connections from H and from C, on route A. Two keys (one
        // per namespace and source), each asked once: 2 misses, 2 hits.
        let mut h_open = connect(server);
        let h_closed = connect(server);
        let (mut c_open, c_closed) =
            in_netns(&topology.c, move || (connect(server), connect(server)));
        let expect = [
            local(&h_open),
            local(&c_open),
            closed(h_closed),
            closed(c_closed),
        ];
        thread::sleep(Duration::from_millis(500));
        let before = route_counters(&tracer);
        let started = Instant::now();
        let vias = call_and_check(&tracer, server, h_netns, c_netns, &expect);
        assert!(
            vias.iter()
                .all(|v| v.gateway == Some(GATEWAY_A.parse().expect("ip"))
                    && v.interface_name.as_deref() == Some("hr0")),
            "route A: {vias:?}"
        );
        assert_eq!(
            delta(route_counters(&tracer), before),
            [2, 2, 0, 0, 0],
            "call 1: hits, misses, expired, failed, negative"
        );

        // Call 2: the open ones again, from the cache.
        h_open.write_all(b"y").expect("write");
        c_open.write_all(b"y").expect("write");
        thread::sleep(Duration::from_millis(100));
        let before = route_counters(&tracer);
        call_and_check(
            &tracer,
            server,
            h_netns,
            c_netns,
            &[local(&h_open), local(&c_open)],
        );
        let counted = delta(route_counters(&tracer), before);
        if started.elapsed() < TTL {
            assert_eq!(counted, [2, 0, 0, 0, 0], "call 2: all hits");
        } else {
            eprintln!(
                "call 2 came after the TTL ({:?}): hits not checked",
                started.elapsed()
            );
        }

        // The route changes; past the TTL the new gateway and interface are reported. A new
        // connection from H takes hr1's address as its source (a new key); C's source is the
        // same (its entry expired).
        ip(&[
            "route",
            "replace",
            "203.0.113.176/28",
            "via",
            GATEWAY_B,
            "dev",
            "hr1",
        ]);
        thread::sleep(TTL + Duration::from_millis(500));
        h_open.write_all(b"z").expect("write");
        c_open.write_all(b"z").expect("write");
        let h_closed = connect(server);
        let c_closed = in_netns(&topology.c, move || connect(server));
        let expect = [
            local(&h_open),
            local(&c_open),
            closed(h_closed),
            closed(c_closed),
        ];
        thread::sleep(Duration::from_millis(500));
        let before = route_counters(&tracer);
        let vias = call_and_check(&tracer, server, h_netns, c_netns, &expect);
        assert!(
            vias.iter()
                .all(|v| v.gateway == Some(GATEWAY_B.parse().expect("ip"))
                    && v.interface_name.as_deref() == Some("hr1")),
            "route B: {vias:?}"
        );
        // Expired: H's key of source .209 and C's key; misses: those two and H's new source
        // .225; hits: C's second connection.
        assert_eq!(
            delta(route_counters(&tracer), before),
            [1, 3, 2, 0, 0],
            "call 3: hits, misses, expired, failed, negative"
        );
        drop((h_open, c_open));
        drop(s);
    });
}

#[test]
fn ipv6_connections_from_the_host_and_a_container_carry_the_route_ip_route_get_names() {
    if !first_backend_of_kernel("route lookups") {
        return;
    }
    in_fresh_netns(|| {
        let topology = Topology::build();
        let s = Server::start(&topology.s, IpAddr::V6(SERVER6));
        let server = SocketAddr::new(IpAddr::V6(SERVER6), s.port);
        let net = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0x13, 0, 0, 0, 0, 0));
        let Some(tracer) = loaded_or_skip(Tracer::new(config(server, net, 64))) else {
            return;
        };
        let h_netns = current_netns_inode().expect("netns") as u32;
        let c_netns = in_netns(&topology.c, || current_netns_inode().expect("netns") as u32);
        tracer.register_client("c").expect("register");
        drop(tracer.get_active_connections("c").expect("first call"));
        let h_open = connect(server);
        let h_closed = connect(server);
        let (c_open, c_closed) = in_netns(&topology.c, move || (connect(server), connect(server)));
        let expect = [
            local(&h_open),
            local(&c_open),
            closed(h_closed),
            closed(c_closed),
        ];
        thread::sleep(Duration::from_millis(500));
        let before = route_counters(&tracer);
        let vias = call_and_check(&tracer, server, h_netns, c_netns, &expect);
        assert!(
            vias.iter()
                .all(|v| v.gateway == Some(GATEWAY6.parse().expect("ip"))
                    && v.interface_name.as_deref() == Some("hr0")),
            "{vias:?}"
        );
        assert_eq!(
            delta(route_counters(&tracer), before),
            [2, 2, 0, 0, 0],
            "hits, misses, expired, failed, negative"
        );
        drop((h_open, c_open));
        drop(s);
    });
}
