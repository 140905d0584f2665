//! Drawing the view's state with ratatui: a header, the table (only its visible rows are built),
//! the selected line's sparkline, and a footer with the keys or the filter prompt.
//!
//! Cells are left-aligned under their titles, so a column starts where its title starts (the
//! tmux test reads cells that way).

use ratatui::{
    Frame,
    layout::{Constraint, Layout},
    style::{Color, Modifier, Style},
    text::{Line as TextLine, Span},
    widgets::{Block, Paragraph, Row as TableRow, Sparkline, Table},
};
use tracer::Backend;

use super::{
    history,
    keys::HELP,
    state::{Amounts, Grouping, Line, LineKey, Metrics, Tracked, ViewState},
};
use crate::{
    row::protocol_name,
    table::{self, printable},
    telemetry, units,
};

/// What the header shows besides the state.
#[derive(Debug, Clone, Copy)]
pub struct Header {
    pub backend: Backend,
    /// This process's CPU use since the previous refresh, percent of one CPU.
    pub cpu_percent: Option<f64>,
    /// Kernel monotonic time now (ns), for the connections' ages.
    pub mono_ns: u64,
}

const SPARKLINE_HEIGHT: u16 = 7;

/// Draws the whole view.
pub fn draw(frame: &mut Frame<'_>, state: &mut ViewState, header: &Header) {
    let [top, body, spark, footer] = Layout::vertical([
        Constraint::Length(3),
        Constraint::Min(3),
        Constraint::Length(SPARKLINE_HEIGHT),
        Constraint::Length(1),
    ])
    .areas(frame.area());

    frame.render_widget(Paragraph::new(header_lines(state, header)), top);

    // One line for the titles.
    let range = state.window(usize::from(body.height.saturating_sub(1)));
    let titles = titles(state.grouping, state.amounts);
    let selected = state.selected_index();
    let mut cells: Vec<Vec<String>> = Vec::with_capacity(range.len());
    for line in state.lines().get(range.clone()).unwrap_or_default() {
        cells.push(line_cells(state, line, header.mono_ns));
    }
    let mut widths: Vec<usize> = titles.iter().map(|t| t.chars().count()).collect();
    for row in &cells {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let rows = cells.into_iter().zip(range).map(|(row, index)| {
        let style = if Some(index) == selected {
            Style::new().add_modifier(Modifier::REVERSED)
        } else {
            Style::new()
        };
        TableRow::new(row).style(style)
    });
    let constraints = widths
        .iter()
        .map(|&w| Constraint::Length(u16::try_from(w).unwrap_or(u16::MAX)));
    let table = Table::new(rows, constraints)
        .header(TableRow::new(titles).style(Style::new().add_modifier(Modifier::BOLD)))
        .column_spacing(1);
    frame.render_widget(table, body);

    let bins = history::bin_count(state.interval_s, usize::from(spark.width.saturating_sub(2)));
    let data = state.selected_throughput(bins);
    let title = sparkline_title(state, &data);
    frame.render_widget(
        Sparkline::default()
            .block(Block::bordered().title(title))
            .style(Style::new().fg(Color::Cyan))
            .data(&data),
        spark,
    );

    frame.render_widget(Paragraph::new(footer_line(state)), footer);
}

fn header_lines(state: &ViewState, header: &Header) -> Vec<TextLine<'static>> {
    let cpu = header
        .cpu_percent
        .map_or_else(|| "-".to_owned(), |p| format!("{p:.1} %"));
    let first = format!(
        "nettrace  backend {}  refresh {:.1} s  {} connections tracked, {} moved  cpu {cpu}",
        header.backend,
        state.interval_s,
        state.tracked(),
        state.moved,
    );
    let filters = if state.filters.is_active() {
        state.filters.describe()
    } else {
        "none".to_owned()
    };
    let second = format!(
        "view: {}  sort: {} {}  amounts: {}  filter: {filters}  lines: {}",
        state.grouping.name(),
        state.sort.name(),
        if state.reverse {
            "(least first)"
        } else {
            "(most first)"
        },
        match state.amounts {
            Amounts::Totals => "totals",
            Amounts::Deltas => "last interval",
        },
        state.lines().len(),
    );
    let loss = if state.loss.is_empty() {
        TextLine::from("loss since start: none")
    } else {
        TextLine::from(vec![
            Span::raw("loss since start: "),
            Span::styled(
                telemetry::render(&state.loss),
                Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
            ),
        ])
    };
    vec![TextLine::from(first), TextLine::from(second), loss]
}

/// The column titles of `grouping` under `amounts`.
pub fn titles(grouping: Grouping, amounts: Amounts) -> Vec<&'static str> {
    let mut titles: Vec<&'static str> = match grouping {
        Grouping::Connection => vec![
            "PROCESS",
            "PID",
            "CONTAINER",
            "PROTO",
            "APP",
            "LOCAL",
            "REMOTE",
            "DIR",
            "STATE",
        ],
        Grouping::Process => vec!["PROCESS", "PID", "CONTAINER", "CONNS"],
        Grouping::Service => vec!["SERVICE", "PROTO", "CONNS"],
    };
    titles.extend(["TX/s", "RX/s"]);
    match amounts {
        Amounts::Totals => titles.extend(["TX", "RX", "RETR"]),
        Amounts::Deltas => titles.extend(["ΔTX", "ΔRX", "ΔRETR"]),
    }
    titles.push("RTTms");
    titles.push(match amounts {
        Amounts::Totals => "FAIL",
        Amounts::Deltas => "ΔFAIL",
    });
    titles.push("AGE");
    titles
}

fn line_cells(state: &ViewState, line: &Line, mono_ns: u64) -> Vec<String> {
    let mut cells = match &line.key {
        LineKey::Conn(key) => match state.conn(key) {
            Some(t) => conn_cells(t),
            None => Vec::new(),
        },
        LineKey::Process { name, pid } => {
            let container = line
                .members
                .first()
                .and_then(|key| state.conn(key))
                .map_or_else(|| "-".to_owned(), container);
            vec![
                printable(name),
                pid.to_string(),
                container,
                line.metrics.conns.to_string(),
            ]
        }
        LineKey::Service { protocol, label } => vec![
            printable(label),
            protocol_name(*protocol).to_owned(),
            line.metrics.conns.to_string(),
        ],
    };
    cells.extend(metric_cells(
        &line.metrics,
        state.amounts,
        state.interval_s,
        mono_ns,
    ));
    cells
}

fn conn_cells(t: &Tracked) -> Vec<String> {
    let row = &t.row;
    vec![
        printable(&row.process),
        row.pid.to_string(),
        container(t),
        protocol_name(row.protocol).to_owned(),
        row.app_protocol
            .as_deref()
            .map_or_else(|| "-".to_owned(), printable),
        row.local.clone(),
        table::remote(row),
        table::direction(row.direction).to_owned(),
        table::state(row),
    ]
}

/// The first 12 characters of the container id (as `docker ps` shows it), or `-`.
fn container(t: &Tracked) -> String {
    t.row.container.as_deref().map_or_else(
        || "-".to_owned(),
        |id| printable(&id.chars().take(12).collect::<String>()),
    )
}

fn metric_cells(m: &Metrics, amounts: Amounts, interval_s: f64, mono_ns: u64) -> Vec<String> {
    let (tx, rx, retransmits, failures) = m.amounts(amounts);
    vec![
        units::rate(m.tx, interval_s),
        units::rate(m.rx, interval_s),
        units::bytes(tx),
        units::bytes(rx),
        retransmits.to_string(),
        table::rtt_ms(m.rtt_us().map(|r| u32::try_from(r).unwrap_or(u32::MAX))),
        failures.to_string(),
        m.oldest_ns
            .map_or_else(|| "-".to_owned(), |ns| age(mono_ns.saturating_sub(ns))),
    ]
}

/// `42s`, `17m`, `5h`, `3d`.
pub fn age(ns: u64) -> String {
    let s = ns / 1_000_000_000;
    match s {
        0..60 => format!("{s}s"),
        60..3_600 => format!("{}m", s / 60),
        3_600..86_400 => format!("{}h", s / 3_600),
        _ => format!("{}d", s / 86_400),
    }
}

fn sparkline_title(state: &ViewState, data: &[u64]) -> String {
    let Some(line) = state.selected() else {
        return " throughput, last 60 s: nothing selected ".to_owned();
    };
    let label = match &line.key {
        LineKey::Conn(key) => state.conn(key).map_or_else(String::new, |t| {
            format!(
                "{} {} {} → {}",
                printable(&t.row.process),
                t.row.pid,
                t.row.local,
                table::remote(&t.row)
            )
        }),
        LineKey::Process { name, pid } => {
            format!(
                "{} {pid} ({} connections)",
                printable(name),
                line.metrics.conns
            )
        }
        LineKey::Service { protocol, label } => format!(
            "{} {} ({} connections)",
            protocol_name(*protocol),
            printable(label),
            line.metrics.conns
        ),
    };
    let max = data.iter().copied().max().unwrap_or(0);
    format!(
        " {label}: throughput, last 60 s, max {}/s ",
        units::bytes(max)
    )
}

fn footer_line(state: &ViewState) -> TextLine<'static> {
    if let Some(prompt) = &state.prompt {
        return TextLine::from(vec![
            Span::styled(
                format!("{} filter: ", prompt.kind.name()),
                Style::new().add_modifier(Modifier::BOLD),
            ),
            Span::raw(format!("{}█", prompt.input)),
            Span::raw("   Enter apply, Esc cancel, empty clears"),
        ]);
    }
    if let Some(status) = &state.status {
        return TextLine::from(Span::styled(status.clone(), Style::new().fg(Color::Yellow)));
    }
    TextLine::from(HELP)
}

#[cfg(test)]
mod tests {
    use ratatui::{Terminal, backend::TestBackend};
    use tracer::model::Protocol;

    use super::*;
    use crate::{
        row::{Row, tests::conn},
        view::{keys::Action, state::Sample},
    };

    fn screen(state: &mut ViewState, width: u16, height: u16) -> Vec<String> {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
        let header = Header {
            backend: Backend::Tracepoint,
            cpu_percent: Some(1.5),
            mono_ns: 61_000_000_000,
        };
        terminal.draw(|f| draw(f, state, &header)).unwrap();
        let buffer = terminal.backend().buffer();
        (0..height)
            .map(|y| {
                (0..width)
                    .map(|x| buffer[(x, y)].symbol())
                    .collect::<String>()
                    .trim_end()
                    .to_owned()
            })
            .collect()
    }

    /// The cell under `title` in `line`: from the title's start to the next title's.
    fn cell(header: &str, line: &str, title: &str) -> String {
        let chars: Vec<char> = line.chars().collect();
        let titles: Vec<(usize, String)> = {
            let h: Vec<char> = header.chars().collect();
            let mut out = Vec::new();
            let mut i = 0;
            while i < h.len() {
                if h[i] != ' ' {
                    let start = i;
                    while i < h.len() && h[i] != ' ' {
                        i += 1;
                    }
                    out.push((start, h[start..i].iter().collect()));
                }
                i += 1;
            }
            out
        };
        let at = titles.iter().position(|(_, t)| t == title).unwrap();
        let start = titles[at].0;
        let end = titles.get(at + 1).map_or(chars.len(), |(s, _)| *s);
        chars[start.min(chars.len())..end.min(chars.len())]
            .iter()
            .collect::<String>()
            .trim()
            .to_owned()
    }

    #[test]
    fn rows_columns_header_and_sparkline() {
        let mut c = conn(Protocol::Tcp, 2048, 1024, 1);
        c.created_ns = 1_000_000_000;
        let mut row = Row::new(&c, "curl".to_owned());
        row.remote_name = Some("db.example".to_owned());
        row.container = Some("0123456789abcdef0123".to_owned());
        let mut state = ViewState::default();
        state.ingest(2.0, 2.0, vec![Sample::new(&c, row)]);
        state.add_loss(&[("ringbuf_full", 4)]);
        let lines = screen(&mut state, 200, 20);
        assert!(
            lines[0].starts_with(
                "nettrace  backend tracepoint  refresh 2.0 s  1 connections tracked, 1 moved  cpu 1.5 %"
            ),
            "{}",
            lines[0]
        );
        assert!(
            lines[1]
                .starts_with("view: connections  sort: throughput (most first)  amounts: totals")
        );
        assert_eq!(lines[2], "loss since start: ringbuf_full=4");
        let header = &lines[3];
        let row = &lines[4];
        assert_eq!(cell(header, row, "PROCESS"), "curl");
        assert_eq!(cell(header, row, "PID"), "1234");
        assert_eq!(cell(header, row, "CONTAINER"), "0123456789ab");
        assert_eq!(cell(header, row, "REMOTE"), "[::1]:8080 (db.example)");
        assert_eq!(cell(header, row, "STATE"), "open");
        assert_eq!(cell(header, row, "TX/s"), "1.0 KiB/s");
        assert_eq!(cell(header, row, "RX/s"), "512 B/s");
        assert_eq!(cell(header, row, "TX"), "20.0 KiB");
        assert_eq!(cell(header, row, "RETR"), "3");
        assert_eq!(cell(header, row, "RTTms"), "1.5");
        assert_eq!(cell(header, row, "AGE"), "1m");
        // The sparkline's box: its title names the selection; its last bar is the refresh.
        let spark_top = lines.len() - 1 - usize::from(SPARKLINE_HEIGHT);
        assert!(
            lines[spark_top].contains("curl 1234 127.0.0.1:40000 → [::1]:8080 (db.example)"),
            "{}",
            lines[spark_top]
        );
        assert!(
            lines[spark_top].contains("max 1.5 KiB/s"),
            "{}",
            lines[spark_top]
        );
        assert!(lines.last().unwrap().starts_with("q quit"));

        state.apply(Action::Amounts);
        state.apply(Action::Group);
        let lines = screen(&mut state, 200, 20);
        assert!(lines[1].starts_with(
            "view: by process  sort: throughput (most first)  amounts: last interval"
        ));
        assert_eq!(cell(&lines[3], &lines[4], "CONNS"), "1");
        assert_eq!(cell(&lines[3], &lines[4], "ΔTX"), "2.0 KiB");
        state.apply(Action::Filter(crate::view::state::FilterKind::Port));
        state.apply(Action::Input('8'));
        let lines = screen(&mut state, 200, 20);
        assert!(lines.last().unwrap().starts_with("port filter: 8█"));
    }

    #[test]
    fn ages() {
        assert_eq!(age(0), "0s");
        assert_eq!(age(59_999_999_999), "59s");
        assert_eq!(age(60_000_000_000), "1m");
        assert_eq!(age(7_200_000_000_000), "2h");
        assert_eq!(age(u64::MAX), "213503d");
    }

    #[test]
    fn a_tiny_terminal_does_not_panic() {
        let mut state = ViewState::default();
        state.ingest(
            1.0,
            1.0,
            (0..50)
                .map(|i| {
                    let c = conn(Protocol::Udp, i, i, i);
                    Sample::new(&c, Row::new(&c, "p".to_owned()))
                })
                .collect(),
        );
        for (w, h) in [(1, 1), (10, 5), (80, 12), (0, 0)] {
            screen(&mut state, w, h);
        }
    }
}
