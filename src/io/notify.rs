//! Talking to systemd from a worker: READY, STATUS, WATCHDOG, STOPPING (sd_notify(3)).
//! Outside systemd (`NOTIFY_SOCKET` unset) every call is a no-op, so `drover work` runs the same
//! in a terminal, in tests and in a unit.
//!
//! STATUS goes out twice per job (the job it runs, then idle): through one socket opened at the
//! first use, rather than a socket and an environment read per message as `sd_notify::notify`
//! does; [`enabled`] lets a caller skip formatting a line nobody reads.

use sd_notify::NotifyState;
use std::os::unix::net::UnixDatagram;
use std::sync::OnceLock;
use std::time::Duration;

pub fn ready() {
    if let Err(e) = sd_notify::notify(&[NotifyState::Ready]) {
        tracing::warn!("cannot tell systemd we are ready: {e}");
    }
}

pub fn stopping() {
    let _ = sd_notify::notify(&[NotifyState::Stopping]);
}

/// systemd's notification socket, connected once (`None` outside systemd or when it cannot
/// be reached).
fn socket() -> Option<&'static UnixDatagram> {
    static SOCKET: OnceLock<Option<UnixDatagram>> = OnceLock::new();
    SOCKET
        .get_or_init(|| {
            use std::os::unix::ffi::OsStrExt;
            let path = std::env::var_os("NOTIFY_SOCKET")?;
            let addr = match path.as_bytes().strip_prefix(b"@") {
                Some(name) => {
                    use std::os::linux::net::SocketAddrExt;
                    std::os::unix::net::SocketAddr::from_abstract_name(name).ok()?
                }
                None => std::os::unix::net::SocketAddr::from_pathname(&path).ok()?,
            };
            let sock = UnixDatagram::unbound().ok()?;
            sock.connect_addr(&addr).ok()?;
            Some(sock)
        })
        .as_ref()
}

/// Whether systemd listens (`NOTIFY_SOCKET` was set when the worker started).
pub fn enabled() -> bool {
    socket().is_some()
}

pub fn status(text: &str) {
    let Some(sock) = socket() else { return };
    let mut msg = Vec::with_capacity(text.len() + 8);
    msg.extend_from_slice(b"STATUS=");
    // A newline would end the assignment early.
    msg.extend(text.bytes().map(|b| if b == b'\n' { b' ' } else { b }));
    msg.push(b'\n');
    let _ = sock.send(&msg);
}

/// Pings the watchdog at half its interval for as long as the worker's runtime runs: if the
/// worker's event loop wedges, the pings stop and systemd restarts the unit. Returns at once
/// when the unit has no watchdog.
pub async fn watchdog_loop(cancel: tokio_util::sync::CancellationToken) {
    let Some(interval) = sd_notify::watchdog_enabled() else {
        return;
    };
    let mut tick = tokio::time::interval((interval / 2).max(Duration::from_millis(100)));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = cancel.cancelled() => return,
        }
        let _ = sd_notify::notify(&[NotifyState::Watchdog]);
    }
}
