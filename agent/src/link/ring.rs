//! The ring: scores and metrics kept on disk while a broker (the agent's own, or an
//! upstream) is unreachable, and sent oldest first when it is back.
//!
//! Without it a device that loses its uplink drops these lossy messages, and the centre
//! sees a hole exactly where the interesting part was (issue 21). Alarms never come here:
//! they have the durable outbox (`link::outbox`), which fsyncs and never downsamples.
//!
//! On disk, in one directory:
//! - segment files `<first id, 20 digits>.seg`, each a run of frames
//!   `[len: u32 LE][crc32: u32 LE][postcard(Entry)]` (`Entry` as `id` varint, `topic`,
//!   `payload`, `at_ms` zigzag varint), at most `segment_bytes` each; ids strictly increase
//!   in file order, across files too;
//! - `<first id>.min.seg`: a segment rewritten with per-minute aggregates;
//! - `sent`: the highest id sent (or given up on), 8 bytes LE, replaced atomically
//!   (`sent.tmp`, fsync, rename) after each acknowledgement, after records expired at a
//!   peek, and when no segment is left to carry the ids on across a restart.
//!
//! Crashes: pushes are not fsynced (1 Hz per topic of data that is lossy by nature); a
//! segment is synced when it is rolled over or rewritten, and `sent` on every update. A
//! crash (power cut) can therefore lose the unsynced tail of the newest segment (at most
//! one segment, `segment_bytes`; in practice what the kernel had not written back yet,
//! up to half a minute with Linux's defaults), and can send again what was sent after
//! the last `sent` update. A torn or corrupt frame is logged once when the ring is opened
//! and cut off with everything after it in its file. A rewrite interrupted before its
//! rename leaves a `.tmp` file, deleted at open; one interrupted after it leaves both
//! copies, and the `.min.seg` one is kept.
//!
//! Bounds: the segment files together never exceed `max_bytes` (a rewrite holds old and
//! new copy for a moment). When a push would pass it, the oldest segment not yet
//! downsampled (not the one being written, unless it is the only one) is rewritten with
//! per-minute aggregates ([`merge_minute`]); when every segment is, the oldest is dropped
//! whole. The newest data is never what goes. Downsampling works within one segment, so
//! a minute split between two segments stays two records. Records older than `max_age`
//! before the latest push's `at_ms` are dropped too: whole segments by their newest
//! record at push and peek, and the oldest records of the first segment one by one at
//! peek. Ages count from the latest push and not from the largest `at_ms` ever seen: a
//! record stamped in the far future expires what came before it (as a step of the clock
//! would), but not what comes after it.
//!
//! Memory: an index of segments (ids, bytes, times, downsampled or not), never the
//! records; `peek` reads as many frames as it is asked for. Downsampling reads one
//! segment whole (at most 4 MiB with [`RingSettings::new`]).
//!
//! Failures never stop the agent: a failed write loses that message and is counted in
//! `write_errors` (as are failed reads, renames and removals), logged at most once per
//! minute ([`super::error_log`]) with the number unlogged.

use std::collections::{HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::error_log::ErrorLog;
use crate::Error;

/// Bytes a frame adds to its record: length and checksum.
const FRAME: u64 = 8;

/// Downsampling merges records of one topic within one UTC minute.
const MINUTE_MS: i64 = 60_000;

/// Reads go through a buffer this large: a peek of a few hundred scores is one or two
/// reads, and memory stays small whatever the ring's size.
const READ_BUFFER: usize = 16 * 1024;

/// The file holding the highest id sent.
const CURSOR: &str = "sent";

/// Ids start at 1 and grow by one per record, so no ring comes near this; an id at or
/// above it on disk (in a record, a file name or the cursor) is damage, and taking it
/// would overflow the next id (found by `fuzz/`, target `ring_segment`).
const MAX_ID: u64 = 1 << 62;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RingSettings {
    pub dir: PathBuf,
    /// The segment files together never pass this.
    pub max_bytes: u64,
    /// Records this much older than the latest push are dropped.
    pub max_age: Duration,
    /// A segment is closed (synced) and a new one started when the next frame would pass
    /// this; a record whose frame alone passes it is dropped.
    pub segment_bytes: u64,
}

impl RingSettings {
    /// Issue 21's defaults: a day of a busy host's scores and metrics fits in 64 MiB
    /// once downsampled, and a small device's storage can spare that much.
    pub const DEFAULT_MAX_BYTES: u64 = 64 << 20;
    pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

    /// Sixteen segments to the ring, so that dropping the oldest gives back a sixteenth;
    /// at least 64 KiB (fewer files and syncs on a small ring), at most 4 MiB (what one
    /// downsampling rewrite holds in memory).
    pub fn new(dir: PathBuf, max_bytes: u64, max_age: Duration) -> Self {
        Self {
            dir,
            max_bytes,
            max_age,
            segment_bytes: (max_bytes / 16).clamp(64 << 10, 4 << 20),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RingStats {
    /// Records not yet sent, now.
    pub records: u64,
    /// Bytes of segment files on disk.
    pub bytes: u64,
    /// Records written since open.
    pub written: u64,
    /// Records acknowledged as sent since open.
    pub sent: u64,
    /// Records merged away into per-minute aggregates.
    pub downsampled: u64,
    /// Records lost to age or to the bound (or to a segment found damaged).
    pub dropped: u64,
    /// Disk operations that failed: writes (the message is lost), syncs, renames,
    /// removals, and reads of a segment that was damaged or vanished.
    pub write_errors: u64,
}

/// One message kept in the ring, and one record on disk (postcard, in this field order).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub id: u64,
    pub topic: String,
    pub payload: Vec<u8>,
    pub at_ms: i64,
}

#[derive(Debug)]
struct Segment {
    /// The id in the file's name: no record in it has a lower one.
    first: u64,
    /// No record in it has a higher id.
    last: u64,
    path: PathBuf,
    bytes: u64,
    records: u64,
    oldest_at: i64,
    newest_at: i64,
    downsampled: bool,
}

impl Segment {
    fn new(first: u64, path: PathBuf, downsampled: bool) -> Self {
        Self {
            first,
            last: first,
            path,
            bytes: 0,
            records: 0,
            oldest_at: i64::MAX,
            newest_at: i64::MIN,
            downsampled,
        }
    }

    fn took(&mut self, e: &Entry, frame: u64) {
        self.last = self.last.max(e.id);
        self.bytes += frame;
        self.records += 1;
        self.oldest_at = self.oldest_at.min(e.at_ms);
        self.newest_at = self.newest_at.max(e.at_ms);
    }
}

/// Where the first unsent record of the first segment starts.
#[derive(Clone, Copy, Debug, Default)]
struct Position {
    offset: u64,
    /// Records of the first segment before `offset` (sent or given up on).
    skipped: u64,
}

#[derive(Debug)]
pub struct Ring {
    settings: RingSettings,
    segments: VecDeque<Segment>,
    /// Open on the last segment while it takes appends; `None` once it is sealed.
    writer: Option<File>,
    front: Position,
    /// Everything at or below this id was sent or given up on (0: nothing; ids start at 1).
    cursor: u64,
    next_id: u64,
    /// The latest push's `at_ms`: ages are measured from it.
    now_ms: Option<i64>,
    /// Bytes of segment files that could not be deleted: they still count against the
    /// bound, until a restart finds them again.
    leftover: u64,
    stats: RingStats,
    errors: ErrorLog,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_owned(),
        source,
    }
}

fn invalid(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what)
}

fn segment_name(first: u64, downsampled: bool) -> String {
    if downsampled {
        format!("{first:020}.min.seg")
    } else {
        format!("{first:020}.seg")
    }
}

/// A record as a frame: length, checksum, body.
fn encode(e: &Entry) -> Result<Vec<u8>, postcard::Error> {
    let body = postcard::to_allocvec(e)?;
    let mut frame = Vec::with_capacity(body.len() + FRAME as usize);
    frame.extend_from_slice(&(body.len() as u32).to_le_bytes());
    frame.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    frame.extend_from_slice(&body);
    Ok(frame)
}

/// Frames of one file read in order from an offset, through a small buffer.
struct Frames {
    reader: BufReader<File>,
    at: u64,
    end: u64,
}

impl Frames {
    fn open(path: &Path, at: u64, end: u64) -> std::io::Result<Self> {
        let mut f = File::open(path)?;
        f.seek(SeekFrom::Start(at))?;
        Ok(Self {
            reader: BufReader::with_capacity(READ_BUFFER, f),
            at,
            end,
        })
    }

    /// The next record and its frame's length; `None` at `end`. A torn or corrupt frame
    /// is `InvalidData`, and a file shorter than `end` is `UnexpectedEof`.
    fn next(&mut self) -> std::io::Result<Option<(Entry, u64)>> {
        if self.at >= self.end {
            return Ok(None);
        }
        if self.end - self.at < FRAME {
            return Err(invalid("torn frame header"));
        }
        let mut head = [0u8; FRAME as usize];
        self.reader.read_exact(&mut head)?;
        let [l0, l1, l2, l3, c0, c1, c2, c3] = head;
        let len = u64::from(u32::from_le_bytes([l0, l1, l2, l3]));
        // Checked against what is left before allocating: a damaged length must not ask
        // for 4 GiB.
        if len > self.end - self.at - FRAME {
            return Err(invalid("frame runs past the end"));
        }
        let mut body = vec![0; len as usize];
        self.reader.read_exact(&mut body)?;
        if crc32fast::hash(&body) != u32::from_le_bytes([c0, c1, c2, c3]) {
            return Err(invalid("checksum mismatch"));
        }
        let entry = postcard::from_bytes(&body).map_err(|_| invalid("undecodable record"))?;
        self.at += FRAME + len;
        Ok(Some((entry, FRAME + len)))
    }
}

/// `count` records from `at`; fewer than that is damage.
fn read_entries(path: &Path, at: u64, end: u64, count: u64) -> std::io::Result<Vec<Entry>> {
    let mut out = Vec::new();
    if count == 0 {
        return Ok(out);
    }
    let mut frames = Frames::open(path, at, end)?;
    while (out.len() as u64) < count {
        let Some((e, _)) = frames.next()? else {
            return Err(invalid("fewer records than the index says"));
        };
        out.push(e);
    }
    Ok(out)
}

/// What opening found in one segment file.
struct Scan {
    segment: Segment,
    /// Bytes of whole, valid frames in increasing id order; the file's length.
    good: u64,
    len: u64,
    /// Where its first record above the cursor starts.
    unsent: Position,
    last_at: Option<i64>,
}

/// Reads a segment's frames up to the first torn or corrupt one, or the first whose id
/// does not follow `after`: nothing after damage is trusted.
fn scan(
    path: PathBuf,
    first: u64,
    downsampled: bool,
    after: u64,
    cursor: u64,
) -> Result<Scan, Error> {
    let len = std::fs::metadata(&path).map_err(io(&path))?.len();
    let mut frames = Frames::open(&path, 0, len).map_err(io(&path))?;
    let mut s = Scan {
        segment: Segment::new(first, path, downsampled),
        good: 0,
        len,
        unsent: Position::default(),
        last_at: None,
    };
    let mut prev = after;
    loop {
        let (e, n) = match frames.next() {
            Ok(Some(read)) => read,
            Ok(None) => break,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof
                ) =>
            {
                break;
            }
            Err(e) => return Err(io(&s.segment.path)(e)),
        };
        if e.id <= prev || e.id >= MAX_ID {
            break;
        }
        prev = e.id;
        s.segment.took(&e, n);
        s.good += n;
        s.last_at = Some(e.at_ms);
        if e.id <= cursor {
            s.unsent = Position {
                offset: s.good,
                skipped: s.segment.records,
            };
        }
    }
    Ok(s)
}

/// The segment files in `dir`, oldest first: (first id, downsampled, path). Leftovers of an
/// interrupted rewrite are cleared: `.tmp` files go, and of two copies of one segment the
/// downsampled one stays (its rename was done).
fn list_segments(dir: &Path) -> Result<Vec<(u64, bool, PathBuf)>, Error> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let path = entry.map_err(io(dir))?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if name.ends_with(".tmp") {
            let _ = std::fs::remove_file(&path);
            continue;
        }
        let Some(stem) = name.strip_suffix(".seg") else {
            continue;
        };
        let (stem, downsampled) = match stem.strip_suffix(".min") {
            Some(s) => (s, true),
            None => (stem, false),
        };
        match stem.parse::<u64>() {
            Ok(first) if (1..MAX_ID).contains(&first) => files.push((first, downsampled, path)),
            Ok(_) => {
                tracing::warn!(path = %path.display(), "buffer: a segment named outside the ids a ring can have is ignored");
            }
            Err(_) => {}
        }
    }
    files.sort();
    let mut kept: Vec<(u64, bool, PathBuf)> = Vec::with_capacity(files.len());
    for f in files {
        if let Some(raw) = kept.last().filter(|k| k.0 == f.0).map(|k| k.2.clone()) {
            tracing::warn!(path = %raw.display(), "buffer: a downsampling rewrite was interrupted after its rename; the raw copy is removed");
            let _ = std::fs::remove_file(&raw);
            kept.pop();
        }
        kept.push(f);
    }
    Ok(kept)
}

/// The highest id sent, from `sent`; an unreadable file means sending everything again.
fn read_cursor(dir: &Path) -> Result<u64, Error> {
    let path = dir.join(CURSOR);
    match std::fs::read(&path) {
        Ok(b) => match <[u8; 8]>::try_from(b.as_slice()) {
            Ok(b) if u64::from_le_bytes(b) < MAX_ID => Ok(u64::from_le_bytes(b)),
            _ => {
                tracing::warn!(path = %path.display(), "buffer: unreadable cursor file, sending everything on disk again");
                Ok(0)
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(io(&path)(e)),
    }
}

impl Ring {
    /// Opens (or creates) the ring in `settings.dir` and finds what was not sent. A torn
    /// or corrupt tail is logged and cut off; a directory or file that cannot be read is
    /// an error naming it.
    pub fn open(settings: RingSettings) -> Result<Ring, Error> {
        let dir = settings.dir.clone();
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let cursor = read_cursor(&dir)?;
        let mut ring = Ring {
            settings,
            segments: VecDeque::new(),
            writer: None,
            front: Position::default(),
            cursor,
            next_id: 1,
            now_ms: None,
            leftover: 0,
            stats: RingStats::default(),
            errors: ErrorLog::default(),
        };
        let mut last = 0;
        for (first, downsampled, path) in list_segments(&dir)? {
            let s = scan(path, first, downsampled, last, cursor)?;
            last = last.max(s.segment.last);
            ring.recover(s)?;
        }
        ring.next_id = last.max(cursor) + 1;
        let records = ring.unsent();
        if records > 0 {
            tracing::info!(dir = %dir.display(), records, "buffer: messages from before the restart will be sent");
        }
        Ok(ring)
    }

    /// Takes one scanned segment into the index: its torn tail cut off, the file removed
    /// if nothing in it is left to send.
    fn recover(&mut self, s: Scan) -> Result<(), Error> {
        let path = &s.segment.path;
        if s.good < s.len {
            tracing::warn!(path = %path.display(), good = s.good, len = s.len, "buffer: torn or corrupt tail cut off (a crash mid-write)");
            let f = OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(io(path))?;
            f.set_len(s.good).map_err(io(path))?;
        }
        if s.segment.records == 0 || s.segment.last <= self.cursor {
            self.delete(path, s.good);
            return Ok(());
        }
        if self.segments.is_empty() {
            self.front = s.unsent;
        }
        self.now_ms = s.last_at.or(self.now_ms);
        self.segments.push_back(s.segment);
        Ok(())
    }

    /// Keeps one message. Never fails: what cannot be written is counted and logged.
    pub fn push(&mut self, topic: &str, payload: &[u8], at_ms: i64) {
        self.now_ms = Some(at_ms);
        let cursor = self.cursor;
        self.expire();
        let entry = Entry {
            id: self.next_id,
            topic: topic.to_owned(),
            payload: payload.to_vec(),
            at_ms,
        };
        match encode(&entry) {
            Ok(frame) => self.store(&entry, &frame),
            Err(e) => {
                let e = io(&self.settings.dir)(std::io::Error::other(e));
                self.io_error(&e, "buffer: cannot encode a message; it is lost");
            }
        }
        // Dropped segments are deleted, so they cannot come back without it; the cursor
        // is written for them only when no segment is left to carry the ids on.
        if self.cursor != cursor && self.segments.is_empty() {
            self.save_cursor();
        }
    }

    fn store(&mut self, entry: &Entry, frame: &[u8]) {
        let size = frame.len() as u64;
        if size > self.settings.max_bytes.min(self.settings.segment_bytes) {
            tracing::warn!(
                topic = entry.topic,
                size,
                "buffer: message larger than a segment, dropped"
            );
            self.count_dropped(1);
        } else if !self.make_room(size) {
            self.count_dropped(1);
        } else {
            self.next_id += 1;
            match self.append(entry, frame) {
                Ok(()) => self.stats.written += 1,
                Err(e) => self.io_error(&e, "buffer: write failed; the message is lost"),
            }
        }
    }

    fn append(&mut self, entry: &Entry, frame: &[u8]) -> Result<(), Error> {
        let size = frame.len() as u64;
        let roll = match (&self.writer, self.segments.back()) {
            (Some(_), Some(s)) => s.bytes + size > self.settings.segment_bytes,
            _ => true,
        };
        if roll {
            self.roll(entry.id)?;
        }
        let (Some(f), Some(seg)) = (self.writer.as_mut(), self.segments.back_mut()) else {
            return Ok(());
        };
        if let Err(e) = f.write_all(frame) {
            // Cut off what part reached the file, so the segment stays whole frames; if
            // that fails too, the torn frame is left beyond `bytes` (readers stop there,
            // recovery cuts it) and nothing more is appended to this file.
            if f.set_len(seg.bytes).is_err() {
                self.writer = None;
            }
            return Err(io(&seg.path)(e));
        }
        seg.took(entry, size);
        Ok(())
    }

    /// Closes the segment being written (synced: a crash loses at most the newest one's
    /// tail) and starts one named `first`.
    fn roll(&mut self, first: u64) -> Result<(), Error> {
        self.seal();
        let path = self.settings.dir.join(segment_name(first, false));
        // Append mode: after a failed write is cut off, the next frame goes where the
        // file now ends, not after a hole. Emptied in case a file of that name survived
        // a failed delete.
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|f| f.set_len(0).map(|()| f))
            .map_err(io(&path))?;
        self.writer = Some(f);
        self.segments.push_back(Segment::new(first, path, false));
        Ok(())
    }

    fn seal(&mut self) {
        if let Some(f) = self.writer.take()
            && let Err(e) = f.sync_data()
        {
            let path = self
                .segments
                .back()
                .map(|s| s.path.clone())
                .unwrap_or_default();
            self.io_error(&io(&path)(e), "buffer: could not sync a segment");
        }
    }

    /// Makes room for `need` more bytes: downsample, then drop the oldest. False when
    /// even an empty index leaves no room (segment files that could not be deleted).
    fn make_room(&mut self, need: u64) -> bool {
        while self.disk_bytes() + need > self.settings.max_bytes {
            if let Some(i) = self.downsample_candidate() {
                self.downsample_at(i);
            } else if self.segments.is_empty() {
                return false;
            } else {
                self.drop_front();
            }
        }
        true
    }

    /// The oldest segment not downsampled yet, leaving the one being written alone unless
    /// it is the only one (else each push would seal and rewrite a one-record segment).
    fn downsample_candidate(&self) -> Option<usize> {
        let n = self.segments.len();
        let usable = if self.writer.is_some() && n > 1 {
            n - 1
        } else {
            n
        };
        self.segments
            .iter()
            .take(usable)
            .position(|s| !s.downsampled)
    }

    /// Rewrites segment `i` with per-minute aggregates. It is marked downsampled whatever
    /// happens, so that [`Ring::make_room`] always moves on.
    fn downsample_at(&mut self, i: usize) {
        if i + 1 == self.segments.len() {
            self.seal();
        }
        let (at, skipped) = self.start_of(i);
        let seg = &mut self.segments[i];
        seg.downsampled = true;
        let unsent = seg.records.saturating_sub(skipped);
        let records = match read_entries(&seg.path, at, seg.bytes, unsent) {
            Ok(r) => r,
            Err(e) => return self.lose(i, e),
        };
        let before = records.len() as u64;
        let merged = downsample(records);
        if merged.is_empty() {
            self.remove_at(i);
            return;
        }
        match self.rewrite(i, &merged) {
            Ok(()) => self.stats.downsampled += before - merged.len() as u64,
            Err(e) => self.io_error(
                &e,
                "buffer: could not downsample a segment; it is kept whole",
            ),
        }
    }

    /// Replaces segment `i` by `records`: a new file, synced, renamed into place, then the
    /// old one deleted, so that a crash leaves one whole copy or the other.
    fn rewrite(&mut self, i: usize, records: &[Entry]) -> Result<(), Error> {
        let first = self.segments[i].first;
        let tmp = self.settings.dir.join(format!("{first:020}.min.tmp"));
        let path = self.settings.dir.join(segment_name(first, true));
        let mut fresh = Segment::new(first, path.clone(), true);
        let written = (|| {
            let mut w = BufWriter::new(File::create(&tmp)?);
            for e in records {
                let frame = encode(e).map_err(std::io::Error::other)?;
                w.write_all(&frame)?;
                fresh.took(e, frame.len() as u64);
            }
            w.into_inner().map_err(|e| e.into_error())?.sync_data()?;
            std::fs::rename(&tmp, &path)
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(io(&tmp)(e));
        }
        let old = std::mem::replace(&mut self.segments[i], fresh);
        self.segments[i].last = old.last;
        if i == 0 {
            self.front = Position::default();
        }
        if old.path != path {
            self.delete(&old.path, old.bytes);
        }
        Ok(())
    }

    /// Where the unsent records of segment `i` start: (offset, records before it).
    fn start_of(&self, i: usize) -> (u64, u64) {
        if i == 0 {
            (self.front.offset, self.front.skipped)
        } else {
            (0, 0)
        }
    }

    /// Drops whole segments whose newest record is older than `max_age`.
    fn expire(&mut self) {
        let cutoff = self.cutoff();
        while self.segments.front().is_some_and(|s| s.newest_at < cutoff) {
            self.drop_front();
        }
    }

    fn cutoff(&self) -> i64 {
        let age = i64::try_from(self.settings.max_age.as_millis()).unwrap_or(i64::MAX);
        self.now_ms.map_or(i64::MIN, |now| now.saturating_sub(age))
    }

    /// Gives up on the oldest segment: its unsent records are dropped, and the cursor
    /// passes it so that its ids are never used again.
    fn drop_front(&mut self) {
        let Some(seg) = self.segments.front() else {
            return;
        };
        let lost = seg.records.saturating_sub(self.front.skipped);
        self.cursor = self.cursor.max(seg.last);
        self.remove_at(0);
        self.count_dropped(lost);
    }

    /// A segment that cannot be read as the index says (damaged, or deleted under us):
    /// it is given up on, so that sending moves on.
    fn lose(&mut self, i: usize, e: std::io::Error) {
        let lost = self.segments[i].records.saturating_sub(self.start_of(i).1);
        let path = self.segments[i].path.clone();
        self.io_error(
            &io(&path)(e),
            "buffer: a segment cannot be read; its messages are lost",
        );
        self.remove_at(i);
        self.count_dropped(lost);
    }

    fn remove_at(&mut self, i: usize) {
        if i + 1 == self.segments.len() {
            self.writer = None;
        }
        if i == 0 {
            self.front = Position::default();
        }
        if let Some(seg) = self.segments.remove(i) {
            self.delete(&seg.path, seg.bytes);
        }
    }

    /// Deletes a segment file. One that cannot be deleted is emptied instead; one that
    /// cannot be either still counts against the bound.
    fn delete(&mut self, path: &Path, bytes: u64) {
        let Err(e) = std::fs::remove_file(path) else {
            return;
        };
        if e.kind() == std::io::ErrorKind::NotFound {
            return;
        }
        let emptied = OpenOptions::new()
            .write(true)
            .open(path)
            .and_then(|f| f.set_len(0));
        if emptied.is_err() {
            self.leftover += bytes;
        }
        self.io_error(&io(path)(e), "buffer: could not delete a segment");
    }

    /// Up to `max` unsent records, oldest first; they stay until [`Ring::ack`].
    pub fn peek(&mut self, max: usize) -> Vec<Entry> {
        let cursor = self.cursor;
        self.expire();
        self.advance();
        if self.cursor != cursor {
            self.save_cursor();
        }
        let mut out = Vec::new();
        let mut i = 0;
        while out.len() < max && i < self.segments.len() {
            let (at, skipped) = self.start_of(i);
            let seg = &self.segments[i];
            let want = seg
                .records
                .saturating_sub(skipped)
                .min((max - out.len()) as u64);
            match read_entries(&seg.path, at, seg.bytes, want) {
                Ok(mut read) => {
                    out.append(&mut read);
                    i += 1;
                }
                Err(e) => self.lose(i, e),
            }
        }
        out
    }

    /// Everything with an id at or below `through_id` has been sent.
    pub fn ack(&mut self, through_id: u64) {
        let through = through_id.min(self.next_id - 1);
        if through <= self.cursor {
            return;
        }
        self.cursor = through;
        self.advance();
        self.save_cursor();
    }

    /// Moves the first segment's position past records sent and records too old, and
    /// deletes segments with nothing left to send.
    fn advance(&mut self) {
        let cutoff = self.cutoff();
        while let Some(seg) = self.segments.front() {
            if seg.last <= self.cursor || self.front.skipped >= seg.records {
                self.stats.sent += seg.records.saturating_sub(self.front.skipped);
                self.remove_at(0);
                continue;
            }
            if seg.first > self.cursor && seg.oldest_at >= cutoff {
                return;
            }
            match self.skip_front(cutoff) {
                Ok(true) => {}
                Ok(false) => return,
                Err(e) => self.lose(0, e),
            }
        }
    }

    /// Reads the first segment from its position while records are sent or too old; true
    /// when it ran out of records.
    fn skip_front(&mut self, cutoff: i64) -> std::io::Result<bool> {
        let Some(seg) = self.segments.front() else {
            return Ok(true);
        };
        let seg_records = seg.records;
        let mut frames = Frames::open(&seg.path, self.front.offset, seg.bytes)?;
        while let Some((e, n)) = frames.next()? {
            if e.id <= self.cursor {
                self.stats.sent += 1;
            } else if e.at_ms < cutoff {
                // A prefix of what is unsent: the cursor may pass it.
                self.cursor = e.id;
                self.count_dropped(1);
            } else {
                return Ok(false);
            }
            self.front.offset += n;
            self.front.skipped += 1;
        }
        if self.front.skipped < seg_records {
            return Err(invalid("fewer records than the index says"));
        }
        Ok(true)
    }

    fn save_cursor(&mut self) {
        let tmp = self.settings.dir.join(format!("{CURSOR}.tmp"));
        let done = (|| {
            let mut f = File::create(&tmp)?;
            f.write_all(&self.cursor.to_le_bytes())?;
            f.sync_data()?;
            std::fs::rename(&tmp, self.settings.dir.join(CURSOR))
        })();
        if let Err(e) = done {
            let e = io(&tmp)(e);
            self.io_error(
                &e,
                "buffer: could not record what was sent; it will be sent again after a restart",
            );
        }
    }

    fn count_dropped(&mut self, n: u64) {
        let before = self.stats.dropped;
        self.stats.dropped += n;
        // Logged when the count reaches a new power of two: a ring that stays full says
        // so a few times, not once per message.
        if n > 0 && (before == 0 || before.ilog2() != self.stats.dropped.ilog2()) {
            tracing::warn!(
                dropped = self.stats.dropped,
                max_bytes = self.settings.max_bytes,
                max_age_s = self.settings.max_age.as_secs(),
                "buffer: dropping the oldest messages (full, or older than max_age)"
            );
        }
    }

    /// Counts a failed disk operation and logs it, at most once a minute ([`ErrorLog`]).
    fn io_error(&mut self, e: &Error, what: &'static str) {
        self.stats.write_errors += 1;
        self.errors.record(e, what, self.stats.write_errors);
    }

    fn disk_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.bytes).sum::<u64>() + self.leftover
    }

    fn unsent(&self) -> u64 {
        let records: u64 = self.segments.iter().map(|s| s.records).sum();
        records.saturating_sub(self.front.skipped)
    }

    pub fn is_empty(&self) -> bool {
        self.unsent() == 0
    }

    /// The id of the newest record pushed (0: none yet): a sender that has seen this one
    /// acknowledged has sent everything, before telling the ring.
    pub fn newest_id(&self) -> u64 {
        self.next_id - 1
    }

    pub fn stats(&self) -> RingStats {
        RingStats {
            records: self.unsent(),
            bytes: self.disk_bytes(),
            ..self.stats
        }
    }
}

/// Per topic, runs of records within one UTC minute become one record ([`merge_minute`])
/// at the place and id of the run's first. An anomalous record is kept verbatim and ends
/// its topic's run, so that each topic's records stay in their order.
fn downsample(records: Vec<Entry>) -> Vec<Entry> {
    let mut runs: Vec<(Entry, Vec<Vec<u8>>)> = Vec::new();
    let mut open: HashMap<String, (i64, usize)> = HashMap::new();
    for e in records {
        if is_anomalous(&e.payload) {
            open.remove(&e.topic);
            runs.push((e, Vec::new()));
            continue;
        }
        let minute = e.at_ms.div_euclid(MINUTE_MS);
        match open.get(&e.topic) {
            Some(&(m, run)) if m == minute => runs[run].1.push(e.payload),
            _ => {
                open.insert(e.topic.clone(), (minute, runs.len()));
                runs.push((e, Vec::new()));
            }
        }
    }
    runs.into_iter()
        .map(|(head, rest)| {
            if rest.is_empty() {
                return head;
            }
            let mut payloads: Vec<&[u8]> = vec![&head.payload];
            payloads.extend(rest.iter().map(Vec::as_slice));
            let payload = merge_minute(&payloads);
            Entry { payload, ..head }
        })
        .collect()
}

/// Anomalies are the point of keeping scores: those are never merged.
fn is_anomalous(payload: &[u8]) -> bool {
    matches!(
        serde_json::from_slice::<Value>(payload),
        Ok(Value::Object(m)) if m.get("anomalous") == Some(&Value::Bool(true))
    )
}

/// One minute of one topic's payloads as one. JSON objects merge field by field: numbers
/// become their mean (nulls among them ignored), except `score` and `level`, which take
/// their maximum so a peak survives; booleans are true if any was; `ts` keeps the first;
/// anything else (strings, arrays, nested objects, null, mixed types) keeps the last. A
/// top-level `"samples": n` says how many were merged. If any payload is not a JSON
/// object, the last is kept as it is; no payloads give an empty one.
pub fn merge_minute(payloads: &[&[u8]]) -> Vec<u8> {
    let Some(last) = payloads.last() else {
        return Vec::new();
    };
    let objects: Option<Vec<Map<String, Value>>> = payloads
        .iter()
        .map(|p| match serde_json::from_slice(p) {
            Ok(Value::Object(m)) => Some(m),
            _ => None,
        })
        .collect();
    let Some(objects) = objects else {
        return last.to_vec();
    };
    let mut merged = Map::new();
    for key in objects.iter().flat_map(|o| o.keys()) {
        if merged.contains_key(key) {
            continue;
        }
        let values: Vec<&Value> = objects.iter().filter_map(|o| o.get(key)).collect();
        merged.insert(key.clone(), merge_field(key, &values));
    }
    merged.insert("samples".into(), Value::from(payloads.len()));
    serde_json::to_vec(&Value::Object(merged)).unwrap_or_else(|_| last.to_vec())
}

/// One field of [`merge_minute`]; `values` is never empty.
fn merge_field(key: &str, values: &[&Value]) -> Value {
    let (Some(first), Some(last)) = (values.first(), values.last()) else {
        return Value::Null;
    };
    if key == "ts" {
        return (*first).clone();
    }
    let present: Vec<&Value> = values.iter().copied().filter(|v| !v.is_null()).collect();
    if !present.is_empty() && present.iter().all(|v| v.is_number()) {
        if key == "score" || key == "level" {
            return present
                .iter()
                .copied()
                .max_by(|a, b| number(a).total_cmp(&number(b)))
                .map_or(Value::Null, Value::clone);
        }
        return mean(&present).unwrap_or_else(|| (*last).clone());
    }
    if values.iter().all(|v| v.is_boolean()) {
        return Value::Bool(values.iter().any(|v| v.as_bool() == Some(true)));
    }
    (*last).clone()
}

fn number(v: &Value) -> f64 {
    v.as_f64().unwrap_or(0.0)
}

/// The mean, as an integer when all were integers and it is whole (`"models": 5` stays
/// 5, not 5.0). Summed as `x / n` so that large values cannot overflow to infinity.
fn mean(values: &[&Value]) -> Option<Value> {
    let n = values.len() as f64;
    let m: f64 = values.iter().map(|v| number(v) / n).sum();
    let integers = values.iter().all(|v| v.is_i64() || v.is_u64());
    if integers && m.fract() == 0.0 && m.abs() < 9.0e15 {
        return Some(Value::from(m as i64));
    }
    serde_json::Number::from_f64(m).map(Value::Number)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const DAY: Duration = Duration::from_secs(24 * 3600);

    fn settings(dir: &Path, max_bytes: u64, segment_bytes: u64) -> RingSettings {
        RingSettings {
            segment_bytes,
            ..RingSettings::new(dir.to_owned(), max_bytes, DAY)
        }
    }

    fn open(dir: &Path, max_bytes: u64, segment_bytes: u64) -> Ring {
        Ring::open(settings(dir, max_bytes, segment_bytes)).unwrap()
    }

    /// A score as `tick` publishes it (shared/src/payload.rs `Score`, docs/topics.md).
    fn score(ts: i64, model: &str, score: f64, anomalous: bool) -> Vec<u8> {
        let level = if anomalous { 3 } else { 0 };
        let why = if anomalous {
            r#","dimensions":[{"name":"system","share":0.993,"value":38.1,"normal":[3.59,4.44]}],"explain":"system at 38.1, normal 3.59-4.44""#
        } else {
            ""
        };
        format!(
            r#"{{"ts":{ts},"host":"edge-42","model":"{model}","score":{score:.3},"learning":false,"anomalous":{anomalous},"level":{level},"threshold":1.75,"alarm":{anomalous},"labels":{{"site":"plant-3"}}{why}}}"#
        )
        .into_bytes()
    }

    fn json(bytes: &[u8]) -> Value {
        serde_json::from_slice(bytes).unwrap()
    }

    /// The segment files in `dir` and their sizes, oldest first.
    fn segment_files(dir: &Path) -> Vec<(PathBuf, u64)> {
        let mut files: Vec<(PathBuf, u64)> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "seg"))
            .map(|p| {
                let len = std::fs::metadata(&p).unwrap().len();
                (p, len)
            })
            .collect();
        files.sort();
        files
    }

    fn drain(ring: &mut Ring) -> Vec<Entry> {
        let mut all = Vec::new();
        loop {
            let batch = ring.peek(500);
            let Some(last) = batch.last().map(|e| e.id) else {
                return all;
            };
            all.extend(batch);
            ring.ack(last);
        }
    }

    fn ids(entries: &[Entry]) -> Vec<u64> {
        entries.iter().map(|e| e.id).collect()
    }

    #[test]
    fn unsent_records_come_back_in_order_after_a_reopen_and_sent_ones_do_not() {
        let d = tempfile::tempdir().unwrap();
        let mut ring = open(d.path(), 1 << 20, 128);
        for i in 0..20 {
            ring.push(
                &format!("t/{}", i % 3),
                format!("p{i}").as_bytes(),
                i * 1000,
            );
        }
        assert!(
            segment_files(d.path()).len() > 2,
            "the records span segments"
        );
        let first = ring.peek(5);
        assert_eq!(ids(&first), [1, 2, 3, 4, 5]);
        assert_eq!(
            ids(&ring.peek(5)),
            [1, 2, 3, 4, 5],
            "peeking twice gives the same"
        );
        ring.ack(5);
        assert_eq!((ring.stats().written, ring.stats().sent), (20, 5));
        drop(ring);

        let mut ring = open(d.path(), 1 << 20, 128);
        assert_eq!(ring.stats().records, 15);
        let rest = ring.peek(100);
        assert_eq!(ids(&rest), (6..=20).collect::<Vec<_>>());
        let r = &rest[0];
        assert_eq!(
            (r.topic.as_str(), &r.payload[..], r.at_ms),
            ("t/2", &b"p5"[..], 5000)
        );
        ring.push("t/0", b"p20", 20_000);
        assert_eq!(ring.peek(100).last().map(|e| e.id), Some(21));
        ring.ack(21);
        assert!(ring.is_empty());
        assert!(
            segment_files(d.path()).is_empty(),
            "segments fully sent are deleted"
        );
        drop(ring);

        // Everything was sent and deleted: the ids still continue.
        let mut ring = open(d.path(), 1 << 20, 128);
        assert!(ring.peek(100).is_empty());
        ring.push("t/0", b"p21", 21_000);
        assert_eq!(ids(&ring.peek(100)), [22]);
    }

    #[test]
    fn a_torn_tail_is_cut_off_after_a_crash() {
        let d = tempfile::tempdir().unwrap();
        let mut ring = open(d.path(), 1 << 20, 64 << 10);
        for i in 0..5 {
            ring.push("t", format!("record {i}").as_bytes(), i * 1000);
        }
        drop(ring);
        let (seg, len) = segment_files(d.path()).pop().unwrap();
        // The last frame loses its last three bytes, as a power cut mid-write leaves it.
        let f = OpenOptions::new().write(true).open(&seg).unwrap();
        f.set_len(len - 3).unwrap();
        drop(f);

        let mut ring = open(d.path(), 1 << 20, 64 << 10);
        assert_eq!(ids(&ring.peek(100)), [1, 2, 3, 4]);
        assert!(
            std::fs::metadata(&seg).unwrap().len() < len - 3,
            "cut at the last whole frame"
        );
        ring.push("t", b"after", 5000);
        drop(ring);
        let mut ring = open(d.path(), 1 << 20, 64 << 10);
        let all = ring.peek(100);
        assert_eq!(ids(&all), [1, 2, 3, 4, 5]);
        assert_eq!(all[4].payload, b"after");
    }

    #[test]
    fn a_corrupt_frame_cuts_off_the_rest_of_its_segment() {
        let d = tempfile::tempdir().unwrap();
        let mut ring = open(d.path(), 1 << 20, 64 << 10);
        for i in 0..5 {
            ring.push("t", format!("record {i}").as_bytes(), i * 1000);
        }
        drop(ring);
        let (seg, _) = segment_files(d.path()).pop().unwrap();
        let mut bytes = std::fs::read(&seg).unwrap();
        let frame = bytes.len() / 5;
        bytes[2 * frame + 10] ^= 0x55;
        std::fs::write(&seg, &bytes).unwrap();
        let mut ring = open(d.path(), 1 << 20, 64 << 10);
        assert_eq!(ids(&ring.peek(100)), [1, 2]);
    }

    #[test]
    fn the_bound_holds_on_disk_across_100k_score_pushes_and_the_newest_are_kept() {
        let d = tempfile::tempdir().unwrap();
        let max = 256 << 10;
        let mut ring = open(d.path(), max, 64 << 10);
        let models = [
            "cpu", "memory", "disk", "load", "net", "pressure", "fds", "thermal", "io", "sim",
        ];
        let t0 = 1_795_457_375_316;
        let mut anomalies = HashMap::new();
        let mut last = Vec::new();
        for i in 0..100_000u64 {
            let ts = t0 + (i / 10) as i64 * 1000;
            let model = models[(i % 10) as usize];
            let anomalous = i % 997 == 0;
            let payload = score(ts, model, (i % 17) as f64 / 10.0, anomalous);
            ring.push(&format!("lookout/edge-42/scores/{model}"), &payload, ts);
            if anomalous {
                anomalies.insert(i + 1, payload.clone());
            }
            assert!(ring.stats().bytes <= max, "push {i}: {:?}", ring.stats());
            assert_eq!(
                ring.segments.back().map(|s| s.last),
                Some(i + 1),
                "the newest is kept"
            );
            if i % 1000 == 0 {
                let on_disk: u64 = segment_files(d.path()).iter().map(|f| f.1).sum();
                assert!(on_disk <= max, "push {i}: {on_disk} bytes on disk");
                assert_eq!(on_disk, ring.stats().bytes);
            }
            last = payload;
        }
        let s = ring.stats();
        assert!(
            s.downsampled > 0 && s.dropped > 0 && s.write_errors == 0,
            "{s:?}"
        );
        assert_eq!(s.written, 100_000);
        drop(ring);

        let mut ring = open(d.path(), max, 64 << 10);
        let all = drain(&mut ring);
        assert!(all.windows(2).all(|w| w[0].id < w[1].id), "ids increase");
        assert_eq!(
            all.last().map(|e| (e.id, &e.payload)),
            Some((100_000, &last))
        );
        let from = all[0].id;
        for (id, payload) in anomalies.iter().filter(|a| *a.0 >= from) {
            let kept = all.iter().find(|e| e.id == *id);
            assert_eq!(
                kept.map(|e| &e.payload),
                Some(payload),
                "anomaly {id} verbatim"
            );
        }
        let mut ts: HashMap<&str, i64> = HashMap::new();
        for e in &all {
            let t = json(&e.payload)["ts"].as_i64().unwrap();
            let prev = ts.insert(&e.topic, t).unwrap_or(i64::MIN);
            assert!(t > prev, "{}: {t} after {prev}", e.topic);
        }
    }

    fn entry(id: u64, topic: &str, at_s: i64, payload: Vec<u8>) -> Entry {
        Entry {
            id,
            topic: topic.into(),
            payload,
            at_ms: at_s * 1000,
        }
    }

    #[test]
    fn downsampling_merges_each_topic_per_minute_and_keeps_anomalies_verbatim_in_order() {
        let a = |id, s: i64, v, anomalous| entry(id, "a", s, score(s * 1000, "a", v, anomalous));
        let b = |id, s: i64, v| entry(id, "b", s, score(s * 1000, "b", v, false));
        let spike = a(4, 30, 9.7, true);
        let merged = downsample(vec![
            a(1, 0, 1.0, false),
            b(2, 5, 0.2),
            a(3, 10, 3.0, false),
            spike.clone(),
            b(5, 15, 0.4),
            a(6, 40, 0.5, false),
            a(7, 50, 0.7, false),
            a(8, 60, 0.1, false),
        ]);
        let got: Vec<(u64, &str, Option<u64>)> = merged
            .iter()
            .map(|e| (e.id, e.topic.as_str(), json(&e.payload)["samples"].as_u64()))
            .collect();
        // a's run before the anomaly, b's minute, the anomaly, a's run after it, a's next
        // minute alone (not merged, so no `samples`).
        assert_eq!(
            got,
            [
                (1, "a", Some(2)),
                (2, "b", Some(2)),
                (4, "a", None),
                (6, "a", Some(2)),
                (8, "a", None)
            ]
        );
        assert_eq!(merged[2], spike, "the anomaly is kept verbatim");
        let first = json(&merged[0].payload);
        assert_eq!(
            (first["score"].as_f64(), first["ts"].as_i64()),
            (Some(3.0), Some(0))
        );
        assert_eq!(
            merged[0].at_ms, 0,
            "a merged record keeps its first member's time"
        );
        let after = json(&merged[3].payload);
        assert_eq!(
            (after["score"].as_f64(), after["ts"].as_i64()),
            (Some(0.7), Some(40_000))
        );
    }

    #[test]
    fn a_full_ring_downsamples_its_oldest_segments_before_dropping_anything() {
        let d = tempfile::tempdir().unwrap();
        let max = 64 << 10;
        let mut ring = open(d.path(), max, 8 << 10);
        let mut pushed = 0;
        while ring.stats().downsampled < 100 {
            let s = pushed / 4;
            let model = ["cpu", "memory", "disk", "load"][(pushed % 4) as usize];
            ring.push(model, &score(s * 1000, model, 0.5, false), s * 1000);
            pushed += 1;
            assert!(ring.stats().bytes <= max);
        }
        let s = ring.stats();
        assert_eq!(s.dropped, 0, "{s:?}");
        assert_eq!(s.records + s.downsampled, pushed as u64, "{s:?}");
        assert!(
            segment_files(d.path())
                .iter()
                .any(|f| f.0.to_string_lossy().ends_with(".min.seg"))
        );
        drop(ring);

        let mut ring = open(d.path(), max, 8 << 10);
        assert!(
            ring.segments[0].downsampled,
            "the flag is read back from the name"
        );
        let all = drain(&mut ring);
        assert_eq!(all.len() as u64, s.records);
        assert!(all.windows(2).all(|w| w[0].id < w[1].id));
        let first = json(&all[0].payload);
        assert!(first["samples"].as_u64() > Some(1), "{first}");
        assert_eq!(first["ts"].as_i64(), Some(0));
        // Each merged record stands for its samples: every record pushed is accounted for.
        let samples: u64 = all
            .iter()
            .map(|e| json(&e.payload)["samples"].as_u64().unwrap_or(1))
            .sum();
        assert_eq!(samples, pushed as u64);
    }

    #[test]
    fn an_interrupted_downsample_keeps_the_rewritten_copy() {
        let d = tempfile::tempdir().unwrap();
        let mut ring = open(d.path(), 1 << 20, 64 << 10);
        for s in 0..30 {
            ring.push("t", &score(s * 1000, "cpu", 0.1, false), s * 1000);
        }
        let (raw, _) = segment_files(d.path()).pop().unwrap();
        let raw_bytes = std::fs::read(&raw).unwrap();
        ring.downsample_at(0);
        drop(ring);
        // The crash came after the rename and before the old copy was deleted, and a
        // later rewrite's temporary file was left half written.
        std::fs::write(&raw, raw_bytes).unwrap();
        std::fs::write(d.path().join("00000000000000000031.min.tmp"), b"half").unwrap();

        let mut ring = open(d.path(), 1 << 20, 64 << 10);
        let names: Vec<String> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["00000000000000000001.min.seg"]);
        let all = ring.peek(100);
        assert_eq!(ids(&all), [1]);
        assert_eq!(json(&all[0].payload)["samples"].as_u64(), Some(30));
    }

    #[test]
    fn records_older_than_max_age_are_dropped() {
        let d = tempfile::tempdir().unwrap();
        let settings = RingSettings {
            max_age: Duration::from_secs(60),
            segment_bytes: 512,
            ..RingSettings::new(d.path().to_owned(), 1 << 20, DAY)
        };
        let mut ring = Ring::open(settings.clone()).unwrap();
        for s in 0..=100 {
            ring.push("t", format!("{s}").as_bytes(), s * 1000);
        }
        let kept = ring.peek(1000);
        assert_eq!(
            kept.first().map(|e| e.at_ms),
            Some(40_000),
            "the oldest kept is 60 s old"
        );
        assert_eq!(kept.len(), 61);
        assert_eq!(ring.stats().dropped, 40);
        assert!(
            segment_files(d.path()).len() <= 4,
            "expired segments are deleted"
        );
        drop(ring);
        let mut ring = Ring::open(settings).unwrap();
        assert_eq!(
            ring.peek(1).first().map(|e| e.at_ms),
            Some(40_000),
            "and stay dropped"
        );
    }

    #[test]
    fn a_record_stamped_in_the_far_future_expires_what_came_before_it_only() {
        let d = tempfile::tempdir().unwrap();
        let settings = RingSettings {
            max_age: Duration::from_secs(60),
            ..RingSettings::new(d.path().to_owned(), 1 << 20, DAY)
        };
        let mut ring = Ring::open(settings).unwrap();
        ring.push("t", b"1", 1000);
        ring.push("t", b"bad clock", i64::MAX);
        ring.push("t", b"3", 3000);
        ring.push("t", b"way back", i64::MIN);
        ring.push("t", b"5", 5000);
        assert_eq!(ids(&ring.peek(10)), [2, 3, 4, 5]);
        assert_eq!(ring.stats().dropped, 1);
    }

    #[test]
    fn merge_minute_means_numbers_maxes_score_and_level_and_counts_samples() {
        let one = br#"{"ts":1,"host":"h","score":0.5,"level":0,"threshold":1.75,"alarm":false,"learning":true,"labels":{"a":"1"},"models":4,"rate":null}"#;
        let two = br#"{"ts":2,"host":"h2","score":2.5,"level":2,"threshold":1.25,"alarm":false,"learning":false,"labels":{"a":"2"},"models":6,"rate":0.5}"#;
        let three = br#"{"ts":3,"host":"h3","score":null,"level":1,"threshold":1.5,"alarm":true,"learning":false,"labels":{"a":"3"},"models":5,"rate":0.25}"#;
        let merged = json(&merge_minute(&[one, two, three]));
        let want = serde_json::json!({
            "ts": 1, "host": "h3", "score": 2.5, "level": 2, "threshold": 1.5, "alarm": true,
            "learning": true, "labels": {"a": "3"}, "models": 5, "rate": 0.375, "samples": 3
        });
        assert_eq!(merged, want);
        assert_eq!(
            merge_minute(&[br#"{"n":1}"#, br#"{"n":2}"#]),
            br#"{"n":1.5,"samples":2}"#
        );
        assert_eq!(
            json(&merge_minute(&[br#"{"big":1e308}"#, br#"{"big":1e308}"#]))["big"].as_f64(),
            Some(1e308),
            "no overflow to infinity"
        );
    }

    #[test]
    fn merge_minute_keeps_the_last_of_anything_not_a_json_object() {
        assert_eq!(merge_minute(&[]), b"");
        assert_eq!(merge_minute(&[b"42.5", b"43.5"]), b"43.5");
        assert_eq!(merge_minute(&[br#"{"a":1}"#, b"[1,2]"]), b"[1,2]");
        assert_eq!(merge_minute(&[b"[1,2]", br#"{"a":1}"#]), br#"{"a":1}"#);
        assert_eq!(merge_minute(&[b"\xff\xfe", b""]), b"");
        let deep = "[".repeat(100_000);
        assert_eq!(
            merge_minute(&[deep.as_bytes(), deep.as_bytes()]),
            deep.as_bytes()
        );
        let deep_object = format!("{}{}", r#"{"a":"#.repeat(10_000), "1");
        let last: &[u8] = br#"{"a":1}"#;
        assert_eq!(merge_minute(&[deep_object.as_bytes(), last]), last);
    }

    /// Objects with the keys `merge_minute` treats apart, and values of every kind.
    fn objectish() -> impl Strategy<Value = Vec<u8>> {
        let key = prop::sample::select(vec![
            "ts",
            "score",
            "level",
            "samples",
            "anomalous",
            "x",
            "y",
        ]);
        let value = prop_oneof![
            any::<f64>()
                .prop_filter("JSON numbers", |v| v.is_finite())
                .prop_map(|v| format!("{v:e}")),
            any::<i64>().prop_map(|v| v.to_string()),
            any::<u64>().prop_map(|v| v.to_string()),
            any::<bool>().prop_map(|v| v.to_string()),
            Just("null".to_string()),
            "\"[a-z]{0,4}\"",
            Just("[1,{\"a\":null}]".to_string()),
            Just("{\"score\":1}".to_string()),
        ];
        prop::collection::vec((key, value), 0..6).prop_map(|fields| {
            let inner: Vec<String> = fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
            format!("{{{}}}", inner.join(",")).into_bytes()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

        #[test]
        fn merge_minute_never_panics_on_arbitrary_bytes(
            payloads in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 0..6),
        ) {
            let refs: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
            let merged = merge_minute(&refs);
            if let Ok(Value::Object(m)) = serde_json::from_slice::<Value>(&merged)
                && refs.len() > 1
                && refs.iter().all(|p| matches!(serde_json::from_slice(p), Ok(Value::Object(_))))
            {
                prop_assert_eq!(m.get("samples").and_then(Value::as_u64), Some(refs.len() as u64));
            }
        }

        #[test]
        fn merge_minute_of_objects_is_an_object_counting_its_samples(
            payloads in prop::collection::vec(objectish(), 1..6),
        ) {
            let refs: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
            let merged = serde_json::from_slice::<Value>(&merge_minute(&refs));
            prop_assert!(matches!(&merged, Ok(Value::Object(_))), "{:?}", merged);
            prop_assert_eq!(merged.unwrap()["samples"].as_u64(), Some(refs.len() as u64));
        }
    }

    #[test]
    fn write_errors_are_counted_and_nothing_panics_when_the_directory_is_removed() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("ring");
        let mut ring = open(&dir, 4096, 512);
        for s in 0..10 {
            ring.push("t", &score(s * 1000, "cpu", 0.1, false), s * 1000);
        }
        std::fs::remove_dir_all(&dir).unwrap();
        for s in 10..200 {
            ring.push("t", &score(s * 1000, "cpu", 0.1, false), s * 1000);
            assert!(ring.stats().bytes <= 4096);
        }
        let peeked = ring.peek(100);
        if let Some(e) = peeked.last() {
            ring.ack(e.id);
        }
        let s = ring.stats();
        assert!(s.write_errors > 0, "{s:?}");
        assert!(s.written < 200, "{s:?}");
    }

    #[test]
    fn ids_at_the_end_of_u64_on_disk_are_damage_not_an_overflow() {
        // The fuzzer's input (`ring_segment`): a framed record whose id is u64::MAX.
        let d = tempfile::tempdir().unwrap();
        let entry = Entry {
            id: u64::MAX,
            topic: "t".into(),
            payload: b"x".to_vec(),
            at_ms: 0,
        };
        let body = postcard::to_allocvec(&entry).unwrap();
        let mut file = Vec::new();
        file.extend_from_slice(&(body.len() as u32).to_le_bytes());
        file.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        file.extend_from_slice(&body);
        std::fs::write(d.path().join("00000000000000000001.seg"), &file).unwrap();
        std::fs::write(d.path().join("18446744073709551615.seg"), &file).unwrap();
        let mut ring = open(d.path(), 1 << 20, 64 << 10);
        assert!(ring.peek(10).is_empty());
        ring.push("t", b"after", 1000);
        let got = ring.peek(10);
        assert_eq!(got.len(), 1);
        assert!(got[0].id < MAX_ID);
    }

    #[test]
    fn a_failed_append_loses_that_message_only() {
        let d = tempfile::tempdir().unwrap();
        let mut ring = open(d.path(), 1 << 20, 64 << 10);
        ring.push("t", b"1", 1000);
        ring.push("t", b"2", 2000);
        // A handle that cannot write stands in for a full disk (root ignores permissions).
        let (active, _) = segment_files(d.path()).pop().unwrap();
        ring.writer = Some(File::open(&active).unwrap());
        ring.push("t", b"lost", 3000);
        ring.push("t", b"4", 4000);
        assert_eq!(ring.stats().write_errors, 1);
        drop(ring);
        let mut ring = open(d.path(), 1 << 20, 64 << 10);
        let all = ring.peek(10);
        let payloads: Vec<&[u8]> = all.iter().map(|e| e.payload.as_slice()).collect();
        assert_eq!(payloads, [&b"1"[..], b"2", b"4"]);
        assert_eq!(ids(&all), [1, 2, 4]);
    }

    #[test]
    fn open_names_a_directory_it_cannot_use() {
        let d = tempfile::tempdir().unwrap();
        let file = d.path().join("not-a-dir");
        std::fs::write(&file, b"x").unwrap();
        let dir = file.join("ring");
        match Ring::open(RingSettings::new(dir.clone(), 1 << 20, DAY)) {
            Err(Error::Io { path, .. }) => assert_eq!(path, dir),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn segment_size_is_a_sixteenth_of_the_ring_within_64_kib_and_4_mib() {
        let size = |max| RingSettings::new(PathBuf::new(), max, DAY).segment_bytes;
        assert_eq!(size(RingSettings::DEFAULT_MAX_BYTES), 4 << 20);
        assert_eq!(size(16 << 20), 1 << 20);
        assert_eq!(size(1 << 20), 64 << 10);
        assert_eq!(size(0), 64 << 10);
    }

    #[test]
    fn a_record_larger_than_a_segment_is_dropped_and_the_rest_kept() {
        let d = tempfile::tempdir().unwrap();
        let mut ring = open(d.path(), 4096, 512);
        ring.push("t", b"small", 0);
        ring.push("t", &[b'x'; 600], 1);
        ring.push("t", b"small again", 2);
        assert_eq!(ids(&ring.peek(10)), [1, 2]);
        assert_eq!(ring.stats().dropped, 1);
    }

    #[test]
    fn a_frame_has_the_same_bytes_on_every_machine() {
        // Fixed-width header, varints and zigzag in the body, never usize: a ring written
        // on amd64 reads on armhf.
        let e = entry(1, "a", 60, b"one".to_vec());
        let frame = encode(&e).unwrap();
        let body = [1, 1, b'a', 3, b'o', b'n', b'e', 0xc0, 0xa9, 0x07];
        assert_eq!(&frame[..4], &10u32.to_le_bytes());
        assert_eq!(&frame[4..8], &crc32fast::hash(&body).to_le_bytes());
        assert_eq!(&frame[8..], &body);
    }
}
