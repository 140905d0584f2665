//! Rule-by-rule tests of the pipeline through its public API.

use std::{
    sync::{Arc, mpsc},
    thread,
    time::Duration,
};

use rustc_hash::FxHashMap;

use super::*;
use crate::{
    model::{DnsQueryType, DnsStats, DomainStats, HttpKey, HttpMethod, Protocol},
    state::test_support::{conn, conn_between, ip},
};

fn state() -> NetworkState {
    NetworkState::new(StateConfig::default()).unwrap()
}

fn id(name: &str) -> ClientId {
    ClientId::new(name).unwrap()
}

fn tcp(cookie: u64, sent: u64, recv: u64) -> ConnectionStats {
    let mut c = conn(cookie, 40000 + cookie as u16);
    c.monotonic.sent_bytes = sent;
    c.monotonic.recv_bytes = recv;
    c
}

fn call(s: &NetworkState, client: &ClientId, active: Vec<ConnectionStats>) -> Delta {
    s.get_delta(
        client,
        1,
        active,
        DnsStatsBatch::default(),
        UsmStats::default(),
        &CounterSet::default(),
    )
    .unwrap()
}

fn sent_by_cookie(delta: &Delta) -> Vec<(u64, u64, bool)> {
    delta
        .conns
        .iter()
        .map(|c| (c.cookie, c.last.sent_bytes, c.is_closed))
        .collect()
}

#[test]
fn new_client_first_call_reports_last_equal_to_monotonic() {
    let s = state();
    let d = call(&s, &id("a"), vec![tcp(1, 100, 50)]);
    assert_eq!(d.conns.len(), 1);
    assert_eq!(d.conns[0].last, d.conns[0].monotonic);
}

#[test]
fn later_call_reports_only_what_changed_since_previous_call() {
    let s = state();
    let a = id("a");
    call(&s, &a, vec![tcp(1, 100, 50)]);
    let d = call(&s, &a, vec![tcp(1, 130, 50)]);
    assert_eq!(d.conns[0].last.sent_bytes, 30);
    assert_eq!(d.conns[0].last.recv_bytes, 0);
    assert_eq!(d.conns[0].monotonic.sent_bytes, 130);
}

#[test]
fn connection_with_zero_delta_is_not_reported() {
    let s = state();
    let a = id("a");
    call(&s, &a, vec![tcp(1, 100, 50), tcp(2, 1, 1)]);
    let d = call(&s, &a, vec![tcp(1, 100, 50), tcp(2, 2, 1)]);
    assert_eq!(sent_by_cookie(&d), vec![(2, 1, false)]);
    assert_eq!(
        s.client_tracked(&a),
        Some(2),
        "idle connections stay tracked"
    );
}

#[test]
fn connection_never_moving_is_never_reported() {
    let s = state();
    assert!(call(&s, &id("a"), vec![tcp(1, 0, 0)]).conns.is_empty());
}

#[test]
fn duplicate_cookie_with_same_tuple_in_one_call_is_one_connection_with_max_counters() {
    let s = state();
    let a = id("a");
    call(&s, &a, vec![tcp(1, 100, 10)]);
    let d = call(&s, &a, vec![tcp(1, 150, 10), tcp(1, 120, 40)]);
    assert_eq!(d.conns.len(), 1);
    assert_eq!(
        (d.conns[0].last.sent_bytes, d.conns[0].last.recv_bytes),
        (50, 30)
    );
    let d = call(&s, &a, vec![tcp(1, 150, 40)]);
    assert!(d.conns.is_empty(), "the merged maximum was remembered");
}

#[test]
fn duplicate_cookie_with_different_tuple_is_a_collision_where_newest_wins_with_full_counters() {
    let s = state();
    let a = id("a");
    call(&s, &a, vec![tcp(1, 100, 0)]);
    let mut other = conn(1, 5555);
    other.monotonic.sent_bytes = 30;
    other.last_update_ns = 10;
    let d = call(&s, &a, vec![tcp(1, 110, 0), other]);
    assert_eq!(d.conns.len(), 1);
    assert_eq!(d.conns[0].tuple.sport, 5555);
    assert_eq!(
        d.conns[0].last.sent_bytes, 30,
        "snapshot dropped: full monotonic"
    );
    assert_eq!(d.telemetry.stats_cookie_collisions, 1);
}

#[test]
fn closed_copy_wins_over_active_copy_of_the_same_connection() {
    let s = state();
    let a = id("a");
    call(&s, &a, vec![tcp(1, 100, 0)]);
    let mut closed = tcp(1, 180, 0);
    closed.monotonic.tcp_closed = 1;
    s.store_closed(closed);
    let d = call(&s, &a, vec![tcp(1, 150, 0)]);
    assert_eq!(sent_by_cookie(&d), vec![(1, 80, true)]);
    assert_eq!(d.conns[0].last.tcp_closed, 1);
    assert_eq!(
        s.client_tracked(&a),
        Some(0),
        "closed connections leave the snapshot"
    );
}

#[test]
fn closed_copy_with_lower_counters_than_active_copy_takes_the_max() {
    let s = state();
    let a = id("a");
    call(&s, &a, vec![tcp(1, 100, 0)]);
    s.store_closed(tcp(1, 120, 0));
    let d = call(&s, &a, vec![tcp(1, 150, 0)]);
    assert_eq!(sent_by_cookie(&d), vec![(1, 50, true)]);
}

#[test]
fn closed_and_active_with_same_cookie_but_different_tuple_collide_and_newest_wins() {
    let s = state();
    let a = id("a");
    call(&s, &a, vec![tcp(1, 100, 0)]);
    let mut closed = conn(1, 6000);
    closed.monotonic.sent_bytes = 7;
    closed.last_update_ns = 1;
    s.store_closed(closed);
    let mut active = tcp(1, 150, 0);
    active.last_update_ns = 2;
    let d = call(&s, &a, vec![active]);
    assert_eq!(sent_by_cookie(&d), vec![(1, 150, false)]);
    assert_eq!(d.telemetry.stats_cookie_collisions, 1);
    let d = call(&s, &a, vec![tcp(1, 160, 0)]);
    assert_eq!(
        sent_by_cookie(&d),
        vec![(1, 10, false)],
        "the winner stays tracked"
    );
}

#[test]
fn counter_going_down_is_an_underflow_counted_and_never_reported_negative() {
    let s = state();
    let a = id("a");
    call(&s, &a, vec![tcp(1, 100, 100)]);
    let d = call(&s, &a, vec![tcp(1, 90, 120)]);
    assert_eq!(
        (d.conns[0].last.sent_bytes, d.conns[0].last.recv_bytes),
        (0, 20)
    );
    assert_eq!(d.conns[0].monotonic.sent_bytes, 100);
    assert_eq!(d.telemetry.stats_underflows, 1);
    let d = call(&s, &a, vec![tcp(1, 105, 120)]);
    assert_eq!(
        d.conns[0].last.sent_bytes, 5,
        "measured from the larger value"
    );
}

#[test]
fn closed_connection_reaches_only_clients_registered_before_it_was_stored() {
    let s = state();
    let (a, b) = (id("a"), id("b"));
    s.register_client(&a, 0).unwrap();
    s.store_closed(tcp(1, 10, 0));
    s.register_client(&b, 0).unwrap();
    s.store_closed(tcp(2, 10, 0));
    assert_eq!(
        sent_by_cookie(&call(&s, &a, vec![])),
        vec![(1, 10, true), (2, 10, true)]
    );
    assert_eq!(sent_by_cookie(&call(&s, &b, vec![])), vec![(2, 10, true)]);
}

#[test]
fn closed_connection_reaches_each_client_exactly_once() {
    let s = state();
    let (a, b) = (id("a"), id("b"));
    s.register_client(&a, 0).unwrap();
    s.register_client(&b, 0).unwrap();
    s.store_closed(tcp(1, 10, 0));
    assert_eq!(call(&s, &a, vec![]).conns.len(), 1);
    assert_eq!(call(&s, &a, vec![]).conns.len(), 0);
    assert_eq!(call(&s, &b, vec![]).conns.len(), 1);
    assert_eq!(call(&s, &b, vec![]).conns.len(), 0);
    assert_eq!(
        s.closed_len(),
        0,
        "stored once, dropped once every client read it"
    );
}

#[test]
fn closed_connections_without_any_client_are_discarded() {
    let s = state();
    s.store_closed(tcp(1, 10, 0));
    assert_eq!(s.closed_discarded_without_clients(), 1);
    assert!(call(&s, &id("late"), vec![]).conns.is_empty());
}

#[test]
fn closed_connection_reports_only_what_it_did_after_its_last_active_report() {
    let s = state();
    let a = id("a");
    call(&s, &a, vec![tcp(1, 100, 0)]);
    s.store_closed(tcp(1, 130, 0));
    assert_eq!(sent_by_cookie(&call(&s, &a, vec![])), vec![(1, 30, true)]);
}

#[test]
fn a_connection_idle_across_a_call_and_then_closed_is_reported_closed_once_with_zero_delta() {
    let s = state();
    let a = id("a");
    let mut udp = tcp(1, 100, 20);
    udp.tuple.protocol = Protocol::Udp;
    call(&s, &a, vec![udp.clone()]);
    assert!(call(&s, &a, vec![udp.clone()]).conns.is_empty(), "idle");
    s.store_closed(udp);
    let d = call(&s, &a, vec![]);
    assert_eq!(sent_by_cookie(&d), vec![(1, 0, true)]);
    assert!(d.conns[0].last.is_zero());
    assert!(call(&s, &a, vec![]).conns.is_empty(), "once");
}

#[test]
fn active_connections_come_before_closed_ones() {
    let s = state();
    let a = id("a");
    s.register_client(&a, 0).unwrap();
    s.store_closed(tcp(1, 1, 0));
    let d = call(&s, &a, vec![tcp(2, 1, 0), tcp(3, 1, 0)]);
    assert_eq!(
        d.conns.iter().map(|c| c.is_closed).collect::<Vec<_>>(),
        [false, false, true]
    );
}

#[test]
fn clients_have_independent_snapshots() {
    let s = state();
    let (a, b) = (id("a"), id("b"));
    call(&s, &a, vec![tcp(1, 100, 0)]);
    call(&s, &a, vec![tcp(1, 150, 0)]);
    let d = call(&s, &b, vec![tcp(1, 150, 0)]);
    assert_eq!(d.conns[0].last.sent_bytes, 150);
    let d = call(&s, &a, vec![tcp(1, 170, 0)]);
    assert_eq!(d.conns[0].last.sent_bytes, 20);
}

#[test]
fn vanished_connection_is_swept_from_the_snapshot() {
    let s = state();
    let a = id("a");
    call(&s, &a, vec![tcp(1, 1, 0), tcp(2, 1, 0)]);
    call(&s, &a, vec![tcp(2, 1, 0)]);
    assert_eq!(s.client_tracked(&a), Some(1));
}

#[test]
fn clients_beyond_the_cap_are_refused_and_counted() {
    let s = NetworkState::new(StateConfig {
        max_clients: 2,
        ..Default::default()
    })
    .unwrap();
    s.register_client(&id("a"), 0).unwrap();
    call(&s, &id("b"), vec![]);
    let refused = s.get_delta(
        &id("c"),
        0,
        vec![],
        DnsStatsBatch::default(),
        UsmStats::default(),
        &CounterSet::default(),
    );
    assert_eq!(refused.unwrap_err(), ClientError::TooManyClients { max: 2 });
    assert_eq!(
        s.register_client(&id("d"), 0),
        Err(ClientError::TooManyClients { max: 2 })
    );
    assert_eq!(s.telemetry().clients_refused, 2);
    assert_eq!(call(&s, &id("a"), vec![]).telemetry.clients_refused, 2);
    assert_eq!(call(&s, &id("a"), vec![]).telemetry.clients_refused, 0);
}

#[test]
fn hostile_client_ids_do_not_break_anything() {
    let s = state();
    assert!(ClientId::new(&"x".repeat(10_000)).is_err());
    let empty = id("");
    let odd = id("\0\u{feff}💥/../");
    assert_eq!(call(&s, &empty, vec![tcp(1, 1, 0)]).conns.len(), 1);
    assert_eq!(call(&s, &odd, vec![tcp(1, 1, 0)]).conns.len(), 1);
    assert_eq!(s.client_count(), 2);
}

#[test]
fn idle_client_expires_and_returns_as_a_new_client() {
    let s = state();
    let a = id("a");
    let expiry = s.config().client_expiry_ns;
    s.get_delta(
        &a,
        1_000,
        vec![tcp(1, 100, 0)],
        DnsStatsBatch::default(),
        UsmStats::default(),
        &CounterSet::default(),
    )
    .unwrap();
    assert_eq!(s.remove_expired_clients(1_000 + expiry - 1), 0);
    assert_eq!(s.remove_expired_clients(1_000 + expiry), 1);
    assert_eq!(s.client_count(), 0);
    s.store_closed(tcp(9, 1, 0));
    let d = call(&s, &a, vec![tcp(1, 120, 0)]);
    assert_eq!(
        sent_by_cookie(&d),
        vec![(1, 120, false)],
        "new again: cumulative counters"
    );
}

#[test]
fn new_connections_beyond_per_client_cap_are_not_reported_but_counted_and_retried() {
    let s = NetworkState::new(StateConfig {
        max_tracked_per_client: 2,
        ..Default::default()
    })
    .unwrap();
    let a = id("a");
    let d = call(&s, &a, vec![tcp(1, 1, 0), tcp(2, 1, 0), tcp(3, 5, 0)]);
    assert_eq!(d.conns.len(), 2);
    assert_eq!(d.telemetry.conn_dropped, 1);
    let d = call(&s, &a, vec![tcp(2, 1, 0), tcp(3, 7, 0)]);
    assert_eq!(
        sent_by_cookie(&d),
        vec![(3, 7, false)],
        "retried with its full counters"
    );
    assert_eq!(d.telemetry.conn_dropped, 0);
    assert_eq!(s.telemetry().conn_dropped, 1);
}

#[test]
fn closed_store_overflow_is_charged_to_the_client_that_missed_connections() {
    let s = NetworkState::new(StateConfig {
        max_closed_connections: 2,
        ..Default::default()
    })
    .unwrap();
    let (a, b) = (id("a"), id("b"));
    s.register_client(&a, 0).unwrap();
    s.register_client(&b, 0).unwrap();
    s.store_closed(tcp(1, 1, 0));
    s.store_closed(tcp(2, 1, 0));
    assert_eq!(call(&s, &a, vec![]).conns.len(), 2);
    s.store_closed(tcp(3, 1, 0));
    let da = call(&s, &a, vec![]);
    let db = call(&s, &b, vec![]);
    assert_eq!((da.conns.len(), da.telemetry.closed_conn_dropped), (1, 0));
    assert_eq!((db.conns.len(), db.telemetry.closed_conn_dropped), (2, 1));
}

#[test]
fn removed_connections_report_full_counters_if_they_come_back() {
    let s = state();
    let a = id("a");
    call(&s, &a, vec![tcp(1, 100, 0)]);
    s.remove_connections(&[1]);
    assert_eq!(s.client_tracked(&a), Some(0));
    assert_eq!(
        sent_by_cookie(&call(&s, &a, vec![tcp(1, 100, 0)])),
        vec![(1, 100, false)]
    );
}

fn dns_conn() -> ConnectionStats {
    let mut c = conn_between(ip(10, 0, 0, 1), 5000, ip(10, 0, 0, 53), 53, Protocol::Udp);
    c.monotonic.sent_bytes = 1;
    c
}

fn dns_batch(timeouts: u32) -> DnsStatsBatch {
    let mut stats = DomainStats::default();
    stats.0.entry(Arc::from("example.com")).or_default().insert(
        DnsQueryType(1),
        DnsStats {
            timeouts,
            ..Default::default()
        },
    );
    let mut batch = DnsStatsBatch::default();
    batch.0.insert(dns_conn().dns_key().unwrap(), stats);
    batch
}

fn dns_timeouts(d: &Delta) -> Option<u32> {
    let stats = d.conns.iter().find_map(|c| c.dns.as_ref())?;
    Some(stats.0[&Arc::<str>::from("example.com")][&DnsQueryType(1)].timeouts)
}

#[test]
fn dns_stats_reach_every_client_once_attached_to_their_connection() {
    let s = state();
    let (a, b) = (id("a"), id("b"));
    s.register_client(&a, 0).unwrap();
    s.register_client(&b, 0).unwrap();
    let d = s
        .get_delta(
            &a,
            1,
            vec![dns_conn()],
            dns_batch(2),
            UsmStats::default(),
            &CounterSet::default(),
        )
        .unwrap();
    assert_eq!(dns_timeouts(&d), Some(2));
    let mut moved = dns_conn();
    moved.monotonic.sent_bytes = 2;
    let d = s
        .get_delta(
            &b,
            1,
            vec![moved.clone()],
            dns_batch(3),
            UsmStats::default(),
            &CounterSet::default(),
        )
        .unwrap();
    assert_eq!(dns_timeouts(&d), Some(5), "b gets a's batch and its own");
    moved.monotonic.sent_bytes = 3;
    let d = call(&s, &a, vec![moved]);
    assert_eq!(
        dns_timeouts(&d),
        Some(3),
        "a gets only what it had not received"
    );
}

fn http_key(path: &str) -> HttpKey {
    HttpKey {
        client: "10.0.0.1:5000".parse().unwrap(),
        server: "10.0.0.2:80".parse().unwrap(),
        path: Arc::from(path),
        path_complete: true,
        method: HttpMethod::Get,
    }
}

/// A batch of `latencies.len()` requests to `path` answered `status`.
fn http_batch(path: &str, status: u16, latencies: &[u64]) -> UsmStats {
    let mut usm = UsmStats::default();
    let stats = usm.http.entry(http_key(path)).or_default();
    for &l in latencies {
        stats.add(status, l);
    }
    usm
}

fn call_with_usm(s: &NetworkState, client: &ClientId, usm: UsmStats) -> Delta {
    s.get_delta(
        client,
        1,
        vec![],
        DnsStatsBatch::default(),
        usm,
        &CounterSet::default(),
    )
    .unwrap()
}

/// Requests of `path` with `status` in a delta (0 when absent).
fn requests(delta: &Delta, path: &str, status: u16) -> u64 {
    delta
        .usm
        .http
        .get(&http_key(path))
        .and_then(|s| s.0.get(&status))
        .map_or(0, |r| r.count)
}

#[test]
fn usm_stats_pass_through_to_every_client_once() {
    let s = state();
    let (a, b) = (id("a"), id("b"));
    s.register_client(&a, 0).unwrap();
    s.register_client(&b, 0).unwrap();
    let usm = http_batch("/", 200, &[10, 20, 30, 40]);
    let d = call_with_usm(&s, &a, usm.clone());
    assert_eq!(requests(&d, "/", 200), 4);
    let d = call_with_usm(&s, &b, usm);
    assert_eq!(requests(&d, "/", 200), 8);
    assert_eq!(requests(&call(&s, &a, vec![]), "/", 200), 4);
    assert!(call(&s, &a, vec![]).usm.is_empty());
}

#[test]
fn each_http_transaction_reaches_each_of_two_clients_exactly_once_with_merged_sketches() {
    // The HTTP source hands each call what arrived since the previous take, whoever calls;
    // every registered client must see every transaction once, summed over its calls, with
    // sketches merged across the batches it missed.
    let s = state();
    let (a, b) = (id("a"), id("b"));
    s.register_client(&a, 0).unwrap();
    s.register_client(&b, 0).unwrap();
    let batches = [
        http_batch("/users/*", 200, &[1_000, 2_000]),
        http_batch("/users/*", 500, &[9_000]),
        http_batch("/users/*", 200, &[3_000]),
        http_batch("/orders", 200, &[4_000, 5_000, 6_000]),
        UsmStats::default(),
    ];
    // a, b, a, a, b: each call brings the next batch.
    let order = [&a, &b, &a, &a, &b];
    let mut seen: FxHashMap<&str, (u64, u64, u64)> = FxHashMap::default();
    let mut latest = FxHashMap::default();
    for (client, batch) in order.iter().zip(batches) {
        let d = call_with_usm(&s, client, batch);
        let e = seen.entry(client.as_str()).or_default();
        e.0 += requests(&d, "/users/*", 200);
        e.1 += requests(&d, "/users/*", 500);
        e.2 += requests(&d, "/orders", 200);
        latest.insert(client.as_str(), d);
    }
    for client in ["a", "b"] {
        assert_eq!(seen[client], (3, 1, 3), "client {client}");
    }
    // b's last call merged batches 3 and 4 (its first had read 1 and 2): its /users/* 200
    // stats hold the 3 000 ns request of batch 3 and none of batch 1's.
    let users = &latest["b"].usm.http[&http_key("/users/*")].0[&200];
    assert_eq!(users.count, 1);
    assert_eq!(users.first_latency_ns, 3_000);
    // a's last call read batch 4 alone: its 3 requests in one sketch.
    let orders = &latest["a"].usm.http[&http_key("/orders")].0[&200];
    let sketch = orders.latencies.as_ref().unwrap();
    assert_eq!((orders.count, sketch.count()), (3, 3));
    let p50 = orders.latency_quantile(0.5).unwrap();
    assert!((p50 - 5_000.0).abs() <= 50.0, "{p50}");
    // Nothing more for anyone.
    assert!(call(&s, &a, vec![]).usm.is_empty());
    assert!(call(&s, &b, vec![]).usm.is_empty());
}

#[test]
fn telemetry_in_a_delta_is_what_happened_for_that_client_since_its_previous_call() {
    let s = state();
    let (a, b) = (id("a"), id("b"));
    s.register_client(&a, 0).unwrap();
    s.register_client(&b, 0).unwrap();
    let mut x = tcp(1, 1, 0);
    x.last_update_ns = 1;
    let mut y = conn(1, 7777);
    y.monotonic.sent_bytes = 1;
    y.last_update_ns = 2;
    s.store_closed(x);
    s.store_closed(y);
    assert_eq!(call(&s, &a, vec![]).telemetry.stats_cookie_collisions, 1);
    assert_eq!(call(&s, &a, vec![]).telemetry.stats_cookie_collisions, 0);
    assert_eq!(call(&s, &b, vec![]).telemetry.stats_cookie_collisions, 1);
    assert_eq!(s.telemetry().stats_cookie_collisions, 1);
}

#[test]
fn counters_become_per_client_deltas_and_gauges_pass_through() {
    use crate::telemetry::{CounterInfo, CounterKind, Sample};
    const LOSS: CounterInfo = CounterInfo::loss("ringbuf_full", "lost");
    const GAUGE: CounterInfo = CounterInfo {
        name: "entries_held",
        kind: CounterKind::Gauge,
        doc: "held",
    };
    let s = state();
    let (a, b) = (id("a"), id("b"));
    let counters = |v, g| CounterSet(vec![Sample::new(LOSS, v), Sample::new(GAUGE, g)]);
    let call = |client: &ClientId, totals: CounterSet| {
        let delta = s
            .get_delta(
                client,
                0,
                vec![],
                DnsStatsBatch::default(),
                UsmStats::default(),
                &totals,
            )
            .unwrap();
        // The pipeline's own telemetry follows the counters handed in.
        assert_eq!(
            delta.counters.value("closed_conn_dropped"),
            delta.telemetry.closed_conn_dropped
        );
        CounterSet(delta.counters.0[..2].to_vec())
    };
    assert_eq!(call(&a, counters(5, 9)), counters(5, 9));
    assert_eq!(call(&a, counters(8, 4)), counters(3, 4));
    assert_eq!(call(&b, counters(8, 4)), counters(8, 4));
    assert_eq!(call(&a, counters(2, 4)), counters(2, 4), "reset");
}

#[test]
fn intra_host_and_direction_fixes_run_on_the_delta() {
    let s = state();
    let mut c = conn_between(
        ip(127, 0, 0, 1),
        8080,
        ip(127, 0, 0, 1),
        40000,
        Protocol::Tcp,
    );
    c.monotonic.sent_bytes = 1;
    let d = call(&s, &id("a"), vec![c]);
    assert!(d.conns[0].intra_host);
    assert_eq!(d.conns[0].direction, crate::model::Direction::Incoming);
    assert_eq!(d.telemetry.outgoing_direction_fixes, 1);
}

#[test]
fn store_closed_does_not_wait_for_a_running_merge() {
    let s = Arc::new(state());
    let a = id("a");
    s.register_client(&a, 0).unwrap();
    let handle = s.clients.read().unwrap().get(&a).unwrap();
    let merge_in_progress = handle.state.lock().unwrap();
    let (done_tx, done_rx) = mpsc::channel();
    let store = Arc::clone(&s);
    thread::spawn(move || {
        store.store_closed(tcp(1, 1, 0));
        done_tx.send(()).unwrap();
    });
    assert!(done_rx.recv_timeout(Duration::from_secs(10)).is_ok());
    drop(merge_in_progress);
    assert_eq!(call(&s, &a, vec![]).conns.len(), 1);
}

#[test]
fn closed_connections_stored_concurrently_with_calls_each_arrive_exactly_once() {
    let s = Arc::new(state());
    let a = id("a");
    s.register_client(&a, 0).unwrap();
    let producer = {
        let s = Arc::clone(&s);
        thread::spawn(move || {
            for cookie in 0..5_000u64 {
                s.store_closed(tcp(cookie, cookie + 1, 0));
            }
        })
    };
    let mut seen = vec![0u32; 5_000];
    let mut count = |d: Delta| {
        for c in d.conns {
            seen[c.cookie as usize] += 1;
            assert_eq!(c.last.sent_bytes, c.cookie + 1);
        }
    };
    while !producer.is_finished() {
        count(call(&s, &a, vec![]));
    }
    producer.join().unwrap();
    count(call(&s, &a, vec![]));
    assert!(seen.iter().all(|&n| n == 1));
}

#[test]
fn delta_list_is_not_doubled_when_closed_outnumber_its_room() {
    // 10 active + 40 closed: the closed outnumber the list's capacity, so the list is
    // reserved for all 50 at once instead of doubling past them.
    let s = state();
    let client = id("mem");
    s.register_client(&client, 0).unwrap();
    call(&s, &client, (1..=10).map(|c| tcp(c, 5, 5)).collect());
    s.store_closed_batch((100..140).map(|c| tcp(c, 7, 7)));
    let mut active = Vec::with_capacity(10);
    active.extend((1..=10).map(|c| tcp(c, 6, 5)));
    let delta = call(&s, &client, active);
    assert_eq!(delta.conns.len(), 50);
    assert_eq!(delta.conns.capacity(), 50);

    // A first call reports every active connection: room is only the spare capacity.
    let mut list = Vec::with_capacity(8);
    list.extend((1..=8).map(|c| tcp(c, 1, 1)));
    reserve_for_closed(&mut list, 3, true);
    assert_eq!(list.capacity(), 11);
    // Later calls: the idle connections' room may do; nothing is reserved.
    let mut list = Vec::with_capacity(8);
    list.extend((1..=8).map(|c| tcp(c, 1, 1)));
    reserve_for_closed(&mut list, 3, false);
    assert_eq!(list.capacity(), 8);
}
