//! An append-only log shared by all clients, each reading it through its own cursor.
//!
//! This replaces Datadog's copy of every closed connection (and DNS/USM batch) into every
//! client's buffer: an item is stored once and dropped when the slowest reader has passed it.
//! Items can be removed early ("tombstoned") when the log is over its limit; every reader that
//! had not read the item yet is charged with the loss, so a client that polls often loses
//! nothing because a slow one lags.

use std::collections::VecDeque;

use rustc_hash::FxHashMap;

/// Identifies a reader (one per registered client; never reused).
pub(crate) type ReaderId = u64;

#[derive(Debug, Clone, Copy)]
struct Cursor {
    next_seq: u64,
    lost: u64,
}

/// See the module docs. Sequence numbers start at 0 and never repeat.
#[derive(Debug)]
pub(crate) struct CursorLog<T> {
    base_seq: u64,
    entries: VecDeque<Option<T>>,
    live: usize,
    readers: FxHashMap<ReaderId, Cursor>,
}

impl<T> Default for CursorLog<T> {
    fn default() -> Self {
        Self {
            base_seq: 0,
            entries: VecDeque::new(),
            live: 0,
            readers: FxHashMap::default(),
        }
    }
}

impl<T> CursorLog<T> {
    fn end_seq(&self) -> u64 {
        self.base_seq.saturating_add(self.entries.len() as u64)
    }

    fn index_of(&self, seq: u64) -> Option<usize> {
        let offset = seq.checked_sub(self.base_seq)?;
        usize::try_from(offset)
            .ok()
            .filter(|&i| i < self.entries.len())
    }

    /// Items present (not removed).
    pub(crate) fn live(&self) -> usize {
        self.live
    }

    /// Whether anybody reads this log.
    pub(crate) fn has_readers(&self) -> bool {
        !self.readers.is_empty()
    }

    /// Adds a reader that will see items pushed from now on.
    pub(crate) fn add_reader(&mut self, reader: ReaderId) {
        let next_seq = self.end_seq();
        self.readers.insert(reader, Cursor { next_seq, lost: 0 });
    }

    /// Removes a reader and drops items nobody needs any more.
    pub(crate) fn remove_reader(&mut self, reader: ReaderId, on_drop: impl FnMut(u64, T)) {
        self.readers.remove(&reader);
        self.trim(on_drop);
    }

    /// Appends an item and returns its sequence number.
    pub(crate) fn push(&mut self, item: T) -> u64 {
        let seq = self.end_seq();
        self.entries.push_back(Some(item));
        self.live += 1;
        seq
    }

    /// The item at `seq`, if still present.
    pub(crate) fn get(&self, seq: u64) -> Option<&T> {
        self.entries.get(self.index_of(seq)?)?.as_ref()
    }

    /// The item at `seq`, mutably, if still present.
    pub(crate) fn get_mut(&mut self, seq: u64) -> Option<&mut T> {
        let index = self.index_of(seq)?;
        self.entries.get_mut(index)?.as_mut()
    }

    /// Charges `weight` lost items to every reader (an item that was refused).
    pub(crate) fn charge_all(&mut self, weight: u64) {
        for cursor in self.readers.values_mut() {
            cursor.lost = cursor.lost.saturating_add(weight);
        }
    }

    /// Removes the item at `seq`, charging `weight` to readers that had not read it.
    pub(crate) fn remove(&mut self, seq: u64, weight: u64) -> Option<T> {
        let index = self.index_of(seq)?;
        let item = self.entries.get_mut(index)?.take()?;
        self.live -= 1;
        for cursor in self.readers.values_mut() {
            if cursor.next_seq <= seq {
                cursor.lost = cursor.lost.saturating_add(weight);
            }
        }
        self.pop_leading_holes();
        Some(item)
    }

    /// Removes the oldest present item, charging `weight_of(item)` to readers that had not
    /// read it.
    pub(crate) fn remove_oldest(&mut self, weight_of: impl Fn(&T) -> u64) -> Option<(u64, T)> {
        self.pop_leading_holes();
        let seq = self.base_seq;
        let weight = self.entries.front()?.as_ref().map(&weight_of)?;
        self.remove(seq, weight).map(|item| (seq, item))
    }

    fn pop_leading_holes(&mut self) {
        while matches!(self.entries.front(), Some(None)) {
            self.entries.pop_front();
            self.base_seq += 1;
        }
    }

    /// Calls `visit` on every item `reader` has not read yet, moves its cursor to the end and
    /// returns (and resets) the number of items it lost since its previous read. Unknown
    /// readers read nothing.
    pub(crate) fn read(&mut self, reader: ReaderId, mut visit: impl FnMut(&T)) -> u64 {
        let end = self.end_seq();
        let base = self.base_seq;
        let Some(cursor) = self.readers.get_mut(&reader) else {
            return 0;
        };
        let start = usize::try_from(cursor.next_seq.saturating_sub(base)).unwrap_or(usize::MAX);
        cursor.next_seq = end;
        let lost = std::mem::take(&mut cursor.lost);
        let (front, back) = self.entries.as_slices();
        let (front, back) = match front.get(start..) {
            Some(rest) => (rest, back),
            None => (
                &[][..],
                back.get(start.saturating_sub(front.len())..).unwrap_or(&[]),
            ),
        };
        for item in front.iter().chain(back).flatten() {
            visit(item);
        }
        lost
    }

    /// Drops every item all readers have read (all items if there is no reader).
    pub(crate) fn trim(&mut self, mut on_drop: impl FnMut(u64, T)) {
        let oldest_needed = self
            .readers
            .values()
            .map(|c| c.next_seq)
            .min()
            .unwrap_or_else(|| self.end_seq());
        while self.base_seq < oldest_needed {
            let Some(front) = self.entries.pop_front() else {
                break;
            };
            if let Some(item) = front {
                self.live -= 1;
                on_drop(self.base_seq, item);
            }
            self.base_seq += 1;
        }
    }

    /// Capacity of the log's ring buffer (for memory accounting).
    pub(crate) fn slots_capacity(&self) -> usize {
        self.entries.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(log: &mut CursorLog<u32>, reader: ReaderId) -> (Vec<u32>, u64) {
        let mut seen = Vec::new();
        let lost = log.read(reader, |&x| seen.push(x));
        (seen, lost)
    }

    #[test]
    fn reader_sees_only_items_pushed_after_it_was_added() {
        let mut log = CursorLog::default();
        log.add_reader(1);
        log.push(10);
        log.add_reader(2);
        log.push(20);
        assert_eq!(read_all(&mut log, 1).0, vec![10, 20]);
        assert_eq!(read_all(&mut log, 2).0, vec![20]);
    }

    #[test]
    fn each_item_is_read_once_per_reader() {
        let mut log = CursorLog::default();
        log.add_reader(1);
        log.push(1);
        assert_eq!(read_all(&mut log, 1).0, vec![1]);
        assert!(read_all(&mut log, 1).0.is_empty());
        log.push(2);
        assert_eq!(read_all(&mut log, 1).0, vec![2]);
    }

    #[test]
    fn items_are_trimmed_once_the_slowest_reader_passed_them() {
        let mut log = CursorLog::default();
        log.add_reader(1);
        log.add_reader(2);
        log.push(1);
        read_all(&mut log, 1);
        log.trim(|_, _| {});
        assert_eq!(log.live(), 1);
        read_all(&mut log, 2);
        let mut dropped = Vec::new();
        log.trim(|_, x| dropped.push(x));
        assert_eq!((log.live(), dropped), (0, vec![1]));
    }

    #[test]
    fn removal_charges_only_readers_that_had_not_read_the_item() {
        let mut log = CursorLog::default();
        log.add_reader(1);
        log.add_reader(2);
        let seq = log.push(7);
        read_all(&mut log, 1);
        assert_eq!(log.remove(seq, 3), Some(7));
        assert_eq!(read_all(&mut log, 1), (vec![], 0));
        assert_eq!(read_all(&mut log, 2), (vec![], 3));
    }

    #[test]
    fn remove_oldest_skips_holes() {
        let mut log = CursorLog::default();
        log.add_reader(1);
        let a = log.push(1);
        log.push(2);
        log.remove(a, 1);
        assert_eq!(log.remove_oldest(|_| 1), Some((1, 2)));
        assert_eq!(log.remove_oldest(|_| 1), None);
        assert_eq!(read_all(&mut log, 1), (vec![], 2));
    }

    #[test]
    fn without_readers_trim_drops_everything_and_unknown_reader_reads_nothing() {
        let mut log = CursorLog::default();
        log.push(1);
        assert_eq!(read_all(&mut log, 9), (vec![], 0));
        log.trim(|_, _| {});
        assert_eq!(log.live(), 0);
    }

    #[test]
    fn reader_behind_trimmed_front_reads_the_rest_without_panicking() {
        let mut log = CursorLog::default();
        log.add_reader(1);
        for i in 0..10 {
            log.push(i);
        }
        for _ in 0..4 {
            log.remove_oldest(|_| 1);
        }
        let (seen, lost) = read_all(&mut log, 1);
        assert_eq!(seen, vec![4, 5, 6, 7, 8, 9]);
        assert_eq!(lost, 4);
    }
}
