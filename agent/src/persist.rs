//! Model snapshots on disk (`[snapshots]`): one file per model, `<dir>/<host>/<model>.snap`,
//! written atomically (a temporary file, fsync, rename, fsync of the directory), so that a
//! power cut leaves either the old snapshot or the new one, never half of one. A snapshot
//! that cannot be used is moved aside to `<model>.snap.bad` (one, the latest) so that it
//! can be looked at, and the model learns afresh.
//!
//! The bytes are the decision path's ([`crate::decide::snapshot`]); this module only
//! stores them.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lookout_shared::config::Invalid;
use lookout_shared::duration::HumanDuration;
use serde::{Deserialize, Serialize};

/// `[snapshots]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SnapshotConfig {
    /// Save models at `interval` and at shutdown, and take them back at start.
    pub enabled: bool,
    /// Where; empty: `models` in the state directory (see `[outbox] dir`).
    pub dir: String,
    pub interval: HumanDuration,
}

impl Default for SnapshotConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            dir: String::new(),
            interval: HumanDuration::from_secs(300),
        }
    }
}

/// The resolved `[snapshots]` table; `None` in [`crate::config::Settings`] when off.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotSettings {
    /// One sub-directory per host.
    pub dir: PathBuf,
    pub interval: Duration,
}

impl SnapshotConfig {
    pub fn resolve(&self) -> Result<Option<SnapshotSettings>, Invalid> {
        if !self.enabled {
            return Ok(None);
        }
        if self.interval.0 < Duration::from_secs(1) {
            return Err(Invalid::new("interval", "must be at least 1s"));
        }
        Ok(Some(SnapshotSettings {
            dir: if self.dir.is_empty() {
                lookout_shared::config::state_dir("models")
            } else {
                PathBuf::from(&self.dir)
            },
            interval: self.interval.0,
        }))
    }
}

/// One host's snapshots.
#[derive(Clone, Debug)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    pub fn new(root: &Path, host: &str) -> Self {
        Self {
            dir: root.join(lookout_shared::topics::sanitize_level(host)),
        }
    }

    fn path(&self, model: &str) -> PathBuf {
        self.dir.join(format!(
            "{}.snap",
            lookout_shared::topics::sanitize_level(model)
        ))
    }

    /// The model's snapshot, `None` when there is none.
    pub fn load(&self, model: &str) -> Option<std::io::Result<Vec<u8>>> {
        match std::fs::read(self.path(model)) {
            Ok(bytes) => Some(Ok(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => Some(Err(e)),
        }
    }

    /// Replaces the model's snapshot with `bytes`, atomically.
    pub fn save(&self, model: &str, bytes: &[u8]) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let path = self.path(model);
        let tmp = path.with_extension("snap.tmp");
        let written = std::fs::File::create(&tmp).and_then(|mut f| {
            f.write_all(bytes)?;
            f.sync_all()
        });
        if let Err(e) = written {
            // A half-written copy on a full disk would hold the space other writes (the
            // outbox) need until the next save.
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        std::fs::rename(&tmp, &path)?;
        // The rename is durable once the directory is.
        std::fs::File::open(&self.dir)?.sync_all()
    }

    /// Moves an unusable snapshot out of the way (to `<model>.snap.bad`).
    pub fn set_aside(&self, model: &str) -> std::io::Result<PathBuf> {
        let path = self.path(model);
        let bad = path.with_extension("snap.bad");
        std::fs::rename(&path, &bad)?;
        Ok(bad)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_atomically_loads_back_and_sets_aside() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path(), "edge/1");
        assert!(store.load("cpu").is_none());
        store.save("cpu", b"one").unwrap();
        store.save("cpu", b"two").unwrap();
        assert_eq!(store.load("cpu").unwrap().unwrap(), b"two");
        let files: Vec<_> = std::fs::read_dir(dir.path().join("edge_1"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(files, ["cpu.snap"], "no temporary file left");
        let bad = store.set_aside("cpu").unwrap();
        assert!(bad.ends_with("cpu.snap.bad"));
        assert!(store.load("cpu").is_none());
    }
}
