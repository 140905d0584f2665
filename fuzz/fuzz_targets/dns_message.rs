#![no_main]

//! The DNS message parser (`sources::dns::parse`): header, question, answers, classification.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tracer::fuzzing::dns_message(data);
});
