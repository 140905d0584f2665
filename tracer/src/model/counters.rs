//! Traffic counters of one connection and the rules for turning two readings into a delta.
//!
//! Rules (matching Datadog's `StatCounters.Sub`, section 3.6 of the reference, with one
//! simplification noted below). Each field of a new reading `new` is compared with the previous
//! reading `prev` that a client was last told about:
//! - `new >= prev`: the delta is `new - prev`.
//! - Retransmits and the two TCP flags read 0 when the kernel entry that holds them is missing
//!   (they live in a separate map); a 0 after a non-zero value means "unknown", not a reset: the
//!   delta is 0, the previous value is kept, and it is not an underflow.
//! - Packet counters are 32-bit in the kernel (`tcp_sock.segs_out`) and wrap: when both readings
//!   fit in 32 bits and the wrapped-around difference is at most [`PACKET_WRAP_MAX_DELTA`]
//!   (375 GiB of 1300-byte packets, as Datadog), the wrapped difference is the delta.
//! - Any other decrease is an *underflow*: the delta of that field is 0 and the reported
//!   monotonic value is kept at `prev` (so the next delta is measured from the larger value and
//!   nothing is ever reported twice). Datadog keeps a wrap allowance for 64-bit bytes too; a
//!   64-bit byte counter cannot wrap in practice, so here any byte decrease is an underflow.
//!
//! Every field's outcome is invertible: from the reported `(monotonic, last)` pair the previous
//! reading can be recovered with [`StatCounters::previous_from`], which the merge uses when two
//! copies of one connection meet after the first one was already accounted.

/// Largest wrapped packet delta accepted as a genuine 32-bit wrap: 375 GiB of 1300-byte packets.
pub const PACKET_WRAP_MAX_DELTA: u64 = 375 * (1 << 30) / 1300;

/// Counters of one connection. `monotonic` copies hold totals since the kernel entry was created;
/// `last` copies hold what happened since the previous report to the same client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct StatCounters {
    /// Payload bytes sent.
    pub sent_bytes: u64,
    /// Payload bytes received.
    pub recv_bytes: u64,
    /// Packets (TCP segments or UDP datagrams) sent.
    pub sent_packets: u64,
    /// Packets received.
    pub recv_packets: u64,
    /// TCP retransmitted segments.
    pub retransmits: u32,
    /// 1 if the TCP connection was seen established after the tracer started (a count after
    /// aggregation).
    pub tcp_established: u32,
    /// 1 if the TCP connection was seen closed (a count after aggregation).
    pub tcp_closed: u32,
}

/// The result of comparing a new reading with the previous one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CounterDelta {
    /// What happened since the previous reading (never negative, never wrapped).
    pub last: StatCounters,
    /// The monotonic value to report and to remember: the new reading, except that fields that
    /// went down keep their previous value.
    pub monotonic: StatCounters,
    /// Whether any field went down in a way that is neither a wrap nor an unknown value.
    pub underflow: bool,
}

#[derive(Clone, Copy)]
enum FieldKind {
    Bytes,
    Packets,
    ZeroIsUnknown,
}

fn field_delta(prev: u64, new: u64, kind: FieldKind) -> (u64, u64, bool) {
    if new >= prev {
        return (new - prev, new, false);
    }
    match kind {
        FieldKind::ZeroIsUnknown if new == 0 => (0, prev, false),
        FieldKind::Packets => match (u32::try_from(prev), u32::try_from(new)) {
            (Ok(prev32), Ok(new32)) => {
                let wrapped = u64::from(new32.wrapping_sub(prev32));
                if wrapped <= PACKET_WRAP_MAX_DELTA {
                    (wrapped, new, false)
                } else {
                    (0, prev, true)
                }
            }
            _ => (0, prev, true),
        },
        _ => (0, prev, true),
    }
}

fn field_previous(monotonic: u64, last: u64) -> u64 {
    if monotonic >= last {
        monotonic - last
    } else {
        // Only a 32-bit packet wrap reports a delta larger than the monotonic value.
        u64::from((monotonic as u32).wrapping_sub(last as u32))
    }
}

fn u32_field(prev: u32, new: u32, kind: FieldKind) -> (u32, u32, bool) {
    let (last, mono, under) = field_delta(u64::from(prev), u64::from(new), kind);
    // Both results are <= max(prev, new), which fits in u32.
    (
        u32::try_from(last).unwrap_or(u32::MAX),
        u32::try_from(mono).unwrap_or(u32::MAX),
        under,
    )
}

impl StatCounters {
    /// All fields zero (including the TCP flags).
    pub fn is_zero(&self) -> bool {
        *self == Self::default()
    }

    /// Field-wise sum (saturating), used when aggregating distinct connections.
    pub fn add(&self, other: &Self) -> Self {
        Self {
            sent_bytes: self.sent_bytes.saturating_add(other.sent_bytes),
            recv_bytes: self.recv_bytes.saturating_add(other.recv_bytes),
            sent_packets: self.sent_packets.saturating_add(other.sent_packets),
            recv_packets: self.recv_packets.saturating_add(other.recv_packets),
            retransmits: self.retransmits.saturating_add(other.retransmits),
            tcp_established: self.tcp_established.saturating_add(other.tcp_established),
            tcp_closed: self.tcp_closed.saturating_add(other.tcp_closed),
        }
    }

    /// Field-wise maximum, used when two readings of the same connection meet.
    pub fn max(&self, other: &Self) -> Self {
        Self {
            sent_bytes: self.sent_bytes.max(other.sent_bytes),
            recv_bytes: self.recv_bytes.max(other.recv_bytes),
            sent_packets: self.sent_packets.max(other.sent_packets),
            recv_packets: self.recv_packets.max(other.recv_packets),
            retransmits: self.retransmits.max(other.retransmits),
            tcp_established: self.tcp_established.max(other.tcp_established),
            tcp_closed: self.tcp_closed.max(other.tcp_closed),
        }
    }

    /// Compares this new reading with `prev` (see the module docs for the rules).
    pub fn delta_since(&self, prev: &Self) -> CounterDelta {
        let (sb, msb, u1) = field_delta(prev.sent_bytes, self.sent_bytes, FieldKind::Bytes);
        let (rb, mrb, u2) = field_delta(prev.recv_bytes, self.recv_bytes, FieldKind::Bytes);
        let (sp, msp, u3) = field_delta(prev.sent_packets, self.sent_packets, FieldKind::Packets);
        let (rp, mrp, u4) = field_delta(prev.recv_packets, self.recv_packets, FieldKind::Packets);
        let (rt, mrt, u5) = u32_field(prev.retransmits, self.retransmits, FieldKind::ZeroIsUnknown);
        let (es, mes, u6) = u32_field(
            prev.tcp_established,
            self.tcp_established,
            FieldKind::ZeroIsUnknown,
        );
        let (cl, mcl, u7) = u32_field(prev.tcp_closed, self.tcp_closed, FieldKind::ZeroIsUnknown);
        CounterDelta {
            last: Self {
                sent_bytes: sb,
                recv_bytes: rb,
                sent_packets: sp,
                recv_packets: rp,
                retransmits: rt,
                tcp_established: es,
                tcp_closed: cl,
            },
            monotonic: Self {
                sent_bytes: msb,
                recv_bytes: mrb,
                sent_packets: msp,
                recv_packets: mrp,
                retransmits: mrt,
                tcp_established: mes,
                tcp_closed: mcl,
            },
            underflow: u1 | u2 | u3 | u4 | u5 | u6 | u7,
        }
    }

    /// Recovers the previous reading from a `(monotonic, last)` pair produced by
    /// [`StatCounters::delta_since`].
    pub fn previous_from(monotonic: &Self, last: &Self) -> Self {
        let prev32 = |m: u32, l: u32| {
            u32::try_from(field_previous(u64::from(m), u64::from(l))).unwrap_or(u32::MAX)
        };
        Self {
            sent_bytes: field_previous(monotonic.sent_bytes, last.sent_bytes),
            recv_bytes: field_previous(monotonic.recv_bytes, last.recv_bytes),
            sent_packets: field_previous(monotonic.sent_packets, last.sent_packets),
            recv_packets: field_previous(monotonic.recv_packets, last.recv_packets),
            retransmits: prev32(monotonic.retransmits, last.retransmits),
            tcp_established: prev32(monotonic.tcp_established, last.tcp_established),
            tcp_closed: prev32(monotonic.tcp_closed, last.tcp_closed),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn bytes(sent: u64, recv: u64) -> StatCounters {
        StatCounters {
            sent_bytes: sent,
            recv_bytes: recv,
            ..Default::default()
        }
    }

    #[test]
    fn delta_of_growing_counters_is_their_difference() {
        let d = bytes(150, 70).delta_since(&bytes(100, 20));
        assert_eq!(d.last, bytes(50, 50));
        assert_eq!(d.monotonic, bytes(150, 70));
        assert!(!d.underflow);
    }

    #[test]
    fn byte_decrease_is_an_underflow_reporting_zero_and_keeping_previous() {
        let d = bytes(90, 70).delta_since(&bytes(100, 20));
        assert!(d.underflow);
        assert_eq!(d.last, bytes(0, 50));
        assert_eq!(d.monotonic, bytes(100, 70));
    }

    #[test]
    fn retransmits_reading_zero_is_unknown_not_underflow() {
        let prev = StatCounters {
            retransmits: 5,
            tcp_established: 1,
            ..Default::default()
        };
        let d = StatCounters::default().delta_since(&prev);
        assert!(!d.underflow);
        assert!(d.last.is_zero());
        assert_eq!(d.monotonic, prev);
    }

    #[test]
    fn retransmits_decreasing_to_nonzero_is_underflow() {
        let prev = StatCounters {
            retransmits: 5,
            ..Default::default()
        };
        let new = StatCounters {
            retransmits: 3,
            ..Default::default()
        };
        let d = new.delta_since(&prev);
        assert!(d.underflow);
        assert_eq!(d.last.retransmits, 0);
        assert_eq!(d.monotonic.retransmits, 5);
    }

    #[test]
    fn packet_counter_wrapping_at_32_bits_yields_the_wrapped_delta() {
        let prev = StatCounters {
            sent_packets: u64::from(u32::MAX) - 9,
            ..Default::default()
        };
        let new = StatCounters {
            sent_packets: 5,
            ..Default::default()
        };
        let d = new.delta_since(&prev);
        assert!(!d.underflow);
        assert_eq!(d.last.sent_packets, 15);
        assert_eq!(d.monotonic.sent_packets, 5);
    }

    #[test]
    fn packet_decrease_beyond_wrap_allowance_is_underflow() {
        let prev = StatCounters {
            recv_packets: 1_000,
            ..Default::default()
        };
        let new = StatCounters {
            recv_packets: 10,
            ..Default::default()
        };
        let d = new.delta_since(&prev);
        assert!(d.underflow);
        assert_eq!(d.last.recv_packets, 0);
    }

    #[test]
    fn add_saturates_instead_of_overflowing() {
        let a = bytes(u64::MAX, 1);
        assert_eq!(a.add(&bytes(5, 1)), bytes(u64::MAX, 2));
    }

    fn counters() -> impl Strategy<Value = StatCounters> {
        let small_or_any = prop_oneof![
            0u64..1000,
            any::<u64>(),
            (u32::MAX as u64 - 50)..=(u32::MAX as u64)
        ];
        (
            small_or_any.clone(),
            small_or_any.clone(),
            small_or_any.clone(),
            small_or_any,
            prop_oneof![Just(0u32), any::<u32>()],
            0u32..2,
            0u32..2,
        )
            .prop_map(|(sb, rb, sp, rp, rt, es, cl)| StatCounters {
                sent_bytes: sb,
                recv_bytes: rb,
                sent_packets: sp,
                recv_packets: rp,
                retransmits: rt,
                tcp_established: es,
                tcp_closed: cl,
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn previous_reading_is_recoverable_from_monotonic_and_last(prev in counters(), new in counters()) {
            let d = new.delta_since(&prev);
            prop_assert_eq!(StatCounters::previous_from(&d.monotonic, &d.last), prev);
        }

        #[test]
        fn delta_against_itself_is_zero(c in counters()) {
            let d = c.delta_since(&c);
            prop_assert!(d.last.is_zero());
            prop_assert!(!d.underflow);
        }
    }
}
