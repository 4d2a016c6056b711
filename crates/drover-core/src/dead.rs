//! Dead letters read back and requeued (`drover dead`): what a dead letter says (its reason,
//! the handler's last words, where and when), which ones an operator's selection takes, and
//! the envelope a requeued job leaves with: the same id and payload, its attempts started
//! over, the failure history that would make it poison again forgotten, a deadline it can
//! still meet, and who requeued it and why. Pure: the time comes in.

use crate::job::{self, Envelope, EpochMs, HeaderValue};
use serde::Serialize;
use std::time::Duration;

/// Who requeued the job, when, why, and how many times it was requeued from the dead letters.
pub const H_REQUEUED_BY: &str = "x-drover-requeued-by";
pub const H_REQUEUED_AT: &str = "x-drover-requeued-at-ms";
pub const H_REQUEUE_WHY: &str = "x-drover-requeue-reason";
pub const H_REQUEUES: &str = "x-drover-requeues";

/// The reasons a worker dead-letters a job with (`outcome::DeadReason`).
pub const REASONS: &[&str] = &["max_attempts", "rejected", "deadline_expired", "undecodable", "poison"];

/// One dead letter as an operator sees it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DeadLetter {
    /// `None` for a message that came without an id (it cannot be requeued as a job).
    pub id: Option<String>,
    pub class: String,
    pub reason: String,
    pub detail: String,
    /// The attempt it died on.
    pub attempt: Option<i64>,
    pub dead_at: Option<String>,
    pub host: String,
    pub unit: String,
    pub tenant: Option<String>,
    pub failed_on: Vec<String>,
    pub requeues: i64,
    pub payload_bytes: usize,
}

impl DeadLetter {
    pub fn read(class: &str, env: &Envelope, payload_len: usize) -> DeadLetter {
        let h = &env.headers;
        let s = |k: &str| job::str_header(h, k).ok().flatten().unwrap_or_default();
        let i = |k: &str| job::int_header(h, k).ok().flatten();
        DeadLetter {
            id: env.message_id.clone().filter(|s| !s.is_empty()),
            class: class.to_string(),
            reason: Some(s(job::H_DEAD_REASON)).filter(|r| !r.is_empty()).unwrap_or_else(|| "unknown".into()),
            detail: s(job::H_DEAD_DETAIL),
            attempt: i(job::H_ATTEMPT),
            dead_at: i(job::H_DEAD_AT).map(job::rfc3339),
            host: s(job::H_DEAD_HOST),
            unit: s(job::H_DEAD_UNIT),
            tenant: Some(s(job::H_TENANT)).filter(|t| !t.is_empty()),
            failed_on: s(job::H_FAILED_ON).split(',').filter(|w| !w.is_empty()).map(str::to_string).collect(),
            requeues: i(H_REQUEUES).unwrap_or(0),
            payload_bytes: payload_len,
        }
    }
}

/// Which dead letters a requeue takes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selection {
    Ids(Vec<String>),
    Reason(String),
    All,
}

impl Selection {
    pub fn takes(&self, d: &DeadLetter) -> bool {
        match self {
            Selection::Ids(ids) => d.id.as_ref().is_some_and(|id| ids.contains(id)),
            Selection::Reason(r) => &d.reason == r,
            Selection::All => true,
        }
    }
}

/// The envelope of a dead letter requeued at `now`: attempt 1, no dead-letter or failure
/// headers, the requeue recorded; a deadline already past (or missing) becomes `now +
/// fresh_deadline`, since a job requeued with no time left would die again at once. Refused
/// for a message without an id.
pub fn requeued(
    env: &Envelope,
    now: EpochMs,
    fresh_deadline: Duration,
    who: &str,
    why: &str,
) -> Result<Envelope, String> {
    let id = env.message_id.clone().filter(|s| !s.is_empty()).ok_or("no message id: not a job Drover can track")?;
    let mut out = env.clone();
    out.message_id = Some(id);
    for k in [
        job::H_DEAD_REASON,
        job::H_DEAD_DETAIL,
        job::H_DEAD_AT,
        job::H_DEAD_HOST,
        job::H_DEAD_UNIT,
        job::H_FAILED_ON,
        job::H_FAILURES,
        job::H_HAND_BACKS,
        job::H_HANDED_BACK_AT,
    ] {
        out.headers.remove(k);
    }
    // Foreign headers the broker added on the way (x-death, x-first-death-*) go too: the
    // job starts over.
    out.headers
        .retain(|k, _| !k.starts_with("x-death") && !k.starts_with("x-first-death") && !k.starts_with("x-last-death"));
    let h = &env.headers;
    let deadline = job::int_header(h, job::H_DEADLINE).ok().flatten().filter(|d| *d > now);
    let deadline = deadline.unwrap_or(now + fresh_deadline.as_millis() as i64);
    let requeues = job::int_header(h, H_REQUEUES).ok().flatten().unwrap_or(0) + 1;
    let set = |out: &mut Envelope, k: &str, v: HeaderValue| {
        out.headers.insert(k.to_string(), v);
    };
    set(&mut out, job::H_ATTEMPT, HeaderValue::U32(1));
    set(&mut out, job::H_DEADLINE, HeaderValue::I64(deadline));
    if job::int_header(h, job::H_SUBMITTED).ok().flatten().is_none() {
        set(&mut out, job::H_SUBMITTED, HeaderValue::I64(env.timestamp_s.map(|s| s as i64 * 1000).unwrap_or(now)));
    }
    set(&mut out, H_REQUEUED_BY, HeaderValue::str(who));
    set(&mut out, H_REQUEUED_AT, HeaderValue::I64(now));
    set(&mut out, H_REQUEUE_WHY, HeaderValue::str(why));
    set(&mut out, H_REQUEUES, HeaderValue::I64(requeues));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn dead(reason: &str, deadline: i64) -> Envelope {
        let mut h: BTreeMap<String, HeaderValue> = BTreeMap::new();
        for (k, v) in [
            (job::H_ATTEMPT, HeaderValue::U32(5)),
            (job::H_SUBMITTED, HeaderValue::I64(1_000)),
            (job::H_DEADLINE, HeaderValue::I64(deadline)),
            (job::H_FAILED_ON, HeaderValue::str("a@h1,b@h2")),
            (job::H_FAILURES, HeaderValue::str("a@h1,b@h2")),
            (job::H_DEAD_REASON, HeaderValue::str(reason)),
            (job::H_DEAD_DETAIL, HeaderValue::str("exit 1")),
            (job::H_DEAD_AT, HeaderValue::I64(50_000)),
            (job::H_DEAD_HOST, HeaderValue::str("h2")),
            (job::H_DEAD_UNIT, HeaderValue::str("b")),
            (job::H_TENANT, HeaderValue::str("acme")),
            ("x-death", HeaderValue::Other("[...]".into())),
        ] {
            h.insert(k.to_string(), v);
        }
        Envelope { message_id: Some("j-1".into()), timestamp_s: Some(1), json: true, headers: h }
    }

    #[test]
    fn a_requeued_job_keeps_its_id_and_starts_over() {
        let day = Duration::from_secs(86_400);
        // (deadline in the envelope, now, expected deadline after the requeue)
        let cases = [(200_000, 100_000, 200_000), (90_000, 100_000, 100_000 + 86_400_000)];
        for (deadline, now, want) in cases {
            let out = requeued(&dead("max_attempts", deadline), now, day, "alice", "handler fixed").expect("requeued");
            let h = &out.headers;
            assert_eq!(out.message_id.as_deref(), Some("j-1"));
            assert_eq!(job::int_header(h, job::H_ATTEMPT), Ok(Some(1)));
            assert_eq!(job::int_header(h, job::H_DEADLINE), Ok(Some(want)), "deadline {deadline} at {now}");
            assert_eq!(job::int_header(h, job::H_SUBMITTED), Ok(Some(1_000)), "submission time kept");
            assert_eq!(job::str_header(h, job::H_TENANT), Ok(Some("acme".into())));
            for gone in [job::H_DEAD_REASON, job::H_FAILED_ON, job::H_FAILURES, job::H_DEAD_AT, "x-death"] {
                assert!(!h.contains_key(gone), "{gone} left");
            }
            assert_eq!(job::str_header(h, H_REQUEUED_BY), Ok(Some("alice".into())));
            assert_eq!(job::str_header(h, H_REQUEUE_WHY), Ok(Some("handler fixed".into())));
            assert_eq!(job::int_header(h, H_REQUEUES), Ok(Some(1)));
            // Decodes as a fresh job.
            let j = job::Job::decode(&out, b"{}", "c", day, now).expect("decodes");
            assert_eq!((j.attempt, j.failed_on.len(), j.failures.len()), (1, 0, 0));
        }
        let twice =
            requeued(&requeued(&dead("poison", 0), 1, Duration::ZERO, "a", "b").unwrap(), 2, Duration::ZERO, "a", "b");
        assert_eq!(job::int_header(&twice.unwrap().headers, H_REQUEUES), Ok(Some(2)));
        let mut no_id = dead("undecodable", 0);
        no_id.message_id = None;
        assert!(requeued(&no_id, 1, Duration::ZERO, "a", "b").is_err());
    }

    #[test]
    fn selections() {
        let d = DeadLetter::read("c", &dead("poison", 0), 2);
        assert_eq!((d.reason.as_str(), d.attempt, d.failed_on.len(), d.host.as_str()), ("poison", Some(5), 2, "h2"));
        assert!(Selection::All.takes(&d));
        assert!(Selection::Reason("poison".into()).takes(&d));
        assert!(!Selection::Reason("rejected".into()).takes(&d));
        assert!(Selection::Ids(vec!["x".into(), "j-1".into()]).takes(&d));
        assert!(!Selection::Ids(vec!["x".into()]).takes(&d));
        let mut no_id = dead("undecodable", 0);
        no_id.message_id = None;
        let u = DeadLetter::read("c", &no_id, 0);
        assert_eq!(u.id, None);
        assert!(!Selection::Ids(vec![String::new()]).takes(&u));
    }
}
