//! The running kernel's layout (struct offsets from BTF, tracepoint offsets from tracefs),
//! patched in by userspace at load time, and typed reads through it.

use aya_ebpf::{Global, helpers::bpf_probe_read_kernel};
use tracer_common::offsets::KernelLayout;

#[unsafe(no_mangle)]
static NT_LAYOUT: Global<KernelLayout> = Global::new(KernelLayout::UNRESOLVED);

/// The layout for this kernel: the patched global, read field by field where it is used.
#[inline(always)]
pub fn layout() -> &'static KernelLayout {
    // Not `NT_LAYOUT.load()`: a copy of the whole layout becomes dozens of live scalars that the
    // compiler spills to the 512-byte stack (nt_tp_state went over the limit on 5.10/6.1, whose
    // verifiers round each frame up to 32 bytes). The pointer goes through `black_box` so that
    // the compiler cannot fold the reads to the placeholder values above (the loader patches
    // them); `Global<T>` holds exactly one `MaybeUninit<T>`, so the `T` is at offset 0.
    let layout: *const KernelLayout = core::hint::black_box(core::ptr::addr_of!(NT_LAYOUT).cast());
    // SAFETY: the global lives for the program's whole run, always holds an initialised
    // `KernelLayout`, and no program writes it.
    unsafe { &*layout }
}

/// Reads a `T` at `base + offset` in kernel memory. Fails (never faults) on a bad address.
#[inline(always)]
pub fn read_kernel<T>(base: u64, offset: u16) -> Result<T, i32> {
    let address = base.wrapping_add(u64::from(offset));
    // SAFETY: bpf_probe_read_kernel validates the address; a bad one returns an error.
    unsafe { bpf_probe_read_kernel(address as *const T) }
}
