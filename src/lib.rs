//! Drover: a self-healing supervisor for a fleet of job workers. Jobs arrive on RabbitMQ,
//! workers run as templated systemd units, and Drover keeps every job moving.
//!
//! # Module map (read this first)
//!
//! The decisions live in the `drover-core` crate (`crates/drover-core`), re-exported here under
//! their own names: [`duration`], [`backoff`], [`outcome`], [`config`], [`job`], [`events`],
//! [`exits`], [`reconcile`], [`maintenance`], [`rollout`], [`quarantine`], [`suspects`], [`judge`], [`fleet_judge`],
//! [`verdicts`], [`drift`], [`latency`], [`alerts`], [`timeline`], [`topology`], [`progress`], [`dead`], [`page`]. That crate
//! depends on no async runtime, broker, bus or HTTP crate and reads no clock, environment or random source, so the
//! compiler keeps them pure.
//!
//! This crate holds what talks to the world and what joins the two:
//! - [`io`]: adapters, I/O only, translating to and from the core's types:
//!   - [`io::amqp`]: the broker: names, topology, a [`io::amqp::Link`] that reconnects with
//!     jittered backoff, rotating through a cluster's nodes, confirmed publishes, deadlines on
//!     every operation, the delay rungs it published into looked at for overdue retries;
//!   - [`io::policies`]: the broker's policies read at start-up (management API) and checked;
//!   - [`io::wire`]: a job's envelope on AMQP properties;
//!   - [`io::systemd`]: the systemd manager over D-Bus (zbus_systemd), states as strings;
//!   - [`io::handler`]: the user's handler processes (exec and persistent mode), process groups,
//!     timeouts and kills, heartbeats, progress and checkpoints (docs/wire-format.md); its
//!     private `spawn` starts exec-mode handlers without fork (its unsafe code and the
//!     invariants it keeps are written at its top);
//!   - [`io::preflight`]: the checks a worker runs before its first job;
//!   - [`io::notify`]: sd_notify (READY, STATUS, WATCHDOG);
//!   - [`io::control`]: the supervisor's Unix socket and its JSON protocol;
//!   - [`io::fleet`]: the same protocol across hosts, over the broker's control exchange;
//!   - [`io::judge`]: the fleet's judge on the broker: its election (a single-active-consumer
//!     queue), its state queue, hosts' reports, its judgments and news;
//!   - [`io::alertmanager`]: alert delivery to Alertmanager's API (`/api/v2/alerts`), the
//!     labels that make an alert's identity;
//!   - [`io::webhook`]: alert delivery to an Alertmanager-compatible webhook (a second sink);
//!   - [`io::http`]: the HTTP client of both (TLS, CA file, basic or bearer auth, deadlines);
//!   - [`io::http_server`]: the supervisor's HTTP server, `/metrics`, `/alerts`, `/runbooks/` and the page;
//!   - [`io::runbooks`]: the runbook pages of Drover's own alerts, built into the binary;
//!   - [`io::web`]: the page's routes: embedded HTML/CSS/JS, its view by server-sent events,
//!     the timeline filtered, actions behind an operator's token;
//!   - [`io::metrics`]: every metric name and the Prometheus recorder;
//!   - [`io::units`]: the unit files, filled in for a binary and a configuration;
//!   - [`io::config_file`]: the configuration file and the machine's defaults;
//!   - [`io::logging`]: standard error shaped for where it goes (journal priorities, no colour
//!     or timestamp there);
//!   - [`io::clock`], [`io::random`]: the wall clock and the random source, read here only.
//! - [`tasks`]: a process's tasks, each spawned tracked, cancelled by one token, awaited on
//!   shutdown.
//! - [`worker`]: `drover work`, one worker ([`worker::run`]): the loop in `worker/mod.rs`;
//!   [`worker::signals`], the signals it obeys as one closed enum; `controls`, what they set;
//!   `delivery`, one delivery to its recorded decision; `attempt`, one run of the handler under
//!   its deadlines; `execute`, the one executor of decisions (deliveries and leases alike);
//!   `lease`, leases for long jobs.
//! - [`supervisor`]: `drover supervise`, the per-host supervisor ([`supervisor::run`]): units
//!   and reconcile passes in `supervisor/mod.rs`; `watch`, this host's job events, the seat of
//!   the fleet's judge when the broker gives it to this supervisor, the judge's decisions
//!   applied and the alerts delivered; [`supervisor::orders`], its
//!   maintenance orders, timeline and request handling; [`supervisor::page`], the fleet's view
//!   gathered for the page (every host over the control exchange) and the page's actions sent.
//! - [`cli`]: the commands: flags in [`cli::args`], [`cli::run`] hands each to one small
//!   function and picks the exit code once ([`cli::Failure`]); [`cli::submit`] (`drover submit`)
//!   [`cli::drainctl`] (`drover drain / cordon / undrain / rollout`), [`cli::dead`] (`drover dead`)
//!   and [`cli::fleet_status`] (`drover status --fleet`) act from outside.
//!
//! The binary (`src/main.rs`) only parses arguments, sets up logging and calls [`cli::run`].
//! ARCHITECTURE.md says where each thing lives and which
//! rules the modules keep.

pub use drover_core::{
    alerts, backoff, config, dead, drift, duration, events, exits, fleet_judge, job, judge, latency, maintenance,
    outcome, page, progress, quarantine, reconcile, rollout, suspects, timeline, topology, verdicts,
};

pub mod cli;
pub mod io;
pub mod supervisor;
pub mod tasks;
pub mod worker;
