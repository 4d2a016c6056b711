//! Full-jitter exponential backoff: the one way Drover spaces out anything it tries again
//! (job retries, broker reconnects, and later unit restarts).
//!
//! "Full jitter" (AWS architecture blog, 2015): the delay before try `n` is drawn uniformly from
//! `[0, min(cap, base * 2^(n-1)))`. Spreading over the whole interval, rather than adding a little
//! noise to a fixed delay, is what breaks up herds: a thousand jobs that failed in the same second
//! come back spread over the whole window instead of as a wave. The random number is passed in,
//! so the function is pure and tested by tables; the adapters draw it from `io::random::Jitter`.

use std::time::Duration;

/// Base and cap of an exponential backoff.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
}

impl Backoff {
    pub const fn new(base: Duration, cap: Duration) -> Self {
        Backoff { base, cap }
    }

    /// The ceiling of the window for try number `attempt` (1-based): `min(cap, base * 2^(attempt-1))`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(63);
        let factor = 1u128 << doublings;
        let ceiling_ns = self.base.as_nanos().saturating_mul(factor);
        Duration::from_nanos(ceiling_ns.min(self.cap.as_nanos()).min(u64::MAX as u128) as u64)
    }

    /// "Equal jitter": half of the window fixed, half drawn. For restarts of units, where a
    /// near-zero delay (possible under full jitter) would let a crash-looping unit restart in
    /// a tight loop; the delay still grows to the cap and still spreads a herd.
    pub fn equal_jitter(&self, attempt: u32, unit: f64) -> Duration {
        let half = self.ceiling(attempt) / 2;
        half + Backoff::new(half, half).delay(1, unit)
    }

    /// Full-jitter delay for try `attempt` given `unit`, a uniform random number in `[0, 1)`.
    /// Values of `unit` outside that range are clamped, so a bad random source cannot produce a
    /// delay past the cap.
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        let unit = if unit.is_finite() { unit.clamp(0.0, 1.0) } else { 0.0 };
        self.ceiling(attempt).mul_f64(unit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn ceiling_doubles_up_to_the_cap() {
        let b = Backoff::new(S(10), S(300));
        let cases = [(0, 10), (1, 10), (2, 20), (3, 40), (5, 160), (6, 300), (50, 300), (u32::MAX, 300)];
        for (attempt, secs) in cases {
            assert_eq!(b.ceiling(attempt), S(secs), "attempt {attempt}");
        }
    }

    #[test]
    fn delay_spans_the_whole_window_and_never_passes_the_cap() {
        let b = Backoff::new(S(1), S(60));
        let cases: &[(u32, f64, Duration)] = &[
            (1, 0.0, Duration::ZERO),
            (1, 0.5, Duration::from_millis(500)),
            (4, 0.25, S(2)),
            (10, 0.5, S(30)),
            (10, 1.0, S(60)),
            (10, 7.0, S(60)),
            (10, -1.0, Duration::ZERO),
            (10, f64::NAN, Duration::ZERO),
        ];
        for (attempt, unit, want) in cases {
            assert_eq!(b.delay(*attempt, *unit), *want, "attempt {attempt} unit {unit}");
        }
    }

    #[test]
    fn equal_jitter_never_drops_below_half_the_window() {
        let b = Backoff::new(S(2), S(60));
        let cases = [(1, 0.0, 1_000), (1, 0.999, 1_999), (3, 0.5, 6_000), (10, 0.0, 30_000), (10, 1.0, 60_000)];
        for (attempt, unit, ms) in cases {
            assert_eq!(b.equal_jitter(attempt, unit), Duration::from_millis(ms), "attempt {attempt} unit {unit}");
        }
    }
}
