//! The supervisor's page over HTTP (axum, the server of `/metrics`): `/` and its script and
//! style (embedded in the binary: nothing to build or install), `/api/fleet` (the fleet's view
//! as JSON), `/api/events` (the same, pushed by server-sent events whenever it changes),
//! `/api/timeline?host=&class=` (filtered by [`crate::page::filter_timeline`]) and
//! `POST /api/action`.
//!
//! Actions are refused unless `[web] actions = true`, and then each needs an operator's token
//! (`Authorization: Bearer <token>`) from the token file (the systemd credential `web-token`, or
//! `web.token_file`), read again at each action so that a token can be revoked without a
//! restart. A token rather than "loopback only": every local user and process reaches a
//! loopback port, and a reverse proxy in front makes every request look local; a token names
//! the operator, and the timeline records that name and the request's address.

use crate::page::{ActionForm, Tokens};
use axum::body::Bytes;
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify};

const INDEX: &str = include_str!("web/index.html");
const SCRIPT: &str = include_str!("web/page.js");
const STYLE: &str = include_str!("web/page.css");

/// What an action came to: a line for the operator, or what was wrong (the status says whose
/// fault: 400 the form's, 502 no supervisor answered).
pub type Outcome = Result<String, (StatusCode, Vec<String>)>;

/// Carries out a validated form on behalf of `who`.
pub type Act = Arc<dyn Fn(ActionForm, String) -> Pin<Box<dyn Future<Output = Outcome> + Send>> + Send + Sync>;

/// The timeline filtered: `(host, class)` to JSON.
pub type Timeline = Arc<dyn Fn(&str, &str) -> String + Send + Sync>;

/// What the routes share with the code that gathers the fleet's view.
#[derive(Clone)]
pub struct Page {
    /// The newest view (JSON), empty before the first gathering.
    pub view: watch::Receiver<Arc<String>>,
    /// Open event streams: the view is gathered only while someone looks.
    pub viewers: Arc<AtomicUsize>,
    /// When the view was last asked for without a stream (ms since the epoch).
    pub polled_ms: Arc<AtomicI64>,
    /// Wakes the gathering (someone looks again, or an action changed something).
    pub wanted: Arc<Notify>,
    pub actions: bool,
    pub token_file: Option<PathBuf>,
    pub act: Act,
    pub timeline: Timeline,
}

/// The page's routes, to merge into the HTTP server's router (served with connect info).
pub fn routes(page: Page) -> axum::Router {
    axum::Router::new()
        .route("/", get(|| async { ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], INDEX) }))
        .route("/page.js", get(|| async { ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], SCRIPT) }))
        .route("/page.css", get(|| async { ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE) }))
        .route("/api/fleet", get(fleet))
        .route("/api/events", get(events))
        .route("/api/timeline", get(timeline))
        .route("/api/action", post(action))
        .with_state(page)
}

fn json(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json"), (header::CACHE_CONTROL, "no-store")], body).into_response()
}

async fn fleet(State(p): State<Page>) -> Response {
    p.polled_ms.store(crate::io::clock::now_ms(), Ordering::Relaxed);
    p.wanted.notify_one();
    let mut rx = p.view.clone();
    // The first view after a quiet spell: wait for it (with a deadline).
    if rx.borrow().is_empty() {
        let _ = tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|v| !v.is_empty())).await;
    }
    let body = rx.borrow().to_string();
    if body.is_empty() {
        return json(StatusCode::SERVICE_UNAVAILABLE, r#"{"error":"the fleet's view is not ready yet"}"#.into());
    }
    json(StatusCode::OK, body)
}

/// Counts an open stream for as long as it lives.
struct Viewer(Arc<AtomicUsize>);

impl Drop for Viewer {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn events(State(p): State<Page>) -> impl IntoResponse {
    p.viewers.fetch_add(1, Ordering::Relaxed);
    p.wanted.notify_one();
    let viewer = Viewer(p.viewers.clone());
    let rx = p.view.clone();
    // The current view first, then one event per change.
    let changes = futures_lite::stream::unfold((rx, viewer, true), |(mut rx, viewer, first)| async move {
        if !first {
            rx.changed().await.ok()?;
        }
        loop {
            let current = rx.borrow_and_update().clone();
            if !current.is_empty() {
                let event = Event::default().event("fleet").data(current.as_str());
                return Some((Ok::<_, std::convert::Infallible>(event), (rx, viewer, false)));
            }
            rx.changed().await.ok()?;
        }
    });
    // A reverse proxy must pass the events on as they come (nginx buffers them otherwise).
    let headers = [(header::CACHE_CONTROL, "no-cache"), (header::HeaderName::from_static("x-accel-buffering"), "no")];
    (headers, Sse::new(changes).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

fn query_value(q: &str, key: &str) -> String {
    q.split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| percent_decode(v))
        .unwrap_or_default()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                match u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn timeline(State(p): State<Page>, RawQuery(q): RawQuery) -> Response {
    let q = q.unwrap_or_default();
    json(StatusCode::OK, (p.timeline)(&query_value(&q, "host"), &query_value(&q, "class")))
}

fn problems(status: StatusCode, list: Vec<String>) -> Response {
    json(status, serde_json::json!({"ok": false, "problems": list}).to_string())
}

/// The operators' tokens: the systemd credential `web-token` when the supervisor has one, else
/// the token file.
fn tokens(token_file: Option<&PathBuf>) -> Result<Tokens, String> {
    let credential = std::env::var_os("CREDENTIALS_DIRECTORY").map(|d| PathBuf::from(d).join("web-token"));
    let path = match (credential.filter(|p| p.exists()), token_file) {
        (Some(c), _) => c,
        (None, Some(f)) => f.clone(),
        (None, None) => return Err("no token file (web.token_file)".into()),
    };
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    Tokens::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
}

fn presented(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    v.strip_prefix("Bearer ").map(str::trim).filter(|t| !t.is_empty())
}

/// Where a request came from, for the record: the peer, and what a reverse proxy said of the
/// client.
fn origin(peer: SocketAddr, headers: &HeaderMap) -> String {
    match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(f) if !f.trim().is_empty() => format!("{} via {}", f.trim(), peer.ip()),
        _ => peer.ip().to_string(),
    }
}

async fn action(
    State(p): State<Page>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !p.actions {
        let why = "this page is read-only: actions are off ([web] actions = false)".to_string();
        return problems(StatusCode::FORBIDDEN, vec![why]);
    }
    let tokens = match tokens(p.token_file.as_ref()) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!("page action refused: the operators' tokens cannot be read: {e}");
            return problems(
                StatusCode::SERVICE_UNAVAILABLE,
                vec![format!("the operators' tokens cannot be read: {e}")],
            );
        }
    };
    let Some(name) = presented(&headers).and_then(|t| tokens.who(t)).map(str::to_string) else {
        let from = origin(peer, &headers);
        tracing::warn!("page action refused: no valid token (from {from})");
        let mut r = problems(StatusCode::UNAUTHORIZED, vec!["refused: no valid operator token".into()]);
        r.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
        return r;
    };
    let form: ActionForm = match serde_json::from_slice(&body) {
        Ok(f) => f,
        Err(e) => return problems(StatusCode::BAD_REQUEST, vec![format!("not an action form: {e}")]),
    };
    let who = crate::page::who(&name, &origin(peer, &headers));
    tracing::info!("page action {} by {who}", form.verb);
    let outcome = (p.act)(form, who).await;
    p.wanted.notify_one();
    match outcome {
        Ok(message) => json(StatusCode::OK, serde_json::json!({"ok": true, "message": message}).to_string()),
        Err((status, list)) => problems(status, list),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_decoded() {
        assert_eq!(query_value("host=gpu%2D1&class=a+b", "host"), "gpu-1");
        assert_eq!(query_value("host=gpu%2D1&class=a+b", "class"), "a b");
        assert_eq!(query_value("host=%zz", "host"), "%zz");
        assert_eq!(query_value("", "host"), "");
    }
}
