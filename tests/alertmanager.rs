//! Alerts through a real Alertmanager (Debian's `prometheus-alertmanager`, run by the test on
//! its own port, no clustering): two supervisors see the same fleet-wide latency drift and both
//! post it to `/api/v2/alerts`; Alertmanager holds one alert, the receiver behind it is paged
//! once, and once both see the class recover it gets one resolve. The same client over HTTPS
//! with a CA of the test's own: basic auth against Alertmanager's own `--web.config.file`
//! (TLS and a bcrypt-hashed user), and a bearer token against a small HTTPS server of the test
//! (Alertmanager has no bearer auth); a certificate or credentials refused are said in the log,
//! never the secret.

use crate::alerts::{submit, Receiver};
use crate::harness::{count, wait_until};
use crate::supervisor::Host;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// An Alertmanager of the test's own, routing everything to `hook`.
pub struct Alertmanager {
    pub port: u16,
    child: Child,
    /// With a web configuration: its CA and the login that `get` uses.
    web: Option<Web>,
}

/// Alertmanager's `--web.config.file`: TLS with a certificate of the test's CA, and one user.
pub struct Web {
    pub tls: Tls,
    pub user: String,
    pub password: String,
}

/// A CA of the test's own and a server certificate for 127.0.0.1 it signed (openssl).
pub struct Tls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Tls {
    pub fn make(dir: &Path) -> Tls {
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        )
        .expect("ext");
        let script = "set -e; ec='-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes'
            openssl req -x509 $ec -keyout ca.key -out ca.pem -days 2 -subj '/CN=drover test CA' \
                -addext basicConstraints=critical,CA:TRUE
            openssl req $ec -keyout server.key -out server.csr -subj /CN=127.0.0.1
            openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 \
                -extfile server.ext";
        let out = Command::new("sh").args(["-c", script]).current_dir(dir).output().expect("openssl");
        assert!(out.status.success(), "openssl: {}", String::from_utf8_lossy(&out.stderr));
        Tls { ca: dir.join("ca.pem"), cert: dir.join("server.pem"), key: dir.join("server.key") }
    }
}

impl Alertmanager {
    pub fn start(dir: &std::path::Path, hook: &Receiver) -> Alertmanager {
        Alertmanager::start_with(dir, hook, None)
    }

    /// With `web`: HTTPS only, and every request must log in as its user (a bcrypt hash made
    /// by `htpasswd`, as Alertmanager's documentation does it).
    pub fn start_with(dir: &std::path::Path, hook: &Receiver, web: Option<Web>) -> Alertmanager {
        let bin = std::env::var("DROVER_ALERTMANAGER").unwrap_or_else(|_| "prometheus-alertmanager".into());
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
        let conf = dir.join("alertmanager.yml");
        // Grouped by alert, class and host; resolves are flushed every 2 s.
        std::fs::write(
            &conf,
            format!(
                "route:\n  receiver: hook\n  group_by: [alertname, class, host]\n  group_wait: 1s\n  group_interval: 2s\n  repeat_interval: 1h\n\
                 receivers:\n  - name: hook\n    webhook_configs:\n      - url: http://127.0.0.1:{}/hook\n        send_resolved: true\n",
                hook.port
            ),
        )
        .expect("write alertmanager.yml");
        let log = std::fs::File::create(dir.join("alertmanager.log")).expect("log");
        let mut cmd = Command::new(&bin);
        if let Some(w) = &web {
            let out = Command::new("htpasswd")
                .args(["-nbB", "-C", "4", &w.user, &w.password])
                .output()
                .expect("htpasswd (scripts/services.sh up installs apache2-utils)");
            let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
            let (_, hash) = line.split_once(':').expect("user:hash");
            let web_conf = dir.join("web.yml");
            std::fs::write(
                &web_conf,
                format!(
                    "tls_server_config:\n  cert_file: {}\n  key_file: {}\nbasic_auth_users:\n  {}: '{hash}'\n",
                    w.tls.cert.display(),
                    w.tls.key.display(),
                    w.user
                ),
            )
            .expect("write web.yml");
            cmd.arg(format!("--web.config.file={}", web_conf.display()));
        }
        let child = cmd
            .arg(format!("--config.file={}", conf.display()))
            .arg(format!("--storage.path={}", dir.join("am-data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {bin} (scripts/services.sh up installs it): {e}"));
        let am = Alertmanager { port, child, web };
        wait_until("Alertmanager ready", Duration::from_secs(30), || am.get("/-/ready").is_some());
        am
    }

    pub fn url(&self) -> String {
        let scheme = if self.web.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    fn get(&self, path: &str) -> Option<String> {
        let mut cmd = Command::new("curl");
        cmd.arg("-sf");
        if let Some(w) = &self.web {
            cmd.arg("--cacert").arg(&w.tls.ca).args(["-u", &format!("{}:{}", w.user, w.password)]);
        }
        let out = cmd.arg(format!("{}{path}", self.url())).output().ok()?;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The active alerts Alertmanager holds.
    pub fn alerts(&self) -> Vec<serde_json::Value> {
        self.get("/api/v2/alerts?active=true&silenced=false&inhibited=false")
            .and_then(|b| serde_json::from_str(&b).ok())
            .unwrap_or_default()
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The fleet-wide drift (no `host` label; the host that ran every job has its own).
fn fleet_drift(x: &serde_json::Value) -> bool {
    x["labels"]["alertname"] == "LatencyDrift" && x["labels"].get("host").is_none()
}

fn is_page(b: &serde_json::Value, status: &str) -> bool {
    b["status"] == status && b["alerts"].as_array().is_some_and(|a| a.iter().any(fleet_drift))
}

fn pages(hook: &Receiver, status: &str) -> usize {
    hook.bodies.lock().expect("lock").iter().filter(|b| is_page(b, status)).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_supervisors_post_one_drift_to_alertmanager_paged_once_and_resolved() {
    let hook = Receiver::start();
    let scratch = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("am-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).expect("dir");
    let am = Alertmanager::start(&scratch, &hook);
    let classes = format!(
        r#"
        alertmanager = ["http://127.0.0.1:{}"]
        alertmanager_resend = "1s"
        evaluate_every = "300ms"
        fire_after = "1s"
        resolve_after = "1s"
        drift_warmup = 20
        [classes.s]
        mode = "persistent"
        command = ["python3", "{{handler}}", "persistent"]
        timeout = "30s"
        workers = 0
        "#,
        am.port
    );
    let mut a = Host::new("am", &classes);
    let mut b = a.other_host("am-peer", 0);
    let mut events = a.env.events().await;
    a.start_supervisor();
    b.start_supervisor();
    let _workers = [a.env.worker("s", "s-1"), a.env.worker("s", "s-2")];
    submit(&a.env, 0.1, 40);
    events.wait_for("40 baseline jobs", Duration::from_secs(60), |e| count(e, "succeeded") >= 40).await;
    assert!(am.alerts().is_empty(), "nothing firing on a stable class: {:?}", am.alerts());

    // Five times slower: the fleet's judge (one of the two supervisors) raises the class's
    // drift and posts it; the other does not raise it a second time.
    submit(&a.env, 0.5, 12);
    wait_until("the drift alert paged through Alertmanager", Duration::from_secs(90), || pages(&hook, "firing") >= 1);
    let raised = |h: &Host| h.supervisor_log().contains(r#"ALERT LatencyDrift {"class": "s"}:"#);
    wait_until("the judge raised the drift", Duration::from_secs(30), || raised(&a) || raised(&b));
    assert!(!(raised(&a) && raised(&b)), "the fleet-wide drift raised by one supervisor only");
    let held = am.alerts();
    let drift: Vec<_> = held.iter().filter(|x| fleet_drift(x)).collect();
    assert_eq!(drift.len(), 1, "one alert in Alertmanager whoever reported it: {held:?}");
    let alert = drift[0];
    assert_eq!(alert["labels"]["class"], "s");
    assert!(alert["labels"].get("source_host").is_none(), "no reporter in the identity: {alert}");
    let reporter = alert["annotations"]["reported_by"].as_str().unwrap_or("");
    assert!(reporter == a.name || reporter == b.name, "says who reported it: {alert}");
    let generator = alert["generatorURL"].as_str().unwrap_or("");
    assert!(generator.contains("/alerts?alertname=LatencyDrift"), "points at drover alerts: {generator}");
    assert_eq!(alert["status"]["state"], "active");
    // Its runbook: the page of docs/runbooks/, served by the reporting supervisor by default.
    let runbook = alert["annotations"]["runbook_url"].as_str().unwrap_or("");
    assert!(runbook.ends_with("/runbooks/latency-drift.md"), "a runbook_url: {alert}");
    let path = runbook.split_once("://").and_then(|(_, r)| r.find('/').map(|i| &r[i..])).unwrap_or("");
    let page = if reporter == a.name { a.http_get(path) } else { b.http_get(path) };
    assert!(page.starts_with("HTTP/1.1 200") && page.contains("# LatencyDrift"), "{page}");
    // The generatorURL's page on the supervisor: what `drover alerts` says.
    let page = a.http_get("/alerts?alertname=LatencyDrift");
    assert!(page.starts_with("HTTP/1.1 200") && page.contains("LatencyDrift"), "{page}");
    // The same server: /metrics with its help texts and build, and nothing on other paths.
    let metrics = a.metrics();
    assert!(
        metrics.contains("# HELP drover_jobs_total") && metrics.contains("drover_build_info{version="),
        "{metrics}"
    );
    assert!(a.http_get("/metricsfoo").starts_with("HTTP/1.1 404"), "exact paths only");

    // Recovery: the judge resolves it; Alertmanager sends one resolve.
    events.wait_for("the slow jobs", Duration::from_secs(60), |e| count(e, "succeeded") >= 52).await;
    submit(&a.env, 0.1, 60);
    wait_until("the resolve through Alertmanager", Duration::from_secs(120), || pages(&hook, "resolved") >= 1);
    wait_until("no alert left in Alertmanager", Duration::from_secs(30), || !am.alerts().iter().any(fleet_drift));
    // Until the first resolve, one page: the two supervisors' posts were one alert. (Between
    // the first and the last supervisor's resolve, a re-send of the later one can reopen it;
    // that window is what a fleet-wide condition raised by one supervisor closes.)
    let bodies = hook.bodies.lock().expect("lock").clone();
    let first_resolve = bodies.iter().position(|x| is_page(x, "resolved")).expect("a resolve");
    let firing: Vec<_> = bodies[..first_resolve].iter().filter(|x| is_page(x, "firing")).collect();
    assert_eq!(firing.len(), 1, "paged once for one drift seen by two supervisors: {bodies:?}");
    assert_eq!(firing[0]["alerts"].as_array().map(Vec::len), Some(1), "one alert in the page: {:?}", firing[0]);
    drop(b);
    let _ = std::fs::remove_dir_all(&scratch);
}

/// A host whose class `s` has no worker: one job submitted is a backlog that never completes,
/// and `ClassStalled` fires a second or two later. `target` are the `[alerts]` lines that say
/// where it goes.
fn stalled_host(name: &str, target: &str) -> Host {
    let classes = format!(
        r#"
        {target}
        alertmanager_credentials = "{{dir}}/am.cred"
        alertmanager_resend = "1s"
        runbook_base = "https://wiki.example/drover/runbooks/"
        evaluate_every = "300ms"
        fire_after = "1s"
        resolve_after = "1s"
        stall_min = "1s"
        stall_gaps = 1
        [classes.s]
        command = ["true"]
        workers = 0
        "#
    );
    Host::new(name, &classes)
}

fn credentials(h: &Host, line: &str) {
    std::fs::write(h.env.dir.join("am.cred"), format!("{line}\n")).expect("credentials");
}

/// Until the supervisor said, once, why its alerts were not delivered; that line.
fn refusal(h: &Host, what: &str) -> String {
    let said =
        || h.supervisor_log().lines().find(|l| l.contains("alerts not delivered to alertmanager")).map(String::from);
    wait_until(what, Duration::from_secs(60), || said().is_some());
    said().unwrap_or_default()
}

fn restart(h: &mut Host) {
    h.stop_supervisor();
    std::fs::write(h.config.with_file_name("supervisor.log"), "").expect("truncate the log");
    h.start_supervisor();
}

fn stalled(x: &serde_json::Value) -> bool {
    x["labels"]["alertname"] == "ClassStalled" && x["labels"]["class"] == "s"
}

#[test]
fn alerts_reach_alertmanager_over_tls_with_its_ca_and_basic_auth_and_refusals_are_said_without_the_password() {
    let hook = Receiver::start();
    let scratch = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("am-tls-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]));
    std::fs::create_dir_all(&scratch).expect("dir");
    let (user, password) = ("drover", "correct-horse-battery-staple");
    let web = Web { tls: Tls::make(&scratch), user: user.into(), password: password.into() };
    let ca = web.tls.ca.display().to_string();
    let am = Alertmanager::start_with(&scratch, &hook, Some(web));
    let mut h = stalled_host("amtls", &format!("alertmanager = [\"{}\"]\nalertmanager_auth = \"basic\"", am.url()));
    credentials(&h, &format!("{user}:{password}"));
    h.env.submit("s", "{}", 1, &[]);

    // The system's roots do not know the test's CA: the certificate is refused, and said.
    h.start_supervisor();
    let line = refusal(&h, "the certificate refused");
    assert!(line.contains("certificate") && line.contains("UnknownIssuer"), "{line}");

    // The CA given, a wrong password: Alertmanager refuses it (401), and the log says so and
    // names neither password.
    let text = std::fs::read_to_string(&h.config).expect("config");
    std::fs::write(
        &h.config,
        text.replace("alertmanager_auth", &format!("alertmanager_ca = \"{ca}\"\nalertmanager_auth")),
    )
    .expect("config");
    credentials(&h, &format!("{user}:not-the-password"));
    restart(&mut h);
    let line = refusal(&h, "the wrong password refused");
    assert!(line.contains("401 Unauthorized") && line.contains("the credentials were refused"), "{line}");
    assert!(am.alerts().is_empty(), "nothing taken without the password: {:?}", am.alerts());

    // The right password: the alert is in Alertmanager, with its runbook.
    credentials(&h, &format!("{user}:{password}"));
    restart(&mut h);
    wait_until("the stall in Alertmanager", Duration::from_secs(60), || am.alerts().iter().any(stalled));
    let held = am.alerts();
    let alert = held.iter().find(|x| stalled(x)).expect("the stall");
    assert_eq!(alert["annotations"]["runbook_url"], "https://wiki.example/drover/runbooks/class-stalled.md", "{alert}");
    assert_eq!(alert["annotations"]["reported_by"], h.name.as_str());
    let log = h.supervisor_log();
    assert!(!log.contains("alerts not delivered"), "delivered: {log}");
    for secret in [password, "not-the-password"] {
        assert!(!log.contains(secret), "a password in the log: {log}");
    }
    let _ = std::fs::remove_dir_all(&scratch);
}

/// A stand-in for an Alertmanager behind a proxy that takes bearer tokens (Alertmanager has no
/// bearer auth of its own): HTTPS with the test's certificate; `POST /api/v2/alerts` with the
/// right `Authorization: Bearer` is kept, anything else answered 401.
struct BearerSink {
    port: u16,
    taken: std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
}

impl BearerSink {
    fn start(tls: &Tls, token: &str) -> BearerSink {
        use rustls_pki_types::pem::PemObject;
        use std::io::{BufRead, BufReader, Read, Write};
        let certs = rustls_pki_types::CertificateDer::pem_file_iter(&tls.cert)
            .expect("cert")
            .collect::<Result<Vec<_>, _>>()
            .expect("cert");
        let key = rustls_pki_types::PrivateKeyDer::from_pem_file(&tls.key).expect("key");
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .expect("server config");
        let config = std::sync::Arc::new(config);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let taken = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (sink, expected) = (taken.clone(), format!("bearer {token}"));
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                let Ok(conn) = rustls::ServerConnection::new(config.clone()) else { continue };
                let mut reader = BufReader::new(rustls::StreamOwned::new(conn, stream));
                let (mut len, mut authorized, mut request) = (0usize, false, String::new());
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if request.is_empty() {
                        request = line.trim().to_string();
                    }
                    let lower = line.to_ascii_lowercase();
                    if let Some(v) = lower.strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                    if let Some(v) = lower.strip_prefix("authorization:") {
                        authorized = v.trim() == expected.to_ascii_lowercase();
                    }
                }
                let mut body = vec![0u8; len];
                let ok = reader.read_exact(&mut body).is_ok() && request.starts_with("POST /api/v2/alerts ");
                let answer: &[u8] = if ok && authorized {
                    if let Ok(v) = serde_json::from_slice(&body) {
                        sink.lock().expect("lock").push(v);
                    }
                    b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                } else {
                    b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 13\r\nconnection: close\r\n\r\nUnauthorized\n"
                };
                let tls = reader.get_mut();
                let _ = tls.write_all(answer);
                tls.conn.send_close_notify();
                let _ = tls.flush();
            }
        });
        BearerSink { port, taken }
    }

    fn stalls(&self) -> Vec<serde_json::Value> {
        let taken = self.taken.lock().expect("lock");
        taken.iter().filter_map(|b| b.as_array()).flatten().filter(|x| stalled(x)).cloned().collect()
    }
}

#[test]
fn alerts_go_over_tls_with_a_bearer_token_and_a_wrong_token_is_refused_and_said_without_it() {
    let scratch = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("am-bearer-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]));
    std::fs::create_dir_all(&scratch).expect("dir");
    let tls = Tls::make(&scratch);
    let token = "tok-5f2b9c0e7d1a";
    let sink = BearerSink::start(&tls, token);
    let target = format!(
        "alertmanager = [\"https://127.0.0.1:{}\"]\nalertmanager_ca = \"{}\"\nalertmanager_auth = \"bearer\"",
        sink.port,
        tls.ca.display()
    );
    let mut h = stalled_host("ambearer", &target);
    credentials(&h, "tok-wrong-one");
    h.env.submit("s", "{}", 1, &[]);
    h.start_supervisor();
    let line = refusal(&h, "the wrong token refused");
    assert!(line.contains("401 Unauthorized") && line.contains("the credentials were refused"), "{line}");
    assert!(sink.stalls().is_empty());

    credentials(&h, token);
    restart(&mut h);
    wait_until("the stall delivered with the token", Duration::from_secs(60), || !sink.stalls().is_empty());
    let alert = &sink.stalls()[0];
    assert_eq!(alert["annotations"]["runbook_url"], "https://wiki.example/drover/runbooks/class-stalled.md", "{alert}");
    let log = h.supervisor_log();
    for secret in [token, "tok-wrong-one"] {
        assert!(!log.contains(secret), "a token in the log: {log}");
    }
    let _ = std::fs::remove_dir_all(&scratch);
}
