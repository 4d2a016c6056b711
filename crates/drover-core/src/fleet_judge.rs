//! The fleet's judge: the one place where the fleet-wide analysis runs. The broker elects it
//! (the supervisor that is the active consumer of a single-active-consumer queue bound to the
//! events exchange); this module is what it computes, pure: every job event in
//! ([`FleetJudge::observe`]), each host's report in ([`FleetJudge::report`]: its units,
//! orders, what it forgot), and at each evaluation ([`FleetJudge::evaluate`]) the judgments
//! for each host (orders to add, cordons to lift), the fleet's verdicts, and the alert
//! transitions of the fleet-wide conditions, raised once for the fleet.
//!
//! What a takeover must not lose is in [`Snapshot`] (latency baselines, blames, the alerts
//! firing), which the judge keeps in the broker; the evidence behind new verdicts is in
//! memory only and is rebuilt from the job events, as after a restart.

use crate::alerts::{Alert, AlertBook, AlertKey, Condition, Policy, Severity, Transition};
use crate::events::JobEvent;
use crate::judge::{AlertKind, HostJudgment, HostView, Judge, JudgeConfig, Kept};
use crate::latency::{self, Baselines, LatencyWatch, WatchConfig};
use crate::maintenance::Order;
use crate::verdicts::HostVerdicts;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Version of [`Snapshot`], [`HostReport`] and [`News`] on the wire.
pub const VERSION: u32 = 1;

/// A host that has not reported for this long is no longer judged (its supervisor is gone).
pub const REPORT_KEPT_MS: i64 = 3600 * 1000;

/// What a supervisor tells the judge about its host at each evaluation.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HostReport {
    pub v: u32,
    pub at_ms: i64,
    #[serde(flatten)]
    pub view: HostView,
    /// Subjects that start from no evidence: a unit an operator released, an order whose hold
    /// ran out (it probes now), a probe that passed. `unit` absent: the class's pause.
    #[serde(default)]
    pub forget: Vec<Forget>,
    /// Classes an operator asked a fleet-wide new latency baseline for.
    #[serde(default)]
    pub rebaseline: Vec<String>,
    /// What Drover already did per class on this host, for the alert texts.
    #[serde(default)]
    pub did: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Forget {
    pub class: String,
    #[serde(default)]
    pub unit: Option<String>,
}

/// The judge's lasting state, kept in the broker so that the next judge goes on from it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Snapshot {
    pub v: u32,
    pub at_ms: i64,
    /// The supervisor that wrote it.
    pub judge: String,
    pub baselines: Baselines,
    pub kept: Kept,
    pub firing: Vec<Alert>,
}

/// What every supervisor hears from the judge at each evaluation: the fleet's verdicts (for
/// its workers) and the fleet's alerts firing (for its status).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct News {
    pub v: u32,
    pub at_ms: i64,
    pub judge: String,
    pub verdicts: Vec<HostVerdicts>,
    pub firing: Vec<Alert>,
}

/// The judge's configuration: the judge's (and the latency watch's) as a supervisor has
/// them, and the alert book's policy.
#[derive(Clone, Debug)]
pub struct FleetJudgeConfig {
    /// `host` is the judge's own (for the snapshot); it judges every host.
    pub judge: JudgeConfig,
    pub watch: WatchConfig,
    /// `alerts.fire_after` and `alerts.resolve_after` for the latency conditions.
    pub fire_after: Duration,
    pub resolve_after: Duration,
    /// Whether the quarantine policy is on (`quarantine.enabled`).
    pub quarantine: bool,
    /// After taking over, how long the judge waits for every host's report before it
    /// clears an alert whose condition it does not see (a few evaluation periods).
    pub settle: Duration,
}

/// One evaluation's output.
#[derive(Debug, Default)]
pub struct Evaluation {
    /// Per host, what to apply there (hosts with nothing to do are left out).
    pub judgments: Vec<HostJudgment>,
    /// Alerts fired or resolved, for the fleet (once each).
    pub transitions: Vec<Transition>,
    /// For every supervisor.
    pub news: News,
}

pub struct FleetJudge {
    cfg: FleetJudgeConfig,
    judge: Judge,
    watch: LatencyWatch,
    book: AlertBook,
    reports: BTreeMap<String, HostReport>,
    /// The first evaluation's time.
    since_ms: Option<i64>,
    /// Orders sent to a host and not yet in its reports, with the reports still to come
    /// before they should be (a report may have left before the judgment arrived).
    pending: BTreeMap<String, (Vec<Order>, u32)>,
    /// When each class was last given a new fleet-wide baseline.
    rebaselined: BTreeMap<String, i64>,
}

/// Requests for a class's new baseline within this long of the last are the same request.
const REBASELINE_ONCE_MS: i64 = 60_000;

/// Reports from a host after a judgment by which its orders show it.
const PENDING_REPORTS: u32 = 2;

/// How an alert of `name` fires and resolves: the judge's own conditions and drift at once,
/// the rest after the configured hold-downs.
pub fn policy(name: &str, fire_after: Duration, resolve_after: Duration) -> Policy {
    let judged = AlertKind::judged(name);
    Policy {
        fire_after: if judged || name == latency::DRIFT { Duration::ZERO } else { fire_after },
        resolve_after: if judged { Duration::ZERO } else { resolve_after },
    }
}

/// Whether a latency condition is the fleet's (the judge raises it) rather than one host's
/// (that host's supervisor raises it): a host's own drift carries its `host` label.
pub fn fleet_wide(c: &Condition) -> bool {
    c.key.label("host").is_empty()
}

impl FleetJudge {
    /// A judge that goes on from `snapshot` (the previous judge's), or starts afresh.
    pub fn new(cfg: FleetJudgeConfig, snapshot: Option<Snapshot>) -> FleetJudge {
        let snapshot = snapshot.filter(|s| s.v == VERSION).unwrap_or_default();
        let classes = cfg.judge.classes.clone().into_iter();
        let watch = LatencyWatch::new(cfg.watch.clone(), &cfg.judge.host, classes, Some(snapshot.baselines));
        FleetJudge {
            judge: Judge::new(cfg.judge.clone(), snapshot.kept),
            watch,
            book: AlertBook::restore(snapshot.firing),
            reports: BTreeMap::new(),
            since_ms: None,
            pending: BTreeMap::new(),
            rebaselined: BTreeMap::new(),
            cfg,
        }
    }

    /// One job event of the fleet's. Returns true when the verdicts must go out now (a worker
    /// vanished under a job: before the job's next delivery).
    pub fn observe(&mut self, e: &JobEvent) -> bool {
        self.watch.observe(e);
        self.judge.observe(e)
    }

    /// A host's report: what it forgot is forgotten here, its view replaces the last one.
    pub fn report(&mut self, r: HostReport, now_ms: i64) {
        if r.v != VERSION {
            return;
        }
        self.judge.set_host(&r.view.host);
        if let Some((_, left)) = self.pending.get_mut(&r.view.host) {
            *left = left.saturating_sub(1);
        }
        self.pending.retain(|_, (_, left)| *left > 0);
        for f in &r.forget {
            self.judge.forget(&f.class, f.unit.as_deref());
        }
        for class in &r.rebaseline {
            // Asked of every supervisor at once: the first report that says so restarts it.
            let last = self.rebaselined.get(class).copied();
            if last.is_none_or(|at| now_ms - at > REBASELINE_ONCE_MS) {
                self.watch.rebaseline(class, None, now_ms);
                self.rebaselined.insert(class.clone(), now_ms);
            }
        }
        self.reports.insert(r.view.host.clone(), r);
    }

    /// The hosts judged now.
    pub fn hosts(&self) -> usize {
        self.reports.len()
    }

    /// The periodic evaluation. `backlog`: ready jobs per class (absent: unknown).
    pub fn evaluate(&mut self, now_ms: i64, backlog: &BTreeMap<String, u64>) -> Evaluation {
        self.reports.retain(|_, r| now_ms - r.at_ms < REPORT_KEPT_MS);
        let mut views: Vec<HostView> = self.reports.values().map(|r| r.view.clone()).collect();
        let did = self.did();
        let mut conditions: Vec<Condition> =
            self.watch.evaluate(now_ms, backlog, &did).into_iter().filter(fleet_wide).collect();
        let mut judgments = Vec::new();
        if self.cfg.quarantine {
            self.with_pending(&mut views);
            let (j, c) = self.judge.evaluate_fleet(&views, now_ms);
            for h in &j {
                let orders = h.wants.iter().map(|w| w.as_order(now_ms)).collect();
                self.pending.insert(h.host.clone(), (orders, PENDING_REPORTS));
            }
            judgments = j;
            conditions.extend(c);
            // The verdicts count what was just decided as in force: the blame goes out with it.
            views = self.reports.values().map(|r| r.view.clone()).collect();
            self.with_pending(&mut views);
        }
        let verdicts = self.judge.fleet_verdicts(&views, now_ms);
        self.judge.set_host(&self.cfg.judge.host.clone());
        // The judge's conditions that are no longer there are cleared; not before every host
        // has had time to report (a new judge knows the hosts' orders only from their reports).
        let settled = now_ms - *self.since_ms.get_or_insert(now_ms) >= self.cfg.settle.as_millis() as i64;
        let present: BTreeSet<AlertKey> = conditions.iter().map(|c| c.key.clone()).collect();
        let gone: Vec<Condition> = self
            .book
            .keys()
            .into_iter()
            .filter(|k| settled && AlertKind::judged(&k.name) && !present.contains(k))
            .map(|key| Condition {
                key,
                active: false,
                severity: Severity::Critical,
                summary: String::new(),
                annotations: BTreeMap::new(),
            })
            .collect();
        conditions.extend(gone);
        let mut transitions = Vec::new();
        for c in conditions {
            let p = policy(&c.key.name, self.cfg.fire_after, self.cfg.resolve_after);
            transitions.extend(self.book.update(c, p, now_ms));
        }
        let news =
            News { v: VERSION, at_ms: now_ms, judge: self.cfg.judge.host.clone(), verdicts, firing: self.firing() };
        Evaluation { judgments, transitions, news }
    }

    /// Orders sent and not yet reported, joined to the hosts' views.
    fn with_pending(&self, views: &mut [HostView]) {
        for v in views.iter_mut() {
            let Some((orders, _)) = self.pending.get(&v.host) else { continue };
            for o in orders {
                if !v.orders.iter().any(|held| held.kind == o.kind && held.scope == o.scope) {
                    v.orders.push(o.clone());
                }
            }
        }
    }

    /// The fleet's alerts firing now.
    pub fn firing(&self) -> Vec<Alert> {
        self.book.firing().into_iter().cloned().collect()
    }

    /// What the next judge needs.
    pub fn snapshot(&self, now_ms: i64) -> Snapshot {
        Snapshot {
            v: VERSION,
            at_ms: now_ms,
            judge: self.cfg.judge.host.clone(),
            baselines: self.watch.snapshot(),
            kept: self.judge.kept().clone(),
            firing: self.firing(),
        }
    }

    /// The usual run time of a class now, fleet-wide (seconds).
    pub fn expected_s(&self, class: &str, now_ms: i64) -> Option<f64> {
        self.watch.expected_s(class, now_ms as f64 / 1000.0)
    }

    /// What Drover did per class, every host's notes joined.
    fn did(&self) -> BTreeMap<String, String> {
        let mut out: BTreeMap<String, Vec<&str>> = BTreeMap::new();
        for r in self.reports.values() {
            for (class, text) in &r.did {
                out.entry(class.clone()).or_default().push(text);
            }
        }
        out.into_iter().map(|(c, texts)| (c, texts.join("; "))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drift::DetectorConfig;
    use crate::events::EventKind;
    use crate::job::rfc3339;
    use crate::maintenance::{Kind, Order, Scope};
    use crate::quarantine::Policy as QPolicy;
    use crate::suspects::SuspectPolicy;

    fn cfg(host: &str) -> FleetJudgeConfig {
        FleetJudgeConfig {
            judge: JudgeConfig {
                host: host.into(),
                unit_prefix: "dw".into(),
                classes: vec!["c".into()],
                policy: QPolicy::default(),
                hold_ms: 600_000,
                hold_max_ms: 3_600_000,
                suspects: SuspectPolicy::default(),
            },
            watch: WatchConfig {
                detector: DetectorConfig::default(),
                running_evidence: 1e-6,
                stall_gaps: 8.0,
                stall_min: Duration::from_secs(600),
            },
            fire_after: Duration::ZERO,
            resolve_after: Duration::ZERO,
            quarantine: true,
            settle: Duration::from_millis(1_000),
        }
    }

    fn ev(kind: EventKind, outcome: &str, job: &str, host: &str, unit: &str) -> JobEvent {
        let mut e = JobEvent::new(kind, rfc3339(1_000), "c", host, unit);
        e.job_id = Some(job.into());
        e.outcome = Some(outcome.into());
        e
    }

    fn report(host: &str, orders: Vec<Order>) -> HostReport {
        let units = (1..=2).map(|i| (format!("dw@c-{i}.service"), "c".to_string())).collect();
        HostReport {
            v: VERSION,
            at_ms: 0,
            view: HostView { host: host.into(), units, orders, serving: vec!["c".into()] },
            ..Default::default()
        }
    }

    /// Four healthy hosts and one whose units time out every job.
    fn fleet(j: &mut FleetJudge) {
        for i in 0..60 {
            let host = format!("h{}", i % 4);
            j.observe(&ev(EventKind::Succeeded, "succeeded", &format!("ok-{i}"), &host, "dw@c-1.service"));
        }
        for i in 0..6 {
            j.observe(&ev(EventKind::Failed, "timeout", &format!("bad-{i}"), "bad", "dw@c-1.service"));
        }
        for h in ["h0", "h1", "h2", "h3", "bad"] {
            j.report(report(h, vec![]), 0);
        }
    }

    #[test]
    fn the_bad_host_alone_is_judged_and_paged_once() {
        let mut j = FleetJudge::new(cfg("h0"), None);
        fleet(&mut j);
        let e = j.evaluate(1_000, &BTreeMap::new());
        let hosts: Vec<&str> = e.judgments.iter().map(|h| h.host.as_str()).collect();
        assert_eq!(hosts, ["bad"], "{:?}", e.judgments);
        assert!(e.judgments[0].wants.iter().all(|w| w.kind == Kind::Quarantine));
        let wants = e.judgments[0].wants.clone();
        // Verdicts: one message per host and one for the fleet's blames (already: the page and
        // the blame go out with the decision).
        assert_eq!(e.news.verdicts.len(), 6);
        assert_eq!(fired(&e.transitions), ["WorkerQuarantined"]);
        let blamed = e.news.verdicts.iter().find(|v| v.host == crate::verdicts::FLEET).expect("fleet");
        assert_eq!(blamed.blamed.len(), 2, "both quarantined units blamed once");
        // A report sent before the host applied the judgment changes nothing.
        j.report(report("bad", vec![]), 1_200);
        let e = j.evaluate(1_400, &BTreeMap::new());
        assert!(e.judgments.is_empty() && e.transitions.is_empty(), "{e:?}");
        // The host applies the quarantine; the next evaluation pages once for it.
        let held: Vec<Order> = wants
            .iter()
            .enumerate()
            .map(|(i, w)| Order {
                id: format!("o{i}"),
                kind: w.kind,
                scope: w.scope.clone(),
                reason: w.reason.clone(),
                who: "drover".into(),
                at_ms: 1_000,
                deadline_ms: Some(w.until_ms),
                probing_since_ms: None,
                probes: 0,
            })
            .collect();
        j.report(report("bad", held), 1_500);
        let e = j.evaluate(2_000, &BTreeMap::new());
        assert!(e.judgments.is_empty() && e.transitions.is_empty(), "nothing more: {e:?}");
    }

    fn fired(t: &[Transition]) -> Vec<&str> {
        t.iter()
            .filter_map(|t| match t {
                Transition::Fired(a) => Some(a.key.name.as_str()),
                Transition::Resolved(_) => None,
            })
            .collect()
    }

    #[test]
    fn a_takeover_from_the_snapshot_keeps_blames_and_alerts_and_raises_nothing_again() {
        let mut old = FleetJudge::new(cfg("h0"), None);
        fleet(&mut old);
        let wants = old.evaluate(1_000, &BTreeMap::new()).judgments[0].wants.clone();
        let held: Vec<Order> = wants
            .iter()
            .map(|w| Order {
                id: "o".into(),
                kind: w.kind,
                scope: w.scope.clone(),
                reason: w.reason.clone(),
                who: "drover".into(),
                at_ms: 1_000,
                deadline_ms: Some(w.until_ms),
                probing_since_ms: None,
                probes: 0,
            })
            .collect();
        old.report(report("bad", held.clone()), 1_500);
        old.evaluate(2_000, &BTreeMap::new());
        let snap: Snapshot =
            serde_json::from_str(&serde_json::to_string(&old.snapshot(2_000)).expect("json")).expect("parses");

        // The new judge has seen no event; before the hosts report, it clears nothing.
        let mut new = FleetJudge::new(cfg("h1"), Some(snap));
        assert!(new.evaluate(2_500, &BTreeMap::new()).transitions.is_empty());
        for h in ["h0", "h1", "h2", "h3"] {
            new.report(report(h, vec![]), 3_000);
        }
        new.report(report("bad", held), 3_000);
        let e = new.evaluate(3_000, &BTreeMap::new());
        assert!(e.transitions.is_empty(), "nothing fired or resolved again: {:?}", e.transitions);
        assert_eq!(new.firing().len(), 1);
        let fleet = e.news.verdicts.iter().find(|v| v.host == crate::verdicts::FLEET).expect("fleet");
        assert!(fleet.blamed.iter().all(|b| b.active) && !fleet.blamed.is_empty(), "{fleet:?}");
        // A lifted order (the host no longer reports it) resolves the page.
        new.report(report("bad", vec![]), 4_000);
        let e = new.evaluate(4_000, &BTreeMap::new());
        assert!(matches!(&e.transitions[..], [Transition::Resolved(a)] if a.key.name == "WorkerQuarantined"));
    }

    #[test]
    fn a_class_paused_on_every_host_is_one_alert() {
        let mut j = FleetJudge::new(cfg("h0"), None);
        for i in 0..40 {
            let host = format!("h{}", i % 4);
            j.observe(&ev(EventKind::Failed, "failed", &format!("j-{i}"), &host, "dw@c-1.service"));
        }
        let pause = |h: &str| Order {
            id: format!("p-{h}"),
            kind: Kind::Pause,
            scope: Scope::Class("c".into()),
            reason: "outage".into(),
            who: "drover".into(),
            at_ms: 0,
            deadline_ms: Some(600_000),
            probing_since_ms: None,
            probes: 0,
        };
        for h in ["h0", "h1", "h2", "h3"] {
            j.report(report(h, vec![]), 0);
        }
        let e = j.evaluate(1_000, &BTreeMap::new());
        assert_eq!(e.judgments.len(), 4, "every host pauses the class: {:?}", e.judgments);
        assert_eq!(fired(&e.transitions), ["ClassPaused"], "one page for the fleet");
        for h in ["h0", "h1", "h2", "h3"] {
            j.report(report(h, vec![pause(h)]), 1_000);
        }
        let e = j.evaluate(2_000, &BTreeMap::new());
        assert!(e.transitions.is_empty(), "{:?}", e.transitions);
    }
}
