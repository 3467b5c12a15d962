//! The plugin's only contact with the Kubernetes API: node labels and Dataset events, behind two traits with a kube implementation and an in-memory one.
//!
//! Every API call the plugin makes is listed in [`API_CALLS`]; `deploy/csi/rbac.yaml` grants
//! exactly those, and `tests/rbac.rs` fails when the grants, the table or the calls in this file
//! drift apart. All `kube::Api` use lives in this file, so that check can see it.
//!
//! The plugin starts without any client configuration: Identity and the Node RPCs that need no
//! API keep working, and a call that needs one (NodeStageVolume labels the node) fails with
//! `UNAVAILABLE`, naming what is missing ([`CsiError::NoApiserver`]). The client is built on the
//! first call that needs it, and again on each later call until one succeeds.

use std::future::Future;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, ObjectReference};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, Patch, PatchParams, PostParams};
use model::node::{DatasetRef, RecoverEvent};
use tokio::sync::OnceCell;

use crate::error::{CsiError, Result};

/// One kind of API request the plugin makes, as RBAC names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ApiCall {
    /// The API group (`""` for the core group).
    pub group: &'static str,
    /// The resource.
    pub resource: &'static str,
    /// The RBAC verb.
    pub verb: &'static str,
    /// Which code makes it, and why.
    pub why: &'static str,
}

/// Every API request the plugin makes. `deploy/csi/rbac.yaml` grants exactly these.
pub const API_CALLS: &[ApiCall] = &[
    ApiCall {
        group: "",
        resource: "nodes",
        verb: "patch",
        why: "NodeStageVolume sets the FUSE label on its node, NodeUnstageVolume (OnDemand) removes it",
    },
    ApiCall {
        group: "events.k8s.io",
        resource: "events",
        verb: "create",
        why: "FUSE recovery records FuseRecoverSucceed, FuseRecoverFailed and UnmountDuplicateMountpoint on the Dataset",
    },
];

/// The component name events carry (`reportingController`).
pub const REPORTING_CONTROLLER: &str = "fuse.csi.fluid.io";

/// Sets and removes one label on a node, touching no other label.
pub trait NodeLabeler: Send + Sync + 'static {
    /// Sets `key=value` on node `node`. Idempotent.
    fn set_label(&self, node: &str, key: &str, value: &str) -> impl Future<Output = Result<()>> + Send;
    /// Removes `key` from node `node`. Idempotent: a missing key is success.
    fn remove_label(&self, node: &str, key: &str) -> impl Future<Output = Result<()>> + Send;
}

/// Records events on a Dataset. Best effort: the caller logs a failure and goes on.
pub trait EventSink: Send + Sync + 'static {
    /// Records `event` on `dataset`, reported by node `node`.
    fn record(&self, node: &str, dataset: &DatasetRef, event: &RecoverEvent)
    -> impl Future<Output = Result<()>> + Send;
}

/// The API server through kube: node labels by JSON merge patch naming only our key (`null`
/// deletes it, so concurrent writers of other labels are never overwritten), events by
/// `events.k8s.io/v1` create. The client is made lazily (see the module documentation).
#[derive(Clone, Default)]
pub struct KubeApi {
    client: Arc<OnceCell<kube::Client>>,
}

impl KubeApi {
    /// An API whose client is inferred (in-cluster config, else kubeconfig) on first use.
    pub fn new() -> Self {
        Self::default()
    }

    /// An API using `client` (tests hand in one over a mock service).
    pub fn with_client(client: kube::Client) -> Self {
        Self { client: Arc::new(OnceCell::new_with(Some(client))) }
    }

    /// The client, inferred now if no call made one yet.
    pub async fn client(&self) -> Result<kube::Client> {
        self.client
            .get_or_try_init(|| async {
                let config = kube::Config::infer().await.map_err(|err| {
                    CsiError::NoApiserver(format!(
                        "no in-cluster config (KUBERNETES_SERVICE_HOST and the service account token) and no \
                         kubeconfig (KUBECONFIG or ~/.kube/config): {err}"
                    ))
                })?;
                kube::Client::try_from(config).map_err(|err| {
                    CsiError::NoApiserver(format!("cannot build a client from the Kubernetes config: {err}"))
                })
            })
            .await
            .cloned()
    }

    async fn patch_label(&self, node: &str, key: &str, value: Option<&str>) -> Result<()> {
        let nodes: Api<Node> = Api::all(self.client().await?);
        let patch = serde_json::json!({ "metadata": { "labels": { key: value } } });
        nodes.patch(node, &PatchParams::default(), &Patch::Merge(&patch)).await.map(|_| ()).map_err(|source| {
            CsiError::Kube { what: format!("patching labels of node {node}"), source: Box::new(source) }
        })
    }
}

impl NodeLabeler for KubeApi {
    async fn set_label(&self, node: &str, key: &str, value: &str) -> Result<()> {
        self.patch_label(node, key, Some(value)).await
    }

    async fn remove_label(&self, node: &str, key: &str) -> Result<()> {
        self.patch_label(node, key, None).await
    }
}

impl EventSink for KubeApi {
    async fn record(&self, node: &str, dataset: &DatasetRef, event: &RecoverEvent) -> Result<()> {
        let events: Api<Event> = Api::namespaced(self.client().await?, &dataset.namespace);
        let body = Event {
            metadata: ObjectMeta {
                generate_name: Some(format!("{}.", dataset.name)),
                namespace: Some(dataset.namespace.clone()),
                ..ObjectMeta::default()
            },
            event_time: Some(MicroTime(k8s_openapi::jiff::Timestamp::now())),
            action: Some(event.action.to_string()),
            reason: Some(event.reason.to_string()),
            note: Some(event.note.clone()),
            type_: Some(event.event_type.as_str().to_string()),
            regarding: Some(ObjectReference {
                api_version: Some("data.fluid.io/v1alpha1".to_string()),
                kind: Some("Dataset".to_string()),
                namespace: Some(dataset.namespace.clone()),
                name: Some(dataset.name.clone()),
                ..ObjectReference::default()
            }),
            reporting_controller: Some(REPORTING_CONTROLLER.to_string()),
            reporting_instance: Some(format!("{REPORTING_CONTROLLER}-{node}")),
            ..Event::default()
        };
        events.create(&PostParams::default(), &body).await.map(|_| ()).map_err(|source| CsiError::Kube {
            what: format!("recording event {} on dataset {dataset}", event.reason),
            source: Box::new(source),
        })
    }
}
