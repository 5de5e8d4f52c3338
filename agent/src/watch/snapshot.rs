//! `watch --once`: the fleet as plain text, for scripts and people alike. The format is
//! documented in `docs/watch.md` and kept stable:
//!
//! ```text
//! # lookout watch mqtt://127.0.0.1:1883 prefix lookout: 2 hosts, 1 online, 1 offline, 1 firing
//! HOST   STATUS   SEEN  ALARMS  SCORES
//! sim-1  online   0s    1       cpu_util=0.42 mem_util=4.10!(mem_util)
//! sim-2  offline  -     0       -
//!
//! HOST   SOURCE    SEV  AGE  SUMMARY
//! sim-1  mem_util  3    12s  mem_util: anomaly score 4.10 >= 1.75 on sim-1 (severity 3); mem_util at 97.1, normal 40–60
//!
//! # messages 1234, bad 0, filtered 0, dropped: hosts 0, models 0, alarms 0
//! ```
//!
//! Columns are separated by at least two spaces; the last column of each table (scores,
//! summary) may hold single spaces. Colours (ANSI) only when asked for, which the caller
//! does only for a terminal.

use std::fmt::Write;

use super::fleet::{Fleet, Status, format_age, format_score, format_summary};

const RED: &str = "\x1b[31m";
const BOLD_RED: &str = "\x1b[1;31m";
const GREEN: &str = "\x1b[32m";
const YELLOW: &str = "\x1b[33m";
const RESET: &str = "\x1b[0m";

/// One cell: its text and, with colours on, its colour.
struct Cell {
    text: String,
    color: Option<&'static str>,
}

impl Cell {
    fn plain(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            color: None,
        }
    }
    fn colored(text: impl Into<String>, color: Option<&'static str>) -> Self {
        Self {
            text: text.into(),
            color,
        }
    }
}

/// Renders the snapshot; `source` names the broker (`mqtt://host:port`) in the first line.
pub fn render(fleet: &Fleet, now_ms: i64, source: &str, color: bool) -> String {
    let hosts = fleet.hosts(now_ms);
    let alarms = fleet.firing(now_ms);
    let online = hosts.iter().filter(|h| h.status == Status::Online).count();
    let offline = hosts.iter().filter(|h| h.status == Status::Offline).count();
    let mut out = format!("# lookout watch {source} prefix {}", fleet.prefix());
    if let Some(f) = fleet.filter() {
        let _ = write!(out, " filter {}", f.as_str());
    }
    let _ = writeln!(
        out,
        ": {} hosts, {online} online, {offline} offline, {} firing",
        hosts.len(),
        alarms.len()
    );

    let mut rows = vec![
        ["HOST", "STATUS", "SEEN", "ALARMS", "SCORES"]
            .map(Cell::plain)
            .into(),
    ];
    for h in &hosts {
        let status_color = match h.status {
            Status::Online => GREEN,
            Status::Offline => RED,
            Status::Unknown => YELLOW,
        };
        let scores = if h.scores.is_empty() {
            "-".to_owned()
        } else {
            h.scores
                .iter()
                .map(|(model, s)| {
                    let v = format_score(s);
                    let top = s.top.as_deref().map_or(String::new(), |d| format!("({d})"));
                    match (s.anomalous, color) {
                        (true, true) => format!("{BOLD_RED}{model}={v}!{top}{RESET}"),
                        (true, false) => format!("{model}={v}!{top}"),
                        (false, _) => format!("{model}={v}"),
                    }
                })
                .collect::<Vec<_>>()
                .join(" ")
        };
        rows.push(vec![
            Cell::plain(h.name),
            Cell::colored(h.status.as_str(), Some(status_color)),
            Cell::plain(h.seen_ago.map_or("-".into(), format_age)),
            Cell::colored(h.firing.to_string(), (h.firing > 0).then_some(RED)),
            Cell::plain(scores),
        ]);
    }
    table(&mut out, &rows, color);
    out.push('\n');

    let mut rows = vec![
        ["HOST", "SOURCE", "SEV", "AGE", "SUMMARY"]
            .map(Cell::plain)
            .into(),
    ];
    for a in &alarms {
        let sev_color = if a.severity >= 3 { RED } else { YELLOW };
        rows.push(vec![
            Cell::plain(a.host),
            Cell::plain(a.source),
            Cell::colored(a.severity.to_string(), Some(sev_color)),
            Cell::plain(format_age(a.age)),
            Cell::plain(format_summary(a.summary, a.explain)),
        ]);
    }
    table(&mut out, &rows, color);

    let c = fleet.counters();
    let _ = writeln!(
        out,
        "\n# messages {}, bad {}, filtered {}, dropped: hosts {}, models {}, alarms {}",
        c.received, c.bad, c.filtered, c.hosts_dropped, c.models_dropped, c.alarms_dropped
    );
    out
}

/// Appends `rows` as aligned columns, two spaces apart; the last column is not padded.
fn table(out: &mut String, rows: &[Vec<Cell>], color: bool) {
    let cols = rows.first().map_or(0, Vec::len);
    let mut widths = vec![0; cols];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.text.chars().count());
        }
    }
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            let last = i + 1 == row.len();
            let pad = if last {
                0
            } else {
                widths[i] - cell.text.chars().count() + 2
            };
            match cell.color.filter(|_| color) {
                Some(c) => {
                    let _ = write!(line, "{c}{}{RESET}", cell.text);
                }
                None => line.push_str(&cell.text),
            }
            line.extend(std::iter::repeat_n(' ', pad));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watch::fleet::{HostFilter, Limits};

    const NOW: i64 = 1_795_457_400_000;

    fn sample() -> Fleet {
        let mut f = Fleet::new("lookout", None, Limits::default());
        f.apply("lookout/sim-1/status", b"online", true, NOW);
        f.apply("lookout/sim-10/status", b"online", true, NOW);
        f.apply("lookout/sim-2/status", b"offline", true, NOW);
        for (model, v, anomalous) in [("cpu_util", 0.42, false), ("mem_util", 4.1, true)] {
            let mut p = serde_json::json!({"ts": NOW, "host": "sim-1", "model": model,
                "score": v, "learning": false, "anomalous": anomalous, "level": 0,
                "threshold": 1.75, "alarm": anomalous, "labels": {}});
            if anomalous {
                p["dimensions"] = serde_json::json!([{"name": "mem_util", "share": 1.0,
                    "value": 97.1, "normal": [40.0, 60.0]}]);
                p["explain"] = "mem_util at 97.1, normal 40–60".into();
            }
            let topic = format!("lookout/sim-1/scores/{model}");
            f.apply(&topic, p.to_string().as_bytes(), false, NOW);
        }
        let p = serde_json::json!({"ts": NOW, "host": "sim-10", "model": "cpu_util",
            "score": null, "learning": true, "anomalous": false, "level": 0,
            "threshold": 1.75, "alarm": false, "labels": {}});
        f.apply(
            "lookout/sim-10/scores/cpu_util",
            p.to_string().as_bytes(),
            false,
            NOW,
        );
        let p = serde_json::json!({"id": "sim-1:mem_util:1", "host": "sim-1",
            "source": "mem_util", "state": "firing", "severity": 3, "ts": NOW - 12_000,
            "started_at": NOW - 13_000, "score": 4.1, "threshold": 1.75,
            "summary": "mem_util: anomaly score 4.10 >= 1.75 on sim-1 (severity 3)",
            "labels": {}, "explain": "mem_util at 97.1, normal 40\u{7}–60"});
        f.apply(
            "lookout/sim-1/alarms/mem_util",
            p.to_string().as_bytes(),
            true,
            NOW,
        );
        f.apply("lookout/sim-1/status", b"bogus", false, NOW);
        f
    }

    #[test]
    fn plain_snapshot_has_aligned_columns_and_no_escapes() {
        let text = render(&sample(), NOW, "mqtt://127.0.0.1:1883", false);
        let want = "\
# lookout watch mqtt://127.0.0.1:1883 prefix lookout: 3 hosts, 2 online, 1 offline, 1 firing
HOST    STATUS   SEEN  ALARMS  SCORES
sim-1   online   0s    1       cpu_util=0.42 mem_util=4.10!(mem_util)
sim-2   offline  -     0       -
sim-10  online   0s    0       cpu_util=-

HOST   SOURCE    SEV  AGE  SUMMARY
sim-1  mem_util  3    12s  mem_util: anomaly score 4.10 >= 1.75 on sim-1 (severity 3); mem_util at 97.1, normal 40?–60

# messages 8, bad 1, filtered 0, dropped: hosts 0, models 0, alarms 0
";
        assert_eq!(text, want, "\n{text}");
        assert!(!text.contains('\x1b'));
    }

    #[test]
    fn an_empty_fleet_still_prints_both_headers() {
        let f = Fleet::new("lookout", HostFilter::new("edge-*").ok(), Limits::default());
        let text = render(&f, NOW, "mqtts://broker:8883", false);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "# lookout watch mqtts://broker:8883 prefix lookout filter edge-*: 0 hosts, 0 online, 0 offline, 0 firing"
        );
        assert_eq!(lines[1], "HOST  STATUS  SEEN  ALARMS  SCORES");
        assert_eq!(lines[2], "");
        assert_eq!(lines[3], "HOST  SOURCE  SEV  AGE  SUMMARY");
    }

    #[test]
    fn colours_wrap_cells_without_breaking_the_alignment() {
        let plain = render(&sample(), NOW, "x", false);
        let colored = render(&sample(), NOW, "x", true);
        assert!(colored.contains(&format!("{BOLD_RED}mem_util=4.10!(mem_util){RESET}")));
        assert!(colored.contains(&format!("{RED}offline{RESET}")));
        let stripped = colored
            .replace(BOLD_RED, "")
            .replace(RED, "")
            .replace(GREEN, "")
            .replace(YELLOW, "")
            .replace(RESET, "");
        assert_eq!(stripped, plain);
    }
}
