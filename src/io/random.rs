//! The random source for jitter: the one place outside tests that draws random numbers. The
//! decisions (`backoff`, `reconcile`, `outcome`) take the numbers it draws as arguments.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// A seeded random source for jitter. Seed it from the OS in production and from a constant in
/// tests and simulations.
#[derive(Debug)]
pub struct Jitter(SmallRng);

impl Jitter {
    pub fn from_os() -> Self {
        Jitter(SmallRng::from_os_rng())
    }

    pub fn seeded(seed: u64) -> Self {
        Jitter(SmallRng::seed_from_u64(seed))
    }

    /// A uniform number in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        self.0.random::<f64>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backoff::Backoff;
    use std::time::Duration;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn seeded_jitter_is_reproducible_and_spread() {
        let b = Backoff::new(S(1), S(64));
        let draw = |seed| {
            let mut j = Jitter::seeded(seed);
            (0..1000).map(|_| b.delay(7, j.unit())).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        let delays = draw(7);
        // A herd of 1,000 retries lands in every tenth of the 64 s window, none beyond it.
        let mut deciles = [0usize; 10];
        for d in &delays {
            assert!(*d < S(64));
            deciles[(d.as_secs_f64() / 6.4) as usize] += 1;
        }
        assert!(deciles.iter().all(|&n| n > 60), "{deciles:?}");
    }
}
