//! TCP state transitions seen by the `sock:inet_sock_set_state` probe for the test's own loopback
//! connections, IPv4 and IPv6, compared with what TCP must go through for the steps the test takes.

use std::{
    io::{Read, Write},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream},
    time::{Duration, Instant},
};

use tracer::kernel::{
    counters::Counter,
    tcp_state::{SocketTransitions, TcpState::*, TcpStateConfig, TcpStateProbe},
};
use tracer_integration::{netns::in_fresh_netns, policy::loaded_or_skip};

/// Sockets of one connection as seen from the test.
struct Endpoints {
    listener: SocketAddr,
    client: SocketAddr,
}

/// Opens a connection, exchanges a request and a reply, then closes the client first and the
/// server once it has read the client's FIN, so the sequence of states is deterministic (the
/// client's FIN is acknowledged before the server sends its own: no simultaneous close).
fn converse_and_close(ip: IpAddr) -> Endpoints {
    let listener = TcpListener::bind((ip, 0)).expect("bind");
    let listener_addr = listener.local_addr().expect("listener addr");
    let mut client = TcpStream::connect(listener_addr).expect("connect");
    let client_addr = client.local_addr().expect("client addr");
    let (mut server, peer) = listener.accept().expect("accept");
    assert_eq!(peer, client_addr);

    client.write_all(b"ping").expect("client write");
    let mut buf = [0u8; 4];
    server.read_exact(&mut buf).expect("server read");
    server.write_all(b"pong").expect("server write");
    client.read_exact(&mut buf).expect("client read");
    assert_eq!(&buf, b"pong");

    drop(client);
    let mut rest = Vec::new();
    let n = server.read_to_end(&mut rest).expect("server reads EOF");
    assert_eq!(n, 0, "client sent nothing after the request");
    drop(server);
    drop(listener);
    Endpoints {
        listener: listener_addr,
        client: client_addr,
    }
}

/// The socket whose latest tuple is `local` -> `remote` (remote port 0 for a listener).
fn find(
    sockets: &[SocketTransitions],
    local: SocketAddr,
    remote_port: u16,
) -> Option<&SocketTransitions> {
    sockets
        .iter()
        .find(|s| s.local == local && s.remote.port() == remote_port)
}

fn expect_transitions(ip: &str) {
    let ip: IpAddr = ip.parse().expect("ip");
    in_fresh_netns(move || {
        let Some(probe) = loaded_or_skip(TcpStateProbe::load(TcpStateConfig::default())) else {
            return;
        };
        let ends = converse_and_close(ip);
        let server_local = ends.listener;
        let expected_client = vec![
            (Close, SynSent),
            (SynSent, Established),
            (Established, FinWait1),
            (FinWait1, FinWait2),
            (FinWait2, Close),
        ];
        let expected_server = vec![
            (Listen, SynRecv),
            (SynRecv, Established),
            (Established, CloseWait),
            (CloseWait, LastAck),
            (LastAck, Close),
        ];
        let expected_listener = vec![(Close, Listen), (Listen, Close)];

        // The last transitions (the client's FIN_WAIT2 -> CLOSE, the server's LAST_ACK -> CLOSE)
        // happen when the final segments are processed, possibly in softirq after our close()
        // returned: wait until they are there, bounded, then compare exactly.
        let deadline = Instant::now() + Duration::from_secs(10);
        let sockets = loop {
            let sockets = probe.sockets().expect("read map");
            let done = [
                find(&sockets, ends.client, ends.listener.port()),
                find(&sockets, server_local, ends.client.port()),
            ]
            .iter()
            .all(|s| {
                s.is_some_and(|s| {
                    s.transitions.last() == Some(&(FinWait2, Close))
                        || s.transitions.last() == Some(&(LastAck, Close))
                })
            });
            if done || Instant::now() > deadline {
                break sockets;
            }
            std::thread::sleep(Duration::from_millis(20));
        };

        let client = find(&sockets, ends.client, ends.listener.port())
            .unwrap_or_else(|| panic!("no record for the client socket {}", ends.client));
        assert_eq!(
            client.transitions, expected_client,
            "client {}",
            ends.client
        );
        assert_eq!(usize::from(client.total), expected_client.len());

        let server = find(&sockets, server_local, ends.client.port())
            .unwrap_or_else(|| panic!("no record for the accepted socket {server_local}"));
        assert_eq!(server.transitions, expected_server, "accepted socket");
        assert_eq!(server.remote, ends.client);

        let listener = find(&sockets, server_local, 0)
            .unwrap_or_else(|| panic!("no record for the listener {server_local}"));
        assert_eq!(listener.transitions, expected_listener, "listener");

        let counters = probe.counters().expect("counters");
        for (name, value) in counters.iter() {
            assert_eq!(value, 0, "kernel counter {name}");
        }
    });
}

#[test]
fn tcp_v4_loopback_connection_goes_through_exact_states() {
    expect_transitions("127.0.0.1");
}

#[test]
fn tcp_v6_loopback_connection_goes_through_exact_states() {
    expect_transitions("::1");
}

#[test]
fn refused_connection_goes_from_syn_sent_to_close() {
    in_fresh_netns(|| {
        let Some(probe) = loaded_or_skip(TcpStateProbe::load(TcpStateConfig::default())) else {
            return;
        };
        // A port nobody listens on in this fresh namespace: bind then drop to learn a free one.
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let err = TcpStream::connect(("127.0.0.1", port)).expect_err("nothing listens");
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
        let sockets = probe.sockets().expect("read map");
        let refused: Vec<_> = sockets
            .iter()
            .filter(|s| s.remote.port() == port && s.transitions.first() == Some(&(Close, SynSent)))
            .collect();
        assert_eq!(
            refused.len(),
            1,
            "exactly one connecting socket: {sockets:?}"
        );
        assert_eq!(
            refused[0].transitions,
            vec![(Close, SynSent), (SynSent, Close)]
        );
    });
}

#[test]
fn tiny_map_counts_every_transition_that_did_not_fit() {
    in_fresh_netns(|| {
        let Some(probe) = loaded_or_skip(TcpStateProbe::load(TcpStateConfig { max_sockets: 1 }))
        else {
            return;
        };
        // Listener + client + accepted socket, but the map holds one socket: the listener comes
        // first and takes the slot; the client's 5 and the accepted socket's 5 transitions are
        // each counted as map-full.
        let ends = converse_and_close("127.0.0.1".parse().expect("ip"));
        let sockets = probe.sockets().expect("read map");
        assert_eq!(sockets.len(), 1, "{sockets:?}");
        assert_eq!(
            sockets[0].local, ends.listener,
            "the listener took the only slot"
        );
        assert_eq!(
            sockets[0].transitions,
            vec![(Close, Listen), (Listen, Close)]
        );
        let full = probe
            .counters()
            .expect("counters")
            .get(Counter::TcpStateMapFull);
        assert_eq!(full, 10, "map-full counter");
    });
}
