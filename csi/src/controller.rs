//! The minimal Controller service: CreateVolume, DeleteVolume and ValidateVolumeCapabilities of volumes that are only a name and a volume context.
//!
//! Fluid's PVs are static: the runtime controller writes them, with the FUSE mount point and
//! the label key as volume attributes, and no external provisioner calls this service. The
//! plugin still advertises CONTROLLER_SERVICE with CREATE_DELETE_VOLUME, as Fluid's own plugin
//! does, for two reasons. The CSI specification REQUIRES ValidateVolumeCapabilities of any
//! controller, and a conformance tool (csi-sanity) creates the volumes its Node tests stage and
//! publish through CreateVolume: without it, half of the Node suite cannot run. A created volume
//! is its name (the volume id) and its parameters, which become its volume context; the
//! parameters must therefore carry what a Fluid PV's attributes carry (`fluid_path`, the label
//! key or runtime name), or NodeStageVolume refuses the volume naming the field.
//!
//! Created volumes are remembered in the state directory (`volumes/`), so that CreateVolume is
//! idempotent across plugin restarts and a second call with another capacity is refused.

use std::collections::BTreeMap;

use model::node::Refusal;
use tonic::{Request, Response, Status};

use crate::error::{CsiError, Result};
use crate::locks::InFlight;
use crate::proto;
use crate::state::{CreatedVolume, StateStore};

/// The Controller service.
pub struct ControllerService {
    state: StateStore,
    names: InFlight,
}

impl ControllerService {
    /// A controller that keeps its volumes in `state`.
    pub fn new(state: StateStore) -> Self {
        Self { state, names: InFlight::default() }
    }
}

/// Checks the capabilities of a controller call: at least one (field `volume_capabilities`),
/// each with a known access mode; `Err` names the first one a FUSE dataset cannot offer
/// (block access) as the message ValidateVolumeCapabilities answers or CreateVolume refuses with.
fn check_capabilities(caps: &[proto::VolumeCapability]) -> Result<std::result::Result<(), String>> {
    use proto::volume_capability::AccessType;
    if caps.is_empty() {
        return Err(Refusal::missing("volume_capabilities").into());
    }
    for (i, cap) in caps.iter().enumerate() {
        match cap.access_type {
            Some(AccessType::Mount(_)) => {}
            Some(AccessType::Block(_)) => {
                return Ok(Err(format!(
                    "volume_capabilities[{i}]: block access is not supported by a FUSE dataset, use mount access"
                )));
            }
            None => {
                return Err(Refusal::invalid(
                    format!("volume_capabilities[{i}]"),
                    "one of access_type `mount` or `block` must be set",
                )
                .into());
            }
        }
        let mode = cap.access_mode.as_ref().map(|mode| model::node::AccessMode::from_csi(mode.mode));
        match mode {
            None => return Err(Refusal::missing(format!("volume_capabilities[{i}].access_mode")).into()),
            Some(model::node::AccessMode::Unknown) => {
                return Err(Refusal::invalid(
                    format!("volume_capabilities[{i}].access_mode"),
                    "mode UNKNOWN is not an access mode",
                )
                .into());
            }
            Some(_) => {}
        }
    }
    Ok(Ok(()))
}

/// The capacity a new volume answers: `required_bytes` if set, else `limit_bytes`, else 0
/// (unknown, as the specification allows for a share). Negative values, or a limit below the
/// requirement, are `OUT_OF_RANGE`.
fn capacity_of(range: Option<&proto::CapacityRange>) -> Result<i64> {
    let Some(range) = range else { return Ok(0) };
    if range.required_bytes < 0 || range.limit_bytes < 0 {
        return Err(CsiError::OutOfRange("capacity_range: required_bytes and limit_bytes must not be negative".into()));
    }
    if range.limit_bytes > 0 && range.required_bytes > range.limit_bytes {
        return Err(CsiError::OutOfRange(format!(
            "capacity_range: required_bytes {} exceeds limit_bytes {}",
            range.required_bytes, range.limit_bytes
        )));
    }
    Ok(if range.required_bytes > 0 { range.required_bytes } else { range.limit_bytes })
}

/// Whether an existing volume satisfies a repeated CreateVolume: the same parameters and a
/// capacity inside the requested range.
fn compatible(
    existing: &CreatedVolume,
    range: Option<&proto::CapacityRange>,
    parameters: &BTreeMap<String, String>,
) -> bool {
    let fits = range.is_none_or(|range| {
        existing.capacity_bytes >= range.required_bytes
            && (range.limit_bytes == 0 || existing.capacity_bytes <= range.limit_bytes)
    });
    fits && existing.parameters == *parameters
}

fn volume(created: &CreatedVolume) -> proto::Volume {
    proto::Volume {
        capacity_bytes: created.capacity_bytes,
        volume_id: created.name.clone(),
        volume_context: created.parameters.clone(),
        content_source: None,
        accessible_topology: Vec::new(),
    }
}

#[tonic::async_trait]
impl proto::controller_server::Controller for ControllerService {
    /// `CreateVolume`: `name` and `volume_capabilities` are REQUIRED (`INVALID_ARGUMENT`); a
    /// content source is `INVALID_ARGUMENT` (neither CLONE_VOLUME nor snapshots are offered); an
    /// unsupported capacity range is `OUT_OF_RANGE`. It MUST be idempotent: a volume of that name
    /// that is compatible with the capacity range and parameters is answered again with OK, an
    /// incompatible one is `ALREADY_EXISTS`. The volume id is the name; the volume context is
    /// the parameters.
    async fn create_volume(
        &self,
        request: Request<proto::CreateVolumeRequest>,
    ) -> Result<Response<proto::CreateVolumeResponse>, Status> {
        let req = request.into_inner();
        if req.name.trim().is_empty() {
            return Err(CsiError::from(Refusal::missing("name")).into());
        }
        if let Err(message) = check_capabilities(&req.volume_capabilities)? {
            return Err(CsiError::from(Refusal::invalid("volume_capabilities", message)).into());
        }
        if req.volume_content_source.is_some() {
            return Err(CsiError::from(Refusal::invalid(
                "volume_content_source",
                "is not supported: this plugin offers neither volume cloning nor snapshots",
            ))
            .into());
        }
        let capacity_bytes = capacity_of(req.capacity_range.as_ref())?;
        let _guard = self.names.try_acquire(format!("volume {}", req.name), &format!("volume {}", req.name))?;
        if let Some(existing) = self.state.load_volume(&req.name).await? {
            if !compatible(&existing, req.capacity_range.as_ref(), &req.parameters) {
                return Err(CsiError::from(Refusal::already_exists(
                    "name",
                    format!(
                        "volume {} exists with capacity {} bytes and other parameters or capacity than asked",
                        req.name, existing.capacity_bytes
                    ),
                ))
                .into());
            }
            return Ok(Response::new(proto::CreateVolumeResponse { volume: Some(volume(&existing)) }));
        }
        let created = CreatedVolume { name: req.name, capacity_bytes, parameters: req.parameters };
        self.state.save_volume(&created).await?;
        tracing::info!(volume_id = %created.name, capacity_bytes, "created volume");
        Ok(Response::new(proto::CreateVolumeResponse { volume: Some(volume(&created)) }))
    }

    /// `DeleteVolume`: `volume_id` is REQUIRED (`INVALID_ARGUMENT`); a volume that does not
    /// exist is OK, as the call MUST be idempotent. Only the plugin's record is deleted: the
    /// dataset behind a volume is the runtime's.
    async fn delete_volume(
        &self,
        request: Request<proto::DeleteVolumeRequest>,
    ) -> Result<Response<proto::DeleteVolumeResponse>, Status> {
        let req = request.into_inner();
        if req.volume_id.trim().is_empty() {
            return Err(CsiError::from(Refusal::missing("volume_id")).into());
        }
        let _guard =
            self.names.try_acquire(format!("volume {}", req.volume_id), &format!("volume {}", req.volume_id))?;
        self.state.remove_volume(&req.volume_id).await?;
        Ok(Response::new(proto::DeleteVolumeResponse {}))
    }

    /// `ValidateVolumeCapabilities`, which every controller MUST offer: `volume_id` and
    /// `volume_capabilities` are REQUIRED (`INVALID_ARGUMENT`); a volume that does not exist is
    /// `NOT_FOUND`. A volume exists when CreateVolume made it, or when its volume context names
    /// a `fluid_path` (a static Fluid PV's attributes). The capabilities are confirmed when every
    /// one is mount access (any access mode: a FUSE dataset is shared by every node) and the
    /// parameters, if given, are the created volume's; otherwise `confirmed` is unset and
    /// `message` says why.
    async fn validate_volume_capabilities(
        &self,
        request: Request<proto::ValidateVolumeCapabilitiesRequest>,
    ) -> Result<Response<proto::ValidateVolumeCapabilitiesResponse>, Status> {
        let req = request.into_inner();
        if req.volume_id.trim().is_empty() {
            return Err(CsiError::from(Refusal::missing("volume_id")).into());
        }
        let checked = check_capabilities(&req.volume_capabilities)?;
        let created = self.state.load_volume(&req.volume_id).await?;
        let static_pv = req.volume_context.contains_key(model::volume::ATTR_FLUID_PATH);
        if created.is_none() && !static_pv {
            return Err(CsiError::NotFound(format!(
                "volume {} does not exist: CreateVolume did not make it and its volume context names no fluid_path",
                req.volume_id
            ))
            .into());
        }
        let verdict = checked.and_then(|()| match &created {
            Some(created) if !req.parameters.is_empty() && created.parameters != req.parameters => {
                Err(format!("parameters differ from those volume {} was created with", req.volume_id))
            }
            _ => Ok(()),
        });
        Ok(Response::new(match verdict {
            Ok(()) => proto::ValidateVolumeCapabilitiesResponse {
                confirmed: Some(proto::validate_volume_capabilities_response::Confirmed {
                    volume_context: req.volume_context,
                    volume_capabilities: req.volume_capabilities,
                    parameters: req.parameters,
                    mutable_parameters: BTreeMap::new(),
                }),
                message: String::new(),
            },
            Err(message) => proto::ValidateVolumeCapabilitiesResponse { confirmed: None, message },
        }))
    }

    /// `ControllerGetCapabilities`: CREATE_DELETE_VOLUME only. No attach step
    /// (PUBLISH_UNPUBLISH_VOLUME), no listing, capacity, snapshots or expansion.
    async fn controller_get_capabilities(
        &self,
        _request: Request<proto::ControllerGetCapabilitiesRequest>,
    ) -> Result<Response<proto::ControllerGetCapabilitiesResponse>, Status> {
        use proto::controller_service_capability::{Rpc, Type, rpc};
        Ok(Response::new(proto::ControllerGetCapabilitiesResponse {
            capabilities: vec![proto::ControllerServiceCapability {
                r#type: Some(Type::Rpc(Rpc { r#type: rpc::Type::CreateDeleteVolume as i32 })),
            }],
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_is_the_requirement_else_the_limit_and_a_bad_range_is_out_of_range() {
        let range = |required_bytes, limit_bytes| proto::CapacityRange { required_bytes, limit_bytes };
        assert_eq!(capacity_of(None).unwrap(), 0);
        assert_eq!(capacity_of(Some(&range(10, 20))).unwrap(), 10);
        assert_eq!(capacity_of(Some(&range(0, 20))).unwrap(), 20);
        for bad in [range(30, 20), range(-1, 0), range(0, -5)] {
            let err = capacity_of(Some(&bad)).unwrap_err();
            assert_eq!(err.code(), tonic::Code::OutOfRange, "{err}");
            assert!(err.to_string().contains("capacity_range"), "{err}");
        }
    }

    #[test]
    fn a_repeated_create_must_fit_the_range_and_the_parameters() {
        let params = BTreeMap::from([("fluid_path".to_string(), "/mnt/x".to_string())]);
        let existing = CreatedVolume { name: "v".into(), capacity_bytes: 10, parameters: params.clone() };
        let range = |required_bytes, limit_bytes| proto::CapacityRange { required_bytes, limit_bytes };
        assert!(compatible(&existing, Some(&range(10, 10)), &params));
        assert!(compatible(&existing, None, &params));
        assert!(!compatible(&existing, Some(&range(20, 20)), &params));
        assert!(!compatible(&existing, Some(&range(0, 5)), &params));
        assert!(!compatible(&existing, Some(&range(10, 10)), &BTreeMap::new()));
    }
}
