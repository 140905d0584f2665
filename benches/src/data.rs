//! A realistic connection workload for `get_delta`.
//!
//! Active connections: unique tuples (10.0.0.0/8 sources, a few hundred servers on common
//! service ports, ephemeral source ports, 64 processes, 4 network namespaces, 80% TCP) and
//! unique cookies from [`connection_cookie`] (Datadog's own benchmark leaves every cookie at 0).
//! Each round, counters move on 10% of the active connections (a sliding window, so every
//! connection moves every 10 rounds) and half as many short-lived connections as active ones
//! close (fresh cookies, never seen active: the churn of a busy host between two calls).

use std::net::{IpAddr, Ipv4Addr};

use tracer::model::{
    ConnectionStats, ConnectionTuple, Direction, EphemeralPortRange, Protocol, connection_cookie,
};

const SERVICE_PORTS: [u16; 6] = [443, 80, 5432, 6379, 9092, 53];

fn tuple(i: u64) -> ConnectionTuple {
    let host = |n: u64| IpAddr::V4(Ipv4Addr::from(0x0A00_0000 | (n & 0x00FF_FFFF) as u32));
    let protocol = if i.is_multiple_of(5) {
        Protocol::Udp
    } else {
        Protocol::Tcp
    };
    ConnectionTuple {
        src: host(1 + i % 7),
        dst: host(1000 + (i * 7919) % 300),
        sport: 32768 + (i % 28000) as u16,
        dport: *SERVICE_PORTS
            .get((i % SERVICE_PORTS.len() as u64) as usize)
            .unwrap_or(&443),
        pid: 1000 + (i / 28000 * 64 + i % 64) as u32,
        netns: 4_026_531_840 + (i % 4) as u32,
        protocol,
    }
}

/// The connection with index `i` (unique tuple and cookie per index).
pub fn connection(i: u64) -> ConnectionStats {
    let t = tuple(i);
    let cookie = connection_cookie(0x5EED_0000_0000 + i, &t);
    let mut c = ConnectionStats::new(t, Direction::Outgoing, cookie);
    c.sport_is_ephemeral = EphemeralPortRange::default().classify(t.sport);
    c.created_ns = 1_000 + i;
    c.last_update_ns = c.created_ns;
    c.monotonic.sent_bytes = 1_000 + i * 13 % 100_000;
    c.monotonic.recv_bytes = 5_000 + i * 31 % 1_000_000;
    c.monotonic.sent_packets = 10 + i % 100;
    c.monotonic.recv_packets = 20 + i % 200;
    if t.protocol == Protocol::Tcp {
        c.monotonic.tcp_established = 1;
        c.rtt_us = 200 + (i % 1000) as u32;
        c.rtt_var_us = 50;
    }
    c
}

/// The workload state: the kernel's view of active connections plus a closed-index counter.
pub struct Workload {
    active: Vec<ConnectionStats>,
    round: u64,
    next_index: u64,
}

impl Workload {
    /// `active` connections, indices `0..active`.
    pub fn new(active: usize) -> Self {
        let active: Vec<ConnectionStats> = (0..active as u64).map(connection).collect();
        let next_index = active.len() as u64;
        Self {
            active,
            round: 0,
            next_index,
        }
    }

    /// Number of active connections.
    pub fn active_len(&self) -> usize {
        self.active.len()
    }

    /// Advances one round: 10% of active connections move; returns the connections that
    /// closed during the round (half as many as active).
    pub fn advance(&mut self) -> Vec<ConnectionStats> {
        self.round += 1;
        let len = self.active.len();
        let window = len.div_ceil(10);
        let start = (self.round as usize % 10) * window;
        let now = 1_000_000 + self.round * 1_000_000_000;
        for c in self.active.iter_mut().skip(start).take(window) {
            c.monotonic.sent_bytes += 1_400;
            c.monotonic.recv_bytes += 9_000;
            c.monotonic.sent_packets += 3;
            c.monotonic.recv_packets += 7;
            c.last_update_ns = now;
        }
        let closed_count = len / 2;
        let first = self.next_index;
        self.next_index += closed_count as u64;
        (first..first + closed_count as u64)
            .map(|i| {
                let mut c = connection(i);
                c.last_update_ns = now;
                c.created_ns = now - 5_000_000;
                if c.tuple.protocol == Protocol::Tcp {
                    c.monotonic.tcp_closed = 1;
                }
                c.is_closed = true;
                c
            })
            .collect()
    }

    /// What one client's call reads from the kernel map this round (a fresh copy).
    pub fn read_map(&self) -> Vec<ConnectionStats> {
        self.active.clone()
    }

    /// The active connections, for the floor.
    pub fn active(&self) -> &[ConnectionStats] {
        &self.active
    }
}

/// A churning workload for the memory benchmark: `active` connections stay open (10% of their
/// counters move each round, as in [`Workload`]); each round `churn` of them close and as many
/// new ones (fresh cookies) replace them, and short-lived connections that were never seen
/// active close as well, so that exactly `closed_per_round` connections close per round. The
/// number of identities seen grows by `closed_per_round` every round while the active set
/// stays at `active`.
pub struct Churn {
    active: Vec<ConnectionStats>,
    churn: usize,
    closed_per_round: usize,
    round: u64,
    next_index: u64,
}

impl Churn {
    /// `active` connections (indices `0..active`); `churn` of them (at most `closed_per_round`
    /// and `active`) are replaced each round.
    pub fn new(active: usize, churn: usize, closed_per_round: usize) -> Self {
        let connections: Vec<ConnectionStats> = (0..active as u64).map(connection).collect();
        Self {
            next_index: connections.len() as u64,
            active: connections,
            churn: churn.min(closed_per_round).min(active),
            closed_per_round,
            round: 0,
        }
    }

    /// Identities seen so far (active, replaced and short-lived).
    pub fn identities(&self) -> u64 {
        self.next_index
    }

    fn closing(c: &mut ConnectionStats, now: u64) {
        c.last_update_ns = now;
        if c.tuple.protocol == Protocol::Tcp {
            c.monotonic.tcp_closed = 1;
        }
        c.is_closed = true;
    }

    /// Advances one round; returns the connections that closed during it.
    pub fn advance(&mut self) -> Vec<ConnectionStats> {
        self.round += 1;
        let len = self.active.len();
        let now = 1_000_000 + self.round * 1_000_000_000;
        let window = len.div_ceil(10);
        let start = (self.round as usize % 10) * window;
        for c in self.active.iter_mut().skip(start).take(window) {
            c.monotonic.sent_bytes += 1_400;
            c.monotonic.recv_bytes += 9_000;
            c.monotonic.sent_packets += 3;
            c.monotonic.recv_packets += 7;
            c.last_update_ns = now;
        }
        let mut closed = Vec::with_capacity(self.closed_per_round);
        // The replaced connections: a sliding window over the active set, so every one of the
        // original connections is eventually replaced.
        let churn_start = (self.round as usize * self.churn) % len.max(1);
        for offset in 0..self.churn {
            let position = (churn_start + offset) % len;
            let index = self.next_index;
            self.next_index += 1;
            let mut fresh = connection(index);
            fresh.created_ns = now;
            fresh.last_update_ns = now;
            if let Some(slot) = self.active.get_mut(position) {
                let mut old = std::mem::replace(slot, fresh);
                old.monotonic.sent_bytes += 100;
                Self::closing(&mut old, now);
                closed.push(old);
            }
        }
        // Short-lived connections opened and closed between two calls.
        while closed.len() < self.closed_per_round {
            let mut c = connection(self.next_index);
            self.next_index += 1;
            c.created_ns = now - 5_000_000;
            Self::closing(&mut c, now);
            closed.push(c);
        }
        closed
    }

    /// Number of active connections.
    pub fn active_len(&self) -> usize {
        self.active.len()
    }

    /// What one client's call reads from the kernel map this round (a fresh copy).
    pub fn read_map(&self) -> Vec<ConnectionStats> {
        self.active.clone()
    }
}
