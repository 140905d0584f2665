//! Loading and dropping the probes leaves nothing behind: no descriptors, programs or maps.

use std::time::{Duration, Instant};

use tracer::kernel::{
    conn_tracer::KernelConfig,
    tcp_state::{TcpStateConfig, TcpStateProbe},
};
use tracer_integration::{leaks::Snapshot, policy::loaded_or_skip, tracer::load};

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
