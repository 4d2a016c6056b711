//! A fleet at scale through the production decision code: `hosts` x 4 units running one class
//! in simulated time, the fleet's judge (`drover::fleet_judge::FleetJudge`) fed every job event
//! and every host's report, the hosts applying its judgments, and a simulated broker that
//! routes each message by the same bindings the supervisors declare (`drover::io::judge`) and
//! counts the deliveries. One host turns bad at minute 5 (every job hangs until its timeout);
//! at minute 10 every job of the class gets 1.8x slower (a fleet-wide drift). Jobs: log-normal,
//! median 20 s, sigma 0.25, timeout 90 s; 1 % fail on their own.
//!
//! The fleet is warm: at the start each unit is a random way into its first job (a cold start,
//! every unit starting at once, is another story: see BENCHMARKS.md). Reports per fleet size: broker deliveries per job event (job events alone, and with the
//! reports, judgments and news amortised over the job events; beside them what the former
//! design, a `#` queue per supervisor, delivered), the judge's CPU per event and per
//! evaluation, the judge's memory (heap it holds: live bytes with it, minus without it), the
//! time from the host turning bad to its quarantine being in force, and the alerts raised per
//! fleet condition.
//!
//!   cargo bench --bench fleet_sim              (DROVER_BENCH_HOSTS=10,100,1000 to choose sizes)

use drover::alerts::Transition;
use drover::drift::DetectorConfig;
use drover::events::{EventKind, JobEvent};
use drover::fleet_judge::{FleetJudge, FleetJudgeConfig, HostReport, VERSION};
use drover::job::rfc3339;
use drover::judge::{HostView, JudgeConfig};
use drover::latency::WatchConfig;
use drover::maintenance::{Kind, Order, Scope};
use drover::quarantine::Policy;
use drover::suspects::SuspectPolicy;
use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

#[path = "support/rng.rs"]
mod rng;
use rng::Rng;

/// Counts the bytes live on the heap, to weigh the judge.
struct Counting;
static LIVE: AtomicI64 = AtomicI64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as i64, Ordering::Relaxed);
        // SAFETY: forwarded as is.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as i64, Ordering::Relaxed);
        // SAFETY: forwarded as is.
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static A: Counting = Counting;

/// This thread's CPU time (ns).
fn cpu_ns() -> i64 {
    let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    t.tv_sec * 1_000_000_000 + t.tv_nsec
}

const UNITS: usize = 4;
const CLASS: &str = "c";
const START_MS: i64 = 1_800_000_000_000;
const MIN: i64 = 60_000;
const TICK_MS: i64 = 15_000; // alerts.evaluate_every's default
const TIMEOUT_MS: i64 = 90_000;
const BAD_FROM: i64 = 5 * MIN;
const DRIFT_FROM: i64 = 10 * MIN;
const END: i64 = 15 * MIN;

/// A simulated broker: queues with their bindings, routed as RabbitMQ's topic exchange would
/// (indexed for the three shapes of binding Drover uses: `#`, `*.*.<host>`, exact keys).
#[derive(Default)]
struct Broker {
    all: Vec<usize>,
    by_third: HashMap<String, Vec<usize>>,
    exact: HashMap<String, Vec<usize>>,
    deliveries: u64,
}

impl Broker {
    fn bind(&mut self, queue: usize, key: &str) {
        if key == "#" {
            self.all.push(queue);
        } else if let Some(h) = key.strip_prefix("*.*.") {
            self.by_third.entry(h.to_string()).or_default().push(queue);
        } else {
            self.exact.entry(key.to_string()).or_default().push(queue);
        }
    }

    /// Publishes one message; returns the queues it lands in, counted as deliveries.
    fn publish(&mut self, key: &str) -> usize {
        let third = key.splitn(3, '.').nth(2).unwrap_or("");
        let n = self.all.len() + self.by_third.get(third).map_or(0, Vec::len) + self.exact.get(key).map_or(0, Vec::len);
        self.deliveries += n as u64;
        n
    }
}

struct Host {
    name: String,
    orders: Vec<Order>,
    /// Per unit: the job running (id, start, end), if any.
    running: Vec<Option<(u64, i64, i64)>>,
}

#[derive(Default, Debug)]
struct Row {
    hosts: usize,
    job_events: u64,
    event_deliveries: u64,
    all_deliveries: u64,
    old_deliveries: u64,
    observe_ns: i64,
    evaluate_ns: i64,
    evaluations: u64,
    judge_bytes: i64,
    news_bytes: usize,
    verdict_after_ms: Option<i64>,
    cordon_after_ms: Option<i64>,
    alerts: BTreeMap<String, usize>,
}

fn config() -> FleetJudgeConfig {
    FleetJudgeConfig {
        judge: JudgeConfig {
            host: "h0".into(),
            unit_prefix: "drover-worker".into(),
            classes: vec![CLASS.into()],
            policy: Policy::default(),
            hold_ms: 10 * MIN as u64,
            hold_max_ms: 60 * MIN as u64,
            suspects: SuspectPolicy::default(),
        },
        watch: WatchConfig {
            detector: DetectorConfig::default(),
            running_evidence: 1e-6,
            stall_gaps: 8.0,
            stall_min: Duration::from_secs(600),
        },
        fire_after: Duration::from_secs(60),
        resolve_after: Duration::from_secs(300),
        quarantine: true,
        settle: Duration::from_millis(3 * TICK_MS as u64),
    }
}

fn unit(i: usize) -> String {
    format!("drover-worker@{CLASS}-{}.service", i + 1)
}

fn event(kind: EventKind, h: &Host, u: usize, job: u64, start: i64, at: i64, outcome: Option<&str>) -> JobEvent {
    let mut e = JobEvent::new(kind, rfc3339(START_MS + at), CLASS, &h.name, &unit(u));
    e.job_id = Some(format!("j{job}"));
    e.started_at = Some(rfc3339(START_MS + start));
    if kind != EventKind::Started {
        e.finished_at = Some(rfc3339(START_MS + at));
        e.duration_s = Some((at - start) as f64 / 1000.0);
        e.outcome = outcome.map(str::to_string);
    }
    e
}

fn held(h: &Host, u: usize) -> bool {
    h.orders.iter().any(|o| o.scope == Scope::Unit(unit(u)) || o.scope == Scope::Class(CLASS.into()))
}

fn run(hosts: usize, seed: u64) -> Row {
    let mut rng = Rng::new(seed);
    let mut broker = Broker::default();
    // Queue 0: the judge's (single active consumer, every event); per host: its own events,
    // and its judgments and the news.
    broker.bind(0, "#");
    let mut hs: Vec<Host> =
        (0..hosts).map(|i| Host { name: format!("h{i}"), orders: Vec::new(), running: vec![None; UNITS] }).collect();
    for (i, h) in hs.iter().enumerate() {
        broker.bind(1 + 2 * i, &format!("*.*.{}", h.name));
        broker.bind(2 + 2 * i, &format!("judged.{}", h.name));
        broker.bind(2 + 2 * i, "judge.news");
    }
    let mut judge = FleetJudge::new(config(), None);
    let mut row = Row { hosts, ..Default::default() };
    let mut next_job = 0u64;
    let bad = 1 % hosts;
    let mut t = 0;
    let mut next_tick = TICK_MS;
    let step = 250;
    while t < END {
        for (hi, h) in hs.iter_mut().enumerate() {
            for u in 0..UNITS {
                if let Some((job, start, end)) = h.running[u] {
                    if end > t {
                        continue;
                    }
                    let hung = hi == bad && start >= BAD_FROM;
                    let (kind, outcome) = if hung {
                        (EventKind::Failed, "timeout")
                    } else if rng.uniform() < 0.01 {
                        (EventKind::Failed, "failed")
                    } else {
                        (EventKind::Succeeded, "succeeded")
                    };
                    let e = event(kind, h, u, job, start, end, Some(outcome));
                    emit(&mut broker, &mut judge, &mut row, &e, hosts);
                    h.running[u] = None;
                }
                if h.running[u].is_none() && !held(h, u) {
                    let median = if t >= DRIFT_FROM { 36_000.0 } else { 20_000.0 };
                    let mut d = (median * (0.25 * rng.normal()).exp()) as i64;
                    if hi == bad && t >= BAD_FROM {
                        d = TIMEOUT_MS;
                    }
                    next_job += 1;
                    // A warm fleet: at the start, each unit is somewhere into its job already.
                    let start = if t == 0 { -((rng.uniform() * d as f64) as i64) } else { t };
                    h.running[u] = Some((next_job, start, start + d.min(TIMEOUT_MS)));
                    let e = event(EventKind::Started, h, u, next_job, start, t, None);
                    emit(&mut broker, &mut judge, &mut row, &e, hosts);
                }
            }
        }
        if t >= next_tick {
            next_tick += TICK_MS;
            tick(&mut broker, &mut judge, &mut row, &mut hs, t, bad);
        }
        t += step;
    }
    row.all_deliveries = broker.deliveries;
    let with_judge = LIVE.load(Ordering::Relaxed);
    drop(judge);
    row.judge_bytes = with_judge - LIVE.load(Ordering::Relaxed);
    row
}

/// One job event: published once, delivered to the judge's queue and its host's own queue;
/// the judge takes it in.
fn emit(broker: &mut Broker, judge: &mut FleetJudge, row: &mut Row, e: &JobEvent, hosts: usize) {
    let n = broker.publish(&e.routing_key());
    row.job_events += 1;
    row.event_deliveries += n as u64;
    row.old_deliveries += hosts as u64;
    let c = cpu_ns();
    judge.observe(e);
    row.observe_ns += cpu_ns() - c;
}

/// One evaluation period: every host reports to the judge, the judge evaluates, its judgments
/// are applied by their hosts and its news reaches every supervisor.
fn tick(broker: &mut Broker, judge: &mut FleetJudge, row: &mut Row, hs: &mut [Host], t: i64, bad: usize) {
    let now = START_MS + t;
    let c = cpu_ns();
    for h in hs.iter() {
        let units = (0..UNITS).map(|u| (unit(u), CLASS.to_string())).collect();
        let serving = vec![CLASS.to_string()];
        let report = HostReport {
            v: VERSION,
            at_ms: now,
            view: HostView { host: h.name.clone(), units, orders: h.orders.clone(), serving },
            ..Default::default()
        };
        broker.deliveries += 1; // into the judge's queue
        judge.report(report, now);
    }
    let out = judge.evaluate(now, &BTreeMap::new());
    row.evaluate_ns += cpu_ns() - c;
    row.evaluations += 1;
    for j in &out.judgments {
        broker.publish(&format!("judged.{}", j.host));
        let Some(h) = hs.iter_mut().find(|h| h.name == j.host) else { continue };
        for w in &j.wants {
            if h.orders.iter().any(|o| o.kind == w.kind && o.scope == w.scope) {
                continue;
            }
            h.orders.push(Order {
                id: format!("o{}", h.orders.len()),
                kind: w.kind,
                scope: w.scope.clone(),
                reason: w.reason.clone(),
                who: "drover".into(),
                at_ms: now,
                deadline_ms: Some(w.until_ms),
                probing_since_ms: None,
                probes: 0,
            });
            if h.name == format!("h{bad}") {
                let first =
                    if w.kind == Kind::Quarantine { &mut row.verdict_after_ms } else { &mut row.cordon_after_ms };
                first.get_or_insert(t - BAD_FROM);
            }
        }
    }
    broker.publish("judge.news");
    row.news_bytes = row.news_bytes.max(serde_json::to_vec(&out.news).map_or(0, |b| b.len()));
    for tr in &out.transitions {
        if let Transition::Fired(a) = tr {
            let labels: Vec<String> = a.key.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            *row.alerts.entry(format!("{}{{{}}}", a.key.name, labels.join(","))).or_default() += 1;
            if std::env::var_os("DROVER_BENCH_VERBOSE").is_some() && a.key.name.starts_with("Host") {
                eprintln!("t={:.0}s {}: {}", t as f64 / 1000.0, a.key.name, a.summary);
            }
        }
    }
}

fn main() {
    let sizes: Vec<usize> = std::env::var("DROVER_BENCH_HOSTS")
        .unwrap_or_else(|_| "10,100,1000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    println!(
        "| hosts | job events | deliveries per job event (events only / all) | former design (a `#` queue per supervisor) | judge CPU per event | judge CPU per evaluation | judge memory | largest news | bad host to cordon / quarantine | alerts fired (per alert key) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for hosts in sizes {
        let r = run(hosts, 7);
        let per = |n: u64| n as f64 / r.job_events as f64;
        let alerts: Vec<String> = r.alerts.iter().map(|(k, n)| format!("{k} x{n}")).collect();
        let secs = |t: Option<i64>| t.map_or("none".into(), |ms| format!("{} s", ms / 1000));
        let times = format!("{} / {}", secs(r.cordon_after_ms), secs(r.verdict_after_ms));
        println!(
            "| {} | {} | {:.2} / {:.2} | {:.0} | {:.1} µs | {:.1} ms | {:.1} MB | {:.0} KB | {} | {} |",
            r.hosts,
            r.job_events,
            per(r.event_deliveries),
            per(r.all_deliveries),
            per(r.old_deliveries),
            r.observe_ns as f64 / r.job_events as f64 / 1000.0,
            r.evaluate_ns as f64 / r.evaluations.max(1) as f64 / 1e6,
            r.judge_bytes as f64 / 1e6,
            r.news_bytes as f64 / 1000.0,
            times,
            alerts.join(", ")
        );
    }
}
