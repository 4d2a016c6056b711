//! The one executor of decisions: turns an [`Action`] (or a hand-back) into broker operations,
//! for a job held as a delivery and for a leased job alike. A decision publishes at most one
//! message ([`Out`], its headers written by [`crate::job`]), then lets go of the job: a
//! delivery is acknowledged (or, given back unchanged, nacked), a lease's copy is purged.

use super::lease::Lease;
use super::Worker;
use crate::io::amqp::BrokerError;
use crate::io::clock::now_ms;
use crate::io::wire::with_headers;
use crate::job::{self, Headers, Job};
use crate::outcome::{Action, DeadReason};
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use lapin::BasicProperties;
use std::time::Duration;
use tokio::time::Instant;

/// How the worker holds the job a decision is about.
pub(super) enum Held<'a> {
    /// An unacknowledged delivery.
    Delivery(&'a Delivery),
    /// A lease copy in a queue of its own (the delivery was acknowledged when it was taken).
    Lease(&'a mut Lease),
}

/// What carrying out a decision publishes before the job is let go.
pub(super) enum Out {
    /// Nothing (a success).
    Nothing,
    /// To the work queue through the delay rung for the delay: a retry, a hand-back.
    Delayed(Duration, Headers),
    /// To the class's dead-letter queue.
    Dead(Headers),
    /// The job goes back, uncharged: as it is (a delivery by a nack, a lease copy published
    /// unchanged to the work queue), or with these headers (its handler's new checkpoint).
    GiveBack(Option<Headers>),
}

impl Worker {
    /// Carries out `action` on `job`. `Ok(false)` when the job could not be let go (a
    /// delivery's acknowledgement not handed to the broker, a lease not released before it
    /// expired): the job then runs again.
    pub(super) async fn execute(&mut self, action: &Action, job: &Job, held: Held<'_>) -> Result<bool, BrokerError> {
        let out = match action {
            Action::Ack => Out::Nothing,
            // The one place the attempt number moves on.
            Action::Retry { delay } => Out::Delayed(*delay, job.headers(job.attempt + 1)),
            Action::DeadLetter { reason, detail } => Out::Dead(self.dead_headers(*reason, detail)),
            Action::Requeue { .. } => Out::GiveBack(job.checkpoint.as_ref().map(|_| job.headers(job.attempt))),
        };
        self.carry_out(out, held).await
    }

    /// The headers of a dead letter written by this worker.
    pub(super) fn dead_headers(&self, reason: DeadReason, detail: &str) -> Headers {
        job::dead_headers(reason.as_str(), detail, now_ms(), &self.cfg.host, &self.unit)
    }

    /// Publishes `out`, then lets go of the job.
    pub(super) async fn carry_out(&mut self, out: Out, held: Held<'_>) -> Result<bool, BrokerError> {
        match held {
            Held::Delivery(delivery) => {
                if let Out::GiveBack(None) = out {
                    requeue_quietly(delivery).await;
                    return Ok(true);
                }
                self.publish(&out, &delivery.properties, &delivery.data).await?;
                Ok(ack(delivery).await)
            }
            Held::Lease(lease) => Ok(self.release(&out, lease).await),
        }
    }

    /// Publishes `out`, then purges the lease's copy. Retries across reconnects until the
    /// lease would expire anyway; past that the copy returns to the queue and the job runs
    /// again (`false`).
    async fn release(&mut self, out: &Out, lease: &mut Lease) -> bool {
        let give_up = lease.expires() - Duration::from_millis(500);
        let mut published = false;
        loop {
            let attempt = async {
                if !published {
                    self.publish(out, &lease.props, &lease.body).await?;
                    published = true;
                }
                lease.let_go(&mut self.link).await
            };
            match attempt.await {
                Ok(()) => return true,
                Err(e) if Instant::now() >= give_up => {
                    lease.abandon();
                    tracing::error!(
                        "job {}: result not recorded before the lease expired ({e}); it will run again",
                        lease.job_id
                    );
                    return false;
                }
                Err(e) => {
                    tracing::warn!("job {}: recording the result failed ({e}); retrying", lease.job_id);
                    let _ = self.link.ensure_up_by(give_up).await;
                }
            }
        }
    }

    /// Publishes the one message `out` asks for, a copy of the job's (`props`, `body`).
    async fn publish(&mut self, out: &Out, props: &BasicProperties, body: &[u8]) -> Result<(), BrokerError> {
        let class = &self.class.name;
        match out {
            Out::Nothing => Ok(()),
            Out::Delayed(delay, headers) => {
                let work = self.link.names.work(class);
                self.link.publish_delayed(*delay, &work, body, with_headers(props, headers.clone())).await
            }
            Out::Dead(headers) => {
                let dead = self.link.names.dead(class);
                self.link.publish("", &dead, body, with_headers(props, headers.clone())).await
            }
            Out::GiveBack(headers) => {
                let work = self.link.names.work(class);
                let props = match headers {
                    Some(h) => with_headers(props, h.clone()),
                    None => props.clone(),
                };
                self.link.publish("", &work, body, props).await
            }
        }
    }
}

/// Acknowledges; false when the acknowledgement could not be handed to the broker.
async fn ack(delivery: &Delivery) -> bool {
    match delivery.acker.ack(BasicAckOptions::default()).await {
        Ok(true) => true,
        Ok(false) => {
            tracing::warn!("acknowledgement not sent: the channel is gone; the broker will deliver the job again");
            false
        }
        Err(e) => {
            tracing::warn!("acknowledgement failed ({e}); the broker will deliver the job again");
            false
        }
    }
}

/// Gives a delivery back to the broker unchanged (nack with requeue), without waiting to know.
pub(super) async fn requeue_quietly(delivery: &Delivery) {
    let _ = delivery.acker.nack(BasicNackOptions { requeue: true, ..Default::default() }).await;
}
