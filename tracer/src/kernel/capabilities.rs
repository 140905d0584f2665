//! What the running kernel offers, probed once (cilium/ebpf-style feature tests), as plain data
//! for the pure backend choice in `plan`.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

use super::{
    btf::Btf,
    plan::{Hook, PROBES},
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
    /// Where cgroup v2 is mounted (from `/proc/self/mounts`), for the cgroup programs attached
    /// to its root; `None` without a cgroup v2 mount.
    pub cgroup2: Option<PathBuf>,
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
                Hook::CgroupSockRelease | Hook::CgroupSockOps | Hook::IterTcp => {}
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
            cgroup2: cgroup2_mount(),
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
                Hook::CgroupSockRelease | Hook::CgroupSockOps | Hook::IterTcp => {}
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
            cgroup2: Some(PathBuf::from("/sys/fs/cgroup")),
        }
    }
}

/// Where cgroup v2 is mounted, from `/proc/self/mounts` (e.g. `/sys/fs/cgroup`, or
/// `/sys/fs/cgroup/unified` beside v1 hierarchies), or `None` without a cgroup v2 mount.
pub fn cgroup2_mount() -> Option<PathBuf> {
    std::fs::read_to_string("/proc/self/mounts")
        .ok()
        .and_then(|mounts| parse_cgroup2_mount(&mounts))
}

/// The first `cgroup2` mount point in a `/proc/<pid>/mounts` text (octal escapes such as `\040`
/// for a space decoded).
fn parse_cgroup2_mount(mounts: &str) -> Option<PathBuf> {
    mounts.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let (_source, target, fstype) = (fields.next()?, fields.next()?, fields.next()?);
        (fstype == "cgroup2").then(|| PathBuf::from(unescape_mount_path(target)))
    })
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

    #[test]
    fn finds_the_cgroup2_mount_beside_v1_hierarchies() {
        let mounts = "tmpfs /sys/fs/cgroup tmpfs rw,relatime,mode=755 0 0
cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0
";
        assert_eq!(
            parse_cgroup2_mount(mounts),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
    }

    #[test]
    fn finds_a_pure_v2_mount_and_decodes_escapes() {
        assert_eq!(
            parse_cgroup2_mount("cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid 0 0\n"),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
        assert_eq!(
            parse_cgroup2_mount("none /mnt/my\\040cg cgroup2 rw 0 0"),
            Some(PathBuf::from("/mnt/my cg"))
        );
    }

    #[test]
    fn the_tracepoint_backend_needs_a_cgroup2_mount_and_says_so() {
        use crate::kernel::plan::{Backend, BackendChoice, plan};
        use tracer_common::names;

        let mut caps =
            Capabilities::for_tests(KernelVersion::new(6, 18, 44), true, false, false, true);
        let planned = plan(BackendChoice::Force(Backend::Tracepoint), &caps).unwrap();
        let programs: Vec<_> = planned.probes.iter().map(|p| p.program).collect();
        for program in [
            names::PROG_UDP_RELEASE,
            names::PROG_TP_SENDTO,
            names::PROG_TPX_RECVMMSG,
        ] {
            assert!(programs.contains(&program), "{program} in {programs:?}");
        }
        // Every enter program comes after its exit: no argument stash outlives its syscall.
        let position = |name| programs.iter().position(|p| *p == name).unwrap();
        assert!(position(names::PROG_TPX_RECVFROM) < position(names::PROG_TP_RECVFROM));
        assert!(position(names::PROG_TPX_SENDMMSG) < position(names::PROG_TP_SENDMMSG));

        caps.cgroup2 = None;
        let err = plan(BackendChoice::Force(Backend::Tracepoint), &caps).unwrap_err();
        assert!(err.to_string().contains("cgroup v2 mount"), "{err}");
    }

    #[test]
    fn no_cgroup2_mount_is_none() {
        let mounts = "cgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0\nproc /proc proc rw 0 0\n";
        assert_eq!(parse_cgroup2_mount(mounts), None);
        assert_eq!(parse_cgroup2_mount(""), None);
    }
}
