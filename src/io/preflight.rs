//! Preflight checks: the configured commands a worker runs before it takes its first job. A
//! freshly upgraded host whose settings differ from what the application expects fails here,
//! visibly, instead of timing out job after job.

use crate::events::tail;
use std::process::Stdio;
use std::time::Duration;
use tokio::process::Command;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckFailure {
    pub check: Vec<String>,
    /// Exit status, signal, timeout or spawn error.
    pub status: String,
    /// The check's combined output (the end of it, when long).
    pub output: String,
}

impl std::fmt::Display for CheckFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "preflight check {:?} failed ({})", self.check, self.status)?;
        if !self.output.is_empty() {
            write!(f, ": {}", self.output)?;
        }
        Ok(())
    }
}

/// Runs the checks in order and stops at the first that fails. Each runs with `timeout`,
/// never through a shell, in its own process group (killed whole on timeout).
pub async fn run(checks: &[Vec<String>], timeout: Duration) -> Result<(), CheckFailure> {
    for check in checks {
        run_one(check, timeout).await?;
    }
    Ok(())
}

async fn run_one(check: &[String], timeout: Duration) -> Result<(), CheckFailure> {
    let fail = |status: String, output: &[u8]| CheckFailure {
        check: check.to_vec(),
        status,
        output: tail(String::from_utf8_lossy(output).trim(), 2048),
    };
    let child = Command::new(&check[0])
        .args(&check[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| fail(format!("cannot run it: {e}"), b""))?;
    let pgid = child.id().unwrap_or(0) as i32;
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(Ok(out)) if out.status.success() => Ok(()),
        Ok(Ok(out)) => {
            let mut text = out.stdout;
            text.extend_from_slice(&out.stderr);
            Err(fail(format!("{}", out.status), &text))
        }
        Ok(Err(e)) => Err(fail(format!("cannot wait for it: {e}"), b"")),
        Err(_) => {
            // SAFETY: signals the check's own process group; no memory involved.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
            Err(fail(format!("no answer within {timeout:?}"), b""))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[tokio::test]
    async fn passing_checks_pass_and_the_first_failure_is_reported_with_its_output() {
        let t = Duration::from_secs(10);
        assert_eq!(run(&[argv(&["true"]), argv(&["test", "-d", "/"])], t).await, Ok(()));
        let err = run(
            &[argv(&["true"]), argv(&["sh", "-c", "echo cannot write /var/lib/app >&2; exit 3"]), argv(&["false"])],
            t,
        )
        .await
        .expect_err("fails");
        assert_eq!(err.check[0], "sh");
        assert!(err.status.contains('3'), "{err}");
        assert_eq!(err.output, "cannot write /var/lib/app");
    }

    #[tokio::test]
    async fn a_hanging_or_missing_check_fails_instead_of_blocking() {
        let err = run(&[argv(&["sleep", "30"])], Duration::from_millis(200)).await.expect_err("times out");
        assert!(err.status.contains("no answer"), "{err}");
        let err = run(&[argv(&["/nonexistent/check"])], Duration::from_secs(1)).await.expect_err("missing");
        assert!(err.status.contains("cannot run"), "{err}");
    }
}
