//! NAT translations from conntrack, through the public API (`Tracer::get_active_connections`).
//!
//! Topology, built by the test only (documentation addresses, nothing leaves the test's
//! namespaces): the tracer and the client in a fresh namespace A (the tracer's own); a server
//! in a named namespace B at 198.51.100.2, over a veth pair (A's end 198.51.100.1). In A,
//! nftables DNATs the virtual service 203.0.113.10:80 (TCP and UDP) to 198.51.100.2:8080 and
//! masquerades what leaves through the veth; the client's source is 192.0.2.1 (the route to
//! the service says so), so both translations apply. The same in IPv6: service
//! [2001:db8:3::10]:80 to [2001:db8:1::2]:8080, client 2001:db8:2::1, veth 2001:db8:1::1.
//!
//! Ground truth: the server's view of its peer (the masqueraded address and port), the
//! configured DNAT target, and the `conntrack -L` CLI where it is installed (host and VMs).

use std::{
    fs::File,
    io::{Read, Write},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::fd::AsRawFd,
    process::Command,
    sync::mpsc,
    thread::JoinHandle,
    time::{Duration, Instant},
};

use tracer::{
    BackendChoice, Config, Tracer,
    enrich::{EnrichConfig, conntrack::ConntrackConfig},
    model::{ConnectionStats, IpTranslation, Protocol},
};
use tracer_integration::{
    cmd::run_with_input,
    environment::NamedNetns,
    netns::{current_netns_inode, in_fresh_netns},
    policy::{first_backend_of_kernel, loaded_or_skip},
    tracer::{backend_under_test, counter},
};

const CLIENT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const VIP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
const VIP_PORT: u16 = 80;
const SERVER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
const SERVER_PORT: u16 = 8080;

/// The addresses of one address family.
struct Family {
    /// `conntrack -f` name.
    name: &'static str,
    /// The client's source (routed to the service with this source).
    client: IpAddr,
    /// The virtual service (DNATed).
    vip: IpAddr,
    /// Namespace A's end of the veth (the masquerade's address).
    a_veth: IpAddr,
    /// The server, in namespace B.
    server: IpAddr,
}

const V4: Family = Family {
    name: "ipv4",
    client: IpAddr::V4(CLIENT),
    vip: IpAddr::V4(VIP),
    a_veth: IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1)),
    server: IpAddr::V4(SERVER),
};

const V6: Family = Family {
    name: "ipv6",
    client: IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 1)),
    vip: IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 3, 0, 0, 0, 0, 0x10)),
    a_veth: IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1)),
    server: IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 2)),
};

impl Family {
    fn vip(&self) -> SocketAddr {
        SocketAddr::new(self.vip, VIP_PORT)
    }

    fn server(&self) -> SocketAddr {
        SocketAddr::new(self.server, SERVER_PORT)
    }
}

fn new_tracer(conntrack: ConntrackConfig) -> Option<Tracer> {
    loaded_or_skip(Tracer::new(Config {
        backend: BackendChoice::Force(backend_under_test()),
        enrich: EnrichConfig {
            conntrack,
            ..EnrichConfig::default()
        },
        ..Config::default()
    }))
}

/// The namespaces, veths, addresses and NAT rules; called on a thread in namespace A.
struct Topology {
    server: NamedNetns,
}

impl Topology {
    fn build() -> Self {
        let server = NamedNetns::add();
        let b = server.name.as_str();
        run_with_input(
            "ip",
            &[
                "link", "add", "ntnat0", "type", "veth", "peer", "name", "ntnat1", "netns", b,
            ],
            None,
        );
        run_with_input(
            "ip",
            &["addr", "add", "198.51.100.1/24", "dev", "ntnat0"],
            None,
        );
        run_with_input("ip", &["link", "set", "ntnat0", "up"], None);
        run_with_input("ip", &["addr", "add", "192.0.2.1/32", "dev", "lo"], None);
        run_with_input(
            "ip",
            &[
                "route",
                "add",
                "203.0.113.0/24",
                "dev",
                "ntnat0",
                "src",
                "192.0.2.1",
            ],
            None,
        );
        run_with_input(
            "ip",
            &["-n", b, "addr", "add", "198.51.100.2/24", "dev", "ntnat1"],
            None,
        );
        run_with_input("ip", &["-n", b, "link", "set", "ntnat1", "up"], None);
        run_with_input("ip", &["-n", b, "link", "set", "lo", "up"], None);
        // IPv6: the same, without duplicate address detection (the addresses are usable now).
        for args in [
            &[
                "-6",
                "addr",
                "add",
                "2001:db8:1::1/64",
                "dev",
                "ntnat0",
                "nodad",
            ][..],
            &[
                "-6",
                "addr",
                "add",
                "2001:db8:2::1/128",
                "dev",
                "lo",
                "nodad",
            ],
            &[
                "-6",
                "route",
                "add",
                "2001:db8:3::/64",
                "dev",
                "ntnat0",
                "src",
                "2001:db8:2::1",
            ],
            &[
                "-n",
                b,
                "-6",
                "addr",
                "add",
                "2001:db8:1::2/64",
                "dev",
                "ntnat1",
                "nodad",
            ],
        ] {
            run_with_input("ip", args, None);
        }
        run_with_input(
            "nft",
            &["-f", "-"],
            Some(
                "table ip ntnat {
                   chain out {
                     type nat hook output priority -100;
                     ip daddr 203.0.113.10 tcp dport 80 dnat to 198.51.100.2:8080
                     ip daddr 203.0.113.10 udp dport 80 dnat to 198.51.100.2:8080
                   }
                   chain post {
                     type nat hook postrouting priority 100;
                     oifname \"ntnat0\" masquerade
                   }
                 }
                 table ip6 ntnat6 {
                   chain out {
                     type nat hook output priority -100;
                     ip6 daddr 2001:db8:3::10 tcp dport 80 dnat to [2001:db8:1::2]:8080
                     ip6 daddr 2001:db8:3::10 udp dport 80 dnat to [2001:db8:1::2]:8080
                   }
                   chain post {
                     type nat hook postrouting priority 100;
                     oifname \"ntnat0\" masquerade
                   }
                 }\n",
            ),
        );
        Self { server }
    }

    /// Runs `f` on a new thread inside the server's namespace.
    fn in_server<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> JoinHandle<T> {
        let path = format!("/run/netns/{}", self.server.name);
        std::thread::spawn(move || {
            let ns = File::open(&path).expect("open the server namespace");
            // SAFETY: plain syscall on a valid descriptor; it moves only this thread.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
    }
}

/// What the DNAT and the masquerade make of a client connection whose server saw `peer`.
fn expected(family: &Family, peer: SocketAddr) -> IpTranslation {
    IpTranslation {
        repl_src_ip: family.server,
        repl_dst_ip: peer.ip(),
        repl_sport: SERVER_PORT,
        repl_dport: peer.port(),
    }
}

fn conntrack_cli_available() -> bool {
    Command::new("conntrack")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The reply tuple `conntrack -L` lists for the entry whose original source port is `sport`
/// (run in the calling thread's namespace).
fn conntrack_cli_reply(family: &Family, protocol: &str, sport: u16) -> IpTranslation {
    let out = run_with_input(
        "conntrack",
        &[
            "-L",
            "-f",
            family.name,
            "-p",
            protocol,
            "--orig-src",
            &family.client.to_string(),
            "--orig-port-src",
            &sport.to_string(),
        ],
        None,
    );
    let line = out
        .lines()
        .next()
        .unwrap_or_else(|| panic!("conntrack -L lists no {protocol} entry from port {sport}"));
    let field = |key: &str, nth: usize| -> String {
        line.split_whitespace()
            .filter_map(|w| w.strip_prefix(key))
            .nth(nth)
            .unwrap_or_else(|| panic!("no {key} #{nth} in {line}"))
            .to_owned()
    };
    IpTranslation {
        repl_src_ip: field("src=", 1).parse().expect("src"),
        repl_dst_ip: field("dst=", 1).parse().expect("dst"),
        repl_sport: field("sport=", 1).parse().expect("sport"),
        repl_dport: field("dport=", 1).parse().expect("dport"),
    }
}

fn is_client(c: &ConnectionStats, netns: u32, protocol: Protocol, local: SocketAddr) -> bool {
    let vip = if local.is_ipv4() { V4.vip() } else { V6.vip() };
    c.tuple.netns == netns
        && c.tuple.protocol == protocol
        && SocketAddr::new(c.tuple.src, c.tuple.sport) == local
        && SocketAddr::new(c.tuple.dst, c.tuple.dport) == vip
}

/// Polls until the client connection shows up open (then closed, if `closed`), returning it.
fn poll_client(
    tracer: &Tracer,
    netns: u32,
    protocol: Protocol,
    local: SocketAddr,
    closed: bool,
) -> ConnectionStats {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let delta = tracer
            .get_active_connections("nat")
            .expect("get_active_connections");
        let found = delta
            .conns
            .iter()
            .find(|c| is_client(c, netns, protocol, local) && c.is_closed == closed);
        if let Some(conn) = found {
            // The server's side, when in the same delta: an intra-host incoming connection
            // whose outgoing DNATed peer is there loses the translation conntrack gave it.
            for server in delta.conns.iter().filter(|c| {
                c.tuple.protocol == protocol
                    && [V4.server(), V6.server()]
                        .contains(&SocketAddr::new(c.tuple.src, c.tuple.sport))
                    && [V4.a_veth, V6.a_veth].contains(&c.tuple.dst)
            }) {
                if server.intra_host {
                    assert_eq!(
                        server.nat, None,
                        "server side keeps no translation: {server:?}"
                    );
                }
            }
            return conn.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no {} {protocol:?} client connection from {local} in the tracer's output",
            if closed { "closed" } else { "open" }
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn dnat_and_masquerade_translations_of_open_and_closed_connections() {
    if !first_backend_of_kernel("conntrack NAT translations") {
        return;
    }
    in_fresh_netns(|| {
        let topology = Topology::build();
        let Some(tracer) = new_tracer(ConntrackConfig::default()) else {
            return;
        };
        let own = u32::try_from(current_netns_inode().expect("netns")).expect("inode");
        let cli = conntrack_cli_available();
        // `cargo xtask test` ships the CLI into the VMs and installs it on the host.
        let strict = std::env::var("TRACER_TEST_STRICT").is_ok_and(|v| v == "1");
        assert!(cli || !strict, "strict mode: the conntrack CLI is missing");
        if !cli {
            eprintln!(
                "conntrack CLI absent: checking against the DNAT target and the server's view"
            );
        }

        for family in [&V4, &V6] {
            translations_of(&tracer, &topology, own, family, cli);
        }

        // A connection straight to the server: tracked by conntrack, but not translated (the
        // masquerade keeps the veth's address and the port). No translation, and its events
        // are dropped by the socket filter in the kernel (nothing skipped in userspace).
        let skipped = counter(&tracer, "conntrack_non_nat_skipped");
        let (tx, rx) = mpsc::channel();
        let server = topology.in_server(move || {
            let listener = TcpListener::bind((SERVER, SERVER_PORT)).expect("bind server");
            tx.send(()).expect("ready");
            let (mut stream, _) = listener.accept().expect("accept");
            let _ = stream.read(&mut [0u8; 1]);
        });
        rx.recv().expect("server ready");
        let direct = TcpStream::connect((SERVER, SERVER_PORT)).expect("connect directly");
        let local = direct.local_addr().expect("local");
        let deadline = Instant::now() + Duration::from_secs(10);
        let conn = loop {
            let delta = tracer.get_active_connections("nat").expect("call");
            if let Some(c) = delta.conns.iter().find(|c| {
                c.tuple.netns == own && SocketAddr::new(c.tuple.src, c.tuple.sport) == local
            }) {
                break c.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no direct connection from {local}"
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        assert_eq!(conn.nat, None, "direct connection: {conn:?}");
        assert_eq!(counter(&tracer, "conntrack_non_nat_skipped"), skipped);
        drop(direct);
        server.join().expect("server");

        assert!(counter(&tracer, "conntrack_entries_added") >= 4);
        assert!(counter(&tracer, "conntrack_lookups_hit") >= 8);
        assert_eq!(counter(&tracer, "conntrack_unavailable"), 0);
        assert_eq!(counter(&tracer, "conntrack_malformed"), 0);
        drop(tracer);
        drop(topology);
    });
}

/// TCP then UDP through the service of `family`: the translation of the open and of the closed
/// client connection, against the server's view and `conntrack -L`.
fn translations_of(tracer: &Tracer, topology: &Topology, own: u32, family: &Family, cli: bool) {
    // TCP.
    let (tx, rx) = mpsc::channel();
    let server_addr = family.server();
    let server = topology.in_server(move || {
        let listener = TcpListener::bind(server_addr).expect("bind server");
        tx.send(None).expect("ready");
        let (mut stream, peer) = listener.accept().expect("accept");
        tx.send(Some(peer)).expect("peer");
        let mut buf = [0u8; 64];
        while let Ok(n) = stream.read(&mut buf) {
            if n == 0 || stream.write_all(&buf[..n]).is_err() {
                break;
            }
        }
    });
    assert_eq!(rx.recv().expect("server ready"), None);
    let mut client = TcpStream::connect(family.vip()).expect("connect to the service");
    client.write_all(b"hello").expect("write");
    let mut echo = [0u8; 5];
    client.read_exact(&mut echo).expect("echo");
    let local = client.local_addr().expect("local");
    assert_eq!(local.ip(), family.client);
    let peer = rx.recv().expect("peer").expect("peer address");
    assert_eq!(
        peer.ip(),
        family.a_veth,
        "masqueraded by the veth's address"
    );
    let want = expected(family, peer);
    if cli {
        assert_eq!(
            conntrack_cli_reply(family, "tcp", local.port()),
            want,
            "conntrack -L"
        );
    }
    let open = poll_client(tracer, own, Protocol::Tcp, local, false);
    assert_eq!(open.nat, Some(want), "open TCP connection, {}", family.name);
    assert_eq!(open.remote_endpoint(), (family.server, SERVER_PORT));
    drop(client);
    server.join().expect("server");
    let closed = poll_client(tracer, own, Protocol::Tcp, local, true);
    assert_eq!(
        closed.nat,
        Some(want),
        "closed TCP connection, {}",
        family.name
    );

    // UDP.
    let (tx, rx) = mpsc::channel();
    let server_addr = family.server();
    let server = topology.in_server(move || {
        let socket = UdpSocket::bind(server_addr).expect("bind server");
        tx.send(None).expect("ready");
        let mut buf = [0u8; 64];
        let (n, peer) = socket.recv_from(&mut buf).expect("recv");
        socket.send_to(&buf[..n], peer).expect("reply");
        tx.send(Some(peer)).expect("peer");
    });
    assert_eq!(rx.recv().expect("server ready"), None);
    let client = UdpSocket::bind(SocketAddr::new(family.client, 0)).expect("bind client");
    client.connect(family.vip()).expect("connect");
    client.send(b"ping").expect("send");
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut buf = [0u8; 4];
    client.recv(&mut buf).expect("reply through the NAT");
    let local = client.local_addr().expect("local");
    let peer = rx.recv().expect("peer").expect("peer address");
    server.join().expect("server");
    let want = expected(family, peer);
    if cli {
        assert_eq!(
            conntrack_cli_reply(family, "udp", local.port()),
            want,
            "conntrack -L"
        );
    }
    let open = poll_client(tracer, own, Protocol::Udp, local, false);
    assert_eq!(open.nat, Some(want), "open UDP connection, {}", family.name);
    drop(client);
    let closed = poll_client(tracer, own, Protocol::Udp, local, true);
    assert_eq!(
        closed.nat,
        Some(want),
        "closed UDP connection, {}",
        family.name
    );
}

#[test]
fn a_flood_past_the_table_size_evicts_exactly_the_excess() {
    const CONNECTIONS: usize = 100;
    const MAX_ENTRIES: usize = 64;
    if !first_backend_of_kernel("conntrack table eviction") {
        return;
    }
    in_fresh_netns(|| {
        let topology = Topology::build();
        let Some(tracer) = new_tracer(ConntrackConfig {
            max_entries: MAX_ENTRIES,
            ..ConntrackConfig::default()
        }) else {
            return;
        };
        let (tx, rx) = mpsc::channel();
        let server = topology.in_server(move || {
            let listener = TcpListener::bind((SERVER, SERVER_PORT)).expect("bind server");
            tx.send(()).expect("ready");
            // Holds every connection open until the client side closes them.
            let accepted: Vec<TcpStream> = (0..CONNECTIONS)
                .map(|_| listener.accept().expect("accept").0)
                .collect();
            for mut stream in accepted {
                let _ = stream.read(&mut [0u8; 1]);
            }
        });
        rx.recv().expect("server ready");
        let clients: Vec<TcpStream> = (0..CONNECTIONS)
            .map(|_| TcpStream::connect((VIP, VIP_PORT)).expect("connect to the service"))
            .collect();
        if conntrack_cli_available() {
            let listed = run_with_input("conntrack", &["-L", "--dst-nat"], None);
            assert_eq!(
                listed.lines().count(),
                CONNECTIONS,
                "conntrack -L --dst-nat:\n{listed}"
            );
        }
        // One sync takes in every NEW event: two keys per entry into MAX_ENTRIES slots.
        tracer.get_active_connections("nat").expect("call");
        let added = counter(&tracer, "conntrack_entries_added");
        let evicted = counter(&tracer, "conntrack_evicted");
        let held = counter(&tracer, "conntrack_entries");
        assert_eq!(
            (added, evicted, held),
            (
                CONNECTIONS as u64,
                (2 * CONNECTIONS - MAX_ENTRIES) as u64,
                MAX_ENTRIES as u64
            ),
            "(entries added, keys evicted, keys held)"
        );
        drop(clients);
        server.join().expect("server");
        drop(tracer);
        drop(topology);
    });
}

#[test]
fn an_overflowed_event_socket_is_resynced_with_a_dump() {
    const CONNECTIONS: usize = 100;
    if !first_backend_of_kernel("conntrack ENOBUFS resync") {
        return;
    }
    in_fresh_netns(|| {
        let topology = Topology::build();
        // The smallest receive buffer the kernel allows: a few events overflow it.
        let Some(tracer) = new_tracer(ConntrackConfig {
            rcvbuf_bytes: 1,
            ..ConntrackConfig::default()
        }) else {
            return;
        };
        let own = u32::try_from(current_netns_inode().expect("netns")).expect("inode");
        let server_addr = V4.server();
        let (tx, rx) = mpsc::channel();
        let server = topology.in_server(move || {
            let listener = TcpListener::bind(server_addr).expect("bind server");
            tx.send(()).expect("ready");
            let accepted: Vec<TcpStream> = (0..CONNECTIONS)
                .map(|_| listener.accept().expect("accept").0)
                .collect();
            for mut stream in accepted {
                let _ = stream.read(&mut [0u8; 1]);
            }
        });
        rx.recv().expect("server ready");
        let clients: Vec<TcpStream> = (0..CONNECTIONS)
            .map(|_| TcpStream::connect(V4.vip()).expect("connect to the service"))
            .collect();
        let locals: Vec<SocketAddr> = clients
            .iter()
            .map(|c| c.local_addr().expect("local"))
            .collect();
        // Every client connection gets its translation, although most events were lost.
        let mut translated = std::collections::HashSet::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while translated.len() < CONNECTIONS {
            let delta = tracer.get_active_connections("nat").expect("call");
            for conn in &delta.conns {
                let local = SocketAddr::new(conn.tuple.src, conn.tuple.sport);
                if conn.tuple.netns == own && locals.contains(&local) {
                    let nat = conn
                        .nat
                        .unwrap_or_else(|| panic!("no translation: {conn:?}"));
                    assert_eq!((nat.repl_src_ip, nat.repl_sport), (V4.server, SERVER_PORT));
                    translated.insert(local);
                }
            }
            assert!(
                Instant::now() < deadline,
                "{} of {CONNECTIONS} connections seen translated",
                translated.len()
            );
        }
        assert!(counter(&tracer, "conntrack_enobufs_resyncs") >= 1);
        // The open of namespace A and at least one resync.
        assert!(counter(&tracer, "conntrack_dumps") >= 2);
        assert_eq!(counter(&tracer, "conntrack_unavailable"), 0);
        drop(clients);
        server.join().expect("server");
        drop(tracer);
        drop(topology);
    });
}
