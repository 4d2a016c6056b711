//! Adapters: I/O only, translating to and from the core's plain types. None of them decides
//! what to do with a job or a unit.

pub mod alertmanager;
pub mod amqp;
pub mod clock;
pub mod config_file;
pub mod control;
pub mod fleet;
pub mod handler;
pub mod http;
pub mod http_server;
pub mod judge;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod policies;
pub mod preflight;
pub mod random;
pub mod runbooks;
pub mod systemd;
pub mod units;
pub mod web;
pub mod webhook;
pub mod wire;
