//! `drover supervise`: the per-host brain. Joins the reconciler ([`crate::reconcile`]) to
//! systemd ([`crate::io::systemd`]), serves the control socket and `/metrics`, and turns the job
//! events of this host's workers into metrics and status.
//!
//! Event-driven with a backstop: systemd's signals (job completions, property changes, units
//! appearing) trigger a pass; so does the next scheduled start or restart; a full resync runs
//! every `supervisor.resync` regardless. A lost bus is retried with jittered backoff, and the
//! workers keep running meanwhile: the supervisor is not in the jobs' data path.

pub mod orders;
pub mod page;
mod watch;

use crate::config::Config;
use crate::io::clock::now_ms;
use crate::io::control::{self, AlertRecord, StatusReport, UnitStatus};
use crate::io::metrics as m;
use crate::io::notify;
use crate::io::random::Jitter;
use crate::io::systemd::{Systemd, SystemdError};
use crate::job::rfc3339;
use crate::maintenance::{self, Act, UnitView};
use crate::reconcile::{class_of_unit, desired_instances, unit_name, Alert, Health, Op, Policy, Reconciler};
use crate::supervisor::orders::{load_orders, Ctx, Maintenance, Timeline};
use crate::tasks::Tasks;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

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
    let tasks = Tasks::new();
    spawn_signal_handler(&tasks)?;
    let handle = m::install()?;
    let ctx = Arc::new(context(&cfg));
    let ctx_for_handler = ctx.clone();
    let handler: control::Handler = Arc::new(move |req| ctx_for_handler.handle(req));
    let served = [cfg.metrics.listen, cfg.web.listen];
    let page =
        (cfg.web.enabled && served.iter().any(Option::is_some)).then(|| page::start(&cfg, handler.clone(), &tasks));
    for (i, addr) in served.iter().enumerate() {
        let Some(addr) = addr else { continue };
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let at = listener.local_addr()?;
        if i == 0 {
            tracing::info!("metrics on http://{at}/metrics");
        }
        if page.is_some() {
            let mode = if cfg.web.actions { "actions with an operator's token" } else { "read-only" };
            tracing::info!("page on http://{at}/ ({mode})");
        }
        tasks.spawn(crate::io::http_server::serve(
            listener,
            handle.clone(),
            ctx.report.clone(),
            page.clone(),
            tasks.token().clone(),
        ));
    }
    let (report, maint, wake, timeline) =
        (ctx.report.clone(), ctx.maint.clone(), ctx.wake.clone(), ctx.timeline.clone());
    timeline.record("drover", "supervisor started", &host_up_since(), &format!("host {}", cfg.host));
    let socket = cfg.supervisor.socket.clone();
    let serving = control::serve(socket.clone(), handler.clone(), tasks.clone());
    tasks.spawn(async move {
        if let Err(e) = serving.await {
            tracing::error!("control socket: {e:#}");
        }
    });
    tracing::info!("control socket at {}", socket.display());
    tasks.spawn(crate::io::fleet::serve(cfg.clone(), handler, tasks.token().clone()));
    let from_events = Arc::new(Mutex::new(FromEvents::default()));
    tasks.spawn(watch::watch_jobs(cfg.clone(), from_events.clone(), report.clone(), ctx.clone(), tasks.clone()));
    tasks.spawn(notify::watchdog_loop(tasks.token().clone()));
    notify::ready();

    let alerted_path = cfg.alerts.state_dir.join(format!("{}-misconfigured-alerted.json", cfg.broker.prefix));
    let alerted = load_alerted(&alerted_path);
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
    s.run(&tasks).await;
    notify::stopping();
    let stragglers = tasks.shutdown(Duration::from_secs(5)).await;
    if stragglers > 0 {
        tracing::warn!("{stragglers} task(s) still running after 5 s; stopping anyway");
    }
    Ok(0)
}

/// What the supervisor's requests and loops share: the status report, the maintenance orders
/// (resumed from the state directory) and the timeline.
fn context(cfg: &Config) -> Ctx {
    let orders_path = cfg.alerts.state_dir.join(format!("{}-orders.json", cfg.broker.prefix));
    let orders = load_orders(&orders_path);
    if !orders.is_empty() {
        tracing::info!("resuming {} maintenance order(s) from {}", orders.len(), orders_path.display());
    }
    Ctx {
        host: cfg.host.clone(),
        report: Arc::new(Mutex::new(StatusReport { host: cfg.host.clone(), ..Default::default() })),
        maint: Arc::new(Mutex::new(Maintenance { orders, ..Default::default() })),
        wake: Arc::new(tokio::sync::Notify::new()),
        orders_path,
        timeline: Timeline {
            path: cfg.alerts.state_dir.join(format!("{}-timeline.jsonl", cfg.broker.prefix)),
            host: cfg.host.clone(),
        },
    }
}

/// The units already alerted as misconfigured, kept across restarts.
fn load_alerted(path: &std::path::Path) -> BTreeMap<String, String> {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| tracing::warn!("ignoring {}: {e}", path.display())).ok())
        .unwrap_or_default()
}

fn spawn_signal_handler(tasks: &Tasks) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let cancel = tasks.token().clone();
    tasks.spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
            _ = cancel.cancelled() => return,
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

    async fn run(&mut self, tasks: &Tasks) {
        let cancel = tasks.token();
        let mut tries = 0u32;
        while !cancel.is_cancelled() {
            match Systemd::connect(self.cfg.systemd.bus, self.cfg.systemd.call_timeout).await {
                Ok(sd) => {
                    if tries > 0 {
                        tracing::info!("systemd reachable again after {tries} failed tries");
                    }
                    tries = 0;
                    if let Err(e) = self.session(&sd, tasks).await {
                        tracing::warn!("lost systemd ({e}); reconnecting with backoff; workers keep running");
                    }
                }
                Err(e) => {
                    tries += 1;
                    if tries == 1 || tries.is_multiple_of(10) {
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
    async fn session(&mut self, sd: &Systemd, tasks: &Tasks) -> Result<(), SystemdError> {
        let cancel = tasks.token();
        let mut changes = sd.changes(&format!("{}@", self.cfg.systemd.unit_prefix), tasks).await?;
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

    /// Every unit the configuration wants or systemd has, as the maintenance plan sees it.
    fn unit_views(&self, observed: &BTreeMap<String, crate::reconcile::Observed>, now: i64) -> Vec<UnitView> {
        let names: BTreeSet<&String> = self.desired.iter().chain(observed.keys()).collect();
        names
            .into_iter()
            .map(|name| {
                let o = observed.get(name);
                UnitView {
                    unit: name.clone(),
                    class: class_of_unit(&self.cfg.systemd.unit_prefix, name),
                    up: o.is_some_and(|o| {
                        matches!(o.active_state.as_str(), "active" | "activating" | "reloading" | "deactivating")
                    }),
                    starting: o.is_some_and(|o| o.active_state == "activating"),
                    main_pid: o.map(|o| o.main_pid).unwrap_or(0),
                    progress: o
                        .and_then(|o| control::parse_worker_status(&o.status_text, now))
                        .and_then(|j| j.progress),
                    job: o.and_then(|o| control::parse_worker_status(&o.status_text, now)).map(|j| (j.id, j.age_s)),
                }
            })
            .collect()
    }

    /// Applies the maintenance orders: signals and stops, progress; returns the held units.
    async fn maintain(
        &mut self,
        sd: &Systemd,
        observed: &BTreeMap<String, crate::reconcile::Observed>,
    ) -> Result<(BTreeSet<String>, BTreeSet<String>), SystemdError> {
        let now = now_ms();
        let views = self.unit_views(observed, now);
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
                    (sd.kill(unit, crate::worker::requeue_signal(*cause)).await, String::new(), unit)
                }
                Act::Probe(u) => {
                    tracing::info!("{u}: hold over, letting one probe job through");
                    (sd.kill(u, crate::worker::probe_signal()).await, "probe with one job".to_string(), u)
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
                let class = class_of_unit(&self.cfg.systemd.unit_prefix, name);
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
        if let Err(e) = orders::write_atomically(&self.alerted_path, &bytes) {
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
        let quarantined = self.quarantined_units();
        let now = now_ms();
        let mut counts = UnitCounts::default();
        let names: BTreeSet<&String> = self.desired.iter().chain(observed.keys()).collect();
        let units: Vec<UnitStatus> = names
            .into_iter()
            .map(|name| {
                let o = observed.get(name);
                let up = o.is_some_and(|o| o.active_state != "inactive" && o.active_state != "failed");
                let shown = maintenance::shown_health(
                    held.contains(name),
                    quarantined.get(name).copied(),
                    cordoned.contains(name),
                    up,
                );
                let status = self.unit_status(name, o, shown, now);
                counts.add(&status, o);
                status
            })
            .collect();
        counts.publish(self.cfg.classes.keys());
        if let Ok(mut r) = self.report.lock() {
            r.at = rfc3339(now);
            r.systemd_connected = true;
            r.units = units;
        }
    }

    /// Quarantined units, and whether their hold ran out (a probe job decides).
    fn quarantined_units(&self) -> BTreeMap<String, bool> {
        let Ok(m) = self.maint.lock() else { return BTreeMap::new() };
        m.orders
            .iter()
            .filter(|o| o.kind == maintenance::Kind::Quarantine)
            .filter_map(|o| o.scope.unit().map(|u| (u.to_string(), o.probing_since_ms.is_some())))
            .collect()
    }

    /// One unit's line of the status report; `shown` is what the orders make of its health.
    fn unit_status(
        &self,
        name: &str,
        o: Option<&crate::reconcile::Observed>,
        shown: Option<&str>,
        now: i64,
    ) -> UnitStatus {
        let t = self.reconciler.tracks.get(name);
        let health = match (t.and_then(|t| t.health), o) {
            (Some(h), _) => h,
            (None, Some(o)) if o.active_state == "active" => Health::Stopping, // surplus, being stopped
            _ => Health::Stopped,
        };
        let detail = match health {
            Health::Misconfigured => self
                .from_events
                .lock()
                .ok()
                .and_then(|e| e.misconfigured.get(name).cloned())
                .or_else(|| t.and_then(|t| t.misconfigured.clone())),
            Health::Failing | Health::Restarting => {
                o.map(|o| format!("last exit: {}", crate::reconcile::describe_exit(o, &self.cfg.systemd.relax_sandbox)))
            }
            _ => None,
        };
        UnitStatus {
            unit: name.to_string(),
            class: class_of_unit(&self.cfg.systemd.unit_prefix, name),
            state: o.map(|o| format!("{}/{}", o.active_state, o.sub_state)).unwrap_or_else(|| "absent".into()),
            health: shown.unwrap_or(health.as_str()).into(),
            restarts: t.map(|t| t.restarts).unwrap_or(0),
            main_pid: o.map(|o| o.main_pid).unwrap_or(0),
            job: o.and_then(|o| control::parse_worker_status(&o.status_text, now)),
            detail,
        }
    }
}

/// Units per class by health and by systemd state, for the gauges.
#[derive(Default)]
struct UnitCounts {
    by_health: BTreeMap<(String, String), u32>,
    by_state: BTreeMap<(String, &'static str), u32>,
}

impl UnitCounts {
    fn add(&mut self, u: &UnitStatus, o: Option<&crate::reconcile::Observed>) {
        *self.by_health.entry((u.class.clone(), u.health.clone())).or_default() += 1;
        const KNOWN: [&str; 6] = ["active", "activating", "deactivating", "inactive", "failed", "absent"];
        let state = o.map(|o| o.active_state.as_str()).unwrap_or("absent");
        // A state this systemd has and we do not know is `other`: a bounded label set.
        let active = KNOWN.into_iter().find(|k| *k == state).unwrap_or("other");
        *self.by_state.entry((u.class.clone(), active)).or_default() += 1;
    }

    fn publish<'a>(&self, classes: impl Iterator<Item = &'a String>) {
        const HEALTH: [&str; 10] = [
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
        ];
        const STATES: [&str; 7] = ["active", "activating", "deactivating", "inactive", "failed", "absent", "other"];
        for class in classes {
            for h in HEALTH {
                let n = self.by_health.get(&(class.clone(), h.to_string())).copied().unwrap_or(0);
                metrics::gauge!(m::UNITS, "class" => class.clone(), "health" => h).set(n as f64);
            }
            for st in STATES {
                let n = self.by_state.get(&(class.clone(), st)).copied().unwrap_or(0);
                metrics::gauge!(m::UNITS_BY_STATE, "class" => class.clone(), "state" => st).set(n as f64);
            }
        }
    }
}

/// Since when the host has been up, for the timeline (a host that came back from a reboot
/// says so here). Read from the kernel's uptime.
fn host_up_since() -> String {
    let up_s = std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|t| t.split_whitespace().next().and_then(|s| s.parse::<f64>().ok()));
    match up_s {
        Some(s) => format!("host up since {}", rfc3339(now_ms() - (s * 1000.0) as i64)),
        None => "host uptime unknown".into(),
    }
}
