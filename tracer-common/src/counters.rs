//! Kernel-side counters: one slot per reason an event was not recorded, so nothing is lost silently.

macro_rules! counters {
    (@loss Loss) => { true };
    (@loss Activity) => { false };
    ($($(#[doc = $doc:literal])* $variant:ident = $index:literal => $name:literal : $kind:ident,)*) => {
        /// Index into the per-CPU counter array `NT_COUNTERS`.
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Counter {
            $($(#[doc = $doc])* $variant = $index,)*
        }

        impl Counter {
            /// Every counter, in index order.
            pub const ALL: &'static [Counter] = &[$(Counter::$variant,)*];

            /// A stable name for reports.
            pub const fn name(self) -> &'static str {
                match self {
                    $(Counter::$variant => $name,)*
                }
            }

            /// Whether a non-zero value means something was not recorded (a loss), rather than
            /// work done (an activity).
            pub const fn is_loss(self) -> bool {
                match self {
                    $(Counter::$variant => counters!(@loss $kind),)*
                }
            }

            /// What the counter counts (its doc comment).
            pub const fn doc(self) -> &'static str {
                match self {
                    $(Counter::$variant => concat!($($doc),*).trim_ascii(),)*
                }
            }
        }
    };
}

counters! {
    /// The TCP state map (issue-2 probe) was full: a socket's transitions were not recorded.
    TcpStateMapFull = 0 => "tcp_state_map_full" : Loss,
    /// Reading a tracepoint record failed (a bad offset from the format file).
    TracepointReadFailed = 1 => "tracepoint_read_failed" : Loss,
    /// A socket recorded more transitions than its record holds.
    TcpStateOverflow = 2 => "tcp_state_overflow" : Loss,
    /// A connection did not fit in the connection map (counted once per connection).
    ConnMapFull = 3 => "conn_map_full" : Loss,
    /// A closed-connection event could not be reserved in the ring buffer: the event was lost
    /// (the connection's entry is still removed).
    RingBufFull = 4 => "ringbuf_full" : Loss,
    /// Closed-connection events submitted to the ring buffer.
    ClosedEmitted = 5 => "closed_emitted" : Activity,
    /// A kernel struct read failed (bad offset or unmapped memory): the event was skipped.
    KernelReadFailed = 6 => "kernel_read_failed" : Loss,
    /// A connection closed before any process-context event told its pid.
    MissingPid = 7 => "missing_pid" : Loss,
    /// An event's socket had no usable tuple (unknown family, or zero addresses).
    MissingTuple = 8 => "missing_tuple" : Loss,
    /// A failed TCP connection's errno was not one of the five reported codes.
    UnknownFailure = 9 => "unknown_failure" : Loss,
    /// An unconnected UDP socket talked to more peers than its peer list holds; flows beyond it
    /// are closed by userspace at its next read after the socket closed (not lost: an activity
    /// count).
    UdpPeersOverflow = 10 => "udp_peers_overflow" : Activity,
    /// An unconnected UDP send or receive whose peer could not be determined: on the tracepoint
    /// backend, a receive that did not ask for the source address (`recv()`, `read()`, `recvmsg`
    /// with a NULL `msg_name`); on the others, one whose `msghdr` named none.
    UdpMissingPeer = 11 => "udp_missing_peer" : Loss,
    /// kprobe backend: a kprobe could not stash its arguments for the kretprobe (the stash map
    /// refused the insert): that call's bytes are lost.
    ProbeArgsFull = 12 => "probe_args_full" : Loss,
    /// kprobe backend: a kretprobe found no stashed arguments (evicted from the LRU stash by
    /// other in-flight calls): that call's bytes are lost.
    ProbeArgsMissing = 13 => "probe_args_missing" : Loss,
    /// A new peer flow of an unconnected UDP socket could not be listed because `NT_UDP_PEERS`
    /// was full: the socket's close does not close it, userspace expiry does.
    UdpPeersMapFull = 14 => "udp_peers_map_full" : Loss,
    /// tracepoint backend: a cgroup `sendmsg`/`recvmsg` program found its thread's hand-off slot
    /// (`NT_UDP_HANDOFF`, indexed by thread id modulo its size) holding the peer of another
    /// thread's datagram still in flight, and took the slot: that other datagram counts as
    /// `udp_missing_peer`.
    UdpHandoffCollision = 15 => "udp_handoff_collision" : Loss,
    /// A peer flow was created on an unconnected UDP socket bound to the wildcard address: its
    /// local address is reported as 0.0.0.0 / :: (the source address is chosen per datagram).
    UdpWildcardLocal = 16 => "udp_wildcard_local" : Activity,
    /// A zero-length UDP datagram was sent or received successfully: not counted as a packet
    /// (the connection table counts a datagram only with its bytes).
    UdpEmptyDatagram = 17 => "udp_empty_datagram" : Activity,
    /// kprobe backend: a call's kretprobe never ran (more calls of the function were in flight
    /// than the kernel's return-probe instances for it, `maxactive`, e.g. blocked receives):
    /// that call's bytes are lost. Counted when the same thread calls the function again.
    ProbeReturnMissed = 18 => "probe_return_missed" : Loss,
    /// The kernel refused to turn on `sock_ops` state callbacks for a TCP socket: its close
    /// relies on the `inet_sock_set_state` tracepoint alone, which the kernel may skip.
    SockOpsFlagsRefused = 19 => "sock_ops_flags_refused" : Loss,
    /// An accepted TCP socket closed before its handshake completed (reset in SYN_RECV, or the
    /// loser of two CPUs completing the same handshake): not reported as a connection.
    EmbryonicClosed = 20 => "tcp_embryonic_closed" : Activity,
    /// A TCP send or receive on an untracked socket that moved no bytes, or whose socket was not
    /// in a data state (closed after its close was emitted, listening, connecting): no entry was
    /// created, so no second identity of an ended connection appears.
    TcpIoNotTracked = 21 => "tcp_io_not_tracked" : Activity,
    /// An unconnected UDP socket got no generation because `NT_UDP_SOCKS` was full: its flows
    /// are ended by expiry, not when the socket closes.
    UdpSocksMapFull = 22 => "udp_socks_map_full" : Loss,
    /// A kernel close found that userspace had already ended the flow (expiry or sweep) and
    /// discarded its own record: each flow is ended exactly once, by whoever removed it.
    CloseAlreadyEnded = 23 => "close_already_ended" : Activity,
    /// Packet capture: a captured packet could not be written to `NT_PACKETS` (ring full): the
    /// packet was lost to the DNS snooper.
    PacketRingFull = 24 => "packet_ring_full" : Loss,
    /// Packet capture: a DNS payload longer than the snap length: only its first bytes were
    /// copied (answers beyond them are not seen; a truncated TCP segment breaks its stream).
    PacketTruncated = 25 => "packet_truncated" : Loss,
    /// Packet capture: a packet on a DNS port that carried no DNS payload (a TCP segment without
    /// data, a UDP datagram shorter than a DNS header, an IPv6 packet with extension headers),
    /// skipped. Packets on other ports are rejected on their first bytes and not counted.
    PacketNotDns = 26 => "packet_not_dns" : Activity,
    /// Packet capture: DNS packets copied to `NT_PACKETS`.
    PacketCaptured = 27 => "packet_captured" : Activity,
    /// HTTP: a finished transaction could not be written to its ring (full): the transaction
    /// is lost to the HTTP stats.
    HttpBatchFull = 28 => "http_batch_full" : Loss,
    /// HTTP: a request line longer than the bytes the parser reads: its path was cut (the record
    /// is flagged `HTTP_FLAG_PATH_TRUNCATED` and still counts, under the path's prefix).
    HttpFragmentTruncated = 29 => "http_fragment_truncated" : Activity,
    /// HTTP: a response on a connection with no request in flight (the request was missed, or
    /// the connection predates the tracer): that transaction is not recorded.
    HttpResponseWithoutRequest = 30 => "http_response_without_request" : Loss,
    /// HTTP: finished transactions written to the ring.
    HttpTransactions = 31 => "http_transactions" : Activity,
    /// HTTP: a request whose response cannot be paired with it because requests overlapped on
    /// its connection (HTTP/1.1 pipelining: a request sent before the previous one was
    /// answered). The kernel keeps one request in flight per connection, as Datadog does, but
    /// drops what it cannot pair instead of pairing it wrongly; counted once per request.
    HttpPipelined = 32 => "http_pipelined" : Loss,
    /// HTTP: a request finished without a response recognized: the next request came after
    /// response bytes that held no status line at a segment start, or the server closed or
    /// reset the connection first. Not recorded.
    HttpRequestUnanswered = 33 => "http_request_unanswered" : Loss,
    /// HTTP: a segment starting a request or a response at the same sequence number as the
    /// last one seen in its direction (a retransmission), ignored.
    HttpRetransmission = 34 => "http_retransmission" : Activity,
    /// HTTP: the kernel could not allocate a socket's HTTP state (socket storage): the
    /// socket's transactions are not recorded.
    HttpStorageFailed = 35 => "http_storage_failed" : Loss,
    /// Protocols: a TCP socket's first payloads were classified (`tracer_common::classify`),
    /// counted once per observing socket (a local connection's two ends count twice), and again
    /// when an HTTP/2 socket is found to carry gRPC.
    ProtocolClassified = 36 => "protocol_classified" : Activity,
    /// Protocols: a socket's protocol stack was written into its connection entry.
    ProtocolStackWritten = 37 => "protocol_stack_written" : Activity,
    /// Protocols: a classified socket had no connection entry yet (an accepted socket whose
    /// entry appears later): the write is retried on its next segments (counted per retry).
    ProtocolEntryMissing = 38 => "protocol_entry_missing" : Activity,
    /// Protocols: a classified socket still had no connection entry after `MAX_WRITE_TRIES`
    /// segments (the table was full, or the socket is not traced): its connection is reported
    /// without its protocol stack.
    ProtocolStackUnwritten = 39 => "protocol_stack_unwritten" : Loss,
    /// TLS: a TLS object was tied to its socket (`SSL_set_fd`, `gnutls_transport_set_int2`).
    TlsTied = 40 => "tls_tied" : Activity,
    /// TLS: a TLS object's descriptor could not be resolved to a socket, or the table of tied
    /// objects refused it: its calls are not parsed.
    TlsTieFailed = 41 => "tls_tie_failed" : Loss,
    /// TLS: a read or write call on a TLS object that is not tied to a socket (set up before the
    /// tracer, or through a custom BIO such as curl's): its plaintext is not parsed.
    TlsUntied = 42 => "tls_untied" : Loss,
    /// TLS: the plaintext (or a read call's arguments) could not be read from user memory.
    TlsReadFailed = 43 => "tls_read_failed" : Loss,
    /// TLS: a request on a tied TLS object whose socket has no connection entry (the table was
    /// full, or the connection is not traced): not recorded.
    TlsNoConnection = 44 => "tls_no_connection" : Loss,
    /// A new connection entry was to be built while every per-CPU scratch slot was in use by
    /// programs nested on the same CPU (more than `conn::SCRATCH_DEPTH` deep): not created.
    ScratchNested = 45 => "scratch_nested" : Loss,
    /// TLS: a TLS object that names no descriptor (curl's BIO, or set up before the tracer) was
    /// tied to the socket its thread sent or received on inside one of its read or write calls.
    TlsTiedBySocket = 46 => "tls_tied_by_socket" : Activity,
}

/// Number of counters (size of the per-CPU array).
pub const COUNTER_COUNT: u32 = 47;

const _: () = assert!(Counter::ALL.len() == COUNTER_COUNT as usize);
