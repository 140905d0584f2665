//! `cargo xtask test`: everything CI checks, in order, never stopping at a failure but recording
//! each one, then a summary (table + target/xtask/test-summary.json) and a non-zero exit if anything
//! failed.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::console;
use crate::initramfs;
use crate::kernels::{self, CachedKernel, HOST_BACKENDS};
use crate::libtest::{self, Counts};
use crate::summary::{Run, Summary};
use crate::{cmd, paths, qemu, setup};

/// Per run of the test binary, on the host and in a VM: a hung test must not eat CI's budget.
const DEFAULT_TIMEOUT_SECS: u64 = 15 * 60;

/// Booting and loading modules under TCG on a busy machine: seconds usually, minutes at worst.
const VM_BOOT_MARGIN: Duration = Duration::from_secs(300);

fn timeout() -> Duration {
    let secs = std::env::var("XTASK_TIMEOUT_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_TIMEOUT_SECS);
    Duration::from_secs(secs)
}

pub fn run(host_only: bool) -> Result<bool> {
    let root = paths::workspace_root();
    let mut summary = Summary::default();

    match setup::run() {
        Ok(()) => summary.step("setup", true, ""),
        Err(err) => {
            println!("xtask: setup failed: {err:#}");
            summary.step("setup", false, format!("{err:#}"));
        }
    }

    if std::env::var_os("XTASK_SKIP_CHECKS").is_some() {
        println!("xtask: XTASK_SKIP_CHECKS is set: skipping fmt, clippy and unit tests");
    } else {
        checks(&root, &mut summary);
    }

    let binary = match test_binary(&root) {
        Ok(binary) => {
            summary.step("build integration tests", true, "");
            Some(binary)
        }
        Err(err) => {
            println!("xtask: cannot build the integration tests: {err:#}");
            summary.step("build integration tests", false, format!("{err:#}"));
            None
        }
    };
    if let Some(binary) = binary {
        let host = host_release();
        for backend in HOST_BACKENDS {
            println!("xtask: integration tests on the host ({host}), backend {backend}");
            summary.runs.push(host_run(&root, &binary, &host, backend));
        }
        if !host_only {
            vm_runs(&binary, &mut summary);
        }
    }

    println!();
    print!("{}", summary.table());
    let json = paths::xtask_out().join("test-summary.json");
    match summary.write_json(&json) {
        Ok(()) => println!("xtask: wrote {}", json.display()),
        Err(err) => {
            println!("xtask: {err:#}");
            summary.step("write summary", false, format!("{err:#}"));
        }
    }
    println!("{}", summary.totals_line());
    Ok(summary.ok())
}

fn checks(root: &Path, summary: &mut Summary) {
    let cargo = || {
        let mut c = Command::new("cargo");
        c.current_dir(root);
        c
    };
    let mut fmt = cargo();
    fmt.args(["fmt", "--all", "--check"]);
    step(summary, "fmt", &mut fmt);

    let mut clippy = cargo();
    clippy.args([
        "clippy",
        "--workspace",
        "--exclude",
        "tracer-ebpf",
        "--all-targets",
    ]);
    clippy.args(["--", "-D", "warnings"]);
    step(summary, "clippy", &mut clippy);

    // The eBPF crate only builds for the BPF target with a nightly core; from its own directory so
    // cargo applies its manifest as the package to check.
    let mut clippy_ebpf = Command::new("cargo");
    clippy_ebpf
        .current_dir(root.join("tracer-ebpf"))
        .args([
            "+nightly",
            "clippy",
            "--release",
            "--target",
            "bpfel-unknown-none",
        ])
        .args(["-Z", "build-std=core", "--", "-D", "warnings"]);
    step(summary, "clippy eBPF", &mut clippy_ebpf);

    let mut unit = cargo();
    unit.args([
        "test",
        "--workspace",
        "--exclude",
        "tracer-integration",
        "--exclude",
        "tracer-ebpf",
    ]);
    step(summary, "unit tests", &mut unit);
}

fn step(summary: &mut Summary, name: &str, command: &mut Command) {
    println!("xtask: step {name}");
    match cmd::status(command) {
        Ok(st) if st.success() => summary.step(name, true, ""),
        Ok(st) => summary.step(name, false, st.to_string()),
        Err(err) => summary.step(name, false, format!("{err:#}")),
    }
}

/// The integration test executable: built with cargo, or XTASK_TEST_BINARY (a debugging aid).
fn test_binary(root: &Path) -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("XTASK_TEST_BINARY") {
        let path = PathBuf::from(path);
        println!(
            "xtask: XTASK_TEST_BINARY is set: using {} as the integration test binary",
            path.display()
        );
        if !path.is_file() {
            bail!("XTASK_TEST_BINARY={} is not a file", path.display());
        }
        return Ok(path);
    }
    let mut build = Command::new("cargo");
    build
        .current_dir(root)
        .args([
            "test",
            "-p",
            "tracer-integration",
            "--no-run",
            "--message-format=json",
        ])
        .stderr(Stdio::inherit());
    cmd::announce(&build);
    let out = build.output().context("starting cargo")?;
    if !out.status.success() {
        bail!("cargo test --no-run failed ({})", out.status);
    }
    find_test_executable(&String::from_utf8_lossy(&out.stdout)).context(
        "cargo built no test target for tracer-integration (is tests/tests/integration.rs there?)",
    )
}

/// The parts of cargo's `--message-format=json` lines this needs.
#[derive(serde::Deserialize)]
struct Message {
    reason: String,
    target: Option<Target>,
    executable: Option<PathBuf>,
}

#[derive(serde::Deserialize)]
struct Target {
    kind: Vec<String>,
    name: String,
}

/// From cargo's JSON messages: the executable of the `test`-kind artifact, preferring the target
/// named `integration`.
fn find_test_executable(messages: &str) -> Option<PathBuf> {
    let mut found: Vec<(String, PathBuf)> = Vec::new();
    for line in messages.lines() {
        let Ok(msg) = serde_json::from_str::<Message>(line) else {
            continue;
        };
        if let (Some(target), Some(exe)) = (msg.target, msg.executable)
            && msg.reason == "compiler-artifact"
            && target.kind.iter().any(|k| k == "test")
        {
            found.push((target.name, exe));
        }
    }
    let preferred = found.iter().position(|(name, _)| name == "integration");
    let (_, exe) = found.into_iter().nth(preferred.unwrap_or(0))?;
    Some(exe)
}

fn host_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|r| r.trim().to_owned())
        .unwrap_or_else(|_| "host".to_owned())
}

fn host_run(root: &Path, binary: &Path, kernel: &str, backend: &str) -> Run {
    let mut test = Command::new(binary);
    test.arg("--test-threads=1")
        .env("TRACER_TEST_STRICT", "1")
        .env("TRACER_TEST_BACKEND", backend)
        .env("RUST_BACKTRACE", "1")
        // Where `cargo test` would run it: the package's directory.
        .current_dir(root.join("tests"));
    let (counts, status) = match cmd::tee(&mut test, "", timeout()) {
        Ok(run) if run.timed_out => {
            let counts = libtest::parse(&run.output).unwrap_or_default();
            let timeout = format!("FAILED (timed out after {}s)", run.elapsed.as_secs());
            (
                Counts {
                    failed: counts.failed.max(1),
                    ..counts
                },
                timeout,
            )
        }
        Ok(run) => {
            let (counts, verdict) =
                libtest::judge(&run.output, run.status.success(), &run.status.to_string());
            (counts, verdict.describe())
        }
        Err(err) => (
            Counts {
                failed: 1,
                ..Counts::default()
            },
            format!("FAILED ({err:#})"),
        ),
    };
    Run {
        kernel: kernel.to_owned(),
        backend: backend.to_owned(),
        counts,
        status,
    }
}

fn vm_runs(binary: &Path, summary: &mut Summary) {
    let only: Option<Vec<String>> = std::env::var("XTASK_KERNELS")
        .ok()
        .map(|s| s.split(',').map(|k| k.trim().to_owned()).collect());
    let mut boot_lines = Vec::new();
    for (vm, located) in kernels::cached() {
        if only
            .as_ref()
            .is_some_and(|only| !only.iter().any(|k| k == vm.label))
        {
            continue;
        }
        let step_name = format!("vm {}", vm.label);
        let kernel = match located {
            Ok(kernel) => kernel,
            Err(err) => {
                let why = format!("kernel not in the cache: {err:#}");
                fail_all(summary, vm.package, vm.backends, &why);
                summary.step(&step_name, false, why);
                continue;
            }
        };
        match vm_run(binary, &kernel, timeout()) {
            Ok((runs, report, failure)) => {
                summary.runs.extend(runs);
                match failure {
                    None => summary.step(&step_name, true, ""),
                    Some(why) => summary.step(&step_name, false, why),
                }
                boot_lines.push(report);
            }
            Err(err) => {
                let why = format!("{err:#}");
                fail_all(summary, &kernel.release, kernel.backends, &why);
                summary.step(&step_name, false, why);
            }
        }
    }
    for line in boot_lines {
        println!("xtask: {line}");
    }
}

fn fail_all(summary: &mut Summary, kernel: &str, backends: &[&str], why: &str) {
    for backend in backends {
        summary.runs.push(Run {
            kernel: kernel.to_owned(),
            backend: (*backend).to_owned(),
            counts: Counts {
                failed: 1,
                ..Counts::default()
            },
            status: format!("FAILED ({why})"),
        });
    }
}

/// Builds the image, boots it and reads the console. Returns the runs, a one-line report of the
/// boot (time, modules) and why the VM did not get through its whole /init, if it did not.
fn vm_run(
    binary: &Path,
    kernel: &CachedKernel,
    timeout: Duration,
) -> Result<(Vec<Run>, String, Option<String>)> {
    let image = initramfs::image_path(kernel);
    println!("xtask: building {} for {}", image.display(), kernel.release);
    let built = initramfs::build(kernel, binary, timeout.as_secs(), &image)
        .with_context(|| format!("building the initramfs for {}", kernel.release))?;
    println!(
        "xtask: initramfs {:.1} MiB, {} libraries, modules: {} (not modules here: {})",
        built.bytes as f64 / (1024.0 * 1024.0),
        built.libraries,
        built.modules.len(),
        built.not_modules.join(" "),
    );
    // Each run has `timeout` inside the VM; the VM as a whole gets them all plus time to boot.
    let runs = u32::try_from(kernel.backends.len()).unwrap_or(u32::MAX);
    let vm_deadline = timeout.saturating_mul(runs) + VM_BOOT_MARGIN;
    let boot = qemu::boot(kernel.label, &kernel.vmlinuz, &image, vm_deadline)?;
    let parsed = console::parse(&boot.console);
    let release = parsed
        .kernel
        .clone()
        .unwrap_or_else(|| kernel.release.clone());
    let mut runs = Vec::new();
    for backend in kernel.backends {
        let (counts, status) = match parsed.run(backend) {
            Some(out) => match out.status {
                Some(code) => {
                    // busybox `timeout -s KILL` makes a hung run exit 137.
                    let how = if code == 137 {
                        format!(
                            "status 137, killed after the {}s timeout?",
                            timeout.as_secs()
                        )
                    } else {
                        format!("status {code}")
                    };
                    let (counts, verdict) = libtest::judge(&out.output, code == 0, &how);
                    (counts, verdict.describe())
                }
                None => {
                    let counts = libtest::parse(&out.output).unwrap_or_default();
                    let why = if boot.timed_out {
                        "timed out"
                    } else {
                        "no end marker: VM died"
                    };
                    (
                        Counts {
                            failed: counts.failed.max(1),
                            ..counts
                        },
                        format!("FAILED ({why})"),
                    )
                }
            },
            None => {
                let why = if boot.timed_out {
                    "timed out before it started"
                } else {
                    "never started"
                };
                (
                    Counts {
                        failed: 1,
                        ..Counts::default()
                    },
                    format!("FAILED ({why})"),
                )
            }
        };
        runs.push(Run {
            kernel: release.clone(),
            backend: (*backend).to_owned(),
            counts,
            status,
        });
    }
    let failure = if boot.timed_out {
        Some(format!("timed out after {}s", boot.elapsed.as_secs()))
    } else if !parsed.done {
        Some(format!("/init did not finish (qemu {})", boot.exit))
    } else {
        None
    };
    let report = format!(
        "VM {} ({release}): {} in {:.1}s, qemu {}; modules loaded: [{}]; insmod failed: [{}]",
        kernel.label,
        failure.as_deref().unwrap_or("booted, ran /init to the end"),
        boot.elapsed.as_secs_f64(),
        boot.exit,
        parsed.modules_loaded.join(" "),
        parsed.modules_failed.join("; "),
    );
    Ok((runs, report, failure))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_integration_executable() {
        let messages = r#"{"reason":"compiler-artifact","target":{"kind":["lib"],"name":"tracer_integration"},"executable":null}
{"reason":"compiler-artifact","target":{"kind":["lib"],"name":"tracer_integration"},"profile":{"test":true},"executable":"/t/debug/deps/tracer_integration-1"}
{"reason":"compiler-artifact","target":{"kind":["test"],"name":"other"},"executable":"/t/debug/deps/other-2"}
{"reason":"compiler-artifact","target":{"kind":["test"],"name":"integration"},"executable":"/t/debug/deps/integration-3"}
{"reason":"build-finished","success":true}"#;
        assert_eq!(
            find_test_executable(messages),
            Some(PathBuf::from("/t/debug/deps/integration-3"))
        );
        assert_eq!(find_test_executable(r#"{"reason":"build-finished"}"#), None);
    }
}
