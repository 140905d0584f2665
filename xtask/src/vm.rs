//! The integration tests inside qemu: one image per VM kernel, one boot per (kernel, backend).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::console;
use crate::init_script;
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

/// Runs the integration tests in each VM kernel (all, or those in XTASK_KERNELS), one boot per
/// (kernel, backend), and records the runs and a `vm <label>` step per kernel. Up to `vm_jobs()`
/// VMs run at once (XTASK_VM_JOBS, default 2): under TCG a guest runs the single-threaded test
/// binary on one host core most of the time, so two guests on this 2-core machine take little
/// more than one. One boot per run rather than per kernel keeps both cores busy to the end (with
/// three kernels of two backends each, a boot per kernel left the last kernel's two runs to one
/// core); each kernel's first backend (the longer run: it also runs the backend-independent
/// tests) goes first. Results are recorded in kernel and backend order.
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
    // One image per kernel, shared by its boots.
    let images: Vec<Result<PathBuf, String>> = selected
        .iter()
        .map(|(_, located)| match located {
            Ok(kernel) => build_image(binary, kernel).map_err(|e| format!("{e:#}")),
            Err(err) => Err(format!("kernel not in the cache: {err:#}")),
        })
        .collect();
    // Jobs: (kernel index, backend index), first backends first.
    let most = selected
        .iter()
        .map(|(vm, _)| vm.backends.len())
        .max()
        .unwrap_or(0);
    let jobs: Vec<(usize, usize)> = (0..most)
        .flat_map(|b| {
            selected
                .iter()
                .enumerate()
                .filter(move |(_, (vm, _))| b < vm.backends.len())
                .map(move |(k, _)| (k, b))
        })
        .filter(|(k, _)| images.get(*k).is_some_and(Result::is_ok))
        .collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let outcomes: Vec<std::sync::Mutex<Option<Result<BootRun>>>> =
        jobs.iter().map(|_| std::sync::Mutex::new(None)).collect();
    std::thread::scope(|scope| {
        for _ in 0..vm_jobs().max(1).min(jobs.len()) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let (Some(&(k, b)), Some(slot)) = (jobs.get(i), outcomes.get(i)) else {
                        break;
                    };
                    let (Some((_, Ok(kernel))), Some(Ok(image))) = (selected.get(k), images.get(k))
                    else {
                        continue;
                    };
                    let Some(backend) = kernel.backends.get(b) else {
                        continue;
                    };
                    let outcome = boot_run(kernel, image, backend, timeout());
                    if let Ok(mut slot) = slot.lock() {
                        *slot = Some(outcome);
                    }
                }
            });
        }
    });
    let outcomes: Vec<Option<Result<BootRun>>> = outcomes
        .into_iter()
        .map(|m| m.into_inner().ok().flatten())
        .collect();
    let mut boot_lines = Vec::new();
    for (k, ((vm, located), image)) in selected.iter().zip(&images).enumerate() {
        let step_name = format!("vm {}", vm.label);
        let kernel = match (located, image) {
            (Ok(kernel), Ok(_)) => kernel,
            (Ok(kernel), Err(why)) => {
                fail_all(summary, &kernel.release, kernel.backends, why);
                summary.step(&step_name, false, why.clone());
                continue;
            }
            // A kernel missing from the cache has no image either (`images` says why).
            (Err(_), _) => {
                let why = image.as_ref().err().cloned().unwrap_or_default();
                fail_all(summary, vm.package, vm.backends, &why);
                summary.step(&step_name, false, why);
                continue;
            }
        };
        let mut failures = Vec::new();
        for (b, backend) in kernel.backends.iter().enumerate() {
            let outcome = jobs
                .iter()
                .position(|&job| job == (k, b))
                .and_then(|i| outcomes.get(i))
                .and_then(Option::as_ref);
            match outcome {
                Some(Ok(run)) => {
                    summary.runs.push(run.run.clone());
                    if let Some(why) = &run.failure {
                        failures.push(format!("{backend}: {why}"));
                    }
                    boot_lines.push(run.report.clone());
                }
                Some(Err(err)) => {
                    let why = format!("{err:#}");
                    fail_all(summary, &kernel.release, &[*backend], &why);
                    failures.push(format!("{backend}: {why}"));
                }
                None => {
                    let why = "the VM's worker did not report (it panicked)".to_owned();
                    fail_all(summary, &kernel.release, &[*backend], &why);
                    failures.push(format!("{backend}: {why}"));
                }
            }
        }
        if failures.is_empty() {
            summary.step(&step_name, true, "");
        } else {
            summary.step(&step_name, false, failures.join("; "));
        }
    }
    for line in boot_lines {
        println!("xtask: {line}");
    }
}

/// Builds the image of one kernel (its /init runs the backends its boot names).
fn build_image(binary: &Path, kernel: &CachedKernel) -> Result<PathBuf> {
    let image = initramfs::image_path(kernel);
    println!("xtask: building {} for {}", image.display(), kernel.release);
    let built = initramfs::build(kernel, binary, timeout().as_secs(), &image)
        .with_context(|| format!("building the initramfs for {}", kernel.release))?;
    println!(
        "xtask: initramfs {:.1} MiB, {} libraries, modules: {} (not modules here: {})",
        built.bytes as f64 / (1024.0 * 1024.0),
        built.libraries,
        built.modules.len(),
        built.not_modules.join(" "),
    );
    Ok(image)
}

/// One boot's result: its run, a one-line report of the boot (time, modules), and why the VM
/// did not get through its /init, if it did not.
struct BootRun {
    run: Run,
    report: String,
    failure: Option<String>,
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

/// Boots `kernel` with `image` to run `backend`'s tests and reads the console.
fn boot_run(
    kernel: &CachedKernel,
    image: &Path,
    backend: &str,
    timeout: Duration,
) -> Result<BootRun> {
    let vm_deadline = timeout + VM_BOOT_MARGIN;
    let label = format!("{} {backend}", kernel.label);
    // A guest kernel that dies while booting under TCG, before any test starts (seen on 6.12:
    // an Oops in early boot, a few boots in a hundred), says nothing about the tracer: boot it
    // again, at most BOOT_ATTEMPTS times in all, and say so. A VM that died or hung once a test
    // had started is never retried.
    let mut attempt = 1;
    let (boot, parsed) = loop {
        let boot = qemu::boot(
            &label,
            &kernel.vmlinuz,
            image,
            &init_script::param(backend),
            vm_deadline,
        )?;
        let parsed = console::parse(&boot.console);
        let started = parsed.run(backend).is_some();
        if started || boot.timed_out || attempt >= BOOT_ATTEMPTS {
            break (boot, parsed);
        }
        println!(
            "xtask: VM {label} died while booting, before any test started (qemu {}, attempt \
             {attempt} of {BOOT_ATTEMPTS}); booting again",
            boot.exit
        );
        attempt += 1;
    };
    let release = parsed
        .kernel
        .clone()
        .unwrap_or_else(|| kernel.release.clone());
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
    let failure = if boot.timed_out {
        Some(format!("timed out after {}s", boot.elapsed.as_secs()))
    } else if !parsed.done {
        Some(format!("/init did not finish (qemu {})", boot.exit))
    } else {
        None
    };
    let slowest = parsed
        .run(backend)
        .and_then(|out| libtest::slowest_line(&out.output))
        .map(|line| format!("; {line}"))
        .unwrap_or_default();
    let report = format!(
        "VM {label} ({release}): {} in {:.1}s, qemu {}; modules loaded: [{}]; insmod failed: [{}]{slowest}",
        failure.as_deref().unwrap_or("booted, ran /init to the end"),
        boot.elapsed.as_secs_f64(),
        boot.exit,
        parsed.modules_loaded.join(" "),
        parsed.modules_failed.join("; "),
    );
    Ok(BootRun {
        run: Run {
            kernel: release,
            backend: backend.to_owned(),
            counts,
            status,
        },
        report,
        failure,
    })
}
