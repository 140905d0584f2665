//! Entry points for the fuzz targets in `fuzz/` (cargo-fuzz), one per parser of input from
//! outside the process: the kernel (BTF, tracefs formats, ring records, netlink), the network
//! (DNS and HTTP captures) and `/proc`. Not an API: the parsers stay private to their modules and
//! this one narrow seam reaches them, so that the fuzz crate needs no other internals. Each
//! function runs one input through the parser and then through what the tracer does with the
//! result; none may panic, whatever the bytes.

use std::path::Path;

use crate::{
    KernelVersion, decode,
    enrich::{conntrack, containers, routes},
    kernel::{btf::Btf, capabilities, layout, privileges, tracefs::EventFormat},
    model::EphemeralPortRange,
    sources::{
        Sources,
        dns::{DnsConfig, parse as dns_parse},
        http::HttpConfig,
    },
};

/// A BTF blob (`/sys/kernel/btf/vmlinux` or a file given by path): parsed, then asked for every
/// offset the loader asks for.
pub fn btf(data: &[u8]) {
    let Ok(btf) = Btf::parse(data) else {
        return;
    };
    let path = Path::new("fuzz");
    let _ = layout::sock_offsets(&btf, path);
    let _ = layout::file_offsets(&btf, path);
    for name in ["sock", "tcp_sock", "msghdr", "sk_buff", "nonexistent"] {
        let _ = btf.struct_size(name);
        let _ = btf.has_struct(name);
    }
    let _ = btf.member_size("sock", "__sk_common.skc_v6_daddr");
    let _ = btf.member_offset("msghdr", "msg_name");
    let _ = btf.has_function("tcp_sendmsg");
}

/// A tracefs `format` file, and the lookups the layout makes.
pub fn tracefs_format(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let format = EventFormat::parse(text);
    for field in ["sk", "protocol", "oldstate", "newstate", "saddr_v6", "ret"] {
        let _ = format.field("fuzz/event", field);
    }
}

/// One ring record, read as every kind of record the rings carry.
pub fn ring_record(data: &[u8]) {
    if let Some(conn) = decode::closed_record(data) {
        let _ = decode::connection(&conn.stats, &EphemeralPortRange::default(), true);
    }
    let _ = decode::packet_record(data);
    let _ = decode::record_kind(data);
    let _ = decode::http_record(data);
}

/// A DNS message as the capture hands it, complete or cut short.
pub fn dns_message(data: &[u8]) {
    for complete in [true, false] {
        match dns_parse::parse(data, complete) {
            Ok(parsed) => {
                let _ = parsed.qname();
                let mut answers = dns_parse::Answers::default();
                let _ = parsed.answers(&mut answers);
            }
            Err(_) => {
                let _ = dns_parse::classify(data);
            }
        }
    }
}

/// A sequence of capture records (DNS over UDP and TCP, HTTP transactions) fed to the sources
/// as the tracer feeds them, then their stats taken. `records` splits one fuzz input into
/// records: each is prefixed by its length (one byte, so that mutations keep the framing).
pub fn capture_records(data: &[u8]) {
    let sources = Sources::start(&DnsConfig::default(), &HttpConfig::default());
    for record in records(data) {
        sources.ingest(record);
    }
    let _ = sources.take_dns(u64::MAX / 2);
    let _ = sources.take_http(u64::MAX / 2);
}

/// Splits `data` into records: a length byte `n` announces the next `n * 4` bytes (a record
/// is a header of 88+ bytes, so one byte counts 4-byte units); the rest is the last record.
pub fn records(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = data;
    std::iter::from_fn(move || {
        let (&len, tail) = rest.split_first()?;
        let len = usize::from(len) * 4;
        let (record, after) = tail.split_at(len.min(tail.len()));
        rest = after;
        Some(record)
    })
}

/// The inverse of [`records`], for building seeds: `None` when a record's length is not a
/// multiple of 4 or exceeds 1020 bytes.
pub fn frame_records<'a>(records: impl IntoIterator<Item = &'a [u8]>) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    for record in records {
        if record.len() % 4 != 0 {
            return None;
        }
        out.push(u8::try_from(record.len() / 4).ok()?);
        out.extend_from_slice(record);
    }
    Some(out)
}

/// A datagram read from a conntrack (netfilter) netlink socket.
pub fn conntrack_netlink(data: &[u8]) {
    for message in conntrack::parse::messages(data) {
        if let conntrack::parse::Message::New(entry) | conntrack::parse::Message::Destroy(entry) =
            message
        {
            let _ = entry.is_nat();
        }
    }
}

/// A datagram read from a route netlink socket, answering the request of the first message's
/// sequence number.
pub fn route_netlink(data: &[u8]) {
    let sequence = data
        .get(8..12)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map_or(0, u32::from_ne_bytes);
    if let Some(payload) = routes::netlink::find_answer(data, sequence) {
        let _ = routes::netlink::decode_route_answer(payload);
    }
}

/// A cgroup path, to the container id rule (the fuzz target checks that the id is part of the
/// path: the rule never invents bytes).
pub fn cgroup_path(data: &[u8]) -> Option<&str> {
    containers::id::container_id(data)
}

/// The `/proc` (and `/proc/sys`) texts the tracer reads: mountinfo, a task's status, the
/// ephemeral port range and the kernel release.
pub fn proc_text(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = capabilities::parse_mountinfo(&text);
    let _ = capabilities::parse_cgroup2_mount(&text);
    let _ = privileges::parse_cap_eff(&text);
    let _ = EphemeralPortRange::parse(&text);
    let _ = KernelVersion::parse_release(&text);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fuzz/seeds")
            .join(target);
        let mut out: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| {
                let path = e.unwrap().path();
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                (name, std::fs::read(&path).unwrap())
            })
            .collect();
        out.sort();
        assert!(!out.is_empty(), "no seeds in {}", dir.display());
        out
    }

    #[test]
    fn the_btf_seed_is_a_subset_the_loader_resolves() {
        for (name, blob) in seeds("btf") {
            let btf = Btf::parse(&blob).unwrap_or_else(|e| panic!("{name}: {e}"));
            if name == "vmlinux-subset" {
                layout::sock_offsets(&btf, Path::new(&name)).unwrap();
                layout::file_offsets(&btf, Path::new(&name)).unwrap();
            }
        }
    }

    #[test]
    fn the_dns_seeds_are_real_messages_and_records() {
        let parsed = seeds("dns_message")
            .iter()
            .filter(|(_, m)| dns_parse::parse(m, true).is_ok())
            .count();
        assert!(parsed >= 6, "{parsed} seeds parse as whole messages");
        for (name, data) in seeds("capture_records") {
            let sources = Sources::start(&DnsConfig::default(), &HttpConfig::default());
            for record in records(&data) {
                sources.ingest(record);
            }
            let mut samples = Vec::new();
            sources.dns().collect(&mut samples);
            let counter = |n: &str| samples.iter().find(|s| s.info.name == n).map(|s| s.value);
            assert_eq!(
                counter("dns_records_invalid"),
                Some(0),
                "{name}: every record is a valid capture record"
            );
        }
    }

    #[test]
    fn records_frame_and_split_back() {
        let a = [1u8; 8];
        let b = [2u8; 92];
        let framed = frame_records([&a[..], &b[..]]).unwrap();
        assert_eq!(records(&framed).collect::<Vec<_>>(), vec![&a[..], &b[..]]);
        assert_eq!(frame_records([&[0u8; 3][..]]), None);
        assert_eq!(frame_records([&[0u8; 1024][..]]), None);
        // A length byte announcing more than is left takes the rest.
        assert_eq!(records(&[5, 1, 2]).collect::<Vec<_>>(), vec![&[1u8, 2][..]]);
    }

    #[test]
    fn every_seed_runs_through_its_target() {
        for (_, d) in seeds("btf") {
            btf(&d);
        }
        for (_, d) in seeds("tracefs_format") {
            tracefs_format(&d);
        }
        for (_, d) in seeds("ring_record") {
            ring_record(&d);
        }
        for (_, d) in seeds("proc_text") {
            proc_text(&d);
        }
        let ids = seeds("cgroup_path")
            .iter()
            .filter(|(_, d)| cgroup_path(d).is_some())
            .count();
        assert!(
            ids >= 4,
            "the container paths of real runtimes have ids: {ids}"
        );
    }
}
