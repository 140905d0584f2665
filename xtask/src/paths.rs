//! Where things live: the workspace, xtask's outputs under target/xtask, and the download cache.

use std::path::{Path, PathBuf};

/// The workspace root. xtask is always built from the checkout it drives, so its own manifest
/// directory's parent is the root, wherever the checkout is.
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// Outputs meant for people and CI (summaries, initramfs images): `<root>/target/xtask`, regardless of
/// CARGO_TARGET_DIR, so their location is fixed.
pub fn xtask_out() -> PathBuf {
    workspace_root().join("target").join("xtask")
}

/// Downloads that survive `cargo clean` and new checkouts: `$XDG_CACHE_HOME/tracer-xtask` or
/// `~/.cache/tracer-xtask`.
pub fn cache_dir() -> PathBuf {
    let non_empty = |v: std::ffi::OsString| (!v.is_empty()).then(|| PathBuf::from(v));
    if let Some(xdg) = std::env::var_os("XDG_CACHE_HOME").and_then(non_empty) {
        return xdg.join("tracer-xtask");
    }
    if let Some(home) = std::env::var_os("HOME").and_then(non_empty) {
        return home.join(".cache").join("tracer-xtask");
    }
    xtask_out().join("cache")
}
