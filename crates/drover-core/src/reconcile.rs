//! The supervisor's decisions about worker units: which to start, stop or leave alone, when a
//! failed unit may start again, and what health each unit is in. Pure: the caller passes what
//! systemd reports, the time (milliseconds on any monotonic origin) and random numbers.
//!
//! Who restarts: the supervisor, not systemd. Worker units carry `Restart=no`: systemd 252 cannot
//! jitter `RestartSec=`, and two restarters on one unit fight (both start it, and the backoff of
//! one is invisible to the other). Here each unit gets an equal-jitter exponential backoff that
//! resets after a stable period; a unit that keeps failing is marked `failing` and alerted on,
//! and restarted only at the capped delay; a unit that exited with the preflight status is
//! `misconfigured` and not restarted at all.

use crate::backoff::Backoff;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Exit status of `drover work` when a preflight check failed: the unit file lists it in
/// `RestartPreventExitStatus=` so that systemd does not restart a misconfigured worker.
pub const EXIT_MISCONFIGURED: i32 = 78;

/// `CLD_EXITED` from waitid(2): systemd's `ExecMainCode` when the main process exited normally.
pub const CLD_EXITED: i32 = 1;

/// What systemd says about one unit. States are strings: a newer systemd's states are carried,
/// never fatal.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    pub name: String,
    pub load_state: String,
    pub active_state: String,
    pub sub_state: String,
    pub main_pid: u32,
    pub exec_main_code: i32,
    pub exec_main_status: i32,
    pub n_restarts: u32,
    pub status_text: String,
    /// A start or stop job is queued for the unit.
    pub has_job: bool,
}

impl Observed {
    fn is_up(&self) -> bool {
        matches!(self.active_state.as_str(), "active" | "activating" | "reloading" | "refreshing")
    }

    fn is_down(&self) -> bool {
        matches!(self.active_state.as_str(), "inactive" | "failed" | "") || self.load_state == "not-found"
    }

    fn exited_misconfigured(&self) -> bool {
        self.exec_main_code == CLD_EXITED && self.exec_main_status == EXIT_MISCONFIGURED
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Health {
    Healthy,
    Starting,
    /// Waiting for its restart delay after a failure.
    Restarting,
    Stopping,
    Failing,
    Misconfigured,
    /// Not running and not wanted (surplus), or not started yet.
    Stopped,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Healthy => "healthy",
            Health::Starting => "starting",
            Health::Restarting => "restarting",
            Health::Stopping => "stopping",
            Health::Failing => "failing",
            Health::Misconfigured => "misconfigured",
            Health::Stopped => "stopped",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Policy {
    pub restart: Backoff,
    /// Running this long resets a unit's failure count.
    pub stable_after: Duration,
    /// Consecutive failures that make a unit `failing`.
    pub failing_after: u32,
    /// Starts per second across all units.
    pub start_rate: f64,
}

/// What the supervisor remembers about a unit between passes.
#[derive(Clone, Debug, Default)]
pub struct Track {
    /// Consecutive failures since the last stable run.
    pub failures: u32,
    /// Restarts done by this supervisor.
    pub restarts: u32,
    /// When the unit may be started (the slot given by the rate limit, or the restart delay).
    pub start_at: Option<u64>,
    /// When this supervisor last started it, or first saw it up.
    pub up_since: Option<u64>,
    /// Whether the last observation saw it up: a transition to down is one failure.
    pub was_up: bool,
    pub health: Option<Health>,
    pub misconfigured: Option<String>,
    /// The failing alert was raised and not yet resolved.
    pub alerted: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Start(String),
    Stop(String),
    /// Clears a failed unit's state in systemd (before a restart, or for a unit no longer wanted).
    ResetFailed(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Alert {
    Failing { unit: String, failures: u32, last_exit: String },
    Misconfigured { unit: String, detail: String },
    Recovered { unit: String },
}

#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    pub ops: Vec<Op>,
    /// When a pass should run again to act on a delay (start slot or restart).
    pub wake_at: Option<u64>,
    pub alerts: Vec<Alert>,
}

/// The reconciler: desired units versus what systemd reports, one pass at a time.
#[derive(Debug, Default)]
pub struct Reconciler {
    pub tracks: BTreeMap<String, Track>,
    /// The next free start slot of the rate limit.
    next_slot: u64,
}

/// The unit's last exit in words; systemd's own statuses (200-245: it could not set up the
/// sandbox, the user, the credentials) say what to do (`exits::describe`). `relaxed`: the
/// directives already left out of the units.
pub fn describe_exit(o: &Observed, relaxed: &[String]) -> String {
    if o.exec_main_code == CLD_EXITED {
        crate::exits::describe(o.exec_main_status, relaxed)
    } else if o.exec_main_code == 0 {
        "never ran".to_string()
    } else {
        format!("killed by signal {}", o.exec_main_status)
    }
}

impl Reconciler {
    /// One pass. `unit` draws uniform random numbers in `[0, 1)` for the jitter.
    pub fn plan(
        &mut self,
        desired: &BTreeSet<String>,
        held: &BTreeSet<String>,
        observed: &BTreeMap<String, Observed>,
        policy: &Policy,
        now: u64,
        unit: &mut dyn FnMut() -> f64,
    ) -> Plan {
        let spacing = (1000.0 / policy.start_rate.max(0.001)) as u64;
        let mut pass = Pass { policy, now, spacing, unit, plan: Plan::default() };
        let absent = Observed::default();
        // Held units (drained) are neither started nor stopped here: the drain owns them.
        for name in desired.iter().filter(|n| !held.contains(*n)) {
            let o = observed.get(name).unwrap_or(&absent);
            let t = self.tracks.entry(name.clone()).or_default();
            pass.wanted(name, o, t, &mut self.next_slot);
        }
        // Units of ours that are not wanted: drain and stop them (the worker drains on SIGTERM).
        for (name, o) in observed.iter().filter(|(n, _)| !desired.contains(*n) && !held.contains(*n)) {
            pass.unwanted(name, o);
            self.tracks.remove(name);
        }
        self.tracks.retain(|name, _| desired.contains(name) && !held.contains(name));
        pass.plan
    }
}

/// One reconcile pass: its inputs, and the plan it has made so far.
struct Pass<'a> {
    policy: &'a Policy,
    now: u64,
    /// Milliseconds between two start slots of the rate limit.
    spacing: u64,
    unit: &'a mut dyn FnMut() -> f64,
    plan: Plan,
}

impl Pass<'_> {
    /// A wanted unit: adopted while up, left to systemd while it is busy with it, left alone
    /// when misconfigured, otherwise (re)started when its slot or restart delay comes.
    fn wanted(&mut self, name: &str, o: &Observed, t: &mut Track, next_slot: &mut u64) {
        if o.is_up() {
            return self.up(name, o, t);
        }
        if o.has_job || o.active_state == "deactivating" {
            t.health = Some(if o.active_state == "deactivating" { Health::Stopping } else { Health::Starting });
            return;
        }
        if !o.is_down() {
            // A state this systemd has and we do not know: carried, and left alone.
            t.health = Some(Health::Starting);
            return;
        }
        // Down and wanted.
        if o.exited_misconfigured() {
            return self.misconfigured(name, o, t);
        }
        if t.was_up {
            self.went_down(name, o, t);
        }
        self.start_when_due(name, o, t, next_slot);
    }

    /// Up: a stable run forgives its failures (and resolves the failing alert).
    fn up(&mut self, name: &str, o: &Observed, t: &mut Track) {
        if !t.was_up {
            t.up_since.get_or_insert(self.now);
        }
        t.was_up = true;
        t.start_at = None;
        t.misconfigured = None;
        let stable =
            t.up_since.is_some_and(|s| self.now.saturating_sub(s) >= self.policy.stable_after.as_millis() as u64);
        if stable && t.failures > 0 {
            t.failures = 0;
            if t.alerted {
                t.alerted = false;
                self.plan.alerts.push(Alert::Recovered { unit: name.to_string() });
            }
        }
        t.health = Some(if o.active_state == "active" { Health::Healthy } else { Health::Starting });
        if t.failures >= self.policy.failing_after {
            t.health = Some(Health::Failing);
        }
    }

    /// Exited with the preflight status: alerted once, never restarted.
    fn misconfigured(&mut self, name: &str, o: &Observed, t: &mut Track) {
        if t.misconfigured.is_none() {
            let detail = if o.status_text.is_empty() { "preflight failed".to_string() } else { o.status_text.clone() };
            t.misconfigured = Some(detail.clone());
            self.plan.alerts.push(Alert::Misconfigured { unit: name.to_string(), detail });
        }
        t.was_up = false;
        t.health = Some(Health::Misconfigured);
    }

    fn went_down(&mut self, name: &str, o: &Observed, t: &mut Track) {
        // It went down on its own: a failure, whatever the exit status, since a wanted
        // worker only stops when told to.
        t.was_up = false;
        t.up_since = None;
        t.failures += 1;
        let delay = self.policy.restart.equal_jitter(t.failures, (self.unit)());
        t.start_at = Some(self.now + delay.as_millis() as u64);
        if t.failures >= self.policy.failing_after && !t.alerted {
            t.alerted = true;
            self.plan.alerts.push(Alert::Failing {
                unit: name.to_string(),
                failures: t.failures,
                last_exit: describe_exit(o, &[]),
            });
        }
    }

    /// Down and wanted: started once its time has come, else a wake-up is asked for then.
    fn start_when_due(&mut self, name: &str, o: &Observed, t: &mut Track, next_slot: &mut u64) {
        let start_at = *t.start_at.get_or_insert_with(|| {
            // First start: the next slot of the rate limit, jittered within it.
            let slot = (*next_slot).max(self.now);
            *next_slot = slot + self.spacing;
            slot + ((self.unit)() * self.spacing as f64) as u64
        });
        t.health = Some(if t.failures >= self.policy.failing_after {
            Health::Failing
        } else if t.failures > 0 {
            Health::Restarting
        } else {
            Health::Stopped
        });
        if start_at <= self.now {
            if o.active_state == "failed" {
                self.plan.ops.push(Op::ResetFailed(name.to_string()));
            }
            self.plan.ops.push(Op::Start(name.to_string()));
            if t.failures > 0 {
                t.restarts += 1;
            }
            t.start_at = None;
            t.up_since = Some(self.now);
            t.was_up = true; // optimistic: a start that fails shows as down next pass
            t.health = Some(Health::Starting);
        } else {
            self.plan.wake_at = Some(self.plan.wake_at.map_or(start_at, |w: u64| w.min(start_at)));
        }
    }

    /// Not wanted (and not held): stopped when up with no systemd job queued, a failed state
    /// cleared.
    fn unwanted(&mut self, name: &str, o: &Observed) {
        if o.is_up() && !o.has_job {
            self.plan.ops.push(Op::Stop(name.to_string()));
        } else if o.active_state == "failed" {
            self.plan.ops.push(Op::ResetFailed(name.to_string()));
        }
    }
}

/// The instance names of the units a configuration wants: `<class>-<n>` for n in 1..=workers.
pub fn desired_instances<'a>(classes: impl Iterator<Item = (&'a str, u32)>) -> Vec<String> {
    classes.flat_map(|(class, n)| (1..=n).map(move |i| format!("{class}-{i}"))).collect()
}

/// The class of an instance name (`inference-3` -> `inference`).
pub fn class_of_instance(instance: &str) -> Option<&str> {
    let (class, n) = instance.rsplit_once('-')?;
    (n.parse::<u32>().is_ok() && !class.is_empty()).then_some(class)
}

/// A worker unit's name: `<prefix>@<instance>.service`.
pub fn unit_name(prefix: &str, instance: &str) -> String {
    format!("{prefix}@{instance}.service")
}

/// The class of a worker unit's name (`drover-worker@inference-3.service` -> `inference`), or
/// an empty string for a unit that is not one of ours.
pub fn class_of_unit(prefix: &str, unit: &str) -> String {
    unit.strip_prefix(prefix)
        .and_then(|s| s.strip_prefix('@'))
        .and_then(|s| s.strip_suffix(".service"))
        .and_then(class_of_instance)
        .unwrap_or("")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            restart: Backoff::new(Duration::from_secs(2), Duration::from_secs(60)),
            stable_after: Duration::from_secs(30),
            failing_after: 3,
            start_rate: 10.0,
        }
    }

    fn obs(name: &str, active: &str) -> Observed {
        Observed { name: name.into(), load_state: "loaded".into(), active_state: active.into(), ..Default::default() }
    }

    fn exited(name: &str, code: i32) -> Observed {
        Observed { exec_main_code: CLD_EXITED, exec_main_status: code, ..obs(name, "failed") }
    }

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn map(obs: Vec<Observed>) -> BTreeMap<String, Observed> {
        obs.into_iter().map(|o| (o.name.clone(), o)).collect()
    }

    #[test]
    fn first_starts_are_spread_by_the_rate_limit_with_jitter() {
        let mut r = Reconciler::default();
        let names: Vec<String> = (1..=200).map(|i| format!("w-{i}")).collect();
        let desired: BTreeSet<String> = names.iter().cloned().collect();
        let mut starts: Vec<u64> = Vec::new();
        let mut now = 0;
        let mut u = 0.0;
        let mut rand = || {
            u = (u + 0.37) % 1.0;
            u
        };
        let mut observed = BTreeMap::new();
        while starts.len() < 200 && now < 60_000 {
            let plan = r.plan(&desired, &BTreeSet::new(), &observed, &policy(), now, &mut rand);
            for op in plan.ops {
                if let Op::Start(n) = op {
                    starts.push(now);
                    observed.insert(n.clone(), obs(&n, "active"));
                }
            }
            now += 10;
        }
        assert_eq!(starts.len(), 200);
        // 10 starts a second: never more than 10 (+1 at a boundary) in any one-second window.
        for (i, &s) in starts.iter().enumerate() {
            let in_window = starts[i..].iter().take_while(|&&t| t < s + 1000).count();
            assert!(in_window <= 11, "{in_window} starts within a second from {s} ms");
        }
        assert!(*starts.last().unwrap_or(&0) >= 19_000, "200 starts at 10/s take about 20 s");
    }

    /// `w-1` comes up at 0, then crashes `crashes` times, each after running `run_ms`, and is
    /// restarted each time its delay is over; `u` is every random draw.
    struct CrashLoop {
        /// The time of the last restart.
        now: u64,
        /// Each crash's restart delay.
        delays: Vec<u64>,
        alerts: Vec<Alert>,
        /// The ops of each restart pass.
        restarts: Vec<Vec<Op>>,
    }

    fn crash_loop(r: &mut Reconciler, u: f64, crashes: usize, run_ms: u64) -> CrashLoop {
        let desired = set(&["w-1"]);
        let p = policy();
        let mut rand = || u;
        let mut pass = |r: &mut Reconciler, o: Observed, now: u64| {
            r.plan(&desired, &BTreeSet::new(), &map(vec![o]), &p, now, &mut rand)
        };
        let mut run = CrashLoop { now: 0, delays: Vec::new(), alerts: Vec::new(), restarts: Vec::new() };
        pass(r, obs("w-1", "active"), run.now);
        for _ in 0..crashes {
            run.now += run_ms;
            let plan = pass(r, exited("w-1", 1), run.now);
            run.alerts.extend(plan.alerts);
            let wake = plan.wake_at.expect("a restart is scheduled");
            run.delays.push(wake - run.now);
            run.now = wake;
            run.restarts.push(pass(r, exited("w-1", 1), run.now).ops);
            pass(r, obs("w-1", "active"), run.now);
        }
        run
    }

    #[test]
    fn a_crashing_unit_backs_off_with_jitter_up_to_the_cap_then_is_failing() {
        let mut r = Reconciler::default();
        // Running, then it crashes again and again.
        let run = crash_loop(&mut r, 0.5, 8, 1000);
        for ops in &run.restarts {
            assert_eq!(ops, &vec![Op::ResetFailed("w-1".into()), Op::Start("w-1".into())]);
        }
        // Equal jitter at u = 0.5: three quarters of 2 s, 4 s, 8 s, ... capped at 60 s.
        assert_eq!(run.delays, vec![1500, 3000, 6000, 12000, 24000, 45000, 45000, 45000]);
        assert_eq!(r.tracks["w-1"].health, Some(Health::Failing));
        let alerts = run.alerts;
        assert_eq!(alerts.len(), 1, "one failing alert, not one per crash: {alerts:?}");
        assert!(matches!(&alerts[0], Alert::Failing { failures: 3, .. }));
    }

    #[test]
    fn a_stable_run_resets_the_backoff_and_resolves_the_alert() {
        let mut r = Reconciler::default();
        let now = crash_loop(&mut r, 0.0, 3, 100).now;
        assert_eq!(r.tracks["w-1"].failures, 3);
        let observed = map(vec![obs("w-1", "active")]);
        let plan = r.plan(&set(&["w-1"]), &BTreeSet::new(), &observed, &policy(), now + 31_000, &mut || 0.0);
        assert_eq!(plan.alerts, vec![Alert::Recovered { unit: "w-1".into() }]);
        assert_eq!(r.tracks["w-1"].failures, 0);
        assert_eq!(r.tracks["w-1"].health, Some(Health::Healthy));
    }

    #[test]
    fn a_misconfigured_unit_is_not_restarted() {
        let mut r = Reconciler::default();
        let desired = set(&["w-1"]);
        let mut zero = || 0.0;
        let mut bad = exited("w-1", EXIT_MISCONFIGURED);
        bad.status_text = "misconfigured: preflight check [\"test\"] failed".into();
        r.plan(&desired, &BTreeSet::new(), &map(vec![obs("w-1", "active")]), &policy(), 0, &mut zero);
        let plan = r.plan(&desired, &BTreeSet::new(), &map(vec![bad.clone()]), &policy(), 100, &mut zero);
        assert!(plan.ops.is_empty() && plan.wake_at.is_none(), "{plan:?}");
        assert!(matches!(&plan.alerts[..], [Alert::Misconfigured { detail, .. }] if detail.contains("preflight")));
        let plan = r.plan(&desired, &BTreeSet::new(), &map(vec![bad]), &policy(), 100_000, &mut zero);
        assert!(plan.ops.is_empty() && plan.alerts.is_empty(), "still left alone, alerted once");
        assert_eq!(r.tracks["w-1"].health, Some(Health::Misconfigured));
    }

    #[test]
    fn running_units_are_adopted_and_surplus_units_are_stopped() {
        let mut r = Reconciler::default();
        let desired = set(&["w-1", "w-2"]);
        let observed = map(vec![obs("w-1", "active"), obs("w-2", "active"), obs("w-3", "active"), exited("w-4", 1)]);
        let plan = r.plan(&desired, &BTreeSet::new(), &observed, &policy(), 0, &mut || 0.0);
        assert_eq!(plan.ops, vec![Op::Stop("w-3".into()), Op::ResetFailed("w-4".into())]);
        assert_eq!(r.tracks["w-1"].health, Some(Health::Healthy));
        assert!(!r.tracks.contains_key("w-3"));
    }

    #[test]
    fn unknown_and_transitional_states_are_carried_not_acted_on() {
        let mut r = Reconciler::default();
        let desired = set(&["w-1", "w-2", "w-3"]);
        let mut queued = obs("w-3", "inactive");
        queued.has_job = true;
        let observed = map(vec![obs("w-1", "dead-before-auto-restart"), obs("w-2", "deactivating"), queued]);
        let plan = r.plan(&desired, &BTreeSet::new(), &observed, &policy(), 0, &mut || 0.0);
        assert!(plan.ops.is_empty(), "{plan:?}");
        assert_eq!(r.tracks["w-2"].health, Some(Health::Stopping));
    }

    #[test]
    fn instance_names() {
        assert_eq!(desired_instances([("a", 2), ("b-c", 1)].into_iter()), vec!["a-1", "a-2", "b-c-1"]);
        assert_eq!(class_of_instance("b-c-12"), Some("b-c"));
        assert_eq!(class_of_instance("nope"), None);
        assert_eq!(class_of_instance("x-y"), None);
    }
}
