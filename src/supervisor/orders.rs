//! The supervisor's side of maintenance and of the control protocol: the orders in force
//! (persisted, so a restart resumes a drain), the timeline (an append-only JSON-lines file:
//! who, what, why, when), and the answer to each request, whether it came over the local
//! socket or over the broker's control exchange.

use crate::io::clock::now_ms;
use crate::io::control::{Request, Response, StatusReport, TimelineEntry};
use crate::job::rfc3339;
use crate::maintenance::{Kind, Memory, Moved, Order, Progress, Scope};
use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

const MAX_MOVED: usize = 1000;

#[derive(Default)]
pub struct Maintenance {
    pub orders: Vec<Order>,
    pub mem: Memory,
    /// Jobs requeued away from this host's units by drains, and where they went.
    pub moved: Vec<Moved>,
    /// Recent job starts (job, where), newest last: the start elsewhere of a job requeued here
    /// may be seen before the requeue (two workers' events are not ordered).
    pub recent_starts: std::collections::VecDeque<(String, String, i64)>,
    pub progress: Vec<Progress>,
    /// Usual run time per class (seconds), from the latency watch.
    pub expected_s: BTreeMap<String, f64>,
    /// Units an operator released from quarantine, for the watch to forget their record.
    pub released: Vec<String>,
    /// Classes an operator asked to start a new latency baseline for (`host_only`), for the
    /// watch to apply.
    pub rebaselines: Vec<(String, bool)>,
    /// The fleet's verdicts from the judge's news, handed on to this host's workers.
    pub verdicts: crate::verdicts::Fleet,
    /// Per class: recent run times, the drift score over time, the baseline (the page's charts).
    pub charts: BTreeMap<String, crate::page::ClassChart>,
}

/// Everything a request may touch.
pub struct Ctx {
    pub host: String,
    pub report: Arc<Mutex<StatusReport>>,
    pub maint: Arc<Mutex<Maintenance>>,
    pub wake: Arc<tokio::sync::Notify>,
    pub orders_path: PathBuf,
    pub timeline: Timeline,
}

#[derive(Clone)]
pub struct Timeline {
    pub path: PathBuf,
    pub host: String,
}

impl Timeline {
    pub fn record(&self, who: &str, what: &str, why: &str, scope: &str) {
        let now = now_ms();
        let e = TimelineEntry {
            at: rfc3339(now),
            at_ms: now,
            host: self.host.clone(),
            who: who.into(),
            what: what.into(),
            why: why.into(),
            scope: scope.into(),
        };
        let write = || -> std::io::Result<()> {
            if let Some(dir) = self.path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&self.path)?;
            writeln!(f, "{}", serde_json::to_string(&e).unwrap_or_default())
        };
        if let Err(err) = write() {
            tracing::warn!("cannot write the timeline {}: {err}", self.path.display());
        }
    }

    pub fn since(&self, since_ms: i64) -> Vec<TimelineEntry> {
        let Ok(f) = std::fs::File::open(&self.path) else { return Vec::new() };
        std::io::BufReader::new(f)
            .lines()
            .map_while(Result::ok)
            .filter_map(|l| serde_json::from_str::<TimelineEntry>(&l).ok())
            .filter(|e| e.at_ms >= since_ms)
            .collect()
    }
}

pub fn load_orders(path: &PathBuf) -> Vec<Order> {
    std::fs::read(path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
}

fn save_orders(path: &Path, orders: &[Order]) -> std::io::Result<()> {
    write_atomically(path, &serde_json::to_vec_pretty(orders).unwrap_or_default())
}

/// Writes a state file whole or not at all (a temporary file, then a rename).
pub fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// Scopes equal, a unit named by its instance (`w-1`) matching its full name.
fn same_scope(a: &Scope, b: &Scope) -> bool {
    match (a, b) {
        (Scope::Unit(x), Scope::Unit(y)) => {
            x == y || x.contains(&format!("@{y}.service")) || y.contains(&format!("@{x}.service"))
        }
        _ => a == b,
    }
}

/// Whether a scope concerns this host at all (a host scope for another host does not).
fn concerns(scope: &Scope, host: &str) -> bool {
    !matches!(scope, Scope::Host(h) if h != host)
}

impl Ctx {
    pub fn handle(&self, req: Request) -> Response {
        match req {
            Request::Status => {
                let mut r = Response::ok(&self.host);
                r.status = self.report.lock().ok().map(|r| r.clone());
                r
            }
            Request::Progress => {
                let mut r = Response::ok(&self.host);
                r.progress = self.maint.lock().map(|m| m.progress.clone()).unwrap_or_default();
                r
            }
            Request::Timeline { since_ms } => {
                let mut r = Response::ok(&self.host);
                r.timeline = self.timeline.since(since_ms);
                r
            }
            Request::Verdicts => {
                let mut r = Response::ok(&self.host);
                r.verdicts = self.maint.lock().map(|m| m.verdicts.all()).unwrap_or_default();
                r
            }
            Request::Charts => {
                let mut r = Response::ok(&self.host);
                r.charts = self.maint.lock().map(|m| m.charts.clone()).unwrap_or_default();
                r
            }
            Request::Note { what, why, who } => {
                self.timeline.record(&who, &what, &why, &format!("host {}", self.host));
                Response::ok(&self.host)
            }
            Request::Rebaseline { class, host_only, reason, who } => {
                if reason.trim().is_empty() {
                    return Response::error(&self.host, "--reason is required");
                }
                let Ok(mut m) = self.maint.lock() else { return Response::error(&self.host, "state poisoned") };
                m.rebaselines.push((class.clone(), host_only));
                drop(m);
                let what = if host_only { "new latency baseline on this host" } else { "new latency baseline" };
                self.timeline.record(&who, what, &reason, &format!("class {class}"));
                Response::ok(&self.host)
            }
            Request::Drain { scope, deadline_s, reason, who } => {
                let deadline_ms = now_ms() + (deadline_s.max(0.0) * 1000.0) as i64;
                self.add(Kind::Drain, scope, reason, who, Some(deadline_ms))
            }
            Request::Cordon { scope, reason, who } => self.add(Kind::Cordon, scope, reason, who, None),
            Request::Undrain { scope, reason, who } => {
                if reason.trim().is_empty() {
                    return Response::error(&self.host, "--reason is required");
                }
                let Ok(mut m) = self.maint.lock() else { return Response::error(&self.host, "state poisoned") };
                let before = m.orders.len();
                m.orders.retain(|o| !same_scope(&o.scope, &scope));
                let lifted = before - m.orders.len();
                if let Scope::Unit(u) = &scope {
                    m.released.push(u.clone());
                }
                if let Err(e) = save_orders(&self.orders_path, &m.orders) {
                    return Response::error(&self.host, format!("cannot save the orders: {e}"));
                }
                drop(m);
                if lifted > 0 {
                    self.timeline.record(&who, "undrain", &reason, &scope.to_string());
                }
                self.wake.notify_one();
                let mut r = Response::ok(&self.host);
                r.error = (lifted == 0).then(|| format!("nothing drained or cordoned for {scope} on {}", self.host));
                r
            }
        }
    }

    /// Adds an order the supervisor itself decided (quarantine, pause), held until
    /// `until_ms()` (asked only when the order is added); `false` if one of that kind is
    /// already in force for the scope.
    pub fn add_own(&self, kind: Kind, scope: Scope, reason: &str, until_ms: impl FnOnce() -> Option<i64>) -> bool {
        let Ok(m) = self.maint.lock() else { return false };
        if m.orders.iter().any(|o| o.kind == kind && o.scope == scope) {
            return false;
        }
        drop(m);
        self.add(kind, scope, reason.to_string(), "drover".into(), until_ms()).ok
    }

    /// Lifts the supervisor's own order of `kind` for `scope` (a suspect's cordon whose jobs
    /// completed normally); an operator's order stays. Returns whether one was lifted.
    pub fn lift_own(&self, kind: Kind, scope: &Scope, why: &str) -> bool {
        let Ok(mut m) = self.maint.lock() else { return false };
        let before = m.orders.len();
        m.orders.retain(|o| !(o.kind == kind && o.scope == *scope && o.who == "drover"));
        if m.orders.len() == before {
            return false;
        }
        let _ = save_orders(&self.orders_path, &m.orders);
        drop(m);
        self.timeline.record("drover", &format!("{kind:?} lifted").to_lowercase(), why, &scope.to_string());
        self.wake.notify_one();
        true
    }

    /// The supervisor's own orders whose hold ran out begin their probe; returns them.
    pub fn begin_probes(&self, now_ms: i64) -> Vec<Order> {
        let Ok(mut m) = self.maint.lock() else { return Vec::new() };
        let mut begun = Vec::new();
        for o in m.orders.iter_mut() {
            let due = matches!(o.kind, Kind::Quarantine | Kind::Pause)
                && o.probing_since_ms.is_none()
                && o.deadline_ms.is_some_and(|d| d <= now_ms);
            if due {
                o.probing_since_ms = Some(now_ms);
                o.probes += 1;
                begun.push(o.clone());
            }
        }
        if begun.is_empty() {
            return begun;
        }
        let _ = save_orders(&self.orders_path, &m.orders);
        drop(m);
        for o in &begun {
            let what = match o.kind {
                Kind::Pause => "pause hold over: one unit probes with one job",
                _ => "quarantine hold over: probing with one job",
            };
            self.timeline.record("drover", what, &o.reason, &o.scope.to_string());
        }
        self.wake.notify_one();
        begun
    }

    /// A probe job's outcome: a pass lifts the order, a failure puts it back on hold until
    /// `until_ms`. `what` says which job and how it ended. Returns the order as it was.
    pub fn settle_probe(&self, id: &str, passed: bool, until_ms: i64, what: &str) -> Option<Order> {
        let mut m = self.maint.lock().ok()?;
        let i = m.orders.iter().position(|o| o.id == id && o.probing_since_ms.is_some())?;
        let before = m.orders[i].clone();
        if passed {
            m.orders.remove(i);
        } else {
            m.orders[i].probing_since_ms = None;
            m.orders[i].deadline_ms = Some(until_ms);
        }
        let _ = save_orders(&self.orders_path, &m.orders);
        drop(m);
        let kind = format!("{:?}", before.kind).to_lowercase();
        let (event, why) = if passed {
            (format!("{kind} lifted: the probe passed"), what.to_string())
        } else {
            (
                format!("{kind} again until {}: the probe failed", rfc3339(until_ms)),
                format!("{what}; {}", before.reason),
            )
        };
        self.timeline.record("drover", &event, &why, &before.scope.to_string());
        self.wake.notify_one();
        Some(before)
    }

    fn add(&self, kind: Kind, scope: Scope, reason: String, who: String, deadline_ms: Option<i64>) -> Response {
        if reason.trim().is_empty() {
            return Response::error(&self.host, "--reason is required");
        }
        if !concerns(&scope, &self.host) {
            return Response::error(&self.host, format!("{scope} is not this host ({})", self.host));
        }
        let order = Order {
            id: uuid::Uuid::new_v4().simple().to_string()[..12].to_string(),
            kind,
            scope: scope.clone(),
            reason: reason.clone(),
            who: who.clone(),
            at_ms: now_ms(),
            deadline_ms,
            probing_since_ms: None,
            probes: 0,
        };
        let Ok(mut m) = self.maint.lock() else { return Response::error(&self.host, "state poisoned") };
        // A new order for the same scope replaces the old one (a cordon becomes a drain, a
        // drain gets a new deadline).
        m.orders.retain(|o| o.scope != scope);
        m.orders.push(order.clone());
        if let Err(e) = save_orders(&self.orders_path, &m.orders) {
            return Response::error(&self.host, format!("cannot save the orders: {e}"));
        }
        drop(m);
        let until = deadline_ms.map(rfc3339).unwrap_or_default();
        let what = match kind {
            Kind::Drain => format!("drain (deadline {until})"),
            Kind::Cordon => "cordon".into(),
            Kind::Quarantine => format!("quarantine (probe after {until})"),
            Kind::Pause => format!("pause (probe after {until})"),
        };
        self.timeline.record(&who, &what, &reason, &scope.to_string());
        self.wake.notify_one();
        let mut r = Response::ok(&self.host);
        r.progress = vec![Progress { order: Some(order), host: self.host.clone(), ..Default::default() }];
        r
    }
}

/// Whether a requeue moved the job away on the supervisor's order (a drain or a quarantine),
/// rather than for the worker's own reasons (a lost channel, a hand-back).
fn moved_away(reason: &str) -> bool {
    reason.contains("drain") || reason.contains("quarantine")
}

/// Records where a job requeued by a drain or a quarantine went, from the job events; returns the move once
/// its destination is known (for the timeline).
pub fn track_moves(maint: &Arc<Mutex<Maintenance>>, e: &crate::events::JobEvent, host: &str) -> Option<Moved> {
    use crate::events::EventKind;
    let job = e.job_id.as_ref()?;
    let mut m = maint.lock().ok()?;
    match e.event {
        EventKind::Requeued if e.host == host && moved_away(e.reason.as_deref().unwrap_or("")) => {
            // Started elsewhere since, already (its event overtook this one)?
            let (here, at_ms) = (format!("{} on {}", e.unit, e.host), crate::job::parse_rfc3339_ms(&e.at).unwrap_or(0));
            let to = m.recent_starts.iter().rev().find(|(j, to, t)| j == job && *to != here && *t >= at_ms);
            let why = e.reason.clone().unwrap_or_default();
            let mv = Moved { job: job.clone(), from: e.unit.clone(), to: to.map(|(_, to, _)| to.clone()), why };
            m.moved.push(mv.clone());
            let excess = m.moved.len().saturating_sub(MAX_MOVED);
            m.moved.drain(..excess);
            return mv.to.is_some().then_some(mv);
        }
        EventKind::Started => {
            let at = format!("{} on {}", e.unit, e.host);
            let at_ms = crate::job::parse_rfc3339_ms(&e.at).unwrap_or(0);
            m.recent_starts.push_back((job.clone(), at.clone(), at_ms));
            if m.recent_starts.len() > MAX_MOVED {
                m.recent_starts.pop_front();
            }
            // Moved: started on another host, or on another unit here (unit names repeat across hosts).
            let elsewhere = |mv: &Moved| e.host != host || mv.from != e.unit;
            if let Some(mv) = m.moved.iter_mut().rev().find(|mv| &mv.job == job && mv.to.is_none() && elsewhere(mv)) {
                mv.to = Some(at);
                return Some(mv.clone());
            }
        }
        _ => {}
    }
    None
}
