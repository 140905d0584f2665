//! What the running kernel offers, probed once (cilium/ebpf-style feature tests), as plain data
//! for the pure backend choice in `plan`.

use std::{
    collections::BTreeSet,
    ffi::CString,
    fmt,
    fs::File,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
};

use super::{
    btf::Btf,
    probes::{Hook, PROBES},
    version::KernelVersion,
};

/// The kernel's BTF, where every supported kernel puts it.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// The result of probing the kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// Parsed version.
    pub kernel: KernelVersion,
    /// `uname -r`.
    pub release: String,
    /// Kernel BTF is readable.
    pub btf: bool,
    /// kprobes can be created (the kprobe PMU exists).
    pub kprobes: bool,
    /// BPF tracing (fentry/fexit) programs load.
    pub fentry: bool,
    /// Tracepoints of the probe table that exist, as `category:name`.
    pub tracepoints: BTreeSet<String>,
    /// Kernel functions of the probe table that exist in BTF.
    pub functions: BTreeSet<String>,
    /// Where the root of the cgroup v2 hierarchy is found, for the cgroup programs attached to
    /// it; `None` when it is found nowhere (see [`find_cgroup2_root`]).
    pub cgroup2: Option<Cgroup2Root>,
}

impl Capabilities {
    /// Probes the running kernel. `tracefs` must be mounted; `btf` is the parsed kernel BTF when
    /// it could be read.
    pub fn probe(tracefs: &Path, btf: Option<&Btf>) -> Self {
        let release = KernelVersion::current_release();
        let kernel = KernelVersion::parse_release(&release).unwrap_or(KernelVersion::new(0, 0, 0));
        let mut tracepoints = BTreeSet::new();
        let mut functions = BTreeSet::new();
        for probe in PROBES {
            match probe.hook {
                Hook::Tracepoint { category, name } => {
                    if tracefs.join("events").join(category).join(name).is_dir() {
                        tracepoints.insert(format!("{category}:{name}"));
                    }
                }
                Hook::Fentry { function }
                | Hook::Fexit { function }
                | Hook::Kprobe { function }
                | Hook::Kretprobe { function } => {
                    if btf.is_some_and(|btf| btf.has_function(function)) {
                        functions.insert(function.to_owned());
                    }
                }
                Hook::CgroupSockRelease
                | Hook::CgroupSockOps
                | Hook::IterTcp
                | Hook::IterTaskFile
                | Hook::IterTcpSeed
                | Hook::IterUdpSeed
                | Hook::CgroupSkbIngress
                | Hook::CgroupSkbEgress
                | Hook::CgroupSockAddr(_)
                | Hook::Uprobe
                | Hook::Uretprobe => {}
            }
        }
        let fentry = btf.is_some()
            && aya::sys::is_program_supported(aya::programs::ProgramType::Tracing).unwrap_or(false);
        Self {
            kernel,
            release,
            btf: btf.is_some(),
            kprobes: Path::new("/sys/bus/event_source/devices/kprobe").exists(),
            fentry,
            tracepoints,
            functions,
            cgroup2: find_cgroup2_root(),
        }
    }

    /// Whether tracepoint `category:name` exists.
    pub fn has_tracepoint(&self, category: &str, name: &str) -> bool {
        self.tracepoints.contains(&format!("{category}:{name}"))
    }

    /// Whether kernel function `name` exists (in BTF).
    pub fn has_function(&self, name: &str) -> bool {
        self.functions.contains(name)
    }

    /// A synthetic kernel for unit tests of the backend choice: every probed hook exists except
    /// the `sock_send_length`/`sock_recv_length` tracepoints when `send_length_tracepoints` is
    /// false.
    #[cfg(test)]
    pub(crate) fn for_tests(
        kernel: KernelVersion,
        btf: bool,
        kprobes: bool,
        fentry: bool,
        send_length_tracepoints: bool,
    ) -> Self {
        let mut tracepoints = BTreeSet::new();
        let mut functions = BTreeSet::new();
        for probe in PROBES {
            match probe.hook {
                Hook::Tracepoint { category, name } => {
                    if send_length_tracepoints || !name.ends_with("_length") {
                        tracepoints.insert(format!("{category}:{name}"));
                    }
                }
                Hook::Fentry { function }
                | Hook::Fexit { function }
                | Hook::Kprobe { function }
                | Hook::Kretprobe { function } => {
                    functions.insert(function.to_owned());
                }
                Hook::CgroupSockRelease
                | Hook::CgroupSockOps
                | Hook::IterTcp
                | Hook::IterTaskFile
                | Hook::IterTcpSeed
                | Hook::IterUdpSeed
                | Hook::CgroupSkbIngress
                | Hook::CgroupSkbEgress
                | Hook::CgroupSockAddr(_)
                | Hook::Uprobe
                | Hook::Uretprobe => {}
            }
        }
        Self {
            kernel,
            release: kernel.to_string(),
            btf,
            kprobes,
            fentry,
            tracepoints,
            functions,
            cgroup2: Some(Cgroup2Root::Mounted(PathBuf::from("/sys/fs/cgroup"))),
        }
    }
}

/// Where cgroup v2 is mounted in this mount namespace with the hierarchy's root at its mount
/// point (from `/proc/self/mountinfo`: e.g. `/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` beside
/// v1 hierarchies), or `None` when this namespace has none (e.g. under `ip netns exec`, which
/// mounts a fresh /sys). See [`find_cgroup2_root`] for the tracer's fallbacks.
pub fn cgroup2_mount() -> Option<PathBuf> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .ok()
        .and_then(|text| parse_cgroup2_mount(&text))
}

/// Where the tracer gets the root of the cgroup v2 hierarchy its cgroup programs attach to
/// (attaching to the root covers every process).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cgroup2Root {
    /// A cgroup v2 mount of the tracer's own mount namespace.
    Mounted(PathBuf),
    /// This namespace has none: pid 1's mount, reached through `/proc/1/root` (needs access to
    /// pid 1's root: root, or CAP_SYS_PTRACE).
    ViaPid1(PathBuf),
    /// Neither is visible: a private `mount -t cgroup2` on a fresh directory, opened and
    /// detached at once (needs CAP_SYS_ADMIN). It shows the root of the tracer's cgroup
    /// namespace, which is the host's unless the tracer runs in a cgroup namespace of its own.
    PrivateMount,
}

impl Cgroup2Root {
    /// Opens the hierarchy's root directory (the descriptor cgroup programs attach to).
    pub fn open(&self) -> std::io::Result<File> {
        match self {
            Self::Mounted(path) | Self::ViaPid1(path) => File::open(path),
            Self::PrivateMount => open_private_cgroup2(),
        }
    }
}

impl fmt::Display for Cgroup2Root {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Mounted(path) => write!(f, "cgroup v2 root {} (mounted here)", path.display()),
            Self::ViaPid1(path) => write!(
                f,
                "cgroup v2 root {} (pid 1's mount: none in this mount namespace)",
                path.display()
            ),
            Self::PrivateMount => f.write_str(
                "cgroup v2 root from a private cgroup2 mount (none in this mount namespace, \
                 pid 1's not accessible)",
            ),
        }
    }
}

/// Finds the root of the cgroup v2 hierarchy: this namespace's mount, else pid 1's through
/// `/proc/1/root`, else a private mount (tried once here, so that `None` means none works).
pub fn find_cgroup2_root() -> Option<Cgroup2Root> {
    if let Some(path) = cgroup2_mount() {
        return Some(Cgroup2Root::Mounted(path));
    }
    let pid1 = std::fs::read_to_string("/proc/1/mountinfo")
        .ok()
        .and_then(|text| parse_cgroup2_mount(&text))
        .map(|mount| via_pid1_root(&mount));
    match pid1 {
        Some(path) if std::fs::File::open(&path).is_ok() => {
            return Some(Cgroup2Root::ViaPid1(path));
        }
        Some(path) => {
            tracing::debug!(path = %path.display(), "pid 1's cgroup v2 mount is not accessible");
        }
        None => {}
    }
    match open_private_cgroup2() {
        Ok(_) => Some(Cgroup2Root::PrivateMount),
        Err(err) => {
            tracing::debug!(%err, "no private cgroup v2 mount");
            None
        }
    }
}

/// `/proc/1/root` joined with pid 1's mount point.
fn via_pid1_root(mount_point: &Path) -> PathBuf {
    let relative = mount_point.strip_prefix("/").unwrap_or(mount_point);
    Path::new("/proc/1/root").join(relative)
}

static PRIVATE_MOUNTS: AtomicU32 = AtomicU32::new(0);

/// Mounts cgroup2 on a fresh directory (under /run, else the temporary directory), opens its
/// root, detaches the mount and removes the directory: the descriptor keeps the cgroup.
fn open_private_cgroup2() -> std::io::Result<File> {
    let name = format!(
        "nettracer-cgroup2-{}-{}",
        std::process::id(),
        PRIVATE_MOUNTS.fetch_add(1, Ordering::Relaxed)
    );
    let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "no directory to mount on");
    for base in [PathBuf::from("/run"), std::env::temp_dir()] {
        let dir = base.join(&name);
        if let Err(err) = std::fs::create_dir(&dir) {
            last = err;
            continue;
        }
        let opened = mount_cgroup2(&dir).and_then(|()| {
            let file = File::open(&dir);
            let detached = unmount_detach(&dir);
            let file = file?;
            detached.map(|()| file)
        });
        if let Err(err) = std::fs::remove_dir(&dir) {
            tracing::warn!(dir = %dir.display(), %err, "removing the private cgroup2 mount point");
        }
        match opened {
            Ok(file) => return Ok(file),
            Err(err) => last = err,
        }
    }
    Err(last)
}

fn path_cstring(path: &Path) -> std::io::Result<CString> {
    CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
}

fn mount_cgroup2(dir: &Path) -> std::io::Result<()> {
    let target = path_cstring(dir)?;
    let fstype = c"cgroup2";
    // SAFETY: valid NUL-terminated strings for the duration of the call; no data argument.
    let rc = unsafe {
        libc::mount(
            fstype.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            std::ptr::null(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn unmount_detach(dir: &Path) -> std::io::Result<()> {
    let target = path_cstring(dir)?;
    // SAFETY: a valid NUL-terminated path.
    if unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// One line of `/proc/<pid>/mountinfo`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct MountInfo {
    /// The directory of the filesystem that is mounted (`/` for a whole filesystem).
    pub root: String,
    /// Where it is mounted, escapes decoded.
    pub mount_point: PathBuf,
    /// Filesystem type, e.g. `cgroup2`.
    pub fstype: String,
}

/// Parses `/proc/<pid>/mountinfo` (`36 35 98:0 /root /mnt rw,noatime shared:1 - ext3 /dev/sda
/// rw`); malformed lines are skipped.
pub(crate) fn parse_mountinfo(text: &str) -> Vec<MountInfo> {
    text.lines()
        .filter_map(|line| {
            let (before, after) = line.split_once(" - ")?;
            let mut fields = before.split_whitespace();
            let (_id, _parent, _dev) = (fields.next()?, fields.next()?, fields.next()?);
            let (root, mount_point) = (fields.next()?, fields.next()?);
            let fstype = after.split_whitespace().next()?;
            Some(MountInfo {
                root: unescape_mount_path(root),
                mount_point: PathBuf::from(unescape_mount_path(mount_point)),
                fstype: fstype.to_owned(),
            })
        })
        .collect()
}

/// The first `cgroup2` mount of a mountinfo text whose mount point is the hierarchy's root (a
/// bind mount of a sub-cgroup would cover only part of the processes).
pub(crate) fn parse_cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    parse_mountinfo(mountinfo)
        .into_iter()
        .find(|m| m.fstype == "cgroup2" && m.root == "/")
        .map(|m| m.mount_point)
}

/// Decodes the `\ooo` octal escapes the kernel writes for space, tab, newline and backslash.
fn unescape_mount_path(path: &str) -> String {
    let mut out = Vec::with_capacity(path.len());
    let mut rest = path.as_bytes();
    while let Some((&first, tail)) = rest.split_first() {
        match (first, tail) {
            (
                b'\\',
                [
                    a @ b'0'..=b'7',
                    b @ b'0'..=b'7',
                    c @ b'0'..=b'7',
                    after @ ..,
                ],
            ) => {
                out.push(((a - b'0') << 6) | ((b - b'0') << 3) | (c - b'0'));
                rest = after;
            }
            _ => {
                out.push(first);
                rest = tail;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This host's /proc/self/mountinfo, abridged.
    const HOST_MOUNTINFO: &str = "\
22 28 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
31 22 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
35 31 0:30 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:11 - cgroup cgroup rw,cpu,cpuacct
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
42 23 0:13 / /sys/kernel/tracing rw,relatime - tracefs tracefs rw
";

    #[test]
    fn finds_the_cgroup2_mount_beside_v1_hierarchies() {
        assert_eq!(
            parse_cgroup2_mount(HOST_MOUNTINFO),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
    }

    #[test]
    fn parses_mountinfo_fields_with_optional_fields_and_escapes() {
        let mounts = parse_mountinfo(
            "36 35 98:0 /sub\\040dir /mnt/my\\040cg rw,noatime master:1 shared:2 - cgroup2 none rw\n\
             garbage line\n\
             37 35 98:0 / /proc rw - proc proc rw\n",
        );
        assert_eq!(
            mounts,
            vec![
                MountInfo {
                    root: "/sub dir".to_owned(),
                    mount_point: PathBuf::from("/mnt/my cg"),
                    fstype: "cgroup2".to_owned(),
                },
                MountInfo {
                    root: "/".to_owned(),
                    mount_point: PathBuf::from("/proc"),
                    fstype: "proc".to_owned(),
                },
            ]
        );
    }

    #[test]
    fn a_bind_mount_of_a_sub_cgroup_is_not_the_root() {
        let mountinfo = "\
50 40 0:38 /system.slice/x.service /sys/fs/cgroup rw - cgroup2 cgroup2 rw
51 40 0:38 / /mnt/cg2 rw - cgroup2 cgroup2 rw
";
        assert_eq!(
            parse_cgroup2_mount(mountinfo),
            Some(PathBuf::from("/mnt/cg2"))
        );
        assert_eq!(
            parse_cgroup2_mount("50 40 0:38 /a /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n"),
            None
        );
    }

    #[test]
    fn pid1_mount_is_reached_through_proc_1_root() {
        assert_eq!(
            via_pid1_root(Path::new("/sys/fs/cgroup/unified")),
            PathBuf::from("/proc/1/root/sys/fs/cgroup/unified")
        );
    }

    #[test]
    fn no_cgroup2_mount_is_none() {
        // What `ip netns exec` leaves: a fresh sysfs, no cgroup mounts under it.
        let mounts = "\
22 28 0:21 / /proc rw,nosuid - proc proc rw
90 28 0:55 / /sys rw,relatime - sysfs ip-netns rw
";
        assert_eq!(parse_cgroup2_mount(mounts), None);
        assert_eq!(parse_cgroup2_mount(""), None);
    }
}
