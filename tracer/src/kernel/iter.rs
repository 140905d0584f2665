//! Owner of the two read-time iterators.
//!
//! [`OwnerIter`], the `iter/task_file` program (`nt_iter_files`,
//! tracer-ebpf/src/iter/task_file.rs; Linux 5.8+): walks every open file of every task of the
//! tracer's pid namespace, and names the owner (process, cgroup, name) of each accepted TCP
//! connection in the map that has none yet. An accepted socket is created in softirq, where no
//! process is known; its first send or receive names its owner, and this walk names the owners
//! of the ones that did no I/O before a read (run only then). It replaces `accept`'s syscall
//! tracepoints, which put every syscall of every process on the kernel's slower traced path.
//!
//! [`TcpIter`], the `iter/tcp` program (`nt_iter_tcp`, tracer-ebpf/src/iter/tcp.rs; Linux 5.9+):
//! refreshes the copied TCP counters (packets, retransmits, RTT) of every tracked connection at
//! read time, so that a read reports what the kernel has at that moment, also for connections
//! that have been idle since their last segments and ACKs (the data path only copies them on
//! application I/O).
//!
//! [`Seeder`], the start-up walk (`iter/tcp` and `iter/udp`, tracer-ebpf/src/iter/seed.rs;
//! Linux 5.9+): run once when the tracer starts, in every network namespace, it tracks the
//! sockets that existed before the start; the owner walk then names their owners.
//!
//! A TCP iterator sees only the sockets of the network namespace of the thread that creates the
//! iterator file. So for each namespace with tracked connections, a helper thread (one per
//! refresh, short-lived: `setns` moves only the calling thread) enters the namespace through an
//! open `/proc/<pid>/task/<tid>/ns/net` and creates and reads an iterator file there. Those
//! descriptors are cached by namespace inode, found by [`super::netns::find`] when a namespace is
//! missing from the cache, and closed as soon as no tracked connection is in their namespace any
//! more (an open descriptor keeps a namespace alive). A namespace that cannot be found or
//! entered is skipped and counted in [`IterStats`].

use std::{
    collections::{HashMap, HashSet},
    fs::File,
    io::{self, Read},
    os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
    path::Path,
    sync::{Mutex, PoisonError},
};

use aya_obj::generated::{bpf_attach_type, bpf_attr, bpf_cmd};

use super::netns;
use crate::{Error, Result};

/// What one refresh did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IterStats {
    /// Walks of every task's files for owners of accepted connections (`iter/task_file`).
    pub owner_walks: u64,
    /// Accepted connections those walks named an owner for.
    pub owners_named: u64,
    /// Walks that failed (creating or reading the iterator): their connections stay held back
    /// until their first I/O.
    pub owner_walks_failed: u64,
    /// Network namespaces whose TCP sockets were iterated.
    pub netns_visited: u64,
    /// Namespaces with tracked connections that could not be iterated (no task is in them any
    /// more, or entering them or creating the iterator failed): their connections keep the
    /// counters of their latest data-path refresh.
    pub netns_failed: u64,
    /// Tracked TCP sockets whose counters were refreshed.
    pub sockets_refreshed: u64,
    /// The start-up walk ([`Seeder`]): network namespaces whose sockets were walked.
    pub seed_netns_visited: u64,
    /// The start-up walk: namespaces found (a task or a `/run/netns` mount is in them) that
    /// could not be opened, entered or walked: their connections that existed before the start
    /// are tracked only from their first send or receive.
    pub seed_netns_failed: u64,
    /// TCP connections that existed before the start, tracked by the start-up walk.
    pub seeded_tcp: u64,
    /// Connected UDP sockets that existed before the start, tracked by the start-up walk.
    pub seeded_udp: u64,
}

/// The start-up walk (`iter/tcp` and `iter/udp` programs `nt_seed_tcp`, `nt_seed_udp`,
/// tracer-ebpf/src/iter/seed.rs; Linux 5.9+): run once, right after every hook is attached,
/// in every network namespace; tracks the sockets that existed before the tracer started.
pub struct Seeder {
    tcp: OwnedFd,
    /// `None` when the kernel refused the UDP one (then only TCP is walked).
    udp: Option<OwnedFd>,
}

impl Seeder {
    /// Loads `program` as the TCP start-up walk against the kernel's BTF and creates its link.
    pub(crate) fn load_tcp(
        program: &mut aya::programs::Iter,
        btf: &aya::Btf,
        name: &'static str,
    ) -> Result<Self> {
        let tcp = load_iterator(program, btf, name, "tcp")?;
        Ok(Self { tcp, udp: None })
    }

    /// Loads `program` as the UDP start-up walk; the TCP one must be loaded first.
    pub(crate) fn load_udp(
        &mut self,
        program: &mut aya::programs::Iter,
        btf: &aya::Btf,
        name: &'static str,
    ) -> Result<()> {
        self.udp = Some(load_iterator(program, btf, name, "udp")?);
        Ok(())
    }

    /// Walks every network namespace under `proc` (and `/run/netns`): on one helper thread
    /// that enters each in turn (`setns` moves only that thread; the iterators see the
    /// namespace of the thread that creates their file). Fills the `seed_*` fields of the
    /// returned stats.
    pub fn seed(&self, proc: &Path) -> IterStats {
        let (namespaces, unopened) = netns::all(proc);
        let mut stats = IterStats {
            seed_netns_failed: unopened,
            ..IterStats::default()
        };
        let (tcp, udp) = (self.tcp.as_fd(), self.udp.as_ref().map(AsFd::as_fd));
        let handles: Vec<(u32, BorrowedFd<'_>)> = namespaces
            .iter()
            .map(|(inode, file)| (*inode, file.as_fd()))
            .collect();
        let results = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let mut buf = vec![0u8; 64 << 10];
                    handles
                        .iter()
                        .map(|&(inode, ns)| {
                            let walk = netns::enter(ns).and_then(|()| {
                                let tcp = run_iterator(tcp, &mut buf)?;
                                let udp = match udp {
                                    Some(link) => run_iterator(link, &mut buf)?,
                                    None => 0,
                                };
                                Ok((tcp, udp))
                            });
                            if let Err(e) = &walk {
                                tracing::warn!(netns = inode, error = %e, "cannot walk the sockets of a namespace at start");
                            }
                            walk.ok()
                        })
                        .collect::<Vec<_>>()
                })
                .join()
                // The closure does not panic; if it did, every namespace counts as failed.
                .unwrap_or_else(|_| vec![None; handles.len()])
        });
        for result in results {
            match result {
                Some((tcp, udp)) => {
                    stats.seed_netns_visited += 1;
                    stats.seeded_tcp += tcp;
                    stats.seeded_udp += udp;
                }
                None => stats.seed_netns_failed += 1,
            }
        }
        stats
    }
}

/// The attached task-file iterator (see the module documentation).
pub struct OwnerIter {
    /// The `BPF_TRACE_ITER` link; each walk creates an iterator file from it.
    link: OwnedFd,
}

impl OwnerIter {
    /// Loads `program` as the `task_file` iterator against the kernel's BTF and creates its link.
    pub(crate) fn load(
        program: &mut aya::programs::Iter,
        btf: &aya::Btf,
        name: &'static str,
    ) -> Result<Self> {
        let link = load_iterator(program, btf, name, "task_file")?;
        Ok(Self { link })
    }

    /// One walk: names the owners it can. Returns how many connections got one.
    pub fn name_owners(&self) -> io::Result<u64> {
        let mut buf = vec![0u8; 4096];
        run_iterator(self.link.as_fd(), &mut buf)
    }
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
        let link = load_iterator(program, btf, name, "tcp")?;
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
            netns::find(Path::new("/proc"), &missing, &mut cache);
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
            let result = netns::enter(ns).and_then(|()| run_iterator(link, &mut buf));
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

/// Creates an iterator file (in the calling thread's namespaces) and reads it to the end: the
/// program runs while it is read. Returns the bytes read: one per socket the program acted on.
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

/// Loads `program` as the iterator of `target` (`tcp`, `task_file`) against the kernel's BTF and
/// creates its link.
fn load_iterator(
    program: &mut aya::programs::Iter,
    btf: &aya::Btf,
    name: &'static str,
    target: &'static str,
) -> Result<OwnedFd> {
    let fail = |e| crate::kernel::privileges::program_error(name, e);
    program.load(target, btf).map_err(fail)?;
    let prog_fd = program.fd().map_err(fail)?;
    link_create(prog_fd.as_fd()).map_err(|e| Error::io("BPF_LINK_CREATE of an iterator", e))
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
