//! Loading the configuration: reads the file and what the machine says about the defaults (host
//! name, per-user directories), then hands both to the core's `Config::parse`.

use crate::config::{url_with_login, Config, ConfigError, Environment, Role};
use std::io::Read;
use std::path::{Path, PathBuf};

/// Reads and validates the configuration file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| Config::unreadable(&name, &e.to_string()))?;
    Config::parse(&text, &name, &environment())
}

/// Reads the configuration for a process of `role`: the broker URL then carries that role's
/// broker user and password (`[credentials.<role>]`). The password comes, first found, from
/// the systemd credential `broker-password` (`$CREDENTIALS_DIRECTORY`), from standard input
/// when the unit hands the file over that way (`DROVER_BROKER_PASSWORD_STDIN=1`, a worker),
/// from `$DROVER_BROKER_PASSWORD` (an environment file), or from `password_file`. It is never
/// logged, and it is taken out of the environment so that no child (a handler) inherits it.
pub fn load_as(path: &Path, role: Role) -> Result<Config, ConfigError> {
    let mut cfg = load(path)?;
    let name = path.display().to_string();
    let login = cfg.credentials.of(role).cloned();
    let key = format!("credentials.{}", role_name(role));
    let password = password(login.as_ref()).map_err(|e| Config::unreadable(&name, &format!("{key}: {e}")))?;
    match (password, login) {
        (Some(pw), Some(login)) => {
            cfg.broker.urls = cfg.broker.urls.iter().map(|u| url_with_login(u, &login.user, &pw)).collect();
        }
        (Some(pw), None) => {
            cfg.broker.urls = cfg
                .broker
                .urls
                .iter()
                .map(|u| url_with_login(u, &user_of(u).unwrap_or_else(|| "guest".into()), &pw))
                .collect();
        }
        (None, Some(login)) => {
            return Err(Config::unreadable(
                &name,
                &format!(
                    "{key}: no password for broker user `{}` (set password_file, or the broker-password credential)",
                    login.user
                ),
            ))
        }
        (None, None) => {}
    }
    if role == Role::Worker {
        // The handler runs as the same user: without this it could read the worker's memory
        // (and so the password) through /proc.
        // SAFETY: prctl with PR_SET_DUMPABLE takes plain integers.
        unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    }
    Ok(cfg)
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Worker => "worker",
        Role::Supervisor => "supervisor",
        Role::Operator => "operator",
    }
}

/// The URL's user, if it names one.
fn user_of(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
    let (userinfo, _) = authority.rsplit_once('@')?;
    Some(userinfo.split(':').next().unwrap_or("").to_string()).filter(|u| !u.is_empty())
}

fn password(login: Option<&crate::config::Login>) -> Result<Option<String>, String> {
    let trim = |s: String| s.trim_end_matches(['\n', '\r']).to_string();
    if let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") {
        let file = PathBuf::from(dir).join("broker-password");
        if file.exists() {
            return std::fs::read_to_string(&file)
                .map(|s| Some(trim(s)))
                .map_err(|e| format!("{}: {e}", file.display()));
        }
    }
    if std::env::var_os("DROVER_BROKER_PASSWORD_STDIN").is_some() {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).map_err(|e| format!("standard input: {e}"))?;
        // Standard input was the password file: nothing after this may read it again.
        // SAFETY: open and dup2 on descriptors this process owns.
        unsafe {
            let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY);
            if null >= 0 {
                libc::dup2(null, 0);
                libc::close(null);
            }
        }
        return Ok(Some(trim(text)));
    }
    if let Ok(pw) = std::env::var("DROVER_BROKER_PASSWORD") {
        // SAFETY: start-up, before any thread that reads the environment.
        std::env::remove_var("DROVER_BROKER_PASSWORD");
        return Ok(Some(pw));
    }
    match login.and_then(|l| l.password_file.as_ref()) {
        Some(file) => {
            std::fs::read_to_string(file).map(|s| Some(trim(s))).map_err(|e| format!("{}: {e}", file.display()))
        }
        None => Ok(None),
    }
}

/// The machine's defaults, read now.
pub fn environment() -> Environment {
    let var = |k: &str| std::env::var_os(k).map(PathBuf::from);
    Environment {
        hostname: hostname(),
        user_runtime_dir: var("XDG_RUNTIME_DIR").unwrap_or_else(std::env::temp_dir),
        user_state_dir: var("XDG_STATE_HOME")
            .or_else(|| var("HOME").map(|h| h.join(".local/state")))
            .unwrap_or_else(std::env::temp_dir),
    }
}

/// The host name (gethostname(2)); `localhost` if it cannot be read.
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into a buffer we own.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "localhost".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}
