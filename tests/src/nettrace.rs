//! Where the tests that run the `nettrace` tool (its live view, `nettrace serve`) find it.

use std::path::{Path, PathBuf};

/// The `nettrace` binary of this build: `TRACER_TEST_NETTRACE` (which `cargo xtask test` sets
/// after building it), or else the one beside this test's `deps/` folder (by hand: `cargo build
/// -p nettrace` first). Panics, with what to do, when there is none.
pub fn bin() -> PathBuf {
    if let Some(path) = std::env::var_os("TRACER_TEST_NETTRACE") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "TRACER_TEST_NETTRACE={} is not a file",
            path.display()
        );
        return path;
    }
    let exe = std::env::current_exe().expect("current_exe");
    let path = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps")
        .join("nettrace");
    assert!(
        path.is_file(),
        "{} is missing: `cargo build -p nettrace`, or set TRACER_TEST_NETTRACE (cargo xtask test \
         does both)",
        path.display()
    );
    path
}
