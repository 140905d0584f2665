//! Running the outside tools a test drives (`ip`, `nft`, `conntrack`, ...): each must succeed,
//! and a test fails with the tool's own error otherwise.

use std::{
    io::Write,
    process::{Command, Stdio},
};

/// Runs `program args`, feeding `stdin` if given, and returns its standard output. Panics (the
/// test fails) when it cannot start or exits non-zero, with its standard error.
pub fn run_with_input(program: &str, args: &[&str], stdin: Option<&str>) -> String {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{program} {args:?}: {e} (is it installed, also in the VM?)"));
    let input = child.stdin.take().expect("stdin");
    if let Some(text) = stdin {
        let mut input = input;
        input.write_all(text.as_bytes()).expect("write stdin");
    } else {
        drop(input);
    }
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// [`run_with_input`] without input.
pub fn run(program: &str, args: &[&str]) -> String {
    run_with_input(program, args, None)
}

/// `ip ARGS` in the calling thread's network namespace (or another with `-n NAME`).
pub fn ip(args: &[&str]) -> String {
    run("ip", args)
}

/// An `openssl req` command (the caller adds the arguments: a self-signed certificate, say)
/// with a minimal configuration written into `dir`: the VM images have no
/// `/usr/lib/ssl/openssl.cnf`, without which `openssl req` refuses to run.
pub fn openssl_req(dir: &std::path::Path) -> std::process::Command {
    let config = dir.join("openssl.cnf");
    std::fs::write(&config, "[req]\ndistinguished_name = dn\n[dn]\n").expect("openssl.cnf");
    let mut command = std::process::Command::new("openssl");
    command.args(["req", "-config"]).arg(config);
    command
}
