//! Scorer benchmarks: the cost of one scored tick, of a k-means fit on the shared bench
//! vectors (the same files `bench/kmeans_sklearn.py` times scikit-learn on), and replay
//! throughput. Results and the exact commands are in BENCHMARKS.md.

use std::hint::black_box;
use std::io::BufReader;
use std::path::Path;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use lookout_agent::decide::{Decider, Detector, shape_key};
use lookout_agent::scorer::fit::{Fitter, Inline};
use lookout_agent::scorer::kmeans::{self, KMeansParams, Workspace};
use lookout_agent::scorer::{Model, ModelParams};

fn seed_model() -> ModelParams {
    // The seed notebook's model: system.cpu user + system, n_lags 3 -> 8-value vectors, k = 2.
    ModelParams {
        train_data_size: 1440,
        train_every_n: 1_000_000_000,
        min_train_points: 1440,
        ..ModelParams::notebook()
    }
}

fn cpu_like(i: usize) -> [f64; 2] {
    let t = i as f64;
    [
        12.0 + (t * 0.05).sin() * 4.0 + ((i * 7919) % 13) as f64 * 0.1,
        4.0 + (t * 0.021).cos() + ((i * 104_729) % 7) as f64 * 0.05,
    ]
}

fn scored_tick(c: &mut Criterion) {
    let mut m = Model::new(seed_model(), 2);
    let mut ws = m.workspace();
    for i in 0..1441 {
        if m.ingest(&cpu_like(i)).unwrap() {
            m.fit_now(&mut ws);
        }
    }
    m.fit_now(&mut ws);
    assert!(m.score().is_some());
    let inputs: Vec<[f64; 2]> = (0..4096).map(|i| cpu_like(i + 5000)).collect();
    let mut i = 0usize;
    c.bench_function("scored_tick/seed_model_8d_k2", |b| {
        b.iter(|| {
            let v = &inputs[i & 4095];
            i = i.wrapping_add(1);
            let _ = m.ingest(black_box(v));
            black_box(m.score())
        })
    });
}

/// The shipped default detector on one dimension, every ensemble member trained: the
/// per-model cost the agent pays each tick, and what one fit costs on the trainer.
fn default_detector(c: &mut Criterion) {
    let params = Detector::default().params;
    let series = |i: usize| [cpu_like(i)[0]];
    let mut m = Model::new(params, 1);
    let mut ws = m.workspace();
    let warm = params.min_train_points + params.ensemble * params.train_every_n + 1;
    for i in 0..warm {
        if m.ingest(&series(i)).unwrap() {
            m.fit_now(&mut ws);
        }
    }
    assert!(m.score().is_some());
    for dims in [1, 2] {
        eprintln!(
            "default detector, {dims} dimension(s): {} bytes per model; notebook model: {} bytes",
            Model::new(params, dims).heap_bytes(),
            Model::new(ModelParams::notebook(), dims).heap_bytes()
        );
    }
    let inputs: Vec<[f64; 1]> = (0..4096).map(|i| series(i + warm)).collect();
    let mut i = 0usize;
    c.bench_function("scored_tick/default_1d_k6_ensemble12", |b| {
        b.iter(|| {
            let v = &inputs[i & 4095];
            i = i.wrapping_add(1);
            let _ = m.ingest(black_box(v));
            black_box(m.score())
        })
    });
    let mut g = c.benchmark_group("fit");
    g.sample_size(20);
    let mut staging = Some(vec![0.0f32; params.ring_len(1)].into_boxed_slice());
    g.bench_function("default_1d_1440x6_k6_n_init10", |b| {
        b.iter(|| {
            let mut job = m.take_training_set(staging.take().unwrap()).unwrap();
            job.run(&mut ws);
            staging = Some(m.install(job));
        })
    });
    g.finish();
}

/// Fits nothing: the decision path's per-tick cost without the trainer's.
struct NoFits;

impl Fitter for NoFits {
    fn fit(&mut self, _: (usize, usize), _: &mut Model) -> bool {
        false
    }
}

/// The whole decision path per tick with the shipped detector (model, judge, calm
/// hysteresis, flat lines, the time-of-day profile), a trained model of one and of two
/// dimensions; and what a model costs in memory and on disk (its snapshot).
fn decision_path(c: &mut Criterion) {
    let d = Detector::default();
    let warm = d.params.min_train_points + d.params.ensemble * d.params.train_every_n + 1;
    for dims in [1usize, 2] {
        let mut dec = Decider::new(&d, dims);
        let mut fit = Inline::for_model(dec.model());
        let value = |i: usize| {
            let v = cpu_like(i);
            [v[0], v[1]]
        };
        for i in 0..warm {
            dec.step(i as i64 * 1000, &value(i)[..dims], (0, 0), &mut fit);
        }
        let metrics: Vec<(String, String)> =
            (0..dims).map(|i| ("c".into(), format!("d{i}"))).collect();
        let snapshot = dec.snapshot(shape_key(&d, &metrics), 0);
        eprintln!(
            "decision path, {dims} dimension(s): {} bytes per model (decider), snapshot {} bytes",
            dec.heap_bytes(),
            snapshot.len()
        );
        let mut i = warm;
        let mut none = NoFits;
        c.bench_function(&format!("scored_tick/decide_default_{dims}d"), |b| {
            b.iter(|| {
                i += 1;
                black_box(dec.step(
                    i as i64 * 1000,
                    black_box(&value(i)[..dims]),
                    (0, 0),
                    &mut none,
                ))
            })
        });
    }
}

fn load_vectors(name: &str) -> (Vec<f64>, usize) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../bench/data")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut data = Vec::new();
    let mut rows = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        data.extend(line.split(',').map(|f| f.trim().parse::<f64>().unwrap()));
        rows += 1;
    }
    assert_eq!(data.len(), rows * 8);
    (data, rows)
}

fn kmeans_fit(c: &mut Criterion) {
    let mut g = c.benchmark_group("kmeans_fit_k2_n_init10");
    g.sample_size(30);
    for file in ["vectors_1440x8.csv", "vectors_21600x8.csv"] {
        let (data, rows) = load_vectors(file);
        let mut ws = Workspace::new(rows, 8, 2);
        let mut out = vec![0.0; 16];
        let p = KMeansParams::default();
        let inertia = kmeans::fit(&p, &data, rows, 8, &mut ws, &mut out).unwrap();
        eprintln!("{file}: inertia {inertia}");
        g.bench_with_input(BenchmarkId::from_parameter(rows), &rows, |b, &rows| {
            b.iter(|| kmeans::fit(&p, black_box(&data), rows, 8, &mut ws, &mut out))
        });
    }
    g.finish();
}

fn replay_throughput(c: &mut Criterion) {
    // A NAB-like CSV of 200,000 rows through the built-in default detector.
    let mut csv = String::from("timestamp,value\n");
    for i in 0..200_000usize {
        let v = cpu_like(i)[0];
        csv.push_str(&format!(
            "2014-02-14 14:{:02}:{:02},{v:.3}\n",
            (i / 60) % 60,
            i % 60
        ));
    }
    let detector = Detector::default();
    let mut g = c.benchmark_group("replay");
    g.sample_size(10);
    g.throughput(Throughput::Elements(200_000));
    g.bench_function("default_detector_200k_rows", |b| {
        b.iter(|| {
            let mut out = Vec::with_capacity(csv.len() * 2);
            lookout_agent::replay::replay(
                BufReader::new(csv.as_bytes()),
                &mut out,
                &detector,
                "bench",
                None,
            )
            .unwrap()
        })
    });
    // The seed notebook's detector (25 vectors, refit every 50 rows): fits cost little,
    // so this is mostly parsing and formatting.
    let notebook = Detector {
        params: ModelParams::notebook(),
        rough_window: 0,
        alarm: lookout_agent::alarm::AlarmParams::with_threshold(3.0),
        down_limit: None,
        upper_limit: None,
        only_show_anomaly: false,
        seasonal: false,
        accept_after_ms: 0,
        young_for_ms: 0,
        hold_firing: false,
        gate_after_ms: 300_000,
        picture_points: 0,
    };
    g.bench_function("notebook_detector_200k_rows", |b| {
        b.iter(|| {
            let mut out = Vec::with_capacity(csv.len() * 2);
            lookout_agent::replay::replay(
                BufReader::new(csv.as_bytes()),
                &mut out,
                &notebook,
                "bench",
                None,
            )
            .unwrap()
        })
    });
    g.finish();
}

criterion_group!(decide, decision_path);
criterion_group!(
    benches,
    scored_tick,
    default_detector,
    kmeans_fit,
    replay_throughput
);
criterion_main!(decide, benches);
