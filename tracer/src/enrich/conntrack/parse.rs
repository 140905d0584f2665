//! Decoding ctnetlink messages (events and dump replies) without allocating: only what a NAT
//! translation needs is read (the original and reply tuples and the status); every other
//! attribute is skipped. Malformed input yields [`Message::Malformed`], never a panic.
//!
//! Layout (include/uapi/linux/netfilter/nfnetlink_conntrack.h): `nlmsghdr`, `nfgenmsg` (4
//! bytes), then attributes; `CTA_TUPLE_ORIG`/`CTA_TUPLE_REPLY` nest `CTA_TUPLE_IP` (addresses)
//! and `CTA_TUPLE_PROTO` (protocol number, ports in network order); `CTA_STATUS` is a
//! big-endian u32.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// `NFNL_SUBSYS_CTNETLINK`: the high byte of a conntrack message's type.
pub(crate) const NFNL_SUBSYS_CTNETLINK: u16 = 1;
/// `IPCTNL_MSG_CT_NEW`: a new entry (event), or an entry of a dump.
pub(crate) const IPCTNL_MSG_CT_NEW: u16 = 0;
/// `IPCTNL_MSG_CT_GET`: the dump request.
pub(crate) const IPCTNL_MSG_CT_GET: u16 = 1;
/// `IPCTNL_MSG_CT_DELETE`: a destroyed entry (event).
pub(crate) const IPCTNL_MSG_CT_DELETE: u16 = 2;

const NLMSG_HDRLEN: usize = 16;
const NFGENMSG_LEN: usize = 4;
const NLMSG_NOOP: u16 = 1;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLA_TYPE_MASK: u16 = 0x3fff;

const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_STATUS: u16 = 3;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_IP_V6_DST: u16 = 4;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;

/// `IPS_SRC_NAT`.
pub(crate) const IPS_SRC_NAT: u32 = 1 << 4;
/// `IPS_DST_NAT`.
pub(crate) const IPS_DST_NAT: u32 = 1 << 5;

pub(crate) use tracer_common::linux::{IPPROTO_TCP, IPPROTO_UDP};

/// One direction of a conntrack entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct CtTuple {
    /// IP protocol number.
    pub proto: u8,
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Source port (0 for protocols without ports).
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
}

/// What a NAT translation needs of a conntrack entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CtEntry {
    /// The original direction (as the initiator sent it).
    pub orig: CtTuple,
    /// The reply direction (as the responder answers, after NAT).
    pub reply: CtTuple,
    /// `IPS_*` status bits.
    pub status: u32,
}

impl CtEntry {
    /// Source or destination NAT applies to the entry.
    pub(crate) fn is_nat(&self) -> bool {
        self.status & (IPS_SRC_NAT | IPS_DST_NAT) != 0
    }
}

/// One netlink message, decoded as far as conntrack needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Message {
    /// A new entry (event) or an entry of a dump.
    New(CtEntry),
    /// A destroyed entry (event).
    Destroy(CtEntry),
    /// The end of a dump.
    Done,
    /// A netlink error (negative errno), or an acknowledgement (0).
    Error(i32),
    /// A conntrack message this module does not use, or a netlink no-op.
    Ignored,
    /// Could not be decoded.
    Malformed,
}

/// The messages in one datagram read from a netlink socket.
pub(crate) fn messages(buf: &[u8]) -> Messages<'_> {
    Messages { buf, offset: 0 }
}

/// Iterator of [`messages`].
pub(crate) struct Messages<'a> {
    buf: &'a [u8],
    offset: usize,
}

impl Iterator for Messages<'_> {
    type Item = Message;

    fn next(&mut self) -> Option<Message> {
        let rest = self.buf.get(self.offset..)?;
        if rest.len() < NLMSG_HDRLEN {
            return None;
        }
        let len = u32_ne(rest, 0).and_then(|l| usize::try_from(l).ok());
        let Some(len) = len.filter(|l| *l >= NLMSG_HDRLEN && *l <= rest.len()) else {
            self.offset = self.buf.len();
            return Some(Message::Malformed);
        };
        self.offset = self.offset.saturating_add(align4(len));
        let Some(msg) = rest.get(..len) else {
            return Some(Message::Malformed);
        };
        Some(decode(msg))
    }
}

/// One netlink message (header included, exactly `nlmsg_len` bytes).
fn decode(msg: &[u8]) -> Message {
    let Some(kind) = u16_ne(msg, 4) else {
        return Message::Malformed;
    };
    let payload = msg.get(NLMSG_HDRLEN..).unwrap_or_default();
    match kind {
        NLMSG_NOOP => return Message::Ignored,
        NLMSG_DONE => return Message::Done,
        NLMSG_ERROR => {
            return match i32_ne(payload, 0) {
                Some(errno) => Message::Error(errno),
                None => Message::Malformed,
            };
        }
        _ => {}
    }
    if kind >> 8 != NFNL_SUBSYS_CTNETLINK {
        return Message::Ignored;
    }
    let Some(attrs) = payload.get(NFGENMSG_LEN..) else {
        return Message::Malformed;
    };
    let new = match kind & 0xff {
        IPCTNL_MSG_CT_NEW => true,
        IPCTNL_MSG_CT_DELETE => false,
        _ => return Message::Ignored,
    };
    match entry(attrs) {
        Some(e) if new => Message::New(e),
        Some(e) => Message::Destroy(e),
        None => Message::Malformed,
    }
}

fn entry(attrs: &[u8]) -> Option<CtEntry> {
    let mut orig = None;
    let mut reply = None;
    let mut status = 0;
    for (kind, value) in Attrs::new(attrs) {
        match kind {
            CTA_TUPLE_ORIG => orig = Some(tuple(value?)?),
            CTA_TUPLE_REPLY => reply = Some(tuple(value?)?),
            CTA_STATUS => status = u32_be(value?, 0)?,
            _ => {}
        }
    }
    Some(CtEntry {
        orig: orig?,
        reply: reply?,
        status,
    })
}

fn tuple(nested: &[u8]) -> Option<CtTuple> {
    let (mut src, mut dst) = (None, None);
    let (mut proto, mut sport, mut dport) = (None, 0, 0);
    for (kind, value) in Attrs::new(nested) {
        let value = value?;
        match kind {
            CTA_TUPLE_IP => {
                for (kind, addr) in Attrs::new(value) {
                    let addr = addr?;
                    match kind {
                        CTA_IP_V4_SRC => src = Some(ipv4(addr)?),
                        CTA_IP_V4_DST => dst = Some(ipv4(addr)?),
                        CTA_IP_V6_SRC => src = Some(ipv6(addr)?),
                        CTA_IP_V6_DST => dst = Some(ipv6(addr)?),
                        _ => {}
                    }
                }
            }
            CTA_TUPLE_PROTO => {
                for (kind, field) in Attrs::new(value) {
                    let field = field?;
                    match kind {
                        CTA_PROTO_NUM => proto = Some(*field.first()?),
                        CTA_PROTO_SRC_PORT => sport = u16_be(field)?,
                        CTA_PROTO_DST_PORT => dport = u16_be(field)?,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Some(CtTuple {
        proto: proto?,
        src: src?,
        dst: dst?,
        sport,
        dport,
    })
}

/// Netlink attributes: `(type, Some(value))`, or `(0, None)` once for a truncated one (then
/// the iteration ends).
struct Attrs<'a> {
    buf: &'a [u8],
    offset: usize,
}

impl<'a> Attrs<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf, offset: 0 }
    }
}

impl<'a> Iterator for Attrs<'a> {
    type Item = (u16, Option<&'a [u8]>);

    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.buf.get(self.offset..)?;
        if rest.is_empty() {
            return None;
        }
        let header = u16_ne(rest, 0).zip(u16_ne(rest, 2));
        let value = header.and_then(|(len, _)| {
            let len = usize::from(len);
            if len < 4 {
                return None;
            }
            rest.get(4..len)
        });
        match (header, value) {
            (Some((len, kind)), Some(value)) => {
                self.offset = self.offset.saturating_add(align4(usize::from(len)));
                Some((kind & NLA_TYPE_MASK, Some(value)))
            }
            _ => {
                self.offset = self.buf.len();
                Some((0, None))
            }
        }
    }
}

fn align4(len: usize) -> usize {
    len.saturating_add(3) & !3
}

fn ipv4(b: &[u8]) -> Option<IpAddr> {
    let octets: [u8; 4] = b.get(..4)?.try_into().ok()?;
    Some(IpAddr::V4(Ipv4Addr::from(octets)))
}

fn ipv6(b: &[u8]) -> Option<IpAddr> {
    let octets: [u8; 16] = b.get(..16)?.try_into().ok()?;
    Some(IpAddr::V6(Ipv6Addr::from(octets)))
}

fn u16_be(b: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(..2)?.try_into().ok()?))
}

fn u32_be(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u16_ne(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_ne(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn i32_ne(b: &[u8], at: usize) -> Option<i32> {
    Some(i32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// The `IPCTNL_MSG_CT_GET` dump request of every entry of every family (`AF_UNSPEC`).
pub(crate) fn dump_request(seq: u32) -> [u8; NLMSG_HDRLEN + NFGENMSG_LEN] {
    const NLM_F_REQUEST: u16 = 1;
    const NLM_F_DUMP: u16 = 0x300;
    let mut out = [0u8; NLMSG_HDRLEN + NFGENMSG_LEN];
    let len = (NLMSG_HDRLEN + NFGENMSG_LEN) as u32;
    let kind = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET;
    let fields = len
        .to_ne_bytes()
        .into_iter()
        .chain(kind.to_ne_bytes())
        .chain((NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes())
        .chain(seq.to_ne_bytes())
        .chain(0u32.to_ne_bytes())
        // nfgenmsg: AF_UNSPEC, NFNETLINK_V0, res_id 0.
        .chain([0, 0, 0, 0]);
    for (dst, src) in out.iter_mut().zip(fields) {
        *dst = src;
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use netlink_packet_core::{
        NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
    };
    use netlink_packet_netfilter::{
        NetfilterHeader, NetfilterMessage, NetfilterProtoFamily,
        conntrack::{
            ConntrackAttribute, ConntrackMessage, IPTuple, ProtoInfo, ProtoInfoTCP, ProtoTuple,
            Protocol, Status, Tuple,
        },
    };

    use super::*;

    fn tuple_attrs(t: &CtTuple) -> Vec<Tuple> {
        vec![
            Tuple::Ip(vec![
                IPTuple::SourceAddress(t.src),
                IPTuple::DestinationAddress(t.dst),
            ]),
            Tuple::Proto(vec![
                ProtoTuple::Protocol(Protocol::from(t.proto)),
                ProtoTuple::SourcePort(t.sport),
                ProtoTuple::DestinationPort(t.dport),
            ]),
        ]
    }

    /// A conntrack event or dump entry as the kernel sends it, built with the
    /// `netlink-packet-netfilter` emitters (with the protocol-info and timeout attributes a
    /// real TCP entry carries, which the decoder must skip).
    pub(crate) fn emit(new: bool, e: &CtEntry) -> Vec<u8> {
        let attributes = vec![
            ConntrackAttribute::CtaTupleOrig(tuple_attrs(&e.orig)),
            ConntrackAttribute::CtaTupleReply(tuple_attrs(&e.reply)),
            ConntrackAttribute::CtaStatus(Status::from_bits_retain(e.status)),
            ConntrackAttribute::CtaTimeout(120),
            ConntrackAttribute::CtaProtoInfo(vec![ProtoInfo::TCP(vec![ProtoInfoTCP::State(3)])]),
            ConntrackAttribute::CtaMark(0),
        ];
        let message = if new {
            ConntrackMessage::New(attributes)
        } else {
            ConntrackMessage::Delete(attributes)
        };
        let family = if e.orig.src.is_ipv4() {
            NetfilterProtoFamily::IPv4
        } else {
            NetfilterProtoFamily::IPv6
        };
        let mut packet = NetlinkMessage::new(
            NetlinkHeader::default(),
            NetlinkPayload::from(NetfilterMessage::new(
                NetfilterHeader::new(family, 0, 0),
                message,
            )),
        );
        packet.finalize();
        let mut buf = vec![0; packet.buffer_len()];
        packet.serialize(&mut buf);
        buf
    }

    pub(crate) fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(a, b, c, d))
    }

    /// Client 192.0.2.1:40000 -> VIP 203.0.113.10:80, DNATed to 198.51.100.2:8080 and
    /// masqueraded to 198.51.100.1:40001.
    pub(crate) fn dnat_entry() -> CtEntry {
        CtEntry {
            orig: CtTuple {
                proto: IPPROTO_TCP,
                src: v4(192, 0, 2, 1),
                dst: v4(203, 0, 113, 10),
                sport: 40000,
                dport: 80,
            },
            reply: CtTuple {
                proto: IPPROTO_TCP,
                src: v4(198, 51, 100, 2),
                dst: v4(198, 51, 100, 1),
                sport: 8080,
                dport: 40001,
            },
            status: IPS_SRC_NAT | IPS_DST_NAT | (1 << 3),
        }
    }

    #[test]
    fn a_new_event_built_by_the_crate_decodes_to_its_tuples_and_status() {
        let e = dnat_entry();
        let buf = emit(true, &e);
        let decoded: Vec<Message> = messages(&buf).collect();
        assert_eq!(decoded, vec![Message::New(e)]);
        assert!(e.is_nat());
    }

    #[test]
    fn a_destroy_event_of_an_ipv6_udp_entry_decodes() {
        let ip = |last: u16| IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, last));
        let e = CtEntry {
            orig: CtTuple {
                proto: IPPROTO_UDP,
                src: ip(1),
                dst: ip(10),
                sport: 5353,
                dport: 53,
            },
            reply: CtTuple {
                proto: IPPROTO_UDP,
                src: ip(2),
                dst: ip(1),
                sport: 53,
                dport: 5353,
            },
            status: IPS_DST_NAT,
        };
        let decoded: Vec<Message> = messages(&emit(false, &e)).collect();
        assert_eq!(decoded, vec![Message::Destroy(e)]);
    }

    #[test]
    fn several_messages_in_one_datagram_and_the_done_that_ends_a_dump() {
        let e = dnat_entry();
        let mut buf = emit(true, &e);
        let mut plain = e;
        plain.status = 1 << 3;
        buf.extend(emit(true, &plain));
        // NLMSG_DONE: header and a 4-byte zero payload.
        buf.extend(20u32.to_ne_bytes());
        buf.extend(NLMSG_DONE.to_ne_bytes());
        buf.extend(2u16.to_ne_bytes());
        buf.extend([0u8; 12]);
        let decoded: Vec<Message> = messages(&buf).collect();
        assert_eq!(
            decoded,
            vec![Message::New(e), Message::New(plain), Message::Done]
        );
        assert!(!plain.is_nat());
    }

    #[test]
    fn a_netlink_error_carries_its_errno() {
        let mut buf = Vec::new();
        buf.extend(36u32.to_ne_bytes());
        buf.extend(NLMSG_ERROR.to_ne_bytes());
        buf.extend(0u16.to_ne_bytes());
        buf.extend([0u8; 8]);
        buf.extend((-libc::EPERM).to_ne_bytes());
        buf.extend([0u8; 16]);
        assert_eq!(
            messages(&buf).collect::<Vec<_>>(),
            vec![Message::Error(-libc::EPERM)]
        );
    }

    #[test]
    fn truncated_or_garbage_input_is_malformed_never_a_panic() {
        let buf = emit(true, &dnat_entry());
        for cut in 0..buf.len() {
            let mut copy = buf.clone();
            copy.truncate(cut);
            // A header whose length exceeds the datagram, or attributes cut short.
            let decoded: Vec<Message> = messages(&copy).collect();
            assert!(decoded.iter().all(|m| matches!(m, Message::Malformed)));
            // The same bytes with the length patched to what is there.
            if cut >= NLMSG_HDRLEN {
                copy[..4].copy_from_slice(&(cut as u32).to_ne_bytes());
                for m in messages(&copy) {
                    assert!(matches!(m, Message::Malformed | Message::New(_)));
                }
            }
        }
        let noise: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
        let _ = messages(&noise).count();
    }

    #[test]
    fn the_dump_request_matches_the_crate_s_encoding() {
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_DUMP;
        header.sequence_number = 7;
        let mut packet = NetlinkMessage::new(
            header,
            NetlinkPayload::from(NetfilterMessage::new(
                NetfilterHeader::new(NetfilterProtoFamily::Unspec, 0, 0),
                ConntrackMessage::Get(vec![]),
            )),
        );
        packet.finalize();
        let mut expected = vec![0; packet.buffer_len()];
        packet.serialize(&mut expected);
        assert_eq!(dump_request(7).as_slice(), expected.as_slice());
    }
}
