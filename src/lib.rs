//! Drover: a self-healing supervisor for a fleet of job workers. Jobs arrive on RabbitMQ,
//! workers run as templated systemd units, and Drover keeps every job moving.
//!
//! # Module map (read this first)
//!
//! Pure decisions (no I/O, no clock, no randomness of their own; tested by tables):
//! - [`duration`]: `90s` / `1h30m` durations, parsed and printed.
//! - [`backoff`]: full-jitter exponential backoff, the one way anything is tried again.
//! - [`outcome`]: what happens to a job after an attempt ([`outcome::decide`]), and the ladder
//!   of broker-held retry delays ([`outcome::delay_rung`]).
//! - [`config`]: the TOML configuration, validated into typed values with every problem listed.
//! - [`job`]: a job's envelope on the wire (headers, properties), encoded and decoded.
//! - [`events`]: the versioned JSON job events and their routing keys.
//!
//! Adapters (I/O only, translating to and from the pure types):
//! - [`amqp`]: the broker: names, topology, a [`amqp::Link`] that reconnects with jittered
//!   backoff, confirmed publishes, deadlines on every operation.
//! - [`handler`]: the user's handler processes (exec and persistent mode), process groups,
//!   timeouts and kills.
//! - [`preflight`]: the checks a worker runs before its first job.
//! - [`notify`]: sd_notify (READY, STATUS, WATCHDOG).
//!
//! Entry points (join decisions and adapters):
//! - [`work::run`]: `drover work`, one worker.
//! - [`submit::submit`]: `drover submit`.
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
pub mod reconcile;
pub mod rollout;
pub mod submit;
pub mod supervise;
pub mod systemd;
pub mod units;
pub mod webhook;
pub mod work;
