pub mod amqp;
pub mod backoff;
pub mod config;
pub mod duration;
pub mod events;
pub mod handler;
pub mod job;
pub mod outcome;
