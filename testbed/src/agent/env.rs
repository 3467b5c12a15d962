//! A container's environment as kubelet builds it: the `kubernetes` Service variables, then the
//! container's `envFrom` and `env` in order (values, the downward API, Secret and ConfigMap
//! keys), with `$(VAR)` references expanded; and its command expanded the same way.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};

use super::podnet::{SERVICE_PORT, SERVICE_VIP};
use crate::error::{Error, Result};

/// Secret and ConfigMap data a pod's containers read, by (name, key).
#[derive(Debug, Default, Clone)]
pub struct KeyedData {
    /// Secret values.
    pub secrets: BTreeMap<String, BTreeMap<String, String>>,
    /// ConfigMap values.
    pub config_maps: BTreeMap<String, BTreeMap<String, String>>,
}

/// The names of the Secrets and ConfigMaps the pod's container environments read.
pub fn referenced_sources(pod: &Pod) -> (Vec<String>, Vec<String>) {
    let (mut secrets, mut config_maps) = (Vec::new(), Vec::new());
    let containers = pod.spec.iter().flat_map(|s| s.init_containers.iter().flatten().chain(&s.containers));
    for container in containers {
        for from in container.env_from.iter().flatten() {
            if let Some(s) = &from.secret_ref {
                secrets.push(s.name.clone());
            }
            if let Some(c) = &from.config_map_ref {
                config_maps.push(c.name.clone());
            }
        }
        for var in container.env.iter().flatten() {
            let Some(from) = &var.value_from else { continue };
            if let Some(s) = &from.secret_key_ref {
                secrets.push(s.name.clone());
            }
            if let Some(c) = &from.config_map_key_ref {
                config_maps.push(c.name.clone());
            }
        }
    }
    for list in [&mut secrets, &mut config_maps] {
        list.sort();
        list.dedup();
    }
    (secrets, config_maps)
}

/// The environment of `container` in `pod`, with `pod_ip` and `host_ip` for the downward API.
pub fn container_env(
    pod: &Pod,
    container: &Container,
    pod_ip: &str,
    host_ip: &str,
    data: &KeyedData,
) -> Result<Vec<(String, String)>> {
    let mut env: Vec<(String, String)> = vec![
        ("KUBERNETES_SERVICE_HOST".into(), SERVICE_VIP.to_string()),
        ("KUBERNETES_SERVICE_PORT".into(), SERVICE_PORT.to_string()),
        ("KUBERNETES_SERVICE_PORT_HTTPS".into(), SERVICE_PORT.to_string()),
        ("KUBERNETES_PORT".into(), format!("tcp://{SERVICE_VIP}:{SERVICE_PORT}")),
    ];
    let set = |env: &mut Vec<(String, String)>, name: String, value: String| {
        env.retain(|(n, _)| *n != name);
        env.push((name, value));
    };
    let field = |what: &str| format!("pod {} container {}: {what}", name_of(pod), container.name);
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        let (source, optional, what) = match (&from.secret_ref, &from.config_map_ref) {
            (Some(s), _) => (data.secrets.get(&s.name), s.optional.unwrap_or(false), format!("secret {:?}", s.name)),
            (None, Some(c)) => {
                (data.config_maps.get(&c.name), c.optional.unwrap_or(false), format!("configmap {:?}", c.name))
            }
            (None, None) => continue,
        };
        match source {
            Some(values) => values.iter().for_each(|(k, v)| set(&mut env, format!("{prefix}{k}"), v.clone())),
            None if optional => {}
            None => {
                return Err(Error::NotReady {
                    reason: "CreateContainerConfigError",
                    message: field(&format!("envFrom: {what} not found")),
                });
            }
        }
    }
    for var in container.env.iter().flatten() {
        let value = match (&var.value, &var.value_from) {
            (Some(value), _) => expand(value, &env),
            (None, Some(from)) => {
                if let Some(f) = &from.field_ref {
                    downward(pod, &f.field_path, pod_ip, host_ip).ok_or_else(|| {
                        Error::Config(field(&format!("env {}: unsupported fieldRef {}", var.name, f.field_path)))
                    })?
                } else if let Some(s) = &from.secret_key_ref {
                    match data.secrets.get(&s.name).and_then(|d| d.get(&s.key)) {
                        Some(value) => value.clone(),
                        None if s.optional.unwrap_or(false) => continue,
                        None => {
                            return Err(Error::NotReady {
                                reason: "CreateContainerConfigError",
                                message: field(&format!(
                                    "env {}: secret {:?} has no key {:?}",
                                    var.name, s.name, s.key
                                )),
                            });
                        }
                    }
                } else if let Some(c) = &from.config_map_key_ref {
                    match data.config_maps.get(&c.name).and_then(|d| d.get(&c.key)) {
                        Some(value) => value.clone(),
                        None if c.optional.unwrap_or(false) => continue,
                        None => {
                            return Err(Error::NotReady {
                                reason: "CreateContainerConfigError",
                                message: field(&format!(
                                    "env {}: configmap {:?} has no key {:?}",
                                    var.name, c.name, c.key
                                )),
                            });
                        }
                    }
                } else {
                    // resourceFieldRef: not modelled; an empty value, as for an unset limit.
                    String::new()
                }
            }
            (None, None) => String::new(),
        };
        set(&mut env, var.name.clone(), value);
    }
    Ok(env)
}

fn name_of(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}

/// A downward-API field of the pod.
fn downward(pod: &Pod, path: &str, pod_ip: &str, host_ip: &str) -> Option<String> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    Some(match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec.and_then(|s| s.service_account_name.clone()).unwrap_or_default(),
        "status.podIP" => pod_ip.to_string(),
        "status.hostIP" => host_ip.to_string(),
        other => {
            let key = other.strip_prefix("metadata.labels['")?.strip_suffix("']");
            if let Some(key) = key {
                return meta.labels.as_ref().and_then(|l| l.get(key)).cloned();
            }
            let key = other.strip_prefix("metadata.annotations['")?.strip_suffix("']")?;
            return meta.annotations.as_ref().and_then(|a| a.get(key)).cloned();
        }
    })
}

/// Kubernetes' `$(VAR)` expansion: a defined variable is replaced, `$$` stands for `$`, and
/// anything else is left as written.
pub fn expand(text: &str, env: &[(String, String)]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let tail = &rest[at + 1..];
        if let Some(after) = tail.strip_prefix('$') {
            out.push('$');
            rest = after;
        } else if let Some(inner) = tail.strip_prefix('(')
            && let Some(close) = inner.find(')')
            && let Some((_, value)) = env.iter().rev().find(|(name, _)| name == &inner[..close])
        {
            out.push_str(value);
            rest = &inner[close + 1..];
        } else {
            out.push('$');
            rest = tail;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expansion_follows_kubernetes() {
        let env = vec![("NODE_NAME".to_string(), "node-1".to_string())];
        assert_eq!(expand("--node-id=$(NODE_NAME)", &env), "--node-id=node-1");
        assert_eq!(expand("$$(NODE_NAME) $(MISSING) $ end", &env), "$(NODE_NAME) $(MISSING) $ end");
        assert_eq!(expand("${METAURL}", &env), "${METAURL}", "shell syntax is the shell's business");
    }

    #[test]
    fn env_resolves_the_downward_api_and_secrets() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": { "name": "p", "namespace": "ns", "uid": "u" },
            "spec": { "nodeName": "node-1", "containers": [{
                "name": "c",
                "env": [
                    { "name": "NODE_NAME", "valueFrom": { "fieldRef": { "fieldPath": "spec.nodeName" } } },
                    { "name": "ID", "value": "id-$(NODE_NAME)" },
                    { "name": "METAURL", "valueFrom": { "secretKeyRef": { "name": "s", "key": "metaurl" } } }
                ]
            }]}
        }))
        .unwrap();
        let container = pod.spec.as_ref().unwrap().containers[0].clone();
        let mut data = KeyedData::default();
        data.secrets.insert("s".into(), BTreeMap::from([("metaurl".into(), "sqlite3:///m.db".into())]));
        let env = container_env(&pod, &container, "10.244.1.2", "127.0.0.1", &data).unwrap();
        let get = |n: &str| env.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
        assert_eq!(get("ID"), Some("id-node-1"));
        assert_eq!(get("METAURL"), Some("sqlite3:///m.db"));
        assert_eq!(get("KUBERNETES_SERVICE_HOST"), Some("10.0.0.1"));
        let missing = container_env(&pod, &container, "", "", &KeyedData::default()).unwrap_err();
        assert!(missing.to_string().contains("secret \"s\" has no key \"metaurl\""), "{missing}");
        assert_eq!(referenced_sources(&pod).0, vec!["s".to_string()]);
    }
}
