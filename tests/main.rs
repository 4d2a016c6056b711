//! Drover's integration tests: real `drover work` processes against a real RabbitMQ.
//! `scripts/services.sh up` starts what they need; `scripts/test.sh` runs them.

mod harness;

mod alerts;
mod bad_input;
mod broker_outage;
mod deploy;
mod drain;
mod drains;
mod failures;
mod flow;
mod incident;
mod lease;
mod lifecycle;
pub mod quarantine;
pub mod supervisor;
