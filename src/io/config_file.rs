//! Loading the configuration: reads the file and what the machine says about the defaults (host
//! name, per-user directories), then hands both to the core's `Config::parse`.

use crate::config::{Config, ConfigError, Environment};
use std::path::{Path, PathBuf};

/// Reads and validates the configuration file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| Config::unreadable(&name, &e.to_string()))?;
    Config::parse(&text, &name, &environment())
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
