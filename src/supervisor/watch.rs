//! The supervisor's view of the fleet's jobs: consumes every job event and feeds the latency
//! watch (drift, jobs running long, deadlines at risk, stalls) and this host's judge
//! (quarantines, pauses, probes, verdicts); applies what they decide, and delivers their alerts
//! to the log, `/metrics`, the webhook and `drover alerts`.

use super::orders::{track_moves, write_atomically, Ctx};
use super::FromEvents;
use crate::alerts::{self, AlertBook, AlertKey, Condition, Transition};
use crate::config::Config;
use crate::drift::DetectorConfig;
use crate::events::{EventKind, JobEvent};
use crate::io::amqp::{BrokerError, Link};
use crate::io::clock::now_ms;
use crate::io::control::StatusReport;
use crate::io::{fleet, metrics as m};
use crate::job::rfc3339;
use crate::judge::{AlertKind, Judge, JudgeConfig, Kept, ProbeStep};
use crate::latency::{self, Baselines, LatencyWatch, WatchConfig};
use crate::maintenance::{Kind, Order, Scope};
use crate::tasks::Tasks;
use crate::timeline::FirstFailures;
use futures_lite::StreamExt;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Consumes the fleet's job events until cancelled, reconnecting when the broker goes away.
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
        match w.session(&mut link, &mut tick, cancel).await {
            Ok(()) => break,
            Err(e) => {
                tracing::warn!("job events: {e}; reconnecting");
                link.mark_down();
            }
        }
    }
    save_baselines(&w.baselines_path, &w.watch.snapshot());
}

struct Watcher {
    cfg: Config,
    into: Arc<Mutex<FromEvents>>,
    report: Arc<Mutex<StatusReport>>,
    ctx: Arc<Ctx>,
    watch: LatencyWatch,
    judge: Judge,
    book: AlertBook,
    webhook: Option<mpsc::Sender<Transition>>,
    /// Where the judge's lasting state goes, and the JSON last written there.
    verdicts_path: PathBuf,
    kept_json: String,
    baselines_path: PathBuf,
    last_save: Instant,
    first_failures: FirstFailures,
}

impl Watcher {
    fn new(
        cfg: Config,
        into: Arc<Mutex<FromEvents>>,
        report: Arc<Mutex<StatusReport>>,
        ctx: Arc<Ctx>,
        tasks: &Tasks,
    ) -> Watcher {
        // What a restart must not forget: the jobs each quarantine forgave (fair charging, for a
        // day after a release) and how long each unit's or class's last hold was (they double).
        let verdicts_path = cfg.alerts.state_dir.join(format!("{}-verdicts.json", cfg.broker.prefix));
        let kept = std::fs::read(&verdicts_path).ok().and_then(|b| serde_json::from_slice::<Kept>(&b).ok());
        let judge = Judge::new(judge_config(&cfg), kept.unwrap_or_default());
        let baselines_path = cfg.alerts.state_dir.join(format!("{}-baselines.json", cfg.broker.prefix));
        let saved = std::fs::read(&baselines_path).ok().and_then(|b| serde_json::from_slice::<Baselines>(&b).ok());
        if saved.is_some() {
            tracing::info!("latency baselines restored from {}", baselines_path.display());
        }
        let watch_cfg = WatchConfig {
            detector: DetectorConfig { warmup: cfg.alerts.drift_warmup, ..DetectorConfig::default() },
            running_evidence: cfg.alerts.running_evidence,
            stall_gaps: cfg.alerts.stall_gaps,
            stall_min: cfg.alerts.stall_min,
        };
        let watch = LatencyWatch::new(watch_cfg, &cfg.host, cfg.classes.keys().cloned(), saved);
        let webhook = cfg
            .alerts
            .webhook
            .as_deref()
            .and_then(|u| alerts::parse_webhook_url(u).ok())
            .map(|t| crate::io::webhook::spawn(t, cfg.host.clone(), tasks));
        Watcher {
            cfg,
            into,
            report,
            ctx,
            watch,
            judge,
            book: AlertBook::default(),
            webhook,
            verdicts_path,
            kept_json: String::new(),
            baselines_path,
            last_save: Instant::now(),
            first_failures: FirstFailures::default(),
        }
    }

    /// One connection's worth: the fleet's job events, workers' requests for verdicts, and the
    /// periodic evaluation. Returns `Ok` only when cancelled.
    async fn session(
        &mut self,
        link: &mut Link,
        tick: &mut tokio::time::Interval,
        cancel: &CancellationToken,
    ) -> Result<(), BrokerError> {
        fleet::declare(link, &self.cfg).await?;
        let events_exchange = link.names.events();
        let (_chan, mut consumer, _) = link.private_consumer(Some((&events_exchange, "#")), "supervisor").await?;
        let control = fleet::exchange(&self.cfg);
        let (_chan2, mut asks, _) =
            link.private_consumer(Some((&control, fleet::VERDICTS_REQUEST)), "verdict-requests").await?;
        loop {
            tokio::select! {
                a = asks.next() => {
                    let Some(Ok(a)) = a else {
                        return Err(BrokerError::Unavailable("verdict request consumer closed".into()));
                    };
                    if let Some(reply_to) = a.properties.reply_to() {
                        let verdicts = self.verdicts(now_ms());
                        if let Err(e) = fleet::answer_verdicts(link, reply_to.as_str(), &verdicts).await {
                            tracing::warn!("verdicts not sent to a worker: {e}");
                        }
                    }
                }
                d = consumer.next() => {
                    let Some(Ok(d)) = d else {
                        return Err(BrokerError::Unavailable("event consumer closed".into()));
                    };
                    if let Ok(e) = serde_json::from_slice::<JobEvent>(&d.data) {
                        if self.on_event(&e) {
                            self.publish_verdicts(link, now_ms()).await;
                        }
                    }
                }
                _ = tick.tick() => self.evaluate(link).await,
                _ = cancel.cancelled() => return Ok(()),
            }
        }
    }

    /// One job event of the fleet's. Returns true when the verdicts must be published now: a
    /// worker died under a job (or a late event says it did not), before the job's next delivery.
    /// Operators' requests for a new latency baseline, applied to the watch.
    fn rebaseline(&mut self, now: i64) {
        let asked: Vec<(String, bool)> =
            self.ctx.maint.lock().map(|mut m| std::mem::take(&mut m.rebaselines)).unwrap_or_default();
        for (class, host_only) in asked {
            let host = host_only.then_some(self.cfg.host.as_str());
            match self.watch.rebaseline(&class, host, now) {
                Some(n) => tracing::info!("class {class}: new latency baseline ({n} detector(s) started afresh)"),
                None => tracing::warn!("new latency baseline asked for an unknown class {class}"),
            }
        }
    }

    fn on_event(&mut self, e: &JobEvent) -> bool {
        let mine = e.host == self.cfg.host;
        if mine {
            record_event(e, &self.into);
            if let Some(what) = self.first_failures.note(e, now_ms()) {
                self.ctx.timeline.record("drover", &what, e.reason.as_deref().unwrap_or(""), &e.unit);
            }
        }
        self.watch.observe(e);
        let vanished_changed = self.judge.observe(e);
        if mine {
            self.settle_probes(e);
        }
        if let Some(mv) = track_moves(&self.ctx.maint, e, &self.cfg.host) {
            let to = mv.to.unwrap_or_default();
            let why =
                if mv.why.is_empty() { "moved away by a drain".to_string() } else { format!("moved away: {}", mv.why) };
            self.ctx.timeline.record("drover", &format!("job {} restarted on {to}", mv.job), &why, &mv.from);
        }
        vanished_changed
    }

    fn settle_probes(&mut self, e: &JobEvent) {
        for step in self.judge.settle_probes(e, &self.orders(), now_ms()) {
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
                        self.judge.lifted(&scope, e);
                    } else {
                        tracing::warn!("{scope} held again on {} until {}: {what}", self.cfg.host, rfc3339(until_ms));
                    }
                }
            }
        }
    }

    /// The periodic evaluation: alert conditions from the latency watch and the judge, the
    /// verdicts published and kept, the alerts delivered, the status report and baselines.
    async fn evaluate(&mut self, link: &mut Link) {
        let mut backlog = BTreeMap::new();
        for class in self.cfg.classes.keys() {
            if let Ok(n) = link.backlog(class).await {
                backlog.insert(class.clone(), u64::from(n));
            }
        }
        let did = what_drover_did(&self.report, &self.cfg.host);
        let now = now_ms();
        self.rebaseline(now);
        let mut conditions = self.watch.evaluate(now, &backlog, &did);
        if self.cfg.quarantine.enabled {
            conditions.extend(self.judge_workers(now));
        }
        self.publish_verdicts(link, now).await;
        self.keep_verdicts();
        self.raise(conditions, now);
        if let Ok(mut m) = self.ctx.maint.lock() {
            let now_s = now as f64 / 1000.0;
            m.expected_s =
                self.watch.classes().filter_map(|c| self.watch.expected_s(c, now_s).map(|e| (c.clone(), e))).collect();
        }
        if let Ok(mut r) = self.report.lock() {
            r.firing = self.book.firing().into_iter().cloned().collect();
            r.resolved = self.book.resolved().to_vec();
        }
        if self.last_save.elapsed() >= Duration::from_secs(60) {
            save_baselines(&self.baselines_path, &self.watch.snapshot());
            self.last_save = Instant::now();
        }
    }

    /// Bad workers versus bad jobs on this host: operators' releases and holds that ran out
    /// are told to the judge, the quarantines and pauses it wants are put in force; returns
    /// the alert conditions of the judge's orders.
    fn judge_workers(&mut self, now: i64) -> Vec<Condition> {
        let released: Vec<String> =
            self.ctx.maint.lock().map(|mut m| std::mem::take(&mut m.released)).unwrap_or_default();
        self.judge.released(&released);
        self.judge.probing(&self.ctx.begin_probes(now));
        for want in self.judge.evaluate(&self.units(), &self.orders(), now) {
            let said = match (&want.kind, &want.scope) {
                (_, Scope::Class(c)) => format!("ALERT class {c} paused on {}: {}", self.cfg.host, want.reason),
                (Kind::Cordon, Scope::Unit(u) | Scope::Host(u)) => {
                    format!("{u} cordoned as a suspect: {}", want.reason)
                }
                (_, Scope::Unit(u) | Scope::Host(u)) => format!("ALERT {u} quarantined: {}", want.reason),
            };
            let until = (want.kind != Kind::Cordon).then_some(want.until_ms);
            if self.ctx.add_own(want.kind, want.scope, &want.reason, || until) {
                tracing::error!("{said}");
            }
        }
        for scope in self.judge.take_lifts() {
            if self.ctx.lift_own(Kind::Cordon, &scope, "the suspect's jobs completed normally") {
                tracing::info!("{scope}: suspect cordon lifted, its jobs completed normally");
            }
        }
        for note in self.judge.take_shadow() {
            tracing::warn!("shadow mode: {note}");
            self.ctx.timeline.record("drover", &format!("shadow mode: {note}"), "quarantine.enforce = false", "");
        }
        let firing: Vec<AlertKey> = self.book.keys();
        self.judge.conditions(&self.orders(), &firing)
    }

    fn verdicts(&mut self, now: i64) -> crate::verdicts::HostVerdicts {
        let serving = self.serving();
        self.judge.verdicts(&self.orders(), &self.units(), serving, now)
    }

    /// The classes this host has a healthy unit for, taking jobs (not cordoned, drained,
    /// quarantined or probing: those show as such in the report).
    fn serving(&self) -> Vec<String> {
        let Ok(r) = self.report.lock() else { return Vec::new() };
        let classes: std::collections::BTreeSet<String> =
            r.units.iter().filter(|u| u.health == "healthy").map(|u| u.class.clone()).collect();
        classes.into_iter().collect()
    }

    async fn publish_verdicts(&mut self, link: &mut Link, now: i64) {
        let verdicts = self.verdicts(now);
        if let Err(e) = fleet::publish_verdicts(link, &self.cfg, &verdicts).await {
            tracing::warn!("verdicts not published: {e}");
        }
    }

    /// Writes the judge's lasting state when it changed since it was last written.
    fn keep_verdicts(&mut self) {
        let json = serde_json::to_string(self.judge.kept()).unwrap_or_default();
        if json == self.kept_json {
            return;
        }
        match write_atomically(&self.verdicts_path, json.as_bytes()) {
            Ok(()) => self.kept_json = json,
            Err(e) => tracing::warn!("cannot save the quarantine verdicts to {}: {e}", self.verdicts_path.display()),
        }
    }

    /// Feeds the conditions to the alert book; each change is recorded and delivered.
    fn raise(&mut self, conditions: Vec<Condition>, now: i64) {
        for c in conditions {
            let judged = AlertKind::judged(&c.key.name);
            let policy = alerts::Policy {
                fire_after: if judged || c.key.name == latency::DRIFT {
                    Duration::ZERO
                } else {
                    self.cfg.alerts.fire_after
                },
                resolve_after: if judged { Duration::ZERO } else { self.cfg.alerts.resolve_after },
            };
            if let Some(t) = self.book.update(c, policy, now) {
                let (what, a) = match &t {
                    Transition::Fired(a) => ("alert fired", a),
                    Transition::Resolved(a) => ("alert resolved", a),
                };
                self.ctx.timeline.record(
                    "drover",
                    &format!("{what}: {}", a.key.name),
                    &a.summary,
                    a.key.label("class"),
                );
                deliver(&t, &self.cfg.host, self.webhook.as_ref());
            }
        }
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

fn deliver(t: &alerts::Transition, host: &str, webhook: Option<&tokio::sync::mpsc::Sender<alerts::Transition>>) {
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
    if let Some(tx) = webhook {
        if tx.try_send(t.clone()).is_err() {
            tracing::error!("alert webhook queue full: {} not delivered", a.key.name);
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
