//! JSON lines: one object per connection, written by hand with correct string escaping.

use std::fmt::Write as _;

use tracer::model::Direction;

use crate::row::{Row, State, protocol_name};

/// Appends `text` as a JSON string literal (quoted, escaped) to `out`.
pub fn push_string(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            // The other C0 controls must be escaped; DEL and U+2028/2029 are escaped too so
            // that a line is safe to paste into JavaScript and terminals.
            c if c < ' ' || c == '\u{7f}' || c == '\u{2028}' || c == '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Builds one object, field by field.
struct Object {
    out: String,
}

impl Object {
    fn new() -> Self {
        Self {
            out: String::from("{"),
        }
    }

    fn key(&mut self, key: &str) {
        if self.out.len() > 1 {
            self.out.push(',');
        }
        push_string(&mut self.out, key);
        self.out.push(':');
    }

    fn string(&mut self, key: &str, value: &str) {
        self.key(key);
        push_string(&mut self.out, value);
    }

    fn opt_string(&mut self, key: &str, value: Option<&str>) {
        match value {
            Some(value) => self.string(key, value),
            None => self.raw(key, "null"),
        }
    }

    fn number(&mut self, key: &str, value: impl Into<u64>) {
        self.key(key);
        let _ = write!(self.out, "{}", value.into());
    }

    /// A finite float with `decimals` decimals; not finite becomes `null` (JSON has no NaN).
    fn float(&mut self, key: &str, value: f64, decimals: usize) {
        if value.is_finite() {
            self.key(key);
            let _ = write!(self.out, "{value:.decimals$}");
        } else {
            self.raw(key, "null");
        }
    }

    fn raw(&mut self, key: &str, value: &str) {
        self.key(key);
        self.out.push_str(value);
    }

    fn finish(mut self) -> String {
        self.out.push('}');
        self.out
    }
}

/// The JSON line (without newline) of `row`, seen at `ts` (Unix seconds) after an interval of
/// `interval_s` seconds.
pub fn line(row: &Row, ts: f64, interval_s: f64) -> String {
    let mut o = Object::new();
    o.float("ts", ts, 6);
    o.float("interval_s", interval_s, 3);
    o.number("pid", row.pid);
    o.string("process", &row.process);
    o.string("protocol", protocol_name(row.protocol));
    o.opt_string("app_protocol", row.app_protocol.as_deref());
    o.string("local", &row.local);
    o.string("remote", &row.remote);
    o.opt_string("remote_name", row.remote_name.as_deref());
    o.string(
        "direction",
        match row.direction {
            Direction::Incoming => "in",
            Direction::Outgoing => "out",
            Direction::Unknown => "unknown",
        },
    );
    o.string(
        "state",
        match row.state {
            State::Open => "open",
            State::Closed => "closed",
            State::Failed(_) => "failed",
        },
    );
    o.number("tx_bytes", row.tx_bytes);
    o.number("rx_bytes", row.rx_bytes);
    o.number("tx_packets", row.tx_packets);
    o.number("rx_packets", row.rx_packets);
    o.number("tx_total", row.tx_total);
    o.number("rx_total", row.rx_total);
    o.number("retransmits", row.retransmits);
    match row.rtt_us {
        Some(rtt) => o.number("rtt_us", rtt),
        None => o.raw("rtt_us", "null"),
    }
    o.opt_string("failure", row.failure().as_deref());
    o.number("cookie", row.cookie);
    o.opt_string("container", row.container.as_deref());
    o.opt_string("container_dest", row.container_dest.as_deref());
    o.opt_string("nat_remote", row.nat_remote.as_deref());
    o.opt_string("via_gateway", row.via_gateway.as_deref());
    o.opt_string("via_interface", row.via_interface.as_deref());
    // HTTP of the interval: counts, requests per second, and the 5xx share (null without
    // requests); 4xx answers are counted, not errors.
    let http = row.http.unwrap_or_default();
    o.number("http_requests", http.requests);
    o.number("http_4xx", http.client_errors);
    o.number("http_5xx", http.server_errors);
    o.float(
        "http_rps",
        http.per_second(interval_s).unwrap_or(f64::NAN),
        3,
    );
    match http.error_rate() {
        Some(rate) => o.float("http_error_rate", rate, 4),
        None => o.raw("http_error_rate", "null"),
    }
    o.finish()
}

#[cfg(test)]
mod tests {
    use tracer::model::Protocol;

    use super::*;
    use crate::row::tests::conn;

    fn escaped(text: &str) -> String {
        let mut out = String::new();
        push_string(&mut out, text);
        out
    }

    #[test]
    fn quotes_and_backslashes_are_escaped() {
        assert_eq!(escaped(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(escaped(""), r#""""#);
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(escaped("a\nb\tc\r"), r#""a\nb\tc\r""#);
        assert_eq!(escaped("\u{0}\u{1f}\u{8}\u{c}"), r#""\u0000\u001f\b\f""#);
        assert_eq!(escaped("\u{7f}\u{2028}"), r#""\u007f\u2028""#);
    }

    #[test]
    fn non_ascii_process_names_pass_through_as_utf8() {
        assert_eq!(escaped("café-λ-日本"), "\"café-λ-日本\"");
        assert_eq!(escaped("\u{fffd}x"), "\"\u{fffd}x\"");
    }

    #[test]
    fn a_tcp_row_renders_every_field() {
        let mut c = conn(Protocol::Tcp, 100, 200, 42);
        c.is_closed = true;
        c.tcp_failures.record(111, 1);
        c.last.sent_packets = 2;
        c.last.recv_packets = 3;
        let row = Row::new(&c, "we\"ird\n".to_owned());
        assert_eq!(
            line(&row, 1_700_000_000.25, 2.0),
            concat!(
                r#"{"ts":1700000000.250000,"interval_s":2.000,"pid":1234,"process":"we\"ird\n","#,
                r#""protocol":"tcp","app_protocol":null,"local":"127.0.0.1:40000","remote":"[::1]:8080","#,
                r#""remote_name":null,"#,
                r#""direction":"out","state":"failed","tx_bytes":100,"rx_bytes":200,"#,
                r#""tx_packets":2,"rx_packets":3,"tx_total":1000,"rx_total":2000,"#,
                r#""retransmits":3,"rtt_us":1500,"failure":"ECONNREFUSED","cookie":42,"#,
                r#""container":null,"container_dest":null,"nat_remote":null,"#,
                r#""via_gateway":null,"via_interface":null,"http_requests":0,"http_4xx":0,"#,
                r#""http_5xx":0,"http_rps":0.000,"http_error_rate":null}"#
            )
        );
    }

    #[test]
    fn enrichments_render_when_present() {
        let mut c = conn(Protocol::Tcp, 1, 1, 9);
        c.containers.source = Some("abc".into());
        c.nat = Some(tracer::model::IpTranslation {
            repl_src_ip: "198.51.100.2".parse().unwrap(),
            repl_dst_ip: "192.0.2.1".parse().unwrap(),
            repl_sport: 8080,
            repl_dport: 40000,
        });
        c.via = Some(tracer::model::Via {
            gateway: Some("192.0.2.254".parse().unwrap()),
            interface_index: 3,
            interface_name: None,
        });
        let text = line(&Row::new(&c, "x".to_owned()), 0.0, 1.0);
        assert!(
            text.contains(concat!(
                r#""container":"abc","container_dest":null,"nat_remote":"198.51.100.2:8080","#,
                r##""via_gateway":"192.0.2.254","via_interface":"#3","http_requests":0,"##
            )),
            "{text}"
        );
    }

    #[test]
    fn http_fields_render_counts_rate_and_5xx_share() {
        let mut row = Row::new(&conn(Protocol::Tcp, 1, 1, 9), "nginx".to_owned());
        row.app_protocol = Some("HTTP".to_owned());
        row.http = Some(crate::app::HttpCounts {
            requests: 8,
            client_errors: 2,
            server_errors: 1,
        });
        let text = line(&row, 0.0, 2.0);
        assert!(
            text.contains(r#""protocol":"tcp","app_protocol":"HTTP","#),
            "{text}"
        );
        assert!(
            text.ends_with(concat!(
                r#""http_requests":8,"http_4xx":2,"http_5xx":1,"http_rps":4.000,"#,
                r#""http_error_rate":0.1250}"#
            )),
            "{text}"
        );
    }

    #[test]
    fn a_udp_row_has_null_rtt_and_failure() {
        let row = Row::new(&conn(Protocol::Udp, 1, 0, 7), "dns".to_owned());
        let text = line(&row, f64::NAN, 1.0);
        assert!(
            text.starts_with(r#"{"ts":null,"interval_s":1.000,"#),
            "{text}"
        );
        assert!(text.contains(r#""protocol":"udp""#));
        assert!(text.contains(r#""rtt_us":null,"failure":null,"cookie":7,"#));
        assert!(text.contains(r#""state":"open""#));
    }
}
