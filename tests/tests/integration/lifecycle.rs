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
    kernel_view::{LinkTarget, attached_links, own_attached_tracepoints},
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
    // The second load above, every planned program attached, came after the first tracer was
    // dropped and gone: that is the restart.
}

/// A quarter of the kernel's limit on the instructions one verification may walk
/// (`BPF_COMPLEXITY_LIMIT_INSNS`, 1,000,000 since 5.2).
const VERIFIED_BUDGET: u32 = 250_000;

/// Every program the tracer loads (the TLS uprobes too) is verified well inside the kernel's
/// limit, as the kernel counts it (`bpf_prog_info.verified_insns`, 5.16+). The verifier's walk is
/// what a start costs (seconds on an emulated CPU) and what breaks first when a program grows: the
/// UDP release program once walked 887,288 instructions, from byte-wise `memset`/`memmove` loops
/// the linker left in every program.
#[test]
fn every_program_is_verified_well_inside_the_kernels_limit() {
    let Some(tracer) = load(KernelConfig {
        tls_max_objects: 64,
        ..KernelConfig::default()
    }) else {
        return;
    };
    // The TLS programs load when the file registry first hooks a library; here, now.
    tracer
        .load_tls_programs()
        .expect("the kernel loads the TLS programs");
    let kernel = KernelVersion::current().expect("kernel version");
    let reported = kernel >= KernelVersion::new(5, 16, 0);
    let mut counted = Vec::new();
    for info in aya::programs::loaded_programs() {
        let info = info.expect("reading a loaded program's info");
        let name = info.name_as_str().unwrap_or_default().to_owned();
        if !name.starts_with("nt_") {
            continue;
        }
        let verified = info.verified_instruction_count();
        assert_eq!(
            verified.is_some(),
            reported,
            "{name}: verified_insns reported on {kernel}"
        );
        counted.push((name, verified.unwrap_or(0)));
    }
    assert_eq!(
        counted.len(),
        tracer.plan().probes.len(),
        "one loaded program per planned probe: {counted:?}"
    );
    counted.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    let total: u64 = counted.iter().map(|(_, n)| u64::from(*n)).sum();
    println!("verified instructions on {kernel} ({total} in all): {counted:?}");
    if reported {
        for (name, verified) in &counted {
            assert!(
                *verified <= VERIFIED_BUDGET,
                "{name} took {verified} verified instructions (budget {VERIFIED_BUDGET})"
            );
        }
    } else {
        println!("SKIP verified_insns: not reported before 5.16 (running {kernel})");
    }
}

/// `BPF_LINK_TYPE_PERF_EVENT` (include/uapi/linux/bpf.h): a program on a perf event, e.g. a
/// classic tracepoint (5.15+).
const BPF_LINK_TYPE_PERF_EVENT: u32 = 7;

/// `enum bpf_attach_type` values of the cgroup `sock_addr` hooks (include/uapi/linux/bpf.h).
const BPF_CGROUP_UDP4_SENDMSG: u32 = 14;
const BPF_CGROUP_UDP6_SENDMSG: u32 = 15;
const BPF_CGROUP_UDP4_RECVMSG: u32 = 19;
const BPF_CGROUP_UDP6_RECVMSG: u32 = 20;

/// Whether a tracepoint name is a syscall's (`sys_enter_*`, `sys_exit_*`, or the raw
/// `sys_enter`/`sys_exit`): any of them switches every syscall of every process onto the
/// kernel's slower traced path (measured here: about 40 ns more per `getppid()`).
fn is_syscall_tracepoint(name: &str) -> bool {
    name == "sys_enter"
        || name == "sys_exit"
        || name.starts_with("sys_enter_")
        || name.starts_with("sys_exit_")
}

/// The kernel says where each of the tracer's programs is attached: no program sits on a
/// syscall tracepoint (owners of accepted sockets come from their first I/O and the read-time
/// `iter/task_file` walk; UDP peers from the kernel `msghdr`, or on the tracepoint backend from
/// the four cgroup `sock_addr` links).
#[test]
fn no_syscall_tracepoint_is_attached() {
    let Some(tracer) = load(KernelConfig::default()) else {
        return;
    };
    // The plan says so ...
    for probe in &tracer.plan().probes {
        if let Hook::Tracepoint { category, name } = probe.hook {
            assert!(
                category != "syscalls" && !is_syscall_tracepoint(name),
                "{} planned on {category}:{name}",
                probe.program
            );
        }
    }
    // ... and so does the kernel, in two views: the tracepoints this process's descriptors
    // attach programs to (BPF_TASK_FD_QUERY: raw tracepoints, and classic ones attached without
    // a BPF link, i.e. before 5.15), and the kernel's list of links (whose perf-event links name
    // their tracepoint from 6.6 on).
    let links = attached_links("nt_");
    let mut seen = own_attached_tracepoints();
    seen.extend(links.iter().filter_map(|link| match &link.target {
        LinkTarget::Tracepoint(name) | LinkTarget::RawTracepoint(name) => Some(name.clone()),
        _ => None,
    }));
    for name in &seen {
        assert!(
            !is_syscall_tracepoint(name),
            "attached to {name}: {seen:?} {links:#?}"
        );
    }
    // No vacuous pass: the views see the tracer's attachments. sock_ops on every backend; the
    // state-change tracepoint where a view names classic tracepoints; where none does (perf-event
    // links of 5.15-6.5), an unnamed perf-event link for each planned classic tracepoint (kprobes
    // are perf-event links too).
    assert!(
        links.iter().any(|l| l.program == names::PROG_SOCK_OPS),
        "{links:#?}"
    );
    let kernel = KernelVersion::current().expect("kernel version");
    if kernel < KernelVersion::new(5, 15, 0) || kernel >= KernelVersion::new(6, 6, 0) {
        assert!(
            seen.iter().any(|t| t == "inet_sock_set_state"),
            "{seen:?} {links:#?}"
        );
    } else {
        let classic = tracer
            .plan()
            .probes
            .iter()
            .filter(|p| matches!(p.hook, Hook::Tracepoint { .. }))
            .count();
        let perf_links = links
            .iter()
            .filter(|l| l.target == LinkTarget::Other(BPF_LINK_TYPE_PERF_EVENT))
            .count();
        assert!(perf_links >= classic, "{classic} tracepoints: {links:#?}");
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
