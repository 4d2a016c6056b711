//! Alerts as a state machine: a condition becomes an alert after it has held for `fire_after`,
//! stays one alert however often it is re-evaluated (deduplicated by name and scope), and
//! resolves only after it has been clear for `resolve_after` (hold-down, so that an alert on
//! the edge does not flap). Pure: the caller passes the time; delivery lives elsewhere.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// Which alert, where: the alert's identity. Labels are a small bounded set (class, host,
/// tenant), never a job id.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AlertKey {
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

impl AlertKey {
    pub fn new(name: &str, labels: &[(&str, &str)]) -> AlertKey {
        AlertKey {
            name: name.to_string(),
            labels: labels.iter().filter(|(_, v)| !v.is_empty()).map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        }
    }

    pub fn label(&self, key: &str) -> &str {
        self.labels.get(key).map(String::as_str).unwrap_or("")
    }
}

/// Every alert Drover raises itself (sent to Alertmanager and the webhook) and its runbook
/// page in `docs/runbooks/`: what it means, what Drover already did, what to check, how to
/// undo. A family of alerts (a host's, a worker's, a class's) shares one page.
pub const RUNBOOKS: [(&str, &str); 14] = [
    ("LatencyDrift", "latency-drift.md"),
    ("JobRunningLong", "job-running-long.md"),
    ("SlaAtRisk", "sla-at-risk.md"),
    ("ClassStalled", "class-stalled.md"),
    ("WorkerQuarantined", "quarantined.md"),
    ("HostQuarantined", "quarantined.md"),
    ("ClassPaused", "class-paused.md"),
    ("HostSuspect", "suspect.md"),
    ("WorkerSuspect", "suspect.md"),
    ("ClassSuspect", "suspect.md"),
    ("HostSlow", "slow.md"),
    ("WorkerSlow", "slow.md"),
    ("ClassSlow", "slow.md"),
    ("ManyLookBad", "many-look-bad.md"),
];

/// The `runbook_url` of an alert: its page under `base` (`alerts.runbook_base`); `None` for a
/// name without a page.
pub fn runbook_url(base: &str, name: &str) -> Option<String> {
    let page = RUNBOOKS.iter().find(|(n, _)| *n == name)?.1;
    Some(format!("{}/{page}", base.trim_end_matches('/')))
}

/// One evaluation of a condition.
#[derive(Clone, Debug, PartialEq)]
pub struct Condition {
    pub key: AlertKey,
    pub active: bool,
    pub severity: Severity,
    /// One line: what, by how much, against which baseline.
    pub summary: String,
    /// Details: baseline, evidence, what Drover already did in that scope.
    pub annotations: BTreeMap<String, String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub key: AlertKey,
    pub severity: Severity,
    pub summary: String,
    pub annotations: BTreeMap<String, String>,
    /// When it started firing (ms since the epoch).
    pub since_ms: i64,
    /// When it resolved; `None` while firing.
    pub resolved_ms: Option<i64>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Transition {
    Fired(Alert),
    Resolved(Alert),
}

#[derive(Clone, Copy, Debug)]
pub struct Policy {
    pub fire_after: Duration,
    pub resolve_after: Duration,
}

#[derive(Clone, Debug)]
enum Entry {
    Pending { since: i64 },
    Firing { alert: Alert, clear_since: Option<i64> },
}

/// The alerts of one supervisor: current and recently resolved.
#[derive(Debug, Default)]
pub struct AlertBook {
    entries: BTreeMap<AlertKey, Entry>,
    resolved: Vec<Alert>,
}

const KEEP_RESOLVED: usize = 50;

impl AlertBook {
    /// Feeds one evaluation; returns the transition it caused, if any.
    pub fn update(&mut self, c: Condition, policy: Policy, now_ms: i64) -> Option<Transition> {
        let ms = |d: Duration| d.as_millis() as i64;
        let entry = self.entries.remove(&c.key);
        let (next, transition) = match (entry, c.active) {
            (None, false) => (None, None),
            (None, true) if policy.fire_after.is_zero() => {
                let alert = firing(&c, now_ms);
                (Some(Entry::Firing { alert: alert.clone(), clear_since: None }), Some(Transition::Fired(alert)))
            }
            (None, true) => (Some(Entry::Pending { since: now_ms }), None),
            (Some(Entry::Pending { since }), true) if now_ms - since >= ms(policy.fire_after) => {
                let alert = firing(&c, now_ms);
                (Some(Entry::Firing { alert: alert.clone(), clear_since: None }), Some(Transition::Fired(alert)))
            }
            (Some(Entry::Pending { since }), true) => (Some(Entry::Pending { since }), None),
            (Some(Entry::Pending { .. }), false) => (None, None),
            (Some(Entry::Firing { mut alert, .. }), true) => {
                // Still firing: keep the start, refresh what it says.
                alert.summary = c.summary.clone();
                alert.annotations = c.annotations.clone();
                alert.severity = alert.severity.max(c.severity);
                (Some(Entry::Firing { alert, clear_since: None }), None)
            }
            (Some(Entry::Firing { alert, clear_since }), false) => {
                let since = clear_since.unwrap_or(now_ms);
                if now_ms - since >= ms(policy.resolve_after) {
                    let mut done = alert;
                    done.resolved_ms = Some(now_ms);
                    self.resolved.push(done.clone());
                    let excess = self.resolved.len().saturating_sub(KEEP_RESOLVED);
                    self.resolved.drain(..excess);
                    (None, Some(Transition::Resolved(done)))
                } else {
                    (Some(Entry::Firing { alert, clear_since: Some(since) }), None)
                }
            }
        };
        if let Some(n) = next {
            self.entries.insert(c.key, n);
        }
        transition
    }

    pub fn firing(&self) -> Vec<&Alert> {
        self.entries
            .values()
            .filter_map(|e| match e {
                Entry::Firing { alert, .. } => Some(alert),
                Entry::Pending { .. } => None,
            })
            .collect()
    }

    pub fn resolved(&self) -> &[Alert] {
        &self.resolved
    }

    /// A book that goes on from alerts another one had firing (the fleet's judge taking over
    /// from its snapshot): they stay firing, nothing is raised again.
    pub fn restore(firing: Vec<Alert>) -> AlertBook {
        let entries =
            firing.into_iter().map(|alert| (alert.key.clone(), Entry::Firing { alert, clear_since: None })).collect();
        AlertBook { entries, resolved: Vec::new() }
    }

    /// Keys this book has an opinion on (pending or firing), for callers that must report
    /// "clear" for conditions they no longer see.
    pub fn keys(&self) -> Vec<AlertKey> {
        self.entries.keys().cloned().collect()
    }
}

fn firing(c: &Condition, now_ms: i64) -> Alert {
    Alert {
        key: c.key.clone(),
        severity: c.severity,
        summary: c.summary.clone(),
        annotations: c.annotations.clone(),
        since_ms: now_ms,
        resolved_ms: None,
    }
}

/// Where alerts are posted (an Alertmanager, or a webhook): an `http://` or `https://` URL,
/// taken apart once so that a bad one is refused when the configuration is read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpTarget {
    pub https: bool,
    /// The host as it goes into a URL: a name, an IPv4 address, or `[an IPv6 address]`.
    pub host: String,
    pub port: u16,
    pub path: String,
    /// `user:password@` in the URL: sent as basic authentication, never logged.
    pub user: Option<(String, String)>,
}

impl HttpTarget {
    /// The URL without credentials (safe to log), with `path` appended to the target's own.
    pub fn url(&self, path: &str) -> String {
        let scheme = if self.https { "https" } else { "http" };
        let base = self.path.trim_end_matches('/');
        format!("{scheme}://{}:{}{base}{path}", self.host, self.port)
    }
}

/// Parses `http[s]://[user:password@]host[:port][/path]`, where host may be `[an IPv6 address]`.
pub fn parse_http_url(url: &str) -> Result<HttpTarget, String> {
    let (https, rest) = if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else {
        return Err(format!("`{url}`: not an http:// or https:// URL"));
    };
    let (authority, path) = match rest.find(['/', '?', '#']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if !path.starts_with('/') {
        return Err(format!("`{url}`: a query or fragment needs a path before it"));
    }
    let (user, hostport) = match authority.rsplit_once('@') {
        Some((u, hp)) => {
            let (name, pw) = u.split_once(':').unwrap_or((u, ""));
            if name.is_empty() {
                return Err(format!("`{url}`: empty user name before `@`"));
            }
            (Some((name.to_string(), pw.to_string())), hp)
        }
        None => (None, authority),
    };
    let default_port = if https { 443 } else { 80 };
    let (host, port) = if let Some(r) = hostport.strip_prefix('[') {
        let (addr, after) = r.split_once(']').ok_or_else(|| format!("`{url}`: `[` without `]`"))?;
        if addr.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("`{url}`: `{addr}` is not an IPv6 address"));
        }
        let port = match after {
            "" => default_port,
            p => port_of(url, p.strip_prefix(':').ok_or_else(|| format!("`{url}`: `{p}` after `]`"))?)?,
        };
        (format!("[{addr}]"), port)
    } else {
        match hostport.rsplit_once(':') {
            Some((h, _)) if h.contains(':') => {
                return Err(format!("`{url}`: an IPv6 address must be written in brackets, e.g. http://[::1]:9093"))
            }
            Some((h, p)) => (h.to_string(), port_of(url, p)?),
            None => (hostport.to_string(), default_port),
        }
    };
    if host.is_empty() {
        return Err(format!("`{url}`: no host"));
    }
    if host.contains(|c: char| c.is_whitespace() || c == '%') {
        return Err(format!("`{url}`: `{host}` is not a host name"));
    }
    Ok(HttpTarget { https, host, port, path: path.to_string(), user })
}

fn port_of(url: &str, p: &str) -> Result<u16, String> {
    match p.parse::<u16>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("`{url}`: bad port `{p}`")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cond(active: bool) -> Condition {
        Condition {
            key: AlertKey::new("LatencyDrift", &[("class", "inference"), ("host", "")]),
            active,
            severity: Severity::Warning,
            summary: format!("active={active}"),
            annotations: BTreeMap::new(),
        }
    }

    const P: Policy = Policy { fire_after: Duration::from_secs(60), resolve_after: Duration::from_secs(300) };

    #[test]
    fn fires_after_holding_dedupes_and_resolves_after_the_hold_down() {
        let mut b = AlertBook::default();
        // (time s, active, expected transition: F fired, R resolved, - none)
        let steps = [
            (0, true, '-'),
            (30, true, '-'),
            (61, true, 'F'),
            (90, true, '-'),
            (120, false, '-'),
            (200, true, '-'), // back before the hold-down ran out: same alert, no flap
            (250, false, '-'),
            (549, false, '-'),
            (551, false, 'R'),
            (560, false, '-'),
        ];
        for (t, active, want) in steps {
            let got = match b.update(cond(active), P, t * 1000) {
                Some(Transition::Fired(a)) => {
                    assert_eq!(a.since_ms, t * 1000);
                    'F'
                }
                Some(Transition::Resolved(a)) => {
                    assert_eq!((a.since_ms, a.resolved_ms), (61_000, Some(t * 1000)));
                    'R'
                }
                None => '-',
            };
            assert_eq!(got, want, "at {t} s");
        }
        assert!(b.firing().is_empty());
        assert_eq!(b.resolved().len(), 1);
        assert_eq!(b.resolved()[0].key.labels.len(), 1, "empty labels are dropped");
    }

    #[test]
    fn a_blip_shorter_than_fire_after_never_fires() {
        let mut b = AlertBook::default();
        for (t, active) in [(0, true), (59, true), (60, false), (100, true), (150, false)] {
            assert_eq!(b.update(cond(active), P, t * 1000), None, "at {t}");
        }
        assert!(b.firing().is_empty());
    }

    #[test]
    fn fire_after_zero_fires_at_once_and_refreshes_while_firing() {
        let mut b = AlertBook::default();
        let p = Policy { fire_after: Duration::ZERO, resolve_after: Duration::ZERO };
        assert!(matches!(b.update(cond(true), p, 5), Some(Transition::Fired(_))));
        let mut c = cond(true);
        c.summary = "worse".into();
        c.severity = Severity::Critical;
        assert_eq!(b.update(c, p, 6), None);
        assert_eq!(b.firing()[0].summary, "worse");
        assert_eq!(b.firing()[0].severity, Severity::Critical);
        assert!(matches!(b.update(cond(false), p, 7), Some(Transition::Resolved(_))));
    }

    #[test]
    fn urls() {
        let t = |u: &str| parse_http_url(u);
        assert_eq!(
            t("http://am.example:9093/api/hook"),
            Ok(HttpTarget {
                https: false,
                host: "am.example".into(),
                port: 9093,
                path: "/api/hook".into(),
                user: None
            })
        );
        assert_eq!(t("http://x").map(|t| (t.port, t.path)), Ok((80, "/".into())));
        assert_eq!(t("https://x").map(|t| (t.https, t.port)), Ok((true, 443)));
        // IPv6 in brackets, with and without a port.
        assert_eq!(t("http://[::1]:9099/hook").map(|t| (t.host, t.port)), Ok(("[::1]".into(), 9099)));
        assert_eq!(t("https://[fe80::1]").map(|t| (t.host, t.port)), Ok(("[fe80::1]".into(), 443)));
        assert_eq!(t("http://[::1]:9099/hook").unwrap().url("/api/v2/alerts"), "http://[::1]:9099/hook/api/v2/alerts");
        // Credentials are taken out of the URL (and out of what is logged).
        let with_user = t("http://drover:s3cr:et@am:9093/").unwrap();
        assert_eq!(with_user.user, Some(("drover".into(), "s3cr:et".into())));
        assert_eq!((with_user.host.as_str(), with_user.url("/x")), ("am", "http://am:9093/x".into()));
        for bad in [
            "ftp://x",
            "http://:80/",
            "http://x:0/",
            "http://x:99999/",
            "http://::1:9093/",
            "http://[::1/",
            "http://[nope]:80/",
            "http://[::1]x/",
            "http://@x/",
            "http://a b/",
        ] {
            assert!(t(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn every_alert_drover_raises_has_a_runbook_page() {
        let names =
            [crate::latency::DRIFT, crate::latency::RUNNING_LONG, crate::latency::SLA_AT_RISK, crate::latency::STALLED]
                .into_iter()
                .chain(crate::judge::AlertKind::ALL.map(|k| k.name()))
                .chain(crate::judge::SUSPECT_ALERTS);
        for name in names {
            let url = runbook_url("https://runbooks.example/drover/", name);
            assert!(
                url.as_deref().is_some_and(|u| u.starts_with("https://runbooks.example/drover/") && u.ends_with(".md")),
                "{name}: {url:?}"
            );
        }
        assert_eq!(runbook_url("b", "NotOurs"), None);
    }
}
