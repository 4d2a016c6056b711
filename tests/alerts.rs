//! Latency alerts end to end (issue: latency drift): real workers slow down, the supervisor's
//! drift alert fires, reaches a webhook receiver run by the test, shows in `drover alerts` and
//! on `/metrics`, and resolves when the workers recover.

use crate::harness::{count, wait_until, Env, Events, Worker};
use crate::supervisor::Host;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A webhook receiver: collects the JSON bodies posted to it.
pub struct Receiver {
    pub port: u16,
    pub bodies: Arc<Mutex<Vec<serde_json::Value>>>,
}

impl Receiver {
    pub fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let sink = bodies.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(stream);
                let mut len = 0usize;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0u8; len];
                if reader.read_exact(&mut body).is_ok() {
                    if let Ok(v) = serde_json::from_slice(&body) {
                        sink.lock().expect("lock").push(v);
                    }
                }
                let _ = reader.get_mut().write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
            }
        });
        Receiver { port, bodies }
    }

    pub fn has(&self, status: &str, alertname: &str) -> bool {
        self.bodies
            .lock()
            .expect("lock")
            .iter()
            .any(|b| b["status"] == status && b["alerts"][0]["labels"]["alertname"] == alertname)
    }
}

pub fn submit(env: &Env, secs: f64, n: u64) -> Vec<String> {
    env.submit("s", &format!(r#"{{"sleep": {secs}}}"#), n, &[])
}

/// A drift host with its supervisor, two workers of class `s`, and its baseline: 40 jobs of
/// about 0.1 s done.
pub async fn baseline(name: &str, hook: &Receiver) -> (Host, Events, [Worker; 2]) {
    let mut h = drift_host(name, hook);
    let mut events = h.env.events().await;
    h.start_supervisor();
    let workers = [h.env.worker("s", "s-1"), h.env.worker("s", "s-2")];
    submit(&h.env, 0.1, 40);
    events.wait_for("40 baseline jobs", Duration::from_secs(60), |e| count(e, "succeeded") >= 40).await;
    (h, events, workers)
}

/// A host whose class `s` (two bare workers, a short drift warm-up) alerts to `hook`.
fn drift_host(name: &str, hook: &Receiver) -> Host {
    let classes = format!(
        r#"
        webhook = "http://127.0.0.1:{}/hook"
        evaluate_every = "300ms"
        fire_after = "1s"
        resolve_after = "1s"
        drift_warmup = 20
        [classes.s]
        mode = "persistent"
        command = ["python3", "{{handler}}", "persistent"]
        timeout = "30s"
        workers = 0
        "#,
        hook.port
    );
    Host::new(name, &classes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowdown_fires_a_drift_alert_to_the_webhook_and_it_resolves_on_recovery() {
    let hook = Receiver::start();
    let (mut h, mut events, _workers) = baseline("alerts", &hook).await;
    assert!(!hook.has("firing", "LatencyDrift"), "no alert on a stable class");

    // Five times slower: the drift alert fires within a few completions, long before any SLA.
    submit(&h.env, 0.5, 12);
    wait_until("the drift alert at the webhook", Duration::from_secs(60), || hook.has("firing", "LatencyDrift"));
    let firing = {
        let bodies = hook.bodies.lock().expect("lock");
        bodies
            .iter()
            .find(|b| b["status"] == "firing" && b["alerts"][0]["labels"]["alertname"] == "LatencyDrift")
            .cloned()
            .expect("body")
    };
    let alert = &firing["alerts"][0];
    assert_eq!(alert["labels"]["class"], "s");
    let summary = alert["annotations"]["summary"].as_str().unwrap_or("");
    assert!(summary.contains("baseline median") && summary.contains("recent median"), "{summary}");
    assert!(alert["annotations"]["drover_did"].is_string(), "says what Drover already did: {alert}");

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_drover"))
        .args(["alerts", "--json", "--config"])
        .arg(&h.env.config)
        .output()
        .expect("drover alerts");
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert!(doc["firing"].as_array().is_some_and(|a| a.iter().any(|x| x["key"]["name"] == "LatencyDrift")), "{doc}");
    assert!(h.metrics().contains(r#"drover_alerts_firing{alertname="LatencyDrift",class="s""#), "{}", h.metrics());

    // Recovery: back to 0.1 s; the alert resolves after its hold-down.
    events.wait_for("the slow jobs", Duration::from_secs(60), |e| count(e, "succeeded") >= 52).await;
    submit(&h.env, 0.1, 60);
    wait_until("the drift alert resolved at the webhook", Duration::from_secs(90), || {
        hook.has("resolved", "LatencyDrift")
    });

    // The baseline survives a supervisor restart.
    h.stop_supervisor();
    let state = h.env.dir.join("state");
    let saved = std::fs::read_dir(&state).map(|d| d.count()).unwrap_or(0);
    assert!(saved >= 1, "baselines saved under {}", state.display());
}

/// A deploy that makes a class slower on purpose (issue 12: cold start and rebaselining): the
/// operator starts a new baseline, the drift alert resolves without a restart and stays quiet
/// while the class runs at its new speed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_starts_a_new_baseline_after_a_deploy_and_the_drift_alert_resolves() {
    let hook = Receiver::start();
    let (h, mut events, _workers) = baseline("rebaseline", &hook).await;
    submit(&h.env, 0.5, 12);
    wait_until("the drift alert at the webhook", Duration::from_secs(60), || hook.has("firing", "LatencyDrift"));

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_drover"))
        .args(["drift", "rebaseline", "--class", "s", "--reason", "model v2 is slower on purpose", "--config"])
        .arg(&h.env.config)
        .output()
        .expect("drover drift rebaseline");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    wait_until("the drift alert resolved", Duration::from_secs(30), || hook.has("resolved", "LatencyDrift"));
    let fired = |hook: &Receiver| {
        let bodies = hook.bodies.lock().expect("lock");
        bodies
            .iter()
            .filter(|b| b["status"] == "firing" && b["alerts"][0]["labels"]["alertname"] == "LatencyDrift")
            .count()
    };
    let before = fired(&hook);

    // The new speed is the new normal: 30 more jobs at 0.5 s raise nothing.
    submit(&h.env, 0.5, 30);
    events.wait_for("the jobs at the new speed", Duration::from_secs(90), |e| count(e, "succeeded") >= 82).await;
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(fired(&hook), before, "no new drift alert after the new baseline");
    let timeline = std::process::Command::new(env!("CARGO_BIN_EXE_drover"))
        .args(["timeline", "--json", "--config"])
        .arg(&h.env.config)
        .output()
        .expect("drover timeline");
    let entries: Vec<serde_json::Value> = serde_json::from_slice(&timeline.stdout).expect("json");
    assert!(entries.iter().any(|e| e["what"] == "new latency baseline" && e["why"] == "model v2 is slower on purpose"));
}
