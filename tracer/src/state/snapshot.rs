//! One client's memory of what it was last told, per connection cookie.
//!
//! Layout: an `FxHashMap<u64 cookie, SnapshotEntry>` where the entry holds only the counters
//! that can change (four u64, retransmits) and one packed `u32`: the two TCP flags and, during a
//! call, a "seen in this call" bit with the connection's position in the call's list. That is
//! 48 bytes per slot plus hashbrown's one control byte, so 56 to 112 bytes per tracked
//! connection depending on where the count falls between two powers of two (64 at 100k).
//!
//! The "seen" mark replaces Datadog's rebuild of a fresh map on every call: entries are updated
//! in place, duplicates inside one call are found through the mark (no second index), and one
//! sweep at the end drops the entries of connections that were not in the call and clears the
//! marks.

use rustc_hash::FxHashMap;

use crate::model::StatCounters;

const SEEN: u32 = 1 << 31;
const ESTABLISHED: u32 = 1 << 30;
const CLOSED: u32 = 1 << 29;
const POSITION_MASK: u32 = CLOSED - 1;

/// Largest list position a mark can hold; connections beyond it are refused (counted as
/// `conn_dropped`). Over 500 million, so only reachable by absurd input.
pub(crate) const MAX_POSITION: usize = POSITION_MASK as usize;

/// The counters last reported to one client for one cookie (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SnapshotEntry {
    sent_bytes: u64,
    recv_bytes: u64,
    sent_packets: u64,
    recv_packets: u64,
    retransmits: u32,
    meta: u32,
}

impl SnapshotEntry {
    fn new(counters: &StatCounters, position: u32) -> Self {
        let mut entry = Self {
            sent_bytes: 0,
            recv_bytes: 0,
            sent_packets: 0,
            recv_packets: 0,
            retransmits: 0,
            meta: 0,
        };
        entry.set_counters(counters);
        entry.mark_seen(position);
        entry
    }

    /// The remembered counters. The TCP flags are kept as bits, so they read back as 0 or 1.
    pub(crate) fn counters(&self) -> StatCounters {
        StatCounters {
            sent_bytes: self.sent_bytes,
            recv_bytes: self.recv_bytes,
            sent_packets: self.sent_packets,
            recv_packets: self.recv_packets,
            retransmits: self.retransmits,
            tcp_established: u32::from(self.meta & ESTABLISHED != 0),
            tcp_closed: u32::from(self.meta & CLOSED != 0),
        }
    }

    pub(crate) fn set_counters(&mut self, c: &StatCounters) {
        self.sent_bytes = c.sent_bytes;
        self.recv_bytes = c.recv_bytes;
        self.sent_packets = c.sent_packets;
        self.recv_packets = c.recv_packets;
        self.retransmits = c.retransmits;
        self.meta &= !(ESTABLISHED | CLOSED);
        if c.tcp_established != 0 {
            self.meta |= ESTABLISHED;
        }
        if c.tcp_closed != 0 {
            self.meta |= CLOSED;
        }
    }

    /// Position in the current call's list, if the cookie was already seen in this call.
    pub(crate) fn seen_position(&self) -> Option<usize> {
        (self.meta & SEEN != 0).then_some((self.meta & POSITION_MASK) as usize)
    }

    pub(crate) fn mark_seen(&mut self, position: u32) {
        self.meta = (self.meta & (ESTABLISHED | CLOSED)) | SEEN | (position & POSITION_MASK);
    }

    fn clear_mark(&mut self) {
        self.meta &= ESTABLISHED | CLOSED;
    }
}

/// One client's per-cookie memory (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct Snapshot {
    map: FxHashMap<u64, SnapshotEntry>,
    seen: usize,
}

/// What [`Snapshot::visit`] found for a cookie.
pub(crate) enum Visit<'a> {
    /// Not tracked and the per-client cap is reached: refuse it.
    Refused,
    /// Newly tracked (the entry is created with the given counters, marked seen).
    New,
    /// Tracked from a previous call; not yet seen in this call.
    Known(&'a mut SnapshotEntry),
    /// Already seen in this call at the given position (a duplicate).
    Duplicate(&'a mut SnapshotEntry, usize),
}

impl Snapshot {
    /// Number of tracked cookies.
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Looks a cookie up for the active pass. A new cookie is inserted with `counters` and
    /// marked at `position` unless `max_tracked` cookies were already seen in this call.
    pub(crate) fn visit(
        &mut self,
        cookie: u64,
        counters: &StatCounters,
        position: usize,
        max_tracked: usize,
    ) -> Visit<'_> {
        let Ok(position32) = u32::try_from(position) else {
            return Visit::Refused;
        };
        if position > MAX_POSITION {
            return Visit::Refused;
        }
        match self.map.entry(cookie) {
            std::collections::hash_map::Entry::Vacant(slot) => {
                if self.seen >= max_tracked {
                    return Visit::Refused;
                }
                slot.insert(SnapshotEntry::new(counters, position32));
                self.seen += 1;
                Visit::New
            }
            std::collections::hash_map::Entry::Occupied(slot) => {
                let entry = slot.into_mut();
                match entry.seen_position() {
                    Some(first) => Visit::Duplicate(entry, first),
                    None => {
                        entry.mark_seen(position32);
                        self.seen += 1;
                        Visit::Known(entry)
                    }
                }
            }
        }
    }

    /// Looks the cookies up without changing anything, so that their table slots are in cache
    /// for the [`Snapshot::visit`] calls that follow. The lookups are independent, so the CPU
    /// overlaps their cache misses; inside `visit` each miss would stall the dependent work.
    pub(crate) fn warm(&self, cookies: impl Iterator<Item = u64>) {
        let mut acc = 0u32;
        for cookie in cookies {
            if let Some(entry) = self.map.get(&cookie) {
                acc ^= entry.meta;
            }
        }
        std::hint::black_box(acc);
    }

    /// Removes a cookie (a closed connection leaves the snapshot), returning its entry.
    pub(crate) fn take(&mut self, cookie: u64) -> Option<SnapshotEntry> {
        let entry = self.map.remove(&cookie)?;
        if entry.seen_position().is_some() {
            self.seen = self.seen.saturating_sub(1);
        }
        Some(entry)
    }

    /// Tracks a cookie again after [`Snapshot::take`] (a collision where the active copy won).
    pub(crate) fn put_back(&mut self, cookie: u64, entry: SnapshotEntry) {
        if entry.seen_position().is_some() {
            self.seen += 1;
        }
        self.map.insert(cookie, entry);
    }

    /// Forgets the given cookies.
    pub(crate) fn forget(&mut self, cookies: &[u64]) {
        for cookie in cookies {
            self.map.remove(cookie);
        }
    }

    /// Ends a call: drops cookies not seen in it and clears the marks. Gives memory back when
    /// the table is less than a quarter full (no shrinking on ordinary churn).
    pub(crate) fn sweep(&mut self) {
        self.map.retain(|_, entry| {
            let keep = entry.seen_position().is_some();
            entry.clear_mark();
            keep
        });
        self.seen = 0;
        if self.map.capacity() > 1024 && self.map.len() < self.map.capacity() / 4 {
            self.map.shrink_to(self.map.len() * 2);
        }
    }

    /// Heap bytes of the table, from its allocated capacity (see [`hash_map_bytes`]).
    pub(crate) fn allocated_bytes(&self) -> usize {
        hash_map_bytes::<u64, SnapshotEntry>(self.map.capacity())
    }
}

/// Heap bytes of a std (hashbrown) `HashMap<K, V>` with the given `capacity()`: hashbrown
/// allocates a power-of-two number of buckets, reports 7/8 of them as capacity (all but one
/// below 8 buckets), and stores one `(K, V)` slot plus one control byte per bucket, plus 16
/// trailing control bytes. `capacity()` is items plus the inserts left before a rehash, so
/// the tombstones that removals leave lower it (by 8% for a 100k-entry snapshot under churn);
/// rounding up to the power of two recovers the bucket count unless entries plus inserts left
/// fall below half the table (a table mostly emptied by removals, just before hashbrown
/// rehashes it), where this undercounts.
pub(crate) fn hash_map_bytes<K, V>(capacity: usize) -> usize {
    if capacity == 0 {
        return 0;
    }
    let buckets = if capacity < 8 {
        (capacity + 1).next_power_of_two().max(4)
    } else {
        (capacity / 7 * 8).next_power_of_two()
    };
    buckets * (std::mem::size_of::<(K, V)>() + 1) + 16
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counters(sent: u64) -> StatCounters {
        StatCounters {
            sent_bytes: sent,
            tcp_established: 1,
            ..Default::default()
        }
    }

    #[test]
    fn snapshot_slot_is_48_bytes() {
        assert_eq!(std::mem::size_of::<(u64, SnapshotEntry)>(), 48);
    }

    #[test]
    fn entry_round_trips_counters_and_keeps_flags_when_marked() {
        let mut e = SnapshotEntry::new(&counters(7), 12);
        assert_eq!(e.counters(), counters(7));
        assert_eq!(e.seen_position(), Some(12));
        e.clear_mark();
        assert_eq!(e.seen_position(), None);
        assert_eq!(e.counters(), counters(7));
    }

    #[test]
    fn second_visit_in_one_call_is_a_duplicate_pointing_at_first_position() {
        let mut s = Snapshot::default();
        assert!(matches!(s.visit(1, &counters(1), 0, 10), Visit::New));
        assert!(matches!(
            s.visit(1, &counters(1), 5, 10),
            Visit::Duplicate(_, 0)
        ));
        s.sweep();
        assert!(matches!(s.visit(1, &counters(1), 3, 10), Visit::Known(_)));
    }

    #[test]
    fn sweep_drops_cookies_not_seen_in_the_call() {
        let mut s = Snapshot::default();
        s.visit(1, &counters(1), 0, 10);
        s.visit(2, &counters(1), 1, 10);
        s.sweep();
        s.visit(2, &counters(1), 0, 10);
        s.sweep();
        assert_eq!(s.len(), 1);
        assert!(s.take(1).is_none());
        assert!(s.take(2).is_some());
    }

    #[test]
    fn new_cookies_beyond_the_cap_are_refused_but_known_ones_are_not() {
        let mut s = Snapshot::default();
        s.visit(1, &counters(1), 0, 1);
        s.sweep();
        assert!(matches!(s.visit(2, &counters(1), 0, 1), Visit::New));
        assert!(matches!(s.visit(3, &counters(1), 1, 1), Visit::Refused));
        assert!(matches!(s.visit(1, &counters(1), 2, 1), Visit::Known(_)));
    }

    #[test]
    fn allocated_bytes_follow_hashbrown_bucket_layout() {
        assert_eq!(hash_map_bytes::<u64, u64>(0), 0);
        assert_eq!(hash_map_bytes::<u64, u64>(3), 4 * 17 + 16);
        assert_eq!(hash_map_bytes::<u64, u64>(114_688), 131_072 * 17 + 16);
        // Tombstones lower capacity() below 7/8 of the buckets; the buckets are still counted.
        assert_eq!(hash_map_bytes::<u64, u64>(105_000), 131_072 * 17 + 16);
        assert_eq!(hash_map_bytes::<u64, u64>(2), 4 * 17 + 16);
    }
}
