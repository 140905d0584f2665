//! Aggregation of the connections of one delta (Datadog's `connectionAggregator`, section 3.9
//! of the reference), and attachment of DNS stats.
//!
//! - Key: the full tuple, the direction, and the source / destination container when the
//!   configuration says so. Only distinct cookies can share a key (the merge already folded
//!   equal cookies): a reconnect on the same tuple, a closed connection plus its successor.
//! - Two connections under one key merge only if their NAT translations are equal or one is
//!   missing, and their protocol stacks are compatible; otherwise both are kept.
//! - Merging sums `monotonic` and `last`, averages RTT and RTT variance, keeps the newest update
//!   time, fills a missing translation, merges protocol layers, failures and DNS stats.
//! - Port roll-up (off by default): a *closed* connection that lived less than the short-lived
//!   threshold is keyed without its ephemeral side (the source port if outgoing, the destination
//!   port if incoming); once two merge, that port (and the matching NAT reply port) becomes 0.
//!
//! The index is keyed by a 64-bit hash of the key with chains through the list, and it only
//! holds the connections being reported (idle connections were already left out), so it costs
//! far less than Datadog's second full-tuple map over every connection.

use std::{
    hash::{BuildHasher, Hash, Hasher},
    sync::Arc,
};

use rustc_hash::{FxBuildHasher, FxHashMap, FxHashSet};

use crate::{
    model::{ConnectionStats, Direction, DnsKey, DnsStatsBatch, DomainStats},
    state::merge::KeepSet,
};

/// Aggregation switches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AggregationConfig {
    /// Keep connections of different source containers apart (Datadog: when process events
    /// are on).
    pub by_source_container: bool,
    /// Keep connections of different destination containers apart (Datadog: with roll-ups).
    pub by_dest_container: bool,
    /// Roll short-lived closed connections up by their non-ephemeral side.
    pub port_rollup: bool,
    /// Closed connections that lived less than this (and more than 0) are short-lived.
    pub short_lived_threshold_ns: u64,
}

impl Default for AggregationConfig {
    fn default() -> Self {
        Self {
            by_source_container: true,
            by_dest_container: false,
            port_rollup: false,
            short_lived_threshold_ns: 120_000_000_000,
        }
    }
}

const NONE: u32 = u32::MAX;

/// Reusable index for one call.
#[derive(Debug, Default)]
pub(crate) struct AggregateScratch {
    heads: FxHashMap<u64, u32>,
    next: Vec<u32>,
    merged: KeepSet,
    rtt: FxHashMap<u32, (u64, u64, u64)>,
    dns_used: FxHashSet<DnsKey>,
}

impl AggregateScratch {
    pub(crate) fn allocated_bytes(&self) -> usize {
        use crate::state::snapshot::hash_map_bytes;
        hash_map_bytes::<u64, u32>(self.heads.capacity())
            + self.next.capacity() * 4
            + self.merged.allocated_bytes()
            + hash_map_bytes::<u32, (u64, u64, u64)>(self.rtt.capacity())
            + hash_map_bytes::<DnsKey, ()>(self.dns_used.capacity())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rollup {
    None,
    WithoutSport,
    WithoutDport,
}

fn rollup_of(conn: &ConnectionStats, cfg: &AggregationConfig) -> Rollup {
    let duration = conn.duration_ns();
    if !cfg.port_rollup
        || !conn.is_closed
        || duration == 0
        || duration >= cfg.short_lived_threshold_ns
    {
        return Rollup::None;
    }
    match conn.direction {
        Direction::Incoming => Rollup::WithoutDport,
        _ => Rollup::WithoutSport,
    }
}

fn key_hash(conn: &ConnectionStats, rollup: Rollup, cfg: &AggregationConfig) -> u64 {
    let mut h = FxBuildHasher.build_hasher();
    let t = &conn.tuple;
    t.src.hash(&mut h);
    t.dst.hash(&mut h);
    if rollup != Rollup::WithoutSport {
        t.sport.hash(&mut h);
    }
    if rollup != Rollup::WithoutDport {
        t.dport.hash(&mut h);
    }
    (t.pid, t.netns, t.protocol, conn.direction, rollup as u8).hash(&mut h);
    if cfg.by_source_container {
        conn.containers.source.hash(&mut h);
    }
    if cfg.by_dest_container {
        conn.containers.dest.hash(&mut h);
    }
    h.finish()
}

fn same_key(
    a: &ConnectionStats,
    b: &ConnectionStats,
    rollup: Rollup,
    cfg: &AggregationConfig,
) -> bool {
    let (x, y) = (&a.tuple, &b.tuple);
    x.src == y.src
        && x.dst == y.dst
        && (rollup == Rollup::WithoutSport || x.sport == y.sport)
        && (rollup == Rollup::WithoutDport || x.dport == y.dport)
        && x.pid == y.pid
        && x.netns == y.netns
        && x.protocol == y.protocol
        && a.direction == b.direction
        && (!cfg.by_source_container || a.containers.source == b.containers.source)
        && (!cfg.by_dest_container || a.containers.dest == b.containers.dest)
}

fn compatible(a: &ConnectionStats, b: &ConnectionStats) -> bool {
    let nat_ok = match (&a.nat, &b.nat) {
        (Some(x), Some(y)) => x == y,
        _ => true,
    };
    nat_ok && a.protocol_stack.is_compatible(&b.protocol_stack)
}

/// Attaches DNS stats: each DNS key's stats (summed over the batches) go to the first
/// connection of the delta whose [`ConnectionStats::dns_key`] matches. Stats without a matching
/// connection are not reported (as Datadog).
pub(crate) fn attach_dns(
    conns: &mut [ConnectionStats],
    batches: &[Arc<DnsStatsBatch>],
    scratch: &mut AggregateScratch,
) {
    scratch.dns_used.clear();
    if batches.iter().all(|b| b.is_empty()) {
        return;
    }
    for conn in conns.iter_mut() {
        let Some(key) = conn.dns_key() else {
            continue;
        };
        if !scratch.dns_used.insert(key) {
            continue;
        }
        let mut attached: Option<DomainStats> = None;
        for stats in batches.iter().filter_map(|b| b.0.get(&key)) {
            match attached.as_mut() {
                Some(acc) => acc.merge(stats),
                None => attached = Some(stats.clone()),
            }
        }
        if let Some(stats) = attached {
            match conn.dns.as_mut() {
                Some(existing) => existing.merge(&stats),
                None => conn.dns = Some(Box::new(stats)),
            }
        }
    }
}

/// Aggregates `conns` in place (see the module docs); order is kept.
pub(crate) fn aggregate(
    conns: &mut Vec<ConnectionStats>,
    cfg: &AggregationConfig,
    scratch: &mut AggregateScratch,
) {
    let len = conns.len();
    if len < 2 || len >= NONE as usize {
        return;
    }
    scratch.heads.clear();
    scratch.rtt.clear();
    scratch.next.clear();
    scratch.next.resize(len, NONE);
    scratch.merged.reset(len);
    let mut any_merged = false;
    for i in 0..len {
        let (before, rest) = conns.split_at_mut(i);
        let Some(conn) = rest.first_mut() else {
            break;
        };
        let rollup = rollup_of(conn, cfg);
        let hash = key_hash(conn, rollup, cfg);
        // Chains run newest first; the earliest compatible connection receives the merge.
        let mut candidate = scratch.heads.get(&hash).copied().unwrap_or(NONE);
        let mut target_index = None;
        while candidate != NONE {
            let c = candidate as usize;
            if let Some(target) = before.get(c)
                && rollup_of(target, cfg) == rollup
                && same_key(target, conn, rollup, cfg)
                && compatible(target, conn)
            {
                target_index = Some(c);
            }
            candidate = scratch.next.get(c).copied().unwrap_or(NONE);
        }
        let merged = match target_index.and_then(|c| before.get_mut(c).map(|t| (c, t))) {
            Some((c, target)) => {
                merge_into(target, conn, c as u32, rollup, &mut scratch.rtt);
                true
            }
            None => false,
        };
        if merged {
            scratch.merged.set(i, true);
            any_merged = true;
        } else {
            let previous_head = scratch.heads.insert(hash, i as u32).unwrap_or(NONE);
            if let Some(slot) = scratch.next.get_mut(i) {
                *slot = previous_head;
            }
        }
    }
    if !any_merged {
        return;
    }
    for (&index, &(rtt_sum, var_sum, count)) in &scratch.rtt {
        if let Some(conn) = conns.get_mut(index as usize) {
            let count = count.max(1);
            conn.rtt_us = u32::try_from(rtt_sum / count).unwrap_or(u32::MAX);
            conn.rtt_var_us = u32::try_from(var_sum / count).unwrap_or(u32::MAX);
        }
    }
    let mut index = 0;
    let merged = &scratch.merged;
    conns.retain(|_| {
        let dropped = merged.get(index);
        index += 1;
        !dropped
    });
}

fn merge_into(
    target: &mut ConnectionStats,
    other: &ConnectionStats,
    target_index: u32,
    rollup: Rollup,
    rtt: &mut FxHashMap<u32, (u64, u64, u64)>,
) {
    let acc = rtt.entry(target_index).or_insert((
        u64::from(target.rtt_us),
        u64::from(target.rtt_var_us),
        1,
    ));
    acc.0 += u64::from(other.rtt_us);
    acc.1 += u64::from(other.rtt_var_us);
    acc.2 += 1;
    target.monotonic = target.monotonic.add(&other.monotonic);
    target.last = target.last.add(&other.last);
    target.last_update_ns = target.last_update_ns.max(other.last_update_ns);
    if target.nat.is_none() {
        target.nat = other.nat;
    }
    target.protocol_stack.merge(&other.protocol_stack);
    target.static_tags |= other.static_tags;
    target.tcp_failures.merge(&other.tcp_failures);
    if let Some(dns) = &other.dns {
        match target.dns.as_mut() {
            Some(mine) => mine.merge(dns),
            None => target.dns = Some(dns.clone()),
        }
    }
    match rollup {
        Rollup::None => {}
        Rollup::WithoutSport => {
            target.tuple.sport = 0;
            if let Some(n) = target.nat.as_mut() {
                n.repl_dport = 0;
            }
        }
        Rollup::WithoutDport => {
            target.tuple.dport = 0;
            if let Some(n) = target.nat.as_mut() {
                n.repl_sport = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{
        model::{DnsQueryType, DnsStats, IpTranslation, Protocol, ProtocolStack},
        state::test_support::{conn, conn_between, ip},
    };

    fn run(conns: &mut Vec<ConnectionStats>, cfg: &AggregationConfig) {
        aggregate(conns, cfg, &mut AggregateScratch::default());
    }

    fn with_traffic(cookie: u64, sport: u16, sent: u64, rtt: u32) -> ConnectionStats {
        let mut c = conn(cookie, sport);
        c.monotonic.sent_bytes = sent;
        c.last.sent_bytes = sent;
        c.rtt_us = rtt;
        c
    }

    #[test]
    fn same_tuple_different_cookies_are_summed_and_rtt_averaged() {
        let mut conns = vec![
            with_traffic(1, 5, 10, 100),
            with_traffic(2, 5, 5, 300),
            with_traffic(3, 6, 1, 1),
        ];
        run(&mut conns, &AggregationConfig::default());
        assert_eq!(conns.len(), 2);
        assert_eq!(conns[0].last.sent_bytes, 15);
        assert_eq!(conns[0].monotonic.sent_bytes, 15);
        assert_eq!(conns[0].rtt_us, 200);
        assert_eq!(conns[1].cookie, 3);
    }

    #[test]
    fn different_nat_translations_are_not_merged() {
        let mut a = with_traffic(1, 5, 10, 0);
        let mut b = with_traffic(2, 5, 10, 0);
        let t = |port| IpTranslation {
            repl_src_ip: ip(1, 1, 1, 1),
            repl_dst_ip: ip(2, 2, 2, 2),
            repl_sport: port,
            repl_dport: 9,
        };
        a.nat = Some(t(1));
        b.nat = Some(t(2));
        let c = with_traffic(3, 5, 1, 0);
        let mut conns = vec![a, b, c];
        run(&mut conns, &AggregationConfig::default());
        assert_eq!(conns.len(), 2, "the untranslated one merges into the first");
        assert_eq!(conns[0].last.sent_bytes, 11);
    }

    #[test]
    fn incompatible_protocol_stacks_are_not_merged() {
        let mut a = with_traffic(1, 5, 10, 0);
        let mut b = with_traffic(2, 5, 10, 0);
        a.protocol_stack = ProtocolStack {
            application: 1,
            ..Default::default()
        };
        b.protocol_stack = ProtocolStack {
            application: 2,
            ..Default::default()
        };
        let mut conns = vec![a, b];
        run(&mut conns, &AggregationConfig::default());
        assert_eq!(conns.len(), 2);
    }

    #[test]
    fn different_source_containers_are_kept_apart_when_configured() {
        let mut a = with_traffic(1, 5, 10, 0);
        let mut b = with_traffic(2, 5, 10, 0);
        a.containers.source = Some(Arc::from("a"));
        b.containers.source = Some(Arc::from("b"));
        let mut conns = vec![a.clone(), b.clone()];
        run(&mut conns, &AggregationConfig::default());
        assert_eq!(conns.len(), 2);
        let mut conns = vec![a, b];
        run(
            &mut conns,
            &AggregationConfig {
                by_source_container: false,
                ..Default::default()
            },
        );
        assert_eq!(conns.len(), 1);
    }

    fn short_lived_closed(cookie: u64, sport: u16) -> ConnectionStats {
        let mut c = with_traffic(cookie, sport, 1, 0);
        c.is_closed = true;
        c.created_ns = 1;
        c.last_update_ns = 1_000;
        c
    }

    #[test]
    fn port_rollup_merges_short_lived_closed_outgoing_by_dropping_source_port() {
        let cfg = AggregationConfig {
            port_rollup: true,
            ..Default::default()
        };
        let mut long_lived = short_lived_closed(3, 40003);
        long_lived.last_update_ns = 200_000_000_000;
        let mut conns = vec![
            short_lived_closed(1, 40001),
            short_lived_closed(2, 40002),
            long_lived,
        ];
        run(&mut conns, &cfg);
        assert_eq!(conns.len(), 2);
        assert_eq!(conns[0].tuple.sport, 0);
        assert_eq!(conns[0].last.sent_bytes, 2);
        assert_eq!(conns[1].tuple.sport, 40003);
    }

    #[test]
    fn single_short_lived_connection_keeps_its_port_and_rollup_is_off_by_default() {
        let cfg = AggregationConfig {
            port_rollup: true,
            ..Default::default()
        };
        let mut conns = vec![short_lived_closed(1, 40001)];
        run(&mut conns, &cfg);
        assert_eq!(conns[0].tuple.sport, 40001);
        let mut conns = vec![short_lived_closed(1, 40001), short_lived_closed(2, 40002)];
        run(&mut conns, &AggregationConfig::default());
        assert_eq!(conns.len(), 2);
    }

    #[test]
    fn port_rollup_of_incoming_drops_destination_port() {
        let cfg = AggregationConfig {
            port_rollup: true,
            ..Default::default()
        };
        let mut a = short_lived_closed(1, 80);
        let mut b = short_lived_closed(2, 80);
        for (c, port) in [(&mut a, 50001), (&mut b, 50002)] {
            c.direction = Direction::Incoming;
            c.tuple.dport = port;
        }
        let mut conns = vec![a, b];
        run(&mut conns, &cfg);
        assert_eq!(conns.len(), 1);
        assert_eq!((conns[0].tuple.sport, conns[0].tuple.dport), (80, 0));
    }

    fn dns_batch(key: DnsKey, domain: &str, timeouts: u32) -> Arc<DnsStatsBatch> {
        let mut stats = DomainStats::default();
        stats.0.entry(Arc::from(domain)).or_default().insert(
            DnsQueryType(1),
            DnsStats {
                timeouts,
                ..Default::default()
            },
        );
        let mut batch = DnsStatsBatch::default();
        batch.0.insert(key, stats);
        Arc::new(batch)
    }

    #[test]
    fn dns_stats_attach_to_first_matching_connection_summed_over_batches() {
        let c = conn_between(ip(10, 0, 0, 1), 5000, ip(10, 0, 0, 53), 53, Protocol::Udp);
        let key = c.dns_key().unwrap();
        let mut conns = vec![c.clone(), c];
        let batches = vec![dns_batch(key, "a.com", 1), dns_batch(key, "a.com", 2)];
        attach_dns(&mut conns, &batches, &mut AggregateScratch::default());
        let attached = conns[0].dns.as_ref().unwrap();
        assert_eq!(
            attached.0[&Arc::<str>::from("a.com")][&DnsQueryType(1)].timeouts,
            3
        );
        assert!(conns[1].dns.is_none());
    }
}
