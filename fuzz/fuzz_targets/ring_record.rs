#![no_main]

//! Ring-buffer record decoding (`decode`): closed connections, packet and HTTP records.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tracer::fuzzing::ring_record(data);
});
