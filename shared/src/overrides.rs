//! `--set KEY=VALUE` overrides of config files, shared by both binaries so they behave
//! the same: applied to the raw TOML document before it is parsed and validated.

/// Sets `a.b.c = VALUE` in the document; VALUE is read as a TOML value when it parses as
/// one (`3`, `true`, `"x"`, `[1, 2]`) and as a plain string otherwise.
pub fn apply(doc: &mut toml::Table, spec: &str) -> Result<(), String> {
    let (key, value) = spec.split_once('=').ok_or_else(|| {
        "expected KEY=VALUE, e.g. --set mqtt.url=mqtt://127.0.0.1:1883".to_string()
    })?;
    let key = key.trim();
    let value = value.trim();
    let parsed: toml::Value = toml::from_str::<toml::Table>(&format!("v = {value}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_owned()));
    let parts: Vec<&str> = key.split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(format!("{key:?} is not a dotted key path"));
    }
    let (last, tables) = parts.split_last().ok_or("empty key")?;
    let mut cur = doc;
    for p in tables {
        let entry = cur
            .entry(p.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        cur = entry
            .as_table_mut()
            .ok_or_else(|| format!("{p:?} in {key:?} is a value, not a table"))?;
    }
    cur.insert(last.to_string(), parsed);
    Ok(())
}
