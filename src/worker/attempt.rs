//! One attempt: the handler runs the job under its deadlines (the class's `timeout` and the
//! job's deadline), and is stopped early by a drain's deadline, a requeue asked for now, or the
//! loss of the job to the broker (the delivery's channel closed, the lease not renewed).

use super::lease::Lease;
use super::Worker;
use crate::events::EventKind;
use crate::io::clock::now_ms;
use crate::io::handler::{Attempt, HandlerDown, Stop};
use crate::io::notify;
use crate::job::{rfc3339, EpochMs, Job};
use crate::outcome::Outcome;
use futures_lite::StreamExt;
use lapin::message::Delivery;
use lapin::Channel;
use std::convert::Infallible;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How an attempt went.
pub(super) struct Ran {
    pub(super) outcome: Outcome,
    pub(super) started: EpochMs,
    pub(super) finished: EpochMs,
    /// The job was lost to the broker while it ran (it runs elsewhere).
    pub(super) lost: bool,
}

impl Worker {
    /// Runs one attempt of `job`, held by `delivery` on `chan` or by `lease`, and says so in a
    /// `started` event.
    pub(super) async fn attempt(
        &mut self,
        job: &Job,
        delivery: &Delivery,
        chan: &Channel,
        mut lease: Option<&mut Lease>,
    ) -> Ran {
        let started = now_ms();
        let mut e = self.event(EventKind::Started, Some(job));
        e.started_at = Some(rfc3339(started));
        e.queue_wait_s = Some((started - job.submitted_at).max(0) as f64 / 1000.0);
        e.redelivered = Some(delivery.redelivered);
        self.link.event(e).await;
        notify::status(&format!("running job {} (attempt {}) since {}", job.id, job.attempt, rfc3339(started)));

        let limit = self.class.timeout.min(job.time_left(started));
        let lost = CancellationToken::new();
        let fence = next_fence();
        let conn_events = self.link.connection().map(|c| c.events_listener());
        let controls = self.controls.clone();
        let drain_deadline = self.cfg.worker.drain_deadline;
        let stop = async {
            tokio::select! {
                why = controls.drain_deadline_passed(drain_deadline) => Stop::gently(why),
                _ = controls.requeue_now.notified() => Stop::gently(controls.requeue_why()),
                // The broker has already handed the job to someone else: no grace.
                _ = lost.cancelled() => Stop::at_once("lost the job to the broker (channel closed or lease not renewed): it runs elsewhere"),
            }
        };
        let link = &mut self.link;
        let keeper = async {
            match lease.as_deref_mut() {
                Some(l) => l.keep(link, &lost).await,
                None => watch_delivery(delivery, chan, conn_events, &lost).await,
            }
            std::future::pending::<Infallible>().await
        };
        let ran = tokio::select! {
            r = self.handler.run(Attempt { job, fence, limit }, stop) => r,
            never = keeper => match never {},
        };
        let finished = now_ms();
        let outcome = ran.unwrap_or_else(|HandlerDown(why)| {
            tracing::error!("{why}");
            Outcome::Interrupted(why)
        });
        Ran { outcome, started, finished, lost: lost.is_cancelled() }
    }
}

/// The attempt's fencing value (`DROVER_FENCE`, INTERFACE.md): microseconds since the Unix
/// epoch when the attempt started, strictly increasing within this worker. A later attempt of
/// a job carries a larger value than an earlier one as long as the hosts' clocks agree to
/// better than the time the earlier attempt ran before it lost the job (ARCHITECTURE.md).
fn next_fence() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0);
    let mut prev = LAST.load(Ordering::SeqCst);
    loop {
        let next = now.max(prev + 1);
        match LAST.compare_exchange(prev, next, Ordering::SeqCst, Ordering::SeqCst) {
            Ok(_) => return next,
            Err(p) => prev = p,
        }
    }
}

/// Completes (by cancelling `lost`) when the delivery can no longer be acknowledged: at once
/// when the connection reports an error (the broker closed it, the socket broke), and within
/// 20 ms otherwise (for example when only the channel closed: the broker's consumer_timeout
/// closes the channel alone).
async fn watch_delivery(
    delivery: &Delivery,
    chan: &Channel,
    conn_events: Option<impl futures_lite::Stream<Item = lapin::Event>>,
    lost: &CancellationToken,
) {
    let gone = || delivery.acker.poisoned() || !chan.status().connected();
    let poll = async {
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        loop {
            tick.tick().await;
            if gone() {
                return;
            }
        }
    };
    let errors = async {
        let Some(events) = conn_events else { return std::future::pending().await };
        let mut events = std::pin::pin!(events);
        loop {
            match events.next().await {
                // Any channel's error is reported here too: only ours counts. The channel's
                // own state follows the connection's within moments.
                Some(lapin::Event::Error(_)) => {
                    for _ in 0..20 {
                        if gone() {
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
                None => return std::future::pending().await,
                Some(_) if gone() => return,
                Some(_) => {}
            }
        }
    };
    tokio::select! {
        _ = poll => {}
        _ = errors => {}
    }
    lost.cancel();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fences_grow_strictly() {
        let fences: Vec<u64> = (0..1000).map(|_| next_fence()).collect();
        assert!(fences.windows(2).all(|w| w[1] > w[0]));
        // Microseconds since the epoch: comparable across workers whose clocks agree.
        let now_us = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_micros();
        assert!((now_us as u64).abs_diff(fences[999]) < 10_000_000);
    }
}
