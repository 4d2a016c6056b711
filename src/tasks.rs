//! A process's tasks: every long-running task is spawned through [`Tasks`], stops when its
//! token is cancelled, and is waited for on shutdown. Nothing is detached: a task that outlives
//! its process's `run` would do I/O after the process said it stopped.

use std::future::Future;
use std::time::Duration;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};
use tokio_util::task::TaskTracker;

#[derive(Clone, Debug, Default)]
pub struct Tasks {
    token: CancellationToken,
    tracker: TaskTracker,
}

impl Tasks {
    pub fn new() -> Tasks {
        Tasks::default()
    }

    /// Runs `task` on the runtime, tracked. The task should end when [`Tasks::cancelled`] fires.
    pub fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tracker.spawn(task);
    }

    /// The token every task watches; cancelling it asks them all to stop.
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }

    pub fn cancelled(&self) -> WaitForCancellationFuture<'_> {
        self.token.cancelled()
    }

    pub fn is_cancelled(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Asks every task to stop and waits up to `grace` for them. Returns how many were still
    /// running when the grace ran out (they are then dropped with the runtime).
    pub async fn shutdown(&self, grace: Duration) -> usize {
        self.token.cancel();
        self.tracker.close();
        match tokio::time::timeout(grace, self.tracker.wait()).await {
            Ok(()) => 0,
            Err(_) => self.tracker.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn shutdown_waits_for_every_task_and_names_the_stragglers() {
        let tasks = Tasks::new();
        let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        for _ in 0..3 {
            let (t, done) = (tasks.clone(), done.clone());
            tasks.spawn(async move {
                t.cancelled().await;
                done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            });
        }
        assert_eq!(tasks.shutdown(Duration::from_secs(5)).await, 0);
        assert_eq!(done.load(std::sync::atomic::Ordering::SeqCst), 3);

        let stubborn = Tasks::new();
        stubborn.spawn(std::future::pending());
        assert_eq!(stubborn.shutdown(Duration::from_millis(20)).await, 1);
    }
}
