//! The timeline of what Drover did and why, as plain data: entries, one fleet's timelines
//! merged into one, and which failures are worth an entry of their own.

use crate::events::{EventKind, JobEvent};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One step: when, on which host, who did it (`drover` or an operator), what, why, and what
/// it applied to.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TimelineEntry {
    pub at: String,
    pub at_ms: i64,
    pub host: String,
    pub who: String,
    pub what: String,
    pub why: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub scope: String,
}

/// Two entries this close together that say the same thing are one step said twice (a step
/// recorded by every supervisor, or repeated by one within a pass).
pub const SAME_STEP_MS: i64 = 5_000;

/// Every host's timeline merged into one, in time order, each step once: an entry that says
/// what an earlier one said (same what, scope and why) within [`SAME_STEP_MS`] is dropped. A
/// unit's step belongs to its host (every host has a `...@c-1.service`); a step about a class
/// or the fleet, which every supervisor records, is said once whichever host recorded it.
pub fn merge(per_host: Vec<Vec<TimelineEntry>>) -> Vec<TimelineEntry> {
    let mut all: Vec<TimelineEntry> = per_host.into_iter().flatten().collect();
    all.sort_by(|a, b| a.at_ms.cmp(&b.at_ms).then_with(|| a.host.cmp(&b.host)));
    let mut last_said: BTreeMap<(String, String, String, String), i64> = BTreeMap::new();
    all.retain(|e| {
        let host = if e.scope.ends_with(".service") { e.host.clone() } else { String::new() };
        let key = (host, e.what.clone(), e.scope.clone(), e.why.clone());
        let repeated = last_said.get(&key).is_some_and(|&at| e.at_ms - at <= SAME_STEP_MS);
        last_said.insert(key, e.at_ms);
        !repeated
    });
    all
}

/// Notices the first failures of a class on this host after a quiet spell: the moment a host
/// turns bad, for the retrospective (the failures themselves are in the job events).
#[derive(Debug, Default)]
pub struct FirstFailures {
    /// Class -> when its last failure on this host was seen.
    last: BTreeMap<String, i64>,
}

/// A failure after this long without one starts a new entry.
pub const QUIET_MS: i64 = 15 * 60_000;

impl FirstFailures {
    /// The timeline's words for `e` when it is a failure of this host's after a quiet spell.
    pub fn note(&mut self, e: &JobEvent, now: i64) -> Option<String> {
        let how = match (e.event, e.outcome.as_deref()) {
            (EventKind::Failed, Some(how @ ("failed" | "timeout"))) => how,
            _ => return None,
        };
        let quiet = self.last.get(&e.class).is_none_or(|&at| now - at > QUIET_MS);
        self.last.insert(e.class.clone(), now);
        quiet.then(|| {
            let job = e.job_id.as_deref().unwrap_or("?");
            let what = if how == "timeout" { "timed out" } else { "failed" };
            format!(
                "first {how} of class {} here in {} min: job {job} {what} on {}",
                e.class,
                QUIET_MS / 60_000,
                e.unit
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(at_ms: i64, host: &str, what: &str, scope: &str) -> TimelineEntry {
        TimelineEntry {
            at: String::new(),
            at_ms,
            host: host.into(),
            who: "drover".into(),
            what: what.into(),
            why: "why".into(),
            scope: scope.into(),
        }
    }

    #[test]
    fn merged_timelines_are_in_order_and_say_each_step_once() {
        let a = vec![
            entry(0, "a", "class c paused", "class c"),
            entry(20_000, "a", "stop drained unit", "w@c-1.service"),
            entry(20_080, "a", "stop drained unit", "w@c-1.service"), // said twice in one pass
        ];
        let b = vec![
            entry(1_000, "b", "class c paused", "class c"), // the same step, said by another host
            entry(20_050, "b", "stop drained unit", "w@c-1.service"), // b's own unit of that name
            entry(30_000, "b", "stop drained unit", "w@c-2.service"),
            entry(40_000, "b", "class c paused", "class c"), // later: a new step
        ];
        let got: Vec<(i64, String)> = merge(vec![a, b]).into_iter().map(|e| (e.at_ms, e.host)).collect();
        let want = [(0, "a"), (20_000, "a"), (20_050, "b"), (30_000, "b"), (40_000, "b")];
        assert_eq!(got, want.map(|(t, h)| (t, h.to_string())));
    }

    #[test]
    fn only_the_first_failures_after_a_quiet_spell_are_noted() {
        let ev = |kind, outcome: &str| {
            let mut e = JobEvent::new(kind, String::new(), "c", "h", "u1");
            e.outcome = Some(outcome.into());
            e.job_id = Some("j".into());
            e
        };
        let mut f = FirstFailures::default();
        // (event, now, noted)
        let cases = [
            (ev(EventKind::Succeeded, "succeeded"), 0, false),
            (ev(EventKind::Failed, "timeout"), 1_000, true),
            (ev(EventKind::Failed, "failed"), 2_000, false),
            (ev(EventKind::Failed, "transient"), 3_000, false),
            (ev(EventKind::Failed, "timeout"), 2_000 + QUIET_MS + 1, true),
        ];
        for (e, now, noted) in cases {
            assert_eq!(f.note(&e, now).is_some(), noted, "{:?} at {now}", e.outcome);
        }
    }
}
