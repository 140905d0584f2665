//! Property tests of the pipeline's accounting, over random interleavings of kernel readings
//! (counters only grow), closes, cookie collisions, duplicate readings and calls by up to four
//! clients.
//!
//! Baseline: registration captures nothing (Datadog-compatible: a client's first call reports
//! cumulative counters), so "what a connection had when the client registered" is zero, and
//! the rule checked is: for every connection that was still open when the client was created,
//! the sum of the `last` values the client received equals the connection's final counters;
//! for a connection that closed before, nothing. Connections that share a cookie with another
//! tuple (injected collisions) are excluded from exactness. When a cap was hit, each connection
//! gets at most its final counters, and at most `conn_dropped + closed_conn_dropped` of the
//! client's connections fall short.

use proptest::prelude::*;
use rustc_hash::FxHashMap;

use super::*;
use crate::{
    model::{CounterSet, Protocol, StatCounters},
    state::test_support::conn_between,
    state::test_support::ip,
};

const CLIENTS: usize = 4;

#[derive(Debug, Clone)]
enum Op {
    Open(usize),
    Grow {
        conn: usize,
        sent: u64,
        recv: u64,
        packets: u64,
        retransmits: u32,
    },
    Close(usize),
    Register(usize),
    /// Reads the kernel map for a client's next call now, so that closes and growth can
    /// happen between the read and the call (the race the closed-wins rule resolves).
    ReadMap {
        client: usize,
        duplicate: Option<usize>,
    },
    Call {
        client: usize,
        duplicate: Option<usize>,
    },
}

fn op(conns: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (0..conns).prop_map(Op::Open),
        6 => (0..conns, 0u64..5000, 0u64..5000, 0u64..10, 0u32..3).prop_map(
            |(conn, sent, recv, packets, retransmits)| Op::Grow { conn, sent, recv, packets, retransmits }
        ),
        1 => (0..conns).prop_map(Op::Close),
        1 => (0..CLIENTS).prop_map(Op::Register),
        2 => (0..CLIENTS, proptest::option::weighted(0.3, 0..conns))
            .prop_map(|(client, duplicate)| Op::ReadMap { client, duplicate }),
        4 => (0..CLIENTS, proptest::option::weighted(0.3, 0..conns))
            .prop_map(|(client, duplicate)| Op::Call { client, duplicate }),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Life {
    NotOpened,
    Open,
    Closed { at: usize },
}

struct Kernel {
    conns: Vec<ConnectionStats>,
    life: Vec<Life>,
    colliding: Vec<bool>,
    /// The reading before the latest growth, used as a stale duplicate.
    previous: Vec<StatCounters>,
    clock: u64,
}

impl Kernel {
    fn new(count: usize, collision: Option<(usize, usize)>) -> Self {
        let mut conns: Vec<ConnectionStats> = (0..count)
            .map(|i| {
                let protocol = if i % 2 == 0 {
                    Protocol::Tcp
                } else {
                    Protocol::Udp
                };
                let mut c = conn_between(
                    ip(10, 0, 0, 1),
                    10_000 + i as u16,
                    ip(10, 0, 0, 2),
                    443,
                    protocol,
                );
                c.cookie = 0x00C0_FFEE_0000 + i as u64;
                c
            })
            .collect();
        let mut colliding = vec![false; count];
        if let Some((a, b)) = collision
            && a != b
        {
            conns[b].cookie = conns[a].cookie;
            colliding[a] = true;
            colliding[b] = true;
        }
        Self {
            previous: vec![StatCounters::default(); count],
            conns,
            life: vec![Life::NotOpened; count],
            colliding,
            clock: 1,
        }
    }

    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    fn active(&self, duplicate: Option<usize>) -> Vec<ConnectionStats> {
        let mut list: Vec<ConnectionStats> = (0..self.conns.len())
            .filter(|&i| self.life[i] == Life::Open)
            .map(|i| self.conns[i].clone())
            .collect();
        if let Some(i) = duplicate.filter(|&i| self.life[i] == Life::Open) {
            let mut stale = self.conns[i].clone();
            stale.monotonic = self.previous[i];
            list.insert(i % (list.len() + 1), stale);
        }
        list
    }
}

#[derive(Default)]
struct ClientView {
    created_at: Option<usize>,
    sums: FxHashMap<usize, StatCounters>,
    closed_reports: FxHashMap<usize, u32>,
    dropped: u64,
    pending_read: Option<Vec<ConnectionStats>>,
}

fn record(view: &mut ClientView, kernel: &Kernel, delta: &Delta) -> Result<(), TestCaseError> {
    let mut in_this_delta = std::collections::HashSet::new();
    view.dropped += delta.telemetry.conn_dropped + delta.telemetry.closed_conn_dropped;
    for c in &delta.conns {
        prop_assert!(
            in_this_delta.insert((c.cookie, c.tuple)),
            "reported twice in one delta: {c:?}"
        );
        let id = (c.tuple.sport - 10_000) as usize;
        prop_assert_eq!(kernel.conns[id].tuple, c.tuple);
        prop_assert!(
            c.is_closed || !c.last.is_zero(),
            "zero delta reported for an open connection"
        );
        let sum = view.sums.entry(id).or_default();
        *sum = sum.add(&c.last);
        if c.is_closed {
            *view.closed_reports.entry(id).or_default() += 1;
        }
    }
    Ok(())
}

fn fits_within(sum: &StatCounters, total: &StatCounters) -> bool {
    sum.sent_bytes <= total.sent_bytes
        && sum.recv_bytes <= total.recv_bytes
        && sum.sent_packets <= total.sent_packets
        && sum.recv_packets <= total.recv_packets
        && sum.retransmits <= total.retransmits
        && sum.tcp_established <= total.tcp_established
        && sum.tcp_closed <= total.tcp_closed
}

fn run(
    count: usize,
    collision: Option<(usize, usize)>,
    ops: Vec<Op>,
    max_tracked: usize,
    max_closed: usize,
) -> Result<(), TestCaseError> {
    let config = StateConfig {
        max_tracked_per_client: max_tracked,
        max_closed_connections: max_closed,
        ..StateConfig::default()
    };
    let state = NetworkState::new(config).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let mut kernel = Kernel::new(count, collision);
    let ids: Vec<ClientId> = (0..CLIENTS)
        .map(|c| ClientId::new(&format!("client-{c}")).unwrap())
        .collect();
    let mut views: Vec<ClientView> = (0..CLIENTS).map(|_| ClientView::default()).collect();
    let mut step = 0;
    let call = |state: &NetworkState,
                kernel: &mut Kernel,
                views: &mut Vec<ClientView>,
                client: usize,
                duplicate,
                step| {
        let now = kernel.tick();
        views[client].created_at.get_or_insert(step);
        let active = views[client]
            .pending_read
            .take()
            .unwrap_or_else(|| kernel.active(duplicate));
        let delta = state
            .get_delta(
                &ids[client],
                now,
                active,
                DnsStatsBatch::default(),
                UsmStats::default(),
                &CounterSet::default(),
            )
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        record(&mut views[client], kernel, &delta)
    };
    for op in ops {
        step += 1;
        match op {
            Op::Open(i) if kernel.life[i] == Life::NotOpened => {
                kernel.life[i] = Life::Open;
                let now = kernel.tick();
                let c = &mut kernel.conns[i];
                c.created_ns = now;
                c.last_update_ns = now;
                if c.tuple.protocol == Protocol::Tcp {
                    c.monotonic.tcp_established = 1;
                }
            }
            Op::Grow {
                conn: i,
                sent,
                recv,
                packets,
                retransmits,
            } if kernel.life[i] == Life::Open => {
                let now = kernel.tick();
                kernel.previous[i] = kernel.conns[i].monotonic;
                let c = &mut kernel.conns[i];
                c.monotonic.sent_bytes += sent;
                c.monotonic.recv_bytes += recv;
                c.monotonic.sent_packets += packets;
                c.monotonic.recv_packets += packets / 2;
                if c.tuple.protocol == Protocol::Tcp {
                    c.monotonic.retransmits += retransmits;
                }
                c.last_update_ns = now;
            }
            Op::Close(i) if kernel.life[i] == Life::Open => {
                let now = kernel.tick();
                kernel.life[i] = Life::Closed { at: step };
                let c = &mut kernel.conns[i];
                c.last_update_ns = now;
                if c.tuple.protocol == Protocol::Tcp {
                    c.monotonic.tcp_closed = 1;
                }
                state.store_closed(c.clone());
            }
            Op::Register(client) => {
                let now = kernel.tick();
                state
                    .register_client(&ids[client], now)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                views[client].created_at.get_or_insert(step);
            }
            Op::ReadMap { client, duplicate } if views[client].created_at.is_some() => {
                views[client].pending_read = Some(kernel.active(duplicate));
            }
            Op::Call { client, duplicate } => {
                call(&state, &mut kernel, &mut views, client, duplicate, step)?
            }
            _ => {}
        }
    }
    // Close everything still open, then let every client that exists make a last call.
    step += 1;
    for i in 0..count {
        if kernel.life[i] == Life::Open {
            kernel.life[i] = Life::Closed { at: step };
            if kernel.conns[i].tuple.protocol == Protocol::Tcp {
                kernel.conns[i].monotonic.tcp_closed = 1;
            }
            state.store_closed(kernel.conns[i].clone());
        }
    }
    step += 1;
    for client in 0..CLIENTS {
        if views[client].created_at.is_some() {
            call(&state, &mut kernel, &mut views, client, None, step)?;
        }
    }

    for view in &views {
        let Some(created_at) = view.created_at else {
            continue;
        };
        let mut short = 0u64;
        for i in 0..count {
            if kernel.colliding[i] {
                continue;
            }
            let closed_at = match kernel.life[i] {
                Life::Closed { at } => at,
                _ => usize::MAX,
            };
            let visible = kernel.life[i] != Life::NotOpened && created_at < closed_at;
            let expected = if visible {
                kernel.conns[i].monotonic
            } else {
                StatCounters::default()
            };
            let got = view.sums.get(&i).copied().unwrap_or_default();
            let closed_reports = view.closed_reports.get(&i).copied().unwrap_or(0);
            prop_assert!(
                closed_reports <= 1,
                "closed connection {i} reported {closed_reports} times"
            );
            if !visible {
                prop_assert!(
                    got.is_zero(),
                    "connection {i} closed before the client existed was reported"
                );
                continue;
            }
            prop_assert!(
                fits_within(&got, &expected),
                "connection {i}: got {got:?} > final {expected:?}"
            );
            if got != expected {
                short += 1;
            }
            if view.dropped == 0 {
                prop_assert_eq!(got, expected, "connection {}", i);
                // Every end reaches the client once, TCP or UDP, with or without a delta.
                prop_assert_eq!(closed_reports, 1, "connection {} closed once", i);
            }
        }
        prop_assert!(
            short <= view.dropped,
            "{short} connections short, only {} drops counted",
            view.dropped
        );
    }
    Ok(())
}

fn scenario() -> impl Strategy<Value = (usize, Option<(usize, usize)>, Vec<Op>)> {
    (2usize..8).prop_flat_map(|count| {
        (
            Just(count),
            proptest::option::weighted(0.3, (0..count, 0..count)),
            proptest::collection::vec(op(count), 1..60),
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn sum_of_last_equals_final_counters_and_closed_arrive_once_without_caps(
        (count, collision, ops) in scenario()
    ) {
        run(count, collision, ops, 1_000, 1_000)?;
    }

    #[test]
    fn caps_only_lose_what_the_drop_counters_say(
        (count, collision, ops) in scenario(),
        max_tracked in 1usize..5,
        max_closed in 1usize..4,
    ) {
        run(count, collision, ops, max_tracked, max_closed)?;
    }
}
