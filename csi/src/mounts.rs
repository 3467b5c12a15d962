//! Mount IO with `nix`: observe paths for `model::node`, and execute its bind and unmount plans.
//!
//! Every system call that may touch a FUSE mount runs on a blocking thread under a timeout,
//! because a hung FUSE daemon blocks `statfs(2)` forever; a timed-out probe counts as broken.

use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use model::node::{MountEntry, MountPlan, PathProbe, PathState, classify_path, parse_mountinfo};
use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};
use nix::poll::{PollFd, PollFlags, PollTimeout};

use crate::error::{CsiError, Result};

/// Where the kernel lists this process's mounts.
pub const MOUNTINFO: &str = "/proc/self/mountinfo";

/// How long one probe of a path may take before the path counts as broken.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs `f` on a blocking thread, bounded by `timeout`.
async fn blocking<T: Send + 'static>(
    what: &'static str,
    path: &Path,
    timeout: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    match tokio::time::timeout(timeout, tokio::task::spawn_blocking(f)).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(join)) => Err(CsiError::Internal(format!("{what} {}: {join}", path.display()))),
        Err(_) => Err(CsiError::Sys { op: what, path: path.to_path_buf(), source: Errno::ETIMEDOUT }),
    }
}

/// Reads and parses the mount table.
pub async fn read_mountinfo() -> Result<Vec<MountEntry>> {
    let text = tokio::fs::read_to_string(MOUNTINFO).await.map_err(|source| CsiError::Io {
        op: "read",
        path: MOUNTINFO.into(),
        source,
    })?;
    Ok(parse_mountinfo(&text))
}

/// `path` as mountinfo writes it: the parent's symlinks resolved (the path itself is not
/// touched, as it may be a dead FUSE mount), no trailing slash.
pub fn mount_path(path: &Path) -> PathBuf {
    match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) => match std::fs::canonicalize(parent) {
            Ok(parent) => parent.join(name),
            Err(_) => path.to_path_buf(),
        },
        _ => path.to_path_buf(),
    }
}

/// Probes `path` for `model::node` with `statfs(2)`: unlike `stat(2)`, which the kernel may
/// answer from FUSE's attribute cache for a while after the daemon died, `statfs` always asks
/// the daemon, so a dead FUSE mount reports `ENOTCONN` at once. A probe that hangs (a hung
/// daemon) counts as an error.
pub async fn probe(path: &Path) -> PathProbe {
    let owned = path.to_path_buf();
    let result = blocking("statfs", path, PROBE_TIMEOUT, move || nix::sys::statvfs::statvfs(&owned)).await;
    match result {
        Ok(Ok(_)) => PathProbe::Present,
        Ok(Err(Errno::ENOENT)) => PathProbe::Missing,
        Ok(Err(Errno::ENOTCONN)) => PathProbe::NotConnected,
        Ok(Err(_)) | Err(_) => PathProbe::OtherError,
    }
}

/// Observes the state of `path` against the mount table.
pub async fn observe(mounts: &[MountEntry], path: &Path) -> PathState {
    let probe = probe(path).await;
    let listed = mount_path(path);
    classify_path(mounts, &listed.to_string_lossy(), probe)
}

/// Observes several paths against one fresh read of the mount table.
pub async fn observe_all<const N: usize>(paths: [&Path; N]) -> Result<[PathState; N]> {
    let mounts = read_mountinfo().await?;
    let mut states = [PathState::Absent; N];
    for (state, path) in states.iter_mut().zip(paths) {
        *state = observe(&mounts, path).await;
    }
    Ok(states)
}

/// A watch on the mount table: wakes up when any mount is added or removed in this mount
/// namespace (`poll(2)` on mountinfo reports `POLLPRI`), so a publish that waits for the FUSE
/// mount reacts within a millisecond instead of at the next poll tick.
pub struct MountWatch {
    file: std::sync::Arc<File>,
}

impl MountWatch {
    /// Opens the watch. Changes after this call wake [`MountWatch::wait`].
    pub fn open() -> Result<Self> {
        let file =
            File::open(MOUNTINFO).map_err(|source| CsiError::Io { op: "open", path: MOUNTINFO.into(), source })?;
        Ok(Self { file: std::sync::Arc::new(file) })
    }

    /// Waits until the mount table changes or `max` passes, whichever is first.
    pub async fn wait(&self, max: Duration) {
        let file = std::sync::Arc::clone(&self.file);
        let millis = u16::try_from(max.as_millis()).unwrap_or(u16::MAX);
        let polled = tokio::task::spawn_blocking(move || {
            let mut fds = [PollFd::new(file.as_fd(), PollFlags::POLLPRI)];
            nix::poll::poll(&mut fds, PollTimeout::from(millis))
        })
        .await;
        if !matches!(polled, Ok(Ok(_))) {
            // The watch is best effort: fall back to a plain sleep of the poll interval.
            tokio::time::sleep(max).await;
        }
    }
}

/// Checks that the plan's source resolves to a directory inside `fluid_path` (a symlink in the
/// dataset must not publish a host directory); a missing one is `FAILED_PRECONDITION` naming
/// `volume_context.fluid_sub_path`.
async fn check_source(plan: &MountPlan, fluid_path: &Path) -> Result<()> {
    let source = PathBuf::from(&plan.source);
    let fluid = fluid_path.to_path_buf();
    let resolved = blocking("resolve", &source, PROBE_TIMEOUT, {
        let source = source.clone();
        move || (std::fs::canonicalize(&source), std::fs::canonicalize(&fluid))
    })
    .await?;
    match resolved {
        (Ok(source_real), Ok(fluid_real)) => {
            if !source_real.starts_with(&fluid_real) || !source_real.is_dir() {
                return Err(model::node::Refusal::precondition(
                    format!("volume_context.{}", model::volume::ATTR_SUB_PATH),
                    format!(
                        "{} resolves to {}, which is not a directory inside {}",
                        plan.source,
                        source_real.display(),
                        fluid_real.display()
                    ),
                )
                .into());
            }
            Ok(())
        }
        (Err(err), _) if err.kind() == std::io::ErrorKind::NotFound => Err(model::node::Refusal::precondition(
            format!("volume_context.{}", model::volume::ATTR_SUB_PATH),
            format!("{} does not exist under the FUSE mount {}", plan.source, fluid_path.display()),
        )
        .into()),
        (Err(source_err), _) | (_, Err(source_err)) => {
            Err(CsiError::Io { op: "resolve", path: source, source: source_err })
        }
    }
}

/// `mount --bind source target`.
async fn bind(source: &Path, target: &Path) -> Result<()> {
    let (src, tgt) = (source.to_path_buf(), target.to_path_buf());
    blocking("bind-mount", target, PROBE_TIMEOUT, move || {
        nix::mount::mount(Some(&src), &tgt, None::<&str>, MsFlags::MS_BIND, None::<&str>)
    })
    .await?
    .map_err(|source| CsiError::Sys { op: "bind-mount", path: target.to_path_buf(), source })
}

/// Executes a bind-mount plan: `mkdir -p` the target (0750), check that the source resolves
/// inside `fluid_path` (a symlink in the dataset must not publish a host directory), and bind,
/// read-only when asked ([`bind_as`]: read-only before it propagates to kubelet's copy of the
/// target, which a remount afterwards would not reach).
pub async fn bind_mount(plan: &MountPlan, fluid_path: &Path) -> Result<()> {
    check_source(plan, fluid_path).await?;
    let target = PathBuf::from(&plan.target);
    std::fs::DirBuilder::new().recursive(true).mode(0o750).create(&target).map_err(|source| CsiError::Io {
        op: "create target directory",
        path: target.clone(),
        source,
    })?;
    bind_as(Path::new(&plan.source), &target, plan.read_only).await
}

/// Executes a FUSE recovery bind: binds the source **on top of** whatever is mounted at the
/// target (the dead bind stays below it, so mount propagation carries the new mount into every
/// container that holds a copy of the target: Fluid #3399), creating the target only when it
/// is missing. Looking at the target goes through a dead FUSE mount's root, which answers
/// ENOTCONN (once JuiceFS' attribute cache has expired): that target exists. The look runs off
/// the async threads, with a timeout, as a hung FUSE mount would block it.
///
/// A read-only bind is read-only before it propagates ([`bind_as`]).
pub async fn bind_on_top(plan: &MountPlan, fluid_path: &Path) -> Result<()> {
    check_source(plan, fluid_path).await?;
    let target = PathBuf::from(&plan.target);
    let looked = blocking("look at target", &target, PROBE_TIMEOUT, {
        let target = target.clone();
        move || std::fs::symlink_metadata(&target).map(|_| ())
    })
    .await?;
    match looked {
        Ok(()) => {}
        Err(err) if err.raw_os_error() == Some(Errno::ENOTCONN as i32) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new().recursive(true).mode(0o750).create(&target).map_err(|source| CsiError::Io {
                op: "create target directory",
                path: target.clone(),
                source,
            })?;
        }
        Err(source) => return Err(CsiError::Io { op: "look at target", path: target, source }),
    }
    bind_as(Path::new(&plan.source), &target, plan.read_only).await
}

/// Binds `source` onto `target`, read-only when asked. A bind under a shared mount propagates
/// the moment it is made, and a remount afterwards changes only the plugin's own copy (mount
/// flags do not propagate): kubelet's and the app container's copies would stay writable. So a
/// read-only bind is first made at a private scratch directory and remounted read-only there;
/// a bind of a read-only mount is read-only, and so are its propagated copies. The scratch
/// mount is then detached.
async fn bind_as(source: &Path, target: &Path, read_only: bool) -> Result<()> {
    if !read_only {
        return bind(source, target).await;
    }
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let scratch = std::env::temp_dir().join(format!("ferrofluid-csi-ro-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&scratch).map_err(|source| CsiError::Io {
        op: "create scratch directory",
        path: scratch.clone(),
        source,
    })?;
    let result = async {
        bind(source, &scratch).await?;
        let private = scratch.clone();
        blocking("make private", &scratch, PROBE_TIMEOUT, move || {
            nix::mount::mount(None::<&str>, &private, None::<&str>, MsFlags::MS_PRIVATE, None::<&str>)
        })
        .await?
        .map_err(|source| CsiError::Sys { op: "make private", path: scratch.clone(), source })?;
        remount_read_only(&scratch).await?;
        bind(&scratch, target).await
    }
    .await;
    let _ = unmount(&scratch, true).await;
    let _ = std::fs::remove_dir(&scratch);
    result
}

/// Remounts the bind mount at `target` read-only.
pub async fn remount_read_only(target: &Path) -> Result<()> {
    let tgt = target.to_path_buf();
    blocking("remount read-only", target, PROBE_TIMEOUT, move || {
        nix::mount::mount(
            None::<&str>,
            &tgt,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None::<&str>,
        )
    })
    .await?
    .map_err(|source| CsiError::Sys { op: "remount read-only", path: target.to_path_buf(), source })
}

/// Unmounts the topmost mount at `target`. A broken or busy mount that a plain `umount2`
/// cannot remove is detached (`MNT_DETACH`); `EINVAL` (not a mount point any more) is success.
pub async fn unmount(target: &Path, broken: bool) -> Result<()> {
    let tgt = target.to_path_buf();
    let plain =
        blocking("unmount", target, PROBE_TIMEOUT, move || nix::mount::umount2(&tgt, MntFlags::empty())).await?;
    match plain {
        Ok(()) | Err(Errno::EINVAL) => Ok(()),
        Err(errno) if broken || errno == Errno::EBUSY || errno == Errno::ENOTCONN => {
            let tgt = target.to_path_buf();
            match blocking("detach", target, PROBE_TIMEOUT, move || nix::mount::umount2(&tgt, MntFlags::MNT_DETACH))
                .await?
            {
                Ok(()) | Err(Errno::EINVAL) => Ok(()),
                Err(source) => Err(CsiError::Sys { op: "detach", path: target.to_path_buf(), source }),
            }
        }
        Err(source) => Err(CsiError::Sys { op: "unmount", path: target.to_path_buf(), source }),
    }
}

/// Removes the target once it is no longer a mount point (a directory, or a file or symlink).
pub async fn remove_target(target: &Path) -> Result<()> {
    let result = match tokio::fs::symlink_metadata(target).await {
        Ok(meta) if meta.is_dir() => tokio::fs::remove_dir(target).await,
        Ok(_) => tokio::fs::remove_file(target).await,
        Err(err) => Err(err),
    };
    match result {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(CsiError::Io { op: "remove target", path: target.to_path_buf(), source }),
    }
}

/// Filesystem usage at `path`: `(total, available, used)` bytes and inodes, or the errno of
/// `statfs(2)` (`ETIMEDOUT` when a hung FUSE daemon does not answer).
pub async fn usage(path: &Path) -> std::result::Result<([u64; 3], [u64; 3]), Errno> {
    let owned = path.to_path_buf();
    let stat = blocking("statvfs", path, PROBE_TIMEOUT, move || nix::sys::statvfs::statvfs(&owned)).await;
    let st = match stat {
        Ok(result) => result?,
        Err(_) => return Err(Errno::ETIMEDOUT),
    };
    // 64-bit Linux: all of these are u64.
    let (frag, blocks, files): (u64, u64, u64) = (st.fragment_size(), st.blocks(), st.files());
    let bytes = [
        blocks.saturating_mul(frag),
        st.blocks_available().saturating_mul(frag),
        blocks.saturating_sub(st.blocks_free()).saturating_mul(frag),
    ];
    let inodes = [files, st.files_available(), files.saturating_sub(st.files_free())];
    Ok((bytes, inodes))
}
