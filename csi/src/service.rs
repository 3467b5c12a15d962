//! The gRPC services: a thin layer that converts CSI messages, asks `model::node`, and
//! executes the answer with [`crate::mounts`] and a [`NodeLabeler`].

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use model::node::{
    AccessMode, AccessType, Capability, DatasetRef, FuseType, PathState, PublishRecord, PublishRequest, PublishStep,
    StageRequest, UnpublishRequest, UnpublishStep, UnstageRequest, classify_fuse_path, count_volume_bind_mounts,
    describe_fuse_path, plan_publish, plan_stage, plan_unpublish, plan_unstage,
};
use model::volume::CSI_DRIVER;
use tonic::{Request, Response, Status};

use crate::apiserver::{EventSink, NodeLabeler};
use crate::error::{CsiError, Result};
use crate::locks::InFlight;
use crate::mounts;
use crate::proto;
use crate::state::{StateStore, StoredPublish};

/// The version `GetPluginInfo` reports.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Most steps a publish or unpublish takes before it gives up (each unmounts one layer).
const MAX_STEPS: usize = 64;

/// Settings of the node plugin.
#[derive(Debug, Clone)]
pub struct PluginConfig {
    /// This node's name, as `NodeGetInfo` reports it and node labels are patched on.
    pub node_id: String,
    /// Where stage records live.
    pub state_dir: std::path::PathBuf,
    /// How long a publish waits for the FUSE mount before `DEADLINE_EXCEEDED`.
    pub fuse_mount_timeout: Duration,
    /// Longest sleep between two looks at the FUSE mount (the mount watch usually wakes sooner).
    pub poll_interval: Duration,
    /// FUSE recovery cuts a mount point with more stacked mounts than this down to one first.
    pub duplicate_threshold: usize,
}

impl PluginConfig {
    /// Defaults for `node_id`: state in `state_dir`, a 30 s FUSE timeout, 50 ms polls.
    pub fn new(node_id: impl Into<String>, state_dir: impl Into<std::path::PathBuf>) -> Self {
        Self {
            node_id: node_id.into(),
            state_dir: state_dir.into(),
            fuse_mount_timeout: Duration::from_secs(30),
            poll_interval: Duration::from_millis(50),
            duplicate_threshold: model::node::DUPLICATE_MOUNT_THRESHOLD,
        }
    }
}

/// The plugin's shared state: configuration, API server access, records and in-flight guards.
pub struct Plugin<L> {
    pub(crate) config: PluginConfig,
    pub(crate) labeler: L,
    pub(crate) state: StateStore,
    volumes: InFlight,
    pub(crate) targets: InFlight,
}

impl<L: NodeLabeler + EventSink> Plugin<L> {
    /// A plugin with `config` that labels nodes and records events through `labeler`.
    pub fn new(config: PluginConfig, labeler: L) -> Arc<Self> {
        let state = StateStore::new(config.state_dir.clone());
        Arc::new(Self { config, labeler, state, volumes: InFlight::default(), targets: InFlight::default() })
    }

    /// The API server access (tests read the in-memory one).
    pub fn labeler(&self) -> &L {
        &self.labeler
    }

    /// The stage records.
    pub fn state(&self) -> &StateStore {
        &self.state
    }

    async fn stage(&self, req: StageRequest) -> Result<()> {
        let _guard =
            self.volumes.try_acquire(format!("volume {}", req.volume_id), &format!("volume {}", req.volume_id))?;
        let fluid_path = fluid_path_of(&req.volume_context);
        let fluid_state = match &fluid_path {
            Some(path) => mounts::observe_all([Path::new(path)]).await?[0],
            None => PathState::Absent,
        };
        let plan = plan_stage(&req, fluid_state)?;
        if let Some(broken) = &plan.unmount_broken_fluid_path {
            // Fluid #1345: a dead FUSE mount keeps the restarted FUSE pod from mounting again.
            match mounts::unmount(Path::new(broken), true).await {
                Ok(()) => {
                    tracing::info!(volume_id = %req.volume_id, path = %broken, "unmounted broken FUSE mount point")
                }
                Err(err) => {
                    tracing::warn!(volume_id = %req.volume_id, %err, "could not unmount broken FUSE mount point")
                }
            }
        }
        self.state.save(&plan.record).await?;
        self.labeler.set_label(&self.config.node_id, &plan.label.key, &plan.label.value).await?;
        tracing::info!(volume_id = %req.volume_id, label = %plan.label.key, node = %self.config.node_id, "staged");
        Ok(())
    }

    async fn unstage(&self, req: UnstageRequest) -> Result<()> {
        let _guard =
            self.volumes.try_acquire(format!("volume {}", req.volume_id), &format!("volume {}", req.volume_id))?;
        let record = if req.volume_id.trim().is_empty() { None } else { self.state.load(&req.volume_id).await? };
        let remaining = match &record {
            Some(record) => {
                let table = mounts::read_mountinfo().await?;
                let fluid = mounts::mount_path(Path::new(&record.fluid_path));
                count_volume_bind_mounts(&table, &req.volume_id, &fluid.to_string_lossy())
            }
            None => 0,
        };
        let plan = plan_unstage(&req, record.as_ref(), remaining)?;
        if let Some(key) = &plan.remove_label {
            self.labeler.remove_label(&self.config.node_id, key).await?;
        }
        if plan.forget_record {
            self.state.remove(&req.volume_id).await?;
        }
        tracing::info!(volume_id = %req.volume_id, removed_label = ?plan.remove_label, "unstaged");
        Ok(())
    }

    async fn publish(&self, req: PublishRequest) -> Result<()> {
        let _guard = self.targets.try_acquire_target(&req.target_path)?;
        let started = Instant::now();
        let deadline = started + self.config.fuse_mount_timeout;
        // Opened before the first look, so a mount that appears in between still wakes us.
        let watch = mounts::MountWatch::open()?;
        let fluid_path = fluid_path_of(&req.volume_context).unwrap_or_default();
        let mount_type = req.volume_context.get(model::volume::ATTR_MOUNT_TYPE).cloned();
        let fuse_type = FuseType::of(mount_type.as_deref());
        let target = Path::new(&req.target_path);
        let mut found = String::from("nothing looked at yet");
        for _ in 0..MAX_STEPS {
            let [fuse, target_state] = if fluid_path.is_empty() || !target.is_absolute() {
                // The plan refuses these before it looks at the states.
                [PathState::Absent, PathState::Absent]
            } else {
                let table = mounts::read_mountinfo().await?;
                let fluid = Path::new(&fluid_path);
                let listed = mounts::mount_path(fluid).to_string_lossy().into_owned();
                let fuse = classify_fuse_path(&table, &listed, mounts::probe(fluid).await, &fuse_type);
                found = describe_fuse_path(&table, &listed, &fuse_type);
                [fuse, mounts::observe(&table, target).await]
            };
            match plan_publish(&req, fuse, target_state)? {
                PublishStep::AlreadyPublished => return Ok(()),
                PublishStep::UnmountBrokenTarget { target } => mounts::unmount(Path::new(&target), true).await?,
                PublishStep::RemountReadOnly { target } => return mounts::remount_read_only(Path::new(&target)).await,
                PublishStep::BindMount(plan) => {
                    mounts::bind_mount(&plan, Path::new(&fluid_path)).await?;
                    let record = StoredPublish {
                        record: PublishRecord {
                            volume_id: req.volume_id.clone(),
                            fluid_path: fluid_path.clone(),
                            bind: plan.clone(),
                        },
                        dataset: DatasetRef::from_volume_context(&req.volume_context),
                        mount_type: mount_type.clone(),
                    };
                    if let Err(err) = self.state.save_publish(&record).await {
                        // The bind is made and the pod may start; only recovery of it is lost.
                        tracing::warn!(volume_id = %req.volume_id, %err, "published, but FUSE recovery will not know this target");
                    }
                    tracing::info!(volume_id = %req.volume_id, source = %plan.source, target = %plan.target,
                        read_only = plan.read_only, waited_ms = started.elapsed().as_millis() as u64, "published");
                    return Ok(());
                }
                PublishStep::WaitForFuse { fluid_path } => {
                    let now = Instant::now();
                    if now >= deadline {
                        return Err(CsiError::FuseMountTimeout {
                            path: fluid_path,
                            waited_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                            found,
                        });
                    }
                    watch.wait(self.config.poll_interval.min(deadline - now)).await;
                    continue;
                }
            }
        }
        Err(CsiError::Internal(format!("publish of {} did not converge in {MAX_STEPS} steps", req.target_path)))
    }

    async fn unpublish(&self, req: UnpublishRequest) -> Result<()> {
        let _guard = self.targets.try_acquire_target(&req.target_path)?;
        let target = Path::new(&req.target_path);
        for _ in 0..MAX_STEPS {
            let [state] = if target.is_absolute() { mounts::observe_all([target]).await? } else { [PathState::Absent] };
            match plan_unpublish(&req, state)? {
                UnpublishStep::Done => {
                    // Under the target lock, after the unmount: recovery never re-binds it.
                    self.state.remove_publish(&req.target_path).await?;
                    tracing::info!(volume_id = %req.volume_id, target = %req.target_path, "unpublished");
                    return Ok(());
                }
                UnpublishStep::Unmount { target, broken } => mounts::unmount(Path::new(&target), broken).await?,
                UnpublishStep::RemoveTarget { target } => mounts::remove_target(Path::new(&target)).await?,
            }
        }
        Err(CsiError::Internal(format!("unpublish of {} did not converge in {MAX_STEPS} steps", req.target_path)))
    }
}

fn fluid_path_of(ctx: &BTreeMap<String, String>) -> Option<String> {
    ctx.get(model::volume::ATTR_FLUID_PATH).filter(|p| p.starts_with('/')).cloned()
}

fn capability(cap: Option<proto::VolumeCapability>) -> Option<Capability> {
    use proto::volume_capability::AccessType as Proto;
    cap.map(|cap| Capability {
        access_type: match cap.access_type {
            Some(Proto::Mount(mount)) => AccessType::Mount { mount_flags: mount.mount_flags },
            Some(Proto::Block(_)) => AccessType::Block,
            None => AccessType::Unset,
        },
        access_mode: cap.access_mode.map(|mode| AccessMode::from_csi(mode.mode)),
    })
}

/// The Identity service.
pub struct IdentityService<L> {
    plugin: Arc<Plugin<L>>,
}

/// The Node service.
pub struct NodeService<L> {
    plugin: Arc<Plugin<L>>,
}

impl<L: NodeLabeler + EventSink> IdentityService<L> {
    /// The Identity service of `plugin`.
    pub fn new(plugin: Arc<Plugin<L>>) -> Self {
        Self { plugin }
    }
}

impl<L: NodeLabeler + EventSink> NodeService<L> {
    /// The Node service of `plugin`.
    pub fn new(plugin: Arc<Plugin<L>>) -> Self {
        Self { plugin }
    }
}

#[tonic::async_trait]
impl<L: NodeLabeler + EventSink> proto::identity_server::Identity for IdentityService<L> {
    /// `GetPluginInfo`: `name` and `vendor_version` are REQUIRED; the name MUST follow domain
    /// name notation and is `fuse.csi.fluid.io`, the driver Fluid's PVs name. Needs no API server.
    async fn get_plugin_info(
        &self,
        _request: Request<proto::GetPluginInfoRequest>,
    ) -> Result<Response<proto::GetPluginInfoResponse>, Status> {
        Ok(Response::new(proto::GetPluginInfoResponse {
            name: CSI_DRIVER.to_string(),
            vendor_version: VERSION.to_string(),
            manifest: BTreeMap::from([("implementation".to_string(), "ferrofluid".to_string())]),
        }))
    }

    /// `GetPluginCapabilities`: CONTROLLER_SERVICE, because the plugin serves the Controller
    /// RPCs the specification requires of a controller (see [`crate::controller`]); no
    /// VOLUME_ACCESSIBILITY_CONSTRAINTS, as a FUSE dataset is reachable from every node.
    async fn get_plugin_capabilities(
        &self,
        _request: Request<proto::GetPluginCapabilitiesRequest>,
    ) -> Result<Response<proto::GetPluginCapabilitiesResponse>, Status> {
        use proto::plugin_capability::{Service, Type, service};
        Ok(Response::new(proto::GetPluginCapabilitiesResponse {
            capabilities: vec![proto::PluginCapability {
                r#type: Some(Type::Service(Service { r#type: service::Type::ControllerService as i32 })),
            }],
        }))
    }

    /// `Probe`: the plugin is healthy and ready once it serves (`ready` set, the OPTIONAL field
    /// the specification recommends); a node id is all it needs, not an API server.
    async fn probe(&self, _request: Request<proto::ProbeRequest>) -> Result<Response<proto::ProbeResponse>, Status> {
        Ok(Response::new(proto::ProbeResponse { ready: Some(!self.plugin.config.node_id.is_empty()) }))
    }
}

#[tonic::async_trait]
impl<L: NodeLabeler + EventSink> proto::node_server::Node for NodeService<L> {
    /// `NodeStageVolume`: MUST be idempotent (staging again with the same arguments is OK); a
    /// missing `volume_id`, `staging_target_path` or `volume_capability` is `INVALID_ARGUMENT`;
    /// a capability the volume cannot offer (block access) is `FAILED_PRECONDITION`; a second
    /// call for the same volume while one is in flight is `ABORTED`. Stage unmounts a broken
    /// `fluid_path`, records what unstage needs and labels the node; it does not wait for the
    /// FUSE mount. Labelling needs the API server: without a client configuration the call is
    /// `UNAVAILABLE` (the CO retries), naming what is missing.
    async fn node_stage_volume(
        &self,
        request: Request<proto::NodeStageVolumeRequest>,
    ) -> Result<Response<proto::NodeStageVolumeResponse>, Status> {
        let req = request.into_inner();
        let req = StageRequest {
            volume_id: req.volume_id,
            staging_target_path: req.staging_target_path,
            capability: capability(req.volume_capability),
            volume_context: req.volume_context,
        };
        self.plugin.stage(req).await?;
        Ok(Response::new(proto::NodeStageVolumeResponse {}))
    }

    /// `NodeUnstageVolume`: MUST be idempotent (a volume that is not staged is OK); missing
    /// `volume_id` or `staging_target_path` is `INVALID_ARGUMENT`. Applies the clean policy
    /// stage recorded: `OnDemand` removes the node label once no mount of the volume remains
    /// (`FAILED_PRECONDITION` while some do), `OnRuntimeDeleted` keeps it.
    async fn node_unstage_volume(
        &self,
        request: Request<proto::NodeUnstageVolumeRequest>,
    ) -> Result<Response<proto::NodeUnstageVolumeResponse>, Status> {
        let req = request.into_inner();
        let req = UnstageRequest { volume_id: req.volume_id, staging_target_path: req.staging_target_path };
        self.plugin.unstage(req).await?;
        Ok(Response::new(proto::NodeUnstageVolumeResponse {}))
    }

    /// `NodePublishVolume`: MUST be idempotent (an already published target is OK); missing
    /// `volume_id`, `target_path` or `volume_capability` is `INVALID_ARGUMENT`; a missing
    /// `staging_target_path` when the plugin has STAGE_UNSTAGE_VOLUME is `FAILED_PRECONDITION`;
    /// a target already published incompatibly is `ALREADY_EXISTS`; a concurrent call for the
    /// same target is `ABORTED`. Waits (bounded) for a FUSE mount of the PV's `mount_type` at
    /// `fluid_path` (a tmpfs or a plain bind there does not count), `DEADLINE_EXCEEDED` naming
    /// the path and what was found there when it does not come, then bind-mounts it, read-only
    /// when asked. Needs no API server.
    async fn node_publish_volume(
        &self,
        request: Request<proto::NodePublishVolumeRequest>,
    ) -> Result<Response<proto::NodePublishVolumeResponse>, Status> {
        let req = request.into_inner();
        let req = PublishRequest {
            volume_id: req.volume_id,
            staging_target_path: req.staging_target_path,
            target_path: req.target_path,
            capability: capability(req.volume_capability),
            readonly: req.readonly,
            volume_context: req.volume_context,
        };
        self.plugin.publish(req).await?;
        Ok(Response::new(proto::NodePublishVolumeResponse {}))
    }

    /// `NodeUnpublishVolume`: MUST be idempotent (a target that is gone is OK); missing
    /// `volume_id` or `target_path` is `INVALID_ARGUMENT`. The SP MUST delete the file or
    /// directory it created at the target: every layer is unmounted, broken (ENOTCONN) ones
    /// included, then the target is removed, so nothing is left behind.
    async fn node_unpublish_volume(
        &self,
        request: Request<proto::NodeUnpublishVolumeRequest>,
    ) -> Result<Response<proto::NodeUnpublishVolumeResponse>, Status> {
        let req = request.into_inner();
        self.plugin.unpublish(UnpublishRequest { volume_id: req.volume_id, target_path: req.target_path }).await?;
        Ok(Response::new(proto::NodeUnpublishVolumeResponse {}))
    }

    /// `NodeGetVolumeStats`: `volume_id` and `volume_path` are REQUIRED, so an empty one is
    /// `INVALID_ARGUMENT`. "Volume does not exist" is `NOT_FOUND`: the specification's code for
    /// a volume that does not exist on the specified `volume_path`. The path MUST be absolute in
    /// the plugin's root filesystem, so no volume exists at a relative path such as `some/path`:
    /// that is `NOT_FOUND` too (existence is decided before the form of the path, as
    /// csi-sanity's "volume does not exist on the specified path" expects), as is an absolute
    /// path that is not there. A broken FUSE mount is reported as an abnormal volume condition
    /// rather than an error, as VOLUME_CONDITION allows. Needs no API server.
    async fn node_get_volume_stats(
        &self,
        request: Request<proto::NodeGetVolumeStatsRequest>,
    ) -> Result<Response<proto::NodeGetVolumeStatsResponse>, Status> {
        let req = request.into_inner();
        if req.volume_id.trim().is_empty() {
            return Err(CsiError::from(model::node::Refusal::missing("volume_id")).into());
        }
        if req.volume_path.trim().is_empty() {
            return Err(CsiError::from(model::node::Refusal::missing("volume_path")).into());
        }
        if !req.volume_path.starts_with('/') {
            return Err(CsiError::NotFound(format!(
                "volume {} does not exist at {:?}: volume_path must be an absolute path of the plugin's root filesystem",
                req.volume_id, req.volume_path
            ))
            .into());
        }
        let path = Path::new(&req.volume_path);
        let response = match mounts::usage(path).await {
            Ok((bytes, inodes)) => {
                use proto::volume_usage::Unit;
                let usage = |[total, available, used]: [u64; 3], unit: Unit| proto::VolumeUsage {
                    total: i64::try_from(total).unwrap_or(i64::MAX),
                    available: i64::try_from(available).unwrap_or(i64::MAX),
                    used: i64::try_from(used).unwrap_or(i64::MAX),
                    unit: unit as i32,
                };
                proto::NodeGetVolumeStatsResponse {
                    usage: vec![usage(bytes, Unit::Bytes), usage(inodes, Unit::Inodes)],
                    volume_condition: Some(proto::VolumeCondition { abnormal: false, message: "healthy".into() }),
                }
            }
            Err(nix::errno::Errno::ENOENT) => {
                return Err(CsiError::NotFound(format!(
                    "volume {} does not exist at {}: no such path",
                    req.volume_id, req.volume_path
                ))
                .into());
            }
            Err(errno) => proto::NodeGetVolumeStatsResponse {
                usage: Vec::new(),
                volume_condition: Some(proto::VolumeCondition {
                    abnormal: true,
                    message: format!("{}: {errno}; the FUSE daemon may have stopped", req.volume_path),
                }),
            },
        };
        Ok(Response::new(response))
    }

    /// `NodeGetCapabilities`: STAGE_UNSTAGE_VOLUME (stage labels the node), GET_VOLUME_STATS
    /// and VOLUME_CONDITION. Needs no API server.
    async fn node_get_capabilities(
        &self,
        _request: Request<proto::NodeGetCapabilitiesRequest>,
    ) -> Result<Response<proto::NodeGetCapabilitiesResponse>, Status> {
        use proto::node_service_capability::{Rpc, Type, rpc};
        let capability =
            |t: rpc::Type| proto::NodeServiceCapability { r#type: Some(Type::Rpc(Rpc { r#type: t as i32 })) };
        Ok(Response::new(proto::NodeGetCapabilitiesResponse {
            capabilities: vec![
                capability(rpc::Type::StageUnstageVolume),
                capability(rpc::Type::GetVolumeStats),
                capability(rpc::Type::VolumeCondition),
            ],
        }))
    }

    /// `NodeGetInfo`: `node_id` is REQUIRED; it is the Kubernetes node name, which stage
    /// labels. `max_volumes_per_node` 0 means no limit. No topology: a FUSE dataset is reachable
    /// from every node. Needs no API server.
    async fn node_get_info(
        &self,
        _request: Request<proto::NodeGetInfoRequest>,
    ) -> Result<Response<proto::NodeGetInfoResponse>, Status> {
        Ok(Response::new(proto::NodeGetInfoResponse {
            node_id: self.plugin.config.node_id.clone(),
            max_volumes_per_node: 0,
            accessible_topology: None,
        }))
    }
}
