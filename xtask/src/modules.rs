//! Kernel module dependency closure from `modules.dep`, in load order (dependencies first), the way
//! modprobe would load them: busybox's insmod in the VM knows nothing about dependencies.

use std::collections::{BTreeMap, BTreeSet};

/// `modules.dep`: module path (relative to the modules directory) -> the paths it depends on.
pub struct ModulesDep {
    deps: BTreeMap<String, Vec<String>>,
    /// Module name (`nf_tables`, dashes folded to underscores) -> its path.
    by_name: BTreeMap<String, String>,
}

/// `kernel/net/netfilter/nf_tables.ko.xz` -> `nf_tables`; module names treat `-` and `_` alike.
pub fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    stem.replace('-', "_")
}

impl ModulesDep {
    /// Lines look like `kernel/net/netfilter/nft_numgen.ko.xz: kernel/net/netfilter/nf_tables.ko.xz ...`.
    pub fn parse(text: &str) -> Self {
        let mut deps = BTreeMap::new();
        let mut by_name = BTreeMap::new();
        for line in text.lines() {
            let Some((module, rest)) = line.split_once(':') else {
                continue;
            };
            let module = module.trim();
            if module.is_empty() {
                continue;
            }
            by_name.insert(module_name(module), module.to_owned());
            deps.insert(
                module.to_owned(),
                rest.split_whitespace().map(str::to_owned).collect(),
            );
        }
        Self { deps, by_name }
    }

    /// The modules `wanted` (by name) need, dependencies before dependents, each once; plus the
    /// wanted names that are not modules here (built in, or absent from this kernel).
    pub fn closure(&self, wanted: &[&str]) -> (Vec<String>, Vec<String>) {
        let mut order = Vec::new();
        let mut done = BTreeSet::new();
        let mut not_modules = Vec::new();
        for name in wanted {
            match self.by_name.get(&name.replace('-', "_")) {
                Some(path) => self.visit(path, &mut done, &mut order),
                None => not_modules.push((*name).to_owned()),
            }
        }
        (order, not_modules)
    }

    /// Depth-first, post-order. `done` is marked on entry so a (malformed) cycle cannot recurse
    /// forever.
    fn visit(&self, path: &str, done: &mut BTreeSet<String>, order: &mut Vec<String>) {
        if !done.insert(path.to_owned()) {
            return;
        }
        for dep in self.deps.get(path).into_iter().flatten() {
            self.visit(dep, done, order);
        }
        order.push(path.to_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "\
kernel/net/netfilter/nf_tables.ko.xz: kernel/lib/libcrc32c.ko.xz kernel/net/netfilter/nfnetlink.ko.xz
kernel/net/netfilter/nfnetlink.ko.xz:
kernel/lib/libcrc32c.ko.xz:
kernel/net/netfilter/nft_numgen.ko.xz: kernel/net/netfilter/nf_tables.ko.xz kernel/lib/libcrc32c.ko.xz kernel/net/netfilter/nfnetlink.ko.xz
kernel/drivers/net/veth.ko.xz:
kernel/net/sched/sch-odd.ko:
";

    #[test]
    fn names() {
        assert_eq!(module_name("kernel/drivers/net/veth.ko.zst"), "veth");
        assert_eq!(module_name("kernel/net/sched/sch-odd.ko"), "sch_odd");
    }

    #[test]
    fn closure_puts_dependencies_first_once() {
        let dep = ModulesDep::parse(DEP);
        let (order, missing) =
            dep.closure(&["veth", "nft_numgen", "nf_tables", "nft_counter", "sch_odd"]);
        assert_eq!(
            order,
            [
                "kernel/drivers/net/veth.ko.xz",
                "kernel/lib/libcrc32c.ko.xz",
                "kernel/net/netfilter/nfnetlink.ko.xz",
                "kernel/net/netfilter/nf_tables.ko.xz",
                "kernel/net/netfilter/nft_numgen.ko.xz",
                "kernel/net/sched/sch-odd.ko",
            ]
        );
        assert_eq!(missing, ["nft_counter"]);
    }

    #[test]
    fn cycle_terminates() {
        let dep = ModulesDep::parse("a.ko: b.ko\nb.ko: a.ko\n");
        let (order, _) = dep.closure(&["a"]);
        assert_eq!(order, ["b.ko", "a.ko"]);
    }
}
