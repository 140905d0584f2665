//! The protocol stack of every TCP connection (`ConnectionStats::protocol_stack`): the packet
//! capture classifies each socket's first payloads (`tracer_common::classify`, in
//! `tracer-ebpf/src/packet/http.rs`) and writes the stack into its connection entry
//! (`tracer-ebpf/src/conn/protocol.rs`), which the map read and the close carry to userspace.
//!
//! Each conversation plays the first payloads real clients and servers sent (the classifier's
//! recorded fixtures, `tracer_integration::protocols`) between the test's own client and server
//! on 127.0.0.1 in a fresh namespace, so it runs on every VM kernel. Both ends' connections must
//! carry exactly the conversation's stack, open (read from the map) and closed before any call
//! (the close record); plain text and random bulk bytes must carry none.
//!
//! The entries are created by the attach backend's hooks, so these run with every backend.

use std::{
    collections::HashMap,
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    time::{Duration, Instant},
};

use tracer::{
    BackendChoice, Config, Tracer,
    model::{ConnectionStats, Protocol, ProtocolStack},
};
use tracer_integration::{
    netns::{current_netns_inode, in_fresh_netns},
    policy::loaded_or_skip,
    protocols::{CONVERSATIONS, converse, echo, ends, random_bytes},
    tracer::backend_under_test,
};

fn new_tracer() -> Option<Tracer> {
    loaded_or_skip(Tracer::new(Config {
        backend: BackendChoice::Force(backend_under_test()),
        ..Config::default()
    }))
}

fn stack(layers: [u8; 3]) -> ProtocolStack {
    let [api, application, encryption] = layers;
    ProtocolStack {
        api,
        application,
        encryption,
    }
}

/// A connection as the test names it: local and remote endpoints.
type Flow = (SocketAddr, SocketAddr);

fn flow(conn: &ConnectionStats) -> Flow {
    (
        SocketAddr::new(conn.tuple.src, conn.tuple.sport),
        SocketAddr::new(conn.tuple.dst, conn.tuple.dport),
    )
}

/// What the client was told about each flow of this namespace: its stack (merged over the
/// calls, as the state merges readings) and whether it was reported closed.
#[derive(Debug, Default, Clone, Copy)]
struct Seen {
    stack: ProtocolStack,
    closed: bool,
    reports: u32,
}

/// Calls until every flow of `flows` was reported (closed ones, if `closed`) with a stack that
/// is not unknown where `want` says it should not be, at most 10 s; then returns what was seen.
fn collect(
    tracer: &Tracer,
    client: &str,
    flows: &[(Flow, ProtocolStack)],
    closed: bool,
) -> HashMap<Flow, Seen> {
    let netns = current_netns_inode().expect("netns") as u32;
    let mut seen: HashMap<Flow, Seen> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let delta = tracer.get_active_connections(client).expect("call");
        for conn in delta
            .conns
            .iter()
            .filter(|c| c.tuple.netns == netns && c.tuple.protocol == Protocol::Tcp)
        {
            let entry = seen.entry(flow(conn)).or_default();
            entry.stack.merge(&conn.protocol_stack);
            entry.closed |= conn.is_closed;
            entry.reports += 1;
        }
        let done = flows.iter().all(|(f, want)| {
            seen.get(f).is_some_and(|s| {
                (!closed || s.closed) && (want.is_unknown() || !s.stack.is_unknown())
            })
        });
        if done || Instant::now() > deadline {
            return seen;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn protocol_counters(tracer: &Tracer) -> Vec<(&'static str, u64)> {
    tracer
        .counters()
        .expect("counters")
        .iter()
        .filter(|s| s.info.name.starts_with("protocol"))
        .map(|s| (s.info.name, s.value))
        .collect()
}

/// Both ends of each conversation, with the stack they must carry.
fn both_ends(
    pairs: &[(&'static str, [u8; 3], TcpStream, TcpStream)],
) -> Vec<(&'static str, Flow, ProtocolStack)> {
    let mut flows = Vec::new();
    for (name, layers, client, server) in pairs {
        flows.push((*name, ends(client), stack(*layers)));
        flows.push((*name, ends(server), stack(*layers)));
    }
    flows
}

fn assert_stacks(
    tracer: &Tracer,
    flows: &[(&'static str, Flow, ProtocolStack)],
    seen: &HashMap<Flow, Seen>,
    closed: bool,
) {
    let counters = protocol_counters(tracer);
    for (name, f, want) in flows {
        let got = seen
            .get(f)
            .unwrap_or_else(|| panic!("{name}: {f:?} never reported; counters {counters:?}"));
        assert_eq!(
            (got.stack, got.closed),
            (*want, closed),
            "{name}: {} -> {}: stack and closed; counters {counters:?}",
            f.0,
            f.1
        );
    }
}

fn listener() -> TcpListener {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind")
}

#[test]
fn each_protocol_is_on_both_ends_of_an_open_connection() {
    in_fresh_netns(|| {
        let Some(tracer) = new_tracer() else {
            return;
        };
        tracer.register_client("protocols").expect("register");
        let listener = listener();
        let pairs: Vec<_> = CONVERSATIONS
            .iter()
            .map(|c| {
                let (client, server) = converse(&listener, c.payloads);
                (c.name, c.stack, client, server)
            })
            .collect();
        let flows = both_ends(&pairs);
        let wanted: Vec<_> = flows.iter().map(|(_, f, s)| (*f, *s)).collect();
        let seen = collect(&tracer, "protocols", &wanted, false);
        assert_stacks(&tracer, &flows, &seen, false);
        drop(pairs);
    });
}

#[test]
fn a_connection_closed_before_any_call_carries_its_stack() {
    in_fresh_netns(|| {
        let Some(tracer) = new_tracer() else {
            return;
        };
        tracer.register_client("protocols").expect("register");
        let listener = listener();
        let pairs: Vec<_> = CONVERSATIONS
            .iter()
            .map(|c| {
                let (client, server) = converse(&listener, c.payloads);
                (c.name, c.stack, client, server)
            })
            .collect();
        let flows = both_ends(&pairs);
        // Closed by both ends (the client first) before the client's first call: each comes
        // from its close record.
        drop(pairs);
        let wanted: Vec<_> = flows.iter().map(|(_, f, s)| (*f, *s)).collect();
        let seen = collect(&tracer, "protocols", &wanted, true);
        assert_stacks(&tracer, &flows, &seen, true);
    });
}

#[test]
fn text_lines_and_random_bulk_bytes_are_unknown() {
    in_fresh_netns(|| {
        let Some(tracer) = new_tracer() else {
            return;
        };
        tracer.register_client("protocols").expect("register");
        let listener = listener();
        let (hello_client, hello_server) = echo(&listener, b"hello\n".to_vec(), 64);
        // 1 MiB: bulk segments up to 64 KiB each way, the first four of each socket classified
        // (and more while any could be: none should).
        let (bulk_client, bulk_server) = echo(&listener, random_bytes(1 << 20, 11), 16 << 10);
        // A known conversation on the same listener, so that a tracer that classifies nothing
        // fails here too.
        let redis = CONVERSATIONS
            .iter()
            .find(|c| c.name == "redis")
            .expect("redis conversation");
        let (redis_client, redis_server) = converse(&listener, redis.payloads);
        let unknown = ProtocolStack::default();
        let flows = vec![
            ("hello", ends(&hello_client), unknown),
            ("hello", ends(&hello_server), unknown),
            ("bulk", ends(&bulk_client), unknown),
            ("bulk", ends(&bulk_server), unknown),
            ("redis", ends(&redis_client), stack(redis.stack)),
            ("redis", ends(&redis_server), stack(redis.stack)),
        ];
        let wanted: Vec<_> = flows.iter().map(|(_, f, s)| (*f, *s)).collect();
        let seen = collect(&tracer, "protocols", &wanted, false);
        assert_stacks(&tracer, &flows, &seen, false);
        drop((hello_client, hello_server, bulk_client, bulk_server));
        drop((redis_client, redis_server));
    });
}
