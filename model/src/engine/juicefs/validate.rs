//! Checks of a JuiceFS dataset/runtime pair: every problem, each naming its field; plus warnings.
//!
//! Runtime fields are named from the runtime (`spec.replicas`), dataset fields with a `dataset.`
//! prefix (`dataset.spec.mounts[0].mountPoint`). What Fluid accepts but ignores or misreads
//! (more than one mount or level, `quota: 40960`, no `metaurl`) is a warning, not an error, so
//! manifests written for Fluid keep working.

use std::collections::BTreeMap;

use crate::api::JuiceFSRuntime;
use crate::api::dataset::{EncryptOption, Mount};
use crate::engine::EngineInput;
use crate::error::ModelError;

use super::cache::{level_plan, quota_warnings};
use super::command::{
    FORBIDDEN_MOUNT_OPTIONS, KNOWN_MOUNT_OPTIONS, OPTION_BUCKET, OPTION_METAURL, OPTION_STORAGE, env_var_name,
    merged_encrypt_options, merged_options, subdir_of,
};

/// Every problem of the pair, or `Ok`.
pub(crate) fn validate(input: &EngineInput<'_, JuiceFSRuntime>) -> Result<(), Vec<ModelError>> {
    let mut errors = Vec::new();
    validate_runtime(input, &mut errors);
    validate_dataset(input, &mut errors);
    if errors.is_empty() { Ok(()) } else { Err(errors) }
}

fn validate_runtime(input: &EngineInput<'_, JuiceFSRuntime>, errors: &mut Vec<ModelError>) {
    let spec = &input.runtime.spec;
    if let Some(replicas) = spec.replicas
        && replicas < 0
    {
        errors.push(ModelError::invalid("spec.replicas", format!("{replicas} is negative; give 0 or more workers")));
    }
    for (index, level) in spec.tieredstore.iter().flat_map(|store| store.levels.iter()).enumerate() {
        if let Err(error) = level_plan(level, index) {
            errors.push(error);
        }
    }
    if let Err(error) = super::memory::check(input.runtime) {
        errors.push(error);
    }
    if let Some(fuse) = &spec.fuse {
        check_mount_options(&fuse.options, "spec.fuse.options", errors);
        check_volume_mounts(
            input,
            fuse.volume_mounts.iter().map(|m| m.name.as_str()),
            "spec.fuse.volumeMounts",
            errors,
        );
        for key in fuse.node_selector.keys() {
            if let Err(reason) = crate::labels::validate_label_key(key) {
                errors.push(ModelError::invalid("spec.fuse.nodeSelector", reason));
            }
        }
    }
    if let Some(worker) = &spec.worker {
        check_mount_options(&worker.options, "spec.worker.options", errors);
        check_volume_mounts(
            input,
            worker.volume_mounts.iter().map(|m| m.name.as_str()),
            "spec.worker.volumeMounts",
            errors,
        );
    }
}

/// Options must have keys, must not background the mount, and `metrics` must be `host:port`.
fn check_mount_options(options: &BTreeMap<String, String>, field: &str, errors: &mut Vec<ModelError>) {
    for (key, value) in options {
        let name = key.trim().trim_start_matches('-');
        if name.is_empty() {
            errors.push(ModelError::invalid(field, format!("the option {key:?} has an empty name")));
        } else if FORBIDDEN_MOUNT_OPTIONS.contains(&name) {
            errors.push(ModelError::invalid(
                format!("{field}.{name}"),
                "the mount runs in the container's foreground and owns its lifetime; remove this option",
            ));
        } else if name.contains(|c: char| c.is_whitespace() || c == ',' || c == '=') {
            errors.push(ModelError::invalid(
                field,
                format!("the option name {key:?} may not contain spaces, ',' or '='"),
            ));
        } else if name == "metrics" && value.rsplit_once(':').is_none_or(|(_, port)| port.parse::<u16>().is_err()) {
            errors.push(ModelError::invalid(
                format!("{field}.metrics"),
                format!("{value:?} is not host:port, e.g. 0.0.0.0:9567"),
            ));
        }
    }
}

fn check_volume_mounts<'a>(
    input: &EngineInput<'_, JuiceFSRuntime>,
    names: impl Iterator<Item = &'a str>,
    field: &str,
    errors: &mut Vec<ModelError>,
) {
    for (index, name) in names.enumerate() {
        if !input.runtime.spec.volumes.iter().any(|volume| volume.name == name) {
            errors.push(ModelError::invalid(
                format!("{field}[{index}].name"),
                format!("no volume named {name:?} in spec.volumes"),
            ));
        }
    }
}

fn validate_dataset(input: &EngineInput<'_, JuiceFSRuntime>, errors: &mut Vec<ModelError>) {
    let dataset = input.dataset;
    let Some(first) = dataset.spec.mounts.first() else {
        errors.push(ModelError::MissingField { field: "dataset.spec.mounts".to_string() });
        return;
    };
    for key in dataset.spec.shared_options.keys() {
        if key.trim().is_empty() {
            errors.push(ModelError::invalid("dataset.spec.sharedOptions", "an option has an empty name"));
        }
    }
    check_encrypt_options(&dataset.spec.shared_encrypt_options, "dataset.spec.sharedEncryptOptions", errors);
    let mut names: BTreeMap<&str, usize> = BTreeMap::new();
    for (index, mount) in dataset.spec.mounts.iter().enumerate() {
        let field = format!("dataset.spec.mounts[{index}]");
        if !mount.name.is_empty()
            && let Some(first_index) = names.insert(mount.name.as_str(), index)
        {
            errors.push(ModelError::invalid(
                format!("{field}.name"),
                format!("{:?} is also the name of mounts[{first_index}]; mount names must be unique", mount.name),
            ));
        }
        for key in mount.options.keys() {
            if key.trim().is_empty() {
                errors.push(ModelError::invalid(format!("{field}.options"), "an option has an empty name"));
            }
        }
        check_encrypt_options(&mount.encrypt_options, &format!("{field}.encryptOptions"), errors);
    }
    if let Err(reason) = subdir_of(&first.mount_point) {
        errors.push(ModelError::invalid("dataset.spec.mounts[0].mountPoint", reason));
    }
    check_volume_name(input, first, errors);
}

/// `juicefs format` needs a valid volume name; only checked when the engine formats.
fn check_volume_name(input: &EngineInput<'_, JuiceFSRuntime>, mount: &Mount, errors: &mut Vec<ModelError>) {
    let options = merged_options(input.dataset, mount);
    let formats = [OPTION_STORAGE, OPTION_BUCKET].iter().any(|key| options.get(*key).is_some_and(|v| !v.is_empty()));
    if !formats {
        return;
    }
    let name = mount.name.as_str();
    let valid = (3..=63).contains(&name.len())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if !valid {
        errors.push(ModelError::invalid(
            "dataset.spec.mounts[0].name",
            format!(
                "{name:?} is the JuiceFS volume name that `juicefs format` creates: 3 to 63 lowercase letters, digits or '-', not starting or ending with '-'"
            ),
        ));
    }
}

fn check_encrypt_options(options: &[EncryptOption], field: &str, errors: &mut Vec<ModelError>) {
    let mut seen: Vec<String> = Vec::new();
    for (index, option) in options.iter().enumerate() {
        let item = format!("{field}[{index}]");
        match env_var_name(&option.name) {
            None => errors.push(ModelError::invalid(
                format!("{item}.name"),
                format!("{:?} cannot become an environment variable; use letters, digits and '-'", option.name),
            )),
            Some(env) if seen.contains(&env) => errors.push(ModelError::invalid(
                format!("{item}.name"),
                format!("{:?} is given twice (as environment variable {env})", option.name),
            )),
            Some(env) => seen.push(env),
        }
        let secret = &option.value_from.secret_key_ref;
        if secret.name.trim().is_empty() {
            errors.push(ModelError::MissingField { field: format!("{item}.valueFrom.secretKeyRef.name") });
        }
        if secret.key.trim().is_empty() {
            errors.push(ModelError::MissingField { field: format!("{item}.valueFrom.secretKeyRef.key") });
        }
    }
}

/// Things that are valid but probably not what the user meant; the reconcile reports each as a
/// Warning event. Includes [`quota_warnings`].
pub fn warnings(input: &EngineInput<'_, JuiceFSRuntime>) -> Vec<String> {
    let mut warnings = quota_warnings(input.runtime.spec.tieredstore.as_ref());
    let dataset = input.dataset;
    let Some(mount) = dataset.spec.mounts.first() else { return warnings };
    if dataset.spec.mounts.len() > 1 {
        warnings.push(format!(
            "dataset.spec.mounts: JuiceFS serves one mount; only mounts[0] ({:?}) is used and the other {} are ignored",
            mount.name,
            dataset.spec.mounts.len() - 1
        ));
    }
    let options = merged_options(dataset, mount);
    let has_metaurl = options.contains_key(OPTION_METAURL)
        || merged_encrypt_options(dataset, mount).iter().any(|option| option.name.trim() == OPTION_METAURL);
    if !has_metaurl {
        warnings.push(format!(
            "dataset.spec.mounts[0]: no metaurl option; ferrofluid runs the JuiceFS community edition, which needs the metadata engine URL: add an encryptOption named metaurl from a Secret (the mount falls back to the volume name {:?})",
            mount.name
        ));
    }
    for key in options.keys() {
        if !KNOWN_MOUNT_OPTIONS.contains(&key.as_str()) && !key.trim().is_empty() {
            warnings.push(format!(
                "dataset.spec.mounts[0].options.{key}: JuiceFS reads only metaurl, storage and bucket here; use spec.fuse.options of the runtime for mount flags"
            ));
        }
    }
    warnings
}
