//! The per-client merge: turns one call's active list and the closed connections the client
//! has not read yet into the connections to report, each with its `last` delta.
//!
//! Rules (Datadog's `mergeConnections`, sections 3.5-3.6 of the reference):
//! - Active connections are deduplicated by cookie. Same cookie and same tuple: one connection,
//!   counters = max. Same cookie and a different tuple: a collision (counted); the newer record
//!   (by `last_update_ns`) wins and the client's snapshot for the cookie is dropped, so the
//!   winner reports its full monotonic counters.
//! - `last` = monotonic minus the client's snapshot, with the underflow rules of
//!   [`crate::model::counters`] (underflows counted). A cookie the client has no snapshot for
//!   reports `last = monotonic`: this is how a new client's first call reports cumulative
//!   counters (Datadog behaviour).
//! - A new cookie when the client already tracks `max_tracked` cookies in this call is not
//!   reported and not tracked (`conn_dropped`); it is tried again on the next call, where its
//!   full monotonic counters are reported, so nothing is lost unless it stays refused.
//! - A closed connection whose cookie is also active in this call wins over the active copy:
//!   counters = max, the active copy is not reported. With a different tuple it is a collision:
//!   the newer wins, the snapshot is dropped.
//! - Closed connections leave the client's snapshot; connections absent from the call are
//!   swept from it.
//! - Open connections whose `last` is zero are not reported. Closed connections always are,
//!   with or without a delta since the client's previous call: an end is news in itself (a
//!   UDP flow idle across a poll and then closed carries no counter that says so).
//!
//! Preconditions: the active list of a call was read after the client's previous call
//! returned, so it cannot hold a connection whose close the client already received; and every
//! connection that closed before the active list was read has its close among this call's
//! closed connections (the caller drains closes after reading the list, not before as Datadog
//! does: a connection that closes between a drain and the read would be missing from both, its
//! snapshot entry swept, and its close would later report its whole counters a second time).

use std::sync::Arc;

use crate::{
    model::{ConnectionStats, StatCounters, StateTelemetry},
    state::{
        readings::absorb_reading,
        snapshot::{Snapshot, Visit},
    },
};

/// Connections whose snapshot slots are fetched together before they are merged.
const WARM_BATCH: usize = 16;

/// A reusable bit set marking which list positions are reported.
#[derive(Debug, Default)]
pub(crate) struct KeepSet(Vec<u64>);

impl KeepSet {
    pub(crate) fn reset(&mut self, len: usize) {
        self.0.clear();
        self.0.resize(len.div_ceil(64), 0);
    }

    pub(crate) fn set(&mut self, index: usize, keep: bool) {
        if let Some(word) = self.0.get_mut(index / 64) {
            let bit = 1u64 << (index % 64);
            if keep {
                *word |= bit;
            } else {
                *word &= !bit;
            }
        }
    }

    pub(crate) fn get(&self, index: usize) -> bool {
        self.0
            .get(index / 64)
            .is_some_and(|word| word & (1 << (index % 64)) != 0)
    }

    pub(crate) fn allocated_bytes(&self) -> usize {
        self.0.capacity() * 8
    }
}

/// Applies `d = monotonic.delta_since(prev)` to `conn`, counting an underflow.
fn apply_delta(conn: &mut ConnectionStats, prev: &StatCounters, telemetry: &mut StateTelemetry) {
    let d = conn.monotonic.delta_since(prev);
    if d.underflow {
        telemetry.stats_underflows += 1;
    }
    conn.monotonic = d.monotonic;
    conn.last = d.last;
}

fn reportable(conn: &ConnectionStats) -> bool {
    conn.is_closed || !conn.last.is_zero()
}

/// Reusable buffers of one merge.
#[derive(Debug, Default)]
pub(crate) struct MergeScratch {
    pub(crate) keep: KeepSet,
    /// Closed connections that met an active copy in this call (rare), already merged.
    met_active: Vec<ConnectionStats>,
    /// For every other closed connection: the counters the client was last told (zero if none).
    previous: Vec<StatCounters>,
    /// Which closed connections are in `met_active` or were dropped by a collision.
    handled: KeepSet,
}

impl MergeScratch {
    pub(crate) fn allocated_bytes(&self) -> usize {
        self.keep.allocated_bytes()
            + self.handled.allocated_bytes()
            + self.met_active.capacity() * std::mem::size_of::<ConnectionStats>()
            + self.previous.capacity() * std::mem::size_of::<StatCounters>()
    }
}

/// Merges in place: on return `conns` holds the connections to report, active first then
/// closed, each with `last` filled.
///
/// Closed connections are appended only after the active ones were compacted, into the room
/// the idle active connections left, so the list is not reallocated (at 100k connections a
/// reallocation cost more than the whole merge).
pub(crate) fn merge(
    snapshot: &mut Snapshot,
    conns: &mut Vec<ConnectionStats>,
    closed: &[Arc<ConnectionStats>],
    max_tracked: usize,
    scratch: &mut MergeScratch,
    telemetry: &mut StateTelemetry,
) {
    scratch.keep.reset(conns.len());
    scratch.handled.reset(closed.len());
    scratch.met_active.clear();
    scratch.previous.clear();
    merge_active(snapshot, conns, max_tracked, &mut scratch.keep, telemetry);
    for (index, closed_conn) in closed.iter().enumerate() {
        if index % WARM_BATCH == 0 {
            let batch = closed.get(index..).unwrap_or(&[]).iter().take(WARM_BATCH);
            snapshot.warm(batch.map(|c| c.cookie));
        }
        let previous = match_closed(snapshot, conns, index, closed_conn, scratch, telemetry);
        scratch.previous.push(previous);
    }
    let mut index = 0;
    let keep = &scratch.keep;
    conns.retain(|_| {
        let kept = keep.get(index);
        index += 1;
        kept
    });
    conns.extend(scratch.met_active.drain(..).filter(reportable));
    for (index, (closed_conn, previous)) in closed.iter().zip(&scratch.previous).enumerate() {
        if scratch.handled.get(index) {
            continue;
        }
        let d = closed_conn.monotonic.delta_since(previous);
        if d.underflow {
            telemetry.stats_underflows += 1;
        }
        let mut conn = ConnectionStats::clone(closed_conn);
        conn.is_closed = true;
        conn.monotonic = d.monotonic;
        conn.last = d.last;
        conns.push(conn);
    }
    snapshot.sweep();
}

fn merge_active(
    snapshot: &mut Snapshot,
    conns: &mut [ConnectionStats],
    max_tracked: usize,
    keep: &mut KeepSet,
    telemetry: &mut StateTelemetry,
) {
    for position in 0..conns.len() {
        if position % WARM_BATCH == 0 {
            let batch = conns.get(position..).unwrap_or(&[]).iter().take(WARM_BATCH);
            snapshot.warm(batch.map(|c| c.cookie));
        }
        let (before, rest) = conns.split_at_mut(position);
        let Some(conn) = rest.first_mut() else {
            break;
        };
        match snapshot.visit(conn.cookie, &conn.monotonic, position, max_tracked) {
            Visit::Refused => telemetry.conn_dropped += 1,
            Visit::New => {
                conn.last = conn.monotonic;
                keep.set(position, reportable(conn));
            }
            Visit::Known(entry) => {
                apply_delta(conn, &entry.counters(), telemetry);
                entry.set_counters(&conn.monotonic);
                keep.set(position, reportable(conn));
            }
            Visit::Duplicate(entry, first) => {
                let Some(kept) = before.get_mut(first) else {
                    continue;
                };
                if kept.tuple == conn.tuple {
                    let prev = StatCounters::previous_from(&kept.monotonic, &kept.last);
                    absorb_reading(kept, conn);
                    apply_delta(kept, &prev, telemetry);
                } else {
                    telemetry.stats_cookie_collisions += 1;
                    if conn.last_update_ns > kept.last_update_ns {
                        std::mem::swap(kept, conn);
                    }
                    kept.last = kept.monotonic;
                }
                entry.set_counters(&kept.monotonic);
                keep.set(first, reportable(kept));
            }
        }
    }
}

/// Settles a closed connection against the client's snapshot and this call's active list.
/// Returns the counters the client was last told about it; when it met an active copy, it is
/// merged into `scratch.met_active` (or dropped by a collision) and marked handled.
fn match_closed(
    snapshot: &mut Snapshot,
    conns: &mut [ConnectionStats],
    index: usize,
    closed_conn: &ConnectionStats,
    scratch: &mut MergeScratch,
    telemetry: &mut StateTelemetry,
) -> StatCounters {
    let Some(entry) = snapshot.take(closed_conn.cookie) else {
        return StatCounters::default();
    };
    let Some(first) = entry.seen_position() else {
        return entry.counters();
    };
    let Some(active) = conns.get_mut(first) else {
        return StatCounters::default();
    };
    scratch.handled.set(index, true);
    let mut conn = closed_conn.clone();
    conn.is_closed = true;
    if active.tuple == conn.tuple {
        let prev = StatCounters::previous_from(&active.monotonic, &active.last);
        absorb_reading(&mut conn, active);
        apply_delta(&mut conn, &prev, telemetry);
        scratch.keep.set(first, false);
    } else {
        telemetry.stats_cookie_collisions += 1;
        if active.last_update_ns > conn.last_update_ns {
            active.last = active.monotonic;
            scratch.keep.set(first, reportable(active));
            let mut entry = entry;
            entry.set_counters(&active.monotonic);
            snapshot.put_back(conn.cookie, entry);
            return StatCounters::default();
        }
        conn.last = conn.monotonic;
        scratch.keep.set(first, false);
    }
    scratch.met_active.push(conn);
    StatCounters::default()
}
