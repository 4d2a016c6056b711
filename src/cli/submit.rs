//! `drover submit`: publishes jobs as persistent messages and waits for the broker's confirms,
//! so that an id printed is a job the broker has on disk.

use crate::config::Config;
use crate::events::{EventKind, JobEvent};
use crate::io::amqp::Link;
use crate::io::clock::now_ms;
use crate::job::Job;
use std::time::Duration;
use tokio::time::Instant;

pub struct Submission {
    pub class: String,
    pub payload: Vec<u8>,
    pub deadline: Option<Duration>,
    pub tenant: Option<String>,
    pub count: u64,
}

/// Publishes the jobs and returns their ids, in order. Pipelines publishes in batches: a
/// confirm awaited per message would cap submission at about 1,500 jobs/s.
pub async fn submit(cfg: &Config, s: &Submission) -> anyhow::Result<Vec<String>> {
    let class = cfg.class(&s.class).map_err(anyhow::Error::msg)?;
    let mut link = Link::new(&cfg.broker, "drover submit");
    let give_up = Instant::now() + cfg.broker.connect_timeout * 3;
    link.ensure_up_by(give_up).await?;
    link.declare_class(&class.name).await?;
    let queue = link.names.work(&class.name);
    let deadline = s.deadline.unwrap_or(class.deadline);
    let mut ids = Vec::with_capacity(s.count as usize);
    let mut remaining = s.count;
    while remaining > 0 {
        let n = remaining.min(1000);
        remaining -= n;
        let now = now_ms();
        let batch: Vec<Job> = (0..n)
            .map(|_| Job {
                id: uuid::Uuid::new_v4().to_string(),
                class: class.name.clone(),
                attempt: 1,
                submitted_at: now,
                deadline: now + deadline.as_millis() as i64,
                tenant: s.tenant.clone(),
                payload: s.payload.clone(),
                failed_on: Vec::new(),
                failures: Vec::new(),
                hand_backs: 0,
                handed_back_at: None,
                checkpoint: None,
            })
            .collect();
        let messages = batch.iter().map(|j| (j.payload.clone(), crate::io::wire::properties(&j.envelope()))).collect();
        link.publish_batch("", &queue, messages).await?;
        ids.extend(batch.into_iter().map(|j| j.id));
        // Per-tenant backlogs (stall alerts) count submissions from these.
        let mut e =
            JobEvent::new(EventKind::Submitted, crate::job::rfc3339(now), &class.name, &cfg.host, "drover submit");
        e.tenant = s.tenant.clone();
        e.count = Some(n);
        link.event(e).await;
    }
    link.settle_events(cfg.broker.op_timeout).await;
    if let Some(conn) = link.connection() {
        let _ = tokio::time::timeout(Duration::from_secs(2), conn.close(200, "done".into())).await;
    }
    Ok(ids)
}
