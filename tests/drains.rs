//! Maintenance drains (issue: maintenance drains) on two "hosts" on one machine, each with its
//! own supervisor, host name and unit template, sharing the broker and one systemd user manager:
//! a host drain issued from the other host, jobs finishing or moved at the deadline, a
//! supervisor restart in the middle of a drain, cordon and undrain.

use crate::harness::count;
use crate::supervisor::{drover, Host};
use std::collections::HashMap;
use std::time::Duration;

const CLASS: &str = r#"
[classes.w]
mode = "persistent"
command = ["python3", "{handler}", "persistent"]
timeout = "120s"
workers = 6
drain_early_requeue = false
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_host_b_from_host_a_finishes_or_moves_every_job_and_loses_none() {
    let mut b = Host::new("drain-b", CLASS);
    let mut a = b.other_host("host-a", 3);
    let mut events = b.env.events().await;
    b.start_supervisor();
    b.wait_status("6 healthy units on B", Duration::from_secs(60), |u| {
        u.len() == 6 && u.values().all(|s| s.health == "healthy")
    });
    let short = b.env.submit("w", r#"{"sleep": 1}"#, 3, &[]);
    // Long enough to outlast host A's start and the 3 s deadline even on a loaded machine.
    let long = b.env.submit("w", r#"{"sleep": 15}"#, 3, &[]);
    events.wait_for("6 jobs running on B", Duration::from_secs(30), |e| count(e, "started") >= 6).await;
    a.start_supervisor();
    a.wait_status("3 healthy units on A", Duration::from_secs(60), |u| {
        u.len() == 3 && u.values().all(|s| s.health == "healthy")
    });

    // From host A's configuration, drain host B.
    let out = drover(
        &["drain", "--host", &b.name, "--deadline", "3s", "--reason", "memory swap", "--wait", "--json", "--config"],
        &a.config,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        stdout.lines().any(|l| l.contains(&format!("\"host\":\"{}\"", b.name)) && l.contains("\"units\"")),
        "B's progress reached A's CLI: {stdout}"
    );
    assert!(stdout.contains("\"safe_to_power_off\":true"), "{stdout}");
    let units = b.units();
    assert!(
        units.values().all(|u| !u.state.starts_with("activ") && u.health == "drained"),
        "every unit of B stopped: {units:#?}"
    );

    events.wait_for("all 6 jobs", Duration::from_secs(60), |e| count(e, "succeeded") >= 6).await;
    let mut where_ok: HashMap<&str, &str> = HashMap::new();
    for e in events.of("succeeded") {
        assert!(where_ok.insert(e.job_id.as_deref().unwrap_or(""), e.host.as_str()).is_none(), "a job succeeded twice");
    }
    for id in &short {
        assert_eq!(where_ok.get(id.as_str()), Some(&b.name.as_str()), "short jobs finish on B before the deadline");
    }
    for id in &long {
        assert_eq!(
            where_ok.get(id.as_str()),
            Some(&"host-a"),
            "long jobs are requeued at the deadline and complete on A"
        );
        let requeued = events.of("requeued").find(|e| e.job_id.as_deref() == Some(id)).expect("requeued");
        assert!(requeued.reason.as_deref().unwrap_or("").contains("drain"), "{requeued:?}");
        assert_eq!(
            events.of("succeeded").find(|e| e.job_id.as_deref() == Some(id)).and_then(|e| e.attempt),
            Some(1),
            "no attempt charged"
        );
        // Never twice at the same time: it started on A only after B gave it back.
        let rq_at = &requeued.at;
        let started_on_a =
            events.of("started").find(|e| e.job_id.as_deref() == Some(id) && e.host == "host-a").expect("started on A");
        assert!(started_on_a.at >= *rq_at, "started on A at {} before B requeued it at {rq_at}", started_on_a.at);
    }
    // The timeline says who drained what, why and when, and where the jobs went.
    let tl = drover(&["timeline", "--json", "--config"], &b.config);
    let text = String::from_utf8_lossy(&tl.stdout);
    assert!(text.contains("memory swap") && text.contains("drain") && text.contains("requeue job"), "{text}");
    assert!(
        text.contains("restarted on") && text.contains("host-a"),
        "each moved job's fate is in the timeline: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_survives_a_supervisor_restart_and_undrain_brings_the_units_back() {
    let mut h = Host::new("drain-restart", &CLASS.replace("workers = 6", "workers = 2"));
    let mut events = h.env.events().await;
    h.start_supervisor();
    h.wait_status("2 healthy units", Duration::from_secs(60), |u| {
        u.len() == 2 && u.values().all(|s| s.health == "healthy")
    });
    h.env.submit("w", r#"{"sleep": 4}"#, 2, &[]);
    events.wait_for("2 jobs running", Duration::from_secs(30), |e| count(e, "started") >= 2).await;
    let out =
        drover(&["drain", "--host", &h.name, "--deadline", "60s", "--reason", "os upgrade", "--config"], &h.config);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    h.stop_supervisor();
    h.start_supervisor();
    // The new supervisor resumes the drain: the jobs finish in place, then the units stop.
    h.wait_status("both units drained", Duration::from_secs(60), |u| {
        u.len() == 2 && u.values().all(|s| s.health == "drained")
    });
    events.wait_for("both jobs done", Duration::from_secs(10), |e| count(e, "succeeded") >= 2).await;
    assert_eq!(count(&events.all, "requeued"), 0, "they had time to finish");

    let out = drover(&["undrain", "--host", &h.name, "--reason", "upgrade done", "--config"], &h.config);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    h.wait_status("units back", Duration::from_secs(60), |u| u.len() == 2 && u.values().all(|s| s.health == "healthy"));
    h.env.submit("w", r#"{"sleep": 0}"#, 1, &[]);
    events.wait_for("work resumes", Duration::from_secs(30), |e| count(e, "succeeded") >= 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cordon_keeps_the_running_job_and_takes_no_new_one() {
    let mut h = Host::new("cordon", &CLASS.replace("workers = 6", "workers = 1"));
    let mut events = h.env.events().await;
    h.start_supervisor();
    h.wait_status("1 healthy unit", Duration::from_secs(60), |u| {
        u.len() == 1 && u.values().all(|s| s.health == "healthy")
    });
    h.env.submit("w", r#"{"sleep": 3}"#, 1, &[]);
    events.wait_for("the job running", Duration::from_secs(30), |e| count(e, "started") >= 1).await;
    let out = drover(&["cordon", "--unit", "w-1", "--reason", "suspect disk", "--config"], &h.config);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    h.wait_status("cordoned", Duration::from_secs(20), |u| u.values().all(|s| s.health == "cordoned"));
    let waiting = h.env.submit("w", r#"{"sleep": 0}"#, 1, &[])[0].clone();
    events.wait_for("the running job finishes", Duration::from_secs(30), |e| count(e, "succeeded") >= 1).await;
    std::thread::sleep(Duration::from_secs(2));
    events.wait_for("nothing else", Duration::from_millis(10), |_| true).await;
    assert!(!events.of("started").any(|e| e.job_id.as_deref() == Some(&waiting)), "a cordoned unit takes no new job");
    let out = drover(&["undrain", "--unit", "w-1", "--reason", "disk is fine", "--config"], &h.config);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    events.wait_for("the waiting job runs", Duration::from_secs(30), |e| count(e, "succeeded") >= 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_halts_at_the_wave_that_breaks_a_host_and_keeps_the_first_wave_in_service() {
    // Each host's units get MARK=<dir>/broken-<host>; their preflight fails when that file exists.
    let class = r#"
[classes.w]
mode = "persistent"
command = ["python3", "{handler}", "persistent"]
timeout = "60s"
workers = 1
preflight = [["sh", "-c", "test ! -e \"$MARK\""]]
"#;
    let mut a = Host::new("rollout", class);
    let mut c = a.other_host("host-c", 1);
    let mut b = a.other_host("host-b", 1);
    let dir = a.env.dir.clone();
    for h in [&a, &b, &c] {
        let text = std::fs::read_to_string(&h.config).expect("config");
        let text = text.replacen(
            "environment = [",
            &format!("environment = [\"MARK={}/broken-{}\", ", dir.display(), h.name),
            1,
        );
        std::fs::write(&h.config, text).expect("config");
        let out = drover(&["install-units", "--user", "--config"], &h.config);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    for h in [&mut a, &mut b, &mut c] {
        h.start_supervisor();
    }
    for h in [&a, &b, &c] {
        h.wait_status("a healthy unit", Duration::from_secs(60), |u| {
            u.len() == 1 && u.values().all(|s| s.health == "healthy")
        });
    }
    let breaker = format!(r#"if [ "$DROVER_HOST" = host-c ]; then touch "{}/broken-host-c"; fi"#, dir.display());
    let hosts = format!("{},host-c,host-b", a.name);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_drover"))
        .args(["rollout", "--config"])
        .arg(&a.config)
        .args([
            "--hosts",
            &hosts,
            "--waves",
            "1,1,1",
            "--soak",
            "4s",
            "--deadline",
            "5s",
            "--reason",
            "security settings",
            "--",
        ])
        .args(["sh", "-c", &breaker])
        .output()
        .expect("drover rollout");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}\n{}", String::from_utf8_lossy(&out.stdout));
    assert!(
        err.contains("ROLLOUT HALTED at wave 2/3") && err.contains("host-c") && err.contains("misconfigured"),
        "{err}"
    );
    // The first wave's host is back in service; the broken host is drained again; the third
    // wave was never touched.
    a.wait_status("wave 1 in service", Duration::from_secs(30), |u| u.values().all(|s| s.health == "healthy"));
    c.wait_status("host-c drained again", Duration::from_secs(30), |u| u.values().all(|s| s.health == "drained"));
    assert!(b.units().values().all(|s| s.health == "healthy"));
    let tl = drover(&["timeline", "--json", "--config"], &b.config);
    assert!(!String::from_utf8_lossy(&tl.stdout).contains("drain"), "host-b was never drained");
    let tl = drover(&["timeline", "--json", "--config"], &c.config);
    assert!(String::from_utf8_lossy(&tl.stdout).contains("rollout halted"), "the halt is in host-c's timeline");
}

/// Ctrl-C as a terminal sends it (SIGINT to the whole foreground process group) while the
/// first wave's change runs: the change finishes, the rollout stops there with exit 1 and says
/// what is still drained and the exact commands to undo and to resume; the commands it printed,
/// run as printed, put the host back in service and finish the rollout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_stops_a_rollout_after_the_current_step_with_the_exact_commands_to_undo_or_resume() {
    use std::os::unix::process::CommandExt;
    let class = r#"
[classes.w]
mode = "persistent"
command = ["python3", "{handler}", "persistent"]
timeout = "60s"
workers = 1
"#;
    let mut a = Host::new("ctrlc", class);
    let mut b = a.other_host("host-b", 1);
    for h in [&mut a, &mut b] {
        h.start_supervisor();
    }
    for h in [&a, &b] {
        h.wait_status("a healthy unit", Duration::from_secs(60), |u| {
            u.len() == 1 && u.values().all(|s| s.health == "healthy")
        });
    }
    let dir = a.env.dir.clone();
    // The change: says it started, takes a few seconds, says it finished.
    let change =
        format!(r#"touch "{d}/started-$DROVER_HOST"; sleep 3; touch "{d}/changed-$DROVER_HOST""#, d = dir.display());
    let hosts = format!("{},host-b", a.name);
    let (out, err) = (dir.join("rollout.out"), dir.join("rollout.err"));
    let mut rollout = std::process::Command::new(env!("CARGO_BIN_EXE_drover"))
        .args(["rollout", "--config"])
        .arg(&a.config)
        .args(["--hosts", &hosts, "--waves", "1,1", "--soak", "2s", "--deadline", "5s"])
        .args(["--reason", "kernel 6.1, it's time", "--", "sh", "-c", &change])
        .process_group(0)
        .stdout(std::fs::File::create(&out).expect("out"))
        .stderr(std::fs::File::create(&err).expect("err"))
        .spawn()
        .expect("drover rollout");
    let started = dir.join(format!("started-{}", a.name));
    crate::harness::wait_until("the first wave's change runs", Duration::from_secs(90), || started.exists());
    // SAFETY: signals the process group of our own child, as a terminal's Ctrl-C does.
    unsafe { libc::kill(-(rollout.id() as i32), libc::SIGINT) };
    let end = std::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = rollout.try_wait().expect("wait") {
            break s;
        }
        assert!(std::time::Instant::now() < end, "the rollout did not stop");
        std::thread::sleep(Duration::from_millis(200));
    };
    let text = std::fs::read_to_string(&err).expect("stderr");
    assert_eq!(status.code(), Some(1), "{text}");
    assert!(dir.join(format!("changed-{}", a.name)).exists(), "the change under way finished: {text}");
    assert!(!dir.join("started-host-b").exists(), "the second wave was not touched: {text}");
    assert!(text.contains(&format!("ROLLOUT STOPPED after the change of wave 1/2 ({})", a.name)), "{text}");
    assert!(text.contains(&format!("still drained: {}", a.name)), "{text}");
    // The state the message gives: the first wave's unit drained, the second's in service.
    a.wait_status("wave 1 still drained", Duration::from_secs(10), |u| u.values().all(|s| s.health == "drained"));
    assert!(b.units().values().all(|s| s.health == "healthy"), "{:?}", b.units());

    let config = std::fs::canonicalize(&a.config).expect("config").display().to_string();
    let undo = format!("drover undrain --config {config} --host {} --reason 'rollout stopped'", a.name);
    let resume = format!(
        r#"drover rollout --config {config} --hosts {hosts} --waves 1,1 --soak 2s --deadline 5s --reason 'kernel 6.1, it'\''s time' -- sh -c '{change}'"#
    );
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    assert!(lines.contains(&undo.as_str()), "the undo command, exactly: {undo}\n{text}");
    assert!(lines.contains(&resume.as_str()), "the resume command, exactly: {resume}\n{text}");

    // Run as printed (with this build of drover first on PATH): each does what it says.
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_drover")).parent().expect("bin dir").display().to_string();
    let path = format!("{bin}:{}", std::env::var("PATH").unwrap_or_default());
    let sh = |cmd: &str| std::process::Command::new("sh").args(["-c", cmd]).env("PATH", &path).output().expect("sh");
    let undone = sh(&undo);
    assert!(undone.status.success(), "{}", String::from_utf8_lossy(&undone.stderr));
    a.wait_status("wave 1 back in service", Duration::from_secs(60), |u| u.values().all(|s| s.health == "healthy"));
    let resumed = sh(&resume);
    let said = String::from_utf8_lossy(&resumed.stdout);
    assert!(resumed.status.success(), "{said}\n{}", String::from_utf8_lossy(&resumed.stderr));
    assert!(said.contains("rollout complete: 2 hosts in 2 waves"), "{said}");
    assert!(dir.join("changed-host-b").exists());
}

/// A terminal of the test's own (tmux on a private socket, a fixed size) running one command;
/// its screen as a person would see it.
struct Terminal {
    socket: String,
}

impl Terminal {
    fn run(cmd: &str, width: u16, height: u16) -> Terminal {
        let socket = format!("drover-test-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let t = Terminal { socket };
        let out = t.tmux(&["new-session", "-d", "-x", &width.to_string(), "-y", &height.to_string(), cmd]);
        assert!(out.status.success(), "tmux: {}", String::from_utf8_lossy(&out.stderr));
        t
    }

    fn tmux(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new("tmux")
            .args(["-L", &self.socket, "-f", "/dev/null"])
            .args(args)
            .output()
            .expect("tmux (scripts/services.sh up installs it)")
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.tmux(&["capture-pane", "-p"]).stdout).into_owned()
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = self.tmux(&["kill-server"]);
    }
}

/// `drain --wait` on a terminal: one live view that redraws in place (one line per host, cut
/// to the terminal's width, never a pile of old copies), the jobs left with their expected
/// time and the deadline while it runs, and "safe to power off" at the end, exit 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_wait_on_a_terminal_redraws_one_live_view_until_safe_to_power_off() {
    // (In [alerts]: the class's usual run time is worked out at each evaluation.)
    let class = r#"
evaluate_every = "500ms"
[classes.w]
mode = "persistent"
command = ["python3", "{handler}", "persistent"]
timeout = "120s"
workers = 2
drain_early_requeue = false
"#;
    let mut h = Host::new("live", class);
    let mut events = h.env.events().await;
    h.start_supervisor();
    h.wait_status("2 healthy units", Duration::from_secs(60), |u| {
        u.len() == 2 && u.values().all(|s| s.health == "healthy")
    });
    // Two jobs done first give the class its usual run time (the expected time left).
    h.env.submit("w", r#"{"sleep": 3}"#, 2, &[]);
    events.wait_for("the first jobs", Duration::from_secs(60), |e| count(e, "succeeded") >= 2).await;
    h.env.submit("w", r#"{"sleep": 6}"#, 2, &[]);
    events.wait_for("both jobs running", Duration::from_secs(30), |e| count(e, "started") >= 4).await;
    let cmd = format!(
        "{} drain --host {} --deadline 2m --reason 'live view' --wait --config {}; echo EXIT=$?; sleep 600",
        env!("CARGO_BIN_EXE_drover"),
        h.name,
        h.config.display()
    );
    let (width, height) = (100, 30);
    let term = Terminal::run(&cmd, width, height);
    let mut screens = Vec::new();
    let end = std::time::Instant::now() + Duration::from_secs(90);
    let last = loop {
        let s = term.screen();
        if s.contains("EXIT=") {
            break s;
        }
        assert!(std::time::Instant::now() < end, "the drain did not end; screen:\n{s}");
        screens.push(s);
        std::thread::sleep(Duration::from_millis(300));
    };
    let progress_lines = |s: &str| s.lines().filter(|l| l.contains("units stopped")).count();
    let during: Vec<&String> = screens.iter().filter(|s| s.contains("job(s) left")).collect();
    assert!(!during.is_empty(), "the jobs left were shown while the drain ran: {screens:#?}");
    let shown = during.last().expect("a screen");
    assert!(
        during.iter().any(|s| s.contains("left (the last in about ")) && shown.contains("deadline in"),
        "expected time and deadline: {during:#?}"
    );
    for s in screens.iter().chain([&last]) {
        assert!(progress_lines(s) <= 1, "one live line for the host, redrawn in place:\n{s}");
        assert!(s.lines().all(|l| l.chars().count() <= width as usize), "cut to the width:\n{s}");
    }
    assert_eq!(progress_lines(&last), 1, "the last state stays on the screen:\n{last}");
    assert!(last.contains(&format!("{}: safe to power off", h.name)), "{last}");
    assert!(last.contains("EXIT=0"), "{last}");
}
