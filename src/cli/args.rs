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
    #[command(after_help = "Examples:\n  drover supervise --config /etc/drover/drover.toml")]
    Supervise {
        /// The configuration file.
        #[arg(long, env = "DROVER_CONFIG", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Units, their state and current job, and recent alerts, from the supervisor.
    #[command(
        after_help = "Examples:\n  drover status --config /etc/drover/drover.toml\n  drover status --config /etc/drover/drover.toml --json | jq .units\n  drover status --config /etc/drover/drover.toml --fleet --expect n1,n2,n3"
    )]
    Status {
        /// The configuration file.
        #[arg(long, env = "DROVER_CONFIG", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// One JSON document instead of a table.
        #[arg(long)]
        json: bool,
        /// Every host's supervisor, asked over the broker: queue depths, units by health,
        /// quarantines, drains, firing alerts.
        #[arg(long)]
        fleet: bool,
        /// With --fleet: the hosts that should answer (comma-separated); those that do not are
        /// listed as not answering and the exit status is 1.
        #[arg(long, value_delimiter = ',', requires = "fleet")]
        expect: Vec<String>,
        /// With --fleet: how long to wait for the supervisors' answers.
        #[arg(long, value_parser = parse_duration, default_value = "3s")]
        wait: std::time::Duration,
    },
    /// Drain a unit, a host or a class: no new jobs, running ones finish until the deadline,
    /// the rest are requeued without charge, the units stop. Works from any host.
    #[command(
        after_help = "Examples:\n  drover drain --config /etc/drover/drover.toml --host gpu-node-7 --deadline 40m --reason 'memory swap' --wait\n  drover drain --config /etc/drover/drover.toml --unit drover-worker@inference-3 --deadline 30m --reason 'disk check'"
    )]
    Drain {
        #[command(flatten)]
        scope: ScopeArgs,
        /// How long running jobs may go on, e.g. 30m.
        #[arg(long, value_parser = parse_duration)]
        deadline: std::time::Duration,
        /// Why, for the timeline and the people who look at it.
        #[arg(long)]
        reason: String,
        /// Show progress until it is safe to power off (exit 0), or until the drain is late (exit 1).
        #[arg(long)]
        wait: bool,
        /// JSON: the answers as one document; with --wait, one JSON line per change.
        #[arg(long)]
        json: bool,
    },
    /// Workers quarantined because their jobs fail while the same class succeeds elsewhere.
    #[command(
        after_help = "Examples:\n  drover quarantine list --config /etc/drover/drover.toml\n  drover quarantine release --config /etc/drover/drover.toml inference-3 --reason 'permissions fixed'"
    )]
    Quarantine {
        #[command(subcommand)]
        command: QuarantineCommand,
    },
    /// Drain, change and undrain hosts in waves (one, then a few, then a share, then the rest),
    /// soaking each wave; halts, drains the wave again and alerts when it looks worse than the
    /// hosts not yet touched.
    #[command(
        after_help = "Examples:\n  drover rollout --config /etc/drover/drover.toml --hosts n1,n2,n3,n4 --reason 'kernel 6.1' -- ssh {} apt-get -y upgrade\n  drover rollout --config /etc/drover/drover.toml --hosts n1,n2,n3,n4 --reason 'restart' --dry-run"
    )]
    Rollout {
        /// The configuration file.
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
        /// Why, for the timeline.
        #[arg(long)]
        reason: String,
        /// Print the waves and what would be done to each; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// The change to make while a host is drained (run here, once per host, with DROVER_HOST
        /// set), e.g. an upgrade step; without it the units are simply restarted.
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// Take no new jobs in a unit, host or class; running jobs go on.
    #[command(
        after_help = "Examples:\n  drover cordon --config /etc/drover/drover.toml --host gpu-node-7 --reason 'flaky NIC'\n  drover cordon --config /etc/drover/drover.toml --class inference --reason 'model bucket migration' --json"
    )]
    Cordon {
        #[command(flatten)]
        scope: ScopeArgs,
        /// Why, for the timeline.
        #[arg(long)]
        reason: String,
        /// One JSON document with each host's answer.
        #[arg(long)]
        json: bool,
    },
    /// Lift the drains and cordons of a unit, host or class (also `uncordon`).
    #[command(alias = "uncordon")]
    #[command(
        after_help = "Examples:\n  drover undrain --config /etc/drover/drover.toml --host gpu-node-7 --reason 'memory swapped'\n  drover uncordon --config /etc/drover/drover.toml --unit inference-3 --reason 'disk replaced'"
    )]
    Undrain {
        #[command(flatten)]
        scope: ScopeArgs,
        /// Why, for the timeline.
        #[arg(long)]
        reason: String,
        /// One JSON document with each host's answer.
        #[arg(long)]
        json: bool,
    },
    /// What Drover did and why (drains, cordons, requeues, restarts, alerts), with who and when.
    #[command(
        after_help = "Examples:\n  drover timeline --config /etc/drover/drover.toml --since 6h\n  drover timeline --config /etc/drover/drover.toml --fleet --json"
    )]
    Timeline {
        /// The configuration file.
        #[arg(long, env = "DROVER_CONFIG", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// How far back, e.g. 24h (default: everything kept).
        #[arg(long, value_parser = parse_duration)]
        since: Option<std::time::Duration>,
        /// Every host's timeline merged into one (asked over the broker), each step once.
        #[arg(long)]
        fleet: bool,
        /// One JSON array instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Firing and recent alerts (latency drift, jobs running long, deadlines at risk, stalls,
    /// failing and misconfigured units).
    #[command(
        after_help = "Examples:\n  drover alerts --config /etc/drover/drover.toml\n  drover alerts --config /etc/drover/drover.toml --json"
    )]
    Alerts {
        /// The configuration file.
        #[arg(long, env = "DROVER_CONFIG", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// One JSON document instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Write the unit files for this binary and configuration, and reload the manager.
    #[command(
        after_help = "Examples:\n  drover install-units --system --config /etc/drover/drover.toml\n  drover install-units --user --config ~/.config/drover.toml --json"
    )]
    InstallUnits {
        /// For the system manager (/etc/systemd/system).
        #[arg(long, conflicts_with = "user", required_unless_present = "user")]
        system: bool,
        /// For the user manager (~/.config/systemd/user).
        #[arg(long)]
        user: bool,
        /// The configuration file the units will run with.
        #[arg(long, env = "DROVER_CONFIG", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Write here instead of the manager's directory (no reload).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// One JSON document: the files written and the timeouts chosen.
        #[arg(long)]
        json: bool,
    },
    /// Run one worker in the foreground (what drover-worker@.service runs).
    #[command(
        after_help = "Examples:\n  drover work --config /etc/drover/drover.toml --instance inference-3\n  drover work --config /etc/drover/drover.toml --class inference"
    )]
    Work {
        /// The configuration file.
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
    #[command(
        after_help = "Examples:\n  drover submit --config /etc/drover/drover.toml --class inference --payload '{\"image\": \"s3://b/1.png\"}' --deadline 24h\n  drover submit --config /etc/drover/drover.toml --class inference --payload-file job.json --tenant acme --count 10"
    )]
    Submit {
        /// The configuration file.
        #[arg(long, env = "DROVER_CONFIG", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// The job class (a `[classes.NAME]` of the configuration).
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
        /// The tenant, for per-tenant alerts and DROVER_TENANT.
        #[arg(long)]
        tenant: Option<String>,
        /// How many jobs with this payload to submit.
        #[arg(long, default_value_t = 1)]
        count: u64,
    },
    /// Validate a configuration: exit 0, or print every problem and exit 2.
    #[command(
        after_help = "Examples:\n  drover check-config /etc/drover/drover.toml\n  drover check-config /etc/drover/drover.toml --json"
    )]
    CheckConfig {
        /// The configuration file to check.
        #[arg(env = "DROVER_CONFIG", default_value = DEFAULT_CONFIG)]
        file: PathBuf,
        /// One JSON document: ok, warnings, and every problem with its key.
        #[arg(long)]
        json: bool,
    },
    /// Dead letters: list them, show one, requeue them (same id, attempts started over).
    #[command(
        after_help = "Examples:\n  drover dead list --config /etc/drover/drover.toml --class inference --reason poison\n  drover dead show --config /etc/drover/drover.toml 0b7c...\n  drover dead requeue --config /etc/drover/drover.toml --class inference --reason rejected --why 'handler v2 accepts them' --dry-run"
    )]
    Dead {
        #[command(subcommand)]
        command: DeadCommand,
    },
    /// Print a shell completion script (bash, zsh, fish, ...) to standard output.
    #[command(
        hide = true,
        after_help = "Examples:\n  drover completions bash > /usr/share/bash-completion/completions/drover\n  drover completions fish > ~/.config/fish/completions/drover.fish"
    )]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff) to standard output.
    #[command(hide = true, after_help = "Example:\n  drover man | gzip > /usr/share/man/man1/drover.1.gz")]
    Man,
    /// Latency drift detection tools.
    #[command(
        after_help = "Examples:\n  drover drift replay --input completions.csv --output scores.csv\n  drover drift rebaseline --config /etc/drover/drover.toml --class inference --reason 'model v2 is slower on purpose'"
    )]
    Drift {
        #[command(subcommand)]
        command: DriftCommand,
    },
}

#[derive(Subcommand)]
pub enum QuarantineCommand {
    /// The quarantined units of this host, with the evidence and when they are probed.
    #[command(
        after_help = "Examples:\n  drover quarantine list --config /etc/drover/drover.toml\n  drover quarantine list --config /etc/drover/drover.toml --json"
    )]
    List {
        /// The configuration file.
        #[arg(long, env = "DROVER_CONFIG", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// One JSON array instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Put a quarantined unit back in service now.
    #[command(
        after_help = "Examples:\n  drover quarantine release --config /etc/drover/drover.toml drover-worker@inference-3 --reason 'permissions fixed'\n  drover quarantine release --config /etc/drover/drover.toml inference-3 --json"
    )]
    Release {
        /// The unit as systemctl names it, with or without `.service`, or its instance
        /// (`drover-worker@inference-3`, `inference-3`).
        unit: String,
        /// The configuration file.
        #[arg(long, env = "DROVER_CONFIG", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Why, for the timeline.
        #[arg(long, default_value = "released by an operator")]
        reason: String,
        /// One JSON document with the supervisor's answer.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum DeadCommand {
    /// The dead letters of a class: id, reason, attempt, when, where, the handler's last words.
    #[command(
        after_help = "Examples:\n  drover dead list --config /etc/drover/drover.toml --class inference\n  drover dead list --config /etc/drover/drover.toml --class inference --reason max_attempts --json"
    )]
    List {
        /// The configuration file.
        #[arg(long, env = "DROVER_CONFIG", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// The job class whose dead letters to read.
        #[arg(long)]
        class: String,
        /// Only those dead-lettered for this reason: max_attempts, rejected, deadline_expired,
        /// undecodable, poison.
        #[arg(long)]
        reason: Option<String>,
        /// One JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Everything about one dead letter: its headers, the handler's last words, the payload.
    #[command(after_help = "Example:\n  drover dead show --config /etc/drover/drover.toml 0b7c2d9e-...")]
    Show {
        /// The job id (as `drover submit` printed it).
        id: String,
        /// The configuration file.
        #[arg(long, env = "DROVER_CONFIG", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Look only in this class (default: every configured class).
        #[arg(long)]
        class: Option<String>,
        /// One JSON document instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Put dead letters back on their class's work queue: the job keeps its id and payload, its
    /// attempts start over, a deadline already past is renewed, and the requeue is written to
    /// the timeline with who and why. Published with confirms before it leaves the dead letters:
    /// an interrupted requeue loses nothing, but a job it published and had not yet removed is
    /// in both places (`dead list` still shows it); requeued again, it runs twice.
    #[command(
        after_help = "Examples:\n  drover dead requeue --config /etc/drover/drover.toml --class inference --id 0b7c... --id 4f1a... --why 'bucket permissions fixed'\n  drover dead requeue --config /etc/drover/drover.toml --class inference --reason deadline_expired --dry-run\n  drover dead requeue --config /etc/drover/drover.toml --class inference --all --why 'after the outage'"
    )]
    #[command(group(clap::ArgGroup::new("which").required(true).args(["id", "reason", "all"])))]
    Requeue {
        /// The configuration file.
        #[arg(long, env = "DROVER_CONFIG", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// The job class whose dead letters to requeue.
        #[arg(long)]
        class: String,
        /// These jobs (repeat the flag for several).
        #[arg(long)]
        id: Vec<String>,
        /// Every dead letter of this reason (max_attempts, rejected, deadline_expired, undecodable, poison).
        #[arg(long)]
        reason: Option<String>,
        /// Every dead letter of the class.
        #[arg(long)]
        all: bool,
        /// Why, for the timeline and the job's headers.
        #[arg(long, default_value = "requeued by an operator")]
        why: String,
        /// The deadline, from now, of a job whose own deadline has passed (default: the class's).
        #[arg(long, value_parser = parse_duration)]
        deadline: Option<std::time::Duration>,
        /// Print what would be requeued; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// One JSON document: the ids requeued and the problems.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum DriftCommand {
    /// Start a new latency baseline for a class after a deploy that changed its run time on
    /// purpose: every supervisor forgets what it learnt (or only this host's, with --host-only),
    /// with no restart. The detectors are useful again from the 100th completion.
    #[command(
        after_help = "Examples:\n  drover drift rebaseline --config /etc/drover/drover.toml --class inference --reason 'model v2 is slower on purpose'\n  drover drift rebaseline --config /etc/drover/drover.toml --class inference --host-only --reason 'new GPU on this host'"
    )]
    Rebaseline {
        /// The configuration file.
        #[arg(long, env = "DROVER_CONFIG", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// The job class to relearn.
        #[arg(long)]
        class: String,
        /// Only this host's baseline of the class (after a change to this host alone).
        #[arg(long)]
        host_only: bool,
        /// Why, for the timeline.
        #[arg(long)]
        reason: String,
    },
    /// Run the production drift detector over a CSV of completions (`timestamp,value`) and write
    /// `timestamp,score,alert`.
    #[command(after_help = "Examples:\n  drover drift replay --input completions.csv --output scores.csv")]
    Replay {
        /// The completions: `timestamp,value` (seconds), one row per completed job.
        #[arg(long)]
        input: PathBuf,
        /// Where to write `timestamp,score,alert`.
        #[arg(long)]
        output: PathBuf,
    },
}

#[derive(clap::Args)]
#[group(required = true, multiple = false, id = "scope")]
pub struct ScopeFlags {
    /// A unit of this host, as systemctl names it (with or without `.service`) or by its
    /// instance: `drover-worker@inference-3`, `drover-worker@inference-3.service`, `inference-3`.
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
    /// The configuration file.
    #[arg(long, env = "DROVER_CONFIG", default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,
    #[command(flatten)]
    pub which: ScopeFlags,
}

impl ScopeArgs {
    pub fn scope(&self) -> Scope {
        match (&self.which.unit, &self.which.host, &self.which.class) {
            (Some(u), _, _) => Scope::Unit(unit_instance(u)),
            (_, Some(h), _) => Scope::Host(h.clone()),
            (_, _, Some(c)) => Scope::Class(c.clone()),
            _ => unreachable!("clap requires one of --unit, --host, --class"),
        }
    }
}

/// A unit named the way systemctl accepts it, as its instance: `drover-worker@inference-3`,
/// `drover-worker@inference-3.service` and `inference-3` are all `inference-3`.
pub fn unit_instance(u: &str) -> String {
    let u = u.trim();
    let u = u.strip_suffix(".service").unwrap_or(u);
    match u.rsplit_once('@') {
        Some((_, instance)) if !instance.is_empty() => instance.to_string(),
        _ => u.to_string(),
    }
}

pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    duration::parse(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn a_unit_in_any_form_systemctl_accepts() {
        for u in ["drover-worker@inference-3", "drover-worker@inference-3.service", "inference-3", " inference-3 "] {
            assert_eq!(unit_instance(u), "inference-3", "{u}");
        }
        assert_eq!(unit_instance("dw-1a2b@s-1.service"), "s-1");
    }

    /// Every command has examples and every flag says what it is for.
    #[test]
    fn every_help_has_examples_and_every_flag_a_text() {
        fn walk(c: &clap::Command, path: &str, missing: &mut Vec<String>) {
            let path = format!("{path} {}", c.get_name());
            let leaf = c.get_subcommands().next().is_none();
            let examples = c.get_after_help().map(|h| h.to_string()).unwrap_or_default();
            if leaf && !examples.contains("drover ") {
                missing.push(format!("{path}: no examples"));
            }
            for a in c.get_arguments() {
                let id = a.get_id().as_str();
                if id != "help" && id != "version" && a.get_help().is_none() {
                    missing.push(format!("{path} --{id}: no help"));
                }
            }
            for s in c.get_subcommands() {
                walk(s, &path, missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "", &mut missing);
        assert!(missing.is_empty(), "{missing:#?}");
        Cli::command().debug_assert();
    }
}
