//! `replay --windows`: labelled anomaly windows from NAB's `labels/combined_windows.json`,
//! `{ "<folder>/<file>.csv": [["<start>", "<end>"], ...], ... }`, for the input being replayed.

use std::collections::BTreeMap;
use std::path::Path;

use super::timestamp;
use crate::Error;

/// One labelled anomaly window, in seconds since the epoch (UTC), both ends included.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Window {
    pub start: f64,
    pub end: f64,
}

/// Which entry of a windows file belongs to an input file.
#[derive(Debug, PartialEq)]
pub enum Match<'a> {
    One(&'a str),
    None,
    /// Several keys name a file of that name and the input's folders do not tell them apart.
    Ambiguous(Vec<&'a str>),
}

/// The windows labelled for `input` in the windows file at `path`. A file that cannot be
/// read or is not in NAB's format is an error; a file with no entry for `input` is a
/// warning and no windows, so a plot is still drawn.
pub fn for_input(path: &Path, input: &Path) -> Result<Vec<Window>, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_owned(),
        source,
    })?;
    let windows_err = |message: String| Error::Windows {
        path: path.to_owned(),
        message,
    };
    let labels: BTreeMap<String, Vec<(String, String)>> =
        serde_json::from_str(&text).map_err(|e| {
            windows_err(format!(
                "not a NAB windows file ({{\"file.csv\": [[\"start\", \"end\"], ...]}}): {e}"
            ))
        })?;
    let keys: Vec<&str> = labels.keys().map(String::as_str).collect();
    let key = match matching_key(&keys, input) {
        Match::One(key) => key,
        Match::None => {
            tracing::warn!(
                windows = %path.display(),
                input = %input.display(),
                "no entry in the windows file ends with the input's file name; plotting without windows"
            );
            return Ok(Vec::new());
        }
        Match::Ambiguous(keys) => {
            tracing::warn!(
                windows = %path.display(),
                input = %input.display(),
                ?keys,
                "several entries in the windows file name the input's file; plotting without windows"
            );
            return Ok(Vec::new());
        }
    };
    labels[key]
        .iter()
        .map(|(start, end)| {
            let parse = |s: &str| {
                timestamp::parse_civil(s).ok_or_else(|| {
                    windows_err(format!(
                        "{key}: {s:?} is not a YYYY-MM-DD HH:MM:SS[.ffffff] timestamp"
                    ))
                })
            };
            let window = Window {
                start: parse(start)?,
                end: parse(end)?,
            };
            if window.end < window.start {
                return Err(windows_err(format!(
                    "{key}: window ends ({end}) before it starts ({start})"
                )));
            }
            Ok(window)
        })
        .collect()
}

/// The key whose last path component is `input`'s file name. When several are, the one
/// that `input`'s path ends with (folders included) wins.
pub fn matching_key<'a>(keys: &[&'a str], input: &Path) -> Match<'a> {
    let Some(name) = input.file_name().and_then(|n| n.to_str()) else {
        return Match::None;
    };
    let named: Vec<&str> = keys
        .iter()
        .copied()
        .filter(|k| k.rsplit(['/', '\\']).next() == Some(name))
        .collect();
    match named.as_slice() {
        [] => Match::None,
        [one] => Match::One(one),
        _ => {
            let by_path: Vec<&str> = named
                .iter()
                .copied()
                .filter(|k| input.ends_with(Path::new(k)))
                .collect();
            match by_path.as_slice() {
                [one] => Match::One(one),
                _ => Match::Ambiguous(named),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEYS: [&str; 4] = [
        "artificialWithAnomaly/art_daily_jumpsup.csv",
        "realAWSCloudwatch/ec2_cpu_utilization_24ae8d.csv",
        "realAWSCloudwatch/ec2_cpu_utilization_53ea38.csv",
        "realKnownCause/nyc_taxi.csv",
    ];

    #[test]
    fn the_key_ending_with_the_input_file_name_matches() {
        assert_eq!(
            matching_key(&KEYS, Path::new("/x/y/ec2_cpu_utilization_24ae8d.csv")),
            Match::One("realAWSCloudwatch/ec2_cpu_utilization_24ae8d.csv")
        );
        assert_eq!(
            matching_key(&KEYS, Path::new("nyc_taxi.csv")),
            Match::One("realKnownCause/nyc_taxi.csv")
        );
    }

    #[test]
    fn a_name_that_is_only_a_suffix_of_a_file_name_does_not_match() {
        assert_eq!(matching_key(&KEYS, Path::new("/x/24ae8d.csv")), Match::None);
        assert_eq!(matching_key(&KEYS, Path::new("/x/taxi.csv")), Match::None);
        assert_eq!(matching_key(&KEYS, Path::new("/")), Match::None);
    }

    #[test]
    fn folders_break_a_tie_between_files_of_the_same_name() {
        let keys = ["a/same.csv", "b/same.csv"];
        assert_eq!(
            matching_key(&keys, Path::new("/data/b/same.csv")),
            Match::One("b/same.csv")
        );
        assert_eq!(
            matching_key(&keys, Path::new("/data/c/same.csv")),
            Match::Ambiguous(vec!["a/same.csv", "b/same.csv"])
        );
    }

    fn write(dir: &tempfile::TempDir, text: &str) -> std::path::PathBuf {
        let path = dir.path().join("combined_windows.json");
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn the_matching_entry_becomes_windows_in_epoch_seconds() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            &dir,
            r#"{
                "realAWSCloudwatch/ec2_cpu_utilization_24ae8d.csv": [
                    ["2014-02-26 13:45:00.000000", "2014-02-27 06:25:00.000000"],
                    ["2014-02-27 08:55:00.000000", "2014-02-28 01:35:00.000000"]
                ],
                "realAWSCloudwatch/other.csv": []
            }"#,
        );
        let w = for_input(&path, Path::new("in/ec2_cpu_utilization_24ae8d.csv")).unwrap();
        assert_eq!(w.len(), 2);
        assert_eq!(
            w[0],
            Window {
                start: timestamp::parse_civil("2014-02-26 13:45:00").unwrap(),
                end: timestamp::parse_civil("2014-02-27 06:25:00").unwrap(),
            }
        );
        assert_eq!(w[1].end - w[1].start, (16.0 * 60.0 + 40.0) * 60.0);
        assert_eq!(for_input(&path, Path::new("unknown.csv")).unwrap(), []);
    }

    #[test]
    fn a_bad_windows_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let input = Path::new("a.csv");
        for (text, says) in [
            ("[1, 2]", "not a NAB windows file"),
            (r#"{"x/a.csv": [["2014-02-26", "2014-02-27"]]}"#, "x/a.csv"),
            (
                r#"{"x/a.csv": [["2014-02-27 00:00:00", "2014-02-26 00:00:00"]]}"#,
                "ends",
            ),
        ] {
            let path = write(&dir, text);
            let err = for_input(&path, input).unwrap_err();
            assert!(matches!(err, Error::Windows { .. }), "{err:?}");
            let msg = err.to_string();
            assert!(
                msg.contains("combined_windows.json") && msg.contains(says),
                "{msg}"
            );
        }
        let missing = dir.path().join("missing.json");
        let err = for_input(&missing, input).unwrap_err();
        assert!(err.to_string().contains("missing.json"), "{err}");
    }
}
