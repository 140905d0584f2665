//! Failed TCP connections carry the right errno and the connecting process's pid: refused
//! (connect to a closed port), reset (abortive close with SO_LINGER {1,0}, seen by the peer),
//! timed out (SYNs dropped, `tcp_syn_retries` lowered in the namespace).

use std::{
    io::Read,
    net::{SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd,
    time::Duration,
};

use tracer_common::conn::{
    DIRECTION_INCOMING, DIRECTION_OUTGOING, FLAG_CLOSE_PENDING, FLAG_CLOSED, FLAG_ESTABLISHED,
};
use tracer_integration::{
    kernel_view::{nft, set_sysctl, snmp},
    netns::{current_netns_inode, in_fresh_netns},
    tracer::{collect_closed, core_config, endpoints, load, tcp_close_flags, the_one},
};

const ECONNRESET: u16 = 104;
const ETIMEDOUT: u16 = 110;
const ECONNREFUSED: u16 = 111;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

#[test]
fn refused_connect_reports_econnrefused_with_the_connecting_pid() {
    in_fresh_netns(|| {
        let Some(tracer) = load(core_config()) else {
            return;
        };
        let netns = current_netns_inode().expect("netns") as u32;
        let port = free_port();
        let err = TcpStream::connect(("127.0.0.1", port)).expect_err("refused");
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
        let closed = collect_closed(&tracer, netns, |c| !c.is_empty());
        assert_eq!(closed.len(), 1, "{closed:#?}");
        let failed = &closed[0].stats;
        assert_eq!(failed.failure, ECONNREFUSED);
        assert_eq!(failed.tuple.pid, std::process::id());
        assert_eq!(failed.direction, DIRECTION_OUTGOING);
        assert_eq!(
            failed.flags,
            tcp_close_flags(&tracer, FLAG_CLOSED),
            "never established"
        );
        assert_eq!(
            endpoints(&failed.tuple).1,
            SocketAddr::from(([127, 0, 0, 1], port))
        );
        assert_ne!(
            endpoints(&failed.tuple).0.port(),
            0,
            "the source port the connect used"
        );
        assert_eq!((failed.sent_bytes, failed.recv_bytes), (0, 0));
    });
}

#[test]
fn abortive_close_is_a_reset_seen_by_the_peer() {
    in_fresh_netns(|| {
        let Some(tracer) = load(core_config()) else {
            return;
        };
        let netns = current_netns_inode().expect("netns") as u32;
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let server_addr = listener.local_addr().expect("addr");
        let client = TcpStream::connect(server_addr).expect("connect");
        let client_addr = client.local_addr().expect("addr");
        let (mut server, _) = listener.accept().expect("accept");
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: valid descriptor and option buffer.
        let rc = unsafe {
            libc::setsockopt(
                client.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&raw const linger).cast(),
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0);
        drop(client);
        let mut buf = [0u8; 1];
        let err = server.read(&mut buf).expect_err("reset");
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
        drop(server);

        let closed = collect_closed(&tracer, netns, |c| c.len() >= 2);
        let aborted = the_one(&closed, client_addr, server_addr);
        assert_eq!(aborted.failure, 0, "the side that aborts did not fail");
        assert_eq!(aborted.direction, DIRECTION_OUTGOING);
        let reset = the_one(&closed, server_addr, client_addr);
        assert_eq!(reset.failure, ECONNRESET, "the peer saw a reset");
        assert_eq!(reset.direction, DIRECTION_INCOMING);
        // The reset came before the accepting process did any I/O: its end waited for that
        // process's next call on the socket (the read that saw the reset), which named it.
        assert_eq!(
            reset.flags,
            tcp_close_flags(&tracer, FLAG_ESTABLISHED | FLAG_CLOSED) | FLAG_CLOSE_PENDING
        );
        assert_eq!(reset.tuple.pid, std::process::id(), "the accepting process");
    });
}

#[test]
fn dropped_syns_time_out_with_etimedout_and_count_the_syn_retransmits() {
    in_fresh_netns(|| {
        let Some(tracer) = load(core_config()) else {
            return;
        };
        let netns = current_netns_inode().expect("netns") as u32;
        set_sysctl("net/ipv4/tcp_syn_retries", "1");
        let port = free_port();
        nft(&format!(
            "add table inet syn; add chain inet syn out {{ type filter hook output priority 0; }}; add rule inet syn out tcp dport {port} drop"
        ));
        let retrans_before = snmp("Tcp", "RetransSegs");
        let started = std::time::Instant::now();
        let err = TcpStream::connect(("127.0.0.1", port)).expect_err("times out");
        assert_eq!(err.raw_os_error(), Some(libc::ETIMEDOUT), "{err}");
        assert!(started.elapsed() < Duration::from_secs(60));
        let closed = collect_closed(&tracer, netns, |c| !c.is_empty());
        assert_eq!(closed.len(), 1, "{closed:#?}");
        let failed = &closed[0].stats;
        assert_eq!(failed.failure, ETIMEDOUT);
        assert_eq!(failed.tuple.pid, std::process::id());
        assert_eq!(failed.direction, DIRECTION_OUTGOING);
        assert_eq!(failed.flags, tcp_close_flags(&tracer, FLAG_CLOSED));
        assert!(
            failed.retransmits >= 1,
            "SYNs were retransmitted before the timeout"
        );
        assert_eq!(
            u64::from(failed.retransmits),
            snmp("Tcp", "RetransSegs") - retrans_before
        );
    });
}
