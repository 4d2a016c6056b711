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
