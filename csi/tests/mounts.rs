//! Real mounts through the gRPC server, in a private mount namespace. A directory of one small
//! JuiceFS filesystem, bound at each test's `fluid_path`, stands in for the FUSE pod's mount
//! (publish accepts only a FUSE mount of the PV's `mount_type` there; a tmpfs is refused, see
//! `a_tmpfs_at_fluid_path_is_not_a_fuse_mount`). The JuiceFS end-to-end test runs the FUSE
//! DaemonSet's own script. `harness = false`: `main` unshares the mount namespace before any
//! thread exists.

mod common;

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use common::*;
use tonic::Code;

fn main() -> ExitCode {
    if !require_root("mounts") {
        return ExitCode::SUCCESS;
    }
    let juicefs = match require_juicefs("mounts") {
        None => return ExitCode::SUCCESS,
        Some(None) => return ExitCode::FAILURE,
        Some(Some(bin)) => bin,
    };
    enter_private_mount_namespace();
    *FUSE.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(JuiceFs::start(&juicefs));
    let code = run_cases(
        "mounts",
        &[
            case!(publish_waits_for_the_fuse_mount_then_binds_it),
            case!(publish_is_idempotent_and_never_mounts_twice),
            case!(read_only_publish_refuses_writes),
            case!(readonly_flag_alone_makes_it_read_only),
            case!(sub_path_publish_shows_only_the_subdirectory),
            case!(missing_sub_path_is_a_failed_precondition),
            case!(symlinked_sub_path_cannot_escape_the_mount),
            case!(publish_times_out_naming_the_fuse_path),
            case!(unpublish_removes_stacked_mounts_and_the_dir),
            case!(concurrent_publishes_of_one_target_mount_once),
            case!(on_demand_unstage_waits_for_bind_mounts_to_go),
            case!(volume_stats_report_usage),
            case!(a_tmpfs_at_fluid_path_is_not_a_fuse_mount),
        ],
    );
    // A static is never dropped: stop the daemon here, or it outlives the test (holding its
    // metrics port 9567, which the next run's JuiceFS then cannot bind).
    drop(FUSE.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take());
    code
}

/// The JuiceFS filesystem whose directories stand in for FUSE mounts; `main` owns its lifetime.
static FUSE: std::sync::Mutex<Option<JuiceFs>> = std::sync::Mutex::new(None);

/// Mounts a FUSE stand-in (a fresh JuiceFS directory) at `path`.
fn mount_fuse(path: &Path) {
    let fuse = FUSE.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    fuse.as_ref().expect("JuiceFS started in main").bind_subdir(path);
}

struct Setup {
    h: Harness,
    fluid: std::path::PathBuf,
    target: std::path::PathBuf,
}

async fn setup(timeout_ms: u64) -> Setup {
    let h = Harness::start(timeout_ms).await;
    let fluid = h.dir.join("runtime-mnt/juicefs/default/jfsdemo/juicefs-fuse");
    let target = h.dir.join("pods/p1/volumes/kubernetes.io~csi/default-jfsdemo/mount");
    Setup { h, fluid, target }
}

impl Drop for Setup {
    fn drop(&mut self) {
        while mount_count(&self.target) > 0 {
            umount(&self.target);
        }
        while mount_count(&self.fluid) > 0 {
            umount(&self.fluid);
        }
    }
}

async fn publish_waits_for_the_fuse_mount_then_binds_it() {
    let mut s = setup(5_000).await;
    let fluid = s.fluid.clone();
    let mounter = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        mount_fuse(&fluid);
        std::fs::write(fluid.join("hello.txt"), "from fuse").unwrap();
        Instant::now()
    });
    let req = publish_req("default-jfsdemo", &s.target, RW, false, volume_context(&s.fluid, &[]));
    s.h.node.node_publish_volume(req).await.unwrap();
    let done = Instant::now();
    let mounted = mounter.await.unwrap();
    println!("    publish returned {} ms after the FUSE mount appeared", done.duration_since(mounted).as_millis());
    assert_eq!(std::fs::read_to_string(s.target.join("hello.txt")).unwrap(), "from fuse");
    let mode = std::fs::metadata(s.target.parent().unwrap()).unwrap();
    assert!(mode.is_dir());
    // Writes through the target land in the FUSE mount.
    std::fs::write(s.target.join("back.txt"), "x").unwrap();
    assert!(s.fluid.join("back.txt").exists());
}

async fn publish_is_idempotent_and_never_mounts_twice() {
    let mut s = setup(2_000).await;
    mount_fuse(&s.fluid);
    let req = publish_req("default-jfsdemo", &s.target, RW, false, volume_context(&s.fluid, &[]));
    s.h.node.node_publish_volume(req.clone()).await.unwrap();
    s.h.node.node_publish_volume(req).await.unwrap();
    assert_eq!(mount_count(&s.target), 1);
    // A read-write target asked for read-write again is fine; asked for read-only, it is made read-only.
    let ro = publish_req("default-jfsdemo", &s.target, RW, true, volume_context(&s.fluid, &[]));
    s.h.node.node_publish_volume(ro).await.unwrap();
    assert_eq!(mount_count(&s.target), 1);
    let err = std::fs::write(s.target.join("x"), "x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc_erofs()));
    // Read-only published, read-write asked: ALREADY_EXISTS naming the target.
    let rw = publish_req("default-jfsdemo", &s.target, RW, false, volume_context(&s.fluid, &[]));
    let status = s.h.node.node_publish_volume(rw).await.unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");
    assert!(status.message().contains("target_path"), "{status:?}");
}

fn libc_erofs() -> i32 {
    nix::errno::Errno::EROFS as i32
}

async fn read_only_publish_refuses_writes() {
    let mut s = setup(2_000).await;
    mount_fuse(&s.fluid);
    std::fs::write(s.fluid.join("data.txt"), "data").unwrap();
    let req = publish_req("default-jfsdemo", &s.target, RO, false, volume_context(&s.fluid, &[]));
    s.h.node.node_publish_volume(req).await.unwrap();
    assert_eq!(std::fs::read_to_string(s.target.join("data.txt")).unwrap(), "data");
    let err = std::fs::write(s.target.join("new.txt"), "x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc_erofs()), "{err}");
    // The FUSE mount itself stays writable.
    std::fs::write(s.fluid.join("new.txt"), "x").unwrap();
}

async fn readonly_flag_alone_makes_it_read_only() {
    let mut s = setup(2_000).await;
    mount_fuse(&s.fluid);
    let req = publish_req("default-jfsdemo", &s.target, RW, true, volume_context(&s.fluid, &[]));
    s.h.node.node_publish_volume(req).await.unwrap();
    let err = std::fs::write(s.target.join("new.txt"), "x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc_erofs()), "{err}");
}

async fn sub_path_publish_shows_only_the_subdirectory() {
    let mut s = setup(2_000).await;
    mount_fuse(&s.fluid);
    std::fs::create_dir_all(s.fluid.join("team/a")).unwrap();
    std::fs::write(s.fluid.join("team/a/inside.txt"), "in").unwrap();
    std::fs::write(s.fluid.join("outside.txt"), "out").unwrap();
    let ctx = volume_context(&s.fluid, &[("fluid_sub_path", "team/a")]);
    s.h.node.node_publish_volume(publish_req("default-jfsdemo", &s.target, RW, false, ctx)).await.unwrap();
    let names: Vec<String> =
        std::fs::read_dir(&s.target).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(names, vec!["inside.txt".to_string()]);
}

async fn missing_sub_path_is_a_failed_precondition() {
    let mut s = setup(2_000).await;
    mount_fuse(&s.fluid);
    let ctx = volume_context(&s.fluid, &[("fluid_sub_path", "nope")]);
    let status =
        s.h.node.node_publish_volume(publish_req("default-jfsdemo", &s.target, RW, false, ctx)).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(status.message().contains("fluid_sub_path"), "{status:?}");
    assert_eq!(mount_count(&s.target), 0);
}

async fn symlinked_sub_path_cannot_escape_the_mount() {
    let mut s = setup(2_000).await;
    mount_fuse(&s.fluid);
    std::os::unix::fs::symlink("/etc", s.fluid.join("escape")).unwrap();
    let ctx = volume_context(&s.fluid, &[("fluid_sub_path", "escape")]);
    let status =
        s.h.node.node_publish_volume(publish_req("default-jfsdemo", &s.target, RW, false, ctx)).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(status.message().contains("fluid_sub_path"), "{status:?}");
    assert_eq!(mount_count(&s.target), 0);
}

async fn publish_times_out_naming_the_fuse_path() {
    let mut s = setup(300).await;
    let started = Instant::now();
    let req = publish_req("default-jfsdemo", &s.target, RW, false, volume_context(&s.fluid, &[]));
    let status = s.h.node.node_publish_volume(req).await.unwrap_err();
    let waited = started.elapsed();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(status.message().contains(&s.fluid.display().to_string()), "{status:?}");
    assert!(waited >= Duration::from_millis(300) && waited < Duration::from_secs(3), "{waited:?}");
    println!("    {}", status.message());
    assert_eq!(mount_count(&s.target), 0);
}

async fn unpublish_removes_stacked_mounts_and_the_dir() {
    let mut s = setup(2_000).await;
    mount_fuse(&s.fluid);
    let req = publish_req("default-jfsdemo", &s.target, RW, false, volume_context(&s.fluid, &[]));
    s.h.node.node_publish_volume(req).await.unwrap();
    // A recovery loop (Fluid's) may have stacked more binds on the target.
    for _ in 0..2 {
        nix::mount::mount(Some(&s.fluid), &s.target, None::<&str>, nix::mount::MsFlags::MS_BIND, None::<&str>).unwrap();
    }
    assert_eq!(mount_count(&s.target), 3);
    s.h.node.node_unpublish_volume(unpublish_req("default-jfsdemo", &s.target)).await.unwrap();
    assert_eq!(mount_count(&s.target), 0);
    assert!(!s.target.exists());
    // Idempotent.
    s.h.node.node_unpublish_volume(unpublish_req("default-jfsdemo", &s.target)).await.unwrap();
}

async fn concurrent_publishes_of_one_target_mount_once() {
    let s = setup(5_000).await;
    let req = publish_req("default-jfsdemo", &s.target, RW, false, volume_context(&s.fluid, &[]));
    let (mut a, mut b) = (s.h.node.clone(), s.h.node.clone());
    let (ra, rb) = (req.clone(), req);
    let fluid = s.fluid.clone();
    let mounter = async move {
        tokio::time::sleep(Duration::from_millis(150)).await;
        mount_fuse(&fluid);
    };
    let (first, second, ()) = tokio::join!(
        async move { a.node_publish_volume(ra).await },
        async move { b.node_publish_volume(rb).await },
        mounter
    );
    let outcomes: Vec<Result<(), Code>> =
        [first, second].into_iter().map(|r| r.map(|_| ()).map_err(|s| s.code())).collect();
    println!("    outcomes: {outcomes:?}");
    assert!(outcomes.iter().all(|o| matches!(o, Ok(()) | Err(Code::Aborted))), "{outcomes:?}");
    assert!(outcomes.iter().any(Result::is_ok), "{outcomes:?}");
    assert_eq!(mount_count(&s.target), 1);
}

async fn on_demand_unstage_waits_for_bind_mounts_to_go() {
    let mut s = setup(2_000).await;
    mount_fuse(&s.fluid);
    let staging = s.h.dir.join("staging");
    let ctx = volume_context(&s.fluid, &[("fuse_clean_policy", "OnDemand")]);
    s.h.node.node_stage_volume(stage_req("default-jfsdemo", &staging, ctx.clone())).await.unwrap();
    s.h.node.node_publish_volume(publish_req("default-jfsdemo", &s.target, RW, false, ctx)).await.unwrap();
    let status = s.h.node.node_unstage_volume(unstage_req("default-jfsdemo", &staging)).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(status.message().contains("volume_id"), "{status:?}");
    assert!(s.h.labels().contains_key(LABEL));
    s.h.node.node_unpublish_volume(unpublish_req("default-jfsdemo", &s.target)).await.unwrap();
    s.h.node.node_unstage_volume(unstage_req("default-jfsdemo", &staging)).await.unwrap();
    assert!(!s.h.labels().contains_key(LABEL));
}

async fn volume_stats_report_usage() {
    let mut s = setup(2_000).await;
    mount_fuse(&s.fluid);
    let req = publish_req("default-jfsdemo", &s.target, RW, false, volume_context(&s.fluid, &[]));
    s.h.node.node_publish_volume(req).await.unwrap();
    let stats =
        s.h.node
            .node_get_volume_stats(csi::proto::NodeGetVolumeStatsRequest {
                volume_id: "default-jfsdemo".into(),
                volume_path: s.target.display().to_string(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
    // The JuiceFS volume's capacity (`juicefs format --capacity=1`): 1 GiB.
    assert_eq!(stats.usage[0].total, 1 << 30);
    assert!(!stats.volume_condition.unwrap().abnormal);
}

async fn a_tmpfs_at_fluid_path_is_not_a_fuse_mount() {
    // A stale tmpfs (or any non-FUSE mount) at fluid_path must never be published as the
    // dataset: publish waits for fuse.juicefs, then DEADLINE_EXCEEDED naming what it found.
    let mut s = setup(400).await;
    mount_tmpfs(&s.fluid);
    std::fs::write(s.fluid.join("stale.txt"), "not the dataset").unwrap();
    let req = publish_req("default-jfsdemo", &s.target, RW, false, volume_context(&s.fluid, &[]));
    let started = Instant::now();
    let status = s.h.node.node_publish_volume(req.clone()).await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(started.elapsed() >= Duration::from_millis(400), "it waited");
    for part in [s.fluid.display().to_string(), "tmpfs".to_string(), "fuse.juicefs".to_string()] {
        assert!(status.message().contains(&part), "names {part}: {status:?}");
    }
    println!("    {}", status.message());
    assert_eq!(mount_count(&s.target), 0, "nothing was bound");
    // The FUSE pod mounts on top of the stale tmpfs: now publish binds the FUSE mount.
    mount_fuse(&s.fluid);
    s.h.node.node_publish_volume(req).await.unwrap();
    assert!(!s.target.join("stale.txt").exists(), "the FUSE mount is published, not the tmpfs");
}
