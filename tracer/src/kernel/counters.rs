//! Reads the kernel-side counters (a per-CPU array) and sums them over CPUs.

use aya::maps::{MapData, PerCpuArray};
pub use tracer_common::counters::Counter;

use crate::{
    Error, Result,
    telemetry::{CounterInfo, CounterKind, CounterSource, Sample},
};

/// The typed description of a kernel counter.
pub fn info(counter: Counter) -> CounterInfo {
    CounterInfo {
        name: counter.name(),
        kind: if counter.is_loss() {
            CounterKind::Loss
        } else {
            CounterKind::Activity
        },
        doc: counter.doc(),
    }
}

const PROGRAM_RUNS_SKIPPED: CounterInfo = CounterInfo::loss(
    "program_runs_skipped",
    "Runs of the tracer's programs the kernel skipped because another tracing program ran on \
     the same CPU (bpf_prog_info.recursion_misses, Linux 5.12+): each an event not seen.",
);
const CLOSED_RECORDS_MALFORMED: CounterInfo = CounterInfo::loss(
    "closed_records_malformed",
    "Closed-connection records of the wrong size, skipped instead of misread.",
);

/// Totals of every kernel-side counter, summed over all CPUs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelCounters {
    values: Vec<(Counter, u64)>,
    /// Runs of the programs the kernel skipped (`None` before Linux 5.12, which does not count
    /// them), see `skipped_runs`.
    program_runs_skipped: Option<u64>,
    /// Closed-connection records of the wrong size, skipped instead of misread.
    closed_records_malformed: u64,
}

impl KernelCounters {
    /// Reads and sums the per-CPU counter map.
    pub(crate) fn read<T: std::borrow::Borrow<MapData>>(map: &PerCpuArray<T, u64>) -> Result<Self> {
        let mut values = Vec::with_capacity(Counter::ALL.len());
        for &counter in Counter::ALL {
            let per_cpu = map.get(&(counter as u32), 0).map_err(|e| Error::Map {
                map: tracer_common::names::MAP_COUNTERS,
                source: Box::new(e),
            })?;
            let total = per_cpu.iter().fold(0u64, |sum, v| sum.saturating_add(*v));
            values.push((counter, total));
        }
        Ok(Self {
            values,
            program_runs_skipped: None,
            closed_records_malformed: 0,
        })
    }

    /// Adds what userspace knows about the programs and the ring buffer.
    pub(crate) fn with_program_counts(
        self,
        program_runs_skipped: Option<u64>,
        closed_records_malformed: u64,
    ) -> Self {
        Self {
            program_runs_skipped,
            closed_records_malformed,
            ..self
        }
    }

    /// Runs of the tracer's programs that the kernel skipped because another tracing program
    /// was running on the same CPU (each one an event not seen): `bpf_prog_info.recursion_misses`
    /// summed over the programs. `None` before Linux 5.12, where the kernel does not count them.
    pub fn program_runs_skipped(&self) -> Option<u64> {
        self.program_runs_skipped
    }

    /// The total of one counter.
    pub fn get(&self, counter: Counter) -> u64 {
        self.values
            .iter()
            .find(|(c, _)| *c == counter)
            .map_or(0, |(_, v)| *v)
    }

    /// Every counter with its name and total (`program_runs_skipped` only where the kernel
    /// counts it).
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        self.samples().map(|s| (s.info.name, s.value))
    }

    /// Every counter as a typed sample (`program_runs_skipped` only where the kernel counts
    /// it).
    pub fn samples(&self) -> impl Iterator<Item = Sample> + '_ {
        self.values
            .iter()
            .map(|(c, v)| Sample::new(info(*c), *v))
            .chain(
                self.program_runs_skipped
                    .map(|v| Sample::new(PROGRAM_RUNS_SKIPPED, v)),
            )
            .chain(std::iter::once(Sample::new(
                CLOSED_RECORDS_MALFORMED,
                self.closed_records_malformed,
            )))
    }
}

impl CounterSource for KernelCounters {
    fn collect(&self, out: &mut Vec<Sample>) {
        out.extend(self.samples());
    }
}
