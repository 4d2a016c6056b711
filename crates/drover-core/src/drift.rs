//! Latency drift detector: tells on-call that a job class has become slower than its own
//! history, long before the SLA (which may be 50x the typical duration) is at risk.
//!
//! Method. Durations are modelled in log space, where they are roughly Gaussian. The baseline
//! is learnt from the class's own completions: a robust (Huber) location with a memory of
//! thousands of completions (learnt from the residual after the profiles, so it is their
//! regression's intercept), a daily profile (a few harmonics of the UTC day, below) so a daily
//! cycle is not mistaken for drift, and a robust scale (mean clipped absolute deviation,
//! computed on out-of-sample residuals so it also covers the baseline's own estimation error).
//! Each completion's residual `u = ln(duration) - expected` feeds a small bank of CUSUMs, one
//! per shift size (1.12x, 1.5x, 2x, 4x, 12x by default), each adding the log-likelihood ratio
//! of "the median moved by that ratio" against "no change". Both hypotheses include a share of
//! stragglers (2% to start, then learnt; at least 2x slower, exponential beyond), which is what
//! makes the test robust: a
//! 3x straggler is well explained by the tail and adds little evidence, a run of 2x values
//! adds ~3 nats each, and no single completion may add more than a share of a threshold (60%,
//! 90% for the 12x CUSUM), so one freak job never alerts while two consecutive 12x jobs do,
//! even when one of them lands as low as 6x: a job beyond ~8x the baseline is far outside the
//! straggler tail and carries nearly a whole threshold on its own. Small shifts and ramps are
//! caught by accumulation in the 1.12x CUSUM, big ones in two to five completions. The score
//! is the largest CUSUM as a fraction of its threshold; an alert starts when it reaches 1.
//! While evidence is building (score >= `freeze_fraction`) or an alert fires, the baseline is
//! frozen, so a ramp or step never becomes the new normal before it is reported. Hysteresis:
//! once firing, the CUSUMs are capped at their thresholds, and the alert lasts at least
//! `min_alert_completions` and resolves only when every CUSUM has decayed below
//! `release_fraction` of its threshold, i.e. after several completions back near baseline. A
//! permanent slowdown therefore keeps alerting until the caller resets the detector. No alert
//! fires during `warmup`.
//!
//! Cold start. `warmup` is 100 completions; until `mature_completions` (1,000) the baseline is
//! young, and each residual is judged against the upper end of its confidence band: the
//! expected ln-duration is raised by `young_z` (1.2; 1.5 until 2026-12-02) standard errors beyond a mature baseline's,
//! `young_z * sqrt(1/n - 1/mature) * sqrt(1 + profile terms) * scale`, and the scale by
//! `young_z * sqrt(1/n - 1/mature) * 0.76` of itself, so the band closes as the estimates
//! settle and the detector is exactly the tuned one from `mature_completions` on. While young
//! the baseline learns by plain averages (each completion weighs 1/n), so a step from the
//! 150th completion is partly absorbed before the evidence reaches `freeze_fraction`;
//! `young_freeze_fraction` can freeze it earlier while young. At 1.5 the band left the cold
//! false alarms far under their limit (0.02-0.06 per 10,000 against 0.5 on the reference) at
//! the cost of the cold delays; at 1.2 the reference's cold 1.5x median is 25-27 instead of
//! 29-31 and the wide families' 15-25% shorter, the tightest family's cold false alarms
//! (`tight+5% stragglers`, whose straggler share is still being learnt) 0.25-0.44. Since
//! 2026-12-03 the expectation's margin is computed at the scale up to
//! `young_band_scale_cap` (0.3): a baseline error of a fixed share of the scale adds less
//! evidence per completion on a wide class (error × shift / scale²), whose cold false alarms
//! were near 0 while its cold delays were 3-4 times the oracle's; with the cap `wide`'s cold
//! 1.5x median fell from 78 to 61 on the tuning seeds (BENCHMARKS.md).
//! `young_freeze_fraction` is off by default (0.5, the
//! same as `freeze_fraction`): 0.2 cuts the cold-start 1.5x median delay on wide classes by
//! a third or more, but a young baseline frozen on a slightly wrong level stays wrong past
//! `mature_completions` (1/n learning), and false alarms rise, mature ones included.
//! `young_learning_lag` (0, off, by default) lets a young baseline learn a completion only
//! after that many later ones have been judged, so a step's first completions are judged
//! against a baseline that has not seen them: at 50 it cuts the wide families' cold 1.5x
//! delays by a third and raises `everything`'s caught share from 68% to 86-92%, but the
//! residuals of a window then share the lagged baseline's error (the recursive residuals of a
//! plain average, learnt at once, are independent), and cold false alarms rise (`bursty` 0.05
//! to 0.25-0.32 per 10,000, `everything` over its limit at a 1.2 band) and a 12x step on
//! `tight+5% stragglers` takes 4-5 completions instead of 3 (BENCHMARKS.md, sixth pass).
//! Since 2026-12-03 a **young scan** (`young_scan_z`, 4.5) runs beside the CUSUMs: a
//! two-sample test of the mean ln-duration of the latest 10, 20, 40 and 80 completions against
//! the mean of every completion before them, in standard errors of the difference (from the
//! earlier completions' own spread, so stragglers and two sizes widen it). The earlier mean has
//! not seen a step, so learning by plain averages does not absorb it. Values are clipped at 2
//! scales and taken after the daily profile as learnt *now* (running moments linear in its
//! coefficients), since before a class's first day the level and the time of day cannot be
//! told apart; a window is compared only with 1.25 days of completions before it, the scan ends
//! after 7 days (its history would then hold a weekend it cannot allow for), and it alerts
//! only when the learnt scale is at least 0.3. On the tuning seeds `wide` cold 1.5x fell from
//! 61 to 40, `two sizes` from 80 to 53, and `everything`'s caught share rose from 81% to 90%;
//! the narrow families' false alarms are unchanged (BENCHMARKS.md). A scan that knows the
//! spread and must learn only the level (`DRIFT_EVAL_ORACLE=cold`) takes 29-31 completions on
//! `wide` at the same false-alarm rate, against 40-45 here. Until the baseline has seen a whole
//! week, [`Detector::knows_its_week`] is false and a drift alert says that a slower weekend
//! cannot be told from drift yet.
//! Since 2026-12-04 a young class of **two job sizes** is scanned under its own mixture
//! (`young_sizes_z`, 4.0; submodule `young_sizes`): from its 100th scanned completion on, a
//! mixture of two Gaussian sizes sharing one spread is fitted (a few EM steps every 20
//! completions, warm started) to all but the latest 40 of its last 300 young completions
//! after the daily profile, and when it beats one Gaussian by BIC (`young_sizes_min_gain`,
//! 0.01 nats per completion beyond the penalty), with each size at least 8% and the sizes at
//! least 3 spreads apart, the scan compares each completion's log-likelihood ratio of
//! "1.5x slower" under that mixture (stragglers included) instead of its ln-duration. The
//! earlier and the latest completions are transformed alike, so the comparison stays fair
//! when nothing changed; the mixture only decides how much a slowdown shows (about 1.6
//! times the information per completion of a mean difference, for 30% of the jobs 2.5x
//! larger). On the bench's `two sizes` family its cold 1.5x median fell from 53 to 28 and its
//! cold false alarms from 0.32 to 0.24 per 10,000; single-size families are judged exactly as
//! before, but a wide one with 5% stragglers may fit them as a second size (BENCHMARKS.md).
//! Its cost, in a class's first week only: the young state holds up to 900 more numbers
//! (time, value and ratio of 300 completions), the fit adds about 2 µs per completion, and
//! judging under the mixture about 4 µs more (`cargo bench --bench drift_cost -- observe`).
//! [`Detector::rebaseline`] starts a new baseline (after a deploy that changed the run time on
//! purpose) without a restart. Workload families and cold-start numbers: BENCHMARKS.md.
//!
//! Daily profile. The expected ln(duration) at UTC time of day θ (θ = 2π per day) is
//! `location + Σ_k a_k cos kθ + b_k sin kθ`, k = 1..`season_harmonics` (2 by default: a daily
//! and a half-daily wave, 4 coefficients). It is fitted online by ridge regression: each learnt
//! completion updates running means of φφᵀ and of φ·y, where φ = (cos θ, sin θ, cos 2θ, ...)
//! and y is the completion's deviation from `location` Huber-clipped at 2 scales around the
//! current fit (so a straggler moves the profile no more than a 2-scale job), with plain
//! averages while young and a memory of `season_memory` completions (5,000) after; the 4x4
//! system is re-solved (Cholesky) after each update. The ridge is worth `season_prior` (50)
//! completions of "no daily effect", so a young profile is shrunk towards flat. Every
//! completion informs all four coefficients, where the 24 hour bins used before 2026-11-22
//! each saw a 24th of the data: after 3,000 completions the profile is within 0.031 (in ln) of
//! a known cycle at every hour in the tests, against 0.035 to 0.075 for the bins, and false
//! alarms fell by ~20% at every threshold (BENCHMARKS.md). Because the fit uses the Gram
//! matrix of the times actually seen, a class that only runs in office hours is fitted there
//! without bias; the profile elsewhere is an extrapolation, so [`Detector::running_evidence`]
//! looks for the slowest hour only among the hours seen (`season_count`, completions per UTC
//! hour; an hour counts once it holds a tenth of an average hour's completions). A snapshot
//! also carries the profile at each hour's centre (`season_offset`), for reading and for
//! older versions, and a snapshot from before the harmonic profile (hour bins only) seeds the
//! fit on [`Detector::restore`] from its bins, weighted by their counts.
//!
//! Weekly profile and scale (2026-12-01). A weekly profile takes weekday / weekend cycles out
//! of the residual once a whole week has been seen. Since the third pass it is a weekend
//! step: a window of `weekend_hours` (48) starting at one of [`WEEK_STEP_STARTS`] (168, every
//! hour; 84 every 2 h before 2026-12-02) times of the week, its height the least-squares fit
//! of the ln-duration after the daily profile on "inside the window" (centred, so it never
//! moves the level); the start that explains most
//! wins, and its height is used once `week_step_z` (5) standard errors from 0 and shrunk
//! towards 0 near that, so a class without a weekly cycle gets none. It holds a 48 h step
//! right up to its edges, where three harmonics of the week (`week_harmonics`, still there, 0
//! by default) left ±0.1 in ln for hours. It learns through a frozen baseline only in its
//! first `week_open_days` (14): a baseline that has never seen a weekend alerts on its
//! first one and must learn it anyway (in days 7-14 the whole baseline learns through freezes,
//! or a level set by the first days alone could stay frozen for good); after that it learns
//! with the rest of the baseline and through freezes without an alert (below), never while
//! an alert fires, so a slow ramp is not absorbed into the time of the week. The step is
//! centred on the level's own completions (`level_step_centred`, 2026-12-02): the level is
//! their mean, so when they held more weekend
//! than the week does (a class first seen on a weekend, a baseline frozen over weekdays) it is
//! off by the step's height times the difference, and the step, centred on the share of them
//! inside its window (168 running means at the level's rate), puts the expectation right at
//! every time of the week; centred on its own share instead, such a level (0.04-0.06 low on
//! a `weekend -10%` class) kept the baseline frozen after the learning window, the CUSUMs
//! above half their thresholds for good. Two more changes of that day: the step keeps
//! learning while the baseline is frozen without an alert firing (`step_learns_through_freeze`;
//! a freeze stops learning exactly when residuals run high, so a step learnt outside freezes
//! only stayed short of its height on the slow side of the week, while a real shift moves the
//! inside and outside of the window alike), and its shrinkage fades as the 8th power of
//! `week_step_z` / z (`week_step_shrink_power`; James-Stein's square kept a weekend seen once
//! at 80% of its height), with `week_step_z` 5 instead of 4 so that a class without a weekly
//! cycle still gets no step. Until 2026-12-02 the step regressed the deviation from the
//! level; the level is a plain average while young and wobbles with the week after (it
//! learns the weekend's completions as they come), and both went into the step's running
//! means, leaving the slow side of the week under-predicted by ~0.005-0.01 in ln in the
//! class's second and third weeks, where most false alarms of the weekly families started.
//! It now regresses the ln-duration after the daily profile (`step_from_level_free`: the
//! level added back to the clipped deviation, the regression's own intercept absorbing it);
//! with hourly starts, the mature false alarms of `weekly +-10%` fell from 0.151 to 0.093 and
//! of `weekend -10%` from 0.116 to 0.035 per 10,000 on the tuning seeds (BENCHMARKS.md).
//! The scale is a trimmed mean (|residual| among those
//! inside 2.5 scales, divided by its Gaussian value), right with or without stragglers beyond
//! the clip. A 1.12x shift is a larger share of a small scale, and a CUSUM at a fixed
//! threshold then false-alarms more often; its threshold is raised below `threshold_scale`
//! (0.25) by Siegmund's run-length approximation times `calibration_gain` (3), never lowered.
//! Above it the 12x threshold rises by `wide_threshold_slope` (15 nats per unit of scale: 10
//! at 0.45; 10 until 2026-12-02), since on a wide class two 5-8x stragglers in a row reached
//! 7. At 10, 12x evidence was still where 86% of the false alarms of `wide+5% stragglers`
//! and two thirds of `everything`'s started; at 15 they fell from 0.133 to 0.051 and from
//! 0.174 to 0.092 per 10,000 on the tuning seeds, and the 12x delay's maximum grew by about
//! one completion on the wide families, where the oracle shows two completions out of any
//! detector's reach with stragglers (BENCHMARKS.md). The share of
//! stragglers in the null model is learnt (`learn_straggler_share`): online EM, each learnt
//! completion's posterior probability of being a straggler averaged with `straggler_fraction`
//! as a prior worth 500 completions, kept within 0.5-15%.
//!
//! Two job sizes (2026-12-03). A class mixing jobs of two sizes (30% of them 2.5x larger,
//! say) is bimodal in ln: a single lognormal reads a scale of ~0.54 where each size spreads by
//! 0.25, and every completion then carries a fifth of the evidence it could. From
//! `sizes_from` (200) completions on an online EM (`learn_sizes`) fits two Gaussian
//! components of the learnt residuals sharing one spread (responsibilities weighed by how
//! unlikely a completion is to be a straggler; offsets Huber-clipped; the spread a trimmed
//! mean like the scale's), and keeps the mean log-likelihood gain of that mixture over the
//! single spread, judged out of sample over the last ~500 completions. Once mature, with the
//! gain above `sizes_min_gain` (0.03 nats) and each size at least 8%, the CUSUMs of
//! `sizes_cusums` (1.5x to 12x) judge under the mixture, each size with stragglers of its
//! own. On the bench's `two sizes` family the gain reads ~0.09 at 1,000 completions and 0.13
//! at 3,000, on every single-size family under 0.015 (90th percentile at 3,000). Not the
//! 1.12x CUSUM: four to five times sharper under the mixture, its drift under the null is as
//! much more sensitive to a small error in the sizes' offsets, and with it the family's false
//! alarms were 2.1 per 10,000; the thresholds keep following the pooled scale (at the
//! mixture's spread the 12x one fell to 7 nats and false alarms rose to 0.3). The mixture
//! moved that family's 1.5x median from 46 to 20 completions (BENCHMARKS.md).
//!
//! Bursts (2026-12-01). Until then the location learnt from the raw ln-duration's deviation
//! from it, i.e. it was a mean over the times of day the completions happened at. With steady
//! arrivals that mean is the daily mean, but a burst of ~20 completions at one time of day
//! moves it by that time's daily offset at once, and the harmonic profile (orthogonal to a
//! constant over the day) does not take it back: on the bench's `bursty` family the error of
//! the expected ln-duration at the completions' times varied by 0.0095 in ln between series
//! (0.0046 on the reference), 0.017 with bursts at any hour of the day, 0.004 on a bursty class
//! without a daily cycle, and 0.25 false alarms per 10,000 against 0.08. Learnt from the
//! residual after the profiles (`level_from_residual`) it varied by 0.0024, and the false
//! alarms fell to 0.18; with the weekend step centred on the level's own completions, the
//! level now learns after the daily profile only (the merged numbers are in BENCHMARKS.md). Most of the rest is the freeze's selection: the
//! completions that push the evidence past `freeze_fraction` are not learnt from, and in a
//! burst they are where the profile is low; deciding on the evidence before the completion
//! (`freeze_on_past_evidence`, off by default) gives 0.135, at one completion of ramp delay
//! on the reference (BENCHMARKS.md).
//!
//! The profile's band (2026-12-02). On that family 38% of the remaining false alarms started
//! in the few hours past the end of the day's window of bursts (3% of completions: long
//! bursts run on after it), where the harmonic fit extrapolates from the hours it has seen
//! and was off by 0.035-0.07 in ln (a quarter of a scale) for good. A residual is now judged
//! against the upper end of the profile's own band there: `profile_leverage_z` (4) times
//! scale·√(excess leverage / n), the excess being φᵀ(M + ridge)⁻¹φ beyond 1.5 times what an
//! evenly seen day gives every hour (the number of terms). A class completing at every hour
//! is judged exactly as before; the `bursty` family's false alarms fell from 0.181 to 0.091
//! per 10,000 on the tuning seeds, its ramp from 95 to 96 completions. One more 4x4 solve
//! per completion.
//!
//! Cost per completion is constant: seven log densities (a few `exp`/`ln` each), two
//! `sin_cos`, two 4x4 Cholesky solves, 336 running means of the weekend step (168 more for the
//! level's shares) and O(1) baseline updates, a microsecond or two; the whole state is
//! ~640 numbers (505 of them the weekend step's; serde-serialisable, so the baseline survives restarts) and can be exported
//! with [`Detector::snapshot`]. For alert texts, [`Detector::baseline`] gives the expected
//! median, p99 and scale at a time of day, and [`Detector::recent_median_s`] the median of the
//! last nine durations.
//!
//! Tuning (benches/drift_eval.rs, BENCHMARKS.md): with 30-minute jobs, sigma 0.25, 2%
//! stragglers and a ±20% daily cycle, pooled over ten seeds: false alarms at ~0.09 per 10,000
//! completions, a 2x step median delay of 5 and a ramp to 3x over 1,000 completions detected
//! after ~100 sit at the limit of what the data allow: each threshold trades its detection
//! delay against false alarms, and the trade-off table is in BENCHMARKS.md. The harmonic
//! profile moved that curve by ~20% fewer false alarms, which the 1.12x threshold (7.75, was
//! 8) spends on the ramp; both targets are met pooled, with little margin. An adaptive-shift
//! CUSUM, a windowed linear-trend GLR, other freeze fractions and even a baseline known
//! exactly land on about the same curve, within about two completions of ramp delay (also in
//! BENCHMARKS.md); the cost is measured by `cargo bench --bench drift_cost`.

use std::fmt;
use std::io::{BufRead, Write};

mod young_sizes;

/// Number of shift sizes in the CUSUM bank.
pub const SHIFTS: usize = 5;
/// Hour-of-day bins: the daily profile is summarised per bin in snapshots, and the bins record
/// which hours of the day the profile has seen.
pub const SEASON_BINS: usize = 24;
/// Most harmonics of the day the profile can hold (`DetectorConfig::season_harmonics`).
pub const MAX_HARMONICS: usize = 3;
/// Coefficients of the daily profile: cos kθ and sin kθ for k = 1..=[`MAX_HARMONICS`].
pub const PROFILE_TERMS: usize = 2 * MAX_HARMONICS;
/// Entries of the profile's packed (lower-triangular) Gram matrix.
pub const PROFILE_GRAM: usize = PROFILE_TERMS * (PROFILE_TERMS + 1) / 2;

const SECONDS_PER_DAY: f64 = 86_400.0;
const SECONDS_PER_WEEK: f64 = 7.0 * SECONDS_PER_DAY;
/// Most harmonics of the week the weekly profile can hold (`DetectorConfig::week_harmonics`).
pub const MAX_WEEK_HARMONICS: usize = MAX_HARMONICS;
/// A day seen evenly gives every time of day a leverage φᵀM⁻¹φ of exactly the number of
/// profile terms (M = I/2, |φ|² = terms/2); the profile's band widens only beyond this
/// multiple of it (`DetectorConfig::profile_leverage_z`), so arrival rates that merely vary
/// through the day leave it alone.
const LEVERAGE_EVEN: f64 = 1.5;
/// Candidate starts of the weekend step, evenly over the week (every hour; every 2 hours, 84,
/// before 2026-12-02).
pub const WEEK_STEP_STARTS: usize = 168;
/// Huber clip, in baseline scales, for the location and profile updates: stragglers pull the
/// baseline by at most this much each, while Gaussian data lose only ~5% efficiency.
const HUBER_CLIP: f64 = 2.0;
/// Clip, in baseline scales, of absolute residuals entering the scale estimate.
const SCALE_CLIP: f64 = 2.5;
/// E[|Z| given |Z| < 2.5] for a standard normal Z: turns the mean absolute residual among those
/// inside the clip (a trimmed mean) into a sigma, whatever the share of stragglers beyond it.
const TRIMMED_ABS_NORMAL_MEAN: f64 = 0.772_421_6;
/// P(|Z| < 2.5) for a standard normal Z: the share inside the clip without stragglers.
const INSIDE_CLIP_NORMAL_SHARE: f64 = 0.987_580_7;
/// Residuals below -3 scales are winsorised: a job that died instantly says nothing about
/// slowness and must not wipe out the evidence gathered by the CUSUMs.
const LOWER_Z_CAP: f64 = 3.0;
/// Durations are clamped to 1 ms so that a 0 s job has a finite logarithm.
const MIN_DURATION_S: f64 = 1e-3;
/// Pseudo-completions of the configured straggler share behind the learnt one.
const STRAGGLER_PRIOR: f64 = 500.0;
/// Bounds of the learnt straggler share.
pub const MIN_STRAGGLER_SHARE: f64 = 0.005;
pub const MAX_STRAGGLER_SHARE: f64 = 0.15;
/// Relative standard error of a scale estimated from n absolute deviations, times sqrt(n):
/// sqrt(π/2 - 1) for the mean absolute deviation of Gaussian data.
const SCALE_RELATIVE_SE: f64 = 0.755_511_4;
const YOUNG_FREEZE_DEFAULT: f64 = 0.5;
/// Running means of the size mixture (`DetectorState::size_moments`).
const SIZE_MOMENTS: usize = 6;
/// The size mixture is used only after learning from this many completions...
const MIN_SIZE_COMPLETIONS: f64 = 300.0;
/// ...and only if each size makes up at least this share (fewer big jobs are stragglers).
const MIN_SIZE_SHARE: f64 = 0.08;
/// Bound, in nats, on one completion's part in the mixture's mean gain.
const SIZE_GAIN_CAP: f64 = 5.0;
/// Completions' worth of the mixture's starting point in its running means.
const SIZE_PRIOR: f64 = 50.0;
/// Memory of the mixture's mean gain, in completions: it judges the mixture as it is now.
const SIZE_GAIN_MEMORY: f64 = 500.0;
/// The young scan's windows (`young_scan_z`), in completions: the latest this many against all before.
pub const SCAN_WINDOWS: [usize; 4] = [10, 20, 40, 80];
/// The young scan compares a window only with at least this many completions before it.
const SCAN_MIN_BEFORE: usize = 50;
/// The young scan's values are Huber-clipped at this many scales around the level.
const SCAN_CLIP: f64 = 2.0;
/// Moments of a set of scanned completions: count, Σy, Σy², Σφ, Σyφ, Σφφᵀ (packed).
const SCAN_MOMENTS: usize = 3 + 2 * PROFILE_TERMS + PROFILE_GRAM;
/// The young scan of two sizes keeps at most this many completions (their windows included).
const SIZES_SCAN_HISTORY: usize = 300;
/// ...fits its mixture once this many of them can be fitted (all but the latest
/// `SIZES_FIT_LAG`), and again every `SIZES_SCAN_REFIT` completions after.
const SIZES_SCAN_FROM: usize = 60;
const SIZES_SCAN_REFIT: u64 = 20;
/// ...and uses it only for sizes at least this many spreads apart: two Gaussians of one spread
/// closer than two are not even bimodal, and such a fit describes a skewed or straggling
/// single size, not two sizes; at 3 rather than 2.5, a class of sizes only 2 spreads apart
/// (where the mixture gains little) raises fewer false alarms in its first week.
const SIZES_SCAN_SEPARATION: f64 = 3.0;
/// ...from all but the latest this many, so a slowdown's first completions are judged under a
/// mixture that has not learnt them (a fit to them would widen its sizes towards them).
const SIZES_FIT_LAG: usize = 40;

/// Tuning of a [`Detector`]. The defaults suit classes whose jobs take minutes to hours and
/// finish a few times per hour; all counts are in completions, not wall-clock time.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct DetectorConfig {
    /// Completions used only for learning: no alert can fire before this many have been seen.
    pub warmup: u64,
    /// Effective memory (completions) of the baseline location and scale once warmed up. Long,
    /// so the baseline follows seasonal evolution of the workload but not a ramp.
    pub baseline_memory: f64,
    /// Effective memory of the daily profile, in completions (all hours together).
    pub season_memory: f64,
    /// Pseudo-count (completions) shrinking the daily profile towards "no daily effect" while
    /// little data has been seen.
    pub season_prior: f64,
    /// Harmonics of the day in the daily profile, 0 (no profile) to [`MAX_HARMONICS`].
    pub season_harmonics: usize,
    /// Scale (standard deviation of ln duration) assumed before any data; 0.3 is typical.
    pub initial_scale: f64,
    /// Floor on the scale: a class with near-constant durations should not alert on a 5%
    /// change just because it is statistically significant.
    pub min_scale: f64,
    /// Share of completions assumed to be stragglers in the null model: the starting value,
    /// and the prior, of the learnt share (`learn_straggler_share`).
    pub straggler_fraction: f64,
    /// Learn the share of stragglers from the class's own completions (online EM on the null
    /// model's mixture, with `straggler_fraction` as a prior worth `STRAGGLER_PRIOR`
    /// completions, kept within [`MIN_STRAGGLER_SHARE`, `MAX_STRAGGLER_SHARE`]).
    pub learn_straggler_share: bool,
    /// A straggler takes at least this multiple of the typical duration.
    pub straggler_min_ratio: f64,
    /// Mean ln-duration of a straggler beyond `straggler_min_ratio` (0.5 with a 2x minimum puts
    /// the typical straggler at 2 * e^0.5 = 3.3x).
    pub straggler_mean_log: f64,
    /// Slowdown ratios of the median that the CUSUM bank is tuned to (each > 1).
    pub shift_ratios: [f64; SHIFTS],
    /// Alarm thresholds (nats of accumulated log-likelihood ratio), one per shift ratio.
    pub thresholds: [f64; SHIFTS],
    /// Most evidence one completion may add to each CUSUM, as a share of its threshold (< 1,
    /// so that one freak job, however extreme, never alerts on its own).
    pub max_share_per_completion: [f64; SHIFTS],
    /// The baseline stops learning while any CUSUM is above this fraction of its threshold.
    pub freeze_fraction: f64,
    /// A firing alert resolves once every CUSUM is at or below this fraction of its threshold.
    pub release_fraction: f64,
    /// Hold-down: an alert, once started, fires for at least this many completions.
    pub min_alert_completions: u64,
    /// Cold start: until this many completions the baseline counts as young, and each
    /// residual is judged against the upper end of the baseline's confidence band (see
    /// module docs, "Cold start"); from here on the detector is exactly the tuned one.
    pub mature_completions: f64,
    /// Width of that band, in standard errors of the young baseline (0: no widening).
    pub young_z: f64,
    /// The young band's margin is computed at the learnt scale up to this one (0: no cap).
    /// The band guards against a young baseline's error, which a CUSUM adds up at
    /// error × shift / scale² nats per completion: at a fixed share of a wide scale that is
    /// less evidence than at a narrow one, and a band proportional to the scale over-guards a
    /// wide class (`wide`'s cold false alarms were 0.007 per 10,000 against a limit of 0.5 while
    /// its cold 1.5x took 78 completions). 0.3 was chosen on tuning seeds (BENCHMARKS.md).
    pub young_band_scale_cap: f64,
    /// While young, the baseline already stops learning at this fraction of a threshold (the
    /// smaller of it and `freeze_fraction`): its plain averages weigh each completion 1/n,
    /// so a step in the first hundreds would otherwise be absorbed before it is reported.
    /// 0.5 (= `freeze_fraction`, i.e. off) by default: earlier freezes leave some young
    /// baselines frozen on a wrong level, which raises false alarms (module docs).
    pub young_freeze_fraction: f64,
    /// Cold start: while young (after `warmup`, before `mature_completions`), a completion is
    /// learnt from only once this many later completions have been judged (0: at once). A
    /// young baseline learns by plain averages, so without the lag a step from the 150th
    /// completion moves the level by a sixth of its height within 30 completions, before its
    /// evidence reaches `freeze_fraction`; with it, the first `young_learning_lag`
    /// completions after a change are judged against a baseline that has not seen any of
    /// them, and when it freezes they are never learnt. Once mature, the completions still
    /// waiting are learnt and the baseline learns at once again.
    pub young_learning_lag: usize,
    /// Cold start: while young, a two-sample scan compares the mean ln-duration (after the
    /// profiles, Huber-clipped) of each of the latest [`SCAN_WINDOWS`] completions with the
    /// mean of every completion before them, in standard errors of that difference (both
    /// means' uncertainty, from the earlier completions' own spread); at this many it alerts
    /// (0: off). A young baseline learns by plain averages and absorbs a step before a CUSUM
    /// against it has gathered its evidence; the scan's earlier mean has not seen the step.
    pub young_scan_z: f64,
    /// The young scan compares a window only with completions spanning at least this many
    /// days before it: until the daily profile has seen a day or so, the level and the time of
    /// day cannot be told apart.
    pub young_scan_span_days: f64,
    /// The young scan ends this many days after its first completion (0: only at maturity):
    /// its earlier completions then span a weekend, which it cannot allow for (the weekly
    /// profile is learnt over the first week).
    pub young_scan_days: f64,
    /// The young scan alerts only for a class whose learnt scale is at least this (0: any):
    /// at a narrower scale the CUSUMs against the young band meet the cold-start targets, and
    /// the scan only added false alarms (`tight+5% stragglers` 0.44 -> 1.0 per 10,000).
    pub young_scan_min_scale: f64,
    /// Cold start, a class of two job sizes: the young scan compares each completion's
    /// log-likelihood ratio of "`young_sizes_shift` times slower" under a mixture of two sizes
    /// fitted to the young completions themselves, in place of its ln-duration, and alerts at
    /// this many standard errors (0: off). Used while the mixture explains the young
    /// completions better than one Gaussian by `young_sizes_min_gain` nats each, after a
    /// penalty for its two extra parameters, with each size at least 8% and the sizes at least
    /// 3 spreads apart (module `young_sizes`).
    pub young_sizes_z: f64,
    /// See `young_sizes_z`.
    pub young_sizes_min_gain: f64,
    /// See `young_sizes_z`: the slowdown the scan's likelihood ratio is for.
    pub young_sizes_shift: f64,
    /// Learn whether the class mixes two job sizes: from `sizes_from` completions on, an
    /// online EM fits two Gaussian components of the residuals sharing one spread (their
    /// shares, offsets and spread, stragglers weighed out), and once mature, if the mixture
    /// has explained each completion better than the single spread by at least
    /// `sizes_min_gain` nats on average (judged out of sample), every completion is judged
    /// under the mixture: a class of 30% jobs 2.5x larger than the rest then has the
    /// evidence of a spread of 0.25 per job, not that of the 0.54 a single lognormal reads.
    pub learn_sizes: bool,
    /// Which CUSUMs judge under the size mixture when it is in use (the others keep the
    /// single spread). Not the 1.12x one: sharper by the ratio of the spreads squared (~4.7
    /// for the 30%-at-2.5x class), its drift under the null is also that much more sensitive
    /// to a small error in the sizes' offsets.
    pub sizes_cusums: [bool; SHIFTS],
    /// Completions after which the size mixture starts learning.
    pub sizes_from: f64,
    /// Mean log-likelihood gain per completion (nats) of the mixture over the single spread
    /// above which the mixture is used.
    pub sizes_min_gain: f64,
    /// Width, in standard errors, of the band a residual is judged against for the daily
    /// profile's own uncertainty where it extrapolates (0: off). At a time of day the class
    /// rarely completes at (past the end of office-hours bursts, say) the harmonic fit is
    /// learnt from a few neighbours and can be off by a quarter of a scale for good, while the
    /// well-seen hours hold it. Its variance there, scale² φᵀ(M + ridge)⁻¹φ / n, is compared
    /// with what an evenly seen day gives (`LEVERAGE_EVEN` times the number of terms), and
    /// only the excess widens the band, so a class completing at every hour is judged exactly
    /// as without it.
    pub profile_leverage_z: f64,
    /// Harmonics of the week in the weekly profile (weekday / weekend cycles), 0 (none) to
    /// [`MAX_WEEK_HARMONICS`]. Used once the baseline has seen a whole week.
    pub week_harmonics: usize,
    /// Scale (sigma of ln duration) the thresholds were tuned at. A CUSUM marked in
    /// `scale_calibrated` raises its threshold when the learnt scale is smaller, so that its
    /// false-alarm rate stays what it was at this scale (see `Detector::threshold`).
    pub threshold_scale: f64,
    /// Which CUSUMs follow the learnt scale that way (the small shifts, where a shift is less
    /// than a scale and the diffusion approximation behind the correction holds).
    pub scale_calibrated: [bool; SHIFTS],
    /// Multiplies that correction: Siegmund's approximation (gain 1) ignores the learnt
    /// baseline's own noise and under-corrects; 3 was chosen on tuning seeds (BENCHMARKS.md).
    pub calibration_gain: f64,
    /// Nats added to each CUSUM's threshold per unit of learnt scale above `threshold_scale`
    /// (the 12x one only, by default): on a wide class (scale 0.45) a 5-8x job is only 4-5
    /// scales out and, with stragglers, two of them in a row reach the 12x threshold; 15 (i.e.
    /// 10 nats instead of 7 at 0.45) was chosen on tuning seeds (BENCHMARKS.md).
    pub wide_threshold_slope: [f64; SHIFTS],
    /// Length of the weekend step, hours (0: no step): the weekly profile holds a step of
    /// this length starting at a learnt time of the week (one of [`WEEK_STEP_STARTS`]) with a
    /// learnt height, so a weekend in any time zone is held where a few harmonics cannot.
    pub weekend_hours: f64,
    /// Effective memory of the weekend step, in completions.
    pub week_memory: f64,
    /// The step is used only once its height is this many standard errors from 0, and shrunk
    /// towards 0 near that (the best of many candidate starts always fits some noise).
    pub week_step_z: f64,
    /// Days from the first completion the weekly profile learnt from during which it keeps
    /// learning while the baseline is frozen (a baseline that has never seen a weekend alerts
    /// on its first one, and must learn it anyway); after them it learns only with the rest
    /// of the baseline (and, with `step_learns_through_freeze`, while no alert fires), so a
    /// slow ramp is not absorbed into the time of the week.
    pub week_open_days: f64,
    /// The level (`location`) learns from the ln-duration's deviation after the daily
    /// profile, i.e. it is the intercept of the daily profile's regression (true), instead of
    /// from the raw deviation from it (false, the behaviour before 2026-12-01). Not after the
    /// weekend step: that is centred on the level's own completions (`level_step_centred`),
    /// and after both the level of a class first seen on its weekend stayed ~0.04 low. With the raw
    /// deviation the level is a mean over the times of day the completions happened at, so
    /// bursts of completions sharing one time of day move it by their burst's daily offset at
    /// once: its error had a standard deviation of ~0.01-0.02 in ln on a bursty class with a
    /// daily cycle, which a harmonic profile (orthogonal to a constant) cannot take back.
    pub level_from_residual: bool,
    /// Whether a completion is learnt from is decided on the evidence before it (true; still
    /// not while an alert fires), instead of after its own residual was added (false): then
    /// the completions that pushed the evidence past `freeze_fraction` are the ones left out,
    /// a selection of high residuals that biases the baseline low where they happen.
    pub freeze_on_past_evidence: bool,
    /// Centre the weekend step on the level's own sample: the level is a mean over the
    /// completions it learnt from, and when those held more (or less) weekend than the week
    /// does (a class first seen on a weekend, a baseline frozen over weekdays) it is off by the
    /// step's height times the difference; the step is therefore centred on the share of the
    /// level's completions inside its window (`level_step_inside`), which makes the expectation
    /// right whatever that share is. `false`: centred on the step's own share, as before
    /// 2026-12-02.
    pub level_step_centred: bool,
    /// How fast the step's shrinkage fades with its significance z: the height is multiplied
    /// by 1 - (`week_step_z` / z)^power. 2 is James-Stein (the step before 2026-12-02, with
    /// `week_step_z` 4: one at 9 standard errors, a weekend seen once, kept at 80% of its
    /// height, which left the slow side of the week under-predicted); 8 keeps a clear step
    /// whole and still shrinks one near the limit. With 8 the limit is 5 (was 4): at 4 the
    /// spurious steps of classes without a weekly cycle, kept nearly whole, slowed the
    /// reference ramp by a completion (BENCHMARKS.md).
    pub week_step_shrink_power: f64,
    /// The weekend step keeps learning while the baseline is frozen but no alert fires, also
    /// after `week_open_days`. A freeze stops learning exactly when the residuals run high, so
    /// a step learnt only outside freezes is censored on its slow side and stays short of its
    /// height (0.02-0.04 in ln at σ 0.25); a real shift moves the inside and the outside of
    /// the window alike and barely moves the step, and a firing alert stops it.
    pub step_learns_through_freeze: bool,
    /// The weekend step regresses the ln-duration after the daily profile (`location` added
    /// back to the clipped residual, the step's own intercept absorbing it) instead of the
    /// deviation from the moving `location`. A young level follows a class's first weekend
    /// (it is a plain average), and regressing on deviations from it left a step learnt in
    /// the first weeks short by 40%, and still ~3% short after 10,000 completions.
    pub step_from_level_free: bool,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        DetectorConfig {
            warmup: 100,
            baseline_memory: 5000.0,
            season_memory: 5000.0,
            season_prior: 50.0,
            season_harmonics: 2,
            initial_scale: 0.3,
            min_scale: 0.03,
            straggler_fraction: 0.02,
            learn_straggler_share: true,
            straggler_min_ratio: 2.0,
            straggler_mean_log: 0.5,
            shift_ratios: [1.12, 1.5, 2.0, 4.0, 12.0],
            thresholds: [7.75, 13.0, 12.0, 16.0, 7.0],
            max_share_per_completion: [0.6, 0.6, 0.6, 0.6, 0.9],
            freeze_fraction: 0.5,
            release_fraction: 0.3,
            min_alert_completions: 10,
            mature_completions: 1000.0,
            young_z: 1.2,
            young_band_scale_cap: 0.3,
            young_freeze_fraction: YOUNG_FREEZE_DEFAULT,
            young_learning_lag: 0,
            young_scan_z: 4.5,
            young_scan_span_days: 1.25,
            young_scan_days: 7.0,
            young_scan_min_scale: 0.3,
            young_sizes_z: 4.0,
            young_sizes_min_gain: 0.01,
            young_sizes_shift: 1.5,
            learn_sizes: true,
            sizes_cusums: [false, true, true, true, true],
            sizes_from: 200.0,
            sizes_min_gain: 0.03,
            profile_leverage_z: 4.0,
            week_harmonics: 0,
            threshold_scale: 0.25,
            scale_calibrated: [true, false, false, false, false],
            calibration_gain: 3.0,
            wide_threshold_slope: [0.0, 0.0, 0.0, 0.0, 15.0],
            weekend_hours: 48.0,
            week_memory: 20_000.0,
            week_step_z: 5.0,
            week_open_days: 14.0,
            level_from_residual: true,
            freeze_on_past_evidence: false,
            level_step_centred: true,
            week_step_shrink_power: 8.0,
            step_learns_through_freeze: true,
            step_from_level_free: true,
        }
    }
}

/// Outcome of one completion.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Verdict {
    /// Strongest evidence of slowdown as a fraction of its alarm threshold, in [0, 1].
    pub score: f64,
    /// True on the completion where an alert starts and on every completion while it fires.
    pub alert: bool,
}

/// The complete state of a [`Detector`] as plain numbers, so a restart can resume where it
/// stopped (`Detector::restore(cfg, detector.snapshot())` continues identically).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DetectorState {
    /// Completions observed (non-finite inputs excluded).
    pub completions: u64,
    /// Robust location of ln(duration), all hours pooled.
    pub location: f64,
    /// Robust scale of the ln-duration residuals after the daily profile.
    pub scale: f64,
    /// The daily profile (deviation of ln(duration) from `location`) at the centre of each UTC
    /// hour, for reading. Filled in by [`Detector::snapshot`] from the harmonic fit below and not
    /// read back, except from a snapshot of a version before 2026-11-22 (24 learnt hour bins,
    /// no harmonic fit), which seeds the fit on [`Detector::restore`].
    pub season_offset: [f64; SEASON_BINS],
    /// Completions learnt from per UTC hour: the hours the profile has seen.
    pub season_count: [f64; SEASON_BINS],
    /// Completions the harmonic daily profile has learnt from (0 in older snapshots).
    #[serde(default)]
    pub profile_count: f64,
    /// Running mean of φφᵀ, packed lower triangle, where φ = (cos θ, sin θ, cos 2θ, sin 2θ, ...)
    /// at the completion's time of day θ (θ = 2π at 24:00 UTC).
    #[serde(default)]
    pub profile_gram: [f64; PROFILE_GRAM],
    /// Running mean of φ times the Huber-clipped deviation of ln(duration) from `location`.
    #[serde(default)]
    pub profile_moment: [f64; PROFILE_TERMS],
    /// The fitted profile: coefficients of cos θ, sin θ, cos 2θ, ... (shrunk, ready to use).
    #[serde(default)]
    pub profile_coef: [f64; PROFILE_TERMS],
    /// CUSUM statistics (nats), one per shift ratio.
    pub cusum: [f64; SHIFTS],
    /// Whether an alert is firing.
    pub firing: bool,
    /// Completions the current alert has been firing for (0 when not firing).
    pub firing_for: u64,
    /// The last [`RECENT`] durations (seconds, after the 1 ms floor), oldest overwritten first.
    #[serde(default)]
    pub recent: [f64; RECENT],
    /// How many of `recent` are filled (at most [`RECENT`]).
    #[serde(default)]
    pub recent_len: usize,
    /// Where the next duration goes in `recent`.
    #[serde(default)]
    pub recent_next: usize,
    /// When the current baseline was started by [`Detector::rebaseline`] (Unix seconds), if it
    /// was: completions of jobs that started before are not learnt from.
    #[serde(default)]
    pub baseline_since_s: Option<f64>,
    /// Time of the first completion the weekly profile learnt from (Unix seconds); the profile
    /// is used once a week has passed since (`None` in older snapshots: from the next one).
    #[serde(default)]
    pub week_since_s: Option<f64>,
    /// Time of the latest completion the weekly profile learnt from.
    #[serde(default)]
    pub week_latest_s: Option<f64>,
    /// Completions the weekly profile has learnt from.
    #[serde(default)]
    pub week_count: f64,
    /// Running mean of ψψᵀ (packed), ψ = (cos ω, sin ω, cos 2ω, ...) at the completion's time of
    /// the week ω (ω = 2π per 7 days of Unix time).
    #[serde(default)]
    pub week_gram: [f64; PROFILE_GRAM],
    /// Running mean of ψ times the Huber-clipped deviation from location and daily profile.
    #[serde(default)]
    pub week_moment: [f64; PROFILE_TERMS],
    /// The fitted weekly profile's coefficients.
    #[serde(default)]
    pub week_coef: [f64; PROFILE_TERMS],
    /// Running share of residuals inside the scale clip, and running mean of the absolute
    /// residual counted only inside it: their ratio is the trimmed mean behind `scale` (0 in
    /// older snapshots: seeded from `scale` on restore).
    #[serde(default)]
    pub scale_inside_share: f64,
    #[serde(default)]
    pub scale_inside_abs: f64,
    /// The weekend step, per candidate start: running share of completions inside its window
    /// and running mean of the deviation (Huber-clipped, after location and daily profile)
    /// times "inside"; with `week_step_level`, the running mean deviation, they give each
    /// candidate's least-squares height (empty in older snapshots: learnt from then on).
    #[serde(default)]
    pub week_step_inside: Vec<f64>,
    #[serde(default)]
    pub week_step_cross: Vec<f64>,
    #[serde(default)]
    pub week_step_level: f64,
    /// The learnt share of stragglers (0 in older snapshots: `straggler_fraction` from then on).
    #[serde(default)]
    pub straggler_share: f64,
    /// Per candidate start of the weekend step, the share of the completions the level learnt
    /// from that lie inside its window, at the level's own learning rate (empty in older
    /// snapshots: seeded from `week_step_inside` on restore).
    #[serde(default)]
    pub level_step_inside: Vec<f64>,
    /// Whether `week_step_cross` and `week_step_level` hold the ln-duration after the daily
    /// profile (`step_from_level_free`) or the deviation from `location` (false in older
    /// snapshots); [`Detector::restore`] converts between the two.
    #[serde(default)]
    pub step_level_free: bool,
    /// Completions judged but not yet learnt from (`young_learning_lag`), oldest first: the
    /// completion time and ln-duration of each.
    #[serde(default)]
    pub young_pending: std::collections::VecDeque<[f64; 2]>,
    /// The size mixture's running means (`learn_sizes`): each component's weight, its weight
    /// times its (Huber-clipped) residual, then the weighted share of residuals inside the
    /// spread's clip and their weighted absolute deviation from their component (empty until
    /// `sizes_from`, and in older snapshots).
    #[serde(default)]
    pub size_moments: Vec<f64>,
    /// Completions the size mixture has learnt from.
    #[serde(default)]
    pub size_count: f64,
    /// Running mean of the log-likelihood gain of the mixture over the single spread.
    #[serde(default)]
    pub size_gain: f64,
    /// The young scan (`young_scan_z`): the latest completions' time and clipped ln-duration
    /// (less `scan_ref`), oldest first, at most the largest window; the moments of every
    /// young completion, then of each window (`SCAN_MOMENTS` numbers each, see
    /// `scan_moments_add`), from which the values after the *current* daily profile follow.
    #[serde(default)]
    pub scan_recent: std::collections::VecDeque<[f64; 2]>,
    #[serde(default)]
    pub scan_moments: Vec<f64>,
    /// The first scanned ln-duration, subtracted from the others (for the sums' precision).
    #[serde(default)]
    pub scan_ref: f64,
    /// Time of the first scanned completion (Unix seconds); the scan's state is dropped
    /// `young_scan_days` after it, and at maturity.
    #[serde(default)]
    pub scan_since_s: Option<f64>,
    /// The young scan's latest largest z as a fraction of `young_scan_z` (0 when off or mature).
    #[serde(default)]
    pub scan_ratio: f64,
    /// The young scan of two sizes (`young_sizes_z`): the latest young completions' time,
    /// ln-duration after the weekly profile (less `scan_ref`, not clipped) and log-likelihood
    /// ratio under the mixture, oldest first, at most `SIZES_SCAN_HISTORY`.
    #[serde(default)]
    pub scan_values: std::collections::VecDeque<[f64; 3]>,
    /// The mixture last fitted to them (share of the larger size, the two offsets, the
    /// spread; empty before the first fit) and its gain over one Gaussian.
    #[serde(default)]
    pub scan_sizes: Vec<f64>,
    #[serde(default)]
    pub scan_sizes_gain: f64,
}

/// Number of recent durations kept for [`Detector::recent_median_s`].
pub const RECENT: usize = 9;

/// The baseline a completion is compared with, for alert texts. See [`Detector::baseline`].
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Baseline {
    /// Typical (median) duration at that time of day, seconds, daily profile included.
    pub median_s: f64,
    /// 99th percentile of the duration at that time of day under the detector's null model
    /// (lognormal core plus the assumed share of stragglers), seconds.
    pub p99_s: f64,
    /// Robust standard deviation of ln(duration) around the baseline (0.25 means a typical job
    /// lands within about 0.78x..1.28x of the median).
    pub scale: f64,
}

/// Incremental latency drift detector for one job class. See the module docs for the method.
#[derive(Clone, Debug)]
pub struct Detector {
    cfg: DetectorConfig,
    st: DetectorState,
    /// The weekend step in use (derived from the state, recomputed on restore).
    step: WeekStep,
}

impl Detector {
    pub fn new(cfg: DetectorConfig) -> Self {
        let st = DetectorState {
            completions: 0,
            location: 0.0,
            scale: cfg.initial_scale,
            season_offset: [0.0; SEASON_BINS],
            season_count: [0.0; SEASON_BINS],
            profile_count: 0.0,
            profile_gram: [0.0; PROFILE_GRAM],
            profile_moment: [0.0; PROFILE_TERMS],
            profile_coef: [0.0; PROFILE_TERMS],
            cusum: [0.0; SHIFTS],
            firing: false,
            firing_for: 0,
            recent: [0.0; RECENT],
            recent_len: 0,
            recent_next: 0,
            baseline_since_s: None,
            week_since_s: None,
            week_latest_s: None,
            week_count: 0.0,
            week_gram: [0.0; PROFILE_GRAM],
            week_moment: [0.0; PROFILE_TERMS],
            week_coef: [0.0; PROFILE_TERMS],
            scale_inside_share: 0.0,
            scale_inside_abs: 0.0,
            week_step_inside: Vec::new(),
            week_step_cross: Vec::new(),
            week_step_level: 0.0,
            straggler_share: 0.0,
            level_step_inside: Vec::new(),
            step_level_free: cfg.step_from_level_free,
            young_pending: std::collections::VecDeque::new(),
            size_moments: Vec::new(),
            size_count: 0.0,
            size_gain: 0.0,
            scan_recent: std::collections::VecDeque::new(),
            scan_moments: Vec::new(),
            scan_ref: 0.0,
            scan_since_s: None,
            scan_ratio: 0.0,
            scan_values: std::collections::VecDeque::new(),
            scan_sizes: Vec::new(),
            scan_sizes_gain: 0.0,
        };
        let mut detector = Detector { cfg, st, step: WeekStep::default() };
        detector.seed_trimmed_scale();
        detector.fit_week_step();
        detector
    }

    /// Resumes from a [`Detector::snapshot`]; `cfg` should be the configuration it ran with. A
    /// snapshot of a version before 2026-11-22 (hour bins, no harmonic fit) seeds the fit with
    /// its bins, weighted by their counts.
    pub fn restore(cfg: DetectorConfig, state: DetectorState) -> Self {
        let mut detector = Detector { cfg, st: state, step: WeekStep::default() };
        detector.upgrade_week_step();
        detector.fit_week_step();
        if detector.st.level_step_inside.len() != WEEK_STEP_STARTS && detector.has_week_step() {
            // The best guess for an older snapshot: the step's own share, or a weekend's.
            let nominal = detector.cfg.weekend_hours / (7.0 * 24.0);
            let seen = detector.st.week_step_inside.iter().any(|&p| p > 0.0);
            detector.st.level_step_inside =
                if seen { detector.st.week_step_inside.clone() } else { vec![nominal; WEEK_STEP_STARTS] };
        }
        let binned: f64 = detector.st.season_count.iter().sum();
        if detector.st.profile_count == 0.0 && binned > 0.0 {
            detector.seed_profile_from_bins(binned);
        }
        if detector.st.scale_inside_share <= 0.0 {
            detector.seed_trimmed_scale();
        }
        detector
    }

    /// The whole state as plain data (`season_offset` holds the profile at each hour's centre).
    pub fn snapshot(&self) -> DetectorState {
        let mut st = self.st.clone();
        st.season_offset = self.profile_at_bin_centres();
        st
    }

    pub fn config(&self) -> &DetectorConfig {
        &self.cfg
    }

    pub fn is_alerting(&self) -> bool {
        self.st.firing
    }

    /// Feeds one completed job: its completion time (Unix seconds, UTC; only the time of day
    /// is used) and its duration in seconds. Durations under 1 ms count as 1 ms; a non-finite
    /// time or duration is ignored and the current verdict is returned unchanged.
    pub fn observe(&mut self, timestamp_unix_s: f64, value_s: f64) -> Verdict {
        if !(timestamp_unix_s.is_finite() && value_s.is_finite()) {
            return self.verdict();
        }
        if self.st.baseline_since_s.is_some_and(|since| timestamp_unix_s - value_s < since) {
            // Started before the baseline was restarted: it belongs to the old baseline.
            return self.verdict();
        }
        let value_s = value_s.max(MIN_DURATION_S);
        self.remember(value_s);
        let x = value_s.ln();
        self.st.completions += 1;
        if self.st.completions == 1 {
            self.st.location = x;
            self.learn_level_share(timestamp_unix_s, 1.0);
            return self.verdict();
        }
        let (basis, week_basis, weekly, residual) = self.residual_at(timestamp_unix_s, x);
        let may_learn_before = self.baseline_may_learn();
        self.scan(timestamp_unix_s, x, &basis, weekly, residual);
        if self.warmed_up() {
            let margin = self.leverage_margin(&basis);
            self.accumulate(residual - margin);
            self.update_alert();
        }
        let may_learn = if self.cfg.freeze_on_past_evidence {
            may_learn_before && !self.st.firing
        } else {
            self.baseline_may_learn()
        };
        if self.lags_learning() {
            self.st.young_pending.push_back([timestamp_unix_s, x]);
            if self.st.young_pending.len() > self.cfg.young_learning_lag {
                if let Some([t, x]) = self.st.young_pending.pop_front() {
                    self.learn_later(t, x, may_learn);
                }
            }
        } else {
            while let Some([t, x]) = self.st.young_pending.pop_front() {
                self.learn_later(t, x, may_learn);
            }
            self.learn_if(may_learn, x, timestamp_unix_s, &basis, residual);
        }
        // The weekly profile learns through freezes only while it is new: the first weekend
        // looks like drift to a baseline that has never seen one, and would otherwise never be
        // learnt; after `week_open_days` it learns with the rest of the baseline, or through a
        // freeze without an alert (`step_learns_through_freeze`), so a slow ramp is not
        // absorbed into the time of the week once it alerts.
        let through_freeze = self.cfg.step_learns_through_freeze && !self.st.firing;
        if may_learn || through_freeze || self.week_open(timestamp_unix_s) {
            let deviation = huber(residual, self.scale());
            self.learn_week(timestamp_unix_s, &week_basis, weekly, deviation);
        }
        self.verdict()
    }

    /// Whether completions wait before they are learnt from (`young_learning_lag`): only
    /// after warm-up, while the baseline is young.
    fn lags_learning(&self) -> bool {
        self.cfg.young_learning_lag > 0
            && self.warmed_up()
            && (self.st.completions as f64) < self.cfg.mature_completions
    }

    /// Learns from a completion that waited (`young_learning_lag`), with its residual against
    /// the baseline as it is now (it is still out of sample), if the baseline may learn now.
    fn learn_later(&mut self, timestamp_unix_s: f64, x: f64, may_learn: bool) {
        let (basis, _, _, residual) = self.residual_at(timestamp_unix_s, x);
        self.learn_if(may_learn, x, timestamp_unix_s, &basis, residual);
    }

    /// The residual of ln-duration `x` completed at `timestamp_unix_s` against the baseline as
    /// it is now, with the daily and weekly bases and the weekly offset it used.
    fn residual_at(&self, timestamp_unix_s: f64, x: f64) -> ([f64; PROFILE_TERMS], [f64; PROFILE_TERMS], f64, f64) {
        let basis = harmonic_basis(day_fraction(timestamp_unix_s));
        let week_basis = harmonic_basis(week_fraction(timestamp_unix_s));
        let weekly = self.weekly(timestamp_unix_s, &week_basis);
        let residual = x - self.st.location - self.profile(&basis) - weekly;
        (basis, week_basis, weekly, residual)
    }

    fn learn_if(
        &mut self,
        may_learn: bool,
        x: f64,
        timestamp_unix_s: f64,
        basis: &[f64; PROFILE_TERMS],
        residual: f64,
    ) {
        // In the weekly profile's second week (active, still open) the whole baseline learns
        // through freezes too: the weekend step is centred (it cannot move the level), so a
        // baseline whose level was set by the first days alone (a weekend, say) would
        // otherwise stay frozen on the wrong level for good.
        if may_learn || (self.week_active() && self.week_open(timestamp_unix_s)) {
            self.learn(x, timestamp_unix_s, basis, residual);
        }
    }

    /// Completions the baseline has had the chance to learn from: those observed, less those
    /// still waiting (`young_learning_lag`).
    fn learnt_completions(&self) -> u64 {
        self.st.completions.saturating_sub(self.st.young_pending.len() as u64)
    }

    /// How unusual a job that is still running after `elapsed_s` is: the robust z-score of
    /// ln(elapsed) against the baseline at its slowest hour of day (so the answer does not
    /// depend on when the job started). Gaussian reading: 3 is slower than 99.9% of normal
    /// jobs; stragglers at 5x reach about ln(5)/scale (6.4 at scale 0.25), so alerting on a
    /// single running job needs a threshold beyond that. Returns 0 until warm-up is over.
    pub fn running_evidence(&self, elapsed_s: f64) -> f64 {
        if !self.warmed_up() || !elapsed_s.is_finite() {
            return 0.0;
        }
        let (margin, scale) = self.judged();
        let expected = self.st.location + self.slowest_hour_offset() + self.slowest_weekly_offset() + margin;
        (elapsed_s.max(MIN_DURATION_S).ln() - expected) / scale
    }

    /// Starts a new baseline now (Unix seconds), e.g. after a deploy that changed the class's
    /// run time on purpose: everything learnt is forgotten and the detector warms up again
    /// (silent for `warmup` completions, young after), keeping only the recent durations (for
    /// alert texts) and the learnt scale as the new baseline's starting value. A firing alert
    /// ends. Completions of jobs that started before `now` are ignored from then on: they ran
    /// the old version. A non-finite `now` restarts without that filter.
    pub fn rebaseline(&mut self, now_unix_s: f64) {
        let mut fresh = Detector::new(self.cfg.clone());
        fresh.st.scale = self.st.scale;
        fresh.seed_trimmed_scale();
        fresh.st.recent = self.st.recent;
        fresh.st.recent_len = self.st.recent_len;
        fresh.st.recent_next = self.st.recent_next;
        fresh.st.baseline_since_s = now_unix_s.is_finite().then_some(now_unix_s);
        self.st = fresh.st;
    }

    /// Completions the current baseline has seen (since the start or the last rebaseline).
    pub fn completions(&self) -> u64 {
        self.st.completions
    }

    /// The baseline at this time of day (Unix seconds, UTC), or `None` during warm-up.
    pub fn baseline(&self, timestamp_unix_s: f64) -> Option<Baseline> {
        if !self.warmed_up() || !timestamp_unix_s.is_finite() {
            return None;
        }
        let expected = self.expected_ln(timestamp_unix_s);
        let model = self.null_model(self.scale(), true);
        Some(Baseline { median_s: expected.exp(), p99_s: (expected + model.quantile(0.99)).exp(), scale: self.scale() })
    }

    /// Median of the last [`RECENT`] observed durations (fewer at the start), seconds; `None`
    /// before the first completion. Warm-up completions count.
    pub fn recent_median_s(&self) -> Option<f64> {
        let n = self.st.recent_len.min(RECENT);
        if n == 0 {
            return None;
        }
        let mut values = self.st.recent;
        let values = &mut values[..n];
        values.sort_by(f64::total_cmp);
        Some(if n % 2 == 1 { values[n / 2] } else { 0.5 * (values[n / 2 - 1] + values[n / 2]) })
    }

    /// How many of the last [`RECENT`] durations (fewer at the start) were longer than
    /// `limit_s`, and how many there are: the tail behind a drift the median does not show.
    pub fn recent_beyond(&self, limit_s: f64) -> (usize, usize) {
        let n = self.st.recent_len.min(RECENT);
        (self.st.recent[..n].iter().filter(|&&v| v > limit_s).count(), n)
    }

    fn remember(&mut self, value_s: f64) {
        let next = self.st.recent_next % RECENT;
        self.st.recent[next] = value_s;
        self.st.recent_next = (next + 1) % RECENT;
        self.st.recent_len = (self.st.recent_len + 1).min(RECENT);
    }

    fn warmed_up(&self) -> bool {
        self.st.completions > self.cfg.warmup
    }

    fn scale(&self) -> f64 {
        self.st.scale.max(self.cfg.min_scale)
    }

    /// Cold start: `young_z` times how much larger a standard error of the young baseline is
    /// than that of a mature one, per unit of scale: sqrt(1/n - 1/mature) (0 once mature).
    fn youth(&self) -> f64 {
        let n = self.learnt_completions().max(1) as f64;
        let excess = 1.0 / n - 1.0 / self.cfg.mature_completions.max(1.0);
        self.cfg.young_z.max(0.0) * excess.max(0.0).sqrt()
    }

    /// What a residual is judged against: (margin, scale). The margin is the upper end of the
    /// expected ln-duration's confidence band beyond a mature one's: the location and each
    /// profile coefficient carry about scale²/n of variance each (φ has mean square 1/2 per
    /// term), so the expectation at any time of day about (1 + terms) scale²/n; the scale is
    /// the upper end of its own band. Both are exactly the learnt ones once mature.
    /// The weekend step counts as two parameters (its start and height).
    fn judged(&self) -> (f64, f64) {
        let (youth, scale) = (self.youth(), self.scale());
        let active = self.week_active();
        let week_terms = if active { self.week_terms() + 2 * usize::from(self.step.height != 0.0) } else { 0 };
        let parameters = (1 + self.profile_terms() + week_terms) as f64;
        let band_scale =
            if self.cfg.young_band_scale_cap > 0.0 { scale.min(self.cfg.young_band_scale_cap) } else { scale };
        (youth * parameters.sqrt() * band_scale, scale * (1.0 + youth * SCALE_RELATIVE_SE))
    }

    fn verdict(&self) -> Verdict {
        let score = self.evidence_ratio().max(self.st.scan_ratio);
        Verdict { score: score.clamp(0.0, 1.0), alert: self.st.firing }
    }

    /// The young scan (`young_scan_z`): takes in a completion (before the baseline learns it)
    /// and sets `scan_ratio`, the largest window's z over `young_scan_z` (0 once mature,
    /// before warm-up, or off). Each value is the ln-duration after the weekly profile, clipped
    /// at `SCAN_CLIP` scales around the expectation, less the daily profile *as learnt now*:
    /// the moments are linear in the profile's coefficients, so earlier completions are judged
    /// as if the profile had been known then (before its first day, the level and the time of
    /// day are confounded, and values against the profile of the time compare unlike hours).
    fn scan(&mut self, timestamp_unix_s: f64, x: f64, basis: &[f64; PROFILE_TERMS], weekly: f64, residual: f64) {
        let young = (self.st.completions as f64) < self.cfg.mature_completions;
        let days = self.st.scan_since_s.map_or(0.0, |since| (timestamp_unix_s - since) / SECONDS_PER_DAY);
        let over = self.cfg.young_scan_days > 0.0 && days > self.cfg.young_scan_days;
        if self.cfg.young_scan_z <= 0.0 || !young || over {
            self.st.scan_ratio = 0.0;
            if !self.st.scan_recent.is_empty() || !self.st.scan_moments.is_empty() || !self.st.scan_values.is_empty() {
                self.st.scan_recent = std::collections::VecDeque::new();
                self.st.scan_moments = Vec::new();
                self.st.scan_values = std::collections::VecDeque::new();
                self.st.scan_sizes = Vec::new();
            }
            return;
        }
        let windows = SCAN_WINDOWS.len();
        if self.st.scan_moments.len() != SCAN_MOMENTS * (1 + windows) || self.st.scan_since_s.is_none() {
            self.st.scan_moments = vec![0.0; SCAN_MOMENTS * (1 + windows)];
            self.st.scan_recent.clear();
            self.st.scan_values.clear();
            self.st.scan_sizes.clear();
            self.st.scan_ref = x;
            self.st.scan_since_s = Some(timestamp_unix_s);
        }
        let clip = SCAN_CLIP * self.scale();
        let y = x - weekly - residual + residual.clamp(-clip, clip) - self.st.scan_ref;
        let sizes_ratio = self.scan_sizes(timestamp_unix_s, x - weekly - self.st.scan_ref);
        self.st.scan_recent.push_back([timestamp_unix_s, y]);
        let held = self.st.scan_recent.len();
        scan_moments_add(&mut self.st.scan_moments[..SCAN_MOMENTS], y, basis, 1.0);
        for (k, &w) in SCAN_WINDOWS.iter().enumerate() {
            let m = &mut self.st.scan_moments[SCAN_MOMENTS * (1 + k)..SCAN_MOMENTS * (2 + k)];
            scan_moments_add(m, y, basis, 1.0);
            if held > w {
                let [t, old] = self.st.scan_recent[held - 1 - w];
                scan_moments_add(m, old, &harmonic_basis(day_fraction(t)), -1.0);
            }
        }
        if held > SCAN_WINDOWS[windows - 1] {
            self.st.scan_recent.pop_front();
        }
        let held = self.st.scan_recent.len();
        self.st.scan_ratio = 0.0;
        if !self.warmed_up() || self.scale() < self.cfg.young_scan_min_scale {
            return;
        }
        let since = self.st.scan_since_s.unwrap_or(timestamp_unix_s);
        let n = self.profile_terms();
        let coef = self.st.profile_coef;
        let total = &self.st.scan_moments[..SCAN_MOMENTS];
        let mut best = f64::NEG_INFINITY;
        for (k, &w) in SCAN_WINDOWS.iter().enumerate() {
            if held < w {
                continue;
            }
            let inside = &self.st.scan_moments[SCAN_MOMENTS * (1 + k)..SCAN_MOMENTS * (2 + k)];
            let before: [f64; SCAN_MOMENTS] = std::array::from_fn(|i| total[i] - inside[i]);
            let before_n = before[0];
            let window_from_s = self.st.scan_recent[held - w][0];
            let span_days = (window_from_s - since) / SECONDS_PER_DAY;
            if before_n < SCAN_MIN_BEFORE as f64 || span_days < self.cfg.young_scan_span_days {
                continue;
            }
            let (inside_sum, _) = scan_sums(inside, &coef, n);
            let (before_sum, before_sq) = scan_sums(&before, &coef, n);
            best = best.max(two_sample_z(inside_sum, w as f64, before_sum, before_sq, before_n));
        }
        if best.is_finite() {
            self.st.scan_ratio = (best / self.cfg.young_scan_z).max(0.0);
        }
        if let Some(ratio) = sizes_ratio {
            self.st.scan_ratio = ratio;
        }
    }

    /// The young scan of a class of two sizes (`young_sizes_z`, module `young_sizes`): takes
    /// in a completion's ln-duration after the weekly profile (less `scan_ref`), refits the
    /// mixture now and then, and returns the largest window's z over `young_sizes_z` while the
    /// mixture is in use (`None` otherwise: the plain scan's verdict stands).
    fn scan_sizes(&mut self, timestamp_unix_s: f64, y: f64) -> Option<f64> {
        if self.cfg.young_sizes_z <= 0.0 {
            return None;
        }
        let n_terms = self.profile_terms();
        let coef = self.st.profile_coef;
        let after_profile = |t: f64, y: f64| {
            let basis = harmonic_basis(day_fraction(t));
            y - (0..n_terms).map(|i| coef[i] * basis[i]).sum::<f64>()
        };
        if self.st.scan_values.len() == SIZES_SCAN_HISTORY {
            self.st.scan_values.pop_front();
        }
        self.st.scan_values.push_back([timestamp_unix_s, y, 0.0]);
        let held = self.st.scan_values.len();
        let sizes_of = |v: &[f64]| Sizes { weights: [1.0 - v[0], v[0]], offsets: [v[1], v[2]], sigma: v[3] };
        let fitted = held.saturating_sub(SIZES_FIT_LAG);
        if fitted >= SIZES_SCAN_FROM
            && (self.st.scan_sizes.is_empty() || self.st.completions.is_multiple_of(SIZES_SCAN_REFIT))
        {
            let values: Vec<f64> = self.st.scan_values.iter().map(|&[t, y, _]| after_profile(t, y)).collect();
            let start = (self.st.scan_sizes.len() == 4).then(|| sizes_of(&self.st.scan_sizes));
            if let Some((sizes, gain)) = young_sizes::fit(&values[..fitted], start, self.cfg.min_scale) {
                self.st.scan_sizes = vec![sizes.weights[1], sizes.offsets[0], sizes.offsets[1], sizes.sigma];
                self.st.scan_sizes_gain = gain;
                if self.sizes_scan_in_use() {
                    let llr = self.sizes_llr(&sizes);
                    for (entry, value) in self.st.scan_values.iter_mut().zip(values) {
                        entry[2] = llr(value);
                    }
                }
            }
        } else if self.sizes_scan_in_use() {
            let llr = self.sizes_llr(&sizes_of(&self.st.scan_sizes));
            let value = llr(after_profile(timestamp_unix_s, y));
            if let Some(last) = self.st.scan_values.back_mut() {
                last[2] = value;
            }
        }
        if !self.sizes_scan_in_use() {
            return None;
        }
        if !self.warmed_up() || self.scale() < self.cfg.young_scan_min_scale {
            return Some(0.0);
        }
        let since = self.st.scan_since_s.unwrap_or(timestamp_unix_s);
        let (mut total, mut total_sq) = (0.0, 0.0);
        for &[_, _, llr] in &self.st.scan_values {
            total += llr;
            total_sq += llr * llr;
        }
        let mut best = f64::NEG_INFINITY;
        let (mut inside, mut inside_sq, mut taken) = (0.0, 0.0, 0);
        for &w in SCAN_WINDOWS.iter() {
            if held < w {
                break;
            }
            while taken < w {
                let llr = self.st.scan_values[held - 1 - taken][2];
                inside += llr;
                inside_sq += llr * llr;
                taken += 1;
            }
            let before_n = (held - w) as f64;
            let window_from_s = self.st.scan_values[held - w][0];
            if before_n < SCAN_MIN_BEFORE as f64
                || (window_from_s - since) / SECONDS_PER_DAY < self.cfg.young_scan_span_days
            {
                continue;
            }
            best = best.max(two_sample_z(inside, w as f64, total - inside, total_sq - inside_sq, before_n));
        }
        Some(if best.is_finite() { (best / self.cfg.young_sizes_z).max(0.0) } else { 0.0 })
    }

    /// Whether the young scan judges under its size mixture (`young_sizes_z`): fitted, better
    /// than one Gaussian by `young_sizes_min_gain`, each size at least `MIN_SIZE_SHARE`, the
    /// sizes `SIZES_SCAN_SEPARATION` spreads apart.
    /// The completions' likelihood ratios are computed (and kept up to date) only then.
    fn sizes_scan_in_use(&self) -> bool {
        self.st.scan_sizes.len() == 4
            && self.st.scan_sizes_gain >= self.cfg.young_sizes_min_gain
            && self.st.scan_sizes[0].min(1.0 - self.st.scan_sizes[0]) >= MIN_SIZE_SHARE
            && (self.st.scan_sizes[2] - self.st.scan_sizes[1]).abs() >= SIZES_SCAN_SEPARATION * self.st.scan_sizes[3]
    }

    /// A value's log-likelihood ratio of "`young_sizes_shift` times slower" against
    /// "unchanged" under `sizes` (each size with the class's stragglers).
    fn sizes_llr(&self, sizes: &Sizes) -> impl Fn(f64) -> f64 {
        let model = NullModel::new(sizes.sigma, self.straggler_share(), &self.cfg).with_sizes(sizes);
        let shift = self.cfg.young_sizes_shift.max(1.0).ln();
        move |u| model.ln_density(u - shift) - model.ln_density(u)
    }

    /// The largest CUSUM as a fraction of its threshold.
    fn evidence_ratio(&self) -> f64 {
        self.st
            .cusum
            .iter()
            .zip(self.thresholds().iter())
            .map(|(s, h)| s / h.max(f64::MIN_POSITIVE))
            .fold(0.0, f64::max)
    }

    fn expected_ln(&self, timestamp_unix_s: f64) -> f64 {
        let week_basis = harmonic_basis(week_fraction(timestamp_unix_s));
        self.st.location
            + self.profile(&harmonic_basis(day_fraction(timestamp_unix_s)))
            + self.weekly(timestamp_unix_s, &week_basis)
    }

    /// Brings the weekend step's running means of an older snapshot to this version: starts
    /// every 2 hours (84, before 2026-12-02) become hourly ones, the odd hours the mean of
    /// their neighbours (exact when the week is sampled evenly); and the regression target
    /// moves to or from the level-free one by adding or taking away `location`, which leaves
    /// every candidate's covariance, hence its height, as it was.
    fn upgrade_week_step(&mut self) {
        for v in [&mut self.st.week_step_inside, &mut self.st.week_step_cross, &mut self.st.level_step_inside] {
            if v.len() * 2 == WEEK_STEP_STARTS {
                let old = std::mem::take(v);
                *v = (0..WEEK_STEP_STARTS)
                    .map(|k| if k % 2 == 0 { old[k / 2] } else { 0.5 * (old[k / 2] + old[(k / 2 + 1) % old.len()]) })
                    .collect();
            }
        }
        if self.st.step_level_free != self.cfg.step_from_level_free {
            let added = if self.cfg.step_from_level_free { self.st.location } else { -self.st.location };
            if self.st.week_step_cross.len() == WEEK_STEP_STARTS && self.st.week_step_inside.len() == WEEK_STEP_STARTS {
                self.st.week_step_level += added;
                for (cross, inside) in self.st.week_step_cross.iter_mut().zip(&self.st.week_step_inside) {
                    *cross += added * inside;
                }
            }
            self.st.step_level_free = self.cfg.step_from_level_free;
        }
    }

    /// Whether the weekly profile is still new enough to learn through a frozen baseline.
    fn week_open(&self, timestamp_unix_s: f64) -> bool {
        self.st.week_since_s.is_none_or(|since| timestamp_unix_s - since < self.cfg.week_open_days * SECONDS_PER_DAY)
    }

    fn has_week_step(&self) -> bool {
        self.cfg.weekend_hours > 0.0 && self.cfg.weekend_hours < 7.0 * 24.0
    }

    /// Whether the time of the week `week_fraction` lies in the window of candidate start `k`.
    fn in_step_window(&self, week_fraction: f64, k: usize) -> bool {
        let starts = WEEK_STEP_STARTS as f64;
        let mut since = week_fraction * starts - k as f64;
        if since < 0.0 {
            since += starts;
        }
        since * (7.0 * 24.0 / starts) < self.cfg.weekend_hours
    }

    /// Refits the weekend step from the running means: for each candidate start, the
    /// least-squares height of "inside the window" (centred) against the deviation; the start
    /// explaining most of it wins, and its height is used once significant (`week_step_z`),
    /// shrunk towards 0 near the limit (James-Stein style: height × (1 - z₀²/z²)).
    fn fit_week_step(&mut self) {
        self.step = WeekStep::default();
        if !self.has_week_step() {
            return;
        }
        if self.st.week_step_inside.len() != WEEK_STEP_STARTS || self.st.week_step_cross.len() != WEEK_STEP_STARTS {
            self.st.week_step_inside = vec![0.0; WEEK_STEP_STARTS];
            self.st.week_step_cross = vec![0.0; WEEK_STEP_STARTS];
            self.st.week_step_level = 0.0;
            return;
        }
        let mut best = (0.0, 0, 0.0, 0.0, 0.0);
        for k in 0..WEEK_STEP_STARTS {
            let p = self.st.week_step_inside[k];
            let variance = p * (1.0 - p);
            if variance < 0.01 {
                continue;
            }
            let covariance = self.st.week_step_cross[k] - self.st.week_step_level * p;
            let explained = covariance * covariance / variance;
            if explained > best.0 {
                best = (explained, k, covariance / variance, p, variance);
            }
        }
        let (_, start, height, inside, variance) = best;
        let remembered = self.st.week_count.min(2.0 * self.cfg.week_memory.max(1.0));
        let se2 = self.scale().powi(2) / (remembered * variance).max(1e-9);
        let z2 = height * height / se2.max(1e-18);
        let limit = self.cfg.week_step_z.max(0.0).powi(2);
        if z2 > limit {
            let shrink = (limit / z2).powf(0.5 * self.cfg.week_step_shrink_power.max(0.0));
            self.step = WeekStep { start, height: height * (1.0 - shrink), inside };
        }
    }

    /// The weekend step at this time of the week (0 when none is used).
    fn step_offset(&self, week_fraction: f64) -> f64 {
        if self.step.height == 0.0 {
            return 0.0;
        }
        let inside = f64::from(u8::from(self.in_step_window(week_fraction, self.step.start)));
        self.step.height * (inside - self.step_centre())
    }

    /// The share of "inside the window" the step in use is centred on: that of the level's
    /// own completions (`level_step_centred`), or of the step's.
    fn step_centre(&self) -> f64 {
        match self.st.level_step_inside.get(self.step.start) {
            Some(&share) if self.cfg.level_step_centred => share,
            _ => self.step.inside,
        }
    }

    /// Moves the level's share inside each candidate window towards this completion's, at the
    /// level's learning rate.
    fn learn_level_share(&mut self, timestamp_unix_s: f64, rate: f64) {
        if !self.has_week_step() {
            return;
        }
        if self.st.level_step_inside.len() != WEEK_STEP_STARTS {
            self.st.level_step_inside = vec![0.0; WEEK_STEP_STARTS];
        }
        let fraction = week_fraction(timestamp_unix_s);
        for k in 0..WEEK_STEP_STARTS {
            let inside = f64::from(u8::from(self.in_step_window(fraction, k)));
            self.st.level_step_inside[k] += rate * (inside - self.st.level_step_inside[k]);
        }
    }

    /// Number of weekly profile coefficients in use.
    fn week_terms(&self) -> usize {
        2 * self.cfg.week_harmonics.min(MAX_WEEK_HARMONICS)
    }

    /// Whether the baseline knows the class's week: its weekly profile has learnt over a whole
    /// week, or none is modelled. Until then a slower weekend cannot be told from drift, and an
    /// alert should say so.
    pub fn knows_its_week(&self) -> bool {
        !(self.week_terms() > 0 || self.has_week_step()) || self.week_active()
    }

    /// Whether the weekly profile is used: once it has learnt over a whole week.
    fn week_active(&self) -> bool {
        match (self.st.week_since_s, self.st.week_latest_s) {
            (Some(since), Some(latest)) => {
                (self.week_terms() > 0 || self.has_week_step()) && latest - since >= SECONDS_PER_WEEK
            }
            _ => false,
        }
    }

    /// The weekly profile at this time (harmonics whose basis is given, plus the step
    /// profile's bin), 0 until it is used.
    fn weekly(&self, timestamp_unix_s: f64, week_basis: &[f64; PROFILE_TERMS]) -> f64 {
        if !self.week_active() {
            return 0.0;
        }
        let n = self.week_terms();
        let harmonic: f64 = week_basis[..n].iter().zip(&self.st.week_coef[..n]).map(|(b, c)| b * c).sum();
        harmonic + self.step_offset(week_fraction(timestamp_unix_s))
    }

    /// The weekly profile at its slowest, over 42 points of the week (0 until it is used).
    fn slowest_weekly_offset(&self) -> f64 {
        if !self.week_active() {
            return 0.0;
        }
        let n = self.week_terms();
        let harmonic = (0..42)
            .map(|k| {
                let basis = harmonic_basis((k as f64 + 0.5) / 42.0);
                basis[..n].iter().zip(&self.st.week_coef[..n]).map(|(b, c)| b * c).sum::<f64>()
            })
            .fold(0.0, f64::max);
        let centre = self.step_centre();
        let step = self.step.height * (1.0 - centre);
        harmonic + step.max(-self.step.height * centre)
    }

    /// Moves the weekly profile at this time of the week towards what the residual says:
    /// `used` is the weekly profile the residual was computed with, `deviation` the residual,
    /// Huber-clipped. Harmonics and bins each learn `used + deviation` minus the other part.
    fn learn_week(&mut self, timestamp_unix_s: f64, week_basis: &[f64; PROFILE_TERMS], used: f64, deviation: f64) {
        let n = self.week_terms();
        let step = self.has_week_step();
        if n == 0 && !step {
            return;
        }
        self.st.week_since_s.get_or_insert(timestamp_unix_s);
        self.st.week_latest_s = Some(self.st.week_latest_s.map_or(timestamp_unix_s, |l| l.max(timestamp_unix_s)));
        self.st.week_count += 1.0;
        let fraction = week_fraction(timestamp_unix_s);
        let step_used = if self.week_active() { self.step_offset(fraction) } else { 0.0 };
        if n > 0 {
            let rate = learning_rate(self.st.week_count, self.cfg.season_memory);
            let target = used - step_used + deviation;
            update_moments(&mut self.st.week_gram, &mut self.st.week_moment, week_basis, n, rate, target);
            let ridge = self.ridge(self.st.week_count);
            solve_ridge(&self.st.week_gram, &self.st.week_moment, n, ridge, &mut self.st.week_coef);
        }
        if step {
            let rate = learning_rate(self.st.week_count, self.cfg.week_memory);
            let level = if self.cfg.step_from_level_free { self.st.location } else { 0.0 };
            let y = level + step_used + deviation;
            self.st.week_step_level += rate * (y - self.st.week_step_level);
            for k in 0..WEEK_STEP_STARTS {
                let inside = f64::from(u8::from(self.in_step_window(fraction, k)));
                self.st.week_step_inside[k] += rate * (inside - self.st.week_step_inside[k]);
                self.st.week_step_cross[k] += rate * (inside * y - self.st.week_step_cross[k]);
            }
            self.fit_week_step();
        }
    }

    /// The ridge of a harmonic fit with `count` completions: worth `season_prior` completions
    /// of "no effect". φ has mean square 1/2 per term, so a ridge of prior / (2 remembered)
    /// shrinks a profile seen everywhere by remembered / (remembered + prior). The floor keeps
    /// the system regular when `season_prior` is 0.
    fn ridge(&self, count: f64) -> f64 {
        (self.cfg.season_prior.max(0.0) / (2.0 * self.remembered(count))).max(1e-9)
    }

    /// Completions a harmonic fit's running means hold after `count`: all of them while young,
    /// `season_memory` after.
    fn remembered(&self, count: f64) -> f64 {
        count.min(self.cfg.season_memory.max(1.0)).max(1.0)
    }

    /// Threshold of CUSUM `j` at the scale a residual is judged with. A CUSUM of shift δ at
    /// noise σ (Δ = δ/σ) with threshold h has an in-control run length of about
    /// exp(h + 1.166 Δ) / (Δ²/2) (Siegmund's approximation); a calibrated CUSUM keeps that of
    /// its configured threshold at `threshold_scale`, h = h₀ + 1.166 (Δ₀ - Δ) + 2 ln(Δ/Δ₀),
    /// and only ever raises it (a smaller scale means more false alarms at a fixed h: twice as
    /// many at 0.15 as at 0.25 for the 1.12x CUSUM, which 8.4 instead of 7.75 corrects).
    fn threshold(&self, j: usize, scale: f64) -> f64 {
        let wider = scale - self.cfg.threshold_scale;
        let h =
            self.cfg.thresholds[j] + if wider > 0.0 { self.cfg.wide_threshold_slope[j].max(0.0) * wider } else { 0.0 };
        if !self.cfg.scale_calibrated[j] || self.cfg.threshold_scale.is_nan() || self.cfg.threshold_scale <= 0.0 {
            return h;
        }
        let shift = self.cfg.shift_ratios[j].max(1.0).ln();
        let (delta, delta0) = (shift / scale.max(1e-9), shift / self.cfg.threshold_scale);
        if delta <= delta0 || delta0 <= 0.0 {
            return h;
        }
        h + self.cfg.calibration_gain.max(0.0) * (1.166 * (delta0 - delta) + 2.0 * (delta / delta0).ln())
    }

    /// Seeds the trimmed-mean scale's running means from `scale` (a new detector, an older
    /// snapshot), as if its residuals had been Gaussian.
    fn seed_trimmed_scale(&mut self) {
        self.st.scale_inside_share = INSIDE_CLIP_NORMAL_SHARE;
        self.st.scale_inside_abs = INSIDE_CLIP_NORMAL_SHARE * TRIMMED_ABS_NORMAL_MEAN * self.st.scale;
    }

    /// Number of profile coefficients in use.
    fn profile_terms(&self) -> usize {
        2 * self.cfg.season_harmonics.min(MAX_HARMONICS)
    }

    /// The daily profile (deviation from `location`) at the time of day whose basis is given.
    fn profile(&self, basis: &[f64; PROFILE_TERMS]) -> f64 {
        let n = self.profile_terms();
        basis[..n].iter().zip(&self.st.profile_coef[..n]).map(|(b, c)| b * c).sum()
    }

    fn profile_at_bin_centres(&self) -> [f64; SEASON_BINS] {
        let bases = bin_centre_bases();
        std::array::from_fn(|bin| self.profile(&bases[bin]))
    }

    /// The profile at its slowest hour among those it has seen (an hour counts once it holds a
    /// tenth of an average hour's completions, so a stray job at an unusual hour does not make
    /// the fit's extrapolation there count); 0 before any.
    fn slowest_hour_offset(&self) -> f64 {
        let seen = 0.1 * self.st.season_count.iter().sum::<f64>() / SEASON_BINS as f64;
        let bases = bin_centre_bases();
        (0..SEASON_BINS)
            .filter(|&bin| self.st.season_count[bin] > 0.0 && self.st.season_count[bin] >= seen)
            .map(|bin| self.profile(&bases[bin]))
            .fold(None, |best: Option<f64>, v| Some(best.map_or(v, |b| b.max(v))))
            .unwrap_or(0.0)
    }

    /// Refits the daily profile from the running means (ridge regression, see `ridge`).
    fn solve_profile(&mut self) {
        let ridge = self.ridge(self.st.profile_count);
        solve_ridge(
            &self.st.profile_gram,
            &self.st.profile_moment,
            self.profile_terms(),
            ridge,
            &mut self.st.profile_coef,
        );
    }

    /// Seeds the harmonic fit from the hour bins of an older snapshot: each bin's learnt offset
    /// counts as its completions' deviation, observed at the bin's centre.
    fn seed_profile_from_bins(&mut self, binned: f64) {
        let bases = bin_centre_bases();
        let mut gram = [0.0; PROFILE_GRAM];
        let mut moment = [0.0; PROFILE_TERMS];
        for (bin, basis) in bases.iter().enumerate() {
            let weight = self.st.season_count[bin] / binned;
            for i in 0..PROFILE_TERMS {
                moment[i] += weight * basis[i] * self.st.season_offset[bin];
                for j in 0..=i {
                    gram[packed(i, j)] += weight * basis[i] * basis[j];
                }
            }
        }
        self.st.profile_gram = gram;
        self.st.profile_moment = moment;
        self.st.profile_count = binned;
        self.solve_profile();
    }

    /// The daily profile's band beyond an evenly seen day's at this time of day (see
    /// `profile_leverage_z`), in ln.
    fn leverage_margin(&self, basis: &[f64; PROFILE_TERMS]) -> f64 {
        let n = self.profile_terms();
        if self.cfg.profile_leverage_z <= 0.0 || n == 0 {
            return 0.0;
        }
        let mut solved = [0.0; PROFILE_TERMS];
        solve_ridge(&self.st.profile_gram, basis, n, self.ridge(self.st.profile_count), &mut solved);
        let leverage: f64 = basis[..n].iter().zip(&solved[..n]).map(|(b, x)| b * x).sum();
        let excess = leverage - LEVERAGE_EVEN * n as f64;
        if excess <= 0.0 {
            return 0.0;
        }
        self.cfg.profile_leverage_z * self.scale() * (excess / self.remembered(self.st.profile_count)).sqrt()
    }

    fn accumulate(&mut self, residual: f64) {
        let (margin, scale) = self.judged();
        // The single spread and, when in use, the size mixture; each CUSUM judges under the
        // one `sizes_cusums` gives it.
        let judge = |model: NullModel| {
            let u = (residual - margin).max(model.lowest_offset() - LOWER_Z_CAP * model.sigma);
            let ln_null = model.ln_density(u);
            let centre = model.mode_offset();
            (model, u, ln_null, centre)
        };
        let single = judge(self.null_model(scale, false));
        let judges = [single, if self.sizes().is_some() { judge(self.null_model(scale, true)) } else { single }];
        let thresholds = self.thresholds();
        for (j, s) in self.st.cusum.iter_mut().enumerate() {
            let (model, u, ln_null, centre) = &judges[usize::from(self.cfg.sizes_cusums[j])];
            let (u, ln_null, centre) = (*u, *ln_null, *centre);
            let shift = self.cfg.shift_ratios[j].max(1.0).ln();
            let single_completion_limit = self.cfg.max_share_per_completion[j].min(1.0) * thresholds[j];
            let llr = if j == SHIFTS - 1 && u > centre + shift {
                // Slower than the largest shift tested is at least that suspicious; the
                // straggler tail would otherwise explain a 12x job that is also a straggler.
                model.ln_density(centre) - model.ln_density(centre + shift)
            } else {
                model.ln_density(u - shift) - ln_null
            };
            let llr = llr.min(single_completion_limit);
            *s = (*s + llr).max(0.0);
            if self.st.firing {
                // Capped while firing so that recovery is noticed within a few completions
                // instead of after paying back hours of excess evidence.
                *s = s.min(thresholds[j]);
            }
        }
    }

    /// Every CUSUM's threshold at the learnt scale (see `threshold`).
    fn thresholds(&self) -> [f64; SHIFTS] {
        // At the pooled scale also under the size mixture: at the sizes' spread the 12x
        // threshold of a 30%-at-2.5x class fell from 11.4 to 7 nats and false alarms rose.
        let scale = self.scale();
        std::array::from_fn(|j| self.threshold(j, scale))
    }

    fn update_alert(&mut self) {
        let ratio = self.evidence_ratio().max(self.st.scan_ratio);
        if self.st.firing {
            let held_long_enough = self.st.firing_for >= self.cfg.min_alert_completions;
            if held_long_enough && ratio <= self.cfg.release_fraction {
                self.st.firing = false;
                self.st.firing_for = 0;
            } else {
                self.st.firing_for += 1;
            }
        } else if ratio >= 1.0 {
            self.st.firing = true;
            self.st.firing_for = 1;
            let thresholds = self.thresholds();
            for (s, h) in self.st.cusum.iter_mut().zip(thresholds.iter()) {
                *s = s.min(*h);
            }
        }
    }

    /// The share of stragglers the null model assumes: learnt, or the configured one.
    fn straggler_share(&self) -> f64 {
        if self.cfg.learn_straggler_share && self.st.straggler_share > 0.0 {
            self.st.straggler_share
        } else {
            self.cfg.straggler_fraction
        }
    }

    fn baseline_may_learn(&self) -> bool {
        !self.warmed_up() || (!self.st.firing && self.evidence_ratio() < self.freeze_at())
    }

    /// The fraction of a threshold at which the baseline freezes: `young_freeze_fraction` while
    /// young (if smaller), `freeze_fraction` from `mature_completions` on.
    fn freeze_at(&self) -> f64 {
        if (self.st.completions as f64) < self.cfg.mature_completions {
            self.cfg.freeze_fraction.min(self.cfg.young_freeze_fraction)
        } else {
            self.cfg.freeze_fraction
        }
    }

    /// The size mixture's parameters as learnt (used or not), or `None` before `sizes_from`.
    pub fn learnt_sizes(&self) -> Option<Sizes> {
        let m = &self.st.size_moments;
        if m.len() != SIZE_MOMENTS {
            return None;
        }
        let total = (m[0] + m[1]).max(1e-12);
        let sigma = m[5] / (m[4].max(1e-12) * TRIMMED_ABS_NORMAL_MEAN);
        Some(Sizes {
            weights: [m[0] / total, m[1] / total],
            offsets: [m[2] / m[0].max(1e-12), m[3] / m[1].max(1e-12)],
            sigma: sigma.max(self.cfg.min_scale),
        })
    }

    /// The size mixture when completions are judged under it (`learn_sizes`): mature, learnt
    /// from enough completions, both sizes common, and better than the single spread.
    fn sizes(&self) -> Option<Sizes> {
        if !self.cfg.learn_sizes
            || (self.st.completions as f64) < self.cfg.mature_completions
            || self.st.size_count < MIN_SIZE_COMPLETIONS
            || self.st.size_gain < self.cfg.sizes_min_gain
        {
            return None;
        }
        self.learnt_sizes().filter(|sizes| sizes.weights[0].min(sizes.weights[1]) >= MIN_SIZE_SHARE)
    }

    /// The null model a residual is judged under: the single spread `sigma`, or (with
    /// `with_sizes`, when in use) the size mixture, its spread widened as `sigma` is beyond
    /// the learnt scale (the young band).
    fn null_model(&self, sigma: f64, with_sizes: bool) -> NullModel {
        let share = self.straggler_share();
        match self.sizes().filter(|_| with_sizes) {
            Some(sizes) => {
                let widen = sigma / self.scale();
                NullModel::new(sizes.sigma * widen, share, &self.cfg).with_sizes(&sizes)
            }
            None => NullModel::new(sigma, share, &self.cfg),
        }
    }

    /// One step of the size mixture's online EM on a learnt residual (out of sample), after
    /// its gain over the single spread has been counted.
    fn learn_sizes(&mut self, residual: f64) {
        if !self.cfg.learn_sizes || (self.st.completions as f64) < self.cfg.sizes_from {
            return;
        }
        let scale = self.scale();
        if self.st.size_moments.len() != SIZE_MOMENTS {
            // Two halves a scale either side, each with 0.6 of the spread: EM separates real
            // sizes from there, and merges a single one (its gain stays near 0).
            let sigma = 0.6 * scale;
            let inside = INSIDE_CLIP_NORMAL_SHARE;
            self.st.size_moments =
                vec![0.5, 0.5, -0.5 * scale, 0.5 * scale, inside, inside * TRIMMED_ABS_NORMAL_MEAN * sigma];
            self.st.size_count = 0.0;
            self.st.size_gain = 0.0;
        }
        let Some(sizes) = self.learnt_sizes() else { return };
        let share = self.straggler_share();
        let mixed = NullModel::new(sizes.sigma, share, &self.cfg).with_sizes(&sizes);
        let single = NullModel::new(scale, share, &self.cfg);
        let (core, tail) = mixed.ln_parts(residual);
        let gain = (log_add_exp(core, tail) - single.ln_density(residual)).clamp(-SIZE_GAIN_CAP, SIZE_GAIN_CAP);
        self.st.size_count += 1.0;
        self.st.size_gain += learning_rate(self.st.size_count, SIZE_GAIN_MEMORY) * (gain - self.st.size_gain);
        let rate = learning_rate(self.st.size_count + SIZE_PRIOR, self.cfg.baseline_memory);
        // E step: each size's responsibility for the residual, the whole weighed by how likely
        // it is not a straggler's.
        let weight = 1.0 / (1.0 + (tail - core).exp());
        let z: [f64; 2] = std::array::from_fn(|k| (residual - sizes.offsets[k]) / sizes.sigma);
        let ln_r: [f64; 2] = std::array::from_fn(|k| sizes.weights[k].max(1e-12).ln() - 0.5 * z[k] * z[k]);
        let first = 1.0 / (1.0 + (ln_r[1] - ln_r[0]).exp());
        let resp = [first * weight, (1.0 - first) * weight];
        let m = &mut self.st.size_moments;
        let (mut inside_share, mut inside_abs) = (0.0, 0.0);
        for k in 0..2 {
            let clipped = sizes.offsets[k] + huber(residual - sizes.offsets[k], sizes.sigma);
            m[k] += rate * (resp[k] - m[k]);
            m[2 + k] += rate * (resp[k] * clipped - m[2 + k]);
            if z[k].abs() < SCALE_CLIP {
                inside_share += resp[k];
                inside_abs += resp[k] * (residual - sizes.offsets[k]).abs();
            }
        }
        m[4] += rate * (inside_share - m[4]);
        m[5] += rate * (inside_abs - m[5]);
    }

    /// Moves the baseline towards this completion. `residual` was computed before the update,
    /// so the scale measures genuine prediction error, profile noise included.
    fn learn(&mut self, x: f64, timestamp_unix_s: f64, basis: &[f64; PROFILE_TERMS], residual: f64) {
        let scale = self.scale();
        if self.cfg.learn_straggler_share {
            // Online EM: the running mean of each completion's posterior probability of being a
            // straggler under the current share, after `STRAGGLER_PRIOR` completions' worth of
            // the configured one.
            let share = self.straggler_share();
            let posterior = self.null_model(scale, true).straggler_posterior(residual);
            let rate = learning_rate(self.learnt_completions() as f64 + STRAGGLER_PRIOR, self.cfg.baseline_memory);
            self.st.straggler_share =
                (share + rate * (posterior - share)).clamp(MIN_STRAGGLER_SHARE, MAX_STRAGGLER_SHARE);
        }
        let rate = learning_rate(self.learnt_completions() as f64, self.cfg.baseline_memory);
        // After the daily profile only: the weekend step is centred on the level's own
        // completions (`level_step_centred`), which assumes a level that holds the week's mix.
        let level_error = if self.cfg.level_from_residual {
            x - self.st.location - self.profile(basis)
        } else {
            x - self.st.location
        };
        self.st.location += rate * huber(level_error, scale);
        self.learn_level_share(timestamp_unix_s, rate);
        self.learn_sizes(residual);
        // Trimmed mean of |residual| inside the clip: consistent for the Gaussian core whatever
        // the share of stragglers beyond it (the clipped mean used before 2026-12-01 assumed
        // `straggler_fraction` there, and read 4% low without stragglers, 6% high with 5%).
        let inside = residual.abs() < SCALE_CLIP * scale;
        self.st.scale_inside_share += rate * (f64::from(u8::from(inside)) - self.st.scale_inside_share);
        let inside_abs = if inside { residual.abs() } else { 0.0 };
        self.st.scale_inside_abs += rate * (inside_abs - self.st.scale_inside_abs);
        if self.st.scale_inside_share > 0.05 {
            self.st.scale = self.st.scale_inside_abs / (self.st.scale_inside_share * TRIMMED_ABS_NORMAL_MEAN);
        }

        self.st.season_count[season_bin(timestamp_unix_s)] += 1.0;
        // The deviation from the level enters the running means Huber-clipped around the current
        // fit (a pseudo-observation), so a straggler moves the profile no more than a 2-scale job.
        self.st.profile_count += 1.0;
        let rate = learning_rate(self.st.profile_count, self.cfg.season_memory);
        let deviation = self.profile(basis) + huber(residual, scale);
        let n = self.profile_terms();
        update_moments(&mut self.st.profile_gram, &mut self.st.profile_moment, basis, n, rate, deviation);
        self.solve_profile();
    }
}

/// The weekend step in use: candidate start, height (0: none), share of completions inside.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct WeekStep {
    start: usize,
    height: f64,
    inside: f64,
}

/// 1/n while young (a plain average, fast to converge), then a fixed exponential forgetting.
fn learning_rate(n: f64, memory: f64) -> f64 {
    (1.0 / n.max(1.0)).max(1.0 / memory.max(1.0))
}

fn huber(error: f64, scale: f64) -> f64 {
    let limit = HUBER_CLIP * scale;
    error.clamp(-limit, limit)
}

fn day_fraction(timestamp_unix_s: f64) -> f64 {
    timestamp_unix_s.rem_euclid(SECONDS_PER_DAY) / SECONDS_PER_DAY
}

fn season_bin(timestamp_unix_s: f64) -> usize {
    ((day_fraction(timestamp_unix_s) * SEASON_BINS as f64) as usize).min(SEASON_BINS - 1)
}

fn week_fraction(timestamp_unix_s: f64) -> f64 {
    timestamp_unix_s.rem_euclid(SECONDS_PER_WEEK) / SECONDS_PER_WEEK
}

/// Harmonic basis at this fraction of a period (day or week): cos kθ, sin kθ for
/// k = 1..=[`MAX_HARMONICS`], from one `sin_cos` and the angle-addition formulas.
fn harmonic_basis(fraction: f64) -> [f64; PROFILE_TERMS] {
    let (s1, c1) = (2.0 * std::f64::consts::PI * fraction).sin_cos();
    let mut basis = [0.0; PROFILE_TERMS];
    let (mut c, mut s) = (c1, s1);
    for k in 0..MAX_HARMONICS {
        basis[2 * k] = c;
        basis[2 * k + 1] = s;
        (c, s) = (c * c1 - s * s1, s * c1 + c * s1);
    }
    basis
}

/// The basis at the centre of each hour-of-day bin, computed once.
fn bin_centre_bases() -> &'static [[f64; PROFILE_TERMS]; SEASON_BINS] {
    static BASES: std::sync::OnceLock<[[f64; PROFILE_TERMS]; SEASON_BINS]> = std::sync::OnceLock::new();
    BASES.get_or_init(|| std::array::from_fn(|bin| harmonic_basis((bin as f64 + 0.5) / SEASON_BINS as f64)))
}

/// Moves the running means of a harmonic fit (packed Gram matrix of the basis, moment of the
/// basis times `y`) towards this completion's, first `n` terms, at `rate`.
fn update_moments(
    gram: &mut [f64; PROFILE_GRAM],
    moment: &mut [f64; PROFILE_TERMS],
    basis: &[f64; PROFILE_TERMS],
    n: usize,
    rate: f64,
    y: f64,
) {
    for i in 0..n {
        moment[i] += rate * (basis[i] * y - moment[i]);
        let row = packed(i, 0);
        for j in 0..=i {
            gram[row + j] += rate * (basis[i] * basis[j] - gram[row + j]);
        }
    }
}

/// Solves (gram + ridge I) coef = moment for the first `n` terms (Cholesky).
fn solve_ridge(
    gram: &[f64; PROFILE_GRAM],
    moment: &[f64; PROFILE_TERMS],
    n: usize,
    ridge: f64,
    coef: &mut [f64; PROFILE_TERMS],
) {
    let mut chol = [[0.0; PROFILE_TERMS]; PROFILE_TERMS];
    for i in 0..n {
        for j in 0..=i {
            let dot: f64 = chol[i][..j].iter().zip(&chol[j][..j]).map(|(a, b)| a * b).sum();
            let diagonal = if i == j { ridge } else { 0.0 };
            let sum = gram[packed(i, j)] + diagonal - dot;
            chol[i][j] = if i == j { sum.max(1e-12).sqrt() } else { sum / chol[j][j] };
        }
    }
    let mut z = [0.0; PROFILE_TERMS];
    for i in 0..n {
        let dot: f64 = (0..i).map(|k| chol[i][k] * z[k]).sum();
        z[i] = (moment[i] - dot) / chol[i][i];
    }
    for i in (0..n).rev() {
        let dot: f64 = (i + 1..n).map(|k| chol[k][i] * coef[k]).sum();
        coef[i] = (z[i] - dot) / chol[i][i];
    }
}

/// Index of entry (i, j), j <= i, of a packed lower-triangular matrix.
fn packed(i: usize, j: usize) -> usize {
    i * (i + 1) / 2 + j
}

/// The young scan's z of a window's mean against the mean of the completions before it, in
/// standard errors of the difference, both from the earlier completions' own spread.
fn two_sample_z(inside_sum: f64, inside_n: f64, before_sum: f64, before_sq: f64, before_n: f64) -> f64 {
    let before_mean = before_sum / before_n;
    let before_var = (before_sq / before_n - before_mean * before_mean).max(1e-12);
    let se = (before_var * (1.0 / inside_n + 1.0 / before_n)).sqrt();
    (inside_sum / inside_n - before_mean) / se
}

/// Adds (`sign` 1) or removes (-1) a value `y` at daily basis `basis` to a young scan's moments:
/// count, Σy, Σy², Σφ, Σyφ, Σφφᵀ (packed).
fn scan_moments_add(m: &mut [f64], y: f64, basis: &[f64; PROFILE_TERMS], sign: f64) {
    m[0] += sign;
    m[1] += sign * y;
    m[2] += sign * y * y;
    for i in 0..PROFILE_TERMS {
        m[3 + i] += sign * basis[i];
        m[3 + PROFILE_TERMS + i] += sign * y * basis[i];
        let row = 3 + 2 * PROFILE_TERMS + packed(i, 0);
        for j in 0..=i {
            m[row + j] += sign * basis[i] * basis[j];
        }
    }
}

/// Σ(y − φ·c) and Σ(y − φ·c)² of a young scan's moments, for the first `n` profile terms.
fn scan_sums(m: &[f64], coef: &[f64; PROFILE_TERMS], n: usize) -> (f64, f64) {
    let mut sum = m[1];
    let mut sq = m[2];
    for i in 0..n {
        sum -= coef[i] * m[3 + i];
        sq -= 2.0 * coef[i] * m[3 + PROFILE_TERMS + i];
        let row = 3 + 2 * PROFILE_TERMS + packed(i, 0);
        for j in 0..i {
            sq += 2.0 * coef[i] * coef[j] * m[row + j];
        }
        sq += coef[i] * coef[i] * m[row + i];
    }
    (sum, sq)
}

/// Two job sizes (`DetectorConfig::learn_sizes`): their shares, offsets from the baseline
/// (ln) and common spread.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sizes {
    pub weights: [f64; 2],
    pub offsets: [f64; 2],
    pub sigma: f64,
}

/// Density of a log-duration residual when nothing has changed: a Gaussian core plus a share
/// of stragglers whose extra log-duration is exponential (smoothed by the same Gaussian noise,
/// i.e. an exponentially modified Gaussian), one of each per job size. A shifted copy of the
/// same density is the "slowed down" hypothesis, so stragglers are expected before and after
/// a change alike.
#[derive(Clone, Copy)]
struct NullModel {
    /// Offsets and ln-weights of the sizes (one size at 0 unless `with_sizes`).
    sizes: Option<([f64; 2], [f64; 2])>,
    sigma: f64,
    eps: f64,
    tail_start: f64,
    tail_mean: f64,
    ln_core_weight: f64,
    ln_tail_weight: f64,
}

impl NullModel {
    fn new(sigma: f64, straggler_share: f64, cfg: &DetectorConfig) -> Self {
        let eps = straggler_share.clamp(0.0, 0.5);
        let tail_mean = cfg.straggler_mean_log.max(1e-3);
        NullModel {
            sizes: None,
            sigma,
            eps,
            tail_start: cfg.straggler_min_ratio.max(1.0).ln(),
            tail_mean,
            ln_core_weight: (1.0 - eps).ln() - (sigma * (2.0 * std::f64::consts::PI).sqrt()).ln(),
            ln_tail_weight: eps.ln() - tail_mean.ln() + sigma * sigma / (2.0 * tail_mean * tail_mean),
        }
    }

    /// The same with two job sizes: each size a core and stragglers of its own.
    fn with_sizes(mut self, sizes: &Sizes) -> Self {
        let ln_w = [sizes.weights[0].max(1e-12).ln(), sizes.weights[1].max(1e-12).ln()];
        self.sizes = Some((sizes.offsets, ln_w));
        self
    }

    /// The smallest size's offset (0 for one size).
    fn lowest_offset(&self) -> f64 {
        self.sizes.map_or(0.0, |(offsets, _)| offsets[0].min(offsets[1]))
    }

    /// The commoner size's offset (0 for one size).
    fn mode_offset(&self) -> f64 {
        self.sizes.map_or(0.0, |(offsets, ln_w)| if ln_w[0] >= ln_w[1] { offsets[0] } else { offsets[1] })
    }

    /// Probability that a residual exceeds `u`.
    fn survival(&self, u: f64) -> f64 {
        match self.sizes {
            None => self.survival_one(u),
            Some((offsets, ln_w)) => (0..2).map(|k| ln_w[k].exp() * self.survival_one(u - offsets[k])).sum(),
        }
    }

    /// Probability that a residual of one size exceeds `u`: the Gaussian core's upper tail
    /// plus the stragglers' (an exponentially modified Gaussian starting at `tail_start`).
    fn survival_one(&self, u: f64) -> f64 {
        let eps = self.eps;
        let rate = 1.0 / self.tail_mean;
        let core = ln_normal_cdf(-u / self.sigma).exp();
        let excess = u - self.tail_start;
        let tail = ln_normal_cdf(-excess / self.sigma).exp()
            + (-rate * excess
                + 0.5 * (rate * self.sigma).powi(2)
                + ln_normal_cdf(excess / self.sigma - rate * self.sigma))
            .exp();
        (1.0 - eps) * core + eps * tail
    }

    /// Residual exceeded with probability `1 - p`, by bisection (not on the per-completion path).
    fn quantile(&self, p: f64) -> f64 {
        let target = (1.0 - p).clamp(1e-12, 1.0 - 1e-12);
        let highest = self.sizes.map_or(0.0, |(offsets, _)| offsets[0].max(offsets[1]));
        let (mut lo, mut hi) = (
            self.lowest_offset() - 10.0 * self.sigma,
            highest + self.tail_start + 40.0 * (self.tail_mean + self.sigma),
        );
        for _ in 0..100 {
            let mid = 0.5 * (lo + hi);
            if self.survival(mid) > target {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        0.5 * (lo + hi)
    }

    fn ln_density(&self, u: f64) -> f64 {
        let (core, tail) = self.ln_parts(u);
        log_add_exp(core, tail)
    }

    /// ln of the cores' and the stragglers' share of the density at `u`.
    fn ln_parts(&self, u: f64) -> (f64, f64) {
        match self.sizes {
            None => self.ln_parts_one(u),
            Some((offsets, ln_w)) => {
                let (c0, t0) = self.ln_parts_one(u - offsets[0]);
                let (c1, t1) = self.ln_parts_one(u - offsets[1]);
                (log_add_exp(ln_w[0] + c0, ln_w[1] + c1), log_add_exp(ln_w[0] + t0, ln_w[1] + t1))
            }
        }
    }

    fn ln_parts_one(&self, u: f64) -> (f64, f64) {
        let z = u / self.sigma;
        let core = self.ln_core_weight - 0.5 * z * z;
        let excess = u - self.tail_start;
        let tail = self.ln_tail_weight - excess / self.tail_mean
            + ln_normal_cdf(excess / self.sigma - self.sigma / self.tail_mean);
        (core, tail)
    }

    /// Probability that a residual `u` is a straggler's (the E step of the share's EM).
    fn straggler_posterior(&self, u: f64) -> f64 {
        let (core, tail) = self.ln_parts(u);
        1.0 / (1.0 + (core - tail).exp())
    }
}

fn log_add_exp(a: f64, b: f64) -> f64 {
    let (hi, lo) = if a >= b { (a, b) } else { (b, a) };
    if hi == f64::NEG_INFINITY {
        return hi;
    }
    hi + (lo - hi).exp().ln_1p()
}

/// ln Φ(x), accurate far into the lower tail where Φ itself underflows.
fn ln_normal_cdf(x: f64) -> f64 {
    ln_erfc(-x / std::f64::consts::SQRT_2) - std::f64::consts::LN_2
}

/// ln erfc(x) by the Chebyshev fit of Numerical Recipes (`erfcc`, relative error < 1.2e-7),
/// written in log form so large arguments do not underflow.
fn ln_erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98 + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let ln_upper = t.ln() - z * z + poly;
    if x >= 0.0 {
        ln_upper
    } else {
        (2.0 - ln_upper.exp()).ln()
    }
}

// ---------------------------------------------------------------------------------------------
// Replay of a CSV history.

/// Totals of a [`replay`] run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplayStats {
    /// Data rows read (and written).
    pub rows: u64,
    /// Rows written with `alert` = 1.
    pub alert_rows: u64,
    /// Alerts that started (0 -> 1 transitions).
    pub alerts_started: u64,
}

/// Why a replay stopped.
#[derive(Debug)]
pub enum ReplayError {
    /// Reading the input or writing the output failed.
    Io(std::io::Error),
    /// The first line is not `timestamp,value`.
    Header { found: String },
    /// A data row is malformed; `line` is 1-based and counts the header.
    Row { line: u64, reason: String },
}

impl fmt::Display for ReplayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplayError::Io(e) => write!(f, "I/O error: {e}"),
            ReplayError::Header { found } => {
                write!(f, "line 1: expected header `timestamp,value`, found `{found}`")
            }
            ReplayError::Row { line, reason } => write!(f, "line {line}: {reason}"),
        }
    }
}

impl std::error::Error for ReplayError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ReplayError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<std::io::Error> for ReplayError {
    fn from(e: std::io::Error) -> Self {
        ReplayError::Io(e)
    }
}

/// Runs a fresh detector over a CSV history and writes one verdict per row.
///
/// Input: header `timestamp,value`, then one row per completed job in completion order;
/// `timestamp` is `YYYY-MM-DD HH:MM:SS` (UTC) or RFC 3339 (`2026-11-21T10:00:00Z`, `+01:00`
/// offsets, fractional seconds), `value` the duration in seconds (finite, >= 0). Blank lines
/// are skipped. Output: header `timestamp,score,alert`, then per row the timestamp as given,
/// the score with 4 decimals and `alert` as 1 or 0. Stops at the first bad row.
pub fn replay(
    mut input: impl BufRead,
    mut output: impl Write,
    cfg: DetectorConfig,
) -> Result<ReplayStats, ReplayError> {
    let mut detector = Detector::new(cfg);
    let mut stats = ReplayStats::default();
    let mut line_no: u64 = 0;
    let mut buf = Vec::new();
    let mut header_seen = false;
    let mut was_alerting = false;
    loop {
        buf.clear();
        if input.read_until(b'\n', &mut buf)? == 0 {
            break;
        }
        line_no += 1;
        let text = std::str::from_utf8(&buf)
            .map_err(|_| ReplayError::Row { line: line_no, reason: "not valid UTF-8".to_string() })?;
        let text = text.trim_start_matches('\u{feff}').trim();
        if !header_seen {
            check_header(text)?;
            writeln!(output, "timestamp,score,alert")?;
            header_seen = true;
            continue;
        }
        if text.is_empty() {
            continue;
        }
        let (timestamp_text, t, value) =
            parse_row(text).map_err(|reason| ReplayError::Row { line: line_no, reason })?;
        let verdict = detector.observe(t, value);
        writeln!(output, "{},{:.4},{}", timestamp_text, verdict.score, u8::from(verdict.alert))?;
        stats.rows += 1;
        stats.alert_rows += u64::from(verdict.alert);
        stats.alerts_started += u64::from(verdict.alert && !was_alerting);
        was_alerting = verdict.alert;
    }
    if !header_seen {
        return Err(ReplayError::Header { found: String::new() });
    }
    output.flush()?;
    Ok(stats)
}

fn check_header(text: &str) -> Result<(), ReplayError> {
    let mut fields = text.split(',').map(str::trim);
    let ok = fields.next() == Some("timestamp") && fields.next() == Some("value") && fields.next().is_none();
    if ok {
        Ok(())
    } else {
        Err(ReplayError::Header { found: text.to_string() })
    }
}

fn parse_row(text: &str) -> Result<(&str, f64, f64), String> {
    let fields: Vec<&str> = text.split(',').map(str::trim).collect();
    if fields.len() != 2 {
        return Err(format!("expected 2 fields `timestamp,value`, found {}", fields.len()));
    }
    let t = parse_timestamp(fields[0]).map_err(|why| format!("bad timestamp `{}`: {why}", fields[0]))?;
    let value: f64 = fields[1].parse().map_err(|_| format!("bad value `{}`: not a number", fields[1]))?;
    if !value.is_finite() || value < 0.0 {
        return Err(format!("bad value `{}`: a duration must be a finite number of seconds >= 0", fields[1]));
    }
    Ok((fields[0], t, value))
}

/// Parses `YYYY-MM-DD HH:MM:SS` (UTC) or RFC 3339 into Unix seconds. A missing zone means UTC.
pub fn parse_timestamp(text: &str) -> Result<f64, String> {
    let b = text.as_bytes();
    if b.len() < 19 {
        return Err("expected `YYYY-MM-DD HH:MM:SS` or RFC 3339".to_string());
    }
    let expect = |i: usize, what: &[u8]| -> Result<(), String> {
        if what.contains(&b[i]) {
            Ok(())
        } else {
            Err(format!("unexpected `{}` at position {}", b[i] as char, i + 1))
        }
    };
    expect(4, b"-")?;
    expect(7, b"-")?;
    expect(10, b"T t")?;
    expect(13, b":")?;
    expect(16, b":")?;
    let year = digits(b, 0, 4)?;
    let month = digits(b, 5, 2)?;
    let day = digits(b, 8, 2)?;
    let hour = digits(b, 11, 2)?;
    let minute = digits(b, 14, 2)?;
    let second = digits(b, 17, 2)?;
    if !(1..=12).contains(&month) {
        return Err(format!("month {month} out of range"));
    }
    if day < 1 || day > days_in_month(year, month) {
        return Err(format!("day {day} out of range for {year:04}-{month:02}"));
    }
    if hour > 23 || minute > 59 || second > 60 {
        return Err("time of day out of range".to_string());
    }
    let (fraction, rest) = parse_fraction(&text[19..])?;
    let offset_s = parse_zone(rest)?;
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3_600 + minute * 60 + second - offset_s;
    Ok(seconds as f64 + fraction)
}

fn digits(b: &[u8], start: usize, len: usize) -> Result<i64, String> {
    let mut value = 0i64;
    for &c in &b[start..start + len] {
        if !c.is_ascii_digit() {
            return Err(format!("expected a digit at position {}", start + 1));
        }
        value = value * 10 + i64::from(c - b'0');
    }
    Ok(value)
}

fn parse_fraction(text: &str) -> Result<(f64, &str), String> {
    let Some(after_dot) = text.strip_prefix('.') else {
        return Ok((0.0, text));
    };
    let len = after_dot.bytes().take_while(u8::is_ascii_digit).count();
    if len == 0 {
        return Err("expected digits after the decimal point".to_string());
    }
    let fraction: f64 = format!("0.{}", &after_dot[..len]).parse().map_err(|_| "bad fractional seconds".to_string())?;
    Ok((fraction, &after_dot[len..]))
}

/// Zone suffix to seconds east of UTC: nothing, `Z` or `±HH:MM`.
fn parse_zone(text: &str) -> Result<i64, String> {
    match text {
        "" | "Z" | "z" => return Ok(0),
        _ => {}
    }
    let b = text.as_bytes();
    let sign = match b[0] {
        b'+' => 1,
        b'-' => -1,
        _ => return Err(format!("unexpected `{text}` after the time")),
    };
    if b.len() != 6 || b[3] != b':' {
        return Err(format!("bad UTC offset `{text}`, expected ±HH:MM"));
    }
    let hours = digits(b, 1, 2)?;
    let minutes = digits(b, 4, 2)?;
    if hours > 23 || minutes > 59 {
        return Err(format!("UTC offset `{text}` out of range"));
    }
    Ok(sign * (hours * 3_600 + minutes * 60))
}

fn is_leap_year(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap_year(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SplitMix64 plus Box-Muller: deterministic test data without dependencies.
    struct Rng(u64);

    impl Rng {
        fn next_u64(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }

        fn uniform(&mut self) -> f64 {
            ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        }

        fn normal(&mut self) -> f64 {
            let radius = (-2.0 * self.uniform().ln()).sqrt();
            radius * (2.0 * std::f64::consts::PI * self.uniform()).cos()
        }
    }

    const T0: f64 = 1_767_225_600.0; // 2026-01-01T00:00:00Z

    /// `n` completions 15 min apart: 30 min median, sigma 0.25, daily +-20%, 2% stragglers
    /// at 2-5x; `factor(i)` multiplies the median of completion `i`.
    fn history(seed: u64, n: usize, factor: impl Fn(usize) -> f64) -> Vec<(f64, f64)> {
        let mut rng = Rng(seed);
        (0..n)
            .map(|i| {
                let t = T0 + 900.0 * i as f64;
                let daily = 1.0 + 0.2 * (2.0 * std::f64::consts::PI * t / 86_400.0).sin();
                let mut v = 1800.0 * daily * factor(i) * (0.25 * rng.normal()).exp();
                if rng.uniform() < 0.02 {
                    v *= 2.0 + 3.0 * rng.uniform();
                }
                (t, v)
            })
            .collect()
    }

    fn run(detector: &mut Detector, data: &[(f64, f64)]) -> Vec<Verdict> {
        data.iter().map(|&(t, v)| detector.observe(t, v)).collect()
    }

    fn alert_starts(verdicts: &[Verdict]) -> Vec<usize> {
        (0..verdicts.len()).filter(|&i| verdicts[i].alert && (i == 0 || !verdicts[i - 1].alert)).collect()
    }

    const STABLE: usize = 3000;

    #[test]
    fn stable_histories_do_not_alert() {
        for seed in 1..=5 {
            let data = history(seed, 8000, |_| 1.0);
            let verdicts = run(&mut Detector::new(DetectorConfig::default()), &data);
            assert_eq!(alert_starts(&verdicts), Vec::<usize>::new(), "seed {seed}");
            assert!(verdicts.iter().all(|v| (0.0..=1.0).contains(&v.score)));
        }
    }

    #[test]
    fn steps_are_caught_quickly() {
        // (ratio, worst acceptable delay in completions)
        let table = [(2.0, 12), (4.0, 6), (12.0, 3)];
        for (ratio, max_delay) in table {
            for seed in 10..15 {
                let data = history(seed, STABLE + 50, |i| if i >= STABLE { ratio } else { 1.0 });
                let verdicts = run(&mut Detector::new(DetectorConfig::default()), &data);
                let starts = alert_starts(&verdicts);
                assert_eq!(starts.len(), 1, "ratio {ratio} seed {seed}: {starts:?}");
                let delay = starts[0] + 1 - STABLE;
                assert!((1..=max_delay).contains(&delay), "ratio {ratio} seed {seed}: delay {delay}");
            }
        }
    }

    #[test]
    fn alert_resolves_after_recovery() {
        let data = history(21, STABLE + 300, |i| if (STABLE..STABLE + 100).contains(&i) { 2.0 } else { 1.0 });
        let verdicts = run(&mut Detector::new(DetectorConfig::default()), &data);
        assert_eq!(alert_starts(&verdicts).len(), 1);
        assert!(verdicts[STABLE + 99].alert, "still firing during the slowdown");
        let resolved = (STABLE + 100..data.len()).find(|&i| !verdicts[i].alert);
        let resolved = resolved.expect("the alert resolves");
        assert!(resolved <= STABLE + 140, "resolved at {resolved}");
        assert!(verdicts[resolved..].iter().all(|v| !v.alert), "no flapping afterwards");
    }

    #[test]
    fn hold_down_prevents_flapping() {
        let cfg = DetectorConfig::default();
        // A short burst fires for at least the hold-down even though it ends at once.
        let burst = history(31, STABLE + 100, |i| if (STABLE..STABLE + 3).contains(&i) { 12.0 } else { 1.0 });
        let verdicts = run(&mut Detector::new(cfg.clone()), &burst);
        let starts = alert_starts(&verdicts);
        assert_eq!(starts.len(), 1);
        let fired = verdicts[starts[0]..].iter().take_while(|v| v.alert).count();
        assert!(fired as u64 >= cfg.min_alert_completions, "fired {fired}");
        // Slow and normal jobs interleaved (2x, 2x, 1x, ...) make one alert, not many.
        let mixed = history(32, STABLE + 300, |i| if i >= STABLE && (i - STABLE) % 3 != 2 { 2.0 } else { 1.0 });
        let verdicts = run(&mut Detector::new(cfg), &mixed);
        let starts = alert_starts(&verdicts);
        assert_eq!(starts.len(), 1, "{starts:?}");
        assert!(starts[0] < STABLE + 40, "{starts:?}");
        assert!(verdicts[starts[0]..].iter().all(|v| v.alert));
    }

    #[test]
    fn no_alert_during_warmup() {
        let cfg = DetectorConfig::default();
        let warmup = cfg.warmup as usize;
        // Wildly slow from the 10th job on: still learning, so nothing may fire yet.
        let data = history(41, warmup + 50, |i| if i >= 10 { 12.0 } else { 1.0 });
        let verdicts = run(&mut Detector::new(cfg), &data);
        assert!(verdicts[..warmup].iter().all(|v| !v.alert && v.score == 0.0));
    }

    #[test]
    fn stragglers_alone_do_not_alert() {
        // Ten times the usual straggler rate, each 2-5x: the tail model absorbs them.
        let mut rng = Rng(51);
        let data: Vec<(f64, f64)> = history(52, 8000, |_| 1.0)
            .into_iter()
            .enumerate()
            .map(|(i, (t, v))| {
                let straggler = i >= STABLE && i % 50 == 0;
                (t, if straggler { v * (2.0 + 3.0 * rng.uniform()) } else { v })
            })
            .collect();
        let verdicts = run(&mut Detector::new(DetectorConfig::default()), &data);
        assert_eq!(alert_starts(&verdicts), Vec::<usize>::new());
    }

    #[test]
    fn small_warmup_catches_a_4x_step_and_resolves() {
        let cfg = DetectorConfig { warmup: 20, ..DetectorConfig::default() };
        let mut detector = Detector::new(cfg);
        let mut rng = Rng(111);
        let mut t = T0;
        let mut feed = |detector: &mut Detector, typical: f64| {
            t += 60.0;
            detector.observe(t, typical * (1.0 + 0.05 * (rng.uniform() - 0.5)))
        };
        for _ in 0..100 {
            assert!(!feed(&mut detector, 0.1).alert, "stable 0.1 s must not alert");
        }
        let caught = (1..=20).find(|_| feed(&mut detector, 0.4).alert);
        let caught = caught.expect("a 4x step alerts");
        assert!(caught <= 5, "alert after {caught} completions at 0.4 s");
        for _ in caught..30 {
            assert!(feed(&mut detector, 0.4).alert, "keeps firing while slow");
        }
        let recent = detector.recent_median_s().expect("durations seen");
        assert!((0.38..0.42).contains(&recent), "recent median {recent}");
        let baseline = detector.baseline(T0).expect("warmed up");
        assert!((0.095..0.105).contains(&baseline.median_s), "frozen baseline {baseline:?}");
        let resolved = (1..=40).find(|_| !feed(&mut detector, 0.1).alert);
        let resolved = resolved.expect("the alert resolves");
        assert!(resolved <= 20, "resolved after {resolved} completions back at 0.1 s");
    }

    #[test]
    fn baseline_and_recent_median() {
        let mut detector = Detector::new(DetectorConfig::default());
        assert_eq!(detector.recent_median_s(), None);
        assert_eq!(detector.baseline(T0), None, "warming up");
        for (i, v) in [5.0, 1.0, 3.0].into_iter().enumerate() {
            detector.observe(T0 + i as f64, v);
        }
        assert_eq!(detector.recent_median_s(), Some(3.0));
        detector.observe(T0 + 3.0, 2.0);
        assert_eq!(detector.recent_median_s(), Some(2.5));
        for i in 0..9 {
            detector.observe(T0 + 10.0 + i as f64, 100.0 + i as f64);
        }
        assert_eq!(detector.recent_median_s(), Some(104.0), "only the last nine count");
        // (limit, beyond it among the last nine): the tail a median hides.
        for (limit, beyond) in [(0.0, 9), (104.0, 4), (108.0, 0)] {
            assert_eq!(detector.recent_beyond(limit), (beyond, 9), "beyond {limit}");
        }

        let data = history(121, STABLE, |_| 1.0);
        let mut detector = Detector::new(DetectorConfig::default());
        run(&mut detector, &data);
        // history(): median 1800 s * (1 + 0.2 sin(day)), i.e. 2160 s at 06:00 UTC, 1440 s at 18:00.
        let six = detector.baseline(T0 + 6.0 * 3600.0).expect("warmed up");
        let eighteen = detector.baseline(T0 + 18.0 * 3600.0).expect("warmed up");
        assert!((0.93..1.07).contains(&(six.median_s / 2160.0)), "{six:?}");
        assert!((0.93..1.07).contains(&(eighteen.median_s / 1440.0)), "{eighteen:?}");
        assert!((0.22..0.28).contains(&six.scale), "{six:?}");
        // 2% stragglers at 2x and beyond put the 99th percentile in their tail: ~2.5-3.5x.
        let ratio = six.p99_s / six.median_s;
        assert!((2.3..3.8).contains(&ratio), "p99 / median {ratio}");
    }

    #[test]
    fn state_and_config_round_trip_through_serde() {
        let data = history(131, STABLE + 20, |i| if i >= STABLE { 2.0 } else { 1.0 });
        let cfg = DetectorConfig { warmup: 500, ..DetectorConfig::default() };
        let mut original = Detector::new(cfg.clone());
        run(&mut original, &data[..STABLE + 10]);
        let cfg_json = serde_json::to_string(&cfg).expect("config serialises");
        let state_json = serde_json::to_string(&original.snapshot()).expect("state serialises");
        let cfg_back: DetectorConfig = serde_json::from_str(&cfg_json).expect("config parses");
        let state_back: DetectorState = serde_json::from_str(&state_json).expect("state parses");
        assert_eq!(cfg_back, cfg);
        let mut resumed = Detector::restore(cfg_back, state_back);
        for &(t, v) in &data[STABLE + 10..] {
            assert_eq!(original.observe(t, v), resumed.observe(t, v));
        }
        // A configuration written by an older version (fields missing) takes the defaults.
        let partial: DetectorConfig = serde_json::from_str(r#"{"warmup": 20}"#).expect("partial config");
        assert_eq!(partial, DetectorConfig { warmup: 20, ..DetectorConfig::default() });
    }

    #[test]
    fn a_young_baseline_catches_steps_from_the_150th_completion() {
        // (ratio, worst acceptable delay in completions); the change from completion 150 on.
        const CHANGE: usize = 150;
        // 2x: 26 (was 25) since the scale is a trimmed mean (2026-12-01), which no longer reads
        // low at 2% stragglers; one seed of six is one completion later.
        let table = [(1.0, None), (2.0, Some(26)), (4.0, Some(8)), (12.0, Some(3))];
        for (ratio, max_delay) in table {
            for seed in 160..166 {
                let data = history(seed, 1000, |i| if i >= CHANGE { ratio } else { 1.0 });
                let starts = alert_starts(&run(&mut Detector::new(DetectorConfig::default()), &data));
                match max_delay {
                    None => assert_eq!(starts, Vec::<usize>::new(), "stable, seed {seed}"),
                    Some(max) => {
                        assert_eq!(starts.len(), 1, "ratio {ratio} seed {seed}: {starts:?}");
                        let delay = starts[0] + 1 - CHANGE;
                        assert!((1..=max).contains(&delay), "ratio {ratio} seed {seed}: delay {delay}");
                    }
                }
            }
        }
    }

    #[test]
    fn a_young_baseline_is_judged_with_a_wider_band_that_closes_when_mature() {
        // The same 1.3x jobs after n stable completions: less evidence while young than with
        // no widening, exactly the same once mature. (completions before, young evidence lower)
        let table = [(150, true), (400, true), (1000, false), (2000, false)];
        for (n, widened) in table {
            let data = history(171, n + 3, |i| if i >= n { 1.3 } else { 1.0 });
            let mut learnt = Detector::new(DetectorConfig::default());
            run(&mut learnt, &data[..n]);
            // The same learnt state, judged with and without the widening.
            let score = |young_z: f64| {
                let cfg = DetectorConfig { young_z, ..DetectorConfig::default() };
                let mut detector = Detector::restore(cfg, learnt.snapshot());
                run(&mut detector, &data[n..]).last().expect("verdicts").score
            };
            let (with, without) = (score(1.5), score(0.0));
            if widened {
                assert!(with < without, "after {n}: {with} against {without}");
            } else {
                assert_eq!(with, without, "after {n}");
            }
        }
    }

    #[test]
    fn a_young_baseline_freezes_earlier_so_a_step_is_not_absorbed() {
        // 1.5x jobs from completion 150: while the evidence is between the young and the mature
        // freeze fractions, a young baseline no longer learns; a mature one (same evidence)
        // still does.
        let cfg = DetectorConfig { young_freeze_fraction: 0.2, ..DetectorConfig::default() };
        let (young_at, mature_at) = (150, 2000);
        for (n, frozen) in [(young_at, true), (mature_at, false)] {
            let data = history(191, n + 200, |i| if i >= n { 1.5 } else { 1.0 });
            let mut detector = Detector::new(cfg.clone());
            run(&mut detector, &data[..n]);
            let mut checked = 0;
            for &(t, v) in &data[n..] {
                let before = detector.snapshot().location;
                // The baseline learns, or not, on the evidence including this completion.
                let Verdict { score, alert } = detector.observe(t, v);
                if (cfg.young_freeze_fraction..cfg.freeze_fraction).contains(&score) && !alert {
                    let moved = detector.snapshot().location != before;
                    assert_eq!(moved, !frozen, "after {n}, score {score}");
                    checked += 1;
                }
            }
            assert!(checked > 0, "after {n}: the evidence never lay between the fractions");
        }
    }

    #[test]
    fn a_young_baseline_with_a_learning_lag_does_not_learn_a_step_it_has_not_judged() {
        // 1.25x jobs from completion 150 of a new class. Without the lag the plain average
        // takes in every one of them until the evidence freezes it; with a lag of 50, the 40
        // after the step are still waiting (with the 10 before), and once mature the detector
        // learns at once again, nothing left waiting.
        let (n, shifted) = (150, 40);
        let data = history(193, 1_100, |i| if (n..n + shifted).contains(&i) { 1.25 } else { 1.0 });
        let mut level_moved = Vec::new();
        for lag in [0, 50] {
            let cfg = DetectorConfig { young_learning_lag: lag, ..DetectorConfig::default() };
            let mut detector = Detector::new(cfg.clone());
            run(&mut detector, &data[..n]);
            let before = detector.snapshot().location;
            run(&mut detector, &data[n..n + shifted]);
            level_moved.push(detector.snapshot().location - before);
            let waiting: Vec<f64> = detector.snapshot().young_pending.iter().map(|&[t, _]| t).collect();
            let expected: Vec<f64> = if lag == 0 {
                Vec::new()
            } else {
                data[n + shifted - lag..n + shifted].iter().map(|&(t, _)| t).collect()
            };
            assert_eq!(waiting, expected, "lag {lag}");
            // A snapshot carries the completions still waiting.
            let mut resumed = Detector::restore(cfg, detector.snapshot());
            let (a, b) = (run(&mut detector, &data[n + shifted..]), run(&mut resumed, &data[n + shifted..]));
            assert_eq!(a, b, "lag {lag}: a restored detector continues identically");
            assert!(detector.snapshot().young_pending.is_empty(), "lag {lag}: nothing waits once mature");
        }
        assert!(level_moved[0] > 2.0 * level_moved[1].abs(), "moved without and with the lag: {level_moved:?}");
    }

    #[test]
    fn rebaseline_starts_a_new_baseline_after_an_intended_change() {
        // A deploy doubles the run time on purpose at completion STABLE.
        let data = history(181, STABLE + 600, |i| if i >= STABLE { 2.0 } else { 1.0 });
        let deploy_s = data[STABLE].0 - 1.0;
        let mut kept = Detector::new(DetectorConfig::default());
        assert!(alert_starts(&run(&mut kept, &data)).len() == 1, "without a rebaseline it alerts");

        let mut detector = Detector::new(DetectorConfig::default());
        run(&mut detector, &data[..STABLE]);
        detector.rebaseline(deploy_s);
        assert_eq!(detector.completions(), 0);
        assert_eq!(detector.baseline(deploy_s), None, "warming up again");
        // A job that started before the deploy and ends after it is not learnt from.
        detector.observe(deploy_s + 60.0, 1800.0);
        assert_eq!(detector.completions(), 0);
        let verdicts = run(&mut detector, &data[STABLE..]);
        assert!(verdicts.iter().all(|v| !v.alert), "the new level is the new normal");
        let b = detector.baseline(data.last().expect("data").0).expect("warmed up");
        assert!((1.6..2.4).contains(&(b.median_s / 1800.0)), "{b:?}");
        // And the new baseline catches the next real slowdown.
        let slower: Vec<(f64, f64)> = history(182, 40, |_| 8.0).iter().map(|&(t, v)| (t + 1e8, v)).collect();
        let starts = alert_starts(&run(&mut detector, &slower));
        assert!(starts.first().is_some_and(|&s| s < 6), "{starts:?}");
    }

    #[test]
    fn rebaseline_ends_a_firing_alert_and_survives_a_snapshot() {
        let data = history(191, STABLE + 20, |i| if i >= STABLE { 3.0 } else { 1.0 });
        let mut detector = Detector::new(DetectorConfig::default());
        run(&mut detector, &data);
        assert!(detector.is_alerting());
        let now = data.last().expect("data").0;
        detector.rebaseline(now);
        assert!(!detector.is_alerting());
        assert_eq!(detector.recent_median_s().map(|m| m > 3000.0), Some(true), "recent durations kept");
        let state = detector.snapshot();
        assert_eq!(state.baseline_since_s, Some(now));
        let json = serde_json::to_string(&state).expect("serialises");
        let back: DetectorState = serde_json::from_str(&json).expect("parses");
        let restored = Detector::restore(DetectorConfig::default(), back).snapshot();
        // serde_json's default float parser may be one ulp off (no `float_roundtrip`), so the
        // numbers are compared to 1e-12 and the rest exactly.
        assert_eq!((restored.completions, restored.firing, restored.recent), (0, false, state.recent));
        assert_eq!(restored.baseline_since_s, state.baseline_since_s);
        for (a, b) in [(restored.scale, state.scale), (restored.scale_inside_abs, state.scale_inside_abs)] {
            assert!((a - b).abs() <= 1e-12 * b.abs(), "{a} against {b}");
        }
    }

    #[test]
    fn a_single_extreme_job_does_not_alert() {
        let mut data = history(61, STABLE + 50, |_| 1.0);
        data[STABLE].1 *= 1000.0;
        let verdicts = run(&mut Detector::new(DetectorConfig::default()), &data);
        assert!(verdicts.iter().all(|v| !v.alert));
    }

    #[test]
    fn snapshot_and_restore_continue_identically() {
        let data = history(71, STABLE + 400, |i| if i >= STABLE + 200 { 2.0 } else { 1.0 });
        let cfg = DetectorConfig::default();
        let mut original = Detector::new(cfg.clone());
        let split = STABLE + 205; // mid-alert, so hold-down state is exercised too
        run(&mut original, &data[..split]);
        let mut resumed = Detector::restore(cfg, original.snapshot());
        assert_eq!(resumed.snapshot(), original.snapshot());
        for &(t, v) in &data[split..] {
            assert_eq!(original.observe(t, v), resumed.observe(t, v));
        }
        assert_eq!(resumed.snapshot(), original.snapshot());
    }

    /// `n` completions at exponential gaps (15 min on average, so every time of day is seen)
    /// whose ln-median is ln(1800 s) + `profile(day fraction)`, sigma 0.25, 2% stragglers at
    /// 2-5x, and durations passed through `distort(day fraction, duration)`.
    fn cyclic_history(
        seed: u64,
        n: usize,
        profile: impl Fn(f64) -> f64,
        mut distort: impl FnMut(f64, f64, &mut Rng) -> f64,
    ) -> Vec<(f64, f64)> {
        let mut rng = Rng(seed);
        let mut t = T0;
        (0..n)
            .map(|_| {
                t += -900.0 * rng.uniform().ln();
                let f = day_fraction(t);
                let mut v = 1800.0 * (profile(f) + 0.25 * rng.normal()).exp();
                if rng.uniform() < 0.02 {
                    v *= 2.0 + 3.0 * rng.uniform();
                }
                (t, distort(f, v, &mut rng))
            })
            .collect()
    }

    /// Largest error of the learnt ln-median against ln(1800 s) + `profile`, over the day.
    fn worst_profile_error(detector: &Detector, profile: impl Fn(f64) -> f64) -> f64 {
        (0..96)
            .map(|q| {
                let f = (q as f64 + 0.5) / 96.0;
                let b = detector.baseline(T0 + f * 86_400.0).expect("warmed up");
                (b.median_s.ln() - 1800f64.ln() - profile(f)).abs()
            })
            .fold(0.0, f64::max)
    }

    const TAU: f64 = 2.0 * std::f64::consts::PI;

    /// The daily mean of a profile, which the detector's level (not its profile) carries.
    fn daily_mean(profile: impl Fn(f64) -> f64) -> f64 {
        (0..96).map(|q| profile((q as f64 + 0.5) / 96.0)).sum::<f64>() / 96.0
    }

    /// `n` completions in bursts of 40, a minute apart, the bursts 10 h apart (plus up to 5 h,
    /// so they visit every time of day): 30 min median, sigma 0.25, a daily cycle of ±0.3 in ln
    /// with a daily mean of 0, no stragglers.
    fn bursty_history(seed: u64, n: usize) -> Vec<(f64, f64)> {
        let mut rng = Rng(seed);
        let mut data = Vec::with_capacity(n);
        let mut burst = 0.0;
        while data.len() < n {
            let start = T0 + 36_000.0 * burst + 18_000.0 * rng.uniform();
            burst += 1.0;
            for k in 0..40 {
                let t = start + 60.0 * f64::from(k);
                let daily = 0.3 * (TAU * t / 86_400.0).sin();
                data.push((t, 1800.0 * (daily + 0.25 * rng.normal()).exp()));
            }
        }
        data.truncate(n);
        data
    }

    #[test]
    fn bursts_at_one_time_of_day_do_not_move_the_level() {
        // Learnt from the raw ln-duration, the level was a mean over the times of day seen, so
        // each burst moved it by its own daily offset at once (40 completions at up to ±0.3),
        // which the harmonic profile, orthogonal to a constant, does not take back: 0.0084 rms
        // error of the level here, 0.0144 of the expected ln-duration at the completions'
        // times; learnt from the residual after the profile, 0.0033 and 0.0114.
        let (mut level_square, mut square, mut count) = (0.0, 0.0, 0.0);
        for seed in 1..=8 {
            let data = bursty_history(seed, 8000);
            let mut detector = Detector::new(DetectorConfig::default());
            for (i, &(t, v)) in data.iter().enumerate() {
                if i >= 3000 {
                    let truth = 1800f64.ln() + 0.3 * (TAU * t / 86_400.0).sin();
                    square += (detector.expected_ln(t) - truth).powi(2);
                    count += 1.0;
                }
                detector.observe(t, v);
            }
            // The profile's harmonics have a daily mean of 0: the level is the daily mean.
            level_square += (detector.snapshot().location - 1800f64.ln()).powi(2);
        }
        let level_rms = (level_square / 8.0).sqrt();
        let rms = (square / count).sqrt();
        assert!(level_rms < 0.006, "error of the level, rms {level_rms:.4}");
        assert!(rms < 0.013, "error of the expected ln-duration at the completions, rms {rms:.4}");
    }

    #[test]
    fn the_harmonic_profile_recovers_a_known_daily_cycle() {
        // 3,000 completions (a month), sigma 0.25. (name, ln-profile over the day fraction)
        type Profile = fn(f64) -> f64;
        let table: [(&str, Profile); 4] = [
            ("flat", |_| 0.0),
            ("+-20% sine", |f| (1.0 + 0.2 * (TAU * f).sin()).ln()),
            ("two harmonics", |f| 0.15 * (TAU * f).cos() + 0.08 * (2.0 * TAU * f).sin()),
            ("slow at 03:00", |f| 0.3 * (TAU * (f - 0.125)).cos()),
        ];
        for (name, profile) in table {
            let mean = daily_mean(profile);
            for seed in 1..=6 {
                let data = cyclic_history(seed, STABLE, profile, |_, v, _| v);
                let mut detector = Detector::new(DetectorConfig::default());
                assert!(run(&mut detector, &data).iter().all(|v| !v.alert), "{name} seed {seed}");
                // The shape, as shown per hour in snapshots: within 0.04 in ln (4%) at every
                // hour (at most 0.031 here); the 24 hour bins it replaced, ~125 completions
                // each, were off by 0.035 to 0.075 on the same data.
                let shown = detector.snapshot().season_offset;
                for (bin, offset) in shown.iter().enumerate() {
                    let error = offset - (profile((bin as f64 + 0.5) / 24.0) - mean);
                    assert!(error.abs() < 0.04, "{name} seed {seed} hour {bin}: error {error:.4}");
                }
                // The baseline (level included, which 2% stragglers lift by ~1%): within 5%.
                let worst = worst_profile_error(&detector, profile);
                assert!(worst < 0.05, "{name} seed {seed}: worst error {worst:.4}");
            }
        }
    }

    #[test]
    fn stragglers_barely_move_the_profile() {
        let cycle = |f: f64| (1.0 + 0.2 * (TAU * f).sin()).ln();
        // (name, share of extra stragglers, where in the day, how much slower, most error in ln)
        let table = [
            ("10% at 10x all day", 0.10, (0.0, 1.0), 10.0, 0.06),
            ("30% at 10x between 03:00 and 04:00", 0.30, (0.125, 0.167), 10.0, 0.06),
            ("half of 03:00-04:00 at 20x", 0.5, (0.125, 0.167), 20.0, 0.08),
        ];
        for (name, share, (from, to), ratio, tolerance) in table {
            let data = cyclic_history(7, STABLE, cycle, |f, v, rng| {
                let hit = (from..to).contains(&f) && rng.uniform() < share;
                if hit {
                    v * ratio
                } else {
                    v
                }
            });
            let mut detector = Detector::new(DetectorConfig::default());
            run(&mut detector, &data);
            // The level may rise a little with so many stragglers; the shape must hold.
            let level = detector.snapshot().location - 1800f64.ln();
            let worst = (0..96)
                .map(|q| {
                    let f = (q as f64 + 0.5) / 96.0;
                    let b = detector.baseline(T0 + f * 86_400.0).expect("warmed up");
                    (b.median_s.ln() - 1800f64.ln() - level - cycle(f)).abs()
                })
                .fold(0.0, f64::max);
            assert!(worst < tolerance, "{name}: worst error {worst:.4}");
            assert!(level.abs() < 0.06, "{name}: level moved by {level:.4}");
        }
    }

    #[test]
    fn a_class_seen_only_in_office_hours() {
        // Completions only between 09:00 and 17:00 UTC, slowest at 13:00: the fit holds there,
        // and the slowest hour for running jobs is looked for among the hours seen.
        let profile = |f: f64| 0.2 * (TAU * (f - 13.0 / 24.0)).cos();
        let data: Vec<(f64, f64)> = cyclic_history(9, 3 * STABLE, profile, |_, v, _| v)
            .into_iter()
            .filter(|&(t, _)| (9.0 / 24.0..17.0 / 24.0).contains(&day_fraction(t)))
            .collect();
        assert!(data.len() > STABLE / 2, "{}", data.len());
        let mut detector = Detector::new(DetectorConfig::default());
        assert!(run(&mut detector, &data).iter().all(|v| !v.alert));
        for hour in [9.5, 11.0, 13.0, 15.0, 16.5] {
            let b = detector.baseline(T0 + hour * 3600.0).expect("warmed up");
            let error = b.median_s.ln() - 1800f64.ln() - profile(hour / 24.0);
            // 0.045 (was 0.04) since the weekly profile: six more coefficients fitted on the
            // same completions add a little estimation noise (0.042 at 13:00).
            assert!(error.abs() < 0.045, "{hour}h: error {error:.4}");
        }
        let at_peak = detector.running_evidence(1800.0 * 0.2f64.exp());
        assert!(at_peak.abs() < 0.3, "a typical 13:00 job is not unusual: {at_peak}");
    }

    #[test]
    fn a_snapshot_from_before_the_harmonic_profile_still_loads() {
        // The state of the 24-bin version: bins learnt on a +-20% sine, no harmonic fields.
        let offsets: Vec<f64> =
            (0..SEASON_BINS).map(|b| (1.0 + 0.2 * (TAU * (b as f64 + 0.5) / 24.0).sin()).ln()).collect();
        let (counts, cusum, recent) = (vec![208.0; SEASON_BINS], vec![0.0; SHIFTS], vec![1800.0; RECENT]);
        let old = serde_json::json!({
            "completions": 5000, "location": 1800f64.ln(), "scale": 0.25,
            "season_offset": offsets, "season_count": counts,
            "cusum": cusum, "firing": false, "firing_for": 0,
            "recent": recent, "recent_len": RECENT, "recent_next": 0,
        });
        let state: DetectorState = serde_json::from_value(old).expect("an old snapshot parses");
        assert_eq!(state.profile_count, 0.0);
        let mut detector = Detector::restore(DetectorConfig::default(), state);
        let six = detector.baseline(T0 + 6.0 * 3600.0).expect("warmed up");
        let eighteen = detector.baseline(T0 + 18.0 * 3600.0).expect("warmed up");
        assert!((0.98..1.02).contains(&(six.median_s / 2160.0)), "{six:?}");
        assert!((0.98..1.02).contains(&(eighteen.median_s / 1440.0)), "{eighteen:?}");
        let restored = detector.snapshot();
        assert!(restored.profile_count > 0.0);
        // It learns on as usual: no alert on more of the same, a 2x step still caught.
        let data = history(141, STABLE + 30, |i| if i >= STABLE { 2.0 } else { 1.0 });
        let starts = alert_starts(&run(&mut detector, &data));
        assert_eq!(starts.len(), 1, "{starts:?}");
        assert!((STABLE..STABLE + 12).contains(&starts[0]), "{starts:?}");
    }

    /// A class at exponential gaps (15 min on average) whose median is 30 min times `factor(t)`,
    /// `sigma` in ln, `stragglers` of its jobs 2-5x slower.
    fn shaped_history(
        seed: u64,
        n: usize,
        sigma: f64,
        stragglers: f64,
        factor: impl Fn(f64) -> f64,
    ) -> Vec<(f64, f64)> {
        let mut rng = Rng(seed);
        let mut t = T0;
        (0..n)
            .map(|_| {
                t += -900.0 * rng.uniform().ln();
                let mut v = 1800.0 * factor(t) * (sigma * rng.normal()).exp();
                if rng.uniform() < stragglers {
                    v *= 2.0 + 3.0 * rng.uniform();
                }
                (t, v)
            })
            .collect()
    }

    /// Hours since a weekend that starts `start_h` hours into the Unix week.
    fn hours_into_weekend(t: f64, start_h: f64) -> f64 {
        (t / 3600.0 - start_h).rem_euclid(7.0 * 24.0)
    }

    #[test]
    fn a_weekend_step_is_held_right_after_its_edges() {
        // sigma 0.15, weekdays 1.1x, a 48 h weekend at 0.9x starting at an hour no bin or
        // harmonic is aligned with. Six weeks in, the baseline 3 h after each edge is within
        // 0.04 (in ln) of the truth; three harmonics of the week (the profile before
        // 2026-12-01) are off by ~0.08 there, a 48 h step being a square wave.
        // (configuration, expected within 0.04)
        let step = DetectorConfig::default();
        let harmonics = DetectorConfig { weekend_hours: 0.0, week_harmonics: 3, ..DetectorConfig::default() };
        for (cfg, held) in [(step, true), (harmonics, false)] {
            for (seed, start_h) in [(201, 37.0), (202, 101.0)] {
                let weekend = |t: f64| hours_into_weekend(t, start_h) < 48.0;
                let factor = |t: f64| if weekend(t) { 0.9 } else { 1.1 };
                let data = shaped_history(seed, 4000, 0.15, 0.0, factor);
                let mut detector = Detector::new(cfg.clone());
                run(&mut detector, &data);
                let end = data.last().expect("data").0;
                let worst = (0..14)
                    .map(|k| {
                        // 3 h after the k-th edge from the end of the data.
                        let weekend_start =
                            end - hours_into_weekend(end, start_h) * 3600.0 - (k / 2) as f64 * 7.0 * 86_400.0;
                        let at = weekend_start + if k % 2 == 0 { 3.0 } else { 51.0 } * 3600.0;
                        let b = detector.baseline(at).expect("warmed up");
                        (b.median_s / (1800.0 * factor(at))).ln().abs()
                    })
                    .fold(0.0, f64::max);
                assert_eq!(worst < 0.04, held, "held {held}, seed {seed}: worst error {worst:.3}");
            }
        }
    }

    #[test]
    fn once_two_weeks_old_the_weekly_profile_learns_nothing_while_an_alert_fires() {
        // A slow ramp (to 3x over 1,000 completions) from day ~31: the alert fires and the
        // baseline is frozen; the weekly profile no longer learns through the freeze either, so
        // the whole baseline at every time of the week is the same at the end of the ramp as
        // when the alert started. Learning through every freeze (the profile before 2026-12-01,
        // here `week_open_days` unbounded) moves it.
        const START: usize = 3000;
        let ramp = |i: usize| if i < START { 1.0 } else { 1.0 + 2.0 * ((i - START) as f64 / 1000.0).min(1.0) };
        let data = history(211, START + 1200, ramp);
        for (open_days, unchanged) in [(14.0, true), (f64::INFINITY, false)] {
            let cfg = DetectorConfig { week_open_days: open_days, ..DetectorConfig::default() };
            let mut detector = Detector::new(cfg);
            let verdicts = run(&mut detector, &data[..START + 200]);
            let first = alert_starts(&verdicts);
            assert!(first.first().is_some_and(|&s| s >= START), "{first:?}");
            let mut at_start = Detector::new(detector.config().clone());
            run(&mut at_start, &data[..first[0] + 1]);
            run(&mut detector, &data[START + 200..]);
            assert!(detector.is_alerting());
            let week: Vec<f64> = (0..84).map(|k| T0 + 7200.0 * k as f64).collect();
            let same = week.iter().all(|&t| detector.baseline(t) == at_start.baseline(t));
            assert_eq!(same, unchanged, "week_open_days {open_days}");
        }
    }

    #[test]
    fn the_share_of_stragglers_is_learnt() {
        // (stragglers in the data, learnt share within)
        let table = [(0.0, 0.0..0.01), (0.02, 0.01..0.04), (0.05, 0.03..0.08)];
        for (share, expected) in table {
            for (seed, sigma) in [(221, 0.15), (222, 0.25)] {
                let data = shaped_history(seed, 6000, sigma, share, |_| 1.0);
                let mut detector = Detector::new(DetectorConfig::default());
                run(&mut detector, &data);
                let learnt = detector.snapshot().straggler_share;
                assert!(expected.contains(&learnt), "{share} at sigma {sigma}: learnt {learnt:.4}");
            }
        }
    }

    #[test]
    fn stragglers_of_a_tight_class_alert_less_with_a_learnt_share() {
        // sigma 0.15 and 5% stragglers at 2-5x, where the assumed 2% reads them as a shift:
        // alert starts over 60 stable series of 3,000 completions, after the first 1,000.
        let starts = |learn: bool| -> usize {
            let cfg = DetectorConfig { learn_straggler_share: learn, ..DetectorConfig::default() };
            (0..60u64)
                .map(|seed| {
                    let data = shaped_history(230 + seed, 3000, 0.15, 0.05, |_| 1.0);
                    alert_starts(&run(&mut Detector::new(cfg.clone()), &data)).iter().filter(|&&s| s >= 1000).count()
                })
                .sum()
        };
        let (learnt, fixed) = (starts(true), starts(false));
        assert!(learnt < fixed, "learnt share {learnt} false alarms, fixed 2% {fixed}");
    }

    #[test]
    fn on_a_wide_class_two_moderate_stragglers_do_not_alert_but_two_12x_jobs_do() {
        // sigma 0.45 with 5% stragglers: two 7x jobs in a row are not 12x evidence there (they
        // alerted in 10 of 10 series before the 12x threshold followed the scale), two 12x
        // jobs still alert. (slope of the 12x threshold, ratio of the two jobs, alerts)
        let default = DetectorConfig::default().wide_threshold_slope;
        let table = [(default, 7.0, false), (default, 12.0, true), ([0.0; SHIFTS], 7.0, true)];
        for (slope, ratio, alerts) in table {
            let cfg = DetectorConfig { wide_threshold_slope: slope, ..DetectorConfig::default() };
            let mut alerted = 0;
            for seed in 240..250u64 {
                let mut data = shaped_history(seed, 3002, 0.45, 0.05, |_| 1.0);
                let mut detector = Detector::new(cfg.clone());
                run(&mut detector, &data[..3000]);
                if detector.is_alerting() {
                    continue;
                }
                for point in &mut data[3000..] {
                    point.1 = 1800.0 * ratio;
                }
                alerted += usize::from(run(&mut detector, &data[3000..]).iter().any(|v| v.alert));
            }
            assert_eq!(alerted > 5, alerts, "slope {slope:?}, two {ratio}x jobs: {alerted} of 10 alerted");
        }
    }

    #[test]
    fn a_snapshot_from_before_the_weekend_step_still_loads() {
        // The state of the previous version: no weekend step, no learnt straggler share.
        let data = history(251, STABLE + 40, |i| if i >= STABLE { 2.0 } else { 1.0 });
        let mut detector = Detector::new(DetectorConfig::default());
        run(&mut detector, &data[..STABLE]);
        let mut old = serde_json::to_value(detector.snapshot()).expect("serialises");
        for key in [
            "week_step_inside",
            "week_step_cross",
            "week_step_level",
            "straggler_share",
            "level_step_inside",
            "size_moments",
            "size_count",
            "size_gain",
            "scan_recent",
            "scan_moments",
            "scan_ref",
            "scan_since_s",
            "scan_ratio",
            "scan_values",
            "scan_sizes",
            "scan_sizes_gain",
        ] {
            old.as_object_mut().expect("an object").remove(key);
        }
        let state: DetectorState = serde_json::from_value(old).expect("an old snapshot parses");
        let mut restored = Detector::restore(DetectorConfig::default(), state);
        let starts = alert_starts(&run(&mut restored, &data[STABLE..]));
        assert_eq!(starts.len(), 1, "{starts:?}");
        assert!(starts[0] < 12, "{starts:?}");
        assert_eq!(restored.snapshot().week_step_inside.len(), WEEK_STEP_STARTS);
    }

    /// `n` completions of a class mixing two sizes: `share` of the jobs `size` times larger
    /// than the rest, sigma 0.25 within each, daily +-20%, 2% stragglers at 2-5x.
    fn two_size_history(seed: u64, n: usize, share: f64, size: f64, factor: impl Fn(usize) -> f64) -> Vec<(f64, f64)> {
        let mut rng = Rng(seed);
        let mut t = T0;
        (0..n)
            .map(|i| {
                t += -900.0 * rng.uniform().ln();
                let daily = 1.0 + 0.2 * (2.0 * std::f64::consts::PI * t / 86_400.0).sin();
                let mut v = 1800.0 * daily * factor(i) * (0.25 * rng.normal()).exp();
                if rng.uniform() < share {
                    v *= size;
                }
                if rng.uniform() < 0.02 {
                    v *= 2.0 + 3.0 * rng.uniform();
                }
                (t, v)
            })
            .collect()
    }

    #[test]
    fn a_class_of_two_sizes_is_judged_under_its_mixture_and_one_size_is_not() {
        for seed in 400..405u64 {
            let mut detector = Detector::new(DetectorConfig::default());
            run(&mut detector, &two_size_history(seed, STABLE, 0.3, 2.5, |_| 1.0));
            let sizes = detector.sizes().expect("two sizes in use");
            let (small, large) = if sizes.offsets[0] < sizes.offsets[1] { (0, 1) } else { (1, 0) };
            let gap = sizes.offsets[large] - sizes.offsets[small];
            assert!((sizes.weights[large] - 0.3).abs() < 0.05, "seed {seed}: {sizes:?}");
            assert!((gap - 2.5f64.ln()).abs() < 0.1, "seed {seed}: gap {gap}, {sizes:?}");
            // Each size's own spread, daily profile noise included; the pooled scale reads ~0.54.
            assert!((sizes.sigma - 0.25).abs() < 0.04, "seed {seed}: {sizes:?}");
            assert!(detector.scale() > 0.45, "seed {seed}: scale {}", detector.scale());

            let mut one = Detector::new(DetectorConfig::default());
            run(&mut one, &history(seed, STABLE, |_| 1.0));
            assert!(
                one.sizes().is_none(),
                "seed {seed}: one size, mixture {:?}, gain {}",
                one.learnt_sizes(),
                one.st.size_gain
            );
        }
    }

    #[test]
    fn the_size_mixture_reports_a_1_5x_step_of_a_two_size_class_sooner() {
        // The same series with and without the mixture: the sum of delays over ten series.
        let delays = |learn_sizes: bool| -> usize {
            (410..420u64)
                .map(|seed| {
                    let data = two_size_history(seed, STABLE + 200, 0.3, 2.5, |i| if i >= STABLE { 1.5 } else { 1.0 });
                    let mut detector = Detector::new(DetectorConfig { learn_sizes, ..DetectorConfig::default() });
                    run(&mut detector, &data[..STABLE]);
                    assert!(!detector.is_alerting(), "seed {seed}: alerting before the step");
                    let verdicts = run(&mut detector, &data[STABLE..]);
                    verdicts.iter().position(|v| v.alert).map_or(200, |i| i + 1)
                })
                .sum()
        };
        let (mixture, single) = (delays(true), delays(false));
        assert!(mixture * 3 < single * 2, "mixture {mixture}, single spread {single} (sums over ten series)");
    }

    #[test]
    fn a_wide_young_class_reports_a_step_sooner_with_its_band_capped_and_a_narrow_one_is_unchanged() {
        let cold = |sigma: f64, cap: f64, seed: u64| -> Vec<Verdict> {
            let mut data = shaped_history(seed, 500, sigma, 0.0, |_| 1.0);
            for point in &mut data[150..] {
                point.1 *= 1.5;
            }
            let cfg = DetectorConfig { young_band_scale_cap: cap, young_scan_z: 0.0, ..DetectorConfig::default() };
            run(&mut Detector::new(cfg), &data)
        };
        let delay = |verdicts: &[Verdict]| verdicts[150..].iter().position(|v| v.alert).map_or(350, |i| i + 1);
        let (mut capped, mut uncapped) = (0, 0);
        for seed in 430..440u64 {
            capped += delay(&cold(0.45, 0.3, seed));
            uncapped += delay(&cold(0.45, 0.0, seed));
            assert_eq!(cold(0.15, 0.3, seed), cold(0.15, 0.0, seed), "seed {seed}: a narrow class is judged as before");
        }
        assert!(
            capped * 10 < uncapped * 9,
            "wide cold 1.5x: {capped} capped, {uncapped} uncapped (sums over ten series)"
        );
    }

    #[test]
    fn the_young_scan_reports_a_wide_classs_step_sooner_and_leaves_a_narrow_class_alone() {
        let daily = |t: f64| 1.0 + 0.2 * (std::f64::consts::TAU * t / SECONDS_PER_DAY).sin();
        let cold = |sigma: f64, scan: bool, seed: u64| -> Vec<Verdict> {
            let mut data = shaped_history(seed, 500, sigma, 0.0, daily);
            for point in &mut data[150..] {
                point.1 *= 1.5;
            }
            let z = if scan { DetectorConfig::default().young_scan_z } else { 0.0 };
            run(&mut Detector::new(DetectorConfig { young_scan_z: z, ..DetectorConfig::default() }), &data)
        };
        let delay = |verdicts: &[Verdict]| verdicts[150..].iter().position(|v| v.alert).map_or(350, |i| i + 1);
        let (mut with, mut without) = (0, 0);
        for seed in 440..450u64 {
            let scanned = cold(0.45, true, seed);
            assert!(!scanned[..150].iter().any(|v| v.alert), "seed {seed}: no alert before the step");
            with += delay(&scanned);
            without += delay(&cold(0.45, false, seed));
            assert_eq!(
                cold(0.15, true, seed),
                cold(0.15, false, seed),
                "seed {seed}: a narrow class is judged as before"
            );
        }
        assert!(
            with * 10 < without * 9,
            "wide cold 1.5x: {with} with the scan, {without} without (sums over ten series)"
        );
    }

    #[test]
    fn a_young_class_of_two_sizes_reports_a_step_sooner_under_its_mixture_and_one_size_is_judged_as_before() {
        let off = |cfg: DetectorConfig| DetectorConfig { young_sizes_z: 0.0, ..cfg };
        let delay = |verdicts: &[Verdict]| verdicts[150..].iter().position(|v| v.alert).map_or(350, |i| i + 1);
        let (mut with, mut without) = (0, 0);
        for seed in 460..470u64 {
            let data = two_size_history(seed, 500, 0.3, 2.5, |i| if i >= 150 { 1.5 } else { 1.0 });
            let judged = run(&mut Detector::new(DetectorConfig::default()), &data);
            assert!(!judged[..150].iter().any(|v| v.alert), "seed {seed}: no alert before the step");
            with += delay(&judged);
            without += delay(&run(&mut Detector::new(off(DetectorConfig::default())), &data));
        }
        assert!(with * 4 < without * 3, "two sizes cold 1.5x: {with} under the mixture, {without} without (sums)");
        // One size, wide, narrow with 5% stragglers, or the reference's: the mixture is never
        // in use and nothing changes. (A wide class with 5% stragglers sometimes fits its
        // stragglers as a second size; the bench's `wide+5% stragglers` shows what that does.)
        let daily = |t: f64| 1.0 + 0.3 * (std::f64::consts::TAU * t / SECONDS_PER_DAY).sin();
        for seed in 470..476u64 {
            for (sigma, stragglers) in [(0.45, 0.0), (0.15, 0.05), (0.25, 0.02)] {
                let data = shaped_history(seed, 400, sigma, stragglers, daily);
                assert_eq!(
                    run(&mut Detector::new(DetectorConfig::default()), &data),
                    run(&mut Detector::new(off(DetectorConfig::default())), &data),
                    "seed {seed}, sigma {sigma}, stragglers {stragglers}: judged as before"
                );
            }
        }
    }

    #[test]
    fn the_young_scans_moments_give_the_values_after_the_profile_learnt_now() {
        let mut rng = Rng(451);
        let points: Vec<(f64, f64)> = (0..60).map(|i| (T0 + 1000.0 * i as f64, rng.normal())).collect();
        let coef = [0.3, -0.2, 0.1, 0.05, 0.0, 0.0];
        let basis = |t: f64| harmonic_basis(day_fraction(t));
        // All 60 added, the first 20 removed again: the moments of the last 40.
        let mut m = [0.0; SCAN_MOMENTS];
        for &(t, y) in &points {
            scan_moments_add(&mut m, y, &basis(t), 1.0);
        }
        for &(t, y) in &points[..20] {
            scan_moments_add(&mut m, y, &basis(t), -1.0);
        }
        let values: Vec<f64> = points[20..]
            .iter()
            .map(|&(t, y)| y - basis(t)[..4].iter().zip(&coef[..4]).map(|(b, c)| b * c).sum::<f64>())
            .collect();
        let (sum, sq) = scan_sums(&m, &coef, 4);
        assert!((m[0] - 40.0).abs() < 1e-12, "count {}", m[0]);
        assert!((sum - values.iter().sum::<f64>()).abs() < 1e-9, "{sum}");
        assert!((sq - values.iter().map(|v| v * v).sum::<f64>()).abs() < 1e-9, "{sq}");
    }

    #[test]
    fn the_young_scan_survives_a_restart_and_is_dropped_once_mature() {
        let data = shaped_history(452, 1200, 0.45, 0.0, |_| 1.0);
        let mut detector = Detector::new(DetectorConfig::default());
        run(&mut detector, &data[..400]);
        assert_eq!(detector.snapshot().scan_recent.len(), SCAN_WINDOWS[SCAN_WINDOWS.len() - 1]);
        let json = serde_json::to_string(&detector.snapshot()).expect("serialises");
        let parsed: DetectorState = serde_json::from_str(&json).expect("parses");
        assert_eq!(parsed.scan_recent.len(), SCAN_WINDOWS[SCAN_WINDOWS.len() - 1]);
        assert_eq!(parsed.scan_moments.len(), detector.snapshot().scan_moments.len());
        let mut restored = Detector::restore(DetectorConfig::default(), detector.snapshot());
        assert_eq!(run(&mut restored, &data[400..]), run(&mut detector, &data[400..]));
        let mature = detector.snapshot();
        assert!(
            mature.scan_recent.is_empty() && mature.scan_moments.is_empty() && mature.scan_values.is_empty(),
            "no scan state once mature"
        );
        // A class that completes a few times a day is still young after a week: dropped then.
        let slow: Vec<(f64, f64)> = data.iter().map(|&(t, v)| (T0 + (t - T0) * 4.0, v)).collect();
        let mut detector = Detector::new(DetectorConfig::default());
        run(&mut detector, &slow[..400]);
        let week = slow.iter().position(|&(t, _)| t - slow[1].0 > 7.0 * SECONDS_PER_DAY).expect("a week");
        assert!(week < 400 && detector.snapshot().scan_moments.is_empty(), "dropped after a week ({week})");
        assert!(detector.snapshot().scan_since_s.is_some(), "and not started again");
    }

    #[test]
    fn a_snapshot_carries_the_size_mixture() {
        let data = two_size_history(421, STABLE + 500, 0.3, 2.5, |_| 1.0);
        let mut detector = Detector::new(DetectorConfig::default());
        run(&mut detector, &data[..STABLE]);
        let json = serde_json::to_string(&detector.snapshot()).expect("serialises");
        let parsed = Detector::restore(DetectorConfig::default(), serde_json::from_str(&json).expect("parses"));
        let (a, b) = (parsed.sizes().expect("in use after a restart"), detector.sizes().expect("in use"));
        assert!((a.sigma - b.sigma).abs() < 1e-12 && (a.offsets[1] - b.offsets[1]).abs() < 1e-12, "{a:?} {b:?}");
        let mut restored = Detector::restore(DetectorConfig::default(), detector.snapshot());
        assert_eq!(run(&mut restored, &data[STABLE..]), run(&mut detector, &data[STABLE..]));
    }

    #[test]
    fn running_evidence_grows_with_elapsed_time() {
        let mut detector = Detector::new(DetectorConfig::default());
        assert_eq!(detector.running_evidence(1e6), 0.0, "nothing learnt yet");
        run(&mut detector, &history(81, STABLE, |_| 1.0));
        let typical = detector.running_evidence(1800.0);
        let six_hours = detector.running_evidence(6.0 * 3600.0);
        assert!(typical < 0.5, "typical {typical}");
        assert!(six_hours > 8.0, "six hours {six_hours}");
    }

    #[test]
    fn non_finite_inputs_are_ignored() {
        let mut detector = Detector::new(DetectorConfig::default());
        run(&mut detector, &history(91, 100, |_| 1.0));
        let before = detector.snapshot();
        detector.observe(f64::NAN, 10.0);
        detector.observe(T0, f64::INFINITY);
        assert_eq!(detector.snapshot(), before);
    }

    #[test]
    fn timestamps_parse_in_both_formats() {
        let table = [
            ("1970-01-01 00:00:00", 0.0),
            ("2026-11-21 10:00:00", 1_795_255_200.0),
            ("2026-11-21T10:00:00Z", 1_795_255_200.0),
            ("2026-11-21T11:00:00+01:00", 1_795_255_200.0),
            ("2026-11-21T04:30:00-05:30", 1_795_255_200.0),
            ("2026-11-21T10:00:00.250Z", 1_795_255_200.25),
            ("2024-02-29T00:00:00Z", 1_709_164_800.0),
            ("2000-03-01 00:00:00", 951_868_800.0),
        ];
        for (text, expected) in table {
            assert_eq!(parse_timestamp(text), Ok(expected), "{text}");
        }
        for bad in [
            "2026-13-01 00:00:00",
            "2025-02-29 00:00:00",
            "2026-11-21 24:00:00",
            "2026-11-21T10:00:00+1",
            "2026-11-21T10:00:00Q",
            "2026/11/21 10:00:00",
            "yesterday",
        ] {
            assert!(parse_timestamp(bad).is_err(), "{bad}");
        }
    }

    fn replay_str(input: &str) -> (Result<ReplayStats, ReplayError>, String) {
        let mut out = Vec::new();
        let result = replay(input.as_bytes(), &mut out, DetectorConfig::default());
        (result, String::from_utf8(out).expect("output is UTF-8"))
    }

    #[test]
    fn replay_echoes_timestamps_and_scores_every_row() {
        let input = "timestamp,value\r\n\
                     2026-11-21 10:00:00,1800\r\n\
                     2026-11-21T10:15:00Z,1700.5\n\
                     2026-11-21T11:30:00.5+01:00,1900\n\
                     \n";
        let (result, out) = replay_str(input);
        let stats = result.expect("valid input");
        assert_eq!(stats.rows, 3);
        assert_eq!(stats.alerts_started, 0);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "timestamp,score,alert");
        assert_eq!(lines[1], "2026-11-21 10:00:00,0.0000,0");
        assert_eq!(lines[2], "2026-11-21T10:15:00Z,0.0000,0");
        assert_eq!(lines[3], "2026-11-21T11:30:00.5+01:00,0.0000,0");
        assert_eq!(lines.len(), 4);
    }

    #[test]
    fn replay_alerts_on_a_slowdown() {
        let mut input = String::from("timestamp,value\n");
        for (t, v) in history(101, STABLE + 30, |i| if i >= STABLE { 4.0 } else { 1.0 }) {
            input.push_str(&format!("{},{v:.1}\n", t as i64));
        }
        // Unix seconds are not a supported format: rewrite them as RFC 3339 UTC times.
        let input: String = input
            .lines()
            .enumerate()
            .map(|(i, line)| {
                if i == 0 {
                    return format!("{line}\n");
                }
                let (t, v) = line.split_once(',').expect("two fields");
                let unix_s: i64 = t.parse().expect("integer time");
                format!("{},{v}\n", crate::job::rfc3339(unix_s * 1000))
            })
            .collect();
        let (result, out) = replay_str(&input);
        let stats = result.expect("valid input");
        assert_eq!(stats.rows as usize, STABLE + 30);
        assert_eq!(stats.alerts_started, 1);
        let first_alert = out.lines().skip(1).position(|l| l.ends_with(",1"));
        let first_alert = first_alert.expect("an alert row");
        assert!((STABLE..STABLE + 6).contains(&first_alert), "{first_alert}");
    }

    #[test]
    fn replay_rejects_a_bad_header() {
        let (result, _) = replay_str("time,duration\n2026-11-21 10:00:00,1800\n");
        let err = result.expect_err("bad header");
        assert!(matches!(err, ReplayError::Header { .. }));
        assert!(err.to_string().contains("line 1"), "{err}");
        let (result, _) = replay_str("");
        assert!(matches!(result, Err(ReplayError::Header { .. })));
    }

    #[test]
    fn replay_names_the_line_of_a_bad_row() {
        let table = [
            ("2026-11-21 10:00:00,abc", "not a number"),
            ("2026-11-21 10:00:00,-5", "finite number"),
            ("2026-11-21 10:00:00,NaN", "finite number"),
            ("2026-11-21 10:00:00", "expected 2 fields"),
            ("2026-02-30 10:00:00,1800", "bad timestamp"),
        ];
        for (bad_row, why) in table {
            let input = format!("timestamp,value\n2026-11-21 09:00:00,1800\n{bad_row}\n");
            let (result, _) = replay_str(&input);
            let err = result.expect_err(bad_row);
            assert!(matches!(err, ReplayError::Row { line: 3, .. }), "{err:?}");
            let message = err.to_string();
            assert!(message.starts_with("line 3: ") && message.contains(why), "{message}");
        }
    }

    #[test]
    fn a_weekend_seen_once_is_held_at_nearly_its_height() {
        // sigma 0.25, weekend 1.1x, weekdays 0.9x (a step of 0.20 in ln); 800 completions, so
        // the step is in use and has seen one weekend, about 9 standard errors from 0. The
        // James-Stein shrinkage (power 2) keeps 75-80% of its fit, which left the second weekend
        // under-predicted and alerting; the default power 8 keeps nearly all of it. (The fit
        // itself is still off the truth this young: its plain averages hold the first week,
        // learnt before the step was used.)
        // (week_step_shrink_power, mean learnt step within 0.05 of the truth)
        let truth = (1.1f64 / 0.9).ln();
        let default = DetectorConfig::default().week_step_shrink_power;
        for (power, held) in [(2.0, false), (default, true)] {
            let cfg = DetectorConfig { week_step_shrink_power: power, ..DetectorConfig::default() };
            let seeds = [261, 262, 263, 264, 265, 266];
            let mean_step = seeds
                .iter()
                .map(|&seed| {
                    let factor = |t: f64| if hours_into_weekend(t, 30.0) < 48.0 { 1.1 } else { 0.9 };
                    let data = shaped_history(seed, 800, 0.25, 0.0, factor);
                    let mut detector = Detector::new(cfg.clone());
                    run(&mut detector, &data);
                    // 24 h into the weekend against the same time of day three days later.
                    let end = data.last().expect("data").0;
                    let at = end - hours_into_weekend(end, 30.0) * 3600.0 + 24.0 * 3600.0;
                    let weekend = detector.baseline(at).expect("warmed up").median_s;
                    let weekday = detector.baseline(at + 3.0 * 86_400.0).expect("warmed up").median_s;
                    (weekend / weekday).ln()
                })
                .sum::<f64>()
                / seeds.len() as f64;
            assert_eq!(
                (mean_step - truth).abs() < 0.05,
                held,
                "power {power}: mean step {mean_step:.3}, truth {truth:.3}"
            );
        }
    }

    #[test]
    fn the_profile_band_widens_only_where_the_class_is_rarely_seen() {
        // A class completing every 15 min around the clock, and one completing only from 08:00
        // to 18:00 UTC (office hours). The first is judged exactly as without the band at
        // every hour; the second too inside its hours, and with a band beyond them that grows
        // with the distance from the hours it was seen at (the fit extrapolates there).
        let evenly = history(291, STABLE, |_| 1.0);
        let mut rng = Rng(292);
        let mut t = T0 + 8.0 * 3600.0;
        let office: Vec<(f64, f64)> = (0..STABLE)
            .map(|_| {
                t += 300.0;
                if (t.rem_euclid(86_400.0)) / 3600.0 >= 18.0 {
                    t += 14.0 * 3600.0;
                }
                (t, 1800.0 * (0.25 * rng.normal()).exp())
            })
            .collect();
        let margin_at = |data: &[(f64, f64)], hour: f64| {
            let mut detector = Detector::new(DetectorConfig::default());
            run(&mut detector, data);
            detector.leverage_margin(&harmonic_basis(hour / 24.0))
        };
        for hour in [0.0, 6.0, 9.0, 13.0, 17.5, 21.0] {
            assert_eq!(margin_at(&evenly, hour), 0.0, "evenly seen, {hour} h");
        }
        for hour in [9.0, 13.0, 16.0] {
            assert_eq!(margin_at(&office, hour), 0.0, "office hours, {hour} h");
        }
        let (just_after, evening) = (margin_at(&office, 19.0), margin_at(&office, 22.0));
        assert!(just_after > 0.0 && evening > just_after, "19 h: {just_after}, 22 h: {evening}");
    }

    #[test]
    fn weeks_two_and_three_do_not_under_predict_the_slow_side_of_the_week() {
        // sigma 0.15, +-20% daily, 2% stragglers, weekend 0.9x and weekdays 1.1x (a step of
        // -0.20 in ln). Over completions 1,000-2,000 (the class's second and third weeks), the
        // learnt expectation's mean error on the slow side (weekdays) against the fast side. A
        // step regressed on deviations from the moving level (a plain average while young, a
        // weekly wobble after) under-predicted the slow side by 0.005 in ln against the fast
        // one, where most of this family's false alarms started; one regressed on the
        // ln-duration after the daily profile, its own intercept absorbing the level, errs the
        // other way this young (the slow side 0.005 high: the first week, learnt before the
        // step is used, still weighs on its plain averages).
        // (step_from_level_free, slow side predicted at least as high as the fast side)
        for (level_free, even) in [(false, false), (true, true)] {
            let cfg = DetectorConfig { step_from_level_free: level_free, ..DetectorConfig::default() };
            let (mut slow, mut fast) = ((0.0, 0.0), (0.0, 0.0));
            for seed in 271..277 {
                let weekly = |t: f64| if hours_into_weekend(t, 30.0) < 48.0 { 0.9 } else { 1.1 };
                let factor = |t: f64| (1.0 + 0.2 * (std::f64::consts::TAU * day_fraction(t) + 1.0).sin()) * weekly(t);
                let data = shaped_history(seed, 2000, 0.15, 0.02, factor);
                let mut detector = Detector::new(cfg.clone());
                for (i, &(t, v)) in data.iter().enumerate() {
                    if i >= 1000 {
                        let error = (detector.baseline(t).expect("warm").median_s / (1800.0 * factor(t))).ln();
                        let side = if weekly(t) > 1.0 { &mut slow } else { &mut fast };
                        side.0 += error;
                        side.1 += 1.0;
                    }
                    detector.observe(t, v);
                }
            }
            let gap = fast.0 / fast.1 - slow.0 / slow.1;
            assert_eq!(
                gap < 0.0,
                even,
                "level_free {level_free}: the slow side is under-predicted by {gap:.4} against the fast one"
            );
        }
    }

    #[test]
    fn a_snapshot_with_two_hour_step_starts_still_loads() {
        // The state before 2026-12-02: 84 candidate starts, the step regressed on deviations
        // from the level. Restored, the learnt weekend is kept (the same expectation through
        // the week within 0.01 in ln), not learnt again from nothing.
        let factor = |t: f64| if hours_into_weekend(t, 30.0) < 48.0 { 0.9 } else { 1.1 };
        let data = shaped_history(281, 3000, 0.15, 0.0, factor);
        let mut detector = Detector::new(DetectorConfig::default());
        run(&mut detector, &data);
        let st = detector.snapshot();
        let mut old = st.clone();
        let even = |v: &[f64]| v.iter().step_by(2).copied().collect::<Vec<_>>();
        old.week_step_inside = even(&st.week_step_inside);
        old.level_step_inside = even(&st.level_step_inside);
        old.week_step_cross =
            even(&st.week_step_cross).iter().zip(&old.week_step_inside).map(|(c, p)| c - st.location * p).collect();
        old.week_step_level = st.week_step_level - st.location;
        let mut json = serde_json::to_value(&old).expect("serialises");
        json.as_object_mut().expect("an object").remove("step_level_free");
        let restored = Detector::restore(DetectorConfig::default(), serde_json::from_value(json).expect("parses"));
        assert_eq!(restored.snapshot().week_step_inside.len(), WEEK_STEP_STARTS);
        let end = data.last().expect("data").0;
        for hour in (0..168).step_by(5) {
            let at = end + f64::from(hour) * 3600.0;
            let (a, b) = (detector.baseline(at).expect("warm"), restored.baseline(at).expect("warm"));
            assert!((a.median_s / b.median_s).ln().abs() < 0.01, "hour {hour}: {} against {}", a.median_s, b.median_s);
        }
    }

    #[test]
    fn after_two_weeks_the_weekend_step_learns_through_a_freeze_but_not_through_an_alert() {
        // A slow ramp from day ~31 freezes the baseline (score >= freeze_fraction) some
        // completions before it alerts. A step learnt only outside freezes is censored on the
        // slow side of the week (a freeze stops learning exactly when residuals run high), so
        // with `step_learns_through_freeze` the step keeps learning in those completions, and
        // in neither case once the alert fires. (step_learns_through_freeze, learns while
        // frozen before the alert)
        const START: usize = 3000;
        let ramp = |i: usize| if i < START { 1.0 } else { 1.0 + 2.0 * ((i - START) as f64 / 1000.0).min(1.0) };
        let data = history(211, START + 400, ramp);
        for (through, learns) in [(true, true), (false, false)] {
            let cfg = DetectorConfig { step_learns_through_freeze: through, ..DetectorConfig::default() };
            let mut detector = Detector::new(cfg);
            let (mut frozen_learnt, mut frozen, mut firing_learnt) = (0, 0, 0);
            for (i, &(t, v)) in data.iter().enumerate() {
                let before = detector.snapshot().week_step_cross;
                let was = (detector.baseline_may_learn(), detector.is_alerting());
                let verdict = detector.observe(t, v);
                let moved = detector.snapshot().week_step_cross != before;
                // Judged on the completion's own verdict: frozen (not learning) yet not firing.
                let now_frozen = !detector.baseline_may_learn() && !verdict.alert && !was.1;
                // Past the profile's learning window (day ~14.6 at 96 completions a day).
                if i >= 1400 && now_frozen && !was.0 {
                    frozen += 1;
                    frozen_learnt += usize::from(moved);
                }
                if verdict.alert && was.1 {
                    firing_learnt += usize::from(moved);
                }
            }
            assert!(frozen > 0, "the ramp freezes the baseline before alerting");
            assert_eq!(frozen_learnt > 0, learns, "through {through}: learnt in {frozen_learnt} of {frozen}");
            assert_eq!(firing_learnt, 0, "through {through}: learnt while firing");
        }
    }

    #[test]
    fn a_class_first_seen_on_its_weekend_is_not_left_on_the_weekend_level() {
        // sigma 0.15, weekdays 1.1x, a 48 h weekend at 0.9x that starts with the data: the
        // level learns its first two days from the weekend alone and is frozen over part of
        // the first weekdays (they look like drift), so its completions hold more weekend than
        // the week does. Centred on the step's own share, the baseline stays ~0.04 (in ln) low
        // at every time of the week after four weeks and keeps alerting; centred on the level's
        // share, it is right. (level_step_centred, baseline within 0.02 of the truth)
        for (centred, right) in [(true, true), (false, false)] {
            let cfg = DetectorConfig { level_step_centred: centred, ..DetectorConfig::default() };
            for seed in [300, 308, 316, 324] {
                let factor = |t: f64| if hours_into_weekend(t, 0.0) < 48.0 { 0.9 } else { 1.1 };
                let data = shaped_history(seed, 3000, 0.15, 0.02, factor);
                let mut detector = Detector::new(cfg.clone());
                run(&mut detector, &data);
                let end = data.last().expect("data").0;
                let mean_error = (0..84)
                    .map(|k| {
                        let at = end + 7200.0 * k as f64;
                        (detector.baseline(at).expect("warmed up").median_s / (1800.0 * factor(at))).ln()
                    })
                    .sum::<f64>()
                    / 84.0;
                assert_eq!(mean_error.abs() < 0.02, right, "centred {centred}, seed {seed}: {mean_error:+.3}");
            }
        }
    }
}
