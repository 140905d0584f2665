//! The interval's non-zero telemetry, split into what means loss (or wrong data) and what is
//! only activity.

use tracer::{model::Connections, telemetry::CounterKind};

/// Non-zero counter deltas of one interval, by name.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Telemetry {
    pub loss: Vec<(&'static str, u64)>,
    pub activity: Vec<(&'static str, u64)>,
}

impl Telemetry {
    /// Sorts the counter deltas of `conns` by their kind (gauges are levels, not shown here).
    pub fn of(conns: &Connections) -> Self {
        let mut telemetry = Self::default();
        for sample in conns.counters.iter() {
            if sample.value == 0 {
                continue;
            }
            let entry = (sample.info.name, sample.value);
            match sample.info.kind {
                CounterKind::Loss => telemetry.loss.push(entry),
                CounterKind::Activity => telemetry.activity.push(entry),
                CounterKind::Gauge => {}
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
    use tracer::{
        model::CounterSet,
        telemetry::{CounterInfo, Sample},
    };

    use super::*;

    #[test]
    fn zero_counters_are_dropped_and_kinds_decide_the_column() {
        let conns = Connections {
            counters: CounterSet(vec![
                Sample::new(CounterInfo::loss("ringbuf_full", ""), 3),
                Sample::new(CounterInfo::activity("closed_emitted", ""), 5),
                Sample::new(CounterInfo::loss("conn_map_full", ""), 0),
                Sample::new(
                    CounterInfo {
                        name: "entries",
                        kind: CounterKind::Gauge,
                        doc: "",
                    },
                    7,
                ),
            ]),
            ..Connections::default()
        };
        let t = Telemetry::of(&conns);
        assert_eq!(t.loss, vec![("ringbuf_full", 3)]);
        assert_eq!(t.activity, vec![("closed_emitted", 5)]);
        assert_eq!(render(&t.activity), "closed_emitted=5");
        assert_eq!(render(&[]), "none");
    }
}
