//! Command-line parsing: hand-rolled, no panics, every error names the offending argument.

use std::{ffi::OsString, time::Duration};

use tracer::{Backend, BackendChoice};

/// Printed by `--help` (stdout) and after a usage error (stderr).
pub const USAGE: &str = "\
usage: nettrace [OPTIONS]

Shows the host's TCP and UDP connections live: every interval, each connection that moved,
sorted by throughput.

privileges: root, or a non-root user holding exactly these capabilities
  tracepoint, fentry  CAP_BPF CAP_PERFMON CAP_NET_ADMIN CAP_DAC_READ_SEARCH (tracefs is root-only)
  kprobe              CAP_BPF CAP_PERFMON CAP_NET_ADMIN CAP_DAC_OVERRIDE (writes kprobe_events)
  plus, Linux < 5.11  CAP_SYS_RESOURCE (maps charged to RLIMIT_MEMLOCK), unless it is unlimited
  plus, Debian        CAP_SYS_ADMIN while kernel.perf_event_paranoid is 3 (Debian's default)
  plus, no tracefs or cgroup2 mount in this mount namespace (ip netns exec): CAP_SYS_ADMIN
e.g. setpriv --reuid=nobody --regid=nogroup --clear-groups \\
       --inh-caps=-all,+bpf,+perfmon,+net_admin,+dac_read_search \\
       --ambient-caps=-all,+bpf,+perfmon,+net_admin,+dac_read_search nettrace

options:
  --interval SECS   time between snapshots, fractional allowed (default 2, 0.1 to 86400)
  --once            print one snapshot of one interval and exit
  --json            one JSON object per connection per interval on stdout, one per line
  --backend NAME    auto, fentry, kprobe or tracepoint (default auto)
  --pid PID         only connections of this process (repeatable: any of them)
  --port PORT       only connections with this local or remote port (repeatable: any of them)
  --limit N         table rows per snapshot (default 40, 0 = all; JSON prints every row)
  -h, --help        print this help and exit

table: only connections that moved in the interval (closed ones once, with their last bytes),
busiest first. TX/s, RX/s: this interval. TX, RX, RETR: totals since the tracer first saw the
connection. RTT: smoothed TCP round trip in ms. APP: the application protocol the kernel
classified, layers top first (HTTP, HTTP2, gRPC/HTTP2, TLS, Kafka, Mongo, Postgres, AMQP,
Redis, MySQL; - unknown). REQ/s: HTTP/1.x requests this connection carried in the interval
(as client or server); 5XX%: the share of them answered 5xx (4xx are not counted as errors;
the JSON lines give http_4xx and http_5xx). The header lists non-zero loss counters.

exit status: 0 done or interrupted, 1 tracer error, 2 usage error";

/// Default time between snapshots.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(2);
/// Default number of table rows.
pub const DEFAULT_LIMIT: usize = 40;
const MIN_INTERVAL_S: f64 = 0.1;
const MAX_INTERVAL_S: f64 = 86_400.0;

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    pub interval: Duration,
    pub once: bool,
    pub json: bool,
    pub backend: BackendChoice,
    pub pids: Vec<u32>,
    pub ports: Vec<u16>,
    /// `None`: no limit.
    pub limit: Option<usize>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            interval: DEFAULT_INTERVAL,
            once: false,
            json: false,
            backend: BackendChoice::Auto,
            pids: Vec::new(),
            ports: Vec::new(),
            limit: Some(DEFAULT_LIMIT),
        }
    }
}

/// The outcome of a successful parse.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Help,
    Run(Options),
}

/// Parses the arguments after the program name. The error is a one-line message (without the
/// usage text, which the caller prints).
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Command, String> {
    let mut options = Options::default();
    let mut args = args.into_iter();
    while let Some(raw) = args.next() {
        let arg = raw
            .into_string()
            .map_err(|raw| format!("argument {raw:?} is not valid UTF-8"))?;
        // `--name=value` and `--name value` are both accepted for options that take a value.
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) if name.starts_with("--") => (name, Some(value.to_owned())),
            _ => (arg.as_str(), None),
        };
        let takes_value = matches!(
            name,
            "--interval" | "--backend" | "--pid" | "--port" | "--limit"
        );
        if !takes_value && inline.is_some() {
            return Err(format!("option {name} takes no value"));
        }
        let mut value = || -> Result<String, String> {
            match &inline {
                Some(value) => Ok(value.clone()),
                None => args
                    .next()
                    .ok_or_else(|| format!("option {name} needs a value"))?
                    .into_string()
                    .map_err(|raw| format!("value {raw:?} of {name} is not valid UTF-8")),
            }
        };
        match name {
            "-h" | "--help" => return Ok(Command::Help),
            "--once" => options.once = true,
            "--json" => options.json = true,
            "--interval" => options.interval = parse_interval(&value()?)?,
            "--backend" => options.backend = parse_backend(&value()?)?,
            "--pid" => options.pids.push(parse_number(name, &value()?)?),
            "--port" => options.ports.push(parse_number(name, &value()?)?),
            "--limit" => {
                let limit: usize = parse_number(name, &value()?)?;
                options.limit = (limit != 0).then_some(limit);
            }
            other if other.starts_with('-') => return Err(format!("unknown option {other}")),
            other => return Err(format!("unexpected argument {other:?}")),
        }
    }
    Ok(Command::Run(options))
}

fn parse_interval(text: &str) -> Result<Duration, String> {
    let seconds: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("--interval: {text:?} is not a number of seconds"))?;
    if !(MIN_INTERVAL_S..=MAX_INTERVAL_S).contains(&seconds) {
        return Err(format!(
            "--interval: {text} is out of range ({MIN_INTERVAL_S} to {MAX_INTERVAL_S} seconds)"
        ));
    }
    Duration::try_from_secs_f64(seconds).map_err(|err| format!("--interval: {text}: {err}"))
}

fn parse_backend(text: &str) -> Result<BackendChoice, String> {
    if text == "auto" {
        return Ok(BackendChoice::Auto);
    }
    Backend::from_name(text)
        .map(BackendChoice::Force)
        .ok_or_else(|| {
            format!("--backend: unknown backend {text:?} (auto, fentry, kprobe or tracepoint)")
        })
}

fn parse_number<T: std::str::FromStr>(option: &str, text: &str) -> Result<T, String> {
    text.parse()
        .map_err(|_| format!("{option}: {text:?} is not a valid number for this option"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Command, String> {
        parse(args.iter().map(OsString::from))
    }

    fn options(args: &[&str]) -> Options {
        match run(args) {
            Ok(Command::Run(options)) => options,
            other => panic!("{args:?} gave {other:?}"),
        }
    }

    #[test]
    fn no_arguments_give_the_defaults() {
        assert_eq!(options(&[]), Options::default());
        assert_eq!(Options::default().interval, Duration::from_secs(2));
        assert_eq!(Options::default().limit, Some(40));
    }

    #[test]
    fn every_option_is_parsed() {
        let o = options(&[
            "--interval",
            "0.5",
            "--once",
            "--json",
            "--backend",
            "tracepoint",
            "--pid",
            "42",
            "--pid=7",
            "--port",
            "443",
            "--port=0",
            "--limit",
            "5",
        ]);
        assert_eq!(o.interval, Duration::from_millis(500));
        assert!(o.once && o.json);
        assert_eq!(o.backend, BackendChoice::Force(Backend::Tracepoint));
        assert_eq!(o.pids, vec![42, 7]);
        assert_eq!(o.ports, vec![443, 0]);
        assert_eq!(o.limit, Some(5));
    }

    #[test]
    fn backend_names_and_limit_zero() {
        assert_eq!(options(&["--backend=auto"]).backend, BackendChoice::Auto);
        assert_eq!(
            options(&["--backend", "kprobe"]).backend,
            BackendChoice::Force(Backend::Kprobe)
        );
        assert_eq!(
            options(&["--backend", "fentry"]).backend,
            BackendChoice::Force(Backend::Fentry)
        );
        assert_eq!(options(&["--limit", "0"]).limit, None);
        assert_eq!(options(&["--interval=3"]).interval, Duration::from_secs(3));
    }

    #[test]
    fn help_wins_wherever_it_is() {
        assert_eq!(run(&["--help"]), Ok(Command::Help));
        assert_eq!(run(&["--once", "-h"]), Ok(Command::Help));
    }

    #[test]
    fn bad_inputs_are_errors_not_panics() {
        let bad: &[&[&str]] = &[
            &["--interval"],
            &["--interval", "abc"],
            &["--interval", "0"],
            &["--interval", "-1"],
            &["--interval", "NaN"],
            &["--interval", "inf"],
            &["--interval", "1e300"],
            &["--interval", "0.01"],
            &["--backend", "ebpf"],
            &["--backend", ""],
            &["--pid", "-3"],
            &["--pid", "4294967296"],
            &["--port", "65536"],
            &["--port", "http"],
            &["--limit", "-1"],
            &["--limit"],
            &["--once=yes"],
            &["--frobnicate"],
            &["-x"],
            &["extra"],
        ];
        for args in bad {
            assert!(run(args).is_err(), "{args:?} was accepted");
        }
    }

    #[test]
    fn errors_name_the_problem() {
        assert_eq!(run(&["--bogus"]), Err("unknown option --bogus".to_owned()));
        assert_eq!(
            run(&["--pid"]),
            Err("option --pid needs a value".to_owned())
        );
    }

    #[cfg(unix)]
    #[test]
    fn non_utf8_argument_is_an_error() {
        use std::os::unix::ffi::OsStringExt;
        let arg = OsString::from_vec(vec![b'-', b'-', 0xff]);
        assert!(parse([arg]).is_err());
    }
}
