//! The `drover` binary: parses arguments, sets up logging, loads the configuration and hands
//! over to the library. Exit codes: 0 success, 1 the operation ran but did not succeed, 2 bad
//! usage or bad configuration.

use anyhow::Context;
use clap::{Parser, Subcommand};
use drover::cli::{drainctl, submit};
use drover::config::Bus;
use drover::config::Config;
use drover::io::{config_file, control, units};
use drover::{drift, duration, supervisor, worker};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "drover", version, about = "A self-healing supervisor for a fleet of job workers")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The per-host supervisor (what drover-supervisor.service runs).
    Supervise {
        #[arg(long)]
        config: PathBuf,
    },
    /// Units, their state and current job, and recent alerts, from the supervisor.
    Status {
        #[arg(long)]
        config: PathBuf,
        /// One JSON document instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Drain a unit, a host or a class: no new jobs, running ones finish until the deadline,
    /// the rest are requeued without charge, the units stop. Works from any host.
    Drain {
        #[command(flatten)]
        scope: ScopeArgs,
        /// How long running jobs may go on, e.g. 30m.
        #[arg(long, value_parser = parse_duration)]
        deadline: std::time::Duration,
        #[arg(long)]
        reason: String,
        /// Show progress until it is safe to power off (exit 0), or until the drain is late (exit 1).
        #[arg(long)]
        wait: bool,
        #[arg(long)]
        json: bool,
    },
    /// Workers quarantined because their jobs fail while the same class succeeds elsewhere.
    Quarantine {
        #[command(subcommand)]
        command: QuarantineCommand,
    },
    /// Drain, change and undrain hosts in waves (one, then a few, then a share, then the rest),
    /// soaking each wave; halts, drains the wave again and alerts when it looks worse than the
    /// hosts not yet touched.
    Rollout {
        #[arg(long)]
        config: PathBuf,
        /// The hosts, in rollout order, comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        hosts: Vec<String>,
        /// Wave sizes: host counts or percentages of all hosts.
        #[arg(long, default_value = "1,2,25%,100%")]
        waves: String,
        /// How long to watch each wave after it is back in service.
        #[arg(long, value_parser = parse_duration, default_value = "10m")]
        soak: std::time::Duration,
        /// Drain deadline per wave.
        #[arg(long, value_parser = parse_duration, default_value = "30m")]
        deadline: std::time::Duration,
        #[arg(long)]
        reason: String,
        /// The change to make while a host is drained (run here, once per host, with DROVER_HOST
        /// set), e.g. an upgrade step; without it the units are simply restarted.
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// Take no new jobs in a unit, host or class; running jobs go on.
    Cordon {
        #[command(flatten)]
        scope: ScopeArgs,
        #[arg(long)]
        reason: String,
    },
    /// Lift the drains and cordons of a unit, host or class.
    Undrain {
        #[command(flatten)]
        scope: ScopeArgs,
        #[arg(long)]
        reason: String,
    },
    /// What Drover did and why (drains, cordons, requeues, restarts, alerts), with who and when.
    Timeline {
        #[arg(long)]
        config: PathBuf,
        /// How far back, e.g. 24h (default: everything kept).
        #[arg(long, value_parser = parse_duration)]
        since: Option<std::time::Duration>,
        #[arg(long)]
        json: bool,
    },
    /// Firing and recent alerts (latency drift, jobs running long, deadlines at risk, stalls,
    /// failing and misconfigured units).
    Alerts {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Write the unit files for this binary and configuration, and reload the manager.
    InstallUnits {
        #[arg(long, conflicts_with = "user", required_unless_present = "user")]
        system: bool,
        #[arg(long)]
        user: bool,
        #[arg(long)]
        config: PathBuf,
        /// Write here instead of the manager's directory (no reload).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Run one worker in the foreground (what drover-worker@.service runs).
    Work {
        #[arg(long)]
        config: PathBuf,
        /// The job class; by default read from the instance name (`inference-3` -> `inference`).
        #[arg(long, required_unless_present = "instance")]
        class: Option<String>,
        /// The unit's instance (e.g. inference-3); also DROVER_UNIT for the handler.
        #[arg(long)]
        instance: Option<String>,
    },
    /// Publish jobs with publisher confirms; prints one job id per line.
    Submit {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        class: String,
        /// The payload, as given (JSON or not).
        #[arg(long, conflicts_with = "payload_file")]
        payload: Option<String>,
        /// Read the payload from a file.
        #[arg(long)]
        payload_file: Option<PathBuf>,
        /// Deadline from now, e.g. 24h (default: the class's deadline).
        #[arg(long, value_parser = parse_duration)]
        deadline: Option<std::time::Duration>,
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long, default_value_t = 1)]
        count: u64,
    },
    /// Validate a configuration: exit 0, or print every problem and exit 2.
    CheckConfig { file: PathBuf },
    /// Latency drift detection tools.
    Drift {
        #[command(subcommand)]
        command: DriftCommand,
    },
}

#[derive(Subcommand)]
enum QuarantineCommand {
    /// The quarantined units of this host, with the evidence and when they are probed.
    List {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Put a quarantined unit back in service now.
    Release {
        /// The unit (its name or instance, e.g. inference-3).
        unit: String,
        #[arg(long)]
        config: PathBuf,
        #[arg(long, default_value = "released by an operator")]
        reason: String,
    },
}

#[derive(Subcommand)]
enum DriftCommand {
    /// Run the production drift detector over a CSV of completions (`timestamp,value`) and write
    /// `timestamp,score,alert`.
    Replay {
        #[arg(long)]
        input: PathBuf,
        #[arg(long)]
        output: PathBuf,
    },
}

#[derive(clap::Args)]
#[group(required = true, multiple = false, id = "scope")]
struct ScopeFlags {
    /// A unit of this host (its name or instance, e.g. inference-3).
    #[arg(long)]
    unit: Option<String>,
    /// A host, by its configured name (any host's supervisor is reached through the broker).
    #[arg(long)]
    host: Option<String>,
    /// A class, on every host.
    #[arg(long)]
    class: Option<String>,
}

#[derive(clap::Args)]
struct ScopeArgs {
    #[arg(long)]
    config: PathBuf,
    #[command(flatten)]
    which: ScopeFlags,
}

impl ScopeArgs {
    fn scope(&self) -> drover::maintenance::Scope {
        use drover::maintenance::Scope;
        match (&self.which.unit, &self.which.host, &self.which.class) {
            (Some(u), _, _) => Scope::Unit(u.clone()),
            (_, Some(h), _) => Scope::Host(h.clone()),
            (_, _, Some(c)) => Scope::Class(c.clone()),
            _ => unreachable!("clap requires one of --unit, --host, --class"),
        }
    }
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    duration::parse(s)
}

/// A failure with its exit code.
struct Failure(u8, anyhow::Error);

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("DROVER_LOG").unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).init();
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(Failure(code, e)) => {
            eprintln!("drover: {e:#}");
            ExitCode::from(code)
        }
    }
}

fn load(path: &Path) -> Result<Config, Failure> {
    config_file::load(path).map_err(|e| Failure(2, e.into()))
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    // One thread: a worker runs one job at a time, and the handler's PR_SET_PDEATHSIG is tied
    // to the thread that spawned it, which must live as long as the worker.
    tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| Failure(1, e.into()))
}

fn run(cli: Cli) -> Result<u8, Failure> {
    match cli.command {
        Command::CheckConfig { file } => {
            let cfg = load(&file)?;
            for w in cfg.warnings() {
                eprintln!("warning: {}", w.0);
            }
            println!("{}: ok ({} classes)", file.display(), cfg.classes.len());
            Ok(0)
        }
        Command::Drift { command: DriftCommand::Replay { input, output } } => {
            let open = std::fs::File::open(&input)
                .with_context(|| format!("cannot read {}", input.display()))
                .map_err(|e| Failure(2, e))?;
            let out = std::fs::File::create(&output)
                .with_context(|| format!("cannot write {}", output.display()))
                .map_err(|e| Failure(2, e))?;
            let stats = drift::replay(std::io::BufReader::new(open), std::io::BufWriter::new(out), Default::default())
                .with_context(|| format!("replay of {}", input.display()))
                .map_err(|e| Failure(2, e))?;
            eprintln!(
                "{} rows, {} alerts started, {} rows alerting",
                stats.rows, stats.alerts_started, stats.alert_rows
            );
            Ok(0)
        }
        Command::Supervise { config } => {
            let cfg = load(&config)?;
            for w in cfg.warnings() {
                tracing::warn!("{}", w.0);
            }
            let code = runtime()?.block_on(supervisor::run(cfg)).map_err(|e| Failure(1, e))?;
            Ok(code.clamp(0, 255) as u8)
        }
        Command::Status { config, json } => {
            let cfg = load(&config)?;
            let req = control::Request::Status;
            let resp = runtime()?
                .block_on(control::request(&cfg.supervisor.socket, &req, std::time::Duration::from_secs(10)))
                .map_err(|e| Failure(1, e))?;
            let Some(status) = resp.status else {
                return Err(Failure(1, anyhow::anyhow!(resp.error.unwrap_or_else(|| "no status".into()))));
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&status).map_err(|e| Failure(1, e.into()))?);
            } else {
                print!("{}", control::render_table(&status));
            }
            Ok(0)
        }
        Command::Drain { scope, deadline, reason, wait, json } => {
            let cfg = load(&scope.config)?;
            let code = runtime()?
                .block_on(drainctl::run(&cfg, drainctl::Op::Drain, scope.scope(), Some(deadline), reason, wait, json))
                .map_err(|e| Failure(1, e))?;
            Ok(code as u8)
        }
        Command::Quarantine { command: QuarantineCommand::List { config, json } } => {
            let cfg = load(&config)?;
            let resp = runtime()?
                .block_on(control::request(
                    &cfg.supervisor.socket,
                    &control::Request::Progress,
                    std::time::Duration::from_secs(10),
                ))
                .map_err(|e| Failure(1, e))?;
            let orders: Vec<drover::maintenance::Order> = resp
                .progress
                .into_iter()
                .filter_map(|p| p.order)
                .filter(|o| o.kind == drover::maintenance::Kind::Quarantine)
                .collect();
            if json {
                println!("{}", serde_json::to_string_pretty(&orders).map_err(|e| Failure(1, e.into()))?);
            } else if orders.is_empty() {
                println!("no unit is quarantined on {}", cfg.host);
            } else {
                for o in &orders {
                    let probe = match (o.probing_since_ms, o.deadline_ms) {
                        (Some(since), _) => format!("probing since {}", drover::job::rfc3339(since)),
                        (None, Some(at)) => format!("probe after {}", drover::job::rfc3339(at)),
                        (None, None) => String::new(),
                    };
                    println!("{}  since {}  {probe}\n    {}", o.scope, drover::job::rfc3339(o.at_ms), o.reason);
                }
            }
            Ok(0)
        }
        Command::Quarantine { command: QuarantineCommand::Release { unit, config, reason } } => {
            let cfg = load(&config)?;
            let req = control::Request::Undrain {
                scope: drover::maintenance::Scope::Unit(unit),
                reason,
                who: drainctl::who(),
            };
            let resp = runtime()?
                .block_on(control::request(&cfg.supervisor.socket, &req, std::time::Duration::from_secs(10)))
                .map_err(|e| Failure(1, e))?;
            match (resp.ok, resp.error) {
                (true, None) => Ok(0),
                (_, Some(e)) => {
                    eprintln!("{e}");
                    Ok(1)
                }
                (false, None) => Ok(1),
            }
        }
        Command::Rollout { config, hosts, waves, soak, deadline, reason, command } => {
            let cfg = load(&config)?;
            let waves = drover::rollout::parse_waves(&waves).map_err(|e| Failure(2, anyhow::anyhow!("--waves {e}")))?;
            let r = drainctl::Rollout { hosts, waves, command, soak, deadline, reason };
            let code = runtime()?.block_on(drainctl::rollout(&cfg, r)).map_err(|e| Failure(1, e))?;
            Ok(code as u8)
        }
        Command::Cordon { scope, reason } => {
            let cfg = load(&scope.config)?;
            let code = runtime()?
                .block_on(drainctl::run(&cfg, drainctl::Op::Cordon, scope.scope(), None, reason, false, false))
                .map_err(|e| Failure(1, e))?;
            Ok(code as u8)
        }
        Command::Undrain { scope, reason } => {
            let cfg = load(&scope.config)?;
            let code = runtime()?
                .block_on(drainctl::run(&cfg, drainctl::Op::Undrain, scope.scope(), None, reason, false, false))
                .map_err(|e| Failure(1, e))?;
            Ok(code as u8)
        }
        Command::Timeline { config, since, json } => {
            let cfg = load(&config)?;
            let since_ms = since.map(|d| drover::io::clock::now_ms() - d.as_millis() as i64).unwrap_or(0);
            let resp = runtime()?
                .block_on(control::request(
                    &cfg.supervisor.socket,
                    &control::Request::Timeline { since_ms },
                    std::time::Duration::from_secs(10),
                ))
                .map_err(|e| Failure(1, e))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&resp.timeline).map_err(|e| Failure(1, e.into()))?);
            } else {
                for e in &resp.timeline {
                    println!("{}  {:<10} {:<8} {:<36} {}  ({})", e.at, e.host, e.who, e.what, e.scope, e.why);
                }
            }
            Ok(0)
        }
        Command::Alerts { config, json } => {
            let cfg = load(&config)?;
            let resp = runtime()?
                .block_on(control::request(
                    &cfg.supervisor.socket,
                    &control::Request::Status,
                    std::time::Duration::from_secs(10),
                ))
                .map_err(|e| Failure(1, e))?;
            let Some(status) = resp.status else {
                return Err(Failure(1, anyhow::anyhow!(resp.error.unwrap_or_else(|| "no status".into()))));
            };
            if json {
                let doc = serde_json::json!({
                    "host": status.host,
                    "firing": status.firing,
                    "resolved": status.resolved,
                    "units": status.alerts,
                });
                println!("{}", serde_json::to_string_pretty(&doc).map_err(|e| Failure(1, e.into()))?);
            } else {
                print!("{}", control::render_alerts(&status));
            }
            Ok(0)
        }
        Command::InstallUnits { system, user: _, config, dir } => {
            let cfg = load(&config)?;
            let config = std::fs::canonicalize(&config).map_err(|e| Failure(2, e.into()))?;
            let bin = std::env::current_exe().map_err(|e| Failure(1, e.into()))?;
            let files = units::render(&cfg, &bin, &config);
            let target = dir.clone().unwrap_or_else(|| units::unit_dir(system));
            let written = units::write(&target, &files)
                .with_context(|| format!("cannot write unit files to {}", target.display()))
                .map_err(|e| Failure(1, e))?;
            for p in &written {
                println!("{}", p.display());
            }
            eprintln!("{}", units::summary(&cfg));
            if dir.is_none() {
                let bus = if system { Bus::System } else { Bus::User };
                runtime()?
                    .block_on(async {
                        let sd = drover::io::systemd::Systemd::connect(bus, cfg.systemd.call_timeout).await?;
                        sd.reload().await
                    })
                    .context("cannot reload the systemd manager")
                    .map_err(|e| Failure(1, e))?;
            }
            Ok(0)
        }
        Command::Work { config, class, instance } => {
            let cfg = load(&config)?;
            let class = match (class, instance.as_deref()) {
                (Some(c), _) => c,
                (None, Some(i)) => drover::reconcile::class_of_instance(i)
                    .ok_or_else(|| {
                        Failure(2, anyhow::anyhow!("cannot read a class from the instance `{i}` (expected CLASS-N)"))
                    })?
                    .to_string(),
                (None, None) => return Err(Failure(2, anyhow::anyhow!("--class or --instance is required"))),
            };
            cfg.class(&class).map_err(|e| Failure(2, anyhow::anyhow!(e)))?;
            for w in cfg.warnings() {
                tracing::warn!("{}", w.0);
            }
            let code = runtime()?.block_on(worker::run(cfg, &class, instance)).map_err(|e| Failure(1, e))?;
            Ok(code.clamp(0, 255) as u8)
        }
        Command::Submit { config, class, payload, payload_file, deadline, tenant, count } => {
            let cfg = load(&config)?;
            cfg.class(&class).map_err(|e| Failure(2, anyhow::anyhow!(e)))?;
            let payload = match (payload, payload_file) {
                (Some(p), _) => p.into_bytes(),
                (None, Some(f)) => std::fs::read(&f)
                    .with_context(|| format!("cannot read the payload file {}", f.display()))
                    .map_err(|e| Failure(2, e))?,
                (None, None) => b"{}".to_vec(),
            };
            let s = submit::Submission { class, payload, deadline, tenant, count };
            let ids = runtime()?.block_on(submit::submit(&cfg, &s)).map_err(|e| Failure(1, e))?;
            let mut out = std::io::stdout().lock();
            for id in ids {
                if writeln!(out, "{id}").is_err() {
                    break; // a closed pipe (| head) is not an error
                }
            }
            Ok(0)
        }
    }
}
