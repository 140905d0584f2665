//! The shared per-CPU counter array: every event the programs could not record bumps one slot.

use aya_ebpf::{macros::map, maps::PerCpuArray};
use tracer_common::counters::{COUNTER_COUNT, Counter};

#[map(name = "NT_COUNTERS")]
static NT_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_COUNT, 0);

/// Adds one to `counter` on this CPU (per-CPU slot: no atomic needed, userspace sums the CPUs).
#[inline(always)]
pub fn bump(counter: Counter) {
    if let Some(slot) = NT_COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: the pointer comes from the map and this CPU's slot is only touched by this CPU
        // with preemption disabled for the program's run.
        unsafe { *slot += 1 };
    }
}
