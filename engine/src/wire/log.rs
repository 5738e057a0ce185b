//! The log records a worker writes on its stderr: one line each, the byte
//! 0x1E (ASCII record separator, which no ordinary text starts with)
//! followed by compact JSON,
//!
//! ```text
//! \x1e{"track": 7, "level": "error", "text": "outboard: script error in ...\nTraceback ..."}
//! ```
//!
//! with `track` null for the worker as a whole. Any other line (an
//! interpreter crash, a C extension printing, the worker's own notes) is a
//! message of the worker as a whole. The worker writes these records (its
//! Python runtime, `outboard_rt.emit`, with [`LogLevel::as_str`]'s
//! spellings); the supervisor reads them ([`WorkerLine::parse`]).
//!
//! A worker is untrusted: a malformed record is kept as plain text, text is
//! capped at [`MAX_TEXT`] bytes, and which track a record may name is the
//! supervisor's to check (`crate::workers::script_log`).

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
    /// The record's spelling: `"info"`, `"warning"` or `"error"`.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Info => "info",
            LogLevel::Warning => "warning",
            LogLevel::Error => "error",
        }
    }

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

    /// Writes the record line a worker sends (what [`parse`](Self::parse)
    /// reads): the test's side of the round trip (the worker's Python
    /// writes its records itself).
    #[cfg(test)]
    fn encode(&self) -> String {
        let value = serde_json::json!({"track": self.track, "level": self.level.as_str(), "text": self.text});
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
