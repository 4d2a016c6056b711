//! Every metric name Drover exports, in one place, and the Prometheus recorder with histogram
//! buckets that span real job durations (a second to two days: a 30-minute job and a 6-hour job
//! land in different buckets), each with its `# HELP` text. Served on `/metrics` by `supervise`
//! (`crate::io::http_server`), which also runs the recorder's upkeep.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Units by health (healthy, failing, ...).
pub const UNITS: &str = "drover_units";
/// Units by systemd ActiveState.
pub const UNITS_BY_STATE: &str = "drover_units_by_state";
pub const UNIT_RESTARTS_TOTAL: &str = "drover_unit_restarts_total";
pub const RECONCILE_PASSES_TOTAL: &str = "drover_reconcile_passes_total";
pub const RECONCILE_SECONDS: &str = "drover_reconcile_duration_seconds";
pub const DBUS_CALL_SECONDS: &str = "drover_dbus_call_duration_seconds";
pub const JOBS_TOTAL: &str = "drover_jobs_total";
/// Jobs dead-lettered, by class and reason (max_attempts, rejected, deadline_expired, undecodable, poison).
pub const DEAD_LETTERS_TOTAL: &str = "drover_dead_letters_total";
pub const JOB_SECONDS: &str = "drover_job_duration_seconds";
pub const JOB_QUEUE_WAIT_SECONDS: &str = "drover_job_queue_wait_seconds";
/// 1 while an alert fires, 0 once it resolved; labels alertname, class, host, severity.
pub const ALERTS_FIRING: &str = "drover_alerts_firing";
/// Always 1; labels version: which build each supervisor runs.
pub const BUILD_INFO: &str = "drover_build_info";

/// Every metric with its `# HELP` text, in one table.
const HELP: &[(&str, &str)] = &[
    (UNITS, "Worker units of this host by class and health (healthy, starting, restarting, failing, misconfigured, ...)."),
    (UNITS_BY_STATE, "Worker units of this host by class and systemd ActiveState."),
    (UNIT_RESTARTS_TOTAL, "Restarts of failed worker units by the supervisor, by class."),
    (RECONCILE_PASSES_TOTAL, "Reconcile passes the supervisor completed (units compared with systemd and fixed)."),
    (RECONCILE_SECONDS, "Duration of one reconcile pass, seconds."),
    (DBUS_CALL_SECONDS, "Duration of D-Bus calls to systemd, seconds, by method."),
    (JOBS_TOTAL, "Job attempts of this host's workers that ended, by class, attempt outcome and what happened next (result)."),
    (DEAD_LETTERS_TOTAL, "Jobs of this host's workers dead-lettered, by class and reason (deadline_expired: a missed deadline)."),
    (JOB_SECONDS, "Run time of job attempts, seconds (1 s to 48 h buckets), by class and outcome."),
    (JOB_QUEUE_WAIT_SECONDS, "Time from submission (or the last retry) to the start of an attempt, seconds, by class."),
    (ALERTS_FIRING, "1 while one of Drover's own alerts fires, 0 once resolved; for dashboards (Drover sends the alerts to Alertmanager itself)."),
    (BUILD_INFO, "Always 1; the version label says which build of Drover runs."),
];

/// Buckets for job run time and queue wait, seconds: 1 s ... 48 h.
pub const JOB_BUCKETS: &[f64] = &[
    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1200.0, 1800.0, 2400.0, 3600.0, 5400.0, 7200.0, 10800.0,
    14400.0, 21600.0, 43200.0, 86400.0, 172800.0,
];

/// Buckets for fast operations (D-Bus calls, reconcile passes), seconds: 100 µs ... 30 s.
pub const FAST_BUCKETS: &[f64] =
    &[0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 30.0];

/// Installs the global recorder and returns the handle that renders `/metrics`.
pub fn install() -> anyhow::Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(JOB_SECONDS.into()), JOB_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(JOB_QUEUE_WAIT_SECONDS.into()), JOB_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(DBUS_CALL_SECONDS.into()), FAST_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(RECONCILE_SECONDS.into()), FAST_BUCKETS)?
        .install_recorder()?;
    for (name, help) in HELP {
        match *name {
            UNIT_RESTARTS_TOTAL | RECONCILE_PASSES_TOTAL | JOBS_TOTAL | DEAD_LETTERS_TOTAL => {
                metrics::describe_counter!(*name, *help)
            }
            RECONCILE_SECONDS | DBUS_CALL_SECONDS | JOB_SECONDS | JOB_QUEUE_WAIT_SECONDS => {
                metrics::describe_histogram!(*name, metrics::Unit::Seconds, *help)
            }
            _ => metrics::describe_gauge!(*name, *help),
        }
    }
    metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    Ok(handle)
}
