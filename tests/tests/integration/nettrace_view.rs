//! `nettrace`'s live view, as a person sees it: the real binary runs in a tmux pane (a real
//! terminal: its stdout is a tty, so it opens the view), this test makes known loopback traffic,
//! reads the screen with `tmux capture-pane -p` and presses keys with `tmux send-keys`.
//!
//! Checked: the rows of the test's four sockets (two echo connections of known sizes) with their
//! exact totals; the order under the bytes sort and its reversal (a key pressed twice); the
//! process grouping (a key); Ctrl-C quits with status 0 and leaves the terminal as it was (the
//! main screen back, canonical mode on).
//!
//! Where: the host run only (`TRACER_TEST_HOST=1`, the kernel's first backend), where `cargo
//! xtask setup` installs tmux and `cargo xtask test` builds `nettrace` and names it in
//! `TRACER_TEST_NETTRACE`; the VMs have neither, and the view does not depend on the kernel.
//! By hand: `TRACER_TEST_NETTRACE=$PWD/target/debug/nettrace` after `cargo build -p nettrace`.
//! Cost: about 10 s (nettrace's own load, then a few refreshes).

use std::{
    net::TcpListener,
    process::Command,
    time::{Duration, Instant},
};

use tracer_integration::{
    netns::in_fresh_netns,
    policy::{self, first_backend_of_kernel},
    protocols::{echo, ends, random_bytes},
};

/// A tmux server of its own (`-L`), killed on drop with its session.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn command(&self) -> Command {
        let mut tmux = Command::new("tmux");
        tmux.args(["-L", &self.socket]);
        tmux
    }

    fn run(&self, args: &[&str]) -> String {
        let out = self
            .command()
            .args(args)
            .output()
            .expect("tmux is installed by cargo xtask setup");
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn screen(&self) -> Vec<String> {
        self.run(&["capture-pane", "-p", "-t", "view"])
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn keys(&self, keys: &str) {
        self.run(&["send-keys", "-t", "view", keys]);
    }

    /// Polls the screen until `done` holds; panics with the last screen after `timeout`.
    fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&[String]) -> bool,
    ) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let screen = self.screen();
            if done(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; the screen:\n{}",
                screen.join("\n")
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.command().arg("kill-server").output();
    }
}

/// The table: its title line's index in `screen`, and the cell under `title` in line `row`
/// (cells are left-aligned under their titles).
fn cell(screen: &[String], header: usize, row: usize, title: &str) -> String {
    let header: Vec<char> = screen[header].chars().collect();
    let line: Vec<char> = screen[row].chars().collect();
    let mut starts = Vec::new();
    let mut i = 0;
    while i < header.len() {
        if header[i] != ' ' && (i == 0 || header[i - 1] == ' ') {
            let end = header[i..]
                .iter()
                .position(|&c| c == ' ')
                .map_or(header.len(), |n| i + n);
            starts.push((i, header[i..end].iter().collect::<String>()));
        }
        i += 1;
    }
    let at = starts
        .iter()
        .position(|(_, t)| t == title)
        .unwrap_or_else(|| panic!("no column {title} in {:?}", screen[row]));
    let start = starts[at].0;
    let end = starts.get(at + 1).map_or(line.len(), |(s, _)| *s);
    line[start.min(line.len())..end.min(line.len())]
        .iter()
        .collect::<String>()
        .trim()
        .to_owned()
}

fn header_index(screen: &[String], first_title: &str) -> usize {
    screen
        .iter()
        .position(|l| l.starts_with(first_title))
        .unwrap_or_else(|| panic!("no table header; the screen:\n{}", screen.join("\n")))
}

/// The first line whose cell under `title` is `value`.
fn row_where(screen: &[String], header: usize, title: &str, value: &str) -> Option<usize> {
    (header + 1..screen.len()).find(|&i| cell(screen, header, i, title) == value)
}

/// The line whose LOCAL cell is `local`.
fn row_of(screen: &[String], header: usize, local: &str) -> Option<usize> {
    row_where(screen, header, "LOCAL", local)
}

#[test]
fn live_view_in_tmux_shows_known_connections_sorts_groups_and_restores_the_terminal() {
    if std::env::var("TRACER_TEST_HOST").is_ok_and(|v| v == "1") {
        if !first_backend_of_kernel("nettrace's live view") {
            return;
        }
    } else {
        eprintln!("SKIP: the live view's test runs on the host (tmux is not in the VMs)");
        return;
    }
    let nettrace = tracer_integration::nettrace::bin();

    let tmux = Tmux {
        socket: format!("tracer-test-{}", std::process::id()),
    };
    let pid = std::process::id().to_string();
    // After nettrace exits, the pane shows its status and whether the terminal is back in
    // canonical mode (`stty -a` prints `icanon`, or `-icanon` if raw mode were left on).
    let script = format!(
        "'{}' --pid {pid} --backend {} --interval 0.5; echo \"nettrace exited $?\"; \
         stty -a | tr ' ' '\\n' | grep -x -- '-\\?icanon'; sleep 600",
        nettrace.display(),
        policy::backend(),
    );
    tmux.run(&[
        "new-session",
        "-d",
        "-s",
        "view",
        "-x",
        "230",
        "-y",
        "40",
        "sh",
        "-c",
        &script,
    ]);
    tmux.wait_for("the view's header", Duration::from_secs(60), |s| {
        s.iter().any(|l| l.contains("connections tracked"))
    });

    // Two echo connections of this process: each end sends and receives exactly this much.
    const BIG: usize = 3 << 20; // "3.0 MiB"
    const SMALL: usize = 300 << 10; // "300.0 KiB"
    let (big, small) = in_fresh_netns(|| {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let big = echo(&listener, random_bytes(BIG, 1), 64 << 10);
        let small = echo(&listener, random_bytes(SMALL, 2), 64 << 10);
        (big, small)
    });
    let big_local = ends(&big.0).0.to_string();
    let small_local = ends(&small.0).0.to_string();

    let screen = tmux.wait_for(
        "both clients with their totals",
        Duration::from_secs(20),
        |s| {
            let Some(h) = s.iter().position(|l| l.starts_with("PROCESS")) else {
                return false;
            };
            [(&big_local, "3.0 MiB"), (&small_local, "300.0 KiB")]
                .iter()
                .all(|(local, total)| {
                    row_of(s, h, local).is_some_and(|r| {
                        cell(s, h, r, "TX") == *total && cell(s, h, r, "RX") == *total
                    })
                })
        },
    );
    let h = header_index(&screen, "PROCESS");
    // The server's ends: both have the listener's address; each has its client as the remote.
    let server_addr = ends(&big.0).1.to_string();
    for client in [&big_local, &small_local] {
        let c = row_of(&screen, h, client).unwrap();
        let s = row_where(&screen, h, "REMOTE", client)
            .unwrap_or_else(|| panic!("no server row for {client}:\n{}", screen.join("\n")));
        for r in [c, s] {
            assert_eq!(cell(&screen, h, r, "PID"), pid, "{}", screen[r]);
            assert_eq!(cell(&screen, h, r, "PROTO"), "tcp", "{}", screen[r]);
            assert_eq!(cell(&screen, h, r, "STATE"), "open", "{}", screen[r]);
            // An echo: each end sent what it received.
            assert_eq!(
                cell(&screen, h, r, "TX"),
                cell(&screen, h, r, "RX"),
                "{}",
                screen[r]
            );
        }
        assert_eq!(cell(&screen, h, c, "DIR"), "out", "{}", screen[c]);
        assert_eq!(cell(&screen, h, c, "REMOTE"), server_addr, "{}", screen[c]);
        assert_eq!(cell(&screen, h, s, "DIR"), "in", "{}", screen[s]);
        assert_eq!(cell(&screen, h, s, "LOCAL"), server_addr, "{}", screen[s]);
        assert_eq!(
            cell(&screen, h, s, "TX"),
            cell(&screen, h, c, "TX"),
            "{}",
            screen[s]
        );
    }

    // Sort by bytes: the big connection's two ends first; the same key again: least first.
    tmux.keys("b");
    let screen = tmux.wait_for("sort by bytes", Duration::from_secs(5), |s| {
        s.iter().any(|l| l.contains("sort: bytes (most first)"))
    });
    let h = header_index(&screen, "PROCESS");
    let (big_row, small_row) = (
        row_of(&screen, h, &big_local).unwrap(),
        row_of(&screen, h, &small_local).unwrap(),
    );
    assert!(
        big_row <= h + 2 && small_row > h + 2,
        "{}",
        screen.join("\n")
    );
    tmux.keys("b");
    let screen = tmux.wait_for("least first", Duration::from_secs(5), |s| {
        s.iter().any(|l| l.contains("sort: bytes (least first)"))
    });
    let h = header_index(&screen, "PROCESS");
    let (big_row, small_row) = (
        row_of(&screen, h, &big_local).unwrap(),
        row_of(&screen, h, &small_local).unwrap(),
    );
    assert!(small_row < big_row, "{}", screen.join("\n"));

    // Group by process: one line, this process, its four sockets.
    tmux.keys("g");
    let screen = tmux.wait_for("grouping by process", Duration::from_secs(5), |s| {
        s.iter().any(|l| l.contains("view: by process"))
    });
    let h = header_index(&screen, "PROCESS");
    assert_eq!(cell(&screen, h, h + 1, "PID"), pid, "{}", screen.join("\n"));
    assert_eq!(
        cell(&screen, h, h + 1, "CONNS"),
        "4",
        "{}",
        screen.join("\n")
    );
    // 2 × (3 MiB + 300 KiB) each way.
    assert_eq!(
        cell(&screen, h, h + 1, "TX"),
        "6.6 MiB",
        "{}",
        screen[h + 1]
    );

    // Ctrl-C (a key in raw mode) quits; the shell's lines show on the main screen.
    tmux.keys("C-c");
    let screen = tmux.wait_for("nettrace's exit", Duration::from_secs(10), |s| {
        s.iter().any(|l| l.starts_with("nettrace exited"))
    });
    assert!(
        screen.iter().any(|l| l == "nettrace exited 0"),
        "{}",
        screen.join("\n")
    );
    assert!(
        screen.iter().any(|l| l == "icanon"),
        "the terminal was left in raw mode:\n{}",
        screen.join("\n")
    );
    assert!(
        screen
            .iter()
            .any(|l| l.starts_with("nettrace: attached with")),
        "the main screen is back with what was printed before the view:\n{}",
        screen.join("\n")
    );
    assert!(
        !screen.iter().any(|l| l.contains("connections tracked")),
        "the view is still on screen:\n{}",
        screen.join("\n")
    );
    drop((big, small));
}
