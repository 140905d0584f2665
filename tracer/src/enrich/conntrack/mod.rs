//! NAT translations from the kernel's conntrack table, over netlink (`NETLINK_NETFILTER`).
//!
//! For the tracer's own network namespace (that of the thread that called [`Conntrack::start`])
//! and every namespace with traced connections (the set each [`Conntrack::sync`] is given), two
//! sockets are opened once, inside the namespace (a short-lived helper thread enters it, see
//! [`crate::kernel::netns`]): one joins the conntrack NEW and DESTROY groups, with a classic BPF
//! socket filter that drops events without NAT in the kernel, the other dumps the table
//! (`IPCTNL_MSG_CT_GET` with `NLM_F_DUMP`) once at open. Every sync then reads the pending
//! events without blocking, one `recv` per namespace when nothing arrived.
//!
//! Only NAT'd TCP and UDP entries (`IPS_SRC_NAT | IPS_DST_NAT`) are kept, in one bounded LRU
//! ([`ConntrackConfig::max_entries`] keys, two per entry: see [`table`]) looked up with a hash
//! lookup per connection, never a netlink round trip:
//! - [`Conntrack::translation`]: the connection's `(netns, protocol, src, sport, dst, dport)`
//!   as a conntrack original tuple gives the reply tuple; as a reply tuple (the other side of a
//!   NAT'd connection on this host), the original tuple. The connection's own namespace is
//!   looked in first, then the tracer's (a connection of a container NATed by the host).
//! - [`Conntrack::take_translation`]: the same for a connection that ended, and its key is then
//!   forgotten (Datadog deletes the translations of closed connections).
//!
//! A DESTROY does not drop an entry at once (a close may be stored after conntrack destroyed
//! the entry: UDP entries time out, closes are drained later): the entry stays
//! [`ConntrackConfig::destroyed_grace`], then goes (`conntrack_destroyed_expired`). When a
//! socket overflows (ENOBUFS: events were lost), the namespace is dumped again and what the
//! dump no longer lists is marked destroyed. A namespace no traced connection has been in for
//! [`ConntrackConfig::netns_linger`] has its sockets closed and its entries dropped.
//!
//! Conntrack missing (not built, module not loaded, not permitted): the tracer runs without
//! translations; it is said once (`tracing::warn!`) and counted (`conntrack_unavailable`).
//! Such namespaces, and those that cannot be found or entered, are retried after
//! [`RETRY_AFTER`].

pub(crate) mod parse;
mod socket;
mod table;

use std::{
    collections::{HashMap, HashSet},
    fs::File,
    num::NonZeroUsize,
    os::fd::AsFd,
    path::Path,
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::{Duration, Instant},
};

use parking_lot::Mutex;

use self::{
    socket::{Batch, NsSockets, RECV_BUF_BYTES, Update},
    table::{Key, Table},
};
use crate::{
    counter_set,
    kernel::netns,
    model::{ConnectionStats, IpTranslation},
    telemetry::{CounterSource, Sample, bump},
};

/// How long a namespace that could not be followed waits before it is tried again.
pub const RETRY_AFTER: Duration = Duration::from_secs(60);

/// Configuration of the conntrack enrichment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConntrackConfig {
    /// Follow conntrack at all (default on).
    pub enabled: bool,
    /// Keys the translation table holds at most (two per NAT'd conntrack entry: its original
    /// and its reply tuple), least recently used evicted first. Default 131,072, Datadog's
    /// `conntrack_max_state_size`.
    pub max_entries: usize,
    /// Receive buffer asked for each namespace's event socket, bytes (`SO_RCVBUFFORCE` as
    /// root, else `SO_RCVBUF` within `net.core.rmem_max`). Default 8 MiB.
    pub rcvbuf_bytes: usize,
    /// How long an entry conntrack destroyed is still answered (a close stored after the
    /// destroy). Default 2 minutes.
    pub destroyed_grace: Duration,
    /// How long a namespace's sockets stay open after the last traced connection in it is gone
    /// (the tracer's own namespace is always followed). Default 2 minutes.
    pub netns_linger: Duration,
}

impl Default for ConntrackConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_entries: 131_072,
            rcvbuf_bytes: 8 << 20,
            destroyed_grace: Duration::from_secs(120),
            netns_linger: Duration::from_secs(120),
        }
    }
}

impl ConntrackConfig {
    /// Checks the sizes.
    pub fn validate(&self) -> crate::Result<()> {
        if self.max_entries == 0 {
            return Err(crate::Error::InvalidConfig(
                "enrich.conntrack.max_entries must be at least 1".to_owned(),
            ));
        }
        if self.rcvbuf_bytes == 0 || i32::try_from(self.rcvbuf_bytes).is_err() {
            return Err(crate::Error::InvalidConfig(format!(
                "enrich.conntrack.rcvbuf_bytes must be between 1 and {}",
                i32::MAX
            )));
        }
        Ok(())
    }
}

counter_set! {
    /// Counters of the conntrack enrichment.
    pub struct ConntrackCounters {
        /// NAT'd TCP/UDP conntrack entries taken in (from events or dumps), each held under two keys.
        conntrack_entries_added: Activity,
        /// Entries read and not kept (no NAT, or neither TCP nor UDP): from dumps; events only where the in-kernel NAT filter could not be attached.
        conntrack_non_nat_skipped: Activity,
        /// Keys evicted from the bounded table (least recently used) to make room.
        conntrack_evicted: Loss,
        /// DESTROY events of held entries (their keys are dropped after the grace period).
        conntrack_destroy_events: Activity,
        /// Keys of destroyed entries dropped once their grace period was over.
        conntrack_destroyed_expired: Activity,
        /// Event sockets that overflowed (ENOBUFS: events lost), each resynced with a fresh dump.
        conntrack_enobufs_resyncs: Loss,
        /// Conntrack tables dumped (one per namespace opened, plus resyncs).
        conntrack_dumps: Activity,
        /// Namespaces whose conntrack could not be followed: not found, or not enterable.
        conntrack_netns_open_failures: Loss,
        /// Namespaces where conntrack netlink is unavailable (missing or not permitted), or a dump failed.
        conntrack_unavailable: Loss,
        /// Netlink messages that could not be decoded, or receive errors.
        conntrack_malformed: Loss,
        /// Lookups that found a translation.
        conntrack_lookups_hit: Activity,
        /// Lookups that found none (most connections are not NATed).
        conntrack_lookups_miss: Activity,
        /// Namespaces whose sockets were closed (no traced connection in them for a while); their keys dropped.
        conntrack_netns_closed: Activity,
        /// Keys held now.
        conntrack_entries: Gauge,
        /// Namespaces followed now.
        conntrack_netns_followed: Gauge,
    }
}

/// One followed namespace.
struct Followed {
    sockets: NsSockets,
    /// The last sync whose set had it (or its opening).
    last_wanted: Instant,
}

/// The sockets and what is being tried; one sync at a time.
struct Namespaces {
    /// The tracer's own namespace (its inode and handle), if it could be read.
    own: Option<(u32, File)>,
    open: HashMap<u32, Followed>,
    /// Namespaces that could not be followed, and when to try again.
    failed: HashMap<u32, Instant>,
    buf: Vec<u8>,
}

/// The conntrack follower (see the module docs).
pub struct Conntrack {
    config: ConntrackConfig,
    counters: ConntrackCounters,
    /// The tracer's own namespace inode (0 when unknown).
    own: u32,
    namespaces: Mutex<Namespaces>,
    table: Mutex<Table>,
    /// Keys held, readable without the lock: lookups on an empty table cost nothing.
    held: AtomicU64,
    /// The "unavailable" warning was logged.
    warned: AtomicBool,
}

impl Conntrack {
    /// Starts following conntrack as configured: the tracer's own namespace is opened and
    /// dumped now. Never fails (see the module docs).
    pub fn start(config: &ConntrackConfig) -> Self {
        let capacity = NonZeroUsize::new(config.max_entries).unwrap_or(NonZeroUsize::MIN);
        let own = if config.enabled {
            match netns::current() {
                Ok(own) => Some(own),
                Err(e) => {
                    tracing::warn!(error = %e, "conntrack: cannot read the tracer's own network namespace");
                    None
                }
            }
        } else {
            None
        };
        let conntrack = Self {
            config: config.clone(),
            counters: ConntrackCounters::default(),
            own: own.as_ref().map_or(0, |(inode, _)| *inode),
            namespaces: Mutex::new(Namespaces {
                own: None,
                open: HashMap::new(),
                failed: HashMap::new(),
                buf: vec![0; RECV_BUF_BYTES],
            }),
            table: Mutex::new(Table::new(capacity, config.destroyed_grace)),
            held: AtomicU64::new(0),
            warned: AtomicBool::new(false),
        };
        if let Some((inode, file)) = own {
            let mut namespaces = conntrack.namespaces.lock();
            // On this thread, which is in the namespace: no helper thread needed.
            let opened = NsSockets::open(config.rcvbuf_bytes);
            conntrack.opened(&mut namespaces, inode, opened, Instant::now());
            namespaces.own = Some((inode, file));
        } else if !config.enabled {
            tracing::debug!("conntrack enrichment disabled");
        } else {
            bump(&conntrack.counters.conntrack_netns_open_failures, 1);
        }
        conntrack
    }

    /// Opens what is missing for `netns` (inodes as in `ConnectionTuple::netns`), takes in the
    /// events received since the last sync, drops destroyed entries past their grace period and
    /// closes namespaces gone for longer than the linger time.
    pub fn sync(&self, netns: &HashSet<u32>) {
        if !self.config.enabled {
            return;
        }
        let now = Instant::now();
        let mut namespaces = self.namespaces.lock();
        let namespaces = &mut *namespaces;
        self.open_missing(namespaces, netns, now);

        let mut batch = Batch::default();
        let mut resync = Vec::new();
        let mut events: Vec<(u32, Vec<Update>)> = Vec::new();
        for (inode, followed) in &mut namespaces.open {
            if netns.contains(inode) {
                followed.last_wanted = now;
            }
            let status = followed.sockets.drain(&mut namespaces.buf, &mut batch);
            if status.failed {
                bump(&self.counters.conntrack_malformed, 1);
            }
            if status.overflowed {
                resync.push(*inode);
            }
            if !batch.updates.is_empty() {
                events.push((*inode, std::mem::take(&mut batch.updates)));
            }
        }
        bump(&self.counters.conntrack_non_nat_skipped, batch.skipped);
        bump(&self.counters.conntrack_malformed, batch.malformed);

        // Closed namespaces: linger over (never the tracer's own).
        let linger = self.config.netns_linger;
        let gone: Vec<u32> = namespaces
            .open
            .iter()
            .filter(|(inode, f)| {
                **inode != self.own && now.saturating_duration_since(f.last_wanted) >= linger
            })
            .map(|(inode, _)| *inode)
            .collect();
        for inode in &gone {
            namespaces.open.remove(inode);
        }
        namespaces.failed.retain(|_, retry| *retry > now);

        {
            let mut table = self.table.lock();
            for (inode, updates) in &events {
                self.apply(&mut table, *inode, updates, now);
            }
            for inode in &gone {
                table.purge(*inode);
                bump(&self.counters.conntrack_netns_closed, 1);
            }
            let expired = table.expire(now);
            bump(&self.counters.conntrack_destroyed_expired, expired);
            self.set_held(&table);
        }

        // Overflowed sockets: the events are in (they are older than the dump); dump again.
        for inode in resync {
            bump(&self.counters.conntrack_enobufs_resyncs, 1);
            let Some(followed) = namespaces.open.get_mut(&inode) else {
                continue;
            };
            let mut batch = Batch::default();
            bump(&self.counters.conntrack_dumps, 1);
            match followed.sockets.dump(&mut namespaces.buf, &mut batch) {
                Ok(()) => self.take_dump(inode, batch, true, now),
                Err(e) => {
                    bump(&self.counters.conntrack_unavailable, 1);
                    tracing::debug!(netns = inode, error = %e, "conntrack: resync dump failed");
                }
            }
        }
        self.counters
            .conntrack_netns_followed
            .store(namespaces.open.len() as u64, Ordering::Relaxed);
    }

    /// The NAT translation of an open connection, if conntrack has one.
    pub fn translation(&self, conn: &ConnectionStats) -> Option<IpTranslation> {
        self.lookup(conn, false)
    }

    /// The NAT translation of a connection that ended; its key is forgotten.
    pub fn take_translation(&self, conn: &ConnectionStats) -> Option<IpTranslation> {
        self.lookup(conn, true)
    }

    /// Sets `nat` on every open connection conntrack has a translation for: one lock for the
    /// batch, counters bumped once. With no NAT entry held (most hosts, most of the time) the
    /// connections are not even touched.
    pub fn attach(&self, conns: &mut [ConnectionStats]) {
        if !self.config.enabled {
            return;
        }
        if self.held.load(Ordering::Relaxed) == 0 {
            bump(&self.counters.conntrack_lookups_miss, conns.len() as u64);
            return;
        }
        let (mut hits, mut misses) = (0u64, 0u64);
        {
            let mut table = self.table.lock();
            for conn in conns.iter_mut() {
                let mine = Key::of_conn(conn.tuple.netns, &conn.tuple);
                let mut found = table.get(&mine);
                if found.is_none() && conn.tuple.netns != self.own {
                    found = table.get(&Key::of_conn(self.own, &conn.tuple));
                }
                if found.is_some() {
                    hits += 1;
                } else {
                    misses += 1;
                }
                conn.nat = found;
            }
        }
        bump(&self.counters.conntrack_lookups_hit, hits);
        bump(&self.counters.conntrack_lookups_miss, misses);
    }

    fn lookup(&self, conn: &ConnectionStats, take: bool) -> Option<IpTranslation> {
        if !self.config.enabled {
            return None;
        }
        if self.held.load(Ordering::Relaxed) == 0 {
            bump(&self.counters.conntrack_lookups_miss, 1);
            return None;
        }
        let own = Key::of_conn(self.own, &conn.tuple);
        let mine = Key::of_conn(conn.tuple.netns, &conn.tuple);
        let keys = if own == mine {
            [mine, mine]
        } else {
            [mine, own]
        };
        let found = {
            let mut table = self.table.lock();
            let found = keys.iter().find_map(|key| {
                if take {
                    table.take(key)
                } else {
                    table.get(key)
                }
            });
            if take {
                self.set_held(&table);
            }
            found
        };
        let counter = if found.is_some() {
            &self.counters.conntrack_lookups_hit
        } else {
            &self.counters.conntrack_lookups_miss
        };
        bump(counter, 1);
        found
    }

    fn set_held(&self, table: &Table) {
        let held = table.len() as u64;
        self.held.store(held, Ordering::Relaxed);
        self.counters
            .conntrack_entries
            .store(held, Ordering::Relaxed);
    }

    fn apply(&self, table: &mut Table, inode: u32, updates: &[Update], now: Instant) {
        for update in updates {
            match update {
                Update::New(e) => {
                    let inserted = table.insert(inode, e);
                    bump(
                        &self.counters.conntrack_entries_added,
                        u64::from(inserted.added),
                    );
                    bump(&self.counters.conntrack_evicted, inserted.evicted);
                }
                Update::Destroy(e) => {
                    if table.destroy(inode, e, now) {
                        bump(&self.counters.conntrack_destroy_events, 1);
                    }
                }
            }
        }
    }

    /// Takes in a dump of `inode`; on a resync, what it no longer lists is marked destroyed.
    fn take_dump(&self, inode: u32, batch: Batch, resync: bool, now: Instant) {
        bump(&self.counters.conntrack_non_nat_skipped, batch.skipped);
        bump(&self.counters.conntrack_malformed, batch.malformed);
        let mut table = self.table.lock();
        self.apply(&mut table, inode, &batch.updates, now);
        if resync {
            let seen: HashSet<Key> = batch
                .updates
                .iter()
                .filter_map(|u| match u {
                    Update::New(e) => Some(e),
                    Update::Destroy(_) => None,
                })
                .flat_map(|e| [Key::of_ct(inode, &e.orig), Key::of_ct(inode, &e.reply)])
                .collect();
            table.mark_missing(inode, &seen, now);
        }
        self.set_held(&table);
    }

    /// Finds and opens the namespaces of `wanted` (and the tracer's own) not followed yet,
    /// except those waiting for a retry.
    fn open_missing(&self, namespaces: &mut Namespaces, wanted: &HashSet<u32>, now: Instant) {
        let retry_own = self.own != 0
            && !namespaces.open.contains_key(&self.own)
            && !namespaces.failed.contains_key(&self.own);
        let missing: HashSet<u32> = wanted
            .iter()
            .copied()
            .filter(|inode| {
                *inode != 0
                    && *inode != self.own
                    && !namespaces.open.contains_key(inode)
                    && !namespaces.failed.contains_key(inode)
            })
            .collect();
        if missing.is_empty() && !retry_own {
            return;
        }
        let mut found = HashMap::new();
        if !missing.is_empty() {
            netns::find(Path::new("/proc"), &missing, &mut found);
        }
        if retry_own
            && let Some((inode, file)) = &namespaces.own
            && let Ok(file) = file.try_clone()
        {
            found.insert(*inode, file);
        }
        for inode in &missing {
            if !found.contains_key(inode) {
                bump(&self.counters.conntrack_netns_open_failures, 1);
                tracing::debug!(
                    netns = inode,
                    "conntrack: no task or bind mount in the namespace"
                );
                namespaces.failed.insert(*inode, now + RETRY_AFTER);
            }
        }
        let rcvbuf = self.config.rcvbuf_bytes;
        for (inode, file) in found {
            match netns::run_in(file.as_fd(), || NsSockets::open(rcvbuf)) {
                Ok(opened) => self.opened(namespaces, inode, opened, now),
                Err(e) => {
                    bump(&self.counters.conntrack_netns_open_failures, 1);
                    tracing::debug!(netns = inode, error = %e, "conntrack: cannot enter the namespace");
                    namespaces.failed.insert(inode, now + RETRY_AFTER);
                }
            }
        }
    }

    /// Dumps a namespace whose sockets were just created (or says why they could not be) and
    /// follows it from now on.
    fn opened(
        &self,
        namespaces: &mut Namespaces,
        inode: u32,
        opened: std::io::Result<NsSockets>,
        now: Instant,
    ) {
        let mut batch = Batch::default();
        let result = opened.and_then(|mut sockets| {
            bump(&self.counters.conntrack_dumps, 1);
            sockets
                .dump(&mut namespaces.buf, &mut batch)
                .map(|()| sockets)
        });
        match result {
            Ok(sockets) => {
                self.take_dump(inode, batch, false, now);
                namespaces.open.insert(
                    inode,
                    Followed {
                        sockets,
                        last_wanted: now,
                    },
                );
            }
            Err(e) => {
                bump(&self.counters.conntrack_unavailable, 1);
                namespaces.failed.insert(inode, now + RETRY_AFTER);
                if !self.warned.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        netns = inode,
                        error = %e,
                        "conntrack netlink unavailable (nf_conntrack_netlink not loaded, or not \
                         permitted: CAP_NET_ADMIN): connections get no NAT translation there"
                    );
                } else {
                    tracing::debug!(netns = inode, error = %e, "conntrack netlink unavailable");
                }
            }
        }
    }
}

impl CounterSource for Conntrack {
    fn collect(&self, out: &mut Vec<Sample>) {
        self.counters.collect(out);
    }
}

#[cfg(test)]
mod tests;
