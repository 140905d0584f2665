//! The live view's model, pure (no terminal, no clock, no tracer): the connections seen so far,
//! what each refresh changed, and the lines shown under the current sort, grouping and filters.
//!
//! The library hands each refresh only the connections that moved (and closed ones once), so the
//! view keeps every connection it has seen until the library reports it closed: an idle open
//! connection stays on screen with its totals and zero throughput. A closed one stays
//! [`CLOSED_LINGER_S`] seconds (always for at least one refresh), then goes.

use std::{cmp::Ordering, ops::Range};

use rustc_hash::FxHashMap;
use tracer::model::{ConnectionStats, ConnectionTuple, Direction, Protocol};

use super::{
    history::{self, History},
    keys::Action,
};
use crate::{addr, row::Row};

/// How long a closed connection stays on screen, in seconds.
pub const CLOSED_LINGER_S: f64 = 5.0;

/// A connection's identity: the library's cookie and its tuple (owner pid included).
pub type ConnKey = (u64, ConnectionTuple);

/// What the lines are ordered by, most first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    /// Bytes both ways in the last interval.
    Throughput,
    /// Bytes both ways since the connection began.
    Bytes,
    /// Retransmits (of the interval or in total, as [`Amounts`] says).
    Retransmits,
    /// Smoothed RTT (TCP); connections without one last.
    Rtt,
    /// Oldest connection first; unknown creation time last.
    Age,
}

impl SortKey {
    pub fn name(self) -> &'static str {
        match self {
            Self::Throughput => "throughput",
            Self::Bytes => "bytes",
            Self::Retransmits => "retransmits",
            Self::Rtt => "rtt",
            Self::Age => "age",
        }
    }
}

/// One line per connection, or per group of connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grouping {
    Connection,
    /// By owner process (name and pid).
    Process,
    /// By remote service: the remote host (its DNS name when known) and the service port (the
    /// remote port of an outgoing connection, the local one of an incoming connection).
    Service,
}

impl Grouping {
    pub fn name(self) -> &'static str {
        match self {
            Self::Connection => "connections",
            Self::Process => "by process",
            Self::Service => "by remote service",
        }
    }

    fn next(self) -> Self {
        match self {
            Self::Connection => Self::Process,
            Self::Process => Self::Service,
            Self::Service => Self::Connection,
        }
    }
}

/// What the byte, retransmit and failure columns count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Amounts {
    /// Since the connection began (bytes, retransmits: the kernel's totals; failures: since the
    /// view first saw the connection).
    Totals,
    /// In the last interval.
    Deltas,
}

/// What a filter prompt asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterKind {
    Pid,
    Port,
    Text,
}

impl FilterKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Pid => "pid",
            Self::Port => "port",
            Self::Text => "text",
        }
    }
}

/// The filter being typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prompt {
    pub kind: FilterKind,
    pub input: String,
}

/// The filters set (each optional; all that are set must match).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filters {
    pub pid: Option<u32>,
    /// The local or the remote port.
    pub port: Option<u16>,
    /// A piece of the process name, an address, the remote's name, the container, the
    /// application protocol or the service, ASCII case ignored.
    pub text: Option<String>,
}

impl Filters {
    pub fn is_active(&self) -> bool {
        self.pid.is_some() || self.port.is_some() || self.text.is_some()
    }

    /// `pid=1 port=80 text="curl"`, or empty.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(pid) = self.pid {
            parts.push(format!("pid={pid}"));
        }
        if let Some(port) = self.port {
            parts.push(format!("port={port}"));
        }
        if let Some(text) = &self.text {
            parts.push(format!("text={text:?}"));
        }
        parts.join(" ")
    }

    fn matches(&self, t: &Tracked) -> bool {
        if self.pid.is_some_and(|pid| pid != t.row.pid) {
            return false;
        }
        if self
            .port
            .is_some_and(|port| port != t.local_port && port != t.remote_port)
        {
            return false;
        }
        match &self.text {
            None => true,
            Some(text) => {
                let fields = [
                    Some(t.row.process.as_str()),
                    Some(t.row.local.as_str()),
                    Some(t.row.remote.as_str()),
                    t.row.remote_name.as_deref(),
                    t.row.container.as_deref(),
                    t.row.app_protocol.as_deref(),
                    Some(t.service.as_str()),
                ];
                fields
                    .into_iter()
                    .flatten()
                    .any(|field| contains_ignore_ascii_case(field, text))
            }
        }
    }

    /// Sets (or, with empty input, clears) the filter `kind` from the prompt's input.
    fn set(&mut self, kind: FilterKind, input: &str) -> Result<(), String> {
        let input = input.trim();
        match kind {
            FilterKind::Pid if input.is_empty() => self.pid = None,
            FilterKind::Pid => {
                self.pid = Some(input.parse().map_err(|_| format!("not a pid: {input:?}"))?)
            }
            FilterKind::Port if input.is_empty() => self.port = None,
            FilterKind::Port => {
                self.port = Some(
                    input
                        .parse()
                        .map_err(|_| format!("not a port: {input:?}"))?,
                )
            }
            FilterKind::Text if input.is_empty() => self.text = None,
            FilterKind::Text => self.text = Some(input.to_owned()),
        }
        Ok(())
    }
}

fn contains_ignore_ascii_case(haystack: &str, needle: &str) -> bool {
    let needle = needle.as_bytes();
    needle.is_empty()
        || haystack
            .as_bytes()
            .windows(needle.len())
            .any(|window| window.eq_ignore_ascii_case(needle))
}

/// One connection of a refresh, as the view takes it.
#[derive(Debug, Clone)]
pub struct Sample {
    pub key: ConnKey,
    pub row: Row,
    /// Kernel monotonic time the connection was created (0: unknown).
    pub created_ns: u64,
    pub is_closed: bool,
    /// Retransmits and failures in the interval.
    pub retransmits: u32,
    pub failures: u32,
}

impl Sample {
    /// The sample of `conn`, shown as `row` (see [`crate::row::of_snapshot`]).
    pub fn new(conn: &ConnectionStats, row: Row) -> Self {
        Self {
            key: (conn.cookie, conn.tuple),
            row,
            created_ns: conn.created_ns,
            is_closed: conn.is_closed,
            retransmits: conn.last.retransmits,
            failures: conn
                .tcp_failures
                .iter()
                .fold(0u32, |sum, (_, count)| sum.saturating_add(count)),
        }
    }
}

/// What the view keeps of one connection.
#[derive(Debug, Clone)]
pub struct Tracked {
    /// The latest row; its interval amounts are zero when the connection did not move in the
    /// last interval.
    pub row: Row,
    pub local_port: u16,
    pub remote_port: u16,
    /// The service this connection is a client or a server of, e.g. `db.example:5432` or
    /// `192.0.2.7 → :80` (incoming).
    pub service: String,
    pub created_ns: u64,
    pub interval_retransmits: u32,
    pub interval_failures: u32,
    pub failures_total: u64,
    pub history: History,
    /// When the library reported it closed (view time, seconds).
    pub closed_at: Option<f64>,
}

impl Tracked {
    fn new(sample: &Sample) -> Self {
        let (_, tuple) = sample.key;
        Self {
            row: sample.row.clone(),
            local_port: tuple.sport,
            remote_port: tuple.dport,
            service: service(&sample.row, &tuple),
            created_ns: sample.created_ns,
            interval_retransmits: 0,
            interval_failures: 0,
            failures_total: 0,
            history: History::default(),
            closed_at: None,
        }
    }

    /// The connection did not move in this interval.
    fn idle(&mut self) {
        let row = &mut self.row;
        row.tx_bytes = 0;
        row.rx_bytes = 0;
        row.tx_packets = 0;
        row.rx_packets = 0;
        row.http = None;
        self.interval_retransmits = 0;
        self.interval_failures = 0;
    }

    fn update(&mut self, sample: Sample, now_s: f64) {
        let (_, tuple) = sample.key;
        self.service = service(&sample.row, &tuple);
        self.history.push(now_s, sample.row.throughput());
        self.row = sample.row;
        if self.created_ns == 0 {
            self.created_ns = sample.created_ns;
        }
        self.interval_retransmits = sample.retransmits;
        self.interval_failures = sample.failures;
        self.failures_total = self
            .failures_total
            .saturating_add(u64::from(sample.failures));
        self.closed_at = sample.is_closed.then_some(now_s);
    }
}

/// The service label of a connection (see [`Tracked::service`]).
fn service(row: &Row, tuple: &ConnectionTuple) -> String {
    let remote = tuple.dst.to_canonical();
    match (row.direction, &row.remote_name) {
        (Direction::Incoming, Some(name)) => format!("{name} → :{}", tuple.sport),
        (Direction::Incoming, None) => format!("{remote} → :{}", tuple.sport),
        (_, Some(name)) => format!("{name}:{}", tuple.dport),
        (_, None) => addr::endpoint(remote, tuple.dport),
    }
}

/// The numbers of a line: one connection's, or a group's sums.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Metrics {
    pub conns: usize,
    /// Bytes in the last interval.
    pub tx: u64,
    pub rx: u64,
    pub tx_total: u64,
    pub rx_total: u64,
    pub retransmits: u64,
    pub retransmits_total: u64,
    pub failures: u64,
    pub failures_total: u64,
    rtt_sum_us: u64,
    rtt_count: u64,
    /// Kernel monotonic creation time of the oldest connection (`None`: unknown).
    pub oldest_ns: Option<u64>,
}

impl Metrics {
    fn add(&mut self, t: &Tracked) {
        let row = &t.row;
        self.conns += 1;
        self.tx = self.tx.saturating_add(row.tx_bytes);
        self.rx = self.rx.saturating_add(row.rx_bytes);
        self.tx_total = self.tx_total.saturating_add(row.tx_total);
        self.rx_total = self.rx_total.saturating_add(row.rx_total);
        self.retransmits = self
            .retransmits
            .saturating_add(u64::from(t.interval_retransmits));
        self.retransmits_total = self
            .retransmits_total
            .saturating_add(u64::from(row.retransmits));
        self.failures = self.failures.saturating_add(u64::from(t.interval_failures));
        self.failures_total = self.failures_total.saturating_add(t.failures_total);
        if let Some(rtt) = row.rtt_us {
            self.rtt_sum_us = self.rtt_sum_us.saturating_add(u64::from(rtt));
            self.rtt_count += 1;
        }
        if t.created_ns > 0 {
            self.oldest_ns = Some(self.oldest_ns.map_or(t.created_ns, |o| o.min(t.created_ns)));
        }
    }

    /// Bytes both ways in the last interval.
    pub fn throughput(&self) -> u64 {
        self.tx.saturating_add(self.rx)
    }

    /// Bytes both ways since the connections began.
    pub fn bytes_total(&self) -> u64 {
        self.tx_total.saturating_add(self.rx_total)
    }

    /// The mean smoothed RTT of the connections that have one, µs.
    pub fn rtt_us(&self) -> Option<u64> {
        (self.rtt_count > 0).then(|| self.rtt_sum_us / self.rtt_count)
    }

    /// (tx, rx, retransmits, failures) as `amounts` counts them.
    pub fn amounts(&self, amounts: Amounts) -> (u64, u64, u64, u64) {
        match amounts {
            Amounts::Totals => (
                self.tx_total,
                self.rx_total,
                self.retransmits_total,
                self.failures_total,
            ),
            Amounts::Deltas => (self.tx, self.rx, self.retransmits, self.failures),
        }
    }
}

/// What a line stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineKey {
    Conn(ConnKey),
    Process { name: String, pid: u32 },
    Service { protocol: Protocol, label: String },
}

/// One line of the table.
#[derive(Debug, Clone)]
pub struct Line {
    pub key: LineKey,
    /// The connections of a group (empty for a connection's line: its key says it).
    pub members: Vec<ConnKey>,
    pub metrics: Metrics,
    /// Ties in the sort order break on this, so the order is stable between refreshes.
    tie: (String, u32, u64),
}

/// The live view's state.
#[derive(Debug)]
pub struct ViewState {
    conns: FxHashMap<ConnKey, Tracked>,
    lines: Vec<Line>,
    pub sort: SortKey,
    /// Least first instead of most first.
    pub reverse: bool,
    pub grouping: Grouping,
    pub amounts: Amounts,
    pub filters: Filters,
    pub prompt: Option<Prompt>,
    /// A message for the footer (a refused filter), until the next key.
    pub status: Option<String>,
    selected: usize,
    selected_key: Option<LineKey>,
    offset: usize,
    /// Rows the table showed at the last draw (the page size).
    page: usize,
    /// View time of the last refresh (seconds since the view started) and its interval.
    pub now_s: f64,
    pub interval_s: f64,
    /// Connections the last refresh reported (after `--pid` / `--port`).
    pub moved: usize,
    /// Loss counters since the view started, non-zero only, in the order they first appeared.
    pub loss: Vec<(&'static str, u64)>,
}

impl Default for ViewState {
    fn default() -> Self {
        Self {
            conns: FxHashMap::default(),
            lines: Vec::new(),
            sort: SortKey::Throughput,
            reverse: false,
            grouping: Grouping::Connection,
            amounts: Amounts::Totals,
            filters: Filters::default(),
            prompt: None,
            status: None,
            selected: 0,
            selected_key: None,
            offset: 0,
            page: 1,
            now_s: 0.0,
            interval_s: 0.0,
            moved: 0,
            loss: Vec::new(),
        }
    }
}

impl ViewState {
    /// The connections open before the view started (the library's first answer, whose `last`
    /// amounts are totals, not an interval's): tracked with their totals and no throughput.
    pub fn seed(&mut self, samples: Vec<Sample>) {
        for sample in samples {
            if sample.is_closed {
                continue;
            }
            let failures = u64::from(sample.failures);
            let mut tracked = Tracked::new(&sample);
            tracked.failures_total = failures;
            tracked.idle();
            self.conns.insert(sample.key, tracked);
        }
        self.rebuild();
    }

    /// One refresh at view time `now_s`: the connections that moved in the `interval_s` seconds
    /// before it.
    pub fn ingest(&mut self, now_s: f64, interval_s: f64, samples: Vec<Sample>) {
        self.now_s = now_s;
        self.interval_s = interval_s;
        self.moved = samples.len();
        self.conns.retain(|_, t| {
            t.closed_at
                .is_none_or(|closed| now_s - closed < CLOSED_LINGER_S)
        });
        for tracked in self.conns.values_mut() {
            tracked.idle();
            tracked.history.prune(now_s);
        }
        for sample in samples {
            self.conns
                .entry(sample.key)
                .or_insert_with(|| Tracked::new(&sample))
                .update(sample, now_s);
        }
        self.rebuild();
    }

    /// Adds one interval's non-zero loss counters to the totals shown.
    pub fn add_loss(&mut self, loss: &[(&'static str, u64)]) {
        for &(name, value) in loss {
            match self.loss.iter_mut().find(|(n, _)| *n == name) {
                Some((_, total)) => *total = total.saturating_add(value),
                None => self.loss.push((name, value)),
            }
        }
    }

    /// Connections tracked (open, and closed ones still shown), filters aside.
    pub fn tracked(&self) -> usize {
        self.conns.len()
    }

    pub fn conn(&self, key: &ConnKey) -> Option<&Tracked> {
        self.conns.get(key)
    }

    /// The lines, in order.
    pub fn lines(&self) -> &[Line] {
        &self.lines
    }

    pub fn selected_index(&self) -> Option<usize> {
        (!self.lines.is_empty()).then_some(self.selected)
    }

    pub fn selected(&self) -> Option<&Line> {
        self.lines.get(self.selected)
    }

    /// The lines to show in a table `height` rows high: the window follows the selection.
    pub fn window(&mut self, height: usize) -> Range<usize> {
        let height = height.max(1);
        self.page = height;
        if self.selected < self.offset {
            self.offset = self.selected;
        } else if self.selected >= self.offset + height {
            self.offset = self.selected + 1 - height;
        }
        self.offset = self.offset.min(self.lines.len().saturating_sub(height));
        self.offset..self.lines.len().min(self.offset + height)
    }

    /// The selected line's throughput over the last minute in `bins` bins, bytes per second,
    /// oldest first (all zero without a selection).
    pub fn selected_throughput(&self, bins: usize) -> Vec<u64> {
        let mut sums = vec![0.0; bins];
        if let Some(line) = self.selected() {
            let single;
            let members: &[ConnKey] = match &line.key {
                LineKey::Conn(key) => {
                    single = [*key];
                    &single
                }
                _ => &line.members,
            };
            for key in members {
                if let Some(t) = self.conns.get(key) {
                    t.history.add_to_bins(self.now_s, &mut sums);
                }
            }
        }
        history::rounded(&sums)
    }

    /// Applies a key's action; `false` when it asks to quit.
    pub fn apply(&mut self, action: Action) -> bool {
        self.status = None;
        match action {
            Action::Quit => return false,
            Action::Sort(key) => {
                if self.sort == key {
                    self.reverse = !self.reverse;
                } else {
                    self.sort = key;
                    self.reverse = false;
                }
                self.rebuild();
            }
            Action::Group => {
                self.grouping = self.grouping.next();
                self.selected = 0;
                self.selected_key = None;
                self.rebuild();
            }
            Action::Amounts => {
                self.amounts = match self.amounts {
                    Amounts::Totals => Amounts::Deltas,
                    Amounts::Deltas => Amounts::Totals,
                };
                // The retransmit order depends on it.
                self.rebuild();
            }
            Action::Filter(kind) => {
                let input = match kind {
                    FilterKind::Pid => self.filters.pid.map(|p| p.to_string()),
                    FilterKind::Port => self.filters.port.map(|p| p.to_string()),
                    FilterKind::Text => self.filters.text.clone(),
                };
                self.prompt = Some(Prompt {
                    kind,
                    input: input.unwrap_or_default(),
                });
            }
            Action::ClearFilters => {
                self.filters = Filters::default();
                self.rebuild();
            }
            Action::Input(c) => {
                if let Some(prompt) = &mut self.prompt {
                    prompt.input.push(c);
                }
            }
            Action::Backspace => {
                if let Some(prompt) = &mut self.prompt {
                    prompt.input.pop();
                }
            }
            Action::Submit => {
                if let Some(prompt) = self.prompt.take() {
                    match self.filters.set(prompt.kind, &prompt.input) {
                        Ok(()) => self.rebuild(),
                        Err(message) => self.status = Some(message),
                    }
                }
            }
            Action::Cancel => self.prompt = None,
            Action::Up => self.select(self.selected.saturating_sub(1)),
            Action::Down => self.select(self.selected.saturating_add(1)),
            Action::PageUp => self.select(self.selected.saturating_sub(self.page)),
            Action::PageDown => self.select(self.selected.saturating_add(self.page)),
            Action::Home => self.select(0),
            Action::End => self.select(usize::MAX),
        }
        true
    }

    fn select(&mut self, index: usize) {
        self.selected = index.min(self.lines.len().saturating_sub(1));
        self.selected_key = self.lines.get(self.selected).map(|l| l.key.clone());
    }

    /// Recomputes the lines from the connections, the filters, the grouping and the sort, and
    /// keeps the selection on the same line when it is still there.
    fn rebuild(&mut self) {
        let filters = &self.filters;
        let visible = self.conns.iter().filter(|(_, t)| filters.matches(t));
        let mut lines: Vec<Line> = match self.grouping {
            Grouping::Connection => visible
                .map(|(key, t)| {
                    let mut metrics = Metrics::default();
                    metrics.add(t);
                    Line {
                        key: LineKey::Conn(*key),
                        members: Vec::new(),
                        metrics,
                        tie: (t.row.process.clone(), t.row.pid, key.0),
                    }
                })
                .collect(),
            Grouping::Process => group(visible, |t| {
                (
                    LineKey::Process {
                        name: t.row.process.clone(),
                        pid: t.row.pid,
                    },
                    (t.row.process.clone(), t.row.pid, 0),
                )
            }),
            Grouping::Service => group(visible, |t| {
                (
                    LineKey::Service {
                        protocol: t.row.protocol,
                        label: t.service.clone(),
                    },
                    (t.service.clone(), protocol_rank(t.row.protocol), 0),
                )
            }),
        };
        let (sort, reverse, amounts) = (self.sort, self.reverse, self.amounts);
        lines.sort_by(|a, b| {
            let primary = compare(&a.metrics, &b.metrics, sort, amounts);
            let primary = if reverse { primary.reverse() } else { primary };
            primary.then_with(|| a.tie.cmp(&b.tie))
        });
        self.lines = lines;
        let found = self
            .selected_key
            .as_ref()
            .and_then(|key| self.lines.iter().position(|l| &l.key == key));
        match found {
            Some(index) => self.selected = index,
            None => self.select(self.selected),
        }
    }
}

fn protocol_rank(protocol: Protocol) -> u32 {
    match protocol {
        Protocol::Tcp => 0,
        Protocol::Udp => 1,
    }
}

/// Groups the connections into lines by `key_of` (a line's key and its tie-break).
fn group<'a>(
    conns: impl Iterator<Item = (&'a ConnKey, &'a Tracked)>,
    key_of: impl Fn(&Tracked) -> (LineKey, (String, u32, u64)),
) -> Vec<Line> {
    let mut index: FxHashMap<(String, u32, u64), usize> = FxHashMap::default();
    let mut lines: Vec<Line> = Vec::new();
    for (conn_key, t) in conns {
        let (key, tie) = key_of(t);
        let at = *index.entry(tie.clone()).or_insert_with(|| {
            lines.push(Line {
                key,
                members: Vec::new(),
                metrics: Metrics::default(),
                tie,
            });
            lines.len() - 1
        });
        if let Some(line) = lines.get_mut(at) {
            line.members.push(*conn_key);
            line.metrics.add(t);
        }
    }
    lines
}

/// Most first under `sort`.
fn compare(a: &Metrics, b: &Metrics, sort: SortKey, amounts: Amounts) -> Ordering {
    match sort {
        SortKey::Throughput => b.throughput().cmp(&a.throughput()),
        SortKey::Bytes => b.bytes_total().cmp(&a.bytes_total()),
        SortKey::Retransmits => {
            let (.., br, _) = b.amounts(amounts);
            let (.., ar, _) = a.amounts(amounts);
            br.cmp(&ar)
        }
        // Without an RTT: after every measured one.
        SortKey::Rtt => b
            .rtt_us()
            .map_or(0, |r| r.saturating_add(1))
            .cmp(&a.rtt_us().map_or(0, |r| r.saturating_add(1))),
        // Oldest first; unknown creation time last.
        SortKey::Age => a
            .oldest_ns
            .unwrap_or(u64::MAX)
            .cmp(&b.oldest_ns.unwrap_or(u64::MAX)),
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use tracer::model::Protocol;

    use super::*;
    use crate::row::tests::conn;

    /// A connection of `pid` from port `sport` to 198.51.100.1:`dport` that moved `sent`/`recv`
    /// bytes in the interval (totals ten times that, 3 retransmits, RTT 1.5 ms).
    fn sample(pid: u32, sport: u16, dport: u16, sent: u64, recv: u64) -> Sample {
        let mut c = conn(Protocol::Tcp, sent, recv, u64::from(sport));
        c.tuple.pid = pid;
        c.tuple.sport = sport;
        c.tuple.dport = dport;
        c.tuple.dst = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1));
        c.created_ns = 1_000 + u64::from(sport);
        let row = Row::new(&c, format!("proc{pid}"));
        Sample::new(&c, row)
    }

    fn ports(state: &ViewState) -> Vec<u16> {
        state
            .lines()
            .iter()
            .map(|line| match &line.key {
                LineKey::Conn((_, tuple)) => tuple.sport,
                other => panic!("not a connection line: {other:?}"),
            })
            .collect()
    }

    fn state_with(samples: Vec<Sample>) -> ViewState {
        let mut state = ViewState::default();
        state.ingest(1.0, 1.0, samples);
        state
    }

    #[test]
    fn sort_keys_order_most_first_and_again_reverses() {
        let mut a = sample(1, 1001, 80, 100, 0); // busiest now
        let mut b = sample(1, 1002, 80, 10, 0);
        let c = sample(1, 1003, 80, 50, 0);
        // Totals: b moved the most overall; retransmits and RTT set apart.
        b.row.tx_total = 1_000_000;
        a.row.retransmits = 9;
        a.retransmits = 1;
        b.retransmits = 5;
        b.row.rtt_us = Some(90_000);
        a.row.rtt_us = None;
        let mut state = state_with(vec![a, b, c]);
        assert_eq!(ports(&state), [1001, 1003, 1002]);
        state.apply(Action::Sort(SortKey::Bytes));
        assert_eq!(ports(&state), [1002, 1001, 1003]);
        // Totals: a has 9, b and c 3 each (a tie: by cookie); deltas: b has 5 in the interval.
        state.apply(Action::Sort(SortKey::Retransmits));
        assert_eq!(ports(&state), [1001, 1002, 1003]);
        state.apply(Action::Amounts);
        assert_eq!(ports(&state), [1002, 1001, 1003]);
        // The same key again: least first.
        state.apply(Action::Sort(SortKey::Retransmits));
        assert!(state.reverse);
        assert_eq!(ports(&state), [1003, 1001, 1002]);
        state.apply(Action::Sort(SortKey::Rtt));
        assert!(!state.reverse);
        assert_eq!(ports(&state), [1002, 1003, 1001], "no RTT goes last");
        // Created at 1000 + port: 1001 is the oldest.
        state.apply(Action::Sort(SortKey::Age));
        assert_eq!(ports(&state), [1001, 1002, 1003]);
    }

    #[test]
    fn ties_break_on_process_pid_and_cookie() {
        let state = state_with(vec![
            sample(2, 1005, 80, 1, 0),
            sample(1, 1009, 80, 1, 0),
            sample(1, 1004, 80, 1, 0),
        ]);
        assert_eq!(ports(&state), [1004, 1009, 1005]);
    }

    #[test]
    fn grouping_sums_by_process_then_by_service() {
        let mut state = state_with(vec![
            sample(1, 1001, 443, 100, 10),
            sample(1, 1002, 80, 200, 20),
            sample(2, 1003, 443, 5, 0),
        ]);
        state.apply(Action::Group);
        assert_eq!(state.grouping, Grouping::Process);
        let lines = state.lines();
        assert_eq!(lines.len(), 2);
        assert_eq!(
            lines[0].key,
            LineKey::Process {
                name: "proc1".to_owned(),
                pid: 1
            }
        );
        assert_eq!(lines[0].metrics.conns, 2);
        assert_eq!((lines[0].metrics.tx, lines[0].metrics.rx), (300, 30));
        assert_eq!(lines[0].metrics.tx_total, 3_000);
        assert_eq!(lines[0].metrics.rtt_us(), Some(1_500));
        assert_eq!(lines[1].metrics.conns, 1);

        state.apply(Action::Group);
        assert_eq!(state.grouping, Grouping::Service);
        let services: Vec<(String, usize, u64)> = state
            .lines()
            .iter()
            .map(|l| match &l.key {
                LineKey::Service { label, .. } => {
                    (label.clone(), l.metrics.conns, l.metrics.throughput())
                }
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            services,
            [
                ("198.51.100.1:80".to_owned(), 1, 220),
                ("198.51.100.1:443".to_owned(), 2, 115),
            ]
        );
        state.apply(Action::Group);
        assert_eq!(state.grouping, Grouping::Connection);
        assert_eq!(state.lines().len(), 3);
    }

    #[test]
    fn incoming_connections_group_under_the_local_port_and_names_win() {
        let mut server = sample(1, 80, 50_000, 1, 1);
        server.row.direction = Direction::Incoming;
        let mut named = sample(1, 1001, 443, 1, 1);
        named.row.remote_name = Some("db.example".to_owned());
        let mut state = state_with(vec![server, named]);
        state.apply(Action::Group);
        state.apply(Action::Group);
        let mut labels: Vec<String> = state
            .lines()
            .iter()
            .map(|l| match &l.key {
                LineKey::Service { label, .. } => label.clone(),
                other => panic!("{other:?}"),
            })
            .collect();
        labels.sort();
        assert_eq!(labels, ["198.51.100.1 → :80", "db.example:443"]);
    }

    #[test]
    fn filters_by_pid_port_and_text_and_refuse_bad_input() {
        let mut curl = sample(7, 1001, 443, 1, 0);
        curl.row.process = "Curl".to_owned();
        let mut state = state_with(vec![curl, sample(8, 1002, 80, 1, 0)]);
        let type_in = |state: &mut ViewState, kind, text: &str| {
            state.apply(Action::Filter(kind));
            for _ in 0..10 {
                state.apply(Action::Backspace);
            }
            for c in text.chars() {
                state.apply(Action::Input(c));
            }
            state.apply(Action::Submit);
        };
        type_in(&mut state, FilterKind::Pid, "8");
        assert_eq!(ports(&state), [1002]);
        type_in(&mut state, FilterKind::Pid, "");
        type_in(&mut state, FilterKind::Port, "443");
        assert_eq!(ports(&state), [1001]);
        // The remote port of one, the local port of the other.
        type_in(&mut state, FilterKind::Port, "1002");
        assert_eq!(ports(&state), [1002]);
        type_in(&mut state, FilterKind::Port, "");
        type_in(&mut state, FilterKind::Text, "cURL");
        assert_eq!(ports(&state), [1001]);
        assert_eq!(state.filters.describe(), "text=\"cURL\"");
        type_in(&mut state, FilterKind::Text, "198.51.100.1:80");
        assert_eq!(ports(&state), [1002]);
        type_in(&mut state, FilterKind::Pid, "seven");
        assert_eq!(state.status.as_deref(), Some("not a pid: \"seven\""));
        assert_eq!(state.filters.pid, None);
        type_in(&mut state, FilterKind::Port, "70000");
        assert!(state.status.is_some());
        state.apply(Action::ClearFilters);
        assert!(!state.filters.is_active());
        assert_eq!(state.lines().len(), 2);
        // Cancel leaves the filters alone.
        state.apply(Action::Filter(FilterKind::Pid));
        state.apply(Action::Input('7'));
        state.apply(Action::Cancel);
        assert_eq!((state.prompt.clone(), state.lines().len()), (None, 2));
    }

    #[test]
    fn idle_connections_stay_with_their_totals_and_closed_ones_linger() {
        let mut state = ViewState::default();
        let mut closing = sample(1, 1002, 80, 5, 5);
        closing.is_closed = true;
        state.ingest(1.0, 1.0, vec![sample(1, 1001, 80, 100, 0), closing]);
        assert_eq!(state.tracked(), 2);
        // Nothing moved: both stay, the open one with zero throughput and its totals.
        state.ingest(2.0, 1.0, vec![]);
        assert_eq!(state.moved, 0);
        let open = state
            .lines()
            .iter()
            .find_map(|l| match &l.key {
                LineKey::Conn(key) if key.1.sport == 1001 => state.conn(key),
                _ => None,
            })
            .unwrap();
        assert_eq!((open.row.tx_bytes, open.row.tx_total), (0, 1_000));
        state.ingest(1.0 + CLOSED_LINGER_S - 0.1, 1.0, vec![]);
        assert_eq!(state.tracked(), 2);
        state.ingest(1.0 + CLOSED_LINGER_S, 1.0, vec![]);
        assert_eq!(ports(&state), [1001]);
    }

    #[test]
    fn the_seed_gives_totals_without_throughput_and_skips_closed_ones() {
        let mut state = ViewState::default();
        let mut gone = sample(1, 1002, 80, 5, 5);
        gone.is_closed = true;
        let mut failed = sample(1, 1001, 80, 100, 0);
        failed.failures = 2;
        state.seed(vec![failed, gone]);
        assert_eq!(ports(&state), [1001]);
        let line = &state.lines()[0];
        assert_eq!(line.metrics.throughput(), 0);
        assert_eq!(line.metrics.tx_total, 1_000);
        assert_eq!(line.metrics.failures_total, 2);
        assert_eq!(state.selected_throughput(4), vec![0; 4]);
    }

    #[test]
    fn failures_add_up_and_loss_counters_accumulate() {
        let mut state = ViewState::default();
        let mut s = sample(1, 1001, 80, 1, 0);
        s.failures = 1;
        state.ingest(1.0, 1.0, vec![s.clone()]);
        state.ingest(2.0, 1.0, vec![s]);
        state.ingest(3.0, 1.0, vec![]);
        let m = state.lines()[0].metrics;
        assert_eq!((m.failures, m.failures_total), (0, 2));
        state.add_loss(&[("ringbuf_full", 2)]);
        state.add_loss(&[("conn_map_full", 1), ("ringbuf_full", 3)]);
        assert_eq!(state.loss, [("ringbuf_full", 5), ("conn_map_full", 1)]);
    }

    #[test]
    fn the_selection_follows_its_line_and_the_window_follows_the_selection() {
        let mut state = state_with(
            (0..10)
                .map(|i| sample(1, 1000 + i, 80, 100 - u64::from(i), 0))
                .collect(),
        );
        state.apply(Action::Down);
        state.apply(Action::Down);
        assert_eq!(state.selected_index(), Some(2));
        assert_eq!(state.window(4), 0..4);
        // Port 1002 becomes the busiest: the selection stays on it, now first.
        state.ingest(2.0, 1.0, vec![sample(1, 1002, 80, 1_000, 0)]);
        assert_eq!(state.selected_index(), Some(0));
        state.apply(Action::End);
        assert_eq!(state.selected_index(), Some(9));
        assert_eq!(state.window(4), 6..10);
        state.apply(Action::PageUp);
        assert_eq!(state.selected_index(), Some(5));
        assert_eq!(state.window(4), 5..9);
        state.apply(Action::Home);
        assert_eq!(state.window(4), 0..4);
        assert!(!state.apply(Action::Quit));
    }

    #[test]
    fn the_sparkline_sums_a_groups_connections_over_the_last_minute() {
        let mut state = ViewState::default();
        for t in 1..=70 {
            state.ingest(
                f64::from(t),
                1.0,
                vec![sample(1, 1001, 80, 100, 0), sample(1, 1002, 80, 0, 50)],
            );
        }
        // The selected connection: 100 B/s in each of the last 60 one-second bins.
        assert_eq!(state.selected_throughput(60), vec![100; 60]);
        state.apply(Action::Group);
        assert_eq!(state.selected_throughput(6), vec![150; 6]);
        // A minute later without traffic, it is flat.
        state.apply(Action::Group);
        state.apply(Action::Group);
        for t in 71..=130 {
            state.ingest(f64::from(t), 1.0, vec![]);
        }
        assert_eq!(state.selected_throughput(60), vec![0; 60]);
        assert!(state.conns.values().all(|t| t.history.is_empty()));
    }
}
