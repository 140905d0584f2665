//! What the running kernel offers, probed once (cilium/ebpf-style feature tests), as plain data
//! for the pure backend choice in `plan`.

use std::{collections::BTreeSet, path::Path};

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
        }
    }
}
