//! Booting a kernel + initramfs in qemu (TCG: the host has no KVM) and collecting its serial
//! console, streamed to our stdout as it comes, with a deadline.

use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::cmd;

pub struct Boot {
    pub console: String,
    pub timed_out: bool,
    /// qemu's own exit status, e.g. `exit status: 0` after `poweroff -f`.
    pub exit: String,
    pub elapsed: Duration,
}

pub fn boot(label: &str, vmlinuz: &Path, initrd: &Path, timeout: Duration) -> Result<Boot> {
    let mut qemu = Command::new("qemu-system-x86_64");
    qemu.args([
        "-m",
        "1024",
        "-smp",
        "2",
        "-nographic",
        "-no-reboot",
        "-nic",
        "none",
    ])
    .arg("-kernel")
    .arg(vmlinuz)
    .arg("-initrd")
    .arg(initrd)
    // panic=-1 reboots at once on a panic (e.g. /init dying), which -no-reboot turns into exit.
    .args(["-append", "console=ttyS0 panic=-1 quiet"]);
    cmd::announce(&qemu);
    let start = Instant::now();
    // No stdin: qemu would otherwise put a terminal in raw mode and read its monitor escapes.
    let mut child = qemu
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting qemu-system-x86_64 (Debian package qemu-system-x86)")?;
    let stdout = child.stdout.take().context("qemu stdout was not piped")?;
    let prefix = format!("[vm {label}] ");
    let copier = thread::spawn(move || cmd::copy_lines(stdout, &prefix));

    let deadline = start + timeout;
    let mut timed_out = false;
    let status = loop {
        if let Some(status) = child.try_wait().context("waiting for qemu")? {
            break status;
        }
        if Instant::now() >= deadline {
            timed_out = true;
            println!(
                "xtask: VM {label} still running after {}s: killing qemu",
                timeout.as_secs()
            );
            // Already exited in between is fine: wait() below reports it either way.
            let _ = child.kill();
            break child.wait().context("waiting for killed qemu")?;
        }
        thread::sleep(Duration::from_millis(100));
    };
    let elapsed = start.elapsed();
    let console = copier
        .join()
        .map_err(|_| anyhow::anyhow!("console copier thread panicked"))?;
    Ok(Boot {
        console,
        timed_out,
        exit: status.to_string(),
        elapsed,
    })
}
