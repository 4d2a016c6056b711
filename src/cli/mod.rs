//! Commands that act on the fleet from outside a supervisor: submitting jobs, and drains,
//! cordons and rollouts sent to the supervisors over the broker.

pub mod drainctl;
pub mod submit;
