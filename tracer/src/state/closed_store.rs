//! The closed connections, stored once for all clients (see [`super::cursor_log`]).
//!
//! Rules:
//! - A closed connection reaches each client registered before it was stored, once. With no
//!   client registered it is discarded (nobody could ever receive it).
//! - The same cookie stored twice with the same tuple is one connection: the readings are
//!   merged in place. A client that already read the first copy does not get the second (it
//!   is never reported twice; the difference is lost to that client, not double-counted).
//! - The same cookie with a different tuple is a collision (counted): the newer record replaces
//!   the older one, unless it is empty and the older one is not (as Datadog).
//! - The store holds at most `capacity` connections. When full, a non-empty connection evicts
//!   the oldest *empty* one (no traffic, no failure: typically an instant failed open); if there
//!   is none it evicts the oldest connection; an empty connection arriving at a full store is
//!   refused. Clients that had not read what was lost are charged `closed_conn_dropped`; a
//!   client that had already read the evicted entry loses nothing (unlike Datadog's per-client
//!   buffers, where the whole buffer of a lagging client fills).

use std::{collections::VecDeque, sync::Arc};

use rustc_hash::FxHashMap;

use crate::{
    model::ConnectionStats,
    state::{
        cursor_log::{CursorLog, ReaderId},
        readings::absorb_reading,
    },
};

/// See the module docs.
#[derive(Debug)]
pub(crate) struct ClosedStore {
    log: CursorLog<Arc<ConnectionStats>>,
    by_cookie: FxHashMap<u64, u64>,
    /// Sequence numbers of entries that were empty when stored (some may be stale).
    empties: VecDeque<u64>,
    capacity: usize,
    collisions: u64,
    discarded_without_clients: u64,
}

impl ClosedStore {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            log: CursorLog::default(),
            by_cookie: FxHashMap::default(),
            empties: VecDeque::new(),
            capacity,
            collisions: 0,
            discarded_without_clients: 0,
        }
    }

    pub(crate) fn add_reader(&mut self, reader: ReaderId) {
        self.log.add_reader(reader);
    }

    pub(crate) fn remove_reader(&mut self, reader: ReaderId) {
        let by_cookie = &mut self.by_cookie;
        self.log
            .remove_reader(reader, |seq, conn| forget(by_cookie, seq, &conn));
        self.trim_empties();
    }

    /// Cookie collisions seen at store time.
    pub(crate) fn collisions(&self) -> u64 {
        self.collisions
    }

    /// Closed connections discarded because no client was registered.
    pub(crate) fn discarded_without_clients(&self) -> u64 {
        self.discarded_without_clients
    }

    /// Connections held.
    pub(crate) fn len(&self) -> usize {
        self.log.live()
    }

    /// Stores one closed connection (see the module docs).
    pub(crate) fn store(&mut self, mut conn: ConnectionStats) {
        if !self.log.has_readers() {
            self.discarded_without_clients += 1;
            return;
        }
        conn.is_closed = true;
        if let Some(&seq) = self.by_cookie.get(&conn.cookie) {
            if let Some(existing) = self.log.get_mut(seq) {
                if existing.tuple == conn.tuple {
                    absorb_reading(Arc::make_mut(existing), &conn);
                } else {
                    self.collisions += 1;
                    let newer = conn.last_update_ns > existing.last_update_ns;
                    let empty_over_traffic = conn.is_empty() && !existing.is_empty();
                    if newer && !empty_over_traffic {
                        let now_empty = conn.is_empty();
                        *existing = Arc::new(conn);
                        if now_empty {
                            self.empties.push_back(seq);
                        }
                    }
                }
                return;
            }
            self.by_cookie.remove(&conn.cookie);
        }
        if self.log.live() >= self.capacity && !self.make_room(conn.is_empty()) {
            self.log.charge_all(1);
            return;
        }
        let cookie = conn.cookie;
        let empty = conn.is_empty();
        let seq = self.log.push(Arc::new(conn));
        self.by_cookie.insert(cookie, seq);
        if empty {
            self.empties.push_back(seq);
        }
    }

    /// Frees one slot for an incoming connection; false if the incoming one must be refused.
    fn make_room(&mut self, incoming_is_empty: bool) -> bool {
        if incoming_is_empty {
            return false;
        }
        while let Some(seq) = self.empties.pop_front() {
            if self.log.get(seq).is_some_and(|c| c.is_empty())
                && let Some(conn) = self.log.remove(seq, 1)
            {
                forget(&mut self.by_cookie, seq, &conn);
                return true;
            }
        }
        match self.log.remove_oldest(|_| 1) {
            Some((seq, conn)) => {
                forget(&mut self.by_cookie, seq, &conn);
                true
            }
            None => false,
        }
    }

    /// Appends to `out` every connection `reader` has not read yet, then drops what every
    /// reader has read. Returns how many connections this reader lost since its previous read.
    pub(crate) fn read(&mut self, reader: ReaderId, out: &mut Vec<Arc<ConnectionStats>>) -> u64 {
        let lost = self.log.read(reader, |conn| out.push(Arc::clone(conn)));
        let by_cookie = &mut self.by_cookie;
        self.log.trim(|seq, conn| forget(by_cookie, seq, &conn));
        self.trim_empties();
        lost
    }

    fn trim_empties(&mut self) {
        while let Some(&seq) = self.empties.front() {
            if self.log.get(seq).is_some() {
                break;
            }
            self.empties.pop_front();
        }
    }

    /// Approximate heap bytes held (shared by all clients).
    pub(crate) fn allocated_bytes(&self) -> usize {
        let conns = self.log.live() * (std::mem::size_of::<ConnectionStats>() + 16);
        let slots = self.log.slots_capacity() * std::mem::size_of::<Option<Arc<ConnectionStats>>>();
        let index = crate::state::snapshot::hash_map_bytes::<u64, u64>(self.by_cookie.capacity());
        conns + slots + index + self.empties.capacity() * 8
    }
}

fn forget(by_cookie: &mut FxHashMap<u64, u64>, seq: u64, conn: &ConnectionStats) {
    if by_cookie.get(&conn.cookie) == Some(&seq) {
        by_cookie.remove(&conn.cookie);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::test_support::conn;

    fn read(store: &mut ClosedStore, reader: ReaderId) -> (Vec<u64>, u64) {
        let mut out = Vec::new();
        let lost = store.read(reader, &mut out);
        (out.iter().map(|c| c.cookie).collect(), lost)
    }

    fn with_bytes(cookie: u64, bytes: u64) -> ConnectionStats {
        let mut c = conn(cookie, 1000 + cookie as u16);
        c.monotonic.sent_bytes = bytes;
        c
    }

    #[test]
    fn closed_connection_without_clients_is_discarded() {
        let mut store = ClosedStore::new(10);
        store.store(with_bytes(1, 5));
        assert_eq!(store.len(), 0);
        assert_eq!(store.discarded_without_clients(), 1);
    }

    #[test]
    fn closed_connection_is_stored_once_and_reaches_every_reader_once() {
        let mut store = ClosedStore::new(10);
        store.add_reader(1);
        store.add_reader(2);
        store.store(with_bytes(1, 5));
        assert_eq!(store.len(), 1);
        assert_eq!(read(&mut store, 1).0, vec![1]);
        assert_eq!(read(&mut store, 1).0, Vec::<u64>::new());
        assert_eq!(read(&mut store, 2).0, vec![1]);
        assert_eq!(store.len(), 0);
    }

    #[test]
    fn same_cookie_same_tuple_is_merged_with_max_counters() {
        let mut store = ClosedStore::new(10);
        store.add_reader(1);
        store.store(with_bytes(1, 5));
        store.store(with_bytes(1, 9));
        store.store(with_bytes(1, 7));
        let mut out = Vec::new();
        store.read(1, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].monotonic.sent_bytes, 9);
    }

    #[test]
    fn same_cookie_different_tuple_is_a_collision_and_newer_wins() {
        let mut store = ClosedStore::new(10);
        store.add_reader(1);
        let mut old = with_bytes(1, 5);
        old.last_update_ns = 1;
        let mut new = conn(1, 4242);
        new.monotonic.sent_bytes = 3;
        new.last_update_ns = 2;
        store.store(old);
        store.store(new);
        assert_eq!(store.collisions(), 1);
        let mut out = Vec::new();
        store.read(1, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].tuple.sport, 4242);
    }

    #[test]
    fn empty_collision_does_not_replace_non_empty() {
        let mut store = ClosedStore::new(10);
        store.add_reader(1);
        store.store(with_bytes(1, 5));
        let mut empty = conn(1, 4242);
        empty.last_update_ns = 100;
        store.store(empty);
        let mut out = Vec::new();
        store.read(1, &mut out);
        assert_eq!(out[0].monotonic.sent_bytes, 5);
    }

    #[test]
    fn full_store_evicts_an_empty_connection_for_a_non_empty_one() {
        let mut store = ClosedStore::new(2);
        store.add_reader(1);
        store.store(with_bytes(1, 5));
        store.store(with_bytes(2, 0));
        store.store(with_bytes(3, 7));
        assert_eq!(read(&mut store, 1), (vec![1, 3], 1));
    }

    #[test]
    fn full_store_refuses_an_empty_connection() {
        let mut store = ClosedStore::new(1);
        store.add_reader(1);
        store.store(with_bytes(1, 5));
        store.store(with_bytes(2, 0));
        assert_eq!(read(&mut store, 1), (vec![1], 1));
    }

    #[test]
    fn full_store_without_empties_evicts_oldest_charging_only_readers_that_missed_it() {
        let mut store = ClosedStore::new(2);
        store.add_reader(1);
        store.add_reader(2);
        store.store(with_bytes(1, 5));
        assert_eq!(read(&mut store, 1).0, vec![1]);
        store.store(with_bytes(2, 5));
        store.store(with_bytes(3, 5));
        assert_eq!(read(&mut store, 1), (vec![2, 3], 0));
        assert_eq!(read(&mut store, 2), (vec![2, 3], 1));
    }

    #[test]
    fn cookie_reused_after_trim_is_a_new_entry() {
        let mut store = ClosedStore::new(10);
        store.add_reader(1);
        store.store(with_bytes(1, 5));
        read(&mut store, 1);
        store.store(with_bytes(1, 6));
        assert_eq!(read(&mut store, 1).0, vec![1]);
    }
}
