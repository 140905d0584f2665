//! One displayed connection: what the table and the JSON lines show, built from a
//! [`ConnectionStats`], and the throughput order.

use std::{cmp::Reverse, net::IpAddr, sync::Arc};

use tracer::model::{ConnectionStats, Connections, Direction, Protocol};

use crate::{
    addr,
    app::{self, HttpCounts, HttpIndex},
    errno,
    filter::Selection,
    process::ProcessNames,
};

/// Reverse DNS of a snapshot, as `Connections::dns` holds it.
pub type DnsNames = rustc_hash::FxHashMap<IpAddr, Vec<Arc<str>>>;

/// Open, closed, or failed with an errno.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Open,
    Closed,
    Failed(u16),
}

/// A connection as shown.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub process: String,
    pub pid: u32,
    pub protocol: Protocol,
    /// The application protocol stack's name ("HTTP", "gRPC/HTTP2"); `None`: not classified.
    pub app_protocol: Option<String>,
    /// HTTP requests this connection carried in the interval, as client or server; `None`:
    /// none seen.
    pub http: Option<HttpCounts>,
    pub local: String,
    pub remote: String,
    pub direction: Direction,
    pub state: State,
    /// Bytes and packets of this interval (`last`).
    pub tx_bytes: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub rx_packets: u64,
    /// Totals since the kernel entry was created (`monotonic`).
    pub tx_total: u64,
    pub rx_total: u64,
    pub retransmits: u32,
    /// Smoothed RTT; `None` for UDP, or TCP without a measurement.
    pub rtt_us: Option<u32>,
    pub cookie: u64,
    /// Container of the local process, and of the remote end when it is on this host.
    pub container: Option<String>,
    pub container_dest: Option<String>,
    /// The remote end as the peer really is, when NAT translated it.
    pub nat_remote: Option<String>,
    /// Gateway (if any) and interface of an outgoing connection to another host.
    pub via_gateway: Option<String>,
    pub via_interface: Option<String>,
    /// The remote address's name from DNS answers the tracer saw (`Connections::dns`).
    pub remote_name: Option<String>,
}

impl Row {
    /// The row of `conn`, owned by `process`.
    pub fn new(conn: &ConnectionStats, process: String) -> Self {
        let t = &conn.tuple;
        // A kernel record carries at most one failure; after aggregation, show the most frequent.
        let failure = conn
            .tcp_failures
            .iter()
            .max_by_key(|&(errno, count)| (count, Reverse(errno)))
            .map(|(errno, _)| errno);
        let state = match failure {
            Some(errno) => State::Failed(errno),
            None if conn.is_closed => State::Closed,
            None => State::Open,
        };
        let rtt_us = match t.protocol {
            Protocol::Tcp if conn.rtt_us > 0 => Some(conn.rtt_us),
            _ => None,
        };
        Self {
            process,
            pid: t.pid,
            protocol: t.protocol,
            app_protocol: app::protocol_name(&conn.protocol_stack),
            http: None,
            local: addr::endpoint(t.src, t.sport),
            remote: addr::endpoint(t.dst, t.dport),
            direction: conn.direction,
            state,
            tx_bytes: conn.last.sent_bytes,
            rx_bytes: conn.last.recv_bytes,
            tx_packets: conn.last.sent_packets,
            rx_packets: conn.last.recv_packets,
            tx_total: conn.monotonic.sent_bytes,
            rx_total: conn.monotonic.recv_bytes,
            retransmits: conn.monotonic.retransmits,
            rtt_us,
            cookie: conn.cookie,
            container: conn.containers.source.as_deref().map(str::to_owned),
            container_dest: conn.containers.dest.as_deref().map(str::to_owned),
            nat_remote: conn
                .nat
                .map(|n| addr::endpoint(n.repl_src_ip, n.repl_sport)),
            via_gateway: conn
                .via
                .as_ref()
                .and_then(|v| v.gateway)
                .map(|g| g.to_string()),
            via_interface: conn.via.as_ref().map(|v| match &v.interface_name {
                Some(name) => name.to_string(),
                None => format!("#{}", v.interface_index),
            }),
            remote_name: None,
        }
    }

    /// The row with the remote address's first name in `dns`, when DNS answered for it.
    pub fn named(mut self, conn: &ConnectionStats, dns: &DnsNames) -> Self {
        self.remote_name = dns
            .get(&conn.tuple.dst)
            .and_then(|names| names.first())
            .map(|name| name.to_string());
        self
    }

    /// The row with the HTTP requests `index` holds for this connection.
    pub fn with_http(mut self, conn: &ConnectionStats, index: &HttpIndex) -> Self {
        self.http = index.counts(&conn.tuple);
        self
    }

    /// Bytes moved this interval, both ways.
    pub fn throughput(&self) -> u64 {
        self.tx_bytes.saturating_add(self.rx_bytes)
    }

    /// The failure's errno name, if the connection failed.
    pub fn failure(&self) -> Option<String> {
        match self.state {
            State::Failed(code) => Some(errno::describe(code).into_owned()),
            _ => None,
        }
    }
}

/// The rows of the connections of `conns` that `selection` keeps, each with its connection, in
/// the library's order: the owner named, the remote's DNS name and the HTTP requests attached.
/// Ends the snapshot of `names` (pids not asked for are forgotten).
pub fn of_snapshot<'a>(
    conns: &'a Connections,
    selection: &Selection,
    names: &mut ProcessNames,
) -> Vec<(&'a ConnectionStats, Row)> {
    let http = HttpIndex::new(&conns.usm.http);
    let rows = conns
        .conns
        .iter()
        .filter(|conn| selection.matches(&conn.tuple))
        .map(|conn| {
            // The kernel's name of the owner first: it is right even when the process has
            // exited (or its pid was reused) before this lookup; /proc when it has none.
            let name = if conn.comm.is_empty() {
                names.name(conn.tuple.pid)
            } else {
                conn.comm.to_string()
            };
            let row = Row::new(conn, name)
                .named(conn, &conns.dns)
                .with_http(conn, &http);
            (conn, row)
        })
        .collect();
    names.end_snapshot();
    rows
}

/// `tcp` / `udp`.
pub fn protocol_name(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
    }
}

/// Busiest first; ties by process, pid and cookie so the order is stable between snapshots.
pub fn sort_by_throughput(rows: &mut [Row]) {
    rows.sort_by(|a, b| {
        b.throughput()
            .cmp(&a.throughput())
            .then_with(|| a.process.cmp(&b.process))
            .then_with(|| a.pid.cmp(&b.pid))
            .then_with(|| a.cookie.cmp(&b.cookie))
    });
}

#[cfg(test)]
pub mod tests {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    use tracer::model::ConnectionTuple;

    use super::*;

    pub fn conn(protocol: Protocol, sent: u64, recv: u64, cookie: u64) -> ConnectionStats {
        let tuple = ConnectionTuple {
            src: IpAddr::V4(Ipv4Addr::LOCALHOST),
            dst: IpAddr::V6(Ipv6Addr::LOCALHOST),
            sport: 40000,
            dport: 8080,
            pid: 1234,
            netns: 1,
            protocol,
        };
        let mut c = ConnectionStats::new(tuple, Direction::Outgoing, cookie);
        c.last.sent_bytes = sent;
        c.last.recv_bytes = recv;
        c.monotonic.sent_bytes = sent.saturating_mul(10);
        c.monotonic.recv_bytes = recv.saturating_mul(10);
        c.monotonic.retransmits = 3;
        c.rtt_us = 1500;
        c
    }

    #[test]
    fn rows_sort_by_bytes_moved_both_ways_descending() {
        let mut rows: Vec<Row> = [
            conn(Protocol::Tcp, 10, 10, 1),
            conn(Protocol::Tcp, 0, 500, 2),
            conn(Protocol::Udp, 100, 0, 3),
            conn(Protocol::Tcp, 0, 0, 4),
            conn(Protocol::Tcp, u64::MAX, 1, 5),
        ]
        .iter()
        .map(|c| Row::new(c, "p".to_owned()))
        .collect();
        sort_by_throughput(&mut rows);
        let order: Vec<u64> = rows.iter().map(|r| r.cookie).collect();
        assert_eq!(order, vec![5, 2, 3, 1, 4]);
    }

    #[test]
    fn ties_keep_a_stable_order() {
        let mut rows: Vec<Row> = [conn(Protocol::Tcp, 1, 1, 9), conn(Protocol::Tcp, 1, 1, 7)]
            .iter()
            .map(|c| Row::new(c, "p".to_owned()))
            .collect();
        sort_by_throughput(&mut rows);
        assert_eq!(
            rows.iter().map(|r| r.cookie).collect::<Vec<_>>(),
            vec![7, 9]
        );
    }

    #[test]
    fn row_takes_interval_from_last_and_totals_from_monotonic() {
        let row = Row::new(&conn(Protocol::Tcp, 100, 200, 1), "curl".to_owned());
        assert_eq!((row.tx_bytes, row.rx_bytes), (100, 200));
        assert_eq!((row.tx_total, row.rx_total), (1000, 2000));
        assert_eq!(row.retransmits, 3);
        assert_eq!(row.local, "127.0.0.1:40000");
        assert_eq!(row.remote, "[::1]:8080");
        assert_eq!(row.rtt_us, Some(1500));
        assert_eq!(row.state, State::Open);
        assert_eq!(row.failure(), None);
    }

    #[test]
    fn row_names_the_protocol_stack_and_takes_its_http_requests() {
        use tracer::model::{HttpKey, HttpMethod, HttpStats};
        use tracer_common::classify::{PROTO_GRPC, PROTO_HTTP2};

        let mut c = conn(Protocol::Tcp, 1, 1, 1);
        let row = Row::new(&c, String::new());
        assert_eq!((row.app_protocol, row.http), (None, None));
        c.protocol_stack.api = PROTO_GRPC;
        c.protocol_stack.application = PROTO_HTTP2;
        // The connection is 127.0.0.1:40000 -> [::1]:8080; a key with it as the server.
        let key = HttpKey {
            client: "[::1]:8080".parse().unwrap(),
            server: "127.0.0.1:40000".parse().unwrap(),
            path: Arc::from("/"),
            path_complete: true,
            method: HttpMethod::Post,
        };
        let mut stats = HttpStats::default();
        stats.add(200, 10);
        stats.add(502, 10);
        let index = HttpIndex::new([(&key, &stats)]);
        let row = Row::new(&c, String::new()).with_http(&c, &index);
        assert_eq!(row.app_protocol.as_deref(), Some("gRPC/HTTP2"));
        assert_eq!(
            row.http,
            Some(HttpCounts {
                requests: 2,
                client_errors: 0,
                server_errors: 1
            })
        );
    }

    #[test]
    fn udp_has_no_rtt_and_state_follows_close_and_failures() {
        let mut names = DnsNames::default();
        let named = conn(Protocol::Tcp, 100, 200, 1);
        names.insert(
            named.tuple.dst,
            vec![Arc::from("db.example"), Arc::from("alias")],
        );
        let row = Row::new(&named, String::new()).named(&named, &names);
        assert_eq!(row.remote_name.as_deref(), Some("db.example"));
        assert_eq!(
            Row::new(&named, String::new())
                .named(&named, &DnsNames::default())
                .remote_name,
            None
        );
        let udp = Row::new(&conn(Protocol::Udp, 1, 1, 1), "dns".to_owned());
        assert_eq!(udp.rtt_us, None);
        let mut closed = conn(Protocol::Tcp, 1, 1, 2);
        closed.is_closed = true;
        assert_eq!(Row::new(&closed, String::new()).state, State::Closed);
        closed.tcp_failures.record(104, 1);
        let failed = Row::new(&closed, String::new());
        assert_eq!(failed.state, State::Failed(104));
        assert_eq!(failed.failure().as_deref(), Some("ECONNRESET"));
    }
}
