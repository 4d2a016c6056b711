//! The fleet's control channel: requests to any host's supervisor through a topic exchange on
//! the broker (`<prefix>.control`, routed `host.<name>` or `all`), answered on the caller's
//! reply queue. No cluster protocol of our own: a host whose supervisor is down finds the
//! request waiting in its durable queue when it comes back.

use crate::config::Config;
use crate::io::amqp::{args_table, deadline, BrokerError, Link};
use crate::io::control::{Handler, Request, Response};
use futures_lite::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Consumer, ExchangeKind};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Who a request is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Host(String),
    All,
}

impl Target {
    fn key(&self) -> String {
        match self {
            Target::Host(h) => format!("host.{}", h.replace('.', "_")),
            Target::All => "all".into(),
        }
    }
}

pub fn exchange(cfg: &Config) -> String {
    format!("{}.control", cfg.broker.prefix)
}

async fn declare_exchange(chan: &Channel, cfg: &Config) -> Result<(), BrokerError> {
    deadline(
        cfg.broker.op_timeout,
        "exchange.declare",
        chan.exchange_declare(
            exchange(cfg).as_str().into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions { durable: true, ..Default::default() },
            FieldTable::default(),
        ),
    )
    .await
}

/// The supervisor's side: answers requests routed to this host until `cancel` fires.
pub async fn serve(cfg: Config, handler: Handler, cancel: CancellationToken) {
    let mut link = Link::new(&cfg.broker, "drover supervise control");
    while connected(&mut link, &cancel).await {
        let served = answer_requests(&mut link, &cfg, &handler, &cancel).await;
        if !again_after(&mut link, "control channel", served) {
            return;
        }
    }
}

/// One connection's worth of `serve`: until `cancel` fires (`Ok`) or the broker fails.
async fn answer_requests(
    link: &mut Link,
    cfg: &Config,
    handler: &Handler,
    cancel: &CancellationToken,
) -> Result<(), BrokerError> {
    let chan = link.consumer_channel(10).await?;
    declare_exchange(&chan, cfg).await?;
    let mut consumer = consume_requests(&chan, cfg).await?;
    while let Some(d) = next_delivery(&mut consumer, cancel, "control").await? {
        answer(&chan, cfg, handler, d).await;
    }
    Ok(())
}

/// Whether `link` is up for a session: not once `cancel` fires (or the link gives up).
async fn connected(link: &mut Link, cancel: &CancellationToken) -> bool {
    !cancel.is_cancelled() && link.ensure_up(None, cancel).await.is_ok()
}

/// After a session on `link`: whether to connect again (it failed: reconnect with the link's
/// backoff) or to stop (it ended because `cancel` fired).
fn again_after(link: &mut Link, what: &str, session: Result<(), BrokerError>) -> bool {
    match session {
        Ok(()) => false,
        Err(e) => {
            tracing::warn!("{what}: {e}; reconnecting");
            link.mark_down();
            true
        }
    }
}

/// The next delivery, or `None` once `cancel` fires; a consumer that closed is an error (the
/// caller reconnects).
async fn next_delivery(
    consumer: &mut Consumer,
    cancel: &CancellationToken,
    what: &str,
) -> Result<Option<Delivery>, BrokerError> {
    let d = tokio::select! {
        d = consumer.next() => d,
        _ = cancel.cancelled() => return Ok(None),
    };
    match d {
        Some(Ok(d)) => Ok(Some(d)),
        _ => Err(BrokerError::Unavailable(format!("{what} consumer closed"))),
    }
}

/// This host's durable request queue, bound for its own key and `all`, consumed.
async fn consume_requests(chan: &Channel, cfg: &Config) -> Result<Consumer, BrokerError> {
    let queue = format!("{}.control.{}", cfg.broker.prefix, cfg.host);
    // Of `broker.queue_type`: on a cluster, a host's pending orders outlive the node they were on.
    let role = crate::topology::QueueRole::Requests;
    let args = args_table(crate::topology::queue_args(cfg.broker.queue_type, &role, cfg.broker.queue_expires));
    let op = cfg.broker.op_timeout;
    deadline(
        op,
        "queue.declare",
        chan.queue_declare(queue.as_str().into(), QueueDeclareOptions { durable: true, ..Default::default() }, args),
    )
    .await?;
    for key in [Target::Host(cfg.host.clone()).key(), Target::All.key()] {
        deadline(
            op,
            "queue.bind",
            chan.queue_bind(
                queue.as_str().into(),
                exchange(cfg).as_str().into(),
                key.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            ),
        )
        .await?;
    }
    deadline(
        op,
        "basic.consume",
        chan.basic_consume(
            queue.as_str().into(),
            "supervisor-control".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        ),
    )
    .await
}

/// Handles one request and answers on its reply queue (if it names one), then acknowledges it.
async fn answer(chan: &Channel, cfg: &Config, handler: &Handler, d: Delivery) {
    let response = match serde_json::from_slice::<Request>(&d.data) {
        Ok(mut req) => {
            req.attribute(d.properties.user_id().as_ref().map(|u| u.as_str()));
            handler(req)
        }
        Err(e) => Response::error(&cfg.host, format!("bad request: {e}")),
    };
    if let Some(reply_to) = d.properties.reply_to() {
        let mut props = BasicProperties::default();
        if let Some(c) = d.properties.correlation_id() {
            props = props.with_correlation_id(c.clone());
        }
        let body = serde_json::to_vec(&response).unwrap_or_default();
        let _ = deadline(
            cfg.broker.op_timeout,
            "basic.publish",
            chan.basic_publish("".into(), reply_to.as_str().into(), BasicPublishOptions::default(), &body, props),
        )
        .await;
    }
    let _ = d.acker.ack(BasicAckOptions::default()).await;
}

/// The caller's side: sends `req` and collects answers: the first from a host, or every
/// answer that arrives within `wait` from all hosts.
pub async fn ask(cfg: &Config, target: &Target, req: &Request, wait: Duration) -> anyhow::Result<Vec<Response>> {
    let mut link = Link::new(&cfg.broker, "drover cli");
    link.ensure_up_by(Instant::now() + cfg.broker.connect_timeout * 2).await?;
    let (chan, mut consumer, reply_to) = link.private_consumer(None, "cli").await?;
    declare_exchange(&chan, cfg).await?;
    let correlation = uuid::Uuid::new_v4().to_string();
    let mut props = BasicProperties::default()
        .with_reply_to(ShortString::from(reply_to.as_str()))
        .with_correlation_id(ShortString::from(correlation.as_str()))
        .with_delivery_mode(2);
    // The broker refuses a user-id other than the connection's own: the supervisor records
    // this, not the body's `who`, as the sender.
    if let Some(user) = link.user() {
        props = props.with_user_id(ShortString::from(user));
    }
    let body = serde_json::to_vec(req)?;
    link.publish(&exchange(cfg), &target.key(), &body, props).await?;
    let end = Instant::now() + wait;
    let mut answers = Vec::new();
    while let Ok(Some(Ok(d))) = tokio::time::timeout_at(end, consumer.next()).await {
        if d.properties.correlation_id().as_ref().map(|c| c.as_str()) != Some(correlation.as_str()) {
            continue;
        }
        if let Ok(r) = serde_json::from_slice::<Response>(&d.data) {
            answers.push(r);
            if matches!(target, Target::Host(_)) {
                break;
            }
        }
    }
    if let Some(conn) = link.connection() {
        let _ = tokio::time::timeout(Duration::from_secs(2), conn.close(200, "done".into())).await;
    }
    Ok(answers)
}

/// Several questions to every host at once, on one connection: `answers[i]` holds the answers
/// to `reqs[i]` that arrived within `wait`, or sooner once each has `expect` answers (the hosts
/// known to be there). Questions expire unread after `wait`: a host that is down does not find a
/// pile of them when it comes back (an order, sent with [`ask`], waits for it instead).
pub async fn ask_many(
    cfg: &Config,
    link: &mut Link,
    reqs: &[Request],
    wait: Duration,
    expect: usize,
) -> anyhow::Result<Vec<Vec<Response>>> {
    link.ensure_up_by(Instant::now() + cfg.broker.connect_timeout).await?;
    let (chan, mut consumer, reply_to) = link.private_consumer(None, "page").await?;
    let asked = async {
        declare_exchange(&chan, cfg).await?;
        let ids: Vec<String> = reqs.iter().map(|_| uuid::Uuid::new_v4().to_string()).collect();
        let mut messages = Vec::new();
        for (req, id) in reqs.iter().zip(&ids) {
            let props = BasicProperties::default()
                .with_reply_to(ShortString::from(reply_to.as_str()))
                .with_correlation_id(ShortString::from(id.as_str()))
                .with_expiration(ShortString::from(wait.as_millis().max(1).to_string()));
            messages.push((serde_json::to_vec(req)?, props));
        }
        link.publish_batch(&exchange(cfg), &Target::All.key(), messages).await?;
        let end = Instant::now() + wait;
        let mut answers: Vec<Vec<Response>> = vec![Vec::new(); reqs.len()];
        while expect == 0 || answers.iter().any(|a| a.len() < expect) {
            let Ok(Some(Ok(d))) = tokio::time::timeout_at(end, consumer.next()).await else { break };
            let id = d.properties.correlation_id().as_ref().map(|c| c.as_str().to_string());
            let Some(i) = ids.iter().position(|x| Some(x) == id.as_ref()) else { continue };
            if let Ok(r) = serde_json::from_slice::<Response>(&d.data) {
                answers[i].push(r);
            }
        }
        Ok::<_, anyhow::Error>(answers)
    }
    .await;
    let _ = tokio::time::timeout(cfg.broker.op_timeout, chan.close(200, "answered".into())).await;
    if asked.is_err() {
        link.mark_down();
    }
    asked
}

/// Declares the control exchange on a link (before binding to it or publishing on it).
pub async fn declare(link: &mut Link, cfg: &Config) -> Result<(), BrokerError> {
    let chan = link.consumer_channel(1).await?;
    let r = declare_exchange(&chan, cfg).await;
    let _ = tokio::time::timeout(cfg.broker.op_timeout, chan.close(200, "declared".into())).await;
    r
}
