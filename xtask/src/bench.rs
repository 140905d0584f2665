//! `cargo xtask bench`: runs the benchmarks, which append their rows to the file named by
//! TRACER_BENCH_SUMMARY themselves, and prints that file.

use std::process::Command;

use anyhow::{Context, Result};

use crate::{cmd, paths};

pub fn run(args: &[String]) -> Result<bool> {
    let out_dir = paths::xtask_out();
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let summary = out_dir.join("bench-summary.json");
    // Rows are appended: start from nothing so the file holds this run only.
    match std::fs::remove_file(&summary) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
            return Err(err).with_context(|| format!("removing {}", summary.display()));
        }
        _ => {}
    }
    let status = cmd::status(
        Command::new("cargo")
            .current_dir(paths::workspace_root())
            .env("TRACER_BENCH_SUMMARY", &summary)
            .args(["bench", "-p", "tracer-benches"])
            .args(args),
    )?;
    match std::fs::read_to_string(&summary) {
        Ok(text) => {
            println!("xtask: {}:", summary.display());
            println!("{}", text.trim_end());
        }
        Err(err) => println!("xtask: no {} ({err})", summary.display()),
    }
    Ok(status.success())
}
