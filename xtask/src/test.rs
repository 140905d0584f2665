//! `cargo xtask test`: everything CI checks, in order, never stopping at a failure but recording
//! each one, then a summary (table + target/xtask/test-summary.json) and a non-zero exit if anything
//! failed.

use std::path::Path;
use std::process::Command;

use anyhow::Result;

use crate::kernels::HOST_BACKENDS;
use crate::knobs::{filter, timeout};
use crate::libtest::{self, Counts};
use crate::summary::{Run, Summary};
use crate::{cmd, fuzz, paths, setup, test_binary, vm};

/// The soak's length in `cargo xtask test` (issue 14: CI runs 2 minutes of it).
const CI_SOAK_MINUTES: f64 = 2.0;

pub fn run(host_only: bool, vm_only: bool) -> Result<bool> {
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

    let binary = match test_binary::locate(&root) {
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
    // The tests of the live view and of `nettrace serve` drive the real `nettrace` binary, on the
    // host (tmux, Prometheus and the OTLP receiver are not in the VMs).
    let nettrace = if binary.is_some() && !vm_only {
        match test_binary::nettrace(&root) {
            Ok(path) => {
                summary.step("build nettrace", true, "");
                Some(path)
            }
            Err(err) => {
                println!("xtask: cannot build nettrace: {err:#}");
                summary.step("build nettrace", false, format!("{err:#}"));
                None
            }
        }
    } else {
        None
    };
    if let Some(binary) = binary {
        let host = host_release();
        let host_backends: &[&str] = if vm_only { &[] } else { HOST_BACKENDS };
        for (i, backend) in host_backends.iter().enumerate() {
            println!("xtask: integration tests on the host ({host}), backend {backend}");
            summary.runs.push(host_run(
                &root,
                &binary,
                nettrace.as_deref(),
                &host,
                backend,
                i == 0,
            ));
        }
        // Two minutes of the soak (`cargo xtask soak`) on the host, after its tests and before
        // the VMs (which would take the CPU its churn runs on): every byte and end per client
        // exactly, or the loss counters say by how much; no error; the idle client expired;
        // descriptors flat. RSS is checked in runs of 5 minutes or more only.
        if !vm_only {
            match crate::soak::run_with(&binary, CI_SOAK_MINUTES) {
                Ok(passed) => summary.step(
                    &format!("soak ({CI_SOAK_MINUTES} min)"),
                    passed,
                    if passed {
                        ""
                    } else {
                        "see the soak's output above"
                    },
                ),
                Err(err) => summary.step(
                    &format!("soak ({CI_SOAK_MINUTES} min)"),
                    false,
                    format!("{err:#}"),
                ),
            }
        }
        if !host_only {
            vm::run_all(&binary, &mut summary);
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

    // Every fuzz target briefly (about 30 s in all, plus the build): replays the seed corpus,
    // regression inputs included, and fails on a crash.
    println!("xtask: step fuzz (short)");
    match fuzz::run_short() {
        Ok(ok) => summary.step(
            "fuzz (short)",
            ok,
            if ok { "" } else { "a fuzz target crashed" },
        ),
        Err(err) => summary.step("fuzz (short)", false, format!("{err:#}")),
    }
}

fn step(summary: &mut Summary, name: &str, command: &mut Command) {
    println!("xtask: step {name}");
    match cmd::status(command) {
        Ok(st) if st.success() => summary.step(name, true, ""),
        Ok(st) => summary.step(name, false, st.to_string()),
        Err(err) => summary.step(name, false, format!("{err:#}")),
    }
}

fn host_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|r| r.trim().to_owned())
        .unwrap_or_else(|_| "host".to_owned())
}

fn host_run(
    root: &Path,
    binary: &Path,
    nettrace: Option<&Path>,
    kernel: &str,
    backend: &str,
    first: bool,
) -> Run {
    let mut test = Command::new(binary);
    test.arg("--test-threads=1")
        .args(libtest::REPORT_TIME)
        .env("RUSTC_BOOTSTRAP", "1");
    // Tests that do not depend on the attach backend run with the kernel's first one only.
    test.env("TRACER_TEST_FIRST_BACKEND", if first { "1" } else { "0" });
    // The host run is where real servers (nginx, iperf3) are installed: tests that drive them
    // must find them there, and leave the VM runs to the project's own servers.
    test.env("TRACER_TEST_HOST", "1");
    if let Some(nettrace) = nettrace {
        test.env("TRACER_TEST_NETTRACE", nettrace);
    }
    if let Some(filter) = filter() {
        test.arg(filter);
    }
    test.env("TRACER_TEST_STRICT", "1")
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
            if let Some(line) = libtest::slowest_line(&run.output) {
                println!("xtask: host {backend}: {line}");
            }
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
