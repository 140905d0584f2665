//! The destination container of intra-host connections (Datadog's LocalResolver), a pure
//! function over one client's result.
//!
//! Both ends of an intra-host connection are usually in the same result: the client's socket
//! and the server's. Every connection with a source container is indexed by its own ends, as
//! the peer sees them (NAT-translated: [`ConnectionStats::local_endpoint`] and
//! [`ConnectionStats::remote_endpoint`]), its protocol and its network namespace; then each
//! intra-host connection looks up its ends reversed and takes the container it finds as
//! `containers.dest`.
//!
//! - Ports: the ephemeral side's port is not compared. An incoming connection is indexed with
//!   its remote (the client's) port zeroed, and an outgoing one looks up with its local port
//!   zeroed, so the client's ephemeral port never has to agree (it would not, for an
//!   aggregated connection, or across NAT of the source port).
//! - Namespaces: an entry is indexed under its own namespace (when known, non-zero), and, when
//!   its local address is not loopback, also under namespace 0. A lookup tries its own
//!   namespace, then namespace 0 unless its remote address is loopback: loopback traffic never
//!   leaves a namespace, while two containers in two namespaces talk over routable addresses.

use std::{collections::HashMap, net::IpAddr, sync::Arc};

use crate::model::{ConnectionStats, Direction, Protocol};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Key {
    local: (IpAddr, u16),
    remote: (IpAddr, u16),
    protocol: Protocol,
    netns: u32,
}

fn is_loopback(addr: IpAddr) -> bool {
    addr.to_canonical().is_loopback()
}

/// Fills `containers.dest` of every intra-host connection whose peer is in `conns` with a
/// source container. Returns how many it filled.
pub fn resolve(conns: &mut [ConnectionStats]) -> u64 {
    let mut index: HashMap<Key, Arc<str>> = HashMap::new();
    for conn in conns.iter() {
        let Some(container) = &conn.containers.source else {
            continue;
        };
        if container.is_empty() {
            continue;
        }
        let local = conn.local_endpoint();
        let mut remote = conn.remote_endpoint();
        if conn.direction == Direction::Incoming {
            remote.1 = 0;
        }
        let mut key = Key {
            local,
            remote,
            protocol: conn.tuple.protocol,
            netns: conn.tuple.netns,
        };
        if key.netns != 0 {
            index.insert(key, Arc::clone(container));
        }
        if !is_loopback(local.0) {
            key.netns = 0;
            index.insert(key, Arc::clone(container));
        }
    }
    if index.is_empty() {
        return 0;
    }
    let mut resolved = 0;
    for conn in conns.iter_mut() {
        if !conn.intra_host {
            continue;
        }
        let mut local = conn.local_endpoint();
        let remote = conn.remote_endpoint();
        if conn.direction == Direction::Outgoing {
            local.1 = 0;
        }
        let mut key = Key {
            local: remote,
            remote: local,
            protocol: conn.tuple.protocol,
            netns: conn.tuple.netns,
        };
        let mut found = index.get(&key);
        if found.is_none() && !is_loopback(remote.0) {
            key.netns = 0;
            found = index.get(&key);
        }
        if let Some(container) = found {
            conn.containers.dest = Some(Arc::clone(container));
            resolved += 1;
        }
    }
    resolved
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;
    use crate::model::{ConnectionTuple, nat::IpTranslation};

    const CLIENT: &str = "client-container";
    const SERVER: &str = "server-container";

    fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(a, b, c, d))
    }

    fn conn(
        protocol: Protocol,
        direction: Direction,
        src: (IpAddr, u16),
        dst: (IpAddr, u16),
        netns: u32,
        source: Option<&str>,
    ) -> ConnectionStats {
        let tuple = ConnectionTuple {
            src: src.0,
            dst: dst.0,
            sport: src.1,
            dport: dst.1,
            pid: 1,
            netns,
            protocol,
        };
        let mut c = ConnectionStats::new(tuple, direction, 1);
        c.containers.source = source.map(Arc::from);
        c.intra_host = true;
        c
    }

    fn dests(conns: &[ConnectionStats]) -> Vec<Option<&str>> {
        conns.iter().map(|c| c.containers.dest.as_deref()).collect()
    }

    #[test]
    fn container_to_container_across_namespaces() {
        for protocol in [Protocol::Tcp, Protocol::Udp] {
            let client = (v4(192, 0, 2, 2), 40000);
            let server = (v4(198, 51, 100, 2), 8080);
            let mut conns = vec![
                conn(
                    protocol,
                    Direction::Outgoing,
                    client,
                    server,
                    11,
                    Some(CLIENT),
                ),
                conn(
                    protocol,
                    Direction::Incoming,
                    server,
                    client,
                    22,
                    Some(SERVER),
                ),
            ];
            assert_eq!(resolve(&mut conns), 2);
            assert_eq!(dests(&conns), vec![Some(SERVER), Some(CLIENT)]);
        }
    }

    #[test]
    fn the_protocol_must_agree() {
        let client = (v4(192, 0, 2, 2), 40000);
        let server = (v4(198, 51, 100, 2), 8080);
        let mut conns = vec![
            conn(
                Protocol::Tcp,
                Direction::Outgoing,
                client,
                server,
                11,
                Some(CLIENT),
            ),
            conn(
                Protocol::Udp,
                Direction::Incoming,
                server,
                client,
                22,
                Some(SERVER),
            ),
        ];
        assert_eq!(resolve(&mut conns), 0);
    }

    #[test]
    fn container_and_host_each_way() {
        // The host (no container) connects to a container: only the host's side gets a dest.
        let host = (v4(192, 0, 2, 1), 40000);
        let ctr = (v4(192, 0, 2, 2), 8080);
        let mut conns = vec![
            conn(Protocol::Tcp, Direction::Outgoing, host, ctr, 1, None),
            conn(
                Protocol::Tcp,
                Direction::Incoming,
                ctr,
                host,
                22,
                Some(SERVER),
            ),
        ];
        assert_eq!(resolve(&mut conns), 1);
        assert_eq!(dests(&conns), vec![Some(SERVER), None]);
        // A container connects to the host.
        let ctr = (v4(192, 0, 2, 2), 40000);
        let host = (v4(192, 0, 2, 1), 8080);
        let mut conns = vec![
            conn(
                Protocol::Udp,
                Direction::Outgoing,
                ctr,
                host,
                22,
                Some(CLIENT),
            ),
            conn(Protocol::Udp, Direction::Incoming, host, ctr, 1, None),
        ];
        assert_eq!(resolve(&mut conns), 1);
        assert_eq!(dests(&conns), vec![None, Some(CLIENT)]);
    }

    #[test]
    fn loopback_matches_only_within_its_namespace() {
        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let client = (lo, 40000);
        let server = (lo, 8080);
        let mut same = vec![
            conn(
                Protocol::Tcp,
                Direction::Outgoing,
                client,
                server,
                7,
                Some(CLIENT),
            ),
            conn(
                Protocol::Tcp,
                Direction::Incoming,
                server,
                client,
                7,
                Some(SERVER),
            ),
        ];
        assert_eq!(resolve(&mut same), 2);
        assert_eq!(dests(&same), vec![Some(SERVER), Some(CLIENT)]);
        // The same addresses in two namespaces are two different loopbacks.
        let mut apart = vec![
            conn(
                Protocol::Tcp,
                Direction::Outgoing,
                client,
                server,
                7,
                Some(CLIENT),
            ),
            conn(
                Protocol::Tcp,
                Direction::Incoming,
                server,
                client,
                8,
                Some(SERVER),
            ),
        ];
        assert_eq!(resolve(&mut apart), 0);
        // IPv6 and v4-mapped loopback alike.
        let lo6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
        let mut v6 = vec![
            conn(
                Protocol::Udp,
                Direction::Outgoing,
                (lo6, 40000),
                (lo6, 53),
                7,
                Some(CLIENT),
            ),
            conn(
                Protocol::Udp,
                Direction::Incoming,
                (lo6, 53),
                (lo6, 40000),
                8,
                Some(SERVER),
            ),
        ];
        assert_eq!(resolve(&mut v6), 0);
    }

    #[test]
    fn only_intra_host_connections_are_resolved_and_ephemeral_ports_do_not_matter() {
        let client = (v4(192, 0, 2, 2), 40000);
        let server = (v4(192, 0, 2, 3), 8080);
        let mut conns = vec![
            conn(
                Protocol::Tcp,
                Direction::Outgoing,
                client,
                server,
                11,
                Some(CLIENT),
            ),
            // The server's side, its client port aggregated away (or different): still found.
            conn(
                Protocol::Tcp,
                Direction::Incoming,
                server,
                (client.0, 0),
                22,
                Some(SERVER),
            ),
        ];
        conns[1].intra_host = false;
        assert_eq!(resolve(&mut conns), 1);
        assert_eq!(dests(&conns), vec![Some(SERVER), None]);
        // The server port must agree.
        let mut other = vec![
            conn(
                Protocol::Tcp,
                Direction::Outgoing,
                client,
                server,
                11,
                Some(CLIENT),
            ),
            conn(
                Protocol::Tcp,
                Direction::Incoming,
                (server.0, 8081),
                client,
                22,
                Some(SERVER),
            ),
        ];
        assert_eq!(resolve(&mut other), 0);
    }

    #[test]
    fn nat_translated_ends_are_compared() {
        // A client container connects to a service address that DNAT sends to a server
        // container; conntrack gives the client's side the server's real address.
        let client = (v4(192, 0, 2, 2), 40000);
        let service = (v4(203, 0, 113, 10), 80);
        let server = (v4(198, 51, 100, 2), 8080);
        let mut out = conn(
            Protocol::Tcp,
            Direction::Outgoing,
            client,
            service,
            11,
            Some(CLIENT),
        );
        out.nat = Some(IpTranslation {
            repl_src_ip: server.0,
            repl_dst_ip: client.0,
            repl_sport: server.1,
            repl_dport: client.1,
        });
        let inc = conn(
            Protocol::Tcp,
            Direction::Incoming,
            server,
            client,
            22,
            Some(SERVER),
        );
        let mut conns = vec![out.clone(), inc];
        assert_eq!(resolve(&mut conns), 2);
        assert_eq!(dests(&conns), vec![Some(SERVER), Some(CLIENT)]);
        // Without the translation the service address matches nothing.
        out.nat = None;
        let inc = conn(
            Protocol::Tcp,
            Direction::Incoming,
            server,
            client,
            22,
            Some(SERVER),
        );
        let mut conns = vec![out, inc];
        assert_eq!(resolve(&mut conns), 0);
    }

    #[test]
    fn an_empty_container_id_is_not_indexed() {
        let client = (v4(192, 0, 2, 2), 40000);
        let server = (v4(192, 0, 2, 3), 8080);
        let mut conns = vec![
            conn(
                Protocol::Tcp,
                Direction::Outgoing,
                client,
                server,
                11,
                Some(CLIENT),
            ),
            conn(
                Protocol::Tcp,
                Direction::Incoming,
                server,
                client,
                22,
                Some(""),
            ),
        ];
        assert_eq!(resolve(&mut conns), 1);
        assert_eq!(dests(&conns), vec![None, Some(CLIENT)]);
    }
}
