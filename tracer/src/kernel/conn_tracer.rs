//! Owner of the connection-tracking programs and their maps (`NT_CONNS`, `NT_CLOSED`,
//! `NT_UNTRACKED`, `NT_COUNTERS`): loads and attaches the planned backend, and reads what the
//! programs recorded. Minimum kernel 5.8 (ring buffer).

use std::{
    os::fd::{AsFd, AsRawFd, OwnedFd, RawFd},
    path::{Path, PathBuf},
    sync::{
        Mutex, MutexGuard, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, MapData, PerCpuArray, RingBuf},
    programs::{
        FEntry, FExit, KProbe, Program, ProgramError, TracePoint, UProbe,
        uprobe::{UProbeLinkId, UProbeScope},
    },
};
use tracer_common::{
    conn::{
        ClosedConn, ConnKey, ConnStats, FLAG_CLOSED, FLAG_EXPIRED, MAX_UDP_PEERS, UdpPeerSlot,
        UdpPeerSlotKey,
    },
    names::{
        GLOBAL_CAPTURE_CONFIG, GLOBAL_LAYOUT, MAP_CLOSED, MAP_CONNS, MAP_COUNTERS, MAP_PACKETS,
        MAP_TCP_STATES, MAP_TLS_ARGS, MAP_TLS_CONNS, MAP_TLS_EXEC, MAP_UDP_PEERS, MAP_UDP_SOCKS,
        PROG_TLS_EXEC,
    },
    packet::CaptureConfig as CaptureConfigWire,
};

use super::{
    btf::Btf,
    capabilities::{Capabilities, VMLINUX_BTF},
    counters::KernelCounters,
    iter::{IterStats, OwnerIter, Seeder, TcpIter},
    kretprobe::{KretprobeLink, MAXACTIVE},
    layout, map_reader, object,
    packet::{CaptureConfig, PacketRing},
    plan::{self, BackendChoice, Hook, Plan},
    privileges, skipped_runs, tracefs,
};
use crate::{Error, Result};

/// How the kernel side is sized and attached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelConfig {
    /// Which attach backend to use.
    pub backend: BackendChoice,
    /// Capacity of the open-connection map; connections beyond it are counted as `conn_map_full`.
    pub max_tracked_connections: u32,
    /// Size of the closed-connection ring buffer in bytes: a power-of-two number of pages.
    pub ring_buffer_bytes: u32,
    /// Kernel BTF to read struct offsets from (default `/sys/kernel/btf/vmlinux`).
    pub btf_path: Option<PathBuf>,
    /// The packet capture (DNS, HTTP): on or off, ports, snap length, ring size, HTTP parsing.
    pub capture: CaptureConfig,
    /// TLS objects the uprobes can tie to their sockets at once (`NT_TLS_CONNS`); 0: the TLS
    /// uprobes are not loaded.
    pub tls_max_objects: u32,
    /// Track the connections that existed before the start (the start-up walk, Linux 5.9+;
    /// tracer/src/kernel/iter.rs). Off: they are tracked from their first send or receive only.
    pub track_existing: bool,
}

impl Default for KernelConfig {
    fn default() -> Self {
        Self {
            backend: BackendChoice::Auto,
            max_tracked_connections: 65_536,
            ring_buffer_bytes: 1 << 20,
            btf_path: None,
            capture: CaptureConfig::default(),
            tls_max_objects: 0,
            track_existing: true,
        }
    }
}

/// Largest accepted `max_tracked_connections` (each entry costs about 200 bytes of kernel memory).
pub const MAX_TRACKED_CONNECTIONS_LIMIT: u32 = 1 << 24;
/// Largest accepted ring buffer (1 GiB).
pub const MAX_RING_BUFFER_BYTES: u32 = 1 << 30;

impl KernelConfig {
    /// Rejects sizes the kernel would refuse or that make no sense.
    pub fn validate(&self) -> Result<()> {
        if self.max_tracked_connections == 0
            || self.max_tracked_connections > MAX_TRACKED_CONNECTIONS_LIMIT
        {
            return Err(Error::InvalidConfig(format!(
                "max_tracked_connections must be in 1..={MAX_TRACKED_CONNECTIONS_LIMIT}, got {}",
                self.max_tracked_connections
            )));
        }
        validate_ring_bytes("ring_buffer_bytes", self.ring_buffer_bytes)?;
        self.capture.validate()
    }
}

/// Checks a ring buffer size: a power-of-two number of pages, at most [`MAX_RING_BUFFER_BYTES`].
pub(crate) fn validate_ring_bytes(what: &str, bytes: u32) -> Result<()> {
    let page = page_size();
    if bytes == 0
        || bytes > MAX_RING_BUFFER_BYTES
        || !bytes.is_multiple_of(page)
        || !(bytes / page).is_power_of_two()
    {
        return Err(Error::InvalidConfig(format!(
            "{what} must be a power-of-two number of {page}-byte pages (at most {MAX_RING_BUFFER_BYTES}), got {bytes}"
        )));
    }
    Ok(())
}

/// Whether the unconnected UDP flow `key` belongs to a socket that no longer exists: its
/// generation is not its socket's in `gens` (read after the flow). Connected sockets, TCP, and
/// flows without a generation (`NT_UDP_SOCKS` was full) never are: the kernel or expiry ends
/// them.
pub fn flow_socket_gone(key: &ConnKey, gens: &std::collections::HashMap<u64, u32>) -> bool {
    key.peer_family != 0 && key.socket_gen != 0 && gens.get(&key.sk) != Some(&key.socket_gen)
}

/// Whether a map operation failed only because the key is not there: aya reports a missing
/// key as `KeyNotFound` on lookups but as the syscall's ENOENT on deletes.
fn not_found(e: &aya::maps::MapError) -> bool {
    match e {
        aya::maps::MapError::KeyNotFound => true,
        aya::maps::MapError::SyscallError(e) => e.io_error.raw_os_error() == Some(libc::ENOENT),
        _ => false,
    }
}

fn page_size() -> u32 {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u32::try_from(size).unwrap_or(4096)
}

/// The loaded and attached connection tracker. Dropping it detaches every program and frees
/// every map.
pub struct ConnTracer {
    /// Owns the programs and their links: dropping it detaches everything. Behind a mutex so
    /// that the tracer is `Sync`; read only for the programs' skip counts.
    ebpf: Mutex<Ebpf>,
    closed: Mutex<RingBuf<MapData>>,
    conns: Mutex<HashMap<MapData, ConnKey, ConnStats>>,
    /// A second descriptor of `NT_CONNS` for batched lookups (aya has no batch API).
    conns_fd: OwnedFd,
    /// Peer lists of unconnected UDP sockets (`NT_UDP_PEERS`): an expired peer flow frees its
    /// slot, so a long-lived socket (a DNS server) keeps listing new peers.
    udp_peers: Mutex<HashMap<MapData, UdpPeerSlotKey, UdpPeerSlot>>,
    /// Generations of unconnected UDP sockets (`NT_UDP_SOCKS`): a peer flow whose generation is
    /// gone belongs to a closed socket.
    udp_socks: Mutex<HashMap<MapData, u64, u32>>,
    counters: PerCpuArray<MapData, u64>,
    /// The kprobe backend's kretprobes (created with a large `maxactive`, see `kretprobe`).
    _kretprobes: Vec<KretprobeLink>,
    plan: Plan,
    /// Ring records of the wrong size (cannot happen with a matching object), skipped.
    closed_records_malformed: AtomicU64,
    /// The read-time refresh of TCP counters (`iter/tcp`), where planned and loaded.
    tcp_iter: Option<TcpIter>,
    /// The read-time owner walk (`iter/task_file`), where planned and loaded.
    owner_iter: Option<OwnerIter>,
    /// Totals of every read-time refresh so far.
    iter_stats: Mutex<IterStats>,
    /// The packet capture's ring, when the capture is planned.
    packets: Option<PacketRing>,
    /// The TLS registry's exec watch (`NT_TLS_EXEC`), when the TLS programs run.
    tls_exec: Option<ExecRing>,
}

/// The ring of processes that called `execve` (the TLS registry's exec watch).
struct ExecRing {
    ring: Mutex<RingBuf<MapData>>,
    fd: RawFd,
}

impl ConnTracer {
    /// Validates `config`, checks privileges, probes the kernel, picks the backend, resolves the
    /// running kernel's layout, then loads and attaches the planned programs.
    pub fn load(config: &KernelConfig) -> Result<Self> {
        config.validate()?;
        privileges::require_bpf_privileges()?;
        let tracefs = tracefs::ensure_mounted()?;
        let btf_path = config
            .btf_path
            .clone()
            .unwrap_or_else(|| PathBuf::from(VMLINUX_BTF));
        let btf = read_btf(&btf_path)?;
        let caps = Capabilities::probe(&tracefs, Some(&btf));
        let mut plan = plan::plan(config.backend, &caps)?;
        plan::add_capture(
            &mut plan,
            config.capture.enabled,
            config.capture.http,
            &caps,
        );
        let capture = plan.probes.iter().any(|p| p.hook == Hook::CgroupSkbIngress);
        plan::add_tls(
            &mut plan,
            config.tls_max_objects > 0,
            config.capture.http,
            &caps,
        );
        let tls = plan.probes.iter().any(|p| p.hook == Hook::Uprobe);
        tracing::info!(backend = %plan.backend, reason = %plan.reason, "attach backend chosen");
        let layout = layout::resolve(&btf, &btf_path, &tracefs)?;

        let started = std::time::Instant::now();
        let mut ebpf = EbpfLoader::new()
            .override_global(GLOBAL_LAYOUT, &layout, true)
            .map_max_entries(MAP_CONNS, config.max_tracked_connections)
            .map_max_entries(MAP_CLOSED, config.ring_buffer_bytes)
            // One peer-list slot per listed UDP peer flow, each an entry of NT_CONNS.
            .map_max_entries(MAP_UDP_PEERS, config.max_tracked_connections)
            // At most one generation per socket with peer flows, each flow an entry of NT_CONNS.
            .map_max_entries(MAP_UDP_SOCKS, config.max_tracked_connections)
            // The issue-2 state-transition probe's map is unused here: keep it tiny.
            .map_max_entries(MAP_TCP_STATES, 1)
            // Without the TLS uprobes, nothing writes these.
            .map_max_entries(MAP_TLS_CONNS, if tls { config.tls_max_objects } else { 1 })
            .map_max_entries(MAP_TLS_ARGS, if tls { config.tls_max_objects } else { 1 })
            // The exec watch's ring: 16-byte records, a burst of execs between two wake-ups
            // of the registry's thread (a full ring drops events; the periodic scan remains).
            .map_max_entries(
                MAP_TLS_EXEC,
                if tls { 16 * page_size() } else { page_size() },
            )
            // Without the capture, its ring is one page that nothing writes.
            .map_max_entries(
                MAP_PACKETS,
                if capture {
                    config.capture.ring_bytes
                } else {
                    page_size()
                },
            )
            .override_global(
                GLOBAL_CAPTURE_CONFIG,
                &if capture {
                    config.capture.to_kernel()
                } else {
                    CaptureConfigWire::DISABLED
                },
                true,
            )
            .load(object::bytes()?)
            .map_err(crate::kernel::privileges::load_error)?;
        tracing::debug!(elapsed = ?started.elapsed(), "object loaded (maps created)");
        let mut attached = Attached {
            kernel_btf: None,
            tracefs: tracefs.clone(),
            kretprobes: Vec::new(),
            tcp_iter: None,
            tcp_iter_refused: None,
            owner_iter: None,
            owner_iter_refused: None,
            seeder: None,
            seed_refused: None,
            udp_seed_refused: None,
        };
        for probe in &plan.probes {
            // The time of each program (mostly the kernel's verifier) says which program makes
            // a start slow.
            let started = std::time::Instant::now();
            attach(&mut ebpf, probe.program, probe.hook, &mut attached)?;
            tracing::debug!(program = probe.program, elapsed = ?started.elapsed(), "loaded and attached");
        }
        if let Some(why) = attached.tcp_iter_refused.take() {
            // Optional: run without it, and say so where the plan says what it runs without.
            plan.probes.retain(|p| p.hook != Hook::IterTcp);
            plan.reason
                .push_str(&format!("; {}", plan::without_tcp_iterator(&why)));
        }
        if let Some(why) = attached.owner_iter_refused.take() {
            plan.probes.retain(|p| p.hook != Hook::IterTaskFile);
            plan.reason
                .push_str(&format!("; {}", plan::without_task_file_iterator(&why)));
        }
        if let Some(why) = attached.seed_refused.take() {
            plan.probes
                .retain(|p| !matches!(p.hook, Hook::IterTcpSeed | Hook::IterUdpSeed));
            plan.reason
                .push_str(&format!("; {}", plan::without_seed(&why)));
        }
        if let Some(why) = attached.udp_seed_refused.take() {
            plan.probes.retain(|p| p.hook != Hook::IterUdpSeed);
            plan.reason
                .push_str(&format!("; without iter/udp ({why}): connected UDP sockets that existed before the start are tracked from their first send or receive"));
        }
        let closed = take_map(&mut ebpf, MAP_CLOSED)
            .and_then(|map| RingBuf::try_from(map).map_err(|e| map_error(MAP_CLOSED, e)))?;
        let conns_map = take_map(&mut ebpf, MAP_CONNS)?;
        let conns_fd = match &conns_map {
            aya::maps::Map::HashMap(data) => data
                .fd()
                .as_fd()
                .try_clone_to_owned()
                .map_err(|e| Error::io("duplicating the NT_CONNS descriptor", e))?,
            _ => {
                return Err(Error::MissingObject {
                    kind: "hash map",
                    name: MAP_CONNS,
                });
            }
        };
        let conns = HashMap::try_from(conns_map).map_err(|e| map_error(MAP_CONNS, e))?;
        let udp_peers = take_map(&mut ebpf, MAP_UDP_PEERS)
            .and_then(|map| HashMap::try_from(map).map_err(|e| map_error(MAP_UDP_PEERS, e)))?;
        let udp_socks = take_map(&mut ebpf, MAP_UDP_SOCKS)
            .and_then(|map| HashMap::try_from(map).map_err(|e| map_error(MAP_UDP_SOCKS, e)))?;
        let packets = if capture {
            let ring = take_map(&mut ebpf, MAP_PACKETS)
                .and_then(|map| RingBuf::try_from(map).map_err(|e| map_error(MAP_PACKETS, e)))?;
            Some(PacketRing::new(ring))
        } else {
            None
        };
        let tls_exec = if plan.probes.iter().any(|p| p.program == PROG_TLS_EXEC) {
            let ring = take_map(&mut ebpf, MAP_TLS_EXEC)
                .and_then(|map| RingBuf::try_from(map).map_err(|e| map_error(MAP_TLS_EXEC, e)))?;
            Some(ExecRing {
                fd: ring.as_raw_fd(),
                ring: Mutex::new(ring),
            })
        } else {
            None
        };
        let counters = take_map(&mut ebpf, MAP_COUNTERS)
            .and_then(|map| PerCpuArray::try_from(map).map_err(|e| map_error(MAP_COUNTERS, e)))?;
        let tracer = Self {
            ebpf: Mutex::new(ebpf),
            closed: Mutex::new(closed),
            conns: Mutex::new(conns),
            conns_fd,
            udp_peers: Mutex::new(udp_peers),
            udp_socks: Mutex::new(udp_socks),
            counters,
            _kretprobes: attached.kretprobes,
            plan,
            closed_records_malformed: AtomicU64::new(0),
            tcp_iter: attached.tcp_iter,
            owner_iter: attached.owner_iter,
            iter_stats: Mutex::new(IterStats::default()),
            packets,
            tls_exec,
        };
        if let Some(seeder) = attached.seeder.filter(|_| config.track_existing) {
            tracer.seed(&seeder);
        }
        Ok(tracer)
    }

    /// The start-up walk: tracks every socket that existed before the start, then names the
    /// owners of what it found (`iter/task_file`).
    ///
    /// It runs after every hook is attached, so no connection falls between the walk and the
    /// hooks: one opened (or one that existed and moved data) while the walk runs is tracked by
    /// the hooks, and the walk, which only creates entries that do not exist
    /// (`conn::seed`, with the map's BPF_NOEXIST), leaves it alone; a socket the hooks see only
    /// after the walk created its entry finds it. Each socket has one entry either way.
    fn seed(&self, seeder: &Seeder) {
        let stats = seeder.seed(Path::new("/proc"));
        tracing::info!(
            tcp = stats.seeded_tcp,
            udp = stats.seeded_udp,
            namespaces = stats.seed_netns_visited,
            namespaces_failed = stats.seed_netns_failed,
            "connections that existed before the start"
        );
        {
            let mut totals = lock(&self.iter_stats);
            totals.seed_netns_visited += stats.seed_netns_visited;
            totals.seed_netns_failed += stats.seed_netns_failed;
            totals.seeded_tcp += stats.seeded_tcp;
            totals.seeded_udp += stats.seeded_udp;
        }
        if stats.seeded_tcp + stats.seeded_udp > 0 {
            self.run_owner_walk();
        }
    }

    /// The backend in use and why it was chosen.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Attaches the loaded TLS program `program` at `symbol` of the ELF file `target` (for every
    /// process that maps it). The error is aya's, for the caller to classify.
    pub fn attach_uprobe(
        &self,
        program: &str,
        target: &Path,
        symbol: &str,
    ) -> std::result::Result<UProbeLinkId, ProgramError> {
        let mut ebpf = lock(&self.ebpf);
        load_tls_programs(&mut ebpf, &self.plan)?;
        let prog: &mut UProbe = ebpf
            .program_mut(program)
            .ok_or(ProgramError::NotLoaded)?
            .try_into()?;
        prog.attach(symbol, target, UProbeScope::AllProcesses)
    }

    /// Loads the planned TLS programs now, if they are not loaded yet (the first attach does
    /// it anyway). For tools and tests that inspect the loaded programs.
    pub fn load_tls_programs(&self) -> std::result::Result<(), ProgramError> {
        load_tls_programs(&mut lock(&self.ebpf), &self.plan)
    }

    /// Detaches a link [`Self::attach_uprobe`] made.
    pub fn detach_uprobe(
        &self,
        program: &str,
        link: UProbeLinkId,
    ) -> std::result::Result<(), ProgramError> {
        let mut ebpf = lock(&self.ebpf);
        let prog: &mut UProbe = ebpf
            .program_mut(program)
            .ok_or(ProgramError::NotLoaded)?
            .try_into()?;
        prog.detach(link)
    }

    /// Whether the TLS uprobes are planned. They are loaded when the file registry first
    /// attaches one ([`Self::attach_uprobe`]), not at start.
    pub fn tls_planned(&self) -> bool {
        self.plan.probes.iter().any(|p| p.hook == Hook::Uprobe)
    }

    /// The descriptor of the exec watch's ring (readable when a process started), when the TLS
    /// programs run.
    pub fn tls_exec_fd(&self) -> Option<RawFd> {
        self.tls_exec.as_ref().map(|r| r.fd)
    }

    /// Drains the exec watch's ring into `out` (the ids of processes that started).
    pub fn drain_tls_exec(&self, out: &mut Vec<u32>) {
        let Some(exec) = &self.tls_exec else {
            return;
        };
        let mut ring = lock(&exec.ring);
        while let Some(item) = ring.next() {
            if let Ok(bytes) = <[u8; 4]>::try_from(&item[..]) {
                out.push(u32::from_ne_bytes(bytes));
            }
        }
    }

    /// The packet capture's ring, when the capture runs.
    pub fn packets(&self) -> Option<&PacketRing> {
        self.packets.as_ref()
    }

    /// Drains every closed-connection event currently in the ring buffer into `out`; returns
    /// how many were added. Safe to call from any thread (the ring has its own lock).
    pub fn drain_closed(&self, out: &mut Vec<ClosedConn>) -> usize {
        let mut ring = lock(&self.closed);
        let mut n = 0;
        while let Some(item) = ring.next() {
            match crate::decode::closed_record(&item) {
                Some(event) => {
                    out.push(event);
                    n += 1;
                }
                None => {
                    self.closed_records_malformed
                        .fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        n
    }

    /// The ring buffer's descriptor, to wait for closed connections with epoll/poll.
    pub fn closed_fd(&self) -> RawFd {
        lock(&self.closed).as_raw_fd()
    }

    /// Every open connection in the kernel map, each key once (see [`map_reader`]).
    pub fn connections(&self) -> Result<Vec<(ConnKey, ConnStats)>> {
        let mut out = Vec::new();
        self.read_connections(&mut out)?;
        Ok(out)
    }

    /// Like [`ConnTracer::connections`], into a reused buffer; returns how the map was read.
    ///
    /// Before the read that is returned, one read of the map (into `out`, overwritten) says
    /// what the read-time iterators have to do: the namespaces whose TCP counters to refresh
    /// (`iter/tcp`), and whether an accepted connection waits for its owner (`iter/task_file`).
    /// When neither has anything to do (no TCP connection: UDP flows only), nothing was written
    /// since that read, and it is returned (a second read would double the call's map time).
    pub fn read_connections(
        &self,
        out: &mut Vec<(ConnKey, ConnStats)>,
    ) -> Result<map_reader::ReadStats> {
        if self.tcp_iter.is_some() || self.owner_iter.is_some() {
            let first = {
                let conns = lock(&self.conns);
                map_reader::read_all(&conns, self.conns_fd.as_fd(), out)
                    .map_err(|e| map_error(MAP_CONNS, e))?
            };
            let walked = self.name_owners(out);
            let refreshed = self.refresh_tcp_counters(out);
            if !walked && !refreshed {
                return Ok(first);
            }
        }
        let conns = lock(&self.conns);
        map_reader::read_all(&conns, self.conns_fd.as_fd(), out)
            .map_err(|e| map_error(MAP_CONNS, e))
    }

    /// Runs the owner walk when `entries` (a read of the map) hold a TCP connection without an
    /// owner: one accepted in softirq that did no I/O yet. Returns whether it ran.
    fn name_owners(&self, entries: &[(ConnKey, ConnStats)]) -> bool {
        if self.owner_iter.is_none() {
            return false;
        }
        // An accepted TCP connection without an owner. Not one the start-up walk found: the
        // walk right after it named every owner it could, and what it could not (a kernel
        // socket, no task holds it) would make every read walk again for nothing; those are
        // named by their first send or receive.
        let waiting = entries.iter().any(|(_, stats)| {
            stats.tuple.protocol == tracer_common::conn::IPPROTO_TCP
                && stats.tuple.pid == 0
                && stats.flags & tracer_common::conn::FLAG_PREEXISTING == 0
        });
        if !waiting {
            return false;
        }
        self.run_owner_walk();
        true
    }

    /// One owner walk (`iter/task_file`), counted in the iterator stats.
    fn run_owner_walk(&self) {
        let Some(owner_iter) = &self.owner_iter else {
            return;
        };
        let result = owner_iter.name_owners();
        let mut totals = lock(&self.iter_stats);
        totals.owner_walks += 1;
        match result {
            Ok(named) => totals.owners_named += named,
            Err(e) => {
                totals.owner_walks_failed += 1;
                tracing::debug!(error = %e, "the owner walk (iter/task_file) failed");
            }
        }
    }

    /// Refreshes the copied TCP counters of every tracked connection from the kernel (the
    /// `iter/tcp` program in each network namespace that has tracked connections in `entries`,
    /// a read of the map), so that the next read of the map reports them as of now. Returns
    /// whether there was any (a namespace to refresh).
    fn refresh_tcp_counters(&self, entries: &[(ConnKey, ConnStats)]) -> bool {
        let Some(tcp_iter) = &self.tcp_iter else {
            return false;
        };
        let netns: std::collections::HashSet<u32> = entries
            .iter()
            .filter(|(_, stats)| stats.tuple.protocol == tracer_common::conn::IPPROTO_TCP)
            .map(|(_, stats)| stats.tuple.netns)
            .collect();
        // Called with no namespace too: that closes the namespaces it kept open.
        let stats = tcp_iter.refresh(&netns);
        let mut totals = lock(&self.iter_stats);
        totals.netns_visited += stats.netns_visited;
        totals.netns_failed += stats.netns_failed;
        totals.sockets_refreshed += stats.sockets_refreshed;
        !netns.is_empty()
    }

    /// Totals of every read-time TCP refresh so far (see [`ConnTracer::refresh_tcp_counters`]).
    pub fn iter_stats(&self) -> IterStats {
        *lock(&self.iter_stats)
    }

    /// Removes entries (expired connections) from the kernel map. A key already gone (closed by
    /// the kernel meanwhile) is not an error: its close event is on the ring buffer.
    pub fn remove_connections(&self, keys: &[ConnKey]) -> Result<usize> {
        let mut conns = lock(&self.conns);
        let mut removed = 0;
        for key in keys {
            match conns.remove(key) {
                Ok(()) => removed += 1,
                Err(e) if not_found(&e) => {}
                Err(e) => return Err(map_error(MAP_CONNS, e)),
            }
            if key.peer_family != 0 {
                self.free_udp_peer_slot(key)?;
            }
        }
        Ok(removed)
    }

    /// The generation of every unconnected UDP socket that has peer flows, into `out`. Read it
    /// after the connection map: a flow read before it whose generation is absent here belongs
    /// to a socket that closed in between ([`flow_socket_gone`]).
    pub fn udp_socket_gens(&self, out: &mut std::collections::HashMap<u64, u32>) -> Result<()> {
        out.clear();
        let socks = lock(&self.udp_socks);
        for item in socks.iter() {
            match item {
                Ok((sk, generation)) => {
                    out.insert(sk, generation);
                }
                // Deleted by the kernel between two steps of the walk: that socket closed.
                Err(e) if not_found(&e) => {}
                Err(e) => return Err(map_error(MAP_UDP_SOCKS, e)),
            }
        }
        Ok(())
    }

    /// Ends open connections from userspace: removes each entry of `ended` from the kernel map
    /// and keeps in `ended` only those this call removed (an entry the kernel closed meanwhile
    /// is on the ring buffer instead: whoever removes an entry reports its end, see
    /// `conn::close` in the eBPF crate). The kept records are marked closed with `flag`
    /// (`FLAG_EXPIRED` or `FLAG_CLOSED_BY_SWEEP`). An expired peer flow also frees its slot in
    /// its socket's peer list, so a long-lived socket keeps listing new peers.
    pub fn end_connections(&self, ended: &mut Vec<ClosedConn>, flag: u8) -> Result<()> {
        let mut failure = None;
        {
            let mut conns = lock(&self.conns);
            ended.retain_mut(|conn| {
                if failure.is_some() {
                    return false;
                }
                match conns.remove(&conn.key) {
                    Ok(()) => {
                        conn.stats.flags |= FLAG_CLOSED | flag;
                        true
                    }
                    Err(e) if not_found(&e) => false,
                    Err(e) => {
                        failure = Some(map_error(MAP_CONNS, e));
                        false
                    }
                }
            });
        }
        if let Some(e) = failure {
            return Err(e);
        }
        if flag == FLAG_EXPIRED {
            for conn in ended.iter().filter(|c| c.key.peer_family != 0) {
                self.free_udp_peer_slot(&conn.key)?;
            }
        }
        Ok(())
    }

    /// Frees the peer-list slot that names the (expired) unconnected UDP flow `key`.
    fn free_udp_peer_slot(&self, key: &ConnKey) -> Result<()> {
        let mut peers = lock(&self.udp_peers);
        let wanted = UdpPeerSlot {
            addr: key.peer_addr,
            port: key.peer_port,
            family: key.peer_family,
        };
        for slot in 0..MAX_UDP_PEERS {
            let slot_key = UdpPeerSlotKey {
                sk: key.sk,
                slot,
                _pad: 0,
            };
            match peers.get(&slot_key, 0) {
                Ok(peer) if peer == wanted => {
                    return match peers.remove(&slot_key) {
                        Ok(()) => Ok(()),
                        Err(e) if not_found(&e) => Ok(()),
                        Err(e) => Err(map_error(MAP_UDP_PEERS, e)),
                    };
                }
                Ok(_) => {}
                Err(e) if not_found(&e) => {}
                Err(e) => return Err(map_error(MAP_UDP_PEERS, e)),
            }
        }
        Ok(())
    }

    /// The kernel-side counters, summed over CPUs.
    pub fn counters(&self) -> Result<KernelCounters> {
        let counters = KernelCounters::read(&self.counters)?;
        Ok(counters.with_program_counts(
            self.program_runs_skipped(),
            self.closed_records_malformed.load(Ordering::Relaxed),
        ))
    }

    /// `recursion_misses` summed over every loaded program, `None` where the kernel does not
    /// count them (before 5.12) or a program's info cannot be read (logged).
    fn program_runs_skipped(&self) -> Option<u64> {
        let ebpf = lock(&self.ebpf);
        let mut total = 0u64;
        for (name, program) in ebpf.programs() {
            let Ok(fd) = program.fd() else {
                continue; // not loaded: not planned on this backend
            };
            match skipped_runs::recursion_misses(fd.as_fd()) {
                Ok(Some(misses)) => total = total.saturating_add(misses),
                Ok(None) => return None,
                Err(e) => {
                    tracing::warn!(program = name, error = %e, "cannot read program info");
                    return None;
                }
            }
        }
        Some(total)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these locks cannot leave the maps inconsistent (they live in the
    // kernel), so a poisoned lock is still usable.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn take_map(ebpf: &mut Ebpf, name: &'static str) -> Result<aya::maps::Map> {
    ebpf.take_map(name)
        .ok_or(Error::MissingObject { kind: "map", name })
}

fn read_btf(path: &Path) -> Result<Btf> {
    if !path.exists() {
        return Err(Error::NotSupported {
            feature: "kernel BTF (/sys/kernel/btf/vmlinux, CONFIG_DEBUG_INFO_BTF)",
            min_kernel: "5.4",
            running: super::KernelVersion::current_release(),
        });
    }
    Btf::from_file(path).map_err(|e| Error::Btf {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

/// What attaching needs beyond the object, and the links it creates outside of aya.
struct Attached {
    /// The running kernel's BTF as aya parses it (fentry/fexit programs are verified against
    /// their target's type): parsed once, only when planned.
    kernel_btf: Option<aya::Btf>,
    tracefs: PathBuf,
    kretprobes: Vec<KretprobeLink>,
    /// The TCP iterator, when it loaded.
    tcp_iter: Option<TcpIter>,
    /// Why the (optional) TCP iterator did not load.
    tcp_iter_refused: Option<String>,
    /// The task-file iterator, when it loaded.
    owner_iter: Option<OwnerIter>,
    /// Why the (optional) task-file iterator did not load.
    owner_iter_refused: Option<String>,
    /// The start-up walk, when it loaded (run once, then dropped).
    seeder: Option<Seeder>,
    /// Why the (optional) start-up walk did not load.
    seed_refused: Option<String>,
    /// Why its UDP half did not load (the TCP half did).
    udp_seed_refused: Option<String>,
}

/// Loads (the verifier's walk) each planned TLS program that is not loaded yet. A refusal is
/// the caller's attach failure; the next attach tries again.
fn load_tls_programs(ebpf: &mut Ebpf, plan: &Plan) -> std::result::Result<(), ProgramError> {
    for probe in plan
        .probes
        .iter()
        .filter(|p| matches!(p.hook, Hook::Uprobe | Hook::Uretprobe))
    {
        let prog: &mut UProbe = ebpf
            .program_mut(probe.program)
            .ok_or(ProgramError::NotLoaded)?
            .try_into()?;
        if prog.fd().is_err() {
            let started = std::time::Instant::now();
            prog.load()?;
            tracing::debug!(program = probe.program, elapsed = ?started.elapsed(), "TLS program loaded");
        }
    }
    Ok(())
}

fn attach(
    ebpf: &mut Ebpf,
    program: &'static str,
    hook: Hook,
    attached: &mut Attached,
) -> Result<()> {
    let prog = ebpf.program_mut(program).ok_or(Error::MissingObject {
        kind: "program",
        name: program,
    })?;
    let fail = |e| crate::kernel::privileges::program_error(program, e);
    match (hook, prog) {
        (Hook::Tracepoint { category, name }, Program::TracePoint(tp)) => {
            let tp: &mut TracePoint = tp;
            tp.load().map_err(fail)?;
            tp.attach(category, name).map_err(fail)?;
        }
        // The same tracepoint, attached raw (arguments in registers, no formatted record):
        // the object decides, by the program's type.
        (Hook::Tracepoint { name, .. }, Program::RawTracePoint(rtp)) => {
            rtp.load().map_err(fail)?;
            rtp.attach(name).map_err(fail)?;
        }
        (Hook::Fentry { function }, Program::FEntry(prog)) => {
            let prog: &mut FEntry = prog;
            prog.load(function, aya_btf(&mut attached.kernel_btf)?)
                .map_err(fail)?;
            prog.attach().map_err(fail)?;
        }
        (Hook::Fexit { function }, Program::FExit(prog)) => {
            let prog: &mut FExit = prog;
            prog.load(function, aya_btf(&mut attached.kernel_btf)?)
                .map_err(fail)?;
            prog.attach().map_err(fail)?;
        }
        (Hook::Kprobe { function }, Program::KProbe(prog))
            if matches!(prog.kind(), aya::programs::ProbeKind::Entry) =>
        {
            let prog: &mut KProbe = prog;
            prog.load().map_err(fail)?;
            prog.attach(function, 0).map_err(fail)?;
        }
        (Hook::Kretprobe { function }, Program::KProbe(prog))
            if matches!(prog.kind(), aya::programs::ProbeKind::Return) =>
        {
            let prog: &mut KProbe = prog;
            prog.load().map_err(fail)?;
            let fd = prog.fd().map_err(fail)?.as_fd();
            let link = KretprobeLink::attach(&attached.tracefs, fd, function, MAXACTIVE)?;
            attached.kretprobes.push(link);
        }
        (Hook::CgroupSockRelease, Program::CgroupSock(prog)) => {
            // The root of the cgroup v2 hierarchy: the program runs for the sockets of every
            // cgroup below it, i.e. of every process. On 5.7+ (this hook needs 5.9) aya attaches
            // with a bpf_link: the kernel refuses attach flags there (EINVAL), a link never
            // displaces other programs of the cgroup, and dropping the tracer detaches it.
            let cgroup = open_cgroup2_root("a cgroup v2 mount (for cgroup/sock_release)", "5.9")?;
            let prog: &mut aya::programs::CgroupSock = prog;
            prog.load().map_err(fail)?;
            prog.attach(cgroup, aya::programs::CgroupAttachMode::Single)
                .map_err(fail)?;
        }
        (Hook::CgroupSockAddr(attach), Program::CgroupSockAddr(prog)) => {
            // Like sock_release: a bpf_link on the cgroup v2 root (aya uses link_create from
            // 5.7 on), so a tracer that dies leaves nothing attached. The attach type is the
            // object's (its section name), which the probe table names.
            let cgroup = open_cgroup2_root(
                "a cgroup v2 mount (for the cgroup sendmsg/recvmsg programs)",
                "4.18",
            )?;
            tracing::debug!(program, hook = attach.section(), "attaching");
            let prog: &mut aya::programs::CgroupSockAddr = prog;
            prog.load().map_err(fail)?;
            prog.attach(cgroup, aya::programs::CgroupAttachMode::Single)
                .map_err(fail)?;
        }
        (Hook::CgroupSockOps, Program::SockOps(prog)) => {
            // Like sock_release: a bpf_link on the cgroup v2 root, for every process's sockets.
            let cgroup = open_cgroup2_root("a cgroup v2 mount (for cgroup/sock_ops)", "5.10")?;
            let prog: &mut aya::programs::SockOps = prog;
            prog.load().map_err(fail)?;
            prog.attach(cgroup, aya::programs::CgroupAttachMode::Single)
                .map_err(fail)?;
        }
        (hook @ (Hook::CgroupSkbIngress | Hook::CgroupSkbEgress), Program::CgroupSkb(prog)) => {
            // Like sock_release: a bpf_link on the cgroup v2 root, so the program sees the
            // packets of every socket of every process, whatever its network namespace.
            let cgroup = open_cgroup2_root("a cgroup v2 mount (for cgroup_skb)", "5.8")?;
            let attach_type = if hook == Hook::CgroupSkbIngress {
                aya::programs::CgroupSkbAttachType::Ingress
            } else {
                aya::programs::CgroupSkbAttachType::Egress
            };
            let prog: &mut aya::programs::CgroupSkb = prog;
            prog.load().map_err(fail)?;
            prog.attach(cgroup, attach_type, aya::programs::CgroupAttachMode::Single)
                .map_err(fail)?;
        }
        // Neither loaded nor attached here: the file registry loads them when it first finds a
        // TLS library file to hook, and attaches them per file ([`ConnTracer::attach_uprobe`]).
        // Their verification is the longest of the object's (about 5 s of a 20 s start in an
        // emulated 6.1 VM), wasted on hosts where no process maps a TLS library.
        (Hook::Uprobe | Hook::Uretprobe, Program::UProbe(_)) => {}
        (Hook::IterTcp, Program::Iter(prog)) => {
            // Optional: a refusal is recorded (the plan's reason names it), not fatal.
            match aya_btf(&mut attached.kernel_btf)
                .and_then(|btf| TcpIter::load(prog, btf, program))
            {
                Ok(tcp_iter) => attached.tcp_iter = Some(tcp_iter),
                Err(e) => {
                    tracing::warn!(program, error = %e, "TCP iterator refused: running without it");
                    attached.tcp_iter_refused = Some(e.to_string());
                }
            }
        }
        (Hook::IterTaskFile, Program::Iter(prog)) => {
            // Optional, like the TCP iterator.
            match aya_btf(&mut attached.kernel_btf)
                .and_then(|btf| OwnerIter::load(prog, btf, program))
            {
                Ok(owner_iter) => attached.owner_iter = Some(owner_iter),
                Err(e) => {
                    tracing::warn!(program, error = %e, "task-file iterator refused: running without it");
                    attached.owner_iter_refused = Some(e.to_string());
                }
            }
        }
        (Hook::IterTcpSeed, Program::Iter(prog)) => {
            // Optional, like the other iterators.
            match aya_btf(&mut attached.kernel_btf)
                .and_then(|btf| Seeder::load_tcp(prog, btf, program))
            {
                Ok(seeder) => attached.seeder = Some(seeder),
                Err(e) => {
                    tracing::warn!(program, error = %e, "start-up walk refused: running without it");
                    attached.seed_refused = Some(e.to_string());
                }
            }
        }
        (Hook::IterUdpSeed, Program::Iter(prog)) => {
            // After the TCP one (the probe table's order); without it, nothing to add to.
            let Some(seeder) = attached.seeder.as_mut() else {
                return Ok(());
            };
            let btf = aya_btf(&mut attached.kernel_btf)?;
            if let Err(e) = seeder.load_udp(prog, btf, program) {
                tracing::warn!(program, error = %e, "UDP start-up walk refused: walking TCP only");
                attached.udp_seed_refused = Some(e.to_string());
            }
        }
        (hook, _) => {
            return Err(Error::InvalidConfig(format!(
                "program {program} cannot attach to {hook:?} (object and probe table disagree)"
            )));
        }
    }
    Ok(())
}

/// The root of the cgroup v2 hierarchy, for a cgroup program that needs `feature` (a cgroup v2
/// mount, named with the hook) from kernel `min` on: this mount namespace's cgroup2 mount, else
/// pid 1's, else a private mount (see [`super::capabilities::find_cgroup2_root`]).
fn open_cgroup2_root(feature: &'static str, min: &'static str) -> Result<std::fs::File> {
    let root = super::capabilities::find_cgroup2_root().ok_or(Error::NotSupported {
        feature,
        min_kernel: min,
        running: super::KernelVersion::current_release(),
    })?;
    tracing::debug!(%root, "attaching a cgroup program");
    root.open()
        .map_err(|e| Error::io(format!("opening the {root}"), e))
}

/// The running kernel's BTF as aya parses it, read on first use.
fn aya_btf(cache: &mut Option<aya::Btf>) -> Result<&aya::Btf> {
    let btf = match cache.take() {
        Some(btf) => btf,
        None => aya::Btf::from_sys_fs().map_err(|e| Error::Btf {
            path: PathBuf::from(VMLINUX_BTF),
            reason: e.to_string(),
        })?,
    };
    Ok(cache.insert(btf))
}

fn map_error(map: &'static str, e: aya::maps::MapError) -> Error {
    Error::Map {
        map,
        source: Box::new(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_valid() {
        KernelConfig::default().validate().unwrap();
    }

    #[test]
    fn zero_and_absurd_sizes_are_rejected() {
        for config in [
            KernelConfig {
                max_tracked_connections: 0,
                ..KernelConfig::default()
            },
            KernelConfig {
                max_tracked_connections: u32::MAX,
                ..KernelConfig::default()
            },
            KernelConfig {
                ring_buffer_bytes: 0,
                ..KernelConfig::default()
            },
            KernelConfig {
                ring_buffer_bytes: 3 * 4096,
                ..KernelConfig::default()
            },
            KernelConfig {
                ring_buffer_bytes: 4096 + 1,
                ..KernelConfig::default()
            },
        ] {
            assert!(
                matches!(config.validate(), Err(Error::InvalidConfig(_))),
                "{config:?}"
            );
        }
    }

    #[test]
    fn a_flow_is_gone_exactly_when_its_socket_generation_is_not_the_sockets() {
        let flow = |sk, socket_gen, peer_family| ConnKey {
            sk,
            socket_gen,
            peer_family,
            ..ConnKey::default()
        };
        let gens = std::collections::HashMap::from([(1u64, 7u32), (2, 9)]);
        assert!(!flow_socket_gone(&flow(1, 7, 2), &gens), "live socket");
        assert!(
            flow_socket_gone(&flow(1, 8, 2), &gens),
            "a new socket at the same address"
        );
        assert!(flow_socket_gone(&flow(3, 7, 2), &gens), "socket gone");
        assert!(
            !flow_socket_gone(&flow(3, 0, 2), &gens),
            "no generation: left to expiry"
        );
        assert!(!flow_socket_gone(&flow(3, 0, 0), &gens), "connected socket");
        assert!(!flow_socket_gone(&flow(3, 5, 0), &gens), "not a peer flow");
    }

    #[test]
    fn one_page_ring_is_valid() {
        KernelConfig {
            ring_buffer_bytes: page_size(),
            ..KernelConfig::default()
        }
        .validate()
        .unwrap();
    }

    #[test]
    fn short_ring_records_are_skipped_not_misread() {
        assert!(crate::decode::closed_record(&[0u8; 10]).is_none());
        let full = vec![0u8; std::mem::size_of::<ClosedConn>()];
        assert_eq!(
            crate::decode::closed_record(&full),
            Some(ClosedConn::default())
        );
    }
}
