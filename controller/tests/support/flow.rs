//! The seed flow driven through the real reconcile path against the fake API server, playing the
//! StatefulSet controller, the kubelet and the CSI plugin just enough to close the loop.

use k8s_openapi::api::core::v1::Pod;
use model::effect::{Decision, Effect};
use model::time::Millis;
use serde_json::{Value, json};

use controller::context::Reconciler;
use controller::triggers::PairKey;

use super::apiserver::FakeApiServer;
use super::fixtures::{NAME, NS, mk_node, mk_pod};
use super::{Captured, Harness};

/// The virtual start time of the flow.
pub const T0: Millis = Millis(1_700_000_000_000);

/// One flow: harness, fake server and a virtual clock.
pub struct Flow {
    /// The context and stores.
    pub harness: Harness,
    /// The fake API server.
    pub server: FakeApiServer,
    /// Virtual time passed to the model.
    pub now: Millis,
}

impl Flow {
    /// A cluster of three nodes and nothing else.
    pub fn new() -> Flow {
        let (harness, handle) = Harness::new();
        let server = FakeApiServer::spawn(handle);
        for name in ["node-a", "node-b", "node-c"] {
            server.create(&mk_node(name, &[("kubernetes.io/hostname", name)]));
        }
        Flow { harness, server, now: T0 }
    }

    /// The seed pair applied and settled with its one worker running: the dataset is Bound.
    pub async fn seed_with_a_ready_worker() -> Flow {
        let mut flow = Flow::new();
        flow.server.create(&super::fixtures::seed_dataset());
        flow.server.create(&super::fixtures::seed_runtime());
        flow.settle().await;
        flow.workers_run(1);
        flow.settle().await;
        flow
    }

    /// The seed pair's key.
    pub fn key() -> PairKey {
        PairKey::new(NS, NAME)
    }

    /// Relists every store from the server, as the watchers would.
    pub fn sync(&mut self) {
        self.server.sync(&mut self.harness.writers);
    }

    /// One reconcile of `reconciler`: decide from the stores, execute, resync. Returns the decision.
    pub async fn step(&mut self, reconciler: Reconciler) -> Decision {
        self.sync();
        let (observed, decision) = self.harness.context.decide(reconciler, &Self::key(), self.now);
        self.harness
            .context
            .executor
            .execute(&decision.effects, &observed)
            .await
            .unwrap_or_else(|e| panic!("{reconciler:?} at {:?}: {e}", self.now));
        self.sync();
        decision
    }

    /// Reconciles dataset then runtime until neither writes; returns every effect executed.
    pub async fn settle(&mut self) -> Vec<Effect> {
        let mut seen = Vec::new();
        for _ in 0..20 {
            let dataset = self.step(Reconciler::Dataset).await;
            let runtime = self.step(Reconciler::Runtime).await;
            let quiet = dataset.writes().next().is_none() && runtime.writes().next().is_none();
            seen.extend(dataset.effects);
            seen.extend(runtime.effects);
            self.now = Millis(self.now.0 + 1_000);
            if quiet {
                return seen;
            }
        }
        panic!("the seed flow did not settle in 20 rounds");
    }

    /// Plays the StatefulSet controller and kubelet: `ready` workers run, on nodes in order.
    pub fn workers_run(&mut self, ready: usize) {
        let sts = self.server.list("statefulsets").into_iter().next().expect("the worker StatefulSet exists");
        let name = sts["metadata"]["name"].as_str().expect("name").to_string();
        let desired = sts["spec"]["replicas"].as_u64().unwrap_or(0) as usize;
        let labels = sts["spec"]["template"]["metadata"]["labels"].clone();
        for ordinal in 0..ready {
            let node = ["node-a", "node-b", "node-c"][ordinal % 3];
            let mut pod: Value =
                serde_json::to_value(mk_pod(&format!("{name}-{ordinal}"), node, None, "Running")).expect("pod");
            pod["metadata"]["labels"] = labels.clone();
            pod["metadata"]["ownerReferences"] = json!([{
                "apiVersion": "apps/v1", "kind": "StatefulSet", "name": name,
                "uid": sts["metadata"]["uid"], "controller": true,
            }]);
            let pod: Pod = serde_json::from_value(pod).expect("pod");
            self.server.create(&pod);
        }
        self.server.update(("statefulsets", NS, &name), |sts| {
            sts["status"] = json!({
                "replicas": desired, "readyReplicas": ready, "currentReplicas": desired,
                "availableReplicas": ready, "updatedReplicas": desired,
            });
        });
    }

    /// Plays the PV controller: a PVC whose PV exists is Bound.
    pub fn bind_claims(&mut self) {
        for claim in self.server.list("persistentvolumeclaims") {
            let name = claim["metadata"]["name"].as_str().expect("name").to_string();
            let namespace = claim["metadata"]["namespace"].as_str().expect("namespace").to_string();
            let volume = claim["spec"]["volumeName"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| format!("{namespace}-{name}"));
            if self.server.get(("persistentvolumes", "", &volume)).is_some() {
                self.server.update(("persistentvolumes", "", &volume), |pv| pv["status"] = json!({"phase": "Bound"}));
                self.server.update(("persistentvolumeclaims", &namespace, &name), |pvc| {
                    pvc["status"] = json!({"phase": "Bound"})
                });
            }
        }
    }

    /// Plays the user, the CSI plugin's NodeStage and the DaemonSet controller: the app pod runs on
    /// `node`, which gets the FUSE label, and the FUSE DaemonSet schedules one pod, not yet ready.
    pub fn app_pod_runs(&mut self, node: &str) {
        let mut pod = super::fixtures::seed_app_pod();
        pod.metadata.namespace = Some(NS.to_string());
        let spec = pod.spec.get_or_insert_with(Default::default);
        spec.node_name = Some(node.to_string());
        pod.status = mk_pod("x", node, None, "Running").status;
        self.server.create(&pod);
        let fuse_label = format!("fluid.io/f-{NS}-{NAME}");
        self.server.update(("nodes", "", node), |n| n["metadata"]["labels"][fuse_label.as_str()] = json!("true"));
        self.fuse_pods(0);
    }

    /// Plays the DaemonSet controller and kubelet: one FUSE pod scheduled, `ready` of it ready.
    pub fn fuse_pods(&mut self, ready: u32) {
        let ds = self.server.list("daemonsets").into_iter().next().expect("the FUSE DaemonSet exists");
        let name = ds["metadata"]["name"].as_str().expect("name").to_string();
        self.server.update(("daemonsets", NS, &name), |ds| {
            ds["status"] = json!({
                "desiredNumberScheduled": 1, "currentNumberScheduled": 1, "numberReady": ready,
                "numberAvailable": ready, "numberMisscheduled": 0, "updatedNumberScheduled": 1,
            });
        });
    }

    /// The requests since the last call, as stable text: events' time-derived names and times are redacted.
    pub fn transcript(&mut self) -> String {
        render(&self.server.take_transcript())
    }
}

/// Renders requests one per block: line, content type, body.
pub fn render(requests: &[Captured]) -> String {
    let mut out = String::new();
    for request in requests {
        let mut request = request.clone();
        if request.path.contains("/events") {
            if let Some((prefix, _)) = request.path.split_once("/events/") {
                request.path = format!("{prefix}/events/<name>");
            }
            for field in ["eventTime", "series"] {
                if request.body.get(field).is_some() {
                    request.body[field] = json!("<redacted>");
                }
            }
            if request.body["metadata"].get("name").is_some() {
                request.body["metadata"]["name"] = json!("<redacted>");
            }
            if request.body["metadata"].get("resourceVersion").is_some() {
                request.body["metadata"]["resourceVersion"] = json!("<redacted>");
            }
        }
        out.push_str(&request.line());
        if let Some(content_type) = &request.content_type {
            out.push_str(&format!("  [{content_type}]"));
        }
        out.push('\n');
        if !request.body.is_null() {
            out.push_str(&serde_json::to_string_pretty(&request.body).expect("JSON"));
            out.push('\n');
        }
        out.push('\n');
    }
    out
}
