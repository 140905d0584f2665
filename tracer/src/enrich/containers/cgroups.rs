//! Cgroup id → container id: a walk of the cgroup v2 hierarchy maps each directory's inode
//! number (what `bpf_get_current_cgroup_id` returns on 5.5+ kernels: the kernfs node id) to
//! the container id of its path, kept in a bounded cache that a miss refreshes.

use std::{
    os::unix::{ffi::OsStrExt, fs::MetadataExt},
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};

use super::id::container_id;

/// What one walk found.
#[derive(Debug, Default)]
pub(crate) struct Walk {
    /// Every directory's inode → its container id (`None`: not a container's cgroup).
    pub entries: HashMap<u64, Option<Arc<str>>>,
    /// Directories left out because `max` entries were reached.
    pub dropped: u64,
    /// Directories that could not be listed or examined (removed during the walk, permission).
    pub errors: u64,
    /// The largest inode seen (kernfs ids only grow: a cgroup created after the walk started
    /// has a larger one).
    pub max_id: u64,
}

/// Walks the directory tree under `root` (not following symlinks), calling `visit` with each
/// directory's inode number and its path relative to `root` (`""` for the root itself).
/// Stops calling `visit` after `max` directories and counts the rest as dropped. Never panics:
/// what cannot be read is counted and skipped.
pub(crate) fn walk_tree(root: &Path, max: usize, mut visit: impl FnMut(u64, &Path)) -> (u64, u64) {
    let mut visited = 0usize;
    let mut dropped = 0u64;
    let mut errors = 0u64;
    let mut record = |ino: u64, rel: &Path| {
        if visited < max {
            visited += 1;
            visit(ino, rel);
        } else {
            dropped += 1;
        }
    };
    match std::fs::metadata(root) {
        Ok(meta) => record(meta.ino(), Path::new("")),
        Err(_) => return (0, 1),
    }
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let Ok(dir) = std::fs::read_dir(root.join(&rel)) else {
            errors += 1;
            continue;
        };
        for entry in dir {
            let Ok(entry) = entry else {
                errors += 1;
                continue;
            };
            // Does not follow symlinks; a cgroup directory is a real directory.
            let Ok(meta) = entry.metadata() else {
                errors += 1;
                continue;
            };
            if !meta.is_dir() {
                continue;
            }
            let child = rel.join(entry.file_name());
            record(meta.ino(), &child);
            stack.push(child);
        }
    }
    (dropped, errors)
}

/// Walks `root` into a [`Walk`], giving equal container ids one shared `Arc` (taken from
/// `previous` when it already had it, so that ids handed out before and after a walk are the
/// same allocation).
pub(crate) fn walk(root: &Path, max: usize, previous: &HashMap<u64, Option<Arc<str>>>) -> Walk {
    let mut interned: HashSet<Arc<str>> = previous.values().flatten().cloned().collect();
    let mut out = Walk::default();
    let (dropped, errors) = walk_tree(root, max, |ino, rel| {
        let id = container_id(rel.as_os_str().as_bytes()).map(|id| {
            if let Some(shared) = interned.get(id) {
                Arc::clone(shared)
            } else {
                let shared: Arc<str> = Arc::from(id);
                interned.insert(Arc::clone(&shared));
                shared
            }
        });
        out.max_id = out.max_id.max(ino);
        out.entries.insert(ino, id);
    });
    out.dropped = dropped;
    out.errors = errors;
    out
}

/// The answer of a cache lookup.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// The id is a known cgroup (with or without a container).
    Known(Option<Arc<str>>),
    /// Not known, and a walk now may find it (it is newer than the last walk, and the last
    /// walk is old enough).
    Refresh,
    /// Not known, and walking again now is not allowed or would not help.
    Unknown,
}

/// The id → container cache, replaced by each walk.
#[derive(Debug, Default)]
pub(crate) struct CgroupCache {
    entries: HashMap<u64, Option<Arc<str>>>,
    /// Entries carried over from the walk before the last one because they were gone from it
    /// (a container's cgroup removed while its closed connections are still being stored).
    stale: HashSet<u64>,
    max_id: u64,
    last_walk: Option<Instant>,
}

impl CgroupCache {
    /// Looks `id` up; on a miss says whether a walk is due: only for an id newer than every
    /// directory the last walk saw (an older one was not there to be seen, or is out of reach),
    /// and not before `min_interval` since the last walk.
    /// The container of a cgroup this cache knows (`Some(None)`: known, not a container's).
    pub(crate) fn known(&self, id: u64) -> Option<&Option<Arc<str>>> {
        self.entries.get(&id)
    }

    pub(crate) fn lookup(&self, id: u64, now: Instant, min_interval: Duration) -> Lookup {
        if let Some(found) = self.entries.get(&id) {
            return Lookup::Known(found.clone());
        }
        let due = self
            .last_walk
            .is_none_or(|last| now.saturating_duration_since(last) >= min_interval);
        if due && (id > self.max_id || self.last_walk.is_none()) {
            Lookup::Refresh
        } else {
            Lookup::Unknown
        }
    }

    /// The entries of the previous walk, for [`walk`]'s sharing of ids.
    pub(crate) fn entries(&self) -> &HashMap<u64, Option<Arc<str>>> {
        &self.entries
    }

    /// Number of ids held.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Replaces the entries with a walk's. Container cgroups the walk no longer saw are kept
    /// for one more walk (while there is room under `max`), so that the connections of a
    /// container that just went away, stored after it did, still carry its id.
    pub(crate) fn replace(&mut self, mut walk: Walk, started: Instant, max: usize) {
        let mut stale = HashSet::default();
        for (id, container) in self.entries.drain() {
            if walk.entries.len() >= max {
                break;
            }
            if container.is_some() && !self.stale.contains(&id) && !walk.entries.contains_key(&id) {
                walk.entries.insert(id, container);
                stale.insert(id);
            }
        }
        self.entries = walk.entries;
        self.stale = stale;
        self.max_id = self.max_id.max(walk.max_id);
        self.last_walk = Some(started);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    /// A temporary directory tree, removed on drop.
    struct TempTree(PathBuf);

    impl TempTree {
        fn new() -> Self {
            static N: AtomicU32 = AtomicU32::new(0);
            let dir = std::env::temp_dir().join(format!(
                "tracer-cgroups-test-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }

        fn mkdir(&self, rel: &str) -> u64 {
            let path = self.0.join(rel);
            std::fs::create_dir_all(&path).unwrap();
            std::fs::metadata(&path).unwrap().ino()
        }
    }

    impl Drop for TempTree {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn a_walk_maps_every_directory_inode_to_its_relative_path() {
        let tree = TempTree::new();
        let scope = tree.mkdir(&format!("system.slice/docker-{ID}.scope"));
        let slice = tree.mkdir("system.slice");
        let service = tree.mkdir("system.slice/nginx.service");
        std::fs::write(tree.0.join("system.slice/cgroup.procs"), "").unwrap();
        std::os::unix::fs::symlink(&tree.0, tree.0.join("system.slice/loop")).unwrap();
        let mut seen = HashMap::default();
        let (dropped, errors) = walk_tree(&tree.0, 100, |ino, rel| {
            seen.insert(ino, rel.to_path_buf());
        });
        assert_eq!((dropped, errors), (0, 0));
        let root = std::fs::metadata(&tree.0).unwrap().ino();
        let want: HashMap<u64, PathBuf> = [
            (root, PathBuf::new()),
            (slice, PathBuf::from("system.slice")),
            (
                scope,
                PathBuf::from(format!("system.slice/docker-{ID}.scope")),
            ),
            (service, PathBuf::from("system.slice/nginx.service")),
        ]
        .into_iter()
        .collect();
        assert_eq!(seen, want);
    }

    #[test]
    fn a_walk_shares_one_arc_per_container_and_keeps_earlier_arcs() {
        let tree = TempTree::new();
        let outer = tree.mkdir(&format!("machine.slice/libpod-{ID}.scope"));
        let inner = tree.mkdir(&format!("machine.slice/libpod-{ID}.scope/container"));
        let none = tree.mkdir("machine.slice");
        let first = walk(&tree.0, 100, &HashMap::default());
        let a = first.entries[&outer].clone().unwrap();
        let b = first.entries[&inner].clone().unwrap();
        assert_eq!(&*a, ID);
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(first.entries[&none], None);
        assert_eq!(first.max_id, *first.entries.keys().max().unwrap());
        let second = walk(&tree.0, 100, &first.entries);
        assert!(Arc::ptr_eq(&a, second.entries[&inner].as_ref().unwrap()));
    }

    #[test]
    fn a_walk_is_bounded_and_counts_what_it_drops() {
        let tree = TempTree::new();
        for i in 0..10 {
            tree.mkdir(&format!("a/{i}"));
        }
        // Root, a, and ten below: 12 directories.
        let walked = walk(&tree.0, 5, &HashMap::default());
        assert_eq!(walked.entries.len(), 5);
        assert_eq!(walked.dropped, 7);
        let missing = walk(&tree.0.join("missing"), 5, &HashMap::default());
        assert!(missing.entries.is_empty());
        assert_eq!(missing.errors, 1);
    }

    /// A walk that saw `ids` (kernfs ids only grow; ext4's inodes in a temp dir do not, so
    /// this part is tested on made-up ids).
    fn walk_of(ids: &[(u64, Option<&str>)]) -> Walk {
        let entries: HashMap<u64, Option<Arc<str>>> =
            ids.iter().map(|(id, c)| (*id, c.map(Arc::from))).collect();
        let max_id = entries.keys().copied().max().unwrap_or(0);
        Walk {
            entries,
            max_id,
            ..Walk::default()
        }
    }

    #[test]
    fn a_miss_refreshes_only_for_newer_ids_and_not_too_often() {
        let mut cache = CgroupCache::default();
        let t0 = Instant::now();
        let interval = Duration::from_secs(1);
        assert_eq!(cache.lookup(10, t0, interval), Lookup::Refresh);
        cache.replace(walk_of(&[(1, None), (10, Some(ID))]), t0, 100);
        assert_eq!(
            cache.lookup(10, t0, interval),
            Lookup::Known(Some(Arc::from(ID)))
        );
        assert_eq!(cache.lookup(1, t0, interval), Lookup::Known(None));
        // Created after the walk: a newer id, refreshed once the interval has passed.
        assert_eq!(cache.lookup(11, t0, interval), Lookup::Unknown);
        let t1 = t0 + interval;
        assert_eq!(cache.lookup(11, t1, interval), Lookup::Refresh);
        // An id older than the walk that it did not see: walking again would not find it.
        assert_eq!(cache.lookup(5, t1, interval), Lookup::Unknown);
        cache.replace(walk_of(&[(1, None), (10, Some(ID)), (11, None)]), t1, 100);
        assert_eq!(cache.lookup(11, t1, interval), Lookup::Known(None));
        assert_eq!(cache.lookup(12, t1, interval), Lookup::Unknown);
    }

    #[test]
    fn the_cache_is_bounded_when_it_keeps_removed_containers() {
        let t0 = Instant::now();
        let mut cache = CgroupCache::default();
        cache.replace(walk_of(&[(1, None), (2, Some(ID)), (3, Some(ID))]), t0, 3);
        cache.replace(walk_of(&[(1, None), (4, None)]), t0, 3);
        assert_eq!(cache.len(), 3);
    }

    #[test]
    fn a_removed_container_cgroup_is_kept_for_one_more_walk() {
        let tree = TempTree::new();
        let gone = tree.mkdir(&format!("docker/{ID}"));
        let t0 = Instant::now();
        let mut cache = CgroupCache::default();
        cache.replace(walk(&tree.0, 100, cache.entries()), t0, 100);
        std::fs::remove_dir(tree.0.join(format!("docker/{ID}"))).unwrap();
        cache.replace(walk(&tree.0, 100, cache.entries()), t0, 100);
        assert!(matches!(
            cache.lookup(gone, t0, Duration::ZERO),
            Lookup::Known(Some(_))
        ));
        cache.replace(walk(&tree.0, 100, cache.entries()), t0, 100);
        assert_eq!(cache.lookup(gone, t0, Duration::MAX), Lookup::Unknown);
        assert_eq!(cache.len(), 2);
    }
}
