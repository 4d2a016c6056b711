//! Latency watch: job events in, alert conditions out. Per class (fleet-wide) and per class on
//! this host, a drift detector learns the run time's baseline ([`crate::drift`]); running jobs
//! are tracked so that a job running far past its class's usual high percentile is evidence
//! before it completes; deadlines are projected (SLA at risk); a class with a backlog and no
//! completion for far longer than its usual gap is stalled. Pure: time comes in as arguments,
//! backlogs are read by the caller.

use crate::alerts::{AlertKey, Condition, Severity};
use crate::drift::{Detector, DetectorConfig, DetectorState};
use crate::duration;
use crate::events::{EventKind, JobEvent};
use crate::progress;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct WatchConfig {
    pub detector: DetectorConfig,
    /// A running job whose `running_evidence` reaches this is reported.
    pub running_evidence: f64,
    /// Stalled: a backlog and no completion for this many usual gaps...
    pub stall_gaps: f64,
    /// ...and at least this long.
    pub stall_min: Duration,
}

#[derive(Clone, Debug)]
struct Running {
    unit: String,
    host: String,
    started_ms: i64,
    deadline_ms: Option<i64>,
    /// The fraction done its handler last reported (`progress` events).
    progress: Option<f64>,
}

/// What is watched per tenant of a class.
#[derive(Clone, Debug)]
struct TenantWatch {
    detector: Detector,
    /// Submitted minus finished (succeeded or dead-lettered): an estimate, since a restarted
    /// supervisor does not see what was submitted before it.
    backlog: i64,
    last_completion_ms: Option<i64>,
    backlog_since_ms: Option<i64>,
}

/// Tenants tracked per class; later ones share the `(other)` entry, keeping label cardinality
/// bounded.
pub const MAX_TENANTS: usize = 32;
const OTHER_TENANT: &str = "(other)";

#[derive(Clone, Debug)]
struct ClassWatch {
    fleet: Detector,
    /// The fleet detector's score after its last completion (the drift chart's line).
    fleet_score: f64,
    here: Detector,
    tenants: BTreeMap<String, TenantWatch>,
    running: HashMap<String, Running>,
    last_completion_ms: Option<i64>,
    gaps_ms: VecDeque<i64>,
    backlog_since_ms: Option<i64>,
}

const MAX_RUNNING: usize = 10_000;
const GAPS: usize = 31;

/// Baselines to persist across restarts.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Baselines {
    pub fleet: BTreeMap<String, DetectorState>,
    pub here: BTreeMap<String, DetectorState>,
}

pub struct LatencyWatch {
    cfg: WatchConfig,
    host: String,
    classes: BTreeMap<String, ClassWatch>,
}

/// Alert names, part of the interface (labels of `drover_alerts_firing`).
pub const DRIFT: &str = "LatencyDrift";
pub const RUNNING_LONG: &str = "JobRunningLong";
pub const SLA_AT_RISK: &str = "SlaAtRisk";
pub const STALLED: &str = "ClassStalled";

fn parse_ms(s: &Option<String>) -> Option<i64> {
    s.as_deref().and_then(|t| humantime::parse_rfc3339_weak(t).ok()).map(crate::job::to_ms)
}

fn secs(s: f64) -> String {
    duration::format(Duration::from_secs_f64(s.max(0.0)))
}

impl LatencyWatch {
    pub fn new(cfg: WatchConfig, host: &str, classes: impl Iterator<Item = String>, saved: Option<Baselines>) -> Self {
        let saved = saved.unwrap_or_default();
        let detector = |state: Option<&DetectorState>| match state {
            Some(s) => Detector::restore(cfg.detector.clone(), s.clone()),
            None => Detector::new(cfg.detector.clone()),
        };
        let classes = classes
            .map(|c| {
                let w = ClassWatch {
                    fleet: detector(saved.fleet.get(&c)),
                    fleet_score: 0.0,
                    here: detector(saved.here.get(&c)),
                    running: HashMap::new(),
                    tenants: BTreeMap::new(),
                    last_completion_ms: None,
                    gaps_ms: VecDeque::new(),
                    backlog_since_ms: None,
                };
                (c, w)
            })
            .collect();
        LatencyWatch { cfg, host: host.to_string(), classes }
    }

    pub fn snapshot(&self) -> Baselines {
        Baselines {
            fleet: self.classes.iter().map(|(c, w)| (c.clone(), w.fleet.snapshot())).collect(),
            here: self.classes.iter().map(|(c, w)| (c.clone(), w.here.snapshot())).collect(),
        }
    }

    /// The usual run time of a class now (seconds): the worse of its baseline median and its
    /// recent median.
    pub fn expected_s(&self, class: &str, now_s: f64) -> Option<f64> {
        expected_run_s(&self.classes.get(class)?.fleet, now_s)
    }

    /// A class's fleet-wide drift score (evidence of slowdown as a fraction of the alarm
    /// threshold, 0..1, as of its last completion) and its baseline now (`None` while learning).
    pub fn drift(&self, class: &str, now_s: f64) -> Option<(f64, Option<crate::drift::Baseline>)> {
        let w = self.classes.get(class)?;
        Some((w.fleet_score, w.fleet.baseline(now_s)))
    }

    pub fn classes(&self) -> impl Iterator<Item = &String> {
        self.classes.keys()
    }

    /// Starts a new drift baseline for a class at `now_ms`, e.g. after a deploy that changed
    /// its run time on purpose (see [`Detector::rebaseline`]). Fleet-wide (`host` is `None`):
    /// the class's fleet detector, its detector on this host and its tenants'; for one host:
    /// only the detector on that host, so a supervisor on another host changes nothing.
    /// Returns how many detectors started over, or `None` for a class not watched.
    pub fn rebaseline(&mut self, class: &str, host: Option<&str>, now_ms: i64) -> Option<usize> {
        let w = self.classes.get_mut(class)?;
        let now_s = now_ms as f64 / 1000.0;
        match host {
            Some(h) if h != self.host => Some(0),
            Some(_) => {
                w.here.rebaseline(now_s);
                Some(1)
            }
            None => {
                w.fleet.rebaseline(now_s);
                w.here.rebaseline(now_s);
                w.tenants.values_mut().for_each(|t| t.detector.rebaseline(now_s));
                Some(2 + w.tenants.len())
            }
        }
    }

    /// Feeds one job event.
    pub fn observe(&mut self, e: &JobEvent) {
        let host = self.host.clone();
        let detector_cfg = self.cfg.detector.clone();
        let Some(w) = self.classes.get_mut(&e.class) else { return };
        if let Some(tenant) = e.tenant.as_deref().filter(|t| !t.is_empty()) {
            let key =
                if w.tenants.contains_key(tenant) || w.tenants.len() < MAX_TENANTS { tenant } else { OTHER_TENANT };
            let t = w.tenants.entry(key.to_string()).or_insert_with(|| TenantWatch {
                detector: Detector::new(detector_cfg.clone()),
                backlog: 0,
                last_completion_ms: None,
                backlog_since_ms: None,
            });
            let at_ms = parse_ms(&e.finished_at).or_else(|| parse_ms(&Some(e.at.clone()))).unwrap_or(0);
            match e.event {
                EventKind::Submitted => {
                    if t.backlog <= 0 {
                        t.backlog_since_ms = Some(at_ms);
                    }
                    t.backlog += e.count.unwrap_or(1) as i64;
                }
                EventKind::Succeeded => {
                    t.backlog = (t.backlog - 1).max(0);
                    t.last_completion_ms = Some(at_ms);
                    if let Some(d) = e.duration_s {
                        t.detector.observe(at_ms as f64 / 1000.0, d);
                    }
                }
                EventKind::DeadLettered => t.backlog = (t.backlog - 1).max(0),
                _ => {}
            }
        }
        let Some(id) = e.job_id.clone() else { return };
        match e.event {
            EventKind::Started if w.running.len() < MAX_RUNNING => {
                let started_ms = parse_ms(&e.started_at).or_else(|| parse_ms(&Some(e.at.clone()))).unwrap_or(0);
                let deadline_ms = parse_ms(&e.deadline);
                w.running.insert(
                    id,
                    Running { unit: e.unit.clone(), host: e.host.clone(), started_ms, deadline_ms, progress: None },
                );
            }
            EventKind::Progress => {
                if let Some(r) = w.running.get_mut(&id).filter(|r| r.unit == e.unit && r.host == e.host) {
                    r.progress = e.progress.or(r.progress);
                }
            }
            kind if kind.ends_attempt() => {
                w.running.remove(&id);
                // Completions that say how long the work takes: successes, and timeouts (a
                // job killed at its timeout took at least that long: the incident's signature).
                let counts = e.event == EventKind::Succeeded
                    || (e.event == EventKind::Failed && e.outcome.as_deref() == Some("timeout"));
                let (Some(d), true) = (e.duration_s, counts) else { return };
                let finished_ms = parse_ms(&e.finished_at).unwrap_or(0);
                let t = finished_ms as f64 / 1000.0;
                w.fleet_score = w.fleet.observe(t, d).score;
                if e.host == host {
                    w.here.observe(t, d);
                }
                if e.event == EventKind::Succeeded {
                    if let Some(last) = w.last_completion_ms {
                        w.gaps_ms.push_back((finished_ms - last).max(0));
                        if w.gaps_ms.len() > GAPS {
                            w.gaps_ms.pop_front();
                        }
                    }
                    w.last_completion_ms = Some(w.last_completion_ms.map_or(finished_ms, |l| l.max(finished_ms)));
                }
            }
            _ => {} // submissions, misconfigured units
        }
    }

    /// Evaluates every condition now. `backlog` is the number of ready jobs per class (absent:
    /// unknown); `did` says what Drover already did per class (restarts, failing or
    /// misconfigured units), for the alert texts.
    pub fn evaluate(
        &mut self,
        now_ms: i64,
        backlog: &BTreeMap<String, u64>,
        did: &BTreeMap<String, String>,
    ) -> Vec<Condition> {
        let mut out = Vec::new();
        let now = Now { ms: now_ms, s: now_ms as f64 / 1000.0 };
        for (class, w) in self.classes.iter_mut() {
            let notes = Notes { did: did.get(class).map_or("nothing yet", String::as_str) };
            for (scope_host, det) in [("", &w.fleet), (self.host.as_str(), &w.here)] {
                out.push(drift_condition(class, scope_host, det, now, &notes));
            }
            out.push(running_long_condition(class, w, now, self.cfg.running_evidence, &notes));
            out.push(sla_at_risk_condition(class, w, now, &notes));
            let queued = backlog.get(class).copied();
            let stall_limit = w.note_backlog_and_stall_limit(queued, now_ms, &self.cfg);
            out.push(class_stall_condition(class, w, queued, stall_limit, now_ms, &notes));
            for (tenant, t) in &w.tenants {
                out.extend(tenant_conditions(class, tenant, t, stall_limit, now, &notes));
            }
        }
        out
    }
}

/// The time of an evaluation, in both units it is used in.
#[derive(Clone, Copy)]
struct Now {
    ms: i64,
    s: f64,
}

/// What every alert of a class says besides its summary.
struct Notes<'a> {
    /// What Drover already did for the class.
    did: &'a str,
}

impl Notes<'_> {
    fn annotations(&self, note: &str) -> BTreeMap<String, String> {
        let mut a = BTreeMap::new();
        a.insert("drover_did".to_string(), self.did.to_string());
        a.insert("note".to_string(), note.to_string());
        a
    }
}

impl Running {
    fn elapsed_s(&self, now_ms: i64) -> f64 {
        (now_ms - self.started_ms).max(0) as f64 / 1000.0
    }

    /// How long the job looks like running in all: its run time so far, or, once its progress
    /// is far enough along to trust, its whole run time at its pace so far.
    fn projected_s(&self, now_ms: i64) -> f64 {
        let elapsed = self.elapsed_s(now_ms);
        let trusted = self.progress.filter(|p| *p >= RUNNING_LONG_MIN_FRACTION);
        progress::projected_total_s(elapsed, trusted).map_or(elapsed, |t| t.max(elapsed))
    }
}

/// A job's pace is projected for the running-long alert only once it is this far along.
const RUNNING_LONG_MIN_FRACTION: f64 = 0.25;

impl ClassWatch {
    /// Records whether the class has a backlog now (`queued`: ready jobs, `None` when unknown)
    /// and returns how long the class may go without a completion before it counts as stalled:
    /// `stall_gaps` usual gaps (the median of the recent ones), at least `stall_min`.
    fn note_backlog_and_stall_limit(
        &mut self,
        queued: Option<u64>,
        now_ms: i64,
        cfg: &WatchConfig,
    ) -> (i64, Option<i64>) {
        match queued {
            Some(n) if n > 0 => {
                self.backlog_since_ms.get_or_insert(now_ms);
            }
            Some(_) => self.backlog_since_ms = None,
            None => {}
        }
        let mut gaps: Vec<i64> = self.gaps_ms.iter().copied().collect();
        gaps.sort_unstable();
        let usual_gap_ms = gaps.get(gaps.len() / 2).copied();
        let limit_ms =
            usual_gap_ms.map(|g| (g as f64 * cfg.stall_gaps) as i64).unwrap_or(0).max(cfg.stall_min.as_millis() as i64);
        (limit_ms, usual_gap_ms)
    }
}

/// The usual run time now (seconds): the worse of the baseline median and the recent median.
fn expected_run_s(det: &Detector, now_s: f64) -> Option<f64> {
    match (det.baseline(now_s).map(|b| b.median_s), det.recent_median_s()) {
        (Some(b), Some(r)) => Some(b.max(r)),
        (b, r) => b.or(r),
    }
}

/// "recent median X against a baseline median of Y (Zx)", once both are known.
fn drift_numbers(det: &Detector, now_s: f64) -> Option<String> {
    let (b, r) = (det.baseline(now_s)?, det.recent_median_s()?);
    let (beyond, of) = det.recent_beyond(b.p99_s);
    // A drift carried by the tail (timeouts, hangs on one host) moves the median little: say
    // how much of the tail there is.
    let tail = if beyond > 0 {
        format!("; {beyond} of the last {of} beyond the baseline p99 {}", secs(b.p99_s))
    } else {
        String::new()
    };
    Some(format!(
        "recent median {} against a baseline median of {} ({:.1}x){tail}",
        secs(r),
        secs(b.median_s),
        r / b.median_s.max(1e-9)
    ))
}

/// "for X" since `since_ms`, or for nothing when it is unknown.
fn quiet_for(since_ms: Option<i64>, now_ms: i64) -> String {
    secs(since_ms.map_or(0, |q| now_ms - q) as f64 / 1000.0)
}

/// Drift of a class fleet-wide (`scope_host` empty) or on one host.
fn drift_condition(class: &str, scope_host: &str, det: &Detector, now: Now, notes: &Notes) -> Condition {
    let key = AlertKey::new(DRIFT, &[("class", class), ("host", scope_host)]);
    let where_ = if scope_host.is_empty() { "fleet-wide".to_string() } else { format!("on {scope_host}") };
    let (summary, mut annotations) = match drift_numbers(det, now.s) {
        Some(numbers) => {
            let mut note = "baseline learnt from this class's own history; the SLA may still be met".to_string();
            if !det.knows_its_week() {
                note += "; the baseline has not seen a whole week yet, so a slower weekend cannot be told from drift";
            }
            (format!("run time of class {class} drifted {where_}: {numbers}"), notes.annotations(&note))
        }
        None => (format!("run time of class {class} {where_}: learning its baseline"), notes.annotations("")),
    };
    if let Some(b) = det.baseline(now.s) {
        annotations.insert("baseline_median".into(), secs(b.median_s));
        annotations.insert("baseline_p99".into(), secs(b.p99_s));
    }
    Condition { key, active: det.is_alerting(), severity: Severity::Warning, summary, annotations }
}

/// Running jobs far past the class's usual high percentile, the longest named.
fn running_long_condition(class: &str, w: &ClassWatch, now: Now, threshold: f64, notes: &Notes) -> Condition {
    let baseline = w.fleet.baseline(now.s);
    let mut long: Vec<(&String, &Running, f64)> = w
        .running
        .iter()
        .map(|(id, r)| (id, r, r.elapsed_s(now.ms)))
        .filter(|(_, r, _)| w.fleet.running_evidence(r.projected_s(now.ms)) >= threshold)
        .collect();
    long.sort_by(|a, b| b.2.total_cmp(&a.2));
    let summary = match (long.first(), &baseline) {
        (Some((id, r, el)), Some(b)) => format!(
            "{} job(s) of class {class} running unusually long: {id} on {} ({}) for {}{}, baseline p99 {}",
            long.len(),
            r.unit,
            r.host,
            secs(*el),
            match r.progress {
                Some(p) if r.projected_s(now.ms) > *el =>
                    format!(" at {} (about {} at its pace)", progress::percent(p), secs(r.projected_s(now.ms))),
                _ => String::new(),
            },
            secs(b.p99_s)
        ),
        _ => format!("no job of class {class} is running unusually long"),
    };
    Condition {
        key: AlertKey::new(RUNNING_LONG, &[("class", class)]),
        active: !long.is_empty(),
        severity: Severity::Warning,
        summary,
        annotations: notes.annotations("a slow job is evidence of drift before it completes"),
    }
}

/// Running jobs projected past their deadline, the latest named.
fn sla_at_risk_condition(class: &str, w: &ClassWatch, now: Now, notes: &Notes) -> Condition {
    let at_risk: Vec<(&String, &Running, i64)> = match expected_run_s(&w.fleet, now.s) {
        Some(exp) => w
            .running
            .iter()
            .filter_map(|(id, r)| {
                let deadline = r.deadline_ms?;
                // Its own pace when it reports progress (a job at 90% after 30 minutes has
                // about 3 to go); else expected to take at least the class's usual time, and a
                // job already past that is expected to go on for a while yet.
                let elapsed = r.elapsed_s(now.ms);
                let remaining =
                    progress::remaining_s(elapsed, r.progress).unwrap_or_else(|| (exp - elapsed).max(exp * 0.25));
                let projected = now.ms + (remaining * 1000.0) as i64;
                (projected > deadline).then_some((id, r, projected - deadline))
            })
            .collect(),
        None => Vec::new(),
    };
    let summary = match at_risk.iter().max_by_key(|x| x.2) {
        Some((id, r, late)) => format!(
            "{} job(s) of class {class} projected to miss their deadline: {id} on {} by about {}",
            at_risk.len(),
            r.unit,
            secs(*late as f64 / 1000.0)
        ),
        None => format!("no job of class {class} is projected to miss its deadline"),
    };
    Condition {
        key: AlertKey::new(SLA_AT_RISK, &[("class", class)]),
        active: !at_risk.is_empty(),
        severity: Severity::Critical,
        summary,
        annotations: notes
            .annotations("projection: the class's expected run time (the worse of baseline and recent median)"),
    }
}

/// Stalled: a backlog and no completion for far longer than the usual gap.
fn class_stall_condition(
    class: &str,
    w: &ClassWatch,
    queued: Option<u64>,
    (limit_ms, usual_gap_ms): (i64, Option<i64>),
    now_ms: i64,
    notes: &Notes,
) -> Condition {
    // Quiet since the last completion; a class that never completed anything, since its
    // backlog was first seen.
    let quiet_since = w.last_completion_ms.or(w.backlog_since_ms);
    let stalled = queued.unwrap_or(0) > 0 && quiet_since.is_some_and(|q| now_ms - q > limit_ms);
    let summary = if stalled {
        format!(
            "class {class} is stalled: {} job(s) waiting and no completion for {} (usual gap {})",
            queued.unwrap_or(0),
            quiet_for(quiet_since, now_ms),
            usual_gap_ms.map_or("unknown".to_string(), |g| secs(g as f64 / 1000.0))
        )
    } else {
        format!("class {class} is making progress")
    };
    Condition {
        key: AlertKey::new(STALLED, &[("class", class)]),
        active: stalled,
        severity: Severity::Critical,
        summary,
        annotations: notes.annotations(""),
    }
}

/// Per tenant: its own drift, and a stall of its own (a backlog, no completion of its jobs for
/// far longer than the class's usual gap) while the class may be busy with other tenants.
fn tenant_conditions(
    class: &str,
    tenant: &str,
    t: &TenantWatch,
    (limit_ms, _): (i64, Option<i64>),
    now: Now,
    notes: &Notes,
) -> [Condition; 2] {
    let summary = match drift_numbers(&t.detector, now.s) {
        Some(numbers) => format!("run time of class {class} for tenant {tenant} drifted: {numbers}"),
        None => format!("run time of class {class} for tenant {tenant}: learning its baseline"),
    };
    let drift = Condition {
        key: AlertKey::new(DRIFT, &[("class", class), ("tenant", tenant)]),
        active: t.detector.is_alerting(),
        severity: Severity::Warning,
        summary,
        annotations: notes.annotations(""),
    };
    let quiet_since = t.last_completion_ms.max(t.backlog_since_ms);
    let stalled = t.backlog > 0 && quiet_since.is_some_and(|q| now.ms - q > limit_ms);
    let summary = if stalled {
        format!(
            "tenant {tenant} of class {class} is stalled: about {} job(s) waiting and none of them completed for {}",
            t.backlog,
            quiet_for(quiet_since, now.ms)
        )
    } else {
        format!("tenant {tenant} of class {class} is making progress")
    };
    let stall = Condition {
        key: AlertKey::new(STALLED, &[("class", class), ("tenant", tenant)]),
        active: stalled,
        severity: Severity::Critical,
        summary,
        annotations: notes.annotations("backlog estimated from submissions and completions seen by this supervisor"),
    };
    [drift, stall]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::rfc3339;

    fn cfg() -> WatchConfig {
        WatchConfig {
            detector: DetectorConfig { warmup: 20, ..DetectorConfig::default() },
            running_evidence: 8.0,
            stall_gaps: 10.0,
            stall_min: Duration::from_secs(60),
        }
    }

    fn event(kind: EventKind, id: &str, host: &str, start_ms: i64, dur_s: f64, deadline_ms: i64) -> JobEvent {
        let mut e = JobEvent::new(kind, rfc3339(start_ms), "c", host, "u-1");
        e.job_id = Some(id.into());
        e.started_at = Some(rfc3339(start_ms));
        e.finished_at = Some(rfc3339(start_ms + (dur_s * 1000.0) as i64));
        e.duration_s = Some(dur_s);
        e.deadline = Some(rfc3339(deadline_ms));
        e
    }

    fn active<'a>(c: &'a [Condition], name: &str) -> Vec<&'a Condition> {
        c.iter().filter(|c| c.key.name == name && c.active).collect()
    }

    /// A watch of class `c` that has seen `n` successes on h1 of about `median_s` (±5%), one
    /// every `gap_ms`, and the time after the last.
    fn warmed(n: usize, median_s: f64, gap_ms: i64) -> (LatencyWatch, i64) {
        let mut w = LatencyWatch::new(cfg(), "h1", ["c".to_string()].into_iter(), None);
        let mut t = 1_000_000_000_000i64;
        for i in 0..n {
            let d = median_s * (1.0 + 0.05 * ((i % 7) as f64 - 3.0) / 3.0);
            w.observe(&event(EventKind::Succeeded, &format!("j{i}"), "h1", t, d, t + 86_400_000));
            t += gap_ms;
        }
        (w, t)
    }

    #[test]
    fn a_slow_class_drifts_and_long_running_and_late_jobs_are_seen_before_they_finish() {
        let (mut w, mut t) = warmed(60, 100.0, 200_000);
        let day = 86_400_000;
        let (none, nothing) = (BTreeMap::new(), BTreeMap::new());
        let c = w.evaluate(t, &none, &nothing);
        assert!(active(&c, DRIFT).is_empty(), "stable: no drift");
        // A job that has been running 20x the usual time, with a deadline an hour away.
        w.observe(&event(EventKind::Started, "slow", "h1", t - 2_000_000, 0.0, t + 3_600_000 - 2_000_000));
        let c = w.evaluate(t, &none, &nothing);
        let long = active(&c, RUNNING_LONG);
        assert_eq!(long.len(), 1, "{c:#?}");
        assert!(long[0].summary.contains("slow on u-1"), "{}", long[0].summary);
        assert!(active(&c, SLA_AT_RISK).is_empty(), "an hour left, about 100 s expected");
        // Four times slower from now on: drift fires within a few completions, on this host too.
        for i in 0..6 {
            w.observe(&event(EventKind::Succeeded, &format!("s{i}"), "h1", t, 400.0, t + day));
            t += 500_000;
        }
        let c = w.evaluate(t, &none, &nothing);
        let drift = active(&c, DRIFT);
        assert_eq!(drift.len(), 2, "fleet-wide and on h1: {c:#?}");
        assert!(drift[0].summary.contains("4.0x") || drift[0].summary.contains("x)"), "{}", drift[0].summary);
        assert!(drift[0].annotations.contains_key("baseline_median"));
        assert!(drift[0].annotations["note"].contains("not seen a whole week"), "{:?}", drift[0].annotations);
    }

    #[test]
    fn a_drift_alert_says_whether_its_baseline_has_seen_a_whole_week() {
        // A completion every two hours for nine days, then four times slower.
        let (mut w, mut t) = warmed(108, 100.0, 7_200_000);
        for i in 0..6 {
            w.observe(&event(EventKind::Succeeded, &format!("s{i}"), "h1", t, 400.0, t + 86_400_000));
            t += 7_200_000;
        }
        let (none, nothing) = (BTreeMap::new(), BTreeMap::new());
        let c = w.evaluate(t, &none, &nothing);
        let drift = active(&c, DRIFT);
        assert!(!drift.is_empty(), "{c:#?}");
        assert!(!drift[0].annotations["note"].contains("whole week"), "{:?}", drift[0].annotations);
    }

    #[test]
    fn sla_at_risk_when_the_expected_finish_passes_the_deadline() {
        let mut w = LatencyWatch::new(cfg(), "h1", ["c".to_string()].into_iter(), None);
        let mut t = 1_000_000_000_000i64;
        for i in 0..30 {
            w.observe(&event(EventKind::Succeeded, &format!("j{i}"), "h1", t, 100.0, t + 86_400_000));
            t += 200_000;
        }
        // Started 10 s ago, about 90 s to go, deadline in 30 s.
        w.observe(&event(EventKind::Started, "late", "h1", t - 10_000, 0.0, t + 30_000));
        let (none, nothing) = (BTreeMap::new(), BTreeMap::new());
        let c = w.evaluate(t, &none, &nothing);
        let risk = active(&c, SLA_AT_RISK);
        assert_eq!(risk.len(), 1, "{c:#?}");
        assert!(risk[0].summary.contains("late on u-1"), "{}", risk[0].summary);
        w.observe(&event(EventKind::Succeeded, "late", "h1", t - 10_000, 20.0, t + 30_000));
        assert!(active(&w.evaluate(t, &none, &nothing), SLA_AT_RISK).is_empty(), "finished: no longer at risk");
    }

    #[test]
    fn progress_decides_the_projections_of_running_jobs() {
        // A class whose jobs usually take 30 minutes; one job of each case runs alone.
        let min = 60_000i64;
        // (minutes running, progress reported, minutes to its deadline, at risk, running long)
        let cases: Vec<(i64, Option<f64>, i64, bool, bool)> = vec![
            // 90% after 30 minutes, 10 minutes left: about 3 to go, not at risk.
            (30, Some(0.9), 10, false, false),
            // The same job without progress: expected to need at least a quarter of 30 more.
            (30, None, 5, true, false),
            // 10% after 20 minutes: about 3 hours to go, at risk and running long already.
            (20, Some(0.1), 60, true, false),
            (20, Some(0.3), 30, true, true),
            // Too little progress to go by: the class's usual time decides.
            (1, Some(0.01), 60, false, false),
            // Half done in 10 minutes, on pace: fine.
            (10, Some(0.5), 30, false, false),
        ];
        for (running, p, left, risk, long) in cases {
            let (mut w, t) = warmed(60, 1800.0, 200_000);
            w.observe(&event(EventKind::Started, "x", "h1", t - running * min, 0.0, t + left * min));
            let mut e = event(EventKind::Progress, "x", "h1", t - running * min, 0.0, t + left * min);
            e.progress = p;
            w.observe(&e);
            let c = w.evaluate(t, &BTreeMap::new(), &BTreeMap::new());
            let case = format!("{running} min at {p:?}, {left} min left");
            assert_eq!(!active(&c, SLA_AT_RISK).is_empty(), risk, "SLA at risk, {case}: {c:#?}");
            assert_eq!(!active(&c, RUNNING_LONG).is_empty(), long, "running long, {case}: {c:#?}");
        }
    }

    #[test]
    fn a_backlog_without_completions_for_many_usual_gaps_is_a_stall() {
        let mut w = LatencyWatch::new(cfg(), "h1", ["c".to_string()].into_iter(), None);
        let mut t = 1_000_000_000_000i64;
        for i in 0..10 {
            w.observe(&event(EventKind::Succeeded, &format!("j{i}"), "h1", t, 1.0, t + 86_400_000));
            t += 10_000; // a completion every 10 s
        }
        let last = t - 10_000 + 1000;
        let did = BTreeMap::from([("c".to_string(), "restarted u-1 twice".to_string())]);
        let backlog = BTreeMap::from([("c".to_string(), 5u64)]);
        let cases = [(last + 50_000, false), (last + 90_000, false), (last + 101_000, true)];
        for (now, want) in cases {
            let c = w.evaluate(now, &backlog, &did);
            let stalled = active(&c, STALLED);
            assert_eq!(!stalled.is_empty(), want, "at +{} s", (now - last) / 1000);
            if want {
                assert!(stalled[0].summary.contains("5 job(s) waiting"), "{}", stalled[0].summary);
                assert_eq!(stalled[0].annotations["drover_did"], "restarted u-1 twice");
            }
        }
        let empty = BTreeMap::from([("c".to_string(), 0u64)]);
        assert!(active(&w.evaluate(last + 200_000, &empty, &did), STALLED).is_empty(), "no backlog: not stalled");
    }

    #[test]
    fn a_tenant_with_a_backlog_and_no_completion_stalls_while_others_flow() {
        let mut w = LatencyWatch::new(cfg(), "h1", ["c".to_string()].into_iter(), None);
        let mut t = 1_000_000_000_000i64;
        let submit = |tenant: &str, n: u64, at: i64| {
            let mut e = JobEvent::new(EventKind::Submitted, rfc3339(at), "c", "h1", "drover submit");
            e.tenant = Some(tenant.into());
            e.count = Some(n);
            e
        };
        w.observe(&submit("acme", 3, t));
        w.observe(&submit("globex", 10, t));
        for i in 0..10 {
            let mut e = event(EventKind::Succeeded, &format!("g{i}"), "h1", t, 1.0, t + 86_400_000);
            e.tenant = Some("globex".into());
            w.observe(&e);
            t += 10_000;
        }
        let (backlog, did) = (BTreeMap::new(), BTreeMap::new());
        let c = w.evaluate(t + 60_000, &backlog, &did);
        let stalled: Vec<&Condition> = active(&c, STALLED);
        assert_eq!(stalled.len(), 1, "{c:#?}");
        assert_eq!(stalled[0].key.label("tenant"), "acme");
        assert!(stalled[0].summary.contains("about 3 job(s) waiting"), "{}", stalled[0].summary);
    }

    #[test]
    fn tenants_are_bounded() {
        let mut w = LatencyWatch::new(cfg(), "h1", ["c".to_string()].into_iter(), None);
        for i in 0..100 {
            let mut e = JobEvent::new(EventKind::Submitted, rfc3339(0), "c", "h1", "s");
            e.tenant = Some(format!("t{i}"));
            w.observe(&e);
        }
        assert_eq!(w.classes["c"].tenants.len(), MAX_TENANTS + 1, "32 tenants and (other)");
    }

    #[test]
    fn a_class_is_rebaselined_fleet_wide_or_on_one_host() {
        // (host given, detectors restarted, fleet restarted, here restarted)
        let table =
            [(None, Some(3), true, true), (Some("h1"), Some(1), false, true), (Some("h2"), Some(0), false, false)];
        for (host, restarted, fleet, here) in table {
            let mut w = LatencyWatch::new(cfg(), "h1", ["c".to_string()].into_iter(), None);
            let mut t = 1_000_000_000_000i64;
            for i in 0..40 {
                let mut e = event(EventKind::Succeeded, &format!("j{i}"), "h1", t, 100.0, t + 86_400_000);
                e.tenant = Some("acme".into());
                w.observe(&e);
                t += 200_000;
            }
            assert_eq!(w.rebaseline("c", host, t), restarted, "{host:?}");
            let class = &w.classes["c"];
            assert_eq!(class.fleet.completions() == 0, fleet, "{host:?}");
            assert_eq!(class.here.completions() == 0, here, "{host:?}");
            assert_eq!(class.tenants["acme"].detector.completions() == 0, fleet, "{host:?}");
            // A job that started before the rebaseline is not learnt by the new baselines.
            w.observe(&event(EventKind::Succeeded, "old", "h1", t - 50_000, 100.0, t + 86_400_000));
            let class = &w.classes["c"];
            assert_eq!(class.fleet.completions(), if fleet { 0 } else { 41 }, "{host:?}");
        }
        let mut w = LatencyWatch::new(cfg(), "h1", ["c".to_string()].into_iter(), None);
        assert_eq!(w.rebaseline("unknown", None, 0), None);
    }

    #[test]
    fn baselines_survive_a_restart() {
        let mut w = LatencyWatch::new(cfg(), "h1", ["c".to_string()].into_iter(), None);
        let mut t = 1_000_000_000_000i64;
        for i in 0..40 {
            w.observe(&event(EventKind::Succeeded, &format!("j{i}"), "h1", t, 100.0, t + 86_400_000));
            t += 200_000;
        }
        let saved = w.snapshot();
        let json = serde_json::to_string(&saved).expect("serialises");
        let back: Baselines = serde_json::from_str(&json).expect("parses");
        let w2 = LatencyWatch::new(cfg(), "h1", ["c".to_string()].into_iter(), Some(back));
        let b = w2.classes["c"].fleet.baseline(t as f64 / 1000.0).expect("no relearning from zero");
        assert!((b.median_s - 100.0).abs() < 5.0, "{b:?}");
    }
}
