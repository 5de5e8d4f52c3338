//! What state each retained topic had when the upstream last acknowledged it, kept on
//! disk so that a restarted forwarder does not send it again.
//!
//! The local broker hands every retained message to a new subscription, so after each
//! restart of the forwarder every alarm state would go up a second time; a central bridge
//! would page again. Comparing a digest of (topic, payload) with the one acknowledged
//! last makes a retained state cross once. The file is small (one entry per retained
//! topic, bounded) and replaced atomically on every change; states change rarely.

use std::collections::BTreeMap;
use std::hash::Hasher;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Retained topics remembered at most; beyond it the forwarder may send a state twice
/// (it never loses one).
const MAX_TOPICS: usize = 20_000;

#[derive(Debug, Default, Serialize, Deserialize)]
struct OnDisk {
    version: u8,
    digests: BTreeMap<String, u64>,
}

#[derive(Debug)]
pub struct Delivered {
    path: Option<PathBuf>,
    digests: BTreeMap<String, u64>,
    write_errors: u64,
}

/// A digest stable across runs and builds (not `DefaultHasher`'s random keys).
pub fn digest(payload: &[u8]) -> u64 {
    // FNV-1a, 64 bits: enough to tell one state of a topic from the next.
    let mut h = Fnv(0xcbf2_9ce4_8422_2325);
    h.write(payload);
    h.finish()
}

struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
        }
    }
}

impl Delivered {
    /// Reads `dir/delivered.v1`; a missing or unreadable file is an empty memory (states
    /// may then cross twice, never be lost).
    pub fn open(dir: &Path) -> Self {
        let path = dir.join("delivered.v1");
        let digests = match std::fs::read(&path) {
            Ok(bytes) => match postcard::from_bytes::<OnDisk>(&bytes) {
                Ok(d) if d.version == 1 => d.digests,
                _ => {
                    tracing::warn!(path = %path.display(), "upstream: unreadable record of delivered states; retained states may be sent again once");
                    BTreeMap::new()
                }
            },
            Err(_) => BTreeMap::new(),
        };
        Self {
            path: Some(path),
            digests,
            write_errors: 0,
        }
    }

    pub fn in_memory() -> Self {
        Self {
            path: None,
            digests: BTreeMap::new(),
            write_errors: 0,
        }
    }

    /// Whether this state of `topic` already crossed.
    pub fn has(&self, topic: &str, digest: u64) -> bool {
        self.digests.get(topic) == Some(&digest)
    }

    /// The upstream acknowledged this state of `topic`.
    pub fn record(&mut self, topic: &str, digest: u64) {
        if self.digests.get(topic) == Some(&digest) {
            return;
        }
        if self.digests.len() >= MAX_TOPICS && !self.digests.contains_key(topic) {
            return;
        }
        self.digests.insert(topic.to_owned(), digest);
        self.save();
    }

    pub fn write_errors(&self) -> u64 {
        self.write_errors
    }

    fn save(&mut self) {
        let Some(path) = &self.path else { return };
        let doc = OnDisk {
            version: 1,
            digests: std::mem::take(&mut self.digests),
        };
        let result = postcard::to_allocvec(&doc)
            .map_err(std::io::Error::other)
            .and_then(|bytes| write_atomically(path, &bytes));
        self.digests = doc.digests;
        if let Err(e) = result {
            self.write_errors += 1;
            if self.write_errors == 1 || self.write_errors.is_power_of_two() {
                tracing::warn!(path = %path.display(), error = %e, failures = self.write_errors, "upstream: cannot save the record of delivered states");
            }
        }
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_data()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delivered_state_is_remembered_across_a_restart_and_a_new_one_is_not_taken_for_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut d = Delivered::open(dir.path());
        let firing = digest(br#"{"state":"firing"}"#);
        d.record("lookout/h/alarms/cpu", firing);
        let again = Delivered::open(dir.path());
        assert!(again.has("lookout/h/alarms/cpu", firing));
        assert!(!again.has("lookout/h/alarms/cpu", digest(br#"{"state":"resolved"}"#)));
        assert!(!again.has("lookout/h/alarms/mem", firing));
    }

    #[test]
    fn a_damaged_file_is_an_empty_memory_not_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("delivered.v1"), b"\xff\xff\xff garbage").unwrap();
        let d = Delivered::open(dir.path());
        assert!(!d.has("t", digest(b"x")));
    }

    #[test]
    fn the_digest_is_the_same_in_every_run() {
        assert_eq!(digest(b""), digest(b""));
        assert_ne!(digest(b"a"), digest(b"b"));
    }
}
