//! Worker throughput: no-op jobs per second through `drover work`, each against the limit for
//! its setting measured in the same run, and the worker's memory. See BENCHMARKS.md.
//!
//!     cargo bench --bench throughput      (under `cargo test` it is a small smoke run)
//!
//! Needs a RabbitMQ broker (`scripts/services.sh up`; `DROVER_AMQP_URL` overrides the loopback
//! default) and `python3`. Knobs: `DROVER_BENCH_ROUNDS` (3), `DROVER_BENCH_JOBS` (20000, the
//! queue-fed cases), `DROVER_BENCH_EXEC_JOBS` (3000, the spawning cases), `DROVER_BENCH_PEERS`
//! (1: also run Dramatiq, installed from `benches/peers/requirements.lock` into a virtual
//! environment under the target directory by `benches/peers/setup.sh`; 0 to skip),
//! `DROVER_BENCH_BASELINE_BIN` (unset: the path of another `drover` binary, for example a build
//! of the tree before a change; each round then also runs the `drover work` cases with it, right
//! after the same cases with this tree's binary, for a before/after in one sitting).
//!
//! The broker's CPU per job of the queue-fed cases is `utime + stime` of the `beam.smp`
//! listening on the AMQP port (`/proc/<pid>/stat`) over the window, divided by its jobs: raw,
//! with whatever else the broker served meanwhile, so compare cases of the same round.
//!
//! Method, per case: load the jobs into a fresh queue first (publishing is not measured), then
//! start the consumers and poll the queue with a passive `queue.declare` every 10 ms. The window
//! opens at the first poll that sees every consumer subscribed (a `drover work` subscribes only
//! once its handler is ready), with `c0` jobs still ready, and closes at the first poll that
//! sees no ready job. Rate = c0 / window. Error: at most one poll interval at each end plus the
//! jobs in flight (one per consumer): under 0.5% at these sizes. Nothing here asserts a time:
//! the numbers are printed, and the machine is shared.

use drover::config::Config;
use drover::io::clock::now_ms;
use drover::io::handler::{Attempt, Handler, Identity, Stop};
use drover::job::Job;
use futures_lite::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicQosOptions, ExchangeDeleteOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const POLL: Duration = Duration::from_millis(10);
/// A liveness guard, not a performance assertion: a case that makes no progress for this long
/// is reported as broken.
const STALL: Duration = Duration::from_secs(60);

fn amqp_url() -> String {
    std::env::var("DROVER_AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime")
}

fn median(v: &[f64]) -> f64 {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if s.is_empty() {
        return f64::NAN;
    }
    s.sort_by(|a, b| a.partial_cmp(b).expect("finite"));
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

// ------------------------------------------------------------------ one case's environment --

/// A unique prefix, a config file, and the queue's jobs loaded before anything is timed.
struct Case {
    /// Run the workers on the path they take under systemd (`INVOCATION_ID` set). Since issue 11
    /// both paths start handlers with the PR_SET_PDEATHSIG hook; before it, this path had none.
    systemd_path: bool,
    /// The `drover` binary the workers run: this tree's, or the baseline's.
    bin: PathBuf,
    cfg: Config,
    config_path: PathBuf,
    dir: PathBuf,
    queue: String,
}

impl Case {
    fn new(name: &str, class_body: &str) -> Case {
        let id = &uuid::Uuid::new_v4().simple().to_string()[..8];
        let prefix = format!("bench-{name}-{id}");
        let dir = std::env::temp_dir().join(format!("drover-bench-{name}-{id}"));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let text = format!(
            "[broker]\nurl = \"{}\"\nprefix = \"{prefix}\"\nqueue_expires = \"10m\"\n\n[classes.noop]\n{class_body}",
            amqp_url()
        );
        let config_path = dir.join("drover.toml");
        std::fs::write(&config_path, &text).expect("write config");
        let cfg = Config::parse(&text, "bench", &drover::io::config_file::environment())
            .unwrap_or_else(|e| panic!("bench config: {e}"));
        Case {
            systemd_path: false,
            bin: PathBuf::from(env!("CARGO_BIN_EXE_drover")),
            queue: format!("{prefix}.jobs.noop"),
            cfg,
            config_path,
            dir,
        }
    }

    fn persistent(name: &str) -> Case {
        let handler = format!("{}/benches/noop_handler.py", env!("CARGO_MANIFEST_DIR"));
        Case::new(
            name,
            &format!(
                "mode = \"persistent\"\ncommand = [\"python3\", \"{handler}\"]\nprefetch = 1\ntimeout = \"1m\"\n\
                 deadline = \"1h\"\nwait_ready = true\nready_timeout = \"30s\"\n"
            ),
        )
    }

    fn exec(name: &str) -> Case {
        Case::new(
            name,
            "mode = \"exec\"\ncommand = [\"/bin/true\"]\nprefetch = 1\ntimeout = \"1m\"\ndeadline = \"1h\"\n",
        )
    }

    /// Publishes `n` no-op jobs with confirms (pipelined by `submit`).
    async fn load(&self, n: u64) {
        let s = drover::cli::submit::Submission {
            class: "noop".into(),
            payload: b"{}".to_vec(),
            deadline: None,
            tenant: None,
            count: n,
        };
        let ids = drover::cli::submit::submit(&self.cfg, &s).await.expect("load the queue (is RabbitMQ up?)");
        assert_eq!(ids.len() as u64, n);
    }

    fn spawn_worker(&self, i: usize) -> Worker {
        use std::os::unix::process::CommandExt;
        let log = std::fs::File::create(self.dir.join(format!("worker-{i}.log"))).expect("log file");
        let mut cmd = Command::new(&self.bin);
        // A worker must not outlive the bench (killed, or stopped by a test runner's timeout):
        // it would keep consuming and skew whatever runs next on the machine.
        // SAFETY: prctl is async-signal-safe; the spawning thread (main) lives as long as the bench.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd
            .args(["work", "--config"])
            .arg(&self.config_path)
            .args(["--class", "noop", "--instance", &format!("bench-{i}")])
            .env("DROVER_LOG", "info")
            .env("NO_COLOR", "1")
            .envs(self.systemd_path.then_some(("INVOCATION_ID", "bench")))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start drover work");
        Worker(child)
    }

    fn worker_logs(&self) -> String {
        let mut out = String::new();
        for i in 0..4 {
            if let Ok(t) = std::fs::read_to_string(self.dir.join(format!("worker-{i}.log"))) {
                out.push_str(&format!("---- worker {i} ----\n{t}\n"));
            }
        }
        out
    }

    async fn cleanup(&self, chan: &Channel) {
        let p = &self.cfg.broker.prefix;
        for q in [format!("{p}.jobs.noop"), format!("{p}.dead.noop")] {
            let _ = chan.queue_delete(q.as_str().into(), QueueDeleteOptions::default()).await;
        }
        let _ = chan.exchange_delete(format!("{p}.events").as_str().into(), ExchangeDeleteOptions::default()).await;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ------------------------------------------------------------------------- the measurement --

struct Window {
    jobs: u64,
    secs: f64,
    /// The broker's CPU ticks over the window, when its process was found.
    broker_ticks: Option<u64>,
}

/// The broker's `beam.smp`: the process listening on the AMQP URL's port (`ss -ltnp`).
fn broker_pid() -> Option<u32> {
    let url = amqp_url();
    let port = url
        .split_once("://")
        .map(|(_, r)| r.rsplit_once('@').map_or(r, |(_, h)| h))
        .and_then(|h| h.split('/').next())
        .and_then(|h| h.rsplit_once(':'))
        .map_or("5672".to_string(), |(_, p)| p.to_string());
    let out = Command::new("ss").args(["-ltnpH", &format!("sport = :{port}")]).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let at = text.find("beam.smp\",pid=")? + "beam.smp\",pid=".len();
    text[at..].split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn clk_tck() -> f64 {
    // SAFETY: sysconf reads a constant.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }) as f64
}

impl Window {
    /// The broker's CPU per job in the window, microseconds.
    fn broker_us(&self) -> f64 {
        self.broker_ticks.map_or(f64::NAN, |t| t as f64 / clk_tck() / self.jobs as f64 * 1e6)
    }
}

impl Window {
    fn rate(&self) -> f64 {
        self.jobs as f64 / self.secs
    }
}

/// Polls the queue until every consumer is subscribed (window opens) and then until no job is
/// ready (window closes). See the module doc.
async fn measure(chan: &Channel, queue: &str, consumers: u32) -> Result<Window, String> {
    let broker = broker_pid();
    let mut start: Option<(Instant, u32, Option<u64>)> = None;
    let mut last = (u32::MAX, Instant::now());
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let sent = Instant::now();
        let q = chan
            .queue_declare(
                queue.into(),
                QueueDeclareOptions { passive: true, ..Default::default() },
                FieldTable::default(),
            )
            .await
            .map_err(|e| format!("passive declare of {queue}: {e}"))?;
        let at = sent + sent.elapsed() / 2;
        let (ready, subscribed) = (q.message_count(), q.consumer_count());
        if ready != last.0 {
            last = (ready, at);
        } else if at - last.1 > STALL {
            return Err(format!("no progress for {STALL:?}: {ready} ready, {subscribed} consumers"));
        }
        match start {
            None if subscribed >= consumers => start = Some((at, ready, broker.and_then(cpu_ticks))),
            Some((t0, c0, b0)) if ready == 0 => {
                let b1 = broker.and_then(cpu_ticks);
                let broker_ticks = b0.zip(b1).map(|(a, b)| b.saturating_sub(a));
                return Ok(Window { jobs: u64::from(c0), secs: (at - t0).as_secs_f64(), broker_ticks });
            }
            _ => {}
        }
    }
}

async fn connect() -> Connection {
    Connection::connect(&amqp_url(), ConnectionProperties::default())
        .await
        .expect("cannot reach RabbitMQ: run scripts/services.sh up")
}

/// What a plain consumer saw, for the in-process cross-check of the polling method.
struct PlainSeen {
    acked: u64,
    first: Option<Instant>,
    last: Option<Instant>,
}

/// A plain lapin consumer on its own thread, connection and current-thread runtime (like a
/// `drover work` process): prefetch 1, awaiting the ack of each message before the next.
fn plain_consumer(queue: String, tag: String, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<PlainSeen> {
    std::thread::spawn(move || {
        current_thread().block_on(async move {
            let conn = connect().await;
            let chan = conn.create_channel().await.expect("channel");
            chan.basic_qos(1, BasicQosOptions::default()).await.expect("qos");
            let mut consumer = chan
                .basic_consume(
                    queue.as_str().into(),
                    tag.as_str().into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
                .expect("consume");
            let mut seen = PlainSeen { acked: 0, first: None, last: None };
            while !stop.load(Ordering::Relaxed) {
                match tokio::time::timeout(Duration::from_millis(50), consumer.next()).await {
                    Ok(Some(Ok(d))) => {
                        seen.first.get_or_insert_with(Instant::now);
                        d.acker.ack(BasicAckOptions::default()).await.expect("ack");
                        seen.acked += 1;
                        seen.last = Some(Instant::now());
                    }
                    Ok(_) => panic!("plain consumer lost its subscription"),
                    Err(_) => {}
                }
            }
            let _ = conn.close(200, "done".into()).await;
            seen
        })
    })
}

async fn plain_case(chan: &Channel, consumers: u32, jobs: u64) -> (Window, f64) {
    let case = Case::persistent(&format!("plain{consumers}"));
    case.load(jobs).await;
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> =
        (0..consumers).map(|i| plain_consumer(case.queue.clone(), format!("plain-{i}"), stop.clone())).collect();
    let w = measure(chan, &case.queue, consumers).await.unwrap_or_else(|e| panic!("plain x{consumers}: {e}"));
    tokio::time::sleep(Duration::from_millis(100)).await; // the last in-flight acks
    stop.store(true, Ordering::Relaxed);
    let seen: Vec<PlainSeen> = threads.into_iter().map(|t| t.join().expect("consumer thread")).collect();
    let acked: u64 = seen.iter().map(|s| s.acked).sum();
    let first = seen.iter().filter_map(|s| s.first).min();
    let last = seen.iter().filter_map(|s| s.last).max();
    let inproc = match (first, last) {
        (Some(f), Some(l)) => acked as f64 / (l - f).as_secs_f64(),
        _ => f64::NAN,
    };
    case.cleanup(chan).await;
    (w, inproc)
}

#[derive(Clone, Copy, Default)]
struct Mem {
    rss_kb: u64,
    hwm_kb: u64,
    anon_kb: u64,
    file_kb: u64,
}

fn mem_of(pid: u32) -> Option<Mem> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some(Mem {
        rss_kb: field("VmRSS:")?,
        hwm_kb: field("VmHWM:")?,
        anon_kb: field("RssAnon:").unwrap_or(0),
        file_kb: field("RssFile:").unwrap_or(0),
    })
}

fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else { continue };
        let ppid = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
        if ppid == Some(pid) {
            out.push(child);
        }
    }
    out
}

/// A `drover work` process, killed if the bench unwinds before stopping it.
struct Worker(Child);

impl Drop for Worker {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

struct WorkerResult {
    rate: f64,
    broker_us: f64,
    /// Per worker process: (drover work, its handler).
    mem: Vec<(Mem, Option<Mem>)>,
}

async fn stop_workers(workers: &mut [Worker]) {
    for w in workers.iter() {
        // SAFETY: signals our own child.
        unsafe { libc::kill(w.0.id() as i32, libc::SIGTERM) };
    }
    for Worker(w) in workers.iter_mut() {
        let end = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(_)) = w.try_wait() {
                break;
            }
            if Instant::now() > end {
                let _ = w.kill();
                let _ = w.wait();
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn drover_case(chan: &Channel, case: Case, workers: usize, jobs: u64) -> WorkerResult {
    case.load(jobs).await;
    let mut procs: Vec<Worker> = (0..workers).map(|i| case.spawn_worker(i)).collect();
    let w = measure(chan, &case.queue, workers as u32).await;
    tokio::time::sleep(Duration::from_millis(100)).await; // the last in-flight jobs
    let mem = procs
        .iter()
        .map(|p| {
            let m = mem_of(p.0.id()).unwrap_or_default();
            let handler = children_of(p.0.id()).into_iter().filter_map(mem_of).next();
            (m, handler)
        })
        .collect();
    stop_workers(&mut procs).await;
    let w = w.unwrap_or_else(|e| panic!("drover work x{workers}: {e}\n{}", case.worker_logs()));
    case.cleanup(chan).await;
    WorkerResult { rate: w.rate(), broker_us: w.broker_us(), mem }
}

// -------------------------------------------------------------------------------- peers --

/// Dramatiq's `bin` directory, installed on first use (`benches/peers/setup.sh`); `None` when
/// peers are off or cannot be installed (said once).
fn dramatiq_bin() -> Option<PathBuf> {
    if env_num("DROVER_BENCH_PEERS", 1) == 0 {
        return None;
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    let out = Command::new(format!("{}/benches/peers/setup.sh", env!("CARGO_MANIFEST_DIR")))
        .arg(target.join("peers/venv"))
        .stderr(Stdio::inherit())
        .output()
        .ok()
        .filter(|o| o.status.success());
    match out {
        Some(o) => Some(PathBuf::from(String::from_utf8_lossy(&o.stdout).trim())),
        None => {
            eprintln!("throughput: Dramatiq could not be installed (benches/peers/setup.sh); its case is skipped");
            None
        }
    }
}

/// Dramatiq, `processes` processes of one thread, prefetch 1, on a queue loaded first.
async fn dramatiq_case(chan: &Channel, bin: &std::path::Path, processes: u32, jobs: u64) -> Window {
    let queue = format!("bench_dramatiq_{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let peers = format!("{}/benches/peers", env!("CARGO_MANIFEST_DIR"));
    let load = Command::new(bin.join("python"))
        .args(["dramatiq_peer.py", "enqueue", &jobs.to_string()])
        .current_dir(&peers)
        .env("BENCH_QUEUE", &queue)
        .env("DROVER_AMQP_URL", amqp_url())
        .status()
        .expect("run the Dramatiq loader");
    assert!(load.success(), "loading Dramatiq's queue failed");
    let mut cmd = Command::new(bin.join("dramatiq"));
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl is async-signal-safe; see Case::spawn_worker.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
    }
    let child = cmd
        .args(["--processes", &processes.to_string(), "--threads", "1", "--skip-logging", "dramatiq_peer"])
        .current_dir(&peers)
        .env("BENCH_QUEUE", &queue)
        .env("DROVER_AMQP_URL", amqp_url())
        .env("dramatiq_queue_prefetch", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start dramatiq");
    let mut procs = [Worker(child)];
    let w = measure(chan, &queue, processes).await;
    // SIGTERM to the master: it stops its worker processes.
    stop_workers(&mut procs).await;
    for q in [queue.clone(), format!("{queue}.DQ"), format!("{queue}.XQ")] {
        let _ = chan.queue_delete(q.as_str().into(), QueueDeleteOptions::default()).await;
    }
    w.unwrap_or_else(|e| panic!("dramatiq x{processes}: {e}"))
}

// ------------------------------------------------------------------------ spawning cases --

async fn raw_spawn(n: u64) -> f64 {
    let t = Instant::now();
    for _ in 0..n {
        let st = tokio::process::Command::new("/bin/true").status().await.expect("spawn /bin/true");
        assert!(st.success());
    }
    n as f64 / t.elapsed().as_secs_f64()
}

/// Diagnostic: the same loop with a `pre_exec` hook, which makes std fork() instead of using
/// posix_spawn (drover's handler sets PR_SET_PDEATHSIG there).
async fn raw_spawn_pre_exec(n: u64) -> f64 {
    let t = Instant::now();
    for _ in 0..n {
        let mut cmd = tokio::process::Command::new("/bin/true");
        // SAFETY: prctl is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        assert!(cmd.status().await.expect("spawn /bin/true").success());
    }
    n as f64 / t.elapsed().as_secs_f64()
}

fn job(i: u64) -> Job {
    let now = now_ms();
    Job {
        id: format!("bench-{i}"),
        class: "noop".into(),
        attempt: 1,
        submitted_at: now,
        deadline: now + 3_600_000,
        tenant: None,
        payload: b"{}".to_vec(),
        failed_on: Vec::new(),
        failures: Vec::new(),
        hand_backs: 0,
        handed_back_at: None,
        checkpoint: None,
    }
}

/// Diagnostic: drover's own handler runner in-process, without the broker.
async fn handler_only(case: &Case, n: u64) -> f64 {
    let class = case.cfg.class("noop").expect("class").clone();
    let who = Identity { class: "noop".into(), host: "bench".into(), unit: "bench-0".into() };
    let mut h = Handler::new(&class, who, Duration::from_secs(2));
    h.prepare().await.expect("handler ready");
    let jobs: Vec<Job> = (0..n).map(job).collect();
    let (beats, _reports) = tokio::sync::mpsc::unbounded_channel();
    let t = Instant::now();
    for j in &jobs {
        let attempt = Attempt { job: j, fence: 1, limit: Duration::from_secs(60), heartbeat: None, beats: &beats };
        let o = h.run(attempt, std::future::pending::<Stop>()).await.expect("handler up");
        assert_eq!(o, drover::outcome::Outcome::Succeeded);
    }
    let rate = n as f64 / t.elapsed().as_secs_f64();
    h.shutdown().await;
    let _ = std::fs::remove_dir_all(&case.dir);
    rate
}

// ------------------------------------------------------------------------------ reporting --

fn machine() -> Vec<(String, String)> {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let nproc = std::thread::available_parallelism().map(|n| n.get().to_string()).unwrap_or_default();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| t.lines().next().map(|l| l.split_whitespace().nth(1).unwrap_or("0").parse::<u64>().unwrap_or(0)))
        .map(|kb| format!("{:.1} GiB", kb as f64 / 1048576.0))
        .unwrap_or_default();
    let run = |argv: &[&str]| {
        Command::new(argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_else(|| "unknown".into())
    };
    vec![
        ("date".into(), run(&["date", "-u", "+%Y-%m-%d %H:%M UTC"])),
        ("nproc".into(), nproc),
        ("cpu".into(), cpu),
        ("memory".into(), mem),
        ("kernel".into(), run(&["uname", "-r"])),
        ("RabbitMQ".into(), run(&["timeout", "30", "rabbitmqctl", "version"])),
        ("python3".into(), run(&["python3", "-c", "import sys; print(sys.version.split()[0])"])),
        (
            "load average at start".into(),
            std::fs::read_to_string("/proc/loadavg")
                .unwrap_or_default()
                .split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" "),
        ),
    ]
}

fn fmt_rate(r: f64) -> String {
    if r.is_finite() {
        format!("{:.0}", r)
    } else {
        "-".into()
    }
}

fn fmt_rounds(v: &[f64]) -> String {
    v.iter().map(|r| fmt_rate(*r)).collect::<Vec<_>>().join(" / ")
}

fn main() {
    // `cargo bench` passes --bench. Without it (`cargo test --benches` / `--all-targets`) this
    // is a smoke run: one small round, so a test run does not spend minutes loading the broker.
    let benching = std::env::args().any(|a| a == "--bench");
    let (r0, j0, e0) = if benching { (3, 20_000, 3_000) } else { (1, 200, 50) };
    let rounds = env_num("DROVER_BENCH_ROUNDS", r0).max(1) as usize;
    let jobs = env_num("DROVER_BENCH_JOBS", j0);
    let exec_jobs = env_num("DROVER_BENCH_EXEC_JOBS", e0);
    if !benching {
        eprintln!("throughput: smoke run (numbers meaningless); `cargo bench --bench throughput` measures");
    }

    println!("## Machine\n");
    for (k, v) in machine() {
        println!("- {k}: {v}");
    }
    println!(
        "- sizes: {jobs} jobs per queue-fed case, {exec_jobs} per spawning case; {rounds} rounds, median reported\n"
    );

    let rt = current_thread();
    let mut r: BTreeMap<&'static str, Vec<f64>> = BTreeMap::new();
    let mut mem_worker: Vec<Mem> = Vec::new();
    let mut mem_handler: Vec<Mem> = Vec::new();
    let mut mem_worker2: Vec<Mem> = Vec::new();
    let mut mem_exec: Vec<Mem> = Vec::new();
    let dramatiq = if benching { dramatiq_bin() } else { None };
    let baseline = std::env::var_os("DROVER_BENCH_BASELINE_BIN").map(PathBuf::from);
    if let Some(b) = &baseline {
        println!("- baseline binary: {} (each `drover work` case is run with it too)\n", b.display());
    }
    let with_bin = |mut case: Case, bin: &Option<PathBuf>| {
        if let Some(b) = bin {
            case.bin = b.clone();
        }
        case
    };
    rt.block_on(async {
        let conn = connect().await;
        let chan = conn.create_channel().await.expect("channel");
        for round in 1..=rounds {
            eprintln!("round {round}/{rounds}");
            let (p1w, p1_in) = plain_case(&chan, 1, jobs).await;
            let p1 = p1w.rate();
            eprintln!("  plain x1            {p1:>7.0}/s (in-process {p1_in:.0}/s)");
            let d1 = drover_case(&chan, Case::persistent("pers1"), 1, jobs).await;
            eprintln!("  persistent x1       {:>7.0}/s", d1.rate);
            let b1 = match &baseline {
                Some(_) => drover_case(&chan, with_bin(Case::persistent("bpers1"), &baseline), 1, jobs).await.rate,
                None => f64::NAN,
            };
            if baseline.is_some() {
                eprintln!("  baseline persist. x1 {b1:>6.0}/s");
            }
            let (p2w, p2_in) = plain_case(&chan, 2, jobs).await;
            let p2 = p2w.rate();
            eprintln!("  plain x2            {p2:>7.0}/s (in-process {p2_in:.0}/s)");
            let d2 = drover_case(&chan, Case::persistent("pers2"), 2, jobs).await;
            eprintln!("  persistent x2       {:>7.0}/s", d2.rate);
            let b2 = match &baseline {
                Some(_) => drover_case(&chan, with_bin(Case::persistent("bpers2"), &baseline), 2, jobs).await.rate,
                None => f64::NAN,
            };
            if baseline.is_some() {
                eprintln!("  baseline persist. x2 {b2:>6.0}/s");
            }
            let dq = match &dramatiq {
                Some(bin) => {
                    let w = dramatiq_case(&chan, bin, 2, jobs).await;
                    eprintln!("  dramatiq 2x1        {:>7.0}/s", w.rate());
                    (w.rate(), w.broker_us())
                }
                None => (f64::NAN, f64::NAN),
            };
            let sp = raw_spawn(exec_jobs).await;
            eprintln!("  raw spawn           {sp:>7.0}/s");
            let e1 = drover_case(&chan, Case::exec("exec1"), 1, exec_jobs).await;
            eprintln!("  exec x1             {:>7.0}/s", e1.rate);
            let mut under_systemd = Case::exec("exec1sd");
            under_systemd.systemd_path = true;
            let e1sd = drover_case(&chan, under_systemd, 1, exec_jobs).await;
            eprintln!("  exec x1 (systemd)   {:>7.0}/s", e1sd.rate);
            let (be1, be1sd) = match &baseline {
                Some(_) => {
                    let be1 = drover_case(&chan, with_bin(Case::exec("bexec1"), &baseline), 1, exec_jobs).await.rate;
                    let mut sd = with_bin(Case::exec("bexec1sd"), &baseline);
                    sd.systemd_path = true;
                    let be1sd = drover_case(&chan, sd, 1, exec_jobs).await.rate;
                    eprintln!("  baseline exec x1    {be1:>7.0}/s, systemd path {be1sd:.0}/s");
                    (be1, be1sd)
                }
                None => (f64::NAN, f64::NAN),
            };
            let sp_pre = raw_spawn_pre_exec(exec_jobs).await;
            eprintln!("  spawn + pre_exec    {sp_pre:>7.0}/s");
            let h_exec = handler_only(&Case::exec("hexec"), exec_jobs).await;
            eprintln!("  exec handler only   {h_exec:>7.0}/s");
            let h_pers = handler_only(&Case::persistent("hpers"), jobs).await;
            eprintln!("  persist. handler    {h_pers:>7.0}/s");

            for (k, v) in [
                ("plain1", p1),
                ("plain1_inproc", p1_in),
                ("plain2", p2),
                ("plain2_inproc", p2_in),
                ("pers1", d1.rate),
                ("pers2", d2.rate),
                ("spawn", sp),
                ("exec1", e1.rate),
                ("exec1sd", e1sd.rate),
                ("ratio_exec1sd", e1sd.rate / sp),
                ("spawn_pre_exec", sp_pre),
                ("exec_handler", h_exec),
                ("pers_handler", h_pers),
                ("ratio_pers1", d1.rate / p1),
                ("ratio_pers2", d2.rate / p2),
                ("ratio_exec1", e1.rate / sp),
                ("dramatiq2", dq.0),
                ("ratio_pers2_dramatiq", d2.rate / dq.0),
                ("broker_plain1", p1w.broker_us()),
                ("broker_pers1", d1.broker_us),
                ("broker_plain2", p2w.broker_us()),
                ("broker_pers2", d2.broker_us),
                ("broker_dramatiq2", dq.1),
                ("ratio_broker1", d1.broker_us / p1w.broker_us()),
                ("ratio_broker2", d2.broker_us / p2w.broker_us()),
                ("base_pers1", b1),
                ("base_pers2", b2),
                ("base_exec1", be1),
                ("base_exec1sd", be1sd),
                ("ratio_base_pers1", b1 / p1),
                ("ratio_base_pers2", b2 / p2),
                ("ratio_base_exec1", be1 / sp),
                ("ratio_base_exec1sd", be1sd / sp),
            ] {
                r.entry(k).or_default().push(v);
            }
            if let Some((w, h)) = d1.mem.first() {
                mem_worker.push(*w);
                if let Some(h) = h {
                    mem_handler.push(*h);
                }
            }
            mem_worker2.extend(d2.mem.iter().map(|(w, _)| *w));
            mem_exec.extend(e1.mem.iter().map(|(w, _)| *w));
        }
    });

    let m = |k: &str| median(&r[k]);
    let mb = |kb: u64| kb as f64 / 1024.0;
    let max_hwm = |v: &[Mem]| v.iter().map(|m| m.hwm_kb).max().unwrap_or(0);
    let med_rss = |v: &[Mem]| median(&v.iter().map(|m| m.rss_kb as f64).collect::<Vec<_>>()) as u64;
    let yes = |ok: bool| if ok { "yes" } else { "**no**" };

    println!("## Worker throughput (no-op jobs, prefetch 1)\n");
    println!(
        "| case | consumers | jobs/s (median) | baseline jobs/s (median) | ratio (median of rounds) | target | met? |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (name, n, case, base, ratio, target) in [
        ("`drover work` persistent vs plain lapin consumer", 1, "pers1", "plain1", "ratio_pers1", 0.8),
        ("`drover work` persistent vs plain lapin consumer", 2, "pers2", "plain2", "ratio_pers2", 0.8),
        ("`drover work` exec `/bin/true` vs raw tokio spawn, outside systemd", 1, "exec1", "spawn", "ratio_exec1", 0.7),
        (
            "`drover work` exec `/bin/true` vs raw tokio spawn, systemd path",
            1,
            "exec1sd",
            "spawn",
            "ratio_exec1sd",
            0.8,
        ),
    ] {
        let q = m(ratio);
        println!(
            "| {name} | {n} | {} | {} | {q:.2} | ≥ {target:.2} | {} |",
            fmt_rate(m(case)),
            fmt_rate(m(base)),
            yes(q >= target)
        );
    }
    let q = m("ratio_pers2_dramatiq");
    println!(
        "| `drover work` persistent vs Dramatiq (processes x 1 thread, prefetch 1) | 2 | {} | {} | {q:.2} | ≥ 1.50 | {} |",
        fmt_rate(m("pers2")),
        fmt_rate(m("dramatiq2")),
        if q.is_finite() { yes(q >= 1.5) } else { "not run" }
    );
    for (n, ratio, case, base) in
        [(1, "ratio_broker1", "broker_pers1", "broker_plain1"), (2, "ratio_broker2", "broker_pers2", "broker_plain2")]
    {
        let q = m(ratio);
        println!(
            "| broker CPU per job (µs), `drover work` persistent vs plain lapin consumer | {n} | {:.0} | {:.0} | {q:.2} | ≤ 1.30 | {} |",
            m(case),
            m(base),
            yes(q <= 1.3)
        );
    }
    let hwm = max_hwm(&mem_worker);
    println!(
        "| `drover work` persistent, RSS after the load (VmRSS median / VmHWM max) | 1 | {:.1} MiB / {:.1} MiB | | | ≤ 15 MiB | {} |",
        mb(med_rss(&mem_worker)),
        mb(hwm),
        yes(mb(hwm) <= 15.0)
    );

    if baseline.is_some() {
        println!("\n### Baseline binary, same rounds (medians)\n");
        println!("| case | this tree: ratio | baseline binary: ratio | baseline jobs/s |");
        println!("|---|---|---|---|");
        for (name, ratio, base_ratio, base) in [
            ("persistent x1 vs plain x1", "ratio_pers1", "ratio_base_pers1", "base_pers1"),
            ("persistent x2 vs plain x2", "ratio_pers2", "ratio_base_pers2", "base_pers2"),
            ("exec x1 vs raw spawn, outside systemd", "ratio_exec1", "ratio_base_exec1", "base_exec1"),
            ("exec x1 vs raw spawn, systemd path", "ratio_exec1sd", "ratio_base_exec1sd", "base_exec1sd"),
        ] {
            println!("| {name} | {:.2} | {:.2} | {} |", m(ratio), m(base_ratio), fmt_rate(m(base)));
        }
    }

    println!("\n### Per round (jobs/s)\n");
    println!("| measurement | rounds |");
    println!("|---|---|");
    for (k, label) in [
        ("plain1", "plain lapin consumer x1 (queue polling)"),
        ("plain1_inproc", "plain lapin consumer x1 (in-process clock, cross-check)"),
        ("pers1", "`drover work` persistent x1"),
        ("plain2", "plain lapin consumers x2 (queue polling)"),
        ("plain2_inproc", "plain lapin consumers x2 (in-process clock, cross-check)"),
        ("pers2", "`drover work` persistent x2"),
        ("spawn", "raw tokio spawn of /bin/true"),
        ("exec1", "`drover work` exec /bin/true x1, outside systemd (PDEATHSIG hook)"),
        ("exec1sd", "`drover work` exec /bin/true x1, systemd path"),
        ("spawn_pre_exec", "diagnostic: raw spawn with a pre_exec hook (fork path)"),
        ("exec_handler", "diagnostic: drover's exec handler in-process, no broker"),
        ("pers_handler", "diagnostic: drover's persistent handler in-process, no broker"),
        ("dramatiq2", "Dramatiq, 2 processes x 1 thread, prefetch 1"),
        ("base_pers1", "baseline binary: `drover work` persistent x1"),
        ("base_pers2", "baseline binary: `drover work` persistent x2"),
        ("base_exec1", "baseline binary: `drover work` exec x1, outside systemd"),
        ("base_exec1sd", "baseline binary: `drover work` exec x1, systemd path"),
    ] {
        println!("| {label} | {} |", fmt_rounds(&r[k]));
    }
    for (k, label) in [
        ("broker_plain1", "broker µs/job: plain x1"),
        ("broker_pers1", "broker µs/job: persistent x1"),
        ("broker_plain2", "broker µs/job: plain x2"),
        ("broker_pers2", "broker µs/job: persistent x2"),
        ("broker_dramatiq2", "broker µs/job: Dramatiq 2x1"),
    ] {
        println!("| {label} | {} |", fmt_rounds(&r[k]));
    }
    for (k, label) in [
        ("ratio_pers1", "ratio persistent x1"),
        ("ratio_pers2", "ratio persistent x2"),
        ("ratio_exec1", "ratio exec x1, outside systemd"),
        ("ratio_exec1sd", "ratio exec x1, systemd path"),
        ("ratio_pers2_dramatiq", "ratio persistent x2 / Dramatiq 2x1"),
        ("ratio_broker1", "ratio broker CPU per job, x1"),
        ("ratio_broker2", "ratio broker CPU per job, x2"),
        ("ratio_base_pers1", "baseline binary: ratio persistent x1"),
        ("ratio_base_pers2", "baseline binary: ratio persistent x2"),
        ("ratio_base_exec1", "baseline binary: ratio exec x1, outside systemd"),
        ("ratio_base_exec1sd", "baseline binary: ratio exec x1, systemd path"),
    ] {
        let v: Vec<String> = r[k].iter().map(|x| format!("{x:.2}")).collect();
        println!("| {label} | {} |", v.join(" / "));
    }

    println!("\n### Memory (kB)\n");
    let show = |label: &str, v: &[Mem]| {
        let s: Vec<String> =
            v.iter().map(|m| format!("{}/{} ({} anon + {} file)", m.rss_kb, m.hwm_kb, m.anon_kb, m.file_kb)).collect();
        println!("- {label} (VmRSS/VmHWM): {}", s.join(", "));
    };
    show("`drover work` persistent x1", &mem_worker);
    show("`drover work` persistent x2 (both workers)", &mem_worker2);
    show("`drover work` exec x1", &mem_exec);
    show("python3 noop handler (child of the x1 worker)", &mem_handler);
}
