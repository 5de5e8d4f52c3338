//! Reading a config document, the same way in both binaries: from a file, stdin or a
//! built-in text; `--set KEY=VALUE` overrides applied to the document; keys renamed by a
//! release moved to their new place with a deprecation note; then deserialized strictly.
//!
//! Every error names where it is (`file:line`, or the `--set` that caused it) and the
//! dotted key at fault; an unknown key comes with the closest known one ("did you mean").
//! The crates map [`ConfigError`] into their own error type; its `Display` is the one
//! line a user sees.

use std::fmt;
use std::path::Path;

use serde::de::DeserializeOwned;

/// A config document as read, with where it came from (for error messages).
#[derive(Clone, Debug)]
pub struct Source {
    /// A path, `(stdin)`, or a description of a built-in text.
    pub origin: String,
    pub text: String,
}

/// What is wrong with a config, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// `file:line`, `file`, or `--set KEY=VALUE`.
    pub at: String,
    /// `key: what is wrong`.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.at, self.message)
    }
}

impl std::error::Error for ConfigError {}

/// What a section's owner finds wrong while checking its own table: the key relative to
/// that table, and why. The assembler prefixes the table ([`Invalid::within`]) and places
/// it with [`Source::invalid`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invalid {
    pub key: String,
    pub message: String,
}

impl Invalid {
    pub fn new(key: impl Into<String>, message: impl fmt::Display) -> Self {
        Self {
            key: key.into(),
            message: message.to_string(),
        }
    }

    /// The same error, with its key inside `table` (`models.cpu` + `alarm.t2`).
    pub fn within(self, table: &str) -> Self {
        let key = match (table.is_empty(), self.key.is_empty()) {
            (true, _) => self.key,
            (false, true) => table.to_owned(),
            (false, false) => format!("{table}.{}", self.key),
        };
        Self { key, ..self }
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// A key a release renamed, found in a document and moved to its new place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Renamed {
    pub old: String,
    pub new: String,
}

impl Source {
    /// Reads `path`; `-` reads standard input.
    pub fn read(path: &Path) -> Result<Self, ConfigError> {
        if path == Path::new("-") {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text).map_err(|e| {
                ConfigError {
                    at: "(stdin)".into(),
                    message: format!("cannot read the config: {e}"),
                }
            })?;
            return Ok(Self {
                origin: "(stdin)".into(),
                text,
            });
        }
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            at: path.display().to_string(),
            message: format!("cannot read the config: {e}"),
        })?;
        Ok(Self {
            origin: path.display().to_string(),
            text,
        })
    }

    /// A built-in text (`origin` says which, for error messages).
    pub fn builtin(origin: &str, text: &str) -> Self {
        Self {
            origin: origin.into(),
            text: text.into(),
        }
    }

    /// No file: every key at its default.
    pub fn empty() -> Self {
        Self::builtin("(built-in defaults)", "")
    }

    /// An error about `key` (dotted), placed at its line when the document has it.
    pub fn error(&self, key: &str, message: impl fmt::Display) -> ConfigError {
        let at = match find_line(&self.text, key) {
            Some(line) => format!("{}:{line}", self.origin),
            None => self.origin.clone(),
        };
        ConfigError {
            at,
            message: format!("{key}: {message}"),
        }
    }

    /// An owner's [`Invalid`], placed at its key's line (or at the old key's line when
    /// the key was given under a name a release `renamed`).
    pub fn invalid(&self, e: Invalid, renamed: &[Renamed]) -> ConfigError {
        match renamed.iter().find(|r| r.new == e.key) {
            Some(r) => {
                let mut err = self.error(&r.old, e.message);
                err.message = format!("{} (now {})", err.message, r.new);
                err
            }
            None => self.error(&e.key, e.message),
        }
    }

    /// The document with `overrides` applied, as a TOML table.
    pub fn table(&self, overrides: &[String]) -> Result<toml::Table, ConfigError> {
        let mut doc: toml::Table = toml::from_str(&self.text).map_err(|e| ConfigError {
            at: self.origin.clone(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        for o in overrides {
            crate::overrides::apply(&mut doc, o).map_err(|message| ConfigError {
                at: format!("--set {o}"),
                message,
            })?;
        }
        Ok(doc)
    }

    /// Parses into `T` with `overrides` applied.
    pub fn parse<T: DeserializeOwned>(&self, overrides: &[String]) -> Result<T, ConfigError> {
        let doc = self.table(overrides)?;
        self.deserialize(doc, "", overrides, &[])
    }

    /// The document for a release that renamed keys: `migrate` moves the renamed keys
    /// found in the text to their new places (and returns what it moved), then each
    /// override is applied under its new name when `rename` gives one, so that an old
    /// `--set` still works and still wins over the file.
    pub fn document(
        &self,
        overrides: &[String],
        migrate: impl FnOnce(&mut toml::Table) -> Result<Vec<Renamed>, Invalid>,
        rename: impl Fn(&str) -> Option<String>,
    ) -> Result<(toml::Table, Vec<Renamed>), ConfigError> {
        let mut doc = self.table(&[])?;
        let mut renamed = migrate(&mut doc).map_err(|e| self.error(&e.key, e.message))?;
        for o in overrides {
            let (key, value) = o.split_once('=').unwrap_or((o, ""));
            let spec = match rename(key.trim()) {
                Some(new) => {
                    renamed.push(Renamed {
                        old: key.trim().to_owned(),
                        new: new.clone(),
                    });
                    format!("{new}={value}")
                }
                None => o.clone(),
            };
            crate::overrides::apply(&mut doc, &spec).map_err(|message| ConfigError {
                at: format!("--set {o}"),
                message,
            })?;
        }
        Ok((doc, renamed))
    }

    /// Deserializes one table of this source's document (at dotted `prefix`) into `T`;
    /// errors name the key's path and line, and the `--set` that set it when one did.
    pub fn deserialize<T: DeserializeOwned>(
        &self,
        table: toml::Table,
        prefix: &str,
        overrides: &[String],
        renamed: &[Renamed],
    ) -> Result<T, ConfigError> {
        serde_path_to_error::deserialize(toml::Value::Table(table))
            .map_err(|e| self.deserialize_error(&e, prefix, overrides, renamed))
    }

    /// `e` from deserializing the table at `prefix` (dotted, empty for the document).
    fn deserialize_error(
        &self,
        e: &serde_path_to_error::Error<toml::de::Error>,
        prefix: &str,
        overrides: &[String],
        renamed: &[Renamed],
    ) -> ConfigError {
        let mut key = prefix.to_owned();
        for seg in e.path().iter() {
            if let serde_path_to_error::Segment::Map { key: k }
            | serde_path_to_error::Segment::Enum { variant: k } = seg
            {
                if !key.is_empty() {
                    key.push('.');
                }
                key.push_str(k);
            }
        }
        let raw = e.inner().message().trim_end().to_owned();
        let message = match unknown_field(&raw) {
            Some((field, expected)) => {
                // serde_path_to_error's path ends at the unknown key already; not always.
                if key.rsplit('.').next() != Some(field.as_str()) {
                    if !key.is_empty() {
                        key.push('.');
                    }
                    key.push_str(&field);
                }
                let hint = suggest(&field, &expected)
                    .map(|s| format!("; did you mean `{s}`?"))
                    .unwrap_or_default();
                format!("unknown key{hint} (known here: {})", expected.join(", "))
            }
            None => raw,
        };
        let set_by = overrides
            .iter()
            .find(|o| o.split_once('=').is_some_and(|(k, _)| k.trim() == key));
        match set_by {
            Some(o) => ConfigError {
                at: format!("--set {o}"),
                message: format!("{key}: {message}"),
            },
            None => self.invalid(Invalid { key, message }, renamed),
        }
    }
}

/// Where a part keeps its state when its config names no directory: `sub` under
/// `$STATE_DIRECTORY` (systemd), else `$XDG_STATE_HOME/lookout`, else
/// `~/.local/state/lookout`, else `.lookout-state` in the working directory.
pub fn state_dir(sub: &str) -> std::path::PathBuf {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    if let Some(d) = var("STATE_DIRECTORY") {
        // systemd may pass several, separated by ':'; the first is ours.
        let first = d
            .to_string_lossy()
            .split(':')
            .next()
            .unwrap_or_default()
            .to_owned();
        return Path::new(&first).join(sub);
    }
    if let Some(d) = var("XDG_STATE_HOME") {
        return Path::new(&d).join("lookout").join(sub);
    }
    if let Some(h) = var("HOME") {
        return Path::new(&h).join(".local/state/lookout").join(sub);
    }
    Path::new(".lookout-state").join(sub)
}

/// serde's "unknown field `x`, expected one of `a`, `b`" (or "expected `a` or `b`", or
/// "there are no fields"), as the field and the known names.
fn unknown_field(message: &str) -> Option<(String, Vec<String>)> {
    let rest = message.strip_prefix("unknown field `")?;
    let (field, rest) = rest.split_once('`')?;
    let expected = rest
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect();
    Some((field.to_owned(), expected))
}

/// The known name closest to `field`, when it is close enough to be a typo.
fn suggest<'a>(field: &str, known: &'a [String]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (strsim::jaro_winkler(field, k), k))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| k.as_str())
}

/// Best-effort line of dotted `key` in a TOML text: the line of `last =` inside the table
/// the rest names, else the line of the nearest enclosing table or inline table that has
/// one. Used only to point error messages at the right line.
pub fn find_line(text: &str, dotted: &str) -> Option<usize> {
    let norm = |s: &str| s.replace(['"', ' '], "");
    let mut path = dotted.to_owned();
    loop {
        let (table, key) = match path.rsplit_once('.') {
            Some((t, k)) => (norm(t), k.to_owned()),
            None => (String::new(), path.clone()),
        };
        let mut current = String::new();
        let mut header_line = None;
        for (i, line) in text.lines().enumerate() {
            let l = line.trim();
            if let Some(h) = l.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
                current = norm(h.trim().trim_matches(['[', ']']));
                if current == norm(&path) {
                    header_line = Some(i + 1);
                }
                continue;
            }
            if current == table
                && let Some((k, _)) = l.split_once('=')
                && k.trim().trim_matches('"') == key
            {
                return Some(i + 1);
            }
        }
        if header_line.is_some() {
            return header_line;
        }
        match path.rsplit_once('.') {
            Some((parent, _)) => path = parent.to_owned(),
            None => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Doc {
        #[serde(default)]
        mqtt: Mqtt,
        #[serde(default)]
        models: std::collections::BTreeMap<String, Model>,
    }

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Mqtt {
        url: String,
        keep_alive: u32,
    }

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Model {
        threshold: f64,
        alarm: Alarm,
    }

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Alarm {
        direction: String,
    }

    fn src(text: &str) -> Source {
        Source::builtin("t.toml", text)
    }

    #[test]
    fn unknown_keys_name_path_line_and_the_closest_known_key() {
        let err = src("[mqtt]\nurl = \"x\"\nkeep_alvie = 3\n")
            .parse::<Doc>(&[])
            .unwrap_err();
        assert_eq!(err.at, "t.toml:3");
        assert!(
            err.message
                .starts_with("mqtt.keep_alvie: unknown key; did you mean `keep_alive`?"),
            "{err}"
        );
        let err = src("[models.cpu]\nthreshold = 1.0\n[models.cpu.alarm]\ndirecton = \"up\"\n")
            .parse::<Doc>(&[])
            .unwrap_err();
        assert_eq!(err.at, "t.toml:4", "{err}");
        assert!(
            err.message
                .starts_with("models.cpu.alarm.directon: unknown key; did you mean `direction`?"),
            "{err}"
        );
        let err = src("[models.cpu]\nalarm = { nonsense = 1 }\n")
            .parse::<Doc>(&[])
            .unwrap_err();
        assert_eq!(err.at, "t.toml:2", "inline table: its line; {err}");
        assert!(!err.message.contains("did you mean"), "{err}");
    }

    #[test]
    fn type_errors_name_the_key_and_overrides_name_themselves() {
        let err = src("[mqtt]\n\nkeep_alive = \"long\"\n")
            .parse::<Doc>(&[])
            .unwrap_err();
        assert_eq!(err.at, "t.toml:3", "{err}");
        assert!(err.message.starts_with("mqtt.keep_alive: "), "{err}");
        let err = src("")
            .parse::<Doc>(&["mqtt.keep_alive=fast".into()])
            .unwrap_err();
        assert_eq!(err.at, "--set mqtt.keep_alive=fast", "{err}");
        let err = src("").parse::<Doc>(&["nonsense".into()]).unwrap_err();
        assert!(err.message.contains("KEY=VALUE"), "{err}");
        let err = src("[mqtt\n").parse::<Doc>(&[]).unwrap_err();
        assert!(
            err.at == "t.toml" && err.message.contains("line 1"),
            "{err}"
        );
    }

    #[test]
    fn migrations_move_keys_and_overrides_follow_them() {
        let migrate = |t: &mut toml::Table| {
            let m = t["models"]["m"].as_table_mut().unwrap();
            let v = m.remove("direction").unwrap();
            let mut a = toml::Table::new();
            a.insert("direction".into(), v);
            m.insert("alarm".into(), a.into());
            Ok(vec![Renamed {
                old: "models.m.direction".into(),
                new: "models.m.alarm.direction".into(),
            }])
        };
        let rename = |k: &str| (k == "models.m.threshold").then(|| "models.m.threshold".into());
        let source = src("[models.m]\ndirection = \"down\"\nthreshold = 1.0\n");
        let (doc, renamed) = source
            .document(&["models.m.threshold=2.0".into()], migrate, rename)
            .unwrap();
        assert_eq!(renamed.len(), 2);
        let doc: Doc = source.deserialize(doc, "", &[], &renamed).unwrap();
        assert_eq!(doc.models["m"].alarm.direction, "down");
        assert_eq!(doc.models["m"].threshold, 2.0);
        let err = source
            .deserialize::<Doc>(
                toml::from_str("[models.m]\nalarm = { direction = 3 }").unwrap(),
                "",
                &[],
                &renamed,
            )
            .unwrap_err();
        assert_eq!(err.at, "t.toml:2", "the old key's line: {err}");
        assert!(
            err.message.contains("(now models.m.alarm.direction)"),
            "{err}"
        );
    }

    #[test]
    fn find_line_falls_back_to_the_enclosing_table() {
        let text = "[a]\nx = 1\n[a.b]\ny = 2\n[\"m.n\"]\nz = 3\n";
        assert_eq!(find_line(text, "a.x"), Some(2));
        assert_eq!(find_line(text, "a.b.y"), Some(4));
        assert_eq!(find_line(text, "a.b.missing"), Some(3));
        assert_eq!(find_line(text, "a.missing"), Some(1));
        assert_eq!(find_line(text, "nowhere"), None);
    }
}
