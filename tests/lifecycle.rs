//! The handler's lifecycle inside real worker units (issue 11: never twice at once, and a stop
//! is a drain): `systemctl stop` of a busy unit drains it, a host's units stopped at once (a
//! reboot) requeue their jobs without charge, a worker killed outright takes its handler with
//! it before the job runs elsewhere, and a connection the broker closes kills the attempt at
//! once; outside systemd, an exec-mode worker killed outright takes its handler with it too.
//! Two runs of one job never overlap: each run takes a per-job lock file and logs whom
//! it found holding it (`tests/handlers/behave.py`, `lock_dir`).

use crate::harness::{count, process_alive, wait_until, Env};
use crate::supervisor::{drover, systemctl, Host};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// One line of the runs log: a run that took a job's lock.
#[derive(Debug)]
struct Take {
    job: String,
    pid: i32,
    fence: u64,
    at: f64,
    prev_pid: i32,
    prev: String,
}

fn takes(dir: &Path) -> Vec<Take> {
    std::fs::read_to_string(dir.join("runs.log"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f.len() == 7 && f[0] == "take").then(|| Take {
                job: f[1].into(),
                pid: f[2].parse().unwrap_or(0),
                fence: f[3].parse().unwrap_or(0),
                at: f[4].parse().unwrap_or(0.0),
                prev_pid: f[5].parse().unwrap_or(0),
                prev: f[6].into(),
            })
        })
        .collect()
}

/// A host with two healthy units of the class given, its supervisor running, the test's lock
/// directory and the job events.
async fn two_units_with_locks(name: &str, class: &str) -> (Host, PathBuf, crate::harness::Events) {
    let mut h = Host::new(name, class);
    let locks = lock_dir(&h);
    let events = h.env.events().await;
    h.start_supervisor();
    h.wait_status("2 healthy units", Duration::from_secs(60), healthy(2));
    (h, locks, events)
}

fn lock_dir(h: &Host) -> PathBuf {
    let d = h.env.dir.join("locks");
    std::fs::create_dir_all(&d).expect("lock dir");
    d
}

/// Rewrites the host's drain deadline and reinstalls its units (their stop timeout follows it).
fn set_drain_deadline(h: &Host, deadline: &str) {
    let text = std::fs::read_to_string(&h.config).expect("config");
    std::fs::write(&h.config, text.replace("drain_deadline = \"30s\"", &format!("drain_deadline = \"{deadline}\"")))
        .expect("write");
    let out = drover(&["install-units", "--user", "--config"], &h.config);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

fn healthy(n: usize) -> impl Fn(&std::collections::BTreeMap<String, drover::io::control::UnitStatus>) -> bool {
    move |u| u.len() == n && u.values().all(|s| s.health == "healthy")
}

fn now_s() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// Whether `pid` can still run code of its own: not gone, not a zombie, not exiting
/// (PF_EXITING), no SIGKILL pending (such a process never returns to user space). The same
/// test as the handler's (`behave.py`, `state_of`).
fn can_run(pid: i32) -> bool {
    if !process_alive(pid) {
        return false;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit_once(')').map(|(_, r)| r.split_whitespace().collect()).unwrap_or_default();
    let exiting = fields.get(6).and_then(|f| f.parse::<u64>().ok()).is_none_or(|flags| flags & 0x4 != 0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let killed = status.lines().any(|l| {
        (l.starts_with("SigPnd:") || l.starts_with("ShdPnd:"))
            && u64::from_str_radix(l.split_whitespace().nth(1).unwrap_or("0"), 16).unwrap_or(0) & (1 << 8) != 0
    });
    !exiting && !killed
}

/// Polls until `pid` can run no more code; returns when (wall clock, seconds) that was seen.
fn death_time(pid: i32, limit: Duration) -> Option<f64> {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if !can_run(pid) {
            return Some(now_s());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    None
}

const BOTH_MODES: &str = r#"
[classes.e]
mode = "exec"
command = ["python3", "{handler}"]
timeout = "60s"
workers = 1
[classes.p]
mode = "persistent"
command = ["python3", "{handler}", "persistent"]
timeout = "60s"
workers = 1
"#;

/// Issue 11: `systemctl stop` of a busy unit failed its job (the handler got systemd's SIGTERM
/// too) and charged an attempt. Now the job finishes within the drain deadline, in place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemctl_stop_of_a_busy_unit_drains_it_in_exec_and_persistent_mode() {
    let mut h = Host::new("life-stop", BOTH_MODES);
    let mut events = h.env.events().await;
    h.start_supervisor();
    h.wait_status("2 healthy units", Duration::from_secs(60), healthy(2));
    let e = h.env.submit("e", r#"{"sleep": 3}"#, 1, &[])[0].clone();
    let p = h.env.submit("p", r#"{"sleep": 3}"#, 1, &[])[0].clone();
    events.wait_for("both jobs running", Duration::from_secs(30), |ev| count(ev, "started") >= 2).await;
    let (ue, up) = (h.unit("e-1"), h.unit("p-1"));
    let out = systemctl(&["stop", &ue, &up]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    events.wait_for("both jobs done", Duration::from_secs(40), |ev| count(ev, "succeeded") >= 2).await;
    for (id, unit) in [(&e, &ue), (&p, &up)] {
        let ok = events.of("succeeded").find(|ev| ev.job_id.as_deref() == Some(id)).expect("succeeded");
        assert_eq!(&ok.unit, unit, "finished in place, on the stopped unit");
        assert_eq!(ok.attempt, Some(1), "no attempt charged");
    }
    assert_eq!(count(&events.all, "failed"), 0, "a stop is a drain, not a failure: {}", events.summary());
    assert_eq!(count(&events.all, "requeued"), 0, "they had time to finish: {}", events.summary());
}

/// A reboot: every unit of the host stopped at once, with jobs that outlast the drain deadline.
/// Each is requeued without charge and completes later; nothing is failed or quarantined.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_units_of_a_host_stopped_at_once_requeue_every_job_uncharged() {
    let mut h = Host::new("life-reboot", &BOTH_MODES.replace("workers = 1\n[classes.p]", "workers = 2\n[classes.p]"));
    set_drain_deadline(&h, "1s");
    let mut events = h.env.events().await;
    h.start_supervisor();
    h.wait_status("3 healthy units", Duration::from_secs(60), healthy(3));
    let mut ids = h.env.submit("e", r#"{"sleep": 8}"#, 2, &[]);
    ids.extend(h.env.submit("p", r#"{"sleep": 8}"#, 1, &[]));
    events.wait_for("3 jobs running", Duration::from_secs(30), |ev| count(ev, "started") >= 3).await;
    // The host goes down: its supervisor first (as at shutdown), then every worker unit at once.
    h.stop_supervisor();
    let out = systemctl(&["stop", &format!("{}@*", h.prefix)]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    events.wait_for("3 requeues", Duration::from_secs(30), |ev| count(ev, "requeued") >= 3).await;
    for e in events.of("requeued") {
        assert!(e.reason.as_deref().unwrap_or("").contains("drain deadline"), "{e:?}");
    }
    assert_eq!(count(&events.all, "failed"), 0, "{}", events.summary());
    // The host comes back: the jobs complete, on their first attempt.
    h.start_supervisor();
    events.wait_for("all 3 jobs", Duration::from_secs(60), |ev| count(ev, "succeeded") >= 3).await;
    for id in &ids {
        let ok = events.of("succeeded").find(|e| e.job_id.as_deref() == Some(id)).expect("succeeded");
        assert_eq!(ok.attempt, Some(1), "no attempt charged: {ok:?}");
    }
    assert_eq!(count(&events.all, "failed"), 0, "{}", events.summary());
    let status = h.status().expect("status");
    assert!(status.units.iter().all(|u| u.health != "quarantined"), "{:?}", status.units);
    let q = drover(&["quarantine", "list", "--config"], &h.config);
    assert!(!String::from_utf8_lossy(&q.stdout).contains(&h.prefix), "{}", String::from_utf8_lossy(&q.stdout));
}

/// Issue 11: after a worker was SIGKILLed, its handler (which catches SIGTERM to save its work)
/// ran on while the broker had already handed the job to another worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_a_busy_units_main_process_never_lets_two_runs_overlap() {
    let (h, locks, mut events) = two_units_with_locks(
        "life-kill",
        r#"
[classes.p]
mode = "persistent"
command = ["python3", "{handler}", "persistent"]
timeout = "60s"
workers = 2
"#,
    )
    .await;
    let payload = format!(r#"{{"sleep": 6, "term_sleep": 5, "lock_dir": "{}"}}"#, locks.display());
    let id = h.env.submit("p", &payload, 1, &[])[0].clone();
    wait_until("the first run to take its lock", Duration::from_secs(30), || takes(&locks).len() == 1);
    events.wait_for("the job to start", Duration::from_secs(10), |ev| count(ev, "started") >= 1).await;
    let unit = events.of("started").next().expect("started").unit.clone();
    let pid: i32 = h.show(&unit, "MainPID").parse().expect("pid");
    let first = takes(&locks).remove(0);
    let killed_at = now_s();
    // SAFETY: kills the worker's main process, as the OOM killer would.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let died = death_time(first.pid, Duration::from_secs(10)).expect("the handler dies with its worker");
    events.wait_for("the job to complete", Duration::from_secs(60), |ev| count(ev, "succeeded") >= 1).await;
    let runs = takes(&locks);
    assert_eq!(runs.len(), 2, "{runs:?}");
    let second = &runs[1];
    assert_eq!((second.job.as_str(), second.prev_pid), (id.as_str(), first.pid), "{runs:?}");
    assert_eq!(second.prev, "dead", "the second run began while the first still ran: {runs:?}");
    assert!(second.fence > first.fence, "a later attempt carries a larger fence: {runs:?}");
    eprintln!(
        "kill -9: first run seen dead (by a 1 ms poll) {:.1} ms after the worker was killed; second run took the lock \
         {:.1} ms after that (it saw the first one dead)",
        (died - killed_at) * 1000.0,
        (second.at - died) * 1000.0
    );
}

/// Exec mode starts each handler without fork (`io::handler`'s spawn: the death signal, the
/// process group and the pipes set up by a vfork-like child). A worker killed outright,
/// outside systemd (nothing else would kill its handler), takes its handler with it; the
/// handler ran in a process group of its own, and the job runs elsewhere, not overlapping.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_an_exec_mode_worker_outside_systemd_takes_its_handler_with_it() {
    let env = Env::new(
        "life-exec-kill",
        r#"
[classes.e]
mode = "exec"
command = ["python3", "{handler}"]
timeout = "60s"
"#,
    );
    let locks = env.dir.join("locks");
    std::fs::create_dir_all(&locks).expect("lock dir");
    let mut events = env.events().await;
    let mut w1 = env.worker("e", "e-1");
    // The first run would work on for 30 s: a handler that outlived its worker would be seen.
    let payload = format!(r#"{{"first_sleep": 30, "sleep": 1, "term_sleep": 5, "lock_dir": "{}"}}"#, locks.display());
    let id = env.submit("e", &payload, 1, &[])[0].clone();
    wait_until("the first run to take its lock", Duration::from_secs(30), || takes(&locks).len() == 1);
    let first = takes(&locks).remove(0);
    assert_eq!(process_group(first.pid), Some(first.pid), "the handler leads a process group of its own");
    w1.signal(libc::SIGKILL);
    w1.wait_exit(Duration::from_secs(10)).expect("the worker is killed");
    death_time(first.pid, Duration::from_secs(10)).expect("the handler dies with its worker");
    let _w2 = env.worker("e", "e-2");
    events.wait_for("the job to complete", Duration::from_secs(60), |ev| count(ev, "succeeded") >= 1).await;
    let ok = events.of("succeeded").next().expect("succeeded");
    assert_eq!((ok.job_id.as_deref(), ok.unit.as_str()), (Some(id.as_str()), "e-2"));
    let runs = takes(&locks);
    assert_eq!(runs.len(), 2, "{runs:?}");
    let second = &runs[1];
    assert_eq!((second.job.as_str(), second.prev_pid), (id.as_str(), first.pid), "{runs:?}");
    assert_eq!(second.prev, "dead", "the second run began while the first still ran: {runs:?}");
    assert!(second.fence > first.fence, "a later attempt carries a larger fence: {runs:?}");
}

/// The process group of `pid` (`/proc/<pid>/stat`).
fn process_group(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.split_whitespace().nth(2)?.parse().ok()
}

/// The broker closes a busy worker's connection while the worker lives: the broker requeues
/// the job at once, so the worker kills its attempt at once (SIGKILL, no TERM grace). The
/// other worker is in exec mode, so its run starts a Python interpreter (tens of ms) before it
/// takes the lock: the test asserts the order Drover promises with that margin and prints the
/// measured gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_closed_by_the_broker_kills_the_attempt_before_it_runs_elsewhere() {
    let (h, locks, mut events) = two_units_with_locks(
        "life-close",
        r#"
[classes.e]
mode = "exec"
command = ["python3", "{handler}"]
timeout = "300s"
workers = 2
"#,
    )
    .await;
    // rabbitmqctl takes a second or two to start, and over 30 s on a loaded machine (the
    // first run then finished on its own): the first run outlasts any such wait.
    let payload = format!(r#"{{"first_sleep": 150, "sleep": 1, "term_sleep": 5, "lock_dir": "{}"}}"#, locks.display());
    h.env.submit("e", &payload, 1, &[]);
    wait_until("the first run to take its lock", Duration::from_secs(30), || takes(&locks).len() == 1);
    events.wait_for("the job to start", Duration::from_secs(10), |ev| count(ev, "started") >= 1).await;
    let unit = events.of("started").next().expect("started").unit.clone();
    let first = takes(&locks).remove(0);
    let name = format!("drover work {unit}");
    let conns = connection_pids();
    let pids: Vec<String> = conns.iter().filter(|(n, _)| *n == name).map(|(_, p)| p.clone()).collect();
    assert!(!pids.is_empty(), "no connection {name}: {conns:?}");
    // Watch the first run from before the close: rabbitmqctl returns well after the close.
    let watched = first.pid;
    let watcher = std::thread::spawn(move || death_time(watched, Duration::from_secs(160)));
    let closing = now_s();
    for pid in &pids {
        close_connection(pid);
    }
    let died = watcher.join().expect("watcher").expect("the attempt is killed");
    events.wait_for("the job to complete", Duration::from_secs(60), |ev| count(ev, "succeeded") >= 1).await;
    let runs = takes(&locks);
    assert_eq!(runs.len(), 2, "{runs:?}");
    let second = &runs[1];
    assert_eq!(second.prev_pid, first.pid, "{runs:?}");
    assert_eq!(second.prev, "dead", "the second run began while the first still ran: {runs:?}");
    eprintln!(
        "close_connection: first run seen dead (by a 1 ms poll) {:.1} ms after rabbitmqctl was started; \
         second run took the lock {:.1} ms after that (it saw the first one dead)",
        (died - closing) * 1000.0,
        (second.at - died) * 1000.0
    );
}

/// The broker's connection pids (`<rabbit@host.1.2.3>`) by the name the client gave them.
fn connection_pids() -> Vec<(String, String)> {
    let out = std::process::Command::new("rabbitmqctl")
        .args(["-q", "--no-table-headers", "list_connections", "pid", "client_properties"])
        .output()
        .expect("rabbitmqctl");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // One line per connection: its pid, a tab, its client properties, which carry the
    // connection name as `{"connection_name","..."}`.
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (pid, props) = l.split_once('\t')?;
            let name = props.split("{\"connection_name\",\"").nth(1)?.split('"').next()?;
            Some((name.to_string(), pid.trim().to_string()))
        })
        .collect()
}

fn close_connection(pid: &str) {
    let out = std::process::Command::new("rabbitmqctl")
        .args(["-q", "close_connection", pid, "issue 11 test: the broker drops the connection"])
        .output()
        .expect("rabbitmqctl");
    assert!(out.status.success(), "{pid}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Issue 11: a restarted supervisor raised the misconfigured alert again for a unit it had
/// already alerted on. What was alerted is kept in the state directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_misconfigured_unit_is_alerted_once_across_supervisor_restarts() {
    let mut h = Host::new(
        "life-misconf",
        r#"
[classes.m]
mode = "exec"
command = ["python3", "{handler}"]
workers = 1
preflight = [["test", "-w", "/nonexistent/model-cache"]]
"#,
    );
    let unit = h.unit("m-1");
    let alerts = |h: &Host| {
        let tl = drover(&["timeline", "--json", "--config"], &h.config);
        String::from_utf8_lossy(&tl.stdout).matches("unit misconfigured").count()
    };
    h.start_supervisor();
    h.wait_status("the unit misconfigured", Duration::from_secs(60), |u| {
        u.get(&unit).is_some_and(|s| s.health == "misconfigured")
    });
    wait_until("the alert in the timeline", Duration::from_secs(10), || alerts(&h) == 1);
    for _ in 0..2 {
        h.stop_supervisor();
        h.start_supervisor();
        h.wait_status("the new supervisor's view", Duration::from_secs(60), |u| {
            u.get(&unit).is_some_and(|s| s.health == "misconfigured")
        });
        // A few reconcile passes (resync every 5 s).
        std::thread::sleep(Duration::from_secs(2));
        let status = h.status().expect("status");
        assert!(
            status.alerts.iter().any(|a| a.kind == "misconfigured" && a.unit == unit),
            "still shown: {:?}",
            status.alerts
        );
    }
    assert_eq!(alerts(&h), 1, "one alert across restarts:\n{}", h.supervisor_log());
}
