#![no_main]

//! The BTF reader (`kernel::btf`), on a blob like /sys/kernel/btf/vmlinux or a file given by path.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tracer::fuzzing::btf(data);
});
