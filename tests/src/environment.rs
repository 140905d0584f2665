//! Running the tracer in other environments than the test's own: as a non-root user holding a
//! chosen capability set (`setpriv`), or under `ip netns exec` (a fresh /sys without the cgroup
//! v2 and tracefs mounts). The test binary re-executes itself in a child mode
//! (`environment::child`, selected by [`CHILD_ENV`]) and the parent asserts on the line the child
//! prints ([`RESULT`]).

use std::{
    collections::BTreeMap,
    ffi::OsString,
    os::unix::process::CommandExt,
    path::Path,
    process::{Command, Output},
    sync::atomic::{AtomicU32, Ordering},
};

use tracer::{KernelVersion, kernel::plan::Backend};

use crate::cmd::ip;

/// Selects the child mode of the re-executed test binary.
pub const CHILD_ENV: &str = "TRACER_ENV_CHILD";
/// Prefix of the child's result line: `key=value` pairs follow, separated by spaces.
pub const RESULT: &str = "ENV-CHILD-RESULT";
/// RLIMIT_MEMLOCK of every child.
pub const CHILD_MEMLOCK_BYTES: libc::rlim_t = 64 * 1024;
/// The unprivileged user the children run as (`nobody`).
pub const NOBODY: u32 = 65_534;

/// The capability set the README and `nettrace --help` document for `backend` on `kernel`, as
/// setpriv names them (CAP_ prefix dropped, lower case).
pub fn documented_caps(backend: Backend, kernel: KernelVersion) -> Vec<&'static str> {
    let mut caps = vec!["bpf", "perfmon", "net_admin"];
    if backend == Backend::Kprobe {
        // The kretprobes are created by writing tracefs kprobe_events (mode 0640 root); the
        // capability also grants reading the root-only tracefs.
        caps.push("dac_override");
    } else {
        // Reading the root-only (mode 700) tracefs.
        caps.push("dac_read_search");
    }
    if kernel < KernelVersion::new(5, 11, 0) {
        // Maps are charged to RLIMIT_MEMLOCK; aya raises it, which needs this capability.
        caps.push("sys_resource");
    }
    if perf_event_paranoid() > 2 {
        // Debian's paranoid level 3 (its default): perf_event_open needs CAP_SYS_ADMIN.
        caps.push("sys_admin");
    }
    caps
}

/// Sets `kernel.perf_event_paranoid` to `level` until dropped, then restores it.
pub struct ParanoidLevel {
    previous: i32,
}

impl ParanoidLevel {
    pub fn set(level: i32) -> Self {
        let previous = perf_event_paranoid();
        write_paranoid(level);
        Self { previous }
    }
}

impl Drop for ParanoidLevel {
    fn drop(&mut self) {
        write_paranoid(self.previous);
    }
}

fn write_paranoid(level: i32) {
    std::fs::write("/proc/sys/kernel/perf_event_paranoid", level.to_string())
        .expect("write kernel.perf_event_paranoid");
}

/// `kernel.perf_event_paranoid` (2, mainline's default, when unreadable).
pub fn perf_event_paranoid() -> i32 {
    std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid")
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(2)
}

/// Capability numbers (include/uapi/linux/capability.h) of the names [`documented_caps`] uses.
pub fn cap_number(name: &str) -> u32 {
    match name {
        "dac_override" => 1,
        "dac_read_search" => 2,
        "net_admin" => 12,
        "sys_admin" => 21,
        "sys_resource" => 24,
        "perfmon" => 38,
        "bpf" => 39,
        other => panic!("no capability number for {other}"),
    }
}

/// The `CapEff` mask a process holding exactly `caps` has.
pub fn cap_mask(caps: &[&str]) -> u64 {
    caps.iter()
        .fold(0, |mask, cap| mask | (1u64 << cap_number(cap)))
}

/// The calling process's effective capability mask and effective uid, from /proc/self/status.
pub fn own_caps_and_uid() -> (u64, u32) {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in /proc/self/status"))
            .trim()
            .to_owned()
    };
    let caps = u64::from_str_radix(&field("CapEff:"), 16).expect("CapEff hex");
    // Uid: real effective saved fs
    let uid = field("Uid:")
        .split_whitespace()
        .nth(1)
        .expect("effective uid")
        .parse()
        .expect("uid");
    (caps, uid)
}

/// `setpriv` arguments that run a command as [`NOBODY`] holding exactly `caps` (inheritable,
/// ambient and bounding sets), so that the re-executed, non-setuid test binary has them
/// effective.
pub fn setpriv_args(caps: &[&str]) -> Vec<String> {
    let list = caps.iter().map(|c| format!(",+{c}")).collect::<String>();
    vec![
        "setpriv".to_owned(),
        format!("--reuid={NOBODY}"),
        format!("--regid={NOBODY}"),
        "--clear-groups".to_owned(),
        format!("--inh-caps=-all{list}"),
        format!("--ambient-caps=-all{list}"),
        format!("--bounding-set=-all{list}"),
        "--".to_owned(),
    ]
}

/// Runs this test binary's `environment::child` test in child mode `mode`, behind `wrapper`
/// (e.g. setpriv's or `ip netns exec`'s arguments), with `env` added; returns its output after
/// printing it (so that a failing parent shows what the child said).
pub fn run_child(wrapper: &[String], mode: &str, env: &[(&str, OsString)]) -> Output {
    let exe = std::env::current_exe().expect("current_exe");
    let (program, args) = match wrapper.split_first() {
        Some((program, args)) => (OsString::from(program), args.to_vec()),
        None => (exe.clone().into_os_string(), Vec::new()),
    };
    let mut command = Command::new(&program);
    command.args(args);
    if !wrapper.is_empty() {
        command.arg(&exe);
    }
    command
        .args([
            "--exact",
            "environment::child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, mode);
    for (key, value) in env {
        command.env(key, value);
    }
    // The child starts from a fixed RLIMIT_MEMLOCK (64 KiB, the kernel's default before 5.16)
    // rather than this process's: aya raises ours to unlimited once this process has loaded a
    // tracer below 5.11, and a child inheriting that would not show what CAP_SYS_RESOURCE is
    // needed for. From 5.11 on the limit does not apply to BPF.
    // SAFETY: setrlimit is async-signal-safe; the closure touches nothing else.
    unsafe {
        command.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: CHILD_MEMLOCK_BYTES,
                rlim_max: CHILD_MEMLOCK_BYTES,
            };
            if libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("running {program:?} (child mode {mode}): {e}"));
    println!(
        "--- child {mode} ({}) stdout:\n{}--- stderr:\n{}---",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// The `key=value` pairs of the child's [`RESULT`] line; panics (with the child's output) when
/// the child failed or printed none.
pub fn child_result(output: &Output) -> BTreeMap<String, String> {
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the child failed ({}): see its output above",
        output.status
    );
    // With --nocapture libtest's "test environment::child ... " may precede it on its line.
    let line = stdout
        .lines()
        .find_map(|l| l.find(RESULT).map(|at| &l[at + RESULT.len()..]))
        .unwrap_or_else(|| panic!("the child printed no {RESULT} line"));
    line.split_whitespace()
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// Prints the child's result line.
pub fn print_result(pairs: &[(&str, String)]) {
    let body: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!("{RESULT} {}", body.join(" "));
}

/// A named network namespace (`ip netns add`), deleted on drop.
pub struct NamedNetns {
    pub name: String,
}

static NETNS_COUNTER: AtomicU32 = AtomicU32::new(0);

impl NamedNetns {
    /// `ip netns add` with a name unique to this process and call.
    pub fn add() -> Self {
        let name = format!(
            "nttest-{}-{}",
            std::process::id(),
            NETNS_COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        ip(&["netns", "add", &name]);
        Self { name }
    }

    /// `ip netns exec NAME` as a wrapper for [`run_child`], followed by `then`.
    pub fn exec_wrapper(&self, then: &[String]) -> Vec<String> {
        let mut wrapper = vec![
            "ip".to_owned(),
            "netns".to_owned(),
            "exec".to_owned(),
            self.name.clone(),
        ];
        wrapper.extend_from_slice(then);
        wrapper
    }
}

impl Drop for NamedNetns {
    fn drop(&mut self) {
        let status = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .status();
        if !matches!(status, Ok(s) if s.success()) {
            eprintln!("ip netns delete {} failed: {status:?}", self.name);
        }
    }
}

/// A fresh directory owned by `uid`, for a child's TMPDIR; removed on drop.
pub struct OwnedTempDir {
    pub path: std::path::PathBuf,
}

impl OwnedTempDir {
    pub fn new(uid: u32) -> Self {
        let path = std::env::temp_dir().join(format!(
            "nttest-tmp-{}-{}",
            std::process::id(),
            NETNS_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir(&path).expect("create temp dir");
        std::os::unix::fs::chown(&path, Some(uid), Some(uid)).expect("chown temp dir");
        Self { path }
    }
}

impl Drop for OwnedTempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Mode bits of `path`.
pub fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).expect("stat").mode() & 0o7777
}
