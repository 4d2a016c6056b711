//! Bad workers versus bad jobs (issue: quarantine): the incident of the product brief, scaled
//! down. One host's units hang on every job (as an upgraded host with the wrong security settings
//! did) while the other host's units work and restart now and then, as during maintenance.

use crate::harness::count;
use crate::supervisor::{drover, Host};
use std::time::Duration;

const CLASS: &str = r#"
evaluate_every = "500ms"
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bad_hosts_units_are_quarantined_no_healthy_unit_is_and_every_job_completes() {
    let mut good = Host::new("quarantine", CLASS);
    let mut bad = good.other_host("host-bad", 3);
    let text = std::fs::read_to_string(&bad.config).expect("config");
    std::fs::write(&bad.config, text.replacen("environment = [", "environment = [\"BEHAVE_BAD=1\", ", 1))
        .expect("config");
    let out = drover(&["install-units", "--user", "--config"], &bad.config);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut events = good.env.events().await;
    good.start_supervisor();
    bad.start_supervisor();
    for h in [&good, &bad] {
        h.wait_status("3 healthy units", Duration::from_secs(60), |u| {
            u.len() == 3 && u.values().all(|s| s.health == "healthy")
        });
    }
    let ids = good.env.submit("w", r#"{"sleep": 0.3}"#, 24, &[]);

    // Restart noise on the good host: a worker killed mid-run, as in maintenance.
    events.wait_for("a few jobs done", Duration::from_secs(60), |e| count(e, "succeeded") >= 3).await;
    let unit = good.unit("w-1");
    let pid: i32 = good.show(&unit, "MainPID").parse().expect("pid");
    assert!(pid > 0);
    // SAFETY: kills a worker of ours.
    unsafe { libc::kill(pid, libc::SIGKILL) };

    bad.wait_status("the bad host's units quarantined", Duration::from_secs(120), |u| {
        u.len() == 3 && u.values().all(|s| s.health == "quarantined")
    });
    events.wait_for("every job", Duration::from_secs(120), |e| count(e, "succeeded") >= 24).await;
    for id in &ids {
        let ok: Vec<_> = events.of("succeeded").filter(|e| e.job_id.as_deref() == Some(id)).collect();
        assert_eq!(ok.len(), 1, "{id} completed once");
        assert_ne!(ok[0].host, "host-bad");
    }
    assert!(
        good.units().values().all(|s| s.health != "quarantined"),
        "no healthy unit is quarantined: {:#?}",
        good.units()
    );
    let list = drover(&["quarantine", "list", "--json", "--config"], &good.config);
    assert_eq!(String::from_utf8_lossy(&list.stdout).trim(), "[]");

    // The alert names the host and the evidence.
    let out = drover(&["alerts", "--json", "--config"], &bad.config);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let firing = doc["firing"].as_array().cloned().unwrap_or_default();
    let q = firing.iter().find(|a| a["key"]["name"] == "WorkerQuarantined").unwrap_or_else(|| panic!("{doc}"));
    assert_eq!(q["key"]["labels"]["host"], "host-bad");
    let evidence = q["annotations"]["evidence"].as_str().unwrap_or("");
    assert!(evidence.contains("host host-bad") && evidence.contains("rest of the fleet failed 0"), "{evidence}");

    // An operator releases one; the others stay quarantined.
    let out = drover(&["quarantine", "release", "w-1", "--config"], &bad.config);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let list = drover(&["quarantine", "list", "--json", "--config"], &bad.config);
    let orders: serde_json::Value = serde_json::from_slice(&list.stdout).expect("json");
    assert_eq!(orders.as_array().map(Vec::len), Some(2), "{orders}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_outage_pauses_the_class_with_one_alert_and_no_quarantine_then_resumes() {
    let class = CLASS.replace("hold = \"10m\"", "hold = \"4s\"").replace("timeout = \"2s\"", "timeout = \"30s\"");
    let mut h = Host::new("outage-pause", &class);
    let outage = h.env.dir.join("dependency-down");
    let text = std::fs::read_to_string(&h.config).expect("config");
    std::fs::write(
        &h.config,
        text.replacen("environment = [", &format!("environment = [\"BEHAVE_FAIL_IF={}\", ", outage.display()), 1),
    )
    .expect("config");
    let out = drover(&["install-units", "--user", "--config"], &h.config);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut events = h.env.events().await;
    h.start_supervisor();
    h.wait_status("3 healthy units", Duration::from_secs(60), |u| {
        u.len() == 3 && u.values().all(|s| s.health == "healthy")
    });
    std::fs::write(&outage, "").expect("the dependency goes down");
    let ids = h.env.submit("w", r#"{"sleep": 0}"#, 20, &[]);

    h.wait_status("the class paused", Duration::from_secs(60), |u| u.values().all(|s| s.health == "cordoned"));
    let alerts = drover(&["alerts", "--json", "--config"], &h.config);
    let doc: serde_json::Value = serde_json::from_slice(&alerts.stdout).expect("json");
    let firing = doc["firing"].as_array().cloned().unwrap_or_default();
    assert_eq!(firing.iter().filter(|a| a["key"]["name"] == "ClassPaused").count(), 1, "one alert: {doc}");
    assert!(
        !firing.iter().any(|a| a["key"]["name"] == "WorkerQuarantined"),
        "nobody is quarantined for a shared outage: {doc}"
    );
    let list = drover(&["quarantine", "list", "--json", "--config"], &h.config);
    assert_eq!(String::from_utf8_lossy(&list.stdout).trim(), "[]");

    // The cause goes away; after the hold the class resumes and every job completes.
    std::fs::remove_file(&outage).expect("the dependency is back");
    events.wait_for("every job", Duration::from_secs(90), |e| count(e, "succeeded") >= 20).await;
    for id in &ids {
        assert!(events.of("succeeded").any(|e| e.job_id.as_deref() == Some(id)), "{id}");
    }
    h.wait_status("back in service", Duration::from_secs(30), |u| u.values().all(|s| s.health == "healthy"));
}
