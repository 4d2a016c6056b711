//! The main flow: many jobs over several workers, with transient failures retried through the
//! broker-held delay queues.

use crate::harness::{count, Env};
use std::collections::HashMap;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_jobs_over_three_workers_with_transient_failures_all_succeed() {
    let env = Env::new(
        "flow",
        r#"
        [classes.flow]
        mode = "persistent"
        command = ["python3", "{handler}", "persistent"]
        timeout = "30s"
        max_attempts = 4
        retry_base = "2s"
        retry_max = "4s"
        "#,
    );
    let mut events = env.events().await;
    let _w: Vec<_> = (1..=3).map(|i| env.worker("flow", &format!("flow-{i}"))).collect();
    let mut ids = env.submit("flow", r#"{"sleep": 0}"#, 450, &[]);
    let flaky = env.submit("flow", r#"{"fail_attempts": 1}"#, 50, &[]);
    ids.extend(flaky.iter().cloned());

    events.wait_for("500 successes", Duration::from_secs(120), |e| count(e, "succeeded") >= 500).await;

    let mut succeeded: HashMap<&str, usize> = HashMap::new();
    for e in events.of("succeeded") {
        *succeeded.entry(e.job_id.as_deref().unwrap_or("")).or_default() += 1;
    }
    for id in &ids {
        assert_eq!(succeeded.get(id.as_str()), Some(&1), "job {id} must succeed exactly once");
    }
    // Every flaky job was retried once through a delay queue and succeeded on attempt 2.
    let retries: Vec<_> = events.of("retry_scheduled").collect();
    assert_eq!(retries.len(), 50, "{}", events.summary());
    assert!(retries.iter().all(|e| e.outcome.as_deref() == Some("transient") && e.retry_delay_s.unwrap_or(9.0) < 2.0));
    for id in &flaky {
        let attempts: Vec<u32> =
            events.of("succeeded").filter(|e| e.job_id.as_deref() == Some(id)).filter_map(|e| e.attempt).collect();
        assert_eq!(attempts, vec![2], "flaky job {id}");
    }
    // Redeliveries: in a run without crashes or outages the broker redelivers nothing; a
    // retry is a new message, not a redelivery. Any redelivery would be a started event with
    // redelivered = true.
    let redelivered: Vec<_> = events.of("started").filter(|e| e.redelivered == Some(true)).collect();
    assert!(redelivered.is_empty(), "unexpected redeliveries: {redelivered:?}");
    // Work was spread over the three workers.
    let mut per_unit: HashMap<&str, usize> = HashMap::new();
    for e in events.of("succeeded") {
        *per_unit.entry(e.unit.as_str()).or_default() += 1;
    }
    assert_eq!(per_unit.len(), 3, "{per_unit:?}");
    // Events carry what drift detection and quarantine need.
    let e = events.of("succeeded").next().expect("an event");
    assert!(e.submitted_at.is_some() && e.started_at.is_some() && e.finished_at.is_some() && e.duration_s.is_some());
    assert!(!e.host.is_empty());
    assert_eq!(env.queue_depth(&format!("{}.dead.flow", env.prefix)).await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_mode_runs_each_job_in_its_own_process_with_the_job_in_its_environment() {
    let env = Env::new(
        "exec",
        r#"
        [classes.ex]
        mode = "exec"
        command = ["python3", "{handler}"]
        timeout = "30s"
        "#,
    );
    let mut events = env.events().await;
    let _w = env.worker("ex", "ex-1");
    let ids = env.submit("ex", r#"{"sleep": 0}"#, 5, &["--tenant", "acme"]);
    events.wait_for("5 successes", Duration::from_secs(60), |e| count(e, "succeeded") >= 5).await;
    let done = env.behave("done");
    for id in &ids {
        assert!(done.iter().any(|(j, a)| j == id && *a == 1), "job {id} ran with DROVER_JOB_ID and DROVER_ATTEMPT=1");
    }
    assert!(events.of("succeeded").all(|e| e.tenant.as_deref() == Some("acme")));
    let pids: std::collections::HashSet<String> = std::fs::read_to_string(env.behave_log())
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("done"))
        .map(|l| l.rsplit(' ').next().unwrap_or("").to_string())
        .collect();
    assert_eq!(pids.len(), 5, "one process per job");
}
