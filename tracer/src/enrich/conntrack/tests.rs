//! The follower without the kernel: what dumps and events do to lookups, the unavailable path.

use std::net::IpAddr;

use super::{parse::tests::dnat_entry, *};
use crate::model::{ConnectionTuple, Direction, Protocol};

fn disabled() -> ConntrackConfig {
    ConntrackConfig {
        enabled: false,
        ..ConntrackConfig::default()
    }
}

/// A follower with no sockets whose own namespace is `own`.
fn follower(own: u32) -> Conntrack {
    let mut c = Conntrack::start(&disabled());
    c.config.enabled = true;
    c.own = own;
    c
}

fn conn(netns: u32, src: IpAddr, sport: u16, dst: IpAddr, dport: u16) -> ConnectionStats {
    ConnectionStats::new(
        ConnectionTuple {
            src,
            dst,
            sport,
            dport,
            pid: 1,
            netns,
            protocol: Protocol::Tcp,
        },
        Direction::Outgoing,
        1,
    )
}

fn counter(c: &Conntrack, name: &str) -> u64 {
    let mut out = Vec::new();
    c.collect(&mut out);
    out.iter()
        .find(|s| s.info.name == name)
        .map(|s| s.value)
        .unwrap()
}

fn dump_of(entries: &[parse::CtEntry]) -> Batch {
    let mut batch = Batch::default();
    for e in entries {
        batch.updates.push(Update::New(*e));
    }
    batch
}

#[test]
fn config_rejects_zero_sizes() {
    assert!(ConntrackConfig::default().validate().is_ok());
    let zero = ConntrackConfig {
        max_entries: 0,
        ..ConntrackConfig::default()
    };
    assert!(matches!(
        zero.validate(),
        Err(crate::Error::InvalidConfig(_))
    ));
    let zero = ConntrackConfig {
        rcvbuf_bytes: 0,
        ..ConntrackConfig::default()
    };
    assert!(matches!(
        zero.validate(),
        Err(crate::Error::InvalidConfig(_))
    ));
}

#[test]
fn disabled_follows_nothing_and_translates_nothing() {
    let c = Conntrack::start(&disabled());
    c.sync(&HashSet::from([1, 2]));
    let e = dnat_entry();
    let client = conn(1, e.orig.src, e.orig.sport, e.orig.dst, e.orig.dport);
    assert_eq!(c.translation(&client), None);
    assert_eq!(counter(&c, "conntrack_netns_followed"), 0);
    assert_eq!(counter(&c, "conntrack_unavailable"), 0);
}

#[test]
fn a_dumped_entry_translates_both_sides_and_a_close_takes_its_side() {
    const NS: u32 = 7;
    let c = follower(99);
    let e = dnat_entry();
    c.take_dump(NS, dump_of(&[e]), false, Instant::now());
    assert_eq!(counter(&c, "conntrack_entries_added"), 1);
    assert_eq!(counter(&c, "conntrack_entries"), 2);

    let client = conn(NS, e.orig.src, e.orig.sport, e.orig.dst, e.orig.dport);
    let t = c.translation(&client).unwrap();
    assert_eq!((t.repl_src_ip, t.repl_sport), (e.reply.src, e.reply.sport));
    assert_eq!((t.repl_dst_ip, t.repl_dport), (e.reply.dst, e.reply.dport));
    let server = conn(NS, e.reply.src, e.reply.sport, e.reply.dst, e.reply.dport);
    let t = c.translation(&server).unwrap();
    assert_eq!((t.repl_src_ip, t.repl_sport), (e.orig.src, e.orig.sport));
    assert_eq!((t.repl_dst_ip, t.repl_dport), (e.orig.dst, e.orig.dport));
    // The same tuple in another namespace is another connection.
    assert_eq!(
        c.translation(&conn(
            NS + 1,
            e.orig.src,
            e.orig.sport,
            e.orig.dst,
            e.orig.dport
        )),
        None
    );

    assert!(c.take_translation(&client).is_some());
    assert_eq!(c.take_translation(&client), None);
    assert_eq!(counter(&c, "conntrack_entries"), 1);
    assert!(c.take_translation(&server).is_some());
    assert_eq!(counter(&c, "conntrack_entries"), 0);
    assert_eq!(counter(&c, "conntrack_lookups_hit"), 4);
    assert_eq!(counter(&c, "conntrack_lookups_miss"), 2);
}

#[test]
fn a_connection_of_another_namespace_finds_the_tracer_s_namespace_entry() {
    // A container's connection NATed by the host: the entry is in the host's (tracer's)
    // namespace, keyed by the container's tuple.
    const OWN: u32 = 5;
    let c = follower(OWN);
    let e = dnat_entry();
    c.take_dump(OWN, dump_of(&[e]), false, Instant::now());
    let container = conn(42, e.orig.src, e.orig.sport, e.orig.dst, e.orig.dport);
    assert!(c.translation(&container).is_some());
    assert!(c.take_translation(&container).is_some());
}

#[test]
fn destroy_events_keep_the_entry_for_the_grace_period() {
    const NS: u32 = 7;
    let mut c = follower(NS);
    c.config.destroyed_grace = Duration::ZERO;
    *c.table.lock() = Table::new(NonZeroUsize::MIN.saturating_add(15), Duration::ZERO);
    let e = dnat_entry();
    let now = Instant::now();
    c.take_dump(NS, dump_of(&[e]), false, now);
    let mut table = c.table.lock();
    c.apply(&mut table, NS, &[Update::Destroy(e)], now);
    assert_eq!(table.expire(now), 2);
    drop(table);
    assert_eq!(counter(&c, "conntrack_destroy_events"), 1);
}

#[test]
fn a_resync_dump_marks_what_it_no_longer_lists() {
    const NS: u32 = 7;
    let c = follower(NS);
    let e = dnat_entry();
    let mut other = e;
    other.orig.sport += 1;
    other.reply.dport += 1;
    let now = Instant::now();
    c.take_dump(NS, dump_of(&[e, other]), false, now);
    c.take_dump(NS, dump_of(&[other]), true, now);
    assert_eq!(c.table.lock().expire(now + Duration::from_secs(3600)), 2);
    let client = conn(NS, e.orig.src, e.orig.sport, e.orig.dst, e.orig.dport);
    assert_eq!(c.translation(&client), None);
}

#[test]
fn an_unavailable_conntrack_is_counted_retried_later_and_translates_nothing() {
    let c = follower(3);
    let mut namespaces = c.namespaces.lock();
    let now = Instant::now();
    for errno in [libc::EPROTONOSUPPORT, libc::EPERM] {
        c.opened(
            &mut namespaces,
            3,
            Err(std::io::Error::from_raw_os_error(errno)),
            now,
        );
    }
    assert!(namespaces.open.is_empty());
    assert_eq!(namespaces.failed.get(&3), Some(&(now + RETRY_AFTER)));
    drop(namespaces);
    assert_eq!(counter(&c, "conntrack_unavailable"), 2);
    let e = dnat_entry();
    assert_eq!(
        c.translation(&conn(3, e.orig.src, e.orig.sport, e.orig.dst, e.orig.dport)),
        None
    );
    // A sync before the retry time opens nothing and does not count again.
    c.sync(&HashSet::from([3]));
    assert_eq!(counter(&c, "conntrack_unavailable"), 2);
}

#[test]
fn a_namespace_that_cannot_be_found_is_counted_once_per_retry_period() {
    let c = follower(3);
    // Inode 1 is no network namespace.
    c.sync(&HashSet::from([1]));
    c.sync(&HashSet::from([1]));
    assert_eq!(counter(&c, "conntrack_netns_open_failures"), 1);
}

#[test]
fn the_follower_is_send_and_sync() {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<Conntrack>();
}

/// Drops `CAP_NET_ADMIN` from the calling thread's effective and permitted sets (capabilities
/// are per thread).
fn drop_net_admin() {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    const CAP_NET_ADMIN: u32 = 12;
    let mut header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let mut data = [Data::default(); 2];
    // SAFETY: capget/capset with a v3 header and the two data structs v3 expects.
    unsafe {
        assert_eq!(
            libc::syscall(libc::SYS_capget, &raw mut header, data.as_mut_ptr()),
            0
        );
        data[0].effective &= !(1 << CAP_NET_ADMIN);
        data[0].permitted &= !(1 << CAP_NET_ADMIN);
        assert_eq!(
            libc::syscall(libc::SYS_capset, &raw mut header, data.as_ptr()),
            0
        );
    }
}

#[test]
fn without_cap_net_admin_conntrack_is_unavailable_counted_and_nothing_fails() {
    // A thread without CAP_NET_ADMIN may not join the conntrack groups (EPERM), root or not.
    let c = std::thread::spawn(|| {
        drop_net_admin();
        Conntrack::start(&ConntrackConfig::default())
    })
    .join()
    .unwrap();
    assert_eq!(counter(&c, "conntrack_unavailable"), 1);
    assert_eq!(counter(&c, "conntrack_netns_followed"), 0);
    let e = dnat_entry();
    assert_eq!(
        c.translation(&conn(
            c.own,
            e.orig.src,
            e.orig.sport,
            e.orig.dst,
            e.orig.dport
        )),
        None
    );
    // Retried only after RETRY_AFTER: a sync now neither opens nor counts again.
    c.sync(&HashSet::from([c.own]));
    assert_eq!(counter(&c, "conntrack_unavailable"), 1);
}
