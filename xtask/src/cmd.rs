//! Running external commands. Every command that changes something or takes time is printed first
//! (`$ ...`), so a CI log shows exactly what ran; quick look-ups (dpkg-query, ldd) run silently.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// A shell-like rendering of `cmd`, including the environment it sets and its directory.
pub fn display(cmd: &Command) -> String {
    let mut parts = Vec::new();
    if let Some(dir) = cmd.get_current_dir() {
        parts.push(format!("(in {})", dir.display()));
    }
    for (key, value) in cmd.get_envs() {
        if let Some(value) = value {
            parts.push(format!(
                "{}={}",
                key.to_string_lossy(),
                value.to_string_lossy()
            ));
        }
    }
    parts.push(cmd.get_program().to_string_lossy().into_owned());
    parts.extend(cmd.get_args().map(|a| quote(&a.to_string_lossy())));
    parts.join(" ")
}

fn quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:+,@%^".contains(c));
    if plain {
        arg.to_owned()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

pub fn announce(cmd: &Command) {
    println!("$ {}", display(cmd));
}

/// Runs `cmd` with inherited stdio and returns its exit status (a non-zero status is not an error).
pub fn status(cmd: &mut Command) -> Result<ExitStatus> {
    announce(cmd);
    cmd.status()
        .with_context(|| format!("cannot start `{}`", display(cmd)))
}

/// Runs `cmd` with inherited stdio; a non-zero exit is an error.
pub fn run(cmd: &mut Command) -> Result<()> {
    let st = status(cmd)?;
    if !st.success() {
        bail!("`{}` failed ({st})", display(cmd));
    }
    Ok(())
}

/// Runs `cmd` silently and returns its output whatever the exit status.
pub fn output(cmd: &mut Command) -> Result<Output> {
    cmd.stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot start `{}`", display(cmd)))
}

/// Runs `cmd` silently and returns its stdout; a non-zero exit is an error that quotes stderr.
pub fn stdout_of(cmd: &mut Command) -> Result<String> {
    let out = output(cmd)?;
    if !out.status.success() {
        bail!(
            "`{}` failed ({}): {}",
            display(cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// How a command run under a deadline ended.
pub struct Finished {
    pub status: ExitStatus,
    /// Its stdout, cleaned by `clean`.
    pub output: String,
    pub timed_out: bool,
    pub elapsed: Duration,
}

/// Runs `cmd` in its own process group, passing its stdout through to ours line by line (with
/// `prefix`) while keeping a copy; stderr is inherited. Past `timeout` the whole group is killed. Once
/// the command has exited, whatever is left of its group is killed too: a leftover child holding the
/// pipe open would otherwise block the capture forever.
pub fn tee(cmd: &mut Command, prefix: &str, timeout: Duration) -> Result<Finished> {
    announce(cmd);
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot start `{}`", display(cmd)))?;
    let stdout = child.stdout.take().context("child stdout was not piped")?;
    let prefix = prefix.to_owned();
    let copier = thread::spawn(move || copy_lines(stdout, &prefix));
    let mut timed_out = false;
    let status = loop {
        if let Some(status) = child.try_wait().context("waiting for child")? {
            break status;
        }
        if start.elapsed() >= timeout {
            timed_out = true;
            println!(
                "xtask: still running after {}s, killing: {}",
                timeout.as_secs(),
                display(cmd)
            );
            kill_group(child.id());
            break child.wait().context("waiting for killed child")?;
        }
        thread::sleep(Duration::from_millis(100));
    };
    let elapsed = start.elapsed();
    kill_group(child.id());
    let output = copier
        .join()
        .map_err(|_| anyhow::anyhow!("output copier thread panicked"))?;
    Ok(Finished {
        status,
        output,
        timed_out,
        elapsed,
    })
}

/// SIGKILL to the process group led by `pid` (spawned with `process_group(0)`, so its id is the
/// group's). An already empty group is fine.
fn kill_group(pid: u32) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: kill(2) takes plain integers; a negative pid addresses the group we created.
    unsafe {
        libc::kill(-pid, libc::SIGKILL);
    }
}

/// Copies `reader` to our stdout line by line (with `prefix`, after `clean`) and returns the cleaned
/// text. Lossy UTF-8, so a binary that prints garbage cannot stop the copy.
pub fn copy_lines(reader: impl std::io::Read, prefix: &str) -> String {
    let mut captured = String::new();
    let mut reader = BufReader::new(reader);
    let mut buf = Vec::new();
    let stdout = std::io::stdout();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let line = clean(&String::from_utf8_lossy(&buf));
                let mut out = stdout.lock();
                // A closed stdout (e.g. `| head`) must not stop the capture.
                let _ = writeln!(out, "{prefix}{line}");
                captured.push_str(&line);
                captured.push('\n');
            }
        }
    }
    captured
}

/// Drops terminal escape sequences (the VM firmware clears the screen) and control characters such
/// as the serial console's `\r`, keeping tabs.
pub fn clean(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: parameters and intermediates, then one final byte in '@'..='~'. Other escapes
            // (ESC c, ESC 7, ...) are two characters long: dropping the next one is enough.
            if let Some('[') = chars.next() {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
        } else if c == '\t' || !c.is_control() {
            out.push(c);
        }
    }
    out
}

/// Finds `name` on PATH, then in ~/.cargo/bin (where `cargo install` puts binaries even when that
/// directory is not on PATH, e.g. under a minimal CI environment).
pub fn find_program(name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/sbin"].map(PathBuf::from));
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(Path::new(&home).join(".cargo/bin"));
    }
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_strips_escapes_and_carriage_returns() {
        assert_eq!(clean("\u{1b}[2J\u{1b}[0mSeaBIOS\r\n"), "SeaBIOS");
        assert_eq!(clean("\u{1b}cBooting\ta\r"), "Booting\ta");
        assert_eq!(clean("plain"), "plain");
    }

    #[test]
    fn display_quotes_odd_arguments() {
        let mut cmd = Command::new("cargo");
        cmd.args(["clippy", "--", "-D warnings"]).env("A", "1");
        assert_eq!(display(&cmd), "A=1 cargo clippy -- '-D warnings'");
    }
}
