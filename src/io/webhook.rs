//! Alert delivery to a webhook that takes what Alertmanager itself posts to its receivers
//! (version 4), so that existing receivers (chat, paging, ticketing adapters) take Drover's
//! alerts as they are: one POST per change, full-jitter retries. A second sink beside
//! [`crate::io::alertmanager`]; the alert's labels and annotations are the same in both.

use super::alertmanager::{annotations, generator_url, labels, Origin};
use super::http::{self, Auth};
use crate::alerts::{Alert, HttpTarget, Transition};
use crate::backoff::Backoff;
use crate::io::random::Jitter;
use crate::job::rfc3339;
use serde_json::json;
use std::time::Duration;
use tokio::sync::mpsc;

fn alert_json(a: &Alert, origin: &Origin) -> serde_json::Value {
    json!({
        "status": if a.resolved_ms.is_some() { "resolved" } else { "firing" },
        "labels": labels(a),
        "annotations": annotations(a, origin),
        "startsAt": rfc3339(a.since_ms),
        "endsAt": a.resolved_ms.map(rfc3339).unwrap_or_else(|| "0001-01-01T00:00:00Z".into()),
        "generatorURL": generator_url(&origin.generator_base, a),
        "fingerprint": format!("{:016x}", fingerprint(a)),
    })
}

fn fingerprint(a: &Alert) -> u64 {
    // FNV-1a over name and labels: stable across restarts, unlike the std hasher.
    let mut h: u64 = 0xcbf29ce484222325;
    let mut feed = |s: &str| {
        for b in s.bytes().chain(std::iter::once(0xff)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x100000001b3);
        }
    };
    feed(&a.key.name);
    for (k, v) in &a.key.labels {
        feed(k);
        feed(v);
    }
    h
}

/// The webhook body for one transition.
pub fn payload(t: &Transition, origin: &Origin) -> serde_json::Value {
    let (a, status) = match t {
        Transition::Fired(a) => (a, "firing"),
        Transition::Resolved(a) => (a, "resolved"),
    };
    let alert = alert_json(a, origin);
    json!({
        "version": "4",
        "groupKey": format!("{{}}:{{alertname=\"{}\"}}", a.key.name),
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "drover",
        "groupLabels": { "alertname": a.key.name },
        "commonLabels": alert["labels"],
        "commonAnnotations": alert["annotations"],
        "externalURL": origin.generator_base,
        "alerts": [alert],
    })
}

/// Starts the delivery task; send transitions into the returned channel. Each is tried up to
/// eight times with full-jitter backoff (1 s to 1 min), then dropped with an error in the log.
pub fn spawn(
    target: HttpTarget,
    origin: Origin,
    client: reqwest::Client,
    tasks: &crate::tasks::Tasks,
) -> mpsc::Sender<Transition> {
    let (tx, mut rx) = mpsc::channel::<Transition>(1000);
    // Ends when the senders are gone (the watcher stopped), after what is queued was tried.
    let cancel = tasks.token().clone();
    tasks.spawn(async move {
        let backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        let mut jitter = Jitter::from_os();
        while let Some(t) = rx.recv().await {
            let body = payload(&t, &origin);
            for attempt in 1..=8u32 {
                match http::post_json(&client, &target, "", &Auth::None, &body).await {
                    Ok(()) => break,
                    Err(e) if attempt == 8 => {
                        tracing::error!("alert not delivered to the webhook after {attempt} tries: {e}")
                    }
                    Err(e) => {
                        tracing::warn!("alert webhook: {e}; retrying");
                        let pause = backoff.delay(attempt, jitter.unit()).max(Duration::from_millis(200));
                        tokio::select! {
                            _ = tokio::time::sleep(pause) => {}
                            _ = cancel.cancelled() => {
                                tracing::error!("alert not delivered to the webhook: shutting down ({e})");
                                break;
                            }
                        }
                    }
                }
            }
        }
    });
    tx
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::{AlertKey, Severity};

    #[test]
    fn payload_is_alertmanager_shaped() {
        let a = Alert {
            key: AlertKey::new("LatencyDrift", &[("class", "inference")]),
            severity: Severity::Warning,
            summary: "drifted".into(),
            annotations: [("baseline_median".to_string(), "30m".to_string())].into(),
            since_ms: 0,
            resolved_ms: None,
        };
        let origin = |h: &str| Origin {
            reporter: h.into(),
            generator_base: format!("http://{h}:9464"),
            runbook_base: format!("http://{h}:9464/runbooks"),
        };
        let p = payload(&Transition::Fired(a.clone()), &origin("h1"));
        assert_eq!(p["version"], "4");
        assert_eq!(p["status"], "firing");
        assert_eq!(p["alerts"][0]["labels"]["alertname"], "LatencyDrift");
        assert_eq!(p["alerts"][0]["labels"]["class"], "inference");
        assert!(p["alerts"][0]["labels"].get("source_host").is_none(), "the reporter is no label");
        assert_eq!(p["alerts"][0]["annotations"]["summary"], "drifted");
        assert_eq!(p["alerts"][0]["annotations"]["reported_by"], "h1");
        assert_eq!(p["alerts"][0]["generatorURL"], "http://h1:9464/alerts?alertname=LatencyDrift");
        assert_eq!(p["alerts"][0]["annotations"]["runbook_url"], "http://h1:9464/runbooks/latency-drift.md");
        let mut r = a;
        r.resolved_ms = Some(60_000);
        let p2 = payload(&Transition::Resolved(r), &origin("h2"));
        assert_eq!(p2["status"], "resolved");
        assert_eq!(p2["alerts"][0]["fingerprint"], p["alerts"][0]["fingerprint"], "same alert, same fingerprint");
    }
}
