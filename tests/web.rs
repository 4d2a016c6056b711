//! The supervisor's page in a real browser: headless Chromium driven over WebDriver
//! (`chromedriver`, fantoccini) against two real supervisors with real units under the systemd
//! user manager. One host's units hang on every job and are quarantined: the page shows the
//! quarantine and its evidence. An action without the operator's token is refused and changes
//! nothing; with it, the other host is drained from the page and the page shows it move from
//! "draining" to "safe to power off" (a job holds the drain open until the test lets it end); a
//! dead letter is requeued and the quarantine released from the page. The timelines say who did
//! each. A read-only page refuses even the right token. At a phone's width nothing runs off the
//! screen.

use crate::harness::wait_until;
use crate::quarantine::add_environment;
use crate::supervisor::{drover, Host};
use fantoccini::{Client, ClientBuilder, Locator};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CLASS: &str = r#"
evaluate_every = "500ms"
[quarantine]
hold = "10m"
alpha = 1e-3
[web]
actions = true
token_file = "{dir}/web-tokens"
refresh = "1s"
runbooks = "https://wiki.example.com/drover/runbooks"
[classes.w]
mode = "persistent"
command = ["python3", "{handler}", "persistent"]
timeout = "2s"
max_attempts = 10
poison_after = 0
retry_base = "300ms"
retry_max = "1s"
workers = 2
[classes.hold]
command = ["python3", "{handler}"]
timeout = "5m"
workers = 1
"#;

const TOKEN: &str = "6f1d0c0e9a8b47d2b1c3e5f7a9d0b2c4";

/// `chromedriver` on a free port, stopped when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    fn start() -> Driver {
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().expect("addr").port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian's chromium-driver; scripts/services.sh installs it)");
        let url = format!("http://127.0.0.1:{port}");
        wait_until("chromedriver to listen", Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Driver { child, url }
    }

    async fn browser(&self, profile: &std::path::Path) -> Client {
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1280,2200",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([format!("--user-data-dir={}", profile.display())])
        .collect::<Vec<_>>();
        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), "chrome".into());
        caps.insert("goog:chromeOptions".into(), serde_json::json!({ "binary": "/usr/bin/chromium", "args": args }));
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        ClientBuilder::new(connector).capabilities(caps).connect(&self.url).await.expect("a browser session")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The page's address, from the supervisor's log.
fn page_url(h: &Host) -> String {
    let find = || {
        h.supervisor_log()
            .lines()
            .rev()
            .find_map(|l| l.split("page on ").nth(1).and_then(|r| r.split_whitespace().next()).map(str::to_string))
    };
    wait_until("the supervisor to serve its page", Duration::from_secs(30), || find().is_some());
    find().unwrap_or_default()
}

/// Waits until the text of the first element matching `css` satisfies `ok`; returns it.
async fn text_of(c: &Client, css: &str, what: &str, limit: Duration, ok: impl Fn(&str) -> bool) -> String {
    let end = Instant::now() + limit;
    let mut last = String::new();
    while Instant::now() < end {
        if let Ok(e) = c.find(Locator::Css(css)).await {
            last = e.text().await.unwrap_or_default();
            if ok(&last) {
                return last;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let page = c.find(Locator::Css("main")).await.ok();
    let shown = match page {
        Some(m) => m.text().await.unwrap_or_default(),
        None => String::new(),
    };
    panic!("{what}: `{css}` still says {last:?} after {limit:?}; the page shows:\n{shown}");
}

async fn fill(c: &Client, css: &str, text: &str) {
    let e = c.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("{css}: {e}"));
    e.clear().await.expect("clear");
    e.send_keys(text).await.expect("type");
}

async fn choose(c: &Client, css: &str, value: &str) {
    let e = c.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("{css}: {e}"));
    e.select_by_value(value).await.unwrap_or_else(|e| panic!("{css} = {value}: {e}"));
}

/// One POST of an action form to a page, as a script would send it: the whole response.
fn post_action(page: &str, token: &str, form: &serde_json::Value) -> String {
    use std::io::{Read, Write};
    let addr = page.trim_start_matches("http://").trim_end_matches('/');
    let body = form.to_string();
    let mut s = std::net::TcpStream::connect(addr).expect("connect to the page");
    s.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    let req = format!(
        "POST /api/action HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).expect("request");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("response");
    text
}

fn timeline(h: &Host) -> String {
    String::from_utf8_lossy(&drover(&["timeline", "--json", "--config"], &h.config).stdout).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_a_quarantine_with_its_evidence_refuses_an_action_without_the_token_and_a_drain_to_safe_to_power_off(
) {
    let mut good = Host::new("web", CLASS);
    std::fs::write(good.env.dir.join("web-tokens"), format!("# operators\nalice:{TOKEN}\n")).expect("tokens");
    let mut bad = good.other_host("host-bad", 1);
    // The bad host runs no `hold` unit: the held job below runs on the good host.
    let text = std::fs::read_to_string(&bad.config).expect("config");
    let at = text.rfind("workers = 1").expect("the hold class's workers");
    // Its page is read-only.
    let text = format!("{}workers = 0{}", &text[..at], &text[at + "workers = 1".len()..]);
    std::fs::write(&bad.config, text.replace("actions = true", "actions = false")).expect("config");
    add_environment(&bad, "BEHAVE_BAD=1");
    good.start_supervisor();
    bad.start_supervisor();
    good.wait_status("3 healthy units", Duration::from_secs(60), |u| {
        u.values().filter(|s| s.health == "healthy").count() == 3
    });
    bad.wait_status("1 healthy unit", Duration::from_secs(60), |u| u.values().any(|s| s.health == "healthy"));
    let url = page_url(&good);

    let driver = Driver::start();
    let profile = good.env.dir.join("chromium-profile");
    let c = driver.browser(&profile).await;
    c.goto(&url).await.expect("the page loads");
    text_of(&c, "#live", "the page goes live", Duration::from_secs(30), |t| t == "live").await;
    let hosts = text_of(&c, "#hosts", "both hosts listed", Duration::from_secs(30), |t| {
        t.contains(&good.name) && t.contains("host-bad")
    })
    .await;
    assert!(hosts.contains("healthy"), "{hosts}");

    // The bad host's unit hangs on every job: quarantined, and the page says why.
    // Jobs in batches until the evidence suffices (each batch gives the bad unit a few to hang on).
    let quarantined = || bad.units().values().any(|s| s.health == "quarantined");
    for _ in 0..12 {
        if quarantined() {
            break;
        }
        good.env.submit("w", r#"{"sleep": 0.3}"#, 20, &[]);
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end && !quarantined() {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    bad.wait_status("quarantined", Duration::from_secs(30), |u| u.values().any(|s| s.health == "quarantined"));
    let list = drover(&["quarantine", "list", "--json", "--config"], &bad.config);
    let orders: serde_json::Value = serde_json::from_slice(&list.stdout).expect("json");
    let reason = orders[0]["reason"].as_str().unwrap_or_else(|| panic!("a quarantine: {orders}")).to_string();
    let shown = text_of(&c, ".quarantine[data-host='host-bad']", "the quarantine", Duration::from_secs(30), |t| {
        t.contains("Evidence")
    })
    .await;
    assert!(shown.contains(&reason), "the page shows the evidence the supervisor holds ({reason}):\n{shown}");
    assert!(shown.contains("on hold until") && shown.contains("then one probe job"), "the probe's state: {shown}");
    let health = text_of(&c, ".host[data-host='host-bad']", "the unit's health", Duration::from_secs(30), |t| {
        t.contains("quarantined")
    })
    .await;
    assert!(health.contains("w-1"), "{health}");
    let alerts =
        text_of(&c, "#alerts", "the quarantine's alert", Duration::from_secs(60), |t| t.contains("WorkerQuarantined"))
            .await;
    assert!(alerts.contains("host=host-bad"), "{alerts}");
    // (Read in one step: the section is drawn anew at every update.)
    let href = c
        .execute("return document.querySelector(\"#alerts [data-alert='WorkerQuarantined'] a\").href;", vec![])
        .await
        .expect("a runbook link");
    assert_eq!(href.as_str(), Some("https://wiki.example.com/drover/runbooks/worker-quarantined.md"));

    // A job on the good host that runs until the test lets it end.
    let release = good.env.dir.join("let-the-job-end");
    let held = good.env.submit("hold", &format!(r#"{{"until_file": "{}"}}"#, release.display()), 1, &[]);
    good.wait_status("the held job running", Duration::from_secs(60), |u| {
        u.values().any(|s| s.job.as_ref().is_some_and(|j| j.id == held[0]))
    });
    let running =
        text_of(&c, ".class[data-class='hold'] table.jobs", "the running job", Duration::from_secs(30), |t| {
            t.contains(&held[0][..8])
        })
        .await;
    assert!(running.contains(&format!("hold-1 on {}", good.name)), "{running}");

    // Without the token (and with a wrong one): refused, and nothing changes.
    choose(&c, "#a-verb", "drain").await;
    choose(&c, "#a-host", &good.name).await;
    fill(&c, "#a-unit", "").await;
    fill(&c, "#a-deadline", "5m").await;
    fill(&c, "#a-reason", "PSU swap in rack 4").await;
    fill(&c, "#a-token", "").await;
    c.find(Locator::Css("#a-go")).await.expect("button").click().await.expect("click");
    let said =
        text_of(&c, "#action-result", "the refusal", Duration::from_secs(20), |t| t.starts_with("refused")).await;
    assert!(said.contains("401") && said.contains("no valid operator token"), "{said}");
    fill(&c, "#a-token", "not-the-token-0123456789").await;
    c.find(Locator::Css("#a-go")).await.expect("button").click().await.expect("click");
    text_of(&c, "#action-result", "the wrong token refused", Duration::from_secs(20), |t| {
        t.starts_with("refused (401)")
    })
    .await;
    // A read-only page refuses even the right token.
    let form = serde_json::json!({"verb": "cordon", "host": "host-bad", "reason": "test"});
    let answer = post_action(&page_url(&bad), TOKEN, &form);
    assert!(answer.starts_with("HTTP/1.1 403") && answer.contains("this page is read-only"), "{answer}");
    let tl: Vec<serde_json::Value> = serde_json::from_str(&timeline(&bad)).expect("json");
    assert!(!tl.iter().any(|e| e["who"].as_str().unwrap_or("").contains("alice")), "nothing done: {tl:#?}");
    assert!(!timeline(&good).contains("drain (deadline"), "nothing was drained: {}", timeline(&good));
    assert!(good.units().values().all(|u| u.health == "healthy"), "{:#?}", good.units());

    // With it: a dead letter requeued from the page...
    good.env.submit("w", r#"{"reject": true}"#, 1, &[]);
    text_of(&c, ".class[data-class='w'] .dead", "the dead letter counted", Duration::from_secs(60), |t| {
        t.contains("1 rejected")
    })
    .await;
    choose(&c, "#a-verb", "requeue").await;
    choose(&c, "#a-class", "w").await;
    choose(&c, "#a-dead-reason", "rejected").await;
    fill(&c, "#a-reason", "bucket policy fixed").await;
    fill(&c, "#a-token", TOKEN).await;
    c.find(Locator::Css("#a-go")).await.expect("button").click().await.expect("click");
    let said =
        text_of(&c, "#action-result", "the requeue", Duration::from_secs(30), |t| !t.starts_with("sending")).await;
    assert_eq!(said, "requeue: 1 of 1 dead letter(s) of class w requeued");
    let tl = timeline(&good);
    assert!(tl.contains("1 dead letter(s) of class w requeued") && tl.contains("alice (page, from 127.0.0.1)"), "{tl}");

    // ...and the good host drained, the page following it to "safe to power off".
    choose(&c, "#a-verb", "drain").await;
    choose(&c, "#a-host", &good.name).await;
    fill(&c, "#a-deadline", "5m").await;
    fill(&c, "#a-reason", "PSU swap in rack 4").await;
    c.find(Locator::Css("#a-go")).await.expect("button").click().await.expect("click");
    let said = text_of(&c, "#action-result", "the drain accepted", Duration::from_secs(30), |t| {
        t.starts_with("drain:") || t.starts_with("not done") || t.starts_with("refused")
    })
    .await;
    assert_eq!(said, format!("drain: done on {}", good.name));
    let banner = format!("#power .power[data-host='{}']", good.name);
    let draining =
        text_of(&c, &banner, "the drain in progress", Duration::from_secs(30), |t| t.contains("DRAINING")).await;
    assert!(draining.contains("1 job(s) still running") && draining.contains("PSU swap in rack 4"), "{draining}");
    assert!(!draining.contains("SAFE TO POWER OFF"), "{draining}");
    std::fs::write(&release, "").expect("the job may end");
    let safe =
        text_of(&c, &banner, "safe to power off", Duration::from_secs(60), |t| t.contains("SAFE TO POWER OFF")).await;
    assert!(safe.contains("drained by alice (page, from 127.0.0.1)"), "{safe}");
    let class = c.find(Locator::Css(&format!("{banner}.safe"))).await;
    assert!(class.is_ok(), "the banner is the safe one");
    assert!(good.units().values().all(|u| u.health == "drained"), "{:#?}", good.units());

    // Who did it, in the supervisor's timeline and on the page's.
    let tl = timeline(&good);
    assert!(tl.contains("alice (page, from 127.0.0.1)") && tl.contains("drain (deadline"), "{tl}");
    choose(&c, "#t-host", &good.name).await;
    text_of(&c, "#timeline", "the drain in the page's timeline", Duration::from_secs(20), |t| {
        t.contains("alice (page, from 127.0.0.1)") && t.contains("drain (deadline") && !t.contains("host-bad ·")
    })
    .await;

    // What the README shows: safe to power off on one host, a quarantine on the other.
    let shot = std::env::var_os("DROVER_PAGE_SCREENSHOT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| good.env.dir.join("page.png"));
    std::fs::write(&shot, c.screenshot().await.expect("screenshot")).expect("write the screenshot");

    // The quarantine released from this page (the order goes to the other host's supervisor).
    choose(&c, "#a-verb", "release").await;
    choose(&c, "#a-host", "host-bad").await;
    fill(&c, "#a-unit", "w-1").await;
    fill(&c, "#a-reason", "driver fixed").await;
    c.find(Locator::Css("#a-go")).await.expect("button").click().await.expect("click");
    let said =
        text_of(&c, "#action-result", "the release", Duration::from_secs(30), |t| t.starts_with("release")).await;
    assert_eq!(said, "release: done on host-bad");
    text_of(&c, "#quarantines", "the quarantine gone", Duration::from_secs(30), |t| t == "none").await;
    // Recorded there as the operator the page took the token of, relayed by this supervisor's
    // broker login (the part the broker checked, after `via`).
    let tl: Vec<serde_json::Value> = serde_json::from_str(&timeline(&bad)).expect("json");
    let relayed = format!("alice (page, from 127.0.0.1) via {}", broker_login());
    assert!(
        tl.iter().any(|e| e["what"] == "undrain" && e["who"] == relayed.as_str() && e["why"] == "driver fixed"),
        "{tl:#?}"
    );

    // Charts are drawn: the class's run-time histogram.
    let bars = c
        .execute("return document.querySelectorAll(\".class[data-class='w'] svg rect.bin\").length;", vec![])
        .await
        .expect("bars");
    assert!(bars.as_u64().is_some_and(|n| n > 0), "a run-time histogram");

    // A phone's width: nothing runs off the side.
    c.set_window_size(390, 844).await.expect("phone width");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let overflow = c
        .execute("return document.documentElement.scrollWidth - document.documentElement.clientWidth;", vec![])
        .await
        .expect("measure");
    assert_eq!(overflow.as_i64(), Some(0), "the page is wider than a phone's screen");
    let phone = shot.with_file_name("page-phone.png");
    std::fs::write(&phone, c.screenshot().await.expect("screenshot")).expect("write the screenshot");

    let _ = c.close().await;
    let out = drover(&["undrain", "--host", &good.name, "--reason", "test over", "--config"], &good.config);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    good.stop_supervisor();
    bad.stop_supervisor();
}

/// The user of the tests' broker URL (the login every supervisor of these tests uses).
fn broker_login() -> String {
    let url = crate::harness::amqp_url();
    let after = url.split_once("://").map_or(url.as_str(), |(_, rest)| rest);
    after.split_once('@').and_then(|(login, _)| login.split(':').next()).unwrap_or("guest").to_string()
}
