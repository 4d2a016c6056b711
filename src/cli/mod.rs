//! The commands of the `drover` binary. [`run`] hands each command to one small function in
//! [`commands`]; exit codes are chosen here, once: 0 success, 1 the operation ran but did not
//! succeed, 2 bad usage or bad configuration.
//!
//! Also the commands that act on the fleet from outside a supervisor: [`submit`] (publishing
//! jobs), [`drainctl`] (drains, cordons and rollouts sent to the supervisors over the broker)
//! [`dead`] (dead letters listed, shown and requeued) and [`fleet_status`] (`status --fleet`).

pub mod args;
pub mod commands;
pub mod dead;
pub mod drainctl;
pub mod fleet_status;
pub mod submit;

use crate::config::Config;
use crate::io::{config_file, control};
use args::{Command, DriftCommand, QuarantineCommand};
use std::path::Path;
use std::time::Duration;

/// Why a command did not succeed, which decides its exit code.
#[derive(Debug)]
pub enum Failure {
    /// The operation ran and did not succeed (the supervisor is unreachable, a job could not be
    /// published): exit 1.
    Failed(anyhow::Error),
    /// Bad usage or a bad configuration: exit 2.
    Usage(anyhow::Error),
}

impl Failure {
    pub fn exit_code(&self) -> u8 {
        match self {
            Failure::Failed(_) => 1,
            Failure::Usage(_) => 2,
        }
    }

    pub fn error(&self) -> &anyhow::Error {
        match self {
            Failure::Failed(e) | Failure::Usage(e) => e,
        }
    }
}

/// What a command returns: its exit code when it ran to the end.
pub type Outcome = Result<u8, Failure>;

/// Runs one command.
pub fn run(command: Command) -> Outcome {
    use commands as c;
    match command {
        Command::CheckConfig { file, json } => c::check_config(&file, json),
        Command::Completions { shell } => c::completions(shell),
        Command::Man => c::man(),
        Command::Drift { command: DriftCommand::Replay { input, output } } => c::drift_replay(&input, &output),
        Command::Drift { command: DriftCommand::Rebaseline { config, class, host_only, reason } } => {
            c::drift_rebaseline(&config, class, host_only, reason)
        }
        Command::Dead { command } => c::dead(command),
        Command::Supervise { config } => c::supervise(&config),
        Command::Status { config, json, fleet, expect, wait } => {
            if fleet {
                c::fleet_status(&config, &expect, wait, json)
            } else {
                c::status(&config, json)
            }
        }
        Command::Alerts { config, json } => c::alerts(&config, json),
        Command::Timeline { config, since, fleet, json } => c::timeline(&config, since, fleet, json),
        Command::Drain { scope, deadline, reason, wait, json } => {
            c::maintain(&scope, drainctl::Op::Drain, Some(deadline), reason, wait, json)
        }
        Command::Cordon { scope, reason, json } => c::maintain(&scope, drainctl::Op::Cordon, None, reason, false, json),
        Command::Undrain { scope, reason, json } => {
            c::maintain(&scope, drainctl::Op::Undrain, None, reason, false, json)
        }
        Command::Quarantine { command: QuarantineCommand::List { config, json } } => c::quarantine_list(&config, json),
        Command::Quarantine { command: QuarantineCommand::Release { unit, config, reason, json } } => {
            c::quarantine_release(&config, unit, reason, json)
        }
        Command::Rollout { config, hosts, waves, soak, deadline, reason, dry_run, command } => {
            let r = drainctl::Rollout {
                config: config.clone(),
                hosts,
                waves: Vec::new(),
                waves_arg: waves.clone(),
                command,
                soak,
                deadline,
                reason,
            };
            c::rollout(&config, r, &waves, dry_run)
        }
        Command::InstallUnits { system, user: _, config, dir, json } => c::install_units(&config, system, dir, json),
        Command::Work { config, class, instance } => c::work(&config, class, instance),
        Command::Submit { config, class, payload, payload_file, deadline, tenant, count } => {
            c::submit(&config, class, payload, payload_file, deadline, tenant, count)
        }
    }
}

/// Loads and validates the configuration, with the operator's broker login: a bad one is a
/// usage error.
fn load(path: &Path) -> Result<Config, Failure> {
    load_as(path, crate::config::Role::Operator)
}

fn load_as(path: &Path, role: crate::config::Role) -> Result<Config, Failure> {
    config_file::load_as(path, role).map_err(|e| Failure::Usage(e.into()))
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    // One thread: a worker runs one job at a time, and the handler's PR_SET_PDEATHSIG is tied
    // to the thread that spawned it, which must live as long as the worker.
    tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| Failure::Failed(e.into()))
}

/// Runs a future to completion on a fresh runtime; its error means the operation failed.
fn block_on<T>(f: impl std::future::Future<Output = anyhow::Result<T>>) -> Result<T, Failure> {
    runtime()?.block_on(f).map_err(Failure::Failed)
}

/// Asks this host's supervisor over its control socket (10 s deadline).
fn ask(cfg: &Config, req: &control::Request) -> Result<control::Response, Failure> {
    block_on(control::request(&cfg.supervisor.socket, req, Duration::from_secs(10)))
}

fn print_json(value: &impl serde::Serialize) -> Outcome {
    println!("{}", serde_json::to_string_pretty(value).map_err(|e| Failure::Failed(e.into()))?);
    Ok(0)
}

/// A process exit status (a worker's, a supervisor's) as an exit code.
fn exit_code(code: i32) -> u8 {
    code.clamp(0, 255) as u8
}
