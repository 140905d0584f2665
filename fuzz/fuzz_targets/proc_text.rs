#![no_main]

//! The /proc texts: mountinfo, a task's status, ip_local_port_range, the kernel release.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tracer::fuzzing::proc_text(data);
});
