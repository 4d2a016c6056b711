//! `drover dead list / show / requeue` over real dead letters of every reason (max_attempts,
//! rejected, deadline_expired, undecodable, poison): listed and filtered, shown, requeued
//! with their id kept and their attempts started over, in the timeline with who and why; a
//! dry run changes nothing, and a dead letter that cannot be requeued stays where it was.

use crate::harness::{count, Env};
use crate::supervisor::{drover, Host};
use lapin::BasicProperties;
use std::time::Duration;

const CLASSES: &str = r#"
[classes.d]
mode = "exec"
command = ["python3", "{handler}"]
timeout = "30s"
max_attempts = 2
retry_base = "200ms"
retry_max = "400ms"
workers = 0
[classes.p]
mode = "persistent"
command = ["python3", "{handler}", "persistent"]
timeout = "30s"
max_attempts = 30
poison_after = 2
retry_base = "200ms"
retry_max = "400ms"
workers = 0
"#;

fn dead(h: &Host, args: &[&str]) -> std::process::Output {
    let mut all = vec!["dead"];
    all.extend_from_slice(args);
    all.push("--config");
    drover(&all, &h.config)
}

fn listed(h: &Host, class: &str, extra: &[&str]) -> Vec<serde_json::Value> {
    let mut args = vec!["list", "--class", class, "--json"];
    args.extend_from_slice(extra);
    let out = dead(h, &args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("a JSON array")
}

async fn wait_queue(env: &Env, class: &str) {
    let queue = format!("{}.jobs.{class}", env.prefix);
    let end = std::time::Instant::now() + Duration::from_secs(30);
    while env.queue_depth(&queue).await.is_none() {
        assert!(std::time::Instant::now() < end, "the worker never declared its queue");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_of_every_reason_are_listed_shown_and_requeued_with_their_ids() {
    let mut h = Host::new("dead", CLASSES);
    h.start_supervisor();
    let env = h.env.clone();
    let mut events = env.events().await;
    let _d = env.worker("d", "d-1");
    let _p: Vec<_> = (1..=2).map(|i| env.worker("p", &format!("p-{i}"))).collect();
    wait_queue(&env, "d").await;
    let failing = env.submit("d", r#"{"always_fail": true}"#, 1, &[])[0].clone();
    let rejected = env.submit("d", r#"{"reject": true}"#, 1, &[])[0].clone();
    let expired = env.submit("d", r#"{"sleep": 0}"#, 1, &["--deadline", "1ms"])[0].clone();
    env.publish_raw("d", b"no id at all", BasicProperties::default()).await;
    let poison = env.submit("p", r#"{"always_fail": true}"#, 1, &[])[0].clone();
    events.wait_for("five dead letters", Duration::from_secs(90), |e| count(e, "dead_lettered") >= 5).await;

    // Listed, with their reasons; filtered by reason.
    let d = listed(&h, "d", &[]);
    let reason_of = |list: &[serde_json::Value], id: &str| {
        list.iter().find(|x| x["id"] == id).map(|x| x["reason"].as_str().unwrap_or("").to_string())
    };
    assert_eq!(d.len(), 4, "{d:?}");
    assert_eq!(reason_of(&d, &failing).as_deref(), Some("max_attempts"));
    assert_eq!(reason_of(&d, &rejected).as_deref(), Some("rejected"));
    assert_eq!(reason_of(&d, &expired).as_deref(), Some("deadline_expired"));
    assert!(d.iter().any(|x| x["id"].is_null() && x["reason"] == "undecodable"), "{d:?}");
    let only = listed(&h, "d", &["--reason", "rejected"]);
    assert_eq!(only.len(), 1);
    assert_eq!(listed(&h, "d", &[]).len(), 4, "listing takes nothing away");
    let p = listed(&h, "p", &[]);
    assert_eq!(reason_of(&p, &poison).as_deref(), Some("poison"), "{p:?}");
    let bad = dead(&h, &["list", "--class", "d", "--reason", "nope"]);
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("poison"));

    // Shown, found in whichever class holds it.
    let shown = dead(&h, &["show", &poison]);
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.status.success(), "{}", String::from_utf8_lossy(&shown.stderr));
    assert!(text.contains("reason:    poison") && text.contains("always_fail") && text.contains("p-1@"), "{text}");
    assert_eq!(dead(&h, &["show", "no-such-job"]).status.code(), Some(1));

    // A dry run says what it would do and changes nothing.
    let dry = dead(&h, &["requeue", "--class", "d", "--reason", "deadline_expired", "--dry-run"]);
    assert!(dry.status.success(), "{}", String::from_utf8_lossy(&dry.stderr));
    assert!(String::from_utf8_lossy(&dry.stdout).contains(&expired));
    assert_eq!(listed(&h, "d", &[]).len(), 4);

    // Requeued by reason: the expired job gets a new deadline, keeps its id and completes.
    let why = "deadline was too short";
    let out = dead(&h, &["requeue", "--class", "d", "--reason", "deadline_expired", "--why", why]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    events
        .wait_for("the requeued job done", Duration::from_secs(60), |e| {
            e.iter().any(|x| x.event.as_str() == "succeeded" && x.job_id.as_deref() == Some(expired.as_str()))
        })
        .await;
    // Requeued by id: the always-failing job starts over at attempt 1 and dies again at 2.
    let dead_before = count(&events.all, "dead_lettered");
    let out = dead(&h, &["requeue", "--class", "d", "--id", &failing, "--why", "handler fixed"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    events.wait_for("the job dead again", Duration::from_secs(60), |e| count(e, "dead_lettered") > dead_before).await;
    let attempts: Vec<u32> = events
        .of("started")
        .filter(|e| e.job_id.as_deref() == Some(failing.as_str()))
        .filter_map(|e| e.attempt)
        .collect();
    assert_eq!(attempts, [1, 2, 1, 2], "attempts start over after the requeue");
    let again = listed(&h, "d", &[]);
    let back = again.iter().find(|x| x["id"] == failing.as_str()).expect("dead again");
    assert_eq!((back["reason"].as_str(), back["requeues"].as_i64()), (Some("max_attempts"), Some(1)));

    // What cannot be requeued (no id) is said, exit 1, and stays.
    let out = dead(&h, &["requeue", "--class", "d", "--reason", "undecodable"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no message id"));
    assert!(listed(&h, "d", &["--reason", "undecodable"]).len() == 1, "nothing lost");
    // An id that is not there: exit 1, the others untouched.
    assert_eq!(dead(&h, &["requeue", "--class", "d", "--id", "no-such-job"]).status.code(), Some(1));
    assert_eq!(listed(&h, "d", &[]).len(), 3, "rejected, undecodable and the failing job again");

    // The timeline says who requeued what, and why.
    let t = drover(&["timeline", "--json", "--config"], &h.config);
    let entries: Vec<serde_json::Value> = serde_json::from_slice(&t.stdout).expect("json");
    let note = entries
        .iter()
        .find(|e| e["why"].as_str().is_some_and(|w| w.contains(why)))
        .unwrap_or_else(|| panic!("requeue in the timeline: {entries:?}"));
    assert!(note["what"].as_str().unwrap_or("").contains("requeued"), "{note}");
    assert!(note["why"].as_str().unwrap_or("").contains(&expired), "{note}");
    assert!(!note["who"].as_str().unwrap_or("").is_empty());
}

/// Publishes `n` dead letters (`job-0` ... `job-<n-1>`, rejected) straight into the class's
/// dead-letter queue, confirmed.
async fn fill_dead(chan: &lapin::Channel, queue: &str, n: usize) {
    use lapin::options::BasicPublishOptions;
    use lapin::types::{AMQPValue, FieldTable};
    let mut confirms = Vec::with_capacity(n);
    for i in 0..n {
        let mut h = FieldTable::default();
        h.insert("x-drover-dead-reason".into(), AMQPValue::LongString("rejected".into()));
        h.insert("x-drover-attempt".into(), AMQPValue::LongUInt(3));
        let props = BasicProperties::default()
            .with_message_id(format!("job-{i}").as_str().into())
            .with_delivery_mode(2)
            .with_headers(h);
        let c = chan
            .basic_publish("".into(), queue.into(), BasicPublishOptions::default(), b"{}", props)
            .await
            .expect("publish");
        confirms.push(c);
    }
    for c in confirms {
        assert!(c.await.expect("confirm").is_ack());
    }
}

/// Ready messages in a queue (passive declare).
async fn ready(chan: &lapin::Channel, queue: &str) -> u32 {
    use lapin::options::QueueDeclareOptions;
    let opts = QueueDeclareOptions { passive: true, ..Default::default() };
    chan.queue_declare(queue.into(), opts, Default::default()).await.expect("declare").message_count()
}

/// Messages of a queue delivered and not yet acknowledged, as the broker counts them.
fn unacked(queue: &str) -> Option<u64> {
    let out = std::process::Command::new("rabbitmqctl")
        .args(["-q", "list_queues", "name", "messages_unacknowledged"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines().find_map(|l| l.strip_prefix(queue)?.trim().parse().ok())
}

/// Takes every message of a queue away; their job ids.
async fn drain_ids(chan: &lapin::Channel, queue: &str) -> Vec<String> {
    use lapin::options::BasicGetOptions;
    let mut ids = Vec::new();
    while let Some(m) = chan.basic_get(queue.into(), BasicGetOptions { no_ack: true }).await.expect("get") {
        ids.push(m.delivery.properties.message_id().as_ref().map(|s| s.to_string()).unwrap_or_default());
    }
    ids
}

/// `drover dead requeue --all` killed (SIGKILL: no clean-up of any kind) while it publishes,
/// and again once everything is published, before the dead letters are removed: no job is lost.
/// Each job is still a dead letter or requeued; one that was requeued but whose dead letter was
/// not yet removed is in both (the documented duplicate: a requeue repeated later makes it two
/// runs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_requeue_killed_partway_loses_no_job() {
    let env = Env::new("deadkill", "[classes.d]\ncommand = [\"true\"]\nworkers = 0\n");
    let out = drover(&["dead", "list", "--class", "d", "--config"], &env.config);
    assert!(out.status.success(), "declares the queues: {}", String::from_utf8_lossy(&out.stderr));
    let (dead_q, work_q) = (format!("{}.dead.d", env.prefix), format!("{}.jobs.d", env.prefix));
    let conn = crate::harness::connect().await;
    let chan = conn.create_channel().await.expect("channel");
    chan.confirm_select(Default::default()).await.expect("confirms");
    let n = 5_000;
    type When = fn(u32, u32) -> bool;
    let rounds: [(&str, When); 2] =
        [("while publishing", |work, _| work > 0), ("once everything is published", |work, n| work >= n)];
    for (when, kill_at) in rounds {
        fill_dead(&chan, &dead_q, n).await;
        let mut requeue = std::process::Command::new(env!("CARGO_BIN_EXE_drover"))
            .args(["dead", "requeue", "--class", "d", "--all", "--config"])
            .arg(&env.config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("drover dead requeue");
        let end = std::time::Instant::now() + Duration::from_secs(120);
        loop {
            assert!(requeue.try_wait().expect("wait").is_none(), "{when}: the requeue ended before it was killed");
            assert!(std::time::Instant::now() < end, "{when}: the requeue never got there");
            if kill_at(ready(&chan, &work_q).await, n as u32) {
                requeue.kill().expect("SIGKILL");
                break;
            }
        }
        let _ = requeue.wait();
        // The broker gives back what the killed connection held (nothing unacknowledged left).
        crate::harness::wait_until("the dead letters given back", Duration::from_secs(60), || {
            unacked(&dead_q) == Some(0)
        });
        let (dead_n, work_n) = (ready(&chan, &dead_q).await, ready(&chan, &work_q).await);
        let still_dead: std::collections::BTreeSet<String> = drain_ids(&chan, &dead_q).await.into_iter().collect();
        let requeued: std::collections::BTreeSet<String> = drain_ids(&chan, &work_q).await.into_iter().collect();
        let missing: Vec<String> = (0..n)
            .map(|i| format!("job-{i}"))
            .filter(|id| !still_dead.contains(id) && !requeued.contains(id))
            .collect();
        assert!(
            missing.is_empty(),
            "{when}: {} job(s) lost, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(5)]
        );
        let both = still_dead.intersection(&requeued).count();
        eprintln!("{when}: {dead_n} still dead, {work_n} requeued, {both} in both");
        assert!(work_n > 0 && dead_n > 0, "{when}: the kill came partway");
        assert_eq!(
            still_dead.len() + requeued.len() - both,
            n,
            "{when}: each job once or, requeued and not yet removed, twice"
        );
    }
}
