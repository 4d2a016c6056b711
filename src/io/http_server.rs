//! The supervisor's HTTP server (axum): `GET /metrics` for Prometheus, `GET /alerts`, the
//! page each alert's `generatorURL` points at (what `drover alerts` prints),
//! `GET /runbooks/<page>`, the runbooks their `runbook_url` points at by default, and the
//! fleet's page at `/` ([`crate::io::web`]) unless `[web] enabled = false`. Exact paths; the
//! listener, its accept errors and keep-alive are hyper's. Also runs the recorder's upkeep, so
//! that histogram samples do not pile up when nothing scrapes.

use crate::io::control::{render_alerts, StatusReport};
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use std::future::IntoFuture;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Clone)]
struct Shared {
    metrics: PrometheusHandle,
    report: Arc<Mutex<StatusReport>>,
}

/// The router alone, for tests; with the page's routes when there is a page.
pub fn router(
    metrics: PrometheusHandle,
    report: Arc<Mutex<StatusReport>>,
    page: Option<crate::io::web::Page>,
) -> axum::Router {
    let app = axum::Router::new()
        .route("/metrics", get(metrics_page))
        .route("/alerts", get(alerts_page))
        .route("/runbooks/{page}", get(runbook_page))
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                "not found: this server has /, /metrics, /alerts and /runbooks/README.md
",
            )
        })
        .with_state(Shared { metrics, report });
    match page {
        Some(p) => app.merge(crate::io::web::routes(p)),
        None => app,
    }
}

async fn metrics_page(State(s): State<Shared>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], s.metrics.render())
}

async fn alerts_page(State(s): State<Shared>) -> impl IntoResponse {
    let text = s.report.lock().map(|r| render_alerts(&r)).unwrap_or_else(|_| "status unavailable\n".into());
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text)
}

async fn runbook_page(Path(page): Path<String>) -> axum::response::Response {
    match crate::io::runbooks::page(&page) {
        Some(text) => ([(header::CONTENT_TYPE, "text/markdown; charset=utf-8")], text).into_response(),
        None => (StatusCode::NOT_FOUND, format!("no runbook {page}: see /runbooks/README.md\n")).into_response(),
    }
}

/// Serves until cancelled; runs the recorder's upkeep every 5 s meanwhile.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: PrometheusHandle,
    report: Arc<Mutex<StatusReport>>,
    page: Option<crate::io::web::Page>,
    cancel: CancellationToken,
) {
    let upkeep = {
        let (metrics, cancel) = (metrics.clone(), cancel.clone());
        async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tokio::select! {
                    _ = tick.tick() => metrics.run_upkeep(),
                    _ = cancel.cancelled() => return,
                }
            }
        }
    };
    let app = router(metrics, report, page).into_make_service_with_connect_info::<std::net::SocketAddr>();
    let server = axum::serve(listener, app).with_graceful_shutdown(cancel.clone().cancelled_owned());
    let (r, ()) = tokio::join!(server.into_future(), upkeep);
    if let Err(e) = r {
        tracing::error!("HTTP server (/metrics and the page): {e}");
    }
}
