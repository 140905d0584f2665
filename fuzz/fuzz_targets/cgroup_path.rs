#![no_main]

//! The cgroup path -> container id rule (`enrich::containers::id`).

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(id) = tracer::fuzzing::cgroup_path(data) {
        // The rule never invents bytes: the id is part of the path.
        assert!(
            data.windows(id.len()).any(|w| w == id.as_bytes()),
            "container id {id:?} is not part of the path"
        );
    }
});
