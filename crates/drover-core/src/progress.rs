//! A running job's progress as its handler reports it (a fraction done, from 0 to 1), and what
//! it says about when the job will finish: the SLA-at-risk and running-long alerts and a
//! drain's early requeue project from it. Pure: elapsed times and fractions come in.

/// Below this fraction a projection from progress is not trusted: a job's first steps (loading,
/// warm-up) are rarely like the rest.
pub const MIN_FRACTION: f64 = 0.05;

/// Seconds a running job still needs, from its own pace so far (`elapsed * (1 - p) / p`), or
/// `None` when it reported no progress, or too little to go by.
pub fn remaining_s(elapsed_s: f64, fraction: Option<f64>) -> Option<f64> {
    let p = fraction.filter(|p| p.is_finite())?.clamp(0.0, 1.0);
    if p < MIN_FRACTION || !elapsed_s.is_finite() {
        return None;
    }
    Some(elapsed_s.max(0.0) * (1.0 - p) / p)
}

/// The job's whole run time at its pace so far, when its progress says.
pub fn projected_total_s(elapsed_s: f64, fraction: Option<f64>) -> Option<f64> {
    remaining_s(elapsed_s, fraction).map(|r| r + elapsed_s.max(0.0))
}

/// A fraction for people: `40%`.
pub fn percent(fraction: f64) -> String {
    format!("{:.0}%", (fraction.clamp(0.0, 1.0) * 100.0).floor())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remaining_time_follows_the_jobs_own_pace() {
        let cases: Vec<(f64, Option<f64>, Option<f64>)> = vec![
            // 90% after 30 minutes: about 3 minutes and 20 seconds to go.
            (1800.0, Some(0.9), Some(200.0)),
            (600.0, Some(0.5), Some(600.0)),
            (10.0, Some(1.0), Some(0.0)),
            // Too little progress to go by, none at all, or nonsense.
            (60.0, Some(0.01), None),
            (60.0, None, None),
            (60.0, Some(f64::NAN), None),
            // Out of range is clamped: more than done is done.
            (60.0, Some(1.5), Some(0.0)),
        ];
        for (elapsed, p, want) in cases {
            let got = remaining_s(elapsed, p);
            match (got, want) {
                (Some(g), Some(w)) => assert!((g - w).abs() < 1e-6, "{elapsed} {p:?}: {g} != {w}"),
                (g, w) => assert_eq!(g, w, "{elapsed} {p:?}"),
            }
        }
        assert_eq!(projected_total_s(300.0, Some(0.25)), Some(1200.0));
        assert_eq!((percent(0.4), percent(0.999), percent(2.0)), ("40%".into(), "99%".into(), "100%".into()));
    }
}
