//! Jobs that fail: dead-lettered with their reason after max_attempts, at once on reject, without
//! running when their deadline has passed; killed (whole process group) at their timeout.

use crate::harness::{count, process_alive, read_pid, wait_until, Env};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_rejected_and_expired_jobs_are_dead_lettered_with_their_reason_while_the_rest_flows() {
    let env = Env::new(
        "fail",
        r#"
        [classes.f]
        mode = "exec"
        command = ["python3", "{handler}"]
        timeout = "30s"
        max_attempts = 3
        retry_base = "1s"
        retry_max = "2s"
        "#,
    );
    let mut events = env.events().await;
    let always = env.submit("f", r#"{"always_fail": true}"#, 1, &[])[0].clone();
    let rejected = env.submit("f", r#"{"reject": true}"#, 1, &[])[0].clone();
    let expired = env.submit("f", r#"{}"#, 1, &["--deadline", "1ms"])[0].clone();
    let good = env.submit("f", r#"{"sleep": 0}"#, 20, &[]);
    let _w = env.worker("f", "f-1");

    events
        .wait_for("3 dead letters and 20 successes", Duration::from_secs(90), |e| {
            count(e, "dead_lettered") >= 3 && count(e, "succeeded") >= 20
        })
        .await;

    let dead = env.dead_letters("f").await;
    assert_eq!(dead.len(), 3, "{dead:?}");
    let find = |id: &str| {
        dead.iter().find(|d| d.id.as_deref() == Some(id)).unwrap_or_else(|| panic!("{id} not dead-lettered: {dead:?}"))
    };
    let d = find(&always);
    assert_eq!(d.reason, "max_attempts");
    assert!(d.detail.contains("attempt 3 of 3") && d.detail.contains("exit status 1"), "{}", d.detail);
    assert_eq!(d.attempt, Some(3));
    let d = find(&rejected);
    assert_eq!(d.reason, "rejected");
    assert_eq!(d.attempt, Some(1), "a rejected job is not retried");
    assert_eq!(find(&expired).reason, "deadline_expired");
    assert!(!env.behave("start").iter().any(|(id, _)| id == &expired), "an expired job must not run");
    let starts_of_always = env.behave("start").iter().filter(|(id, _)| id == &always).count();
    assert_eq!(starts_of_always, 3);
    let retried: Vec<_> = events.of("retry_scheduled").filter(|e| e.job_id.as_deref() == Some(&always)).collect();
    assert_eq!(retried.len(), 2);
    for id in &good {
        assert!(events.of("succeeded").any(|e| e.job_id.as_deref() == Some(id)));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_past_its_timeout_is_killed_with_its_children_and_retried() {
    let env = Env::new(
        "timeout",
        r#"
        [worker]
        kill_grace = "1s"
        [classes.t]
        mode = "exec"
        command = ["python3", "{handler}"]
        timeout = "2s"
        max_attempts = 2
        retry_base = "1s"
        retry_max = "1s"
        "#,
    );
    let mut events = env.events().await;
    let pidfile = env.dir.join("child.pid");
    let payload = format!(r#"{{"sleep": 60, "child_pidfile": "{}"}}"#, pidfile.display());
    let id = env.submit("t", &payload, 1, &[])[0].clone();
    let _w = env.worker("t", "t-1");

    wait_until("the job's grandchild to start", Duration::from_secs(30), || read_pid(&pidfile).is_some());
    let grandchild = read_pid(&pidfile).expect("pid");
    events.wait_for("the retry after the timeout", Duration::from_secs(30), |e| count(e, "retry_scheduled") >= 1).await;
    let retry = events.of("retry_scheduled").next().expect("retry");
    assert_eq!(retry.outcome.as_deref(), Some("timeout"));
    assert_eq!(retry.job_id.as_deref(), Some(id.as_str()));
    wait_until("the killed job's grandchild to be gone", Duration::from_secs(5), || !process_alive(grandchild));

    events
        .wait_for("the dead letter after the second timeout", Duration::from_secs(30), |e| {
            count(e, "dead_lettered") >= 1
        })
        .await;
    let second = read_pid(&pidfile).expect("pid");
    assert_ne!(second, grandchild, "the job ran a second time");
    wait_until("the second grandchild to be gone", Duration::from_secs(5), || !process_alive(second));
    let dead = env.dead_letters("t").await;
    assert_eq!(dead.len(), 1);
    assert!(dead[0].detail.contains("killed after"), "{}", dead[0].detail);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_fails_on_k_distinct_workers_is_dead_lettered_as_poison_with_where_it_failed() {
    let env = Env::new(
        "poison",
        r#"
        [classes.p]
        mode = "persistent"
        command = ["python3", "{handler}", "persistent"]
        timeout = "30s"
        max_attempts = 30
        poison_after = 3
        retry_base = "200ms"
        retry_max = "400ms"
        "#,
    );
    let mut events = env.events().await;
    let _w: Vec<_> = (1..=3).map(|i| env.worker("p", &format!("p-{i}"))).collect();
    let id = env.submit("p", r#"{"always_fail": true}"#, 1, &[])[0].clone();
    let good = env.submit("p", r#"{"sleep": 0}"#, 5, &[]);
    events.wait_for("the poison dead letter", Duration::from_secs(90), |e| count(e, "dead_lettered") >= 1).await;
    let dead = env.dead_letters("p").await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].id.as_deref(), Some(id.as_str()));
    assert_eq!(dead[0].reason, "poison");
    for unit in ["p-1@", "p-2@", "p-3@"] {
        assert!(dead[0].detail.contains(unit), "the dead letter says where it failed: {}", dead[0].detail);
    }
    assert!(dead[0].attempt.unwrap_or(99) < 30, "long before max_attempts");
    events.wait_for("the other jobs", Duration::from_secs(30), |e| count(e, "succeeded") >= 5).await;
    for g in &good {
        assert!(events.of("succeeded").any(|e| e.job_id.as_deref() == Some(g)));
    }
}
