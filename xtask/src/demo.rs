//! `cargo xtask demo -- ARGS`: the `nettrace` binary (crate `nettrace/`) in release mode, on a
//! prepared machine.

use std::process::Command;

use anyhow::Result;

use crate::{cmd, paths, setup, tracefs};

pub fn run(args: &[String]) -> Result<bool> {
    setup::run()?;
    // setup already mounts it; kept so the demo's precondition is stated where it is needed.
    tracefs::ensure_mounted()?;
    let status = cmd::status(
        Command::new("cargo")
            .current_dir(paths::workspace_root())
            .args(["run", "--release", "-p", "nettrace", "--"])
            .args(args),
    )?;
    Ok(status.success())
}
