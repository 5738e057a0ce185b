//! The editor, on the main thread: carries out the model's actions and
//! refreshes the model from the instance (its script, its messages, its
//! worker and track counters, its parameters).

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clack_extensions::params::HostParams;
use clack_plugin::prelude::*;
use outboard_engine::workers::script_log::LogLevel;

use super::model::{
    Action, Control, ControlKind, LogEntry, RoundTrip, ScriptInfo, ScriptLocation, Status, WorkerState, docstring,
};
use super::{GESTURE_RING, ParamGesture};
use crate::OutboardMainThread;
use crate::params::{self, FIXED};
use crate::processor;
use crate::scripting;

/// Status figures computed from deltas (CPU, DSP load) are taken over at
/// least this long.
const SAMPLE_EVERY: Duration = Duration::from_millis(200);

/// The main thread's side of the editor.
pub struct EditorSide {
    /// Parameter moves to the audio thread.
    gestures: rtrb::Producer<ParamGesture>,
    /// The ring's other end while the instance is inactive (the main
    /// thread's flush reads it); the processor holds it while active.
    consumer: Option<rtrb::Consumer<ParamGesture>>,
    /// Moves that did not fit the ring (sent at the next callback).
    backlog: VecDeque<ParamGesture>,
    /// Parameters the editor holds (a gesture begun, not ended).
    held: Vec<u32>,
    /// The worker's CPU time at the last sample: (pid, ticks, when).
    cpu: Option<(u32, u64, Instant)>,
    /// The DSP meters at the last sample: (busy ns, frames, when).
    load: Option<(u64, u64, Instant)>,
}

impl Default for EditorSide {
    fn default() -> Self {
        EditorSide::new()
    }
}

impl EditorSide {
    /// Makes the ring of parameter moves ([`GESTURE_RING`] long) and keeps both ends until activation lends
    /// the consumer to the processor. Main thread; allocates.
    pub fn new() -> EditorSide {
        let (gestures, consumer) = rtrb::RingBuffer::new(GESTURE_RING);
        EditorSide {
            gestures,
            consumer: Some(consumer),
            backlog: VecDeque::new(),
            held: Vec::new(),
            cpu: None,
            load: None,
        }
    }

    /// The ring's consumer, for the processor (at activation).
    pub fn lend_gestures(&mut self) -> Option<rtrb::Consumer<ParamGesture>> {
        self.consumer.take()
    }

    /// The consumer back from the processor (at deactivation).
    pub fn give_back_gestures(&mut self, consumer: Option<rtrb::Consumer<ParamGesture>>) {
        if consumer.is_some() {
            self.consumer = consumer;
        }
    }

    /// A flush while inactive: the moves waiting go to the host now.
    pub fn flush_gestures(&mut self, values: &params::ParamValues, output: &mut OutputEvents) {
        self.send_backlog();
        if let Some(consumer) = self.consumer.as_mut() {
            processor::send_gestures(values, consumer, output, |_, _| {});
        }
    }

    /// Ends the gestures the editor holds (its window closed mid-drag);
    /// whether there were any.
    pub fn end_gestures(&mut self) -> bool {
        let held = std::mem::take(&mut self.held);
        for &id in &held {
            self.queue(ParamGesture::End(id));
        }
        !held.is_empty()
    }

    fn queue(&mut self, gesture: ParamGesture) {
        self.backlog.push_back(gesture);
        self.send_backlog();
    }

    /// Moves as many waiting moves as fit into the ring, in order.
    fn send_backlog(&mut self) {
        while let Some(&gesture) = self.backlog.front() {
            if self.gestures.push(gesture).is_err() {
                return;
            }
            self.backlog.pop_front();
        }
    }
}

impl OutboardMainThread<'_> {
    /// Carries out the editor's actions and, while someone watches,
    /// refreshes its model. Main thread (`on_main_thread`, the timer).
    pub(crate) fn serve_editor(&self) {
        let backlog = {
            let mut side = self.editor_side.borrow_mut();
            side.send_backlog();
            !side.backlog.is_empty()
        };
        let moved = self.apply_actions();
        if moved || backlog {
            self.request_param_flush();
        }
        let watched = self.editor.watched();
        self.shared.meters.set_measuring(watched);
        if watched {
            self.refresh_editor();
        }
    }

    /// Carries out the queued actions; whether any moved a parameter.
    pub(crate) fn apply_actions(&self) -> bool {
        let actions = self.editor.lock().take_actions();
        let moved = actions.iter().any(|a| {
            matches!(
                a,
                Action::SetParam { .. } | Action::SetParamText { .. } | Action::BeginGesture(_) | Action::EndGesture(_)
            )
        });
        for action in actions {
            self.apply(action);
        }
        moved
    }

    /// Asks the host to send the editor's moves: at its next `process`,
    /// or through a parameter flush if it is not processing.
    pub(crate) fn request_param_flush(&self) {
        if let Some(params) = self.host.get_extension::<HostParams>() {
            params.request_flush(&self.host.shared());
        }
    }

    fn apply(&self, action: Action) {
        match action {
            Action::Open(path) => {
                let path = std::path::absolute(&path).unwrap_or(path);
                match self.load_script_file(&path) {
                    Ok(()) => self.say(LogLevel::Info, &format!("outboard: the script is now {}", path.display())),
                    Err(why) => self.say(LogLevel::Error, &format!("outboard: cannot open the script: {why}")),
                }
            }
            Action::Reload => {
                if let Err(why) = self.reload_script() {
                    self.say(LogLevel::Error, &format!("outboard: cannot reload the script: {why}"));
                }
            }
            Action::Edit => {
                if let Err(why) = self.edit_script() {
                    self.say(LogLevel::Error, &format!("outboard: cannot edit the script: {why}"));
                }
            }
            Action::NewFromExample(name) => match self.new_from_example(&name) {
                Ok(path) => self.say(
                    LogLevel::Info,
                    &format!("outboard: the script is now {} (a copy of the example {name})", path.display()),
                ),
                Err(why) => {
                    self.say(LogLevel::Error, &format!("outboard: cannot start from the example {name}: {why}"))
                }
            },
            Action::ClearLog => {
                // The messages so far are taken in first, so they do not
                // come back.
                let mut model = self.editor.lock();
                let said = self.mailbox.said_since(model.log_seen());
                model.take_log(said.into_iter().map(|s| LogEntry::new(s.seq, s.level, s.text, s.at)));
                model.clear_log();
            }
            Action::SetParam { id, value } => self.editor_set_param(id, value),
            Action::SetParamText { id, text } => match self.param_from_text(id, &text) {
                Some(value) => self.editor_set_param(id, value),
                None => self.say(
                    LogLevel::Warning,
                    &format!("outboard: {text:?} is not a value of {}", self.param_name(id).unwrap_or_default()),
                ),
            },
            Action::BeginGesture(id) => {
                let mut side = self.editor_side.borrow_mut();
                if self.editor_may_set(id) && !side.held.contains(&id) {
                    side.held.push(id);
                    side.queue(ParamGesture::Begin(id));
                }
            }
            Action::EndGesture(id) => {
                let mut side = self.editor_side.borrow_mut();
                if let Some(at) = side.held.iter().position(|&h| h == id) {
                    side.held.swap_remove(at);
                    side.queue(ParamGesture::End(id));
                }
            }
        }
    }

    /// Whether the editor may move parameter `id`: a declared script
    /// parameter, or the plugin's own writable ones.
    fn editor_may_set(&self, id: u32) -> bool {
        match params::slot_of(id) {
            Some(k) => self.slot_param(k).is_some(),
            None => params::fixed_index(id).is_some_and(|i| !FIXED[i].read_only()),
        }
    }

    /// Sets a parameter from the editor: the value now (so the editor and
    /// the audio see it at once), and the host hears the move (a whole
    /// gesture unless the editor holds one open).
    fn editor_set_param(&self, id: u32, value: f64) {
        if !self.editor_may_set(id) || !self.shared.values.set(id, value) {
            return;
        }
        let Some(value) = self.shared.values.get(id) else { return };
        let mut side = self.editor_side.borrow_mut();
        if side.held.contains(&id) {
            side.queue(ParamGesture::Value(id, value));
        } else {
            side.queue(ParamGesture::Begin(id));
            side.queue(ParamGesture::Value(id, value));
            side.queue(ParamGesture::End(id));
        }
    }

    fn param_from_text(&self, id: u32, text: &str) -> Option<f64> {
        if let Some(k) = params::slot_of(id) {
            return params::parse_slot(self.slot_param(k).as_ref(), text);
        }
        params::fixed_index(id).and_then(|i| FIXED[i].parse(text))
    }

    fn param_name(&self, id: u32) -> Option<String> {
        match params::slot_of(id) {
            Some(k) => self.slot_param(k).map(|p| p.name),
            None => params::fixed_index(id).map(|i| FIXED[i].name.to_string()),
        }
    }

    /// Makes the worker load the script again: a followed file as it is
    /// now (its text is kept for the project), else the saved source.
    fn reload_script(&self) -> Result<(), String> {
        let latest = self.script.borrow().read_followed();
        if let Some(latest) = latest {
            self.script.borrow_mut().source = latest;
        }
        let script = self.script.borrow().clone();
        let mut running = self.running.borrow_mut();
        match running.as_mut() {
            Some((track, now, _)) => {
                *now = scripting::reload(*track, &script)?;
                self.say(LogLevel::Info, &format!("outboard: reloading {}", script.name));
            }
            None => self.say(
                LogLevel::Info,
                &format!("outboard: {} is read again; it runs when the instance is activated", script.name),
            ),
        }
        Ok(())
    }

    /// Opens the script in the user's editor; a script that is no file
    /// is first saved in the user's script folder and followed.
    fn edit_script(&self) -> Result<(), String> {
        let followed = self.script.borrow().followed_file();
        let path = match followed {
            Some(path) => path,
            None => {
                let script = self.script.borrow().clone();
                let dir = user_dir()?;
                let path = free_name(&dir, &script.name);
                scripting::write_script(&path, &script.source)
                    .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
                self.load_script_file(&path)?;
                self.say(LogLevel::Info, &format!("outboard: the script is saved as {} and followed", path.display()));
                path
            }
        };
        let how = open_in_editor(&path)?;
        self.say(LogLevel::Info, &format!("outboard: opened {} with {how}", path.display()));
        Ok(())
    }

    /// Copies an example into the user's folder and follows the copy.
    fn new_from_example(&self, name: &str) -> Result<PathBuf, String> {
        let dirs = crate::presets::example_dirs();
        let (_, example) = super::model::examples_in(&dirs)
            .into_iter()
            .find(|(n, _)| n == name || n.strip_suffix(".py") == Some(name))
            .ok_or_else(|| format!("no example of that name in {}", describe_dirs(&dirs)))?;
        let source = std::fs::read_to_string(&example).map_err(|e| format!("{}: {e}", example.display()))?;
        let dir = user_dir()?;
        let path = free_name(&dir, name);
        scripting::write_script(&path, &source).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        self.load_script_file(&path)?;
        Ok(path)
    }

    /// Brings the model up to date with the instance (while watched).
    pub(crate) fn refresh_editor(&self) {
        let said = {
            let seen = self.editor.lock().log_seen();
            self.mailbox.said_since(seen)
        };
        let script = self.script_info();
        let (mix, bypass) = (self.fixed_control(params::MIX), self.fixed_control(params::BYPASS));
        let controls = self.declared_controls();
        let status = self.status();
        let (example_dirs, user_dir) = {
            let model = self.editor.lock();
            let fresh = model.example_dirs.is_empty() && model.user_dir.is_none();
            drop(model);
            if fresh { (crate::presets::example_dirs(), crate::presets::user_dir()) } else { Default::default() }
        };
        let changed = {
            let mut model = self.editor.lock();
            let before = model.generation;
            model.take_log(said.into_iter().map(|s| LogEntry::new(s.seq, s.level, s.text, s.at)));
            model.set(|m| &mut m.script, script);
            model.set(|m| &mut m.controls, controls);
            model.set(|m| &mut m.mix, mix);
            model.set(|m| &mut m.bypass, bypass);
            model.set(|m| &mut m.status, status);
            if !example_dirs.is_empty() || user_dir.is_some() {
                model.set(|m| &mut m.example_dirs, example_dirs);
                model.set(|m| &mut m.user_dir, user_dir);
            }
            model.generation != before
        };
        if changed {
            self.editor.changed();
        }
    }

    fn script_info(&self) -> ScriptInfo {
        let script = self.script.borrow();
        let location = if script.path.is_empty() {
            ScriptLocation::Embedded
        } else if let Some(path) = script.followed_file() {
            ScriptLocation::File(path)
        } else {
            ScriptLocation::Missing(PathBuf::from(&script.path))
        };
        // The worker's reading of the running script, else the source's.
        let declared = self.declared.borrow();
        let description = if declared.doc.trim().is_empty() {
            docstring(&script.source).unwrap_or_default()
        } else {
            declared.doc.trim().to_string()
        };
        ScriptInfo { name: script.name.clone(), location, description }
    }

    /// The value the host sees for `id` (a slot not set yet: its default).
    fn host_value(&self, id: u32) -> f64 {
        use clack_extensions::params::PluginMainThreadParams;
        self.get_value(ClapId::new(id)).unwrap_or(0.0)
    }

    fn fixed_control(&self, id: u32) -> Option<Control> {
        let spec = FIXED[params::fixed_index(id)?];
        let value = self.host_value(id);
        let mut text = String::new();
        let _ = spec.format(value, &mut text);
        let kind = match spec.unit {
            params::Unit::Switch => ControlKind::Switch,
            _ if spec.stepped => ControlKind::Stepped,
            _ => ControlKind::Slider,
        };
        let unit = match spec.unit {
            params::Unit::Percent => "%",
            params::Unit::Terms => "terms",
            params::Unit::Switch | params::Unit::Count => "",
        };
        Some(Control {
            id,
            name: spec.name.to_string(),
            kind,
            min: spec.min,
            max: spec.max,
            default: spec.default,
            value,
            text,
            unit: unit.to_string(),
        })
    }

    fn declared_controls(&self) -> Vec<Control> {
        use outboard_engine::wire::declared::Range;
        let declared = self.declared.borrow();
        declared
            .params
            .iter()
            .filter_map(|p| {
                let k = p.index.checked_sub(1).filter(|&k| k < params::SLOTS)?;
                let id = params::slot_id(k);
                let value = self.host_value(id);
                let mut text = String::new();
                let _ = params::format_slot(Some(p), value, &mut text);
                let kind = match &p.range {
                    Range::Continuous { .. } => ControlKind::Slider,
                    Range::Stepped { .. } => ControlKind::Stepped,
                    Range::Choices(names) => ControlKind::Choice(names.clone()),
                };
                Some(Control {
                    id,
                    name: p.name.clone(),
                    kind,
                    min: 0.0,
                    max: p.host_max(),
                    default: p.default,
                    value,
                    text,
                    unit: p.unit.clone(),
                })
            })
            .collect()
    }

    fn status(&self) -> Status {
        let now = Instant::now();
        let active = self.active.get();
        let running = self.running.borrow().as_ref().map(|(track, _, _)| *track);
        let stats = self.stats.borrow().clone();
        let worker = match (active, running, &stats) {
            (false, _, _) => WorkerState::Inactive,
            (true, None, _) | (true, _, None) => WorkerState::Dry,
            (true, Some(_), Some(stats)) => {
                use std::sync::atomic::Ordering::Acquire;
                if stats.link_faulted.load(Acquire) {
                    WorkerState::Restarting
                } else if stats.link_generation.load(Acquire) == 0 {
                    WorkerState::Starting
                } else if !stats.script_ready.load(Acquire) {
                    WorkerState::Loading
                } else {
                    WorkerState::Running
                }
            }
        };
        let pid = running.and_then(scripting::worker_of);
        let mut side = self.editor_side.borrow_mut();
        let previous = self.editor.lock().status.clone();
        // The worker's CPU: its user and system time between two samples.
        let worker_cpu = match pid {
            None => {
                side.cpu = None;
                None
            }
            Some(pid) => match side.cpu {
                Some((was, _, at)) if was == pid && now.duration_since(at) < SAMPLE_EVERY => previous.worker_cpu,
                last => {
                    let ticks = cpu_ticks(pid);
                    side.cpu = ticks.map(|ticks| (pid, ticks, now));
                    match (last, ticks) {
                        (Some((was, before, at)), Some(ticks)) if was == pid => {
                            let seconds = now.duration_since(at).as_secs_f64().max(1e-3);
                            let used = ticks.saturating_sub(before) as f64 / clock_ticks_per_second();
                            Some(100.0 * used / seconds)
                        }
                        _ => None,
                    }
                }
            },
        };
        // The DSP load: time in process over the time the frames last.
        let rate = self.sample_rate.get();
        let (dsp_load, dsp_peak) = if !active || rate <= 0.0 {
            side.load = None;
            (None, None)
        } else {
            match side.load {
                Some((_, _, at)) if now.duration_since(at) < SAMPLE_EVERY => (previous.dsp_load, previous.dsp_peak),
                last => {
                    let (busy, frames, peak) = self.shared.meters.take();
                    side.load = Some((busy, frames, now));
                    match last {
                        Some((busy_before, frames_before, _)) if frames > frames_before => {
                            let seconds = (frames - frames_before) as f64 / rate;
                            let busy = busy.saturating_sub(busy_before) as f64 / 1e9;
                            (Some(busy / seconds), Some(peak))
                        }
                        _ => (previous.dsp_load, previous.dsp_peak),
                    }
                }
            }
        };
        let (late_results, blocks, round_trip) = match &stats {
            Some(stats) => {
                use std::sync::atomic::Ordering::Relaxed;
                let p = stats.roundtrip.percentiles();
                (
                    stats.late_results.load(Relaxed),
                    stats.blocks.load(Relaxed),
                    (p.count > 0).then_some(RoundTrip { count: p.count, p50_us: p.p50, p99_us: p.p99 }),
                )
            }
            None => (self.host_value(params::LATE_RESULTS) as u64, 0, None),
        };
        Status {
            worker,
            pid,
            late_results,
            blocks,
            round_trip,
            worker_cpu,
            dsp_load,
            dsp_peak,
            latency: if active { self.latency.get() } else { 0 },
            sample_rate: rate,
        }
    }
}

/// User plus system time of a process, in clock ticks (`/proc/PID/stat`).
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields follow the last ')'.
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    // After the name: state is field 3, utime 14, stime 15 (1-based).
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf reads a constant of the system.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// The user's script folder, created if needed.
fn user_dir() -> Result<PathBuf, String> {
    let dir = crate::presets::user_dir().ok_or("no user script folder (neither $XDG_DATA_HOME nor $HOME is set)")?;
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    Ok(dir)
}

/// `dir/NAME.py`, or `dir/NAME-2.py`, ... : a name no file has yet.
pub fn free_name(dir: &Path, name: &str) -> PathBuf {
    let stem = Path::new(name).file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let stem: String = stem.chars().filter(|c| !matches!(c, '/' | '\0')).collect();
    let stem = if stem.is_empty() { "script".to_string() } else { stem };
    let first = dir.join(format!("{stem}.py"));
    if !first.exists() {
        return first;
    }
    (2..).map(|n| dir.join(format!("{stem}-{n}.py"))).find(|p| !p.exists()).expect("a free name")
}

fn describe_dirs(dirs: &[PathBuf]) -> String {
    if dirs.is_empty() {
        return "(no example folder: scripts/ beside the plugin, or $OUTBOARD_PRESET_DIRS)".to_string();
    }
    dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ")
}

/// Starts `$VISUAL`, else `$EDITOR`, else the desktop's default
/// (`xdg-open`) on `path`, detached (the shell that starts it returns at
/// once: no child is left to reap, no thread waits). Returns what it used.
pub fn open_in_editor(path: &Path) -> Result<String, String> {
    let named = ["VISUAL", "EDITOR"]
        .into_iter()
        .find_map(|var| std::env::var(var).ok().filter(|v| !v.trim().is_empty()).map(|v| (var, v)));
    let (how, command) = match named {
        Some((var, editor)) => (format!("${var} ({editor})"), editor),
        None => ("xdg-open".to_string(), "xdg-open".to_string()),
    };
    // As git runs $EDITOR: the variable's text is a shell command, the
    // file its argument.
    let status = std::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(format!("{command} \"$1\" </dev/null >/dev/null 2>&1 &"))
        .arg("sh")
        .arg(path)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .map_err(|e| format!("cannot run /bin/sh: {e}"))?;
    if !status.success() {
        return Err(format!("{how} could not be started ({status})"));
    }
    Ok(how)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_names_never_overwrite() {
        let dir = std::env::temp_dir().join(format!("outboard-free-name-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let first = free_name(&dir, "tremolo.py");
        assert_eq!(first, dir.join("tremolo.py"));
        std::fs::write(&first, "").unwrap();
        assert_eq!(free_name(&dir, "tremolo.py"), dir.join("tremolo-2.py"));
        assert_eq!(free_name(&dir, "tremolo"), dir.join("tremolo-2.py"));
        assert_eq!(free_name(&dir, ""), dir.join("script.py"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn cpu_time_is_read_from_proc() {
        assert!(cpu_ticks(std::process::id()).is_some());
        assert!(cpu_ticks(u32::MAX).is_none());
    }
}
