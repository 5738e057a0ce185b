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
//!
//! # Thread model (as clack types it)
//!
//! - [`OutboardShared`] (`Send + Sync`): parameter values in atomics, read
//!   and written by both threads.
//! - [`OutboardMainThread`] (main thread only, `!Sync`): the script, the
//!   latency, the host handle; loading state and activation happen here.
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
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clack_extensions::audio_ports::{
    AudioPortFlags, AudioPortInfo, AudioPortInfoWriter, AudioPortType, PluginAudioPorts, PluginAudioPortsImpl,
};
use clack_extensions::latency::{HostLatency, PluginLatency, PluginLatencyImpl};
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
pub mod params;
pub mod processor;
pub mod scripting;
pub mod state;

use params::{PARAMS, ParamValues};
use processor::{CHANNELS, Processor};
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
/// names a readable file, else [`DEFAULT_SCRIPT`].
fn initial_script() -> (String, String) {
    let passthrough = (DEFAULT_SCRIPT_NAME.to_string(), DEFAULT_SCRIPT.to_string());
    let Some(path) = std::env::var_os(DEFAULT_SCRIPT_ENV).map(PathBuf::from) else { return passthrough };
    match std::fs::read_to_string(&path) {
        Ok(source) if source.len() <= state::MAX_SCRIPT_BYTES => {
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            (name, source)
        }
        Ok(_) => {
            eprintln!(
                "outboard.clap: {} is longer than a script may be; starting with the pass-through",
                path.display()
            );
            passthrough
        }
        Err(e) => {
            eprintln!("outboard.clap: cannot read {DEFAULT_SCRIPT_ENV}={}: {e}", path.display());
            passthrough
        }
    }
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
        let (script_name, script) = initial_script();
        Ok(OutboardMainThread {
            shared,
            host,
            script_name: RefCell::new(script_name),
            script: RefCell::new(script),
            latency: Cell::new((processor::latency_blocks(scripting::BLOCK as u32) * scripting::BLOCK) as u32),
            active_script: RefCell::new(None),
        })
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
    script_name: RefCell<String>,
    script: RefCell<String>,
    /// Samples; set at activation.
    latency: Cell<u32>,
    /// The file the worker runs while active: rewritten when a state loads.
    active_script: RefCell<Option<PathBuf>>,
}

impl<'a> PluginMainThread<'a, OutboardShared> for OutboardMainThread<'a> {}

impl Drop for OutboardMainThread<'_> {
    fn drop(&mut self) {
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
        let mut cfg =
            TrackConfig::new(scripting::next_track_id(), format!("outboard {}", main_thread.script_name.borrow()));
        cfg.channels = CHANNELS;
        cfg.block = scripting::BLOCK;
        cfg.latency_blocks = latency_blocks;
        cfg.sample_rate = config.sample_rate;
        let (track, port) = Track::new(cfg.clone());
        let registration =
            scripting::register(port, &main_thread.script_name.borrow(), &main_thread.script.borrow()).ok();
        let track = match registration {
            Some(_) => track,
            None => {
                // No scripts host: the track is the native path, dry and
                // delayed by the same latency, with no late results to count.
                cfg.scripted = false;
                Track::new(cfg).0
            }
        };
        *main_thread.active_script.borrow_mut() = registration.as_ref().map(|r| r.script_path.clone());
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
            Err(_) => return Err(PluginError::Message("the host's audio buffers do not match the ports")),
        }
        // Scripts may sound from silence and results arrive λ late: never
        // ask to be put to sleep.
        Ok(ProcessStatus::Continue)
    }

    fn deactivate(mut self, main_thread: &OutboardMainThread<'a>) {
        *main_thread.active_script.borrow_mut() = None;
        drop(self.processor.take_registration());
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

    fn load_state(&self, bytes: &[u8]) -> Result<(), String> {
        let state = PluginState::decode(bytes).map_err(|e| e.to_string())?;
        // Check every value before changing any: a refused state changes nothing.
        for &(id, value) in &state.params {
            let spec = params::index_of(id).map(|i| PARAMS[i]).ok_or(format!("unknown parameter id {id}"))?;
            if spec.read_only() || value < spec.min || value > spec.max {
                return Err(format!("{} = {value} is out of range", spec.name));
            }
        }
        for &(id, value) in &state.params {
            self.shared.values.set(id, value);
        }
        if let Some(path) = self.active_script.borrow().as_ref() {
            scripting::write_script(path, &state.script).map_err(|e| format!("cannot write the script: {e}"))?;
        }
        *self.script_name.borrow_mut() = state.script_name;
        *self.script.borrow_mut() = state.script;
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
        let state = PluginState {
            params: self.shared.values.saved(),
            script_name: self.script_name.borrow().clone(),
            script: self.script.borrow().clone(),
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
            eprintln!("outboard.clap: state refused: {why}");
            PluginError::Message("state refused (see stderr)")
        })
    }
}

clack_export_entry!(SinglePluginEntry<OutboardPlugin>);
