//! The judge: what the quarantine policy ([`crate::quarantine`]) decides for a host's units,
//! given the fleet's job outcomes and the maintenance orders in force.
//!
//! The fleet's judge ([`crate::fleet_judge`]) feeds it every job event and each host's units
//! and orders, and gets back, for every host at once ([`Judge::evaluate_fleet`]), the orders
//! to add ([`Want`]), the alert conditions, and the verdicts for the workers (fair charging,
//! [`Judge::fleet_verdicts`]). Each supervisor keeps one too, fed no events, for its own
//! probes ([`ProbeStep`]) and holds ([`Judge::next_hold`]). The state that must outlive a
//! restart is [`Kept`]: the jobs each quarantine forgave, the hold lengths.

use crate::alerts::{AlertKey, Condition, Severity};
use crate::events::{EventKind, JobEvent};
use crate::job::{parse_rfc3339_ms, rfc3339};
use crate::maintenance::{self, Kind, Order, Scope, UnitView};
use crate::quarantine::{self, Attribution, Hold, Policy, Subject};
use crate::reconcile::{class_of_unit, unit_name};
use crate::suspects::{self, Attempt, End, Placement, Start, SuspectPolicy, Suspects};
use crate::verdicts::{self, Blame, HostVerdicts, Suspect};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// The alerts the judge raises: one per quarantined unit, one per paused class, while it lasts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AlertKind {
    WorkerQuarantined,
    ClassPaused,
}

impl AlertKind {
    pub const ALL: [AlertKind; 2] = [AlertKind::WorkerQuarantined, AlertKind::ClassPaused];

    pub fn name(self) -> &'static str {
        match self {
            AlertKind::WorkerQuarantined => "WorkerQuarantined",
            AlertKind::ClassPaused => "ClassPaused",
        }
    }

    /// The judge's alert of this name, if it is one.
    pub fn of(name: &str) -> Option<AlertKind> {
        AlertKind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Whether the judge raises alerts of this name (its orders' and the suspects' test's),
    /// so that it also clears them.
    pub fn judged(name: &str) -> bool {
        AlertKind::of(name).is_some() || SUSPECT_ALERTS.contains(&name)
    }
}

/// The names of the suspects' test's alerts (`suspects::Alert::key`).
pub const SUSPECT_ALERTS: [&str; 8] = [
    "HostSuspect",
    "WorkerSuspect",
    "HostSlow",
    "WorkerSlow",
    "ManyLookBad",
    "HostQuarantined",
    "ClassSuspect",
    "ClassSlow",
];

/// An alert of the suspects' test as a condition: a cordon or a slow host is a warning (no new
/// jobs go there; nothing is lost yet), many hosts looking bad at once is critical.
fn suspect_condition(a: &suspects::Alert) -> Condition {
    let severity = match a.kind {
        suspects::AlertKind::ManyLookBad | suspects::AlertKind::Quarantined => Severity::Critical,
        _ => Severity::Warning,
    };
    let mut annotations = BTreeMap::new();
    annotations.insert("units".to_string(), a.units.join(", "));
    if !a.enforced {
        annotations.insert("shadow".to_string(), "what would be done; quarantine.enforce = false".to_string());
    }
    Condition { key: a.key(), active: true, severity, summary: a.summary.clone(), annotations }
}

/// Shadow mode's words for what it would have done on `host`.
fn shadow_note(a: &suspects::Action, host: &str) -> Option<String> {
    let (what, units, subject) = match a {
        suspects::Action::Cordon { units, subject, .. } => ("would cordon", units, subject),
        suspects::Action::Quarantine { units, subject, .. } => ("would quarantine", units, subject),
        suspects::Action::Lift { units, subject, .. } => ("would lift the cordon of", units, subject),
    };
    let here = match subject {
        Subject::Host(h) => h == host,
        Subject::Worker(w) => w.ends_with(&format!("@{host}")),
    };
    here.then(|| format!("{what} {}", units.join(", ")))
}

/// What a hold's length is remembered by (holds double when the same thing is held again).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HoldKey {
    /// A quarantined unit.
    Unit(String),
    /// A class paused for a shared outage.
    Pause(String),
}

impl HoldKey {
    /// The key of the hold behind an order of the judge's.
    pub fn of(scope: &Scope, unit: &str) -> HoldKey {
        match scope {
            Scope::Class(c) => HoldKey::Pause(c.clone()),
            _ => HoldKey::Unit(unit.to_string()),
        }
    }

    /// The key as kept in the state directory (`q:<unit>`, `pause:<class>`).
    pub fn key(&self) -> String {
        match self {
            HoldKey::Unit(u) => format!("q:{u}"),
            HoldKey::Pause(c) => format!("pause:{c}"),
        }
    }
}

/// The part of the judge that outlives a restart (`<prefix>-verdicts.json`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Kept {
    #[serde(default)]
    pub blames: Vec<Blame>,
    #[serde(default)]
    pub holds: BTreeMap<String, Hold>,
}

/// What the judge is told once, from the configuration.
#[derive(Clone, Debug)]
pub struct JudgeConfig {
    pub host: String,
    pub unit_prefix: String,
    pub classes: Vec<String>,
    pub policy: Policy,
    /// `quarantine.hold` and `quarantine.hold_max`, in milliseconds.
    pub hold_ms: u64,
    pub hold_max_ms: u64,
    /// The policy for suspects from running ages, slow hosts, the budget and shadow mode.
    pub suspects: SuspectPolicy,
}

/// A unit not seen in the fleet's events for this long no longer counts in a class's size.
pub const PLACEMENT_KEPT_MS: i64 = 6 * 3600 * 1000;

/// An order the judge wants in force: new, with the end of its hold.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Want {
    pub kind: Kind,
    pub scope: Scope,
    pub reason: String,
    pub until_ms: i64,
}

impl Want {
    /// The order its host will hold once it applies it (the judge counts it as in force
    /// until the host's reports show it).
    pub fn as_order(&self, now_ms: i64) -> Order {
        Order {
            id: "provisional".into(),
            kind: self.kind,
            scope: self.scope.clone(),
            reason: self.reason.clone(),
            who: "drover".into(),
            at_ms: now_ms,
            deadline_ms: (self.kind != Kind::Cordon).then_some(self.until_ms),
            probing_since_ms: None,
            probes: 0,
        }
    }
}

/// One host as the fleet's judge sees it: its units with their classes, its orders in force,
/// and the classes it has a healthy unit taking jobs for (from the host's own report).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HostView {
    pub host: String,
    pub units: Vec<(String, String)>,
    pub orders: Vec<Order>,
    pub serving: Vec<String>,
}

/// What the fleet's judge decided for one host: orders to add, suspect cordons to lift, what
/// shadow mode would have done there.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HostJudgment {
    pub host: String,
    pub wants: Vec<Want>,
    pub lifts: Vec<Scope>,
    pub shadow: Vec<String>,
    /// Jobs this host's drains or quarantines moved away, and where they started again (seen
    /// by the judge, which alone sees every host's events).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub moved: Vec<maintenance::Moved>,
}

impl HostJudgment {
    pub fn is_empty(&self) -> bool {
        self.wants.is_empty() && self.lifts.is_empty() && self.shadow.is_empty() && self.moved.is_empty()
    }
}

/// What a job that ended on one of this host's units does to a probe.
#[derive(Clone, Debug, PartialEq)]
pub enum ProbeStep {
    /// The probe order `order` is decided: lifted when `passed`, else held until `until_ms`.
    Settle { order: String, scope: Scope, passed: bool, until_ms: i64, what: String },
    /// The probe job ended without a verdict: the unit takes another one.
    Again { unit: String },
}

pub struct Judge {
    cfg: JudgeConfig,
    attribution: Attribution,
    kept: Kept,
    suspects: Suspects,
    /// The fleet's units as its events show them, and when each was last seen.
    placements: crate::quarantine::FastMap<Placement, i64>,
    /// What the last evaluation found about suspects: cordons to lift on this host, what shadow
    /// mode would have done, and the alerts.
    lifts: Vec<Scope>,
    shadow: Vec<String>,
    suspect_alerts: Vec<suspects::Alert>,
    /// The classes of the units of the host judged now, as it reported them.
    unit_classes: BTreeMap<String, String>,
}

impl Judge {
    pub fn new(cfg: JudgeConfig, kept: Kept) -> Judge {
        let suspects = Suspects::new(cfg.suspects.clone());
        Judge {
            cfg,
            attribution: Attribution::default(),
            kept,
            suspects,
            placements: Default::default(),
            lifts: Vec::new(),
            shadow: Vec::new(),
            suspect_alerts: Vec::new(),
            unit_classes: BTreeMap::new(),
        }
    }

    pub fn kept(&self) -> &Kept {
        &self.kept
    }

    /// Takes in one of the fleet's job events. Returns true when the attempts that vanished
    /// with their worker changed (publish the verdicts now, before the job's next delivery).
    pub fn observe(&mut self, e: &JobEvent) -> bool {
        let vanished = self.attribution.vanished_changes();
        self.attribution.observe(e, &self.cfg.policy);
        self.feed_suspects(e);
        self.attribution.vanished_changes() != vanished
    }

    /// Attempts' starts and ends for the suspects' test. Interrupted attempts, transient
    /// errors and rejections are never evidence against a worker.
    fn feed_suspects(&mut self, e: &JobEvent) {
        let Some(job) = e.job_id.clone() else { return };
        let at = parse_rfc3339_ms(&e.at).unwrap_or(0);
        let place = Placement { class: e.class.clone(), host: e.host.clone(), unit: e.unit.clone() };
        let end = match (e.event, e.outcome.as_deref()) {
            (EventKind::Started, _) => {
                let at_ms = e.started_at.as_deref().and_then(parse_rfc3339_ms).unwrap_or(at);
                let place = self.seen(place, at);
                let Placement { class, host, unit } = place;
                self.suspects.started(&Start { class, host, unit, job, at_ms });
                return;
            }
            (EventKind::Succeeded, _) => End::Succeeded,
            (EventKind::Failed, Some("timeout")) => End::TimedOut,
            (EventKind::Failed, Some("failed")) => End::Failed,
            (EventKind::Failed, _) | (EventKind::Requeued, _) => End::Interrupted,
            _ => return,
        };
        let run_ms = e.duration_s.map(|d| (d * 1000.0) as i64);
        let started_ms = e.started_at.as_deref().and_then(parse_rfc3339_ms).unwrap_or(at - run_ms.unwrap_or(0));
        let Placement { class, host, unit } = self.seen(place, at);
        let run_ms = run_ms.unwrap_or((at - started_ms).max(0));
        self.suspects.ended(&Attempt { class, host, unit, job, started_ms, run_ms, end });
    }

    /// Notes that `place` was seen at `at` (a copy of it is kept only the first time); gives
    /// it back.
    fn seen(&mut self, place: Placement, at: i64) -> Placement {
        match self.placements.get_mut(&place) {
            Some(seen) => *seen = at,
            None => {
                self.placements.insert(place.clone(), at);
            }
        }
        place
    }

    /// A job that ended on one of this host's units may decide a probe: a pass lifts the
    /// quarantine or pause, a failure holds it again, twice as long. A probe job that ended
    /// without a verdict (requeued, interrupted, rejected) is replaced by another.
    pub fn settle_probes(&mut self, e: &JobEvent, orders: &[Order], now: i64) -> Vec<ProbeStep> {
        let view = UnitView { unit: e.unit.clone(), class: e.class.clone(), up: true, ..Default::default() };
        let verdict = quarantine::verdict(e);
        let at = parse_rfc3339_ms(&e.at).unwrap_or(now);
        let decided = maintenance::probe_outcome(orders, &self.cfg.host, &view, verdict, at);
        let ended = matches!(
            e.event,
            EventKind::Failed | EventKind::DeadLettered | EventKind::Requeued | EventKind::RetryScheduled
        );
        if decided.is_empty() && verdict.is_none() && ended {
            return vec![ProbeStep::Again { unit: e.unit.clone() }];
        }
        let job = e.job_id.as_deref().unwrap_or("?");
        let mut steps = Vec::new();
        for (id, passed) in decided {
            let Some(o) = orders.iter().find(|o| o.id == id) else { continue };
            let what = match (passed, e.outcome.as_deref()) {
                (true, _) => format!("probe job {job} succeeded on {}", e.unit),
                (false, Some(how)) => format!("probe job {job} on {} ended: {how}", e.unit),
                (false, None) => format!("probe job {job} on {} failed", e.unit),
            };
            let until_ms = if passed { 0 } else { self.next_hold(HoldKey::of(&o.scope, &e.unit), now) };
            steps.push(ProbeStep::Settle { order: id, scope: o.scope.clone(), passed, until_ms, what });
        }
        steps
    }

    /// A probe passed and its order was lifted: the subject's evidence is forgotten.
    pub fn lifted(&mut self, scope: &Scope, e: &JobEvent) {
        match scope {
            Scope::Class(c) => self.attribution.forget_class(c),
            _ => self.forget_unit(&e.class, &e.unit),
        }
    }

    /// Cordons of suspects whose jobs then completed normally: lift them (units of this host).
    pub fn take_lifts(&mut self) -> Vec<Scope> {
        std::mem::take(&mut self.lifts)
    }

    /// What shadow mode (`enforce = false`) would have done at the last evaluation.
    pub fn take_shadow(&mut self) -> Vec<String> {
        std::mem::take(&mut self.shadow)
    }

    /// Operators released these units (names or instances): they must earn new evidence. A
    /// release forgets the host's record too: otherwise the host-wide evidence that covered the
    /// unit would quarantine it again at the next evaluation, before it ran a single job.
    pub fn released(&mut self, units: &[String]) {
        for u in units {
            let full = if u.ends_with(".service") { u.clone() } else { unit_name(&self.cfg.unit_prefix, u) };
            self.forget_unit(&class_of_unit(&self.cfg.unit_prefix, &full), &full);
        }
    }

    /// Orders whose hold ran out and that now probe: their subjects start from no evidence.
    pub fn probing(&mut self, begun: &[Order]) {
        for o in begun {
            match (&o.kind, &o.scope) {
                (Kind::Quarantine, Scope::Unit(u)) => self.forget_unit(&class_of_unit(&self.cfg.unit_prefix, u), u),
                (Kind::Pause, Scope::Class(c)) => self.attribution.forget_class(c),
                _ => {}
            }
        }
    }

    /// The quarantines and pauses the fleet's outcomes call for on this host, beyond the orders
    /// already in force. `units` are this host's units with their classes.
    pub fn evaluate(&mut self, units: &[(String, String)], orders: &[Order], now: i64) -> Vec<Want> {
        let mut wants = self.attribute(units, orders, now);
        let host = self.cfg.host.clone();
        let d = self.suspects_decision(units.iter().map(|(unit, class)| (host.clone(), unit, class)), now);
        self.judge_suspects(&d, orders, now, &mut wants);
        wants
    }

    /// The fleet's judge: [`Judge::evaluate`] for every host at once, the suspects' test run
    /// once over the whole fleet. Returns each host's judgment and every alert condition of
    /// the judge's (one per key: a class-wide condition seen from many hosts is one).
    pub fn evaluate_fleet(&mut self, hosts: &[HostView], now: i64) -> (Vec<HostJudgment>, Vec<Condition>) {
        let all = hosts.iter().flat_map(|h| h.units.iter().map(|(unit, class)| (h.host.clone(), unit, class)));
        let d = self.suspects_decision(all, now);
        let mut judged = Vec::new();
        let mut conditions: BTreeMap<AlertKey, Condition> = BTreeMap::new();
        for h in hosts {
            self.set_view(h);
            let mut wants = self.attribute(&h.units, &h.orders, now);
            self.judge_suspects(&d, &h.orders, now, &mut wants);
            // The pages go out with the decision: its orders count as in force.
            let mut held = h.orders.clone();
            held.extend(wants.iter().map(|w| w.as_order(now)));
            for c in self.conditions(&held, &[]) {
                conditions.entry(c.key.clone()).or_insert(c);
            }
            let (lifts, shadow) = (self.take_lifts(), self.take_shadow());
            let j = HostJudgment { host: h.host.clone(), wants, lifts, shadow, moved: Vec::new() };
            if !j.is_empty() {
                judged.push(j);
            }
        }
        (judged, conditions.into_values().collect())
    }

    /// Judges as `host` from now on (the fleet's judge speaks for each host in turn).
    pub fn set_host(&mut self, host: &str) {
        if self.cfg.host != host {
            self.cfg.host = host.to_string();
        }
        self.unit_classes.clear();
    }

    /// Judges as the host of `view`, whose units' classes it says (hosts may name their
    /// units with prefixes of their own).
    fn set_view(&mut self, view: &HostView) {
        self.set_host(&view.host);
        self.unit_classes = view.units.iter().cloned().collect();
    }

    /// A unit's class: as its host said, else from its name.
    fn class_of(&self, unit: &str) -> String {
        self.unit_classes.get(unit).cloned().unwrap_or_else(|| class_of_unit(&self.cfg.unit_prefix, unit))
    }

    /// A host's report says its operator released a unit, a hold ran out or a probe passed:
    /// the unit (or, without one, the whole class) starts from no evidence.
    pub fn forget(&mut self, class: &str, unit: Option<&str>) {
        match unit {
            Some(u) => self.forget_unit(class, u),
            None => self.attribution.forget_class(class),
        }
    }

    /// Outages and quarantines from failures (binomial test) for this host's units.
    fn attribute(&mut self, units: &[(String, String)], orders: &[Order], now: i64) -> Vec<Want> {
        let in_force = |kind: Kind, scope: &Scope| orders.iter().any(|o| o.kind == kind && o.scope == *scope);
        let mut wants = Vec::new();
        for class in self.cfg.classes.clone() {
            if let Some(why) = self.attribution.outage(&class, &self.cfg.policy) {
                let scope = Scope::Class(class.clone());
                if !in_force(Kind::Pause, &scope) && units.iter().any(|(_, c)| *c == class) {
                    let until_ms = self.next_hold(HoldKey::Pause(class.clone()), now);
                    wants.push(Want { kind: Kind::Pause, scope, reason: why, until_ms });
                }
                continue;
            }
            let host_evidence = self.attribution.judge(&class, &Subject::Host(self.cfg.host.clone()), &self.cfg.policy);
            for (unit, _) in units.iter().filter(|(_, c)| *c == class) {
                let evidence = host_evidence
                    .clone()
                    .or_else(|| self.attribution.judge(&class, &Subject::Worker(self.worker(unit)), &self.cfg.policy));
                let scope = Scope::Unit(unit.clone());
                if let Some(ev) = evidence.filter(|_| !in_force(Kind::Quarantine, &scope)) {
                    let until_ms = self.next_hold(HoldKey::Unit(unit.clone()), now);
                    wants.push(Want { kind: Kind::Quarantine, scope, reason: ev.to_string(), until_ms });
                }
            }
        }
        wants
    }

    /// The suspects' test over the fleet's units (those its events showed lately, and `units`:
    /// `(host, unit, class)` of units known to run now).
    fn suspects_decision<'a>(
        &mut self,
        units: impl Iterator<Item = (String, &'a String, &'a String)>,
        now: i64,
    ) -> suspects::Decision {
        self.placements.retain(|_, seen| now - *seen < PLACEMENT_KEPT_MS);
        let mut placements: BTreeSet<Placement> = self.placements.keys().cloned().collect();
        placements.extend(units.map(|(host, unit, class)| Placement {
            class: class.clone(),
            host,
            unit: unit.clone(),
        }));
        let placements: Vec<Placement> = placements.into_iter().collect();
        self.suspects.evaluate(now, &placements)
    }

    /// What the suspects' decision `d` means for this host: cordons and quarantines of its
    /// units join `wants`, cordons to lift are kept for [`Judge::take_lifts`], shadow mode's
    /// decisions for [`Judge::take_shadow`], and the alerts about this host (and the class-wide
    /// ones) for [`Judge::conditions`].
    fn judge_suspects(&mut self, d: &suspects::Decision, orders: &[Order], now: i64, wants: &mut Vec<Want>) {
        let covered = |scope: &Scope| orders.iter().any(|o| o.scope == *scope);
        let quarantined = |scope: &Scope| orders.iter().any(|o| o.kind == Kind::Quarantine && o.scope == *scope);
        for action in &d.does {
            match action {
                suspects::Action::Cordon { subject, units, evidence, .. } if self.is_mine(subject) => {
                    for u in units.iter().map(|u| Scope::Unit(u.clone())).filter(|s| !covered(s)) {
                        wants.push(Want { kind: Kind::Cordon, scope: u, reason: evidence.to_string(), until_ms: 0 });
                    }
                }
                suspects::Action::Quarantine { class, subject, units, evidence } if self.is_mine(subject) => {
                    for u in units.iter().filter(|u| !quarantined(&Scope::Unit((*u).clone()))) {
                        let until_ms = self.next_hold(HoldKey::Unit(u.clone()), now);
                        let reason = format!("{evidence} (class {class})");
                        wants.push(Want { kind: Kind::Quarantine, scope: Scope::Unit(u.clone()), reason, until_ms });
                    }
                }
                suspects::Action::Lift { subject, units, .. } if self.is_mine(subject) => {
                    self.lifts.extend(units.iter().map(|u| Scope::Unit(u.clone())));
                }
                _ => {}
            }
        }
        if !self.cfg.suspects.enforce {
            self.shadow.extend(d.would.iter().filter_map(|a| shadow_note(a, &self.cfg.host)));
        }
        let enforced_quarantine = |a: &suspects::Alert| a.kind == suspects::AlertKind::Quarantined && a.enforced;
        self.suspect_alerts = d
            .alerts
            .iter()
            // An enforced quarantine pages through its order (one page per host, below).
            .filter(|a| !enforced_quarantine(a) && a.subject.as_ref().is_none_or(|s| self.is_mine(s)))
            .cloned()
            .collect();
    }

    /// One alert condition per class with quarantined units on this host (one page for a bad
    /// host, its units listed inside, however many workers it runs) and per paused class in
    /// `orders`, and a cleared one for each of the judge's alerts in `firing` that is gone.
    pub fn conditions(&self, orders: &[Order], firing: &[AlertKey]) -> Vec<Condition> {
        let mut quarantined: BTreeMap<String, Vec<&Order>> = BTreeMap::new();
        let mut out = Vec::new();
        for o in orders {
            match (&o.kind, &o.scope) {
                (Kind::Quarantine, Scope::Unit(u)) => quarantined.entry(self.class_of(u)).or_default().push(o),
                (Kind::Pause, Scope::Class(c)) => out.push(self.paused(c, o)),
                _ => {}
            }
        }
        out.extend(quarantined.iter().map(|(class, orders)| self.quarantined(class, orders)));
        out.extend(self.suspect_alerts.iter().map(suspect_condition));
        let present: BTreeSet<&AlertKey> = out.iter().map(|c| &c.key).collect();
        let cleared: Vec<Condition> = firing
            .iter()
            .filter(|k| AlertKind::judged(&k.name) && !present.contains(k))
            .map(|key| Condition {
                key: key.clone(),
                active: false,
                severity: Severity::Critical,
                summary: String::new(),
                annotations: BTreeMap::new(),
            })
            .collect();
        out.extend(cleared);
        out
    }

    /// The alert for a class's quarantined units on this host: the evidence of the first one
    /// (a host's evidence covers them all), every unit, and when the next probe is due.
    fn quarantined(&self, class: &str, orders: &[&Order]) -> Condition {
        let host = &self.cfg.host;
        let units: Vec<&str> = orders.iter().filter_map(|o| o.scope.unit()).collect();
        let first = orders[0];
        let summary = match &units[..] {
            [u] => format!("{u} on {host} quarantined: {}", first.reason),
            _ => format!("{} units of class {class} on {host} quarantined: {}", units.len(), first.reason),
        };
        let mut annotations = BTreeMap::new();
        annotations.insert("evidence".to_string(), first.reason.clone());
        annotations.insert("units".to_string(), units.join(", "));
        let next_probe = orders.iter().filter_map(|o| o.deadline_ms).min();
        annotations.insert("probe_after".to_string(), next_probe.map(rfc3339).unwrap_or_default());
        Condition {
            key: AlertKey::new(AlertKind::WorkerQuarantined.name(), &[("class", class), ("host", host)]),
            active: true,
            severity: Severity::Critical,
            summary,
            annotations,
        }
    }

    fn paused(&self, class: &str, o: &Order) -> Condition {
        let mut annotations = BTreeMap::new();
        annotations.insert("evidence".to_string(), o.reason.clone());
        annotations.insert("probe_after".to_string(), o.deadline_ms.map(rfc3339).unwrap_or_default());
        Condition {
            key: AlertKey::new(AlertKind::ClassPaused.name(), &[("class", class)]),
            active: true,
            severity: Severity::Critical,
            summary: format!("class {class} paused fleet-wide: {}", o.reason),
            annotations,
        }
    }

    /// This host's verdicts for the fleet's workers: the quarantined units with the jobs that
    /// failed on them (those failures are not charged to the jobs), kept a day after the
    /// quarantine ends; the classes paused for a shared outage; suspects; and the attempts
    /// that vanished with their worker here.
    /// `serving` are the classes this host has a unit taking jobs for (up, healthy, under no
    /// order): workers elsewhere steer retries here only then.
    pub fn verdicts(
        &mut self,
        orders: &[Order],
        units: &[(String, String)],
        serving: Vec<String>,
        now: i64,
    ) -> HostVerdicts {
        let host = self.cfg.host.clone();
        let view = HostView { host: host.clone(), units: units.to_vec(), orders: orders.to_vec(), serving };
        let mut all = self.fleet_verdicts(&[view], now);
        let blamed = all.iter_mut().find(|v| v.host == verdicts::FLEET).map(|v| std::mem::take(&mut v.blamed));
        let mut mine = all.into_iter().find(|v| v.host == host).unwrap_or_default();
        mine.blamed = blamed.unwrap_or_default();
        mine
    }

    /// The fleet's verdicts from its judge: one message per host (suspects, serves, vanished
    /// attempts) and one for the whole fleet ([`verdicts::FLEET`]) with every blame, so that
    /// the blames are sent once however many hosts there are.
    pub fn fleet_verdicts(&mut self, hosts: &[HostView], now: i64) -> Vec<HostVerdicts> {
        let mut blamed = Vec::new();
        for h in hosts {
            self.set_view(h);
            blamed.extend(self.blamed(&h.orders));
        }
        let blames = &mut self.kept.blames;
        for b in blames.iter_mut() {
            b.active = blamed.iter().any(|(worker, class, _, _)| *worker == b.worker && *class == b.class);
        }
        for (worker, class, since, jobs) in blamed {
            let i = match blames.iter().position(|b| b.worker == worker && b.class == class && b.active) {
                Some(i) => i,
                None => {
                    blames.push(Blame { worker, class, since_ms: since, active: true, jobs: Vec::new() });
                    blames.len() - 1
                }
            };
            for j in jobs {
                if !blames[i].jobs.contains(&j) {
                    blames[i].jobs.push(j);
                }
            }
        }
        blames.retain(|b| b.active || now - b.since_ms < verdicts::BELIEVED_MS);
        let mut out = Vec::with_capacity(hosts.len() + 1);
        for h in hosts {
            self.set_view(h);
            let mut suspects = self.suspects(&h.units);
            // Units cordoned as suspects (running ages): jobs that fail there are retried, not
            // given up on, until the cordon becomes a quarantine or is lifted.
            for o in h.orders.iter().filter(|o| o.kind == Kind::Cordon && o.who == "drover") {
                let Some(u) = o.scope.unit() else { continue };
                let s = Suspect { worker: self.worker(u), class: self.class_of(u) };
                if !suspects.contains(&s) {
                    suspects.push(s);
                }
            }
            out.push(HostVerdicts {
                serves: h.serving.clone(),
                suspects,
                v: verdicts::VERSION,
                host: h.host.clone(),
                at_ms: now,
                blamed: Vec::new(),
                vanished: self.attribution.vanished_on(&h.host),
            });
        }
        out.push(HostVerdicts {
            v: verdicts::VERSION,
            host: verdicts::FLEET.to_string(),
            at_ms: now,
            blamed: self.kept.blames.clone(),
            ..Default::default()
        });
        out
    }

    /// Who is to blame, for which class, since when, and for which failed jobs: each
    /// quarantined unit, and each class paused for a shared outage (any worker).
    fn blamed(&self, orders: &[Order]) -> Vec<(String, String, i64, Vec<String>)> {
        let host = Subject::Host(self.cfg.host.clone());
        orders
            .iter()
            .filter_map(|o| match (&o.kind, &o.scope) {
                (Kind::Quarantine, Scope::Unit(u)) => {
                    let class = self.class_of(u);
                    let worker = self.worker(u);
                    let mut jobs = self.attribution.failed_jobs(&class, &Subject::Worker(worker.clone()));
                    jobs.extend(self.attribution.failed_jobs(&class, &host));
                    Some((worker, class, o.at_ms, jobs))
                }
                (Kind::Pause, Scope::Class(c)) => {
                    // The outage's own failures, gathered until the first probe. A probe's
                    // failure is charged: a bad job taken as the probe must not keep the class
                    // paused forever.
                    let jobs =
                        if o.probes == 0 { self.attribution.outage_jobs(c, &self.cfg.policy) } else { Vec::new() };
                    Some((verdicts::ANY_WORKER.to_string(), c.clone(), o.at_ms, jobs))
                }
                _ => None,
            })
            .collect()
    }

    /// Suspects: evidence beyond a looser significance, short of a quarantine.
    fn suspects(&self, units: &[(String, String)]) -> Vec<Suspect> {
        let policy = &self.cfg.policy;
        let loose = Policy { alpha: policy.suspect_alpha.max(policy.alpha), ..policy.clone() };
        let host = Subject::Host(self.cfg.host.clone());
        units
            .iter()
            .map(|(unit, class)| (self.worker(unit), class.clone()))
            .filter(|(worker, class)| {
                !self.kept.blames.iter().any(|b| b.active && &b.worker == worker)
                    && (self.attribution.judge(class, &host, &loose).is_some()
                        || self.attribution.judge(class, &Subject::Worker(worker.clone()), &loose).is_some())
            })
            .map(|(worker, class)| Suspect { worker, class })
            .collect()
    }

    /// When a hold that starts now ends: the configured hold the first time, doubled (up to
    /// `hold_max`) each time the same unit or class is held again within a day. (The host that
    /// applies an order keeps its holds: the fleet's judge only proposes.)
    pub fn next_hold(&mut self, key: HoldKey, now: i64) -> i64 {
        let key = key.key();
        let hold =
            quarantine::next_hold(self.kept.holds.get(&key).copied(), self.cfg.hold_ms, self.cfg.hold_max_ms, now);
        self.kept.holds.insert(key, hold);
        hold.until_ms
    }

    fn forget_unit(&mut self, class: &str, unit: &str) {
        self.attribution.forget(class, &Subject::Worker(self.worker(unit)));
        self.attribution.forget(class, &Subject::Host(self.cfg.host.clone()));
        self.suspects.release(class, &Subject::Worker(self.worker(unit)));
        self.suspects.release(class, &Subject::Host(self.cfg.host.clone()));
    }

    fn is_mine(&self, subject: &Subject) -> bool {
        match subject {
            Subject::Host(h) => *h == self.cfg.host,
            Subject::Worker(w) => w.rsplit_once('@').is_some_and(|(_, h)| h == self.cfg.host),
        }
    }

    /// A worker's name in the fleet's events: `unit@host`.
    fn worker(&self, unit: &str) -> String {
        format!("{unit}@{}", self.cfg.host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const U1: &str = "dw@c-1.service";
    const U2: &str = "dw@c-2.service";
    const MIN: u64 = 60_000;

    fn judge() -> Judge {
        let cfg = JudgeConfig {
            host: "me".into(),
            unit_prefix: "dw".into(),
            classes: vec!["c".into()],
            policy: Policy::default(),
            hold_ms: 10 * MIN,
            hold_max_ms: 60 * MIN,
            suspects: SuspectPolicy::default(),
        };
        Judge::new(cfg, Kept::default())
    }

    fn ev(kind: EventKind, outcome: &str, job: &str, unit: &str, host: &str) -> JobEvent {
        let mut e = JobEvent::new(kind, rfc3339(1_000), "c", host, unit);
        e.job_id = Some(job.into());
        e.outcome = Some(outcome.into());
        e
    }

    fn units() -> Vec<(String, String)> {
        vec![(U1.into(), "c".into()), (U2.into(), "c".into())]
    }

    /// The rest of the fleet succeeds; `bad` on this host times out `n` distinct jobs.
    fn feed(j: &mut Judge, bad: &str, n: usize) {
        for i in 0..40 {
            j.observe(&ev(
                EventKind::Succeeded,
                "succeeded",
                &format!("ok-{i}"),
                "dw@c-1.service",
                &format!("h{}", i % 4),
            ));
        }
        for i in 0..n {
            j.observe(&ev(EventKind::Failed, "timeout", &format!("bad-{i}"), bad, "me"));
        }
        for i in 0..6 {
            j.observe(&ev(EventKind::Succeeded, "succeeded", &format!("good-{i}"), U2, "me"));
        }
    }

    fn order(kind: Kind, scope: Scope, probing: bool) -> Order {
        Order {
            id: "o-1".into(),
            kind,
            scope,
            reason: "evidence".into(),
            who: "drover".into(),
            at_ms: 0,
            deadline_ms: Some(10 * MIN as i64),
            probing_since_ms: probing.then_some(0),
            probes: u32::from(probing),
        }
    }

    #[test]
    fn a_unit_that_fails_beyond_chance_is_quarantined_once_with_one_hold() {
        // (timeouts on U1, quarantines wanted)
        let cases = [(0, 0), (2, 0), (6, 1)];
        for (n, wanted) in cases {
            let mut j = judge();
            feed(&mut j, U1, n);
            let wants = j.evaluate(&units(), &[], 0);
            assert_eq!(wants.len(), wanted, "{n} timeouts: {wants:?}");
            if let Some(w) = wants.first() {
                assert_eq!(
                    (w.kind, &w.scope, w.until_ms),
                    (Kind::Quarantine, &Scope::Unit(U1.into()), 10 * MIN as i64)
                );
                // With the order in force, nothing more is wanted and the hold does not double.
                let held = [order(Kind::Quarantine, w.scope.clone(), false)];
                assert!(j.evaluate(&units(), &held, 1).is_empty());
                assert_eq!(j.kept().holds[&HoldKey::Unit(U1.into()).key()].length_ms, 10 * MIN);
            }
        }
    }

    #[test]
    fn a_release_forgets_the_evidence_of_the_unit_and_its_host() {
        let mut j = judge();
        feed(&mut j, U1, 6);
        j.released(&["c-1".to_string()]);
        assert!(j.evaluate(&units(), &[], 0).is_empty());
    }

    #[test]
    fn probes_are_decided_by_their_one_job() {
        // (event on U1, outcome, expected step)
        let q = || order(Kind::Quarantine, Scope::Unit(U1.into()), true);
        let cases: Vec<(EventKind, &str, Option<bool>)> = vec![
            (EventKind::Succeeded, "succeeded", Some(true)),
            (EventKind::Failed, "timeout", Some(false)),
            (EventKind::Requeued, "interrupted", None),
        ];
        for (kind, outcome, passed) in cases {
            let mut j = judge();
            let steps = j.settle_probes(&ev(kind, outcome, "p", U1, "me"), &[q()], 2_000);
            match passed {
                Some(true) => {
                    assert!(matches!(&steps[..], [ProbeStep::Settle { passed: true, until_ms: 0, .. }]), "{steps:?}")
                }
                Some(false) => {
                    let want = 2_000 + 10 * MIN as i64;
                    assert!(
                        matches!(&steps[..], [ProbeStep::Settle { passed: false, until_ms, .. }] if *until_ms == want),
                        "{steps:?}"
                    );
                }
                None => assert_eq!(steps, vec![ProbeStep::Again { unit: U1.into() }]),
            }
        }
    }

    #[test]
    fn one_page_per_bad_host_and_class_and_a_clear_for_each_alert_gone() {
        let j = judge();
        let q = |u: &str, id: &str| Order { id: id.into(), ..order(Kind::Quarantine, Scope::Unit(u.into()), false) };
        let paused = order(Kind::Pause, Scope::Class("c".into()), false);
        let gone = AlertKey::new(AlertKind::WorkerQuarantined.name(), &[("class", "d"), ("host", "me")]);
        let drift = AlertKey::new("LatencyDrift", &[("class", "c")]);
        // (orders in force, alerts firing, expected (name, active, units))
        type Case<'a> = (Vec<Order>, Vec<AlertKey>, Vec<(&'a str, bool, &'a str)>);
        let cases: Vec<Case> = vec![
            (vec![q(U1, "a")], vec![], vec![("WorkerQuarantined", true, U1)]),
            (
                vec![q(U1, "a"), q(U2, "b")],
                vec![drift.clone()],
                vec![("WorkerQuarantined", true, "dw@c-1.service, dw@c-2.service")],
            ),
            (
                vec![paused.clone()],
                vec![gone.clone()],
                vec![("ClassPaused", true, ""), ("WorkerQuarantined", false, "")],
            ),
            (vec![], vec![gone.clone(), drift], vec![("WorkerQuarantined", false, "")]),
        ];
        for (orders, firing, want) in cases {
            let c = j.conditions(&orders, &firing);
            let got: Vec<(&str, bool, &str)> = c
                .iter()
                .map(|c| (c.key.name.as_str(), c.active, c.annotations.get("units").map(String::as_str).unwrap_or("")))
                .collect();
            assert_eq!(got, want, "{orders:?}");
            for c in c.iter().filter(|c| c.active && c.key.name == "WorkerQuarantined") {
                assert_eq!((c.key.label("class"), c.key.label("host")), ("c", "me"));
            }
        }
    }

    #[test]
    fn verdicts_blame_the_quarantined_unit_for_its_failed_jobs_and_keep_them_a_day() {
        let mut j = judge();
        feed(&mut j, U1, 6);
        let held = [order(Kind::Quarantine, Scope::Unit(U1.into()), false)];
        let v = j.verdicts(&held, &units(), vec![], 0);
        let b = v.blamed.iter().find(|b| b.worker == format!("{U1}@me")).expect("blamed");
        assert!(b.active && (0..6).all(|i| b.jobs.contains(&format!("bad-{i}"))), "{b:?}");
        let later = j.verdicts(&[], &units(), vec![], verdicts::BELIEVED_MS - 1);
        assert!(later.blamed.iter().any(|b| !b.active), "kept after the release");
        assert!(
            j.verdicts(&[], &units(), vec![], verdicts::BELIEVED_MS + 1).blamed.is_empty(),
            "forgotten after a day"
        );
    }
}

#[cfg(test)]
mod suspect_tests {
    use super::*;

    fn judge(units_per_host: usize) -> (Judge, Vec<(String, String)>) {
        let cfg = JudgeConfig {
            host: "b".into(),
            unit_prefix: "dw".into(),
            classes: vec!["w".into()],
            policy: Policy::default(),
            hold_ms: 600_000,
            hold_max_ms: 3_600_000,
            suspects: SuspectPolicy {
                min_reference: 40,
                cordon_alpha: 1e-4,
                alpha: 1e-6,
                max_quarantined: 0.7,
                ..Default::default()
            },
        };
        let units = (1..=units_per_host).map(|i| (format!("dw@w-{i}.service"), "w".to_string())).collect();
        (Judge::new(cfg, Kept::default()), units)
    }

    fn ev(kind: EventKind, job: &str, unit: &str, host: &str, started: i64, at: i64) -> JobEvent {
        let mut e = JobEvent::new(kind, rfc3339(at), "w", host, unit);
        e.job_id = Some(job.into());
        e.started_at = Some(rfc3339(started));
        if kind != EventKind::Started {
            e.duration_s = Some((at - started) as f64 / 1000.0);
            e.outcome = Some("succeeded".into());
        }
        e
    }

    #[test]
    fn a_host_whose_running_jobs_are_far_older_than_the_fleets_is_cordoned_before_they_time_out() {
        // The fleet's jobs take 1.5 to 2.1 s. (units per host, the running jobs' age in ms, cordoned)
        let cases = [(3, 1_800, false), (3, 12_000, true), (2, 12_000, false)];
        for (n, age_ms, cordoned) in cases {
            let (mut j, units) = judge(n);
            let mut t = 1_700_000_000_000;
            for i in 0..120 {
                let (host, unit) = (["a", "c", "b"][i % 3], format!("dw@w-{}.service", 1 + i % n));
                j.observe(&ev(EventKind::Started, &format!("ok-{i}"), &unit, host, t, t));
                j.observe(&ev(
                    EventKind::Succeeded,
                    &format!("ok-{i}"),
                    &unit,
                    host,
                    t,
                    t + 1_500 + (i as i64 % 7) * 100,
                ));
                t += 600;
            }
            for (u, _) in &units {
                j.observe(&ev(EventKind::Started, &format!("hang-{u}"), u, "b", t, t));
            }
            let wants = j.evaluate(&units, &[], t + age_ms);
            let cordons = wants.iter().filter(|w| w.kind == Kind::Cordon).count();
            assert_eq!(cordons == n, cordoned, "{n} units, jobs at {age_ms} ms: {wants:?}");
        }
    }
}
