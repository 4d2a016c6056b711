//! What the operator's signals set, shared by the signal task, the loop and the running attempt:
//! draining, cordoned, probing, and a requeue of the running job asked for now.

use super::signals::Signal;
use crate::duration;
use crate::io::notify;
use crate::maintenance::RequeueCause;
use crate::tasks::Tasks;
use lapin::options::BasicCancelOptions;
use lapin::Channel;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How long the broker gets to cancel a consumer.
const CANCEL_TIMEOUT: Duration = Duration::from_secs(5);

pub(super) struct Controls {
    /// Cancelled when the worker is asked to stop: no new job; the running one may finish
    /// until the drain deadline.
    pub(super) drain: CancellationToken,
    drain_started: OnceLock<Instant>,
    /// The subscription to cancel when the worker stops taking jobs.
    consumer: Mutex<Option<(Channel, String)>>,
    /// Cordoned (SIGUSR1, undone by SIGUSR2): no new job; the running one goes on.
    pub(super) cordoned: watch::Sender<bool>,
    /// Requeue the running job now, without charge (a drain's deadline, an early requeue, a
    /// quarantine), with the reason the supervisor's signal gave.
    pub(super) requeue_now: Notify,
    requeue_why: Mutex<&'static str>,
    /// Probing (the probe signal): take exactly one job, then cordon again.
    probe: AtomicBool,
    /// The worker's tasks: consumer cancels run there, so that shutdown waits for them.
    tasks: Tasks,
}

impl Controls {
    pub(super) fn new(tasks: Tasks) -> Controls {
        Controls {
            drain: CancellationToken::new(),
            drain_started: OnceLock::new(),
            consumer: Mutex::new(None),
            cordoned: watch::channel(false).0,
            requeue_now: Notify::new(),
            requeue_why: Mutex::new(RequeueCause::DrainDeadline.reason()),
            probe: AtomicBool::new(false),
            tasks,
        }
    }

    /// Acts on one signal: the one place that does.
    pub(super) fn apply(&self, signal: Signal) {
        match signal {
            Signal::Stop => {
                if self.drain.is_cancelled() {
                    return; // already draining
                }
                tracing::info!("asked to stop: draining (no new job; the running one may finish)");
                notify::status("draining");
                self.begin_drain();
            }
            Signal::Cordon => {
                tracing::info!("cordoned: taking no new job; the running one goes on");
                self.cordon(true);
            }
            Signal::Uncordon => {
                tracing::info!("cordon lifted: taking jobs again");
                self.cordon(false);
            }
            Signal::Probe => {
                tracing::info!("probing: taking one job, then cordoned again");
                self.probe.store(true, Ordering::SeqCst);
                self.cordon(false);
            }
            Signal::Requeue(cause) => {
                tracing::info!("asked to requeue the running job now ({})", cause.reason());
                if let Ok(mut why) = self.requeue_why.lock() {
                    *why = cause.reason();
                }
                self.requeue_now.notify_waiters();
            }
        }
    }

    /// Starts draining: no new job, and the consumer is cancelled at once, even mid-job.
    fn begin_drain(&self) {
        let _ = self.drain_started.set(Instant::now());
        self.drain.cancel();
        self.cancel_consumer();
    }

    /// Cordons: no new job; the running one goes on.
    pub(super) fn cordon(&self, on: bool) {
        self.cordoned.send_replace(on);
        if on {
            self.cancel_consumer();
        }
    }

    /// Whether a probe was asked for; the next job taken is the probe (asked once).
    pub(super) fn take_probe(&self) -> bool {
        self.probe.swap(false, Ordering::SeqCst)
    }

    /// Remembers the subscription that [`Controls::cancel_consumer`] cancels.
    pub(super) fn subscribed(&self, chan: &Channel, tag: &str) {
        if let Ok(mut c) = self.consumer.lock() {
            *c = Some((chan.clone(), tag.to_string()));
        }
    }

    /// Cancels the subscription, if any, in a task of the worker's (it must not wait for the
    /// broker). The task ends within [`CANCEL_TIMEOUT`]; it does not watch the worker's token,
    /// because a drain, which cancels the consumer, is no reason to give up on the cancel.
    pub(super) fn cancel_consumer(&self) {
        let consumer = self.consumer.lock().ok().and_then(|mut c| c.take());
        if let Some((chan, tag)) = consumer {
            self.tasks.spawn(async move {
                let cancel = chan.basic_cancel(tag.as_str().into(), BasicCancelOptions::default());
                let _ = tokio::time::timeout(CANCEL_TIMEOUT, cancel).await;
            });
        }
    }

    /// Why the running job is to be requeued now (the last requeue signal's cause).
    pub(super) fn requeue_why(&self) -> &'static str {
        self.requeue_why.lock().map(|w| *w).unwrap_or("requeued on request")
    }

    /// Completes when the drain deadline has passed (never when no drain was asked for).
    pub(super) async fn drain_deadline_passed(&self, deadline: Duration) -> String {
        self.drain.cancelled().await;
        let started = self.drain_started.get().copied().unwrap_or_else(Instant::now);
        tokio::time::sleep_until(started + deadline).await;
        format!("drain deadline ({}) reached", duration::format(deadline))
    }
}
