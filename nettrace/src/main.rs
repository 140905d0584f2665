//! `nettrace`: the host's TCP and UDP connections, live, from the `tracer` library's public API.
//!
//! Every interval it asks the tracer for what moved since the previous call and shows it: on a
//! terminal in the interactive view ([`view`]), otherwise as an aligned table (busiest first)
//! or as JSON lines. See `nettrace --help` ([`args::Cli`]).

use std::{
    io::{self, IsTerminal, Write},
    process::ExitCode,
    thread,
    time::{Duration, Instant},
};

use clap::Parser as _;
use tracer::{Backend, Config, Tracer, model::Connections};

use nettrace::{
    args,
    args::Options,
    clock,
    filter::Selection,
    json,
    process::ProcessNames,
    row::{self, Row},
    serve, signal, table,
    telemetry::{self, Telemetry},
    view,
};

/// The tracer client id this program reads with.
const CLIENT: &str = "nettrace";
/// Longest sleep between two checks for SIGINT / SIGTERM.
const SIGNAL_POLL: Duration = Duration::from_millis(100);

/// Why the program stops early.
enum Failure {
    /// stdout was closed (e.g. piped into `head`): stop quietly.
    BrokenPipe,
    /// An error to print, exit status 1.
    Message(String),
}

impl Failure {
    fn output(err: io::Error) -> Self {
        if err.kind() == io::ErrorKind::BrokenPipe {
            Self::BrokenPipe
        } else {
            Self::Message(format!("writing output: {err}"))
        }
    }
}

fn main() -> ExitCode {
    let options = match args::Cli::try_parse() {
        Ok(mut cli) => match cli.take_command() {
            Some(args::Command::Serve(serve)) => return exit_with(serve::run(&serve)),
            None => cli.options(),
        },
        // `--help` (stdout, status 0) or a usage error (stderr, status 2).
        Err(err) => {
            let printed = err.print();
            if err.use_stderr() {
                return ExitCode::from(args::USAGE_ERROR);
            }
            return match printed {
                Err(err) if err.kind() != io::ErrorKind::BrokenPipe => ExitCode::FAILURE,
                _ => ExitCode::SUCCESS,
            };
        }
    };
    match run(&options) {
        Ok(()) | Err(Failure::BrokenPipe) => ExitCode::SUCCESS,
        Err(Failure::Message(message)) => {
            let _ = writeln!(io::stderr(), "nettrace: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Exit status 0, or 1 with the message on stderr.
fn exit_with(result: Result<(), String>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            let _ = writeln!(io::stderr(), "nettrace: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(options: &Options) -> Result<(), Failure> {
    signal::install()
        .map_err(|err| Failure::Message(format!("installing the signal handlers: {err}")))?;

    let mut config = Config {
        backend: options.backend,
        ..Config::default()
    };
    // Show every connection, including DNS to a local resolver.
    config.filters.collect_local_dns = true;
    // Keep this client alive across long intervals (the default forgets it after 2 min idle).
    let interval_ns = u64::try_from(options.interval.as_nanos()).unwrap_or(u64::MAX);
    config.state.client_expiry_ns = config
        .state
        .client_expiry_ns
        .max(interval_ns.saturating_mul(3));

    let tracer = Tracer::new(config).map_err(|err| Failure::Message(err.to_string()))?;
    let attached = format!(
        "nettrace: attached with {} ({})",
        tracer.backend(),
        tracer.plan().reason
    );
    if options.json {
        let _ = writeln!(io::stderr(), "{attached}");
    } else {
        let mut stdout = io::stdout().lock();
        writeln!(stdout, "{attached}")
            .and_then(|()| stdout.flush())
            .map_err(Failure::output)?;
    }

    let read_failed = |err: tracer::Error| Failure::Message(format!("reading connections: {err}"));
    tracer.register_client(CLIENT).map_err(read_failed)?;
    // A client's first call reports every open connection's totals; take it as the baseline
    // so that each snapshot shown covers exactly one interval.
    let baseline = tracer.get_active_connections(CLIENT).map_err(read_failed)?;

    // A person at a terminal gets the interactive view; pipes, --json and --once the text.
    if view::wanted(options) {
        return view::run(&tracer, CLIENT, options, &baseline)
            .map_err(|err| Failure::Message(err.to_string()));
    }
    let mut previous = Instant::now();

    let mut view = View::new(options, tracer.backend());
    loop {
        let deadline = previous
            .checked_add(options.interval)
            .unwrap_or_else(Instant::now);
        if !sleep_until(deadline) {
            return Ok(());
        }
        let conns = tracer.get_active_connections(CLIENT).map_err(read_failed)?;
        let now = Instant::now();
        let interval_s = now.duration_since(previous).as_secs_f64();
        previous = now;
        view.show(&conns, interval_s)?;
        if options.once || signal::stop_requested() {
            return Ok(());
        }
    }
}

/// Sleeps until `deadline`; `false` if SIGINT or SIGTERM arrived first.
fn sleep_until(deadline: Instant) -> bool {
    loop {
        if signal::stop_requested() {
            return false;
        }
        let now = Instant::now();
        if now >= deadline {
            return true;
        }
        thread::sleep((deadline - now).min(SIGNAL_POLL));
    }
}

/// Turns each interval's connections into rows and prints them.
struct View {
    json: bool,
    once: bool,
    terminal: bool,
    limit: Option<usize>,
    backend: Backend,
    selection: Selection,
    names: ProcessNames,
    snapshots: u64,
}

impl View {
    fn new(options: &Options, backend: Backend) -> Self {
        Self {
            json: options.json,
            once: options.once,
            terminal: io::stdout().is_terminal(),
            limit: options.limit,
            backend,
            selection: Selection {
                pids: options.pids.clone(),
                ports: options.ports.clone(),
            },
            names: ProcessNames::default(),
            snapshots: 0,
        }
    }

    fn show(&mut self, conns: &Connections, interval_s: f64) -> Result<(), Failure> {
        let unix_time = clock::unix_now();
        let mut rows: Vec<Row> = row::of_snapshot(conns, &self.selection, &mut self.names)
            .into_iter()
            .map(|(_, row)| row)
            .collect();
        row::sort_by_throughput(&mut rows);
        let telemetry = Telemetry::of(conns);

        let mut text = String::new();
        if self.json {
            for row in &rows {
                text.push_str(&json::line(row, unix_time, interval_s));
                text.push('\n');
            }
            if !telemetry.loss.is_empty() {
                let _ = writeln!(
                    io::stderr(),
                    "nettrace: loss in this interval: {}",
                    telemetry::render(&telemetry.loss)
                );
            }
        } else {
            // A single snapshot (--once) stays in the scrollback under the attach line.
            if self.terminal && !self.once {
                text.push_str("\x1b[2J\x1b[H");
            } else if self.snapshots > 0 {
                text.push('\n');
            }
            text.push_str(&table::render(&table::Snapshot {
                unix_time,
                backend: self.backend,
                interval_s,
                moved: conns.conns.len(),
                filtered: self.selection.is_active(),
                rows: &rows,
                limit: self.limit,
                telemetry: &telemetry,
            }));
        }
        self.snapshots += 1;
        let mut stdout = io::stdout().lock();
        stdout
            .write_all(text.as_bytes())
            .and_then(|()| stdout.flush())
            .map_err(Failure::output)
    }
}
