//! Owner of the `iter/tcp` program (`nt_iter_tcp`, tracer-ebpf/src/iter/tcp.rs; Linux 5.9+):
//! refreshes the copied TCP counters (packets, retransmits, RTT) of every tracked connection at
//! read time, so that a read reports what the kernel has at that moment, also for connections
//! that have been idle since their last segments and ACKs (the data path only copies them on
//! application I/O).
//!
//! A TCP iterator sees only the sockets of the network namespace of the thread that creates the
//! iterator file. So for each namespace with tracked connections, a helper thread (one per
//! refresh, short-lived: `setns` moves only the calling thread) enters the namespace through an
//! open `/proc/<pid>/task/<tid>/ns/net` and creates and reads an iterator file there. Those
//! descriptors are cached by namespace inode, found by scanning `/proc/*/task/*/ns/net` when a
//! namespace is missing from the cache, and closed as soon as no tracked connection is in their
//! namespace any more (an open descriptor keeps a namespace alive). A namespace that no task is
//! in any more, or that cannot be entered, is skipped and counted in [`IterStats`].

use std::{
    collections::{HashMap, HashSet},
    fs::File,
    io::{self, Read},
    os::{
        fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
        unix::fs::MetadataExt,
    },
    path::Path,
    sync::{Mutex, PoisonError},
};

use aya_obj::generated::{bpf_attach_type, bpf_attr, bpf_cmd};

use crate::{Error, Result};

/// What one refresh did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IterStats {
    /// Network namespaces whose TCP sockets were iterated.
    pub netns_visited: u64,
    /// Namespaces with tracked connections that could not be iterated (no task is in them any
    /// more, or entering them or creating the iterator failed): their connections keep the
    /// counters of their latest data-path refresh.
    pub netns_failed: u64,
    /// Tracked TCP sockets whose counters were refreshed.
    pub sockets_refreshed: u64,
}

/// The attached TCP iterator and the namespaces it enters.
pub struct TcpIter {
    /// The `BPF_TRACE_ITER` link; each refresh creates iterator files from it. Closing it (drop)
    /// detaches the program.
    link: OwnedFd,
    /// Namespace inode -> open `/proc/<pid>/task/<tid>/ns/net`.
    namespaces: Mutex<HashMap<u32, File>>,
}

impl TcpIter {
    /// Loads `program` as the `tcp` iterator against the kernel's BTF and creates its link.
    pub(crate) fn load(
        program: &mut aya::programs::Iter,
        btf: &aya::Btf,
        name: &'static str,
    ) -> Result<Self> {
        let fail = |e| Error::Program {
            program: name,
            source: Box::new(e),
        };
        program.load("tcp", btf).map_err(fail)?;
        let prog_fd = program.fd().map_err(fail)?;
        let link = link_create(prog_fd.as_fd())
            .map_err(|e| Error::io("BPF_LINK_CREATE of the TCP iterator", e))?;
        Ok(Self {
            link,
            namespaces: Mutex::new(HashMap::new()),
        })
    }

    /// Refreshes the tracked TCP connections of every namespace in `netns` (inodes as in
    /// `ConnTuple::netns`; 0, an unreadable namespace, is counted as failed).
    pub fn refresh(&self, netns: &HashSet<u32>) -> IterStats {
        let mut stats = IterStats::default();
        let mut cache = self
            .namespaces
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Namespaces no tracked connection is in any more: close them.
        cache.retain(|inode, _| netns.contains(inode));
        let missing: HashSet<u32> = netns
            .iter()
            .copied()
            .filter(|inode| *inode != 0 && !cache.contains_key(inode))
            .collect();
        if !missing.is_empty() {
            scan_proc(Path::new("/proc"), &missing, &mut cache);
        }
        stats.netns_failed = netns.iter().filter(|i| !cache.contains_key(i)).count() as u64;
        if cache.is_empty() {
            return stats;
        }
        let link = self.link.as_fd();
        let namespaces: Vec<(u32, BorrowedFd<'_>)> = cache
            .iter()
            .map(|(inode, file)| (*inode, file.as_fd()))
            .collect();
        let visited = std::thread::scope(|scope| {
            scope
                .spawn(|| visit_all(link, &namespaces))
                .join()
                .unwrap_or_else(|_| {
                    // visit_all does not panic; if it did, every namespace counts as failed.
                    namespaces.iter().map(|(inode, _)| (*inode, None)).collect()
                })
        });
        let mut stale = Vec::new();
        for (inode, result) in visited {
            match result {
                Some(sockets) => {
                    stats.netns_visited += 1;
                    stats.sockets_refreshed += sockets;
                }
                None => {
                    stats.netns_failed += 1;
                    stale.push(inode);
                }
            }
        }
        // A descriptor that failed is looked up again next time (its task may have moved).
        for inode in stale {
            cache.remove(&inode);
        }
        stats
    }
}

/// On the calling (helper) thread: enters each namespace and runs the iterator there. Returns
/// per namespace the sockets refreshed, or `None` when it failed (logged).
fn visit_all(
    link: BorrowedFd<'_>,
    namespaces: &[(u32, BorrowedFd<'_>)],
) -> Vec<(u32, Option<u64>)> {
    let mut buf = vec![0u8; 64 << 10];
    namespaces
        .iter()
        .map(|&(inode, ns)| {
            let result = enter(ns).and_then(|()| run_iterator(link, &mut buf));
            match result {
                Ok(sockets) => (inode, Some(sockets)),
                Err(e) => {
                    tracing::debug!(netns = inode, error = %e, "cannot iterate TCP sockets of a namespace");
                    (inode, None)
                }
            }
        })
        .collect()
}

/// `setns(ns, CLONE_NEWNET)` for the calling thread only.
fn enter(ns: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: plain syscall on a valid descriptor; it changes only the calling thread.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Creates an iterator file (in the calling thread's namespace) and reads it to the end: the
/// program runs while it is read. Returns the bytes read, one per refreshed socket.
fn run_iterator(link: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<u64> {
    let mut file = File::from(iter_create(link)?);
    let mut total = 0u64;
    loop {
        match file.read(buf) {
            Ok(0) => return Ok(total),
            Ok(n) => total += n as u64,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Finds a task in each namespace of `wanted` under `proc` and opens its namespace file into
/// `cache`. Stops as soon as all are found.
fn scan_proc(proc: &Path, wanted: &HashSet<u32>, cache: &mut HashMap<u32, File>) {
    let mut left: HashSet<u32> = wanted.clone();
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
            if !left.contains(&inode) {
                continue;
            }
            // The task may have moved between the readlink and the open: check what was opened.
            if let Ok(file) = File::open(&path)
                && file.metadata().is_ok_and(|m| m.ino() == u64::from(inode))
            {
                cache.insert(inode, file);
                left.remove(&inode);
                if left.is_empty() {
                    return;
                }
            }
        }
    }
}

fn is_pid(name: &std::ffi::OsStr) -> bool {
    name.to_str()
        .is_some_and(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
}

/// The inode in a namespace link's target, `net:[4026531840]`.
fn netns_inode_of_link(target: &str) -> Option<u32> {
    target
        .strip_prefix("net:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// `BPF_LINK_CREATE` for an iterator program (no target, no iterator parameters).
fn link_create(prog: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    // SAFETY: a plain C union for which all-zero is a valid value.
    let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
    attr.link_create.__bindgen_anon_1.prog_fd = prog.as_raw_fd() as u32;
    attr.link_create.attach_type = bpf_attach_type::BPF_TRACE_ITER as u32;
    bpf_fd(bpf_cmd::BPF_LINK_CREATE, &mut attr)
}

/// `BPF_ITER_CREATE`: a new iterator file of `link`, in the calling thread's namespace.
fn iter_create(link: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    // SAFETY: as above.
    let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
    attr.iter_create.link_fd = link.as_raw_fd() as u32;
    bpf_fd(bpf_cmd::BPF_ITER_CREATE, &mut attr)
}

/// A `bpf(2)` command that returns a new descriptor.
fn bpf_fd(cmd: bpf_cmd, attr: &mut bpf_attr) -> io::Result<OwnedFd> {
    // SAFETY: `attr` is a valid, fully initialised bpf_attr for `cmd` that outlives the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as libc::c_long,
            std::ptr::from_mut(attr),
            std::mem::size_of::<bpf_attr>(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = i32::try_from(rc).map_err(|_| io::Error::other("bpf(2) returned no descriptor"))?;
    // SAFETY: the kernel just returned this new descriptor, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
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
        let own = std::fs::metadata("/proc/thread-self/ns/net").unwrap().ino() as u32;
        let mut cache = HashMap::new();
        scan_proc(Path::new("/proc"), &HashSet::from([own, 1]), &mut cache);
        assert!(cache.contains_key(&own));
        assert!(!cache.contains_key(&1));
    }
}
