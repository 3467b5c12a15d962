//! The tieredstore as JuiceFS sees it: one cache tier of one or more directories and one total size.
//!
//! JuiceFS has multi-directory caches but no tiers; like Fluid, only `levels[0]` is used and
//! further levels only produce a warning. `--cache-size` is in MiB while a Kubernetes quantity
//! without a unit is bytes, so sizes are parsed to bytes and rounded *up* to whole MiB.

use crate::api::common::{Level, MediumType, TieredStore, VolumeType};
use crate::error::ModelError;
use crate::quantity::{Quantity, bytes_to_mib_ceil, parse_bytes};

/// Fluid's cache directory when the runtime has no tieredstore.
pub const DEFAULT_CACHE_DIR: &str = "/var/jfsCache";

const MIB_BYTES: u64 = 1 << 20;

/// One cache directory and its share of the quota.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheDir {
    /// Absolute path, mounted at the same path in the container.
    pub path: String,
    /// This directory's share: `quota / paths` or its `quotaList` entry; `None` without a quota.
    pub quota_bytes: Option<u64>,
}

/// The cache of a worker or FUSE client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachePlan {
    /// Medium of the tier (`None` for the default hostPath directory).
    pub medium: Option<MediumType>,
    /// How the directories are provided.
    pub volume_type: VolumeType,
    /// The directories, in the order given.
    pub dirs: Vec<CacheDir>,
    /// Whole tier in bytes (`quota`, or the sum of `quotaList`); `None` leaves JuiceFS' default.
    pub total_quota_bytes: Option<u64>,
    /// `--free-space-ratio`, from the level's `low`, as Fluid maps it.
    pub free_space_ratio: Option<String>,
}

impl CachePlan {
    /// `--cache-dir`: the paths joined with `:`.
    pub fn cache_dir_flag(&self) -> String {
        self.dirs.iter().map(|dir| dir.path.as_str()).collect::<Vec<_>>().join(":")
    }

    /// `--cache-size` in MiB, rounded up so a small quota never becomes 0 ("no cache").
    pub fn cache_size_mib(&self) -> Option<u64> {
        self.total_quota_bytes.map(bytes_to_mib_ceil)
    }
}

/// Splits a level's `path`: Fluid documents `,` for levels and `:` for JuiceFS; both are accepted.
pub fn split_paths(path: &str) -> Vec<String> {
    path.split([',', ':']).map(|part| part.trim().to_string()).collect()
}

fn level_field(index: usize, name: &str) -> String {
    format!("spec.tieredstore.levels[{index}].{name}")
}

/// Parses the quota list, one entry per path.
fn quota_list_bytes(list: &str, field: &str) -> Result<Vec<u64>, ModelError> {
    list.split(',')
        .map(|entry| {
            parse_bytes(entry.trim()).map_err(|reason| ModelError::BadQuantity {
                field: field.to_string(),
                value: entry.trim().to_string(),
                reason,
            })
        })
        .collect()
}

/// The cache plan of level `index`, checked. Errors name the level's fields.
pub fn level_plan(level: &Level, index: usize) -> Result<CachePlan, ModelError> {
    // Field names are formatted only for an error: this runs on every reconcile.
    let field = |name: &str| level_field(index, name);
    let raw_path = level.path.as_deref().map(str::trim).unwrap_or_default();
    if raw_path.is_empty() {
        return Err(ModelError::MissingField { field: field("path") });
    }
    let paths = split_paths(raw_path);
    for path in &paths {
        check_cache_path(path).map_err(|reason| ModelError::invalid(field("path"), reason))?;
    }
    let volume_type = level.volume_type.unwrap_or_default();
    if volume_type == VolumeType::VolumeTemplate {
        return Err(ModelError::invalid(
            level_field(index, "volumeType"),
            "volumeTemplate is not supported for JuiceFS cache directories; use hostPath or emptyDir",
        ));
    }
    let quota_bytes = match &level.quota {
        Some(quota) => Some(positive_bytes(quota, || field("quota"))?),
        None => None,
    };
    let per_path: Vec<Option<u64>> = match (&level.quota_list, quota_bytes) {
        (Some(list), _) => {
            let field = level_field(index, "quotaList");
            let entries = quota_list_bytes(list, &field)?;
            if entries.len() != paths.len() {
                return Err(ModelError::invalid(
                    field,
                    format!(
                        "has {} entries but path has {} directories; give one quota per directory",
                        entries.len(),
                        paths.len()
                    ),
                ));
            }
            if entries.contains(&0) {
                return Err(ModelError::invalid(
                    field,
                    "a quota of 0 leaves a directory without cache; remove the directory instead",
                ));
            }
            entries.into_iter().map(Some).collect()
        }
        (None, Some(total)) => split_evenly(total, paths.len()).into_iter().map(Some).collect(),
        (None, None) => vec![None; paths.len()],
    };
    // quotaList wins over quota, as in Fluid's other engines.
    let total_quota_bytes = match &level.quota_list {
        Some(_) => Some(per_path.iter().flatten().fold(0u64, |sum, bytes| sum.saturating_add(*bytes))),
        None => quota_bytes,
    };
    let (low, high) = (
        watermark(level.low.as_deref()).map_err(|reason| ModelError::invalid(field("low"), reason))?,
        watermark(level.high.as_deref()).map_err(|reason| ModelError::invalid(field("high"), reason))?,
    );
    if let (Some(low), Some(high)) = (low, high)
        && high < low
    {
        return Err(ModelError::invalid(
            level_field(index, "high"),
            format!("high watermark {high} is below low watermark {low}; high must be at least low"),
        ));
    }
    Ok(CachePlan {
        medium: Some(level.medium_type),
        volume_type,
        dirs: paths.into_iter().zip(per_path).map(|(path, quota_bytes)| CacheDir { path, quota_bytes }).collect(),
        total_quota_bytes,
        free_space_ratio: level.low.as_ref().map(|low| low.trim().to_string()),
    })
}

/// The cache plan of a runtime: `levels[0]`, or Fluid's default `/var/jfsCache` hostPath.
pub fn cache_plan(tieredstore: Option<&TieredStore>) -> Result<CachePlan, ModelError> {
    match tieredstore.and_then(|store| store.levels.first()) {
        Some(level) => level_plan(level, 0),
        None => Ok(CachePlan {
            medium: None,
            volume_type: VolumeType::HostPath,
            dirs: vec![CacheDir { path: DEFAULT_CACHE_DIR.to_string(), quota_bytes: None }],
            total_quota_bytes: None,
            free_space_ratio: None,
        }),
    }
}

/// Warnings about quotas that are valid but almost certainly not what the user meant.
///
/// Fluid's own sample writes `quota: 40960` and says "the unit is MiB", but a quantity without a
/// unit is bytes. Rejecting it would break manifests written for Fluid, so it stays valid (the
/// cache becomes 1 MiB, where Fluid's floor division makes it 0 = no cache) and the reconcile
/// turns this into a Warning event.
pub fn quota_warnings(tieredstore: Option<&TieredStore>) -> Vec<String> {
    let mut warnings = Vec::new();
    let Some(store) = tieredstore else { return warnings };
    for (index, level) in store.levels.iter().enumerate() {
        if let Some(quota) = &level.quota
            && let Ok(bytes) = quota.to_bytes("")
            && bytes > 0
            && bytes < MIB_BYTES
        {
            warnings.push(small_quota_warning(&level_field(index, "quota"), quota, bytes));
        }
        if let Some(list) = &level.quota_list {
            for entry in list.split(',').map(str::trim) {
                if let Ok(bytes) = parse_bytes(entry)
                    && bytes > 0
                    && bytes < MIB_BYTES
                {
                    warnings.push(small_quota_warning(&level_field(index, "quotaList"), &Quantity::from(entry), bytes));
                }
            }
        }
    }
    if store.levels.len() > 1 {
        warnings.push(format!(
            "spec.tieredstore.levels: JuiceFS has one cache tier; only levels[0] is used and the other {} level(s) are ignored (put several directories in levels[0].path instead)",
            store.levels.len() - 1
        ));
    }
    warnings
}

fn small_quota_warning(field: &str, quota: &Quantity, bytes: u64) -> String {
    let size = if bytes.is_multiple_of(1024) { format!("{} KiB", bytes / 1024) } else { format!("{bytes} bytes") };
    format!(
        "{field}: {quota} is {size}: Kubernetes quantities without a unit are bytes; did you mean {quota}Mi? The cache size is rounded up to 1 MiB"
    )
}

/// Parses a quantity that must be a positive size.
fn positive_bytes(quantity: &Quantity, field: impl Fn() -> String) -> Result<u64, ModelError> {
    match quantity.to_bytes("") {
        Ok(0) => Err(ModelError::invalid(
            field(),
            "a quota of 0 means no cache; give a size such as 2Gi, or remove the level",
        )),
        Ok(bytes) => Ok(bytes),
        // Parsed again for the error, which names the field (formatted only on this path).
        Err(_) => quantity.to_bytes(&field()),
    }
}

/// `total` split over `parts`, the remainder going to the first directories, so the sum is exact.
fn split_evenly(total: u64, parts: usize) -> Vec<u64> {
    let parts_u64 = parts.max(1) as u64;
    let (share, remainder) = (total / parts_u64, total % parts_u64);
    (0..parts_u64).map(|i| share + u64::from(i < remainder)).collect()
}

/// A watermark ratio in `[0, 1]`.
fn watermark(value: Option<&str>) -> Result<Option<f64>, String> {
    let Some(text) = value.map(str::trim) else { return Ok(None) };
    match text.parse::<f64>() {
        Ok(ratio) if (0.0..=1.0).contains(&ratio) => Ok(Some(ratio)),
        _ => Err(format!("{text:?} is not a ratio between 0 and 1, e.g. \"0.9\"")),
    }
}

/// A cache directory must be absolute, normalised, and free of `..`.
fn check_cache_path(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("has an empty directory between separators".to_string());
    }
    if !path.starts_with('/') {
        return Err(format!("{path:?} must be an absolute path"));
    }
    if path.split('/').any(|part| part == "..") {
        return Err(format!("{path:?} must not contain '..'"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn level(path: &str, quota: Option<&str>) -> Level {
        Level {
            medium_type: MediumType::Memory,
            volume_type: None,
            volume_source: None,
            path: Some(path.to_string()),
            quota: quota.map(Quantity::from),
            quota_list: None,
            high: None,
            low: None,
        }
    }

    #[test]
    fn seed_quota_of_40960_bytes_is_one_mib_and_a_warning() {
        let plan = level_plan(&level("/dev/shm", Some("40960")), 0).unwrap();
        assert_eq!(plan.total_quota_bytes, Some(40960));
        assert_eq!(plan.cache_size_mib(), Some(1));
        let store = TieredStore { levels: vec![level("/dev/shm", Some("40960"))] };
        let warnings = quota_warnings(Some(&store));
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0].starts_with("spec.tieredstore.levels[0].quota: 40960 is 40 KiB: Kubernetes quantities without a unit are bytes; did you mean 40960Mi?"),
            "{}",
            warnings[0]
        );
    }

    #[test]
    fn binary_units_become_mib() {
        assert_eq!(level_plan(&level("/dev/shm", Some("2Gi")), 0).unwrap().cache_size_mib(), Some(2048));
        assert_eq!(level_plan(&level("/dev/shm", Some("1.5Gi")), 0).unwrap().cache_size_mib(), Some(1536));
        assert_eq!(level_plan(&level("/dev/shm", Some("40960Mi")), 0).unwrap().cache_size_mib(), Some(40960));
        // Decimal units round up: 1G is 953.67 MiB.
        assert_eq!(level_plan(&level("/dev/shm", Some("1G")), 0).unwrap().cache_size_mib(), Some(954));
        assert!(quota_warnings(Some(&TieredStore { levels: vec![level("/dev/shm", Some("2Gi"))] })).is_empty());
    }

    #[test]
    fn quota_is_split_evenly_over_paths_and_the_flag_joins_with_colons() {
        let plan = level_plan(&level("/mnt/a,/mnt/b,/mnt/c", Some("10")), 0).unwrap();
        assert_eq!(plan.cache_dir_flag(), "/mnt/a:/mnt/b:/mnt/c");
        let shares: Vec<_> = plan.dirs.iter().map(|d| d.quota_bytes.unwrap()).collect();
        assert_eq!(shares, vec![4, 3, 3]);
        assert_eq!(plan.total_quota_bytes, Some(10));
        // JuiceFS' own separator works too.
        let plan = level_plan(&level("/mnt/cache1:/mnt/cache2", Some("40Gi")), 0).unwrap();
        assert_eq!(plan.dirs.len(), 2);
        assert_eq!(plan.cache_size_mib(), Some(40 * 1024));
    }

    #[test]
    fn quota_list_gives_one_quota_per_path_and_sums_to_the_cache_size() {
        let mut lvl = level("/mnt/a,/mnt/b", None);
        lvl.quota_list = Some("1Gi,512Mi".to_string());
        let plan = level_plan(&lvl, 0).unwrap();
        assert_eq!(plan.dirs[0].quota_bytes, Some(1 << 30));
        assert_eq!(plan.dirs[1].quota_bytes, Some(512 << 20));
        assert_eq!(plan.cache_size_mib(), Some(1536));
    }

    #[test]
    fn quota_list_count_must_match_paths() {
        let mut lvl = level("/mnt/a,/mnt/b", None);
        lvl.quota_list = Some("1Gi".to_string());
        let err = level_plan(&lvl, 2).unwrap_err();
        assert_eq!(err.field(), Some("spec.tieredstore.levels[2].quotaList"));
        assert!(err.to_string().contains("1 entries but path has 2"), "{err}");
    }

    #[test]
    fn bad_levels_name_their_field() {
        let err = level_plan(&level("/dev/shm", Some("lots")), 0).unwrap_err();
        assert_eq!(err.field(), Some("spec.tieredstore.levels[0].quota"));
        let err = level_plan(&level("/dev/shm", Some("0")), 0).unwrap_err();
        assert_eq!(err.field(), Some("spec.tieredstore.levels[0].quota"));
        let err = level_plan(&level("relative/dir", None), 1).unwrap_err();
        assert_eq!(err.field(), Some("spec.tieredstore.levels[1].path"));
        let err = level_plan(&level("/a,,/b", None), 0).unwrap_err();
        assert_eq!(err.field(), Some("spec.tieredstore.levels[0].path"));
        let err = level_plan(&level("/a/../etc", None), 0).unwrap_err();
        assert_eq!(err.field(), Some("spec.tieredstore.levels[0].path"));
        let mut ratio = level("/x", None);
        ratio.low = Some("most".into());
        let err = level_plan(&ratio, 3).unwrap_err();
        assert_eq!(err.field(), Some("spec.tieredstore.levels[3].low"));
        assert!(err.to_string().contains("\"most\" is not a ratio between 0 and 1"), "{err}");
        ratio.low = None;
        ratio.high = Some("1.5".into());
        assert_eq!(level_plan(&ratio, 0).unwrap_err().field(), Some("spec.tieredstore.levels[0].high"));
        let mut no_path = level("/x", None);
        no_path.path = None;
        assert_eq!(
            level_plan(&no_path, 0).unwrap_err(),
            ModelError::MissingField { field: "spec.tieredstore.levels[0].path".into() }
        );
        let mut template = level("/x", None);
        template.volume_type = Some(VolumeType::VolumeTemplate);
        assert_eq!(level_plan(&template, 0).unwrap_err().field(), Some("spec.tieredstore.levels[0].volumeType"));
    }

    #[test]
    fn high_must_not_be_below_low() {
        let mut lvl = level("/dev/shm", Some("1Gi"));
        lvl.high = Some("0.5".into());
        lvl.low = Some("0.7".into());
        assert_eq!(level_plan(&lvl, 0).unwrap_err().field(), Some("spec.tieredstore.levels[0].high"));
        lvl.high = Some("0.95".into());
        let plan = level_plan(&lvl, 0).unwrap();
        assert_eq!(plan.free_space_ratio.as_deref(), Some("0.7"));
        lvl.low = Some("1.5".into());
        assert_eq!(level_plan(&lvl, 0).unwrap_err().field(), Some("spec.tieredstore.levels[0].low"));
    }

    #[test]
    fn no_tieredstore_uses_fluids_default_directory() {
        let plan = cache_plan(None).unwrap();
        assert_eq!(plan.cache_dir_flag(), DEFAULT_CACHE_DIR);
        assert_eq!(plan.cache_size_mib(), None);
        assert_eq!(cache_plan(Some(&TieredStore::default())).unwrap(), plan);
    }

    #[test]
    fn extra_levels_are_ignored_with_a_warning() {
        let store = TieredStore { levels: vec![level("/dev/shm", Some("1Gi")), level("/mnt/ssd", Some("10Gi"))] };
        assert_eq!(cache_plan(Some(&store)).unwrap().cache_size_mib(), Some(1024));
        let warnings = quota_warnings(Some(&store));
        assert!(warnings.iter().any(|w| w.contains("only levels[0] is used")), "{warnings:?}");
    }

    proptest! {
        /// A positive quota never becomes a zero cache size, and never loses more than a MiB.
        #[test]
        fn cache_size_rounds_up(bytes in 1u64..(1 << 50)) {
            let plan = level_plan(&level("/c", Some(&bytes.to_string())), 0).unwrap();
            let mib = plan.cache_size_mib().unwrap();
            prop_assert!(mib >= 1);
            prop_assert!(mib * MIB_BYTES >= bytes);
            prop_assert!((mib - 1) * MIB_BYTES < bytes);
        }

        /// An even split always sums to the whole quota.
        #[test]
        fn even_split_is_exact(total in 0u64..u64::MAX / 2, parts in 1usize..16) {
            let shares = split_evenly(total, parts);
            prop_assert_eq!(shares.len(), parts);
            prop_assert_eq!(shares.iter().sum::<u64>(), total);
        }
    }
}
