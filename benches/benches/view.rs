//! nettrace's live view: the cost of one refresh at 10k connections, every one of which moved
//! (the worst case: each gets a new row, a history sample and a place in the sort), against a
//! floor measured in the same loop: building the same 10k rows from the library's answer
//! (`row::of_snapshot`, what the plain table also does) without the view.
//!
//! A refresh: the rows and samples, `ViewState::ingest` (tracking, history, filter, group, sort)
//! and drawing a 200×50 frame into ratatui's `TestBackend` (only the visible rows are built; a
//! real terminal then gets the changed cells). The history is in its steady state after the first
//! 60 refreshes (one sample per connection per refresh, a minute kept). Also: the same refresh
//! grouped by process, and a key press (a new sort order and a redraw, no tracer call).
//!
//! Reported: ms per refresh for each, the floor, and each ratio to the floor.

use std::{
    hint::black_box,
    net::{IpAddr, Ipv4Addr},
    sync::Arc,
    time::{Duration, Instant},
};

use criterion::{Criterion, criterion_group, criterion_main};
use nettrace::{
    filter::Selection,
    process::ProcessNames,
    row,
    view::{
        self,
        draw::{self, Header},
        keys::Action,
        state::{SortKey, ViewState},
    },
};
use ratatui::{Terminal, backend::TestBackend};
use tracer::{
    Backend,
    model::{Comm, ConnectionStats, ConnectionTuple, Connections, Direction, Protocol},
};
use tracer_benches::summary::{number, upsert_fields_from_env};

const CONNS: usize = 10_000;

/// 10k TCP connections of 100 processes to 1000 remote hosts (a name each), all of which moved.
fn snapshot() -> Connections {
    let mut answer = Connections::default();
    for i in 0..CONNS {
        let n = u32::try_from(i).unwrap_or(0);
        let remote = IpAddr::V4(Ipv4Addr::from(
            u32::from(Ipv4Addr::new(198, 18, 0, 1)) + n % 1000,
        ));
        let mut conn = ConnectionStats::new(
            ConnectionTuple {
                src: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
                dst: remote,
                sport: u16::try_from(20_000 + i).unwrap_or(0),
                dport: 443,
                pid: 1000 + n % 100,
                netns: 1,
                protocol: Protocol::Tcp,
            },
            Direction::Outgoing,
            u64::from(n),
        );
        let mut comm = [0u8; 16];
        let name = format!("worker{}", n % 100);
        comm.iter_mut()
            .zip(name.as_bytes())
            .for_each(|(to, from)| *to = *from);
        conn.comm = Comm::new(comm);
        conn.last.sent_bytes = u64::from(n % 7919) * 13;
        conn.last.recv_bytes = u64::from(n % 104_729) * 3;
        conn.monotonic.sent_bytes = conn.last.sent_bytes * 100;
        conn.monotonic.recv_bytes = conn.last.recv_bytes * 100;
        conn.monotonic.retransmits = n % 5;
        conn.rtt_us = 100 + n % 5000;
        conn.created_ns = 1_000_000 + u64::from(n);
        answer.conns.push(conn);
        answer
            .dns
            .entry(remote)
            .or_insert_with(|| vec![Arc::from(format!("host{}.example", n % 1000))]);
    }
    answer
}

struct Totals {
    measured: Duration,
    floor: Duration,
    refreshes: u64,
}

fn bench_view(c: &mut Criterion) {
    let conns = snapshot();
    let selection = Selection::default();
    let header = Header {
        backend: Backend::Tracepoint,
        cpu_percent: Some(1.0),
        mono_ns: 10_000_000_000,
    };
    let mut group = c.benchmark_group("view");
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(3));

    let mut results = Vec::new();
    for (name, grouped) in [("refresh/10k", false), ("refresh_by_process/10k", true)] {
        let mut names = ProcessNames::default();
        let mut state = ViewState::default();
        if grouped {
            state.apply(Action::Group);
        }
        let mut terminal = match Terminal::new(TestBackend::new(200, 50)) {
            Ok(t) => t,
            Err(err) => {
                eprintln!("view: no test terminal: {err}");
                return;
            }
        };
        let mut now_s = 0.0;
        let mut totals = Totals {
            measured: Duration::ZERO,
            floor: Duration::ZERO,
            refreshes: 0,
        };
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut measured = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    let rows = row::of_snapshot(black_box(&conns), &selection, &mut names);
                    black_box(&rows);
                    drop(rows);
                    totals.floor += start.elapsed();

                    let start = Instant::now();
                    now_s += 1.0;
                    let samples = view::samples(black_box(&conns), &selection, &mut names);
                    state.ingest(now_s, 1.0, samples);
                    let drawn = terminal.draw(|frame| draw::draw(frame, &mut state, &header));
                    black_box(drawn.is_ok());
                    let elapsed = start.elapsed();
                    totals.measured += elapsed;
                    measured += elapsed;
                    totals.refreshes += 1;
                }
                measured
            })
        });
        results.push((name, totals));
    }

    // A key press: a new sort order over the 10k lines and a redraw.
    let mut names = ProcessNames::default();
    let mut state = ViewState::default();
    state.ingest(1.0, 1.0, view::samples(&conns, &selection, &mut names));
    let mut terminal = match Terminal::new(TestBackend::new(200, 50)) {
        Ok(t) => t,
        Err(err) => {
            eprintln!("view: no test terminal: {err}");
            return;
        }
    };
    let keys = [
        SortKey::Bytes,
        SortKey::Rtt,
        SortKey::Age,
        SortKey::Throughput,
    ];
    let mut press = 0usize;
    let mut key_totals = Totals {
        measured: Duration::ZERO,
        floor: Duration::ZERO,
        refreshes: 0,
    };
    group.bench_function("key_press/10k", |b| {
        b.iter_custom(|iters| {
            let mut measured = Duration::ZERO;
            for _ in 0..iters {
                let key = keys
                    .get(press % keys.len())
                    .copied()
                    .unwrap_or(SortKey::Bytes);
                press += 1;
                let start = Instant::now();
                let rows = row::of_snapshot(black_box(&conns), &selection, &mut names);
                black_box(&rows);
                drop(rows);
                key_totals.floor += start.elapsed();

                let start = Instant::now();
                state.apply(Action::Sort(key));
                let drawn = terminal.draw(|frame| draw::draw(frame, &mut state, &header));
                black_box(drawn.is_ok());
                let elapsed = start.elapsed();
                key_totals.measured += elapsed;
                measured += elapsed;
                key_totals.refreshes += 1;
            }
            measured
        })
    });
    group.finish();
    results.push(("key_press/10k", key_totals));

    for (name, totals) in results {
        let per = totals.refreshes.max(1) as f64;
        let ms = totals.measured.as_secs_f64() * 1e3 / per;
        let floor_ms = totals.floor.as_secs_f64() * 1e3 / per;
        let ratio = ms / floor_ms.max(f64::MIN_POSITIVE);
        println!(
            "view/{name}: {ms:.2} ms, floor (building the 10k rows) {floor_ms:.2} ms, ratio \
             {ratio:.2} ({} runs)",
            totals.refreshes
        );
        if let Err(err) = upsert_fields_from_env(
            &format!("view/{name}"),
            [
                ("ms", number(ms)),
                ("floor_ms", number(floor_ms)),
                ("ratio", number(ratio)),
            ],
        ) {
            eprintln!("view: cannot write the bench summary: {err}");
        }
    }
}

criterion_group!(benches, bench_view);
criterion_main!(benches);
