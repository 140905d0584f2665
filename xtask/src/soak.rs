//! `cargo xtask soak --minutes N`: the soak of issue 14 (part 2) on the host. It runs the
//! integration test `soak::soak` (tests/tests/integration/soak.rs, ignored in ordinary runs)
//! alone, as root, for N minutes: churn in a namespace of its own, three clients, a sample of
//! RSS, descriptors, map occupancy and counters every ~10 s, and the per-client books. The test
//! checks what must hold and writes target/xtask/soak-summary.json; this prints its per-minute
//! table. `cargo xtask test` runs 2 minutes of it on the host (`test::CI_SOAK_MINUTES`).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::kernels::HOST_BACKENDS;
use crate::{cmd, libtest, paths};

/// Runs the soak test binary `binary` for `minutes`; returns whether it passed.
pub fn run_with(binary: &Path, minutes: f64) -> Result<bool> {
    let root = paths::workspace_root();
    let out = paths::xtask_out();
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let summary = out.join("soak-summary.json");
    // A summary left by an earlier run must not pass for this one's.
    let _ = std::fs::remove_file(&summary);
    let mut test = Command::new(binary);
    test.args([
        "--test-threads=1",
        "--ignored",
        "--exact",
        "soak::soak",
        "--nocapture",
    ])
    .env("TRACER_SOAK_MINUTES", minutes.to_string())
    .env("TRACER_SOAK_SUMMARY", &summary)
    .env("TRACER_TEST_STRICT", "1")
    .env("TRACER_TEST_HOST", "1")
    .env(
        "TRACER_TEST_BACKEND",
        HOST_BACKENDS.first().copied().unwrap_or("tracepoint"),
    )
    .env("RUST_BACKTRACE", "1")
    .current_dir(root.join("tests"));
    // The run's own length plus setup and the final settling; a hung run is killed.
    let timeout = Duration::from_secs_f64(minutes * 60.0 + 300.0);
    let run = cmd::tee(&mut test, "", timeout)?;
    let counts = libtest::parse(&run.output).unwrap_or_default();
    let passed = !run.timed_out && run.status.success() && counts.passed == 1;
    match std::fs::read_to_string(&summary) {
        Ok(text) => {
            let json: serde_json::Value =
                serde_json::from_str(&text).context("parsing the soak summary")?;
            print!("{}", table(&json));
            println!("xtask: wrote {}", summary.display());
        }
        Err(err) => println!("xtask: no soak summary at {}: {err}", summary.display()),
    }
    println!(
        "xtask: soak of {minutes} min {} ({}s)",
        if passed { "passed" } else { "FAILED" },
        run.elapsed.as_secs()
    );
    Ok(passed)
}

/// `cargo xtask soak`: builds the integration test binary, then runs the soak.
pub fn run(minutes: f64) -> Result<bool> {
    let binary = crate::test_binary::locate(&paths::workspace_root())?;
    run_with(&binary, minutes)
}

/// The per-minute table of a soak summary.
fn table(json: &serde_json::Value) -> String {
    let mut out = String::from(
        "minute  rss max (KiB)  fds max  map entries max  losses  ring lost  connections\n",
    );
    for row in json["per_minute"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "{:>6}  {:>13}  {:>7}  {:>15}  {:>6}  {:>9}  {:>11}\n",
            row["minute"],
            row["rss_max_kib"],
            row["fds_max"],
            row["map_entries_max"],
            row["losses"],
            row["ring_lost"],
            row["connections"]
        ));
    }
    let plateau = &json["plateau"];
    let rss = if plateau["rss_checked"].as_bool() == Some(false) {
        "RSS not checked (shorter than 5 min)".to_owned()
    } else {
        format!(
            "RSS {} -> {} KiB (bound {})",
            plateau["rss_first_minute_max_kib"],
            plateau["rss_last_minute_max_kib"],
            plateau["rss_bound_kib"]
        )
    };
    out.push_str(&format!(
        "plateau: {rss}, fds {} -> {} (bound {}); flows settled {}, \
         mismatched {}, losses {}, errors {}, idle client expired at {} s\n",
        plateau["fds_first_minute_max"],
        plateau["fds_last_minute_max"],
        plateau["fds_bound"],
        json["flows_settled"],
        json["flows_mismatched"],
        json["losses_during_run"],
        json["errors"],
        json["idle_client_expired_at_s"],
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_has_a_row_per_minute_and_the_plateau() {
        let json = serde_json::json!({
            "per_minute": [
                {"minute": 1, "rss_max_kib": 1000, "fds_max": 30, "map_entries_max": 12,
                 "losses": 0, "ring_lost": 0, "connections": 6000},
                {"minute": 2, "rss_max_kib": 1010, "fds_max": 31, "map_entries_max": 14,
                 "losses": 0, "ring_lost": 0, "connections": 6001},
            ],
            "plateau": {"rss_first_minute_max_kib": 1000, "rss_last_minute_max_kib": 1010,
                        "rss_bound_kib": 5196, "fds_first_minute_max": 30,
                        "fds_last_minute_max": 31, "fds_bound": 38},
            "flows_settled": 24000, "flows_mismatched": 0, "losses_during_run": 0,
            "errors": 0, "idle_client_expired_at_s": 40.0,
        });
        let table = table(&json);
        assert_eq!(table.lines().count(), 4, "{table}");
        assert!(table.contains("  1010  "), "{table}");
        assert!(
            table.contains("RSS 1000 -> 1010 KiB (bound 5196)"),
            "{table}"
        );
    }
}
