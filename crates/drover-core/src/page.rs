//! What the supervisor's page shows and accepts, as plain data: the operators' tokens and who
//! presented one, the actions a page may ask for (validated before anything is sent), a running
//! job's age against its class's usual run time, the run-time histogram, the alerts' runbook
//! links and the timeline's filter. The page (`src/io/web.rs`) only draws what these say.

use crate::maintenance::Scope;
use crate::timeline::TimelineEntry;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// A token shorter than this is refused: it could be guessed.
pub const MIN_TOKEN_LEN: usize = 16;

/// The operators' tokens: one `name:token` a line (`#` starts a comment). The name is who the
/// timeline says did an action.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tokens {
    entries: Vec<(String, String)>,
}

impl Tokens {
    /// Reads a token file's text; every bad line is named (by number), none is skipped quietly.
    pub fn parse(text: &str) -> Result<Tokens, String> {
        let mut entries = Vec::new();
        let mut problems = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let n = i + 1;
            match line.split_once(':') {
                Some((name, token)) if !name.trim().is_empty() && token.trim().len() >= MIN_TOKEN_LEN => {
                    entries.push((name.trim().to_string(), token.trim().to_string()));
                }
                Some((name, _)) if name.trim().is_empty() => problems.push(format!("line {n}: no name before `:`")),
                Some(_) => problems.push(format!("line {n}: a token shorter than {MIN_TOKEN_LEN} characters")),
                None => problems.push(format!("line {n}: not `name:token`")),
            }
        }
        if !problems.is_empty() {
            return Err(problems.join("; "));
        }
        if entries.is_empty() {
            return Err("no token in it (one `name:token` a line)".into());
        }
        Ok(Tokens { entries })
    }

    /// Who presented `token`, if anyone. Each comparison takes the same time whatever the
    /// token, so that timing does not tell how much of a guess was right.
    pub fn who(&self, token: &str) -> Option<&str> {
        let mut found = None;
        for (name, t) in &self.entries {
            if same(t.as_bytes(), token.as_bytes()) && found.is_none() {
                found = Some(name.as_str());
            }
        }
        found
    }
}

fn same(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        diff |= (a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0xff)) as usize;
    }
    diff == 0
}

/// What a page asks for (the body of `POST /api/action`).
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct ActionForm {
    /// `drain`, `cordon`, `undrain`, `release` (a quarantine) or `requeue` (dead letters).
    pub verb: String,
    /// The host concerned (required but for a requeue).
    #[serde(default)]
    pub host: String,
    /// A unit (full name or instance); empty: the whole host.
    #[serde(default)]
    pub unit: String,
    /// The class of a requeue.
    #[serde(default)]
    pub class: String,
    /// The dead letters' reason a requeue takes; empty: all of the class's.
    #[serde(default)]
    pub dead_reason: String,
    /// A drain's deadline, such as `10m`.
    #[serde(default)]
    pub deadline: String,
    pub reason: String,
}

/// An action, validated.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    Drain {
        host: String,
        scope: Scope,
        deadline: Duration,
        reason: String,
    },
    Cordon {
        host: String,
        scope: Scope,
        reason: String,
    },
    /// Undrain and quarantine release are one order to the supervisor: lift what holds the scope.
    Undrain {
        host: String,
        scope: Scope,
        reason: String,
    },
    Requeue {
        class: String,
        dead_reason: Option<String>,
        reason: String,
    },
}

/// The longest drain deadline a page may set.
pub const MAX_DEADLINE: Duration = Duration::from_secs(7 * 86_400);

impl ActionForm {
    /// Checks the form against the fleet it is about (`hosts`, `classes`, the dead-letter
    /// `reasons`): every problem at once.
    pub fn validate(&self, hosts: &[String], classes: &[String], reasons: &[&str]) -> Result<Action, Vec<String>> {
        let mut problems = Vec::new();
        let reason = self.reason.trim().to_string();
        if reason.is_empty() {
            problems.push("a reason is required (it goes into the timeline)".to_string());
        }
        let unit = self.unit.trim();
        let host = self.host.trim().to_string();
        let needs_host = self.verb != "requeue";
        if needs_host && host.is_empty() {
            problems.push("which host?".into());
        } else if needs_host && !hosts.contains(&host) {
            problems.push(format!("no host {host} in the fleet (hosts: {})", hosts.join(", ")));
        }
        let scope = if unit.is_empty() { Scope::Host(host.clone()) } else { Scope::Unit(unit.to_string()) };
        let action = match self.verb.as_str() {
            "drain" => match crate::duration::parse(self.deadline.trim()) {
                Ok(d) if d <= MAX_DEADLINE => Some(Action::Drain { host, scope, deadline: d, reason }),
                Ok(_) => {
                    problems.push(format!("a deadline of at most {}", crate::duration::format(MAX_DEADLINE)));
                    None
                }
                Err(e) => {
                    problems.push(format!("deadline `{}`: {e}", self.deadline.trim()));
                    None
                }
            },
            "cordon" => Some(Action::Cordon { host, scope, reason }),
            "undrain" => Some(Action::Undrain { host, scope, reason }),
            "release" if unit.is_empty() => {
                problems.push("release which unit? (a quarantine is a unit's)".into());
                None
            }
            "release" => Some(Action::Undrain { host, scope, reason }),
            "requeue" => {
                let class = self.class.trim().to_string();
                if !classes.contains(&class) {
                    problems.push(format!("no class `{class}` (classes: {})", classes.join(", ")));
                }
                let r = self.dead_reason.trim();
                if !r.is_empty() && !reasons.contains(&r) {
                    problems.push(format!("`{r}` is not a dead-letter reason (one of {})", reasons.join(", ")));
                }
                let dead_reason = (!r.is_empty()).then(|| r.to_string());
                Some(Action::Requeue { class, dead_reason, reason })
            }
            v => {
                problems.push(format!("no action `{v}` (drain, cordon, undrain, release, requeue)"));
                None
            }
        };
        match action {
            Some(a) if problems.is_empty() => Ok(a),
            _ => Err(problems),
        }
    }
}

/// Run times kept per class for the page's histogram.
pub const CHART_DURATIONS: usize = 200;
/// Drift scores kept per class (one an evaluation).
pub const CHART_SCORES: usize = 240;

/// What one supervisor keeps of a class for the page's charts: the recent run times it saw, the
/// fleet-wide drift score at each evaluation, and the baseline.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ClassChart {
    pub durations: std::collections::VecDeque<f64>,
    /// (ms since the epoch, score 0..1; 1 is the alarm threshold).
    pub scores: std::collections::VecDeque<(i64, f64)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<crate::drift::Baseline>,
}

impl ClassChart {
    pub fn duration(&mut self, d: f64) {
        if d.is_finite() && d > 0.0 {
            self.durations.push_back(d);
            if self.durations.len() > CHART_DURATIONS {
                self.durations.pop_front();
            }
        }
    }

    pub fn score(&mut self, at_ms: i64, score: f64, baseline: Option<crate::drift::Baseline>) {
        self.scores.push_back((at_ms, if score.is_finite() { score.clamp(0.0, 1.0) } else { 0.0 }));
        if self.scores.len() > CHART_SCORES {
            self.scores.pop_front();
        }
        self.baseline = baseline;
    }
}

/// Who the timeline says did an action from the page: the token's name and where it came from.
pub fn who(name: &str, from: &str) -> String {
    format!("{name} (page, from {from})")
}

/// How a running job's age compares with its class's usual run time.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Age {
    /// Age over the usual run time; `None` while the class has no usual run time yet.
    pub ratio: Option<f64>,
    /// `usual`, `long` (past 1.5x) or `very long` (past 3x); `learning` without a usual time.
    pub label: &'static str,
}

pub fn age(age_s: f64, usual_s: Option<f64>) -> Age {
    match usual_s.filter(|u| *u > 0.0 && u.is_finite()) {
        None => Age { ratio: None, label: "learning" },
        Some(u) => {
            let ratio = age_s.max(0.0) / u;
            let label = if ratio > 3.0 {
                "very long"
            } else if ratio > 1.5 {
                "long"
            } else {
                "usual"
            };
            Age { ratio: Some(ratio), label }
        }
    }
}

/// One bar of a run-time histogram: durations in `[lo_s, hi_s)`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Bin {
    pub lo_s: f64,
    pub hi_s: f64,
    pub count: usize,
}

/// A histogram of run times on a log scale (run times spread over orders of magnitude): `bins`
/// bars of equal ratio from the shortest to the longest duration, widened to hold `marks` (the
/// baseline's median and p99) so that they can be drawn on it. Non-finite and non-positive
/// durations are left out.
pub fn histogram(durations: &[f64], marks: &[f64], bins: usize) -> Vec<Bin> {
    let ok = |d: &&f64| d.is_finite() && **d > 0.0;
    let values: Vec<f64> = durations.iter().filter(ok).copied().collect();
    if values.is_empty() || bins == 0 {
        return Vec::new();
    }
    let all = values.iter().chain(marks.iter().filter(ok));
    let (lo, hi) = all.fold((f64::INFINITY, 0.0f64), |(lo, hi), &d| (lo.min(d), hi.max(d)));
    let (lo, hi) = if hi / lo < 1.01 { (lo / 1.1, hi * 1.1) } else { (lo, hi * 1.000_001) };
    let step = (hi / lo).ln() / bins as f64;
    let mut out: Vec<Bin> = (0..bins)
        .map(|i| Bin { lo_s: lo * (step * i as f64).exp(), hi_s: lo * (step * (i + 1) as f64).exp(), count: 0 })
        .collect();
    for d in values {
        let i = (((d / lo).ln() / step) as usize).min(bins - 1);
        out[i].count += 1;
    }
    out
}

/// An alert's runbook: its own `runbook_url` annotation, or the page for its name under
/// `base` (`LatencyDrift` -> `<base>/latency-drift.md`).
pub fn runbook(name: &str, annotations: &BTreeMap<String, String>, base: Option<&str>) -> Option<String> {
    if let Some(u) = annotations.get("runbook_url").filter(|u| !u.is_empty()) {
        return Some(u.clone());
    }
    let base = base?.trim_end_matches('/');
    let mut slug = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            slug.push('-');
        }
        slug.extend(c.to_lowercase());
    }
    Some(format!("{base}/{slug}.md"))
}

/// The timeline's filter: entries of `host` (empty: every host) about `class` (empty: every
/// class; a class's entries are those about the class itself or one of its units,
/// `<prefix>@<class>-<n>.service`), newest first, at most `limit`.
pub fn filter_timeline(entries: &[TimelineEntry], host: &str, class: &str, limit: usize) -> Vec<TimelineEntry> {
    let about_class = |e: &TimelineEntry| {
        class.is_empty()
            || e.scope == format!("class {class}")
            || e.scope.split_once('@').is_some_and(|(_, rest)| {
                rest.strip_prefix(class)
                    .and_then(|r| r.strip_prefix('-'))
                    .is_some_and(|n| n.trim_end_matches(".service").chars().all(|c| c.is_ascii_digit()))
            })
    };
    entries
        .iter()
        .rev()
        .filter(|e| host.is_empty() || e.host == host)
        .filter(|e| about_class(e))
        .take(limit)
        .cloned()
        .collect()
}

/// Where a quarantine or pause stands: on hold until its probe, or probing.
pub fn probe_state(o: &crate::maintenance::Order) -> String {
    match (o.probing_since_ms, o.deadline_ms) {
        (Some(since), _) => format!("probing since {} (probe {})", crate::job::rfc3339(since), o.probes),
        (None, Some(at)) => format!("on hold until {}, then one probe job", crate::job::rfc3339(at)),
        (None, None) => "on hold".into(),
    }
}

/// The drain of a whole host among the orders of the fleet (`(host, progress)`), if there is one:
/// what the page's "safe to power off" banner is about.
pub fn host_drain<'a>(
    orders: &'a [(String, crate::maintenance::Progress)],
    host: &str,
) -> Option<&'a crate::maintenance::Progress> {
    orders.iter().map(|(_, p)| p).find(|p| {
        p.host == host
            && p.order
                .as_ref()
                .is_some_and(|o| o.kind == crate::maintenance::Kind::Drain && o.scope == Scope::Host(host.to_string()))
    })
}

/// One wave of a rollout as the timeline tells it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Wave {
    /// `wave 2/4 (gpu-3, gpu-4)`.
    pub label: String,
    /// `in progress` (draining, changing, soaking), `done`, `interrupted` or `halted`.
    pub state: &'static str,
    pub at_ms: i64,
    pub who: String,
    pub why: String,
}

/// The rollouts' waves from the notes `drover rollout` leaves in each wave's hosts' timelines
/// (`rollout <wave>: drain`, `rollout <wave>: done`, `rollout <wave>: interrupted after <step>`,
/// `rollout halted at <wave>`): each wave's newest state since `since_ms`, newest first.
pub fn rollout_waves(entries: &[TimelineEntry], since_ms: i64) -> Vec<Wave> {
    let mut newest: BTreeMap<String, Wave> = BTreeMap::new();
    for e in entries.iter().filter(|e| e.at_ms >= since_ms) {
        let (label, state) = if let Some(label) = e.what.strip_prefix("rollout halted at ") {
            (label, "halted")
        } else if let Some((label, step)) = e.what.strip_prefix("rollout ").and_then(|r| r.rsplit_once(": ")) {
            match step {
                "drain" => (label, "in progress"),
                "done" => (label, "done"),
                s if s.starts_with("interrupted") => (label, "interrupted"),
                _ => continue,
            }
        } else {
            continue;
        };
        let wave = Wave { label: label.to_string(), state, at_ms: e.at_ms, who: e.who.clone(), why: e.why.clone() };
        match newest.get(label) {
            Some(w) if w.at_ms > e.at_ms => {}
            _ => {
                newest.insert(label.to_string(), wave);
            }
        }
    }
    let mut waves: Vec<Wave> = newest.into_values().collect();
    waves.sort_by(|a, b| b.at_ms.cmp(&a.at_ms).then_with(|| b.label.cmp(&a.label)));
    waves
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_name_who_presented_them_and_bad_lines_are_named() {
        let t = Tokens::parse("# on-call\nalice:0123456789abcdef0123\n\nbob : fedcba9876543210fedc \n").expect("ok");
        // (presented, who)
        let cases: [(&str, Option<&str>); 5] = [
            ("0123456789abcdef0123", Some("alice")),
            ("fedcba9876543210fedc", Some("bob")),
            ("0123456789abcdef012", None),
            ("0123456789abcdef01234", None),
            ("", None),
        ];
        for (presented, who) in cases {
            assert_eq!(t.who(presented), who, "{presented}");
        }
        // (file, the error names)
        let bad: [(&str, &str); 4] = [
            ("alice:short\n", "line 1: a token shorter than 16"),
            ("justatokenwithoutname123\n", "line 1: not `name:token`"),
            ("ok:0123456789abcdef\n:0123456789abcdef\n", "line 2: no name"),
            ("# nothing\n", "no token in it"),
        ];
        for (text, says) in bad {
            let e = Tokens::parse(text).expect_err(text);
            assert!(e.contains(says), "{text:?}: {e}");
        }
    }

    #[test]
    fn actions_are_validated_with_every_problem_at_once() {
        let hosts = vec!["gpu-1".to_string(), "gpu-2".to_string()];
        let classes = vec!["inference".to_string()];
        let reasons = ["poison", "attempts_exhausted"];
        let form = |verb: &str, host: &str, unit: &str, deadline: &str, reason: &str| ActionForm {
            verb: verb.into(),
            host: host.into(),
            unit: unit.into(),
            deadline: deadline.into(),
            reason: reason.into(),
            ..Default::default()
        };
        let ok = form("drain", "gpu-1", "", "10m", "PSU swap").validate(&hosts, &classes, &reasons);
        assert_eq!(
            ok,
            Ok(Action::Drain {
                host: "gpu-1".into(),
                scope: Scope::Host("gpu-1".into()),
                deadline: Duration::from_secs(600),
                reason: "PSU swap".into()
            })
        );
        let release =
            form("release", "gpu-2", "inference-3", "", "fixed the driver").validate(&hosts, &classes, &reasons);
        assert_eq!(
            release,
            Ok(Action::Undrain {
                host: "gpu-2".into(),
                scope: Scope::Unit("inference-3".into()),
                reason: "fixed the driver".into()
            })
        );
        // (form, problems said)
        let bad: Vec<(ActionForm, Vec<&str>)> = vec![
            (form("drain", "gpu-9", "", "soon", " "), vec!["a reason is required", "no host gpu-9", "deadline `soon`"]),
            (form("drain", "gpu-1", "", "30d", "x"), vec!["a deadline of at most 7d"]),
            (form("release", "gpu-1", "", "", "x"), vec!["release which unit?"]),
            (form("reboot", "gpu-1", "", "", "x"), vec!["no action `reboot`"]),
            (form("cordon", "", "", "", "x"), vec!["which host?"]),
            (
                ActionForm {
                    verb: "requeue".into(),
                    class: "training".into(),
                    dead_reason: "bored".into(),
                    reason: "x".into(),
                    ..Default::default()
                },
                vec!["no class `training`", "`bored` is not a dead-letter reason"],
            ),
        ];
        for (f, says) in bad {
            let problems = f.validate(&hosts, &classes, &reasons).expect_err(&f.verb);
            assert_eq!(problems.len(), says.len(), "{problems:?}");
            for (p, s) in problems.iter().zip(&says) {
                assert!(p.contains(s), "{p} should say {s}");
            }
        }
        let requeue = ActionForm {
            verb: "requeue".into(),
            class: "inference".into(),
            reason: "fixed".into(),
            ..Default::default()
        };
        assert_eq!(
            requeue.validate(&hosts, &classes, &reasons),
            Ok(Action::Requeue { class: "inference".into(), dead_reason: None, reason: "fixed".into() })
        );
    }

    #[test]
    fn a_jobs_age_is_read_against_its_classs_usual_run_time() {
        // (age, usual, ratio, label)
        let cases = [
            (10.0, None, None, "learning"),
            (10.0, Some(0.0), None, "learning"),
            (10.0, Some(20.0), Some(0.5), "usual"),
            (30.0, Some(20.0), Some(1.5), "usual"),
            (40.0, Some(20.0), Some(2.0), "long"),
            (70.0, Some(20.0), Some(3.5), "very long"),
        ];
        for (age_s, usual, ratio, label) in cases {
            assert_eq!(age(age_s, usual), Age { ratio, label }, "{age_s} vs {usual:?}");
        }
    }

    #[test]
    fn the_histogram_spans_the_durations_and_the_baseline_marks() {
        let h = histogram(&[1.0, 1.1, 2.5, 3.0, 8.0, f64::NAN, -1.0], &[], 3);
        assert_eq!(h.iter().map(|b| b.count).collect::<Vec<_>>(), [2, 2, 1]);
        assert!((h[0].lo_s - 1.0).abs() < 1e-9 && h[2].hi_s >= 8.0);
        // A p99 mark beyond every duration widens the axis: the marks can be drawn.
        let h = histogram(&[1.0, 3.0], &[1.5, 16.0], 4);
        assert!(h[3].hi_s >= 16.0 && h.iter().map(|b| b.count).sum::<usize>() == 2);
        assert_eq!(h.iter().map(|b| b.count).collect::<Vec<_>>(), [1, 1, 0, 0]);
        // All alike: one bar holds them.
        let h = histogram(&[3.0, 3.0, 3.0], &[], 5);
        assert_eq!(h.iter().map(|b| b.count).sum::<usize>(), 3);
        assert!(histogram(&[], &[1.0], 5).is_empty());
    }

    #[test]
    fn charts_keep_the_newest_and_only_real_numbers() {
        let mut c = ClassChart::default();
        for i in 0..(CHART_DURATIONS + 5) {
            c.duration(i as f64 + 1.0);
        }
        c.duration(f64::NAN);
        c.duration(0.0);
        assert_eq!(c.durations.len(), CHART_DURATIONS);
        assert_eq!(c.durations.front(), Some(&6.0));
        c.score(1, 2.5, None);
        c.score(2, f64::NAN, None);
        assert_eq!(c.scores.iter().copied().collect::<Vec<_>>(), [(1, 1.0), (2, 0.0)]);
    }

    #[test]
    fn runbooks_are_the_alerts_own_or_named_after_them() {
        let mut own = BTreeMap::new();
        own.insert("runbook_url".to_string(), "https://wiki/x".to_string());
        // (name, annotations, base, link)
        let none = BTreeMap::new();
        type Case<'a> = (&'a str, &'a BTreeMap<String, String>, Option<&'a str>, Option<&'a str>);
        let cases: [Case; 4] = [
            ("LatencyDrift", &own, Some("https://w/r"), Some("https://wiki/x")),
            ("LatencyDrift", &none, Some("https://w/r/"), Some("https://w/r/latency-drift.md")),
            ("WorkerQuarantined", &none, Some("docs"), Some("docs/worker-quarantined.md")),
            ("LatencyDrift", &none, None, None),
        ];
        for (name, ann, base, link) in cases {
            assert_eq!(runbook(name, ann, base).as_deref(), link, "{name}");
        }
    }

    #[test]
    fn a_quarantines_probe_state_and_a_hosts_drain_are_told() {
        use crate::maintenance::{Kind, Order, Progress};
        let order = |kind: Kind, scope: Scope, deadline_ms: Option<i64>, probing: Option<i64>| Order {
            id: "o".into(),
            kind,
            scope,
            reason: "r".into(),
            who: "w".into(),
            at_ms: 0,
            deadline_ms,
            probing_since_ms: probing,
            probes: probing.map_or(0, |_| 2),
        };
        let q = |d, p| probe_state(&order(Kind::Quarantine, Scope::Unit("w-1".into()), d, p));
        assert_eq!(q(Some(1_000), None), "on hold until 1970-01-01T00:00:01.000Z, then one probe job");
        assert_eq!(q(Some(1_000), Some(2_000)), "probing since 1970-01-01T00:00:02.000Z (probe 2)");
        assert_eq!(q(None, None), "on hold");
        let progress = |host: &str, o: Order, safe: bool| {
            (
                host.to_string(),
                Progress { order: Some(o), host: host.into(), safe_to_power_off: safe, ..Default::default() },
            )
        };
        let orders = vec![
            progress("a", order(Kind::Drain, Scope::Unit("w-1".into()), None, None), false),
            progress("a", order(Kind::Cordon, Scope::Host("a".into()), None, None), false),
            progress("b", order(Kind::Drain, Scope::Host("b".into()), None, None), true),
        ];
        // (host, whether a host drain is found, safe to power off)
        let cases = [("a", false, false), ("b", true, true), ("c", false, false)];
        for (host, found, safe) in cases {
            let d = host_drain(&orders, host);
            assert_eq!((d.is_some(), d.is_some_and(|p| p.safe_to_power_off)), (found, safe), "{host}");
        }
    }

    #[test]
    fn rollout_waves_are_read_from_their_notes() {
        let e = |at_ms: i64, what: &str| TimelineEntry {
            at: String::new(),
            at_ms,
            host: "gpu-1".into(),
            who: "ops".into(),
            what: what.into(),
            why: "driver 550".into(),
            scope: "host gpu-1".into(),
        };
        let notes = vec![
            e(1, "rollout wave 1/3 (gpu-1): drain"),
            e(2, "rollout wave 1/3 (gpu-1): done"),
            e(3, "rollout wave 2/3 (gpu-2, gpu-3): drain"),
            e(3, "drain (deadline 2026-12-01T10:00:00Z)"),
            e(4, "rollout wave 0/1 (old): drain"),
            e(5, "rollout halted at wave 2/3 (gpu-2, gpu-3)"),
            e(6, "rollout wave 9/9 (x): interrupted after the change"),
        ];
        let got: Vec<(String, &str)> = rollout_waves(&notes, 2).into_iter().map(|w| (w.label, w.state)).collect();
        // (label, state), newest first; wave 0/1 too (its note is after `since`), wave 1/3 done.
        let want = [
            ("wave 9/9 (x)", "interrupted"),
            ("wave 2/3 (gpu-2, gpu-3)", "halted"),
            ("wave 0/1 (old)", "in progress"),
            ("wave 1/3 (gpu-1)", "done"),
        ];
        assert_eq!(got, want.map(|(l, s)| (l.to_string(), s)));
        assert!(rollout_waves(&notes, 7).is_empty());
    }

    #[test]
    fn the_timeline_is_filtered_by_host_and_class_newest_first() {
        let e = |at_ms: i64, host: &str, scope: &str| TimelineEntry {
            at: String::new(),
            at_ms,
            host: host.into(),
            who: "drover".into(),
            what: format!("w{at_ms}"),
            why: String::new(),
            scope: scope.into(),
        };
        let all = vec![
            e(1, "a", "host a"),
            e(2, "a", "drover@inference-1.service"),
            e(3, "b", "drover@inference-12.service"),
            e(4, "b", "drover@inference-big-1.service"),
            e(5, "b", "class inference"),
            e(6, "a", "class training"),
        ];
        let at = |v: Vec<TimelineEntry>| v.iter().map(|e| e.at_ms).collect::<Vec<_>>();
        // (host, class, limit, entries)
        let cases: [(&str, &str, usize, Vec<i64>); 5] = [
            ("", "", 10, vec![6, 5, 4, 3, 2, 1]),
            ("a", "", 10, vec![6, 2, 1]),
            ("", "inference", 10, vec![5, 3, 2]),
            ("b", "inference", 10, vec![5, 3]),
            ("", "", 2, vec![6, 5]),
        ];
        for (host, class, limit, want) in cases {
            assert_eq!(at(filter_timeline(&all, host, class, limit)), want, "{host}/{class}");
        }
    }
}
