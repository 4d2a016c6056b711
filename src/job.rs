//! A job as it travels on the broker: body = the payload, untouched; AMQP properties and
//! `x-drover-*` headers = the envelope (id, attempt, submitted-at, deadline, tenant).
//!
//! Decoding never panics and never guesses an id: a message without one cannot be tracked,
//! retried or dead-lettered meaningfully, so it is refused and dead-lettered as undecodable.

use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::BasicProperties;
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
pub const H_DEAD_REASON: &str = "x-drover-dead-reason";
pub const H_DEAD_DETAIL: &str = "x-drover-dead-detail";
pub const H_DEAD_AT: &str = "x-drover-dead-at-ms";
pub const H_DEAD_HOST: &str = "x-drover-dead-host";
pub const H_DEAD_UNIT: &str = "x-drover-dead-unit";

/// Milliseconds since the Unix epoch: the one time representation on the wire.
pub type EpochMs = i64;

pub fn now_ms() -> EpochMs {
    to_ms(SystemTime::now())
}

pub fn to_ms(t: SystemTime) -> EpochMs {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

pub fn rfc3339(ms: EpochMs) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

pub fn parse_rfc3339_ms(s: &str) -> Option<EpochMs> {
    humantime::parse_rfc3339_weak(s).ok().map(to_ms)
}

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
}

impl Job {
    pub fn time_left(&self, now: EpochMs) -> Duration {
        Duration::from_millis((self.deadline - now).max(0) as u64)
    }

    /// The AMQP properties of this job: persistent, with its envelope in headers.
    pub fn properties(&self) -> BasicProperties {
        let mut h = FieldTable::default();
        h.insert(H_ATTEMPT.into(), AMQPValue::LongUInt(self.attempt));
        h.insert(H_SUBMITTED.into(), AMQPValue::LongLongInt(self.submitted_at));
        h.insert(H_DEADLINE.into(), AMQPValue::LongLongInt(self.deadline));
        h.insert(H_CLASS.into(), AMQPValue::LongString(self.class.as_str().into()));
        if let Some(t) = &self.tenant {
            h.insert(H_TENANT.into(), AMQPValue::LongString(t.as_str().into()));
        }
        let mut p = BasicProperties::default()
            .with_message_id(ShortString::from(self.id.as_str()))
            .with_delivery_mode(2)
            .with_timestamp((self.submitted_at / 1000).max(0) as u64)
            .with_headers(h);
        if serde_json::from_slice::<serde::de::IgnoredAny>(&self.payload).is_ok() {
            p = p.with_content_type("application/json".into());
        }
        p
    }

    /// Reads a delivered message. `default_deadline` applies when the message carries none
    /// (published by another tool); it counts from the submission time.
    pub fn decode(
        props: &BasicProperties,
        body: &[u8],
        class: &str,
        default_deadline: Duration,
        now: EpochMs,
    ) -> Result<Job, String> {
        let id = props
            .message_id()
            .as_ref()
            .map(|s| s.as_str().to_string())
            .filter(|s| !s.is_empty())
            .ok_or("no message_id: a job needs an id")?;
        let empty = FieldTable::default();
        let h = props.headers().as_ref().unwrap_or(&empty);
        let attempt = match int_header(h, H_ATTEMPT)? {
            None => 1,
            Some(a) if (1..=i64::from(u32::MAX)).contains(&a) => a as u32,
            Some(a) => return Err(format!("{H_ATTEMPT} = {a}: not a positive attempt number")),
        };
        let submitted_at = match int_header(h, H_SUBMITTED)? {
            Some(ms) => ms,
            None => props.timestamp().map(|s| s as i64 * 1000).unwrap_or(now),
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
        })
    }
}

fn int_header(h: &FieldTable, key: &str) -> Result<Option<i64>, String> {
    let v = match h.inner().get(key) {
        None => return Ok(None),
        Some(v) => v,
    };
    let n = match v {
        AMQPValue::ShortShortInt(n) => i64::from(*n),
        AMQPValue::ShortShortUInt(n) => i64::from(*n),
        AMQPValue::ShortInt(n) => i64::from(*n),
        AMQPValue::ShortUInt(n) => i64::from(*n),
        AMQPValue::LongInt(n) => i64::from(*n),
        AMQPValue::LongUInt(n) => i64::from(*n),
        AMQPValue::LongLongInt(n) => *n,
        AMQPValue::Timestamp(n) => *n as i64,
        other => return Err(format!("header {key} is {other:?}, not an integer")),
    };
    Ok(Some(n))
}

fn str_header(h: &FieldTable, key: &str) -> Result<Option<String>, String> {
    match h.inner().get(key) {
        None => Ok(None),
        Some(AMQPValue::LongString(s)) => Ok(Some(String::from_utf8_lossy(s.as_bytes()).into_owned())),
        Some(AMQPValue::ShortString(s)) => Ok(Some(s.as_str().to_string())),
        Some(other) => Err(format!("header {key} is {other:?}, not a string")),
    }
}

/// Reads a string header for display (dead-letter inspection, tests).
pub fn header_string(props: &BasicProperties, key: &str) -> Option<String> {
    props.headers().as_ref().and_then(|h| str_header(h, key).ok().flatten())
}

/// Reads an integer header for display (dead-letter inspection, tests).
pub fn header_int(props: &BasicProperties, key: &str) -> Option<i64> {
    props.headers().as_ref().and_then(|h| int_header(h, key).ok().flatten())
}

/// Copies the properties of a message and adds or replaces headers.
pub fn with_headers(props: &BasicProperties, extra: Vec<(&str, AMQPValue)>) -> BasicProperties {
    let mut h = props.headers().clone().unwrap_or_default();
    for (k, v) in extra {
        h.insert(k.into(), v);
    }
    props.clone().with_headers(h).with_delivery_mode(2)
}

pub fn long_string(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

#[cfg(test)]
mod tests {
    use super::*;

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
        }
    }

    #[test]
    fn envelope_round_trips() {
        let j = job();
        let p = j.properties();
        assert_eq!(p.delivery_mode(), &Some(2));
        assert_eq!(p.content_type().as_ref().map(|s| s.as_str()), Some("application/json"));
        let back = Job::decode(&p, &j.payload, "inference", Duration::from_secs(1), 0).expect("decodes");
        assert_eq!(back, j);
    }

    #[test]
    fn foreign_messages_get_defaults_from_the_class() {
        let p = BasicProperties::default().with_message_id("m".into()).with_timestamp(1_000);
        let j = Job::decode(&p, b"raw", "c", Duration::from_secs(60), 5).expect("decodes");
        assert_eq!((j.attempt, j.submitted_at, j.deadline, j.tenant), (1, 1_000_000, 1_060_000, None));
    }

    #[test]
    fn undecodable_messages_say_why() {
        let no_id = BasicProperties::default();
        assert!(Job::decode(&no_id, b"", "c", Duration::ZERO, 0).unwrap_err().contains("message_id"));
        let mut h = FieldTable::default();
        h.insert(H_ATTEMPT.into(), long_string("two"));
        let bad = BasicProperties::default().with_message_id("m".into()).with_headers(h);
        assert!(Job::decode(&bad, b"", "c", Duration::ZERO, 0).unwrap_err().contains(H_ATTEMPT));
        let mut h = FieldTable::default();
        h.insert(H_ATTEMPT.into(), AMQPValue::LongInt(0));
        let zero = BasicProperties::default().with_message_id("m".into()).with_headers(h);
        assert!(Job::decode(&zero, b"", "c", Duration::ZERO, 0).is_err());
    }

    #[test]
    fn time_left_never_goes_negative() {
        let j = job();
        assert_eq!(j.time_left(j.deadline + 5), Duration::ZERO);
        assert_eq!(j.time_left(j.deadline - 1500), Duration::from_millis(1500));
    }
}
