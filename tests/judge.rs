//! The fleet's one judge (issue 15): the broker elects it among the supervisors (the active
//! consumer of the judge's single-active-consumer queue); a fleet-wide condition is raised
//! once, whoever sees it; when the judge's supervisor dies, another takes over from the state
//! it kept in the broker, with the quarantines still in force and the latency baseline it had
//! learnt.

use crate::harness::{connect, count, wait_until};
use crate::quarantine::add_environment;
use crate::supervisor::Host;
use lapin::options::{BasicGetOptions, BasicNackOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use std::time::Duration;

/// Three persistent workers a host, a 2 s timeout, quick evaluations (also the cluster's judge test).
pub const CLASS: &str = r#"
evaluate_every = "500ms"
drift_warmup = 10
[quarantine]
hold = "10m"
[classes.w]
mode = "persistent"
command = ["python3", "{handler}", "persistent"]
timeout = "2s"
max_attempts = 10
poison_after = 0
retry_base = "300ms"
retry_max = "1s"
workers = 3
"#;

const ELECTED: &str = "this supervisor is now the fleet's judge";

/// The judge's last snapshot, read from the broker and left there.
async fn snapshot(prefix: &str) -> Option<drover::fleet_judge::Snapshot> {
    let conn = connect().await;
    let chan = conn.create_channel().await.expect("channel");
    let mut args = FieldTable::default();
    args.insert("x-max-length".into(), AMQPValue::LongLongInt(1));
    let queue = format!("{prefix}.judge.state");
    let opts = QueueDeclareOptions { durable: true, passive: true, ..Default::default() };
    chan.queue_declare(queue.as_str().into(), opts, args).await.ok()?;
    let m = chan.basic_get(queue.as_str().into(), BasicGetOptions { no_ack: false }).await.ok()??;
    let s = serde_json::from_slice(&m.delivery.data).ok();
    let _ = m.delivery.acker.nack(BasicNackOptions { requeue: true, ..Default::default() }).await;
    s
}

/// The completions the fleet's drift detector of class `w` has learnt from, per the snapshot.
async fn learnt(prefix: &str) -> u64 {
    snapshot(prefix).await.and_then(|s| s.baselines.fleet.get("w").map(|d| d.completions)).unwrap_or(0)
}

pub fn elected(h: &Host) -> bool {
    h.supervisor_log().contains(ELECTED)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_judge_per_fleet_and_a_takeover_keeps_quarantines_baselines_and_the_one_alert() {
    let mut first = Host::new("judge", CLASS);
    let mut second = first.other_host("judge-b", 3);
    let mut bad = first.other_host("judge-bad", 3);
    add_environment(&bad, "BEHAVE_BAD=1");
    let prefix = first.env.prefix.clone();
    let mut events = first.env.events().await;
    // The first supervisor to stand is the broker's choice; the others stand by.
    first.start_supervisor();
    wait_until("the first supervisor elected", Duration::from_secs(60), || elected(&first));
    second.start_supervisor();
    bad.start_supervisor();
    for h in [&first, &second, &bad] {
        h.wait_status("3 healthy units", Duration::from_secs(60), |u| {
            u.len() == 3 && u.values().all(|s| s.health == "healthy")
        });
    }
    first.env.submit("w", r#"{"sleep": 0.3}"#, 60, &[]);
    bad.wait_status("the bad host's units quarantined", Duration::from_secs(120), |u| {
        u.values().filter(|s| s.health == "quarantined").count() == 3
    });
    events.wait_for("every job", Duration::from_secs(120), |e| count(e, "succeeded") >= 60).await;
    assert!(!elected(&second) && !elected(&bad), "one judge at a time");
    // The page names the bad host; every supervisor shows it in its status, from the judge.
    for h in [&first, &second, &bad] {
        h.wait_status("the fleet's page in the status", Duration::from_secs(30), |_| {
            h.status().is_some_and(|s| {
                s.firing.iter().any(|a| a.key.name == "WorkerQuarantined" && a.key.label("host") == "judge-bad")
            })
        });
    }
    let before = learnt(&prefix).await;
    assert!(before >= 30, "the judge keeps its baseline in the broker ({before} completions learnt)");

    // The judge dies without a word; the broker hands its queue to another supervisor.
    first.kill_supervisor();
    wait_until("another supervisor elected", Duration::from_secs(60), || elected(&second) || elected(&bad));
    let next = if elected(&second) { &second } else { &bad };
    assert!(!(elected(&second) && elected(&bad)), "one judge at a time");
    let from = format!("going on from {}'s state", first.name);
    assert!(next.supervisor_log().contains(&from), "{}", next.supervisor_log());
    // More work: the new judge learns on from the old baseline, not from zero.
    let ids = second.env.submit("w", r#"{"sleep": 0.2}"#, 10, &[]);
    events.wait_for("the new jobs", Duration::from_secs(120), |e| count(e, "succeeded") >= 70).await;
    let end = tokio::time::Instant::now() + Duration::from_secs(90);
    while snapshot(&prefix).await.is_none_or(|s| s.judge == first.name) {
        assert!(tokio::time::Instant::now() < end, "no snapshot from the new judge");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let after = learnt(&prefix).await;
    assert!(after >= before, "baseline kept over the takeover: {before} completions, then {after}");
    assert_eq!(ids.len(), 10);
    // The quarantines stay; the page was raised once for the fleet, and not again.
    let units = bad.units();
    assert_eq!(units.values().filter(|s| s.health == "quarantined").count(), 3, "{units:#?}");
    let pages: usize =
        [&first, &second, &bad].iter().map(|h| h.supervisor_log().matches("ALERT WorkerQuarantined").count()).sum();
    assert_eq!(pages, 1, "one page for the bad host, over the takeover");
}

/// A shared outage seen on three hosts is one page for the fleet (one `ClassPaused`, raised by
/// the judge), shown by every supervisor with the same labels; before, each supervisor raised it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_class_paused_on_three_hosts_is_one_page_for_the_fleet() {
    let class = CLASS
        .replace("hold = \"10m\"", "hold = \"1h\"")
        .replace("timeout = \"2s\"", "timeout = \"30s\"")
        .replace("max_attempts = 10", "max_attempts = 100");
    let mut hosts = vec![Host::new("judge-outage", &class)];
    hosts.push(hosts[0].other_host("outage-b", 3));
    hosts.push(hosts[0].other_host("outage-c", 3));
    let outage = hosts[0].env.dir.join("dependency-down");
    std::fs::write(&outage, "").expect("the dependency goes down");
    for h in hosts.iter_mut() {
        add_environment(h, &format!("BEHAVE_FAIL_IF={}", outage.display()));
        h.start_supervisor();
    }
    for h in &hosts {
        h.wait_status("3 healthy units", Duration::from_secs(60), |u| {
            u.len() == 3 && u.values().all(|s| s.health == "healthy")
        });
    }
    hosts[0].env.submit("w", r#"{"sleep": 0}"#, 30, &[]);
    for h in &hosts {
        h.wait_status("the class paused", Duration::from_secs(90), |u| u.values().all(|s| s.health == "cordoned"));
    }
    for h in &hosts {
        h.wait_status("the fleet's page in the status", Duration::from_secs(30), |_| {
            h.status().is_some_and(|s| s.firing.iter().any(|a| a.key.name == "ClassPaused"))
        });
        let s = h.status().expect("status");
        let paused: Vec<_> = s.firing.iter().filter(|a| a.key.name == "ClassPaused").collect();
        assert_eq!(paused.len(), 1, "{:?}", s.firing);
        assert_eq!(paused[0].key.labels, [("class".to_string(), "w".to_string())].into_iter().collect());
    }
    let pages: usize = hosts.iter().map(|h| h.supervisor_log().matches("ALERT ClassPaused").count()).sum();
    assert_eq!(pages, 1, "one page for the fleet");
    let judges = hosts.iter().filter(|h| elected(h)).count();
    assert_eq!(judges, 1, "one judge");
}
