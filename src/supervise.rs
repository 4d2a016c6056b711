//! `drover supervise`: the per-host brain. Joins the reconciler ([`crate::reconcile`]) to
//! systemd ([`crate::systemd`]), serves the control socket and `/metrics`, and turns the job
//! events of this host's workers into metrics and status.
//!
//! Event-driven with a backstop: systemd's signals (job completions, property changes, units
//! appearing) trigger a pass; so does the next scheduled start or restart; a full resync runs
//! every `supervisor.resync` regardless. A lost bus is retried with jittered backoff, and the
//! workers keep running meanwhile: the supervisor is not in the jobs' data path.

use crate::alerts::{self, AlertBook};
use crate::amqp::Link;
use crate::backoff::Jitter;
use crate::config::Config;
use crate::control::{self, AlertRecord, StatusReport, UnitStatus};
use crate::drift::DetectorConfig;
use crate::events::{EventKind, JobEvent};
use crate::job::{now_ms, rfc3339};
use crate::latency::{self, Baselines, LatencyWatch, WatchConfig};
use crate::maintenance::{self, Act, UnitView};
use crate::metrics as m;
use crate::notify;
use crate::orders::{load_orders, Ctx, Maintenance, Timeline};
use crate::reconcile::{class_of_instance, desired_instances, Alert, Health, Op, Policy, Reconciler};
use crate::systemd::{Systemd, SystemdError};
use futures_lite::StreamExt;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const MAX_ALERTS: usize = 50;

/// What the event consumer learns that systemd does not say.
#[derive(Default)]
struct FromEvents {
    /// Unit -> the output of its failed preflight check.
    misconfigured: HashMap<String, String>,
    /// Job ids seen succeeding (bounded, oldest forgotten first): a job completes once however
    /// many `succeeded` events it has (an acknowledgement lost after it was sent runs it again).
    completed: std::collections::HashSet<String>,
    completed_order: std::collections::VecDeque<String>,
}

/// How many completed job ids the supervisor remembers to count each job's completion once.
const COMPLETED_MEMORY: usize = 200_000;

impl FromEvents {
    /// True the first time a job id completes.
    fn first_completion(&mut self, id: &str) -> bool {
        if !self.completed.insert(id.to_string()) {
            return false;
        }
        self.completed_order.push_back(id.to_string());
        if self.completed_order.len() > COMPLETED_MEMORY {
            if let Some(old) = self.completed_order.pop_front() {
                self.completed.remove(&old);
            }
        }
        true
    }
}

pub async fn run(cfg: Config) -> anyhow::Result<i32> {
    let cancel = CancellationToken::new();
    spawn_signal_handler(cancel.clone())?;
    let handle = m::install()?;
    if let Some(addr) = cfg.metrics.listen {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        tracing::info!("metrics on http://{}/metrics", listener.local_addr()?);
        tokio::spawn(serve_metrics(listener, handle, cancel.clone()));
    }
    let report = Arc::new(Mutex::new(StatusReport { host: cfg.host.clone(), ..Default::default() }));
    let orders_path = cfg.alerts.state_dir.join(format!("{}-orders.json", cfg.broker.prefix));
    let orders = load_orders(&orders_path);
    if !orders.is_empty() {
        tracing::info!("resuming {} maintenance order(s) from {}", orders.len(), orders_path.display());
    }
    let maint = Arc::new(Mutex::new(Maintenance { orders, ..Default::default() }));
    let wake = Arc::new(tokio::sync::Notify::new());
    let timeline = Timeline {
        path: cfg.alerts.state_dir.join(format!("{}-timeline.jsonl", cfg.broker.prefix)),
        host: cfg.host.clone(),
    };
    let ctx = Arc::new(Ctx {
        host: cfg.host.clone(),
        report: report.clone(),
        maint: maint.clone(),
        wake: wake.clone(),
        orders_path,
        timeline: timeline.clone(),
    });
    let ctx_for_handler = ctx.clone();
    let handler: control::Handler = Arc::new(move |req| ctx_for_handler.handle(req));
    let socket = cfg.supervisor.socket.clone();
    let serving = tokio::spawn(control::serve(socket.clone(), handler.clone(), cancel.clone()));
    tracing::info!("control socket at {}", socket.display());
    tokio::spawn(crate::fleet::serve(cfg.clone(), handler, cancel.clone()));
    let from_events = Arc::new(Mutex::new(FromEvents::default()));
    let watching =
        tokio::spawn(watch_jobs(cfg.clone(), from_events.clone(), report.clone(), ctx.clone(), cancel.clone()));
    tokio::spawn(notify::watchdog_loop());
    notify::ready();

    let alerted_path = cfg.alerts.state_dir.join(format!("{}-misconfigured-alerted.json", cfg.broker.prefix));
    let alerted: BTreeMap<String, String> = std::fs::read(&alerted_path)
        .ok()
        .and_then(|b| {
            serde_json::from_slice(&b).map_err(|e| tracing::warn!("ignoring {}: {e}", alerted_path.display())).ok()
        })
        .unwrap_or_default();
    let mut s = Supervisor {
        alerted,
        alerted_path,
        desired: desired_units(&cfg),
        policy: Policy {
            restart: cfg.supervisor.restart,
            stable_after: cfg.supervisor.stable_after,
            failing_after: cfg.supervisor.failing_after,
            start_rate: cfg.supervisor.start_rate,
        },
        cfg,
        reconciler: Reconciler::default(),
        jitter: Jitter::from_os(),
        origin: Instant::now(),
        report,
        from_events,
        maint,
        wake,
        timeline,
    };
    s.run(&cancel).await;
    notify::stopping();
    cancel.cancel();
    let _ = serving.await;
    let _ = tokio::time::timeout(Duration::from_secs(5), watching).await;
    Ok(0)
}

fn spawn_signal_handler(cancel: CancellationToken) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!("supervisor stopping; the worker units keep running and are adopted by the next supervisor");
        cancel.cancel();
    });
    Ok(())
}

/// Full unit names the configuration wants on this host.
pub fn desired_units(cfg: &Config) -> BTreeSet<String> {
    desired_instances(cfg.classes.values().map(|c| (c.name.as_str(), c.workers)))
        .into_iter()
        .map(|i| unit_name(&cfg.systemd.unit_prefix, &i))
        .collect()
}

pub fn unit_name(prefix: &str, instance: &str) -> String {
    format!("{prefix}@{instance}.service")
}

struct Supervisor {
    cfg: Config,
    desired: BTreeSet<String>,
    policy: Policy,
    reconciler: Reconciler,
    jitter: Jitter,
    origin: Instant,
    report: Arc<Mutex<StatusReport>>,
    from_events: Arc<Mutex<FromEvents>>,
    maint: Arc<Mutex<Maintenance>>,
    wake: Arc<tokio::sync::Notify>,
    timeline: Timeline,
    /// Units already alerted as misconfigured, with the alert's detail, kept in
    /// `alerts.state_dir`: a restarted supervisor does not raise the same alert again.
    alerted: BTreeMap<String, String>,
    alerted_path: std::path::PathBuf,
}

impl Supervisor {
    fn now(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }

    async fn run(&mut self, cancel: &CancellationToken) {
        let mut tries = 0u32;
        while !cancel.is_cancelled() {
            match Systemd::connect(self.cfg.systemd.bus, self.cfg.systemd.call_timeout).await {
                Ok(sd) => {
                    if tries > 0 {
                        tracing::info!("systemd reachable again after {tries} failed tries");
                    }
                    tries = 0;
                    if let Err(e) = self.session(&sd, cancel).await {
                        tracing::warn!("lost systemd ({e}); reconnecting with backoff; workers keep running");
                    }
                }
                Err(e) => {
                    tries += 1;
                    if tries == 1 || tries % 10 == 0 {
                        tracing::warn!("systemd unreachable ({e}); retrying with backoff (try {tries})");
                    }
                }
            }
            if let Ok(mut r) = self.report.lock() {
                r.systemd_connected = false;
            }
            let wait =
                self.cfg.broker.reconnect.delay(tries.max(1), self.jitter.unit()).max(Duration::from_millis(100));
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = cancel.cancelled() => {}
            }
        }
    }

    /// Reconciles until the bus connection breaks (an error) or the supervisor stops (Ok).
    async fn session(&mut self, sd: &Systemd, cancel: &CancellationToken) -> Result<(), SystemdError> {
        let mut changes = sd.changes(&format!("{}@", self.cfg.systemd.unit_prefix)).await?;
        let pattern = format!("{}@*.service", self.cfg.systemd.unit_prefix);
        tracing::info!(
            "supervising {} worker units ({pattern}) over the {:?} bus",
            self.desired.len(),
            self.cfg.systemd.bus
        );
        let mut resync = Instant::now();
        loop {
            let full = Instant::now() >= resync;
            if full {
                resync = Instant::now() + self.cfg.supervisor.resync;
            }
            let wake_at = self.pass(sd, &pattern, full).await?;
            let mut next = wake_at.map_or(resync, |w| (self.origin + Duration::from_millis(w)).min(resync));
            // A drain in progress is watched every second: its deadline, its progress.
            let draining = self.maint.lock().map(|m| m.progress.iter().any(|p| !p.done)).unwrap_or(false);
            if draining {
                next = next.min(Instant::now() + Duration::from_secs(1));
            }
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {}
                change = changes.recv() => {
                    if change.is_none() {
                        return Err(SystemdError::Unavailable("the bus connection closed".into()));
                    }
                    // Signals come in bursts (a start emits several): let the burst pass.
                    let settle = tokio::time::sleep(Duration::from_millis(50));
                    tokio::pin!(settle);
                    loop {
                        tokio::select! {
                            _ = &mut settle => break,
                            c = changes.recv() => if c.is_none() { break },
                        }
                    }
                }
                _ = self.wake.notified() => {}
                _ = cancel.cancelled() => return Ok(()),
            }
        }
    }

    /// Applies the maintenance orders: signals and stops, progress; returns the held units.
    async fn maintain(
        &mut self,
        sd: &Systemd,
        observed: &BTreeMap<String, crate::reconcile::Observed>,
    ) -> Result<(BTreeSet<String>, BTreeSet<String>), SystemdError> {
        let now = now_ms();
        let prefix = self.cfg.systemd.unit_prefix.clone();
        let views: Vec<UnitView> = self
            .desired
            .iter()
            .chain(observed.keys())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .map(|name| {
                let o = observed.get(name);
                UnitView {
                    unit: name.clone(),
                    class: class_of(&prefix, name),
                    up: o.is_some_and(|o| {
                        matches!(o.active_state.as_str(), "active" | "activating" | "reloading" | "deactivating")
                    }),
                    main_pid: o.map(|o| o.main_pid).unwrap_or(0),
                    job: o.and_then(|o| control::parse_worker_status(&o.status_text, now)).map(|j| (j.id, j.age_s)),
                }
            })
            .collect();
        let early: BTreeSet<String> =
            self.cfg.classes.values().filter(|c| c.drain_early_requeue).map(|c| c.name.clone()).collect();
        let (acts, held, orders) = {
            let Ok(mut m) = self.maint.lock() else { return Ok(Default::default()) };
            let m = &mut *m;
            let (acts, held) =
                maintenance::plan(&m.orders, &self.cfg.host, &views, &m.expected_s, &early, &mut m.mem, now);
            m.progress = m
                .orders
                .iter()
                .map(|o| maintenance::progress(o, &self.cfg.host, &views, &m.expected_s, &m.moved))
                .collect();
            (acts, held, m.orders.clone())
        };
        for act in &acts {
            let (r, what, unit) = match act {
                Act::Cordon(u) => (sd.kill(u, libc::SIGUSR1).await, "cordon unit".to_string(), u),
                Act::Uncordon(u) => (sd.kill(u, libc::SIGUSR2).await, "resume unit".to_string(), u),
                Act::RequeueNow { unit, job, why, cause } => {
                    tracing::info!("{unit}: requeueing job {job}: {why}");
                    self.timeline.record("drover", &format!("requeue job {job}"), why, unit);
                    (sd.kill(unit, crate::work::requeue_signal(*cause)).await, String::new(), unit)
                }
                Act::Probe(u) => {
                    tracing::info!("{u}: hold over, letting one probe job through");
                    (sd.kill(u, crate::work::probe_signal()).await, "probe with one job".to_string(), u)
                }
                Act::Stop(u) => {
                    tracing::info!("{u} drained: stopping it");
                    (sd.stop(u).await, "stop drained unit".to_string(), u)
                }
            };
            if !what.is_empty() {
                let why = orders
                    .iter()
                    .find(|o| {
                        maintenance::applies(
                            &o.scope,
                            &self.cfg.host,
                            views.iter().find(|v| &v.unit == unit).unwrap_or(&UnitView::default()),
                        )
                    })
                    .map(|o| o.reason.clone())
                    .unwrap_or_default();
                self.timeline.record("drover", &what, &why, unit);
            }
            match r {
                Ok(()) => {}
                Err(e) if e.is_transient() => return Err(e),
                Err(e) => tracing::warn!("{e}"),
            }
        }
        let cordoned: BTreeSet<String> = views
            .iter()
            .filter(|v| orders.iter().any(|o| maintenance::applies(&o.scope, &self.cfg.host, v)))
            .map(|v| v.unit.clone())
            .collect();
        Ok((held, cordoned))
    }

    /// One reconcile pass; returns when the next one is due for a scheduled start.
    async fn pass(&mut self, sd: &Systemd, pattern: &str, full: bool) -> Result<Option<u64>, SystemdError> {
        let started = std::time::Instant::now();
        let observed = sd.list(pattern, full).await?;
        let (held, cordoned) = self.maintain(sd, &observed).await?;
        let now = self.now();
        let jitter = &mut self.jitter;
        let plan = self.reconciler.plan(&self.desired, &held, &observed, &self.policy, now, &mut || jitter.unit());
        for op in &plan.ops {
            let r = match op {
                Op::Start(u) => {
                    tracing::info!("starting {u}");
                    sd.start(u).await
                }
                Op::Stop(u) => {
                    tracing::info!("stopping surplus unit {u} (it drains first)");
                    sd.stop(u).await
                }
                Op::ResetFailed(u) => sd.reset_failed(u).await,
            };
            match r {
                Ok(()) => {}
                Err(e) if e.is_transient() => return Err(e),
                Err(e) => tracing::error!("{e}"),
            }
        }
        for (name, t) in &self.reconciler.tracks {
            if plan.ops.contains(&Op::Start(name.clone())) && t.restarts > 0 {
                let class = class_of(&self.cfg.systemd.unit_prefix, name);
                metrics::counter!(m::UNIT_RESTARTS_TOTAL, "class" => class).increment(1);
            }
        }
        self.forget_recovered_misconfigured();
        self.record_alerts(&plan.alerts);
        self.update_report(&observed, &held, &cordoned);
        metrics::counter!(m::RECONCILE_PASSES_TOTAL).increment(1);
        metrics::histogram!(m::RECONCILE_SECONDS).record(started.elapsed().as_secs_f64());
        Ok(plan.wake_at)
    }

    /// A unit that runs healthy again may be alerted as misconfigured again later.
    fn forget_recovered_misconfigured(&mut self) {
        let before = self.alerted.len();
        let tracks = &self.reconciler.tracks;
        self.alerted.retain(|unit, _| tracks.get(unit).is_none_or(|t| t.health != Some(Health::Healthy)));
        if self.alerted.len() != before {
            self.save_alerted();
        }
    }

    fn save_alerted(&self) {
        let bytes = serde_json::to_vec(&self.alerted).unwrap_or_default();
        if let Err(e) = crate::orders::write_atomically(&self.alerted_path, &bytes) {
            tracing::warn!("cannot write {}: {e}", self.alerted_path.display());
        }
    }

    fn record_alerts(&mut self, alerts: &[Alert]) {
        if alerts.is_empty() {
            return;
        }
        let Ok(mut r) = self.report.lock() else { return };
        for a in alerts {
            if let Alert::Misconfigured { unit, detail } = a {
                if self.alerted.get(unit) == Some(detail) {
                    // Raised already, by this supervisor or one before a restart: shown in
                    // the status, not raised again.
                    tracing::info!("{unit} is still misconfigured ({detail}); alerted before, not again");
                    r.alerts.push(AlertRecord {
                        at: rfc3339(now_ms()),
                        kind: "misconfigured".into(),
                        unit: unit.clone(),
                        message: detail.clone(),
                    });
                    continue;
                }
                self.alerted.insert(unit.clone(), detail.clone());
                self.save_alerted();
            }
            let (kind, unit, message) = match a {
                Alert::Failing { unit, failures, last_exit } => {
                    tracing::error!("ALERT {unit} is failing: {failures} failures in a row, last: {last_exit}; restarting at the capped delay");
                    ("failing", unit, format!("{failures} failures in a row, last: {last_exit}"))
                }
                Alert::Misconfigured { unit, detail } => {
                    tracing::error!("ALERT {unit} is misconfigured: {detail}; not restarted");
                    ("misconfigured", unit, detail.clone())
                }
                Alert::Recovered { unit } => {
                    tracing::info!("resolved: {unit} has run stably again");
                    ("resolved", unit, "running stably again".to_string())
                }
            };
            self.timeline.record("drover", &format!("unit {kind}"), &message, unit);
            r.alerts.push(AlertRecord { at: rfc3339(now_ms()), kind: kind.into(), unit: unit.clone(), message });
        }
        let excess = r.alerts.len().saturating_sub(MAX_ALERTS);
        r.alerts.drain(..excess);
    }

    fn update_report(
        &self,
        observed: &BTreeMap<String, crate::reconcile::Observed>,
        held: &BTreeSet<String>,
        cordoned: &BTreeSet<String>,
    ) {
        // Quarantined units, and whether their hold ran out (a probe job decides).
        let quarantined: BTreeMap<String, bool> = self
            .maint
            .lock()
            .map(|m| {
                m.orders
                    .iter()
                    .filter(|o| o.kind == maintenance::Kind::Quarantine)
                    .filter_map(|o| match &o.scope {
                        maintenance::Scope::Unit(u) => Some((u.clone(), o.probing_since_ms.is_some())),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        let now = now_ms();
        let prefix = &self.cfg.systemd.unit_prefix;
        let events = self.from_events.lock().ok();
        let mut units = Vec::new();
        let mut by_health: BTreeMap<(String, &'static str), u32> = BTreeMap::new();
        let mut by_state: BTreeMap<(String, &str), u32> = BTreeMap::new();
        let names: BTreeSet<&String> = self.desired.iter().chain(observed.keys()).collect();
        for name in names {
            let o = observed.get(name);
            let t = self.reconciler.tracks.get(name);
            let health = match (t.and_then(|t| t.health), o) {
                (Some(h), _) => h,
                (None, Some(o)) if o.active_state == "active" => Health::Stopping, // surplus, being stopped
                _ => Health::Stopped,
            };
            let class = class_of(prefix, name);
            let up = o.is_some_and(|o| o.active_state != "inactive" && o.active_state != "failed");
            let health_text = if held.contains(name) {
                if up {
                    "draining"
                } else {
                    "drained"
                }
            } else if let (Some(&probing), true) = (quarantined.get(name), up) {
                if probing {
                    "probing"
                } else {
                    "quarantined"
                }
            } else if cordoned.contains(name) && up {
                "cordoned"
            } else {
                health.as_str()
            };
            *by_health.entry((class.clone(), health_text)).or_default() += 1;
            let active = o.map(|o| o.active_state.as_str()).unwrap_or("absent");
            let active = match active {
                "active" | "activating" | "deactivating" | "inactive" | "failed" | "absent" => active,
                _ => "other", // a state this systemd has and we do not know: a bounded label set
            };
            *by_state.entry((class.clone(), active)).or_default() += 1;
            let detail = match health {
                Health::Misconfigured => events
                    .as_ref()
                    .and_then(|e| e.misconfigured.get(name).cloned())
                    .or_else(|| t.and_then(|t| t.misconfigured.clone())),
                Health::Failing | Health::Restarting => o.map(|o| format!("last exit: {}", exit_text(o))),
                _ => None,
            };
            units.push(UnitStatus {
                unit: name.clone(),
                class,
                state: o.map(|o| format!("{}/{}", o.active_state, o.sub_state)).unwrap_or_else(|| "absent".into()),
                health: health_text.into(),
                restarts: t.map(|t| t.restarts).unwrap_or(0),
                main_pid: o.map(|o| o.main_pid).unwrap_or(0),
                job: o.and_then(|o| control::parse_worker_status(&o.status_text, now)),
                detail,
            });
        }
        for class in self.cfg.classes.keys() {
            for h in [
                "healthy",
                "starting",
                "restarting",
                "stopping",
                "failing",
                "misconfigured",
                "stopped",
                "cordoned",
                "draining",
                "drained",
            ] {
                let n = by_health.get(&(class.clone(), h)).copied().unwrap_or(0);
                metrics::gauge!(m::UNITS, "class" => class.clone(), "health" => h).set(n as f64);
            }
            for st in ["active", "activating", "deactivating", "inactive", "failed", "absent", "other"] {
                let n = by_state.get(&(class.clone(), st)).copied().unwrap_or(0);
                metrics::gauge!(m::UNITS_BY_STATE, "class" => class.clone(), "state" => st).set(n as f64);
            }
        }
        if let Ok(mut r) = self.report.lock() {
            r.at = rfc3339(now);
            r.systemd_connected = true;
            r.units = units;
        }
    }
}

fn exit_text(o: &crate::reconcile::Observed) -> String {
    if o.exec_main_code == crate::reconcile::CLD_EXITED {
        format!("exit status {}", o.exec_main_status)
    } else {
        format!("signal {}", o.exec_main_status)
    }
}

fn class_of(prefix: &str, unit: &str) -> String {
    unit.strip_prefix(prefix)
        .and_then(|s| s.strip_prefix('@'))
        .and_then(|s| s.strip_suffix(".service"))
        .and_then(class_of_instance)
        .unwrap_or("")
        .to_string()
}

/// Consumes the fleet's job events: job outcome and duration metrics for this host, the
/// output of failed preflight checks for `drover status`, and the latency watch (drift, jobs
/// running long, deadlines at risk, stalls) whose alerts go to the log, `/metrics`, the webhook
/// and `drover alerts`.
async fn watch_jobs(
    cfg: Config,
    into: Arc<Mutex<FromEvents>>,
    report: Arc<Mutex<StatusReport>>,
    ctx: Arc<Ctx>,
    cancel: CancellationToken,
) {
    let maint = ctx.maint.clone();
    let timeline = ctx.timeline.clone();
    let qpolicy = crate::quarantine::Policy {
        min_failures: cfg.quarantine.min_failures,
        alpha: cfg.quarantine.alpha,
        ..Default::default()
    };
    let mut attribution = crate::quarantine::Attribution::default();
    // What a restart must not forget: the jobs each quarantine forgave (fair charging, for a
    // day after a release) and how long each unit's or class's last hold was (they double).
    let verdicts_path = cfg.alerts.state_dir.join(format!("{}-verdicts.json", cfg.broker.prefix));
    let kept = std::fs::read(&verdicts_path).ok().and_then(|b| serde_json::from_slice::<KeptVerdicts>(&b).ok());
    let kept = kept.unwrap_or_default();
    let mut holds: BTreeMap<String, crate::quarantine::Hold> = kept.holds;
    let mut blames: Vec<crate::verdicts::Blame> = kept.blames;
    let mut kept_json = String::new();
    let mut link = Link::new(&cfg.broker, "drover supervise");
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
    let mut watch = LatencyWatch::new(watch_cfg, &cfg.host, cfg.classes.keys().cloned(), saved);
    let mut book = AlertBook::default();
    let webhook = cfg
        .alerts
        .webhook
        .as_deref()
        .and_then(|u| crate::webhook::parse_url(u).ok())
        .map(|t| crate::webhook::spawn(t, cfg.host.clone()));
    let mut tick = tokio::time::interval(cfg.alerts.evaluate_every);
    let mut last_save = Instant::now();
    while !cancel.is_cancelled() {
        if link.ensure_up(None, &cancel).await.is_err() {
            break;
        }
        let consumed = async {
            crate::fleet::declare(&mut link, &cfg).await?;
            let events_exchange = link.names.events();
            let (_chan, mut consumer, _) = link.private_consumer(Some((&events_exchange, "#")), "supervisor").await?;
            let control = crate::fleet::exchange(&cfg);
            let (_chan2, mut asks, _) =
                link.private_consumer(Some((&control, crate::fleet::VERDICTS_REQUEST)), "verdict-requests").await?;
            loop {
                tokio::select! {
                    a = asks.next() => {
                        let Some(Ok(a)) = a else {
                            return Err(crate::amqp::BrokerError::Unavailable("verdict request consumer closed".into()));
                        };
                        if let Some(reply_to) = a.properties.reply_to() {
                            let verdicts = host_verdicts(&cfg, &ctx, &report, &attribution, &qpolicy, &mut blames, now_ms());
                            if let Err(e) = crate::fleet::answer_verdicts(&mut link, reply_to.as_str(), &verdicts).await { tracing::warn!("verdicts not sent to a worker: {e}"); }
                        }
                    }
                    d = consumer.next() => {
                        let Some(Ok(d)) = d else {
                            return Err(crate::amqp::BrokerError::Unavailable("event consumer closed".into()));
                        };
                        if let Ok(e) = serde_json::from_slice::<JobEvent>(&d.data) {
                            if e.host == cfg.host {
                                record_event(&e, &into);
                            }
                            watch.observe(&e);
                            let vanished = attribution.vanished_changes();
                            attribution.observe(&e, &qpolicy);
                            if e.host == cfg.host {
                                settle_probes(&cfg, &ctx, &mut attribution, &mut holds, &e);
                            }
                            if attribution.vanished_changes() != vanished {
                                // A worker died under a job (or a late event says it did not):
                                // say so now, before the job's next delivery.
                                let verdicts = host_verdicts(&cfg, &ctx, &report, &attribution, &qpolicy, &mut blames, now_ms());
                                if let Err(e) = crate::fleet::publish_verdicts(&mut link, &cfg, &verdicts).await { tracing::warn!("verdicts not published: {e}"); }
                            }
                            if let Some(mv) = crate::orders::track_moves(&maint, &e, &cfg.host) {
                                let to = mv.to.unwrap_or_default();
                                timeline.record("drover", &format!("job {} restarted on {to}", mv.job), "moved away by a drain", &mv.from);
                            }
                        }
                    }
                    _ = tick.tick() => {
                        let mut backlog = BTreeMap::new();
                        for class in cfg.classes.keys() {
                            if let Ok(n) = link.backlog(class).await {
                                backlog.insert(class.clone(), u64::from(n));
                            }
                        }
                        let did = what_drover_did(&report, &cfg.host);
                        let now = now_ms();
                        let mut conditions = watch.evaluate(now, &backlog, &did);
                        if cfg.quarantine.enabled {
                            conditions.extend(judge_workers(&cfg, &ctx, &report, &mut attribution, &qpolicy, &mut holds, now));
                        }
                        let verdicts = host_verdicts(&cfg, &ctx, &report, &attribution, &qpolicy, &mut blames, now);
                        if let Err(e) = crate::fleet::publish_verdicts(&mut link, &cfg, &verdicts).await { tracing::warn!("verdicts not published: {e}"); }
                        keep_verdicts(&verdicts_path, &blames, &holds, &mut kept_json);
                        // Quarantines and pauses that ended are reported clear.
                        let present: std::collections::BTreeSet<alerts::AlertKey> = conditions.iter().map(|c| c.key.clone()).collect();
                        for key in book.keys() {
                            if (key.name == "WorkerQuarantined" || key.name == "ClassPaused") && !present.contains(&key) {
                                conditions.push(alerts::Condition {
                                    key,
                                    active: false,
                                    severity: alerts::Severity::Critical,
                                    summary: String::new(),
                                    annotations: BTreeMap::new(),
                                });
                            }
                        }
                        for c in conditions {
                            let policy = alerts::Policy {
                                fire_after: if matches!(c.key.name.as_str(), latency::DRIFT | "WorkerQuarantined" | "ClassPaused") { Duration::ZERO } else { cfg.alerts.fire_after },
                                resolve_after: if matches!(c.key.name.as_str(), "WorkerQuarantined" | "ClassPaused") { Duration::ZERO } else { cfg.alerts.resolve_after },
                            };
                            if let Some(t) = book.update(c, policy, now) {
                                let (what, a) = match &t {
                                    alerts::Transition::Fired(a) => ("alert fired", a),
                                    alerts::Transition::Resolved(a) => ("alert resolved", a),
                                };
                                timeline.record("drover", &format!("{what}: {}", a.key.name), &a.summary, a.key.label("class"));
                                deliver(&t, &cfg.host, webhook.as_ref());
                            }
                        }
                        if let Ok(mut m) = maint.lock() {
                            let now_s = now as f64 / 1000.0;
                            m.expected_s = watch.classes().filter_map(|c| watch.expected_s(c, now_s).map(|e| (c.clone(), e))).collect();
                        }
                        if let Ok(mut r) = report.lock() {
                            r.firing = book.firing().into_iter().cloned().collect();
                            r.resolved = book.resolved().to_vec();
                        }
                        if last_save.elapsed() >= Duration::from_secs(60) {
                            save_baselines(&baselines_path, &watch.snapshot());
                            last_save = Instant::now();
                        }
                    }
                    _ = cancel.cancelled() => return Ok(()),
                }
            }
        };
        match consumed.await {
            Ok(()) => break,
            Err(e) => {
                tracing::warn!("job events: {e}; reconnecting");
                link.mark_down();
            }
        }
    }
    save_baselines(&baselines_path, &watch.snapshot());
}

/// The part of the quarantine state that outlives a restart (`<prefix>-verdicts.json`).
#[derive(Default, serde::Serialize, serde::Deserialize)]
struct KeptVerdicts {
    #[serde(default)]
    blames: Vec<crate::verdicts::Blame>,
    #[serde(default)]
    holds: BTreeMap<String, crate::quarantine::Hold>,
}

/// Writes the kept verdicts when they changed since `last` (the JSON last written).
fn keep_verdicts(
    path: &std::path::Path,
    blames: &[crate::verdicts::Blame],
    holds: &BTreeMap<String, crate::quarantine::Hold>,
    last: &mut String,
) {
    let kept = KeptVerdicts { blames: blames.to_vec(), holds: holds.clone() };
    let json = serde_json::to_string(&kept).unwrap_or_default();
    if json == *last {
        return;
    }
    match crate::orders::write_atomically(path, json.as_bytes()) {
        Ok(()) => *last = json,
        Err(e) => tracing::warn!("cannot save the quarantine verdicts to {}: {e}", path.display()),
    }
}

fn save_baselines(path: &std::path::Path, b: &Baselines) {
    if let Err(e) = crate::orders::write_atomically(path, &serde_json::to_vec(b).unwrap_or_default()) {
        tracing::warn!("cannot save latency baselines to {}: {e}", path.display());
    }
}

/// When a hold that starts now ends: the configured hold the first time, doubled (up to
/// `hold_max`) each time the same unit or class is held again within a day.
fn next_hold(cfg: &Config, holds: &mut BTreeMap<String, crate::quarantine::Hold>, key: String, now: i64) -> i64 {
    let base = cfg.quarantine.hold.as_millis() as u64;
    let max = cfg.quarantine.hold_max.as_millis() as u64;
    let hold = crate::quarantine::next_hold(holds.get(&key).copied(), base, max, now);
    holds.insert(key, hold);
    hold.until_ms
}

/// A job that ended on one of this host's units may decide a probe: a pass lifts the quarantine
/// or pause (and its evidence is forgotten), a failure holds it again, twice as long. A probe
/// job that ended without a verdict (requeued, interrupted, rejected) is replaced by another.
fn settle_probes(
    cfg: &Config,
    ctx: &Ctx,
    attribution: &mut crate::quarantine::Attribution,
    holds: &mut BTreeMap<String, crate::quarantine::Hold>,
    e: &JobEvent,
) {
    use crate::events::EventKind;
    use crate::quarantine::Subject;
    let view = UnitView { unit: e.unit.clone(), class: e.class.clone(), up: true, ..Default::default() };
    let verdict = crate::quarantine::verdict(e);
    let at = crate::job::parse_rfc3339_ms(&e.at).unwrap_or_else(now_ms);
    let orders = ctx.maint.lock().map(|m| m.orders.clone()).unwrap_or_default();
    let decided = maintenance::probe_outcome(&orders, &cfg.host, &view, verdict, at);
    let ended = matches!(
        e.event,
        EventKind::Failed | EventKind::DeadLettered | EventKind::Requeued | EventKind::RetryScheduled
    );
    if decided.is_empty() && verdict.is_none() && ended {
        if let Ok(mut m) = ctx.maint.lock() {
            m.mem.probe_again(&e.unit);
        }
        return;
    }
    let job = e.job_id.as_deref().unwrap_or("?");
    for (id, passed) in decided {
        let Some(o) = orders.iter().find(|o| o.id == id) else { continue };
        let key = match &o.scope {
            maintenance::Scope::Class(c) => format!("pause:{c}"),
            _ => format!("q:{}", e.unit),
        };
        let what = match (passed, e.outcome.as_deref()) {
            (true, _) => format!("probe job {job} succeeded on {}", e.unit),
            (false, Some(how)) => format!("probe job {job} on {} ended: {how}", e.unit),
            (false, None) => format!("probe job {job} on {} failed", e.unit),
        };
        let until = if passed { 0 } else { next_hold(cfg, holds, key, now_ms()) };
        if ctx.settle_probe(&id, passed, until, &what).is_none() {
            continue;
        }
        if passed {
            tracing::info!("{} lifted on {}: {what}", o.scope, cfg.host);
            match &o.scope {
                maintenance::Scope::Class(c) => attribution.forget_class(c),
                _ => {
                    attribution.forget(&e.class, &Subject::Worker(format!("{}@{}", e.unit, cfg.host)));
                    attribution.forget(&e.class, &Subject::Host(cfg.host.clone()));
                }
            }
        } else {
            tracing::warn!("{} held again on {} until {}: {what}", o.scope, cfg.host, rfc3339(until));
        }
    }
}

/// Bad workers versus bad jobs on this host: quarantines and class pauses from the fleet's
/// outcomes, probes when their holds run out; returns the alert conditions they raise.
fn judge_workers(
    cfg: &Config,
    ctx: &Ctx,
    report: &Arc<Mutex<StatusReport>>,
    attribution: &mut crate::quarantine::Attribution,
    policy: &crate::quarantine::Policy,
    holds: &mut BTreeMap<String, crate::quarantine::Hold>,
    now: i64,
) -> Vec<alerts::Condition> {
    use crate::quarantine::Subject;
    let prefix = &cfg.systemd.unit_prefix;
    let worker = |unit: &str| format!("{unit}@{}", cfg.host);
    // Operators' releases and holds that ran out: the subject must earn new evidence.
    let released: Vec<String> = ctx.maint.lock().map(|mut m| std::mem::take(&mut m.released)).unwrap_or_default();
    // A release forgets the host's record too: otherwise the host-wide evidence that covered the
    // unit would quarantine it again at the next evaluation, before it ran a single job.
    for u in released {
        let full = if u.ends_with(".service") { u.clone() } else { unit_name(prefix, &u) };
        attribution.forget(&class_of(prefix, &full), &Subject::Worker(worker(&full)));
        attribution.forget(&class_of(prefix, &full), &Subject::Host(cfg.host.clone()));
    }
    for o in ctx.begin_probes(now) {
        match (&o.kind, &o.scope) {
            (maintenance::Kind::Quarantine, maintenance::Scope::Unit(u)) => {
                attribution.forget(&class_of(prefix, u), &Subject::Worker(worker(u)));
                attribution.forget(&class_of(prefix, u), &Subject::Host(cfg.host.clone()));
            }
            (maintenance::Kind::Pause, maintenance::Scope::Class(c)) => attribution.forget_class(c),
            _ => {}
        }
    }
    let mut hold_for = |key: String| next_hold(cfg, holds, key, now);
    let units: Vec<(String, String)> =
        report.lock().map(|r| r.units.iter().map(|u| (u.unit.clone(), u.class.clone())).collect()).unwrap_or_default();
    for class in cfg.classes.keys() {
        if let Some(why) = attribution.outage(class, policy) {
            let scope = maintenance::Scope::Class(class.clone());
            if ctx.add_own(maintenance::Kind::Pause, scope, &why, || hold_for(format!("pause:{class}"))) {
                tracing::error!("ALERT class {class} paused on {}: {why}", cfg.host);
            }
            continue;
        }
        let mine: Vec<&String> = units.iter().filter(|(_, c)| c == class).map(|(u, _)| u).collect();
        let host_evidence = attribution.judge(class, &Subject::Host(cfg.host.clone()), policy);
        for unit in mine {
            let evidence =
                host_evidence.clone().or_else(|| attribution.judge(class, &Subject::Worker(worker(unit)), policy));
            if let Some(ev) = evidence {
                let scope = maintenance::Scope::Unit(unit.clone());
                if ctx.add_own(maintenance::Kind::Quarantine, scope, &ev.to_string(), || hold_for(format!("q:{unit}")))
                {
                    tracing::error!("ALERT {unit} quarantined: {ev}");
                }
            }
        }
    }
    // One alert per quarantined unit and per paused class, while it lasts.
    let orders = ctx.maint.lock().map(|m| m.orders.clone()).unwrap_or_default();
    let mut out = Vec::new();
    for o in &orders {
        let (name, labels, summary) = match (&o.kind, &o.scope) {
            (maintenance::Kind::Quarantine, maintenance::Scope::Unit(u)) => {
                let class = class_of(prefix, u);
                (
                    "WorkerQuarantined",
                    vec![("class", class), ("host", cfg.host.clone()), ("unit", u.clone())],
                    format!("{u} on {} quarantined: {}", cfg.host, o.reason),
                )
            }
            (maintenance::Kind::Pause, maintenance::Scope::Class(c)) => {
                ("ClassPaused", vec![("class", c.clone())], format!("class {c} paused fleet-wide: {}", o.reason))
            }
            _ => continue,
        };
        let labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let mut annotations = BTreeMap::new();
        annotations.insert("evidence".to_string(), o.reason.clone());
        annotations.insert("probe_after".to_string(), o.deadline_ms.map(rfc3339).unwrap_or_default());
        out.push(alerts::Condition {
            key: alerts::AlertKey::new(name, &labels),
            active: true,
            severity: alerts::Severity::Critical,
            summary,
            annotations,
        });
    }
    out
}

/// This host's verdicts for the fleet's workers: the quarantined units with the jobs that failed
/// on them (those failures are not charged to the jobs), kept a day after the quarantine ends,
/// and the attempts that vanished with their worker here.
fn host_verdicts(
    cfg: &Config,
    ctx: &Ctx,
    report: &Arc<Mutex<StatusReport>>,
    attribution: &crate::quarantine::Attribution,
    policy: &crate::quarantine::Policy,
    blames: &mut Vec<crate::verdicts::Blame>,
    now: i64,
) -> crate::verdicts::HostVerdicts {
    use crate::quarantine::Subject;
    let prefix = &cfg.systemd.unit_prefix;
    let orders = ctx.maint.lock().map(|m| m.orders.clone()).unwrap_or_default();
    // Who is to blame, for which class, since when, and for which failed jobs: each quarantined
    // unit, and each class paused for a shared outage (any worker).
    let blamed: Vec<(String, String, i64, Vec<String>)> = orders
        .iter()
        .filter_map(|o| match (&o.kind, &o.scope) {
            (maintenance::Kind::Quarantine, maintenance::Scope::Unit(u)) => {
                let class = class_of(prefix, u);
                let worker = format!("{u}@{}", cfg.host);
                let mut jobs = attribution.failed_jobs(&class, &Subject::Worker(worker.clone()));
                jobs.extend(attribution.failed_jobs(&class, &Subject::Host(cfg.host.clone())));
                Some((worker, class, o.at_ms, jobs))
            }
            (maintenance::Kind::Pause, maintenance::Scope::Class(c)) => {
                // The outage's own failures, gathered until the first probe. A probe's failure
                // is charged: a bad job taken as the probe must not keep the class paused forever.
                let jobs = if o.probes == 0 { attribution.outage_jobs(c, policy) } else { Vec::new() };
                Some((crate::verdicts::ANY_WORKER.to_string(), c.clone(), o.at_ms, jobs))
            }
            _ => None,
        })
        .collect();
    for b in blames.iter_mut() {
        b.active = blamed.iter().any(|(worker, class, _, _)| *worker == b.worker && *class == b.class);
    }
    for (worker, class, since, jobs) in blamed {
        let b = match blames.iter_mut().find(|b| b.worker == worker && b.class == class && b.active) {
            Some(b) => b,
            None => {
                blames.push(crate::verdicts::Blame { worker, class, since_ms: since, active: true, jobs: Vec::new() });
                blames.last_mut().expect("just pushed")
            }
        };
        for j in jobs {
            if !b.jobs.contains(&j) {
                b.jobs.push(j);
            }
        }
    }
    blames.retain(|b| b.active || now - b.since_ms < crate::verdicts::BELIEVED_MS);
    // Suspects: evidence beyond a looser significance, short of a quarantine.
    let loose = crate::quarantine::Policy { alpha: policy.suspect_alpha.max(policy.alpha), ..policy.clone() };
    let units: Vec<(String, String)> =
        report.lock().map(|r| r.units.iter().map(|u| (u.unit.clone(), u.class.clone())).collect()).unwrap_or_default();
    let suspects = units
        .into_iter()
        .map(|(unit, class)| (format!("{unit}@{}", cfg.host), class))
        .filter(|(worker, class)| {
            !blames.iter().any(|b| b.active && &b.worker == worker)
                && (attribution.judge(class, &Subject::Host(cfg.host.clone()), &loose).is_some()
                    || attribution.judge(class, &Subject::Worker(worker.clone()), &loose).is_some())
        })
        .map(|(worker, class)| crate::verdicts::Suspect { worker, class })
        .collect();
    crate::verdicts::HostVerdicts {
        suspects,
        v: crate::verdicts::VERSION,
        host: cfg.host.clone(),
        at_ms: now,
        blamed: blames.clone(),
        vanished: attribution.vanished_on(&cfg.host),
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
        EventKind::Failed | EventKind::Submitted => {}
    }
}

/// A deliberately small HTTP responder: `GET /metrics` and nothing else.
async fn serve_metrics(
    listener: tokio::net::TcpListener,
    handle: metrics_exporter_prometheus::PrometheusHandle,
    cancel: CancellationToken,
) {
    loop {
        let (mut stream, _): (tokio::net::TcpStream, SocketAddr) = tokio::select! {
            r = listener.accept() => match r { Ok(s) => s, Err(_) => continue },
            _ = cancel.cancelled() => return,
        };
        let handle = handle.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await else { return };
            let head = String::from_utf8_lossy(&buf[..n]);
            let (status, body) = if head.starts_with("GET /metrics") {
                ("200 OK", handle.render())
            } else {
                ("404 Not Found", "only /metrics is served here\n".to_string())
            };
            let response = format!(
                "HTTP/1.1 {status}\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = tokio::time::timeout(Duration::from_secs(5), stream.write_all(response.as_bytes())).await;
        });
    }
}
