//! `drover drain / cordon / undrain`: maintenance orders sent to the supervisor of the host
//! concerned through the broker's control exchange (so they work from any host), and with
//! `--wait`, the drain's progress until it is safe to power off.

use crate::config::Config;
use crate::control::{Request, Response};
use crate::fleet::{self, Target};
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
    let who = who();
    let req = match op {
        Op::Drain => Request::Drain {
            scope: scope.clone(),
            deadline_s: deadline.unwrap_or(Duration::from_secs(600)).as_secs_f64(),
            reason,
            who,
        },
        Op::Cordon => Request::Cordon { scope: scope.clone(), reason, who },
        Op::Undrain => Request::Undrain { scope: scope.clone(), reason, who },
    };
    let target = target(cfg, &scope);
    let listen = if target == Target::All { Duration::from_secs(3) } else { Duration::from_secs(15) };
    let answers = fleet::ask(cfg, &target, &req, listen).await?;
    if answers.is_empty() {
        anyhow::bail!("no supervisor answered for {scope} within {listen:?}: is `drover supervise` running there?");
    }
    let mut failed = false;
    let mut ids = Vec::new();
    for a in &answers {
        match (&a.error, a.ok) {
            (Some(e), false) => {
                eprintln!("{}: {e}", a.host);
                failed = true;
            }
            (Some(note), true) => eprintln!("{}: {note}", a.host),
            (None, _) => {
                if !json {
                    eprintln!("{}: {} accepted", a.host, label(op, &scope));
                }
            }
        }
        ids.extend(a.progress.iter().filter_map(|p| p.order.as_ref().map(|o| o.id.clone())));
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
    let terminal = std::io::stdout().is_terminal() && !json;
    loop {
        let mut progress: Vec<Progress> = Vec::new();
        for host in &hosts {
            let replies: Vec<Response> =
                fleet::ask(cfg, &Target::Host(host.clone()), &Request::Progress, Duration::from_secs(10)).await?;
            progress.extend(
                replies
                    .into_iter()
                    .flat_map(|r| r.progress)
                    .filter(|p| p.order.as_ref().is_some_and(|o| ids.contains(&o.id))),
            );
        }
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
