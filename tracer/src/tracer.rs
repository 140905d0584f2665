//! [`Tracer`]: the library's entry point. It joins the kernel side (`kernel::conn_tracer`), the
//! closed-connection consumer, filters and expiry, and the per-client state pipeline.

use std::{
    sync::{Arc, Mutex, MutexGuard, PoisonError, atomic::AtomicU64},
    time::{Duration, Instant},
};

use tracer_common::conn::{
    ClosedConn, ConnKey, ConnStats, FLAG_CLOSED_BY_SWEEP, FLAG_EXPIRED, IPPROTO_TCP,
};

use crate::{
    Result,
    config::Config,
    consumer::Consumer,
    decode,
    enrich::Enrichers,
    expiry::{self, ExpiryConfig},
    filter::Filters,
    kernel::{
        conn_tracer::{ConnTracer, flow_socket_gone},
        plan::{Backend, Plan},
    },
    model::{Connections, CounterSet, EphemeralPortRange},
    sources::{Sources, tls::Tls},
    state::{ClientId, NetworkState},
    telemetry::{CounterInfo, CounterSource, Sample, bump},
};

/// How long the consumer sleeps when no closed connection arrives (a safety net: the ring's
/// descriptor wakes it as soon as one does).
const CONSUMER_IDLE_MS: i32 = 200;

crate::counter_set! {
    /// Userspace-side counters of `Tracer`, reported with the kernel's in each call's telemetry.
    struct Counters {
        /// Closed-connection records drained from the kernel's ring buffer.
        closed_received: Activity,
        /// Closed connections a filter excluded.
        closed_filtered: Activity,
        /// Open connections a filter excluded (summed over calls).
        active_filtered: Activity,
        /// Idle TCP connections ended by the expiry rules.
        expired_tcp: Activity,
        /// Idle UDP flows ended by the expiry rules.
        expired_udp: Activity,
        /// Entries a batched map read returned twice (the kernel's hash table moved under it).
        map_read_duplicates: Activity,
        /// Unconnected UDP flows ended at read time because their socket was gone.
        udp_flows_socket_gone: Activity,
        /// Open entries not reported in a call because their identity was not final yet (summed
        /// over calls; see `decode::identity_complete`).
        active_held_back: Activity,
    }
}

const TCP_REFRESH_SOCKETS: CounterInfo = CounterInfo::activity(
    "tcp_refresh_sockets",
    "TCP sockets whose packets, retransmits and RTT were refreshed at read time (iter/tcp).",
);
const TCP_REFRESH_NETNS_FAILED: CounterInfo = CounterInfo::loss(
    "tcp_refresh_netns_failed",
    "Network namespaces with tracked TCP connections the read-time refresh could not enter: \
     their counters are those of their latest data-path event.",
);
const OWNER_WALKS: CounterInfo = CounterInfo::activity(
    "owner_walks",
    "Walks of every task's open files (iter/task_file) at read time, run when an accepted TCP \
     connection had no owner yet.",
);
const OWNERS_NAMED: CounterInfo = CounterInfo::activity(
    "owners_named_by_walk",
    "Accepted TCP connections whose owner the read-time walk of open files named (the others \
     are named by their first send or receive).",
);
const OWNER_WALKS_FAILED: CounterInfo = CounterInfo::loss(
    "owner_walks_failed",
    "Read-time owner walks that failed: their accepted connections stay held back until their \
     first send or receive.",
);
const CLOSED_DISCARDED_WITHOUT_CLIENTS: CounterInfo = CounterInfo::activity(
    "closed_discarded_without_clients",
    "Closed connections dropped because no client was registered to receive them.",
);

/// Everything the consumer thread and client calls share.
struct Shared {
    kernel: ConnTracer,
    state: NetworkState,
    filters: Filters,
    ports: EphemeralPortRange,
    counters: Counters,
    /// Containers, NAT, routes.
    enrich: Enrichers,
    /// Batch sources fed by the packet capture (DNS, HTTP).
    sources: Sources,
    /// The TLS file registry: where the TLS uprobes are attached (HTTPS into `sources`).
    tls: Tls,
    /// The network namespaces of the latest map read: where the enrichments' event sources
    /// (conntrack) must listen.
    netns: Mutex<std::collections::HashSet<u32>>,
    /// Held across draining the ring and storing what was drained, so that once a flush
    /// returns, every close emitted before it is in the state.
    flush: Mutex<Vec<ClosedConn>>,
}

impl Shared {
    /// Hands every captured packet now in the capture's ring to the sources (DNS), in order.
    fn drain_packets(&self) {
        if let Some(ring) = self.kernel.packets() {
            ring.drain(|record| self.sources.ingest(record));
        }
    }

    fn flush_closed(&self) {
        let mut buffer = lock(&self.flush);
        buffer.clear();
        self.kernel.drain_closed(&mut buffer);
        if buffer.is_empty() {
            return;
        }
        self.enrich.sync(&lock(&self.netns));
        bump(&self.counters.closed_received, buffer.len() as u64);
        self.store_closed(&buffer);
    }

    /// Stores ended connections (from the ring, or ended by the tracer itself) for every client:
    /// one path, so an end is filtered and decoded the same way whoever saw it.
    fn store_closed(&self, records: &[ClosedConn]) {
        let mut filtered = 0u64;
        // Decoded as they are stored, not collected first: a batch of decoded copies beside the
        // stored ones was the peak of userspace memory under churn.
        let conns = records
            .iter()
            .map(|c| {
                let mut conn = decode::connection(&c.stats, &self.ports, true);
                self.enrich.attach_closed(&mut conn);
                conn
            })
            .filter(|c| {
                let excluded = self.filters.excludes(&c.tuple);
                filtered += u64::from(excluded);
                !excluded
            });
        self.state.store_closed_batch(conns);
        bump(&self.counters.closed_filtered, filtered);
    }
}

/// Buffers reused by client calls (one call reads the map at a time).
#[derive(Default)]
struct ReadBuffers {
    entries: Vec<(ConnKey, ConnStats)>,
    udp_gens: std::collections::HashMap<u64, u32>,
    expired: Vec<ClosedConn>,
    socket_gone: Vec<ClosedConn>,
}

/// What one read of the kernel map sorted out.
struct Sorted {
    active: Vec<crate::model::ConnectionStats>,
    held_back: u64,
    filtered: u64,
}

/// Where the time of one [`Tracer::get_active_connections`] call went.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CallTimings {
    /// Draining the closed-connection ring into the state (closed connections' enrichment
    /// included).
    pub flush: Duration,
    /// Reading the kernel's open-connection map (with the read-time TCP refresh).
    pub map_read: Duration,
    /// Expiry, decoding and filtering of the open entries, then the enrichments (NAT and source
    /// containers before the state, destination containers and routes after it).
    pub enrich: Duration,
    /// The state pipeline (merge, deltas, intra-host, aggregation, telemetry).
    pub pipeline: Duration,
    /// The sources: draining the packet capture, taking the DNS stats, reverse DNS names.
    pub sources: Duration,
    /// Entries read from the kernel map.
    pub entries: usize,
    /// Whether the map was read with batched lookups.
    pub batched: bool,
}

/// Laps of one call, added to the stage each lap belongs to.
struct StageClock {
    last: Instant,
    timings: CallTimings,
}

impl StageClock {
    fn start() -> Self {
        Self {
            last: Instant::now(),
            timings: CallTimings::default(),
        }
    }

    /// Adds the time since the previous lap to the stage `field` picks.
    fn lap(&mut self, field: impl FnOnce(&mut CallTimings) -> &mut Duration) {
        let now = Instant::now();
        *field(&mut self.timings) += now - self.last;
        self.last = now;
    }
}

/// Traces every TCP and UDP connection on the host and answers each client with what happened
/// since its own previous call.
///
/// `Tracer` is `Send + Sync`: clients call [`Tracer::get_active_connections`] concurrently; a
/// long merge for one client never blocks the closed-connection consumer. Dropping the tracer
/// stops the consumer, detaches every program and frees every map.
///
/// ```no_run
/// use tracer::{Config, Tracer};
///
/// let tracer = Tracer::new(Config::default())?;
/// println!("attached with {} ({})", tracer.backend(), tracer.plan().reason);
/// tracer.register_client("my-agent")?;
/// loop {
///     std::thread::sleep(std::time::Duration::from_secs(10));
///     let delta = tracer.get_active_connections("my-agent")?;
///     for conn in &delta.conns {
///         println!(
///             "{:?} {}:{} -> {}:{} sent {} recv {}",
///             conn.tuple.protocol,
///             conn.tuple.src,
///             conn.tuple.sport,
///             conn.tuple.dst,
///             conn.tuple.dport,
///             conn.last.sent_bytes,
///             conn.last.recv_bytes,
///         );
///     }
/// }
/// # Ok::<(), tracer::Error>(())
/// ```
pub struct Tracer {
    // Field order matters: the consumer stops before the kernel side is dropped.
    consumer: Option<Consumer>,
    /// Feeds captured packets to the sources as they arrive, when the capture runs.
    packet_consumer: Option<Consumer>,
    /// Refreshes the TLS file registry, when the TLS uprobes are loaded.
    tls_refresher: Option<Consumer>,
    shared: Arc<Shared>,
    expiry: ExpiryConfig,
    reads: Mutex<ReadBuffers>,
    started: Instant,
    last_timings: Mutex<CallTimings>,
}

const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<Tracer>();
};

impl Tracer {
    /// Validates `config`, loads and attaches the programs (the backend chosen as
    /// [`crate::kernel::plan::plan`] decides), and starts consuming closed connections.
    pub fn new(config: Config) -> Result<Self> {
        config.validate()?;
        let state = NetworkState::new(config.state.clone())?;
        let kernel = ConnTracer::load(&config.kernel())?;
        let ring_fd = kernel.closed_fd();
        let shared = Arc::new(Shared {
            kernel,
            state,
            filters: config.filters.clone(),
            ports: config.state.ephemeral_ports,
            counters: Counters::default(),
            enrich: Enrichers::start(&config.enrich),
            sources: Sources::start(&config.dns, &config.http),
            tls: Tls::new(&config.tls),
            netns: Mutex::new(std::collections::HashSet::new()),
            flush: Mutex::new(Vec::new()),
        });
        let consumer_shared = Arc::clone(&shared);
        let consumer = Consumer::start("tracer-closed", ring_fd, CONSUMER_IDLE_MS, move || {
            consumer_shared.flush_closed();
        })?;
        // Drained continuously so a burst between two client calls does not fill the ring;
        // each call drains what is left before it takes the DNS stats.
        let packet_consumer = match shared.kernel.packets() {
            Some(ring) => {
                let packet_shared = Arc::clone(&shared);
                Some(Consumer::start(
                    "tracer-packets",
                    ring.fd(),
                    CONSUMER_IDLE_MS,
                    move || packet_shared.drain_packets(),
                )?)
            }
            None => None,
        };
        // The TLS file registry's thread: wakes on the exec watch's ring (a process started)
        // and every `tls.refresh` (the full scan).
        let tls_refresher = match shared.kernel.tls_exec_fd() {
            Some(exec_fd) if shared.kernel.tls_planned() => {
                shared.tls.refresh(&shared.kernel);
                shared.tls.log();
                let period =
                    i32::try_from(shared.tls.config().refresh.as_millis()).unwrap_or(i32::MAX);
                let tls_shared = Arc::clone(&shared);
                Some(Consumer::start("tracer-tls", exec_fd, period, move || {
                    tls_shared.tls.wake(&tls_shared.kernel);
                })?)
            }
            _ => None,
        };
        tracing::info!(
            backend = %shared.kernel.plan().backend,
            reason = %shared.kernel.plan().reason,
            "tracer started"
        );
        Ok(Self {
            consumer: Some(consumer),
            packet_consumer,
            tls_refresher,
            shared,
            expiry: config.expiry,
            reads: Mutex::new(ReadBuffers::default()),
            started: Instant::now(),
            last_timings: Mutex::new(CallTimings::default()),
        })
    }

    /// The attach backend in use.
    pub fn backend(&self) -> Backend {
        self.shared.kernel.plan().backend
    }

    /// The backend, the programs attached and why this backend was chosen.
    pub fn plan(&self) -> &Plan {
        self.shared.kernel.plan()
    }

    /// The TLS file registry (its counters and `log`), for tests and tools.
    pub fn tls(&self) -> &Tls {
        &self.shared.tls
    }

    /// Runs one refresh of the TLS file registry now (it also runs every `tls.refresh`).
    pub fn refresh_tls(&self) {
        if self.shared.kernel.tls_planned() {
            self.shared.tls.refresh(&self.shared.kernel);
        }
    }

    /// How long the tracer has been running.
    pub fn uptime(&self) -> std::time::Duration {
        self.started.elapsed()
    }

    /// Registers a client: from now on it receives every connection that closes. A client that
    /// calls [`Tracer::get_active_connections`] without registering is registered by that call.
    pub fn register_client(&self, client_id: &str) -> Result<()> {
        let id = ClientId::new(client_id)?;
        self.shared
            .state
            .register_client(&id, expiry::monotonic_now_ns())?;
        Ok(())
    }

    /// What happened since this client's previous call: every connection that moved (with its
    /// delta in `last`), every connection that closed (once), and telemetry deltas.
    ///
    /// The kernel map is read first, then the closes are drained: every connection missing from
    /// the map read has closed before it, so its close is among those drained in this call
    /// (drained first, a close between the drain and the read would be in neither, and the
    /// client's snapshot would forget the connection before its close arrived).
    pub fn get_active_connections(&self, client_id: &str) -> Result<Connections> {
        let id = ClientId::new(client_id)?;
        let shared = &*self.shared;
        let now = expiry::monotonic_now_ns();
        let mut clock = StageClock::start();
        let mut reads = lock(&self.reads);
        let reads = &mut *reads;
        // Read open (with the read-time TCP refresh), then flush closed: see above.
        let read = self.read_open(reads)?;
        clock.lap(|t| &mut t.map_read);
        shared.flush_closed();
        clock.lap(|t| &mut t.flush);
        // Expire, hold back incomplete identities, filter, decode.
        let mut active = self.sort_entries(reads, now)?;
        // What aggregation needs: NAT, source containers.
        shared.enrich.attach_open(&mut active);
        clock.lap(|t| &mut t.enrich);
        // Sources drained per call: every packet captured so far, then the DNS stats since the
        // previous call (queries unanswered past the timeout included) and the HTTP stats (empty
        // until the kernel side emits transactions into a drained ring).
        shared.drain_packets();
        let dns = shared.sources.take_dns(now);
        let usm = shared.sources.take_http(now);
        clock.lap(|t| &mut t.sources);
        let totals = self.counters()?;
        // Merge, intra-host, aggregate; telemetry as this client's deltas.
        let delta = shared
            .state
            .get_delta(&id, now, active, dns, usm, &totals)?;
        shared.state.remove_expired_clients(now);
        clock.lap(|t| &mut t.pipeline);
        let mut connections = Connections::from_delta(delta);
        // TLS connections of processes that map no hooked TLS library: not hookable, counted.
        if shared.kernel.tls_planned() {
            shared.tls.note_tls_owners(
                connections
                    .conns
                    .iter()
                    .filter(|c| c.protocol_stack.encryption != 0)
                    .map(|c| c.tuple.pid),
            );
        }
        // On the result: destination containers (LocalResolver), routes.
        shared.enrich.resolve(&mut connections.conns);
        clock.lap(|t| &mut t.enrich);
        // Reverse DNS for the IPs of what is returned, and only those.
        connections.dns = shared.sources.names_for(&connections.conns, now);
        clock.lap(|t| &mut t.sources);
        let mut timings = clock.timings;
        (timings.entries, timings.batched) = (read.entries, read.batched);
        *lock(&self.last_timings) = timings;
        Ok(connections)
    }

    /// Reads the kernel's open connections (the map, then the UDP socket generations), and
    /// lets the enrichments' event sources catch up for the namespaces seen.
    fn read_open(&self, reads: &mut ReadBuffers) -> Result<crate::kernel::map_reader::ReadStats> {
        let shared = &*self.shared;
        let stats = shared.kernel.read_connections(&mut reads.entries)?;
        bump(
            &shared.counters.map_read_duplicates,
            stats.duplicates as u64,
        );
        // After the map: a flow read above whose socket generation is missing here belongs to a
        // socket that closed in between.
        shared.kernel.udp_socket_gens(&mut reads.udp_gens)?;
        let mut netns = lock(&shared.netns);
        netns.clear();
        netns.extend(reads.entries.iter().map(|(_, s)| s.tuple.netns));
        shared.enrich.sync(&netns);
        Ok(stats)
    }

    /// Where the time of the most recent [`Tracer::get_active_connections`] call went.
    pub fn last_call_timings(&self) -> CallTimings {
        *lock(&self.last_timings)
    }

    /// Sorts the map's entries: flows whose UDP socket is gone and idle flows that expired are
    /// ended (stored as closed for every client), entries whose identity is not final are held
    /// back, the rest are decoded as active unless a filter excludes them.
    fn sort_entries(
        &self,
        reads: &mut ReadBuffers,
        now: u64,
    ) -> Result<Vec<crate::model::ConnectionStats>> {
        let shared = &*self.shared;
        let mut sorted = Sorted {
            active: Vec::with_capacity(reads.entries.len()),
            held_back: 0,
            filtered: 0,
        };
        reads.expired.clear();
        reads.socket_gone.clear();
        for (key, raw) in &reads.entries {
            if flow_socket_gone(key, &reads.udp_gens) {
                reads.socket_gone.push(ClosedConn {
                    key: *key,
                    stats: *raw,
                });
                continue;
            }
            if self.expiry.expired(raw, now, expiry::process_alive) {
                reads.expired.push(ClosedConn {
                    key: *key,
                    stats: *raw,
                });
                continue;
            }
            if !decode::identity_complete(raw) {
                sorted.held_back += 1;
                continue;
            }
            let conn = decode::connection(raw, &shared.ports, false);
            if shared.filters.excludes(&conn.tuple) {
                sorted.filtered += 1;
                continue;
            }
            sorted.active.push(conn);
        }
        self.end_connections(&mut reads.expired, FLAG_EXPIRED)?;
        self.end_connections(&mut reads.socket_gone, FLAG_CLOSED_BY_SWEEP)?;
        let c = &shared.counters;
        bump(&c.active_filtered, sorted.filtered);
        bump(&c.active_held_back, sorted.held_back);
        Ok(sorted.active)
    }

    /// Ends `records` from userspace (see [`ConnTracer::end_connections`]) and stores the ends
    /// this call owns like any close, so they reach every client once, marked with `flag`.
    fn end_connections(&self, records: &mut Vec<ClosedConn>, flag: u8) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let shared = &*self.shared;
        shared.kernel.end_connections(records, flag)?;
        let c = &shared.counters;
        for record in records.iter() {
            let counter: &AtomicU64 = if flag == FLAG_CLOSED_BY_SWEEP {
                &c.udp_flows_socket_gone
            } else if record.stats.tuple.protocol == IPPROTO_TCP {
                &c.expired_tcp
            } else {
                &c.expired_udp
            };
            bump(counter, 1);
        }
        // Under the flush lock, as the ring's records: a client call that flushes after this
        // one returns sees these ends stored.
        let _flush = lock(&shared.flush);
        shared.store_closed(records);
        Ok(())
    }

    /// Totals since start of every counter of the kernel side, of the tracer and of the
    /// enrichments, typed (the state pipeline's are in [`Tracer::state_telemetry`]).
    pub fn counters(&self) -> Result<CounterSet> {
        let shared = &*self.shared;
        let mut samples: Vec<Sample> = Vec::with_capacity(64);
        shared.kernel.counters()?.collect(&mut samples);
        shared.counters.collect(&mut samples);
        let refresh = shared.kernel.iter_stats();
        samples.push(Sample::new(TCP_REFRESH_SOCKETS, refresh.sockets_refreshed));
        samples.push(Sample::new(TCP_REFRESH_NETNS_FAILED, refresh.netns_failed));
        samples.push(Sample::new(OWNER_WALKS, refresh.owner_walks));
        samples.push(Sample::new(OWNERS_NAMED, refresh.owners_named));
        samples.push(Sample::new(OWNER_WALKS_FAILED, refresh.owner_walks_failed));
        samples.push(Sample::new(
            CLOSED_DISCARDED_WITHOUT_CLIENTS,
            shared.state.closed_discarded_without_clients(),
        ));
        shared.enrich.collect(&mut samples);
        shared.sources.collect(&mut samples);
        shared.tls.collect(&mut samples);
        Ok(CounterSet(samples))
    }

    /// The state pipeline's telemetry totals since start.
    pub fn state_telemetry(&self) -> crate::model::StateTelemetry {
        self.shared.state.telemetry()
    }

    /// Number of registered clients.
    pub fn client_count(&self) -> usize {
        self.shared.state.client_count()
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        // Stop and join the consumer first: it holds a reference to the kernel side.
        drop(self.consumer.take());
        drop(self.packet_consumer.take());
        if let Some(refresher) = self.tls_refresher.take() {
            drop(refresher);
            self.shared.tls.clear(&self.shared.kernel);
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
