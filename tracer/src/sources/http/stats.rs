//! The HTTP stats between two takes (Datadog's HTTP `StatKeeper`, behaviour only), and the rule
//! that counts a transaction between two local sockets once.
//!
//! # Local transactions
//! Both sockets of a local connection are captured, so each of its transactions comes twice:
//! from the client's socket and from the server's (see `tracer_common::http`). The client's
//! observation is recorded at once, and marks its connection (client end, server end) as having
//! a local client. A server's observation is recorded only if no client observation of its
//! connection comes within `window_ns` of its arrival: it waits, aggregated under its key, until
//! a take at least `window_ns` after it arrived, and is then dropped as a duplicate if its
//! connection was marked meanwhile, or recorded. A server observation of an already marked
//! connection is a duplicate at once. The kernel emits the two observations of one transaction
//! within microseconds of each other (the same packets finish both), so the window (default
//! 2 s) only has to cover the ring's draining; a remote client's requests reach the stats at
//! the first take past the window.
//!
//! # Bounds
//! At most `max_stats` keys per take (new keys beyond are dropped and counted, existing keys
//! still count, as Datadog's `max_http_stats_buffered`), at most `max_stats` waiting server keys
//! (beyond, a server observation is recorded without waiting), and at most `max_stats` marked
//! connections (beyond, connections are not marked).

use std::{net::SocketAddr, sync::Arc};

use rustc_hash::FxHashMap;

use crate::model::{HttpKey, HttpMethod, HttpStats, UsmStats};

/// One transaction, as the source hands it over.
#[derive(Debug)]
pub(crate) struct Observation<'a> {
    pub client: SocketAddr,
    pub server: SocketAddr,
    pub path: &'a str,
    pub path_complete: bool,
    pub method: HttpMethod,
    pub status: u16,
    pub latency_ns: u64,
    /// Seen by the client's socket (else by the server's).
    pub client_side: bool,
}

/// What happened to one observation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// In the stats.
    Recorded,
    /// Not in the stats: its key would have been new past `max_stats`.
    Dropped,
    /// A server observation waiting for its client's.
    Waiting,
    /// A server observation of a connection whose client observations are recorded.
    Duplicate,
    /// A server observation recorded at once because `max_stats` keys were already waiting
    /// (a duplicate if its client's observation comes later).
    RecordedUnpaired,
    /// As `RecordedUnpaired`, but dropped by `max_stats`.
    DroppedUnpaired,
}

/// What a take settled besides the batch: waiting observations, by outcome.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct TakeReport {
    pub recorded: u64,
    pub duplicates: u64,
    pub dropped: u64,
}

/// An [`HttpKey`] without its path: the first level of the tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Conn {
    client: SocketAddr,
    server: SocketAddr,
    method: HttpMethod,
    path_complete: bool,
}

/// Values by [`HttpKey`], stored as key without path → path → value, so that a lookup hashes
/// the path once, as the `&str` it is, and a path is allocated only when its key is new (the
/// flat [`HttpKey`] map is built once per key at take).
#[derive(Debug)]
struct Table<V> {
    by_conn: FxHashMap<Conn, FxHashMap<Arc<str>, V>>,
    keys: usize,
}

impl<V> Default for Table<V> {
    fn default() -> Self {
        Self {
            by_conn: FxHashMap::default(),
            keys: 0,
        }
    }
}

impl<V> Table<V> {
    fn get_mut(&mut self, conn: &Conn, path: &str) -> Option<&mut V> {
        self.by_conn.get_mut(conn)?.get_mut(path)
    }

    /// Inserts a key known to be absent.
    fn insert(&mut self, conn: Conn, path: Arc<str>, value: V) {
        self.by_conn.entry(conn).or_default().insert(path, value);
        self.keys += 1;
    }

    fn drain(&mut self) -> impl Iterator<Item = (Conn, Arc<str>, V)> + '_ {
        self.keys = 0;
        self.by_conn
            .drain()
            .flat_map(|(conn, paths)| paths.into_iter().map(move |(p, v)| (conn, p, v)))
    }
}

/// Server observations of one key, waiting.
#[derive(Debug)]
struct Waiting {
    stats: HttpStats,
    /// When the first of them arrived (CLOCK_MONOTONIC ns).
    since_ns: u64,
}

/// See the module docs.
#[derive(Debug)]
pub(crate) struct StatKeeper {
    batch: Table<HttpStats>,
    waiting: Table<Waiting>,
    waiting_requests: u64,
    /// Connections (client, server) with a recorded client observation → when last seen.
    local: FxHashMap<(SocketAddr, SocketAddr), u64>,
    max_stats: usize,
    window_ns: u64,
}

impl StatKeeper {
    pub fn new(max_stats: usize, window_ns: u64) -> Self {
        Self {
            batch: Table::default(),
            waiting: Table::default(),
            waiting_requests: 0,
            local: FxHashMap::default(),
            max_stats,
            window_ns,
        }
    }

    /// Server observations waiting.
    pub fn waiting_requests(&self) -> u64 {
        self.waiting_requests
    }

    /// Connections marked as having a local client.
    pub fn local_len(&self) -> usize {
        self.local.len()
    }

    /// Keys in the current batch.
    pub fn batch_len(&self) -> usize {
        self.batch.keys
    }

    /// Records one observation that arrived at `arrival_ns` (CLOCK_MONOTONIC ns, the clock of
    /// `take`'s `now_ns`; a coarse reading is enough, the window is in seconds).
    pub fn observe(&mut self, o: &Observation<'_>, arrival_ns: impl FnOnce() -> u64) -> Outcome {
        let pair = (o.client, o.server);
        let conn = Conn {
            client: o.client,
            server: o.server,
            method: o.method,
            path_complete: o.path_complete,
        };
        if o.client_side {
            if let Some(seen) = self.local.get_mut(&pair) {
                *seen = arrival_ns();
            } else if self.local.len() < self.max_stats {
                self.local.insert(pair, arrival_ns());
            }
            return self.record(&conn, o);
        }
        if self.local.contains_key(&pair) {
            return Outcome::Duplicate;
        }
        if let Some(w) = self.waiting.get_mut(&conn, o.path) {
            w.stats.add(o.status, o.latency_ns);
            self.waiting_requests += 1;
            return Outcome::Waiting;
        }
        if self.waiting.keys >= self.max_stats {
            return match self.record(&conn, o) {
                Outcome::Recorded => Outcome::RecordedUnpaired,
                _ => Outcome::DroppedUnpaired,
            };
        }
        let mut stats = HttpStats::default();
        stats.add(o.status, o.latency_ns);
        let since_ns = arrival_ns();
        self.waiting
            .insert(conn, Arc::from(o.path), Waiting { stats, since_ns });
        self.waiting_requests += 1;
        Outcome::Waiting
    }

    fn record(&mut self, conn: &Conn, o: &Observation<'_>) -> Outcome {
        if let Some(stats) = self.batch.get_mut(conn, o.path) {
            stats.add(o.status, o.latency_ns);
            return Outcome::Recorded;
        }
        if self.batch.keys >= self.max_stats {
            return Outcome::Dropped;
        }
        let mut stats = HttpStats::default();
        stats.add(o.status, o.latency_ns);
        self.batch.insert(*conn, Arc::from(o.path), stats);
        Outcome::Recorded
    }

    /// The stats since the previous take, with the waiting server observations settled by
    /// `now_ns` (see the module docs).
    pub fn take(&mut self, now_ns: u64) -> (UsmStats, TakeReport) {
        let mut report = TakeReport::default();
        let window_ns = self.window_ns;
        let mut settled: Vec<(Conn, Arc<str>, HttpStats)> = Vec::new();
        self.waiting.by_conn.retain(|conn, paths| {
            paths.retain(|path, w| {
                let keep = now_ns.saturating_sub(w.since_ns) < window_ns;
                if !keep {
                    settled.push((*conn, Arc::clone(path), std::mem::take(&mut w.stats)));
                }
                keep
            });
            !paths.is_empty()
        });
        self.waiting.keys = self.waiting.keys.saturating_sub(settled.len());
        for (conn, path, stats) in settled {
            let n = stats.count();
            self.waiting_requests = self.waiting_requests.saturating_sub(n);
            if self.local.contains_key(&(conn.client, conn.server)) {
                report.duplicates += n;
                continue;
            }
            if let Some(mine) = self.batch.get_mut(&conn, &path) {
                mine.merge(&stats);
            } else if self.batch.keys < self.max_stats {
                self.batch.insert(conn, path, stats);
            } else {
                report.dropped += n;
                continue;
            }
            report.recorded += n;
        }
        // After the waiting keys were settled against them: a mark is only needed while a
        // server observation of the same transactions may still arrive or wait.
        let keep_ns = window_ns.saturating_mul(2);
        self.local
            .retain(|_, seen| now_ns.saturating_sub(*seen) < keep_ns);
        let mut http = FxHashMap::with_capacity_and_hasher(self.batch.keys, Default::default());
        for (conn, path, stats) in self.batch.drain() {
            let key = HttpKey {
                client: conn.client,
                server: conn.server,
                path,
                path_complete: conn.path_complete,
                method: conn.method,
            };
            http.insert(key, stats);
        }
        (UsmStats { http }, report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn obs(client_port: u16, path: &str, client_side: bool) -> Observation<'_> {
        Observation {
            client: SocketAddr::from(([127, 0, 0, 1], client_port)),
            server: SocketAddr::from(([127, 0, 0, 1], 8080)),
            path,
            path_complete: true,
            method: HttpMethod::Get,
            status: 200,
            latency_ns: 1_000,
            client_side,
        }
    }

    fn count(batch: &UsmStats) -> u64 {
        batch.http.values().map(HttpStats::count).sum()
    }

    #[test]
    fn local_transaction_counts_once_whichever_side_comes_first() {
        let mut k = StatKeeper::new(100, 2 * S);
        // Server first, then client.
        assert_eq!(k.observe(&obs(1, "/a", false), || S), Outcome::Waiting);
        assert_eq!(k.observe(&obs(1, "/a", true), || S), Outcome::Recorded);
        // Client first, then server: a duplicate at once.
        assert_eq!(k.observe(&obs(2, "/a", true), || S), Outcome::Recorded);
        assert_eq!(k.observe(&obs(2, "/a", false), || S), Outcome::Duplicate);
        // Still waiting before the window: the take leaves it.
        let (batch, report) = k.take(2 * S);
        assert_eq!(count(&batch), 2);
        assert_eq!(report, TakeReport::default());
        assert_eq!(k.waiting_requests(), 1);
        let (batch, report) = k.take(3 * S);
        assert!(batch.is_empty());
        assert_eq!(
            report,
            TakeReport {
                duplicates: 1,
                ..TakeReport::default()
            }
        );
        assert_eq!(k.waiting_requests(), 0);
    }

    #[test]
    fn remote_client_requests_are_recorded_at_the_first_take_past_the_window() {
        let mut k = StatKeeper::new(100, 2 * S);
        k.observe(&obs(1, "/a", false), || 10 * S);
        k.observe(&obs(1, "/a", false), || 11 * S);
        assert!(k.take(11 * S).0.is_empty());
        let (batch, report) = k.take(12 * S);
        assert_eq!(count(&batch), 2);
        assert_eq!(report.recorded, 2);
    }

    #[test]
    fn marks_expire_after_twice_the_window() {
        let mut k = StatKeeper::new(100, 2 * S);
        k.observe(&obs(1, "/a", true), || S);
        k.take(4 * S);
        assert_eq!(k.local_len(), 1);
        k.take(5 * S);
        assert_eq!(k.local_len(), 0);
        assert_eq!(k.observe(&obs(1, "/a", false), || 6 * S), Outcome::Waiting);
    }

    #[test]
    fn keys_are_capped_per_take_and_existing_keys_still_count() {
        let mut k = StatKeeper::new(2, S);
        assert_eq!(k.observe(&obs(1, "/a", true), || 0), Outcome::Recorded);
        assert_eq!(k.observe(&obs(1, "/b", true), || 0), Outcome::Recorded);
        assert_eq!(k.observe(&obs(1, "/c", true), || 0), Outcome::Dropped);
        assert_eq!(k.observe(&obs(1, "/a", true), || 0), Outcome::Recorded);
        let (batch, _) = k.take(0);
        assert_eq!(batch.len(), 2);
        assert_eq!(count(&batch), 3);
        assert_eq!(k.observe(&obs(1, "/c", true), || 0), Outcome::Recorded);
    }

    #[test]
    fn waiting_keys_are_capped_and_settled_into_the_cap() {
        let mut k = StatKeeper::new(1, S);
        assert_eq!(k.observe(&obs(1, "/a", false), || 0), Outcome::Waiting);
        assert_eq!(
            k.observe(&obs(2, "/a", false), || 0),
            Outcome::RecordedUnpaired
        );
        assert_eq!(
            k.observe(&obs(3, "/a", false), || 0),
            Outcome::DroppedUnpaired
        );
        // The batch is full: the waiting key cannot join it.
        let (batch, report) = k.take(S);
        assert_eq!(batch.len(), 1);
        assert_eq!(report.dropped, 1);
    }
}
