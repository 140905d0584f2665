//! Bytes each side of a loopback TCP connection sent and received, compared with what the test
//! wrote and read, exactly: small writes, large writes, and MSG_PEEK (not counted twice).

use std::{
    io::{Read, Write},
    net::{IpAddr, TcpListener, TcpStream},
    os::fd::AsRawFd,
};

use tracer_common::conn::{DIRECTION_INCOMING, DIRECTION_OUTGOING, FLAG_CLOSED, FLAG_ESTABLISHED};
use tracer_integration::{
    netns::{current_netns_inode, in_fresh_netns},
    tracer::{collect_closed, core_config, load, tcp_close_flags, the_one},
};

/// What one run of the exchange did, from the test's side.
struct Exchange {
    client_sent: u64,
    server_sent: u64,
}

/// Client writes `request` in `chunk`-byte writes; the server peeks at the first bytes, reads
/// everything, and answers with `reply` bytes.
fn exchange(
    ip: IpAddr,
    request: usize,
    chunk: usize,
    reply: usize,
) -> (Exchange, std::net::SocketAddr, std::net::SocketAddr) {
    let listener = TcpListener::bind((ip, 0)).expect("bind");
    let server_addr = listener.local_addr().expect("addr");
    let server = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("accept");
        // Peek first: these bytes are read again below and must be counted once.
        let mut peek = [0u8; 16];
        // SAFETY: valid buffer and descriptor.
        let peeked = unsafe {
            libc::recv(
                stream.as_raw_fd(),
                peek.as_mut_ptr().cast(),
                peek.len(),
                libc::MSG_PEEK,
            )
        };
        assert!(peeked > 0, "peek");
        let mut received = vec![0u8; request];
        stream.read_exact(&mut received).expect("server read");
        stream.write_all(&vec![7u8; reply]).expect("server write");
        // Read the client's FIN, then close.
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).expect("eof");
        assert!(rest.is_empty());
    });
    let mut client = TcpStream::connect(server_addr).expect("connect");
    let client_addr = client.local_addr().expect("client addr");
    let payload = vec![1u8; request];
    for piece in payload.chunks(chunk) {
        client.write_all(piece).expect("client write");
    }
    let mut answer = vec![0u8; reply];
    client.read_exact(&mut answer).expect("client read");
    drop(client);
    server.join().expect("server thread");
    (
        Exchange {
            client_sent: request as u64,
            server_sent: reply as u64,
        },
        client_addr,
        server_addr,
    )
}

fn exact_bytes(ip: &'static str, request: usize, chunk: usize, reply: usize) {
    in_fresh_netns(move || {
        let Some(tracer) = load(core_config()) else {
            return;
        };
        let netns = current_netns_inode().expect("netns") as u32;
        let (done, client, server) = exchange(ip.parse().expect("ip"), request, chunk, reply);
        let closed = collect_closed(&tracer, netns, |c| c.len() >= 2);
        let pid = std::process::id();

        let outgoing = the_one(&closed, client, server);
        assert_eq!(outgoing.sent_bytes, done.client_sent, "client sent");
        assert_eq!(outgoing.recv_bytes, done.server_sent, "client received");
        assert_eq!(outgoing.direction, DIRECTION_OUTGOING);
        assert_eq!(outgoing.tuple.pid, pid);
        assert_eq!(
            outgoing.flags,
            tcp_close_flags(&tracer, FLAG_ESTABLISHED | FLAG_CLOSED)
        );
        assert_eq!(outgoing.failure, 0);

        let incoming = the_one(&closed, server, client);
        assert_eq!(incoming.sent_bytes, done.server_sent, "server sent");
        assert_eq!(
            incoming.recv_bytes, done.client_sent,
            "server received (peek not counted)"
        );
        assert_eq!(incoming.direction, DIRECTION_INCOMING);
        assert_eq!(incoming.tuple.pid, pid);
        assert_eq!(
            incoming.flags,
            tcp_close_flags(&tracer, FLAG_ESTABLISHED | FLAG_CLOSED)
        );
        assert_eq!(
            closed.len(),
            2,
            "nothing else closed in this namespace: {closed:#?}"
        );

        let counters = tracer.counters().expect("counters");
        assert_eq!(
            counters.get(tracer::kernel::counters::Counter::RingBufFull),
            0
        );
    });
}

#[test]
fn tcp_v4_small_writes_are_counted_exactly() {
    exact_bytes("127.0.0.1", 1000, 10, 333);
}

#[test]
fn tcp_v6_small_writes_are_counted_exactly() {
    exact_bytes("::1", 1000, 10, 333);
}

#[test]
fn tcp_v4_large_writes_are_counted_exactly() {
    exact_bytes("127.0.0.1", 6 << 20, 1 << 20, 3 << 20);
}

#[test]
fn tcp_v6_large_writes_are_counted_exactly() {
    exact_bytes("::1", 5 << 20, 256 << 10, 1 << 20);
}
