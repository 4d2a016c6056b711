//! The fleet's judge on the broker: the election, the judge's inputs and outputs, its state.
//!
//! - `<prefix>.judge`: a durable queue with `x-single-active-consumer`, bound to the events
//!   exchange with `#`. Every supervisor consumes it; the broker delivers to one of them, the
//!   judge, and hands the queue (with its unacknowledged deliveries) to the next consumer when
//!   the judge's channel closes. Hosts' reports are published into it too (default exchange),
//!   so the judge hears every host at each evaluation, and a supervisor knows it is the judge
//!   by being the one the queue delivers to.
//! - `<prefix>.judge.state`: a durable queue with `x-max-length = 1`: the judge's latest
//!   snapshot (persistent), read by the next judge without taking it away.
//! - On the control exchange: `judged.<host>` (what the judge decided for that host) and
//!   `judge.news` (the fleet's verdicts and alerts, for every supervisor).
//!
//! Both queues are of `broker.queue_type` (`crate::topology`): on a cluster with quorum queues
//! the election and the snapshot survive the node that held them.
//!
//! I/O and translation only: what the judge decides is `crate::fleet_judge`.

use crate::config::Config;
use crate::fleet_judge::{HostReport, News, Snapshot};
use crate::io::amqp::{args_table, deadline, BrokerError, Link};
use crate::judge::HostJudgment;
use crate::topology::{self, QueueRole};
use lapin::options::{BasicConsumeOptions, BasicGetOptions, BasicNackOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Consumer};

/// The `type` property of a host's report in the judge's queue (the rest are job events).
pub const REPORT_TYPE: &str = "drover.host-report";
/// The routing key of the judge's news on the control exchange.
pub const NEWS_KEY: &str = "judge.news";
/// Events waiting for a judge are capped (the oldest dropped) while no supervisor runs.
const MAX_WAITING: i64 = 200_000;

pub fn queue(cfg: &Config) -> String {
    format!("{}.judge", cfg.broker.prefix)
}

pub fn state_queue(cfg: &Config) -> String {
    format!("{}.judge.state", cfg.broker.prefix)
}

/// The routing key of a host's judgments on the control exchange.
pub fn judged_key(host: &str) -> String {
    format!("judged.{}", host.replace('.', "_"))
}

/// The routing key that selects a host's own job events (`<event>.<class>.<host>`).
pub fn own_events_key(host: &str) -> String {
    format!("*.*.{}", host.replace('.', "_"))
}

fn args(cfg: &Config, role: &QueueRole) -> FieldTable {
    args_table(topology::queue_args(cfg.broker.queue_type, role, cfg.broker.queue_expires))
}

async fn declare_queue(chan: &Channel, cfg: &Config, name: &str, a: FieldTable) -> Result<(), BrokerError> {
    let opts = QueueDeclareOptions { durable: true, ..Default::default() };
    deadline(cfg.broker.op_timeout, "queue.declare", chan.queue_declare(name.into(), opts, a)).await.map(|_| ())
}

/// Declares the judge's queue (bound to every job event) and its state queue; consumes the
/// former with acknowledgements, so that what the judge had not finished goes to the next.
pub async fn stand_for_judge(link: &mut Link, cfg: &Config) -> Result<(Channel, Consumer), BrokerError> {
    let chan = link.consumer_channel(200).await?;
    let op = cfg.broker.op_timeout;
    declare_queue(&chan, cfg, &queue(cfg), args(cfg, &QueueRole::Judge { max_length: MAX_WAITING })).await?;
    declare_queue(&chan, cfg, &state_queue(cfg), args(cfg, &QueueRole::JudgeState)).await?;
    let bind = chan.queue_bind(
        queue(cfg).as_str().into(),
        link.names.events().as_str().into(),
        "#".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    );
    deadline(op, "queue.bind", bind).await?;
    let consume = chan.basic_consume(
        queue(cfg).as_str().into(),
        "judge".into(),
        BasicConsumeOptions::default(),
        FieldTable::default(),
    );
    let consumer = deadline(op, "basic.consume", consume).await?;
    Ok((chan, consumer))
}

/// The last judge's snapshot, left in place for the judge after this one.
pub async fn load_snapshot(chan: &Channel, cfg: &Config) -> Result<Option<Snapshot>, BrokerError> {
    let op = cfg.broker.op_timeout;
    let got =
        deadline(op, "basic.get", chan.basic_get(state_queue(cfg).as_str().into(), BasicGetOptions { no_ack: false }))
            .await?;
    let Some(m) = got else { return Ok(None) };
    let snapshot = serde_json::from_slice::<Snapshot>(&m.delivery.data).ok();
    let _ = deadline(op, "basic.nack", m.delivery.acker.nack(BasicNackOptions { requeue: true, ..Default::default() }))
        .await;
    Ok(snapshot)
}

/// Replaces the snapshot in the broker (persistent, confirmed).
pub async fn save_snapshot(link: &mut Link, cfg: &Config, s: &Snapshot) -> Result<(), BrokerError> {
    let body = serde_json::to_vec(s).unwrap_or_default();
    let props = BasicProperties::default().with_delivery_mode(2).with_content_type("application/json".into());
    link.publish("", &state_queue(cfg), &body, props).await
}

/// A host's report to whoever is the judge (it waits in the queue if nobody is, a minute at most).
pub async fn send_report(link: &mut Link, cfg: &Config, r: &HostReport) -> Result<(), BrokerError> {
    let body = serde_json::to_vec(r).unwrap_or_default();
    let props = BasicProperties::default()
        .with_type(REPORT_TYPE.into())
        .with_expiration("60000".into())
        .with_content_type("application/json".into());
    link.publish("", &queue(cfg), &body, props).await
}

/// The judge's decisions for one host.
pub async fn send_judgment(link: &mut Link, cfg: &Config, j: &HostJudgment) -> Result<(), BrokerError> {
    let body = serde_json::to_vec(j).unwrap_or_default();
    let props = BasicProperties::default().with_expiration("60000".into());
    link.publish(&crate::io::fleet::exchange(cfg), &judged_key(&j.host), &body, props).await
}

/// The judge's news for every supervisor.
pub async fn send_news(link: &mut Link, cfg: &Config, n: &News) -> Result<(), BrokerError> {
    let body = serde_json::to_vec(n).unwrap_or_default();
    let props = BasicProperties::default().with_expiration("60000".into());
    link.publish(&crate::io::fleet::exchange(cfg), NEWS_KEY, &body, props).await
}

/// A supervisor's own inputs: its host's job events, and what the judge says to it (its
/// judgments and the news), on private queues of this connection.
pub async fn hear_own(
    link: &mut Link,
    cfg: &Config,
) -> Result<((Channel, Consumer), (Channel, Consumer)), BrokerError> {
    crate::io::fleet::declare(link, cfg).await?;
    let events = link.names.events();
    let (echan, events, _) = link.private_consumer(Some((&events, &own_events_key(&cfg.host))), "own-events").await?;
    let control = crate::io::fleet::exchange(cfg);
    let (jchan, judged, q) = link.private_consumer(Some((&control, &judged_key(&cfg.host))), "judged").await?;
    let bind = jchan.queue_bind(
        q.as_str().into(),
        control.as_str().into(),
        NEWS_KEY.into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    );
    deadline(cfg.broker.op_timeout, "queue.bind", bind).await?;
    Ok(((echan, events), (jchan, judged)))
}
