//! The HTTP source through its seam, [`Http::ingest_at`]: records built by hand as the kernel
//! will write them.

use std::{net::SocketAddr, sync::Arc};

use proptest::prelude::*;
use tracer_common::{
    conn::{AF_INET, AF_INET6},
    http::{HTTP_FLAG_PATH_TRUNCATED, HTTP_TRANSACTION_LEN, PACKET_KIND_HTTP},
    packet::PACKET_KIND_DNS,
};

use super::*;
use crate::model::{HttpKey, HttpStats, LATENCY_RELATIVE_ACCURACY};

const MS: u64 = 1_000_000;
const S: u64 = 1_000_000_000;

const CLIENT: ([u8; 4], u16) = ([10, 0, 0, 1], 40_000);
const SERVER: ([u8; 4], u16) = ([10, 0, 0, 2], 8080);

fn v4(a: [u8; 4]) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..4].copy_from_slice(&a);
    out
}

/// A transaction seen by the client's socket: `method path` answered `status` after
/// `latency_ns`.
fn tx(method: HttpMethod, path: &str, status: u16, latency_ns: u64) -> HttpTransaction {
    let mut t = HttpTransaction::EMPTY;
    t.request_ns = 100 * S;
    t.response_ns = 100 * S + latency_ns;
    t.cookie = 7;
    t.saddr = v4(CLIENT.0);
    t.sport = CLIENT.1;
    t.daddr = v4(SERVER.0);
    t.dport = SERVER.1;
    t.family = AF_INET;
    t.method = method as u8;
    t.role = HTTP_ROLE_CLIENT;
    t.status = status;
    let bytes = path.as_bytes();
    let n = bytes.len().min(HTTP_PATH_MAX);
    t.path[..n].copy_from_slice(&bytes[..n]);
    t.path_len = u16::try_from(bytes.len()).unwrap();
    t.path_captured = n as u16;
    if bytes.len() > HTTP_PATH_MAX {
        t.flags |= HTTP_FLAG_PATH_TRUNCATED;
    }
    t
}

/// The same transaction as the server's socket saw it.
fn server_side(mut t: HttpTransaction) -> HttpTransaction {
    std::mem::swap(&mut t.saddr, &mut t.daddr);
    std::mem::swap(&mut t.sport, &mut t.dport);
    t.role = HTTP_ROLE_SERVER;
    t.cookie += 1;
    t
}

fn bytes(t: &HttpTransaction) -> Vec<u8> {
    // SAFETY: plain old data viewed as bytes.
    unsafe {
        std::slice::from_raw_parts(
            (t as *const HttpTransaction).cast::<u8>(),
            HTTP_TRANSACTION_LEN,
        )
    }
    .to_vec()
}

fn ingest(http: &Http, t: &HttpTransaction) {
    http.ingest_at(&bytes(t), || 100 * S);
}

fn counter(http: &Http, name: &str) -> u64 {
    let mut out = Vec::new();
    http.collect(&mut out);
    out.iter()
        .find(|s| s.info.name == name)
        .map(|s| s.value)
        .unwrap_or_else(|| panic!("no counter {name}"))
}

fn key(path: &str, method: HttpMethod) -> HttpKey {
    HttpKey {
        client: SocketAddr::from(CLIENT),
        server: SocketAddr::from(SERVER),
        path: Arc::from(path),
        path_complete: true,
        method,
    }
}

fn stats<'a>(usm: &'a UsmStats, path: &str, method: HttpMethod) -> &'a HttpStats {
    usm.http
        .get(&key(path, method))
        .unwrap_or_else(|| panic!("no stats for {method:?} {path}: {:?}", usm.http.keys()))
}

fn source() -> Http {
    Http::start(&HttpConfig::default())
}

/// Every way a record ends, summed: equals `http_records` once nothing waits.
fn settled(http: &Http) -> u64 {
    [
        "http_records_invalid",
        "http_unknown_method",
        "http_invalid_latency",
        "http_invalid_status",
        "http_path_empty",
        "http_path_malformed",
        "http_path_rejected",
        "http_recorded",
        "http_stats_dropped",
        "http_duplicates",
    ]
    .iter()
    .map(|name| counter(http, name))
    .sum::<u64>()
        + counter(http, "http_waiting")
}

#[test]
fn requests_aggregate_by_path_method_and_status() {
    let http = source();
    for (method, path, status, latency) in [
        (HttpMethod::Get, "/users/1", 200, 2 * MS),
        (HttpMethod::Get, "/users/2", 200, 4 * MS),
        (HttpMethod::Get, "/users/3", 404, MS),
        (HttpMethod::Post, "/users/4", 201, 8 * MS),
        (HttpMethod::Get, "/health", 200, MS / 2),
    ] {
        ingest(&http, &tx(method, path, status, latency));
    }
    let usm = http.take_stats(101 * S);
    assert_eq!(usm.len(), 3);
    let users = stats(&usm, "/users/*", HttpMethod::Get);
    assert_eq!(users.count(), 3);
    let ok = &users.0[&200];
    assert_eq!((ok.count, ok.first_latency_ns), (2, 2 * MS));
    let sketch = ok.latencies.as_ref().unwrap();
    assert_eq!((sketch.min(), sketch.max()), (Some(2e6), Some(4e6)));
    assert_eq!(users.0[&404].count, 1);
    assert!(users.0[&404].latencies.is_none());
    assert_eq!(stats(&usm, "/users/*", HttpMethod::Post).0[&201].count, 1);
    assert_eq!(
        stats(&usm, "/health", HttpMethod::Get).0[&200].latency_quantile(0.99),
        Some(5e5)
    );
    assert_eq!(counter(&http, "http_recorded"), 5);
    assert_eq!(counter(&http, "http_path_quantized"), 4);
    // The take emptied the stats.
    assert!(http.take_stats(102 * S).is_empty());
}

#[test]
fn quantization_follows_datadogs_examples_and_can_be_turned_off() {
    let http = source();
    for path in [
        "/abc/123/def",
        "/abc/F05065B2-7934-4480-8500-A2C40D76F59F",
        "/v5/abc",
        "/latest/meta-data",
        "/abc/def123",
        "/abc#def",
    ] {
        ingest(&http, &tx(HttpMethod::Get, path, 200, MS));
    }
    let usm = http.take_stats(101 * S);
    let mut paths: Vec<&str> = usm.http.keys().map(|k| &*k.path).collect();
    paths.sort_unstable();
    // `#` ends the path (a fragment), as `?` does: "/abc#def" is "/abc".
    assert_eq!(
        paths,
        [
            "/abc",
            "/abc/*",
            "/abc/*/def",
            "/latest/meta-data",
            "/v5/abc"
        ]
    );
    assert_eq!(stats(&usm, "/abc/*", HttpMethod::Get).count(), 2);

    let raw = Http::start(&HttpConfig {
        quantize: false,
        ..HttpConfig::default()
    });
    ingest(&raw, &tx(HttpMethod::Get, "/abc/123/def", 200, MS));
    assert_eq!(
        stats(&raw.take_stats(101 * S), "/abc/123/def", HttpMethod::Get).count(),
        1
    );
}

#[test]
fn the_query_is_never_part_of_the_path() {
    let http = source();
    ingest(&http, &tx(HttpMethod::Get, "/search?q=1&page=2", 200, MS));
    ingest(&http, &tx(HttpMethod::Get, "/search", 200, MS));
    let usm = http.take_stats(101 * S);
    assert_eq!(stats(&usm, "/search", HttpMethod::Get).count(), 2);
}

#[test]
fn sketch_quantiles_through_ingest_are_within_1pct_of_exact() {
    let http = source();
    // 1 000 requests: latencies 0.1 ms .. 100 ms, spread geometrically.
    let mut latencies: Vec<u64> = (0..1_000)
        .map(|i| (100_000.0 * 1000f64.powf(f64::from(i) / 999.0)) as u64)
        .collect();
    for &l in &latencies {
        ingest(&http, &tx(HttpMethod::Get, "/api", 200, l));
    }
    latencies.sort_unstable();
    let usm = http.take_stats(101 * S);
    let requests = &stats(&usm, "/api", HttpMethod::Get).0[&200];
    assert_eq!(requests.count, 1_000);
    for q in [0.0, 0.5, 0.9, 0.99, 0.999, 1.0] {
        let exact = latencies[(q * 999.0) as usize] as f64;
        let got = requests.latency_quantile(q).unwrap();
        assert!(
            (got - exact).abs() / exact <= LATENCY_RELATIVE_ACCURACY + 1e-9,
            "q {q}: {got} vs {exact}"
        );
    }
}

#[test]
fn long_paths_are_keyed_by_their_prefix_never_read_past_the_array() {
    let http = Http::start(&HttpConfig {
        quantize: false,
        ..HttpConfig::default()
    });
    let long = format!("/{}", "a".repeat(300));
    let t = tx(HttpMethod::Get, &long, 200, MS);
    assert!(usize::from(t.path_len) > HTTP_PATH_MAX);
    ingest(&http, &t);
    // A kernel that claims more captured bytes than the array holds.
    let mut liar = tx(HttpMethod::Get, "/x", 200, MS);
    liar.path_len = u16::MAX;
    liar.path_captured = u16::MAX;
    liar.path = [b'b'; HTTP_PATH_MAX];
    ingest(&http, &liar);
    let usm = http.take_stats(101 * S);
    let mut keys: Vec<&HttpKey> = usm.http.keys().collect();
    keys.sort();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0].path.len(), HTTP_PATH_MAX);
    assert!(!keys[0].path_complete);
    assert_eq!(&*keys[0].path, &long[..HTTP_PATH_MAX]);
    assert_eq!(&*keys[1].path, "b".repeat(HTTP_PATH_MAX));
    assert!(!keys[1].path_complete);
    assert_eq!(counter(&http, "http_path_truncated"), 2);
}

#[test]
fn path_bytes_cuts_paths_shorter_than_the_record() {
    let http = Http::start(&HttpConfig {
        path_bytes: 8,
        ..HttpConfig::default()
    });
    ingest(&http, &tx(HttpMethod::Get, "/abcdefghij", 200, MS));
    ingest(&http, &tx(HttpMethod::Get, "/abc", 200, MS));
    let usm = http.take_stats(101 * S);
    let mut keys: Vec<(String, bool)> = usm
        .http
        .keys()
        .map(|k| (k.path.to_string(), k.path_complete))
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [("/abc".to_owned(), true), ("/abcdefg".to_owned(), false)]
    );
}

#[test]
fn new_keys_past_max_stats_are_dropped_and_counted() {
    let http = Http::start(&HttpConfig {
        max_stats: 3,
        quantize: false,
        ..HttpConfig::default()
    });
    for i in 0..5 {
        ingest(&http, &tx(HttpMethod::Get, &format!("/p{i}"), 200, MS));
    }
    // An existing key still counts.
    ingest(&http, &tx(HttpMethod::Get, "/p0", 200, MS));
    assert_eq!(counter(&http, "http_keys"), 3);
    let usm = http.take_stats(101 * S);
    assert_eq!(usm.len(), 3);
    assert_eq!(stats(&usm, "/p0", HttpMethod::Get).count(), 2);
    assert_eq!(counter(&http, "http_stats_dropped"), 2);
    assert_eq!(counter(&http, "http_recorded"), 4);
    // The cap is per take.
    ingest(&http, &tx(HttpMethod::Get, "/p4", 200, MS));
    assert_eq!(http.take_stats(102 * S).len(), 1);
}

#[test]
fn malformed_records_are_refused_and_counted() {
    // Without quantization, which would turn a segment with a control character or a
    // non-UTF-8 byte into `*` before the malformed check (as in Datadog).
    let http = Http::start(&HttpConfig {
        quantize: false,
        ..HttpConfig::default()
    });
    let good = tx(HttpMethod::Get, "/", 200, MS);
    // Short.
    http.ingest_at(&bytes(&good)[..HTTP_TRANSACTION_LEN - 1], || 0);
    http.ingest_at(&[], || 0);
    // Wrong kind.
    let mut dns = good;
    dns.kind = PACKET_KIND_DNS;
    ingest(&http, &dns);
    // Status 0 and above 999.
    ingest(&http, &tx(HttpMethod::Get, "/", 0, MS));
    ingest(&http, &tx(HttpMethod::Get, "/", 1_000, MS));
    ingest(&http, &tx(HttpMethod::Get, "/", u16::MAX, MS));
    // Unknown family, unknown role.
    let mut family = good;
    family.family = 1;
    ingest(&http, &family);
    let mut role = good;
    role.role = 0;
    ingest(&http, &role);
    assert_eq!(counter(&http, "http_records_invalid"), 8);

    // Datadog's drops.
    let mut method = good;
    method.method = 0;
    ingest(&http, &method);
    method.method = 10;
    ingest(&http, &method);
    assert_eq!(counter(&http, "http_unknown_method"), 2);
    ingest(&http, &tx(HttpMethod::Get, "/", 200, 0));
    let mut backwards = good;
    backwards.response_ns = backwards.request_ns - 1;
    ingest(&http, &backwards);
    assert_eq!(counter(&http, "http_invalid_latency"), 2);
    ingest(&http, &tx(HttpMethod::Get, "/", 99, MS));
    ingest(&http, &tx(HttpMethod::Get, "/", 600, MS));
    ingest(&http, &tx(HttpMethod::Get, "/", 999, MS));
    assert_eq!(counter(&http, "http_invalid_status"), 3);

    // Paths.
    ingest(&http, &tx(HttpMethod::Get, "", 200, MS));
    ingest(&http, &tx(HttpMethod::Get, "?q=1", 200, MS));
    assert_eq!(counter(&http, "http_path_empty"), 2);
    ingest(&http, &tx(HttpMethod::Get, "/a\u{1}b", 200, MS));
    let mut not_utf8 = tx(HttpMethod::Get, "/ab", 200, MS);
    not_utf8.path[2] = 0xff;
    ingest(&http, &not_utf8);
    assert_eq!(counter(&http, "http_path_malformed"), 2);

    assert!(http.take_stats(101 * S).is_empty());
    assert_eq!(counter(&http, "http_recorded"), 0);
    assert_eq!(settled(&http), counter(&http, "http_records"));
    // Boundaries that are valid.
    for status in [100, 599] {
        ingest(&http, &tx(HttpMethod::Get, "/", status, 1));
    }
    let mut v6 = good;
    v6.family = AF_INET6;
    ingest(&http, &v6);
    assert_eq!(counter(&http, "http_recorded"), 3);
}

#[test]
fn replace_rules_drop_first_then_rewrite_in_order() {
    let rule = |pattern: &str, replacement: Option<&str>| ReplaceRule {
        pattern: pattern.into(),
        replacement: replacement.map(Into::into),
    };
    let http = Http::start(&HttpConfig {
        quantize: false,
        replace_rules: vec![
            rule(r"^/users/(\d+)/view$", Some("/users/$1")),
            // Applied to the previous rule's output.
            rule(r"^/users/\d+$", Some("/people/*")),
            // A drop rule, listed last, applies first: no rewrite saves a health check.
            rule("^/health", None),
            rule(r"[\x00-\x1f]", Some("_")),
            rule("^/raw", Some("/RAW")),
        ],
        ..HttpConfig::default()
    });
    ingest(&http, &tx(HttpMethod::Get, "/users/42/view", 200, MS));
    ingest(&http, &tx(HttpMethod::Get, "/healthz", 200, MS));
    ingest(&http, &tx(HttpMethod::Get, "/ctl\u{7}", 200, MS));
    // A path some rule matched is not checked for control characters (as Datadog).
    ingest(&http, &tx(HttpMethod::Get, "/raw\u{1}", 200, MS));
    let usm = http.take_stats(101 * S);
    let mut paths: Vec<&str> = usm.http.keys().map(|k| &*k.path).collect();
    paths.sort_unstable();
    assert_eq!(paths, ["/RAW_", "/ctl_", "/people/*"]);
    assert_eq!(counter(&http, "http_path_rejected"), 1);
    assert_eq!(counter(&http, "http_path_malformed"), 0);
}

#[test]
fn a_local_transaction_reported_by_both_sockets_counts_once() {
    let http = source();
    let t = tx(HttpMethod::Get, "/a", 200, MS);
    // Server first (its socket often finishes first), then client; then the other order.
    http.ingest_at(&bytes(&server_side(t)), || 100 * S);
    http.ingest_at(&bytes(&t), || 100 * S);
    http.ingest_at(&bytes(&t), || 100 * S);
    http.ingest_at(&bytes(&server_side(t)), || 100 * S);
    assert_eq!(counter(&http, "http_duplicates"), 1);
    assert_eq!(counter(&http, "http_waiting"), 1);
    let first = http.take_stats(100 * S + MS);
    assert_eq!(stats(&first, "/a", HttpMethod::Get).count(), 2);
    // Past the window the waiting observation is settled as a duplicate.
    assert!(http.take_stats(103 * S).is_empty());
    assert_eq!(counter(&http, "http_duplicates"), 2);
    assert_eq!(counter(&http, "http_waiting"), 0);
    assert_eq!(settled(&http), counter(&http, "http_records"));
}

#[test]
fn a_remote_clients_transactions_reach_the_first_take_past_the_window() {
    let http = source();
    let t = server_side(tx(HttpMethod::Get, "/a", 503, MS));
    http.ingest_at(&bytes(&t), || 100 * S);
    assert!(http.take_stats(101 * S).is_empty());
    let usm = http.take_stats(102 * S);
    // Keyed as the client sees it: client = the server socket's peer.
    assert_eq!(stats(&usm, "/a", HttpMethod::Get).0[&503].count, 1);
    assert_eq!(counter(&http, "http_recorded"), 1);
}

#[test]
fn a_disabled_source_ignores_everything() {
    let http = Http::start(&HttpConfig {
        enabled: false,
        ..HttpConfig::default()
    });
    ingest(&http, &tx(HttpMethod::Get, "/", 200, MS));
    http.ingest_at(&[1, 2, 3], || 0);
    assert!(http.take_stats(101 * S).is_empty());
    assert_eq!(counter(&http, "http_records"), 0);
}

#[test]
fn config_validation() {
    assert!(HttpConfig::default().validate().is_ok());
    for bad in [
        HttpConfig {
            path_bytes: 0,
            ..HttpConfig::default()
        },
        HttpConfig {
            path_bytes: HTTP_PATH_MAX + 1,
            ..HttpConfig::default()
        },
        HttpConfig {
            max_stats: 0,
            ..HttpConfig::default()
        },
        HttpConfig {
            dedup_window: std::time::Duration::from_secs(61),
            ..HttpConfig::default()
        },
        HttpConfig {
            replace_rules: vec![ReplaceRule {
                pattern: "[".into(),
                replacement: Some("x".into()),
            }],
            ..HttpConfig::default()
        },
    ] {
        assert!(
            matches!(bad.validate(), Err(Error::InvalidConfig(_))),
            "{bad:?}"
        );
    }
}

/// A record with every field drawn at random, but laid out as the kernel writes it, so that
/// most get past the first checks.
fn arb_record() -> impl Strategy<Value = HttpTransaction> {
    (
        (any::<u64>(), 0u64..10 * S, 0u8..3, 0u8..12, 0u16..1_100),
        (
            prop_oneof![Just(AF_INET), Just(AF_INET6), any::<u16>()],
            0u16..4,
            0u16..4,
            any::<u16>(),
            any::<u16>(),
            any::<u8>(),
        ),
        proptest::collection::vec(
            prop_oneof![Just(b'/'), Just(b'1'), Just(b'a'), Just(b'?'), any::<u8>()],
            0..HTTP_PATH_MAX,
        ),
    )
        .prop_map(
            |(
                (request_ns, latency, role, method, status),
                (family, sport, dport, path_len, captured, flags),
                path,
            )| {
                let mut t = HttpTransaction::EMPTY;
                t.request_ns = request_ns;
                t.response_ns = request_ns.wrapping_add(latency);
                t.role = role;
                t.method = method;
                t.status = status;
                t.family = family;
                // Few ports, so that records share keys and connections.
                t.sport = sport;
                t.dport = dport;
                t.path_len = path_len;
                t.path_captured = captured;
                t.flags = flags;
                t.kind = PACKET_KIND_HTTP;
                t.path[..path.len()].copy_from_slice(&path);
                t
            },
        )
}

proptest! {
    #[test]
    fn random_bytes_never_panic_and_are_all_counted(
        records in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..2 * HTTP_TRANSACTION_LEN), 0..32),
    ) {
        let http = source();
        for record in &records {
            http.ingest_at(record, || 0);
        }
        http.take_stats(u64::MAX);
        prop_assert_eq!(counter(&http, "http_records"), records.len() as u64);
        prop_assert_eq!(settled(&http), records.len() as u64);
        prop_assert_eq!(counter(&http, "http_waiting"), 0);
    }

    #[test]
    fn random_records_are_all_counted_and_recorded_ones_reach_the_stats(
        records in proptest::collection::vec(arb_record(), 0..64),
        max_stats in 1usize..8,
        takes in proptest::collection::vec(0u64..20 * S, 0..4),
    ) {
        let http = Http::start(&HttpConfig { max_stats, ..HttpConfig::default() });
        let mut total = 0u64;
        let mut takes = takes.into_iter();
        for (i, t) in records.iter().enumerate() {
            http.ingest_at(&bytes(t), || (i as u64) * S / 4);
            if i % 16 == 15 && let Some(now) = takes.next() {
                total += http.take_stats(now).http.values().map(HttpStats::count).sum::<u64>();
            }
        }
        let last = http.take_stats(u64::MAX);
        prop_assert!(last.len() <= max_stats);
        total += last.http.values().map(HttpStats::count).sum::<u64>();
        prop_assert_eq!(settled(&http), records.len() as u64);
        prop_assert_eq!(counter(&http, "http_waiting"), 0);
        prop_assert_eq!(total, counter(&http, "http_recorded"));
    }
}
