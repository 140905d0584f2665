//! DNS and USM batches, stored once for all clients (see [`super::cursor_log`]).
//!
//! A batch (what the DNS snooper or the USM monitor collected since its previous batch) reaches
//! every client registered when it was stored, once, merged with the other batches the client
//! has not read. The log holds at most `max_weight` leaves (DNS: domain × query type; USM:
//! keys); over it the oldest batches go first, and clients that had not read them are charged
//! their weight (`dns_stats_dropped` / `usm_stats_dropped`). A batch heavier than the whole limit
//! is refused and charged to every client.

use std::sync::Arc;

use crate::state::cursor_log::{CursorLog, ReaderId};

/// See the module docs.
#[derive(Debug)]
pub(crate) struct BatchLog<T> {
    log: CursorLog<(Arc<T>, u64)>,
    weight: u64,
    max_weight: u64,
}

impl<T> BatchLog<T> {
    pub(crate) fn new(max_weight: u64) -> Self {
        Self {
            log: CursorLog::default(),
            weight: 0,
            max_weight,
        }
    }

    pub(crate) fn add_reader(&mut self, reader: ReaderId) {
        self.log.add_reader(reader);
    }

    pub(crate) fn remove_reader(&mut self, reader: ReaderId) {
        let weight = &mut self.weight;
        self.log
            .remove_reader(reader, |_, (_, w)| *weight = weight.saturating_sub(w));
    }

    /// Stores a batch of the given weight (empty batches and batches nobody would read are
    /// ignored).
    pub(crate) fn push(&mut self, batch: T, weight: u64) {
        if weight == 0 || !self.log.has_readers() {
            return;
        }
        if weight > self.max_weight {
            self.log.charge_all(weight);
            return;
        }
        while self.weight + weight > self.max_weight {
            match self.log.remove_oldest(|(_, w)| *w) {
                Some((_, (_, w))) => self.weight = self.weight.saturating_sub(w),
                None => break,
            }
        }
        self.weight += weight;
        self.log.push((Arc::new(batch), weight));
    }

    /// Appends the batches `reader` has not read to `out`; returns the weight it lost.
    pub(crate) fn read(&mut self, reader: ReaderId, out: &mut Vec<Arc<T>>) -> u64 {
        let lost = self
            .log
            .read(reader, |(batch, _)| out.push(Arc::clone(batch)));
        let weight = &mut self.weight;
        self.log
            .trim(|_, (_, w)| *weight = weight.saturating_sub(w));
        lost
    }

    /// Total weight held.
    #[cfg(test)]
    pub(crate) fn weight(&self) -> u64 {
        self.weight
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(log: &mut BatchLog<u32>, reader: ReaderId) -> (Vec<u32>, u64) {
        let mut out = Vec::new();
        let lost = log.read(reader, &mut out);
        (out.iter().map(|b| **b).collect(), lost)
    }

    #[test]
    fn batch_reaches_every_registered_reader_once() {
        let mut log = BatchLog::new(100);
        log.add_reader(1);
        log.add_reader(2);
        log.push(7, 3);
        assert_eq!(read(&mut log, 1), (vec![7], 0));
        assert_eq!(read(&mut log, 1), (vec![], 0));
        assert_eq!(read(&mut log, 2), (vec![7], 0));
        assert_eq!(log.weight(), 0);
    }

    #[test]
    fn over_the_limit_oldest_batches_go_and_lagging_readers_are_charged() {
        let mut log = BatchLog::new(10);
        log.add_reader(1);
        log.add_reader(2);
        log.push(1, 6);
        assert_eq!(read(&mut log, 1).0, vec![1]);
        log.push(2, 6);
        assert_eq!(read(&mut log, 1), (vec![2], 0));
        assert_eq!(read(&mut log, 2), (vec![2], 6));
    }

    #[test]
    fn batch_heavier_than_the_limit_is_refused_and_charged_to_all() {
        let mut log = BatchLog::new(10);
        log.add_reader(1);
        log.push(1, 11);
        assert_eq!(read(&mut log, 1), (vec![], 11));
    }
}
