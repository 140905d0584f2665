//! The human table: a header with time, backend and loss counters, then aligned rows.

use std::fmt::Write as _;

use tracer::{Backend, model::Direction};

use crate::{
    app::HttpCounts,
    clock,
    row::{Row, State, protocol_name},
    telemetry::{self, Telemetry},
    units,
};

/// Everything one snapshot shows.
pub struct Snapshot<'a> {
    pub unix_time: f64,
    pub backend: Backend,
    pub interval_s: f64,
    /// Connections the library reported for the interval.
    pub moved: usize,
    /// Whether `--pid` / `--port` filters are set (then `rows` holds only the matching ones).
    pub filtered: bool,
    /// Matching rows, sorted.
    pub rows: &'a [Row],
    pub limit: Option<usize>,
    pub telemetry: &'a Telemetry,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Align {
    Left,
    Right,
}

/// Number of columns.
const WIDTH: usize = 16;

const COLUMNS: [(&str, Align); WIDTH] = [
    ("PROCESS", Align::Left),
    ("PID", Align::Right),
    ("PROTO", Align::Left),
    ("APP", Align::Left),
    ("LOCAL", Align::Left),
    ("REMOTE", Align::Left),
    ("DIR", Align::Left),
    ("STATE", Align::Left),
    ("TX/s", Align::Right),
    ("RX/s", Align::Right),
    ("TX", Align::Right),
    ("RX", Align::Right),
    ("RETR", Align::Right),
    ("RTT", Align::Right),
    ("REQ/s", Align::Right),
    ("5XX%", Align::Right),
];

/// The snapshot as text, ending with a newline.
pub fn render(snapshot: &Snapshot<'_>) -> String {
    let mut out = String::new();
    let shown = match snapshot.limit {
        Some(limit) => snapshot.rows.len().min(limit),
        None => snapshot.rows.len(),
    };
    let _ = write!(
        out,
        "nettrace  {}  backend {}  interval {:.2} s  {} connection{} moved",
        clock::utc(snapshot.unix_time),
        snapshot.backend,
        snapshot.interval_s,
        snapshot.moved,
        if snapshot.moved == 1 { "" } else { "s" },
    );
    if snapshot.filtered {
        let _ = write!(out, ", {} match the filters", snapshot.rows.len());
    }
    if shown < snapshot.rows.len() {
        let _ = write!(out, ", top {shown} shown");
    }
    out.push('\n');
    let _ = writeln!(
        out,
        "loss: {}    events: {}",
        telemetry::render(&snapshot.telemetry.loss),
        telemetry::render(&snapshot.telemetry.activity)
    );
    out.push('\n');

    let cells: Vec<[String; WIDTH]> = snapshot
        .rows
        .iter()
        .take(shown)
        .map(|row| cells(row, snapshot.interval_s))
        .collect();
    let mut widths = COLUMNS.map(|(title, _)| title.chars().count());
    for row in &cells {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    push_line(
        &mut out,
        &COLUMNS.map(|(title, _)| title.to_owned()),
        &widths,
    );
    for row in &cells {
        push_line(&mut out, row, &widths);
    }
    if snapshot.rows.is_empty() {
        out.push_str("(no connection moved in this interval)\n");
    } else if shown < snapshot.rows.len() {
        let _ = writeln!(
            out,
            "... {} more (raise --limit, or --limit 0 for all)",
            snapshot.rows.len() - shown
        );
    }
    out
}

fn push_line(out: &mut String, cells: &[String; WIDTH], widths: &[usize; WIDTH]) {
    let mut line = String::new();
    for (((cell, width), (_, align)), index) in cells.iter().zip(widths).zip(COLUMNS).zip(0..) {
        if index > 0 {
            line.push_str("  ");
        }
        let _ = match align {
            Align::Left => write!(line, "{cell:<width$}"),
            Align::Right => write!(line, "{cell:>width$}"),
        };
    }
    out.push_str(line.trim_end());
    out.push('\n');
}

fn cells(row: &Row, interval_s: f64) -> [String; WIDTH] {
    [
        printable(&row.process),
        row.pid.to_string(),
        protocol_name(row.protocol).to_owned(),
        row.app_protocol
            .as_deref()
            .map_or_else(|| "-".to_owned(), printable),
        row.local.clone(),
        remote(row),
        direction(row.direction).to_owned(),
        state(row),
        units::rate(row.tx_bytes, interval_s),
        units::rate(row.rx_bytes, interval_s),
        units::bytes(row.tx_total),
        units::bytes(row.rx_total),
        row.retransmits.to_string(),
        rtt_ms(row.rtt_us),
        http_rate(row.http.as_ref(), interval_s),
        http_errors(row.http.as_ref()),
    ]
}

/// `in`, `out` or `?`.
pub fn direction(direction: Direction) -> &'static str {
    match direction {
        Direction::Incoming => "in",
        Direction::Outgoing => "out",
        Direction::Unknown => "?",
    }
}

/// `open`, `closed` or `failed:ERRNO`.
pub fn state(row: &Row) -> String {
    match &row.state {
        State::Open => "open".to_owned(),
        State::Closed => "closed".to_owned(),
        State::Failed(_) => format!("failed:{}", row.failure().unwrap_or_default()),
    }
}

/// The remote end, with its DNS name when known: `93.184.215.14:443 (example.com)`.
pub fn remote(row: &Row) -> String {
    match &row.remote_name {
        Some(name) => format!("{} ({})", row.remote, printable(name)),
        None => row.remote.clone(),
    }
}

/// HTTP requests per second, one decimal, or `-` when the connection carried none.
pub fn http_rate(http: Option<&HttpCounts>, interval_s: f64) -> String {
    match http.and_then(|h| h.per_second(interval_s)) {
        Some(rate) => format!("{rate:.1}"),
        None => "-".to_owned(),
    }
}

/// The share of HTTP requests answered 5xx in percent, one decimal, or `-` without requests.
pub fn http_errors(http: Option<&HttpCounts>) -> String {
    match http.and_then(HttpCounts::error_rate) {
        Some(rate) => format!("{:.1}", rate * 100.0),
        None => "-".to_owned(),
    }
}

/// `1.5` (ms, one decimal) or `-`.
pub fn rtt_ms(rtt_us: Option<u32>) -> String {
    match rtt_us {
        Some(us) => format!("{:.1}", f64::from(us) / 1000.0),
        None => "-".to_owned(),
    }
}

/// A process name safe to print on a terminal: control characters become `?`.
pub fn printable(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use tracer::model::Protocol;

    use super::*;
    use crate::row::tests::conn;

    fn snapshot_text(rows: &[Row], limit: Option<usize>) -> String {
        let telemetry = Telemetry {
            loss: vec![("ringbuf_full", 2)],
            activity: vec![],
        };
        render(&Snapshot {
            unix_time: 0.0,
            backend: Backend::Tracepoint,
            interval_s: 2.0,
            moved: rows.len(),
            filtered: false,
            rows,
            limit,
            telemetry: &telemetry,
        })
    }

    #[test]
    fn columns_stay_aligned_with_long_addresses() {
        let mut long = conn(Protocol::Tcp, 2048, 0, 1);
        long.tuple.dst = "2001:db8:1234:5678:9abc:def0:1111:2222".parse().unwrap();
        let mut http = Row::new(&long, "curl".to_owned());
        http.app_protocol = Some("HTTP".to_owned());
        http.http = Some(HttpCounts {
            requests: 5,
            client_errors: 3,
            server_errors: 1,
        });
        let rows = vec![
            http,
            Row::new(&conn(Protocol::Udp, 1, 1, 2), "systemd-resolve".to_owned()),
        ];
        let text = snapshot_text(&rows, None);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("nettrace  1970-01-01 00:00:00 UTC  backend tracepoint"));
        assert_eq!(lines[1], "loss: ringbuf_full=2    events: none");
        let header = lines[3];
        let tx_col = header.find("TX/s").unwrap() + "TX/s".len();
        for line in &lines[4..6] {
            // Right-aligned columns end at the same place in every line.
            assert_eq!(&line[tx_col - 1..tx_col], "s", "{line}");
        }
        assert!(lines[4].contains("[2001:db8:1234:5678:9abc:def0:1111:2222]:8080"));
        assert!(lines[4].contains("1.0 KiB/s"));
        let tail = |line: &str| -> Vec<String> {
            let words: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
            words[words.len() - 3..].to_vec()
        };
        // RTT, REQ/s (5 requests in 2 s), 5XX% (1 of 5).
        assert_eq!(tail(lines[4]), ["1.5", "2.5", "20.0"], "{}", lines[4]);
        assert_eq!(tail(lines[5]), ["-", "-", "-"], "{}", lines[5]);
        assert_eq!(
            lines[3].find("APP"),
            lines[4].find("HTTP"),
            "APP column start"
        );
        assert!(lines[5].contains(" udp    -     127.0.0.1"), "{}", lines[5]);
        assert_eq!(
            lines[3].find("REMOTE"),
            lines[5].find("[::1]:8080"),
            "REMOTE column start"
        );
    }

    #[test]
    fn limit_cuts_rows_and_says_how_many_are_hidden() {
        let rows: Vec<Row> = (0..5)
            .map(|i| Row::new(&conn(Protocol::Tcp, 10 - i, 0, i), "p".to_owned()))
            .collect();
        let text = snapshot_text(&rows, Some(2));
        assert!(text.lines().next().unwrap().ends_with("top 2 shown"));
        assert_eq!(text.lines().filter(|l| l.starts_with("p ")).count(), 2);
        assert!(text.contains("... 3 more"));
        assert!(snapshot_text(&[], Some(2)).contains("(no connection moved"));
    }

    #[test]
    fn rtt_and_process_name_rendering() {
        assert_eq!(rtt_ms(Some(1549)), "1.5");
        assert_eq!(rtt_ms(Some(30)), "0.0");
        assert_eq!(rtt_ms(None), "-");
        assert_eq!(printable("a\x1b[2Jb\n"), "a?[2Jb?");
    }
}
