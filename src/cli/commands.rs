//! One function per command: load what it needs, do it (here or through the library), print.

use super::{ask, block_on, exit_code, load, load_as, print_json, Failure, Outcome};
use crate::cli::args::ScopeArgs;
use crate::cli::{drainctl, submit as submitting};
use crate::config::Role;
use crate::config::{Bus, Config};
use crate::io::{control, fleet, systemd::Systemd, units};
use crate::job::rfc3339;
use crate::maintenance::{Kind, Order, Scope};
use crate::{drift, reconcile, rollout as waves, supervisor, timeline, worker};
use anyhow::{anyhow, Context};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub fn check_config(file: &Path, json: bool) -> Outcome {
    if json {
        let doc = match crate::io::config_file::load(file) {
            Ok(cfg) => serde_json::json!({
                "file": file.display().to_string(),
                "ok": true,
                "classes": cfg.classes.keys().collect::<Vec<_>>(),
                "warnings": cfg.warnings().iter().map(|w| w.0.clone()).collect::<Vec<_>>(),
                "problems": [],
            }),
            Err(e) => serde_json::json!({
                "file": file.display().to_string(),
                "ok": false,
                "problems": e.problems.iter()
                    .map(|p| serde_json::json!({"key": p.key, "found": p.found, "accepted": p.accepted}))
                    .collect::<Vec<_>>(),
            }),
        };
        print_json(&doc)?;
        return Ok(if doc["ok"] == true { 0 } else { 2 });
    }
    let cfg = crate::io::config_file::load(file).map_err(|e| Failure::Usage(e.into()))?;
    for w in cfg.warnings() {
        eprintln!("warning: {}", w.0);
    }
    println!("{}: ok ({} classes)", file.display(), cfg.classes.len());
    Ok(0)
}

pub fn drift_replay(input: &Path, output: &Path) -> Outcome {
    let usage = Failure::Usage;
    let open = std::fs::File::open(input).with_context(|| format!("cannot read {}", input.display())).map_err(usage)?;
    let out =
        std::fs::File::create(output).with_context(|| format!("cannot write {}", output.display())).map_err(usage)?;
    let stats = drift::replay(std::io::BufReader::new(open), std::io::BufWriter::new(out), Default::default())
        .with_context(|| format!("replay of {}", input.display()))
        .map_err(usage)?;
    eprintln!("{} rows, {} alerts started, {} rows alerting", stats.rows, stats.alerts_started, stats.alert_rows);
    Ok(0)
}

pub fn drift_rebaseline(config: &Path, class: String, host_only: bool, reason: String) -> Outcome {
    let cfg = load(config)?;
    cfg.class(&class).map_err(|e| Failure::Usage(anyhow!(e)))?;
    let req = control::Request::Rebaseline { class: class.clone(), host_only, reason, who: drainctl::who() };
    let answers = if host_only {
        vec![ask(&cfg, &req)?]
    } else {
        // Every supervisor keeps its own view of the class: each starts afresh.
        block_on(fleet::ask(&cfg, &fleet::Target::All, &req, Duration::from_secs(3)))?
    };
    for a in &answers {
        match &a.error {
            Some(e) => eprintln!("{}: {e}", a.host),
            None => println!("{}: class {class} starts a new latency baseline", a.host),
        }
    }
    Ok(if !answers.is_empty() && answers.iter().all(|a| a.ok && a.error.is_none()) { 0 } else { 1 })
}

pub fn supervise(config: &Path) -> Outcome {
    let cfg = load_as(config, Role::Supervisor)?;
    log_warnings(&cfg);
    Ok(exit_code(block_on(supervisor::run(cfg))?))
}

pub fn work(config: &Path, class: Option<String>, instance: Option<String>) -> Outcome {
    worker::ignore_until_listening();
    let cfg = load_as(config, Role::Worker)?;
    let class = match (class, instance.as_deref()) {
        (Some(c), _) => c,
        (None, Some(i)) => reconcile::class_of_instance(i)
            .ok_or_else(|| Failure::Usage(anyhow!("cannot read a class from the instance `{i}` (expected CLASS-N)")))?
            .to_string(),
        (None, None) => return Err(Failure::Usage(anyhow!("--class or --instance is required"))),
    };
    cfg.class(&class).map_err(|e| Failure::Usage(anyhow!(e)))?;
    log_warnings(&cfg);
    Ok(exit_code(block_on(worker::run(cfg, &class, instance))?))
}

pub fn status(config: &Path, json: bool) -> Outcome {
    let status = status_report(&load(config)?)?;
    if json {
        return print_json(&status);
    }
    print!("{}", control::render_table(&status));
    Ok(0)
}

pub fn fleet_status(config: &Path, expect: &[String], wait: Duration, json: bool) -> Outcome {
    let cfg = load(config)?;
    let f = block_on(super::fleet_status::gather(&cfg, expect, wait))?;
    if json {
        print_json(&f)?;
    } else {
        print!("{}", super::fleet_status::render(&f, wait));
    }
    Ok(if f.not_answering.is_empty() { 0 } else { 1 })
}

pub fn alerts(config: &Path, json: bool) -> Outcome {
    let status = status_report(&load(config)?)?;
    if json {
        return print_json(&serde_json::json!({
            "host": status.host,
            "firing": status.firing,
            "resolved": status.resolved,
            "units": status.alerts,
        }));
    }
    print!("{}", control::render_alerts(&status));
    Ok(0)
}

pub fn timeline(config: &Path, since: Option<Duration>, fleet: bool, json: bool) -> Outcome {
    let cfg = load(config)?;
    let since_ms = since.map(|d| crate::io::clock::now_ms() - d.as_millis() as i64).unwrap_or(0);
    let req = control::Request::Timeline { since_ms };
    let entries = if fleet {
        // Every supervisor answers on the control exchange; those that answer within the wait count.
        let answers = block_on(fleet::ask(&cfg, &fleet::Target::All, &req, Duration::from_secs(3)))?;
        eprintln!("{} host(s) answered", answers.len());
        timeline::merge(answers.into_iter().map(|r| r.timeline).collect())
    } else {
        ask(&cfg, &req)?.timeline
    };
    if json {
        return print_json(&entries);
    }
    for e in &entries {
        println!("{}  {:<10} {:<8} {:<36} {}  ({})", e.at, e.host, e.who, e.what, e.scope, e.why);
    }
    Ok(0)
}

pub fn maintain(
    scope: &ScopeArgs,
    op: drainctl::Op,
    deadline: Option<Duration>,
    reason: String,
    wait: bool,
    json: bool,
) -> Outcome {
    let cfg = load(&scope.config)?;
    let code = block_on(drainctl::run(&cfg, op, scope.scope(), deadline, reason, wait, json))?;
    Ok(exit_code(code))
}

pub fn rollout(config: &Path, mut r: drainctl::Rollout, waves: &str, dry_run: bool) -> Outcome {
    let cfg = load(config)?;
    r.waves = waves::parse_waves(waves).map_err(|e| Failure::Usage(anyhow!("--waves {e}")))?;
    if dry_run {
        let plan = waves::waves(&r.hosts, &r.waves);
        let change = if r.command.is_empty() { "restart the units".to_string() } else { r.command.join(" ") };
        for (i, w) in plan.iter().enumerate() {
            println!("wave {} ({} host(s)): {}", i + 1, w.len(), w.join(", "));
        }
        println!(
            "each wave: drain (deadline {}), {change}, undrain, soak {}; halt if it looks worse than the hosts not yet touched",
            crate::duration::format(r.deadline),
            crate::duration::format(r.soak)
        );
        return Ok(0);
    }
    Ok(exit_code(block_on(drainctl::rollout(&cfg, r))?))
}

pub fn quarantine_list(config: &Path, json: bool) -> Outcome {
    let cfg = load(config)?;
    let resp = ask(&cfg, &control::Request::Progress)?;
    let orders: Vec<Order> =
        resp.progress.into_iter().filter_map(|p| p.order).filter(|o| o.kind == Kind::Quarantine).collect();
    if json {
        return print_json(&orders);
    }
    if orders.is_empty() {
        println!("no unit is quarantined on {}", cfg.host);
    }
    for o in &orders {
        let probe = match (o.probing_since_ms, o.deadline_ms) {
            (Some(since), _) => format!("probing since {}", rfc3339(since)),
            (None, Some(at)) => format!("probe after {}", rfc3339(at)),
            (None, None) => String::new(),
        };
        println!("{}  since {}  {probe}\n    {}", o.scope, rfc3339(o.at_ms), o.reason);
    }
    Ok(0)
}

pub fn quarantine_release(config: &Path, unit: String, reason: String, json: bool) -> Outcome {
    let cfg = load(config)?;
    let unit = super::args::unit_instance(&unit);
    let resp = ask(&cfg, &control::Request::Undrain { scope: Scope::Unit(unit), reason, who: drainctl::who() })?;
    if json {
        print_json(&resp)?;
    } else if let Some(e) = &resp.error {
        eprintln!("{e}");
    }
    Ok(if resp.ok && resp.error.is_none() { 0 } else { 1 })
}

pub fn install_units(config: &Path, system: bool, dir: Option<PathBuf>, json: bool) -> Outcome {
    let cfg = crate::io::config_file::load(config).map_err(|e| Failure::Usage(e.into()))?;
    let config = std::fs::canonicalize(config).map_err(|e| Failure::Usage(e.into()))?;
    let bin = std::env::current_exe().map_err(|e| Failure::Failed(e.into()))?;
    let scope = if system { units::Scope::System } else { units::Scope::User };
    let files = units::render(&cfg, &bin, &config, scope);
    let target = dir.clone().unwrap_or_else(|| units::unit_dir(system));
    let written = units::install(&cfg, &target, &files)
        .with_context(|| format!("cannot write unit files to {}", target.display()))
        .map_err(Failure::Failed)?;
    if json {
        print_json(&serde_json::json!({
            "files": written.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
            "summary": units::summary(&cfg),
            "reloaded": dir.is_none(),
        }))?;
    } else {
        for p in &written {
            println!("{}", p.display());
        }
        eprintln!("{}", units::summary(&cfg));
    }
    if dir.is_none() {
        let bus = if system { Bus::System } else { Bus::User };
        block_on(async {
            let sd = Systemd::connect(bus, cfg.systemd.call_timeout).await?;
            sd.reload().await.context("cannot reload the systemd manager")
        })?;
    }
    Ok(0)
}

pub fn submit(
    config: &Path,
    class: String,
    payload: Option<String>,
    payload_file: Option<PathBuf>,
    deadline: Option<Duration>,
    tenant: Option<String>,
    count: u64,
) -> Outcome {
    let cfg = load(config)?;
    cfg.class(&class).map_err(|e| Failure::Usage(anyhow!(e)))?;
    let payload = match (payload, payload_file) {
        (Some(p), _) => p.into_bytes(),
        (None, Some(f)) => std::fs::read(&f)
            .with_context(|| format!("cannot read the payload file {}", f.display()))
            .map_err(Failure::Usage)?,
        (None, None) => b"{}".to_vec(),
    };
    let s = submitting::Submission { class, payload, deadline, tenant, count };
    let ids = block_on(submitting::submit(&cfg, &s))?;
    let mut out = std::io::stdout().lock();
    for id in ids {
        if writeln!(out, "{id}").is_err() {
            break; // a closed pipe (| head) is not an error
        }
    }
    Ok(0)
}

/// The supervisor's status report, or why there is none.
fn status_report(cfg: &Config) -> Result<control::StatusReport, Failure> {
    let resp = ask(cfg, &control::Request::Status)?;
    resp.status.ok_or_else(|| Failure::Failed(anyhow!(resp.error.unwrap_or_else(|| "no status".into()))))
}

fn log_warnings(cfg: &Config) {
    for w in cfg.warnings() {
        tracing::warn!("{}", w.0);
    }
}

pub fn dead(command: super::args::DeadCommand) -> Outcome {
    use super::args::DeadCommand as D;
    use super::dead;
    let code = match command {
        D::List { config, class, reason, json } => {
            let cfg = load(&config)?;
            block_on(dead::list(&cfg, &class, reason, json))?
        }
        D::Show { id, config, class, json } => {
            let cfg = load(&config)?;
            block_on(dead::show(&cfg, &id, class, json))?
        }
        D::Requeue { config, class, id, reason, all, why, deadline, dry_run, json } => {
            let cfg = load(&config)?;
            let selection = match (id.is_empty(), reason, all) {
                (false, _, _) => crate::dead::Selection::Ids(id),
                (true, Some(r), _) => crate::dead::Selection::Reason(r),
                _ => crate::dead::Selection::All,
            };
            block_on(dead::requeue(&cfg, dead::Requeue { class, selection, why, deadline, dry_run, json }))?
        }
    };
    Ok(exit_code(code))
}

/// `drover completions SHELL`: the completion script, generated from the command line itself.
pub fn completions(shell: clap_complete::Shell) -> Outcome {
    use clap::CommandFactory;
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut crate::cli::args::Cli::command(), "drover", &mut out);
    // A closed pipe (| head) is not an error.
    let _ = std::io::stdout().write_all(&out);
    Ok(0)
}

/// `drover man`: drover(1), generated from the command line itself.
pub fn man() -> Outcome {
    use clap::CommandFactory;
    let mut out = Vec::new();
    clap_mangen::Man::new(crate::cli::args::Cli::command()).render(&mut out).map_err(|e| Failure::Failed(e.into()))?;
    let _ = std::io::stdout().write_all(&out);
    Ok(0)
}
