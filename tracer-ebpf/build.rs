//! Rebuild the eBPF object when the linker changes (a new bpf-linker can emit different BTF).
fn main() {
    if let Ok(path) = which::which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}
