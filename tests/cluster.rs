//! Quorum queues on a real 3-node RabbitMQ cluster (`scripts/services.sh cluster-up`: nodes
//! rmq1..3@localhost, AMQP on 5673-5675, management API on 15673-15675): jobs keep flowing
//! (retries through quorum delay queues among them) while a broker node is stopped and started,
//! none runs twice at the same time, none is lost to the broker's delivery limit, and a job that
//! keeps coming back is dead-lettered with its reason; a policy that contradicts the
//! configuration is refused by name (and start-up says the consumer timeout cannot be read);
//! leases hold on quorum queues; a retry a quorum delay rung holds past its due time is moved on.
//!
//! The nodes come from `DROVER_CLUSTER_URLS` (default: the loopback ports above). These tests
//! stop nodes, so they run one at a time.

use crate::harness::{wait_until, Env};
use crate::judge::elected;
use crate::lease::lease_queues;
use crate::quarantine::add_environment;
use crate::supervisor::Host;
use futures_lite::StreamExt;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Connection, ConnectionProperties};
use std::collections::BTreeSet;
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

static CLUSTER: Mutex<()> = Mutex::new(());

fn urls() -> Vec<String> {
    std::env::var("DROVER_CLUSTER_URLS")
        .unwrap_or_else(|_| {
            (5673..=5675).map(|p| format!("amqp://guest:guest@127.0.0.1:{p}/%2f")).collect::<Vec<_>>().join(",")
        })
        .split(',')
        .map(str::to_string)
        .collect()
}

/// `n`-th node (1-based) of the cluster: its Erlang name and management API.
fn node(n: usize) -> String {
    format!("rmq{n}@localhost")
}

fn management(n: usize) -> String {
    format!("http://127.0.0.1:{}", 15672 + n)
}

/// A test environment on the cluster, held by one test at a time.
struct OnCluster {
    env: Env,
    _alone: Alone,
}

struct Alone(#[allow(dead_code)] std::sync::MutexGuard<'static, ()>);

impl std::ops::Deref for OnCluster {
    type Target = Env;
    fn deref(&self) -> &Env {
        &self.env
    }
}

/// A test environment on the cluster, quorum queues, the management API of node 1.
fn env(name: &str, classes: &str) -> OnCluster {
    let alone = Alone(CLUSTER.lock().unwrap_or_else(|e| e.into_inner()));
    let env = Env::new(name, classes);
    onto_cluster(&env.config);
    OnCluster { env, _alone: alone }
}

/// Points a configuration at every node of the cluster, with quorum queues and the management
/// API of node 1.
fn onto_cluster(config: &std::path::Path) {
    let text = std::fs::read_to_string(config).expect("config");
    let list: Vec<String> = urls().iter().map(|u| format!("{u:?}")).collect();
    let mut lines: Vec<String> = text
        .lines()
        .map(|l| {
            if l.starts_with("url = ") {
                format!("url = [{}]\nqueue_type = \"quorum\"\nmanagement_url = \"{}\"", list.join(", "), management(1))
            } else {
                l.to_string()
            }
        })
        .collect();
    lines.push(String::new());
    std::fs::write(config, lines.join("\n")).expect("config");
}

/// A connection to the first cluster node that answers (a loud failure when none does).
async fn connect() -> Connection {
    for url in urls() {
        if let Ok(c) = Connection::connect(&url, ConnectionProperties::default()).await {
            return c;
        }
    }
    panic!("no node of the RabbitMQ cluster answers ({:?}); run scripts/services.sh cluster-up", urls());
}

fn ctl(n: usize, args: &[&str]) {
    let out = Command::new("rabbitmqctl").args(["-q", "-n", &node(n)]).args(args).output().expect("rabbitmqctl");
    assert!(out.status.success(), "rabbitmqctl -n {} {args:?}: {}", node(n), String::from_utf8_lossy(&out.stderr));
}

/// Stops a node's app; starts it again when dropped, whatever the test's outcome.
struct Stopped(usize);

impl Stopped {
    fn node(n: usize) -> Stopped {
        ctl(n, &["stop_app"]);
        Stopped(n)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        // No assertion here: this may run while a failed test unwinds.
        for args in [["start_app"], ["await_startup"]] {
            let status = Command::new("rabbitmqctl").args(["-q", "-n", &node(self.0)]).args(args).status();
            if !matches!(status, Ok(s) if s.success()) {
                eprintln!("rabbitmqctl -n {} {args:?} failed: {status:?}", node(self.0));
            }
        }
    }
}

/// The node (1-based) that leads a quorum queue, from the management API of node `via`; `None`
/// while none does (an election, or statistics not yet refreshed).
async fn leader(queue: &str, via: usize) -> Option<usize> {
    let url = format!("{}/api/queues/%2F/{queue}", management(via));
    let q = drover::io::policies::get_json(&url, "guest:guest", Duration::from_secs(30)).await.expect("queue info");
    assert_eq!(q.get("type").and_then(|t| t.as_str()), Some("quorum"), "{queue} is a quorum queue: {q}");
    let leader = q.get("leader").and_then(|l| l.as_str()).unwrap_or_default().to_string();
    (1..=3).find(|n| node(*n) == leader)
}

/// Waits (at most a minute) for a leader of `queue` other than `not`.
async fn new_leader(queue: &str, via: usize, not: Option<usize>) -> usize {
    for _ in 0..120 {
        match leader(queue, via).await {
            Some(n) if Some(n) != not => return n,
            _ => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
    panic!("no leader of {queue} other than {not:?} within a minute");
}

struct Letter {
    id: Option<String>,
    /// The broker's reason (`x-first-death-reason`), for a message it dead-lettered itself.
    broker_reason: Option<String>,
}

async fn dead_letters(queue: &str) -> Vec<Letter> {
    let conn = connect().await;
    let chan = conn.create_channel().await.expect("channel");
    let mut out = Vec::new();
    let mut consumer = chan
        .basic_consume(queue.into(), "test-dead".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await
        .expect("consume the dead letters");
    // A quorum queue cannot be read by basic.get in no-ack mode reliably across versions:
    // consume what is there, acknowledging each.
    while let Ok(Some(Ok(d))) = tokio::time::timeout(Duration::from_secs(2), consumer.next()).await {
        let reason = d.properties.headers().as_ref().and_then(|h| match h.inner().get("x-first-death-reason") {
            Some(AMQPValue::LongString(s)) => Some(s.to_string()),
            _ => None,
        });
        out.push(Letter { id: d.properties.message_id().as_ref().map(|s| s.to_string()), broker_reason: reason });
        d.ack(BasicAckOptions::default()).await.expect("ack");
    }
    out
}

async fn depth(queue: &str) -> Option<u32> {
    let conn = connect().await;
    let chan = conn.create_channel().await.expect("channel");
    let opts = QueueDeclareOptions { passive: true, ..Default::default() };
    chan.queue_declare(queue.into(), opts, FieldTable::default()).await.ok().map(|q| q.message_count())
}

fn done_ids(env: &OnCluster) -> BTreeSet<String> {
    env.behave("done").into_iter().map(|(id, _)| id).collect()
}

/// Runs of a job that began while an earlier run of the same job was still alive.
fn overlaps(dir: &std::path::Path) -> Vec<String> {
    let runs = std::fs::read_to_string(dir.join("runs.log")).unwrap_or_default();
    runs.lines().filter(|l| l.ends_with(" alive")).map(str::to_string).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_on_quorum_queues_all_complete_once_at_a_time_while_the_leader_node_is_stopped_and_started() {
    let env = env(
        "cluster-flow",
        r#"
        [classes.q]
        mode = "exec"
        command = ["python3", "{handler}"]
        timeout = "60s"
        retry_base = "1s"
        retry_max = "2s"
    "#,
    );
    let locks = env.dir.join("locks");
    std::fs::create_dir_all(&locks).expect("lock dir");
    let workers: Vec<_> = (1..=3).map(|i| env.worker("q", &format!("q-{i}"))).collect();
    let payload = format!(r#"{{"sleep": 0.3, "lock_dir": "{}"}}"#, locks.display());
    let mut ids: BTreeSet<String> = env.submit("q", &payload, 30, &[]).into_iter().collect();
    // A few fail once: their retries wait in a quorum delay queue, and come back from it.
    let retried = format!(r#"{{"sleep": 0.3, "fail_attempts": 1, "lock_dir": "{}"}}"#, locks.display());
    let retried: BTreeSet<String> = env.submit("q", &retried, 10, &[]).into_iter().collect();
    ids.extend(retried.iter().cloned());
    let work = format!("{}.jobs.q", env.prefix);
    wait_until("the first jobs to complete", Duration::from_secs(120), || done_ids(&env).len() >= 3);

    let lead = new_leader(&work, 1, None).await;
    let before = done_ids(&env).len();
    {
        let _down = Stopped::node(lead);
        // Jobs go on with the queue's leader gone (a new one is elected among the other two).
        wait_until("jobs to complete with a node down", Duration::from_secs(180), || {
            done_ids(&env).len() >= (before + 5).min(ids.len())
        });
        // Another node leads the work queue while the old leader is down.
        new_leader(&work, lead % 3 + 1, Some(lead)).await;
    }
    wait_until("every job to complete", Duration::from_secs(240), || done_ids(&env).is_superset(&ids));
    // The work queue drains while the workers still run: a copy still on its way (a retry
    // through its delay queue) is taken and settled, a message stuck in the queue is not.
    let drained = tokio::time::Instant::now() + Duration::from_secs(60);
    while depth(&work).await != Some(0) && tokio::time::Instant::now() < drained {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Retries a quorum rung held past their due time (issue 15's stall), moved on by the guard.
    for w in &workers {
        for l in w.log().lines().filter(|l| l.contains("held past their due time")) {
            eprintln!("{l}");
        }
    }
    drop(workers);
    let twice: BTreeSet<String> = env.behave("done").into_iter().filter(|(_, a)| *a == 2).map(|(id, _)| id).collect();
    assert!(twice.is_superset(&retried), "the failed jobs completed at their second attempt");
    assert_eq!(overlaps(&locks), Vec::<String>::new(), "no job ran while an earlier run of it was alive");
    let dead = dead_letters(&format!("{}.dead.q", env.prefix)).await;
    assert_eq!(dead.len(), 0, "no job was dead-lettered (by the delivery limit or otherwise)");
    assert_eq!(depth(&work).await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_keeps_killing_its_worker_is_dead_lettered_by_the_delivery_limit_not_dropped() {
    let env = env(
        "cluster-limit",
        r#"
        [classes.k]
        mode = "exec"
        command = ["python3", "{handler}"]
        timeout = "60s"
        max_attempts = 1
        poison_after = 0
    "#,
    );
    let id = env.submit("k", r#"{"kill_worker": true}"#, 1, &[])[0].clone();
    let dead_q = format!("{}.dead.k", env.prefix);
    let limit = drover::topology::delivery_limit(1, 0) as usize;
    // A worker at a time, restarted after each death, as a supervisor would.
    let mut starts = 0;
    while depth(&dead_q).await.unwrap_or(0) == 0 {
        assert!(starts <= limit + 2, "still not dead-lettered after {starts} worker deaths");
        let mut w = env.worker("k", &format!("k-{starts}"));
        starts += 1;
        let mut waited = 0;
        while w.wait_exit(Duration::from_secs(1)).is_none() {
            waited += 1;
            if depth(&dead_q).await.unwrap_or(0) > 0 {
                break;
            }
            assert!(waited < 120, "worker {starts} neither died nor saw the job dead-lettered:\n{}", w.log());
        }
    }
    let kills = env.behave("kill").len();
    assert_eq!(kills, limit + 1, "delivered once, then again up to the delivery limit of {limit}");
    let dead = dead_letters(&dead_q).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].id.as_deref(), Some(id.as_str()));
    assert_eq!(dead[0].broker_reason.as_deref(), Some("delivery_limit"), "the reason is kept");
    assert_eq!(depth(&format!("{}.jobs.k", env.prefix)).await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_that_lowers_the_delivery_limit_is_refused_by_name() {
    let env = env(
        "cluster-policy",
        r#"
        [classes.p]
        mode = "exec"
        command = ["python3", "{handler}"]
        timeout = "60s"
    "#,
    );
    let name = format!("{}-low-limit", env.prefix);
    let pattern = format!("^{}\\.", env.prefix.replace('-', "\\-"));
    ctl(1, &["set_policy", "--apply-to", "queues", &name, &pattern, r#"{"delivery-limit": 3}"#]);
    struct Clear(String);
    impl Drop for Clear {
        fn drop(&mut self) {
            ctl(1, &["clear_policy", &self.0]);
        }
    }
    let _clear = Clear(name.clone());
    let mut w = env.worker("p", "p-1");
    let status = w.wait_exit(Duration::from_secs(120)).expect("the worker refuses to start");
    assert_eq!(status.code(), Some(78), "exit 78: misconfigured, not to be restarted\n{}", w.log());
    let log = w.log();
    assert!(log.contains(&format!("{name:?}")) && log.contains("delivery-limit 3"), "names the policy:\n{log}");
    // The node-wide consumer timeout cannot be read; start-up says so, with the broker's version.
    let said = log.lines().find(|l| l.contains("node-wide consumer_timeout")).unwrap_or_default();
    assert!(said.contains("RabbitMQ ") && said.contains("taken as said"), "the consumer timeout:\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_job_on_quorum_queues_runs_once_under_two_lease_queues() {
    let env = env(
        "cluster-lease",
        r#"
        [classes.l]
        mode = "exec"
        command = ["python3", "{handler}"]
        timeout = "60s"
        lease = "always"
    "#,
    );
    let text = std::fs::read_to_string(&env.config).expect("config");
    std::fs::write(&env.config, text.replacen("[broker]\n", "[broker]\nlease_ttl = \"3s\"\n", 1)).expect("config");
    let w = env.worker("l", "l-1");
    env.submit("l", r#"{"sleep": 7}"#, 1, &[]);
    wait_until("the job to complete", Duration::from_secs(120), || env.behave("done").len() == 1);
    assert_eq!(env.behave("start").len(), 1, "ran once, though it outlived two lease TTLs");
    let queues = lease_queues(&w.log());
    assert_eq!(queues.len(), 2, "{}", w.log());
    for q in &queues {
        // The handler logs "done" before the worker records the outcome and purges the copy.
        let mut left = depth(q).await;
        for _ in 0..60 {
            if left == Some(0) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            left = depth(q).await;
        }
        assert_eq!(left, Some(0), "{q} holds no copy once the job is done");
    }
    assert_eq!(depth(&format!("{}.jobs.l", env.prefix)).await, Some(0));
}

/// The node (1-based) that holds the connection named `name`, from the management API.
async fn node_of_connection(name: &str) -> Option<usize> {
    let url = format!("{}/api/connections", management(1));
    let all = drover::io::policies::get_json(&url, "guest:guest", Duration::from_secs(30)).await.ok()?;
    let conn = all
        .as_array()?
        .iter()
        .find(|c| c.pointer("/client_properties/connection_name").and_then(|n| n.as_str()) == Some(name))?;
    let node_name = conn.get("node")?.as_str()?;
    (1..=3).find(|n| node(*n) == node_name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_broker_node_stops_goes_on_through_another_node() {
    let env = env(
        "cluster-rotate",
        r#"
        [classes.r]
        mode = "exec"
        command = ["python3", "{handler}"]
        timeout = "60s"
    "#,
    );
    let w = env.worker("r", "r-1");
    env.submit("r", "{}", 1, &[]);
    wait_until("the first job", Duration::from_secs(120), || env.behave("done").len() == 1);
    let mut on = None;
    for _ in 0..60 {
        // The management API's connection list is refreshed every few seconds.
        on = node_of_connection("drover work r-1").await;
        if on.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let on = on.expect("the worker's connection is listed");
    {
        let _down = Stopped::node(on);
        env.submit("r", "{}", 3, &[]);
        wait_until("jobs done through another node", Duration::from_secs(180), || env.behave("done").len() == 4);
    }
    let log = w.log();
    let stopped_port = format!("127.0.0.1:{}", 5672 + on);
    let restored = log.lines().find(|l| l.contains("broker connection restored")).unwrap_or_default().to_string();
    assert!(
        !restored.is_empty() && !restored.contains(&stopped_port),
        "reconnected to a node other than {stopped_port}:\n{log}"
    );
}

/// The fleet's judge on the cluster (issue 15): three supervisors as hosts, one of them bad
/// (every job hangs), jobs flowing on quorum queues. The node that leads the judge's queue is
/// stopped and, while it is down, the judge's supervisor is killed: another supervisor is
/// elected from the replicated queue and goes on from the snapshot, every job completes, none
/// runs twice at the same time, the bad host stays quarantined and is paged once for the fleet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_judge_killed_while_a_broker_node_is_down_hands_over_with_every_job_done_once_and_the_quarantine_kept() {
    let _alone = Alone(CLUSTER.lock().unwrap_or_else(|e| e.into_inner()));
    let first = Host::new("cluster-judge", crate::judge::CLASS);
    onto_cluster(&first.config);
    let second = first.other_host("cjudge-b", 3);
    let bad = first.other_host("cjudge-bad", 3);
    add_environment(&bad, "BEHAVE_BAD=1");
    let mut hosts = [first, second, bad];
    let env = hosts[0].env.clone();
    let prefix = env.prefix.clone();
    let locks = env.dir.join("locks");
    std::fs::create_dir_all(&locks).expect("lock dir");
    let payload = format!(r#"{{"sleep": 0.3, "lock_dir": "{}"}}"#, locks.display());
    hosts[0].start_supervisor();
    wait_until("the first supervisor elected", Duration::from_secs(90), || elected(&hosts[0]));
    hosts[1].start_supervisor();
    hosts[2].start_supervisor();
    for h in &hosts {
        h.wait_status("3 healthy units", Duration::from_secs(90), |u| {
            u.len() == 3 && u.values().all(|s| s.health == "healthy")
        });
    }
    let done = || -> BTreeSet<String> { env.behave("done").into_iter().map(|(id, _)| id).collect() };
    let mut ids: BTreeSet<String> = env.submit("w", &payload, 60, &[]).into_iter().collect();
    hosts[2].wait_status("the bad host's units quarantined", Duration::from_secs(180), |u| {
        u.values().filter(|s| s.health == "quarantined").count() == 3
    });
    wait_until("the first jobs", Duration::from_secs(180), || done().len() >= 40);

    let judge_queue = format!("{prefix}.judge");
    let lead = new_leader(&judge_queue, 1, None).await;
    let killed = {
        let _down = Stopped::node(lead);
        ids.extend(env.submit("w", &payload, 20, &[]));
        // The node's connections are gone: whoever the broker now gives the judge's queue to
        // (the same supervisor, or another) is the judge, and is killed without a word.
        wait_until("a judge with the node down", Duration::from_secs(120), || hosts.iter().any(judging));
        let killed = (0..3).find(|i| judging(&hosts[*i])).expect("a judge");
        eprintln!("stopped node {lead}; killing the judge, {}", hosts[killed].name);
        hosts[killed].kill_supervisor();
        let others = || (0..3).filter(|i| *i != killed && judging(&hosts[*i])).collect::<Vec<_>>();
        wait_until("another supervisor elected", Duration::from_secs(120), || !others().is_empty());
        let next = others()[0];
        assert_eq!(others().len(), 1, "one judge at a time");
        // It goes on from the last snapshot in the broker (the killed judge's, or the one
        // before it if it had not written one yet), not from zero.
        let log = hosts[next].supervisor_log();
        let took_over = log.lines().rfind(|l| l.contains("this supervisor is now the fleet's judge"));
        assert!(took_over.is_some_and(|l| l.contains("going on from")), "{log}");
        // The judge's queue is led by another node while its old leader is down.
        new_leader(&judge_queue, lead % 3 + 1, Some(lead)).await;
        wait_until("jobs to complete with a node down and a new judge", Duration::from_secs(240), || {
            done().len() >= ids.len() - 5
        });
        killed
    };
    wait_until("every job to complete", Duration::from_secs(240), || done().is_superset(&ids));

    assert_eq!(overlaps(&locks), Vec::<String>::new(), "no job ran while an earlier run of it was alive");
    // The killed supervisor comes back (as systemd would restart it); the bad host, whichever
    // host was killed, is still quarantined.
    hosts[killed].start_supervisor();
    hosts[2].wait_status("the quarantine kept", Duration::from_secs(90), |u| {
        u.len() == 3 && u.values().all(|s| s.health == "quarantined")
    });
    let pages: usize = hosts.iter().map(|h| h.supervisor_log().matches("ALERT WorkerQuarantined").count()).sum();
    assert_eq!(pages, 1, "one page for the bad host, over the outage and the takeover");
    let dead = dead_letters(&format!("{prefix}.dead.w")).await;
    assert_eq!(dead.len(), 0, "no job was dead-lettered");
}

/// Whether `h`'s supervisor is the fleet's judge now (the last word of its log on it).
fn judging(h: &Host) -> bool {
    let log = h.supervisor_log();
    let won = log.rfind("this supervisor is now the fleet's judge");
    won.is_some() && won > log.rfind("no longer the fleet's judge")
}

/// The guard against a quorum delay rung that holds retries past their due time (issue 15: in
/// one CI run, 7 retries stayed ready in `<prefix>.delay.1000ms` long past its 1 s TTL after a
/// node was stopped and started; not reproduced on purpose since). Here the held retry is made
/// by hand: a message in the 3,444 s rung whose due time passed two minutes ago, as a stalled
/// rung would hold it, ahead of a retry due in an hour. With the rung's leader node stopped,
/// the process that published into the rung looks at it, moves the overdue one on to its work
/// queue, and leaves the other where it is. Without the guard it would wait its hour.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_held_in_a_quorum_delay_rung_past_its_due_time_is_moved_on_to_its_work_queue() {
    use drover::io::amqp::Link;
    use drover::topology::H_DUE;
    let env = env(
        "cluster-rung",
        r#"
        [classes.g]
        mode = "exec"
        command = ["python3", "{handler}"]
        timeout = "60s"
    "#,
    );
    let cfg = drover::io::config_file::load(&env.config).expect("config");
    let mut link = Link::new(&cfg.broker, "test rungs");
    let soon = || tokio::time::Instant::now() + Duration::from_secs(60);
    link.ensure_up_by(soon()).await.expect("connected");
    link.declare_class("g").await.expect("class queues");
    let work = link.names.work("g");
    let hour = Duration::from_secs(3600);
    let rung = link.declare_delay(hour).await.expect("rung").expect("a rung for an hour");
    let ttl = drover::outcome::delay_rung(hour).expect("rung");
    let job = |id: &str| lapin::BasicProperties::default().with_delivery_mode(2).with_message_id(id.into());
    // Held past its due time: stamped due two minutes ago (the broker will not expire it for
    // another 57 minutes).
    let now = drover::io::clock::now_ms();
    let mut h = FieldTable::default();
    h.insert(H_DUE.into(), AMQPValue::LongLongInt(now - 120_000));
    link.publish(&rung, &work, b"held", job("held").with_headers(h)).await.expect("publish the held retry");
    // A retry published by this process: due in an hour, and the rung now watched.
    link.publish_delayed(hour, &work, b"later", job("later")).await.expect("publish a retry");
    assert_eq!(depth(&rung).await, Some(2));

    let lead = new_leader(&rung, 1, None).await;
    let _down = Stopped::node(lead);
    new_leader(&rung, lead % 3 + 1, Some(lead)).await;
    let mut moved = 0;
    for _ in 0..30 {
        let at = link.next_rung_look().expect("the rung is watched");
        tokio::time::sleep_until(at).await;
        if link.ensure_up_by(soon()).await.is_err() {
            continue;
        }
        match link.tend_rungs().await {
            Ok(n) => {
                moved = n;
                break;
            }
            Err(e) => eprintln!("look failed ({e}); again after a reconnect"),
        }
    }
    assert_eq!(moved, 1, "the held retry was moved on, the other left");
    let conn = connect().await;
    let chan = conn.create_channel().await.expect("channel");
    let got = chan.basic_get(work.as_str().into(), BasicGetOptions { no_ack: false }).await.expect("get");
    let got = got.expect("the held retry is on the work queue").delivery;
    assert_eq!(got.properties.message_id().as_ref().map(|s| s.as_str()), Some("held"));
    assert_eq!(got.data, b"held");
    got.ack(BasicAckOptions::default()).await.expect("ack");
    assert_eq!(depth(&work).await, Some(0), "moved once");
    assert_eq!(depth(&rung).await, Some(1), "the retry due in an hour still waits in {rung} ({ttl:?})");
    // Not looked at again before that retry could be overdue.
    let next = link.next_rung_look().expect("still watched");
    assert!(next > tokio::time::Instant::now() + Duration::from_secs(3000), "next look at its due time");
}
