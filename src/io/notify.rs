//! Talking to systemd from a worker: READY, STATUS, WATCHDOG, STOPPING (sd_notify(3)).
//! Outside systemd (`NOTIFY_SOCKET` unset) every call is a no-op, so `drover work` runs the same
//! in a terminal, in tests and in a unit.

use sd_notify::NotifyState;
use std::time::Duration;

pub fn ready() {
    if let Err(e) = sd_notify::notify(&[NotifyState::Ready]) {
        tracing::warn!("cannot tell systemd we are ready: {e}");
    }
}

pub fn stopping() {
    let _ = sd_notify::notify(&[NotifyState::Stopping]);
}

pub fn status(text: &str) {
    let _ = sd_notify::notify(&[NotifyState::Status(text)]);
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
