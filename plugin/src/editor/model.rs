//! The editor's model: what the window shows and what it can ask for, as
//! plain data (no window, no egui). The main thread fills it from the
//! instance ([`crate::editor::instance`]) and carries out its actions; the
//! window's thread draws a copy of it ([`crate::editor::view`]) and queues
//! actions; tests do both without a window.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use outboard_engine::workers::script_log::LogLevel;

/// Log entries the model keeps (the oldest go first).
pub const LOG_CAPACITY: usize = 500;

/// What the editor asks the instance to do (carried out on the main thread).
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Follow this script file from now on.
    Open(PathBuf),
    /// Load the script again (the followed file as it is now).
    Reload,
    /// Open the script in `$VISUAL`, `$EDITOR` or the desktop's editor; a
    /// script that is no file is first saved in the user's script folder
    /// (and followed).
    Edit,
    /// Copy the example script of this file name (as [`EditorModel::examples`]
    /// lists them) into the user's script folder and follow the copy.
    NewFromExample(String),
    /// Forget the log's entries (new ones still come).
    ClearLog,
    /// Set a parameter to a value as the host holds it. Outside a gesture
    /// the host hears a whole one: begin, the value, end.
    SetParam {
        /// The CLAP parameter id.
        id: u32,
        /// The new value, in the units the host holds (see [`Control::value`]).
        value: f64,
    },
    /// Set a parameter from text, as the host's `text_to_value` reads it
    /// (with or without its unit).
    SetParamText {
        /// The CLAP parameter id.
        id: u32,
        /// What the user typed.
        text: String,
    },
    /// The user took hold of a control (the host hears a gesture begin).
    BeginGesture(u32),
    /// The user let go of it (a gesture end).
    EndGesture(u32),
}

/// Where the instance's script comes from.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum ScriptLocation {
    /// A file the instance follows (edits are heard).
    File(PathBuf),
    /// A file the project names that is not on this machine: the copy
    /// saved in the project runs.
    Missing(PathBuf),
    /// A script that is no file: it lives in the project only.
    #[default]
    Embedded,
}

/// The instance's script.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ScriptInfo {
    /// The script's name as the instance knows it (usually its file name).
    pub name: String,
    /// Where the running script comes from: a followed file, a missing one, or the project only.
    pub location: ScriptLocation,
    /// The module's docstring (empty if none).
    pub description: String,
}

impl ScriptInfo {
    /// The followed file, if any.
    pub fn path(&self) -> Option<&Path> {
        match &self.location {
            ScriptLocation::File(path) => Some(path),
            _ => None,
        }
    }

    /// Where it comes from, in words.
    pub fn location_text(&self) -> String {
        match &self.location {
            ScriptLocation::File(path) => path.display().to_string(),
            ScriptLocation::Missing(path) => {
                format!("{} (not on this machine: the copy in the project runs)", path.display())
            }
            ScriptLocation::Embedded => format!("{} (embedded in the project)", self.name),
        }
    }
}

/// What kind of message a log entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogKind {
    /// A script error (with its file and line when known).
    Error,
    /// A line the script wrote with `ctx.log` / `outboard.log`.
    Script,
    /// The worker's lifecycle: started, restarted, reloaded, backing off.
    Worker,
    /// Anything else the plugin said.
    Plugin,
}

/// One message of the instance's log.
#[derive(Clone, Debug, PartialEq)]
pub struct LogEntry {
    /// Numbers entries in the order they came (from 1).
    pub seq: u64,
    /// How serious it is (info, warning or error).
    pub level: LogLevel,
    /// What kind of message it is, guessed from its text (see [`LogEntry::new`]).
    pub kind: LogKind,
    /// The whole message: for an error, its head line and the traceback.
    pub text: String,
    /// For a script error: where.
    pub file: Option<String>,
    /// For a script error: the line in `file`, when the worker knew it.
    pub line: Option<u32>,
    /// Wall-clock time at which the instance took the message in.
    pub at: SystemTime,
}

impl LogEntry {
    /// An entry for message number `seq`: reads a script error's file and line from its head (see
    /// [`error_location`]) and sorts it into a [`LogKind`] by its head line.
    pub fn new(seq: u64, level: LogLevel, text: String, at: SystemTime) -> LogEntry {
        let (file, line) = error_location(&text).map_or((None, None), |(f, l)| (Some(f), l));
        let head = text.lines().next().unwrap_or_default();
        let kind = if file.is_some() || head.contains("script error") {
            LogKind::Error
        } else if !head.starts_with("outboard") {
            // `ctx.log` lines: "[track name] ...".
            LogKind::Script
        } else if is_lifecycle(head) {
            LogKind::Worker
        } else {
            LogKind::Plugin
        };
        LogEntry { seq, level, kind, text, file, line, at }
    }

    /// The first line.
    pub fn head(&self) -> &str {
        self.text.lines().next().unwrap_or_default()
    }

    /// The entry as one block of text: level, then the message.
    pub fn to_text(&self) -> String {
        let level = match self.level {
            LogLevel::Error => "error",
            LogLevel::Warning => "warning",
            LogLevel::Info => "info",
        };
        format!("[{level}] {}", self.text)
    }
}

/// `file:line` of a script error's head (`outboard: script error in
/// FILE:LINE (...)`), the line `None` when the worker did not know it.
pub fn error_location(text: &str) -> Option<(String, Option<u32>)> {
    let head = text.lines().next()?;
    let rest = &head[head.find("script error in ")? + "script error in ".len()..];
    let place = rest.split(" (").next()?.trim_end_matches(':');
    let (file, line) = place.rsplit_once(':')?;
    Some((file.to_string(), line.parse().ok()))
}

fn is_lifecycle(head: &str) -> bool {
    ["worker", "reloaded", "loaded", "restart", "backing off", "scripts host"].iter().any(|w| head.contains(w))
}

/// What the instance's worker is doing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WorkerState {
    /// The instance is not active: no worker runs its script.
    #[default]
    Inactive,
    /// Active without a scripts host: the audio passes dry.
    Dry,
    /// The worker is starting (no link to it yet).
    Starting,
    /// The worker loads the script.
    Loading,
    /// The script runs.
    Running,
    /// The link faulted: the supervisor restarts the worker.
    Restarting,
}

impl WorkerState {
    /// A few words for the status line ("running", "loading the script").
    pub fn describe(self) -> &'static str {
        match self {
            WorkerState::Inactive => "inactive",
            WorkerState::Dry => "no scripts host (dry)",
            WorkerState::Starting => "starting",
            WorkerState::Loading => "loading the script",
            WorkerState::Running => "running",
            WorkerState::Restarting => "restarting",
        }
    }
}

/// Round trips of the track's blocks to the worker and back.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RoundTrip {
    /// Round trips measured since the instance's activation.
    pub count: u64,
    /// The median round trip, in microseconds (a histogram bucket's upper edge).
    pub p50_us: f64,
    /// The 99th percentile round trip, in microseconds (a histogram bucket's upper edge).
    pub p99_us: f64,
}

/// The instance, live.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Status {
    /// What the worker that runs the instance's script is doing.
    pub worker: WorkerState,
    /// The process id of that worker, once the supervisor has placed the track on one.
    pub pid: Option<u32>,
    /// Blocks played dry because the script was not back in time.
    pub late_results: u64,
    /// Internal blocks the track processed.
    pub blocks: u64,
    /// Round trips of blocks to the worker; `None` while inactive or before the first one.
    pub round_trip: Option<RoundTrip>,
    /// The worker's CPU, in % of one core, since the previous refresh.
    pub worker_cpu: Option<f64>,
    /// The audio thread's time in `process` per block over the block's
    /// duration, since the previous refresh (0.5: half the time budget).
    pub dsp_load: Option<f64>,
    /// The largest single-call load since the previous refresh.
    pub dsp_peak: Option<f64>,
    /// Samples; 0 while inactive.
    pub latency: u32,
    /// The sample rate the host activated the instance at, in Hz; 0 before the first activation.
    pub sample_rate: f64,
}

impl Status {
    /// One line of text.
    pub fn line(&self) -> String {
        let mut parts = vec![format!("worker: {}", self.worker.describe())];
        if let Some(pid) = self.pid {
            parts.push(format!("pid {pid}"));
        }
        if let Some(cpu) = self.worker_cpu {
            parts.push(format!("worker CPU {cpu:.0} %"));
        }
        if let Some(load) = self.dsp_load {
            let peak = self.dsp_peak.map(|p| format!(" (peak {:.0} %)", p * 100.0)).unwrap_or_default();
            parts.push(format!("DSP load {:.1} %{peak}", load * 100.0));
        }
        if let Some(rt) = self.round_trip.filter(|rt| rt.count > 0) {
            parts.push(format!("round trip p50 {:.0} µs, p99 {:.0} µs", rt.p50_us, rt.p99_us));
        }
        parts.push(format!("late results {}", self.late_results));
        if self.latency > 0 && self.sample_rate > 0.0 {
            parts.push(format!(
                "latency {} samples ({:.1} ms)",
                self.latency,
                self.latency as f64 * 1000.0 / self.sample_rate
            ));
        }
        parts.join(" · ")
    }
}

/// How a control takes its values.
#[derive(Clone, Debug, PartialEq)]
pub enum ControlKind {
    /// Any value in `min..=max` (a script's number: 0..=1 on its scale).
    Slider,
    /// Whole numbers `min..=max` (a script's stepped number: a step number).
    Stepped,
    /// One of the names (values 0..n-1).
    Choice(Vec<String>),
    /// Off (0) or on (1).
    Switch,
}

/// One control: a parameter as the host holds it.
#[derive(Clone, Debug, PartialEq)]
pub struct Control {
    /// The CLAP parameter id.
    pub id: u32,
    /// The parameter's name: the plugin's own, or the one the script declared.
    pub name: String,
    /// How the control takes its values (and so how the view draws it).
    pub kind: ControlKind,
    /// The smallest value, as the host holds it (0 for a script's parameter).
    pub min: f64,
    /// The largest value, as the host holds it (for a script's stepped or choice parameter, its last step or
    /// choice number).
    pub max: f64,
    /// The value a new instance has, as the host holds it.
    pub default: f64,
    /// The value as the host holds it.
    pub value: f64,
    /// The value as text, with its unit (the host's `value_to_text`).
    pub text: String,
    /// The unit, if the parameter has one.
    pub unit: String,
}

/// Everything the editor shows.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EditorModel {
    /// Goes up with every change (a view redraws when it moved).
    pub generation: u64,
    /// The instance's script: its name, where it comes from, its description.
    pub script: ScriptInfo,
    /// Newest first, at most [`LOG_CAPACITY`].
    pub log: VecDeque<LogEntry>,
    /// The instance's live figures, as of the main thread's last refresh.
    pub status: Status,
    /// The script's declared parameters, in declaration order.
    pub controls: Vec<Control>,
    /// The plugin's Mix parameter; `None` until the main thread first refreshes the model.
    pub mix: Option<Control>,
    /// The plugin's Bypass parameter; `None` until the main thread first refreshes the model.
    pub bypass: Option<Control>,
    /// Where the examples come from (the bundle's `scripts/`,
    /// `$OUTBOARD_PRESET_DIRS`).
    pub example_dirs: Vec<PathBuf>,
    /// The user's script folder (`$XDG_DATA_HOME/outboard/scripts`).
    pub user_dir: Option<PathBuf>,
    /// Actions not carried out yet.
    actions: Vec<Action>,
    /// The last log entry taken in.
    log_seen: u64,
}

impl EditorModel {
    /// Queues an action for the main thread (see
    /// [`EditorHandle::act`](crate::editor::EditorHandle::act), which also
    /// asks the host for the main-thread callback that carries it out).
    pub fn push(&mut self, action: Action) {
        self.actions.push(action);
    }

    /// The queued actions, in order (the main thread takes them).
    pub fn take_actions(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.actions)
    }

    /// A declared parameter's control, by name.
    pub fn param(&self, name: &str) -> Option<&Control> {
        self.controls.iter().find(|c| c.name == name)
    }

    /// The log as text, newest first (what Copy puts on the clipboard).
    pub fn log_text(&self) -> String {
        let mut text = String::new();
        for entry in &self.log {
            text.push_str(&entry.to_text());
            if !text.ends_with('\n') {
                text.push('\n');
            }
        }
        text
    }

    /// The last log entry taken in (see [`EditorModel::take_log`]).
    pub fn log_seen(&self) -> u64 {
        self.log_seen
    }

    /// Takes in new messages (oldest first); keeps the newest
    /// [`LOG_CAPACITY`]. Returns whether any was new.
    pub fn take_log(&mut self, said: impl IntoIterator<Item = LogEntry>) -> bool {
        let mut any = false;
        for entry in said {
            if entry.seq <= self.log_seen {
                continue;
            }
            self.log_seen = entry.seq;
            self.log.push_front(entry);
            any = true;
        }
        self.log.truncate(LOG_CAPACITY);
        if any {
            self.generation += 1;
        }
        any
    }

    /// Forgets the log's entries.
    pub fn clear_log(&mut self) {
        if !self.log.is_empty() {
            self.log.clear();
            self.generation += 1;
        }
    }

    /// The example scripts, by file name, each with its folder (the first
    /// folder holding a name wins), sorted by name. Reads the folders.
    pub fn examples(&self) -> Vec<(String, PathBuf)> {
        examples_in(&self.example_dirs)
    }

    /// Replaces a part of the model, bumping the generation if it changed.
    pub fn set<T: PartialEq>(&mut self, part: impl FnOnce(&mut EditorModel) -> &mut T, value: T) {
        let slot = part(self);
        if *slot != value {
            *slot = value;
            self.generation += 1;
        }
    }
}

/// The `*.py` files of `dirs`, by name (first folder wins), sorted.
pub fn examples_in(dirs: &[PathBuf]) -> Vec<(String, PathBuf)> {
    let mut out: Vec<(String, PathBuf)> = Vec::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if path.extension().is_some_and(|e| e == "py") && path.is_file() && !out.iter().any(|(n, _)| *n == name) {
                out.push((name, path));
            }
        }
    }
    out.sort();
    out
}

/// A module docstring's text (without its quotes, dedented), if the source
/// starts with one (after blank and comment lines).
pub fn docstring(source: &str) -> Option<String> {
    let text = source.strip_prefix('\u{feff}').unwrap_or(source);
    // The first statement's offset: past blank and comment lines.
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim();
        if !trimmed.is_empty() && !trimmed.starts_with('#') {
            offset += line.len() - line.trim_start().len();
            break;
        }
        offset += line.len();
    }
    let body = text.get(offset..)?.trim_start_matches(['r', 'R', 'u', 'U']);
    let quote = ["\"\"\"", "'''"].into_iter().find(|q| body.starts_with(q))?;
    let body = &body[3..];
    let body = &body[..body.find(quote)?];
    // Dedent the lines after the first, as inspect.cleandoc does.
    let mut lines = body.lines();
    let first = lines.next().unwrap_or_default().trim().to_string();
    let rest: Vec<&str> = lines.collect();
    let indent = rest.iter().filter(|l| !l.trim().is_empty()).map(|l| l.len() - l.trim_start().len()).min();
    let mut out = vec![first];
    out.extend(rest.iter().map(|l| l.get(indent.unwrap_or(0)..).unwrap_or("").trim_end().to_string()));
    let text = out.join("\n").trim().to_string();
    (!text.is_empty()).then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_script_errors_file_and_line_are_read_from_its_head() {
        let text = "outboard: script error in /tmp/x/raises.py:3 (outboard raises.py, process): ValueError: no\n\
                    Traceback (most recent call last):\n  File \"/tmp/x/raises.py\", line 3, in process\n";
        let entry = LogEntry::new(1, LogLevel::Error, text.to_string(), SystemTime::now());
        assert_eq!(entry.kind, LogKind::Error);
        assert_eq!(entry.file.as_deref(), Some("/tmp/x/raises.py"));
        assert_eq!(entry.line, Some(3));
        let none = error_location("outboard: script error in /a/b.py:None (t, setup): boom");
        assert_eq!(none, Some(("/a/b.py".to_string(), None)));
        let log = LogEntry::new(2, LogLevel::Info, "[outboard a.py] the worker loaded".into(), SystemTime::now());
        assert_eq!(log.kind, LogKind::Script);
        let worker =
            LogEntry::new(3, LogLevel::Info, "outboard: started worker 0 (pid 7) for t".into(), SystemTime::now());
        assert_eq!(worker.kind, LogKind::Worker);
    }

    #[test]
    fn the_log_is_newest_first_bounded_and_cleared() {
        let mut model = EditorModel::default();
        let entries = (1..=LOG_CAPACITY as u64 + 10)
            .map(|n| LogEntry::new(n, LogLevel::Info, format!("m{n}"), SystemTime::now()));
        assert!(model.take_log(entries));
        assert_eq!(model.log.len(), LOG_CAPACITY);
        assert_eq!(model.log[0].text, format!("m{}", LOG_CAPACITY + 10));
        assert!(model.log_text().starts_with(&format!("[info] m{}\n", LOG_CAPACITY + 10)));
        // Seen entries are not taken twice.
        assert!(!model.take_log([LogEntry::new(3, LogLevel::Info, "again".into(), SystemTime::now())]));
        model.clear_log();
        assert!(model.log.is_empty());
        assert!(model.take_log([LogEntry::new(1000, LogLevel::Error, "new".into(), SystemTime::now())]));
        assert_eq!(model.log.len(), 1);
    }

    #[test]
    fn docstrings_are_read_whole_and_dedented() {
        let source = "# comment\n\n\"\"\"A tremolo.\n\n    Depth and rate:\n      indented.\n    \"\"\"\nPARAMS = {}\n";
        assert_eq!(docstring(source).as_deref(), Some("A tremolo.\n\nDepth and rate:\n  indented."));
        assert_eq!(docstring("'''One line.'''\n").as_deref(), Some("One line."));
        assert_eq!(docstring("# \"\"\"A comment\n  \"\"\"Doc.\"\"\"\n").as_deref(), Some("Doc."));
        assert_eq!(docstring("import numpy\n\"\"\"not a docstring\"\"\"\n"), None);
        assert_eq!(docstring(""), None);
    }
}
