//! The wall clock: the one place outside tests that reads it for the decisions. The core takes
//! the time as an argument.

use crate::job::{to_ms, EpochMs};
use std::time::SystemTime;

/// Now, as milliseconds since the Unix epoch.
pub fn now_ms() -> EpochMs {
    to_ms(SystemTime::now())
}
