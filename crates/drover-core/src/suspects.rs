//! Suspects: bad hosts and workers caught from the ages of their **running** jobs before any of
//! them times out, hosts whose jobs succeed but run far slower than elsewhere, and a budget on
//! how much of a class is taken out at once. Pure: no clock, no I/O, no randomness; the caller
//! passes every time stamp, so a recorded sequence of calls replays to the same decisions.
//!
//! # The test
//! Each job of a subject (a host, or a worker `unit@host`) of a class is compared with the
//! *rest* of the fleet's recent attempts of that class (the subject's own left out), by its
//! likelihood ratio under an alternative against "like the rest":
//! - a job still running at age `a` is a censored observation: all we know is that its run time
//!   is at least `a`. The rest's survival there is `S(a) = (1 + #{rest >= a}) / (1 + n)` (a
//!   conformal estimate: no parametric tail is assumed, stragglers are in it). Under "it hangs"
//!   its ratio is `1 / S(a)`, which only grows as it ages; several jobs running at once on one
//!   host multiply (the joint chance, under the rest's law, that all of them are that old).
//! - a timeout is scored against the rest's share of timeouts; a failure (timeouts included)
//!   against the rest's (smoothed) failure share; a job that ended before its timeout counts
//!   against a hang (a straggler that finishes is normal).
//!
//! The alternatives, in mixtures: every job hangs (weight 1/2), half, a quarter of them (1/4 each; over
//! the jobs *started* since each of the subject's starts, running or ended); every job fails,
//! half, a quarter (over its newest completed jobs, by end). Each mixture's product is an
//! e-value: under "like the rest" it is a nonnegative martingale of mean 1, so by Ville's
//! inequality it ever exceeds `1 / a` with chance at most `a`, however often it is evaluated, and
//! with a window starting at each job, a subject is flagged falsely at most about `a` times per
//! job it runs. Each mixture gets half of the level; the evidence's p-value is `2 / e`. At most
//! `cordon_alpha` the subject is a **suspect** (cordoned: no new jobs, running jobs go on), at most
//! `alpha` it is **quarantined**; a host's levels are divided by its units (a cordon of a host
//! takes all of them out, and false cordons are counted in units). So false cordons are bounded
//! by about `cordon_alpha` cordoned units per completion for hosts and as many for workers (a
//! completion is one job of its host and one of its worker): at the default 1e-6, at most 0.2
//! cordoned units per 100,000 completions, however many units a host has. A single job can
//! never be enough (`1 / S` is at most `1 + n`): stragglers alone
//! do not cordon a host; several of its jobs at once do, and timeouts already seen make the next
//! jobs' moderate ages count (a class whose p99 is its timeout). With two units, two running
//! jobs at most reach `0.72 (1 + n)^2` (both past every run of the rest), under the `4 / cordon_alpha`
//! (`4e6`) a cordon of such a host needs while the rest's reference is under about 2,400
//! attempts (it is at most `reference`, 2,000): hosts of 2 units are cordoned from running ages
//! only once timeouts add to them (two timeouts and the next job's age).
//!
//! **The class's drift is not a subject's.** A running job's survival is the larger of the
//! rest's completed runs' and the share of the rest's jobs running now that are as old: when
//! the whole class gets slower at once, the recent completions lag behind, and the hosts whose
//! units happened to start first after the change would otherwise look like hangs. Slowness is
//! judged against the rest's jobs that ended in the same period as the subject's window (a
//! small fleet's reference spans far longer than one host's window).
//!
//! **Slow hosts**: the subject's successes longer than `f` times the rest's median, against the
//! rest's own share of them (stragglers included), as a mixture of "90% / half of its successes
//! are that slow" over its newest completed jobs (running jobs are left out: one is known to be
//! slow only once it is past the threshold, while those that are not are not counted, so counting
//! it would make two stragglers running at once look like evidence; a job that hangs is the tail
//! test's); at `f = 1.5` it is reported (at `cordon_alpha`), at `f = slow_factor` with a median
//! ratio (over the jobs that gave the evidence) of at least `slow_factor` it is cordoned (at
//! `alpha`: slow jobs still complete, so it can wait for more).
//!
//! A cordon is decided once every job that ran on the subject at the cordon has ended: if one
//! of them failed or timed out (or none ran) and the evidence still stands at the cordon level,
//! there is nothing more to learn without new jobs and the subject is **quarantined** (the
//! supervisor's hold and probe then decide); otherwise (its jobs completed normally) the cordon
//! is **lifted**.
//!
//! **Budget**: at most `max_quarantined` of a class's units, and of its hosts (at least one of
//! each), are out (cordoned or quarantined by this policy) at once. Beyond it no further subject
//! is taken out, strongest evidence first, and one [`AlertKind::ManyLookBad`] condition names
//! them. When more than half of the hosts in service look bad at once, none is taken out (the
//! class's record, not the hosts, is what no longer fits: every machine loaded, a slow shared
//! store, a new version), and the same condition says so. **Shadow mode** (`enforce = false`): [`Decision::would`] holds what would be done,
//! [`Decision::does`] is empty, and the alerts say "would".
//!
//! # How the supervisor feeds and applies it
//! - On every job event of the fleet (each supervisor sees them all): a start
//!   [`Suspects::started`]; an end [`Suspects::ended`] with [`End`] (interrupted attempts, drains
//!   and requeues as `End::Interrupted`: never evidence). Times are the events' own time stamps.
//! - On each evaluation: [`Suspects::evaluate`] with `now_ms` and the fleet's units
//!   ([`Placement`]: class, host, unit). Apply [`Decision::does`] ([`Action::Cordon`]: the units'
//!   cordon; [`Action::Quarantine`]: a quarantine order for the units, running jobs requeued
//!   without charge; [`Action::Lift`]: lift the cordon); record [`Decision::would`] in the
//!   timeline; turn [`Decision::alerts`] into alert conditions with [`Alert::key`] (one per host,
//!   its units inside) and [`Alert::summary`]. Actions are edges: each is returned once.
//! - When a quarantine this policy asked for ends (a probe passed, an operator released it):
//!   [`Suspects::release`], so the subject starts with a clean record.

use crate::alerts::AlertKey;
use crate::quarantine::{FastMap, Subject};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

#[derive(Clone, Debug, PartialEq)]
pub struct SuspectPolicy {
    /// Recent completed attempts kept per subject and class.
    pub window: usize,
    /// Recent attempts of a class kept as the fleet's reference.
    pub reference: usize,
    /// Fewest attempts of the rest of the fleet before anyone is judged.
    pub min_reference: usize,
    /// The rest's quantile the evidence shows (the test itself weighs every age by the rest's
    /// survival there).
    pub tail_quantile: f64,
    /// Significance at which a subject is cordoned.
    pub cordon_alpha: f64,
    /// Significance at which it is quarantined.
    pub alpha: f64,
    /// Successes this many times slower than the rest's median: cordoned.
    pub slow_factor: f64,
    /// Share of a class's units (and of its hosts) out at once.
    pub max_quarantined: f64,
    /// Act on the decisions; `false`: shadow mode (decide and report only).
    pub enforce: bool,
}

impl Default for SuspectPolicy {
    fn default() -> Self {
        SuspectPolicy {
            window: 20,
            reference: 2000,
            min_reference: 200,
            tail_quantile: 0.99,
            cordon_alpha: 1e-6,
            alpha: 1e-7,
            slow_factor: 2.5,
            max_quarantined: 0.2,
            enforce: true,
        }
    }
}

/// Slower than the rest by this factor (with evidence): reported, not acted on.
pub const SLOW_REPORT_FACTOR: f64 = 1.5;

/// How an attempt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    Succeeded,
    Failed,
    TimedOut,
    /// Drained, requeued, lost channel, killed with its host: not evidence.
    Interrupted,
}

/// One unit of a class, as the fleet runs it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Placement {
    pub class: String,
    pub host: String,
    pub unit: String,
}

/// An attempt in a class's reference, with the subjects it counts for (built once: the
/// reference's per-subject tallies are looked up without building keys).
#[derive(Clone, Debug)]
struct Done {
    /// `Subject::Host`, `Subject::Worker`.
    host: Subject,
    worker: Subject,
    started_ms: i64,
    run_ms: i64,
    end: End,
}

impl Done {
    fn host(&self) -> &str {
        host_name(&self.host)
    }
    fn worker(&self) -> &str {
        match &self.worker {
            Subject::Worker(w) | Subject::Host(w) => w,
        }
    }
}

/// An attempt in a subject's own window: no names (the window's key says whose).
#[derive(Clone, Copy, Debug)]
struct Run {
    started_ms: i64,
    run_ms: i64,
    end: End,
}

#[derive(Clone, Debug)]
struct Running {
    class: String,
    host: String,
    worker: String,
    started_ms: i64,
}

/// Sorted run times with counts, for the rest-of-fleet queries.
#[derive(Clone, Debug, Default)]
struct Sorted(Vec<i64>);

impl Sorted {
    fn insert(&mut self, x: i64) {
        let i = self.0.partition_point(|&d| d < x);
        self.0.insert(i, x);
    }
    fn remove(&mut self, x: i64) {
        let i = self.0.partition_point(|&d| d < x);
        if self.0.get(i) == Some(&x) {
            self.0.remove(i);
        }
    }
    fn at_least(&self, x: i64) -> usize {
        self.0.len() - self.0.partition_point(|&d| d < x)
    }
    fn above(&self, x: f64) -> usize {
        self.0.len() - self.0.partition_point(|&d| (d as f64) <= x)
    }
    fn len(&self) -> usize {
        self.0.len()
    }
}

/// Counts of some recent attempts: run times of successes and timeouts (what a running job is
/// compared with), of successes only (medians, slowness), failures (timeouts included), attempts.
#[derive(Clone, Debug, Default)]
struct Tally {
    times: Sorted,
    successes: Sorted,
    failures: usize,
    timeouts: usize,
    attempts: usize,
}

impl Tally {
    fn account(&mut self, d: &Done, add: bool) {
        let change = |n: &mut usize| if add { *n += 1 } else { *n -= 1 };
        change(&mut self.attempts);
        if matches!(d.end, End::Failed | End::TimedOut) {
            change(&mut self.failures);
        }
        if d.end == End::TimedOut {
            change(&mut self.timeouts);
        }
        let (times, succ) = (matches!(d.end, End::Succeeded | End::TimedOut), d.end == End::Succeeded);
        for (on, s) in [(times, &mut self.times), (succ, &mut self.successes)] {
            match (on, add) {
                (true, true) => s.insert(d.run_ms),
                (true, false) => s.remove(d.run_ms),
                _ => {}
            }
        }
    }
}

/// A class's recent attempts across the fleet, and each host's and worker's share of them.
#[derive(Clone, Debug, Default)]
struct Reference {
    recent: VecDeque<Done>,
    all: Tally,
    own: FastMap<Subject, Tally>,
}

impl Reference {
    fn push(&mut self, d: Done, keep: usize) {
        self.account(&d, true);
        self.recent.push_back(d);
        while self.recent.len() > keep {
            if let Some(old) = self.recent.pop_front() {
                self.account(&old, false);
            }
        }
    }
    fn account(&mut self, d: &Done, add: bool) {
        self.all.account(d, add);
        for s in [&d.host, &d.worker] {
            match self.own.get_mut(s) {
                Some(t) => {
                    t.account(d, add);
                    if t.attempts == 0 {
                        self.own.remove(s);
                    }
                }
                None => {
                    let mut t = Tally::default();
                    t.account(d, add);
                    self.own.insert(s.clone(), t);
                }
            }
        }
    }
}

/// What a subject is judged to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Standing {
    Healthy,
    /// Slower than the rest, with evidence, below `slow_factor`: reported only.
    Slow,
    /// Cordoned: no new jobs; its running jobs go on.
    Suspect,
    Quarantine,
}

/// Which test gave the evidence.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Test {
    Failures,
    /// Jobs running (or timed out) beyond the rest's quantile `1 - level`.
    Tail {
        level: f64,
    },
    /// Successes slower than `factor` x the rest's median.
    Slow {
        factor: f64,
    },
}

/// The numbers that describe the fault: the subject's own recent jobs, and the rest of the fleet.
#[derive(Clone, Debug, PartialEq)]
pub struct Evidence {
    pub class: String,
    pub subject: Subject,
    pub test: Test,
    /// Events among the subject's `jobs` most recent jobs (running ones first, then newest end first).
    pub events: u32,
    pub jobs: u32,
    /// The rate of those events under "like the rest".
    pub null_rate: f64,
    pub p_value: f64,
    /// Ages of the subject's jobs running now, longest first.
    pub running_ms: Vec<i64>,
    /// Among its newest `jobs` completed attempts: failed and timed out.
    pub failed: u32,
    pub timed_out: u32,
    /// Median run time of its newest successes (at least 3; running jobs past the rest's median
    /// count at their age), and of the rest's.
    pub median_ms: Option<i64>,
    pub fleet_median_ms: i64,
    /// The rest's `tail_quantile` run time, and how many attempts of the rest were compared.
    pub tail_quantile: f64,
    pub fleet_tail_ms: i64,
    pub fleet_jobs: u32,
}

impl Evidence {
    /// The subject's median over the rest's (1.0 when unknown).
    pub fn ratio(&self) -> f64 {
        self.median_ms.map_or(1.0, |m| m as f64 / self.fleet_median_ms.max(1) as f64)
    }
}

/// A run time for people: whole minutes from a minute on, whole seconds below.
fn minutes(ms: i64) -> String {
    let ms = ms.max(0) as u64;
    let secs = if ms >= 60_000 { (ms + 30_000) / 60_000 * 60 } else { (ms + 500) / 1000 };
    crate::duration::format(std::time::Duration::from_secs(secs))
}

impl std::fmt::Display for Evidence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let who = self.who();
        let what = match self.test {
            Test::Failures => "failed or timed out".to_string(),
            Test::Tail { level } => format!("ran past the rest's p{}", quantile_name(level)),
            Test::Slow { factor } => format!("took over {factor}x the rest's median"),
        };
        let running: Vec<String> = self.running_ms.iter().map(|&a| minutes(a)).collect();
        write!(
            f,
            "{who}, class {}: {} of its last {} jobs {what} ({} failed, {} timed out; running now: {}); \
             its median {} vs the rest's {} (p{} {}, over {} jobs); p = {:.1e}",
            self.class,
            self.events,
            self.jobs,
            self.failed,
            self.timed_out,
            if running.is_empty() { "none".to_string() } else { running.join(", ") },
            self.median_ms.map_or("-".to_string(), minutes),
            minutes(self.fleet_median_ms),
            quantile_name(1.0 - self.tail_quantile),
            minutes(self.fleet_tail_ms),
            self.fleet_jobs,
            self.p_value
        )
    }
}

fn quantile_name(level: f64) -> String {
    let q = 100.0 * (1.0 - level);
    if (q - q.round()).abs() < 1e-9 {
        format!("{q:.0}")
    } else {
        format!("{q:.2}").trim_end_matches('0').to_string()
    }
}

/// A job's start, as the fleet's events report it.
#[derive(Clone, Debug, PartialEq)]
pub struct Start {
    pub class: String,
    pub host: String,
    pub unit: String,
    pub job: String,
    pub at_ms: i64,
}

/// An attempt's end.
#[derive(Clone, Debug, PartialEq)]
pub struct Attempt {
    pub class: String,
    pub host: String,
    pub unit: String,
    pub job: String,
    pub started_ms: i64,
    pub run_ms: i64,
    pub end: End,
}

/// What to do to a subject's units.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// No new jobs on these units; their running jobs go on.
    Cordon { class: String, subject: Subject, units: Vec<String>, evidence: Evidence },
    /// Take these units out: their running jobs are requeued without charge; hold and probe.
    Quarantine { class: String, subject: Subject, units: Vec<String>, evidence: Evidence },
    /// Lift the cordon: its jobs completed normally.
    Lift { class: String, subject: Subject, units: Vec<String> },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum AlertKind {
    Suspect,
    Quarantined,
    Slow,
    /// More subjects of a class look bad than the budget lets out: a shared cause?
    ManyLookBad,
}

/// One alert condition, active while it is returned.
#[derive(Clone, Debug, PartialEq)]
pub struct Alert {
    pub kind: AlertKind,
    pub class: String,
    /// `None` for a class-wide condition.
    pub subject: Option<Subject>,
    pub units: Vec<String>,
    pub summary: String,
    /// `false` in shadow mode: what would have been done.
    pub enforced: bool,
}

impl Alert {
    /// The alert's identity, built here only: one per host (its units inside the summary), one
    /// per worker, one per class for [`AlertKind::ManyLookBad`].
    pub fn key(&self) -> AlertKey {
        let kind = match self.kind {
            AlertKind::Suspect => "Suspect",
            AlertKind::Quarantined => "Quarantined",
            AlertKind::Slow => "Slow",
            AlertKind::ManyLookBad => return AlertKey::new("ManyLookBad", &[("class", &self.class)]),
        };
        match &self.subject {
            Some(Subject::Host(h)) => AlertKey::new(&format!("Host{kind}"), &[("class", &self.class), ("host", h)]),
            Some(Subject::Worker(w)) => {
                let (unit, host) = w.rsplit_once('@').unwrap_or((w, ""));
                AlertKey::new(&format!("Worker{kind}"), &[("class", &self.class), ("host", host), ("unit", unit)])
            }
            None => AlertKey::new(&format!("Class{kind}"), &[("class", &self.class)]),
        }
    }
}

/// A subject's standing at one evaluation.
#[derive(Clone, Debug, PartialEq)]
pub struct Judgement {
    pub standing: Standing,
    pub evidence: Evidence,
    /// Out (cordoned or quarantined) by this policy now, or would be in shadow mode.
    pub out: bool,
    /// Bad enough to take out, but the budget is spent.
    pub held_back: bool,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Decision {
    pub judgements: Vec<Judgement>,
    /// What the policy decides (budget applied), enforced or not.
    pub would: Vec<Action>,
    /// What to apply: `would` when enforcing, nothing in shadow mode.
    pub does: Vec<Action>,
    pub alerts: Vec<Alert>,
}

/// A subject taken out by this policy.
#[derive(Clone, Debug)]
struct Out {
    standing: Standing,
    /// The jobs running on it when it was cordoned: the cordon is decided when they all ended.
    jobs: BTreeSet<String>,
    /// How many of them failed or timed out.
    bad_ends: u32,
    units: Vec<String>,
    evidence: Evidence,
}

type Key = (String, Subject);

/// The fleet's recent attempts and running jobs, and who is out. See the module's doc.
#[derive(Clone, Debug, Default)]
pub struct Suspects {
    policy: SuspectPolicy,
    classes: BTreeMap<String, Reference>,
    /// Hash maps, not ordered ones: every job event of the fleet looks these up, and an ordered
    /// map's search grows with the fleet (`benches/fleet_sim.rs`).
    /// Class -> subject -> its newest completed attempts.
    windows: FastMap<String, FastMap<Subject, VecDeque<Run>>>,
    /// Job id -> its running attempt.
    running: FastMap<String, Running>,
    /// Worker -> the job it runs (one at a time): a start finds the worker's previous one
    /// without a scan of the fleet's running jobs.
    by_worker: FastMap<String, String>,
    out: BTreeMap<Key, Out>,
}

fn worker_of(unit: &str, host: &str) -> String {
    format!("{unit}@{host}")
}

fn host_of(worker: &str) -> &str {
    worker.rsplit_once('@').map_or("", |(_, h)| h)
}

impl Suspects {
    pub fn new(policy: SuspectPolicy) -> Self {
        Suspects { policy, ..Default::default() }
    }

    pub fn policy(&self) -> &SuspectPolicy {
        &self.policy
    }

    pub fn started(&mut self, s: &Start) {
        let worker = worker_of(&s.unit, &s.host);
        // A worker runs one job at a time: a start there means its previous attempt is over,
        // whether or not its end was heard (a host that died under it).
        if let Some(previous) = self.by_worker.insert(worker.clone(), s.job.clone()) {
            if self.running.get(&previous).is_some_and(|r| r.worker == worker) {
                self.running.remove(&previous);
            }
        }
        if let Some(r) = self.running.get(&s.job) {
            // The job moved here from another worker without an end heard there.
            if r.worker != worker && self.by_worker.get(&r.worker) == Some(&s.job) {
                self.by_worker.remove(&r.worker);
            }
        }
        let r = Running { class: s.class.clone(), host: s.host.clone(), worker, started_ms: s.at_ms };
        self.running.insert(s.job.clone(), r);
    }

    pub fn ended(&mut self, a: &Attempt) {
        let worker = worker_of(&a.unit, &a.host);
        if self.running.get(&a.job).is_some_and(|r| r.worker == worker) {
            self.running.remove(&a.job);
            self.by_worker.remove(&worker);
        }
        if a.end == End::Interrupted {
            return;
        }
        if matches!(a.end, End::Failed | End::TimedOut) {
            for o in self.out.values_mut().filter(|o| o.jobs.contains(&a.job)) {
                o.bad_ends += 1;
            }
        }
        let (host, worker) = (Subject::Host(a.host.clone()), Subject::Worker(worker));
        let run = Run { started_ms: a.started_ms, run_ms: a.run_ms.max(0), end: a.end };
        let (window, keep) = (self.policy.window, self.policy.reference);
        if !self.windows.contains_key(&a.class) {
            self.windows.insert(a.class.clone(), FastMap::default());
        }
        let of_class = self.windows.get_mut(&a.class).expect("present");
        for subject in [&host, &worker] {
            let w = match of_class.get_mut(subject) {
                Some(w) => w,
                None => of_class.entry(subject.clone()).or_default(),
            };
            w.push_back(run);
            while w.len() > window {
                w.pop_front();
            }
        }
        let d = Done { host, worker, started_ms: run.started_ms, run_ms: run.run_ms, end: run.end };
        match self.classes.get_mut(&a.class) {
            Some(r) => r.push(d, keep),
            None => self.classes.entry(a.class.clone()).or_default().push(d, keep),
        }
    }

    /// A quarantine this policy asked for ended (probe passed, operator release): a clean record.
    pub fn release(&mut self, class: &str, subject: &Subject) {
        let key = (class.to_string(), subject.clone());
        self.out.remove(&key);
        if let Some(of_class) = self.windows.get_mut(class) {
            of_class.remove(subject);
            if let Subject::Host(h) = subject {
                of_class.retain(|s, _| !matches!(s, Subject::Worker(w) if host_of(w) == h));
            }
        }
    }
}

/// The rest of the fleet for one subject: the class's reference minus the subject's own.
struct Rest<'a> {
    all: &'a Tally,
    own: &'a Tally,
}

static NOTHING: Tally =
    Tally { times: Sorted(Vec::new()), successes: Sorted(Vec::new()), failures: 0, timeouts: 0, attempts: 0 };

impl<'a> Rest<'a> {
    fn new(r: &'a Reference, subject: &Subject) -> Self {
        Rest { all: &r.all, own: r.own.get(subject).unwrap_or(&NOTHING) }
    }
    fn attempts(&self) -> usize {
        self.all.attempts - self.own.attempts
    }
    fn n_times(&self) -> usize {
        self.all.times.len() - self.own.times.len()
    }
    fn n_successes(&self) -> usize {
        self.all.successes.len() - self.own.successes.len()
    }
    /// Failed or timed out.
    fn failures(&self) -> usize {
        self.all.failures - self.own.failures
    }
    /// Conformal tail p-value of a run of at least `x`.
    fn p_tail(&self, x: i64) -> f64 {
        let ge = self.all.times.at_least(x) - self.own.times.at_least(x);
        (1 + ge) as f64 / (1 + self.n_times()) as f64
    }
    /// Conformal share of the rest's runs that timed out: what a timeout is scored against (not
    /// its run time, which a few milliseconds past the others' would make look rarer than it is).
    fn p_timeout(&self) -> f64 {
        (1 + self.all.timeouts - self.own.timeouts) as f64 / (1 + self.n_times()) as f64
    }
    fn failure_rate(&self) -> f64 {
        (self.failures() + 1) as f64 / (self.attempts() + 2) as f64
    }
    fn successes_above(&self, x: f64) -> usize {
        self.all.successes.above(x) - self.own.successes.above(x)
    }
    /// The smallest run time with at least a share `q` of the rest's (`all` minus `own`) at or
    /// below it.
    fn quantile(all: &Sorted, own: &Sorted, q: f64) -> i64 {
        let n = all.len() - own.len();
        if n == 0 {
            return 0;
        }
        let want = ((q * n as f64).ceil() as usize).clamp(1, n);
        // At or below all[i], in the rest: monotone in i, so a binary search finds the first
        // index with enough.
        let below = |i: usize| {
            let x = all.0[i];
            all.0.partition_point(|&d| d <= x) - own.0.partition_point(|&d| d <= x)
        };
        let (mut lo, mut hi) = (0, all.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            if below(mid) < want {
                lo = mid + 1
            } else {
                hi = mid
            }
        }
        all.0[lo.min(all.len() - 1)]
    }
    fn median(&self) -> i64 {
        Self::quantile(&self.all.successes, &self.own.successes, 0.5)
    }
    fn tail(&self, q: f64) -> i64 {
        Self::quantile(&self.all.times, &self.own.times, q)
    }
}

/// One job of a subject as the tests see it: how it ended (`None`: still running), its run time
/// or age, and its tail p-value against the rest (for a timeout: the rest's share of timeouts).
#[derive(Clone, Copy, Debug)]
struct Item {
    /// When its outcome was last known: its end, or now for a running job.
    known_ms: i64,
    started_ms: i64,
    end: Option<End>,
    run_ms: i64,
    p_tail: f64,
}

/// An alternative to "this subject is like the rest", as a law of its jobs; each job's likelihood
/// ratio under it against the rest ([`ratio`]).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Alt {
    /// Each job hangs (runs until its timeout) with this chance, and is like the rest otherwise.
    Hang(f64),
    /// Each job fails or times out with this chance.
    Fail(f64),
    /// Each success is slower than the limit with this chance.
    Slow(f64),
}

/// The mixtures tested, equal weights within each: a subject that hangs every job, half or a
/// quarter of them; fails every job, half or a quarter; is slow on 90% or half of its successes.
///
/// Hangs weigh "every job" as much as the other two together: the incident this test is for is
/// a host whose every job hangs, and the level is divided by a host's units (a host of 3 units
/// needs 3x the evidence a worker does), which the weight wins back in part (1.5x).
const HANG: [(Alt, f64); 3] = [(Alt::Hang(1.0), 2.0 / 3.0), (Alt::Hang(0.5), 1.0 / 6.0), (Alt::Hang(0.25), 1.0 / 6.0)];
const FAIL: [(Alt, f64); 3] = [(Alt::Fail(1.0), 1.0 / 3.0), (Alt::Fail(0.5), 1.0 / 3.0), (Alt::Fail(0.25), 1.0 / 3.0)];
const SLOW: [(Alt, f64); 2] = [(Alt::Slow(0.9), 0.5), (Alt::Slow(0.5), 0.5)];

/// What the rest of the fleet says a job's outcome is, under "like the rest".
struct Null {
    /// Chance to fail or time out (smoothed).
    fail: f64,
    /// Chance to time out (conformal: at least 1 / (1 + n)).
    timeout: f64,
    /// Chance for a success to take over `slow_limit` ms (smoothed).
    slow: f64,
    slow_limit: f64,
}

/// A job's likelihood ratio under `alt` against the rest. A running job is censored: all that is
/// known is that it runs at least its age `a`, so under a hang its ratio is
/// `(pi + (1 - pi) S(a)) / S(a)` with `S(a)` the rest's conformal survival (`p_tail`), which only
/// grows with its age; in the failure and slow mixtures its outcome is unknown yet (ratio 1).
fn ratio(alt: Alt, it: &Item, null: &Null) -> f64 {
    match (alt, it.end) {
        (Alt::Hang(pi), None) => 1.0 - pi + pi / it.p_tail,
        (Alt::Hang(pi), Some(End::TimedOut)) => 1.0 - pi + pi / null.timeout,
        // It ended before its timeout: only the (1 - pi) of jobs that do not hang do that.
        (Alt::Hang(pi), Some(_)) => 1.0 - pi,
        (Alt::Fail(_) | Alt::Slow(_), None) => 1.0,
        (Alt::Fail(p), Some(End::Failed | End::TimedOut)) => p / null.fail,
        (Alt::Fail(p), Some(_)) => (1.0 - p) / (1.0 - null.fail),
        (Alt::Slow(r), Some(End::Succeeded)) if it.run_ms as f64 > null.slow_limit => r / null.slow,
        (Alt::Slow(r), Some(End::Succeeded)) => (1.0 - r) / (1.0 - null.slow),
        (Alt::Slow(_), Some(_)) => 1.0,
    }
}

/// The largest e-value over the windows "the first `n` of `items`" (`n` = 1, 2, ...; the items
/// newest first): the equal-weight mixture over `alts` of the product of the window's likelihood
/// ratios. Returns (e-value, the alternative with the largest share of it, `n`); (1, 0, 0) when
/// no window beats "no evidence".
///
/// Why this bounds false alarms however often it is evaluated: under "like the rest", each
/// alternative's product of ratios over the jobs from a given one on is a nonnegative martingale
/// of mean 1 (a running job's censored ratio included: it is `1{T > a} / S(a)` and its mixtures),
/// and so is their mixture; by Ville's inequality it ever reaches `1 / alpha` with chance at most
/// `alpha`, whenever and however often it is looked at. A window starts at each job, so a subject
/// is flagged falsely at most about `alpha` times per job it runs, summed over every look. A
/// binomial p-value scanned over 20 windows at every evaluation has no such bound: "5 of its last
/// 12 failed" at a 1% rate is p = 3e-7, and comes up by chance somewhere in a fleet every few
/// 100,000 jobs.
///
/// `tied(a, b)`: `b` belongs to every window `a` is in (jobs started at the same moment): no window
/// ends between them.
fn scan<'i>(
    items: impl Iterator<Item = &'i Item>,
    alts: &[(Alt, f64)],
    null: &Null,
    tied: impl Fn(&Item, &Item) -> bool,
) -> (f64, usize, usize) {
    let mut prod = vec![1.0f64; alts.len()];
    let mut best = (1.0, 0, 0);
    let mut items = items.peekable();
    let mut n = 0;
    while let Some(it) = items.next() {
        prod.iter_mut().zip(alts).for_each(|(p, (a, _))| *p *= ratio(*a, it, null));
        if items.peek().is_some_and(|next| tied(it, next)) {
            n += 1;
            continue;
        }
        let e: f64 = prod.iter().zip(alts).map(|(p, (_, w))| w * p).sum();
        if e > best.0 {
            let which = (0..prod.len()).max_by(|&a, &b| prod[a].total_cmp(&prod[b])).unwrap_or(0);
            best = (e, which, n + 1);
        }
        n += 1;
    }
    best
}

/// The newest `n` completed jobs, newest end first.
fn newest(items: &[Item], n: usize) -> impl Iterator<Item = &Item> {
    items.iter().filter(|i| i.end.is_some()).take(n)
}

/// The strongest evidence that the subject's jobs fail or hang: (p, test, jobs, events), with
/// `p = 1 / e` (a p-value: the e-value's bound).
///
/// - Hangs: the windows are the subject's jobs *started* since each of its starts, running or
///   ended (a job that succeeded since counts against a hang). That is what makes each window a
///   martingale from 1: "the jobs running now" alone would forget the successes that ended among
///   them, and several stragglers running at once on a host (each started long after the others'
///   units had completed jobs) would add up. A host that hangs from its return has no success
///   among the jobs started since. The events shown are its running jobs and timeouts older than
///   the rest's p90, and the level the least extreme of them.
/// - Failures: the windows are its newest completed jobs, by end (the stream of ends has the
///   jobs' failure rate; running jobs are unknown yet).
///
/// Each mixture gets half of `alpha` (a union bound): `e` is the larger of the two halved.
fn bad_test(items: &[Item], rest: &Rest, q: f64) -> (f64, Test, u32, u32) {
    let null = Null { fail: rest.failure_rate(), timeout: rest.p_timeout(), slow: 0.5, slow_limit: f64::INFINITY };
    let mut by_start: Vec<&Item> = items.iter().collect();
    by_start.sort_by_key(|i| std::cmp::Reverse(i.started_ms));
    let hang = scan(by_start.iter().copied(), &HANG, &null, |a, b| a.started_ms == b.started_ms);
    let fail = scan(items.iter().filter(|i| i.end.is_some()), &FAIL, &null, |_, _| false);
    if fail.0 >= hang.0 {
        let (e, _, n) = fail;
        let k = newest(items, n).filter(|i| matches!(i.end, Some(End::Failed | End::TimedOut))).count();
        return ((2.0 / e).min(1.0), Test::Failures, n as u32, k as u32);
    }
    let (e, _, n) = hang;
    let window = &by_start[..n];
    let old: Vec<f64> = window
        .iter()
        .filter(|i| matches!(i.end, None | Some(End::TimedOut)))
        .map(|i| i.p_tail)
        .filter(|&t| t <= 10.0 * (1.0 - q))
        .collect();
    let level = old.iter().copied().fold(None, |m: Option<f64>, t| Some(m.map_or(t, |m| m.max(t))));
    ((2.0 / e).min(1.0), Test::Tail { level: level.unwrap_or(1.0 - q) }, n as u32, old.len() as u32)
}

/// Evidence that the subject's jobs succeed but take over `factor` x the rest's median: (p,
/// successes in the window, those slower).
fn slow_test(items: &[Item], rest: &Rest, factor: f64) -> (f64, u32, u32) {
    let limit = factor * rest.median() as f64;
    let rate = (rest.successes_above(limit) + 1) as f64 / (rest.n_successes() + 2) as f64;
    let null = Null { fail: 0.5, timeout: 1.0, slow: rate, slow_limit: limit };
    let (e, _, n) = scan(items.iter().filter(|i| i.end.is_some()), &SLOW, &null, |_, _| false);
    let succeeded: Vec<&Item> = newest(items, n).filter(|i| i.end == Some(End::Succeeded)).collect();
    let slow = succeeded.iter().filter(|i| i.run_ms as f64 > limit).count();
    ((1.0 / e).min(1.0), succeeded.len() as u32, slow as u32)
}

/// Fewest successes of the rest in a window's period for [`slow_same_period`] to weigh it.
const SAME_PERIOD_MIN: usize = 20;

/// The slow test against the rest of the fleet *in the same period*: for each window of the
/// subject's newest `n` completed jobs (those that ended since the `n`-th newest end), the
/// median and the share of slow successes are the rest's jobs that ended since then, not those
/// of the whole reference (which at a small fleet spans far longer than a host's window). A
/// slowdown of every host at once moves the rest's jobs of that period as much as the
/// subject's: it is the class's drift (the latency watch's), and no host is slow against the
/// rest. Returns the p-value (`1 / e`); `rest`: the rest's completed attempts, newest end first.
fn slow_same_period(items: &[Item], rest: &[(i64, i64, bool)], factor: f64) -> f64 {
    let done: Vec<&Item> = items.iter().filter(|i| i.end.is_some()).collect();
    let mut successes: Vec<i64> = Vec::new();
    let (mut taken, mut best) = (0, 1.0f64);
    for n in 1..=done.len() {
        let since = done[n - 1].known_ms;
        while let Some(&(_, run, ok)) = rest.get(taken).filter(|r| r.0 >= since) {
            if ok {
                let i = successes.partition_point(|&d| d < run);
                successes.insert(i, run);
            }
            taken += 1;
        }
        if successes.len() < SAME_PERIOD_MIN {
            continue;
        }
        let limit = factor * successes[(successes.len() - 1) / 2] as f64;
        let above = successes.len() - successes.partition_point(|&d| (d as f64) <= limit);
        let rate = (above + 1) as f64 / (successes.len() + 2) as f64;
        let null = Null { fail: 0.5, timeout: 1.0, slow: rate, slow_limit: limit };
        let e: f64 =
            SLOW.iter().map(|(a, w)| w * done[..n].iter().map(|it| ratio(*a, it, &null)).product::<f64>()).sum();
        best = best.max(e);
    }
    (1.0 / best).min(1.0)
}

/// Every job of a class running now, for a running job's survival: their starts, sorted.
#[derive(Clone, Copy)]
struct RunningNow<'a> {
    starts: &'a [i64],
    now_ms: i64,
}

impl Suspects {
    /// The subject's jobs, running ones first, then its recent completed attempts newest end first.
    /// Not by start: among the attempts that started lately, those that already ended are the
    /// short ones, which are mostly the failures, so "its newest starts failed" is more likely
    /// than the failure rate says (three early failures at once on a host of four units were
    /// cordoned that way). The order of ends has no such bias.
    ///
    /// A running job's survival is the rest's completed runs' (`S(a)`), times how many more of
    /// the rest's jobs *running now* are at least as old than those runs predict (at least 1;
    /// `starts`: the start of every job of the class running now, sorted). Completed runs lag
    /// behind a change of the whole class: when every job of the fleet gets slower at once,
    /// every host's running jobs are older than the recent completions say, and the hosts whose
    /// units happened to start first after the change would look like hangs. Jobs of the rest
    /// running that long far more often than predicted say it is the class's drift, not this
    /// subject's; a larger survival only lowers the e-value, so its bound holds. (The share of
    /// the rest's running jobs itself would not do: running jobs are the long ones, so in a
    /// steady fleet with stragglers that share is above `S(a)` at moderate ages, and it took
    /// away the evidence that catches a hanging host of 4 units early.)
    fn items(
        &self,
        class: &str,
        subject: &Subject,
        running: &[&Running],
        on: RunningNow<'_>,
        rest: &Rest,
    ) -> Vec<Item> {
        let (starts, now_ms) = (on.starts, on.now_ms);
        let done = self.windows.get(class).and_then(|w| w.get(subject)).into_iter().flatten().map(|d| Item {
            known_ms: d.started_ms + d.run_ms,
            started_ms: d.started_ms,
            end: Some(d.end),
            run_ms: d.run_ms,
            p_tail: if d.end == End::TimedOut { rest.p_timeout() } else { rest.p_tail(d.run_ms) },
        });
        let rest_running = starts.len().saturating_sub(running.len());
        // How many of the rest's running jobs are at least `age` old, against how many the
        // rest's completed runs say would be (a unit busy with runs of that law spends a share
        // `sum (T - age)+ / sum T` of its time running a job older than `age`), with a margin
        // of one job: a straggler or two of the rest running is no drift.
        let drift = |age: i64, p: f64| {
            if rest_running == 0 || p > 0.1 {
                return 1.0;
            }
            let cut = now_ms - age;
            let older = starts.partition_point(|&s| s <= cut);
            let older = older.saturating_sub(running.iter().filter(|r| r.started_ms <= cut).count());
            if older < 2 {
                return 1.0;
            }
            let excess = |v: &[i64]| -> (f64, f64) {
                let from = v.partition_point(|&d| d < age);
                (v[from..].iter().map(|&d| (d - age) as f64).sum(), v.iter().map(|&d| d as f64).sum())
            };
            let ((a_tail, a_all), (o_tail, o_all)) = (excess(&rest.all.times.0), excess(&rest.own.times.0));
            let share = (a_tail - o_tail).max(0.0) / (a_all - o_all).max(1.0);
            (older as f64 / (1.0 + share * rest_running as f64)).max(1.0)
        };
        let running = running.iter().map(|r| {
            let age = (now_ms - r.started_ms).max(0);
            let p = rest.p_tail(age);
            let p_tail = (p * drift(age, p)).min(1.0);
            Item { known_ms: now_ms, started_ms: r.started_ms, end: None, run_ms: age, p_tail }
        });
        let mut items: Vec<Item> = running.chain(done).collect();
        items.sort_by_key(|i| (i.end.is_some(), std::cmp::Reverse(i.known_ms)));
        items
    }

    fn running_on<'s>(
        &'s self,
        class: &'s str,
        subject: &'s Subject,
    ) -> impl Iterator<Item = (&'s String, &'s Running)> {
        self.running.iter().filter(move |(_, r)| {
            r.class == class
                && match subject {
                    Subject::Host(h) => &r.host == h,
                    Subject::Worker(w) => &r.worker == w,
                }
        })
    }

    /// The subject's standing and the evidence for it; `None` without enough of a healthy rest.
    /// The jobs of `class` running now, by the host and the worker they run on: one pass over
    /// the fleet's running jobs for a whole evaluation (a scan per subject made the judge's
    /// evaluation grow with the square of the fleet).
    /// Also the starts of all of them, sorted (what a running job's age is compared with).
    fn running_by_subject(&self, class: &str) -> (BTreeMap<Subject, Vec<&Running>>, Vec<i64>) {
        let mut by: BTreeMap<Subject, Vec<&Running>> = BTreeMap::new();
        let mut starts = Vec::new();
        for r in self.running.values().filter(|r| r.class == class) {
            by.entry(Subject::Host(r.host.clone())).or_default().push(r);
            by.entry(Subject::Worker(r.worker.clone())).or_default().push(r);
            starts.push(r.started_ms);
        }
        starts.sort_unstable();
        (by, starts)
    }

    /// The rest's completed attempts of a class (the subject's own left out), newest end first:
    /// (end, run time, succeeded).
    fn rest_done(&self, class: &str, subject: &Subject) -> Vec<(i64, i64, bool)> {
        let Some(r) = self.classes.get(class) else { return Vec::new() };
        let mine = |d: &Done| match subject {
            Subject::Host(h) => d.host() == h,
            Subject::Worker(w) => d.worker() == w,
        };
        let mut v: Vec<(i64, i64, bool)> = r
            .recent
            .iter()
            .filter(|d| !mine(d))
            .map(|d| (d.started_ms + d.run_ms, d.run_ms, d.end == End::Succeeded))
            .collect();
        v.sort_unstable_by_key(|d| std::cmp::Reverse(d.0));
        v
    }

    /// `running`: the subject's jobs running now, and `on` every job of the class running now
    /// (from [`Suspects::running_by_subject`]); `units`: how many units a cordon of the subject
    /// takes out (its level is divided by them).
    fn judge(
        &self,
        class: &str,
        subject: &Subject,
        running: &[&Running],
        on: RunningNow<'_>,
        units: usize,
    ) -> Option<(Standing, Evidence)> {
        let p = &self.policy;
        let rest = Rest::new(self.classes.get(class)?, subject);
        if rest.attempts() < p.min_reference || rest.failures() * 2 >= rest.attempts() {
            return None;
        }
        let items = self.items(class, subject, running, on, &rest);
        let fleet_median = rest.median();
        let bad = bad_test(&items, &rest, p.tail_quantile);
        let slow = slow_test(&items, &rest, p.slow_factor);
        let report = slow_test(&items, &rest, SLOW_REPORT_FACTOR);
        // The subject's median over the jobs that gave the slow evidence, not diluted by older ones.
        let ratio_of =
            |n: u32| own_median(&items, fleet_median, n).map_or(1.0, |m| m as f64 / fleet_median.max(1) as f64);
        let ratio = ratio_of(slow.1);
        // Slowness is judged against the rest *in the same period* as well (see
        // [`slow_same_period`]), only for a subject the whole reference already finds slow.
        let rest_done = std::cell::OnceCell::new();
        let same_period = |(pv, n, k): (f64, u32, u32), factor: f64| {
            let done = rest_done.get_or_init(|| self.rest_done(class, subject));
            (pv.max(slow_same_period(&items, done, factor)), n, k)
        };
        // A cordon takes out every unit of a host at once: the false cordons the level bounds
        // are counted in units, so a host's level is the workers' divided by its units.
        let per_unit = 1.0 / units.max(1) as f64;
        let (alpha, cordon_alpha) = (p.alpha * per_unit, p.cordon_alpha * per_unit);
        let slow_test = |(p, n, k), factor| (p, Test::Slow { factor }, n, k);
        let (standing, (p_value, test, jobs, events)) = if bad.0 <= alpha {
            (Standing::Quarantine, bad)
        } else if bad.0 <= cordon_alpha {
            (Standing::Suspect, bad)
        } else if let Some(slow) = Some(slow)
            .filter(|s| s.0 <= alpha && ratio >= p.slow_factor)
            .map(|s| same_period(s, p.slow_factor))
            .filter(|s| s.0 <= alpha)
        {
            // Slow jobs still complete: no attempt is lost while waiting, so a slow host is
            // cordoned only on the stricter level (a few stragglers at once must not do it).
            (Standing::Suspect, slow_test(slow, p.slow_factor))
        } else if let Some(report) = Some(report)
            .filter(|r| r.0 <= p.cordon_alpha && ratio_of(r.1) >= SLOW_REPORT_FACTOR)
            .map(|r| same_period(r, SLOW_REPORT_FACTOR))
            .filter(|r| r.0 <= p.cordon_alpha)
        {
            (Standing::Slow, slow_test(report, SLOW_REPORT_FACTOR))
        } else {
            (Standing::Healthy, bad)
        };
        let newest: Vec<&Item> = items.iter().filter(|i| i.end.is_some()).take(jobs as usize).collect();
        let count = |e: End| newest.iter().filter(|i| i.end == Some(e)).count() as u32;
        let mut running_ms: Vec<i64> = items.iter().filter(|i| i.end.is_none()).map(|i| i.run_ms).collect();
        running_ms.sort_unstable_by(|a, b| b.cmp(a));
        let evidence = Evidence {
            class: class.to_string(),
            subject: subject.clone(),
            test,
            events,
            jobs,
            null_rate: null_rate(test, &rest),
            p_value,
            running_ms,
            failed: count(End::Failed),
            timed_out: count(End::TimedOut),
            median_ms: own_median(&items, fleet_median, jobs.max(3)),
            fleet_median_ms: fleet_median,
            tail_quantile: p.tail_quantile,
            fleet_tail_ms: rest.tail(p.tail_quantile),
            fleet_jobs: rest.attempts() as u32,
        };
        Some((standing, evidence))
    }
}

fn null_rate(test: Test, rest: &Rest) -> f64 {
    match test {
        Test::Failures => rest.failure_rate(),
        Test::Tail { level } => level,
        Test::Slow { factor } => {
            (rest.successes_above(factor * rest.median() as f64) + 1) as f64 / (rest.n_successes() + 2) as f64
        }
    }
}

/// The median run time of the subject's newest `n` successes, counting its running jobs already
/// past the rest's median at their age (a lower bound: they are at least that slow).
fn own_median(items: &[Item], fleet_median: i64, n: u32) -> Option<i64> {
    let mut v: Vec<i64> = items
        .iter()
        .filter(|i| i.end == Some(End::Succeeded) || (i.end.is_none() && i.run_ms > fleet_median))
        .map(|i| i.run_ms)
        .take(n.max(1) as usize)
        .collect();
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    Some(v[(v.len() - 1) / 2])
}

/// The units of a class, by host, as `unit` names: those the supervisor passed, and those seen
/// in the recent attempts and running jobs.
fn class_units(s: &Suspects, class: &str, placements: &[Placement]) -> BTreeMap<String, BTreeSet<String>> {
    let mut m: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let unit = |w: &str| w.rsplit_once('@').map_or(w.to_string(), |(u, _)| u.to_string());
    for p in placements.iter().filter(|p| p.class == class) {
        m.entry(p.host.clone()).or_default().insert(p.unit.clone());
    }
    for d in s.classes.get(class).map(|r| r.recent.iter()).into_iter().flatten() {
        m.entry(d.host().to_string()).or_default().insert(unit(d.worker()));
    }
    for r in s.running.values().filter(|r| r.class == class) {
        m.entry(r.host.clone()).or_default().insert(unit(&r.worker));
    }
    m
}

fn units_of(subject: &Subject, units: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    match subject {
        Subject::Host(h) => units.get(h).map(|u| u.iter().cloned().collect()).unwrap_or_default(),
        Subject::Worker(w) => vec![w.rsplit_once('@').map_or(w.as_str(), |(u, _)| u).to_string()],
    }
}

fn host_name(subject: &Subject) -> &str {
    match subject {
        Subject::Host(h) => h,
        Subject::Worker(w) => host_of(w),
    }
}

/// More than half of a class's hosts in service (`hosts` less those already `taken` out) look
/// bad (a host, or a worker of it, judged a suspect or worse) at once: then "bad" is relative to a record that no longer describes the fleet (every
/// host slowed by a loaded machine room or a slow shared store, a new version of the class), not
/// a fault of those hosts, and taking any of them out would only take capacity away. None is
/// taken out; one [`AlertKind::ManyLookBad`] says so. (A bad wave that broke up to half the
/// hosts is still taken out within the budget: the rest completes normally.)
fn most_look_bad(judged: &BTreeMap<Subject, (Standing, Evidence)>, taken: &BTreeSet<&str>, hosts: usize) -> bool {
    let bad: BTreeSet<&str> = judged
        .iter()
        .filter(|(_, (st, _))| *st >= Standing::Suspect)
        .map(|(s, _)| host_name(s))
        .filter(|h| !taken.contains(h))
        .collect();
    let in_service = hosts.saturating_sub(taken.len());
    in_service >= 2 && 2 * bad.len() > in_service
}

/// Out of a class's `total`, how many may be out at once: the share, but at least one.
fn cap(share: f64, total: usize) -> usize {
    ((share * total as f64).floor() as usize).max(1)
}

impl Suspects {
    /// Judges every host and worker of every class at `now_ms`; see the module's doc.
    pub fn evaluate(&mut self, now_ms: i64, placements: &[Placement]) -> Decision {
        let mut names: BTreeSet<String> = self.classes.keys().cloned().collect();
        names.extend(placements.iter().map(|p| p.class.clone()));
        let mut d = Decision::default();
        for class in names {
            self.evaluate_class(&class, now_ms, placements, &mut d);
        }
        if self.policy.enforce {
            d.does = d.would.clone();
        }
        d
    }

    fn evaluate_class(&mut self, class: &str, now_ms: i64, placements: &[Placement], d: &mut Decision) {
        let units = class_units(self, class, placements);
        let mut subjects: Vec<Subject> = units.keys().map(|h| Subject::Host(h.clone())).collect();
        for (h, us) in &units {
            subjects.extend(us.iter().map(|u| Subject::Worker(worker_of(u, h))));
        }
        let judged: BTreeMap<Subject, (Standing, Evidence)> = {
            let (running, starts) = self.running_by_subject(class);
            let none = Vec::new();
            let on = |s: &Subject| running.get(s).unwrap_or(&none).as_slice();
            let all = RunningNow { starts: &starts, now_ms };
            let size = |s: &Subject| match s {
                Subject::Host(h) => units.get(h).map_or(1, |u| u.len()),
                Subject::Worker(_) => 1,
            };
            subjects.into_iter().filter_map(|s| self.judge(class, &s, on(&s), all, size(&s)).map(|j| (s, j))).collect()
        };
        self.settle(class, &judged, &units, d);
        let taken: BTreeSet<&str> = self
            .out
            .keys()
            .filter_map(|(c, s)| match s {
                Subject::Host(h) if c == class => Some(h.as_str()),
                _ => None,
            })
            .collect();
        let most = most_look_bad(&judged, &taken, units.len());
        let held = self.admit(class, &judged, &units, most, d);
        let total: usize = units.values().map(|u| u.len()).sum();
        self.raise(class, &judged, &held, (total, units.len()), most, d);
        for (s, (standing, ev)) in &judged {
            let out = self.out.contains_key(&(class.to_string(), s.clone()));
            if *standing != Standing::Healthy || out {
                let held_back = held.contains(s);
                d.judgements.push(Judgement { standing: *standing, evidence: ev.clone(), out, held_back });
            }
        }
    }

    /// Subjects already out: escalated to a quarantine on its evidence, or once the jobs that ran
    /// at the cordon all ended: lifted if the evidence fell below the cordon level, quarantined
    /// if it still stands.
    fn settle(
        &mut self,
        class: &str,
        judged: &BTreeMap<Subject, (Standing, Evidence)>,
        units: &UnitMap,
        d: &mut Decision,
    ) {
        let keys: Vec<Key> = self.out.keys().filter(|(c, _)| c == class).cloned().collect();
        for key in keys {
            let Some(o) = self.out.get(&key) else { continue };
            if o.standing == Standing::Quarantine {
                continue;
            }
            let (standing, evidence) = match judged.get(&key.1) {
                Some((s, e)) => (*s, Some(e.clone())),
                None => (Standing::Healthy, None),
            };
            let busy = o.jobs.iter().any(|j| self.running.contains_key(j));
            // Nothing more to learn without new jobs: its jobs ended badly (or none ran).
            let bad_end = o.bad_ends > 0 || o.jobs.is_empty();
            let units = units_of(&key.1, units);
            let subject = key.1.clone();
            if standing == Standing::Quarantine || (!busy && bad_end && standing == Standing::Suspect) {
                let evidence = evidence.unwrap_or_else(|| o.evidence.clone());
                d.would.push(Action::Quarantine { class: class.into(), subject, units, evidence: evidence.clone() });
                let o = self.out.get_mut(&key).expect("present");
                o.standing = Standing::Quarantine;
                o.evidence = evidence;
            } else if !busy {
                d.would.push(Action::Lift { class: class.into(), subject, units });
                self.out.remove(&key);
            }
        }
    }
}

type UnitMap = BTreeMap<String, BTreeSet<String>>;

impl Suspects {
    /// Units and hosts of a class out now.
    fn out_counts(&self, class: &str) -> (BTreeSet<(String, String)>, usize) {
        let mut units = BTreeSet::new();
        let mut hosts = 0;
        for ((_, s), o) in self.out.iter().filter(|((c, _), _)| c == class) {
            hosts += matches!(s, Subject::Host(_)) as usize;
            units.extend(o.units.iter().map(|u| (host_name(s).to_string(), u.clone())));
        }
        (units, hosts)
    }

    /// New subjects to take out, strongest evidence first, within the budget. Returns those held
    /// back by it.
    fn admit(
        &mut self,
        class: &str,
        judged: &BTreeMap<Subject, (Standing, Evidence)>,
        units: &UnitMap,
        most_look_bad: bool,
        d: &mut Decision,
    ) -> Vec<Subject> {
        let is_out = |s: &Subject| self.out.contains_key(&(class.to_string(), s.clone()));
        let bad = |s: &Subject| judged.get(s).is_some_and(|(st, _)| *st >= Standing::Suspect);
        let mut candidates: Vec<(&Subject, &Standing, &Evidence)> = judged
            .iter()
            .filter(|(s, (st, _))| *st >= Standing::Suspect && !is_out(s))
            .filter(|(s, _)| match s {
                Subject::Worker(w) => {
                    let host = Subject::Host(host_of(w).to_string());
                    !is_out(&host) && !bad(&host)
                }
                Subject::Host(_) => true,
            })
            .map(|(s, (st, e))| (s, st, e))
            .collect();
        candidates.sort_by(|a, b| a.2.p_value.total_cmp(&b.2.p_value).then(a.0.cmp(b.0)));
        let total: usize = units.values().map(|u| u.len()).sum();
        let (unit_cap, host_cap) =
            (cap(self.policy.max_quarantined, total), cap(self.policy.max_quarantined, units.len()));
        let (mut out_units, mut out_hosts) = self.out_counts(class);
        let mut held = Vec::new();
        let mut admitted = Vec::new();
        for (s, st, ev) in candidates {
            if most_look_bad {
                held.push(s.clone());
                continue;
            }
            let mine: Vec<String> = units_of(s, units);
            let new = mine.iter().filter(|u| !out_units.contains(&(host_name(s).to_string(), (*u).clone()))).count();
            let host = matches!(s, Subject::Host(_)) as usize;
            if out_units.len() + new > unit_cap || out_hosts + host > host_cap {
                held.push(s.clone());
                continue;
            }
            out_units.extend(mine.iter().map(|u| (host_name(s).to_string(), u.clone())));
            out_hosts += host;
            admitted.push((s.clone(), *st, ev.clone(), mine));
        }
        for (subject, standing, evidence, units) in admitted {
            let jobs = self.running_on(class, &subject).map(|(j, _)| j.clone()).collect();
            let (c, s, u, e) = (class.to_string(), subject.clone(), units.clone(), evidence.clone());
            d.would.push(match standing {
                Standing::Quarantine => Action::Quarantine { class: c, subject: s, units: u, evidence: e },
                _ => Action::Cordon { class: c, subject: s, units: u, evidence: e },
            });
            self.out.insert((class.to_string(), subject), Out { standing, jobs, bad_ends: 0, units, evidence });
        }
        held
    }

    /// The class's alert conditions: one per subject out, one per slow subject reported, and one
    /// for the class when the budget held any back.
    fn raise(
        &self,
        class: &str,
        judged: &BTreeMap<Subject, (Standing, Evidence)>,
        held: &[Subject],
        (units, hosts): (usize, usize),
        most_look_bad: bool,
        d: &mut Decision,
    ) {
        let enforced = self.policy.enforce;
        let verb = |done: &str| if enforced { done.to_string() } else { format!("would be {done} (shadow mode)") };
        for ((_, s), o) in self.out.iter().filter(|((c, _), _)| c == class) {
            let (kind, done) = match o.standing {
                Standing::Quarantine => (AlertKind::Quarantined, "quarantined"),
                _ => (AlertKind::Suspect, "cordoned"),
            };
            let summary = format!("{} {} (units {}): {}", o.evidence.who(), verb(done), o.units.join(", "), o.evidence);
            d.alerts.push(Alert {
                kind,
                class: class.into(),
                subject: Some(s.clone()),
                units: o.units.clone(),
                summary,
                enforced,
            });
        }
        for (s, (_, ev)) in judged.iter().filter(|(_, (st, _))| *st == Standing::Slow) {
            let summary = format!("{} is {:.1}x slower than the rest of the fleet: {ev}", ev.who(), ev.ratio());
            let kind = AlertKind::Slow;
            d.alerts.push(Alert {
                kind,
                class: class.into(),
                subject: Some(s.clone()),
                units: Vec::new(),
                summary,
                enforced,
            });
        }
        if held.is_empty() {
            return;
        }
        let (out_units, out_hosts) = self.out_counts(class);
        let names: Vec<String> = held.iter().map(|s| judged[s].1.who()).collect();
        let summary = if most_look_bad {
            format!(
                "most hosts of class {class} look bad at once against its record ({} of {hosts}): {}; \
                 what changed is more likely the fleet's (load, a shared store, a new version) than these hosts': \
                 taking none of them out",
                held.iter().map(host_name).collect::<BTreeSet<_>>().len(),
                names.join(", ")
            )
        } else {
            format!(
            "many of class {class} look bad at once: {} more beyond the budget ({} of {units} units, {out_hosts} of {hosts} hosts out; at most {:.0}%): {}; \
             a shared cause (a bad wave, a configuration push)? Not taking more out",
            held.len(),
            out_units.len(),
            100.0 * self.policy.max_quarantined,
            names.join(", ")
            )
        };
        let (kind, subject) = (AlertKind::ManyLookBad, None);
        d.alerts.push(Alert { kind, class: class.into(), subject, units: Vec::new(), summary, enforced });
    }
}

impl Evidence {
    /// `host h1` or `worker u1@h1`.
    pub fn who(&self) -> String {
        match &self.subject {
            Subject::Worker(w) => format!("worker {w}"),
            Subject::Host(h) => format!("host {h}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    fn start(host: &str, unit: &str, job: &str, at_ms: i64) -> Start {
        Start { class: "c".into(), host: host.into(), unit: unit.into(), job: job.into(), at_ms }
    }

    fn attempt(host: &str, unit: &str, job: &str, started_ms: i64, run_ms: i64, end: End) -> Attempt {
        Attempt { class: "c".into(), host: host.into(), unit: unit.into(), job: job.into(), started_ms, run_ms, end }
    }

    /// A fleet of 6 hosts x 3 units that ran `rounds` rounds of 24-36 minute jobs (one in 50 a
    /// straggler at 3x, one in 100 a failure), ending at the returned time.
    fn fleet(policy: SuspectPolicy, rounds: usize) -> (Suspects, i64) {
        let mut s = Suspects::new(policy);
        let mut t = [0i64; 18];
        let mut n = 0usize;
        for _ in 0..rounds {
            for (w, t) in t.iter_mut().enumerate() {
                let (host, unit, job) = (format!("h{}", w / 3), format!("u{}", w % 3), format!("j{n}"));
                let mut run = (24 + (n * 7 % 13) as i64) * MIN;
                if n % 50 == 49 {
                    run *= 3;
                }
                let end = if n % 100 == 37 { End::Failed } else { End::Succeeded };
                s.started(&start(&host, &unit, &job, *t));
                s.ended(&attempt(&host, &unit, &job, *t, run, end));
                *t += run;
                n += 1;
            }
        }
        let now = *t.iter().max().expect("workers");
        (s, now)
    }

    /// Like [`fleet`], with one job in 60 timing out at 200 minutes.
    fn fleet_with_timeouts(rounds: usize) -> (Suspects, i64) {
        let mut s = Suspects::new(SuspectPolicy::default());
        let mut t = [0i64; 18];
        for n in 0..rounds * 18 {
            let (w, job) = (n % 18, format!("j{n}"));
            let (host, unit) = (format!("h{}", w / 3), format!("u{}", w % 3));
            let (mut run, mut end) = ((24 + (n * 7 % 13) as i64) * MIN, End::Succeeded);
            if n % 50 == 49 {
                run *= 3;
            }
            if n % 60 == 13 {
                (run, end) = (200 * MIN, End::TimedOut);
            }
            s.started(&start(&host, &unit, &job, t[w]));
            s.ended(&attempt(&host, &unit, &job, t[w], run, end));
            t[w] += run;
        }
        let now = *t.iter().max().expect("workers");
        (s, now)
    }

    fn standing(d: &Decision, subject: &Subject) -> Standing {
        d.judgements.iter().find(|j| &j.evidence.subject == subject).map_or(Standing::Healthy, |j| j.standing)
    }

    #[test]
    fn conformal_tail_p_values_leave_the_subject_out() {
        let mut r = Reference::default();
        for (i, run) in [10, 20, 30, 40, 50].into_iter().enumerate() {
            let host = if i == 4 { "me" } else { "other" };
            let d = Done {
                host: Subject::Host(host.into()),
                worker: Subject::Worker(format!("u@{host}")),
                started_ms: 0,
                run_ms: run,
                end: End::Succeeded,
            };
            r.push(d, 100);
        }
        let rest = Rest::new(&r, &Subject::Host("me".into()));
        // (age, p): the rest is 10, 20, 30, 40 (the subject's own 50 left out).
        for (age, want) in [(5, 1.0), (30, 0.6), (40, 0.4), (45, 0.2), (1000, 0.2)] {
            assert!((rest.p_tail(age) - want).abs() < 1e-12, "age {age}: {}", rest.p_tail(age));
        }
        assert_eq!((rest.median(), rest.tail(0.99), rest.attempts()), (20, 40, 4));
    }

    #[test]
    fn when_most_hosts_look_bad_at_once_none_is_taken_out_and_one_alert_says_why() {
        // Hosts whose newest jobs all failed at once (five each, within five minutes), against a
        // record where one job in 100 fails. On one host that is a bad host; on most of the
        // fleet's hosts at once it is what the fleet shares (a dependency, a configuration push,
        // a new version), and taking them out would only empty the fleet: none is taken out,
        // and one class-wide alert says so. Up to half, the budget (one host of six) applies.
        let hosts: Vec<Subject> = (0..6).map(|h| Subject::Host(format!("h{h}"))).collect();
        // (hosts failing) -> (one taken out, the class-wide alert says "most hosts")
        for (failing, taken_out, most) in [(6, false, true), (4, false, true), (1, true, false), (3, true, false)] {
            let (mut s, t) = fleet(SuspectPolicy::default(), 120);
            for h in 0..failing {
                for i in 0..5 {
                    let (host, unit, job, at) =
                        (format!("h{h}"), format!("u{}", i % 3), format!("f{h}-{i}"), t + i * MIN);
                    s.started(&start(&host, &unit, &job, at));
                    s.ended(&attempt(&host, &unit, &job, at, MIN, End::Failed));
                }
            }
            let d = s.evaluate(t + 6 * MIN, &[]);
            for h in &hosts[..failing] {
                assert!(standing(&d, h) >= Standing::Suspect, "{failing} failing: {h:?}'s evidence stands");
            }
            let out: Vec<&Subject> = d.judgements.iter().filter(|j| j.out).map(|j| &j.evidence.subject).collect();
            let many: Vec<&Alert> = d.alerts.iter().filter(|a| a.kind == AlertKind::ManyLookBad).collect();
            if taken_out {
                assert_eq!(out.len(), 1, "{failing} of 6 failing: one host within the budget: {out:?}");
                assert!(hosts[..failing].contains(out[0]), "{failing} of 6 failing: {out:?}");
            } else {
                assert!(out.is_empty() && d.does.is_empty(), "{failing} of 6 failing: nothing done: {:?}", d.does);
                assert!(d.alerts.iter().all(|a| a.kind == AlertKind::ManyLookBad), "no host's page: {:?}", d.alerts);
            }
            assert_eq!(many.len(), usize::from(failing > 1), "{failing} of 6 failing: {:?}", d.alerts);
            let says_most = many.first().is_some_and(|a| {
                a.summary
                    .contains(&format!("most hosts of class c look bad at once against its record ({failing} of 6)"))
            });
            assert_eq!(says_most, most, "{failing} of 6 failing: {:?}", many);
        }
    }

    #[test]
    fn early_failures_are_weighed_in_the_order_jobs_ended_not_started() {
        // The rest of the fleet fails about 1 job in 75 (e-values 8e4 for three failures in a row,
        // 5e3 for three in four): at this cordon level the first cordons, the second does not.
        let policy = SuspectPolicy { cordon_alpha: 5e-5, alpha: 1e-9, ..SuspectPolicy::default() };
        let host = Subject::Host("h0".into());
        for (u0_succeeds_last, want) in [(false, Standing::Suspect), (true, Standing::Healthy)] {
            let (mut s, t) = fleet(policy.clone(), 30);
            // On h0: u0 starts a job; a minute later u1 and u2 start jobs that fail within two
            // minutes, and u1's next one fails too. The three failures are the newest starts
            // that have ended; when u0's job succeeds after them, they are not the newest ends.
            s.started(&start("h0", "u0", "ok", t));
            for (unit, job, at) in [("u1", "f1", t + MIN), ("u2", "f2", t + MIN), ("u1", "f3", t + 3 * MIN)] {
                s.started(&start("h0", unit, job, at));
                s.ended(&attempt("h0", unit, job, at, 2 * MIN, End::Failed));
            }
            s.started(&start("h0", "u2", "next2", t + 3 * MIN));
            s.started(&start("h0", "u1", "next1", t + 5 * MIN));
            if u0_succeeds_last {
                s.ended(&attempt("h0", "u0", "ok", t, 30 * MIN, End::Succeeded));
            }
            let d = s.evaluate(t + 30 * MIN, &[]);
            assert_eq!(standing(&d, &host), want, "u0 succeeds last: {u0_succeeds_last}");
        }
    }

    #[test]
    fn k_failures_among_the_last_n_at_the_fleet_rate_are_chance_however_often_looked_at() {
        // The rest fails about 1 job in 75. A binomial p-value of "k of the last n" is under the
        // cordon level (5 of 12: 3e-7; 6 of 20: 2e-7; against 1e-6), but it is the smallest of 20
        // windows, looked at on every evaluation of every subject: such windows come up by
        // chance. The e-value is bounded over all windows and looks, and says "healthy"; a host
        // whose every job fails is still caught after a few of them.
        let host = Subject::Host("h0".into());
        // (jobs, oldest first: F failed, S succeeded; the binomial p of the newest ones; standing)
        let cases = [
            ("SSSSSSFSSFSSFSSFSF", Some((5, 12)), Standing::Healthy),
            ("SSFSSFSSSFSSFSSSFSSF", Some((6, 20)), Standing::Healthy),
            ("SSSSSSSSSSSSSSSFFFFF", None, Standing::Suspect),
        ];
        for (jobs, window, want) in cases {
            let (mut s, mut t) = fleet(SuspectPolicy::default(), 30);
            let mut failed = 0;
            for (i, c) in jobs.chars().enumerate() {
                // The failures spread over the host's units: no worker's own record stands out.
                let unit = format!("u{}", if c == 'F' { failed % 3 } else { i % 3 });
                failed += (c == 'F') as usize;
                let job = format!("p{i}");
                let (run, end) = if c == 'F' { (10 * MIN, End::Failed) } else { (30 * MIN, End::Succeeded) };
                s.started(&start("h0", &unit, &job, t));
                s.ended(&attempt("h0", &unit, &job, t, run, end));
                t += run / 3;
            }
            if let Some((k, n)) = window {
                let rest = Rest::new(&s.classes["c"], &host);
                let p = crate::quarantine::binomial_tail(k, n, rest.failure_rate());
                assert!(p < s.policy.cordon_alpha, "{jobs}: a scanned binomial would act (p {p:e})");
            }
            for look in 0..30 {
                let d = s.evaluate(t + look * MIN, &[]);
                assert_eq!(standing(&d, &host), want, "{jobs}, look {look}: {:?}", d.judgements);
                if want == Standing::Healthy {
                    assert!(d.does.is_empty(), "{jobs}: {:?}", d.does);
                }
            }
        }
    }

    #[test]
    fn where_the_rest_times_out_at_its_p99_timeouts_make_the_next_running_jobs_evidence() {
        // The rest of the fleet times out 1 job in 60 (at 200 minutes) and has stragglers at 3x:
        // its p99 is its timeout, so no running job can look older than 1 in 60 of the rest's
        // before it times out. Three hung jobs on h0 are not enough alone (1 / 60^3 at most,
        // against 1e-6 for six alternatives), but once they timed out, the next three jobs
        // running there at 40 minutes (past every success of the rest but its stragglers) are.
        let host = Subject::Host("h0".into());
        let (mut s, t) = fleet_with_timeouts(30);
        for u in 0..3 {
            s.started(&start("h0", &format!("u{u}"), &format!("hang{u}"), t));
        }
        let d = s.evaluate(t + 199 * MIN, &[]);
        assert_eq!(standing(&d, &host), Standing::Healthy, "before the timeouts: {:?}", d.judgements);
        for u in 0..3 {
            s.ended(&attempt("h0", &format!("u{u}"), &format!("hang{u}"), t, 200 * MIN, End::TimedOut));
        }
        let d = s.evaluate(t + 200 * MIN, &[]);
        assert_eq!(standing(&d, &host), Standing::Healthy, "three timeouts alone: {:?}", d.judgements);
        let next = t + 201 * MIN;
        for u in 0..3 {
            s.started(&start("h0", &format!("u{u}"), &format!("next{u}"), next));
        }
        let d = s.evaluate(next + 20 * MIN, &[]);
        assert_eq!(standing(&d, &host), Standing::Healthy, "at 20 minutes, within the rest's: {:?}", d.judgements);
        let d = s.evaluate(next + 40 * MIN, &[]);
        assert!(standing(&d, &host) >= Standing::Suspect, "at 40 minutes: {:?}", d.judgements);
        let j = d.judgements.iter().find(|j| j.evidence.subject == host).expect("judged");
        assert!(matches!(j.evidence.test, Test::Tail { .. }), "{:?}", j.evidence);
        assert_eq!((j.evidence.events, j.evidence.jobs, j.evidence.timed_out), (6, 6, 3), "{}", j.evidence);
    }

    #[test]
    fn stragglers_running_at_once_after_normal_jobs_on_the_other_units_are_not_a_hang() {
        // Three jobs of h0 run past every run of the rest (each 1 in 451 alone), but they
        // started at different times and the host's other units completed jobs in between: a
        // hanging host does not do that. The jobs running now taken alone would make 1 / 451^3.
        let host = Subject::Host("h0".into());
        // (units whose jobs completed normally between the stragglers' starts, standing)
        for (normal, want) in [(true, Standing::Healthy), (false, Standing::Quarantine)] {
            let (mut s, t) = fleet(SuspectPolicy::default(), 40);
            s.started(&start("h0", "u0", "long0", t));
            let (mut at1, mut at2) = (t, t);
            if normal {
                for (unit, job, at) in [("u1", "n1", t), ("u2", "n2", t), ("u1", "n3", t + 30 * MIN)] {
                    s.started(&start("h0", unit, job, at));
                    s.ended(&attempt("h0", unit, job, at, 30 * MIN, End::Succeeded));
                }
                (at1, at2) = (t + 60 * MIN, t + 30 * MIN);
            }
            s.started(&start("h0", "u1", "long1", at1));
            s.started(&start("h0", "u2", "long2", at2));
            let d = s.evaluate(t + 175 * MIN, &[]);
            assert_eq!(standing(&d, &host), want, "normal jobs between: {normal}: {:?}", d.judgements);
        }
    }

    #[test]
    fn stragglers_running_now_are_no_evidence_of_a_slow_host() {
        // One job in 50 of the rest is a straggler at 3x. Three of h0's newest successes took 3x
        // (8e-6: not enough), and two of its units run jobs already at 3x: counted as slow they
        // would make five in a row (3e-9) and cordon it before either ended.
        let host = Subject::Host("h0".into());
        for (running, want) in [(true, Standing::Healthy), (false, Standing::Healthy)] {
            let (mut s, mut t) = fleet(SuspectPolicy::default(), 40);
            for i in 0..3 {
                let (unit, job) = (format!("u{i}"), format!("slow{i}"));
                s.started(&start("h0", &unit, &job, t));
                s.ended(&attempt("h0", &unit, &job, t, 90 * MIN, End::Succeeded));
                t += MIN;
            }
            if running {
                s.started(&start("h0", "u0", "now0", t));
                s.started(&start("h0", "u1", "now1", t));
            }
            let d = s.evaluate(t + 90 * MIN, &[]);
            assert_eq!(standing(&d, &host), want, "running: {running}");
        }
        // The same host once those two ended as slow too: five slow successes in a row, while
        // the rest's units ran normal jobs in the same period.
        let (mut s, t0) = fleet(SuspectPolicy::default(), 40);
        for w in 3..18 {
            let (host, unit) = (format!("h{}", w / 3), format!("u{}", w % 3));
            for k in 0..6 {
                let (job, at) = (format!("n{w}-{k}"), t0 + k * 30 * MIN);
                s.started(&start(&host, &unit, &job, at));
                s.ended(&attempt(&host, &unit, &job, at, 30 * MIN, End::Succeeded));
            }
        }
        for i in 0..5 {
            let (unit, job, at) = (format!("u{}", i % 3), format!("slow{i}"), t0 + i * MIN);
            s.started(&start("h0", &unit, &job, at));
            s.ended(&attempt("h0", &unit, &job, at, 90 * MIN, End::Succeeded));
        }
        assert_eq!(standing(&s.evaluate(t0 + 180 * MIN, &[]), &host), Standing::Suspect);
    }

    #[test]
    fn running_ages_failures_and_slowness_against_the_rest_of_the_fleet() {
        // (what h0's three units do now, how h0 stands, and the test that says so)
        type Setup = fn(&mut Suspects, i64) -> i64;
        let hang = |age: i64| {
            move |s: &mut Suspects, t: i64| {
                for u in 0..3 {
                    s.started(&start("h0", &format!("u{u}"), &format!("hang{u}"), t + u * MIN));
                }
                t + 2 * MIN + age
            }
        };
        type Boxed = Box<dyn Fn(&mut Suspects, i64) -> i64>;
        let cases: Vec<(&str, Boxed, Standing, Option<&str>)> = vec![
            ("three jobs at 1.5x the median", Box::new(hang(45 * MIN)), Standing::Healthy, None),
            ("three jobs past the rest's p99.5", Box::new(hang(107 * MIN)), Standing::Suspect, Some("Tail")),
            ("three jobs past every run of the rest", Box::new(hang(120 * MIN)), Standing::Quarantine, Some("Tail")),
            ("one straggler past every run of the rest", Box::new(one_straggler as Setup), Standing::Healthy, None),
            ("six fast failures in a row", Box::new(fail_fast as Setup), Standing::Quarantine, Some("Failures")),
            ("successes at 4x", Box::new(|s: &mut Suspects, t| slow(s, t, 4.0)), Standing::Suspect, Some("Slow")),
            (
                "successes at 2x: reported",
                Box::new(|s: &mut Suspects, t| slow(s, t, 2.0)),
                Standing::Slow,
                Some("Slow"),
            ),
        ];
        for (name, setup, want, test) in cases {
            let (mut s, t) = fleet(SuspectPolicy::default(), 40);
            let now = setup(&mut s, t);
            let d = s.evaluate(now, &[]);
            let h0 = Subject::Host("h0".into());
            assert_eq!(standing(&d, &h0), want, "{name}: {:?}", d.judgements);
            if let Some(test) = test {
                let j = d.judgements.iter().find(|j| j.evidence.subject == h0).expect("judged");
                assert!(format!("{:?}", j.evidence.test).starts_with(test), "{name}: {:?}", j.evidence);
            }
            for h in 1..6 {
                assert_eq!(standing(&d, &Subject::Host(format!("h{h}"))), Standing::Healthy, "{name}: h{h}");
            }
        }
    }

    #[test]
    fn a_cordon_is_lifted_when_its_jobs_complete_normally_and_becomes_a_quarantine_when_they_hang() {
        // (how h0's three long jobs end, the action that follows once they all ended)
        let cases = [(End::Succeeded, "Lift"), (End::TimedOut, "Quarantine"), (End::Interrupted, "Lift")];
        for (end, want) in cases {
            let (mut s, t) = fleet(SuspectPolicy::default(), 40);
            for u in 0..3 {
                s.started(&start("h0", &format!("u{u}"), &format!("long{u}"), t));
            }
            let d = s.evaluate(t + 107 * MIN, &[]);
            let kinds: Vec<String> = d.does.iter().map(|a| format!("{a:?}")).collect();
            assert!(matches!(d.does.as_slice(), [Action::Cordon { units, .. }] if units.len() == 3), "{kinds:?}");
            assert_eq!(d.alerts.len(), 1, "one alert for the host: {:?}", d.alerts);
            let key = d.alerts[0].key();
            assert_eq!((key.name.as_str(), key.label("host"), key.label("unit")), ("HostSuspect", "h0", ""));
            let text = &d.alerts[0].summary;
            assert!(text.contains("host h0 cordoned (units u0, u1, u2)"), "{text}");
            assert!(text.contains("3 of its last 3 jobs ran past the rest's p99.66"), "{text}");
            assert!(text.contains("running now: 1h47m, 1h47m, 1h47m"), "the fault's own numbers: {text}");
            assert!(s.evaluate(t + 108 * MIN, &[]).does.is_empty(), "actions are edges");
            for u in 0..2 {
                s.ended(&attempt("h0", &format!("u{u}"), &format!("long{u}"), t, 110 * MIN, end));
            }
            // Two timeouts may already be evidence enough for a quarantine; two normal ends
            // decide nothing while the third job runs.
            let mut after = s.evaluate(t + 111 * MIN, &[]).does;
            assert!(after.is_empty() || end == End::TimedOut, "{end:?}: one of its jobs still runs: {after:?}");
            s.ended(&attempt("h0", "u2", "long2", t, 111 * MIN, end));
            after.extend(s.evaluate(t + 112 * MIN, &[]).does);
            assert_eq!(after.len(), 1, "{end:?}: {after:?}");
            assert!(format!("{:?}", after[0]).starts_with(want), "{end:?}: {:?}", after[0]);
        }
    }

    #[test]
    fn the_budget_takes_out_the_strongest_and_raises_one_condition_and_shadow_mode_only_reports() {
        // (enforce, hosts hanging) -> (hosts out, actions applied, ManyLookBad raised)
        let cases = [(true, 1, 1, 1, false), (true, 3, 1, 1, true), (false, 1, 1, 0, false), (false, 3, 1, 0, true)];
        for (enforce, bad, out, applied, many) in cases {
            let policy = SuspectPolicy { enforce, ..SuspectPolicy::default() };
            let (mut s, t) = fleet(policy, 120);
            // Host h0 hangs (past every run of the rest), the others fail fast (five failures
            // each, weaker evidence): the strongest evidence goes first.
            for u in 0..3 {
                s.started(&start("h0", &format!("u{u}"), &format!("long0-{u}"), t));
            }
            for h in 1..bad {
                for i in 0..5 {
                    let (host, unit, job, at) =
                        (format!("h{h}"), format!("u{}", i % 3), format!("f{h}-{i}"), t + i * MIN);
                    s.started(&start(&host, &unit, &job, at));
                    s.ended(&attempt(&host, &unit, &job, at, MIN, End::Failed));
                }
            }
            let d = s.evaluate(t + 140 * MIN, &[]);
            let outs: Vec<&Judgement> = d.judgements.iter().filter(|j| j.out).collect();
            assert_eq!(outs.len(), out, "{enforce} {bad}: {:?}", d.judgements);
            assert_eq!(outs[0].evidence.subject, Subject::Host("h0".into()));
            assert_eq!((d.would.len(), d.does.len()), (out, applied), "{enforce} {bad}");
            let raised: Vec<&Alert> = d.alerts.iter().filter(|a| a.kind == AlertKind::ManyLookBad).collect();
            assert_eq!(raised.len(), many as usize, "{enforce} {bad}: {:?}", d.judgements);
            if many {
                let text = &raised[0].summary;
                assert!(
                    text.contains("2 more beyond the budget") && text.contains("host h1") && text.contains("host h2"),
                    "{text}"
                );
                assert_eq!(d.judgements.iter().filter(|j| j.held_back).count(), 2);
            }
            assert!(d.alerts.iter().all(|a| a.enforced == enforce));
            let shadow = d.alerts.iter().any(|a| a.summary.contains("would be quarantined (shadow mode)"));
            assert_eq!(shadow, !enforce, "{:?}", d.alerts);
        }
    }

    #[test]
    fn restart_noise_is_not_evidence_and_a_new_start_on_a_unit_ends_its_lost_attempt() {
        let (mut s, t) = fleet(SuspectPolicy::default(), 30);
        // A host restarted three times over: every attempt interrupted, some end never heard.
        for r in 0..3 {
            for u in 0..3 {
                let (unit, job, at) = (format!("u{u}"), format!("r{r}-{u}"), t + r * 150 * MIN);
                s.started(&start("h0", &unit, &job, at));
                if u != 2 {
                    s.ended(&attempt("h0", &unit, &job, at, 5 * MIN, End::Interrupted));
                }
            }
        }
        let d = s.evaluate(t + 2 * 150 * MIN + 10 * MIN, &[]);
        assert!(d.judgements.is_empty() && d.would.is_empty(), "{:?}", d.judgements);
        let running: Vec<&String> = s.running.keys().collect();
        assert_eq!(running, ["r2-2"], "one running job per unit: the lost ones are forgotten");
    }

    #[test]
    fn a_slowdown_of_every_host_at_once_is_the_class_drift_not_a_slow_host() {
        // Every worker's next four jobs take twice as long, all from the same moment: against
        // the whole reference (2,000 jobs, nearly all from before) each host's newest successes
        // are 2x the rest's median; against the rest's jobs of the same period they are not.
        let (mut s, t0) = fleet(SuspectPolicy::default(), 120);
        let mut t: Vec<i64> = (0..18).map(|w| t0 + w as i64 * MIN).collect();
        for round in 0..4 {
            for (w, t) in t.iter_mut().enumerate() {
                let (host, unit, job) = (format!("h{}", w / 3), format!("u{}", w % 3), format!("slow{round}-{w}"));
                let run = 2 * (24 + ((w + round) * 7 % 13) as i64) * MIN;
                s.started(&start(&host, &unit, &job, *t));
                s.ended(&attempt(&host, &unit, &job, *t, run, End::Succeeded));
                *t += run;
            }
        }
        let now = *t.iter().max().expect("workers");
        let d = s.evaluate(now, &[]);
        for h in 0..6 {
            assert_eq!(standing(&d, &Subject::Host(format!("h{h}"))), Standing::Healthy, "h{h}: {:?}", d.judgements);
        }
        // One host alone twice as slow, the same jobs: slow against the rest.
        let (mut s, t0) = fleet(SuspectPolicy::default(), 120);
        let mut t: Vec<i64> = (0..18).map(|w| t0 + w as i64 * MIN).collect();
        for round in 0..4 {
            for (w, t) in t.iter_mut().enumerate() {
                let (host, unit, job) = (format!("h{}", w / 3), format!("u{}", w % 3), format!("n{round}-{w}"));
                let run = (1 + (w < 3) as i64) * (24 + ((w + round) * 7 % 13) as i64) * MIN;
                s.started(&start(&host, &unit, &job, *t));
                s.ended(&attempt(&host, &unit, &job, *t, run, End::Succeeded));
                *t += run;
            }
        }
        let now = *t.iter().max().expect("workers");
        assert_eq!(standing(&s.evaluate(now, &[]), &Subject::Host("h0".into())), Standing::Slow);
    }

    #[test]
    fn a_slowdown_of_every_host_at_once_is_not_a_hang_of_the_hosts_that_started_first() {
        // Every unit of the fleet (the 6 hosts of the reference and 10 more) starts a job within
        // 18 minutes and all of them run past every run of the reference (the class got
        // slower). h0's units started first (minutes 0, 6 and 12), the rest's in between:
        // against the completed runs alone h0's three jobs are a hang (p about 4e-9); the rest's
        // jobs running as long, far more of them than the completed runs predict, say it is the
        // whole class.
        let (mut s, t0) = fleet(SuspectPolicy::default(), 120);
        for w in 0..48usize {
            let (host, unit, job) = (format!("h{}", w / 3), format!("u{}", w % 3), format!("long{w}"));
            let offset = ((w % 3) * 6 + (w / 3) % 6) as i64 * MIN;
            s.started(&start(&host, &unit, &job, t0 + offset));
        }
        let d = s.evaluate(t0 + 115 * MIN, &[]);
        for h in 0..16 {
            assert_eq!(standing(&d, &Subject::Host(format!("h{h}"))), Standing::Healthy, "h{h}: {:?}", d.judgements);
        }
        // The same three jobs on h0 while the rest's units run normal jobs: a hang.
        let (mut s, t0) = fleet(SuspectPolicy::default(), 120);
        for w in 0..18usize {
            let (host, unit, job) = (format!("h{}", w / 3), format!("u{}", w % 3), format!("j{w}"));
            let offset = ((w % 3) * 6 + w / 3) as i64 * MIN;
            let at = t0 + if w < 3 { offset } else { 100 * MIN + offset };
            s.started(&start(&host, &unit, &job, at));
        }
        assert!(standing(&s.evaluate(t0 + 115 * MIN, &[]), &Subject::Host("h0".into())) >= Standing::Suspect);
    }

    #[test]
    fn a_host_is_cordoned_at_the_workers_level_divided_by_its_units() {
        // A cordon takes out every unit of the host: the false cordons the level bounds are
        // counted in units. h0's three units hang from the same moment; at the first evaluation
        // that takes it out, its evidence is at most a third of `cordon_alpha`.
        let (mut s, t0) = fleet(SuspectPolicy::default(), 120);
        for u in 0..3 {
            s.started(&start("h0", &format!("u{u}"), &format!("hang{u}"), t0));
        }
        let host = Subject::Host("h0".into());
        let first = (60..200).find_map(|age| {
            let d = s.evaluate(t0 + age * MIN, &[]);
            let j = d.judgements.iter().find(|j| j.evidence.subject == host && j.standing >= Standing::Suspect)?;
            Some((age, j.evidence.p_value))
        });
        let (age, p) = first.expect("the hang is cordoned");
        assert!(p <= SuspectPolicy::default().cordon_alpha / 3.0, "cordoned at {age} min with p = {p:e}");
    }

    fn one_straggler(s: &mut Suspects, t: i64) -> i64 {
        s.started(&start("h0", "u0", "long", t));
        t + 200 * MIN
    }

    fn fail_fast(s: &mut Suspects, t: i64) -> i64 {
        for i in 0..6 {
            let (unit, job, at) = (format!("u{}", i % 3), format!("f{i}"), t + i * MIN);
            s.started(&start("h0", &unit, &job, at));
            s.ended(&attempt("h0", &unit, &job, at, MIN, End::Failed));
        }
        t + 7 * MIN
    }

    fn slow(s: &mut Suspects, mut t: i64, factor: f64) -> i64 {
        for i in 0..12 {
            let (unit, job) = (format!("u{}", i % 3), format!("s{i}"));
            let run = (factor * (28 + i % 5) as f64) as i64 * MIN;
            s.started(&start("h0", &unit, &job, t));
            s.ended(&attempt("h0", &unit, &job, t, run, End::Succeeded));
            t += run / 3;
        }
        t
    }
}
