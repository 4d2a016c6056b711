//! Alert delivery to an Alertmanager-compatible webhook: the JSON that Alertmanager itself posts
//! to its receivers (version 4), so that existing receivers (chat, paging, ticketing adapters)
//! take Drover's alerts as they are. Plain HTTP/1.1 over TCP with a deadline per attempt and
//! full-jitter retries; a deliberately small client, since one POST is all it does.

use crate::alerts::{Alert, Transition, WebhookTarget as Target};
use crate::backoff::Backoff;
use crate::io::random::Jitter;
use crate::job::rfc3339;
use serde_json::json;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

fn alert_json(a: &Alert, host: &str) -> serde_json::Value {
    let mut labels = serde_json::Map::new();
    labels.insert("alertname".into(), a.key.name.clone().into());
    labels.insert("severity".into(), a.severity.as_str().into());
    labels.insert("source_host".into(), host.into());
    for (k, v) in &a.key.labels {
        labels.insert(k.clone(), v.clone().into());
    }
    let mut annotations = serde_json::Map::new();
    annotations.insert("summary".into(), a.summary.clone().into());
    for (k, v) in &a.annotations {
        annotations.insert(k.clone(), v.clone().into());
    }
    json!({
        "status": if a.resolved_ms.is_some() { "resolved" } else { "firing" },
        "labels": labels,
        "annotations": annotations,
        "startsAt": rfc3339(a.since_ms),
        "endsAt": a.resolved_ms.map(rfc3339).unwrap_or_else(|| "0001-01-01T00:00:00Z".into()),
        "generatorURL": "",
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
pub fn payload(t: &Transition, host: &str) -> serde_json::Value {
    let (a, status) = match t {
        Transition::Fired(a) => (a, "firing"),
        Transition::Resolved(a) => (a, "resolved"),
    };
    let alert = alert_json(a, host);
    json!({
        "version": "4",
        "groupKey": format!("{{}}:{{alertname=\"{}\"}}", a.key.name),
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "drover",
        "groupLabels": { "alertname": a.key.name },
        "commonLabels": alert["labels"],
        "commonAnnotations": alert["annotations"],
        "externalURL": "",
        "alerts": [alert],
    })
}

async fn post_once(t: &Target, body: &[u8], timeout: Duration) -> Result<(), String> {
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect((t.host.as_str(), t.port)).await.map_err(|e| e.to_string())?;
        let head = format!(
            "POST {} HTTP/1.1\r\nHost: {}:{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\nUser-Agent: drover\r\n\r\n",
            t.path,
            t.host,
            t.port,
            body.len()
        );
        s.write_all(head.as_bytes()).await.map_err(|e| e.to_string())?;
        s.write_all(body).await.map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; 256];
        let n = s.read(&mut buf).await.map_err(|e| e.to_string())?;
        let status_line = String::from_utf8_lossy(&buf[..n]);
        let code: u16 = status_line.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        if (200..300).contains(&code) {
            Ok(())
        } else {
            Err(format!("answered {}", status_line.lines().next().unwrap_or("nothing")))
        }
    };
    tokio::time::timeout(timeout, exchange).await.map_err(|_| format!("no answer within {timeout:?}"))?
}

/// Starts the delivery task; send transitions into the returned channel. Each is tried up to
/// eight times with full-jitter backoff (1 s to 1 min), then dropped with an error in the log.
pub fn spawn(target: Target, host: String, tasks: &crate::tasks::Tasks) -> mpsc::Sender<Transition> {
    let (tx, mut rx) = mpsc::channel::<Transition>(1000);
    // Ends when the senders are gone (the watcher stopped), after what is queued was tried.
    let cancel = tasks.token().clone();
    tasks.spawn(async move {
        let backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        let mut jitter = Jitter::from_os();
        while let Some(t) = rx.recv().await {
            let body = payload(&t, &host).to_string();
            for attempt in 1..=8u32 {
                match post_once(&target, body.as_bytes(), Duration::from_secs(10)).await {
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
        let p = payload(&Transition::Fired(a.clone()), "h1");
        assert_eq!(p["version"], "4");
        assert_eq!(p["status"], "firing");
        assert_eq!(p["alerts"][0]["labels"]["alertname"], "LatencyDrift");
        assert_eq!(p["alerts"][0]["labels"]["class"], "inference");
        assert_eq!(p["alerts"][0]["annotations"]["summary"], "drifted");
        let mut r = a;
        r.resolved_ms = Some(60_000);
        let p2 = payload(&Transition::Resolved(r), "h1");
        assert_eq!(p2["status"], "resolved");
        assert_eq!(p2["alerts"][0]["fingerprint"], p["alerts"][0]["fingerprint"], "same alert, same fingerprint");
    }
}
