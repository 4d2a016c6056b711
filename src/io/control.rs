//! The supervisor's control interface: a Unix socket with owner-only permissions that also
//! checks the peer's uid, and a small JSON protocol (one request line, one response line).
//! `drover status` is its first client.

use serde::{Deserialize, Serialize};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    Status,
    /// Drain a scope: cordon, let jobs finish until `deadline_s` from now, requeue the rest,
    /// stop the units.
    Drain {
        scope: crate::maintenance::Scope,
        deadline_s: f64,
        reason: String,
        who: String,
    },
    /// Take no new jobs in a scope; running ones go on.
    Cordon {
        scope: crate::maintenance::Scope,
        reason: String,
        who: String,
    },
    /// Lift drains and cordons of a scope.
    Undrain {
        scope: crate::maintenance::Scope,
        reason: String,
        who: String,
    },
    /// Progress of the maintenance orders in force.
    Progress,
    /// What Drover did and why, since a time (ms since the epoch).
    Timeline {
        since_ms: i64,
    },
    /// Records a line in the host's timeline (rollout steps).
    Note {
        what: String,
        why: String,
        who: String,
    },
    /// Starts a new latency baseline for a class (after a deploy that changed it on purpose):
    /// fleet-wide, or only this host's (`host_only`).
    Rebaseline {
        class: String,
        host_only: bool,
        reason: String,
        who: String,
    },
    /// The fleet's verdicts as the judge last sent them (a worker's, for fair charging).
    Verdicts,
    /// Per class, the recent run times this supervisor saw, its drift score over time and its
    /// baseline (the page's charts).
    Charts,
}

impl Request {
    /// Who the request says sent it, for the requests that carry one.
    pub fn who_mut(&mut self) -> Option<&mut String> {
        match self {
            Request::Drain { who, .. }
            | Request::Cordon { who, .. }
            | Request::Undrain { who, .. }
            | Request::Note { who, .. }
            | Request::Rebaseline { who, .. } => Some(who),
            Request::Status | Request::Progress | Request::Timeline { .. } | Request::Verdicts | Request::Charts => {
                None
            }
        }
    }

    /// Records the sender the broker vouches for: the AMQP `user-id` property, which RabbitMQ
    /// checks against the publishing connection's user. A claim in the body that says more (the
    /// person at the operator's terminal, or an operator a supervisor's page took the token of)
    /// rides along as `<claim> via <broker user>`: the part after `via` is the one checked. A
    /// request without a user-id keeps its claim, marked as unverified.
    pub fn attribute(&mut self, broker_user: Option<&str>) {
        if let Some(who) = self.who_mut() {
            *who = match broker_user {
                Some(user) if who.is_empty() || who == user => user.to_string(),
                Some(user) => format!("{who} via {user}"),
                None => format!("{who} (unverified)"),
            };
        }
    }
}

pub use crate::timeline::TimelineEntry;

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct StatusReport {
    pub host: String,
    /// When this report was made (RFC 3339).
    pub at: String,
    /// Whether the supervisor currently reaches systemd.
    pub systemd_connected: bool,
    pub units: Vec<UnitStatus>,
    /// Recent alerts raised by the supervisor about units, newest last.
    pub alerts: Vec<AlertRecord>,
    /// Latency, SLA and stall alerts firing now.
    #[serde(default)]
    pub firing: Vec<crate::alerts::Alert>,
    /// Recently resolved ones, newest last.
    #[serde(default)]
    pub resolved: Vec<crate::alerts::Alert>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct UnitStatus {
    pub unit: String,
    pub class: String,
    /// systemd's ActiveState/SubState, as systemd says them.
    pub state: String,
    pub health: String,
    /// Restarts done by this supervisor since it started.
    pub restarts: u32,
    pub main_pid: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<CurrentJob>,
    /// Why the unit is unhealthy (preflight output, last exit), when it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct CurrentJob {
    pub id: String,
    pub attempt: u32,
    pub since: String,
    pub age_s: f64,
    /// The fraction done and the note its handler last reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct AlertRecord {
    pub at: String,
    pub kind: String,
    pub unit: String,
    pub message: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default)]
    pub host: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<StatusReport>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub progress: Vec<crate::maintenance::Progress>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub timeline: Vec<TimelineEntry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verdicts: Vec<crate::verdicts::HostVerdicts>,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub charts: std::collections::BTreeMap<String, crate::page::ClassChart>,
}

/// Serves requests until `cancel` fires. The socket is created owner-only (0600, in a 0700
/// directory when Drover creates it), and each peer's uid must be ours or root's.
/// Answers one request (the supervisor's side of the protocol).
pub type Handler = Arc<dyn Fn(Request) -> Response + Send + Sync>;

impl Response {
    pub fn error(host: &str, e: impl std::fmt::Display) -> Response {
        Response {
            ok: false,
            host: host.into(),
            status: None,
            progress: vec![],
            timeline: vec![],
            error: Some(e.to_string()),
            verdicts: vec![],
            charts: Default::default(),
        }
    }

    pub fn ok(host: &str) -> Response {
        Response {
            ok: true,
            host: host.into(),
            status: None,
            progress: vec![],
            timeline: vec![],
            error: None,
            verdicts: vec![],
            charts: Default::default(),
        }
    }
}

/// Answers requests on the Unix socket at `path` until cancelled; each connection is a task of
/// `tasks` with a 10 s deadline.
pub async fn serve(path: PathBuf, handler: Handler, tasks: crate::tasks::Tasks) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        if !dir.exists() {
            std::fs::create_dir_all(dir)?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
    }
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    loop {
        let (stream, _) = tokio::select! {
            r = listener.accept() => r?,
            _ = tasks.cancelled() => break,
        };
        let allowed = stream.peer_cred().map(|c| c.uid() == me || c.uid() == 0).unwrap_or(false);
        let handler = handler.clone();
        tasks.spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(10), answer(stream, allowed, handler)).await;
        });
    }
    let _ = std::fs::remove_file(&path);
    Ok(())
}

async fn answer(stream: UnixStream, allowed: bool, handler: Handler) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    BufReader::new(read).take(64 * 1024).read_line(&mut line).await?;
    let response = if !allowed {
        Response::error("", "permission denied: not the supervisor's user")
    } else {
        match serde_json::from_str::<Request>(&line) {
            Ok(req) => handler(req),
            Err(e) => Response::error("", format!("bad request: {e}")),
        }
    };
    let mut text = serde_json::to_string(&response).unwrap_or_default();
    text.push('\n');
    write.write_all(text.as_bytes()).await
}

use tokio::io::AsyncReadExt;

/// Sends one request to the supervisor at `path`.
pub async fn request(path: &Path, req: &Request, timeout: Duration) -> anyhow::Result<Response> {
    let exchange = async {
        let mut stream = UnixStream::connect(path).await.map_err(|e| {
            anyhow::anyhow!("cannot reach the supervisor at {} ({e}): is `drover supervise` running?", path.display())
        })?;
        let mut text = serde_json::to_string(req)?;
        text.push('\n');
        stream.write_all(text.as_bytes()).await?;
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line).await?;
        Ok::<_, anyhow::Error>(serde_json::from_str::<Response>(&line)?)
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| anyhow::anyhow!("the supervisor at {} did not answer within {timeout:?}", path.display()))?
}

/// The status as a table for people.
pub fn render_table(r: &StatusReport) -> String {
    let mut out = format!(
        "host {}  ({} units, systemd {})\n",
        r.host,
        r.units.len(),
        if r.systemd_connected { "connected" } else { "UNREACHABLE" }
    );
    out.push_str(&format!(
        "{:<34} {:<12} {:<18} {:<13} {:>8}  {}\n",
        "UNIT", "CLASS", "STATE", "HEALTH", "RESTARTS", "JOB"
    ));
    for u in &r.units {
        let job = match &u.job {
            Some(j) => {
                let progress = j.progress.map(|p| format!(", {}", crate::progress::percent(p))).unwrap_or_default();
                let note = j.note.as_ref().map(|n| format!(": {n}")).unwrap_or_default();
                format!("{} (attempt {}, {}{progress}){note}", short_id(&j.id), j.attempt, age(j.age_s))
            }
            None => "-".into(),
        };
        out.push_str(&format!(
            "{:<34} {:<12} {:<18} {:<13} {:>8}  {}\n",
            u.unit, u.class, u.state, u.health, u.restarts, job
        ));
        if let Some(d) = &u.detail {
            out.push_str(&format!("    └ {d}\n"));
        }
    }
    if !r.firing.is_empty() {
        out.push_str("FIRING:\n");
        for a in &r.firing {
            out.push_str(&format!("  {} {}: {}\n", a.key.name, labels(&a.key), a.summary));
        }
    }
    if !r.alerts.is_empty() {
        out.push_str("recent alerts:\n");
        for a in r.alerts.iter().rev().take(10) {
            out.push_str(&format!("  {} {} {}: {}\n", a.at, a.kind, a.unit, a.message));
        }
    }
    out
}

fn labels(k: &crate::alerts::AlertKey) -> String {
    k.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

/// Firing and recent alerts for people (`drover alerts`).
pub fn render_alerts(r: &StatusReport) -> String {
    let mut out = String::new();
    if r.firing.is_empty() {
        out.push_str("no alert firing\n");
    }
    for a in &r.firing {
        out.push_str(&format!(
            "FIRING   {} [{}] {} since {}\n  {}\n",
            a.key.name,
            a.severity.as_str(),
            labels(&a.key),
            crate::job::rfc3339(a.since_ms),
            a.summary
        ));
        for (k, v) in &a.annotations {
            if !v.is_empty() {
                out.push_str(&format!("    {k}: {v}\n"));
            }
        }
    }
    for a in r.resolved.iter().rev().take(20) {
        out.push_str(&format!(
            "resolved {} {} {} .. {}: {}\n",
            a.key.name,
            labels(&a.key),
            crate::job::rfc3339(a.since_ms),
            a.resolved_ms.map(crate::job::rfc3339).unwrap_or_default(),
            a.summary
        ));
    }
    for a in r.alerts.iter().rev().take(20) {
        out.push_str(&format!("unit     {} {} {}: {}\n", a.at, a.kind, a.unit, a.message));
    }
    out
}

fn short_id(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

fn age(s: f64) -> String {
    let s = s.max(0.0) as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// Reads the job a worker is running from its sd_notify STATUS
/// (`running job <id> (attempt <n>) since <rfc3339>`).
pub fn parse_worker_status(text: &str, now_ms: i64) -> Option<CurrentJob> {
    let rest = text.strip_prefix("running job ")?;
    let (id, rest) = rest.split_once(" (attempt ")?;
    let (attempt, rest) = rest.split_once(") since ")?;
    // `, 40% (note)` after the start time when the handler reports progress.
    let (since, reported) = rest.split_once(", ").unwrap_or((rest, ""));
    let since = since.trim();
    let (percent, note) = reported.split_once(" (").unwrap_or((reported, ""));
    let progress = percent.strip_suffix('%').and_then(|p| p.parse::<f64>().ok()).map(|p| p / 100.0);
    let note = note.strip_suffix(')').filter(|n| !n.is_empty()).map(str::to_string);
    let started = humantime::parse_rfc3339_weak(since).ok().map(crate::job::to_ms)?;
    Some(CurrentJob {
        id: id.to_string(),
        attempt: attempt.parse().ok()?,
        since: since.to_string(),
        age_s: (now_ms - started).max(0) as f64 / 1000.0,
        progress,
        note,
    })
}

/// A worker's STATUS line while it runs a job (read back by [`parse_worker_status`]).
pub fn worker_status(id: &str, attempt: u32, since: &str, progress: Option<f64>, note: Option<&str>) -> String {
    let mut s = format!("running job {id} (attempt {attempt}) since {since}");
    if let Some(p) = progress {
        s.push_str(&format!(", {}", crate::progress::percent(p)));
        if let Some(n) = note.filter(|n| !n.is_empty()) {
            // Parentheses would end the note early when read back.
            s.push_str(&format!(" ({})", n.replace(['(', ')', '\n'], " ")));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sender_is_the_broker_user_and_a_claim_only_rides_along() {
        let cordon = |who: &str| Request::Cordon {
            scope: crate::maintenance::Scope::Host("h".into()),
            reason: "r".into(),
            who: who.into(),
        };
        let cases = [
            (
                "alice (page, from 10.0.0.5)",
                Some("drover-supervisor"),
                "alice (page, from 10.0.0.5) via drover-supervisor",
            ),
            ("ops", Some("ops"), "ops"),
            ("", Some("ops"), "ops"),
            ("mallory", None, "mallory (unverified)"),
        ];
        for (claim, user, want) in cases {
            let mut r = cordon(claim);
            r.attribute(user);
            assert_eq!(r.who_mut().map(|w| w.as_str()), Some(want), "{claim:?} from {user:?}");
        }
        let mut status = Request::Status;
        status.attribute(Some("ops"));
        assert_eq!(status, Request::Status);
    }

    #[test]
    fn worker_status_lines_are_read_back() {
        let j = parse_worker_status("running job abc-1 (attempt 2) since 2026-11-21T10:00:00.000Z", 1_763_719_260_000)
            .expect("parsed");
        assert_eq!((j.id.as_str(), j.attempt), ("abc-1", 2));
        assert_eq!(parse_worker_status("idle", 0), None);
        let line = worker_status("abc-1", 2, "2026-11-21T10:00:00.000Z", Some(0.4), Some("step 12 (of 30)"));
        assert_eq!(line, "running job abc-1 (attempt 2) since 2026-11-21T10:00:00.000Z, 40% (step 12  of 30 )");
        let j = parse_worker_status(&line, 1_763_719_260_000).expect("parsed");
        assert_eq!((j.id.as_str(), j.progress, j.note.as_deref()), ("abc-1", Some(0.4), Some("step 12  of 30 ")));
        assert_eq!(parse_worker_status("running job x (attempt z) since now", 0), None);
    }

    #[test]
    fn requests_are_tagged_json() {
        assert_eq!(serde_json::to_string(&Request::Status).expect("json"), r#"{"cmd":"status"}"#);
    }

    #[test]
    fn ages_read_like_durations() {
        assert_eq!((age(5.0), age(125.0), age(7300.0)), ("5s".into(), "2m05s".into(), "2h01m".into()));
    }
}
