//! What scripts and their workers say, attributed to the tracks it concerns.
//!
//! A worker writes each message about a track as one record line on its
//! stderr (the format is part of the wire: [`crate::wire::log`]). The
//! supervisor parses these lines ([`WorkerLine::parse`]) and hands each
//! message to its log listener as a [`LogRecord`] naming the tracks it
//! concerns, so a plugin can put each instance's messages on that instance's
//! host log.
//!
//! A worker is untrusted: a record naming a track that is not on that worker
//! is attributed to the worker's own tracks instead, so no script can write
//! into another track's log; text is capped at [`MAX_TEXT`](crate::wire::log::MAX_TEXT) bytes.

use std::sync::Arc;

pub use crate::wire::log::{LogLevel, WorkerLine};

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
