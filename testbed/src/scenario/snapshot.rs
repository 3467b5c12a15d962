//! A snapshot of the real cluster that scenario expectations and the normalised final state
//! read, as they read the simulator: the objects from the API server, each node's power from the
//! agent, and each running app pod's dataset mounts judged from its node's mount table.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kube::Api;
use kube::api::{ApiResource, DynamicObject, ListParams};
use kube::core::GroupVersionKind;
use model::effect::{Kind, ObjectRef};
use serde_json::Value;
use sim::scenario::cluster::{ClusterRead, count_json, pod_running};
use sim::scenario::parity::dataset_volumes;

use crate::agent::control::Request;
use crate::agent::node::NodeView;
use crate::cluster::Testbed;
use crate::error::{Error, Result};

/// Every kind a scenario can name, with its API group, version and plural.
const RESOURCES: &[(Kind, &str, &str, &str)] = &[
    (Kind::Dataset, "data.fluid.io", "v1alpha1", "datasets"),
    (Kind::JuiceFSRuntime, "data.fluid.io", "v1alpha1", "juicefsruntimes"),
    (Kind::StatefulSet, "apps", "v1", "statefulsets"),
    (Kind::DaemonSet, "apps", "v1", "daemonsets"),
    (Kind::PersistentVolume, "", "v1", "persistentvolumes"),
    (Kind::PersistentVolumeClaim, "", "v1", "persistentvolumeclaims"),
    (Kind::Node, "", "v1", "nodes"),
    (Kind::Pod, "", "v1", "pods"),
];

/// The API resource of `kind`.
pub fn resource(kind: Kind) -> ApiResource {
    let (_, group, version, plural) = RESOURCES.iter().find(|(k, ..)| *k == kind).copied().unwrap_or(RESOURCES[7]);
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind.as_str()), plural)
}

/// The real cluster at one moment.
#[derive(Debug, Default)]
pub struct Snapshot {
    objects: BTreeMap<Kind, Vec<Value>>,
    up: BTreeMap<String, bool>,
    mounts: BTreeMap<(String, String, String), Result<&'static str, String>>,
}

impl Snapshot {
    /// Reads the API server and the agent.
    pub async fn take(bed: &Testbed) -> Result<Self> {
        let mut snapshot = Snapshot::default();
        for (kind, ..) in RESOURCES {
            let api: Api<DynamicObject> = Api::all_with(bed.client.clone(), &resource(*kind));
            let list = api
                .list(&ListParams::default())
                .await
                .map_err(|e| Error::kube(format!("list {}", kind.as_str()), e))?;
            let mut values = Vec::with_capacity(list.items.len());
            for mut item in list.items {
                item.types.get_or_insert_with(|| kube::core::TypeMeta {
                    api_version: resource(*kind).api_version,
                    kind: kind.as_str().to_string(),
                });
                values.push(serde_json::to_value(&item).map_err(|e| Error::Config(e.to_string()))?);
            }
            values.sort_by_key(|v| (text(v, "/metadata/namespace").to_string(), text(v, "/metadata/name").to_string()));
            snapshot.objects.insert(*kind, values);
        }
        let mut agent = bed.agent().await?;
        snapshot.up = agent.ask(&Request::Nodes).await?.nodes;
        for (node, up) in snapshot.up.clone() {
            if !up {
                continue;
            }
            let Some(view) = agent.ask(&Request::Inspect { node: node.clone() }).await?.node else { continue };
            snapshot.judge_mounts(&node, &view);
        }
        Ok(snapshot)
    }

    /// Judges each dataset volume of each running pod on `node` from the node's mount table.
    fn judge_mounts(&mut self, node: &str, view: &NodeView) {
        let pods: Vec<Value> = self
            .objects
            .get(&Kind::Pod)
            .into_iter()
            .flatten()
            .filter(|p| text(p, "/spec/nodeName") == node && pod_running(p))
            .cloned()
            .collect();
        let table = MountTable::parse(&view.mountinfo);
        for pod in pods {
            for volume in dataset_volumes(self, &pod) {
                let state = self
                    .target_of(&pod, &volume)
                    .map(|(target, fluid_path)| table.judge(Path::new(&view.root), &target, &fluid_path));
                let key = (
                    text(&pod, "/metadata/namespace").to_string(),
                    text(&pod, "/metadata/name").to_string(),
                    volume.clone(),
                );
                self.mounts.insert(key, state.ok_or_else(|| format!("no PV for volume {volume}")));
            }
        }
    }

    /// The kubelet's target path of `pod`'s `volume` and its PV's `fluid_path`.
    fn target_of(&self, pod: &Value, volume: &str) -> Option<(String, String)> {
        let namespace = text(pod, "/metadata/namespace");
        let claim = pod
            .pointer("/spec/volumes")?
            .as_array()?
            .iter()
            .find(|v| text(v, "/name") == volume)
            .map(|v| text(v, "/persistentVolumeClaim/claimName"))?;
        let pvc = self.object(&ObjectRef::namespaced(Kind::PersistentVolumeClaim, namespace, claim))?;
        let pv_name = text(&pvc, "/spec/volumeName");
        let pv = self.object(&ObjectRef::cluster(Kind::PersistentVolume, pv_name))?;
        let fluid_path = pv.pointer("/spec/csi/volumeAttributes")?.get(model::volume::ATTR_FLUID_PATH)?.as_str()?;
        let target =
            format!("/var/lib/kubelet/pods/{}/volumes/kubernetes.io~csi/{pv_name}/mount", text(pod, "/metadata/uid"));
        Some((target, fluid_path.to_string()))
    }
}

fn text<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// A node's mount table: mount point → the devices mounted there, bottom first.
struct MountTable(BTreeMap<String, Vec<String>>);

impl MountTable {
    /// Parses `/proc/self/mountinfo` (fields: id, parent, major:minor, root, mount point, …).
    fn parse(mountinfo: &str) -> Self {
        let mut table: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for line in mountinfo.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if let [_, _, device, _, point, ..] = fields.as_slice() {
                table.entry(point.replace("\\040", " ")).or_default().push((*device).to_string());
            }
        }
        Self(table)
    }

    /// `unmounted` with nothing at `target`; `broken` when reading it fails (the FUSE daemon
    /// behind it is gone: transport endpoint is not connected); `live` when it is the device
    /// mounted at `fluid_path`; else `detached`.
    fn judge(&self, root: &Path, target: &str, fluid_path: &str) -> &'static str {
        let Some(device) = self.0.get(target).and_then(|d| d.last()) else { return "unmounted" };
        if !readable(root.join(target.trim_start_matches('/'))) {
            return "broken";
        }
        match self.0.get(fluid_path).and_then(|d| d.last()) {
            Some(live) if live == device => "live",
            _ => "detached",
        }
    }
}

/// Whether listing `path` succeeds within 2 s: a FUSE mount whose daemon hangs blocks the read,
/// which is as broken for an app as "transport endpoint is not connected". The probe runs on a
/// thread of its own so that a hang cannot stall the runner.
fn readable(path: PathBuf) -> bool {
    let (done, answer) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(std::fs::read_dir(&path).is_ok());
    });
    answer.recv_timeout(std::time::Duration::from_secs(2)).unwrap_or(false)
}

impl ClusterRead for Snapshot {
    fn object(&self, key: &ObjectRef) -> Option<Value> {
        self.objects
            .get(&key.kind)?
            .iter()
            .find(|o| text(o, "/metadata/name") == key.name && text(o, "/metadata/namespace") == key.namespace)
            .cloned()
    }

    fn objects(&self, kind: Kind) -> Vec<Value> {
        self.objects.get(&kind).cloned().unwrap_or_default()
    }

    fn count(&self, kind: Kind, namespace: Option<&str>, selector: &[(String, Option<String>)], running: bool) -> i64 {
        count_json(self.objects.get(&kind).into_iter().flatten(), namespace, selector, running)
    }

    fn mount_state(&self, pod: &ObjectRef, volume: &str) -> Result<&'static str, String> {
        let found = self.object(pod).ok_or_else(|| format!("{pod} does not exist"))?;
        let node = text(&found, "/spec/nodeName");
        if node.is_empty() {
            return Err("the pod is not scheduled".to_string());
        }
        if self.up.get(node) == Some(&false) {
            return Err(format!("{node} is down"));
        }
        let key = (pod.namespace.to_string(), pod.name.to_string(), volume.to_string());
        match self.mounts.get(&key) {
            Some(state) => state.clone(),
            None => {
                let names = dataset_volumes(self, &found);
                if names.iter().any(|n| n == volume) {
                    Err(format!("{pod} is not running"))
                } else {
                    Err(format!("{pod} has no bound dataset volume `{volume}` (it has {names:?})"))
                }
            }
        }
    }

    fn node_up(&self, node: &str) -> Option<bool> {
        self.up.get(node).copied()
    }
}
