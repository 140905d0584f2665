//! Reads the kernel-side counters (a per-CPU array) and sums them over CPUs.

use aya::maps::{MapData, PerCpuArray};
pub use tracer_common::counters::Counter;

use crate::{Error, Result};

/// Totals of every kernel-side counter, summed over all CPUs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelCounters {
    values: Vec<(Counter, u64)>,
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
        Ok(Self { values })
    }

    /// The total of one counter.
    pub fn get(&self, counter: Counter) -> u64 {
        self.values
            .iter()
            .find(|(c, _)| *c == counter)
            .map_or(0, |(_, v)| *v)
    }

    /// Every counter with its name and total.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        self.values.iter().map(|(c, v)| (c.name(), *v))
    }
}
