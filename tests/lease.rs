//! Jobs longer than the broker's consumer_timeout run under a broker-held lease: renewed while
//! the worker lives, back in the queue within one lease TTL when it dies; never lost, never
//! run twice at once.

use crate::harness::{count, Env};
use std::time::Duration;

const CLASS: &str = r#"
    [classes.l]
    mode = "exec"
    command = ["python3", "{handler}"]
    timeout = "60s"
    lease = "always"
"#;

fn env(name: &str) -> Env {
    Env::new(name, CLASS).with_lease_ttl("3s")
}

trait WithLease {
    fn with_lease_ttl(self, ttl: &str) -> Self;
}

impl WithLease for Env {
    fn with_lease_ttl(self, ttl: &str) -> Env {
        let text = std::fs::read_to_string(&self.config).expect("config");
        let text = text.replacen("[broker]\n", &format!("[broker]\nlease_ttl = \"{ttl}\"\n"), 1);
        std::fs::write(&self.config, text).expect("config");
        self
    }
}

/// The lease queues the workers named in their logs.
pub fn lease_queues(log: &str) -> Vec<String> {
    log.lines()
        .filter_map(|l| l.split_once("lease queues of this worker: "))
        .flat_map(|(_, qs)| qs.split(" and ").map(|q| q.trim().to_string()).collect::<Vec<_>>())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_longer_than_its_lease_is_renewed_and_runs_once() {
    let env = env("lease-renew");
    let mut events = env.events().await;
    let _w1 = env.worker("l", "l-1");
    let _w2 = env.worker("l", "l-2");
    let id = env.submit("l", r#"{"sleep": 7}"#, 1, &[])[0].clone();
    events.wait_for("the job's success", Duration::from_secs(40), |e| count(e, "succeeded") >= 1).await;
    assert_eq!(env.behave("start").len(), 1, "ran once, though it outlived two lease TTLs");
    assert_eq!(events.of("succeeded").next().and_then(|e| e.job_id.clone()), Some(id.clone()));
    let log = _w1.log() + &_w2.log();
    assert!(log.contains("broker-held lease"), "the worker says how it holds long jobs");
    // Nothing left behind: the worker's two lease queues (one per worker, not one per renewal)
    // are empty, the work queue too.
    assert_eq!(env.queue_depth(&format!("{}.jobs.l", env.prefix)).await, Some(0));
    let queues = lease_queues(&log);
    assert_eq!(queues.len(), 2, "two lease queues for the worker that ran it: {queues:?}");
    for q in queues {
        assert_eq!(env.queue_depth(&q).await, Some(0), "{q} holds no copy");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leased_job_whose_worker_dies_comes_back_after_the_lease_and_completes() {
    let env = env("lease-kill");
    let mut events = env.events().await;
    let mut w1 = env.worker("l", "l-1");
    let id = env.submit("l", r#"{"sleep": 2}"#, 1, &[])[0].clone();
    events.wait_for("the job to start", Duration::from_secs(30), |e| count(e, "started") >= 1).await;
    w1.signal(libc::SIGKILL);
    w1.wait_exit(Duration::from_secs(5)).expect("killed");
    // The delivery was acknowledged at start: only the lease copy can bring the job back.
    let _w2 = env.worker("l", "l-2");
    events
        .wait_for("completion after the lease ran out", Duration::from_secs(40), |e| count(e, "succeeded") >= 1)
        .await;
    let ok = events.of("succeeded").next().expect("success");
    assert_eq!((ok.job_id.as_deref(), ok.unit.as_str()), (Some(id.as_str()), "l-2"));
}
