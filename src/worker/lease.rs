//! A broker-held lease on a running job (see the module doc of [`super`]): a copy of the job in
//! one of the worker's two lease queues, whose TTL dead-letters it back to the work queue,
//! renewed every third of its TTL by a fresh copy in the other queue and a purge of the first.
//! The two queues are the worker process's own, declared once per process (a quorum queue is
//! a Raft group: one per renewal would be one per job every few minutes), and named with a
//! token of this process, so a restarted worker never purges the copy of a job its previous
//! life left to come back. The decision on a leased job is carried out by [`super::execute`],
//! like any other.

use crate::io::amqp::{BrokerError, Link};
use crate::io::wire::with_headers;
use crate::job::Job;
use lapin::message::Delivery;
use lapin::options::BasicAckOptions;
use lapin::BasicProperties;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// This process's lease queues' token; replaced after a lease that could not be let go, whose
/// copy must be left to come back rather than be purged by the next job's renewals.
static TOKEN: Mutex<Option<String>> = Mutex::new(None);

fn token(link: &Link, class: &str) -> String {
    let mut t = TOKEN.lock().unwrap_or_else(|e| e.into_inner());
    t.get_or_insert_with(|| {
        let token = format!("{}-{}", std::process::id(), &uuid::Uuid::new_v4().simple().to_string()[..8]);
        tracing::info!(
            "lease queues of this worker: {} and {}",
            link.names.lease(class, &token, 0),
            link.names.lease(class, &token, 1)
        );
        token
    })
    .clone()
}

pub(super) struct Lease {
    class: String,
    pub(super) job_id: String,
    token: String,
    slot: u8,
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
        let token = token(link, &job.class);
        let mut lease = Lease {
            class: job.class.clone(),
            job_id: job.id.clone(),
            queue: link.names.lease(&job.class, &token, 0),
            token,
            slot: 0,
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
            let _ = link.purge_queue(&lease.queue).await;
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

    /// A fresh copy in the other queue, then the old copy purged. Should the purge fail, the
    /// old copy stays until the next renewal purges it again (or it expires: the job would then
    /// also be queued, which is why the next renewal comes within a third of the TTL).
    async fn renew(&mut self, link: &mut Link) -> Result<(), BrokerError> {
        if let Some(c) = self.checkpoint.as_ref().and_then(|c| c.lock().ok().and_then(|c| c.clone())) {
            self.props = with_headers(&self.props, vec![(crate::job::H_CHECKPOINT, crate::job::HeaderValue::Str(c))]);
        }
        let slot = 1 - self.slot;
        let next = link.names.lease(&self.class, &self.token, slot);
        link.declare_lease(&next, &self.class, self.ttl).await?;
        link.publish("", &next, &self.body, self.props.clone()).await?;
        let old = std::mem::replace(&mut self.queue, next);
        self.slot = slot;
        self.renewed = Instant::now();
        link.purge_queue(&old).await
    }

    /// Removes the copy: the job's outcome is recorded.
    pub(super) async fn let_go(&mut self, link: &mut Link) -> Result<(), BrokerError> {
        let old = link.names.lease(&self.class, &self.token, 1 - self.slot);
        link.purge_queue(&self.queue).await?;
        // A copy left by a renewal whose purge failed.
        link.purge_queue(&old).await
    }

    /// The copy could not be removed and comes back to the work queue: later jobs use other
    /// lease queues, whose renewals cannot purge it.
    pub(super) fn abandon(&self) {
        let mut t = TOKEN.lock().unwrap_or_else(|e| e.into_inner());
        if t.as_deref() == Some(self.token.as_str()) {
            *t = None;
        }
    }
}
