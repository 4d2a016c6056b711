//! `drover work`: one worker. Consumes its class's queue, runs each job through the handler,
//! and records the decision on the broker. This module joins the pure decisions
//! ([`crate::outcome`]) to the adapters ([`crate::io::amqp`], [`crate::io::handler`]).
//!
//! Two ways of holding a running job, chosen per class at start-up and logged:
//! - **delivery**: the job's delivery stays unacknowledged while it runs; if the worker dies
//!   the broker redelivers it. If the channel is lost mid-job, the broker has already requeued
//!   the job for another worker, so this worker kills its copy at once rather than run it twice.
//! - **lease** (attempts that may outlast the broker's `consumer_timeout`, which would close the
//!   channel under a long job): at start a copy of the job is put in one of the worker's two
//!   lease queues, whose TTL dead-letters it back to the work queue, and the delivery is
//!   acknowledged. The worker renews the lease (a fresh copy in the other queue, then the first
//!   purged) every third of its TTL. If the
//!   worker dies, the copy comes back within one TTL; if the worker cannot renew before the TTL
//!   runs out, it kills its job, because the copy is about to run elsewhere.
//!
//! The files are the design:
//! - this one: [`run`], start-up, and the loop that subscribes, takes deliveries and stops
//!   taking them on a drain or a cordon;
//! - [`signals`]: the signals a worker obeys, one closed enum read in one task;
//! - `controls`: what those signals set (draining, cordoned, probing, a requeue asked for now);
//! - `delivery`: one delivery, from its decoding to its recorded decision;
//! - `attempt`: one attempt, the handler run under its deadlines;
//! - `execute`: the one executor of decisions, for deliveries and leases alike;
//! - `lease`: broker-held leases for long jobs.

mod attempt;
mod controls;
mod delivery;
mod execute;
mod lease;
pub mod signals;

pub use signals::{ignore_until_listening, probe_signal, requeue_signal};

use crate::config::{ClassConfig, Config};
use crate::duration;
use crate::events::{EventKind, JobEvent};
use crate::io::amqp::{BrokerError, Link};
use crate::io::clock::now_ms;
use crate::io::handler::{Handler, HandlerDown, Identity};
use crate::io::notify;
use crate::io::preflight;
use crate::io::random::Jitter;
use crate::job::{rfc3339, Job};
use crate::reconcile::EXIT_MISCONFIGURED;
use crate::tasks::Tasks;
use controls::Controls;
use execute::requeue_quietly;
use futures_lite::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Consumer};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// How long a worker started by a supervisor waits for the fleet's verdicts before its first job.
const VERDICTS_WAIT: Duration = Duration::from_secs(3);

struct Worker {
    cfg: Config,
    class: ClassConfig,
    unit: String,
    link: Link,
    handler: Handler,
    jitter: Jitter,
    controls: Arc<Controls>,
    uses_lease: bool,
    /// The supervisors' verdicts: which failures were a quarantined worker's fault, which
    /// workers died running a job.
    verdicts: Arc<Mutex<crate::verdicts::Fleet>>,
    verdicts_heard: Arc<tokio::sync::Notify>,
    /// The delivery being handled is a probe job.
    probing: bool,
}

/// Why the worker stopped taking deliveries from one subscription.
enum Paused {
    /// Asked to stop: done (exit 0), once the deliveries on their way are given back.
    Drained,
    /// Cordoned: the deliveries on their way are given back, then it waits for the cordon to
    /// lift.
    Cordoned,
    /// Leave the subscription at once: to reconnect (`None`) or to exit with a status.
    Leave(Option<i32>),
}

/// Runs a worker until it is told to stop; returns the process exit status.
pub async fn run(cfg: Config, class_name: &str, instance: Option<String>) -> anyhow::Result<i32> {
    let class = cfg.class(class_name).map_err(anyhow::Error::msg)?.clone();
    let unit = unit_name(&cfg.systemd.unit_prefix, class_name, instance.as_deref());
    let who = Identity { class: class.name.clone(), host: cfg.host.clone(), unit: unit.clone() };
    let uses_lease = class.uses_lease(&cfg.broker, cfg.worker.kill_grace);
    let tasks = Tasks::new();
    let mut w = Worker {
        link: Link::new(&cfg.broker, &format!("drover work {unit}")),
        handler: Handler::new(&class, who, cfg.worker.kill_grace),
        jitter: Jitter::from_os(),
        controls: Arc::new(Controls::new(tasks.clone())),
        cfg,
        class,
        unit: unit.clone(),
        uses_lease,
        verdicts: Arc::default(),
        verdicts_heard: Arc::default(),
        probing: false,
    };
    tasks.spawn(follow_verdicts(
        w.cfg.supervisor.socket.clone(),
        w.verdicts.clone(),
        w.verdicts_heard.clone(),
        tasks.token().clone(),
    ));
    tasks.spawn(notify::watchdog_loop(tasks.token().clone()));
    signals::listen(w.controls.clone(), &tasks)?;
    w.explain_holding();
    let code = w.main().await;
    tasks.shutdown(Duration::from_secs(2)).await;
    code
}

/// How often a worker asks its supervisor for the fleet's verdicts.
const VERDICTS_EVERY: Duration = Duration::from_secs(1);

/// Follows the fleet's verdicts through this host's supervisor (its control socket), not a
/// broker connection of its own: the judge sends them to each supervisor once, and its
/// workers ask it over the socket. Without a supervisor the worker goes on with what it
/// has; `heard` is notified at each answer.
async fn follow_verdicts(
    socket: std::path::PathBuf,
    into: Arc<Mutex<crate::verdicts::Fleet>>,
    heard: Arc<tokio::sync::Notify>,
    cancel: tokio_util::sync::CancellationToken,
) {
    let mut said = false;
    loop {
        match ask_verdicts(&socket, &into).await {
            Ok(()) => {
                heard.notify_one();
                said = false;
            }
            Err(e) if !said => {
                tracing::info!("no verdicts from a supervisor ({e:#}); going on with what this worker has");
                said = true;
            }
            Err(_) => {}
        }
        tokio::select! {
            _ = tokio::time::sleep(VERDICTS_EVERY) => {}
            _ = cancel.cancelled() => return,
        }
    }
}

/// One question to the supervisor for the fleet's verdicts, merged into `into`.
async fn ask_verdicts(socket: &std::path::Path, into: &Mutex<crate::verdicts::Fleet>) -> anyhow::Result<()> {
    let r = crate::io::control::request(socket, &crate::io::control::Request::Verdicts, Duration::from_secs(2)).await?;
    if !r.ok {
        anyhow::bail!("the supervisor said: {}", r.error.unwrap_or_default());
    }
    if let Ok(mut f) = into.lock() {
        f.expire(crate::io::clock::now_ms());
        r.verdicts.into_iter().for_each(|v| f.update(v));
    }
    Ok(())
}

impl Worker {
    /// Asks the supervisor for its newest verdicts now, before a decision that gives up on a
    /// job: the poll runs only every second, and a quarantine heard a moment ago forgives the
    /// failures that would make the job poison. Without an answer the worker keeps what it has.
    pub(super) async fn refresh_verdicts(&self) {
        if let Err(e) = ask_verdicts(&self.cfg.supervisor.socket, &self.verdicts).await {
            tracing::debug!("no fresh verdicts before giving up on a job: {e:#}");
        }
    }
}

/// The worker's name in events: under systemd its unit's full name (the instance comes from
/// the template), else the instance given, else the class and the process id.
fn unit_name(unit_prefix: &str, class: &str, instance: Option<&str>) -> String {
    match instance {
        Some(i) if std::env::var_os("INVOCATION_ID").is_some() => crate::reconcile::unit_name(unit_prefix, i),
        Some(i) => i.to_string(),
        None => format!("{class}-{}", std::process::id()),
    }
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
        if let Some(code) = self.start().await {
            return Ok(code);
        }
        let code = loop {
            if self.controls.drain.is_cancelled() {
                break 0;
            }
            if self.link.ensure_up(None, &self.controls.drain).await.is_err() {
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

    /// Connects, runs the preflight checks, prepares the handler and hears the fleet's
    /// verdicts; `Some(status)` when the worker must exit instead of taking jobs.
    async fn start(&mut self) -> Option<i32> {
        notify::status("connecting to the broker");
        if self.link.ensure_up(None, &self.controls.drain).await.is_err() {
            return Some(0); // stopped before the broker came
        }
        if let Err(problem) = self.check_broker().await {
            tracing::error!("{problem}; taking no job (exit {EXIT_MISCONFIGURED}: not to be restarted)");
            notify::status(&format!("misconfigured: {problem}"));
            return Some(EXIT_MISCONFIGURED);
        }
        if let Err(failure) = preflight::run(&self.class.preflight, self.cfg.worker.preflight_timeout).await {
            tracing::error!("{failure}; taking no job (exit {EXIT_MISCONFIGURED}: not to be restarted)");
            notify::status(&format!("misconfigured: {failure}"));
            let mut e = self.event(EventKind::Misconfigured, None);
            e.reason = Some(format!("preflight check {:?} failed ({})", failure.check, failure.status));
            e.detail = Some(failure.output.clone());
            self.link.event(e).await;
            self.link.settle_events(self.cfg.broker.op_timeout).await;
            return Some(EXIT_MISCONFIGURED);
        }
        notify::status("starting the handler");
        if let Err(e) = self.handler.prepare().await {
            tracing::error!("{e}");
            return Some(1);
        }
        if std::env::var_os("INVOCATION_ID").is_some() {
            // Run by a supervisor: hear the fleet's verdicts before the first job, so that a
            // freshly restarted worker does not run a job that already killed its workers.
            notify::status("asking the supervisor for the fleet's verdicts");
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
        None
    }

    /// The broker's policies against the configuration, and the class's queues declared as
    /// configured: `Err` when the worker must not take jobs.
    async fn check_broker(&mut self) -> Result<(), String> {
        use crate::io::policies::{check, Checked};
        let b = &self.cfg.broker;
        match check(b).await {
            Checked::NotConfigured => tracing::info!(
                "broker policies not checked: AMQP does not show them; set broker.management_url to have \
                 delivery limits, consumer timeouts and queue types of policies on {}.* checked at start-up",
                b.prefix
            ),
            Checked::Unreadable(e) => tracing::warn!("broker policies not checked: {e}"),
            Checked::Read(n, findings, consumer_timeout) => {
                tracing::info!("broker policies: {n} on the vhost, {} concern {}.*", findings.len(), b.prefix);
                tracing::info!("{consumer_timeout}");
                for f in findings.iter().filter(|f| !f.refuse) {
                    tracing::warn!("{}", f.message);
                }
                if let Some(f) = findings.iter().find(|f| f.refuse) {
                    return Err(f.message.clone());
                }
            }
        }
        match self.link.declare_class(&self.class.name).await {
            Err(BrokerError::Refused(m)) => Err(m),
            _ => Ok(()),
        }
    }

    /// Subscribes and handles deliveries until the link breaks (`None`) or the worker is done.
    async fn consume(&mut self) -> Result<Option<i32>, BrokerError> {
        self.link.declare_class(&self.class.name).await?;
        let chan = self.link.consumer_channel(self.class.prefetch).await?;
        let mut cordon = self.controls.cordoned.subscribe();
        let mut subscriptions = 0u32;
        loop {
            if *cordon.borrow_and_update() {
                notify::status("cordoned: taking no new job");
                tokio::select! {
                    _ = cordon.wait_for(|c| !*c) => {}
                    _ = self.controls.drain.cancelled() => return Ok(Some(0)),
                }
                if !chan.status().connected() {
                    return Ok(None);
                }
                notify::status("idle");
            }
            subscriptions += 1;
            let tag = format!("{}#{subscriptions}", self.unit);
            let mut consumer = self.subscribe(&chan, &tag, &cordon).await?;
            let stop = match self.take_deliveries(&mut consumer, &chan, &mut cordon).await {
                Paused::Leave(code) => return Ok(code),
                Paused::Drained => Some(0),
                Paused::Cordoned => None,
            };
            // Stopped taking jobs (drain or cordon): a delivery already on its way goes back.
            self.controls.cancel_consumer();
            while let Ok(Some(Ok(d))) = tokio::time::timeout(Duration::from_millis(200), consumer.next()).await {
                requeue_quietly(&d).await;
            }
            if stop.is_some() {
                return Ok(stop);
            }
        }
    }

    /// Starts a consumer on the class's work queue, cancelled at once when the worker was
    /// drained or cordoned meanwhile.
    async fn subscribe(
        &self,
        chan: &Channel,
        tag: &str,
        cordon: &watch::Receiver<bool>,
    ) -> Result<Consumer, BrokerError> {
        let queue = self.link.names.work(&self.class.name);
        let consumer = crate::io::amqp::deadline(
            self.cfg.broker.op_timeout,
            "basic.consume",
            chan.basic_consume(
                queue.as_str().into(),
                tag.into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            ),
        )
        .await?;
        self.controls.subscribed(chan, tag);
        if self.controls.drain.is_cancelled() || *cordon.borrow() {
            let _ = chan.basic_cancel(tag.into(), BasicCancelOptions::default()).await;
        }
        Ok(consumer)
    }

    /// Handles the subscription's deliveries one at a time until the worker stops taking them.
    async fn take_deliveries(
        &mut self,
        consumer: &mut Consumer,
        chan: &Channel,
        cordon: &mut watch::Receiver<bool>,
    ) -> Paused {
        loop {
            // Between jobs, the delay rungs this worker published into are looked at when due
            // (retries held past their due time are moved on: `Link::tend_rungs`).
            let rungs = self.link.next_rung_look();
            let next = tokio::select! {
                d = consumer.next() => d,
                _ = self.controls.drain.cancelled() => return Paused::Drained,
                _ = cordon.wait_for(|c| *c) => return Paused::Cordoned,
                _ = sleep_until_some(rungs) => {
                    if let Err(e) = self.link.tend_rungs().await {
                        tracing::warn!("looking at the delay rungs failed: {e}");
                        if !self.link.is_up() {
                            return Paused::Leave(None); // reconnect and subscribe again
                        }
                    }
                    continue;
                }
            };
            let stopping = self.controls.drain.is_cancelled() || *cordon.borrow();
            match next {
                Some(Ok(delivery)) if stopping => requeue_quietly(&delivery).await,
                Some(Ok(delivery)) => {
                    if let Some(leave) = self.take(delivery, chan).await {
                        return leave;
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!("consumer failed: {e}");
                    self.link.mark_down();
                    return Paused::Leave(None);
                }
                None if self.controls.drain.is_cancelled() => return Paused::Drained,
                None if *cordon.borrow() => return Paused::Cordoned,
                None => {
                    tracing::warn!("the broker cancelled the consumer; subscribing again");
                    self.link.mark_down();
                    return Paused::Leave(None);
                }
            }
        }
    }

    /// Takes one delivery (the probe, when one was asked for) and runs it to its end; `Some`
    /// when the worker must then leave the subscription.
    async fn take(&mut self, delivery: Delivery, chan: &Channel) -> Option<Paused> {
        let probing = self.controls.take_probe();
        if probing {
            // Before the job, so that no second delivery is taken meanwhile.
            self.controls.cordon(true);
        }
        self.probing = probing;
        let handled = self.handle(delivery, chan).await;
        self.probing = false;
        if probing {
            tracing::info!("probe job done: cordoned until the supervisor decides");
        }
        if let Err(e) = handled {
            tracing::warn!("broker trouble while recording a result: {e}");
            return Some(Paused::Leave(None));
        }
        if let Handler::Persistent(_) = self.handler {
            if let Err(HandlerDown(e)) = self.handler.prepare().await {
                tracing::error!("{e}");
                return Some(Paused::Leave(Some(1)));
            }
        }
        None
    }

    fn event(&self, kind: EventKind, job: Option<&Job>) -> JobEvent {
        self.event_at(kind, job, rfc3339(now_ms()))
    }

    /// The event of `kind` about `job`, at `at` (RFC 3339).
    fn event_at(&self, kind: EventKind, job: Option<&Job>, at: String) -> JobEvent {
        let mut e = JobEvent::new(kind, at, &self.class.name, &self.cfg.host, &self.unit);
        if let Some(j) = job {
            e.job_id = Some(j.id.clone());
            e.tenant = j.tenant.clone();
            e.attempt = Some(j.attempt);
            e.submitted_at = Some(rfc3339(j.submitted_at));
            e.deadline = Some(rfc3339(j.deadline));
        }
        e
    }
}

/// Sleeps until `at`, or forever without one.
async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
