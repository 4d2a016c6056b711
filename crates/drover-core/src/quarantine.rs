//! Bad workers versus bad jobs. From the fleet's job events, a record of each worker's (and
//! host's) recent outcomes per class, and two tests:
//! - **quarantine**: a worker or a host whose jobs of a class fail or time out more than chance
//!   allows given the rest of the fleet's own rate for that class (a one-sided binomial test with
//!   a minimum of evidence; not a fixed count);
//! - **shared outage**: most of the fleet failing a class at once: the cause is shared (a
//!   dependency is down), so nobody is quarantined and the class is paused instead.
//!
//! Restart noise is not evidence: only successes, failures and timeouts count; attempts that were
//! interrupted (drains, lost channels, kills), transient errors and redeliveries do not.
//!
//! It also notices attempts that **vanished**: a job started again while its previous start,
//! elsewhere, never said how it ended, because that worker died under it. Those go into the
//! verdicts ([`crate::verdicts`]) so a job that kills its workers becomes poison. Pure.

use crate::events::{EventKind, JobEvent};
use std::collections::{BTreeMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

/// A small, fast, deterministic hasher (the multiply-rotate one of the Rust compiler's own
/// maps) for the judge's maps keyed by job, worker and host names. The judge takes in every
/// job event of the fleet: ordered maps of the fleet's size made each event cost a search of
/// their depth (string comparisons and cache misses at each level), which grew with the fleet;
/// a hash map's lookup does not. Deterministic (no random seed): a replay iterates the same way.
#[derive(Default, Clone, Copy)]
pub struct FastHasher(u64);

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FastHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for FastHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes(c.try_into().expect("8 bytes")));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut last = [0u8; 8];
            last[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(last));
        }
    }
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(i as u64);
    }
    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(i as u64);
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    /// A final mix (MurmurHash3's): the multiply-rotate step leaves the low bits, which pick a
    /// hash map's bucket, depending on few of the key's bits; without it, keys like
    /// `unit@host` collide and every lookup compares many keys.
    #[inline]
    fn finish(&self) -> u64 {
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }
}

/// A hash map with [`FastHasher`].
pub type FastMap<K, V> = std::collections::HashMap<K, V, BuildHasherDefault<FastHasher>>;

#[derive(Clone, Debug)]
pub struct Policy {
    /// Recent outcomes kept per worker and per host.
    pub window: usize,
    /// Fewest failures before anyone is quarantined.
    pub min_failures: u32,
    /// Fewest outcomes of the rest of the fleet to compare with.
    pub min_fleet: u32,
    /// Significance of the binomial test. Small, because every worker and host is tested after
    /// every completion: 1e-7 gave no false quarantine in 600,000 simulated completions.
    pub alpha: f64,
    /// Shared outage: this share of the class's recent outcomes failed...
    pub outage_share: f64,
    /// ...over at least this many outcomes, from at least two hosts or workers.
    pub outage_min: usize,
    /// Fewest distinct failing jobs among them.
    pub outage_min_jobs: usize,
    /// Significance at which a worker is a suspect: not quarantined, but the jobs that failed
    /// there are not given up on until the evidence settles.
    pub suspect_alpha: f64,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            window: 20,
            min_failures: 3,
            min_fleet: 5,
            alpha: 1e-7,
            outage_share: 0.8,
            outage_min: 10,
            outage_min_jobs: 4,
            suspect_alpha: 1e-3,
        }
    }
}

/// Who the evidence is against.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Subject {
    /// `unit@host`
    Worker(String),
    Host(String),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Evidence {
    pub subject: Subject,
    pub class: String,
    pub failures: u32,
    pub attempts: u32,
    pub fleet_failures: u32,
    pub fleet_attempts: u32,
    pub p_value: f64,
    /// Jobs that failed here and then succeeded elsewhere.
    pub succeeded_elsewhere: u32,
}

impl std::fmt::Display for Evidence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let who = match &self.subject {
            Subject::Worker(w) => format!("worker {w}"),
            Subject::Host(h) => format!("host {h}"),
        };
        write!(
            f,
            "{who}: {} of its last {} jobs of class {} failed or timed out ({:.0}%), while the rest of the fleet failed {} of {} ({:.0}%); \
             {} of those jobs then succeeded elsewhere; p = {:.1e}",
            self.failures,
            self.attempts,
            self.class,
            100.0 * self.failures as f64 / self.attempts.max(1) as f64,
            self.fleet_failures,
            self.fleet_attempts,
            100.0 * self.fleet_failures as f64 / self.fleet_attempts.max(1) as f64,
            self.succeeded_elsewhere,
            self.p_value
        )
    }
}

#[derive(Clone, Debug, Default)]
struct Record {
    /// Recent outcomes, newest last: (failed, job id).
    outcomes: VecDeque<(bool, String)>,
}

/// One outcome in a class's fleet-wide window.
#[derive(Debug)]
struct ClassOutcome {
    /// `unit@host`
    worker: String,
    host: String,
    failed: bool,
    job: String,
}

/// The fleet's recent outcomes, by class, worker and host.
#[derive(Debug, Default)]
pub struct Attribution {
    workers: FastMap<(String, String), Record>,
    hosts: FastMap<(String, String), Record>,
    /// Recent outcomes of each class across the fleet.
    classes: BTreeMap<String, VecDeque<ClassOutcome>>,
    /// Job id -> the worker it last succeeded on (bounded).
    succeeded: FastMap<String, String>,
    succeeded_order: VecDeque<String>,
    /// Job id -> the worker running it (started, no end heard yet), bounded.
    open: FastMap<String, (String, Option<u32>)>,
    open_order: VecDeque<String>,
    /// Attempts whose worker died under them, newest last, bounded.
    vanished: VecDeque<crate::verdicts::Vanished>,
    /// Changes to `vanished` so far (additions and retractions).
    vanished_changes: usize,
}

const OPEN_KEPT: usize = 50_000;
const VANISHED_KEPT: usize = 2_000;

const CLASS_WINDOW: usize = 200;
const SUCCEEDED_KEPT: usize = 5000;

/// What an event says about its worker: `Some(true)` failed, `Some(false)` succeeded, `None`
/// not evidence.
pub fn verdict(e: &JobEvent) -> Option<bool> {
    match (e.event, e.outcome.as_deref()) {
        (EventKind::Succeeded, _) => Some(false),
        (EventKind::Failed, Some("failed" | "timeout")) => Some(true),
        _ => None,
    }
}

impl Attribution {
    pub fn observe(&mut self, e: &JobEvent, policy: &Policy) {
        self.track_attempts(e);
        let Some(failed) = verdict(e) else { return };
        let worker = format!("{}@{}", e.unit, e.host);
        let job = e.job_id.clone().unwrap_or_default();
        for (map, key) in [(&mut self.workers, worker.clone()), (&mut self.hosts, e.host.clone())] {
            let r = map.entry((e.class.clone(), key)).or_default();
            r.outcomes.push_back((failed, job.clone()));
            while r.outcomes.len() > policy.window {
                r.outcomes.pop_front();
            }
        }
        let c = self.classes.entry(e.class.clone()).or_default();
        c.push_back(ClassOutcome { worker: worker.clone(), host: e.host.clone(), failed, job: job.clone() });
        while c.len() > CLASS_WINDOW {
            c.pop_front();
        }
        if !failed && !job.is_empty() {
            self.succeeded.insert(job.clone(), worker);
            self.succeeded_order.push_back(job);
            while self.succeeded_order.len() > SUCCEEDED_KEPT {
                if let Some(old) = self.succeeded_order.pop_front() {
                    self.succeeded.remove(&old);
                }
            }
        }
    }

    /// Open attempts, and the ones that vanished: a start while the job's previous start has
    /// not ended means the previous worker died under it. Events of different workers may
    /// arrive out of order (a retry's start before the failure that caused it), so an attempt
    /// that reports its end after all is taken off the vanished list again.
    fn track_attempts(&mut self, e: &JobEvent) {
        let Some(job) = e.job_id.clone() else { return };
        let worker = format!("{}@{}", e.unit, e.host);
        match e.event {
            EventKind::Started => {
                if let Some((prev, attempt)) = self.open.insert(job.clone(), (worker, e.attempt)) {
                    self.vanished_changes += 1;
                    self.vanished.push_back(crate::verdicts::Vanished {
                        job,
                        worker: prev,
                        at_ms: crate::job::parse_rfc3339_ms(&e.at).unwrap_or(0),
                        attempt,
                    });
                    while self.vanished.len() > VANISHED_KEPT {
                        self.vanished.pop_front();
                    }
                } else {
                    self.open_order.push_back(job);
                    while self.open_order.len() > OPEN_KEPT {
                        if let Some(old) = self.open_order.pop_front() {
                            self.open.remove(&old);
                        }
                    }
                }
            }
            kind if kind.ends_attempt() => {
                if self.open.get(&job) == Some(&(worker.clone(), e.attempt)) {
                    self.open.remove(&job);
                }
                // A late end: that worker did not die under it.
                let before = self.vanished.len();
                self.vanished.retain(|v| !(v.job == job && v.worker == worker && v.attempt == e.attempt));
                self.vanished_changes += before - self.vanished.len();
            }
            _ => {} // submissions, misconfigured units
        }
    }

    /// How many times the vanished attempts changed so far (to tell when to say so at once).
    pub fn vanished_changes(&self) -> usize {
        self.vanished_changes
    }

    /// Attempts that vanished on the workers of `host` (`unit@host`).
    pub fn vanished_on(&self, host: &str) -> Vec<crate::verdicts::Vanished> {
        let suffix = format!("@{host}");
        self.vanished.iter().filter(|v| v.worker.ends_with(&suffix)).cloned().collect()
    }

    /// The jobs that failed in a subject's recent record: the evidence behind a quarantine.
    pub fn failed_jobs(&self, class: &str, subject: &Subject) -> Vec<String> {
        let key = match subject {
            Subject::Worker(w) => self.workers.get(&(class.to_string(), w.clone())),
            Subject::Host(h) => self.hosts.get(&(class.to_string(), h.clone())),
        };
        key.map(|r| r.outcomes.iter().filter(|o| o.0 && !o.1.is_empty()).map(|o| o.1.clone()).collect())
            .unwrap_or_default()
    }

    /// Forgets a subject's record (after a release: it must earn new evidence).
    pub fn forget(&mut self, class: &str, subject: &Subject) {
        match subject {
            Subject::Worker(w) => {
                self.workers.remove(&(class.to_string(), w.clone()));
            }
            Subject::Host(h) => {
                self.hosts.remove(&(class.to_string(), h.clone()));
                self.workers.retain(|(c, w), _| !(c == class && w.ends_with(&format!("@{h}"))));
            }
        }
    }

    /// The jobs that failed in a class's recent fleet-wide record: during a shared outage, the
    /// failures that were the outage's fault (the last `4 * outage_min` outcomes).
    pub fn outage_jobs(&self, class: &str, policy: &Policy) -> Vec<String> {
        let Some(window) = self.classes.get(class) else { return Vec::new() };
        let mut jobs: Vec<String> = window
            .iter()
            .rev()
            .take(policy.outage_min.max(1) * 4)
            .filter(|o| o.failed && !o.job.is_empty())
            .map(|o| o.job.clone())
            .collect();
        jobs.sort_unstable();
        jobs.dedup();
        jobs
    }

    /// Forgets a class's fleet-wide record (after a pause is lifted).
    pub fn forget_class(&mut self, class: &str) {
        self.classes.remove(class);
        self.workers.retain(|(c, _), _| c != class);
        self.hosts.retain(|(c, _), _| c != class);
    }

    /// Recent (failures, attempts) of a worker for a class, for status.
    pub fn record(&self, class: &str, worker: &str) -> (u32, u32) {
        self.workers
            .get(&(class.to_string(), worker.to_string()))
            .map(|r| (r.outcomes.iter().filter(|o| o.0).count() as u32, r.outcomes.len() as u32))
            .unwrap_or((0, 0))
    }

    /// The evidence against a worker or host, when it is beyond chance.
    pub fn judge(&self, class: &str, subject: &Subject, policy: &Policy) -> Option<Evidence> {
        let key = |name: &String| (class.to_string(), name.clone());
        let record = match subject {
            Subject::Worker(w) => self.workers.get(&key(w))?,
            Subject::Host(h) => self.hosts.get(&key(h))?,
        };
        let excluded = |o: &ClassOutcome| match subject {
            Subject::Worker(w) => &o.worker == w,
            Subject::Host(h) => &o.host == h,
        };
        let attempts = record.outcomes.len() as u32;
        let failures = record.outcomes.iter().filter(|o| o.0).count() as u32;
        if failures < policy.min_failures {
            return None;
        }
        let rest: Vec<&ClassOutcome> = self.classes.get(class)?.iter().filter(|o| !excluded(o)).collect();
        let fleet_attempts = rest.len() as u32;
        let fleet_failures = rest.iter().filter(|o| o.failed).count() as u32;
        // "While the same class succeeds elsewhere": without enough of the rest of the fleet,
        // or when the rest fails as much, there is nothing to blame this one for.
        if fleet_attempts < policy.min_fleet || fleet_failures * 2 >= fleet_attempts {
            return None;
        }
        // Laplace-smoothed fleet rate: a fleet with no failure yet is not taken as perfect.
        let p0 = (fleet_failures as f64 + 1.0) / (fleet_attempts as f64 + 2.0);
        let p_value = binomial_tail(failures, attempts, p0);
        if p_value >= policy.alpha {
            return None;
        }
        let succeeded_elsewhere = record
            .outcomes
            .iter()
            .filter(|(failed, job)| {
                *failed
                    && self.succeeded.get(job).is_some_and(|w| match subject {
                        Subject::Worker(me) => w != me,
                        Subject::Host(h) => !w.ends_with(&format!("@{h}")),
                    })
            })
            .count() as u32;
        Some(Evidence {
            subject: subject.clone(),
            class: class.into(),
            failures,
            attempts,
            fleet_failures,
            fleet_attempts,
            p_value,
            succeeded_elsewhere,
        })
    }

    /// A shared outage of a class: most of its recent outcomes failed, on several workers and,
    /// when the class runs on more than one host, on several hosts. One host failing while
    /// others succeeded a moment ago is that host's problem, not a shared one.
    pub fn outage(&self, class: &str, policy: &Policy) -> Option<String> {
        let window = self.classes.get(class)?;
        let recent: Vec<&ClassOutcome> = window.iter().rev().take(policy.outage_min.max(1) * 2).collect();
        if recent.len() < policy.outage_min {
            return None;
        }
        let failed = recent.iter().filter(|o| o.failed).count();
        let distinct = |it: &mut dyn Iterator<Item = &str>| -> usize {
            let mut v: Vec<&str> = it.collect();
            v.sort_unstable();
            v.dedup();
            v.len()
        };
        let failing = distinct(&mut recent.iter().filter(|o| o.failed).map(|o| o.worker.as_str()));
        let failing_hosts = distinct(&mut recent.iter().filter(|o| o.failed).map(|o| o.host.as_str()));
        let failing_jobs = distinct(&mut recent.iter().filter(|o| o.failed).map(|o| o.job.as_str()));
        let hosts_seen = distinct(&mut window.iter().map(|o| o.host.as_str()));
        let share = failed as f64 / recent.len() as f64;
        // Many different jobs failing: a couple of bad jobs retried in a quiet class are not an
        // outage (they are poison, and charged as such).
        let shared = share >= policy.outage_share && failing >= 2 && failing_jobs >= policy.outage_min_jobs;
        (shared && (failing_hosts >= 2 || hosts_seen == 1)).then(|| {
            format!(
                "{failed} of the last {} jobs of class {class} failed, on {failing} different workers: a shared cause (a dependency down?), not the workers",
                recent.len(),
            )
        })
    }
}

/// P(X >= k) for X ~ Binomial(n, p), summed in log space.
pub fn binomial_tail(k: u32, n: u32, p: f64) -> f64 {
    if k == 0 {
        return 1.0;
    }
    if k > n {
        return 0.0;
    }
    let p = p.clamp(1e-12, 1.0 - 1e-12);
    let ln_choose = |n: u32, i: u32| -> f64 { ln_factorial(n) - ln_factorial(i) - ln_factorial(n - i) };
    (k..=n).map(|i| (ln_choose(n, i) + i as f64 * p.ln() + (n - i) as f64 * (1.0 - p).ln()).exp()).sum::<f64>().min(1.0)
}

fn ln_factorial(n: u32) -> f64 {
    (2..=n).map(|i| (i as f64).ln()).sum()
}

/// How long a unit's or class's last hold was, and when it ended: the next hold is twice as
/// long, unless the last one ended more than a day ago (the subject has been fine since).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Hold {
    pub length_ms: u64,
    pub until_ms: i64,
}

/// Memory of holds: after this long without one, the next starts at the base length again.
pub const HOLD_FORGOTTEN_MS: i64 = 24 * 3600 * 1000;

/// The hold that starts at `now_ms` after `prev`: `base`, doubling per repeat up to `max`.
pub fn next_hold(prev: Option<Hold>, base_ms: u64, max_ms: u64, now_ms: i64) -> Hold {
    let length_ms = match prev {
        Some(p) if now_ms - p.until_ms <= HOLD_FORGOTTEN_MS => p.length_ms.saturating_mul(2).min(max_ms),
        _ => base_ms,
    }
    .max(base_ms.min(max_ms));
    Hold { length_ms, until_ms: now_ms + length_ms as i64 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_double_up_to_the_cap_and_start_over_after_a_quiet_day() {
        const MIN: u64 = 60_000;
        let h = |length_ms, until_ms| Some(Hold { length_ms, until_ms });
        let day = HOLD_FORGOTTEN_MS;
        let cases: &[(Option<Hold>, i64, u64)] = &[
            (None, 0, 10 * MIN),                 // first hold: the base
            (h(10 * MIN, 0), 1_000, 20 * MIN),   // a failed probe: twice as long
            (h(320 * MIN, 0), 1_000, 360 * MIN), // capped at hold_max
            (h(360 * MIN, 0), 1_000, 360 * MIN), // stays at the cap
            (h(40 * MIN, 0), day, 80 * MIN),     // within a day of the last one
            (h(40 * MIN, 0), day + 1, 10 * MIN), // a quiet day: start over
        ];
        for (prev, now, want) in cases {
            let got = next_hold(*prev, 10 * MIN, 360 * MIN, *now);
            assert_eq!(got.length_ms, *want, "{prev:?} at {now}");
            assert_eq!(got.until_ms, now + *want as i64);
        }
    }

    fn ev(kind: EventKind, outcome: &str, job: &str, unit: &str, host: &str) -> JobEvent {
        let mut e = JobEvent::new(kind, "t".into(), "c", host, unit);
        e.job_id = Some(job.into());
        e.outcome = Some(outcome.into());
        e
    }

    fn ok(job: &str, unit: &str, host: &str) -> JobEvent {
        ev(EventKind::Succeeded, "succeeded", job, unit, host)
    }

    fn timeout(job: &str, unit: &str, host: &str) -> JobEvent {
        ev(EventKind::Failed, "timeout", job, unit, host)
    }

    #[test]
    fn binomial_tail_table() {
        let cases = [(0, 5, 0.1, 1.0), (6, 5, 0.1, 0.0), (5, 5, 0.5, 0.03125), (1, 1, 0.2, 0.2), (2, 3, 0.5, 0.5)];
        for (k, n, p, want) in cases {
            assert!((binomial_tail(k, n, p) - want).abs() < 1e-9, "P(X >= {k} | {n}, {p})");
        }
    }

    #[test]
    fn a_host_whose_jobs_time_out_while_the_class_succeeds_elsewhere_is_quarantined() {
        let p = Policy::default();
        let mut a = Attribution::default();
        for i in 0..20 {
            a.observe(&ok(&format!("g{i}"), &format!("u{}", i % 3), "good"), &p);
        }
        let bad = Subject::Host("bad".into());
        let mut quarantined_after = None;
        for i in 0..6 {
            a.observe(&timeout(&format!("b{i}"), &format!("u{}", i % 3), "bad"), &p);
            a.observe(&ok(&format!("b{i}"), "u9", "good"), &p); // it then succeeds elsewhere
            if quarantined_after.is_none() && a.judge("c", &bad, &p).is_some() {
                quarantined_after = Some(i + 1);
            }
        }
        // Against a clean fleet of about 25, five timeouts in a row are beyond what chance allows
        // at the default significance (1e-7: no false quarantine over long runs; BENCHMARKS.md).
        assert_eq!(quarantined_after, Some(5));
        let e = a.judge("c", &bad, &p).expect("evidence");
        assert_eq!((e.failures, e.attempts, e.fleet_failures), (6, 6, 0));
        assert_eq!(e.succeeded_elsewhere, 6);
        assert!(e.to_string().contains("host bad: 6 of its last 6 jobs of class c failed"), "{e}");
        assert!(a.judge("c", &Subject::Host("good".into()), &p).is_none(), "the healthy host is not blamed");
        assert!(a.outage("c", &p).is_none());
    }

    #[test]
    fn noise_and_chance_are_not_evidence() {
        let p = Policy::default();
        let mut a = Attribution::default();
        for i in 0..40 {
            // A fleet with a 10% failure rate everywhere.
            let e = if i % 10 == 0 {
                timeout(&format!("j{i}"), "u1", &format!("h{}", i % 4))
            } else {
                ok(&format!("j{i}"), "u1", &format!("h{}", i % 4))
            };
            a.observe(&e, &p);
        }
        // Interrupted attempts, requeues and transient failures on h9: restart noise.
        for i in 0..10 {
            a.observe(&ev(EventKind::Failed, "interrupted", &format!("n{i}"), "u1", "h9"), &p);
            a.observe(&ev(EventKind::Requeued, "interrupted", &format!("n{i}"), "u1", "h9"), &p);
            a.observe(&ev(EventKind::Failed, "transient", &format!("n{i}"), "u1", "h9"), &p);
        }
        for h in ["h0", "h1", "h2", "h3", "h9"] {
            assert!(a.judge("c", &Subject::Host(h.into()), &p).is_none(), "{h}");
        }
        // Two failures in a row on one host of that fleet: below the minimum of evidence.
        a.observe(&timeout("x1", "u1", "h5"), &p);
        a.observe(&timeout("x2", "u1", "h5"), &p);
        assert!(a.judge("c", &Subject::Host("h5".into()), &p).is_none());
    }

    #[test]
    fn a_start_while_the_previous_attempt_never_ended_means_its_worker_died() {
        let p = Policy::default();
        let mut a = Attribution::default();
        let start = |job: &str, unit: &str, host: &str| ev(EventKind::Started, "", job, unit, host);
        // (event, vanished so far on host h1)
        let steps: Vec<(JobEvent, Vec<&str>)> = vec![
            (start("j", "u1", "h1"), vec![]),
            (ev(EventKind::Requeued, "interrupted", "j", "u1", "h1"), vec![]), // a drain: ended
            (start("j", "u2", "h2"), vec![]),
            (ev(EventKind::RetryScheduled, "failed", "j", "u2", "h2"), vec![]),
            (start("j", "u1", "h1"), vec![]),
            (start("j", "u3", "h1"), vec!["u1@h1"]), // u1 never said: it died
            (start("j", "u2", "h2"), vec!["u1@h1", "u3@h1"]),
            (ok("j", "u2", "h2"), vec!["u1@h1", "u3@h1"]),
            (start("k", "u1", "h1"), vec!["u1@h1", "u3@h1"]),
            (ok("k", "u1", "h1"), vec!["u1@h1", "u3@h1"]),
        ];
        for (i, (e, want)) in steps.into_iter().enumerate() {
            a.observe(&e, &p);
            let got: Vec<String> = a.vanished_on("h1").into_iter().map(|v| v.worker).collect();
            assert_eq!(got, want, "step {i}");
        }
        assert!(a.vanished_on("h2").is_empty());
        assert!(a.vanished_on("h1").iter().all(|v| v.job == "j"));

        // Events of two workers out of order: a retry's start before the failure that caused
        // it. The late failure takes the attempt off the list; a later attempt on the same worker
        // does not clear an attempt that really vanished.
        let mut a = Attribution::default();
        let at = |mut e: JobEvent, n: u32| {
            e.attempt = Some(n);
            e
        };
        let steps: Vec<(JobEvent, Vec<(&str, u32)>)> = vec![
            (at(start("r", "u1", "h1"), 1), vec![]),
            (at(start("r", "u2", "h1"), 2), vec![("u1@h1", 1)]),
            (at(timeout("r", "u1", "h1"), 1), vec![]), // it was only late
            (at(timeout("r", "u2", "h1"), 2), vec![]),
            (at(start("r", "u1", "h1"), 3), vec![]),
            (at(start("r", "u3", "h1"), 4), vec![("u1@h1", 3)]), // u1 died under attempt 3
            (at(start("r", "u1", "h1"), 5), vec![("u1@h1", 3), ("u3@h1", 4)]),
            (at(ok("r", "u1", "h1"), 5), vec![("u1@h1", 3), ("u3@h1", 4)]),
        ];
        for (i, (e, want)) in steps.into_iter().enumerate() {
            a.observe(&e, &p);
            let got: Vec<(String, u32)> =
                a.vanished_on("h1").into_iter().map(|v| (v.worker, v.attempt.unwrap_or(0))).collect();
            let want: Vec<(String, u32)> = want.into_iter().map(|(w, n)| (w.to_string(), n)).collect();
            assert_eq!(got, want, "out of order, step {i}");
        }
    }

    #[test]
    fn when_most_of_the_fleet_fails_it_is_an_outage_not_bad_workers() {
        let p = Policy::default();
        let mut a = Attribution::default();
        for i in 0..10 {
            a.observe(&ok(&format!("g{i}"), "u1", &format!("h{}", i % 3)), &p);
        }
        for i in 0..18 {
            a.observe(&timeout(&format!("f{i}"), "u1", &format!("h{}", i % 3)), &p);
        }
        assert!(a.outage("c", &p).is_some_and(|s| s.contains("shared cause")));
        let jobs = a.outage_jobs("c", &p);
        assert_eq!(jobs.len(), 18, "every failed job of the outage, and no job that succeeded: {jobs:?}");
        assert!(jobs.iter().all(|j| j.starts_with('f')));
        for h in ["h0", "h1", "h2"] {
            assert!(a.judge("c", &Subject::Host(h.into()), &p).is_none(), "{h} is not blamed for a shared outage");
        }
        a.forget_class("c");
        assert!(a.outage("c", &p).is_none(), "a lifted pause needs fresh evidence");

        // One host failing everything while another succeeded a moment ago is not shared.
        let mut a = Attribution::default();
        for i in 0..10 {
            a.observe(&ok(&format!("g{i}"), "u1", "good"), &p);
        }
        for i in 0..18 {
            a.observe(&timeout(&format!("f{i}"), &format!("u{}", i % 3), "bad"), &p);
        }
        assert!(a.outage("c", &p).is_none(), "one host of two");
        assert!(a.judge("c", &Subject::Host("bad".into()), &p).is_some(), "it is that host's problem");
        // A single-host fleet: its workers failing together is the only sign there is.
        let mut a = Attribution::default();
        for i in 0..18 {
            a.observe(&timeout(&format!("f{i}"), &format!("u{}", i % 3), "only"), &p);
        }
        assert!(a.outage("c", &p).is_some(), "a single-host fleet");
        // Three bad jobs retried over and over in a quiet class: poison, not an outage.
        let mut a = Attribution::default();
        for i in 0..18 {
            a.observe(&timeout(&format!("f{}", i % 3), &format!("u{}", i % 4), "only"), &p);
        }
        assert!(a.outage("c", &p).is_none(), "three jobs failing are not a shared cause");
        a.observe(&timeout("f3", "u1", "only"), &p);
        assert!(a.outage("c", &p).is_some(), "a fourth distinct job tips it");
    }
}
