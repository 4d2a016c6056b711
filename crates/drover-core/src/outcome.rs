//! What happens to a job after an attempt: the decision itself, as data.
//!
//! [`decide`] turns what the handler did ([`Outcome`]) into what the worker must do with the
//! message ([`Action`]): acknowledge it, retry it after a jittered delay held by the broker,
//! dead-letter it with a reason, or requeue it without charging an attempt (the worker, not the
//! job, was at fault). Pure: the clock and the random number come in as arguments.

use crate::backoff::Backoff;
use std::time::Duration;

/// How an attempt ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Exit 0 / `"status": "ok"`.
    Succeeded,
    /// Exit 75 / `"retry"`: transient, try again.
    Transient(String),
    /// Exit 65 / `"reject"`: the job itself is bad.
    Rejected(String),
    /// Any other exit status, a signal, `"fail"`, a handler that died or broke the protocol.
    Failed(String),
    /// The attempt ran past the class's `timeout` or the job's deadline and was killed.
    TimedOut(String),
    /// The worker stopped the attempt for its own reasons (drain deadline, lost its lease or
    /// its channel): the job did nothing wrong.
    Interrupted(String),
}

impl Outcome {
    /// The short name used in events and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Transient(_) => "transient",
            Outcome::Rejected(_) => "rejected",
            Outcome::Failed(_) => "failed",
            Outcome::TimedOut(_) => "timeout",
            Outcome::Interrupted(_) => "interrupted",
        }
    }

    pub fn message(&self) -> &str {
        match self {
            Outcome::Succeeded => "",
            Outcome::Transient(m)
            | Outcome::Rejected(m)
            | Outcome::Failed(m)
            | Outcome::TimedOut(m)
            | Outcome::Interrupted(m) => m,
        }
    }
}

/// Why a job was dead-lettered. The string forms are written into the dead letter's
/// `x-drover-dead-reason` header and are part of the interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeadReason {
    MaxAttempts,
    Rejected,
    DeadlineExpired,
    Undecodable,
    /// The job failed on `poison_after` distinct workers: the job is bad, not the workers.
    Poison,
}

impl DeadReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DeadReason::MaxAttempts => "max_attempts",
            DeadReason::Rejected => "rejected",
            DeadReason::DeadlineExpired => "deadline_expired",
            DeadReason::Undecodable => "undecodable",
            DeadReason::Poison => "poison",
        }
    }
}

/// What the worker does with the message.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    Ack,
    /// Republish with `attempt + 1` through the broker-held delay queues, then acknowledge.
    Retry {
        delay: Duration,
    },
    /// Publish to the class's dead-letter queue with the reason, then acknowledge.
    DeadLetter {
        reason: DeadReason,
        detail: String,
    },
    /// Give the message back unchanged: no attempt is charged.
    Requeue {
        why: String,
    },
}

/// The retry policy of a class.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub backoff: Backoff,
    /// Dead-letter a job once it failed on this many distinct workers (0: never).
    pub poison_after: u32,
}

/// The distinct workers a job has failed on, counting this attempt's worker when the attempt
/// failed in a way that may be the job's fault (a failure or a timeout, not a transient error).
pub fn failed_on_after(outcome: &Outcome, failed_on: &[String], me: &str) -> Vec<String> {
    let mut all = failed_on.to_vec();
    if matches!(outcome, Outcome::Failed(_) | Outcome::TimedOut(_)) && !all.iter().any(|w| w == me) {
        all.push(me.to_string());
    }
    all.truncate(32);
    all
}

/// The worker of each failed (or timed out) attempt, oldest first, this attempt included when
/// it failed: what fair charging refunds from. The newest 64 are kept.
pub fn failures_after(outcome: &Outcome, failures: &[String], me: &str) -> Vec<String> {
    let mut all = failures.to_vec();
    if matches!(outcome, Outcome::Failed(_) | Outcome::TimedOut(_)) {
        all.push(me.to_string());
    }
    let extra = all.len().saturating_sub(64);
    all.drain(..extra);
    all
}

/// What a job's history charges to the job itself, once the fleet's verdicts are applied
/// ([`crate::verdicts::Fleet::charges`]): failures charged to a worker that was quarantined
/// for them are forgiven, and workers that died running the job count towards poison.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Charges {
    /// Failed attempts that were the worker's fault, not the job's: they use up no attempt.
    pub forgiven: u32,
    /// Distinct workers the job failed on, or died running it, forgiven ones left out.
    pub against: Vec<String>,
    /// Failed attempts, not forgiven, on workers under suspicion (evidence building, no
    /// verdict yet): a job is not given up on while they may still turn out to be the
    /// worker's fault; it is retried instead.
    pub pending: u32,
    /// How many of `against` are under suspicion.
    pub against_suspect: u32,
}

impl Charges {
    /// Without verdicts: every failure counts.
    pub fn plain(failed_on: &[String]) -> Charges {
        Charges { against: failed_on.to_vec(), ..Charges::default() }
    }
}

/// Decides what to do after attempt number `attempt` (1-based) ended with `outcome`.
/// `time_left` is what remains of the job's absolute deadline; `unit` is a uniform random
/// number in `[0, 1)` for the jitter. `charges` says which of the job's failures count against
/// it, this attempt included (see [`failed_on_after`] and [`Charges`]): the attempt limit and
/// the backoff use the charged attempts only.
pub fn decide(
    outcome: &Outcome,
    attempt: u32,
    time_left: Duration,
    policy: &RetryPolicy,
    unit: f64,
    charges: &Charges,
) -> Action {
    let charged = attempt.saturating_sub(charges.forgiven).max(1);
    let retry_or_give_up = |detail: &str| {
        let against = &charges.against;
        let poison = |n: u32| {
            policy.poison_after > 0
                && n >= policy.poison_after
                && matches!(outcome, Outcome::Failed(_) | Outcome::TimedOut(_))
        };
        let surely_poison = poison(against.len() as u32 - charges.against_suspect.min(against.len() as u32));
        let surely_spent = charged.saturating_sub(charges.pending) >= policy.max_attempts;
        if surely_poison {
            return Action::DeadLetter {
                reason: DeadReason::Poison,
                detail: format!(
                    "failed on {} distinct workers ({}); last: {detail}",
                    against.len(),
                    against.join(", ")
                ),
            };
        }
        if charged >= policy.max_attempts && surely_spent {
            let detail = if charges.forgiven > 0 {
                format!(
                    "attempt {attempt}, {charged} of {} charged ({} failures on quarantined workers not charged): {detail}",
                    policy.max_attempts, charges.forgiven
                )
            } else {
                format!("attempt {attempt} of {}: {detail}", policy.max_attempts)
            };
            return Action::DeadLetter { reason: DeadReason::MaxAttempts, detail };
        }
        let delay = policy.backoff.delay(charged, unit);
        if delay >= time_left {
            // The retry would come back after the deadline only to be dead-lettered then.
            return Action::DeadLetter {
                reason: DeadReason::DeadlineExpired,
                detail: format!("no time left for a retry after: {detail}"),
            };
        }
        Action::Retry { delay }
    };
    match outcome {
        Outcome::Succeeded => Action::Ack,
        Outcome::Rejected(m) => Action::DeadLetter { reason: DeadReason::Rejected, detail: m.clone() },
        Outcome::Transient(m) | Outcome::Failed(m) | Outcome::TimedOut(m) => retry_or_give_up(m),
        Outcome::Interrupted(m) => Action::Requeue { why: m.clone() },
    }
}

/// Decides, before running anything, whether a delivered job may run at all: not after its
/// deadline, and not when it already failed on, or killed, `poison_after` distinct workers (a
/// job that kills its worker, by running out of memory say, leaves no failure behind; the
/// supervisors see the attempt vanish and say so in their verdicts).
pub fn admit(time_left: Option<Duration>, charges: &Charges, policy: &RetryPolicy) -> Option<Action> {
    match time_left {
        Some(left) if left.is_zero() => Some(Action::DeadLetter {
            reason: DeadReason::DeadlineExpired,
            detail: "deadline passed before the job could start".into(),
        }),
        _ if policy.poison_after > 0 && charges.against.len() as u32 >= policy.poison_after => {
            Some(Action::DeadLetter {
                reason: DeadReason::Poison,
                detail: format!(
                    "failed on or killed {} distinct workers ({})",
                    charges.against.len(),
                    charges.against.join(", ")
                ),
            })
        }
        _ => None,
    }
}

/// How long a handed-back retry waits in the broker before it is offered again.
pub const HAND_BACK_DELAY: Duration = Duration::from_secs(5);

/// Whether a worker on `host` hands a delivered job back instead of running it: the job failed
/// on this host before, and since it was first handed back (`handed_back_at`, `now` in epoch
/// ms) less than `wait` has passed. Returns the delay before the job is offered again:
/// [`HAND_BACK_DELAY`], never past the end of the wait. The delay stays short rather than
/// growing: a hand-back costs no work, and the broker deals deliveries round-robin, so a retry
/// may land on the bad host's idle workers several times before a good host's worker is free;
/// a growing delay would make each such streak cost minutes. Handing back charges nothing;
/// once the wait is over the job runs wherever it lands, this host included, so a class that
/// only this host serves still runs.
pub fn hand_back(
    failed_on: &[String],
    host: &str,
    handed_back_at: Option<i64>,
    now: i64,
    wait: Duration,
) -> Option<Duration> {
    let failed_here = failed_on.iter().any(|w| w.rsplit_once('@').is_some_and(|(_, h)| h == host));
    if !failed_here || wait.is_zero() {
        return None;
    }
    let waited = Duration::from_millis((now - handed_back_at.unwrap_or(now)).max(0) as u64);
    let left = wait.checked_sub(waited).filter(|l| !l.is_zero())?;
    Some(HAND_BACK_DELAY.min(left))
}

/// Broker-held delays: a ladder of delay queues with a queue-wide TTL each.
///
/// RabbitMQ expires per-message TTLs only at the head of a queue, so one queue holding mixed
/// delays would keep a 1 s retry behind a 1 h one. Each rung holds a single delay, so its head
/// always expires first. Rungs are a geometric grid, four per doubling (about 19% apart), from
/// 1 s up; a delay is rounded *down* to its rung so that the backoff's cap is never passed, and
/// the jitter survives the rounding (four rungs per doubling still spread a herd). Delays under
/// half a second go straight back to the work queue.
pub fn delay_rung(delay: Duration) -> Option<Duration> {
    const RUNGS_PER_DOUBLING: f64 = 4.0;
    let secs = delay.as_secs_f64();
    if secs < 0.5 {
        return None;
    }
    if secs < 1.0 {
        return Some(Duration::from_secs(1));
    }
    let k = (secs.log2() * RUNGS_PER_DOUBLING + 1e-9).floor();
    let rung_ms = (1000.0 * (k / RUNGS_PER_DOUBLING).exp2()).round() as u64;
    Some(Duration::from_millis(rung_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retry_is_handed_back_by_a_host_it_failed_on_until_the_wait_is_over() {
        const M: i64 = 60_000;
        let failed = vec!["dw@c-1.service@bad".to_string()];
        let wait = Duration::from_secs(300);
        // (failed on, host, first handed back at, now, expected delay)
        type Case<'a> = (&'a [String], &'a str, Option<i64>, i64, Option<u64>);
        let cases: Vec<Case> = vec![
            (&failed, "good", None, 0, None),                      // another host runs it
            (&[], "bad", None, 0, None),                           // never failed anywhere
            (&failed, "bad", None, 0, Some(5_000)),                // first hand-back
            (&failed, "bad", Some(0), M, Some(5_000)),             // again, as long as the wait lasts
            (&failed, "bad", Some(0), 5 * M - 2_000, Some(2_000)), // never past its end
            (&failed, "bad", Some(0), 5 * M, None),                // the wait is over: run here
        ];
        for (failed_on, host, at, now, want) in cases {
            let got = hand_back(failed_on, host, at, now, wait);
            assert_eq!(got, want.map(Duration::from_millis), "{host} at {now}");
        }
        assert_eq!(hand_back(&failed, "bad", None, 0, Duration::ZERO), None, "off");
    }

    const S: fn(u64) -> Duration = Duration::from_secs;

    fn policy() -> RetryPolicy {
        RetryPolicy { max_attempts: 3, backoff: Backoff::new(S(10), S(600)), poison_after: 0 }
    }

    #[test]
    fn decision_table() {
        let day = S(86_400);
        let cases: Vec<(Outcome, u32, Duration, f64, Action)> = vec![
            (Outcome::Succeeded, 1, day, 0.5, Action::Ack),
            (Outcome::Succeeded, 3, day, 0.5, Action::Ack),
            (Outcome::Transient("busy".into()), 1, day, 0.5, Action::Retry { delay: S(5) }),
            (Outcome::Failed("exit 1".into()), 2, day, 0.5, Action::Retry { delay: S(10) }),
            (Outcome::TimedOut("40m".into()), 2, day, 1.0, Action::Retry { delay: S(20) }),
            (
                Outcome::Failed("exit 1".into()),
                3,
                day,
                0.5,
                Action::DeadLetter { reason: DeadReason::MaxAttempts, detail: "attempt 3 of 3: exit 1".into() },
            ),
            (
                Outcome::Rejected("bad input".into()),
                1,
                day,
                0.5,
                Action::DeadLetter { reason: DeadReason::Rejected, detail: "bad input".into() },
            ),
            (
                Outcome::Transient("busy".into()),
                1,
                S(3),
                0.5,
                Action::DeadLetter {
                    reason: DeadReason::DeadlineExpired,
                    detail: "no time left for a retry after: busy".into(),
                },
            ),
            (Outcome::Interrupted("drain".into()), 3, day, 0.5, Action::Requeue { why: "drain".into() }),
        ];
        for (outcome, attempt, left, unit, want) in cases {
            assert_eq!(
                decide(&outcome, attempt, left, &policy(), unit, &Charges::default()),
                want,
                "{outcome:?} attempt {attempt}"
            );
        }
    }

    #[test]
    fn a_job_that_fails_on_k_distinct_workers_is_poison() {
        let p = RetryPolicy { max_attempts: 10, backoff: Backoff::new(S(1), S(1)), poison_after: 3 };
        let day = S(86_400);
        let fail = Outcome::Failed("exit 1".into());
        let w = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        // (failed on before, this worker, outcome, poison?)
        let cases: Vec<(Vec<String>, &str, Outcome, bool)> = vec![
            (w(&[]), "a@h1", fail.clone(), false),
            (w(&["a@h1"]), "a@h1", fail.clone(), false), // the same worker again: still one
            (w(&["a@h1", "b@h1"]), "c@h2", fail.clone(), true),
            (w(&["a@h1", "b@h1"]), "c@h2", Outcome::TimedOut("40m".into()), true),
            (w(&["a@h1", "b@h1"]), "c@h2", Outcome::Transient("busy".into()), false), // not the job's fault
            (w(&["a@h1", "b@h1"]), "c@h2", Outcome::Succeeded, false),
        ];
        for (before, me, outcome, poison) in cases {
            let after = failed_on_after(&outcome, &before, me);
            let action = decide(&outcome, 2, day, &p, 0.5, &Charges::plain(&after));
            let is_poison = matches!(&action, Action::DeadLetter { reason: DeadReason::Poison, detail } if detail.contains("3 distinct workers"));
            assert_eq!(is_poison, poison, "{before:?} + {me} {outcome:?}: {action:?}");
        }
    }

    #[test]
    fn an_expired_job_is_not_admitted() {
        let none = Charges::default();
        assert!(matches!(
            admit(Some(Duration::ZERO), &none, &policy()),
            Some(Action::DeadLetter { reason: DeadReason::DeadlineExpired, .. })
        ));
        assert_eq!(admit(Some(S(1)), &none, &policy()), None);
        assert_eq!(admit(None, &none, &policy()), None);
    }

    #[test]
    fn a_job_that_killed_k_distinct_workers_is_not_admitted() {
        let p = RetryPolicy { max_attempts: 3, backoff: Backoff::new(S(1), S(1)), poison_after: 3 };
        let against = |v: &[&str]| Charges { against: v.iter().map(|s| s.to_string()).collect(), ..Charges::default() };
        assert_eq!(admit(None, &against(&["a@h1", "b@h1"]), &p), None);
        let three = admit(None, &against(&["a@h1", "b@h1", "c@h2"]), &p);
        assert!(
            matches!(&three, Some(Action::DeadLetter { reason: DeadReason::Poison, detail }) if detail.contains("killed 3 distinct workers")),
            "{three:?}"
        );
        let never = RetryPolicy { poison_after: 0, ..p };
        assert_eq!(admit(None, &against(&["a@h1", "b@h1", "c@h2"]), &never), None);
    }

    #[test]
    fn failures_charged_to_workers_use_up_no_attempt() {
        let p = RetryPolicy { max_attempts: 3, backoff: Backoff::new(S(10), S(600)), poison_after: 3 };
        let day = S(86_400);
        let fail = Outcome::Failed("exit 1".into());
        // (attempt, forgiven, against, want)
        let c = |forgiven: u32, against: &[&str]| Charges {
            forgiven,
            against: against.iter().map(|s| s.to_string()).collect(),
            ..Charges::default()
        };
        let suspect = |pending: u32, against: &[&str], against_suspect: u32| Charges {
            pending,
            against_suspect,
            ..c(0, against)
        };
        let cases: Vec<(u32, Charges, &str)> = vec![
            (3, c(0, &["g@h2"]), "max_attempts"),
            (3, c(1, &["g@h2"]), "retry"), // one failure on a quarantined worker: 2 charged
            (5, c(3, &["g@h2"]), "retry"), // three forgiven: 2 charged
            (5, c(2, &["g@h2"]), "max_attempts"), // 3 charged
            (9, c(9, &[]), "retry"),       // all the bad worker's fault
            (4, c(2, &["a@h1", "b@h2"]), "retry"), // two distinct workers left: not poison
            (4, c(1, &["a@h1", "b@h2", "c@h3"]), "poison"),
            // Failures on workers under suspicion, no verdict yet: not given up on.
            (3, suspect(2, &["s@bad"], 1), "retry"),
            (3, suspect(1, &["s@bad", "g@h2"], 1), "retry"),
            (4, suspect(1, &["s@bad", "g@h2"], 1), "max_attempts"), // 3 surely charged
            (2, suspect(1, &["s@bad", "t@bad", "g@h2"], 2), "retry"), // poison only if they are innocent
            (2, suspect(1, &["s@bad", "g@h1", "g@h2", "g@h3"], 1), "poison"),
        ];
        for (attempt, charges, want) in cases {
            let got = match decide(&fail, attempt, day, &p, 0.5, &charges) {
                Action::Retry { .. } => "retry",
                Action::DeadLetter { reason, .. } => reason.as_str(),
                other => panic!("{other:?}"),
            };
            assert_eq!(got, want, "attempt {attempt} {charges:?}");
        }
        // The backoff follows the charged attempts: a refunded job waits as if it were new.
        let fresh = decide(&fail, 1, day, &p, 1.0, &Charges::default());
        let refunded = decide(&fail, 4, day, &p, 1.0, &c(3, &["g@h2"]));
        assert_eq!(fresh, refunded);
        let detail = match decide(&fail, 5, day, &p, 0.5, &c(2, &[])) {
            Action::DeadLetter { detail, .. } => detail,
            other => panic!("{other:?}"),
        };
        assert!(detail.contains("3 of 3 charged (2 failures on quarantined workers not charged)"), "{detail}");
    }

    #[test]
    fn delay_rungs_round_down_on_a_fine_grid() {
        let ms = Duration::from_millis;
        let cases = [
            (ms(100), None),
            (ms(600), Some(S(1))),
            (S(1), Some(S(1))),
            (ms(1200), Some(ms(1189))),
            (S(2), Some(S(2))),
            (S(3), Some(ms(2828))),
            (S(600), Some(S(512))),
            (S(3600), Some(ms(3_444_312))),
        ];
        for (delay, want) in cases {
            let rung = delay_rung(delay);
            assert_eq!(rung, want, "{delay:?}");
            if let Some(r) = rung {
                assert!(r <= delay.max(S(1)));
                assert!(r.as_secs_f64() > delay.as_secs_f64() * 0.8, "{delay:?} -> {r:?}");
            }
        }
    }
}
