//! DNS snooping through the public API: per-connection DNS stats (`ConnectionStats::dns`) and
//! reverse DNS (`Connections.dns`), against a real server (dnsmasq) and a real client (dig).
//!
//! Topology, built by each test (documentation addresses only; nothing leaves the test's
//! namespaces): the tracer, dig and the test's own clients in a fresh namespace A
//! (198.51.100.1, 2001:db8:1::1); dnsmasq in a named namespace S at 198.51.100.53:53 over a veth
//! pair; in S also the test's upstreams (198.51.100.54 answers SERVFAIL, .55 answers REFUSED,
//! .56 never answers) and, on S's loopback, the answered service addresses 203.0.113.6 and
//! 2001:db8::6 (A routes 203.0.113.0/24 and 2001:db8::/64 through S). A second named namespace
//! C (192.0.2.2) reaches dnsmasq through its own veth to S (192.0.2.1).
//!
//! The zone (dnsmasq `--local=/test/`: anything else under `test` is NXDOMAIN; TTL 300):
//! `a.test` A 203.0.113.5 (`--address`), `h.test` A 203.0.113.6 and AAAA 2001:db8::6,
//! `c1.test` CNAME `c2.test` CNAME `h.test`, `ttl.test` A 203.0.113.9 with TTL 2, `many.test`
//! with 100 A records 203.0.113.100-199; `fail.test` is forwarded to the SERVFAIL upstream and
//! `refuse.test` to the REFUSED one.
//!
//! Ground truth is what dnsmasq and dig say: dig's status and answers for each query, and its
//! query time (`dig -u`, microseconds) as the bound of the latency the tracer measures. These
//! tests do not depend on the attach backend (the capture is its own `cgroup_skb` program): each
//! runs with the kernel's first backend only. dnsmasq and dig are installed on the host by
//! `cargo xtask setup` and shipped into the VMs by the initramfs; a missing one fails the test.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{Read, Write},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::unix::fs::MetadataExt,
    sync::mpsc,
    time::{Duration, Instant},
};

use tracer::{
    BackendChoice, Config, Tracer,
    kernel::packet::CaptureConfig,
    model::{ConnectionStats, Connections, DnsStats, Protocol},
    sources::dns::DnsConfig,
};
use tracer_integration::{
    cmd::ip,
    dns::{
        Dnsmasq, TYPE_A, TYPE_AAAA, TestUpstream, dig, in_named_netns, normalized, qtype_number,
        resolve_on,
    },
    environment::NamedNetns,
    netns::{current_netns_inode, in_fresh_netns},
    policy::{first_backend_of_kernel, loaded_or_skip},
    tracer::backend_under_test,
};

const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1));
const SERVER: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 53));
const SERVFAIL_UPSTREAM: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 54));
const REFUSED_UPSTREAM: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 55));
const SILENT: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 56));
const H_V4: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 6));
const H_V6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 6));
const TTL_V4: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9));
const SECOND_CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));
const SERVICE_PORT: u16 = 8080;

/// How much the tracer's latency of one query may exceed dig's query time. dig reads
/// `CLOCK_REALTIME` just before it hands the query to its socket and just after its receive
/// returns, so its interval contains the moments the query left and the answer reached its
/// socket, which the kernel capture timestamps (`bpf_ktime_get_ns`, the monotonic clock). What
/// remains is the two clocks' rates (NTP slews `CLOCK_REALTIME` by at most 500 ppm: under a
/// microsecond on these sub-millisecond queries) and the reads themselves; 1 ms per query is
/// ample for those and still tight against any latency taken at the wrong moment (a reader's
/// wake-up, a call's time), which would be off by whole milliseconds or seconds.
const LATENCY_MARGIN_US: u64 = 1_000;

/// The namespaces, veths, addresses and routes; called on a thread in namespace A.
struct Topology {
    server: NamedNetns,
    second: NamedNetns,
}

impl Topology {
    fn build() -> Self {
        let server = NamedNetns::add();
        let second = NamedNetns::add();
        let s = server.name.as_str();
        let c = second.name.as_str();
        ip(&[
            "link", "add", "ntdns0", "type", "veth", "peer", "name", "ntdns1", "netns", s,
        ]);
        ip(&["addr", "add", "198.51.100.1/24", "dev", "ntdns0"]);
        ip(&[
            "-6",
            "addr",
            "add",
            "2001:db8:1::1/64",
            "dev",
            "ntdns0",
            "nodad",
        ]);
        ip(&["link", "set", "ntdns0", "up"]);
        ip(&["route", "add", "203.0.113.0/24", "via", "198.51.100.53"]);
        ip(&[
            "-6",
            "route",
            "add",
            "2001:db8::/64",
            "via",
            "2001:db8:1::53",
        ]);
        for addr in ["198.51.100.53/24", "198.51.100.54/24", "198.51.100.55/24"] {
            ip(&["-n", s, "addr", "add", addr, "dev", "ntdns1"]);
        }
        ip(&["-n", s, "addr", "add", "198.51.100.56/24", "dev", "ntdns1"]);
        ip(&[
            "-n",
            s,
            "-6",
            "addr",
            "add",
            "2001:db8:1::53/64",
            "dev",
            "ntdns1",
            "nodad",
        ]);
        ip(&["-n", s, "link", "set", "ntdns1", "up"]);
        ip(&["-n", s, "link", "set", "lo", "up"]);
        ip(&["-n", s, "addr", "add", "203.0.113.6/32", "dev", "lo"]);
        ip(&["-n", s, "-6", "addr", "add", "2001:db8::6/128", "dev", "lo"]);
        // The second client's namespace, behind S.
        ip(&[
            "-n", s, "link", "add", "ntdns2", "type", "veth", "peer", "name", "ntdns3", "netns", c,
        ]);
        ip(&["-n", s, "addr", "add", "192.0.2.1/24", "dev", "ntdns2"]);
        ip(&["-n", s, "link", "set", "ntdns2", "up"]);
        ip(&["-n", c, "addr", "add", "192.0.2.2/24", "dev", "ntdns3"]);
        ip(&["-n", c, "link", "set", "ntdns3", "up"]);
        ip(&["-n", c, "link", "set", "lo", "up"]);
        ip(&[
            "-n",
            c,
            "route",
            "add",
            "198.51.100.0/24",
            "via",
            "192.0.2.1",
        ]);
        Self { server, second }
    }

    /// dnsmasq in S with the zone of the module docs.
    fn dnsmasq(&self) -> Dnsmasq {
        let mut zone: Vec<String> = [
            "--local=/test/",
            "--local-ttl=300",
            "--edns-packet-max=4096",
            "--address=/a.test/203.0.113.5",
            "--host-record=h.test,203.0.113.6,2001:db8::6",
            "--host-record=ttl.test,203.0.113.9,2",
            "--cname=c1.test,c2.test",
            "--cname=c2.test,h.test",
            "--server=/fail.test/198.51.100.54",
            "--server=/refuse.test/198.51.100.55",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        zone.extend(many_addresses().map(|a| format!("--host-record=many.test,{a}")));
        Dnsmasq::start(&self.server.name, SERVER, &zone)
    }
}

fn many_addresses() -> impl Iterator<Item = IpAddr> {
    (100..200u8).map(|i| IpAddr::V4(Ipv4Addr::new(203, 0, 113, i)))
}

fn netns_inode_of(named: &NamedNetns) -> u32 {
    let ino = std::fs::metadata(format!("/run/netns/{}", named.name))
        .expect("stat the named namespace")
        .ino();
    u32::try_from(ino).expect("inode")
}

fn own_netns() -> u32 {
    u32::try_from(current_netns_inode().expect("netns")).expect("inode")
}

/// The tracer for the backend under test, capturing up to 4096 bytes per packet (the 100-record
/// answer is 1638), with DNS stats on and `timeout` as the query timeout.
fn new_tracer(timeout: Duration) -> Option<Tracer> {
    loaded_or_skip(Tracer::new(Config {
        backend: BackendChoice::Force(backend_under_test()),
        capture: CaptureConfig {
            snaplen: 4096,
            ..CaptureConfig::default()
        },
        dns: DnsConfig {
            enabled: true,
            timeout,
            ..DnsConfig::default()
        },
        ..Config::default()
    }))
}

/// (transport, domain, query type): the leaves DNS stats are counted in.
type Leaf = (Protocol, String, u16);

/// What dig said about the queries of one leaf.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Truth {
    rcodes: BTreeMap<u32, u32>,
    queries: u64,
    dig_time_us: u64,
}

/// Runs dig (in `netns`, or here) and records its answer as the truth of its leaf.
fn dig_into(
    truth: &mut BTreeMap<Leaf, Truth>,
    netns: Option<&str>,
    name: &str,
    qtype: &str,
    tcp: bool,
) -> tracer_integration::dns::DigAnswer {
    let extra: &[&str] = if tcp { &["+tcp"] } else { &[] };
    let answer = dig(netns, SERVER, name, qtype, extra);
    let protocol = if tcp { Protocol::Tcp } else { Protocol::Udp };
    let leaf = truth
        .entry((protocol, normalized(name), qtype_number(qtype)))
        .or_default();
    *leaf.rcodes.entry(answer.rcode).or_default() += 1;
    leaf.queries += 1;
    leaf.dig_time_us += answer.query_time_us;
    answer
}

/// Adds the DNS stats of the connections of `netns` to `server`:53 in `delta` to `seen`;
/// returns how many connections carried stats.
fn observe(
    delta: &Connections,
    netns: u32,
    server: IpAddr,
    seen: &mut BTreeMap<Leaf, DnsStats>,
) -> usize {
    let mut carriers = 0;
    for conn in ours(delta, netns, server) {
        let Some(dns) = &conn.dns else { continue };
        carriers += 1;
        for (domain, by_type) in &dns.0 {
            for (qtype, stats) in by_type {
                seen.entry((conn.tuple.protocol, normalized(domain), qtype.0))
                    .or_default()
                    .merge(stats);
            }
        }
    }
    carriers
}

fn ours(delta: &Connections, netns: u32, server: IpAddr) -> impl Iterator<Item = &ConnectionStats> {
    delta
        .conns
        .iter()
        .filter(move |c| c.tuple.netns == netns && c.tuple.dst == server && c.tuple.dport == 53)
}

fn queries_seen(seen: &BTreeMap<Leaf, DnsStats>) -> u64 {
    seen.values()
        .map(|s| {
            u64::from(s.timeouts)
                + s.count_by_rcode
                    .values()
                    .map(|&n| u64::from(n))
                    .sum::<u64>()
        })
        .sum()
}

fn queries_true(truth: &BTreeMap<Leaf, Truth>) -> u64 {
    truth.values().map(|t| t.queries).sum()
}

/// Calls `client` until the stats of namespace A's connections to the server add up to as
/// many queries as dig made (at most 10 s), then once more (anything counted twice would show
/// there). Returns how many connections carried stats over those calls.
fn collect_until_complete(
    tracer: &Tracer,
    client: &str,
    netns: u32,
    truth: &BTreeMap<Leaf, Truth>,
    seen: &mut BTreeMap<Leaf, DnsStats>,
) -> usize {
    let mut carriers = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    while queries_seen(seen) < queries_true(truth) && Instant::now() < deadline {
        let delta = tracer.get_active_connections(client).expect("call");
        carriers += observe(&delta, netns, SERVER, seen);
        std::thread::sleep(Duration::from_millis(50));
    }
    let delta = tracer.get_active_connections(client).expect("call");
    carriers + observe(&delta, netns, SERVER, seen)
}

/// Each dig run is one socket with one query: its stats reach a client on its own connection,
/// in one call.
fn assert_one_carrier_per_dig(carriers: usize, truth: &BTreeMap<Leaf, Truth>) {
    assert_eq!(
        u64::try_from(carriers).expect("count"),
        queries_true(truth),
        "connections that carried DNS stats, against dig runs"
    );
}

/// The exact rcode counts of every leaf, no timeouts, and latency sums that are positive
/// exactly where dig saw answers of that kind and within dig's total plus the margin.
fn assert_matches_truth(seen: &BTreeMap<Leaf, DnsStats>, truth: &BTreeMap<Leaf, Truth>) {
    assert_eq!(
        seen.keys().collect::<Vec<_>>(),
        truth.keys().collect::<Vec<_>>(),
        "leaves seen (left) against dig's queries (right): seen {seen:#?}"
    );
    for (leaf, want) in truth {
        let got = &seen[leaf];
        assert_eq!(got.count_by_rcode, want.rcodes, "{leaf:?}: counts by rcode");
        assert_eq!(got.timeouts, 0, "{leaf:?}: timeouts");
        let successes = want.rcodes.get(&0).copied().unwrap_or(0);
        let failures = want.queries - u64::from(successes);
        assert_eq!(
            (
                got.success_latency_sum_us > 0,
                got.failure_latency_sum_us > 0
            ),
            (successes > 0, failures > 0),
            "{leaf:?}: latency sums (success, failure) {} {} against rcodes {:?}",
            got.success_latency_sum_us,
            got.failure_latency_sum_us,
            want.rcodes
        );
        let bound = want.dig_time_us + LATENCY_MARGIN_US * want.queries;
        let total = got.success_latency_sum_us + got.failure_latency_sum_us;
        assert!(
            total <= bound,
            "{leaf:?}: latency sum {total} us exceeds dig's query times {} us + {} us margin",
            want.dig_time_us,
            LATENCY_MARGIN_US * want.queries
        );
    }
}

fn names_of(delta: &Connections, ip: IpAddr) -> Vec<String> {
    delta
        .dns
        .get(&ip)
        .map(|names| names.iter().map(|n| normalized(n)).collect())
        .unwrap_or_default()
}

/// `Connections.dns` holds names only for the addresses of the connections it came with.
fn assert_names_only_for_returned_connections(delta: &Connections) {
    let ips: BTreeSet<IpAddr> = delta
        .conns
        .iter()
        .flat_map(|c| [c.tuple.src, c.tuple.dst])
        .collect();
    for ip in delta.dns.keys() {
        assert!(
            ips.contains(ip),
            "Connections.dns names {ip} ({:?}), which no returned connection has",
            delta.dns[ip]
        );
    }
}

#[test]
fn dig_over_udp_and_tcp_is_counted_by_domain_type_and_rcode_within_digs_query_time() {
    if !first_backend_of_kernel("DNS stats") {
        return;
    }
    in_fresh_netns(|| {
        let topology = Topology::build();
        let _dnsmasq = topology.dnsmasq();
        let Some(tracer) = new_tracer(Duration::from_secs(15)) else {
            return;
        };
        tracer.register_client("dns").expect("register");
        let own = own_netns();
        let mut truth = BTreeMap::new();
        for tcp in [false, true] {
            for (name, qtype) in [
                ("h.test", "A"),
                ("h.test", "AAAA"),
                ("a.test", "A"),
                ("a.test", "A"),
                ("c1.test", "A"),
            ] {
                dig_into(&mut truth, None, name, qtype, tcp);
            }
        }
        // The zone answered as configured (the truth's own sanity).
        for leaf in truth.values() {
            assert_eq!(leaf.rcodes.keys().collect::<Vec<_>>(), vec![&0]);
        }
        let mut seen = BTreeMap::new();
        let carriers = collect_until_complete(&tracer, "dns", own, &truth, &mut seen);
        assert_matches_truth(&seen, &truth);
        assert_one_carrier_per_dig(carriers, &truth);
        let counters = tracer.counters().expect("counters");
        assert!(counters.value("packet_captured") >= 2 * queries_true(&truth));
        assert_eq!(counters.value("packet_ring_full"), 0);
        assert_eq!(counters.value("packet_truncated"), 0);
    });
}

#[test]
fn a_program_that_resolves_then_connects_sees_the_name_on_its_connection() {
    if !first_backend_of_kernel("reverse DNS") {
        return;
    }
    in_fresh_netns(|| {
        let topology = Topology::build();
        let _dnsmasq = topology.dnsmasq();
        let Some(tracer) = new_tracer(Duration::from_secs(15)) else {
            return;
        };
        tracer.register_client("dns").expect("register");
        let own = own_netns();
        // The services the answers point to, in S.
        let (tx, rx) = mpsc::channel();
        let service = in_named_netns(&topology.server.name, move || {
            let listeners: Vec<TcpListener> = [H_V4, H_V6]
                .into_iter()
                .map(|ip| TcpListener::bind((ip, SERVICE_PORT)).expect("bind service"))
                .collect();
            tx.send(()).expect("ready");
            let accepted: Vec<TcpStream> = listeners
                .iter()
                .map(|l| l.accept().expect("accept").0)
                .collect();
            for mut stream in accepted {
                let _ = stream.read(&mut [0u8; 8]);
            }
        });
        rx.recv().expect("service ready");

        // Resolve as a program does: one UDP socket, its own queries.
        let resolver = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).expect("bind");
        resolver.connect((SERVER, 53)).expect("connect");
        let v4 = resolve_on(&resolver, 0x5101, "c1.test", TYPE_A);
        let v6 = resolve_on(&resolver, 0x5102, "h.test", TYPE_AAAA);
        assert_eq!((v4.rcode, v6.rcode), (0, 0));
        let v4_ip = v4.addresses.first().expect("an A answer").0;
        let v6_ip = v6.addresses.first().expect("an AAAA answer").0;
        assert_eq!((v4_ip, v6_ip), (H_V4, H_V6), "the zone's addresses");
        let mut conns: Vec<TcpStream> = [v4_ip, v6_ip]
            .into_iter()
            .map(|ip| TcpStream::connect((ip, SERVICE_PORT)).expect("connect the answer"))
            .collect();
        for stream in &mut conns {
            stream.write_all(b"hi").expect("write");
        }

        let mut stats = BTreeMap::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        let (v4_names, v6_names) = loop {
            let delta = tracer.get_active_connections("dns").expect("call");
            assert_names_only_for_returned_connections(&delta);
            observe(&delta, own, SERVER, &mut stats);
            let present = |ip: IpAddr| {
                delta.conns.iter().any(|c| {
                    c.tuple.netns == own
                        && c.tuple.protocol == Protocol::Tcp
                        && (c.tuple.dst, c.tuple.dport) == (ip, SERVICE_PORT)
                })
            };
            let names = (names_of(&delta, v4_ip), names_of(&delta, v6_ip));
            let done =
                present(v4_ip) && present(v6_ip) && !names.0.is_empty() && !names.1.is_empty();
            if done || Instant::now() > deadline {
                break names;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        // The question's name, reached through the CNAME chain c1 -> c2 -> h.
        assert!(
            v4_names.contains(&"c1.test".to_owned()),
            "names of {v4_ip}: {v4_names:?}"
        );
        assert!(
            v6_names.contains(&"h.test".to_owned()),
            "names of {v6_ip}: {v6_names:?}"
        );
        // And the resolver's socket carries both queries' stats.
        let counts: BTreeMap<Leaf, BTreeMap<u32, u32>> = stats
            .iter()
            .map(|(leaf, s)| (leaf.clone(), s.count_by_rcode.clone()))
            .collect();
        assert_eq!(
            counts,
            BTreeMap::from([
                (
                    (Protocol::Udp, "c1.test".to_owned(), TYPE_A),
                    BTreeMap::from([(0, 1)])
                ),
                (
                    (Protocol::Udp, "h.test".to_owned(), TYPE_AAAA),
                    BTreeMap::from([(0, 1)])
                ),
            ])
        );
        drop(conns);
        service.join().expect("service");
    });
}

#[test]
fn nxdomain_servfail_and_refused_are_failures_with_their_rcode() {
    if !first_backend_of_kernel("DNS failures") {
        return;
    }
    in_fresh_netns(|| {
        let topology = Topology::build();
        let _servfail = TestUpstream::start(
            &topology.server.name,
            SocketAddr::new(SERVFAIL_UPSTREAM, 53),
            Some(2),
        );
        let _refused = TestUpstream::start(
            &topology.server.name,
            SocketAddr::new(REFUSED_UPSTREAM, 53),
            Some(5),
        );
        let _dnsmasq = topology.dnsmasq();
        let Some(tracer) = new_tracer(Duration::from_secs(15)) else {
            return;
        };
        tracer.register_client("dns").expect("register");
        let own = own_netns();
        let mut truth = BTreeMap::new();
        for (name, qtype, tcp) in [
            ("nx.test", "A", false),
            ("nx.test", "A", false),
            ("nx.test", "AAAA", true),
            ("x.fail.test", "A", false),
            ("y.fail.test", "AAAA", false),
            ("x.refuse.test", "A", false),
        ] {
            dig_into(&mut truth, None, name, qtype, tcp);
        }
        let rcodes: BTreeSet<u32> = truth
            .values()
            .flat_map(|t| t.rcodes.keys().copied())
            .collect();
        assert_eq!(
            rcodes,
            BTreeSet::from([2, 3, 5]),
            "dnsmasq answered NXDOMAIN, SERVFAIL and REFUSED: {truth:?}"
        );
        let mut seen = BTreeMap::new();
        let carriers = collect_until_complete(&tracer, "dns", own, &truth, &mut seen);
        assert_matches_truth(&seen, &truth);
        assert_one_carrier_per_dig(carriers, &truth);
        for (leaf, stats) in &seen {
            assert_eq!(stats.success_latency_sum_us, 0, "{leaf:?}: {stats:?}");
        }
    });
}

/// Adds the DNS stats of namespace `netns`'s connections to the silent server to `by_port`,
/// by client port and domain (all A queries).
fn record_by_port(
    delta: &Connections,
    netns: u32,
    by_port: &mut BTreeMap<u16, BTreeMap<String, DnsStats>>,
) {
    for conn in ours(delta, netns, SILENT) {
        let Some(dns) = &conn.dns else { continue };
        for (domain, by_type) in &dns.0 {
            for (qtype, stats) in by_type {
                assert_eq!(qtype.0, TYPE_A);
                by_port
                    .entry(conn.tuple.sport)
                    .or_default()
                    .entry(normalized(domain))
                    .or_default()
                    .merge(stats);
            }
        }
    }
}

#[test]
fn queries_to_a_silent_server_time_out_after_the_configured_second() {
    if !first_backend_of_kernel("DNS timeouts") {
        return;
    }
    in_fresh_netns(|| {
        let topology = Topology::build();
        let _silent = TestUpstream::start(&topology.server.name, SocketAddr::new(SILENT, 53), None);
        let Some(tracer) = new_tracer(Duration::from_secs(1)) else {
            return;
        };
        tracer.register_client("dns").expect("register");
        let own = own_netns();
        let query = |name: &str| {
            let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).expect("bind");
            socket.connect((SILENT, 53)).expect("connect");
            socket
                .send(&tracer_integration::dns::query_message(
                    0x7001, name, TYPE_A,
                ))
                .expect("send");
            socket
        };
        // One client keeps its socket open; the other closes it at once, before the timeout,
        // and no call happens in between: its closed connection is first reported by the
        // call that also finds the query timed out.
        let open = query("open.silent.test");
        let open_port = open.local_addr().expect("local").port();
        let closed = query("closed.silent.test");
        let closed_port = closed.local_addr().expect("local").port();
        drop(closed);
        // Past the 1 s timeout (the sleep makes the timeout certain; nothing is asserted on
        // how long anything took).
        std::thread::sleep(Duration::from_millis(1_500));

        let mut by_port: BTreeMap<u16, BTreeMap<String, DnsStats>> = BTreeMap::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let delta = tracer.get_active_connections("dns").expect("call");
            record_by_port(&delta, own, &mut by_port);
            let seen = |port: u16| by_port.get(&port).is_some_and(|d| !d.is_empty());
            if (seen(open_port) && seen(closed_port)) || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // Two more calls: a timeout is reported once.
        for _ in 0..2 {
            let delta = tracer.get_active_connections("dns").expect("call");
            record_by_port(&delta, own, &mut by_port);
        }
        let one_timeout = DnsStats {
            timeouts: 1,
            ..DnsStats::default()
        };
        assert_eq!(
            by_port,
            BTreeMap::from([
                (
                    open_port,
                    BTreeMap::from([("open.silent.test".to_owned(), one_timeout.clone())])
                ),
                (
                    closed_port,
                    BTreeMap::from([("closed.silent.test".to_owned(), one_timeout)])
                ),
            ]),
            "timeouts by client port (open socket {open_port}, closed socket {closed_port})"
        );
        drop(open);
    });
}

#[test]
fn a_two_second_ttl_expires_the_name_while_the_connection_stays() {
    if !first_backend_of_kernel("reverse DNS TTL") {
        return;
    }
    in_fresh_netns(|| {
        let topology = Topology::build();
        let _dnsmasq = topology.dnsmasq();
        let Some(tracer) = new_tracer(Duration::from_secs(15)) else {
            return;
        };
        tracer.register_client("dns").expect("register");
        let own = own_netns();
        let short = dig(None, SERVER, "ttl.test", "A", &[]);
        assert_eq!(
            short
                .answers
                .iter()
                .map(|r| (r.ttl, r.data.as_str()))
                .collect::<Vec<_>>(),
            vec![(2, "203.0.113.9")],
            "dnsmasq's answer for ttl.test"
        );
        let answered = Instant::now();
        let long = dig(None, SERVER, "h.test", "A", &[]);
        assert_eq!(long.addresses(), vec![H_V4]);
        assert!(long.answers.iter().all(|r| r.ttl == 300));
        // Flows to both answers, kept open and moving, so each call returns them. Unconnected
        // sockets: h.test's address is S's own, whose closed port 9 answers with ICMP port
        // unreachable, which a connected socket would report as ECONNREFUSED on its next send.
        let sockets: Vec<(UdpSocket, IpAddr)> = [TTL_V4, H_V4]
            .into_iter()
            .map(|ip| {
                let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).expect("bind");
                (s, ip)
            })
            .collect();
        let call = || {
            for (s, ip) in &sockets {
                s.send_to(b"x", (*ip, 9)).expect("send");
            }
            let delta = tracer.get_active_connections("dns").expect("call");
            assert_names_only_for_returned_connections(&delta);
            let present = |ip: IpAddr| {
                delta
                    .conns
                    .iter()
                    .any(|c| c.tuple.netns == own && c.tuple.dst == ip && c.tuple.dport == 9)
            };
            assert!(
                present(TTL_V4) && present(H_V4),
                "both connections returned"
            );
            (names_of(&delta, TTL_V4), names_of(&delta, H_V4))
        };
        // Right after the answer (well within its 2 s).
        let (short_names, long_names) = call();
        let elapsed = answered.elapsed();
        assert!(
            short_names.contains(&"ttl.test".to_owned()),
            "{elapsed:?} after a 2 s answer: {short_names:?}"
        );
        assert!(long_names.contains(&"h.test".to_owned()), "{long_names:?}");
        // Past the TTL: gone from a later call while the connection is still returned. The
        // name may survive one more call (an entry in use by a returned connection is pinned
        // until the next call), so poll.
        std::thread::sleep(Duration::from_millis(2_500).saturating_sub(answered.elapsed()));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (short_names, long_names) = call();
            assert!(
                long_names.contains(&"h.test".to_owned()),
                "the 300 s name stays: {long_names:?}"
            );
            if !short_names.contains(&"ttl.test".to_owned()) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "ttl.test still named {:?} after its 2 s TTL",
                answered.elapsed()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    });
}

#[test]
fn a_query_from_a_second_netns_is_keyed_by_its_own_addresses() {
    if !first_backend_of_kernel("DNS keys across namespaces") {
        return;
    }
    in_fresh_netns(|| {
        let topology = Topology::build();
        let _dnsmasq = topology.dnsmasq();
        let Some(tracer) = new_tracer(Duration::from_secs(15)) else {
            return;
        };
        tracer.register_client("dns").expect("register");
        let own = own_netns();
        let second = netns_inode_of(&topology.second);
        let mut truth_second = BTreeMap::new();
        dig_into(
            &mut truth_second,
            Some(&topology.second.name),
            "h.test",
            "A",
            false,
        );
        let mut truth_own = BTreeMap::new();
        dig_into(&mut truth_own, None, "a.test", "A", false);

        let mut seen_second = BTreeMap::new();
        let mut seen_own = BTreeMap::new();
        let mut keys_second = Vec::new();
        let mut keys_own = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut extra_calls = 1;
        loop {
            let delta = tracer.get_active_connections("dns").expect("call");
            for (netns, seen, keys) in [
                (second, &mut seen_second, &mut keys_second),
                (own, &mut seen_own, &mut keys_own),
            ] {
                observe(&delta, netns, SERVER, seen);
                keys.extend(
                    ours(&delta, netns, SERVER)
                        .filter(|c| c.dns.is_some())
                        .map(|c| (c.tuple.src, c.dns_key().expect("a DNS key"))),
                );
            }
            let complete = queries_seen(&seen_second) >= 1 && queries_seen(&seen_own) >= 1;
            if complete {
                if extra_calls == 0 {
                    break;
                }
                extra_calls -= 1;
            }
            if Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_matches_truth(&seen_second, &truth_second);
        assert_matches_truth(&seen_own, &truth_own);
        for (keys, client) in [(&keys_second, SECOND_CLIENT), (&keys_own, CLIENT)] {
            assert_eq!(keys.len(), 1, "one carrying connection: {keys:?}");
            let (src, key) = keys[0];
            assert_eq!(src, client);
            assert_eq!(
                (key.server, key.client, key.protocol),
                (SERVER, client, Protocol::Udp)
            );
        }
    });
}

#[test]
fn two_clients_each_get_every_dns_stat_exactly_once() {
    if !first_backend_of_kernel("DNS stats for two clients") {
        return;
    }
    in_fresh_netns(|| {
        let topology = Topology::build();
        let _dnsmasq = topology.dnsmasq();
        let Some(tracer) = new_tracer(Duration::from_secs(15)) else {
            return;
        };
        for client in ["one", "two"] {
            tracer.register_client(client).expect("register");
        }
        let own = own_netns();
        let mut truth = BTreeMap::new();
        let mut seen_one = BTreeMap::new();
        let mut seen_two = BTreeMap::new();
        let (mut carriers_one, mut carriers_two) = (0, 0);
        for (i, (name, qtype, tcp)) in [
            ("h.test", "A", false),
            ("h.test", "AAAA", false),
            ("nx.test", "A", false),
            ("a.test", "A", true),
            ("h.test", "A", false),
            ("c1.test", "A", false),
            ("nx.test", "A", true),
        ]
        .into_iter()
        .enumerate()
        {
            dig_into(&mut truth, None, name, qtype, tcp);
            // Client one calls after every query, client two after every third.
            let delta = tracer.get_active_connections("one").expect("call");
            carriers_one += observe(&delta, own, SERVER, &mut seen_one);
            if i % 3 == 2 {
                let delta = tracer.get_active_connections("two").expect("call");
                carriers_two += observe(&delta, own, SERVER, &mut seen_two);
            }
        }
        carriers_one += collect_until_complete(&tracer, "one", own, &truth, &mut seen_one);
        carriers_two += collect_until_complete(&tracer, "two", own, &truth, &mut seen_two);
        assert_matches_truth(&seen_one, &truth);
        assert_matches_truth(&seen_two, &truth);
        assert_one_carrier_per_dig(carriers_one, &truth);
        assert_one_carrier_per_dig(carriers_two, &truth);
        assert_eq!(seen_one, seen_two, "both clients got the same stats");
    });
}

#[test]
fn all_hundred_addresses_of_a_name_map_back_to_it() {
    if !first_backend_of_kernel("reverse DNS of a 100-record answer") {
        return;
    }
    in_fresh_netns(|| {
        let topology = Topology::build();
        let _dnsmasq = topology.dnsmasq();
        let Some(tracer) = new_tracer(Duration::from_secs(15)) else {
            return;
        };
        tracer.register_client("dns").expect("register");
        let own = own_netns();
        // One UDP answer of 1638 bytes (an EDNS buffer of 4096 on both sides: no truncation
        // to TCP); it crosses the 1500-byte veth in two IP fragments.
        let answer = dig(None, SERVER, "many.test", "A", &["+bufsize=4096"]);
        let answered: BTreeSet<IpAddr> = answer.addresses().into_iter().collect();
        assert_eq!(answered, many_addresses().collect::<BTreeSet<_>>());
        let sockets: Vec<UdpSocket> = answered
            .iter()
            .map(|ip| {
                let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).expect("bind");
                s.connect((*ip, 9)).expect("connect");
                s.send(b"x").expect("send");
                s
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(10);
        let unnamed = loop {
            let delta = tracer.get_active_connections("dns").expect("call");
            assert_names_only_for_returned_connections(&delta);
            let unnamed: Vec<IpAddr> = answered
                .iter()
                .copied()
                .filter(|ip| {
                    let returned = delta
                        .conns
                        .iter()
                        .any(|c| c.tuple.netns == own && c.tuple.dst == *ip);
                    !returned || !names_of(&delta, *ip).contains(&"many.test".to_owned())
                })
                .collect();
            if unnamed.is_empty() || Instant::now() > deadline {
                break unnamed;
            }
            for s in &sockets {
                s.send(b"x").expect("send");
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let counters = tracer.counters().expect("counters");
        let capture: Vec<_> = counters
            .iter()
            .filter(|s| s.info.name.starts_with("dns_") || s.info.name.starts_with("packet_"))
            .map(|s| (s.info.name, s.value))
            .collect();
        assert!(
            unnamed.is_empty(),
            "{} of 100 addresses without many.test: {unnamed:?}; counters {capture:?}",
            unnamed.len()
        );
        assert_eq!(
            tracer
                .counters()
                .expect("counters")
                .value("packet_truncated"),
            0,
            "the 4096-byte snap length holds the whole answer"
        );
    });
}
