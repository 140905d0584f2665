//! The HTTP source: consumes the finished HTTP/1.x transactions the kernel's parser emits
//! ([`tracer_common::http::HttpTransaction`], decoded by [`crate::decode::http_record`]) and
//! keeps what Datadog's USM HTTP stat keeper keeps (`protocols/http/statkeeper.go`, behaviour
//! only): stats keyed by (client, server, path, method) → status code → request count and
//! latency sketch ([`crate::model::HttpStats`]), handed out by [`Http::take_stats`] as a
//! [`UsmStats`] batch the state passes to every client once.
//!
//! # From a record to the stats
//! 1. The record is checked: its length and kind, an address family, a role, a status of three
//!    digits at most (a kernel never writes 0 or more than 999). Then, as Datadog: a known
//!    method, a response after the request, a status in 100..=599.
//! 2. The path: the bytes the record carries (at most [`HttpConfig::path_bytes`]), cut at the
//!    first `?`, `#` or space; an empty path is dropped. A path the kernel cut is kept as its
//!    prefix, with [`HttpKey::path_complete`](crate::model::HttpKey::path_complete) false.
//! 3. Quantization (`quantize.rs`, on by default): `/orders/123/view` → `/orders/*/view`.
//! 4. Replace rules, in order, drop rules first (as Datadog): a matching drop rule drops the
//!    transaction; a matching replace rule rewrites every match. A path that no rule matched
//!    must be UTF-8 without control characters or spaces, or it is dropped as malformed.
//! 5. Client and server from the record's role; the stats (see `stats.rs`, which also counts
//!    each local transaction once although both of its sockets report it).
//!
//! Every record is either recorded, waiting (a gauge), or counted in one of [`HttpCounters`]'
//! losses and activities; nothing here panics on any input, and the state is bounded by
//! `max_stats`.

mod quantize;
mod stats;

#[cfg(test)]
mod tests;

use std::{
    borrow::Cow,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::atomic::Ordering,
    time::Duration,
};

use parking_lot::Mutex;
use tracer_common::{
    conn::{AF_INET, AF_INET6},
    http::{
        HTTP_FLAG_PATH_TRUNCATED, HTTP_PATH_MAX, HTTP_ROLE_CLIENT, HTTP_ROLE_SERVER,
        HttpTransaction, PACKET_KIND_HTTP,
    },
};

use self::stats::{Observation, Outcome, StatKeeper, TakeReport};
use crate::{
    Error, counter_set, decode,
    model::{HttpMethod, UsmStats},
    telemetry::{CounterSource, Sample, bump},
};

/// A rule applied to every path after quantization: where `pattern` matches, the path is
/// rewritten with `replacement` (`$1`-style group references allowed, as
/// `regex::bytes::Regex::replace_all`), or, with no replacement, the transaction is dropped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplaceRule {
    /// A regular expression (`regex` crate syntax) matched against the path.
    pub pattern: String,
    /// The replacement of every match; `None`: drop the transaction.
    pub replacement: Option<String>,
}

/// Configuration of the HTTP source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpConfig {
    /// Consume HTTP records at all (default on; nothing comes until the kernel side emits).
    pub enabled: bool,
    /// Path bytes used from each record, 1..=[`HTTP_PATH_MAX`] (default 160, all the record
    /// carries); a longer path is keyed by its prefix.
    pub path_bytes: usize,
    /// Replace ids in paths by `*` (default on, as Datadog's `enable_usm_quantization`).
    pub quantize: bool,
    /// Rewrite or drop paths (applied after quantization; drop rules first).
    pub replace_rules: Vec<ReplaceRule>,
    /// Most (client, server, path, method) keys between two takes (default 100 000, as
    /// Datadog's `max_http_stats_buffered`); transactions of new keys beyond are dropped and
    /// counted.
    pub max_stats: usize,
    /// How long an observation by a server's socket waits for the client's socket to report
    /// the same connection (local connections are seen from both ends; see `stats.rs`).
    /// Default 2 s; at most 1 min.
    pub dedup_window: Duration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            path_bytes: HTTP_PATH_MAX,
            quantize: true,
            replace_rules: Vec::new(),
            max_stats: 100_000,
            dedup_window: Duration::from_secs(2),
        }
    }
}

/// Longest dedup window accepted: the waiting observations and connection marks it keeps grow
/// with it.
const MAX_DEDUP_WINDOW: Duration = Duration::from_secs(60);

impl HttpConfig {
    /// Checks the sizes and compiles the replace rules.
    pub fn validate(&self) -> crate::Result<()> {
        let invalid = |what: String| Err(Error::InvalidConfig(format!("http: {what}")));
        if !(1..=HTTP_PATH_MAX).contains(&self.path_bytes) {
            return invalid(format!(
                "path_bytes must be in 1..={HTTP_PATH_MAX} (the record's path array), got {}",
                self.path_bytes
            ));
        }
        if self.max_stats == 0 {
            return invalid("max_stats must not be 0".into());
        }
        if self.dedup_window > MAX_DEDUP_WINDOW {
            return invalid(format!(
                "dedup_window must be at most {} s",
                MAX_DEDUP_WINDOW.as_secs()
            ));
        }
        for rule in &self.replace_rules {
            if let Err(err) = regex::bytes::Regex::new(&rule.pattern) {
                return invalid(format!("replace rule {:?}: {err}", rule.pattern));
            }
        }
        Ok(())
    }
}

counter_set! {
    /// Counters of the HTTP source.
    pub struct HttpCounters {
        /// HTTP transaction records received.
        http_records: Activity,
        /// Records refused: shorter than a transaction, of another kind, or with a value no kernel writes (address family, role, status 0 or above 999).
        http_records_invalid: Loss,
        /// Transactions dropped: a method that is not one of the nine known (Datadog's unknown_method).
        http_unknown_method: Loss,
        /// Transactions dropped: a response not after its request (Datadog's invalid_latency).
        http_invalid_latency: Loss,
        /// Transactions dropped: a status outside 100..=599 (Datadog's invalid_status_code).
        http_invalid_status: Loss,
        /// Transactions dropped: an empty path.
        http_path_empty: Loss,
        /// Transactions dropped: a path that is not UTF-8 or holds control characters or spaces, and no replace rule matched.
        http_path_malformed: Loss,
        /// Transactions dropped by a drop rule (configured).
        http_path_rejected: Activity,
        /// Transactions past the path checks whose path the kernel cut: keyed by its prefix, with path_complete false.
        http_path_truncated: Activity,
        /// Paths changed by quantization.
        http_path_quantized: Activity,
        /// Transactions in the stats.
        http_recorded: Activity,
        /// Transactions not recorded because their key would have been new past max_stats.
        http_stats_dropped: Loss,
        /// Observations by a server's socket of transactions its client's socket reported too (a local connection), not counted twice.
        http_duplicates: Activity,
        /// Server observations recorded without waiting for their client's (max_stats keys were waiting): counted twice if the client is local.
        http_unpaired: Activity,
        /// Server observations waiting for their client's.
        http_waiting: Gauge,
        /// Connections marked as having a local client (their server observations are duplicates).
        http_local_connections: Gauge,
        /// Keys in the stats since the previous take.
        http_keys: Gauge,
    }
}

/// A compiled replace rule.
#[derive(Debug)]
struct Rule {
    re: regex::bytes::Regex,
    replacement: Option<Vec<u8>>,
}

/// Reusable buffers of the path pipeline.
#[derive(Debug, Default)]
struct Scratch {
    quantized: Vec<u8>,
}

/// Why a path was refused.
enum PathRefused {
    Rejected,
    Malformed,
}

/// The HTTP source. `&self` everywhere: fed by the capture's consumer thread, read by
/// `get_active_connections`; one lock, held for one record or one take.
#[derive(Debug)]
pub struct Http {
    enabled: bool,
    path_bytes: usize,
    quantize: bool,
    rules: Vec<Rule>,
    inner: Mutex<(StatKeeper, Scratch)>,
    counters: HttpCounters,
}

impl Http {
    /// An HTTP source with empty state (a disabled one ignores every record). `config` should
    /// have passed [`HttpConfig::validate`]: a replace rule that does not compile is skipped
    /// (and logged), and sizes are clamped to their valid ranges.
    pub fn start(config: &HttpConfig) -> Self {
        let mut rules: Vec<Rule> = config
            .replace_rules
            .iter()
            .filter_map(|rule| match regex::bytes::Regex::new(&rule.pattern) {
                Ok(re) => Some(Rule {
                    re,
                    replacement: rule.replacement.as_ref().map(|r| r.as_bytes().to_vec()),
                }),
                Err(err) => {
                    tracing::warn!(pattern = %rule.pattern, %err, "http: replace rule skipped");
                    None
                }
            })
            .collect();
        // Drop rules first, the others in their order (Datadog's stable sort): a path a drop
        // rule matches is dropped whatever a replacement would have made of it.
        rules.sort_by_key(|rule| rule.replacement.is_some());
        let window_ns = u64::try_from(config.dedup_window.as_nanos()).unwrap_or(u64::MAX);
        Self {
            enabled: config.enabled,
            path_bytes: config.path_bytes.clamp(1, HTTP_PATH_MAX),
            quantize: config.quantize,
            rules,
            inner: Mutex::new((
                StatKeeper::new(config.max_stats.max(1), window_ns),
                Scratch::default(),
            )),
            counters: HttpCounters::default(),
        }
    }

    /// Consumes one raw ring record (an [`HttpTransaction`]); its arrival time, when needed
    /// (to pair the two observations of a local transaction), is read from
    /// CLOCK_MONOTONIC_COARSE: the same clock as `bpf_ktime_get_ns` at a few milliseconds'
    /// resolution, enough for a window of seconds, and a quarter of CLOCK_MONOTONIC's cost.
    pub fn ingest(&self, record: &[u8]) {
        self.ingest_at(record, coarse_now_ns);
    }

    /// [`Http::ingest`] with the arrival time given (CLOCK_MONOTONIC ns, the clock of
    /// [`Http::take_stats`]'s `now_ns`; only called for server observations), for replays and
    /// tests.
    pub fn ingest_at(&self, record: &[u8], arrival_ns: impl FnOnce() -> u64) {
        if !self.enabled {
            return;
        }
        let c = &self.counters;
        bump(&c.http_records, 1);
        let Some(tx) = decode::http_record(record) else {
            bump(&c.http_records_invalid, 1);
            return;
        };
        let Some((client, server, client_side)) = ends(&tx) else {
            bump(&c.http_records_invalid, 1);
            return;
        };
        if tx.kind != PACKET_KIND_HTTP || tx.status == 0 || tx.status > 999 {
            bump(&c.http_records_invalid, 1);
            return;
        }
        let Some(method) = HttpMethod::from_u8(tx.method) else {
            bump(&c.http_unknown_method, 1);
            return;
        };
        if tx.response_ns <= tx.request_ns {
            bump(&c.http_invalid_latency, 1);
            return;
        }
        if !(100..=599).contains(&tx.status) {
            bump(&c.http_invalid_status, 1);
            return;
        }
        let (raw, path_complete) = self.raw_path(&tx);
        if raw.is_empty() {
            bump(&c.http_path_empty, 1);
            return;
        }

        let mut inner = self.inner.lock();
        let (keeper, scratch) = &mut *inner;
        let quantized: &[u8] = if self.quantize {
            if quantize::quantize(raw, &mut scratch.quantized) {
                bump(&c.http_path_quantized, 1);
            }
            &scratch.quantized
        } else {
            raw
        };
        let path = match self.rewrite(quantized) {
            Ok(path) => path,
            Err(PathRefused::Rejected) => {
                bump(&c.http_path_rejected, 1);
                return;
            }
            Err(PathRefused::Malformed) => {
                bump(&c.http_path_malformed, 1);
                return;
            }
        };
        let observation = Observation {
            client,
            server,
            path: &path,
            path_complete,
            method,
            status: tx.status,
            latency_ns: tx.response_ns - tx.request_ns,
            client_side,
        };
        let outcome = keeper.observe(&observation, arrival_ns);
        c.http_waiting
            .store(keeper.waiting_requests(), Ordering::Relaxed);
        c.http_local_connections
            .store(keeper.local_len() as u64, Ordering::Relaxed);
        c.http_keys
            .store(keeper.batch_len() as u64, Ordering::Relaxed);
        drop(inner);
        if !path_complete {
            bump(&c.http_path_truncated, 1);
        }
        match outcome {
            Outcome::Recorded => bump(&c.http_recorded, 1),
            Outcome::RecordedUnpaired => {
                bump(&c.http_recorded, 1);
                bump(&c.http_unpaired, 1);
            }
            Outcome::Dropped => bump(&c.http_stats_dropped, 1),
            Outcome::DroppedUnpaired => {
                bump(&c.http_stats_dropped, 1);
                bump(&c.http_unpaired, 1);
            }
            Outcome::Duplicate => bump(&c.http_duplicates, 1),
            // Counted when a take settles it (http_waiting meanwhile).
            Outcome::Waiting => {}
        }
    }

    /// The path bytes of a record, cut at the end of the path, and whether they are the whole
    /// path. Never reads past the record's array, whatever its lengths say.
    fn raw_path<'a>(&self, tx: &'a HttpTransaction) -> (&'a [u8], bool) {
        let captured = usize::from(tx.path_captured)
            .min(usize::from(tx.path_len))
            .min(self.path_bytes);
        let bytes = tx.path.get(..captured).unwrap_or_default();
        // The kernel stops at the path's end; a kernel that copies the query too is cut here.
        if let Some(end) = bytes.iter().position(|b| matches!(b, b'?' | b'#' | b' ')) {
            return (bytes.get(..end).unwrap_or_default(), true);
        }
        let complete =
            tx.flags & HTTP_FLAG_PATH_TRUNCATED == 0 && usize::from(tx.path_len) <= captured;
        (bytes, complete)
    }

    /// The replace rules, then the malformed check for paths no rule matched.
    fn rewrite<'p>(&self, path: &'p [u8]) -> Result<Cow<'p, str>, PathRefused> {
        let mut out: Cow<'p, [u8]> = Cow::Borrowed(path);
        let mut matched = false;
        for rule in &self.rules {
            if !rule.re.is_match(&out) {
                continue;
            }
            let Some(replacement) = &rule.replacement else {
                return Err(PathRefused::Rejected);
            };
            let replaced = rule
                .re
                .replace_all(&out, replacement.as_slice())
                .into_owned();
            out = Cow::Owned(replaced);
            matched = true;
        }
        // A rule's output is the user's choice (Datadog checks only paths no rule matched);
        // it still has to be text to be a key.
        let printable = |s: &str| !s.chars().any(|ch| ch.is_control() || ch == ' ');
        match out {
            Cow::Borrowed(bytes) => match std::str::from_utf8(bytes) {
                Ok(s) if matched || printable(s) => Ok(Cow::Borrowed(s)),
                _ => Err(PathRefused::Malformed),
            },
            Cow::Owned(bytes) => match String::from_utf8(bytes) {
                Ok(s) if matched || printable(&s) => Ok(Cow::Owned(s)),
                _ => Err(PathRefused::Malformed),
            },
        }
    }

    /// The stats since the previous take; server observations waiting for at least the dedup
    /// window by `now_ns` (CLOCK_MONOTONIC ns) are settled into it.
    pub fn take_stats(&self, now_ns: u64) -> UsmStats {
        let mut inner = self.inner.lock();
        let (batch, report) = inner.0.take(now_ns);
        let c = &self.counters;
        c.http_waiting
            .store(inner.0.waiting_requests(), Ordering::Relaxed);
        c.http_local_connections
            .store(inner.0.local_len() as u64, Ordering::Relaxed);
        c.http_keys.store(0, Ordering::Relaxed);
        drop(inner);
        let TakeReport {
            recorded,
            duplicates,
            dropped,
        } = report;
        bump(&c.http_recorded, recorded);
        bump(&c.http_duplicates, duplicates);
        bump(&c.http_stats_dropped, dropped);
        if dropped > 0 {
            tracing::debug!(dropped, "http: waiting transactions dropped by max_stats");
        }
        batch
    }

    /// The counters (see [`HttpCounters`]).
    pub fn counters(&self) -> &HttpCounters {
        &self.counters
    }

    /// Appends every counter with its current value to `out`.
    pub fn collect(&self, out: &mut Vec<Sample>) {
        self.counters.collect(out);
    }
}

impl CounterSource for Http {
    fn collect(&self, out: &mut Vec<Sample>) {
        self.counters.collect(out);
    }
}

/// CLOCK_MONOTONIC_COARSE in ns (0 if the clock cannot be read, which Linux never does for
/// this clock).
fn coarse_now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    u64::try_from(ts.tv_sec)
        .unwrap_or(0)
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::try_from(ts.tv_nsec).unwrap_or(0))
}

/// (client, server, observed by the client's socket) of a record; `None` for an unknown
/// family or role.
fn ends(tx: &HttpTransaction) -> Option<(SocketAddr, SocketAddr, bool)> {
    let ip = |bytes: [u8; 16]| -> Option<IpAddr> {
        match tx.family {
            AF_INET => {
                let [a, b, c, d, ..] = bytes;
                Some(IpAddr::V4(Ipv4Addr::new(a, b, c, d)))
            }
            AF_INET6 => Some(IpAddr::V6(Ipv6Addr::from(bytes))),
            _ => None,
        }
    };
    let local = SocketAddr::new(ip(tx.saddr)?, tx.sport);
    let remote = SocketAddr::new(ip(tx.daddr)?, tx.dport);
    match tx.role {
        HTTP_ROLE_CLIENT => Some((local, remote, true)),
        HTTP_ROLE_SERVER => Some((remote, local, false)),
        _ => None,
    }
}
