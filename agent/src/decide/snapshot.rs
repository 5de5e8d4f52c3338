//! A model's learned state as bytes, so that a restart, an upgrade or a reboot does not
//! start it over: the scorer's model (ring, centres of every ensemble member, scales,
//! context memory) and the alarm's state (saturation rises, the episode in progress),
//! encoded with postcard.
//!
//! A snapshot is taken for one model shape: the dimensions and every setting that sizes
//! or changes what the model learned (smoothing, lags, differences, clusters, training
//! window, ensemble, context). A snapshot of another shape, another format version, or
//! bytes that do not decode is refused with the reason, and the caller lets that model
//! learn afresh. Settings that do not change the shape (thresholds, the fit schedule,
//! severity grading) come from today's config, so tuning them keeps what was learned.
//!
//! Format 4 appends each dimension's normal range after what format 3 held. A format-3
//! snapshot (an agent before the attribution of anomalies) still reads: the model keeps
//! everything it learned and fits at its next tick, which measures the ranges from the
//! restored training ring.
//!
//! Format 5 appends the restless-series memory (`alarm::rough`) and the marks of the
//! flat-line runs in progress (`alarm::flat`) after the normal ranges; formats 3 and 4
//! still read, and those start afresh.

use serde::{Deserialize, Serialize};

use crate::alarm::flat::Flat;
use crate::alarm::rough::Rough;
use crate::alarm::{Hysteresis, Judge};
use crate::scorer::Model;
use crate::scorer::profile::Profile;

use super::{Decider, Detector};

/// The snapshot layout; a change to any serialized type bumps it.
pub const FORMAT: u32 = 5;

/// The oldest layout still read: format 3 is format 4 without the normal ranges, and
/// format 4 is format 5 without the restless-series memory and the flat-run marks.
pub const OLDEST_READ: u32 = 3;

/// What every snapshot starts with, so that any other file is told apart from a snapshot
/// of another format.
const MAGIC: &[u8; 8] = b"LKTMODEL";

#[derive(Serialize)]
struct Out<'a> {
    format: u32,
    shape: u64,
    saved_at: i64,
    model: &'a Model,
    judge: &'a Judge,
    hysteresis: &'a Hysteresis,
    flat: &'a Flat,
    profile: &'a Profile,
    sustained: &'a super::Sustained,
    scored: u32,
    first_scored: Option<i64>,
    /// Format 4's addition, last so that format 3 is a prefix of it.
    normal: Option<&'a [f64]>,
    /// Format 5's additions.
    rough: &'a Rough,
    flat_marks: Vec<u8>,
}

/// The fields formats 3 and 4 share; format 4's `normal` follows them.
#[derive(Deserialize)]
struct In {
    format: u32,
    shape: u64,
    saved_at: i64,
    model: Model,
    judge: Judge,
    hysteresis: Hysteresis,
    flat: Flat,
    profile: Profile,
    sustained: super::Sustained,
    scored: u32,
    first_scored: Option<i64>,
}

/// Why a snapshot was not taken back.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("not a readable snapshot ({0})")]
    Corrupt(String),
    #[error("snapshot format {found}, this agent reads formats {OLDEST_READ} to {FORMAT}")]
    Format { found: u32 },
    #[error("the model's dimensions or detector settings changed since it was saved")]
    Shape,
}

/// What identifies a model's shape: its dimensions' names and the settings that size or
/// change what it learns. FNV-1a over their text, stable across runs and machines.
pub fn shape_key(detector: &Detector, metrics: &[(String, String)]) -> u64 {
    let p = &detector.params;
    let text = format!(
        "{metrics:?}|diffs {}|smoothing {}|lags {}|k {}|window {}|ensemble {}|context {:?}|long {}",
        p.diffs,
        p.n_smoothing,
        p.n_lags,
        p.n_clusters,
        p.train_data_size,
        p.ensemble,
        p.context,
        p.long_samples
    );
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x1000_0000_01b3);
    }
    h
}

impl Decider {
    /// The model's learned state, saved at `now` (Unix ms).
    pub fn snapshot(&self, shape: u64, now: i64) -> Vec<u8> {
        let out = Out {
            format: FORMAT,
            shape,
            saved_at: now,
            model: &self.model,
            judge: &self.judge,
            hysteresis: &self.hysteresis,
            flat: &self.flat,
            profile: &self.profile,
            sustained: &self.sustained,
            scored: self.scored,
            first_scored: self.first_scored,
            normal: self.model.normal_range(),
            rough: &self.rough,
            flat_marks: self.flat.marks(),
        };
        // Serializing owned in-memory data cannot fail with postcard's Vec flavour.
        let mut bytes = MAGIC.to_vec();
        bytes.extend(postcard::to_allocvec(&out).unwrap_or_default());
        bytes
    }

    /// Takes back a snapshot of this model's `shape`; returns when it was saved. On
    /// refusal the decider is left as it was.
    pub fn restore(&mut self, bytes: &[u8], shape: u64) -> Result<i64, Refused> {
        let Some(bytes) = bytes.strip_prefix(MAGIC) else {
            return Err(Refused::Corrupt("not a Lookout model snapshot".into()));
        };
        // The format comes first, so it is read before the rest is trusted.
        let format: u32 = postcard::take_from_bytes::<u32>(bytes)
            .map(|(f, _)| f)
            .map_err(|e| Refused::Corrupt(e.to_string()))?;
        if !(OLDEST_READ..=FORMAT).contains(&format) {
            return Err(Refused::Format { found: format });
        }
        let (s, rest): (In, _) =
            postcard::take_from_bytes(bytes).map_err(|e| Refused::Corrupt(e.to_string()))?;
        let corrupt = |e: postcard::Error| Refused::Corrupt(e.to_string());
        let (normal, rest): (Option<Vec<f64>>, _) = if s.format >= 4 {
            postcard::take_from_bytes(rest).map_err(corrupt)?
        } else {
            (None, rest)
        };
        let (rough, flat_marks): (Option<Rough>, Vec<u8>) = if s.format >= 5 {
            let (rough, rest) = postcard::take_from_bytes(rest).map_err(corrupt)?;
            (Some(rough), postcard::from_bytes(rest).map_err(corrupt)?)
        } else {
            (None, Vec::new())
        };
        if s.shape != shape {
            return Err(Refused::Shape);
        }
        let n_dims = self.model.n_dims();
        let model = s
            .model
            .restored(self.detector.params, n_dims)
            .ok_or(Refused::Shape)?;
        self.model = model;
        self.model.restore_normal_range(normal.as_deref());
        self.judge = s.judge.adopt(self.detector.alarm);
        self.hysteresis = s.hysteresis.adopt(self.detector.alarm);
        self.flat = s.flat.adopt(self.detector.alarm.flat_ms);
        self.flat.set_marks(&flat_marks);
        self.rough = rough.filter(|r| r.n_dims() == n_dims).map_or_else(
            || Rough::new(self.detector.rough_window, n_dims),
            |r| r.adopt(self.detector.rough_window),
        );
        self.profile = s.profile;
        self.sustained = s.sustained;
        self.scored = s.scored;
        self.first_scored = s.first_scored;
        // The first vectors after a restart mix values from before and after it: they
        // are scored but may not raise an alarm.
        self.mute = self.model.warmup_ticks();
        Ok(s.saved_at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::{Decision, DetectorConfig};
    use crate::scorer::fit::Inline;

    fn detector() -> Detector {
        let mut c = DetectorConfig::default();
        c.train.window = crate::scorer::config::Span::Ticks(200);
        c.train.every = crate::scorer::config::Span::Ticks(100);
        c.train.min_points = crate::scorer::config::Span::Ticks(150);
        c.resolve_at(std::time::Duration::from_secs(1)).unwrap()
    }

    fn value(i: i64) -> [f64; 2] {
        let t = i as f64;
        [
            (t * 0.1).sin() * 10.0 + 50.0,
            (t * 0.037).cos() * 3.0 + 20.0,
        ]
    }

    fn trained(d: &Detector, ticks: i64) -> Decider {
        let mut dec = Decider::new(d, 2);
        let mut fit = Inline::for_model(dec.model());
        for i in 0..ticks {
            dec.step(i * 1000, &value(i), (0, 0), &mut fit);
        }
        dec
    }

    fn scores(dec: &mut Decider, from: i64, to: i64) -> Vec<Decision> {
        let mut fit = Inline::for_model(dec.model());
        (from..to)
            .map(|i| dec.step(i * 1000, &value(i), (0, 0), &mut fit).0)
            .collect()
    }

    #[test]
    fn a_restored_model_scores_from_its_first_tick_as_if_it_had_never_stopped() {
        let d = detector();
        let metrics = vec![("c".to_string(), "a".to_string()), ("c".into(), "b".into())];
        let shape = shape_key(&d, &metrics);
        let mut original = trained(&d, 600);
        let bytes = original.snapshot(shape, 42);
        let mut restored = Decider::new(&d, 2);
        assert_eq!(restored.restore(&bytes, shape), Ok(42));
        let (a, b) = (
            scores(&mut original, 600, 900),
            scores(&mut restored, 600, 900),
        );
        assert!(
            b.iter().all(|d| matches!(d, Decision::Scored(_))),
            "no learning period"
        );
        let score = |d: &Decision| match d {
            Decision::Scored(s) => s.score,
            _ => f64::NAN,
        };
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(score(x).to_bits(), score(y).to_bits());
        }
        // Settings that do not change the shape come from today's config.
        let mut tuned = DetectorConfig::default();
        tuned.train.window = crate::scorer::config::Span::Ticks(200);
        tuned.train.every = crate::scorer::config::Span::Ticks(100);
        tuned.train.min_points = crate::scorer::config::Span::Ticks(150);
        tuned.alarm.threshold = 9.0;
        let tuned = tuned.resolve_at(std::time::Duration::from_secs(1)).unwrap();
        let mut t = Decider::new(&tuned, 2);
        assert!(t.restore(&bytes, shape_key(&tuned, &metrics)).is_ok());
        assert_eq!(t.detector().alarm.threshold, 9.0);
    }

    #[test]
    fn the_normal_ranges_come_back_with_the_model() {
        let d = detector();
        let shape = 7;
        let original = trained(&d, 600);
        let ranges = original.model().normal_range().expect("fitted").to_vec();
        assert_eq!(ranges.len(), 4, "low and high of two dimensions");
        let mut restored = Decider::new(&d, 2);
        assert_eq!(
            restored.restore(&original.snapshot(shape, 42), shape),
            Ok(42)
        );
        assert_eq!(restored.model().normal_range(), Some(&ranges[..]));
        assert_eq!(restored.attribution("m"), original.attribution("m"));
    }

    /// The bytes format 5 appends to format 4: the restless memory and the flat-run marks.
    fn format_5_tail(d: &Decider) -> usize {
        postcard::to_allocvec(&d.rough).unwrap().len()
            + postcard::to_allocvec(&d.flat.marks()).unwrap().len()
    }

    /// Format 3 is format 4 without the ranges at its end: such a snapshot keeps all the
    /// model learned, and the fit at its next tick measures the ranges.
    #[test]
    fn a_format_3_snapshot_keeps_what_it_learned_and_measures_the_ranges_at_the_next_tick() {
        let d = detector();
        let shape = 7;
        let mut original = trained(&d, 600);
        let mut bytes = original.snapshot(shape, 42);
        let tail = postcard::to_allocvec(&original.model().normal_range()).unwrap();
        bytes.truncate(bytes.len() - tail.len() - format_5_tail(&original));
        assert_eq!(
            bytes[MAGIC.len()],
            5,
            "the format is the first byte after the magic"
        );
        bytes[MAGIC.len()] = 3;
        let mut restored = Decider::new(&d, 2);
        assert_eq!(restored.restore(&bytes, shape), Ok(42));
        assert!(restored.model().is_trained(), "no learning period");
        assert_eq!(restored.model().normal_range(), None, "not in format 3");
        let (a, b) = (
            scores(&mut original, 600, 601),
            scores(&mut restored, 600, 601),
        );
        assert!(matches!(b[0], Decision::Scored(_)), "{b:?}");
        let ranges = restored.model().normal_range().expect("measured by a fit");
        assert_eq!(ranges.len(), 4);
        assert!(ranges[0] < ranges[1] && ranges[2] < ranges[3], "{ranges:?}");
        assert!(matches!(a[0], Decision::Scored(_)));
        let top = restored.attribution("m").unwrap().dimensions;
        assert!(top.iter().all(|d| d.normal.is_some()), "{top:?}");
    }

    /// Format 4 is format 5 without the restless-series memory: it reads, keeps the
    /// ranges, and that memory starts afresh; format 5 brings it back whole.
    #[test]
    fn a_format_4_snapshot_reads_and_format_5_keeps_the_restless_memory() {
        let d = detector();
        let shape = 7;
        let original = trained(&d, 600);
        let full = original.snapshot(shape, 42);
        let rough = postcard::to_allocvec(&original.rough).unwrap();
        let mut bytes = full[..full.len() - format_5_tail(&original)].to_vec();
        bytes[MAGIC.len()] = 4;
        let mut restored = Decider::new(&d, 2);
        assert_eq!(restored.restore(&bytes, shape), Ok(42));
        assert_eq!(
            restored.model().normal_range(),
            original.model().normal_range()
        );
        assert_eq!(
            postcard::to_allocvec(&restored.rough).unwrap(),
            postcard::to_allocvec(&Rough::new(d.rough_window, 2)).unwrap(),
            "afresh"
        );
        let mut whole = Decider::new(&d, 2);
        assert_eq!(whole.restore(&full, shape), Ok(42));
        assert_eq!(postcard::to_allocvec(&whole.rough).unwrap(), rough);
    }

    #[test]
    fn snapshots_of_another_shape_format_or_garbage_are_refused_and_change_nothing() {
        let d = detector();
        let metrics = vec![("c".to_string(), "a".to_string()), ("c".into(), "b".into())];
        let shape = shape_key(&d, &metrics);
        let bytes = trained(&d, 400).snapshot(shape, 1);
        let mut fresh = Decider::new(&d, 2);
        assert_eq!(fresh.restore(&bytes, shape ^ 1), Err(Refused::Shape));
        assert!(matches!(
            fresh.restore(&bytes[..bytes.len() / 2], shape),
            Err(Refused::Corrupt(_))
        ));
        assert!(matches!(
            fresh.restore(b"", shape),
            Err(Refused::Corrupt(_))
        ));
        for found in [2, 9] {
            let mut other = bytes.clone();
            other[MAGIC.len()] = found as u8;
            assert_eq!(fresh.restore(&other, shape), Err(Refused::Format { found }));
        }
        assert!(
            !fresh.model().is_trained(),
            "a refused snapshot leaves the model as it was"
        );
        let mut wider = DetectorConfig::default();
        wider.train.window = crate::scorer::config::Span::Ticks(300);
        let wider = wider.resolve_at(std::time::Duration::from_secs(1)).unwrap();
        assert_ne!(
            shape_key(&wider, &metrics),
            shape,
            "the window is part of the shape"
        );
        assert_ne!(shape_key(&d, &metrics[..1]), shape, "so are the dimensions");
    }
}
