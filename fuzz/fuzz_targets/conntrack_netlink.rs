#![no_main]

//! Conntrack netlink datagrams (`enrich::conntrack::parse`).

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tracer::fuzzing::conntrack_netlink(data);
});
