//! Evaluation bench of the latency drift detector (`drover::drift`): false alarms on stable
//! data, detection delay on steps and a ramp, and the cost per completion. Prints Markdown.
//!
//! Synthetic workload (seeded, reproducible): lognormal durations with a 30 min median and
//! sigma 0.25, completions every 15 min on average (exponential gaps), 2% stragglers at 2-5x,
//! a +-20% daily cycle on the median. Each change series has a 2,000-completion stable prefix
//! then the change. The base seed can be overridden with `DRIFT_EVAL_SEED`; `DRIFT_EVAL_SEEDS`
//! (`100-109`, or a comma-separated list) pools several base seeds into one table (tuning is
//! judged on seeds 100-109, not on the default one), and `DRIFT_EVAL_CONFIG` (a partial
//! `DetectorConfig` as JSON, e.g. `{"thresholds": [7.5, 13, 12, 16, 7]}`) evaluates another
//! tuning; `DRIFT_EVAL_DETAIL=1` adds the mean delay per case and the share of series caught
//! within the median target (finer than the medians, for comparing variants). The cost per
//! completion is timed roughly here; `benches/drift_cost.rs` measures it with criterion.
//!
//! Run: `cargo bench --bench drift_eval`
//!      `DRIFT_EVAL_SEEDS=100-109 cargo bench --bench drift_eval`

use drover::drift::{Detector, DetectorConfig};
use std::hint::black_box;
use std::time::Instant;

const DEFAULT_SEED: u64 = 0xD20F_7E5E_ED00_2026;
const MEDIAN_S: f64 = 1800.0;
const SIGMA: f64 = 0.25;
const MEAN_GAP_S: f64 = 900.0;
const STRAGGLER_SHARE: f64 = 0.02;
const DAILY_AMPLITUDE: f64 = 0.2;
const START_UNIX_S: f64 = 1_767_225_600.0; // 2026-01-01T00:00:00Z

#[path = "support/rng.rs"]
mod rng;
use rng::Rng;

const SERIES_PER_CASE: u64 = 20;
const PREFIX: usize = 2_000;
const AFTER_STEP: usize = 1_000;
const RAMP_LEN: usize = 1_000;
const STABLE_SERIES: u64 = 200;
const STABLE_LEN: usize = 10_000;
const TIMING_OBSERVATIONS: usize = 2_000_000;

#[derive(Clone, Copy)]
enum Change {
    None,
    Step(f64),
    /// Median multiplied by a factor growing linearly from 1 to `to` over `over` completions,
    /// then held.
    Ramp {
        to: f64,
        over: usize,
    },
}

impl Change {
    fn factor(self, completions_since_change: usize) -> f64 {
        match self {
            Change::None => 1.0,
            Change::Step(k) => k,
            Change::Ramp { to, over } => {
                let progress = (completions_since_change as f64 / over as f64).min(1.0);
                1.0 + (to - 1.0) * progress
            }
        }
    }
}

/// (completion time, duration) pairs; the change applies from index `change_at` on.
fn generate(seed: u64, change_at: usize, total: usize, change: Change) -> Vec<(f64, f64)> {
    let mut rng = Rng::new(seed);
    let phase = 2.0 * std::f64::consts::PI * rng.uniform();
    let mut t = START_UNIX_S + 86_400.0 * rng.uniform();
    (0..total)
        .map(|i| {
            t += rng.exponential(MEAN_GAP_S);
            let daily = 1.0 + DAILY_AMPLITUDE * (2.0 * std::f64::consts::PI * t / 86_400.0 + phase).sin();
            let factor = if i < change_at { 1.0 } else { change.factor(i - change_at + 1) };
            let mut duration = MEDIAN_S * daily * factor * (SIGMA * rng.normal()).exp();
            if rng.uniform() < STRAGGLER_SHARE {
                duration *= 2.0 + 3.0 * rng.uniform();
            }
            (t, duration)
        })
        .collect()
}

struct SeriesOutcome {
    /// Alert starts before the change.
    false_alarms: u64,
    /// Stable completions after warm-up (where an alert could have fired).
    stable_exposed: u64,
    /// Stable completions including warm-up.
    stable_total: u64,
    /// Completions from the change (first changed completion = 1) to the first alert start.
    delay: Option<usize>,
}

fn run_series(cfg: &DetectorConfig, data: &[(f64, f64)], change_at: usize) -> SeriesOutcome {
    let mut detector = Detector::new(cfg.clone());
    let mut was_alerting = false;
    let mut false_alarms = 0;
    let mut delay = None;
    for (i, &(t, v)) in data.iter().enumerate() {
        let verdict = detector.observe(t, v);
        let started = verdict.alert && !was_alerting;
        was_alerting = verdict.alert;
        if started && i < change_at {
            false_alarms += 1;
        }
        if started && i >= change_at && delay.is_none() {
            delay = Some(i - change_at + 1);
        }
    }
    let warmup = usize::try_from(cfg.warmup).unwrap_or(usize::MAX);
    SeriesOutcome {
        false_alarms,
        stable_exposed: change_at.saturating_sub(warmup) as u64,
        stable_total: change_at as u64,
        delay,
    }
}

fn series_seed(base: u64, case: u64, series: u64) -> u64 {
    let mut rng = Rng::new(base ^ case.wrapping_mul(0x1000_0000_01B3) ^ series.wrapping_mul(0x9E37_79B9));
    rng.next_u64()
}

struct Case {
    name: &'static str,
    change: Change,
    after: usize,
    /// (minimum share caught, max median delay, max p90 delay, max worst delay)
    target: Target,
}

#[derive(Clone, Copy)]
struct Target {
    caught: Option<f64>,
    median: Option<usize>,
    p90: Option<usize>,
    max: Option<usize>,
}

const NO_TARGET: Target = Target { caught: None, median: None, p90: None, max: None };

struct CaseResult {
    caught: usize,
    series: usize,
    median: Option<usize>,
    p90: Option<usize>,
    max: Option<usize>,
}

/// Nearest-rank percentile where a missed detection counts as infinitely late.
fn percentile(sorted_delays: &[Option<usize>], p: f64) -> Option<usize> {
    let rank = ((p * sorted_delays.len() as f64).ceil() as usize).clamp(1, sorted_delays.len());
    sorted_delays[rank - 1]
}

fn sort_delays(delays: &mut [Option<usize>]) {
    delays.sort_by_key(|d| d.unwrap_or(usize::MAX));
}

fn fmt_delay(d: Option<usize>) -> String {
    d.map_or_else(|| "miss".to_string(), |d| d.to_string())
}

fn check(ok: bool) -> &'static str {
    if ok {
        "yes"
    } else {
        "**NO**"
    }
}

/// Seeds to evaluate: `DRIFT_EVAL_SEEDS` (`100-109` or `1,2,5`), else `DRIFT_EVAL_SEED`, else
/// the bench's own.
fn seeds_from_env() -> Vec<u64> {
    if let Ok(list) = std::env::var("DRIFT_EVAL_SEEDS") {
        let mut seeds = Vec::new();
        for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let parsed = match part.split_once('-') {
                Some((lo, hi)) => {
                    lo.parse::<u64>().ok().zip(hi.parse::<u64>().ok()).map(|(lo, hi)| (lo..=hi).collect())
                }
                None => part.parse::<u64>().ok().map(|s| vec![s]),
            };
            seeds.extend(parsed.unwrap_or_else(|| panic!("DRIFT_EVAL_SEEDS: bad seed or range `{part}`")));
        }
        assert!(!seeds.is_empty(), "DRIFT_EVAL_SEEDS lists no seed");
        return seeds;
    }
    vec![std::env::var("DRIFT_EVAL_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(DEFAULT_SEED)]
}

fn cases() -> [Case; 6] {
    [
        Case { name: "step 1.25x", change: Change::Step(1.25), after: AFTER_STEP, target: NO_TARGET },
        Case {
            name: "step 1.5x",
            change: Change::Step(1.5),
            after: AFTER_STEP,
            target: Target { caught: Some(0.95), median: Some(15), ..NO_TARGET },
        },
        Case {
            name: "step 2x",
            change: Change::Step(2.0),
            after: AFTER_STEP,
            target: Target { caught: Some(1.0), median: Some(5), p90: Some(10), ..NO_TARGET },
        },
        Case { name: "step 4x", change: Change::Step(4.0), after: AFTER_STEP, target: NO_TARGET },
        Case {
            name: "step 12x",
            change: Change::Step(12.0),
            after: AFTER_STEP,
            target: Target { caught: Some(1.0), max: Some(2), ..NO_TARGET },
        },
        Case {
            name: "ramp to 3x over 1000",
            change: Change::Ramp { to: 3.0, over: RAMP_LEN },
            after: RAMP_LEN + AFTER_STEP,
            target: Target { caught: Some(0.95), median: Some(100), ..NO_TARGET },
        },
    ]
}

/// Everything measured with one base seed.
struct SeedOutcome {
    seed: u64,
    false_alarms: u64,
    stable_exposed: u64,
    stable_total: u64,
    /// Detection delays per case, in case order.
    delays: Vec<Vec<Option<usize>>>,
}

fn evaluate_seed(cfg: &DetectorConfig, base_seed: u64) -> SeedOutcome {
    let mut out =
        SeedOutcome { seed: base_seed, false_alarms: 0, stable_exposed: 0, stable_total: 0, delays: Vec::new() };
    for (case_no, case) in cases().iter().enumerate() {
        let mut delays = Vec::new();
        for series in 0..SERIES_PER_CASE {
            let seed = series_seed(base_seed, case_no as u64 + 1, series);
            let data = generate(seed, PREFIX, PREFIX + case.after, case.change);
            let outcome = run_series(cfg, &data, PREFIX);
            out.false_alarms += outcome.false_alarms;
            out.stable_exposed += outcome.stable_exposed;
            out.stable_total += outcome.stable_total;
            delays.push(outcome.delay);
        }
        out.delays.push(delays);
    }
    for series in 0..STABLE_SERIES {
        let seed = series_seed(base_seed, 0, series);
        let data = generate(seed, STABLE_LEN, STABLE_LEN, Change::None);
        let outcome = run_series(cfg, &data, STABLE_LEN);
        out.false_alarms += outcome.false_alarms;
        out.stable_exposed += outcome.stable_exposed;
        out.stable_total += outcome.stable_total;
    }
    out
}

fn summarise(mut delays: Vec<Option<usize>>) -> CaseResult {
    sort_delays(&mut delays);
    CaseResult {
        caught: delays.iter().filter(|d| d.is_some()).count(),
        series: delays.len(),
        median: percentile(&delays, 0.5),
        p90: percentile(&delays, 0.9),
        max: percentile(&delays, 1.0),
    }
}

fn main() {
    let seeds = seeds_from_env();
    let cfg: DetectorConfig = match std::env::var("DRIFT_EVAL_CONFIG") {
        // A partial configuration (JSON): missing fields keep their defaults.
        Ok(json) => serde_json::from_str(&json).expect("DRIFT_EVAL_CONFIG: a JSON DetectorConfig"),
        Err(_) => DetectorConfig::default(),
    };
    let cases = cases();

    // Seeds are independent: spread them over the cores (results do not depend on it).
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(seeds.len());
    let mut outcomes: Vec<SeedOutcome> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|worker| {
                let (cfg, seeds) = (&cfg, &seeds);
                scope.spawn(move || {
                    seeds.iter().skip(worker).step_by(threads).map(|&s| evaluate_seed(cfg, s)).collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().expect("evaluation thread")).collect()
    });
    outcomes.sort_by_key(|o| seeds.iter().position(|&s| s == o.seed));

    let false_alarms: u64 = outcomes.iter().map(|o| o.false_alarms).sum();
    let stable_exposed: u64 = outcomes.iter().map(|o| o.stable_exposed).sum();
    let stable_total: u64 = outcomes.iter().map(|o| o.stable_total).sum();
    let results: Vec<CaseResult> = (0..cases.len())
        .map(|c| summarise(outcomes.iter().flat_map(|o| o.delays[c].iter().copied()).collect()))
        .collect();

    let ns_per_observe = time_observe(&cfg, seeds[0]);

    if let [seed] = seeds[..] {
        println!("## Drift detector evaluation (base seed {seed:#x})\n");
    } else {
        println!("## Drift detector evaluation (pooled over base seeds {seeds:?})\n");
    }
    println!(
        "Workload: lognormal durations (median 30 min, sigma {SIGMA}), a completion every 15 min on average, \
         {:.0}% stragglers at 2-5x, daily cycle +-{:.0}%. {SERIES_PER_CASE} series per change case and seed, each \
         with a {PREFIX}-completion stable prefix; {STABLE_SERIES} stable series of {STABLE_LEN} per seed. Delay = \
         completions from the change (first changed completion = 1) to the first alert start; a miss counts as \
         infinitely late in percentiles (a false alarm still firing when the change starts also counts as a miss).\n",
        STRAGGLER_SHARE * 100.0,
        DAILY_AMPLITUDE * 100.0
    );
    if std::env::var("DRIFT_EVAL_CONFIG").is_ok() {
        println!("Configuration (`DRIFT_EVAL_CONFIG`, not the default): `{}`\n", serde_json::to_string(&cfg).unwrap());
    }
    println!("| Case | Caught | Median delay | P90 delay | Max delay | Target | Met |");
    println!("|---|---|---|---|---|---|---|");
    for (case, r) in cases.iter().zip(results.iter()) {
        let (target_text, met) = judge(&case.target, r);
        println!(
            "| {} | {}/{} | {} | {} | {} | {} | {} |",
            case.name,
            r.caught,
            r.series,
            fmt_delay(r.median),
            fmt_delay(r.p90),
            fmt_delay(r.max),
            target_text,
            met
        );
    }
    let rate = false_alarms as f64 * 10_000.0 / stable_exposed.max(1) as f64;
    let rate_all = false_alarms as f64 * 10_000.0 / stable_total.max(1) as f64;
    println!(
        "| stable (false alarms) | {false_alarms} alert starts in {stable_exposed} stable completions after warm-up | \
         {rate:.3} per 10,000 | ({rate_all:.3} per 10,000 counting the {stable_total} incl. warm-up) | | <= 0.1 per 10,000 (after warm-up) | {} |",
        check(rate <= 0.1)
    );
    println!(
        "| cost | {ns_per_observe:.0} ns per `observe` (rough wall-clock, {TIMING_OBSERVATIONS} observations, one core; \
         criterion: `cargo bench --bench drift_cost`) | | | | | |"
    );
    if std::env::var("DRIFT_EVAL_DETAIL").is_ok() {
        // Finer than the medians (which move in whole completions): mean delay of the caught
        // series and the share caught within the median target, per case.
        println!("\nDetail (`DRIFT_EVAL_DETAIL`): mean delay of caught series; share within the median target\n");
        for (c, case) in cases.iter().enumerate() {
            let delays: Vec<usize> = outcomes.iter().flat_map(|o| o.delays[c].iter().flatten().copied()).collect();
            let total = outcomes.iter().map(|o| o.delays[c].len()).sum::<usize>().max(1);
            let mean = delays.iter().sum::<usize>() as f64 / delays.len().max(1) as f64;
            let within = case.target.median.map_or(String::new(), |m| {
                format!(", {:.1}% within {m}", 100.0 * delays.iter().filter(|&&d| d <= m).count() as f64 / total as f64)
            });
            println!("- {}: mean {mean:.2}{within}", case.name);
        }
    }
    if outcomes.len() > 1 {
        println!("\nPer seed: false alarms; median delay of the 2x step and of the ramp\n");
        println!("| Seed | False alarms | Per 10,000 | 2x median | Ramp median |");
        println!("|---|---|---|---|---|");
        for o in &outcomes {
            let two = summarise(o.delays[2].clone());
            let ramp = summarise(o.delays[5].clone());
            println!(
                "| {} | {} | {:.3} | {} | {} |",
                o.seed,
                o.false_alarms,
                o.false_alarms as f64 * 10_000.0 / o.stable_exposed.max(1) as f64,
                fmt_delay(two.median),
                fmt_delay(ramp.median)
            );
        }
    }
}

fn judge(target: &Target, r: &CaseResult) -> (String, &'static str) {
    let mut parts = Vec::new();
    let mut ok = true;
    if let Some(share) = target.caught {
        parts.push(format!("caught >= {:.0}%", share * 100.0));
        ok &= r.caught as f64 >= share * r.series as f64 - 1e-9;
    }
    if let Some(m) = target.median {
        parts.push(format!("median <= {m}"));
        ok &= r.median.is_some_and(|d| d <= m);
    }
    if let Some(m) = target.p90 {
        parts.push(format!("p90 <= {m}"));
        ok &= r.p90.is_some_and(|d| d <= m);
    }
    if let Some(m) = target.max {
        parts.push(format!("max <= {m}"));
        ok &= r.max.is_some_and(|d| d <= m);
    }
    if parts.is_empty() {
        ("(none)".to_string(), "")
    } else {
        (parts.join(", "), check(ok))
    }
}

fn time_observe(cfg: &DetectorConfig, base_seed: u64) -> f64 {
    let data = generate(series_seed(base_seed, 99, 0), TIMING_OBSERVATIONS, TIMING_OBSERVATIONS, Change::None);
    let mut detector = Detector::new(cfg.clone());
    let start = Instant::now();
    let mut alerts = 0u64;
    for &(t, v) in &data {
        alerts += u64::from(black_box(detector.observe(black_box(t), black_box(v))).alert);
    }
    let elapsed = start.elapsed();
    black_box(alerts);
    elapsed.as_nanos() as f64 / data.len() as f64
}
