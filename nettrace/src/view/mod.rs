//! The interactive live view (ratatui over crossterm), for a person at a terminal.
//!
//! [`state`] is the model (pure, unit-tested), [`keys`] maps keys to its actions, [`draw`] draws
//! it, [`history`] holds each connection's last minute for the sparkline, [`cpu`] measures this
//! process. This file is the loop: it waits for keys until the next refresh is due, then asks
//! the tracer for what moved, and redraws after either.
//!
//! The terminal is left as it was found (raw mode off, main screen back, cursor shown) on every
//! way out: `q` or Ctrl-C (a key in raw mode), SIGTERM or SIGINT from elsewhere (the flag of
//! [`crate::signal`]), an error (the [`Restore`] guard's drop), and a panic (ratatui's panic
//! hook restores before the message is printed; the guard's drop runs while unwinding).

pub mod cpu;
pub mod draw;
pub mod history;
pub mod keys;
pub mod state;

use std::{
    fmt,
    io::{self, IsTerminal},
    time::{Duration, Instant},
};

use ratatui::crossterm::{
    cursor::Show,
    event::{self, Event},
    execute,
};
use tracer::{Tracer, model::Connections};

use crate::{
    args::Options,
    filter::Selection,
    process::ProcessNames,
    row, signal,
    telemetry::Telemetry,
    view::{
        cpu::CpuMeter,
        draw::Header,
        state::{Sample, ViewState},
    },
};

/// Longest wait for a key before checking SIGINT / SIGTERM again.
const POLL: Duration = Duration::from_millis(100);

/// Why the view stopped early.
#[derive(Debug)]
pub enum Error {
    /// Setting up, drawing on or reading the terminal.
    Terminal(io::Error),
    /// Reading connections.
    Tracer(tracer::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Terminal(err) => write!(f, "terminal: {err}"),
            Self::Tracer(err) => write!(f, "reading connections: {err}"),
        }
    }
}

/// Whether the command line asks for the live view: stdout is a terminal and neither `--json`
/// nor `--once` is given (those, and pipes, get the text output).
pub fn wanted(options: &Options) -> bool {
    !options.json && !options.once && io::stdout().is_terminal()
}

/// Puts the terminal back when dropped (the normal way out, an error, or unwinding).
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        ratatui::restore();
        let _ = execute!(io::stdout(), Show);
    }
}

/// One refresh's samples from the tracer's answer, with the `--pid` / `--port` selection.
pub fn samples(
    conns: &Connections,
    selection: &Selection,
    names: &mut ProcessNames,
) -> Vec<Sample> {
    row::of_snapshot(conns, selection, names)
        .into_iter()
        .map(|(conn, row)| Sample::new(conn, row))
        .collect()
}

/// Runs the view until the user quits or a signal arrives. `baseline` is the client's first
/// answer (every open connection's totals).
pub fn run(
    tracer: &Tracer,
    client: &str,
    options: &Options,
    baseline: &Connections,
) -> Result<(), Error> {
    let selection = Selection {
        pids: options.pids.clone(),
        ports: options.ports.clone(),
    };
    let mut names = ProcessNames::default();
    let mut state = ViewState::default();
    state.seed(samples(baseline, &selection, &mut names));
    state.interval_s = options.interval.as_secs_f64();

    // Installs ratatui's panic hook, enables raw mode and enters the alternate screen.
    let terminal = ratatui::try_init();
    let _restore = Restore;
    let mut terminal = terminal.map_err(Error::Terminal)?;

    let mut cpu = CpuMeter::start();
    let mut header = Header {
        backend: tracer.backend(),
        cpu_percent: None,
        mono_ns: monotonic_ns(),
    };
    let started = Instant::now();
    let mut previous = started;
    let mut redraw = true;
    loop {
        if redraw {
            terminal
                .draw(|frame| draw::draw(frame, &mut state, &header))
                .map_err(Error::Terminal)?;
            redraw = false;
        }
        if signal::stop_requested() {
            return Ok(());
        }
        let deadline = previous
            .checked_add(options.interval)
            .unwrap_or_else(Instant::now);
        let now = Instant::now();
        if now < deadline {
            if event::poll((deadline - now).min(POLL)).map_err(Error::Terminal)? {
                match event::read().map_err(Error::Terminal)? {
                    Event::Key(key) => {
                        if let Some(action) = keys::action(key, state.prompt.is_some()) {
                            if !state.apply(action) {
                                return Ok(());
                            }
                            redraw = true;
                        }
                    }
                    Event::Resize(..) => redraw = true,
                    _ => {}
                }
            }
            continue;
        }
        let conns = tracer
            .get_active_connections(client)
            .map_err(Error::Tracer)?;
        let now = Instant::now();
        let interval_s = now.duration_since(previous).as_secs_f64();
        previous = now;
        state.add_loss(&Telemetry::of(&conns).loss);
        state.ingest(
            now.duration_since(started).as_secs_f64(),
            interval_s,
            samples(&conns, &selection, &mut names),
        );
        header.cpu_percent = cpu.sample();
        header.mono_ns = monotonic_ns();
        redraw = true;
    }
}

/// CLOCK_MONOTONIC in ns: the clock of the kernel's connection creation times.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the struct it is given.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) } != 0 {
        return 0;
    }
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(ts.tv_nsec).unwrap_or(0);
    secs.saturating_mul(1_000_000_000).saturating_add(nanos)
}
