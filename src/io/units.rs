//! `drover install-units`: the unit files of `units/`, filled in for this binary and this
//! configuration, written where the chosen systemd manager reads them.

use crate::config::Config;
use crate::duration;
use std::path::{Path, PathBuf};
use std::time::Duration;

const WORKER: &str = include_str!("../../units/drover-worker@.service");
const SUPERVISOR: &str = include_str!("../../units/drover-supervisor.service");

/// The files to write: (file name, contents).
pub fn render(cfg: &Config, bin: &Path, config: &Path) -> Vec<(String, String)> {
    let secs = |d: Duration| format!("{}s", d.as_secs().max(1));
    let start_timeout = cfg
        .classes
        .values()
        .map(|c| c.ready_timeout + cfg.worker.preflight_timeout * c.preflight.len() as u32)
        .max()
        .unwrap_or_default()
        + cfg.broker.connect_timeout
        + Duration::from_secs(30);
    let env: String =
        cfg.systemd.environment.iter().map(|e| format!("Environment=\"{}\"\n", e.replace('"', "\\\""))).collect();
    let fill = |t: &str| {
        t.replace("@BIN@", &bin.display().to_string())
            .replace("@CONFIG@", &config.display().to_string())
            .replace("@START_TIMEOUT@", &secs(start_timeout))
            .replace("@WATCHDOG@", &secs(cfg.systemd.watchdog))
            .replace("@STOP_TIMEOUT@", &secs(stop_timeout(cfg)))
            .replace("@ENVIRONMENT@\n", &env)
    };
    let relaxed = |t: String| -> String {
        t.lines()
            .filter(|l| !cfg.systemd.relax_sandbox.iter().any(|d| l.starts_with(&format!("{d}="))))
            .map(|l| format!("{l}\n"))
            .collect()
    };
    vec![
        (format!("{}@.service", cfg.systemd.unit_prefix), relaxed(fill(WORKER))),
        ("drover-supervisor.service".to_string(), fill(SUPERVISOR)),
    ]
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

pub fn write(dir: &Path, files: &[(String, String)]) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    files
        .iter()
        .map(|(name, text)| {
            let path = dir.join(name);
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
        duration::format(cfg.systemd.watchdog)
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

    #[test]
    fn units_are_filled_in_from_the_configuration() {
        let cfg = Config::parse(
            "[worker]\ndrain_deadline = \"5m\"\n[systemd]\nunit_prefix = \"dw\"\nenvironment = [\"A=1\"]\nrelax_sandbox = [\"ProtectKernelLogs\"]\n[classes.x]\ncommand = [\"true\"]\n",
            "t",
            &crate::config::Environment::example(),
        )
        .expect("valid");
        let files = render(&cfg, Path::new("/usr/bin/drover"), Path::new("/etc/drover.toml"));
        assert_eq!(files[0].0, "dw@.service");
        let w = &files[0].1;
        assert!(w.contains("ExecStart=/usr/bin/drover work --config /etc/drover.toml --instance %i"));
        assert!(w.contains("TimeoutStopSec=370s"), "5m drain + 10s grace + 1m");
        // Issue 11: a stop is a drain: systemd's SIGTERM reaches the worker alone.
        assert!(w.contains("\nKillMode=mixed\n") && !w.contains("KillMode=control-group"));
        let short = Config::parse(
            "[worker]\ndrain_deadline = \"5m\"\n[systemd]\nstop_timeout = \"1m\"\n[classes.x]\ncommand = [\"true\"]\n",
            "t",
            &crate::config::Environment::example(),
        )
        .expect("valid");
        let raised = &render(&short, Path::new("/b"), Path::new("/c"))[0].1;
        assert!(raised.contains("TimeoutStopSec=320s"), "raised past 5m drain + 10s grace: {raised}");
        assert!(summary(&short).contains("raised from systemd.stop_timeout = 1m"), "{}", summary(&short));
        assert!(w.contains("Environment=\"A=1\""));
        assert!(w.contains("RestartPreventExitStatus=78"));
        assert!(w.contains("ProtectKernelTunables=yes") && !w.contains("ProtectKernelLogs"));
        assert!(!w.contains('@') || !w.contains("@BIN@"), "every placeholder filled");
        assert!(!files[1].1.contains("@CONFIG@"));
    }
}
