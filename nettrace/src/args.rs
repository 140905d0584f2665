//! Command-line parsing (clap, derive): no panics, every error names the offending argument.
//!
//! Exit status: 0 done, interrupted or `--help`; 1 tracer error (privileges, load, read); 2 usage
//! error (clap's own code for a parse error, see [`USAGE_ERROR`]).

use std::time::Duration;

use clap::{ArgAction, Parser, Subcommand};
use tracer::{Backend, BackendChoice};

/// Default time between snapshots.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);
/// Default number of table rows.
pub const DEFAULT_LIMIT: usize = 40;
/// Exit status of a usage error (clap's).
pub const USAGE_ERROR: u8 = 2;
const MIN_INTERVAL_S: f64 = 0.1;
const MAX_INTERVAL_S: f64 = 86_400.0;

const ABOUT: &str = "\
Shows the host's TCP and UDP connections live: on a terminal an interactive view, otherwise
(a pipe, --json, --once) every interval each connection that moved, sorted by throughput.";

/// Printed after the options by `-h` and `--help`.
const AFTER_HELP: &str = "\
privileges: root, or a non-root user holding exactly these capabilities
  tracepoint, fentry  CAP_BPF CAP_PERFMON CAP_NET_ADMIN CAP_DAC_READ_SEARCH (tracefs is root-only)
  kprobe              CAP_BPF CAP_PERFMON CAP_NET_ADMIN CAP_DAC_OVERRIDE (writes kprobe_events)
  plus, Linux < 5.11  CAP_SYS_RESOURCE (maps charged to RLIMIT_MEMLOCK), unless it is unlimited
  plus, Debian        CAP_SYS_ADMIN while kernel.perf_event_paranoid is 3 (Debian's default)
  plus, no tracefs or cgroup2 mount in this mount namespace (ip netns exec): CAP_SYS_ADMIN
e.g. setpriv --reuid=nobody --regid=nogroup --clear-groups \\
       --inh-caps=-all,+bpf,+perfmon,+net_admin,+dac_read_search \\
       --ambient-caps=-all,+bpf,+perfmon,+net_admin,+dac_read_search nettrace

table: only connections that moved in the interval (closed ones once, with their last bytes),
busiest first. TX/s, RX/s: this interval. TX, RX, RETR: totals since the tracer first saw the
connection. RTT: smoothed TCP round trip in ms. APP: the application protocol the kernel
classified, layers top first (HTTP, HTTP2, gRPC/HTTP2, TLS, Kafka, Mongo, Postgres, AMQP,
Redis, MySQL; - unknown). REQ/s: HTTP/1.x requests this connection carried in the interval
(as client or server); 5XX%: the share of them answered 5xx (4xx are not counted as errors;
the JSON lines give http_4xx and http_5xx). The header lists non-zero loss counters.

live view (stdout a terminal, no --json or --once): every connection seen until it closes (a
closed one stays 5 s), refreshed every interval; the header gives the backend, the connections
tracked, the loss counters since start and nettrace's own CPU use; below the table, the
selected line's throughput over the last minute. Keys: t b r l a sort by throughput, bytes,
retransmits, RTT, age (the same key again reverses); g connections / by process / by remote
service; d totals / last interval; p pid, o port, / text filter (Esc clears); arrows, PgUp,
PgDn select; q or Ctrl-C quit. --pid, --port and --limit (table only) apply as for the table.

exit status: 0 done or interrupted, 1 tracer error, 2 usage error";

/// The command line as clap parses it; [`Cli::options`] turns it into [`Options`].
#[derive(Debug, Parser)]
#[command(
    name = "nettrace",
    about = ABOUT,
    long_about = None,
    after_help = AFTER_HELP,
    disable_help_flag = true,
    // As the hand-written parser did: a repeated option's last value wins (`--pid` and
    // `--port` collect all of theirs).
    args_override_self = true,
)]
pub struct Cli {
    /// time between snapshots in seconds, fractional allowed (0.1 to 86400)
    #[arg(long, value_name = "SECS", default_value = "1", value_parser = parse_interval)]
    interval: Duration,
    /// print one snapshot of one interval and exit
    #[arg(long)]
    once: bool,
    /// one JSON object per connection per interval on stdout, one per line
    #[arg(long)]
    json: bool,
    /// auto, fentry, kprobe or tracepoint
    #[arg(long, value_name = "NAME", default_value = "auto", value_parser = parse_backend)]
    backend: BackendChoice,
    /// only connections of this process (repeatable: any of them)
    #[arg(long = "pid", value_name = "PID")]
    pids: Vec<u32>,
    /// only connections with this local or remote port (repeatable: any of them)
    #[arg(long = "port", value_name = "PORT")]
    ports: Vec<u16>,
    /// table rows per snapshot (0 = all; JSON prints every row)
    #[arg(long, value_name = "N", default_value_t = DEFAULT_LIMIT)]
    limit: usize,
    /// print this help and exit
    #[arg(short, long, action = ArgAction::Help)]
    help: Option<bool>,
    #[command(subcommand)]
    command: Option<Command>,
}

/// Subcommands; without one, the live table.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Prometheus /metrics and/or OTLP export of the host's traffic (for fleets)
    Serve(crate::serve::ServeArgs),
}

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

impl Cli {
    /// The subcommand, if any (taken out, so that [`Cli::options`] still applies).
    pub fn take_command(&mut self) -> Option<Command> {
        self.command.take()
    }

    /// The options this command line asks for.
    pub fn options(self) -> Options {
        Options {
            interval: self.interval,
            once: self.once,
            json: self.json,
            backend: self.backend,
            pids: self.pids,
            ports: self.ports,
            limit: (self.limit != 0).then_some(self.limit),
        }
    }
}

pub(crate) fn parse_interval(text: &str) -> Result<Duration, String> {
    let seconds: f64 = text
        .trim()
        .parse()
        .map_err(|_| "not a number of seconds".to_owned())?;
    if !(MIN_INTERVAL_S..=MAX_INTERVAL_S).contains(&seconds) {
        return Err(format!(
            "out of range ({MIN_INTERVAL_S} to {MAX_INTERVAL_S} seconds)"
        ));
    }
    Duration::try_from_secs_f64(seconds).map_err(|err| err.to_string())
}

pub(crate) fn parse_backend(text: &str) -> Result<BackendChoice, String> {
    if text == "auto" {
        return Ok(BackendChoice::Auto);
    }
    Backend::from_name(text)
        .map(BackendChoice::Force)
        .ok_or_else(|| "unknown backend (auto, fentry, kprobe or tracepoint)".to_owned())
}

#[cfg(test)]
mod tests {
    use std::ffi::OsString;

    use clap::{CommandFactory, error::ErrorKind};

    use super::*;

    fn run(args: &[&str]) -> Result<Options, clap::Error> {
        Cli::try_parse_from(std::iter::once("nettrace").chain(args.iter().copied()))
            .map(Cli::options)
    }

    fn options(args: &[&str]) -> Options {
        match run(args) {
            Ok(options) => options,
            Err(err) => panic!("{args:?} gave {err}"),
        }
    }

    fn error(args: &[&str]) -> clap::Error {
        match run(args) {
            Ok(options) => panic!("{args:?} was accepted: {options:?}"),
            Err(err) => err,
        }
    }

    #[test]
    fn command_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn no_arguments_give_the_defaults() {
        assert_eq!(options(&[]), Options::default());
        assert_eq!(Options::default().interval, Duration::from_secs(1));
        assert_eq!(Options::default().limit, Some(40));
        assert_eq!(Options::default().backend, BackendChoice::Auto);
    }

    #[test]
    fn interval() {
        assert_eq!(
            options(&["--interval", "0.5"]).interval,
            Duration::from_millis(500)
        );
        assert_eq!(options(&["--interval=3"]).interval, Duration::from_secs(3));
        assert_eq!(
            options(&["--interval", "0.1"]).interval,
            Duration::from_millis(100)
        );
        assert_eq!(
            options(&["--interval", "86400"]).interval,
            Duration::from_secs(86_400)
        );
        // The last one wins, as for every option that takes one value.
        assert_eq!(
            options(&["--interval", "1", "--interval", "4"]).interval,
            Duration::from_secs(4)
        );
    }

    #[test]
    fn once_and_json() {
        let o = options(&["--once"]);
        assert!(o.once && !o.json);
        let o = options(&["--json"]);
        assert!(o.json && !o.once);
        let o = options(&["--json", "--once"]);
        assert!(o.json && o.once);
        let o = options(&["--once", "--once", "--json", "--json"]);
        assert!(o.json && o.once);
    }

    #[test]
    fn backend() {
        assert_eq!(options(&["--backend=auto"]).backend, BackendChoice::Auto);
        for backend in Backend::PREFERENCE {
            assert_eq!(
                options(&["--backend", backend.name()]).backend,
                BackendChoice::Force(backend)
            );
        }
        assert_eq!(
            options(&["--backend", "fentry", "--backend", "auto"]).backend,
            BackendChoice::Auto
        );
    }

    #[test]
    fn pid_and_port_are_repeatable() {
        let o = options(&["--pid", "42", "--pid=7", "--port", "443", "--port=0"]);
        assert_eq!(o.pids, vec![42, 7]);
        assert_eq!(o.ports, vec![443, 0]);
        assert_eq!(options(&["--pid", "4294967295"]).pids, vec![u32::MAX]);
        assert_eq!(options(&["--port", "65535"]).ports, vec![u16::MAX]);
    }

    #[test]
    fn limit_and_limit_zero() {
        assert_eq!(options(&["--limit", "5"]).limit, Some(5));
        assert_eq!(options(&["--limit=0"]).limit, None);
        assert_eq!(options(&["--limit=0", "--limit", "3"]).limit, Some(3));
    }

    #[test]
    fn every_option_together() {
        let o = options(&[
            "--interval",
            "0.5",
            "--once",
            "--json",
            "--backend",
            "kprobe",
            "--pid",
            "42",
            "--port",
            "443",
            "--limit",
            "5",
        ]);
        assert_eq!(
            o,
            Options {
                interval: Duration::from_millis(500),
                once: true,
                json: true,
                backend: BackendChoice::Force(Backend::Kprobe),
                pids: vec![42],
                ports: vec![443],
                limit: Some(5),
            }
        );
    }

    #[test]
    fn help_wins_and_exits_zero_on_stdout() {
        for args in [
            &["--help"][..],
            &["-h"],
            &["--once", "-h"],
            &["--json", "--help"],
        ] {
            let err = error(args);
            assert_eq!(err.kind(), ErrorKind::DisplayHelp, "{args:?}");
            assert_eq!(err.exit_code(), 0);
            assert!(!err.use_stderr());
        }
    }

    #[test]
    fn help_lists_every_option_and_the_notes() {
        let help = Cli::command().render_help().to_string();
        for needle in [
            "Usage: nettrace [OPTIONS]",
            "--interval <SECS>",
            "[default: 1]",
            "--once",
            "--json",
            "--backend <NAME>",
            "[default: auto]",
            "--pid <PID>",
            "--port <PORT>",
            "--limit <N>",
            "[default: 40]",
            "-h, --help",
            "CAP_DAC_READ_SEARCH",
            "setpriv",
            "5XX%",
            "exit status: 0 done or interrupted, 1 tracer error, 2 usage error",
        ] {
            assert!(help.contains(needle), "help lacks {needle:?}:\n{help}");
        }
    }

    #[test]
    fn bad_inputs_are_usage_errors_not_panics() {
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
            &["--backend"],
            &["--pid", "-3"],
            &["--pid", "4294967296"],
            &["--pid"],
            &["--port", "65536"],
            &["--port", "http"],
            &["--limit", "-1"],
            &["--limit", "many"],
            &["--limit"],
            &["--once=yes"],
            &["--json=1"],
            &["--frobnicate"],
            &["-x"],
            &["extra"],
            &["--help=yes"],
        ];
        for args in bad {
            let err = error(args);
            assert!(err.use_stderr(), "{args:?}: {err}");
            assert_eq!(i32::from(USAGE_ERROR), err.exit_code(), "{args:?}");
        }
    }

    #[test]
    fn errors_name_the_problem() {
        let text = |args: &[&str]| error(args).to_string();
        assert!(text(&["--bogus"]).contains("--bogus"));
        assert!(text(&["--pid"]).contains("--pid <PID>"));
        let interval = text(&["--interval", "0.01"]);
        assert!(
            interval.contains("--interval <SECS>") && interval.contains("out of range"),
            "{interval}"
        );
        let backend = text(&["--backend", "ebpf"]);
        assert!(
            backend.contains("'ebpf'") && backend.contains("auto, fentry, kprobe or tracepoint"),
            "{backend}"
        );
    }

    #[cfg(unix)]
    #[test]
    fn non_utf8_argument_is_an_error() {
        use std::os::unix::ffi::OsStringExt;
        let bad = |arg: Vec<u8>| {
            let args = [OsString::from("nettrace"), OsString::from_vec(arg)];
            Cli::try_parse_from(args).is_err()
        };
        assert!(bad(vec![b'-', b'-', 0xff]));
        assert!(bad(b"--backend=\xff".to_vec()));
        assert!(bad(b"--interval=\xff".to_vec()));
    }
}
