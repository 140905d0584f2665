//! A minimal writer for the cpio "newc" format the kernel unpacks as initramfs. Written here rather
//! than staged on disk for the `cpio` tool so the image can hold device nodes and root-owned files
//! with exact modes, and so parent directories are always emitted before their contents.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::PathBuf;

use anyhow::{Context, Result};

pub enum Data {
    Bytes(Vec<u8>),
    /// Read when the archive is written, so big binaries are not held in memory twice.
    File(PathBuf),
}

enum Node {
    Dir,
    File(Data),
    Symlink(String),
    CharDev { major: u32, minor: u32 },
}

struct Entry {
    perm: u32,
    node: Node,
}

const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFCHR: u32 = 0o020_000;

/// Paths are kept without the leading `/`. A BTreeMap orders every directory before its contents
/// (a parent path is a prefix of its children's), which is what the kernel's unpacker needs.
#[derive(Default)]
pub struct Archive {
    entries: BTreeMap<String, Entry>,
}

fn normalize(path: &str) -> String {
    path.trim_matches('/').to_owned()
}

impl Archive {
    fn insert(&mut self, path: &str, entry: Entry) {
        let path = normalize(path);
        for (i, c) in path.char_indices() {
            if let (Some(parent), '/') = (path.get(..i), c) {
                self.entries.entry(parent.to_owned()).or_insert(Entry {
                    perm: 0o755,
                    node: Node::Dir,
                });
            }
        }
        self.entries.insert(path, entry);
    }

    pub fn dir(&mut self, path: &str) {
        self.insert(
            path,
            Entry {
                perm: 0o755,
                node: Node::Dir,
            },
        );
    }

    pub fn file(&mut self, path: &str, data: Data, perm: u32) {
        self.insert(
            path,
            Entry {
                perm,
                node: Node::File(data),
            },
        );
    }

    pub fn symlink(&mut self, path: &str, target: &str) {
        self.insert(
            path,
            Entry {
                perm: 0o777,
                node: Node::Symlink(target.to_owned()),
            },
        );
    }

    pub fn char_dev(&mut self, path: &str, major: u32, minor: u32, perm: u32) {
        self.insert(
            path,
            Entry {
                perm,
                node: Node::CharDev { major, minor },
            },
        );
    }

    pub fn contains(&self, path: &str) -> bool {
        self.entries.contains_key(&normalize(path))
    }

    pub fn write_to(&self, out: &mut impl Write) -> Result<()> {
        let mut offset = 0u64;
        for (ino, (path, entry)) in (1u32..).zip(&self.entries) {
            let (mode, nlink, rdev, payload) = match &entry.node {
                Node::Dir => (S_IFDIR, 2, (0, 0), Payload::None),
                Node::File(Data::Bytes(b)) => (S_IFREG, 1, (0, 0), Payload::Bytes(b)),
                Node::File(Data::File(p)) => (S_IFREG, 1, (0, 0), Payload::File(p)),
                Node::Symlink(t) => (S_IFLNK, 1, (0, 0), Payload::Bytes(t.as_bytes())),
                Node::CharDev { major, minor } => (S_IFCHR, 1, (*major, *minor), Payload::None),
            };
            let size = match &payload {
                Payload::None => 0,
                Payload::Bytes(b) => b.len() as u64,
                Payload::File(p) => std::fs::metadata(p)
                    .with_context(|| format!("reading {}", p.display()))?
                    .len(),
            };
            let header = Header {
                ino,
                mode: mode | entry.perm,
                nlink,
                size,
                rdev,
            };
            offset += header.write(out, path)?;
            match payload {
                Payload::None => {}
                Payload::Bytes(b) => out.write_all(b)?,
                Payload::File(p) => {
                    let mut file = std::fs::File::open(p)
                        .with_context(|| format!("opening {}", p.display()))?;
                    let copied = io::copy(&mut file, out)?;
                    anyhow::ensure!(
                        copied == size,
                        "{} changed while being archived",
                        p.display()
                    );
                }
            }
            offset += size;
            offset += pad(out, offset)?;
        }
        let trailer = Header {
            ino: 0,
            mode: 0,
            nlink: 1,
            size: 0,
            rdev: (0, 0),
        };
        offset += trailer.write(out, "TRAILER!!!")?;
        pad(out, offset)?;
        Ok(())
    }
}

enum Payload<'a> {
    None,
    Bytes(&'a [u8]),
    File(&'a PathBuf),
}

struct Header {
    ino: u32,
    mode: u32,
    nlink: u32,
    size: u64,
    rdev: (u32, u32),
}

impl Header {
    /// Writes the 110-byte header and the NUL-terminated, 4-byte-padded name; returns bytes written.
    fn write(&self, out: &mut impl Write, name: &str) -> Result<u64> {
        let size = u32::try_from(self.size).context("newc cannot hold files of 4 GiB or more")?;
        let name_len = u32::try_from(name.len() + 1).context("name too long")?;
        let fields = [
            self.ino,
            self.mode,
            0,
            0,
            self.nlink,
            0,
            size,
            0,
            0,
            self.rdev.0,
            self.rdev.1,
            name_len,
            0,
        ];
        let mut header = String::from("070701");
        for field in fields {
            header.push_str(&format!("{field:08x}"));
        }
        out.write_all(header.as_bytes())?;
        out.write_all(name.as_bytes())?;
        out.write_all(&[0])?;
        let written = 110 + u64::from(name_len);
        Ok(written + pad(out, written)?)
    }
}

/// Pads to the next multiple of 4 (offsets are since the start of the archive, and the header
/// starts aligned); returns the padding written.
fn pad(out: &mut impl Write, offset: u64) -> Result<u64> {
    let padding = (4 - offset % 4) % 4;
    for _ in 0..padding {
        out.write_all(&[0])?;
    }
    Ok(padding)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_first_and_aligned() {
        let mut archive = Archive::default();
        archive.file("/bin/x/hello", Data::Bytes(b"hi\n".to_vec()), 0o755);
        archive.symlink("/bin/sh", "busybox");
        archive.char_dev("/dev/console", 5, 1, 0o600);
        let mut out = Vec::new();
        archive.write_to(&mut out).unwrap();
        assert_eq!(out.len() % 4, 0);
        let text = String::from_utf8_lossy(&out);
        let names: Vec<&str> = [
            "bin\0",
            "bin/sh\0",
            "bin/x\0",
            "bin/x/hello\0",
            "dev\0",
            "dev/console\0",
            "TRAILER!!!\0",
        ]
        .to_vec();
        let mut last = 0;
        for name in names {
            let at = text[last..].find(name).unwrap() + last;
            assert!(at >= last);
            last = at;
        }
        // The file header: regular file 0755, 3 bytes.
        assert!(text.contains(&format!("{:08x}", S_IFREG | 0o755)));
        assert!(text.contains("hi\n"));
        // /dev/console carries rdev 5:1.
        assert!(text.contains(&format!("{:08x}{:08x}", 5, 1)));
    }

    #[test]
    fn matches_cpio_tool_listing() {
        // The archive must be readable by GNU cpio, the reference implementation of newc.
        let Some(cpio) = crate::cmd::find_program("cpio") else {
            return;
        };
        let mut archive = Archive::default();
        archive.file("a/b/c.txt", Data::Bytes(b"12345".to_vec()), 0o644);
        archive.symlink("a/link", "b/c.txt");
        let mut out = Vec::new();
        archive.write_to(&mut out).unwrap();
        let mut child = std::process::Command::new(cpio)
            .args(["-t", "--quiet"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&out).unwrap();
        let listing = child.wait_with_output().unwrap();
        assert!(listing.status.success());
        assert_eq!(
            String::from_utf8_lossy(&listing.stdout),
            "a\na/b\na/b/c.txt\na/link\n"
        );
    }
}
