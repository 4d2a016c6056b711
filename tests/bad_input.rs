//! Bad input loses nothing: a refused config lists every problem; an undecodable message is
//! dead-lettered with its reason and the worker goes on; a handler that prints garbage, breaks
//! the protocol or dies costs one attempt, not the job; a failed preflight takes no job.

use crate::harness::{count, Env};
use lapin::BasicProperties;
use std::process::Command;
use std::time::Duration;

#[test]
fn check_config_lists_every_problem_and_exits_2() {
    let dir = std::env::temp_dir().join(format!("drover-badcfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("bad.toml");
    std::fs::write(
        &path,
        "[broker]\nurl = \"http://x\"\n[classes.a]\ncommand = []\ntimeout = \"forever\"\nmax_attempts = 0\n",
    )
    .expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_drover")).args(["check-config"]).arg(&path).output().expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    for key in ["broker.url", "classes.a.command", "classes.a.timeout", "classes.a.max_attempts"] {
        assert!(err.contains(key), "{key} missing from: {err}");
    }
    assert!(err.contains("4 problems"), "{err}");

    // Issue 18: a zero period is refused with its range, each problem says where it is, and a
    // misspelt key gets the key meant.
    std::fs::write(&path, "[alerts]\nevaluate_every = \"0\"\n[classes.a]\ncommand = [\"x\"]\nmax_attemps = 3\n")
        .expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_drover")).args(["check-config"]).arg(&path).output().expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("line 2, column 1: alerts.evaluate_every: found 0s; accepted: a duration from 100ms to 1h"),
        "{err}"
    );
    assert!(
        err.contains("line 5, column 1: classes.a.max_attemps") && err.contains("did you mean `max_attempts`?"),
        "{err}"
    );

    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config/drover.example.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_drover")).args(["check-config", example]).output().expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_messages_are_dead_lettered_and_the_worker_goes_on() {
    let env = Env::new(
        "badmsg",
        r#"
        [classes.b]
        mode = "persistent"
        command = ["python3", "{handler}", "persistent"]
        timeout = "30s"
        "#,
    );
    let mut events = env.events().await;
    let _w = env.worker("b", "b-1");
    // A raw publish to a queue that does not exist yet would be dropped: wait for the worker.
    let queue = format!("{}.jobs.b", env.prefix);
    let end = std::time::Instant::now() + Duration::from_secs(30);
    while env.queue_depth(&queue).await.is_none() {
        assert!(std::time::Instant::now() < end, "the worker never declared its queue");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    env.publish_raw("b", b"no id at all", BasicProperties::default()).await;
    let good = env.submit("b", r#"{"sleep": 0}"#, 1, &[])[0].clone();
    events
        .wait_for("the dead letter and the next job", Duration::from_secs(30), |e| {
            count(e, "dead_lettered") >= 1 && count(e, "succeeded") >= 1
        })
        .await;
    let dead = env.dead_letters("b").await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].reason, "undecodable");
    assert!(dead[0].detail.contains("message_id"), "{}", dead[0].detail);
    assert_eq!(dead[0].body, b"no id at all", "the message is kept as it was");
    assert_eq!(events.of("succeeded").next().and_then(|e| e.job_id.clone()), Some(good));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_that_prints_garbage_breaks_the_protocol_or_dies_costs_an_attempt_not_the_job() {
    let env = Env::new(
        "garbage",
        r#"
        [classes.g]
        mode = "persistent"
        command = ["python3", "{handler}", "persistent"]
        timeout = "30s"
        max_attempts = 3
        retry_base = "1s"
        retry_max = "1s"
        "#,
    );
    let mut events = env.events().await;
    let _w = env.worker("g", "g-1");
    let noisy = env.submit("g", r#"{"noise": true}"#, 1, &[])[0].clone();
    let broken = env.submit("g", r#"{"break_attempts": 1}"#, 1, &[])[0].clone();
    let dies = env.submit("g", r#"{"die_attempts": 1}"#, 1, &[])[0].clone();
    events.wait_for("three successes", Duration::from_secs(60), |e| count(e, "succeeded") >= 3).await;
    let attempt_of =
        |id: &str| events.of("succeeded").find(|e| e.job_id.as_deref() == Some(id)).and_then(|e| e.attempt);
    assert_eq!(attempt_of(&noisy), Some(1), "stray prints are logged, not fatal");
    assert_eq!(attempt_of(&broken), Some(2));
    assert_eq!(attempt_of(&dies), Some(2));
    let failed: Vec<_> = events.of("failed").collect();
    assert_eq!(failed.len(), 2, "{}", events.summary());
    assert!(failed.iter().any(|e| e.detail.as_deref().unwrap_or("").contains("result without an id")));
    assert!(failed.iter().any(|e| e.detail.as_deref().unwrap_or("").contains("handler exited")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_preflight_takes_no_job_reports_misconfigured_and_exits_78() {
    let env = Env::new(
        "preflight",
        r#"
        [classes.p]
        mode = "exec"
        command = ["python3", "{handler}"]
        preflight = [["true"], ["test", "-w", "/nonexistent/app-state"]]
        "#,
    );
    let mut events = env.events().await;
    env.submit("p", r#"{}"#, 1, &[]);
    let mut w = env.worker("p", "p-1");
    let status = w.wait_exit(Duration::from_secs(30)).expect("the worker exits");
    assert_eq!(status.code(), Some(78), "{}", w.log());
    events.wait_for("the misconfigured event", Duration::from_secs(10), |e| count(e, "misconfigured") >= 1).await;
    let m = events.of("misconfigured").next().expect("event");
    assert!(m.reason.as_deref().unwrap_or("").contains("/nonexistent/app-state"), "{m:?}");
    assert!(env.behave("start").is_empty(), "no job ran");
    assert_eq!(env.queue_depth(&format!("{}.jobs.p", env.prefix)).await, Some(1), "the job waits for a healthy worker");
}
