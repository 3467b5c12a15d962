//! Observing mounts: a `/proc/self/mountinfo` parser and the classification of one path.

use super::request::{FuseType, is_within};

/// One line of `/proc/<pid>/mountinfo` (see `proc(5)`), with octal escapes decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// Field 1: the mount's id.
    pub mount_id: u32,
    /// Field 2: the parent mount's id.
    pub parent_id: u32,
    /// Field 3: `major:minor` of the filesystem; bind mounts of one mount share it.
    pub major_minor: String,
    /// Field 4: the directory of the filesystem that is the root of this mount.
    pub root: String,
    /// Field 5: the mount point.
    pub mount_point: String,
    /// True when the per-mount options (field 6) contain `ro`.
    pub read_only: bool,
    /// The filesystem type after the `-` separator, e.g. `fuse.juicefs` or `tmpfs`.
    pub fs_type: String,
    /// The mount source after the filesystem type, e.g. `JuiceFS:myjfs`.
    pub source: String,
}

/// Parses the text of a mountinfo file. Malformed lines are skipped, never a panic.
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<MountEntry> {
    let fields: Vec<&str> = line.split(' ').collect();
    let separator = fields.iter().position(|field| *field == "-")?;
    if separator < 6 || fields.len() < separator + 3 {
        return None;
    }
    Some(MountEntry {
        mount_id: fields[0].parse().ok()?,
        parent_id: fields[1].parse().ok()?,
        major_minor: fields[2].to_string(),
        root: unescape(fields[3]),
        mount_point: unescape(fields[4]),
        read_only: fields[5].split(',').any(|option| option == "ro"),
        fs_type: unescape(fields[separator + 1]),
        source: unescape(fields[separator + 2]),
    })
}

/// Decodes the `\ooo` octal escapes the kernel writes for space, tab, newline and backslash.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let digits = &bytes[i + 1..i + 4];
            if digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                let value = digits.iter().fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                if let Ok(byte) = u8::try_from(value) {
                    out.push(byte);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The outcome of `stat(path)`, as the caller saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PathProbe {
    /// `stat` succeeded.
    Present,
    /// `ENOENT`.
    Missing,
    /// `ENOTCONN` ("transport endpoint is not connected"): the FUSE daemon behind it is gone.
    NotConnected,
    /// Any other error (e.g. `EIO`, `EACCES`, or a stat that timed out on a hung daemon).
    OtherError,
}

/// What a path is, for the node decisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PathState {
    /// Nothing exists at the path.
    Absent,
    /// The path exists and is not a mount point.
    Unmounted,
    /// The path is a healthy mount point; `read_only` is the topmost mount's flag.
    Mounted {
        /// The topmost mount at the path is read-only.
        read_only: bool,
    },
    /// The path is a mount point (or below one) that cannot be reached: `ENOTCONN` and friends.
    Broken,
}

/// Combines the mount table and a `stat` outcome into the state of `path`. `path` must be
/// written the way mountinfo writes it (absolute, symlinks resolved, no trailing `/`).
pub fn classify_path(mounts: &[MountEntry], path: &str, probe: PathProbe) -> PathState {
    let path = trim_end(path);
    let topmost = mounts.iter().rev().find(|entry| trim_end(&entry.mount_point) == path);
    match (probe, topmost) {
        (PathProbe::NotConnected, _) => PathState::Broken,
        (PathProbe::Present, Some(entry)) => PathState::Mounted { read_only: entry.read_only },
        (PathProbe::Present, None) => PathState::Unmounted,
        (PathProbe::Missing, None) => PathState::Absent,
        (PathProbe::Missing | PathProbe::OtherError, Some(_)) => PathState::Broken,
        (PathProbe::OtherError, None) => PathState::Unmounted,
    }
}

/// The topmost mount at `path` (the last one mountinfo lists there), if any.
pub fn topmost_mount<'a>(mounts: &'a [MountEntry], path: &str) -> Option<&'a MountEntry> {
    let path = trim_end(path);
    mounts.iter().rev().find(|entry| trim_end(&entry.mount_point) == path)
}

/// Classifies the FUSE mount point `fluid_path` for publish: as [`classify_path`] does, except
/// that a healthy mount of a filesystem `expected` does not accept (a stale tmpfs, an empty bind
/// of a host directory) is [`PathState::Unmounted`]: there is nothing there publish may bind.
pub fn classify_fuse_path(mounts: &[MountEntry], path: &str, probe: PathProbe, expected: &FuseType) -> PathState {
    match classify_path(mounts, path, probe) {
        PathState::Mounted { .. } if !topmost_mount(mounts, path).is_some_and(|m| expected.accepts(&m.fs_type)) => {
            PathState::Unmounted
        }
        state => state,
    }
}

/// What is at the FUSE mount point `path`, for messages: the topmost mount's filesystem type and
/// source, or that nothing is mounted there.
pub fn describe_fuse_path(mounts: &[MountEntry], path: &str, expected: &FuseType) -> String {
    match topmost_mount(mounts, path) {
        Some(entry) if expected.accepts(&entry.fs_type) => format!("a {} mount of {}", entry.fs_type, entry.source),
        Some(entry) => {
            format!("a {} mount of {}, which is not {expected}", entry.fs_type, entry.source)
        }
        None => format!("no mount, waiting for {expected}"),
    }
}

/// Counts the mounts on the node that still expose volume `volume_id`: kubelet's publish
/// targets (`…/volumes/kubernetes.io~csi/<volume_id>/mount`, as Fluid's
/// `check_bind_mounts.sh` looks for) and any other mount point that shares the device of the
/// FUSE mount at `fluid_path` (a bind mount of it anywhere). `fluid_path` itself is not counted.
pub fn count_volume_bind_mounts(mounts: &[MountEntry], volume_id: &str, fluid_path: &str) -> usize {
    let fluid_path = trim_end(fluid_path);
    let kubelet_target = format!("/volumes/kubernetes.io~csi/{volume_id}/mount");
    let fuse = mounts.iter().rev().find(|entry| trim_end(&entry.mount_point) == fluid_path);
    let shares_fuse = |entry: &MountEntry| {
        fuse.is_some_and(|fuse| entry.major_minor == fuse.major_minor && is_within(&entry.root, &fuse.root))
    };
    mounts
        .iter()
        .filter(|entry| trim_end(&entry.mount_point) != fluid_path)
        .filter(|entry| trim_end(&entry.mount_point).ends_with(&kubelet_target) || shares_fuse(entry))
        .count()
}

fn trim_end(path: &str) -> &str {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() { "/" } else { trimmed }
}
