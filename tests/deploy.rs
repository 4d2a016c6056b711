//! Deploying Drover (issue 18): logs shaped for the journal, unit files systemd accepts
//! (`systemd-analyze verify`) with every value escaped, per-class device access, the supervisor
//! run as a unit of the user manager, and the Debian package installed and run.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

fn scratch(name: &str) -> PathBuf {
    let id = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("drover-deploy-{name}-{id}"));
    std::fs::create_dir_all(&dir).expect("dir");
    dir
}

#[test]
fn under_the_journal_lines_carry_priorities_and_no_timestamp_or_colour() {
    let dir = scratch("journal");
    let config = dir.join("drover.toml");
    // A broker nobody listens on: the worker logs an info line, then warnings as it retries.
    std::fs::write(
        &config,
        "[broker]\nurl = \"amqp://guest:guest@127.0.0.1:1/%2f\"\nconnect_timeout = \"1s\"\n[classes.x]\ncommand = [\"true\"]\n",
    )
    .expect("write");
    let log = dir.join("stderr");
    let file = std::fs::File::create(&log).expect("log");
    let meta = file.metadata().expect("stat");
    let mut child = Command::new(env!("CARGO_BIN_EXE_drover"))
        .args(["work", "--class", "x", "--config"])
        .arg(&config)
        // What systemd sets when standard error is a stream to the journal.
        .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .stderr(file)
        .spawn()
        .expect("drover work");
    crate::harness::wait_until("a warning", Duration::from_secs(60), || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains("<4>broker unreachable"))
    });
    // SAFETY: signals our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(text.lines().any(|l| l.starts_with("<6>class x")), "{text}");
    for line in text.lines() {
        assert!(line.starts_with('<') && line.as_bytes().get(2) == Some(&b'>'), "a priority on every line: {line}");
        assert!(!line.contains('\x1b'), "no colour: {line}");
        assert!(!line.contains("Z  ") && !line.contains(" INFO ") && !line.contains(" WARN "), "no timestamp: {line}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// A harmless device node that `PrivateDevices=yes` hides (it keeps /dev/null and friends).
fn spare_device() -> &'static str {
    ["/dev/vcs", "/dev/net/tun", "/dev/fuse", "/dev/loop-control", "/dev/tty0"]
        .into_iter()
        .find(|d| std::path::Path::new(d).exists())
        .expect("a character device beyond /dev/null to grant")
}

fn systemctl(args: &[&str]) -> std::process::Output {
    crate::supervisor::systemctl(args)
}

#[test]
fn the_supervisor_runs_as_a_unit_and_only_the_granted_class_sees_its_device() {
    let device = spare_device();
    // The handler writes what it sees: whether the device exists, and a value full of what
    // systemd would misread unescaped (a specifier, a backslash, quotes, spaces).
    let classes = format!(
        r#"
[systemd]
bus = "user"
unit_prefix = "dw-{{id}}"
relax_sandbox = ["ProtectKernelTunables", "ProtectKernelLogs", "ProtectControlGroups", "ProtectProc", "ProcSubset"]
environment = ["ODD=100% a\\b \"q\""]
writable = ["{{dir}}"]
[supervisor]
start_rate = 4
restart_base = "1s"
restart_max = "4s"
resync = "5s"
[alerts]
state_dir = "{{dir}}/state"
[classes.gpu]
command = ["sh", "-c", "if test -c {device}; then echo yes; else echo no; fi > {{dir}}/seen-$DROVER_CLASS; printf %s \"$ODD\" > {{dir}}/odd-$DROVER_CLASS"]
devices = ["{device}"]
workers = 1
[classes.cpu]
command = ["sh", "-c", "if test -c {device}; then echo yes; else echo no; fi > {{dir}}/seen-$DROVER_CLASS"]
workers = 1
"#
    );
    let env = crate::harness::Env::new("unit", &classes);
    // A configuration path systemd would split or expand if written as is.
    let odd_dir = env.dir.join("my conf %h");
    std::fs::create_dir_all(&odd_dir).expect("dir");
    let config = odd_dir.join("drover.toml");
    std::fs::copy(&env.config, &config).expect("copy");
    let cfg = drover::io::config_file::load(&config).expect("config");
    let unit_dir = drover::io::units::unit_dir(false);
    let supervisor = drover::io::units::supervisor_unit(&cfg.systemd.unit_prefix);
    let out = crate::supervisor::drover(&["install-units", "--user", "--config"], &config);
    assert!(out.status.success(), "install-units: {}", String::from_utf8_lossy(&out.stderr));
    let cleanup = Cleanup { prefix: cfg.systemd.unit_prefix.clone(), supervisor: supervisor.clone(), cfg, unit_dir };

    let out = systemctl(&["start", &supervisor]);
    assert!(out.status.success(), "start {supervisor}: {}", String::from_utf8_lossy(&out.stderr));
    env.submit("gpu", "{}", 1, &[]);
    env.submit("cpu", "{}", 1, &[]);
    let seen = |class: &str| std::fs::read_to_string(env.dir.join(format!("seen-{class}"))).ok();
    crate::harness::wait_until("both classes ran their job", Duration::from_secs(120), || {
        seen("gpu").is_some() && seen("cpu").is_some()
    });
    assert_eq!(seen("gpu").as_deref(), Some("yes\n"), "the class granted {device} sees it");
    assert_eq!(seen("cpu").as_deref(), Some("no\n"), "another class does not");
    let odd = std::fs::read_to_string(env.dir.join("odd-gpu")).expect("odd");
    assert_eq!(odd, "100% a\\b \"q\"", "the environment value arrives as written");
    // The supervisor is the unit's main process, and it manages the workers it started.
    let state = |unit: &str| {
        let out = systemctl(&["show", unit, "-p", "ActiveState", "--value"]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(state(&supervisor), "active");
    assert_eq!(state(&format!("{}@gpu-1.service", cleanup.prefix)), "active");
    drop(cleanup);
}

/// Stops the test's units and removes their files, whatever happened.
struct Cleanup {
    prefix: String,
    supervisor: String,
    cfg: drover::config::Config,
    unit_dir: PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let out = Command::new("journalctl").args(["--user", "-u", &self.supervisor, "-n", "50"]).output();
            if let Ok(out) = out {
                eprintln!("{}", String::from_utf8_lossy(&out.stdout));
            }
            let out = systemctl(&["status", &self.supervisor, &format!("{}@*", self.prefix)]);
            eprintln!("{}", String::from_utf8_lossy(&out.stdout));
        }
        systemctl(&["stop", &self.supervisor]);
        let pattern = format!("{}@*", self.prefix);
        systemctl(&["kill", "--signal=SIGKILL", &pattern]);
        systemctl(&["stop", &pattern]);
        systemctl(&["reset-failed", &pattern, &self.supervisor]);
        drover::io::units::uninstall(&self.cfg, &self.unit_dir);
        systemctl(&["daemon-reload"]);
    }
}
