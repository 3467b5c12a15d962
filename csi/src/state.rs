//! Stage, publish and volume records on disk, small JSON files under `--state-dir` that survive a
//! plugin restart: one per staged volume, so that `NodeUnstageVolume` (which carries no volume
//! context) knows the label key and clean policy; one per published target (`publish/`), so
//! that FUSE recovery knows what to bind again and which Dataset to tell; one per volume the
//! minimal controller created (`volumes/`), so that `CreateVolume` stays idempotent.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use model::node::{DatasetRef, PublishRecord, StageRecord};
use serde::{Deserialize, Serialize};

/// A publish as the plugin stores it: the model's record, plus what recovery needs to say and
/// check: the Dataset its events go to and the PV's `mount_type`. Records written before these
/// existed read with both unset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredPublish {
    /// The bind that publish made.
    #[serde(flatten)]
    pub record: PublishRecord,
    /// The Dataset FUSE recovery records its events on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset: Option<DatasetRef>,
    /// The PV's `mount_type`: which filesystem must be back at `fluid_path`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount_type: Option<String>,
}

/// A volume `CreateVolume` made: a name, the capacity it answered and the parameters it was
/// made with, which are its volume context.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedVolume {
    /// The volume's name, which is its id.
    pub name: String,
    /// The capacity `CreateVolume` answered.
    pub capacity_bytes: i64,
    /// The `parameters` it was created with.
    pub parameters: BTreeMap<String, String>,
}

use crate::error::{CsiError, Result};

/// The directory of stage records.
#[derive(Debug, Clone)]
pub struct StateStore {
    dir: PathBuf,
}

impl StateStore {
    /// A store in `dir`, created on first write.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The record file of `volume_id`: safe characters kept, the others `%XX`-encoded.
    pub fn path(&self, volume_id: &str) -> PathBuf {
        self.dir.join(file_name(volume_id))
    }

    /// The publish record file of `target_path`, encoded the same way.
    pub fn publish_path(&self, target_path: &str) -> PathBuf {
        self.dir.join(PUBLISH_DIR).join(file_name(target_path.trim_end_matches('/')))
    }

    /// Writes the record atomically (temporary file, then rename).
    pub async fn save(&self, record: &StageRecord) -> Result<()> {
        write_json(&self.path(&record.volume_id), record, "write stage record").await
    }

    /// Remembers a publish until its `NodeUnpublishVolume`.
    pub async fn save_publish(&self, stored: &StoredPublish) -> Result<()> {
        write_json(&self.publish_path(&stored.record.bind.target), stored, "write publish record").await
    }

    /// The record file of the created volume `name`.
    pub fn volume_path(&self, name: &str) -> PathBuf {
        self.dir.join(VOLUMES_DIR).join(file_name(name))
    }

    /// Reads the created volume `name`, `None` if there is none.
    pub async fn load_volume(&self, name: &str) -> Result<Option<CreatedVolume>> {
        read_json(self.volume_path(name), "read volume record").await
    }

    /// Remembers a created volume until its `DeleteVolume`.
    pub async fn save_volume(&self, volume: &CreatedVolume) -> Result<()> {
        write_json(&self.volume_path(&volume.name), volume, "write volume record").await
    }

    /// Forgets a created volume; a missing one is success.
    pub async fn remove_volume(&self, name: &str) -> Result<()> {
        remove_file(self.volume_path(name), "remove volume record").await
    }

    /// Forgets the publish of `target_path`; a missing one is success.
    pub async fn remove_publish(&self, target_path: &str) -> Result<()> {
        remove_file(self.publish_path(target_path), "remove publish record").await
    }

    /// Every remembered publish, in file-name order. A file that cannot be read or parsed is
    /// reported by name beside the others and left in place for a person to look at.
    pub async fn list_publish(&self) -> Result<(Vec<StoredPublish>, Vec<CsiError>)> {
        let dir = self.dir.join(PUBLISH_DIR);
        let mut entries = match tokio::fs::read_dir(&dir).await {
            Ok(entries) => entries,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), Vec::new())),
            Err(source) => return Err(CsiError::Io { op: "list publish records", path: dir, source }),
        };
        let mut paths = Vec::new();
        while let Some(entry) = entries.next_entry().await.map_err(|source| CsiError::Io {
            op: "list publish records",
            path: dir.clone(),
            source,
        })? {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "json") {
                paths.push(path);
            }
        }
        paths.sort();
        let (mut records, mut problems) = (Vec::new(), Vec::new());
        for path in paths {
            match tokio::fs::read(&path).await {
                Ok(bytes) => match serde_json::from_slice(&bytes) {
                    Ok(record) => records.push(record),
                    Err(err) => problems.push(CsiError::State { path, reason: err.to_string() }),
                },
                // Removed by an unpublish since the listing.
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => problems.push(CsiError::Io { op: "read publish record", path, source }),
            }
        }
        Ok((records, problems))
    }

    /// Reads the record of `volume_id`, `None` if there is none.
    pub async fn load(&self, volume_id: &str) -> Result<Option<StageRecord>> {
        read_json(self.path(volume_id), "read stage record").await
    }

    /// Deletes the record of `volume_id`; a missing one is success.
    pub async fn remove(&self, volume_id: &str) -> Result<()> {
        remove_file(self.path(volume_id), "remove stage record").await
    }
}

/// The subdirectory of publish records.
const PUBLISH_DIR: &str = "publish";
/// The subdirectory of created volumes.
const VOLUMES_DIR: &str = "volumes";

/// Reads JSON at `path`, `None` if there is no file.
async fn read_json<T: serde::de::DeserializeOwned>(path: PathBuf, op: &'static str) -> Result<Option<T>> {
    match tokio::fs::read(&path).await {
        Ok(bytes) => {
            serde_json::from_slice(&bytes).map(Some).map_err(|err| CsiError::State { path, reason: err.to_string() })
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(CsiError::Io { op, path, source }),
    }
}

/// A file name for `key`: safe characters kept, the others `%XX`-encoded.
fn file_name(key: &str) -> String {
    let mut name = String::with_capacity(key.len() + 5);
    for byte in key.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.') && !(name.is_empty() && byte == b'.') {
            name.push(char::from(byte));
        } else {
            let _ = write!(name, "%{byte:02X}");
        }
    }
    name.push_str(".json");
    name
}

/// Writes `value` as JSON at `path` atomically (temporary file, then rename).
async fn write_json(path: &Path, value: &impl serde::Serialize, what: &'static str) -> Result<()> {
    let io = |op, path: &Path| {
        let path = path.to_path_buf();
        move |source| CsiError::Io { op, path, source }
    };
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir).await.map_err(io("create state dir", dir))?;
    }
    let tmp = path.with_extension("json.tmp");
    let json = serde_json::to_vec_pretty(value)
        .map_err(|err| CsiError::State { path: path.to_path_buf(), reason: err.to_string() })?;
    tokio::fs::write(&tmp, json).await.map_err(io(what, &tmp))?;
    tokio::fs::rename(&tmp, path).await.map_err(io(what, path))
}

async fn remove_file(path: PathBuf, op: &'static str) -> Result<()> {
    match tokio::fs::remove_file(&path).await {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(CsiError::Io { op, path, source }),
    }
}
