//! `cargo xtask <cmd>`: the project's dev tooling. It prepares a machine (`setup`), runs every check CI
//! runs, including the privileged integration tests on the host and inside qemu on other kernels
//! (`test`), soaks the tracer under churn (`soak`), and wraps the benchmarks (`bench`) and the demo
//! binary (`demo`).
//!
//! Debugging aids (environment variables, read by `cargo xtask test` only):
//! - `XTASK_TEST_BINARY=/path`: run this executable instead of building the `tracer-integration` test
//!   binary (used to exercise the initramfs/qemu/summary machinery with a stand-in that prints a libtest
//!   result line).
//! - `XTASK_SKIP_CHECKS=1`: skip fmt, both clippy passes and the unit tests.
//! - `XTASK_KERNELS=5.10,6.12`: only boot these VM kernels (labels from src/kernels.rs).
//! - `XTASK_TEST_FILTER=name`: only run the integration tests whose names contain `name`.
//! - `XTASK_TIMEOUT_SECS=N`: timeout of each run of the test binary, on the host and in a VM
//!   (default 1800: a net for a hung test, not a budget; a backend's run takes 12-13 min in a
//!   VM on an idle host); a VM gets N per backend plus 300 s to boot.

mod bench;
mod cmd;
mod console;
mod cpio;
mod demo;
mod fuzz;
mod init_script;
mod initramfs;
mod kernels;
mod knobs;
mod ldd;
mod libtest;
mod modules;
mod paths;
mod qemu;
mod setup;
mod soak;
mod summary;
mod test;
mod test_binary;
mod tracefs;
mod vm;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Dev tooling of the tracer workspace")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what this machine lacks (toolchain parts, Debian packages, bpf-linker, VM kernels) and
    /// mount tracefs. Idempotent; needs root.
    Setup,
    /// Run setup, fmt, clippy (host + eBPF), unit tests, then the integration tests as root on the host
    /// and inside qemu on each VM kernel; print and write target/xtask/test-summary.json.
    Test {
        /// Skip the qemu runs on the VM kernels.
        #[arg(long)]
        host_only: bool,
        /// Skip the runs on the host (only the VM kernels, e.g. with `XTASK_KERNELS=6.1`).
        #[arg(long, conflicts_with = "host_only")]
        vm_only: bool,
    },
    /// Run `cargo bench -p tracer-benches` and print target/xtask/bench-summary.json.
    Bench {
        /// Extra arguments for `cargo bench` (after `--`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Build the cargo-fuzz targets of fuzz/ and run each for a bounded time from its seed corpus;
    /// fails on a crash (its input is left in fuzz/artifacts/<target>/).
    Fuzz {
        /// Seconds of fuzzing per target.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Only this target (a file name of fuzz/fuzz_targets/ without `.rs`).
        #[arg(long)]
        target: Option<String>,
    },
    /// Run the soak on the host (as root): N minutes of churn with three clients, sampling RSS,
    /// descriptors, map occupancy and counters; print the per-minute table and write
    /// target/xtask/soak-summary.json; fail if memory or descriptors grow, a byte or a close is
    /// unaccounted for, or a call returns an error.
    Soak {
        /// Minutes of churn (at least 2: the plateau compares the minute after warm-up with the
        /// last).
        #[arg(long, default_value_t = 10.0)]
        minutes: f64,
    },
    /// Run setup, then the `nettrace` demo binary in release mode with ARGS.
    Demo {
        /// Arguments for `nettrace` (after `--`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Setup => setup::run().map(|()| true),
        Command::Test { host_only, vm_only } => test::run(host_only, vm_only),
        Command::Bench { args } => bench::run(&args),
        Command::Demo { args } => demo::run(&args),
        Command::Soak { minutes } => soak::run(minutes),
        Command::Fuzz { seconds, target } => {
            fuzz::run(seconds, target.as_deref(), fuzz::Profile::Release)
        }
    };
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailing_arguments_pass_through() {
        let cli = Cli::try_parse_from(["xtask", "demo", "--", "--json", "-v"]).unwrap();
        assert!(matches!(cli.command, Command::Demo { args } if args == ["--json", "-v"]));
        let cli = Cli::try_parse_from(["xtask", "bench", "--", "--bench", "get_delta"]).unwrap();
        assert!(matches!(cli.command, Command::Bench { args } if args == ["--bench", "get_delta"]));
        let cli = Cli::try_parse_from(["xtask", "test", "--host-only"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Test {
                host_only: true,
                ..
            }
        ));
        let cli = Cli::try_parse_from(["xtask", "test", "--vm-only"]).unwrap();
        assert!(matches!(cli.command, Command::Test { vm_only: true, .. }));
        assert!(Cli::try_parse_from(["xtask", "test", "--vm-only", "--host-only"]).is_err());
        let cli = Cli::try_parse_from(["xtask", "fuzz", "--seconds", "5"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Fuzz {
                seconds: 5,
                target: None
            }
        ));
    }
}
