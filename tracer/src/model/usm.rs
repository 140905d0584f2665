//! Application-protocol (USM) statistics, passed through the pipeline to every client.
//!
//! One map per protocol, each with its own key and stats types: HTTP/1.x ([`UsmStats::http`])
//! is the one filled today; Kafka, Postgres or Redis would each add a map of their own beside it
//! (their keys name a topic, a query verb or a command instead of a path), counted in
//! [`UsmStats::len`] and merged in [`UsmStats::merge`] the same way.
//!
//! HTTP follows Datadog's USM model (`protocols/http/stats.go`, behaviour only): stats keyed by
//! (client, server, path, method), then by status code: a request count, the first request's
//! latency, and a DDSketch of latencies at 1 % relative accuracy, created only once a second
//! request comes (most keys of short-lived connections see one request, and a sketch costs at
//! least 1 KiB).

use std::{collections::BTreeMap, fmt, net::SocketAddr, sync::Arc};

use rustc_hash::FxHashMap;
use sketches_ddsketch::{Config as SketchConfig, DDSketch};

pub use tracer_common::http::HttpMethod;

/// Application protocol of a USM statistic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AppProtocol {
    /// HTTP/1.x.
    Http,
    /// HTTP/2 (and gRPC).
    Http2,
    /// Kafka.
    Kafka,
    /// PostgreSQL.
    Postgres,
    /// Redis.
    Redis,
}

/// Relative accuracy of every latency sketch: a quantile read from a sketch is within 1 % of a
/// latency that was actually recorded at that rank (as Datadog's `RelativeAccuracy`).
pub const LATENCY_RELATIVE_ACCURACY: f64 = 0.01;

/// Most bins a sketch grows to (the sketch crate's default): at 1 % accuracy, 2 048 bins span a
/// factor of about 10^17 between the smallest and largest latency kept apart, far more than
/// 1 ns to a day; below that range the lowest bins are merged.
const SKETCH_MAX_BINS: u32 = 2048;
/// Smallest latency told apart from 0, ns (latencies are whole nanoseconds, at least 1).
const SKETCH_MIN_VALUE: f64 = 0.5;

/// A distribution of latencies in nanoseconds (a DDSketch at
/// [`LATENCY_RELATIVE_ACCURACY`]).
#[derive(Clone)]
pub struct LatencySketch(DDSketch);

impl LatencySketch {
    /// An empty sketch.
    pub fn new() -> Self {
        Self(DDSketch::new(SketchConfig::new(
            LATENCY_RELATIVE_ACCURACY,
            SKETCH_MAX_BINS,
            SKETCH_MIN_VALUE,
        )))
    }

    /// Records one latency.
    pub fn add(&mut self, latency_ns: u64) {
        // u64 → f64 rounds past 2^53 ns (104 days): far below the sketch's own accuracy.
        self.0.add(latency_ns as f64);
    }

    /// Adds every latency of `other` (both sketches have the same parameters, so the merge is
    /// exact: the result is the sketch of the union).
    pub fn merge(&mut self, other: &Self) {
        if let Err(err) = self.0.merge(&other.0) {
            // Cannot happen: every sketch here is built by `new` with the same parameters.
            tracing::debug!(%err, "latency sketches with different parameters not merged");
        }
    }

    /// Latencies recorded.
    pub fn count(&self) -> u64 {
        self.0.count() as u64
    }

    /// The latency at quantile `q` (0.0..=1.0), ns, within 1 % of the recorded latency of
    /// rank `floor(q * (count - 1))`; `None` when empty or `q` is out of range.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        self.0.quantile(q).ok().flatten()
    }

    /// Smallest latency recorded (exact), ns.
    pub fn min(&self) -> Option<f64> {
        self.0.min()
    }

    /// Largest latency recorded (exact), ns.
    pub fn max(&self) -> Option<f64> {
        self.0.max()
    }

    /// Sum of the latencies recorded (exact up to f64 rounding), ns.
    pub fn sum(&self) -> Option<f64> {
        self.0.sum()
    }

    /// The underlying sketch (e.g. to encode it for an exporter).
    pub fn as_ddsketch(&self) -> &DDSketch {
        &self.0
    }
}

impl Default for LatencySketch {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for LatencySketch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LatencySketch")
            .field("count", &self.count())
            .field("min", &self.min())
            .field("p50", &self.quantile(0.5))
            .field("max", &self.max())
            .finish()
    }
}

/// The requests of one key that got one status code.
#[derive(Clone, Debug, Default)]
pub struct RequestStats {
    /// Requests (counted here, not by the sketch: Datadog's rule, so a count never depends on
    /// what a sketch keeps).
    pub count: u64,
    /// Latency of the first request recorded, ns (the only one while `count` is 1).
    pub first_latency_ns: u64,
    /// Every request's latency once there are two or more (the first one included); `None`
    /// while `count` ≤ 1.
    pub latencies: Option<LatencySketch>,
}

impl RequestStats {
    /// Records one request.
    pub fn add(&mut self, latency_ns: u64) {
        self.count = self.count.saturating_add(1);
        if self.count == 1 {
            self.first_latency_ns = latency_ns;
            return;
        }
        let first = self.first_latency_ns;
        self.latencies
            .get_or_insert_with(|| {
                let mut sketch = LatencySketch::new();
                sketch.add(first);
                sketch
            })
            .add(latency_ns);
    }

    /// Adds `other`'s requests.
    pub fn merge(&mut self, other: &Self) {
        match (other.count, &other.latencies) {
            (0, _) => return,
            (1, _) | (_, None) => {
                // One sample (or a sketch-less count, which only a hand-built value has): its
                // latency as a request, the rest of its count without latency.
                let count = self.count;
                self.add(other.first_latency_ns);
                self.count = count.saturating_add(other.count);
                return;
            }
            (_, Some(theirs)) => {
                if self.count == 0 {
                    self.first_latency_ns = other.first_latency_ns;
                }
                match &mut self.latencies {
                    Some(mine) => mine.merge(theirs),
                    None => {
                        let mut sketch = theirs.clone();
                        if self.count == 1 {
                            sketch.add(self.first_latency_ns);
                        }
                        self.latencies = Some(sketch);
                    }
                }
            }
        }
        self.count = self.count.saturating_add(other.count);
    }

    /// The latency at quantile `q`, ns: from the sketch, or the one latency when there is a
    /// single request; `None` without requests.
    pub fn latency_quantile(&self, q: f64) -> Option<f64> {
        match &self.latencies {
            Some(sketch) => sketch.quantile(q),
            None if self.count >= 1 && (0.0..=1.0).contains(&q) => {
                Some(self.first_latency_ns as f64)
            }
            None => None,
        }
    }
}

/// What HTTP stats are about: who asked whom for what.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HttpKey {
    /// The client end (the socket that sent the request).
    pub client: SocketAddr,
    /// The server end.
    pub server: SocketAddr,
    /// The path, without its query, after quantization and replace rules (see
    /// `sources::http`).
    pub path: Arc<str>,
    /// Whether `path` is the whole path (false: the request's path was longer than what was
    /// captured, and this is its prefix; Datadog's `FullPath`).
    pub path_complete: bool,
    /// The request method.
    pub method: HttpMethod,
}

/// The HTTP stats of one key, by status code.
#[derive(Clone, Debug, Default)]
pub struct HttpStats(pub BTreeMap<u16, RequestStats>);

impl HttpStats {
    /// Records one request answered with `status`.
    pub fn add(&mut self, status: u16, latency_ns: u64) {
        self.0.entry(status).or_default().add(latency_ns);
    }

    /// Adds `other`'s requests.
    pub fn merge(&mut self, other: &Self) {
        for (status, stats) in &other.0 {
            self.0.entry(*status).or_default().merge(stats);
        }
    }

    /// Requests of every status code.
    pub fn count(&self) -> u64 {
        self.0
            .values()
            .fold(0u64, |sum, s| sum.saturating_add(s.count))
    }
}

/// USM statistics since the previous batch (as a source produces them) or since a client's
/// previous call (as handed to the client).
#[derive(Debug, Clone, Default)]
pub struct UsmStats {
    /// HTTP/1.x, by key then status code.
    pub http: FxHashMap<HttpKey, HttpStats>,
}

impl UsmStats {
    /// Number of keys of every protocol (the unit USM limits are counted in).
    pub fn len(&self) -> usize {
        self.http.len()
    }

    /// Whether there are no keys.
    pub fn is_empty(&self) -> bool {
        self.http.is_empty()
    }

    /// Adds `other` into `self` (counts add up, sketches merge).
    pub fn merge(&mut self, other: &Self) {
        for (key, stats) in &other.http {
            match self.http.get_mut(key) {
                Some(mine) => mine.merge(stats),
                None => {
                    self.http.insert(key.clone(), stats.clone());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exact_quantile(sorted: &[u64], q: f64) -> f64 {
        let rank = (q * (sorted.len() as f64 - 1.0)) as usize;
        sorted[rank] as f64
    }

    fn assert_within_1pct(sketch: &LatencySketch, sorted: &[u64]) {
        for q in [0.0, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 1.0] {
            let exact = exact_quantile(sorted, q);
            let got = sketch.quantile(q).unwrap();
            let err = (got - exact).abs() / exact;
            assert!(
                err <= LATENCY_RELATIVE_ACCURACY + 1e-12,
                "q {q}: sketch {got}, exact {exact}, relative error {err}"
            );
        }
    }

    #[test]
    fn sketch_quantiles_are_within_1pct_of_exact_on_known_sets() {
        // Uniform 1..=10 000 µs.
        let uniform: Vec<u64> = (1..=10_000u64).map(|i| i * 1_000).collect();
        // Bimodal: cache hits ~200 µs, misses ~50 ms, plus a 2 s tail.
        let mut bimodal: Vec<u64> = (0..900u64).map(|i| 200_000 + i * 37).collect();
        bimodal.extend((0..95u64).map(|i| 50_000_000 + i * 104_729));
        bimodal.extend((0..5u64).map(|i| 2_000_000_000 + i));
        // Geometric spread from 1 ns to ~1e12 ns.
        let geometric: Vec<u64> = (0..400).map(|i| 1.07f64.powi(i).round() as u64).collect();
        for mut set in [uniform, bimodal, geometric] {
            let mut stats = RequestStats::default();
            for &l in &set {
                stats.add(l);
            }
            set.sort_unstable();
            assert_eq!(stats.count, set.len() as u64);
            let sketch = stats.latencies.as_ref().unwrap();
            assert_eq!(sketch.count(), set.len() as u64);
            assert_within_1pct(sketch, &set);
        }
    }

    #[test]
    fn one_request_has_no_sketch_and_its_latency_is_every_quantile() {
        let mut s = RequestStats::default();
        s.add(42);
        assert!(s.latencies.is_none());
        assert_eq!(s.latency_quantile(0.5), Some(42.0));
        assert_eq!(s.latency_quantile(1.5), None);
        s.add(84);
        let sketch = s.latencies.as_ref().unwrap();
        assert_eq!(sketch.count(), 2);
        assert_eq!((sketch.min(), sketch.max()), (Some(42.0), Some(84.0)));
        assert_eq!(s.first_latency_ns, 42);
        assert_eq!(RequestStats::default().latency_quantile(0.5), None);
    }

    #[test]
    fn merge_of_every_shape_equals_adding_the_union() {
        let samples: [&[u64]; 4] = [&[], &[10], &[20, 30], &[40, 50, 60]];
        for a in samples {
            for b in samples {
                let mut left = RequestStats::default();
                a.iter().for_each(|&l| left.add(l));
                let mut right = RequestStats::default();
                b.iter().for_each(|&l| right.add(l));
                left.merge(&right);
                let mut union: Vec<u64> = a.iter().chain(b).copied().collect();
                assert_eq!(left.count, union.len() as u64, "{a:?} + {b:?}");
                union.sort_unstable();
                match union.len() {
                    0 => assert_eq!(left.latency_quantile(0.5), None),
                    1 => {
                        assert!(left.latencies.is_none());
                        assert_eq!(left.first_latency_ns, union[0]);
                    }
                    n => {
                        let sketch = left.latencies.as_ref().unwrap();
                        assert_eq!(sketch.count(), n as u64, "{a:?} + {b:?}");
                        assert_within_1pct(sketch, &union);
                    }
                }
            }
        }
    }

    #[test]
    fn usm_merge_adds_counts_by_key_and_status() {
        let key = HttpKey {
            client: "10.0.0.1:5000".parse().unwrap(),
            server: "10.0.0.2:80".parse().unwrap(),
            path: Arc::from("/users/*"),
            path_complete: true,
            method: HttpMethod::Get,
        };
        let mut a = UsmStats::default();
        a.http.entry(key.clone()).or_default().add(200, 1_000);
        let mut b = UsmStats::default();
        b.http.entry(key.clone()).or_default().add(200, 3_000);
        b.http.entry(key.clone()).or_default().add(404, 500);
        a.merge(&b);
        assert_eq!(a.len(), 1);
        let stats = &a.http[&key];
        assert_eq!(stats.count(), 3);
        assert_eq!(stats.0[&200].count, 2);
        assert_eq!(stats.0[&404].count, 1);
        // Quantiles read the sample of rank floor(q * (count - 1)): of two, p99 is the lower.
        let ok = &stats.0[&200];
        let p99 = ok.latency_quantile(0.99).unwrap();
        assert!((p99 - 1_000.0).abs() <= 10.0, "{p99}");
        let max = ok.latency_quantile(1.0).unwrap();
        assert_eq!(max, 3_000.0);
    }
}
