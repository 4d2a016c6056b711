//! Stopping workers: SIGTERM drains (no new job; the running one finishes or is requeued at the
//! drain deadline without charge and completes elsewhere); SIGKILL loses nothing.

use crate::harness::{count, process_alive, wait_until, Env};
use std::time::Duration;

const CLASS: &str = r#"
    [worker]
    drain_deadline = "{drain}"
    kill_grace = "1s"
    [classes.d]
    mode = "persistent"
    command = ["python3", "{handler}", "persistent"]
    timeout = "60s"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_running_job_finish_and_takes_no_new_one() {
    let env = Env::new("drain-finish", &CLASS.replace("{drain}", "30s"));
    let mut events = env.events().await;
    let mut w1 = env.worker("d", "d-1");
    let first = env.submit("d", r#"{"sleep": 3}"#, 1, &[])[0].clone();
    events.wait_for("the first job to start", Duration::from_secs(30), |e| count(e, "started") >= 1).await;
    let second = env.submit("d", r#"{"sleep": 0}"#, 1, &[])[0].clone();
    w1.signal(libc::SIGTERM);

    let status = w1.wait_exit(Duration::from_secs(30)).expect("the worker exits after its job");
    assert_eq!(status.code(), Some(0), "{}", w1.log());
    events.wait_for("the first job's success", Duration::from_secs(10), |e| count(e, "succeeded") >= 1).await;
    let ok = events.of("succeeded").next().expect("success");
    assert_eq!(ok.job_id.as_deref(), Some(first.as_str()));
    assert!(!events.of("started").any(|e| e.job_id.as_deref() == Some(&second)), "a draining worker takes no new job");
    assert_eq!(env.queue_depth(&format!("{}.jobs.d", env.prefix)).await, Some(1), "the second job waits in the queue");

    let _w2 = env.worker("d", "d-2");
    events.wait_for("the second job on another worker", Duration::from_secs(30), |e| count(e, "succeeded") >= 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_drain_deadline_the_job_is_requeued_without_charge_and_completes_elsewhere() {
    let env = Env::new("drain-requeue", &CLASS.replace("{drain}", "1s"));
    let mut events = env.events().await;
    let mut w1 = env.worker("d", "d-1");
    let id = env.submit("d", r#"{"sleep": 4}"#, 1, &[])[0].clone();
    events.wait_for("the job to start", Duration::from_secs(30), |e| count(e, "started") >= 1).await;
    w1.signal(libc::SIGTERM);
    let status = w1.wait_exit(Duration::from_secs(20)).expect("the worker exits at the drain deadline");
    assert_eq!(status.code(), Some(0), "{}", w1.log());
    events.wait_for("the requeue", Duration::from_secs(10), |e| count(e, "requeued") >= 1).await;
    let rq = events.of("requeued").next().expect("requeued");
    assert!(rq.reason.as_deref().unwrap_or("").contains("drain deadline"), "{rq:?}");

    let _w2 = env.worker("d", "d-2");
    events.wait_for("completion on another worker", Duration::from_secs(30), |e| count(e, "succeeded") >= 1).await;
    let ok = events.of("succeeded").next().expect("success");
    assert_eq!(ok.job_id.as_deref(), Some(id.as_str()));
    assert_eq!(ok.unit, "d-2");
    assert_eq!(ok.attempt, Some(1), "a drain does not charge an attempt");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_job_loses_nothing() {
    let env = Env::new("kill", &CLASS.replace("{drain}", "30s"));
    let mut events = env.events().await;
    let mut w1 = env.worker("d", "d-1");
    let id = env.submit("d", r#"{"sleep": 6}"#, 1, &[])[0].clone();
    wait_until("the job to start", Duration::from_secs(30), || !env.behave("start").is_empty());
    let handler_pid = handler_pids(&env)[0];
    w1.signal(libc::SIGKILL);
    w1.wait_exit(Duration::from_secs(5)).expect("killed");
    // The handler dies with the worker (PR_SET_PDEATHSIG): the job does not run on as an orphan
    // while the broker hands it to another worker.
    wait_until("the killed worker's handler to go", Duration::from_secs(5), || !process_alive(handler_pid));
    assert!(env.behave("done").is_empty(), "the orphaned attempt must not complete");

    let _w2 = env.worker("d", "d-2");
    events.wait_for("the redelivered job to complete", Duration::from_secs(40), |e| count(e, "succeeded") >= 1).await;
    let ok = events.of("succeeded").next().expect("success");
    assert_eq!((ok.job_id.as_deref(), ok.unit.as_str()), (Some(id.as_str()), "d-2"));
    let second_start = events.of("started").find(|e| e.unit == "d-2").expect("started on d-2");
    assert_eq!(second_start.redelivered, Some(true), "the broker redelivered it");
    assert_eq!(env.behave("done").len(), 1, "it completed once");
}

/// Pids of the handler processes that started a job, from the test handler's log.
fn handler_pids(env: &Env) -> Vec<i32> {
    std::fs::read_to_string(env.behave_log())
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("start "))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect()
}
