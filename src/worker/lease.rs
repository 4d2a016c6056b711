//! A broker-held lease on a running job (see the module doc of [`super`]): a copy of the job in
//! a queue of its own whose TTL dead-letters it back to the work queue, renewed every third of
//! its TTL. The decision on a leased job is carried out by [`super::execute`], like any other.

use crate::io::amqp::{BrokerError, Link};
use crate::io::wire::with_headers;
use crate::job::Job;
use lapin::message::Delivery;
use lapin::options::BasicAckOptions;
use lapin::BasicProperties;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub(super) struct Lease {
    class: String,
    pub(super) job_id: String,
    generation: u32,
    pub(super) queue: String,
    /// The copy's properties and body: what a decision on the job publishes.
    pub(super) props: BasicProperties,
    pub(super) body: Vec<u8>,
    renewed: Instant,
    ttl: Duration,
    /// The running attempt's latest checkpoint: each renewal's copy carries it.
    checkpoint: Option<super::attempt::Checkpoint>,
}

impl Lease {
    /// Puts a copy of the job in a lease queue, then acknowledges the delivery.
    pub(super) async fn take(link: &mut Link, job: &Job, delivery: &Delivery) -> Result<Lease, BrokerError> {
        let ttl = link.cfg.lease_ttl;
        let mut lease = Lease {
            class: job.class.clone(),
            job_id: job.id.clone(),
            generation: 0,
            queue: link.names.lease(&job.class, &job.id, 0),
            props: with_headers(&delivery.properties, job.headers(job.attempt)),
            body: delivery.data.clone(),
            renewed: Instant::now(),
            ttl,
            checkpoint: None,
        };
        link.declare_lease(&lease.queue, &lease.class, ttl).await?;
        link.publish("", &lease.queue, &lease.body, lease.props.clone()).await?;
        if !matches!(delivery.acker.ack(BasicAckOptions::default()).await, Ok(true)) {
            // The broker will redeliver the job: the lease copy must not come back as well.
            let _ = link.delete_queue(&lease.queue).await;
            return Err(BrokerError::Unavailable("channel closed before the lease was taken".into()));
        }
        lease.renewed = Instant::now();
        Ok(lease)
    }

    /// Renewals carry the running attempt's latest checkpoint from now on.
    pub(super) fn follow(&mut self, checkpoint: super::attempt::Checkpoint) {
        self.checkpoint = Some(checkpoint);
    }

    pub(super) fn expires(&self) -> Instant {
        self.renewed + self.ttl
    }

    /// Renews the lease every third of its TTL; cancels `lost` when that became impossible.
    pub(super) async fn keep(&mut self, link: &mut Link, lost: &CancellationToken) {
        let margin = Duration::from_secs(1).min(self.ttl / 4);
        loop {
            tokio::time::sleep_until(self.renewed + self.ttl / 3).await;
            let give_up = self.expires() - margin;
            loop {
                if link.ensure_up_by(give_up).await.is_err() {
                    tracing::error!(
                        "job {}: lease could not be renewed before it expired; stopping the job",
                        self.job_id
                    );
                    lost.cancel();
                    return;
                }
                match self.renew(link).await {
                    Ok(()) => break,
                    Err(e) => {
                        tracing::warn!("job {}: lease renewal failed ({e}); retrying", self.job_id)
                    }
                }
                if Instant::now() >= give_up {
                    lost.cancel();
                    return;
                }
            }
        }
    }

    async fn renew(&mut self, link: &mut Link) -> Result<(), BrokerError> {
        if let Some(c) = self.checkpoint.as_ref().and_then(|c| c.lock().ok().and_then(|c| c.clone())) {
            self.props = with_headers(&self.props, vec![(crate::job::H_CHECKPOINT, crate::job::HeaderValue::Str(c))]);
        }
        let next = link.names.lease(&self.class, &self.job_id, self.generation + 1);
        link.declare_lease(&next, &self.class, self.ttl).await?;
        link.publish("", &next, &self.body, self.props.clone()).await?;
        let old = std::mem::replace(&mut self.queue, next);
        self.generation += 1;
        self.renewed = Instant::now();
        link.delete_queue(&old).await
    }
}
