//! Drover's core: every decision, as plain functions and small state machines over plain data.
//!
//! This crate does not talk to the outside world, so it cannot fail in the ways the world does.
//! Its `Cargo.toml` has no tokio, lapin, zbus, libc or HTTP dependency, and nothing here reads a
//! clock, the environment, the host name or a random source: the time (epoch or monotonic
//! milliseconds), random numbers in `[0, 1)` and what the machine says come in as arguments. So
//! every module is tested by tables and replayed in simulations (`benches/`).
//!
//! # Module map
//! - [`duration`]: `90s` / `1h30m` durations, parsed and printed.
//! - [`backoff`]: full-jitter exponential backoff (retries, reconnects) and equal jitter (restarts).
//! - [`outcome`]: what happens to a job after an attempt ([`outcome::decide`]), and the ladder
//!   of broker-held retry delays ([`outcome::delay_rung`]).
//! - [`config`]: the TOML configuration, validated into typed values with every problem listed;
//!   machine-dependent defaults come in as a [`config::Environment`].
//! - [`job`]: a job's envelope (headers, id, times) as plain data, encoded and decoded: the one
//!   writer and reader of the `x-drover-*` headers.
//! - [`dead`]: dead letters read back, selected and requeued with their attempts started over.
//! - [`events`]: the versioned JSON job events and their routing keys.
//! - [`exits`]: a unit's exit status in words; systemd's own (226: the sandbox could not be set
//!   up) with what to set.
//! - [`reconcile`]: which worker units to start, stop or restart, and their health.
//! - [`maintenance`]: drains, cordons, quarantines and pauses: which unit to cordon, which job
//!   to requeue, which unit takes the one probe job and what its outcome decides, when a host
//!   is safe to power off.
//! - [`rollout`]: waves of hosts, and whether a touched wave looks worse than the rest.
//! - [`quarantine`]: bad workers versus bad jobs: per worker and host attribution, the binomial
//!   test against the rest of the fleet, shared outages, attempts whose worker died.
//! - [`judge`]: this host's judge: the quarantines, pauses and probes the fleet's outcomes call
//!   for on this host's units, their alerts (an [`judge::AlertKind`]) and the verdicts to publish.
//! - [`suspects`]: bad hosts and workers caught from the ages of their running jobs (censored
//!   run times against the rest of the fleet), slow hosts, the quarantine budget, shadow mode.
//! - [`verdicts`]: the supervisors' verdicts as workers need them: which failures were a
//!   quarantined worker's or a shared outage's fault (fair charging), which workers a job
//!   killed (poison).
//! - [`drift`]: the latency drift detector (robust sequential test on log durations).
//! - [`latency`]: job events to alert conditions: drift, jobs running long, deadlines at risk,
//!   stalls.
//! - [`fleet_judge`]: the fleet's one judge (elected by the broker): every job event and each
//!   host's report in; judgments per host, the fleet's verdicts and alerts out, once per fleet;
//!   its snapshot for the next judge.
//! - [`timeline`]: the timeline's entries, every host's merged into one, first failures noted.
//! - [`page`]: the supervisor's page: operators' tokens, its actions validated, a job's age
//!   against its class's usual run time, the run-time histogram, runbook links, the timeline's filter.
//! - [`alerts`]: the alert state machine (dedupe, hold-down), and where alerts are posted.
//! - [`topology`]: the broker's side: queue arguments (classic or quorum), delivery limits,
//!   broker policies that contradict the configuration, what can be said of the broker's consumer
//!   timeout, which cluster node to connect to next, and when a delay rung holds a retry past its
//!   due time.

pub mod alerts;
pub mod backoff;
pub mod config;
pub mod dead;
pub mod drift;
pub mod duration;
pub mod events;
pub mod exits;
pub mod fleet_judge;
pub mod job;
pub mod judge;
pub mod latency;
pub mod maintenance;
pub mod outcome;
pub mod page;
pub mod progress;
pub mod quarantine;
pub mod reconcile;
pub mod rollout;
pub mod suspects;
pub mod timeline;
pub mod topology;
pub mod verdicts;
