//! Job events: every transition of a job, as versioned JSON on the `<prefix>.events` topic
//! exchange. Drift detection, quarantine and the timeline are built on these, so the shape is
//! an interface: fields are only ever added, and `v` changes when one changes meaning.
//!
//! Routing key: `<event>.<class>.<host>` (dots in names become `_`), so a consumer can bind
//! `dead_lettered.#`, `*.inference.#` or `#`.
//!
//! One message carries one event (a JSON object), except the starts of first deliveries and the
//! successes, which a worker sends together (a JSON array of events of one routing key,
//! [`Delivery::Batched`]): [`parse`] reads both. How each event travels, and why, is
//! [`JobEvent::delivery`].

use serde::{Deserialize, Serialize};

pub const VERSION: u32 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Started,
    /// A running attempt's progress, as its handler reported it (`progress`, `note`): when it
    /// first reports, then at most every few seconds. Not a transition: the attempt goes on.
    Progress,
    Succeeded,
    Failed,
    RetryScheduled,
    DeadLettered,
    Requeued,
    /// The handler succeeded, but the acknowledgement (or, for a leased job, the lease's
    /// release) could not be handed to the broker: the job will run again. Not a completion:
    /// the run that the broker records as done says `succeeded`. Consumers that count
    /// completions count job ids, since an acknowledgement the broker lost *after* it was sent
    /// cannot be seen by the worker.
    AckLost,
    /// A worker's preflight failed: it takes no job (not tied to a job).
    Misconfigured,
    /// `drover submit` published `count` jobs of a class for a tenant (one event per batch).
    Submitted,
}

/// How an event travels to the broker (docs/wire-format.md, "Job events").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Held a few milliseconds and sent with the other events of its routing key in one
    /// message, transient: the bulk of the traffic (a start and a success per job). A loss
    /// with a broker restart costs a metrics sample and a drift observation; a start lost with
    /// a worker that died within those milliseconds costs the fleet one sighting of a vanished
    /// attempt (the redelivery's start is sent at once).
    Batched,
    /// Sent at once, alone, transient: the start of a redelivered job (the one that may have
    /// killed its last worker: its start must be out before it can kill this one, as the fleet
    /// learns that an attempt vanished from a start without an end), and progress, which is
    /// superseded by the next report.
    Transient,
    /// Sent at once, alone, persistent, after whatever was held: failures, retries, dead letters,
    /// requeues, lost acknowledgements, misconfigured workers and submissions are the evidence
    /// quarantines, poison verdicts, backlogs and alerts are built on.
    Durable,
}

impl EventKind {
    /// Whether this event ends an attempt (whatever then happens to the job).
    pub fn ends_attempt(self) -> bool {
        matches!(
            self,
            EventKind::Succeeded
                | EventKind::Failed
                | EventKind::RetryScheduled
                | EventKind::DeadLettered
                | EventKind::Requeued
                | EventKind::AckLost
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Started => "started",
            EventKind::Progress => "progress",
            EventKind::Succeeded => "succeeded",
            EventKind::Failed => "failed",
            EventKind::RetryScheduled => "retry_scheduled",
            EventKind::DeadLettered => "dead_lettered",
            EventKind::Requeued => "requeued",
            EventKind::AckLost => "ack_lost",
            EventKind::Misconfigured => "misconfigured",
            EventKind::Submitted => "submitted",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobEvent {
    pub v: u32,
    pub event: EventKind,
    /// When the event happened (RFC 3339).
    pub at: String,
    pub class: String,
    pub host: String,
    pub unit: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submitted_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<String>,
    /// Run time of the attempt, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_s: Option<f64>,
    /// Time from submission to start, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_wait_s: Option<f64>,
    /// How the attempt ended (`succeeded`, `transient`, `rejected`, `failed`, `timeout`, `interrupted`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// Dead-letter reason, requeue cause, or the failing check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Handler message, check output: bounded in size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_delay_s: Option<f64>,
    /// Jobs in a `submitted` batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// True when the broker had delivered this job before (crash, lost channel, requeue).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redelivered: Option<bool>,
    /// `progress` events: the fraction done, from 0 to 1, and the handler's note.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl JobEvent {
    pub fn new(event: EventKind, at: String, class: &str, host: &str, unit: &str) -> Self {
        JobEvent {
            v: VERSION,
            event,
            at,
            class: class.into(),
            host: host.into(),
            unit: unit.into(),
            job_id: None,
            tenant: None,
            attempt: None,
            submitted_at: None,
            started_at: None,
            finished_at: None,
            deadline: None,
            duration_s: None,
            queue_wait_s: None,
            outcome: None,
            reason: None,
            detail: None,
            retry_delay_s: None,
            redelivered: None,
            count: None,
            progress: None,
            note: None,
        }
    }

    /// How this event travels; see [`Delivery`].
    pub fn delivery(&self) -> Delivery {
        match self.event {
            EventKind::Succeeded => Delivery::Batched,
            EventKind::Started if self.redelivered != Some(true) => Delivery::Batched,
            EventKind::Started | EventKind::Progress => Delivery::Transient,
            EventKind::Failed
            | EventKind::RetryScheduled
            | EventKind::DeadLettered
            | EventKind::Requeued
            | EventKind::AckLost
            | EventKind::Misconfigured
            | EventKind::Submitted => Delivery::Durable,
        }
    }

    pub fn routing_key(&self) -> String {
        let clean = |s: &str| s.replace('.', "_");
        format!("{}.{}.{}", self.event.as_str(), clean(&self.class), clean(&self.host))
    }
}

/// The events of one message: a JSON object (one event) or an array of them (a batch).
pub fn parse(body: &[u8]) -> Result<Vec<JobEvent>, serde_json::Error> {
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'[') => serde_json::from_slice(body),
        _ => serde_json::from_slice(body).map(|e| vec![e]),
    }
}

/// Cuts text to at most `max` bytes on a character boundary, keeping the end, where the
/// error usually is.
pub fn tail(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &text[start..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_versioned_json_with_stable_names() {
        let mut e = JobEvent::new(EventKind::RetryScheduled, "t".into(), "infer.v2", "gpu.7", "infer-1");
        e.attempt = Some(2);
        let json = serde_json::to_value(&e).expect("serialises");
        assert_eq!(json["v"], 1);
        assert_eq!(json["event"], "retry_scheduled");
        assert!(json.get("job_id").is_none(), "absent fields are omitted");
        assert_eq!(e.routing_key(), "retry_scheduled.infer_v2.gpu_7");
        let back: JobEvent = serde_json::from_value(json).expect("parses");
        assert_eq!(back, e);
    }

    #[test]
    fn messages_carry_one_event_or_a_batch() {
        let one = JobEvent::new(EventKind::Succeeded, "t".into(), "c", "h", "u");
        let mut two = one.clone();
        two.job_id = Some("j2".into());
        let single = serde_json::to_vec(&one).expect("json");
        assert_eq!(parse(&single).expect("object"), vec![one.clone()]);
        let batch = serde_json::to_vec(&vec![one.clone(), two.clone()]).expect("json");
        assert_eq!(parse(&batch).expect("array"), vec![one, two]);
        assert!(parse(b"{\"v\": 1}").is_err() && parse(b"[1]").is_err() && parse(b"").is_err());
    }

    #[test]
    fn starts_and_successes_wait_and_only_evidence_is_durable() {
        let table = [
            (EventKind::Started, None, Delivery::Batched),
            (EventKind::Started, Some(false), Delivery::Batched),
            (EventKind::Started, Some(true), Delivery::Transient),
            (EventKind::Progress, None, Delivery::Transient),
            (EventKind::Succeeded, None, Delivery::Batched),
            (EventKind::Failed, None, Delivery::Durable),
            (EventKind::RetryScheduled, None, Delivery::Durable),
            (EventKind::DeadLettered, None, Delivery::Durable),
            (EventKind::Requeued, Some(true), Delivery::Durable),
            (EventKind::AckLost, None, Delivery::Durable),
            (EventKind::Misconfigured, None, Delivery::Durable),
            (EventKind::Submitted, None, Delivery::Durable),
        ];
        for (kind, redelivered, d) in table {
            let mut e = JobEvent::new(kind, "t".into(), "c", "h", "u");
            e.redelivered = redelivered;
            assert_eq!(e.delivery(), d, "{kind:?} redelivered {redelivered:?}");
        }
    }

    #[test]
    fn tail_keeps_the_end_on_a_char_boundary() {
        assert_eq!(tail("short", 10), "short");
        assert_eq!(tail("abcdef", 3), "…def");
        assert_eq!(tail("aé€", 3), "…€");
    }
}
