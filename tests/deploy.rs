//! Deploying Drover (issue 18): logs shaped for the journal, unit files systemd accepts
//! (`systemd-analyze verify`) with every value escaped, per-class device access, the supervisor
//! run as a unit of the user manager, and the Debian package installed and run.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

fn scratch(name: &str) -> PathBuf {
    let id = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("drover-deploy-{name}-{id}"));
    std::fs::create_dir_all(&dir).expect("dir");
    dir
}

#[test]
fn under_the_journal_lines_carry_priorities_and_no_timestamp_or_colour() {
    let dir = scratch("journal");
    let config = dir.join("drover.toml");
    // A broker nobody listens on: the worker logs an info line, then warnings as it retries.
    std::fs::write(
        &config,
        "[broker]\nurl = \"amqp://guest:guest@127.0.0.1:1/%2f\"\nconnect_timeout = \"1s\"\n[classes.x]\ncommand = [\"true\"]\n",
    )
    .expect("write");
    let log = dir.join("stderr");
    let file = std::fs::File::create(&log).expect("log");
    let meta = file.metadata().expect("stat");
    let mut child = Command::new(env!("CARGO_BIN_EXE_drover"))
        .args(["work", "--class", "x", "--config"])
        .arg(&config)
        // What systemd sets when standard error is a stream to the journal.
        .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .stderr(file)
        .spawn()
        .expect("drover work");
    crate::harness::wait_until("a warning", Duration::from_secs(60), || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains("<4>broker unreachable"))
    });
    // SAFETY: signals our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(text.lines().any(|l| l.starts_with("<6>class x")), "{text}");
    for line in text.lines() {
        assert!(line.starts_with('<') && line.as_bytes().get(2) == Some(&b'>'), "a priority on every line: {line}");
        assert!(!line.contains('\x1b'), "no colour: {line}");
        assert!(!line.contains("Z  ") && !line.contains(" INFO ") && !line.contains(" WARN "), "no timestamp: {line}");
    }
    let _ = std::fs::remove_dir_all(dir);
}
