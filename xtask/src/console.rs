//! The markers the VM's /init prints on the serial console, and reading them back.
//!
//! - `XTASK-KERNEL <uname -r>`
//! - `XTASK-MODULE loaded <name>` / `XTASK-MODULE failed <name>: <insmod's message>`
//! - `XTASK-BEGIN backend=<b>` ... the test binary's output ... `XTASK-END backend=<b> status=<exit>`
//! - `XTASK-DONE` just before `poweroff -f`
//!
//! Markers are searched anywhere in a line: a test binary that dies mid-line leaves its partial line
//! in front of the next marker.

pub const KERNEL: &str = "XTASK-KERNEL ";
pub const MODULE: &str = "XTASK-MODULE ";
pub const BEGIN: &str = "XTASK-BEGIN backend=";
pub const END: &str = "XTASK-END backend=";
pub const DONE: &str = "XTASK-DONE";

#[derive(Debug, Default, PartialEq, Eq)]
pub struct BackendOutput {
    pub backend: String,
    pub output: String,
    /// The test binary's exit status; None if the END marker never came (hang, panic, timeout).
    pub status: Option<i32>,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Console {
    pub kernel: Option<String>,
    pub modules_loaded: Vec<String>,
    /// `name: message` for each module insmod refused.
    pub modules_failed: Vec<String>,
    pub runs: Vec<BackendOutput>,
    pub done: bool,
}

impl Console {
    pub fn run(&self, backend: &str) -> Option<&BackendOutput> {
        self.runs.iter().find(|r| r.backend == backend)
    }
}

pub fn parse(text: &str) -> Console {
    let mut console = Console::default();
    let mut current: Option<BackendOutput> = None;
    for line in text.lines() {
        if let Some((before, rest)) = line.split_once(END) {
            if let Some(mut run) = current.take() {
                push_line(&mut run.output, before);
                let mut words = rest.split_whitespace();
                let backend = words.next().unwrap_or_default();
                if backend == run.backend {
                    run.status = words
                        .find_map(|w| w.strip_prefix("status="))
                        .and_then(|s| s.parse().ok());
                }
                console.runs.push(run);
            }
        } else if let Some((before, rest)) = line.split_once(BEGIN) {
            if let Some(mut unfinished) = current.take() {
                push_line(&mut unfinished.output, before);
                console.runs.push(unfinished);
            }
            let backend = rest
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned();
            current = Some(BackendOutput {
                backend,
                ..BackendOutput::default()
            });
        } else if let Some(run) = current.as_mut() {
            push_line(&mut run.output, line);
        } else if let Some((_, release)) = line.split_once(KERNEL) {
            console.kernel = Some(release.trim().to_owned());
        } else if let Some((_, module)) = line.split_once(MODULE) {
            if let Some(name) = module.strip_prefix("loaded ") {
                console.modules_loaded.push(name.trim().to_owned());
            } else if let Some(failure) = module.strip_prefix("failed ") {
                console.modules_failed.push(failure.trim().to_owned());
            }
        } else if line.contains(DONE) {
            console.done = true;
        }
    }
    // Output after a BEGIN without END (the VM died or timed out) still belongs to that backend.
    if let Some(run) = current {
        console.runs.push(run);
    }
    console
}

fn push_line(output: &mut String, line: &str) {
    if !line.is_empty() {
        output.push_str(line);
        output.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "\
SeaBIOS (version 1.16)
XTASK-KERNEL 6.1.0-50-cloud-amd64
XTASK-MODULE loaded veth
XTASK-MODULE failed nft_counter: insmod: can't insert 'x': File exists
XTASK-BEGIN backend=tracepoint

running 1 test
test result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out
XTASK-END backend=tracepoint status=0
XTASK-BEGIN backend=fentry
running 2 tests
test a ... XTASK-END backend=fentry status=139
XTASK-BEGIN backend=kprobe
running 1 test
";

    #[test]
    fn parses_markers() {
        let c = parse(LOG);
        assert_eq!(c.kernel.as_deref(), Some("6.1.0-50-cloud-amd64"));
        assert_eq!(c.modules_loaded, ["veth"]);
        assert_eq!(c.modules_failed.len(), 1);
        assert!(!c.done);
        assert_eq!(c.runs.len(), 3);
        let tp = c.run("tracepoint").unwrap();
        assert_eq!(tp.status, Some(0));
        assert!(tp.output.contains("test result: ok. 1 passed"));
        let fentry = c.run("fentry").unwrap();
        assert_eq!(fentry.status, Some(139));
        assert!(fentry.output.ends_with("test a ... \n"));
        let kprobe = c.run("kprobe").unwrap();
        assert_eq!(kprobe.status, None);
        assert_eq!(kprobe.output, "running 1 test\n");
        assert!(c.run("other").is_none());
    }

    #[test]
    fn done_marker() {
        assert!(parse("XTASK-DONE\n").done);
    }
}
