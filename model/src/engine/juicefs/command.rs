//! The shell script the worker and FUSE containers run: an optional `juicefs format`, then `exec juicefs mount`.
//!
//! Fluid calls `/bin/mount.juicefs SOURCE PATH -o k=v,...`; ferrofluid calls `juicefs mount` with
//! real flags, which juicefs 1.x documents and checks. Known juicefs flags become `--key=value`,
//! anything else is a FUSE option passed with `-o`. The mount runs in the foreground (no `-d`) so
//! that the container lives exactly as long as the mount. Secrets never appear in the script:
//! they are environment variables filled from Secrets, expanded by the shell at run time.

use std::collections::BTreeMap;

use crate::api::dataset::{EncryptOption, Mount};
use crate::api::{Dataset, JuiceFSRuntime};
use crate::engine::EngineInput;
use crate::error::ModelError;

use super::cache::{CachePlan, cache_plan};

/// Port of JuiceFS' Prometheus metrics (Fluid's `DefaultMetricsPort`).
pub const METRICS_PORT: i32 = 9567;
/// The dataset option (encrypted or plain) holding the metadata engine URL.
pub const OPTION_METAURL: &str = "metaurl";
/// The dataset option naming the object storage type.
pub const OPTION_STORAGE: &str = "storage";
/// The dataset option naming the bucket URL.
pub const OPTION_BUCKET: &str = "bucket";
/// The dataset option with the object storage access key.
pub const OPTION_ACCESS_KEY: &str = "access-key";
/// The dataset option with the object storage secret key.
pub const OPTION_SECRET_KEY: &str = "secret-key";
/// Dataset mount options the engine reads; others are ignored (with a warning).
pub const KNOWN_MOUNT_OPTIONS: &[&str] = &[OPTION_METAURL, OPTION_STORAGE, OPTION_BUCKET];

/// Flags of `juicefs mount` in juicefs 1.0 to 1.4 (from `juicefs mount --help`, plus global flags).
/// An option with one of these names becomes `--name=value`; any other becomes `-o name=value`.
pub const JUICEFS_MOUNT_FLAGS: &[&str] = &[
    "all-squash",
    "atime-mode",
    "attr-cache",
    "backup-meta",
    "backup-skip-trash",
    "bucket",
    "buffer-size",
    "cache-dir",
    "cache-eviction",
    "cache-expire",
    "cache-items",
    "cache-large-write",
    "cache-mode",
    "cache-partial-only",
    "cache-scan-interval",
    "cache-size",
    "check-storage",
    "consul",
    "custom-labels",
    "debug",
    "dir-entry-cache",
    "disable-transparent-hugepage",
    "download-limit",
    "enable-cap",
    "enable-ioctl",
    "enable-selinux",
    "enable-xattr",
    "entry-cache",
    "fast-statfs",
    "free-space-ratio",
    "get-timeout",
    "heartbeat",
    "hide-internal",
    "io-retries",
    "log-id",
    "max-deletes",
    "max-downloads",
    "max-fuse-io",
    "max-readahead",
    "max-stage-write",
    "max-uploads",
    "metrics",
    "negative-entry-cache",
    "network-interfaces",
    "no-agent",
    "no-bgjob",
    "no-color",
    "no-usage-report",
    "open-cache",
    "open-cache-limit",
    "prefetch",
    "prefix-internal",
    "put-timeout",
    "pyroscope",
    "quiet",
    "read-only",
    "readdir-cache",
    "root-squash",
    "skip-dir-mtime",
    "skip-dir-nlink",
    "sort-dir",
    "storage",
    "storage-class",
    "subdir",
    "tag",
    "trace",
    "umask",
    "upload-delay",
    "upload-hours",
    "upload-limit",
    "verbose",
    "verify-cache-checksum",
    "writeback",
    "writeback-threshold-size",
];

/// Options that would send the mount to the background or off the container's lifetime.
pub const FORBIDDEN_MOUNT_OPTIONS: &[&str] =
    &["background", "d", "foreground", "log", "no-syslog", "update-fstab", "force"];

/// Quotes `text` for a POSIX shell: unchanged if it only has safe characters, else in single quotes.
pub fn shell_quote(text: &str) -> String {
    let safe =
        |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/' | ':' | '=' | '@' | '%' | '+' | ',');
    if !text.is_empty() && text.chars().all(safe) {
        return text.to_string();
    }
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// The environment variable of an encrypted option: upper case, `-` as `_` (`access-key` → `ACCESS_KEY`).
/// `None` when the result is not a valid variable name.
pub fn env_var_name(option_name: &str) -> Option<String> {
    let name: String =
        option_name.trim().chars().map(|c| if c == '-' { '_' } else { c.to_ascii_uppercase() }).collect();
    let valid = !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
    valid.then_some(name)
}

/// The sub-directory a `juicefs://` mount point names: `juicefs:///demo` → `Some("/demo")`, root → `None`.
pub fn subdir_of(mount_point: &str) -> Result<Option<String>, String> {
    let rest = mount_point.strip_prefix("juicefs://").ok_or_else(|| {
        format!("{mount_point:?} must start with juicefs:// (e.g. juicefs:///demo for sub-directory /demo)")
    })?;
    if rest.is_empty() {
        return Ok(None);
    }
    if !rest.starts_with('/') {
        return Err(format!(
            "{mount_point:?} names no absolute sub-directory; write juicefs:///{rest} (three slashes) for /{rest}"
        ));
    }
    if rest.split('/').any(|part| part == ".." || part == ".") {
        return Err(format!("{mount_point:?} must not contain '.' or '..'"));
    }
    let trimmed = rest.trim_end_matches('/');
    Ok((!trimmed.is_empty()).then(|| trimmed.to_string()))
}

/// Dataset options of the mount JuiceFS uses: shared options overridden by the mount's own.
pub(crate) fn merged_options(dataset: &Dataset, mount: &Mount) -> BTreeMap<String, String> {
    let mut options = dataset.spec.shared_options.clone();
    options.extend(mount.options.clone());
    options
}

/// Encrypted options of the mount: shared ones overridden by the mount's own, by name.
pub(crate) fn merged_encrypt_options<'a>(dataset: &'a Dataset, mount: &'a Mount) -> Vec<&'a EncryptOption> {
    let mut by_name: BTreeMap<&str, &EncryptOption> = BTreeMap::new();
    for option in dataset.spec.shared_encrypt_options.iter().chain(&mount.encrypt_options) {
        by_name.insert(option.name.trim(), option);
    }
    by_name.into_values().collect()
}

/// True when the PV is read-only for everybody: Fluid mounts read-only when any access mode is
/// `ReadOnlyMany`, and an empty list means Fluid's default, `ReadOnlyMany`.
pub(crate) fn is_read_only(dataset: &Dataset) -> bool {
    dataset.spec.access_modes.is_empty() || dataset.spec.access_modes.iter().any(|mode| mode == "ReadOnlyMany")
}

/// Which container the script is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// The cache worker: its mount stays inside the container.
    Worker,
    /// The FUSE client: its mount propagates to the host.
    Fuse,
}

/// A mount command, before rendering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MountScript {
    /// META-URL argument, already shell-ready (`"${METAURL}"` or quoted text).
    source: String,
    /// `juicefs format` arguments after `format`, shell-ready; `None` skips the format.
    format_args: Option<Vec<String>>,
    /// The mount point.
    mount_path: String,
    /// `juicefs mount` flags, name → value (`""` for a bare flag).
    flags: BTreeMap<String, String>,
    /// FUSE `-o` options, each `name` or `name=value`.
    fuse_options: Vec<String>,
}

impl MountScript {
    fn render(&self) -> String {
        let mut lines = vec!["set -e".to_string()];
        if let Some(args) = &self.format_args {
            lines.push(format!("juicefs format {}", args.join(" ")));
        }
        let mut mount = vec!["exec juicefs mount".to_string(), self.source.clone(), shell_quote(&self.mount_path)];
        for (name, value) in &self.flags {
            mount.push(if value.is_empty() { format!("--{name}") } else { format!("--{name}={}", shell_quote(value)) });
        }
        if !self.fuse_options.is_empty() {
            mount.push("-o".to_string());
            mount.push(shell_quote(&self.fuse_options.join(",")));
        }
        lines.push(mount.join(" "));
        lines.join("\n") + "\n"
    }
}

/// The mount of the dataset JuiceFS uses: `mounts[0]` (Fluid supports one mount for JuiceFS).
pub(crate) fn first_mount(dataset: &Dataset) -> Result<&Mount, ModelError> {
    dataset.spec.mounts.first().ok_or_else(|| ModelError::MissingField { field: "dataset.spec.mounts".to_string() })
}

/// Builds the script of `role` for the dataset/runtime pair.
pub(crate) fn mount_script(
    input: &EngineInput<'_, JuiceFSRuntime>,
    role: Role,
    cache: &CachePlan,
) -> Result<String, ModelError> {
    let dataset = input.dataset;
    let mount = first_mount(dataset)?;
    let options = merged_options(dataset, mount);
    let encrypted = merged_encrypt_options(dataset, mount);
    let has_secret = |name: &str| encrypted.iter().any(|option| option.name.trim() == name);

    let source = if has_secret(OPTION_METAURL) {
        "\"${METAURL}\"".to_string()
    } else if let Some(url) = options.get(OPTION_METAURL) {
        shell_quote(url)
    } else {
        // Fluid's fallback (the enterprise edition mounts by volume name).
        shell_quote(&mount.name)
    };

    let storage = options.get(OPTION_STORAGE).filter(|v| !v.is_empty());
    let bucket = options.get(OPTION_BUCKET).filter(|v| !v.is_empty());
    let format_args = (storage.is_some() || bucket.is_some()).then(|| {
        let mut args: Vec<String> = input
            .runtime
            .spec
            .configs
            .iter()
            .flatten()
            .map(|config| config.trim())
            .filter(|config| !config.is_empty())
            .map(|config| shell_quote(&format!("--{config}")))
            .collect();
        if let Some(storage) = storage {
            args.push(format!("--storage={}", shell_quote(storage)));
        }
        if let Some(bucket) = bucket {
            args.push(format!("--bucket={}", shell_quote(bucket)));
        }
        if has_secret(OPTION_ACCESS_KEY) {
            args.push("--access-key=\"${ACCESS_KEY}\"".to_string());
        }
        if has_secret(OPTION_SECRET_KEY) {
            args.push("--secret-key=\"${SECRET_KEY}\"".to_string());
        }
        // As Fluid: with only one of storage/bucket, never rewrite an existing volume's settings.
        if storage.is_none() || bucket.is_none() {
            args.push("--no-update".to_string());
        }
        args.push(source.clone());
        args.push(shell_quote(&mount.name));
        args
    });

    // Engine defaults first; the user's options override them, as in Fluid.
    let mut merged: BTreeMap<String, String> = BTreeMap::new();
    merged.insert("cache-dir".into(), cache.cache_dir_flag());
    if let Some(mib) = cache.cache_size_mib() {
        merged.insert("cache-size".into(), mib.to_string());
    }
    if let Some(ratio) = &cache.free_space_ratio {
        merged.insert("free-space-ratio".into(), ratio.clone());
    }
    let subdir = subdir_of(&mount.mount_point)
        .map_err(|reason| ModelError::invalid("dataset.spec.mounts[0].mountPoint", reason))?;
    if let Some(subdir) = subdir {
        merged.insert("subdir".into(), subdir);
    }
    // Fluid also adds `ro` here, but `juicefs mount --read-only --subdir X` fails when X does not
    // exist yet (juicefs creates it, which a read-only mount cannot): CSI publish enforces
    // read-only with the bind mount instead. The long caches of read-only datasets stay.
    if is_read_only(dataset) {
        merged.insert("attr-cache".into(), "7200".into());
        merged.insert("entry-cache".into(), "7200".into());
    }
    merged.insert("metrics".into(), format!("0.0.0.0:{METRICS_PORT}"));
    merged.insert("allow_other".into(), String::new());
    let user_options = match role {
        Role::Fuse => input.runtime.spec.fuse.as_ref().map(|fuse| &fuse.options),
        Role::Worker => input.runtime.spec.worker.as_ref().map(|worker| &worker.options),
    };
    for (name, value) in user_options.into_iter().flatten() {
        merged.insert(name.trim().trim_start_matches('-').to_string(), value.clone());
    }

    let mut flags = BTreeMap::new();
    let mut fuse_options = Vec::new();
    for (name, value) in merged {
        if FORBIDDEN_MOUNT_OPTIONS.contains(&name.as_str()) {
            continue;
        }
        if JUICEFS_MOUNT_FLAGS.contains(&name.as_str()) {
            flags.insert(name, value);
        } else if value.is_empty() {
            fuse_options.push(name);
        } else {
            fuse_options.push(format!("{name}={value}"));
        }
    }
    let script = MountScript { source, format_args, mount_path: input.fluid_path(), flags, fuse_options };
    Ok(script.render())
}

/// The FUSE container's script: format if the dataset gives `storage`/`bucket`, then mount at
/// the PV's `fluid_path` in the foreground. The container runs it as `sh -c SCRIPT` with
/// `METAURL`, `ACCESS_KEY`, `SECRET_KEY` (and any other encrypted option) in its environment.
pub fn fuse_mount_script(input: &EngineInput<'_, JuiceFSRuntime>) -> Result<String, ModelError> {
    let cache = cache_plan(input.runtime.spec.tieredstore.as_ref())?;
    mount_script(input, Role::Fuse, &cache)
}

/// The worker container's script: the same mount with the worker's options, inside the container.
pub fn worker_mount_script(input: &EngineInput<'_, JuiceFSRuntime>) -> Result<String, ModelError> {
    let cache = cache_plan(input.runtime.spec.tieredstore.as_ref())?;
    mount_script(input, Role::Worker, &cache)
}

/// Fluid's `fluid_path`: `{mount_root}/juicefs/{ns}/{name}/juicefs-fuse`.
pub(crate) fn fluid_path(mount_root: &str, namespace: &str, name: &str) -> String {
    format!("{}/juicefs/{namespace}/{name}/juicefs-fuse", mount_root.trim_end_matches('/'))
}

/// The host directory the FUSE pod mounts with Bidirectional propagation: `fluid_path`'s parent.
pub(crate) fn host_mount_path(mount_root: &str, namespace: &str, name: &str) -> String {
    format!("{}/juicefs/{namespace}/{name}", mount_root.trim_end_matches('/'))
}

impl EngineInput<'_, JuiceFSRuntime> {
    /// The runtime's namespace (the dataset's, the two being paired by namespace and name).
    pub(crate) fn namespace(&self) -> String {
        self.runtime.metadata.namespace.clone().or_else(|| self.dataset.metadata.namespace.clone()).unwrap_or_default()
    }

    /// The runtime's name.
    pub(crate) fn name(&self) -> String {
        self.runtime.metadata.name.clone().unwrap_or_default()
    }

    /// The PV's `fluid_path`.
    pub(crate) fn fluid_path(&self) -> String {
        fluid_path(&self.config.mount_root, &self.namespace(), &self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SHELL_SPECIAL: &str = "$`\\\"' ;&|<>()*?[]{}~#!\n\t";

    #[test]
    fn quoting_leaves_safe_text_alone() {
        assert_eq!(
            shell_quote("/runtime-mnt/juicefs/default/jfsdemo/juicefs-fuse"),
            "/runtime-mnt/juicefs/default/jfsdemo/juicefs-fuse"
        );
        assert_eq!(shell_quote("http://minio:9000/minio/test"), "http://minio:9000/minio/test");
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn quoting_defuses_injection() {
        assert_eq!(shell_quote("$(rm -rf /)"), "'$(rm -rf /)'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote("a b; reboot"), "'a b; reboot'");
        assert_eq!(shell_quote("`id`"), "'`id`'");
        assert_eq!(shell_quote("x\ny"), "'x\ny'");
    }

    #[test]
    fn env_names_follow_fluid() {
        assert_eq!(env_var_name("metaurl").as_deref(), Some("METAURL"));
        assert_eq!(env_var_name("access-key").as_deref(), Some("ACCESS_KEY"));
        assert_eq!(env_var_name("secret-key").as_deref(), Some("SECRET_KEY"));
        assert_eq!(env_var_name("token").as_deref(), Some("TOKEN"));
        assert_eq!(env_var_name("a.b"), None);
        assert_eq!(env_var_name("1x"), None);
        assert_eq!(env_var_name(""), None);
    }

    #[test]
    fn subdirs_of_mount_points() {
        assert_eq!(subdir_of("juicefs:///demo"), Ok(Some("/demo".to_string())));
        assert_eq!(subdir_of("juicefs:///demo/"), Ok(Some("/demo".to_string())));
        assert_eq!(subdir_of("juicefs:///"), Ok(None));
        assert_eq!(subdir_of("juicefs://"), Ok(None));
        assert!(subdir_of("juicefs://demo").unwrap_err().contains("three slashes"));
        assert!(subdir_of("s3://bucket/x").unwrap_err().contains("must start with juicefs://"));
        assert!(subdir_of("juicefs:///a/../b").is_err());
    }

    #[test]
    fn paths_follow_fluid() {
        assert_eq!(
            fluid_path("/runtime-mnt", "default", "jfsdemo"),
            "/runtime-mnt/juicefs/default/jfsdemo/juicefs-fuse"
        );
        assert_eq!(
            fluid_path("/runtime-mnt/", "default", "jfsdemo"),
            "/runtime-mnt/juicefs/default/jfsdemo/juicefs-fuse"
        );
        assert_eq!(host_mount_path("/runtime-mnt", "default", "jfsdemo"), "/runtime-mnt/juicefs/default/jfsdemo");
    }

    proptest! {
        /// Whatever the text, `sh -c "printf %s <quoted>"` would print it back: the quoted form
        /// is either free of shell syntax or one single-quoted word with `'\''` for each quote.
        #[test]
        fn quoting_is_one_inert_word(text in "\\PC{0,40}") {
            let quoted = shell_quote(&text);
            if quoted.starts_with('\'') {
                let inner = &quoted[1..quoted.len() - 1];
                prop_assert_eq!(inner.replace(r"'\''", "'"), text.clone());
                prop_assert!(!inner.replace(r"'\''", "").contains('\''));
            } else {
                prop_assert_eq!(&quoted, &text);
                let special = |c: char| SHELL_SPECIAL.contains(c);
                prop_assert!(!quoted.contains(special));
            }
        }
    }
}
