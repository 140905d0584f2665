//! tracefs: aya resolves tracepoint ids under /sys/kernel/tracing, which the host does not mount at
//! boot.

use std::path::Path;
use std::process::Command;

use anyhow::Result;

use crate::cmd;

pub fn ensure_mounted() -> Result<String> {
    if Path::new("/sys/kernel/tracing/events").is_dir() {
        return Ok("ok: already mounted".to_owned());
    }
    cmd::run(Command::new("mount").args(["-t", "tracefs", "tracefs", "/sys/kernel/tracing"]))?;
    Ok("mounted tracefs at /sys/kernel/tracing".to_owned())
}
