//! `drover dead list / show / requeue`: a class's dead letters read back from
//! `<prefix>.dead.<class>` and, on request, requeued to its work queue. Nothing is lost if the
//! command is interrupted: every dead letter is held unacknowledged while the command runs (a
//! lost connection puts them all back), a requeued job is published with the broker's confirm
//! first and its dead letter removed only after (an interruption between the two leaves a
//! copy in both queues, never in neither).

use crate::config::Config;
use crate::dead::{self, DeadLetter, Selection};
use crate::io::amqp::{deadline, Link};
use crate::io::clock::now_ms;
use crate::io::control::Request;
use crate::io::{fleet, wire};
use base64::Engine;
use lapin::options::{BasicAckOptions, BasicGetOptions};
use lapin::{BasicProperties, Channel};
use std::time::Duration;
use tokio::time::Instant;

/// One dead letter held (unacknowledged) by this command.
struct Held {
    tag: u64,
    letter: DeadLetter,
    props: BasicProperties,
    body: Vec<u8>,
}

/// A connection and the class's dead letters, all held until [`Letters::release`].
struct Letters {
    link: Link,
    chan: Channel,
    held: Vec<Held>,
}

async fn take_all(cfg: &Config, class: &str) -> anyhow::Result<Letters> {
    cfg.class(class).map_err(anyhow::Error::msg)?;
    let mut link = Link::new(&cfg.broker, "drover dead");
    link.ensure_up_by(Instant::now() + cfg.broker.connect_timeout * 2).await?;
    link.declare_class(class).await?;
    let chan = link.consumer_channel(0).await?;
    let queue = link.names.dead(class);
    let op = cfg.broker.op_timeout;
    let mut held = Vec::new();
    while let Some(msg) =
        deadline(op, "basic.get", chan.basic_get(queue.as_str().into(), BasicGetOptions { no_ack: false })).await?
    {
        let d = msg.delivery;
        let letter = DeadLetter::read(class, &wire::envelope(&d.properties), d.data.len());
        held.push(Held { tag: d.delivery_tag, letter, props: d.properties, body: d.data });
    }
    Ok(Letters { link, chan, held })
}

impl Letters {
    /// Puts back what was not removed (closing the channel returns every unacknowledged one).
    async fn release(self) {
        let _ = tokio::time::timeout(Duration::from_secs(5), self.chan.close(200, "done".into())).await;
        if let Some(conn) = self.link.connection() {
            let _ = tokio::time::timeout(Duration::from_secs(2), conn.close(200, "done".into())).await;
        }
    }
}

fn line(d: &DeadLetter) -> String {
    let detail: String = d.detail.lines().last().unwrap_or("").chars().take(70).collect();
    format!(
        "{:<36}  {:<16}  {:>7}  {:<24}  {:<24}  {}",
        d.id.as_deref().unwrap_or("(no id)"),
        d.reason,
        d.attempt.map(|a| a.to_string()).unwrap_or_else(|| "-".into()),
        d.dead_at.as_deref().unwrap_or("-"),
        if d.unit.is_empty() { "-".to_string() } else { format!("{}@{}", d.unit, d.host) },
        detail
    )
}

fn header() -> String {
    format!("{:<36}  {:<16}  {:>7}  {:<24}  {:<24}  {}", "ID", "REASON", "ATTEMPT", "DEAD AT", "WHERE", "LAST WORDS")
}

fn check_reason(reason: &Option<String>) -> anyhow::Result<()> {
    match reason {
        Some(r) if !dead::REASONS.contains(&r.as_str()) => {
            anyhow::bail!("--reason {r}: not a dead-letter reason; one of {}", dead::REASONS.join(", "))
        }
        _ => Ok(()),
    }
}

/// `drover dead list`: exit 0 (an empty list included).
pub async fn list(cfg: &Config, class: &str, reason: Option<String>, json: bool) -> anyhow::Result<i32> {
    check_reason(&reason)?;
    let letters = take_all(cfg, class).await?;
    let shown: Vec<&DeadLetter> =
        letters.held.iter().map(|h| &h.letter).filter(|d| reason.as_ref().is_none_or(|r| &d.reason == r)).collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&shown)?);
    } else if shown.is_empty() {
        eprintln!(
            "no dead letters in class {class}{}",
            reason.map(|r| format!(" with reason {r}")).unwrap_or_default()
        );
    } else {
        println!("{}", header());
        for d in &shown {
            println!("{}", line(d));
        }
        let mut by_reason = std::collections::BTreeMap::<&str, usize>::new();
        for d in &shown {
            *by_reason.entry(d.reason.as_str()).or_default() += 1;
        }
        let counts: Vec<String> = by_reason.iter().map(|(r, n)| format!("{n} {r}")).collect();
        eprintln!("{} dead letter(s) in class {class}: {}", shown.len(), counts.join(", "));
    }
    letters.release().await;
    Ok(0)
}

/// `drover dead show ID`: looks in the given class, or in every configured class. Exit 1 when
/// no dead letter has that id.
pub async fn show(cfg: &Config, id: &str, class: Option<String>, json: bool) -> anyhow::Result<i32> {
    let classes: Vec<String> = match class {
        Some(c) => vec![c],
        None => cfg.classes.keys().cloned().collect(),
    };
    for class in classes {
        let letters = take_all(cfg, &class).await?;
        let found = letters.held.iter().find(|h| h.letter.id.as_deref() == Some(id));
        if let Some(h) = found {
            let payload = std::str::from_utf8(&h.body).ok();
            if json {
                let mut v = serde_json::to_value(&h.letter)?;
                v["payload"] = payload.map(Into::into).unwrap_or(serde_json::Value::Null);
                if payload.is_none() {
                    v["payload_b64"] = base64::engine::general_purpose::STANDARD.encode(&h.body).into();
                }
                let env = wire::envelope(&h.props);
                v["headers"] = env
                    .headers
                    .iter()
                    .map(|(k, v)| (k.clone(), serde_json::Value::String(format!("{v:?}"))))
                    .collect::<serde_json::Map<_, _>>()
                    .into();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                let d = &h.letter;
                println!("id:        {id}\nclass:     {class}\nreason:    {}", d.reason);
                println!("attempt:   {}", d.attempt.map(|a| a.to_string()).unwrap_or_else(|| "-".into()));
                println!("dead at:   {}", d.dead_at.as_deref().unwrap_or("-"));
                println!("where:     {} on {}", d.unit, d.host);
                println!("tenant:    {}", d.tenant.as_deref().unwrap_or("-"));
                println!("failed on: {}", if d.failed_on.is_empty() { "-".into() } else { d.failed_on.join(", ") });
                println!("requeued before: {} time(s)", d.requeues);
                println!("last words:\n  {}", d.detail.replace('\n', "\n  "));
                match payload {
                    Some(p) => println!("payload ({} bytes):\n  {p}", h.body.len()),
                    None => println!(
                        "payload ({} bytes, not UTF-8, base64):\n  {}",
                        h.body.len(),
                        base64::engine::general_purpose::STANDARD.encode(&h.body)
                    ),
                }
            }
            letters.release().await;
            return Ok(0);
        }
        letters.release().await;
    }
    eprintln!(
        "no dead letter with id {id} (looked in {})",
        if cfg.classes.len() == 1 { "the class" } else { "every class" }
    );
    Ok(1)
}

pub struct Requeue {
    pub class: String,
    pub selection: Selection,
    pub why: String,
    /// The deadline a job gets when its own has passed; default the class's.
    pub deadline: Option<Duration>,
    pub dry_run: bool,
    pub json: bool,
}

/// What a requeue did: the ids requeued (or that would be, on a dry run), each one's line for
/// people, what could not be, and how many dead letters the class held.
pub struct Requeued {
    pub ids: Vec<String>,
    pub lines: Vec<String>,
    pub problems: Vec<String>,
    pub taken: usize,
}

/// Requeues the selected dead letters of a class on behalf of `who` (confirmed publish first,
/// dead letter removed after). The timeline's note is the caller's.
pub async fn requeue_letters(cfg: &Config, r: &Requeue, who: &str) -> anyhow::Result<Requeued> {
    if let Selection::Reason(reason) = &r.selection {
        check_reason(&Some(reason.clone()))?;
    }
    let class = cfg.class(&r.class).map_err(anyhow::Error::msg)?.clone();
    let mut letters = take_all(cfg, &class.name).await?;
    let chosen: Vec<usize> = (0..letters.held.len()).filter(|&i| r.selection.takes(&letters.held[i].letter)).collect();
    let mut problems = Vec::new();
    if let Selection::Ids(ids) = &r.selection {
        for id in ids {
            if !letters.held.iter().any(|h| h.letter.id.as_deref() == Some(id.as_str())) {
                problems.push(format!("{id}: no such dead letter in class {}", class.name));
            }
        }
    }
    let now = now_ms();
    let fresh = r.deadline.unwrap_or(class.deadline);
    let mut out: Vec<(usize, Vec<u8>, BasicProperties)> = Vec::new();
    for &i in &chosen {
        let h = &letters.held[i];
        match dead::requeued(&wire::envelope(&h.props), now, fresh, who, &r.why) {
            Ok(env) => out.push((i, h.body.clone(), wire::properties(&env))),
            Err(e) => problems.push(format!("{}: {e}", h.letter.id.as_deref().unwrap_or("(no id)"))),
        }
    }
    let ids: Vec<String> = out.iter().filter_map(|(i, _, _)| letters.held[*i].letter.id.clone()).collect();
    let sent = async {
        if !r.dry_run && !out.is_empty() {
            let queue = letters.link.names.work(&class.name);
            // Confirmed first...
            letters
                .link
                .publish_batch("", &queue, out.iter().map(|(_, b, p)| (b.clone(), p.clone())).collect())
                .await?;
            // ...then removed from the dead letters.
            for (i, _, _) in &out {
                let tag = letters.held[*i].tag;
                deadline(cfg.broker.op_timeout, "basic.ack", letters.chan.basic_ack(tag, BasicAckOptions::default()))
                    .await?;
            }
        }
        Ok::<_, anyhow::Error>(())
    }
    .await;
    let lines = out.iter().map(|(i, _, _)| line(&letters.held[*i].letter)).collect();
    let taken = std::mem::take(&mut letters.held).len();
    letters.release().await;
    sent?;
    Ok(Requeued { ids, lines, problems, taken })
}

/// A class's dead letters counted by reason (they are all held for the count, then put back).
pub async fn by_reason(cfg: &Config, class: &str) -> anyhow::Result<std::collections::BTreeMap<String, usize>> {
    let letters = take_all(cfg, class).await?;
    let mut counts = std::collections::BTreeMap::new();
    for h in &letters.held {
        *counts.entry(h.letter.reason.clone()).or_default() += 1;
    }
    letters.release().await;
    Ok(counts)
}

/// The timeline's words for a requeue: what, and why (with the first jobs' ids).
pub fn requeue_note(class: &str, ids: &[String], why: &str) -> (String, String) {
    let what = format!("{} dead letter(s) of class {class} requeued, attempts started over", ids.len());
    let shown: Vec<&str> = ids.iter().take(20).map(String::as_str).collect();
    let more = if ids.len() > 20 { format!(" and {} more", ids.len() - 20) } else { String::new() };
    (what, format!("{why} (jobs {}{more})", shown.join(", ")))
}

/// `drover dead requeue`: exit 0 when every selected dead letter was requeued, 1 when the
/// selection took none or some could not be (no id, ids not found).
pub async fn requeue(cfg: &Config, r: Requeue) -> anyhow::Result<i32> {
    let who = super::drainctl::who();
    let Requeued { ids, lines, problems, taken } = requeue_letters(cfg, &r, &who).await?;
    if r.json {
        println!(
            "{}",
            serde_json::json!({"class": r.class, "requeued": ids, "dry_run": r.dry_run, "problems": problems})
        );
    } else {
        let verb = if r.dry_run { "would requeue" } else { "requeued" };
        for l in &lines {
            println!("{verb} {l}");
        }
    }
    for p in &problems {
        eprintln!("not requeued: {p}");
    }
    if ids.is_empty() && problems.is_empty() {
        eprintln!("no dead letter of class {} matches; `drover dead list --class {}` shows them", r.class, r.class);
    }
    if !r.dry_run && !ids.is_empty() {
        let (what, why) = requeue_note(&r.class, &ids, &r.why);
        let note = Request::Note { what, why, who };
        let target = fleet::Target::Host(cfg.host.clone());
        match fleet::ask(cfg, &target, &note, Duration::from_secs(5)).await {
            Ok(a) if a.iter().any(|x| x.ok) => {}
            _ => eprintln!("note: this host's supervisor did not answer; the requeue is not in its timeline"),
        }
        if !r.json {
            eprintln!("{} of {taken} dead letter(s) requeued to {}", ids.len(), r.class);
        }
    }
    Ok(if ids.is_empty() || !problems.is_empty() { 1 } else { 0 })
}
