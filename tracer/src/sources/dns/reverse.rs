//! Reverse DNS: IP → the names that resolved to it (the question name and every CNAME alias of
//! the chain), each until its answer's TTL runs out.
//!
//! Bounded: at most `max_ips` addresses (least recently used evicted first) and at most
//! `max_names_per_ip` names per address (a new name then takes the place of an expired one, or
//! is dropped). The addresses [`ReverseCache::names_for`] returned are pinned until its next
//! call: never evicted, and their expired names not pruned, so what a caller was just given
//! stays in place while it holds the connections that use it.

use std::{net::IpAddr, num::NonZeroUsize, sync::Arc};

use lru::LruCache;
use rustc_hash::{FxBuildHasher, FxHashMap, FxHashSet};

/// One (IP, name) binding.
#[derive(Debug)]
struct Binding {
    name: Arc<str>,
    /// CLOCK_MONOTONIC ns after which it is no longer returned.
    deadline_ns: u64,
}

/// What an insert did, for the counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct InsertReport {
    /// (IP, name) bindings added or refreshed.
    pub bindings: u64,
    /// IPs evicted (least recently used) to make room.
    pub ips_evicted: u64,
    /// IPs not added because every held IP is pinned.
    pub ips_dropped: u64,
    /// Names not added because their IP holds `max_names_per_ip` unexpired names.
    pub names_dropped: u64,
}

/// What a lookup did, for the counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct LookupReport {
    /// Distinct IPs looked up.
    pub lookups: u64,
    /// Of them, those with at least one unexpired name.
    pub hits: u64,
    /// IPs dropped because all their names had expired.
    pub expired: u64,
}

#[derive(Debug)]
pub(crate) struct ReverseCache {
    ips: LruCache<IpAddr, Vec<Binding>, FxBuildHasher>,
    pinned: FxHashSet<IpAddr>,
    max_ips: usize,
    max_names_per_ip: usize,
}

impl ReverseCache {
    pub fn new(max_ips: usize, max_names_per_ip: usize) -> Self {
        Self {
            ips: LruCache::with_hasher(
                NonZeroUsize::new(max_ips).unwrap_or(NonZeroUsize::MIN),
                FxBuildHasher,
            ),
            pinned: FxHashSet::default(),
            max_ips: max_ips.max(1),
            max_names_per_ip: max_names_per_ip.max(1),
        }
    }

    /// IPs held.
    pub fn len(&self) -> usize {
        self.ips.len()
    }

    /// Binds `ip` to each of `names` until `now_ns + ttl`.
    pub fn insert(
        &mut self,
        ip: IpAddr,
        names: &[String],
        ttl_s: u32,
        now_ns: u64,
    ) -> InsertReport {
        let mut report = InsertReport::default();
        if names.is_empty() {
            return report;
        }
        let deadline_ns = now_ns.saturating_add(u64::from(ttl_s).saturating_mul(1_000_000_000));
        if !self.ips.contains(&ip) && !self.make_room(&mut report) {
            report.ips_dropped += 1;
            return report;
        }
        let pinned = self.pinned.contains(&ip);
        let bindings = self.ips.get_or_insert_mut(ip, Vec::new);
        if !pinned {
            bindings.retain(|b| b.deadline_ns > now_ns);
        }
        for name in names {
            if let Some(b) = bindings.iter_mut().find(|b| *b.name == **name) {
                b.deadline_ns = b.deadline_ns.max(deadline_ns);
            } else if bindings.len() < self.max_names_per_ip {
                bindings.push(Binding {
                    name: Arc::from(name.as_str()),
                    deadline_ns,
                });
            } else if let Some(b) = bindings.iter_mut().find(|b| b.deadline_ns <= now_ns) {
                // Only a pinned IP keeps expired names; take the place of one.
                *b = Binding {
                    name: Arc::from(name.as_str()),
                    deadline_ns,
                };
            } else {
                report.names_dropped += 1;
                continue;
            }
            report.bindings += 1;
        }
        report
    }

    /// Evicts the least recently used unpinned IP if the cache is full; false if every IP held
    /// is pinned.
    fn make_room(&mut self, report: &mut InsertReport) -> bool {
        if self.ips.len() < self.max_ips {
            return true;
        }
        // Pinned IPs found at the tail are moved to the head, so each is passed over at most
        // once per turn of the cache.
        for _ in 0..=self.pinned.len() {
            let Some((ip, _)) = self.ips.peek_lru() else {
                return true;
            };
            let ip = *ip;
            if self.pinned.contains(&ip) {
                self.ips.promote(&ip);
            } else {
                self.ips.pop_lru();
                report.ips_evicted += 1;
                return true;
            }
        }
        false
    }

    /// The unexpired names of each IP of `ips` that has any; the IPs returned are pinned until
    /// the next call (the previous call's pins are released first).
    pub fn names_for(
        &mut self,
        ips: impl IntoIterator<Item = IpAddr>,
        now_ns: u64,
        out: &mut FxHashMap<IpAddr, Vec<Arc<str>>>,
    ) -> LookupReport {
        self.pinned.clear();
        let mut report = LookupReport::default();
        let mut seen = FxHashSet::default();
        for ip in ips {
            if !seen.insert(ip) {
                continue;
            }
            report.lookups += 1;
            let Some(bindings) = self.ips.get(&ip) else {
                continue;
            };
            let names: Vec<Arc<str>> = bindings
                .iter()
                .filter(|b| b.deadline_ns > now_ns)
                .map(|b| Arc::clone(&b.name))
                .collect();
            if names.is_empty() {
                self.ips.pop(&ip);
                report.expired += 1;
                continue;
            }
            report.hits += 1;
            self.pinned.insert(ip);
            out.insert(ip, names);
        }
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    fn lookup(c: &mut ReverseCache, ips: &[IpAddr], now: u64) -> FxHashMap<IpAddr, Vec<String>> {
        let mut out = FxHashMap::default();
        c.names_for(ips.iter().copied(), now, &mut out);
        out.into_iter()
            .map(|(k, v)| (k, v.iter().map(|s| s.to_string()).collect()))
            .collect()
    }

    #[test]
    fn names_expire_with_their_ttl() {
        let mut c = ReverseCache::new(10, 10);
        c.insert(ip(1), &names(&["a", "b"]), 10, 0);
        c.insert(ip(1), &names(&["c"]), 30, 0);
        assert_eq!(
            lookup(&mut c, &[ip(1)], 10 * S - 1)[&ip(1)],
            ["a", "b", "c"]
        );
        assert_eq!(lookup(&mut c, &[ip(1)], 10 * S)[&ip(1)], ["c"]);
        // A refresh extends the deadline (to 40 s; "b" stays expired, "c" ends at 30 s).
        c.insert(ip(1), &names(&["a"]), 30, 10 * S);
        assert_eq!(lookup(&mut c, &[ip(1)], 30 * S - 1)[&ip(1)], ["a", "c"]);
        assert_eq!(lookup(&mut c, &[ip(1)], 30 * S)[&ip(1)], ["a"]);
        // All expired: not returned, and dropped.
        let mut out = FxHashMap::default();
        let report = c.names_for([ip(1), ip(1), ip(2)], 40 * S, &mut out);
        assert!(out.is_empty());
        assert_eq!(
            report,
            LookupReport {
                lookups: 2,
                hits: 0,
                expired: 1
            }
        );
        assert_eq!(c.len(), 0);
    }

    #[test]
    fn names_per_ip_are_capped() {
        let mut c = ReverseCache::new(10, 2);
        let r = c.insert(ip(1), &names(&["a", "b", "c"]), 10, 0);
        assert_eq!((r.bindings, r.names_dropped), (2, 1));
        // Once "a" and "b" expired, new names take their place.
        let r = c.insert(ip(1), &names(&["c"]), 10, 11 * S);
        assert_eq!((r.bindings, r.names_dropped), (1, 0));
        assert_eq!(lookup(&mut c, &[ip(1)], 12 * S)[&ip(1)], ["c"]);
    }

    #[test]
    fn least_recently_used_ip_is_evicted_but_never_a_pinned_one() {
        let mut c = ReverseCache::new(2, 10);
        c.insert(ip(1), &names(&["a"]), 100, 0);
        c.insert(ip(2), &names(&["b"]), 100, 0);
        // Pin 1 (the least recently used).
        assert_eq!(lookup(&mut c, &[ip(1)], S).len(), 1);
        c.insert(ip(2), &names(&["b"]), 100, 0); // 2 used again: 1 is at the tail
        let r = c.insert(ip(3), &names(&["c"]), 100, 0);
        assert_eq!((r.ips_evicted, r.ips_dropped), (1, 0));
        let got = lookup(&mut c, &[ip(1), ip(2), ip(3)], S);
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got.contains_key(&ip(1)) && got.contains_key(&ip(3)));
        // Both held IPs now pinned: a new one is dropped.
        let r = c.insert(ip(4), &names(&["d"]), 100, 0);
        assert_eq!((r.ips_evicted, r.ips_dropped), (0, 1));
        // The next call releases the pins.
        lookup(&mut c, &[], S);
        let r = c.insert(ip(4), &names(&["d"]), 100, 0);
        assert_eq!((r.ips_evicted, r.ips_dropped), (1, 0));
    }

    #[test]
    fn pinned_ips_keep_expired_names_until_the_next_call() {
        let mut c = ReverseCache::new(10, 1);
        c.insert(ip(1), &names(&["a"]), 10, 0);
        assert_eq!(lookup(&mut c, &[ip(1)], S)[&ip(1)], ["a"]);
        // "a" expired at 10 s but ip 1 is pinned: a new name replaces it in place rather than
        // the binding being pruned first; the pinned entry itself stays.
        let r = c.insert(ip(2), &names(&["z"]), 10, 11 * S);
        assert_eq!(r.bindings, 1);
        assert_eq!(c.len(), 2);
        // Expiry still applies to what the next call returns.
        assert!(lookup(&mut c, &[ip(1)], 11 * S).is_empty());
    }
}
