//! The durable outbox: alarm states on disk until the broker has acknowledged them.
//!
//! An alarm raised while the broker is unreachable, or just before the agent is killed,
//! must still arrive. Every alarm state is appended here before it is sent and removed
//! only when its PUBACK comes back; after a restart the records not yet acknowledged are
//! read back and sent again, in order.
//!
//! On disk: segment files named by their first sequence number (`<seq>.seg`), each a run
//! of frames `[len: u32 LE][crc32: u32 LE][postcard(Record)]`, and `acked`, the highest
//! sequence number below which everything was acknowledged (8 bytes LE, replaced
//! atomically). A crash can leave a torn frame at the end of the newest segment: it fails
//! its length or checksum, is logged and cut off, and nothing after it is trusted.
//!
//! Fsync policy: with `fsync = true` (the default) every append is `fdatasync`ed before
//! the record is sent, so an alarm that left the agent is on disk; alarms are rare, so
//! this costs nothing measurable. The `acked` file is synced on every update.
//!
//! Bounds: the segment files never exceed `max_bytes` together. When a new record would
//! pass the limit, the oldest unacknowledged records are dropped (counted and logged):
//! the limit is the one thing allowed to lose an alarm. A failed write (disk full) keeps
//! the record in memory, where it is still delivered unless the agent restarts, and is
//! counted; the agent never stops for it. What part of the frame reached the file is cut
//! off again at once (a full disk takes the first bytes of a write), so a segment written
//! through a disk-full spell holds whole frames only and a restart finds nothing torn.
//! Write errors are logged at most once a minute ([`super::error_log`]), with the
//! number unlogged. The in-memory copy of unacknowledged records is bounded by the same
//! `max_bytes`.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error_log::ErrorLog;
use crate::Error;

/// Bytes a frame adds to its record: length and checksum.
const FRAME: u64 = 8;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub seq: u64,
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OutboxStats {
    /// Records not yet acknowledged.
    pub pending: usize,
    /// Bytes of segment files on disk.
    pub bytes: u64,
    /// Records dropped because the outbox was full.
    pub dropped: u64,
    /// Appends that failed (disk full, I/O error); the record stayed in memory.
    pub write_errors: u64,
    /// Records found unacknowledged on disk when the outbox was opened.
    pub recovered: usize,
}

#[derive(Debug)]
struct Segment {
    last: u64,
    path: PathBuf,
    bytes: u64,
}

#[derive(Debug)]
pub struct Outbox {
    dir: Option<PathBuf>,
    max_bytes: u64,
    segment_bytes: u64,
    fsync: bool,
    segments: VecDeque<Segment>,
    writer: Option<File>,
    pending: VecDeque<Record>,
    pending_bytes: u64,
    next_seq: u64,
    /// Everything at or below this was acknowledged (0: nothing yet; sequences start at 1).
    acked: u64,
    stats: OutboxStats,
    errors: ErrorLog,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_owned(),
        source,
    }
}

impl Outbox {
    /// An outbox kept in memory only: bounded the same way, but lost with the process.
    pub fn in_memory(max_bytes: u64) -> Self {
        Self {
            dir: None,
            max_bytes,
            segment_bytes: u64::MAX,
            fsync: false,
            segments: VecDeque::new(),
            writer: None,
            pending: VecDeque::new(),
            pending_bytes: 0,
            next_seq: 1,
            acked: 0,
            stats: OutboxStats::default(),
            errors: ErrorLog::default(),
        }
    }

    /// Opens (or creates) the outbox in `dir` and reads back what was not acknowledged.
    pub fn open(
        dir: &Path,
        max_bytes: u64,
        segment_bytes: u64,
        fsync: bool,
    ) -> Result<Self, Error> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let mut ob = Self {
            dir: Some(dir.to_owned()),
            max_bytes,
            segment_bytes: segment_bytes.max(1024),
            fsync,
            ..Self::in_memory(max_bytes)
        };
        let acked_path = dir.join("acked");
        ob.acked = match std::fs::read(&acked_path) {
            Ok(b)
                if b.len() == 8
                    && valid_seq(u64::from_le_bytes(b.clone().try_into().unwrap_or([0; 8]))) =>
            {
                u64::from_le_bytes(b.try_into().unwrap_or([0; 8]))
            }
            Ok(_) => {
                tracing::warn!(path = %acked_path.display(), "outbox: unreadable acked file, resending everything on disk");
                0
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(io(&acked_path)(e)),
        };
        let mut files: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
            .map_err(io(dir))?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let p = e.path();
                let first = p
                    .file_name()?
                    .to_str()?
                    .strip_suffix(".seg")?
                    .parse()
                    .ok()?;
                Some((first, p))
            })
            .collect();
        files.sort();
        let mut max_seq = ob.acked;
        for (first, path) in files {
            let (records, good_len, total_len) = read_segment(&path)?;
            if good_len < total_len {
                tracing::warn!(path = %path.display(), good_len, total_len, "outbox: torn or corrupt tail cut off (a crash mid-write)");
                let f = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(io(&path))?;
                f.set_len(good_len).map_err(io(&path))?;
            }
            let last = records.last().map_or(first, |r| r.seq);
            for r in records {
                max_seq = max_seq.max(r.seq);
                if r.seq > ob.acked {
                    ob.pending_bytes += record_size(&r);
                    ob.pending.push_back(r);
                }
            }
            ob.segments.push_back(Segment {
                last,
                path,
                bytes: good_len,
            });
        }
        ob.next_seq = max_seq + 1;
        ob.stats.recovered = ob.pending.len();
        ob.remove_acked_segments();
        if ob.stats.recovered > 0 {
            tracing::info!(dir = %dir.display(), records = ob.stats.recovered, "outbox: unacknowledged alarm states from before the restart will be sent");
        }
        Ok(ob)
    }

    /// Appends a record and returns its sequence number. Never fails: a full outbox drops
    /// its oldest records, a failed write keeps the record in memory; both are counted.
    pub fn push(&mut self, topic: &str, payload: &[u8], retain: bool) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        let rec = Record {
            seq,
            topic: topic.to_owned(),
            payload: payload.to_vec(),
            retain,
        };
        let size = record_size(&rec);
        if size > self.max_bytes {
            self.stats.dropped += 1;
            tracing::warn!(
                topic,
                size,
                max_bytes = self.max_bytes,
                "outbox: record larger than the whole outbox, dropped"
            );
            self.ack(seq);
            return seq;
        }
        while self.disk_bytes().max(self.pending_bytes) + size > self.max_bytes {
            let Some(old) = self.pending.front().map(|r| r.seq) else {
                break;
            };
            self.stats.dropped += 1;
            if self.stats.dropped == 1 || self.stats.dropped.is_power_of_two() {
                tracing::warn!(
                    dropped = self.stats.dropped,
                    max_bytes = self.max_bytes,
                    "outbox full: dropping the oldest unsent alarm state"
                );
            }
            self.ack(old);
            // A record dropped from the current segment still occupies it: start a new one
            // so the old can be deleted once all of it is gone.
            if self.disk_bytes() + size > self.max_bytes {
                self.writer = None;
            }
        }
        if let Err(e) = self.append(&rec) {
            self.write_error(&e, "outbox: write failed; the alarm state is kept in memory only (lost if the agent stops before it is sent)");
        }
        self.pending_bytes += size;
        self.pending.push_back(rec);
        seq
    }

    fn disk_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.bytes).sum()
    }

    fn append(&mut self, rec: &Record) -> Result<(), Error> {
        let Some(dir) = self.dir.clone() else {
            return Ok(());
        };
        let body = postcard::to_allocvec(rec).map_err(|e| Error::Io {
            path: dir.clone(),
            source: std::io::Error::other(e),
        })?;
        let need_new = match (self.segments.back(), &self.writer) {
            (Some(s), Some(_)) => s.bytes + FRAME + body.len() as u64 > self.segment_bytes,
            _ => true,
        };
        if need_new {
            let path = dir.join(format!("{:020}.seg", rec.seq));
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(io(&path))?;
            self.writer = Some(f);
            self.segments.push_back(Segment {
                last: rec.seq,
                path,
                bytes: 0,
            });
        }
        let (Some(f), Some(seg)) = (self.writer.as_mut(), self.segments.back_mut()) else {
            return Ok(());
        };
        let mut frame = Vec::with_capacity(body.len() + FRAME as usize);
        frame.extend_from_slice(&(body.len() as u32).to_le_bytes());
        frame.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        frame.extend_from_slice(&body);
        let written = f
            .write_all(&frame)
            .and_then(|()| if self.fsync { f.sync_data() } else { Ok(()) });
        if let Err(e) = written {
            // Cut off whatever part reached the file (truncating frees space, so it works
            // on a full disk), so that the segment stays whole frames. Should that fail
            // too, the torn frame is left to recovery and the next record starts a fresh
            // segment.
            if f.set_len(seg.bytes).is_err() {
                self.writer = None;
            }
            return Err(io(&seg.path)(e));
        }
        seg.bytes += frame.len() as u64;
        seg.last = rec.seq;
        Ok(())
    }

    /// Records not yet acknowledged, oldest first.
    pub fn unacked(&self) -> impl Iterator<Item = &Record> {
        self.pending.iter()
    }

    /// The first unacknowledged record after `seq`.
    /// Pending records are in sequence order, so this is a binary search: after an outage
    /// the pump walks tens of thousands of them, one call each.
    pub fn next_after(&self, seq: u64) -> Option<&Record> {
        self.pending
            .get(self.pending.partition_point(|r| r.seq <= seq))
    }

    /// The broker has acknowledged `seq` (or the outbox dropped it): forget it. The
    /// watermark on disk is the oldest record still pending minus one, so a record acked
    /// out of order above an unacked one is sent again after a restart: at least once.
    pub fn ack(&mut self, seq: u64) {
        if let Some(i) = self.pending.iter().position(|r| r.seq == seq)
            && let Some(r) = self.pending.remove(i)
        {
            self.pending_bytes -= record_size(&r);
        }
        let watermark = self
            .pending
            .front()
            .map_or(self.next_seq - 1, |r| r.seq - 1);
        if watermark > self.acked {
            self.acked = watermark;
            self.write_acked();
            self.remove_acked_segments();
        }
    }

    fn write_acked(&mut self) {
        let Some(dir) = &self.dir else { return };
        let tmp = dir.join("acked.tmp");
        let done = (|| {
            let mut f = File::create(&tmp)?;
            f.write_all(&self.acked.to_le_bytes())?;
            f.sync_data()?;
            std::fs::rename(&tmp, dir.join("acked"))
        })();
        if let Err(e) = done {
            let e = io(&tmp)(e);
            self.write_error(
                &e,
                "outbox: could not record acknowledgements; they will be re-sent after a restart",
            );
        }
    }

    /// Counts a failed write and logs it, at most once a minute ([`ErrorLog`]).
    fn write_error(&mut self, e: &Error, what: &'static str) {
        self.stats.write_errors += 1;
        self.errors.record(e, what, self.stats.write_errors);
    }

    fn remove_acked_segments(&mut self) {
        while self.segments.len() > 1 || (self.writer.is_none() && !self.segments.is_empty()) {
            let Some(s) = self.segments.front() else {
                break;
            };
            if s.last > self.acked {
                break;
            }
            if let Err(e) = std::fs::remove_file(&s.path)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(path = %s.path.display(), error = %e, "outbox: could not remove an acknowledged segment");
                break;
            }
            self.segments.pop_front();
        }
    }

    pub fn stats(&self) -> OutboxStats {
        OutboxStats {
            pending: self.pending.len(),
            bytes: self.disk_bytes(),
            ..self.stats
        }
    }
}

fn record_size(r: &Record) -> u64 {
    FRAME + 24 + r.topic.len() as u64 + r.payload.len() as u64
}

/// Reads a segment's valid frames: (records, bytes of valid frames, file length).
fn read_segment(path: &Path) -> Result<(Vec<Record>, u64, u64), Error> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(io(path))?;
    let (records, good) = parse_segment(&bytes);
    Ok((records, good, bytes.len() as u64))
}

/// Sequence numbers start at 1 and grow by one per record, so no outbox gets near 2^62;
/// a number outside is damage, and taking it would overflow the next one (found with
/// `fuzz/`, target `outbox_segment`).
fn valid_seq(seq: u64) -> bool {
    (1..=1 << 62).contains(&seq)
}

/// A segment's valid frames and the bytes they take; reading stops at the first torn or
/// corrupt frame. Public so that `fuzz/` can feed it arbitrary bytes without a file.
pub fn parse_segment(bytes: &[u8]) -> (Vec<Record>, u64) {
    let mut records = Vec::new();
    let mut at = 0usize;
    while at + FRAME as usize <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap_or_default()) as usize;
        let crc = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap_or_default());
        let start = at + FRAME as usize;
        // checked: on a 32-bit device `start + len` overflows usize for a damaged length
        // near u32::MAX (a debug build panics, a release build wraps).
        let Some(body) = start.checked_add(len).and_then(|end| bytes.get(start..end)) else {
            break;
        };
        if crc32fast::hash(body) != crc {
            break;
        }
        let Ok(rec) = postcard::from_bytes::<Record>(body) else {
            break;
        };
        if !valid_seq(rec.seq) {
            break;
        }
        records.push(rec);
        at = start + len;
    }
    (records, at as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &Path, max: u64) -> Outbox {
        Outbox::open(dir, max, 4096, true).unwrap()
    }

    fn seqs(o: &Outbox) -> Vec<u64> {
        o.unacked().map(|r| r.seq).collect()
    }

    #[test]
    fn sequence_numbers_at_the_end_of_u64_on_disk_are_damage_not_an_overflow() {
        let d = tempfile::tempdir().unwrap();
        let mut seg = Vec::new();
        let mut first_frame = 0;
        for seq in [1, u64::MAX] {
            first_frame = seg.len();
            let rec = Record {
                seq,
                topic: "t".into(),
                payload: b"firing".to_vec(),
                retain: true,
            };
            let body = postcard::to_allocvec(&rec).unwrap();
            seg.extend_from_slice(&(body.len() as u32).to_le_bytes());
            seg.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
            seg.extend_from_slice(&body);
        }
        std::fs::write(d.path().join("1.seg"), &seg).unwrap();
        let (records, good) = parse_segment(&seg);
        assert_eq!((records.len(), good as usize), (1, first_frame));

        let mut o = open(d.path(), 1 << 20);
        assert_eq!(seqs(&o), vec![1], "the damaged record is cut off");
        assert_eq!(o.push("t", b"2", true), 2);
        drop(o);

        // An acked file at the end of u64: unreadable, everything on disk is resent.
        std::fs::write(d.path().join("acked"), u64::MAX.to_le_bytes()).unwrap();
        let mut o = open(d.path(), 1 << 20);
        assert_eq!(seqs(&o), vec![1, 2]);
        assert_eq!(o.push("t", b"3", true), 3);
    }

    #[test]
    fn unacknowledged_records_survive_a_restart_in_order() {
        let d = tempfile::tempdir().unwrap();
        let mut o = open(d.path(), 1 << 20);
        for i in 0..5 {
            o.push(&format!("t/{i}"), b"firing", true);
        }
        o.ack(1);
        o.ack(2);
        drop(o);
        let o = open(d.path(), 1 << 20);
        assert_eq!(seqs(&o), vec![3, 4, 5]);
        assert_eq!(o.stats().recovered, 3);
        let after = |s| o.next_after(s).map(|r| r.seq);
        assert_eq!(
            (after(0), after(3), after(4), after(5)),
            (Some(3), Some(4), Some(5), None)
        );
        let r = o.unacked().next().unwrap();
        assert_eq!(
            (r.topic.as_str(), &r.payload[..], r.retain),
            ("t/2", &b"firing"[..], true)
        );
    }

    #[test]
    fn sequence_numbers_continue_after_a_restart() {
        let d = tempfile::tempdir().unwrap();
        let mut o = open(d.path(), 1 << 20);
        o.push("a", b"1", true);
        o.push("a", b"2", true);
        o.ack(1);
        o.ack(2);
        drop(o);
        let mut o = open(d.path(), 1 << 20);
        assert_eq!(o.push("a", b"3", true), 3);
    }

    #[test]
    fn out_of_order_acks_are_kept_on_disk_until_the_gap_closes() {
        let d = tempfile::tempdir().unwrap();
        let mut o = open(d.path(), 1 << 20);
        for _ in 0..3 {
            o.push("a", b"x", true);
        }
        o.ack(2);
        assert_eq!(seqs(&o), vec![1, 3]);
        drop(o);
        // The watermark could not pass 1: after a restart 2 is sent again (at least once).
        let mut o = open(d.path(), 1 << 20);
        assert_eq!(seqs(&o), vec![1, 2, 3]);
        o.ack(1);
        o.ack(2);
        drop(o);
        assert_eq!(seqs(&open(d.path(), 1 << 20)), vec![3]);
    }

    #[test]
    fn a_torn_tail_is_cut_off_and_the_rest_kept() {
        let d = tempfile::tempdir().unwrap();
        let mut o = open(d.path(), 1 << 20);
        o.push("a", b"one", true);
        o.push("a", b"two", true);
        drop(o);
        let seg = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "seg"))
            .unwrap();
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(&[40, 0, 0, 0, 1, 2, 3]).unwrap();
        drop(f);
        let mut o = open(d.path(), 1 << 20);
        assert_eq!(seqs(&o), vec![1, 2]);
        assert_eq!(o.push("a", b"three", true), 3);
        drop(o);
        assert_eq!(seqs(&open(d.path(), 1 << 20)), vec![1, 2, 3]);
    }

    #[test]
    fn a_segment_has_the_same_bytes_on_32_and_64_bit_machines() {
        // Lengths and sequence numbers are fixed-width or varints, never usize-wide: an
        // outbox written by an amd64 build reads on armhf and back (a disk moved between
        // devices, or a 32-bit userland on a 64-bit kernel upgraded in place).
        let frame: &[u8] = &[
            8, 0, 0, 0, // body length, u32 LE
            0x67, 0xdc, 0x76, 0xc5, // CRC-32 of the body, u32 LE
            1, 1, b'a', 3, b'o', b'n', b'e', 1, // seq 1, topic "a", payload "one", retain
        ];
        let record = Record {
            seq: 1,
            topic: "a".into(),
            payload: b"one".to_vec(),
            retain: true,
        };
        assert_eq!(&postcard::to_allocvec(&record).unwrap()[..], &frame[8..]);
        assert_eq!(crc32fast::hash(&frame[8..]).to_le_bytes(), frame[4..8]);
        let (records, at) = parse_segment(frame);
        assert_eq!((records, at), (vec![record], frame.len() as u64));
    }

    #[test]
    fn a_frame_length_near_u32_max_is_damage_not_an_overflow_on_32_bit() {
        // A good frame, then a header whose length is u32::MAX: `start + len` does not fit
        // a 32-bit usize (armhf). Reading stops at the damaged frame and keeps the first.
        let mut segment = Vec::new();
        let body = postcard::to_allocvec(&Record {
            seq: 1,
            topic: "a".into(),
            payload: b"one".to_vec(),
            retain: true,
        })
        .unwrap();
        segment.extend_from_slice(&(body.len() as u32).to_le_bytes());
        segment.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        segment.extend_from_slice(&body);
        let good = segment.len() as u64;
        for len in [u32::MAX, u32::MAX - 7, u32::MAX - FRAME as u32] {
            let mut damaged = segment.clone();
            damaged.extend_from_slice(&len.to_le_bytes());
            damaged.extend_from_slice(&[0; 12]);
            let (records, at) = parse_segment(&damaged);
            assert_eq!((records.len(), at), (1, good), "length {len:#x}");
        }
    }

    #[test]
    fn a_full_outbox_drops_the_oldest_and_stays_within_its_limit() {
        let d = tempfile::tempdir().unwrap();
        let max = 2048;
        let mut o = Outbox::open(d.path(), max, 1024, true).unwrap();
        for i in 0..200u64 {
            o.push("lookout/h/alarms/m", format!("state {i}").as_bytes(), true);
            assert!(o.stats().bytes <= max, "{:?}", o.stats());
        }
        let s = o.stats();
        assert!(s.dropped > 0 && s.pending > 0, "{s:?}");
        assert_eq!(*seqs(&o).last().unwrap(), 200, "the newest is kept");
        let on_disk: u64 = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum();
        assert!(on_disk <= max + 8, "{on_disk} bytes on disk");
        drop(o);
        let o = open(d.path(), max);
        assert_eq!(*seqs(&o).last().unwrap(), 200);
    }

    #[test]
    fn acknowledged_segments_are_deleted() {
        let d = tempfile::tempdir().unwrap();
        let mut o = Outbox::open(d.path(), 1 << 20, 1024, false).unwrap();
        for _ in 0..100 {
            let s = o.push("lookout/h/alarms/m", &[7; 64], true);
            o.ack(s);
        }
        let segs = std::fs::read_dir(d.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "seg")
            })
            .count();
        assert!(segs <= 1, "{segs} segments left");
        assert_eq!(o.stats().pending, 0);
    }

    #[test]
    fn an_unwritable_directory_keeps_records_in_memory() {
        let d = tempfile::tempdir().unwrap();
        let mut o = open(d.path(), 1 << 20);
        o.push("a", b"1", true);
        // Remove the directory under the outbox's feet: later segment files cannot be
        // created (the stand-in for a full disk).
        o.writer = None;
        std::fs::remove_dir_all(d.path()).unwrap();
        let s = o.push("a", b"2", true);
        assert_eq!(s, 2);
        assert_eq!(seqs(&o), vec![1, 2]);
        assert!(o.stats().write_errors >= 1);
    }

    #[test]
    fn in_memory_outbox_is_bounded_too() {
        let mut o = Outbox::in_memory(1024);
        for i in 0..100 {
            o.push("t", format!("{i}").as_bytes(), true);
        }
        assert!(o.stats().dropped > 0);
        assert!(o.unacked().map(record_size).sum::<u64>() <= 1024);
    }
}
