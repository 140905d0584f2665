//! The interval's non-zero telemetry, split into what means loss (or wrong data) and what is
//! only activity.

use tracer::model::Connections;

/// Counters that only count activity. Every other non-zero counter is shown as loss, so a
/// counter added to the library later is noticed rather than hidden.
const ACTIVITY: &[&str] = &[
    "closed_emitted",
    "closed_received",
    "closed_filtered",
    "active_filtered",
    "expired_tcp",
    "expired_udp",
    "map_read_duplicates",
    "closed_discarded_without_clients",
    "udp_wildcard_local",
    "udp_empty_datagram",
    "incoming_direction_fixes",
    "outgoing_direction_fixes",
];

/// Non-zero counter deltas of one interval, by name.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Telemetry {
    pub loss: Vec<(&'static str, u64)>,
    pub activity: Vec<(&'static str, u64)>,
}

impl Telemetry {
    /// Sorts the kernel and state telemetry deltas of `conns`.
    pub fn of(conns: &Connections) -> Self {
        let s = &conns.state_telemetry;
        let state = [
            ("conn_dropped", s.conn_dropped),
            ("closed_conn_dropped", s.closed_conn_dropped),
            ("stats_underflows", s.stats_underflows),
            ("stats_cookie_collisions", s.stats_cookie_collisions),
            ("dns_stats_dropped", s.dns_stats_dropped),
            ("usm_stats_dropped", s.usm_stats_dropped),
            ("incoming_direction_fixes", s.incoming_direction_fixes),
            ("outgoing_direction_fixes", s.outgoing_direction_fixes),
            ("clients_refused", s.clients_refused),
        ];
        let mut telemetry = Self::default();
        for (name, value) in conns.kernel_telemetry.0.iter().copied().chain(state) {
            if value == 0 {
                continue;
            }
            if ACTIVITY.contains(&name) {
                telemetry.activity.push((name, value));
            } else {
                telemetry.loss.push((name, value));
            }
        }
        telemetry
    }
}

/// `a=1 b=2`, or `none`.
pub fn render(counters: &[(&str, u64)]) -> String {
    if counters.is_empty() {
        return "none".to_owned();
    }
    counters
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use tracer::model::KernelCounters;

    use super::*;

    #[test]
    fn zero_counters_are_dropped_and_unknown_names_count_as_loss() {
        let mut conns = Connections {
            kernel_telemetry: KernelCounters(vec![
                ("ringbuf_full", 3),
                ("closed_emitted", 5),
                ("conn_map_full", 0),
                ("some_new_counter", 1),
            ]),
            ..Connections::default()
        };
        conns.state_telemetry.closed_conn_dropped = 2;
        let t = Telemetry::of(&conns);
        assert_eq!(
            t.loss,
            vec![
                ("ringbuf_full", 3),
                ("some_new_counter", 1),
                ("closed_conn_dropped", 2)
            ]
        );
        assert_eq!(t.activity, vec![("closed_emitted", 5)]);
        assert_eq!(render(&t.activity), "closed_emitted=5");
        assert_eq!(render(&[]), "none");
    }
}
