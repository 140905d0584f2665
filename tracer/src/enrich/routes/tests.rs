//! The cache rules with a fake route source and an injected clock.

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    sync::atomic::AtomicU64,
};

use super::*;
use crate::model::{ConnectionTuple, Protocol};

const OWN: u32 = 100;
const CONTAINER: u32 = 200;

fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

/// Routes: 203.0.113.0/24 via 192.0.2.2 on 7 (answered in the own namespace, or with iif 9 for a
/// forwarded packet from 198.51.100.0/24, which is routed to interface 9); 198.51.100.0/24
/// directly on 9; 192.0.2.99 is local; everything else unreachable.
struct Fake {
    gateway: Arc<Mutex<IpAddr>>,
    routes: Arc<AtomicU64>,
    links: Arc<AtomicU64>,
    fail: Arc<std::sync::atomic::AtomicBool>,
    silent: Arc<std::sync::atomic::AtomicBool>,
    asked: Arc<Mutex<Vec<Query>>>,
}

impl Fake {
    fn new() -> Self {
        Self {
            gateway: Arc::new(Mutex::new(v4(192, 0, 2, 2))),
            routes: Arc::default(),
            links: Arc::default(),
            fail: Arc::default(),
            silent: Arc::default(),
            asked: Arc::default(),
        }
    }

    fn handle(&self) -> Self {
        Self {
            gateway: self.gateway.clone(),
            routes: self.routes.clone(),
            links: self.links.clone(),
            fail: self.fail.clone(),
            silent: self.silent.clone(),
            asked: self.asked.clone(),
        }
    }
}

impl RouteSource for Fake {
    fn route(&mut self, query: &Query) -> Answer {
        self.routes.fetch_add(1, Ordering::Relaxed);
        self.asked.lock().push(*query);
        if self.fail.load(Ordering::Relaxed) {
            return Answer::Failed;
        }
        if self.silent.load(Ordering::Relaxed) {
            return Answer::Unanswered;
        }
        match query.dst {
            IpAddr::V4(d) if d.octets()[..3] == [203, 0, 113] => {
                if query.iif.is_some_and(|i| i != 9) {
                    return Answer::NoRoute(libc::EHOSTUNREACH);
                }
                Answer::Route {
                    gateway: Some(*self.gateway.lock()),
                    oif: 7,
                }
            }
            IpAddr::V4(d) if d.octets()[..3] == [198, 51, 100] => Answer::Route {
                gateway: None,
                oif: 9,
            },
            IpAddr::V4(d) if d == Ipv4Addr::new(192, 0, 2, 99) => Answer::Local { oif: 1 },
            IpAddr::V6(_) => Answer::Route {
                gateway: Some(IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1))),
                oif: 7,
            },
            _ => Answer::NoRoute(libc::ENETUNREACH),
        }
    }

    fn link_name(&mut self, index: u32) -> Option<Arc<str>> {
        self.links.fetch_add(1, Ordering::Relaxed);
        match index {
            7 => Some(Arc::from("uplink")),
            9 => Some(Arc::from("veth-c")),
            _ => None,
        }
    }
}

// Shared across threads in the concurrency test.
struct Harness {
    routes: Routes,
    fake: Fake,
    now: Arc<Mutex<Instant>>,
}

impl Harness {
    fn new(config: RoutesConfig) -> Self {
        let fake = Fake::new();
        let now = Arc::new(Mutex::new(Instant::now()));
        let clock_now = now.clone();
        let routes = Routes::with_source(
            &config,
            Box::new(fake.handle()),
            Some(OWN),
            Arc::new(move || *clock_now.lock()),
        );
        Self { routes, fake, now }
    }

    fn advance(&self, by: Duration) {
        let mut now = self.now.lock();
        *now += by;
    }

    fn counters(&self) -> [u64; 8] {
        let v = self.routes.counters.values();
        let mut out = [0; 8];
        for (o, v) in out.iter_mut().zip(v) {
            *o = v;
        }
        out
    }

    /// (hits, misses, expired, evicted, negative, failed).
    fn hme(&self) -> (u64, u64, u64, u64, u64, u64) {
        let [h, m, x, e, n, f, _, _] = self.counters();
        (h, m, x, e, n, f)
    }

    fn kernel_routes(&self) -> u64 {
        self.fake.routes.load(Ordering::Relaxed)
    }
}

fn conn(netns: u32, src: IpAddr, dst: IpAddr, dport: u16) -> ConnectionStats {
    ConnectionStats::new(
        ConnectionTuple {
            src,
            dst,
            sport: 40000,
            dport,
            pid: 1,
            netns,
            protocol: Protocol::Tcp,
        },
        Direction::Outgoing,
        u64::from(dport),
    )
}

fn uplink(gateway: IpAddr) -> Option<Via> {
    Some(Via {
        gateway: Some(gateway),
        interface_index: 7,
        interface_name: Some(Arc::from("uplink")),
    })
}

#[test]
fn config_rejects_zero_sizes_and_ttls() {
    assert!(RoutesConfig::default().validate().is_ok());
    for bad in [
        RoutesConfig {
            ttl: Duration::ZERO,
            ..RoutesConfig::default()
        },
        RoutesConfig {
            negative_ttl: Duration::ZERO,
            ..RoutesConfig::default()
        },
        RoutesConfig {
            max_entries: 0,
            ..RoutesConfig::default()
        },
        RoutesConfig {
            netlink_timeout: Duration::ZERO,
            ..RoutesConfig::default()
        },
    ] {
        assert!(
            matches!(bad.validate(), Err(Error::InvalidConfig(_))),
            "{bad:?}"
        );
    }
}

#[test]
fn only_outgoing_connections_to_other_hosts_are_looked_up() {
    let h = Harness::new(RoutesConfig::default());
    let src = v4(192, 0, 2, 1);
    let mut incoming = conn(OWN, src, v4(203, 0, 113, 2), 1);
    incoming.direction = Direction::Incoming;
    let mut unknown = conn(OWN, src, v4(203, 0, 113, 2), 2);
    unknown.direction = Direction::Unknown;
    let mut intra = conn(OWN, src, v4(203, 0, 113, 2), 3);
    intra.intra_host = true;
    let loopback = conn(OWN, v4(127, 0, 0, 1), v4(127, 0, 0, 2), 4);
    let unspecified = conn(OWN, src, v4(0, 0, 0, 0), 5);
    let v6_loopback = conn(
        OWN,
        IpAddr::V6(Ipv6Addr::LOCALHOST),
        IpAddr::V6(Ipv6Addr::LOCALHOST),
        6,
    );
    let mixed = conn(OWN, IpAddr::V6(Ipv6Addr::LOCALHOST), v4(203, 0, 113, 2), 7);
    let mut conns = vec![
        incoming,
        unknown,
        intra,
        loopback,
        unspecified,
        v6_loopback,
        mixed,
    ];
    h.routes.resolve(&mut conns);
    assert_eq!(h.kernel_routes(), 0);
    assert!(conns.iter().all(|c| c.via.is_none()));
    assert_eq!(h.hme(), (0, 0, 0, 0, 0, 0));

    let mut out = vec![conn(OWN, src, v4(203, 0, 113, 2), 80)];
    h.routes.resolve(&mut out);
    assert_eq!(out[0].via, uplink(v4(192, 0, 2, 2)));
    assert_eq!(
        h.fake.asked.lock().as_slice(),
        &[Query {
            dst: v4(203, 0, 113, 2),
            src: Some(src),
            iif: None
        }]
    );
}

#[test]
fn a_warm_cache_asks_the_kernel_nothing_and_counts_hits() {
    let h = Harness::new(RoutesConfig::default());
    let src = v4(192, 0, 2, 1);
    // Three connections, two keys (same source and destination, different ports).
    let batch = || {
        vec![
            conn(OWN, src, v4(203, 0, 113, 2), 80),
            conn(OWN, src, v4(203, 0, 113, 2), 443),
            conn(OWN, src, v4(203, 0, 113, 3), 80),
        ]
    };
    let mut first = batch();
    h.routes.resolve(&mut first);
    assert_eq!(h.kernel_routes(), 2);
    assert_eq!(h.fake.links.load(Ordering::Relaxed), 1, "name cached");
    // The second connection of the first key waited for the first's lookup: a hit.
    assert_eq!(h.hme(), (1, 2, 0, 0, 0, 0));
    assert!(first.iter().all(|c| c.via == uplink(v4(192, 0, 2, 2))));
    for _ in 0..5 {
        let mut again = batch();
        h.routes.resolve(&mut again);
        assert!(again.iter().all(|c| c.via == uplink(v4(192, 0, 2, 2))));
    }
    assert_eq!(h.kernel_routes(), 2);
    assert_eq!(h.hme(), (16, 2, 0, 0, 0, 0));
    assert_eq!(h.counters()[7], 2, "entries gauge");
}

#[test]
fn entries_expire_after_the_ttl_and_the_new_route_is_reported() {
    let h = Harness::new(RoutesConfig {
        ttl: Duration::from_secs(10),
        ..RoutesConfig::default()
    });
    let src = v4(192, 0, 2, 1);
    let dst = v4(203, 0, 113, 2);
    let mut conns = vec![conn(OWN, src, dst, 80)];
    h.routes.resolve(&mut conns);
    *h.fake.gateway.lock() = v4(192, 0, 2, 18);
    h.advance(Duration::from_secs(9));
    let mut conns = vec![conn(OWN, src, dst, 80)];
    h.routes.resolve(&mut conns);
    assert_eq!(conns[0].via, uplink(v4(192, 0, 2, 2)), "still cached");
    h.advance(Duration::from_secs(1));
    let mut conns = vec![conn(OWN, src, dst, 80), conn(OWN, src, dst, 81)];
    h.routes.resolve(&mut conns);
    assert_eq!(conns[0].via, uplink(v4(192, 0, 2, 18)));
    assert_eq!(conns[1].via, uplink(v4(192, 0, 2, 18)));
    // One expiry (the entry is dropped, the second connection waits for the new lookup).
    assert_eq!(h.hme(), (2, 2, 1, 0, 0, 0));
    assert_eq!(h.kernel_routes(), 2);
}

#[test]
fn negative_answers_and_failures_are_cached_for_the_negative_ttl() {
    let h = Harness::new(RoutesConfig {
        ttl: Duration::from_secs(100),
        negative_ttl: Duration::from_secs(5),
        ..RoutesConfig::default()
    });
    let src = v4(192, 0, 2, 1);
    let unreachable = conn(OWN, src, v4(198, 18, 0, 1), 80);
    let local = conn(OWN, src, v4(192, 0, 2, 99), 80);
    let mut conns = vec![unreachable.clone(), local.clone()];
    h.routes.resolve(&mut conns);
    assert!(conns.iter().all(|c| c.via.is_none()));
    assert_eq!(h.hme(), (0, 2, 0, 0, 2, 0));
    h.advance(Duration::from_secs(4));
    h.routes.resolve(&mut conns);
    assert_eq!(h.kernel_routes(), 2, "negative entries answer");
    assert_eq!(h.hme(), (2, 2, 0, 0, 2, 0));
    h.advance(Duration::from_secs(1));
    h.fake.fail.store(true, Ordering::Relaxed);
    let mut conns = vec![unreachable, local, conn(OWN, src, v4(203, 0, 113, 2), 80)];
    h.routes.resolve(&mut conns);
    assert!(conns.iter().all(|c| c.via.is_none()));
    assert_eq!(h.hme(), (2, 5, 2, 0, 2, 3));
    h.advance(Duration::from_secs(4));
    h.routes.resolve(&mut conns);
    assert_eq!(
        h.kernel_routes(),
        5,
        "failures are not retried within the negative TTL"
    );
    h.fake.fail.store(false, Ordering::Relaxed);
    h.advance(Duration::from_secs(1));
    h.routes.resolve(&mut conns);
    assert_eq!(conns[2].via, uplink(v4(192, 0, 2, 2)));
}

#[test]
fn a_container_connection_is_routed_as_forwarded_from_its_host_interface() {
    let h = Harness::new(RoutesConfig::default());
    let src = v4(198, 51, 100, 2);
    let mut conns = vec![conn(CONTAINER, src, v4(203, 0, 113, 2), 80)];
    h.routes.resolve(&mut conns);
    assert_eq!(conns[0].via, uplink(v4(192, 0, 2, 2)));
    assert_eq!(
        h.fake.asked.lock().as_slice(),
        &[
            Query {
                dst: src,
                src: None,
                iif: None
            },
            Query {
                dst: v4(203, 0, 113, 2),
                src: Some(src),
                iif: Some(9)
            }
        ]
    );
    // The same addresses in the tracer's namespace are another key.
    let mut own = vec![conn(OWN, src, v4(203, 0, 113, 2), 80)];
    h.routes.resolve(&mut own);
    assert_eq!(h.hme(), (0, 2, 0, 0, 0, 0));
    // A container source the host has no route to: no Via, a failure.
    let mut lost = vec![
        conn(CONTAINER, v4(192, 0, 2, 99), v4(203, 0, 113, 2), 80),
        conn(CONTAINER, v4(0, 0, 0, 0), v4(203, 0, 113, 2), 80),
    ];
    h.routes.resolve(&mut lost);
    assert!(lost.iter().all(|c| c.via.is_none()));
    assert_eq!(h.hme(), (0, 4, 0, 0, 0, 2));
}

#[test]
fn the_cache_keeps_at_most_max_entries_dropping_the_least_recently_used() {
    let h = Harness::new(RoutesConfig {
        max_entries: 2,
        ..RoutesConfig::default()
    });
    let src = v4(192, 0, 2, 1);
    let a = conn(OWN, src, v4(203, 0, 113, 1), 80);
    let b = conn(OWN, src, v4(203, 0, 113, 2), 80);
    let c = conn(OWN, src, v4(203, 0, 113, 3), 80);
    h.routes.resolve(&mut [a.clone(), b.clone()]);
    h.routes.resolve(&mut [a.clone()]); // a is now the most recent
    h.routes.resolve(&mut [c.clone()]); // evicts b
    assert_eq!(h.hme(), (1, 3, 0, 1, 0, 0));
    h.routes.resolve(&mut [a.clone(), c.clone()]);
    assert_eq!(h.hme(), (3, 3, 0, 1, 0, 0));
    h.routes.resolve(&mut [b]);
    assert_eq!(h.hme(), (3, 4, 0, 2, 0, 0));
    assert_eq!(h.counters()[7], 2);
}

#[test]
fn disabled_does_nothing_and_unavailable_counts_what_it_could_not_enrich() {
    let src = v4(192, 0, 2, 1);
    let mut conns = vec![
        conn(OWN, src, v4(203, 0, 113, 2), 80),
        conn(OWN, src, v4(127, 0, 0, 1), 80),
    ];
    let disabled = Routes::start(&RoutesConfig {
        enabled: false,
        ..RoutesConfig::default()
    });
    disabled.resolve(&mut conns);
    assert!(disabled.counters.values().iter().all(|v| *v == 0));
    let unavailable = Routes {
        state: State::Unavailable,
        counters: RouteCounters::default(),
    };
    unavailable.resolve(&mut conns);
    unavailable.resolve(&mut conns);
    assert!(conns.iter().all(|c| c.via.is_none()));
    let mut out = Vec::new();
    unavailable.collect(&mut out);
    let lost = out
        .iter()
        .find(|s| s.info.name == "route_unavailable")
        .map(|s| s.value);
    assert_eq!(lost, Some(2));
}

#[test]
fn routes_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Routes>();
}

#[test]
fn concurrent_callers_share_the_cache_and_every_connection_is_counted_once() {
    let h = Arc::new(Harness::new(RoutesConfig::default()));
    let src = v4(192, 0, 2, 1);
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let h = h.clone();
            std::thread::spawn(move || {
                for round in 0..50u16 {
                    let mut conns: Vec<ConnectionStats> = (0..20u8)
                        .map(|d| conn(OWN, src, v4(203, 0, 113, d), round))
                        .collect();
                    h.routes.resolve(&mut conns);
                    assert!(conns.iter().all(|c| c.via == uplink(v4(192, 0, 2, 2))));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let (hits, misses, expired, evicted, negative, failed) = h.hme();
    assert_eq!(hits + misses, 4 * 50 * 20);
    // Two callers may both miss a key before either stores it: at most one miss per key and
    // caller.
    assert!((20..=80).contains(&misses), "{misses}");
    assert_eq!(misses, h.kernel_routes());
    assert_eq!((expired, evicted, negative, failed), (0, 0, 0, 0));
}

#[test]
fn a_source_that_stops_answering_costs_a_call_at_most_two_questions() {
    let h = Harness::new(RoutesConfig {
        negative_ttl: Duration::from_secs(5),
        ..RoutesConfig::default()
    });
    h.fake.silent.store(true, Ordering::Relaxed);
    let src = v4(192, 0, 2, 1);
    let batch = |round: u8| -> Vec<ConnectionStats> {
        (0..10u8)
            .map(|d| conn(OWN, src, v4(203, 0, 113, round * 10 + d), 80))
            .collect()
    };
    let mut conns = batch(0);
    h.routes.resolve(&mut conns);
    assert!(conns.iter().all(|c| c.via.is_none()));
    assert_eq!(h.kernel_routes(), 2);
    assert_eq!(h.hme(), (0, 10, 0, 0, 0, 10));
    // Cached as failures; the next call with new keys may ask twice again.
    h.routes.resolve(&mut conns);
    assert_eq!(h.kernel_routes(), 2);
    h.fake.silent.store(false, Ordering::Relaxed);
    let mut conns = batch(1);
    h.routes.resolve(&mut conns);
    assert!(conns.iter().all(|c| c.via == uplink(v4(192, 0, 2, 2))));
    assert_eq!(h.kernel_routes(), 12);
}
