//! Booting a kernel + initramfs in qemu (TCG: the host has no KVM) and collecting its serial
//! console, streamed to our stdout as it comes, with a deadline.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::cmd;

pub struct Boot {
    pub console: String,
    pub timed_out: bool,
    /// qemu's own exit status, e.g. `exit status: 0` after `poweroff -f`.
    pub exit: String,
    pub elapsed: Duration,
}

/// Boots `vmlinuz` with `initrd`; `params` are appended to the kernel command line (the /init
/// script reads its own there, e.g. which backend to run).
pub fn boot(
    label: &str,
    vmlinuz: &Path,
    initrd: &Path,
    params: &str,
    timeout: Duration,
) -> Result<Boot> {
    let mut qemu = Command::new("qemu-system-x86_64");
    qemu.args(["-m", "1024", "-smp", "2", "-nographic", "-no-reboot"])
        .args(["-nic", "none"])
        // No CMPXCHG16B: Debian's qemu 7.2 TCG mis-emulates `cmpxchg16b %gs:...` (EFLAGS come back
        // corrupted) and 6.12's SLUB fast path uses it, so about half of the 6.12 boots died in
        // double faults / GPFs in slab allocations. Without the CPU flag SLUB takes its locked
        // path: 15 of 15 6.12 boots were clean (5.10 and 6.1 were clean either way).
        .args(["-cpu", "qemu64,-cx16"])
        .arg("-kernel")
        .arg(vmlinuz)
        .arg("-initrd")
        .arg(initrd)
        // panic=-1 reboots at once on a panic (e.g. /init dying), which -no-reboot turns into exit.
        .args(["-append", &format!("console=ttyS0 panic=-1 quiet {params}")]);
    // cmd::tee gives qemu no stdin: it would otherwise put a terminal in raw mode and read monitor
    // escapes from it.
    let run = cmd::tee(&mut qemu, &format!("[vm {label}] "), timeout)
        .context("running qemu-system-x86_64 (Debian package qemu-system-x86)")?;
    Ok(Boot {
        console: run.output,
        timed_out: run.timed_out,
        exit: run.status.to_string(),
        elapsed: run.elapsed,
    })
}
