//! The one pure function that picks a backend and its probes (from the table in
//! [`super::probes`]) from the kernel's capabilities and the caller's choice (kunai's compat
//! table, made testable).

pub use super::probes::{
    Backend, BackendChoice, CAPTURE_MIN_KERNEL, CAPTURE_PROBES, Hook, ITER_MIN_KERNEL, MIN_KERNEL,
    PROBES, ProbeSpec, SockAddrHook, TLS_MIN_KERNEL, TLS_PROBES, without_seed,
    without_task_file_iterator, without_tcp_iterator,
};
use super::{capabilities::Capabilities, version::KernelVersion};
use crate::{Error, Result};

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
                .filter(|p| {
                    !matches!(
                        p.hook,
                        Hook::CgroupSockOps
                            | Hook::IterTcp
                            | Hook::IterTaskFile
                            | Hook::IterTcpSeed
                            | Hook::IterUdpSeed
                    )
                })
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
                    _ => None,
                })
                .collect();
            // A kprobe and its kretprobe name the same function.
            let mut missing = missing;
            missing.dedup();
            // The tracepoint backend's cgroup programs (UDP peers and closes), named at once.
            let cgroup: Vec<String> = probes_for(backend, caps.kernel)
                .filter(|p| matches!(p.hook, Hook::CgroupSockRelease | Hook::CgroupSockAddr(_)))
                .filter(|_| caps.cgroup2.is_none() && backend == Backend::Tracepoint)
                .map(|p| target_name(p.hook))
                .collect();
            if !cgroup.is_empty() {
                missing.push(format!("a cgroup v2 mount (for {})", cgroup.join(", ")));
            }
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
        Hook::IterTaskFile => "iter/task_file".to_owned(),
        Hook::IterTcpSeed => "iter/tcp (start-up walk)".to_owned(),
        Hook::IterUdpSeed => "iter/udp (start-up walk)".to_owned(),
        Hook::CgroupSkbIngress => "cgroup_skb/ingress".to_owned(),
        Hook::CgroupSkbEgress => "cgroup_skb/egress".to_owned(),
        Hook::CgroupSockAddr(attach) => attach.section().to_owned(),
        Hook::Uprobe => "uprobe (per TLS library file)".to_owned(),
        Hook::Uretprobe => "uretprobe (per TLS library file)".to_owned(),
    }
}

/// Adds the packet capture to `plan` when the configuration asks for it and the kernel can run
/// it, and says in the plan's reason what was decided (with `http`: whether the capture's
/// programs also parse HTTP/1.x). Never refuses the tracer: without the capture, connections
/// are traced and DNS and HTTP stay empty (the reason says why).
pub fn add_capture(plan: &mut Plan, enabled: bool, http: bool, caps: &Capabilities) {
    let without = if !enabled {
        Some("off in the configuration".to_owned())
    } else if caps.kernel < CAPTURE_MIN_KERNEL {
        Some(format!("Linux < {CAPTURE_MIN_KERNEL}"))
    } else if caps.cgroup2.is_none() {
        Some("no cgroup v2 mount".to_owned())
    } else {
        None
    };
    match without {
        Some(why) => plan.reason.push_str(&format!(
            "; without packet capture ({why}): no DNS, no HTTP"
        )),
        None => {
            plan.probes.extend_from_slice(CAPTURE_PROBES);
            plan.reason.push_str(if http {
                "; packet capture on cgroup_skb ingress and egress (DNS, HTTP/1.x)"
            } else {
                "; packet capture on cgroup_skb ingress and egress (DNS)"
            });
        }
    }
}

/// Adds the TLS uprobes to `plan` (loaded now, attached per library file later by the file
/// registry) when `enabled` and the capture's HTTP path runs: they write its records to its
/// ring. Says in the plan's reason what was decided.
pub fn add_tls(plan: &mut Plan, enabled: bool, http: bool, caps: &Capabilities) {
    if !enabled {
        return;
    }
    let capture = plan.probes.iter().any(|p| p.hook == Hook::CgroupSkbIngress);
    let without = if caps.kernel < TLS_MIN_KERNEL {
        Some(format!("Linux < {TLS_MIN_KERNEL}"))
    } else if !capture || !http {
        Some("no packet capture with HTTP, whose ring and records they use".to_owned())
    } else {
        None
    };
    match without {
        Some(why) => plan
            .reason
            .push_str(&format!("; without TLS uprobes ({why}): no HTTPS")),
        None => {
            plan.probes.extend_from_slice(TLS_PROBES);
            plan.reason
                .push_str("; TLS uprobes on OpenSSL and GnuTLS files (HTTPS)");
        }
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
                    reason.push_str(&format!(
                        "; {}",
                        without_seed(&format!("Linux < {ITER_MIN_KERNEL}"))
                    ));
                }
                if let (Some(root), true) = (
                    &caps.cgroup2,
                    probes.iter().any(|p| {
                        matches!(
                            p.hook,
                            Hook::CgroupSockOps | Hook::CgroupSockRelease | Hook::CgroupSockAddr(_)
                        )
                    }),
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
    use tracer_common::names;

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
    fn the_capture_is_added_only_when_asked_and_possible_and_the_reason_says_so() {
        let caps = host_like();
        let base = plan(BackendChoice::Auto, &caps).unwrap();
        let mut on = base.clone();
        add_capture(&mut on, true, true, &caps);
        let added: Vec<_> = on.probes[base.probes.len()..]
            .iter()
            .map(|p| p.program)
            .collect();
        assert_eq!(
            added,
            [names::PROG_PACKET_INGRESS, names::PROG_PACKET_EGRESS]
        );
        assert!(on.reason.ends_with("(DNS, HTTP/1.x)"), "{}", on.reason);
        let mut dns_only = base.clone();
        add_capture(&mut dns_only, true, false, &caps);
        assert_eq!(dns_only.probes, on.probes);
        assert!(dns_only.reason.ends_with("(DNS)"), "{}", dns_only.reason);
        let mut off = base.clone();
        add_capture(&mut off, false, true, &caps);
        assert_eq!(off.probes, base.probes);
        assert!(
            off.reason
                .contains("without packet capture (off in the configuration)")
        );
        let mut no_cgroup = base.clone();
        let mut caps = caps;
        caps.cgroup2 = None;
        add_capture(&mut no_cgroup, true, true, &caps);
        assert_eq!(no_cgroup.probes, base.probes);
        assert!(
            no_cgroup.reason.contains("(no cgroup v2 mount)"),
            "{}",
            no_cgroup.reason
        );
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

    #[test]
    fn the_tracepoint_backend_needs_a_cgroup2_mount_and_says_so() {
        let mut caps =
            Capabilities::for_tests(KernelVersion::new(6, 18, 44), true, false, false, true);
        let planned = plan(BackendChoice::Force(Backend::Tracepoint), &caps).unwrap();
        let programs: Vec<_> = planned.probes.iter().map(|p| p.program).collect();
        for program in [
            names::PROG_UDP_RELEASE,
            names::PROG_UDP_SENDMSG4,
            names::PROG_UDP_SENDMSG6,
            names::PROG_UDP_RECVMSG4,
            names::PROG_UDP_RECVMSG6,
        ] {
            assert!(programs.contains(&program), "{program} in {programs:?}");
        }
        // The peers' programs come after the length events they hand the peers to.
        let position = |name| programs.iter().position(|p| *p == name).unwrap();
        for program in [names::PROG_UDP_SENDMSG4, names::PROG_UDP_RECVMSG6] {
            assert!(position(names::PROG_TP_SEND) < position(program));
            assert!(position(names::PROG_TP_RECV) < position(program));
        }

        caps.cgroup2 = None;
        let err = plan(BackendChoice::Force(Backend::Tracepoint), &caps).unwrap_err();
        assert!(
            err.to_string().contains(
                "a cgroup v2 mount (for cgroup/sendmsg4, cgroup/sendmsg6, cgroup/recvmsg4, \
                 cgroup/recvmsg6, cgroup/sock_release)"
            ),
            "{err}"
        );
    }

    /// Syscall tracepoints switch every syscall of every process onto the kernel's slower
    /// traced path: no backend plans one (the UDP peers come from cgroup `sock_addr` programs on
    /// the tracepoint backend, from the kernel `msghdr` on the others; the owners of accepted
    /// sockets from their first I/O and the `iter/task_file` walk at read time).
    #[test]
    fn no_backend_plans_a_syscall_tracepoint() {
        for backend in Backend::PREFERENCE {
            for kernel in [KernelVersion::new(6, 12, 0), KernelVersion::new(6, 18, 44)] {
                let caps = Capabilities::for_tests(kernel, true, true, true, true);
                let planned = plan(BackendChoice::Force(backend), &caps).unwrap();
                let syscalls: Vec<&str> = planned
                    .probes
                    .iter()
                    .filter_map(|p| match p.hook {
                        Hook::Tracepoint {
                            category: "syscalls",
                            name,
                        } => Some(name),
                        _ => None,
                    })
                    .collect();
                assert!(syscalls.is_empty(), "{backend} on {kernel}: {syscalls:?}");
                assert!(
                    planned.probes.iter().any(|p| p.hook == Hook::IterTaskFile),
                    "{backend} on {kernel}"
                );
                let sock_addr = planned
                    .probes
                    .iter()
                    .filter(|p| matches!(p.hook, Hook::CgroupSockAddr(_)))
                    .count();
                // Only the tracepoint backend needs them: the others read the peer from the
                // kernel `msghdr` in the program that counts the datagram.
                let expected = if backend == Backend::Tracepoint { 4 } else { 0 };
                assert_eq!(sock_addr, expected, "{backend} on {kernel}");
            }
        }
    }

    #[test]
    fn the_plan_reason_says_where_the_cgroup2_root_came_from() {
        let mut caps =
            Capabilities::for_tests(KernelVersion::new(6, 12, 0), true, true, true, true);
        let cases = [
            (
                crate::kernel::capabilities::Cgroup2Root::Mounted(std::path::PathBuf::from(
                    "/sys/fs/cgroup",
                )),
                "cgroup v2 root /sys/fs/cgroup (mounted here)",
            ),
            (
                crate::kernel::capabilities::Cgroup2Root::ViaPid1(std::path::PathBuf::from(
                    "/proc/1/root/sys/fs/cgroup",
                )),
                "cgroup v2 root /proc/1/root/sys/fs/cgroup (pid 1's mount",
            ),
            (
                crate::kernel::capabilities::Cgroup2Root::PrivateMount,
                "from a private cgroup2 mount",
            ),
        ];
        for (root, expected) in cases {
            caps.cgroup2 = Some(root);
            for backend in [Backend::Fentry, Backend::Kprobe, Backend::Tracepoint] {
                let planned = plan(BackendChoice::Force(backend), &caps).unwrap();
                assert!(planned.reason.contains(expected), "{}", planned.reason);
            }
        }
    }
}
