//! Rolling waves: which hosts go in which wave, and whether a wave that was just touched looks
//! worse than the hosts left alone. Pure, tested by tables; `drover rollout` (in
//! `drover`'s `cli::drainctl`) does the I/O.

use std::collections::BTreeMap;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum WaveSize {
    Count(usize),
    Percent(f64),
}

/// Parses `1,2,25%,100%`.
pub fn parse_waves(text: &str) -> Result<Vec<WaveSize>, String> {
    text.split(',')
        .map(|w| {
            let w = w.trim();
            if let Some(p) = w.strip_suffix('%') {
                match p.parse::<f64>() {
                    Ok(v) if v > 0.0 && v <= 100.0 => Ok(WaveSize::Percent(v)),
                    _ => Err(format!("`{w}`: a percentage from 1% to 100%")),
                }
            } else {
                match w.parse::<usize>() {
                    Ok(n) if n > 0 => Ok(WaveSize::Count(n)),
                    _ => Err(format!("`{w}`: a number of hosts or a percentage, e.g. 1,2,25%,100%")),
                }
            }
        })
        .collect()
}

/// Splits hosts into waves, in the order given. A percentage is of all hosts; the last wave
/// takes whatever is left, so no host is ever skipped.
pub fn waves(hosts: &[String], sizes: &[WaveSize]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut next = 0;
    for (i, size) in sizes.iter().enumerate() {
        if next >= hosts.len() {
            break;
        }
        let n = match *size {
            WaveSize::Count(n) => n,
            WaveSize::Percent(p) => ((hosts.len() as f64 * p / 100.0).ceil() as usize).max(1),
        };
        let end = if i + 1 == sizes.len() { hosts.len() } else { (next + n).min(hosts.len()) };
        out.push(hosts[next..end].to_vec());
        next = end;
    }
    if next < hosts.len() {
        out.push(hosts[next..].to_vec());
    }
    out
}

/// Outcomes seen on a group of hosts during a soak.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Seen {
    pub attempts: u64,
    pub failures: u64,
    pub durations: Vec<f64>,
}

impl Seen {
    fn failure_rate(&self) -> f64 {
        if self.attempts == 0 {
            0.0
        } else {
            self.failures as f64 / self.attempts as f64
        }
    }

    fn median(&self) -> Option<f64> {
        let mut d = self.durations.clone();
        if d.is_empty() {
            return None;
        }
        d.sort_by(f64::total_cmp);
        Some(d[d.len() / 2])
    }
}

/// Minimum attempts on both sides before rates or medians are compared.
pub const MIN_EVIDENCE: u64 = 5;

/// Whether the touched hosts look clearly worse than the untouched ones; the reason if so.
/// `misconfigured` lists units of touched hosts that failed their preflight or keep failing.
pub fn judge(touched: &Seen, untouched: &Seen, misconfigured: &BTreeMap<String, String>) -> Option<String> {
    if let Some((unit, why)) = misconfigured.iter().next() {
        return Some(format!("{unit} is {why} after the change"));
    }
    if touched.attempts >= MIN_EVIDENCE && untouched.attempts >= MIN_EVIDENCE {
        let (t, u) = (touched.failure_rate(), untouched.failure_rate());
        if t > (2.0 * u).max(u + 0.1) {
            return Some(format!(
                "failure rate {:.0}% on the touched hosts against {:.0}% on the others ({} of {} attempts)",
                t * 100.0,
                u * 100.0,
                touched.failures,
                touched.attempts
            ));
        }
    }
    if touched.durations.len() as u64 >= MIN_EVIDENCE && untouched.durations.len() as u64 >= MIN_EVIDENCE {
        if let (Some(t), Some(u)) = (touched.median(), untouched.median()) {
            if t > 1.5 * u {
                return Some(format!("median run time {t:.1}s on the touched hosts against {u:.1}s on the others"));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("h{i}")).collect()
    }

    #[test]
    fn waves_table() {
        let sizes = parse_waves("1,2,25%,100%").expect("parses");
        let lens = |n: usize| waves(&hosts(n), &sizes).iter().map(Vec::len).collect::<Vec<_>>();
        assert_eq!(lens(1), vec![1]);
        assert_eq!(lens(3), vec![1, 2]);
        assert_eq!(lens(10), vec![1, 2, 3, 4]);
        assert_eq!(lens(40), vec![1, 2, 10, 27]);
        let w = waves(&hosts(3), &parse_waves("1,1").expect("parses"));
        assert_eq!(
            w,
            vec![vec!["h1".to_string()], vec!["h2".to_string(), "h3".to_string()]],
            "the last wave takes the rest"
        );
        assert!(parse_waves("0").is_err() && parse_waves("150%").is_err() && parse_waves("x").is_err());
    }

    #[test]
    fn judgement_table() {
        let seen = |attempts, failures, d: &[f64]| Seen { attempts, failures, durations: d.to_vec() };
        let none = BTreeMap::new();
        let cases: Vec<(Seen, Seen, bool)> = vec![
            (seen(10, 0, &[1.0; 10]), seen(10, 0, &[1.0; 10]), false),
            (seen(10, 5, &[]), seen(20, 1, &[]), true),  // 50% against 5%
            (seen(10, 1, &[]), seen(20, 2, &[]), false), // 10% against 10%
            (seen(3, 3, &[]), seen(20, 0, &[]), false),  // too little evidence
            (seen(10, 0, &[3.0; 10]), seen(10, 0, &[1.0; 10]), true), // 3x slower
            (seen(10, 0, &[1.2; 10]), seen(10, 0, &[1.0; 10]), false),
        ];
        for (i, (t, u, halt)) in cases.into_iter().enumerate() {
            assert_eq!(judge(&t, &u, &none).is_some(), halt, "case {i}");
        }
        let bad = BTreeMap::from([("u@a-1".to_string(), "misconfigured".to_string())]);
        assert!(judge(&Seen::default(), &Seen::default(), &bad).unwrap_or_default().contains("misconfigured"));
    }
}
