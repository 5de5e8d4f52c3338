//! Keys a release renamed, and how the old ones keep working for one more release.
//!
//! Until this release every detector key sat flat in `[detector]` and the models' tables.
//! The groups now have tables of their own (`[detector.train]`, `[detector.context]`,
//! `[detector.alarm]`, `[detector.saturation]`). A document with the old flat keys loads
//! as before: each is moved to its new place and a warning names the new key. Both forms
//! of one key in the same table is an error (which one was meant?).

use lookout_shared::config::{Invalid, Renamed};

/// Old flat detector key → (table, new key).
pub const DETECTOR: [(&str, &str, &str); 27] = [
    ("train_data_size", "train", "window"),
    ("train_every_n", "train", "every"),
    ("min_train_points", "train", "min_points"),
    ("ensemble", "train", "ensemble"),
    ("n_init", "train", "n_init"),
    ("max_iter", "train", "max_iter"),
    ("seed", "train", "seed"),
    ("decay", "train", "decay"),
    ("context_levels", "context", "levels"),
    ("context_length", "context", "length"),
    ("context_window", "context", "window"),
    ("context_memory", "context", "memory"),
    ("context_threshold", "context", "threshold"),
    ("threshold", "alarm", "threshold"),
    ("for", "alarm", "for"),
    ("resolve_after", "alarm", "resolve_after"),
    ("suppress", "alarm", "suppress"),
    ("t2", "alarm", "t2"),
    ("step", "alarm", "step"),
    ("direction", "alarm", "direction"),
    ("kind", "alarm", "kind"),
    ("limit", "saturation", "limit"),
    ("saturation_pct", "saturation", "pct"),
    ("saturation_window", "saturation", "window"),
    (
        "saturation_rises_near_limit",
        "saturation",
        "rises_near_limit",
    ),
    ("saturation_rises_level2", "saturation", "rises_level2"),
    ("saturation_rises_level3", "saturation", "rises_level3"),
];

/// The tables that hold detector keys: `detector`, and every model's.
fn detector_tables(doc: &mut toml::Table) -> Vec<(String, &mut toml::Table)> {
    let mut out = Vec::new();
    for (name, value) in doc.iter_mut() {
        let Some(t) = value.as_table_mut() else {
            continue;
        };
        match name.as_str() {
            "detector" => out.push((name.clone(), t)),
            "models" | "sim_models" => {
                for (model, v) in t.iter_mut() {
                    if let Some(m) = v.as_table_mut() {
                        out.push((format!("{name}.{model}"), m));
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// Moves every old flat key of the document to its new table.
pub fn migrate(doc: &mut toml::Table) -> Result<Vec<Renamed>, Invalid> {
    let mut renamed = Vec::new();
    for (path, table) in detector_tables(doc) {
        for (old, group, new) in DETECTOR {
            let Some(value) = table.remove(old) else {
                continue;
            };
            let old_key = format!("{path}.{old}");
            let new_key = format!("{path}.{group}.{new}");
            let target = table
                .entry(group)
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            let Some(target) = target.as_table_mut() else {
                return Err(Invalid::new(
                    format!("{path}.{group}"),
                    format!("must be a table (it holds the detector's {group} settings)"),
                ));
            };
            if target.contains_key(new) {
                return Err(Invalid::new(
                    old_key,
                    format!("set twice: here under its old name and as {new_key}; keep {new_key}"),
                ));
            }
            target.insert(new.to_owned(), value);
            renamed.push(Renamed {
                old: old_key,
                new: new_key,
            });
        }
    }
    Ok(renamed)
}

/// The new name of an old `--set` key, if it is one.
pub fn rename(key: &str) -> Option<String> {
    let (table, last) = key.rsplit_once('.')?;
    let is_detector = table == "detector"
        || table
            .split_once('.')
            .is_some_and(|(t, m)| matches!(t, "models" | "sim_models") && !m.contains('.'));
    if !is_detector {
        return None;
    }
    DETECTOR
        .iter()
        .find(|(old, _, _)| *old == last)
        .map(|(_, group, new)| format!("{table}.{group}.{new}"))
}

/// One warning per renamed key, naming the new one.
pub fn warn(renamed: &[Renamed], origin: &str) {
    for r in renamed {
        tracing::warn!(
            config = origin,
            old = %r.old,
            new = %r.new,
            "config key {} is deprecated: use {} (the old name works until the next release)",
            r.old,
            r.new
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_keys_move_to_their_tables_and_overrides_are_renamed() {
        let mut doc: toml::Table = toml::from_str(
            "[detector]\nthreshold = 2.0\n[detector.train]\nseed = 3\n[models.m]\nlimit = 9.0\nmetrics = {}\n",
        )
        .unwrap();
        let renamed = migrate(&mut doc).unwrap();
        assert_eq!(doc["detector"]["alarm"]["threshold"].as_float(), Some(2.0));
        assert_eq!(
            doc["models"]["m"]["saturation"]["limit"].as_float(),
            Some(9.0)
        );
        assert_eq!(renamed.len(), 2);
        assert_eq!(
            rename("detector.for").as_deref(),
            Some("detector.alarm.for")
        );
        assert_eq!(
            rename("models.cpu.train_data_size").as_deref(),
            Some("models.cpu.train.window")
        );
        assert_eq!(rename("detector.alarm.threshold"), None);
        assert_eq!(rename("mqtt.seed"), None);
    }

    #[test]
    fn both_names_in_one_table_is_an_error_naming_both() {
        let mut doc: toml::Table =
            toml::from_str("[detector]\nseed = 1\n[detector.train]\nseed = 3\n").unwrap();
        let err = migrate(&mut doc).unwrap_err();
        assert_eq!(err.key, "detector.seed");
        assert!(err.message.contains("detector.train.seed"), "{err}");
    }
}
