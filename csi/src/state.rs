//! Stage records on disk: one small JSON file per volume id under `--state-dir`, so that
//! `NodeUnstageVolume` (which carries no volume context) knows the label key and clean policy,
//! even after the plugin restarted.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use model::node::StageRecord;

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
        let mut name = String::with_capacity(volume_id.len() + 5);
        for byte in volume_id.bytes() {
            if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.') && !(name.is_empty() && byte == b'.')
            {
                name.push(char::from(byte));
            } else {
                let _ = write!(name, "%{byte:02X}");
            }
        }
        name.push_str(".json");
        self.dir.join(name)
    }

    /// Writes the record atomically (temporary file, then rename).
    pub async fn save(&self, record: &StageRecord) -> Result<()> {
        let io = |op, path: &Path| {
            let path = path.to_path_buf();
            move |source| CsiError::Io { op, path, source }
        };
        tokio::fs::create_dir_all(&self.dir).await.map_err(io("create state dir", &self.dir))?;
        let path = self.path(&record.volume_id);
        let tmp = path.with_extension("json.tmp");
        let json = serde_json::to_vec_pretty(record)
            .map_err(|err| CsiError::State { path: path.clone(), reason: err.to_string() })?;
        tokio::fs::write(&tmp, json).await.map_err(io("write stage record", &tmp))?;
        tokio::fs::rename(&tmp, &path).await.map_err(io("rename stage record", &path))
    }

    /// Reads the record of `volume_id`, `None` if there is none.
    pub async fn load(&self, volume_id: &str) -> Result<Option<StageRecord>> {
        let path = self.path(volume_id);
        match tokio::fs::read(&path).await {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|err| CsiError::State { path, reason: err.to_string() }),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(CsiError::Io { op: "read stage record", path, source }),
        }
    }

    /// Deletes the record of `volume_id`; a missing one is success.
    pub async fn remove(&self, volume_id: &str) -> Result<()> {
        let path = self.path(volume_id);
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(CsiError::Io { op: "remove stage record", path, source }),
        }
    }
}
