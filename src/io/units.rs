//! `drover install-units`: the unit files of `units/`, filled in for this binary and this
//! configuration, written where the chosen systemd manager reads them.

use crate::config::Config;
use crate::duration;
use std::path::{Path, PathBuf};
use std::time::Duration;

const WORKER: &str = include_str!("../../units/drover-worker@.service");
const SUPERVISOR: &str = include_str!("../../units/drover-supervisor.service");

/// Which manager the units are for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    System,
    User,
}

/// The user a system install's units run as when `systemd.user` is not set (the package
/// creates it).
pub const DEFAULT_USER: &str = "drover";

/// The name of the file of a class's drop-in, in each of its units' `<prefix>@<class>-<n>.service.d/`.
const DROP_IN: &str = "50-drover.conf";

/// The supervisor's unit for a worker template: `drover-supervisor.service` beside
/// `drover-worker@.service`, `dw-supervisor.service` beside `dw-worker@.service`, else
/// `<prefix>-supervisor.service`: one per installation.
pub fn supervisor_unit(unit_prefix: &str) -> String {
    let base = unit_prefix.strip_suffix("-worker").unwrap_or(unit_prefix);
    if base == unit_prefix {
        format!("{unit_prefix}-supervisor.service")
    } else {
        format!("{base}-supervisor.service")
    }
}

/// The files to write, by path relative to the unit directory: the worker template, the
/// supervisor, and for a class with needs of its own a drop-in for each of its units.
///
/// Per unit, not per class: systemd (252) applies the dash-truncated prefix drop-ins
/// (`dw@gpu-.service.d/`) to plain units only, never to a template's instances. So raising a
/// class's `workers` takes another `drover install-units`.
pub fn render(cfg: &Config, bin: &Path, config: &Path, scope: Scope) -> Vec<(String, String)> {
    let secs = |d: Duration| format!("{}s", d.as_secs().max(1));
    let start_timeout = cfg
        .classes
        .values()
        .map(|c| c.ready_timeout + cfg.worker.preflight_timeout * c.preflight.len() as u32)
        .max()
        .unwrap_or_default()
        + cfg.broker.connect_timeout
        + Duration::from_secs(30);
    let env: String = cfg.systemd.environment.iter().map(|e| format!("Environment={}\n", quote(e))).collect();
    let user = match (&cfg.systemd.user, scope) {
        (Some(u), _) if u == "root" => String::new(),
        (Some(u), _) => format!("User={}\n", u),
        (None, Scope::System) => format!("User={DEFAULT_USER}\n"),
        (None, Scope::User) => String::new(),
    };
    let target = match scope {
        Scope::System => "multi-user.target",
        Scope::User => "default.target",
    };
    let watchdog = if cfg.systemd.watchdog.is_zero() { "0".to_string() } else { secs(cfg.systemd.watchdog) };
    let fill = |t: &str, writable: &[String], credentials: String| {
        t.replace("@EXEC@", &exec_arg(&bin.display().to_string()))
            .replace("@CONFIG@", &exec_arg(&config.display().to_string()))
            .replace("@PREFIX@", &specifiers(&cfg.systemd.unit_prefix))
            .replace("@START_TIMEOUT@", &secs(start_timeout))
            .replace("@WATCHDOG@", &watchdog)
            .replace("@STOP_TIMEOUT@", &secs(stop_timeout(cfg)))
            .replace("@ENVIRONMENT@\n", &env)
            .replace("@USER@\n", &user)
            .replace("@TARGET@", target)
            .replace("@CREDENTIALS@\n", &credentials)
            .replace("@WRITABLE@\n", &read_write_paths(writable))
    };
    let relaxed = |t: String| -> String {
        t.lines()
            .filter(|l| !cfg.systemd.relax_sandbox.iter().any(|d| l.starts_with(&format!("{d}="))))
            .map(|l| format!("{l}\n"))
            .collect()
    };
    let sup_writable = supervisor_writable(cfg);
    let mut files = vec![
        (
            format!("{}@.service", cfg.systemd.unit_prefix),
            relaxed(fill(WORKER, &cfg.systemd.writable, credentials(cfg, crate::config::Role::Worker))),
        ),
        (
            supervisor_unit(&cfg.systemd.unit_prefix),
            relaxed(fill(
                SUPERVISOR,
                &sup_writable,
                credentials(cfg, crate::config::Role::Supervisor) + &page_tokens(cfg),
            )),
        ),
    ];
    for (instance, class) in drop_in_instances(cfg) {
        files.push((drop_in_path(&cfg.systemd.unit_prefix, &instance), drop_in(class)));
    }
    files
}

/// The units (instances) that get a drop-in, with their class.
fn drop_in_instances(cfg: &Config) -> Vec<(String, &crate::config::ClassConfig)> {
    cfg.classes
        .values()
        .filter(|c| !c.unit.is_empty())
        .flat_map(|c| (1..=c.workers).map(move |n| (format!("{}-{n}", c.name), c)))
        .collect()
}

/// What the supervisor writes besides its `RuntimeDirectory=` and `StateDirectory=` (the
/// defaults): a control socket or a state directory configured elsewhere.
fn supervisor_writable(cfg: &Config) -> Vec<String> {
    [cfg.supervisor.socket.parent().map(Path::to_path_buf), Some(cfg.alerts.state_dir.clone())]
        .into_iter()
        .flatten()
        .filter(|d| d != Path::new("/run/drover") && d != Path::new("/var/lib/drover"))
        .map(|d| d.display().to_string())
        .collect()
}

/// Where a unit's drop-in is, relative to the unit directory.
pub fn drop_in_path(prefix: &str, instance: &str) -> String {
    format!("{prefix}@{instance}.service.d/{DROP_IN}")
}

/// A class's drop-in: its devices (with `PrivateDevices=` lifted and every other device still
/// closed), writable paths and environment files.
fn drop_in(class: &crate::config::ClassConfig) -> String {
    let n = &class.unit;
    let mut out = format!(
        "# A unit of class `{}`: what the class needs beyond the template. Written by `drover install-units`.\n[Service]\n",
        class.name
    );
    if !n.devices.is_empty() {
        out.push_str("PrivateDevices=no\nDevicePolicy=closed\n");
        for d in &n.devices {
            out.push_str(&format!("DeviceAllow={}\n", specifiers(d)));
        }
    }
    out.push_str(&read_write_paths(&n.writable));
    for f in &n.environment_files {
        out.push_str(&format!("EnvironmentFile={}\n", specifiers(f)));
    }
    out
}

/// How a role's broker password reaches the process: the supervisor gets it as a systemd
/// credential (`LoadCredential=`, readable by it alone); a worker gets the file as its standard
/// input, opened by the manager, so that neither it nor the handler it runs as the same user can
/// open the file itself.
fn credentials(cfg: &Config, role: crate::config::Role) -> String {
    let Some(file) = cfg.credentials.of(role).and_then(|l| l.password_file.as_ref()) else {
        return String::new();
    };
    let file = specifiers(&file.display().to_string());
    match role {
        crate::config::Role::Worker => {
            format!("StandardInput=file:{file}\nStandardOutput=journal\nEnvironment=DROVER_BROKER_PASSWORD_STDIN=1\n")
        }
        _ => format!("LoadCredential=broker-password:{file}\n"),
    }
}

/// The page's operator tokens reach the supervisor as the systemd credential `web-token`
/// (readable by it alone, whatever the file's owner), when actions are on.
fn page_tokens(cfg: &Config) -> String {
    match &cfg.web.token_file {
        Some(file) if cfg.web.actions => {
            format!("LoadCredential=web-token:{}\n", specifiers(&file.display().to_string()))
        }
        _ => String::new(),
    }
}

fn read_write_paths(paths: &[String]) -> String {
    if paths.is_empty() {
        return String::new();
    }
    // `-`: a path that does not exist yet is skipped rather than failing the start.
    let list: Vec<String> = paths.iter().map(|p| format!("-{}", quote(p))).collect();
    format!("ReadWritePaths={}\n", list.join(" "))
}

/// `%` doubled: systemd reads `%x` as a specifier in nearly every setting.
fn specifiers(s: &str) -> String {
    s.replace('%', "%%")
}

/// One word in double quotes, as systemd unquotes it: backslashes and quotes escaped, control
/// characters as C escapes, `%` doubled.
fn quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '%' => out.push_str("%%"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// One argument of `ExecStart=`: quoted when it has anything systemd would split or read
/// (spaces, quotes, backslashes, `;`), with `$` doubled (no variable expansion) and `%` doubled.
fn exec_arg(s: &str) -> String {
    let plain = !s.is_empty() && !s.contains(|c: char| c.is_whitespace() || "\"'\\;".contains(c)) && s != ";";
    let s = s.replace('$', "$$");
    if plain {
        specifiers(&s)
    } else {
        quote(&s)
    }
}

/// Removes what [`render`] wrote for this configuration from `dir`: the template, the
/// supervisor, the drop-ins of every class (configured or not any more).
pub fn uninstall(cfg: &Config, dir: &Path) {
    let prefix = &cfg.systemd.unit_prefix;
    let _ = std::fs::remove_file(dir.join(format!("{prefix}@.service")));
    let _ = std::fs::remove_file(dir.join(supervisor_unit(prefix)));
    remove_drop_ins(dir, prefix, &[]);
}

/// Our drop-ins of this prefix's units not in `keep`: a class that lost its needs (or a unit
/// scaled away) must not keep its devices.
fn remove_drop_ins(dir: &Path, prefix: &str, keep: &[String]) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(instance) = name.strip_prefix(&format!("{prefix}@")).and_then(|r| r.strip_suffix(".service.d")) else {
            continue;
        };
        if !keep.iter().any(|k| k == instance) {
            let _ = std::fs::remove_file(e.path().join(DROP_IN));
            let _ = std::fs::remove_dir(e.path());
        }
    }
}

/// The unit's `TimeoutStopSec=`: the configured one, raised when it would not outlast the drain
/// deadline plus the kill grace (systemd's final SIGKILL must come after Drover's drain;
/// `check-config` warns about such a setting).
pub fn stop_timeout(cfg: &Config) -> Duration {
    let needed = cfg.worker.drain_deadline + cfg.worker.kill_grace + STOP_MARGIN;
    cfg.systemd.stop_timeout.max(needed)
}

/// What `TimeoutStopSec=` keeps beyond the drain deadline and the kill grace at least: the
/// worker's own shutdown (events settled, connection closed).
const STOP_MARGIN: Duration = Duration::from_secs(10);

/// Where the manager reads unit files: `/etc/systemd/system`, or the user's
/// `$XDG_CONFIG_HOME/systemd/user` (default `~/.config/systemd/user`).
pub fn unit_dir(system: bool) -> PathBuf {
    if system {
        return PathBuf::from("/etc/systemd/system");
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from("/root/.config"));
    base.join("systemd/user")
}

/// Writes the files of [`render`] and removes the drop-ins of classes that no longer have one.
pub fn install(cfg: &Config, dir: &Path, files: &[(String, String)]) -> std::io::Result<Vec<PathBuf>> {
    let written = write(dir, files)?;
    // Under ProtectSystem=strict a directory must exist to be made writable.
    for d in supervisor_writable(cfg) {
        let _ = std::fs::create_dir_all(d);
    }
    let keep: Vec<String> = drop_in_instances(cfg).into_iter().map(|(i, _)| i).collect();
    remove_drop_ins(dir, &cfg.systemd.unit_prefix, &keep);
    Ok(written)
}

pub fn write(dir: &Path, files: &[(String, String)]) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    files
        .iter()
        .map(|(name, text)| {
            let path = dir.join(name);
            let dir = path.parent().unwrap_or(dir);
            std::fs::create_dir_all(dir)?;
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            // Unique per writer: two installs at once (they share `drover-supervisor.service`)
            // must not rename each other's temporary file away.
            static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let tmp = dir.join(format!(".{name}.{}-{n}.tmp", std::process::id()));
            std::fs::write(&tmp, text)?;
            std::fs::rename(&tmp, &path)?;
            Ok(path)
        })
        .collect()
}

/// Describes the timeouts written, for the operator.
pub fn summary(cfg: &Config) -> String {
    let raised = if stop_timeout(cfg) > cfg.systemd.stop_timeout {
        format!(" (raised from systemd.stop_timeout = {})", duration::format(cfg.systemd.stop_timeout))
    } else {
        String::new()
    };
    format!(
        "stop timeout {}{raised} (drain deadline {} + kill grace {}), watchdog {}",
        duration::format(stop_timeout(cfg)),
        duration::format(cfg.worker.drain_deadline),
        duration::format(cfg.worker.kill_grace),
        if cfg.systemd.watchdog.is_zero() { "off".to_string() } else { duration::format(cfg.systemd.watchdog) }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installs_at_the_same_time_do_not_trip_over_each_other() {
        let dir = std::env::temp_dir().join(format!("drover-units-{}", std::process::id()));
        let files = vec![("shared.service".to_string(), "[Unit]\n".to_string())];
        let writers: Vec<_> = (0..8)
            .map(|_| {
                let (dir, files) = (dir.clone(), files.clone());
                std::thread::spawn(move || (0..50).map(|_| write(&dir, &files).map(|_| ())).collect::<Vec<_>>())
            })
            .collect();
        for w in writers {
            for r in w.join().expect("writer") {
                assert!(r.is_ok(), "{r:?}");
            }
        }
        assert_eq!(std::fs::read_to_string(dir.join("shared.service")).expect("written"), "[Unit]\n");
        let _ = std::fs::remove_dir_all(dir);
    }

    fn parse(text: &str) -> Config {
        Config::parse(text, "t", &crate::config::Environment::example()).expect("valid")
    }

    fn file<'a>(files: &'a [(String, String)], name: &str) -> &'a str {
        &files.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("no {name} in {files:?}")).1
    }

    #[test]
    fn the_pages_tokens_reach_the_supervisor_as_a_credential_only_with_actions_on() {
        let with = |web: &str| {
            let cfg =
                parse(&format!("[systemd]\nunit_prefix = \"dw\"\n[web]\n{web}\n[classes.x]\ncommand = [\"true\"]\n"));
            let files = render(&cfg, Path::new("/usr/bin/drover"), Path::new("/etc/drover.toml"), Scope::System);
            (file(&files, &supervisor_unit("dw")).to_string(), file(&files, "dw@.service").to_string())
        };
        let (sup, worker) = with("actions = true\ntoken_file = \"/etc/drover/web-tokens\"");
        assert!(sup.contains("LoadCredential=web-token:/etc/drover/web-tokens\n"), "{sup}");
        assert!(!worker.contains("web-token"), "{worker}");
        let (sup, _) = with("token_file = \"/etc/drover/web-tokens\"");
        assert!(!sup.contains("web-token"), "read-only: no tokens handed over: {sup}");
    }

    #[test]
    fn units_are_filled_in_from_the_configuration() {
        let cfg = parse(
            "[worker]\ndrain_deadline = \"5m\"\n[systemd]\nunit_prefix = \"dw\"\nenvironment = [\"A=1\"]\nrelax_sandbox = [\"ProtectKernelLogs\"]\n[classes.x]\ncommand = [\"true\"]\n",
        );
        let files = render(&cfg, Path::new("/usr/bin/drover"), Path::new("/etc/drover.toml"), Scope::System);
        assert_eq!(files[0].0, "dw@.service");
        let w = &files[0].1;
        assert!(w.contains("ExecStart=/usr/bin/drover work --config /etc/drover.toml --instance %i"));
        assert!(w.contains("TimeoutStopSec=370s"), "5m drain + 10s grace + 1m");
        // Issue 11: a stop is a drain: systemd's SIGTERM reaches the worker alone.
        assert!(w.contains("\nKillMode=mixed\n") && !w.contains("KillMode=control-group"));
        let short = parse(
            "[worker]\ndrain_deadline = \"5m\"\n[systemd]\nstop_timeout = \"1m\"\n[classes.x]\ncommand = [\"true\"]\n",
        );
        let raised = &render(&short, Path::new("/b"), Path::new("/c"), Scope::System)[0].1;
        assert!(raised.contains("TimeoutStopSec=320s"), "raised past 5m drain + 10s grace: {raised}");
        assert!(summary(&short).contains("raised from systemd.stop_timeout = 1m"), "{}", summary(&short));
        assert!(w.contains("Environment=\"A=1\""));
        assert!(w.contains("RestartPreventExitStatus=78"));
        assert!(w.contains("ProtectKernelTunables=yes") && !w.contains("ProtectKernelLogs"));
        assert!(!w.contains("@BIN@") && !w.contains("@EXEC@") && !w.contains("@USER@"), "every placeholder filled");
        assert!(w.contains("\nUser=drover\n") && w.contains("WantedBy=multi-user.target"), "{w}");
        // Issue 18: relax_sandbox reaches the supervisor too, which is named per prefix.
        assert_eq!(files[1].0, "dw-supervisor.service");
        let sup = &files[1].1;
        assert!(!sup.contains("@CONFIG@") && !sup.contains("ProtectKernelLogs") && sup.contains("\nUser=drover\n"));
    }

    #[test]
    fn user_installs_fit_a_user_manager() {
        let cfg = parse("[systemd]\nbus = \"user\"\n[classes.x]\ncommand = [\"true\"]\n");
        let files = render(&cfg, Path::new("/b"), Path::new("/c"), Scope::User);
        for (name, text) in &files {
            assert!(text.contains("WantedBy=default.target") && !text.contains("multi-user"), "{name}: {text}");
            assert!(!text.contains("/run/drover") && !text.contains("User="), "{name}: {text}");
        }
        assert_eq!(files[1].0, "drover-supervisor.service", "the default prefix keeps the documented name");
        // An explicit user is written for either manager; root means no User= at all.
        let as_ml = parse("[systemd]\nuser = \"ml\"\n[classes.x]\ncommand = [\"true\"]\n");
        assert!(render(&as_ml, Path::new("/b"), Path::new("/c"), Scope::User)[0].1.contains("\nUser=ml\n"));
        let as_root = parse("[systemd]\nuser = \"root\"\n[classes.x]\ncommand = [\"true\"]\n");
        assert!(!render(&as_root, Path::new("/b"), Path::new("/c"), Scope::System)[0].1.contains("User="));
        let no_watchdog = parse("[systemd]\nwatchdog = \"0\"\n[classes.x]\ncommand = [\"true\"]\n");
        assert!(render(&no_watchdog, Path::new("/b"), Path::new("/c"), Scope::User)[0].1.contains("\nWatchdogSec=0\n"));
    }

    #[test]
    fn values_are_escaped_for_systemd() {
        // (value, as one ExecStart= argument)
        let args = [
            ("/usr/bin/drover", "/usr/bin/drover"),
            ("/opt/my app/drover.toml", "\"/opt/my app/drover.toml\""),
            ("/etc/100%/d.toml", "/etc/100%%/d.toml"),
            ("/a\\b", "\"/a\\\\b\""),
            ("/a$HOME", "/a$$HOME"),
            ("say \"hi\"", "\"say \\\"hi\\\"\""),
            (";", "\";\""),
        ];
        for (value, want) in args {
            assert_eq!(exec_arg(value), want, "{value}");
        }
        // (value, as a quoted word of Environment= or ReadWritePaths=)
        let words = [
            ("A=1", "\"A=1\""),
            ("DB=postgres://u:p%40ss@h", "\"DB=postgres://u:p%%40ss@h\""),
            ("P=C:\\x", "\"P=C:\\\\x\""),
            ("Q=\"x\"", "\"Q=\\\"x\\\"\""),
            ("L=a\nb", "\"L=a\\nb\""),
        ];
        for (value, want) in words {
            assert_eq!(quote(value), want, "{value}");
        }
    }

    #[test]
    fn a_class_with_devices_gets_its_own_drop_in() {
        let cfg = parse(
            "[systemd]\nunit_prefix = \"dw\"\n[classes.inference]\ncommand = [\"x\"]\ndevices = [\"/dev/nvidiactl\", \"char-nvidia-uvm rwm\"]\nwritable = [\"/var/cache/models\"]\nenvironment_files = [\"/etc/drover/inference.env\"]\n[classes.cpu]\ncommand = [\"x\"]\n",
        );
        let files = render(&cfg, Path::new("/b"), Path::new("/c"), Scope::System);
        let d = file(&files, "dw@inference-1.service.d/50-drover.conf");
        for want in [
            "PrivateDevices=no\n",
            "DevicePolicy=closed\n",
            "DeviceAllow=/dev/nvidiactl rw\n",
            "DeviceAllow=char-nvidia-uvm rwm\n",
            "ReadWritePaths=-\"/var/cache/models\"\n",
            "EnvironmentFile=/etc/drover/inference.env\n",
        ] {
            assert!(d.contains(want), "{want} missing: {d}");
        }
        assert!(!files.iter().any(|(n, _)| n.contains("@cpu-")), "a class without needs has no drop-in");
        let scaled = parse("[classes.gpu]\ncommand = [\"x\"]\nworkers = 3\ndevices = [\"/dev/nvidia0\"]\n");
        let names: Vec<String> =
            render(&scaled, Path::new("/b"), Path::new("/c"), Scope::System).into_iter().skip(2).map(|f| f.0).collect();
        assert_eq!(
            names,
            [
                "drover-worker@gpu-1.service.d/50-drover.conf",
                "drover-worker@gpu-2.service.d/50-drover.conf",
                "drover-worker@gpu-3.service.d/50-drover.conf"
            ]
        );
        assert!(file(&files, "dw@.service").contains("\nPrivateDevices=yes\n"), "the template keeps devices private");
    }
}
