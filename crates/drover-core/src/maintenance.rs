//! Maintenance orders (drain, cordon) and what they mean for each unit: which to cordon, which
//! job to requeue now, which unit to stop, and when a host is safe to power off. Pure: the
//! supervisor passes the units as systemd and their STATUS lines describe them, and the time.
//!
//! A **drain** cordons the units in its scope (no new job; SIGUSR1), lets running jobs finish
//! until its deadline, requeues what still runs at the deadline without charging an attempt
//! (the worker's requeue signal), and stops each unit once it is idle. A job whose class
//! expects it to need clearly longer than the time left is requeued at once instead of burning
//! work until the deadline (`early_requeue`, per class). A **cordon** only takes new jobs away.
//! **Undrain** lifts both. Orders are data, persisted by the supervisor, so a restart resumes
//! them.
//!
//! A **quarantine** or a **pause** is the supervisor's own order. When its hold runs out it is
//! not lifted but *probed*: one unit (the quarantined one; for a pause, the first running unit of
//! the class) is let take exactly one job, then cordons itself again (the worker's probe
//! signal). That job's outcome decides ([`probe_outcome`]): a success lifts the order, a failure
//! re-arms it with a longer hold. Everything else stays cordoned meanwhile.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// A unit's full name, or its instance (`inference-3`).
    Unit(String),
    Host(String),
    Class(String),
}

impl Scope {
    /// The unit of a unit's scope.
    pub fn unit(&self) -> Option<&str> {
        match self {
            Scope::Unit(u) => Some(u),
            _ => None,
        }
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scope::Unit(u) => write!(f, "unit {u}"),
            Scope::Host(h) => write!(f, "host {h}"),
            Scope::Class(c) => write!(f, "class {c}"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Drain,
    Cordon,
    /// A worker that looks misconfigured: no new job, its running job requeued without charge.
    Quarantine,
    /// A shared outage of a class: no new job of it here until the hold runs out.
    Pause,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Order {
    pub id: String,
    pub kind: Kind,
    pub scope: Scope,
    pub reason: String,
    pub who: String,
    pub at_ms: i64,
    /// Drains: when what still runs is requeued. Quarantines and pauses: when the hold runs out
    /// and a probe job is let through.
    pub deadline_ms: Option<i64>,
    /// Quarantines and pauses whose hold ran out: since when one probe job decides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probing_since_ms: Option<i64>,
    /// Probes begun so far.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub probes: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Order {
    fn probing(&self) -> bool {
        self.probing_since_ms.is_some() && matches!(self.kind, Kind::Quarantine | Kind::Pause)
    }
}

/// Why a running job is requeued on the supervisor's request: the worker is told which (one
/// signal each), so that its job event says what happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequeueCause {
    /// The drain's deadline was reached.
    DrainDeadline,
    /// The job is expected to need clearly longer than the drain has left (`drain_early_requeue`).
    DrainEarly,
    /// The worker is quarantined.
    Quarantine,
}

impl RequeueCause {
    /// The reason the worker gives in its `requeued` event.
    pub fn reason(self) -> &'static str {
        match self {
            RequeueCause::DrainDeadline => "requeued at the drain's deadline",
            RequeueCause::DrainEarly => {
                "requeued early by the drain: expected to need clearly longer than the drain had left"
            }
            RequeueCause::Quarantine => "requeued: the worker is quarantined",
        }
    }
}

/// Seconds for people: sub-second values in milliseconds, a decimal below 10 s, whole seconds
/// above (never "0 s" for 0.4 s).
pub fn human_secs(s: f64) -> String {
    if !s.is_finite() || s <= 0.0 {
        "0 s".into()
    } else if s < 1.0 {
        format!("{:.0} ms", (s * 1000.0).max(1.0))
    } else if s < 10.0 {
        format!("{s:.1} s")
    } else {
        format!("{s:.0} s")
    }
}

/// One unit as the supervisor sees it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct UnitView {
    pub unit: String,
    pub class: String,
    pub up: bool,
    /// Its process has not said READY yet (systemd's `activating`): a worker installs its
    /// signal handlers before READY, so a signal now (a cordon's SIGUSR1) could kill it.
    pub starting: bool,
    pub main_pid: u32,
    /// The job it runs and for how long (seconds), from its STATUS line.
    pub job: Option<(String, f64)>,
    /// The fraction of that job done, as its handler last reported it (STATUS line).
    pub progress: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Act {
    Cordon(String),
    Uncordon(String),
    RequeueNow {
        unit: String,
        job: String,
        why: String,
        cause: RequeueCause,
    },
    Stop(String),
    /// Let a cordoned unit take exactly one job, then cordon itself again.
    Probe(String),
}

/// What was already done, so that each signal goes once to each process.
#[derive(Clone, Debug, Default)]
pub struct Memory {
    cordoned: BTreeMap<String, u32>,
    requeued: BTreeMap<String, u32>,
    probed: BTreeMap<String, u32>,
    /// Drained units already told to stop (by main pid): one stop per process, not one per pass
    /// while it deactivates.
    stopped: BTreeMap<String, u32>,
}

impl Memory {
    /// The probe sent to a unit ended without an outcome (its job was requeued or interrupted):
    /// send another.
    pub fn probe_again(&mut self, unit: &str) {
        self.probed.remove(unit);
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct UnitProgress {
    pub unit: String,
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub age_s: Option<f64>,
    /// Expected seconds until the job finishes, from the class's usual duration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_left_s: Option<f64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    pub order: Option<Order>,
    pub host: String,
    pub units: Vec<UnitProgress>,
    /// Jobs requeued away from this scope, and where they started again (when known).
    pub requeued: Vec<Moved>,
    /// No job left in scope and (drains) every unit in it stopped.
    pub done: bool,
    /// A host drain that is done.
    pub safe_to_power_off: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Moved {
    pub job: String,
    pub from: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// Why it was requeued (the requeue's reason: a drain's deadline, an early requeue, a
    /// quarantine).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub why: String,
}

/// What the orders make of a unit's health in `drover status`, or `None` for the health
/// systemd and the reconciler give it: drained units are `draining` (still up) or `drained`;
/// a quarantined unit that is up is `quarantined`, or `probing` once its hold ran out
/// (`quarantine` says which); a cordoned one that is up is `cordoned`.
pub fn shown_health(drained: bool, quarantine: Option<bool>, cordoned: bool, up: bool) -> Option<&'static str> {
    match (drained, quarantine, cordoned, up) {
        (true, _, _, true) => Some("draining"),
        (true, _, _, false) => Some("drained"),
        (false, Some(true), _, true) => Some("probing"),
        (false, Some(false), _, true) => Some("quarantined"),
        (false, _, true, true) => Some("cordoned"),
        _ => None,
    }
}

pub fn applies(scope: &Scope, host: &str, u: &UnitView) -> bool {
    match scope {
        Scope::Host(h) => h == host,
        Scope::Class(c) => *c == u.class,
        Scope::Unit(name) => *name == u.unit || u.unit.contains(&format!("@{name}.service")),
    }
}

/// The effect of the orders on the units: signals to send, units to stop, and the units the
/// reconciler must leave alone (drained: neither started nor stopped by it).
pub fn plan(
    orders: &[Order],
    host: &str,
    units: &[UnitView],
    expected_s: &BTreeMap<String, f64>,
    early_requeue: &BTreeSet<String>,
    mem: &mut Memory,
    now_ms: i64,
) -> (Vec<Act>, BTreeSet<String>) {
    let mut acts = Vec::new();
    let mut held = BTreeSet::new();
    let probes = probers(orders, host, units);
    for u in units {
        let drains: Vec<&Order> =
            orders.iter().filter(|o| o.kind == Kind::Drain && applies(&o.scope, host, u)).collect();
        if !drains.is_empty() {
            held.insert(u.unit.clone());
        }
        if !u.up {
            mem.forget(&u.unit);
            continue;
        }
        if u.starting {
            // No signal until it is ready (the next pass sends it: signals are remembered per
            // process). A drained one is stopped: a stop is no signal to the worker's code.
            if !drains.is_empty() {
                acts.extend(mem.stop_once(u));
            }
            continue;
        }
        let cordoned = orders.iter().any(|o| applies(&o.scope, host, u));
        let cordon = mem.cordon_once(u, cordoned);
        let just_cordoned = matches!(cordon, Some(Act::Cordon(_)));
        acts.extend(cordon);
        acts.extend(mem.probe_once(u, probes.contains(&u.unit), just_cordoned));
        // A probing quarantine lets its probe job run; a quarantine still on hold requeues it.
        let quarantined =
            orders.iter().any(|o| o.kind == Kind::Quarantine && !o.probing() && applies(&o.scope, host, u));
        if let (true, Some((job, _))) = (quarantined, &u.job) {
            acts.extend(mem.requeue_once(u, job, "the worker is quarantined".into(), RequeueCause::Quarantine));
        }
        acts.extend(drain(&drains, u, expected_s, early_requeue, mem, now_ms));
    }
    (acts, held)
}

impl Memory {
    /// The unit is down: its next process gets every signal afresh.
    fn forget(&mut self, unit: &str) {
        self.cordoned.remove(unit);
        self.requeued.remove(unit);
        self.probed.remove(unit);
        self.stopped.remove(unit);
    }

    /// A cordon for a process newly covered by an order, an uncordon once none covers it.
    fn cordon_once(&mut self, u: &UnitView, cordoned: bool) -> Option<Act> {
        if cordoned && self.cordoned.get(&u.unit) != Some(&u.main_pid) {
            self.cordoned.insert(u.unit.clone(), u.main_pid);
            return Some(Act::Cordon(u.unit.clone()));
        }
        if !cordoned && self.cordoned.remove(&u.unit).is_some() {
            return Some(Act::Uncordon(u.unit.clone()));
        }
        None
    }

    /// The probe signal, once per process, for a unit that is to run a probe job now.
    fn probe_once(&mut self, u: &UnitView, probing: bool, just_cordoned: bool) -> Option<Act> {
        if !probing {
            self.probed.remove(&u.unit);
        } else if !just_cordoned && self.probed.get(&u.unit) != Some(&u.main_pid) {
            // Not in the same breath as a cordon: two different signals may arrive in either
            // order, and a cordon after the probe would cancel it.
            self.probed.insert(u.unit.clone(), u.main_pid);
            return Some(Act::Probe(u.unit.clone()));
        }
        None
    }

    /// A requeue of the unit's job, once per process.
    fn requeue_once(&mut self, u: &UnitView, job: &str, why: String, cause: RequeueCause) -> Option<Act> {
        if self.requeued.get(&u.unit) == Some(&u.main_pid) {
            return None;
        }
        self.requeued.insert(u.unit.clone(), u.main_pid);
        Some(Act::RequeueNow { unit: u.unit.clone(), job: job.to_string(), why, cause })
    }

    /// A stop of an idle drained unit, once per process.
    fn stop_once(&mut self, u: &UnitView) -> Option<Act> {
        if self.stopped.get(&u.unit) == Some(&u.main_pid) {
            return None;
        }
        self.stopped.insert(u.unit.clone(), u.main_pid);
        Some(Act::Stop(u.unit.clone()))
    }
}

/// A unit under drains: stopped when idle; its job requeued at the earliest of their deadlines,
/// or before it when the job is expected to need clearly longer than is left.
fn drain(
    drains: &[&Order],
    u: &UnitView,
    expected_s: &BTreeMap<String, f64>,
    early_requeue: &BTreeSet<String>,
    mem: &mut Memory,
    now_ms: i64,
) -> Option<Act> {
    // The earliest deadline of the drains that cover it.
    let deadline = drains.iter().filter_map(|o| o.deadline_ms).min().or(drains.first().map(|_| i64::MAX))?;
    let Some((job, age)) = &u.job else {
        return mem.stop_once(u);
    };
    let left_ms = deadline.saturating_sub(now_ms);
    let (why, cause) = if left_ms <= 0 {
        ("the drain's deadline was reached".to_string(), RequeueCause::DrainDeadline)
    } else if early_requeue.contains(&u.class) {
        // The job's own pace when it reports progress: a job that says it will finish before
        // the deadline is left to finish, one far behind is moved now.
        let remaining = expected_remaining_s(u, *age, expected_s)?;
        (too_long_to_finish(remaining, left_ms)?, RequeueCause::DrainEarly)
    } else {
        return None;
    };
    mem.requeue_once(u, job, why, cause)
}

/// Seconds the unit's job (running for `age`) is expected to need still: from its progress,
/// else from its class's usual run time.
fn expected_remaining_s(u: &UnitView, age: f64, expected_s: &BTreeMap<String, f64>) -> Option<f64> {
    crate::progress::remaining_s(age, u.progress).or_else(|| expected_s.get(&u.class).map(|exp| exp - age))
}

/// Why a job expected to need `remaining` seconds more is requeued with `left_ms` of the drain
/// left, or `None` when it may well finish.
fn too_long_to_finish(remaining: f64, left_ms: i64) -> Option<String> {
    // "Clearly": expected to need more than half as long again as is left.
    (remaining * 1000.0 > left_ms as f64 * 1.5).then(|| {
        format!(
            "expected to need about {} more, past the drain's deadline in {}: requeued early",
            human_secs(remaining),
            human_secs(left_ms as f64 / 1000.0)
        )
    })
}

/// The units that are to run a probe job now: each up unit under a probing quarantine, and for
/// each probing pause the first up unit of the class, unless another order (a drain, a cordon,
/// a quarantine on hold) also covers the unit.
fn probers(orders: &[Order], host: &str, units: &[UnitView]) -> BTreeSet<String> {
    let only_probing = |u: &UnitView| {
        let mut covering = orders.iter().filter(|o| applies(&o.scope, host, u)).peekable();
        covering.peek().is_some() && covering.all(Order::probing)
    };
    let mut out = BTreeSet::new();
    for o in orders.iter().filter(|o| o.probing()) {
        let mut candidates = units.iter().filter(|u| u.up && applies(&o.scope, host, u) && only_probing(u));
        match o.kind {
            Kind::Quarantine => out.extend(candidates.map(|u| u.unit.clone())),
            _ => out.extend(candidates.next().map(|u| u.unit.clone())),
        }
    }
    out
}

/// What a finished job says about the probing orders that cover its unit: `(order id, passed)`
/// for each. `failed` is the job's verdict on its worker (see the quarantine module): `Some(true)`
/// failed or timed out, `Some(false)` succeeded, `None` (requeued, interrupted, rejected) says
/// nothing. Only outcomes after the probe began count.
pub fn probe_outcome(
    orders: &[Order],
    host: &str,
    u: &UnitView,
    failed: Option<bool>,
    at_ms: i64,
) -> Vec<(String, bool)> {
    let Some(failed) = failed else { return Vec::new() };
    orders
        .iter()
        .filter(|o| o.probing_since_ms.is_some_and(|since| at_ms >= since) && o.probing())
        .filter(|o| applies(&o.scope, host, u))
        .map(|o| (o.id.clone(), !failed))
        .collect()
}

/// Progress of one order on this host.
pub fn progress(
    o: &Order,
    host: &str,
    units: &[UnitView],
    expected_s: &BTreeMap<String, f64>,
    moved: &[Moved],
) -> Progress {
    let mine: Vec<&UnitView> = units.iter().filter(|u| applies(&o.scope, host, u)).collect();
    let units_p: Vec<UnitProgress> = mine
        .iter()
        .map(|u| UnitProgress {
            unit: u.unit.clone(),
            state: match (u.up, &u.job, o.kind) {
                (false, _, _) => "stopped".into(),
                (true, Some(_), _) => "running its last job".into(),
                (true, None, Kind::Drain) => "stopping".into(),
                (true, None, Kind::Cordon) => "cordoned".into(),
                (true, None, Kind::Quarantine) if o.probing() => "probing".into(),
                (true, None, Kind::Quarantine) => "quarantined".into(),
                (true, None, Kind::Pause) if o.probing() => "paused, probing".into(),
                (true, None, Kind::Pause) => "paused".into(),
            },
            job: u.job.as_ref().map(|j| j.0.clone()),
            age_s: u.job.as_ref().map(|j| j.1),
            expected_left_s: u
                .job
                .as_ref()
                .and_then(|(_, age)| expected_remaining_s(u, *age, expected_s))
                .map(|s| s.max(0.0)),
        })
        .collect();
    let done = match o.kind {
        Kind::Drain => mine.iter().all(|u| !u.up),
        Kind::Cordon | Kind::Quarantine | Kind::Pause => true,
    };
    let names: BTreeSet<&str> = mine.iter().map(|u| u.unit.as_str()).collect();
    Progress {
        order: Some(o.clone()),
        host: host.to_string(),
        units: units_p,
        requeued: moved.iter().filter(|m| names.contains(m.from.as_str())).cloned().collect(),
        done,
        safe_to_power_off: done && matches!(&o.scope, Scope::Host(h) if h == host),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_orders_shape_a_units_shown_health() {
        // (drained, quarantine: probing?, cordoned, up, shown)
        let cases = [
            (true, None, false, true, Some("draining")),
            (true, Some(false), true, false, Some("drained")),
            (false, Some(true), true, true, Some("probing")),
            (false, Some(false), true, true, Some("quarantined")),
            (false, None, true, true, Some("cordoned")),
            (false, Some(false), true, false, None), // down: systemd's word stands
            (false, None, false, true, None),
        ];
        for (drained, q, cordoned, up, want) in cases {
            assert_eq!(shown_health(drained, q, cordoned, up), want, "{drained} {q:?} {cordoned} {up}");
        }
    }

    fn unit(n: u32, class: &str, job: Option<f64>) -> UnitView {
        UnitView {
            unit: format!("dw@{class}-{n}.service"),
            class: class.into(),
            up: true,
            starting: false,
            main_pid: 100 + n,
            job: job.map(|age| (format!("job{n}"), age)),
            progress: None,
        }
    }

    fn order(kind: Kind, scope: Scope, deadline_ms: Option<i64>) -> Order {
        Order {
            id: "o1".into(),
            kind,
            scope,
            reason: "swap".into(),
            who: "ops".into(),
            at_ms: 0,
            deadline_ms,
            probing_since_ms: None,
            probes: 0,
        }
    }

    #[test]
    fn a_host_drain_cordons_stops_idle_units_and_requeues_at_the_deadline() {
        let units = vec![unit(1, "a", None), unit(2, "a", Some(30.0))];
        let orders = vec![order(Kind::Drain, Scope::Host("h1".into()), Some(60_000))];
        let mut mem = Memory::default();
        let none = (BTreeMap::new(), BTreeSet::new());
        let (acts, held) = plan(&orders, "h1", &units, &none.0, &none.1, &mut mem, 0);
        assert_eq!(
            acts,
            vec![
                Act::Cordon("dw@a-1.service".into()),
                Act::Stop("dw@a-1.service".into()),
                Act::Cordon("dw@a-2.service".into())
            ]
        );
        assert_eq!(held.len(), 2);
        // Signals go once per process.
        let (acts, _) = plan(&orders, "h1", &units[1..], &none.0, &none.1, &mut mem, 30_000);
        assert!(acts.is_empty(), "{acts:?}");
        let (acts, _) = plan(&orders, "h1", &units[1..], &none.0, &none.1, &mut mem, 60_000);
        assert!(matches!(&acts[..], [Act::RequeueNow { job, .. }] if job == "job2"), "{acts:?}");
        let (acts, _) = plan(&orders, "h1", &units[1..], &none.0, &none.1, &mut mem, 61_000);
        assert!(acts.is_empty(), "requeued once: {acts:?}");
        let p = progress(&orders[0], "h1", &units, &none.0, &[]);
        assert!(!p.done && !p.safe_to_power_off);
        let stopped: Vec<UnitView> = units.iter().map(|u| UnitView { up: false, job: None, ..u.clone() }).collect();
        let p = progress(&orders[0], "h1", &stopped, &none.0, &[]);
        assert!(p.done && p.safe_to_power_off);
    }

    #[test]
    fn jobs_that_cannot_finish_in_time_are_requeued_early_where_the_class_allows() {
        let units = vec![unit(1, "long", Some(300.0)), unit(2, "short", Some(300.0)), unit(3, "long", Some(1700.0))];
        let orders = vec![order(Kind::Drain, Scope::Host("h1".into()), Some(600_000))];
        let expected = BTreeMap::from([("long".to_string(), 1800.0), ("short".to_string(), 1800.0)]);
        let early = BTreeSet::from(["long".to_string()]);
        let (acts, _) = plan(&orders, "h1", &units, &expected, &early, &mut Memory::default(), 0);
        let requeued: Vec<&str> = acts
            .iter()
            .filter_map(|a| match a {
                Act::RequeueNow { unit, .. } => Some(unit.as_str()),
                _ => None,
            })
            .collect();
        // long-1: 1500 s left against 600 s: requeued now. long-3: 100 s left: let it finish.
        // short-2: its class keeps jobs until the deadline.
        assert_eq!(requeued, vec!["dw@long-1.service"]);
        // Labelled as what it is (issue 11), with its numbers as they are.
        let requeues = |acts: &[Act]| -> Vec<(RequeueCause, String)> {
            acts.iter()
                .filter_map(|a| match a {
                    Act::RequeueNow { why, cause, .. } => Some((*cause, why.clone())),
                    _ => None,
                })
                .collect()
        };
        assert_eq!(
            requeues(&acts),
            vec![(
                RequeueCause::DrainEarly,
                "expected to need about 1500 s more, past the drain's deadline in 600 s: requeued early".to_string()
            )]
        );
        // Sub-second values are not rounded to 0 s.
        let units = vec![unit(1, "long", Some(0.0))];
        let expected = BTreeMap::from([("long".to_string(), 0.9)]);
        let orders = vec![order(Kind::Drain, Scope::Host("h1".into()), Some(400))];
        let (acts, _) = plan(&orders, "h1", &units, &expected, &early, &mut Memory::default(), 0);
        assert_eq!(
            requeues(&acts),
            vec![(
                RequeueCause::DrainEarly,
                "expected to need about 900 ms more, past the drain's deadline in 400 ms: requeued early".to_string()
            )]
        );
        // Progress decides over the class's usual time: 95% done after 300 s (about 16 s to
        // go) is left to finish; 10% after 1700 s (about 4 hours to go) is moved now.
        let mut on_pace = unit(1, "long", Some(300.0));
        on_pace.progress = Some(0.95);
        let mut behind = unit(3, "long", Some(1700.0));
        behind.progress = Some(0.1);
        let orders = vec![order(Kind::Drain, Scope::Host("h1".into()), Some(600_000))];
        let expected = BTreeMap::from([("long".to_string(), 1800.0)]);
        let (acts, _) = plan(&orders, "h1", &[on_pace, behind], &expected, &early, &mut Memory::default(), 0);
        assert_eq!(
            requeues(&acts),
            vec![(
                RequeueCause::DrainEarly,
                "expected to need about 15300 s more, past the drain's deadline in 600 s: requeued early".to_string()
            )]
        );
    }

    #[test]
    fn seconds_for_people_table() {
        for (s, want) in
            [(0.0, "0 s"), (0.0004, "1 ms"), (0.25, "250 ms"), (1.0, "1.0 s"), (9.94, "9.9 s"), (42.4, "42 s")]
        {
            assert_eq!(human_secs(s), want, "{s}");
        }
    }

    #[test]
    fn a_drained_idle_unit_is_stopped_once_per_process() {
        // Issue 11: "stop drained unit" appeared two or three times for one unit while it
        // deactivated.
        let none = (BTreeMap::new(), BTreeSet::new());
        let units = vec![unit(1, "a", None)];
        let orders = vec![order(Kind::Drain, Scope::Host("h1".into()), Some(60_000))];
        let mut mem = Memory::default();
        let stops = |acts: &[Act]| acts.iter().filter(|a| matches!(a, Act::Stop(_))).count();
        let (acts, _) = plan(&orders, "h1", &units, &none.0, &none.1, &mut mem, 0);
        assert_eq!(stops(&acts), 1);
        for t in [100, 200, 5_000] {
            let (acts, _) = plan(&orders, "h1", &units, &none.0, &none.1, &mut mem, t);
            assert_eq!(stops(&acts), 0, "at {t} ms: {acts:?}");
        }
        // A new process of the unit (started again) is stopped again.
        let again = vec![UnitView { main_pid: 999, ..units[0].clone() }];
        let (acts, _) = plan(&orders, "h1", &again, &none.0, &none.1, &mut mem, 6_000);
        assert_eq!(stops(&acts), 1);
    }

    #[test]
    fn a_starting_unit_gets_no_signal_until_it_is_ready_then_gets_it_once() {
        // A cordon (SIGUSR1) that reached a worker before its handlers were installed killed
        // it, and systemd failed the operator's `systemctl restart` of the unit.
        let none = (BTreeMap::new(), BTreeSet::new());
        let starting = vec![UnitView { starting: true, ..unit(1, "a", None) }];
        let ready = vec![unit(1, "a", None)];
        let mut mem = Memory::default();
        let cordon = vec![order(Kind::Cordon, Scope::Class("a".into()), None)];
        let (acts, _) = plan(&cordon, "h1", &starting, &none.0, &none.1, &mut mem, 0);
        assert!(acts.is_empty(), "no signal to a starting worker: {acts:?}");
        let (acts, _) = plan(&cordon, "h1", &ready, &none.0, &none.1, &mut mem, 1);
        assert_eq!(acts, vec![Act::Cordon("dw@a-1.service".into())]);
        let (acts, _) = plan(&cordon, "h1", &ready, &none.0, &none.1, &mut mem, 2);
        assert!(acts.is_empty(), "once per process: {acts:?}");
        // A quarantine's probe waits the same way; a drain's stop does not.
        let mut probe = order(Kind::Quarantine, Scope::Unit("a-1".into()), Some(0));
        probe.probing_since_ms = Some(0);
        let (acts, _) = plan(&[probe], "h1", &starting, &none.0, &none.1, &mut Memory::default(), 3);
        assert!(acts.is_empty(), "no probe signal to a starting worker: {acts:?}");
        let drain = vec![order(Kind::Drain, Scope::Host("h1".into()), Some(60_000))];
        let (acts, _) = plan(&drain, "h1", &starting, &none.0, &none.1, &mut Memory::default(), 4);
        assert_eq!(acts, vec![Act::Stop("dw@a-1.service".into())]);
    }

    #[test]
    fn cordon_keeps_jobs_and_undrain_lifts_it() {
        let units = vec![unit(1, "a", Some(5.0)), unit(1, "b", None)];
        let mut mem = Memory::default();
        let none = (BTreeMap::new(), BTreeSet::new());
        let orders = vec![order(Kind::Cordon, Scope::Class("a".into()), None)];
        let (acts, held) = plan(&orders, "h1", &units, &none.0, &none.1, &mut mem, 0);
        assert_eq!(acts, vec![Act::Cordon("dw@a-1.service".into())]);
        assert!(held.is_empty(), "cordoned units stay wanted");
        let (acts, _) = plan(&[], "h1", &units, &none.0, &none.1, &mut mem, 1);
        assert_eq!(acts, vec![Act::Uncordon("dw@a-1.service".into())]);
    }

    #[test]
    fn a_probing_quarantine_lets_one_job_through_and_a_probing_pause_one_unit() {
        let none = (BTreeMap::new(), BTreeSet::new());
        let units = vec![unit(1, "a", None), unit(2, "a", Some(3.0)), unit(3, "a", None)];
        let mut q = order(Kind::Quarantine, Scope::Unit("a-2".into()), Some(10_000));
        let mut mem = Memory::default();
        // On hold: cordoned, and its running job requeued without charge.
        let (acts, _) = plan(&[q.clone()], "h1", &units, &none.0, &none.1, &mut mem, 0);
        assert!(matches!(&acts[..], [Act::Cordon(_), Act::RequeueNow { .. }]), "{acts:?}");
        // The hold ran out: one probe signal, and the probe job is not requeued.
        q.probing_since_ms = Some(10_000);
        let (acts, _) = plan(&[q.clone()], "h1", &units, &none.0, &none.1, &mut mem, 10_000);
        assert_eq!(acts, vec![Act::Probe("dw@a-2.service".into())]);
        let (acts, _) = plan(&[q.clone()], "h1", &units, &none.0, &none.1, &mut mem, 11_000);
        assert!(acts.is_empty(), "one probe per process: {acts:?}");
        // The probe job was requeued (no outcome): another probe.
        mem.probe_again("dw@a-2.service");
        let (acts, _) = plan(&[q.clone()], "h1", &units, &none.0, &none.1, &mut mem, 12_000);
        assert_eq!(acts, vec![Act::Probe("dw@a-2.service".into())]);
        // Passed: the order goes and the unit is uncordoned.
        let (acts, _) = plan(&[], "h1", &units, &none.0, &none.1, &mut mem, 13_000);
        assert_eq!(acts, vec![Act::Uncordon("dw@a-2.service".into())]);

        // A restarted supervisor meets a probing order: cordon first, the probe at the next pass.
        let mut mem = Memory::default();
        let (acts, _) = plan(&[q.clone()], "h1", &units, &none.0, &none.1, &mut mem, 0);
        assert_eq!(acts, vec![Act::Cordon("dw@a-2.service".into())]);
        let (acts, _) = plan(&[q.clone()], "h1", &units, &none.0, &none.1, &mut mem, 1);
        assert_eq!(acts, vec![Act::Probe("dw@a-2.service".into())]);

        // A probing pause probes with one unit, skipping a unit that is also cordoned.
        let mut pause = order(Kind::Pause, Scope::Class("a".into()), Some(0));
        pause.probing_since_ms = Some(0);
        let cordon = Order { id: "o2".into(), ..order(Kind::Cordon, Scope::Unit("a-1".into()), None) };
        let mut mem = Memory::default();
        let orders = [pause.clone(), cordon];
        plan(&orders, "h1", &units, &none.0, &none.1, &mut mem, 0);
        let (acts, _) = plan(&orders, "h1", &units, &none.0, &none.1, &mut mem, 1);
        assert_eq!(acts, vec![Act::Probe("dw@a-2.service".into())]);

        // Outcomes: only a verdict after the probe began decides, and only for covered units.
        let u2 = &units[1];
        assert_eq!(probe_outcome(&[q.clone()], "h1", u2, Some(false), 10_500), vec![("o1".to_string(), true)]);
        assert_eq!(probe_outcome(&[q.clone()], "h1", u2, Some(true), 10_500), vec![("o1".to_string(), false)]);
        assert!(probe_outcome(&[q.clone()], "h1", u2, None, 10_500).is_empty(), "a requeue says nothing");
        assert!(probe_outcome(&[q.clone()], "h1", u2, Some(false), 9_999).is_empty(), "before the probe");
        assert!(probe_outcome(&[q.clone()], "h1", &units[0], Some(false), 10_500).is_empty(), "another unit");
        q.probing_since_ms = None;
        assert!(probe_outcome(&[q], "h1", u2, Some(false), 10_500).is_empty(), "still on hold");
        assert_eq!(probe_outcome(&[pause], "h1", &units[0], Some(false), 5).len(), 1);
    }

    #[test]
    fn scopes() {
        let u = unit(3, "inference", None);
        assert!(applies(&Scope::Unit("inference-3".into()), "h", &u));
        assert!(applies(&Scope::Unit("dw@inference-3.service".into()), "h", &u));
        assert!(!applies(&Scope::Unit("inference-33".into()), "h", &u));
        assert!(applies(&Scope::Class("inference".into()), "h", &u));
        assert!(!applies(&Scope::Host("other".into()), "h", &u));
    }
}
