//! The operating-system signals a worker obeys, as one closed enum ([`Signal`]), with the
//! numbers that carry them. One task reads them all (`listen`); `Controls::apply` is the one
//! place that acts on them.

use super::controls::Controls;
use crate::maintenance::RequeueCause;
use crate::tasks::Tasks;
use std::sync::Arc;
use std::task::Poll;
use tokio::signal::unix::SignalKind;

/// What a signal asks of a worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM (`systemctl stop`, a reboot, a scale-down) or SIGINT: drain, then exit.
    Stop,
    /// SIGUSR1: take no new job; the running one goes on.
    Cordon,
    /// SIGUSR2: take jobs again.
    Uncordon,
    /// Take exactly one job (the probe), then cordon again until the supervisor decides.
    Probe,
    /// Requeue the running job now, without charge, for the cause the signal names.
    Requeue(RequeueCause),
}

impl Signal {
    /// Every signal a worker obeys.
    pub const ALL: [Signal; 7] = [
        Signal::Stop,
        Signal::Cordon,
        Signal::Uncordon,
        Signal::Probe,
        Signal::Requeue(RequeueCause::DrainDeadline),
        Signal::Requeue(RequeueCause::DrainEarly),
        Signal::Requeue(RequeueCause::Quarantine),
    ];

    /// The signal number that carries it (a stop also comes as SIGINT, a terminal's Ctrl-C).
    /// Each requeue cause has a number of its own, so that the `requeued` event says why.
    pub fn number(self) -> i32 {
        match self {
            Signal::Stop => libc::SIGTERM,
            Signal::Cordon => libc::SIGUSR1,
            Signal::Uncordon => libc::SIGUSR2,
            Signal::Probe => libc::SIGRTMIN() + 3,
            Signal::Requeue(cause) => {
                libc::SIGRTMIN()
                    + match cause {
                        RequeueCause::DrainDeadline => 2,
                        RequeueCause::DrainEarly => 4,
                        RequeueCause::Quarantine => 5,
                    }
            }
        }
    }
}

/// The signal a supervisor sends to requeue the running job now, one per cause, so that the
/// worker's `requeued` event says why (a drain's deadline, an early requeue, a quarantine).
pub fn requeue_signal(cause: RequeueCause) -> i32 {
    Signal::Requeue(cause).number()
}

/// The signal a supervisor sends to a quarantined or paused worker whose hold ran out: take
/// exactly one job (the probe), then cordon again until the supervisor decides.
pub fn probe_signal() -> i32 {
    Signal::Probe.number()
}

/// Ignores the worker's signals other than a stop until [`listen`] installs their handlers.
/// Their default action is to end the process: a supervisor's cordon that reached a worker
/// still starting (one `systemctl restart` had just started, between the supervisor's look at
/// the unit and its signal) killed it, and systemd failed the start. Ignored instead, the
/// signal is sent again to the new process (the supervisor remembers signals per process).
/// Call it first thing: loading the configuration can take a while on a loaded host. A stop
/// (SIGTERM) keeps its default: before any job, ending at once is what a stop asks.
pub fn ignore_until_listening() {
    for signal in Signal::ALL {
        if signal != Signal::Stop {
            // SAFETY: SIG_IGN installs no handler code; `listen` replaces it (tokio's handler
            // chains to a previous handler only when it is a function, never to SIG_IGN).
            unsafe { libc::signal(signal.number(), libc::SIG_IGN) };
        }
    }
}

/// Installs the signal handlers now (so that a signal that comes early is not lost) and reads
/// them in one task of `tasks`, handing each to `Controls::apply`.
pub(super) fn listen(controls: Arc<Controls>, tasks: &Tasks) -> std::io::Result<()> {
    let mut streams = Vec::new();
    for signal in Signal::ALL {
        streams.push((signal, tokio::signal::unix::signal(SignalKind::from_raw(signal.number()))?));
    }
    streams.push((Signal::Stop, tokio::signal::unix::signal(SignalKind::interrupt())?));
    let cancel = tasks.token().clone();
    tasks.spawn(async move {
        loop {
            let next = std::future::poll_fn(|cx| {
                for (signal, stream) in streams.iter_mut() {
                    if let Poll::Ready(Some(())) = stream.poll_recv(cx) {
                        return Poll::Ready(*signal);
                    }
                }
                Poll::Pending
            });
            tokio::select! {
                _ = cancel.cancelled() => return,
                signal = next => controls.apply(signal),
            }
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_requeue_cause_has_a_signal_of_its_own() {
        let causes = [RequeueCause::DrainDeadline, RequeueCause::DrainEarly, RequeueCause::Quarantine];
        let mut signals: Vec<i32> = causes.iter().map(|c| requeue_signal(*c)).collect();
        signals.push(probe_signal());
        let mut unique = signals.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), signals.len(), "{signals:?}");
        assert!(signals.iter().all(|s| (libc::SIGRTMIN()..=libc::SIGRTMAX()).contains(s)), "{signals:?}");
    }

    #[test]
    fn every_signal_has_a_number_of_its_own() {
        let mut numbers: Vec<i32> = Signal::ALL.iter().map(|s| s.number()).collect();
        numbers.sort();
        numbers.dedup();
        assert_eq!(numbers.len(), Signal::ALL.len(), "{numbers:?}");
        assert!(!numbers.contains(&libc::SIGINT), "SIGINT is read as a stop besides SIGTERM");
    }
}
