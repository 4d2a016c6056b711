//! The broker goes away mid-run (`rabbitmqctl stop_app` / `start_app`): workers reconnect with
//! backoff and every job completes. Runs alone: it stops the shared broker.

use crate::harness::{count, Env};
use std::process::Command;
use std::time::Duration;

fn rabbitmqctl(arg: &str) {
    let st = Command::new("rabbitmqctl").arg(arg).output().expect("rabbitmqctl");
    assert!(st.status.success(), "rabbitmqctl {arg}: {}", String::from_utf8_lossy(&st.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_job_completes_across_a_broker_restart() {
    let env = Env::exclusive(
        "outage",
        r#"
        [classes.o]
        mode = "persistent"
        command = ["python3", "{handler}", "persistent"]
        timeout = "30s"
        retry_base = "1s"
        "#,
    );
    let mut events = env.events().await;
    let _w: Vec<_> = (1..=2).map(|i| env.worker("o", &format!("o-{i}"))).collect();
    let ids = env.submit("o", r#"{"sleep": 0.05}"#, 150, &[]);
    events.wait_for("some progress", Duration::from_secs(60), |e| count(e, "succeeded") >= 20).await;

    rabbitmqctl("stop_app");
    std::thread::sleep(Duration::from_secs(3)); // an outage long enough for every reconnect to fail a few times
    rabbitmqctl("start_app");

    // Completion is read from the handler's own log, which does not depend on the broker.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let done: std::collections::HashSet<String> = env.behave("done").into_iter().map(|(id, _)| id).collect();
        if ids.iter().all(|id| done.contains(id)) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} of {} jobs done after the broker restart",
            ids.iter().filter(|id| done.contains(*id)).count(),
            ids.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A job whose channel died under it is run again (at least once); none is lost, and
    // the queue is empty at the end.
    let runs = env.behave("done").len();
    assert!(runs >= ids.len() && runs <= ids.len() + 4, "{runs} runs for {} jobs", ids.len());
    let mut depth = None;
    for _ in 0..50 {
        depth = env.queue_depth(&format!("{}.jobs.o", env.prefix)).await;
        if depth == Some(0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(depth, Some(0));
    events
        .wait_for("events flushed after the reconnect", Duration::from_secs(30), |e| count(e, "succeeded") >= 100)
        .await;
}
