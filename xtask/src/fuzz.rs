//! `cargo xtask fuzz [--seconds N] [--target NAME]`: builds the cargo-fuzz targets of `fuzz/`
//! (nightly, AddressSanitizer) and runs each for a bounded time, starting from its committed seed
//! corpus `fuzz/seeds/<target>` (which every run replays first: the regression inputs of past
//! crashes live there too). New inputs libFuzzer finds go to `fuzz/corpus/<target>` (not
//! committed); a crash leaves its input in `fuzz/artifacts/<target>/` and fails the run, with the
//! commands to reproduce and minimize it printed. `cargo xtask test` runs every target briefly
//! (see [`SHORT_TOTAL_SECS`]).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::{cmd, paths};

/// Seconds of fuzzing that `cargo xtask test` spends, over all targets together.
pub const SHORT_TOTAL_SECS: u64 = 30;

/// The fuzz crate's directory.
fn fuzz_dir() -> PathBuf {
    paths::workspace_root().join("fuzz")
}

/// The targets: one file per target in `fuzz/fuzz_targets/`, sorted.
pub fn targets() -> Result<Vec<String>> {
    let dir = fuzz_dir().join("fuzz_targets");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            (path.extension()? == "rs").then_some(())?;
            Some(path.file_stem()?.to_str()?.to_owned())
        })
        .collect();
    names.sort();
    Ok(names)
}

/// A `cargo +nightly fuzz` command run from the workspace root. The fuzz build needs no eBPF
/// object (nothing is loaded): `AYA_BUILD_SKIP` gives the tracer its stub, so the sanitizer
/// flags cargo-fuzz sets never reach the BPF build.
fn cargo_fuzz(root: &Path) -> Command {
    let mut c = Command::new("cargo");
    c.current_dir(root)
        .args(["+nightly", "fuzz"])
        .env("AYA_BUILD_SKIP", "1")
        .env_remove("TRACER_REQUIRE_EBPF");
    c
}

/// How the targets are built.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// Optimised (`cargo xtask fuzz`): many more runs per second.
    Release,
    /// Unoptimised, with debug assertions (integer overflow checks): the short run of `cargo
    /// xtask test`, whose few seconds per target do not repay an optimised build's several
    /// minutes on a fresh CI machine.
    Dev,
}

impl Profile {
    fn flag(self) -> &'static str {
        match self {
            Profile::Release => "--release",
            Profile::Dev => "--dev",
        }
    }
}

/// Builds every target, then runs each `seconds` long (only `only`, when given). Returns
/// whether no target crashed.
pub fn run(seconds: u64, only: Option<&str>, profile: Profile) -> Result<bool> {
    let root = paths::workspace_root();
    let mut targets = targets()?;
    if let Some(only) = only {
        if !targets.iter().any(|t| t == only) {
            bail!(
                "no fuzz target {only}: the targets are {}",
                targets.join(", ")
            );
        }
        targets.retain(|t| t == only);
    }
    cmd::run(cargo_fuzz(&root).args(["build", profile.flag()]))
        .context("building the fuzz targets (is cargo-fuzz installed? `cargo xtask setup`)")?;
    let mut crashed = Vec::new();
    for target in &targets {
        let seeds = fuzz_dir().join("seeds").join(target);
        let corpus = fuzz_dir().join("corpus").join(target);
        std::fs::create_dir_all(&corpus)
            .with_context(|| format!("creating {}", corpus.display()))?;
        let mut run = cargo_fuzz(&root);
        run.args(["run", profile.flag(), target])
            .arg(&corpus)
            .arg(&seeds)
            .args(["--", &format!("-max_total_time={seconds}")])
            // One input taking seconds is a hang worth reporting; 2 GB is far above what any
            // parser should use.
            .args(["-timeout=10", "-rss_limit_mb=2048", "-print_final_stats=1"]);
        if !cmd::status(&mut run)?.success() {
            println!(
                "xtask: fuzz target {target} failed; its input is in fuzz/artifacts/{target}/. \
                 Reproduce with `cargo +nightly fuzz run {target} <input>`, minimize with \
                 `cargo +nightly fuzz tmin {target} <input>`, then add the minimized input to \
                 fuzz/seeds/{target}/ as a regression input."
            );
            crashed.push(target.clone());
        }
    }
    if crashed.is_empty() {
        println!(
            "xtask: fuzzed {} target(s) for {seconds} s each: no crash",
            targets.len()
        );
        Ok(true)
    } else {
        println!("xtask: fuzz targets that failed: {}", crashed.join(", "));
        Ok(false)
    }
}

/// The short run of `cargo xtask test`: [`SHORT_TOTAL_SECS`] spread over the targets.
pub fn run_short() -> Result<bool> {
    let n = u64::try_from(targets()?.len()).unwrap_or(1).max(1);
    run((SHORT_TOTAL_SECS / n).max(1), None, Profile::Dev)
}
