//! The probe table as data, and the one pure function that picks a backend and its probes from
//! the kernel's capabilities and the caller's choice (kunai's compat table, made testable).

use std::fmt;

use tracer_common::names;

use super::{capabilities::Capabilities, version::KernelVersion};
use crate::{Error, Result};

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
    ProbeSpec {
        program: tracer_common::names::PROG_ACCEPT4,
        hook: Hook::Tracepoint {
            category: "syscalls",
            name: "sys_exit_accept4",
        },
        backends: ALL,
        min_kernel: KernelVersion::new(4, 16, 0),
        max_kernel: None,
    },
    ProbeSpec {
        program: tracer_common::names::PROG_ACCEPT,
        hook: Hook::Tracepoint {
            category: "syscalls",
            name: "sys_exit_accept",
        },
        backends: ALL,
        min_kernel: KernelVersion::new(4, 16, 0),
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
    // Tracepoint backend, UDP: the peers of unconnected sockets come from the send/receive
    // syscalls (see tracer-ebpf/src/backend/tracepoint/udp.rs). The exits are attached before the
    // enters, so that every argument stash an enter makes is deleted by its exit.
    udp_syscall(tracer_common::names::PROG_TPX_SENDTO, "sys_exit_sendto"),
    udp_syscall(tracer_common::names::PROG_TPX_SENDMSG, "sys_exit_sendmsg"),
    udp_syscall(tracer_common::names::PROG_TPX_SENDMMSG, "sys_exit_sendmmsg"),
    udp_syscall(tracer_common::names::PROG_TPX_RECVFROM, "sys_exit_recvfrom"),
    udp_syscall(tracer_common::names::PROG_TPX_RECVMSG, "sys_exit_recvmsg"),
    udp_syscall(tracer_common::names::PROG_TPX_RECVMMSG, "sys_exit_recvmmsg"),
    udp_syscall(tracer_common::names::PROG_TP_SENDTO, "sys_enter_sendto"),
    udp_syscall(tracer_common::names::PROG_TP_SENDMSG, "sys_enter_sendmsg"),
    udp_syscall(tracer_common::names::PROG_TP_SENDMMSG, "sys_enter_sendmmsg"),
    udp_syscall(tracer_common::names::PROG_TP_RECVFROM, "sys_enter_recvfrom"),
    udp_syscall(tracer_common::names::PROG_TP_RECVMSG, "sys_enter_recvmsg"),
    udp_syscall(tracer_common::names::PROG_TP_RECVMMSG, "sys_enter_recvmmsg"),
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

/// A `syscalls:<name>` tracepoint of the tracepoint backend's UDP peers (syscall tracepoints and
/// BPF on tracepoints: 4.7).
const fn udp_syscall(program: &'static str, name: &'static str) -> ProbeSpec {
    ProbeSpec {
        program,
        hook: Hook::Tracepoint {
            category: "syscalls",
            name,
        },
        backends: TRACEPOINT,
        min_kernel: KernelVersion::new(4, 7, 0),
        max_kernel: None,
    }
}

/// The first kernel with BPF iterators over TCP sockets (`iter/tcp`).
pub const ITER_MIN_KERNEL: KernelVersion = KernelVersion::new(5, 9, 0);

/// What the plan's reason says when the TCP iterator is left out, `why` (a kernel below 5.9, or
/// the error that refused it at load time).
pub fn without_tcp_iterator(why: &str) -> String {
    format!(
        "without iter/tcp ({why}): TCP packets, retransmits and RTT are as of each connection's \
         latest application I/O, not of the read"
    )
}

/// The tracer's floor: the ring buffer of closed connections.
pub const MIN_KERNEL: KernelVersion = KernelVersion::new(5, 8, 0);

/// What [`plan`] decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub backend: Backend,
    pub probes: Vec<ProbeSpec>,
    /// Why this backend: what was available, what was skipped and why.
    pub reason: String,
}

/// Why `backend` cannot run with `caps`, or `None` when it can.
pub fn unavailable_because(backend: Backend, caps: &Capabilities) -> Option<String> {
    match backend {
        Backend::Fentry if !caps.btf => Some("no kernel BTF".to_owned()),
        Backend::Fentry if !caps.fentry => {
            Some("the kernel refuses BPF tracing (fentry) programs".to_owned())
        }
        Backend::Kprobe if !caps.kprobes => {
            Some("kprobes are not available (CONFIG_KPROBES off)".to_owned())
        }
        _ => {
            // A hook that only a newer kernel has (and no variant of it fits this one) leaves
            // the backend without it: e.g. the tracepoint backend's send/receive before 6.3.
            let too_old: Vec<String> = PROBES
                .iter()
                .filter(|p| p.backends.contains(&backend) && caps.kernel < p.min_kernel)
                .filter(|p| p.hook != Hook::CgroupSockOps && p.hook != Hook::IterTcp)
                .filter(|p| !(p.hook == Hook::CgroupSockRelease && backend != Backend::Tracepoint))
                .filter(|p| !probes_for(backend, caps.kernel).any(|q| q.hook == p.hook))
                .map(|p| format!("{} (Linux {}+)", target_name(p.hook), p.min_kernel))
                .collect();
            if !too_old.is_empty() {
                return Some(format!("this kernel lacks {}", too_old.join(", ")));
            }
            let missing: Vec<String> = probes_for(backend, caps.kernel)
                .filter_map(|p| match p.hook {
                    Hook::Tracepoint { category, name } if !caps.has_tracepoint(category, name) => {
                        Some(format!("tracepoint {category}:{name}"))
                    }
                    Hook::Fentry { function }
                    | Hook::Fexit { function }
                    | Hook::Kprobe { function }
                    | Hook::Kretprobe { function }
                        if !caps.has_function(function) =>
                    {
                        Some(format!("kernel function {function}"))
                    }
                    Hook::CgroupSockRelease
                        if caps.cgroup2.is_none() && backend == Backend::Tracepoint =>
                    {
                        Some("a cgroup v2 mount (for cgroup/sock_release)".to_owned())
                    }
                    _ => None,
                })
                .collect();
            // A kprobe and its kretprobe name the same function.
            let mut missing = missing;
            missing.dedup();
            (!missing.is_empty()).then(|| format!("missing {}", missing.join(", ")))
        }
    }
}

/// The tracepoint or kernel function a hook attaches to, for messages.
fn target_name(hook: Hook) -> String {
    match hook {
        Hook::Tracepoint { category, name } => format!("tracepoint {category}:{name}"),
        Hook::Fentry { function }
        | Hook::Fexit { function }
        | Hook::Kprobe { function }
        | Hook::Kretprobe { function } => format!("kernel function {function}"),
        Hook::CgroupSockRelease => "cgroup/sock_release".to_owned(),
        Hook::CgroupSockOps => "cgroup/sock_ops".to_owned(),
        Hook::IterTcp => "iter/tcp".to_owned(),
    }
}

fn probes_for(backend: Backend, kernel: KernelVersion) -> impl Iterator<Item = &'static ProbeSpec> {
    PROBES.iter().filter(move |p| {
        p.backends.contains(&backend)
            && p.min_kernel <= kernel
            && p.max_kernel.is_none_or(|max| kernel <= max)
    })
}

/// Hooks a backend runs without, when the kernel lacks them (not a reason to refuse the
/// backend): each names what is lost instead.
fn optional_hook_missing(hook: Hook, caps: &Capabilities) -> Option<&'static str> {
    match hook {
        Hook::CgroupSockOps if caps.cgroup2.is_none() => Some(
            "no cgroup v2 mount: TCP closes rely on the inet_sock_set_state tracepoint alone, \
             which the kernel skips when it interrupts another tracing program",
        ),
        // Only reached by the function backends: the tracepoint backend needs the hook for its
        // UDP closes and is refused without a cgroup v2 mount (`unavailable_because`).
        Hook::CgroupSockRelease if caps.cgroup2.is_none() => Some(
            "no cgroup v2 mount: a TCP connection that closed while its application still had \
             bytes to read ends when they are read or at EOF, not when the socket is released",
        ),
        _ => None,
    }
}

/// Picks the backend and its probes. Pure: everything it needs is in `caps`.
pub fn plan(choice: BackendChoice, caps: &Capabilities) -> Result<Plan> {
    if caps.kernel < MIN_KERNEL {
        return Err(Error::NotSupported {
            feature: "BPF ring buffer",
            min_kernel: "5.8",
            running: caps.release.clone(),
        });
    }
    let candidates: &[Backend] = match &choice {
        BackendChoice::Auto => &Backend::PREFERENCE,
        BackendChoice::Force(backend) => std::slice::from_ref(backend),
    };
    let mut skipped = Vec::new();
    for &backend in candidates {
        match unavailable_because(backend, caps) {
            None => {
                let mut probes: Vec<ProbeSpec> =
                    probes_for(backend, caps.kernel).copied().collect();
                let mut without: Vec<&str> = probes
                    .iter()
                    .filter(|p| p.hook == Hook::CgroupSockOps)
                    .filter_map(|p| optional_hook_missing(p.hook, caps))
                    .collect();
                let release_missing: Vec<&str> = probes
                    .iter()
                    .filter(|p| p.hook == Hook::CgroupSockRelease)
                    .filter_map(|p| optional_hook_missing(p.hook, caps))
                    .collect();
                probes.retain(|p| optional_hook_missing(p.hook, caps).is_none());
                if caps.kernel < KernelVersion::new(5, 10, 0) {
                    without.push(
                        "Linux < 5.10 (no bpf_sock_ops.sk): TCP closes rely on the \
                         inet_sock_set_state tracepoint alone",
                    );
                }
                let mut reason = if skipped.is_empty() {
                    format!("{backend}: {}", describe(choice))
                } else {
                    format!(
                        "{backend}: {}; skipped {}",
                        describe(choice),
                        skipped.join("; ")
                    )
                };
                if !without.is_empty() {
                    reason.push_str(&format!(
                        "; without cgroup/sock_ops ({})",
                        without.join("; ")
                    ));
                }
                if let Some(why) = release_missing.first() {
                    reason.push_str(&format!("; without cgroup/sock_release ({why})"));
                }
                if caps.kernel < ITER_MIN_KERNEL {
                    reason.push_str(&format!(
                        "; {}",
                        without_tcp_iterator(&format!("Linux < {ITER_MIN_KERNEL}"))
                    ));
                }
                if let (Some(root), true) = (
                    &caps.cgroup2,
                    probes
                        .iter()
                        .any(|p| matches!(p.hook, Hook::CgroupSockOps | Hook::CgroupSockRelease)),
                ) {
                    reason.push_str(&format!("; cgroup programs on the {root}"));
                }
                return Ok(Plan {
                    backend,
                    probes,
                    reason,
                });
            }
            Some(why) => skipped.push(format!("{backend} ({why})")),
        }
    }
    Err(Error::NoBackend {
        running: caps.release.clone(),
        reasons: skipped.join("; "),
    })
}

fn describe(choice: BackendChoice) -> &'static str {
    match choice {
        BackendChoice::Auto => "the best backend this kernel supports",
        BackendChoice::Force(_) => "forced by the configuration",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host_like() -> Capabilities {
        // The project's host: 6.18, BTF, no kprobes, fentry refused, all tracepoints.
        Capabilities::for_tests(KernelVersion::new(6, 18, 44), true, false, false, true)
    }

    fn debian_6_1() -> Capabilities {
        // 6.1: BTF, kprobes, fentry, but no sock_send_length tracepoint.
        Capabilities::for_tests(KernelVersion::new(6, 1, 0), true, true, true, false)
    }

    #[test]
    fn auto_on_a_host_without_kprobes_or_fentry_picks_tracepoints_and_says_why() {
        let plan = plan(BackendChoice::Auto, &host_like()).unwrap();
        assert_eq!(plan.backend, Backend::Tracepoint);
        assert!(
            plan.reason.contains("fentry (the kernel refuses"),
            "{}",
            plan.reason
        );
        assert!(
            plan.reason.contains("kprobe (kprobes are not available"),
            "{}",
            plan.reason
        );
        let programs: Vec<_> = plan.probes.iter().map(|p| p.program).collect();
        assert!(programs.contains(&tracer_common::names::PROG_TP_SEND));
        assert!(programs.contains(&tracer_common::names::PROG_TP_STATE));
    }

    #[test]
    fn auto_prefers_fentry_when_everything_is_available() {
        let caps = Capabilities::for_tests(KernelVersion::new(6, 12, 95), true, true, true, true);
        assert_eq!(
            plan(BackendChoice::Auto, &caps).unwrap().backend,
            Backend::Fentry
        );
    }

    #[test]
    fn forcing_tracepoints_below_6_3_names_the_missing_tracepoint() {
        let err = plan(BackendChoice::Force(Backend::Tracepoint), &debian_6_1()).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("sock:sock_send_length"), "{text}");
    }

    #[test]
    fn forcing_kprobe_on_the_host_fails_with_the_reason() {
        let err = plan(BackendChoice::Force(Backend::Kprobe), &host_like()).unwrap_err();
        assert!(err.to_string().contains("CONFIG_KPROBES"), "{err}");
    }

    #[test]
    fn kernels_below_the_ring_buffer_floor_are_refused_with_the_minimum() {
        let caps = Capabilities::for_tests(KernelVersion::new(5, 4, 0), true, true, true, false);
        match plan(BackendChoice::Auto, &caps) {
            Err(Error::NotSupported { min_kernel, .. }) => assert_eq!(min_kernel, "5.8"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn probes_outside_their_kernel_range_are_not_planned() {
        let caps = debian_6_1();
        let planned: Vec<_> = probes_for(Backend::Tracepoint, caps.kernel)
            .map(|p| p.program)
            .collect();
        assert!(!planned.contains(&tracer_common::names::PROG_TP_SEND));
        assert!(planned.contains(&tracer_common::names::PROG_TP_STATE));
    }

    #[test]
    fn backend_names_round_trip() {
        for backend in Backend::PREFERENCE {
            assert_eq!(Backend::from_name(backend.name()), Some(backend));
        }
        assert_eq!(Backend::from_name("ebpf"), None);
    }

    fn planned(backend: Backend, kernel: KernelVersion) -> Vec<&'static str> {
        let caps = Capabilities::for_tests(kernel, true, true, true, false);
        let plan = plan(BackendChoice::Force(backend), &caps).unwrap();
        plan.probes.iter().map(|p| p.program).collect()
    }

    #[test]
    fn on_5_10_the_function_backends_use_the_old_recvmsg_signature_and_sendpage() {
        let kernel = KernelVersion::new(5, 10, 0);
        let fentry = planned(Backend::Fentry, kernel);
        for program in [
            names::PROG_FX_TCP_RECV6,
            names::PROG_FX_UDP_RECV6,
            names::PROG_FX_UDP6_RECV6,
            names::PROG_FX_TCP_PAGE,
            names::PROG_FX_UDP_PAGE,
            names::PROG_FE_UDP_PAGE,
            names::PROG_FX_TCP_SEND,
            names::PROG_FX_TCP_SPLICE,
            names::PROG_FE_UDP_DESTROY,
            names::PROG_TP_STATE,
        ] {
            assert!(fentry.contains(&program), "{program} in {fentry:?}");
        }
        assert!(!fentry.contains(&names::PROG_FX_TCP_RECV5));
        assert!(!fentry.contains(&names::PROG_TP_SEND));
        assert!(!fentry.iter().any(|p| p.starts_with("nt_k")), "{fentry:?}");

        let kprobe = planned(Backend::Kprobe, kernel);
        for program in [
            names::PROG_KP_TCP_RECV6,
            names::PROG_KR_TCP_RECV,
            names::PROG_KP_UDP_RECV6,
            names::PROG_KP_TCP_PAGE,
            names::PROG_KR_TCP_PAGE,
        ] {
            assert!(kprobe.contains(&program), "{program} in {kprobe:?}");
        }
        assert!(!kprobe.contains(&names::PROG_KP_TCP_RECV5));
        assert!(!kprobe.iter().any(|p| p.starts_with("nt_f")), "{kprobe:?}");
    }

    #[test]
    fn on_6_12_the_function_backends_use_the_new_recvmsg_signature_and_no_sendpage() {
        let kernel = KernelVersion::new(6, 12, 95);
        let fentry = planned(Backend::Fentry, kernel);
        assert!(fentry.contains(&names::PROG_FX_TCP_RECV5));
        assert!(fentry.contains(&names::PROG_FX_UDP6_RECV5));
        assert!(!fentry.contains(&names::PROG_FX_TCP_RECV6));
        assert!(!fentry.contains(&names::PROG_FX_TCP_PAGE));
        assert!(!fentry.contains(&names::PROG_FX_UDP_PAGE));
        let kprobe = planned(Backend::Kprobe, kernel);
        assert!(kprobe.contains(&names::PROG_KP_UDP_RECV5));
        assert!(kprobe.contains(&names::PROG_KR_UDP_RECV));
        assert!(!kprobe.contains(&names::PROG_KP_UDP_RECV6));
        assert!(!kprobe.contains(&names::PROG_KR_TCP_PAGE));
    }

    #[test]
    fn signature_variants_never_overlap_and_every_function_hook_is_covered_on_every_kernel() {
        // Around every boundary in the table: each kernel function is hooked at most once per
        // hook kind, and the functions that exist on every kernel are always hooked.
        let kernels = [
            (5, 8),
            (5, 10),
            (5, 18),
            (5, 19),
            (6, 1),
            (6, 4),
            (6, 5),
            (6, 12),
            (6, 18),
        ];
        for (major, minor) in kernels {
            for patch in [0, 250] {
                let kernel = KernelVersion::new(major, minor, patch);
                for backend in [Backend::Fentry, Backend::Kprobe] {
                    let hooks: Vec<Hook> = probes_for(backend, kernel).map(|p| p.hook).collect();
                    for (i, hook) in hooks.iter().enumerate() {
                        assert!(
                            !hooks[i + 1..].contains(hook),
                            "{hook:?} twice on {kernel} {backend}"
                        );
                    }
                    let functions: Vec<&str> = hooks
                        .iter()
                        .filter_map(|h| match *h {
                            Hook::Fexit { function } | Hook::Kretprobe { function } => {
                                Some(function)
                            }
                            _ => None,
                        })
                        .collect();
                    for function in [
                        "tcp_sendmsg",
                        "tcp_recvmsg",
                        "tcp_splice_read",
                        "udp_sendmsg",
                        "udpv6_sendmsg",
                        "udp_recvmsg",
                        "udpv6_recvmsg",
                    ] {
                        assert!(
                            functions.contains(&function),
                            "{function} on {kernel} {backend}"
                        );
                    }
                    let sendpage = functions.contains(&"tcp_sendpage");
                    assert_eq!(
                        sendpage,
                        kernel < KernelVersion::new(6, 5, 0),
                        "{kernel} {backend}"
                    );
                }
            }
        }
    }

    #[test]
    fn program_names_fit_the_kernel_limit_carry_the_prefix_and_are_unique() {
        for (i, probe) in PROBES.iter().enumerate() {
            assert!(probe.program.starts_with("nt_"), "{}", probe.program);
            assert!(
                probe.program.len() <= 15,
                "{} is longer than 15",
                probe.program
            );
            assert!(
                !PROBES[i + 1..].iter().any(|p| p.program == probe.program),
                "{} twice",
                probe.program
            );
        }
    }

    #[test]
    fn forcing_fentry_on_the_host_fails_with_the_reason() {
        let err = plan(BackendChoice::Force(Backend::Fentry), &host_like()).unwrap_err();
        assert!(err.to_string().contains("refuses BPF tracing"), "{err}");
    }

    #[test]
    fn a_kernel_without_a_hooked_function_names_it() {
        let mut caps =
            Capabilities::for_tests(KernelVersion::new(6, 12, 95), true, true, true, true);
        caps.functions.remove("tcp_splice_read");
        let err = plan(BackendChoice::Force(Backend::Kprobe), &caps).unwrap_err();
        assert!(
            err.to_string()
                .ends_with("kprobe (missing kernel function tcp_splice_read)"),
            "{err}"
        );
        // Auto falls through to the next backend that can run, and says why.
        let plan = plan(BackendChoice::Auto, &caps).unwrap();
        assert_eq!(plan.backend, Backend::Tracepoint);
        assert!(
            plan.reason
                .contains("fentry (missing kernel function tcp_splice_read)"),
            "{}",
            plan.reason
        );
    }

    #[test]
    fn every_backend_closes_tcp_through_sock_ops_from_5_10_with_a_cgroup2_mount() {
        for backend in Backend::PREFERENCE {
            let kernel = if backend == Backend::Tracepoint {
                KernelVersion::new(6, 12, 0)
            } else {
                KernelVersion::new(5, 10, 0)
            };
            let caps = Capabilities::for_tests(kernel, true, true, true, true);
            let plan = plan(BackendChoice::Force(backend), &caps).unwrap();
            assert!(
                plan.probes.iter().any(|p| p.hook == Hook::CgroupSockOps),
                "{backend} on {kernel}"
            );
            assert!(
                !plan.reason.contains("without cgroup/sock_ops"),
                "{}",
                plan.reason
            );
        }
    }

    #[test]
    fn before_5_10_the_function_backends_load_without_sock_ops_and_say_so() {
        let caps = Capabilities::for_tests(KernelVersion::new(5, 8, 0), true, true, true, false);
        let plan = plan(BackendChoice::Force(Backend::Fentry), &caps).unwrap();
        assert!(!plan.probes.iter().any(|p| p.hook == Hook::CgroupSockOps));
        assert!(plan.reason.contains("Linux < 5.10"), "{}", plan.reason);
    }

    #[test]
    fn without_a_cgroup2_mount_the_function_backends_load_without_sock_ops_and_say_so() {
        let mut caps =
            Capabilities::for_tests(KernelVersion::new(6, 1, 0), true, true, true, false);
        caps.cgroup2 = None;
        let plan = plan(BackendChoice::Force(Backend::Kprobe), &caps).unwrap();
        assert!(!plan.probes.iter().any(|p| p.hook == Hook::CgroupSockOps));
        assert!(
            plan.reason.contains("no cgroup v2 mount"),
            "{}",
            plan.reason
        );
    }

    #[test]
    fn function_backends_release_pending_tcp_closes_from_5_9_with_a_cgroup2_mount_and_say_so_without()
     {
        for backend in [Backend::Fentry, Backend::Kprobe] {
            let caps =
                Capabilities::for_tests(KernelVersion::new(5, 10, 0), true, true, true, false);
            let with = plan(BackendChoice::Force(backend), &caps).unwrap();
            assert!(
                with.probes
                    .iter()
                    .any(|p| p.hook == Hook::CgroupSockRelease),
                "{backend}"
            );
            assert!(
                !with.reason.contains("without cgroup/sock_release"),
                "{}",
                with.reason
            );
            let mut caps = caps;
            caps.cgroup2 = None;
            let without = plan(BackendChoice::Force(backend), &caps).unwrap();
            assert!(
                !without
                    .probes
                    .iter()
                    .any(|p| p.hook == Hook::CgroupSockRelease)
            );
            assert!(
                without
                    .reason
                    .contains("without cgroup/sock_release (no cgroup v2 mount"),
                "{}",
                without.reason
            );
            let old = Capabilities::for_tests(KernelVersion::new(5, 8, 0), true, true, true, false);
            let old = plan(BackendChoice::Force(backend), &old).unwrap();
            assert!(!old.probes.iter().any(|p| p.hook == Hook::CgroupSockRelease));
        }
    }

    #[test]
    fn every_backend_plans_the_tcp_iterator_from_5_9_and_says_so_below() {
        for backend in Backend::PREFERENCE {
            let kernel = if backend == Backend::Tracepoint {
                KernelVersion::new(6, 12, 0)
            } else {
                KernelVersion::new(5, 10, 0)
            };
            let caps = Capabilities::for_tests(kernel, true, true, true, true);
            let plan = plan(BackendChoice::Force(backend), &caps).unwrap();
            assert!(
                plan.probes.iter().any(|p| p.hook == Hook::IterTcp),
                "{backend} on {kernel}"
            );
            assert!(!plan.reason.contains("without iter/tcp"), "{}", plan.reason);
        }
        let caps = Capabilities::for_tests(KernelVersion::new(5, 8, 0), true, true, true, false);
        let plan = plan(BackendChoice::Force(Backend::Kprobe), &caps).unwrap();
        assert!(!plan.probes.iter().any(|p| p.hook == Hook::IterTcp));
        assert!(
            plan.reason.contains("without iter/tcp (Linux < 5.9.0)"),
            "{}",
            plan.reason
        );
    }
}
