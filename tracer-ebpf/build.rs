//! Rebuild the eBPF object when the linker changes (a new bpf-linker can emit different BTF), and
//! pass bpf-linker the flags the programs need.
fn main() {
    if let Ok(path) = which::which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    // bpf-linker asks LLVM for `-bpf-expand-memcpy-in-order` by default. That mode turns off
    // LLVM's own expansion of memset and memmove into loads and stores (only memcpy is expanded
    // later), so every struct zeroing or copy, even of 3 bytes, became a call to the byte-wise
    // `memset`/`memmove` of compiler_builtins: 42 such calls in the raw tracepoint send program,
    // a 160-byte byte loop for each closed connection's record, and the verifier walking every
    // one of those loops (887,288 verified instructions for cgroup/sock_release, of 1,000,000).
    // Without it LLVM expands each with up to 128 stores, as clang does for C programs.
    println!("cargo:rustc-link-arg=--disable-expand-memcpy-in-order");
}
