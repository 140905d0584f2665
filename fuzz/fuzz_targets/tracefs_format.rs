#![no_main]

//! The tracefs event format parser (`kernel::tracefs`).

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tracer::fuzzing::tracefs_format(data);
});
