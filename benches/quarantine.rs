//! Quarantine evaluation (issue: bad workers vs bad jobs), on simulated fleets fed through the
//! production decision code (`drover::quarantine`): how many failed jobs a misconfigured host
//! costs before it is quarantined, and how many healthy workers a long run with ordinary
//! failures and restart noise quarantines by mistake.
//!
//!   cargo bench --bench quarantine          (DROVER_BENCH_SEED to change the seed)

use drover::events::{EventKind, JobEvent};
use drover::quarantine::{Attribution, Policy, Subject};

/// SplitMix64: a small seeded generator, enough for a simulation.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E3779B97F4A7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn event(kind: EventKind, outcome: &str, job: u64, unit: usize, host: usize) -> JobEvent {
    let mut e = JobEvent::new(kind, String::new(), "c", &format!("h{host}"), &format!("u{unit}"));
    e.job_id = Some(format!("j{job}"));
    e.outcome = Some(outcome.into());
    e
}

/// Runs a fleet of `hosts` x `units`; host 0 is misconfigured from completion `bad_from` on
/// (every job there fails), if `bad_from` is set. Every host is judged after every completion,
/// as a supervisor does on each tick. Returns (quarantines of healthy subjects, failed jobs on the
/// bad host before its quarantine).
fn run(
    seed: u64,
    hosts: usize,
    units: usize,
    completions: u64,
    base_fail: f64,
    noise: f64,
    bad_from: Option<u64>,
) -> (u32, Option<u32>) {
    let policy = Policy::default();
    let mut rng = Rng(seed);
    let mut a = Attribution::default();
    let mut false_q = 0;
    let mut bad_failures = 0;
    let mut caught = None;
    let mut quarantined = vec![false; hosts * units];
    for job in 0..completions {
        // Jobs go to a random worker that is not quarantined.
        let w = loop {
            let w = (rng.next() * (hosts * units) as f64) as usize;
            if !quarantined[w] {
                break w;
            }
        };
        let (host, unit) = (w / units, w % units);
        // Restart noise: attempts interrupted by kills and drains, requeued, then run again.
        if rng.next() < noise {
            a.observe(&event(EventKind::Failed, "interrupted", job, unit, host), &policy);
            a.observe(&event(EventKind::Requeued, "interrupted", job, unit, host), &policy);
        }
        let bad = bad_from.is_some_and(|b| job >= b) && host == 0;
        let failed = bad || rng.next() < base_fail;
        let kind = if failed {
            (EventKind::Failed, if rng.next() < 0.5 { "timeout" } else { "failed" })
        } else {
            (EventKind::Succeeded, "succeeded")
        };
        a.observe(&event(kind.0, kind.1, job, unit, host), &policy);
        if bad {
            bad_failures += 1;
        }
        for h in 0..hosts {
            if quarantined[h * units] {
                continue;
            }
            if a.judge("c", &Subject::Host(format!("h{h}")), &policy).is_some() {
                for u in 0..units {
                    quarantined[h * units + u] = true;
                }
                if h == 0 && bad_from.is_some() {
                    caught.get_or_insert(bad_failures);
                } else {
                    false_q += 1;
                }
            }
            for u in 0..units {
                let w = h * units + u;
                if !quarantined[w] && a.judge("c", &Subject::Worker(format!("u{u}@h{h}")), &policy).is_some() {
                    quarantined[w] = true;
                    if h == 0 && bad_from.is_some_and(|b| job >= b) {
                        caught.get_or_insert(bad_failures);
                    } else {
                        false_q += 1;
                    }
                }
            }
        }
    }
    (false_q, caught)
}

fn main() {
    let seed: u64 = std::env::var("DROVER_BENCH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(20261121);
    let policy = Policy::default();
    println!(
        "quarantine evaluation (seed {seed}; 6 hosts x 3 units; default policy: window {}, at least {} failures, alpha {:e})\n",
        policy.window, policy.min_failures, policy.alpha
    );
    println!("| case | runs | completions each | healthy subjects quarantined (false) | failed jobs before the bad host's quarantine (median / max) |");
    println!("|---|---|---|---|---|");
    for (name, base, noise) in [
        ("1% ordinary failures, 5% restart noise", 0.01, 0.05),
        ("3% ordinary failures, 10% restart noise", 0.03, 0.10),
    ] {
        let (mut false_q, mut caught) = (0, Vec::new());
        for r in 0..20 {
            let (f, c) = run(seed + r, 6, 3, 2_000, base, noise, Some(1_000));
            false_q += f;
            caught.extend(c);
        }
        caught.sort_unstable();
        let med = caught.get(caught.len() / 2).copied().unwrap_or(0);
        println!(
            "| misconfigured host from completion 1,000; {name} | 20 | 2,000 | {false_q} | {med} / {} ({} of 20 caught) |",
            caught.last().copied().unwrap_or(0),
            caught.len()
        );
    }
    for (name, base, noise) in [
        ("1% ordinary failures, 5% restart noise", 0.01, 0.05),
        ("3% ordinary failures, 10% restart noise", 0.03, 0.10),
        ("5% ordinary failures, 20% restart noise", 0.05, 0.20),
    ] {
        let mut false_q = 0;
        for r in 0..10 {
            false_q += run(seed + 100 + r, 6, 3, 20_000, base, noise, None).0;
        }
        println!("| no misconfiguration; {name} | 10 | 20,000 | {false_q} | - |");
    }
}
