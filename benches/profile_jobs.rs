//! Helpers of `benches/profile.sh` (where a job's cost goes; see BENCHMARKS.md):
//!
//!     profile_jobs plain QUEUE N     a plain lapin consumer: prefetch 1, acknowledges N deliveries
//!                                    one at a time (awaiting each ack), then closes and exits
//!     profile_jobs wait QUEUE subscribed|drained
//!                                    polls the queue (passive declare every 10 ms) until it has a
//!                                    consumer / no ready message; prints the ready count then
//!     profile_jobs ready QUEUE       prints the queue's ready count once
//!
//! The plain consumer is the baseline a `drover work` is compared with: one connection, one
//! current-thread tokio runtime (as a worker has), no timers of its own. `DROVER_AMQP_URL`
//! overrides the loopback broker. Run with no arguments (as `cargo bench` and
//! `cargo test --benches` do) it prints this usage and exits.

use futures_lite::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties};
use std::time::Duration;

fn amqp_url() -> String {
    std::env::var("DROVER_AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

async fn connect() -> Connection {
    Connection::connect(&amqp_url(), ConnectionProperties::default())
        .await
        .expect("cannot reach RabbitMQ: run scripts/services.sh up")
}

async fn plain(queue: &str, n: u64) {
    let conn = connect().await;
    let chan = conn.create_channel().await.expect("channel");
    chan.basic_qos(1, BasicQosOptions::default()).await.expect("qos");
    let mut consumer = chan
        .basic_consume(queue.into(), "plain".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await
        .expect("consume");
    let mut acked = 0;
    while acked < n {
        match consumer.next().await {
            Some(Ok(d)) => {
                d.acker.ack(BasicAckOptions::default()).await.expect("ack");
                acked += 1;
            }
            other => panic!("the subscription ended after {acked} acks: {:?}", other.map(|r| r.err())),
        }
    }
    let _ = conn.close(200, "done".into()).await;
    println!("acked {acked}");
}

/// (ready messages, consumers) of the queue.
async fn counts(chan: &Channel, queue: &str) -> (u32, u32) {
    let q = chan
        .queue_declare(queue.into(), QueueDeclareOptions { passive: true, ..Default::default() }, FieldTable::default())
        .await
        .unwrap_or_else(|e| panic!("passive declare of {queue}: {e}"));
    (q.message_count(), q.consumer_count())
}

async fn wait(queue: &str, what: &str) {
    let conn = connect().await;
    let chan = conn.create_channel().await.expect("channel");
    // A liveness guard for the script (a worker that never subscribes), not a measurement.
    let give_up = tokio::time::Instant::now() + Duration::from_secs(1800);
    loop {
        let (ready, consumers) = counts(&chan, queue).await;
        let done = match what {
            "subscribed" => consumers >= 1,
            "drained" => ready == 0,
            _ => panic!("wait for `subscribed` or `drained`, not {what:?}"),
        };
        if done {
            println!("{ready}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < give_up,
            "{queue}: still not {what} ({ready} ready, {consumers} consumers)"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = conn.close(200, "done".into()).await;
}

async fn ready(queue: &str) {
    let conn = connect().await;
    let chan = conn.create_channel().await.expect("channel");
    println!("{}", counts(&chan, queue).await.0);
    let _ = conn.close(200, "done".into()).await;
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["plain", queue, n] => rt.block_on(plain(queue, n.parse().expect("N: a number of jobs"))),
        ["wait", queue, what] => rt.block_on(wait(queue, what)),
        ["ready", queue] => rt.block_on(ready(queue)),
        _ => eprintln!(
            "usage: profile_jobs plain QUEUE N | wait QUEUE subscribed|drained | ready QUEUE (see benches/profile.sh)"
        ),
    }
}
