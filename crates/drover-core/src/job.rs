//! A job as it travels on the broker: body = the payload, untouched; the message's properties
//! and `x-drover-*` headers = the envelope (id, attempt, submitted-at, deadline, tenant, where
//! it failed). This module is the one writer and reader of those headers, over plain data
//! ([`Envelope`]); the broker adapter (`io::wire`) only copies an [`Envelope`] onto AMQP
//! properties and back.
//!
//! Decoding never panics and never guesses an id: a message without one cannot be tracked,
//! retried or dead-lettered meaningfully, so it is refused and dead-lettered as undecodable.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub const H_ATTEMPT: &str = "x-drover-attempt";
pub const H_SUBMITTED: &str = "x-drover-submitted-at-ms";
pub const H_DEADLINE: &str = "x-drover-deadline-ms";
pub const H_TENANT: &str = "x-drover-tenant";
pub const H_CLASS: &str = "x-drover-class";
/// The distinct workers (`unit@host`) a job failed on, comma-separated: poison detection.
pub const H_FAILED_ON: &str = "x-drover-failed-on";
/// The worker of each failed attempt, oldest first, comma-separated: fair charging.
pub const H_FAILURES: &str = "x-drover-failures";
/// How often a retry was handed back by hosts it had failed on, and when first: steering.
pub const H_HAND_BACKS: &str = "x-drover-hand-backs";
pub const H_HANDED_BACK_AT: &str = "x-drover-handed-back-at-ms";
/// The last checkpoint the job's handler saved, as compact JSON text: the next attempt resumes
/// from it (docs/wire-format.md).
pub const H_CHECKPOINT: &str = "x-drover-checkpoint";
/// The largest checkpoint carried, in bytes of compact JSON: a header, not a store (a path into
/// the handler's own storage is the usual checkpoint).
pub const MAX_CHECKPOINT_BYTES: usize = 65_536;
pub const H_DEAD_REASON: &str = "x-drover-dead-reason";
pub const H_DEAD_DETAIL: &str = "x-drover-dead-detail";
pub const H_DEAD_AT: &str = "x-drover-dead-at-ms";
pub const H_DEAD_HOST: &str = "x-drover-dead-host";
pub const H_DEAD_UNIT: &str = "x-drover-dead-unit";

/// Milliseconds since the Unix epoch: the one time representation on the wire. The clock that
/// produces them is read outside the core (`io::clock::now_ms`).
pub type EpochMs = i64;

/// A wall-clock time as milliseconds since the epoch (a conversion, not a clock read).
pub fn to_ms(t: SystemTime) -> EpochMs {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC, milliseconds), as `humantime::format_rfc3339_millis` writes
/// it, without going through `core::fmt`: a job's events and STATUS line take several per job.
/// Times before 1970 are written as the epoch, years past 9999 as 9999's last millisecond.
pub fn rfc3339(ms: EpochMs) -> String {
    const MAX: EpochMs = 253_402_300_799_999; // 9999-12-31T23:59:59.999Z
    let ms = ms.clamp(0, MAX);
    let (days, in_day) = (ms / 86_400_000, ms % 86_400_000);
    // Civil date from days since the epoch (H. Hinnant's algorithm, for the proleptic
    // Gregorian calendar).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (h, m, s, milli) = (in_day / 3_600_000, in_day / 60_000 % 60, in_day / 1000 % 60, in_day % 1000);
    let mut out = [0u8; 24];
    let mut put = |at: usize, v: i64, width: usize| {
        let mut v = v;
        for i in (0..width).rev() {
            out[at + i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, year, 4);
    put(5, month, 2);
    put(8, day, 2);
    put(11, h, 2);
    put(14, m, 2);
    put(17, s, 2);
    put(20, milli, 3);
    for (at, c) in [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':'), (19, b'.'), (23, b'Z')] {
        out[at] = c;
    }
    String::from_utf8(out.to_vec()).unwrap_or_default()
}

pub fn parse_rfc3339_ms(s: &str) -> Option<EpochMs> {
    humantime::parse_rfc3339_weak(s).ok().map(to_ms)
}

/// A header's value as the envelope needs it. The integer widths are the ones on the wire
/// (`x-drover-attempt` is an unsigned 32-bit integer, times are signed 64-bit).
#[derive(Clone, Debug, PartialEq)]
pub enum HeaderValue {
    U32(u32),
    I64(i64),
    Str(String),
    /// Any other AMQP value, as the adapter printed it: only ever reported, never read.
    Other(String),
}

impl HeaderValue {
    pub fn str(s: &str) -> HeaderValue {
        HeaderValue::Str(s.to_string())
    }
}

/// A message's envelope as plain data: the part of the AMQP properties Drover reads and writes.
/// Messages are always published persistent; that is the adapter's business.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Envelope {
    pub message_id: Option<String>,
    /// AMQP's `timestamp` property, in seconds.
    pub timestamp_s: Option<u64>,
    /// `content_type = application/json`.
    pub json: bool,
    pub headers: BTreeMap<String, HeaderValue>,
}

/// Headers to add to (or replace in) a message's envelope.
pub type Headers = Vec<(&'static str, HeaderValue)>;

#[derive(Clone, Debug, PartialEq)]
pub struct Job {
    pub id: String,
    pub class: String,
    /// The number of the attempt this delivery is for, from 1.
    pub attempt: u32,
    pub submitted_at: EpochMs,
    pub deadline: EpochMs,
    pub tenant: Option<String>,
    pub payload: Vec<u8>,
    /// Distinct workers (`unit@host`) this job failed on before.
    pub failed_on: Vec<String>,
    /// The worker of each failed attempt before this one, oldest first.
    pub failures: Vec<String>,
    /// Times this attempt was handed back by a host it had failed on, and when first
    /// (`outcome::hand_back`).
    pub hand_backs: u32,
    pub handed_back_at: Option<EpochMs>,
    /// The last checkpoint saved by its handler (compact JSON), carried to the next attempt.
    pub checkpoint: Option<String>,
}

impl Job {
    pub fn time_left(&self, now: EpochMs) -> Duration {
        Duration::from_millis((self.deadline - now).max(0) as u64)
    }

    /// The envelope of a new job: its id, the submission time, and its headers.
    pub fn envelope(&self) -> Envelope {
        let mut headers: BTreeMap<String, HeaderValue> =
            self.headers(self.attempt).into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        headers.insert(H_CLASS.into(), HeaderValue::str(&self.class));
        if let Some(t) = &self.tenant {
            headers.insert(H_TENANT.into(), HeaderValue::str(t));
        }
        Envelope {
            message_id: Some(self.id.clone()),
            timestamp_s: Some((self.submitted_at / 1000).max(0) as u64),
            json: serde_json::from_slice::<serde::de::IgnoredAny>(&self.payload).is_ok(),
            headers,
        }
    }

    /// The headers that carry this job to its attempt number `attempt`: the one place that
    /// writes the attempt, the times, and where the job failed before.
    pub fn headers(&self, attempt: u32) -> Headers {
        let mut h = vec![
            (H_ATTEMPT, HeaderValue::U32(attempt)),
            (H_SUBMITTED, HeaderValue::I64(self.submitted_at)),
            (H_DEADLINE, HeaderValue::I64(self.deadline)),
        ];
        if !self.failed_on.is_empty() {
            h.push((H_FAILED_ON, HeaderValue::Str(self.failed_on.join(","))));
        }
        if !self.failures.is_empty() {
            h.push((H_FAILURES, HeaderValue::Str(self.failures.join(","))));
        }
        if let Some(c) = &self.checkpoint {
            h.push((H_CHECKPOINT, HeaderValue::Str(c.clone())));
        }
        if attempt != self.attempt && self.hand_backs > 0 {
            // A new attempt is steered afresh.
            h.push((H_HAND_BACKS, HeaderValue::U32(0)));
        }
        h
    }

    /// The headers of this attempt handed back once more at `now`: the same attempt, one more
    /// hand-back, the time of the first kept.
    pub fn hand_back_headers(&self, now: EpochMs) -> Headers {
        let mut h = self.headers(self.attempt);
        h.push((H_HAND_BACKS, HeaderValue::U32(self.hand_backs.saturating_add(1))));
        h.push((H_HANDED_BACK_AT, HeaderValue::I64(self.handed_back_at.unwrap_or(now))));
        h
    }

    /// Reads a delivered message. `default_deadline` applies when the message carries none
    /// (published by another tool); it counts from the submission time.
    pub fn decode(
        env: &Envelope,
        body: &[u8],
        class: &str,
        default_deadline: Duration,
        now: EpochMs,
    ) -> Result<Job, String> {
        let id = env.message_id.clone().filter(|s| !s.is_empty()).ok_or("no message_id: a job needs an id")?;
        let h = &env.headers;
        let attempt = match int_header(h, H_ATTEMPT)? {
            None => 1,
            Some(a) if (1..=i64::from(u32::MAX)).contains(&a) => a as u32,
            Some(a) => return Err(format!("{H_ATTEMPT} = {a}: not a positive attempt number")),
        };
        let submitted_at = match int_header(h, H_SUBMITTED)? {
            Some(ms) => ms,
            None => env.timestamp_s.map(|s| s as i64 * 1000).unwrap_or(now),
        };
        let deadline = int_header(h, H_DEADLINE)?.unwrap_or(submitted_at + default_deadline.as_millis() as i64);
        let tenant = str_header(h, H_TENANT)?.filter(|t| !t.is_empty());
        let list = |key: &str| -> Result<Vec<String>, String> {
            Ok(str_header(h, key)?
                .map(|s| s.split(',').filter(|w| !w.is_empty()).map(str::to_string).collect())
                .unwrap_or_default())
        };
        let failed_on = list(H_FAILED_ON)?;
        let failures = list(H_FAILURES)?;
        let hand_backs = int_header(h, H_HAND_BACKS)?.map(|n| n.clamp(0, i64::from(u32::MAX)) as u32).unwrap_or(0);
        let handed_back_at = if hand_backs > 0 { int_header(h, H_HANDED_BACK_AT)? } else { None };
        // A checkpoint that is not JSON (written by another tool) is dropped, not fatal: the
        // job runs from the start.
        let checkpoint = str_header(h, H_CHECKPOINT)?
            .filter(|c| c.len() <= MAX_CHECKPOINT_BYTES && serde_json::from_str::<serde::de::IgnoredAny>(c).is_ok());
        Ok(Job {
            id,
            class: class.to_string(),
            attempt,
            submitted_at,
            deadline,
            tenant,
            payload: body.to_vec(),
            failed_on,
            failures,
            hand_backs,
            handed_back_at,
            checkpoint,
        })
    }
}

/// A handler's checkpoint as it is carried: compact JSON, at most [`MAX_CHECKPOINT_BYTES`].
pub fn checkpoint_text(value: &serde_json::Value) -> Result<String, String> {
    let text = value.to_string();
    if text.len() > MAX_CHECKPOINT_BYTES {
        return Err(format!(
            "a checkpoint of {} bytes is refused (at most {MAX_CHECKPOINT_BYTES}): checkpoint a path to your own storage",
            text.len()
        ));
    }
    Ok(text)
}

/// The headers a dead letter carries: why, the handler's last words, when, and where.
pub fn dead_headers(reason: &str, detail: &str, at: EpochMs, host: &str, unit: &str) -> Headers {
    vec![
        (H_DEAD_REASON, HeaderValue::str(reason)),
        (H_DEAD_DETAIL, HeaderValue::Str(crate::events::tail(detail, 4096))),
        (H_DEAD_AT, HeaderValue::I64(at)),
        (H_DEAD_HOST, HeaderValue::str(host)),
        (H_DEAD_UNIT, HeaderValue::str(unit)),
    ]
}

pub fn int_header(h: &BTreeMap<String, HeaderValue>, key: &str) -> Result<Option<i64>, String> {
    match h.get(key) {
        None => Ok(None),
        Some(HeaderValue::U32(n)) => Ok(Some(i64::from(*n))),
        Some(HeaderValue::I64(n)) => Ok(Some(*n)),
        Some(HeaderValue::Str(s)) => Err(format!("header {key} is the string {s:?}, not an integer")),
        Some(HeaderValue::Other(v)) => Err(format!("header {key} is {v}, not an integer")),
    }
}

pub fn str_header(h: &BTreeMap<String, HeaderValue>, key: &str) -> Result<Option<String>, String> {
    match h.get(key) {
        None => Ok(None),
        Some(HeaderValue::Str(s)) => Ok(Some(s.clone())),
        Some(other) => Err(format!("header {key} is {other:?}, not a string")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_written_as_humantime_writes_them() {
        let humantime =
            |ms: i64| humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms as u64)).to_string();
        let mut cases = vec![0, 1, 999, 86_399_999, 951_782_400_000, 1_709_208_000_123, 4_107_542_399_999];
        // Every day of 1999 to 2101 (leap years, the centuries), at a varying time of day.
        let mut t = 915_148_800_000_i64;
        while t < 4_133_980_800_000 {
            cases.push(t + (t / 86_400_000 % 1000) * 86_399);
            t += 86_400_000;
        }
        for ms in cases {
            assert_eq!(rfc3339(ms), humantime(ms), "{ms}");
            assert_eq!(parse_rfc3339_ms(&rfc3339(ms)), Some(ms));
        }
        assert_eq!(rfc3339(-5), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(i64::MAX), "9999-12-31T23:59:59.999Z");
    }

    fn job() -> Job {
        Job {
            id: "j-1".into(),
            class: "inference".into(),
            attempt: 2,
            submitted_at: 1_700_000_000_000,
            deadline: 1_700_086_400_000,
            tenant: Some("acme".into()),
            payload: br#"{"x": 1}"#.to_vec(),
            failed_on: vec![],
            failures: vec![],
            hand_backs: 0,
            handed_back_at: None,
            checkpoint: None,
        }
    }

    fn with_id(headers: &[(&str, HeaderValue)]) -> Envelope {
        Envelope {
            message_id: Some("m".into()),
            headers: headers.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
            ..Envelope::default()
        }
    }

    #[test]
    fn envelope_round_trips() {
        let mut j = job();
        let e = j.envelope();
        assert!(e.json);
        assert_eq!(Job::decode(&e, &j.payload, "inference", Duration::from_secs(1), 0).expect("decodes"), j);
        j.failed_on = vec!["w-1@a".into(), "w-2@b".into()];
        j.failures = vec!["w-1@a".into(), "w-2@b".into(), "w-1@a".into()];
        j.checkpoint = Some(r#"{"step":12,"path":"/data/ck/12"}"#.into());
        let back = Job::decode(&j.envelope(), &j.payload, "inference", Duration::from_secs(1), 0).expect("decodes");
        assert_eq!(back, j);
    }

    #[test]
    fn a_retry_carries_the_next_attempt_and_the_same_times() {
        let j = job();
        let h: BTreeMap<String, HeaderValue> =
            j.headers(j.attempt + 1).into_iter().map(|(k, v)| (k.into(), v)).collect();
        assert_eq!(int_header(&h, H_ATTEMPT), Ok(Some(3)));
        assert_eq!(int_header(&h, H_DEADLINE), Ok(Some(j.deadline)));
    }

    #[test]
    fn a_hand_back_keeps_the_attempt_and_the_first_time() {
        let j = job();
        let env = |h: Headers| Envelope {
            message_id: Some(j.id.clone()),
            headers: h.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
            ..Envelope::default()
        };
        let once = Job::decode(&env(j.hand_back_headers(5_000)), b"", "c", Duration::ZERO, 0).expect("decodes");
        assert_eq!((once.attempt, once.hand_backs, once.handed_back_at), (2, 1, Some(5_000)));
        let twice = Job::decode(&env(once.hand_back_headers(9_000)), b"", "c", Duration::ZERO, 0).expect("decodes");
        assert_eq!((twice.attempt, twice.hand_backs, twice.handed_back_at), (2, 2, Some(5_000)));
        // The next attempt starts with no hand-backs (the first time's header is then ignored).
        let mut h = twice.hand_back_headers(9_000);
        h.extend(twice.headers(3));
        let next = Job::decode(&env(h), b"", "c", Duration::ZERO, 0).expect("decodes");
        assert_eq!((next.attempt, next.hand_backs, next.handed_back_at), (3, 0, None));
    }

    #[test]
    fn foreign_messages_get_defaults_from_the_class() {
        let e = Envelope { message_id: Some("m".into()), timestamp_s: Some(1_000), ..Envelope::default() };
        let j = Job::decode(&e, b"raw", "c", Duration::from_secs(60), 5).expect("decodes");
        assert_eq!((j.attempt, j.submitted_at, j.deadline, j.tenant), (1, 1_000_000, 1_060_000, None));
    }

    #[test]
    fn undecodable_messages_say_why() {
        assert!(Job::decode(&Envelope::default(), b"", "c", Duration::ZERO, 0).unwrap_err().contains("message_id"));
        let bad = with_id(&[(H_ATTEMPT, HeaderValue::str("two"))]);
        assert!(Job::decode(&bad, b"", "c", Duration::ZERO, 0).unwrap_err().contains(H_ATTEMPT));
        let zero = with_id(&[(H_ATTEMPT, HeaderValue::I64(0))]);
        assert!(Job::decode(&zero, b"", "c", Duration::ZERO, 0).is_err());
    }

    #[test]
    fn checkpoints_are_bounded_and_bad_ones_dropped() {
        let big = serde_json::Value::String("x".repeat(MAX_CHECKPOINT_BYTES));
        assert!(checkpoint_text(&big).unwrap_err().contains("refused"));
        assert_eq!(checkpoint_text(&serde_json::json!({"step": 3})), Ok(r#"{"step":3}"#.to_string()));
        let not_json = with_id(&[(H_CHECKPOINT, HeaderValue::str("step 3"))]);
        assert_eq!(Job::decode(&not_json, b"", "c", Duration::ZERO, 0).expect("decodes").checkpoint, None);
        let mut j = job();
        j.checkpoint = Some("7".into());
        let h: BTreeMap<String, HeaderValue> = j.headers(3).into_iter().map(|(k, v)| (k.into(), v)).collect();
        assert_eq!(str_header(&h, H_CHECKPOINT), Ok(Some("7".into())), "a retry resumes too");
    }

    #[test]
    fn time_left_never_goes_negative() {
        let j = job();
        assert_eq!(j.time_left(j.deadline + 5), Duration::ZERO);
        assert_eq!(j.time_left(j.deadline - 1500), Duration::from_millis(1500));
    }
}
