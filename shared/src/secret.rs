//! Secrets in config files: written as a literal, `env:NAME` (an environment variable) or
//! `file:/path` (the file's contents, trailing newline removed), resolved once at start.
//! `Debug` and `Display` print `<redacted>`, so a secret cannot leak through a log line or
//! an error message by accident; only [`Secret::expose`] gives the value.

use std::fmt;

use serde::{Deserialize, Deserializer};

#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// A secret already in hand (a value from code, not from a config file).
    pub fn new(value: String) -> Self {
        Secret(value)
    }

    /// Resolves a config value. Errors say which variable or file was missing, never the
    /// value.
    pub fn resolve(spec: &str) -> Result<Self, String> {
        if let Some(var) = spec.strip_prefix("env:") {
            std::env::var(var)
                .map(Secret)
                .map_err(|_| format!("environment variable {var} is not set (or not UTF-8)"))
        } else if let Some(path) = spec.strip_prefix("file:") {
            Self::from_file(std::path::Path::new(path))
        } else {
            Ok(Secret(spec.to_owned()))
        }
    }

    /// The file's contents, trailing newline removed: `password_file` keys and `file:`.
    /// The error names the file, never its contents.
    pub fn from_file(path: &std::path::Path) -> Result<Self, String> {
        std::fs::read_to_string(path)
            .map(|s| Secret(s.trim_end_matches(['\n', '\r']).to_owned()))
            .map_err(|e| format!("cannot read {}: {e}", path.display()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Serialized as `<redacted>`: printing an effective config (`config check`) must not
/// print the password.
impl serde::Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("<redacted>")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let spec = String::deserialize(d)?;
        Secret::resolve(&spec).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_env_and_files_resolve_and_never_print() {
        assert_eq!(Secret::resolve("hunter2").unwrap().expose(), "hunter2");
        let var = "LOOKOUT_TEST_SECRET_9F3A";
        // Setting an env var is unsafe in edition 2024 because other threads may read the
        // environment; this test only reads a name no other test uses.
        unsafe { std::env::set_var(var, "from-env") };
        assert_eq!(
            Secret::resolve(&format!("env:{var}")).unwrap().expose(),
            "from-env"
        );
        let dir = std::env::temp_dir().join(format!("lookout-secret-{}", std::process::id()));
        std::fs::write(&dir, "from-file\n").unwrap();
        assert_eq!(
            Secret::resolve(&format!("file:{}", dir.display()))
                .unwrap()
                .expose(),
            "from-file"
        );
        let _ = std::fs::remove_file(&dir);
        let s = Secret::resolve("hunter2").unwrap();
        assert_eq!(format!("{s} {s:?}"), "<redacted> <redacted>");
        let err = Secret::resolve("env:LOOKOUT_SURELY_UNSET_VAR").unwrap_err();
        assert!(err.contains("LOOKOUT_SURELY_UNSET_VAR"));
    }
}
