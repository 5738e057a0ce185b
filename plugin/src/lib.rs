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
//! # Thread model (as clack types it)
//!
//! - [`OutboardShared`] (`Send + Sync`): parameter values in atomics, read
//!   and written by both threads.
//! - [`OutboardMainThread`] (main thread only, `!Sync`): the script, the
//!   latency, the host handle, the instance's mailbox; loading state,
//!   activation (with its bounded wait for a wet start) and writing to the
//!   host's log happen here.
//! - [`OutboardAudioProcessor`] (`Send`, audio thread): the engine track and
//!   scratch buffers, all allocated in `activate` (main thread) and freed in
//!   `deactivate` (main thread).
//!
//! # Parameters
//!
//! Mix (0-100 %), DSP load (partial-sum terms per 64-frame block: the
//! stand-in DSP cost of the track), Bypass (keeps the latency), P1-P4 (free
//! knobs the script reads as `ctx.params["p1"]`...), and the read-only Late
//! results counter.

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
use clack_extensions::latency::{HostLatency, PluginLatency, PluginLatencyImpl};
use clack_extensions::log::{HostLog, LogSeverity};
use clack_extensions::params::{
    HostParams, ParamDisplayWriter, ParamInfo, ParamInfoFlags, ParamInfoWriter, ParamRescanFlags,
    PluginAudioProcessorParams, PluginMainThreadParams, PluginParams,
};
use clack_extensions::render::{PluginRender, PluginRenderImpl, RenderMode};
use clack_extensions::state::{PluginState as ClapState, PluginStateImpl};
use clack_plugin::prelude::*;
use clack_plugin::stream::{InputStream, OutputStream};
use outboard_engine::track::{Track, TrackConfig};

pub mod denormals;
pub mod guard;
pub mod messages;
pub mod params;
pub mod processor;
pub mod scripting;
pub mod state;

use messages::Mailbox;
use outboard_engine::script_log::LogLevel;
use params::{PARAMS, ParamValues};
use processor::{CHANNELS, Processor};
use scripting::ScriptSource;
use state::{MAX_STATE_BYTES, PluginState};

pub const PLUGIN_ID: &str = "dev.outboard.scripted-track";

/// What a new instance runs until a state brings a script: the input,
/// unchanged (delayed by the latency, as everything is).
pub const DEFAULT_SCRIPT: &str = r#""""Outboard's default script: passes the audio through unchanged.

Load your own through the plugin's state (a preset, or `outboard-host --script FILE`).
Hooks: setup(ctx), process(block, ctx) with block a float32 numpy array
(channels, frames) to edit in place, tick(ctx) for events.
"""


def process(block, ctx):
    pass
"#;
pub const DEFAULT_SCRIPT_NAME: &str = "passthrough.py";

/// The environment variable naming the script new instances start with
/// (a DAW has no other way to hand this GUI-less plugin a file).
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

pub struct OutboardPlugin;

impl Plugin for OutboardPlugin {
    type AudioProcessor<'a> = OutboardAudioProcessor<'a>;
    type Shared<'a> = OutboardShared;
    type MainThread<'a> = OutboardMainThread<'a>;

    fn declare_extensions(builder: &mut PluginExtensions<Self>, _shared: Option<&OutboardShared>) {
        builder
            .register::<PluginAudioPorts>()
            .register::<PluginParams>()
            .register::<ClapState>()
            .register::<PluginLatency>()
            .register::<PluginRender>();
    }
}

impl DefaultPluginFactory for OutboardPlugin {
    fn get_descriptor() -> PluginDescriptor {
        use clack_plugin::plugin::features::{AUDIO_EFFECT, STEREO, UTILITY};
        PluginDescriptor::new(PLUGIN_ID, "Outboard")
            .with_vendor("Outboard")
            .with_url("https://example.invalid/outboard")
            .with_version(env!("CARGO_PKG_VERSION"))
            .with_description("Runs a Python script on the track in a separate process: the audio thread never waits")
            .with_features([AUDIO_EFFECT, UTILITY, STEREO])
    }

    fn new_shared(_host: HostSharedHandle<'_>) -> Result<OutboardShared, PluginError> {
        Ok(OutboardShared { values: ParamValues::default(), offline: AtomicBool::new(false) })
    }

    fn new_main_thread<'a>(
        host: HostMainThreadHandle<'a>,
        shared: &'a OutboardShared,
    ) -> Result<OutboardMainThread<'a>, PluginError> {
        // Counts the instance in; starts nothing (a scan must stay fast).
        scripting::enter();
        let (script, note) = initial_script();
        let host_logs = host.get_extension::<HostLog>().is_some();
        // SAFETY: the host outlives this instance, whose drop unregisters
        // the mailbox.
        let mailbox = unsafe { Mailbox::new(host.as_raw(), host_logs) };
        messages::register(&mailbox);
        let main_thread = OutboardMainThread {
            shared,
            host,
            script: RefCell::new(script),
            latency: Cell::new((processor::latency_blocks(scripting::BLOCK as u32) * scripting::BLOCK) as u32),
            running: RefCell::new(None),
            mailbox,
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
    /// While active: the engine track and what its worker runs.
    running: RefCell<Option<(u32, scripting::Running)>>,
    /// Messages for the host's log, from other threads.
    mailbox: Arc<Mailbox>,
}

impl<'a> PluginMainThread<'a, OutboardShared> for OutboardMainThread<'a> {
    /// The host's answer to the mailman's `request_callback`: the mail goes
    /// to the host's log.
    fn on_main_thread(&self) {
        self.deliver_mail();
    }
}

impl Drop for OutboardMainThread<'_> {
    fn drop(&mut self) {
        self.deliver_mail();
        messages::unregister(&self.mailbox);
        scripting::leave();
    }
}

pub struct OutboardAudioProcessor<'a> {
    shared: &'a OutboardShared,
    processor: Processor,
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
        messages::activated();
        main_thread.mailbox.set_track(id);
        let (mut track, port) = Track::new(cfg.clone());
        let registration = match scripting::register(port, &main_thread.script.borrow()) {
            Ok(registered) => {
                if let Some(note) = &registered.note {
                    main_thread.say(LogLevel::Warning, note);
                }
                *main_thread.running.borrow_mut() = Some((id, registered.running));
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
        let processor = Processor::new(track, registration, config.max_frames_count);
        main_thread.set_latency(processor.latency() as u32);
        Ok(OutboardAudioProcessor { shared, processor })
    }

    fn process(&mut self, _process: Process, mut audio: Audio, events: Events) -> Result<ProcessStatus, PluginError> {
        let _ftz = denormals::FlushToZero::enable();
        let offline = self.shared.offline.load(Ordering::Relaxed);
        self.processor.set_offline(offline.then_some(OFFLINE_WAIT));
        let Some(mut pair) = audio.port_pair(0) else {
            processor::apply_all(&self.shared.values, events.input);
            return Ok(ProcessStatus::Continue);
        };
        match pair.channels() {
            Ok(SampleType::F32(channels)) | Ok(SampleType::Both(channels, _)) => {
                self.processor.process(&self.shared.values, channels, events.input)
            }
            Ok(SampleType::F64(channels)) => self.processor.process(&self.shared.values, channels, events.input),
            // Buffers that do not match the ports (e.g. input f64, output
            // f32): nothing can be written; the events still apply. An
            // error here would be logged by clack on every call.
            Err(_) => {
                guard::note(guard::HostQuirk::MissingAudioBuffers);
                processor::apply_all(&self.shared.values, events.input);
            }
        }
        // Scripts may sound from silence and results arrive λ late: never
        // ask to be put to sleep.
        Ok(ProcessStatus::Continue)
    }

    fn deactivate(mut self, main_thread: &OutboardMainThread<'a>) {
        *main_thread.running.borrow_mut() = None;
        drop(self.processor.take_registration());
        main_thread.deliver_mail();
        messages::deactivated();
    }

    fn reset(&mut self) {
        self.processor.reset();
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
    /// where the host has none (or one that drops it, as VST3's wrapper).
    fn say(&self, level: LogLevel, text: &str) {
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
        for (level, text) in self.mailbox.take() {
            self.say(level, &text);
        }
    }

    fn load_state(&self, bytes: &[u8]) -> Result<(), String> {
        let state = PluginState::decode(bytes).map_err(|e| e.to_string())?;
        // Check every value before changing any: a refused state changes nothing.
        for &(id, value) in &state.params {
            let spec = params::index_of(id).map(|i| PARAMS[i]).ok_or(format!("unknown parameter id {id}"))?;
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
        if let Some((track, running)) = self.running.borrow_mut().as_mut() {
            let (now, note) = scripting::retarget(*track, &script, running)?;
            if let Some(note) = note {
                self.say(LogLevel::Warning, &note);
            }
            *running = now;
        } else if let Some(note) = script.missing_file_note() {
            self.say(LogLevel::Warning, &note);
        }
        for &(id, value) in &state.params {
            self.shared.values.set(id, value);
        }
        *self.script.borrow_mut() = script;
        if let Some(params) = self.host.get_extension::<HostParams>() {
            params.rescan(&self.host, ParamRescanFlags::VALUES);
        }
        Ok(())
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
    fn count(&self, _is_input: bool) -> u32 {
        1
    }

    fn get(&self, index: u32, _is_input: bool, writer: &mut AudioPortInfoWriter) {
        if index == 0 {
            writer.set(&AudioPortInfo {
                id: ClapId::new(0),
                name: b"main",
                channel_count: CHANNELS as u32,
                flags: AudioPortFlags::IS_MAIN | AudioPortFlags::SUPPORTS_64BITS,
                port_type: Some(AudioPortType::STEREO),
                in_place_pair: Some(ClapId::new(0)),
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
        PARAMS.len() as u32
    }

    fn get_info(&self, param_index: u32, info: &mut ParamInfoWriter) {
        let Some(spec) = PARAMS.get(param_index as usize) else { return };
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
    }

    fn get_value(&self, param_id: ClapId) -> Option<f64> {
        self.shared.values.get(param_id.get())
    }

    fn value_to_text(&self, param_id: ClapId, value: f64, writer: &mut ParamDisplayWriter) -> std::fmt::Result {
        let spec = params::index_of(param_id.get()).map(|i| PARAMS[i]).ok_or(std::fmt::Error)?;
        spec.format(spec.sanitize(value).ok_or(std::fmt::Error)?, writer)
    }

    fn text_to_value(&self, param_id: ClapId, text: &CStr) -> Option<f64> {
        let spec = params::index_of(param_id.get()).map(|i| PARAMS[i])?;
        spec.parse(text.to_str().ok()?)
    }

    fn flush(&self, input_parameter_changes: &InputEvents, _output_parameter_changes: &mut OutputEvents) {
        processor::apply_all(&self.shared.values, input_parameter_changes);
    }
}

impl PluginAudioProcessorParams for OutboardAudioProcessor<'_> {
    fn flush(&mut self, input_parameter_changes: &InputEvents, _output_parameter_changes: &mut OutputEvents) {
        processor::apply_all(&self.shared.values, input_parameter_changes);
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
