//! `drover work`: one worker. Consumes its class's queue, runs each job through the handler,
//! and records the decision on the broker. This module joins the pure decisions
//! ([`crate::outcome`]) to the adapters ([`crate::io::amqp`], [`crate::io::handler`]).
//!
//! Two ways of holding a running job, chosen per class at start-up and logged:
//! - **delivery**: the job's delivery stays unacknowledged while it runs; if the worker dies
//!   the broker redelivers it. If the channel is lost mid-job, the broker has already requeued
//!   the job for another worker, so this worker kills its copy at once rather than run it twice.
//! - **lease** (attempts that may outlast the broker's `consumer_timeout`, which would close the
//!   channel under a long job): at start a copy of the job is put in a queue of its own whose
//!   TTL dead-letters it back to the work queue, and the delivery is acknowledged. The worker
//!   renews the lease (a fresh copy, then the old queue deleted) every third of its TTL. If the
//!   worker dies, the copy comes back within one TTL; if the worker cannot renew before the TTL
//!   runs out, it kills its job, because the copy is about to run elsewhere.

use crate::config::{ClassConfig, Config};
use crate::duration;
use crate::events::{tail, EventKind, JobEvent};
use crate::io::amqp::{BrokerError, Link};
use crate::io::clock::now_ms;
use crate::io::handler::{Handler, HandlerDown, Identity, Stop};
use crate::io::notify;
use crate::io::preflight;
use crate::io::random::Jitter;
use crate::io::wire::{self, with_headers};
use crate::job::{self, rfc3339, Job};
use crate::maintenance::RequeueCause;
use crate::outcome::{
    admit, decide, failed_on_after, failures_after, hand_back, Action, Charges, DeadReason, Outcome, RetryPolicy,
};
use crate::reconcile::EXIT_MISCONFIGURED;
use crate::tasks::Tasks;
use futures_lite::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// What a worker shares with its signal handler.
struct Drain {
    token: CancellationToken,
    started: OnceLock<Instant>,
    consumer: Mutex<Option<(Channel, String)>>,
    /// Cordoned (SIGUSR1, undone by SIGUSR2): no new job; the running one goes on.
    cordoned: tokio::sync::watch::Sender<bool>,
    /// Requeue the running job now, without charge (a drain's deadline, an early requeue, a
    /// quarantine), with the reason the supervisor's signal gave.
    requeue_now: tokio::sync::Notify,
    requeue_why: Mutex<&'static str>,
    /// Probing (the probe signal): take exactly one job, then cordon again.
    probe: std::sync::atomic::AtomicBool,
}

impl Default for Drain {
    fn default() -> Self {
        Drain {
            token: CancellationToken::new(),
            started: OnceLock::new(),
            consumer: Mutex::new(None),
            cordoned: tokio::sync::watch::channel(false).0,
            requeue_now: tokio::sync::Notify::new(),
            requeue_why: Mutex::new(RequeueCause::DrainDeadline.reason()),
            probe: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

/// How long a worker started by a supervisor waits for the fleet's verdicts before its first job.
const VERDICTS_WAIT: Duration = Duration::from_secs(3);

/// The signal a supervisor sends to requeue the running job now, one per cause, so that the
/// worker's `requeued` event says why (a drain's deadline, an early requeue, a quarantine).
pub fn requeue_signal(cause: RequeueCause) -> i32 {
    libc::SIGRTMIN()
        + match cause {
            RequeueCause::DrainDeadline => 2,
            RequeueCause::DrainEarly => 4,
            RequeueCause::Quarantine => 5,
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

/// The signal a supervisor sends to a quarantined or paused worker whose hold ran out: take
/// exactly one job (the probe), then cordon again until the supervisor decides.
pub fn probe_signal() -> i32 {
    libc::SIGRTMIN() + 3
}

impl Drain {
    /// Starts draining: no new job, and the consumer is cancelled at once, even mid-job.
    fn begin(&self) {
        let _ = self.started.set(Instant::now());
        self.token.cancel();
        self.cancel_consumer();
    }

    /// Cordons: no new job; the running one goes on.
    fn cordon(&self, on: bool) {
        self.cordoned.send_replace(on);
        if on {
            self.cancel_consumer();
        }
    }

    fn cancel_consumer(&self) {
        let consumer = self.consumer.lock().ok().and_then(|mut c| c.take());
        if let Some((chan, tag)) = consumer {
            tokio::spawn(async move {
                let _ = tokio::time::timeout(
                    Duration::from_secs(5),
                    chan.basic_cancel(tag.as_str().into(), BasicCancelOptions::default()),
                )
                .await;
            });
        }
    }

    /// Completes when the drain deadline has passed (never when no drain was asked for).
    async fn deadline_passed(&self, deadline: Duration) -> String {
        self.token.cancelled().await;
        let started = self.started.get().copied().unwrap_or_else(Instant::now);
        tokio::time::sleep_until(started + deadline).await;
        format!("drain deadline ({}) reached", duration::format(deadline))
    }
}

struct Worker {
    cfg: Config,
    class: ClassConfig,
    unit: String,
    link: Link,
    handler: Handler,
    jitter: Jitter,
    drain: Arc<Drain>,
    uses_lease: bool,
    /// The supervisors' verdicts: which failures were a quarantined worker's fault, which
    /// workers died running a job.
    verdicts: Arc<Mutex<crate::verdicts::Fleet>>,
    verdicts_heard: Arc<tokio::sync::Notify>,
    /// The delivery being handled is a probe job.
    probing: bool,
}

/// Runs a worker until it is told to stop; returns the process exit status.
pub async fn run(cfg: Config, class_name: &str, instance: Option<String>) -> anyhow::Result<i32> {
    let class = cfg.class(class_name).map_err(anyhow::Error::msg)?.clone();
    let unit = unit_name(&cfg.systemd.unit_prefix, class_name, instance.as_deref());
    let who = Identity { class: class.name.clone(), host: cfg.host.clone(), unit: unit.clone() };
    let uses_lease = class.uses_lease(&cfg.broker, cfg.worker.kill_grace);
    let mut w = Worker {
        link: Link::new(&cfg.broker, &format!("drover work {unit}")),
        handler: Handler::new(&class, who, cfg.worker.kill_grace),
        jitter: Jitter::from_os(),
        drain: Arc::new(Drain::default()),
        cfg,
        class,
        unit: unit.clone(),
        uses_lease,
        verdicts: Arc::default(),
        verdicts_heard: Arc::default(),
        probing: false,
    };
    let tasks = Tasks::new();
    tasks.spawn(crate::io::fleet::follow_verdicts(
        w.cfg.clone(),
        w.verdicts.clone(),
        format!("drover work {unit}"),
        w.verdicts_heard.clone(),
        tasks.token().clone(),
    ));
    tasks.spawn(notify::watchdog_loop(tasks.token().clone()));
    spawn_signal_handler(w.drain.clone(), &tasks)?;
    w.explain_holding();
    let code = w.main().await;
    tasks.shutdown(Duration::from_secs(2)).await;
    code
}

fn unit_name(unit_prefix: &str, class: &str, instance: Option<&str>) -> String {
    match instance {
        // Under systemd the instance comes from the template, and the unit is its full name.
        Some(i) if std::env::var_os("INVOCATION_ID").is_some() => {
            format!("{unit_prefix}@{i}.service")
        }
        Some(i) => i.to_string(),
        None => format!("{class}-{}", std::process::id()),
    }
}

fn spawn_signal_handler(drain: Arc<Drain>, tasks: &Tasks) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut usr1 = signal(SignalKind::user_defined1())?;
    let mut usr2 = signal(SignalKind::user_defined2())?;
    let mut requeue = signal(SignalKind::from_raw(requeue_signal(RequeueCause::DrainDeadline)))?;
    let mut requeue_early = signal(SignalKind::from_raw(requeue_signal(RequeueCause::DrainEarly)))?;
    let mut requeue_quarantine = signal(SignalKind::from_raw(requeue_signal(RequeueCause::Quarantine)))?;
    let mut probe = signal(SignalKind::from_raw(probe_signal()))?;
    let d = drain.clone();
    let cancel = tasks.token().clone();
    tasks.spawn(async move {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = usr1.recv() => {
                    tracing::info!("cordoned: taking no new job; the running one goes on");
                    d.cordon(true);
                }
                _ = usr2.recv() => {
                    tracing::info!("cordon lifted: taking jobs again");
                    d.cordon(false);
                }
                _ = probe.recv() => {
                    tracing::info!("probing: taking one job, then cordoned again");
                    d.probe.store(true, std::sync::atomic::Ordering::SeqCst);
                    d.cordon(false);
                }
                cause = async {
                    tokio::select! {
                        _ = requeue.recv() => RequeueCause::DrainDeadline,
                        _ = requeue_early.recv() => RequeueCause::DrainEarly,
                        _ = requeue_quarantine.recv() => RequeueCause::Quarantine,
                    }
                } => {
                    tracing::info!("asked to requeue the running job now ({})", cause.reason());
                    if let Ok(mut why) = d.requeue_why.lock() {
                        *why = cause.reason();
                    }
                    d.requeue_now.notify_waiters();
                }
            }
        }
    });
    let cancel = tasks.token().clone();
    tasks.spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
            _ = cancel.cancelled() => return,
        }
        tracing::info!("asked to stop: draining (no new job; the running one may finish)");
        notify::status("draining");
        drain.begin();
    });
    Ok(())
}

impl Worker {
    fn explain_holding(&self) {
        let b = &self.cfg.broker;
        let (c, grace) = (&self.class, self.cfg.worker.kill_grace);
        if self.uses_lease {
            tracing::info!(
                "class {}: attempts may run {} (+{} kill grace); the broker's consumer_timeout is taken as {} \
                 (broker.consumer_timeout; AMQP cannot read the broker's setting), which would close the channel \
                 under such a job and hand it to another worker. So each job runs under a broker-held lease: the \
                 delivery is acknowledged at start and a copy waits in a lease queue ({}.lease.*), renewed every {}; \
                 if this worker dies the copy returns to the queue within {}",
                c.name,
                duration::format(c.timeout),
                duration::format(grace),
                duration::format(b.consumer_timeout),
                b.prefix,
                duration::format(b.lease_ttl / 3),
                duration::format(b.lease_ttl),
            );
        } else {
            tracing::info!(
                "class {}: attempts end within {} (+{} grace), inside the broker's consumer_timeout of {} \
                 (broker.consumer_timeout): each job holds its unacknowledged delivery while it runs",
                c.name,
                duration::format(c.timeout),
                duration::format(grace),
                duration::format(b.consumer_timeout),
            );
        }
    }

    async fn main(&mut self) -> anyhow::Result<i32> {
        notify::status("connecting to the broker");
        if self.link.ensure_up(None, &self.drain.token).await.is_err() {
            return Ok(0); // stopped before the broker came
        }
        if let Err(failure) = preflight::run(&self.class.preflight, self.cfg.worker.preflight_timeout).await {
            tracing::error!("{failure}; taking no job (exit {EXIT_MISCONFIGURED}: not to be restarted)");
            notify::status(&format!("misconfigured: {failure}"));
            let mut e = self.event(EventKind::Misconfigured, None);
            e.reason = Some(format!("preflight check {:?} failed ({})", failure.check, failure.status));
            e.detail = Some(failure.output.clone());
            self.link.event(e).await;
            self.link.settle_events(self.cfg.broker.op_timeout).await;
            return Ok(EXIT_MISCONFIGURED);
        }
        notify::status("starting the handler");
        if let Err(e) = self.handler.prepare().await {
            tracing::error!("{e}");
            return Ok(1);
        }
        if std::env::var_os("INVOCATION_ID").is_some() {
            // Run by a supervisor: hear the fleet's verdicts before the first job, so that a
            // freshly restarted worker does not run a job that already killed its workers.
            notify::status("asking the supervisors for their verdicts");
            if tokio::time::timeout(VERDICTS_WAIT, self.verdicts_heard.notified()).await.is_err() {
                tracing::warn!(
                    "no supervisor's verdicts within {}; taking jobs anyway",
                    duration::format(VERDICTS_WAIT)
                );
            }
        }
        notify::ready();
        notify::status("idle");
        tracing::info!(
            "worker {} ready for class {} on {}",
            self.unit,
            self.class.name,
            self.link.names.work(&self.class.name)
        );

        let code = loop {
            if self.drain.token.is_cancelled() {
                break 0;
            }
            if self.link.ensure_up(None, &self.drain.token).await.is_err() {
                break 0;
            }
            match self.consume().await {
                Ok(Some(code)) => break code,
                Ok(None) => continue, // reconnect
                Err(e) => {
                    tracing::warn!("broker trouble: {e}; reconnecting");
                    self.link.mark_down();
                }
            }
        };
        notify::stopping();
        self.link.settle_events(self.cfg.broker.op_timeout).await;
        self.handler.shutdown().await;
        if let Some(conn) = self.link.connection() {
            let _ = tokio::time::timeout(Duration::from_secs(5), conn.close(200, "worker stopping".into())).await;
        }
        tracing::info!("worker {} stopped", self.unit);
        Ok(code)
    }

    /// Subscribes and handles deliveries until the link breaks (`None`) or the worker is done.
    async fn consume(&mut self) -> Result<Option<i32>, BrokerError> {
        self.link.declare_class(&self.class.name).await?;
        let chan = self.link.consumer_channel(self.class.prefetch).await?;
        let queue = self.link.names.work(&self.class.name);
        let mut cordon = self.drain.cordoned.subscribe();
        let mut subscriptions = 0u32;
        loop {
            if *cordon.borrow_and_update() {
                notify::status("cordoned: taking no new job");
                tokio::select! {
                    _ = cordon.wait_for(|c| !*c) => {}
                    _ = self.drain.token.cancelled() => return Ok(Some(0)),
                }
                if !chan.status().connected() {
                    return Ok(None);
                }
                notify::status("idle");
            }
            subscriptions += 1;
            let tag = format!("{}#{subscriptions}", self.unit);
            let mut consumer = crate::io::amqp::deadline(
                self.cfg.broker.op_timeout,
                "basic.consume",
                chan.basic_consume(
                    queue.as_str().into(),
                    tag.as_str().into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                ),
            )
            .await?;
            if let Ok(mut c) = self.drain.consumer.lock() {
                *c = Some((chan.clone(), tag.clone()));
            }
            if self.drain.token.is_cancelled() || *cordon.borrow() {
                let _ = chan.basic_cancel(tag.as_str().into(), BasicCancelOptions::default()).await;
            }
            let stop = loop {
                let next = tokio::select! {
                    d = consumer.next() => d,
                    _ = self.drain.token.cancelled() => break Some(0),
                    _ = cordon.wait_for(|c| *c) => break None,
                };
                let stopping = self.drain.token.is_cancelled() || *cordon.borrow();
                match next {
                    Some(Ok(delivery)) => {
                        if stopping {
                            requeue_quietly(&delivery).await;
                            continue;
                        }
                        let probing = self.drain.probe.swap(false, std::sync::atomic::Ordering::SeqCst);
                        if probing {
                            // Before the job, so that no second delivery is taken meanwhile.
                            self.drain.cordon(true);
                        }
                        self.probing = probing;
                        let handled = self.handle(delivery, &chan).await;
                        self.probing = false;
                        if probing {
                            tracing::info!("probe job done: cordoned until the supervisor decides");
                        }
                        if let Err(e) = handled {
                            tracing::warn!("broker trouble while recording a result: {e}");
                            return Ok(None);
                        }
                        if let Handler::Persistent(_) = self.handler {
                            if let Err(HandlerDown(e)) = self.handler.prepare().await {
                                tracing::error!("{e}");
                                return Ok(Some(1));
                            }
                        }
                    }
                    Some(Err(e)) => {
                        tracing::warn!("consumer failed: {e}");
                        self.link.mark_down();
                        return Ok(None);
                    }
                    None if self.drain.token.is_cancelled() => break Some(0),
                    None if *cordon.borrow() => break None,
                    None => {
                        tracing::warn!("the broker cancelled the consumer; subscribing again");
                        self.link.mark_down();
                        return Ok(None);
                    }
                }
            };
            // Stopped taking jobs (drain or cordon): a delivery already on its way goes back.
            self.drain.cancel_consumer();
            while let Ok(Some(Ok(d))) = tokio::time::timeout(Duration::from_millis(200), consumer.next()).await {
                requeue_quietly(&d).await;
            }
            if stop.is_some() {
                return Ok(stop);
            }
        }
    }

    fn event(&self, kind: EventKind, job: Option<&Job>) -> JobEvent {
        let mut e = JobEvent::new(kind, rfc3339(now_ms()), &self.class.name, &self.cfg.host, &self.unit);
        if let Some(j) = job {
            e.job_id = Some(j.id.clone());
            e.tenant = j.tenant.clone();
            e.attempt = Some(j.attempt);
            e.submitted_at = Some(rfc3339(j.submitted_at));
            e.deadline = Some(rfc3339(j.deadline));
        }
        e
    }

    /// Runs one delivery to its end. An error means the broker went away while the result was
    /// being recorded; the delivery is then the broker's again (it requeues unacknowledged
    /// deliveries of a closed channel) or the lease's.
    async fn handle(&mut self, delivery: Delivery, chan: &Channel) -> Result<(), BrokerError> {
        let now = now_ms();
        let job = match Job::decode(
            &wire::envelope(&delivery.properties),
            &delivery.data,
            &self.class.name,
            self.class.deadline,
            now,
        ) {
            Ok(j) => j,
            Err(why) => {
                tracing::warn!("undecodable message dead-lettered: {why}");
                let mut e = self.event(EventKind::DeadLettered, None);
                e.job_id = delivery.properties.message_id().as_ref().map(|s| s.as_str().to_string());
                e.reason = Some(DeadReason::Undecodable.as_str().into());
                e.detail = Some(why.clone());
                self.dead_letter(&delivery.properties, &delivery.data, DeadReason::Undecodable, &why).await?;
                ack(&delivery).await;
                self.link.event(e).await;
                return Ok(());
            }
        };
        let policy = RetryPolicy {
            max_attempts: self.class.max_attempts,
            backoff: self.class.retry,
            poison_after: self.class.poison_after,
        };
        let charges = self.charges(&job);
        if let Some(Action::DeadLetter { reason, detail }) = admit(Some(job.time_left(now)), &charges, &policy) {
            tracing::info!("job {} dead-lettered without running: {detail}", job.id);
            self.dead_letter(&delivery.properties, &delivery.data, reason, &detail).await?;
            ack(&delivery).await;
            let mut e = self.event(EventKind::DeadLettered, Some(&job));
            e.reason = Some(reason.as_str().into());
            e.detail = Some(detail);
            self.link.event(e).await;
            return Ok(());
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
                    requeue_quietly(&delivery).await;
                    return Err(e);
                }
            }
        }

        let started = now_ms();
        let mut e = self.event(EventKind::Started, Some(&job));
        e.started_at = Some(rfc3339(started));
        e.queue_wait_s = Some((started - job.submitted_at).max(0) as f64 / 1000.0);
        e.redelivered = Some(delivery.redelivered);
        self.link.event(e).await;
        notify::status(&format!("running job {} (attempt {}) since {}", job.id, job.attempt, rfc3339(started)));

        let limit = self.class.timeout.min(job.time_left(started));
        let lost = CancellationToken::new();
        let fence = next_fence();
        let conn_events = self.link.connection().map(|c| c.events_listener());
        let outcome = {
            let drain = self.drain.clone();
            let drain_deadline = self.cfg.worker.drain_deadline;
            let lost_ref = &lost;
            let stop = async move {
                tokio::select! {
                    why = drain.deadline_passed(drain_deadline) => Stop::gently(why),
                    _ = drain.requeue_now.notified() => {
                        Stop::gently(drain.requeue_why.lock().map(|w| *w).unwrap_or("requeued on request"))
                    }
                    // The broker has already handed the job to someone else: no grace.
                    _ = lost_ref.cancelled() => Stop::at_once("lost the job to the broker (channel closed or lease not renewed): it runs elsewhere"),
                }
            };
            let link = &mut self.link;
            let keeper = async {
                match lease.as_mut() {
                    Some(l) => l.keep(link, lost_ref).await,
                    None => watch_delivery(&delivery, chan, conn_events, lost_ref).await,
                }
                std::future::pending::<()>().await
            };
            tokio::select! {
                r = self.handler.run(&job, fence, limit, stop) => r,
                _ = keeper => unreachable!("the keeper never completes"),
            }
        };
        let finished = now_ms();
        let outcome = match outcome {
            Ok(o) => o,
            Err(HandlerDown(why)) => {
                tracing::error!("{why}");
                Outcome::Interrupted(why)
            }
        };

        let mut done = self.event(EventKind::Failed, Some(&job));
        done.started_at = Some(rfc3339(started));
        done.finished_at = Some(rfc3339(finished));
        done.duration_s = Some((finished - started) as f64 / 1000.0);
        done.outcome = Some(outcome.kind().into());
        if !outcome.message().is_empty() {
            done.detail = Some(tail(outcome.message(), 2048));
        }

        if lost.is_cancelled() && lease.is_none() {
            tracing::warn!(
                "job {}: the channel closed under it; the broker has requeued it and will deliver it again",
                job.id
            );
            done.event = EventKind::Requeued;
            done.reason = Some("broker channel lost".into());
            self.link.event(done).await;
            notify::status("idle");
            return Ok(());
        }

        let me = format!("{}@{}", self.unit, self.cfg.host);
        let mut job = job;
        job.failed_on = failed_on_after(&outcome, &job.failed_on, &me);
        job.failures = failures_after(&outcome, &job.failures, &me);
        let charges = self.charges(&job);
        if charges.forgiven > 0 && outcome != Outcome::Succeeded {
            tracing::info!("job {}: {} failure(s) on quarantined workers not charged to it", job.id, charges.forgiven);
        }
        let action = decide(&outcome, job.attempt, job.time_left(finished), &policy, self.jitter.unit(), &charges);
        match &outcome {
            Outcome::Succeeded => tracing::debug!("job {} succeeded", job.id),
            o => tracing::info!("job {} attempt {}: {} {}", job.id, job.attempt, o.kind(), tail(o.message(), 300)),
        }
        let recorded = match lease.as_mut() {
            Some(l) => l.finish(&mut self.link, &action, &job, &self.cfg.host, &self.unit).await,
            None => self.settle(&delivery, &action, &job).await,
        };
        // The attempt failed: say so, before the decision. An interrupted attempt (a drain, a
        // stop, a requeue on request) did not fail: its decision event (`requeued`) says what
        // happened, and nothing counts it as a failure (issue 11: a reboot showed a failure
        // for every job it moved).
        if !matches!(outcome, Outcome::Succeeded | Outcome::Interrupted(_)) {
            self.link.event(done.clone()).await;
        }
        // What the worker can know: a success whose acknowledgement never reached the broker
        // is not a completion (the job runs again), and says so.
        let ack_lost = matches!(recorded, Ok(false));
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
        self.link.event(done).await;
        notify::status(if self.drain.token.is_cancelled() { "draining" } else { "idle" });
        recorded.map(|_| ())
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

    /// Records the decision for a job that holds its delivery; `Ok(false)` when the
    /// acknowledgement could not be handed to the broker (it will deliver the job again).
    async fn settle(&mut self, delivery: &Delivery, action: &Action, job: &Job) -> Result<bool, BrokerError> {
        if !delivery.acker.usable() {
            tracing::warn!(
                "job {}: the channel closed before the result was recorded; the broker will deliver it again",
                job.id
            );
            return Ok(false);
        }
        Ok(match action {
            Action::Ack => ack(delivery).await,
            Action::Retry { delay } => {
                self.publish_retry(&delivery.properties, &delivery.data, job, *delay).await?;
                ack(delivery).await
            }
            Action::DeadLetter { reason, detail } => {
                self.dead_letter(&delivery.properties, &delivery.data, *reason, detail).await?;
                ack(delivery).await
            }
            Action::Requeue { .. } => {
                requeue_quietly(delivery).await;
                true
            }
        })
    }

    async fn publish_retry(
        &mut self,
        props: &BasicProperties,
        body: &[u8],
        job: &Job,
        delay: Duration,
    ) -> Result<(), BrokerError> {
        let work = self.link.names.work(&self.class.name);
        let exchange = self.link.declare_delay(delay).await?.unwrap_or_default();
        let props = with_headers(props, job.headers(job.attempt + 1));
        self.link.publish(&exchange, &work, body, props).await
    }

    /// Gives a retry back to the broker, uncharged, for a host it has not failed on: it returns
    /// to the work queue after `delay`.
    async fn hand_back(
        &mut self,
        delivery: &Delivery,
        job: &Job,
        delay: Duration,
        now: i64,
    ) -> Result<(), BrokerError> {
        let work = self.link.names.work(&self.class.name);
        let exchange = self.link.declare_delay(delay).await?.unwrap_or_default();
        let props = with_headers(&delivery.properties, job.hand_back_headers(now));
        self.link.publish(&exchange, &work, &delivery.data, props).await?;
        ack(delivery).await;
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

    async fn dead_letter(
        &mut self,
        props: &BasicProperties,
        body: &[u8],
        reason: DeadReason,
        detail: &str,
    ) -> Result<(), BrokerError> {
        let dead = self.link.names.dead(&self.class.name);
        let props =
            with_headers(props, job::dead_headers(reason.as_str(), detail, now_ms(), &self.cfg.host, &self.unit));
        self.link.publish("", &dead, body, props).await
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

async fn requeue_quietly(delivery: &Delivery) {
    let _ = delivery.acker.nack(BasicNackOptions { requeue: true, ..Default::default() }).await;
}

/// Completes (by cancelling `lost`) when the delivery can no longer be acknowledged: at once
/// when the connection reports an error (the broker closed it, the socket broke), and within
/// 20 ms otherwise (for example when only the channel closed (the broker's consumer_timeout closes the channel alone).
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

/// A broker-held lease on a running job (see the module doc).
struct Lease {
    class: String,
    job_id: String,
    generation: u32,
    queue: String,
    props: BasicProperties,
    body: Vec<u8>,
    renewed: Instant,
    ttl: Duration,
}

impl Lease {
    async fn take(link: &mut Link, job: &Job, delivery: &Delivery) -> Result<Lease, BrokerError> {
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

    fn expires(&self) -> Instant {
        self.renewed + self.ttl
    }

    /// Renews the lease every third of its TTL; cancels `lost` when that became impossible.
    async fn keep(&mut self, link: &mut Link, lost: &CancellationToken) {
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
        let next = link.names.lease(&self.class, &self.job_id, self.generation + 1);
        link.declare_lease(&next, &self.class, self.ttl).await?;
        link.publish("", &next, &self.body, self.props.clone()).await?;
        let old = std::mem::replace(&mut self.queue, next);
        self.generation += 1;
        self.renewed = Instant::now();
        link.delete_queue(&old).await
    }

    /// Records the decision, then releases the lease. Retries across reconnects until the lease
    /// would expire anyway; past that the copy returns to the queue and the job runs again.
    async fn finish(
        &mut self,
        link: &mut Link,
        action: &Action,
        job: &Job,
        host: &str,
        unit: &str,
    ) -> Result<bool, BrokerError> {
        let give_up = self.expires() - Duration::from_millis(500);
        let work = link.names.work(&self.class);
        let mut published = matches!(action, Action::Ack);
        loop {
            let attempt = async {
                if !published {
                    match action {
                        Action::Retry { delay } => {
                            let exchange = link.declare_delay(*delay).await?.unwrap_or_default();
                            let props = with_headers(&self.props, job.headers(job.attempt + 1));
                            link.publish(&exchange, &work, &self.body, props).await?;
                        }
                        Action::DeadLetter { reason, detail } => {
                            let props = with_headers(
                                &self.props,
                                job::dead_headers(reason.as_str(), detail, now_ms(), host, unit),
                            );
                            let dead = link.names.dead(&self.class);
                            link.publish("", &dead, &self.body, props).await?;
                        }
                        Action::Requeue { .. } => link.publish("", &work, &self.body, self.props.clone()).await?,
                        Action::Ack => {}
                    }
                    published = true;
                }
                link.delete_queue(&self.queue).await
            };
            match attempt.await {
                Ok(()) => return Ok(true),
                Err(e) if Instant::now() >= give_up => {
                    tracing::error!(
                        "job {}: result not recorded before the lease expired ({e}); it will run again",
                        self.job_id
                    );
                    return Ok(false);
                }
                Err(e) => {
                    tracing::warn!("job {}: recording the result failed ({e}); retrying", self.job_id);
                    let _ = link.ensure_up_by(give_up).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_requeue_cause_has_a_signal_of_its_own() {
        let causes = [RequeueCause::DrainDeadline, RequeueCause::DrainEarly, RequeueCause::Quarantine];
        let mut signals: Vec<i32> = causes.iter().map(|c| requeue_signal(*c)).collect();
        signals.push(probe_signal());
        let mut unique = signals.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), signals.len(), "{signals:?}");
        assert!(signals.iter().all(|s| (libc::SIGRTMIN()..=libc::SIGRTMAX()).contains(s)), "{signals:?}");
    }

    #[test]
    fn fences_grow_strictly() {
        let fences: Vec<u64> = (0..1000).map(|_| next_fence()).collect();
        assert!(fences.windows(2).all(|w| w[1] > w[0]));
        // Microseconds since the epoch: comparable across workers whose clocks agree.
        let now_us = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_micros();
        assert!((now_us as u64).abs_diff(fences[999]) < 10_000_000);
    }
}
