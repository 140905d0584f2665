//! Combining two readings of the *same* connection (same cookie, same tuple).
//!
//! Two readings meet when the kernel map iteration returns an entry twice, when a closed
//! record arrives twice, or when a connection is both in the active list and in the closed
//! store. Counters only grow, so the newer reading is the field-wise maximum; enrichment that
//! one side lacks is filled from the other.

use crate::model::ConnectionStats;

/// Folds `other` into `into`: counters = max, newest update time and its RTT, missing NAT,
/// containers, protocol layers and failures filled in.
pub(crate) fn absorb_reading(into: &mut ConnectionStats, other: &ConnectionStats) {
    into.monotonic = into.monotonic.max(&other.monotonic);
    if other.last_update_ns > into.last_update_ns {
        into.last_update_ns = other.last_update_ns;
        into.rtt_us = other.rtt_us;
        into.rtt_var_us = other.rtt_var_us;
    }
    if into.created_ns == 0 {
        into.created_ns = other.created_ns;
    }
    if into.nat.is_none() {
        into.nat = other.nat;
    }
    if into.containers.source.is_none() {
        into.containers.source.clone_from(&other.containers.source);
    }
    if into.containers.dest.is_none() {
        into.containers.dest.clone_from(&other.containers.dest);
    }
    into.protocol_stack.merge(&other.protocol_stack);
    into.static_tags |= other.static_tags;
    into.is_assured |= other.is_assured;
    if into.tcp_failures.is_empty() {
        into.tcp_failures.clone_from(&other.tcp_failures);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::test_support::conn;

    #[test]
    fn absorbing_a_reading_takes_max_counters_and_newest_rtt() {
        let mut a = conn(1, 1000);
        a.monotonic.sent_bytes = 10;
        a.monotonic.recv_bytes = 50;
        a.last_update_ns = 5;
        a.rtt_us = 1;
        let mut b = conn(1, 1000);
        b.monotonic.sent_bytes = 20;
        b.monotonic.recv_bytes = 40;
        b.last_update_ns = 6;
        b.rtt_us = 2;
        b.tcp_failures.record(104, 1);
        absorb_reading(&mut a, &b);
        assert_eq!((a.monotonic.sent_bytes, a.monotonic.recv_bytes), (20, 50));
        assert_eq!((a.last_update_ns, a.rtt_us), (6, 2));
        assert!(!a.tcp_failures.is_empty());
    }
}
