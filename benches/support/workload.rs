//! Workload families for the drift benches: the shapes of run time real fleets have, beyond the
//! one generator the detector was first tuned on (issue 12, item 6).
//!
//! A family fixes the spread of run time (sigma of ln), the share of stragglers (2-5x, uniform
//! factor), the daily cycle (amplitude of `1 + a sin`, random phase per series), a weekday /
//! weekend cycle (the median is `1 + w` times higher at the weekend and `1 - w` times on
//! weekdays, `w` signed; the weekend's 48 hours start at a random hour, as if in the fleet's
//! local time), how completions arrive (exponential gaps, or bursts) and whether the class
//! mixes two job sizes.

use super::rng::Rng;

pub const MEDIAN_S: f64 = 1800.0;
pub const MEAN_GAP_S: f64 = 900.0;
pub const START_UNIX_S: f64 = 1_767_225_600.0; // 2026-01-01T00:00:00Z (a Thursday)
/// A straggler's duration is its job's times a factor uniform in this range.
pub const STRAGGLER_FACTOR: (f64, f64) = (2.0, 5.0);
const DAY_S: f64 = 86_400.0;
const WEEK_S: f64 = 7.0 * DAY_S;
const TAU: f64 = 2.0 * std::f64::consts::PI;

#[derive(Clone, Copy, Debug)]
pub enum Arrivals {
    /// Exponential gaps, a completion every `MEAN_GAP_S` on average.
    Steady,
    /// Bursts of `mean_size` completions on average (geometric), 30 s to 3 min apart, the bursts
    /// separated by long exponential gaps (same mean rate overall) and starting only in the
    /// `hours` hours of the day after a random hour (a batch submitted in office hours).
    Bursts { mean_size: f64, hours: f64 },
}

#[derive(Clone, Copy, Debug)]
pub struct Family {
    pub name: &'static str,
    pub sigma: f64,
    pub straggler_share: f64,
    pub daily: f64,
    /// Weekend factor `1 + weekly`, weekday `1 - weekly` (signed: a weekend may be faster).
    pub weekly: f64,
    pub arrivals: Arrivals,
    /// (share of large jobs, their size relative to the small ones), or `None`.
    pub two_sizes: Option<(f64, f64)>,
}

const BASE: Family = Family {
    name: "reference",
    sigma: 0.25,
    straggler_share: 0.02,
    daily: 0.2,
    weekly: 0.0,
    arrivals: Arrivals::Steady,
    two_sizes: None,
};

/// The families the targets must hold on. The first is the generator of the drift issue.
pub fn families() -> Vec<Family> {
    vec![
        BASE,
        Family { name: "tight", sigma: 0.15, straggler_share: 0.0, daily: 0.1, ..BASE },
        Family { name: "tight+5% stragglers", sigma: 0.15, straggler_share: 0.05, daily: 0.3, ..BASE },
        Family { name: "wide", sigma: 0.45, straggler_share: 0.0, daily: 0.0, ..BASE },
        Family { name: "wide+5% stragglers", sigma: 0.45, straggler_share: 0.05, daily: 0.3, ..BASE },
        Family { name: "weekly +-10%", daily: 0.3, weekly: 0.1, ..BASE },
        Family { name: "weekend -10%", sigma: 0.15, daily: 0.2, weekly: -0.1, ..BASE },
        Family { name: "bursty", arrivals: Arrivals::Bursts { mean_size: 20.0, hours: 10.0 }, ..BASE },
        Family { name: "two sizes (30% at 2.5x)", two_sizes: Some((0.3, 2.5)), ..BASE },
        Family {
            name: "everything",
            sigma: 0.35,
            straggler_share: 0.05,
            daily: 0.3,
            weekly: 0.1,
            arrivals: Arrivals::Bursts { mean_size: 10.0, hours: 12.0 },
            two_sizes: Some((0.2, 2.0)),
        },
    ]
}

/// Draws one series of a family: (completion time, duration) pairs, the median multiplied by
/// `factor(i)` for completion `i`.
pub struct Generator {
    family: Family,
    rng: Rng,
    t: f64,
    daily_phase: f64,
    weekend_start_s: f64,
    burst_left: u64,
    burst_start_ok: (f64, f64),
}

impl Generator {
    pub fn new(family: Family, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let daily_phase = TAU * rng.uniform();
        let t = START_UNIX_S + DAY_S * rng.uniform();
        // Drawn apart from the main sequence, so the reference family reproduces the drift
        // issue's generator exactly.
        let mut aux = Rng::new(seed ^ 0x005E_ED0F_7EE4_u64);
        let weekend_start_s = WEEK_S * aux.uniform();
        let hours_from = 24.0 * aux.uniform();
        let hours = match family.arrivals {
            Arrivals::Bursts { hours, .. } => hours,
            Arrivals::Steady => 24.0,
        };
        Generator { family, rng, t, daily_phase, weekend_start_s, burst_left: 0, burst_start_ok: (hours_from, hours) }
    }

    fn next_time(&mut self) -> f64 {
        match self.family.arrivals {
            Arrivals::Steady => self.t += self.rng.exponential(MEAN_GAP_S),
            Arrivals::Bursts { mean_size, .. } => {
                if self.burst_left > 0 {
                    self.burst_left -= 1;
                    self.t += 30.0 + 150.0 * self.rng.uniform();
                } else {
                    // The burst's size, then a gap that keeps the mean rate, ending in an
                    // allowed hour of the day.
                    let size = 1 + (self.rng.uniform().ln() / (1.0 - 1.0 / mean_size).ln()) as u64;
                    self.burst_left = size - 1;
                    self.t += self.rng.exponential(MEAN_GAP_S * mean_size);
                    while !self.burst_may_start() {
                        self.t += 600.0;
                    }
                }
            }
        }
        self.t
    }

    /// Hours since the start of the latest weekend (0 to 168), for diagnostics.
    #[allow(dead_code)]
    pub fn hours_since_weekend(&self, t: f64) -> f64 {
        (t - START_UNIX_S - self.weekend_start_s).rem_euclid(WEEK_S) / 3600.0
    }

    /// Hours since the start of the day's window where bursts may start (0 to 24), for diagnostics.
    #[allow(dead_code)]
    pub fn hours_since_window(&self, t: f64) -> f64 {
        ((t.rem_euclid(DAY_S)) / 3600.0 - self.burst_start_ok.0).rem_euclid(24.0)
    }

    /// The median at time `t` without size mixing or stragglers, for diagnostics.
    #[allow(dead_code)]
    pub fn true_median(&self, t: f64) -> f64 {
        let f = &self.family;
        let daily = 1.0 + f.daily * (TAU * t / DAY_S + self.daily_phase).sin();
        let weekly = if self.hours_since_weekend(t) < 48.0 { 1.0 + f.weekly } else { 1.0 - f.weekly };
        MEDIAN_S * daily * weekly
    }

    fn burst_may_start(&self) -> bool {
        let hour = (self.t.rem_euclid(DAY_S)) / 3600.0;
        let (from, len) = self.burst_start_ok;
        (hour - from).rem_euclid(24.0) < len
    }

    /// The next completion, its median multiplied by `factor`.
    pub fn next(&mut self, factor: f64) -> (f64, f64) {
        let (t, duration, _) = self.next_with_truth(factor);
        (t, duration)
    }

    /// The next completion as `next` draws it (same random numbers, same result), with the
    /// truth an oracle may know: ln of the median at that time before any change (daily and
    /// weekly cycle of the small size, factor 1). Neither the job's size nor whether it is a
    /// straggler is told, only their distributions (the `Family`).
    pub fn next_with_truth(&mut self, factor: f64) -> (f64, f64, f64) {
        let t = self.next_time();
        let f = &self.family;
        let daily = 1.0 + f.daily * (TAU * t / DAY_S + self.daily_phase).sin();
        let weekend = (t - START_UNIX_S - self.weekend_start_s).rem_euclid(WEEK_S) < 2.0 * DAY_S;
        let weekly = if weekend { 1.0 + f.weekly } else { 1.0 - f.weekly };
        let size = match f.two_sizes {
            Some((share, ratio)) if self.rng.uniform() < share => ratio,
            _ => 1.0,
        };
        let mut duration = MEDIAN_S * daily * weekly * size * factor * (f.sigma * self.rng.normal()).exp();
        if self.rng.uniform() < f.straggler_share {
            let (low, high) = STRAGGLER_FACTOR;
            duration *= low + (high - low) * self.rng.uniform();
        }
        (t, duration, (MEDIAN_S * daily * weekly).ln())
    }
}
