//! The `test-rules` command: a rules document and a file of events, evaluated offline by
//! the same [`Engine`] the agent runs, as `promtool test rules` does for Prometheus.
//! Events are windowed by their own times, in file order; each output event is printed as
//! one JSON line, and the open windows are closed at the end of the input.

use std::io::{Read, Write};
use std::path::Path;

use super::document::RuleSet;
use super::engine::{Closed, Engine, Limits, Stats};
use super::event::{Defaults, events};
use crate::Error;

/// Per-event notes (bad or late events) stop after this many, so a large file with a
/// systematic mistake does not bury the summary.
const MAX_NOTES: u64 = 50;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Events read, good or bad.
    pub events: u64,
    pub outputs: u64,
    pub stats: Stats,
}

/// Reads the events file (`-`: standard input) and runs [`test_rules`]. The rules come
/// already read ([`RuleSet::read`]), so that the caller can tell a bad rules file from a
/// failed run.
pub fn test_rules_files(
    rules: RuleSet,
    events_path: &Path,
    limits: Limits,
    out: &mut dyn Write,
    notes: &mut dyn Write,
) -> Result<Summary, Error> {
    let io_err = |source| Error::Io {
        path: events_path.to_owned(),
        source,
    };
    let (origin, text) = if events_path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).map_err(io_err)?;
        ("(stdin)".to_owned(), text)
    } else {
        let text = std::fs::read_to_string(events_path).map_err(io_err)?;
        (events_path.display().to_string(), text)
    };
    test_rules(rules, &origin, &text, limits, out, notes).map_err(|source| Error::Io {
        path: "(standard output)".into(),
        source,
    })
}

/// Feeds `text`'s events to an engine with `rules`, writing output events to `out` and
/// one note per bad or late event, then a summary, to `notes`.
pub fn test_rules(
    rules: RuleSet,
    origin: &str,
    text: &str,
    limits: Limits,
    out: &mut dyn Write,
    notes: &mut dyn Write,
) -> std::io::Result<Summary> {
    let mut engine = Engine::new(rules, limits);
    let mut summary = Summary::default();
    let mut noted = 0;
    let mut note = |notes: &mut dyn Write, line: String| -> std::io::Result<()> {
        noted += 1;
        match noted {
            n if n <= MAX_NOTES => writeln!(notes, "{line}"),
            n if n == MAX_NOTES + 1 => writeln!(notes, "(further notes left out)"),
            _ => Ok(()),
        }
    };
    let mut input = events(origin, text, Defaults::default());
    while let Some(parsed) = input.next() {
        summary.events += 1;
        let event = match parsed {
            Ok(event) => event,
            Err(e) => {
                engine.record_bad();
                note(notes, format!("bad event: {e}"))?;
                continue;
            }
        };
        let late_before = engine.stats().late;
        let closed = engine.push(&event);
        if engine.stats().late > late_before {
            note(
                notes,
                format!(
                    "late event: {origin}, {}: its window had already closed when it came (events are taken in file order)",
                    input.at()
                ),
            )?;
        }
        summary.outputs += print(&closed, out)?;
    }
    summary.outputs += print(&engine.finish(), out)?;
    summary.stats = engine.stats();
    let s = summary.stats;
    writeln!(
        notes,
        "test-rules: {} events: {} accepted, {} matched no rule, {} late, {} over the group cap, {} bad; {} output events",
        summary.events, s.accepted, s.unmatched, s.late, s.over_cap, s.bad, summary.outputs
    )?;
    Ok(summary)
}

fn print(closed: &Closed, out: &mut dyn Write) -> std::io::Result<u64> {
    for o in &closed.outputs {
        writeln!(out, "{}", o.to_json_line())?;
    }
    Ok(closed.outputs.len() as u64)
}
