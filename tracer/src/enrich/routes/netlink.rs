//! Synchronous `RTM_GETROUTE` / `RTM_GETLINK` over one NETLINK_ROUTE socket, and the decoding of
//! the kernel's answers. Nothing here panics on what the kernel (or anything else) sends: a
//! truncated, malformed or unexpected answer is an [`Answer::Failed`], no answer in time an
//! [`Answer::Unanswered`].

use std::{
    io,
    net::IpAddr,
    os::fd::AsRawFd,
    sync::Arc,
    time::{Duration, Instant},
};

use netlink_packet_core::{
    NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload, NetlinkSerializable,
};
use netlink_packet_route::{
    AddressFamily, RouteNetlinkMessage,
    link::{LinkAttribute, LinkMessage},
    route::{RouteAddress, RouteAttribute, RouteMessage, RouteType, RouteVia},
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

/// One route question: as `ip route get DST [from SRC] [iif IIF]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Query {
    /// Destination.
    pub dst: IpAddr,
    /// Source, unless unspecified.
    pub src: Option<IpAddr>,
    /// Input interface (a forwarded packet's lookup), by index.
    pub iif: Option<u32>,
}

/// What the kernel said about a route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Answer {
    /// A route out of the namespace (unicast, or broadcast/multicast/anycast): its next hop (`None`: directly connected) and output interface.
    Route {
        /// `RTA_GATEWAY` (or `RTA_VIA`).
        gateway: Option<IpAddr>,
        /// `RTA_OIF`.
        oif: u32,
    },
    /// The destination is local to the namespace (`RTN_LOCAL`): carries the interface.
    Local {
        /// `RTA_OIF` (usually `lo`).
        oif: u32,
    },
    /// The kernel has no usable route: an error answer (ENETUNREACH, EHOSTUNREACH, EINVAL, ...)
    /// or an unreachable, blackhole or prohibit route. Carries the errno or 0.
    NoRoute(i32),
    /// The answer could not be used (malformed, an ACK, another message type).
    Failed,
    /// No answer: the question could not be sent, or no answer carrying its sequence number
    /// came before the timeout.
    Unanswered,
}

/// Where the cache gets its answers: the kernel through netlink, or a fake in unit tests.
pub(crate) trait RouteSource: Send {
    /// Looks one route up.
    fn route(&mut self, query: &Query) -> Answer;
    /// The name of an interface, `None` when it does not exist (or cannot be asked).
    fn link_name(&mut self, index: u32) -> Option<Arc<str>>;
}

/// Receive buffer: route and link answers are far smaller, a datagram larger than this is
/// truncated (and then ignored as malformed).
const RECV_BUFFER: usize = 32 * 1024;

/// A NETLINK_ROUTE socket in the namespace of the thread that opened it.
pub(crate) struct NetlinkRoutes {
    socket: Socket,
    sequence: u32,
    timeout: Duration,
    buffer: Vec<u8>,
}

impl NetlinkRoutes {
    /// Opens and connects the socket to the kernel, with a receive timeout.
    pub(crate) fn open(timeout: Duration) -> io::Result<Self> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        set_receive_timeout(&socket, timeout)?;
        Ok(Self {
            socket,
            sequence: 0,
            timeout,
            buffer: Vec::with_capacity(RECV_BUFFER),
        })
    }

    /// Sends one request and returns the first answer carrying its sequence number (answers
    /// to earlier requests that timed out are skipped).
    fn ask(&mut self, message: RouteNetlinkMessage) -> Option<NetlinkPayload<RouteNetlinkMessage>> {
        self.sequence = self.sequence.wrapping_add(1);
        let sequence = self.sequence;
        let request = encode_request(message, sequence);
        match self.socket.send(&request, 0) {
            Ok(n) if n == request.len() => {}
            _ => return None,
        }
        let deadline = Instant::now() + self.timeout;
        loop {
            self.buffer.clear();
            self.socket.recv(&mut self.buffer, 0).ok()?;
            if let Some(payload) = find_answer(&self.buffer, sequence) {
                return Some(payload);
            }
            if Instant::now() >= deadline {
                return None;
            }
        }
    }
}

impl RouteSource for NetlinkRoutes {
    fn route(&mut self, query: &Query) -> Answer {
        match self.ask(RouteNetlinkMessage::GetRoute(route_request(query))) {
            Some(payload) => decode_route_answer(payload),
            None => Answer::Unanswered,
        }
    }

    fn link_name(&mut self, index: u32) -> Option<Arc<str>> {
        let mut request = LinkMessage::default();
        request.header.index = index;
        match self.ask(RouteNetlinkMessage::GetLink(request))? {
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link))
                if link.header.index == index =>
            {
                link.attributes.into_iter().find_map(|a| match a {
                    LinkAttribute::IfName(name) => Some(Arc::from(name)),
                    _ => None,
                })
            }
            _ => None,
        }
    }
}

fn set_receive_timeout(socket: &Socket, timeout: Duration) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_usec: libc::suseconds_t::from(timeout.subsec_micros()),
    };
    // SAFETY: setsockopt on a descriptor the socket owns, with a properly sized timeval.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            std::ptr::from_ref(&tv).cast(),
            libc::socklen_t::try_from(std::mem::size_of::<libc::timeval>()).unwrap_or(0),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The `RTM_GETROUTE` message for `query`.
pub(crate) fn route_request(query: &Query) -> RouteMessage {
    let mut message = RouteMessage::default();
    let full = match query.dst {
        IpAddr::V4(_) => {
            message.header.address_family = AddressFamily::Inet;
            32
        }
        IpAddr::V6(_) => {
            message.header.address_family = AddressFamily::Inet6;
            128
        }
    };
    message.header.destination_prefix_length = full;
    message
        .attributes
        .push(RouteAttribute::Destination(RouteAddress::from(query.dst)));
    if let Some(src) = query.src {
        message.header.source_prefix_length = full;
        message
            .attributes
            .push(RouteAttribute::Source(RouteAddress::from(src)));
    }
    if let Some(iif) = query.iif {
        message.attributes.push(RouteAttribute::Iif(iif));
    }
    message
}

/// A finalized request (`NLM_F_REQUEST`, no dump) as bytes.
pub(crate) fn encode_request<I: NetlinkSerializable>(inner: I, sequence: u32) -> Vec<u8>
where
    NetlinkPayload<I>: From<I>,
{
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST;
    header.sequence_number = sequence;
    let mut message = NetlinkMessage::new(header, NetlinkPayload::from(inner));
    message.finalize();
    let mut bytes = vec![0; message.buffer_len()];
    message.serialize(&mut bytes);
    bytes
}

/// Netlink message header length (`struct nlmsghdr`).
const NLMSG_HEADER: usize = 16;

/// Walks the netlink messages of one datagram and returns the payload of the first one with
/// `sequence`. Stops at the first malformed message (a length that is too short or runs past
/// the datagram); a message with the right sequence that does not decode is an
/// `NetlinkPayload::Overrun` (treated as a failure by the callers).
pub(crate) fn find_answer(
    datagram: &[u8],
    sequence: u32,
) -> Option<NetlinkPayload<RouteNetlinkMessage>> {
    let mut rest = datagram;
    while rest.len() >= NLMSG_HEADER {
        let length = rest
            .get(0..4)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(u32::from_ne_bytes)
            .and_then(|l| usize::try_from(l).ok())?;
        let seq = rest
            .get(8..12)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(u32::from_ne_bytes)?;
        if length < NLMSG_HEADER {
            return None;
        }
        let message = rest.get(..length)?;
        if seq == sequence {
            return Some(
                match NetlinkMessage::<RouteNetlinkMessage>::deserialize(message) {
                    Ok(m) => m.payload,
                    Err(_) => NetlinkPayload::Overrun(Vec::new()),
                },
            );
        }
        let aligned = length.checked_add(3).map(|l| l & !3)?;
        rest = rest.get(aligned..).unwrap_or_default();
    }
    None
}

/// What a route answer means.
pub(crate) fn decode_route_answer(payload: NetlinkPayload<RouteNetlinkMessage>) -> Answer {
    match payload {
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewRoute(route)) => decode_route(&route),
        NetlinkPayload::Error(error) => match error.code {
            Some(code) => Answer::NoRoute(code.get().saturating_neg()),
            // An ACK is not an answer to a GET.
            None => Answer::Failed,
        },
        _ => Answer::Failed,
    }
}

/// A route message as an answer.
pub(crate) fn decode_route(route: &RouteMessage) -> Answer {
    let mut gateway = None;
    let mut oif = None;
    for attribute in &route.attributes {
        match attribute {
            RouteAttribute::Gateway(address) => gateway = address_ip(address),
            RouteAttribute::Via(RouteVia::Inet(v4)) => gateway = Some(IpAddr::V4(*v4)),
            RouteAttribute::Via(RouteVia::Inet6(v6)) => gateway = Some(IpAddr::V6(*v6)),
            RouteAttribute::Oif(index) => oif = Some(*index),
            _ => {}
        }
    }
    match route.header.kind {
        // Broadcast, multicast and anycast answers leave through their interface too.
        RouteType::Unicast | RouteType::Broadcast | RouteType::Multicast | RouteType::Anycast => {
            match oif {
                Some(oif) => Answer::Route { gateway, oif },
                None => Answer::Failed,
            }
        }
        RouteType::Local => match oif {
            Some(oif) => Answer::Local { oif },
            None => Answer::Failed,
        },
        // Unreachable, blackhole, prohibit, throw, NAT, ...: no route.
        _ => Answer::NoRoute(0),
    }
}

fn address_ip(address: &RouteAddress) -> Option<IpAddr> {
    match address {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use netlink_packet_core::ErrorMessage;
    use netlink_packet_route::route::RouteHeader;

    use super::*;

    fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(a, b, c, d))
    }

    /// A kernel-style answer datagram: one `RTM_NEWROUTE` with `attributes`.
    fn answer(kind: RouteType, attributes: Vec<RouteAttribute>, sequence: u32) -> Vec<u8> {
        let mut route = RouteMessage::default();
        route.header.address_family = AddressFamily::Inet;
        route.header.table = RouteHeader::RT_TABLE_MAIN;
        route.header.kind = kind;
        route.attributes = attributes;
        encode_request(RouteNetlinkMessage::NewRoute(route), sequence)
    }

    fn error_answer(errno: i32, sequence: u32) -> Vec<u8> {
        let mut error = ErrorMessage::default();
        error.code = std::num::NonZeroI32::new(-errno);
        let mut header = NetlinkHeader::default();
        header.sequence_number = sequence;
        let mut message =
            NetlinkMessage::<RouteNetlinkMessage>::new(header, NetlinkPayload::Error(error));
        message.finalize();
        let mut bytes = vec![0; message.buffer_len()];
        message.serialize(&mut bytes);
        bytes
    }

    fn parse(datagram: &[u8], sequence: u32) -> Answer {
        find_answer(datagram, sequence).map_or(Answer::Failed, decode_route_answer)
    }

    #[test]
    fn a_gateway_route_gives_gateway_and_output_interface() {
        let bytes = answer(
            RouteType::Unicast,
            vec![
                RouteAttribute::Table(254),
                RouteAttribute::Destination(RouteAddress::Inet(Ipv4Addr::new(203, 0, 113, 2))),
                RouteAttribute::Gateway(RouteAddress::Inet(Ipv4Addr::new(192, 0, 2, 2))),
                RouteAttribute::Oif(7),
                RouteAttribute::PrefSource(RouteAddress::Inet(Ipv4Addr::new(192, 0, 2, 1))),
            ],
            5,
        );
        assert_eq!(
            parse(&bytes, 5),
            Answer::Route {
                gateway: Some(v4(192, 0, 2, 2)),
                oif: 7
            }
        );
    }

    #[test]
    fn a_connected_route_has_no_gateway_and_ipv6_gateways_decode() {
        let bytes = answer(RouteType::Unicast, vec![RouteAttribute::Oif(3)], 1);
        assert_eq!(
            parse(&bytes, 1),
            Answer::Route {
                gateway: None,
                oif: 3
            }
        );
        let gw = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
        let bytes = answer(
            RouteType::Unicast,
            vec![
                RouteAttribute::Oif(4),
                RouteAttribute::Via(RouteVia::Inet6(gw)),
            ],
            2,
        );
        assert_eq!(
            parse(&bytes, 2),
            Answer::Route {
                gateway: Some(IpAddr::V6(gw)),
                oif: 4
            }
        );
    }

    #[test]
    fn errors_and_unreachable_routes_are_negative_answers() {
        assert_eq!(
            parse(&error_answer(libc::ENETUNREACH, 9), 9),
            Answer::NoRoute(libc::ENETUNREACH)
        );
        for kind in [
            RouteType::Unreachable,
            RouteType::BlackHole,
            RouteType::Prohibit,
        ] {
            let bytes = answer(kind, vec![RouteAttribute::Oif(1)], 3);
            assert_eq!(parse(&bytes, 3), Answer::NoRoute(0), "{kind:?}");
        }
        let broadcast = answer(RouteType::Broadcast, vec![RouteAttribute::Oif(2)], 3);
        assert_eq!(
            parse(&broadcast, 3),
            Answer::Route {
                gateway: None,
                oif: 2
            }
        );
        let local = answer(RouteType::Local, vec![RouteAttribute::Oif(1)], 3);
        assert_eq!(parse(&local, 3), Answer::Local { oif: 1 });
    }

    #[test]
    fn stale_answers_are_skipped_and_a_unicast_route_without_interface_is_a_failure() {
        let mut datagram = answer(RouteType::Unicast, vec![RouteAttribute::Oif(1)], 1);
        datagram.extend(answer(RouteType::Unicast, vec![RouteAttribute::Oif(2)], 2));
        assert_eq!(
            parse(&datagram, 2),
            Answer::Route {
                gateway: None,
                oif: 2
            }
        );
        assert_eq!(parse(&datagram, 3), Answer::Failed);
        let no_oif = answer(RouteType::Unicast, vec![], 1);
        assert_eq!(parse(&no_oif, 1), Answer::Failed);
    }

    #[test]
    fn truncated_and_garbage_answers_never_panic() {
        let whole = answer(
            RouteType::Unicast,
            vec![
                RouteAttribute::Gateway(RouteAddress::Inet(Ipv4Addr::new(192, 0, 2, 2))),
                RouteAttribute::Oif(7),
            ],
            5,
        );
        for cut in 0..whole.len() {
            let answer = parse(&whole[..cut], 5);
            assert_eq!(answer, Answer::Failed, "cut at {cut}");
        }
        // Every byte flipped, one at a time: any answer is fine, no panic.
        for i in 0..whole.len() {
            let mut bad = whole.clone();
            bad[i] ^= 0xff;
            let _ = parse(&bad, 5);
        }
        // Lengths that lie.
        let mut bad = whole.clone();
        bad[0..4].copy_from_slice(&3u32.to_ne_bytes());
        assert_eq!(parse(&bad, 5), Answer::Failed);
        bad[0..4].copy_from_slice(&u32::MAX.to_ne_bytes());
        assert_eq!(parse(&bad, 5), Answer::Failed);
        let error = error_answer(libc::EHOSTUNREACH, 1);
        for cut in 0..error.len() {
            let _ = parse(&error[..cut], 1);
        }
    }

    #[test]
    fn the_kernel_answers_a_loopback_question_in_this_namespace() {
        // Unprivileged and harmless: a route question and a link name, no traffic.
        let Ok(mut routes) = NetlinkRoutes::open(Duration::from_secs(1)) else {
            return;
        };
        let answer = routes.route(&Query {
            dst: v4(127, 0, 0, 1),
            src: None,
            iif: None,
        });
        assert!(matches!(answer, Answer::Local { .. }), "{answer:?}");
        assert_eq!(routes.link_name(1).as_deref(), Some("lo"));
        assert_eq!(routes.link_name(u32::MAX), None);
    }

    #[test]
    fn requests_carry_destination_source_and_input_interface() {
        let query = Query {
            dst: v4(203, 0, 113, 2),
            src: Some(v4(198, 51, 100, 2)),
            iif: Some(12),
        };
        let request = route_request(&query);
        assert_eq!(request.header.destination_prefix_length, 32);
        assert_eq!(request.header.source_prefix_length, 32);
        assert!(
            request
                .attributes
                .contains(&RouteAttribute::Source(RouteAddress::Inet(Ipv4Addr::new(
                    198, 51, 100, 2
                ))))
        );
        assert!(request.attributes.contains(&RouteAttribute::Iif(12)));
        let bytes = encode_request(RouteNetlinkMessage::GetRoute(request.clone()), 77);
        let parsed = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&bytes).unwrap();
        assert_eq!(parsed.header.sequence_number, 77);
        assert_eq!(parsed.header.flags, NLM_F_REQUEST);
        assert_eq!(
            parsed.payload,
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::GetRoute(request))
        );
        let v6 = route_request(&Query {
            dst: IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2)),
            src: None,
            iif: None,
        });
        assert_eq!(v6.header.destination_prefix_length, 128);
        assert_eq!(v6.header.source_prefix_length, 0);
        assert_eq!(v6.attributes.len(), 1);
    }
}
