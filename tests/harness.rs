//! Shared test plumbing: a unique prefix per test (queues expire on their own), real `drover work`
//! processes, a collector of job events, and the dead-letter queue read back.
//!
//! The broker comes from `DROVER_AMQP_URL` (default: loopback); `scripts/services.sh` makes sure
//! it runs. A missing broker fails the test loudly.

use drover::events::JobEvent;
use futures_lite::StreamExt;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties, ExchangeKind};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

/// Tests that stop the broker take this for writing; every other test holds it for reading.
static BROKER: RwLock<()> = RwLock::new(());

pub enum BrokerUse {
    Shared(#[allow(dead_code)] RwLockReadGuard<'static, ()>),
    Exclusive(#[allow(dead_code)] RwLockWriteGuard<'static, ()>),
}

pub fn amqp_url() -> String {
    std::env::var("DROVER_AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

pub fn handler() -> String {
    format!("{}/tests/handlers/behave.py", env!("CARGO_MANIFEST_DIR"))
}

pub struct Env {
    pub prefix: String,
    pub dir: PathBuf,
    pub config: PathBuf,
    _broker: BrokerUse,
}

impl Env {
    /// A test environment with the given `[classes.*]` tables (and any extra sections).
    /// `{handler}` and `{dir}` in the text are replaced.
    pub fn new(name: &str, classes: &str) -> Env {
        Env::with_broker(name, classes, BrokerUse::Shared(BROKER.read().unwrap_or_else(|e| e.into_inner())))
    }

    /// Same, for a test that stops and starts the broker: it runs alone.
    pub fn exclusive(name: &str, classes: &str) -> Env {
        Env::with_broker(name, classes, BrokerUse::Exclusive(BROKER.write().unwrap_or_else(|e| e.into_inner())))
    }

    fn with_broker(name: &str, classes: &str, broker: BrokerUse) -> Env {
        let id = &uuid::Uuid::new_v4().simple().to_string()[..8];
        let prefix = format!("t-{name}-{id}");
        // Not under /tmp: worker units run with PrivateTmp=yes and must see the test's files.
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("drover-test-{name}-{id}"));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let body = classes
            .replace("{handler}", &handler())
            .replace("{dir}", &dir.display().to_string())
            .replace("{id}", id)
            .replace("{behave_log}", &dir.join("behave.log").display().to_string());
        let text = format!(
            "[broker]\nurl = \"{}\"\nprefix = \"{prefix}\"\nqueue_expires = \"10m\"\nreconnect_base = \"200ms\"\nreconnect_max = \"2s\"\nconnect_timeout = \"5s\"\nop_timeout = \"5s\"\n{body}",
            amqp_url()
        );
        let config = dir.join("drover.toml");
        std::fs::write(&config, text).expect("write config");
        Env { prefix, dir, config, _broker: broker }
    }

    pub fn behave_log(&self) -> PathBuf {
        self.dir.join("behave.log")
    }

    /// Lines of the test handler's log with the given event (`start`, `done`, `die`).
    pub fn behave(&self, event: &str) -> Vec<(String, u32)> {
        let text = std::fs::read_to_string(self.behave_log()).unwrap_or_default();
        text.lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                (f.len() == 4 && f[0] == event).then(|| (f[1].to_string(), f[2].parse().unwrap_or(0)))
            })
            .collect()
    }

    pub fn worker(&self, class: &str, instance: &str) -> Worker {
        let log = self.dir.join(format!("{instance}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_drover"))
            .args(["work", "--config"])
            .arg(&self.config)
            .args(["--class", class, "--instance", instance])
            .env("BEHAVE_LOG", self.behave_log())
            .env("DROVER_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start drover work");
        Worker { child, instance: instance.to_string(), log }
    }

    /// Submits through the real CLI and returns the ids it printed.
    pub fn submit(&self, class: &str, payload: &str, count: u64, extra: &[&str]) -> Vec<String> {
        let out = Command::new(env!("CARGO_BIN_EXE_drover"))
            .args(["submit", "--config"])
            .arg(&self.config)
            .args(["--class", class, "--payload", payload, "--count", &count.to_string()])
            .args(extra)
            .output()
            .expect("run drover submit");
        assert!(out.status.success(), "submit failed: {}", String::from_utf8_lossy(&out.stderr));
        let ids: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect();
        assert_eq!(ids.len() as u64, count);
        ids
    }

    pub async fn events(&self) -> Events {
        let mut e = Events { prefix: self.prefix.clone(), all: Vec::new(), consumer: None };
        e.connect().await.expect("the events collector needs a running broker");
        e
    }

    /// Reads everything in the class's dead-letter queue.
    pub async fn dead_letters(&self, class: &str) -> Vec<DeadLetter> {
        let conn = connect().await;
        let chan = conn.create_channel().await.expect("channel");
        let queue = format!("{}.dead.{class}", self.prefix);
        let mut out = Vec::new();
        while let Some(msg) =
            chan.basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true }).await.expect("basic.get")
        {
            let d = msg.delivery;
            out.push(DeadLetter {
                id: d.properties.message_id().as_ref().map(|s| s.as_str().to_string()),
                reason: drover::io::wire::header_string(&d.properties, drover::job::H_DEAD_REASON).unwrap_or_default(),
                detail: drover::io::wire::header_string(&d.properties, drover::job::H_DEAD_DETAIL).unwrap_or_default(),
                attempt: drover::io::wire::header_int(&d.properties, drover::job::H_ATTEMPT),
                body: d.data,
            });
        }
        out
    }

    /// Publishes a raw message to the class's work queue (for malformed input).
    pub async fn publish_raw(&self, class: &str, body: &[u8], props: BasicProperties) {
        let conn = connect().await;
        let chan = conn.create_channel().await.expect("channel");
        chan.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm");
        let queue = format!("{}.jobs.{class}", self.prefix);
        chan.basic_publish("".into(), queue.as_str().into(), BasicPublishOptions::default(), body, props)
            .await
            .expect("publish")
            .await
            .expect("confirm");
    }

    pub async fn queue_depth(&self, queue: &str) -> Option<u32> {
        let conn = connect().await;
        let chan = conn.create_channel().await.expect("channel");
        let opts = QueueDeclareOptions { passive: true, ..Default::default() };
        chan.queue_declare(queue.into(), opts, FieldTable::default()).await.ok().map(|q| q.message_count())
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("test files kept in {}", self.dir.display());
        }
    }
}

pub async fn connect() -> Connection {
    Connection::connect(&amqp_url(), ConnectionProperties::default())
        .await
        .expect("cannot reach RabbitMQ: run scripts/services.sh up")
}

#[derive(Debug)]
pub struct DeadLetter {
    pub id: Option<String>,
    pub reason: String,
    pub detail: String,
    pub attempt: Option<i64>,
    #[allow(dead_code)]
    pub body: Vec<u8>,
}

pub struct Worker {
    pub child: Child,
    pub instance: String,
    log: PathBuf,
}

impl Worker {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: signals our own child process.
        unsafe { libc::kill(self.pid(), sig) };
    }

    /// Waits for the worker to exit, up to `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- log of worker {} ----\n{}", self.instance, self.log());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The fleet's verdicts the judge publishes on the control exchange (its news), as each
/// supervisor receives them.
pub struct Verdicts {
    _conn: Connection,
    consumer: lapin::Consumer,
}

impl Env {
    /// Follows the fleet's verdicts from now on.
    pub async fn verdicts(&self) -> Verdicts {
        let conn = connect().await;
        let chan = conn.create_channel().await.expect("channel");
        let exchange = format!("{}.control", self.prefix);
        chan.exchange_declare(
            exchange.as_str().into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions { durable: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .expect("control exchange");
        let q = chan
            .queue_declare(
                "".into(),
                QueueDeclareOptions { exclusive: true, ..Default::default() },
                FieldTable::default(),
            )
            .await
            .expect("queue");
        chan.queue_bind(
            q.name().as_str().into(),
            exchange.as_str().into(),
            "judge.news".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind");
        let consumer = chan
            .basic_consume(
                q.name().as_str().into(),
                "test-verdicts".into(),
                BasicConsumeOptions { no_ack: true, ..Default::default() },
                FieldTable::default(),
            )
            .await
            .expect("consume");
        Verdicts { _conn: conn, consumer }
    }
}

impl Verdicts {
    /// Waits for a host's verdicts that satisfy `done`; panics with the last one after `limit`.
    pub async fn wait_for(
        &mut self,
        what: &str,
        limit: Duration,
        done: impl Fn(&drover::verdicts::HostVerdicts) -> bool,
    ) -> drover::verdicts::HostVerdicts {
        let end = tokio::time::Instant::now() + limit;
        let mut last = None;
        loop {
            match tokio::time::timeout_at(end, self.consumer.next()).await {
                Ok(Some(Ok(d))) => {
                    let n: drover::fleet_judge::News = serde_json::from_slice(&d.data).expect("news is JSON");
                    for v in n.verdicts {
                        if done(&v) {
                            return v;
                        }
                        last = Some(v);
                    }
                }
                Ok(_) => panic!("the verdicts consumer closed while waiting for {what}"),
                Err(_) => panic!("timed out after {limit:?} waiting for {what}; last verdicts: {last:?}"),
            }
        }
    }
}

/// Job events seen so far, collected from a durable queue bound to the events exchange (it
/// survives a broker restart; the collector reconnects).
pub struct Events {
    prefix: String,
    pub all: Vec<JobEvent>,
    consumer: Option<(Connection, lapin::Consumer)>,
}

impl Events {
    async fn connect(&mut self) -> Result<(), lapin::Error> {
        let conn = Connection::connect(&amqp_url(), ConnectionProperties::default()).await?;
        let chan = conn.create_channel().await?;
        let exchange = format!("{}.events", self.prefix);
        let queue = format!("{}.test-events", self.prefix);
        chan.exchange_declare(
            exchange.as_str().into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions { durable: true, ..Default::default() },
            FieldTable::default(),
        )
        .await?;
        let mut args = FieldTable::default();
        args.insert("x-expires".into(), AMQPValue::LongLongInt(600_000));
        chan.queue_declare(queue.as_str().into(), QueueDeclareOptions { durable: true, ..Default::default() }, args)
            .await?;
        chan.queue_bind(
            queue.as_str().into(),
            exchange.as_str().into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
        let consumer = chan
            .basic_consume(
                queue.as_str().into(),
                "test".into(),
                BasicConsumeOptions { no_ack: true, ..Default::default() },
                FieldTable::default(),
            )
            .await?;
        self.consumer = Some((conn, consumer));
        Ok(())
    }

    /// Collects events until `done` holds over all events so far; panics with a summary after
    /// `limit`.
    pub async fn wait_for(&mut self, what: &str, limit: Duration, done: impl Fn(&[JobEvent]) -> bool) {
        let end = tokio::time::Instant::now() + limit;
        while !done(&self.all) {
            if tokio::time::Instant::now() >= end {
                panic!("timed out after {limit:?} waiting for {what}; events so far:\n{}", self.summary());
            }
            if self.consumer.is_none() {
                if self.connect().await.is_err() {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                continue;
            }
            let next = {
                let (_, consumer) = self.consumer.as_mut().expect("connected");
                tokio::time::timeout_at(end, consumer.next()).await
            };
            match next {
                Ok(Some(Ok(d))) => match drover::events::parse(&d.data) {
                    Ok(e) => self.all.extend(e),
                    Err(err) => panic!("an event that does not parse ({err}): {}", String::from_utf8_lossy(&d.data)),
                },
                Ok(Some(Err(_))) | Ok(None) => self.consumer = None,
                Err(_) => {}
            }
        }
    }

    pub fn of<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a JobEvent> + 'a {
        self.all.iter().filter(move |e| e.event.as_str() == kind)
    }

    pub fn summary(&self) -> String {
        let mut counts = std::collections::BTreeMap::new();
        for e in &self.all {
            *counts.entry(e.event.as_str()).or_insert(0) += 1;
        }
        let tail: Vec<String> = self.all.iter().rev().take(15).map(|e| format!("{e:?}")).collect();
        format!("counts: {counts:?}\nlast events:\n{}", tail.join("\n"))
    }
}

pub fn count(events: &[JobEvent], kind: &str) -> usize {
    events.iter().filter(|e| e.event.as_str() == kind).count()
}

pub fn process_alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks for existence.
    let alive = unsafe { libc::kill(pid, 0) } == 0;
    // A zombie still answers kill(0): look at its state.
    alive && !std::fs::read_to_string(format!("/proc/{pid}/stat")).map(|s| s.contains(") Z ")).unwrap_or(true)
}

pub fn wait_until(what: &str, limit: Duration, cond: impl Fn() -> bool) {
    let end = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < end, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}
