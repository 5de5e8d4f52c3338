//! Model snapshot files (`[snapshots]`): `Decider::restore` on whatever bytes a damaged
//! or hostile file holds. Two ways in: the input as a whole file, or a real snapshot of a
//! trained model with the input spliced into it (so mutations reach past the header and
//! the shape check into the model itself).
#![no_main]
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use lookout_agent::decide::{Decider, Detector, DetectorConfig, shape_key};
use lookout_agent::scorer::config::Span;
use lookout_agent::scorer::fit::Inline;

fn detector() -> &'static Detector {
    static D: OnceLock<Detector> = OnceLock::new();
    D.get_or_init(|| {
        let mut c = DetectorConfig::default();
        c.train.window = Span::Ticks(200);
        c.train.every = Span::Ticks(100);
        c.train.min_points = Span::Ticks(150);
        c.resolve_at(std::time::Duration::from_secs(1))
            .expect("detector resolves")
    })
}

fn shape() -> u64 {
    let metrics = [
        ("a".to_owned(), "mean".to_owned()),
        ("b".to_owned(), "mean".to_owned()),
    ];
    shape_key(detector(), &metrics)
}

/// A snapshot of a model trained on 400 ticks of two smooth signals.
fn good() -> &'static [u8] {
    static G: OnceLock<Vec<u8>> = OnceLock::new();
    G.get_or_init(|| {
        let mut dec = Decider::new(detector(), 2);
        let mut fit = Inline::for_model(dec.model());
        for i in 0..400i64 {
            let t = i as f64;
            let v = [
                (t * 0.1).sin() * 10.0 + 50.0,
                (t * 0.037).cos() * 3.0 + 20.0,
            ];
            dec.step(i * 1000, &v, (0, 0), &mut fit);
        }
        dec.snapshot(shape(), 42)
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let bytes = if mode & 1 == 0 {
        rest.to_vec()
    } else {
        // Splice: two bytes of offset into the good snapshot, then what replaces it.
        let good = good();
        let (at, patch) = match rest {
            [a, b, patch @ ..] => (
                usize::from(u16::from_le_bytes([*a, *b])) % good.len(),
                patch,
            ),
            _ => return,
        };
        let mut bytes = good[..at].to_vec();
        bytes.extend_from_slice(patch);
        if mode & 2 == 0 {
            // Overwrite rather than insert: keep the tail.
            bytes.extend_from_slice(good.get(at + patch.len()..).unwrap_or_default());
        }
        bytes
    };
    let mut dec = Decider::new(detector(), 2);
    let _ = dec.restore(&bytes, shape());
});
