//! Finding and entering network namespaces by inode (`ConnTuple::netns`), for the parts of the
//! tracer that must act inside a namespace: the TCP iterator ([`super::iter`]) and conntrack's
//! netlink sockets ([`crate::enrich::conntrack`]).
//!
//! A namespace is found through a task in it (`/proc/<pid>/task/<tid>/ns/net`) or, for one no
//! task is in, a bind mount under `/run/netns` (`ip netns add`). The opened file is the handle:
//! [`run_in`] enters it with `setns` on a short-lived helper thread (`setns` moves only the
//! calling thread), so the caller's own namespace never changes. What is created there (an
//! iterator file, a socket) belongs to that namespace for good and may be used from any thread.

use std::{
    collections::{HashMap, HashSet},
    fs::File,
    io,
    os::{
        fd::{AsRawFd, BorrowedFd},
        unix::fs::MetadataExt,
    },
    path::Path,
};

/// Where named namespaces are bind-mounted by `ip netns add`.
const NAMED_NETNS_DIR: &str = "/run/netns";

/// The calling thread's network namespace: its inode and an open handle.
pub fn current() -> io::Result<(u32, File)> {
    let file = File::open("/proc/thread-self/ns/net")?;
    let inode = file.metadata()?.ino();
    let inode = u32::try_from(inode).map_err(|_| io::Error::other("netns inode above u32"))?;
    Ok((inode, file))
}

/// `setns(ns, CLONE_NEWNET)` for the calling thread only.
pub fn enter(ns: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: plain syscall on a valid descriptor; it changes only the calling thread.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Runs `f` on a short-lived helper thread that first enters `ns`. The caller's namespace does
/// not change. Fails if the namespace cannot be entered or the helper thread panicked.
pub fn run_in<T, F>(ns: BorrowedFd<'_>, f: F) -> io::Result<T>
where
    F: FnOnce() -> T + Send,
    T: Send,
{
    std::thread::scope(|scope| {
        scope
            .spawn(|| enter(ns).map(|()| f()))
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("namespace helper thread panicked")))
    })
}

/// Finds a task (or a `/run/netns` bind mount) in each namespace of `wanted` under `proc` and
/// opens its namespace file into `found`. Stops as soon as all are found.
pub fn find(proc: &Path, wanted: &HashSet<u32>, found: &mut HashMap<u32, File>) {
    let mut left: HashSet<u32> = wanted
        .iter()
        .copied()
        .filter(|inode| !found.contains_key(inode))
        .collect();
    if left.is_empty() {
        return;
    }
    scan_proc(proc, &mut left, found);
    if !left.is_empty() {
        scan_named(Path::new(NAMED_NETNS_DIR), &mut left, found);
    }
}

/// Every network namespace that a task is in (any thread: `setns` moves one thread) or that a
/// `/run/netns` bind mount keeps alive, opened, by inode. Returns them and how many were seen
/// but could not be opened (a task that exited meanwhile is not counted: its namespace is found
/// through another task, or is gone with it).
pub fn all(proc: &Path) -> (HashMap<u32, File>, u64) {
    let mut found = HashMap::new();
    let mut failed = HashSet::new();
    let mut visit = |path: &Path, inode: Option<u32>| {
        let Some(inode) = inode else { return };
        if found.contains_key(&inode) {
            return;
        }
        match open_if(path, inode) {
            Some(file) => {
                failed.remove(&inode);
                found.insert(inode, file);
            }
            None => {
                failed.insert(inode);
            }
        }
    };
    if let Ok(processes) = std::fs::read_dir(proc) {
        for process in processes.flatten() {
            if !is_pid(&process.file_name()) {
                continue;
            }
            let Ok(tasks) = std::fs::read_dir(process.path().join("task")) else {
                continue; // gone meanwhile
            };
            for task in tasks.flatten() {
                let path = task.path().join("ns/net");
                let Ok(target) = std::fs::read_link(&path) else {
                    continue; // gone meanwhile
                };
                visit(&path, netns_inode_of_link(&target.to_string_lossy()));
            }
        }
    }
    if let Ok(entries) = std::fs::read_dir(NAMED_NETNS_DIR) {
        for entry in entries.flatten() {
            let path = entry.path();
            let inode = std::fs::metadata(&path)
                .ok()
                .and_then(|m| u32::try_from(m.ino()).ok());
            visit(&path, inode);
        }
    }
    (found, failed.len() as u64)
}

/// Opens `path` if it is the namespace `inode` (checked on what was opened: a task may move
/// between a readlink and the open).
fn open_if(path: &Path, inode: u32) -> Option<File> {
    File::open(path)
        .ok()
        .filter(|file| file.metadata().is_ok_and(|m| m.ino() == u64::from(inode)))
}

fn scan_proc(proc: &Path, left: &mut HashSet<u32>, found: &mut HashMap<u32, File>) {
    let Ok(processes) = std::fs::read_dir(proc) else {
        return;
    };
    for process in processes.flatten() {
        if !is_pid(&process.file_name()) {
            continue;
        }
        let Ok(tasks) = std::fs::read_dir(process.path().join("task")) else {
            continue; // gone meanwhile
        };
        for task in tasks.flatten() {
            let path = task.path().join("ns/net");
            let Some(inode) = std::fs::read_link(&path)
                .ok()
                .and_then(|target| netns_inode_of_link(&target.to_string_lossy()))
            else {
                continue;
            };
            if take(&path, inode, left, found) {
                return;
            }
        }
    }
}

/// Namespaces no task is in, kept alive by a bind mount (`ip netns add NAME`).
fn scan_named(dir: &Path, left: &mut HashSet<u32>, found: &mut HashMap<u32, File>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(inode) = std::fs::metadata(&path)
            .ok()
            .and_then(|m| u32::try_from(m.ino()).ok())
        else {
            continue;
        };
        if take(&path, inode, left, found) {
            return;
        }
    }
}

/// Opens `path` into `found` if namespace `inode` is still wanted (and `path` still is it);
/// returns whether every wanted namespace is now found.
fn take(path: &Path, inode: u32, left: &mut HashSet<u32>, found: &mut HashMap<u32, File>) -> bool {
    if left.contains(&inode)
        && let Some(file) = open_if(path, inode)
    {
        found.insert(inode, file);
        left.remove(&inode);
    }
    left.is_empty()
}

pub(crate) fn is_pid(name: &std::ffi::OsStr) -> bool {
    name.to_str()
        .is_some_and(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
}

/// The inode in a namespace link's target, `net:[4026531840]`.
pub(crate) fn netns_inode_of_link(target: &str) -> Option<u32> {
    target
        .strip_prefix("net:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_links_parse_to_their_inode() {
        assert_eq!(netns_inode_of_link("net:[4026531840]"), Some(4_026_531_840));
        assert_eq!(netns_inode_of_link("net:[]"), None);
        assert_eq!(netns_inode_of_link("mnt:[4026531840]"), None);
        assert_eq!(netns_inode_of_link("net:[4026531840"), None);
    }

    #[test]
    fn only_numeric_proc_entries_are_processes() {
        assert!(is_pid(std::ffi::OsStr::new("1234")));
        assert!(!is_pid(std::ffi::OsStr::new("self")));
        assert!(!is_pid(std::ffi::OsStr::new("")));
    }

    #[test]
    fn the_scan_finds_this_thread_s_namespace_and_nothing_for_unknown_ones() {
        let (own, _) = current().unwrap();
        let mut found = HashMap::new();
        find(Path::new("/proc"), &HashSet::from([own, 1]), &mut found);
        assert!(found.contains_key(&own));
        assert!(!found.contains_key(&1));
    }

    #[test]
    fn every_namespace_includes_this_thread_s() {
        let (own, _) = current().unwrap();
        let (found, _failed) = all(Path::new("/proc"));
        assert!(found.contains_key(&own));
        assert!(
            found
                .iter()
                .all(|(inode, file)| file.metadata().unwrap().ino() == u64::from(*inode))
        );
    }

    #[test]
    fn a_helper_thread_runs_in_the_namespace_it_entered() {
        let (own, file) = current().unwrap();
        use std::os::fd::AsFd;
        let inside = run_in(file.as_fd(), || current().map(|(inode, _)| inode)).unwrap();
        assert_eq!(inside.unwrap(), own);
    }
}
