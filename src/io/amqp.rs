//! The broker adapter: names, topology, a connection that comes back, confirmed publishes.
//!
//! Drover owns its reconnect loop instead of using lapin's automatic recovery (young, with open
//! reports of recoveries that never finish): a [`Link`] is either up or down, every operation
//! has a deadline, and a failed operation marks the link down so the next one reconnects with
//! full-jitter backoff, to the next node of `broker.url` when it lists a cluster's
//! ([`crate::topology::Rotation`] decides which and how long to wait). Queue arguments (classic
//! or quorum) come from [`crate::topology::queue_args`]. Consumers are not recovered behind the caller's back: the worker
//! re-subscribes itself, because after a lost channel the broker has already requeued what it
//! held, and only the worker knows which results must then be thrown away.

use crate::config::BrokerConfig;
use crate::events::{Delivery, EventKind, JobEvent};
use crate::io::clock::now_ms;
use crate::io::random::Jitter;
use crate::io::wire::{header_int, with_headers};
use crate::job::HeaderValue;
use crate::outcome::delay_rung;
use crate::topology::{self, rung_head, Arg, QueueRole, Rotation, RungHead, RungLook, H_DUE};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
    QueuePurgeOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The broker is unreachable or the channel broke: try again later.
    #[error("broker unavailable: {0}")]
    Unavailable(String),
    /// The broker took longer than the deadline.
    #[error("broker did not answer within {0:?} ({1})")]
    Timeout(Duration, &'static str),
    /// The broker refused the publish (negative confirm).
    #[error("broker refused the message ({0})")]
    Nacked(String),
    /// The caller's deadline or cancellation came first.
    #[error("gave up: {0}")]
    GaveUp(String),
    /// The broker refused a declaration for good (PRECONDITION_FAILED: a queue that exists with
    /// other arguments, such as another `x-queue-type`): trying again cannot help.
    #[error("the broker refused {0}")]
    Refused(String),
}

/// Every queue and exchange name Drover uses, from one prefix.
#[derive(Clone, Debug)]
pub struct Names {
    pub prefix: String,
}

impl Names {
    pub fn work(&self, class: &str) -> String {
        format!("{}.jobs.{class}", self.prefix)
    }
    pub fn dead(&self, class: &str) -> String {
        format!("{}.dead.{class}", self.prefix)
    }
    pub fn events(&self) -> String {
        format!("{}.events", self.prefix)
    }
    /// Exchange and queue of one rung of the delay ladder.
    pub fn delay(&self, rung: Duration) -> String {
        format!("{}.delay.{}ms", self.prefix, rung.as_millis())
    }
    /// One of a worker's two lease queues (`slot` 0 or 1; `worker` unique to the process).
    pub fn lease(&self, class: &str, worker: &str, slot: u8) -> String {
        format!("{}.lease.{class}.{worker}.{slot}", self.prefix)
    }
}

fn table(entries: Vec<(&str, AMQPValue)>) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in entries {
        t.insert(ShortString::from(k), v);
    }
    t
}

/// The core's queue arguments as an AMQP field table.
pub(crate) fn args_table(args: topology::Args) -> FieldTable {
    table(
        args.into_iter()
            .map(|(k, v)| match v {
                Arg::Str(s) => (k, AMQPValue::LongString(s.as_str().into())),
                Arg::Int(i) => (k, AMQPValue::LongLongInt(i)),
                Arg::Bool(b) => (k, AMQPValue::Boolean(b)),
            })
            .collect(),
    )
}

/// A connection to the broker with a confirm-mode channel for jobs and a plain one for events.
pub struct Link {
    pub cfg: BrokerConfig,
    pub names: Names,
    label: String,
    conn: Option<Connection>,
    chan: Option<Channel>,
    events_chan: Option<Channel>,
    jitter: Jitter,
    /// Which of `cfg.urls` to connect to next.
    rotation: Rotation,
    declared: HashSet<String>,
    pending_events: VecDeque<JobEvent>,
    dropped_events: u64,
    /// The events publisher of the current connection ([`publish_events`]).
    publisher: Option<mpsc::Sender<JobEvent>>,
    /// Event publishes on their way, awaited before the process exits.
    in_flight: tokio::task::JoinSet<()>,
    /// Number of successful connections so far (1 after the first).
    pub connections: u64,
    /// When the current connection was made.
    up_since: Option<Instant>,
    /// No connect before this (the last connection was lost soon after it was made).
    hold_until: Option<Instant>,
    /// The delay rungs this process published into, watched for messages held past their due
    /// time ([`Link::tend_rungs`]); kept across reconnects.
    rungs: topology::Rungs,
}

const MAX_PENDING_EVENTS: usize = 10_000;

impl Link {
    pub fn new(cfg: &BrokerConfig, label: &str) -> Link {
        let mut jitter = Jitter::from_os();
        let rotation = Rotation::new(cfg.urls.len(), jitter.unit());
        Link {
            rotation,
            names: Names { prefix: cfg.prefix.clone() },
            cfg: cfg.clone(),
            label: label.to_string(),
            conn: None,
            chan: None,
            events_chan: None,
            jitter,
            declared: HashSet::new(),
            pending_events: VecDeque::new(),
            dropped_events: 0,
            publisher: None,
            in_flight: tokio::task::JoinSet::new(),
            connections: 0,
            up_since: None,
            hold_until: None,
            rungs: topology::Rungs::default(),
        }
    }

    pub fn is_up(&self) -> bool {
        let conn_ok = self.conn.as_ref().is_some_and(|c| c.status().connected());
        let chan_ok = self.chan.as_ref().is_some_and(|c| c.status().connected());
        conn_ok && chan_ok
    }

    pub fn connection(&self) -> Option<&Connection> {
        self.conn.as_ref()
    }

    /// Forgets the connection; the next operation reconnects.
    pub fn mark_down(&mut self) {
        self.chan = None;
        self.events_chan = None;
        self.publisher = None;
        if let Some(conn) = self.conn.take() {
            // Whatever broke, the next connect goes to another node first, and not at once if
            // this connection broke soon after it was made.
            let lasted = self.up_since.take().map_or(Duration::ZERO, |t| t.elapsed());
            let wait = self.rotation.lost(lasted, &self.cfg.reconnect, self.jitter.unit());
            self.hold_until = (!wait.is_zero()).then(|| Instant::now() + wait);
            // Closing may hang on a dead socket: in the background, but owned by the link (its
            // tasks are awaited by `settle_events` and aborted when the link is dropped).
            while self.in_flight.try_join_next().is_some() {}
            self.in_flight.spawn(async move {
                let _ = tokio::time::timeout(Duration::from_secs(2), conn.close(200, "reconnecting".into())).await;
            });
        }
        self.declared.clear();
    }

    /// The node connected to (or to be tried next), without its credentials.
    pub fn node(&self) -> String {
        let url = self.cfg.urls.get(self.rotation.current()).map(String::as_str).unwrap_or("");
        let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
        let host = after_scheme.rsplit_once('@').map_or(after_scheme, |(_, h)| h);
        host.split('/').next().unwrap_or(host).to_string()
    }

    /// The broker user of the node connected to (or to be tried next), as the broker
    /// authenticates it: the URL's user, percent-decoded (`guest` when the URL names none).
    /// `None` when the transport authenticates (`auth_mechanism=external`, a client
    /// certificate) or the mechanism is anonymous: the user is then the broker's to say.
    pub fn user(&self) -> Option<String> {
        use lapin::uri::{AMQPUri, SASLMechanism};
        let url = self.cfg.urls.get(self.rotation.current()).map(String::as_str).unwrap_or("");
        let uri = url.parse::<AMQPUri>().ok()?;
        match uri.query.auth_mechanism {
            Some(SASLMechanism::External) | Some(SASLMechanism::Anonymous) => None,
            _ => Some(uri.authority.userinfo.username),
        }
    }

    async fn connect_once(&mut self) -> Result<(), BrokerError> {
        let props = ConnectionProperties::default().with_connection_name(LongString::from(self.label.as_str()));
        let url = with_frame_max(self.cfg.urls.get(self.rotation.current()).map_or("", String::as_str));
        let node = self.node();
        let conn = tokio::time::timeout(self.cfg.connect_timeout, Connection::connect(&url, props))
            .await
            .map_err(|_| BrokerError::Timeout(self.cfg.connect_timeout, "connect"))?
            .map_err(|e| BrokerError::Unavailable(format!("{node}: {e}")))?;
        let op = self.cfg.op_timeout;
        let chan = deadline(op, "open channel", conn.create_channel()).await?;
        deadline(op, "confirm.select", chan.confirm_select(ConfirmSelectOptions::default())).await?;
        let events_chan = deadline(op, "open channel", conn.create_channel()).await?;
        deadline(
            op,
            "declare events exchange",
            events_chan.exchange_declare(
                self.names.events().into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions { durable: true, ..Default::default() },
                FieldTable::default(),
            ),
        )
        .await?;
        self.conn = Some(conn);
        self.chan = Some(chan);
        self.events_chan = Some(events_chan);
        self.connections += 1;
        Ok(())
    }

    /// Connects, retrying with full-jitter backoff until it works, `give_up` passes or `cancel`
    /// fires. Each try has its own deadline (`broker.connect_timeout`).
    pub async fn ensure_up(&mut self, give_up: Option<Instant>, cancel: &CancellationToken) -> Result<(), BrokerError> {
        self.connect_until(give_up, Some(cancel)).await
    }

    /// Connects like [`Link::ensure_up`], for a wait that only `give_up` ends (a command's one
    /// exchange with the broker, a job's outcome that must be recorded even while draining).
    pub async fn ensure_up_by(&mut self, give_up: Instant) -> Result<(), BrokerError> {
        self.connect_until(Some(give_up), None).await
    }

    async fn connect_until(
        &mut self,
        give_up: Option<Instant>,
        cancel: Option<&CancellationToken>,
    ) -> Result<(), BrokerError> {
        let mut tries = 0u32;
        while !self.is_up() {
            self.mark_down();
            // After a connection lost as soon as it was made, a pause first; not one that would
            // outlast the caller's deadline (one more try then beats giving up unheard).
            if let Some(wake) = self.hold_until.take().filter(|w| give_up.is_none_or(|g| *w < g)) {
                Self::pause(wake, None, cancel, "").await?;
            }
            tries += 1;
            match self.connect_once().await {
                Ok(()) => {
                    self.rotation.connected();
                    self.up_since = Some(Instant::now());
                    if tries > 1 || self.connections > 1 {
                        tracing::info!("broker connection restored after {tries} tries (node {})", self.node());
                    }
                    self.flush_events().await;
                    return Ok(());
                }
                Err(e) => {
                    let wait =
                        self.rotation.failed(&self.cfg.reconnect, self.jitter.unit()).max(Duration::from_millis(50));
                    if tries == 1 || tries.is_multiple_of(10) {
                        tracing::warn!(
                            "broker unreachable ({e}); retrying with backoff (try {tries}, next in {wait:.1?})"
                        );
                    }
                    let why = format!("broker still unreachable after {tries} tries: {e}");
                    Self::pause(Instant::now() + wait, give_up, cancel, &why).await?;
                }
            }
        }
        Ok(())
    }

    /// Waits until `wake`, unless `give_up` comes first (`why` says what was waited for) or
    /// `cancel` fires.
    async fn pause(
        wake: Instant,
        give_up: Option<Instant>,
        cancel: Option<&CancellationToken>,
        why: &str,
    ) -> Result<(), BrokerError> {
        if give_up.is_some_and(|g| wake >= g) {
            return Err(BrokerError::GaveUp(why.to_string()));
        }
        let cancelled = async {
            match cancel {
                Some(c) => c.cancelled().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::time::sleep_until(wake) => Ok(()),
            _ = cancelled => Err(BrokerError::GaveUp("cancelled".into())),
        }
    }

    fn channel(&self) -> Result<&Channel, BrokerError> {
        self.chan.as_ref().ok_or_else(|| BrokerError::Unavailable("not connected".into()))
    }

    /// Opens a fresh channel for consuming, with the given prefetch.
    pub async fn consumer_channel(&mut self, prefetch: u16) -> Result<Channel, BrokerError> {
        let op = self.cfg.op_timeout;
        let conn = self.conn.as_ref().ok_or_else(|| BrokerError::Unavailable("not connected".into()))?;
        let chan = deadline(op, "open channel", conn.create_channel()).await?;
        deadline(op, "basic.qos", chan.basic_qos(prefetch, BasicQosOptions::default())).await?;
        Ok(chan)
    }

    fn queue_args(&self, role: &QueueRole) -> FieldTable {
        args_table(topology::queue_args(self.cfg.queue_type, role, self.cfg.queue_expires))
    }

    /// The arguments of a class's work queue, as every process declares it.
    fn work_args(&self, class: &str) -> FieldTable {
        let dead = self.names.dead(class);
        // A class missing from the configuration gets the limit of the default budget
        // (max_attempts 5, poison_after 3).
        let delivery_limit =
            self.cfg.delivery_limits.get(class).copied().unwrap_or_else(|| topology::delivery_limit(5, 3));
        self.queue_args(&QueueRole::Work { dead: &dead, delivery_limit })
    }

    /// Declares the durable work and dead-letter queues of a class (dead letters first: a
    /// quorum work queue dead-letters into it).
    pub async fn declare_class(&mut self, class: &str) -> Result<(), BrokerError> {
        let dead_args = self.queue_args(&QueueRole::Dead);
        self.declare_queue(&self.names.dead(class), dead_args).await?;
        let work_args = self.work_args(class);
        self.declare_queue(&self.names.work(class), work_args).await
    }

    /// Ready messages in a class's work queue (declared as the workers declare it, so that a
    /// missing queue is created rather than closing the channel).
    pub async fn backlog(&mut self, class: &str) -> Result<u32, BrokerError> {
        let op = self.cfg.op_timeout;
        let args = self.work_args(class);
        let name = self.names.work(class);
        let chan = self.channel()?;
        let opts = QueueDeclareOptions { durable: true, ..Default::default() };
        let r = deadline(op, "queue.declare", chan.queue_declare(name.as_str().into(), opts, args)).await;
        self.fail_on_err(r.map(|q| q.message_count()).map_err(|e| refused(e, &name)))
    }

    async fn declare_queue(&mut self, name: &str, args: FieldTable) -> Result<(), BrokerError> {
        if self.declared.contains(name) {
            return Ok(());
        }
        let op = self.cfg.op_timeout;
        let chan = self.channel()?;
        let opts = QueueDeclareOptions { durable: true, ..Default::default() };
        let r = deadline(op, "queue.declare", chan.queue_declare(name.into(), opts, args)).await;
        self.fail_on_err(r.map_err(|e| refused(e, name)))?;
        self.declared.insert(name.to_string());
        Ok(())
    }

    /// Declares the delay rung for `delay` (a fanout exchange and its queue, whose TTL
    /// dead-letters back through the default exchange to the routing key the message was
    /// published with) and returns the exchange to publish to, or `None` for "no delay".
    pub async fn declare_delay(&mut self, delay: Duration) -> Result<Option<String>, BrokerError> {
        let Some(rung) = delay_rung(delay) else {
            return Ok(None);
        };
        let name = self.names.delay(rung);
        if self.declared.contains(&name) {
            return Ok(Some(name));
        }
        let op = self.cfg.op_timeout;
        let chan = self.channel()?.clone();
        let r = deadline(
            op,
            "exchange.declare",
            chan.exchange_declare(
                name.as_str().into(),
                ExchangeKind::Fanout,
                ExchangeDeclareOptions { durable: true, ..Default::default() },
                FieldTable::default(),
            ),
        )
        .await;
        self.fail_on_err(r)?;
        let args = self.queue_args(&QueueRole::Delay { ttl: rung });
        let opts = QueueDeclareOptions { durable: true, ..Default::default() };
        let r = deadline(op, "queue.declare", chan.queue_declare(name.as_str().into(), opts, args)).await;
        self.fail_on_err(r.map_err(|e| refused(e, &name)))?;
        let r = deadline(
            op,
            "queue.bind",
            chan.queue_bind(
                name.as_str().into(),
                name.as_str().into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            ),
        )
        .await;
        self.fail_on_err(r)?;
        self.declared.insert(name.clone());
        Ok(Some(name))
    }

    /// Publishes a message to come back to `key` (a work queue) after `delay`: into the delay
    /// rung for it, stamped with its due time ([`H_DUE`]), and watches that rung; a delay too
    /// short for a rung goes straight to `key`.
    pub async fn publish_delayed(
        &mut self,
        delay: Duration,
        key: &str,
        body: &[u8],
        props: BasicProperties,
    ) -> Result<(), BrokerError> {
        let (Some(exchange), Some(ttl)) = (self.declare_delay(delay).await?, delay_rung(delay)) else {
            return self.publish("", key, body, props).await;
        };
        let due = self.rungs.published(&exchange, ttl, now_ms());
        let props = with_headers(&props, vec![(H_DUE, HeaderValue::I64(due))]);
        self.publish(&exchange, key, body, props).await
    }

    /// When [`Link::tend_rungs`] has a rung to look at next, if any.
    pub fn next_rung_look(&self) -> Option<Instant> {
        let at = self.rungs.next_look_ms()?;
        let wait = u64::try_from(at - now_ms()).unwrap_or(0);
        Some(Instant::now() + Duration::from_millis(wait))
    }

    /// Looks at the watched delay rungs that are due a look and moves on every message held
    /// past its due time: taken (`basic.get`), published to the work queue it was delayed for
    /// with a confirm, then acknowledged (at least once: never lost, at worst moved twice). A
    /// head not due yet is given back. The guard against quorum rungs whose expiry stalls
    /// (ARCHITECTURE.md, "Retries on quorum queues"); returns how many it moved.
    pub async fn tend_rungs(&mut self) -> Result<u32, BrokerError> {
        let mut moved_all = 0;
        for (name, ttl) in self.rungs.due(now_ms()) {
            let r = self.tend_rung(&name, ttl).await;
            let (moved, found) = match &r {
                Ok(v) => *v,
                Err(_) => (0, RungLook::Failed),
            };
            self.rungs.looked(&name, found, now_ms());
            if moved > 0 {
                tracing::warn!(
                    "delay rung {name}: moved {moved} retries held past their due time on to their work queues \
                     (the broker had not expired them)"
                );
            }
            moved_all += moved;
            r?;
        }
        Ok(moved_all)
    }

    async fn tend_rung(&mut self, name: &str, ttl: Duration) -> Result<(u32, RungLook), BrokerError> {
        let op = self.cfg.op_timeout;
        // Declared as the rung is (not passively): a rung gone meanwhile (`broker.queue_expires`)
        // is made again rather than closing the channel.
        let args = self.queue_args(&QueueRole::Delay { ttl });
        let chan = self.channel()?.clone();
        let opts = QueueDeclareOptions { durable: true, ..Default::default() };
        let r = deadline(op, "queue.declare", chan.queue_declare(name.into(), opts, args)).await;
        if self.fail_on_err(r.map_err(|e| refused(e, name)))?.message_count() == 0 {
            return Ok((0, RungLook::Empty));
        }
        let mut moved = 0;
        while moved < topology::RUNG_MOVES_PER_LOOK {
            let r = deadline(op, "basic.get", chan.basic_get(name.into(), BasicGetOptions { no_ack: false })).await;
            let Some(got) = self.fail_on_err(r)? else {
                return Ok((moved, RungLook::Empty));
            };
            let d = got.delivery;
            let found = match rung_head(header_int(&d.properties, H_DUE), now_ms(), ttl) {
                RungHead::Overdue => None,
                RungHead::NotYet { due_at_ms } => Some(RungLook::NotYet { due_at_ms }),
                RungHead::Unstamped => Some(RungLook::Unstamped),
            };
            if let Some(found) = found {
                let r = d.acker.nack(BasicNackOptions { requeue: true, ..Default::default() }).await;
                self.fail_on_err(r.map_err(|e| BrokerError::Unavailable(e.to_string())))?;
                return Ok((moved, found));
            }
            // Its own routing key is the work queue it was delayed for (the rung dead-letters
            // to it the same way).
            if let Err(e) = self.publish("", d.routing_key.as_str(), &d.data, d.properties.clone()).await {
                // Refused (a full work queue) or lost: back to the rung, looked at again later.
                let _ = d.acker.nack(BasicNackOptions { requeue: true, ..Default::default() }).await;
                return Err(e);
            }
            let r = d.acker.ack(BasicAckOptions::default()).await;
            self.fail_on_err(r.map_err(|e| BrokerError::Unavailable(e.to_string())))?;
            moved += 1;
        }
        Ok((moved, RungLook::Full))
    }

    /// Declares a lease queue: it holds one copy of a running job at a time and, if nobody
    /// purges it first, dead-letters that copy back to the class's work queue after `ttl`.
    /// Declared again at every use: that keeps its `x-expires` from running out while the worker
    /// lives (publishing does not count as use), and costs no new queue.
    pub async fn declare_lease(&mut self, name: &str, class: &str, ttl: Duration) -> Result<(), BrokerError> {
        let work = self.names.work(class);
        // Garbage-collects the queue once its worker is gone; long enough never to delete it
        // while a copy still waits.
        let expires = ttl * 2 + Duration::from_secs(60);
        let args = args_table(topology::queue_args(
            self.cfg.queue_type,
            &QueueRole::Lease { work: &work, ttl, expires },
            None,
        ));
        let op = self.cfg.op_timeout;
        let chan = self.channel()?;
        let opts = QueueDeclareOptions { durable: true, ..Default::default() };
        let r = deadline(op, "queue.declare", chan.queue_declare(name.into(), opts, args)).await;
        self.fail_on_err(r.map(|_| ()).map_err(|e| refused(e, name)))
    }

    /// Removes every message of a queue (a lease queue's copy).
    pub async fn purge_queue(&mut self, name: &str) -> Result<(), BrokerError> {
        let op = self.cfg.op_timeout;
        let chan = self.channel()?;
        let r = deadline(op, "queue.purge", chan.queue_purge(name.into(), QueuePurgeOptions::default())).await;
        self.fail_on_err(r.map(|_| ()))
    }

    pub async fn delete_queue(&mut self, name: &str) -> Result<(), BrokerError> {
        let op = self.cfg.op_timeout;
        let chan = self.channel()?;
        let r = deadline(op, "queue.delete", chan.queue_delete(name.into(), QueueDeleteOptions::default())).await;
        self.declared.remove(name);
        self.fail_on_err(r.map(|_| ()))
    }

    /// Publishes and waits for the broker's confirm (persistent messages are confirmed once
    /// written to disk).
    pub async fn publish(
        &mut self,
        exchange: &str,
        key: &str,
        body: &[u8],
        props: BasicProperties,
    ) -> Result<(), BrokerError> {
        self.publish_batch(exchange, key, vec![(body.to_vec(), props)]).await
    }

    /// A private, auto-deleted queue for this connection, optionally bound to `exchange` with
    /// `key`, and a consumer on it without acknowledgements (events, replies): for readers that
    /// must not hold anything back from the broker.
    pub async fn private_consumer(
        &mut self,
        bind: Option<(&str, &str)>,
        tag: &str,
    ) -> Result<(Channel, lapin::Consumer, String), BrokerError> {
        let op = self.cfg.op_timeout;
        let chan = self.consumer_channel(100).await?;
        let r = async {
            let opts = QueueDeclareOptions { exclusive: true, auto_delete: true, ..Default::default() };
            let q = deadline(op, "queue.declare", chan.queue_declare("".into(), opts, FieldTable::default())).await?;
            let name = q.name().as_str().to_string();
            if let Some((exchange, key)) = bind {
                let bound = chan.queue_bind(
                    name.as_str().into(),
                    exchange.into(),
                    key.into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                );
                deadline(op, "queue.bind", bound).await?;
            }
            let opts = BasicConsumeOptions { no_ack: true, ..Default::default() };
            let consumer = deadline(
                op,
                "basic.consume",
                chan.basic_consume(name.as_str().into(), tag.into(), opts, FieldTable::default()),
            )
            .await?;
            Ok((consumer, name))
        }
        .await;
        let (consumer, name) = self.fail_on_err(r)?;
        Ok((chan, consumer, name))
    }

    /// Publishes many messages and waits for all their confirms: the fast path of `submit`.
    pub async fn publish_batch(
        &mut self,
        exchange: &str,
        key: &str,
        messages: Vec<(Vec<u8>, BasicProperties)>,
    ) -> Result<(), BrokerError> {
        let op = self.cfg.op_timeout;
        let chan = self.channel()?.clone();
        let r = async {
            let mut confirms = Vec::with_capacity(messages.len());
            for (body, props) in messages {
                let c = deadline(
                    op,
                    "basic.publish",
                    chan.basic_publish(exchange.into(), key.into(), BasicPublishOptions::default(), &body, props),
                )
                .await?;
                confirms.push(c);
            }
            for c in confirms {
                let confirmation = tokio::time::timeout(op, c)
                    .await
                    .map_err(|_| BrokerError::Timeout(op, "publisher confirm"))?
                    .map_err(|e| BrokerError::Unavailable(e.to_string()))?;
                if confirmation.is_nack() {
                    return Err(BrokerError::Nacked(format!("to {exchange:?} / {key}")));
                }
            }
            Ok(())
        }
        .await;
        self.fail_on_err(r)
    }

    /// Publishes a job event without waiting for it: events are telemetry and stay off the
    /// job's critical path. They go to one publisher task per connection ([`publish_events`]),
    /// which sends each as [`JobEvent::delivery`] says: starts of first deliveries and
    /// successes together, a few milliseconds late, the rest at once. While the broker is away up to 10,000 are kept and
    /// sent after the reconnect; past that the oldest are dropped and counted.
    pub async fn event(&mut self, event: JobEvent) {
        self.pending_events.push_back(event);
        while self.pending_events.len() > MAX_PENDING_EVENTS {
            self.pending_events.pop_front();
            self.dropped_events += 1;
        }
        if self.is_up() {
            self.flush_events().await;
        }
    }

    async fn flush_events(&mut self) {
        if self.dropped_events > 0 {
            tracing::warn!("{} job events were dropped while the broker was unreachable", self.dropped_events);
            self.dropped_events = 0;
        }
        let Some(tx) = self.publisher() else { return };
        while let Some(event) = self.pending_events.pop_front() {
            if let Err(e) = tx.try_send(event) {
                // The publisher is behind by MAX_PENDING_EVENTS (a stalled socket) or gone.
                self.dropped_events += 1;
                if let mpsc::error::TrySendError::Closed(_) = e {
                    self.publisher = None;
                }
            }
        }
    }

    /// The events publisher of this connection, started on first use.
    fn publisher(&mut self) -> Option<mpsc::Sender<JobEvent>> {
        if let Some(tx) = &self.publisher {
            return Some(tx.clone());
        }
        let chan = self.events_chan.clone()?;
        let (tx, rx) = mpsc::channel(MAX_PENDING_EVENTS);
        while self.in_flight.try_join_next().is_some() {}
        self.in_flight.spawn(publish_events(chan, self.names.events(), self.cfg.op_timeout, rx));
        self.publisher = Some(tx.clone());
        Some(tx)
    }

    /// A handle that publishes events while the link itself is busy (a running job's progress,
    /// while its lease is kept): best effort, through the publisher of the moment.
    pub fn event_sender(&mut self) -> Option<EventSender> {
        if !self.is_up() {
            return None;
        }
        self.publisher().map(|tx| EventSender { tx })
    }

    /// Waits (at most `limit`) for the events on their way and connections being closed:
    /// called before the process exits.
    pub async fn settle_events(&mut self, limit: Duration) {
        // Without its sender the publisher sends what it holds and ends.
        self.publisher = None;
        let in_flight = &mut self.in_flight;
        let _ = tokio::time::timeout(limit, async { while in_flight.join_next().await.is_some() {} }).await;
    }

    fn fail_on_err<T>(&mut self, r: Result<T, BrokerError>) -> Result<T, BrokerError> {
        if let Err(e) = &r {
            if !matches!(e, BrokerError::Nacked(_)) {
                self.mark_down();
            }
        }
        r
    }
}

/// The largest frame Drover asks the broker for, unless `broker.url` says `frame_max=` itself.
/// lapin keeps a receive and a send buffer of 32 frames each per connection, zero-filled: at
/// RabbitMQ's default of 128 KiB that is 8 MiB resident, half of a worker's memory; at 32 KiB,
/// 2 MiB. Larger messages simply take more frames.
const FRAME_MAX: u32 = 32 * 1024;

/// `url` with `frame_max=FRAME_MAX` in its query, unless it names a frame_max already.
fn with_frame_max(url: &str) -> String {
    if url.is_empty() || url.contains("frame_max=") {
        return url.to_string();
    }
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}frame_max={FRAME_MAX}")
}

/// A declaration the broker refused for good (`PRECONDITION_FAILED`, reply code 406) becomes
/// [`BrokerError::Refused`], with what to do about it.
fn refused(e: BrokerError, queue: &str) -> BrokerError {
    match e {
        BrokerError::Unavailable(m) if m.contains("PRECONDITION_FAILED") || m.contains("inequivalent arg") => {
            BrokerError::Refused(format!(
                "queue {queue}: {m}. The queue exists with other arguments (broker.queue_type, or a class's \
                 max_attempts / poison_after, which set a quorum queue's x-delivery-limit, changed since it was \
                 declared); a queue's type and arguments cannot change in place: use a new broker.prefix, or move \
                 its messages and delete it"
            ))
        }
        other => other,
    }
}

/// See [`Link::event_sender`].
pub struct EventSender {
    tx: mpsc::Sender<JobEvent>,
}

impl EventSender {
    /// Hands one event to the publisher; a loss (publisher behind or gone) is only logged.
    pub async fn send(&self, event: &JobEvent) {
        if self.tx.try_send(event.clone()).is_err() {
            tracing::debug!("a progress event was lost with the broker connection");
        }
    }
}

/// How long a start or a success waits for others to go out with, and how many go in one
/// message.
const BATCH_WINDOW: Duration = Duration::from_millis(50);
const BATCH_MAX: usize = 100;

/// The events of one connection's channel. Starts of first deliveries and successes wait (at
/// most [`BATCH_WINDOW`]) to go out together, one message per routing key (a JSON array;
/// events::parse reads both forms; a batch of one is a plain object), the held starts before
/// the held successes, so that no job's end goes out before its start. Every other event goes
/// out at once, after whatever is held: the order of one worker's events is kept, except that a
/// start may pass a success held before it (another job's). Ends when its sender is dropped,
/// after sending what it holds. Each publish has the operation deadline; a failed one is lost
/// (telemetry), and the link's reconnect starts a new publisher.
async fn publish_events(chan: Channel, exchange: String, op: Duration, mut rx: mpsc::Receiver<JobEvent>) {
    // Held starts, then held successes.
    let mut held = [Batch::default(), Batch::default()];
    let mut single = Vec::with_capacity(1024);
    let window = tokio::time::sleep(BATCH_WINDOW);
    tokio::pin!(window);
    loop {
        let holding = held.iter().any(|b| b.n > 0);
        // (the next event, or none because the window is over (true) or the senders are gone)
        let (next, due) = if !holding {
            (rx.recv().await, false)
        } else {
            tokio::select! {
                biased;
                e = rx.recv() => (e, false),
                _ = &mut window => (None, true),
            }
        };
        let Some(e) = next else {
            for b in &mut held {
                if let Some((key, body)) = b.take() {
                    publish_event(&chan, &exchange, &key, &body, false, op).await;
                }
            }
            if !due {
                return;
            }
            continue;
        };
        let key = e.routing_key();
        let delivery = e.delivery();
        if delivery == Delivery::Batched {
            let slot = usize::from(e.event != EventKind::Started);
            if held[slot].n > 0 && held[slot].key != key {
                // Another class or host (not from one worker): what is held goes first.
                for b in &mut held {
                    if let Some((key, body)) = b.take() {
                        publish_event(&chan, &exchange, &key, &body, false, op).await;
                    }
                }
            }
            if !held.iter().any(|b| b.n > 0) {
                window.as_mut().reset(Instant::now() + BATCH_WINDOW);
            }
            held[slot].push(key, &e);
            if held[slot].n >= BATCH_MAX {
                for b in &mut held {
                    if let Some((key, body)) = b.take() {
                        publish_event(&chan, &exchange, &key, &body, false, op).await;
                    }
                }
            }
            continue;
        }
        for b in &mut held {
            if let Some((key, body)) = b.take() {
                publish_event(&chan, &exchange, &key, &body, false, op).await;
            }
        }
        single.clear();
        if serde_json::to_writer(&mut single, &e).is_ok() {
            publish_event(&chan, &exchange, &key, &single, delivery == Delivery::Durable, op).await;
        }
    }
}

/// One message of job events, awaited within `op`; a failure is only logged (telemetry).
async fn publish_event(chan: &Channel, exchange: &str, key: &str, body: &[u8], durable: bool, op: Duration) {
    let props = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(if durable { 2 } else { 1 });
    let sent = chan.basic_publish(exchange.into(), key.into(), BasicPublishOptions::default(), body, props);
    if !matches!(tokio::time::timeout(op, sent).await, Ok(Ok(_))) {
        tracing::debug!("a job event was lost with the broker connection");
    }
}

/// Successes waiting to go out together: a JSON array being written.
#[derive(Default)]
struct Batch {
    key: String,
    body: Vec<u8>,
    n: usize,
}

impl Batch {
    fn push(&mut self, key: String, e: &JobEvent) {
        let mark = self.body.len();
        self.body.push(if self.n == 0 { b'[' } else { b',' });
        if serde_json::to_writer(&mut self.body, e).is_err() {
            self.body.truncate(mark);
            return;
        }
        self.key = key;
        self.n += 1;
    }

    /// The routing key and body to publish (one event alone is sent as an object), if any.
    fn take(&mut self) -> Option<(String, Vec<u8>)> {
        let n = std::mem::take(&mut self.n);
        if n == 0 {
            return None;
        }
        let mut body = std::mem::take(&mut self.body);
        if n == 1 {
            body.remove(0);
        } else {
            body.push(b']');
        }
        Some((std::mem::take(&mut self.key), body))
    }
}

/// Puts a deadline on one broker operation.
pub async fn deadline<T>(
    limit: Duration,
    what: &'static str,
    f: impl Future<Output = lapin::Result<T>>,
) -> Result<T, BrokerError> {
    match tokio::time::timeout(limit, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(BrokerError::Unavailable(format!("{what}: {e}"))),
        Err(_) => Err(BrokerError::Timeout(limit, what)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Environment};

    fn link(url: &str) -> Link {
        let text = format!("[broker]\nurl = \"{url}\"\n[classes.x]\ncommand = [\"x\"]\n");
        let cfg = Config::parse(&text, "t.toml", &Environment::example()).expect("config");
        Link::new(&cfg.broker, "test")
    }

    #[test]
    fn the_user_is_the_one_the_broker_authenticates() {
        assert_eq!(link("amqp://drover-operator:pw@h:5672/%2f").user().as_deref(), Some("drover-operator"));
        assert_eq!(link("amqp://ops%40site:pw@h/%2f").user().as_deref(), Some("ops@site"), "percent-decoded");
        assert_eq!(link("amqp://h:5672/%2f").user().as_deref(), Some("guest"), "the client's default login");
        assert_eq!(link("amqps://h:5671/%2f?auth_mechanism=external").user(), None, "the certificate says who");
    }

    #[test]
    fn connections_ask_for_smaller_frames_unless_the_url_says_otherwise() {
        assert_eq!(with_frame_max("amqp://h/%2f"), "amqp://h/%2f?frame_max=32768");
        assert_eq!(with_frame_max("amqps://h/v?heartbeat=10"), "amqps://h/v?heartbeat=10&frame_max=32768");
        assert_eq!(with_frame_max("amqp://h/v?frame_max=131072"), "amqp://h/v?frame_max=131072");
        let parsed: lapin::uri::AMQPUri = with_frame_max("amqp://u:p@h:5673/%2f").parse().expect("a valid URI");
        assert_eq!((parsed.query.frame_max, parsed.authority.port), (Some(32768), 5673));
    }
}
