//! Reading libtest's verdict from a test binary's output, and turning a run into counts that never
//! hide a crash.

use serde::Serialize;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub passed: u64,
    pub failed: u64,
    pub ignored: u64,
}

/// Sums every `test result: ok. 3 passed; 0 failed; 2 ignored; 0 measured; 0 filtered out; ...`
/// line (one binary prints one, but a log may hold several); None when there is none. The marker is
/// looked for anywhere in the line: on a serial console other output can precede it.
pub fn parse(output: &str) -> Option<Counts> {
    let mut total: Option<Counts> = None;
    for line in output.lines() {
        let Some((_, rest)) = line.split_once("test result: ") else {
            continue;
        };
        let mut counts = Counts::default();
        let mut seen = false;
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(label), Some(number)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(n) = number.parse::<u64>() else {
                continue;
            };
            match label {
                "passed" => counts.passed = n,
                "failed" => counts.failed = n,
                "ignored" => counts.ignored = n,
                _ => continue,
            }
            seen = true;
        }
        if seen {
            let t = total.get_or_insert_with(Counts::default);
            t.passed += counts.passed;
            t.failed += counts.failed;
            t.ignored += counts.ignored;
        }
    }
    total
}

/// libtest's time per test (`test a::b ... ok <1.234s>`): an unstable option, which a test binary
/// built by stable accepts when RUSTC_BOOTSTRAP is set in its environment. Most of CI's time is
/// the integration tests; these times say which.
pub const REPORT_TIME: [&str; 3] = ["-Z", "unstable-options", "--report-time"];

/// The `n` slowest tests of a run, from the times [`REPORT_TIME`] adds, slowest first.
pub fn slowest(output: &str, n: usize) -> Vec<(String, f64)> {
    let mut times: Vec<(String, f64)> = output
        .lines()
        .filter_map(|line| {
            let (_, rest) = line.split_once("test ")?;
            let (name, verdict) = rest.split_once(" ... ")?;
            let (_, time) = verdict.trim_end().split_once(" <")?;
            let secs = time.strip_suffix("s>")?.parse::<f64>().ok()?;
            Some((name.to_owned(), secs))
        })
        .collect();
    times.sort_by(|a, b| b.1.total_cmp(&a.1));
    times.truncate(n);
    times
}

/// One line naming the slowest tests of a run, or nothing when the run printed no times.
pub fn slowest_line(output: &str) -> Option<String> {
    let slow = slowest(output, 8);
    if slow.is_empty() {
        return None;
    }
    let total: f64 = slowest(output, usize::MAX).iter().map(|(_, s)| s).sum();
    let list: Vec<String> = slow
        .iter()
        .map(|(name, secs)| format!("{name} {secs:.1}s"))
        .collect();
    Some(format!(
        "tests took {total:.0}s in all; slowest: {}",
        list.join(", ")
    ))
}

/// Why a run failed, beyond its failed tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    /// Some tests failed (libtest exits non-zero then, as expected).
    TestsFailed,
    /// No result line; with the exit status when it was not a success (a crash, a kill).
    NoResultLine(Option<String>),
    /// A result line, but the process still exited badly (e.g. crashed while tearing down).
    BadExit(String),
    NothingPassed,
}

/// Counts for a finished run: a run without a result line, or one that printed a clean result but
/// exited non-zero, counts at least one failure, so a crash can never look green.
pub fn judge(output: &str, exit_ok: bool, exit_desc: &str) -> (Counts, Verdict) {
    match parse(output) {
        None => (
            Counts {
                failed: 1,
                ..Counts::default()
            },
            Verdict::NoResultLine((!exit_ok).then(|| exit_desc.to_owned())),
        ),
        Some(c) if c.failed > 0 => (c, Verdict::TestsFailed),
        Some(c) if !exit_ok => (
            Counts { failed: 1, ..c },
            Verdict::BadExit(exit_desc.to_owned()),
        ),
        Some(c) if c.passed == 0 => (c, Verdict::NothingPassed),
        Some(c) => (c, Verdict::Ok),
    }
}

impl Verdict {
    pub fn describe(&self) -> String {
        match self {
            Verdict::Ok => "ok".to_owned(),
            Verdict::TestsFailed => "FAILED (tests failed)".to_owned(),
            Verdict::NoResultLine(None) => "FAILED (no libtest result line)".to_owned(),
            Verdict::NoResultLine(Some(how)) => {
                format!("FAILED (no libtest result line; exit: {how})")
            }
            Verdict::BadExit(how) => format!("FAILED (exit: {how})"),
            Verdict::NothingPassed => "FAILED (no test passed)".to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds_the_slowest_tests() {
        let out = "[vm 6.1 fentry] test a::x ... ok <1.500s>\n\
                   test a::y ... FAILED <12.250s>\n\
                   test a::z ... ok\n\
                   test a::w ... ok <0.010s>\n";
        let slow = super::slowest(out, 2);
        assert_eq!(
            slow,
            vec![("a::y".to_owned(), 12.25), ("a::x".to_owned(), 1.5)]
        );
        let line = super::slowest_line(out).unwrap();
        assert!(
            line.starts_with("tests took 14s in all; slowest: a::y 12.2s, a::x 1.5s"),
            "{line}"
        );
        assert_eq!(super::slowest_line("test a ... ok\n"), None);
    }

    use super::*;

    #[test]
    fn parses_and_sums_result_lines() {
        let out = "running 5 tests\n\
                   test a ... ok\n\
                   test result: ok. 3 passed; 0 failed; 2 ignored; 0 measured; 0 filtered out; finished in 0.01s\n\
                   \n\
                   [  12.3] noise test result: FAILED. 1 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out; finished in 1.00s\n";
        assert_eq!(
            parse(out),
            Some(Counts {
                passed: 4,
                failed: 2,
                ignored: 2
            })
        );
    }

    #[test]
    fn no_result_line() {
        assert_eq!(parse("running 1 test\nthread panicked\n"), None);
    }

    #[test]
    fn judge_never_hides_crashes() {
        let ok = "test result: ok. 2 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out\n";
        assert_eq!(
            judge(ok, true, "0"),
            (
                Counts {
                    passed: 2,
                    failed: 0,
                    ignored: 1
                },
                Verdict::Ok
            )
        );
        assert_eq!(
            judge(ok, false, "signal 11").0,
            Counts {
                passed: 2,
                failed: 1,
                ignored: 1
            }
        );
        assert_eq!(
            judge("", true, "0"),
            (
                Counts {
                    passed: 0,
                    failed: 1,
                    ignored: 0
                },
                Verdict::NoResultLine(None)
            )
        );
        assert_eq!(
            judge("running 3 tests\n", false, "signal: 9").1.describe(),
            "FAILED (no libtest result line; exit: signal: 9)"
        );
        let none = "test result: ok. 0 passed; 0 failed; 3 ignored; 0 measured; 0 filtered out\n";
        assert_eq!(judge(none, true, "0").1, Verdict::NothingPassed);
    }
}
