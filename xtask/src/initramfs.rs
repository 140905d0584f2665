//! The initramfs a VM kernel boots into: busybox, the test binary, `ip`/`nft`/`tc`/`setpriv`, the
//! shared libraries of all of them, the kernel modules the tests may need and a generated /init.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::cpio::{Archive, Data};
use crate::init_script::{self, InitSpec};
use crate::kernels::CachedKernel;
use crate::modules::ModulesDep;
use crate::{cmd, ldd};

/// Modules the integration tests may need: veth pairs, nftables drop rules (random drops use
/// numgen, counters are a module on older kernels) and netem delay/loss. Names that are built into
/// a kernel, or absent from it, are skipped.
pub const WANTED_MODULES: &[&str] = &[
    "veth",
    "nf_tables",
    "nft_counter",
    "nft_numgen",
    "nft_ct",
    "nft_reject_inet",
    "sch_netem",
    // NAT and its conntrack events (the conntrack enrichment's test): DNAT, masquerade, and
    // ctnetlink, which is not loaded on demand without modprobe.
    "nf_nat",
    "nft_nat",
    "nft_chain_nat",
    "nft_masq",
    "nf_conntrack_netlink",
];

/// Real tools shipped instead of busybox's applets of the same name (busybox's `ip` lacks veth and
/// netns support, and it has no `nft`; busybox's `setpriv` lacks `--reuid` and `--bounding-set`, which the
/// capability tests use to run the tracer as a non-root user holding an exact set). `conntrack`
/// (conntrack-tools) is the NAT test's ground truth; `dnsmasq` (dnsmasq-base) and `dig`
/// (bind9-dnsutils) are the DNS tests' server and client. dig's libraries are the bulk of the
/// image (ICU's data alone is 31 MB): it runs with no /etc/resolv.conf, as the tests always name
/// the server. `nginx` (nginx-light) and `curl` are the HTTP tests' server and client: nginx
/// runs from a config of the test's (every path under its temporary directory) and, as root,
/// looks its default user up in /etc/passwd, shipped below; curl's libraries add about 10 MB.
const TOOLS: &[&str] = &[
    "ip",
    "nft",
    "tc",
    "setpriv",
    "conntrack",
    "dnsmasq",
    "dig",
    "nginx",
    "curl",
    // The HTTPS tests: a self-signed certificate, and the GnuTLS client.
    "openssl",
    "gnutls-cli",
];

/// busybox-static's binary: static, so it needs no libraries.
const BUSYBOX: &str = "/bin/busybox";

pub const TEST_BINARY_IN_IMAGE: &str = "/xtask/integration";

/// Host files some tools read when present (nft and getaddrinfo resolve protocol/service names;
/// nginx started as root resolves its worker user, even with `master_process off`).
const ETC_FILES: &[&str] = &[
    "/etc/protocols",
    "/etc/services",
    "/etc/nsswitch.conf",
    "/etc/passwd",
    "/etc/group",
];

pub struct Built {
    pub modules: Vec<String>,
    /// Wanted modules that are not loadable modules on this kernel.
    pub not_modules: Vec<String>,
    pub libraries: usize,
    pub bytes: u64,
}

pub fn build(
    kernel: &CachedKernel,
    test_binary: &Path,
    run_timeout_secs: u64,
    out: &Path,
) -> Result<Built> {
    let mut archive = Archive::default();
    for dir in ["proc", "sys", "dev", "tmp", "run", "root", "etc"] {
        archive.dir(dir);
    }
    // The kernel opens /dev/console for init's stdio before /init can mount devtmpfs.
    archive.char_dev("dev/console", 5, 1, 0o600);

    archive.file("bin/busybox", Data::File(BUSYBOX.into()), 0o755);
    let applets = cmd::stdout_of(Command::new(BUSYBOX).arg("--list-full"))?;
    for applet in applets.lines().map(str::trim).filter(|a| !a.is_empty()) {
        let name = applet.rsplit('/').next().unwrap_or(applet);
        if !TOOLS.contains(&name) && !archive.contains(applet) {
            archive.symlink(applet, "/bin/busybox");
        }
    }

    let mut binaries = vec![test_binary.to_path_buf()];
    archive.file(TEST_BINARY_IN_IMAGE, Data::File(test_binary.into()), 0o755);
    for tool in TOOLS {
        let path = cmd::find_program(tool).with_context(|| {
            format!(
                "`{tool}` not found on the host (Debian packages iproute2, nftables, util-linux, conntrack, \
                 dnsmasq-base, bind9-dnsutils, nginx-light, curl, openssl, gnutls-bin: `cargo xtask setup` installs them)"
            )
        })?;
        archive.file(&format!("usr/sbin/{tool}"), Data::File(path.clone()), 0o755);
        binaries.push(path);
    }
    let mut libraries = BTreeSet::new();
    for binary in &binaries {
        libraries.extend(ldd::libraries(binary)?);
    }
    for library in &libraries {
        // Same path as on the host (ldd's view, e.g. /lib64/ld-linux-x86-64.so.2 and
        // /lib/x86_64-linux-gnu/libc.so.6), content of the symlink's target.
        let real = std::fs::canonicalize(library)
            .with_context(|| format!("resolving {}", library.display()))?;
        archive.file(&library.to_string_lossy(), Data::File(real), 0o755);
    }
    for etc in ETC_FILES {
        if Path::new(etc).is_file() {
            archive.file(etc, Data::File(etc.into()), 0o644);
        }
    }

    let dep_file = kernel.modules.join("modules.dep");
    let dep_text = std::fs::read_to_string(&dep_file)
        .with_context(|| format!("reading {}", dep_file.display()))?;
    let (order, not_modules) = ModulesDep::parse(&dep_text).closure(WANTED_MODULES);
    let mut module_paths = Vec::new();
    for relative in &order {
        let (data, stripped) = decompressed(&kernel.modules.join(relative))?;
        let plain_name = relative.strip_suffix(stripped).unwrap_or(relative);
        let in_image = format!("/lib/modules/{}/{plain_name}", kernel.release);
        archive.file(&in_image, data, 0o644);
        module_paths.push(in_image);
    }

    let init = init_script::render(&InitSpec {
        modules: &module_paths,
        backends: kernel.backends,
        test_binary: TEST_BINARY_IN_IMAGE,
        run_timeout_secs,
        filter: crate::knobs::filter().as_deref(),
    })?;
    archive.file("init", Data::Bytes(init.into_bytes()), 0o755);

    write_gzipped(&archive, out)?;
    let bytes = std::fs::metadata(out)?.len();
    Ok(Built {
        modules: order,
        not_modules,
        libraries: libraries.len(),
        bytes,
    })
}

/// busybox's insmod cannot be relied on to read compressed modules (and the kernel only
/// decompresses them itself from 6.x with a flag insmod does not pass), so decompress here.
/// Returns the data and the suffix it stripped.
fn decompressed(path: &Path) -> Result<(Data, &'static str)> {
    let name = path.to_string_lossy();
    let (tool, suffix) = if name.ends_with(".ko.xz") {
        ("xz", ".xz")
    } else if name.ends_with(".ko.zst") {
        ("zstd", ".zst")
    } else if name.ends_with(".ko.gz") {
        ("gzip", ".gz")
    } else {
        return Ok((Data::File(path.to_path_buf()), ""));
    };
    let out = cmd::output(Command::new(tool).args(["-d", "-c"]).arg(path))?;
    if !out.status.success() {
        bail!(
            "{tool} -d {} failed: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok((Data::Bytes(out.stdout), suffix))
}

/// The kernel takes gzip; `gzip -1` is several times faster than the default for a few percent
/// more bytes, which matters more for a 100+ MB debug test binary than the size.
fn write_gzipped(archive: &Archive, out: &Path) -> Result<()> {
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let file = File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut gzip = Command::new("gzip")
        .args(["-1", "-n", "-c"])
        .stdin(Stdio::piped())
        .stdout(file)
        .spawn()
        .context("starting gzip")?;
    let stdin = gzip.stdin.take().context("gzip stdin was not piped")?;
    let mut writer = BufWriter::with_capacity(1 << 20, stdin);
    archive.write_to(&mut writer)?;
    writer.flush()?;
    drop(writer);
    let st = gzip.wait()?;
    if !st.success() {
        bail!("gzip failed ({st}) writing {}", out.display());
    }
    Ok(())
}

/// Where the image for one kernel goes.
pub fn image_path(kernel: &CachedKernel) -> PathBuf {
    crate::paths::xtask_out()
        .join("vm")
        .join(kernel.label)
        .join("initramfs.cpio.gz")
}
