//! One delivery, from its decoding to its recorded decision: dead-lettered without running when
//! it cannot or may not run ([`crate::outcome::admit`]), handed back by a host it failed on
//! ([`crate::outcome::hand_back`]), or run once ([`super::attempt`]) and decided on
//! ([`crate::outcome::decide`]); every decision is carried out by [`super::execute`], and
//! every step is told in a job event.

use super::attempt::Ran;
use super::execute::{Held, Out};
use super::lease::Lease;
use super::Worker;
use crate::events::{tail, EventKind, JobEvent};
use crate::io::amqp::BrokerError;
use crate::io::clock::now_ms;
use crate::io::notify;
use crate::io::wire;
use crate::job::{rfc3339, EpochMs, Job};
use crate::outcome::{
    admit, decide, failed_on_after, failures_after, hand_back, Action, Charges, DeadReason, Outcome, RetryPolicy,
};
use lapin::message::Delivery;
use lapin::Channel;
use std::time::Duration;

impl Worker {
    /// Runs one delivery to its end. An error means the broker went away while the result was
    /// being recorded; the delivery is then the broker's again (it requeues unacknowledged
    /// deliveries of a closed channel) or the lease's.
    pub(super) async fn handle(&mut self, delivery: Delivery, chan: &Channel) -> Result<(), BrokerError> {
        let now = now_ms();
        let envelope = wire::envelope(&delivery.properties);
        let job = match Job::decode(&envelope, &delivery.data, &self.class.name, self.class.deadline, now) {
            Ok(j) => j,
            Err(why) => return self.dead_letter_undecodable(&delivery, why).await,
        };
        let policy = self.policy();
        let admitted = |w: &Self| admit(Some(job.time_left(now)), &w.charges(&job), &policy);
        if admitted(self).is_some() {
            // Giving up on the job: first make sure the verdicts are the newest there are.
            self.refresh_verdicts().await;
            if let Some(Action::DeadLetter { reason, detail }) = admitted(self) {
                return self.refuse(&delivery, &job, reason, detail).await;
            }
        }
        let wait = self.steering_wait(now);
        if let Some(delay) = hand_back(&job.failed_on, &self.cfg.host, job.handed_back_at, now, wait) {
            return self.hand_back(&delivery, &job, delay, now).await;
        }
        let mut lease = None;
        if self.uses_lease {
            match Lease::take(&mut self.link, &job, &delivery).await {
                Ok(l) => lease = Some(l),
                Err(e) => {
                    super::execute::requeue_quietly(&delivery).await;
                    return Err(e);
                }
            }
        }
        let ran = self.attempt(&job, &delivery, chan, lease.as_mut()).await;
        self.conclude(job, ran, &policy, &delivery, lease.as_mut()).await
    }

    fn policy(&self) -> RetryPolicy {
        RetryPolicy {
            max_attempts: self.class.max_attempts,
            backoff: self.class.retry,
            poison_after: self.class.poison_after,
        }
    }

    /// How long a retry that failed on this host is offered to other hosts first: the class's
    /// `avoid_failed_hosts`, or nothing when no other host serves the class.
    fn steering_wait(&self, now: i64) -> Duration {
        if self.probing {
            // A probe job tests this host: it runs here whatever it did before.
            return Duration::ZERO;
        }
        let elsewhere = self.verdicts.lock().is_ok_and(|v| v.served_elsewhere(&self.class.name, &self.cfg.host, now));
        if elsewhere {
            self.class.avoid_failed_hosts
        } else {
            Duration::ZERO
        }
    }

    /// What the job's history charges to it, after the fleet's verdicts.
    fn charges(&self, job: &Job) -> Charges {
        match self.verdicts.lock() {
            Ok(v) => v.charges(&self.class.name, &job.id, &job.failures, &job.failed_on),
            Err(_) => Charges::plain(&job.failed_on),
        }
    }

    async fn dead_letter_undecodable(&mut self, delivery: &Delivery, why: String) -> Result<(), BrokerError> {
        tracing::warn!("undecodable message dead-lettered: {why}");
        let mut e = self.event(EventKind::DeadLettered, None);
        e.job_id = delivery.properties.message_id().as_ref().map(|s| s.as_str().to_string());
        e.reason = Some(DeadReason::Undecodable.as_str().into());
        e.detail = Some(why.clone());
        let out = Out::Dead(self.dead_headers(DeadReason::Undecodable, &why));
        self.carry_out(out, Held::Delivery(delivery)).await?;
        self.link.event(e).await;
        Ok(())
    }

    /// Dead-letters a job that may not run (past its deadline, poison).
    async fn refuse(
        &mut self,
        delivery: &Delivery,
        job: &Job,
        reason: DeadReason,
        detail: String,
    ) -> Result<(), BrokerError> {
        tracing::info!("job {} dead-lettered without running: {detail}", job.id);
        let action = Action::DeadLetter { reason, detail: detail.clone() };
        self.execute(&action, job, Held::Delivery(delivery)).await?;
        let mut e = self.event(EventKind::DeadLettered, Some(job));
        e.reason = Some(reason.as_str().into());
        e.detail = Some(detail);
        self.link.event(e).await;
        Ok(())
    }

    /// Gives a retry back to the broker, uncharged, for a host it has not failed on: it returns
    /// to the work queue after `delay`.
    async fn hand_back(
        &mut self,
        delivery: &Delivery,
        job: &Job,
        delay: Duration,
        now: EpochMs,
    ) -> Result<(), BrokerError> {
        self.carry_out(Out::Delayed(delay, job.hand_back_headers(now)), Held::Delivery(delivery)).await?;
        let why = format!(
            "handed back ({} so far): it failed on this host before; offered to other hosts again in {delay:.0?}",
            job.hand_backs + 1
        );
        tracing::info!("job {} attempt {}: {why}", job.id, job.attempt);
        let mut e = self.event(EventKind::Requeued, Some(job));
        e.outcome = Some("handed_back".into());
        e.reason = Some(why);
        self.link.event(e).await;
        Ok(())
    }

    /// Decides on the attempt that `ran`, carries the decision out and tells it in events.
    async fn conclude(
        &mut self,
        mut job: Job,
        ran: Ran,
        policy: &RetryPolicy,
        delivery: &Delivery,
        lease: Option<&mut Lease>,
    ) -> Result<(), BrokerError> {
        if ran.lost && lease.is_none() {
            tracing::warn!(
                "job {}: the channel closed under it; the broker has requeued it and will deliver it again",
                job.id
            );
            let mut done = self.finished_event(&job, &ran);
            done.event = EventKind::Requeued;
            done.reason = Some("broker channel lost".into());
            self.link.event(done).await;
            notify::status("idle");
            return Ok(());
        }
        if let Some(c) = &ran.checkpoint {
            // The next attempt, whatever brings it, resumes from here.
            job.checkpoint = Some(c.clone());
        }
        let mut action = self.decide(&mut job, &ran, policy);
        if matches!(action, Action::DeadLetter { .. }) {
            // Before giving up on the job, the newest verdicts: a quarantine heard since the
            // last poll forgives the failures it caused.
            self.refresh_verdicts().await;
            action = self.redecide(&job, &ran, policy);
        }
        let recorded = match lease {
            Some(l) => self.execute(&action, &job, Held::Lease(l)).await,
            None if !delivery.acker.usable() => {
                tracing::warn!(
                    "job {}: the channel closed before the result was recorded; the broker will deliver it again",
                    job.id
                );
                Ok(false)
            }
            None => self.execute(&action, &job, Held::Delivery(delivery)).await,
        };
        // Built once the job is let go: nothing in it decides anything, and with prefetch 1 the
        // broker's next delivery waits for the acknowledgement, not for this.
        let mut done = self.finished_event(&job, &ran);
        // The attempt failed: say so, before the decision. An interrupted attempt (a drain, a
        // stop, a requeue on request) did not fail: its decision event (`requeued`) says what
        // happened, and nothing counts it as a failure (issue 11: a reboot showed a failure
        // for every job it moved).
        if !matches!(ran.outcome, Outcome::Succeeded | Outcome::Interrupted(_)) {
            self.link.event(done.clone()).await;
        }
        tell_decision(&mut done, action, matches!(recorded, Ok(false)));
        self.link.event(done).await;
        notify::status(if self.controls.drain.is_cancelled() { "draining" } else { "idle" });
        recorded.map(|_| ())
    }

    /// The event of a finished attempt, as a failure; [`tell_decision`] turns it into the
    /// decision's event.
    fn finished_event(&self, job: &Job, ran: &Ran) -> JobEvent {
        let finished = rfc3339(ran.finished);
        let mut done = self.event_at(EventKind::Failed, Some(job), finished.clone());
        done.started_at = Some(rfc3339(ran.started));
        done.finished_at = Some(finished);
        done.duration_s = Some((ran.finished - ran.started) as f64 / 1000.0);
        done.outcome = Some(ran.outcome.kind().into());
        if !ran.outcome.message().is_empty() {
            done.detail = Some(tail(ran.outcome.message(), 2048));
        }
        done
    }

    /// Charges the attempt to the job (where it failed) and decides what happens to it.
    fn decide(&mut self, job: &mut Job, ran: &Ran, policy: &RetryPolicy) -> Action {
        let me = format!("{}@{}", self.unit, self.cfg.host);
        job.failed_on = failed_on_after(&ran.outcome, &job.failed_on, &me);
        job.failures = failures_after(&ran.outcome, &job.failures, &me);
        match &ran.outcome {
            Outcome::Succeeded => tracing::debug!("job {} succeeded", job.id),
            o => tracing::info!("job {} attempt {}: {} {}", job.id, job.attempt, o.kind(), tail(o.message(), 300)),
        }
        self.redecide(job, ran, policy)
    }

    /// What happens to a job already charged with its attempt, after the fleet's verdicts.
    fn redecide(&mut self, job: &Job, ran: &Ran, policy: &RetryPolicy) -> Action {
        let charges = self.charges(job);
        if charges.forgiven > 0 && ran.outcome != Outcome::Succeeded {
            tracing::info!("job {}: {} failure(s) on quarantined workers not charged to it", job.id, charges.forgiven);
        }
        let left = job.time_left(ran.finished);
        decide(&ran.outcome, job.attempt, left, policy, self.jitter.unit(), &charges)
    }
}

/// Turns a finished attempt's event into its decision's. What the worker can know: a success
/// whose acknowledgement never reached the broker is not a completion (the job runs again),
/// and says so.
fn tell_decision(done: &mut JobEvent, action: Action, ack_lost: bool) {
    match action {
        Action::Ack if ack_lost => {
            done.event = EventKind::AckLost;
            done.reason = Some(
                "the handler succeeded, but the acknowledgement could not be handed to the broker: the job runs again"
                    .into(),
            );
        }
        Action::Ack => done.event = EventKind::Succeeded,
        Action::Retry { delay } => {
            done.event = EventKind::RetryScheduled;
            done.retry_delay_s = Some(delay.as_secs_f64());
        }
        Action::DeadLetter { reason, .. } => {
            done.event = EventKind::DeadLettered;
            done.reason = Some(reason.as_str().into());
        }
        Action::Requeue { why } => {
            done.event = EventKind::Requeued;
            done.reason = Some(why);
        }
    }
}
