#![no_main]

//! Capture ring records fed to the DNS (UDP and TCP reassembly) and HTTP sources.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tracer::fuzzing::capture_records(data);
});
