//! `drover drain / cordon / undrain`: maintenance orders sent to the supervisor of the host
//! concerned through the broker's control exchange (so they work from any host), and with
//! `--wait`, the drain's progress until it is safe to power off.

use crate::config::Config;
use crate::events::{EventKind, JobEvent};
use crate::io::control::{Request, Response};
use crate::io::fleet::{self, Target};
use crate::maintenance::{Progress, Scope};
use crate::rollout::{judge, waves, Seen};
use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Drain,
    Cordon,
    Undrain,
}

/// The calling user, for the record.
pub fn who() -> String {
    let user = std::env::var("SUDO_USER").or_else(|_| std::env::var("USER")).or_else(|_| std::env::var("LOGNAME"));
    match user {
        Ok(u) if !u.is_empty() => u,
        // SAFETY: getuid has no preconditions.
        _ => format!("uid {}", unsafe { libc::getuid() }),
    }
}

fn target(cfg: &Config, scope: &Scope) -> Target {
    match scope {
        Scope::Host(h) => Target::Host(h.clone()),
        Scope::Unit(_) => Target::Host(cfg.host.clone()),
        Scope::Class(_) => Target::All,
    }
}

/// Sends the order; returns the process exit status (INTERFACE: 0 done, 1 did not succeed).
pub async fn run(
    cfg: &Config,
    op: Op,
    scope: Scope,
    deadline: Option<Duration>,
    reason: String,
    wait: bool,
    json: bool,
) -> anyhow::Result<i32> {
    let req = request(op, &scope, deadline, reason);
    let target = target(cfg, &scope);
    let listen = if target == Target::All { Duration::from_secs(3) } else { Duration::from_secs(15) };
    if let Some(refusal) = no_such_units(cfg, op, &scope, &target, listen).await? {
        if json {
            println!(
                "{}",
                serde_json::json!({"ok": false, "scope": scope.to_string(), "error": refusal.0, "units": refusal.1})
            );
        } else {
            eprintln!("{}", refusal.0);
        }
        return Ok(1);
    }
    let answers = fleet::ask(cfg, &target, &req, listen).await?;
    if answers.is_empty() {
        anyhow::bail!("no supervisor answered for {scope} within {listen:?}: is `drover supervise` running there?");
    }
    let (failed, ids) = report(&answers, op, &scope, json);
    if json && !(wait && op == Op::Drain) {
        let doc = serde_json::json!({
            "ok": !failed,
            "scope": scope.to_string(),
            "orders": ids,
            "answers": answers,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    }
    if failed && ids.is_empty() {
        return Ok(1);
    }
    if !wait || op != Op::Drain {
        return Ok(if failed { 1 } else { 0 });
    }
    let give_up = Instant::now()
        + deadline.unwrap_or(Duration::from_secs(600))
        + cfg.systemd.stop_timeout
        + Duration::from_secs(60);
    let hosts: Vec<String> = answers.iter().filter(|a| a.ok).map(|a| a.host.clone()).collect();
    follow_drain(cfg, &hosts, &ids, give_up, json).await
}

/// A unit or class scope that matches no unit on any host that answers (nor an order in force,
/// for an undrain) is refused before anything is sent: the error, and the units that exist
/// (`host: unit, ...`). `None`: go ahead.
async fn no_such_units(
    cfg: &Config,
    op: Op,
    scope: &Scope,
    target: &Target,
    listen: Duration,
) -> anyhow::Result<Option<(String, Vec<String>)>> {
    if matches!(scope, Scope::Host(_)) {
        return Ok(None);
    }
    let answers = fleet::ask(cfg, target, &Request::Status, listen).await?;
    let progress = if op == Op::Undrain { fleet::ask(cfg, target, &Request::Progress, listen).await? } else { vec![] };
    let mut existing = Vec::new();
    for a in &answers {
        let Some(st) = &a.status else { continue };
        for u in &st.units {
            let view = crate::maintenance::UnitView {
                unit: u.unit.clone(),
                class: u.class.clone(),
                up: true,
                starting: false,
                main_pid: u.main_pid,
                job: None,
                progress: Default::default(),
            };
            if crate::maintenance::applies(scope, &a.host, &view) {
                return Ok(None);
            }
            existing.push(format!("{}: {} ({})", a.host, u.unit, u.class));
        }
    }
    let ordered = progress.iter().flat_map(|a| a.progress.iter()).filter_map(|p| p.order.as_ref());
    if ordered.into_iter().any(|o| same_unit_scope(&o.scope, scope)) {
        return Ok(None);
    }
    if answers.is_empty() {
        // Nobody to ask: the order itself says so.
        return Ok(None);
    }
    let list = if existing.is_empty() { "none".to_string() } else { existing.join("\n  ") };
    let msg = format!("{scope} matches no unit on the {} host(s) that answered; units there:\n  {list}", answers.len());
    Ok(Some((msg, existing)))
}

fn same_unit_scope(a: &Scope, b: &Scope) -> bool {
    match (a, b) {
        (Scope::Unit(x), Scope::Unit(y)) => x == y || x.ends_with(&format!("@{y}.service")),
        _ => a == b,
    }
}

fn request(op: Op, scope: &Scope, deadline: Option<Duration>, reason: String) -> Request {
    let who = who();
    match op {
        Op::Drain => Request::Drain {
            scope: scope.clone(),
            deadline_s: deadline.unwrap_or(Duration::from_secs(600)).as_secs_f64(),
            reason,
            who,
        },
        Op::Cordon => Request::Cordon { scope: scope.clone(), reason, who },
        Op::Undrain => Request::Undrain { scope: scope.clone(), reason, who },
    }
}

/// Prints each supervisor's answer; returns whether one refused, and the ids of the orders
/// accepted.
fn report(answers: &[Response], op: Op, scope: &Scope, json: bool) -> (bool, Vec<String>) {
    let mut failed = false;
    let mut ids = Vec::new();
    for a in answers {
        match (&a.error, a.ok) {
            (Some(e), false) => {
                eprintln!("{}: {e}", a.host);
                failed = true;
            }
            (Some(note), true) => eprintln!("{}: {note}", a.host),
            (None, _) => {
                if !json {
                    eprintln!("{}: {} accepted", a.host, label(op, scope));
                }
            }
        }
        ids.extend(a.progress.iter().filter_map(|p| p.order.as_ref().map(|o| o.id.clone())));
    }
    (failed, ids)
}

/// `--wait`: shows the drain orders' progress every second until all are done (0) or
/// `give_up` passes (1).
async fn follow_drain(
    cfg: &Config,
    hosts: &[String],
    ids: &[String],
    give_up: Instant,
    json: bool,
) -> anyhow::Result<i32> {
    let mut view = View::new(json);
    loop {
        let progress = drain_progress(cfg, hosts, ids).await?;
        view.show(&progress)?;
        let done = !progress.is_empty() && progress.iter().all(|p| p.done);
        if done {
            view.finish();
            for p in progress.iter().filter(|p| p.safe_to_power_off) {
                if json {
                    println!("{}", serde_json::json!({"host": p.host, "safe_to_power_off": true}));
                } else {
                    println!("{}: safe to power off (no job left, every unit stopped)", p.host);
                }
            }
            return Ok(0);
        }
        if Instant::now() > give_up {
            view.finish();
            eprintln!("the drain did not finish in time: jobs or units are left (see above)");
            return Ok(1);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The progress of the orders `ids` on each of `hosts`.
async fn drain_progress(cfg: &Config, hosts: &[String], ids: &[String]) -> anyhow::Result<Vec<Progress>> {
    let mut progress: Vec<Progress> = Vec::new();
    for host in hosts {
        let replies: Vec<Response> =
            fleet::ask(cfg, &Target::Host(host.clone()), &Request::Progress, Duration::from_secs(10)).await?;
        progress.extend(
            replies
                .into_iter()
                .flat_map(|r| r.progress)
                .filter(|p| p.order.as_ref().is_some_and(|o| ids.contains(&o.id))),
        );
    }
    Ok(progress)
}

fn label(op: Op, scope: &Scope) -> String {
    match op {
        Op::Drain => format!("drain of {scope}"),
        Op::Cordon => format!("cordon of {scope}"),
        Op::Undrain => format!("undrain of {scope}"),
    }
}

/// One host's drain in one line: units stopped, jobs left with their expected remaining time,
/// the time to the deadline. The second string is what counts as a change (no ages).
fn summary(p: &Progress, now: i64) -> (String, String) {
    let total = p.units.len();
    let stopped = p.units.iter().filter(|u| u.state == "stopped").count();
    let jobs: Vec<String> = p
        .units
        .iter()
        .filter_map(|u| {
            let j = u.job.as_ref()?;
            Some(match u.expected_left_s {
                Some(left) => format!("{j} on {} (about {} left)", u.unit, crate::duration::format(secs(left))),
                None => format!("{j} on {}", u.unit),
            })
        })
        .collect();
    let deadline = p.order.as_ref().and_then(|o| o.deadline_ms).map(|d| {
        if d > now {
            format!("deadline in {}", crate::duration::format(Duration::from_secs(((d - now) / 1000) as u64)))
        } else {
            "deadline passed: requeueing what is left".to_string()
        }
    });
    let state = if p.safe_to_power_off {
        "safe to power off".to_string()
    } else if p.done {
        "done".to_string()
    } else {
        let last = p.units.iter().filter(|u| u.job.is_some()).filter_map(|u| u.expected_left_s).reduce(f64::max);
        let last = last.map(|s| format!(" (the last in about {})", crate::duration::format(secs(s))));
        format!("{} job(s) left{}", jobs.len(), last.unwrap_or_default())
    };
    // What matters most first: on a terminal the line is cut to its width at the end.
    let text = format!(
        "{}: {stopped}/{total} units stopped, {state}{}{}",
        p.host,
        deadline.filter(|_| !p.done).map(|d| format!(", {d}")).unwrap_or_default(),
        if jobs.is_empty() || p.done { String::new() } else { format!(": {}", jobs.join(", ")) }
    );
    let units: Vec<String> =
        p.units.iter().map(|u| format!("{}={}:{}", u.unit, u.state, u.job.as_deref().unwrap_or(""))).collect();
    let key = format!("{}|{}|{}|{}|{}", p.host, units.join(","), p.requeued.len(), p.done, p.safe_to_power_off);
    (text, key)
}

fn secs(s: f64) -> Duration {
    Duration::from_secs(s.max(0.0).round() as u64)
}

/// How progress is shown: a live view redrawn in place on a terminal, one line per change
/// elsewhere, one JSON line per change with `--json`.
enum View {
    Live {
        bars: indicatif::MultiProgress,
        by_host: BTreeMap<String, indicatif::ProgressBar>,
        /// Requeues already printed, per host.
        moves: BTreeMap<String, usize>,
    },
    Lines {
        last: BTreeMap<String, (String, usize)>,
    },
    Json {
        last: BTreeMap<String, String>,
    },
}

impl View {
    fn new(json: bool) -> View {
        if json {
            View::Json { last: BTreeMap::new() }
        } else if std::io::stdout().is_terminal() {
            // Drawn where the terminal was found: standard output.
            let bars = indicatif::MultiProgress::with_draw_target(indicatif::ProgressDrawTarget::stdout());
            View::Live { bars, by_host: BTreeMap::new(), moves: BTreeMap::new() }
        } else {
            View::Lines { last: BTreeMap::new() }
        }
    }

    fn show(&mut self, progress: &[Progress]) -> anyhow::Result<()> {
        let now = crate::io::clock::now_ms();
        match self {
            View::Live { bars, by_host, moves } => {
                for p in progress {
                    // Each job moved away is printed once, above the live lines.
                    let seen = moves.entry(p.host.clone()).or_default();
                    for m in p.requeued.iter().skip(*seen) {
                        let to = m.to.as_deref().unwrap_or("waiting in the queue");
                        bars.println(format!("{}: requeued {} from {} -> {to}", p.host, m.job, m.from))?;
                    }
                    *seen = p.requeued.len();
                    let bar = by_host.entry(p.host.clone()).or_insert_with(|| {
                        let b = bars.add(indicatif::ProgressBar::new(p.units.len() as u64));
                        // `wide_msg`: cut to the terminal's width, so that a redraw never wraps.
                        let style = indicatif::ProgressStyle::with_template("{bar:20} {wide_msg}")
                            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
                        b.set_style(style);
                        b
                    });
                    bar.set_length(p.units.len() as u64);
                    bar.set_position(p.units.iter().filter(|u| u.state == "stopped").count() as u64);
                    bar.set_message(summary(p, now).0);
                }
            }
            View::Lines { last } => {
                let mut out = std::io::stdout().lock();
                for p in progress {
                    let (text, key) = summary(p, now);
                    let (seen_key, seen_moves) = last.get(&p.host).cloned().unwrap_or_default();
                    if seen_key != key {
                        writeln!(out, "{text}")?;
                        for m in p.requeued.iter().skip(seen_moves) {
                            let to = m.to.as_deref().unwrap_or("waiting in the queue");
                            writeln!(out, "{}: requeued {} from {} -> {to}", p.host, m.job, m.from)?;
                        }
                        last.insert(p.host.clone(), (key, p.requeued.len()));
                    }
                }
            }
            View::Json { last } => {
                let mut out = std::io::stdout().lock();
                for p in progress {
                    let key = summary(p, now).1;
                    if last.get(&p.host) != Some(&key) {
                        writeln!(out, "{}", serde_json::to_string(p)?)?;
                        last.insert(p.host.clone(), key);
                    }
                }
            }
        }
        Ok(())
    }

    /// Ends the live view, leaving its last state on the screen.
    fn finish(&self) {
        if let View::Live { by_host, .. } = self {
            for b in by_host.values() {
                b.abandon();
            }
        }
    }
}

/// `drover rollout`: drains, changes (an operator's command, or a plain restart of the units)
/// and undrains hosts in waves, soaking each wave and halting when it looks worse than the hosts
/// not yet touched. Returns the exit status: 0 done, 1 halted.
pub struct Rollout {
    /// The configuration file as given, for the commands a stopped rollout prints.
    pub config: std::path::PathBuf,
    pub hosts: Vec<String>,
    pub waves: Vec<crate::rollout::WaveSize>,
    /// `--waves` as given.
    pub waves_arg: String,
    pub command: Vec<String>,
    pub soak: Duration,
    pub deadline: Duration,
    pub reason: String,
}

async fn one(cfg: &Config, host: &str, req: Request) -> anyhow::Result<Response> {
    let mut answers = fleet::ask(cfg, &Target::Host(host.to_string()), &req, Duration::from_secs(15)).await?;
    let r = answers.pop().ok_or_else(|| anyhow::anyhow!("no answer from the supervisor of {host}"))?;
    if !r.ok {
        anyhow::bail!("{host}: {}", r.error.clone().unwrap_or_default());
    }
    Ok(r)
}

pub async fn rollout(cfg: &Config, r: Rollout) -> anyhow::Result<i32> {
    let plan = waves(&r.hosts, &r.waves);
    // Job events of the whole fleet during the rollout, for the comparisons.
    let seen: EventLog = Arc::default();
    let collector = {
        let seen = seen.clone();
        let cfg = cfg.clone();
        tokio::spawn(async move {
            let _ = collect_events(&cfg, seen).await;
        })
    };
    // Ctrl-C: finish the step under way, then stop and say how to resume or undo.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let stop = stop.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                stop.store(true, std::sync::atomic::Ordering::SeqCst);
                eprintln!("\ninterrupted: stopping after the current step (Ctrl-C again does nothing; wait)");
            }
        })
    };
    let run = Run { cfg, r: &r, who: who(), seen, stop, stopped_after: Mutex::new(None) };
    let mut touched_so_far: Vec<String> = Vec::new();
    for (i, wave) in plan.iter().enumerate() {
        let label = format!("wave {}/{} ({})", i + 1, plan.len(), wave.join(", "));
        if run.stopping() {
            run.interrupted(&plan[i..], None, &label);
            collector.abort();
            watcher.abort();
            return Ok(1);
        }
        println!("{label}: draining");
        run.note(wave, format!("rollout {label}: drain"), r.reason.clone()).await;
        if let Some(why) = run.wave(wave, &label, &mut touched_so_far).await? {
            run.halt(wave, &label, why).await;
            collector.abort();
            watcher.abort();
            return Ok(1);
        }
        let step = run.stopped_after.lock().ok().and_then(|s| *s);
        if let Some(step) = step {
            run.note(wave, format!("rollout {label}: interrupted after {step}"), r.reason.clone()).await;
            run.interrupted(&plan[i..], Some(step), &label);
            collector.abort();
            watcher.abort();
            return Ok(1);
        }
        run.note(wave, format!("rollout {label}: done"), r.reason.clone()).await;
    }
    watcher.abort();
    collector.abort();
    println!("rollout complete: {} hosts in {} waves", r.hosts.len(), plan.len());
    Ok(0)
}

/// Job events as they arrived.
type EventLog = Arc<Mutex<Vec<(Instant, JobEvent)>>>;

/// A rollout under way: what it was asked, and the fleet's job events so far.
struct Run<'a> {
    cfg: &'a Config,
    r: &'a Rollout,
    who: String,
    seen: EventLog,
    /// Set by Ctrl-C; the step after which the rollout stopped.
    stop: Arc<std::sync::atomic::AtomicBool>,
    stopped_after: Mutex<Option<&'static str>>,
}

impl Run<'_> {
    fn stopping(&self) -> bool {
        self.stop.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// True (and the step recorded) when Ctrl-C asked to stop once `step` is done.
    fn stop_after(&self, step: &'static str) -> bool {
        let stop = self.stopping();
        if stop {
            if let Ok(mut s) = self.stopped_after.lock() {
                *s = Some(step);
            }
        }
        stop
    }

    /// Says exactly where the rollout stopped and the commands to resume it or undo it.
    fn interrupted(&self, left: &[Vec<String>], step: Option<&str>, label: &str) {
        let path = std::fs::canonicalize(&self.r.config).unwrap_or_else(|_| self.r.config.clone());
        let config = format!("--config {}", sh_quote(&path.display().to_string()));
        let current = &left[0];
        let drained = matches!(step, Some("drain") | Some("change"));
        eprintln!(
            "ROLLOUT STOPPED {} {label}",
            step.map(|s| format!("after the {s} of")).unwrap_or_else(|| "before".into())
        );
        if drained {
            eprintln!("  still drained: {}", current.join(", "));
            eprintln!("  undo (put them back in service):");
            for h in current {
                eprintln!("    drover undrain {config} --host {} --reason 'rollout stopped'", sh_quote(h));
            }
        }
        let rest: Vec<String> = if step.is_some() && !drained { left[1..].concat() } else { left.concat() };
        if rest.is_empty() {
            eprintln!("  nothing left to roll out");
        } else {
            let mut cmd = format!(
                "drover rollout {config} --hosts {} --waves {} --soak {} --deadline {} --reason {}",
                sh_quote(&rest.join(",")),
                sh_quote(&self.r.waves_arg),
                crate::duration::format(self.r.soak),
                crate::duration::format(self.r.deadline),
                sh_quote(&self.r.reason)
            );
            if !self.r.command.is_empty() {
                let words: Vec<String> = self.r.command.iter().map(|w| sh_quote(w)).collect();
                cmd.push_str(&format!(" -- {}", words.join(" ")));
            }
            eprintln!("  resume (the hosts not yet done, in order):\n    {cmd}");
        }
    }

    /// One wave: drain, change, undrain, let the units come back, soak, compare with the hosts
    /// not yet touched. `Some(why)` when the rollout must halt.
    async fn wave(
        &self,
        wave: &[String],
        label: &str,
        touched_so_far: &mut Vec<String>,
    ) -> anyhow::Result<Option<String>> {
        let orders = match self.drain(wave).await {
            Ok(orders) => orders,
            Err(why) => return Ok(Some(why)),
        };
        if let Some(why) = self.wait_drained(&orders, label).await? {
            return Ok(Some(why));
        }
        if self.stop_after("drain") {
            return Ok(None);
        }
        if let Some(why) = self.change(wave, label).await {
            return Ok(Some(why));
        }
        if self.stop_after("change") {
            return Ok(None);
        }
        println!("{label}: undraining, soaking for {}", crate::duration::format(self.r.soak));
        for h in wave {
            let reason = format!("rollout: {}", self.r.reason);
            one(self.cfg, h, Request::Undrain { scope: Scope::Host(h.clone()), reason, who: self.who.clone() }).await?;
        }
        touched_so_far.extend(wave.iter().cloned());
        if self.stop_after("undrain") {
            return Ok(None);
        }
        self.settle(wave).await?;
        let soak_start = Instant::now();
        if let Some(why) = self.soak(wave, soak_start).await? {
            return Ok(Some(why));
        }
        Ok(self.compare(wave, touched_so_far, soak_start))
    }

    fn drain_request(&self, host: &str, reason: String) -> Request {
        Request::Drain {
            scope: Scope::Host(host.to_string()),
            deadline_s: self.r.deadline.as_secs_f64(),
            reason,
            who: self.who.clone(),
        }
    }

    /// Asks each host of the wave to drain; the orders accepted, as (host, order id), or why
    /// a host could not be asked (the last such host, once every host has been asked).
    async fn drain(&self, wave: &[String]) -> Result<Vec<(String, String)>, String> {
        let mut problem = None;
        let mut orders = Vec::new();
        for h in wave {
            match one(self.cfg, h, self.drain_request(h, format!("rollout: {}", self.r.reason))).await {
                Ok(resp) => orders
                    .extend(resp.progress.iter().filter_map(|p| p.order.as_ref().map(|o| (h.clone(), o.id.clone())))),
                Err(e) => problem = Some(format!("cannot drain {h}: {e}")),
            }
        }
        problem.map_or(Ok(orders), Err)
    }

    /// Waits until every drain order of the wave is done; `Some(why)` when that takes longer
    /// than the drain's deadline allows.
    async fn wait_drained(&self, orders: &[(String, String)], label: &str) -> anyhow::Result<Option<String>> {
        let give_up = Instant::now() + self.r.deadline + self.cfg.systemd.stop_timeout + Duration::from_secs(30);
        loop {
            let mut all_done = true;
            for (h, id) in orders {
                let p = one(self.cfg, h, Request::Progress).await?;
                // Done only once this order's own progress says so (a new order has none yet).
                all_done &= p.progress.iter().any(|p| p.done && p.order.as_ref().is_some_and(|o| &o.id == id));
            }
            if all_done {
                return Ok(None);
            }
            let late = Instant::now() > give_up;
            tokio::time::sleep(Duration::from_secs(1)).await;
            if late {
                return Ok(Some(format!("{label} did not drain in time")));
            }
        }
    }

    /// Runs the operator's command for each host of the wave (`DROVER_HOST` names it), if
    /// there is one; `Some(why)` when it failed for a host (the last such host).
    async fn change(&self, wave: &[String], label: &str) -> Option<String> {
        let command = &self.r.command;
        let mut problem = None;
        if command.is_empty() {
            return problem;
        }
        for h in wave {
            println!("{label}: running {command:?} for {h}");
            // In its own process group: Ctrl-C (which the terminal sends to the whole
            // foreground group) stops the rollout after this step, not the change halfway.
            let status = tokio::process::Command::new(&command[0])
                .args(&command[1..])
                .env("DROVER_HOST", h)
                .process_group(0)
                .status()
                .await;
            match status {
                Ok(s) if s.success() => {}
                Ok(s) => problem = Some(format!("the command failed for {h} ({s})")),
                Err(e) => problem = Some(format!("cannot run the command: {e}")),
            }
        }
        problem
    }

    /// Waits (up to 2 minutes) until every unit of the wave is healthy, misconfigured or failing.
    async fn settle(&self, wave: &[String]) -> anyhow::Result<()> {
        // The soak starts once the wave's units are back (or have visibly failed to come
        // back): a unit still starting cannot be judged.
        let settle_by = Instant::now() + Duration::from_secs(120);
        while Instant::now() < settle_by {
            let mut settled = true;
            for h in wave {
                if let Some(status) = one(self.cfg, h, Request::Status).await?.status {
                    settled &= status.systemd_connected
                        && !status.units.is_empty()
                        && status
                            .units
                            .iter()
                            .all(|u| matches!(u.health.as_str(), "healthy" | "misconfigured" | "failing"));
                }
            }
            if settled {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Ok(())
    }

    /// Watches the wave's units every second for the soak; `Some(why)` as soon as one is
    /// misconfigured or failing.
    async fn soak(&self, wave: &[String], soak_start: Instant) -> anyhow::Result<Option<String>> {
        let mut problem = None;
        while problem.is_none() && soak_start.elapsed() < self.r.soak {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let mut bad = BTreeMap::new();
            for h in wave {
                if let Some(status) = one(self.cfg, h, Request::Status).await?.status {
                    for u in status.units.iter().filter(|u| u.health == "misconfigured" || u.health == "failing") {
                        let detail = u.detail.clone().map(|d| format!(": {d}")).unwrap_or_default();
                        bad.insert(format!("{} on {h}", u.unit), format!("{}{detail}", u.health));
                    }
                }
            }
            problem = judge(&Seen::default(), &Seen::default(), &bad);
        }
        Ok(problem)
    }

    /// The wave's jobs since the soak began against those of the hosts not yet touched;
    /// `Some(why)` when the wave does clearly worse.
    fn compare(&self, wave: &[String], touched_so_far: &[String], soak_start: Instant) -> Option<String> {
        let events: Vec<JobEvent> = self
            .seen
            .lock()
            .map(|v| v.iter().filter(|(t, _)| *t >= soak_start).map(|(_, e)| e.clone()).collect())
            .unwrap_or_default();
        let touched = tally(&events, |h| wave.iter().any(|w| w == h));
        let untouched = tally(&events, |h| !touched_so_far.iter().any(|w| w == h));
        judge(&touched, &untouched, &BTreeMap::new())
    }

    /// Drains the wave again, records why in its timelines, and alerts.
    async fn halt(&self, wave: &[String], label: &str, why: String) {
        eprintln!("ROLLOUT HALTED at {label}: {why}");
        eprintln!("draining {} again; the hosts of earlier waves stay in service", wave.join(", "));
        for h in wave {
            if let Err(e) = one(self.cfg, h, self.drain_request(h, format!("rollout halted: {why}"))).await {
                eprintln!("cannot drain {h} again: {e}");
            }
        }
        self.note(wave, format!("rollout halted at {label}"), why.clone()).await;
        tracing::error!("ALERT rollout halted at {label}: {why}");
    }

    /// A line in each host's timeline (best effort).
    async fn note(&self, hosts: &[String], what: String, why: String) {
        for h in hosts {
            let _ =
                one(self.cfg, h, Request::Note { what: what.clone(), why: why.clone(), who: self.who.clone() }).await;
        }
    }
}

/// One word for a POSIX shell: as it is when nothing in it is special, else in single quotes.
fn sh_quote(s: &str) -> String {
    let plain = !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "_./,:=@%+-".contains(c));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// Attempts, failures and run times of the events on the hosts that `on` picks.
fn tally(events: &[JobEvent], on: impl Fn(&str) -> bool) -> Seen {
    let mut s = Seen::default();
    for e in events.iter().filter(|e| on(&e.host)) {
        match e.event {
            EventKind::Succeeded => {
                s.attempts += 1;
                s.durations.extend(e.duration_s);
            }
            EventKind::Failed => {
                s.attempts += 1;
                s.failures += 1;
            }
            _ => {}
        }
    }
    s
}

async fn collect_events(cfg: &Config, into: EventLog) -> anyhow::Result<()> {
    use futures_lite::StreamExt;
    let mut link = crate::io::amqp::Link::new(&cfg.broker, "drover rollout");
    link.ensure_up_by(Instant::now() + cfg.broker.connect_timeout * 2).await?;
    let events_exchange = link.names.events();
    let (_chan, mut consumer, _) = link.private_consumer(Some((&events_exchange, "#")), "rollout").await?;
    while let Some(Ok(d)) = consumer.next().await {
        let events = crate::events::parse(&d.data).unwrap_or_default();
        if let Ok(mut v) = into.lock() {
            v.extend(events.into_iter().map(|e| (Instant::now(), e)));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn words_are_quoted_for_a_shell_only_when_they_need_it() {
        assert_eq!(super::sh_quote("host-a,host-b"), "host-a,host-b");
        assert_eq!(super::sh_quote("/etc/drover/drover.toml"), "/etc/drover/drover.toml");
        assert_eq!(super::sh_quote("kernel 6.1"), "'kernel 6.1'");
        assert_eq!(super::sh_quote("it's"), "'it'\\''s'");
        assert_eq!(super::sh_quote("$HOME"), "'$HOME'");
        assert_eq!(super::sh_quote(""), "''");
    }
}
