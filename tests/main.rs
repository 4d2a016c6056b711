//! Drover's integration tests: real `drover work` processes against a real RabbitMQ.
//! `scripts/services.sh up` starts what they need; `scripts/test.sh` runs them.

mod harness;

mod alertmanager;
mod alerts;
mod bad_input;
mod broker_outage;
mod cli;
mod cluster;
mod dead;
mod deploy;
mod drain;
mod drains;
mod failures;
mod flow;
mod incident;
mod judge;
pub mod lease;
mod lifecycle;
mod python;
pub mod quarantine;
pub mod supervisor;
mod web;
