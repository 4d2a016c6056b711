//! `drover drain / cordon / undrain`: maintenance orders sent to the supervisor of the host
//! concerned through the broker's control exchange (so they work from any host), and with
//! `--wait`, the drain's progress until it is safe to power off.

use crate::config::Config;
use crate::io::control::{Request, Response};
use crate::io::fleet::{self, Target};
use crate::maintenance::{Progress, Scope};
use std::io::{IsTerminal, Write};
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
    let answers = fleet::ask(cfg, &target, &req, listen).await?;
    if answers.is_empty() {
        anyhow::bail!("no supervisor answered for {scope} within {listen:?}: is `drover supervise` running there?");
    }
    let (failed, ids) = report(&answers, op, &scope, json);
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
    let terminal = std::io::stdout().is_terminal() && !json;
    loop {
        let progress = drain_progress(cfg, hosts, ids).await?;
        show(&progress, terminal)?;
        let done = !progress.is_empty() && progress.iter().all(|p| p.done);
        if done {
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

fn show(progress: &[Progress], terminal: bool) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if !terminal {
        for p in progress {
            writeln!(out, "{}", serde_json::to_string(p)?)?;
        }
        return Ok(());
    }
    for p in progress {
        let total = p.units.len().max(1);
        let stopped = p.units.iter().filter(|u| u.state == "stopped").count();
        let width = 30;
        let filled = stopped * width / total;
        writeln!(
            out,
            "{} [{}{}] {stopped}/{total} units stopped",
            p.host,
            "#".repeat(filled),
            "-".repeat(width - filled)
        )?;
        for u in p.units.iter().filter(|u| u.state != "stopped") {
            let job = match (&u.job, u.age_s, u.expected_left_s) {
                (Some(j), Some(age), Some(left)) => {
                    format!("job {j}, running {age:.0}s, expected to finish in about {left:.0}s")
                }
                (Some(j), Some(age), None) => format!("job {j}, running {age:.0}s"),
                _ => String::new(),
            };
            writeln!(out, "  {:<40} {:<22} {job}", u.unit, u.state)?;
        }
        for m in &p.requeued {
            writeln!(
                out,
                "  requeued {} from {} -> {}",
                m.job,
                m.from,
                m.to.as_deref().unwrap_or("waiting in the queue")
            )?;
        }
    }
    Ok(())
}

/// `drover rollout`: drains, changes (an operator's command, or a plain restart of the units)
/// and undrains hosts in waves, soaking each wave and halting when it looks worse than the hosts
/// not yet touched. Returns the exit status: 0 done, 1 halted.
pub struct Rollout {
    pub hosts: Vec<String>,
    pub waves: Vec<crate::rollout::WaveSize>,
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
    use crate::events::{EventKind, JobEvent};
    use crate::rollout::{judge, waves, Seen};
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};

    let who = who();
    let plan = waves(&r.hosts, &r.waves);
    // Job events of the whole fleet during the rollout, for the comparisons.
    let seen: Arc<Mutex<Vec<(Instant, JobEvent)>>> = Arc::default();
    let collector = {
        let seen = seen.clone();
        let cfg = cfg.clone();
        tokio::spawn(async move {
            let _ = collect_events(&cfg, seen).await;
        })
    };
    let note = |hosts: Vec<String>, what: String, why: String| {
        let who = who.clone();
        async move {
            for h in hosts {
                let _ = one(cfg, &h, Request::Note { what: what.clone(), why: why.clone(), who: who.clone() }).await;
            }
        }
    };
    let mut touched_so_far: Vec<String> = Vec::new();
    for (i, wave) in plan.iter().enumerate() {
        let label = format!("wave {}/{} ({})", i + 1, plan.len(), wave.join(", "));
        println!("{label}: draining");
        note(wave.clone(), format!("rollout {label}: drain"), r.reason.clone()).await;
        let halt = |why: String| why;
        let mut problem: Option<String> = None;
        let mut orders: Vec<(String, String)> = Vec::new();
        for h in wave {
            let req = Request::Drain {
                scope: Scope::Host(h.clone()),
                deadline_s: r.deadline.as_secs_f64(),
                reason: format!("rollout: {}", r.reason),
                who: who.clone(),
            };
            match one(cfg, h, req).await {
                Ok(resp) => orders
                    .extend(resp.progress.iter().filter_map(|p| p.order.as_ref().map(|o| (h.clone(), o.id.clone())))),
                Err(e) => problem = Some(halt(format!("cannot drain {h}: {e}"))),
            }
        }
        let give_up = Instant::now() + r.deadline + cfg.systemd.stop_timeout + Duration::from_secs(30);
        while problem.is_none() {
            let mut all_done = true;
            for (h, id) in &orders {
                let p = one(cfg, h, Request::Progress).await?;
                // Done only once this order's own progress says so (a new order has none yet).
                all_done &= p.progress.iter().any(|p| p.done && p.order.as_ref().is_some_and(|o| &o.id == id));
            }
            if all_done {
                break;
            }
            if Instant::now() > give_up {
                problem = Some(format!("{label} did not drain in time"));
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        if problem.is_none() && !r.command.is_empty() {
            for h in wave {
                println!("{label}: running {:?} for {h}", r.command);
                let status = tokio::process::Command::new(&r.command[0])
                    .args(&r.command[1..])
                    .env("DROVER_HOST", h)
                    .status()
                    .await;
                match status {
                    Ok(s) if s.success() => {}
                    Ok(s) => problem = Some(format!("the command failed for {h} ({s})")),
                    Err(e) => problem = Some(format!("cannot run the command: {e}")),
                }
            }
        }
        if problem.is_none() {
            println!("{label}: undraining, soaking for {}", crate::duration::format(r.soak));
            for h in wave {
                one(
                    cfg,
                    h,
                    Request::Undrain {
                        scope: Scope::Host(h.clone()),
                        reason: format!("rollout: {}", r.reason),
                        who: who.clone(),
                    },
                )
                .await?;
            }
            touched_so_far.extend(wave.iter().cloned());
            // The soak starts once the wave's units are back (or have visibly failed to come
            // back): a unit still starting cannot be judged.
            let settle_by = Instant::now() + Duration::from_secs(120);
            while Instant::now() < settle_by {
                let mut settled = true;
                for h in wave {
                    if let Some(status) = one(cfg, h, Request::Status).await?.status {
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
            let soak_start = Instant::now();
            while problem.is_none() && soak_start.elapsed() < r.soak {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let mut bad = BTreeMap::new();
                for h in wave {
                    if let Some(status) = one(cfg, h, Request::Status).await?.status {
                        for u in status.units.iter().filter(|u| u.health == "misconfigured" || u.health == "failing") {
                            let detail = u.detail.clone().map(|d| format!(": {d}")).unwrap_or_default();
                            bad.insert(format!("{} on {h}", u.unit), format!("{}{detail}", u.health));
                        }
                    }
                }
                problem = judge(&Seen::default(), &Seen::default(), &bad);
            }
            if problem.is_none() {
                let events: Vec<JobEvent> = seen
                    .lock()
                    .map(|v| v.iter().filter(|(t, _)| *t >= soak_start).map(|(_, e)| e.clone()).collect())
                    .unwrap_or_default();
                let tally = |hosts: &dyn Fn(&str) -> bool| {
                    let mut s = Seen::default();
                    for e in events.iter().filter(|e| hosts(&e.host)) {
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
                };
                let touched = tally(&|h| wave.iter().any(|w| w == h));
                let untouched = tally(&|h| !touched_so_far.iter().any(|w| w == h));
                problem = judge(&touched, &untouched, &BTreeMap::new());
            }
        }
        if let Some(why) = problem {
            eprintln!("ROLLOUT HALTED at {label}: {why}");
            eprintln!("draining {} again; the hosts of earlier waves stay in service", wave.join(", "));
            for h in wave {
                let req = Request::Drain {
                    scope: Scope::Host(h.clone()),
                    deadline_s: r.deadline.as_secs_f64(),
                    reason: format!("rollout halted: {why}"),
                    who: who.clone(),
                };
                if let Err(e) = one(cfg, h, req).await {
                    eprintln!("cannot drain {h} again: {e}");
                }
            }
            note(wave.clone(), format!("rollout halted at {label}"), why.clone()).await;
            tracing::error!("ALERT rollout halted at {label}: {why}");
            collector.abort();
            return Ok(1);
        }
        note(wave.clone(), format!("rollout {label}: done"), r.reason.clone()).await;
    }
    collector.abort();
    println!("rollout complete: {} hosts in {} waves", r.hosts.len(), plan.len());
    Ok(0)
}

async fn collect_events(
    cfg: &Config,
    into: std::sync::Arc<std::sync::Mutex<Vec<(Instant, crate::events::JobEvent)>>>,
) -> anyhow::Result<()> {
    use futures_lite::StreamExt;
    let mut link = crate::io::amqp::Link::new(&cfg.broker, "drover rollout");
    link.ensure_up(Some(Instant::now() + cfg.broker.connect_timeout * 2), &tokio_util::sync::CancellationToken::new())
        .await?;
    let events_exchange = link.names.events();
    let (_chan, mut consumer, _) = link.private_consumer(Some((&events_exchange, "#")), "rollout").await?;
    while let Some(Ok(d)) = consumer.next().await {
        if let Ok(e) = serde_json::from_slice(&d.data) {
            if let Ok(mut v) = into.lock() {
                v.push((Instant::now(), e));
            }
        }
    }
    Ok(())
}
