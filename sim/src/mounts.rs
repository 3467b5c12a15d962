//! A node's simulated mount table, observed through the same types the real CSI plugin parses
//! from `/proc/self/mountinfo` (`model::node::MountEntry`), plus a `stat` outcome per path.
//!
//! FUSE mounts get a fresh device (`0:N`) per daemon incarnation; bind mounts share the device
//! of what they bind. When a FUSE daemon dies (a crash, or its container stopping) its device is
//! dead: `stat` on any mount of it gives ENOTCONN ("transport endpoint is not connected"), which
//! `classify_path` calls broken. Directories are on disk and outlive a reboot; mounts do not.

use std::collections::{BTreeMap, BTreeSet};

use model::node::{MountEntry, PathProbe, PathState, classify_path};

/// What an app pod sees through its published target, judged against the FUSE mount now at
/// the volume's `fluid_path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetHealth {
    /// Nothing is mounted at the target.
    Unmounted,
    /// The topmost mount's FUSE daemon is gone: reads fail with ENOTCONN.
    Broken {
        /// The dead device.
        device: String,
    },
    /// Readable, but not through the live FUSE mount at `fluid_path` (there is none, or another).
    Detached {
        /// The device the target is bound to.
        device: String,
    },
    /// Bound to the live FUSE mount at `fluid_path`.
    Live {
        /// The bind is read-only.
        read_only: bool,
    },
}

impl TargetHealth {
    /// The word scenario expectations use: `live`, `broken`, `detached` or `unmounted`.
    pub fn word(&self) -> &'static str {
        match self {
            TargetHealth::Unmounted => "unmounted",
            TargetHealth::Broken { .. } => "broken",
            TargetHealth::Detached { .. } => "detached",
            TargetHealth::Live { .. } => "live",
        }
    }
}

impl std::fmt::Display for TargetHealth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TargetHealth::Unmounted => f.write_str("unmounted"),
            TargetHealth::Broken { device } => {
                write!(f, "broken (device {device} is dead: transport endpoint is not connected)")
            }
            TargetHealth::Detached { device } => {
                write!(f, "detached (bound to device {device}, not to the live FUSE mount at fluid_path)")
            }
            TargetHealth::Live { read_only: true } => f.write_str("live (read-only)"),
            TargetHealth::Live { read_only: false } => f.write_str("live"),
        }
    }
}

/// The mount table of one node.
#[derive(Debug, Clone, Default)]
pub struct MountTable {
    entries: Vec<MountEntry>,
    next_mount_id: u32,
    next_device: u32,
    dead_devices: BTreeSet<String>,
    dirs: BTreeSet<String>,
    /// Where each FUSE device was mounted first: a bind of it, wherever it is, serves that path.
    origins: BTreeMap<String, String>,
    /// Bumped by every change of the mounts, so that a reader can tell it has seen them all.
    generation: u64,
}

fn trim(path: &str) -> &str {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() { "/" } else { trimmed }
}

impl MountTable {
    /// The entries, oldest first (as mountinfo lists them).
    pub fn entries(&self) -> &[MountEntry] {
        &self.entries
    }

    /// Forgets every mount (a reboot); directories stay on disk and device numbers keep counting
    /// up.
    pub fn reboot(&mut self) {
        self.entries.clear();
        self.dead_devices.clear();
        self.generation += 1;
    }

    /// Counts changes of the mounts (not of directories).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The path the FUSE mount of `device` was made at.
    pub fn origin(&self, device: &str) -> Option<&str> {
        self.origins.get(device).map(String::as_str)
    }

    /// True while the FUSE daemon behind `device` serves it.
    pub fn is_live(&self, device: &str) -> bool {
        !self.dead_devices.contains(device)
    }

    /// Every mount stacked at `path`, bottom first.
    pub fn layers(&self, path: &str) -> impl Iterator<Item = &MountEntry> {
        let path = trim(path).to_string();
        self.entries.iter().filter(move |e| trim(&e.mount_point) == path)
    }

    fn topmost(&self, path: &str) -> Option<&MountEntry> {
        let path = trim(path);
        self.entries.iter().rev().find(|e| trim(&e.mount_point) == path)
    }

    /// What `stat(path)` would return.
    pub fn probe(&self, path: &str) -> PathProbe {
        match self.topmost(path) {
            Some(entry) if self.dead_devices.contains(&entry.major_minor) => PathProbe::NotConnected,
            Some(_) => PathProbe::Present,
            None if self.dirs.contains(trim(path)) => PathProbe::Present,
            None => PathProbe::Missing,
        }
    }

    /// The state of `path`, classified by the model.
    pub fn state(&self, path: &str) -> PathState {
        classify_path(&self.entries, trim(path), self.probe(path))
    }

    /// Creates a directory.
    pub fn mkdir(&mut self, path: &str) {
        self.dirs.insert(trim(path).to_string());
    }

    /// Removes a directory.
    pub fn rmdir(&mut self, path: &str) {
        self.dirs.remove(trim(path));
    }

    /// A FUSE daemon mounts `source` at `path`, on top of whatever is there. Returns the device.
    pub fn mount_fuse(&mut self, path: &str, source: &str) -> String {
        self.next_device += 1;
        self.next_mount_id += 1;
        let device = format!("0:{}", 100 + self.next_device);
        self.mkdir(path);
        self.generation += 1;
        self.origins.insert(device.clone(), trim(path).to_string());
        self.entries.push(MountEntry {
            mount_id: 1000 + self.next_mount_id,
            parent_id: 1,
            major_minor: device.clone(),
            root: "/".to_string(),
            mount_point: trim(path).to_string(),
            read_only: false,
            fs_type: "fuse.juicefs".to_string(),
            source: source.to_string(),
        });
        device
    }

    /// Bind-mounts `source` (a mount point or a directory below one) onto `target`.
    /// Returns false when nothing is mounted at or above `source`.
    pub fn bind(&mut self, source: &str, target: &str, read_only: bool) -> bool {
        let source = trim(source);
        let base = self
            .entries
            .iter()
            .rev()
            .find(|e| {
                let mount_point = trim(&e.mount_point);
                source == mount_point || source.starts_with(&format!("{mount_point}/"))
            })
            .cloned();
        let Some(base) = base else { return false };
        let below = source.strip_prefix(trim(&base.mount_point)).unwrap_or("");
        let root = if below.is_empty() {
            base.root.clone()
        } else {
            format!("{}{below}", trim(&base.root).trim_end_matches('/'))
        };
        self.next_mount_id += 1;
        self.mkdir(target);
        self.generation += 1;
        self.entries.push(MountEntry {
            mount_id: 1000 + self.next_mount_id,
            parent_id: 1,
            major_minor: base.major_minor.clone(),
            root,
            mount_point: trim(target).to_string(),
            read_only,
            fs_type: base.fs_type.clone(),
            source: base.source.clone(),
        });
        true
    }

    /// Unmounts the topmost mount at `path`. Returns false when nothing was mounted there.
    pub fn unmount(&mut self, path: &str) -> bool {
        let path = trim(path);
        match self.entries.iter().rposition(|e| trim(&e.mount_point) == path) {
            Some(index) => {
                self.entries.remove(index);
                self.generation += 1;
                true
            }
            None => false,
        }
    }

    /// Remounts the topmost mount at `path` read-only.
    pub fn remount_read_only(&mut self, path: &str) {
        let path = trim(path);
        if let Some(entry) = self.entries.iter_mut().rev().find(|e| trim(&e.mount_point) == path) {
            entry.read_only = true;
            self.generation += 1;
        }
    }

    /// The FUSE daemon behind `device` died.
    pub fn kill_device(&mut self, device: &str) {
        if self.dead_devices.insert(device.to_string()) {
            self.generation += 1;
        }
    }

    /// The device of the topmost mount at `path`.
    pub fn device_at(&self, path: &str) -> Option<String> {
        self.topmost(path).map(|e| e.major_minor.clone())
    }

    /// How the target `target` serves an app, against the FUSE mount at `fluid_path`.
    pub fn target_health(&self, target: &str, fluid_path: &str) -> TargetHealth {
        let Some(top) = self.topmost(target) else { return TargetHealth::Unmounted };
        let device = top.major_minor.clone();
        if !self.is_live(&device) {
            return TargetHealth::Broken { device };
        }
        let fuse = self.topmost(fluid_path).filter(|fuse| fuse.fs_type.starts_with("fuse."));
        match fuse {
            Some(fuse) if fuse.major_minor == device && self.is_live(&device) => {
                TargetHealth::Live { read_only: top.read_only }
            }
            _ => TargetHealth::Detached { device },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_fuse_daemon_breaks_its_bind_mounts_until_rebound() {
        let mut table = MountTable::default();
        let fluid = "/runtime-mnt/juicefs/default/demo/juicefs-fuse";
        let target = "/var/lib/kubelet/pods/u/volumes/kubernetes.io~csi/default-demo/mount";
        assert_eq!(table.state(fluid), PathState::Absent);
        let device = table.mount_fuse(fluid, "JuiceFS:demo");
        assert!(table.bind(fluid, target, true));
        assert_eq!(table.state(target), PathState::Mounted { read_only: true });
        table.kill_device(&device);
        assert_eq!(table.state(fluid), PathState::Broken);
        assert_eq!(table.state(target), PathState::Broken);
        table.mount_fuse(fluid, "JuiceFS:demo");
        assert_eq!(table.state(fluid), PathState::Mounted { read_only: false });
        assert_eq!(table.state(target), PathState::Broken);
        assert!(table.unmount(target));
        assert_eq!(table.state(target), PathState::Unmounted);
    }

    #[test]
    fn a_target_is_live_only_through_the_live_fuse_mount_at_its_fluid_path() {
        let mut table = MountTable::default();
        let fluid = "/runtime-mnt/juicefs/default/demo/juicefs-fuse";
        let target = "/var/lib/kubelet/pods/u/volumes/kubernetes.io~csi/default-demo/mount";
        assert_eq!(table.target_health(target, fluid), TargetHealth::Unmounted);
        let first = table.mount_fuse(fluid, "JuiceFS:demo");
        table.bind(fluid, target, true);
        assert_eq!(table.target_health(target, fluid), TargetHealth::Live { read_only: true });
        let generation = table.generation();
        // A graceful stop: preStop unmounts fluid_path while the daemon still runs.
        table.unmount(fluid);
        assert_eq!(table.target_health(target, fluid), TargetHealth::Detached { device: first.clone() });
        table.kill_device(&first);
        assert_eq!(table.target_health(target, fluid), TargetHealth::Broken { device: first.clone() });
        assert!(table.generation() > generation, "every change of the mounts counts");
        let second = table.mount_fuse(fluid, "JuiceFS:demo");
        assert_eq!(table.origin(&second), Some(fluid));
        table.bind(fluid, target, true);
        assert_eq!(table.target_health(target, fluid), TargetHealth::Live { read_only: true });
        table.reboot();
        assert_eq!(table.target_health(target, fluid), TargetHealth::Unmounted);
        assert_eq!(table.probe(target), model::node::PathProbe::Present, "directories outlive a reboot");
    }
}
