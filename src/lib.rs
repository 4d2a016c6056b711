//! Drover: a self-healing supervisor for a fleet of job workers. Jobs arrive on RabbitMQ,
//! workers run as templated systemd units, and Drover keeps every job moving.
//!
//! # Module map (read this first)
//!
//! Pure decisions (no I/O, no clock, no randomness of their own; tested by tables):
//! - [`duration`]: `90s` / `1h30m` durations, parsed and printed.
//! - [`backoff`]: full-jitter exponential backoff (retries, reconnects) and equal jitter (restarts).
//! - [`outcome`]: what happens to a job after an attempt ([`outcome::decide`]), and the ladder
//!   of broker-held retry delays ([`outcome::delay_rung`]).
//! - [`config`]: the TOML configuration, validated into typed values with every problem listed.
//! - [`job`]: a job's envelope on the wire (headers, properties), encoded and decoded.
//! - [`events`]: the versioned JSON job events and their routing keys.
//! - [`reconcile`]: which worker units to start, stop or restart, and their health.
//! - [`maintenance`]: drains, cordons, quarantines and pauses: which unit to cordon, which job
//!   to requeue, which unit takes the one probe job and what its outcome decides, when a host
//!   is safe to power off.
//! - [`rollout`]: waves of hosts, and whether a touched wave looks worse than the rest.
//! - [`quarantine`]: bad workers versus bad jobs: per worker and host attribution, the binomial
//!   test against the rest of the fleet, shared outages, attempts whose worker died.
//! - [`suspects`]: bad hosts and workers caught from the ages of their running jobs (censored
//!   run times against the rest of the fleet), slow hosts, cordon / quarantine / lift, the
//!   budget of how much of a class is out at once, shadow mode.
//! - [`verdicts`]: the supervisors' verdicts as workers need them: which failures were a
//!   quarantined worker's or a shared outage's fault (fair charging), which workers a job
//!   killed (poison).
//! - [`drift`]: the latency drift detector (robust sequential test on log durations).
//! - [`latency`]: job events to alert conditions: drift, jobs running long, deadlines at risk,
//!   stalls.
//! - [`alerts`]: the alert state machine (dedupe, hold-down).
//!
//! Adapters (I/O only, translating to and from the pure types):
//! - [`amqp`]: the broker: names, topology, a [`amqp::Link`] that reconnects with jittered
//!   backoff, confirmed publishes, deadlines on every operation.
//! - [`systemd`]: the systemd manager over D-Bus (zbus_systemd), states as strings.
//! - [`handler`]: the user's handler processes (exec and persistent mode), process groups,
//!   timeouts and kills.
//! - [`preflight`]: the checks a worker runs before its first job.
//! - [`notify`]: sd_notify (READY, STATUS, WATCHDOG).
//! - [`control`]: the supervisor's Unix socket and its JSON protocol.
//! - [`fleet`]: the same protocol across hosts, over the broker's control exchange.
//! - [`webhook`]: alert delivery to an Alertmanager-compatible webhook.
//! - [`metrics`]: every metric name and the Prometheus recorder.
//! - [`units`]: the unit files, filled in for a binary and a configuration.
//!
//! Entry points (join decisions and adapters):
//! - [`work::run`]: `drover work`, one worker.
//! - [`submit::submit`]: `drover submit`.
//! - [`supervise::run`]: `drover supervise`, the per-host supervisor; [`orders`] holds its
//!   maintenance orders, timeline and request handling.
//! - [`drainctl`]: `drover drain / cordon / undrain / rollout`.
//!
//! The binary (`src/main.rs`) only parses arguments, sets up logging, loads the configuration
//! and calls one of the entry points. ARCHITECTURE.md says where each thing lives and which
//! rules the modules keep.

pub mod alerts;
pub mod amqp;
pub mod backoff;
pub mod config;
pub mod control;
pub mod drainctl;
pub mod drift;
pub mod duration;
pub mod events;
pub mod fleet;
pub mod handler;
pub mod job;
pub mod latency;
pub mod maintenance;
pub mod metrics;
pub mod notify;
pub mod orders;
pub mod outcome;
pub mod preflight;
pub mod quarantine;
pub mod reconcile;
pub mod rollout;
pub mod submit;
pub mod supervise;
pub mod suspects;
pub mod systemd;
pub mod units;
pub mod verdicts;
pub mod webhook;
pub mod work;
