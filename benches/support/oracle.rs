//! An oracle drift detector for the drift bench: it knows the generator's truth (the median at
//! every completion before any change, the spread, the straggler share and distribution, the
//! mixture of job sizes) and runs CUSUMs on the exact log-likelihood ratio of "the median times
//! r" against "no change". It never learns and never errs about the baseline, so its delays
//! bound from below what a detector that must learn the baseline can reach at the same
//! false-alarm rate (see `drift_eval`'s `DRIFT_EVAL_ORACLE`).
//!
//! It is told neither whether a job is a straggler nor its size, only their distributions: the
//! null density of `x = ln(duration) - ln(true median)` is the mixture
//! `Σ_sizes w (1 - p) N(x - ln size; 0, σ) + w p g(x - ln size)`, `g` the density of
//! `σ Z + ln F`, F uniform in [lo, hi] (the straggler factor), and under "times r" the whole
//! density moves by `ln r`.
//!
//! Pure functions on numbers, std only, so the tests run without the bench:
//! `rustc --edition 2021 --test benches/support/oracle.rs -o oracle_test && ./oracle_test`.

#![allow(dead_code)] // not every user calls everything

const LN_SQRT_2PI: f64 = 0.918_938_533_204_672_8;

/// ln erfc(x), fractional error of erfc below 1.2e-7 everywhere (Chebyshev fit of Numerical
/// Recipes' `erfcc`), computed in logs so that the far tail never underflows.
pub fn ln_erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98 + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let ln_upper = t.ln() + poly; // ln erfc(|x|)
    if x >= 0.0 {
        ln_upper
    } else {
        (2.0 - ln_upper.exp()).ln()
    }
}

/// ln Φ(z), Φ the standard normal distribution function.
pub fn ln_normal_cdf(z: f64) -> f64 {
    if z < 0.0 {
        ln_erfc(-z / std::f64::consts::SQRT_2) - std::f64::consts::LN_2
    } else {
        // Φ(z) = 1 - Q(z), Q small: ln(1 - Q) without cancellation.
        (-(ln_erfc(z / std::f64::consts::SQRT_2) - std::f64::consts::LN_2).exp()).ln_1p()
    }
}

/// ln(e^a - e^b) for a > b.
fn ln_diff_exp(a: f64, b: f64) -> f64 {
    if b == f64::NEG_INFINITY {
        return a;
    }
    a + (-(b - a).exp_m1()).ln()
}

/// ln(Φ(hi) - Φ(lo)) for lo < hi, accurate in both tails.
pub fn ln_normal_mass(lo: f64, hi: f64) -> f64 {
    debug_assert!(lo < hi);
    if hi <= 0.0 {
        ln_diff_exp(ln_normal_cdf(hi), ln_normal_cdf(lo))
    } else if lo >= 0.0 {
        // Upper tail: Q(lo) - Q(hi), Q(z) = Φ(-z).
        ln_diff_exp(ln_normal_cdf(-lo), ln_normal_cdf(-hi))
    } else {
        (1.0 - ln_normal_cdf(lo).exp() - ln_normal_cdf(-hi).exp()).ln()
    }
}

fn ln_sum_exp(a: f64, b: f64) -> f64 {
    let m = a.max(b);
    if m == f64::NEG_INFINITY {
        return m;
    }
    m + ((a - m).exp() + (b - m).exp()).ln()
}

/// The true null distribution of `x = ln(duration) - ln(median of a small job at factor 1)`.
#[derive(Clone, Debug)]
pub struct TrueModel {
    sigma: f64,
    /// (ln of the mixture weight, ln size) per job size.
    sizes: Vec<(f64, f64)>,
    ln_regular: f64,
    ln_straggler: f64,
    /// ln of the straggler factor's range.
    ln_low: f64,
    ln_high: f64,
    ln_width: f64,
}

impl TrueModel {
    /// `two_sizes`: (share of large jobs, their size), as in the workload families;
    /// `straggler_factor`: the uniform range of a straggler's factor.
    pub fn new(sigma: f64, straggler_share: f64, two_sizes: Option<(f64, f64)>, straggler_factor: (f64, f64)) -> Self {
        let sizes = match two_sizes {
            Some((share, ratio)) if share > 0.0 => vec![((1.0 - share).ln(), 0.0), (share.ln(), ratio.ln())],
            _ => vec![(0.0, 0.0)],
        };
        TrueModel {
            sigma,
            sizes,
            ln_regular: (1.0 - straggler_share).ln(),
            ln_straggler: straggler_share.ln(),
            ln_low: straggler_factor.0.ln(),
            ln_high: straggler_factor.1.ln(),
            ln_width: (straggler_factor.1 - straggler_factor.0).ln(),
        }
    }

    /// ln density of `σ Z + ln F` at y (F uniform in [lo, hi], density e^v / (hi - lo) in v):
    /// `e^(y + σ²/2) Φ-mass of [(ln lo - y - σ²)/σ, (ln hi - y - σ²)/σ] / (hi - lo)`.
    pub fn ln_straggler_density(&self, y: f64) -> f64 {
        let s = self.sigma;
        let shifted = y + s * s;
        y + 0.5 * s * s - self.ln_width + ln_normal_mass((self.ln_low - shifted) / s, (self.ln_high - shifted) / s)
    }

    fn ln_regular_density(&self, y: f64) -> f64 {
        let z = y / self.sigma;
        -0.5 * z * z - LN_SQRT_2PI - self.sigma.ln()
    }

    /// ln of the null density of x.
    pub fn ln_density(&self, x: f64) -> f64 {
        let mut total = f64::NEG_INFINITY;
        for &(ln_w, ln_size) in &self.sizes {
            let y = x - ln_size;
            let regular = self.ln_regular + self.ln_regular_density(y);
            let part = if self.ln_straggler == f64::NEG_INFINITY {
                regular
            } else {
                ln_sum_exp(regular, self.ln_straggler + self.ln_straggler_density(y))
            };
            total = ln_sum_exp(total, ln_w + part);
        }
        total
    }

    /// Exact log-likelihood ratio of "median times e^ln_ratio" against "no change" for x.
    pub fn llr(&self, x: f64, ln_ratio: f64) -> f64 {
        self.ln_density(x - ln_ratio) - self.ln_density(x)
    }
}

/// One CUSUM step: `max(0, s + llr)`; returns whether it crossed `h`, in which case it restarts
/// from 0 (threshold crossings with reset: no hold-down, no release).
pub fn cusum_step(s: &mut f64, llr: f64, h: f64) -> bool {
    *s = (*s + llr).max(0.0);
    if *s >= h {
        *s = 0.0;
        true
    } else {
        false
    }
}

/// A bank of CUSUMs with one threshold each; it alarms when any crosses, and then all restart.
pub fn bank_step<const N: usize>(s: &mut [f64; N], llrs: &[f64; N], h: &[f64; N]) -> bool {
    let mut crossed = false;
    for j in 0..N {
        s[j] = (s[j] + llrs[j]).max(0.0);
        crossed |= s[j] >= h[j];
    }
    if crossed {
        *s = [0.0; N];
    }
    crossed
}

/// Counts alarms at many thresholds in one pass: a bank whose N CUSUMs share one threshold, at
/// every threshold of `bank_grid`, and each CUSUM alone at every threshold of its own grid (all
/// grids of the same length).
#[derive(Clone, Debug)]
pub struct GridCounter<const N: usize> {
    pub bank_grid: Vec<f64>,
    pub single_grids: [Vec<f64>; N],
    bank: Vec<[f64; N]>,
    single: Vec<[f64; N]>,
    /// Alarms of the bank at each threshold of its grid.
    pub bank_alarms: Vec<u64>,
    /// Alarms of CUSUM j alone at the k-th threshold of its grid: `single_alarms[k][j]`.
    pub single_alarms: Vec<[u64; N]>,
}

impl<const N: usize> GridCounter<N> {
    pub fn new(bank_grid: Vec<f64>, single_grids: [Vec<f64>; N]) -> Self {
        let n = bank_grid.len();
        assert!(single_grids.iter().all(|g| g.len() == n), "grids of one length");
        GridCounter {
            bank_grid,
            single_grids,
            bank: vec![[0.0; N]; n],
            single: vec![[0.0; N]; n],
            bank_alarms: vec![0; n],
            single_alarms: vec![[0; N]; n],
        }
    }

    /// Restarts every CUSUM (a new series); the counts stay.
    pub fn restart(&mut self) {
        self.bank.iter_mut().for_each(|s| *s = [0.0; N]);
        self.single.iter_mut().for_each(|s| *s = [0.0; N]);
    }

    /// One completion; its alarms are counted when `counted`.
    pub fn step(&mut self, llrs: &[f64; N], counted: bool) {
        for k in 0..self.bank_grid.len() {
            if bank_step(&mut self.bank[k], llrs, &[self.bank_grid[k]; N]) && counted {
                self.bank_alarms[k] += 1;
            }
            for (j, &llr) in llrs.iter().enumerate() {
                if cusum_step(&mut self.single[k][j], llr, self.single_grids[j][k]) && counted {
                    self.single_alarms[k][j] += 1;
                }
            }
        }
    }
}

/// The smallest threshold of an increasing grid from which on every alarm count is within
/// `max_alarms` (None: not even the largest).
pub fn calibrate(grid: &[f64], alarms: &[u64], max_alarms: f64) -> Option<f64> {
    let mut chosen = None;
    for k in (0..grid.len()).rev() {
        if alarms[k] as f64 > max_alarms {
            break;
        }
        chosen = Some(grid[k]);
    }
    chosen
}

/// `n` thresholds from `from` in steps of `step`.
pub fn grid(from: f64, step: f64, n: usize) -> Vec<f64> {
    (0..n).map(|k| from + step * k as f64).collect()
}

#[cfg(test)]
mod tests {
    #[allow(unused_imports)] // the bench builds this module without its tests
    use super::*;

    /// Φ by midpoint integration, for checks.
    fn integrate(f: impl Fn(f64) -> f64, lo: f64, hi: f64, n: usize) -> f64 {
        let dx = (hi - lo) / n as f64;
        (0..n).map(|i| f(lo + (i as f64 + 0.5) * dx)).sum::<f64>() * dx
    }

    #[test]
    fn normal_cdf_and_tails() {
        assert!((ln_normal_cdf(0.0) - 0.5f64.ln()).abs() < 1e-7);
        assert!((ln_normal_cdf(1.959_964) - 0.975f64.ln()).abs() < 1e-7);
        assert!((ln_normal_cdf(-1.959_964) - 0.025f64.ln()).abs() < 1e-6);
        // Far lower tail: Φ(-30) ≈ φ(30)/30 (1 - 1/900).
        let asymptotic = -450.0 - LN_SQRT_2PI - 30f64.ln() + (1.0 - 1.0 / 900.0f64).ln();
        assert!((ln_normal_cdf(-30.0) - asymptotic).abs() < 1e-5, "{}", ln_normal_cdf(-30.0));
        assert!(ln_normal_cdf(40.0) > -1e-300 && ln_normal_cdf(40.0) <= 0.0);
        // Mass of an interval in either tail, against the asymptotic difference.
        let m = ln_normal_mass(25.0, 26.0);
        assert!((m - ln_normal_cdf(-25.0)).abs() < 1e-6, "{m}");
        assert!((ln_normal_mass(-1.0, 1.0) - 0.682_689_49f64.ln()).abs() < 1e-6);
    }

    #[test]
    fn densities_integrate_to_one() {
        for &(sigma, p, sizes) in
            &[(0.15, 0.05, None), (0.45, 0.05, None), (0.25, 0.02, Some((0.3, 2.5))), (0.35, 0.05, Some((0.2, 2.0)))]
        {
            let model = TrueModel::new(sigma, p, sizes, (2.0, 5.0));
            let total = integrate(|x| model.ln_density(x).exp(), -6.0, 9.0, 200_000);
            assert!((total - 1.0).abs() < 1e-6, "sigma {sigma}: {total}");
            let straggler = integrate(|y| model.ln_straggler_density(y).exp(), -6.0, 9.0, 200_000);
            assert!((straggler - 1.0).abs() < 1e-6, "{straggler}");
        }
    }

    #[test]
    fn straggler_density_matches_its_convolution() {
        let model = TrueModel::new(0.3, 0.05, None, (2.0, 5.0));
        for &y in &[-1.0, 0.5, 1.0, 1.6, 3.0, 6.0] {
            // ∫ φ((y - v)/σ)/σ e^v / 3 dv over v in [ln 2, ln 5].
            let direct = integrate(
                |v| (-(0.5 * ((y - v) / 0.3f64).powi(2)) - LN_SQRT_2PI - 0.3f64.ln() + v).exp() / 3.0,
                2f64.ln(),
                5f64.ln(),
                100_000,
            );
            let ours = model.ln_straggler_density(y).exp();
            assert!((ours / direct - 1.0).abs() < 1e-5, "y {y}: {ours} vs {direct}");
        }
    }

    #[test]
    fn llr_is_the_gaussian_one_without_stragglers() {
        let model = TrueModel::new(0.25, 0.0, None, (2.0, 5.0));
        let d = 2f64.ln();
        for &x in &[-1.0, 0.0, 0.3, 2.0] {
            let expected = (d * x - 0.5 * d * d) / (0.25 * 0.25);
            assert!((model.llr(x, d) - expected).abs() < 1e-9);
        }
        // Its mean under the alternative is the Kullback-Leibler information Δ²/2.
        let with = TrueModel::new(0.45, 0.05, None, (2.0, 5.0));
        let kl = integrate(|x| with.ln_density(x - d).exp() * with.llr(x, d), -6.0, 10.0, 100_000);
        let gaussian = 0.5 * (d / 0.45).powi(2);
        assert!(kl > 0.0 && kl < gaussian, "{kl} vs {gaussian}");
    }

    #[test]
    fn far_values_stay_finite() {
        let model = TrueModel::new(0.15, 0.05, Some((0.2, 2.0)), (2.0, 5.0));
        for &x in &[-10.0, 8.0, 20.0] {
            for &r in &[1.12f64, 12.0] {
                assert!(model.llr(x, r.ln()).is_finite(), "x {x} r {r}");
            }
        }
    }

    #[test]
    fn cusums_reset_and_calibrate() {
        let mut s = 0.0;
        assert!(!cusum_step(&mut s, 3.0, 5.0));
        assert!(cusum_step(&mut s, 3.0, 5.0));
        assert_eq!(s, 0.0);
        let mut bank = [0.0, 0.0];
        assert!(!bank_step(&mut bank, &[1.0, -1.0], &[2.0, 2.0]));
        assert!(bank_step(&mut bank, &[1.0, 5.0], &[2.0, 9.0]));
        assert_eq!(bank, [0.0, 0.0]);
        let g = grid(1.0, 1.0, 3);
        let mut counter = GridCounter::<2>::new(g.clone(), [g.clone(), g]);
        for _ in 0..6 {
            counter.step(&[1.0, 0.5], true);
        }
        assert_eq!(counter.single_alarms, vec![[6, 3], [3, 1], [2, 1]]);
        assert_eq!(counter.bank_alarms, vec![6, 3, 2]);
        let g = &counter.bank_grid;
        assert_eq!(calibrate(g, &counter.bank_alarms, 2.0), Some(3.0));
        assert_eq!(calibrate(g, &[5, 1, 3], 2.0), None);
        assert_eq!(calibrate(g, &[5, 3, 1], 2.0), Some(3.0));
    }
}
