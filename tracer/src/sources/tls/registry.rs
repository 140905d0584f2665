//! The file registry (the seed's): which TLS library files are hooked, for which processes.
//! Pure bookkeeping over a [`Scan`] and a [`Hooker`] that does the attaching, so its rules are
//! unit-tested without a kernel.
//!
//! Rules: a file (device + inode) is hooked once, whatever the number of processes that map
//! it, when a scan first finds it mapped; it is released (every link detached) when a scan
//! finds no process mapping it. A file whose required symbols cannot all be hooked is left
//! with nothing attached and blocked: not retried while the tracer runs, counted by reason. At
//! most `max_files` files are hooked; more are counted and retried at the next scan.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
    sync::atomic::Ordering,
};

use super::{
    Library, TlsCounters,
    scan::{FileId, Scan},
};
use crate::telemetry::bump;

/// Why a file could not be hooked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttachFailure {
    /// The file has no such symbol (stripped of its dynamic symbols, or not the library its
    /// name says).
    NoSymbol(String),
    /// The file could not be read or is not a valid ELF object.
    BadFile(String),
    /// The kernel refused the uprobe.
    Kernel(String),
}

impl std::fmt::Display for AttachFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NoSymbol(e) => write!(f, "no symbol: {e}"),
            Self::BadFile(e) => write!(f, "bad file: {e}"),
            Self::Kernel(e) => write!(f, "kernel refused: {e}"),
        }
    }
}

/// Attaches and detaches the TLS programs.
pub trait Hooker {
    /// What detaching needs.
    type Link;
    /// Attaches `program` at `symbol` of the file at `path`.
    fn attach(
        &self,
        program: &'static str,
        path: &Path,
        symbol: &str,
    ) -> Result<Self::Link, AttachFailure>;
    /// Detaches one link.
    fn detach(&self, program: &'static str, link: Self::Link);
}

#[derive(Debug)]
struct Hooked<L> {
    library: Library,
    path: std::path::PathBuf,
    links: Vec<(&'static str, L)>,
    pids: BTreeSet<u32>,
}

/// The registry.
#[derive(Debug)]
pub struct Registry<L> {
    hooked: BTreeMap<FileId, Hooked<L>>,
    blocked: BTreeMap<FileId, AttachFailure>,
    max_files: usize,
}

impl<L> Registry<L> {
    /// An empty registry hooking at most `max_files` files.
    pub fn new(max_files: usize) -> Self {
        Self {
            hooked: BTreeMap::new(),
            blocked: BTreeMap::new(),
            max_files,
        }
    }

    /// Brings the hooks in line with `scan` (of every process): files no process maps are
    /// released.
    pub fn update(&mut self, scan: &Scan, hooker: &impl Hooker<Link = L>, counters: &TlsCounters) {
        // Released: hooked files no process maps any more.
        let gone: Vec<FileId> = self
            .hooked
            .keys()
            .filter(|id| !scan.files.contains_key(id))
            .copied()
            .collect();
        for id in gone {
            if let Some(file) = self.hooked.remove(&id) {
                tracing::debug!(path = %file.path.display(), "TLS library no longer mapped: released");
                for (program, link) in file.links {
                    hooker.detach(program, link);
                }
                bump(&counters.tls_files_released, 1);
            }
        }
        self.hook_new(scan, true, hooker, counters);
    }

    /// Hooks the files of `scan` (of some processes only: the exec watch's), releasing
    /// nothing: the processes it names are added to those of files already hooked.
    pub fn add(&mut self, scan: &Scan, hooker: &impl Hooker<Link = L>, counters: &TlsCounters) {
        self.hook_new(scan, false, hooker, counters);
    }

    /// Hooks the files of `scan` not hooked yet; `whole`: `scan` lists every process, whose
    /// sets replace those of hooked files.
    fn hook_new(
        &mut self,
        scan: &Scan,
        whole: bool,
        hooker: &impl Hooker<Link = L>,
        counters: &TlsCounters,
    ) {
        for (id, (seen, pids)) in &scan.files {
            if let Some(file) = self.hooked.get_mut(id) {
                if whole {
                    file.pids.clone_from(pids);
                } else {
                    file.pids.extend(pids.iter().copied());
                }
                continue;
            }
            if self.blocked.contains_key(id) {
                continue;
            }
            if self.hooked.len() >= self.max_files {
                bump(&counters.tls_files_capped, 1);
                continue;
            }
            match hook(hooker, seen.library, &seen.path) {
                Ok(links) => {
                    tracing::info!(path = %seen.path.display(), library = seen.library.name(), processes = pids.len(), "TLS library hooked");
                    bump(&counters.tls_files_attached, 1);
                    self.hooked.insert(
                        *id,
                        Hooked {
                            library: seen.library,
                            path: seen.path.clone(),
                            links,
                            pids: pids.clone(),
                        },
                    );
                }
                Err(failure) => {
                    tracing::warn!(path = %seen.path.display(), library = seen.library.name(), error = %failure, "TLS library not hookable: blocked");
                    let counter = match failure {
                        AttachFailure::NoSymbol(_) => &counters.tls_attach_failed_no_symbol,
                        AttachFailure::BadFile(_) => &counters.tls_attach_failed_bad_file,
                        AttachFailure::Kernel(_) => &counters.tls_attach_failed_kernel,
                    };
                    bump(counter, 1);
                    self.blocked.insert(*id, failure);
                }
            }
        }
        let processes: BTreeSet<u32> = self
            .hooked
            .values()
            .flat_map(|f| f.pids.iter().copied())
            .collect();
        counters
            .tls_files_hooked
            .store(self.hooked.len() as u64, Ordering::Relaxed);
        counters
            .tls_files_blocked
            .store(self.blocked.len() as u64, Ordering::Relaxed);
        counters
            .tls_processes
            .store(processes.len() as u64, Ordering::Relaxed);
    }

    /// Whether process `pid` maps a hooked file.
    pub fn hooks_pid(&self, pid: u32) -> bool {
        self.hooked.values().any(|f| f.pids.contains(&pid))
    }

    /// Detaches everything.
    pub fn clear(&mut self, hooker: &impl Hooker<Link = L>) {
        for (_, file) in std::mem::take(&mut self.hooked) {
            for (program, link) in file.links {
                hooker.detach(program, link);
            }
        }
    }

    /// The seed's `Log`: one line per hooked and blocked file, through `tracing`.
    pub fn log(&self) {
        for file in self.hooked.values() {
            tracing::info!(
                path = %file.path.display(),
                library = file.library.name(),
                processes = ?file.pids,
                hooks = file.links.len(),
                "TLS file registry: hooked"
            );
        }
        for (id, failure) in &self.blocked {
            tracing::info!(dev = ?id.dev, inode = id.inode, error = %failure, "TLS file registry: blocked");
        }
    }
}

/// Attaches every symbol of `library` in `path`; on a failure of a required one, detaches what
/// was attached and returns the failure. Optional symbols that fail are skipped.
fn hook<H: Hooker>(
    hooker: &H,
    library: Library,
    path: &Path,
) -> Result<Vec<(&'static str, H::Link)>, AttachFailure> {
    let mut links = Vec::new();
    for hook in library.hooks() {
        match hooker.attach(hook.program, path, hook.symbol) {
            Ok(link) => links.push((hook.program, link)),
            Err(failure) if hook.required => {
                for (program, link) in links {
                    hooker.detach(program, link);
                }
                return Err(failure);
            }
            Err(failure) => {
                tracing::debug!(symbol = hook.symbol, error = %failure, "optional TLS symbol not hooked");
            }
        }
    }
    Ok(links)
}

#[cfg(test)]
mod tests {
    use std::{cell::RefCell, path::PathBuf};

    use super::*;
    use crate::sources::tls::scan::SeenFile;

    /// Attaches what the file "has"; records live links.
    #[derive(Default)]
    struct Fake {
        missing: Vec<&'static str>,
        live: RefCell<BTreeSet<(PathBuf, String, &'static str)>>,
    }

    impl Hooker for Fake {
        type Link = (PathBuf, String, &'static str);
        fn attach(
            &self,
            program: &'static str,
            path: &Path,
            symbol: &str,
        ) -> Result<Self::Link, AttachFailure> {
            if path.ends_with("corrupt.so") {
                return Err(AttachFailure::BadFile("error parsing ELF".into()));
            }
            if self.missing.contains(&symbol) || path.ends_with("notls.so") {
                return Err(AttachFailure::NoSymbol(symbol.into()));
            }
            let link = (path.to_owned(), symbol.to_owned(), program);
            self.live.borrow_mut().insert(link.clone());
            Ok(link)
        }
        fn detach(&self, _program: &'static str, link: Self::Link) {
            assert!(self.live.borrow_mut().remove(&link), "double detach");
        }
    }

    fn id(inode: u64) -> FileId {
        FileId { dev: (8, 1), inode }
    }

    fn scan(files: &[(u64, &str, Library, &[u32])]) -> Scan {
        let mut out = Scan::default();
        for (inode, path, library, pids) in files {
            out.files.insert(
                id(*inode),
                (
                    SeenFile {
                        library: *library,
                        path: PathBuf::from(path),
                    },
                    pids.iter().copied().collect(),
                ),
            );
        }
        out
    }

    fn value(c: &std::sync::atomic::AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }

    #[test]
    fn a_file_is_hooked_once_and_released_when_no_process_maps_it() {
        let fake = Fake {
            missing: vec!["SSL_read_ex", "SSL_write_ex"],
            ..Fake::default()
        };
        let counters = TlsCounters::default();
        let mut reg = Registry::new(8);
        let ssl = (
            1,
            "/p/1/root/libssl.so.3",
            Library::OpenSsl,
            &[10u32, 11][..],
        );
        reg.update(&scan(&[ssl]), &fake, &counters);
        let required = Library::OpenSsl
            .hooks()
            .iter()
            .filter(|h| h.required)
            .count();
        assert_eq!(fake.live.borrow().len(), Library::OpenSsl.hooks().len() - 4);
        assert!(fake.live.borrow().len() >= required);
        assert_eq!(value(&counters.tls_files_hooked), 1);
        assert_eq!(value(&counters.tls_processes), 2);
        // Another process mapping the same file (another path): nothing new attached.
        let more = (
            1,
            "/p/12/root/libssl.so.3",
            Library::OpenSsl,
            &[10u32, 11, 12][..],
        );
        let before = fake.live.borrow().len();
        reg.update(&scan(&[more]), &fake, &counters);
        assert_eq!(fake.live.borrow().len(), before);
        assert_eq!(value(&counters.tls_files_attached), 1);
        assert_eq!(value(&counters.tls_processes), 3);
        assert!(reg.hooks_pid(12));
        reg.update(&scan(&[]), &fake, &counters);
        assert!(fake.live.borrow().is_empty());
        assert_eq!(value(&counters.tls_files_released), 1);
        assert_eq!(value(&counters.tls_files_hooked), 0);
        assert_eq!(value(&counters.tls_processes), 0);
    }

    #[test]
    fn files_without_symbols_or_corrupt_are_blocked_by_reason_and_not_retried() {
        let fake = Fake::default();
        let counters = TlsCounters::default();
        let mut reg = Registry::new(8);
        let files = [
            (2, "/x/notls.so", Library::OpenSsl, &[1u32][..]),
            (3, "/x/corrupt.so", Library::GnuTls, &[1u32][..]),
        ];
        for _ in 0..3 {
            reg.update(&scan(&files), &fake, &counters);
        }
        assert!(fake.live.borrow().is_empty());
        assert_eq!(value(&counters.tls_attach_failed_no_symbol), 1);
        assert_eq!(value(&counters.tls_attach_failed_bad_file), 1);
        assert_eq!(value(&counters.tls_files_blocked), 2);
        assert_eq!(value(&counters.tls_files_hooked), 0);
    }

    #[test]
    fn a_partial_scan_hooks_and_adds_processes_but_releases_nothing() {
        let fake = Fake::default();
        let counters = TlsCounters::default();
        let mut reg = Registry::new(8);
        let ssl = (1, "/p/1/root/libssl.so.3", Library::OpenSsl, &[10u32][..]);
        reg.update(&scan(&[ssl]), &fake, &counters);
        // The exec watch's scan of one new process that maps another file.
        let gnutls = (
            2,
            "/p/20/root/libgnutls.so.30",
            Library::GnuTls,
            &[20u32][..],
        );
        let again = (1, "/p/21/root/libssl.so.3", Library::OpenSsl, &[21u32][..]);
        reg.add(&scan(&[gnutls, again]), &fake, &counters);
        assert_eq!(value(&counters.tls_files_hooked), 2);
        assert_eq!(value(&counters.tls_files_released), 0);
        assert_eq!(value(&counters.tls_processes), 3);
        assert!(reg.hooks_pid(10) && reg.hooks_pid(20) && reg.hooks_pid(21));
        // The next full scan is the truth again.
        reg.update(&scan(&[gnutls]), &fake, &counters);
        assert_eq!(value(&counters.tls_files_released), 1);
        assert!(!reg.hooks_pid(10));
        reg.clear(&fake);
    }

    #[test]
    fn the_cap_on_hooked_files_is_kept_and_counted() {
        let fake = Fake::default();
        let counters = TlsCounters::default();
        let mut reg = Registry::new(1);
        let files = [
            (4, "/a/libssl.so.3", Library::OpenSsl, &[1u32][..]),
            (5, "/b/libgnutls.so.30", Library::GnuTls, &[2u32][..]),
        ];
        reg.update(&scan(&files), &fake, &counters);
        assert_eq!(value(&counters.tls_files_hooked), 1);
        assert_eq!(value(&counters.tls_files_capped), 1);
        // The first released: the second is hooked at the next scan.
        reg.update(&scan(&files[1..]), &fake, &counters);
        assert_eq!(value(&counters.tls_files_hooked), 1);
        assert!(reg.hooks_pid(2));
        reg.clear(&fake);
        assert!(fake.live.borrow().is_empty());
    }
}
