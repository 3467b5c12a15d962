//! The seed article's flow, and what a user relies on around it, on a real control plane with
//! the node agent, the real CSI plugin and real JuiceFS (sqlite3 metadata, `--storage file`):
//! ferrofluid is installed from `deploy/` as a user would. One testbed serves the cases in
//! order. Needs root, /dev/fuse, the Go control plane (`scripts/testbed-build.sh`) and the
//! `.venv` tools (`scripts/setup.sh`); on CI a missing prerequisite fails. `E2E_KEEP=1` keeps
//! the logs of a passing run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{DaemonSet, StatefulSet};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, Node, PersistentVolume, PersistentVolumeClaim, Pod};
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams};
use model::api::Dataset;
use testbed::agent::control::Request;
use testbed::cluster::{Options, Programs, Testbed};

type Case = for<'a> fn(&'a mut World) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + 'a>>;

macro_rules! case {
    ($name:ident) => {
        (stringify!($name), (|w| Box::pin($name(w))) as Case)
    };
}

fn main() -> ExitCode {
    let ci = std::env::var_os("CI").is_some();
    if !nix::unistd::Uid::effective().is_root() {
        return skip_or_fail(ci, "must run as root (mounts, namespaces)");
    }
    let agent = PathBuf::from(env!("CARGO_BIN_EXE_ferrofluid-node-agent"));
    let programs = match Programs::find(&agent) {
        Ok(programs) => programs,
        Err(err) => return skip_or_fail(ci, &err.to_string()),
    };
    // Nothing the testbed mounts reaches the host's mount table.
    if let Err(err) = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).and_then(|_| {
        nix::mount::mount(
            None::<&str>,
            "/",
            None::<&str>,
            nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE,
            None::<&str>,
        )
    }) {
        eprintln!("e2e: cannot make a private mount namespace: {err}");
        return ExitCode::FAILURE;
    }
    let filter: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(run(programs, filter))
}

fn skip_or_fail(ci: bool, reason: &str) -> ExitCode {
    if ci {
        eprintln!("e2e: {reason}");
        ExitCode::FAILURE
    } else {
        println!("e2e: skipped: {reason}");
        ExitCode::SUCCESS
    }
}

async fn run(programs: Programs, filter: Vec<String>) -> ExitCode {
    let cases: Vec<(&str, Case)> = vec![
        case!(the_generated_crds_and_deploy_apply_server_side),
        case!(bad_manifests_are_rejected_by_the_apiserver_naming_the_field),
        case!(the_seed_flow_binds_mounts_and_serves_a_file_to_the_app),
        case!(deleting_a_dataset_in_use_is_blocked_then_teardown_leaves_nothing),
        case!(the_leader_fails_over_to_the_other_replica),
        case!(losing_the_worker_node_moves_the_worker_and_its_cache_labels),
        case!(deleting_a_namespace_creates_nothing_in_it),
        case!(a_worker_no_node_tolerates_says_why_on_the_dataset),
        case!(no_component_was_denied_by_rbac),
    ];
    let selected: Vec<_> =
        cases.into_iter().filter(|(n, _)| filter.is_empty() || filter.iter().any(|f| n.contains(f.as_str()))).collect();
    println!("\nrunning {} tests (e2e on a real control plane)", selected.len());
    let dir = std::env::temp_dir().join(format!("ferrofluid-e2e-{}", std::process::id()));
    let mut options = Options::nodes(3);
    // Node loss within a test's patience: NotReady after 10 s, evicted 5 s later.
    options.node_monitor_grace_period = "10s".into();
    options.toleration_seconds = 5;
    options.lease_renew_ms = 1_000;
    options.restart_backoff_ms = 2_000;
    let started = Instant::now();
    let bed = match Testbed::start(&dir, programs, &options).await {
        Ok(bed) => bed,
        Err(err) => {
            eprintln!("e2e: the testbed did not start: {err}\n(logs in {})", dir.display());
            return ExitCode::FAILURE;
        }
    };
    println!("testbed ready in {:.1} s ({})", started.elapsed().as_secs_f64(), dir.display());
    let mut world = World { volume: JuiceFsVolume::new(&dir.join("jfs")), bed, figures: BTreeMap::new() };
    let (mut passed, mut failed) = (0, 0);
    for (name, case) in selected {
        let began = Instant::now();
        match case(&mut world).await {
            Ok(()) => {
                passed += 1;
                println!("test {name} ... ok ({:.1} s)", began.elapsed().as_secs_f64());
            }
            Err(err) => {
                failed += 1;
                println!("test {name} ... FAILED ({:.1} s)\n    {err}", began.elapsed().as_secs_f64());
            }
        }
    }
    for (what, value) in &world.figures {
        println!("figure: {what}: {value}");
    }
    println!("\ne2e: {passed} passed; {failed} failed (logs in {})", dir.display());
    drop(world);
    if failed == 0 && std::env::var_os("E2E_KEEP").is_none() {
        let _ = std::fs::remove_dir_all(&dir);
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

struct World {
    bed: Testbed,
    volume: JuiceFsVolume,
    figures: BTreeMap<String, String>,
}

impl World {
    fn figure(&mut self, what: &str, value: String) {
        self.figures.insert(what.to_string(), value);
    }
}

/// A JuiceFS file system with sqlite3 metadata and a file bucket, holding `/demo/hello.txt`.
struct JuiceFsVolume {
    meta_url: String,
    bucket: String,
}

const HELLO: &str = "hello from juicefs, through ferrofluid\n";

impl JuiceFsVolume {
    fn new(dir: &Path) -> Self {
        std::fs::create_dir_all(dir).expect("volume dir");
        Self {
            meta_url: format!("sqlite3://{}", dir.join("meta.db").display()),
            bucket: format!("{}/", dir.join("bucket").display()),
        }
    }

    /// Formats the file system and writes the file through a mount of its own.
    fn format_and_write(&self, juicefs: &Path, scratch: &Path) -> Result<(), String> {
        let run = |args: &[&str]| -> Result<(), String> {
            let out = std::process::Command::new(juicefs).args(args).output().map_err(|e| e.to_string())?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!("juicefs {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr)))
            }
        };
        run(&["format", "--storage", "file", "--bucket", &self.bucket, &self.meta_url, "ferrofluid"])?;
        std::fs::create_dir_all(scratch).map_err(|e| e.to_string())?;
        let mount = scratch.display().to_string();
        run(&["mount", "-d", "--no-usage-report", &self.meta_url, &mount])?;
        let written = std::fs::create_dir_all(scratch.join("demo"))
            .and_then(|_| std::fs::write(scratch.join("demo/hello.txt"), HELLO));
        let _ = run(&["umount", &mount]);
        written.map_err(|e| format!("write through the scratch mount: {e}"))
    }

    fn manifests(&self, namespace: &str, name: &str, replicas: i32) -> String {
        format!(
            r#"apiVersion: v1
kind: Secret
metadata: {{ name: {name}-meta, namespace: {namespace} }}
stringData: {{ metaurl: "{meta}" }}
---
apiVersion: data.fluid.io/v1alpha1
kind: Dataset
metadata: {{ name: {name}, namespace: {namespace} }}
spec:
  mounts:
    - name: ferrofluid
      mountPoint: "juicefs:///demo"
      options: {{ storage: file, bucket: "{bucket}" }}
      encryptOptions:
        - name: metaurl
          valueFrom: {{ secretKeyRef: {{ name: {name}-meta, key: metaurl }} }}
"#,
            meta = self.meta_url,
            bucket = self.bucket,
        ) + &format!(
            r#"---
apiVersion: data.fluid.io/v1alpha1
kind: JuiceFSRuntime
metadata: {{ name: {name}, namespace: {namespace} }}
spec:
  replicas: {replicas}
  tieredstore:
    levels:
      - {{ mediumtype: MEM, path: /dev/shm, quota: 1Gi }}
"#
        )
    }
}

fn app_pod(namespace: &str, name: &str, claim: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{ name: {name}, namespace: {namespace} }}
spec:
  containers:
    - name: demo
      image: nginx
      volumeMounts: [{{ mountPath: /data, name: demo }}]
  volumes:
    - name: demo
      persistentVolumeClaim: {{ claimName: {claim} }}
"#
    )
}

fn check(condition: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if condition { Ok(()) } else { Err(what()) }
}

async fn wait<T, F, Fut>(bed: &Testbed, secs: u64, what: &str, probe: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    bed.wait_until(Duration::from_secs(secs), what, probe).await.map_err(|e| e.to_string())
}

async fn dataset_phase(bed: &Testbed, namespace: &str, name: &str) -> Option<String> {
    let dataset = Api::<Dataset>::namespaced(bed.client.clone(), namespace).get_opt(name).await.ok()??;
    Some(format!("{:?}", dataset.status?.phase))
}

async fn pod(bed: &Testbed, namespace: &str, name: &str) -> Option<Pod> {
    Api::<Pod>::namespaced(bed.client.clone(), namespace).get_opt(name).await.ok()?
}

fn running_and_ready(pod: &Pod) -> bool {
    let status = pod.status.as_ref();
    status.and_then(|s| s.phase.as_deref()) == Some("Running")
        && status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

async fn node_labels(bed: &Testbed, node: &str) -> BTreeMap<String, String> {
    Api::<Node>::all(bed.client.clone())
        .get_opt(node)
        .await
        .ok()
        .flatten()
        .and_then(|n| n.metadata.labels)
        .unwrap_or_default()
}

async fn the_generated_crds_and_deploy_apply_server_side(w: &mut World) -> Result<(), String> {
    // deploy/ went in when the testbed started; the binary's CRDs must apply too, unchanged.
    let crds = std::process::Command::new(w.bed.programs.bin_dir.join("ferrofluid-controller"))
        .arg("crds")
        .output()
        .map_err(|e| e.to_string())?;
    check(crds.status.success(), || "ferrofluid-controller crds failed".into())?;
    let out = w.bed.apply(&String::from_utf8_lossy(&crds.stdout)).map_err(|e| e.to_string())?;
    check(out.contains("juicefsruntimes.data.fluid.io"), || format!("unexpected apply output: {out}"))?;
    let again = w.bed.kubectl_ok(&["diff", "--server-side", "-k"], Some(&w.bed.programs.workspace.join("deploy")));
    check(again.is_ok(), || format!("deploy/ drifted from what the apiserver holds: {again:?}"))
}

async fn bad_manifests_are_rejected_by_the_apiserver_naming_the_field(w: &mut World) -> Result<(), String> {
    let cases = [
        ("Dataset", "spec:\n  mounts:\n    - name: a\n      mountPoint: \"\"\n", "spec.mounts[0].mountPoint"),
        (
            "JuiceFSRuntime",
            "spec:\n  tieredstore:\n    levels:\n      - { mediumtype: FLOPPY, path: /x, quota: 1Gi }\n",
            "spec.tieredstore.levels[0].mediumtype",
        ),
        ("JuiceFSRuntime", "spec:\n  replicas: -1\n", "spec.replicas"),
        (
            "JuiceFSRuntime",
            "spec:\n  tieredstore:\n    levels:\n      - { mediumtype: SSD, path: /x, quota: abc }\n",
            "spec.tieredstore.levels[0].quota",
        ),
    ];
    for (kind, spec, field) in cases {
        let manifest = format!(
            "apiVersion: data.fluid.io/v1alpha1\nkind: {kind}\nmetadata: {{ name: bad, namespace: default }}\n{spec}"
        );
        match w.bed.apply(&manifest) {
            Ok(out) => return Err(format!("the apiserver accepted a bad {kind} ({field}): {out}")),
            Err(err) => {
                check(err.to_string().contains(field), || format!("the error for {kind} does not name {field}: {err}"))?
            }
        }
    }
    Ok(())
}

async fn the_seed_flow_binds_mounts_and_serves_a_file_to_the_app(w: &mut World) -> Result<(), String> {
    let scratch = w.bed.dir.join("scratch-mount");
    w.volume.format_and_write(&w.bed.programs.juicefs_dir.join("juicefs"), &scratch)?;
    let manifests = w.volume.manifests("default", "jfsdemo", 1);
    let (pair_docs, runtime_doc) = manifests.split_at(
        manifests.rfind("---\napiVersion: data.fluid.io/v1alpha1\nkind: JuiceFSRuntime").expect("runtime doc"),
    );
    let bed = &w.bed;
    bed.apply(pair_docs).map_err(|e| e.to_string())?;
    wait(bed, 30, "the dataset is NotBound", || async {
        (dataset_phase(bed, "default", "jfsdemo").await? == "NotBound").then_some(())
    })
    .await?;
    let applied = Instant::now();
    bed.apply(runtime_doc).map_err(|e| e.to_string())?;
    wait(bed, 120, "the worker StatefulSet is ready", || async {
        let sts = Api::<StatefulSet>::namespaced(bed.client.clone(), "default")
            .get_opt("jfsdemo-juicefs-worker")
            .await
            .ok()??;
        (sts.status?.ready_replicas? == 1).then_some(())
    })
    .await?;
    wait(bed, 60, "the dataset is Bound", || async {
        (dataset_phase(bed, "default", "jfsdemo").await? == "Bound").then_some(())
    })
    .await?;
    let bound_after = applied.elapsed();
    wait(bed, 60, "the PV and the PVC are Bound", || async {
        let pvc =
            Api::<PersistentVolumeClaim>::namespaced(bed.client.clone(), "default").get_opt("jfsdemo").await.ok()??;
        let pv = Api::<PersistentVolume>::all(bed.client.clone()).get_opt("default-jfsdemo").await.ok()??;
        (pvc.status?.phase? == "Bound" && pv.status?.phase? == "Bound").then_some(())
    })
    .await?;
    let fuse_pods = Api::<Pod>::namespaced(bed.client.clone(), "default")
        .list(&ListParams::default().labels("role=juicefs-fuse"))
        .await
        .map_err(|e| e.to_string())?;
    check(fuse_pods.items.is_empty(), || "a FUSE pod runs before any app needs one".into())?;

    let app_applied = Instant::now();
    bed.apply(&app_pod("default", "demo-app", "jfsdemo")).map_err(|e| e.to_string())?;
    let app = wait(bed, 120, "the app pod runs", || async {
        pod(bed, "default", "demo-app").await.filter(running_and_ready)
    })
    .await?;
    let app_running_after = app_applied.elapsed();
    let node = app.spec.as_ref().and_then(|s| s.node_name.clone()).ok_or("the app has no node")?;
    let labels = node_labels(bed, &node).await;
    check(labels.get("fluid.io/f-default-jfsdemo").map(String::as_str) == Some("true"), || {
        format!("node {node} lacks the FUSE label: {labels:?}")
    })?;
    let fuse_pods = Api::<Pod>::namespaced(bed.client.clone(), "default")
        .list(&ListParams::default().labels("role=juicefs-fuse"))
        .await
        .map_err(|e| e.to_string())?;
    check(
        fuse_pods.items.len() == 1
            && fuse_pods.items[0].spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node.as_str()),
        || {
            format!(
                "expected one FUSE pod on {node}, found {:?}",
                fuse_pods.items.iter().map(|p| p.spec.as_ref().and_then(|s| s.node_name.clone())).collect::<Vec<_>>()
            )
        },
    )?;

    // The file, through the app container's own mount of the volume and through its target path.
    let view =
        bed.ask(Request::Inspect { node: node.clone() }).await.map_err(|e| e.to_string())?.node.ok_or("no view")?;
    let root = view
        .containers
        .get("default/demo-app")
        .and_then(|c| c.get("demo"))
        .ok_or("the app container is not running")?;
    let seen = std::fs::read_to_string(Path::new(root).join("data/hello.txt"))
        .map_err(|e| format!("read /data/hello.txt in the app container: {e}"))?;
    check(seen == HELLO, || format!("the app read {seen:?}"))?;
    // The PV is ReadOnlyMany: the bind the app sees is read-only, not only the plugin's copy.
    let write = std::fs::write(Path::new(root).join("data/written-by-app.txt"), "x");
    check(write.as_ref().err().and_then(|e| e.raw_os_error()) == Some(nix::libc::EROFS), || {
        format!("a write through the read-only volume gave {write:?}")
    })?;
    let uid = app.metadata.uid.clone().unwrap_or_default();
    let target = Path::new(&view.root)
        .join(format!("var/lib/kubelet/pods/{uid}/volumes/kubernetes.io~csi/default-jfsdemo/mount/hello.txt"));
    let seen = std::fs::read_to_string(&target).map_err(|e| format!("read {}: {e}", target.display()))?;
    check(seen == HELLO, || format!("the target path gave {seen:?}"))?;
    let fuse_mounts = view.mountinfo.lines().filter(|l| l.contains(" - fuse.juicefs ")).count();
    check(fuse_mounts == 2, || {
        format!("expected the FUSE mount and its bind on {node}, found {fuse_mounts}:\n{}", view.mountinfo)
    })?;
    // The cache figures come from the real JuiceFS worker's metrics endpoint, scraped by the
    // controller: UFS TOTAL SIZE of `kubectl get dataset` is no longer empty.
    let ufs_total = wait(bed, 150, "the dataset's ufsTotal is set from the worker's metrics", || async {
        let dataset = Api::<Dataset>::namespaced(bed.client.clone(), "default").get_opt("jfsdemo").await.ok()??;
        dataset.status?.ufs_total.filter(|total| !total.is_empty())
    })
    .await?;
    w.figure(
        "seed: runtime applied -> ufsTotal from the worker's metrics",
        format!("{:.1} s ({ufs_total})", applied.elapsed().as_secs_f64()),
    );
    w.figure("seed: runtime applied -> dataset Bound", format!("{:.1} s", bound_after.as_secs_f64()));
    w.figure("seed: app pod applied -> Running with its mount", format!("{:.1} s", app_running_after.as_secs_f64()));
    Ok(())
}

async fn deleting_a_dataset_in_use_is_blocked_then_teardown_leaves_nothing(w: &mut World) -> Result<(), String> {
    let bed = &w.bed;
    bed.kubectl_ok(&["delete", "dataset", "jfsdemo", "-n", "default", "--wait=false"], None)
        .map_err(|e| e.to_string())?;
    wait(bed, 30, "the dataset says why it is not deleted", || async {
        let ds = Api::<Dataset>::namespaced(bed.client.clone(), "default").get_opt("jfsdemo").await.ok()??;
        let blocked = ds.status?.conditions.iter().any(|c| {
            c.type_ == "DeletionBlocked"
                && c.status == "True"
                && c.message.as_deref().unwrap_or_default().contains("demo-app")
        });
        blocked.then_some(())
    })
    .await?;
    wait(bed, 30, "an event says why the dataset is not deleted", || async {
        let events = Api::<Event>::namespaced(bed.client.clone(), "default").list(&ListParams::default()).await.ok()?;
        events
            .items
            .iter()
            .any(|e| {
                e.involved_object.kind.as_deref() == Some("Dataset")
                    && e.type_.as_deref() == Some("Warning")
                    && e.message.as_deref().unwrap_or_default().contains("demo-app")
            })
            .then_some(())
    })
    .await?;
    check(pod(bed, "default", "demo-app").await.as_ref().is_some_and(running_and_ready), || {
        "the app stopped while its dataset was blocked".into()
    })?;
    let deleted = Instant::now();
    bed.kubectl_ok(&["delete", "pod", "demo-app", "-n", "default"], None).map_err(|e| e.to_string())?;
    wait(bed, 60, "the dataset is gone", || async {
        Api::<Dataset>::namespaced(bed.client.clone(), "default").get_opt("jfsdemo").await.ok()?.is_none().then_some(())
    })
    .await?;
    let dataset_gone = deleted.elapsed();
    wait(bed, 60, "nothing of the pair is left", || async {
        let client = bed.client.clone();
        let none = Api::<PersistentVolume>::all(client.clone()).get_opt("default-jfsdemo").await.ok()?.is_none()
            && Api::<PersistentVolumeClaim>::namespaced(client.clone(), "default")
                .get_opt("jfsdemo")
                .await
                .ok()?
                .is_none()
            && Api::<StatefulSet>::namespaced(client.clone(), "default")
                .get_opt("jfsdemo-juicefs-worker")
                .await
                .ok()?
                .is_none()
            && Api::<DaemonSet>::namespaced(client.clone(), "default")
                .get_opt("jfsdemo-juicefs-fuse")
                .await
                .ok()?
                .is_none()
            && Api::<Pod>::namespaced(client.clone(), "default")
                .list(&ListParams::default().labels("release=jfsdemo"))
                .await
                .ok()?
                .items
                .is_empty();
        none.then_some(())
    })
    .await?;
    let teardown = deleted.elapsed();
    for node in ["node-1", "node-2", "node-3"] {
        let labels = node_labels(bed, node).await;
        let ours: Vec<&String> =
            labels.keys().filter(|k| k.starts_with("fluid.io/") || k.starts_with("fluid_")).collect();
        check(ours.is_empty(), || format!("{node} keeps labels {ours:?}"))?;
        let view =
            bed.ask(Request::Inspect { node: node.into() }).await.map_err(|e| e.to_string())?.node.ok_or("no view")?;
        let left: Vec<&str> =
            view.mountinfo.lines().filter(|l| l.contains("fuse.juicefs") || l.contains("kubernetes.io~csi")).collect();
        check(left.is_empty(), || format!("{node} keeps mounts: {left:?}"))?;
    }
    w.figure("teardown: app pod deleted -> dataset gone", format!("{:.1} s", dataset_gone.as_secs_f64()));
    w.figure("teardown: app pod deleted -> nothing left", format!("{:.1} s", teardown.as_secs_f64()));
    Ok(())
}

async fn the_leader_fails_over_to_the_other_replica(w: &mut World) -> Result<(), String> {
    let bed = &w.bed;
    let leases: Api<Lease> = Api::namespaced(bed.client.clone(), "fluid-system");
    let pods: Api<Pod> = Api::namespaced(bed.client.clone(), "fluid-system");
    // Both replicas up (the testbed waits for one), one of them holding the lease.
    let controllers = wait(bed, 120, "both controller replicas run and one holds the lease", || async {
        let mut list =
            pods.list(&ListParams::default().labels("app.kubernetes.io/name=ferrofluid-controller")).await.ok()?;
        list.items.retain(|p| p.metadata.deletion_timestamp.is_none() && running_and_ready(p));
        let holder = leases.get_opt("ferrofluid-controller").await.ok()??.spec?.holder_identity?;
        let holds = list.items.iter().any(|p| p.metadata.name.as_deref() == Some(holder.as_str()));
        (list.items.len() == 2 && holds).then_some(list)
    })
    .await?;
    let holder = leases
        .get_opt("ferrofluid-controller")
        .await
        .map_err(|e| e.to_string())?
        .and_then(|l| l.spec?.holder_identity)
        .ok_or("nobody holds the lease")?;
    let node_of = |name: &str| {
        controllers
            .items
            .iter()
            .find(|p| p.metadata.name.as_deref() == Some(name))
            .and_then(|p| p.spec.as_ref()?.node_name.clone())
    };
    let leader_node = node_of(&holder).ok_or("the leader pod has no node")?;
    let follower = controllers
        .items
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .find(|n| *n != holder)
        .ok_or("only one controller replica")?;
    check(node_of(&follower).as_deref() != Some(leader_node.as_str()), || {
        format!("both replicas run on {leader_node}")
    })?;
    // Only the leader writes: while a pair is set up, the follower sends no request for an
    // effect (it may have led before: its counter must not move while it follows).
    let follower_ip = controllers
        .items
        .iter()
        .find(|p| p.metadata.name.as_deref() == Some(follower.as_str()))
        .and_then(|p| p.status.as_ref()?.pod_ip.clone())
        .ok_or("the follower has no IP")?;
    let effects_sent = || async {
        let (_, metrics) = testbed::agent::probes::http_get(&follower_ip, 8080, "/metrics").await?;
        let total: f64 = metrics
            .lines()
            .filter(|l| l.starts_with("ferrofluid_effects_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        Some(total)
    };
    let before = effects_sent().await.ok_or("no /metrics from the follower")?;
    w.bed.apply(&w.volume.manifests("default", "while-following", 1)).map_err(|e| e.to_string())?;
    let bed = &w.bed;
    wait(bed, 120, "a pair set up while the follower follows is Bound", || async {
        (dataset_phase(bed, "default", "while-following").await? == "Bound").then_some(())
    })
    .await?;
    let after = effects_sent().await.ok_or("no /metrics from the follower")?;
    let still = leases.get_opt("ferrofluid-controller").await.ok().flatten().and_then(|l| l.spec?.holder_identity);
    check(still.as_deref() == Some(holder.as_str()), || format!("the lease moved to {still:?} meanwhile"))?;
    check(after == before, || {
        format!("the follower {follower} sent {} effect requests while following", after - before)
    })?;
    bed.kubectl_ok(&["delete", "dataset,juicefsruntime", "while-following", "-n", "default"], None)
        .map_err(|e| e.to_string())?;
    // The leader's machine dies: no lease release, the other replica waits out the lease.
    let killed = Instant::now();
    bed.ask(Request::NodeDown { node: leader_node.clone() }).await.map_err(|e| e.to_string())?;
    let next = wait(bed, 60, "the other replica takes the lease", || async {
        leases
            .get_opt("ferrofluid-controller")
            .await
            .ok()??
            .spec?
            .holder_identity
            .filter(|h| !h.is_empty() && *h != holder)
    })
    .await?;
    let handover = killed.elapsed();
    bed.ask(Request::NodeUp { node: leader_node.clone() }).await.map_err(|e| e.to_string())?;
    bed.wait_nodes_ready(std::slice::from_ref(&leader_node), true).await.map_err(|e| e.to_string())?;
    // The new leader reconciles: a new pair is set up.
    w.bed.apply(&w.volume.manifests("default", "after-failover", 1)).map_err(|e| e.to_string())?;
    let bed = &w.bed;
    wait(bed, 120, "a pair applied after the failover is Bound", || async {
        (dataset_phase(bed, "default", "after-failover").await? == "Bound").then_some(())
    })
    .await?;
    bed.kubectl_ok(&["delete", "dataset,juicefsruntime", "after-failover", "-n", "default"], None)
        .map_err(|e| e.to_string())?;
    w.figure(
        "leader's node down -> the other replica holds the lease",
        format!("{:.1} s ({holder} -> {next})", handover.as_secs_f64()),
    );
    Ok(())
}

async fn losing_the_worker_node_moves_the_worker_and_its_cache_labels(w: &mut World) -> Result<(), String> {
    w.bed.apply(&w.volume.manifests("default", "lossy", 1)).map_err(|e| e.to_string())?;
    let bed = &w.bed;
    let pods: Api<Pod> = Api::namespaced(bed.client.clone(), "default");
    wait(bed, 120, "the pair is Bound", || async {
        (dataset_phase(bed, "default", "lossy").await? == "Bound").then_some(())
    })
    .await?;
    let worker = wait(bed, 30, "the worker runs", || async {
        pods.get_opt("lossy-juicefs-worker-0").await.ok()?.filter(running_and_ready)
    })
    .await?;
    let lost = worker.spec.as_ref().and_then(|s| s.node_name.clone()).ok_or("no node")?;
    let key = "fluid.io/s-default-lossy";
    check(node_labels(bed, &lost).await.contains_key(key), || format!("{lost} lacks {key}"))?;
    let down = Instant::now();
    bed.ask(Request::NodeDown { node: lost.clone() }).await.map_err(|e| e.to_string())?;
    wait(bed, 60, "the lost node is NotReady", || async {
        let node = Api::<Node>::all(bed.client.clone()).get_opt(&lost).await.ok()??;
        node.status?.conditions?.iter().any(|c| c.type_ == "Ready" && c.status == "Unknown").then_some(())
    })
    .await?;
    let not_ready = down.elapsed();
    wait(bed, 60, "the worker is evicted (Terminating on the dead node)", || async {
        pods.get_opt("lossy-juicefs-worker-0").await.ok()??.metadata.deletion_timestamp.map(|_| ())
    })
    .await?;
    // A dead kubelet never confirms the deletion. The operator's step for a node that is gone:
    // the out-of-service taint, after which the pod GC removes its pods (non-graceful shutdown).
    let taint = serde_json::json!({ "spec": { "taints": [
        { "key": "node.kubernetes.io/unreachable", "effect": "NoExecute" },
        { "key": "node.kubernetes.io/unreachable", "effect": "NoSchedule" },
        { "key": "node.kubernetes.io/out-of-service", "value": "nodeshutdown", "effect": "NoExecute" }
    ]}});
    Api::<Node>::all(bed.client.clone())
        .patch(&lost, &PatchParams::default(), &Patch::Merge(&taint))
        .await
        .map_err(|e| e.to_string())?;
    let moved = wait(bed, 120, "the worker runs on another node", || async {
        let p = pods.get_opt("lossy-juicefs-worker-0").await.ok()??;
        let node = p.spec.as_ref()?.node_name.clone()?;
        (node != lost && running_and_ready(&p)).then_some(node)
    })
    .await?;
    wait(bed, 60, "the cache labels follow the worker", || async {
        let on_new = node_labels(bed, &moved).await.contains_key(key);
        let on_lost = node_labels(bed, &lost).await.contains_key(key);
        (on_new && !on_lost).then_some(())
    })
    .await?;
    wait(bed, 60, "the dataset is Bound again", || async {
        (dataset_phase(bed, "default", "lossy").await? == "Bound").then_some(())
    })
    .await?;
    let recovered = down.elapsed();
    bed.ask(Request::NodeUp { node: lost.clone() }).await.map_err(|e| e.to_string())?;
    let untaint = serde_json::json!({ "spec": { "taints": null } });
    Api::<Node>::all(bed.client.clone())
        .patch(&lost, &PatchParams::default(), &Patch::Merge(&untaint))
        .await
        .map_err(|e| e.to_string())?;
    bed.wait_nodes_ready(std::slice::from_ref(&lost), true).await.map_err(|e| e.to_string())?;
    bed.kubectl_ok(&["delete", "dataset,juicefsruntime", "lossy", "-n", "default"], None).map_err(|e| e.to_string())?;
    w.figure("node loss: heartbeat stops -> NotReady", format!("{:.1} s", not_ready.as_secs_f64()));
    w.figure(
        "node loss: heartbeat stops -> worker moved, labels followed, Bound",
        format!("{:.1} s ({lost} -> {moved})", recovered.as_secs_f64()),
    );
    Ok(())
}

async fn deleting_a_namespace_creates_nothing_in_it(w: &mut World) -> Result<(), String> {
    // Several pairs, so that the namespace controller's deletions race the reconciles.
    w.bed.kubectl_ok(&["create", "namespace", "going"], None).map_err(|e| e.to_string())?;
    for name in ["a", "b", "c"] {
        w.bed.apply(&w.volume.manifests("going", name, 1)).map_err(|e| e.to_string())?;
    }
    let bed = &w.bed;
    for name in ["a", "b", "c"] {
        wait(bed, 120, &format!("going/{name} is Bound"), || async {
            (dataset_phase(bed, "going", name).await? == "Bound").then_some(())
        })
        .await?;
    }
    let deleted = Instant::now();
    bed.kubectl_ok(&["delete", "namespace", "going", "--wait=false"], None).map_err(|e| e.to_string())?;
    wait(bed, 120, "the namespace is gone", || async {
        Api::<k8s_openapi::api::core::v1::Namespace>::all(bed.client.clone())
            .get_opt("going")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await?;
    let gone = deleted.elapsed();
    wait(bed, 30, "no PV of the namespace is left", || async {
        let pvs = Api::<PersistentVolume>::all(bed.client.clone()).list(&ListParams::default()).await.ok()?;
        pvs.items.iter().all(|pv| !pv.metadata.name.as_deref().unwrap_or_default().starts_with("going-")).then_some(())
    })
    .await?;
    // A create the API server refused in the terminating namespace shows in the controller's log.
    let refused: Vec<String> = w
        .bed
        .container_logs()
        .iter()
        .filter(|log| log.to_string_lossy().contains("ferrofluid-controller"))
        .flat_map(|log| {
            std::fs::read_to_string(log).unwrap_or_default().lines().map(str::to_string).collect::<Vec<_>>()
        })
        .filter(|line| line.contains("because it is being terminated"))
        .collect();
    check(refused.is_empty(), || {
        format!("{} creates refused in the terminating namespace:\n{}", refused.len(), refused.join("\n"))
    })?;
    w.figure("namespace with 3 pairs deleted -> gone", format!("{:.1} s", gone.as_secs_f64()));
    Ok(())
}

/// Fluid's #5099: with every node tainted, the dataset's Ready condition carries
/// kube-scheduler's own reason, naming the worker pod (as the simulator's scenario
/// `a-worker-no-node-tolerates-says-why-on-the-dataset` shows); lifting a taint binds it.
async fn a_worker_no_node_tolerates_says_why_on_the_dataset(w: &mut World) -> Result<(), String> {
    let bed = &w.bed;
    bed.kubectl_ok(&["create", "namespace", "tainted"], None).map_err(|e| e.to_string())?;
    bed.kubectl_ok(&["taint", "nodes", "--all", "gpu=true:NoSchedule"], None).map_err(|e| e.to_string())?;
    let outcome = async {
        bed.apply(&w.volume.manifests("tainted", "picky", 1)).map_err(|e| e.to_string())?;
        let message = wait(bed, 60, "the dataset says why its worker cannot run", || async {
            let dataset = Api::<Dataset>::namespaced(bed.client.clone(), "tainted").get_opt("picky").await.ok()??;
            let ready = dataset.status?.conditions.into_iter().find(|c| c.type_ == "Ready")?;
            let message = ready.message?;
            (message.contains("had untolerated taint(s)") && message.contains("picky-juicefs-worker-0"))
                .then_some(message)
        })
        .await?;
        Ok::<String, String>(message)
    }
    .await;
    // Lifted whatever happened: the other cases need schedulable nodes.
    let lifted = bed.kubectl_ok(&["taint", "nodes", "--all", "gpu-"], None).map_err(|e| e.to_string());
    let message = outcome?;
    lifted?;
    wait(bed, 120, "tainted/picky is Bound once the taint is lifted", || async {
        (dataset_phase(bed, "tainted", "picky").await? == "Bound").then_some(())
    })
    .await?;
    bed.kubectl_ok(&["delete", "namespace", "tainted", "--wait=false"], None).map_err(|e| e.to_string())?;
    w.figure("no node tolerates the worker: the dataset's Ready message", message);
    Ok(())
}

async fn no_component_was_denied_by_rbac(w: &mut World) -> Result<(), String> {
    let mut denied = Vec::new();
    for log in w.bed.container_logs() {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        for line in text.lines().filter(|l| l.contains(" 403") || l.contains("code: 403") || l.contains("is forbidden"))
        {
            denied.push(format!(
                "{}: {}",
                log.file_name().unwrap_or_default().to_string_lossy(),
                line.chars().take(300).collect::<String>()
            ));
        }
    }
    check(denied.is_empty(), || format!("{} denied requests:\n{}", denied.len(), denied.join("\n")))
}
