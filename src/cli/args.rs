//! The command line: every command, flag and its help text (clap's derive). Nothing here runs a
//! command; `cli::run` does.

use crate::duration;
use crate::maintenance::Scope;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// Where every command reads the configuration unless `--config` or `$DROVER_CONFIG` says
/// otherwise (the package installs an example there).
pub const DEFAULT_CONFIG: &str = "/etc/drover/drover.toml";

/// `drover --version`: the package version and the git revision it was built from (build.rs).
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("DROVER_GIT_REVISION"), ")");

#[derive(Parser)]
#[command(name = "drover", version = VERSION, about = "A self-healing supervisor for a fleet of job workers")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// The per-host supervisor (what drover-supervisor.service runs).
    Supervise {
        #[arg(long, env = "DROVER_CONFIG", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Units, their state and current job, and recent alerts, from the supervisor.
    Status {
        #[arg(long, env = "DROVER_CONFIG", default_value = DEFAULT_CONFIG)]
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
        #[arg(long, env = "DROVER_CONFIG", default_value = DEFAULT_CONFIG)]
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
        #[arg(long, env = "DROVER_CONFIG", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// How far back, e.g. 24h (default: everything kept).
        #[arg(long, value_parser = parse_duration)]
        since: Option<std::time::Duration>,
        /// Every host's timeline merged into one (asked over the broker), each step once.
        #[arg(long)]
        fleet: bool,
        #[arg(long)]
        json: bool,
    },
    /// Firing and recent alerts (latency drift, jobs running long, deadlines at risk, stalls,
    /// failing and misconfigured units).
    Alerts {
        #[arg(long, env = "DROVER_CONFIG", default_value = DEFAULT_CONFIG)]
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
        #[arg(long, env = "DROVER_CONFIG", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Write here instead of the manager's directory (no reload).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Run one worker in the foreground (what drover-worker@.service runs).
    Work {
        #[arg(long, env = "DROVER_CONFIG", default_value = DEFAULT_CONFIG)]
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
        #[arg(long, env = "DROVER_CONFIG", default_value = DEFAULT_CONFIG)]
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
    CheckConfig {
        #[arg(env = "DROVER_CONFIG", default_value = DEFAULT_CONFIG)]
        file: PathBuf,
    },
    /// Print a shell completion script (bash, zsh, fish, ...) to standard output.
    #[command(hide = true)]
    Completions { shell: clap_complete::Shell },
    /// Print the manual page (roff) to standard output.
    #[command(hide = true)]
    Man,
    /// Latency drift detection tools.
    Drift {
        #[command(subcommand)]
        command: DriftCommand,
    },
}

#[derive(Subcommand)]
pub enum QuarantineCommand {
    /// The quarantined units of this host, with the evidence and when they are probed.
    List {
        #[arg(long, env = "DROVER_CONFIG", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Put a quarantined unit back in service now.
    Release {
        /// The unit (its name or instance, e.g. inference-3).
        unit: String,
        #[arg(long, env = "DROVER_CONFIG", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        #[arg(long, default_value = "released by an operator")]
        reason: String,
    },
}

#[derive(Subcommand)]
pub enum DriftCommand {
    /// Start a new latency baseline for a class after a deploy that changed its run time on
    /// purpose: every supervisor forgets what it learnt (or only this host's, with --host-only),
    /// with no restart. The detectors are useful again from the 100th completion.
    Rebaseline {
        #[arg(long, env = "DROVER_CONFIG", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        #[arg(long)]
        class: String,
        /// Only this host's baseline of the class (after a change to this host alone).
        #[arg(long)]
        host_only: bool,
        #[arg(long)]
        reason: String,
    },
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
pub struct ScopeFlags {
    /// A unit of this host (its name or instance, e.g. inference-3).
    #[arg(long)]
    pub unit: Option<String>,
    /// A host, by its configured name (any host's supervisor is reached through the broker).
    #[arg(long)]
    pub host: Option<String>,
    /// A class, on every host.
    #[arg(long)]
    pub class: Option<String>,
}

#[derive(clap::Args)]
pub struct ScopeArgs {
    #[arg(long, env = "DROVER_CONFIG", default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,
    #[command(flatten)]
    pub which: ScopeFlags,
}

impl ScopeArgs {
    pub fn scope(&self) -> Scope {
        match (&self.which.unit, &self.which.host, &self.which.class) {
            (Some(u), _, _) => Scope::Unit(u.clone()),
            (_, Some(h), _) => Scope::Host(h.clone()),
            (_, _, Some(c)) => Scope::Class(c.clone()),
            _ => unreachable!("clap requires one of --unit, --host, --class"),
        }
    }
}

pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    duration::parse(s)
}
