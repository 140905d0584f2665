//! Crash safety and restarts (issue 14, part 3). A process holding a `Tracer` that is killed with
//! SIGKILL runs no destructor: whatever it attached must go with its descriptors. The kernel's
//! own program and link lists (BPF_PROG_GET_NEXT_ID / BPF_LINK_GET_NEXT_ID, through aya) show
//! that nothing of the killed process stays loaded or attached, that its cgroup programs were
//! attached by bpf_link (a legacy `BPF_PROG_ATTACH` outlives the process), and a tracer started
//! after the crash counts a known transfer exactly. Two tracers in two processes at once both
//! count the same transfers exactly.
//!
//! The child process is this test binary re-executed on [`child`] with [`CHILD_ENV`] set; it
//! talks to the parent over its stdin and stdout (lines starting with [`REPLY`]).

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    time::{Duration, Instant},
};

use aya_obj::generated::bpf_prog_type;
use tracer::{BackendChoice, Config, Error, Tracer, model::Protocol};
use tracer_integration::{
    netns::{current_netns_inode, in_fresh_netns},
    policy::{first_backend_of_kernel, loaded_or_skip},
    tracer::backend_under_test,
};

const CHILD_ENV: &str = "TRACER_CRASH_CHILD";
const REPLY: &str = "CRASH_CHILD";

fn config() -> Config {
    Config {
        backend: BackendChoice::Force(backend_under_test()),
        ..Config::default()
    }
}

/// Ids of the loaded BPF programs named like the tracer's (`nt_` prefix).
fn our_programs() -> BTreeSet<u32> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter(|p| p.name_as_str().is_some_and(|n| n.starts_with("nt_")))
        .map(|p| p.id())
        .collect()
}

/// Every BPF link of the kernel: (link id, program id).
fn links() -> Vec<(u32, u32)> {
    aya::programs::loaded_links()
        .filter_map(Result::ok)
        .map(|l| (l.id(), l.program_id()))
        .collect()
}

fn ids(text: &str) -> BTreeSet<u32> {
    text.split(',').filter_map(|s| s.parse().ok()).collect()
}

/// A TCP flow as seen from one end: (local, remote).
type Flow = (SocketAddr, SocketAddr);

/// Sends `out` bytes from a client to a server on loopback, which answers `back` bytes, then both
/// close. Returns each end's flow with what it sent and received: (flow, sent, received).
fn transfer(out: usize, back: usize) -> [(Flow, u64, u64); 2] {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("listener addr");
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().expect("accept");
        let mut buf = vec![0u8; out];
        conn.read_exact(&mut buf).expect("server read");
        conn.write_all(&vec![7u8; back]).expect("server write");
        let ends = (
            conn.local_addr().expect("addr"),
            conn.peer_addr().expect("peer"),
        );
        // The client closes first; reading to its EOF waits for it.
        let mut rest = Vec::new();
        conn.read_to_end(&mut rest).expect("server eof");
        assert!(rest.is_empty(), "the client sent more than {out} bytes");
        ends
    });
    let mut client = TcpStream::connect(addr).expect("connect");
    client.write_all(&vec![1u8; out]).expect("client write");
    let mut buf = vec![0u8; back];
    client.read_exact(&mut buf).expect("client read");
    let client_ends = (
        client.local_addr().expect("addr"),
        client.peer_addr().expect("peer"),
    );
    drop(client);
    let server_ends = server.join().expect("server thread");
    let (out, back) = (out as u64, back as u64);
    [(client_ends, out, back), (server_ends, back, out)]
}

/// What a tracer reports per TCP flow of namespace `netns`: (sent, received, closed), summed
/// over calls.
type Tally = BTreeMap<Flow, (u64, u64, bool)>;

/// Calls `client` on `tracer` until every flow of `expected` is reported closed (bounded: the
/// close travels through the ring and the consumer thread), summing what each call reports.
fn tally(tracer: &Tracer, client: &str, netns: u32, expected: &[Flow]) -> Tally {
    let mut seen = Tally::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let delta = tracer.get_active_connections(client).expect("call");
        for conn in delta
            .conns
            .iter()
            .filter(|c| c.tuple.netns == netns && c.tuple.protocol == Protocol::Tcp)
        {
            let flow = (
                SocketAddr::new(conn.tuple.src, conn.tuple.sport),
                SocketAddr::new(conn.tuple.dst, conn.tuple.dport),
            );
            let entry = seen.entry(flow).or_default();
            entry.0 += conn.last.sent_bytes;
            entry.1 += conn.last.recv_bytes;
            entry.2 |= conn.is_closed;
        }
        let all_closed = expected
            .iter()
            .all(|f| seen.get(f).is_some_and(|(_, _, closed)| *closed));
        if all_closed || Instant::now() > deadline {
            return seen;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Asserts that `seen` has exactly the bytes of every end of `moved`, closed.
fn assert_exact(who: &str, seen: &Tally, moved: &[(Flow, u64, u64)]) {
    for (flow, sent, received) in moved {
        assert_eq!(
            seen.get(flow).copied(),
            Some((*sent, *received, true)),
            "{who}: {flow:?} (sent, received, closed); everything seen: {seen:?}"
        );
    }
}

fn netns() -> u32 {
    u32::try_from(current_netns_inode().expect("netns inode")).expect("netns inode fits u32")
}

/// The child process: loads a tracer, reports its program and link ids, then answers commands
/// on stdin until it is told to exit or killed. Does nothing unless run as a child.
#[test]
#[ignore = "the child process of the crash tests; runs only when they start it"]
fn child() {
    let Ok(mode) = std::env::var(CHILD_ENV) else {
        return;
    };
    let before = our_programs();
    let tracer = match Tracer::new(config()) {
        Ok(tracer) => tracer,
        Err(Error::NotSupported { feature, .. }) => {
            println!("{REPLY} unsupported {feature}");
            return;
        }
        Err(other) => panic!("child ({mode}): load failed: {other} ({other:?})"),
    };
    tracer.register_client("child").expect("register");
    let programs: BTreeSet<u32> = our_programs().difference(&before).copied().collect();
    let join = |set: &mut dyn Iterator<Item = u32>| {
        set.map(|id| id.to_string()).collect::<Vec<_>>().join(",")
    };
    let link_ids = links()
        .into_iter()
        .filter(|(_, prog)| programs.contains(prog))
        .map(|(link, _)| link);
    println!(
        "{REPLY} ready progs={} links={}",
        join(&mut programs.iter().copied()),
        join(&mut link_ids.into_iter())
    );
    let netns = netns();
    for line in std::io::stdin().lock().lines() {
        let line = line.expect("stdin");
        let mut words = line.split_whitespace();
        match words.next() {
            // `transfer OUT BACK`: a known transfer of this process's own.
            Some("transfer") => {
                let mut n = || words.next().and_then(|w| w.parse().ok()).expect("a size");
                let (out, back) = (n(), n());
                for ((local, remote), sent, received) in transfer(out, back) {
                    println!("{REPLY} moved {local} {remote} {sent} {received}");
                }
                println!("{REPLY} done");
            }
            // `tally LOCAL>REMOTE ...`: what this tracer saw of the TCP flows of the namespace.
            Some("tally") => {
                let expected: Vec<Flow> = words
                    .filter_map(|w| {
                        let (l, r) = w.split_once('>')?;
                        Some((l.parse().ok()?, r.parse().ok()?))
                    })
                    .collect();
                for ((local, remote), (sent, received, closed)) in
                    tally(&tracer, "child", netns, &expected)
                {
                    println!("{REPLY} flow {local} {remote} {sent} {received} {closed}");
                }
                println!("{REPLY} done");
            }
            Some("exit") | None => break,
            Some(other) => panic!("child: unknown command {other}"),
        }
    }
    drop(tracer);
}

/// A running child and its pipes.
struct ChildTracer {
    process: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl ChildTracer {
    /// Starts the child (in the calling thread's network namespace) and waits until its tracer
    /// is loaded. `None` when the backend is not supported here (the skip policy then decides,
    /// by loading in this process).
    fn start(mode: &str) -> Option<(Self, BTreeSet<u32>, BTreeSet<u32>)> {
        let exe = std::env::current_exe().expect("current_exe");
        let mut process = Command::new(exe)
            .args([
                "--exact",
                "crash::child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, mode)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the child");
        let stdin = process.stdin.take().expect("child stdin");
        let stdout = BufReader::new(process.stdout.take().expect("child stdout"));
        let mut child = Self {
            process,
            stdin,
            stdout,
        };
        let ready = child.reply();
        if ready.starts_with("unsupported") {
            let _ = child.process.wait();
            let _ = loaded_or_skip(Tracer::new(config()));
            return None;
        }
        let mut fields = ready.split_whitespace();
        assert_eq!(fields.next(), Some("ready"), "child said {ready:?}");
        let mut field = |name: &str| {
            fields
                .next()
                .and_then(|f| f.strip_prefix(name))
                .map(ids)
                .unwrap_or_else(|| panic!("no {name} in {ready:?}"))
        };
        let programs = field("progs=");
        let links = field("links=");
        Some((child, programs, links))
    }

    /// The next line of the child that is meant for the parent (libtest's own lines skipped).
    fn reply(&mut self) -> String {
        loop {
            let mut line = String::new();
            let n = self.stdout.read_line(&mut line).expect("child stdout");
            assert!(n > 0, "the child ended without answering");
            if let Some(at) = line.find(REPLY) {
                return line[at + REPLY.len()..].trim().to_owned();
            }
        }
    }

    /// Sends a command; returns the child's lines up to its `done`.
    fn ask(&mut self, command: &str) -> Vec<String> {
        writeln!(self.stdin, "{command}").expect("child stdin");
        self.stdin.flush().expect("child stdin");
        let mut lines = Vec::new();
        loop {
            let line = self.reply();
            if line == "done" {
                return lines;
            }
            lines.push(line);
        }
    }
}

/// Programs and links of `programs` / `links` the kernel still has, after waiting (bounded) for
/// it to free them: it does so asynchronously after the last reference goes.
fn left_over(programs: &BTreeSet<u32>, links: &BTreeSet<u32>) -> (Vec<u32>, Vec<(u32, u32)>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let progs: Vec<u32> = our_programs().intersection(programs).copied().collect();
        let held: Vec<(u32, u32)> = self::links()
            .into_iter()
            .filter(|(link, prog)| links.contains(link) || programs.contains(prog))
            .collect();
        if (progs.is_empty() && held.is_empty()) || Instant::now() > deadline {
            return (progs, held);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The kretprobe events (kprobe backend) of process `pid` still defined in tracefs.
fn kprobe_events_of(pid: u32) -> Vec<String> {
    let prefix = format!("nettracer/nt{pid}_");
    [
        "/sys/kernel/tracing/kprobe_events",
        "/sys/kernel/debug/tracing/kprobe_events",
    ]
    .iter()
    .find_map(|path| std::fs::read_to_string(path).ok())
    .unwrap_or_default()
    .lines()
    .filter(|line| line.contains(&prefix))
    .map(str::to_owned)
    .collect()
}

#[test]
fn a_killed_tracer_leaves_nothing_attached_and_a_restart_counts_exactly() {
    in_fresh_netns(|| {
        let Some((mut child, programs, links)) = ChildTracer::start("hold") else {
            return;
        };
        let pid = child.process.id();
        assert!(!programs.is_empty(), "the child's tracer loaded programs");
        // Every cgroup program is attached by a bpf_link (a legacy attach has no link and
        // outlives the process); the others are held by their perf event or link descriptors.
        let all_links = self::links();
        for info in aya::programs::loaded_programs().filter_map(Result::ok) {
            if !programs.contains(&info.id()) {
                continue;
            }
            let cgroup = matches!(
                info.program_type(),
                bpf_prog_type::BPF_PROG_TYPE_CGROUP_SKB
                    | bpf_prog_type::BPF_PROG_TYPE_CGROUP_SOCK
                    | bpf_prog_type::BPF_PROG_TYPE_SOCK_OPS
                    | bpf_prog_type::BPF_PROG_TYPE_CGROUP_SOCK_ADDR
            );
            if cgroup {
                assert!(
                    all_links.iter().any(|(_, prog)| *prog == info.id()),
                    "cgroup program {:?} (id {}) is attached without a bpf_link",
                    info.name_as_str(),
                    info.id()
                );
            }
        }

        child.process.kill().expect("SIGKILL the child");
        let status = child.process.wait().expect("reap the child");
        assert!(!status.success(), "the child was killed: {status}");

        let (progs, held) = left_over(&programs, &links);
        assert!(
            progs.is_empty() && held.is_empty(),
            "after SIGKILL the kernel still has the child's programs {progs:?} and links              (link, program) {held:?}"
        );

        // A restart works and counts a known transfer exactly.
        let tracer = Tracer::new(config()).expect("restart after the crash");
        tracer.register_client("parent").expect("register");
        let moved = transfer(150_000, 4_000);
        let flows: Vec<Flow> = moved.iter().map(|(f, _, _)| *f).collect();
        let seen = tally(&tracer, "parent", netns(), &flows);
        assert_exact("the restarted tracer", &seen, &moved);
        // The kprobe backend's kretprobe events of the killed process were removed by the
        // restart (with no kprobe events at all, as on kernels without kprobes, none exist).
        let stale = kprobe_events_of(pid);
        assert!(
            stale.is_empty(),
            "kretprobe events of the killed tracer: {stale:?}"
        );
    });
}

#[test]
fn two_tracers_in_two_processes_both_count_each_transfer_exactly() {
    if !first_backend_of_kernel("two tracers in two processes") {
        return;
    }
    in_fresh_netns(|| {
        let Some((mut child, _, _)) = ChildTracer::start("count") else {
            return;
        };
        let tracer = Tracer::new(config()).expect("a second tracer beside the child's");
        tracer.register_client("parent").expect("register");
        // One transfer by each process, at the same time.
        let theirs = std::thread::scope(|scope| {
            let mine = scope.spawn(|| transfer(120_000, 3_000));
            let theirs: Vec<(Flow, u64, u64)> = child
                .ask("transfer 80000 9000")
                .iter()
                .map(|line| {
                    let f: Vec<&str> = line.split_whitespace().collect();
                    assert_eq!(f.first(), Some(&"moved"), "{line}");
                    let parse = |i: usize| f[i].parse::<u64>().expect("a count");
                    (
                        (f[1].parse().expect("local"), f[2].parse().expect("remote")),
                        parse(3),
                        parse(4),
                    )
                })
                .collect();
            let mine = mine.join().expect("my transfer");
            (mine, theirs)
        });
        let (mine, theirs) = theirs;
        assert_eq!(
            theirs.len(),
            2,
            "the child reports both ends of its transfer"
        );
        let moved: Vec<(Flow, u64, u64)> = mine.iter().chain(&theirs).copied().collect();
        let flows: Vec<Flow> = moved.iter().map(|(f, _, _)| *f).collect();

        let seen = tally(&tracer, "parent", netns(), &flows);
        assert_exact("the parent's tracer", &seen, &moved);

        let command: Vec<String> = flows.iter().map(|(l, r)| format!("{l}>{r}")).collect();
        let childs: Tally = child
            .ask(&format!("tally {}", command.join(" ")))
            .iter()
            .map(|line| {
                let f: Vec<&str> = line.split_whitespace().collect();
                assert_eq!(f.first(), Some(&"flow"), "{line}");
                (
                    (f[1].parse().expect("local"), f[2].parse().expect("remote")),
                    (
                        f[3].parse().expect("sent"),
                        f[4].parse().expect("received"),
                        f[5] == "true",
                    ),
                )
            })
            .collect();
        assert_exact("the child's tracer", &childs, &moved);

        writeln!(child.stdin, "exit").expect("child stdin");
        let status = child.process.wait().expect("child exit");
        assert!(status.success(), "the child failed: {status}");
    });
}
