//! The result of `cargo xtask test`: a table on stdout and target/xtask/test-summary.json.

use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::libtest::Counts;

/// One integration-test run: one kernel × one backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Run {
    /// `uname -r` of the kernel it ran on.
    pub kernel: String,
    pub backend: String,
    pub counts: Counts,
    /// `ok` or `FAILED (...)`, for the table only.
    pub status: String,
}

impl Run {
    pub fn ok(&self) -> bool {
        self.counts.failed == 0 && self.counts.passed > 0
    }
}

/// A lint/build/unit-test step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    pub name: String,
    pub ok: bool,
    pub note: String,
}

#[derive(Default)]
pub struct Summary {
    pub steps: Vec<Step>,
    pub runs: Vec<Run>,
}

/// The JSON shape other tools read: runs only.
#[derive(Serialize)]
struct Json<'a> {
    runs: Vec<JsonRun<'a>>,
}

#[derive(Serialize)]
struct JsonRun<'a> {
    kernel: &'a str,
    backend: &'a str,
    passed: u64,
    failed: u64,
    ignored: u64,
}

impl Summary {
    pub fn step(&mut self, name: &str, ok: bool, note: impl Into<String>) {
        self.steps.push(Step {
            name: name.to_owned(),
            ok,
            note: note.into(),
        });
    }

    pub fn ok(&self) -> bool {
        self.steps.iter().all(|s| s.ok) && self.runs.iter().all(Run::ok)
    }

    pub fn to_json(&self) -> Result<String> {
        let json = Json {
            runs: self
                .runs
                .iter()
                .map(|r| JsonRun {
                    kernel: &r.kernel,
                    backend: &r.backend,
                    passed: r.counts.passed,
                    failed: r.counts.failed,
                    ignored: r.counts.ignored,
                })
                .collect(),
        };
        Ok(serde_json::to_string_pretty(&json)? + "\n")
    }

    pub fn write_json(&self, path: &Path) -> Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        std::fs::write(path, self.to_json()?).with_context(|| format!("writing {}", path.display()))
    }

    pub fn table(&self) -> String {
        let mut rows = vec![[
            "kernel".to_owned(),
            "backend".to_owned(),
            "passed".to_owned(),
            "failed".to_owned(),
            "ignored".to_owned(),
            "status".to_owned(),
        ]];
        for s in &self.steps {
            let status = match (s.ok, s.note.is_empty()) {
                (true, _) => "ok".to_owned(),
                (false, true) => "FAILED".to_owned(),
                (false, false) => format!("FAILED ({})", s.note),
            };
            rows.push([
                format!("[{}]", s.name),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                status,
            ]);
        }
        for r in &self.runs {
            rows.push([
                r.kernel.clone(),
                r.backend.clone(),
                r.counts.passed.to_string(),
                r.counts.failed.to_string(),
                r.counts.ignored.to_string(),
                r.status.clone(),
            ]);
        }
        let mut widths = [0usize; 6];
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for (i, row) in rows.iter().enumerate() {
            let cells: Vec<String> = row
                .iter()
                .zip(widths)
                .map(|(cell, w)| format!("{cell:<w$}"))
                .collect();
            out.push_str(cells.join("  ").trim_end());
            out.push('\n');
            if i == 0 {
                let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
                out.push_str(&rule.join("  "));
                out.push('\n');
            }
        }
        out
    }

    /// A closing line in the plain `N passed, N failed, N skipped` form CI log readers count.
    pub fn totals_line(&self) -> String {
        let (p, f, i) = self.runs.iter().fold((0, 0, 0), |(p, f, i), r| {
            (
                p + r.counts.passed,
                f + r.counts.failed,
                i + r.counts.ignored,
            )
        });
        let failed_steps = self.steps.iter().filter(|s| !s.ok).count() as u64;
        format!(
            "xtask: {p} passed, {} failed, {i} skipped",
            f + failed_steps
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Summary {
        let mut s = Summary::default();
        s.step("fmt", true, "");
        s.step("clippy", false, "exit status: 101");
        s.runs.push(Run {
            kernel: "6.1.0-50-cloud-amd64".into(),
            backend: "tracepoint".into(),
            counts: Counts {
                passed: 3,
                failed: 0,
                ignored: 2,
            },
            status: "ok".into(),
        });
        s
    }

    #[test]
    fn json_has_exactly_the_run_fields() {
        let v: serde_json::Value = serde_json::from_str(&sample().to_json().unwrap()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"runs": [{"kernel": "6.1.0-50-cloud-amd64", "backend": "tracepoint",
                "passed": 3, "failed": 0, "ignored": 2}]})
        );
    }

    #[test]
    fn table_lists_steps_and_runs() {
        let t = sample().table();
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("kernel"));
        assert!(lines[2].starts_with("[fmt]") && lines[2].ends_with("ok"));
        assert!(lines[3].ends_with("FAILED (exit status: 101)"));
        assert!(lines[4].starts_with("6.1.0-50-cloud-amd64  tracepoint  3"));
    }

    #[test]
    fn verdicts() {
        let mut s = sample();
        assert!(!s.ok());
        s.steps.retain(|st| st.ok);
        assert!(s.ok());
        s.runs[0].counts.passed = 0;
        assert!(!s.ok());
        assert_eq!(s.totals_line(), "xtask: 0 passed, 0 failed, 2 skipped");
    }
}
