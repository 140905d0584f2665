//! The route ("Via": gateway and interface) of outgoing connections, from netlink
//! `RTM_GETROUTE`, cached with a TTL.
//!
//! Which connections: outgoing ([`Direction::Outgoing`]), not intra-host, to a destination that
//! is neither loopback nor unspecified (and of the source's family). Every other connection is
//! left as it is.
//!
//! How (Datadog's `gateway_lookup_linux.go` and `route_cache.go`, behaviour only): one
//! NETLINK_ROUTE socket opened by [`Routes::start`] in the calling thread's network namespace
//! (the tracer's), whatever thread later calls [`Routes::resolve`].
//! - A connection in the tracer's namespace: the answer of `ip route get DST from SRC` (no
//!   source when it is unspecified): `RTA_GATEWAY` and `RTA_OIF`.
//! - A connection in another namespace (a container behind a veth): first the route to its
//!   *source* in the tracer's namespace, whose output interface is the host side of the
//!   container's link; then `ip route get DST from SRC iif THAT`, the route a packet from the
//!   container takes when the host forwards it. When the first step fails (or finds the source
//!   local to the host) there is no Via, counted in `route_lookups_failed`.
//!
//! The interface name comes from `RTM_GETLINK` on the same socket (so it is the name in the
//! tracer's namespace whatever the caller's), cached for the TTL.
//!
//! The cache: an LRU keyed by (netns, source, destination), at most
//! [`RoutesConfig::max_entries`] entries (the least recently used goes), each valid for
//! [`RoutesConfig::ttl`]; answers without a route (no route, unreachable, blackhole, a local
//! destination) and failed lookups are cached too, for [`RoutesConfig::negative_ttl`], so a warm
//! cache never costs a netlink round trip per connection per call. A call takes the cache lock
//! once to answer what it can, asks the kernel for the distinct missing keys without the cache
//! lock (one netlink lock), then takes the cache lock again to store the answers.
//!
//! Counters (per connection looked up, `hits + misses` = connections; a miss is a distinct key
//! looked up in the call: one `RTM_GETROUTE`, two for another namespace, none once the call
//! has had [`MAX_UNANSWERED_PER_CALL`] questions unanswered): see [`RouteCounters`].

pub(crate) mod netlink;

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use lru::LruCache;
use parking_lot::Mutex;
use rustc_hash::{FxBuildHasher, FxHashMap};

use self::netlink::{Answer, NetlinkRoutes, Query, RouteSource};
use crate::{
    Error, counter_set,
    model::{ConnectionStats, Direction, Via},
    telemetry::{CounterSource, Sample, bump},
};

/// Configuration of the route cache.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoutesConfig {
    /// Look routes up at all (default on).
    pub enabled: bool,
    /// How long a found route is reused before it is asked again (default 2 min, as Datadog).
    pub ttl: Duration,
    /// How long an answer without a route (or a failed lookup) is reused (default 30 s).
    pub negative_ttl: Duration,
    /// Most cached (netns, source, destination) keys (default 65 536); the least recently
    /// used is dropped beyond.
    pub max_entries: usize,
    /// Longest wait for one netlink answer (default 1 s).
    pub netlink_timeout: Duration,
}

impl Default for RoutesConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            ttl: Duration::from_secs(120),
            negative_ttl: Duration::from_secs(30),
            max_entries: 65_536,
            netlink_timeout: Duration::from_secs(1),
        }
    }
}

impl RoutesConfig {
    /// Checks the sizes: no zero TTL, size or timeout.
    pub fn validate(&self) -> crate::Result<()> {
        let zero = |what: &str| {
            Err(Error::InvalidConfig(format!(
                "routes: {what} must not be 0"
            )))
        };
        if self.ttl.is_zero() {
            return zero("ttl");
        }
        if self.negative_ttl.is_zero() {
            return zero("negative_ttl");
        }
        if self.max_entries == 0 {
            return zero("max_entries");
        }
        if self.netlink_timeout.is_zero() {
            return zero("netlink_timeout");
        }
        Ok(())
    }
}

counter_set! {
    /// Counters of the route cache.
    pub struct RouteCounters {
        /// Connections whose route came from the cache (or from a lookup made earlier in the same call).
        route_cache_hits: Activity,
        /// Keys looked up because they were missing from the cache (or expired), one per key and call.
        route_cache_misses: Activity,
        /// Cache entries found past their TTL (each then counts as a miss).
        route_cache_expired: Activity,
        /// Cache entries dropped because the cache was full (least recently used first).
        route_cache_evicted: Activity,
        /// Lookups whose answer was "no route" (no route, unreachable, blackhole, prohibit, local destination).
        route_negative_answers: Activity,
        /// Lookups that failed (netlink error, timeout, malformed answer, container's host interface not found): no Via.
        route_lookups_failed: Loss,
        /// Connections left without a Via because the netlink socket could not be opened at start.
        route_unavailable: Loss,
        /// Entries in the route cache.
        route_cache_entries: Gauge,
    }
}

/// What a lookup ended with, as cached.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Outcome {
    /// A route.
    Via(Via),
    /// The kernel has no route (negative entry).
    NoRoute,
    /// The lookup failed (negative entry too, so a broken lookup is not retried per call).
    Failed,
}

impl Outcome {
    fn via(&self) -> Option<Via> {
        match self {
            Self::Via(via) => Some(via.clone()),
            Self::NoRoute | Self::Failed => None,
        }
    }
}

/// Cache key: the connection's namespace inode, source and destination.
type Key = (u32, IpAddr, IpAddr);

#[derive(Debug)]
struct Entry {
    outcome: Outcome,
    expires: Instant,
}

/// The time source (injected by unit tests).
type Clock = Arc<dyn Fn() -> Instant + Send + Sync>;

/// The kernel side of lookups: the route source and the interface-name cache, under one lock.
struct Lookups {
    source: Box<dyn RouteSource>,
    names: HashMap<u32, (Option<Arc<str>>, Instant)>,
    /// Questions left unanswered (timeout, I/O error) in the current call.
    unanswered: u32,
}

/// Unanswered questions after which a call stops asking: its remaining keys fail at once (and
/// are cached as failures), so a netlink socket that stopped answering costs a call at most
/// this many timeouts.
const MAX_UNANSWERED_PER_CALL: u32 = 2;

/// Most interface names kept (the table is cleared when it reaches this).
const MAX_NAMES: usize = 4096;

impl Lookups {
    fn name(&mut self, index: u32, now: Instant, ttl: Duration) -> Option<Arc<str>> {
        if let Some((name, expires)) = self.names.get(&index)
            && *expires > now
        {
            return name.clone();
        }
        if self.unanswered >= MAX_UNANSWERED_PER_CALL {
            return None;
        }
        let name = self.source.link_name(index);
        if self.names.len() >= MAX_NAMES {
            self.names.clear();
        }
        self.names
            .insert(index, (name.clone(), now.checked_add(ttl).unwrap_or(now)));
        name
    }

    fn via(&mut self, gateway: Option<IpAddr>, oif: u32, now: Instant, ttl: Duration) -> Via {
        Via {
            gateway,
            interface_index: oif,
            interface_name: self.name(oif, now, ttl),
        }
    }

    /// Asks the source, counting the questions left unanswered.
    fn route(&mut self, query: &Query) -> Answer {
        let answer = self.source.route(query);
        if answer == Answer::Unanswered {
            self.unanswered = self.unanswered.saturating_add(1);
        }
        answer
    }

    /// One key's lookup, as in the module docs; fails at once once the call has had
    /// [`MAX_UNANSWERED_PER_CALL`] unanswered questions.
    fn lookup(
        &mut self,
        key: &Key,
        own_netns: Option<u32>,
        now: Instant,
        ttl: Duration,
    ) -> Outcome {
        if self.unanswered >= MAX_UNANSWERED_PER_CALL {
            return Outcome::Failed;
        }
        let (netns, src, dst) = *key;
        let src = (!src.is_unspecified()).then_some(src);
        let own = own_netns.is_none_or(|own| own == netns);
        let iif = if own {
            None
        } else {
            // The host side of the container's link: where the host routes the source to.
            let Some(src) = src else {
                return Outcome::Failed;
            };
            match self.route(&Query {
                dst: src,
                src: None,
                iif: None,
            }) {
                Answer::Route { oif, .. } => Some(oif),
                Answer::Local { .. } | Answer::NoRoute(_) | Answer::Failed | Answer::Unanswered => {
                    return Outcome::Failed;
                }
            }
        };
        match self.route(&Query { dst, src, iif }) {
            Answer::Route { gateway, oif } => Outcome::Via(self.via(gateway, oif, now, ttl)),
            Answer::Local { .. } | Answer::NoRoute(_) => Outcome::NoRoute,
            Answer::Failed | Answer::Unanswered => Outcome::Failed,
        }
    }
}

/// The working parts, when the cache runs.
struct Active {
    /// Inode of the tracer's network namespace (`None`: unknown, every connection is then
    /// looked up as the tracer's own).
    own_netns: Option<u32>,
    cache: Mutex<LruCache<Key, Entry, FxBuildHasher>>,
    lookups: Mutex<Lookups>,
    clock: Clock,
    ttl: Duration,
    negative_ttl: Duration,
    max_entries: usize,
}

enum State {
    /// `enabled: false`.
    Disabled,
    /// Enabled, but the socket could not be opened.
    Unavailable,
    /// Running.
    Active(Box<Active>),
}

/// The route cache (see the module docs).
pub struct Routes {
    state: State,
    counters: RouteCounters,
}

impl Routes {
    /// Starts the cache as configured: opens the netlink socket in the calling thread's network
    /// namespace. Never fails: a socket that cannot be opened is said once in the log, and the
    /// connections then left without a Via are counted (`route_unavailable`).
    pub fn start(config: &RoutesConfig) -> Self {
        if !config.enabled {
            return Self {
                state: State::Disabled,
                counters: RouteCounters::default(),
            };
        }
        match NetlinkRoutes::open(config.netlink_timeout) {
            Ok(source) => {
                let own_netns = own_netns();
                Self::with_source(config, Box::new(source), own_netns, Arc::new(Instant::now))
            }
            Err(error) => {
                tracing::warn!(
                    %error,
                    "routes: cannot open a NETLINK_ROUTE socket; outgoing connections get no gateway or interface"
                );
                Self {
                    state: State::Unavailable,
                    counters: RouteCounters::default(),
                }
            }
        }
    }

    fn with_source(
        config: &RoutesConfig,
        source: Box<dyn RouteSource>,
        own_netns: Option<u32>,
        clock: Clock,
    ) -> Self {
        Self {
            state: State::Active(Box::new(Active {
                own_netns,
                cache: Mutex::new(LruCache::unbounded_with_hasher(FxBuildHasher)),
                lookups: Mutex::new(Lookups {
                    source,
                    names: HashMap::new(),
                    unanswered: 0,
                }),
                clock,
                ttl: config.ttl,
                negative_ttl: config.negative_ttl,
                max_entries: config.max_entries.max(1),
            })),
            counters: RouteCounters::default(),
        }
    }

    /// Fills `via` of the outgoing connections to other hosts.
    pub fn resolve(&self, conns: &mut [ConnectionStats]) {
        let active = match &self.state {
            State::Disabled => return,
            State::Unavailable => {
                let n = conns.iter().filter(|c| wants_route(c)).count();
                bump(&self.counters.route_unavailable, n as u64);
                return;
            }
            State::Active(active) => active,
        };
        let c = &self.counters;
        let now = (active.clock)();
        // Keys to ask the kernel for, and which connection waits for which.
        let mut pending: Vec<Key> = Vec::new();
        let mut pending_index: FxHashMap<Key, usize> = FxHashMap::default();
        let mut waiting: Vec<(usize, usize)> = Vec::new();
        // Counted here, bumped once per call: an atomic add per connection showed in the bench.
        let (mut hits, mut misses, mut expired) = (0u64, 0u64, 0u64);
        {
            let mut cache = active.cache.lock();
            for (i, conn) in conns.iter_mut().enumerate() {
                if !wants_route(conn) {
                    continue;
                }
                let key = (conn.tuple.netns, conn.tuple.src, conn.tuple.dst);
                match cache.get(&key) {
                    Some(entry) if entry.expires > now => {
                        hits += 1;
                        conn.via = entry.outcome.via();
                        continue;
                    }
                    Some(_) => {
                        expired += 1;
                        cache.pop(&key);
                    }
                    None => {}
                }
                let slot = match pending_index.get(&key) {
                    Some(&slot) => {
                        hits += 1;
                        slot
                    }
                    None => {
                        misses += 1;
                        pending.push(key);
                        pending_index.insert(key, pending.len() - 1);
                        pending.len() - 1
                    }
                };
                waiting.push((i, slot));
            }
            c.route_cache_entries
                .store(cache.len() as u64, Ordering::Relaxed);
        }
        bump(&c.route_cache_hits, hits);
        bump(&c.route_cache_misses, misses);
        bump(&c.route_cache_expired, expired);
        if pending.is_empty() {
            return;
        }
        let outcomes: Vec<Outcome> = {
            let mut lookups = active.lookups.lock();
            lookups.unanswered = 0;
            pending
                .iter()
                .map(|key| lookups.lookup(key, active.own_netns, now, active.ttl))
                .collect()
        };
        {
            let mut cache = active.cache.lock();
            for (key, outcome) in pending.iter().zip(&outcomes) {
                let ttl = match outcome {
                    Outcome::Via(_) => active.ttl,
                    Outcome::NoRoute => {
                        bump(&c.route_negative_answers, 1);
                        active.negative_ttl
                    }
                    Outcome::Failed => {
                        bump(&c.route_lookups_failed, 1);
                        active.negative_ttl
                    }
                };
                let entry = Entry {
                    outcome: outcome.clone(),
                    expires: now.checked_add(ttl).unwrap_or(now),
                };
                cache.put(*key, entry);
                while cache.len() > active.max_entries {
                    if cache.pop_lru().is_none() {
                        break;
                    }
                    bump(&c.route_cache_evicted, 1);
                }
            }
            c.route_cache_entries
                .store(cache.len() as u64, Ordering::Relaxed);
        }
        for (i, slot) in waiting {
            if let (Some(conn), Some(outcome)) = (conns.get_mut(i), outcomes.get(slot)) {
                conn.via = outcome.via();
            }
        }
    }
}

/// Whether a connection gets a route: outgoing, not intra-host, to a destination that is
/// neither loopback nor unspecified, with both addresses of one family.
fn wants_route(conn: &ConnectionStats) -> bool {
    let t = &conn.tuple;
    conn.direction == Direction::Outgoing
        && !conn.intra_host
        && !t.dst.is_loopback()
        && !t.dst.is_unspecified()
        && t.src.is_ipv4() == t.dst.is_ipv4()
}

/// The inode of the calling thread's network namespace.
fn own_netns() -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    match std::fs::metadata("/proc/thread-self/ns/net") {
        Ok(meta) => u32::try_from(meta.ino()).ok(),
        Err(error) => {
            tracing::warn!(
                %error,
                "routes: cannot read this thread's network namespace; every connection is looked up as the tracer's own"
            );
            None
        }
    }
}

impl CounterSource for Routes {
    fn collect(&self, out: &mut Vec<Sample>) {
        self.counters.collect(out);
    }
}

#[cfg(test)]
mod tests;
