//! Leak checks: open file descriptors of this process and BPF programs/maps loaded in the kernel.

use std::collections::BTreeSet;

/// What this process and the kernel hold at one moment.
#[derive(Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// Open descriptors of this process (their numbers and link targets).
    pub fds: BTreeSet<(u32, String)>,
    /// Ids of loaded BPF programs whose names start with the tracer's `nt_` prefix.
    pub programs: BTreeSet<u32>,
    /// Ids of BPF maps whose names start with `NT_`.
    pub maps: BTreeSet<u32>,
}

impl Snapshot {
    /// Takes a snapshot now.
    pub fn take() -> Self {
        let fds = std::fs::read_dir("/proc/self/fd")
            .expect("read /proc/self/fd")
            .filter_map(Result::ok)
            .filter_map(|entry| {
                let n = entry.file_name().to_str()?.parse().ok()?;
                let target = std::fs::read_link(entry.path()).ok()?;
                Some((n, target.display().to_string()))
            })
            // read_dir itself holds a descriptor on /proc/self/fd while iterating.
            .filter(|(_, target)| !target.starts_with("/proc/") || !target.ends_with("/fd"))
            .collect();
        let programs = aya::programs::loaded_programs()
            .filter_map(Result::ok)
            .filter(|p| p.name_as_str().is_some_and(|n| n.starts_with("nt_")))
            .map(|p| p.id())
            .collect();
        let maps = aya::maps::loaded_maps()
            .filter_map(Result::ok)
            .filter(|m| m.name_as_str().is_some_and(|n| n.starts_with("NT_")))
            .map(|m| m.id())
            .collect();
        Self {
            fds,
            programs,
            maps,
        }
    }
}
