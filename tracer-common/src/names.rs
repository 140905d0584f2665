//! Names of the programs, maps and globals in the eBPF object, used by both sides.

/// Tracepoint program on `sock:inet_sock_set_state` recording TCP state transitions.
pub const PROG_TCP_STATE: &str = "nt_tcp_state";
/// Map: socket address -> [`crate::tcp_state::TcpStateRecord`].
pub const MAP_TCP_STATES: &str = "NT_TCP_STATES";
/// Per-CPU array of kernel-side counters, indexed by [`crate::counters::Counter`].
pub const MAP_COUNTERS: &str = "NT_COUNTERS";
/// Global: field offsets of the `sock:inet_sock_set_state` tracepoint record.
pub const GLOBAL_INET_SOCK_SET_STATE: &str = "NT_INET_SOCK_SET_STATE";
/// Map: [`crate::conn::ConnKey`] -> [`crate::conn::ConnStats`], the open connections.
pub const MAP_CONNS: &str = "NT_CONNS";
/// Ring buffer of [`crate::conn::ClosedConn`] events.
pub const MAP_CLOSED: &str = "NT_CLOSED";
/// LRU set of connection keys that did not fit in `NT_CONNS` (so each is counted once).
pub const MAP_UNTRACKED: &str = "NT_UNTRACKED";
/// Global: [`crate::offsets::KernelLayout`].
pub const GLOBAL_LAYOUT: &str = "NT_LAYOUT";
/// Tracepoint backend: `sock:sock_send_length`.
pub const PROG_TP_SEND: &str = "nt_tp_send";
/// Tracepoint backend: `sock:sock_recv_length`.
pub const PROG_TP_RECV: &str = "nt_tp_recv";
/// Tracepoint backend: `sock:inet_sock_set_state`.
pub const PROG_TP_STATE: &str = "nt_tp_state";
/// Tracepoint backend: `tcp:tcp_retransmit_skb`.
pub const PROG_TP_RETRANSMIT: &str = "nt_tp_retrans";
/// All backends: `tcp:tcp_receive_reset` (a refused connect's last chance to show its port).
pub const PROG_TP_RECV_RESET: &str = "nt_tp_rst_in";
// fentry backend (fexit on the function's return, fentry where only the arguments matter). A
// trailing digit is the hooked function's parameter count where its signature changed: the
// variant matching the running kernel is attached.
/// fentry backend: fexit `tcp_sendmsg`.
pub const PROG_FX_TCP_SEND: &str = "nt_fx_tcp_send";
/// fentry backend: fexit `tcp_sendpage` (sendfile/splice to TCP before 6.5).
pub const PROG_FX_TCP_PAGE: &str = "nt_fx_tcp_page";
/// fentry backend: fexit `tcp_recvmsg(sk, msg, len, flags, addr_len)` (5.19+).
pub const PROG_FX_TCP_RECV5: &str = "nt_fx_tcp_rcv5";
/// fentry backend: fexit `tcp_recvmsg(sk, msg, len, nonblock, flags, addr_len)` (before 5.19).
pub const PROG_FX_TCP_RECV6: &str = "nt_fx_tcp_rcv6";
/// fentry backend: fexit `tcp_splice_read` (splice from TCP).
pub const PROG_FX_TCP_SPLICE: &str = "nt_fx_tcp_splc";
/// fentry backend: fexit `udp_sendmsg`.
pub const PROG_FX_UDP_SEND: &str = "nt_fx_udp_send";
/// fentry backend: fexit `udpv6_sendmsg`.
pub const PROG_FX_UDP6_SEND: &str = "nt_fx_udp6_send";
/// fentry backend: fexit `udp_sendpage` (before 6.5).
pub const PROG_FX_UDP_PAGE: &str = "nt_fx_udp_page";
/// fentry backend: fentry `udp_sendpage` (before 6.5), marking the calls `udp_sendmsg` skips.
pub const PROG_FE_UDP_PAGE: &str = "nt_fe_udp_page";
/// fentry backend: fexit `udp_recvmsg` with 5 parameters (5.19+).
pub const PROG_FX_UDP_RECV5: &str = "nt_fx_udp_rcv5";
/// fentry backend: fexit `udp_recvmsg` with 6 parameters (before 5.19).
pub const PROG_FX_UDP_RECV6: &str = "nt_fx_udp_rcv6";
/// fentry backend: fexit `udpv6_recvmsg` with 5 parameters (5.19+).
pub const PROG_FX_UDP6_RECV5: &str = "nt_fx_udp6_rcv5";
/// fentry backend: fexit `udpv6_recvmsg` with 6 parameters (before 5.19).
pub const PROG_FX_UDP6_RECV6: &str = "nt_fx_udp6_rcv6";
/// fentry backend: fentry `udp_destroy_sock`.
pub const PROG_FE_UDP_DESTROY: &str = "nt_fe_udp_dstr";
/// fentry backend: fentry `udpv6_destroy_sock`.
pub const PROG_FE_UDP6_DESTROY: &str = "nt_fe_udp6_dstr";
// kprobe backend: `nt_kp_*` kprobes stash the arguments, `nt_kr_*` kretprobes use them with the
// return value. Digits as above.
/// kprobe backend: kprobe `tcp_sendmsg`.
pub const PROG_KP_TCP_SEND: &str = "nt_kp_tcp_send";
/// kprobe backend: kretprobe `tcp_sendmsg`.
pub const PROG_KR_TCP_SEND: &str = "nt_kr_tcp_send";
/// kprobe backend: kprobe `tcp_sendpage` (before 6.5).
pub const PROG_KP_TCP_PAGE: &str = "nt_kp_tcp_page";
/// kprobe backend: kretprobe `tcp_sendpage` (before 6.5).
pub const PROG_KR_TCP_PAGE: &str = "nt_kr_tcp_page";
/// kprobe backend: kprobe `tcp_recvmsg` with 5 parameters (5.19+).
pub const PROG_KP_TCP_RECV5: &str = "nt_kp_tcp_rcv5";
/// kprobe backend: kprobe `tcp_recvmsg` with 6 parameters (before 5.19).
pub const PROG_KP_TCP_RECV6: &str = "nt_kp_tcp_rcv6";
/// kprobe backend: kretprobe `tcp_recvmsg` (every signature).
pub const PROG_KR_TCP_RECV: &str = "nt_kr_tcp_recv";
/// kprobe backend: kprobe `tcp_splice_read`.
pub const PROG_KP_TCP_SPLICE: &str = "nt_kp_tcp_splc";
/// kprobe backend: kretprobe `tcp_splice_read`.
pub const PROG_KR_TCP_SPLICE: &str = "nt_kr_tcp_splc";
/// kprobe backend: kprobe `udp_sendmsg`.
pub const PROG_KP_UDP_SEND: &str = "nt_kp_udp_send";
/// kprobe backend: kretprobe `udp_sendmsg`.
pub const PROG_KR_UDP_SEND: &str = "nt_kr_udp_send";
/// kprobe backend: kprobe `udpv6_sendmsg`.
pub const PROG_KP_UDP6_SEND: &str = "nt_kp_udp6_send";
/// kprobe backend: kretprobe `udpv6_sendmsg`.
pub const PROG_KR_UDP6_SEND: &str = "nt_kr_udp6_send";
/// kprobe backend: kprobe `udp_sendpage` (before 6.5).
pub const PROG_KP_UDP_PAGE: &str = "nt_kp_udp_page";
/// kprobe backend: kretprobe `udp_sendpage` (before 6.5).
pub const PROG_KR_UDP_PAGE: &str = "nt_kr_udp_page";
/// kprobe backend: kprobe `udp_recvmsg` with 5 parameters (5.19+).
pub const PROG_KP_UDP_RECV5: &str = "nt_kp_udp_rcv5";
/// kprobe backend: kprobe `udp_recvmsg` with 6 parameters (before 5.19).
pub const PROG_KP_UDP_RECV6: &str = "nt_kp_udp_rcv6";
/// kprobe backend: kretprobe `udp_recvmsg` (every signature).
pub const PROG_KR_UDP_RECV: &str = "nt_kr_udp_recv";
/// kprobe backend: kprobe `udpv6_recvmsg` with 5 parameters (5.19+).
pub const PROG_KP_UDP6_RECV5: &str = "nt_kp_udp6_rcv5";
/// kprobe backend: kprobe `udpv6_recvmsg` with 6 parameters (before 5.19).
pub const PROG_KP_UDP6_RECV6: &str = "nt_kp_udp6_rcv6";
/// kprobe backend: kretprobe `udpv6_recvmsg` (every signature).
pub const PROG_KR_UDP6_RECV: &str = "nt_kr_udp6_recv";
/// kprobe backend: kprobe `udp_destroy_sock`.
pub const PROG_KP_UDP_DESTROY: &str = "nt_kp_udp_dstr";
/// kprobe backend: kprobe `udpv6_destroy_sock`.
pub const PROG_KP_UDP6_DESTROY: &str = "nt_kp_udp6_dstr";
/// fentry/kprobe backends: LRU map (pid_tgid, hooked function) -> arguments of in-flight calls.
pub const MAP_PROBE_ARGS: &str = "NT_PROBE_ARGS";
// Tracepoint backend, UDP: cgroup `sock_addr` programs give the peers of unconnected sockets.
/// Tracepoint backend: `cgroup/sendmsg4` on the cgroup v2 root (a send to an IPv4 address).
pub const PROG_UDP_SENDMSG4: &str = "nt_udp_sendmsg4";
/// Tracepoint backend: `cgroup/sendmsg6` (a send to an IPv6 address).
pub const PROG_UDP_SENDMSG6: &str = "nt_udp_sendmsg6";
/// Tracepoint backend: `cgroup/recvmsg4` (a receive asking for the IPv4 source).
pub const PROG_UDP_RECVMSG4: &str = "nt_udp_recvmsg4";
/// Tracepoint backend: `cgroup/recvmsg6` (a receive asking for the IPv6 source).
pub const PROG_UDP_RECVMSG6: &str = "nt_udp_recvmsg6";
/// Every backend: cgroup `sock_ops` on the cgroup v2 root, the close of TCP sockets that no
/// recursion guard can skip.
pub const PROG_SOCK_OPS: &str = "nt_sock_ops";
/// Every backend, Linux 5.9+: the `iter/tcp` iterator that refreshes the tracked TCP connections'
/// copied counters at read time.
pub const PROG_ITER_TCP: &str = "nt_iter_tcp";
/// Every backend, Linux 5.8+: the `iter/task_file` iterator that names the owners of accepted
/// connections that did no I/O yet, at read time.
pub const PROG_ITER_TASK_FILE: &str = "nt_iter_files";
/// Every backend, Linux 5.9+: the `iter/tcp` iterator run once at start, which tracks the TCP
/// connections that existed before the tracer started.
pub const PROG_ITER_TCP_SEED: &str = "nt_seed_tcp";
/// Every backend, Linux 5.9+: the `iter/udp` iterator run once at start, which tracks the
/// connected UDP sockets that existed before the tracer started.
pub const PROG_ITER_UDP_SEED: &str = "nt_seed_udp";
/// Tracepoint backend: cgroup `sock_release` on the cgroup v2 root, closing UDP sockets.
pub const PROG_UDP_RELEASE: &str = "nt_udp_release";
/// Tracepoint backend: LRU map pid_tgid -> the peer a `sock_addr` program hands to the length
/// event of the same call.
pub const MAP_UDP_HANDOFF: &str = "NT_UDP_HANDOFF";
/// Hash map {socket, slot} -> peer: the peer flows of each unconnected UDP socket, closed with it.
pub const MAP_UDP_PEERS: &str = "NT_UDP_PEERS";
/// Hash map socket -> generation of each unconnected UDP socket with peer flows (see
/// `ConnKey::socket_gen`).
pub const MAP_UDP_SOCKS: &str = "NT_UDP_SOCKS";
/// Packet capture: `cgroup_skb/ingress` on the cgroup v2 root.
pub const PROG_PACKET_INGRESS: &str = "nt_packet_in";
/// Packet capture: `cgroup_skb/egress` on the cgroup v2 root.
pub const PROG_PACKET_EGRESS: &str = "nt_packet_out";
/// Ring buffer of captured packets: [`crate::packet::PacketHeader`] then the payload.
pub const MAP_PACKETS: &str = "NT_PACKETS";
/// HTTP parser: socket storage with each TCP socket's classification (its protocol stack,
/// HTTP or not) and the sequence numbers of its last request and response starts.
pub const MAP_HTTP_SOCKS: &str = "NT_HTTP_SOCKS";
/// Protocol classification: per-CPU array of one `classify::ClassifyBuf`, the payload bytes
/// handed to the classifier (a map value: kernels before 5.12 refuse its reads on the stack).
pub const MAP_CLASSIFY_BUF: &str = "NT_CLASSIFY_BUF";
/// HTTP parser: socket storage with the request in flight of each HTTP socket, the
/// [`crate::http::HttpTransaction`] it becomes.
pub const MAP_HTTP_INFLIGHT: &str = "NT_HTTP_INFLIGHT";
/// Global: [`crate::packet::CaptureConfig`].
pub const GLOBAL_CAPTURE_CONFIG: &str = "NT_CAPTURE_CONFIG";
/// The capture benchmark's floor: an empty `cgroup_skb/ingress` program (returns 1) of the
/// benchmark-only object (`bench-floor`), never attached by the tracer. Named within the
/// kernel's 15 characters, so that it stays apart from its egress twin in `bpftool` and in the
/// run-time statistics.
pub const PROG_PACKET_FLOOR_INGRESS: &str = "nt_floor_in";
/// The capture benchmark's floor: the empty `cgroup_skb/egress` twin.
pub const PROG_PACKET_FLOOR_EGRESS: &str = "nt_floor_out";
/// The overhead benchmark's tracepoint floor (`bench-floor`): an empty raw tracepoint on
/// `sock:sock_send_length`.
pub const PROG_FLOOR_TP_SEND: &str = "nt_fl_send";
/// The tracepoint floor: an empty raw tracepoint on `sock:sock_recv_length`.
pub const PROG_FLOOR_TP_RECV: &str = "nt_fl_recv";
/// The tracepoint floor: empty `cgroup/sendmsg4`, `sendmsg6`, `recvmsg4`, `recvmsg6` programs
/// (return 1: the call goes on), the hooks of the tracepoint backend's UDP peers.
pub const PROG_FLOOR_SOCK_ADDR: [&str; 4] = [
    "nt_fl_sendmsg4",
    "nt_fl_sendmsg6",
    "nt_fl_recvmsg4",
    "nt_fl_recvmsg6",
];
/// The TLS benchmark's floor (`bench-floor`): an empty uprobe, attached at the entry of each
/// hooked OpenSSL call.
pub const PROG_FLOOR_UPROBE: &str = "nt_fl_uprobe";
/// The TLS floor: an empty uretprobe, attached at the return of each hooked call.
pub const PROG_FLOOR_URETPROBE: &str = "nt_fl_uretprobe";

/// TLS: `SSL_set_fd` uprobe (ties an OpenSSL object to its socket).
pub const PROG_TLS_SSL_SET_FD: &str = "nt_ssl_set_fd";
/// TLS: `gnutls_transport_set_int2` uprobe (ties a GnuTLS session to its socket).
pub const PROG_TLS_GNUTLS_SET_INT: &str = "nt_gnutls_set_int";
/// TLS: uprobe on the entry of `SSL_write` and `gnutls_record_send`.
pub const PROG_TLS_WRITE: &str = "nt_tls_write";
/// TLS: uprobe on the entry of `SSL_read` and `gnutls_record_recv`.
pub const PROG_TLS_READ: &str = "nt_tls_read";
/// TLS: uprobe on the entry of `SSL_read_ex`.
pub const PROG_TLS_READ_EX: &str = "nt_tls_read_ex";
/// TLS: uprobe on the entry of `SSL_write_ex`.
pub const PROG_TLS_WRITE_EX: &str = "nt_tls_write_ex";
/// TLS: uretprobe on the read and write calls.
pub const PROG_TLS_RET: &str = "nt_tls_ret";
/// TLS: uprobe on `SSL_shutdown` and `gnutls_bye`.
pub const PROG_TLS_SHUTDOWN: &str = "nt_tls_shutdown";
/// TLS: the exec watch of the file registry (raw tracepoint `sched_process_exec`).
pub const PROG_TLS_EXEC: &str = "nt_tls_exec";
/// TLS: the ring of started processes (the exec watch's).
pub const MAP_TLS_EXEC: &str = "NT_TLS_EXEC";
/// TLS objects tied to their sockets.
pub const MAP_TLS_CONNS: &str = "NT_TLS_CONNS";
/// TLS read calls' arguments, entry to return.
pub const MAP_TLS_ARGS: &str = "NT_TLS_ARGS";
