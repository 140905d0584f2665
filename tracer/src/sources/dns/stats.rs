//! Query/response matching and the per-conversation stats (Datadog's `dnsStatKeeper`,
//! behaviour only): pending queries keyed by ([`DnsKey`], transaction id), latencies and
//! response codes by key → domain → query type, timeouts at take time.
//!
//! The capture runs on every socket of the host, so a conversation between two local sockets
//! is seen twice per packet (at the sender's egress and at the receiver's ingress). The first
//! observation of a query starts it; a second one while it is pending is a duplicate. The first
//! observation of its response ends it; the second finds nothing pending and is counted as
//! unmatched, never as a second reply.

use std::sync::Arc;

use rustc_hash::FxHashMap;

use crate::model::{DnsKey, DnsQueryType, DnsStats, DnsStatsBatch};

/// A query waiting for its response.
#[derive(Debug)]
struct Pending {
    /// Time of its first observation (CLOCK_MONOTONIC ns).
    at_ns: u64,
    domain: Arc<str>,
    qtype: u16,
}

/// What happened to a query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum QueryOutcome {
    /// Now pending.
    New,
    /// Already pending under the same key and id: another observation of the same query.
    Duplicate,
    /// The pending table is full even after dropping the timed-out queries.
    Dropped,
}

/// What happened to a response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ResponseOutcome {
    /// It ended a pending query, whose stats were recorded.
    Matched,
    /// It came after the timeout: the query was recorded as a timeout.
    Late,
    /// No query pending under its key and id.
    Unmatched,
    /// It ended a pending query but the batch was at its cap: the stats were not recorded.
    Dropped,
}

/// The matching state and the stats since the previous take.
#[derive(Debug)]
pub(crate) struct StatsKeeper {
    pending: FxHashMap<(DnsKey, u16), Pending>,
    batch: DnsStatsBatch,
    leaves: usize,
    timeout_ns: u64,
    max_stats: usize,
    max_pending: usize,
}

/// What a take returns besides the batch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct TakeReport {
    /// Queries that timed out at this take.
    pub timeouts: u64,
    /// Of them, those whose stats were dropped by the cap.
    pub dropped: u64,
}

impl StatsKeeper {
    pub fn new(timeout_ns: u64, max_stats: usize, max_pending: usize) -> Self {
        Self {
            pending: FxHashMap::default(),
            batch: DnsStatsBatch::default(),
            leaves: 0,
            timeout_ns,
            max_stats,
            max_pending,
        }
    }

    /// Pending queries.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// A query observed at `at_ns`. `domain` is only called for a new query.
    pub fn query(
        &mut self,
        key: DnsKey,
        id: u16,
        qtype: u16,
        at_ns: u64,
        domain: impl FnOnce() -> Arc<str>,
    ) -> (QueryOutcome, TakeReport) {
        let mut report = TakeReport::default();
        if self.pending.contains_key(&(key, id)) {
            return (QueryOutcome::Duplicate, report);
        }
        if self.pending.len() >= self.max_pending {
            // Make room with what has timed out by now, recorded as timeouts as a take would.
            report = self.expire(at_ns);
            if self.pending.len() >= self.max_pending {
                return (QueryOutcome::Dropped, report);
            }
        }
        self.pending.insert(
            (key, id),
            Pending {
                at_ns,
                domain: domain(),
                qtype,
            },
        );
        (QueryOutcome::New, report)
    }

    /// A response observed at `at_ns`.
    pub fn response(&mut self, key: DnsKey, id: u16, rcode: u8, at_ns: u64) -> ResponseOutcome {
        let Some(query) = self.pending.remove(&(key, id)) else {
            return ResponseOutcome::Unmatched;
        };
        // The two observations can come from different CPUs; never a negative latency.
        let latency_ns = at_ns.saturating_sub(query.at_ns);
        let late = latency_ns > self.timeout_ns;
        let Some(stats) = self.leaf(key, &query.domain, query.qtype) else {
            return ResponseOutcome::Dropped;
        };
        if late {
            // Datadog's rule: a response later than the timeout counts as a timeout.
            stats.timeouts = stats.timeouts.saturating_add(1);
            return ResponseOutcome::Late;
        }
        let latency_us = latency_ns / 1_000;
        if rcode == 0 {
            stats.success_latency_sum_us = stats.success_latency_sum_us.saturating_add(latency_us);
        } else {
            stats.failure_latency_sum_us = stats.failure_latency_sum_us.saturating_add(latency_us);
        }
        let count = stats.count_by_rcode.entry(u32::from(rcode)).or_default();
        *count = count.saturating_add(1);
        ResponseOutcome::Matched
    }

    /// The stats since the previous take, with the queries pending for longer than the timeout
    /// at `now_ns` recorded as timeouts (and forgotten).
    pub fn take(&mut self, now_ns: u64) -> (DnsStatsBatch, TakeReport) {
        let report = self.expire(now_ns);
        self.leaves = 0;
        (std::mem::take(&mut self.batch), report)
    }

    /// Records and drops the queries pending for longer than the timeout at `now_ns`.
    fn expire(&mut self, now_ns: u64) -> TakeReport {
        let timeout_ns = self.timeout_ns;
        let mut expired = Vec::new();
        self.pending.retain(|(key, _), q| {
            let keep = now_ns.saturating_sub(q.at_ns) <= timeout_ns;
            if !keep {
                expired.push((*key, Arc::clone(&q.domain), q.qtype));
            }
            keep
        });
        let mut report = TakeReport::default();
        for (key, domain, qtype) in expired {
            report.timeouts += 1;
            match self.leaf(key, &domain, qtype) {
                Some(stats) => stats.timeouts = stats.timeouts.saturating_add(1),
                None => report.dropped += 1,
            }
        }
        report
    }

    /// The stats of (key, domain, qtype), created if the batch is under its cap.
    fn leaf(&mut self, key: DnsKey, domain: &Arc<str>, qtype: u16) -> Option<&mut DnsStats> {
        let qtype = DnsQueryType(qtype);
        let exists = self
            .batch
            .0
            .get(&key)
            .and_then(|d| d.0.get(domain))
            .is_some_and(|t| t.contains_key(&qtype));
        if !exists {
            if self.leaves >= self.max_stats {
                return None;
            }
            self.leaves += 1;
        }
        Some(
            self.batch
                .0
                .entry(key)
                .or_default()
                .0
                .entry(Arc::clone(domain))
                .or_default()
                .entry(qtype)
                .or_default(),
        )
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;
    use crate::model::Protocol;

    fn key(port: u16) -> DnsKey {
        DnsKey {
            server: IpAddr::from([10, 0, 0, 53]),
            client: IpAddr::from([10, 0, 0, 1]),
            client_port: port,
            protocol: Protocol::Udp,
        }
    }

    fn name(s: &str) -> impl FnOnce() -> Arc<str> + '_ {
        move || Arc::from(s)
    }

    fn leaf<'a>(batch: &'a DnsStatsBatch, k: DnsKey, domain: &str, qtype: u16) -> &'a DnsStats {
        &batch.0[&k].0[&Arc::<str>::from(domain)][&DnsQueryType(qtype)]
    }

    const MS: u64 = 1_000_000;
    const S: u64 = 1_000_000_000;

    #[test]
    fn duplicate_query_keeps_the_first_time_and_second_response_is_unmatched() {
        let mut s = StatsKeeper::new(15 * S, 100, 100);
        assert_eq!(
            s.query(key(1), 9, 1, 100 * MS, name("a")).0,
            QueryOutcome::New
        );
        assert_eq!(
            s.query(key(1), 9, 1, 101 * MS, name("a")).0,
            QueryOutcome::Duplicate
        );
        assert_eq!(s.response(key(1), 9, 0, 103 * MS), ResponseOutcome::Matched);
        assert_eq!(
            s.response(key(1), 9, 0, 104 * MS),
            ResponseOutcome::Unmatched
        );
        let (batch, report) = s.take(200 * MS);
        assert_eq!(report, TakeReport::default());
        let st = leaf(&batch, key(1), "a", 1);
        assert_eq!(st.success_latency_sum_us, 3_000);
        assert_eq!(st.count_by_rcode.iter().collect::<Vec<_>>(), [(&0, &1)]);
        assert_eq!(batch.leaf_count(), 1);
        // The take emptied the batch.
        assert!(s.take(300 * MS).0.is_empty());
    }

    #[test]
    fn matching_needs_the_same_key_and_id() {
        let mut s = StatsKeeper::new(15 * S, 100, 100);
        s.query(key(1), 9, 1, 0, name("a"));
        assert_eq!(s.response(key(2), 9, 0, MS), ResponseOutcome::Unmatched);
        assert_eq!(s.response(key(1), 8, 0, MS), ResponseOutcome::Unmatched);
        assert_eq!(s.pending_len(), 1);
    }

    #[test]
    fn rcodes_split_success_and_failure_latency() {
        let mut s = StatsKeeper::new(15 * S, 100, 100);
        s.query(key(1), 1, 1, 0, name("a"));
        s.query(key(1), 2, 1, 0, name("a"));
        s.query(key(1), 3, 1, 0, name("a"));
        s.response(key(1), 1, 0, 2 * MS);
        s.response(key(1), 2, 3, 5 * MS);
        s.response(key(1), 3, 2, 7 * MS);
        let (batch, _) = s.take(10 * MS);
        let st = leaf(&batch, key(1), "a", 1);
        assert_eq!(st.success_latency_sum_us, 2_000);
        assert_eq!(st.failure_latency_sum_us, 12_000);
        assert_eq!(
            st.count_by_rcode.iter().collect::<Vec<_>>(),
            [(&0, &1), (&2, &1), (&3, &1)]
        );
        assert_eq!(st.timeouts, 0);
    }

    #[test]
    fn pending_queries_time_out_at_take_and_late_responses_are_timeouts() {
        let mut s = StatsKeeper::new(15 * S, 100, 100);
        s.query(key(1), 1, 1, 0, name("a"));
        s.query(key(1), 2, 1, 10 * S, name("a"));
        s.query(key(1), 3, 28, 0, name("a"));
        // Exactly at the timeout: not yet.
        let (batch, report) = s.take(15 * S);
        assert!(batch.is_empty());
        assert_eq!(report.timeouts, 0);
        assert_eq!(s.response(key(1), 3, 0, 15 * S + 1), ResponseOutcome::Late);
        let (batch, report) = s.take(15 * S + 1);
        assert_eq!(
            report,
            TakeReport {
                timeouts: 1,
                dropped: 0
            }
        );
        assert_eq!(leaf(&batch, key(1), "a", 1).timeouts, 1);
        assert_eq!(leaf(&batch, key(1), "a", 28).timeouts, 1);
        assert!(leaf(&batch, key(1), "a", 28).count_by_rcode.is_empty());
        assert_eq!(s.pending_len(), 1);
        assert_eq!(s.take(26 * S).1.timeouts, 1);
        assert_eq!(s.pending_len(), 0);
    }

    #[test]
    fn leaves_are_capped_and_existing_leaves_still_count() {
        let mut s = StatsKeeper::new(15 * S, 2, 100);
        for (id, domain) in [(1, "a"), (2, "b"), (3, "c"), (4, "a")] {
            s.query(key(1), id, 1, 0, name(domain));
        }
        assert_eq!(s.response(key(1), 1, 0, MS), ResponseOutcome::Matched);
        assert_eq!(s.response(key(1), 2, 0, MS), ResponseOutcome::Matched);
        assert_eq!(s.response(key(1), 3, 0, MS), ResponseOutcome::Dropped);
        assert_eq!(s.response(key(1), 4, 0, MS), ResponseOutcome::Matched);
        let (batch, _) = s.take(MS);
        assert_eq!(batch.leaf_count(), 2);
        assert_eq!(leaf(&batch, key(1), "a", 1).count_by_rcode[&0], 2);
        // The cap is per take.
        s.query(key(1), 5, 1, 0, name("c"));
        assert_eq!(s.response(key(1), 5, 0, MS), ResponseOutcome::Matched);
    }

    #[test]
    fn pending_table_is_capped_after_dropping_timed_out_queries() {
        let mut s = StatsKeeper::new(15 * S, 100, 2);
        s.query(key(1), 1, 1, 0, name("a"));
        s.query(key(1), 2, 1, 5 * S, name("a"));
        assert_eq!(
            s.query(key(1), 3, 1, 10 * S, name("a")).0,
            QueryOutcome::Dropped
        );
        // At 16 s the first has timed out: it makes room, and is recorded as a timeout.
        let (outcome, report) = s.query(key(1), 4, 1, 16 * S, name("a"));
        assert_eq!(outcome, QueryOutcome::New);
        assert_eq!(report.timeouts, 1);
        assert_eq!(s.pending_len(), 2);
        assert_eq!(leaf(&s.take(16 * S).0, key(1), "a", 1).timeouts, 1);
    }
}
