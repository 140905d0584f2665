//! Loading and dropping the probes leaves nothing behind: no descriptors, programs or maps.

use std::time::{Duration, Instant};

use tracer::{
    Backend, KernelVersion,
    kernel::{
        conn_tracer::KernelConfig,
        plan::Hook,
        tcp_state::{TcpStateConfig, TcpStateProbe},
    },
};
use tracer_common::names;
use tracer_integration::{
    kernel_view::{LinkTarget, attached_links},
    leaks::Snapshot,
    policy::loaded_or_skip,
    tracer::{backend_under_test, load},
};

/// The kernel frees programs and maps asynchronously (RCU, a workqueue) after the last descriptor
/// closes: poll, bounded, until `done` holds for a snapshot, and return the last one.
fn settle(done: impl Fn(&Snapshot) -> bool) -> Snapshot {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let snapshot = Snapshot::take();
        if done(&snapshot) || Instant::now() > deadline {
            return snapshot;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn dropping_the_tcp_state_probe_frees_fds_programs_and_maps() {
    // Warm up once: lazily initialised process-wide state (aya's feature probes) is not a leak.
    let Some(first) = loaded_or_skip(TcpStateProbe::load(TcpStateConfig::default())) else {
        return;
    };
    drop(first);
    let before = settle(|s| s.programs.is_empty() && s.maps.is_empty());
    assert!(
        before.programs.is_empty() && before.maps.is_empty(),
        "{before:?}"
    );

    let probe = TcpStateProbe::load(TcpStateConfig::default()).expect("load again");
    let during = Snapshot::take();
    assert_eq!(during.programs.len(), 1, "one nt_ program while loaded");
    assert!(
        during.maps.len() >= 2,
        "at least NT_TCP_STATES and NT_COUNTERS while loaded"
    );
    assert!(during.fds.len() > before.fds.len());

    drop(probe);
    // Descriptors close synchronously on drop: no waiting for them.
    assert_eq!(
        Snapshot::take().fds,
        before.fds,
        "descriptors outlived the probe"
    );
    let after = settle(|s| *s == before);
    assert_eq!(after, before, "programs or maps outlived the probe");
}

#[test]
fn dropping_the_connection_tracer_frees_fds_programs_and_maps() {
    let Some(first) = load(KernelConfig::default()) else {
        return;
    };
    let planned = first.plan().probes.len();
    drop(first);
    let before = settle(|s| s.programs.is_empty() && s.maps.is_empty());
    assert!(
        before.programs.is_empty() && before.maps.is_empty(),
        "{before:?}"
    );

    let tracer = load(KernelConfig::default()).expect("load again");
    let during = Snapshot::take();
    assert_eq!(
        during.programs.len(),
        planned,
        "every planned program is attached"
    );
    assert!(during.fds.len() > before.fds.len());

    drop(tracer);
    assert_eq!(
        Snapshot::take().fds,
        before.fds,
        "descriptors outlived the tracer"
    );
    let after = settle(|s| *s == before);
    assert_eq!(after, before, "programs or maps outlived the tracer");

    // And a new tracer starts again after the old one is gone.
    let again = load(KernelConfig::default()).expect("load after drop");
    assert_eq!(again.plan().probes.len(), planned);
}

/// The send and receive syscalls whose tracepoints the tracer must not take: a syscall tracepoint
/// switches every syscall of every process onto the kernel's slower traced path (measured here:
/// about 40 ns more per `getppid()`).
const SEND_RECEIVE_SYSCALLS: [&str; 6] = [
    "sendto", "sendmsg", "sendmmsg", "recvfrom", "recvmsg", "recvmmsg",
];

/// `enum bpf_attach_type` values of the cgroup `sock_addr` hooks (include/uapi/linux/bpf.h).
const BPF_CGROUP_UDP4_SENDMSG: u32 = 14;
const BPF_CGROUP_UDP6_SENDMSG: u32 = 15;
const BPF_CGROUP_UDP4_RECVMSG: u32 = 19;
const BPF_CGROUP_UDP6_RECVMSG: u32 = 20;

/// The kernel's own list of links says where each of the tracer's programs is attached: no
/// program sits on a send/receive syscall tracepoint (nor on the raw `sys_enter`/`sys_exit`),
/// and on the tracepoint backend the UDP peers come from the four cgroup `sock_addr` links.
#[test]
fn no_send_or_receive_syscall_tracepoint_is_attached() {
    let Some(tracer) = load(KernelConfig::default()) else {
        return;
    };
    // The plan says so ...
    for probe in &tracer.plan().probes {
        if let Hook::Tracepoint { category, name } = probe.hook {
            assert!(
                category != "syscalls"
                    || !SEND_RECEIVE_SYSCALLS
                        .iter()
                        .any(|call| name.ends_with(&format!("_{call}"))),
                "{} planned on {category}:{name}",
                probe.program
            );
        }
    }
    // ... and so does the kernel.
    let links = attached_links("nt_");
    let named = |target: &LinkTarget| match target {
        LinkTarget::Tracepoint(name) | LinkTarget::RawTracepoint(name) => Some(name.clone()),
        _ => None,
    };
    for link in &links {
        let Some(name) = named(&link.target) else {
            continue;
        };
        let forbidden = name == "sys_enter"
            || name == "sys_exit"
            || SEND_RECEIVE_SYSCALLS.iter().any(|call| {
                name == format!("sys_enter_{call}") || name == format!("sys_exit_{call}")
            });
        assert!(
            !forbidden,
            "{} is attached to {name}: {links:#?}",
            link.program
        );
    }
    // The reader sees the tracer's links (no vacuous pass): sock_ops on every backend, and where
    // perf-event links name their tracepoint (6.6+), accept's exits.
    assert!(
        links.iter().any(|l| l.program == names::PROG_SOCK_OPS),
        "{links:#?}"
    );
    let kernel = KernelVersion::current().expect("kernel version");
    if kernel >= KernelVersion::new(6, 6, 0) {
        assert!(
            links
                .iter()
                .any(|l| named(&l.target).as_deref() == Some("sys_exit_accept4")),
            "{links:#?}"
        );
    }
    if backend_under_test() == Backend::Tracepoint {
        for (program, attach) in [
            (names::PROG_UDP_SENDMSG4, BPF_CGROUP_UDP4_SENDMSG),
            (names::PROG_UDP_SENDMSG6, BPF_CGROUP_UDP6_SENDMSG),
            (names::PROG_UDP_RECVMSG4, BPF_CGROUP_UDP4_RECVMSG),
            (names::PROG_UDP_RECVMSG6, BPF_CGROUP_UDP6_RECVMSG),
        ] {
            assert!(
                links
                    .iter()
                    .any(|l| l.program == program && l.target == LinkTarget::Cgroup(attach)),
                "{program} on attach type {attach}: {links:#?}"
            );
        }
    }
    drop(tracer);
}
