//! What the supervisor's page shows, gathered, and what it does: every host's supervisor asked
//! over the broker's control exchange (status, orders, charts, timeline: one connection, one
//! deadline; [`crate::io::fleet::ask_many`]), this host's own answers taken directly (so the
//! page works with the broker away), queue depths and dead letters by reason from the broker.
//! Gathered only while a page is open (an event stream, or a poll in the last half minute).
//! Actions go to the supervisor of the host concerned, like `drover drain` does.

use crate::alerts::Alert;
use crate::config::Config;
use crate::io::amqp::Link;
use crate::io::control::{Handler, Request, Response, StatusReport, TimelineEntry};
use crate::io::fleet::{self, Target};
use crate::io::web::{Outcome, Page};
use crate::maintenance::{Kind, Order, Progress};
use crate::page::{self as view, Action, ActionForm, Bin, ClassChart};
use axum::http::StatusCode;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

/// How long the supervisors have to answer the page's questions.
const ANSWER_WITHIN: Duration = Duration::from_millis(1500);
/// A host not heard from for this long is forgotten (not listed as not answering).
const FORGET_HOST_MS: i64 = 15 * 60 * 1000;
/// The timeline's first look back, and the most entries kept.
const TIMELINE_SINCE_MS: i64 = 24 * 3600 * 1000;
const TIMELINE_KEEP: usize = 3000;
/// Dead letters are counted every this many gatherings (they are all held for the count).
const DEAD_EVERY: u32 = 5;
/// Rollouts' waves shown: those of the last this long.
const ROLLOUTS_SINCE_MS: i64 = 12 * 3600 * 1000;

#[derive(Serialize)]
struct View {
    at: String,
    /// The host whose supervisor serves this page.
    served_by: String,
    actions: bool,
    refresh_ms: u64,
    /// Whether the broker answered (else only this host is shown).
    broker: bool,
    hosts: Vec<HostView>,
    not_answering: Vec<String>,
    classes: Vec<ClassView>,
    drains: Vec<Progress>,
    /// Rollouts' waves of the last hours, from the timeline.
    rollouts: Vec<view::Wave>,
    quarantines: Vec<QuarantineView>,
    alerts: Vec<AlertView>,
    dead_reasons: &'static [&'static str],
}

#[derive(Serialize)]
struct HostView {
    #[serde(flatten)]
    status: StatusReport,
    /// Per unit with a job: its age against the class's usual run time.
    ages: BTreeMap<String, view::Age>,
    /// A host drain of this host, done: safe to power off.
    safe_to_power_off: bool,
    draining: bool,
}

#[derive(Serialize)]
struct ClassView {
    class: String,
    queued: Option<u32>,
    running: usize,
    units_by_health: BTreeMap<String, usize>,
    dead: Option<BTreeMap<String, usize>>,
    usual_s: Option<f64>,
    baseline: Option<crate::drift::Baseline>,
    histogram: Vec<Bin>,
    /// Host -> the drift score over time (ms, score).
    scores: BTreeMap<String, Vec<(i64, f64)>>,
    /// Its running jobs, the longest against the usual run time first (at most [`JOBS_SHOWN`]).
    jobs: Vec<JobView>,
}

/// Running jobs listed per class.
const JOBS_SHOWN: usize = 20;

#[derive(Serialize)]
struct JobView {
    host: String,
    unit: String,
    #[serde(flatten)]
    job: crate::io::control::CurrentJob,
    age: view::Age,
}

#[derive(Serialize)]
struct QuarantineView {
    host: String,
    order: Order,
    /// Why, in the judge's words (the order's reason and its alert's evidence).
    evidence: Vec<String>,
    /// `on hold until ...`, or `probing since ...`.
    probe: String,
    units: Vec<crate::maintenance::UnitProgress>,
}

#[derive(Serialize)]
struct AlertView {
    #[serde(flatten)]
    alert: Alert,
    runbook: Option<String>,
}

/// What the gathering keeps between rounds.
#[derive(Default)]
struct Memory {
    /// Host -> when it last answered (ms).
    seen: BTreeMap<String, i64>,
    timeline: Vec<TimelineEntry>,
    dead: BTreeMap<String, BTreeMap<String, usize>>,
    rounds: u32,
}

/// Starts gathering the fleet's view for the page; returns what its routes need.
pub fn start(cfg: &Config, local: Handler, tasks: &crate::tasks::Tasks) -> Page {
    let (tx, rx) = watch::channel(Arc::new(String::new()));
    let memory = Arc::new(Mutex::new(Memory::default()));
    let wanted = Arc::new(Notify::new());
    let viewers = Arc::new(AtomicUsize::new(0));
    let polled_ms = Arc::new(AtomicI64::new(0));
    let gathering = Gathering {
        cfg: cfg.clone(),
        local: local.clone(),
        memory: memory.clone(),
        wanted: wanted.clone(),
        viewers: viewers.clone(),
        polled_ms: polled_ms.clone(),
        tx,
    };
    tasks.spawn(gathering.run(tasks.token().clone()));
    let (act_cfg, act_memory, act_local) = (Arc::new(cfg.clone()), memory.clone(), local);
    let timeline_memory = memory;
    Page {
        view: rx,
        viewers,
        polled_ms,
        wanted,
        actions: cfg.web.actions,
        token_file: cfg.web.token_file.clone(),
        act: Arc::new(move |form, who| {
            let (cfg, memory, local) = (act_cfg.clone(), act_memory.clone(), act_local.clone());
            Box::pin(async move { act(&cfg, &memory, &local, form, who).await })
        }),
        timeline: Arc::new(move |host, class| {
            let entries = timeline_memory.lock().map(|m| m.timeline.clone()).unwrap_or_default();
            serde_json::to_string(&view::filter_timeline(&entries, host, class, 300)).unwrap_or_default()
        }),
    }
}

struct Gathering {
    cfg: Config,
    local: Handler,
    memory: Arc<Mutex<Memory>>,
    wanted: Arc<Notify>,
    viewers: Arc<AtomicUsize>,
    polled_ms: Arc<AtomicI64>,
    tx: watch::Sender<Arc<String>>,
}

impl Gathering {
    fn looked_at(&self) -> bool {
        let polled = crate::io::clock::now_ms() - self.polled_ms.load(Ordering::Relaxed) < 30_000;
        self.viewers.load(Ordering::Relaxed) > 0 || polled
    }

    async fn run(self, cancel: CancellationToken) {
        let mut link = Link::new(&self.cfg.broker, "drover supervise page");
        loop {
            if !self.looked_at() {
                // Nobody looks: nothing is gathered, and the next look starts from a fresh view.
                let _ = self.tx.send(Arc::new(String::new()));
                if let Some(conn) = link.connection() {
                    let _ = tokio::time::timeout(Duration::from_secs(2), conn.close(200, "nobody looks".into())).await;
                }
                link.mark_down();
                tokio::select! {
                    _ = self.wanted.notified() => {}
                    _ = cancel.cancelled() => return,
                }
                continue;
            }
            let view = self.gather(&mut link).await;
            let _ = self.tx.send(Arc::new(serde_json::to_string(&view).unwrap_or_default()));
            tokio::select! {
                _ = tokio::time::sleep(self.cfg.web.refresh) => {}
                _ = self.wanted.notified() => {}
                _ = cancel.cancelled() => return,
            }
        }
    }

    async fn gather(&self, link: &mut Link) -> View {
        let now = crate::io::clock::now_ms();
        let (since, expect, count_dead) = {
            let m = self.memory.lock().map_err(|_| ()).ok();
            let since = m.as_ref().and_then(|m| m.timeline.last().map(|e| e.at_ms - 60_000));
            let expect = m.as_ref().map_or(0, |m| m.seen.values().filter(|&&t| now - t < FORGET_HOST_MS).count());
            let count_dead = m.as_ref().is_none_or(|m| m.rounds.is_multiple_of(DEAD_EVERY));
            (since.unwrap_or(now - TIMELINE_SINCE_MS), expect, count_dead)
        };
        let reqs = [Request::Status, Request::Progress, Request::Charts, Request::Timeline { since_ms: since }];
        let asked = fleet::ask_many(&self.cfg, link, &reqs, ANSWER_WITHIN, expect).await;
        let broker = asked.is_ok();
        let mut answers = asked.unwrap_or_else(|e| {
            tracing::debug!("page: the fleet did not answer: {e:#}");
            vec![Vec::new(); reqs.len()]
        });
        // This host's own answers, whatever the broker does.
        for (i, req) in reqs.iter().enumerate() {
            answers[i].retain(|r| r.host != self.cfg.host);
            answers[i].push((self.local)(req.clone()));
        }
        let depths =
            if broker { crate::cli::fleet_status::queue_depths(&self.cfg, link).await } else { BTreeMap::new() };
        let mut dead = BTreeMap::new();
        if broker && count_dead {
            for class in self.cfg.classes.keys() {
                if let Ok(counts) = crate::cli::dead::by_reason(&self.cfg, class).await {
                    dead.insert(class.clone(), counts);
                }
            }
        }
        let [statuses, progress, charts, timeline]: [Vec<Response>; 4] =
            answers.try_into().unwrap_or_else(|_| Default::default());
        let Ok(mut m) = self.memory.lock() else { return self.empty(now, broker) };
        m.rounds = m.rounds.wrapping_add(1);
        for s in &statuses {
            m.seen.insert(s.host.clone(), now);
        }
        m.seen.retain(|_, t| now - *t < FORGET_HOST_MS);
        if count_dead && broker {
            m.dead = dead;
        }
        let mut entries = std::mem::take(&mut m.timeline);
        let known: BTreeSet<(String, i64, String, String)> =
            entries.iter().map(|e| (e.host.clone(), e.at_ms, e.what.clone(), e.scope.clone())).collect();
        for r in timeline {
            entries.extend(
                r.timeline
                    .into_iter()
                    .filter(|e| !known.contains(&(e.host.clone(), e.at_ms, e.what.clone(), e.scope.clone()))),
            );
        }
        let mut merged = crate::timeline::merge(vec![entries]);
        let excess = merged.len().saturating_sub(TIMELINE_KEEP);
        merged.drain(..excess);
        m.timeline = merged;
        let answered: BTreeSet<String> = statuses.iter().map(|r| r.host.clone()).collect();
        let not_answering = m.seen.keys().filter(|h| !answered.contains(*h)).cloned().collect();
        let dead = m.dead.clone();
        let rollouts = view::rollout_waves(&m.timeline, now - ROLLOUTS_SINCE_MS);
        drop(m);
        let mut v = self.build(now, broker, statuses, progress, charts, depths, dead, not_answering);
        v.rollouts = rollouts;
        v
    }

    fn empty(&self, now: i64, broker: bool) -> View {
        self.build(now, broker, vec![], vec![], vec![], BTreeMap::new(), BTreeMap::new(), vec![])
    }

    #[allow(clippy::too_many_arguments)]
    fn build(
        &self,
        now: i64,
        broker: bool,
        statuses: Vec<Response>,
        progress: Vec<Response>,
        charts: Vec<Response>,
        depths: BTreeMap<String, Option<u32>>,
        dead: BTreeMap<String, BTreeMap<String, usize>>,
        not_answering: Vec<String>,
    ) -> View {
        let mut by_class: BTreeMap<String, ClassView> = BTreeMap::new();
        for c in self.cfg.classes.keys() {
            by_class.entry(c.clone()).or_insert_with(|| new_class(c));
        }
        // Charts: every host's run times pooled, each host's drift line; the baseline of the
        // host that knows one (each supervisor learns the fleet's).
        let mut durations: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for r in &charts {
            for (class, chart) in &r.charts {
                let c = by_class.entry(class.clone()).or_insert_with(|| new_class(class));
                durations.entry(class.clone()).or_default().extend(chart.durations.iter().copied());
                c.scores.insert(r.host.clone(), chart.scores.iter().copied().collect());
                if c.baseline.is_none() || r.host == self.cfg.host {
                    c.baseline = chart.baseline.or(c.baseline);
                }
            }
        }
        for (class, c) in by_class.iter_mut() {
            let marks: Vec<f64> = c.baseline.map(|b| vec![b.median_s, b.p99_s]).unwrap_or_default();
            c.histogram = view::histogram(durations.get(class).map_or(&[][..], |d| &d[..]), &marks, 24);
            c.usual_s = usual(class, &charts, c.baseline);
            c.queued = depths.get(class).copied().flatten();
            c.dead = dead.get(class).cloned();
        }
        let orders: Vec<(String, Progress)> =
            progress.iter().flat_map(|r| r.progress.iter().map(move |p| (r.host.clone(), p.clone()))).collect();
        let mut firing: BTreeMap<crate::alerts::AlertKey, Alert> = BTreeMap::new();
        let mut hosts = Vec::new();
        for r in statuses {
            let Some(status) = r.status else { continue };
            let mut ages = BTreeMap::new();
            for u in &status.units {
                let c = by_class.entry(u.class.clone()).or_insert_with(|| new_class(&u.class));
                *c.units_by_health.entry(u.health.clone()).or_default() += 1;
                if let Some(j) = &u.job {
                    c.running += 1;
                    let age = view::age(j.age_s, c.usual_s);
                    ages.insert(u.unit.clone(), age.clone());
                    let (host, unit) = (status.host.clone(), u.unit.clone());
                    c.jobs.push(JobView { host, unit, job: j.clone(), age });
                }
            }
            for a in &status.firing {
                firing.entry(a.key.clone()).or_insert_with(|| a.clone());
            }
            let host_drain = view::host_drain(&orders, &status.host);
            hosts.push(HostView {
                safe_to_power_off: host_drain.is_some_and(|p| p.safe_to_power_off),
                draining: host_drain.is_some(),
                ages,
                status,
            });
        }
        hosts.sort_by(|a, b| a.status.host.cmp(&b.status.host));
        for c in by_class.values_mut() {
            c.jobs.sort_by(|a, b| b.job.age_s.total_cmp(&a.job.age_s));
            c.jobs.truncate(JOBS_SHOWN);
        }
        let alerts: Vec<AlertView> = firing
            .into_values()
            .map(|a| AlertView {
                runbook: view::runbook(&a.key.name, &a.annotations, self.cfg.web.runbooks.as_deref()),
                alert: a,
            })
            .collect();
        let mut drains = Vec::new();
        let mut quarantines = Vec::new();
        for (host, p) in orders {
            let Some(o) = p.order.clone() else { continue };
            match o.kind {
                Kind::Drain | Kind::Cordon => drains.push(p),
                Kind::Quarantine | Kind::Pause => {
                    let mut evidence = vec![o.reason.clone()];
                    for a in alerts.iter().filter(|a| a.alert.key.label("host") == host) {
                        if let Some(e) = a.alert.annotations.get("evidence").filter(|e| !evidence.contains(e)) {
                            evidence.push(e.clone());
                        }
                    }
                    let probe = view::probe_state(&o);
                    quarantines.push(QuarantineView { host, order: o, evidence, probe, units: p.units });
                }
            }
        }
        View {
            at: crate::job::rfc3339(now),
            served_by: self.cfg.host.clone(),
            actions: self.cfg.web.actions,
            refresh_ms: self.cfg.web.refresh.as_millis() as u64,
            broker,
            hosts,
            not_answering,
            classes: by_class.into_values().collect(),
            drains,
            rollouts: vec![],
            quarantines,
            alerts,
            dead_reasons: crate::dead::REASONS,
        }
    }
}

fn new_class(c: &str) -> ClassView {
    ClassView {
        class: c.to_string(),
        queued: None,
        running: 0,
        units_by_health: BTreeMap::new(),
        dead: None,
        usual_s: None,
        baseline: None,
        histogram: vec![],
        scores: BTreeMap::new(),
        jobs: vec![],
    }
}

/// A class's usual run time: its baseline median, or the median of the recent run times seen.
fn usual(class: &str, charts: &[Response], baseline: Option<crate::drift::Baseline>) -> Option<f64> {
    if let Some(b) = baseline {
        return Some(b.median_s);
    }
    let mut d: Vec<f64> = charts
        .iter()
        .filter_map(|r| r.charts.get(class))
        .flat_map(|c: &ClassChart| c.durations.iter().rev().take(9).copied())
        .collect();
    if d.is_empty() {
        return None;
    }
    d.sort_by(f64::total_cmp);
    Some(d[d.len() / 2])
}

/// Carries out a page's action on behalf of `who`: validated against the fleet last seen, sent
/// to the supervisor of the host concerned (this one directly), recorded in its timeline by it.
async fn act(cfg: &Config, memory: &Mutex<Memory>, local: &Handler, form: ActionForm, who: String) -> Outcome {
    let hosts: Vec<String> = {
        let m = memory.lock().map_err(|_| (StatusCode::INTERNAL_SERVER_ERROR, vec!["state poisoned".to_string()]))?;
        let mut h: Vec<String> = m.seen.keys().cloned().collect();
        if !h.contains(&cfg.host) {
            h.push(cfg.host.clone());
        }
        h
    };
    let classes: Vec<String> = cfg.classes.keys().cloned().collect();
    let action = form.validate(&hosts, &classes, crate::dead::REASONS).map_err(|p| (StatusCode::BAD_REQUEST, p))?;
    let (host, req) = match action {
        Action::Drain { host, scope, deadline, reason } => {
            (host, Request::Drain { scope, deadline_s: deadline.as_secs_f64(), reason, who })
        }
        Action::Cordon { host, scope, reason } => (host, Request::Cordon { scope, reason, who }),
        Action::Undrain { host, scope, reason } => (host, Request::Undrain { scope, reason, who }),
        Action::Requeue { class, dead_reason, reason } => {
            return requeue(cfg, local, class, dead_reason, reason, who).await
        }
    };
    let answer = if host == cfg.host {
        local(req)
    } else {
        let answers = fleet::ask(cfg, &Target::Host(host.clone()), &req, Duration::from_secs(15))
            .await
            .map_err(|e| (StatusCode::BAD_GATEWAY, vec![format!("{e:#}")]))?;
        answers.into_iter().next().ok_or_else(|| {
            (StatusCode::BAD_GATEWAY, vec![format!("the supervisor of {host} did not answer within 15 s")])
        })?
    };
    match (answer.ok, answer.error) {
        (true, None) => Ok(format!("done on {host}")),
        (_, Some(e)) => Err((StatusCode::BAD_REQUEST, vec![e])),
        (false, None) => Err((StatusCode::BAD_GATEWAY, vec![format!("{host} refused")])),
    }
}

async fn requeue(
    cfg: &Config,
    local: &Handler,
    class: String,
    dead_reason: Option<String>,
    reason: String,
    who: String,
) -> Outcome {
    let selection = match dead_reason {
        Some(r) => crate::dead::Selection::Reason(r),
        None => crate::dead::Selection::All,
    };
    let r = crate::cli::dead::Requeue {
        class: class.clone(),
        selection,
        why: reason.clone(),
        deadline: None,
        dry_run: false,
        json: false,
    };
    let done = crate::cli::dead::requeue_letters(cfg, &r, &who)
        .await
        .map_err(|e| (StatusCode::BAD_GATEWAY, vec![format!("{e:#}")]))?;
    if !done.ids.is_empty() {
        let (what, why) = crate::cli::dead::requeue_note(&class, &done.ids, &reason);
        local(Request::Note { what, why, who });
    }
    if !done.problems.is_empty() {
        return Err((StatusCode::BAD_REQUEST, done.problems));
    }
    Ok(format!("{} of {} dead letter(s) of class {class} requeued", done.ids.len(), done.taken))
}
