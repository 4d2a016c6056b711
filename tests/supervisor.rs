//! The supervisor against a real systemd user manager and a real broker: staggered starts,
//! healing with jittered backoff, failing and misconfigured units, adoption on restart, scale
//! down with drains, and a bus that goes away.

use crate::harness::{count, wait_until, Env};
use drover::io::control::{StatusReport, UnitStatus};
use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The `[systemd]` and `[supervisor]` sections of a test host: its own unit template name, the
/// user bus, fast restarts. Sandboxing that needs systemd as PID 1 is relaxed (README).
const HOST: &str = r#"
[systemd]
bus = "user"
unit_prefix = "dw-{id}"
relax_sandbox = ["ProtectKernelTunables", "ProtectKernelLogs", "ProtectControlGroups", "ProtectProc", "ProcSubset"]
environment = ["BEHAVE_LOG={behave_log}"]
writable = ["{dir}"]
[metrics]
listen = "127.0.0.1:0"
[supervisor]
start_rate = 4
restart_base = "1s"
restart_max = "4s"
failing_after = 3
stable_after = "20s"
resync = "5s"
[worker]
drain_deadline = "30s"
kill_grace = "2s"
[alerts]
state_dir = "{dir}/state"
"#;

pub struct Host {
    pub env: std::rc::Rc<Env>,
    /// This host's configuration (hosts made by `other_host` share the env, its broker prefix
    /// and its test directory).
    pub config: std::path::PathBuf,
    pub name: String,
    pub prefix: String,
    supervisor: Option<Child>,
}

impl Host {
    pub fn new(name: &str, classes: &str) -> Host {
        Host::make(name, classes, false)
    }

    /// For a test that takes the bus away: it runs alone, as the broker-outage test does.
    pub fn exclusive(name: &str, classes: &str) -> Host {
        Host::make(name, classes, true)
    }

    fn make(name: &str, classes: &str, exclusive: bool) -> Host {
        let text = format!("{}\n{classes}", relax_for_checkout(HOST));
        let env = if exclusive { Env::exclusive(name, &text) } else { Env::new(name, &text) };
        let text = std::fs::read_to_string(&env.config).expect("config");
        let prefix = text
            .lines()
            .find_map(|l| l.strip_prefix("unit_prefix = \"").and_then(|r| r.strip_suffix('"')))
            .expect("unit prefix")
            .to_string();
        let out = drover(&["install-units", "--user", "--config"], &env.config);
        assert!(out.status.success(), "install-units: {}", String::from_utf8_lossy(&out.stderr));
        let name = drover::io::config_file::load(&env.config).expect("config").host;
        let config = env.config.clone();
        Host { env: std::rc::Rc::new(env), config, name, prefix, supervisor: None }
    }

    /// A second "host" on this machine: the same broker and job queues, its own host name,
    /// supervisor, unit template, control socket and state. (One systemd user manager serves
    /// both: a machine can run only one; the unit templates keep them apart.)
    pub fn other_host(&self, name: &str, workers: u32) -> Host {
        let text = std::fs::read_to_string(&self.config).expect("config");
        let prefix = format!("{}-{name}", self.prefix);
        let dir = self.env.dir.join(name);
        std::fs::create_dir_all(&dir).expect("dir");
        let text = format!(
            "host = \"{name}\"\n{}",
            text.replace(&format!("unit_prefix = \"{}\"", self.prefix), &format!("unit_prefix = \"{prefix}\""))
                .replace("[supervisor]\n", &format!("[supervisor]\nsocket = \"{}/control.sock\"\n", dir.display()))
                .replace(
                    &format!("state_dir = \"{}/state\"", self.env.dir.display()),
                    &format!("state_dir = \"{}/state\"", dir.display()),
                )
        );
        let text = regex_workers(&text, workers);
        let config = dir.join("drover.toml");
        std::fs::write(&config, text).expect("write");
        let out = drover(&["install-units", "--user", "--config"], &config);
        assert!(out.status.success(), "install-units: {}", String::from_utf8_lossy(&out.stderr));
        Host { env: self.env.clone(), config, name: name.into(), prefix, supervisor: None }
    }

    pub fn start_supervisor(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.config.with_file_name("supervisor.log"))
            .expect("log");
        let child = Command::new(env!("CARGO_BIN_EXE_drover"))
            .args(["supervise", "--config"])
            .arg(&self.config)
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start the supervisor");
        self.supervisor = Some(child);
    }

    pub fn stop_supervisor(&mut self) {
        if let Some(mut c) = self.supervisor.take() {
            // SAFETY: signals our own child.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let _ = c.wait();
        }
    }

    /// Kills the supervisor at once (SIGKILL): nothing of it says goodbye to the broker.
    pub fn kill_supervisor(&mut self) {
        if let Some(mut c) = self.supervisor.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn unit(&self, instance: &str) -> String {
        format!("{}@{instance}.service", self.prefix)
    }

    /// `drover status --json`, or None while the supervisor does not answer.
    pub fn status(&self) -> Option<StatusReport> {
        let out = drover(&["status", "--json", "--config"], &self.config);
        out.status.success().then(|| serde_json::from_slice(&out.stdout).expect("status is JSON"))
    }

    pub fn units(&self) -> BTreeMap<String, UnitStatus> {
        self.status().map(|s| s.units.into_iter().map(|u| (u.unit.clone(), u)).collect()).unwrap_or_default()
    }

    pub fn wait_status(&self, what: &str, limit: Duration, cond: impl Fn(&BTreeMap<String, UnitStatus>) -> bool) {
        let end = Instant::now() + limit;
        loop {
            let units = self.units();
            if cond(&units) {
                return;
            }
            if Instant::now() > end {
                panic!(
                    "timed out after {limit:?} waiting for {what}; status: {units:#?}\nsupervisor log:\n{}",
                    self.supervisor_log()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn supervisor_log(&self) -> String {
        std::fs::read_to_string(self.config.with_file_name("supervisor.log")).unwrap_or_default()
    }

    /// Scrapes the supervisor's `/metrics` (its address is in its log).
    pub fn metrics(&self) -> String {
        self.http_get("/metrics")
    }

    /// One GET from the supervisor's HTTP server: the whole response, head and body.
    pub fn http_get(&self, path: &str) -> String {
        use std::io::{Read, Write};
        let log = self.supervisor_log();
        let addr = log
            .lines()
            .rev()
            .find_map(|l| l.split("metrics on http://").nth(1).and_then(|r| r.split('/').next()))
            .expect("the supervisor logs its metrics address");
        let mut s = std::net::TcpStream::connect(addr).expect("connect to the HTTP server");
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).expect("request");
        let mut text = String::new();
        s.read_to_string(&mut text).expect("response");
        text
    }

    pub fn show(&self, unit: &str, prop: &str) -> String {
        let out = systemctl(&["show", unit, "-p", prop, "--value"]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    pub fn main_pids(&self, n: u32, class: &str) -> Vec<String> {
        (1..=n).map(|i| self.show(&self.unit(&format!("{class}-{i}")), "MainPID")).collect()
    }

    /// Rewrites `workers = A` to `workers = B` in the configuration.
    pub fn set_workers(&self, from: u32, to: u32) {
        let text = std::fs::read_to_string(&self.config).expect("config");
        std::fs::write(&self.config, text.replace(&format!("workers = {from}"), &format!("workers = {to}")))
            .expect("write");
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- supervisor log ----\n{}", self.supervisor_log());
        }
        self.stop_supervisor();
        let pattern = format!("{}@*", self.prefix);
        systemctl(&["kill", "--signal=SIGKILL", &pattern]);
        systemctl(&["stop", &pattern]);
        systemctl(&["reset-failed", &pattern]);
        let dir = drover::io::units::unit_dir(false);
        match drover::io::config_file::load(&self.config) {
            Ok(cfg) => drover::io::units::uninstall(&cfg, &dir),
            Err(_) => drop(std::fs::remove_file(dir.join(format!("{}@.service", self.prefix)))),
        }
    }
}

pub fn drover(args: &[&str], config: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_drover")).args(args).arg(config).output().expect("run drover")
}

fn regex_workers(text: &str, workers: u32) -> String {
    text.lines()
        .map(|l| if l.trim_start().starts_with("workers = ") { format!("workers = {workers}") } else { l.to_string() })
        .collect::<Vec<_>>()
        .join("\n")
}

pub fn systemctl(args: &[&str]) -> std::process::Output {
    Command::new("systemctl").arg("--user").args(args).output().expect("systemctl")
}

const PERSISTENT: &str = r#"
[classes.w]
mode = "persistent"
command = ["python3", "{handler}", "persistent"]
timeout = "60s"
workers = 8
"#;

fn all_healthy(n: usize) -> impl Fn(&BTreeMap<String, UnitStatus>) -> bool {
    move |u| u.len() == n && u.values().all(|s| s.health == "healthy")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_from_zero_to_eight_starts_all_spread_in_time() {
    let mut h = Host::new("sup-scale", PERSISTENT);
    h.start_supervisor();
    h.wait_status("8 healthy units", Duration::from_secs(60), all_healthy(8));
    let mut starts: Vec<u64> = (1..=8)
        .map(|i| h.show(&h.unit(&format!("w-{i}")), "ExecMainStartTimestampMonotonic").parse().expect("timestamp"))
        .collect();
    starts.sort();
    let spread = Duration::from_micros(starts[7] - starts[0]);
    // 4 starts a second: 8 units need at least 1.75 s; all at once would be a few ms. The
    // processes' own start times lag the supervisor's calls by a varying fork-and-exec time on
    // a busy machine (once seen 1.49997 s), so the bound leaves room for that.
    assert!(spread >= Duration::from_millis(1000), "8 starts within {spread:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_is_restarted_after_a_delay_and_its_job_completes() {
    let mut h = Host::new("sup-kill", &PERSISTENT.replace("workers = 8", "workers = 2"));
    let mut events = h.env.events().await;
    h.start_supervisor();
    h.wait_status("2 healthy units", Duration::from_secs(60), all_healthy(2));
    let id = h.env.submit("w", r#"{"sleep": 4}"#, 1, &[])[0].clone();
    events.wait_for("the job to start", Duration::from_secs(30), |e| count(e, "started") >= 1).await;
    let unit = events.of("started").next().expect("started").unit.clone();
    let pid: i32 = h.show(&unit, "MainPID").parse().expect("pid");
    assert!(pid > 0, "{unit} has no main process");
    let killed_at = Instant::now();
    // SAFETY: kills the worker's main process, as the OOM killer would.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    h.wait_status("the killed unit back and healthy", Duration::from_secs(30), |u| {
        u.get(&unit).is_some_and(|s| s.restarts == 1 && s.health == "healthy")
    });
    let back_after = killed_at.elapsed();
    assert!(back_after >= Duration::from_millis(400), "restarted after {back_after:?}: no delay");
    let new_pid: i32 = h.show(&unit, "MainPID").parse().expect("pid");
    assert_ne!(new_pid, pid);
    events.wait_for("the job to complete", Duration::from_secs(30), |e| count(e, "succeeded") >= 1).await;
    let ok = events.of("succeeded").next().expect("success");
    assert_eq!(ok.job_id.as_deref(), Some(id.as_str()));

    let metrics = h.metrics();
    assert!(metrics.contains(r#"drover_unit_restarts_total{class="w"} 1"#), "{metrics}");
    assert!(metrics.contains(r#"drover_units{class="w",health="healthy"} 2"#), "{metrics}");
    assert!(metrics.contains(r#"drover_units_by_state{class="w",state="active"} 2"#), "{metrics}");
    assert!(metrics.contains("drover_reconcile_passes_total"), "{metrics}");
    assert!(metrics.contains("drover_dbus_call_duration_seconds_bucket"), "{metrics}");
    // Job durations are histograms whose buckets tell a 30-minute job from a 6-hour one.
    wait_until("the job's outcome in /metrics", Duration::from_secs(10), || {
        h.metrics().contains(r#"drover_jobs_total{class="w",outcome="succeeded",result="succeeded"} 1"#)
    });
    let metrics = h.metrics();
    for le in ["1800", "21600", "86400"] {
        assert!(
            metrics
                .contains(&format!(r#"drover_job_duration_seconds_bucket{{class="w",outcome="succeeded",le="{le}"}}"#)),
            "{metrics}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unit_that_always_crashes_backs_off_and_becomes_failing_without_a_tight_loop() {
    let mut h = Host::new(
        "sup-crash",
        r#"
        [classes.c]
        mode = "persistent"
        command = ["python3", "-c", "import sys; sys.exit(3)"]
        workers = 1
        "#,
    );
    h.start_supervisor();
    let unit = h.unit("c-1");
    let started = Instant::now();
    h.wait_status("the unit to be failing", Duration::from_secs(60), |u| {
        u.get(&unit).is_some_and(|s| s.health == "failing")
    });
    let status = h.status().expect("status");
    assert!(
        status.alerts.iter().any(|a| a.kind == "failing" && a.unit == unit),
        "a failing alert: {:?}",
        status.alerts
    );
    // Restarts at 1 s base doubling to a 4 s cap with equal jitter: in 12 s, a few restarts, not a loop.
    std::thread::sleep(Duration::from_secs(12).saturating_sub(started.elapsed()));
    let restarts = h.units()[&unit].restarts;
    assert!((2..=8).contains(&restarts), "{restarts} restarts in about 12 s");
    let alerts = h.status().expect("status").alerts.iter().filter(|a| a.kind == "failing").count();
    assert_eq!(alerts, 1, "one alert, not one per crash");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unit_whose_preflight_fails_is_misconfigured_not_restarted_and_shows_why() {
    let mut h = Host::new(
        "sup-preflight",
        r#"
        [classes.p]
        mode = "exec"
        command = ["python3", "{handler}"]
        workers = 1
        preflight = [["test", "-w", "/nonexistent/model-cache"]]
        "#,
    );
    h.start_supervisor();
    let unit = h.unit("p-1");
    h.wait_status("the unit to be misconfigured with its reason", Duration::from_secs(60), |u| {
        u.get(&unit).is_some_and(|s| {
            s.health == "misconfigured" && s.detail.as_deref().unwrap_or("").contains("/nonexistent/model-cache")
        })
    });
    let first = h.show(&unit, "ExecMainStartTimestampMonotonic");
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(h.show(&unit, "ExecMainStartTimestampMonotonic"), first, "not restarted");
    assert_eq!(h.units()[&unit].restarts, 0);
    let table = drover(&["status", "--config"], &h.config);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.contains("misconfigured") && text.contains("/nonexistent/model-cache"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_supervisor_adopts_running_units_without_disturbing_them() {
    let mut h = Host::new("sup-adopt", PERSISTENT);
    let mut events = h.env.events().await;
    h.start_supervisor();
    h.wait_status("8 healthy units", Duration::from_secs(60), all_healthy(8));
    h.env.submit("w", r#"{"sleep": 5}"#, 3, &[]);
    events.wait_for("3 jobs running", Duration::from_secs(30), |e| count(e, "started") >= 3).await;
    let before = h.main_pids(8, "w");
    h.stop_supervisor();
    h.start_supervisor();
    h.wait_status("the new supervisor's view", Duration::from_secs(30), |u| {
        all_healthy(8)(u) && u.values().filter(|s| s.job.is_some()).count() == 3
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(h.main_pids(8, "w"), before, "no unit restarted");
    events.wait_for("the 3 jobs to finish", Duration::from_secs(30), |e| count(e, "succeeded") >= 3).await;
    assert!(events.of("succeeded").all(|e| e.attempt == Some(1)));
    assert_eq!(count(&events.all, "started"), 3, "no job was started twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_down_drains_the_removed_units_and_loses_no_job() {
    let mut h = Host::new("sup-down", PERSISTENT);
    let mut events = h.env.events().await;
    h.start_supervisor();
    h.wait_status("8 healthy units", Duration::from_secs(60), all_healthy(8));
    let ids = h.env.submit("w", r#"{"sleep": 4}"#, 8, &[]);
    events.wait_for("8 jobs running", Duration::from_secs(30), |e| count(e, "started") >= 8).await;
    h.stop_supervisor();
    h.set_workers(8, 4);
    h.start_supervisor();
    h.wait_status("4 units left", Duration::from_secs(60), |u| {
        u.len() == 4
            && u.values().all(|s| s.health == "healthy")
            && u.keys().all(|k| k.contains("@w-1") || k.contains("@w-2") || k.contains("@w-3") || k.contains("@w-4"))
    });
    events.wait_for("all 8 jobs", Duration::from_secs(60), |e| count(e, "succeeded") >= 8).await;
    for id in &ids {
        assert_eq!(
            events.of("succeeded").filter(|e| e.job_id.as_deref() == Some(id)).count(),
            1,
            "{id} succeeded once"
        );
    }
    assert_eq!(count(&events.all, "requeued"), 0, "the removed units drained: their jobs finished in place");
    for i in 5..=8 {
        let unit = h.unit(&format!("w-{i}"));
        let state = h.show(&unit, "ActiveState");
        assert!(state == "inactive" || state.is_empty(), "{unit} is {state}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_supervisor_survives_the_bus_going_away_without_restarting_workers() {
    let mut h = Host::exclusive("sup-bus", &PERSISTENT.replace("workers = 8", "workers = 2"));
    h.start_supervisor();
    h.wait_status("2 healthy units", Duration::from_secs(60), all_healthy(2));
    let before = h.main_pids(2, "w");
    // The session bus daemon goes away; socket activation brings it back on the next connection.
    let out = systemctl(&["kill", "--signal=SIGKILL", "dbus.service"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    wait_until("the supervisor to notice", Duration::from_secs(30), || {
        h.supervisor_log().contains("lost systemd") || h.status().is_some_and(|s| !s.systemd_connected)
    });
    // How soon the bus is back is the machine's (on a loaded one, its restart has taken 90 s);
    // what is tested is that the supervisor comes back on it (its backoff is at most 30 s).
    wait_until("the session bus back", Duration::from_secs(240), || {
        let get_id = ["--user", "--timeout=5", "call", "org.freedesktop.DBus", "/org/freedesktop/DBus"];
        std::process::Command::new("busctl")
            .args(get_id)
            .args(["org.freedesktop.DBus", "GetId"])
            .output()
            .is_ok_and(|o| o.status.success())
    });
    h.wait_status("the supervisor back on the bus", Duration::from_secs(60), |u| {
        h.status().is_some_and(|s| s.systemd_connected) && all_healthy(2)(u)
    });
    assert_eq!(h.main_pids(2, "w"), before, "no worker restarted");
    // And it heals again afterwards.
    let pid: i32 = before[0].parse().expect("pid");
    assert!(pid > 0);
    // SAFETY: kills a worker of ours.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let unit = h.unit("w-1");
    h.wait_status("the killed unit healed", Duration::from_secs(30), |u| {
        u.get(&unit).is_some_and(|s| s.restarts == 1 && s.health == "healthy")
    });
}

/// Units run with PrivateTmp=yes: a checkout under /tmp (binary, handler, test files) would be
/// invisible to them, so there a test's `relax_sandbox` (ending in "ProcSubset") relaxes that
/// one directive too.
pub fn relax_for_checkout(config: &str) -> String {
    if env!("CARGO_MANIFEST_DIR").starts_with("/tmp") {
        config.replace("\"ProcSubset\"]", "\"ProcSubset\", \"PrivateTmp\"]")
    } else {
        config.to_string()
    }
}
