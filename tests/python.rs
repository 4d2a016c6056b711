//! The Python package (`python/`) against the real broker and real workers: installed with pip
//! into a fresh venv, submitting jobs that the CLI's side reads like its own (and the other way
//! round), held to the wire format's document and the Rust constants; heartbeats that catch a
//! hung handler before its timeout; checkpoints that carry a drained job to another worker.

use crate::harness::{connect, count, Env};
use drover::job::{self, Job};
use lapin::options::{BasicGetOptions, BasicNackOptions};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A fresh venv with `pip install ./python[amqp]` in it, made once per test run.
fn venv() -> &'static Path {
    static VENV: OnceLock<PathBuf> = OnceLock::new();
    VENV.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("python-venv-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let made = Command::new("python3").args(["-m", "venv"]).arg(&dir).output().expect("run python3 -m venv");
        assert!(made.status.success(), "python3 -m venv: {}", String::from_utf8_lossy(&made.stderr));
        let pip = Command::new(dir.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .arg(format!("{}[amqp]", repo().join("python").display()))
            .output()
            .expect("run pip");
        assert!(pip.status.success(), "pip install ./python[amqp]: {}", String::from_utf8_lossy(&pip.stderr));
        dir
    })
}

/// `NAME = "value"` and `NAME = 123` lines of `python/drover/wire.py`.
fn python_constants() -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(repo().join("python/drover/wire.py")).expect("wire.py");
    text.lines()
        .filter_map(|l| {
            let (name, value) = l.split_once(" = ")?;
            name.chars().all(|c| c.is_ascii_uppercase() || c == '_' || c.is_ascii_digit()).then_some(())?;
            Some((name.to_string(), value.trim().trim_matches('"').to_string()))
        })
        .collect()
}

#[test]
fn the_package_is_held_to_the_wire_format() {
    let py = python_constants();
    let doc = std::fs::read_to_string(repo().join("docs/wire-format.md")).expect("docs/wire-format.md");
    let rust_headers = [
        ("H_ATTEMPT", job::H_ATTEMPT),
        ("H_SUBMITTED", job::H_SUBMITTED),
        ("H_DEADLINE", job::H_DEADLINE),
        ("H_TENANT", job::H_TENANT),
        ("H_CLASS", job::H_CLASS),
        ("H_FAILED_ON", job::H_FAILED_ON),
        ("H_FAILURES", job::H_FAILURES),
        ("H_HAND_BACKS", job::H_HAND_BACKS),
        ("H_HANDED_BACK_AT", job::H_HANDED_BACK_AT),
        ("H_CHECKPOINT", job::H_CHECKPOINT),
        ("H_DEAD_REASON", job::H_DEAD_REASON),
        ("H_DEAD_DETAIL", job::H_DEAD_DETAIL),
        ("H_DEAD_AT", job::H_DEAD_AT),
        ("H_DEAD_HOST", job::H_DEAD_HOST),
        ("H_DEAD_UNIT", job::H_DEAD_UNIT),
    ];
    for (name, value) in rust_headers {
        assert_eq!(py.get(name).map(String::as_str), Some(value), "python/drover/wire.py {name}");
        assert!(doc.contains(&format!("`{value}`")), "docs/wire-format.md does not describe {value}");
    }
    let py_headers = py.keys().filter(|k| k.starts_with("H_")).count();
    assert_eq!(py_headers, rust_headers.len(), "a header in wire.py that the Rust side does not know");
    // Every variable the package reads is one the worker sets, and documented.
    let handler_rs = std::fs::read_to_string(repo().join("src/io/handler.rs")).expect("handler.rs");
    for (name, var) in py.iter().filter(|(k, _)| k.starts_with("ENV_")) {
        let set = handler_rs.contains(&format!("\"{var}\""))
            || ["DROVER_HOST", "DROVER_UNIT", "DROVER_CLASS"].contains(&var.as_str());
        assert!(set, "{name} = {var} is not set by src/io/handler.rs");
        assert!(doc.contains(&format!("`{var}`")), "docs/wire-format.md does not describe {var}");
    }
    let st = |code: i32| std::process::ExitStatus::from_raw(code << 8);
    use drover::outcome::Outcome;
    use std::os::unix::process::ExitStatusExt;
    let exits =
        [("EXIT_OK", "Succeeded"), ("EXIT_RETRY", "Transient"), ("EXIT_REJECT", "Rejected"), ("EXIT_FAIL", "Failed")];
    for (name, kind) in exits {
        let code: i32 = py[name].parse().expect("an exit code");
        let outcome = drover::io::handler::exec_outcome(st(code), "");
        let got = match outcome {
            Outcome::Succeeded => "Succeeded",
            Outcome::Transient(_) => "Transient",
            Outcome::Rejected(_) => "Rejected",
            Outcome::Failed(_) => "Failed",
            _ => "other",
        };
        assert_eq!(got, kind, "{name} = {code}");
        assert!(doc.contains(&format!("`{code}`")), "docs/wire-format.md does not give exit status {code}");
    }
    assert_eq!(py["MAX_CHECKPOINT_BYTES"], job::MAX_CHECKPOINT_BYTES.to_string());
    assert_eq!(py["EVENTS_VERSION"], drover::events::VERSION.to_string());
    for status in ["ok", "retry", "reject", "fail"] {
        let line = format!(r#"{{"id": "a", "status": "{status}"}}"#);
        assert!(matches!(drover::io::handler::parse_line(&line), drover::io::handler::Line::Result { .. }), "{status}");
        assert!(py.values().any(|v| v == status), "wire.py has no status {status}");
    }
}

const SUBMIT: &str = r#"
    [classes.s]
    mode = "persistent"
    command = ["{python}", "{pkg}"]
    timeout = "60s"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_submitted_from_python_and_from_the_cli_are_read_the_same() {
    let python = venv().join("bin/python");
    let pkg = repo().join("tests/handlers/pkg.py");
    let env = Env::new(
        "py-submit",
        &SUBMIT.replace("{python}", &python.display().to_string()).replace("{pkg}", &pkg.display().to_string()),
    );
    let mut events = env.events().await;
    let record = env.dir.join("record.jsonl");
    let payload = format!(r#"{{"record": "{}", "n": [1, 2.5, "x"]}}"#, record.display());
    // The CLI first: it declares the class's queues, which drover.submit expects.
    let cli = env.submit("s", &payload, 1, &["--deadline", "1h", "--tenant", "acme"]).remove(0);
    let script = format!(
        "import drover, json\nids = drover.submit('s', json.loads({payload:?}), config={:?}, deadline='1h', tenant='acme')\nprint('\\n'.join(ids))",
        env.config.display().to_string()
    );
    let out = Command::new(&python).args(["-c", &script]).output().expect("run python");
    assert!(out.status.success(), "drover.submit: {}", String::from_utf8_lossy(&out.stderr));
    let py_id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(py_id.len(), 36, "one uuid printed: {py_id}");

    // The broker holds two jobs with the same envelope but for their ids and times.
    let conn = connect().await;
    let chan = conn.create_channel().await.expect("channel");
    let queue = format!("{}.jobs.s", env.prefix);
    let mut read = BTreeMap::new();
    let mut held = Vec::new();
    for _ in 0..2 {
        let msg = chan
            .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: false })
            .await
            .expect("basic.get")
            .expect("two jobs in the queue");
        let d = msg.delivery;
        let envelope = drover::io::wire::envelope(&d.properties);
        let j = Job::decode(&envelope, &d.data, "s", Duration::from_secs(1), 0).expect("decodes");
        let class = job::str_header(&envelope.headers, job::H_CLASS).expect("class header");
        let shape = (
            j.attempt,
            j.deadline - j.submitted_at,
            j.tenant.clone(),
            serde_json::from_slice::<serde_json::Value>(&j.payload).expect("JSON payload"),
            envelope.json,
            class,
            *d.properties.delivery_mode(),
            envelope.timestamp_s.is_some(),
        );
        read.insert(j.id.clone(), shape);
        held.push(d);
    }
    for d in held {
        d.acker.nack(BasicNackOptions { requeue: true, ..Default::default() }).await.expect("nack");
    }
    assert_eq!(read.len(), 2);
    assert_eq!(read[&cli], read[&py_id], "the CLI's job and Python's, as Drover reads them");
    assert_eq!(read[&cli].1, 3_600_000, "deadline one hour after submission");
    drop(chan);
    drop(conn);

    // A worker running a handler written with the installed package sees the two alike.
    let _w = env.worker("s", "s-1");
    events.wait_for("both jobs done", Duration::from_secs(60), |e| count(e, "succeeded") >= 2).await;
    let text = std::fs::read_to_string(&record).expect("the handler's record");
    let mut seen: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).expect("JSON")).collect();
    assert_eq!(seen.len(), 2, "{text}");
    for s in &mut seen {
        let module = s["module"].as_str().unwrap_or("").to_string();
        assert!(module.starts_with(&venv().display().to_string()), "the installed package runs: {module}");
        assert!(s["deadline"].as_str().is_some_and(|d| d.ends_with('Z')), "{s}");
        s.as_object_mut().expect("object").remove("deadline");
    }
    assert_eq!(seen[0], seen[1], "the handler sees the CLI's job and Python's alike");
    assert_eq!(seen[0]["tenant"], "acme");
    assert_eq!(seen[0]["attempt"], 1);
    // Both submitters tell the fleet (per-tenant backlogs count these).
    let units: Vec<&str> = events.of("submitted").map(|e| e.unit.as_str()).collect();
    assert!(units.contains(&"drover submit") && units.contains(&"drover.submit"), "{units:?}");
    assert!(events.of("submitted").all(|e| e.tenant.as_deref() == Some("acme") && e.count == Some(1)));
}

const HUNG: &str = r#"
    [classes.hb]
    mode = "persistent"
    command = ["python3", "{pkg}"]
    timeout = "300s"
    heartbeat_timeout = "2s"
    max_attempts = 1
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_that_stops_heartbeating_is_killed_before_its_timeout() {
    let pkg = repo().join("tests/handlers/pkg.py");
    let env = Env::new("py-heartbeat", &HUNG.replace("{pkg}", &pkg.display().to_string()));
    let mut events = env.events().await;
    let _w = env.worker("hb", "hb-1");
    let id = env.submit("hb", r#"{"hang_after": 3}"#, 1, &[])[0].clone();
    events.wait_for("the hung attempt to end", Duration::from_secs(120), |e| count(e, "failed") >= 1).await;
    let failed = events.of("failed").next().expect("failed");
    assert_eq!(failed.job_id.as_deref(), Some(id.as_str()));
    assert_eq!(failed.outcome.as_deref(), Some("timeout"), "{failed:?}");
    let detail = failed.detail.as_deref().unwrap_or("");
    assert!(detail.contains("no heartbeat for 2s"), "killed as hung, not at its 300 s timeout: {detail}");
    // It did report while it was alive: progress events with its notes.
    let progress: Vec<(Option<f64>, Option<&str>)> =
        events.of("progress").map(|e| (e.progress, e.note.as_deref())).collect();
    assert_eq!(progress.first(), Some(&(Some(0.01), Some("beat 1"))), "{progress:?}");
    // A hung attempt is a timeout like any other: retried until max_attempts (1 here).
    events.wait_for("the dead letter", Duration::from_secs(20), |e| count(e, "dead_lettered") >= 1).await;
}

const ML: &str = r#"
    [worker]
    drain_deadline = "1s"
    kill_grace = "1s"
    [classes.ml]
    mode = "persistent"
    command = ["python3", "{example}", "--load-seconds", "0.2", "--load-mb", "16"]
    timeout = "120s"
    drain_early_requeue = false
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_job_resumes_at_its_last_checkpoint_on_another_worker_and_counts_its_work_once() {
    let example = repo().join("examples/ml_handler.py");
    let env = Env::new("py-checkpoint", &ML.replace("{example}", &example.display().to_string()));
    let mut events = env.events().await;
    let out = env.dir.join("out");
    let mut w1 = env.worker("ml", "ml-1");
    let payload =
        format!(r#"{{"steps": 30, "step_seconds": 0.2, "checkpoint_every": 3, "output_dir": "{}"}}"#, out.display());
    let id = env.submit("ml", &payload, 1, &[])[0].clone();
    events
        .wait_for("a third of the job done on ml-1", Duration::from_secs(60), |e| {
            e.iter().any(|e| e.event.as_str() == "progress" && e.unit == "ml-1" && e.progress >= Some(0.3))
        })
        .await;
    w1.signal(libc::SIGTERM);
    let status = w1.wait_exit(Duration::from_secs(30)).expect("ml-1 exits at its drain deadline");
    assert_eq!(status.code(), Some(0), "{}", w1.log());
    events.wait_for("the requeue", Duration::from_secs(10), |e| count(e, "requeued") >= 1).await;

    let _w2 = env.worker("ml", "ml-2");
    events.wait_for("the job to finish on ml-2", Duration::from_secs(90), |e| count(e, "succeeded") >= 1).await;
    let ok = events.of("succeeded").next().expect("succeeded");
    assert_eq!((ok.job_id.as_deref(), ok.unit.as_str()), (Some(id.as_str()), "ml-2"));
    assert_eq!(ok.attempt, Some(1), "the drain is not charged");

    let log = std::fs::read_to_string(out.join(&id).join("work.log")).expect("work.log");
    let steps: Vec<(u64, String)> = log
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("JSON");
            (v["step"].as_u64().expect("step"), v["unit"].as_str().unwrap_or("").to_string())
        })
        .collect();
    let on = |unit: &str| -> Vec<u64> { steps.iter().filter(|(_, u)| u == unit).map(|(s, _)| *s).collect() };
    let (first, second) = (on("ml-1"), on("ml-2"));
    let resumed_at = *second.first().expect("ml-2 ran steps") - 1;
    assert!(resumed_at >= 9 && resumed_at % 3 == 0, "ml-2 resumed at a checkpoint of ml-1's: step {resumed_at}");
    assert_eq!(second, ((resumed_at + 1)..=30).collect::<Vec<u64>>(), "ml-2 ran each remaining step once");
    let last_on_first = *first.last().expect("ml-1 ran steps");
    assert!(last_on_first >= resumed_at, "the checkpoint was ml-1's: {first:?}");
    assert!(last_on_first - resumed_at <= 3, "at most the steps since the last checkpoint are redone: {first:?}");
    assert_eq!(first, (1..=last_on_first).collect::<Vec<u64>>(), "ml-1 ran from the start, each step once");
    let files = std::fs::read_dir(out.join(&id)).expect("outputs").filter_map(|e| e.ok()).count();
    assert_eq!(files, 31, "30 step outputs and the log: the work is counted once");
}

const EXEC: &str = r#"
    [classes.x]
    mode = "exec"
    command = ["python3", "{pkg}"]
    timeout = "60s"
    retry_base = "100ms"
    retry_max = "200ms"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_exec_mode_the_checkpoint_file_carries_a_retry_to_where_it_left_off() {
    let pkg = repo().join("tests/handlers/pkg.py");
    let env = Env::new("py-exec", &EXEC.replace("{pkg}", &pkg.display().to_string()));
    let mut events = env.events().await;
    let _w = env.worker("x", "x-1");
    let record = env.dir.join("resume.jsonl");
    let id = env.submit("x", &format!(r#"{{"resume": "{}"}}"#, record.display()), 1, &[])[0].clone();
    events.wait_for("the retry to succeed", Duration::from_secs(60), |e| count(e, "succeeded") >= 1).await;
    // The first attempt's Retry is exit status 75, its progress line a progress event.
    let retry = events.of("retry_scheduled").next().expect("a retry");
    assert_eq!((retry.job_id.as_deref(), retry.outcome.as_deref()), (Some(id.as_str()), Some("transient")));
    let progress = events.of("progress").next().expect("a progress event");
    assert_eq!((progress.progress, progress.note.as_deref()), (Some(0.5), Some("half way")));
    let text = std::fs::read_to_string(&record).expect("the second attempt's record");
    let seen: serde_json::Value = serde_json::from_str(text.trim()).expect("JSON");
    assert_eq!(seen["attempt"], 2);
    assert_eq!(seen["checkpoint"], serde_json::json!({"step": 5, "attempt": 1}), "the first attempt's checkpoint");
}

const ML_LEASED: &str = r#"
    [classes.ml]
    mode = "persistent"
    command = ["python3", "{example}", "--load-seconds", "0.2", "--load-mb", "16"]
    timeout = "120s"
    lease = "always"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leased_job_whose_worker_dies_resumes_from_the_checkpoint_its_lease_carried() {
    let example = repo().join("examples/ml_handler.py");
    let env = Env::new("py-lease", &ML_LEASED.replace("{example}", &example.display().to_string()));
    let text = std::fs::read_to_string(&env.config).expect("config");
    std::fs::write(&env.config, text.replacen("[broker]\n", "[broker]\nlease_ttl = \"3s\"\n", 1)).expect("config");
    let mut events = env.events().await;
    let out = env.dir.join("out");
    let mut w1 = env.worker("ml", "ml-1");
    let payload =
        format!(r#"{{"steps": 30, "step_seconds": 0.2, "checkpoint_every": 3, "output_dir": "{}"}}"#, out.display());
    let id = env.submit("ml", &payload, 1, &[])[0].clone();
    events
        .wait_for("half the job done on ml-1", Duration::from_secs(60), |e| {
            e.iter().any(|e| e.event.as_str() == "progress" && e.unit == "ml-1" && e.progress >= Some(0.5))
        })
        .await;
    // No drain, no goodbye: the worker dies, and only its lease's last copy brings the job back.
    w1.signal(libc::SIGKILL);
    w1.wait_exit(Duration::from_secs(5)).expect("killed");
    let _w2 = env.worker("ml", "ml-2");
    events.wait_for("the job to finish on ml-2", Duration::from_secs(90), |e| count(e, "succeeded") >= 1).await;
    let ok = events.of("succeeded").next().expect("succeeded");
    assert_eq!((ok.job_id.as_deref(), ok.unit.as_str()), (Some(id.as_str()), "ml-2"));
    let log = std::fs::read_to_string(out.join(&id).join("work.log")).expect("work.log");
    let first_on_ml2 = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("JSON"))
        .find(|v| v["unit"] == "ml-2")
        .and_then(|v| v["step"].as_u64())
        .expect("ml-2 ran steps");
    let resumed_at = first_on_ml2 - 1;
    assert!(resumed_at >= 3 && resumed_at % 3 == 0, "resumed from a checkpoint, not from the start: step {resumed_at}");
}
