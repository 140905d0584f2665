//! Builds the eBPF objects with aya-build (nightly + bpf-linker, always release) and puts them
//! in `OUT_DIR`, where `kernel::object` embeds them: `tracer` (the production object),
//! `tcp-state-probe` (the test-only TCP state probe) and `bench-floor` (the benchmarks' empty
//! programs).
//!
//! The root `cargo build` / `cargo test` must work on a machine without nightly or bpf-linker
//! (docs, unit tests, the state pipeline): there the build script writes an empty stub object and
//! says so; loading then fails with `Error::EbpfObjectMissing`. `cargo xtask` sets
//! `TRACER_REQUIRE_EBPF=1`, which turns a missing toolchain into a build error instead.

use std::{env, fs, path::PathBuf, process::Command};

use anyhow::{Context as _, anyhow};

const OBJECT_NAMES: [&str; 3] = ["tracer", "tcp-state-probe", "bench-floor"];

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=TRACER_REQUIRE_EBPF");
    println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").context("OUT_DIR not set")?);
    let objects = OBJECT_NAMES.map(|name| out_dir.join(name));
    let required = env::var("TRACER_REQUIRE_EBPF").is_ok_and(|v| v == "1");
    let skip = env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));

    let missing = missing_toolchain();
    if skip || missing.is_some() {
        let why = missing.unwrap_or_else(|| "AYA_BUILD_SKIP is set".to_owned());
        if required {
            return Err(anyhow!(
                "TRACER_REQUIRE_EBPF=1 but the eBPF object cannot be built: {why} (run `cargo xtask setup`)"
            ));
        }
        println!("cargo:warning=building without the eBPF object ({why}); the tracer cannot load");
        for object in &objects {
            fs::write(object, []).with_context(|| format!("writing stub {}", object.display()))?;
        }
        return Ok(());
    }

    let root_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").context("no manifest dir")?)
        .join("..")
        .join("tracer-ebpf");
    let root_dir = root_dir.to_str().context("non-UTF-8 path")?;
    // aya-build builds in a cargo target directory under `OUT_DIR`, which is new for every
    // distinct build of this crate (clippy, `cargo test`, the integration tests, `nettrace`
    // each have their own): each was a full nightly build of the eBPF crate and of `core`,
    // four of them (7.5 minutes) in one CI run. It reads `OUT_DIR` from the environment, so
    // it gets one shared directory beside this profile's (`target/ebpf`); the nested cargo
    // then finds its previous build and only copies, and the objects come here afterwards.
    let shared = shared_ebpf_dir(&out_dir);
    fs::create_dir_all(&shared).with_context(|| format!("creating {}", shared.display()))?;
    // SAFETY: a build script is one thread; nothing else reads the environment meanwhile.
    unsafe { env::set_var("OUT_DIR", &shared) };
    let built = aya_build::build_ebpf(
        [aya_build::Package {
            name: "tracer-ebpf",
            root_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::Nightly,
    );
    // SAFETY: as above.
    unsafe { env::set_var("OUT_DIR", &out_dir) };
    built?;
    for (name, object) in OBJECT_NAMES.iter().zip(&objects) {
        let built = shared.join(name);
        if !built.exists() {
            return Err(anyhow!("aya-build did not produce {}", built.display()));
        }
        // The fallback shares nothing: the object is already where it belongs (a copy onto
        // itself would truncate it).
        if built == *object {
            continue;
        }
        fs::copy(&built, object)
            .with_context(|| format!("copying {} to {}", built.display(), object.display()))?;
    }
    Ok(())
}

/// `<target>/ebpf` for an `OUT_DIR` of `<target>/<profile>/build/tracer-<hash>/out` (or
/// `<target>/<triple>/<profile>/...`: then `<target>/<triple>/ebpf`); `OUT_DIR` itself for any
/// other shape.
fn shared_ebpf_dir(out_dir: &std::path::Path) -> PathBuf {
    out_dir
        .ancestors()
        .nth(4)
        .filter(|_| {
            out_dir
                .parent()
                .and_then(|p| p.parent())
                .is_some_and(|b| b.ends_with("build"))
        })
        .map_or_else(|| out_dir.to_path_buf(), |target| target.join("ebpf"))
}

/// Why the eBPF toolchain is unusable here, or `None` when nightly and bpf-linker are present.
fn missing_toolchain() -> Option<String> {
    if which("bpf-linker").is_none() {
        return Some("bpf-linker is not on PATH".to_owned());
    }
    let nightly = Command::new("rustup")
        .args(["run", "nightly", "rustc", "--version"])
        .output();
    let sysroot = match nightly {
        Ok(out) if out.status.success() => Command::new("rustup")
            .args(["run", "nightly", "rustc", "--print", "sysroot"])
            .output()
            .ok()
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned()),
        _ => return Some("the nightly toolchain is not installed (rustup run nightly)".to_owned()),
    };
    let has_rust_src = sysroot.is_some_and(|root| {
        PathBuf::from(root)
            .join("lib/rustlib/src/rust/library/core")
            .is_dir()
    });
    if !has_rust_src {
        return Some(
            "nightly lacks rust-src (rustup component add rust-src --toolchain nightly)".to_owned(),
        );
    }
    None
}

fn which(program: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH")?;
    env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}
