//! Which processes map which TLS library files: `/proc/<pid>/maps`, parsed line by line.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use super::Library;

/// A file as the kernel knows it: device and inode (what a uprobe is attached to), so one
/// library file mapped by many processes, or reached by several paths, is hooked once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FileId {
    /// The device, as `/proc/<pid>/maps` prints it (major, minor).
    pub dev: (u32, u32),
    pub inode: u64,
}

/// One TLS library file seen mapped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeenFile {
    pub library: Library,
    /// A path that opens it from the tracer's mount namespace: `/proc/<pid>/root/<path>`, so
    /// a file inside a container's filesystem is reached too.
    pub path: PathBuf,
}

/// One scan: every TLS library file, by identity, with the processes that map it.
#[derive(Debug, Default)]
pub struct Scan {
    pub files: BTreeMap<FileId, (SeenFile, BTreeSet<u32>)>,
    /// Processes whose maps could not be read (gone meanwhile, or not allowed).
    pub unreadable: u64,
}

/// The TLS library files of one `maps` text: `(id, library, path as mapped)`, each file once.
pub fn parse_maps(maps: &str, libraries: &[(Library, String)]) -> Vec<(FileId, Library, String)> {
    let mut out: Vec<(FileId, Library, String)> = Vec::new();
    for line in maps.lines() {
        // address perms offset dev inode path
        let mut fields = line.split_ascii_whitespace();
        let (Some(_), Some(_), Some(_), Some(dev), Some(inode)) = (
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
        ) else {
            continue;
        };
        let Some(path) = fields.next() else {
            continue;
        };
        if fields.next().is_some() {
            // "(deleted)" or a path with spaces: a replaced file cannot be opened by its path.
            continue;
        }
        let base = path.rsplit('/').next().unwrap_or(path);
        let Some(library) = libraries
            .iter()
            .find(|(_, prefix)| base.starts_with(prefix.as_str()))
            .map(|(library, _)| *library)
        else {
            continue;
        };
        let Some(dev) = parse_dev(dev) else {
            continue;
        };
        let Ok(inode) = inode.parse::<u64>() else {
            continue;
        };
        let id = FileId { dev, inode };
        if inode == 0 || out.iter().any(|(seen, ..)| *seen == id) {
            continue;
        }
        out.push((id, library, path.to_owned()));
    }
    out
}

fn parse_dev(dev: &str) -> Option<(u32, u32)> {
    let (major, minor) = dev.split_once(':')?;
    Some((
        u32::from_str_radix(major, 16).ok()?,
        u32::from_str_radix(minor, 16).ok()?,
    ))
}

/// Scans every process of `proc_root` (`/proc`).
pub fn scan(proc_root: &Path, libraries: &[(Library, String)]) -> Scan {
    let mut out = Scan::default();
    let Ok(entries) = std::fs::read_dir(proc_root) else {
        return out;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        scan_one(&mut out, &entry.path(), pid, libraries);
    }
    out
}

/// Scans the processes `pids` of `proc_root` only (those the exec watch named).
pub fn scan_pids(proc_root: &Path, pids: &BTreeSet<u32>, libraries: &[(Library, String)]) -> Scan {
    let mut out = Scan::default();
    for &pid in pids {
        scan_one(&mut out, &proc_root.join(pid.to_string()), pid, libraries);
    }
    out
}

/// Adds the TLS library files process `pid` (at `dir`) maps to `out`.
fn scan_one(out: &mut Scan, dir: &Path, pid: u32, libraries: &[(Library, String)]) {
    let Ok(maps) = std::fs::read_to_string(dir.join("maps")) else {
        out.unreadable += 1;
        return;
    };
    for (id, library, path) in parse_maps(&maps, libraries) {
        let (_, pids) = out.files.entry(id).or_insert_with(|| {
            let relative = path.trim_start_matches('/');
            (
                SeenFile {
                    library,
                    path: dir.join("root").join(relative),
                },
                BTreeSet::new(),
            )
        });
        pids.insert(pid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn libs() -> Vec<(Library, String)> {
        vec![
            (Library::OpenSsl, "libssl.so".to_owned()),
            (Library::GnuTls, "libgnutls.so".to_owned()),
        ]
    }

    #[test]
    fn maps_lines_give_each_tls_file_once_by_device_and_inode() {
        let maps = "\
55d0c000-55d0d000 r--p 00000000 fd:01 1234 /usr/sbin/nginx
7f00-7f01 r--p 00000000 fd:01 5555 /usr/lib/x86_64-linux-gnu/libssl.so.3
7f01-7f02 r-xp 00001000 fd:01 5555 /usr/lib/x86_64-linux-gnu/libssl.so.3
7f02-7f03 r-xp 00001000 103:02 77 /usr/lib/x86_64-linux-gnu/libgnutls.so.30.34.3
7f03-7f04 r-xp 00001000 fd:01 78 /usr/lib/x86_64-linux-gnu/libssl.so.3 (deleted)
7f04-7f05 rw-p 00000000 00:00 0 
7ffd-7ffe rw-p 00000000 00:00 0 [stack]
garbage
";
        let found = parse_maps(maps, &libs());
        assert_eq!(
            found,
            vec![
                (
                    FileId {
                        dev: (0xfd, 1),
                        inode: 5555
                    },
                    Library::OpenSsl,
                    "/usr/lib/x86_64-linux-gnu/libssl.so.3".to_owned()
                ),
                (
                    FileId {
                        dev: (0x103, 2),
                        inode: 77
                    },
                    Library::GnuTls,
                    "/usr/lib/x86_64-linux-gnu/libgnutls.so.30.34.3".to_owned()
                ),
            ]
        );
    }

    #[test]
    fn this_process_scan_does_not_fail() {
        // The test binary maps no TLS library; the scan must still walk /proc without error.
        let scan = scan(Path::new("/proc"), &libs());
        assert!(scan.files.values().all(|(_, pids)| !pids.is_empty()));
    }
}
