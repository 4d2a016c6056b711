//! Alert delivery to Alertmanager's own API (`POST /api/v2/alerts`), as Prometheus does it:
//! every Alertmanager of the list gets every alert (they deduplicate and gossip among
//! themselves), firing alerts are re-sent every `alerts.alertmanager_resend` with an `endsAt`
//! four resends ahead (so the alerts of a supervisor that died resolve by themselves), and a
//! resolved alert is sent with its `endsAt` until each Alertmanager took it.
//!
//! An alert's identity in Alertmanager is its labels: `alertname`, `severity` and the
//! condition's own scope (class, host, tenant). Which supervisor reported it is an annotation
//! (`reported_by`), never a label, so that a fleet-wide condition seen by every supervisor is
//! one alert there, not one per supervisor.

use super::http::{self, Auth};
use crate::alerts::{Alert, AlertKey, HttpTarget, Transition};
use crate::config::Config;
use crate::io::clock::now_ms;
use crate::job::rfc3339;
use serde_json::json;
use std::collections::BTreeMap;
use tokio::sync::mpsc;

/// The labels that make an alert's identity, the same whichever supervisor sends it.
pub fn labels(a: &Alert) -> serde_json::Map<String, serde_json::Value> {
    let mut labels = serde_json::Map::new();
    labels.insert("alertname".into(), a.key.name.clone().into());
    labels.insert("severity".into(), a.severity.as_str().into());
    for (k, v) in &a.key.labels {
        labels.insert(k.clone(), v.clone().into());
    }
    labels
}

/// Who sends the alerts and where their links point.
#[derive(Clone, Debug)]
pub struct Origin {
    /// This supervisor's host (the `reported_by` annotation).
    pub reporter: String,
    /// The base of `generatorURL` (`alerts.external_url`).
    pub generator_base: String,
    /// The base of `runbook_url` (`alerts.runbook_base`).
    pub runbook_base: String,
}

impl Origin {
    pub fn of(cfg: &Config) -> Origin {
        let am = &cfg.alerts.alertmanager;
        let generator_base = am.external_url.clone().unwrap_or_else(|| default_external_url(cfg));
        let runbook_base =
            am.runbook_base.clone().unwrap_or_else(|| format!("{}/runbooks", generator_base.trim_end_matches('/')));
        Origin { reporter: cfg.host.clone(), generator_base, runbook_base }
    }
}

/// What the alert says: its summary, its details, its runbook, and which supervisor said it.
pub fn annotations(a: &Alert, origin: &Origin) -> serde_json::Map<String, serde_json::Value> {
    let mut annotations = serde_json::Map::new();
    annotations.insert("summary".into(), a.summary.clone().into());
    for (k, v) in &a.annotations {
        annotations.insert(k.clone(), v.clone().into());
    }
    if let Some(url) = crate::alerts::runbook_url(&origin.runbook_base, &a.key.name) {
        annotations.insert("runbook_url".into(), url.into());
    }
    annotations.insert("reported_by".into(), origin.reporter.clone().into());
    annotations
}

/// Where `drover alerts` can be seen for this alert: the supervisor's `/alerts` page.
pub fn generator_url(base: &str, a: &Alert) -> String {
    format!("{}/alerts?alertname={}", base.trim_end_matches('/'), a.key.name)
}

/// One element of the `/api/v2/alerts` array. `ends_ms` is the resolve time of a resolved
/// alert, or how long a firing one holds unless re-sent.
pub fn alert_json(a: &Alert, origin: &Origin, ends_ms: i64) -> serde_json::Value {
    json!({
        "labels": labels(a),
        "annotations": annotations(a, origin),
        "startsAt": rfc3339(a.since_ms),
        "endsAt": rfc3339(a.resolved_ms.unwrap_or(ends_ms)),
        "generatorURL": generator_url(&origin.generator_base, a),
    })
}

/// The default base of `generatorURL`: this host's name and the metrics port.
pub fn default_external_url(cfg: &Config) -> String {
    match cfg.metrics.listen {
        Some(addr) => format!("http://{}:{}", cfg.host, addr.port()),
        None => format!("http://{}", cfg.host),
    }
}

/// The sinks of a supervisor's alerts: its Alertmanagers (one task) and its webhook.
#[derive(Default)]
pub struct Sinks {
    /// The Alertmanagers' task, which re-sends what it was told is firing.
    pub alertmanager: Option<mpsc::Sender<Transition>>,
    /// Every sink, the Alertmanagers' among them: each change goes to all.
    pub all: Vec<mpsc::Sender<Transition>>,
}

impl Sinks {
    /// Hands alerts that fire already (a new judge's, from the last judge's state) to the
    /// Alertmanagers alone, so that they are re-sent and do not end there while they still hold:
    /// they are no change, so the webhook hears nothing of them again.
    pub fn still_firing(&self, alerts: Vec<Alert>) {
        let Some(tx) = &self.alertmanager else { return };
        for a in alerts {
            if tx.try_send(Transition::Fired(a)).is_err() {
                tracing::error!("alert delivery queue full: a firing alert not re-sent to Alertmanager");
            }
        }
    }
}

/// Starts the sinks. A sink that cannot start (an unreadable CA or credentials file) is said in
/// the log and left out: the alerts still reach the log, `/metrics` and `drover alerts`.
pub fn sinks(cfg: &Config, tasks: &crate::tasks::Tasks) -> Sinks {
    let mut out = Sinks::default();
    match spawn(cfg, tasks) {
        Ok(Some(tx)) => {
            out.alertmanager = Some(tx.clone());
            out.all.push(tx);
        }
        Ok(None) => {}
        Err(e) => tracing::error!("alerts will not reach Alertmanager: {e:#}"),
    }
    if let Some(url) = &cfg.alerts.webhook {
        match (crate::alerts::parse_http_url(url), http::client(cfg.alerts.alertmanager.ca_file.as_deref())) {
            (Ok(t), Ok(client)) => out.all.push(super::webhook::spawn(t, Origin::of(cfg), client, tasks)),
            (Err(e), _) => tracing::error!("alerts.webhook: {e}"),
            (_, Err(e)) => tracing::error!("alerts will not reach the webhook: {e:#}"),
        }
    }
    out
}

struct Target {
    at: HttpTarget,
    /// Resolved alerts this Alertmanager has not yet taken.
    resolved: BTreeMap<AlertKey, Alert>,
    failing: bool,
}

/// Starts the delivery task when `[alerts] alertmanager` lists any; send transitions into the
/// returned channel. Fails at start-up on an unreadable CA or credentials file.
pub fn spawn(cfg: &Config, tasks: &crate::tasks::Tasks) -> anyhow::Result<Option<mpsc::Sender<Transition>>> {
    let am = &cfg.alerts.alertmanager;
    if am.urls.is_empty() {
        return Ok(None);
    }
    let client = http::client(am.ca_file.as_deref())?;
    let auth = http::auth_from(am)?;
    let mut targets = Vec::new();
    for u in &am.urls {
        let at = crate::alerts::parse_http_url(u).map_err(|e| anyhow::anyhow!("alerts.alertmanager: {e}"))?;
        targets.push(Target { at, resolved: BTreeMap::new(), failing: false });
    }
    let (origin, resend) = (Origin::of(cfg), am.resend);
    let (tx, mut rx) = mpsc::channel::<Transition>(1000);
    let cancel = tasks.token().clone();
    tasks.spawn(async move {
        let mut firing: BTreeMap<AlertKey, Alert> = BTreeMap::new();
        let mut tick = tokio::time::interval(resend);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                t = rx.recv() => {
                    let Some(t) = t else { break };
                    absorb(t, &mut firing, &mut targets);
                    // Whatever else is queued goes in the same POST.
                    while let Ok(t) = rx.try_recv() {
                        absorb(t, &mut firing, &mut targets);
                    }
                }
                _ = tick.tick() => {}
                _ = cancel.cancelled() => break,
            }
            let hold_ms = now_ms() + 4 * resend.as_millis() as i64;
            let active: Vec<serde_json::Value> = firing.values().map(|a| alert_json(a, &origin, hold_ms)).collect();
            send_all(&client, &auth, &mut targets, &active, &origin).await;
        }
    });
    Ok(Some(tx))
}

fn absorb(t: Transition, firing: &mut BTreeMap<AlertKey, Alert>, targets: &mut [Target]) {
    match t {
        Transition::Fired(a) => {
            for t in targets.iter_mut() {
                t.resolved.remove(&a.key);
            }
            firing.insert(a.key.clone(), a);
        }
        Transition::Resolved(a) => {
            firing.remove(&a.key);
            for t in targets.iter_mut() {
                t.resolved.insert(a.key.clone(), a.clone());
            }
        }
    }
}

/// One POST to each Alertmanager, all at once: the firing alerts and what it has not yet taken
/// of the resolved ones. Nothing to say, nothing sent.
async fn send_all(
    client: &reqwest::Client,
    auth: &Auth,
    targets: &mut [Target],
    active: &[serde_json::Value],
    origin: &Origin,
) {
    let mut sends = Vec::new();
    for t in targets.iter() {
        let mut body = active.to_vec();
        body.extend(t.resolved.values().map(|a| alert_json(a, origin, 0)));
        sends.push(body);
    }
    let results = futures_join(targets.iter().zip(sends).map(|(t, body)| {
        let (client, auth, at) = (client.clone(), auth.clone(), t.at.clone());
        async move {
            if body.is_empty() {
                return Ok(());
            }
            http::post_json(&client, &at, "/api/v2/alerts", &auth, &serde_json::Value::Array(body)).await
        }
    }))
    .await;
    for (t, r) in targets.iter_mut().zip(results) {
        match r {
            Ok(()) => {
                t.resolved.clear();
                if t.failing {
                    tracing::info!("alertmanager {} takes alerts again", t.at.url(""));
                }
                t.failing = false;
            }
            Err(e) => {
                // Said once when it starts failing, then at debug level until it recovers:
                // the next resend is the retry.
                if !t.failing {
                    tracing::warn!("alerts not delivered to alertmanager: {e}; re-sent with the next round");
                } else {
                    tracing::debug!("alertmanager still failing: {e}");
                }
                t.failing = true;
                // A resolve older than an hour is past caring: its endsAt has passed anyway.
                let cutoff = now_ms() - 3_600_000;
                t.resolved.retain(|_, a| a.resolved_ms.unwrap_or(0) > cutoff);
            }
        }
    }
}

/// Runs the futures concurrently, each in its own task, and returns their results in order.
async fn futures_join<F>(futs: impl Iterator<Item = F>) -> Vec<Result<(), String>>
where
    F: std::future::Future<Output = Result<(), String>> + Send + 'static,
{
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.unwrap_or_else(|e| Err(format!("delivery task failed: {e}"))));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::Severity;

    fn alert() -> Alert {
        Alert {
            key: AlertKey::new("ClassPaused", &[("class", "inference")]),
            severity: Severity::Critical,
            summary: "paused".into(),
            annotations: [("drover_did".to_string(), "paused the class".to_string())].into(),
            since_ms: 1_000,
            resolved_ms: None,
        }
    }

    #[test]
    fn identity_is_the_same_whoever_reports_it() {
        let a = alert();
        let origin = |h: &str| Origin {
            reporter: h.into(),
            generator_base: format!("http://{h}:9464"),
            runbook_base: "https://wiki.example/runbooks/".into(),
        };
        let from_a = alert_json(&a, &origin("host-a"), 5_000);
        let from_b = alert_json(&a, &origin("host-b"), 9_000);
        assert_eq!(from_a["labels"], from_b["labels"], "no per-reporter label");
        assert_eq!(from_a["labels"]["alertname"], "ClassPaused");
        assert_eq!(from_a["labels"]["severity"], "critical");
        assert_eq!(from_a["annotations"]["reported_by"], "host-a");
        assert_eq!(from_a["generatorURL"], "http://host-a:9464/alerts?alertname=ClassPaused");
        assert_eq!(from_a["annotations"]["runbook_url"], "https://wiki.example/runbooks/class-paused.md");
        assert_eq!(from_a["endsAt"], rfc3339(5_000), "firing: holds until the given time");
        let mut r = a;
        r.resolved_ms = Some(7_000);
        assert_eq!(alert_json(&r, &origin("host-a"), 99_000)["endsAt"], rfc3339(7_000), "resolved: its own end");
    }
}
