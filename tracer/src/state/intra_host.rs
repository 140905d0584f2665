//! Intra-host detection, the two direction fixes and the NAT clean-up of intra-host incoming
//! connections (Datadog's `determineConnectionIntraHost`, section 3.7 of the reference).
//!
//! Over the connections of one delta:
//! - every connection's local `(address, port, protocol)` is a local endpoint;
//! - a connection is intra-host if source == destination, both ends are loopback, its NAT reply
//!   source is loopback, or its remote end (NAT-translated if any) is a local endpoint;
//! - an outgoing intra-host connection from a non-ephemeral port to an ephemeral port is really
//!   incoming (a listener that appeared after start-up): fixed, `outgoing_direction_fixes`;
//! - an incoming UDP connection from an ephemeral port to a non-ephemeral port (for a
//!   connection that is not intra-host, "non-ephemeral" means below 1024) is really outgoing:
//!   fixed, `incoming_direction_fixes`;
//! - an intra-host incoming connection loses its NAT translation when the outgoing DNATed
//!   connection it pairs with is in the same delta (conntrack reports the pair's translation on
//!   both sides; it belongs to the outgoing one).

use std::net::IpAddr;

use rustc_hash::FxHashSet;

use crate::model::{
    ConnectionStats, Direction, EphemeralPortRange, IpTranslation, Protocol, StateTelemetry,
};

type Endpoint = (IpAddr, u16, Protocol);
type NatPair = (IpAddr, u16, IpAddr, u16, Protocol);

/// Reusable sets for one call.
#[derive(Debug, Default)]
pub(crate) struct IntraHostScratch {
    local: FxHashSet<Endpoint>,
    dnat_peers: FxHashSet<NatPair>,
}

impl IntraHostScratch {
    pub(crate) fn allocated_bytes(&self) -> usize {
        crate::state::snapshot::hash_map_bytes::<Endpoint, ()>(self.local.capacity())
            + crate::state::snapshot::hash_map_bytes::<NatPair, ()>(self.dnat_peers.capacity())
    }
}

fn is_intra_host(conn: &ConnectionStats, local: &FxHashSet<Endpoint>) -> bool {
    let t = &conn.tuple;
    if t.src == t.dst || (t.src.is_loopback() && t.dst.is_loopback()) {
        return true;
    }
    if conn.nat.is_some_and(|n| n.repl_src_ip.is_loopback()) {
        return true;
    }
    let (addr, port) = conn.remote_endpoint();
    local.contains(&(addr, port, t.protocol))
}

/// Applies the rules of the module docs to `conns`.
pub(crate) fn resolve(
    conns: &mut [ConnectionStats],
    ports: &EphemeralPortRange,
    scratch: &mut IntraHostScratch,
    telemetry: &mut StateTelemetry,
) {
    scratch.local.clear();
    scratch.dnat_peers.clear();
    scratch.local.extend(
        conns
            .iter()
            .map(|c| (c.tuple.src, c.tuple.sport, c.tuple.protocol)),
    );
    let mut incoming_nat = false;
    for conn in conns.iter_mut() {
        conn.intra_host = is_intra_host(conn, &scratch.local);
        fix_direction(conn, ports, telemetry);
        if conn.intra_host {
            match (conn.direction, &conn.nat) {
                (Direction::Outgoing, Some(n)) => {
                    scratch.dnat_peers.insert(nat_pair(n, conn.tuple.protocol));
                }
                (Direction::Incoming, Some(_)) => incoming_nat = true,
                _ => {}
            }
        }
    }
    if !incoming_nat {
        return;
    }
    for conn in conns.iter_mut() {
        if conn.intra_host && conn.direction == Direction::Incoming && conn.nat.is_some() {
            let t = &conn.tuple;
            if scratch
                .dnat_peers
                .contains(&(t.src, t.sport, t.dst, t.dport, t.protocol))
            {
                conn.nat = None;
            }
        }
    }
}

fn nat_pair(n: &IpTranslation, protocol: Protocol) -> NatPair {
    (
        n.repl_src_ip,
        n.repl_sport,
        n.repl_dst_ip,
        n.repl_dport,
        protocol,
    )
}

fn fix_direction(
    conn: &mut ConnectionStats,
    ports: &EphemeralPortRange,
    telemetry: &mut StateTelemetry,
) {
    let t = &conn.tuple;
    match conn.direction {
        Direction::Outgoing
            if conn.intra_host && !ports.contains(t.sport) && ports.contains(t.dport) =>
        {
            conn.direction = Direction::Incoming;
            telemetry.outgoing_direction_fixes += 1;
        }
        Direction::Incoming if t.protocol == Protocol::Udp && ports.contains(t.sport) => {
            let dport_is_service = if conn.intra_host {
                !ports.contains(t.dport)
            } else {
                t.dport < 1024
            };
            if dport_is_service {
                conn.direction = Direction::Outgoing;
                telemetry.incoming_direction_fixes += 1;
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::state::test_support::{conn_between, ip};

    fn run(conns: &mut [ConnectionStats]) -> StateTelemetry {
        let mut telemetry = StateTelemetry::default();
        resolve(
            conns,
            &EphemeralPortRange::default(),
            &mut IntraHostScratch::default(),
            &mut telemetry,
        );
        telemetry
    }

    #[test]
    fn connection_to_same_address_or_between_loopbacks_is_intra_host() {
        let mut conns = vec![
            conn_between(ip(10, 0, 0, 1), 40000, ip(10, 0, 0, 1), 80, Protocol::Tcp),
            conn_between(ip(127, 0, 0, 1), 40001, ip(127, 0, 0, 2), 80, Protocol::Tcp),
            conn_between(ip(10, 0, 0, 1), 40002, ip(10, 0, 0, 9), 80, Protocol::Tcp),
        ];
        run(&mut conns);
        assert_eq!(
            conns.iter().map(|c| c.intra_host).collect::<Vec<_>>(),
            [true, true, false]
        );
    }

    #[test]
    fn connection_whose_remote_end_is_a_local_endpoint_is_intra_host() {
        let mut conns = vec![
            conn_between(ip(10, 0, 0, 1), 40000, ip(10, 0, 0, 2), 80, Protocol::Tcp),
            conn_between(ip(10, 0, 0, 2), 80, ip(10, 0, 0, 1), 40000, Protocol::Tcp),
            conn_between(ip(10, 0, 0, 2), 80, ip(10, 0, 0, 1), 40000, Protocol::Udp),
        ];
        conns[1].direction = Direction::Incoming;
        conns[2].direction = Direction::Incoming;
        run(&mut conns);
        assert!(conns[0].intra_host && conns[1].intra_host);
        assert!(
            !conns[2].intra_host,
            "a UDP endpoint does not make a TCP peer local"
        );
    }

    #[test]
    fn nat_reply_source_on_loopback_is_intra_host() {
        let mut c = conn_between(ip(10, 0, 0, 1), 40000, ip(10, 96, 0, 1), 80, Protocol::Tcp);
        c.nat = Some(IpTranslation {
            repl_src_ip: ip(127, 0, 0, 1),
            repl_dst_ip: ip(10, 0, 0, 1),
            repl_sport: 8080,
            repl_dport: 40000,
        });
        let mut conns = vec![c];
        run(&mut conns);
        assert!(conns[0].intra_host);
    }

    #[test]
    fn outgoing_intra_host_from_service_port_to_ephemeral_port_becomes_incoming() {
        let mut conns = vec![conn_between(
            ip(127, 0, 0, 1),
            8080,
            ip(127, 0, 0, 1),
            40000,
            Protocol::Tcp,
        )];
        let t = run(&mut conns);
        assert_eq!(conns[0].direction, Direction::Incoming);
        assert_eq!(t.outgoing_direction_fixes, 1);
    }

    #[test]
    fn outgoing_to_remote_host_is_never_turned_incoming() {
        let mut conns = vec![conn_between(
            ip(10, 0, 0, 1),
            8080,
            ip(10, 0, 0, 9),
            40000,
            Protocol::Tcp,
        )];
        assert_eq!(run(&mut conns).outgoing_direction_fixes, 0);
        assert_eq!(conns[0].direction, Direction::Outgoing);
    }

    #[test]
    fn incoming_udp_from_ephemeral_port_to_privileged_port_becomes_outgoing() {
        let mut c = conn_between(ip(10, 0, 0, 1), 40000, ip(8, 8, 8, 8), 53, Protocol::Udp);
        c.direction = Direction::Incoming;
        let mut tcp = c.clone();
        tcp.tuple.protocol = Protocol::Tcp;
        let mut high = c.clone();
        high.tuple.dport = 5353;
        let mut conns = vec![c, tcp, high];
        let t = run(&mut conns);
        assert_eq!(conns[0].direction, Direction::Outgoing);
        assert_eq!(
            conns[1].direction,
            Direction::Incoming,
            "TCP is never fixed"
        );
        assert_eq!(
            conns[2].direction,
            Direction::Incoming,
            "remote non-ephemeral means < 1024"
        );
        assert_eq!(t.incoming_direction_fixes, 1);
    }

    #[test]
    fn intra_host_incoming_loses_nat_when_its_dnat_peer_is_present() {
        let client = ip(10, 0, 0, 1);
        let server = ip(10, 0, 0, 2);
        let vip = IpAddr::V4(Ipv4Addr::new(10, 96, 0, 1));
        let mut out = conn_between(client, 40000, vip, 80, Protocol::Tcp);
        out.nat = Some(IpTranslation {
            repl_src_ip: server,
            repl_dst_ip: client,
            repl_sport: 8080,
            repl_dport: 40000,
        });
        let mut inc = conn_between(server, 8080, client, 40000, Protocol::Tcp);
        inc.direction = Direction::Incoming;
        inc.nat = Some(IpTranslation {
            repl_src_ip: client,
            repl_dst_ip: vip,
            repl_sport: 40000,
            repl_dport: 80,
        });
        let mut conns = vec![out, inc];
        run(&mut conns);
        assert!(conns[0].nat.is_some());
        assert!(conns[1].intra_host);
        assert!(conns[1].nat.is_none());
    }
}
