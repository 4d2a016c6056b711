//! The broker's side of a deployment, decided without a broker: which arguments each queue is
//! declared with (classic or quorum), the delivery limit a class's work queue gets, which broker
//! policies contradict the configuration, what start-up can say of the consumer timeout, which
//! node of a cluster to try next, and when a delay rung holds a retry past its due time.
//!
//! Queue arguments come out as plain `(name, value)` pairs; `io::amqp` copies them onto AMQP
//! field tables. The arguments of a classic queue are exactly those of Drover before quorum
//! queues existed, so that existing queues are declared again without a mismatch.

use crate::backoff::Backoff;
use std::time::Duration;

/// The type of every durable queue Drover declares (work, dead letters, retry delays, leases).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum QueueType {
    /// One node's queue (mirroring, if any, is the broker's policy, not ours).
    #[default]
    Classic,
    /// A replicated Raft queue: survives the loss of a minority of a cluster's nodes.
    Quorum,
}

impl QueueType {
    pub fn parse(s: &str) -> Option<QueueType> {
        match s {
            "classic" => Some(QueueType::Classic),
            "quorum" => Some(QueueType::Quorum),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            QueueType::Classic => "classic",
            QueueType::Quorum => "quorum",
        }
    }
}

/// A queue argument's value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Arg {
    Str(String),
    Int(i64),
    Bool(bool),
}

pub type Args = Vec<(&'static str, Arg)>;

/// Returns of one message without a decision (drains, lost channels, broker failovers) that a
/// work queue allows beyond the class's own budget before the broker dead-letters it.
pub const UNCHARGED_RETURNS: u32 = 20;

/// The delivery limit of queues nobody consumes with requeues (dead letters, delays, leases):
/// explicit, so that a broker's default (RabbitMQ 4 puts 20 on every quorum queue) never
/// drops anything there.
pub const QUIET_QUEUE_DELIVERY_LIMIT: u32 = 1000;

/// The delivery limit of a class's work queue on quorum queues. The broker's count grows only
/// when a delivery comes back without a decision: a retry or a hand-back is a new message, so
/// `max_attempts` charged failures never reach it. Drover's own limits come first (a job that
/// kills `poison_after` workers is dead-lettered as `poison`); the broker's is the backstop for
/// a job that keeps coming back anyway, which it then dead-letters (reason `delivery_limit`)
/// into the class's dead-letter queue instead of dropping it.
pub fn delivery_limit(max_attempts: u32, poison_after: u32) -> u32 {
    max_attempts.saturating_add(poison_after).saturating_add(UNCHARGED_RETURNS)
}

/// What the queue holds, for its arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QueueRole<'a> {
    /// A class's work queue; its dead letters go to `dead` (quorum queues only).
    Work { dead: &'a str, delivery_limit: u32 },
    /// A class's dead-letter queue.
    Dead,
    /// A rung of the retry-delay ladder: its messages expire after `ttl` back to the routing key
    /// they were published with.
    Delay { ttl: Duration },
    /// A running job's lease copy: it expires after `ttl` back to the work queue `work`; the
    /// queue itself goes once unused for `expires`.
    Lease { work: &'a str, ttl: Duration, expires: Duration },
    /// The fleet judge's queue: every job event and every host's report, delivered to one
    /// consumer at a time (the broker's election of the judge); at most `max_length` wait while
    /// no supervisor consumes, the oldest dropped.
    Judge { max_length: i64 },
    /// The judge's latest snapshot: one message, each newer one pushing out the one before.
    JudgeState,
    /// A host's durable queue of requests (drain, cordon, ... orders from the fleet).
    Requests,
}

fn ms(d: Duration) -> Arg {
    Arg::Int(d.as_millis().min(i64::MAX as u128) as i64)
}

/// The arguments of a durable queue of `role`. `expires` is `broker.queue_expires`
/// (throw-away environments), which a lease queue's own expiry replaces.
pub fn queue_args(kind: QueueType, role: &QueueRole, expires: Option<Duration>) -> Args {
    let mut args: Args = Vec::new();
    let dead_letter_to = |args: &mut Args, key: Option<&str>| {
        args.push(("x-dead-letter-exchange", Arg::Str(String::new())));
        if let Some(key) = key {
            args.push(("x-dead-letter-routing-key", Arg::Str(key.to_string())));
        }
    };
    match role {
        QueueRole::Work { dead, .. } => {
            if kind == QueueType::Quorum {
                dead_letter_to(&mut args, Some(dead));
            }
        }
        QueueRole::Dead | QueueRole::Requests => {}
        QueueRole::Judge { max_length } => {
            args.push(("x-single-active-consumer", Arg::Bool(true)));
            args.push(("x-max-length", Arg::Int(*max_length)));
        }
        QueueRole::JudgeState => args.push(("x-max-length", Arg::Int(1))),
        QueueRole::Delay { ttl } => {
            args.push(("x-message-ttl", ms(*ttl)));
            dead_letter_to(&mut args, None);
        }
        QueueRole::Lease { work, ttl, .. } => {
            args.push(("x-message-ttl", ms(*ttl)));
            dead_letter_to(&mut args, Some(work));
        }
    }
    match role {
        QueueRole::Lease { expires, .. } => args.push(("x-expires", ms(*expires))),
        _ => {
            if let Some(e) = expires {
                args.push(("x-expires", ms(e)));
            }
        }
    }
    if kind == QueueType::Quorum {
        args.push(("x-queue-type", Arg::Str("quorum".into())));
        let limit = match role {
            QueueRole::Work { delivery_limit, .. } => *delivery_limit,
            _ => QUIET_QUEUE_DELIVERY_LIMIT,
        };
        args.push(("x-delivery-limit", Arg::Int(i64::from(limit))));
        if args.iter().any(|(k, _)| *k == "x-dead-letter-exchange") {
            // The default, at-most-once, drops a dead letter the target cannot take; at-least-once
            // keeps it until it is confirmed, and requires reject-publish.
            args.push(("x-dead-letter-strategy", Arg::Str("at-least-once".into())));
            args.push(("x-overflow", Arg::Str("reject-publish".into())));
        }
    }
    args
}

// ------------------------------------------------------------------ policies --

/// One broker policy (or operator policy), as the management API lists it.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    pub name: String,
    /// `"policy"` or `"operator policy"`, for messages.
    pub kind: &'static str,
    /// A regular expression over queue names; matched here only in the forms that matter for
    /// prefixes (see [`pattern_may_match`]).
    pub pattern: String,
    /// `queues`, `all`, `exchanges`, `classic_queues`, `quorum_queues`, ...
    pub apply_to: String,
    pub definition: serde_json::Map<String, serde_json::Value>,
}

/// What one policy does against the configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// Refuse to start (`true`) or warn.
    pub refuse: bool,
    pub message: String,
}

/// Whether a policy pattern may match some queue name starting with `prefix.`. Policies are
/// Erlang regular expressions; without a regex engine here this errs on the side of a match
/// for anything it cannot rule out: a pattern anchored with `^` matches only if its literal
/// start agrees with the prefix; an unanchored one may match anywhere.
pub fn pattern_may_match(pattern: &str, prefix: &str) -> bool {
    let Some(rest) = pattern.strip_prefix('^') else { return true };
    // The literal start, one entry per character: `None` for a `.`, which matches any.
    let mut literal: Vec<Option<char>> = Vec::new();
    let mut chars = rest.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            // `\-`, `\.`: that character itself; `\d`, `\w` and the like end the literal part.
            '\\' => match chars.peek().copied() {
                Some(n) if !n.is_ascii_alphanumeric() => {
                    literal.push(Some(n));
                    chars.next();
                }
                _ => break,
            },
            '.' => literal.push(None),
            c if "*+?()[]{}|$^".contains(c) => {
                // A quantifier after the literal part makes its last character optional.
                if matches!(c, '*' | '?' | '{') {
                    literal.pop();
                }
                break;
            }
            c => literal.push(Some(c)),
        }
    }
    let want = format!("{prefix}.");
    literal.iter().zip(want.chars()).all(|(p, w)| match p {
        Some(p) => *p == w,
        None => true,
    })
}

/// What the broker's policies change in Drover's queues (`prefix`), given the queue type and
/// the delivery limits of the configuration: a delivery limit that would drop or dead-letter
/// jobs early, a consumer timeout shorter than the configured one (it closes channels under
/// long jobs), a queue type or length limit that contradicts the declared one.
pub fn check_policies(
    policies: &[Policy],
    prefix: &str,
    kind: QueueType,
    consumer_timeout: Duration,
    min_delivery_limit: u32,
) -> Vec<Finding> {
    let mut out = Vec::new();
    for p in policies {
        let applies = matches!(p.apply_to.as_str(), "queues" | "all")
            || (p.apply_to == "quorum_queues" && kind == QueueType::Quorum)
            || (p.apply_to == "classic_queues" && kind == QueueType::Classic);
        if !applies || !pattern_may_match(&p.pattern, prefix) {
            continue;
        }
        let what = format!("broker {} {:?} (pattern {:?})", p.kind, p.name, p.pattern);
        for (key, value) in &p.definition {
            let int = value.as_i64();
            match key.as_str() {
                "delivery-limit" if kind == QueueType::Quorum => {
                    if let Some(n) = int.filter(|n| *n >= 0 && (*n as u64) < u64::from(min_delivery_limit)) {
                        out.push(Finding {
                            refuse: true,
                            message: format!(
                                "{what} sets delivery-limit {n}, below Drover's {min_delivery_limit}: the broker \
                                 would dead-letter jobs that drains and failovers return, before Drover decides; \
                                 raise it or exclude {prefix}.* from the policy"
                            ),
                        });
                    }
                }
                "consumer-timeout" => {
                    if let Some(n) = int.filter(|n| *n >= 0 && (*n as u128) < consumer_timeout.as_millis()) {
                        out.push(Finding {
                            refuse: false,
                            message: format!(
                                "{what} sets consumer-timeout {n} ms, shorter than broker.consumer_timeout \
                                 ({} ms): set broker.consumer_timeout to it, so that long jobs run under leases",
                                consumer_timeout.as_millis()
                            ),
                        });
                    }
                }
                "queue-type" if value.as_str().is_some_and(|t| t != kind.as_str()) => {
                    out.push(Finding {
                        refuse: true,
                        message: format!(
                            "{what} sets queue-type {value}, but broker.queue_type is {:?}",
                            kind.as_str()
                        ),
                    });
                }
                "max-length" | "max-length-bytes" | "message-ttl" | "expires" => {
                    out.push(Finding {
                        refuse: false,
                        message: format!(
                            "{what} sets {key} {value} on Drover's queues: jobs may be dropped or expire \
                             before they run"
                        ),
                    });
                }
                "overflow" if value.as_str() == Some("drop-head") => {
                    out.push(Finding {
                        refuse: false,
                        message: format!("{what} sets overflow drop-head: a full queue drops its oldest jobs"),
                    });
                }
                _ => {}
            }
        }
    }
    out
}

/// The first RabbitMQ version with per-queue consumer timeouts (the `consumer-timeout` policy
/// key and the `x-consumer-timeout` argument); before it, only the node-wide setting.
pub const PER_QUEUE_CONSUMER_TIMEOUT_SINCE: (u32, u32, u32) = (3, 11, 15);

/// Whether RabbitMQ `version` (as the management API says it, `3.10.8`) is at least `at`;
/// `None` when it cannot be read.
pub fn version_at_least(version: &str, at: (u32, u32, u32)) -> Option<bool> {
    let mut parts = version.trim().split(['.', '-', '+']).map(|p| p.parse::<u32>().ok());
    let major = parts.next()??;
    let minor = parts.next().flatten().unwrap_or(0);
    let patch = parts.next().flatten().unwrap_or(0);
    Some((major, minor, patch) >= at)
}

/// What start-up says of the broker's consumer timeout: the node-wide `consumer_timeout` is
/// shown neither over AMQP nor by the management API (not in `/api/overview`, `/api/nodes`,
/// nor the definitions), so `broker.consumer_timeout` is taken as said; a broker older than
/// [`PER_QUEUE_CONSUMER_TIMEOUT_SINCE`] has no per-queue timeout either (it refuses a
/// `consumer-timeout` policy as an unknown setting).
pub fn consumer_timeout_note(version: Option<&str>, configured: Duration) -> String {
    let said = format!(
        "broker.consumer_timeout ({} ms) is taken as said: keep it no longer than the broker's consumer_timeout \
         (rabbitmq.conf), or long jobs' channels are closed under them",
        configured.as_millis()
    );
    let (a, b, c) = PER_QUEUE_CONSUMER_TIMEOUT_SINCE;
    match version.map(|v| (v, version_at_least(v, PER_QUEUE_CONSUMER_TIMEOUT_SINCE))) {
        Some((v, Some(false))) => format!(
            "RabbitMQ {v} shows its node-wide consumer_timeout neither over AMQP nor in its management API, and has \
             no per-queue consumer timeout (from {a}.{b}.{c}): {said}"
        ),
        Some((v, Some(true))) => format!(
            "RabbitMQ {v} shows its node-wide consumer_timeout neither over AMQP nor in its management API \
             (consumer-timeout policies are checked): {said}"
        ),
        _ => format!("the broker's version is unknown and its consumer_timeout cannot be read: {said}"),
    }
}

// ------------------------------------------------------------------ failover --

/// Which node of `broker.url` to connect to next, and how long to wait first.
///
/// The first node is drawn at random (clients spread over the cluster); after a lost connection
/// the next try goes to the next node, so a dead node costs one failed connect; within a round
/// of the nodes a failed connect waits a short jittered delay (the backoff's first window), and
/// each round that tried every node without luck doubles the window, up to the cap (full
/// jitter). A success resets the rounds and keeps the node.
///
/// A connection that is lost soon after it was made (a node that accepts connections but fails
/// every channel: a queue whose node is down, a declaration the broker refuses) is a failure
/// too: the next connect waits a growing jittered delay instead of looping at once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rotation {
    nodes: usize,
    current: usize,
    failures: u32,
    /// Connections in a row that were lost before [`STABLE_SESSION`].
    short: u32,
}

/// A connection that lasted this long was a working one: losing it reconnects at once.
pub const STABLE_SESSION: Duration = Duration::from_secs(10);

impl Rotation {
    /// `unit` in `[0, 1)` picks the first node.
    pub fn new(nodes: usize, unit: f64) -> Rotation {
        let nodes = nodes.max(1);
        let unit = if unit.is_finite() { unit.clamp(0.0, 1.0) } else { 0.0 };
        Rotation { nodes, current: ((unit * nodes as f64) as usize).min(nodes - 1), failures: 0, short: 0 }
    }

    /// The node to try now.
    pub fn current(&self) -> usize {
        self.current
    }

    /// A connect to the current node failed: moves to the next node and returns the delay before
    /// trying it.
    pub fn failed(&mut self, backoff: &Backoff, unit: f64) -> Duration {
        self.failures = self.failures.saturating_add(1);
        self.current = (self.current + 1) % self.nodes;
        if self.failures.is_multiple_of(self.nodes as u32) {
            backoff.delay(self.failures / self.nodes as u32, unit)
        } else {
            backoff.delay(1, unit)
        }
    }

    /// Connected to the current node.
    pub fn connected(&mut self) {
        self.failures = 0;
    }

    /// The connection was lost after `lasted`: the next try goes to another node (for one node,
    /// the same), after the returned delay: none after a working connection, a growing jittered
    /// one after each connection in a row that was lost early.
    pub fn lost(&mut self, lasted: Duration, backoff: &Backoff, unit: f64) -> Duration {
        self.current = (self.current + 1) % self.nodes;
        if lasted >= STABLE_SESSION {
            self.short = 0;
            return Duration::ZERO;
        }
        self.short = self.short.saturating_add(1);
        backoff.delay(self.short, unit)
    }
}

// --------------------------------------------------------------- delay rungs --

/// The header a message carries in a delay rung: when it is due back on its work queue (ms since
/// the epoch, the publisher's clock). Set by every publish into a rung.
pub const H_DUE: &str = "x-drover-due-at-ms";

/// The shortest wait between two looks at one rung by one process.
pub const RUNG_LOOK_GAP: Duration = Duration::from_secs(5);

/// At most this many messages are moved out of one rung per look; the next look comes at once.
pub const RUNG_MOVES_PER_LOOK: u32 = 100;

/// How long past its due time a message may still sit in a rung before Drover moves it on
/// itself: the broker's own lateness and the difference between two hosts' clocks (the
/// publisher stamped the due time, another host may judge it).
pub fn rung_grace(ttl: Duration) -> Duration {
    (ttl / 4).clamp(RUNG_LOOK_GAP, Duration::from_secs(60))
}

/// A rung's head, as a look finds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RungHead {
    /// Past its due time by more than the grace: the broker did not expire it (a quorum queue
    /// whose expiry stalled); moved on to its work queue by Drover.
    Overdue,
    /// Not yet: the broker should expire it by `due_at_ms`; nothing behind it can be overdue
    /// before it is (one rung, one TTL, first in first out).
    NotYet { due_at_ms: i64 },
    /// No due time (published by an older Drover or by hand): given back, never judged.
    Unstamped,
}

/// What the head message of rung of `ttl` is at `now_ms`, from its [`H_DUE`] header.
pub fn rung_head(due_at_ms: Option<i64>, now_ms: i64, ttl: Duration) -> RungHead {
    let Some(due) = due_at_ms else { return RungHead::Unstamped };
    let grace = rung_grace(ttl).as_millis() as i64;
    if now_ms > due.saturating_add(grace) {
        RungHead::Overdue
    } else {
        RungHead::NotYet { due_at_ms: due }
    }
}

/// What one look at a rung found once it stopped moving messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RungLook {
    /// Nothing left in it.
    Empty,
    /// Its head is not due yet (given back).
    NotYet { due_at_ms: i64 },
    /// Its head carries no due time (given back).
    Unstamped,
    /// It moved [`RUNG_MOVES_PER_LOOK`] messages and may hold more.
    Full,
    /// The broker failed the look.
    Failed,
}

/// The delay rungs one process has published into and when to look at each next: the guard
/// against a rung that holds its messages past their TTL (RabbitMQ's quorum queues can leave
/// them there after a leader change until the next command reaches the queue).
///
/// A rung is watched from the first publish into it until a look finds it empty or unjudgeable.
/// A look whose head is not due yet comes back when that head would be overdue, and not sooner:
/// each message is then taken and given back at most once per watching process before its due
/// time (a quorum rung's delivery limit counts those returns).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Rungs {
    watched: std::collections::BTreeMap<String, Watch>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
struct Watch {
    ttl: Duration,
    look_at_ms: i64,
}

impl Rungs {
    /// A message goes into rung `name` (of `ttl`) at `now_ms`: returns its due time, and
    /// watches the rung, first looked at [`RUNG_LOOK_GAP`] later. A rung already watched keeps
    /// its plan: the new message is behind the head the plan was made for.
    pub fn published(&mut self, name: &str, ttl: Duration, now_ms: i64) -> i64 {
        let first = now_ms + RUNG_LOOK_GAP.as_millis() as i64;
        self.watched.entry(name.to_string()).or_insert(Watch { ttl, look_at_ms: first });
        now_ms.saturating_add(ttl.as_millis() as i64)
    }

    /// The rungs to look at now, with their TTLs.
    pub fn due(&self, now_ms: i64) -> Vec<(String, Duration)> {
        self.watched.iter().filter(|(_, w)| w.look_at_ms <= now_ms).map(|(n, w)| (n.clone(), w.ttl)).collect()
    }

    /// When the next look is due, if any rung is watched.
    pub fn next_look_ms(&self) -> Option<i64> {
        self.watched.values().map(|w| w.look_at_ms).min()
    }

    /// Records what a look at `name` found at `now_ms`, and plans the next.
    pub fn looked(&mut self, name: &str, found: RungLook, now_ms: i64) {
        let Some(w) = self.watched.get_mut(name) else { return };
        let gap = RUNG_LOOK_GAP.as_millis() as i64;
        let grace = rung_grace(w.ttl).as_millis() as i64;
        match found {
            RungLook::Empty | RungLook::Unstamped => {
                self.watched.remove(name);
            }
            RungLook::NotYet { due_at_ms } => w.look_at_ms = (due_at_ms + grace + 1).max(now_ms + gap),
            RungLook::Full => w.look_at_ms = now_ms,
            RungLook::Failed => w.look_at_ms = now_ms + gap,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.watched.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(a: &Args) -> Vec<&str> {
        a.iter().map(|(k, _)| *k).collect()
    }

    #[test]
    fn classic_queues_keep_their_arguments() {
        let s = Duration::from_secs;
        let work = QueueRole::Work { dead: "p.dead.c", delivery_limit: 28 };
        let cases: Vec<(QueueRole, Option<Duration>, Vec<&str>)> = vec![
            (work.clone(), None, vec![]),
            (work, Some(s(600)), vec!["x-expires"]),
            (QueueRole::Dead, None, vec![]),
            (QueueRole::Requests, Some(s(600)), vec!["x-expires"]),
            (QueueRole::Delay { ttl: s(5) }, None, vec!["x-message-ttl", "x-dead-letter-exchange"]),
            (
                QueueRole::Lease { work: "p.jobs.c", ttl: s(3), expires: s(66) },
                Some(s(600)),
                vec!["x-message-ttl", "x-dead-letter-exchange", "x-dead-letter-routing-key", "x-expires"],
            ),
        ];
        for (role, expires, want) in cases {
            assert_eq!(keys(&queue_args(QueueType::Classic, &role, expires)), want, "{role:?}");
        }
    }

    #[test]
    fn quorum_queues_dead_letter_at_least_once_with_an_explicit_delivery_limit() {
        let work = queue_args(QueueType::Quorum, &QueueRole::Work { dead: "p.dead.c", delivery_limit: 28 }, None);
        assert_eq!(
            work,
            vec![
                ("x-dead-letter-exchange", Arg::Str("".into())),
                ("x-dead-letter-routing-key", Arg::Str("p.dead.c".into())),
                ("x-queue-type", Arg::Str("quorum".into())),
                ("x-delivery-limit", Arg::Int(28)),
                ("x-dead-letter-strategy", Arg::Str("at-least-once".into())),
                ("x-overflow", Arg::Str("reject-publish".into())),
            ]
        );
        let dead = queue_args(QueueType::Quorum, &QueueRole::Dead, None);
        assert_eq!(dead, vec![("x-queue-type", Arg::Str("quorum".into())), ("x-delivery-limit", Arg::Int(1000))]);
        let delay = queue_args(QueueType::Quorum, &QueueRole::Delay { ttl: Duration::from_millis(1500) }, None);
        assert!(delay.contains(&("x-message-ttl", Arg::Int(1500))));
        assert!(delay.contains(&("x-dead-letter-strategy", Arg::Str("at-least-once".into()))));
        assert!(delay.contains(&("x-delivery-limit", Arg::Int(1000))));
    }

    #[test]
    fn the_judges_queues_elect_one_consumer_and_keep_one_snapshot_on_either_queue_type() {
        let judge = QueueRole::Judge { max_length: 200_000 };
        let classic = queue_args(QueueType::Classic, &judge, Some(Duration::from_secs(600)));
        assert_eq!(
            classic,
            vec![
                ("x-single-active-consumer", Arg::Bool(true)),
                ("x-max-length", Arg::Int(200_000)),
                ("x-expires", Arg::Int(600_000)),
            ]
        );
        // On a cluster the election and the snapshot outlive the node that held them: both are
        // replicated, and a snapshot read back (a requeue) many times is never dropped.
        let quorum = queue_args(QueueType::Quorum, &judge, None);
        assert!(quorum.contains(&("x-single-active-consumer", Arg::Bool(true))));
        assert!(quorum.contains(&("x-queue-type", Arg::Str("quorum".into()))));
        assert!(quorum.contains(&("x-delivery-limit", Arg::Int(1000))));
        let state = queue_args(QueueType::Quorum, &QueueRole::JudgeState, None);
        assert_eq!(
            state,
            vec![
                ("x-max-length", Arg::Int(1)),
                ("x-queue-type", Arg::Str("quorum".into())),
                ("x-delivery-limit", Arg::Int(1000)),
            ]
        );
    }

    #[test]
    fn the_delivery_limit_leaves_room_beyond_the_class_budget() {
        for (attempts, poison, want) in [(5, 3, 28), (1, 0, 21), (1000, 1000, 2020), (u32::MAX, 3, u32::MAX)] {
            assert_eq!(delivery_limit(attempts, poison), want);
        }
    }

    #[test]
    fn patterns_are_matched_against_the_prefix_conservatively() {
        for (pattern, prefix, want) in [
            ("^drover\\.", "drover", true),
            ("^drover.jobs", "drover", true),
            ("^other\\.", "drover", false),
            ("^d", "drover", true),
            ("^droverx", "drover", false),
            ("jobs", "drover", true),
            ("^.*", "drover", true),
            ("^$", "drover", true),
            ("^dx?rover", "drover", true),
            ("^drover-test", "drover", false),
            ("^amq\\.", "drover", false),
            // Escaped characters are themselves (a policy of another prefix is not ours).
            ("^t\\-cluster\\-policy\\-1\\.", "t-cluster-limit-2", false),
            ("^t\\-cluster\\-limit\\-2\\.", "t-cluster-limit-2", true),
            ("^drover\\-x", "drover", false),
            ("^drover\\.jobs", "drover", true),
            ("^drover\\d", "drover", true),
            ("^drov\\w+", "drover", true),
        ] {
            assert_eq!(pattern_may_match(pattern, prefix), want, "{pattern} vs {prefix}");
        }
    }

    fn policy(name: &str, pattern: &str, apply_to: &str, def: serde_json::Value) -> Policy {
        Policy {
            name: name.into(),
            kind: "policy",
            pattern: pattern.into(),
            apply_to: apply_to.into(),
            definition: def.as_object().cloned().unwrap_or_default(),
        }
    }

    #[test]
    fn policies_that_change_behaviour_are_named() {
        use serde_json::json;
        let min = 21;
        let t = Duration::from_secs(1800);
        // (policy, queue type, refuse?, a word of the message); None: nothing to say.
        let cases = vec![
            (
                policy("low-limit", ".*", "queues", json!({"delivery-limit": 5})),
                QueueType::Quorum,
                Some((true, "delivery-limit 5")),
            ),
            (policy("low-limit", ".*", "queues", json!({"delivery-limit": 5})), QueueType::Classic, None),
            (policy("high-limit", ".*", "all", json!({"delivery-limit": 50})), QueueType::Quorum, None),
            (policy("unlimited", ".*", "all", json!({"delivery-limit": -1})), QueueType::Quorum, None),
            (policy("other-app", "^billing\\.", "queues", json!({"delivery-limit": 1})), QueueType::Quorum, None),
            (policy("exchanges", ".*", "exchanges", json!({"delivery-limit": 1})), QueueType::Quorum, None),
            (
                policy("ct", "^drover\\.", "queues", json!({"consumer-timeout": 60000})),
                QueueType::Classic,
                Some((false, "consumer-timeout 60000")),
            ),
            (policy("ct-long", ".*", "queues", json!({"consumer-timeout": 3600000})), QueueType::Classic, None),
            (
                policy("qt", ".*", "queues", json!({"queue-type": "quorum"})),
                QueueType::Classic,
                Some((true, "queue-type")),
            ),
            (policy("qt", ".*", "queues", json!({"queue-type": "quorum"})), QueueType::Quorum, None),
            (
                policy("cap", ".*", "quorum_queues", json!({"max-length": 10})),
                QueueType::Quorum,
                Some((false, "max-length")),
            ),
            (policy("cap", ".*", "quorum_queues", json!({"max-length": 10})), QueueType::Classic, None),
            (policy("ha", ".*", "queues", json!({"ha-mode": "all"})), QueueType::Classic, None),
        ];
        for (p, kind, want) in cases {
            let found = check_policies(std::slice::from_ref(&p), "drover", kind, t, min);
            match want {
                None => assert!(found.is_empty(), "{p:?} on {kind:?}: {found:?}"),
                Some((refuse, word)) => {
                    assert_eq!(found.len(), 1, "{p:?} on {kind:?}: {found:?}");
                    assert_eq!(found[0].refuse, refuse, "{found:?}");
                    assert!(found[0].message.contains(word) && found[0].message.contains(&p.name), "{found:?}");
                }
            }
        }
    }

    #[test]
    fn rotation_walks_the_nodes_and_backs_off_per_round() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        // Three nodes, every connect failing, unit 0.999 (the top of each window).
        let mut r = Rotation::new(3, 0.5);
        assert_eq!(r.current(), 1);
        let mut seen = vec![];
        for _ in 0..9 {
            let node = r.current();
            let wait = r.failed(&b, 0.999);
            let window = (1..=5).find(|k| b.delay(*k, 0.999) == wait).expect("a window of the backoff");
            seen.push((node, window));
        }
        assert_eq!(
            seen,
            // (node tried, window of the wait): within a round the first window (100 ms), after
            // the k-th full round the k-th (100, 200, 400 ms).
            vec![(1, 1), (2, 1), (0, 1), (1, 1), (2, 1), (0, 2), (1, 1), (2, 1), (0, 3)]
        );
        r.connected();
        assert_eq!(r.current(), 1);
        assert_eq!(r.lost(Duration::from_secs(60), &b, 0.999), Duration::ZERO, "a working connection: at once");
        assert_eq!(r.current(), 2, "after a lost connection, another node first");
        assert_eq!(r.failed(&b, 0.999), b.delay(1, 0.999), "a success reset the rounds");
    }

    #[test]
    fn one_node_is_plain_backoff() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let mut r = Rotation::new(1, 0.7);
        for k in 1..=6 {
            assert_eq!(r.failed(&b, 0.5), b.delay(k, 0.5), "try {k}");
        }
        assert_eq!(r.current(), 0);
        r.lost(STABLE_SESSION, &b, 0.5);
        assert_eq!(r.current(), 0);
    }

    #[test]
    fn connections_lost_right_after_they_were_made_back_off_instead_of_looping() {
        // A node that takes connections but fails the first declaration on each (a queue whose
        // node is down): every session ends at once.
        let b = Backoff::new(Duration::from_millis(200), Duration::from_secs(2));
        let mut r = Rotation::new(3, 0.0);
        let quick = Duration::from_millis(30);
        let waits: Vec<Duration> = (0..6)
            .map(|_| {
                r.connected();
                r.lost(quick, &b, 0.999)
            })
            .collect();
        let windows: Vec<u32> =
            waits.iter().map(|w| (1..=8).find(|k| b.delay(*k, 0.999) == *w).expect("a window")).collect();
        assert_eq!(windows, vec![1, 2, 3, 4, 5, 5], "growing to the cap (2 s), never zero");
        assert_eq!(r.lost(STABLE_SESSION, &b, 0.999), Duration::ZERO, "a connection that worked resets it");
        assert_eq!(r.lost(quick, &b, 0.999), b.delay(1, 0.999));
    }

    #[test]
    fn the_first_node_is_drawn_from_the_unit() {
        for (unit, want) in [(0.0, 0), (0.33, 0), (0.34, 1), (0.99, 2), (1.0, 2), (f64::NAN, 0), (-1.0, 0)] {
            assert_eq!(Rotation::new(3, unit).current(), want, "{unit}");
        }
        assert_eq!(Rotation::new(0, 0.5).current(), 0, "no node is treated as one");
    }

    #[test]
    fn a_rung_head_is_overdue_only_past_its_due_time_and_the_grace() {
        let ms = Duration::from_millis;
        let due = 1_000_000;
        // (due header, now, rung ttl, expected)
        let cases = [
            (Some(due), due - 500, ms(1000), RungHead::NotYet { due_at_ms: due }), // not yet due
            (Some(due), due + 5_000, ms(1000), RungHead::NotYet { due_at_ms: due }), // within 5 s grace
            (Some(due), due + 5_001, ms(1000), RungHead::Overdue),                 // past it
            (Some(due), due + 30_000, ms(3_444_312), RungHead::NotYet { due_at_ms: due }), // long rung: 60 s
            (Some(due), due + 60_001, ms(3_444_312), RungHead::Overdue),
            (Some(due), due + 20_000, ms(80_000), RungHead::NotYet { due_at_ms: due }), // a quarter of 80 s
            (Some(due), due + 20_001, ms(80_000), RungHead::Overdue),
            (None, due + 3_600_000, ms(1000), RungHead::Unstamped), // never judged without a stamp
        ];
        for (header, now, ttl, want) in cases {
            assert_eq!(rung_head(header, now, ttl), want, "{header:?} at {now}, ttl {ttl:?}");
        }
    }

    #[test]
    fn a_watched_rung_is_looked_at_again_only_when_its_head_could_be_overdue() {
        let ttl = Duration::from_secs(1);
        let mut r = Rungs::default();
        assert_eq!(r.next_look_ms(), None);
        assert_eq!(r.published("p.delay.1000ms", ttl, 0), 1_000, "due one TTL later");
        assert_eq!(r.next_look_ms(), Some(5_000), "first look soon");
        // More retries into the same rung do not bring the look forward.
        r.published("p.delay.1000ms", ttl, 4_000);
        assert_eq!(r.next_look_ms(), Some(5_000));
        assert!(r.due(4_999).is_empty());
        assert_eq!(r.due(5_000), vec![("p.delay.1000ms".to_string(), ttl)]);
        // (found, at, next look expected; None: no longer watched)
        let cases = [
            (RungLook::NotYet { due_at_ms: 5_500 }, 5_000, Some(10_501)), // when the head would be overdue
            (RungLook::NotYet { due_at_ms: 5_000 }, 9_000, Some(14_000)), // never sooner than the gap
            (RungLook::Full, 5_000, Some(5_000)),                         // more to move: at once
            (RungLook::Failed, 5_000, Some(10_000)),                      // broker trouble: the gap
            (RungLook::Empty, 5_000, None),                               // nothing left to watch
            (RungLook::Unstamped, 5_000, None),                           // nothing it can judge
        ];
        for (found, at, want) in cases {
            let mut r2 = r.clone();
            r2.looked("p.delay.1000ms", found, at);
            assert_eq!(r2.next_look_ms(), want, "{found:?} at {at}");
            assert_eq!(r2.is_empty(), want.is_none());
        }
        // Watched again from the next publish after it was found empty.
        r.looked("p.delay.1000ms", RungLook::Empty, 5_000);
        r.published("p.delay.1000ms", ttl, 7_000);
        assert_eq!(r.next_look_ms(), Some(12_000));
        // A look at a rung nobody watches changes nothing.
        r.looked("p.delay.2000ms", RungLook::Full, 7_000);
        assert_eq!(r.due(12_000).len(), 1);
    }

    #[test]
    fn a_message_in_a_busy_rung_is_taken_and_given_back_at_most_once_per_process() {
        // A rung of 512 s, published into every second by this process. Each look takes the head
        // and gives it back unless it is overdue; a quorum rung counts each return against its
        // delivery limit. No message may be taken twice, and the looks are far fewer than one
        // per gap (600 in 3,000 s).
        let ttl = Duration::from_secs(512);
        let mut r = Rungs::default();
        let mut heads = std::collections::VecDeque::new();
        let mut taken = Vec::new();
        for now in (0..3_000_000i64).step_by(1000) {
            heads.push_back(r.published("p.delay.512000ms", ttl, now));
            while heads.front().is_some_and(|d| *d <= now) {
                heads.pop_front(); // the broker expires it on time
            }
            if !r.due(now).is_empty() {
                let found = match heads.front() {
                    None => RungLook::Empty,
                    Some(d) => match rung_head(Some(*d), now, ttl) {
                        RungHead::NotYet { due_at_ms } => {
                            taken.push(due_at_ms);
                            RungLook::NotYet { due_at_ms }
                        }
                        other => panic!("{other:?}: nothing is overdue here"),
                    },
                };
                r.looked("p.delay.512000ms", found, now);
            }
        }
        let looks = taken.len();
        taken.dedup();
        assert_eq!(taken.len(), looks, "a message was taken twice");
        assert!(looks <= 3_000 / 60, "{looks} looks: one per grace of 60 s at most");
    }

    #[test]
    fn the_consumer_timeout_note_says_what_the_broker_version_allows() {
        let v = |s| version_at_least(s, PER_QUEUE_CONSUMER_TIMEOUT_SINCE);
        let cases = [
            ("3.10.8", Some(false)),
            ("3.11.14", Some(false)),
            ("3.11.15", Some(true)),
            ("3.12.0", Some(true)),
            ("3.13.7+1.g0f2b4b8", Some(true)),
            ("4.0.5", Some(true)),
            ("4", Some(true)),
            ("3", Some(false)),
            ("", None),
            ("unknown", None),
        ];
        for (version, want) in cases {
            assert_eq!(v(version), want, "{version:?}");
        }
        let t = Duration::from_secs(1800);
        let old = consumer_timeout_note(Some("3.10.8"), t);
        assert!(
            old.contains("RabbitMQ 3.10.8") && old.contains("no per-queue consumer timeout (from 3.11.15)"),
            "{old}"
        );
        assert!(old.contains("1800000 ms"), "{old}");
        let new = consumer_timeout_note(Some("3.13.1"), t);
        assert!(new.contains("policies are checked") && !new.contains("no per-queue"), "{new}");
        assert!(consumer_timeout_note(None, t).starts_with("the broker's version is unknown"));
    }
}
