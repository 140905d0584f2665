//! One DNS message (the UDP payload, or a TCP message without its length prefix) parsed with
//! the `domain` crate, zero-copy over the captured bytes: what the stats and the reverse cache
//! need, nothing else.
//!
//! The `domain` crate refuses every malformed input (short input, forward or self compression
//! pointers, pointer chains, bad label types, names of 255 bytes or more) but its errors carry
//! no machine-readable kind; when it refuses a message, [`classify`] walks the message again
//! with the same rules to say why (only on that path, so the common path pays nothing).

use std::net::IpAddr;

use domain::{
    base::{Message, ParsedName, ToName, iana::Rtype, name::ToLabelIter},
    rdata::{A, Aaaa, Cname},
};

/// Most CNAME hops followed from the question name (resolvers stop at about 8 too).
pub(crate) const MAX_CNAME_CHAIN: usize = 8;

/// A name inside the captured bytes.
type Name<'a> = ParsedName<&'a [u8]>;

/// Length of the fixed DNS header.
const HEADER_LEN: usize = 12;

/// Why a message was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Malformed {
    /// It ends inside the header, a name or a record.
    Truncated,
    /// Its header counts cannot fit in its length (each question takes at least 5 bytes, each
    /// record 11).
    Counts,
    /// A compression pointer points forward, to itself, or chains too long.
    Compression,
    /// A label of a reserved type (length byte 64 or more) or a name of 255 bytes or more.
    Label,
    /// No question: nothing to key it on.
    NoQuestion,
    /// Refused by the parser for another reason (bad record data, e.g. an A record of 5 bytes).
    Other,
}

/// A message's header and first question.
pub(crate) struct Parsed<'a> {
    /// Transaction id.
    pub id: u16,
    /// QR bit: a response.
    pub response: bool,
    /// Header response code (4 bits).
    pub rcode: u8,
    /// First question's type.
    pub qtype: u16,
    qname: ParsedName<&'a [u8]>,
    msg: Message<&'a [u8]>,
}

/// What a response's answer section says for the question: the question name and the CNAME
/// aliases followed from it (lowercased), and the A/AAAA addresses of any of them with their TTL.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Answers {
    /// Question name first, then each alias in chain order.
    pub names: Vec<String>,
    /// Address and TTL (seconds).
    pub addrs: Vec<(IpAddr, u32)>,
}

/// Parses the header and the first question. `complete`: the bytes are the whole message (not
/// cut at the snap length), so header counts that cannot fit are an error.
pub(crate) fn parse(bytes: &[u8], complete: bool) -> Result<Parsed<'_>, Malformed> {
    let msg = Message::from_octets(bytes).map_err(|_| Malformed::Truncated)?;
    let header = msg.header();
    let counts = msg.header_counts();
    if complete {
        let min = usize::from(counts.qdcount()) * 5
            + (usize::from(counts.ancount())
                + usize::from(counts.nscount())
                + usize::from(counts.arcount()))
                * 11;
        if min > bytes.len().saturating_sub(HEADER_LEN) {
            return Err(Malformed::Counts);
        }
    }
    let question = match msg.question().next() {
        None => return Err(Malformed::NoQuestion),
        Some(Err(_)) => return Err(classify(bytes)),
        Some(Ok(q)) => q,
    };
    Ok(Parsed {
        id: header.id(),
        response: header.qr(),
        rcode: header.rcode().to_int(),
        qtype: question.qtype().to_int(),
        qname: *question.qname(),
        msg,
    })
}

impl Parsed<'_> {
    /// The question name, lowercased, without the trailing dot.
    pub fn qname(&self) -> String {
        name_string(&self.qname)
    }

    /// Fills `out` with the answers for the question: the CNAME chain from the question name
    /// (at most [`MAX_CNAME_CHAIN`] hops, loops stopped) and the A/AAAA records owned by any
    /// name of the chain. Returns why the answer section could not be read to its end, if it
    /// could not; `out` then holds what the records before the fault give.
    pub fn answers(&self, out: &mut Answers) -> Option<Malformed> {
        let mut cnames: Vec<(Name<'_>, Name<'_>)> = Vec::new();
        let mut addrs: Vec<(Name<'_>, IpAddr, u32)> = Vec::new();
        let mut fault = None;
        match self.msg.answer() {
            Err(_) => fault = Some(classify(self.msg.as_slice())),
            Ok(section) => {
                // No cap on the count: every record takes at least 11 bytes of the captured
                // message (at most the snap length), so absurd counts end at its last byte as a
                // fault, and a name with 100 addresses (1.6 kB) maps back from all of them.
                for record in section {
                    let Ok(record) = record else {
                        fault = Some(classify(self.msg.as_slice()));
                        break;
                    };
                    let parsed = match record.rtype() {
                        Rtype::A => record.to_record::<A>().map(|r| {
                            if let Some(r) = r {
                                addrs.push((
                                    *r.owner(),
                                    IpAddr::V4(r.data().addr()),
                                    r.ttl().as_secs(),
                                ));
                            }
                        }),
                        Rtype::AAAA => record.to_record::<Aaaa>().map(|r| {
                            if let Some(r) = r {
                                addrs.push((
                                    *r.owner(),
                                    IpAddr::V6(r.data().addr()),
                                    r.ttl().as_secs(),
                                ));
                            }
                        }),
                        Rtype::CNAME => record.to_record::<Cname<ParsedName<&[u8]>>>().map(|r| {
                            if let Some(r) = r {
                                cnames.push((*r.owner(), *r.data().cname()));
                            }
                        }),
                        _ => Ok(()),
                    };
                    if parsed.is_err() {
                        fault = Some(classify(self.msg.as_slice()));
                        break;
                    }
                }
            }
        }
        let mut chain: Vec<Name<'_>> = vec![self.qname];
        let mut current = self.qname;
        for _ in 0..MAX_CNAME_CHAIN {
            let Some((_, target)) = cnames.iter().find(|(owner, _)| owner.name_eq(&current)) else {
                break;
            };
            if chain.iter().any(|n| n.name_eq(target)) {
                break; // a CNAME loop: the chain so far is all there is
            }
            chain.push(*target);
            current = *target;
        }
        out.names.clear();
        out.addrs.clear();
        for (owner, ip, ttl) in &addrs {
            if chain.iter().any(|n| n.name_eq(owner)) {
                out.addrs.push((*ip, *ttl));
            }
        }
        if !out.addrs.is_empty() {
            out.names.extend(chain.iter().map(name_string));
        }
        fault
    }
}

/// A name as the stats and the reverse cache key it: ASCII lowercased, labels joined by dots,
/// no trailing dot ("." for the root), bytes outside printable ASCII and the dot and backslash
/// inside a label escaped as in zone files (`\DDD`, `\.`), so distinct names stay distinct.
pub(crate) fn name_string(name: &Name<'_>) -> String {
    // Built as bytes (every byte pushed is ASCII), one allocation of the name's wire length.
    let mut out: Vec<u8> = Vec::with_capacity(usize::from(name.compose_len()));
    for label in name.iter() {
        if label.is_root() {
            continue;
        }
        if !out.is_empty() {
            out.push(b'.');
        }
        for &b in label.as_slice() {
            match b {
                b'.' | b'\\' => out.extend_from_slice(&[b'\\', b]),
                0x21..=0x7e => out.push(b.to_ascii_lowercase()),
                _ => out.extend_from_slice(&[
                    b'\\',
                    b'0' + b / 100,
                    b'0' + b / 10 % 10,
                    b'0' + b % 10,
                ]),
            }
        }
    }
    if out.is_empty() {
        out.push(b'.');
    }
    String::from_utf8(out).unwrap_or_default()
}

/// Why the parser refused `msg`: walks it with the parser's rules (questions, then every
/// record's owner, and the target of CNAME records) and names the first fault found.
pub(crate) fn classify(msg: &[u8]) -> Malformed {
    let Some(header) = msg.get(..HEADER_LEN) else {
        return Malformed::Truncated;
    };
    let count = |i: usize| {
        usize::from(u16::from_be_bytes([
            header.get(i).copied().unwrap_or(0),
            header.get(i + 1).copied().unwrap_or(0),
        ]))
    };
    let mut pos = HEADER_LEN;
    for _ in 0..count(4) {
        pos = match skip_name(msg, pos) {
            Ok(p) => p + 4,
            Err(m) => return m,
        };
        if pos > msg.len() {
            return Malformed::Truncated;
        }
    }
    let records = count(6) + count(8) + count(10);
    for _ in 0..records {
        let start = match skip_name(msg, pos) {
            Ok(p) => p,
            Err(m) => return m,
        };
        let Some(&[t0, t1, _, _, _, _, _, _, l0, l1]) = msg.get(start..start + 10) else {
            return Malformed::Truncated;
        };
        let rtype = u16::from_be_bytes([t0, t1]);
        let rdlen = usize::from(u16::from_be_bytes([l0, l1]));
        let data = start + 10;
        let end = data + rdlen;
        if end > msg.len() {
            return Malformed::Truncated;
        }
        if rtype == Rtype::CNAME.to_int() {
            match skip_name(msg, data) {
                Ok(p) if p > end => return Malformed::Truncated,
                Ok(_) => {}
                Err(m) => return m,
            }
        }
        pos = end;
    }
    Malformed::Other
}

/// Checks the name at `start` as `domain` does (labels of 0..=63 bytes, pointers strictly
/// backwards, at most 255 pointers, under 255 bytes) and returns the position after it.
fn skip_name(msg: &[u8], start: usize) -> Result<usize, Malformed> {
    let mut pos = start;
    let mut after = None;
    let mut len = 0usize;
    let mut pointers = 0usize;
    loop {
        let Some(&b) = msg.get(pos) else {
            return Err(Malformed::Truncated);
        };
        match b & 0xc0 {
            0x00 if b == 0 => return Ok(after.unwrap_or(pos + 1)),
            0x00 => {
                len += usize::from(b) + 1;
                if len >= 255 {
                    return Err(Malformed::Label);
                }
                pos += usize::from(b) + 1;
            }
            0xc0 => {
                let Some(&low) = msg.get(pos + 1) else {
                    return Err(Malformed::Truncated);
                };
                let target = (usize::from(b & 0x3f) << 8) | usize::from(low);
                after.get_or_insert(pos + 2);
                pointers += 1;
                if target >= pos || pointers > 255 {
                    return Err(Malformed::Compression);
                }
                pos = target;
            }
            _ => return Err(Malformed::Label),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::{net::Ipv4Addr, str::FromStr};

    use domain::{
        base::{MessageBuilder, Name, StaticCompressor, Ttl, iana::Rcode},
        rdata::{A, Aaaa, Cname},
    };

    use super::*;

    /// A query for `name` of type `qtype` with transaction id `id`.
    pub(crate) fn query(id: u16, name: &str, qtype: Rtype) -> Vec<u8> {
        let mut b = MessageBuilder::new_vec();
        b.header_mut().set_id(id);
        b.header_mut().set_rd(true);
        let mut q = b.question();
        q.push((Name::<Vec<u8>>::from_str(name).unwrap(), qtype))
            .unwrap();
        q.finish()
    }

    /// A compressed response to `name`/`qtype`: the CNAME chain `cnames` (each aliasing the
    /// previous name), then A records for the last name, then an OPT record.
    pub(crate) fn response(
        id: u16,
        name: &str,
        qtype: Rtype,
        rcode: Rcode,
        cnames: &[&str],
        addrs: &[(IpAddr, u32)],
    ) -> Vec<u8> {
        let mut b = MessageBuilder::from_target(StaticCompressor::new(Vec::new())).unwrap();
        b.header_mut().set_id(id);
        b.header_mut().set_qr(true);
        b.header_mut().set_rcode(rcode);
        let qname = Name::<Vec<u8>>::from_str(name).unwrap();
        let mut q = b.question();
        q.push((qname.clone(), qtype)).unwrap();
        let mut a = q.answer();
        let mut owner = qname;
        for alias in cnames {
            let target = Name::<Vec<u8>>::from_str(alias).unwrap();
            a.push((
                owner.clone(),
                Ttl::from_secs(300),
                Cname::new(target.clone()),
            ))
            .unwrap();
            owner = target;
        }
        for (ip, ttl) in addrs {
            match ip {
                IpAddr::V4(v4) => a
                    .push((owner.clone(), Ttl::from_secs(*ttl), A::new(*v4)))
                    .unwrap(),
                IpAddr::V6(v6) => a
                    .push((owner.clone(), Ttl::from_secs(*ttl), Aaaa::new(*v6)))
                    .unwrap(),
            }
        }
        let mut add = a.additional();
        add.opt(|_| Ok(())).unwrap();
        add.finish().into_target()
    }

    fn ip(s: &str) -> IpAddr {
        IpAddr::from_str(s).unwrap()
    }

    #[test]
    fn query_header_and_question_are_read() {
        let bytes = query(0x1234, "WWW.Example.COM", Rtype::AAAA);
        let p = parse(&bytes, true).unwrap();
        assert_eq!((p.id, p.response, p.rcode, p.qtype), (0x1234, false, 0, 28));
        assert_eq!(p.qname(), "www.example.com");
        let mut out = Answers::default();
        assert_eq!(p.answers(&mut out), None);
        assert_eq!(out, Answers::default());
    }

    #[test]
    fn cname_chain_is_followed_to_the_addresses() {
        let bytes = response(
            7,
            "a.example",
            Rtype::A,
            Rcode::NOERROR,
            &["b.example", "c.cdn.example"],
            &[(ip("192.0.2.1"), 60), (ip("192.0.2.2"), 30)],
        );
        let p = parse(&bytes, true).unwrap();
        assert_eq!((p.id, p.response, p.rcode), (7, true, 0));
        let mut out = Answers::default();
        assert_eq!(p.answers(&mut out), None);
        assert_eq!(out.names, ["a.example", "b.example", "c.cdn.example"]);
        assert_eq!(out.addrs, [(ip("192.0.2.1"), 60), (ip("192.0.2.2"), 30)]);
    }

    #[test]
    fn every_address_of_a_large_answer_is_read() {
        // 300 A records: about 4.8 kB, more than any fixed record cap would take.
        let addrs: Vec<(IpAddr, u32)> = (0..300u32)
            .map(|i| (IpAddr::V4(Ipv4Addr::from(0xc000_0200 + i)), 60))
            .collect();
        let bytes = response(9, "many.example", Rtype::A, Rcode::NOERROR, &[], &addrs);
        let p = parse(&bytes, true).unwrap();
        let mut out = Answers::default();
        assert_eq!(p.answers(&mut out), None);
        assert_eq!(out.addrs, addrs);
        assert_eq!(out.names, ["many.example"]);
    }

    #[test]
    fn addresses_of_unrelated_names_and_broken_chains_are_ignored() {
        // The chain is a → b, but the addresses belong to z: not for this question.
        let mut b = MessageBuilder::new_vec();
        b.header_mut().set_qr(true);
        let mut q = b.question();
        q.push((Name::<Vec<u8>>::from_str("a.example").unwrap(), Rtype::A))
            .unwrap();
        let mut a = q.answer();
        let n = |s: &str| Name::<Vec<u8>>::from_str(s).unwrap();
        a.push((n("a.example"), 5, Cname::new(n("b.example"))))
            .unwrap();
        a.push((n("z.example"), 5, A::new(Ipv4Addr::new(192, 0, 2, 9))))
            .unwrap();
        a.push((n("B.EXAMPLE"), 5, A::new(Ipv4Addr::new(192, 0, 2, 8))))
            .unwrap();
        let bytes = a.finish();
        let mut out = Answers::default();
        assert_eq!(parse(&bytes, true).unwrap().answers(&mut out), None);
        assert_eq!(out.names, ["a.example", "b.example"]);
        assert_eq!(out.addrs, [(ip("192.0.2.8"), 5)]);
    }

    #[test]
    fn cname_loops_and_long_chains_stop() {
        let n = |s: &str| Name::<Vec<u8>>::from_str(s).unwrap();
        let mut b = MessageBuilder::new_vec();
        b.header_mut().set_qr(true);
        let mut q = b.question();
        q.push((n("x0.example"), Rtype::A)).unwrap();
        let mut a = q.answer();
        // x0 → x1 → ... → x11 (longer than the bound), and x11 → x0 (a loop).
        for i in 0..12 {
            let next = format!("x{}.example", (i + 1) % 12);
            a.push((n(&format!("x{i}.example")), 5, Cname::new(n(&next))))
                .unwrap();
        }
        for i in 0..12 {
            let last = 192 - i;
            a.push((
                n(&format!("x{i}.example")),
                5,
                A::new(Ipv4Addr::new(192, 0, 2, last)),
            ))
            .unwrap();
        }
        let bytes = a.finish();
        let mut out = Answers::default();
        assert_eq!(parse(&bytes, true).unwrap().answers(&mut out), None);
        assert_eq!(out.names.len(), 1 + MAX_CNAME_CHAIN);
        assert_eq!(out.addrs.len(), 1 + MAX_CNAME_CHAIN);
    }

    #[test]
    fn names_are_escaped_and_root_is_a_dot() {
        let mut bytes = query(1, "example", Rtype::A);
        // Rewrite the label "example" (7 bytes at 13..20) to hold a dot and a control byte.
        bytes[13] = b'E';
        bytes[14] = b'.';
        bytes[15] = 0x01;
        assert_eq!(parse(&bytes, true).unwrap().qname(), "e\\.\\001mple");
        let root = query(1, ".", Rtype::NS);
        assert_eq!(parse(&root, true).unwrap().qname(), ".");
    }

    #[test]
    fn malformed_messages_are_classified() {
        let good = query(1, "a.example", Rtype::A);
        assert_eq!(parse(&good[..5], true).err(), Some(Malformed::Truncated));
        assert_eq!(parse(&good[..16], false).err(), Some(Malformed::Truncated));
        // 65535 answers in a 29-byte message.
        let mut counts = good.clone();
        counts[6] = 0xff;
        counts[7] = 0xff;
        assert_eq!(parse(&counts, true).err(), Some(Malformed::Counts));
        // Question name = a pointer to itself.
        let mut ptr = good[..12].to_vec();
        ptr.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
        assert_eq!(parse(&ptr, true).err(), Some(Malformed::Compression));
        // A label length byte of 0x40 (reserved label type).
        let mut label = good.clone();
        label[12] = 0x40;
        assert_eq!(parse(&label, true).err(), Some(Malformed::Label));
        // A name of 300 bytes (5 labels of 59 + ...).
        let mut long = good[..12].to_vec();
        for _ in 0..5 {
            long.push(59);
            long.extend_from_slice(&[b'a'; 59]);
        }
        long.extend_from_slice(&[0, 0, 1, 0, 1]);
        assert_eq!(parse(&long, true).err(), Some(Malformed::Label));
        let mut none = good[..12].to_vec();
        none[5] = 0;
        assert_eq!(parse(&none, true).err(), Some(Malformed::NoQuestion));
        // An A record of 5 bytes: read by the walker, refused by the record parser.
        let mut bad_a = response(1, "a.example", Rtype::A, Rcode::NOERROR, &[], &[]);
        bad_a[7] = 1; // ancount 1
        bad_a[11] = 0; // no additional
        bad_a.truncate(good.len());
        bad_a.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 5, 0, 5, 1, 2, 3, 4, 5]);
        let p = parse(&bad_a, true).unwrap();
        let mut out = Answers::default();
        assert_eq!(p.answers(&mut out), Some(Malformed::Other));
    }

    #[test]
    fn a_response_cut_short_keeps_the_answers_before_the_cut() {
        let bytes = response(
            3,
            "a.example",
            Rtype::A,
            Rcode::NOERROR,
            &[],
            &[(ip("192.0.2.1"), 60), (ip("192.0.2.2"), 60)],
        );
        // Header + question (27) + first A (compressed owner: 2 + 10 + 4 = 16) + 3 bytes.
        let cut = &bytes[..27 + 16 + 3];
        let p = parse(cut, false).unwrap();
        let mut out = Answers::default();
        assert_eq!(p.answers(&mut out), Some(Malformed::Truncated));
        assert_eq!(out.addrs, [(ip("192.0.2.1"), 60)]);
        assert_eq!(out.names, ["a.example"]);
    }
}
