//! Bad workers versus bad jobs (issue: quarantine): the incident of the product brief, scaled
//! down. One host's units hang on every job (as an upgraded host with the wrong security settings
//! did) while the other host's units work and restart now and then, as during maintenance.

use crate::harness::{count, wait_until};
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
    add_environment(&bad, "BEHAVE_BAD=1");
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
    // One page for the host, its three units listed inside (issue 12: one page per incident).
    assert_eq!(firing.iter().filter(|a| a["key"]["name"] == "WorkerQuarantined").count(), 1, "{doc}");
    let units = q["annotations"]["units"].as_str().unwrap_or("");
    assert!(["w-1", "w-2", "w-3"].iter().all(|u| units.contains(u)), "{units}");
    let evidence = q["annotations"]["evidence"].as_str().unwrap_or("");
    assert!(evidence.contains("host host-bad") && evidence.contains("rest of the fleet failed 0"), "{evidence}");

    // The fleet's timeline, merged from both supervisors: each host says when it came up, the
    // bad host's first timeouts are there, and no step is listed twice (issue 12).
    let out = drover(&["timeline", "--fleet", "--json", "--config"], &good.config);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let entries: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("json");
    for host in ["host-bad", good.name.as_str()] {
        let started = |e: &&serde_json::Value| e["host"] == host && e["what"] == "supervisor started";
        assert!(entries.iter().any(|e| started(&e)), "{host} came up: {entries:#?}");
    }
    assert!(
        entries
            .iter()
            .any(|e| e["host"] == "host-bad" && e["what"].as_str().unwrap_or("").starts_with("first timeout")),
        "the bad host's first timeouts: {entries:#?}"
    );
    let steps: Vec<String> =
        entries.iter().map(|e| format!("{} {} {} {}", e["host"], e["what"], e["scope"], e["at"])).collect();
    let distinct: std::collections::BTreeSet<&String> = steps.iter().collect();
    assert_eq!(distinct.len(), steps.len(), "each step once: {steps:#?}");

    // An operator releases one; the others stay quarantined.
    let out = drover(&["quarantine", "release", "w-1", "--config"], &bad.config);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // It stays released over several evaluations (500 ms each): the host-wide evidence that
    // covered it is not held against it again before it has run a job.
    std::thread::sleep(Duration::from_secs(3));
    let list = drover(&["quarantine", "list", "--json", "--config"], &bad.config);
    let orders: serde_json::Value = serde_json::from_slice(&list.stdout).expect("json");
    assert_eq!(orders.as_array().map(Vec::len), Some(2), "{orders}");
    assert!(!orders.to_string().contains("@w-1.service"), "{orders}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_outage_pauses_the_class_with_one_alert_and_no_quarantine_then_resumes() {
    // Retry delays here are under a second, and half of them go straight back to the queue: until
    // the pause, a job may fail many times in a second or two, and a failure is charged when it
    // happens, before any verdict says it was the outage's. So the jobs get attempts to spare.
    let class = CLASS
        .replace("hold = \"10m\"", "hold = \"4s\"")
        .replace("timeout = \"2s\"", "timeout = \"30s\"")
        .replace("max_attempts = 10", "max_attempts = 100");
    let mut h = Host::new("outage-pause", &class);
    let outage = h.env.dir.join("dependency-down");
    add_environment(&h, &format!("BEHAVE_FAIL_IF={}", outage.display()));
    let mut events = h.env.events().await;
    let mut verdicts = h.env.verdicts().await;
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
    // The workers are told which jobs failed in the outage, on whatever worker: those failures
    // are charged to no job.
    let v = verdicts
        .wait_for("the outage's verdict", Duration::from_secs(30), |v| {
            v.blamed.iter().any(|b| b.worker == drover::verdicts::ANY_WORKER && b.class == "w" && b.jobs.len() >= 4)
        })
        .await;
    let outage_jobs = &v.blamed.iter().find(|b| b.worker == drover::verdicts::ANY_WORKER).expect("blame").jobs;
    assert!(outage_jobs.iter().all(|j| ids.contains(j)), "only jobs of this outage: {outage_jobs:?}");
    assert!(
        v.blamed.iter().all(|b| b.worker == drover::verdicts::ANY_WORKER),
        "and no worker is blamed: {:?}",
        v.blamed
    );
    // Fast retries make a retry's start overtake the failure before it; no worker died.
    assert!(v.vanished.is_empty(), "no attempt vanished: {:?}", v.vanished);

    // After the hold one unit probes with one job; the dependency is still down, so the probe
    // fails and the class stays paused.
    let timeline =
        || String::from_utf8_lossy(&drover(&["timeline", "--json", "--config"], &h.config).stdout).to_string();
    wait_until("a probe to fail", Duration::from_secs(60), || timeline().contains("the probe failed"));
    let tl = timeline();
    let probes = tl.matches("\"probe with one job\"").count();
    assert_eq!(probes, 1, "one unit probes for the class: {tl}");
    assert!(h.units().values().all(|s| s.health == "cordoned"), "still paused: {:#?}", h.units());

    // The cause goes away; the next probe passes, the class resumes and every job completes.
    std::fs::remove_file(&outage).expect("the dependency is back");
    wait_until("a probe to pass", Duration::from_secs(60), || timeline().contains("the probe passed"));
    events.wait_for("every job", Duration::from_secs(90), |e| count(e, "succeeded") >= 20).await;
    for id in &ids {
        assert!(events.of("succeeded").any(|e| e.job_id.as_deref() == Some(id)), "{id}");
    }
    h.wait_status("back in service", Duration::from_secs(30), |u| u.values().all(|s| s.health == "healthy"));
}

/// Fair charging: a bad host's units time out on every job while a verdict is built against
/// them. Jobs that failed there twice would have used up `max_attempts = 2` (and, on two of its
/// units, `poison_after = 2`); they are not given up on while the host is a suspect, and once it
/// is quarantined those failures are not charged to them. Every job then completes elsewhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_charged_to_a_bad_host_use_up_none_of_the_jobs_attempts() {
    // A strict significance: the quarantine needs eight failures, so some jobs fail there twice.
    let class = CLASS
        .replace("hold = \"10m\"", "hold = \"10m\"\nalpha = 1e-12")
        .replace("max_attempts = 10", "max_attempts = 2")
        .replace("poison_after = 0", "poison_after = 2");
    let mut good = Host::new("fair-charging", &class);
    let mut bad = good.other_host("host-bad", 3);
    add_environment(&bad, "BEHAVE_BAD=1");
    let mut events = good.env.events().await;
    good.start_supervisor();
    bad.start_supervisor();
    for h in [&good, &bad] {
        h.wait_status("3 healthy units", Duration::from_secs(60), |u| {
            u.len() == 3 && u.values().all(|s| s.health == "healthy")
        });
    }
    // The fleet's own record of the class: 30 successes on the good host.
    operator(&bad, "cordon");
    bad.wait_status("cordoned", Duration::from_secs(20), |u| u.values().all(|s| s.health == "cordoned"));
    good.env.submit("w", r#"{"sleep": 0}"#, 30, &[]);
    events.wait_for("the fleet's record", Duration::from_secs(60), |e| count(e, "succeeded") >= 30).await;

    // Only the bad host takes the next jobs.
    operator(&good, "cordon");
    good.wait_status("cordoned", Duration::from_secs(20), |u| u.values().all(|s| s.health == "cordoned"));
    operator(&bad, "undrain");
    let ids = good.env.submit("w", r#"{"sleep": 0}"#, 6, &[]);
    bad.wait_status("the bad host's units quarantined", Duration::from_secs(120), |u| {
        u.len() == 3 && u.values().all(|s| s.health == "quarantined")
    });
    operator(&good, "undrain");

    events.wait_for("every job", Duration::from_secs(120), |e| count(e, "succeeded") >= 36).await;
    let timeouts_on_bad = |id: &str| {
        events
            .of("failed")
            .filter(|e| {
                e.job_id.as_deref() == Some(id) && e.host == "host-bad" && e.outcome.as_deref() == Some("timeout")
            })
            .count()
    };
    let mut twice = 0;
    for id in &ids {
        let ok: Vec<_> = events.of("succeeded").filter(|e| e.job_id.as_deref() == Some(id)).collect();
        assert_eq!(ok.len(), 1, "{id} completed once: {}", events.summary());
        assert_ne!(ok[0].host, "host-bad");
        if timeouts_on_bad(id) >= 2 {
            twice += 1;
        }
    }
    // Eight failures among six jobs before the quarantine: some failed there twice, which
    // without fair charging would have dead-lettered them.
    assert!(twice >= 1, "no job failed twice on the bad host: {}", events.summary());
    let dead = good.env.dead_letters("w").await;
    assert!(dead.is_empty(), "nothing dead-lettered: {:?}", dead.iter().map(|d| &d.detail).collect::<Vec<_>>());
}

/// A job that kills the worker running it (out of memory, say) leaves no failure behind; the
/// supervisors see its attempts vanish, and after `poison_after` dead workers it is
/// dead-lettered as poison while the other jobs flow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_kills_its_workers_is_dead_lettered_as_poison() {
    let class =
        CLASS.replace("poison_after = 0", "poison_after = 2").replace("mode = \"persistent\"", "mode = \"exec\"");
    let class = class
        .replace("command = [\"python3\", \"{handler}\", \"persistent\"]", "command = [\"python3\", \"{handler}\"]");
    let mut h = Host::new("killer-job", &class);
    let mut events = h.env.events().await;
    h.start_supervisor();
    h.wait_status("3 healthy units", Duration::from_secs(60), |u| {
        u.len() == 3 && u.values().all(|s| s.health == "healthy")
    });
    let killer = h.env.submit("w", r#"{"kill_worker": true}"#, 1, &[]).remove(0);
    let ids = h.env.submit("w", r#"{"sleep": 0.2}"#, 10, &[]);
    events
        .wait_for("the killer dead-lettered", Duration::from_secs(120), |e| {
            e.iter().any(|e| e.event.as_str() == "dead_lettered" && e.job_id.as_deref() == Some(killer.as_str()))
        })
        .await;
    events.wait_for("the other jobs", Duration::from_secs(60), |e| count(e, "succeeded") >= 10).await;
    for id in &ids {
        assert!(events.of("succeeded").any(|e| e.job_id.as_deref() == Some(id)), "{id}");
    }
    let dead = h.env.dead_letters("w").await;
    let d = dead.iter().find(|d| d.id.as_deref() == Some(killer.as_str())).expect("the killer's dead letter");
    assert_eq!(d.reason, "poison");
    assert!(d.detail.contains("killed"), "{}", d.detail);
    let kills = h.env.behave("kill").into_iter().filter(|(id, _)| id == &killer).count();
    assert!((2..=5).contains(&kills), "it killed {kills} workers before it was stopped");
    h.wait_status("the units healed", Duration::from_secs(60), |u| {
        u.len() == 3 && u.values().all(|s| s.health == "healthy")
    });
}

/// Probes: when a quarantine's hold runs out, the unit takes exactly one job. While the host is
/// still broken that job fails and the unit is held again, for twice as long; once the host is
/// fixed the next probe passes, the quarantine is lifted and its alert resolves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_probe_holds_the_unit_again_and_a_passing_one_releases_it() {
    // One bad unit among three: a looser significance lets three timeouts suffice.
    let class = CLASS.replace("hold = \"10m\"", "hold = \"3s\"\nalpha = 1e-3").replace("workers = 3", "workers = 2");
    let mut good = Host::new("probe", &class);
    let mut bad = good.other_host("host-bad", 1);
    let broken = bad.env.dir.join("host-bad-misconfigured");
    std::fs::write(&broken, "").expect("the host is misconfigured");
    add_environment(&bad, &format!("BEHAVE_BAD_IF={}", broken.display()));
    let mut events = good.env.events().await;
    good.start_supervisor();
    bad.start_supervisor();
    good.wait_status("2 healthy units", Duration::from_secs(60), |u| {
        u.values().filter(|s| s.health == "healthy").count() == 2
    });
    bad.wait_status("1 healthy unit", Duration::from_secs(60), |u| u.values().any(|s| s.health == "healthy"));
    good.env.submit("w", r#"{"sleep": 0.2}"#, 80, &[]);
    bad.wait_status("quarantined", Duration::from_secs(120), |u| u.values().any(|s| s.health == "quarantined"));
    events.wait_for("the first jobs", Duration::from_secs(120), |e| count(e, "succeeded") >= 80).await;

    // Only the bad host takes the next jobs, so the probe has jobs to take.
    operator(&good, "cordon");
    good.wait_status("cordoned", Duration::from_secs(20), |u| u.values().all(|s| s.health == "cordoned"));
    let ids = good.env.submit("w", r#"{"sleep": 0.2}"#, 4, &[]);
    let timeline =
        |h: &Host| String::from_utf8_lossy(&drover(&["timeline", "--json", "--config"], &h.config).stdout).to_string();
    wait_until("a probe to fail", Duration::from_secs(60), || timeline(&bad).contains("the probe failed"));
    events
        .wait_for("the probe job's timeout", Duration::from_secs(30), |e| {
            e.iter().any(|e| {
                e.event.as_str() == "failed"
                    && e.host == "host-bad"
                    && ids.iter().any(|id| e.job_id.as_ref() == Some(id))
            })
        })
        .await;
    let probe_attempts =
        events.of("started").filter(|e| e.host == "host-bad" && ids.contains(e.job_id.as_ref().unwrap())).count();
    assert_eq!(probe_attempts, 1, "the probe took exactly one job: {}", events.summary());
    bad.wait_status("quarantined again", Duration::from_secs(10), |u| u.values().any(|s| s.health == "quarantined"));

    // A supervisor restart keeps the quarantine and its next probe.
    bad.stop_supervisor();
    bad.start_supervisor();
    bad.wait_status("still quarantined", Duration::from_secs(30), |u| u.values().any(|s| s.health == "quarantined"));

    // The host is fixed; the next probe passes, and the unit takes the rest.
    std::fs::remove_file(&broken).expect("fixed");
    wait_until("a probe to pass", Duration::from_secs(60), || timeline(&bad).contains("the probe passed"));
    events
        .wait_for("the probe's jobs", Duration::from_secs(60), |e| {
            ids.iter().all(|id| e.iter().any(|e| e.event.as_str() == "succeeded" && e.job_id.as_ref() == Some(id)))
        })
        .await;
    for id in &ids {
        let ok: Vec<_> = events.of("succeeded").filter(|e| e.job_id.as_deref() == Some(id)).collect();
        assert_eq!(ok.len(), 1, "{id} completed once");
        assert_eq!(ok[0].host, "host-bad", "the released unit ran the jobs");
    }
    let list = drover(&["quarantine", "list", "--json", "--config"], &bad.config);
    assert_eq!(String::from_utf8_lossy(&list.stdout).trim(), "[]");
    let out = drover(&["alerts", "--json", "--config"], &bad.config);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let firing = doc["firing"].as_array().cloned().unwrap_or_default();
    assert!(!firing.iter().any(|a| a["key"]["name"] == "WorkerQuarantined"), "the alert resolved: {doc}");
    // The timeline tells the story in order.
    let tl = timeline(&bad);
    let at = |what: &str| tl.find(what).unwrap_or_else(|| panic!("{what} in {tl}"));
    assert!(at("quarantine (probe after") < at("quarantine hold over"));
    assert!(at("quarantine hold over") < at("the probe failed"));
    assert!(at("the probe failed") < at("the probe passed"));
    operator(&good, "undrain");
}

/// Adds a variable to the environment of a host's worker units, and installs them again.
pub fn add_environment(h: &Host, var: &str) {
    let text = std::fs::read_to_string(&h.config).expect("config");
    std::fs::write(&h.config, text.replacen("environment = [", &format!("environment = [\"{var}\", "), 1))
        .expect("config");
    let out = drover(&["install-units", "--user", "--config"], &h.config);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// `drover cordon|undrain --host <h>` as an operator would.
fn operator(h: &Host, verb: &str) {
    let out = drover(&[verb, "--host", &h.name, "--reason", "test: one host at a time", "--config"], &h.config);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Retries avoid the host they failed on (issue 12): with quarantine off, one host's units hang
/// on every job; each job that timed out there runs its next attempt on the other host, and the
/// bad host's workers hand such retries back rather than run them again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_runs_on_a_host_it_has_not_failed_on() {
    let class = CLASS.replace("hold = \"10m\"", "enabled = false").replace("max_attempts = 10", "max_attempts = 3");
    let mut good = Host::new("steer", &class);
    let mut bad = good.other_host("host-bad", 3);
    add_environment(&bad, "BEHAVE_BAD=1");
    let mut events = good.env.events().await;
    for h in [&mut good, &mut bad] {
        h.start_supervisor();
    }
    for h in [&good, &bad] {
        h.wait_status("3 healthy units", Duration::from_secs(60), |u| {
            u.len() == 3 && u.values().all(|s| s.health == "healthy")
        });
    }
    // Enough work that the good host stays busy while the bad one keeps taking jobs: retries
    // come back while workers of both hosts are waiting for one.
    let ids = good.env.submit("w", r#"{"sleep": 1.0}"#, 18, &[]);
    events.wait_for("every job", Duration::from_secs(120), |e| count(e, "succeeded") >= 18).await;
    let timed_out_on_bad: Vec<&String> = ids
        .iter()
        .filter(|id| events.of("failed").any(|e| e.job_id.as_deref() == Some(id.as_str()) && e.host == "host-bad"))
        .collect();
    assert!(!timed_out_on_bad.is_empty(), "the bad host took some first attempts");
    for id in &timed_out_on_bad {
        let again = events
            .of("started")
            .filter(|e| e.job_id.as_deref() == Some(id.as_str()) && e.attempt.unwrap_or(1) > 1 && e.host == "host-bad")
            .count();
        assert_eq!(again, 0, "{id} ran again on the host it timed out on");
    }
    assert_eq!(count(&events.all, "dead_lettered"), 0, "no job given up on");
    let handed_back = events.of("requeued").filter(|e| e.outcome.as_deref() == Some("handed_back")).count();
    eprintln!("{} job(s) timed out on the bad host; {handed_back} hand-back(s)", timed_out_on_bad.len());
}
