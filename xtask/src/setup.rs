//! `cargo xtask setup`: brings a fresh project machine to the state the build and the tests need.
//! Idempotent: every item is checked first and only installed when missing, one report line each.

use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::{cmd, kernels, tracefs};

/// Debian packages and whether to skip their Recommends (qemu's pull in a desktop stack).
const APT_PACKAGES: &[(&str, bool)] = &[
    // bpf-linker's build dependencies (LLVM 22 matches the nightly's LLVM).
    ("llvm-22-dev", false),
    ("libpolly-22-dev", false),
    ("zlib1g-dev", false),
    ("libzstd-dev", false),
    // The VM runs: emulator, the initramfs's shell and a cpio tool for inspecting images.
    ("qemu-system-x86", true),
    ("busybox-static", true),
    ("cpio", true),
    // Debian kernel packages ship no modules.dep (their postinst runs depmod): `depmod -b` makes it.
    ("kmod", true),
    // Debian packs kernel modules as .ko.xz (newer ones may be .ko.zst); busybox insmod needs them
    // decompressed, which the initramfs build does with these tools.
    ("xz-utils", true),
    ("zstd", true),
    // The integration tests drive veths, routes and nftables rules with `ip`, `tc` and `nft`.
    ("iproute2", false),
    ("nftables", false),
    // conntrack-tools' CLI: ground truth of the NAT translations (`conntrack -L`).
    ("conntrack", true),
    // Real servers and clients the host tests compare against (ground truth nobody here wrote):
    // nginx and its access log, curl, iperf3; wrk drives nginx in the `nginx` benchmark.
    ("nginx-light", true),
    ("curl", true),
    ("wrk", true),
    ("iperf3", true),
    // The DNS tests' real server and client: dnsmasq's binary without its system service
    // (dnsmasq-base starts no daemon at boot) and dig.
    ("dnsmasq-base", true),
    ("bind9-dnsutils", true),
    // The protocol classification tests' real servers and clients (tests/tests/integration/
    // protocol_servers.rs): redis-server and redis-cli, PostgreSQL's server (initdb and
    // postgres under /usr/lib/postgresql/<version>/bin) and psql, and openssl for the TLS case's
    // self-signed certificate. The tests run their own instances as children, on their own
    // ports, in their own network namespaces; the system services these packages start on
    // install are stopped and disabled below.
    ("redis-server", true),
    ("redis-tools", true),
    ("postgresql", true),
    ("openssl", true),
    // `nettrace serve`'s tests (tests/tests/integration/serve.rs): a real Prometheus scrapes it
    // (its own instance, config and data dir; the system service is stopped below), and an OTLP
    // receiver decodes its pushes with the OpenTelemetry project's protobuf definitions, the
    // `opentelemetry-proto` Python package, installed by pip into a venv (see `otlp_venv`).
    ("prometheus", true),
    ("python3-venv", true),
    // The HTTPS tests' GnuTLS client (gnutls-cli), whose library the TLS uprobes hook
    // (tests/tests/integration/tls.rs).
    ("gnutls-bin", true),
    // The terminal the live view's test runs `nettrace` in, and reads back (`capture-pane`).
    ("tmux", true),
    // The `overhead` benchmark's peer (`overhead/tracepoint/peer_bpftrace`: a bpftrace one-liner
    // on the same tracepoints), and bpftool for the programs' instruction counts and dumps
    // (`bpftool prog show` / `prog dump xlated`, the profile in the README).
    ("bpftrace", true),
    ("bpftool", true),
];

/// System services that installing a package of [`APT_PACKAGES`] starts (Debian starts a
/// daemon on install and at boot): (package, service). The tests never use them; setup stops and
/// disables those of the packages it installed itself (a service that was there before is left
/// alone).
const UNWANTED_SERVICES: &[(&str, &str)] = &[
    ("redis-server", "redis-server"),
    ("postgresql", "postgresql"),
    ("prometheus", "prometheus"),
];

/// The venv with the OpenTelemetry protobuf definitions; the same path is
/// `tracer_integration::serve::OTLP_PYTHON`'s venv.
const OTLP_VENV: &str = "/opt/tracer-test/otlp-venv";
/// Pinned: the versions the OTLP test was written against.
const OTLP_PIP_PACKAGES: &[&str] = &["opentelemetry-proto==1.45.2", "protobuf==7.36.2"];

const BPF_LINKER_VERSION: &str = "0.13.0";
/// cargo-fuzz for the fuzz targets of fuzz/ (`cargo xtask fuzz`); declares no MSRV, builds with
/// stable 1.95.
const CARGO_FUZZ_VERSION: &str = "0.13.2";

pub fn run() -> Result<()> {
    ensure_root()?;
    for component in ["rust-src", "clippy"] {
        report(
            &format!("rustup {component} (nightly)"),
            rustup_component(component)?,
        );
    }
    apt_packages()?;
    report("OTLP protobuf definitions (venv)", otlp_venv()?);
    report("bpf-linker", bpf_linker()?);
    report("LLVM versions", llvm_versions_match()?);
    report("cargo-fuzz", cargo_fuzz()?);
    kernels::ensure_all(&mut |label, what| report(&format!("VM kernel {label}"), what))?;
    report("tracefs", tracefs::ensure_mounted()?);
    Ok(())
}

fn report(item: &str, what: impl AsRef<str>) {
    println!("setup: {item:<34} {}", what.as_ref());
}

/// Root is needed for apt, mount and loading eBPF programs; say so up front rather than failing in
/// the middle.
pub fn ensure_root() -> Result<()> {
    let status =
        std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .context("no effective uid in /proc/self/status")?;
    if euid != "0" {
        bail!(
            "cargo xtask setup/test/demo must run as root (effective uid is {euid}): they install \
             packages, mount tracefs and load eBPF programs; try `sudo -E cargo xtask ...`"
        );
    }
    Ok(())
}

fn rustup_component(component: &str) -> Result<String> {
    let installed = cmd::stdout_of(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]))?;
    // Listed either bare (`rust-src`) or with the host triple (`clippy-x86_64-unknown-linux-gnu`).
    let present = installed
        .lines()
        .any(|l| l == component || l.starts_with(&format!("{component}-x86_64")));
    if present {
        return Ok("ok: already present".to_owned());
    }
    cmd::run(Command::new("rustup").args([
        "component",
        "add",
        component,
        "--toolchain",
        "nightly",
    ]))?;
    Ok(format!(
        "installed (rustup component add {component} --toolchain nightly)"
    ))
}

fn dpkg_installed(pkg: &str) -> Result<bool> {
    let out = cmd::output(Command::new("dpkg-query").args(["-W", "-f=${Status}", pkg]))?;
    Ok(out.status.success()
        && String::from_utf8_lossy(&out.stdout).trim() == "install ok installed")
}

fn apt_packages() -> Result<()> {
    let mut missing = Vec::new();
    for &(pkg, no_recommends) in APT_PACKAGES {
        if dpkg_installed(pkg)? {
            report(&format!("apt {pkg}"), "ok: already present");
        } else {
            missing.push((pkg, no_recommends));
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    // Only now: an update takes time and needs the network.
    cmd::run(Command::new("apt-get").args(["update"]))
        .context("apt-get update failed; cannot install the missing Debian packages")?;
    for &(pkg, _) in &missing {
        let policy = cmd::stdout_of(Command::new("apt-cache").args(["policy", pkg]))?;
        let candidate = policy
            .lines()
            .find_map(|l| l.trim().strip_prefix("Candidate:"))
            .map(str::trim);
        if matches!(candidate, None | Some("(none)")) {
            bail!(
                "Debian package `{pkg}` is missing and apt has no candidate for it in the configured sources"
            );
        }
    }
    for no_recommends in [false, true] {
        let group: Vec<&str> = missing
            .iter()
            .filter(|(_, n)| *n == no_recommends)
            .map(|(p, _)| *p)
            .collect();
        if group.is_empty() {
            continue;
        }
        let mut install = Command::new("apt-get");
        install
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y"]);
        if no_recommends {
            install.arg("--no-install-recommends");
        }
        install.args(&group);
        cmd::run(&mut install).with_context(|| {
            format!(
                "apt-get could not install Debian package(s) {}",
                group.join(", ")
            )
        })?;
        for pkg in group {
            report(&format!("apt {pkg}"), "installed (apt-get install)");
        }
    }
    for &(pkg, service) in UNWANTED_SERVICES {
        if missing.iter().any(|(p, _)| *p == pkg) {
            report(&format!("service {service}"), stop_service(service)?);
        }
    }
    Ok(())
}

/// Stops `service` and keeps it from starting at boot: with systemd, `systemctl disable --now`;
/// without (a container), its init script if it runs, and `update-rc.d disable`.
fn stop_service(service: &str) -> Result<String> {
    if std::path::Path::new("/run/systemd/system").is_dir() {
        cmd::run(Command::new("systemctl").args(["disable", "--now", service]))
            .with_context(|| format!("stopping and disabling {service}"))?;
        return Ok("stopped and disabled (systemctl disable --now)".to_owned());
    }
    if !std::path::Path::new("/etc/init.d").join(service).is_file() {
        return Ok("ok: no systemd and no init script".to_owned());
    }
    let running = cmd::output(Command::new("service").args([service, "status"]))
        .is_ok_and(|out| out.status.success());
    if running {
        cmd::run(Command::new("service").args([service, "stop"]))
            .with_context(|| format!("stopping {service}"))?;
    }
    cmd::run(Command::new("update-rc.d").args([service, "disable"]))
        .with_context(|| format!("disabling {service}"))?;
    Ok(format!(
        "{}disabled at boot (no systemd: init script)",
        if running { "stopped and " } else { "" }
    ))
}

/// A venv at [`OTLP_VENV`] with [`OTLP_PIP_PACKAGES`] (Debian packages no
/// `opentelemetry-proto`, and its `python3-protobuf` is too old for it).
fn otlp_venv() -> Result<String> {
    let python = std::path::Path::new(OTLP_VENV).join("bin/python3");
    let check = "from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2";
    if python.is_file()
        && cmd::output(Command::new(&python).args(["-c", check])).is_ok_and(|o| o.status.success())
    {
        return Ok("ok: already present".to_owned());
    }
    cmd::run(Command::new("/usr/bin/python3").args(["-m", "venv", OTLP_VENV]))
        .with_context(|| format!("creating the venv {OTLP_VENV}"))?;
    cmd::run(
        Command::new(std::path::Path::new(OTLP_VENV).join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .args(OTLP_PIP_PACKAGES),
    )
    .context("pip install of the OpenTelemetry protobuf definitions")?;
    Ok(format!(
        "installed {} in {OTLP_VENV}",
        OTLP_PIP_PACKAGES.join(" ")
    ))
}

fn bpf_linker() -> Result<String> {
    if let Some(path) = cmd::find_program("bpf-linker") {
        let version = cmd::stdout_of(Command::new(&path).arg("--version")).unwrap_or_default();
        return Ok(format!(
            "ok: already present ({}, {})",
            path.display(),
            version.trim()
        ));
    }
    cmd::run(
        Command::new("cargo")
            .env("LLVM_PREFIX", "/usr/lib/llvm-22")
            .args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION])
            .args(["--no-default-features", "--features", "llvm-22"]),
    )
    .context("installing bpf-linker with cargo install")?;
    Ok(format!(
        "installed bpf-linker {BPF_LINKER_VERSION} (cargo install, LLVM 22)"
    ))
}

fn cargo_fuzz() -> Result<String> {
    if let Some(path) = cmd::find_program("cargo-fuzz") {
        return Ok(format!("ok: already present ({})", path.display()));
    }
    cmd::run(Command::new("cargo").args([
        "install",
        "cargo-fuzz",
        "--locked",
        "--version",
        CARGO_FUZZ_VERSION,
    ]))
    .context("installing cargo-fuzz with cargo install")?;
    Ok(format!(
        "installed cargo-fuzz {CARGO_FUZZ_VERSION} (cargo install)"
    ))
}

/// bpf-linker links the LLVM bitcode the nightly rustc emits: with a different LLVM major it fails
/// with obscure bitcode errors, so catch the mismatch here.
fn llvm_versions_match() -> Result<String> {
    let rustc = cmd::stdout_of(Command::new("rustc").args(["+nightly", "-vV"]))?;
    let rustc_major =
        rustc_llvm_major(&rustc).context("`rustc +nightly -vV` printed no `LLVM version:` line")?;
    let linker = cmd::find_program("bpf-linker").context("bpf-linker is not installed")?;
    let ldd = cmd::output(Command::new("ldd").arg(&linker))?;
    let version = cmd::output(Command::new(&linker).arg("--version"))?;
    let linker_major = linked_llvm_major(&String::from_utf8_lossy(&ldd.stdout))
        .or_else(|| version_llvm_major(&String::from_utf8_lossy(&version.stdout)))
        .with_context(|| {
            format!(
                "cannot tell which LLVM {} uses (no libLLVM in ldd, no LLVM in --version)",
                linker.display()
            )
        })?;
    if rustc_major != linker_major {
        bail!(
            "bpf-linker uses LLVM {linker_major} but the nightly rustc uses LLVM {rustc_major}: \
             reinstall bpf-linker against llvm-{rustc_major} (cargo install --force bpf-linker \
             --no-default-features --features llvm-{rustc_major} with \
             LLVM_PREFIX=/usr/lib/llvm-{rustc_major})"
        );
    }
    Ok(format!(
        "ok: nightly rustc and bpf-linker both use LLVM {rustc_major}"
    ))
}

/// `LLVM version: 22.1.4` -> 22.
fn rustc_llvm_major(vv: &str) -> Option<u32> {
    vv.lines()
        .find_map(|l| l.strip_prefix("LLVM version:"))
        .and_then(|v| v.trim().split('.').next())
        .and_then(|m| m.parse().ok())
}

/// The LLVM shared library bpf-linker is linked against: `libLLVM.so.22.1` or `libLLVM-22.so`.
fn linked_llvm_major(ldd: &str) -> Option<u32> {
    ldd.split_whitespace().find_map(|token| {
        let name = token.rsplit('/').next()?;
        let rest = name
            .strip_prefix("libLLVM.so.")
            .or_else(|| name.strip_prefix("libLLVM-"))?;
        rest.split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    })
}

/// Fallback for a statically linked bpf-linker whose `--version` mentions `LLVM 22...`.
fn version_llvm_major(version: &str) -> Option<u32> {
    let after = version.split("LLVM").nth(1)?;
    after
        .trim_start_matches(|c: char| !c.is_ascii_digit())
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llvm_majors() {
        assert_eq!(
            rustc_llvm_major("rustc 1.97.0-nightly\nLLVM version: 22.1.4\n"),
            Some(22)
        );
        let ldd = "\tlinux-vdso.so.1 (0x00007f)\n\tlibLLVM.so.22.1 => /usr/lib/llvm-22/lib/libLLVM.so.22.1 (0x7f)\n";
        assert_eq!(linked_llvm_major(ldd), Some(22));
        assert_eq!(linked_llvm_major("libLLVM-21.so => /x (0x1)"), Some(21));
        assert_eq!(linked_llvm_major("libc.so.6 => /lib/libc.so.6"), None);
        assert_eq!(
            version_llvm_major("bpf-linker 0.9.0 (LLVM 19.1.0)"),
            Some(19)
        );
        assert_eq!(version_llvm_major("bpf-linker 0.13.0"), None);
    }
}
