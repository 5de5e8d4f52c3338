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

/// This thread's CPU time: criterion's wall time counts the time other processes on a
/// busy machine take from it, this does not.
fn thread_cpu() -> std::time::Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through a valid pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// The median CPU time of `runs` renders, for BENCHMARKS.md beside criterion's wall time.
fn median_cpu(fields: &Value, runs: usize) -> std::time::Duration {
    let mut times: Vec<_> = (0..runs)
        .map(|_| {
            let start = thread_cpu();
            black_box(from_fields(black_box(fields)));
            thread_cpu() - start
        })
        .collect();
    times.sort();
    times[runs / 2]
}

fn picture(c: &mut Criterion) {
    for (name, fields) in [("example", example()), ("worst", worst())] {
        let png = from_fields(&fields).expect("a window").expect("drawn").png;
        let cpu = median_cpu(&fields, 51);
        eprintln!(
            "picture/{name}: {} bytes, median thread CPU time {:.2} ms (51 renders)",
            png.len(),
            cpu.as_secs_f64() * 1e3
        );
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
