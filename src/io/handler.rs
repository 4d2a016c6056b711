//! Running jobs through the user's handler: one process per job (exec mode) or one long-lived
//! process fed JSON lines (persistent mode). See INTERFACE.md for the contract.
//!
//! Beyond INTERFACE.md's variables, each exec-mode attempt gets `DROVER_FENCE` and each
//! persistent-mode job line a `"fence"`: a number larger for every later attempt of the job
//! (also for an uncharged rerun, which keeps `DROVER_ATTEMPT`). A handler with side effects
//! stores it with them and refuses writes with a smaller one, so that a stale attempt's late
//! writes are rejected (ARCHITECTURE.md, "Never twice at once").
//!
//! Every handler runs in a process group of its own, so that a timeout or a drain can stop the
//! whole tree it started (TERM, then KILL after a grace), and leftovers of a finished job are
//! killed too: nothing a job started outlives it. `PR_SET_PDEATHSIG` (SIGKILL) makes the direct
//! child die with the worker the moment the worker dies, under systemd and outside it: the
//! broker hands the job to another worker as soon as this worker's connection drops, and a
//! handler that catches SIGTERM to save its work must not be running then. Under systemd the
//! unit's final SIGKILL reaches whatever else is left in its control group (`KillMode=mixed`).
//!
//! A stop comes in two strengths ([`Stop`]): a drain's deadline stops the attempt with TERM and
//! KILL after the grace; a job the broker has already handed to someone else (channel lost,
//! lease not renewed) is killed at once with SIGKILL, without a grace, because every millisecond
//! of grace is a millisecond of two copies running.

use crate::config::{ClassConfig, Mode};
use crate::events::tail;
use crate::job::{checkpoint_text, rfc3339, Job};
use crate::outcome::Outcome;
use base64::Engine;
use serde::Deserialize;
use std::future::Future;
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::mpsc::UnboundedSender;
use tokio::time::Instant;

mod spawn;

const STDERR_TAIL: usize = 2048;

/// Who the handler runs for: the values of the `DROVER_*` environment variables.
#[derive(Clone, Debug)]
pub struct Identity {
    pub class: String,
    pub host: String,
    pub unit: String,
}

/// Why an attempt is stopped before it ends, and how hard.
#[derive(Clone, Debug, PartialEq)]
pub struct Stop {
    pub why: String,
    /// Kill the process group with SIGKILL now, without the TERM grace: the job already runs
    /// (or is about to run) elsewhere.
    pub at_once: bool,
}

impl Stop {
    /// TERM, then KILL after the grace (a drain's deadline, a requeue on request).
    pub fn gently(why: impl Into<String>) -> Stop {
        Stop { why: why.into(), at_once: false }
    }

    /// SIGKILL now (the job is no longer ours).
    pub fn at_once(why: impl Into<String>) -> Stop {
        Stop { why: why.into(), at_once: true }
    }
}

/// The handler could not be run at all (cannot spawn, never became ready): the job is not at
/// fault, and the worker should give it back and stop.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HandlerDown(pub String);

// One per worker, made once: the size of the larger variant does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Handler {
    Exec(ExecHandler),
    Persistent(PersistentHandler),
}

impl Handler {
    pub fn new(class: &ClassConfig, who: Identity, kill_grace: Duration) -> Handler {
        match class.mode {
            Mode::Exec => {
                let fixed =
                    [("DROVER_CLASS", who.class.as_str()), ("DROVER_HOST", &who.host), ("DROVER_UNIT", &who.unit)];
                let template =
                    if spawn::supported() { spawn::Template::new(&class.command, &fixed, &JOB_VARS) } else { None };
                Handler::Exec(ExecHandler { command: class.command.clone(), who, kill_grace, template })
            }
            Mode::Persistent => Handler::Persistent(PersistentHandler {
                command: class.command.clone(),
                who,
                kill_grace,
                ready_timeout: class.ready_timeout,
                wait_ready: class.wait_ready,
                proc: None,
            }),
        }
    }

    /// Makes the handler ready to take a job (persistent mode: started and, when configured,
    /// ready). Exec mode has nothing to prepare.
    pub async fn prepare(&mut self) -> Result<(), HandlerDown> {
        match self {
            Handler::Exec(_) => Ok(()),
            Handler::Persistent(p) => p.ensure_started().await,
        }
    }

    /// Runs one attempt of its job, for at most its `limit`. When `stop` completes first the
    /// attempt is killed (as hard as it says) and reported as interrupted with the reason it gave.
    pub async fn run(
        &mut self,
        attempt: Attempt<'_>,
        stop: impl Future<Output = Stop>,
    ) -> Result<Outcome, HandlerDown> {
        match self {
            Handler::Exec(e) => e.run(attempt, stop).await,
            Handler::Persistent(p) => p.run(attempt, stop).await,
        }
    }

    pub async fn shutdown(&mut self) {
        if let Handler::Persistent(p) = self {
            p.stop().await;
        }
    }
}

fn command(argv: &[String], who: &Identity) -> Command {
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .env("DROVER_CLASS", &who.class)
        .env("DROVER_HOST", &who.host)
        .env("DROVER_UNIT", &who.unit)
        .process_group(0)
        .kill_on_drop(true);
    // The handler dies with the worker, at once and with SIGKILL, under systemd too: when the
    // worker dies the broker requeues its job at once, while systemd (KillMode=mixed) would only
    // kill the rest of the unit after its stop timeout. PR_SET_PDEATHSIG fires when the *thread*
    // that forked exits, not the process: `drover work` runs a current-thread runtime, so every
    // handler is spawned from the main thread (tokio's `Command::spawn` forks on the calling
    // thread, not on a blocking pool thread that could retire after 10 s idle), and the main
    // thread lives exactly as long as the worker. The hook turns posix_spawn into fork + exec:
    // exec mode starts its handlers through `spawn` instead (the same steps without fork) and
    // comes here only where that cannot run; persistent mode starts its one process here.
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: prctl and getppid are async-signal-safe and touch no memory of ours.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The worker may have died between fork and prctl: then the signal never comes.
            if libc::getppid() != parent {
                return Err(std::io::Error::other("the worker died while starting the handler"));
            }
            Ok(())
        });
    }
    cmd
}

fn signal_group(pgid: u32, signal: i32) {
    // SAFETY: kill(2) with a negative pid signals a process group; no memory is involved.
    // ESRCH (the group is already gone) is the expected, harmless failure.
    unsafe {
        libc::kill(-(pgid as i32), signal);
    }
}

/// A handler process that can be waited for and reaped: std's (through tokio) or [`spawn`]'s.
trait Reap {
    fn reap(&mut self) -> impl Future<Output = std::io::Result<ExitStatus>> + Send;
}

impl Reap for Child {
    fn reap(&mut self) -> impl Future<Output = std::io::Result<ExitStatus>> + Send {
        self.wait()
    }
}

/// An exec-mode run's process: started by [`spawn`], or by std where that cannot run.
enum ExecChild {
    Cloned(spawn::Child),
    Forked(Child),
}

impl ExecChild {
    fn id(&self) -> u32 {
        match self {
            ExecChild::Cloned(c) => c.id(),
            ExecChild::Forked(c) => c.id().unwrap_or(0),
        }
    }
}

impl Reap for ExecChild {
    async fn reap(&mut self) -> std::io::Result<ExitStatus> {
        match self {
            ExecChild::Cloned(c) => c.wait().await,
            ExecChild::Forked(c) => c.wait().await,
        }
    }
}

/// KILL to the whole group now, and reap the child.
async fn kill_group(child: &mut impl Reap, pgid: u32) -> Option<ExitStatus> {
    signal_group(pgid, libc::SIGKILL);
    child.reap().await.ok()
}

/// TERM to the whole group, KILL after `grace`, and reap the child.
async fn stop_group(child: &mut impl Reap, pgid: u32, grace: Duration) -> Option<ExitStatus> {
    signal_group(pgid, libc::SIGTERM);
    let status = match tokio::time::timeout(grace, child.reap()).await {
        Ok(s) => s.ok(),
        Err(_) => None,
    };
    signal_group(pgid, libc::SIGKILL);
    match status {
        Some(s) => Some(s),
        None => child.reap().await.ok(),
    }
}

fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => "ended".into(),
    }
}

pub struct ExecHandler {
    command: Vec<String>,
    who: Identity,
    kill_grace: Duration,
    /// The argv and environment of [`spawn`], made once (`None` where it cannot run, or for
    /// an argv execve cannot take: std's spawn then runs, or says what is wrong).
    template: Option<spawn::Template>,
}

/// The variables each exec-mode run gets beside the fixed `DROVER_CLASS`, `DROVER_HOST` and
/// `DROVER_UNIT`, in the order [`ExecHandler::start`] gives them.
const JOB_VARS: [&str; 6] =
    ["DROVER_CHECKPOINT_FILE", "DROVER_JOB_ID", "DROVER_ATTEMPT", "DROVER_FENCE", "DROVER_DEADLINE", "DROVER_TENANT"];

/// A started exec-mode run: its process and the parent's ends of its pipes.
struct Started {
    child: ExecChild,
    stdin: Option<Box<dyn tokio::io::AsyncWrite + Send + Unpin>>,
    stdout: Option<Box<dyn tokio::io::AsyncRead + Send + Unpin>>,
    stderr: Option<Box<dyn tokio::io::AsyncRead + Send + Unpin>>,
}

/// One attempt as a handler runs it: the job, its fencing value (`DROVER_FENCE`; see
/// INTERFACE.md), how long it may take, how long its handler may stay silent
/// (`heartbeat_timeout`), and where its progress reports go.
#[derive(Clone, Copy)]
pub struct Attempt<'a> {
    pub job: &'a Job,
    pub fence: u64,
    pub limit: Duration,
    pub heartbeat: Option<Duration>,
    pub beats: &'a UnboundedSender<Beat>,
}

/// A progress report (a heartbeat) of the running attempt: each part optional
/// (docs/wire-format.md). `checkpoint` is compact JSON, within the bound.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Beat {
    pub progress: Option<f64>,
    pub note: Option<String>,
    pub checkpoint: Option<String>,
}

impl Beat {
    /// A report from a line's fields; an oversized or missing checkpoint is left out (and said).
    fn from_fields(
        progress: Option<f64>,
        note: Option<serde_json::Value>,
        checkpoint: Option<serde_json::Value>,
    ) -> Beat {
        let checkpoint = checkpoint.filter(|c| !c.is_null()).and_then(|c| match checkpoint_text(&c) {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::warn!("{e}; the previous checkpoint is kept");
                None
            }
        });
        let note = match note {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(s)) => Some(tail(&s, 200)),
            Some(other) => Some(tail(&other.to_string(), 200)),
        };
        Beat { progress: progress.filter(|p| p.is_finite()).map(|p| p.clamp(0.0, 1.0)), note, checkpoint }
    }
}

/// When the handler last reported, for `heartbeat_timeout`: silence is counted from the
/// attempt's start.
struct Heart {
    start: Instant,
    last_ms: AtomicU64,
    limit: Option<Duration>,
}

impl Heart {
    fn new(limit: Option<Duration>) -> Heart {
        Heart { start: Instant::now(), last_ms: AtomicU64::new(0), limit }
    }

    fn beat(&self) {
        self.last_ms.store(self.start.elapsed().as_millis() as u64, Ordering::SeqCst);
    }

    /// Completes once the handler has been silent for the limit (never without one).
    async fn silent(&self) -> Duration {
        let Some(limit) = self.limit else { return std::future::pending().await };
        loop {
            let due = self.start + Duration::from_millis(self.last_ms.load(Ordering::SeqCst)) + limit;
            if Instant::now() >= due {
                return limit;
            }
            tokio::time::sleep_until(due).await;
        }
    }
}

fn hung(limit: Duration) -> String {
    format!("no heartbeat for {} (heartbeat_timeout): hung, killed", crate::duration::format(limit))
}

/// An exec-mode stdout line that reports progress (`{"progress": 0.4, "note": ...}`), if it is one.
pub fn exec_beat(line: &str) -> Option<Beat> {
    let v: serde_json::Value = serde_json::from_str(line.trim()).ok()?;
    let obj = v.as_object()?;
    if !obj.contains_key("progress") && !obj.contains_key("note") {
        return None;
    }
    Some(Beat::from_fields(obj.get("progress").and_then(|p| p.as_f64()), obj.get("note").cloned(), None))
}

/// The file of an exec-mode attempt's checkpoint (`DROVER_CHECKPOINT_FILE`), in the worker's
/// temporary directory (the unit's own with `PrivateTmp=`), removed after the attempt.
struct CheckpointFile {
    path: std::path::PathBuf,
}

impl CheckpointFile {
    fn new(job: &Job, fence: u64) -> CheckpointFile {
        let path = std::env::temp_dir().join(format!("drover-checkpoint-{}-{fence}.json", std::process::id()));
        if let Some(c) = &job.checkpoint {
            if let Err(e) = std::fs::write(&path, c) {
                tracing::warn!("cannot write the checkpoint file {}: {e}", path.display());
            }
        }
        CheckpointFile { path }
    }

    /// The checkpoint the handler left, when it is JSON and differs from the one it was given.
    fn saved(&self, given: Option<&str>) -> Option<String> {
        let text = std::fs::read_to_string(&self.path).ok()?;
        let value: serde_json::Value = match serde_json::from_str(&text) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!("checkpoint file {} is not JSON ({e}): ignored", self.path.display());
                return None;
            }
        };
        Beat::from_fields(None, None, Some(value)).checkpoint.filter(|c| Some(c.as_str()) != given)
    }
}

impl Drop for CheckpointFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        let _ = std::fs::remove_file(self.path.with_extension("json.tmp"));
    }
}

impl ExecHandler {
    async fn run(&self, attempt: Attempt<'_>, stop: impl Future<Output = Stop>) -> Result<Outcome, HandlerDown> {
        let Attempt { job, fence, limit, heartbeat, beats } = attempt;
        let checkpoint = CheckpointFile::new(job, fence);
        let heart = Arc::new(Heart::new(heartbeat));
        let (attempt_no, fence_no, deadline) = (job.attempt.to_string(), fence.to_string(), rfc3339(job.deadline));
        let values: [&std::ffi::OsStr; 6] = [
            checkpoint.path.as_os_str(),
            job.id.as_ref(),
            attempt_no.as_ref(),
            fence_no.as_ref(),
            deadline.as_ref(),
            job.tenant.as_deref().unwrap_or("").as_ref(),
        ];
        let Started { mut child, stdin, stdout, stderr } =
            self.start(&values).map_err(|e| HandlerDown(format!("cannot start handler `{}`: {e}", self.command[0])))?;
        let pgid = child.id();

        // Feed stdin and collect stderr beside the wait, so that a large payload or a chatty
        // handler cannot deadlock against a full pipe.
        let payload = job.payload.clone();
        let feeder = tokio::spawn(async move {
            if let Some(mut stdin) = stdin {
                // A handler that does not read its stdin closes the pipe: not an error.
                let _ = stdin.write_all(&payload).await;
            }
        });
        // Progress lines on stdout are heartbeats; the rest of stdout is ignored.
        let (to, beat_heart) = (beats.clone(), heart.clone());
        let reader = tokio::spawn(async move {
            let Some(out) = stdout else { return };
            let mut lines = BufReader::new(out).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(b) = exec_beat(&line) {
                    beat_heart.beat();
                    let _ = to.send(b);
                }
            }
        });
        let collector = tokio::spawn(async move {
            let mut buf = Vec::new();
            if let Some(mut s) = stderr {
                let _ = s.read_to_end(&mut buf).await;
            }
            buf
        });

        let ended = tokio::select! {
            status = child.reap() => Ok(status),
            _ = tokio::time::sleep(limit) => Err(None),
            silent = heart.silent() => Err(Some(Err(silent))),
            why = stop => Err(Some(Ok(why))),
        };
        let outcome = match ended {
            Ok(status) => {
                signal_group(pgid, libc::SIGKILL); // leftovers of a finished job
                let err = String::from_utf8_lossy(&collector.await.unwrap_or_default()).trim().to_string();
                let status = status.map_err(|e| HandlerDown(format!("cannot wait for handler: {e}")))?;
                exec_outcome(status, &tail(&err, STDERR_TAIL))
            }
            Err(stopped) => {
                match &stopped {
                    Some(Ok(s)) if s.at_once => kill_group(&mut child, pgid).await,
                    _ => stop_group(&mut child, pgid, self.kill_grace).await,
                };
                collector.abort();
                match stopped {
                    None => Outcome::TimedOut(format!("killed after {:.1}s", limit.as_secs_f64())),
                    Some(Err(silent)) => Outcome::TimedOut(hung(silent)),
                    Some(Ok(s)) => Outcome::Interrupted(s.why),
                }
            }
        };
        feeder.abort();
        // The last progress lines are read before the checkpoint the handler left.
        let _ = tokio::time::timeout(Duration::from_millis(200), reader).await;
        if let Some(c) = checkpoint.saved(job.checkpoint.as_deref()) {
            let _ = beats.send(Beat { checkpoint: Some(c), ..Beat::default() });
        }
        Ok(outcome)
    }
}

impl ExecHandler {
    /// Starts one run, its job's variables given in [`JOB_VARS`]' order: through [`spawn`]
    /// (no fork, the environment made once), or through std's fork and the death-signal hook
    /// where that cannot run.
    fn start(&self, values: &[&std::ffi::OsStr; 6]) -> std::io::Result<Started> {
        if let Some(t) = self.template.as_ref().filter(|_| spawn::supported()) {
            let vars: [(&str, &std::ffi::OsStr); 6] = std::array::from_fn(|i| (JOB_VARS[i], values[i]));
            if let Some(s) = t.spawn(&vars)? {
                return Ok(Started {
                    child: ExecChild::Cloned(s.child),
                    stdin: Some(Box::new(s.stdin)),
                    stdout: Some(Box::new(s.stdout)),
                    stderr: Some(Box::new(s.stderr)),
                });
            }
        }
        let mut cmd = command(&self.command, &self.who);
        for (name, value) in JOB_VARS.iter().zip(values) {
            cmd.env(name, value);
        }
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn()?;
        let (stdin, stdout, stderr) = (child.stdin.take(), child.stdout.take(), child.stderr.take());
        Ok(Started {
            child: ExecChild::Forked(child),
            stdin: stdin.map(|s| Box::new(s) as _),
            stdout: stdout.map(|s| Box::new(s) as _),
            stderr: stderr.map(|s| Box::new(s) as _),
        })
    }
}

/// Maps an exec-mode exit status to an outcome (INTERFACE.md: 0 done, 75 retry, 65 reject).
pub fn exec_outcome(status: ExitStatus, stderr_tail: &str) -> Outcome {
    let with_err = |what: String| {
        if stderr_tail.is_empty() {
            what
        } else {
            format!("{what}: {stderr_tail}")
        }
    };
    match status.code() {
        Some(0) => Outcome::Succeeded,
        Some(75) => Outcome::Transient(with_err("exit status 75".into())),
        Some(65) => Outcome::Rejected(with_err("exit status 65".into())),
        _ => Outcome::Failed(with_err(describe(status))),
    }
}

pub struct PersistentHandler {
    command: Vec<String>,
    who: Identity,
    kill_grace: Duration,
    ready_timeout: Duration,
    wait_ready: bool,
    proc: Option<Proc>,
}

struct Proc {
    child: Child,
    pgid: u32,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
}

#[derive(Deserialize)]
struct Reply {
    id: Option<serde_json::Value>,
    ready: Option<bool>,
    status: Option<String>,
    #[serde(default)]
    message: Option<serde_json::Value>,
    progress: Option<f64>,
    note: Option<serde_json::Value>,
    checkpoint: Option<serde_json::Value>,
}

/// What one line on the handler's stdout means.
#[derive(Debug, PartialEq)]
pub enum Line {
    Ready,
    Result {
        id: String,
        outcome: Outcome,
    },
    /// A heartbeat of a running job, with what it reported.
    Beat {
        id: String,
        beat: Beat,
    },
    /// Not JSON: a stray print. Logged, not fatal: stdout is the protocol channel, but a debug
    /// print should not cost a job.
    Noise,
    /// JSON that breaks the protocol: the handler cannot be trusted with the next job.
    Violation(String),
}

/// Parses one line of a persistent handler's stdout.
pub fn parse_line(line: &str) -> Line {
    let trimmed = line.trim();
    if !trimmed.starts_with('{') {
        return Line::Noise;
    }
    let reply: Reply = match serde_json::from_str(trimmed) {
        Ok(r) => r,
        Err(_) => return Line::Noise,
    };
    if reply.ready == Some(true) && reply.id.is_none() {
        return Line::Ready;
    }
    let id = match reply.id {
        Some(serde_json::Value::String(s)) => s,
        Some(other) => other.to_string(),
        None => return Line::Violation(format!("result without an id: {}", tail(trimmed, 200))),
    };
    if reply.status.is_none() {
        return Line::Beat { id, beat: Beat::from_fields(reply.progress, reply.note, reply.checkpoint) };
    }
    let message = match reply.message {
        None | Some(serde_json::Value::Null) => String::new(),
        Some(serde_json::Value::String(s)) => s,
        Some(other) => other.to_string(),
    };
    let outcome = match reply.status.as_deref() {
        Some("ok") => Outcome::Succeeded,
        Some("retry") => Outcome::Transient(message),
        Some("reject") => Outcome::Rejected(message),
        Some("fail") => Outcome::Failed(message),
        other => return Line::Violation(format!("status {other:?} is not ok, retry, reject or fail")),
    };
    Line::Result { id, outcome }
}

/// The line written to a persistent handler for one job. A payload (and a checkpoint) that is
/// JSON on one line goes in as it is, without being parsed into a tree and printed again; other
/// JSON is printed compactly, anything else goes as base64.
pub fn job_line(job: &Job, fence: u64) -> String {
    #[derive(serde::Serialize)]
    struct Head<'a> {
        id: &'a str,
        class: &'a str,
        attempt: u32,
        fence: u64,
        deadline: String,
        tenant: Option<&'a str>,
    }
    let head = Head {
        id: &job.id,
        class: &job.class,
        attempt: job.attempt,
        fence,
        deadline: rfc3339(job.deadline),
        tenant: job.tenant.as_deref(),
    };
    let mut line = serde_json::to_vec(&head).unwrap_or_else(|_| b"{}".to_vec());
    line.pop(); // the closing brace
    if let Some(c) = job.checkpoint.as_deref() {
        if let Some(json) = one_line_json(c.as_bytes()) {
            line.extend_from_slice(b",\"checkpoint\":");
            line.extend_from_slice(&json);
        }
    }
    match one_line_json(&job.payload) {
        Some(json) => {
            line.extend_from_slice(b",\"payload\":");
            line.extend_from_slice(&json);
        }
        None => {
            line.extend_from_slice(b",\"payload_b64\":\"");
            line.extend_from_slice(base64::engine::general_purpose::STANDARD.encode(&job.payload).as_bytes());
            line.push(b'"');
        }
    }
    line.extend_from_slice(b"}\n");
    String::from_utf8(line).unwrap_or_default()
}

/// `text` as JSON that fits on one line: itself when it is valid JSON without line breaks,
/// printed compactly when it is JSON over several lines, `None` when it is not JSON.
fn one_line_json(text: &[u8]) -> Option<std::borrow::Cow<'_, [u8]>> {
    if serde_json::from_slice::<serde::de::IgnoredAny>(text).is_err() {
        return None;
    }
    if !text.contains(&b'\n') && !text.contains(&b'\r') && std::str::from_utf8(text).is_ok() {
        return Some(std::borrow::Cow::Borrowed(text));
    }
    let v = serde_json::from_slice::<serde_json::Value>(text).ok()?;
    serde_json::to_vec(&v).ok().map(std::borrow::Cow::Owned)
}

impl PersistentHandler {
    async fn ensure_started(&mut self) -> Result<(), HandlerDown> {
        if self.proc.is_some() {
            return Ok(());
        }
        let mut cmd = command(&self.command, &self.who);
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::inherit());
        let mut child =
            cmd.spawn().map_err(|e| HandlerDown(format!("cannot start handler `{}`: {e}", self.command[0])))?;
        let pgid = child.id().unwrap_or(0);
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(HandlerDown("handler started without pipes".into()));
        };
        let mut proc = Proc { child, pgid, stdin, stdout: BufReader::new(stdout).lines() };
        if self.wait_ready {
            let waited = tokio::time::timeout(self.ready_timeout, async {
                loop {
                    match proc.stdout.next_line().await {
                        Ok(Some(line)) => match parse_line(&line) {
                            Line::Ready => return Ok(()),
                            _ => tracing::info!(target: "handler", "{line}"),
                        },
                        Ok(None) => return Err("handler exited before it was ready".to_string()),
                        Err(e) => return Err(format!("cannot read the handler's output: {e}")),
                    }
                }
            })
            .await;
            let failure = match waited {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e),
                Err(_) => Some(format!("handler not ready after {:?}", self.ready_timeout)),
            };
            if let Some(e) = failure {
                let status = stop_group(&mut proc.child, proc.pgid, self.kill_grace).await;
                let status = status.map(describe).unwrap_or_default();
                return Err(HandlerDown(format!("{e} ({status})")));
            }
        }
        self.proc = Some(proc);
        Ok(())
    }

    async fn run(&mut self, attempt: Attempt<'_>, stop: impl Future<Output = Stop>) -> Result<Outcome, HandlerDown> {
        let Attempt { job, fence, limit, heartbeat, beats } = attempt;
        let heart = Heart::new(heartbeat);
        self.ensure_started().await?;
        let Some(proc) = self.proc.as_mut() else {
            return Err(HandlerDown("handler not running".into()));
        };
        let exchange = async {
            proc.stdin
                .write_all(job_line(job, fence).as_bytes())
                .await
                .map_err(|e| format!("cannot write the job: {e}"))?;
            proc.stdin.flush().await.map_err(|e| format!("cannot write the job: {e}"))?;
            loop {
                match proc.stdout.next_line().await {
                    Ok(Some(line)) => match parse_line(&line) {
                        Line::Result { id, outcome } if id == job.id => return Ok(outcome),
                        Line::Result { id, .. } => {
                            return Err(format!("answered for job {id} while running {}", job.id))
                        }
                        Line::Violation(v) => return Err(v),
                        Line::Beat { id, beat } if id == job.id => {
                            heart.beat();
                            let _ = beats.send(beat);
                        }
                        Line::Beat { id, .. } => {
                            tracing::warn!("progress for job {id} while running {}: ignored", job.id)
                        }
                        Line::Ready => {}
                        Line::Noise => tracing::info!(target: "handler", "{line}"),
                    },
                    Ok(None) => return Err("handler exited".to_string()),
                    Err(e) => return Err(format!("cannot read the handler's output: {e}")),
                }
            }
        };
        let ended = tokio::select! {
            r = exchange => Ok(r),
            _ = tokio::time::sleep(limit) => Err(None),
            silent = heart.silent() => Err(Some(Err(silent))),
            why = stop => Err(Some(Ok(why))),
        };
        match ended {
            Ok(Ok(outcome)) => Ok(outcome),
            Ok(Err(broken)) => {
                let status = self.stop().await.map(describe).unwrap_or_default();
                Ok(Outcome::Failed(format!("persistent handler failed: {broken} ({status}); restarting it")))
            }
            Err(Some(Err(silent))) => {
                self.kill().await;
                Ok(Outcome::TimedOut(format!("{}; handler restarted", hung(silent))))
            }
            Err(None) => {
                self.kill().await;
                Ok(Outcome::TimedOut(format!("killed after {:.1}s; handler restarted", limit.as_secs_f64())))
            }
            Err(Some(Ok(stop))) => {
                // The job goes elsewhere: stop this attempt now rather than wait for the
                // handler to notice end-of-input; with no grace at all when it already runs
                // elsewhere.
                if stop.at_once {
                    if let Some(mut proc) = self.proc.take() {
                        kill_group(&mut proc.child, proc.pgid).await;
                    }
                } else {
                    self.kill().await;
                }
                Ok(Outcome::Interrupted(stop.why))
            }
        }
    }

    async fn kill(&mut self) -> Option<ExitStatus> {
        let mut proc = self.proc.take()?;
        stop_group(&mut proc.child, proc.pgid, self.kill_grace).await
    }

    async fn stop(&mut self) -> Option<ExitStatus> {
        let mut proc = self.proc.take()?;
        drop(proc.stdin); // EOF asks a well-behaved handler to leave on its own
        match tokio::time::timeout(Duration::from_millis(200), proc.child.wait()).await {
            Ok(status) => {
                signal_group(proc.pgid, libc::SIGKILL);
                status.ok()
            }
            Err(_) => stop_group(&mut proc.child, proc.pgid, self.kill_grace).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_lines_table() {
        let cases: Vec<(&str, Line)> = vec![
            (r#"{"ready": true}"#, Line::Ready),
            (r#"{"id": "a", "status": "ok"}"#, Line::Result { id: "a".into(), outcome: Outcome::Succeeded }),
            (
                r#"{"id": 7, "status": "retry", "message": "busy"}"#,
                Line::Result { id: "7".into(), outcome: Outcome::Transient("busy".into()) },
            ),
            (
                r#"{"id": "a", "status": "reject", "message": {"field": "x"}}"#,
                Line::Result { id: "a".into(), outcome: Outcome::Rejected(r#"{"field":"x"}"#.into()) },
            ),
            (
                r#"{"id": "a", "status": "fail"}"#,
                Line::Result { id: "a".into(), outcome: Outcome::Failed(String::new()) },
            ),
            (
                r#"{"id": "a", "progress": 0.4, "note": "step 12", "checkpoint": {"step": 12}}"#,
                Line::Beat {
                    id: "a".into(),
                    beat: Beat {
                        progress: Some(0.4),
                        note: Some("step 12".into()),
                        checkpoint: Some(r#"{"step":12}"#.into()),
                    },
                },
            ),
            (r#"{"id": "a"}"#, Line::Beat { id: "a".into(), beat: Beat::default() }),
            (
                r#"{"id": "a", "progress": 7}"#,
                Line::Beat { id: "a".into(), beat: Beat { progress: Some(1.0), ..Beat::default() } },
            ),
            ("loading model...", Line::Noise),
            ("{not json", Line::Noise),
            (r#"{"status": "ok"}"#, Line::Violation("result without an id: {\"status\": \"ok\"}".into())),
            (
                r#"{"id": "a", "status": "done"}"#,
                Line::Violation("status Some(\"done\") is not ok, retry, reject or fail".into()),
            ),
        ];
        for (line, want) in cases {
            assert_eq!(parse_line(line), want, "{line}");
        }
    }

    #[test]
    fn job_lines_carry_json_payloads_as_json_and_others_as_base64() {
        let mut job = Job {
            id: "j".into(),
            class: "c".into(),
            attempt: 1,
            submitted_at: 0,
            deadline: 0,
            tenant: None,
            payload: br#"{"n": 1}"#.to_vec(),
            failed_on: vec![],
            failures: vec![],
            hand_backs: 0,
            handed_back_at: None,
            checkpoint: None,
        };
        let v: serde_json::Value = serde_json::from_str(&job_line(&job, 42)).expect("json");
        assert_eq!(v["payload"]["n"], 1);
        assert_eq!(v["fence"], 42);
        assert!(v.get("payload_b64").is_none());
        job.payload = vec![0xff, 0x00];
        let v: serde_json::Value = serde_json::from_str(&job_line(&job, 43)).expect("json");
        assert_eq!(v["payload_b64"], "/wA=");
        // JSON over several lines is put on one; a payload that is not JSON goes as base64.
        job.payload = b"{\n  \"n\": [1,\n 2]\n}\n".to_vec();
        job.tenant = Some("t".into());
        let line = job_line(&job, 44);
        assert_eq!(line.matches('\n').count(), 1, "{line:?}");
        let v: serde_json::Value = serde_json::from_str(&line).expect("json");
        assert_eq!((v["payload"]["n"][1].as_u64(), v["tenant"].as_str()), (Some(2), Some("t")));
        job.payload = br#"{"n": 1} trailing"#.to_vec();
        let v: serde_json::Value = serde_json::from_str(&job_line(&job, 45)).expect("json");
        assert!(v.get("payload").is_none() && v["payload_b64"].is_string());
    }

    #[test]
    fn oversized_checkpoints_are_refused_and_exec_progress_lines_read() {
        let big = format!(r#"{{"id": "a", "checkpoint": "{}"}}"#, "x".repeat(crate::job::MAX_CHECKPOINT_BYTES));
        assert_eq!(parse_line(&big), Line::Beat { id: "a".into(), beat: Beat::default() });
        assert_eq!(
            exec_beat(r#"{"progress": 0.5, "note": "half"}"#),
            Some(Beat { progress: Some(0.5), note: Some("half".into()), checkpoint: None })
        );
        assert_eq!(exec_beat("plain output"), None);
        assert_eq!(exec_beat(r#"{"rows": 3}"#), None, "JSON output that is not progress");
    }

    #[test]
    fn job_lines_carry_the_checkpoint() {
        let job = Job {
            id: "j".into(),
            class: "c".into(),
            attempt: 1,
            submitted_at: 0,
            deadline: 0,
            tenant: None,
            payload: b"{}".to_vec(),
            failed_on: vec![],
            failures: vec![],
            hand_backs: 0,
            handed_back_at: None,
            checkpoint: Some(r#"{"step":9}"#.into()),
        };
        let v: serde_json::Value = serde_json::from_str(&job_line(&job, 1)).expect("json");
        assert_eq!(v["checkpoint"]["step"], 9);
    }

    #[test]
    fn exit_statuses_follow_the_contract() {
        let st = |code: i32| ExitStatus::from_raw(code << 8);
        assert_eq!(exec_outcome(st(0), ""), Outcome::Succeeded);
        assert_eq!(exec_outcome(st(75), "later"), Outcome::Transient("exit status 75: later".into()));
        assert_eq!(exec_outcome(st(65), ""), Outcome::Rejected("exit status 65".into()));
        assert_eq!(exec_outcome(st(1), ""), Outcome::Failed("exit status 1".into()));
        assert_eq!(exec_outcome(ExitStatus::from_raw(9), ""), Outcome::Failed("killed by signal 9".into()));
    }

    fn exec_job(id: &str, payload: &[u8]) -> Job {
        Job {
            id: id.into(),
            class: "e".into(),
            attempt: 3,
            submitted_at: 0,
            deadline: 0,
            tenant: Some("acme".into()),
            payload: payload.to_vec(),
            failed_on: vec![],
            failures: vec![],
            hand_backs: 0,
            handed_back_at: None,
            checkpoint: None,
        }
    }

    /// Both ways an exec-mode run can start: the vfork-like spawn (where it can run) and std's
    /// fork with the death-signal hook.
    fn exec_handlers(command: &[&str]) -> Vec<(&'static str, ExecHandler)> {
        let command: Vec<String> = command.iter().map(|a| a.to_string()).collect();
        let who = Identity { class: "e".into(), host: "h".into(), unit: "u".into() };
        let fixed = [("DROVER_CLASS", "e"), ("DROVER_HOST", "h"), ("DROVER_UNIT", "u")];
        let cloned = spawn::Template::new(&command, &fixed, &JOB_VARS);
        assert_eq!(cloned.is_some(), spawn::supported(), "this machine has pidfds");
        let kill_grace = Duration::from_secs(1);
        vec![
            ("clone", ExecHandler { command: command.clone(), who: who.clone(), kill_grace, template: cloned }),
            ("fork", ExecHandler { command, who, kill_grace, template: None }),
        ]
    }

    /// What a run gets (its job's variables and payload, a process group of its own, no signal
    /// blocked, SIGPIPE at its default as std gives its children) and what it gives back (a
    /// progress line, its stderr, its exit status), however it was started.
    #[tokio::test]
    async fn exec_runs_get_their_job_and_report_back_through_both_spawns() {
        let script = r#"
            [ "$(cut -d' ' -f5 /proc/$$/stat)" = "$$" ] || { echo "not a group leader" >&2; exit 1; }
            blocked=$(awk '/^SigBlk/ {print $2}' /proc/$$/status)
            ignored=$(awk '/^SigIgn/ {print $2}' /proc/$$/status)
            [ $((0x$blocked)) -eq 0 ] || { echo "signals blocked: $blocked" >&2; exit 1; }
            [ $((0x$ignored & 0x1000)) -eq 0 ] || { echo "SIGPIPE ignored: $ignored" >&2; exit 1; }
            payload=$(cat)
            echo '{"progress": 0.5, "note": "half"}'
            echo "$DROVER_CLASS $DROVER_HOST $DROVER_UNIT $DROVER_JOB_ID $DROVER_ATTEMPT $DROVER_FENCE $DROVER_TENANT $payload" >&2
            [ -n "$DROVER_CHECKPOINT_FILE" ] && [ -n "$DROVER_DEADLINE" ] && [ -n "$PATH" ] || exit 1
            exit 75
        "#;
        for (how, h) in exec_handlers(&["sh", "-c", script]) {
            let job = exec_job("j-1", br#"{"n": 1}"#);
            let (beats, mut reports) = tokio::sync::mpsc::unbounded_channel();
            let attempt =
                Attempt { job: &job, fence: 77, limit: Duration::from_secs(60), heartbeat: None, beats: &beats };
            let outcome = h.run(attempt, std::future::pending::<Stop>()).await.expect("started");
            let want = r#"exit status 75: e h u j-1 3 77 acme {"n": 1}"#;
            assert_eq!(outcome, Outcome::Transient(want.into()), "{how}");
            let beat = Beat { progress: Some(0.5), note: Some("half".into()), checkpoint: None };
            assert_eq!(reports.try_recv().ok(), Some(beat), "{how}");
        }
    }

    #[tokio::test]
    async fn a_handler_that_cannot_be_started_is_said_so_through_both_spawns() {
        for (how, h) in exec_handlers(&["drover-test-no-such-handler"]) {
            let job = exec_job("j-2", b"{}");
            let (beats, _reports) = tokio::sync::mpsc::unbounded_channel();
            let attempt =
                Attempt { job: &job, fence: 1, limit: Duration::from_secs(60), heartbeat: None, beats: &beats };
            let Err(HandlerDown(why)) = h.run(attempt, std::future::pending::<Stop>()).await else {
                panic!("{how}: started a handler that does not exist");
            };
            assert!(why.contains("drover-test-no-such-handler") && why.contains("No such file"), "{how}: {why}");
        }
    }

    /// A job lost to the broker stops its run at once, and with it everything the run started
    /// (its process group), however it was started.
    #[tokio::test]
    async fn a_stop_at_once_kills_the_runs_whole_group_through_both_spawns() {
        let dir = std::env::temp_dir().join(format!("drover-handler-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        for (how, h) in exec_handlers(&["sh", "-c", "sleep 600 & echo $! > \"$0\"; wait", "PIDFILE"]) {
            let pidfile = dir.join(format!("{how}.pid"));
            let mut h = h;
            h.command[3] = pidfile.display().to_string();
            if let Some(t) = h.template.as_mut() {
                *t = spawn::Template::new(&h.command, &[], &JOB_VARS).expect("template");
            }
            let job = exec_job("j-3", b"{}");
            let (beats, _reports) = tokio::sync::mpsc::unbounded_channel();
            let attempt =
                Attempt { job: &job, fence: 1, limit: Duration::from_secs(60), heartbeat: None, beats: &beats };
            let grandchild = std::sync::Mutex::new(None);
            let stop = async {
                loop {
                    if let Some(pid) = std::fs::read_to_string(&pidfile).ok().and_then(|t| t.trim().parse::<i32>().ok())
                    {
                        *grandchild.lock().expect("lock") = Some(pid);
                        return Stop::at_once("lost the job");
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            };
            let outcome = h.run(attempt, stop).await.expect("started");
            assert_eq!(outcome, Outcome::Interrupted("lost the job".into()), "{how}");
            let pid = grandchild.lock().expect("lock").expect("the grandchild started");
            // Killed with the group: gone, or a zombie until its new parent reaps it.
            let gone = (0..500).any(|_| {
                let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok().and_then(|s| {
                    s.rsplit_once(')').and_then(|(_, r)| r.split_whitespace().next().map(str::to_string))
                });
                if matches!(state.as_deref(), None | Some("Z") | Some("X")) {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(10));
                false
            });
            assert!(gone, "{how}: the run's grandchild {pid} outlived the stop");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
