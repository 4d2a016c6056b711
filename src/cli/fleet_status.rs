//! `drover status --fleet`: the fleet at a glance. Every host's supervisor is asked over the
//! broker's control exchange with one deadline; hosts that were expected (`--expect`) and did
//! not answer are listed as such. Per class: the queue depth (from the broker) and the units by
//! health; then the quarantines, drains and cordons in force, and the firing alerts (a
//! fleet-wide alert that several supervisors hold is shown once).

use crate::alerts::{Alert, AlertKey};
use crate::config::Config;
use crate::io::amqp::Link;
use crate::io::control::{Request, Response};
use crate::io::fleet::{self, Target};
use crate::maintenance::{Kind, Order};
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::time::Instant;

#[derive(Serialize)]
pub struct FleetStatus {
    pub answered: Vec<String>,
    pub not_answering: Vec<String>,
    /// Class -> ready jobs in its queue (absent when the broker could not say).
    pub queue_depth: BTreeMap<String, Option<u32>>,
    /// Class -> health -> units, over the hosts that answered.
    pub units: BTreeMap<String, BTreeMap<String, usize>>,
    pub quarantines: Vec<(String, Order)>,
    pub drains: Vec<(String, Order)>,
    pub firing: Vec<Alert>,
}

/// Gathers the fleet's status; waits `wait` for the supervisors' answers.
pub async fn gather(cfg: &Config, expect: &[String], wait: Duration) -> anyhow::Result<FleetStatus> {
    let statuses = fleet::ask(cfg, &Target::All, &Request::Status, wait).await?;
    let progress = fleet::ask(cfg, &Target::All, &Request::Progress, wait).await?;
    let mut answered: Vec<String> = statuses.iter().map(|r| r.host.clone()).collect();
    answered.sort();
    answered.dedup();
    let not_answering = expect.iter().filter(|h| !answered.contains(h)).cloned().collect();
    let mut units: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    let mut firing: BTreeMap<AlertKey, Alert> = BTreeMap::new();
    for s in statuses.iter().filter_map(|r: &Response| r.status.as_ref()) {
        for u in &s.units {
            *units.entry(u.class.clone()).or_default().entry(u.health.clone()).or_default() += 1;
        }
        for a in &s.firing {
            firing.entry(a.key.clone()).or_insert_with(|| a.clone());
        }
    }
    let (mut quarantines, mut drains) = (Vec::new(), Vec::new());
    for r in &progress {
        for o in r.progress.iter().filter_map(|p| p.order.clone()) {
            match o.kind {
                Kind::Quarantine | Kind::Pause => quarantines.push((r.host.clone(), o)),
                Kind::Drain | Kind::Cordon => drains.push((r.host.clone(), o)),
            }
        }
    }
    let mut link = Link::new(&cfg.broker, "drover status");
    let queue_depth = queue_depths(cfg, &mut link).await;
    if let Some(conn) = link.connection() {
        let _ = tokio::time::timeout(Duration::from_secs(2), conn.close(200, "done".into())).await;
    }
    Ok(FleetStatus {
        answered,
        not_answering,
        queue_depth,
        units,
        quarantines,
        drains,
        firing: firing.into_values().collect(),
    })
}

/// Class -> ready jobs in its queue, from the broker on `link` (absent when it could not say).
pub async fn queue_depths(cfg: &Config, link: &mut Link) -> BTreeMap<String, Option<u32>> {
    let up = link.ensure_up_by(Instant::now() + cfg.broker.connect_timeout).await.is_ok();
    let mut depths = BTreeMap::new();
    for class in cfg.classes.keys() {
        let depth = if up { link.backlog(class).await.ok() } else { None };
        depths.insert(class.clone(), depth);
    }
    depths
}

/// The fleet's status for people.
pub fn render(f: &FleetStatus, wait: Duration) -> String {
    let mut out = String::new();
    out.push_str(&format!("hosts answering within {}: {}\n", crate::duration::format(wait), f.answered.join(", ")));
    if !f.not_answering.is_empty() {
        out.push_str(&format!("NOT ANSWERING: {}\n", f.not_answering.join(", ")));
    }
    out.push_str("\nclass            queued  units by health\n");
    let classes: std::collections::BTreeSet<&String> = f.queue_depth.keys().chain(f.units.keys()).collect();
    for c in classes {
        let depth = match f.queue_depth.get(c) {
            Some(Some(n)) => n.to_string(),
            _ => "?".into(),
        };
        let health = f
            .units
            .get(c)
            .map(|h| h.iter().map(|(k, n)| format!("{n} {k}")).collect::<Vec<_>>().join(", "))
            .unwrap_or_else(|| "no units".into());
        out.push_str(&format!("{c:<16} {depth:>6}  {health}\n"));
    }
    let orders = |title: &str, list: &[(String, Order)], out: &mut String| {
        if list.is_empty() {
            out.push_str(&format!("\n{title}: none\n"));
            return;
        }
        out.push_str(&format!("\n{title}:\n"));
        for (host, o) in list {
            out.push_str(&format!("  {host}: {:?} {} by {}: {}\n", o.kind, o.scope, o.who, o.reason));
        }
    };
    orders("quarantines and pauses", &f.quarantines, &mut out);
    orders("drains and cordons", &f.drains, &mut out);
    if f.firing.is_empty() {
        out.push_str("\nfiring alerts: none\n");
    } else {
        out.push_str("\nfiring alerts:\n");
        for a in &f.firing {
            let scope: Vec<String> = a.key.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            out.push_str(&format!("  {} [{}] {}: {}\n", a.key.name, a.severity.as_str(), scope.join(" "), a.summary));
        }
    }
    out
}
