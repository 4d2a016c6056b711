//! The systemd adapter: the manager's D-Bus API (system or user bus), every call under a
//! deadline and timed, unit states read as strings so that a newer systemd's states are carried
//! instead of failing a whole listing (see the README's dependency notes on `zbus_systemd`).

use crate::config::Bus;
use crate::reconcile::Observed;
use futures_lite::StreamExt;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use zbus::fdo::PropertiesProxy;
use zbus::names::InterfaceName;
use zbus::zvariant::OwnedVariant;
use zbus_systemd::systemd1::ManagerProxy;

#[derive(Debug, thiserror::Error)]
pub enum SystemdError {
    /// The bus or the manager is unreachable: retry with backoff.
    #[error("systemd unavailable: {0}")]
    Unavailable(String),
    #[error("systemd did not answer {0} within {1:?}")]
    Timeout(&'static str, Duration),
    /// The manager refused the call (no such unit, bad unit file): retrying will not help.
    #[error("systemd refused {0}: {1}")]
    Refused(&'static str, String),
}

impl SystemdError {
    pub fn is_transient(&self) -> bool {
        !matches!(self, SystemdError::Refused(..))
    }
}

pub struct Systemd {
    conn: zbus::Connection,
    manager: ManagerProxy<'static>,
    timeout: Duration,
    /// D-Bus calls made, for the benchmark and `/metrics`.
    pub calls: AtomicU64,
    /// Service properties by unit object path, kept current by `PropertiesChanged` signals so
    /// that a pass costs one `ListUnitsByPatterns` instead of a `GetAll` per unit.
    cache: Arc<Mutex<HashMap<String, ServiceProps>>>,
}

/// The service properties the supervisor reads.
#[derive(Clone, Debug, Default)]
struct ServiceProps {
    main_pid: u32,
    n_restarts: u32,
    exec_main_code: i32,
    exec_main_status: i32,
    status_text: String,
}

impl ServiceProps {
    fn apply(&mut self, p: &HashMap<String, OwnedVariant>) {
        let u32_of = |k: &str| p.get(k).and_then(|v| u32::try_from(&**v).ok());
        let i32_of = |k: &str| p.get(k).and_then(|v| i32::try_from(&**v).ok());
        if let Some(v) = u32_of("MainPID") {
            self.main_pid = v;
        }
        if let Some(v) = u32_of("NRestarts") {
            self.n_restarts = v;
        }
        if let Some(v) = i32_of("ExecMainCode") {
            self.exec_main_code = v;
        }
        if let Some(v) = i32_of("ExecMainStatus") {
            self.exec_main_status = v;
        }
        if let Some(v) = p.get("StatusText").and_then(|v| String::try_from(v.clone()).ok()) {
            self.status_text = v;
        }
    }
}

const SERVICE_IFACE: &str = "org.freedesktop.systemd1.Service";

impl Systemd {
    pub async fn connect(bus: Bus, timeout: Duration) -> Result<Systemd, SystemdError> {
        let connecting = async {
            let conn = match bus {
                Bus::System => zbus::Connection::system().await,
                Bus::User => zbus::Connection::session().await,
            }?;
            let manager = ManagerProxy::new(&conn).await?;
            Ok::<_, zbus::Error>((conn, manager))
        };
        let (conn, manager) = tokio::time::timeout(timeout, connecting)
            .await
            .map_err(|_| SystemdError::Timeout("connect", timeout))?
            .map_err(|e| SystemdError::Unavailable(format!("cannot reach the {bus:?} bus: {e}")))?;
        let sd = Systemd { conn, manager, timeout, calls: AtomicU64::new(0), cache: Arc::default() };
        sd.call("Subscribe", sd.manager.subscribe()).await?;
        Ok(sd)
    }

    async fn call<T>(&self, what: &'static str, f: impl Future<Output = zbus::Result<T>>) -> Result<T, SystemdError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let r = tokio::time::timeout(self.timeout, f).await;
        metrics::histogram!(crate::io::metrics::DBUS_CALL_SECONDS, "method" => what)
            .record(started.elapsed().as_secs_f64());
        match r {
            Err(_) => Err(SystemdError::Timeout(what, self.timeout)),
            Ok(Ok(v)) => Ok(v),
            Ok(Err(zbus::Error::MethodError(name, msg, _))) => {
                let text = format!("{}: {}", name.as_str(), msg.unwrap_or_default());
                // The manager answered: a refusal, unless it says it is overloaded or going away.
                if name.as_str().contains("NoReply") || name.as_str().contains("Disconnected") {
                    Err(SystemdError::Unavailable(text))
                } else {
                    Err(SystemdError::Refused(what, text))
                }
            }
            Ok(Err(e)) => Err(SystemdError::Unavailable(format!("{what}: {e}"))),
        }
    }

    /// A channel that yields whenever something may have changed for units whose D-Bus path
    /// starts like `unit_prefix`'s: a finished job, a property change, a unit appearing or
    /// going away. Bursts are coalesced into one wake-up. It closes when the bus connection is
    /// lost.
    ///
    /// The signals are read by a task of their own, all the time: the match rule covers every
    /// unit of the manager, and a signal queue that nobody reads while the caller is busy with
    /// its own calls fills up and then holds back the replies to those calls too (zbus reads
    /// one socket for both), so the manager looks unresponsive.
    pub async fn changes(
        &self,
        unit_prefix: &str,
        tasks: &crate::tasks::Tasks,
    ) -> Result<tokio::sync::mpsc::Receiver<()>, SystemdError> {
        let rule = zbus::MatchRule::builder()
            .msg_type(zbus::message::Type::Signal)
            .path_namespace("/org/freedesktop/systemd1")
            .build()
            .map_err(|e| SystemdError::Unavailable(e.to_string()))?;
        let mut stream = self.call("AddMatch", zbus::MessageStream::for_match_rule(rule, &self.conn, None)).await?;
        let escaped = format!("/org/freedesktop/systemd1/unit/{}", bus_escape(unit_prefix));
        let cache = self.cache.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let cancel = tasks.token().clone();
        tasks.spawn(async move {
            loop {
                let m = tokio::select! {
                    m = stream.next() => m,
                    _ = tx.closed() => return,
                    _ = cancel.cancelled() => return,
                };
                let Some(m) = m else { return };
                let Ok(m) = m else { continue };
                let header = m.header();
                let member = header.member().map(|s| s.as_str().to_string()).unwrap_or_default();
                let path = header.path().map(|p| p.as_str().to_string()).unwrap_or_default();
                let ours = path.starts_with(&escaped);
                if ours && member == "PropertiesChanged" {
                    type Changed = (String, HashMap<String, OwnedVariant>, Vec<String>);
                    if let Ok((iface, changed, _)) = m.body().deserialize::<Changed>() {
                        if iface == SERVICE_IFACE {
                            if let Some(props) = cache.lock().ok().as_mut().and_then(|c| c.get_mut(&path)) {
                                props.apply(&changed);
                            }
                        }
                    }
                }
                if ours || matches!(member.as_str(), "JobRemoved" | "UnitNew" | "UnitRemoved") {
                    // Full means a wake-up is already pending: this change is covered by it.
                    if let Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) = tx.try_send(()) {
                        return;
                    }
                }
            }
        });
        Ok(rx)
    }

    /// Every loaded unit matching `pattern` (e.g. `drover-worker@*.service`) with the service
    /// properties the reconciler needs. Properties come from the signal-fed cache; `full`
    /// re-reads them all (the periodic resync, a backstop for a missed signal).
    pub async fn list(&self, pattern: &str, full: bool) -> Result<BTreeMap<String, Observed>, SystemdError> {
        let units = self
            .call("ListUnitsByPatterns", self.manager.list_units_by_patterns(vec![], vec![pattern.to_string()]))
            .await?;
        let mut out = BTreeMap::new();
        for (name, _desc, load, active, sub, _following, path, job_id, _job_type, _job_path) in units {
            let mut o = Observed {
                name: name.clone(),
                load_state: load,
                active_state: active,
                sub_state: sub,
                has_job: job_id != 0,
                ..Default::default()
            };
            let cached = if full { None } else { self.cache.lock().ok().and_then(|c| c.get(path.as_str()).cloned()) };
            if let Some(p) = cached {
                o.main_pid = p.main_pid;
                o.n_restarts = p.n_restarts;
                o.exec_main_code = p.exec_main_code;
                o.exec_main_status = p.exec_main_status;
                o.status_text = p.status_text;
            } else if o.load_state == "loaded" {
                let props = PropertiesProxy::builder(&self.conn)
                    .destination("org.freedesktop.systemd1")
                    .path(path.clone())
                    .cache_properties(zbus::proxy::CacheProperties::No)
                    .build()
                    .await
                    .map_err(|e| SystemdError::Unavailable(e.to_string()))?;
                let iface = InterfaceName::from_static_str_unchecked(SERVICE_IFACE);
                match self.call("GetAll", async { props.get_all(iface).await.map_err(zbus::Error::from) }).await {
                    Ok(p) => {
                        let mut props = ServiceProps::default();
                        props.apply(&p);
                        o.main_pid = props.main_pid;
                        o.n_restarts = props.n_restarts;
                        o.exec_main_code = props.exec_main_code;
                        o.exec_main_status = props.exec_main_status;
                        o.status_text = props.status_text.clone();
                        if let Ok(mut c) = self.cache.lock() {
                            c.insert(path.as_str().to_string(), props);
                        }
                    }
                    // The unit vanished between the two calls: report what the listing said.
                    Err(SystemdError::Refused(..)) => {}
                    Err(e) => return Err(e),
                }
            }
            out.insert(name, o);
        }
        Ok(out)
    }

    pub async fn start(&self, unit: &str) -> Result<(), SystemdError> {
        self.call("StartUnit", self.manager.start_unit(unit.to_string(), "replace".into())).await.map(|_| ())
    }

    pub async fn stop(&self, unit: &str) -> Result<(), SystemdError> {
        self.call("StopUnit", self.manager.stop_unit(unit.to_string(), "replace".into())).await.map(|_| ())
    }

    /// Sends `signal` to the unit's main process.
    pub async fn kill(&self, unit: &str, signal: i32) -> Result<(), SystemdError> {
        self.call("KillUnit", self.manager.kill_unit(unit.to_string(), "main".into(), signal)).await
    }

    pub async fn reset_failed(&self, unit: &str) -> Result<(), SystemdError> {
        self.call("ResetFailedUnit", self.manager.reset_failed_unit(unit.to_string())).await
    }

    pub async fn reload(&self) -> Result<(), SystemdError> {
        self.call("Reload", self.manager.reload()).await
    }
}

/// systemd's object-path escaping: every byte that is not an ASCII letter or digit becomes
/// `_xx` (hex); a leading digit is escaped too.
pub fn bus_escape(s: &str) -> String {
    let mut out = String::new();
    for (i, b) in s.bytes().enumerate() {
        if b.is_ascii_alphabetic() || (b.is_ascii_digit() && i > 0) {
            out.push(b as char);
        } else {
            out.push_str(&format!("_{b:02x}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn escapes_unit_names_as_systemd_does() {
        assert_eq!(super::bus_escape("drover-worker@a-1.service"), "drover_2dworker_40a_2d1_2eservice");
        assert_eq!(super::bus_escape("1x"), "_31x");
    }
}
