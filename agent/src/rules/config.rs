//! The rules' own tables: `[rules]` (a watched rules document, and the engine's bound)
//! and `[ingest]` (events from other devices), as written and as the rules run on them.

use std::path::PathBuf;

use lookout_shared::config::Invalid;
use serde::{Deserialize, Serialize};

use super::{Limits, RuleSet};

/// Past this a window's groups are more likely a runaway dimension than a fleet.
const MAX_GROUPS_PER_WINDOW: usize = 1_000_000;

/// `[rules]`. Documents may also come over MQTT, so the table is optional.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RulesConfig {
    /// A rules document, watched for changes. Empty: none (`--set rules.file=` turns a
    /// configured one off).
    pub file: String,
    /// Open groups per rule and window; bounds the engine's memory.
    pub groups_per_window: usize,
}

impl Default for RulesConfig {
    fn default() -> Self {
        Self {
            file: String::new(),
            groups_per_window: Limits::default().groups_per_window,
        }
    }
}

#[derive(Clone, Debug)]
pub struct RulesSettings {
    /// The watched rules file, read and validated at start into `initial`.
    pub file: Option<PathBuf>,
    /// The file's rules, or none without a file.
    pub initial: RuleSet,
    pub limits: Limits,
}

impl RulesConfig {
    /// Checks the table and reads its file: a rules file that is missing or invalid at
    /// start is a config error (exit 2), naming the rule at fault. Later changes to the
    /// file are checked by the running agent, which keeps the old rules when a new version
    /// is invalid.
    pub fn resolve(&self) -> Result<RulesSettings, Invalid> {
        let groups = self.groups_per_window;
        if !(1..=MAX_GROUPS_PER_WINDOW).contains(&groups) {
            return Err(Invalid::new(
                "groups_per_window",
                format!("must be 1 to {MAX_GROUPS_PER_WINDOW}, got {groups}"),
            ));
        }
        let (file, initial) = if self.file.is_empty() {
            (None, RuleSet::default())
        } else {
            let path = PathBuf::from(&self.file);
            let set = RuleSet::read(&path).map_err(|e| Invalid::new("file", e))?;
            (Some(path), set)
        };
        Ok(RulesSettings {
            file,
            initial,
            limits: Limits {
                groups_per_window: groups,
            },
        })
    }
}

/// `[ingest]`: events from devices that cannot run the agent, on `<prefix>/ingest/#`.
/// Off by default: an agent takes other devices' data only when told to.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    pub enabled: bool,
}
