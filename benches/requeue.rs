//! Requeue-away latency (issue: maintenance drains): from the moment a worker is told to give
//! its job back (the requeue signal a supervisor sends at a drain's deadline) to the job's start
//! on another worker, over many requeues. Two `drover work` processes (release build) take
//! turns: the one running the job is cordoned, told to requeue, and the other one starts it.
//!
//!   cargo bench --bench requeue            (DROVER_BENCH_REQUEUES, default 120)

use drover::events::JobEvent;
use futures_lite::StreamExt;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Connection, ConnectionProperties, ExchangeKind};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Worker(Child);

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn signal(pid: u32, sig: i32) {
    // SAFETY: signals a child of ours.
    unsafe { libc::kill(pid as i32, sig) };
}

fn main() {
    let n: usize = std::env::var("DROVER_BENCH_REQUEUES").ok().and_then(|v| v.parse().ok()).unwrap_or(120);
    let url = std::env::var("DROVER_AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let id = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let prefix = format!("bench-requeue-{id}");
    let dir = std::env::temp_dir().join(&prefix);
    std::fs::create_dir_all(&dir).expect("dir");
    let handler = format!("{}/tests/handlers/behave.py", env!("CARGO_MANIFEST_DIR"));
    let config = dir.join("drover.toml");
    std::fs::write(
        &config,
        format!(
            "[broker]\nurl = \"{url}\"\nprefix = \"{prefix}\"\nqueue_expires = \"10m\"\n[worker]\nkill_grace = \"1s\"\n\
             [classes.r]\nmode = \"persistent\"\ncommand = [\"python3\", \"{handler}\", \"persistent\"]\ntimeout = \"1h\"\n"
        ),
    )
    .expect("config");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async move {
        let conn = Connection::connect(&url, ConnectionProperties::default()).await.expect("broker");
        let chan = conn.create_channel().await.expect("channel");
        let exchange = format!("{prefix}.events");
        chan.exchange_declare(
            exchange.as_str().into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions { durable: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .expect("exchange");
        let mut args = FieldTable::default();
        args.insert("x-expires".into(), AMQPValue::LongLongInt(600_000));
        let q = chan
            .queue_declare("".into(), QueueDeclareOptions { exclusive: true, ..Default::default() }, args)
            .await
            .expect("queue");
        chan.queue_bind(
            q.name().as_str().into(),
            exchange.as_str().into(),
            "started.#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind");
        let mut events = chan
            .basic_consume(
                q.name().as_str().into(),
                "bench".into(),
                BasicConsumeOptions { no_ack: true, ..Default::default() },
                FieldTable::default(),
            )
            .await
            .expect("consume");
        let spawn = |i: usize| {
            Worker(
                Command::new(env!("CARGO_BIN_EXE_drover"))
                    .args(["work", "--config"])
                    .arg(&config)
                    .args(["--instance", &format!("r-{i}")])
                    .env("DROVER_LOG", "warn")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("drover work"),
            )
        };
        let workers = [spawn(1), spawn(2)];
        let pids = [workers[0].0.id(), workers[1].0.id()];
        let out = Command::new(env!("CARGO_BIN_EXE_drover"))
            .args(["submit", "--config"])
            .arg(&config)
            .args(["--class", "r", "--payload", r#"{"sleep": 3600}"#])
            .output()
            .expect("submit");
        assert!(out.status.success());
        async fn next_start(events: &mut lapin::Consumer) -> Result<JobEvent, tokio::time::error::Elapsed> {
            tokio::time::timeout(Duration::from_secs(30), async {
                loop {
                    let d = events.next().await.expect("events").expect("delivery");
                    if let Some(e) = drover::events::parse(&d.data).ok().and_then(|e| e.into_iter().next()) {
                        return e;
                    }
                }
            })
            .await
        }
        let first = next_start(&mut events).await.expect("the job starts");
        let mut on = if first.unit == "r-1" { 0 } else { 1 };
        let mut samples = Vec::with_capacity(n);
        for _ in 0..n {
            // The worker running the job is cordoned (as a drain does first), then told to
            // requeue it; the clock runs from that signal to the start on the other worker.
            signal(pids[on], libc::SIGUSR1);
            tokio::time::sleep(Duration::from_millis(50)).await;
            let t = Instant::now();
            signal(pids[on], libc::SIGRTMIN() + 2);
            let e = next_start(&mut events).await.expect("the job starts elsewhere");
            samples.push(t.elapsed());
            assert_ne!(e.unit, format!("r-{}", on + 1), "started again on the worker that gave it back");
            signal(pids[on], libc::SIGUSR2);
            on = 1 - on;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        samples.sort();
        let pct = |p: f64| samples[((samples.len() as f64 - 1.0) * p).round() as usize];
        println!("requeue-away latency over {} requeues (2 workers, persistent mode, same machine)\n", samples.len());
        println!("| p50 | p90 | p99 | max | target |\n|---|---|---|---|---|");
        println!(
            "| {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | p99 under 1 s |",
            ms(pct(0.5)),
            ms(pct(0.9)),
            ms(pct(0.99)),
            ms(pct(1.0))
        );
        drop(workers);
        let _ = chan.queue_delete(format!("{prefix}.jobs.r").as_str().into(), QueueDeleteOptions::default()).await;
    });
    let _ = std::fs::remove_dir_all(&dir);
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
