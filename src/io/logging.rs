//! Logging set-up: what `drover` writes to standard error, shaped for where it goes.
//!
//! - Under systemd, standard error is a stream to the journal (`$JOURNAL_STREAM` names it):
//!   each line starts with its syslog priority (`<3>` for an error, `<4>` a warning, `<6>`
//!   info, `<7>` debug), which journald reads as the entry's priority (`SyslogLevelPrefix=`,
//!   on by default) and strips; no timestamp (the journal has its own) and no colour.
//! - Elsewhere: a timestamp and the level in words, in colour only on a terminal without
//!   `NO_COLOR`.
//!
//! `DROVER_LOG` filters as `RUST_LOG` does (default `info`).

use std::io::IsTerminal;
use tracing::{Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Where standard error goes, which decides the format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sink {
    /// The journal: priority prefixes, no timestamp, no colour.
    Journal,
    /// A terminal: timestamps, colour unless `NO_COLOR`.
    Terminal { colour: bool },
    /// A file or a pipe: timestamps, no colour.
    Plain,
}

/// Reads what standard error is: the journal when `$JOURNAL_STREAM` names the very stream
/// standard error is (a child of a unit inherits the variable with another stderr).
pub fn sink() -> Sink {
    let journal = std::env::var("JOURNAL_STREAM").ok().is_some_and(|v| stderr_is(&v));
    let terminal = std::io::stderr().is_terminal();
    let no_colour = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    choose(journal, terminal, no_colour)
}

fn choose(journal: bool, terminal: bool, no_colour: bool) -> Sink {
    match (journal, terminal) {
        (true, _) => Sink::Journal,
        (false, true) => Sink::Terminal { colour: !no_colour },
        (false, false) => Sink::Plain,
    }
}

/// Whether `$JOURNAL_STREAM` (`DEVICE:INODE`) is standard error's.
fn stderr_is(journal_stream: &str) -> bool {
    let Some((dev, ino)) = journal_stream.split_once(':') else { return false };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else { return false };
    // SAFETY: fstat writes into a zeroed stat buffer we own.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(2, &mut st) } != 0 {
        return false;
    }
    st.st_dev as u64 == dev && st.st_ino as u64 == ino
}

/// The syslog priority of a level, as journald reads it from a `<N>` prefix.
pub fn priority(level: Level) -> u8 {
    match level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

/// Installs the global subscriber for this process.
pub fn init() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("DROVER_LOG").unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false);
    match sink() {
        Sink::Journal => builder.event_format(JournalLine).init(),
        Sink::Terminal { colour } => builder.with_ansi(colour).init(),
        Sink::Plain => builder.with_ansi(false).init(),
    }
}

/// One event as journal lines: `<priority>message fields`, every line of a multi-line message
/// with the same priority.
struct JournalLine;

impl<S, N> FormatEvent<S, N> for JournalLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let mut body = String::new();
        ctx.format_fields(Writer::new(&mut body), event)?;
        write!(writer, "{}", journal_lines(priority(*event.metadata().level()), &body))
    }
}

fn journal_lines(priority: u8, body: &str) -> String {
    let mut out = String::new();
    for line in body.lines() {
        out.push_str(&format!("<{priority}>{line}\n"));
    }
    if out.is_empty() {
        out.push_str(&format!("<{priority}>\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_journal_gets_priorities_and_no_colour() {
        // (journal, terminal, NO_COLOR) -> sink
        let cases = [
            ((true, true, false), Sink::Journal),
            ((true, false, false), Sink::Journal),
            ((false, true, false), Sink::Terminal { colour: true }),
            ((false, true, true), Sink::Terminal { colour: false }),
            ((false, false, false), Sink::Plain),
        ];
        for ((j, t, n), want) in cases {
            assert_eq!(choose(j, t, n), want, "{j} {t} {n}");
        }
        let levels = [(Level::ERROR, 3), (Level::WARN, 4), (Level::INFO, 6), (Level::DEBUG, 7), (Level::TRACE, 7)];
        for (level, p) in levels {
            assert_eq!(priority(level), p, "{level}");
        }
        assert_eq!(journal_lines(3, "broker down\ncaused by: refused"), "<3>broker down\n<3>caused by: refused\n");
        assert!(!stderr_is("not-a-stream") && !stderr_is("1:2"), "a foreign JOURNAL_STREAM is not ours");
    }
}
