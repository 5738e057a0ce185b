//! outboard.clap: the CLAP plugin. One instance is one scripted track.
//!
//! # What it guarantees
//!
//! - **`process` is realtime-safe.** It never locks, allocates, frees, does
//!   I/O or waits; the only system call it can make is the engine's
//!   non-blocking wake of a worker that said it sleeps. A script result not
//!   back in time is never waited for: the instance plays its input dry,
//!   delayed by the same latency, and counts a late result (shown as the
//!   read-only parameter "Late results"). The one exception is the host's
//!   own choice: with the CLAP render extension set to offline (a bounce),
//!   `process` waits, bounded, for each script result.
//! - **The host never waits on Python and never crashes for it.** Scripts
//!   run in `outboard-scripts-host` worker processes shared by every
//!   instance in the process ([`scripting`]); a dead, hung or hostile worker
//!   costs wet audio, not the host.
//! - **Reported latency is exact**: output frame t is the script's result
//!   for input frame t − λ, λ = [`latency`](PluginLatencyImpl::get) samples,
//!   whatever the host's block sizes.
//! - **State is strict and reproducible** ([`state`]): bad state is refused
//!   with an error; load-then-save returns the same bytes.
//! - **The host is untrusted input** ([`guard`]): every call from the host
//!   passes a guard that checks its pointers, event headers and call order
//!   before clack's typed views see them; nothing the host passes makes the
//!   plugin panic, and each kind of quirk is said once on the host's log.
//! - **Scripts are files** ([`scripting`]): an instance follows its script's
//!   file where it exists, and keeps the source in its state for where it
//!   does not. Messages about it (errors with file and line, `ctx.log`,
//!   worker lifecycle) reach the host's log from the main thread
//!   ([`messages`]), never from `process`.
//!
//! - **An editor** ([`editor`], CLAP gui: X11, embedded or floating): the
//!   script (open, reload, edit, new from an example, its description), its
//!   log, live status and the controls, drawn by egui on the window's own
//!   thread from a model the main thread keeps; the audio thread never
//!   waits for it, and a host that never opens it pays nothing.
//!
//! # Thread model (as clack types it)
//!
//! - [`OutboardShared`] (`Send + Sync`): parameter values in atomics, read
//!   and written by both threads; the editor's DSP-load meters.
//! - [`OutboardMainThread`] (main thread only, `!Sync`): the script, the
//!   latency, the host handle, the instance's mailbox; loading state,
//!   activation (with its bounded wait for a wet start) and writing to the
//!   host's log happen here.
//! - [`OutboardAudioProcessor`] (`Send`, audio thread): the engine track and
//!   scratch buffers, all allocated in `activate` (main thread) and freed in
//!   `deactivate` (main thread).
//!
//! # Two plugins, one library
//!
//! *Outboard* (an audio effect: audio in and out) and *Outboard Instrument*
//! (notes in, audio out, no audio in: its script fills a silent block). Both
//! have a note port in and out (CLAP notes and MIDI 1.0): the host's notes
//! reach the script with its block (`ctx.events`), the script's notes leave
//! λ after their time, like its audio.
//!
//! # Parameters
//!
//! Mix (0-100 %), DSP load (partial-sum terms per 64-frame block: the
//! stand-in DSP cost of the track), Bypass (keeps the latency), the
//! read-only Late results counter, and 32 script slots that take the names,
//! ranges and texts of the parameters the script declares ([`params`]).
//! A new declaration (a script loaded or edited) is told to the host with
//! the rescans CLAP allows while active (info, text, values), and a restart
//! request when ranges changed (the full rescan follows at deactivation).

use std::cell::{Cell, RefCell};
use std::ffi::CStr;
use std::io::{Read, Write as _};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clack_extensions::audio_ports::{
    AudioPortFlags, AudioPortInfo, AudioPortInfoWriter, AudioPortType, PluginAudioPorts, PluginAudioPortsImpl,
};
use clack_extensions::gui::PluginGui;
use clack_extensions::latency::{HostLatency, PluginLatency, PluginLatencyImpl};
use clack_extensions::log::{HostLog, LogSeverity};
use clack_extensions::note_ports::{
    NoteDialect, NoteDialects, NotePortInfo, NotePortInfoWriter, PluginNotePorts, PluginNotePortsImpl,
};
use clack_extensions::params::{
    HostParams, ParamDisplayWriter, ParamInfo, ParamInfoFlags, ParamInfoWriter, ParamRescanFlags,
    PluginAudioProcessorParams, PluginMainThreadParams, PluginParams,
};
use clack_extensions::preset_discovery::preset_data::Location;
use clack_extensions::preset_discovery::{PluginPresetLoad, PluginPresetLoadImpl};
use clack_extensions::render::{PluginRender, PluginRenderImpl, RenderMode};
use clack_extensions::state::{PluginState as ClapState, PluginStateImpl};
use clack_extensions::timer::PluginTimer;
use clack_plugin::entry::{Entry, EntryFactories, EntryLoadError};
use clack_plugin::factory::plugin::{PluginFactoryImpl, PluginFactoryWrapper};
use clack_plugin::host::HostInfo;
use clack_plugin::plugin::PluginInstance;
use clack_plugin::prelude::*;
use clack_plugin::stream::{InputStream, OutputStream};
use outboard_engine::realtime::track::DeclaredCell;
use outboard_engine::realtime::track::{Track, TrackConfig};
use outboard_engine::wire::declared::Declaration;

pub mod denormals;
pub mod editor;
pub mod guard;
pub mod messages;
pub mod params;
pub mod presets;
pub mod processor;
pub mod scripting;
pub mod state;

use messages::Mailbox;
use outboard_engine::workers::script_log::LogLevel;
use params::{FIXED, ParamValues};
use processor::{CHANNELS, Processor};
use scripting::ScriptSource;
use state::{MAX_STATE_BYTES, PluginState};

/// The CLAP plugin id of *Outboard*, the effect. Hosts save it in their projects, so it must never change.
pub const PLUGIN_ID: &str = "dev.outboard.scripted-track";
/// The CLAP plugin id of *Outboard Instrument*. Hosts save it in their projects, so it must never change.
pub const INSTRUMENT_ID: &str = "dev.outboard.instrument";

/// What a new instance runs until a state brings a script: the input,
/// unchanged (delayed by the latency, as everything is).
pub const DEFAULT_SCRIPT: &str = r#""""Outboard's default script: passes the audio through unchanged.

Load your own through the plugin's state or a preset (a host's preset browser
lists the example scripts and ~/.local/share/outboard/scripts), or
`outboard-host --script FILE`. Hooks: setup(ctx), process(block, ctx) with
block a float32 numpy array (channels, frames) to edit in place, tick(ctx).
"""


def process(block, ctx):
    pass
"#;
/// The file name [`DEFAULT_SCRIPT`] goes by: the name the editor and the log show, with no file behind it.
pub const DEFAULT_SCRIPT_NAME: &str = "passthrough.py";

/// The environment variable naming the script new instances start with
/// (for a host that never opens the editor, the one way to hand every new
/// instance a file).
pub const DEFAULT_SCRIPT_ENV: &str = "OUTBOARD_DEFAULT_SCRIPT";

/// The script a new instance starts with: `$OUTBOARD_DEFAULT_SCRIPT` if it
/// names a readable file (which the instance then follows), else
/// [`DEFAULT_SCRIPT`]. The second value is worth a line on the log.
fn initial_script() -> (ScriptSource, Option<String>) {
    let passthrough = ScriptSource {
        name: DEFAULT_SCRIPT_NAME.to_string(),
        source: DEFAULT_SCRIPT.to_string(),
        ..Default::default()
    };
    let Some(path) = std::env::var_os(DEFAULT_SCRIPT_ENV).map(PathBuf::from) else { return (passthrough, None) };
    let path = std::path::absolute(&path).unwrap_or(path);
    match std::fs::read_to_string(&path) {
        Ok(source) if source.len() <= state::MAX_SCRIPT_BYTES => {
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            (ScriptSource { name, source, path: path.to_string_lossy().into_owned(), ..Default::default() }, None)
        }
        Ok(_) => {
            let why =
                format!("outboard: {} is longer than a script may be; starting with the pass-through", path.display());
            (passthrough, Some(why))
        }
        Err(e) => (passthrough, Some(format!("outboard: cannot read {DEFAULT_SCRIPT_ENV}={}: {e}", path.display()))),
    }
}

/// How long activation waits for the instance's worker to have loaded the
/// script, so the first blocks are wet (`OUTBOARD_WET_START_MS` overrides;
/// 0 does not wait).
pub const WET_START_WAIT: Duration = Duration::from_secs(2);
/// The environment variable overriding [`WET_START_WAIT`], in whole milliseconds (at most 60 000; 0 does not wait).
pub const WET_START_ENV: &str = "OUTBOARD_WET_START_MS";

/// The last wet-start wait timed out (see `activate`).
static WET_START_FAILING: AtomicBool = AtomicBool::new(false);
/// The wait while wet starts are failing.
const FAILING_WAIT: Duration = Duration::from_millis(200);

fn wet_start_wait() -> Duration {
    std::env::var(WET_START_ENV)
        .ok()
        .and_then(|ms| ms.trim().parse::<u64>().ok())
        .map_or(WET_START_WAIT, |ms| Duration::from_millis(ms.min(60_000)))
}

/// The clack plugin type behind both plugins: ties together [`OutboardShared`], [`OutboardMainThread`] and
/// [`OutboardAudioProcessor`] and declares the CLAP extensions an instance offers.
pub struct OutboardPlugin;

impl Plugin for OutboardPlugin {
    type AudioProcessor<'a> = OutboardAudioProcessor<'a>;
    type Shared<'a> = OutboardShared;
    type MainThread<'a> = OutboardMainThread<'a>;

    fn declare_extensions(builder: &mut PluginExtensions<Self>, _shared: Option<&OutboardShared>) {
        builder
            .register::<PluginAudioPorts>()
            .register::<PluginNotePorts>()
            .register::<PluginParams>()
            .register::<ClapState>()
            .register::<PluginLatency>()
            .register::<PluginRender>()
            .register::<PluginPresetLoad>()
            .register::<PluginGui>()
            .register::<PluginTimer>();
    }
}

/// The effect's descriptor.
pub fn effect_descriptor() -> PluginDescriptor {
    use clack_plugin::plugin::features::{AUDIO_EFFECT, STEREO, UTILITY};
    PluginDescriptor::new(PLUGIN_ID, "Outboard")
        .with_vendor("Outboard")
        .with_url("https://example.invalid/outboard")
        .with_version(env!("CARGO_PKG_VERSION"))
        .with_description("Runs a Python script on the track in a separate process: the audio thread never waits")
        .with_features([AUDIO_EFFECT, UTILITY, STEREO])
}

/// The instrument's descriptor.
pub fn instrument_descriptor() -> PluginDescriptor {
    use clack_plugin::plugin::features::{INSTRUMENT, STEREO, SYNTHESIZER};
    PluginDescriptor::new(INSTRUMENT_ID, "Outboard Instrument")
        .with_vendor("Outboard")
        .with_url("https://example.invalid/outboard")
        .with_version(env!("CARGO_PKG_VERSION"))
        .with_description("A Python script plays the notes, in a separate process: the audio thread never waits")
        .with_features([INSTRUMENT, SYNTHESIZER, STEREO])
}

/// The two plugins of the library.
pub struct OutboardFactory {
    effect: PluginDescriptor,
    instrument: PluginDescriptor,
}

impl PluginFactoryImpl for OutboardFactory {
    fn plugin_count(&self) -> u32 {
        2
    }

    fn plugin_descriptor(&self, index: u32) -> Option<&PluginDescriptor> {
        match index {
            0 => Some(&self.effect),
            1 => Some(&self.instrument),
            _ => None,
        }
    }

    fn create_plugin<'a>(&'a self, host_info: HostInfo<'a>, plugin_id: &CStr) -> Option<PluginInstance<'a>> {
        let instrument = if plugin_id == self.effect.id()? {
            false
        } else if plugin_id == self.instrument.id()? {
            true
        } else {
            return None;
        };
        let descriptor = if instrument { &self.instrument } else { &self.effect };
        Some(PluginInstance::new::<OutboardPlugin>(
            host_info,
            descriptor,
            move |_host| {
                Ok(OutboardShared {
                    values: ParamValues::default(),
                    offline: AtomicBool::new(false),
                    instrument,
                    meters: editor::Meters::default(),
                })
            },
            OutboardMainThread::new,
        ))
    }
}

/// The library's CLAP entry (wrapped by [`guard`]).
pub struct OutboardEntry {
    plugins: PluginFactoryWrapper<OutboardFactory>,
}

impl Entry for OutboardEntry {
    fn new(_bundle_path: Option<&CStr>) -> Result<Self, EntryLoadError> {
        let factory = OutboardFactory { effect: effect_descriptor(), instrument: instrument_descriptor() };
        Ok(OutboardEntry { plugins: PluginFactoryWrapper::new(factory) })
    }

    fn declare_factories<'a>(&'a self, builder: &mut EntryFactories<'a>) {
        builder.register_factory(&self.plugins);
    }
}

impl<'a> OutboardMainThread<'a> {
    fn new(host: HostMainThreadHandle<'a>, shared: &'a OutboardShared) -> Result<OutboardMainThread<'a>, PluginError> {
        // Counts the instance in; starts nothing (a scan must stay fast).
        scripting::enter();
        let (script, note) = initial_script();
        let host_logs = host.get_extension::<HostLog>().is_some();
        // SAFETY: the host outlives this instance, whose drop unregisters
        // the mailbox.
        let mailbox = unsafe { Mailbox::new(host.as_raw(), host_logs) };
        messages::register(&mailbox);
        // SAFETY: as for the mailbox: the drop detaches the handle.
        let editor = unsafe { editor::EditorHandle::new(host.as_raw()) };
        let main_thread = OutboardMainThread {
            shared,
            host,
            script: RefCell::new(script),
            latency: Cell::new((processor::latency_blocks(scripting::BLOCK as u32) * scripting::BLOCK) as u32),
            running: RefCell::new(None),
            mailbox,
            declared: RefCell::new(Declaration::default()),
            declared_seen: Cell::new(0),
            rescan_pending: Cell::new(ParamRescanFlags::empty()),
            active: Cell::new(false),
            editor,
            editor_side: RefCell::new(editor::instance::EditorSide::new()),
            gui: RefCell::new(None),
            stats: RefCell::new(None),
            sample_rate: Cell::new(0.0),
        };
        if let Some(note) = note {
            main_thread.say(LogLevel::Warning, &note);
        }
        Ok(main_thread)
    }
}

/// What both threads see.
pub struct OutboardShared {
    values: ParamValues,
    /// The host renders offline (clap render extension): `process` may wait
    /// for script results instead of playing dry.
    offline: AtomicBool,
    /// Outboard Instrument: no audio in.
    instrument: bool,
    /// The editor's DSP load, measured by `process` while it is watched.
    meters: editor::Meters,
}

impl PluginShared<'_> for OutboardShared {}

/// The main thread's part of an instance.
pub struct OutboardMainThread<'a> {
    shared: &'a OutboardShared,
    host: HostMainThreadHandle<'a>,
    /// The script: its name, source and the file it follows.
    script: RefCell<ScriptSource>,
    /// Samples; set at activation.
    latency: Cell<u32>,
    /// While active: the engine track, what its worker runs, and where
    /// the supervisor puts what the script declares.
    running: RefCell<Option<(u32, scripting::Running, Arc<DeclaredCell>)>>,
    /// Messages for the host's log, from other threads.
    mailbox: Arc<Mailbox>,
    /// What the script declares (from the worker, or a state): the names,
    /// ranges and texts of the script slots.
    declared: RefCell<Declaration>,
    /// The generation of the running track's declaration last taken.
    declared_seen: Cell<u64>,
    /// Rescans to tell the host at the next main-thread callback (ALL only
    /// once inactive).
    rescan_pending: Cell<ParamRescanFlags>,
    active: Cell<bool>,
    /// The editor's model (shared with the window's thread and tests).
    editor: Arc<editor::EditorHandle>,
    /// The main thread's side of the editor: the ring of parameter moves
    /// to the audio thread, the gestures open, the status' last samples.
    editor_side: RefCell<editor::instance::EditorSide>,
    /// The editor's window, between the host's gui `create` and `destroy`.
    gui: RefCell<Option<editor::window::Gui>>,
    /// While active: the track's counters (late results, round trips).
    stats: RefCell<Option<Arc<outboard_engine::realtime::track::TrackStats>>>,
    /// While active: the sample rate.
    sample_rate: Cell<f64>,
}

impl<'a> PluginMainThread<'a, OutboardShared> for OutboardMainThread<'a> {
    /// The host's answer to the mailman's `request_callback`: the mail goes
    /// to the host's log.
    fn on_main_thread(&self) {
        self.deliver_mail();
        self.take_new_declaration();
        self.tell_rescans();
        self.serve_window();
        self.serve_editor();
    }
}

impl Drop for OutboardMainThread<'_> {
    fn drop(&mut self) {
        // A host that forgot the gui's destroy: the window goes first.
        self.close_gui();
        self.deliver_mail();
        editor::unregister(&self.editor);
        messages::unregister(&self.mailbox);
        scripting::leave();
    }
}

/// The audio thread's part of an instance, alive from the host's `activate` to its `deactivate` (both on the
/// main thread); `process` runs on the audio thread and is realtime-safe.
pub struct OutboardAudioProcessor<'a> {
    shared: &'a OutboardShared,
    processor: Processor,
    sample_rate: f64,
}

impl<'a> PluginAudioProcessor<'a, OutboardShared, OutboardMainThread<'a>> for OutboardAudioProcessor<'a> {
    fn activate(
        _host: HostAudioProcessorHandle<'a>,
        main_thread: &OutboardMainThread<'a>,
        shared: &'a OutboardShared,
        config: PluginAudioConfiguration,
    ) -> Result<Self, PluginError> {
        if !(config.sample_rate.is_finite() && config.sample_rate > 0.0) {
            return Err(PluginError::Message("the sample rate is not a positive number"));
        }
        let latency_blocks = processor::latency_blocks(config.max_frames_count);
        let id = scripting::next_track_id();
        let mut cfg = TrackConfig::new(id, format!("outboard {}", main_thread.script.borrow().name));
        cfg.channels = CHANNELS;
        cfg.block = scripting::BLOCK;
        cfg.latency_blocks = latency_blocks;
        cfg.sample_rate = config.sample_rate;
        cfg.events_out = true;
        cfg.instrument = shared.instrument;
        messages::activated();
        main_thread.mailbox.set_track(id);
        let (mut track, port) = Track::new(cfg.clone());
        // What the script's setup sees: the slots' values as they are now.
        for k in 0..params::SLOTS {
            port.params.set(params::wire_index(k), shared.values.slot(k) as f32);
        }
        let declared = port.declared.clone();
        let hints = main_thread.slot_names();
        let registration = match scripting::register(port, &main_thread.script.borrow(), hints) {
            Ok(registered) => {
                if let Some(note) = &registered.note {
                    main_thread.say(LogLevel::Warning, note);
                }
                *main_thread.running.borrow_mut() = Some((id, registered.running, declared));
                main_thread.declared_seen.set(0);
                // A wet start: the first blocks are the script's, not dry.
                // After a wait that timed out (a scripts host that cannot
                // start Python, say), later instances wait briefly until one
                // is ready again: fifty instances must not freeze a DAW's
                // project load for fifty times the wait.
                let full = wet_start_wait();
                let wait = if WET_START_FAILING.load(Ordering::Relaxed) { full.min(FAILING_WAIT) } else { full };
                let ready = wait.is_zero() || track.wait_ready(wait);
                WET_START_FAILING.store(!ready, Ordering::Relaxed);
                if !ready {
                    main_thread.say(
                        LogLevel::Warning,
                        &format!(
                            "outboard: the script was not ready within {} ms of activation; the first blocks play dry",
                            wait.as_millis()
                        ),
                    );
                }
                Some(registered.registration)
            }
            Err(unavailable) => {
                if unavailable.first {
                    main_thread.say(LogLevel::Error, &format!("outboard: {}", unavailable.why));
                }
                // No scripts host: the track is the native path, dry and
                // delayed by the same latency, with no late results to count.
                cfg.scripted = false;
                track = Track::new(cfg).0;
                None
            }
        };
        let mut processor = Processor::new(track, registration, config.max_frames_count);
        processor.set_gestures(main_thread.editor_side.borrow_mut().lend_gestures());
        *main_thread.stats.borrow_mut() = Some(processor.stats().clone());
        main_thread.sample_rate.set(config.sample_rate);
        main_thread.set_latency(processor.latency() as u32);
        main_thread.active.set(true);
        // The script has loaded (or the wait gave up): its parameters, now.
        main_thread.take_new_declaration();
        Ok(OutboardAudioProcessor { shared, processor, sample_rate: config.sample_rate })
    }

    fn process(&mut self, process: Process, audio: Audio, events: Events) -> Result<ProcessStatus, PluginError> {
        if !self.shared.meters.measuring() {
            return self.process_block(process, audio, events);
        }
        // The editor watches: the call's share of its time budget.
        let frames = audio.frames_count();
        let start = outboard_engine::realtime::clock::monotonic_ns();
        let status = self.process_block(process, audio, events);
        let took = outboard_engine::realtime::clock::monotonic_ns().saturating_sub(start);
        self.shared.meters.record(took, frames, self.sample_rate);
        status
    }

    fn deactivate(mut self, main_thread: &OutboardMainThread<'a>) {
        main_thread.take_new_declaration();
        *main_thread.running.borrow_mut() = None;
        *main_thread.stats.borrow_mut() = None;
        main_thread.active.set(false);
        main_thread.editor_side.borrow_mut().give_back_gestures(self.processor.take_gestures());
        drop(self.processor.take_registration());
        main_thread.deliver_mail();
        messages::deactivated();
        // Not from inside deactivate: a VST3 host (JUCE, through
        // clap-wrapper) that deactivates under its own lock deadlocks on the
        // full rescan it passes on. The next main-thread callback does it.
        if !main_thread.rescan_pending.get().is_empty() {
            main_thread.host.request_callback();
        }
    }

    fn reset(&mut self) {
        self.processor.reset();
    }
}

impl OutboardAudioProcessor<'_> {
    /// One host call. Realtime-safe.
    fn process_block(
        &mut self,
        process: Process,
        mut audio: Audio,
        events: Events,
    ) -> Result<ProcessStatus, PluginError> {
        let _ftz = denormals::FlushToZero::enable();
        let offline = self.shared.offline.load(Ordering::Relaxed);
        self.processor.set_offline(offline.then_some(OFFLINE_WAIT));
        let Some(mut pair) = audio.port_pair(0) else {
            processor::apply_all(&self.shared.values, events.input);
            self.processor.flush_gestures(&self.shared.values, events.output);
            return Ok(ProcessStatus::Continue);
        };
        let values = &self.shared.values;
        match pair.channels() {
            Ok(SampleType::F32(channels)) | Ok(SampleType::Both(channels, _)) => {
                self.processor.process(values, channels, events.input, events.output, process.transport)
            }
            Ok(SampleType::F64(channels)) => {
                self.processor.process(values, channels, events.input, events.output, process.transport)
            }
            // Buffers that do not match the ports (e.g. input f64, output
            // f32): nothing can be written; the events still apply. An
            // error here would be logged by clack on every call.
            Err(_) => {
                guard::note(guard::HostQuirk::MissingAudioBuffers);
                processor::apply_all(&self.shared.values, events.input);
                self.processor.flush_gestures(&self.shared.values, events.output);
            }
        }
        // Scripts may sound from silence and results arrive λ late: never
        // ask to be put to sleep.
        Ok(ProcessStatus::Continue)
    }
}

impl OutboardMainThread<'_> {
    /// Records the latency chosen at activation and tells the host if it
    /// changed (allowed only during activation, which is where this runs).
    fn set_latency(&self, samples: u32) {
        if self.latency.replace(samples) != samples
            && let Some(latency) = self.host.get_extension::<HostLatency>()
        {
            latency.changed(&self.host);
        }
    }

    /// Writes a message on the host's log now (main thread), or on stderr
    /// where the host has none (or one that drops it, as VST3's wrapper);
    /// the editor's log keeps it too.
    fn say(&self, level: LogLevel, text: &str) {
        self.mailbox.remember(level, text);
        self.write_log(level, text);
    }

    /// Writes a message on the host's log (or stderr) only.
    fn write_log(&self, level: LogLevel, text: &str) {
        let Some(log) = self.host.get_extension::<HostLog>().filter(|_| self.mailbox.host_logs()) else {
            return messages::to_stderr(&[(level, text.to_string())]);
        };
        let severity = match level {
            LogLevel::Error => LogSeverity::Error,
            LogLevel::Warning => LogSeverity::Warning,
            LogLevel::Info => LogSeverity::Info,
        };
        // CLAP takes a C string: an inner NUL (from a script's text) would cut it.
        let text = std::ffi::CString::new(text.replace('\0', "\\0")).unwrap_or_default();
        log.log(&self.host.shared(), severity, &text);
    }

    /// Delivers the mail other threads left for this instance.
    fn deliver_mail(&self) {
        // Posted mail is in the editor's history already.
        for (level, text) in self.mailbox.take() {
            self.write_log(level, &text);
        }
    }

    fn load_state(&self, bytes: &[u8]) -> Result<(), String> {
        let state = PluginState::decode(bytes).map_err(|e| e.to_string())?;
        let declaration = if state.declared.is_empty() {
            Declaration::default()
        } else {
            let mut declaration = Declaration::from_json(state.declared.as_bytes())
                .map_err(|why| format!("declared parameters: {why}"))?;
            // Saved again as it came: a state round-trips byte for byte.
            declaration.source = state.declared.clone();
            declaration
        };
        // Check every value before changing any: a refused state changes nothing.
        for &(id, value) in &state.params {
            if let Some(k) = params::slot_of(id) {
                let max =
                    declaration.params.iter().find(|p| p.index == params::wire_index(k)).map_or(1.0, |p| p.host_max());
                if !(0.0..=max).contains(&value) {
                    return Err(format!("script slot {} = {value} is out of range", k + 1));
                }
                continue;
            }
            let spec = params::fixed_index(id).map(|i| FIXED[i]).ok_or(format!("unknown parameter id {id}"))?;
            if spec.read_only() || value < spec.min || value > spec.max {
                return Err(format!("{} = {value} is out of range", spec.name));
            }
        }
        let script = ScriptSource {
            name: state.script_name,
            source: state.script,
            path: state.script_path,
            python_env: state.python_env,
        };
        // The state's declaration, as saved: the slots' names before the
        // script runs. A worker's newer one replaces it, mapped by name.
        let before = self.declared.replace(declaration);
        for k in 0..params::SLOTS {
            self.shared.values.set_range(k, self.slot_param(k).as_ref());
            self.shared.values.put_slot(k, f64::NAN);
        }
        for &(id, value) in &state.params {
            self.shared.values.set(id, value);
        }
        self.queue_rescan(&before);
        if let Some((track, running, _)) = self.running.borrow_mut().as_mut() {
            let (now, note) = scripting::retarget(*track, &script, running)?;
            if let Some(note) = note {
                self.say(LogLevel::Warning, &note);
            }
            *running = now;
        } else if let Some(note) = script.missing_file_note() {
            self.say(LogLevel::Warning, &note);
        }
        *self.script.borrow_mut() = script;
        self.tell_rescans();
        Ok(())
    }

    /// The names the worker should keep on the script slots (by wire
    /// index; index 0, the engine's wet level, is not the script's).
    fn slot_names(&self) -> Vec<String> {
        let mut names = vec![String::new(); params::SLOTS + 1];
        for p in &self.declared.borrow().params {
            if let Some(name) = names.get_mut(p.index) {
                name.clone_from(&p.name);
            }
        }
        names
    }

    /// The declared parameter on slot k, if any.
    fn slot_param(&self, k: usize) -> Option<outboard_engine::wire::declared::DeclaredParam> {
        self.declared.borrow().params.iter().find(|p| p.index == params::wire_index(k)).cloned()
    }

    /// Takes the running script's latest declaration, if it is new: each
    /// slot gets its parameter's range, and its value by name (an edit that
    /// keeps a name keeps the value, in its units; a new name starts at its
    /// default; a slot no longer used is cleared). Main thread.
    fn take_new_declaration(&self) {
        let cell = match self.running.borrow().as_ref() {
            Some((_, _, cell)) => cell.clone(),
            None => return,
        };
        let generation = cell.generation();
        if generation == self.declared_seen.replace(generation) {
            return;
        }
        let Some(new) = cell.get() else { return };
        if *new == *self.declared.borrow() {
            return;
        }
        let old = self.declared.replace((*new).clone());
        let values = &self.shared.values;
        for k in 0..params::SLOTS {
            let index = params::wire_index(k);
            let now = self.slot_param(k);
            let before = old.params.iter().find(|p| p.index == index);
            let value = values.slot(k);
            let kept = match (&now, before) {
                (Some(now), Some(before)) if now.name == before.name && !value.is_nan() => {
                    Some(carry_value(before, now, value))
                }
                _ => None,
            };
            values.set_range(k, now.as_ref());
            // A new name stays unset: the script sees its declared default
            // exactly, the host its default value.
            values.put_slot(k, kept.unwrap_or(f64::NAN));
        }
        let names: Vec<&str> = new.params.iter().map(|p| p.name.as_str()).collect();
        if !names.is_empty() || !old.params.is_empty() {
            self.say(LogLevel::Info, &format!("outboard: the script's parameters: {}", names.join(", ")));
        }
        self.queue_rescan(&old);
        self.tell_rescans();
    }

    /// Works out what the host must rescan after the declaration was
    /// `before`: names and values always; everything (ranges, defaults,
    /// steps) when those changed.
    fn queue_rescan(&self, before: &Declaration) {
        let mut flags = ParamRescanFlags::INFO | ParamRescanFlags::TEXT | ParamRescanFlags::VALUES;
        let shape = |d: &Declaration, k: usize| {
            d.params
                .iter()
                .find(|p| p.index == params::wire_index(k))
                .map(|p| (p.host_max().to_bits(), p.default.to_bits(), p.stepped(), params::is_enum(p)))
        };
        let now = self.declared.borrow();
        if (0..params::SLOTS).any(|k| shape(before, k) != shape(&now, k)) {
            flags |= ParamRescanFlags::ALL;
        }
        self.rescan_pending.set(self.rescan_pending.get() | flags);
    }

    /// Tells the host what to rescan: all of it while inactive; while
    /// active what CLAP allows (info, text, values), with a restart request
    /// for the rest, told once deactivated.
    fn tell_rescans(&self) {
        let pending = self.rescan_pending.get();
        if pending.is_empty() {
            return;
        }
        let Some(host_params) = self.host.get_extension::<HostParams>() else {
            self.rescan_pending.set(ParamRescanFlags::empty());
            return;
        };
        if !self.active.get() {
            let flags = if pending.contains(ParamRescanFlags::ALL) { ParamRescanFlags::ALL } else { pending };
            self.rescan_pending.set(ParamRescanFlags::empty());
            host_params.rescan(&self.host, flags);
            return;
        }
        host_params.rescan(&self.host, pending & !ParamRescanFlags::ALL);
        if pending.contains(ParamRescanFlags::ALL) {
            self.rescan_pending.set(ParamRescanFlags::ALL);
            self.host.request_restart();
        } else {
            self.rescan_pending.set(ParamRescanFlags::empty());
        }
    }

    /// Loads a script file as the instance's script (a preset): the
    /// instance follows the file from now on.
    fn load_script_file(&self, path: &std::path::Path) -> Result<(), String> {
        let source = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        if source.len() > state::MAX_SCRIPT_BYTES {
            return Err(format!("{} is longer than a script may be", path.display()));
        }
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let script = ScriptSource {
            name,
            source,
            path: path.to_string_lossy().into_owned(),
            python_env: self.script.borrow().python_env.clone(),
        };
        if let Some((track, running, _)) = self.running.borrow_mut().as_mut() {
            let (now, note) = scripting::retarget(*track, &script, running)?;
            if let Some(note) = note {
                self.say(LogLevel::Warning, &note);
            }
            *running = now;
        }
        *self.script.borrow_mut() = script;
        Ok(())
    }
}

/// A value a kept parameter had under its old declaration, under its new
/// one: the same value in its units (a choice by its name).
fn carry_value(
    before: &outboard_engine::wire::declared::DeclaredParam,
    now: &outboard_engine::wire::declared::DeclaredParam,
    value: f64,
) -> f64 {
    use outboard_engine::wire::declared::Range;
    match (&before.range, &now.range) {
        (Range::Choices(old), Range::Choices(new)) => {
            let name = &old[before.clamp(value) as usize];
            new.iter().position(|c| c == name).map_or(now.default, |i| i as f64)
        }
        (Range::Choices(_), _) | (_, Range::Choices(_)) => now.default,
        _ => now.from_units(before.to_units(value)),
    }
}

impl PluginPresetLoadImpl for OutboardMainThread<'_> {
    /// A preset is a script file (the preset-discovery factory lists them).
    fn load_from_location(&self, location: Location, _load_key: Option<&CStr>) -> Result<(), PluginError> {
        let path = match location {
            Location::File { path } => presets::preset_file(
                clap_sys::factory::preset_discovery::CLAP_PRESET_DISCOVERY_LOCATION_FILE,
                Some(path),
            ),
            Location::Plugin => Err("a preset of this plugin is a script file".to_string()),
        };
        path.and_then(|path| self.load_script_file(&path)).map_err(|why| {
            self.say(LogLevel::Error, &format!("outboard: preset refused: {why}"));
            PluginError::Message("preset refused (see the log)")
        })
    }
}

impl PluginNotePortsImpl for OutboardMainThread<'_> {
    fn count(&self, _is_input: bool) -> u32 {
        1
    }

    fn get(&self, index: u32, is_input: bool, writer: &mut NotePortInfoWriter) {
        if index == 0 {
            writer.set(&NotePortInfo {
                id: ClapId::new(if is_input { 0 } else { 1 }),
                name: if is_input { b"notes in" } else { b"notes out" },
                supported_dialects: NoteDialects::CLAP | NoteDialects::MIDI,
                preferred_dialect: Some(NoteDialect::Clap),
            });
        }
    }
}

/// How long an offline render waits for one script result before it gives
/// up on the script (and plays dry until results are on time again).
const OFFLINE_WAIT: Duration = Duration::from_secs(5);

impl PluginRenderImpl for OutboardMainThread<'_> {
    /// Realtime rendering never waits on a script; offline rendering does,
    /// so a bounce contains the script's output however slow it is.
    fn has_hard_realtime_requirement(&self) -> bool {
        false
    }

    fn set(&self, mode: RenderMode) -> Result<(), PluginError> {
        self.shared.offline.store(mode == RenderMode::Offline, Ordering::Relaxed);
        Ok(())
    }
}

impl PluginAudioPortsImpl for OutboardMainThread<'_> {
    fn count(&self, is_input: bool) -> u32 {
        if is_input && self.shared.instrument { 0 } else { 1 }
    }

    fn get(&self, index: u32, is_input: bool, writer: &mut AudioPortInfoWriter) {
        if index < PluginAudioPortsImpl::count(self, is_input) {
            writer.set(&AudioPortInfo {
                id: ClapId::new(0),
                name: b"main",
                channel_count: CHANNELS as u32,
                flags: AudioPortFlags::IS_MAIN | AudioPortFlags::SUPPORTS_64BITS,
                port_type: Some(AudioPortType::STEREO),
                in_place_pair: (!self.shared.instrument).then_some(ClapId::new(0)),
            });
        }
    }
}

impl PluginLatencyImpl for OutboardMainThread<'_> {
    fn get(&self) -> u32 {
        self.latency.get()
    }
}

impl PluginMainThreadParams for OutboardMainThread<'_> {
    fn count(&self) -> u32 {
        params::COUNT as u32
    }

    fn get_info(&self, param_index: u32, info: &mut ParamInfoWriter) {
        let index = param_index as usize;
        if let Some(spec) = FIXED.get(index) {
            let mut flags = if spec.read_only() { ParamInfoFlags::IS_READONLY } else { ParamInfoFlags::IS_AUTOMATABLE };
            if spec.stepped {
                flags |= ParamInfoFlags::IS_STEPPED;
            }
            if spec.id == params::BYPASS {
                flags |= ParamInfoFlags::IS_BYPASS;
            }
            info.set(&ParamInfo {
                id: ClapId::new(spec.id),
                flags,
                cookie: Default::default(),
                name: spec.name.as_bytes(),
                module: spec.module.as_bytes(),
                min_value: spec.min,
                max_value: spec.max,
                default_value: spec.default,
            });
            return;
        }
        let Some(k) = index.checked_sub(FIXED.len()).filter(|&k| k < params::SLOTS) else { return };
        let unused = format!("Script {}", k + 1);
        let param = self.slot_param(k);
        let mut flags = ParamInfoFlags::IS_AUTOMATABLE;
        let (name, max, default) = match &param {
            Some(p) => {
                if p.stepped() {
                    flags |= ParamInfoFlags::IS_STEPPED;
                }
                if params::is_enum(p) {
                    flags |= ParamInfoFlags::IS_ENUM;
                }
                (p.name.as_str(), p.host_max(), p.default)
            }
            None => {
                flags |= ParamInfoFlags::IS_HIDDEN;
                (unused.as_str(), 1.0, 0.0)
            }
        };
        info.set(&ParamInfo {
            id: ClapId::new(params::slot_id(k)),
            flags,
            cookie: Default::default(),
            name: name.as_bytes(),
            module: b"Script",
            min_value: 0.0,
            max_value: max,
            default_value: default,
        });
    }

    fn get_value(&self, param_id: ClapId) -> Option<f64> {
        let id = param_id.get();
        let value = self.shared.values.get(id)?;
        // A slot not set yet: its default, as the script sees it.
        Some(match params::slot_of(id) {
            Some(k) if value.is_nan() => self.slot_param(k).map_or(0.0, |p| p.default),
            _ => value,
        })
    }

    fn value_to_text(&self, param_id: ClapId, value: f64, writer: &mut ParamDisplayWriter) -> std::fmt::Result {
        let id = param_id.get();
        if let Some(k) = params::slot_of(id) {
            return params::format_slot(self.slot_param(k).as_ref(), value, writer);
        }
        let spec = params::fixed_index(id).map(|i| FIXED[i]).ok_or(std::fmt::Error)?;
        spec.format(spec.sanitize(value).ok_or(std::fmt::Error)?, writer)
    }

    fn text_to_value(&self, param_id: ClapId, text: &CStr) -> Option<f64> {
        let id = param_id.get();
        let text = text.to_str().ok()?;
        if let Some(k) = params::slot_of(id) {
            return params::parse_slot(self.slot_param(k).as_ref(), text);
        }
        let spec = params::fixed_index(id).map(|i| FIXED[i])?;
        spec.parse(text)
    }

    fn flush(&self, input_parameter_changes: &InputEvents, output_parameter_changes: &mut OutputEvents) {
        processor::apply_all(&self.shared.values, input_parameter_changes);
        // Inactive: the editor's moves wait in the ring the main thread holds.
        self.editor_side.borrow_mut().flush_gestures(&self.shared.values, output_parameter_changes);
    }
}

impl PluginAudioProcessorParams for OutboardAudioProcessor<'_> {
    fn flush(&mut self, input_parameter_changes: &InputEvents, output_parameter_changes: &mut OutputEvents) {
        processor::apply_all(&self.shared.values, input_parameter_changes);
        self.processor.flush_gestures(&self.shared.values, output_parameter_changes);
    }
}

impl PluginStateImpl for OutboardMainThread<'_> {
    fn save(&self, output: &mut OutputStream) -> Result<(), PluginError> {
        // A followed file's latest text goes with the project.
        let latest = self.script.borrow().read_followed();
        if let Some(latest) = latest {
            self.script.borrow_mut().source = latest;
        }
        let script = self.script.borrow();
        let state = PluginState {
            params: self.shared.values.saved(),
            script_name: script.name.clone(),
            script: script.source.clone(),
            script_path: script.path.clone(),
            python_env: script.python_env.clone(),
            declared: self.declared.borrow().source.clone(),
        };
        output.write_all(&state.encode())?;
        Ok(())
    }

    fn load(&self, input: &mut InputStream) -> Result<(), PluginError> {
        // Read at most one byte more than any valid state: a host stream
        // that never ends cannot make us read forever.
        let mut bytes = Vec::new();
        input.take(MAX_STATE_BYTES as u64 + 1).read_to_end(&mut bytes)?;
        self.load_state(&bytes).map_err(|why| {
            self.say(LogLevel::Error, &format!("outboard: state refused: {why}"));
            PluginError::Message("state refused (see the log)")
        })
    }
}

pub use guard::clap_entry;
