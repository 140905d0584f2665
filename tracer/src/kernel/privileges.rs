//! Can this process load eBPF programs? Checked up front so the error names what is missing
//! instead of surfacing as an EPERM from deep inside the loader.
//!
//! The full set a non-root process needs (measured; see the README's capabilities section):
//! CAP_BPF (program and map loads), CAP_PERFMON (tracing program types, perf events),
//! CAP_NET_ADMIN (the cgroup sock_ops / sock_release programs), all three checked here, and
//! CAP_DAC_READ_SEARCH to read a root-only tracefs, checked where tracefs is opened
//! ([`crate::Error::TracefsUnreadable`]) because it depends on the directory's mode, not on the
//! process alone. Below Linux 5.11 maps are charged to RLIMIT_MEMLOCK, which aya raises to
//! unlimited on its first EPERM; that needs CAP_SYS_RESOURCE unless the hard limit allows it.

use crate::{Error, Result};

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;
const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_RESOURCE: u32 = 24;

/// Fails with [`Error::NotPermitted`] unless the effective capability set allows loading and
/// attaching tracing programs (root, CAP_SYS_ADMIN, or CAP_BPF + CAP_PERFMON + CAP_NET_ADMIN).
pub fn require_bpf_privileges() -> Result<()> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| Error::io("reading /proc/self/status", e))?;
    let effective = parse_cap_eff(&status).ok_or_else(|| {
        Error::NotPermitted("cannot read CapEff from /proc/self/status".to_owned())
    })?;
    check_caps(effective)?;
    let paranoid = std::fs::read_to_string(PERF_EVENT_PARANOID)
        .ok()
        .and_then(|text| text.trim().parse().ok());
    check_perf_event_paranoid(effective, paranoid)?;
    warn_on_memlock(effective);
    Ok(())
}

const PERF_EVENT_PARANOID: &str = "/proc/sys/kernel/perf_event_paranoid";

/// Debian's (and Android's) kernels carry a patch that adds `kernel.perf_event_paranoid` level 3,
/// their default: every `perf_event_open` then needs CAP_SYS_ADMIN, CAP_PERFMON is not enough
/// (measured on Debian 5.10 and 6.12: EACCES). Every backend attaches tracepoints through
/// perf events. Mainline kernels treat values above 2 like 2.
fn check_perf_event_paranoid(effective: u64, paranoid: Option<i32>) -> Result<()> {
    match paranoid {
        Some(level) if level > 2 && !has(effective, CAP_SYS_ADMIN) => {
            Err(Error::NotPermitted(format!(
                "kernel.perf_event_paranoid is {level}: this kernel's perf_event_open then needs \
                 CAP_SYS_ADMIN (a Debian patch; CAP_PERFMON is not enough); add CAP_SYS_ADMIN or \
                 set the sysctl to 2"
            )))
        }
        _ => Ok(()),
    }
}

/// Below 5.11 the kernel charges BPF maps to RLIMIT_MEMLOCK: aya raises it to unlimited on the
/// first EPERM, which fails without CAP_SYS_RESOURCE when the hard limit is finite. Whether the
/// finite limit suffices depends on the map sizes, so this warns rather than refusing.
fn warn_on_memlock(effective: u64) {
    let memcg_accounted = crate::KernelVersion::current()
        .is_none_or(|kernel| kernel >= crate::KernelVersion::new(5, 11, 0));
    // CAP_SYS_ADMIN does not allow raising a hard limit: only CAP_SYS_RESOURCE does.
    if memcg_accounted || has(effective, CAP_SYS_RESOURCE) {
        return;
    }
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the valid, properly sized struct.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) };
    if rc == 0 && limit.rlim_max != libc::RLIM_INFINITY {
        tracing::warn!(
            soft = limit.rlim_cur,
            hard = limit.rlim_max,
            "Linux < 5.11 charges BPF maps to RLIMIT_MEMLOCK and this process cannot raise it \
             (no CAP_SYS_RESOURCE): map creation fails with EPERM if the limit is too small"
        );
    }
}

fn has(caps: u64, cap: u32) -> bool {
    caps & (1u64 << cap) != 0
}

fn check_caps(effective: u64) -> Result<()> {
    if has(effective, CAP_SYS_ADMIN) {
        return Ok(());
    }
    let missing: Vec<&str> = [
        (CAP_BPF, "CAP_BPF"),
        (CAP_PERFMON, "CAP_PERFMON"),
        (CAP_NET_ADMIN, "CAP_NET_ADMIN"),
    ]
    .into_iter()
    .filter(|(cap, _)| !has(effective, *cap))
    .map(|(_, name)| name)
    .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(Error::NotPermitted(format!(
            "missing {}",
            missing.join(", ")
        )))
    }
}

/// The `CapEff:` hex mask of a `/proc/<pid>/status` file.
pub(crate) fn parse_cap_eff(status: &str) -> Option<u64> {
    let line = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(line.trim(), 16).ok()
}

/// The error of a failed map creation or program load: [`Error::MemlockLimit`] when it is the
/// memlock charge of a kernel below 5.11 that refused it (EPERM while RLIMIT_MEMLOCK is still
/// finite: aya's raise to unlimited on the first EPERM failed), else `None` (the caller's own
/// error stands). An EPERM there has no other cause once [`require_bpf_privileges`] passed.
pub(crate) fn memlock_limit(
    what: impl FnOnce() -> String,
    io_error: &std::io::Error,
) -> Option<Error> {
    if io_error.raw_os_error() != Some(libc::EPERM) {
        return None;
    }
    let memcg_accounted = crate::KernelVersion::current()
        .is_none_or(|kernel| kernel >= crate::KernelVersion::new(5, 11, 0));
    if memcg_accounted {
        return None;
    }
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the valid, properly sized struct.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) };
    if rc != 0 || limit.rlim_cur == libc::RLIM_INFINITY {
        return None;
    }
    Some(Error::MemlockLimit {
        what: what(),
        soft: limit.rlim_cur,
        hard: limit.rlim_max,
        running: crate::KernelVersion::current_release(),
    })
}

/// [`Error::Load`], or [`Error::MemlockLimit`] when a map creation hit the memlock limit.
pub(crate) fn load_error(e: aya::EbpfError) -> Error {
    if let aya::EbpfError::MapError(aya::maps::MapError::CreateError { name, io_error }) = &e
        && let Some(limited) = memlock_limit(|| format!("creating map {name}"), io_error)
    {
        return limited;
    }
    Error::Load(Box::new(e))
}

/// [`Error::Program`], or [`Error::MemlockLimit`] when the program load hit the memlock limit.
pub(crate) fn program_error(program: &'static str, e: aya::programs::ProgramError) -> Error {
    if let aya::programs::ProgramError::LoadError { io_error, .. } = &e
        && let Some(limited) = memlock_limit(|| format!("loading program {program}"), io_error)
    {
        return limited;
    }
    Error::Program {
        program,
        source: Box::new(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_capability_mask_is_enough() {
        let status = "Name:\tx\nCapEff:\t000001ffffffffff\n";
        let caps = parse_cap_eff(status).unwrap();
        assert!(check_caps(caps).is_ok());
    }

    #[test]
    fn bpf_perfmon_net_admin_without_sys_admin_is_enough() {
        let caps = (1 << CAP_BPF) | (1 << CAP_PERFMON) | (1 << CAP_NET_ADMIN);
        assert!(check_caps(caps).is_ok());
    }

    #[test]
    fn unprivileged_error_names_missing_capabilities() {
        match check_caps(1 << CAP_BPF) {
            Err(Error::NotPermitted(missing)) => {
                assert_eq!(missing, "missing CAP_PERFMON, CAP_NET_ADMIN");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn debian_paranoid_level_3_needs_sys_admin() {
        let caps = (1 << CAP_BPF) | (1 << CAP_PERFMON) | (1 << CAP_NET_ADMIN);
        match check_perf_event_paranoid(caps, Some(3)) {
            Err(Error::NotPermitted(why)) => {
                assert!(why.contains("CAP_SYS_ADMIN"), "{why}");
                assert!(why.contains("perf_event_paranoid is 3"), "{why}");
            }
            other => panic!("{other:?}"),
        }
        assert!(check_perf_event_paranoid(caps | (1 << CAP_SYS_ADMIN), Some(3)).is_ok());
        assert!(check_perf_event_paranoid(caps, Some(2)).is_ok());
        assert!(check_perf_event_paranoid(caps, None).is_ok());
    }

    #[test]
    fn missing_capeff_line_is_none() {
        assert_eq!(parse_cap_eff("Name:\tx\n"), None);
    }
}
