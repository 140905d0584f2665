//! Process names (`/proc/<pid>/comm`), cached for the pids of the current snapshot.

use std::collections::{HashMap, HashSet};

/// Shown when the process is gone (or the owner is unknown: pid 0).
pub const UNKNOWN: &str = "?";

/// A cache of process names. Entries not used in a snapshot are dropped at its end, so a
/// reused pid is looked up again once its previous owner stopped appearing.
#[derive(Default)]
pub struct ProcessNames {
    names: HashMap<u32, String>,
    used: HashSet<u32>,
}

impl ProcessNames {
    /// The name of `pid` ("?" if it is gone or unknown).
    pub fn name(&mut self, pid: u32) -> String {
        self.used.insert(pid);
        self.names
            .entry(pid)
            .or_insert_with(|| read_comm(pid))
            .clone()
    }

    /// Forgets the pids not asked for since the previous call.
    pub fn end_snapshot(&mut self) {
        let used = std::mem::take(&mut self.used);
        self.names.retain(|pid, _| used.contains(pid));
    }
}

fn read_comm(pid: u32) -> String {
    if pid == 0 {
        return UNKNOWN.to_owned();
    }
    match std::fs::read(format!("/proc/{pid}/comm")) {
        Ok(bytes) => {
            let name = String::from_utf8_lossy(&bytes);
            let name = name.trim_end_matches('\n');
            if name.is_empty() {
                UNKNOWN.to_owned()
            } else {
                name.to_owned()
            }
        }
        Err(_) => UNKNOWN.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_named_and_missing_ones_are_unknown() {
        let mut names = ProcessNames::default();
        let own = names.name(std::process::id());
        assert_ne!(own, UNKNOWN);
        assert!(!own.ends_with('\n'));
        assert_eq!(names.name(0), UNKNOWN);
        // Above the kernel's pid_max limit (4 194 304): never a live process.
        assert_eq!(names.name(u32::MAX), UNKNOWN);
    }

    #[test]
    fn unused_entries_are_dropped_at_the_end_of_a_snapshot() {
        let mut names = ProcessNames::default();
        names.name(0);
        names.name(u32::MAX);
        names.end_snapshot();
        assert_eq!(names.names.len(), 2);
        names.name(0);
        names.end_snapshot();
        assert_eq!(names.names.len(), 1);
        names.end_snapshot();
        assert!(names.names.is_empty());
    }
}
