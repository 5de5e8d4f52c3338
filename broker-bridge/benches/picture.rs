//! The cost of one alarm picture (issue 22: at most 20 ms and 100 KiB): the documentation's
//! example window (600 ticks, 3 series), and the same with every tick anomalous and noisy
//! series, the most a window can make the renderer and the PNG encoder do. Results and the
//! exact command are in BENCHMARKS.md.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use lookout_bridge::picture::{from_fields, sparkline_of};
use serde_json::Value;

fn example() -> Value {
    serde_json::from_str(include_str!("../../docs/img/alarm-example.json")).expect("JSON")
}

/// Every tick anomalous, the series jumping between extremes: the most pixels to draw and
/// the least for the encoder to compress.
fn worst() -> Value {
    let mut v = example();
    let n = v["window"]["ts"].as_array().map_or(0, Vec::len);
    v["window"]["level"] = (0..n).map(|i| Value::from(1 + i % 4)).collect();
    for (k, s) in v["window"]["series"]
        .as_array_mut()
        .into_iter()
        .flatten()
        .enumerate()
    {
        s["values"] = (0..n)
            .map(|i| Value::from(((i * 7919 + k * 104_729) % 1000) as f64))
            .collect();
    }
    v
}

fn picture(c: &mut Criterion) {
    for (name, fields) in [("example", example()), ("worst", worst())] {
        let png = from_fields(&fields).expect("a window").expect("drawn").png;
        eprintln!("picture/{name}: {} bytes", png.len());
        c.bench_function(&format!("picture/{name}"), |b| {
            b.iter(|| from_fields(black_box(&fields)))
        });
    }
    let fields = example();
    c.bench_function("picture/sparkline", |b| {
        b.iter(|| sparkline_of(black_box(&fields)))
    });
}

criterion_group!(benches, picture);
criterion_main!(benches);
