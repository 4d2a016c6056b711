//! The broker's policies, read at start-up from the management API and checked against the
//! configuration by [`crate::topology::check_policies`].
//!
//! AMQP 0-9-1 shows none of them: a passive declare returns a queue's message and consumer
//! counts, not its effective arguments, and the server's properties at connection name the
//! product and version only. So policies (and operator policies) can be read only through the
//! management plugin's HTTP API (`broker.management_url`); without it, start-up says that
//! they were not checked. One GET each, plain HTTP/1.0 (no chunked bodies) over TCP with a
//! deadline: a deliberately small client.

use crate::config::BrokerConfig;
use crate::topology::{self, Finding, Policy};
use base64::Engine;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What start-up learnt about the broker's policies.
pub enum Checked {
    /// No `broker.management_url`.
    NotConfigured,
    /// The API could not be read (the reason).
    Unreadable(String),
    /// How many policies the vhost has, what they change for Drover, and what can be said of
    /// the broker's consumer timeout ([`topology::consumer_timeout_note`]).
    Read(usize, Vec<Finding>, String),
}

/// Reads the vhost's policies and operator policies and checks them.
pub async fn check(cfg: &BrokerConfig) -> Checked {
    let Some(base) = cfg.management_url.as_deref() else { return Checked::NotConfigured };
    let amqp = cfg.urls.first().map(String::as_str).unwrap_or("");
    let (user, vhost) = amqp_user_and_vhost(amqp);
    let vhost = vhost.replace('/', "%2F");
    let mut policies = Vec::new();
    for (path, kind) in [("policies", "policy"), ("operator-policies", "operator policy")] {
        let url = format!("{}/api/{path}/{vhost}", base.trim_end_matches('/'));
        match get_json(&url, &user, cfg.op_timeout).await {
            Ok(v) => policies.extend(parse(&v, kind)),
            Err(e) => return Checked::Unreadable(format!("GET {url}: {e}")),
        }
    }
    let min_limit = cfg.delivery_limits.values().copied().min().unwrap_or_else(|| topology::delivery_limit(5, 3));
    let found = topology::check_policies(&policies, &cfg.prefix, cfg.queue_type, cfg.consumer_timeout, min_limit);
    // The version says whether per-queue consumer timeouts exist; the node-wide one is never
    // shown (not in the overview, the node's page nor the definitions).
    let url = format!("{}/api/overview", base.trim_end_matches('/'));
    let overview = get_json(&url, &user, cfg.op_timeout).await.ok();
    let version = overview.as_ref().and_then(|o| o.get("rabbitmq_version")).and_then(|v| v.as_str());
    let note = topology::consumer_timeout_note(version, cfg.consumer_timeout);
    Checked::Read(policies.len(), found, note)
}

fn parse(v: &serde_json::Value, kind: &'static str) -> Vec<Policy> {
    let Some(items) = v.as_array() else { return vec![] };
    items
        .iter()
        .filter_map(|p| {
            Some(Policy {
                name: p.get("name")?.as_str()?.to_string(),
                kind,
                pattern: p.get("pattern")?.as_str()?.to_string(),
                apply_to: p.get("apply-to").and_then(|a| a.as_str()).unwrap_or("all").to_string(),
                definition: p.get("definition")?.as_object()?.clone(),
            })
        })
        .collect()
}

/// `user:password` and the vhost (decoded) of an AMQP URL; RabbitMQ's defaults when absent.
fn amqp_user_and_vhost(url: &str) -> (String, String) {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let (auth, host_path) = rest.rsplit_once('@').map_or(("guest:guest", rest), |(a, h)| (a, h));
    let vhost = match host_path.split_once('/') {
        None | Some((_, "")) => "/".to_string(),
        Some((_, v)) => v.split('?').next().unwrap_or(v).replace("%2f", "/").replace("%2F", "/"),
    };
    (auth.to_string(), vhost)
}

/// One GET of a JSON document, `auth` as `user:password` (the URL's own, if it has one).
pub async fn get_json(url: &str, auth: &str, limit: Duration) -> Result<serde_json::Value, String> {
    let rest = url.strip_prefix("http://").ok_or("only http:// is supported")?;
    let (hostport, path) = rest.split_once('/').map_or((rest, "/".to_string()), |(h, p)| (h, format!("/{p}")));
    let (auth, hostport) = hostport.rsplit_once('@').map_or((auth, hostport), |(a, h)| (a, h));
    let addr = if hostport.contains(':') { hostport.to_string() } else { format!("{hostport}:80") };
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(&addr).await.map_err(|e| format!("connect {addr}: {e}"))?;
        let creds = base64::engine::general_purpose::STANDARD.encode(auth);
        let req = format!(
            "GET {path} HTTP/1.0\r\nHost: {hostport}\r\nAuthorization: Basic {creds}\r\nAccept: application/json\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await.map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.map_err(|e| e.to_string())?;
        Ok::<_, String>(buf)
    };
    let buf = tokio::time::timeout(limit, exchange).await.map_err(|_| format!("no answer within {limit:?}"))??;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n").ok_or("not an HTTP response")?;
    let status = head.split(' ').nth(1).unwrap_or("");
    if status != "200" {
        return Err(format!("HTTP {status}: {}", crate::events::tail(body, 200)));
    }
    serde_json::from_str(body).map_err(|e| format!("not JSON: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_and_vhost_come_from_the_amqp_url() {
        for (url, want) in [
            ("amqp://guest:guest@127.0.0.1:5672/%2f", ("guest:guest", "/")),
            ("amqp://u:p@h:5672/jobs", ("u:p", "jobs")),
            ("amqps://u:p@h", ("u:p", "/")),
            ("amqp://h:5672/", ("guest:guest", "/")),
            ("amqp://u:p@h/v?heartbeat=10", ("u:p", "v")),
        ] {
            let (a, v) = amqp_user_and_vhost(url);
            assert_eq!((a.as_str(), v.as_str()), want, "{url}");
        }
    }

    #[test]
    fn the_api_listing_becomes_policies() {
        let v = serde_json::json!([
            {"vhost": "/", "name": "qq-limit", "pattern": "^drover\\.", "apply-to": "quorum_queues",
             "definition": {"delivery-limit": 3}, "priority": 0},
            {"vhost": "/", "name": "broken"}
        ]);
        let p = parse(&v, "policy");
        assert_eq!(p.len(), 1);
        assert_eq!((p[0].name.as_str(), p[0].apply_to.as_str()), ("qq-limit", "quorum_queues"));
        assert_eq!(p[0].definition.get("delivery-limit").and_then(|d| d.as_i64()), Some(3));
    }
}
