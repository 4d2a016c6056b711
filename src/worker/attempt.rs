//! One attempt: the handler runs the job under its deadlines (the class's `timeout` and the
//! job's deadline), and is stopped early by a drain's deadline, a requeue asked for now, or the
//! loss of the job to the broker (the delivery's channel closed, the lease not renewed).

use super::lease::Lease;
use super::Worker;
use crate::events::EventKind;
use crate::io::amqp::EventSender;
use crate::io::clock::now_ms;
use crate::io::control::worker_status;
use crate::io::handler::{Attempt, Beat, HandlerDown, Stop};
use crate::io::notify;
use crate::job::{rfc3339, EpochMs, Job};
use crate::outcome::Outcome;
use futures_lite::StreamExt;
use lapin::message::Delivery;
use lapin::Channel;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How an attempt went.
pub(super) struct Ran {
    pub(super) outcome: Outcome,
    pub(super) started: EpochMs,
    pub(super) finished: EpochMs,
    /// The job was lost to the broker while it ran (it runs elsewhere).
    pub(super) lost: bool,
    /// The last checkpoint its handler saved during this attempt.
    pub(super) checkpoint: Option<String>,
}

/// A running attempt's progress events go out when it first reports, then when its progress
/// moved on by [`PROGRESS_EVENT_STEP`] or this long has passed, at most once per
/// [`PROGRESS_EVENT_GAP`]: enough for the fleet's projections, few enough for a chatty handler.
const PROGRESS_EVENT_EVERY: Duration = Duration::from_secs(10);
const PROGRESS_EVENT_STEP: f64 = 0.1;
const PROGRESS_EVENT_GAP: Duration = Duration::from_secs(1);

/// The latest checkpoint of the running attempt, shared with its lease (renewed with it).
pub(super) type Checkpoint = Arc<Mutex<Option<String>>>;

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
        let since = rfc3339(started);
        let mut e = self.event_at(EventKind::Started, Some(job), since.clone());
        e.started_at = Some(since.clone());
        e.queue_wait_s = Some((started - job.submitted_at).max(0) as f64 / 1000.0);
        e.redelivered = Some(delivery.redelivered);
        let mut progress = e.clone();
        (progress.event, progress.queue_wait_s, progress.redelivered) = (EventKind::Progress, None, None);
        let at_once = e.delivery() == crate::events::Delivery::Transient;
        self.link.event(e).await;
        if at_once {
            // A redelivered job's start (JobEvent::delivery): let the events publisher hand it
            // to lapin's I/O loop before the handler starts, so that a job that kills its
            // worker at once does not take its start with it (the fleet learns that an attempt
            // vanished from a start without an end).
            tokio::task::yield_now().await;
        }
        if notify::enabled() {
            notify::status(&worker_status(&job.id, job.attempt, &since, None, None));
        }

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
        let (beats, mut reports) = mpsc::unbounded_channel::<Beat>();
        let checkpoint: Checkpoint = Arc::new(Mutex::new(None));
        if let Some(l) = lease.as_deref_mut() {
            l.follow(checkpoint.clone());
        }
        let reporter = report_progress(&mut reports, self.link.event_sender(), progress, &since, &checkpoint);
        let link = &mut self.link;
        let keeper = async {
            match lease.as_deref_mut() {
                Some(l) => l.keep(link, &lost).await,
                None => watch_delivery(delivery, chan, conn_events, &lost).await,
            }
            std::future::pending::<Infallible>().await
        };
        let heartbeat = self.class.heartbeat_timeout;
        let ran = tokio::select! {
            r = self.handler.run(Attempt { job, fence, limit, heartbeat, beats: &beats }, stop) => r,
            never = keeper => match never {},
            never = reporter => match never {},
        };
        // What the handler said last (exec mode's checkpoint file is read at the end).
        while let Ok(b) = reports.try_recv() {
            if let (Some(c), Ok(mut cell)) = (b.checkpoint, checkpoint.lock()) {
                *cell = Some(c);
            }
        }
        let checkpoint = checkpoint.lock().ok().and_then(|c| c.clone());
        let finished = now_ms();
        let outcome = ran.unwrap_or_else(|HandlerDown(why)| {
            tracing::error!("{why}");
            Outcome::Interrupted(why)
        });
        Ran { outcome, started, finished, lost: lost.is_cancelled(), checkpoint }
    }
}

/// Takes the running attempt's progress reports: keeps its latest checkpoint, shows its progress
/// in the worker's STATUS line, and tells it in `progress` events (the first at once, then at
/// most every [`PROGRESS_EVENT_EVERY`]). Never completes.
async fn report_progress(
    reports: &mut mpsc::UnboundedReceiver<Beat>,
    events: Option<EventSender>,
    template: crate::events::JobEvent,
    since: &str,
    checkpoint: &Checkpoint,
) -> Infallible {
    let mut last_event: Option<(tokio::time::Instant, Option<f64>)> = None;
    let (mut progress, mut note) = (None, None);
    while let Some(b) = reports.recv().await {
        if let (Some(c), Ok(mut cell)) = (b.checkpoint, checkpoint.lock()) {
            *cell = Some(c);
        }
        if b.progress.is_none() && b.note.is_none() {
            continue;
        }
        progress = b.progress.or(progress);
        note = b.note.or(note);
        let attempt = template.attempt.unwrap_or(1);
        let id = template.job_id.as_deref().unwrap_or("");
        if notify::enabled() {
            notify::status(&worker_status(id, attempt, since, progress.or(Some(0.0)), note.as_deref()));
        }
        let due = match last_event {
            None => true,
            Some((at, _)) if at.elapsed() < PROGRESS_EVENT_GAP => false,
            Some((at, told)) => {
                at.elapsed() >= PROGRESS_EVENT_EVERY
                    || progress.unwrap_or(0.0) - told.unwrap_or(0.0) >= PROGRESS_EVENT_STEP - 1e-9
            }
        };
        if !due {
            continue;
        }
        last_event = Some((tokio::time::Instant::now(), progress));
        if let Some(events) = &events {
            let mut e = template.clone();
            e.at = rfc3339(now_ms());
            e.started_at = Some(since.to_string());
            e.progress = progress;
            e.note = note.clone();
            events.send(&e).await;
        }
    }
    std::future::pending().await
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
    // A plain sleep, not an `Interval`: no allocation and no immediate first tick for the many
    // jobs that end within 20 ms (the job line was written before this is first polled).
    let poll = async {
        let every = Duration::from_millis(20);
        let tick = tokio::time::sleep(every);
        tokio::pin!(tick);
        loop {
            tick.as_mut().await;
            if gone() {
                return;
            }
            tick.as_mut().reset(tokio::time::Instant::now() + every);
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
