//! What a scenario's cluster becomes on the testbed: its nodes and timings as the node agent's
//! and the control plane's settings, what has no real counterpart (said in one line each), and
//! the JuiceFS volume that stands in for every `juicefs://` mount.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use sim::scenario::Scenario;
use sim::scenario::parse::Capacity;

use crate::agent::node::{NodeSpec, default_capacity};
use crate::cluster::Options;
use crate::error::{Error, Result};

/// The prefix of the Secrets (in each namespace a Dataset is applied to) that hold the
/// volumes' metaurls; the mount's name follows.
pub const SECRET_PREFIX: &str = "ferrofluid-testbed-juicefs-";

/// The testbed's options for `scenario`, and one line for each setting it cannot honour.
pub fn options_for(scenario: &Scenario) -> (Options, Vec<String>) {
    let cluster = &scenario.cluster;
    let nodes = cluster
        .resolved_nodes()
        .into_iter()
        .map(|node| NodeSpec {
            name: node.name,
            capacity: capacity_of(&node.capacity),
            labels: node.labels,
            taints: node.taints,
        })
        .collect();
    let mut options = Options::nodes(0);
    options.nodes = nodes;
    options.system_node = true;
    let timing = &scenario.timing;
    if let Some(grace) = timing.node_monitor_grace {
        options.node_monitor_grace_period = format!("{}ms", grace.0);
    }
    if let Some(eviction) = timing.pod_eviction_timeout {
        options.toleration_seconds = u32::try_from(eviction.0.div_ceil(1000)).unwrap_or(u32::MAX);
    }
    if let Some(delay) = timing.restart_delay {
        options.restart_backoff_ms = delay.0;
    }
    let mut not_applicable = Vec::new();
    let fixed = [
        ("kube_latency", timing.kube_latency.is_some(), "the built-in controllers react as fast as they do"),
        ("watch_latency", timing.watch_latency.is_some(), "watch events arrive as fast as they do"),
        ("pod_start", timing.pod_start.is_some(), "containers start as fast as their programs do"),
        ("pod_stop", timing.pod_stop.is_some(), "containers stop as fast as their programs do"),
        ("fuse_mount", timing.fuse_mount.is_some(), "juicefs mounts as fast as it does"),
        ("publish_retry", timing.publish_retry.is_some(), "the agent retries NodePublish on its own schedule"),
        (
            "controller_restart",
            timing.controller_restart.is_some(),
            "the controller restarts after the agent's backoff",
        ),
        ("csi_restart", timing.csi_restart.is_some(), "the CSI plugin restarts after the agent's backoff"),
        ("recover_period", timing.recover_period.is_some(), "the CSI plugin runs with deploy/'s recovery period"),
        ("resync", timing.resync.is_some(), "the controller runs with deploy/'s resync period"),
        ("retry", timing.retry.is_some(), "the controller runs with the model's retry policy"),
    ];
    for (field, set, why) in fixed {
        if set {
            not_applicable.push(format!("timing.{field}: not applicable on a real cluster: {why}"));
        }
    }
    if cluster.ufs_size.is_some() {
        not_applicable
            .push("cluster.ufs_size: not applicable on a real cluster: the volume holds what it holds".to_string());
    }
    (options, not_applicable)
}

/// The agent's spec of a Node a step applies: its labels, taints and capacity (default: the
/// simulator's default node).
pub fn joining_node(name: &str, manifest: &Value) -> NodeSpec {
    let strings = |pointer: &str| -> BTreeMap<String, String> {
        manifest.pointer(pointer).and_then(|v| serde_json::from_value(v.clone()).ok()).unwrap_or_default()
    };
    let mut capacity = default_capacity();
    capacity.extend(strings("/status/capacity"));
    let taints =
        manifest.pointer("/spec/taints").and_then(|v| serde_json::from_value(v.clone()).ok()).unwrap_or_default();
    NodeSpec { name: name.to_string(), capacity, labels: strings("/metadata/labels"), taints }
}

fn capacity_of(capacity: &Capacity) -> BTreeMap<String, String> {
    let mut out = default_capacity();
    if let Some(pods) = capacity.pods {
        out.insert("pods".into(), pods.to_string());
    }
    if let Some(cpu) = &capacity.cpu {
        out.insert("cpu".into(), cpu.clone());
    }
    if let Some(memory) = &capacity.memory {
        out.insert("memory".into(), memory.clone());
    }
    out
}

/// The JuiceFS file systems (sqlite3 metadata, a file bucket) that stand in for the scenario's
/// `juicefs://` mounts: one per mount name, since JuiceFS takes the mount's name for the volume's.
pub struct Volumes {
    /// Mount name → `sqlite3://…/meta.db`.
    meta_urls: BTreeMap<String, String>,
    /// Mount name → the bucket directory, with its trailing slash.
    buckets: BTreeMap<String, String>,
}

impl Volumes {
    /// Formats a volume under `dir` for each mount name of `mounts` (name → sub-directories)
    /// and creates the sub-directories through a scratch mount.
    pub fn create(juicefs: &Path, dir: &Path, mounts: &BTreeMap<String, Vec<String>>) -> Result<Self> {
        let mut volumes = Self { meta_urls: BTreeMap::new(), buckets: BTreeMap::new() };
        for (name, subdirs) in mounts {
            let home = dir.join(name);
            std::fs::create_dir_all(&home).map_err(|e| Error::io("create", &home, e))?;
            let meta_url = format!("sqlite3://{}", home.join("meta.db").display());
            let bucket = format!("{}/", home.join("bucket").display());
            let run = |args: &[&str]| -> Result<()> {
                let command = || format!("juicefs {}", args.join(" "));
                let out = std::process::Command::new(juicefs)
                    .args(args)
                    .output()
                    .map_err(|e| Error::Command { command: command(), detail: e.to_string() })?;
                if out.status.success() {
                    Ok(())
                } else {
                    let detail = String::from_utf8_lossy(&out.stderr).trim().to_string();
                    Err(Error::Command { command: command(), detail })
                }
            };
            run(&["format", "--storage", "file", "--bucket", &bucket, &meta_url, name])?;
            let scratch: PathBuf = home.join("scratch");
            std::fs::create_dir_all(&scratch).map_err(|e| Error::io("create", &scratch, e))?;
            let mount = scratch.display().to_string();
            run(&["mount", "-d", "--no-usage-report", &meta_url, &mount])?;
            let made = subdirs.iter().try_for_each(|sub| std::fs::create_dir_all(scratch.join(sub)));
            let _ = run(&["umount", &mount]);
            made.map_err(|e| Error::io("create a sub-directory through", &scratch, e))?;
            volumes.meta_urls.insert(name.clone(), meta_url);
            volumes.buckets.insert(name.clone(), bucket);
        }
        Ok(volumes)
    }

    fn secret_name(mount: &str) -> String {
        format!("{SECRET_PREFIX}{mount}")
    }

    /// The Secrets with the metaurls of `dataset`'s `juicefs://` mounts, in its namespace.
    pub fn secrets_for(&self, namespace: &str, dataset: &Value) -> Vec<Value> {
        let mounts = dataset.pointer("/spec/mounts").and_then(Value::as_array).into_iter().flatten();
        let names: Vec<&str> = mounts.filter_map(|m| m.get("name").and_then(Value::as_str)).collect();
        self.meta_urls
            .iter()
            .filter(|(mount, _)| names.contains(&mount.as_str()))
            .map(|(mount, meta_url)| {
                json!({
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": Self::secret_name(mount), "namespace": namespace},
                    "stringData": {"metaurl": meta_url},
                })
            })
            .collect()
    }

    /// Points each `juicefs://` mount of a Dataset (JSON) at its volume: `storage`, `bucket` and
    /// the metaurl from its Secret. Nothing else of the user's spec changes.
    pub fn point_dataset(&self, dataset: &mut Value) {
        let Some(mounts) = dataset.pointer_mut("/spec/mounts").and_then(Value::as_array_mut) else { return };
        for mount in mounts {
            let juicefs = mount.get("mountPoint").and_then(Value::as_str).is_some_and(|p| p.starts_with("juicefs://"));
            let name = mount.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
            let Some(bucket) = self.buckets.get(&name).filter(|_| juicefs) else { continue };
            let Some(fields) = mount.as_object_mut() else { continue };
            let options = fields.entry("options").or_insert_with(|| json!({}));
            if let Some(options) = options.as_object_mut() {
                options.insert("storage".into(), json!("file"));
                options.insert("bucket".into(), json!(bucket));
            }
            fields.insert(
                "encryptOptions".into(),
                json!([{"name": "metaurl", "valueFrom": {"secretKeyRef": {"name": Self::secret_name(&name), "key": "metaurl"}}}]),
            );
        }
    }
}

/// The `juicefs://` mounts the scenario applies: mount name → their sub-directories.
pub fn juicefs_mounts(scenario: &Scenario) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for step in &scenario.steps {
        let sim::scenario::parse::Action::Apply(objects) = &step.action else { continue };
        for object in objects {
            let json = object.to_json();
            for mount in json.pointer("/spec/mounts").and_then(Value::as_array).into_iter().flatten() {
                let Some(path) =
                    mount.get("mountPoint").and_then(Value::as_str).and_then(|p| p.strip_prefix("juicefs://"))
                else {
                    continue;
                };
                let name = mount.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
                let subdirs = out.entry(name).or_default();
                let sub = path.trim_matches('/').to_string();
                if !sub.is_empty() && !subdirs.contains(&sub) {
                    subdirs.push(sub);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dataset_is_pointed_at_the_volume_and_keeps_the_rest_of_its_spec() {
        let volume = Volumes {
            meta_urls: [("a".to_string(), "sqlite3:///v/meta.db".to_string())].into(),
            buckets: [("a".to_string(), "/v/bucket/".to_string())].into(),
        };
        let mut dataset = json!({"spec": {"mounts": [
            {"name": "a", "mountPoint": "juicefs:///demo", "options": {"bucket": "<bucket>", "x": "y"}},
            {"name": "b", "mountPoint": "s3://elsewhere"}
        ], "placement": "Shared"}});
        volume.point_dataset(&mut dataset);
        assert_eq!(dataset.pointer("/spec/mounts/0/options/bucket"), Some(&json!("/v/bucket/")));
        assert_eq!(dataset.pointer("/spec/mounts/0/options/x"), Some(&json!("y")));
        assert_eq!(dataset.pointer("/spec/mounts/0/encryptOptions/0/name"), Some(&json!("metaurl")));
        assert_eq!(dataset.pointer("/spec/mounts/1/options"), None);
        assert_eq!(dataset.pointer("/spec/placement"), Some(&json!("Shared")));
    }
}
