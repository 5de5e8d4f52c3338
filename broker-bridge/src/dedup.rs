//! The notification log: which `(target, alarm id, state)` have been notified (or are on
//! their way; a firing state counts once per severity, see pipeline.rs), so redeliveries, QoS 1
//! duplicates and retained states sent again after a reconnect or a restart notify nobody
//! twice; and, with `bridge.state_dir`, every
//! notification queued for a target and not yet finished, so a bridge killed with
//! `kill -9` delivers it after its restart.
//!
//! In memory: a set of 128-bit keys (SipHash-2-4 of target, id and state, twice with fixed
//! keys, so they are the same in every run) with the order they came in; at most
//! `capacity` keys, the oldest forgotten first. Hashing bounds each key to 16 bytes however
//! long an id a publisher sends.
//!
//! On disk (`<state_dir>/notifications.v1.log`), append-only lines, each
//! `<crc32 hex> <record>\n` so a torn or corrupted line is recognised and skipped:
//! - `Q <seq> <json>`: a notification queued for a target, with the dedup keys it carries.
//!   Written before the message is acknowledged to the broker.
//! - `D <seq> [<position> <target>]`: that notification was delivered or dead-lettered,
//!   with where the target's output stood afterwards if the target can tell (the `file`
//!   target: its length). Written right after.
//! - `P <position> <target>`: where a target's output stood at start, and at compaction.
//! - `K <key>`: a remembered key, written by compaction.
//!
//! On start the file is read (bad lines skipped, counted and logged, a torn last line
//! dropped), every key is remembered, and `Q` records without their `D` are handed back
//! to be queued again. Then it is compacted: rewritten as the live keys and the unfinished
//! `Q` records into a temporary file, fsynced, renamed over the log, the directory fsynced.
//! Compaction also runs whenever the log has grown to four times its size after the last
//! one (and at least 8 MiB), so the file stays below `max(4 × (live keys × 44 bytes +
//! queued notifications), 8 MiB)` plus one record: 18 MiB with the default 100,000 keys.
//!
//! Durability: every record is written to the kernel (one `write`) before the code goes on,
//! so `kill -9` loses nothing written; fsync runs at most every `bridge.state_sync`
//! (`"0s"`: after every record; periodic ones on a blocking thread, so a slow disk does not
//! stall the bridge), at compaction and at shutdown, so a power cut can lose the
//! records of the last interval. A lost `Q` record means the message was not acknowledged
//! yet (the broker sends it again); a lost `D` or `K` record means a notification sent
//! twice, never one lost. The one window for a duplicate after `kill -9` is between a
//! target accepting a notification and the `D` record's `write` (microseconds). Targets
//! that report a position close it: when a target's output has grown past the position
//! of its last `D` record, the notification in flight at the crash (the target's oldest
//! unfinished one: each target's worker sends in order, one at a time) was written, and
//! is marked done instead of sent again.
//!
//! Write errors (disk full, I/O errors) are logged at most once a minute and counted in
//! the stats (`state_errors`); the bridge goes on with what it has in memory. A record a
//! full disk cut short is cut off the file at once, so the log stays whole lines and a
//! restart after the disk has space again finds nothing torn.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::hash::Hasher;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Error;
use crate::notify::Notification;
use crate::stats::RateLimited;

/// A dedup key: see [`key`].
pub type Key = u128;

/// File name of the log inside `state_dir`; the version changes with the format.
pub const LOG_FILE: &str = "notifications.v1.log";
const LOCK_FILE: &str = "lock";
/// Compaction never runs for a log smaller than this. Each compaction rewrites every key
/// and fsyncs twice, on the bridge's one thread: measured, compacting from 1 MiB on cost
/// a release build 4-5 times its throughput (50,000 alarms: 2-8 s instead of 0.75 s).
const COMPACT_MIN: u64 = 8 << 20;
/// The log is compacted when it has grown to this many times its size after the last
/// compaction (or `COMPACT_MIN`).
const COMPACT_FACTOR: u64 = 4;

/// The key of `(target, id, state)`: 128 bits from SipHash-2-4 with two fixed key pairs.
/// Stable across runs and Rust versions (unlike `DefaultHasher`), so keys on disk stay valid.
pub fn key(target: &str, id: &str, state: &str) -> Key {
    #[allow(deprecated)] // SipHasher is deprecated for HashMap use, not as a stable hash.
    let mut hashers = [
        std::hash::SipHasher::new_with_keys(0x6c6f_6f6b_6f75_7401, 0x6272_6964_6765_0001),
        std::hash::SipHasher::new_with_keys(0x6c6f_6f6b_6f75_7402, 0x6272_6964_6765_0002),
    ];
    for h in &mut hashers {
        for part in [target, id, state] {
            h.write(&(part.len() as u64).to_le_bytes());
            h.write(part.as_bytes());
        }
    }
    (u128::from(hashers[0].finish()) << 64) | u128::from(hashers[1].finish())
}

/// A notification found queued but unfinished in the log at start.
#[derive(Debug)]
pub struct Recovered {
    pub seq: u64,
    pub n: Notification,
}

/// What reading the log at start found, for the start-up log line.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Loaded {
    pub records: usize,
    pub keys: usize,
    /// Lines skipped: bad checksum, unknown record, unparsable.
    pub bad_lines: usize,
    /// 1-based number of the first bad line.
    pub first_bad_line: Option<usize>,
    /// Bytes of an unfinished last line (a write cut short by a crash), dropped.
    pub torn_tail: usize,
    /// Each target's last recorded output position (see the module docs).
    pub positions: HashMap<String, u64>,
}

pub struct NotificationLog {
    inner: Mutex<Inner>,
    write_errors: RateLimited,
}

struct Inner {
    keys: HashSet<Key>,
    order: VecDeque<Key>,
    capacity: usize,
    next_seq: u64,
    disk: Option<Disk>,
    errors: u64,
    /// Each target's last recorded output position, rewritten at compaction.
    positions: HashMap<String, u64>,
}

struct Disk {
    dir: PathBuf,
    path: PathBuf,
    file: File,
    /// Held (flock) while this bridge runs: one bridge per state directory.
    _lock: File,
    len: u64,
    compact_at: u64,
    compact_min: u64,
    /// Queued and not finished: the `Q` records compaction keeps.
    pending: HashSet<u64>,
    dirty: bool,
    last_sync: Instant,
    sync_every: Duration,
}

impl std::fmt::Debug for NotificationLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.lock();
        f.debug_struct("NotificationLog")
            .field("keys", &inner.keys.len())
            .field("disk", &inner.disk.as_ref().map(|d| d.path.clone()))
            .finish()
    }
}

/// What a `Q` record holds.
#[derive(Serialize)]
struct QueuedOut<'a> {
    keys: Vec<String>,
    target: &'a str,
    topic: &'a str,
    title: &'a str,
    body: &'a str,
    fields: &'a Value,
    raw: std::borrow::Cow<'a, str>,
    /// The notification this one replaces (a hand-over to a fallback target).
    #[serde(skip_serializing_if = "Option::is_none")]
    replaces: Option<u64>,
}

#[derive(Deserialize)]
struct QueuedIn {
    #[serde(default)]
    keys: Vec<String>,
    target: String,
    topic: String,
    title: String,
    body: String,
    fields: Value,
    raw: String,
    #[serde(default)]
    replaces: Option<u64>,
}

enum Record {
    Key(Key),
    Queued(u64, QueuedIn),
    Done(u64, Option<(u64, String)>),
    Position(u64, String),
}

impl NotificationLog {
    /// Keys in memory only: nothing survives a restart.
    pub fn memory(capacity: usize) -> Self {
        Self::with(Inner::new(capacity, None))
    }

    fn with(inner: Inner) -> Self {
        Self {
            inner: Mutex::new(inner),
            write_errors: RateLimited::new(Duration::from_secs(60)),
        }
    }

    /// Opens (creating) `dir`, locks it, reads the log and compacts it. Returns the
    /// notifications that were queued and not finished, in their original order.
    pub fn open(
        dir: &Path,
        capacity: usize,
        sync_every: Duration,
    ) -> Result<(Self, Vec<Recovered>, Loaded), Error> {
        std::fs::create_dir_all(dir).map_err(io_error(dir))?;
        let lock = lock_dir(dir)?;
        let path = dir.join(LOG_FILE);
        let (records, loaded) = match File::open(&path) {
            Ok(f) => read_log(BufReader::new(f)).map_err(io_error(&path))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (Vec::new(), Loaded::default()),
            Err(e) => return Err(io_error(&path)(e)),
        };
        let mut inner = Inner::new(capacity, None);
        let recovered = inner.replay(records);
        let loaded = Loaded {
            keys: inner.keys.len(),
            positions: inner.positions.clone(),
            ..loaded
        };

        // Rewrite: drops bad lines and finished records, before anything is appended.
        let tmp = dir.join(format!("{LOG_FILE}.tmp"));
        let mut out = Vec::new();
        encode_state(&mut out, &inner.order, &inner.positions);
        for r in &recovered {
            // The recovered notifications' keys are among the K records already.
            encode_queued(&mut out, r.seq, &[], &r.n, None);
        }
        write_new(&tmp, &path, dir, &out).map_err(io_error(&path))?;
        let file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(io_error(&path))?;
        let len = out.len() as u64;
        inner.disk = Some(Disk {
            dir: dir.to_owned(),
            path,
            file,
            _lock: lock,
            len,
            compact_at: (COMPACT_FACTOR * len).max(COMPACT_MIN),
            compact_min: COMPACT_MIN,
            pending: recovered.iter().map(|r| r.seq).collect(),
            dirty: false,
            last_sync: Instant::now(),
            sync_every,
        });
        Ok((Self::with(inner), recovered, loaded))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// True the first time `k` is offered (and remembers it); false for a duplicate.
    pub fn first(&self, k: Key) -> bool {
        self.lock().remember(k)
    }

    /// True when `k` is remembered, without remembering it: for facts recorded earlier
    /// (a firing sent to a target, see [`crate::orphan`]).
    pub fn contains(&self, k: Key) -> bool {
        self.lock().keys.contains(&k)
    }

    /// Records that `n` was queued, carrying `keys`; returns its sequence number when the
    /// log is on disk (to pass to [`done`](Self::done)).
    pub fn queued(&self, keys: &[Key], n: &Notification) -> Option<u64> {
        let mut inner = self.lock();
        let seq = inner.next_seq;
        inner.disk.as_mut()?.pending.insert(seq);
        inner.next_seq += 1;
        let mut line = Vec::with_capacity(256 + n.raw.len() + n.body.len());
        encode_queued(&mut line, seq, keys, n, None);
        let res = inner.append(&line);
        drop(inner);
        self.report(res);
        Some(seq)
    }

    /// Records in one record that the unfinished notification `old` was replaced by `n`
    /// (for another target: a hand-over to a fallback), so after a crash exactly one of
    /// the two is unfinished. Returns `n`'s sequence number when the log is on disk.
    pub fn moved(&self, old: Option<u64>, n: &Notification) -> Option<u64> {
        let mut inner = self.lock();
        let seq = inner.next_seq;
        let disk = inner.disk.as_mut()?;
        disk.pending.insert(seq);
        if let Some(o) = old {
            disk.pending.remove(&o);
        }
        inner.next_seq += 1;
        let mut line = Vec::with_capacity(256 + n.raw.len() + n.body.len());
        encode_queued(&mut line, seq, &[], n, old);
        let res = inner.append(&line);
        drop(inner);
        self.report(res);
        Some(seq)
    }

    /// Records that notification `seq` is finished (delivered or dead-lettered), with
    /// where its target's output stands now if the target can tell.
    pub fn done(&self, seq: u64, position: Option<(&str, u64)>) {
        let mut inner = self.lock();
        let Some(disk) = inner.disk.as_mut() else {
            return;
        };
        if !disk.pending.remove(&seq) {
            return;
        }
        let mut line = Vec::with_capacity(64);
        match position {
            Some((target, pos)) => {
                push_record(&mut line, format_args!("D {seq} {pos} {}", quoted(target)));
                inner.positions.insert(target.to_owned(), pos);
            }
            None => push_record(&mut line, format_args!("D {seq}")),
        }
        let res = inner.append(&line);
        drop(inner);
        self.report(res);
    }

    /// Records where `target`'s output stands, at start (see the module docs).
    pub fn set_position(&self, target: &str, pos: u64) {
        let mut inner = self.lock();
        if inner.disk.is_none() {
            return;
        }
        inner.positions.insert(target.to_owned(), pos);
        let mut line = Vec::with_capacity(64);
        push_record(&mut line, format_args!("P {pos} {}", quoted(target)));
        let res = inner.append(&line);
        drop(inner);
        self.report(res);
    }

    /// fsyncs if something was written and `state_sync` has passed since the last fsync.
    /// Inside a tokio runtime the fsync runs on a blocking thread (on a clone of the file
    /// handle), so a slow disk does not stall message handling.
    pub fn sync_if_due(&self) {
        let mut inner = self.lock();
        let Some(d) = inner.disk.as_mut() else { return };
        if !(d.dirty && d.last_sync.elapsed() >= d.sync_every) {
            return;
        }
        let background = tokio::runtime::Handle::try_current()
            .ok()
            .zip(d.file.try_clone().ok());
        let Some((rt, file)) = background else {
            let res = d.sync();
            drop(inner);
            self.report(res);
            return;
        };
        d.dirty = false;
        d.last_sync = Instant::now();
        let path = d.path.clone();
        drop(inner);
        rt.spawn_blocking(move || {
            if let Err(e) = file.sync_data() {
                tracing::error!(path = %path.display(), error = %e, "cannot fsync the notification log");
            }
        });
    }

    /// fsyncs now: at shutdown, after the queues drained.
    pub fn sync(&self) -> Result<(), Error> {
        let mut inner = self.lock();
        let Some(d) = inner.disk.as_mut() else {
            return Ok(());
        };
        d.sync().map_err(|source| Error::Io {
            path: d.path.clone(),
            source,
        })
    }

    /// Notifications queued on disk and not finished.
    pub fn pending(&self) -> usize {
        self.lock().disk.as_ref().map_or(0, |d| d.pending.len())
    }

    pub fn len(&self) -> usize {
        self.lock().keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Write errors so far (for the stats).
    pub fn errors(&self) -> u64 {
        self.lock().errors
    }

    fn report(&self, res: std::io::Result<()>) {
        if let Err(e) = res {
            let path = self
                .lock()
                .disk
                .as_ref()
                .map(|d| d.path.display().to_string())
                .unwrap_or_default();
            self.write_errors.hit(|suppressed| {
                tracing::error!(path = %path, error = %e, suppressed, "cannot write the notification log; a restart may notify twice or, for notifications still queued, not at all")
            });
        }
    }

    #[cfg(test)]
    fn set_compact_min(&self, bytes: u64) {
        if let Some(d) = self.lock().disk.as_mut() {
            d.compact_min = bytes;
            d.compact_at = (COMPACT_FACTOR * d.len).max(bytes);
        }
    }

    #[cfg(test)]
    fn file_len(&self) -> u64 {
        self.lock().disk.as_ref().map_or(0, |d| d.len)
    }
}

impl Inner {
    fn new(capacity: usize, disk: Option<Disk>) -> Self {
        Self {
            keys: HashSet::with_capacity(capacity.min(1 << 16)),
            order: VecDeque::with_capacity(capacity.min(1 << 16)),
            capacity: capacity.max(1),
            next_seq: 1,
            disk,
            errors: 0,
            positions: HashMap::new(),
        }
    }

    /// Applies the records read at start: every key remembered, each target's last
    /// position kept; returns the `Q` records without their `D`, in their original order.
    fn replay(&mut self, records: Vec<Record>) -> Vec<Recovered> {
        let mut queued: HashMap<u64, QueuedIn> = HashMap::new();
        for r in records {
            match r {
                Record::Key(k) => {
                    self.remember(k);
                }
                Record::Queued(seq, q) => {
                    for k in q.keys.iter().filter_map(|k| parse_key(k)) {
                        self.remember(k);
                    }
                    self.next_seq = self.next_seq.max(seq + 1);
                    if let Some(old) = q.replaces {
                        queued.remove(&old);
                    }
                    queued.insert(seq, q);
                }
                Record::Done(seq, position) => {
                    queued.remove(&seq);
                    if let Some((pos, target)) = position {
                        self.positions.insert(target, pos);
                    }
                }
                Record::Position(pos, target) => {
                    self.positions.insert(target, pos);
                }
            }
        }
        let mut recovered: Vec<Recovered> = queued
            .into_iter()
            .map(|(seq, q)| Recovered {
                seq,
                n: Notification {
                    target: q.target,
                    topic: q.topic,
                    title: q.title,
                    body: q.body,
                    fields: q.fields,
                    raw: q.raw.into_bytes(),
                },
            })
            .collect();
        recovered.sort_by_key(|r| r.seq);
        recovered
    }

    /// Appends one encoded record, fsyncs if `state_sync` is zero, compacts when due.
    fn append(&mut self, line: &[u8]) -> std::io::Result<()> {
        let Inner {
            order,
            disk,
            errors,
            positions,
            ..
        } = self;
        let Some(d) = disk.as_mut() else {
            return Ok(());
        };
        let res = d.append(line).and_then(|()| {
            if d.len >= d.compact_at {
                d.compact(order, positions)
            } else {
                Ok(())
            }
        });
        if res.is_err() {
            *errors += 1;
        }
        res
    }

    fn remember(&mut self, k: Key) -> bool {
        if !self.keys.insert(k) {
            return false;
        }
        if self.order.len() == self.capacity
            && let Some(old) = self.order.pop_front()
        {
            self.keys.remove(&old);
        }
        self.order.push_back(k);
        true
    }
}

impl Disk {
    fn append(&mut self, line: &[u8]) -> std::io::Result<()> {
        if let Err(e) = self.file.write_all(line) {
            // A full disk takes the first bytes of a write: cut them off again (truncating
            // frees space, so it works on a full disk), or the next record, written once
            // space returns, would continue the torn line and be lost with it. Should the
            // cut fail, start the next record on a line of its own.
            if self.file.set_len(self.len).is_err() {
                let _ = self.file.write_all(b"\n");
            }
            return Err(e);
        }
        self.len += line.len() as u64;
        self.dirty = true;
        if self.sync_every.is_zero() {
            self.sync()?;
        }
        Ok(())
    }

    fn sync(&mut self) -> std::io::Result<()> {
        self.file.sync_data()?;
        self.dirty = false;
        self.last_sync = Instant::now();
        Ok(())
    }

    /// Rewrites the log as `keys` and the pending `Q` records copied from the current
    /// file, then swaps it in. A crash at any point leaves the old or the new file whole.
    fn compact(
        &mut self,
        keys: &VecDeque<Key>,
        positions: &HashMap<String, u64>,
    ) -> std::io::Result<()> {
        let mut out = Vec::with_capacity(keys.len() * 44);
        encode_state(&mut out, keys, positions);
        let reader = BufReader::new(File::open(&self.path)?);
        for line in reader.split(b'\n') {
            let line = line?;
            if let Some(seq) = queued_seq(&line)
                && self.pending.contains(&seq)
            {
                out.extend_from_slice(&line);
                out.push(b'\n');
            }
        }
        let tmp = self.dir.join(format!("{LOG_FILE}.tmp"));
        write_new(&tmp, &self.path, &self.dir, &out)?;
        self.file = OpenOptions::new().append(true).open(&self.path)?;
        self.len = out.len() as u64;
        self.compact_at = (COMPACT_FACTOR * self.len).max(self.compact_min);
        self.dirty = false;
        self.last_sync = Instant::now();
        tracing::debug!(path = %self.path.display(), bytes = self.len, keys = keys.len(), pending = self.pending.len(), "notification log compacted");
        Ok(())
    }
}

/// The sequence number of a valid `Q` line (checksum verified), without parsing its JSON.
fn queued_seq(line: &[u8]) -> Option<u64> {
    let body = checked_body(line)?;
    let rest = body.strip_prefix(b"Q ")?;
    let end = rest.iter().position(|&b| b == b' ')?;
    std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
}

/// Writes `data` to `tmp`, fsyncs, renames it to `path` and fsyncs `dir`.
pub(crate) fn write_new(tmp: &Path, path: &Path, dir: &Path, data: &[u8]) -> std::io::Result<()> {
    let written = File::create(tmp).and_then(|mut f| {
        f.write_all(data)?;
        f.sync_all()
    });
    if let Err(e) = written {
        // A half-written copy on a full disk would keep the space the log needs.
        let _ = std::fs::remove_file(tmp);
        return Err(e);
    }
    std::fs::rename(tmp, path)?;
    File::open(dir)?.sync_all()
}

/// `K` records for `keys` and `P` records for `positions`: what compaction keeps besides
/// the unfinished notifications.
fn encode_state(out: &mut Vec<u8>, keys: &VecDeque<Key>, positions: &HashMap<String, u64>) {
    for k in keys {
        push_record(out, format_args!("K {k:032x}"));
    }
    for (target, pos) in positions {
        push_record(out, format_args!("P {pos} {}", quoted(target)));
    }
}

/// A target name as a JSON string: any character, one line.
fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

fn encode_queued(
    out: &mut Vec<u8>,
    seq: u64,
    keys: &[Key],
    n: &Notification,
    replaces: Option<u64>,
) {
    let q = QueuedOut {
        keys: keys.iter().map(|k| format!("{k:032x}")).collect(),
        target: &n.target,
        topic: &n.topic,
        title: &n.title,
        body: &n.body,
        fields: &n.fields,
        raw: String::from_utf8_lossy(&n.raw),
        replaces,
    };
    // Serialising plain strings and a Value cannot fail; an empty object keeps the record
    // well-formed if it ever did.
    let json = serde_json::to_string(&q).unwrap_or_else(|_| "{}".into());
    push_record(out, format_args!("Q {seq} {json}"));
}

/// Appends `<crc32 hex> <body>\n`.
pub(crate) fn push_record(out: &mut Vec<u8>, body: std::fmt::Arguments<'_>) {
    let start = out.len();
    out.extend_from_slice(b"00000000 ");
    let _ = out.write_fmt(body);
    let crc = crc32(&out[start + 9..]);
    out[start..start + 8].copy_from_slice(format!("{crc:08x}").as_bytes());
    out.push(b'\n');
}

/// The record of a line whose checksum holds.
pub(crate) fn checked_body(line: &[u8]) -> Option<&[u8]> {
    if line.len() < 10 || line[8] != b' ' {
        return None;
    }
    let want = u32::from_str_radix(std::str::from_utf8(&line[..8]).ok()?, 16).ok()?;
    let body = &line[9..];
    (crc32(body) == want).then_some(body)
}

fn parse_key(hex: &str) -> Option<Key> {
    (hex.len() == 32)
        .then(|| u128::from_str_radix(hex, 16).ok())
        .flatten()
}

/// The highest sequence number a queued record may carry. Numbers start at 1 and grow by
/// one per notification, so no log gets near this; a larger one is damage, and taking it
/// would overflow the next number (found by `fuzz/`, target `notification_log`).
const MAX_SEQ: u64 = 1 << 62;

fn parse_record(body: &[u8]) -> Option<Record> {
    let text = std::str::from_utf8(body).ok()?;
    let (kind, rest) = text.split_once(' ')?;
    match kind {
        "K" => parse_key(rest).map(Record::Key),
        "D" => match rest.split_once(' ') {
            None => rest.parse().ok().map(|seq| Record::Done(seq, None)),
            Some((seq, position)) => {
                let (pos, target) = position.split_once(' ')?;
                Some(Record::Done(
                    seq.parse().ok()?,
                    Some((pos.parse().ok()?, serde_json::from_str(target).ok()?)),
                ))
            }
        },
        "P" => {
            let (pos, target) = rest.split_once(' ')?;
            Some(Record::Position(
                pos.parse().ok()?,
                serde_json::from_str(target).ok()?,
            ))
        }
        "Q" => {
            let (seq, json) = rest.split_once(' ')?;
            Some(Record::Queued(
                seq.parse().ok().filter(|s| *s <= MAX_SEQ)?,
                serde_json::from_str(json).ok()?,
            ))
        }
        _ => None,
    }
}

/// Reads a log's bytes and replays them as [`NotificationLog::open`] does, without a file
/// or a lock: the notifications still queued, and what reading found. Public so that
/// `fuzz/` can feed it arbitrary bytes.
pub fn replay_bytes(bytes: &[u8], capacity: usize) -> (Vec<Recovered>, Loaded) {
    // Reading from a slice cannot fail.
    let (records, loaded) = read_log(bytes).unwrap_or_default();
    (Inner::new(capacity, None).replay(records), loaded)
}

/// Reads every line; bad ones are counted and logged, never fatal.
fn read_log(mut r: impl BufRead) -> std::io::Result<(Vec<Record>, Loaded)> {
    let mut records = Vec::new();
    let mut loaded = Loaded::default();
    let mut line = Vec::new();
    let mut number = 0;
    loop {
        line.clear();
        if r.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        number += 1;
        if line.last() != Some(&b'\n') {
            loaded.torn_tail = line.len();
            break;
        }
        line.pop();
        match checked_body(&line).and_then(parse_record) {
            Some(rec) => {
                records.push(rec);
                loaded.records += 1;
            }
            None => {
                loaded.bad_lines += 1;
                loaded.first_bad_line.get_or_insert(number);
            }
        }
    }
    Ok((records, loaded))
}

/// CRC-32 (IEEE 802.3), the checksum of each line.
fn crc32(data: &[u8]) -> u32 {
    crc32fast::hash(data)
}

/// Turns an I/O error on `path` into the crate's error, naming the file.
fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.to_owned();
    move |source| Error::Io { path, source }
}

/// Creates and locks `dir`'s lock file: one bridge per state directory. The returned file
/// holds the lock until it is dropped.
fn lock_dir(dir: &Path) -> Result<File, Error> {
    let lock_path = dir.join(LOCK_FILE);
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io_error(&lock_path))?;
    try_lock(&lock).map_err(|e| Error::Config {
        path: dir.display().to_string(),
        message: format!(
            "bridge.state_dir: cannot lock {} ({e}); is another lookout-bridge using \
             this directory? Each bridge needs its own.",
            lock_path.display()
        ),
    })?;
    Ok(lock)
}

/// An exclusive, non-blocking `flock`: released by the kernel when the process dies,
/// `kill -9` included, so no stale lock survives a crash.
fn try_lock(f: &File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a file descriptor this File owns and keeps open.
    let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(target: &str, id: &str) -> Notification {
        Notification {
            target: target.into(),
            topic: "lookout/h/alarms/cpu".into(),
            title: "t".into(),
            body: format!("{{\"id\":\"{id}\"}}"),
            fields: serde_json::json!({"id": id}),
            raw: format!("{{\"id\":\"{id}\"}}").into_bytes(),
        }
    }

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn keys_differ_by_target_id_and_state_and_are_stable() {
        assert_ne!(key("a", "x", "firing"), key("b", "x", "firing"));
        assert_ne!(key("a", "x", "firing"), key("a", "x", "resolved"));
        assert_ne!(key("a", "bc", "d"), key("a", "b", "cd"), "length-prefixed");
        // Written to disk: must never change between versions.
        assert_eq!(
            format!("{:032x}", key("alarms_file", "h:cpu:1", "firing")),
            "6c62f0e4b4275783e6843ce408efd15d"
        );
    }

    #[test]
    fn each_key_passes_once_and_memory_is_bounded() {
        let d = NotificationLog::memory(3);
        assert!(d.first(key("t", "a", "firing")));
        assert!(!d.first(key("t", "a", "firing")));
        assert!(d.first(key("u", "a", "firing")), "another target");
        for i in 0..10 {
            d.first(key("t", &i.to_string(), "firing"));
        }
        assert_eq!(d.len(), 3);
        assert!(d.first(key("t", "0", "firing")), "forgotten");
        assert!(!d.first(key("t", "9", "firing")), "remembered");
        assert_eq!(d.queued(&[], &n("t", "a")), None, "nothing on disk");
    }

    #[test]
    fn keys_and_unfinished_notifications_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let k = key("t", "a", "firing");
        {
            let (log, recovered, _) =
                NotificationLog::open(dir.path(), 100, Duration::ZERO).unwrap();
            assert!(recovered.is_empty());
            assert!(log.first(k));
            let done = log.queued(&[k], &n("t", "a")).unwrap();
            log.done(done, None);
            let k2 = key("t", "b", "firing");
            assert!(log.first(k2));
            log.queued(&[k2], &n("t", "b")).unwrap();
            // Dropped without sync or shutdown, as after kill -9.
        }
        let (log, recovered, loaded) =
            NotificationLog::open(dir.path(), 100, Duration::ZERO).unwrap();
        assert!(!log.first(k), "notified before the restart");
        assert!(!log.first(key("t", "b", "firing")), "queued before it");
        assert_eq!(recovered.len(), 1);
        assert_eq!(recovered[0].n, n("t", "b"));
        assert_eq!(loaded.bad_lines, 0);
        log.done(recovered[0].seq, Some(("t", 99)));
        log.set_position("u", 7);
        drop(log);
        let (_, recovered, loaded) =
            NotificationLog::open(dir.path(), 100, Duration::ZERO).unwrap();
        assert!(recovered.is_empty(), "finished after the restart");
        assert_eq!(loaded.positions.get("t"), Some(&99));
        assert_eq!(loaded.positions.get("u"), Some(&7));
    }

    #[test]
    fn a_hand_over_leaves_exactly_one_of_the_two_unfinished_after_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (log, _, _) = NotificationLog::open(dir.path(), 100, Duration::ZERO).unwrap();
            let old = log.queued(&[], &n("chat", "a")).unwrap();
            let new = log.moved(Some(old), &n("mail", "a")).unwrap();
            assert_eq!(log.pending(), 1);
            assert!(new > old);
            // Dropped without D records, as after kill -9.
        }
        let (log, recovered, _) = NotificationLog::open(dir.path(), 100, Duration::ZERO).unwrap();
        assert_eq!(recovered.len(), 1);
        assert_eq!(recovered[0].n.target, "mail");
        log.done(recovered[0].seq, None);
        drop(log);
        let (_, recovered, _) = NotificationLog::open(dir.path(), 100, Duration::ZERO).unwrap();
        assert!(recovered.is_empty());
    }

    #[test]
    fn a_second_bridge_on_the_same_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _first = NotificationLog::open(dir.path(), 10, Duration::ZERO).unwrap();
        let err = NotificationLog::open(dir.path(), 10, Duration::ZERO).unwrap_err();
        assert!(err.to_string().contains("another lookout-bridge"), "{err}");
    }

    #[test]
    fn a_queued_record_numbered_at_the_end_of_u64_is_a_bad_line_not_an_overflow() {
        let dir = tempfile::tempdir().unwrap();
        let mut text = Vec::new();
        let q =
            r#"{"keys":[],"target":"t","topic":"t","title":"t","body":"b","fields":{},"raw":""}"#;
        push_record(&mut text, format_args!("Q {} {q}", u64::MAX));
        push_record(&mut text, format_args!("Q {} {q}", MAX_SEQ + 1));
        std::fs::write(dir.path().join(LOG_FILE), &text).unwrap();

        let (log, recovered, loaded) =
            NotificationLog::open(dir.path(), 100, Duration::ZERO).unwrap();
        assert_eq!((loaded.bad_lines, recovered.len()), (2, 0), "{loaded:?}");
        assert_eq!(
            log.queued(&[], &n("t", "next")),
            Some(1),
            "numbering starts afresh"
        );
    }

    #[test]
    fn corrupt_lines_and_a_torn_tail_are_skipped_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let k = key("t", "kept", "firing");
        {
            let (log, _, _) = NotificationLog::open(dir.path(), 100, Duration::ZERO).unwrap();
            log.first(k);
            let seq = log.queued(&[k], &n("t", "kept")).unwrap();
            log.done(seq, None);
        }
        let path = dir.path().join(LOG_FILE);
        let mut text = std::fs::read(&path).unwrap();
        text.extend_from_slice(b"garbage line\n");
        text.extend_from_slice(b"00000000 K 00000000000000000000000000000001\n");
        text.extend_from_slice(&[0xff, 0x00, b'\n']);
        let mut torn = Vec::new();
        push_record(&mut torn, format_args!("K {:032x}", 7u128));
        text.extend_from_slice(&torn[..torn.len() - 5]);
        std::fs::write(&path, &text).unwrap();

        let (log, _, loaded) = NotificationLog::open(dir.path(), 100, Duration::ZERO).unwrap();
        assert_eq!(loaded.bad_lines, 3, "{loaded:?}");
        assert!(loaded.torn_tail > 0, "{loaded:?}");
        assert!(!log.first(k), "the good records were kept");
        assert!(log.first(7), "the torn record was dropped");
        drop(log);
        // The rewrite at start left a clean file.
        let (_, _, loaded) = NotificationLog::open(dir.path(), 100, Duration::ZERO).unwrap();
        assert_eq!((loaded.bad_lines, loaded.torn_tail), (0, 0), "{loaded:?}");

        // Pure noise is no reason to stop either.
        std::fs::write(&path, (0..=255u8).cycle().take(10_000).collect::<Vec<_>>()).unwrap();
        let (_, recovered, loaded) =
            NotificationLog::open(dir.path(), 100, Duration::ZERO).unwrap();
        assert!(recovered.is_empty());
        assert!(loaded.bad_lines > 0);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// Whatever is in the file, reading it never panics, and a good file with any
        /// bytes appended still gives back every good record.
        #[test]
        fn reading_any_bytes_never_panics(
            junk in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..4096),
        ) {
            let mut good = Vec::new();
            push_record(&mut good, format_args!("K {:032x}", 42u128));
            push_record(&mut good, format_args!("D 7"));
            let mut file = good.clone();
            file.extend_from_slice(&junk);
            let (records, loaded) = read_log(std::io::Cursor::new(&file)).unwrap();
            proptest::prop_assert!(records.len() >= 2);
            proptest::prop_assert!(matches!(records[0], Record::Key(42)));
            proptest::prop_assert!(loaded.records >= 2);
            let _ = read_log(std::io::Cursor::new(&junk)).unwrap();
        }
    }

    #[test]
    fn compaction_keeps_the_file_bounded_and_the_state_intact() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _, _) = NotificationLog::open(dir.path(), 50, Duration::from_secs(60)).unwrap();
        log.set_compact_min(4096);
        let mut open = None;
        for i in 0..2_000 {
            let k = key("t", &i.to_string(), "firing");
            assert!(log.first(k));
            let seq = log.queued(&[k], &n("t", &i.to_string())).unwrap();
            if i == 10 {
                open = Some(seq); // never finished
            } else {
                log.done(seq, None);
            }
            assert!(
                log.file_len() < 16 * 1024,
                "{} bytes at {i}",
                log.file_len()
            );
        }
        assert_eq!(log.pending(), 1);
        drop(log);
        let (log, recovered, loaded) =
            NotificationLog::open(dir.path(), 50, Duration::ZERO).unwrap();
        assert_eq!(loaded.bad_lines, 0);
        assert_eq!(recovered.len(), 1);
        assert_eq!(Some(recovered[0].seq), open);
        assert!(!log.first(key("t", "1999", "firing")), "recent keys kept");
        assert!(log.first(key("t", "100", "firing")), "old keys forgotten");
    }
}
