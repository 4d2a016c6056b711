//! A job's envelope on AMQP: copies a [`job::Envelope`] onto lapin's `BasicProperties` and
//! back. What the headers mean is decided in the core (`job`); this only translates.

use crate::job::{self, Envelope, HeaderValue};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::BasicProperties;

/// The properties of a new message: persistent, with its envelope.
pub fn properties(env: &Envelope) -> BasicProperties {
    let mut h = FieldTable::default();
    for (k, v) in &env.headers {
        if let Some(v) = amqp_value(v) {
            h.insert(k.as_str().into(), v);
        }
    }
    let mut p = BasicProperties::default().with_delivery_mode(2).with_headers(h);
    if let Some(id) = &env.message_id {
        p = p.with_message_id(ShortString::from(id.as_str()));
    }
    if let Some(ts) = env.timestamp_s {
        p = p.with_timestamp(ts);
    }
    if env.json {
        p = p.with_content_type("application/json".into());
    }
    p
}

/// The envelope of a delivered message.
pub fn envelope(props: &BasicProperties) -> Envelope {
    let headers = props
        .headers()
        .as_ref()
        .map(|h| h.inner().iter().map(|(k, v)| (k.as_str().to_string(), header_value(v))).collect())
        .unwrap_or_default();
    Envelope {
        message_id: props.message_id().as_ref().map(|s| s.as_str().to_string()),
        timestamp_s: *props.timestamp(),
        json: props.content_type().as_ref().is_some_and(|c| c.as_str() == "application/json"),
        headers,
    }
}

/// Copies the properties of a message, adds or replaces headers, and makes it persistent.
pub fn with_headers(props: &BasicProperties, extra: job::Headers) -> BasicProperties {
    let mut h = props.headers().clone().unwrap_or_default();
    for (k, v) in extra {
        if let Some(v) = amqp_value(&v) {
            h.insert(k.into(), v);
        }
    }
    props.clone().with_headers(h).with_delivery_mode(2)
}

/// Reads a string header for display (dead-letter inspection, tests).
pub fn header_string(props: &BasicProperties, key: &str) -> Option<String> {
    job::str_header(&envelope(props).headers, key).ok().flatten()
}

/// Reads an integer header for display (dead-letter inspection, tests).
pub fn header_int(props: &BasicProperties, key: &str) -> Option<i64> {
    job::int_header(&envelope(props).headers, key).ok().flatten()
}

fn amqp_value(v: &HeaderValue) -> Option<AMQPValue> {
    match v {
        HeaderValue::U32(n) => Some(AMQPValue::LongUInt(*n)),
        HeaderValue::I64(n) => Some(AMQPValue::LongLongInt(*n)),
        HeaderValue::Str(s) => Some(AMQPValue::LongString(LongString::from(s.as_str()))),
        // Foreign values are kept by `with_headers` (it copies the original table), never rewritten.
        HeaderValue::Other(_) => None,
    }
}

fn header_value(v: &AMQPValue) -> HeaderValue {
    match v {
        AMQPValue::ShortShortInt(n) => HeaderValue::I64(i64::from(*n)),
        AMQPValue::ShortShortUInt(n) => HeaderValue::I64(i64::from(*n)),
        AMQPValue::ShortInt(n) => HeaderValue::I64(i64::from(*n)),
        AMQPValue::ShortUInt(n) => HeaderValue::I64(i64::from(*n)),
        AMQPValue::LongInt(n) => HeaderValue::I64(i64::from(*n)),
        AMQPValue::LongUInt(n) => HeaderValue::U32(*n),
        AMQPValue::LongLongInt(n) => HeaderValue::I64(*n),
        AMQPValue::Timestamp(n) => HeaderValue::I64(*n as i64),
        AMQPValue::LongString(s) => HeaderValue::Str(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => HeaderValue::Str(s.as_str().to_string()),
        other => HeaderValue::Other(format!("{other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::{Job, H_ATTEMPT};
    use std::time::Duration;

    #[test]
    fn a_job_survives_the_trip_through_amqp_properties() {
        let j = Job {
            id: "j-1".into(),
            class: "inference".into(),
            attempt: 2,
            submitted_at: 1_700_000_000_000,
            deadline: 1_700_086_400_000,
            tenant: Some("acme".into()),
            payload: br#"{"x": 1}"#.to_vec(),
            failed_on: vec!["w-1@a".into()],
            failures: vec!["w-1@a".into()],
            hand_backs: 0,
            handed_back_at: None,
            checkpoint: None,
        };
        let p = properties(&j.envelope());
        assert_eq!(p.delivery_mode(), &Some(2));
        assert_eq!(p.content_type().as_ref().map(|s| s.as_str()), Some("application/json"));
        let back = Job::decode(&envelope(&p), &j.payload, "inference", Duration::from_secs(1), 0).expect("decodes");
        assert_eq!(back, j);
        assert_eq!(header_int(&with_headers(&p, j.headers(3)), H_ATTEMPT), Some(3));
    }

    #[test]
    fn foreign_header_values_are_reported_not_guessed() {
        let mut h = FieldTable::default();
        h.insert(H_ATTEMPT.into(), AMQPValue::Boolean(true));
        let p = BasicProperties::default().with_message_id("m".into()).with_headers(h);
        let err = Job::decode(&envelope(&p), b"", "c", Duration::ZERO, 0).unwrap_err();
        assert!(err.contains(H_ATTEMPT) && err.contains("Boolean"), "{err}");
    }
}
