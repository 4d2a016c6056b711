//! Drover's configuration: TOML read once into typed values, with every problem reported at once.
//!
//! The file is walked by hand rather than through `#[derive(Deserialize)]` because serde stops at
//! the first error, and an operator fixing a config at 3 a.m. wants the whole list: each problem
//! with its key, what was found and what would be accepted. Unknown keys are problems too, since a
//! typo such as `max_attemps` would otherwise silently fall back to a default.

use crate::backoff::Backoff;
use crate::duration;
use crate::topology;
pub use crate::topology::QueueType;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use toml::{Table, Value};

#[derive(Clone, Debug)]
pub struct Config {
    pub host: String,
    pub broker: BrokerConfig,
    pub systemd: SystemdConfig,
    pub metrics: MetricsConfig,
    pub web: WebConfig,
    pub supervisor: SupervisorConfig,
    pub alerts: AlertsConfig,
    pub quarantine: QuarantineConfig,
    pub worker: WorkerConfig,
    pub classes: BTreeMap<String, ClassConfig>,
    pub credentials: Credentials,
}

/// Which broker user each kind of process connects as (least privilege: a worker cannot publish
/// orders, an operator cannot consume jobs), and where its password is kept.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Credentials {
    pub worker: Option<Login>,
    pub supervisor: Option<Login>,
    pub operator: Option<Login>,
}

/// A broker user and its password's file (`$CREDENTIALS_DIRECTORY/broker-password` when systemd
/// hands it over as a credential, or `$DROVER_BROKER_PASSWORD` from an environment file, instead).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Login {
    pub user: String,
    pub password_file: Option<PathBuf>,
}

/// The kinds of process, each with its own broker user.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Worker,
    Supervisor,
    Operator,
}

impl Credentials {
    pub fn of(&self, role: Role) -> Option<&Login> {
        match role {
            Role::Worker => self.worker.as_ref(),
            Role::Supervisor => self.supervisor.as_ref(),
            Role::Operator => self.operator.as_ref(),
        }
    }
}

/// The broker URL with `user` and `password` as its user information (percent-encoded), in
/// place of any the URL had.
pub fn url_with_login(url: &str, user: &str, password: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let host = match rest[..authority_end].rsplit_once('@') {
        Some((_, host)) => host,
        None => &rest[..authority_end],
    };
    format!("{scheme}://{}:{}@{host}{}", percent(user), percent(password), &rest[authority_end..])
}

fn percent(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[derive(Clone, Debug)]
pub struct BrokerConfig {
    /// The broker's nodes (`broker.url`, one URL or a list): connections rotate through them.
    pub urls: Vec<String>,
    /// `broker.queue_type`: classic or quorum queues for work, dead letters, delays and leases.
    pub queue_type: QueueType,
    /// `broker.management_url`: the management API, where start-up reads the broker's policies.
    pub management_url: Option<String>,
    /// Delivery limit of each class's work queue on quorum queues (`topology::delivery_limit`).
    pub delivery_limits: BTreeMap<String, u32>,
    /// Prefix of every queue and exchange Drover declares, so that several Drover
    /// installations (or test runs) can share a broker.
    pub prefix: String,
    /// The broker's `consumer_timeout`: a delivery held unacknowledged longer than this makes
    /// the broker close the channel. AMQP does not expose it, so it is configured; the default
    /// is RabbitMQ's own (30 minutes since 3.8.17).
    pub consumer_timeout: Duration,
    /// Deadline of one connection attempt (TCP, TLS and the AMQP handshake).
    pub connect_timeout: Duration,
    /// Deadline of one broker operation (declare, publish confirm).
    pub op_timeout: Duration,
    pub reconnect: Backoff,
    /// Length of a broker-held lease on a long job (see `work::lease`).
    pub lease_ttl: Duration,
    /// Queue expiry (`x-expires`) for every queue Drover declares: for throw-away environments
    /// such as tests; unset in production.
    pub queue_expires: Option<Duration>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bus {
    System,
    User,
}

#[derive(Clone, Debug)]
pub struct SystemdConfig {
    pub bus: Bus,
    /// Name of the worker template, without `@.service`: units are `<unit_prefix>@<class>-<n>.service`.
    pub unit_prefix: String,
    /// `WatchdogSec=` of the worker units.
    pub watchdog: Duration,
    /// Extra `KEY=value` environment for the worker units.
    pub environment: Vec<String>,
    /// Deadline of one D-Bus call.
    pub call_timeout: Duration,
    /// Sandboxing directives of the worker template to leave out, for hosts that cannot apply
    /// them (containers that forbid remounting `/proc/sys`, say).
    pub relax_sandbox: Vec<String>,
    /// `TimeoutStopSec=` of the worker units: must be longer than the drain deadline plus the
    /// kill grace, or systemd kills what Drover is still draining.
    pub stop_timeout: Duration,
    /// `User=` of the units: `None` unset (a system install then runs as `drover`, a user
    /// manager's units as that user); `root` for no `User=` at all.
    pub user: Option<String>,
    /// Paths every worker may write (`ReadWritePaths=`); the rest of the system is read-only.
    pub writable: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct SupervisorConfig {
    /// The control socket `drover status` and friends talk to.
    pub socket: std::path::PathBuf,
    /// Unit starts per second (staggered with jitter within each slot).
    pub start_rate: f64,
    pub restart: Backoff,
    /// Running this long resets a unit's restart backoff.
    pub stable_after: Duration,
    /// Consecutive failures that make a unit `failing` (and raise an alert).
    pub failing_after: u32,
    /// Full resync with systemd, as a backstop to its signals.
    pub resync: Duration,
}

#[derive(Clone, Debug)]
pub struct AlertsConfig {
    /// An Alertmanager-compatible webhook (http://host:port/path) that receives every firing
    /// and resolved alert.
    pub webhook: Option<String>,
    /// Alertmanagers that Drover posts its alerts to (`/api/v2/alerts`), re-sent while firing.
    pub alertmanager: AlertmanagerConfig,
    /// Where the latency baselines are kept across restarts.
    pub state_dir: std::path::PathBuf,
    pub evaluate_every: Duration,
    /// A condition must hold this long before it fires (drift alerts have their own evidence
    /// and fire at once).
    pub fire_after: Duration,
    /// Hold-down: an alert resolves only after its condition has been clear this long.
    pub resolve_after: Duration,
    /// Completions a class needs before its drift detector may alert.
    pub drift_warmup: u64,
    /// How unusual a still-running job must be (robust z of its age against the class's
    /// baseline) to be reported.
    pub running_evidence: f64,
    /// Stalled: a backlog and no completion for this many usual gaps, and at least `stall_min`.
    pub stall_gaps: f64,
    pub stall_min: Duration,
}

/// How Drover reaches Alertmanager: every URL of the list gets every alert (Alertmanager
/// deduplicates), the firing ones again every `resend`.
#[derive(Clone, Debug, Default)]
pub struct AlertmanagerConfig {
    pub urls: Vec<String>,
    /// Re-send firing alerts this often; each says it ends after four of these unless re-sent.
    pub resend: Duration,
    /// A PEM file of CA certificates to trust instead of the system's roots.
    pub ca_file: Option<std::path::PathBuf>,
    /// A file with the credentials: `user:password` (basic) or a token (bearer).
    pub credentials_file: Option<std::path::PathBuf>,
    pub auth: AmAuth,
    /// The base of each alert's `generatorURL` (its `/alerts` page on the supervisor's HTTP
    /// server); default `http://<host>:<metrics port>`.
    pub external_url: Option<String>,
    /// `alerts.runbook_base`: where each alert's `runbook_url` points, `<base>/<page>.md` with
    /// the page names of `docs/runbooks/`; default `<external_url>/runbooks`, the pages the
    /// supervisor serves itself.
    pub runbook_base: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AmAuth {
    #[default]
    None,
    Basic,
    Bearer,
}

#[derive(Clone, Debug)]
pub struct QuarantineConfig {
    pub enabled: bool,
    /// How long a quarantined worker (or a paused class) waits before a probe; doubles each
    /// time the probe fails, up to `hold_max`.
    pub hold: Duration,
    pub hold_max: Duration,
    /// Fewest failures before a worker or host is quarantined.
    pub min_failures: u32,
    /// Significance of the test against the rest of the fleet (quarantine).
    pub alpha: f64,
    /// `false`: shadow mode: decide, record and alert what would be done, without acting.
    pub enforce: bool,
    /// Significance at which a worker or host is cordoned as a suspect (running jobs far older
    /// than the fleet's, failures); looser than `alpha`.
    pub cordon_alpha: f64,
    /// The rest of the fleet's quantile the suspects' evidence names (the test weighs every
    /// running job's age by the fleet's survival there).
    pub tail_quantile: f64,
    /// A host whose jobs succeed this many times slower than the rest's median is cordoned.
    pub slow_factor: f64,
    /// At most this share of a class's units, and of its hosts, out at once (at least one).
    pub max_quarantined: f64,
    /// Fewest recent attempts of a class elsewhere in the fleet before a suspect is judged.
    pub min_reference: usize,
}

impl QuarantineConfig {
    /// The policy of [`crate::suspects`] these settings describe.
    pub fn suspect_policy(&self) -> crate::suspects::SuspectPolicy {
        crate::suspects::SuspectPolicy {
            alpha: self.alpha,
            enforce: self.enforce,
            cordon_alpha: self.cordon_alpha,
            tail_quantile: self.tail_quantile,
            slow_factor: self.slow_factor,
            max_quarantined: self.max_quarantined,
            min_reference: self.min_reference,
            ..Default::default()
        }
    }
}

#[derive(Clone, Debug)]
pub struct MetricsConfig {
    pub listen: Option<SocketAddr>,
}

/// The supervisor's page (`[web]`): served at `/` on the metrics address, and on `listen` too
/// when set. Read-only unless `actions` is on; every action needs a token from `token_file`
/// (handed to the supervisor as the systemd credential `web-token`).
#[derive(Clone, Debug, PartialEq)]
pub struct WebConfig {
    /// Whether the page is served at all (on the metrics address and `listen`).
    pub enabled: bool,
    /// A second address for the page (and `/metrics`), besides `metrics.listen`.
    pub listen: Option<SocketAddr>,
    /// Whether drain, cordon, undrain, quarantine release and dead-letter requeue are offered.
    pub actions: bool,
    /// The operators' tokens, one `name:token` a line.
    pub token_file: Option<PathBuf>,
    /// How often an open page is brought up to date.
    pub refresh: Duration,
    /// Where the runbooks of the supervisor's alerts live (`<runbooks>/<alert>.md`), for the
    /// alerts' links; unset: only the alerts' own `runbook_url` annotations.
    pub runbooks: Option<String>,
}

#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// How long a job in flight may go on after a worker is asked to stop.
    pub drain_deadline: Duration,
    /// Between TERM and KILL when a handler's process group is stopped.
    pub kill_grace: Duration,
    /// Deadline of each preflight check.
    pub preflight_timeout: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Exec,
    Persistent,
}

/// When a job runs under a broker-held lease instead of an unacknowledged delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseMode {
    /// When an attempt may outlast the broker's `consumer_timeout`.
    Auto,
    Always,
    Never,
}

#[derive(Clone, Debug)]
pub struct ClassConfig {
    pub name: String,
    pub mode: Mode,
    pub command: Vec<String>,
    pub workers: u32,
    pub timeout: Duration,
    pub deadline: Duration,
    pub max_attempts: u32,
    pub preflight: Vec<Vec<String>>,
    pub prefetch: u16,
    pub retry: Backoff,
    /// Persistent mode: how long the handler may take to print `{"ready": true}`.
    pub ready_timeout: Duration,
    /// Persistent mode: whether to wait for `{"ready": true}` before taking jobs.
    pub wait_ready: bool,
    pub lease: LeaseMode,
    /// During a drain, requeue at once a job expected to need clearly longer than the time left
    /// (instead of burning work until the deadline).
    pub drain_early_requeue: bool,
    /// Dead-letter a job (reason `poison`) once it failed on this many distinct workers; 0: never.
    pub poison_after: u32,
    /// How long a retry is offered to hosts it has not failed on before one it failed on may run
    /// it (`outcome::hand_back`); zero: no steering.
    pub avoid_failed_hosts: Duration,
    /// An attempt whose handler reports no progress (no heartbeat) for this long is hung: killed
    /// and counted as a timeout, before its `timeout`. None: handlers need not heartbeat.
    pub heartbeat_timeout: Option<Duration>,
    /// What this class's units need beyond the worker template (its drop-in).
    pub unit: UnitNeeds,
}

/// A class's own unit settings, written as a drop-in of each of its units
/// (`<unit_prefix>@<class>-<n>.service.d/`), so that only its units get them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UnitNeeds {
    /// `DeviceAllow=` entries (`/dev/nvidia0`, `char-nvidia-uvm`, optionally with `r`, `rw`,
    /// `rwm`); any lifts `PrivateDevices=` for the class.
    pub devices: Vec<String>,
    /// `ReadWritePaths=` (model caches, output directories).
    pub writable: Vec<String>,
    /// `EnvironmentFile=` (secrets of the job's own, such as an API token).
    pub environment_files: Vec<String>,
}

impl UnitNeeds {
    pub fn is_empty(&self) -> bool {
        self.devices.is_empty() && self.writable.is_empty() && self.environment_files.is_empty()
    }
}

impl ClassConfig {
    /// Whether an attempt of this class runs under a lease rather than holding its delivery.
    pub fn uses_lease(&self, broker: &BrokerConfig, kill_grace: Duration) -> bool {
        match self.lease {
            LeaseMode::Always => true,
            LeaseMode::Never => false,
            // A minute of margin for the time between delivery and start, and clock slop.
            LeaseMode::Auto => self.timeout + kill_grace + Duration::from_secs(60) >= broker.consumer_timeout,
        }
    }
}

/// One thing wrong with a configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub found: String,
    pub accepted: String,
    /// Where in the file (line, column, from 1): the key, or for a missing key its table.
    pub at: Option<(usize, usize)>,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some((line, column)) = self.at {
            write!(f, "line {line}, column {column}: ")?;
        }
        write!(f, "{}: found {}; accepted: {}", self.key, self.found, self.accepted)
    }
}

/// A configuration that was refused, with everything wrong in it.
#[derive(Debug)]
pub struct ConfigError {
    pub source_name: String,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        write!(f, "{}: {n} problem{}", self.source_name, if n == 1 { "" } else { "s" })?;
        for p in &self.problems {
            write!(f, "\n  - {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Something legal but likely wrong, such as timeouts that disagree between layers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning(pub String);

impl Config {
    /// The error for a file that cannot be read: one problem like any other.
    pub fn unreadable(source_name: &str, error: &str) -> ConfigError {
        ConfigError {
            source_name: source_name.to_string(),
            problems: vec![Problem {
                key: "(file)".into(),
                found: error.to_string(),
                accepted: "a readable TOML file".into(),
                at: None,
            }],
        }
    }

    /// Parses and validates a configuration. `env` supplies the defaults that depend on the
    /// machine (host name, per-user directories): read by the caller, never here.
    pub fn parse(text: &str, source_name: &str, env: &Environment) -> Result<Config, ConfigError> {
        let fail = |problems| ConfigError { source_name: source_name.to_string(), problems };
        let table: Table = text.parse().map_err(|e: toml::de::Error| {
            fail(vec![Problem {
                key: "(syntax)".into(),
                found: e.message().trim().to_string(),
                accepted: "valid TOML".into(),
                at: e.span().map(|s| line_column(text, s.start)),
            }])
        })?;
        let mut r = Reader::default();
        let config = read_config(&mut r, &table, env);
        if r.problems.is_empty() {
            Ok(config)
        } else {
            let spans = spans::of(text);
            for p in &mut r.problems {
                p.at = spans::find(&spans, &p.key).map(|offset| line_column(text, offset));
            }
            Err(fail(r.problems))
        }
    }

    pub fn class(&self, name: &str) -> Result<&ClassConfig, String> {
        self.classes.get(name).ok_or_else(|| {
            let known: Vec<_> = self.classes.keys().map(String::as_str).collect();
            format!("no class `{name}` in the configuration (classes: {})", known.join(", "))
        })
    }

    /// Legal settings that are likely wrong.
    pub fn warnings(&self) -> Vec<Warning> {
        let mut w = Vec::new();
        let needed = self.worker.drain_deadline + self.worker.kill_grace;
        if self.systemd.stop_timeout <= needed {
            w.push(Warning(format!(
                "systemd.stop_timeout ({}) is not longer than worker.drain_deadline + worker.kill_grace ({}): \
                 systemd would kill workers that are still draining; make it at least {}",
                duration::format(self.systemd.stop_timeout),
                duration::format(needed),
                duration::format(needed + Duration::from_secs(30)),
            )));
        }
        let page_addrs = [self.metrics.listen, self.web.listen];
        if self.web.actions && page_addrs.iter().all(Option::is_none) {
            w.push(Warning(
                "web.actions is on but no address serves the page: set metrics.listen or web.listen".into(),
            ));
        }
        for addr in page_addrs.iter().flatten().filter(|a| self.web.enabled && !a.ip().is_loopback()) {
            w.push(Warning(format!(
                "the page is served on {addr}, not a loopback address: anyone who reaches it sees the fleet{}; \
                 serve it on 127.0.0.1 behind a reverse proxy with TLS",
                if self.web.actions { ", and the operators' tokens travel in clear" } else { "" }
            )));
        }
        for c in self.classes.values() {
            if c.timeout > c.deadline {
                w.push(Warning(format!(
                    "classes.{}.timeout ({}) is longer than its deadline ({}): the deadline will cut attempts short",
                    c.name,
                    duration::format(c.timeout),
                    duration::format(c.deadline)
                )));
            }
            if c.lease == LeaseMode::Never && c.timeout >= self.broker.consumer_timeout {
                w.push(Warning(format!(
                    "classes.{}.timeout ({}) reaches broker.consumer_timeout ({}) and lease = \"never\": \
                     the broker will close the channel under long jobs and hand them to another worker",
                    c.name,
                    duration::format(c.timeout),
                    duration::format(self.broker.consumer_timeout)
                )));
            }
        }
        w
    }
}

/// The sandboxing directives of the worker template that `systemd.relax_sandbox` may leave out.
pub const SANDBOX_DIRECTIVES: &[&str] = &[
    "NoNewPrivileges",
    "ProtectSystem",
    "ProtectHome",
    "PrivateTmp",
    "PrivateDevices",
    "ProtectKernelTunables",
    "ProtectKernelModules",
    "ProtectKernelLogs",
    "ProtectControlGroups",
    "ProtectClock",
    "ProtectHostname",
    "RestrictSUIDSGID",
    "RestrictRealtime",
    "RestrictNamespaces",
    "LockPersonality",
    "SystemCallArchitectures",
    "RestrictAddressFamilies",
    "CapabilityBoundingSet",
    "SystemCallFilter",
    "MemoryDenyWriteExecute",
    "PrivateUsers",
    "ProtectProc",
    "ProcSubset",
    "PrivateMounts",
    "PrivateIPC",
    "RemoveIPC",
    "DevicePolicy",
];

/// What the machine says about the defaults: gathered by the caller (`io::config_file`), so
/// that parsing reads nothing but its text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Environment {
    /// The host name, the default for `host`.
    pub hostname: String,
    /// `$XDG_RUNTIME_DIR` (or the temporary directory): a user manager's control socket lives here.
    pub user_runtime_dir: PathBuf,
    /// `$XDG_STATE_HOME` (or `~/.local/state`, or the temporary directory): a user manager's state.
    pub user_state_dir: PathBuf,
}

impl Environment {
    /// A fixed environment for tests and examples.
    pub fn example() -> Environment {
        Environment {
            hostname: "gpu-node-7".into(),
            user_runtime_dir: PathBuf::from("/run/user/1000"),
            user_state_dir: PathBuf::from("/home/ml/.local/state"),
        }
    }
}

fn read_config(r: &mut Reader, root: &Table, env: &Environment) -> Config {
    let host = r.string(root, "", "host", "a non-empty host name").unwrap_or_else(|| env.hostname.clone());
    if host.trim().is_empty() {
        r.problem("host", "an empty string", "a non-empty host name");
    }

    let broker = read_broker(r, root);
    let worker = read_worker(r, root);
    let systemd = read_systemd(r, root, &worker);
    let metrics = read_metrics(r, root);
    let web = read_web(r, root);
    let supervisor = read_supervisor(r, root, env, &systemd, &broker);
    let alerts = read_alerts(r, root, env, &systemd);
    let quarantine = read_quarantine(r, root);
    let classes = read_classes(r, root);
    let mut broker = broker;
    broker.delivery_limits =
        classes.iter().map(|(n, c)| (n.clone(), topology::delivery_limit(c.max_attempts, c.poison_after))).collect();
    let credentials = read_credentials(r, root);
    r.unknown_keys(root, "");
    Config { host, broker, systemd, metrics, web, supervisor, alerts, quarantine, worker, classes, credentials }
}

fn read_broker(r: &mut Reader, root: &Table) -> BrokerConfig {
    let broker_t = r.section(root, "", "broker");
    const URLS: &str = "an amqp:// or amqps:// URL, or a non-empty list of them (the nodes of a cluster)";
    let urls = match r.take(&broker_t, "broker", "url") {
        None => vec!["amqp://guest:guest@127.0.0.1:5672/%2f".to_string()],
        Some(Value::String(u)) => vec![u.clone()],
        Some(v) => strings_of(v).filter(|l| !l.is_empty()).unwrap_or_else(|| {
            r.problem("broker.url", &type_name(v), URLS);
            vec![]
        }),
    };
    for url in &urls {
        if !(url.starts_with("amqp://") || url.starts_with("amqps://")) {
            r.problem("broker.url", &format!("`{url}`"), URLS);
        }
    }
    let queue_type = match r.string(&broker_t, "broker", "queue_type", "\"classic\" or \"quorum\"") {
        None => QueueType::Classic,
        Some(t) => QueueType::parse(&t).unwrap_or_else(|| {
            r.problem("broker.queue_type", &format!("\"{t}\""), "\"classic\" or \"quorum\"");
            QueueType::Classic
        }),
    };
    let management_url = r.string(&broker_t, "broker", "management_url", "an http:// URL");
    if let Some(m) = management_url.as_ref().filter(|m| !m.starts_with("http://")) {
        r.problem(
            "broker.management_url",
            &format!("`{m}`"),
            "an http:// URL of the management API, such as http://127.0.0.1:15672",
        );
    }
    let prefix =
        r.string(&broker_t, "broker", "prefix", "letters, digits, `-`, `_`, `.`").unwrap_or_else(|| "drover".into());
    if prefix.is_empty() || !prefix.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
        r.problem("broker.prefix", &format!("`{prefix}`"), "a non-empty name of letters, digits, `-`, `_`, `.`");
    }
    let broker = BrokerConfig {
        urls,
        queue_type,
        management_url,
        delivery_limits: BTreeMap::new(),
        prefix,
        consumer_timeout: r.period(
            &broker_t,
            "broker",
            "consumer_timeout",
            Duration::from_secs(1800),
            (SECOND, 30 * DAY),
        ),
        connect_timeout: r.period(&broker_t, "broker", "connect_timeout", Duration::from_secs(10), (TENTH, HOUR)),
        op_timeout: r.period(&broker_t, "broker", "op_timeout", Duration::from_secs(15), (TENTH, HOUR)),
        reconnect: r.backoff(
            &broker_t,
            "broker",
            ["reconnect_base", "reconnect_max"],
            [Duration::from_millis(500), Duration::from_secs(30)],
        ),
        lease_ttl: r.duration(&broker_t, "broker", "lease_ttl", Duration::from_secs(300)),
        queue_expires: r.optional_duration(&broker_t, "broker", "queue_expires"),
    };
    if broker.lease_ttl < Duration::from_secs(3) {
        r.problem("broker.lease_ttl", &duration::format(broker.lease_ttl), "at least 3s");
    }
    if broker.queue_expires.is_some_and(|d| d < SECOND) {
        r.problem("broker.queue_expires", "0", "a duration of at least 1s, or no key (queues do not expire)");
    }
    r.unknown_keys(&broker_t, "broker");
    broker
}

fn read_worker(r: &mut Reader, root: &Table) -> WorkerConfig {
    let worker_t = r.section(root, "", "worker");
    let worker = WorkerConfig {
        drain_deadline: r.duration(&worker_t, "worker", "drain_deadline", Duration::from_secs(300)),
        kill_grace: r.duration(&worker_t, "worker", "kill_grace", Duration::from_secs(10)),
        preflight_timeout: r.period(&worker_t, "worker", "preflight_timeout", Duration::from_secs(60), (TENTH, DAY)),
    };
    r.unknown_keys(&worker_t, "worker");
    worker
}

fn read_systemd(r: &mut Reader, root: &Table, worker: &WorkerConfig) -> SystemdConfig {
    let systemd_t = r.section(root, "", "systemd");
    let bus = match r.string(&systemd_t, "systemd", "bus", "\"system\" or \"user\"").as_deref() {
        None | Some("system") => Bus::System,
        Some("user") => Bus::User,
        Some(other) => {
            r.problem("systemd.bus", &format!("`{other}`"), "\"system\" or \"user\"");
            Bus::System
        }
    };
    let default_stop = worker.drain_deadline + worker.kill_grace + Duration::from_secs(60);
    let unit_prefix =
        r.string(&systemd_t, "systemd", "unit_prefix", "a unit name prefix").unwrap_or_else(|| "drover-worker".into());
    if unit_prefix.is_empty() || !unit_prefix.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
        r.problem("systemd.unit_prefix", &format!("`{unit_prefix}`"), "letters, digits, `-`, `_`, `.`");
    }
    let mut environment = Vec::new();
    if let Some(v) = r.take(&systemd_t, "systemd", "environment") {
        match strings_of(v) {
            Some(list) if list.iter().all(|e| e.split_once('=').is_some_and(|(k, _)| !k.is_empty())) => {
                environment = list
            }
            _ => r.problem("systemd.environment", &type_name(v), "a list of \"KEY=value\" strings"),
        }
    }
    let mut relax_sandbox = Vec::new();
    if let Some(v) = r.take(&systemd_t, "systemd", "relax_sandbox") {
        match strings_of(v) {
            Some(list) if list.iter().all(|d| SANDBOX_DIRECTIVES.contains(&d.as_str())) => relax_sandbox = list,
            _ => r.problem(
                "systemd.relax_sandbox",
                &type_name(v),
                &format!("a list of sandboxing directives among {}", SANDBOX_DIRECTIVES.join(", ")),
            ),
        }
    }
    let systemd = SystemdConfig {
        bus,
        relax_sandbox,
        unit_prefix,
        watchdog: watchdog(r, &systemd_t),
        environment,
        call_timeout: r.period(&systemd_t, "systemd", "call_timeout", Duration::from_secs(10), (TENTH, HOUR)),
        stop_timeout: r.period(&systemd_t, "systemd", "stop_timeout", default_stop, (SECOND, 30 * DAY)),
        user: r.string(&systemd_t, "systemd", "user", "a user name such as \"drover\"").and_then(|u| {
            let ok = !u.is_empty() && u.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
            if !ok {
                r.problem("systemd.user", &format!("`{u}`"), "a user name of letters, digits, `-`, `_`, `.`");
            }
            ok.then_some(u)
        }),
        writable: r.paths(&systemd_t, "systemd", "writable"),
    };
    r.unknown_keys(&systemd_t, "systemd");
    systemd
}

fn read_metrics(r: &mut Reader, root: &Table) -> MetricsConfig {
    let metrics_t = r.section(root, "", "metrics");
    let listen = r.string(&metrics_t, "metrics", "listen", "an address such as 127.0.0.1:9464").and_then(|s| {
        s.parse::<SocketAddr>()
            .map_err(|_| r.problem("metrics.listen", &format!("`{s}`"), "an address such as 127.0.0.1:9464"))
            .ok()
    });
    let metrics = MetricsConfig { listen };
    r.unknown_keys(&metrics_t, "metrics");
    metrics
}

fn read_web(r: &mut Reader, root: &Table) -> WebConfig {
    let t = r.section(root, "", "web");
    const ADDR: &str = "an address such as 127.0.0.1:9465";
    let listen = r
        .string(&t, "web", "listen", ADDR)
        .and_then(|s| s.parse::<SocketAddr>().map_err(|_| r.problem("web.listen", &format!("`{s}`"), ADDR)).ok());
    let enabled = r.boolean(&t, "web", "enabled", true);
    let actions = r.boolean(&t, "web", "actions", false);
    let token_file = r.string(&t, "web", "token_file", "an absolute path").map(|p| {
        if !p.starts_with('/') {
            r.problem("web.token_file", &format!("`{p}`"), "an absolute path");
        }
        PathBuf::from(p)
    });
    if actions && token_file.is_none() {
        r.problem("web.actions", "true and no web.token_file", "a web.token_file with the operators' tokens");
    }
    let refresh =
        r.period(&t, "web", "refresh", Duration::from_secs(3), (Duration::from_millis(500), Duration::from_secs(300)));
    let runbooks = r.string(&t, "web", "runbooks", "a URL such as https://wiki.example.com/drover/runbooks");
    r.unknown_keys(&t, "web");
    WebConfig { enabled, listen, actions, token_file, refresh, runbooks }
}

fn read_supervisor(
    r: &mut Reader,
    root: &Table,
    env: &Environment,
    systemd: &SystemdConfig,
    broker: &BrokerConfig,
) -> SupervisorConfig {
    let sup_t = r.section(root, "", "supervisor");
    let default_socket = match systemd.bus {
        Bus::System => std::path::PathBuf::from("/run/drover"),
        Bus::User => env.user_runtime_dir.join("drover"),
    }
    .join(format!("{}.sock", broker.prefix));
    let socket =
        r.string(&sup_t, "supervisor", "socket", "a path").map(std::path::PathBuf::from).unwrap_or(default_socket);
    let start_rate = match r.take(&sup_t, "supervisor", "start_rate") {
        None => 10.0,
        Some(Value::Integer(i)) if *i > 0 => *i as f64,
        Some(Value::Float(f)) if *f > 0.0 && f.is_finite() => *f,
        Some(v) => {
            r.problem("supervisor.start_rate", &type_name(v), "a positive number of starts per second");
            10.0
        }
    };
    let supervisor = SupervisorConfig {
        socket,
        start_rate,
        restart: r.backoff(
            &sup_t,
            "supervisor",
            ["restart_base", "restart_max"],
            [Duration::from_secs(2), Duration::from_secs(300)],
        ),
        stable_after: r.period(&sup_t, "supervisor", "stable_after", Duration::from_secs(120), (SECOND, DAY)),
        failing_after: r.integer(&sup_t, "supervisor", "failing_after", 5, 1, 1000) as u32,
        resync: r.period(&sup_t, "supervisor", "resync", Duration::from_secs(30), (SECOND, DAY)),
    };
    r.unknown_keys(&sup_t, "supervisor");
    supervisor
}

fn read_alertmanager(r: &mut Reader, alerts_t: &Table) -> AlertmanagerConfig {
    let urls = match r.take(alerts_t, "alerts", "alertmanager") {
        None => Vec::new(),
        Some(v) => match strings_of(v) {
            Some(list) => list,
            None => {
                r.problem("alerts.alertmanager", &type_name(v), "a list of URLs such as [\"https://am-1:9093\"]");
                Vec::new()
            }
        },
    };
    for (i, u) in urls.iter().enumerate() {
        if let Err(e) = crate::alerts::parse_http_url(u) {
            r.problem(&format!("alerts.alertmanager[{i}]"), &e, "an http[s]://host[:port] URL of an Alertmanager");
        }
    }
    let path = |r: &mut Reader, key: &str| r.string(alerts_t, "alerts", key, "a path").map(std::path::PathBuf::from);
    let ca_file = path(r, "alertmanager_ca");
    let credentials_file = path(r, "alertmanager_credentials");
    let auth = match r.string(alerts_t, "alerts", "alertmanager_auth", "\"basic\" or \"bearer\"").as_deref() {
        None if credentials_file.is_some() => AmAuth::Basic,
        None => AmAuth::None,
        Some("basic") => AmAuth::Basic,
        Some("bearer") => AmAuth::Bearer,
        Some(other) => {
            r.problem("alerts.alertmanager_auth", &format!("`{other}`"), "\"basic\" or \"bearer\"");
            AmAuth::None
        }
    };
    if auth != AmAuth::None && credentials_file.is_none() {
        r.problem("alerts.alertmanager_auth", "no alerts.alertmanager_credentials", "a credentials file with it");
    }
    let external_url = r.string(alerts_t, "alerts", "external_url", "an http:// or https:// URL");
    if let Some(u) = &external_url {
        if let Err(e) = crate::alerts::parse_http_url(u) {
            r.problem("alerts.external_url", &e, "an http[s]://host[:port] URL");
        }
    }
    let runbook_base = r.string(alerts_t, "alerts", "runbook_base", "an http://, https:// or file:// URL");
    if let Some(u) = &runbook_base {
        let known = ["http://", "https://", "file://"].iter().any(|s| u.starts_with(s) && u.len() > s.len());
        if !known {
            r.problem(
                "alerts.runbook_base",
                &format!("`{u}`"),
                "an http://, https:// or file:// URL such as https://wiki.example/drover/runbooks",
            );
        }
    }
    let resend = r.duration(alerts_t, "alerts", "alertmanager_resend", Duration::from_secs(60));
    if resend.is_zero() {
        r.problem("alerts.alertmanager_resend", "0s", "a duration above zero (Alertmanager expects 30s to 3m)");
    }
    AlertmanagerConfig { urls, resend, ca_file, credentials_file, auth, external_url, runbook_base }
}

fn read_alerts(r: &mut Reader, root: &Table, env: &Environment, systemd: &SystemdConfig) -> AlertsConfig {
    let alerts_t = r.section(root, "", "alerts");
    let webhook = r.string(&alerts_t, "alerts", "webhook", "an http:// or https:// URL");
    if let Some(w) = &webhook {
        if let Err(e) = crate::alerts::parse_http_url(w) {
            r.problem("alerts.webhook", &e, "an http[s]://[user:password@]host[:port]/path URL");
        }
    }
    let alertmanager = read_alertmanager(r, &alerts_t);
    let default_state = match systemd.bus {
        Bus::System => std::path::PathBuf::from("/var/lib/drover"),
        Bus::User => env.user_state_dir.join("drover"),
    };
    let number = |r: &mut Reader, key: &str, default: f64| match r.take(&alerts_t, "alerts", key) {
        None => default,
        Some(Value::Integer(i)) if *i > 0 => *i as f64,
        Some(Value::Float(f)) if *f > 0.0 && f.is_finite() => *f,
        Some(v) => {
            r.problem(&format!("alerts.{key}"), &type_name(v), "a positive number");
            default
        }
    };
    let running_evidence = number(r, "running_evidence", 8.0);
    let stall_gaps = number(r, "stall_gaps", 10.0);
    let alerts = AlertsConfig {
        webhook,
        alertmanager,
        state_dir: r
            .string(&alerts_t, "alerts", "state_dir", "a path")
            .map(std::path::PathBuf::from)
            .unwrap_or(default_state),
        evaluate_every: r.period(&alerts_t, "alerts", "evaluate_every", Duration::from_secs(15), (TENTH, HOUR)),
        fire_after: r.duration(&alerts_t, "alerts", "fire_after", Duration::from_secs(60)),
        resolve_after: r.duration(&alerts_t, "alerts", "resolve_after", Duration::from_secs(600)),
        drift_warmup: r.integer(&alerts_t, "alerts", "drift_warmup", 100, 1, 1_000_000) as u64,
        running_evidence,
        stall_gaps,
        stall_min: r.period(&alerts_t, "alerts", "stall_min", Duration::from_secs(900), (SECOND, 7 * DAY)),
    };
    r.unknown_keys(&alerts_t, "alerts");
    alerts
}

fn read_quarantine(r: &mut Reader, root: &Table) -> QuarantineConfig {
    let q_t = r.section(root, "", "quarantine");
    let alpha = match r.take(&q_t, "quarantine", "alpha") {
        None => 1e-7,
        Some(Value::Float(f)) if *f > 0.0 && *f < 0.5 => *f,
        Some(v) => {
            r.problem("quarantine.alpha", &type_name(v), "a significance between 0 and 0.5, such as 1e-7");
            1e-7
        }
    };
    let d = crate::suspects::SuspectPolicy::default();
    // Unset, it follows a looser `alpha` (a configuration from before the key existed stays valid).
    let cordon_alpha = r.number(
        &q_t,
        "quarantine",
        "cordon_alpha",
        d.cordon_alpha.max(alpha),
        |x| x > 0.0 && x < 0.5,
        "a significance between 0 and 0.5, such as 1e-6",
    );
    if cordon_alpha < alpha {
        r.problem(
            "quarantine.cordon_alpha",
            &format!("{cordon_alpha:e}, stricter than alpha ({alpha:e})"),
            "a significance at least as large as quarantine.alpha (a cordon comes before a quarantine)",
        );
    }
    let quarantine = QuarantineConfig {
        enabled: r.boolean(&q_t, "quarantine", "enabled", true),
        hold: r.period(&q_t, "quarantine", "hold", Duration::from_secs(600), (SECOND, 7 * DAY)),
        hold_max: r.period(&q_t, "quarantine", "hold_max", Duration::from_secs(6 * 3600), (SECOND, 30 * DAY)),
        min_failures: r.integer(&q_t, "quarantine", "min_failures", 3, 1, 1000) as u32,
        alpha,
        enforce: r.boolean(&q_t, "quarantine", "enforce", d.enforce),
        cordon_alpha,
        tail_quantile: r.number(
            &q_t,
            "quarantine",
            "tail_quantile",
            d.tail_quantile,
            |x| x > 0.5 && x < 1.0,
            "a quantile between 0.5 and 1, such as 0.99",
        ),
        slow_factor: r.number(
            &q_t,
            "quarantine",
            "slow_factor",
            d.slow_factor,
            |x| x > 1.0 && x <= 100.0,
            "a factor above 1 (at most 100), such as 2.5",
        ),
        max_quarantined: r.number(
            &q_t,
            "quarantine",
            "max_quarantined",
            d.max_quarantined,
            |x| x > 0.0 && x <= 1.0,
            "a share above 0 and at most 1, such as 0.2",
        ),
        min_reference: r.integer(&q_t, "quarantine", "min_reference", d.min_reference as i64, 10, 1_000_000) as usize,
    };
    if quarantine.hold_max < quarantine.hold {
        r.problem(
            "quarantine.hold_max",
            &format!("{}, below hold ({})", duration::format(quarantine.hold_max), duration::format(quarantine.hold)),
            "a duration at least quarantine.hold",
        );
    }
    r.unknown_keys(&q_t, "quarantine");
    quarantine
}

fn read_classes(r: &mut Reader, root: &Table) -> BTreeMap<String, ClassConfig> {
    let classes_t = r.section(root, "", "classes");
    let mut classes = BTreeMap::new();
    for (name, value) in &classes_t {
        let path = format!("classes.{name}");
        let valid_name = name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
            && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
        if !valid_name {
            r.problem(
                &path,
                &format!("class name `{name}`"),
                "lower-case letters, digits, `_` and `-`, starting with a letter",
            );
        }
        let Some(t) = value.as_table() else {
            r.problem(&path, &type_name(value), "a table of class settings");
            continue;
        };
        classes.insert(name.clone(), read_class(r, &path, name, t));
    }
    if classes_t.is_empty() {
        r.problem("classes", "no class", "at least one [classes.NAME] table");
    }
    classes
}

fn read_class(r: &mut Reader, path: &str, name: &str, t: &Table) -> ClassConfig {
    let mode = match r.string(t, path, "mode", "\"exec\" or \"persistent\"").as_deref() {
        None | Some("exec") => Mode::Exec,
        Some("persistent") => Mode::Persistent,
        Some(other) => {
            r.problem(&format!("{path}.mode"), &format!("`{other}`"), "\"exec\" or \"persistent\"");
            Mode::Exec
        }
    };
    let command = match r.argv(t, path, "command") {
        Some(argv) => argv,
        None => {
            if !t.contains_key("command") {
                r.problem(
                    &format!("{path}.command"),
                    "nothing",
                    "an argv list such as [\"python3\", \"/opt/app/job.py\"]",
                );
            }
            Vec::new()
        }
    };
    let mut preflight = Vec::new();
    if let Some(v) = r.take(t, path, "preflight") {
        match v.as_array() {
            Some(checks) => {
                for (i, check) in checks.iter().enumerate() {
                    match argv_of(check) {
                        Some(argv) => preflight.push(argv),
                        None => r.problem(
                            &format!("{path}.preflight[{i}]"),
                            &type_name(check),
                            "a non-empty argv list of strings such as [\"test\", \"-w\", \"/var/lib/app\"]",
                        ),
                    }
                }
            }
            None => r.problem(&format!("{path}.preflight"), &type_name(v), "a list of argv lists"),
        }
    }
    let lease = match r.string(t, path, "lease", "\"auto\", \"always\" or \"never\"").as_deref() {
        None | Some("auto") => LeaseMode::Auto,
        Some("always") => LeaseMode::Always,
        Some("never") => LeaseMode::Never,
        Some(other) => {
            r.problem(&format!("{path}.lease"), &format!("`{other}`"), "\"auto\", \"always\" or \"never\"");
            LeaseMode::Auto
        }
    };
    let class = ClassConfig {
        name: name.to_string(),
        mode,
        command,
        workers: r.integer(t, path, "workers", 1, 0, 10_000) as u32,
        timeout: r.duration(t, path, "timeout", Duration::from_secs(3600)),
        deadline: r.duration(t, path, "deadline", Duration::from_secs(86_400)),
        max_attempts: r.integer(t, path, "max_attempts", 5, 1, 1000) as u32,
        preflight,
        prefetch: r.integer(t, path, "prefetch", 1, 1, 1000) as u16,
        retry: r.backoff(t, path, ["retry_base", "retry_max"], [Duration::from_secs(10), Duration::from_secs(3600)]),
        ready_timeout: r.period(t, path, "ready_timeout", Duration::from_secs(600), (SECOND, 7 * DAY)),
        wait_ready: r.boolean(t, path, "wait_ready", true),
        drain_early_requeue: r.boolean(t, path, "drain_early_requeue", true),
        poison_after: r.integer(t, path, "poison_after", 3, 0, 1000) as u32,
        avoid_failed_hosts: r.duration(t, path, "avoid_failed_hosts", Duration::from_secs(300)),
        heartbeat_timeout: r.optional_duration(t, path, "heartbeat_timeout"),
        lease,
        unit: UnitNeeds {
            devices: read_devices(r, t, path),
            writable: r.paths(t, path, "writable"),
            environment_files: r.paths(t, path, "environment_files"),
        },
    };
    if class.heartbeat_timeout.is_some_and(|d| d.is_zero()) {
        r.problem(&format!("{path}.heartbeat_timeout"), "0", "a positive duration such as \"5m\", or no key");
    }
    for (key, d) in [("timeout", class.timeout), ("deadline", class.deadline)] {
        if d.is_zero() {
            r.problem(&format!("{path}.{key}"), "0", "a positive duration such as \"40m\"");
        }
    }
    r.unknown_keys(t, path);
    class
}

const TENTH: Duration = Duration::from_millis(100);
const SECOND: Duration = Duration::from_secs(1);
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);

/// `systemd.watchdog`: `"0"` turns the watchdog off (as `WatchdogSec=0` does); otherwise at
/// least a second, since systemd counts it in seconds here and a worker pings at half of it.
fn watchdog(r: &mut Reader, t: &Table) -> Duration {
    let d = r.duration(t, "systemd", "watchdog", Duration::from_secs(60));
    if !d.is_zero() && (d < SECOND || d > DAY) {
        r.problem(
            "systemd.watchdog",
            &duration::format(d),
            "\"0\" (no watchdog) or a duration from 1s to 1d, such as \"60s\"",
        );
        return Duration::from_secs(60);
    }
    d
}

/// The known key nearest to a misspelt one, if any is near enough to be a typo.
fn nearest<'k>(key: &str, known: &'k [String]) -> Option<&'k str> {
    let limit = (key.chars().count() / 3).clamp(1, 3);
    known.iter().map(|k| (edit_distance(key, k), k)).filter(|(d, _)| *d <= limit).min().map(|(_, k)| k.as_str())
}

/// Levenshtein distance, with a swap of two neighbours counted as one edit.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d: Vec<Vec<usize>> =
        (0..=a.len()).map(|i| (0..=b.len()).map(|j| if i == 0 { j } else { i }).collect()).collect();
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j] + 1).min(d[i][j - 1] + 1).min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}

/// Line and column (from 1, the column in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Where each key is in the text, by its dotted path: toml's spanned tables, read once when a
/// problem needs a place.
mod spans {
    use std::collections::BTreeMap;
    use toml::de::{DeTable, DeValue};

    pub fn of(text: &str) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        if let Ok(root) = DeTable::parse(text) {
            walk(root.get_ref(), "", &mut out);
        }
        out
    }

    fn walk(t: &DeTable<'_>, path: &str, out: &mut BTreeMap<String, usize>) {
        for (k, v) in t {
            let full = if path.is_empty() { k.get_ref().to_string() } else { format!("{path}.{}", k.get_ref()) };
            out.entry(full.clone()).or_insert(k.span().start);
            match v.get_ref() {
                DeValue::Table(sub) => walk(sub, &full, out),
                DeValue::Array(items) => {
                    for (i, item) in items.iter().enumerate() {
                        out.entry(format!("{full}[{i}]")).or_insert(item.span().start);
                        if let DeValue::Table(sub) = item.get_ref() {
                            walk(sub, &format!("{full}[{i}]"), out);
                        }
                    }
                }
                _ => {}
            }
        }
    }

    /// The key's place, else its nearest enclosing table's (a missing key is reported where
    /// its table is).
    pub fn find(spans: &BTreeMap<String, usize>, key: &str) -> Option<usize> {
        let mut k = key;
        loop {
            if let Some(at) = spans.get(k) {
                return Some(*at);
            }
            k = &k[..k.rfind(['.', '['])?];
        }
    }
}

/// `devices`: `DeviceAllow=` entries, a device node or a device group, and an access mode.
fn read_devices(r: &mut Reader, t: &Table, path: &str) -> Vec<String> {
    const ACCEPTED: &str = "a list of device nodes or groups with an optional mode, such as [\"/dev/nvidiactl\", \"/dev/nvidia0 rw\", \"char-nvidia-uvm\"]";
    let Some(v) = r.take(t, path, "devices") else { return Vec::new() };
    let Some(list) = strings_of(v) else {
        r.problem(&format!("{path}.devices"), &type_name(v), ACCEPTED);
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, d) in list.iter().enumerate() {
        let words: Vec<&str> = d.split_whitespace().collect();
        let node = words.first().copied().unwrap_or("");
        let mode_ok = words.get(1).is_none_or(|m| !m.is_empty() && m.chars().all(|c| "rwm".contains(c)));
        let node_ok = (node.starts_with("/dev/") || node.starts_with("char-") || node.starts_with("block-"))
            && !node.contains('%');
        if node.contains(['*', '?', '[']) && node.starts_with("/dev/") {
            r.problem(
                &format!("{path}.devices[{i}]"),
                &format!("the pattern `{node}`"),
                "device nodes or groups: systemd does not expand patterns in DeviceAllow=; for NVIDIA GPUs name the groups \"char-nvidia-frontend\", \"char-nvidia-uvm\", \"char-nvidia-caps\" (see /proc/devices)",
            );
        } else if !(node_ok && mode_ok && words.len() <= 2) {
            r.problem(&format!("{path}.devices[{i}]"), &format!("`{d}`"), ACCEPTED);
        } else {
            out.push(format!("{node} {}", words.get(1).unwrap_or(&"rw")));
        }
    }
    out
}

/// `[credentials.worker]`, `[credentials.supervisor]`, `[credentials.operator]`.
fn read_credentials(r: &mut Reader, root: &Table) -> Credentials {
    let creds_t = r.section(root, "", "credentials");
    let mut login = |role: &str| -> Option<Login> {
        let path = format!("credentials.{role}");
        let t = match r.take(&creds_t, "credentials", role)? {
            Value::Table(t) => t.clone(),
            v => {
                r.problem(&path, &type_name(v), "a table with `user` and `password_file`");
                return None;
            }
        };
        let user = r.string(&t, &path, "user", "a broker user name");
        let password_file = r.string(&t, &path, "password_file", "an absolute path").map(|p| {
            if !p.starts_with('/') {
                r.problem(&format!("{path}.password_file"), &format!("`{p}`"), "an absolute path");
            }
            PathBuf::from(p)
        });
        r.unknown_keys(&t, &path);
        match user {
            Some(u) if !u.is_empty() => Some(Login { user: u, password_file }),
            _ => {
                r.problem(&format!("{path}.user"), "nothing", "the broker user this role connects as");
                None
            }
        }
    };
    let credentials =
        Credentials { worker: login("worker"), supervisor: login("supervisor"), operator: login("operator") };
    r.unknown_keys(&creds_t, "credentials");
    credentials
}

/// Walks tables, remembering which keys were read and what was wrong.
#[derive(Default)]
struct Reader {
    problems: Vec<Problem>,
    seen: BTreeSet<String>,
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn type_name(v: &Value) -> String {
    match v {
        Value::String(s) => format!("the string \"{s}\""),
        Value::Integer(i) => format!("the integer {i}"),
        Value::Float(f) => format!("the number {f}"),
        Value::Boolean(b) => format!("the boolean {b}"),
        Value::Datetime(d) => format!("the date {d}"),
        Value::Array(_) => "a list".into(),
        Value::Table(_) => "a table".into(),
    }
}

/// A list of strings, possibly empty.
fn strings_of(v: &Value) -> Option<Vec<String>> {
    v.as_array()?.iter().map(|i| i.as_str().map(str::to_string)).collect()
}

fn argv_of(v: &Value) -> Option<Vec<String>> {
    let items = v.as_array()?;
    let argv: Option<Vec<String>> = items.iter().map(|i| i.as_str().map(str::to_string)).collect();
    argv.filter(|a| !a.is_empty() && !a[0].is_empty())
}

impl Reader {
    fn problem(&mut self, key: &str, found: &str, accepted: &str) {
        self.problems.push(Problem { key: key.into(), found: found.into(), accepted: accepted.into(), at: None });
    }

    fn take<'t>(&mut self, t: &'t Table, path: &str, key: &str) -> Option<&'t Value> {
        self.seen.insert(join(path, key));
        t.get(key)
    }

    fn section(&mut self, t: &Table, path: &str, key: &str) -> Table {
        match self.take(t, path, key) {
            None => Table::new(),
            Some(Value::Table(s)) => s.clone(),
            Some(v) => {
                self.problem(&join(path, key), &type_name(v), "a table");
                Table::new()
            }
        }
    }

    fn string(&mut self, t: &Table, path: &str, key: &str, accepted: &str) -> Option<String> {
        match self.take(t, path, key)? {
            Value::String(s) => Some(s.clone()),
            v => {
                self.problem(&join(path, key), &type_name(v), accepted);
                None
            }
        }
    }

    fn duration(&mut self, t: &Table, path: &str, key: &str, default: Duration) -> Duration {
        self.optional_duration(t, path, key).unwrap_or(default)
    }

    fn optional_duration(&mut self, t: &Table, path: &str, key: &str) -> Option<Duration> {
        const ACCEPTED: &str = "a duration such as \"90s\", \"40m\", \"24h\" or \"1h30m\"";
        let full = join(path, key);
        match self.take(t, path, key)? {
            Value::String(s) => match duration::parse(s) {
                Ok(d) => Some(d),
                Err(e) => {
                    self.problem(&full, &e, ACCEPTED);
                    None
                }
            },
            v => {
                self.problem(&full, &type_name(v), ACCEPTED);
                None
            }
        }
    }

    /// A duration that must lie in `range` (a zero period spins a loop or panics a timer).
    fn period(&mut self, t: &Table, path: &str, key: &str, default: Duration, range: (Duration, Duration)) -> Duration {
        let d = self.duration(t, path, key, default);
        if d < range.0 || d > range.1 {
            let accepted = format!(
                "a duration from {} to {}, such as \"{}\"",
                duration::format(range.0),
                duration::format(range.1),
                duration::format(default)
            );
            self.problem(&join(path, key), &duration::format(d), &accepted);
            return default;
        }
        d
    }

    /// A backoff's base and cap: both periods, the cap not below the base.
    fn backoff(&mut self, t: &Table, path: &str, keys: [&str; 2], defaults: [Duration; 2]) -> Backoff {
        let base = self.period(t, path, keys[0], defaults[0], (Duration::from_millis(1), DAY));
        let max = self.period(t, path, keys[1], defaults[1], (Duration::from_millis(1), 7 * DAY));
        if max < base {
            self.problem(
                &join(path, keys[1]),
                &format!("{}, below {} ({})", duration::format(max), keys[0], duration::format(base)),
                &format!("a duration at least {}", keys[0]),
            );
        }
        Backoff::new(base, max.max(base))
    }

    fn integer(&mut self, t: &Table, path: &str, key: &str, default: i64, min: i64, max: i64) -> i64 {
        let accepted = format!("a whole number from {min} to {max}");
        match self.take(t, path, key) {
            None => default,
            Some(Value::Integer(i)) if (min..=max).contains(i) => *i,
            Some(v) => {
                self.problem(&join(path, key), &type_name(v), &accepted);
                default
            }
        }
    }

    /// A number (integer or float) that `ok` accepts.
    fn number(&mut self, t: &Table, path: &str, key: &str, default: f64, ok: fn(f64) -> bool, accepted: &str) -> f64 {
        match self.take(t, path, key) {
            None => default,
            Some(Value::Integer(i)) if ok(*i as f64) => *i as f64,
            Some(Value::Float(f)) if f.is_finite() && ok(*f) => *f,
            Some(v) => {
                self.problem(&join(path, key), &type_name(v), accepted);
                default
            }
        }
    }

    fn boolean(&mut self, t: &Table, path: &str, key: &str, default: bool) -> bool {
        match self.take(t, path, key) {
            None => default,
            Some(Value::Boolean(b)) => *b,
            Some(v) => {
                self.problem(&join(path, key), &type_name(v), "true or false");
                default
            }
        }
    }

    /// A list of absolute paths (no newline; a `%` is escaped in the units).
    fn paths(&mut self, t: &Table, path: &str, key: &str) -> Vec<String> {
        let Some(v) = self.take(t, path, key) else { return Vec::new() };
        match strings_of(v) {
            Some(list) if list.iter().all(|p| p.starts_with('/') && !p.contains('\n')) => list,
            _ => {
                self.problem(
                    &join(path, key),
                    &type_name(v),
                    "a list of absolute paths such as [\"/var/cache/models\"]",
                );
                Vec::new()
            }
        }
    }

    fn argv(&mut self, t: &Table, path: &str, key: &str) -> Option<Vec<String>> {
        let v = self.take(t, path, key)?;
        let argv = argv_of(v);
        if argv.is_none() {
            self.problem(
                &join(path, key),
                &type_name(v),
                "a non-empty argv list of strings (never run through a shell), such as [\"python3\", \"job.py\"]",
            );
        }
        argv
    }

    /// Every key of `t` not read: a problem, with the nearest known key of the same table.
    fn unknown_keys(&mut self, t: &Table, path: &str) {
        let prefix = if path.is_empty() { String::new() } else { format!("{path}.") };
        let known: Vec<String> = self
            .seen
            .iter()
            .filter_map(|k| k.strip_prefix(&prefix))
            .filter(|k| !k.contains('.'))
            .map(str::to_string)
            .collect();
        for key in t.keys() {
            let full = join(path, key);
            if !self.seen.contains(&full) && (!path.is_empty() || key != "classes") {
                let accepted = match nearest(key, &known) {
                    Some(k) => format!("a known key: did you mean `{k}`? (every key is in config/drover.example.toml)"),
                    None => "only the keys documented in config/drover.example.toml".to_string(),
                };
                self.problem(&full, "an unknown key", &accepted);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        [classes.inference]
        command = ["python3", "infer.py"]
    "#;

    #[test]
    fn minimal_config_gets_defaults() {
        let c = Config::parse(MINIMAL, "t.toml", &Environment::example()).expect("valid");
        let class = &c.classes["inference"];
        assert_eq!(class.mode, Mode::Exec);
        assert_eq!(class.max_attempts, 5);
        assert_eq!(class.prefetch, 1);
        assert_eq!(class.timeout, Duration::from_secs(3600));
        assert_eq!(c.broker.prefix, "drover");
        assert_eq!(c.systemd.bus, Bus::System);
        assert!(!c.host.is_empty());
        assert!(c.warnings().is_empty(), "{:?}", c.warnings());
    }

    #[test]
    fn the_broker_may_be_one_url_or_a_cluster_with_quorum_queues() {
        let env = Environment::example();
        let class = "\n[classes.c]\ncommand = [\"x\"]\n";
        let one = Config::parse(&format!("[broker]\nurl = \"amqp://a:5672/%2f\"{class}"), "t", &env).expect("one url");
        assert_eq!(one.broker.urls, vec!["amqp://a:5672/%2f"]);
        assert_eq!(one.broker.queue_type, QueueType::Classic);
        let text = r#"
            [broker]
            url = ["amqp://a:5672/%2f", "amqps://b:5671/%2f"]
            queue_type = "quorum"
            management_url = "http://a:15672"
            [classes.c]
            command = ["x"]
            max_attempts = 2
            poison_after = 1
        "#;
        let c = Config::parse(text, "t", &env).expect("a cluster");
        assert_eq!(c.broker.urls.len(), 2);
        assert_eq!(c.broker.queue_type, QueueType::Quorum);
        assert_eq!(c.broker.management_url.as_deref(), Some("http://a:15672"));
        assert_eq!(c.broker.delivery_limits.get("c"), Some(&23), "2 + 1 + 20");
        // (text of [broker], the problem's key)
        for (broker, key) in [
            ("url = []", "broker.url"),
            ("url = [\"amqp://a\", 5]", "broker.url"),
            ("url = [\"amqp://a\", \"http://b\"]", "broker.url"),
            ("queue_type = \"stream\"", "broker.queue_type"),
            ("management_url = \"https://a\"", "broker.management_url"),
        ] {
            let err = Config::parse(&format!("[broker]\n{broker}{class}"), "t", &env).expect_err(broker);
            let keys: Vec<&str> = err.problems.iter().map(|p| p.key.as_str()).collect();
            assert_eq!(keys, vec![key], "{broker}");
        }
    }

    #[test]
    fn every_problem_is_listed_at_once() {
        let text = r#"
            host = ""
            colour = "blue"
            [broker]
            url = "http://x"
            [systemd]
            bus = "session"
            [metrics]
            listen = "nowhere"
            [classes.Bad]
            command = "python3 x.py"
            timeout = "40"
            max_attemps = 3
            mode = "fork"
            [classes.ok]
            command = ["x"]
            workers = -1
            preflight = [["test", "-w", "/x"], []]
        "#;
        let err = Config::parse(text, "bad.toml", &Environment::example()).expect_err("invalid");
        let keys: Vec<&str> = err.problems.iter().map(|p| p.key.as_str()).collect();
        let want = [
            "host",
            "colour",
            "broker.url",
            "systemd.bus",
            "metrics.listen",
            "classes.Bad",
            "classes.Bad.command",
            "classes.Bad.timeout",
            "classes.Bad.max_attemps",
            "classes.Bad.mode",
            "classes.ok.workers",
            "classes.ok.preflight[1]",
        ];
        for k in want {
            assert!(keys.contains(&k), "missing problem for {k}; got {keys:?}");
        }
        assert_eq!(keys.len(), want.len(), "{keys:?}");
        let text = err.to_string();
        assert!(text.starts_with("bad.toml: 12 problems"), "{text}");
        assert!(text.contains("classes.Bad.timeout: found `40`: missing unit after 40"), "{text}");
    }

    #[test]
    fn the_example_configuration_documents_the_quarantine_keys_with_their_defaults() {
        let c = Config::parse(
            include_str!("../../../config/drover.example.toml"),
            "drover.example.toml",
            &Environment::example(),
        )
        .expect("valid");
        let d = crate::suspects::SuspectPolicy::default();
        let q = &c.quarantine;
        assert_eq!((q.enforce, q.cordon_alpha, q.tail_quantile), (d.enforce, d.cordon_alpha, d.tail_quantile));
        assert_eq!((q.slow_factor, q.max_quarantined, q.alpha), (d.slow_factor, d.max_quarantined, d.alpha));
        // The page: on, read-only, with its default refresh.
        assert!(c.web.enabled && !c.web.actions && c.web.refresh == Duration::from_secs(3));
    }

    #[test]
    fn alert_targets_are_checked_when_the_file_is_read() {
        let ok = r#"
            [alerts]
            alertmanager = ["https://am-1:9093", "http://[::1]:9093"]
            alertmanager_credentials = "/etc/drover/am.cred"
            alertmanager_auth = "bearer"
            alertmanager_resend = "30s"
            runbook_base = "https://wiki.example/drover/runbooks"
            webhook = "http://drover:pw@[::1]:9095/hook"
            [classes.x]
            command = ["x"]
        "#;
        let c = Config::parse(ok, "ok.toml", &Environment::example()).expect("valid");
        let am = &c.alerts.alertmanager;
        assert_eq!((am.urls.len(), am.auth, am.resend), (2, AmAuth::Bearer, Duration::from_secs(30)));
        assert_eq!(am.runbook_base.as_deref(), Some("https://wiki.example/drover/runbooks"));
        let bad = r#"
            [alerts]
            alertmanager = ["https://am-1:9093", "http://::1:9093"]
            alertmanager_auth = "basic"
            alertmanager_resend = "0s"
            runbook_base = "docs/runbooks"
            webhook = "http://[::1:9095/hook"
            [classes.x]
            command = ["x"]
        "#;
        let err = Config::parse(bad, "bad.toml", &Environment::example()).expect_err("invalid");
        let keys: Vec<&str> = err.problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "alerts.webhook",
                "alerts.alertmanager[1]",
                "alerts.alertmanager_auth",
                "alerts.runbook_base",
                "alerts.alertmanager_resend"
            ]
        );
    }

    #[test]
    fn quarantine_keys_are_validated_all_at_once() {
        let c = Config::parse(MINIMAL, "t.toml", &Environment::example()).expect("valid");
        let p = c.quarantine.suspect_policy();
        assert!(c.quarantine.enforce);
        assert_eq!((p.cordon_alpha, p.tail_quantile, p.slow_factor, p.max_quarantined), (1e-6, 0.99, 2.5, 0.2));
        let ok =
            "[quarantine]\nenforce = false\nslow_factor = 3\nmax_quarantined = 0.1\n[classes.x]\ncommand = [\"x\"]";
        let c = Config::parse(ok, "ok.toml", &Environment::example()).expect("valid");
        assert_eq!((c.quarantine.enforce, c.quarantine.slow_factor, c.quarantine.max_quarantined), (false, 3.0, 0.1));
        // (key = value, the problem's key)
        let cases = [
            ("enforce = \"no\"", "quarantine.enforce"),
            ("cordon_alpha = 0.7", "quarantine.cordon_alpha"),
            ("cordon_alpha = 1e-9", "quarantine.cordon_alpha"), // stricter than alpha (1e-7)
            ("tail_quantile = 1", "quarantine.tail_quantile"),
            ("tail_quantile = 0.3", "quarantine.tail_quantile"),
            ("slow_factor = 1.0", "quarantine.slow_factor"),
            ("max_quarantined = 0", "quarantine.max_quarantined"),
            ("max_quarantined = 1.5", "quarantine.max_quarantined"),
        ];
        let all: Vec<&str> = cases.iter().filter(|(kv, _)| *kv != "cordon_alpha = 0.7").map(|(kv, _)| *kv).collect();
        for (kv, key) in cases {
            let text = format!("[quarantine]\n{kv}\n[classes.x]\ncommand = [\"x\"]");
            let err = Config::parse(&text, "q.toml", &Environment::example()).expect_err(kv);
            let keys: Vec<&str> = err.problems.iter().map(|p| p.key.as_str()).collect();
            assert_eq!(keys, [key], "{kv}");
        }
        // Several at once (one value per key): every problem listed.
        let mut seen = std::collections::BTreeSet::new();
        let many: Vec<&str> = all.into_iter().filter(|kv| seen.insert(kv.split(' ').next().unwrap_or(""))).collect();
        let text = format!("[quarantine]\n{}\n[classes.x]\ncommand = [\"x\"]", many.join("\n"));
        let err = Config::parse(&text, "q.toml", &Environment::example()).expect_err("invalid");
        assert_eq!(err.problems.len(), many.len(), "{err}");
    }

    #[test]
    fn zero_and_nonsensical_periods_are_refused_with_the_accepted_range() {
        // (section, key = value, the problem's key, a part of what is accepted)
        let cases = [
            ("alerts", "evaluate_every = \"0\"", "alerts.evaluate_every", "from 100ms to 1h"),
            ("supervisor", "resync = \"0\"", "supervisor.resync", "from 1s to 1d"),
            ("supervisor", "stable_after = \"0\"", "supervisor.stable_after", "from 1s"),
            ("supervisor", "restart_base = \"0\"", "supervisor.restart_base", "from 1ms"),
            (
                "supervisor",
                "restart_base = \"1m\"\nrestart_max = \"10s\"",
                "supervisor.restart_max",
                "at least restart_base",
            ),
            ("systemd", "watchdog = \"500ms\"", "systemd.watchdog", "\"0\" (no watchdog)"),
            ("systemd", "call_timeout = \"0\"", "systemd.call_timeout", "from 100ms"),
            ("systemd", "stop_timeout = \"0\"", "systemd.stop_timeout", "from 1s"),
            ("broker", "op_timeout = \"0\"", "broker.op_timeout", "from 100ms"),
            ("broker", "connect_timeout = \"2h\"", "broker.connect_timeout", "to 1h"),
            ("broker", "reconnect_max = \"0\"", "broker.reconnect_max", "from 1ms"),
            ("broker", "queue_expires = \"0\"", "broker.queue_expires", "at least 1s"),
            ("worker", "preflight_timeout = \"0\"", "worker.preflight_timeout", "from 100ms"),
            ("quarantine", "hold = \"1h\"\nhold_max = \"10m\"", "quarantine.hold_max", "at least quarantine.hold"),
            ("classes.x", "command = [\"x\"]\nready_timeout = \"0\"", "classes.x.ready_timeout", "from 1s"),
            ("classes.x", "command = [\"x\"]\nretry_base = \"0\"", "classes.x.retry_base", "from 1ms"),
        ];
        for (section, kv, key, accepted) in cases {
            let classes = if section == "classes.x" { "" } else { "[classes.x]\ncommand = [\"x\"]\n" };
            let text = format!("[{section}]\n{kv}\n{classes}");
            let err = Config::parse(&text, "p.toml", &Environment::example()).expect_err(kv);
            let keys: Vec<&str> = err.problems.iter().map(|p| p.key.as_str()).collect();
            assert_eq!(keys, [key], "{kv}");
            assert!(err.problems[0].accepted.contains(accepted), "{kv}: {}", err.problems[0]);
        }
        // Zero turns the watchdog off, as WatchdogSec=0 does.
        let c = Config::parse(
            "[systemd]\nwatchdog = \"0\"\n[classes.x]\ncommand = [\"x\"]",
            "w.toml",
            &Environment::example(),
        )
        .expect("valid");
        assert_eq!(c.systemd.watchdog, Duration::ZERO);
    }

    #[test]
    fn problems_say_where_they_are_and_suggest_the_key_meant() {
        type Place<'a> = (Option<(usize, usize)>, &'a str);
        let text = "[broker]\nurl = \"http://x\"\n\n[classes.ok]\ncommand = [\"x\"]\n  max_attemps = 3\nworkers = -1\n[alerts]\nevaluate_evry = \"15s\"\nzzz = 1\n";
        let err = Config::parse(text, "at.toml", &Environment::example()).expect_err("invalid");
        let at: BTreeMap<&str, Place> =
            err.problems.iter().map(|p| (p.key.as_str(), (p.at, p.accepted.as_str()))).collect();
        assert_eq!(at["broker.url"].0, Some((2, 1)));
        assert_eq!(at["classes.ok.max_attemps"].0, Some((6, 3)));
        assert!(at["classes.ok.max_attemps"].1.contains("did you mean `max_attempts`?"), "{:?}", at);
        assert_eq!(at["classes.ok.workers"].0, Some((7, 1)));
        assert!(at["alerts.evaluate_evry"].1.contains("did you mean `evaluate_every`?"));
        assert!(!at["alerts.zzz"].1.contains("did you mean"), "nothing near enough: {:?}", at["alerts.zzz"]);
        assert!(err.to_string().contains("line 6, column 3: classes.ok.max_attemps: found an unknown key"), "{err}");
        // A missing key is placed at its table.
        let err =
            Config::parse("[classes.x]\nworkers = 2\n", "m.toml", &Environment::example()).expect_err("no command");
        assert_eq!((err.problems[0].key.as_str(), err.problems[0].at), ("classes.x.command", Some((1, 10))));
        // A syntax error has its place too.
        let err = Config::parse("[classes.x]\ncommand = [\"x\"\n", "s.toml", &Environment::example()).expect_err("bad");
        assert_eq!(err.problems[0].key, "(syntax)");
        assert!(err.problems[0].at.is_some_and(|(line, _)| line >= 2), "{:?}", err.problems[0]);
    }

    #[test]
    fn the_pages_keys_are_validated_with_every_problem_placed() {
        let ok = "[web]\nlisten = \"127.0.0.1:9465\"\nactions = true\ntoken_file = \"/etc/drover/web-tokens\"\n\
                  refresh = \"2s\"\n[classes.x]\ncommand = [\"x\"]\n";
        let c = Config::parse(ok, "w.toml", &Environment::example()).expect("valid");
        assert_eq!(c.web.listen.map(|a| a.port()), Some(9465));
        assert!(c.web.actions && c.web.enabled);
        assert_eq!(c.web.refresh, Duration::from_secs(2));
        assert!(c.warnings().is_empty(), "{:?}", c.warnings());
        let defaults =
            Config::parse("[classes.x]\ncommand = [\"x\"]\n", "d.toml", &Environment::example()).expect("ok");
        assert!(defaults.web.enabled && !defaults.web.actions && defaults.web.token_file.is_none());
        // (text, the problems' keys and places)
        let bad = "[web]\nlisten = \"anywhere\"\nactions = true\nrefresh = \"0s\"\ntokens = 1\n[classes.x]\ncommand = [\"x\"]\n";
        let err = Config::parse(bad, "b.toml", &Environment::example()).expect_err("invalid");
        let mut at: Vec<(&str, Option<(usize, usize)>)> = err.problems.iter().map(|p| (p.key.as_str(), p.at)).collect();
        at.sort();
        assert_eq!(
            at,
            [
                ("web.actions", Some((3, 1))),
                ("web.listen", Some((2, 1))),
                ("web.refresh", Some((4, 1))),
                ("web.tokens", Some((5, 1))),
            ]
        );
        let rel = "[web]\ntoken_file = \"tokens\"\n[classes.x]\ncommand = [\"x\"]\n";
        let err = Config::parse(rel, "r.toml", &Environment::example()).expect_err("relative");
        assert_eq!(err.problems[0].key, "web.token_file");
        // Served beyond loopback: a warning, louder with actions on.
        let open =
            "[web]\nlisten = \"0.0.0.0:9465\"\nactions = true\ntoken_file = \"/t\"\n[classes.x]\ncommand = [\"x\"]\n";
        let c = Config::parse(open, "o.toml", &Environment::example()).expect("valid");
        let w = c.warnings();
        assert!(w.len() == 1 && w[0].0.contains("tokens travel in clear"), "{w:?}");
        let nowhere = "[web]\nactions = true\ntoken_file = \"/t\"\n[classes.x]\ncommand = [\"x\"]\n";
        let w = Config::parse(nowhere, "n.toml", &Environment::example()).expect("valid").warnings();
        assert!(w.len() == 1 && w[0].0.contains("no address serves the page"), "{w:?}");
    }

    #[test]
    fn unit_needs_and_credentials_are_validated() {
        // (class keys, the problem's key or "" when valid)
        let cases = [
            ("devices = [\"/dev/nvidia0\", \"char-nvidia-uvm rwm\"]", ""),
            ("devices = [\"/dev/nvidia*\"]", "classes.x.devices[0]"),
            ("devices = [\"nvidia0\"]", "classes.x.devices[0]"),
            ("devices = [\"/dev/null rx\"]", "classes.x.devices[0]"),
            ("devices = \"/dev/null\"", "classes.x.devices"),
            ("writable = [\"/var/cache/models 100%\"]", ""),
            ("writable = [\"relative/dir\"]", "classes.x.writable"),
            ("environment_files = [\"/etc/drover/x.env\"]", ""),
        ];
        for (kv, key) in cases {
            let text = format!("[classes.x]\ncommand = [\"x\"]\n{kv}\n");
            let keys: Vec<String> = match Config::parse(&text, "u.toml", &Environment::example()) {
                Ok(_) => Vec::new(),
                Err(e) => e.problems.into_iter().map(|p| p.key).collect(),
            };
            let want: Vec<&str> = if key.is_empty() { vec![] } else { vec![key] };
            assert_eq!(keys, want, "{kv}");
        }
        let c = Config::parse(
            "[credentials.worker]\nuser = \"w\"\npassword_file = \"/etc/drover/credentials/worker\"\n[classes.x]\ncommand = [\"x\"]\ndevices = [\"/dev/nvidia0\"]\n",
            "c.toml",
            &Environment::example(),
        )
        .expect("valid");
        assert_eq!(c.credentials.of(Role::Worker).map(|l| l.user.as_str()), Some("w"));
        assert_eq!(c.credentials.of(Role::Operator), None);
        assert_eq!(c.classes["x"].unit.devices, ["/dev/nvidia0 rw"]);
        let err = Config::parse(
            "[credentials.worker]\npassword_file = \"x\"\n[classes.x]\ncommand = [\"x\"]\n",
            "c.toml",
            &Environment::example(),
        )
        .expect_err("no user, relative path");
        let keys: Vec<&str> = err.problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["credentials.worker.password_file", "credentials.worker.user"]);
    }

    #[test]
    fn a_login_replaces_the_urls_user_information() {
        let cases = [
            ("amqp://guest:guest@127.0.0.1:5672/%2f", "w", "p", "amqp://w:p@127.0.0.1:5672/%2f"),
            ("amqp://127.0.0.1/%2f", "w", "p@ss:/%", "amqp://w:p%40ss%3A%2F%25@127.0.0.1/%2f"),
            ("amqps://a@b:5671", "drover-worker", "x", "amqps://drover-worker:x@b:5671"),
        ];
        for (url, user, pw, want) in cases {
            assert_eq!(url_with_login(url, user, pw), want, "{url}");
        }
    }

    #[test]
    fn syntax_errors_are_reported_as_such() {
        let err = Config::parse("[classes.x\ncommand=", "s.toml", &Environment::example()).expect_err("invalid");
        assert_eq!(err.problems[0].key, "(syntax)");
    }

    #[test]
    fn disagreeing_timeouts_are_warned_about() {
        let text = r#"
            [worker]
            drain_deadline = "10m"
            [systemd]
            stop_timeout = "5m"
            [classes.long]
            command = ["x"]
            timeout = "2h"
            deadline = "1h"
            lease = "never"
        "#;
        let c = Config::parse(text, "w.toml", &Environment::example()).expect("valid");
        let w = c.warnings();
        assert_eq!(w.len(), 3, "{w:?}");
        assert!(w[0].0.contains("systemd.stop_timeout (5m)"));
    }

    #[test]
    fn long_classes_use_leases_automatically() {
        let c = Config::parse(MINIMAL, "t.toml", &Environment::example()).expect("valid");
        let mut class = c.classes["inference"].clone();
        let grace = c.worker.kill_grace;
        class.timeout = Duration::from_secs(40 * 60);
        assert!(class.uses_lease(&c.broker, grace), "40m jobs outlast the 30m consumer_timeout");
        class.timeout = Duration::from_secs(10 * 60);
        assert!(!class.uses_lease(&c.broker, grace));
        class.lease = LeaseMode::Always;
        assert!(class.uses_lease(&c.broker, grace));
    }
}
