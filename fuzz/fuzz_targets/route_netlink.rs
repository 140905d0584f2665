#![no_main]

//! Route netlink answers (`enrich::routes::netlink`).

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tracer::fuzzing::route_netlink(data);
});
