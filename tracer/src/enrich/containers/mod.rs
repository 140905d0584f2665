//! Container ids: the source container of every connection from the owner's cgroup, and the
//! destination container of intra-host connections (Datadog's LocalResolver).
//!
//! - Source ([`Containers::source`]): the kernel records the owner's cgroup v2 id with the
//!   owner ([`ConnectionStats::cgroup_id`]), which is the inode number of the cgroup's
//!   directory. A walk of the cgroup v2 hierarchy (the root the tracer attaches to, see
//!   [`find_cgroup2_root`]) maps every directory's inode to the container id in its path
//!   ([`id::container_id`]: Docker, containerd, CRI-O, Podman, Kubernetes, ECS, Garden). The
//!   walk runs at start and again on a miss, for an id newer than every directory the last
//!   walk saw (kernfs ids only grow), at most once per [`ContainersConfig::refresh_interval`].
//!   It keeps at most [`ContainersConfig::max_cgroups`] directories. Equal container ids share
//!   one `Arc`.
//! - Destination ([`Containers::resolve_dest`]): see [`local_resolver`].
//!
//! Nothing here fails the tracer: without a cgroup v2 hierarchy it says so once and counts
//! every id it could not resolve. A tracer in a cgroup namespace of its own whose mount shows
//! only its subtree cannot resolve the cgroups outside it (counted as unknown, never walked
//! for again: their ids are older than the walk).

pub mod cgroups;
pub mod id;
pub mod local_resolver;

use std::{
    fs::File,
    os::fd::AsRawFd,
    path::PathBuf,
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use parking_lot::{RwLock, RwLockUpgradableReadGuard};

use self::cgroups::{CgroupCache, Lookup};
use crate::{
    Error, counter_set,
    kernel::capabilities::{Cgroup2Root, find_cgroup2_root},
    model::ConnectionStats,
    telemetry::{CounterSource, Sample, bump},
};

/// Configuration of container resolution.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainersConfig {
    /// Resolve container ids at all (default on).
    pub enabled: bool,
    /// Most cgroup directories held (default 16384); a walk leaves out the rest and counts them
    /// (`container_cgroups_dropped`).
    pub max_cgroups: usize,
    /// Least time between two walks of the cgroup hierarchy (default 250 ms). A lookup of an
    /// unknown cgroup id within it stays unknown (`container_cgroup_unknown`).
    pub refresh_interval: Duration,
}

impl Default for ContainersConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_cgroups: 16_384,
            refresh_interval: Duration::from_millis(250),
        }
    }
}

impl ContainersConfig {
    /// Checks the sizes.
    pub fn validate(&self) -> crate::Result<()> {
        if self.max_cgroups == 0 {
            return Err(Error::InvalidConfig(
                "containers.max_cgroups must be at least 1".to_owned(),
            ));
        }
        if self.refresh_interval.is_zero() {
            return Err(Error::InvalidConfig(
                "containers.refresh_interval must not be zero".to_owned(),
            ));
        }
        Ok(())
    }
}

counter_set! {
    /// Counters of container resolution.
    pub struct ContainerCounters {
        /// Cgroup ids looked up that no walk of the cgroup hierarchy found (or no hierarchy).
        container_cgroup_unknown: Loss,
        /// Cgroup directories a walk left out because max_cgroups was reached (summed over walks).
        container_cgroups_dropped: Loss,
        /// Cgroup directories a walk could not read (removed meanwhile, permissions).
        container_cgroup_walk_errors: Loss,
        /// Walks of the cgroup hierarchy.
        container_cgroup_walks: Activity,
        /// Connections given a source container.
        container_source_resolved: Activity,
        /// Intra-host connections given a destination container.
        container_dest_resolved: Activity,
        /// Cgroup directories held after the last walk.
        container_cgroups_indexed: Gauge,
    }
}

/// Where the hierarchy is walked from.
enum WalkRoot {
    /// A mount point (this namespace's, or pid 1's through /proc/1/root).
    Path(PathBuf),
    /// A detached private mount, reached through its open descriptor.
    Fd(File),
}

impl WalkRoot {
    fn path(&self) -> PathBuf {
        match self {
            Self::Path(path) => path.clone(),
            Self::Fd(file) => PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd())),
        }
    }
}

/// Container resolution (see the module docs).
pub struct Containers {
    config: ContainersConfig,
    root: Option<WalkRoot>,
    cache: RwLock<CgroupCache>,
    counters: ContainerCounters,
}

impl Containers {
    /// Starts resolution as configured: finds the cgroup v2 hierarchy and walks it once.
    pub fn start(config: &ContainersConfig) -> Self {
        let root = if config.enabled {
            Self::find_root()
        } else {
            None
        };
        Self::with_root(config, root)
    }

    fn find_root() -> Option<WalkRoot> {
        let found = find_cgroup2_root();
        let root = match found {
            Some(Cgroup2Root::Mounted(path) | Cgroup2Root::ViaPid1(path)) => {
                Some(WalkRoot::Path(path))
            }
            Some(root @ Cgroup2Root::PrivateMount) => match root.open() {
                Ok(file) => Some(WalkRoot::Fd(file)),
                Err(err) => {
                    tracing::warn!(%err, "containers: opening a private cgroup2 mount");
                    None
                }
            },
            None => None,
        };
        if root.is_none() {
            tracing::warn!(
                "containers: no cgroup v2 hierarchy found; connections get no container ids"
            );
        }
        root
    }

    fn with_root(config: &ContainersConfig, root: Option<WalkRoot>) -> Self {
        let containers = Self {
            config: config.clone(),
            root,
            cache: RwLock::new(CgroupCache::default()),
            counters: ContainerCounters::default(),
        };
        if let Some(root) = &containers.root {
            let cache = containers.cache.upgradable_read();
            containers.refresh(root, cache);
        }
        containers
    }

    /// Walks the hierarchy and replaces the cache (the caller holds the upgradable lock: one
    /// walk at a time, lookups go on meanwhile).
    fn refresh(&self, root: &WalkRoot, cache: RwLockUpgradableReadGuard<'_, CgroupCache>) {
        let started = Instant::now();
        let max = self.config.max_cgroups;
        let walked = cgroups::walk(&root.path(), max, cache.entries());
        let c = &self.counters;
        bump(&c.container_cgroup_walks, 1);
        bump(&c.container_cgroups_dropped, walked.dropped);
        bump(&c.container_cgroup_walk_errors, walked.errors);
        if walked.errors > 0 {
            tracing::debug!(errors = walked.errors, "containers: cgroup walk errors");
        }
        let mut cache = RwLockUpgradableReadGuard::upgrade(cache);
        cache.replace(walked, started, max);
        c.container_cgroups_indexed
            .store(cache.len() as u64, Ordering::Relaxed);
    }

    /// The container id of the cgroup with id `cgroup_id` (0: unknown owner), if it is a
    /// container's.
    pub fn source(&self, cgroup_id: u64) -> Option<Arc<str>> {
        if !self.config.enabled || cgroup_id == 0 {
            return None;
        }
        let found = self.lookup(cgroup_id);
        match &found {
            Some(Some(_)) => bump(&self.counters.container_source_resolved, 1),
            Some(None) => {}
            None => bump(&self.counters.container_cgroup_unknown, 1),
        }
        found.flatten()
    }

    /// Fills `containers.source` of every connection whose owner's cgroup is a container's:
    /// one read lock for the batch (ids the cache does not know yet take [`Containers::source`]'s
    /// path, with its walk if due), counters bumped once.
    pub fn attach_sources(&self, conns: &mut [ConnectionStats]) {
        if !self.config.enabled {
            return;
        }
        let mut resolved = 0u64;
        let mut unknown: Vec<usize> = Vec::new();
        {
            let cache = self.cache.read();
            // Connections of one process are often next to each other: remember the last id.
            let mut last: Option<(u64, Option<Arc<str>>)> = None;
            for (i, conn) in conns.iter_mut().enumerate() {
                let id = conn.cgroup_id;
                if id == 0 {
                    continue;
                }
                let container = match &last {
                    Some((last_id, container)) if *last_id == id => container.clone(),
                    _ => match cache.known(id) {
                        Some(container) => {
                            last = Some((id, container.clone()));
                            container.clone()
                        }
                        None => {
                            unknown.push(i);
                            continue;
                        }
                    },
                };
                resolved += u64::from(container.is_some());
                conn.containers.source = container;
            }
        }
        bump(&self.counters.container_source_resolved, resolved);
        for i in unknown {
            if let Some(conn) = conns.get_mut(i) {
                conn.containers.source = self.source(conn.cgroup_id);
            }
        }
    }

    /// `Some(container)` for a known cgroup, `None` for an unknown one (after a walk if due).
    fn lookup(&self, cgroup_id: u64) -> Option<Option<Arc<str>>> {
        let root = self.root.as_ref()?;
        let interval = self.config.refresh_interval;
        match self
            .cache
            .read()
            .lookup(cgroup_id, Instant::now(), interval)
        {
            Lookup::Known(container) => return Some(container),
            Lookup::Unknown => return None,
            Lookup::Refresh => {}
        }
        let cache = self.cache.upgradable_read();
        // Another thread may have walked while this one waited.
        match cache.lookup(cgroup_id, Instant::now(), interval) {
            Lookup::Known(container) => return Some(container),
            Lookup::Unknown => return None,
            Lookup::Refresh => {}
        }
        self.refresh(root, cache);
        match self
            .cache
            .read()
            .lookup(cgroup_id, Instant::now(), Duration::MAX)
        {
            Lookup::Known(container) => Some(container),
            Lookup::Unknown | Lookup::Refresh => None,
        }
    }

    /// Fills `containers.dest` of intra-host connections (LocalResolver).
    pub fn resolve_dest(&self, conns: &mut [ConnectionStats]) {
        if !self.config.enabled {
            return;
        }
        let resolved = local_resolver::resolve(conns);
        bump(&self.counters.container_dest_resolved, resolved);
    }
}

impl CounterSource for Containers {
    fn collect(&self, out: &mut Vec<Sample>) {
        self.counters.collect(out);
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn counter(containers: &Containers, name: &str) -> u64 {
        let mut out = Vec::new();
        containers.collect(&mut out);
        out.iter()
            .find(|s| s.info.name == name)
            .map(|s| s.value)
            .unwrap()
    }

    #[test]
    fn config_rejects_zero_sizes() {
        assert!(ContainersConfig::default().validate().is_ok());
        let zero = ContainersConfig {
            max_cgroups: 0,
            ..ContainersConfig::default()
        };
        assert!(matches!(zero.validate(), Err(Error::InvalidConfig(_))));
        let zero = ContainersConfig {
            refresh_interval: Duration::ZERO,
            ..ContainersConfig::default()
        };
        assert!(matches!(zero.validate(), Err(Error::InvalidConfig(_))));
    }

    #[test]
    fn source_resolves_from_a_walked_tree_and_counts_unknown_ids() {
        let dir = std::env::temp_dir().join(format!("tracer-containers-{}", std::process::id()));
        let scope = dir.join(format!("system.slice/docker-{ID}.scope"));
        std::fs::create_dir_all(&scope).unwrap();
        let ino = std::fs::metadata(&scope).unwrap().ino();
        let slice = std::fs::metadata(dir.join("system.slice")).unwrap().ino();
        let config = ContainersConfig::default();
        let containers = Containers::with_root(&config, Some(WalkRoot::Path(dir.clone())));
        let a = containers.source(ino).unwrap();
        let b = containers.source(ino).unwrap();
        assert_eq!(&*a, ID);
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(containers.source(slice), None);
        assert_eq!(containers.source(0), None);
        assert_eq!(counter(&containers, "container_cgroup_unknown"), 0);
        assert_eq!(containers.source(u64::MAX), None);
        assert_eq!(counter(&containers, "container_cgroup_unknown"), 1);
        assert_eq!(counter(&containers, "container_source_resolved"), 2);
        assert_eq!(counter(&containers, "container_cgroups_indexed"), 3);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn without_a_hierarchy_or_disabled_nothing_resolves() {
        let containers = Containers::with_root(&ContainersConfig::default(), None);
        assert_eq!(containers.source(42), None);
        assert_eq!(counter(&containers, "container_cgroup_unknown"), 1);
        let off = ContainersConfig {
            enabled: false,
            ..ContainersConfig::default()
        };
        let containers = Containers::start(&off);
        assert_eq!(containers.source(42), None);
        assert_eq!(counter(&containers, "container_cgroup_unknown"), 0);
    }
}
