//! The bounded table of NAT translations: pure data, no I/O, every time passed in.
//!
//! Each NAT'd conntrack entry is held under two keys, as Datadog's conntracker registers it:
//! - its *original* tuple, whose translation is the *reply* tuple (what a connection opened on
//!   this host towards a NATed address needs: the real server, and itself as the server sees
//!   it);
//! - its *reply* tuple, whose translation is the *original* tuple (what the other side of the
//!   NAT'd connection, when it runs on this host, needs: the real client, and itself as the
//!   client addressed it). For an intra-host pair the state pipeline removes this one from the
//!   incoming side (`state/intra_host.rs`).
//!
//! A key is `(netns, protocol, src, sport, dst, dport)`. The other key of an entry is derived
//! from a translation ([`Key::peer`]), so nothing links the two but their content: a closed
//! connection takes (removes) only the key it matched, a DESTROY marks both.
//!
//! Destroyed entries stay for a grace period (a close may be stored after conntrack forgot the
//! connection), then go. The whole table is one LRU of `capacity` keys.

use std::{
    collections::{HashSet, VecDeque},
    net::IpAddr,
    num::NonZeroUsize,
    time::{Duration, Instant},
};

use lru::LruCache;

use super::parse::{CtEntry, CtTuple, IPPROTO_TCP, IPPROTO_UDP};
use crate::model::{ConnectionTuple, IpTranslation, Protocol};

/// One direction of a NAT'd connection in one namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    /// Namespace inode.
    pub netns: u32,
    /// IP protocol number (TCP or UDP).
    pub proto: u8,
    /// Source address (IPv4-mapped IPv6 addresses as IPv4).
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
}

impl Key {
    /// The key of a connection as the socket sees it, in `netns`.
    pub(crate) fn of_conn(netns: u32, t: &ConnectionTuple) -> Self {
        Self {
            netns,
            proto: match t.protocol {
                Protocol::Tcp => IPPROTO_TCP,
                Protocol::Udp => IPPROTO_UDP,
            },
            src: t.src.to_canonical(),
            dst: t.dst.to_canonical(),
            sport: t.sport,
            dport: t.dport,
        }
    }

    /// The key of one direction of a conntrack entry, in `netns`.
    pub(crate) fn of_ct(netns: u32, t: &CtTuple) -> Self {
        Self {
            netns,
            proto: t.proto,
            src: t.src.to_canonical(),
            dst: t.dst.to_canonical(),
            sport: t.sport,
            dport: t.dport,
        }
    }

    /// The other key of the entry this key translates to `t`.
    #[cfg(test)]
    fn peer(&self, t: &IpTranslation) -> Self {
        Self {
            netns: self.netns,
            proto: self.proto,
            src: t.repl_src_ip,
            dst: t.repl_dst_ip,
            sport: t.repl_sport,
            dport: t.repl_dport,
        }
    }
}

/// `t` as a translation.
fn translation(t: &CtTuple) -> IpTranslation {
    IpTranslation {
        repl_src_ip: t.src.to_canonical(),
        repl_dst_ip: t.dst.to_canonical(),
        repl_sport: t.sport,
        repl_dport: t.dport,
    }
}

#[derive(Clone, Copy, Debug)]
struct Slot {
    translation: IpTranslation,
    /// When conntrack destroyed the entry (`None` while it lives).
    destroyed: Option<Instant>,
}

/// What an insertion did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Inserted {
    /// The entry was NAT'd TCP or UDP and is held.
    pub added: bool,
    /// Keys of other entries pushed out of the full table.
    pub evicted: u64,
}

/// The translations (see the module docs).
pub(crate) struct Table {
    lru: LruCache<Key, Slot>,
    /// Destroy marks in time order: `(when, key)`; a mark whose slot has since been removed,
    /// re-created or re-marked is skipped when it comes due.
    destroyed: VecDeque<(Instant, Key)>,
    grace: Duration,
}

impl Table {
    pub(crate) fn new(capacity: NonZeroUsize, grace: Duration) -> Self {
        Self {
            lru: LruCache::new(capacity),
            destroyed: VecDeque::new(),
            grace,
        }
    }

    /// Keys held.
    pub(crate) fn len(&self) -> usize {
        self.lru.len()
    }

    /// Holds a NAT'd TCP/UDP entry under both its keys (a live entry: a destroy mark is
    /// cleared). Anything else is not held.
    pub(crate) fn insert(&mut self, netns: u32, e: &CtEntry) -> Inserted {
        let mut out = Inserted::default();
        if !e.is_nat() || !matches!(e.orig.proto, IPPROTO_TCP | IPPROTO_UDP) {
            return out;
        }
        let orig = Key::of_ct(netns, &e.orig);
        let reply = Key::of_ct(netns, &e.reply);
        for (key, value) in [(orig, &e.reply), (reply, &e.orig)] {
            let slot = Slot {
                translation: translation(value),
                destroyed: None,
            };
            if let Some((old, _)) = self.lru.push(key, slot)
                && old != key
            {
                out.evicted += 1;
            }
        }
        out.added = true;
        out
    }

    /// Marks both keys of a destroyed entry (if held); they go after the grace period.
    /// Returns whether anything was held.
    pub(crate) fn destroy(&mut self, netns: u32, e: &CtEntry, now: Instant) -> bool {
        let mut held = false;
        for key in [Key::of_ct(netns, &e.orig), Key::of_ct(netns, &e.reply)] {
            if let Some(slot) = self.lru.peek_mut(&key) {
                held = true;
                if slot.destroyed.is_none() {
                    slot.destroyed = Some(now);
                    self.destroyed.push_back((now, key));
                }
            }
        }
        held
    }

    /// Drops destroyed keys whose grace period is over at `now`. Returns how many. The queue of
    /// marks is bounded by the capacity: past it, the oldest marks come due early.
    pub(crate) fn expire(&mut self, now: Instant) -> u64 {
        let bound = self.lru.cap().get();
        let mut dropped = 0;
        while let Some(&(when, key)) = self.destroyed.front() {
            let due = now.saturating_duration_since(when) >= self.grace;
            if !due && self.destroyed.len() <= bound {
                break;
            }
            self.destroyed.pop_front();
            if self
                .lru
                .peek(&key)
                .is_some_and(|slot| slot.destroyed == Some(when))
            {
                self.lru.pop(&key);
                dropped += 1;
            }
        }
        dropped
    }

    /// The translation of `key` (refreshing its recency).
    pub(crate) fn get(&mut self, key: &Key) -> Option<IpTranslation> {
        self.lru.get(key).map(|slot| slot.translation)
    }

    /// The translation of `key`, which is then forgotten (its connection ended). The entry's
    /// other key stays: the other side of the connection may still be open on this host.
    pub(crate) fn take(&mut self, key: &Key) -> Option<IpTranslation> {
        self.lru.pop(key).map(|slot| slot.translation)
    }

    /// After a fresh dump of `netns` listed `seen` (both keys of each NAT'd entry): the keys of
    /// `netns` it did not list were destroyed while events were lost; they are marked destroyed
    /// now (so they still get the grace period). Returns how many were marked.
    pub(crate) fn mark_missing(&mut self, netns: u32, seen: &HashSet<Key>, now: Instant) -> u64 {
        let mut marked = 0;
        for (key, slot) in self.lru.iter_mut() {
            if key.netns == netns && slot.destroyed.is_none() && !seen.contains(key) {
                slot.destroyed = Some(now);
                self.destroyed.push_back((now, *key));
                marked += 1;
            }
        }
        marked
    }

    /// Drops every key of `netns` (its socket was closed). Returns how many.
    pub(crate) fn purge(&mut self, netns: u32) -> u64 {
        let keys: Vec<Key> = self
            .lru
            .iter()
            .filter(|(key, _)| key.netns == netns)
            .map(|(key, _)| *key)
            .collect();
        for key in &keys {
            self.lru.pop(key);
        }
        keys.len() as u64
    }

    /// Whether `key`'s entry is held under its other key too (tests).
    #[cfg(test)]
    fn has_peer(&self, key: &Key) -> bool {
        self.lru
            .peek(key)
            .is_some_and(|slot| self.lru.contains(&key.peer(&slot.translation)))
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::{
        super::parse::tests::{dnat_entry, v4},
        *,
    };
    use crate::model::ConnectionTuple;

    const NS: u32 = 4_026_531_840;

    fn table(capacity: usize) -> Table {
        Table::new(
            NonZeroUsize::new(capacity).unwrap(),
            Duration::from_secs(10),
        )
    }

    fn conn(
        src: IpAddr,
        sport: u16,
        dst: IpAddr,
        dport: u16,
        protocol: Protocol,
    ) -> ConnectionTuple {
        ConnectionTuple {
            src,
            dst,
            sport,
            dport,
            pid: 1,
            netns: NS,
            protocol,
        }
    }

    /// The n-th distinct DNATed connection (client port 10000 + n).
    fn nth(n: u16) -> CtEntry {
        let mut e = dnat_entry();
        e.orig.sport = 10_000 + n;
        e.reply.dport = 10_000 + n;
        e
    }

    #[test]
    fn keys_of_v4_v6_tcp_udp_connections_match_the_conntrack_tuples() {
        let e = dnat_entry();
        let c = conn(
            e.orig.src,
            e.orig.sport,
            e.orig.dst,
            e.orig.dport,
            Protocol::Tcp,
        );
        assert_eq!(Key::of_conn(NS, &c), Key::of_ct(NS, &e.orig));
        let udp = conn(
            e.orig.src,
            e.orig.sport,
            e.orig.dst,
            e.orig.dport,
            Protocol::Udp,
        );
        assert_eq!(Key::of_conn(NS, &udp).proto, IPPROTO_UDP);
        assert_ne!(Key::of_conn(NS, &udp), Key::of_ct(NS, &e.orig));
        assert_ne!(Key::of_conn(NS + 1, &c), Key::of_ct(NS, &e.orig));
        // An IPv4 peer of an IPv6 socket (v4-mapped) is the IPv4 conntrack entry.
        let mapped = |ip: IpAddr| match ip {
            IpAddr::V4(v4) => IpAddr::V6(v4.to_ipv6_mapped()),
            v6 => v6,
        };
        let c6 = conn(
            mapped(e.orig.src),
            e.orig.sport,
            mapped(e.orig.dst),
            e.orig.dport,
            Protocol::Tcp,
        );
        assert_eq!(Key::of_conn(NS, &c6), Key::of_ct(NS, &e.orig));
        // A real IPv6 tuple keeps its addresses.
        let ip6 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1));
        let k = Key::of_conn(NS, &conn(ip6, 1, ip6, 2, Protocol::Udp));
        assert_eq!((k.src, k.dst, k.proto), (ip6, ip6, IPPROTO_UDP));
    }

    #[test]
    fn the_original_side_translates_to_the_reply_and_the_reply_side_to_the_original() {
        let mut t = table(16);
        let e = dnat_entry();
        assert_eq!(
            t.insert(NS, &e),
            Inserted {
                added: true,
                evicted: 0
            }
        );
        assert_eq!(t.len(), 2);
        // The client (192.0.2.1:40000 -> VIP 203.0.113.10:80) sees the real server and itself
        // as the server sees it (masqueraded).
        let client = Key::of_ct(NS, &e.orig);
        assert_eq!(
            t.get(&client),
            Some(IpTranslation {
                repl_src_ip: v4(198, 51, 100, 2),
                repl_dst_ip: v4(198, 51, 100, 1),
                repl_sport: 8080,
                repl_dport: 40001,
            })
        );
        // The server (198.51.100.2:8080 -> 198.51.100.1:40001) sees the real client and the
        // address it was reached at.
        let server = Key::of_ct(NS, &e.reply);
        assert_eq!(
            t.get(&server),
            Some(IpTranslation {
                repl_src_ip: v4(192, 0, 2, 1),
                repl_dst_ip: v4(203, 0, 113, 10),
                repl_sport: 40000,
                repl_dport: 80,
            })
        );
        assert!(t.has_peer(&client) && t.has_peer(&server));
        // Another namespace, protocol or port: nothing.
        let mut other = client;
        other.netns += 1;
        assert_eq!(t.get(&other), None);
        other = client;
        other.proto = IPPROTO_UDP;
        assert_eq!(t.get(&other), None);
    }

    #[test]
    fn entries_without_nat_or_of_other_protocols_are_not_held() {
        let mut t = table(16);
        let mut plain = dnat_entry();
        plain.status = 1 << 3;
        assert!(!t.insert(NS, &plain).added);
        let mut icmp = dnat_entry();
        icmp.orig.proto = 1;
        icmp.reply.proto = 1;
        assert!(!t.insert(NS, &icmp).added);
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn a_full_table_evicts_the_least_recently_used_keys_and_counts_them() {
        let mut t = table(6);
        let mut evicted = 0;
        for n in 0..3 {
            evicted += t.insert(NS, &nth(n)).evicted;
        }
        assert_eq!(evicted, 0);
        // Used: entry 0's client key is now the most recent.
        assert!(t.get(&Key::of_ct(NS, &nth(0).orig)).is_some());
        evicted += t.insert(NS, &nth(3)).evicted;
        assert_eq!(evicted, 2);
        assert_eq!(t.len(), 6);
        // Entry 0's reply key and entry 1's original key went; entry 0's client key stayed.
        assert!(t.get(&Key::of_ct(NS, &nth(0).orig)).is_some());
        assert!(t.get(&Key::of_ct(NS, &nth(0).reply)).is_none());
        assert!(t.get(&Key::of_ct(NS, &nth(1).orig)).is_none());
        // Re-inserting a held entry (an event after the dump listed it) evicts nothing.
        assert_eq!(t.insert(NS, &nth(3)).evicted, 0);
        // A flood: 100 entries, 200 keys, into 6 slots.
        let mut t = table(6);
        let total: u64 = (0..100).map(|n| t.insert(NS, &nth(n)).evicted).sum();
        assert_eq!(total, 200 - 6);
    }

    #[test]
    fn destroyed_entries_are_kept_for_the_grace_period_then_dropped() {
        let mut t = table(16);
        let start = Instant::now();
        let e = dnat_entry();
        t.insert(NS, &e);
        assert!(t.destroy(NS, &e, start));
        // Still answered during the grace period.
        assert_eq!(t.expire(start + Duration::from_secs(9)), 0);
        assert!(t.get(&Key::of_ct(NS, &e.orig)).is_some());
        assert_eq!(t.expire(start + Duration::from_secs(10)), 2);
        assert_eq!(t.len(), 0);
        // A destroy of something not held marks nothing.
        assert!(!t.destroy(NS, &e, start));
    }

    #[test]
    fn an_entry_created_again_after_its_destroy_is_not_dropped_by_the_old_mark() {
        let mut t = table(16);
        let start = Instant::now();
        let e = dnat_entry();
        t.insert(NS, &e);
        t.destroy(NS, &e, start);
        t.insert(NS, &e); // the same tuple, a new conntrack entry
        assert_eq!(t.expire(start + Duration::from_secs(60)), 0);
        assert_eq!(t.len(), 2);
        // A key taken before its mark came due is not counted.
        t.destroy(NS, &e, start + Duration::from_secs(61));
        assert!(t.take(&Key::of_ct(NS, &e.orig)).is_some());
        assert_eq!(t.expire(start + Duration::from_secs(100)), 1);
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn take_forgets_only_the_key_of_the_connection_that_ended() {
        let mut t = table(16);
        let e = dnat_entry();
        t.insert(NS, &e);
        let client = Key::of_ct(NS, &e.orig);
        assert!(t.take(&client).is_some());
        assert!(t.take(&client).is_none());
        assert!(t.get(&Key::of_ct(NS, &e.reply)).is_some());
    }

    #[test]
    fn a_resync_marks_what_the_dump_no_longer_lists_and_purge_drops_a_namespace() {
        let mut t = table(16);
        let now = Instant::now();
        t.insert(NS, &nth(0));
        t.insert(NS, &nth(1));
        t.insert(NS + 1, &nth(0));
        let seen: HashSet<Key> = [Key::of_ct(NS, &nth(1).orig), Key::of_ct(NS, &nth(1).reply)]
            .into_iter()
            .collect();
        assert_eq!(t.mark_missing(NS, &seen, now), 2);
        assert_eq!(t.expire(now + Duration::from_secs(10)), 2);
        assert_eq!(t.len(), 4);
        assert_eq!(t.purge(NS + 1), 2);
        assert_eq!(t.len(), 2);
        let _ = Ipv4Addr::LOCALHOST;
    }
}
