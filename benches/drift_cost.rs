//! Cost of the latency drift detector (`drover::drift`) per completion, measured with criterion.
//!
//! Each `observe` case first warms a detector on 20,000 completions of the evaluation workload
//! (benches/drift_eval.rs: lognormal durations, median 30 min, sigma 0.25, a completion every
//! 15 min on average, 2% stragglers at 2-5x, a +-20% daily cycle), then times one `observe` per
//! iteration on a further 65,536 pre-generated completions, cycled:
//!
//! - `observe/stable`: steady state, the baseline learning (the common case);
//! - `observe/slow_2x`: every job twice as slow, so the alert fires and the baseline is frozen;
//! - `observe/young` and `observe/young_no_scan`: a class in its first week, between its
//!   300th and 556th completion (days 3 to 6), where the young two-sample scan runs beside
//!   the CUSUMs; the second with the scan off (`young_scan_z` 0), so the difference is the
//!   scan's cost. Each batch of 256 completions starts from a copy of the same young detector
//!   (the copy is not timed); `observe/young_no_sizes` with the scan's size mixture off
//!   (`young_sizes_z` 0: the difference is fitting it, every 20 completions, on a class of
//!   one size), and `observe/young_two_sizes` the same completions with 30% of the jobs 2.5x
//!   larger, where the mixture is in use;
//! - `snapshot`: copying the whole state out (what a restart persists);
//! - `snapshot_json`: the same, serialised to JSON.
//!
//! Run: `cargo bench --bench drift_cost`

use criterion::{criterion_group, criterion_main, Criterion};
use drover::drift::{Detector, DetectorConfig};
use std::hint::black_box;

const MEDIAN_S: f64 = 1800.0;
const SIGMA: f64 = 0.25;
const MEAN_GAP_S: f64 = 900.0;
const STRAGGLER_SHARE: f64 = 0.02;
const DAILY_AMPLITUDE: f64 = 0.2;
const START_UNIX_S: f64 = 1_767_225_600.0; // 2026-01-01T00:00:00Z
const WARM: usize = 20_000;
/// A power of two, so cycling through the timed completions is a mask.
const TIMED: usize = 1 << 16;
/// The young cases time completions `YOUNG_FROM..YOUNG_FROM + YOUNG_BATCH` of a new class.
const YOUNG_FROM: usize = 300;
const YOUNG_BATCH: usize = 256;

#[path = "support/rng.rs"]
mod rng;
use rng::Rng;

/// (completion time, duration) pairs; completions from index `WARM` on are `factor` times slower.
fn workload(seed: u64, factor: f64) -> Vec<(f64, f64)> {
    let mut rng = Rng::new(seed);
    let mut t = START_UNIX_S;
    (0..WARM + TIMED)
        .map(|i| {
            t += -MEAN_GAP_S * rng.uniform().ln();
            let daily = 1.0 + DAILY_AMPLITUDE * (2.0 * std::f64::consts::PI * t / 86_400.0).sin();
            let slowdown = if i < WARM { 1.0 } else { factor };
            let mut duration = MEDIAN_S * daily * slowdown * (SIGMA * rng.normal()).exp();
            if rng.uniform() < STRAGGLER_SHARE {
                duration *= 2.0 + 3.0 * rng.uniform();
            }
            (t, duration)
        })
        .collect()
}

/// The same completions with 30% of the jobs 2.5 times larger (a class of two job sizes).
fn with_two_sizes(data: &[(f64, f64)], seed: u64) -> Vec<(f64, f64)> {
    let mut rng = Rng::new(seed);
    data.iter().map(|&(t, v)| (t, if rng.uniform() < 0.3 { 2.5 * v } else { v })).collect()
}

/// A detector that has seen the first `WARM` completions, and the completions to time.
fn warmed(data: &[(f64, f64)]) -> (Detector, &[(f64, f64)]) {
    let mut detector = Detector::new(DetectorConfig::default());
    for &(t, v) in &data[..WARM] {
        detector.observe(t, v);
    }
    (detector, &data[WARM..])
}

fn observe(c: &mut Criterion) {
    let mut group = c.benchmark_group("observe");
    for (name, factor) in [("stable", 1.0), ("slow_2x", 2.0)] {
        let data = workload(0xD21F_7C05_7000 + factor as u64, factor);
        let (mut detector, timed) = warmed(&data);
        let mut next = 0usize;
        group.bench_function(name, |b| {
            b.iter(|| {
                let (t, v) = timed[next & (TIMED - 1)];
                next = next.wrapping_add(1);
                detector.observe(black_box(t), black_box(v))
            })
        });
        // (Not when a filter skipped the case: then nothing was observed.)
        if factor > 1.0 && next > 0 {
            assert!(detector.is_alerting(), "a 2x slowdown keeps the alert firing");
        }
    }
    let one_size = workload(0xD21F_7C05_7002, 1.0);
    let two_sizes = with_two_sizes(&one_size, 0xD21F_7C05_7003);
    for (name, cfg, data) in [
        ("young", DetectorConfig::default(), &one_size),
        ("young_no_scan", DetectorConfig { young_scan_z: 0.0, ..DetectorConfig::default() }, &one_size),
        ("young_no_sizes", DetectorConfig { young_sizes_z: 0.0, ..DetectorConfig::default() }, &one_size),
        ("young_two_sizes", DetectorConfig::default(), &two_sizes),
    ] {
        let mut young = Detector::new(cfg);
        for &(t, v) in &data[..YOUNG_FROM] {
            young.observe(t, v);
        }
        let timed = &data[YOUNG_FROM..YOUNG_FROM + YOUNG_BATCH];
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = std::time::Duration::ZERO;
                let mut done = 0;
                while done < iters {
                    let mut detector = young.clone();
                    let n = (iters - done).min(YOUNG_BATCH as u64) as usize;
                    let start = std::time::Instant::now();
                    for &(t, v) in &timed[..n] {
                        black_box(detector.observe(black_box(t), black_box(v)));
                    }
                    total += start.elapsed();
                    done += n as u64;
                }
                total
            })
        });
    }
    group.finish();
}

fn snapshot(c: &mut Criterion) {
    let data = workload(0xD21F_7C05_7001, 1.0);
    let (mut detector, timed) = warmed(&data);
    for &(t, v) in timed {
        detector.observe(t, v);
    }
    c.bench_function("snapshot", |b| b.iter(|| black_box(&detector).snapshot()));
    c.bench_function("snapshot_json", |b| {
        b.iter(|| serde_json::to_string(&black_box(&detector).snapshot()).expect("state serialises"))
    });
}

criterion_group!(benches, observe, snapshot);
criterion_main!(benches);
