//! A node's simulated mount table, observed through the same types the real CSI plugin parses
//! from `/proc/self/mountinfo` (`model::node::MountEntry`), plus a `stat` outcome per path.
//!
//! FUSE mounts get a fresh device (`0:N`) per daemon incarnation; bind mounts share the device
//! of what they bind. When a FUSE daemon dies its device is dead: `stat` on any mount of it gives
//! ENOTCONN ("transport endpoint is not connected"), which `classify_path` calls broken.

use std::collections::BTreeSet;

use model::node::{MountEntry, PathProbe, PathState, classify_path};

/// The mount table of one node.
#[derive(Debug, Clone, Default)]
pub struct MountTable {
    entries: Vec<MountEntry>,
    next_mount_id: u32,
    next_device: u32,
    dead_devices: BTreeSet<String>,
    dirs: BTreeSet<String>,
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

    /// Forgets every mount and directory (a reboot); device numbers keep counting up.
    pub fn reboot(&mut self) {
        self.entries.clear();
        self.dead_devices.clear();
        self.dirs.clear();
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
        }
    }

    /// The FUSE daemon behind `device` died.
    pub fn kill_device(&mut self, device: &str) {
        self.dead_devices.insert(device.to_string());
    }

    /// The device of the topmost mount at `path`.
    pub fn device_at(&self, path: &str) -> Option<String> {
        self.topmost(path).map(|e| e.major_minor.clone())
    }

    /// Mount points whose device is dead.
    pub fn broken_mount_points(&self) -> Vec<String> {
        self.entries
            .iter()
            .filter(|e| self.dead_devices.contains(&e.major_minor))
            .map(|e| e.mount_point.clone())
            .collect()
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
}
