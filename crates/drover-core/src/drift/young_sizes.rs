//! The young scan of a class that mixes two job sizes (`DetectorConfig::young_sizes_z`).
//!
//! The young scan compares the mean ln-duration of the latest completions with the mean of
//! the earlier ones. A class of two sizes is bimodal in ln, and a mean difference then carries
//! the evidence of the pooled spread (~0.49 for 30% of the jobs 2.5x larger, each size
//! spreading by 0.25): about half of what the mixture's own likelihood gives a 1.5x slowdown.
//! So for such a class the scan compares instead each completion's log-likelihood ratio of
//! "slower by `shift`" against "unchanged" under a mixture of two sizes fitted to the young
//! completions themselves. Any fixed transform of the values keeps the two-sample comparison
//! fair when nothing has changed, since the earlier and the latest completions are
//! transformed alike; the mixture only decides how much a slowdown shows.
//!
//! Here: the batch fit of the mixture (a few EM steps over the young completions, warm
//! started) and its gain over a single Gaussian, pure functions over plain numbers.

use super::Sizes;

/// EM steps per fit (warm started from the previous fit, so a few suffice).
const EM_STEPS: usize = 6;
/// A value farther than this many spreads from both sizes is a straggler: left out of the
/// M step, so a 2-5x tail is not fitted as a size.
const OUTLIER_SPREADS: f64 = 3.0;
/// Share of stragglers both models are judged with when the mixture's gain is measured.
const CONTAMINATION: f64 = 0.03;
/// Smallest share either size is started from or kept at.
const MIN_SHARE: f64 = 0.02;

/// Fits two Gaussian sizes sharing one spread to `values` (ln-durations after the daily
/// profile), from `start` or, without one, from the values' 35th and 85th percentiles.
/// Returns the fit and its mean log-likelihood gain per value over one Gaussian fitted to the
/// same values, less BIC's penalty for the two extra parameters, ln(n)/n per value. `None`
/// for fewer than 20 values or no spread.
pub(super) fn fit(values: &[f64], start: Option<Sizes>, min_spread: f64) -> Option<(Sizes, f64)> {
    let n = values.len();
    if n < 20 {
        return None;
    }
    let (mean, sd) = mean_sd(values);
    if sd.is_nan() || sd <= min_spread {
        return None;
    }
    let mut sizes = start.filter(|s| s.sigma > 0.0 && s.weights.iter().all(|w| w.is_finite())).unwrap_or_else(|| {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let q = |p: f64| sorted[((n - 1) as f64 * p) as usize];
        Sizes { weights: [0.7, 0.3], offsets: [q(0.35), q(0.85)], sigma: (0.5 * sd).max(min_spread) }
    });
    for _ in 0..EM_STEPS {
        let mut w = [0.0; 2];
        let mut s = [0.0; 2];
        let mut ss = 0.0;
        let ln_odds = (sizes.weights[0] / sizes.weights[1]).ln();
        for &x in values {
            let [r0, r1] = responsibilities(&sizes, ln_odds, x);
            if (x - sizes.offsets[0]).abs().min((x - sizes.offsets[1]).abs()) > OUTLIER_SPREADS * sizes.sigma {
                continue;
            }
            w[0] += r0;
            w[1] += r1;
            s[0] += r0 * x;
            s[1] += r1 * x;
            ss += r0 * (x - sizes.offsets[0]).powi(2) + r1 * (x - sizes.offsets[1]).powi(2);
        }
        let total = w[0] + w[1];
        if total <= 0.0 {
            return None;
        }
        let share = (w[1] / total).clamp(MIN_SHARE, 1.0 - MIN_SHARE);
        sizes = Sizes {
            weights: [1.0 - share, share],
            offsets: [s[0] / w[0].max(1e-12), s[1] / w[1].max(1e-12)],
            // The trimmed values' spread is a little narrow; what they lose is a few percent.
            sigma: (ss / total).sqrt().max(min_spread),
        };
    }
    // Both judged with a share of stragglers (a Gaussian three times as wide), or a 4x job
    // far beyond either narrow size would outweigh the mixture's gain on a hundred others.
    let wide = |x: f64| CONTAMINATION.ln() + ln_gaussian(x, mean, 3.0 * sd);
    let core = (1.0 - CONTAMINATION).ln();
    let gain = values
        .iter()
        .map(|&x| {
            super::log_add_exp(core + ln_mixture(&sizes, x), wide(x))
                - super::log_add_exp(core + ln_gaussian(x, mean, sd), wide(x))
        })
        .sum::<f64>()
        / n as f64;
    let penalty = (n as f64).ln() / n as f64;
    Some((sizes, gain - penalty))
}

/// Each size's posterior probability for `x`, given ln(w0 / w1).
fn responsibilities(sizes: &Sizes, ln_odds: f64, x: f64) -> [f64; 2] {
    let z0 = (x - sizes.offsets[0]) / sizes.sigma;
    let z1 = (x - sizes.offsets[1]) / sizes.sigma;
    let r1 = 1.0 / (1.0 + (ln_odds - 0.5 * (z0 * z0 - z1 * z1)).exp());
    [1.0 - r1, r1]
}

fn ln_mixture(sizes: &Sizes, x: f64) -> f64 {
    let a = sizes.weights[0].ln() + ln_gaussian(x, sizes.offsets[0], sizes.sigma);
    let b = sizes.weights[1].ln() + ln_gaussian(x, sizes.offsets[1], sizes.sigma);
    super::log_add_exp(a, b)
}

fn ln_gaussian(x: f64, mean: f64, sd: f64) -> f64 {
    let z = (x - mean) / sd;
    -0.5 * z * z - sd.ln() - 0.5 * (2.0 * std::f64::consts::PI).ln()
}

fn mean_sd(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt())
}

#[cfg(test)]
mod tests_support {
    /// A deterministic Gaussian sample (Box-Muller over a small LCG).
    pub(super) fn normals(n: usize, seed: u64) -> Vec<f64> {
        let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let mut uniform = move || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        };
        (0..n).map(|_| (-2.0 * uniform().ln()).sqrt() * (2.0 * std::f64::consts::PI * uniform()).cos()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::normals;
    use super::*;

    fn two_sizes(n: usize, share: f64, gap: f64, sigma: f64, seed: u64) -> Vec<f64> {
        normals(n, seed)
            .into_iter()
            .enumerate()
            .map(|(i, z)| sigma * z + if (i as f64 * 0.618_034).fract() < share { gap } else { 0.0 })
            .collect()
    }

    #[test]
    fn finds_two_sizes_from_150_completions() {
        for seed in 1..6 {
            let values = two_sizes(150, 0.3, 2.5f64.ln(), 0.25, seed);
            let (sizes, gain) = fit(&values, None, 0.03).expect("a fit");
            let gap = sizes.offsets[1] - sizes.offsets[0];
            assert!((gap - 0.916).abs() < 0.15, "seed {seed}: gap {gap}");
            assert!((sizes.weights[1] - 0.3).abs() < 0.1, "seed {seed}: {sizes:?}");
            assert!((sizes.sigma - 0.25).abs() < 0.06, "seed {seed}: {sizes:?}");
            assert!(gain > 0.05, "seed {seed}: gain {gain}");
        }
    }

    #[test]
    fn one_size_gains_nothing_after_the_penalty() {
        for (seed, sigma) in [(1, 0.15), (2, 0.25), (3, 0.45), (4, 0.25), (5, 0.35)] {
            let values: Vec<f64> = normals(150, seed).into_iter().map(|z| sigma * z).collect();
            let (_, gain) = fit(&values, None, 0.03).expect("a fit");
            assert!(gain < 0.02, "seed {seed}, sigma {sigma}: gain {gain}");
        }
    }

    #[test]
    fn a_warm_start_keeps_the_fit() {
        let values = two_sizes(300, 0.3, 2.5f64.ln(), 0.25, 7);
        let (cold, _) = fit(&values, None, 0.03).expect("a fit");
        let (warm, _) = fit(&values, Some(cold), 0.03).expect("a fit");
        assert!((warm.offsets[1] - cold.offsets[1]).abs() < 0.02, "{cold:?} {warm:?}");
    }

    #[test]
    fn too_few_or_equal_values_give_no_fit() {
        assert!(fit(&[1.0; 10], None, 0.03).is_none());
        assert!(fit(&[1.0; 100], None, 0.03).is_none());
    }
}
