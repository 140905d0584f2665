//! The kernels the integration tests run on, as data, and the download cache for the VM ones.
//!
//! VM kernels are Debian cloud kernel packages fetched with apt through a private sources list and
//! private list/cache directories (the system's apt state is never touched), unpacked with `dpkg -x`
//! into `<cache>/kernels/<label>/root`, and given a modules.dep with `depmod -b` (Debian generates it
//! in the package's postinst, so the package itself has none).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::{cmd, paths};

/// Which eBPF backends the integration tests exercise where (TRACER_TEST_BACKEND values): each
/// backend on every kernel that has what it needs (the host has no kprobes and refuses fentry;
/// the tracepoint backend needs 6.3+).
pub const HOST_BACKENDS: &[&str] = &["tracepoint"];

pub struct AptSource {
    pub uri: &'static str,
    pub suite: &'static str,
    pub component: &'static str,
}

pub struct VmKernel {
    /// Short name used in logs, cache paths and XTASK_KERNELS.
    pub label: &'static str,
    pub package: &'static str,
    pub source: AptSource,
    pub backends: &'static [&'static str],
}

const DEBIAN: &str = "http://deb.debian.org/debian";

pub const VM_KERNELS: &[VmKernel] = &[
    VmKernel {
        label: "5.10",
        package: "linux-image-5.10.0-32-cloud-amd64-unsigned",
        // bullseye-security's pool answers 404 for this one; the point release in main has it.
        source: AptSource {
            uri: DEBIAN,
            suite: "bullseye",
            component: "main",
        },
        backends: &["fentry", "kprobe"],
    },
    VmKernel {
        label: "6.1",
        package: "linux-image-6.1.0-50-cloud-amd64-unsigned",
        source: AptSource {
            uri: DEBIAN,
            suite: "bookworm",
            component: "main",
        },
        backends: &["fentry", "kprobe"],
    },
    VmKernel {
        label: "6.12",
        package: "linux-image-6.12.95+deb12-cloud-amd64-unsigned",
        source: AptSource {
            uri: DEBIAN,
            suite: "bookworm-backports",
            component: "main",
        },
        backends: &["fentry", "kprobe", "tracepoint"],
    },
];

const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// A VM kernel unpacked in the cache.
pub struct CachedKernel {
    pub label: &'static str,
    /// `uname -r` of the kernel (the name of its modules directory).
    pub release: String,
    pub vmlinuz: PathBuf,
    pub modules: PathBuf,
    pub backends: &'static [&'static str],
}

fn kernels_dir() -> PathBuf {
    paths::cache_dir().join("kernels")
}

fn unpacked_root(kernel: &VmKernel) -> PathBuf {
    kernels_dir().join(kernel.label).join("root")
}

/// Downloads and unpacks every VM kernel not yet in the cache; `report(label, what)` gets one line
/// per kernel.
pub fn ensure_all(report: &mut dyn FnMut(&str, String)) -> Result<Vec<CachedKernel>> {
    let mut apt_ready = false;
    let mut cached = Vec::new();
    for kernel in VM_KERNELS {
        if let Ok(found) = locate(kernel) {
            report(
                kernel.label,
                format!("ok: already present ({})", found.vmlinuz.display()),
            );
            cached.push(found);
            continue;
        }
        if !apt_ready {
            apt_update()?;
            apt_ready = true;
        }
        let found = download(kernel)
            .with_context(|| format!("fetching VM kernel {} ({})", kernel.label, kernel.package))?;
        report(
            kernel.label,
            format!(
                "installed {} into {}",
                kernel.package,
                found.vmlinuz.display()
            ),
        );
        cached.push(found);
    }
    Ok(cached)
}

/// The VM kernels already in the cache (does not download).
pub fn cached() -> Vec<(&'static VmKernel, Result<CachedKernel>)> {
    VM_KERNELS.iter().map(|k| (k, locate(k))).collect()
}

/// A kernel counts as present once its unpacked tree has a vmlinuz and a modules.dep: both are
/// written last (the tree is renamed into place, then depmod runs).
pub fn locate(kernel: &'static VmKernel) -> Result<CachedKernel> {
    let root = unpacked_root(kernel);
    let boot = root.join("boot");
    let entries =
        std::fs::read_dir(&boot).with_context(|| format!("reading {}", boot.display()))?;
    let mut vmlinuz = None;
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(release) = name.strip_prefix("vmlinuz-") {
            vmlinuz = Some((release.to_owned(), entry.path()));
        }
    }
    let (release, vmlinuz) =
        vmlinuz.with_context(|| format!("no vmlinuz-* in {}", boot.display()))?;
    let modules = root.join("lib/modules").join(&release);
    if !modules.join("modules.dep").is_file() {
        bail!("no modules.dep in {}", modules.display());
    }
    Ok(CachedKernel {
        label: kernel.label,
        release,
        vmlinuz,
        modules,
        backends: kernel.backends,
    })
}

fn apt_dir() -> PathBuf {
    paths::cache_dir().join("apt")
}

/// Options that point apt at our own sources list, lists and cache directories.
fn apt_options() -> Vec<String> {
    let dir = apt_dir();
    vec![
        format!(
            "-oDir::Etc::sourcelist={}",
            dir.join("sources.list").display()
        ),
        "-oDir::Etc::sourceparts=-".to_owned(),
        format!("-oDir::State::Lists={}", dir.join("lists").display()),
        format!("-oDir::Cache={}", dir.join("cache").display()),
        // The downloads go to a root-owned cache directory the `_apt` user cannot write to.
        "-oAPT::Sandbox::User=root".to_owned(),
    ]
}

fn sources_list() -> String {
    let mut lines: Vec<String> = VM_KERNELS
        .iter()
        .map(|k| {
            format!(
                "deb [signed-by={KEYRING}] {} {} {}",
                k.source.uri, k.source.suite, k.source.component
            )
        })
        .collect();
    // Several kernels may share a suite.
    lines.sort_unstable();
    lines.dedup();
    lines.join("\n") + "\n"
}

fn apt_update() -> Result<()> {
    let dir = apt_dir();
    for sub in ["lists/partial", "cache/archives/partial"] {
        std::fs::create_dir_all(dir.join(sub))
            .with_context(|| format!("creating {}", dir.join(sub).display()))?;
    }
    let list = dir.join("sources.list");
    std::fs::write(&list, sources_list()).with_context(|| format!("writing {}", list.display()))?;
    cmd::run(Command::new("apt-get").args(apt_options()).arg("update"))
        .context("apt-get update on the VM kernels' private sources list")
}

fn download(kernel: &'static VmKernel) -> Result<CachedKernel> {
    let dir = kernels_dir().join(kernel.label);
    let debs = dir.join("deb");
    let staging = dir.join("root.partial");
    for stale in [&debs, &staging, &unpacked_root(kernel)] {
        if stale.exists() {
            std::fs::remove_dir_all(stale)
                .with_context(|| format!("removing {}", stale.display()))?;
        }
    }
    std::fs::create_dir_all(&debs).with_context(|| format!("creating {}", debs.display()))?;
    cmd::run(
        Command::new("apt-get")
            .args(apt_options())
            .args(["download", kernel.package])
            .current_dir(&debs),
    )?;
    let deb = only_deb(&debs)?;
    cmd::run(Command::new("dpkg").arg("-x").arg(&deb).arg(&staging))?;
    std::fs::rename(&staging, unpacked_root(kernel))
        .context("moving the unpacked kernel into place")?;
    std::fs::remove_dir_all(&debs).with_context(|| format!("removing {}", debs.display()))?;
    let release = release_of(kernel)?;
    let depmod = cmd::find_program("depmod").context("depmod not found (Debian package kmod)")?;
    cmd::run(
        Command::new(depmod)
            .arg("-b")
            .arg(unpacked_root(kernel))
            .arg(&release),
    )?;
    locate(kernel)
}

fn only_deb(dir: &Path) -> Result<PathBuf> {
    let mut debs = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "deb") {
            debs.push(path);
        }
    }
    match debs.as_slice() {
        [one] => Ok(one.clone()),
        _ => bail!(
            "expected one .deb in {}, found {}",
            dir.display(),
            debs.len()
        ),
    }
}

fn release_of(kernel: &'static VmKernel) -> Result<String> {
    let modules = unpacked_root(kernel).join("lib/modules");
    let mut releases = Vec::new();
    for entry in
        std::fs::read_dir(&modules).with_context(|| format!("reading {}", modules.display()))?
    {
        releases.push(entry?.file_name().to_string_lossy().into_owned());
    }
    match releases.as_slice() {
        [one] => Ok(one.clone()),
        _ => bail!(
            "expected one release under {}, found {releases:?}",
            modules.display()
        ),
    }
}
