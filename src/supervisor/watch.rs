//! The supervisor's view of the jobs: its own host's job events feed its metrics, status,
//! probes and its own latency drift; the fleet-wide analysis (quarantines, pauses, suspects,
//! drift, stalls and SLA per class and tenant, verdicts) runs in the fleet's judge, which the
//! broker elects among the supervisors (`crate::io::judge`) and which this supervisor becomes
//! when the judge's queue delivers to it. Applies what the judge decides for this host and
//! delivers the alerts to the log, `/metrics`, Alertmanager, the webhook and `drover alerts`.

use super::orders::{track_moves, write_atomically, Ctx};
use super::FromEvents;
use crate::alerts::{self, Alert, AlertBook, Condition, Transition};
use crate::config::Config;
use crate::drift::DetectorConfig;
use crate::events::{EventKind, JobEvent};
use crate::fleet_judge::{self, FleetJudge, FleetJudgeConfig, Forget, HostReport, News};
use crate::io::amqp::{BrokerError, Link};
use crate::io::clock::now_ms;
use crate::io::control::StatusReport;
use crate::io::{judge as seat, metrics as m};
use crate::job::rfc3339;
use crate::judge::{HoldKey, HostJudgment, HostView, Judge, JudgeConfig, Kept, ProbeStep};
use crate::latency::{Baselines, LatencyWatch, WatchConfig};
use crate::maintenance::{Kind, Order, Scope};
use crate::reconcile::{class_of_unit, unit_name};
use crate::tasks::Tasks;
use crate::timeline::FirstFailures;
use futures_lite::StreamExt;
use lapin::options::BasicAckOptions;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Consumes this host's job events and stands for the fleet's judge until cancelled,
/// reconnecting when the broker goes away.
pub async fn watch_jobs(
    cfg: Config,
    into: Arc<Mutex<FromEvents>>,
    report: Arc<Mutex<StatusReport>>,
    ctx: Arc<Ctx>,
    tasks: Tasks,
) {
    let cancel = tasks.token();
    let mut w = Watcher::new(cfg, into, report, ctx, &tasks);
    let mut link = Link::new(&w.cfg.broker, "drover supervise");
    let mut tick = tokio::time::interval(w.cfg.alerts.evaluate_every);
    while !cancel.is_cancelled() {
        if link.ensure_up(None, cancel).await.is_err() {
            break;
        }
        let r = w.session(&mut link, &mut tick, cancel).await;
        if let Some(j) = w.judge.take() {
            // Whatever the outcome, the seat is lost with the channel: keep what the next
            // judge needs (it may be this supervisor again, from the same snapshot).
            if link.is_up() {
                let _ = seat::save_snapshot(&mut link, &w.cfg, &j.fj.snapshot(now_ms())).await;
            }
            tracing::info!("no longer the fleet's judge");
        }
        match r {
            Ok(()) => break,
            Err(e) => {
                tracing::warn!("job events: {e}; reconnecting");
                link.mark_down();
            }
        }
    }
    save_baselines(&w.baselines_path, &w.watch.snapshot());
}

/// The judge's seat, while this supervisor holds it.
struct Seat {
    fj: FleetJudge,
    /// Jobs moved away by a host's drain or quarantine, followed to where they start again
    /// (one host sees only its own events): the moves seen, the host each came from, and the
    /// destinations found, for each source host's next judgment.
    moves: Arc<Mutex<super::orders::Maintenance>>,
    moved_from: std::collections::HashMap<String, String>,
    found: BTreeMap<String, Vec<crate::maintenance::Moved>>,
    /// The snapshot last written (its lasting part) and when.
    saved: String,
    saved_at: Instant,
}

impl Seat {
    /// Where a job a host moved away started again (as `track_moves` does on one host, here
    /// over the fleet's events): a requeue is tracked as its own host's, a start as anyone's.
    fn follow_move(&mut self, e: &JobEvent) {
        const KEPT: usize = 10_000;
        let Some(job) = e.job_id.clone() else { return };
        let from = match e.event {
            EventKind::Requeued => {
                if self.moved_from.len() >= KEPT {
                    self.moved_from.clear();
                }
                self.moved_from.insert(job.clone(), e.host.clone());
                e.host.as_str()
            }
            EventKind::Started => "",
            _ => return,
        };
        if let Some(mv) = track_moves(&self.moves, e, from) {
            if let Some(host) = self.moved_from.get(&job) {
                self.found.entry(host.clone()).or_default().push(mv);
            }
        }
    }
}

struct Watcher {
    cfg: Config,
    into: Arc<Mutex<FromEvents>>,
    report: Arc<Mutex<StatusReport>>,
    ctx: Arc<Ctx>,
    /// This host's own latency (its drift against its own baseline).
    watch: LatencyWatch,
    /// This host's probes and holds (a hold doubles when the same unit is held again): fed no
    /// evidence, only asked about this host's orders.
    local: Judge,
    book: AlertBook,
    /// Alertmanagers and the webhook.
    sinks: crate::io::alertmanager::Sinks,
    /// Where the holds go, and the JSON last written there.
    verdicts_path: PathBuf,
    kept_json: String,
    baselines_path: PathBuf,
    last_save: Instant,
    first_failures: FirstFailures,
    /// For the judge's next report: what this host forgot, classes to rebaseline fleet-wide.
    forget: Vec<Forget>,
    rebaseline: Vec<String>,
    /// The fleet's alerts as the judge's news last said them.
    fleet_firing: Vec<Alert>,
    judge: Option<Seat>,
}

impl Watcher {
    fn new(
        cfg: Config,
        into: Arc<Mutex<FromEvents>>,
        report: Arc<Mutex<StatusReport>>,
        ctx: Arc<Ctx>,
        tasks: &Tasks,
    ) -> Watcher {
        // What a restart must not forget: how long each unit's or class's last hold was (they
        // double). The blames live with the judge, in the broker.
        let verdicts_path = cfg.alerts.state_dir.join(format!("{}-verdicts.json", cfg.broker.prefix));
        let kept = std::fs::read(&verdicts_path).ok().and_then(|b| serde_json::from_slice::<Kept>(&b).ok());
        let local = Judge::new(judge_config(&cfg), kept.unwrap_or_default());
        let baselines_path = cfg.alerts.state_dir.join(format!("{}-baselines.json", cfg.broker.prefix));
        let saved = std::fs::read(&baselines_path).ok().and_then(|b| serde_json::from_slice::<Baselines>(&b).ok());
        if saved.is_some() {
            tracing::info!("latency baselines restored from {}", baselines_path.display());
        }
        let watch = LatencyWatch::new(watch_config(&cfg), &cfg.host, cfg.classes.keys().cloned(), saved);
        let sinks = crate::io::alertmanager::sinks(&cfg, tasks);
        Watcher {
            cfg,
            into,
            report,
            ctx,
            watch,
            local,
            book: AlertBook::default(),
            sinks,
            verdicts_path,
            kept_json: String::new(),
            baselines_path,
            last_save: Instant::now(),
            first_failures: FirstFailures::default(),
            forget: Vec::new(),
            rebaseline: Vec::new(),
            fleet_firing: Vec::new(),
            judge: None,
        }
    }

    /// One connection's worth: this host's job events, what the judge says to this host, the
    /// judge's queue (delivered here only while this supervisor is the judge), and the
    /// periodic evaluation. Returns `Ok` only when cancelled.
    async fn session(
        &mut self,
        link: &mut Link,
        tick: &mut tokio::time::Interval,
        cancel: &CancellationToken,
    ) -> Result<(), BrokerError> {
        let ((_c1, mut own), (_c2, mut judged)) = seat::hear_own(link, &self.cfg).await?;
        let (seat_chan, mut fleet) = seat::stand_for_judge(link, &self.cfg).await?;
        loop {
            tokio::select! {
                d = own.next() => {
                    let Some(Ok(d)) = d else {
                        return Err(BrokerError::Unavailable("event consumer closed".into()));
                    };
                    for e in crate::events::parse(&d.data).unwrap_or_default() {
                        self.on_own_event(&e);
                    }
                }
                d = judged.next() => {
                    let Some(Ok(d)) = d else {
                        return Err(BrokerError::Unavailable("judge's consumer closed".into()));
                    };
                    if d.routing_key.as_str() == seat::NEWS_KEY {
                        if let Ok(n) = serde_json::from_slice::<News>(&d.data) {
                            self.on_news(n);
                        }
                    } else if let Ok(j) = serde_json::from_slice::<HostJudgment>(&d.data) {
                        self.apply(j);
                    }
                }
                d = fleet.next() => {
                    let Some(Ok(d)) = d else {
                        return Err(BrokerError::Unavailable("judge's queue consumer closed".into()));
                    };
                    if self.judge.is_none() {
                        self.take_seat(&seat_chan).await?;
                    }
                    let urgent = self.on_fleet_delivery(&d);
                    let _ = d.acker.ack(BasicAckOptions::default()).await;
                    if urgent {
                        self.judge_fleet(link).await;
                    }
                }
                _ = tick.tick() => self.evaluate(link).await,
                _ = cancel.cancelled() => return Ok(()),
            }
        }
    }

    /// The judge's queue delivered to this supervisor: the broker made it the fleet's judge.
    /// It goes on from the last judge's snapshot.
    async fn take_seat(&mut self, chan: &lapin::Channel) -> Result<(), BrokerError> {
        let snapshot = seat::load_snapshot(chan, &self.cfg).await?;
        match &snapshot {
            Some(s) => tracing::info!(
                "this supervisor is now the fleet's judge, going on from {}'s state of {}",
                s.judge,
                rfc3339(s.at_ms)
            ),
            None => tracing::info!("this supervisor is now the fleet's judge (no earlier judge's state)"),
        }
        self.ctx.timeline.record("drover", "fleet judge", "elected by the broker (single active consumer)", "");
        let cfg = FleetJudgeConfig {
            judge: judge_config(&self.cfg),
            watch: watch_config(&self.cfg),
            fire_after: self.cfg.alerts.fire_after,
            resolve_after: self.cfg.alerts.resolve_after,
            quarantine: self.cfg.quarantine.enabled,
            settle: self.cfg.alerts.evaluate_every * 3,
        };
        let saved = snapshot.as_ref().map(|s| serde_json::to_string(&(&s.kept, &s.firing)).unwrap_or_default());
        self.judge = Some(Seat {
            fj: FleetJudge::new(cfg, snapshot),
            moves: Arc::default(),
            moved_from: std::collections::HashMap::new(),
            found: BTreeMap::new(),
            saved: saved.unwrap_or_default(),
            saved_at: Instant::now(),
        });
        // What the last judge had firing fires still: Alertmanager must go on hearing of it.
        if let Some(j) = &self.judge {
            self.sinks.still_firing(j.fj.firing());
        }
        Ok(())
    }

    /// A job event of the fleet's or a host's report, for the judge. Returns true when the
    /// verdicts must go out now (a worker vanished under a job, before its next delivery).
    fn on_fleet_delivery(&mut self, d: &lapin::message::Delivery) -> bool {
        let Some(j) = self.judge.as_mut() else { return false };
        if d.properties.kind().as_ref().is_some_and(|k| k.as_str() == seat::REPORT_TYPE) {
            if let Ok(r) = serde_json::from_slice::<HostReport>(&d.data) {
                j.fj.report(r, now_ms());
            }
            return false;
        }
        let mut changed = false;
        for e in crate::events::parse(&d.data).unwrap_or_default() {
            j.follow_move(&e);
            changed |= j.fj.observe(&e);
        }
        changed
    }

    /// One of this host's job events: metrics, first failures, probes, moves, own latency.
    fn on_own_event(&mut self, e: &JobEvent) {
        record_event(e, &self.into);
        if let Some(what) = self.first_failures.note(e, now_ms()) {
            self.ctx.timeline.record("drover", &what, e.reason.as_deref().unwrap_or(""), &e.unit);
        }
        self.watch.observe(e);
        if let (crate::events::EventKind::Succeeded, Some(d)) = (e.event, e.duration_s) {
            if let Ok(mut m) = self.ctx.maint.lock() {
                m.charts.entry(e.class.clone()).or_default().duration(d);
            }
        }
        self.settle_probes(e);
        if let Some(mv) = track_moves(&self.ctx.maint, e, &self.cfg.host) {
            let to = mv.to.unwrap_or_default();
            let why =
                if mv.why.is_empty() { "moved away by a drain".to_string() } else { format!("moved away: {}", mv.why) };
            self.ctx.timeline.record("drover", &format!("job {} restarted on {to}", mv.job), &why, &mv.from);
        }
    }

    /// The judge's news: the fleet's verdicts for this host's workers, its alerts for status.
    fn on_news(&mut self, n: News) {
        if n.v != fleet_judge::VERSION {
            return;
        }
        if let Ok(mut m) = self.ctx.maint.lock() {
            m.verdicts.expire(now_ms());
            n.verdicts.into_iter().for_each(|v| m.verdicts.update(v));
        }
        self.fleet_firing = n.firing;
        if let Ok(mut r) = self.report.lock() {
            r.firing = self.book.firing().into_iter().cloned().chain(self.fleet_firing.iter().cloned()).collect();
        }
    }

    /// What the judge decided for this host, put in force: its orders (held as this host's
    /// holds say), suspect cordons lifted, shadow mode's notes.
    fn apply(&mut self, j: HostJudgment) {
        if j.host != self.cfg.host {
            return;
        }
        let now = now_ms();
        for want in j.wants {
            let said = match (&want.kind, &want.scope) {
                (_, Scope::Class(c)) => format!("ALERT class {c} paused on {}: {}", self.cfg.host, want.reason),
                (Kind::Cordon, Scope::Unit(u) | Scope::Host(u)) => {
                    format!("{u} cordoned as a suspect: {}", want.reason)
                }
                (_, Scope::Unit(u) | Scope::Host(u)) => format!("ALERT {u} quarantined: {}", want.reason),
            };
            let local = &mut self.local;
            let key = HoldKey::of(&want.scope, want.scope.unit().unwrap_or(""));
            let held = want.kind != Kind::Cordon;
            if self.ctx.add_own(want.kind, want.scope, &want.reason, || held.then(|| local.next_hold(key, now))) {
                tracing::error!("{said}");
            }
        }
        for scope in j.lifts {
            if self.ctx.lift_own(Kind::Cordon, &scope, "the suspect's jobs completed normally") {
                tracing::info!("{scope}: suspect cordon lifted, its jobs completed normally");
            }
        }
        for mv in j.moved {
            let Some(to) = mv.to.clone() else { continue };
            let fresh = self.ctx.maint.lock().is_ok_and(|mut m| {
                let unknown = m.moved.iter_mut().rev().find(|held| held.job == mv.job && held.to.is_none());
                unknown.map(|held| held.to = Some(to.clone())).is_some()
            });
            if fresh {
                let why = if mv.why.is_empty() {
                    "moved away by a drain".to_string()
                } else {
                    format!("moved away: {}", mv.why)
                };
                self.ctx.timeline.record("drover", &format!("job {} restarted on {to}", mv.job), &why, &mv.from);
            }
        }
        for note in j.shadow {
            tracing::warn!("shadow mode: {note}");
            self.ctx.timeline.record("drover", &format!("shadow mode: {note}"), "quarantine.enforce = false", "");
        }
    }

    /// Operators' requests for a new latency baseline: this host's detectors here, the
    /// fleet's at the judge (through the next report).
    fn rebaseline(&mut self, now: i64) {
        let asked: Vec<(String, bool)> =
            self.ctx.maint.lock().map(|mut m| std::mem::take(&mut m.rebaselines)).unwrap_or_default();
        for (class, host_only) in asked {
            match self.watch.rebaseline(&class, Some(self.cfg.host.as_str()), now) {
                Some(_) => tracing::info!("class {class}: new latency baseline on {}", self.cfg.host),
                None => tracing::warn!("new latency baseline asked for an unknown class {class}"),
            }
            if !host_only {
                self.rebaseline.push(class);
            }
        }
    }

    fn settle_probes(&mut self, e: &JobEvent) {
        for step in self.local.settle_probes(e, &self.orders(), now_ms()) {
            match step {
                ProbeStep::Again { unit } => {
                    if let Ok(mut m) = self.ctx.maint.lock() {
                        m.mem.probe_again(&unit);
                    }
                }
                ProbeStep::Settle { order, scope, passed, until_ms, what } => {
                    if self.ctx.settle_probe(&order, passed, until_ms, &what).is_none() {
                        continue;
                    }
                    if passed {
                        tracing::info!("{scope} lifted on {}: {what}", self.cfg.host);
                        let unit = (!matches!(scope, Scope::Class(_))).then(|| e.unit.clone());
                        self.forget.push(Forget { class: e.class.clone(), unit });
                    } else {
                        tracing::warn!("{scope} held again on {} until {}: {what}", self.cfg.host, rfc3339(until_ms));
                    }
                }
            }
        }
    }

    /// The periodic evaluation: this host's own conditions, its report to the judge, and the
    /// judge's evaluation when this supervisor is the judge; the alerts delivered, the status
    /// report and baselines.
    async fn evaluate(&mut self, link: &mut Link) {
        let did = what_drover_did(&self.report, &self.cfg.host);
        let now = now_ms();
        self.rebaseline(now);
        let conditions: Vec<Condition> = self
            .watch
            .evaluate(now, &BTreeMap::new(), &did)
            .into_iter()
            .filter(|c| !fleet_judge::fleet_wide(c))
            .collect();
        self.note_forgotten(now);
        let report = HostReport {
            v: fleet_judge::VERSION,
            at_ms: now,
            view: HostView {
                host: self.cfg.host.clone(),
                units: self.units(),
                orders: self.orders(),
                serving: self.serving(),
            },
            forget: std::mem::take(&mut self.forget),
            rebaseline: std::mem::take(&mut self.rebaseline),
            did,
        };
        if let Err(e) = seat::send_report(link, &self.cfg, &report).await {
            tracing::warn!("report to the fleet's judge not sent: {e}");
            self.forget = report.forget;
            self.rebaseline = report.rebaseline;
        }
        self.judge_fleet(link).await;
        self.keep_holds();
        self.raise(conditions, now);
        if let Ok(mut m) = self.ctx.maint.lock() {
            let now_s = now as f64 / 1000.0;
            m.expected_s =
                self.watch.classes().filter_map(|c| self.watch.expected_s(c, now_s).map(|e| (c.clone(), e))).collect();
            for class in self.watch.classes() {
                if let Some((score, baseline)) = self.watch.drift(class, now_s) {
                    m.charts.entry(class.clone()).or_default().score(now, score, baseline);
                }
            }
        }
        if let Ok(mut r) = self.report.lock() {
            r.firing = self.book.firing().into_iter().cloned().chain(self.fleet_firing.iter().cloned()).collect();
            r.resolved = self.book.resolved().to_vec();
        }
        if self.last_save.elapsed() >= Duration::from_secs(60) {
            save_baselines(&self.baselines_path, &self.watch.snapshot());
            self.last_save = Instant::now();
        }
    }

    /// Operators' releases and holds that ran out: those units (or classes) start from no
    /// evidence at the judge (the next report says so).
    fn note_forgotten(&mut self, now: i64) {
        let prefix = self.cfg.systemd.unit_prefix.clone();
        let released: Vec<String> =
            self.ctx.maint.lock().map(|mut m| std::mem::take(&mut m.released)).unwrap_or_default();
        for u in released {
            let full = if u.ends_with(".service") { u } else { unit_name(&prefix, &u) };
            self.forget.push(Forget { class: class_of_unit(&prefix, &full), unit: Some(full) });
        }
        for o in self.ctx.begin_probes(now) {
            match (&o.kind, &o.scope) {
                (Kind::Quarantine, Scope::Unit(u)) => {
                    self.forget.push(Forget { class: class_of_unit(&prefix, u), unit: Some(u.clone()) })
                }
                (Kind::Pause, Scope::Class(c)) => self.forget.push(Forget { class: c.clone(), unit: None }),
                _ => {}
            }
        }
    }

    /// The judge's evaluation, when this supervisor is the judge: each host's judgments and
    /// the news sent, the fleet's alerts delivered (once, here), the snapshot kept.
    async fn judge_fleet(&mut self, link: &mut Link) {
        let Some(j) = self.judge.as_mut() else { return };
        let mut backlog = BTreeMap::new();
        for class in self.cfg.classes.keys() {
            if let Ok(n) = link.backlog(class).await {
                backlog.insert(class.clone(), u64::from(n));
            }
        }
        let now = now_ms();
        let mut out = j.fj.evaluate(now, &backlog);
        for (host, moved) in std::mem::take(&mut j.found) {
            match out.judgments.iter_mut().find(|h| h.host == host) {
                Some(h) => h.moved = moved,
                None => out.judgments.push(HostJudgment { host, moved, ..Default::default() }),
            }
        }
        let snapshot = j.fj.snapshot(now);
        let lasting = serde_json::to_string(&(&snapshot.kept, &snapshot.firing)).unwrap_or_default();
        if lasting != j.saved || j.saved_at.elapsed() >= Duration::from_secs(60) {
            match seat::save_snapshot(link, &self.cfg, &snapshot).await {
                Ok(()) => (j.saved, j.saved_at) = (lasting, Instant::now()),
                Err(e) => tracing::warn!("the judge's state not kept in the broker: {e}"),
            }
        }
        for h in &out.judgments {
            if let Err(e) = seat::send_judgment(link, &self.cfg, h).await {
                tracing::warn!("judgment for {} not sent: {e}", h.host);
            }
        }
        if let Err(e) = seat::send_news(link, &self.cfg, &out.news).await {
            tracing::warn!("the fleet's verdicts not sent: {e}");
        }
        for t in &out.transitions {
            self.record_transition(t);
        }
    }

    /// Writes this host's holds when they changed since they were last written.
    fn keep_holds(&mut self) {
        let json = serde_json::to_string(self.local.kept()).unwrap_or_default();
        if json == self.kept_json {
            return;
        }
        match write_atomically(&self.verdicts_path, json.as_bytes()) {
            Ok(()) => self.kept_json = json,
            Err(e) => tracing::warn!("cannot save the quarantine holds to {}: {e}", self.verdicts_path.display()),
        }
    }

    /// The classes this host has a healthy unit for, taking jobs (not cordoned, drained,
    /// quarantined or probing: those show as such in the report).
    fn serving(&self) -> Vec<String> {
        let Ok(r) = self.report.lock() else { return Vec::new() };
        let classes: std::collections::BTreeSet<String> =
            r.units.iter().filter(|u| u.health == "healthy").map(|u| u.class.clone()).collect();
        classes.into_iter().collect()
    }

    /// Feeds this host's own conditions to its alert book; each change is recorded and delivered.
    fn raise(&mut self, conditions: Vec<Condition>, now: i64) {
        for c in conditions {
            let policy = fleet_judge::policy(&c.key.name, self.cfg.alerts.fire_after, self.cfg.alerts.resolve_after);
            if let Some(t) = self.book.update(c, policy, now) {
                self.record_transition(&t);
            }
        }
    }

    fn record_transition(&self, t: &Transition) {
        let (what, a) = match t {
            Transition::Fired(a) => ("alert fired", a),
            Transition::Resolved(a) => ("alert resolved", a),
        };
        self.ctx.timeline.record("drover", &format!("{what}: {}", a.key.name), &a.summary, a.key.label("class"));
        deliver(t, &self.cfg.host, &self.sinks.all);
    }

    fn orders(&self) -> Vec<Order> {
        self.ctx.maint.lock().map(|m| m.orders.clone()).unwrap_or_default()
    }

    /// This host's units with their classes.
    fn units(&self) -> Vec<(String, String)> {
        self.report
            .lock()
            .map(|r| r.units.iter().map(|u| (u.unit.clone(), u.class.clone())).collect())
            .unwrap_or_default()
    }
}

fn watch_config(cfg: &Config) -> WatchConfig {
    WatchConfig {
        detector: DetectorConfig { warmup: cfg.alerts.drift_warmup, ..DetectorConfig::default() },
        running_evidence: cfg.alerts.running_evidence,
        stall_gaps: cfg.alerts.stall_gaps,
        stall_min: cfg.alerts.stall_min,
    }
}

fn judge_config(cfg: &Config) -> JudgeConfig {
    JudgeConfig {
        host: cfg.host.clone(),
        unit_prefix: cfg.systemd.unit_prefix.clone(),
        classes: cfg.classes.keys().cloned().collect(),
        policy: crate::quarantine::Policy {
            min_failures: cfg.quarantine.min_failures,
            alpha: cfg.quarantine.alpha,
            ..Default::default()
        },
        hold_ms: cfg.quarantine.hold.as_millis() as u64,
        hold_max_ms: cfg.quarantine.hold_max.as_millis() as u64,
        suspects: cfg.quarantine.suspect_policy(),
    }
}

fn save_baselines(path: &Path, b: &Baselines) {
    if let Err(e) = write_atomically(path, &serde_json::to_vec(b).unwrap_or_default()) {
        tracing::warn!("cannot save latency baselines to {}: {e}", path.display());
    }
}

/// What the supervisor already did about each class on this host, for alert texts.
fn what_drover_did(report: &Arc<Mutex<StatusReport>>, host: &str) -> BTreeMap<String, String> {
    let Ok(r) = report.lock() else { return BTreeMap::new() };
    let mut by_class: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for u in &r.units {
        let mut notes = Vec::new();
        if matches!(u.health.as_str(), "failing" | "misconfigured" | "restarting") {
            notes.push(format!("{} is {}", u.unit, u.health));
        }
        if u.restarts > 0 {
            notes.push(format!("{} restarted {} time(s)", u.unit, u.restarts));
        }
        by_class.entry(u.class.clone()).or_default().extend(notes);
    }
    by_class
        .into_iter()
        .map(|(c, notes)| {
            let text = if notes.is_empty() {
                format!("nothing on {host}")
            } else {
                format!("on {host}: {}", notes.join("; "))
            };
            (c, text)
        })
        .collect()
}

fn deliver(t: &alerts::Transition, host: &str, sinks: &[mpsc::Sender<alerts::Transition>]) {
    let (a, firing) = match t {
        alerts::Transition::Fired(a) => (a, true),
        alerts::Transition::Resolved(a) => (a, false),
    };
    if firing {
        tracing::warn!("ALERT {} {:?}: {} ({:?})", a.key.name, a.key.labels, a.summary, a.annotations);
    } else {
        tracing::info!("resolved: {} {:?}: {}", a.key.name, a.key.labels, a.summary);
    }
    metrics::gauge!(
        m::ALERTS_FIRING,
        "alertname" => a.key.name.clone(),
        "class" => a.key.label("class").to_string(),
        "host" => if a.key.label("host").is_empty() { host.to_string() } else { a.key.label("host").to_string() },
        "severity" => a.severity.as_str()
    )
    .set(if firing { 1.0 } else { 0.0 });
    for tx in sinks {
        if tx.try_send(t.clone()).is_err() {
            tracing::error!("alert delivery queue full: {} not delivered", a.key.name);
        }
    }
}

fn record_event(e: &JobEvent, into: &Arc<Mutex<FromEvents>>) {
    let class = e.class.clone();
    match e.event {
        EventKind::Started => {
            if let Some(w) = e.queue_wait_s {
                metrics::histogram!(m::JOB_QUEUE_WAIT_SECONDS, "class" => class).record(w);
            }
        }
        EventKind::Succeeded
        | EventKind::RetryScheduled
        | EventKind::DeadLettered
        | EventKind::Requeued
        | EventKind::AckLost => {
            if e.event == EventKind::Succeeded {
                let id = e.job_id.as_deref().unwrap_or("");
                let first = into.lock().map(|mut f| f.first_completion(id)).unwrap_or(true);
                if !first {
                    tracing::info!(
                        "job {id} succeeded again on {} (its first acknowledgement was lost): counted once",
                        e.unit
                    );
                    return;
                }
            }
            let outcome = e.outcome.clone().unwrap_or_else(|| "undecodable".into());
            metrics::counter!(m::JOBS_TOTAL, "class" => class.clone(), "outcome" => outcome.clone(), "result" => e.event.as_str())
                .increment(1);
            if e.event == EventKind::DeadLettered {
                let reason = e.reason.clone().unwrap_or_else(|| "unknown".into());
                metrics::counter!(m::DEAD_LETTERS_TOTAL, "class" => class.clone(), "reason" => reason).increment(1);
            }
            if let Some(d) = e.duration_s {
                metrics::histogram!(m::JOB_SECONDS, "class" => class, "outcome" => outcome).record(d);
            }
        }
        EventKind::Misconfigured => {
            let text = [e.reason.as_deref(), e.detail.as_deref()].into_iter().flatten().collect::<Vec<_>>().join(": ");
            if let Ok(mut f) = into.lock() {
                f.misconfigured.insert(e.unit.clone(), text);
            }
        }
        EventKind::Failed | EventKind::Submitted | EventKind::Progress => {}
    }
}
