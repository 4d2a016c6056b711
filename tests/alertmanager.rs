//! Alerts through a real Alertmanager (Debian's `prometheus-alertmanager`, run by the test on
//! its own port, no clustering): two supervisors see the same fleet-wide latency drift and both
//! post it to `/api/v2/alerts`; Alertmanager holds one alert, the receiver behind it is paged
//! once, and once both see the class recover it gets one resolve.

use crate::alerts::{submit, Receiver};
use crate::harness::{count, wait_until};
use crate::supervisor::Host;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// An Alertmanager of the test's own, routing everything to `hook`.
pub struct Alertmanager {
    pub port: u16,
    child: Child,
}

impl Alertmanager {
    pub fn start(dir: &std::path::Path, hook: &Receiver) -> Alertmanager {
        let bin = std::env::var("DROVER_ALERTMANAGER").unwrap_or_else(|_| "prometheus-alertmanager".into());
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
        let conf = dir.join("alertmanager.yml");
        // Grouped by alert, class and host; resolves are flushed every 2 s.
        std::fs::write(
            &conf,
            format!(
                "route:\n  receiver: hook\n  group_by: [alertname, class, host]\n  group_wait: 1s\n  group_interval: 2s\n  repeat_interval: 1h\n\
                 receivers:\n  - name: hook\n    webhook_configs:\n      - url: http://127.0.0.1:{}/hook\n        send_resolved: true\n",
                hook.port
            ),
        )
        .expect("write alertmanager.yml");
        let log = std::fs::File::create(dir.join("alertmanager.log")).expect("log");
        let child = Command::new(&bin)
            .arg(format!("--config.file={}", conf.display()))
            .arg(format!("--storage.path={}", dir.join("am-data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {bin} (scripts/services.sh up installs it): {e}"));
        let am = Alertmanager { port, child };
        wait_until("Alertmanager ready", Duration::from_secs(30), || am.get("/-/ready").is_some());
        am
    }

    fn get(&self, path: &str) -> Option<String> {
        let out = Command::new("curl").args(["-sf", &format!("http://127.0.0.1:{}{path}", self.port)]).output().ok()?;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The active alerts Alertmanager holds.
    pub fn alerts(&self) -> Vec<serde_json::Value> {
        self.get("/api/v2/alerts?active=true&silenced=false&inhibited=false")
            .and_then(|b| serde_json::from_str(&b).ok())
            .unwrap_or_default()
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The fleet-wide drift (no `host` label; the host that ran every job has its own).
fn fleet_drift(x: &serde_json::Value) -> bool {
    x["labels"]["alertname"] == "LatencyDrift" && x["labels"].get("host").is_none()
}

fn is_page(b: &serde_json::Value, status: &str) -> bool {
    b["status"] == status && b["alerts"].as_array().is_some_and(|a| a.iter().any(fleet_drift))
}

fn pages(hook: &Receiver, status: &str) -> usize {
    hook.bodies.lock().expect("lock").iter().filter(|b| is_page(b, status)).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_supervisors_post_one_drift_to_alertmanager_paged_once_and_resolved() {
    let hook = Receiver::start();
    let scratch = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("am-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).expect("dir");
    let am = Alertmanager::start(&scratch, &hook);
    let classes = format!(
        r#"
        alertmanager = ["http://127.0.0.1:{}"]
        alertmanager_resend = "1s"
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
        am.port
    );
    let mut a = Host::new("am", &classes);
    let mut b = a.other_host("am-peer", 0);
    let mut events = a.env.events().await;
    a.start_supervisor();
    b.start_supervisor();
    let _workers = [a.env.worker("s", "s-1"), a.env.worker("s", "s-2")];
    submit(&a.env, 0.1, 40);
    events.wait_for("40 baseline jobs", Duration::from_secs(60), |e| count(e, "succeeded") >= 40).await;
    assert!(am.alerts().is_empty(), "nothing firing on a stable class: {:?}", am.alerts());

    // Five times slower: the fleet's judge (one of the two supervisors) raises the class's
    // drift and posts it; the other does not raise it a second time.
    submit(&a.env, 0.5, 12);
    wait_until("the drift alert paged through Alertmanager", Duration::from_secs(90), || pages(&hook, "firing") >= 1);
    let raised = |h: &Host| h.supervisor_log().contains(r#"ALERT LatencyDrift {"class": "s"}:"#);
    wait_until("the judge raised the drift", Duration::from_secs(30), || raised(&a) || raised(&b));
    assert!(!(raised(&a) && raised(&b)), "the fleet-wide drift raised by one supervisor only");
    let held = am.alerts();
    let drift: Vec<_> = held.iter().filter(|x| fleet_drift(x)).collect();
    assert_eq!(drift.len(), 1, "one alert in Alertmanager whoever reported it: {held:?}");
    let alert = drift[0];
    assert_eq!(alert["labels"]["class"], "s");
    assert!(alert["labels"].get("source_host").is_none(), "no reporter in the identity: {alert}");
    let reporter = alert["annotations"]["reported_by"].as_str().unwrap_or("");
    assert!(reporter == a.name || reporter == b.name, "says who reported it: {alert}");
    let generator = alert["generatorURL"].as_str().unwrap_or("");
    assert!(generator.contains("/alerts?alertname=LatencyDrift"), "points at drover alerts: {generator}");
    assert_eq!(alert["status"]["state"], "active");
    // Its runbook: the page of docs/runbooks/, served by the reporting supervisor by default.
    let runbook = alert["annotations"]["runbook_url"].as_str().unwrap_or("");
    assert!(runbook.ends_with("/runbooks/latency-drift.md"), "a runbook_url: {alert}");
    let path = runbook.split_once("://").and_then(|(_, r)| r.find('/').map(|i| &r[i..])).unwrap_or("");
    let page = if reporter == a.name { a.http_get(path) } else { b.http_get(path) };
    assert!(page.starts_with("HTTP/1.1 200") && page.contains("# LatencyDrift"), "{page}");
    // The generatorURL's page on the supervisor: what `drover alerts` says.
    let page = a.http_get("/alerts?alertname=LatencyDrift");
    assert!(page.starts_with("HTTP/1.1 200") && page.contains("LatencyDrift"), "{page}");
    // The same server: /metrics with its help texts and build, and nothing on other paths.
    let metrics = a.metrics();
    assert!(
        metrics.contains("# HELP drover_jobs_total") && metrics.contains("drover_build_info{version="),
        "{metrics}"
    );
    assert!(a.http_get("/metricsfoo").starts_with("HTTP/1.1 404"), "exact paths only");

    // Recovery: the judge resolves it; Alertmanager sends one resolve.
    events.wait_for("the slow jobs", Duration::from_secs(60), |e| count(e, "succeeded") >= 52).await;
    submit(&a.env, 0.1, 60);
    wait_until("the resolve through Alertmanager", Duration::from_secs(120), || pages(&hook, "resolved") >= 1);
    wait_until("no alert left in Alertmanager", Duration::from_secs(30), || !am.alerts().iter().any(fleet_drift));
    // Until the first resolve, one page: the two supervisors' posts were one alert. (Between
    // the first and the last supervisor's resolve, a re-send of the later one can reopen it;
    // that window is what a fleet-wide condition raised by one supervisor closes.)
    let bodies = hook.bodies.lock().expect("lock").clone();
    let first_resolve = bodies.iter().position(|x| is_page(x, "resolved")).expect("a resolve");
    let firing: Vec<_> = bodies[..first_resolve].iter().filter(|x| is_page(x, "firing")).collect();
    assert_eq!(firing.len(), 1, "paged once for one drift seen by two supervisors: {bodies:?}");
    assert_eq!(firing[0]["alerts"].as_array().map(Vec::len), Some(1), "one alert in the page: {:?}", firing[0]);
    drop(b);
    let _ = std::fs::remove_dir_all(&scratch);
}
