//! The one owner of every label, annotation, finalizer and derived object name that ferrofluid writes.
//!
//! Fluid computes its namespaced keys in several places, and a key that passes 63 characters
//! falls back to the dataset UID in some of them and not in others (Fluid #704, #1169, #4382,
//! #5362, #6089). Here a [`DatasetKeys`] is computed once per dataset and every caller asks it.
//! The fallback is all-or-nothing: when the longest prefixed key of a dataset would reach 63
//! characters, *every* key of that dataset uses the UID, so no two keys of one dataset disagree.

use std::collections::BTreeMap;

use crate::error::ModelError;

/// The API group of Fluid's resources.
pub const GROUP: &str = "data.fluid.io";
/// Labels and keys may not reach this length (Kubernetes' DNS-1035 label limit is 63).
pub const KEY_LENGTH_LIMIT: usize = 63;

/// Prefix of the label that starts a FUSE pod on a node.
pub const FUSE_PREFIX: &str = "fluid.io/f-";
/// Prefix of the label that marks a node caching a dataset (any runtime type).
pub const COMMON_PREFIX: &str = "fluid.io/s-";
/// Prefix of the human-readable capacity labels, followed by `<type>-<m|d|t>-`.
pub const CAPACITY_PREFIX: &str = "fluid.io/s-h-";
/// Count of datasets cached on a node; removed when it would drop below 2, as in Fluid.
pub const DATASET_NUM: &str = "fluid.io/dataset-num";
/// In exclusive placement: the dataset a node belongs to.
pub const EXCLUSIVE: &str = "fluid_exclusive";
/// Identity label on datasets, runtimes, PVs and PVCs.
pub const DATASET_ID: &str = "fluid.io/dataset-id";
/// Worker pod label: which dataset it caches (used by pod anti-affinity).
pub const POD_DATASET: &str = "fluid.io/dataset";
/// Worker pod label: the placement mode of its dataset.
pub const POD_PLACEMENT: &str = "fluid.io/dataset-placement";
/// Annotation that marks PVs and PVCs ferrofluid (or Fluid) created and may delete.
pub const CREATED_BY: &str = "CreatedBy";
/// Value of [`CREATED_BY`].
pub const CREATED_BY_FLUID: &str = "fluid";
/// PVC annotation: FUSE DaemonSet generation at PVC creation.
pub const FUSE_GENERATION: &str = "fuse.runtime.fluid.io/generation";
/// Dataset annotation that overrides the PVC capacity (default 100Pi).
pub const PVC_STORAGE_REQUEST: &str = "pvc.fluid.io/resources.requests.storage";
/// Dataset finalizer, as Fluid names it.
pub const DATASET_FINALIZER: &str = "fluid-dataset-controller-finalizer";
/// Finalizer of a JuiceFSRuntime, as Fluid names it.
pub const JUICEFS_RUNTIME_FINALIZER: &str = "juicefs-runtime-controller-finalizer";
/// The finalizer Kubernetes puts on PVCs in use.
pub const PVC_PROTECTION_FINALIZER: &str = "kubernetes.io/pvc-protection";

/// Kubernetes' pv-protection finalizer: a Bound PV is not removed until it is released.
pub const PV_PROTECTION_FINALIZER: &str = "kubernetes.io/pv-protection";
/// Workload pod labels.
pub const APP: &str = "app";
/// Workload pod labels: role within the runtime.
pub const ROLE: &str = "role";
/// Workload pod labels: which runtime the pod belongs to.
pub const RELEASE: &str = "release";
/// The kubelet's hostname label, used as the anti-affinity topology.
pub const HOSTNAME: &str = "kubernetes.io/hostname";

/// The runtime-type segments that can follow `fluid.io/s-` and `fluid.io/s-h-`.
/// The longest decides the fallback for every key, so keep this list complete.
pub const RUNTIME_TYPES: &[&str] = &["juicefs", "alluxio", "jindo", "thin", "efc", "vineyard"];

/// Longest prefix a dataset key can carry: `fluid.io/s-h-<longest type>-t-`.
fn longest_prefix_len() -> usize {
    let longest_type = RUNTIME_TYPES.iter().map(|t| t.len()).max().unwrap_or(0);
    CAPACITY_PREFIX.len() + longest_type + "-t-".len()
}

/// Which capacity a capacity label describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum CapacityKind {
    /// Memory tiers (`MEM`).
    Memory,
    /// Disk tiers (`SSD`, `HDD`).
    Disk,
    /// All tiers together.
    Total,
}

impl CapacityKind {
    fn letter(self) -> &'static str {
        match self {
            CapacityKind::Memory => "m",
            CapacityKind::Disk => "d",
            CapacityKind::Total => "t",
        }
    }
}

/// Every key and value derived from one dataset's identity. Build it once, ask it everywhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetKeys {
    /// `<ns>-<name>`, or the UID when any key would be too long.
    suffix: String,
    /// True when [`Self::suffix`] is the UID.
    uses_uid: bool,
}

impl DatasetKeys {
    /// Derives the keys of dataset `namespace/name` with UID `uid`.
    ///
    /// The UID is only needed when the names are long; pass `None` when it is not known yet and
    /// a short name gets its keys while a long one gets [`ModelError::MissingUid`].
    pub fn new(namespace: &str, name: &str, uid: Option<&str>) -> Result<Self, ModelError> {
        let namespaced = [namespace, "-", name].concat();
        if longest_prefix_len() + namespaced.len() < KEY_LENGTH_LIMIT {
            return Ok(Self { suffix: namespaced, uses_uid: false });
        }
        match uid.filter(|uid| !uid.is_empty()) {
            Some(uid) => Ok(Self { suffix: uid.to_string(), uses_uid: true }),
            None => Err(ModelError::MissingUid { namespace: namespace.to_string(), name: name.to_string() }),
        }
    }

    /// True when the names were too long and every key is based on the UID.
    pub fn uses_uid(&self) -> bool {
        self.uses_uid
    }

    /// `fluid.io/f-<ns>-<name>`: the node label that gates the FUSE DaemonSet.
    pub fn fuse_label(&self) -> String {
        [FUSE_PREFIX, &self.suffix].concat()
    }

    /// `fluid.io/s-<ns>-<name>`: a cache worker of this dataset runs on the node.
    pub fn common_label(&self) -> String {
        [COMMON_PREFIX, &self.suffix].concat()
    }

    /// `fluid.io/s-<type>-<ns>-<name>`: a worker of that runtime type runs on the node.
    pub fn runtime_label(&self, runtime_type: &str) -> String {
        [COMMON_PREFIX, runtime_type, "-", &self.suffix].concat()
    }

    /// `fluid.io/s-h-<type>-<m|d|t>-<ns>-<name>`: cache capacity on the node, human-readable.
    pub fn capacity_label(&self, runtime_type: &str, kind: CapacityKind) -> String {
        [CAPACITY_PREFIX, runtime_type, "-", kind.letter(), "-", &self.suffix].concat()
    }

    /// Value of [`DATASET_ID`] and of [`POD_DATASET`]: `<ns>-<name>` or the UID.
    pub fn dataset_id(&self) -> String {
        self.suffix.clone()
    }

    /// Value of [`EXCLUSIVE`]: `<ns>_<name>` or the UID.
    pub fn exclusive_value(&self, namespace: &str, name: &str) -> String {
        if self.uses_uid { self.suffix.clone() } else { format!("{namespace}_{name}") }
    }

    /// Every node label key this dataset can set, for a complete teardown.
    pub fn all_node_label_keys(&self, runtime_type: &str) -> Vec<String> {
        let mut keys = vec![self.fuse_label()];
        keys.extend(self.cache_node_label_keys(runtime_type));
        keys
    }

    /// The node label keys of this dataset's cache nodes (all but the FUSE label, which the CSI
    /// plugin sets where a pod uses the dataset).
    pub fn cache_node_label_keys(&self, runtime_type: &str) -> Vec<String> {
        vec![
            self.common_label(),
            self.runtime_label(runtime_type),
            self.capacity_label(runtime_type, CapacityKind::Memory),
            self.capacity_label(runtime_type, CapacityKind::Disk),
            self.capacity_label(runtime_type, CapacityKind::Total),
        ]
    }
}

/// The names of the objects a runtime owns. Pod names derive from the StatefulSet name plus an
/// ordinal and the controller-revision label adds 11 characters, so workload names are kept to
/// 52 characters, shortened with a stable hash when the runtime name is long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadNames {
    /// Worker StatefulSet.
    pub workers: String,
    /// FUSE DaemonSet.
    pub fuse: String,
    /// The PersistentVolume: `<ns>-<name>`.
    pub persistent_volume: String,
    /// The PersistentVolumeClaim: `<name>`, in the dataset's namespace.
    pub persistent_volume_claim: String,
}

/// Kubernetes limits StatefulSet names so that pod labels stay valid.
pub const WORKLOAD_NAME_LIMIT: usize = 52;

impl WorkloadNames {
    /// Names for runtime `namespace/name` of type `runtime_type`.
    pub fn new(namespace: &str, name: &str, runtime_type: &str) -> Self {
        Self {
            workers: bounded([name, "-", runtime_type, "-worker"].concat(), WORKLOAD_NAME_LIMIT),
            fuse: bounded([name, "-", runtime_type, "-fuse"].concat(), WORKLOAD_NAME_LIMIT),
            persistent_volume: [namespace, "-", name].concat(),
            persistent_volume_claim: name.to_string(),
        }
    }
}

/// `name` if it fits in `limit`, else a prefix plus `-` and an 8-hex-digit FNV-1a hash of `name`.
pub fn bounded_name(name: &str, limit: usize) -> String {
    bounded(name.to_string(), limit)
}

/// [`bounded_name`] of an owned name (returned as it is when it fits).
fn bounded(name: String, limit: usize) -> String {
    if name.len() <= limit {
        return name;
    }
    let hash = format!("{:08x}", fnv1a_32(name.as_bytes()));
    let keep = limit.saturating_sub(hash.len() + 1);
    let mut prefix: String = name.chars().take(keep).collect();
    while prefix.ends_with('-') {
        prefix.pop();
    }
    format!("{prefix}-{hash}")
}

/// FNV-1a, 32 bits: stable across platforms and Rust versions, unlike `DefaultHasher`.
pub fn fnv1a_32(bytes: &[u8]) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in bytes {
        hash ^= u32::from(*byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash
}

/// FNV-1a, 64 bits, for content hashes of applied specs.
pub fn fnv1a_64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// Labels of the worker and FUSE pods of one runtime, also their selectors.
pub fn workload_labels(runtime_name: &str, runtime_type: &str, role: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (APP.to_string(), runtime_type.to_string()),
        (RELEASE.to_string(), bounded_name(runtime_name, KEY_LENGTH_LIMIT)),
        (ROLE.to_string(), [runtime_type, "-", role].concat()),
    ])
}

/// The part a pod plays for a runtime, read from its workload labels: the one rule the model,
/// the simulator and the controller use to tell worker and FUSE pods from the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodRole<'a> {
    /// A cache worker of the runtime released as `release`, of type `runtime_type`.
    Worker {
        /// The runtime type (`juicefs`).
        runtime_type: &'a str,
        /// The `release` label: the runtime's name, bounded.
        release: &'a str,
    },
    /// A FUSE client of the runtime released as `release`.
    Fuse {
        /// The runtime type.
        runtime_type: &'a str,
        /// The `release` label.
        release: &'a str,
    },
    /// Any other pod (an application, or something not ours).
    Other,
}

impl<'a> PodRole<'a> {
    /// True for a worker of the runtime `runtime_name` of type `runtime_type`.
    pub fn is_worker_of(&self, runtime_name: &str, runtime_type: &str) -> bool {
        matches!(self, PodRole::Worker { runtime_type: t, release }
            if *t == runtime_type && *release == bounded_name(runtime_name, KEY_LENGTH_LIMIT))
    }

    /// True for a worker of any runtime.
    pub fn is_worker(&self) -> bool {
        matches!(self, PodRole::Worker { .. })
    }
}

/// The role of a pod with these labels: `app=<type>`, `role=<type>-worker` or `<type>-fuse`, and
/// a `release`, as [`workload_labels`] sets them. Anything less is [`PodRole::Other`].
pub fn role_of(labels: Option<&BTreeMap<String, String>>) -> PodRole<'_> {
    let Some(labels) = labels else { return PodRole::Other };
    let (Some(runtime_type), Some(role), Some(release)) = (labels.get(APP), labels.get(ROLE), labels.get(RELEASE))
    else {
        return PodRole::Other;
    };
    let (runtime_type, release) = (runtime_type.as_str(), release.as_str());
    match role.strip_prefix(runtime_type).and_then(|rest| rest.strip_prefix('-')) {
        Some("worker") => PodRole::Worker { runtime_type, release },
        Some("fuse") => PodRole::Fuse { runtime_type, release },
        _ => PodRole::Other,
    }
}

/// Checks a Kubernetes label key (optional DNS-subdomain prefix, `/`, name of at most 63).
pub fn validate_label_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if name.is_empty() || name.len() > KEY_LENGTH_LIMIT {
        return Err(format!("label key {key:?}: the name part must be 1 to 63 characters, it has {}", name.len()));
    }
    let name_ok = name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if !name_ok {
        return Err(format!("label key {key:?}: the name part must be alphanumeric with '-', '_' or '.' inside"));
    }
    if let Some(prefix) = prefix
        && (prefix.is_empty() || prefix.len() > 253)
    {
        return Err(format!("label key {key:?}: the prefix must be 1 to 253 characters"));
    }
    Ok(())
}

/// Checks a Kubernetes label value (empty, or at most 63 alphanumeric characters with `-_.`).
pub fn validate_label_value(value: &str) -> Result<(), String> {
    if value.len() > KEY_LENGTH_LIMIT {
        return Err(format!("label value {value:?} has {} characters, more than 63", value.len()));
    }
    if value.is_empty() {
        return Ok(());
    }
    let ok = value.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && value.starts_with(|c: char| c.is_ascii_alphanumeric())
        && value.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok { Ok(()) } else { Err(format!("label value {value:?} must be alphanumeric with '-', '_' or '.' inside")) }
}

/// Checks a DNS-1035 label, which Fluid requires of runtime names (Fluid #2213: a leading digit).
pub fn validate_dns1035(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > KEY_LENGTH_LIMIT {
        return Err(format!("{name:?} must be 1 to 63 characters, it has {}", name.len()));
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Err(format!("{name:?} must start with a lowercase letter"));
    }
    if !name.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit()) {
        return Err(format!("{name:?} must end with a lowercase letter or a digit"));
    }
    if !name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-') {
        return Err(format!("{name:?} may contain only lowercase letters, digits and '-'"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const UID: &str = "5d0b7a3c-1f2e-4c5d-9e8f-0a1b2c3d4e5f";

    #[test]
    fn short_names_match_fluid_keys() {
        let keys = DatasetKeys::new("default", "jfsdemo", None).unwrap();
        assert_eq!(keys.fuse_label(), "fluid.io/f-default-jfsdemo");
        assert_eq!(keys.common_label(), "fluid.io/s-default-jfsdemo");
        assert_eq!(keys.runtime_label("juicefs"), "fluid.io/s-juicefs-default-jfsdemo");
        assert_eq!(keys.capacity_label("juicefs", CapacityKind::Memory), "fluid.io/s-h-juicefs-m-default-jfsdemo");
        assert_eq!(keys.dataset_id(), "default-jfsdemo");
        assert_eq!(keys.exclusive_value("default", "jfsdemo"), "default_jfsdemo");
        assert!(!keys.uses_uid());
    }

    #[test]
    fn long_names_fall_back_to_uid_for_every_key() {
        let name = "a".repeat(40);
        let keys = DatasetKeys::new("default", &name, Some(UID)).unwrap();
        assert!(keys.uses_uid());
        for key in keys.all_node_label_keys("juicefs") {
            assert!(key.ends_with(UID), "{key}");
        }
        assert_eq!(keys.dataset_id(), UID);
    }

    #[test]
    fn long_names_without_uid_are_an_error_naming_the_dataset() {
        let err = DatasetKeys::new("default", &"b".repeat(60), None).unwrap_err();
        assert!(err.to_string().contains("default/bbbb"), "{err}");
    }

    #[test]
    fn roles_come_from_the_workload_labels_and_nothing_less() {
        let worker = workload_labels("demo", "juicefs", "worker");
        assert_eq!(role_of(Some(&worker)), PodRole::Worker { runtime_type: "juicefs", release: "demo" });
        assert!(role_of(Some(&worker)).is_worker_of("demo", "juicefs"));
        assert!(!role_of(Some(&worker)).is_worker_of("other", "juicefs"));
        assert!(!role_of(Some(&worker)).is_worker_of("demo", "alluxio"));
        let fuse = workload_labels("demo", "juicefs", "fuse");
        assert!(matches!(role_of(Some(&fuse)), PodRole::Fuse { .. }) && !role_of(Some(&fuse)).is_worker());
        let long = "x".repeat(80);
        assert!(role_of(Some(&workload_labels(&long, "juicefs", "worker"))).is_worker_of(&long, "juicefs"));
        for missing in [APP, ROLE, RELEASE] {
            let mut partial = worker.clone();
            partial.remove(missing);
            assert_eq!(role_of(Some(&partial)), PodRole::Other, "without {missing}");
        }
        let mut mismatched = worker.clone();
        mismatched.insert(APP.into(), "alluxio".into());
        assert_eq!(role_of(Some(&mismatched)), PodRole::Other, "the role must be of the app's type");
        let mut suffix = worker;
        suffix.insert(ROLE.into(), "juicefs-workers".into());
        assert_eq!(role_of(Some(&suffix)), PodRole::Other);
        assert_eq!(role_of(None), PodRole::Other);
    }

    #[test]
    fn bounded_names_are_stable_and_short() {
        let long = format!("{}-juicefs-worker", "x".repeat(60));
        let bounded = bounded_name(&long, WORKLOAD_NAME_LIMIT);
        assert_eq!(bounded.len(), WORKLOAD_NAME_LIMIT);
        assert_eq!(bounded, bounded_name(&long, WORKLOAD_NAME_LIMIT));
        assert_eq!(bounded_name("short", WORKLOAD_NAME_LIMIT), "short");
    }

    #[test]
    fn dns1035_rejects_leading_digit_and_uppercase() {
        assert!(validate_dns1035("jfsdemo").is_ok());
        assert!(validate_dns1035("1demo").unwrap_err().contains("start with a lowercase letter"));
        assert!(validate_dns1035("Demo").is_err());
        assert!(validate_dns1035("demo-").is_err());
        assert!(validate_dns1035(&"a".repeat(64)).is_err());
    }

    fn dns_name() -> impl Strategy<Value = String> {
        "[a-z][a-z0-9-]{0,61}[a-z0-9]"
    }

    proptest! {
        /// Every key is a valid label key, whatever the name length.
        #[test]
        fn every_key_is_a_valid_label_key(ns in dns_name(), name in dns_name()) {
            let keys = DatasetKeys::new(&ns, &name, Some(UID)).unwrap();
            for key in keys.all_node_label_keys("juicefs") {
                prop_assert!(validate_label_key(&key).is_ok(), "{}", key);
            }
            prop_assert!(validate_label_value(&keys.dataset_id()).is_ok());
            prop_assert!(validate_label_value(&keys.exclusive_value(&ns, &name)).is_ok());
        }

        /// The fallback is all-or-nothing: either every key names the dataset or every key is the UID.
        #[test]
        fn fallback_is_all_or_nothing(ns in dns_name(), name in dns_name()) {
            let keys = DatasetKeys::new(&ns, &name, Some(UID)).unwrap();
            let all = keys.all_node_label_keys("juicefs");
            let by_uid = all.iter().filter(|k| k.ends_with(UID)).count();
            prop_assert!(by_uid == 0 || by_uid == all.len());
            prop_assert_eq!(keys.uses_uid(), by_uid == all.len());
            // The fallback happens exactly when some prefixed key would reach the limit.
            let longest = format!("fluid.io/s-h-vineyard-t-{ns}-{name}");
            prop_assert_eq!(keys.uses_uid(), longest.len() >= KEY_LENGTH_LIMIT);
        }

        /// Two computations of the same dataset agree, wherever they happen.
        #[test]
        fn keys_are_a_pure_function_of_identity(ns in dns_name(), name in dns_name()) {
            prop_assert_eq!(DatasetKeys::new(&ns, &name, Some(UID)).unwrap(), DatasetKeys::new(&ns, &name, Some(UID)).unwrap());
        }

        /// Workload names always fit and keep distinct runtimes apart.
        #[test]
        fn workload_names_fit(ns in dns_name(), name in dns_name()) {
            let names = WorkloadNames::new(&ns, &name, "juicefs");
            prop_assert!(names.workers.len() <= WORKLOAD_NAME_LIMIT);
            prop_assert!(names.fuse.len() <= WORKLOAD_NAME_LIMIT);
            prop_assert!(validate_dns1035(&names.workers).is_ok(), "{}", names.workers);
            prop_assert_ne!(names.workers, names.fuse);
        }
    }
}
