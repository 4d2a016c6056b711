//! What the supervisors have concluded about workers and jobs, as every worker needs it to
//! charge a job fairly.
//!
//! The fleet's judge publishes them on the broker's control exchange (the `judge.news`
//! message: one entry per host, and one, [`FLEET`], with every blame), every time it
//! evaluates; each supervisor keeps the latest and its workers ask it for them:
//! - **blames**: the workers of this host quarantined for a class, with the jobs that failed on
//!   them as evidence. Those failures were the worker's fault: they use up none of the job's
//!   attempts and do not count towards poison. Kept for a day after the quarantine ends, since
//!   the jobs they failed may still be waiting for a retry.
//! - **outages**: a class paused for a shared outage on this host (worker [`ANY_WORKER`]),
//!   with the jobs that failed in it. Those failures were the outage's fault, on whatever
//!   worker: charged to neither the job's attempts nor its poison count.
//! - **vanished attempts**: a job started on a worker of this host and the worker died before
//!   it said how the attempt ended (killed, out of memory, the host lost). The next delivery of
//!   the job goes to another worker with no failure recorded; counted here, a job that kills
//!   every worker it lands on is recognised as poison instead of being redelivered forever.
//!
//! Pure: the message types, the merged view and the charging rule.

use crate::outcome::Charges;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const VERSION: u32 = 1;

/// How long a host's verdicts are believed without a fresh message from its supervisor.
pub const BELIEVED_MS: i64 = 24 * 3600 * 1000;

/// The `host` of the fleet-wide message of the fleet's judge: the blames of every host, sent
/// once rather than in each host's message.
pub const FLEET: &str = "(fleet)";

/// The routing key of a host's verdicts on the control exchange.
pub fn routing_key(host: &str) -> String {
    format!("verdicts.{}", host.replace('.', "_"))
}

/// One host's verdicts, as its supervisor publishes them (the whole set each time).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HostVerdicts {
    pub v: u32,
    pub host: String,
    pub at_ms: i64,
    #[serde(default)]
    pub blamed: Vec<Blame>,
    #[serde(default)]
    pub vanished: Vec<Vanished>,
    /// Workers of this host with evidence building against them for a class, short of a
    /// quarantine: jobs that failed there are not given up on yet.
    #[serde(default)]
    pub suspects: Vec<Suspect>,
    /// The classes this host has a unit taking jobs for (healthy, under no order): a worker
    /// steers a retry away from its own host only when another host serves the class.
    #[serde(default)]
    pub serves: Vec<String>,
}

/// How recent a host's verdicts must be for its classes to count as served.
pub const SERVING_FRESH_MS: i64 = 5 * 60_000;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Suspect {
    /// `unit@host`
    pub worker: String,
    pub class: String,
}

/// The `worker` of a blame that is not a worker's: a shared outage of the class, which any
/// worker's failures of its jobs were part of.
pub const ANY_WORKER: &str = "*";

/// A worker quarantined for a class, or ([`ANY_WORKER`]) a class paused for a shared outage
/// (which forgives only its `jobs`, whether active or not).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Blame {
    /// `unit@host`, or [`ANY_WORKER`].
    pub worker: String,
    pub class: String,
    pub since_ms: i64,
    /// Still quarantined or paused (any failure there is its own); otherwise only `jobs` are
    /// forgiven.
    pub active: bool,
    /// The jobs whose failures there were the evidence.
    pub jobs: Vec<String>,
}

/// A job's attempt whose worker died under it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Vanished {
    pub job: String,
    /// `unit@host`
    pub worker: String,
    pub at_ms: i64,
    /// The attempt that vanished, when its start said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
}

/// Every host's latest verdicts, merged: what a worker consults for each job.
#[derive(Clone, Debug, Default)]
pub struct Fleet {
    hosts: BTreeMap<String, HostVerdicts>,
}

impl Fleet {
    /// Takes a host's message if it is newer than the one held.
    pub fn update(&mut self, v: HostVerdicts) {
        if v.v != VERSION {
            return;
        }
        match self.hosts.get(&v.host) {
            Some(held) if held.at_ms > v.at_ms => {}
            _ => {
                self.hosts.insert(v.host.clone(), v);
            }
        }
    }

    /// Forgets hosts that have said nothing for too long (their supervisor is gone).
    pub fn expire(&mut self, now_ms: i64) {
        self.hosts.retain(|_, v| now_ms - v.at_ms < BELIEVED_MS);
    }

    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    /// Every host's message held, to hand on (a supervisor to its workers).
    pub fn all(&self) -> Vec<HostVerdicts> {
        self.hosts.values().cloned().collect()
    }

    /// Whether a host other than `host` said, within [`SERVING_FRESH_MS`] of `now_ms`, that it
    /// runs units of `class`.
    pub fn served_elsewhere(&self, class: &str, host: &str, now_ms: i64) -> bool {
        self.hosts
            .values()
            .any(|v| v.host != host && now_ms - v.at_ms < SERVING_FRESH_MS && v.serves.iter().any(|c| c == class))
    }

    fn forgiven(&self, class: &str, job: &str, worker: &str) -> bool {
        self.hosts.values().flat_map(|h| &h.blamed).filter(|b| b.class == class).any(|b| match b.worker.as_str() {
            // An outage forgives its own jobs' failures, wherever they were; never all of
            // the class, or a bad job taken as the probe would keep it paused forever.
            ANY_WORKER => b.jobs.iter().any(|j| j == job),
            w => w == worker && (b.active || b.jobs.iter().any(|j| j == job)),
        })
    }

    fn suspect(&self, class: &str, worker: &str) -> bool {
        self.hosts.values().flat_map(|h| &h.suspects).any(|s| s.worker == worker && s.class == class)
    }

    /// What a job's history charges to the job: `failures` is the worker of each failed attempt
    /// (this one included, if it failed), `failed_on` the distinct ones.
    pub fn charges(&self, class: &str, job: &str, failures: &[String], failed_on: &[String]) -> Charges {
        let forgiven = failures.iter().filter(|w| self.forgiven(class, job, w)).count() as u32;
        let pending =
            failures.iter().filter(|w| !self.forgiven(class, job, w) && self.suspect(class, w)).count() as u32;
        let mut against: Vec<String> = failed_on.iter().filter(|w| !self.forgiven(class, job, w)).cloned().collect();
        for v in self.hosts.values().flat_map(|h| &h.vanished).filter(|v| v.job == job) {
            if !against.contains(&v.worker) {
                against.push(v.worker.clone());
            }
        }
        let against_suspect = against.iter().filter(|w| self.suspect(class, w)).count() as u32;
        Charges { forgiven, against, pending, against_suspect }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn fleet() -> Fleet {
        let mut f = Fleet::default();
        f.update(HostVerdicts {
            v: VERSION,
            host: "bad".into(),
            at_ms: 100,
            blamed: vec![
                Blame { worker: "w-1@bad".into(), class: "c".into(), since_ms: 50, active: true, jobs: s(&["j1"]) },
                Blame {
                    worker: "w-2@bad".into(),
                    class: "c".into(),
                    since_ms: 10,
                    active: false,
                    jobs: s(&["j1", "j2"]),
                },
            ],
            vanished: vec![Vanished { job: "oom".into(), worker: "w-1@bad".into(), at_ms: 90, attempt: None }],
            suspects: vec![Suspect { worker: "w-3@bad".into(), class: "c".into() }],
            serves: vec!["c".into()],
        });
        f.update(HostVerdicts {
            v: VERSION,
            host: "good".into(),
            at_ms: 100,
            blamed: vec![],
            vanished: vec![Vanished { job: "oom".into(), worker: "w-5@good".into(), at_ms: 95, attempt: None }],
            suspects: vec![],
            serves: vec!["c".into(), "d".into()],
        });
        f
    }

    #[test]
    fn a_class_is_served_elsewhere_only_by_another_host_that_spoke_lately() {
        let f = fleet();
        // (class, asking host, now, served elsewhere)
        let cases = [
            ("c", "bad", 200, true),
            ("d", "good", 200, false), // only the asking host runs it
            ("d", "bad", 200, true),
            ("e", "bad", 200, false),
            ("c", "bad", 100 + SERVING_FRESH_MS, false), // the others fell silent
        ];
        for (class, host, now, want) in cases {
            assert_eq!(f.served_elsewhere(class, host, now), want, "{class} from {host} at {now}");
        }
    }

    #[test]
    fn charging_table() {
        let f = fleet();
        // (class, job, failures, failed_on, forgiven, against)
        let plain = |forgiven: u32, against: Vec<String>| Charges { forgiven, against, ..Charges::default() };
        type Case<'a> = (&'a str, &'a str, Vec<String>, Vec<String>, u32, Vec<String>);
        let cases: Vec<Case> = vec![
            // Evidence of a quarantine: both failures forgiven, nothing against the job.
            ("c", "j1", s(&["w-1@bad", "w-2@bad"]), s(&["w-1@bad", "w-2@bad"]), 2, s(&[])),
            // An active quarantine forgives any failure there; a released one only its evidence.
            ("c", "j3", s(&["w-1@bad", "w-2@bad"]), s(&["w-1@bad", "w-2@bad"]), 1, s(&["w-2@bad"])),
            // Failures on healthy workers count; a repeated failure counts twice.
            ("c", "j2", s(&["w-2@bad", "w-5@good", "w-5@good"]), s(&["w-2@bad", "w-5@good"]), 1, s(&["w-5@good"])),
            // Another class's quarantine forgives nothing.
            ("d", "j1", s(&["w-1@bad"]), s(&["w-1@bad"]), 0, s(&["w-1@bad"])),
            // Workers that died running the job count against it, from every host's verdicts.
            ("c", "oom", s(&[]), s(&[]), 0, s(&["w-5@good", "w-1@bad"])),
            ("c", "oom", s(&["w-5@good"]), s(&["w-5@good"]), 0, s(&["w-5@good", "w-1@bad"])),
        ];
        for (class, job, failures, failed_on, forgiven, mut against) in cases {
            let mut got = f.charges(class, job, &failures, &failed_on);
            got.against.sort();
            against.sort();
            assert_eq!(got, plain(forgiven, against), "{class} {job} {failures:?}");
        }
        // A suspect's failures are pending: neither forgiven nor surely the job's.
        let got = f.charges("c", "j9", &s(&["w-3@bad", "w-3@bad", "w-5@good"]), &s(&["w-3@bad", "w-5@good"]));
        assert_eq!((got.forgiven, got.pending, got.against_suspect, got.against.len()), (0, 2, 1, 2));
        let other_class = f.charges("d", "j9", &s(&["w-3@bad"]), &s(&["w-3@bad"]));
        assert_eq!((other_class.pending, other_class.against_suspect), (0, 0));
    }

    #[test]
    fn failures_in_a_shared_outage_are_charged_to_the_outage() {
        let outage = |active: bool| {
            let mut f = Fleet::default();
            f.update(HostVerdicts {
                v: VERSION,
                host: "h1".into(),
                at_ms: 100,
                blamed: vec![Blame {
                    worker: ANY_WORKER.into(),
                    class: "c".into(),
                    since_ms: 50,
                    active,
                    jobs: s(&["j1"]),
                }],
                ..Default::default()
            });
            f
        };
        let (paused, resumed) = (outage(true), outage(false));
        let failures = s(&["w-1@h1", "w-2@h2", "w-3@h3"]);
        // (fleet, class, job): (forgiven, against)
        let cases: Vec<(&Fleet, &str, &str, u32, usize)> = vec![
            (&paused, "c", "j1", 3, 0),  // an outage's job, on any worker of any host
            (&paused, "c", "j2", 0, 3),  // not any job of the class: a bad probe job is charged
            (&resumed, "c", "j1", 3, 0), // after it, the outage's own jobs still
            (&resumed, "c", "j2", 0, 3), // but not a job that failed on its own since
            (&paused, "d", "j1", 0, 3),  // another class is not covered
        ];
        for (f, class, job, forgiven, against) in cases {
            let got = f.charges(class, job, &failures, &failures);
            assert_eq!((got.forgiven, got.against.len()), (forgiven, against), "{class} {job}");
        }
    }

    #[test]
    fn newer_messages_replace_older_ones_and_silent_hosts_expire() {
        let mut f = fleet();
        let old = HostVerdicts { v: VERSION, host: "bad".into(), at_ms: 99, ..Default::default() };
        f.update(old);
        assert_eq!(f.charges("c", "j1", &s(&["w-1@bad"]), &s(&["w-1@bad"])).forgiven, 1, "an older message is ignored");
        f.update(HostVerdicts { v: VERSION, host: "bad".into(), at_ms: 200, ..Default::default() });
        assert_eq!(f.charges("c", "j1", &s(&["w-1@bad"]), &s(&["w-1@bad"])).forgiven, 0, "the newer set replaces it");
        f.update(HostVerdicts { v: VERSION + 1, host: "x".into(), at_ms: 300, ..Default::default() });
        f.expire(200 + BELIEVED_MS);
        assert!(f.is_empty(), "an unknown version is ignored, and silent hosts are forgotten");
    }
}
