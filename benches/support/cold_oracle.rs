//! `DRIFT_EVAL_ORACLE=cold`: how soon a detector that must learn a new class's level could
//! catch the cold-start steps, on exactly the series of the bench. The oracle of
//! `oracle_eval.rs` knows the level from the first completion, which no new class offers; this
//! one knows the spread (σ of ln-duration) and the daily and weekly profiles, but not the level.
//!
//! Its test is the two-sample scan: at every completion, for every window of the latest k
//! completions (k from 1 to `LONGEST`, with at least `MIN_BEFORE` before it), the window's mean
//! against the mean of every completion before it, in standard errors σ√(1/k + 1/n). With a
//! Gaussian spread of known σ, the square of the largest z is the generalised likelihood ratio
//! statistic for a rise of the mean at an unknown time, both levels unknown (the scheme of
//! Siegmund and Venkatraman, 1995, with the level before the change estimated too). Families
//! with stragglers or two sizes are not Gaussian, the scan is not their likelihood ratio
//! test, and they are skipped. An alarm restarts it: the history starts again, as for a new
//! class, and no alarm comes before `WARMUP` completions of history.
//!
//! Its threshold is calibrated per family so that its cold-start false alarms (completions
//! `COLD_FROM` to `MATURE_FROM` - 1 of stable series) are at a given rate; the stable series
//! come from `CALIBRATION_SEEDS` seeds of their own, for enough alarms at low rates.

use super::oracle_eval::{family_base, generate_x};
use super::workload::Family;
use super::{cases, fmt_delay, series_seed, summarise, Change, COLD_CHANGE, COLD_FROM, MATURE_FROM, SERIES_PER_CASE};

/// The longest window scanned.
const LONGEST: usize = 300;
/// A window is compared only with at least this many completions before it.
const MIN_BEFORE: usize = 20;
/// No alarm before this many completions of history (the detector's warm-up).
const WARMUP: usize = COLD_FROM;
/// Seeds of the stable series the threshold is calibrated on (each 200 series of `MATURE_FROM`).
const CALIBRATION_SEEDS: u64 = 25;
const STABLE_PER_SEED: u64 = 200;

/// Indices of the alarms of the scan over `x` at threshold `h`.
fn alarms(x: &[f64], sigma: f64, h: f64) -> Vec<usize> {
    let mut prefix = Vec::with_capacity(x.len() + 1);
    prefix.push(0.0);
    for &v in x {
        prefix.push(prefix.last().copied().unwrap_or(0.0) + v);
    }
    let (mut start, mut out) = (0, Vec::new());
    for n in 0..x.len() {
        let held = n + 1 - start;
        if held < WARMUP {
            continue;
        }
        let end = prefix[n + 1];
        let mut best = f64::NEG_INFINITY;
        for k in 1..=LONGEST.min(held - MIN_BEFORE) {
            let before_n = (held - k) as f64;
            let inside = (end - prefix[n + 1 - k]) / k as f64;
            let before = (prefix[n + 1 - k] - prefix[start]) / before_n;
            best = best.max((inside - before) / (sigma * (1.0 / k as f64 + 1.0 / before_n).sqrt()));
        }
        if best >= h {
            out.push(n);
            start = n + 1;
        }
    }
    out
}

fn stable_series(family: Family, family_no: usize) -> Vec<Vec<f64>> {
    (0..CALIBRATION_SEEDS * STABLE_PER_SEED)
        .map(|s| {
            let seed = series_seed(0xC01D_0AC1E ^ (family_no as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15), 7, s);
            generate_x(family, seed, MATURE_FROM, MATURE_FROM, Change::None)
        })
        .collect()
}

/// False alarms per 10,000 cold-start completions at threshold `h`.
fn false_alarm_rate(series: &[Vec<f64>], sigma: f64, h: f64) -> f64 {
    let counted = |x: &Vec<f64>| alarms(x, sigma, h).into_iter().filter(|&i| i >= COLD_FROM).count();
    let alarms: usize = super::oracle_eval::parallel(series.iter().collect(), counted).into_iter().sum();
    alarms as f64 / (series.len() * (MATURE_FROM - COLD_FROM)) as f64 * 1e4
}

/// The lowest threshold (to 0.01) whose false-alarm rate is at most `rate`.
fn calibrate(series: &[Vec<f64>], sigma: f64, rate: f64) -> (f64, f64) {
    let (mut lo, mut hi) = (2.0, 8.0);
    while hi - lo > 0.01 {
        let mid = (lo + hi) / 2.0;
        if false_alarm_rate(series, sigma, mid) <= rate {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    (hi, false_alarm_rate(series, sigma, hi))
}

/// Prints, per family, the scan's threshold at each false-alarm rate and its cold-start delays.
pub fn run(families: &[(usize, Family)], seeds: &[u64], rates: &[f64]) {
    let start = std::time::Instant::now();
    println!("## The cold-start oracle: a two-sample scan that must learn the level\n");
    println!(
        "Seeds {seeds:?} for the change cases ({SERIES_PER_CASE} series per case and seed, the change from completion \
         {} on); the threshold calibrated on {} stable series of their own. Cells: caught share, median / p90 / max.\n",
        COLD_CHANGE + 1,
        CALIBRATION_SEEDS * STABLE_PER_SEED
    );
    let cold: Vec<(usize, super::Case)> = cases().into_iter().enumerate().filter(|(_, c)| c.cold).collect();
    let names: Vec<&str> = cold.iter().map(|(_, c)| c.name).collect();
    println!("| family | cold FA per 10,000: target, reached (threshold z) | {} |", names.join(" | "));
    println!("|---|---|{}", "---|".repeat(names.len()));
    let mut skipped = Vec::new();
    for &(family_no, family) in families {
        if family.straggler_share != 0.0 || family.two_sizes.is_some() {
            skipped.push(family.name);
            continue;
        }
        let stable = stable_series(family, family_no);
        let sigma = family.sigma;
        for &rate in rates {
            let (h, reached) = calibrate(&stable, sigma, rate);
            let cells: Vec<String> = cold
                .iter()
                .map(|(case_no, case)| {
                    let delays: Vec<Option<usize>> = seeds
                        .iter()
                        .flat_map(|&seed| {
                            let base = family_base(family_no, seed);
                            (0..SERIES_PER_CASE).map(move |s| series_seed(base, *case_no as u64 + 1, s))
                        })
                        .map(|seed| {
                            let x = generate_x(family, seed, COLD_CHANGE, COLD_CHANGE + case.after, case.change);
                            alarms(&x, sigma, h).into_iter().find(|&i| i >= COLD_CHANGE).map(|i| i - COLD_CHANGE + 1)
                        })
                        .collect();
                    let r = summarise(delays);
                    format!(
                        "{:.0}% {} / {} / {}",
                        100.0 * r.caught as f64 / r.series as f64,
                        fmt_delay(r.median),
                        fmt_delay(r.p90),
                        fmt_delay(r.max)
                    )
                })
                .collect();
            println!("| {} | {rate}: {reached:.3} (z {h:.2}) | {} |", family.name, cells.join(" | "));
        }
    }
    if !skipped.is_empty() {
        println!("\nNot Gaussian, skipped: {}.", skipped.join(", "));
    }
    println!("\n({:.0} s)", start.elapsed().as_secs_f64());
}
