//! The container id in a cgroup path, by Datadog's rule (written from its description, no
//! regex): the id is one of
//!
//! - 64 hex digits (Docker, containerd, CRI-O, Podman, ...),
//! - ECS's form: 32 hex digits, a dash, one or more decimal digits,
//! - Garden's form: 8 hex digits then four groups of a dash and 4 hex digits (28 characters),
//!
//! the match must not touch another hex digit on either side (so 63 or 65 hex digits, or the
//! first 28 characters of a plain UUID, are no id), and when a path holds several ids the last
//! one wins (the innermost cgroup: Docker in Docker, `libpod-<id>.scope/container`). Hex digits
//! of either case are accepted and the id is returned as written.
//!
//! One deliberate difference: an id written right after `conmon-` (CRI-O's
//! `crio-conmon-<id>.scope`, Podman's `libpod-conmon-<id>.scope`) is not taken. Those cgroups hold
//! the runtime's monitor process (conmon), which runs outside the container it watches: its
//! connections are not the container's. Datadog's pattern would report the container's id there.

/// Length of the common form.
const LONG: usize = 64;
/// Hex digits before ECS's dash.
const ECS_HEX: usize = 32;
/// Garden's form: `xxxxxxxx-xxxx-xxxx-xxxx-xxxx`.
const GARDEN: usize = 28;
/// What precedes the id of a runtime monitor's cgroup.
const CONMON: &[u8] = b"conmon-";

fn is_hex(byte: u8) -> bool {
    byte.is_ascii_hexdigit()
}

fn hex_at(bytes: &[u8], index: usize) -> bool {
    bytes.get(index).copied().is_some_and(is_hex)
}

/// Number of consecutive hex digits from `start`.
fn hex_run(bytes: &[u8], start: usize) -> usize {
    bytes
        .get(start..)
        .map_or(0, |rest| rest.iter().take_while(|b| is_hex(**b)).count())
}

/// Length of an id that starts at `start` (not preceded by a hex digit), if any: the forms are
/// tried in Datadog's order and a match followed by a hex digit is none.
fn match_at(bytes: &[u8], start: usize) -> Option<usize> {
    let run = hex_run(bytes, start);
    // 64 hex digits exactly: a longer run touches a hex digit.
    if run == LONG {
        return Some(LONG);
    }
    // ECS: 32 hex digits, a dash, decimal digits; what follows the digits must not be hex
    // (a following hex letter touches; a following digit is impossible: the run is greedy).
    if run == ECS_HEX && bytes.get(start + ECS_HEX) == Some(&b'-') {
        let digits_start = start + ECS_HEX + 1;
        let digits = bytes.get(digits_start..).map_or(0, |rest| {
            rest.iter().take_while(|b| b.is_ascii_digit()).count()
        });
        let end = digits_start + digits;
        if digits > 0 && !hex_at(bytes, end) {
            return Some(end - start);
        }
    }
    // Garden: 8-4-4-4-4.
    if run == 8 {
        let mut at = start + 8;
        for _ in 0..4 {
            if bytes.get(at) != Some(&b'-') || hex_run(bytes, at + 1) != 4 {
                return None;
            }
            at += 5;
        }
        if !hex_at(bytes, at) {
            return Some(GARDEN);
        }
    }
    None
}

/// The container id in `path` (a cgroup path, absolute or relative to the hierarchy's root),
/// if any. Never panics, whatever the bytes.
pub fn container_id(path: &[u8]) -> Option<&str> {
    let mut last = None;
    let mut start = 0;
    while start < path.len() {
        let preceded_by_hex = start > 0 && hex_at(path, start - 1);
        if !preceded_by_hex
            && hex_at(path, start)
            && let Some(len) = match_at(path, start)
        {
            let conmon =
                start >= CONMON.len() && path.get(start - CONMON.len()..start) == Some(CONMON);
            if !conmon {
                last = Some((start, start + len));
            }
            start += len;
            continue;
        }
        start += 1;
    }
    let (from, to) = last?;
    // Only ASCII hex digits, dashes and decimal digits were matched.
    path.get(from..to)
        .and_then(|id| std::str::from_utf8(id).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const ID2: &str = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";
    const ECS: &str = "55091c13b8ea4d9a9d2d6ac4e3ef5aa3-1362397412";
    const GARDEN_ID: &str = "9b43a6b8-6b0c-4c8e-4a1d-7e52";

    fn id(path: &str) -> Option<&str> {
        container_id(path.as_bytes())
    }

    #[test]
    fn real_container_paths_of_every_runtime() {
        let cases: Vec<(String, &str)> = vec![
            // Docker, cgroupfs driver; systemd driver; Docker in Docker (the inner one wins).
            (format!("/docker/{ID}"), ID),
            (format!("/system.slice/docker-{ID}.scope"), ID),
            (format!("/docker/{ID2}/docker/{ID}"), ID),
            // containerd (CRI), Kubernetes with the systemd driver, every QoS class.
            (
                format!(
                    "/kubepods.slice/kubepods-pod0c9f3b5e_1a2b_4c3d_8e9f_0123456789ab.slice/cri-containerd-{ID}.scope"
                ),
                ID,
            ),
            (
                format!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0c9f3b5e_1a2b_4c3d_8e9f_0123456789ab.slice/cri-containerd-{ID}.scope"
                ),
                ID,
            ),
            (
                format!(
                    "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-podabcdef01_2345_6789_abcd_ef0123456789.slice/cri-containerd-{ID}.scope"
                ),
                ID,
            ),
            // Kubernetes with the cgroupfs driver (pod uid with dashes).
            (
                format!("/kubepods/burstable/pod0c9f3b5e-1a2b-4c3d-8e9f-0123456789ab/{ID}"),
                ID,
            ),
            (
                format!("/kubepods/pod0c9f3b5e-1a2b-4c3d-8e9f-0123456789ab/{ID}"),
                ID,
            ),
            // containerd outside Kubernetes (ctr, nerdctl) and its cgroupsPath notation.
            (format!("/default/{ID}"), ID),
            (
                format!(
                    "/system.slice/containerd.service/kubepods-burstable-pod0c9f3b5e_1a2b_4c3d_8e9f_0123456789ab.slice:cri-containerd:{ID}"
                ),
                ID,
            ),
            // CRI-O.
            (
                format!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0c9f3b5e_1a2b_4c3d_8e9f_0123456789ab.slice/crio-{ID}.scope"
                ),
                ID,
            ),
            (format!("/machine.slice/crio-{ID}.scope/container"), ID),
            // Podman (root and rootless), with and without the split `container` sub-cgroup.
            (format!("/machine.slice/libpod-{ID}.scope"), ID),
            (format!("/machine.slice/libpod-{ID}.scope/container"), ID),
            (
                format!(
                    "/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope"
                ),
                ID,
            ),
            // ECS (Fargate and EC2 with the awsvpc task id, and Docker ids under a task uuid).
            (format!("/ecs/55091c13b8ea4d9a9d2d6ac4e3ef5aa3/{ECS}"), ECS),
            (
                format!("/ecs/0c9f3b5e-1a2b-4c3d-8e9f-0123456789ab/{ID}"),
                ID,
            ),
            // Garden (Cloud Foundry).
            (format!("/garden/{GARDEN_ID}"), GARDEN_ID),
            (
                format!("/system.slice/garden.service/garden/{GARDEN_ID}"),
                GARDEN_ID,
            ),
            // Upper case is accepted and returned as written.
            (format!("/docker/{}", ID.to_uppercase()), ""),
            // Relative (to the hierarchy's root) and bare.
            (format!("system.slice/docker-{ID}.scope"), ID),
            (ID.to_owned(), ID),
        ];
        for (path, want) in &cases {
            let upper = ID.to_uppercase();
            let want = if want.is_empty() {
                upper.as_str()
            } else {
                want
            };
            assert_eq!(id(path), Some(want), "{path}");
        }
    }

    #[test]
    fn a_runtime_monitor_cgroup_is_not_the_container() {
        assert_eq!(
            id(&format!(
                "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod0c9f3b5e_1a2b_4c3d_8e9f_0123456789ab.slice/crio-conmon-{ID}.scope"
            )),
            None
        );
        assert_eq!(
            id(&format!("/machine.slice/libpod-conmon-{ID}.scope")),
            None
        );
        // A container's own cgroup below a monitor's (not a real shape) is still the container.
        assert_eq!(
            id(&format!(
                "/machine.slice/libpod-conmon-{ID2}.scope/docker-{ID}.scope"
            )),
            Some(ID)
        );
    }

    #[test]
    fn paths_without_a_container_have_none() {
        let hex63 = &ID[..63];
        let hex65 = format!("{ID}a");
        let cases = [
            "",
            "/",
            "/init.scope",
            "/system.slice",
            "/system.slice/nginx.service",
            "/system.slice/docker.service",
            "/system.slice/containerd.service",
            "/user.slice/user-1000.slice/session-2.scope",
            "/user.slice/user-1000.slice/user@1000.service/app.slice/dbus.service",
            "/kubepods.slice",
            "/kubepods.slice/kubepods-burstable.slice",
            // Pod slices: uids with underscores (systemd) or dashes (cgroupfs, after "pod").
            "/kubepods.slice/kubepods-pod0c9f3b5e_1a2b_4c3d_8e9f_0123456789ab.slice",
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0c9f3b5e_1a2b_4c3d_8e9f_0123456789ab.slice",
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-podabcdef01_2345_6789_abcd_ef0123456789.slice",
            "/kubepods/burstable/pod0c9f3b5e-1a2b-4c3d-8e9f-0123456789ab",
            // A plain UUID is no Garden id (its fifth group is 12 digits).
            "/ecs/0c9f3b5e-1a2b-4c3d-8e9f-0123456789ab",
            "/0c9f3b5e-1a2b-4c3d-8e9f-0123456789ab",
            // ECS's task id alone; ECS's form with 31 or 33 hex digits or without digits.
            "/ecs/55091c13b8ea4d9a9d2d6ac4e3ef5aa3",
            "/ecs/5091c13b8ea4d9a9d2d6ac4e3ef5aa3-1362397412",
            "/ecs/055091c13b8ea4d9a9d2d6ac4e3ef5aa3-1362397412",
            "/ecs/55091c13b8ea4d9a9d2d6ac4e3ef5aa3-",
            "/ecs/55091c13b8ea4d9a9d2d6ac4e3ef5aa3-12a",
            // Garden's form touching hex digits, or too short.
            "/garden/9b43a6b8-6b0c-4c8e-4a1d-7e52f",
            "/garden/a9b43a6b8-6b0c-4c8e-4a1d-7e52",
            "/garden/9b43a6b8-6b0c-4c8e-4a1d",
            hex63,
            &hex65,
        ];
        for path in cases {
            assert_eq!(id(path), None, "{path}");
        }
        assert_eq!(id(&format!("/docker/{hex63}")), None);
        assert_eq!(id(&format!("/docker/{hex65}")), None);
        assert_eq!(id(&format!("/system.slice/docker-{hex65}.scope")), None);
        // Touching on the left ("d" of "pod", "c" of "abc") or right.
        assert_eq!(id(&format!("/pod{ID}")), None);
        assert_eq!(id(&format!("/abc{ID}")), None);
        assert_eq!(id(&format!("/{ID}f.scope")), None);
    }

    #[test]
    fn the_last_id_wins_and_a_bad_one_does_not_hide_a_good_one() {
        assert_eq!(id(&format!("/{ID2}/x/{ID}")), Some(ID));
        assert_eq!(id(&format!("/{ID}/x/{ID2}a")), Some(ID));
        assert_eq!(id(&format!("/{ECS}/{GARDEN_ID}")), Some(GARDEN_ID));
    }

    #[test]
    fn never_panics_on_arbitrary_bytes() {
        let samples: [&[u8]; 6] = [
            b"\xff\xfe-",
            b"-",
            b"0123456789abcdef0123456789abcdef-",
            b"01234567-",
            b"01234567-abcd-abcd-abcd-abc",
            b"\x00\xc3\x28/0123456789abcdef0123456789abcdef-1\xff",
        ];
        for s in samples {
            let _ = container_id(s);
        }
        assert_eq!(
            container_id(b"\xff/0123456789abcdef0123456789abcdef-1\xff"),
            Some("0123456789abcdef0123456789abcdef-1")
        );
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_never_panic_and_an_id_is_a_substring(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            if let Some(found) = container_id(&bytes) {
                let len = found.len();
                proptest::prop_assert!(len == LONG || len == GARDEN || len > ECS_HEX + 1);
            }
        }
    }
}
