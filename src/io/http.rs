//! The HTTP client that alert sinks share (reqwest over rustls with the ring provider, the one
//! lapin already builds): the system's roots or a given CA file, a deadline per request, and
//! credentials from a file (basic or bearer) or from the URL's `user:password@`.

use crate::alerts::HttpTarget;
use crate::config::{AlertmanagerConfig, AmAuth};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// How a request proves who sends it.
#[derive(Clone, Default)]
pub enum Auth {
    #[default]
    None,
    Basic(String, String),
    Bearer(String),
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print a secret.
        f.write_str(match self {
            Auth::None => "none",
            Auth::Basic(..) => "basic",
            Auth::Bearer(_) => "bearer",
        })
    }
}

/// Reads the credentials the configuration names: the first line of the file, `user:password`
/// for basic, the token for bearer.
pub fn auth_from(cfg: &AlertmanagerConfig) -> anyhow::Result<Auth> {
    let Some(path) = &cfg.credentials_file else { return Ok(Auth::None) };
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read alerts.alertmanager_credentials {}: {e}", path.display()))?;
    let line = text.lines().next().unwrap_or("").trim().to_string();
    anyhow::ensure!(!line.is_empty(), "alerts.alertmanager_credentials {}: the file is empty", path.display());
    Ok(match cfg.auth {
        AmAuth::None | AmAuth::Basic => {
            let (u, p) = line.split_once(':').ok_or_else(|| {
                anyhow::anyhow!("alerts.alertmanager_credentials {}: expected `user:password`", path.display())
            })?;
            Auth::Basic(u.to_string(), p.to_string())
        }
        AmAuth::Bearer => Auth::Bearer(line),
    })
}

/// A client that trusts the system's roots, or only the certificates of `ca_file`.
pub fn client(ca_file: Option<&Path>) -> anyhow::Result<reqwest::Client> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            use rustls_pki_types::pem::PemObject;
            let certs = rustls_pki_types::CertificateDer::pem_file_iter(path)
                .map_err(|e| anyhow::anyhow!("CA file {}: {e}", path.display()))?;
            for c in certs {
                let c = c.map_err(|e| anyhow::anyhow!("CA file {}: {e}", path.display()))?;
                roots.add(c).map_err(|e| anyhow::anyhow!("CA file {}: {e}", path.display()))?;
            }
            anyhow::ensure!(!roots.is_empty(), "CA file {} holds no certificate", path.display());
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                tracing::debug!("system CA certificates: {e}");
            }
            let (added, _ignored) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                tracing::warn!("no system CA certificate found: https:// alert targets will fail to verify");
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .user_agent(concat!("drover/", env!("CARGO_PKG_VERSION")))
        .build()?)
}

/// POSTs `body` as JSON to `target` + `path`; the URL's own `user:password@` wins over `auth`.
/// The error says what went wrong without the credentials.
pub async fn post_json(
    client: &reqwest::Client,
    target: &HttpTarget,
    path: &str,
    auth: &Auth,
    body: &serde_json::Value,
) -> Result<(), String> {
    let url = target.url(path);
    let mut req = client.post(&url).json(body);
    req = match (&target.user, auth) {
        (Some((u, p)), _) | (None, Auth::Basic(u, p)) => req.basic_auth(u, Some(p)),
        (None, Auth::Bearer(t)) => req.bearer_auth(t),
        (None, Auth::None) => req,
    };
    let resp = req.send().await.map_err(|e| format!("{url}: {}", chain(&e)))?;
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    let text = resp.text().await.unwrap_or_default();
    let refused = match status.as_u16() {
        401 | 403 if !matches!((&target.user, auth), (None, Auth::None)) => " (the credentials were refused)",
        401 | 403 => " (credentials are required: alerts.alertmanager_credentials)",
        _ => "",
    };
    Err(format!("{url} answered {status}{refused}: {}", text.trim().chars().take(200).collect::<String>()))
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
