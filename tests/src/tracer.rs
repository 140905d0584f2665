//! Loading the connection tracer for the backend under test, and collecting what it saw for one
//! network namespace.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    time::{Duration, Instant},
};

use tracer::{
    KernelVersion,
    kernel::{
        capabilities::find_cgroup2_root,
        conn_tracer::{ConnTracer, KernelConfig},
        plan::{Backend, BackendChoice, Hook},
    },
};
use tracer_common::conn::{AF_INET6, ClosedConn, ConnStats, ConnTuple, FLAG_CLOSED_BY_SOCK_OPS};

use crate::policy::{backend, loaded_or_skip};

/// The backend named by `TRACER_TEST_BACKEND`.
pub fn backend_under_test() -> Backend {
    let name = backend();
    Backend::from_name(&name).unwrap_or_else(|| panic!("unknown TRACER_TEST_BACKEND {name}"))
}

/// The kernel configuration of the connection core's tests (bytes, closes, UDP flows, owners,
/// failures, limits): the default with the packet capture off. The capture (DNS, HTTP and the
/// protocol classifier: `tracer-ebpf/src/packet`) is a set of `cgroup_skb` programs beside the
/// core, not part of any backend; its tests, and every test of the whole tracer
/// (`Tracer::new`: `api`, `identity`, `protocols`, `dns`, `http`, ...), run it beside the core
/// with the default configuration. Loaded here too, its two programs would add their
/// verification to each core test for nothing that test checks: 1-2.7 s each in the emulated
/// VMs, more than the core's 25 programs together. `lifecycle` loads the default (every program).
pub fn core_config() -> KernelConfig {
    let mut config = KernelConfig::default();
    config.capture.enabled = false;
    config
}

/// Loads the tracer forced to the backend under test, with `config`'s sizes. `None` (after a
/// SKIP line) only where the policy allows skipping.
pub fn load(config: KernelConfig) -> Option<ConnTracer> {
    let config = KernelConfig {
        backend: BackendChoice::Force(backend_under_test()),
        ..config
    };
    let tracer = loaded_or_skip(ConnTracer::load(&config))?;
    assert_eq!(tracer.plan().backend, backend_under_test());
    Some(tracer)
}

/// Whether `tracer` closes TCP connections from the cgroup `sock_ops` state callback, after
/// checking that it does exactly where it should: Linux 5.10+ (`bpf_sock_ops.sk`) with a
/// cgroup v2 hierarchy the tracer can reach (mounted here, pid 1's, or a private mount),
/// whatever the backend.
pub fn closes_by_sock_ops(tracer: &ConnTracer) -> bool {
    let planned = tracer
        .plan()
        .probes
        .iter()
        .any(|p| p.hook == Hook::CgroupSockOps);
    let kernel = KernelVersion::current().expect("kernel version");
    let cgroup2 = find_cgroup2_root();
    let expected = kernel >= KernelVersion::new(5, 10, 0) && cgroup2.is_some();
    assert_eq!(
        planned,
        expected,
        "cgroup/sock_ops planned on {kernel} (cgroup v2: {:?}): {}",
        cgroup2,
        tracer.plan().reason
    );
    planned
}

/// The flags a closed TCP connection of `tracer` carries: `base` (`FLAG_ESTABLISHED` and
/// `FLAG_CLOSED` as the test expects), plus the sock_ops mark where that hook runs.
pub fn tcp_close_flags(tracer: &ConnTracer, base: u8) -> u8 {
    if closes_by_sock_ops(tracer) {
        base | FLAG_CLOSED_BY_SOCK_OPS
    } else {
        base
    }
}

/// Local and remote socket addresses of a tuple.
pub fn endpoints(tuple: &ConnTuple) -> (SocketAddr, SocketAddr) {
    let ip = |bytes: [u8; 16]| -> IpAddr {
        if tuple.family == AF_INET6 {
            IpAddr::V6(Ipv6Addr::from(bytes))
        } else {
            let [a, b, c, d, ..] = bytes;
            IpAddr::V4(Ipv4Addr::new(a, b, c, d))
        }
    };
    (
        SocketAddr::new(ip(tuple.saddr), tuple.sport),
        SocketAddr::new(ip(tuple.daddr), tuple.dport),
    )
}

/// Drains closed events until `done` holds for those collected so far (bounded wait: closes that
/// complete in softirq may land a moment after the test's close() returns), returning them all.
pub fn collect_closed(
    tracer: &ConnTracer,
    netns: u32,
    done: impl Fn(&[ClosedConn]) -> bool,
) -> Vec<ClosedConn> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut all = Vec::new();
    loop {
        tracer.drain_closed(&mut all);
        let ours: Vec<ClosedConn> = all
            .iter()
            .filter(|c| c.stats.tuple.netns == netns)
            .copied()
            .collect();
        if done(&ours) || Instant::now() > deadline {
            return ours;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The one record whose local and remote endpoints are these, or a panic listing what there is.
pub fn the_one(records: &[ClosedConn], local: SocketAddr, remote: SocketAddr) -> &ConnStats {
    let matching: Vec<&ClosedConn> = records
        .iter()
        .filter(|c| endpoints(&c.stats.tuple) == (local, remote))
        .collect();
    match matching.as_slice() {
        [one] => &one.stats,
        _ => panic!(
            "expected exactly one closed connection {local} -> {remote}, found {} among {} \
             records: matching {:?}; records sharing a port with it: {:?}",
            matching.len(),
            records.len(),
            matching
                .iter()
                .map(|c| summary(&c.stats))
                .collect::<Vec<_>>(),
            records
                .iter()
                .filter(|c| {
                    let (l, r) = endpoints(&c.stats.tuple);
                    [l.port(), r.port()].contains(&local.port())
                        && [l.port(), r.port()].contains(&remote.port())
                })
                .map(|c| summary(&c.stats))
                .collect::<Vec<_>>()
        ),
    }
}

/// One line per record in failure messages: a full `{:#?}` of hundreds of records buries the
/// reason in output that CI logs truncate.
pub fn summary(stats: &ConnStats) -> String {
    let (local, remote) = endpoints(&stats.tuple);
    format!(
        "{local}->{remote} proto {} pid {} dir {} sent {}B/{}p recv {}B/{}p retrans {} flags {:#x} failure {}",
        stats.tuple.protocol,
        stats.tuple.pid,
        stats.direction,
        stats.sent_bytes,
        stats.sent_packets,
        stats.recv_bytes,
        stats.recv_packets,
        stats.retransmits,
        stats.flags,
        stats.failure
    )
}

/// The one open connection whose endpoints are these, read from the kernel map now.
pub fn the_active(tracer: &ConnTracer, local: SocketAddr, remote: SocketAddr) -> ConnStats {
    let open = tracer.connections().expect("read connections");
    let matching: Vec<ConnStats> = open
        .iter()
        .filter(|(_, s)| endpoints(&s.tuple) == (local, remote))
        .map(|(_, s)| *s)
        .collect();
    match matching.as_slice() {
        [one] => *one,
        _ => panic!(
            "expected exactly one open connection {local} -> {remote}, found {}",
            matching.len()
        ),
    }
}

/// The value of the counter `name` of `tracer` (any source: kernel, state, enrichments), or a
/// panic if the tracer has no such counter (a renamed counter must not read as zero).
pub fn counter(tracer: &tracer::Tracer, name: &str) -> u64 {
    tracer
        .counters()
        .expect("counters")
        .get(name)
        .unwrap_or_else(|| panic!("no counter {name}"))
}
