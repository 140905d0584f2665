//! tracefs: where it is mounted, mounting it when it is not (aya reads tracepoint ids there), and
//! parsing tracepoint `format` files into field offsets.

use std::{
    collections::HashMap,
    ffi::CString,
    io,
    path::{Path, PathBuf},
};

use crate::{Error, Result};

/// Where tracefs lives on every kernel the tracer supports.
pub const TRACEFS: &str = "/sys/kernel/tracing";

/// Makes sure tracefs is mounted at [`TRACEFS`] and readable, mounting it when it is not
/// mounted (it is not mounted at boot on some hosts, nor under `ip netns exec`, which mounts a
/// fresh /sys). Mounting needs CAP_SYS_ADMIN ([`Error::TracefsUnavailable`]); reading a mounted
/// tracefs whose directory is root-only (mode 700) needs root or CAP_DAC_READ_SEARCH
/// ([`Error::TracefsUnreadable`]).
pub fn ensure_mounted() -> Result<PathBuf> {
    let root = PathBuf::from(TRACEFS);
    let mounted = std::fs::read_to_string("/proc/self/mountinfo")
        .map(|text| is_tracefs_mount(&text, &root))
        .unwrap_or(false);
    if mounted {
        return readable(&root);
    }
    match std::fs::metadata(root.join("events")) {
        // Mounted in a way mountinfo does not show at this path (e.g. an older debugfs layout
        // bind-mounted there): usable as it is.
        Ok(meta) if meta.is_dir() => return Ok(root),
        Err(err) if err.kind() == io::ErrorKind::PermissionDenied => {
            return Err(unreadable(&root, err));
        }
        _ => {}
    }
    tracing::info!(path = TRACEFS, "tracefs not mounted, mounting it");
    mount_tracefs(&root).map_err(Error::TracefsUnavailable)?;
    readable(&root)
}

/// `root` if its `events` directory can be listed, else the typed error saying why not.
fn readable(root: &Path) -> Result<PathBuf> {
    match std::fs::read_dir(root.join("events")) {
        Ok(_) => Ok(root.to_path_buf()),
        Err(err) if err.kind() == io::ErrorKind::PermissionDenied => Err(unreadable(root, err)),
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            Err(Error::TracefsUnavailable(io::Error::new(
                io::ErrorKind::NotFound,
                format!("the tracefs at {} has no events directory", root.display()),
            )))
        }
        Err(err) => Err(Error::io(format!("reading {}/events", root.display()), err)),
    }
}

fn unreadable(root: &Path, source: io::Error) -> Error {
    use std::os::unix::fs::MetadataExt;
    let (mode, owner) = std::fs::metadata(root)
        .map(|m| (m.mode() & 0o7777, m.uid()))
        .unwrap_or((0, 0));
    Error::TracefsUnreadable {
        path: root.to_path_buf(),
        mode,
        owner,
        // SAFETY: geteuid has no preconditions and cannot fail.
        uid: unsafe { libc::geteuid() },
        missing: "CAP_DAC_READ_SEARCH",
        source,
    }
}

/// Whether a mountinfo text has a tracefs mounted at `path`.
fn is_tracefs_mount(mountinfo: &str, path: &Path) -> bool {
    super::capabilities::parse_mountinfo(mountinfo)
        .iter()
        .any(|m| m.fstype == "tracefs" && m.mount_point == path)
}

fn mount_tracefs(target: &Path) -> io::Result<()> {
    let source = c"tracefs";
    let target = CString::new(target.as_os_str().as_encoded_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: all pointers are valid NUL-terminated strings for the duration of the call.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            source.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// One field of a tracepoint record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FieldLayout {
    /// Byte offset within the record.
    pub offset: u16,
    /// Size in bytes.
    pub size: u16,
}

/// The fields of one tracepoint, by name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventFormat {
    fields: HashMap<String, FieldLayout>,
}

impl EventFormat {
    /// Reads `events/<category>/<name>/format` from a mounted tracefs.
    pub fn read(tracefs: &Path, category: &str, name: &str) -> Result<Self> {
        let path = tracefs
            .join("events")
            .join(category)
            .join(name)
            .join("format");
        let text = std::fs::read_to_string(&path).map_err(|e| Error::TracepointFormat {
            tracepoint: format!("{category}/{name}"),
            reason: format!("reading {}: {e}", path.display()),
        })?;
        Ok(Self::parse(&text))
    }

    /// Parses a format file. Lines that are not `field:` lines, or that lack an offset or size,
    /// are ignored: a missing field is reported by [`EventFormat::field`] when it is asked for.
    pub fn parse(text: &str) -> Self {
        let fields = text.lines().filter_map(parse_field_line).collect();
        Self { fields }
    }

    /// The layout of `field`, or a typed error naming the tracepoint and the field.
    pub fn field(&self, tracepoint: &str, field: &str) -> Result<FieldLayout> {
        self.fields
            .get(field)
            .copied()
            .ok_or_else(|| Error::TracepointFormat {
                tracepoint: tracepoint.to_owned(),
                reason: format!("no field named {field}"),
            })
    }
}

/// `\tfield:__u8 saddr[4];\toffset:32;\tsize:4;\tsigned:0;` -> ("saddr", {32, 4}).
fn parse_field_line(line: &str) -> Option<(String, FieldLayout)> {
    let mut declaration = None;
    let mut offset = None;
    let mut size = None;
    for part in line.split(';') {
        let part = part.trim();
        if let Some(decl) = part.strip_prefix("field:") {
            declaration = Some(decl);
        } else if let Some(value) = part.strip_prefix("offset:") {
            offset = value.trim().parse().ok();
        } else if let Some(value) = part.strip_prefix("size:") {
            size = value.trim().parse().ok();
        }
    }
    let last_word = declaration?.split_whitespace().last()?;
    // Arrays are declared `name[N]`; pointers may be glued to the name (`*skaddr`).
    let name = last_word
        .split('[')
        .next()?
        .trim_start_matches('*')
        .to_owned();
    Some((
        name,
        FieldLayout {
            offset: offset?,
            size: size?,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const INET_SOCK_SET_STATE_6_12: &str = "name: inet_sock_set_state
ID: 1466
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:const void * skaddr;\toffset:8;\tsize:8;\tsigned:0;
\tfield:int oldstate;\toffset:16;\tsize:4;\tsigned:1;
\tfield:int newstate;\toffset:20;\tsize:4;\tsigned:1;
\tfield:__u16 sport;\toffset:24;\tsize:2;\tsigned:0;
\tfield:__u16 dport;\toffset:26;\tsize:2;\tsigned:0;
\tfield:__u16 family;\toffset:28;\tsize:2;\tsigned:0;
\tfield:__u16 protocol;\toffset:30;\tsize:2;\tsigned:0;
\tfield:__u8 saddr[4];\toffset:32;\tsize:4;\tsigned:0;
\tfield:__u8 daddr[4];\toffset:36;\tsize:4;\tsigned:0;
\tfield:__u8 saddr_v6[16];\toffset:40;\tsize:16;\tsigned:0;
\tfield:__u8 daddr_v6[16];\toffset:56;\tsize:16;\tsigned:0;

print fmt: \"family=%s ...\"
";

    #[test]
    fn parses_scalar_pointer_and_array_fields() {
        let format = EventFormat::parse(INET_SOCK_SET_STATE_6_12);
        let tp = "sock/inet_sock_set_state";
        assert_eq!(
            format.field(tp, "skaddr").unwrap(),
            FieldLayout { offset: 8, size: 8 }
        );
        assert_eq!(
            format.field(tp, "protocol").unwrap(),
            FieldLayout {
                offset: 30,
                size: 2
            }
        );
        assert_eq!(
            format.field(tp, "daddr_v6").unwrap(),
            FieldLayout {
                offset: 56,
                size: 16
            }
        );
        assert_eq!(
            format.field(tp, "common_pid").unwrap(),
            FieldLayout { offset: 4, size: 4 }
        );
    }

    #[test]
    fn missing_field_is_a_typed_error_naming_it() {
        let format = EventFormat::parse(INET_SOCK_SET_STATE_6_12);
        let err = format
            .field("sock/inet_sock_set_state", "nosuch")
            .unwrap_err();
        assert!(err.to_string().contains("nosuch"), "{err}");
    }

    #[test]
    fn tracefs_mount_is_found_at_its_path_only() {
        let mountinfo = "\
42 23 0:13 / /sys/kernel/tracing rw,relatime - tracefs tracefs rw
43 23 0:14 / /sys/kernel/debug rw,relatime - debugfs debugfs rw
";
        assert!(is_tracefs_mount(mountinfo, Path::new(TRACEFS)));
        assert!(!is_tracefs_mount(mountinfo, Path::new("/sys/kernel/debug")));
        // `ip netns exec`'s fresh sysfs: no tracefs under it.
        let netns = "90 28 0:55 / /sys rw,relatime - sysfs ip-netns rw\n";
        assert!(!is_tracefs_mount(netns, Path::new(TRACEFS)));
    }

    #[test]
    fn unreadable_error_names_the_capability_and_the_mode() {
        let err = unreadable(Path::new("/"), io::Error::from_raw_os_error(libc::EACCES));
        let text = err.to_string();
        assert!(
            matches!(
                err,
                Error::TracefsUnreadable {
                    missing: "CAP_DAC_READ_SEARCH",
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(text.contains("CAP_DAC_READ_SEARCH"), "{text}");
        assert!(text.contains("is mounted"), "{text}");
        assert!(!text.contains("not mounted"), "{text}");
    }

    #[test]
    fn garbage_yields_no_fields() {
        let format = EventFormat::parse("field:;offset:x;size:;\n\n;;;");
        assert_eq!(format, EventFormat::default());
    }
}
