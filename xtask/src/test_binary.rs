//! The integration test executable that `cargo xtask test` runs on the host and in the VMs.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::cmd;

/// The integration test executable: built with cargo, or XTASK_TEST_BINARY (a debugging aid).
pub fn locate(root: &Path) -> Result<PathBuf> {
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

/// The `nettrace` binary (debug, as the tests are built), for the host test of its live view
/// (`tests/tests/integration/nettrace_view.rs`), which runs it in tmux. Built here, before the
/// privileged run, so that the test itself never compiles anything and the VM runs (whose
/// initramfs holds only the test binary) need nothing more.
pub fn nettrace(root: &Path) -> Result<PathBuf> {
    let mut build = Command::new("cargo");
    build
        .current_dir(root)
        .args(["build", "-p", "nettrace", "--bin", "nettrace"])
        .arg("--message-format=json")
        .stderr(Stdio::inherit());
    cmd::announce(&build);
    let out = build.output().context("starting cargo")?;
    if !out.status.success() {
        bail!("cargo build -p nettrace failed ({})", out.status);
    }
    find_bin_executable(&String::from_utf8_lossy(&out.stdout), "nettrace")
        .context("cargo built no nettrace binary")
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

/// From cargo's JSON messages: the executable of the `bin` target `name`.
fn find_bin_executable(messages: &str, name: &str) -> Option<PathBuf> {
    messages.lines().find_map(|line| {
        let msg = serde_json::from_str::<Message>(line).ok()?;
        let target = msg.target?;
        (msg.reason == "compiler-artifact"
            && target.name == name
            && target.kind.iter().any(|k| k == "bin"))
        .then_some(msg.executable)
        .flatten()
    })
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

    #[test]
    fn finds_a_binary() {
        let messages = r#"{"reason":"compiler-artifact","target":{"kind":["lib"],"name":"nettrace"},"executable":null}
{"reason":"compiler-artifact","target":{"kind":["bin"],"name":"other"},"executable":"/t/debug/other"}
{"reason":"compiler-artifact","target":{"kind":["bin"],"name":"nettrace"},"executable":"/t/debug/nettrace"}"#;
        assert_eq!(
            find_bin_executable(messages, "nettrace"),
            Some(PathBuf::from("/t/debug/nettrace"))
        );
        assert_eq!(find_bin_executable(messages, "absent"), None);
    }
}
