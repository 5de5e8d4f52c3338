//! The alarms this bridge has notified as firing and not yet seen resolved: which
//! targets were sent each one (by which route), when it was first notified, whether
//! someone acknowledged it and until when, and which escalation steps went out.
//!
//! Acknowledgements, their notices, escalation and repeats after a restart all read this
//! table, so with `bridge.state_dir` it is durable with the notification log's
//! crash-safety ([`crate::dedup`]): `<state_dir>/alarms.v1.log`, append-only lines
//! `<crc32 hex> <record>` written to the kernel before the code goes on (safe against
//! `kill -9`), fsynced every `bridge.state_sync` and at once for acknowledgements (a
//! person's action is not worth losing to a power cut), bad or torn lines skipped and
//! counted. Records:
//! - `S <json>`: an alarm's whole entry, as it is now (written when it changes);
//! - `X <json id>`: the alarm resolved, its entry dropped.
//!
//! The file is rewritten (temporary file, fsync, rename) at start and when it has grown to
//! four times its size after the last rewrite (at least 1 MiB), so it stays under about
//! `4 × entries × entry size`. Bounded: at most `capacity` alarms are tracked (new ones
//! beyond are not, and counted), and the last [`RESOLVED_KEPT`] resolved ids are kept to
//! tell "already resolved" from "unknown" in replies.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::Error;
use crate::ack::Request;
use crate::dedup::{checked_body, push_record, write_new};
use crate::stats::RateLimited;

pub const FILE: &str = "alarms.v1.log";
/// Resolved ids remembered for replies ("already resolved").
pub const RESOLVED_KEPT: usize = 1000;
const COMPACT_MIN: u64 = 1 << 20;
const COMPACT_FACTOR: u64 = 4;

/// A target sent an alarm's firing, and the route that rendered it for that target.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sent {
    pub route: usize,
    pub target: String,
}

/// Someone is on it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    pub by: String,
    /// Unix ms; `None`: until the alarm resolves.
    pub until: Option<i64>,
    pub comment: Option<String>,
    /// When it was acknowledged, Unix ms.
    pub at: i64,
}

impl Ack {
    pub fn active(&self, now_ms: i64) -> bool {
        self.until.is_none_or(|u| now_ms < u)
    }
}

/// One firing alarm.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// The topic and payload of its latest firing state, to render notices from.
    pub topic: String,
    pub raw: String,
    /// When it was first notified, Unix ms: escalation counts from here.
    pub first_ms: i64,
    pub sent: Vec<Sent>,
    #[serde(default)]
    pub ack: Option<Ack>,
    /// Escalation steps already sent: `(route, index into its escalate)`.
    #[serde(default)]
    pub steps: Vec<(usize, usize)>,
}

impl Entry {
    pub fn acked(&self, now_ms: i64) -> bool {
        self.ack.as_ref().is_some_and(|a| a.active(now_ms))
    }
}

#[derive(Serialize, Deserialize)]
struct Record {
    id: String,
    #[serde(flatten)]
    entry: Entry,
}

/// What [`Firing::firing`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Noted {
    New,
    Changed,
    Same,
    /// Not tracked: the table is full.
    Full,
}

/// What an acknowledgement found.
#[derive(Debug, PartialEq)]
pub enum Acked {
    /// Acknowledged now; the entry as it is after.
    Now(Entry),
    /// The same acknowledgement again (a redelivered request): nothing changes.
    Again,
    AlreadyResolved,
    Unknown,
}

/// What reading the file at start found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Loaded {
    pub entries: usize,
    pub bad_lines: usize,
    pub torn_tail: usize,
}

pub struct Firing {
    entries: HashMap<String, Entry>,
    capacity: usize,
    resolved: VecDeque<String>,
    resolved_set: HashSet<String>,
    disk: Option<Disk>,
    errors: u64,
    write_errors: RateLimited,
}

struct Disk {
    dir: PathBuf,
    path: PathBuf,
    file: File,
    len: u64,
    compact_at: u64,
    dirty: bool,
    last_sync: Instant,
    sync_every: Duration,
}

impl Firing {
    /// In memory only: nothing survives a restart.
    pub fn memory(capacity: usize) -> Self {
        Self {
            entries: HashMap::new(),
            capacity: capacity.max(1),
            resolved: VecDeque::new(),
            resolved_set: HashSet::new(),
            disk: None,
            errors: 0,
            write_errors: RateLimited::new(Duration::from_secs(60)),
        }
    }

    /// Reads `<dir>/alarms.v1.log` (the directory exists and is locked by the notification
    /// log) and rewrites it clean.
    pub fn open(
        dir: &Path,
        capacity: usize,
        sync_every: Duration,
    ) -> Result<(Self, Loaded), Error> {
        let path = dir.join(FILE);
        let io = |source| Error::Io {
            path: path.clone(),
            source,
        };
        let mut me = Self::memory(capacity);
        let loaded = match File::open(&path) {
            Ok(f) => me.read(BufReader::new(f)).map_err(io)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Loaded::default(),
            Err(e) => return Err(io(e)),
        };
        let out = me.encode_all();
        write_new(&dir.join(format!("{FILE}.tmp")), &path, dir, &out).map_err(io)?;
        let file = OpenOptions::new().append(true).open(&path).map_err(io)?;
        let len = out.len() as u64;
        me.disk = Some(Disk {
            dir: dir.to_owned(),
            path,
            file,
            len,
            compact_at: (COMPACT_FACTOR * len).max(COMPACT_MIN),
            dirty: false,
            last_sync: Instant::now(),
            sync_every,
        });
        Ok((me, loaded))
    }

    /// Reads a table's lines into this one, as [`Firing::open`] does. Public so that
    /// `fuzz/` can feed it arbitrary bytes without a file.
    pub fn read(&mut self, mut r: impl BufRead) -> std::io::Result<Loaded> {
        let mut loaded = Loaded::default();
        let mut line = Vec::new();
        loop {
            line.clear();
            if r.read_until(b'\n', &mut line)? == 0 {
                break;
            }
            if line.last() != Some(&b'\n') {
                loaded.torn_tail = line.len();
                break;
            }
            line.pop();
            let parsed = checked_body(&line).and_then(|b| {
                let text = std::str::from_utf8(b).ok()?;
                match text.split_once(' ')? {
                    ("S", json) => serde_json::from_str::<Record>(json).ok().map(Ok),
                    ("X", json) => serde_json::from_str::<String>(json).ok().map(Err),
                    _ => None,
                }
            });
            match parsed {
                Some(Ok(rec)) => {
                    if self.entries.contains_key(&rec.id) || self.entries.len() < self.capacity {
                        self.entries.insert(rec.id, rec.entry);
                    }
                }
                Some(Err(id)) => {
                    self.entries.remove(&id);
                    self.remember_resolved(id);
                }
                None => loaded.bad_lines += 1,
            }
        }
        loaded.entries = self.entries.len();
        Ok(loaded)
    }

    fn encode_all(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for id in &self.resolved {
            push_record(&mut out, format_args!("X {}", json_string(id)));
        }
        for (id, e) in &self.entries {
            encode_entry(&mut out, id, e);
        }
        out
    }

    /// Notes that alarm `id` (its latest firing `topic` and payload) was sent to `sent`
    /// (now, or earlier for a redelivery), merging with what is known.
    pub fn firing(
        &mut self,
        id: &str,
        topic: &str,
        raw: &str,
        sent: &[Sent],
        now_ms: i64,
    ) -> Noted {
        let full = self.entries.len() >= self.capacity;
        let noted = match self.entries.get_mut(id) {
            Some(e) => {
                let mut changed = e.raw != raw || e.topic != topic;
                if changed {
                    raw.clone_into(&mut e.raw);
                    topic.clone_into(&mut e.topic);
                }
                for s in sent {
                    if !e.sent.iter().any(|x| x.target == s.target) {
                        e.sent.push(s.clone());
                        changed = true;
                    }
                }
                if changed { Noted::Changed } else { Noted::Same }
            }
            None if full => return Noted::Full,
            None => {
                self.entries.insert(
                    id.to_owned(),
                    Entry {
                        topic: topic.to_owned(),
                        raw: raw.to_owned(),
                        first_ms: now_ms,
                        sent: sent.to_vec(),
                        ack: None,
                        steps: Vec::new(),
                    },
                );
                Noted::New
            }
        };
        if noted != Noted::Same {
            self.write_entry(id, false);
        }
        noted
    }

    /// Alarm `id` resolved: its entry is dropped (and returned).
    pub fn resolved(&mut self, id: &str) -> Option<Entry> {
        let e = self.entries.remove(id)?;
        let mut line = Vec::new();
        push_record(&mut line, format_args!("X {}", json_string(id)));
        self.append(&line, false);
        self.remember_resolved(id.to_owned());
        Some(e)
    }

    fn remember_resolved(&mut self, id: String) {
        if self.resolved_set.insert(id.clone()) {
            self.resolved.push_back(id);
            if self.resolved.len() > RESOLVED_KEPT
                && let Some(old) = self.resolved.pop_front()
            {
                self.resolved_set.remove(&old);
            }
        }
    }

    /// Applies an acknowledgement; durable (fsynced) before it returns.
    pub fn acknowledge(&mut self, r: &Request, now_ms: i64) -> Acked {
        let Some(e) = self.entries.get_mut(&r.id) else {
            return if self.resolved_set.contains(&r.id) {
                Acked::AlreadyResolved
            } else {
                Acked::Unknown
            };
        };
        if let Some(a) = &e.ack
            && a.active(now_ms)
            && a.by == r.by
            && a.until == r.until
            && a.comment == r.comment
        {
            return Acked::Again;
        }
        e.ack = Some(Ack {
            by: r.by.clone(),
            until: r.until,
            comment: r.comment.clone(),
            at: now_ms,
        });
        let entry = e.clone();
        self.write_entry(&r.id, true);
        Acked::Now(entry)
    }

    /// Drops the acknowledgements whose `until` has passed; returns their alarms' ids.
    pub fn expire(&mut self, now_ms: i64) -> Vec<String> {
        let ids: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, e)| e.ack.as_ref().is_some_and(|a| !a.active(now_ms)))
            .map(|(id, _)| id.clone())
            .collect();
        for id in &ids {
            if let Some(e) = self.entries.get_mut(id) {
                e.ack = None;
            }
            self.write_entry(id, false);
        }
        ids
    }

    pub fn acked(&self, id: &str, now_ms: i64) -> bool {
        self.entries.get(id).is_some_and(|e| e.acked(now_ms))
    }

    pub fn get(&self, id: &str) -> Option<&Entry> {
        self.entries.get(id)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Entry)> {
        self.entries.iter()
    }

    /// Escalation step `step` of alarm `id` went out, to `sent` (they count as sent the
    /// firing: they get its acknowledgement and resolution).
    pub fn step_sent(&mut self, id: &str, step: (usize, usize), sent: &[Sent]) {
        let Some(e) = self.entries.get_mut(id) else {
            return;
        };
        if !e.steps.contains(&step) {
            e.steps.push(step);
        }
        for s in sent {
            if !e.sent.iter().any(|x| x.target == s.target) {
                e.sent.push(s.clone());
            }
        }
        self.write_entry(id, false);
    }

    #[cfg(test)]
    pub(crate) fn entries_mut_for_test(&mut self, id: &str) -> &mut Entry {
        self.entries.get_mut(id).expect("a tracked alarm")
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Write errors so far (for the stats).
    pub fn errors(&self) -> u64 {
        self.errors
    }

    fn write_entry(&mut self, id: &str, sync: bool) {
        let Some(e) = self.entries.get(id) else {
            return;
        };
        let mut line = Vec::new();
        encode_entry(&mut line, id, e);
        self.append(&line, sync);
    }

    fn append(&mut self, line: &[u8], sync: bool) {
        let Some(d) = self.disk.as_mut() else { return };
        let mut res = d.append(line);
        if res.is_ok() && (sync || d.sync_every.is_zero()) {
            res = d.sync();
        }
        if res.is_ok() && d.len >= d.compact_at {
            let out = self.encode_all();
            res = self.disk.as_mut().map_or(Ok(()), |d| d.replace(&out));
        }
        if let Err(e) = res {
            self.errors += 1;
            let path = self.disk.as_ref().map(|d| d.path.display().to_string());
            self.write_errors.hit(|suppressed| {
                tracing::error!(path, error = %e, suppressed, "cannot write the firing alarms' state; acknowledgements or escalation steps may be lost at a restart")
            });
        }
    }

    /// fsyncs when something was written and `state_sync` has passed.
    pub fn sync_if_due(&mut self) {
        if let Some(d) = self.disk.as_mut()
            && d.dirty
            && d.last_sync.elapsed() >= d.sync_every
            && let Err(e) = d.sync()
        {
            self.errors += 1;
            tracing::error!(path = %d.path.display(), error = %e, "cannot fsync the firing alarms' state");
        }
    }
}

impl Disk {
    fn append(&mut self, line: &[u8]) -> std::io::Result<()> {
        if let Err(e) = self.file.write_all(line) {
            // Cut off what a full disk took of the line (see dedup.rs), so the next record
            // does not continue a torn one; failing that, start it on a line of its own.
            if self.file.set_len(self.len).is_err() {
                let _ = self.file.write_all(b"\n");
            }
            return Err(e);
        }
        self.len += line.len() as u64;
        self.dirty = true;
        Ok(())
    }

    fn sync(&mut self) -> std::io::Result<()> {
        self.file.sync_data()?;
        self.dirty = false;
        self.last_sync = Instant::now();
        Ok(())
    }

    /// Swaps in a rewritten file: a crash at any point leaves the old or the new one whole.
    fn replace(&mut self, out: &[u8]) -> std::io::Result<()> {
        let tmp = self.dir.join(format!("{FILE}.tmp"));
        write_new(&tmp, &self.path, &self.dir, out)?;
        self.file = OpenOptions::new().append(true).open(&self.path)?;
        self.len = out.len() as u64;
        self.compact_at = (COMPACT_FACTOR * self.len).max(COMPACT_MIN);
        self.dirty = false;
        self.last_sync = Instant::now();
        Ok(())
    }
}

fn encode_entry(out: &mut Vec<u8>, id: &str, e: &Entry) {
    let rec = Record {
        id: id.to_owned(),
        entry: e.clone(),
    };
    let json = serde_json::to_string(&rec).unwrap_or_else(|_| "{}".into());
    push_record(out, format_args!("S {json}"));
}

fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(route: usize, target: &str) -> Sent {
        Sent {
            route,
            target: target.into(),
        }
    }

    fn ack(id: &str, by: &str, until: Option<i64>) -> Request {
        Request {
            id: id.into(),
            by: by.into(),
            until,
            comment: Some("on it".into()),
        }
    }

    #[test]
    fn targets_accumulate_and_only_changes_are_news() {
        let mut f = Firing::memory(10);
        assert_eq!(f.firing("a", "t", "{}", &[sent(0, "x")], 5), Noted::New);
        assert_eq!(f.firing("a", "t", "{}", &[sent(0, "x")], 9), Noted::Same);
        assert_eq!(f.firing("a", "t", "{}", &[sent(1, "y")], 9), Noted::Changed);
        assert_eq!(f.firing("a", "t", "{\"s\":3}", &[], 9), Noted::Changed);
        let e = f.get("a").unwrap();
        assert_eq!(e.first_ms, 5, "first notification kept");
        assert_eq!(e.sent, [sent(0, "x"), sent(1, "y")]);
        assert_eq!(e.raw, "{\"s\":3}");
    }

    #[test]
    fn an_acknowledgement_holds_until_its_time_or_the_resolution() {
        let mut f = Firing::memory(10);
        f.firing("a", "t", "{}", &[sent(0, "x")], 0);
        assert!(matches!(
            f.acknowledge(&ack("a", "alice", Some(100)), 10),
            Acked::Now(_)
        ));
        assert_eq!(
            f.acknowledge(&ack("a", "alice", Some(100)), 11),
            Acked::Again
        );
        assert!(f.acked("a", 99));
        assert!(!f.acked("a", 100));
        assert!(f.expire(50).is_empty());
        assert_eq!(f.expire(100), ["a"]);
        assert!(f.get("a").unwrap().ack.is_none());
        assert!(matches!(
            f.acknowledge(&ack("a", "bob", None), 120),
            Acked::Now(_)
        ));
        assert!(f.acked("a", i64::MAX));
        assert!(f.resolved("a").is_some());
        assert_eq!(
            f.acknowledge(&ack("a", "bob", None), 130),
            Acked::AlreadyResolved
        );
        assert_eq!(f.acknowledge(&ack("zz", "bob", None), 130), Acked::Unknown);
    }

    #[test]
    fn bounded_in_alarms_and_in_resolved_ids() {
        let mut f = Firing::memory(2);
        assert_eq!(f.firing("a", "t", "{}", &[], 0), Noted::New);
        assert_eq!(f.firing("b", "t", "{}", &[], 0), Noted::New);
        assert_eq!(f.firing("c", "t", "{}", &[], 0), Noted::Full);
        assert_eq!(f.len(), 2);
        let mut f = Firing::memory(10);
        for i in 0..RESOLVED_KEPT + 10 {
            f.firing(&i.to_string(), "t", "{}", &[], 0);
            f.resolved(&i.to_string());
        }
        assert_eq!(f.resolved.len(), RESOLVED_KEPT);
        assert_eq!(f.resolved_set.len(), RESOLVED_KEPT);
    }

    #[test]
    fn the_table_survives_a_restart_and_damage_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut f, loaded) = Firing::open(dir.path(), 10, Duration::from_secs(60)).unwrap();
            assert_eq!(loaded, Loaded::default());
            f.firing("a", "t/a", "{\"id\":\"a\"}", &[sent(0, "x")], 7);
            f.firing("b", "t/b", "{}", &[sent(0, "x")], 8);
            f.acknowledge(&ack("a", "alice", None), 9);
            f.step_sent("b", (0, 0), &[sent(0, "mail")]);
            f.firing("c", "t/c", "{}", &[], 8);
            f.resolved("c");
            // Dropped without sync, as after kill -9: writes reached the kernel.
        }
        let path = dir.path().join(FILE);
        let mut text = std::fs::read(&path).unwrap();
        text.extend_from_slice(b"garbage\n00000000 S {}\n");
        text.extend_from_slice(b"0123"); // torn
        std::fs::write(&path, text).unwrap();
        let (mut f, loaded) = Firing::open(dir.path(), 10, Duration::ZERO).unwrap();
        assert_eq!(
            (loaded.entries, loaded.bad_lines, loaded.torn_tail),
            (2, 2, 4)
        );
        assert!(f.acked("a", i64::MAX));
        assert_eq!(f.get("a").unwrap().first_ms, 7);
        assert_eq!(f.get("b").unwrap().steps, [(0, 0)]);
        assert_eq!(f.get("b").unwrap().sent, [sent(0, "x"), sent(0, "mail")]);
        assert_eq!(
            f.acknowledge(&ack("c", "x", None), 10),
            Acked::AlreadyResolved
        );
        f.resolved("a");
        drop(f);
        let (f, loaded) = Firing::open(dir.path(), 10, Duration::ZERO).unwrap();
        assert_eq!(
            (loaded.entries, loaded.bad_lines),
            (1, 0),
            "rewritten clean"
        );
        assert!(f.get("a").is_none());
    }

    #[test]
    fn rewrites_keep_the_file_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let (mut f, _) = Firing::open(dir.path(), 10, Duration::from_secs(60)).unwrap();
        let raw = "x".repeat(1000);
        for i in 0..5000 {
            f.firing("a", "t", &format!("{raw}{i}"), &[], 0);
        }
        let len = std::fs::metadata(dir.path().join(FILE)).unwrap().len();
        assert!(len <= COMPACT_MIN + 2000, "{len}");
        drop(f);
        let (f, _) = Firing::open(dir.path(), 10, Duration::ZERO).unwrap();
        assert!(f.get("a").unwrap().raw.ends_with("4999"));
    }
}
