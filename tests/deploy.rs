//! Deploying Drover (issue 18): logs shaped for the journal, unit files systemd accepts
//! (`systemd-analyze verify`) with every value escaped, per-class device access, the supervisor
//! run as a unit of the user manager, and the Debian package installed and run.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
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
    let env = crate::harness::Env::new("unit", &crate::supervisor::relax_for_checkout(&classes));
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

fn run(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `systemd-analyze verify` on a unit directory: templates through one instance each.
fn verify(dir: &std::path::Path, user: bool) {
    let mut units = Vec::new();
    for e in std::fs::read_dir(dir).expect("units").flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(prefix) = name.strip_suffix("@.service") {
            let instance = dir.join(format!("{prefix}@x-1.service"));
            std::fs::copy(e.path(), &instance).expect("instance");
            units.push(instance);
        } else if name.ends_with(".service") && !name.contains("@x-1") {
            units.push(e.path());
        }
    }
    let mut cmd = Command::new("systemd-analyze");
    cmd.arg("verify").arg("--man=no");
    if user {
        cmd.arg("--user");
    }
    let out = cmd.args(&units).output().expect("systemd-analyze");
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && text.trim().is_empty(), "systemd-analyze verify {units:?}: {text}");
}

#[test]
fn systemd_accepts_the_units_with_awkward_values_for_either_manager() {
    let dir = scratch("verify");
    let odd = dir.join("my conf %i");
    std::fs::create_dir_all(&odd).expect("dir");
    let config = odd.join("drover.toml");
    std::fs::write(
        &config,
        r#"
[systemd]
environment = ["DB=postgres://u:p%40ss@h/db", "WIN=C:\\temp dir", "Q=say \"hi\""]
writable = ["/var/tmp/with space"]
watchdog = "0"
[supervisor]
socket = "/var/tmp/drover %n/control.sock"
[classes.gpu]
command = ["true"]
devices = ["/dev/null", "char-pts rw"]
writable = ["/var/tmp/models 100%"]
environment_files = ["/etc/drover/gpu env"]
"#,
    )
    .expect("write");
    for (scope, user) in [("--system", false), ("--user", true)] {
        let units = dir.join(scope.trim_start_matches('-'));
        run(Command::new(env!("CARGO_BIN_EXE_drover"))
            .args(["install-units", scope, "--config"])
            .arg(&config)
            .arg("--dir")
            .arg(&units));
        verify(&units, user);
        let worker = std::fs::read_to_string(units.join("drover-worker@.service")).expect("worker");
        assert!(worker.contains("/my conf %%i/drover.toml\" --instance %i"), "{worker}");
        assert!(worker.contains("Environment=\"DB=postgres://u:p%%40ss@h/db\""), "{worker}");
        assert!(worker.contains("\nWatchdogSec=0\n"), "watchdog \"0\" is off: {worker}");
        let target = if user { "default.target" } else { "multi-user.target" };
        assert!(worker.contains(&format!("WantedBy={target}")), "{worker}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// The README's scores are the ones the units have now.
#[test]
fn both_units_score_two_or_better_and_the_readme_says_so() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/security-score.sh");
    let out = run(Command::new(script).arg(env!("CARGO_BIN_EXE_drover")));
    let scores = String::from_utf8_lossy(&out.stdout).to_string();
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README");
    for line in scores.lines() {
        let (unit, score) = line.split_once(' ').expect("unit score");
        let score: f64 = score.parse().expect("a number");
        assert!(score <= 2.0, "{unit}: exposure {score} (systemd-analyze security)");
        let row = format!("| `{unit}` | {score:.1} |");
        assert!(readme.contains(&row), "README lacks `{row}` (scripts/security-score.sh prints {scores})");
    }
    assert_eq!(scores.lines().count(), 2, "{scores}");
}

/// Installs the package with dpkg (as CI does on a fresh machine), runs what it installed, and
/// purges it. It touches nothing the other tests use (they run the cargo-built binary and the
/// user manager's units).
#[test]
fn the_debian_package_installs_a_working_drover_with_its_user() {
    let _user = DROVER_USER.lock().unwrap_or_else(|e| e.into_inner());
    let dir = scratch("deb");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/package.sh");
    let out = run(Command::new(script).args(["--binary", env!("CARGO_BIN_EXE_drover"), "--out"]).arg(&dir));
    let deb = String::from_utf8_lossy(&out.stdout).trim().to_string();
    run(Command::new("dpkg").args(["-i", &deb]));
    struct Purge;
    impl Drop for Purge {
        fn drop(&mut self) {
            let _ = Command::new("dpkg").args(["--purge", "drover"]).output();
        }
    }
    let _purge = Purge;
    let version = run(Command::new("/usr/bin/drover").arg("--version"));
    let version = String::from_utf8_lossy(&version.stdout).to_string();
    assert!(version.starts_with("drover 0.") && version.contains("git "), "{version}");
    // The default configuration path, with no --config.
    let check = run(Command::new("/usr/bin/drover").arg("check-config").env_remove("DROVER_CONFIG"));
    assert!(String::from_utf8_lossy(&check.stdout).contains("/etc/drover/drover.toml: ok"));
    run(Command::new("getent").args(["passwd", "drover"]));
    let meta = std::fs::metadata("/etc/drover/drover.toml").expect("config");
    assert_eq!(meta.permissions().mode() & 0o777, 0o640, "the configuration is not world-readable");
    for f in [
        "/usr/share/man/man1/drover.1.gz",
        "/usr/share/bash-completion/completions/drover",
        "/usr/share/zsh/vendor-completions/_drover",
        "/usr/share/fish/vendor_completions.d/drover.fish",
        "/usr/share/polkit-1/rules.d/50-drover.rules",
    ] {
        assert!(std::path::Path::new(f).exists(), "{f} not installed");
    }
    let units = dir.join("installed-units");
    std::fs::create_dir_all(&units).expect("dir");
    for u in ["drover-worker@.service", "drover-supervisor.service"] {
        std::fs::copy(format!("/usr/lib/systemd/system/{u}"), units.join(u)).expect("unit installed");
    }
    verify(&units, false);
    let worker = std::fs::read_to_string(units.join("drover-worker@.service")).expect("unit");
    assert!(worker.contains("ExecStart=/usr/bin/drover work --config /etc/drover/drover.toml --instance %i"));
    assert!(worker.contains("\nUser=drover\n"), "{worker}");
    // The installed binary, run by systemd as the drover user, reads its configuration.
    let out = run(Command::new("systemd-run").args([
        "--user",
        "--pipe",
        "--wait",
        "--collect",
        "--quiet",
        "-p",
        "User=drover",
        "/usr/bin/drover",
        "check-config",
    ]));
    assert!(String::from_utf8_lossy(&out.stdout).contains("/etc/drover/drover.toml: ok"), "{out:?}");
    let _ = std::fs::remove_dir_all(dir);
}

/// Deletes the test's broker users, whatever happened.
struct BrokerUsers(String);

impl Drop for BrokerUsers {
    fn drop(&mut self) {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/broker-users.sh");
        let _ = Command::new(script).args(["delete", &self.0]).output();
    }
}

/// The package's user exists for as long as a test holds this: the package test creates and
/// purges it, the credential test runs a unit as it.
static DROVER_USER: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The `drover` user, made as the package's postinst makes it when it is missing, and removed
/// again on drop if it was made here.
struct DroverUser {
    made: bool,
    _held: std::sync::MutexGuard<'static, ()>,
}

impl DroverUser {
    fn ensure() -> DroverUser {
        let held = DROVER_USER.lock().unwrap_or_else(|e| e.into_inner());
        let exists = || Command::new("getent").args(["passwd", "drover"]).output().is_ok_and(|o| o.status.success());
        let made = !exists();
        if made {
            run(Command::new("useradd").args([
                "--system",
                "--user-group",
                "--home-dir",
                "/var/lib/drover",
                "--shell",
                "/usr/sbin/nologin",
                "drover",
            ]));
        }
        DroverUser { made, _held: held }
    }
}

impl Drop for DroverUser {
    fn drop(&mut self) {
        if self.made {
            let _ = Command::new("userdel").arg("drover").output();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workers_login_cannot_publish_orders_and_its_handler_cannot_read_the_password() {
    use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
    // The handler reports who it runs as, its environment, whether it has a credentials
    // directory, and what it gets from the password file and from the worker's /proc entries.
    let classes = r#"
[systemd]
bus = "user"
unit_prefix = "dw-{id}"
user = "drover"
watchdog = "0"
relax_sandbox = ["ProtectKernelTunables", "ProtectKernelLogs", "ProtectControlGroups", "ProtectProc", "ProcSubset"]
writable = ["{dir}/out"]
[credentials.worker]
user = "t-{id}-worker"
password_file = "{dir}/credentials/worker"
[classes.sec]
command = ["sh", "-c", "out={dir}/out; id -un > $out/user; env > $out/env; echo \"${CREDENTIALS_DIRECTORY:-absent}\" > $out/creddir; cat \"${CREDENTIALS_DIRECTORY:-/nonexistent}/broker-password\" > $out/credential 2>&1; cat {dir}/credentials/worker > $out/file 2>&1; cat /proc/$PPID/environ > $out/environ 2>&1; head -c 64 /proc/$PPID/mem > $out/mem 2>&1; echo done > $out/done"]
"#;
    let _drover = DroverUser::ensure();
    let env = crate::harness::Env::new("secret", &crate::supervisor::relax_for_checkout(classes));
    let id = env.prefix.rsplit('-').next().expect("id").to_string();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/broker-users.sh");
    let credentials = env.dir.join("credentials");
    let users = format!("t-{id}");
    run(Command::new(script).args(["create", &env.prefix, "--users", &users, "--credentials"]).arg(&credentials));
    let _users = BrokerUsers(users.clone());
    let password = std::fs::read_to_string(credentials.join("worker")).expect("password").trim().to_string();

    // The worker's login may not publish on the control exchange.
    let control = format!("{}.control", env.prefix);
    let guest = crate::harness::connect().await;
    let chan = guest.create_channel().await.expect("channel");
    let opts = ExchangeDeclareOptions { auto_delete: true, ..Default::default() };
    chan.exchange_declare(control.as_str().into(), lapin::ExchangeKind::Topic, opts, Default::default())
        .await
        .expect("declare");
    let url = drover::config::url_with_login(&crate::harness::amqp_url(), &format!("{users}-worker"), &password);
    let conn = lapin::Connection::connect(&url, lapin::ConnectionProperties::default()).await.expect("worker login");
    let chan = conn.create_channel().await.expect("channel");
    chan.confirm_select(ConfirmSelectOptions::default()).await.expect("confirms");
    let sent = async {
        let confirm = chan
            .basic_publish(
                control.as_str().into(),
                "host.all".into(),
                BasicPublishOptions::default(),
                br#"{"op": "drain"}"#,
                Default::default(),
            )
            .await?;
        confirm.await
    };
    let refused = tokio::time::timeout(Duration::from_secs(30), sent).await.expect("an answer from the broker");
    let text = format!("{refused:?}");
    assert!(refused.is_err() && text.contains("ACCESS_REFUSED"), "a worker published an order: {text}");

    // A worker unit run as the `drover` user, its password handed over by systemd on standard
    // input: the job is done (it logged in as the worker), and the handler, the same user, found
    // the password neither in its environment nor in the worker's (/proc/PID/environ,
    // /proc/PID/mem: non-dumpable), has no credentials directory, and may not open the password
    // file (root's, 0600). (A unit of another user cannot reach the test's user manager's
    // notify socket, in its 0700 runtime directory: the test's drop-in makes the unit
    // `Type=exec`; the sandbox and the credentials are the installed unit's.)
    let out = env.dir.join("out");
    std::fs::create_dir_all(&out).expect("dir");
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let cfg = drover::io::config_file::load(&env.config).expect("config");
    let unit_dir = drover::io::units::unit_dir(false);
    let install = crate::supervisor::drover(&["install-units", "--user", "--config"], &env.config);
    assert!(install.status.success(), "install-units: {}", String::from_utf8_lossy(&install.stderr));
    let supervisor = drover::io::units::supervisor_unit(&cfg.systemd.unit_prefix);
    let unit = format!("{}@sec-1.service", cfg.systemd.unit_prefix);
    let drop_in = unit_dir.join(format!("{unit}.d"));
    std::fs::create_dir_all(&drop_in).expect("drop-in dir");
    std::fs::write(drop_in.join("90-test-no-notify.conf"), "[Service]\nType=exec\nNotifyAccess=none\n")
        .expect("drop-in");
    struct RemoveDir(PathBuf);
    impl Drop for RemoveDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _drop_in = RemoveDir(drop_in);
    let _cleanup = Cleanup { prefix: cfg.systemd.unit_prefix.clone(), supervisor, cfg, unit_dir };
    systemctl(&["daemon-reload"]);
    let started = systemctl(&["start", &unit]);
    assert!(started.status.success(), "start {unit}: {}", String::from_utf8_lossy(&started.stderr));
    env.submit("sec", "{}", 1, &[]);
    crate::harness::wait_until("the job ran", Duration::from_secs(120), || out.join("done").exists());
    let read = |f: &str| std::fs::read_to_string(out.join(f)).unwrap_or_default();
    assert!(read("env").contains("DROVER_JOB_ID="), "the handler ran: {}", read("env"));
    assert_eq!(read("user").trim(), "drover", "the worker and its handler run as the drover user");
    for f in ["env", "environ", "mem", "credential", "file"] {
        assert!(!read(f).contains(&password), "the handler read the password through {f}: {}", read(f));
    }
    assert_eq!(read("creddir").trim(), "absent", "the handler has no credentials directory");
    assert!(!read("env").contains("CREDENTIALS_DIRECTORY"), "{}", read("env"));
    assert!(read("file").contains("Permission denied"), "the password file is refused: {}", read("file"));
    // The same file, opened as root: the checks above would have seen the password.
    assert!(std::fs::read_to_string(credentials.join("worker")).expect("as root").contains(&password));
}

/// The timeline's entries whose `what` starts with `what`, as `drover timeline --json` says them.
fn timeline_of(config: &std::path::Path, what: &str) -> Vec<drover::io::control::TimelineEntry> {
    let out = crate::supervisor::drover(&["timeline", "--json", "--config"], config);
    assert!(out.status.success(), "timeline: {}", String::from_utf8_lossy(&out.stderr));
    let all: Vec<drover::io::control::TimelineEntry> = serde_json::from_slice(&out.stdout).expect("timeline JSON");
    all.into_iter().filter(|e| e.what.starts_with(what)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_is_recorded_as_the_broker_user_that_sent_it_and_a_forged_sender_is_refused() {
    use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
    use lapin::types::ShortString;
    use lapin::BasicProperties;
    let classes = r#"
[credentials.operator]
user = "t-{id}-operator"
password_file = "{dir}/credentials/operator"
[classes.w]
command = ["true"]
workers = 0
"#;
    let mut host = crate::supervisor::Host::new("who", classes);
    let env = host.env.clone();
    let id = env.prefix.rsplit('-').next().expect("id").to_string();
    let users = format!("t-{id}");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/broker-users.sh");
    let credentials = env.dir.join("credentials");
    run(Command::new(script).args(["create", &env.prefix, "--users", &users, "--credentials"]).arg(&credentials));
    let _users = BrokerUsers(users.clone());
    let operator = format!("{users}-operator");
    host.start_supervisor();
    // Over the broker, where the order goes: the local socket answers before the supervisor
    // consumes its control queue, and an order sent then found no queue (seen under load).
    crate::harness::wait_until("the supervisor answers over the broker", Duration::from_secs(120), || {
        crate::supervisor::drover(&["status", "--fleet", "--expect", &host.name, "--config"], &host.config)
            .status
            .success()
    });

    // The operator's CLI, run by someone who claims to be another person.
    let out = Command::new(env!("CARGO_BIN_EXE_drover"))
        .args(["cordon", "--host", &host.name, "--reason", "who sent this", "--config"])
        .arg(&host.config)
        .env("SUDO_USER", "mallory")
        .env("USER", "mallory")
        .output()
        .expect("drover cordon");
    assert!(out.status.success(), "cordon: {}", String::from_utf8_lossy(&out.stderr));
    let cordons = timeline_of(&host.config, "cordon");
    assert_eq!(cordons.len(), 1, "{cordons:?}");
    // The sender is the operator login the broker checked; the body's claim (the person at
    // the terminal) only rides along, before `via`.
    assert_eq!(cordons[0].who, format!("mallory via {operator}"), "the order is the operator login's");
    assert_eq!(cordons[0].why, "who sent this");

    // The same login claiming another broker user's name in `user-id`: the broker refuses it.
    let password = std::fs::read_to_string(credentials.join("operator")).expect("password").trim().to_string();
    let url = drover::config::url_with_login(&crate::harness::amqp_url(), &operator, &password);
    let control = format!("{}.control", env.prefix);
    let key = format!("host.{}", host.name.replace('.', "_"));
    let publish = |user_id: Option<String>, conn: lapin::Connection| {
        let control = control.clone();
        let key = key.clone();
        async move {
            let chan = conn.create_channel().await?;
            chan.confirm_select(ConfirmSelectOptions::default()).await?;
            let mut props = BasicProperties::default();
            if let Some(u) = user_id {
                props = props.with_user_id(ShortString::from(u));
            }
            let body = br#"{"cmd": "note", "what": "forged note", "why": "test", "who": "mallory"}"#;
            let confirm = chan
                .basic_publish(
                    control.as_str().into(),
                    key.as_str().into(),
                    BasicPublishOptions::default(),
                    body,
                    props,
                )
                .await?;
            confirm.await
        }
    };
    let conn = lapin::Connection::connect(&url, lapin::ConnectionProperties::default()).await.expect("operator login");
    let forged = tokio::time::timeout(Duration::from_secs(30), publish(Some(format!("{users}-supervisor")), conn))
        .await
        .expect("an answer from the broker");
    let text = format!("{forged:?}");
    assert!(forged.is_err() && text.contains("PRECONDITION_FAILED"), "a forged user-id was accepted: {text}");

    // A request with no user-id at all (a client that does not set it) keeps its claim, marked
    // as unverified; the forged one never arrived.
    let guest = crate::harness::connect().await;
    tokio::time::timeout(Duration::from_secs(30), publish(None, guest))
        .await
        .expect("an answer from the broker")
        .expect("an unattributed publish is accepted");
    crate::harness::wait_until("the unattributed note is recorded", Duration::from_secs(30), || {
        !timeline_of(&host.config, "forged note").is_empty()
    });
    let notes = timeline_of(&host.config, "forged note");
    assert_eq!(notes.len(), 1, "only the unattributed note arrived: {notes:?}");
    assert_eq!(notes[0].who, "mallory (unverified)");
}

/// A process of ours, killed and reaped on drop.
struct Proc(std::process::Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The uid and gid of a user.
fn ids(user: &str) -> (u32, u32) {
    let name = std::ffi::CString::new(user).expect("name");
    // SAFETY: getpwnam with a valid C string; the entry is read at once.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    assert!(!pw.is_null(), "no user {user}");
    // SAFETY: non-null entry from getpwnam.
    unsafe { ((*pw).pw_uid, (*pw).pw_gid) }
}

/// The package's polkit rule, evaluated by the real polkitd: the `drover` user may manage the
/// worker units (`drover-worker@...`), not other units, not other systemd actions; another user
/// may not manage the worker units. PID 1 is not systemd on the test machine, so no system
/// manager asks polkit here: `pkcheck` asks it the question systemd asks (action
/// `org.freedesktop.systemd1.manage-units` with the `unit` detail) on a system bus of the test's
/// own (polkitd finds it through `DBUS_SYSTEM_BUS_ADDRESS`).
#[test]
fn the_polkit_rule_lets_the_drover_user_manage_worker_units_and_nothing_else() {
    use std::os::unix::process::CommandExt;
    let _drover = DroverUser::ensure();
    let dir = scratch("polkit");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let socket = dir.join("bus");
    std::fs::write(
        dir.join("bus.conf"),
        format!(
            r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN" "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
"#,
            socket.display()
        ),
    )
    .expect("bus config");
    let bus = format!("unix:path={}", socket.display());
    // The rule as the package ships it, where polkitd reads local rules (removed on drop).
    let id = dir.file_name().expect("name").to_string_lossy().rsplit('-').next().expect("id").to_string();
    let rule = PathBuf::from(format!("/etc/polkit-1/rules.d/50-drover-test-{id}.rules"));
    std::fs::copy(concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/50-drover.rules"), &rule).expect("install the rule");
    struct RemoveFile(PathBuf);
    impl Drop for RemoveFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let _rule = RemoveFile(rule);
    let _bus = Proc(
        Command::new("dbus-daemon")
            .arg(format!("--config-file={}", dir.join("bus.conf").display()))
            .arg("--nofork")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dbus-daemon (scripts/services.sh up installs it)"),
    );
    crate::harness::wait_until("the bus", Duration::from_secs(30), || socket.exists());
    let _polkitd = Proc(
        Command::new("/usr/lib/polkit-1/polkitd")
            .arg("--no-debug")
            .env("DBUS_SYSTEM_BUS_ADDRESS", &bus)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("polkitd (scripts/services.sh up installs it)"),
    );
    crate::harness::wait_until("polkitd on the bus", Duration::from_secs(30), || {
        Command::new("busctl")
            .args(["--system", "status", "org.freedesktop.PolicyKit1"])
            .env("DBUS_SYSTEM_BUS_ADDRESS", &bus)
            .output()
            .is_ok_and(|o| o.status.success())
    });
    // A process of each user, the subject polkit is asked about.
    let as_user = |user: &str| {
        let (uid, gid) = ids(user);
        Proc(Command::new("sleep").arg("120").uid(uid).gid(gid).spawn().expect("sleep"))
    };
    let (drover, nobody) = (as_user("drover"), as_user("nobody"));
    let allowed = |p: &Proc, action: &str, unit: Option<&str>| {
        let mut cmd = Command::new("pkcheck");
        cmd.args(["--action-id", action, "--process", &p.0.id().to_string()]);
        if let Some(u) = unit {
            cmd.args(["--detail", "unit", u]);
        }
        let out = cmd.env("DBUS_SYSTEM_BUS_ADDRESS", &bus).output().expect("pkcheck");
        // 0: authorized; 1: not; 2: only after authentication (there is nobody to ask).
        match out.status.code() {
            Some(0) => true,
            Some(1) | Some(2) => false,
            _ => panic!("pkcheck failed: {out:?}"),
        }
    };
    let manage = "org.freedesktop.systemd1.manage-units";
    assert!(allowed(&drover, manage, Some("drover-worker@inference-3.service")), "the supervisor manages its workers");
    assert!(!allowed(&drover, manage, Some("ssh.service")), "and no other unit");
    assert!(!allowed(&drover, manage, Some("drover-supervisor.service")), "not even its own unit");
    assert!(!allowed(&drover, "org.freedesktop.systemd1.manage-unit-files", None), "nor unit files");
    assert!(!allowed(&drover, "org.freedesktop.systemd1.reload-daemon", None), "nor a daemon reload");
    assert!(!allowed(&nobody, manage, Some("drover-worker@inference-3.service")), "another user may not");
    let _ = std::fs::remove_dir_all(dir);
}
