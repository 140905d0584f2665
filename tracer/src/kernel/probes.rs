//! The probe table as data: every program with its hook, the backends that use it, whether it
//! is optional, and the kernels it runs on. [`super::plan`] picks from it; the capability probes
//! ask which hooks exist. It depends on neither.

use std::fmt;

use tracer_common::names;

use super::version::KernelVersion;

/// How the tracer attaches to the kernel. All three give the same counters and events.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Backend {
    /// fentry/fexit on kernel functions through BTF trampolines (cheapest per call; 5.5+ with
    /// BTF, and allowed by the kernel's lockdown/LSM policy).
    Fentry,
    /// kprobe/kretprobe (5.8+ here; needs CONFIG_KPROBES).
    Kprobe,
    /// Stable tracepoints only (6.3+ for `sock:sock_send_length`): the way to trace on kernels
    /// where kprobes are compiled out and fentry is refused.
    Tracepoint,
}

impl Backend {
    /// Preference order for [`BackendChoice::Auto`]: cheapest hooks first.
    pub const PREFERENCE: [Backend; 3] = [Backend::Fentry, Backend::Kprobe, Backend::Tracepoint];

    /// Lower-case name, as used in reports and `TRACER_TEST_BACKEND`.
    pub const fn name(self) -> &'static str {
        match self {
            Backend::Fentry => "fentry",
            Backend::Kprobe => "kprobe",
            Backend::Tracepoint => "tracepoint",
        }
    }

    /// Parses a [`Backend::name`].
    pub fn from_name(name: &str) -> Option<Self> {
        Self::PREFERENCE.into_iter().find(|b| b.name() == name)
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which backend the caller wants.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BackendChoice {
    /// The best one the kernel supports ([`Backend::PREFERENCE`]).
    #[default]
    Auto,
    /// Exactly this one, or an error saying why it cannot load.
    Force(Backend),
}

/// Where a program attaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    /// A tracepoint `category:name`, attached classic or raw depending on the program's type in
    /// the object (raw where the arguments are all the program needs).
    Tracepoint {
        category: &'static str,
        name: &'static str,
    },
    /// fentry on a kernel function.
    Fentry { function: &'static str },
    /// fexit on a kernel function.
    Fexit { function: &'static str },
    /// kprobe on a kernel function.
    Kprobe { function: &'static str },
    /// kretprobe on a kernel function.
    Kretprobe { function: &'static str },
    /// A `BPF_PROG_TYPE_CGROUP_SOCK` program on `BPF_CGROUP_INET_SOCK_RELEASE` (5.9+), attached
    /// to the cgroup v2 root so that it runs for every socket (needs a cgroup v2 mount).
    CgroupSockRelease,
    /// A `BPF_PROG_TYPE_SOCK_OPS` program attached to the cgroup v2 root (5.10+ for
    /// `bpf_sock_ops.sk`). Optional: without a cgroup v2 mount the plan leaves it out and says so.
    CgroupSockOps,
    /// A BPF iterator over the TCP sockets of a network namespace (`iter/tcp`, 5.9+), run at read
    /// time rather than attached to an event. Optional: below 5.9, or when the kernel refuses it,
    /// the tracer runs without it and says so (TCP packets, retransmits and RTT are then as of
    /// each connection's latest application I/O).
    IterTcp,
    /// A BPF iterator over every open file of every task (`iter/task_file`, 5.8+), run at read
    /// time when the map holds accepted TCP connections without an owner. Optional like
    /// [`Hook::IterTcp`]: without it, an accepted connection is named by its first send or
    /// receive, and held back from results until then.
    IterTaskFile,
    /// The start-up walk over the TCP sockets of every network namespace (`iter/tcp`, 5.9+),
    /// run once when the tracer starts: tracks the connections that existed before it. Optional
    /// like [`Hook::IterTcp`]: without it, such a connection is tracked from its first send or
    /// receive (direction unknown, no `before_start`), and one that moves no data is not seen.
    IterTcpSeed,
    /// The same over the UDP sockets (`iter/udp`, 5.9+): the connected ones.
    IterUdpSeed,
    /// A `BPF_PROG_TYPE_CGROUP_SKB` program on `BPF_CGROUP_INET_INGRESS` of the cgroup v2 root:
    /// every packet a socket of any process receives (the packet capture).
    CgroupSkbIngress,
    /// The same on `BPF_CGROUP_INET_EGRESS`: every packet a socket sends.
    CgroupSkbEgress,
    /// A `BPF_PROG_TYPE_CGROUP_SOCK_ADDR` program on the cgroup v2 root, run by the UDP send or
    /// receive functions with the peer's address (the attach type comes from the object's
    /// section name, `cgroup/<name>`).
    CgroupSockAddr(SockAddrHook),
    /// A uprobe on functions of TLS library files ([`TlsLibrary::hooks`]): loaded with the plan, attached
    /// per file by the file registry (`sources/tls`), at [`TlsLibrary::hooks`].
    Uprobe,
    /// A uretprobe, likewise.
    Uretprobe,
}

/// The `sock_addr` attach points the tracer uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SockAddrHook {
    /// `BPF_CGROUP_UDP4_SENDMSG` (4.18): `udp_sendmsg` with a destination address.
    UdpSendmsg4,
    /// `BPF_CGROUP_UDP6_SENDMSG` (4.18): `udpv6_sendmsg` with a destination address.
    UdpSendmsg6,
    /// `BPF_CGROUP_UDP4_RECVMSG` (5.2): `udp_recvmsg` asked for the source address.
    UdpRecvmsg4,
    /// `BPF_CGROUP_UDP6_RECVMSG` (5.2): `udpv6_recvmsg` asked for the source address.
    UdpRecvmsg6,
}

impl SockAddrHook {
    /// The section name, `cgroup/<attach>`.
    pub const fn section(self) -> &'static str {
        match self {
            SockAddrHook::UdpSendmsg4 => "cgroup/sendmsg4",
            SockAddrHook::UdpSendmsg6 => "cgroup/sendmsg6",
            SockAddrHook::UdpRecvmsg4 => "cgroup/recvmsg4",
            SockAddrHook::UdpRecvmsg6 => "cgroup/recvmsg6",
        }
    }
}

/// One program of the object: where it attaches, for which backends, from which kernel on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeSpec {
    /// The program's name in the eBPF object.
    pub program: &'static str,
    pub hook: Hook,
    /// The backends that attach this program.
    pub backends: &'static [Backend],
    /// The first kernel with the hook (or its current signature).
    pub min_kernel: KernelVersion,
    /// The last kernel with the hook, when a later one removed or changed it.
    pub max_kernel: Option<KernelVersion>,
}

const ALL: &[Backend] = &[Backend::Fentry, Backend::Kprobe, Backend::Tracepoint];
const TRACEPOINT: &[Backend] = &[Backend::Tracepoint];

/// Every connection-tracking program. Programs shared by all backends use hooks that exist on
/// every supported kernel and fire in the same places (state changes and retransmits), so only
/// the send/receive hooks differ between backends.
pub const PROBES: &[ProbeSpec] = &[
    // First, so that sockets opened while the rest attaches already ask for state callbacks:
    // the TCP close that no recursion guard can skip (tracer-ebpf/src/backend/sock_ops.rs).
    ProbeSpec {
        program: tracer_common::names::PROG_SOCK_OPS,
        hook: Hook::CgroupSockOps,
        backends: ALL,
        min_kernel: KernelVersion::new(5, 10, 0),
        max_kernel: None,
    },
    // Run at read time, not on events: refreshes the tracked TCP connections' copied counters
    // (tracer/src/kernel/iter.rs).
    ProbeSpec {
        program: tracer_common::names::PROG_ITER_TCP,
        hook: Hook::IterTcp,
        backends: ALL,
        min_kernel: ITER_MIN_KERNEL,
        max_kernel: None,
    },
    ProbeSpec {
        program: tracer_common::names::PROG_TP_STATE,
        hook: Hook::Tracepoint {
            category: "sock",
            name: "inet_sock_set_state",
        },
        backends: ALL,
        min_kernel: KernelVersion::new(4, 16, 0),
        max_kernel: None,
    },
    // Run at read time, not on events: the owners of accepted connections that did no I/O
    // yet (the first send or receive names the others, in process context), from the
    // descriptors of every task (tracer/src/kernel/iter.rs). No syscall tracepoint: one would
    // put every syscall of every process on the kernel's slower traced path.
    ProbeSpec {
        program: tracer_common::names::PROG_ITER_TASK_FILE,
        hook: Hook::IterTaskFile,
        backends: ALL,
        min_kernel: TASK_FILE_ITER_MIN_KERNEL,
        max_kernel: None,
    },
    // Run once at start, after every hook is attached: the connections that existed before
    // the tracer started (tracer/src/kernel/iter.rs, `Seeder`).
    ProbeSpec {
        program: tracer_common::names::PROG_ITER_TCP_SEED,
        hook: Hook::IterTcpSeed,
        backends: ALL,
        min_kernel: ITER_MIN_KERNEL,
        max_kernel: None,
    },
    ProbeSpec {
        program: tracer_common::names::PROG_ITER_UDP_SEED,
        hook: Hook::IterUdpSeed,
        backends: ALL,
        min_kernel: ITER_MIN_KERNEL,
        max_kernel: None,
    },
    ProbeSpec {
        program: tracer_common::names::PROG_TP_RECV_RESET,
        hook: Hook::Tracepoint {
            category: "tcp",
            name: "tcp_receive_reset",
        },
        backends: ALL,
        min_kernel: KernelVersion::new(4, 16, 0),
        max_kernel: None,
    },
    ProbeSpec {
        program: tracer_common::names::PROG_TP_RETRANSMIT,
        hook: Hook::Tracepoint {
            category: "tcp",
            name: "tcp_retransmit_skb",
        },
        backends: ALL,
        min_kernel: KernelVersion::new(4, 16, 0),
        max_kernel: None,
    },
    ProbeSpec {
        program: tracer_common::names::PROG_TP_SEND,
        hook: Hook::Tracepoint {
            category: "sock",
            name: "sock_send_length",
        },
        backends: TRACEPOINT,
        min_kernel: KernelVersion::new(6, 3, 0),
        max_kernel: None,
    },
    ProbeSpec {
        program: tracer_common::names::PROG_TP_RECV,
        hook: Hook::Tracepoint {
            category: "sock",
            name: "sock_recv_length",
        },
        backends: TRACEPOINT,
        min_kernel: KernelVersion::new(6, 3, 0),
        max_kernel: None,
    },
    // Tracepoint backend, UDP: the peers of unconnected sockets come from cgroup sock_addr
    // programs, handed to the length events above (tracer-ebpf/src/backend/tracepoint/
    // sock_addr.rs), not from syscall tracepoints, which put every syscall of every process on
    // the kernel's slower traced path. Attached after the length events, so that no peer is
    // handed over to a length event that is not attached yet (and left for a later call).
    sock_addr(
        names::PROG_UDP_SENDMSG4,
        SockAddrHook::UdpSendmsg4,
        SENDMSG_MIN,
    ),
    sock_addr(
        names::PROG_UDP_SENDMSG6,
        SockAddrHook::UdpSendmsg6,
        SENDMSG_MIN,
    ),
    sock_addr(
        names::PROG_UDP_RECVMSG4,
        SockAddrHook::UdpRecvmsg4,
        RECVMSG_MIN,
    ),
    sock_addr(
        names::PROG_UDP_RECVMSG6,
        SockAddrHook::UdpRecvmsg6,
        RECVMSG_MIN,
    ),
    // No tracepoint fires when a UDP socket is destroyed: a cgroup hook on its release does
    // (required by the tracepoint backend). The same hook ends a TCP connection that closed while
    // its application still had bytes to read, when the application lets go of the socket, read
    // or not (`conn::finish_pending`): optional on the fentry and kprobe backends, whose UDP
    // closes come from udp_destroy_sock.
    ProbeSpec {
        program: tracer_common::names::PROG_UDP_RELEASE,
        hook: Hook::CgroupSockRelease,
        backends: ALL,
        min_kernel: KernelVersion::new(5, 9, 0),
        max_kernel: None,
    },
    // fentry backend: the return value of each socket call (see tracer-ebpf/src/backend/calls.rs
    // for why these functions count every byte exactly once).
    fexit(names::PROG_FX_TCP_SEND, "tcp_sendmsg", ANY, None),
    fexit(names::PROG_FX_TCP_PAGE, "tcp_sendpage", ANY, BEFORE_6_5),
    fexit(names::PROG_FX_TCP_RECV6, "tcp_recvmsg", ANY, BEFORE_5_19),
    fexit(names::PROG_FX_TCP_RECV5, "tcp_recvmsg", SINCE_5_19, None),
    fexit(names::PROG_FX_TCP_SPLICE, "tcp_splice_read", ANY, None),
    fexit(names::PROG_FX_UDP_SEND, "udp_sendmsg", ANY, None),
    fexit(names::PROG_FX_UDP6_SEND, "udpv6_sendmsg", ANY, None),
    // The fexit (which clears the fentry's mark) before the fentry: a call already running when
    // the fentry is attached leaves no mark behind.
    fexit(names::PROG_FX_UDP_PAGE, "udp_sendpage", ANY, BEFORE_6_5),
    fentry(names::PROG_FE_UDP_PAGE, "udp_sendpage", BEFORE_6_5),
    fexit(names::PROG_FX_UDP_RECV6, "udp_recvmsg", ANY, BEFORE_5_19),
    fexit(names::PROG_FX_UDP_RECV5, "udp_recvmsg", SINCE_5_19, None),
    fexit(names::PROG_FX_UDP6_RECV6, "udpv6_recvmsg", ANY, BEFORE_5_19),
    fexit(names::PROG_FX_UDP6_RECV5, "udpv6_recvmsg", SINCE_5_19, None),
    fentry(names::PROG_FE_UDP_DESTROY, "udp_destroy_sock", None),
    fentry(names::PROG_FE_UDP6_DESTROY, "udpv6_destroy_sock", None),
    // kprobe backend: each kretprobe before its kprobe, so that no call leaves stashed arguments
    // behind because its return was not probed yet (a return whose entry was not probed yet is
    // counted as a lost call, which it is).
    kretprobe(names::PROG_KR_TCP_SEND, "tcp_sendmsg", ANY, None),
    kprobe(names::PROG_KP_TCP_SEND, "tcp_sendmsg", ANY, None),
    kretprobe(names::PROG_KR_TCP_PAGE, "tcp_sendpage", ANY, BEFORE_6_5),
    kprobe(names::PROG_KP_TCP_PAGE, "tcp_sendpage", ANY, BEFORE_6_5),
    kretprobe(names::PROG_KR_TCP_RECV, "tcp_recvmsg", ANY, None),
    kprobe(names::PROG_KP_TCP_RECV6, "tcp_recvmsg", ANY, BEFORE_5_19),
    kprobe(names::PROG_KP_TCP_RECV5, "tcp_recvmsg", SINCE_5_19, None),
    kretprobe(names::PROG_KR_TCP_SPLICE, "tcp_splice_read", ANY, None),
    kprobe(names::PROG_KP_TCP_SPLICE, "tcp_splice_read", ANY, None),
    kretprobe(names::PROG_KR_UDP_SEND, "udp_sendmsg", ANY, None),
    kprobe(names::PROG_KP_UDP_SEND, "udp_sendmsg", ANY, None),
    kretprobe(names::PROG_KR_UDP6_SEND, "udpv6_sendmsg", ANY, None),
    kprobe(names::PROG_KP_UDP6_SEND, "udpv6_sendmsg", ANY, None),
    kretprobe(names::PROG_KR_UDP_PAGE, "udp_sendpage", ANY, BEFORE_6_5),
    kprobe(names::PROG_KP_UDP_PAGE, "udp_sendpage", ANY, BEFORE_6_5),
    kretprobe(names::PROG_KR_UDP_RECV, "udp_recvmsg", ANY, None),
    kprobe(names::PROG_KP_UDP_RECV6, "udp_recvmsg", ANY, BEFORE_5_19),
    kprobe(names::PROG_KP_UDP_RECV5, "udp_recvmsg", SINCE_5_19, None),
    kretprobe(names::PROG_KR_UDP6_RECV, "udpv6_recvmsg", ANY, None),
    kprobe(names::PROG_KP_UDP6_RECV6, "udpv6_recvmsg", ANY, BEFORE_5_19),
    kprobe(names::PROG_KP_UDP6_RECV5, "udpv6_recvmsg", SINCE_5_19, None),
    kprobe(names::PROG_KP_UDP_DESTROY, "udp_destroy_sock", ANY, None),
    kprobe(names::PROG_KP_UDP6_DESTROY, "udpv6_destroy_sock", ANY, None),
];

// Kernel ranges of the fentry/kprobe hooks. The floor of both backends is the tracer's own
// (MIN_KERNEL); the hooked functions exist on every kernel since then, except where noted.
const ANY: KernelVersion = KernelVersion::new(0, 0, 0);
/// 5.19 dropped the `noblock` parameter of `tcp_recvmsg`/`udp_recvmsg`/`udpv6_recvmsg`.
const SINCE_5_19: KernelVersion = KernelVersion::new(5, 19, 0);
const BEFORE_5_19: Option<KernelVersion> = Some(KernelVersion::new(5, 18, u32::MAX));
/// 6.5 removed `tcp_sendpage`/`udp_sendpage` (splice sends through `sendmsg` since).
const BEFORE_6_5: Option<KernelVersion> = Some(KernelVersion::new(6, 4, u32::MAX));

const FENTRY: &[Backend] = &[Backend::Fentry];
const KPROBE: &[Backend] = &[Backend::Kprobe];

const fn function_probe(
    program: &'static str,
    hook: Hook,
    backends: &'static [Backend],
    min_kernel: KernelVersion,
    max_kernel: Option<KernelVersion>,
) -> ProbeSpec {
    ProbeSpec {
        program,
        hook,
        backends,
        min_kernel,
        max_kernel,
    }
}

const fn fexit(
    program: &'static str,
    function: &'static str,
    min_kernel: KernelVersion,
    max_kernel: Option<KernelVersion>,
) -> ProbeSpec {
    let hook = Hook::Fexit { function };
    function_probe(program, hook, FENTRY, min_kernel, max_kernel)
}

const fn fentry(
    program: &'static str,
    function: &'static str,
    max_kernel: Option<KernelVersion>,
) -> ProbeSpec {
    function_probe(program, Hook::Fentry { function }, FENTRY, ANY, max_kernel)
}

const fn kprobe(
    program: &'static str,
    function: &'static str,
    min_kernel: KernelVersion,
    max_kernel: Option<KernelVersion>,
) -> ProbeSpec {
    let hook = Hook::Kprobe { function };
    function_probe(program, hook, KPROBE, min_kernel, max_kernel)
}

const fn kretprobe(
    program: &'static str,
    function: &'static str,
    min_kernel: KernelVersion,
    max_kernel: Option<KernelVersion>,
) -> ProbeSpec {
    let hook = Hook::Kretprobe { function };
    function_probe(program, hook, KPROBE, min_kernel, max_kernel)
}

/// `cgroup/sendmsg4` and `sendmsg6`: Linux 4.18.
const SENDMSG_MIN: KernelVersion = KernelVersion::new(4, 18, 0);
/// `cgroup/recvmsg4` and `recvmsg6`: Linux 5.2. (The programs also call
/// `bpf_get_current_pid_tgid`, which every kernel the tracepoint backend runs on, 6.3+, offers
/// to them.)
const RECVMSG_MIN: KernelVersion = KernelVersion::new(5, 2, 0);

/// A cgroup `sock_addr` program of the tracepoint backend's UDP peers.
const fn sock_addr(
    program: &'static str,
    hook: SockAddrHook,
    min_kernel: KernelVersion,
) -> ProbeSpec {
    ProbeSpec {
        program,
        hook: Hook::CgroupSockAddr(hook),
        backends: TRACEPOINT,
        min_kernel,
        max_kernel: None,
    }
}

/// The packet capture (tracer-ebpf/src/packet, tracer/src/kernel/packet.rs): not part of any
/// backend's choice, attached on top of the chosen backend when `Config::capture.enabled`
/// ([`super::plan::add_capture`]). Floor 5.8: the ring buffer (the hooks are 4.10,
/// `bpf_skb_cgroup_id` 4.18, the HTTP parser's socket storage 5.2).
pub const CAPTURE_PROBES: &[ProbeSpec] = &[
    ProbeSpec {
        program: names::PROG_PACKET_INGRESS,
        hook: Hook::CgroupSkbIngress,
        backends: ALL,
        min_kernel: CAPTURE_MIN_KERNEL,
        max_kernel: None,
    },
    ProbeSpec {
        program: names::PROG_PACKET_EGRESS,
        hook: Hook::CgroupSkbEgress,
        backends: ALL,
        min_kernel: CAPTURE_MIN_KERNEL,
        max_kernel: None,
    },
];

/// The packet capture's floor (its ring buffer).
pub const CAPTURE_MIN_KERNEL: KernelVersion = KernelVersion::new(5, 8, 0);

/// The first kernel with BPF iterators over TCP sockets (`iter/tcp`).
pub const ITER_MIN_KERNEL: KernelVersion = KernelVersion::new(5, 9, 0);

/// The first kernel with BPF iterators over tasks' files (`iter/task_file`).
pub const TASK_FILE_ITER_MIN_KERNEL: KernelVersion = KernelVersion::new(5, 8, 0);

/// What the plan's reason says when the task-file iterator is left out.
pub fn without_task_file_iterator(why: &str) -> String {
    format!(
        "without iter/task_file ({why}): an accepted TCP connection is held back until its first \
         send or receive names its owner"
    )
}

/// What the plan's reason says when the TCP iterator is left out, `why` (a kernel below 5.9, or
/// the error that refused it at load time).
pub fn without_tcp_iterator(why: &str) -> String {
    format!(
        "without iter/tcp ({why}): TCP packets, retransmits and RTT are as of each connection's \
         latest application I/O, not of the read"
    )
}

/// What the plan's reason says when the start-up walk (`iter/tcp`, `iter/udp`) is left out.
pub fn without_seed(why: &str) -> String {
    format!(
        "without the start-up walk of iter/tcp and iter/udp ({why}): connections that existed \
         before the start are tracked from their first send or receive only (counted in \
         tcp_io_not_tracked where TCP cannot be)"
    )
}

/// The tracer's floor: the ring buffer of closed connections.
pub const MIN_KERNEL: KernelVersion = KernelVersion::new(5, 8, 0);

/// The TLS uprobes (tracer-ebpf/src/tls, owner in userspace: tracer/src/sources/tls): loaded
/// when `Config::tls.enabled` (and the capture's HTTP path, whose ring and records they use),
/// attached per library file by the file registry at the symbols of [`TlsLibrary::hooks`]. Floor: the
/// capture's ring (5.8); uprobes through the perf PMU are 4.17, `bpf_probe_read_user` 5.5.
pub const TLS_PROBES: &[ProbeSpec] = &[
    tls_probe(names::PROG_TLS_SSL_SET_FD, Hook::Uprobe),
    tls_probe(names::PROG_TLS_GNUTLS_SET_INT, Hook::Uprobe),
    tls_probe(names::PROG_TLS_WRITE, Hook::Uprobe),
    tls_probe(names::PROG_TLS_READ, Hook::Uprobe),
    tls_probe(names::PROG_TLS_READ_EX, Hook::Uprobe),
    tls_probe(names::PROG_TLS_WRITE_EX, Hook::Uprobe),
    tls_probe(names::PROG_TLS_RET, Hook::Uretprobe),
    tls_probe(names::PROG_TLS_SHUTDOWN, Hook::Uprobe),
    // The registry's exec watch (tracer-ebpf/src/tls/exec.rs): a process that starts is
    // scanned at once rather than at the next periodic scan. Last: not attached when a TLS
    // program above was refused.
    tls_probe(
        names::PROG_TLS_EXEC,
        Hook::Tracepoint {
            category: "sched",
            name: "sched_process_exec",
        },
    ),
];

/// The TLS uprobes' floor.
pub const TLS_MIN_KERNEL: KernelVersion = CAPTURE_MIN_KERNEL;

const fn tls_probe(program: &'static str, hook: Hook) -> ProbeSpec {
    ProbeSpec {
        program,
        hook,
        backends: ALL,
        min_kernel: TLS_MIN_KERNEL,
        max_kernel: None,
    }
}

/// A TLS library the file registry hooks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TlsLibrary {
    /// OpenSSL's libssl (1.1 and 3).
    OpenSsl,
    /// GnuTLS.
    GnuTls,
}

/// One symbol of a TLS library and the program attached there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TlsHook {
    pub program: &'static str,
    pub symbol: &'static str,
    /// Without it the file is not hooked at all (blocked); an optional one (`SSL_read_ex`,
    /// OpenSSL 1.1.1+) is skipped when absent.
    pub required: bool,
}

const fn tls_hook(program: &'static str, symbol: &'static str, required: bool) -> TlsHook {
    TlsHook {
        program,
        symbol,
        required,
    }
}

impl TlsLibrary {
    /// Every library.
    pub const ALL: [TlsLibrary; 2] = [TlsLibrary::OpenSsl, TlsLibrary::GnuTls];

    /// Lower-case name.
    pub const fn name(self) -> &'static str {
        match self {
            Self::OpenSsl => "openssl",
            Self::GnuTls => "gnutls",
        }
    }

    /// The file-name prefix of its shared object.
    pub const fn file_prefix(self) -> &'static str {
        match self {
            Self::OpenSsl => "libssl.so",
            Self::GnuTls => "libgnutls.so",
        }
    }

    /// The symbols hooked, in attach order: each uretprobe before its uprobe, so that no entry
    /// stashes arguments that no return will take.
    pub const fn hooks(self) -> &'static [TlsHook] {
        match self {
            Self::OpenSsl => &OPENSSL_HOOKS,
            Self::GnuTls => &GNUTLS_HOOKS,
        }
    }
}

/// The (symbol, program) pairs of OpenSSL's libssl. `SSL_set_bio` is not hooked: a BIO of
/// the application's own (curl's) has no descriptor to tie the object to its socket, and a
/// socket BIO's descriptor sits in OpenSSL's private structures. Such an object is tied by the
/// socket its thread sends or receives on inside its first read or write call instead
/// (`tracer-ebpf/src/tls`, `tls_tied_by_socket`).
pub const OPENSSL_HOOKS: [TlsHook; 10] = [
    tls_hook(names::PROG_TLS_SSL_SET_FD, "SSL_set_fd", true),
    tls_hook(names::PROG_TLS_RET, "SSL_write", true),
    tls_hook(names::PROG_TLS_WRITE, "SSL_write", true),
    tls_hook(names::PROG_TLS_RET, "SSL_read", true),
    tls_hook(names::PROG_TLS_READ, "SSL_read", true),
    tls_hook(names::PROG_TLS_RET, "SSL_write_ex", false),
    tls_hook(names::PROG_TLS_WRITE_EX, "SSL_write_ex", false),
    tls_hook(names::PROG_TLS_RET, "SSL_read_ex", false),
    tls_hook(names::PROG_TLS_READ_EX, "SSL_read_ex", false),
    tls_hook(names::PROG_TLS_SHUTDOWN, "SSL_shutdown", false),
];

/// The (symbol, program) pairs of GnuTLS (`gnutls_transport_set_int` is a macro over
/// `gnutls_transport_set_int2`).
pub const GNUTLS_HOOKS: [TlsHook; 6] = [
    tls_hook(
        names::PROG_TLS_GNUTLS_SET_INT,
        "gnutls_transport_set_int2",
        true,
    ),
    tls_hook(names::PROG_TLS_RET, "gnutls_record_send", true),
    tls_hook(names::PROG_TLS_WRITE, "gnutls_record_send", true),
    tls_hook(names::PROG_TLS_RET, "gnutls_record_recv", true),
    tls_hook(names::PROG_TLS_READ, "gnutls_record_recv", true),
    tls_hook(names::PROG_TLS_SHUTDOWN, "gnutls_bye", false),
];
