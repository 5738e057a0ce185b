//! What scripts and their workers say, attributed to the tracks it concerns.
//!
//! A worker writes each message about a track as one line on its stderr: the
//! byte 0x1E (ASCII record separator, which no ordinary text starts with)
//! followed by compact JSON,
//!
//! ```text
//! \x1e{"track": 7, "level": "error", "text": "outboard: script error in ...\nTraceback ..."}
//! ```
//!
//! with `track` null for the worker as a whole. Any other line (an
//! interpreter crash, a C extension printing, the worker's own notes) is a
//! message of the worker as a whole. The supervisor parses these lines
//! ([`WorkerLine::parse`](crate::workers::script_log::WorkerLine::parse)) and hands each message to its log listener as a
//! [`LogRecord`] naming the tracks it concerns, so a plugin can put each
//! instance's messages on that instance's host log.
//!
//! A worker is untrusted: a record naming a track that is not on that worker
//! is attributed to the worker's own tracks instead, so no script can write
//! into another track's log; text is capped at [`MAX_TEXT`] bytes.

use std::sync::Arc;

/// The byte that starts a structured record line.
pub const RECORD_MARK: char = '\u{1e}';
/// The longest text kept of one message (a traceback is far shorter).
pub const MAX_TEXT: usize = 16 << 10;

/// How serious a message is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// For information: nothing is wrong.
    Info,
    /// Something may be wrong (a plain stderr line is taken as one).
    Warning,
    /// Something failed: a script error, a worker that could not start.
    Error,
}

impl LogLevel {
    fn parse(text: &str) -> Option<LogLevel> {
        match text {
            "info" => Some(LogLevel::Info),
            "warning" => Some(LogLevel::Warning),
            "error" => Some(LogLevel::Error),
            _ => None,
        }
    }
}

/// One line read from a worker's stderr.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkerLine {
    /// The track the worker says the message is about.
    pub track: Option<u32>,
    /// How serious it is.
    pub level: LogLevel,
    /// The message, cut to [`MAX_TEXT`] bytes (and marked ` [...]`) if longer;
    /// it may span lines (a traceback).
    pub text: String,
}

impl WorkerLine {
    /// Reads one stderr line: a record, or plain text (a warning about the
    /// worker as a whole). Never fails: a malformed record is kept as text.
    pub fn parse(line: &str) -> WorkerLine {
        let plain = |text: &str| WorkerLine { track: None, level: LogLevel::Warning, text: cap(text) };
        let Some(json) = line.strip_prefix(RECORD_MARK) else { return plain(line) };
        let Ok(value) = serde_json::from_str::<serde_json::Value>(json) else { return plain(line) };
        let (Some(level), Some(text)) = (value["level"].as_str().and_then(LogLevel::parse), value["text"].as_str())
        else {
            return plain(line);
        };
        let track = value["track"].as_u64().and_then(|t| u32::try_from(t).ok());
        WorkerLine { track, level, text: cap(text) }
    }

    /// Writes the record line a worker sends (what [`parse`](Self::parse) reads).
    pub fn encode(&self) -> String {
        let value = serde_json::json!({"track": self.track, "level": match self.level {
            LogLevel::Info => "info",
            LogLevel::Warning => "warning",
            LogLevel::Error => "error",
        }, "text": self.text});
        format!("{RECORD_MARK}{value}")
    }
}

fn cap(text: &str) -> String {
    let text = text.trim_end_matches('\n');
    if text.len() <= MAX_TEXT {
        return text.to_string();
    }
    let mut end = MAX_TEXT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{} [...]", &text[..end])
}

/// A message for the log listener.
#[derive(Clone, Debug, PartialEq)]
pub struct LogRecord {
    /// How serious it is.
    pub level: LogLevel,
    /// The tracks the message concerns. Empty: the scripts host as a whole
    /// (every track hears it).
    pub tracks: Vec<u32>,
    /// The message; it may span lines.
    pub text: String,
}

/// Called by the supervisor (on its own thread, never a realtime one) for
/// every message, as it comes.
#[derive(Clone)]
pub struct LogListener(pub Arc<dyn Fn(&LogRecord) + Send + Sync>);

impl LogListener {
    /// A listener that calls `f` with each record.
    pub fn new(f: impl Fn(&LogRecord) + Send + Sync + 'static) -> LogListener {
        LogListener(Arc::new(f))
    }
}

impl std::fmt::Debug for LogListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LogListener")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_plain_lines() {
        let line = WorkerLine { track: Some(7), level: LogLevel::Error, text: "boom\n  at line 3".into() };
        assert_eq!(WorkerLine::parse(&line.encode()), line);
        let plain = WorkerLine::parse("Fatal Python error: oops");
        assert_eq!(
            (plain.track, plain.level, plain.text.as_str()),
            (None, LogLevel::Warning, "Fatal Python error: oops")
        );
        for bad in ["\u{1e}{", "\u{1e}{\"level\":\"loud\",\"text\":\"x\"}", "\u{1e}[1,2]", "\u{1e}{\"level\":\"info\"}"]
        {
            let parsed = WorkerLine::parse(bad);
            assert_eq!((parsed.track, parsed.level), (None, LogLevel::Warning), "{bad:?}");
        }
        let huge = format!("\u{1e}{{\"track\":1,\"level\":\"info\",\"text\":\"{}\"}}", "é".repeat(MAX_TEXT));
        assert!(WorkerLine::parse(&huge).text.len() <= MAX_TEXT + 6);
        let track_too_big = WorkerLine::parse("\u{1e}{\"track\":99999999999,\"level\":\"info\",\"text\":\"x\"}");
        assert_eq!(track_too_big.track, None);
    }
}
