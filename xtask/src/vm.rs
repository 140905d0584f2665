//! The integration tests inside qemu, one boot per VM kernel running every backend of that kernel.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::console;
use crate::initramfs;
use crate::kernels::{self, CachedKernel};
use crate::knobs::timeout;
use crate::libtest::{self, Counts};
use crate::qemu;
use crate::summary::{Run, Summary};

/// Booting and loading modules under TCG on a busy machine: seconds usually, minutes at worst.
const VM_BOOT_MARGIN: Duration = Duration::from_secs(300);

/// Boots of one VM kernel when the guest dies before any test started.
const BOOT_ATTEMPTS: u32 = 3;

/// Boots each VM kernel (all, or those in XTASK_KERNELS) and records its runs and a `vm <label>`
/// step. Up to `vm_jobs()` VMs run at once (XTASK_VM_JOBS, default 2): under TCG a guest runs
/// the single-threaded test binary on one host core most of the time, so two guests on this
/// 2-core machine take little more than one. Results are recorded in kernel order.
pub fn run_all(binary: &Path, summary: &mut Summary) {
    let only: Option<Vec<String>> = std::env::var("XTASK_KERNELS")
        .ok()
        .map(|s| s.split(',').map(|k| k.trim().to_owned()).collect());
    let selected: Vec<_> = kernels::cached()
        .into_iter()
        .filter(|(vm, _)| {
            only.as_ref()
                .is_none_or(|only| only.iter().any(|k| k == vm.label))
        })
        .collect();
    let jobs = vm_jobs().max(1);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let outcomes: Vec<std::sync::Mutex<Option<VmOutcome>>> = selected
        .iter()
        .map(|_| std::sync::Mutex::new(None))
        .collect();
    std::thread::scope(|scope| {
        for _ in 0..jobs.min(selected.len()) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let (Some((_, located)), Some(slot)) = (selected.get(i), outcomes.get(i))
                    else {
                        break;
                    };
                    let outcome = match located {
                        Ok(kernel) => VmOutcome::Ran(vm_run(binary, kernel, timeout())),
                        Err(err) => {
                            VmOutcome::NotCached(format!("kernel not in the cache: {err:#}"))
                        }
                    };
                    if let Ok(mut slot) = slot.lock() {
                        *slot = Some(outcome);
                    }
                }
            });
        }
    });
    let mut boot_lines = Vec::new();
    for ((vm, located), outcome) in selected.iter().zip(outcomes) {
        let step_name = format!("vm {}", vm.label);
        let outcome = outcome.into_inner().ok().flatten();
        match (located, outcome) {
            (Ok(_), Some(VmOutcome::Ran(Ok((runs, report, failure))))) => {
                summary.runs.extend(runs);
                match failure {
                    None => summary.step(&step_name, true, ""),
                    Some(why) => summary.step(&step_name, false, why),
                }
                boot_lines.push(report);
            }
            (Ok(kernel), Some(VmOutcome::Ran(Err(err)))) => {
                let why = format!("{err:#}");
                fail_all(summary, &kernel.release, kernel.backends, &why);
                summary.step(&step_name, false, why);
            }
            (_, Some(VmOutcome::NotCached(why))) => {
                fail_all(summary, vm.package, vm.backends, &why);
                summary.step(&step_name, false, why);
            }
            (_, _) => {
                let why = "the VM's worker did not report (it panicked)".to_owned();
                fail_all(summary, vm.package, vm.backends, &why);
                summary.step(&step_name, false, why);
            }
        }
    }
    for line in boot_lines {
        println!("xtask: {line}");
    }
}

/// What one VM's worker ended with.
enum VmOutcome {
    Ran(Result<(Vec<Run>, String, Option<String>)>),
    NotCached(String),
}

/// XTASK_VM_JOBS: how many VMs run at once (default 2).
fn vm_jobs() -> usize {
    std::env::var("XTASK_VM_JOBS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2)
}

fn fail_all(summary: &mut Summary, kernel: &str, backends: &[&str], why: &str) {
    for backend in backends {
        summary.runs.push(Run {
            kernel: kernel.to_owned(),
            backend: (*backend).to_owned(),
            counts: Counts {
                failed: 1,
                ..Counts::default()
            },
            status: format!("FAILED ({why})"),
        });
    }
}

/// Builds the image, boots it and reads the console. Returns the runs, a one-line report of the
/// boot (time, modules) and why the VM did not get through its whole /init, if it did not.
fn vm_run(
    binary: &Path,
    kernel: &CachedKernel,
    timeout: Duration,
) -> Result<(Vec<Run>, String, Option<String>)> {
    let image = initramfs::image_path(kernel);
    println!("xtask: building {} for {}", image.display(), kernel.release);
    let built = initramfs::build(kernel, binary, timeout.as_secs(), &image)
        .with_context(|| format!("building the initramfs for {}", kernel.release))?;
    println!(
        "xtask: initramfs {:.1} MiB, {} libraries, modules: {} (not modules here: {})",
        built.bytes as f64 / (1024.0 * 1024.0),
        built.libraries,
        built.modules.len(),
        built.not_modules.join(" "),
    );
    // Each run has `timeout` inside the VM; the VM as a whole gets them all plus time to boot.
    let runs = u32::try_from(kernel.backends.len()).unwrap_or(u32::MAX);
    let vm_deadline = timeout.saturating_mul(runs) + VM_BOOT_MARGIN;
    // A guest kernel that dies while booting under TCG, before any test starts (seen on 6.12:
    // an Oops in early boot, a few boots in a hundred), says nothing about the tracer: boot it
    // again, at most BOOT_ATTEMPTS times in all, and say so. A VM that died or hung once a test
    // had started is never retried.
    let mut attempt = 1;
    let (boot, parsed) = loop {
        let boot = qemu::boot(kernel.label, &kernel.vmlinuz, &image, vm_deadline)?;
        let parsed = console::parse(&boot.console);
        let started = kernel.backends.iter().any(|b| parsed.run(b).is_some());
        if started || boot.timed_out || attempt >= BOOT_ATTEMPTS {
            break (boot, parsed);
        }
        println!(
            "xtask: VM {} died while booting, before any test started (qemu {}, attempt \
             {attempt} of {BOOT_ATTEMPTS}); booting again",
            kernel.label, boot.exit
        );
        attempt += 1;
    };
    let release = parsed
        .kernel
        .clone()
        .unwrap_or_else(|| kernel.release.clone());
    let mut runs = Vec::new();
    for backend in kernel.backends {
        let (counts, status) = match parsed.run(backend) {
            Some(out) => match out.status {
                Some(code) => {
                    // busybox `timeout -s KILL` makes a hung run exit 137.
                    let how = if code == 137 {
                        format!(
                            "status 137, killed after the {}s timeout?",
                            timeout.as_secs()
                        )
                    } else {
                        format!("status {code}")
                    };
                    let (counts, verdict) = libtest::judge(&out.output, code == 0, &how);
                    (counts, verdict.describe())
                }
                None => {
                    let counts = libtest::parse(&out.output).unwrap_or_default();
                    let why = if boot.timed_out {
                        "timed out"
                    } else {
                        "no end marker: VM died"
                    };
                    (
                        Counts {
                            failed: counts.failed.max(1),
                            ..counts
                        },
                        format!("FAILED ({why})"),
                    )
                }
            },
            None => {
                let why = if boot.timed_out {
                    "timed out before it started"
                } else {
                    "never started"
                };
                (
                    Counts {
                        failed: 1,
                        ..Counts::default()
                    },
                    format!("FAILED ({why})"),
                )
            }
        };
        runs.push(Run {
            kernel: release.clone(),
            backend: (*backend).to_owned(),
            counts,
            status,
        });
    }
    let failure = if boot.timed_out {
        Some(format!("timed out after {}s", boot.elapsed.as_secs()))
    } else if !parsed.done {
        Some(format!("/init did not finish (qemu {})", boot.exit))
    } else {
        None
    };
    let report = format!(
        "VM {} ({release}): {} in {:.1}s, qemu {}; modules loaded: [{}]; insmod failed: [{}]",
        kernel.label,
        failure.as_deref().unwrap_or("booted, ran /init to the end"),
        boot.elapsed.as_secs_f64(),
        boot.exit,
        parsed.modules_loaded.join(" "),
        parsed.modules_failed.join("; "),
    );
    Ok((runs, report, failure))
}
