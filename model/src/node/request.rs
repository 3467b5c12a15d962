//! CSI node requests as plain values, their validation, and the refusals they can earn.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::api::FuseCleanPolicy;
use crate::error::ModelError;
use crate::labels::{DatasetKeys, validate_label_key, validate_label_value};
use crate::volume::{
    ATTR_CLEAN_POLICY, ATTR_FLUID_PATH, ATTR_FUSE_LABEL_KEY, ATTR_FUSE_LABEL_VALUE, ATTR_MOUNT_TYPE, ATTR_RUNTIME_NAME,
    ATTR_RUNTIME_NAMESPACE, ATTR_SUB_PATH,
};

/// The gRPC class of a refusal; `csi` maps it to the `tonic::Status` code of the same name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RefusalKind {
    /// A field is missing or malformed (`INVALID_ARGUMENT`).
    InvalidArgument,
    /// The request is well formed but cannot be served in this state, e.g. an unsupported
    /// capability or a missing staging path (`FAILED_PRECONDITION`).
    FailedPrecondition,
    /// The target is already published in an incompatible way (`ALREADY_EXISTS`).
    AlreadyExists,
}

/// A node call that will not be carried out, with the field at fault in [`Refusal::error`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Which gRPC class the refusal belongs to.
    pub kind: RefusalKind,
    /// What is wrong; [`ModelError::field`] names the request field (e.g. `target_path`).
    pub error: ModelError,
}

impl Refusal {
    /// `INVALID_ARGUMENT`: a required field is missing or empty.
    pub fn missing(field: impl Into<String>) -> Self {
        Self { kind: RefusalKind::InvalidArgument, error: ModelError::MissingField { field: field.into() } }
    }

    /// `INVALID_ARGUMENT`: a field holds a value that is not allowed.
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self { kind: RefusalKind::InvalidArgument, error: ModelError::invalid(field, reason) }
    }

    /// `FAILED_PRECONDITION` about a field.
    pub fn precondition(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self { kind: RefusalKind::FailedPrecondition, error: ModelError::invalid(field, reason) }
    }

    /// `ALREADY_EXISTS` about a field.
    pub fn already_exists(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self { kind: RefusalKind::AlreadyExists, error: ModelError::invalid(field, reason) }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.error.fmt(f)
    }
}

/// CSI `VolumeCapability.AccessMode.Mode`, with the specification's numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum AccessMode {
    /// 0, or a number this plugin does not know.
    Unknown,
    /// 1
    SingleNodeWriter,
    /// 2
    SingleNodeReaderOnly,
    /// 3
    MultiNodeReaderOnly,
    /// 4
    MultiNodeSingleWriter,
    /// 5
    MultiNodeMultiWriter,
    /// 6
    SingleNodeSingleWriter,
    /// 7
    SingleNodeMultiWriter,
}

impl AccessMode {
    /// The mode with CSI number `n`; unknown numbers give [`AccessMode::Unknown`].
    pub fn from_csi(n: i32) -> Self {
        match n {
            1 => Self::SingleNodeWriter,
            2 => Self::SingleNodeReaderOnly,
            3 => Self::MultiNodeReaderOnly,
            4 => Self::MultiNodeSingleWriter,
            5 => Self::MultiNodeMultiWriter,
            6 => Self::SingleNodeSingleWriter,
            7 => Self::SingleNodeMultiWriter,
            _ => Self::Unknown,
        }
    }

    /// The mode's CSI number (0 for [`AccessMode::Unknown`]); [`AccessMode::from_csi`] reverses it.
    pub fn to_csi(self) -> i32 {
        match self {
            Self::Unknown => 0,
            Self::SingleNodeWriter => 1,
            Self::SingleNodeReaderOnly => 2,
            Self::MultiNodeReaderOnly => 3,
            Self::MultiNodeSingleWriter => 4,
            Self::MultiNodeMultiWriter => 5,
            Self::SingleNodeSingleWriter => 6,
            Self::SingleNodeMultiWriter => 7,
        }
    }

    /// True for the modes that only read, whose publish must be read-only.
    pub fn is_reader_only(self) -> bool {
        matches!(self, Self::SingleNodeReaderOnly | Self::MultiNodeReaderOnly)
    }
}

/// How the volume is accessed: the CSI `access_type` oneof.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum AccessType {
    /// Neither `mount` nor `block` was set.
    Unset,
    /// Filesystem access, the only one a FUSE dataset offers.
    Mount {
        /// `mount.mount_flags`; `ro` asks for a read-only publish, others are ignored.
        mount_flags: Vec<String>,
    },
    /// Raw block access, which a FUSE dataset cannot offer.
    Block,
}

/// A CSI `VolumeCapability`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capability {
    /// The access type.
    pub access_type: AccessType,
    /// The access mode; `None` when the request had no `access_mode` message.
    pub access_mode: Option<AccessMode>,
}

impl Capability {
    /// A filesystem capability with `mode` and no mount flags.
    pub fn mount(mode: AccessMode) -> Self {
        Self { access_type: AccessType::Mount { mount_flags: Vec::new() }, access_mode: Some(mode) }
    }

    /// Checks the capability (field path `field`) and tells whether it asks for read-only.
    fn check(capability: Option<&Capability>, field: &str) -> Result<bool, Refusal> {
        let Some(capability) = capability else {
            return Err(Refusal::missing(field));
        };
        let mount_flags = match &capability.access_type {
            AccessType::Mount { mount_flags } => mount_flags,
            AccessType::Block => {
                return Err(Refusal::precondition(
                    format!("{field}.block"),
                    "block access is not supported by a FUSE dataset, use mount access",
                ));
            }
            AccessType::Unset => {
                return Err(Refusal::invalid(field, "one of access_type `mount` or `block` must be set"));
            }
        };
        let mode = match capability.access_mode {
            None => return Err(Refusal::missing(format!("{field}.access_mode"))),
            Some(AccessMode::Unknown) => {
                return Err(Refusal::invalid(format!("{field}.access_mode"), "mode UNKNOWN is not an access mode"));
            }
            Some(mode) => mode,
        };
        Ok(mode.is_reader_only() || mount_flags.iter().any(|flag| flag == "ro"))
    }
}

/// Parses the PV attribute `fuse_clean_policy`; absent or empty means `OnRuntimeDeleted`.
pub fn parse_clean_policy(value: Option<&str>) -> Result<FuseCleanPolicy, Refusal> {
    let value = value.unwrap_or("");
    FuseCleanPolicy::parse(value).ok_or_else(|| {
        Refusal::invalid(
            format!("volume_context.{ATTR_CLEAN_POLICY}"),
            format!("{value:?} is not a clean policy; use OnRuntimeDeleted or OnDemand"),
        )
    })
}

/// A node label: key and value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeLabel {
    /// The label key, e.g. `fluid.io/f-default-jfsdemo`.
    pub key: String,
    /// The label value, `true` unless the PV says otherwise.
    pub value: String,
}

/// The volume attributes a publish needs, parsed from the PV's `volumeAttributes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeContext {
    /// Absolute host path of the FUSE mount point.
    pub fluid_path: String,
    /// The PV's `mount_type` (e.g. `JuiceFS`): which filesystem type the FUSE mount at
    /// `fluid_path` must have ([`VolumeContext::fuse_type`]).
    pub mount_type: Option<String>,
    /// The normalized sub path to publish instead of the root, if any (no `.`, `..` or `/` ends).
    pub sub_path: Option<String>,
}

impl VolumeContext {
    /// Parses and checks `fluid_path` and `fluid_sub_path`.
    pub fn parse(ctx: &BTreeMap<String, String>) -> Result<Self, Refusal> {
        let field = format!("volume_context.{ATTR_FLUID_PATH}");
        let fluid_path = non_empty(ctx, ATTR_FLUID_PATH).ok_or_else(|| Refusal::missing(&field))?;
        check_absolute(fluid_path, &field)?;
        let sub_path = match non_empty(ctx, ATTR_SUB_PATH) {
            None => None,
            Some(raw) => normalize_sub_path(raw)?,
        };
        Ok(Self {
            fluid_path: trim_trailing_slashes(fluid_path),
            mount_type: non_empty(ctx, ATTR_MOUNT_TYPE).map(str::to_string),
            sub_path,
        })
    }

    /// The filesystem type publish waits for at `fluid_path`.
    pub fn fuse_type(&self) -> FuseType {
        FuseType::of(self.mount_type.as_deref())
    }

    /// The directory to bind-mount: `fluid_path[/sub_path]`.
    pub fn source(&self) -> String {
        match &self.sub_path {
            Some(sub) => format!("{}/{sub}", self.fluid_path),
            None => self.fluid_path.clone(),
        }
    }
}

/// The filesystem type a FUSE mount at `fluid_path` must have before publish binds it, so that
/// a stale tmpfs or an empty bind of a host directory there never passes as the dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FuseType {
    /// Exactly this type, e.g. `fuse.juicefs`.
    Exact(String),
    /// Any FUSE filesystem: `fuse`, `fuseblk` or `fuse.<subtype>`.
    AnyFuse,
}

impl FuseType {
    /// The type for the PV's `mount_type`: `JuiceFS` (Fluid's JuiceFS mount type, any case) is
    /// `fuse.juicefs`, the type JuiceFS mounts with; a `mount_type` that already names a FUSE
    /// type (`fuse.<subtype>`) is that type; anything else, or none, accepts any FUSE type.
    pub fn of(mount_type: Option<&str>) -> Self {
        match mount_type.map(str::trim) {
            Some(kind) if kind.eq_ignore_ascii_case("juicefs") => Self::Exact("fuse.juicefs".to_string()),
            Some(kind) if kind.starts_with("fuse.") && kind.len() > "fuse.".len() => Self::Exact(kind.to_string()),
            _ => Self::AnyFuse,
        }
    }

    /// Whether a mount of filesystem type `fs_type` (mountinfo's field after `-`) is acceptable.
    pub fn accepts(&self, fs_type: &str) -> bool {
        match self {
            Self::Exact(expected) => fs_type == expected,
            Self::AnyFuse => fs_type == "fuse" || fs_type == "fuseblk" || fs_type.starts_with("fuse."),
        }
    }
}

impl fmt::Display for FuseType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(expected) => f.write_str(expected),
            Self::AnyFuse => f.write_str("a FUSE filesystem (fuse, fuseblk or fuse.*)"),
        }
    }
}

/// The Dataset a volume serves, on which FUSE recovery records its events. Fluid names a
/// runtime after its dataset, so the PV's `runtime_namespace` and `runtime_name` name it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DatasetRef {
    /// The dataset's namespace.
    pub namespace: String,
    /// The dataset's name.
    pub name: String,
}

impl DatasetRef {
    /// The dataset named by a volume context, `None` when either attribute is missing.
    pub fn from_volume_context(ctx: &BTreeMap<String, String>) -> Option<Self> {
        let namespace = non_empty(ctx, ATTR_RUNTIME_NAMESPACE)?;
        let name = non_empty(ctx, ATTR_RUNTIME_NAME)?;
        Some(Self { namespace: namespace.trim().to_string(), name: name.trim().to_string() })
    }
}

impl fmt::Display for DatasetRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Resolves the FUSE node label: the PV's `mount_pod_node_selector_key` as is (the controller
/// computed it once, which is what keeps it equal to the DaemonSet's nodeSelector, Fluid
/// #6089), else the key derived from `runtime_namespace`/`runtime_name`.
pub(crate) fn resolve_label(ctx: &BTreeMap<String, String>) -> Result<NodeLabel, Refusal> {
    let key_field = format!("volume_context.{ATTR_FUSE_LABEL_KEY}");
    let key = match non_empty(ctx, ATTR_FUSE_LABEL_KEY) {
        Some(key) => {
            validate_label_key(key).map_err(|reason| Refusal::invalid(&key_field, reason))?;
            key.to_string()
        }
        None => {
            let ns = non_empty(ctx, ATTR_RUNTIME_NAMESPACE);
            let name = non_empty(ctx, ATTR_RUNTIME_NAME);
            let (Some(ns), Some(name)) = (ns, name) else {
                return Err(Refusal::invalid(
                    key_field,
                    format!("is required unless both {ATTR_RUNTIME_NAMESPACE} and {ATTR_RUNTIME_NAME} are set"),
                ));
            };
            DatasetKeys::new(ns, name, None)
                .map_err(|err| Refusal::invalid(key_field, format!("cannot derive it: {err}")))?
                .fuse_label()
        }
    };
    let value_field = format!("volume_context.{ATTR_FUSE_LABEL_VALUE}");
    let value = non_empty(ctx, ATTR_FUSE_LABEL_VALUE).unwrap_or("true");
    validate_label_value(value).map_err(|reason| Refusal::invalid(value_field, reason))?;
    Ok(NodeLabel { key, value: value.to_string() })
}

/// Normalizes a sub path: drops empty and `.` components; refuses an absolute path, a `..`
/// component or a NUL byte, so that the published directory stays inside the FUSE mount.
/// Returns `None` when nothing is left (the root of the mount).
pub fn normalize_sub_path(raw: &str) -> Result<Option<String>, Refusal> {
    let field = format!("volume_context.{ATTR_SUB_PATH}");
    if raw.starts_with('/') {
        return Err(Refusal::invalid(field, format!("{raw:?} must be relative to the FUSE mount point")));
    }
    if raw.contains('\0') {
        return Err(Refusal::invalid(field, format!("{raw:?} contains a NUL byte")));
    }
    let mut parts = Vec::new();
    for part in raw.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                return Err(Refusal::invalid(
                    field,
                    format!("{raw:?} has a `..` component and would escape the mount"),
                ));
            }
            part => parts.push(part),
        }
    }
    Ok(if parts.is_empty() { None } else { Some(parts.join("/")) })
}

/// The fields of a CSI `NodeStageVolumeRequest` that the plugin uses.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StageRequest {
    /// `volume_id`, the PV's volumeHandle (`<ns>-<name>`).
    pub volume_id: String,
    /// `staging_target_path`: required and absolute; nothing is mounted there.
    pub staging_target_path: String,
    /// `volume_capability`.
    pub capability: Option<Capability>,
    /// `volume_context`: the PV's `volumeAttributes`.
    pub volume_context: BTreeMap<String, String>,
}

/// The fields of a CSI `NodePublishVolumeRequest` that the plugin uses.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PublishRequest {
    /// `volume_id`.
    pub volume_id: String,
    /// `staging_target_path`: must be set, as the plugin has `STAGE_UNSTAGE_VOLUME`.
    pub staging_target_path: String,
    /// `target_path`: absolute; created (mode 0750) when missing.
    pub target_path: String,
    /// `volume_capability`.
    pub capability: Option<Capability>,
    /// `readonly`.
    pub readonly: bool,
    /// `volume_context`.
    pub volume_context: BTreeMap<String, String>,
}

/// The fields of a CSI `NodeUnpublishVolumeRequest`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UnpublishRequest {
    /// `volume_id`.
    pub volume_id: String,
    /// `target_path`.
    pub target_path: String,
}

/// The fields of a CSI `NodeUnstageVolumeRequest`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UnstageRequest {
    /// `volume_id`.
    pub volume_id: String,
    /// `staging_target_path`.
    pub staging_target_path: String,
}

pub(crate) fn non_empty<'a>(ctx: &'a BTreeMap<String, String>, key: &str) -> Option<&'a str> {
    ctx.get(key).map(String::as_str).filter(|value| !value.trim().is_empty())
}

/// Checks that `value` (field `field`) is set.
pub(crate) fn check_required(value: &str, field: &str) -> Result<(), Refusal> {
    if value.trim().is_empty() { Err(Refusal::missing(field)) } else { Ok(()) }
}

/// Checks that `path` (field `field`) is an absolute path without `..` components or NUL.
pub(crate) fn check_absolute(path: &str, field: &str) -> Result<(), Refusal> {
    if !path.starts_with('/') {
        return Err(Refusal::invalid(field, format!("{path:?} must be an absolute path")));
    }
    if path.contains('\0') {
        return Err(Refusal::invalid(field, format!("{path:?} contains a NUL byte")));
    }
    // The substring search first: kubelet paths are long and almost never hold `..`.
    if path.contains("..") && path.split('/').any(|part| part == "..") {
        return Err(Refusal::invalid(field, format!("{path:?} must not contain `..`")));
    }
    Ok(())
}

/// True when `path` is `dir` or below it, comparing whole components ("/a/bc" is not under "/a/b").
pub(crate) fn is_within(path: &str, dir: &str) -> bool {
    let dir = dir.trim_end_matches('/');
    match path.strip_prefix(dir) {
        Some(rest) => rest.is_empty() || rest.starts_with('/') || dir.is_empty(),
        None => false,
    }
}

/// Checks a required absolute path field.
pub(crate) fn check_path_field(path: &str, field: &str) -> Result<(), Refusal> {
    check_required(path, field)?;
    check_absolute(path, field)
}

/// Checks the capability of a stage or publish.
pub(crate) fn check_capability(capability: Option<&Capability>) -> Result<bool, Refusal> {
    Capability::check(capability, "volume_capability")
}

/// `path` without trailing slashes (but `/` stays `/`).
pub(crate) fn trim_trailing_slashes(path: &str) -> String {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() { "/".to_string() } else { trimmed.to_string() }
}
