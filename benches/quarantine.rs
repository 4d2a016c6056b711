//! Quarantine evaluation (issue: bad workers vs bad jobs), on simulated fleets fed through the
//! production decision code (`drover::quarantine`): how many failed jobs a misconfigured host
//! costs before it is quarantined, and how many healthy workers a long run with ordinary
//! failures and restart noise quarantines by mistake.
//!
//! The second part (`running_evidence`) runs `drover::suspects` on a fleet in simulated time:
//! log-normal 20-40 minute jobs with stragglers, ordinary failures, routine host restarts, then
//! one host (or half of them) turning bad: every job hangs until its timeout, fails fast, or runs
//! 4x slower. It reports the time to the bad host's cordon and quarantine in multiples of the
//! class's p99, the attempts lost to it, false cordons and quarantines, and the budget. Tuned on
//! the "tune" rows only; the "report" rows use seeds and workload shapes not tuned on.
//!
//!   cargo bench --bench quarantine          (DROVER_BENCH_SEED to change the first part's seed;
//!                                            DROVER_BENCH_ONLY=tune for the tuning rows only,
//!                                            DROVER_BENCH_ONLY=false for the false-alarm and
//!                                            budget rows only, tune,false for both,
//!                                            DROVER_BENCH_HEALTHY_SEEDS=a-b for other
//!                                            healthy-fleet seeds (no tune rows),
//!                                            DROVER_BENCH_VERBOSE=1 for each run and the
//!                                            evidence of every false cordon,
//!                                            DROVER_BENCH_REPORT_SEEDS=k for the report
//!                                            seeds 1k01-1k06, 2k01, 3k01-3k03; default 3)

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
    running_evidence();
}

// ---------------------------------------------------------------------------------------------
// Running evidence, slow hosts and the budget (`drover::suspects`): a fleet in simulated time.
// ---------------------------------------------------------------------------------------------

#[path = "support/rng.rs"]
mod rng;

use drover::suspects::{Action, AlertKind, Attempt, End, Placement, Start, SuspectPolicy, Suspects};

const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;

/// A class's workload: log-normal run times around `median_min`, a share of stragglers at 2-5x,
/// ordinary failures at a random point of the run; the class's timeout.
#[derive(Clone, Copy, Debug)]
struct Shape {
    median_min: f64,
    sigma: f64,
    stragglers: f64,
    fail: f64,
    timeout_min: i64,
}

/// How the bad host breaks.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Bad {
    Hang,
    FailFast,
    Slow4x,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Gate {
    Open,
    Cordoned,
    Quarantined,
}

struct Job {
    id: u64,
    started: i64,
    ends: i64,
    end: End,
}

struct Host {
    /// Routine restarts since it turned bad.
    restarts_bad: u32,
    up_at: i64,
    next_restart: i64,
    bad: Option<Bad>,
}

struct Fleet {
    rng: rng::Rng,
    shape: Shape,
    hosts: Vec<Host>,
    units: usize,
    jobs: Vec<Option<Job>>,
    gates: Vec<Gate>,
    s: Suspects,
    next_id: u64,
    completions: u64,
    /// Per unit: attempts started on a bad host that did not succeed.
    lost: Vec<u32>,
    /// Mean time between routine restarts of a host.
    restart_every: i64,
}

fn names(w: usize, units: usize) -> (String, String) {
    (format!("h{}", w / units), format!("u{}", w % units))
}

impl Fleet {
    fn new(seed: u64, shape: Shape, hosts: usize, units: usize, policy: SuspectPolicy) -> Fleet {
        let mut rng = rng::Rng::new(seed);
        let restart_every = 12 * HOUR;
        let hosts = (0..hosts)
            .map(|_| Host {
                restarts_bad: 0,
                up_at: 0,
                next_restart: rng.exponential(restart_every as f64) as i64,
                bad: None,
            })
            .collect::<Vec<_>>();
        let n = hosts.len() * units;
        Fleet {
            rng,
            shape,
            hosts,
            units,
            jobs: (0..n).map(|_| None).collect(),
            gates: vec![Gate::Open; n],
            s: Suspects::new(policy),
            next_id: 0,
            completions: 0,
            lost: vec![0; n],
            restart_every,
        }
    }

    fn placements(&self) -> Vec<Placement> {
        (0..self.jobs.len())
            .map(|w| {
                let (host, unit) = names(w, self.units);
                Placement { class: "c".into(), host, unit }
            })
            .collect()
    }

    /// A healthy run time, ms.
    fn run_time(&mut self) -> f64 {
        let sh = self.shape;
        let mut d = sh.median_min * MIN as f64 * (sh.sigma * self.rng.normal()).exp();
        if self.rng.uniform() < sh.stragglers {
            d *= 2.0 + 3.0 * self.rng.uniform();
        }
        d
    }

    /// How an attempt started now on worker `w` ends, and when.
    fn draw(&mut self, w: usize, now: i64) -> (i64, End) {
        let timeout = self.shape.timeout_min * MIN;
        let bad = self.hosts[w / self.units].bad;
        let (d, end) = match bad {
            Some(Bad::Hang) => (timeout as f64, End::TimedOut),
            Some(Bad::FailFast) => ((1.0 + 2.0 * self.rng.uniform()) * MIN as f64, End::Failed),
            _ => {
                let d = self.run_time() * if bad == Some(Bad::Slow4x) { 4.0 } else { 1.0 };
                if self.rng.uniform() < self.shape.fail {
                    (d * self.rng.uniform(), End::Failed)
                } else {
                    (d, End::Succeeded)
                }
            }
        };
        if d >= timeout as f64 {
            return (now + timeout, End::TimedOut);
        }
        (now + d as i64, end)
    }
}

impl Fleet {
    /// Ends worker `w`'s attempt as `end` at `at` (heard by the supervisors unless `lost`).
    fn finish(&mut self, w: usize, at: i64, end: End, heard: bool) {
        let Some(j) = self.jobs[w].take() else { return };
        let (host, unit) = names(w, self.units);
        if heard {
            let a = Attempt {
                class: "c".into(),
                host,
                unit,
                job: format!("j{}", j.id),
                started_ms: j.started,
                run_ms: at - j.started,
                end,
            };
            self.s.ended(&a);
        }
        if end != End::Interrupted {
            self.completions += 1;
        }
        if self.hosts[w / self.units].bad.is_some() && end != End::Succeeded {
            self.lost[w] += 1;
        }
    }

    /// A routine restart: every running attempt interrupted (a third of them unheard, as when a
    /// host dies), the host down for 3-10 minutes; optionally it comes back `bad`.
    fn restart(&mut self, h: usize, now: i64, bad: Option<Bad>) {
        for w in h * self.units..(h + 1) * self.units {
            let heard = self.rng.uniform() > 0.33;
            // Attempts lost to a restart are the maintenance's, not the bad host's.
            let was = self.hosts[h].bad.take();
            self.finish(w, now, End::Interrupted, heard);
            self.hosts[h].bad = was;
        }
        let host = &mut self.hosts[h];
        if host.bad.is_some() {
            host.restarts_bad += 1;
        }
        host.up_at = now + (3.0 + 7.0 * self.rng.uniform()) as i64 * MIN;
        host.next_restart = now + self.rng.exponential(self.restart_every as f64) as i64;
        if bad.is_some() {
            host.bad = bad;
        }
    }

    /// One simulated minute: restarts, ends, starts.
    fn step(&mut self, now: i64) {
        for h in 0..self.hosts.len() {
            if now >= self.hosts[h].next_restart {
                self.restart(h, now, None);
            }
        }
        for w in 0..self.jobs.len() {
            if let Some(j) = &self.jobs[w] {
                if j.ends <= now {
                    let (at, end) = (j.ends, j.end);
                    self.finish(w, at, end, true);
                }
            }
            if self.jobs[w].is_none() && self.gates[w] == Gate::Open && now >= self.hosts[w / self.units].up_at {
                let (ends, end) = self.draw(w, now);
                let id = self.next_id;
                self.next_id += 1;
                let (host, unit) = names(w, self.units);
                self.s.started(&Start { class: "c".into(), host, unit, job: format!("j{id}"), at_ms: now });
                self.jobs[w] = Some(Job { id, started: now, ends, end });
            }
        }
    }

    fn workers_of(&self, subject: &drover::quarantine::Subject, units: &[String]) -> Vec<usize> {
        let host = match subject {
            drover::quarantine::Subject::Host(h) => h.as_str(),
            drover::quarantine::Subject::Worker(w) => w.split_once('@').map_or("", |(_, h)| h),
        };
        let h: usize = host.trim_start_matches('h').parse().unwrap_or(0);
        units.iter().map(|u| h * self.units + u.trim_start_matches('u').parse::<usize>().unwrap_or(0)).collect()
    }

    /// Applies what the policy decided; returns (host, was it a quarantine) per unit taken out.
    fn apply(&mut self, actions: &[Action], now: i64) -> Vec<(usize, bool)> {
        let mut taken = Vec::new();
        for a in actions {
            match a {
                Action::Cordon { subject, units, .. } => {
                    for w in self.workers_of(subject, units) {
                        self.gates[w] = Gate::Cordoned;
                        taken.push((w / self.units, false));
                    }
                }
                Action::Quarantine { subject, units, .. } => {
                    for w in self.workers_of(subject, units) {
                        self.gates[w] = Gate::Quarantined;
                        self.finish(w, now, End::Interrupted, true);
                        taken.push((w / self.units, true));
                    }
                }
                Action::Lift { subject, units, .. } => {
                    for w in self.workers_of(subject, units) {
                        self.gates[w] = Gate::Open;
                    }
                }
            }
        }
        taken
    }
}

/// What one simulated run measured.
#[derive(Default, Debug)]
struct Measured {
    completions: u64,
    /// From the host turning bad to its first cordon / quarantine, ms.
    cordon_after: Option<i64>,
    quarantine_after: Option<i64>,
    lost_per_unit_max: u32,
    lost_total: u32,
    false_cordons: u32,
    false_quarantines: u32,
    /// Most units and hosts out at once, and the budget's caps.
    most_out: (usize, usize),
    caps: (usize, usize),
    many_look_bad: bool,
    /// Bad hosts (a wave) with at least one unit out.
    bad_hosts_out: usize,
    /// The evidence of each false cordon or quarantine.
    notes: Vec<String>,
    /// A routine restart of the bad host came before its cordon (interrupting the evidence).
    restarted_first: bool,
    /// From the bad host's last return from a restart to its cordon, ms.
    cordon_after_return: Option<i64>,
}

fn verbose() -> bool {
    std::env::var_os("DROVER_BENCH_VERBOSE").is_some()
}

const EVALUATE_EVERY: i64 = MIN;
/// A falsely quarantined unit passes its probe after this hold and is let back.
const HOLD: i64 = 10 * MIN;

/// Runs until `until(fleet, now)`, evaluating every two minutes and applying what comes back.
/// Hosts in `bad_from.1` turn bad at `bad_from.0`.
fn simulate(f: &mut Fleet, bad: (i64, &[(usize, Bad)]), until: &dyn Fn(&Fleet, i64, &Measured) -> bool) -> Measured {
    let placements = f.placements();
    let (hosts, total) = (f.hosts.len(), f.jobs.len());
    let share = f.s.policy().max_quarantined;
    let cap = |n: usize| ((share * n as f64).floor() as usize).max(1);
    let mut m = Measured { caps: (cap(total), cap(hosts)), ..Default::default() };
    let mut releases: Vec<(i64, drover::quarantine::Subject, Vec<usize>)> = Vec::new();
    let (mut now, mut back) = (0, bad.0);
    while !until(f, now, &m) {
        if now == bad.0 {
            for &(h, how) in bad.1 {
                f.restart(h, now, Some(how));
                // It turns bad when it comes back from its restart.
                back = back.max(f.hosts[h].up_at);
            }
        }
        f.step(now);
        if now % EVALUATE_EVERY == 0 {
            let d = f.s.evaluate(now, &placements);
            m.many_look_bad |= d.alerts.iter().any(|a| a.kind == AlertKind::ManyLookBad);
            for a in &d.does {
                if let Action::Cordon { subject, units, evidence, .. }
                | Action::Quarantine { subject, units, evidence, .. } = a
                {
                    if f.hosts[f.workers_of(subject, units)[0] / f.units].bad.is_none() {
                        m.notes.push(format!(
                            "false {}: {evidence}",
                            if matches!(a, Action::Cordon { .. }) { "cordon" } else { "quarantine" }
                        ));
                    }
                }
            }
            for (h, quarantine) in f.apply(&d.does, now) {
                let since = now - back;
                if f.hosts[h].bad.is_some() {
                    if m.cordon_after.is_none() {
                        m.restarted_first = f.hosts[h].restarts_bad > 0;
                        m.cordon_after_return = Some(now - f.hosts[h].up_at);
                    }
                    m.cordon_after.get_or_insert(since);
                    if quarantine {
                        m.quarantine_after.get_or_insert(since);
                    }
                } else if quarantine {
                    m.false_quarantines += 1;
                } else {
                    m.false_cordons += 1;
                }
            }
            for a in d.does.iter() {
                if let Action::Quarantine { subject, units, .. } = a {
                    if f.hosts[f.workers_of(subject, units)[0] / f.units].bad.is_none() {
                        releases.push((now + HOLD, subject.clone(), f.workers_of(subject, units)));
                    }
                }
            }
            releases.retain(|(at, subject, workers)| {
                if *at > now {
                    return true;
                }
                f.s.release("c", subject);
                workers.iter().for_each(|&w| f.gates[w] = Gate::Open);
                false
            });
            let out: Vec<usize> = (0..total).filter(|&w| f.gates[w] != Gate::Open).collect();
            let hosts_out =
                (0..hosts).filter(|h| out.iter().filter(|&&w| w / f.units == *h).count() == f.units).count();
            m.most_out = (m.most_out.0.max(out.len()), m.most_out.1.max(hosts_out));
            let bad_out = (0..hosts).filter(|&h| f.hosts[h].bad.is_some() && out.iter().any(|&w| w / f.units == h));
            m.bad_hosts_out = m.bad_hosts_out.max(bad_out.count());
        }
        now += MIN;
    }
    m.completions = f.completions;
    m.lost_per_unit_max = f.lost.iter().copied().max().unwrap_or(0);
    m.lost_total = f.lost.iter().sum();
    m
}

/// The class's p99 run time (a healthy host, stragglers and timeouts included), ms.
fn p99(shape: Shape, seed: u64) -> f64 {
    let mut f = Fleet::new(seed, shape, 1, 1, SuspectPolicy::default());
    let cap = (shape.timeout_min * MIN) as f64;
    let mut v: Vec<f64> = (0..200_000).map(|_| f.run_time().min(cap)).collect();
    v.sort_by(f64::total_cmp);
    v[v.len() * 99 / 100]
}

/// When a run's host turns bad: after about 3,000 completions (the fleet's reference is full),
/// at a minute that depends on the seed.
fn bad_at(shape: Shape, workers: usize, seed: u64) -> i64 {
    let warm = (3000.0 * shape.median_min * 1.15 / workers as f64) as i64;
    (warm + (seed * 37 % 60) as i64) * MIN
}

fn one_bad_host(seed: u64, shape: Shape, (hosts, units): (usize, usize), how: Bad) -> Measured {
    let mut f = Fleet::new(seed, shape, hosts, units, SuspectPolicy::default());
    let at = bad_at(shape, hosts * units, seed);
    let until = move |_: &Fleet, now: i64, m: &Measured| {
        now >= at + 16 * HOUR || m.quarantine_after.is_some_and(|q| now > at + q + MIN)
    };
    simulate(&mut f, (at, &[(0, how)]), &until)
}

fn healthy(seed: u64, shape: Shape, (hosts, units): (usize, usize), completions: u64) -> Measured {
    let mut f = Fleet::new(seed, shape, hosts, units, SuspectPolicy::default());
    simulate(&mut f, (-1, &[]), &|f: &Fleet, _, _| f.completions >= completions)
}

/// Half the hosts come back bad at once, each in one of the three ways.
fn bad_wave(seed: u64, shape: Shape, (hosts, units): (usize, usize)) -> Measured {
    let mut f = Fleet::new(seed, shape, hosts, units, SuspectPolicy::default());
    let at = bad_at(shape, hosts * units, seed);
    let ways = [Bad::Hang, Bad::FailFast, Bad::Slow4x];
    let wave: Vec<(usize, Bad)> = (0..hosts / 2).map(|h| (h * 2, ways[h % 3])).collect();
    simulate(&mut f, (at, &wave), &move |_: &Fleet, now: i64, _| now >= at + 12 * HOUR)
}

fn median_max(v: &mut [f64]) -> String {
    if v.is_empty() {
        return "-".into();
    }
    v.sort_by(f64::total_cmp);
    format!("{:.2} / {:.2}", v[v.len() / 2], v[v.len() - 1])
}

fn shape_name(s: Shape) -> String {
    format!(
        "{:.0} min, sigma {:.2}, {:.0}% stragglers, {:.0}% failures, timeout {} min",
        s.median_min,
        s.sigma,
        100.0 * s.stragglers,
        100.0 * s.fail,
        s.timeout_min
    )
}

/// One table row per (shape, fleet, way the host breaks): times in multiples of the class's p99.
fn detection_rows(set: &str, seeds: std::ops::Range<u64>, shapes: &[Shape], fleets: &[(usize, usize)]) {
    for &shape in shapes {
        let p = p99(shape, 7);
        for &fleet in fleets {
            // `DROVER_BENCH_WAYS=Hang,Slow4x`: only these ways of breaking.
            let ways = std::env::var("DROVER_BENCH_WAYS").unwrap_or_default();
            for how in [Bad::Hang, Bad::FailFast, Bad::Slow4x] {
                if !ways.is_empty() && !ways.split(',').any(|w| w == format!("{how:?}")) {
                    continue;
                }
                let (mut cordon, mut quarantine, mut lost, mut caught, mut falses) = (vec![], vec![], 0, 0, (0, 0));
                let (mut restarted, mut since_return) = (0, vec![]);
                for seed in seeds.clone() {
                    let m = one_bad_host(seed, shape, fleet, how);
                    cordon.extend(m.cordon_after.map(|t| t as f64 / p));
                    quarantine.extend(m.quarantine_after.map(|t| t as f64 / p));
                    caught += m.cordon_after.is_some() as u32;
                    restarted += m.restarted_first as u32;
                    since_return.extend(m.cordon_after_return.map(|t| t as f64 / p));
                    lost = lost.max(m.lost_per_unit_max);
                    falses = (falses.0 + m.false_cordons, falses.1 + m.false_quarantines);
                    if verbose() {
                        eprintln!(
                            "{how:?} seed {seed}: cordon {:?} quarantine {:?} (p99 {:.0} min) lost {:?}",
                            m.cordon_after.map(|t| t / MIN),
                            m.quarantine_after.map(|t| t / MIN),
                            p / MIN as f64,
                            m.lost_per_unit_max
                        );
                        m.notes.iter().for_each(|n| eprintln!("  {n}"));
                    }
                }
                println!(
                    "| {set} | {} | {}x{} | {how:?} | {caught}/{} | {} | {restarted} | {} | {} | {lost} | {} / {} |",
                    shape_name(shape),
                    fleet.0,
                    fleet.1,
                    seeds.end - seeds.start,
                    median_max(&mut cordon),
                    median_max(&mut since_return),
                    median_max(&mut quarantine),
                    falses.0,
                    falses.1
                );
            }
        }
    }
}

fn false_rows(set: &str, seeds: std::ops::Range<u64>, shapes: &[Shape], fleets: &[(usize, usize)], each: u64) {
    for &shape in shapes {
        for &fleet in fleets {
            let (mut n, mut c, mut q) = (0, 0, 0);
            for seed in seeds.clone() {
                let m = healthy(seed, shape, fleet, each);
                (n, c, q) = (n + m.completions, c + m.false_cordons, q + m.false_quarantines);
                if verbose() {
                    m.notes.iter().for_each(|n| eprintln!("  seed {seed}: {n}"));
                }
            }
            let per = |x: u32| 100_000.0 * x as f64 / n as f64;
            println!(
                "| {set} | {} | {}x{} | {n} | {c} ({:.2}) | {q} ({:.2}) |",
                shape_name(shape),
                fleet.0,
                fleet.1,
                per(c),
                per(q)
            );
        }
    }
}

fn running_evidence() {
    let tune = [Shape { median_min: 30.0, sigma: 0.3, stragglers: 0.03, fail: 0.01, timeout_min: 200 }];
    let report = [
        Shape { median_min: 20.0, sigma: 0.15, stragglers: 0.02, fail: 0.01, timeout_min: 200 },
        Shape { median_min: 40.0, sigma: 0.45, stragglers: 0.05, fail: 0.02, timeout_min: 200 },
        Shape { median_min: 25.0, sigma: 0.45, stragglers: 0.05, fail: 0.01, timeout_min: 200 },
        Shape { median_min: 35.0, sigma: 0.15, stragglers: 0.02, fail: 0.03, timeout_min: 200 },
    ];
    // Shapes first run for the fourth pass's report (never looked at while tuning it), each on a
    // fleet of its own: a longer class with a 4-hour timeout, a short one whose timeout is 4x its
    // median (so its p99 is near the timeout).
    let fresh = [
        (Shape { median_min: 45.0, sigma: 0.35, stragglers: 0.04, fail: 0.02, timeout_min: 240 }, (10, 3)),
        (Shape { median_min: 15.0, sigma: 0.25, stragglers: 0.01, fail: 0.01, timeout_min: 60 }, (8, 4)),
    ];
    let p = SuspectPolicy::default();
    println!(
        "\nrunning evidence (drover::suspects, default policy: window {}, reference {}, tail quantile {}, cordon alpha {:e}, alpha {:e}, slow factor {}, budget {:.0}%)\n",
        p.window, p.reference, p.tail_quantile, p.cordon_alpha, p.alpha, p.slow_factor, 100.0 * p.max_quarantined
    );
    println!("| set | workload | hosts x units | bad host | caught | cordon after (x p99, median / max) | runs with a routine restart of the bad host before its cordon | cordon after its last return from a restart (x p99) | quarantine after (x p99, median / max) | lost attempts per unit (max) | false cordons / quarantines |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let only = std::env::var("DROVER_BENCH_ONLY").unwrap_or_default();
    let report: &[Shape] = if only.contains("tune") { &[] } else { &report };
    let fresh: &[(Shape, (usize, usize))] = if only.contains("tune") { &[] } else { &fresh };
    // Report seeds of the fourth pass (the third's were 1201-1206, 2201, 3201-3203).
    // `DROVER_BENCH_REPORT_SEEDS=k`: the report seeds 1k01-1k06 (detection), 2k01 (healthy
    // fleets), 3k01-3k03 (bad waves); default 3, the fourth pass's. A k not run before gives
    // seeds never looked at.
    let pass: u64 = std::env::var("DROVER_BENCH_REPORT_SEEDS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    let (d0, h0, w0) = (1001 + 100 * pass, 2001 + 100 * pass, 3001 + 100 * pass);
    let (detect, mut healthy_seeds, waves) = (d0..d0 + 6, h0..h0 + 1, w0..w0 + 3);
    // More healthy-fleet seeds (`first-last`), for a tighter bound on the false-alarm rates.
    let more = std::env::var("DROVER_BENCH_HEALTHY_SEEDS").ok().and_then(|v| {
        let (a, b) = v.split_once('-')?;
        Some(a.parse::<u64>().ok()?..b.parse::<u64>().ok()? + 1)
    });
    if let Some(seeds) = more.clone() {
        healthy_seeds = seeds;
    }
    if !only.contains("false") {
        detection_rows("tune", 1..11, &tune, &[(8, 3)]);
        detection_rows("report", detect.clone(), report, &[(12, 4), (6, 3)]);
        for &(shape, fleet) in fresh {
            detection_rows("report, new shape", detect.clone(), &[shape], &[fleet]);
        }
    }
    println!("\n| set | workload | hosts x units | completions | false cordons (per 100,000) | false quarantines (per 100,000) |");
    println!("|---|---|---|---|---|---|");
    if more.is_none() {
        false_rows("tune", 1..3, &tune, &[(8, 3)], 100_000);
    }
    false_rows("report", healthy_seeds.clone(), report, &[(12, 4), (6, 3)], 100_000);
    for &(shape, fleet) in fresh {
        false_rows("report, new shape", healthy_seeds.clone(), &[shape], &[fleet], 100_000);
    }
    println!("\n| set | workload | hosts x units | runs | bad hosts | most out at once (units / hosts) | budget (units / hosts) | bad hosts taken out | 'many look bad' raised |");
    println!("|---|---|---|---|---|---|---|---|---|");
    let fresh_shapes: Vec<Shape> = fresh.iter().map(|f| f.0).collect();
    for (set, seeds, shapes) in
        [("tune", 1..6, &tune[..]), ("report", waves.clone(), report), ("report, new shape", waves, &fresh_shapes[..])]
    {
        for &shape in shapes {
            let fleet = (10, 3);
            let runs: Vec<Measured> = seeds.clone().map(|s| bad_wave(s, shape, fleet)).collect();
            let most = runs.iter().fold((0, 0), |a, m| (a.0.max(m.most_out.0), a.1.max(m.most_out.1)));
            let taken: Vec<String> = runs.iter().map(|m| m.bad_hosts_out.to_string()).collect();
            let raised = runs.iter().filter(|m| m.many_look_bad).count();
            println!(
                "| {set} | {} | {}x{} | {} | {} | {} / {} | {} / {} | {} | {raised} of {} |",
                shape_name(shape),
                fleet.0,
                fleet.1,
                runs.len(),
                fleet.0 / 2,
                most.0,
                most.1,
                runs[0].caps.0,
                runs[0].caps.1,
                taken.join(", "),
                runs.len()
            );
        }
    }
}
