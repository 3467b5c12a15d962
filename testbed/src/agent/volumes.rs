//! kubelet's volume manager for one node: the CSI drivers registered here, which volumes are
//! staged for which pods, and each pod's volumes set up (stage once per node, publish per pod;
//! hostPath, emptyDir, ConfigMap, Secret and projected service-account volumes written into the
//! pod's directory) and torn down (unpublish, and unstage once no pod of the node uses it).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use k8s_openapi::ByteString;
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolume, PersistentVolumeClaim, Pod, Secret, ServiceAccount, Volume,
};
use k8s_openapi::api::storage::v1::CSIDriver;
use kube::Api;
use kube::api::PostParams;
use model::node::kubelet::{KUBELET_ROOT, PodCsiVolume, PodIdentity, pod_csi_volume};

use super::csiclient::CsiClient;
use super::nodens::NodeNamespace;
use crate::error::{Error, Result};

/// The volumes a pod got: each volume's node path, and the CSI volumes it published.
#[derive(Debug, Default, Clone)]
pub struct PodVolumes {
    /// Volume name → the node path a container mount binds.
    pub paths: BTreeMap<String, String>,
    /// The CSI volumes published for the pod, to unpublish on teardown.
    pub csi: Vec<PodCsiVolume>,
}

/// One node's volume manager.
pub struct NodeVolumes {
    ns: Arc<NodeNamespace>,
    client: kube::Client,
    /// CSI driver name → its socket's node path (what the registrar registered).
    drivers: Mutex<BTreeMap<String, String>>,
    /// Staged volume handle → the pods that use it; stage and unstage run under this lock.
    staged: tokio::sync::Mutex<BTreeMap<String, BTreeSet<String>>>,
}

impl NodeVolumes {
    /// The volume manager of the node in `ns`, reading objects as that node with `client`.
    pub fn new(ns: Arc<NodeNamespace>, client: kube::Client) -> Self {
        Self { ns, client, drivers: Mutex::new(BTreeMap::new()), staged: tokio::sync::Mutex::new(BTreeMap::new()) }
    }

    /// Registers the plugin listening at `socket` (a node path): its driver name and node ID.
    pub async fn register(&self, socket: &str) -> Result<(String, String)> {
        let client = CsiClient::connect(self.ns.host_path(socket)).await?;
        let name = client.driver_name().await?;
        let node_id = client.node_id().await?;
        self.drivers.lock().unwrap_or_else(PoisonError::into_inner).insert(name.clone(), socket.to_string());
        Ok((name, node_id))
    }

    /// Forgets the plugin registered from `socket`; its driver name, if it was registered.
    pub fn deregister(&self, socket: &str) -> Option<String> {
        let mut drivers = self.drivers.lock().unwrap_or_else(PoisonError::into_inner);
        let name = drivers.iter().find(|(_, s)| *s == socket).map(|(n, _)| n.clone())?;
        drivers.remove(&name);
        Some(name)
    }

    async fn plugin(&self, driver: &str) -> Result<CsiClient> {
        let socket = self.drivers.lock().unwrap_or_else(PoisonError::into_inner).get(driver).cloned();
        let socket = socket.ok_or_else(|| Error::NotReady {
            reason: "FailedMount",
            message: format!("driver name {driver} not found in the list of registered CSI drivers"),
        })?;
        CsiClient::connect(self.ns.host_path(&socket)).await
    }

    /// A node path as the agent reaches it.
    fn on_node(&self, path: &str) -> std::path::PathBuf {
        self.ns.host_path(path)
    }

    /// Sets up every volume of `pod`; a volume that cannot be set up yet is an error saying
    /// why (kubelet's FailedMount), and the volumes done so far are returned with it so that a
    /// retry or a teardown knows them.
    pub async fn setup(&self, pod: &Pod, done: &mut PodVolumes) -> Result<()> {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let identity = PodIdentity::of(&pod.metadata, pod.spec.as_ref());
        let pod_dir = format!("{KUBELET_ROOT}/pods/{}", identity.uid);
        for volume in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
            if done.paths.contains_key(&volume.name) {
                continue;
            }
            let path = if let Some(claim) = &volume.persistent_volume_claim {
                self.claim_volume(&namespace, &claim.claim_name, &identity, volume, done).await?
            } else if let Some(host) = &volume.host_path {
                self.host_path(&host.path, host.type_.as_deref().unwrap_or_default())?;
                host.path.clone()
            } else if volume.empty_dir.is_some() {
                let dir = format!("{pod_dir}/volumes/kubernetes.io~empty-dir/{}", volume.name);
                self.mkdir(&dir)?;
                dir
            } else {
                let files = self.file_volume(&namespace, &identity, volume).await?;
                let Some(files) = files else {
                    tracing::warn!(pod = %identity.name, volume = %volume.name, "volume type not supported by the testbed; skipped");
                    continue;
                };
                let dir = format!("{pod_dir}/volumes/kubernetes.io~{}/{}", files.0, volume.name);
                self.write_files(&dir, &files.1)?;
                dir
            };
            done.paths.insert(volume.name.clone(), path);
        }
        Ok(())
    }

    async fn claim_volume(
        &self,
        namespace: &str,
        claim_name: &str,
        pod: &PodIdentity,
        volume: &Volume,
        done: &mut PodVolumes,
    ) -> Result<String> {
        let pending = |message: String| Error::NotReady { reason: "FailedMount", message };
        let claim = Api::<PersistentVolumeClaim>::namespaced(self.client.clone(), namespace)
            .get(claim_name)
            .await
            .map_err(|e| match e {
                kube::Error::Api(s) if s.code == 404 => {
                    pending(format!("persistentvolumeclaim {claim_name:?} not found"))
                }
                e => Error::kube(format!("get PersistentVolumeClaim {namespace}/{claim_name}"), e),
            })?;
        let bound = claim.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
        let pv_name = claim.spec.as_ref().and_then(|s| s.volume_name.clone()).filter(|_| bound);
        let pv_name = pv_name.ok_or_else(|| pending(format!("persistentvolumeclaim {claim_name:?} is not bound")))?;
        let pv = Api::<PersistentVolume>::all(self.client.clone())
            .get(&pv_name)
            .await
            .map_err(|e| Error::kube(format!("get PersistentVolume {pv_name}"), e))?;
        let Some(driver) = pv.spec.as_ref().and_then(|s| s.csi.as_ref()).map(|c| c.driver.clone()) else {
            let host = pv.spec.as_ref().and_then(|s| s.host_path.as_ref()).map(|h| h.path.clone());
            return host.ok_or_else(|| pending(format!("PersistentVolume {pv_name} is neither CSI nor hostPath")));
        };
        let pod_info_on_mount = match Api::<CSIDriver>::all(self.client.clone()).get_opt(&driver).await {
            Ok(found) => found.and_then(|d| d.spec.pod_info_on_mount).unwrap_or(false),
            Err(e) => return Err(Error::kube(format!("get CSIDriver {driver}"), e)),
        };
        let csi_volume = pod_csi_volume(pod, volume, &pv, pod_info_on_mount)
            .ok_or_else(|| pending(format!("PersistentVolume {pv_name} has no CSI source")))?;
        let plugin = self.plugin(&driver).await?;
        {
            let mut staged = self.staged.lock().await;
            let users = staged.entry(csi_volume.stage.volume_id.clone()).or_default();
            if users.is_empty() {
                let result = plugin.stage(&csi_volume.stage).await;
                if let Err(err) = result {
                    staged.retain(|_, users| !users.is_empty());
                    return Err(err);
                }
            }
            users.insert(pod.uid.clone());
        }
        let target = csi_volume.publish.target_path.clone();
        let published = plugin.publish(&csi_volume.publish).await;
        // Recorded before the result is looked at: a publish that timed out may have mounted.
        done.csi.push(csi_volume);
        published?;
        Ok(target)
    }

    fn host_path(&self, path: &str, type_: &str) -> Result<()> {
        let on_node = self.on_node(path);
        match type_ {
            "DirectoryOrCreate" => self.mkdir(path),
            "FileOrCreate" => {
                if let Some(parent) = on_node.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| Error::io("create", parent, e))?;
                }
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&on_node)
                    .map(|_| ())
                    .map_err(|e| Error::io("create", &on_node, e))
            }
            "Directory" | "File" | "Socket" | "CharDevice" | "BlockDevice" if !on_node.exists() => {
                Err(Error::NotReady {
                    reason: "FailedMount",
                    message: format!("hostPath type check failed: {path} is not a {type_}"),
                })
            }
            _ => Ok(()),
        }
    }

    fn mkdir(&self, path: &str) -> Result<()> {
        let on_node = self.on_node(path);
        std::fs::create_dir_all(&on_node).map_err(|e| Error::io("create directory", on_node, e))
    }

    fn write_files(&self, dir: &str, files: &BTreeMap<String, Vec<u8>>) -> Result<()> {
        self.mkdir(dir)?;
        let base = self.on_node(dir);
        for (name, data) in files {
            let path = base.join(name);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|e| Error::io("create directory", parent, e))?;
            }
            std::fs::write(&path, data).map_err(|e| Error::io("write", &path, e))?;
        }
        Ok(())
    }

    /// The files of a ConfigMap, Secret or projected volume, with the plugin directory name;
    /// `None` for another volume type.
    async fn file_volume(
        &self,
        namespace: &str,
        pod: &PodIdentity,
        volume: &Volume,
    ) -> Result<Option<(&'static str, BTreeMap<String, Vec<u8>>)>> {
        if let Some(source) = &volume.config_map {
            let data = self.config_map(namespace, &source.name, source.optional.unwrap_or(false)).await?;
            return Ok(Some(("configmap", data)));
        }
        if let Some(source) = &volume.secret {
            let name = source.secret_name.clone().unwrap_or_default();
            let data = self.secret(namespace, &name, source.optional.unwrap_or(false)).await?;
            return Ok(Some(("secret", data)));
        }
        let Some(projected) = &volume.projected else { return Ok(None) };
        let mut files = BTreeMap::new();
        for source in projected.sources.iter().flatten() {
            if let Some(token) = &source.service_account_token {
                let jwt = self.token(namespace, pod, token.audience.clone(), token.expiration_seconds).await?;
                files.insert(token.path.clone(), jwt.into_bytes());
            }
            if let Some(config_map) = &source.config_map {
                let data = self.config_map(namespace, &config_map.name, config_map.optional.unwrap_or(false)).await?;
                files.extend(select_items(data, config_map.items.as_deref()));
            }
            if let Some(secret) = &source.secret {
                let data = self.secret(namespace, &secret.name, secret.optional.unwrap_or(false)).await?;
                files.extend(select_items(data, secret.items.as_deref()));
            }
            if let Some(downward) = &source.downward_api {
                for item in downward.items.iter().flatten() {
                    let value = match item.field_ref.as_ref().map(|f| f.field_path.as_str()) {
                        Some("metadata.namespace") => namespace.to_string(),
                        Some("metadata.name") => pod.name.clone(),
                        Some("metadata.uid") => pod.uid.clone(),
                        _ => continue,
                    };
                    files.insert(item.path.clone(), value.into_bytes());
                }
            }
        }
        Ok(Some(("projected", files)))
    }

    async fn config_map(&self, namespace: &str, name: &str, optional: bool) -> Result<BTreeMap<String, Vec<u8>>> {
        match Api::<ConfigMap>::namespaced(self.client.clone(), namespace).get_opt(name).await {
            Ok(Some(cm)) => {
                let mut data: BTreeMap<String, Vec<u8>> =
                    cm.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.into_bytes())).collect();
                data.extend(cm.binary_data.unwrap_or_default().into_iter().map(|(k, ByteString(v))| (k, v)));
                Ok(data)
            }
            Ok(None) if optional => Ok(BTreeMap::new()),
            Ok(None) => {
                Err(Error::NotReady { reason: "FailedMount", message: format!("configmap {name:?} not found") })
            }
            Err(e) => Err(Error::kube(format!("get ConfigMap {namespace}/{name}"), e)),
        }
    }

    async fn secret(&self, namespace: &str, name: &str, optional: bool) -> Result<BTreeMap<String, Vec<u8>>> {
        match Api::<Secret>::namespaced(self.client.clone(), namespace).get_opt(name).await {
            Ok(Some(secret)) => {
                let mut data: BTreeMap<String, Vec<u8>> =
                    secret.data.unwrap_or_default().into_iter().map(|(k, ByteString(v))| (k, v)).collect();
                data.extend(secret.string_data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.into_bytes())));
                Ok(data)
            }
            Ok(None) if optional => Ok(BTreeMap::new()),
            Ok(None) => Err(Error::NotReady { reason: "FailedMount", message: format!("secret {name:?} not found") }),
            Err(e) => Err(Error::kube(format!("get Secret {namespace}/{name}"), e)),
        }
    }

    /// A service-account token bound to the pod, requested as kubelet requests one.
    async fn token(
        &self,
        namespace: &str,
        pod: &PodIdentity,
        audience: Option<String>,
        expiration: Option<i64>,
    ) -> Result<String> {
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: audience.into_iter().collect(),
                expiration_seconds: expiration,
                bound_object_ref: Some(BoundObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Pod".into()),
                    name: Some(pod.name.clone()),
                    uid: Some(pod.uid.clone()),
                }),
            },
            ..Default::default()
        };
        let reply = Api::<ServiceAccount>::namespaced(self.client.clone(), namespace)
            .create_token_request(&pod.service_account, &PostParams::default(), &request)
            .await
            .map_err(|e| {
                Error::kube(format!("create token for ServiceAccount {namespace}/{}", pod.service_account), e)
            })?;
        Ok(reply.status.map(|s| s.token).unwrap_or_default())
    }

    /// Tears down what `setup` set up: unpublish each CSI volume, then unstage it once no pod
    /// of this node uses it. Stops at the first CSI error, leaving the rest for a retry.
    pub async fn teardown(&self, pod_uid: &str, volumes: &mut PodVolumes) -> Result<()> {
        while let Some(csi_volume) = volumes.csi.last() {
            let plugin = self.plugin(&csi_volume.driver).await?;
            plugin.unpublish(&csi_volume.unpublish()).await?;
            let mut staged = self.staged.lock().await;
            let handle = csi_volume.stage.volume_id.clone();
            let last = staged.get_mut(&handle).is_some_and(|users| {
                users.remove(pod_uid);
                users.is_empty()
            });
            if last {
                plugin.unstage(&csi_volume.unstage()).await?;
                staged.remove(&handle);
            }
            drop(staged);
            volumes.csi.pop();
        }
        let pod_dir = self.on_node(&format!("{KUBELET_ROOT}/pods/{pod_uid}"));
        if pod_dir.exists() {
            // Only kubelet's own files are left; a mount still there makes this fail, which is logged.
            if let Err(err) = std::fs::remove_dir_all(&pod_dir) {
                tracing::warn!(dir = %pod_dir.display(), %err, "cannot remove the pod's directory");
            }
        }
        Ok(())
    }
}

fn select_items(
    data: BTreeMap<String, Vec<u8>>,
    items: Option<&[k8s_openapi::api::core::v1::KeyToPath]>,
) -> BTreeMap<String, Vec<u8>> {
    match items {
        None => data,
        Some(items) => {
            items.iter().filter_map(|item| data.get(&item.key).map(|v| (item.path.clone(), v.clone()))).collect()
        }
    }
}

/// The node path a container mount binds: the volume's path, joined with its `subPath`.
pub fn mount_source(paths: &BTreeMap<String, String>, volume: &str, sub_path: Option<&str>) -> Option<String> {
    let base = paths.get(volume)?;
    Some(match sub_path.filter(|s| !s.is_empty()) {
        Some(sub) => Path::new(base).join(sub).display().to_string(),
        None => base.clone(),
    })
}
