//! The maintenance-day incident of the product brief (issue 12), scaled down in time: three
//! hosts warm up, every host restarts its units one by one (routine maintenance: no quarantine,
//! no page), then one host comes back hanging every job until its timeout while its preflight
//! passes. It must be cordoned from its running jobs' ages before the first of them reaches
//! its timeout, every job must complete (none dead-lettered), and exactly one page must name
//! the host. Then a second host breaks another way (every job fails fast) and is caught too.

use crate::harness::{count, wait_until};
use crate::quarantine::add_environment;
use crate::supervisor::{drover, systemctl, Host};
use std::time::Duration;

const CLASS: &str = r#"
evaluate_every = "500ms"
[quarantine]
hold = "10m"
min_reference = 40
cordon_alpha = 1e-4
alpha = 1e-6
max_quarantined = 0.7
[classes.w]
mode = "persistent"
command = ["python3", "{handler}", "persistent"]
timeout = "20s"
max_attempts = 2
poison_after = 0
retry_base = "300ms"
retry_max = "1s"
workers = 3
"#;

const JOB: &str = r#"{"sleep": 1.5}"#;

/// The host's firing alerts of critical severity that name it: its pages.
fn pages(h: &Host) -> Vec<serde_json::Value> {
    let out = drover(&["alerts", "--json", "--config"], &h.config);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let firing = doc["firing"].as_array().cloned().unwrap_or_default();
    firing
        .into_iter()
        .filter(|a| a["severity"] == "critical" && a["key"]["labels"]["host"] == h.name.as_str())
        .collect()
}

/// When the host's timeline first says its units were cordoned or quarantined (epoch ms).
fn taken_out_at(h: &Host) -> Option<i64> {
    let out = drover(&["timeline", "--json", "--config"], &h.config);
    let entries: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
    entries
        .iter()
        .filter(|e| e["who"] == "drover")
        .filter(|e| e["what"] == "cordon" || e["what"].as_str().is_some_and(|w| w.starts_with("quarantine")))
        .filter_map(|e| e["at_ms"].as_i64())
        .min()
}

fn out_of_service(h: &Host) -> bool {
    let u = h.units();
    u.len() == 3 && u.values().all(|s| matches!(s.health.as_str(), "cordoned" | "quarantined" | "probing"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_that_comes_back_hanging_is_cordoned_before_its_first_timeout_and_one_page_names_it() {
    let mut a = Host::new("incident", CLASS);
    let mut b = a.other_host("host-b", 3);
    let mut c = a.other_host("host-c", 3);
    let (hang, fail) = (a.env.dir.join("b-broken"), a.env.dir.join("c-broken"));
    add_environment(&b, &format!("BEHAVE_BAD_IF={}", hang.display()));
    add_environment(&c, &format!("BEHAVE_FAIL_IF={}", fail.display()));
    let mut events = a.env.events().await;
    for h in [&mut a, &mut b, &mut c] {
        h.start_supervisor();
    }
    for h in [&a, &b, &c] {
        h.wait_status("3 healthy units", Duration::from_secs(60), |u| {
            u.len() == 3 && u.values().all(|s| s.health == "healthy")
        });
    }

    // Warm-up: the fleet's record of the class.
    a.env.submit("w", JOB, 60, &[]);
    events.wait_for("the warm-up", Duration::from_secs(90), |e| count(e, "succeeded") >= 60).await;

    // Routine maintenance: every host restarts its units, one host at a time, under load.
    a.env.submit("w", JOB, 24, &[]);
    for h in [&a, &b, &c] {
        for i in 1..=3 {
            let out = systemctl(&["restart", &h.unit(&format!("w-{i}"))]);
            assert!(out.status.success(), "restart: {}", String::from_utf8_lossy(&out.stderr));
        }
        h.wait_status("back after the restart", Duration::from_secs(60), |u| {
            u.len() == 3 && u.values().all(|s| s.health == "healthy")
        });
    }
    events.wait_for("the jobs around the restarts", Duration::from_secs(90), |e| count(e, "succeeded") >= 84).await;
    for h in [&a, &b, &c] {
        assert!(pages(h).is_empty(), "no page for routine restarts on {}: {:?}", h.name, pages(h));
        assert!(h.units().values().all(|s| s.health == "healthy"), "nothing taken out on {}", h.name);
    }

    // Host b comes back wrong: every job hangs until its timeout; its preflight passes.
    std::fs::write(&hang, "").expect("break host b");
    let fault_ms = drover::io::clock::now_ms();
    a.env.submit("w", JOB, 30, &[]);
    b.wait_status("host b out of service", Duration::from_secs(60), |_| out_of_service(&b));
    let out_at = taken_out_at(&b).expect("the timeline says when");
    let hanging = |e: &drover::events::JobEvent| {
        e.event.as_str() == "started"
            && e.host == "host-b"
            && drover::job::parse_rfc3339_ms(&e.at).is_some_and(|at| at >= fault_ms)
    };
    events.wait_for("host b's hanging jobs", Duration::from_secs(10), |e| e.iter().any(hanging)).await;
    let first_hang = events
        .all
        .iter()
        .filter(|e| hanging(e))
        .filter_map(|e| drover::job::parse_rfc3339_ms(&e.at))
        .min()
        .expect("host b started jobs after it broke");
    assert!(
        out_at < first_hang + 20_000,
        "cordoned {} ms after its first hanging job started: not before that job's 20 s timeout",
        out_at - first_hang
    );
    eprintln!(
        "host b cordoned {:.1} s after its first hanging job started (timeout 20 s)",
        (out_at - first_hang) as f64 / 1000.0
    );
    events.wait_for("every job", Duration::from_secs(120), |e| count(e, "succeeded") >= 114).await;
    assert_eq!(count(&events.all, "dead_lettered"), 0, "no job given up on: {}", events.summary());
    wait_until("one page for host b", Duration::from_secs(30), || pages(&b).len() == 1);
    let page = pages(&b).remove(0);
    assert!(page["annotations"]["evidence"].as_str().is_some_and(|e| !e.is_empty()), "with its evidence: {page}");
    for h in [&a, &c] {
        assert!(pages(h).is_empty(), "no page for {}: {:?}", h.name, pages(h));
    }

    // Host c breaks another way: every job fails at once.
    std::fs::write(&fail, "").expect("break host c");
    a.env.submit("w", JOB, 20, &[]);
    c.wait_status("host c out of service", Duration::from_secs(60), |_| out_of_service(&c));
    events.wait_for("every job", Duration::from_secs(120), |e| count(e, "succeeded") >= 134).await;
    assert_eq!(count(&events.all, "dead_lettered"), 0, "no job given up on: {}", events.summary());
    wait_until("one page for host c", Duration::from_secs(30), || pages(&c).len() == 1);
    assert_eq!(pages(&b).len(), 1, "host b's page stands, still one");
}

/// Shadow mode (issue 12, `quarantine.enforce = false`): the same hanging host is only written
/// down: the timeline says what would have been done and a warning says so, while its units
/// keep taking jobs until their jobs fail for real.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_shadow_mode_a_hanging_host_is_reported_not_cordoned() {
    let class = CLASS.replace("max_quarantined = 0.7", "max_quarantined = 0.7\nenforce = false");
    let mut a = Host::new("shadow", &class);
    let mut b = a.other_host("host-b", 3);
    let hang = a.env.dir.join("b-broken");
    add_environment(&b, &format!("BEHAVE_BAD_IF={}", hang.display()));
    let mut events = a.env.events().await;
    for h in [&mut a, &mut b] {
        h.start_supervisor();
    }
    for h in [&a, &b] {
        h.wait_status("3 healthy units", Duration::from_secs(60), |u| {
            u.len() == 3 && u.values().all(|s| s.health == "healthy")
        });
    }
    // Enough that the rest of the fleet (host a alone) has its reference of 40 attempts.
    a.env.submit("w", JOB, 100, &[]);
    events.wait_for("the warm-up", Duration::from_secs(90), |e| count(e, "succeeded") >= 100).await;
    std::fs::write(&hang, "").expect("break host b");
    let fault_ms = drover::io::clock::now_ms();
    a.env.submit("w", JOB, 12, &[]);
    // What the timeline says of host b since it broke (a loaded machine can make the warm-up's
    // jobs look slow for a moment: a shadow cordon lifted then is not this one).
    let said_since_fault = |h: &Host| {
        let out = drover(&["timeline", "--json", "--config"], &h.config);
        let entries: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
        entries
            .iter()
            .filter(|e| e["at_ms"].as_i64().is_some_and(|at| at >= fault_ms))
            .map(|e| e.to_string())
            .collect::<String>()
    };
    wait_until("shadow mode's word", Duration::from_secs(15), || {
        said_since_fault(&b).contains("shadow mode: would cordon")
    });
    let units = b.units();
    assert!(units.values().all(|s| s.health == "healthy"), "nothing cordoned in shadow mode: {units:#?}");
    let shadow_warning = || {
        let out = drover(&["alerts", "--json", "--config"], &b.config);
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        let firing = doc["firing"].as_array().cloned().unwrap_or_default();
        firing.iter().any(|a| a["key"]["name"] == "HostSuspect" && a["annotations"]["shadow"].is_string())
    };
    wait_until("a warning saying what would have been done", Duration::from_secs(10), shadow_warning);
    std::fs::remove_file(&hang).expect("fix host b");
}
