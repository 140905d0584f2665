//! The per-client delta pipeline (pure Rust, no kernel access): Datadog's `networkState`
//! (sections 1.2-1.4 and 3.4-3.11 of `datadog-network-tracer.md`), split by concern and with
//! its weak spots fixed.
//!
//! # Modules
//! - [`config`]: [`StateConfig`], the limits and switches.
//! - `clients`: [`ClientId`], the registry (cap, expiry) and each client's private state.
//! - `cursor_log`: an append-only log read by every client through its own cursor.
//! - `closed_store`: closed connections, stored once for all clients, on a cursor log.
//! - `batches`: DNS and USM batches, stored once for all clients, on a cursor log.
//! - `snapshot`: a client's per-cookie memory of the counters it was last told.
//! - `readings`: folding two readings of the same connection.
//! - `merge`: dedup by cookie, collisions, closed-wins, deltas, underflows, zero-delta filter.
//! - `intra_host`: intra-host detection, direction fixes, NAT clean-up.
//! - `aggregate`: aggregation, port roll-up, DNS attachment.
//!
//! # Concurrency
//! [`NetworkState`] is `Send + Sync` and has no global lock. The closed store, the DNS log and
//! the USM log each sit behind their own mutex, held only to append or to copy out `Arc`s;
//! each client's state sits behind the client's own mutex, held for that client's merge. So
//! [`NetworkState::store_closed`] never waits for a merge, and clients never wait for each
//! other. Lock order: registry → closed → DNS → USM; a client's mutex is never held while the
//! registry lock is taken.
//!
//! # Semantics decided here
//! - **New clients**: a client's first call reports `last = monotonic` for every active
//!   connection (cumulative since the kernel entry was created), as Datadog. Registration only
//!   creates the client and starts its cursors; it captures no counter baseline. So for a
//!   connection visible to a client, the sum of the `last` values it receives equals the
//!   connection's final counters.
//! - **Closed connections** reach a client only if stored after the client was created
//!   (registered or first call), and then exactly once (unless their delta is zero, or the
//!   closed store was full: `closed_conn_dropped`). With no client at all they are discarded.
//! - **Expired clients** (no call for `client_expiry_ns`, default 2 min) are forgotten; one that
//!   comes back is new.
//! - **Caps**: clients beyond `max_clients` are refused with an error (`clients_refused`); a
//!   client id over 256 bytes is refused by [`ClientId::new`]; a client's new connections beyond
//!   `max_tracked_per_client` are not reported (`conn_dropped`, retried next call); the shared
//!   stores drop their oldest entries (see `closed_store`, `batches`).
//! - **Telemetry** in a [`Delta`] is per client: events of its own merges, what it lost in the
//!   shared stores, plus its share of global counters since its previous call.
//! - Callers must read the active list after the client's previous call returned (see
//!   `merge`).

mod aggregate;
mod batches;
mod clients;
mod closed_store;
pub mod config;
mod cursor_log;
mod intra_host;
mod merge;
#[cfg(test)]
mod proptests;
mod readings;
mod snapshot;
#[cfg(test)]
mod test_support;
#[cfg(test)]
mod tests;

use std::sync::{
    Arc, Mutex, MutexGuard, PoisonError, RwLock,
    atomic::{AtomicU64, Ordering},
};

pub use aggregate::AggregationConfig;
pub use clients::{ClientError, ClientId, MAX_CLIENT_ID_LEN};
pub use config::{MAX_CONNECTION_LIMIT, StateConfig};

use crate::{
    error::Result,
    model::{ConnectionStats, CounterSet, Delta, DnsStatsBatch, StateTelemetry, UsmStats},
    state::{
        aggregate::AggregateScratch,
        batches::BatchLog,
        clients::{ClientHandle, ClientRegistry},
        closed_store::ClosedStore,
        intra_host::IntraHostScratch,
        merge::MergeScratch,
    },
};

/// Scratch space of one call, pooled across calls (its size follows the number of concurrent
/// calls, not the number of clients).
#[derive(Debug, Default)]
struct CallScratch {
    closed: Vec<Arc<ConnectionStats>>,
    dns: Vec<Arc<DnsStatsBatch>>,
    usm: Vec<Arc<UsmStats>>,
    merge: MergeScratch,
    intra: IntraHostScratch,
    aggregate: AggregateScratch,
}

impl CallScratch {
    fn clear(&mut self) {
        self.closed.clear();
        self.dns.clear();
        self.usm.clear();
    }

    fn allocated_bytes(&self) -> usize {
        let ptr = std::mem::size_of::<usize>();
        (self.closed.capacity() + self.dns.capacity() + self.usm.capacity()) * ptr
            + self.merge.allocated_bytes()
            + self.intra.allocated_bytes()
            + self.aggregate.allocated_bytes()
    }
}

const SCRATCH_POOL_MAX: usize = 4;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The state pipeline (see the module docs).
#[derive(Debug)]
pub struct NetworkState {
    config: StateConfig,
    clients: RwLock<ClientRegistry>,
    closed: Mutex<ClosedStore>,
    dns: Mutex<BatchLog<DnsStatsBatch>>,
    usm: Mutex<BatchLog<UsmStats>>,
    totals: Mutex<StateTelemetry>,
    clients_refused: AtomicU64,
    scratch: Mutex<Vec<CallScratch>>,
}

const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<NetworkState>();
};

impl NetworkState {
    /// A pipeline with no client.
    pub fn new(config: StateConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self {
            clients: RwLock::new(ClientRegistry::new(config.max_clients)),
            closed: Mutex::new(ClosedStore::new(config.max_closed_connections)),
            dns: Mutex::new(BatchLog::new(config.max_dns_stats as u64)),
            usm: Mutex::new(BatchLog::new(config.max_usm_stats as u64)),
            totals: Mutex::new(StateTelemetry::default()),
            clients_refused: AtomicU64::new(0),
            scratch: Mutex::new(Vec::new()),
            config,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &StateConfig {
        &self.config
    }

    fn client_handle(&self, id: &ClientId, now_ns: u64) -> Result<Arc<ClientHandle>, ClientError> {
        if let Some(handle) = self
            .clients
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
        {
            return Ok(handle);
        }
        let mut registry = self.clients.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(handle) = registry.get(id) {
            return Ok(handle);
        }
        let mut closed = lock(&self.closed);
        let refused = self.clients_refused.load(Ordering::Relaxed);
        match registry.create(id, now_ns, refused, closed.collisions()) {
            Ok(handle) => {
                closed.add_reader(handle.reader);
                lock(&self.dns).add_reader(handle.reader);
                lock(&self.usm).add_reader(handle.reader);
                tracing::debug!(
                    client = id.as_str(),
                    clients = registry.len(),
                    "client registered"
                );
                Ok(handle)
            }
            Err(err) => {
                self.clients_refused.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(client = id.as_str(), %err, "client refused");
                Err(err)
            }
        }
    }

    /// Creates the client if it does not exist. From now on it receives the closed connections,
    /// DNS and USM batches stored. `now_ns` starts its expiry clock.
    pub fn register_client(&self, id: &ClientId, now_ns: u64) -> Result<(), ClientError> {
        let handle = self.client_handle(id, now_ns)?;
        handle.touch(now_ns);
        Ok(())
    }

    /// Number of registered clients.
    pub fn client_count(&self) -> usize {
        self.clients
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Stores a closed connection for every registered client. Safe to call from a consumer
    /// thread while clients' calls run: it only takes the closed store's lock.
    pub fn store_closed(&self, conn: ConnectionStats) {
        lock(&self.closed).store(conn);
    }

    /// Stores several closed connections under one lock acquisition.
    pub fn store_closed_batch(&self, conns: impl IntoIterator<Item = ConnectionStats>) {
        let mut closed = lock(&self.closed);
        for conn in conns {
            closed.store(conn);
        }
    }

    /// Closed connections currently held (for all clients).
    pub fn closed_len(&self) -> usize {
        lock(&self.closed).len()
    }

    /// One client call: merges `active` (the connections read from the kernel map for this
    /// call) with the closed connections the client has not received, and returns what changed
    /// since the client's previous call. `dns` and `usm` are the batches collected since the
    /// previous call by *any* client: they are stored for every client. An unknown client is
    /// created. `latest_time_ns` (kernel monotonic clock) feeds client expiry.
    pub fn get_delta(
        &self,
        client: &ClientId,
        latest_time_ns: u64,
        active: Vec<ConnectionStats>,
        dns: DnsStatsBatch,
        usm: UsmStats,
        counters: &CounterSet,
    ) -> Result<Delta, ClientError> {
        let handle = self.client_handle(client, latest_time_ns)?;
        handle.touch(latest_time_ns);
        if !dns.is_empty() {
            let weight = dns.leaf_count() as u64;
            lock(&self.dns).push(dns, weight);
        }
        if !usm.is_empty() {
            let weight = usm.len() as u64;
            lock(&self.usm).push(usm, weight);
        }

        let mut state = lock(&handle.state);
        let mut scratch = lock(&self.scratch).pop().unwrap_or_default();
        let mut telemetry = StateTelemetry::default();
        let store_collisions = {
            let mut closed = lock(&self.closed);
            telemetry.closed_conn_dropped = closed.read(handle.reader, &mut scratch.closed);
            closed.collisions()
        };
        telemetry.dns_stats_dropped = lock(&self.dns).read(handle.reader, &mut scratch.dns);
        telemetry.usm_stats_dropped = lock(&self.usm).read(handle.reader, &mut scratch.usm);

        let mut conns = active;
        reserve_for_closed(&mut conns, scratch.closed.len(), state.snapshot.len() == 0);
        merge::merge(
            &mut state.snapshot,
            &mut conns,
            &scratch.closed,
            self.config.max_tracked_per_client,
            &mut scratch.merge,
            &mut telemetry,
        );
        intra_host::resolve(
            &mut conns,
            &self.config.ephemeral_ports,
            &mut scratch.intra,
            &mut telemetry,
        );
        aggregate::attach_dns(&mut conns, &scratch.dns, &mut scratch.aggregate);
        aggregate::aggregate(&mut conns, &self.config.aggregation, &mut scratch.aggregate);
        let mut usm_delta = UsmStats::default();
        for batch in &scratch.usm {
            usm_delta.merge(batch);
        }

        let own = telemetry;
        telemetry.stats_cookie_collisions +=
            store_collisions.saturating_sub(state.store_collisions_seen);
        state.store_collisions_seen = store_collisions;
        let refused = self.clients_refused.load(Ordering::Relaxed);
        telemetry.clients_refused = refused.saturating_sub(state.refused_seen);
        state.refused_seen = refused;
        let mut counters = counters_delta(&mut state, counters);
        drop(state);

        scratch.clear();
        {
            let mut pool = lock(&self.scratch);
            if pool.len() < SCRATCH_POOL_MAX {
                pool.push(scratch);
            }
        }
        {
            let mut totals = lock(&self.totals);
            *totals = totals.add(&own);
        }
        log_losses(client, &telemetry);
        counters.0.extend(telemetry.samples());
        Ok(Delta {
            conns,
            usm: usm_delta,
            telemetry,
            counters,
        })
    }

    /// Forgets the given cookies in every client (connections expired from the kernel map).
    pub fn remove_connections(&self, cookies: &[u64]) {
        let handles: Vec<Arc<ClientHandle>> = self
            .clients
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .handles()
            .cloned()
            .collect();
        for handle in handles {
            lock(&handle.state).snapshot.forget(cookies);
        }
    }

    /// Forgets clients that made no call since `now_ns - client_expiry_ns`; returns how many.
    pub fn remove_expired_clients(&self, now_ns: u64) -> usize {
        let mut registry = self.clients.write().unwrap_or_else(PoisonError::into_inner);
        let readers = registry.remove_expired(now_ns, self.config.client_expiry_ns);
        if readers.is_empty() {
            return 0;
        }
        let mut closed = lock(&self.closed);
        let mut dns = lock(&self.dns);
        let mut usm = lock(&self.usm);
        for reader in &readers {
            closed.remove_reader(*reader);
            dns.remove_reader(*reader);
            usm.remove_reader(*reader);
        }
        tracing::debug!(
            expired = readers.len(),
            clients = registry.len(),
            "clients expired"
        );
        readers.len()
    }

    /// Totals since start: the sum over clients of their per-client telemetry, plus the global
    /// counters (store-time collisions, refused clients).
    pub fn telemetry(&self) -> StateTelemetry {
        let mut totals = *lock(&self.totals);
        totals.stats_cookie_collisions += lock(&self.closed).collisions();
        totals.clients_refused = self.clients_refused.load(Ordering::Relaxed);
        totals
    }

    /// Closed connections discarded because no client was registered.
    pub fn closed_discarded_without_clients(&self) -> u64 {
        lock(&self.closed).discarded_without_clients()
    }

    /// Heap bytes of one client's private state (its snapshot table, from its allocated
    /// capacity; see `snapshot`), or `None` for an unknown client. Waits for the client's
    /// running call, if any.
    pub fn client_state_bytes(&self, client: &ClientId) -> Option<usize> {
        let handle = self
            .clients
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(client)?;
        let state = lock(&handle.state);
        let kernel = snapshot::hash_map_bytes::<&'static str, u64>(state.kernel_seen.capacity());
        Some(std::mem::size_of::<ClientHandle>() + state.snapshot.allocated_bytes() + kernel)
    }

    /// Connections tracked in one client's snapshot.
    pub fn client_tracked(&self, client: &ClientId) -> Option<usize> {
        let handle = self
            .clients
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(client)?;
        let len = lock(&handle.state).snapshot.len();
        Some(len)
    }

    /// Heap bytes shared by all clients: the closed store and the pooled call scratch.
    pub fn shared_state_bytes(&self) -> usize {
        let scratch: usize = lock(&self.scratch)
            .iter()
            .map(CallScratch::allocated_bytes)
            .sum();
        lock(&self.closed).allocated_bytes() + scratch
    }
}

/// Makes room in the active list for the `closed` connections the merge appends, when the
/// room idle connections leave cannot suffice: more closed than the list's capacity, or the
/// client's first call (`first_call`: every active connection is reported, nothing is left
/// out). The merge would then push past the capacity and `Vec` would double it: 10k active +
/// 50k closed ended in an 80k-slot list (24 MB of 300-byte connections, plus the 12 MB it grew
/// from); 100k active on a first call in a 200k-slot one. Reserving the exact upper bound
/// (every active connection kept, every closed one reported) costs one copy, as the doubling
/// did, and never a second one. Otherwise nothing is reserved: the merge fills the room in place.
fn reserve_for_closed(conns: &mut Vec<ConnectionStats>, closed: usize, first_call: bool) {
    let spare = conns.capacity().saturating_sub(conns.len());
    let room = if first_call { spare } else { conns.capacity() };
    if closed > room {
        conns.reserve_exact(closed);
    }
}

fn log_losses(client: &ClientId, t: &StateTelemetry) {
    if t.conn_dropped + t.closed_conn_dropped + t.dns_stats_dropped + t.usm_stats_dropped > 0 {
        tracing::warn!(
            client = client.as_str(),
            conn_dropped = t.conn_dropped,
            closed_conn_dropped = t.closed_conn_dropped,
            dns_stats_dropped = t.dns_stats_dropped,
            usm_stats_dropped = t.usm_stats_dropped,
            "state limits dropped data for this client"
        );
    }
    if t.stats_cookie_collisions + t.stats_underflows > 0 {
        tracing::debug!(
            client = client.as_str(),
            collisions = t.stats_cookie_collisions,
            underflows = t.stats_underflows,
            "cookie collisions or counter underflows"
        );
    }
}

/// Turns counter totals into what changed since this client's previous call (a counter that
/// went down restarts from its new value); gauges are passed as they are.
fn counters_delta(state: &mut clients::ClientState, current: &CounterSet) -> CounterSet {
    let deltas = current
        .iter()
        .map(|sample| {
            if sample.info.kind == crate::telemetry::CounterKind::Gauge {
                return *sample;
            }
            let value = sample.value;
            let seen = state
                .kernel_seen
                .insert(sample.info.name, value)
                .unwrap_or(0);
            let delta = if value >= seen { value - seen } else { value };
            crate::telemetry::Sample::new(sample.info, delta)
        })
        .collect();
    CounterSet(deltas)
}
