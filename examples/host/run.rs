//! The run loop: N instances of one plugin, each processing the test signal
//! on its own thread, paced in real time or as fast as possible, while the
//! main thread serves the plugins' main-thread requests.
//!
//! Threads: the calling thread is every instance's CLAP main thread (it
//! creates, activates, serves `on_main_thread`, deactivates and destroys).
//! Each instance's processor runs on an audio thread of its own, at
//! SCHED_FIFO where permitted when paced (a one-line warning where not).
//! Offline threads stay at normal priority: a SCHED_FIFO thread that never
//! sleeps would starve the rest of the machine.
//!
//! Pacing: every thread sleeps to absolute deadlines on CLOCK_MONOTONIC from
//! one common start; block k is due k + 1 periods after it. A late block is
//! not skipped: the next one starts at once, as a device that queues would.
//!
//! Every instance is called every block, whatever status it returns (a
//! plugin that asks to sleep still gets the continuous test signal), and
//! requests to restart are counted, not acted on.
//!
//! Events: each call carries the notes (`--notes`) and parameter changes
//! (`--param`, `--automate`) that fall in its frames, at their offsets, and
//! a transport; what the plugin sends back is recorded with its absolute
//! sample (see [`crate::events`]).
//!
//! The editor (`--gui`, `--gui-cycles`; [`crate::editor`]): once every
//! instance plays, the main thread opens instance 0's editor and serves the
//! main loop while it is open; the instances play on until the editor
//! session has ended, however long that takes past `seconds` (the report's
//! `blocks` say how long they played).
//!
//! Nothing in the per-block loop allocates or locks: buffers, event lists,
//! the capture of instance 0's output, the record of its output events and
//! the timing histogram are all made before the thread starts (the notes
//! and parameter changes are sorted lists the threads only read).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use outboard_engine::measurement::histogram::Histogram;
use outboard_engine::realtime::clock::{monotonic_ns, sleep_until_ns};
use outboard_engine::realtime::graph::{lock_memory, make_thread_realtime, warn_no_realtime};
use outboard_plugin::state::PluginState as OutboardState;

use crate::editor::{GuiConfig, X11Host};
use crate::events::{MAX_RECORDED_EVENTS, NoteDialect, NoteEvent, OutputEvent, ParamEvent, ParamSet, load_notes};
use crate::handlers::CountersSnapshot;
use crate::plugin_instance::{ActivateConfig, Bundle, Instance, ParamInfo};
use crate::processor::{Processor, TimeSignature, Transport};
use crate::quirks::{self, Quirk, Quirks};
use crate::report::{InstanceReport, ParamReport, Report};
use crate::signal;
use outboard_engine::shm::memory::{present_filled, present_vec};

/// SCHED_FIFO priority of the audio threads (as the engine's tracks).
pub const PRIORITY: u8 = 80;

/// The transport every block carries (unless a quirk replaces it): playing,
/// 4/4 at this tempo, from zero (`--tempo`, `--time-signature` and
/// `--stopped` change it).
pub const TEMPO: f64 = 120.0;

/// Seconds of every instance's output kept, after the latency, to measure
/// `dry_blocks_at_start` (see [`crate::report`]).
pub const DRY_WINDOW_SECONDS: f64 = 2.0;

/// How long a run waits, after activation, for a parameter `--param` names
/// to appear (a script's declared parameters come when it has loaded).
pub const PARAM_WAIT: Duration = Duration::from_secs(5);

/// `dry_blocks_at_start`: output within this of the delayed input is dry,
/// and input within this of zero is silent.
pub const DRY_TOLERANCE: f32 = 1e-7;

/// Everything a run needs; the CLI builds one.
#[derive(Clone, Debug, PartialEq)]
pub struct RunConfig {
    /// The `.clap` file to load.
    pub plugin: PathBuf,
    /// None: the first plugin in the factory.
    pub plugin_id: Option<String>,
    /// How many instances to run, each on its own audio thread (at least 1).
    pub tracks: usize,
    /// Frames per process call (at least 1).
    pub block: u32,
    /// Sample rate, Hz.
    pub rate: u32,
    /// The run's length, seconds of audio, rounded up to whole blocks (above 0).
    pub seconds: f64,
    /// A Python script to put in every instance's state before activation.
    pub script: Option<PathBuf>,
    /// The Python environment to name in every instance's state.
    pub python_env: Option<PathBuf>,
    /// Process as fast as possible on normal-priority threads, without deadlines, instead of paced in real time.
    pub offline: bool,
    /// Where to write the report as JSON, if anywhere.
    pub json: Option<PathBuf>,
    /// Instance 0's output (the first two channels of its first output
    /// port), f32 stereo.
    pub output_wav: Option<PathBuf>,
    /// The input to feed instead of the test signal: a mono or stereo WAV
    /// at the run's rate (16-, 24-, 32-bit integer or 32-bit float); silence
    /// follows where it is shorter than the run.
    pub input_wav: Option<PathBuf>,
    /// The input as fed (the test signal or `input_wav`), f32 stereo.
    pub write_input: Option<PathBuf>,
    /// A parameter to automate (name, or id in decimal): see [`Automation`].
    pub automate: Option<String>,
    /// Host behaviour seen in the field to reproduce ([`crate::quirks`]).
    pub quirks: Quirks,
    /// Notes and MIDI to send: a notes file or a built-in pattern
    /// (`pattern:chord`, `pattern:scale`); see [`crate::events`].
    pub notes: Option<String>,
    /// How notes are sent: CLAP note events or MIDI 1.0 messages.
    pub note_dialect: NoteDialect,
    /// Parameter changes to send (`--param NAME=VALUE@SAMPLE`), resolved
    /// against each instance's parameters after activation.
    pub params: Vec<ParamSet>,
    /// The transport: tempo (BPM), time signature, and whether it plays
    /// (stopped, its positions stay at zero).
    pub tempo: f64,
    /// The transport's time signature.
    pub time_signature: TimeSignature,
    /// A stopped transport: not playing, its positions stay at zero.
    pub stopped: bool,
    /// mlockall before the audio starts (the binary does; tests need not).
    pub lock_memory: bool,
    /// Print the plugins' log messages.
    pub echo_log: bool,
    /// Open instance 0's editor while the instances play (`--gui`,
    /// `--gui-cycles`): see [`crate::editor`].
    pub gui: Option<GuiConfig>,
}

impl RunConfig {
    /// A run of `plugin`'s first plugin: one instance, 64-frame blocks at 48 kHz for 1 s, paced, with the test signal,
    /// no quirks, notes or editor, memory not locked and log messages printed.
    pub fn new(plugin: impl Into<PathBuf>) -> RunConfig {
        RunConfig {
            plugin: plugin.into(),
            plugin_id: None,
            tracks: 1,
            block: 64,
            rate: 48_000,
            seconds: 1.0,
            script: None,
            python_env: None,
            offline: false,
            json: None,
            output_wav: None,
            input_wav: None,
            write_input: None,
            automate: None,
            quirks: Quirks::NONE,
            notes: None,
            note_dialect: NoteDialect::Clap,
            params: Vec::new(),
            tempo: TEMPO,
            time_signature: TimeSignature::default(),
            stopped: false,
            lock_memory: false,
            echo_log: true,
            gui: None,
        }
    }

    /// Blocks each instance processes: enough to cover `seconds`.
    pub fn total_blocks(&self) -> u64 {
        (self.seconds * f64::from(self.rate) / f64::from(self.block)).ceil().max(0.0) as u64
    }

    /// Frames each instance processes: [`RunConfig::total_blocks`] whole blocks.
    pub fn total_frames(&self) -> usize {
        self.total_blocks() as usize * self.block as usize
    }

    fn validate(&self) -> Result<(), String> {
        let seconds_ok = self.seconds.is_finite() && self.seconds > 0.0;
        if self.tracks == 0 || self.block == 0 || self.rate == 0 || !seconds_ok {
            return Err("need --tracks, --block, --rate and --seconds above zero".into());
        }
        if self.quirks.contains(Quirk::ResetWhileOffline) && !self.offline {
            return Err("--host-quirks reset-while-offline needs --offline".into());
        }
        if self.quirks.contains(Quirk::UnsortedEvents) && self.automate.is_none() {
            return Err("--host-quirks unsorted-events needs --automate PARAM (events to hand over unsorted)".into());
        }
        if self.quirks.contains(Quirk::HugeBlock) && self.block.checked_mul(quirks::HUGE_BLOCK_FACTOR).is_none() {
            return Err("--host-quirks huge-block: --block is too large".into());
        }
        if self.gui.is_some() && self.offline {
            return Err("--gui and --gui-cycles open the editor while the instances play in real time: not with \
                        --offline"
                .into());
        }
        if let Some(crate::editor::GuiConfig { mode: crate::editor::GuiMode::Open { seconds }, .. }) = &self.gui
            && !(seconds.is_finite() && *seconds >= 0.0)
        {
            return Err(format!("--gui {seconds}: need a number of seconds, 0 or more"));
        }
        if !(self.tempo.is_finite() && self.tempo > 0.0) {
            return Err(format!("--tempo {}: need a tempo above zero", self.tempo));
        }
        let frames = self.total_frames() as u64;
        if let Some(p) = self.params.iter().find(|p| p.sample >= frames) {
            return Err(format!(
                "--param {}={}@{}: the run has {frames} frames (0 to {})",
                p.name,
                p.value,
                p.sample,
                frames.saturating_sub(1)
            ));
        }
        Ok(())
    }
}

/// `--automate PARAM`: a triangle from the parameter's minimum to its
/// maximum and back, once a second (minimum at frame 0, maximum half a second
/// in), sent as four parameter events per block (at 0, ¼, ½ and ¾ of it;
/// fewer in blocks under four frames), each the value at its own frame;
/// stepped parameters get whole values. Deterministic, so two runs send the
/// same values at the same frames whatever their quirks.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Automation {
    /// The CLAP id of the parameter automated.
    pub id: u32,
    /// The parameter's minimum plain value: the triangle's bottom.
    pub min: f64,
    /// The parameter's maximum plain value: the triangle's top.
    pub max: f64,
    /// Whether the parameter is stepped: values are rounded to whole numbers.
    pub stepped: bool,
}

impl Automation {
    /// Finds the parameter by name (case, spaces and underscores ignored)
    /// or by id; read-only parameters are refused.
    pub fn find(params: &[ParamInfo], which: &str) -> Result<Automation, String> {
        let key = |s: &str| s.chars().filter(|c| c.is_alphanumeric()).collect::<String>().to_lowercase();
        let param = params
            .iter()
            .find(|p| key(&p.name) == key(which))
            .or_else(|| which.trim().parse::<u32>().ok().and_then(|id| params.iter().find(|p| p.id == id)))
            .ok_or_else(|| {
                let names: Vec<String> = params.iter().map(|p| format!("{:?} (id {})", p.name, p.id)).collect();
                format!("--automate {which:?}: no such parameter; the plugin has {}", names.join(", "))
            })?;
        if param.is_readonly() {
            return Err(format!("--automate {which:?}: {:?} is read-only", param.name));
        }
        let stepped = param.flags & clack_extensions::params::ParamInfoFlags::IS_STEPPED.bits() != 0;
        Ok(Automation { id: param.id, min: param.min, max: param.max, stepped })
    }

    /// The value at `frame`.
    pub fn value(&self, frame: u64, rate: u32) -> f64 {
        let rate = u64::from(rate.max(1));
        let phase = (frame % rate) as f64 / rate as f64;
        let triangle = 1.0 - (2.0 * phase - 1.0).abs();
        let v = self.min + (self.max - self.min) * triangle;
        if self.stepped { v.round().clamp(self.min, self.max) } else { v }
    }

    /// The event offsets in a block of `block` frames.
    pub fn offsets(block: u32) -> impl Iterator<Item = u32> {
        let mut last = None;
        (0..4u32).filter_map(move |i| {
            let at = (u64::from(i) * u64::from(block) / 4) as u32;
            (last != Some(at)).then(|| {
                last = Some(at);
                at
            })
        })
    }
}

/// What the instances are fed: the test signal, or a WAV file read into
/// memory before the run (planar stereo, as long as the run).
pub enum Input {
    /// The built-in test signal ([`crate::signal`]).
    Signal,
    /// A WAV file (`--input-wav`).
    Wav {
        /// The file read.
        path: PathBuf,
        /// Its samples, left and right (a mono file's in both), as long as the run (silence past the file's end).
        channels: [Vec<f32>; 2],
    },
}

impl Input {
    /// Frames `start..start + out.len()` of input channel `channel` (channel
    /// c plays stereo channel c mod 2). Realtime-safe.
    pub fn fill(&self, channel: usize, start: u64, rate: u32, out: &mut [f32]) {
        match self {
            Input::Signal => signal::fill(channel, start, rate, out),
            Input::Wav { channels, .. } => {
                let source = &channels[channel % 2];
                for (i, s) in out.iter_mut().enumerate() {
                    *s = source.get(start as usize + i).copied().unwrap_or(0.0);
                }
            }
        }
    }

    /// One sample of input channel `channel` at `frame` (as [`Input::fill`] gives it).
    pub fn sample(&self, channel: usize, frame: u64, rate: u32) -> f32 {
        let mut s = [0.0];
        self.fill(channel, frame, rate, &mut s);
        s[0]
    }

    /// Both channels, the first `frames` frames.
    pub fn stereo(&self, frames: usize, rate: u32) -> [Vec<f32>; 2] {
        std::array::from_fn(|c| {
            let mut v = vec![0.0; frames];
            self.fill(c, 0, rate, &mut v);
            v
        })
    }

    /// The largest magnitude over both channels in the first `frames` frames.
    pub fn peak(&self, frames: usize, rate: u32) -> f32 {
        match self {
            Input::Signal => signal::peak(frames, rate),
            Input::Wav { channels, .. } => {
                channels.iter().flat_map(|c| c.iter().take(frames)).fold(0.0f32, |p, s| p.max(s.abs()))
            }
        }
    }

    /// The WAV file's path; `None` for the test signal.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Input::Signal => None,
            Input::Wav { path, .. } => Some(path),
        }
    }
}

/// Reads `path` for `--input-wav`: mono (fed to both channels) or stereo,
/// 16-, 24- or 32-bit integer or 32-bit float, at `rate`; the first `frames`
/// frames, silence after the file's end.
pub fn read_input_wav(path: &Path, rate: u32, frames: usize) -> Result<[Vec<f32>; 2], String> {
    let shown = path.display();
    let mut reader = hound::WavReader::open(path).map_err(|e| format!("--input-wav {shown}: {e}"))?;
    let spec = reader.spec();
    if spec.sample_rate != rate {
        return Err(format!(
            "--input-wav {shown}: the file's sample rate is {} Hz but the run's is {rate} Hz (--rate); resample \
             the file or run at --rate {}",
            spec.sample_rate, spec.sample_rate
        ));
    }
    let channels = usize::from(spec.channels);
    if !(1..=2).contains(&channels) {
        return Err(format!("--input-wav {shown}: {channels} channels; only mono and stereo files are read"));
    }
    let wanted = frames * channels;
    let err = |e: hound::Error| format!("--input-wav {shown}: {e}");
    let interleaved: Vec<f32> = match (spec.sample_format, spec.bits_per_sample) {
        (hound::SampleFormat::Int, bits @ (16 | 24 | 32)) => {
            let scale = 1.0 / (1u64 << (bits - 1)) as f64;
            reader
                .samples::<i32>()
                .take(wanted)
                .map(|s| s.map(|s| (f64::from(s) * scale) as f32))
                .collect::<Result<_, _>>()
                .map_err(err)?
        }
        (hound::SampleFormat::Float, 32) => {
            reader.samples::<f32>().take(wanted).collect::<Result<_, _>>().map_err(err)?
        }
        (format, bits) => {
            let kind = if format == hound::SampleFormat::Float { "float" } else { "integer" };
            return Err(format!(
                "--input-wav {shown}: {bits}-bit {kind} samples; only 16-, 24- and 32-bit integer and 32-bit float \
                 WAV files are read"
            ));
        }
    };
    let mut out = [vec![0.0f32; frames], vec![0.0f32; frames]];
    for (i, frame) in interleaved.chunks_exact(channels).enumerate() {
        out[0][i] = frame[0];
        out[1][i] = frame[channels - 1];
    }
    Ok(out)
}

/// Puts `script` (named `name`) into the instance's Outboard state: saves the
/// state, replaces the script, loads it back. Fails if the plugin's state is
/// not an Outboard state. The script is not a file: it runs as given.
pub fn apply_script(instance: &mut Instance, name: &str, script: &str) -> Result<(), String> {
    apply_script_from(instance, name, script, "")
}

/// Puts the script file at `path` into the instance's Outboard state, its
/// text and its (absolute) path, as `--script` does: the plugin then
/// follows the file (edits are heard while it runs, modules beside it
/// import).
pub fn apply_script_file(instance: &mut Instance, path: &Path) -> Result<(), String> {
    let path = std::path::absolute(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let source = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    apply_script_from(instance, &name, &source, &path.to_string_lossy())
}

fn apply_script_from(instance: &mut Instance, name: &str, script: &str, path: &str) -> Result<(), String> {
    edit_outboard_state(instance, "--script", |state| {
        state.script = script.to_string();
        state.script_name = name.to_string();
        state.script_path = path.to_string();
    })
}

/// Names the Python environment `env` in the instance's Outboard state, as
/// `--python-env` does: its script imports that environment's packages.
pub fn apply_python_env(instance: &mut Instance, env: &Path) -> Result<(), String> {
    let env = std::path::absolute(env).map_err(|e| format!("{}: {e}", env.display()))?;
    edit_outboard_state(instance, "--python-env", |state| state.python_env = env.to_string_lossy().into_owned())
}

/// Saves the instance's Outboard state, changes it, loads it back.
fn edit_outboard_state(
    instance: &mut Instance,
    option: &str,
    change: impl FnOnce(&mut OutboardState),
) -> Result<(), String> {
    let bytes = instance.save_state().map_err(|e| format!("{option}: saving the plugin's state: {e}"))?;
    let mut state = OutboardState::decode(&bytes).map_err(|e| {
        format!(
            "{option} needs outboard.clap: plugin {:?} saved a state that is not Outboard's: {e}",
            instance.plugin_id()
        )
    })?;
    change(&mut state);
    instance.load_state(&state.encode()).map_err(|e| format!("{option}: the plugin refused the new state: {e}"))
}

/// The hook for late results (see [`crate::report`]): the value of a
/// read-only parameter named "late results", if the plugin has one.
pub fn late_results(instance: &mut Instance) -> Option<u64> {
    let param = instance.params().into_iter().find(|p| {
        p.is_readonly()
            && p.name.chars().filter(|c| c.is_alphanumeric()).collect::<String>().eq_ignore_ascii_case("lateresults")
    })?;
    let value = instance.param_value(param.id)?;
    (value.is_finite() && value >= 0.0).then_some(value.round() as u64)
}

/// What one audio thread takes.
struct Lane {
    processor: Processor,
    /// Instance 0's output, interleaved stereo, preallocated for the run.
    capture: Option<Vec<f32>>,
    /// The first frames of this instance's output (latency + the dry
    /// window), interleaved stereo, preallocated.
    head: Vec<f32>,
    histogram: Histogram,
    automation: Option<Automation>,
    /// `events-past-end`: the parameter and its value to re-send when no
    /// automation sets one.
    resend: Option<(u32, f64)>,
    /// `--param` changes for this instance, by sample, and the next to send.
    params: Vec<ParamEvent>,
    next_param: usize,
    /// The next of [`Pacing::notes`] to send, and how many were queued.
    next_note: usize,
    notes_sent: u64,
    /// What the plugin sent (capacity for [`MAX_RECORDED_EVENTS`]), and
    /// how many more it sent.
    output_events: Vec<OutputEvent>,
    output_events_dropped: u64,
}

impl Lane {
    /// Records the events the plugin pushed in the call that started at
    /// absolute sample `block_start`. Realtime-safe: pushes within the
    /// preallocated capacity, counts the rest.
    fn record_output_events(&mut self, block_start: u64) {
        for event in self.processor.output_events().iter() {
            if self.output_events.len() < MAX_RECORDED_EVENTS {
                self.output_events.push(OutputEvent::from_event(block_start, event));
            } else {
                self.output_events_dropped += 1;
            }
        }
    }
}

/// What one audio thread gives back.
struct LaneResult {
    lane: Lane,
    start_error: Option<String>,
    blocks: u64,
    process_calls: u64,
    resets: u64,
    deadline_misses: u64,
    process_errors: u64,
    output_peak: f32,
    nan_samples: u64,
    realtime: bool,
}

struct Pacing<'a> {
    /// process() calls under way now, and the most ever at once: proof that
    /// the instances really ran in parallel.
    in_process: AtomicUsize,
    max_concurrent: AtomicUsize,
    offline: bool,
    block: u32,
    rate: u32,
    blocks: u64,
    latency: u64,
    start_ns: u64,
    quirks: Quirks,
    input: &'a Input,
    /// `--notes`, by sample, and how to send them.
    notes: &'a [NoteEvent],
    dialect: NoteDialect,
    /// While set, the audio threads play on past `blocks` (the editor
    /// session is not over yet).
    hold: AtomicBool,
}

impl Pacing<'_> {
    /// When block k must be done: k + 1 periods after the start, in whole
    /// nanoseconds from the start so that no rounding accumulates.
    fn deadline(&self, k: u64) -> u64 {
        let ns = u128::from(k + 1) * u128::from(self.block) * 1_000_000_000 / u128::from(self.rate);
        self.start_ns + ns as u64
    }

    /// One timed process call.
    fn timed_process(&self, result: &mut LaneResult, frames: u32) -> u64 {
        let began = monotonic_ns();
        let now = self.in_process.fetch_add(1, Ordering::Relaxed) + 1;
        self.max_concurrent.fetch_max(now, Ordering::Relaxed);
        let status = result.lane.processor.process(frames);
        self.in_process.fetch_sub(1, Ordering::Relaxed);
        let ended = monotonic_ns();
        result.lane.histogram.record(ended - began);
        result.process_calls += 1;
        if status.is_err() {
            result.process_errors += 1;
        }
        ended
    }
}

/// One audio thread: start processing, then call after call until every
/// block is processed. Without quirks a call is one block; `huge-block`
/// makes some calls several blocks, `zero-frames` adds empty calls.
fn audio_thread(lane: Lane, pacing: &Pacing) -> LaneResult {
    let realtime = !pacing.offline && make_thread_realtime(PRIORITY);
    if !pacing.offline && !realtime {
        warn_no_realtime();
    }
    let mut result = LaneResult {
        lane,
        start_error: None,
        blocks: 0,
        process_calls: 0,
        resets: 0,
        deadline_misses: 0,
        process_errors: 0,
        output_peak: 0.0,
        nan_samples: 0,
        realtime,
    };
    if let Err(e) = result.lane.processor.start_processing() {
        result.start_error = Some(format!("start_processing failed: {e}"));
        return result;
    }
    let block = pacing.block as usize;
    let quirks = pacing.quirks;
    let huge = if quirks.contains(Quirk::HugeBlock) { quirks::HUGE_BLOCK_FACTOR as u64 } else { 1 };
    // The last allocation of this thread: one call's worth of input scratch.
    let mut input = vec![0.0f32; block * huge as usize];
    let in_channels = result.lane.processor.input_ports().first().copied().unwrap_or(0);
    let out_ports: Vec<usize> = result.lane.processor.output_ports().to_vec();
    if !pacing.offline {
        sleep_until_ns(pacing.start_ns);
    }
    let mut k = 0u64;
    // Calls that carry audio (the quirks count these).
    let mut calls = 0u64;
    while k < pacing.blocks || pacing.hold.load(Ordering::Relaxed) {
        let span = if huge > 1 && calls % quirks::HUGE_BLOCK_EVERY == quirks::HUGE_BLOCK_EVERY - 1 {
            huge.min(pacing.blocks.saturating_sub(k).max(1))
        } else {
            1
        };
        let n = span as usize * block;
        let first_frame = k * u64::from(pacing.block);
        if quirks.contains(Quirk::ResetWhileOffline) && calls % quirks::RESET_EVERY == quirks::RESET_EVERY - 1 {
            result.lane.processor.reset();
            result.resets += 1;
        }
        if quirks.contains(Quirk::ZeroFrames) {
            pacing.timed_process(&mut result, 0);
            result.lane.record_output_events(first_frame);
        }
        let lane = &mut result.lane;
        // The input goes to the first input port; other ports (side chains)
        // stay silent.
        for c in 0..in_channels {
            pacing.input.fill(c, first_frame, pacing.rate, &mut input[..n]);
            lane.processor.write_input(0, c, &input[..n]);
        }
        let mut last_value = lane.resend;
        if let Some(a) = lane.automation {
            for j in 0..span as u32 {
                for at in Automation::offsets(pacing.block) {
                    let offset = j * pacing.block + at;
                    let value = a.value(first_frame + u64::from(offset), pacing.rate);
                    lane.processor.push_param_value(offset, a.id, value);
                    last_value = Some((a.id, value));
                }
            }
        }
        // Notes and --param changes that fall in this call, at their frames.
        let end = first_frame + n as u64;
        while let Some(note) = pacing.notes.get(lane.next_note).filter(|e| e.sample < end) {
            if note.sample >= first_frame
                && note.push(&mut lane.processor, (note.sample - first_frame) as u32, pacing.dialect)
            {
                lane.notes_sent += 1;
            }
            lane.next_note += 1;
        }
        while let Some(&change) = lane.params.get(lane.next_param).filter(|e| e.sample < end) {
            lane.processor.push_param_value((change.sample - first_frame) as u32, change.id, change.value);
            // events-past-end re-sends the value the parameter has now.
            for resent in [&mut last_value, &mut lane.resend] {
                if resent.is_some_and(|(id, _)| id == change.id) {
                    *resent = Some((change.id, change.value));
                }
            }
            lane.next_param += 1;
        }
        if quirks.contains(Quirk::EventsPastEnd)
            && let Some((id, value)) = last_value
        {
            lane.processor.push_param_value(quirks::past_end_time(calls, n as u32), id, value);
        }
        let ended = pacing.timed_process(&mut result, n as u32);
        result.lane.record_output_events(first_frame);
        calls += 1;
        result.blocks += span;
        if !pacing.offline && ended > pacing.deadline(k + span - 1) {
            result.deadline_misses += 1;
        }
        let lane = &mut result.lane;
        // Measure: every output channel of every port.
        for (port, &channels) in out_ports.iter().enumerate() {
            for c in 0..channels {
                let Some(out) = lane.processor.output_f32(port, c) else { continue };
                for (i, s) in out[..n].iter().enumerate() {
                    if !s.is_finite() {
                        result.nan_samples += 1;
                    } else if first_frame + i as u64 >= pacing.latency {
                        result.output_peak = result.output_peak.max(s.abs());
                    }
                }
            }
        }
        let left = lane.processor.output_f32(0, 0);
        let right = lane.processor.output_f32(0, 1).or(left);
        if let (Some(left), Some(right)) = (left, right) {
            let at = first_frame as usize;
            // (Blocks played past `blocks`, while the editor holds the run,
            // are not captured.)
            if let Some(capture) = lane.capture.as_mut().filter(|c| 2 * (at + n) <= c.len()) {
                for (i, frame) in capture[2 * at..2 * (at + n)].chunks_exact_mut(2).enumerate() {
                    frame[0] = left[i];
                    frame[1] = right[i];
                }
            }
            let kept = lane.head.len() / 2;
            if at < kept {
                let m = n.min(kept - at);
                for (i, frame) in lane.head[2 * at..2 * (at + m)].chunks_exact_mut(2).enumerate() {
                    frame[0] = left[i];
                    frame[1] = right[i];
                }
            }
        }
        k += span;
        if !pacing.offline {
            sleep_until_ns(pacing.deadline(k - 1));
        }
    }
    result.lane.processor.stop_processing();
    result
}

/// The number of leading blocks of `block` frames, from frame `latency`,
/// whose output (`head`, interleaved stereo) equals the input delayed by
/// `latency` within [`DRY_TOLERANCE`]; blocks whose input is silent neither
/// count nor end the run of dry blocks. See [`crate::report`].
pub fn dry_blocks_at_start(head: &[f32], latency: usize, block: usize, input: &Input, rate: u32) -> u64 {
    let kept = head.len() / 2;
    let mut count = 0;
    let mut at = latency;
    while block > 0 && at + block <= kept {
        let mut silent = true;
        for t in at..at + block {
            for c in 0..2 {
                let x = input.sample(c, (t - latency) as u64, rate);
                silent &= x.abs() <= DRY_TOLERANCE;
                if (head[2 * t + c] - x).abs() > DRY_TOLERANCE {
                    return count;
                }
            }
        }
        if !silent {
            count += 1;
        }
        at += block;
    }
    count
}

/// Before the editor opens: what is mapped now (the instances' buffers, the
/// plugins' engines) stays locked, what the editor maps from here on is
/// not, as in a DAW, whose GUI memory is not locked. Locked, the pages a GUI
/// toolkit frees could not be given back (the kernel refuses to discard
/// locked pages, so glibc's trimming cannot), and every opening would grow
/// the process for good: so no `MCL_FUTURE`, and the reserves glibc keeps
/// for its per-thread arenas (inaccessible mappings it makes accessible as
/// an arena grows) are unlocked too.
fn lock_current_memory_only() {
    use rustix::mm::{MlockAllFlags, mlockall, munlock};
    if mlockall(MlockAllFlags::CURRENT).is_err() {
        return;
    }
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else { return };
    for line in maps.lines() {
        // "start-end perms offset dev inode [path]": anonymous (no path),
        // private and inaccessible.
        let mut fields = line.split_whitespace();
        let (Some(range), Some("---p")) = (fields.next(), fields.next()) else { continue };
        if fields.nth(3).is_some() {
            continue;
        }
        let Some((start, end)) = range.split_once('-') else { continue };
        let (Ok(start), Ok(end)) = (usize::from_str_radix(start, 16), usize::from_str_radix(end, 16)) else {
            continue;
        };
        // SAFETY: unlocking changes no contents, and the range is one of
        // this process's own mappings, as the kernel just listed it.
        let _ = unsafe { munlock(start as *mut std::ffi::c_void, end - start) };
    }
}

/// Whether locking all current and future memory cannot make later
/// allocations fail: root (CAP_IPC_LOCK ignores the limit) or no limit. With
/// a limit, mlockall may succeed while the process is small and then every
/// allocation past the limit fails, aborting the run.
fn memory_lock_is_safe() -> bool {
    use rustix::process::{Resource, geteuid, getrlimit};
    geteuid().is_root() || getrlimit(Resource::Memlock).current.is_none()
}

fn write_wav(path: &Path, rate: u32, interleaved: &[f32]) -> Result<(), String> {
    let spec = hound::WavSpec {
        channels: 2,
        sample_rate: rate,
        bits_per_sample: 32,
        sample_format: hound::SampleFormat::Float,
    };
    let err = |e: hound::Error| format!("{}: {e}", path.display());
    let mut writer = hound::WavWriter::create(path, spec).map_err(err)?;
    for &s in interleaved {
        writer.write_sample(s).map_err(err)?;
    }
    writer.finalize().map_err(err)
}

/// Checks that the plugin's first note input port (the one the notes go to)
/// takes `dialect`.
fn check_note_input(instance: &mut Instance, dialect: NoteDialect) -> Result<(), String> {
    let ports = instance.note_ports(true);
    let Some(port) = ports.first() else {
        return Err(format!("--notes: plugin {:?} has no note input port", instance.plugin_id()));
    };
    let supported = match dialect {
        NoteDialect::Clap => port.supports_clap(),
        NoteDialect::Midi => port.supports_midi(),
    };
    if !supported {
        return Err(format!(
            "--note-dialect {}: the plugin's note input port {:?} takes {}",
            dialect.name(),
            port.name,
            match port.dialect_names() {
                names if names.is_empty() => "no dialect".to_string(),
                names => names.join(", "),
            }
        ));
    }
    Ok(())
}

/// Calls `on_main_thread` of every instance that asked, once (and their
/// due timers and ready descriptors: [`Instance::service_main_thread`]).
pub(crate) fn service_all(instances: &mut [Instance]) -> bool {
    let mut called = false;
    for instance in instances {
        called |= instance.service_main_thread();
    }
    called
}

/// Services the instances' main-thread requests until none came for
/// `quiet`, or for at most `limit`: a message a plugin logs at the end of a
/// run (delivered from `on_main_thread`, perhaps after a round trip through
/// its own threads) is not lost.
fn drain_main_thread(instances: &mut [Instance], quiet: Duration, limit: Duration) {
    let began = Instant::now();
    let mut last_call = began;
    loop {
        if service_all(instances) {
            last_call = Instant::now();
        }
        let now = Instant::now();
        if now.duration_since(last_call) >= quiet || now.duration_since(began) >= limit {
            return;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// How long the drains wait for one more request, and at most.
const DRAIN_QUIET: Duration = Duration::from_millis(20);
const DRAIN_LIMIT: Duration = Duration::from_millis(500);

/// Runs the plugin as configured; writes the WAVs and the JSON report if
/// asked, and returns the report.
pub fn run(config: &RunConfig) -> Result<Report, String> {
    config.validate()?;
    let frames = config.total_frames();
    // Read the input first: a wrong file is refused before anything starts.
    let input = match &config.input_wav {
        Some(path) => Input::Wav { path: path.clone(), channels: read_input_wav(path, config.rate, frames)? },
        None => Input::Signal,
    };
    // The notes too (a file with a bad line is refused now).
    let notes = match &config.notes {
        Some(spec) => load_notes(spec, config.tempo, config.rate, frames as u64)?,
        None => Vec::new(),
    };
    // The editor's display, before anything else starts: no display, no run.
    let mut x11 = config.gui.as_ref().map(|_| X11Host::connect()).transpose()?;
    let memory_locked = config.lock_memory && memory_lock_is_safe() && lock_memory();
    let panics_before = crate::panics::hook_panics();
    let bundle = Bundle::load(&config.plugin)?;
    let plugin_id = match &config.plugin_id {
        Some(id) => id.clone(),
        None => bundle
            .first_plugin_id()
            .ok_or_else(|| format!("{}: the factory has no plugins", config.plugin.display()))?,
    };
    if let Some(path) = &config.script {
        std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    }

    // Main thread: create, configure and activate every instance, serving
    // what they ask of the main thread all along.
    let mut instances: Vec<Instance> = Vec::with_capacity(config.tracks);
    let mut automation = None;
    let mut resend = Vec::with_capacity(config.tracks);
    for i in 0..config.tracks {
        let mut instance = bundle.instantiate_with(&plugin_id, config.echo_log)?;
        instance.set_number(i);
        if let Some(path) = &config.script {
            apply_script_file(&mut instance, path)?;
        }
        if let Some(env) = &config.python_env {
            apply_python_env(&mut instance, env)?;
        }
        if config.notes.is_some() {
            check_note_input(&mut instance, config.note_dialect)?;
        }
        if config.offline {
            // A plugin with the render extension may then take longer than
            // real time (Outboard waits for its scripts instead of playing dry).
            instance.set_render_offline(true);
        }
        let params = instance.params();
        if let Some(which) = &config.automate {
            automation = Some(Automation::find(&params, which)?);
        }
        // events-past-end without automation re-sends the first writable
        // parameter's value, as it is now (the run changes nothing else).
        let writable = params.iter().find(|p| !p.is_readonly());
        let value = writable.and_then(|p| Some((p.id, instance.param_value(p.id)?)));
        if config.quirks.contains(Quirk::EventsPastEnd) && automation.is_none() && value.is_none() {
            return Err("--host-quirks events-past-end: the plugin has no writable parameter to re-send".into());
        }
        resend.push(value);
        instances.push(instance);
        service_all(&mut instances);
    }
    let mut processors = Vec::with_capacity(config.tracks);
    let mut activate_ms = 0.0f64;
    let buffer_frames =
        if config.quirks.contains(Quirk::HugeBlock) { config.block * quirks::HUGE_BLOCK_FACTOR } else { 0 };
    for i in 0..instances.len() {
        let activate = ActivateConfig { buffer_frames, ..ActivateConfig::new(f64::from(config.rate), config.block) };
        let began = Instant::now();
        let mut processor = instances[i].activate(activate)?;
        activate_ms = activate_ms.max(began.elapsed().as_secs_f64() * 1e3);
        processor.set_transport(Some(Transport { tempo: config.tempo, playing: !config.stopped }));
        processor.set_time_signature(config.time_signature);
        processor.set_quirks(config.quirks);
        processors.push(processor);
        service_all(&mut instances);
    }
    // Declared parameters appear as the plugin's script loads (during
    // activation, or on a main-thread callback since): --param names are
    // looked up now, for each instance, waiting a while (serving the
    // main thread) for names not there yet.
    let mut param_events = Vec::with_capacity(instances.len());
    let mut params_sent = Vec::new();
    for i in 0..instances.len() {
        let give_up = Instant::now() + PARAM_WAIT;
        let mut params = instances[i].params();
        while !config.params.iter().all(|set| set.find(&params).is_some()) && Instant::now() < give_up {
            service_all(&mut instances);
            std::thread::sleep(Duration::from_millis(10));
            params = instances[i].params();
        }
        let mut events = Vec::with_capacity(config.params.len());
        for set in &config.params {
            let event = set.resolve(&mut instances[i], &params)?;
            if i == 0 {
                let name = params.iter().find(|p| p.id == event.id).map(|p| p.name.clone()).unwrap_or_default();
                params_sent.push((event, name));
            }
            events.push(event);
        }
        // Stable: changes at the same sample keep their order.
        events.sort_by_key(|e| e.sample);
        param_events.push(events);
    }
    // CLAP lets the host ask for the latency once active.
    let latency = instances[0].latency();
    // An instrument (no audio input) is fed nothing.
    let fed = processors[0].input_ports().iter().sum::<usize>() > 0;
    let kept = frames.min(latency as usize + (DRY_WINDOW_SECONDS * f64::from(config.rate)).ceil() as usize);
    let lanes: Vec<Lane> = processors
        .into_iter()
        .zip(resend)
        .zip(param_events)
        .enumerate()
        .map(|(i, ((processor, resend), params))| Lane {
            processor,
            // The audio thread writes these: present before it starts.
            capture: (i == 0 && config.output_wav.is_some()).then(|| present_filled(0.0f32, frames * 2)),
            head: present_filled(0.0f32, kept * 2),
            histogram: Histogram::new(),
            automation,
            resend,
            params,
            next_param: 0,
            next_note: 0,
            notes_sent: 0,
            output_events: present_vec(MAX_RECORDED_EVENTS),
            output_events_dropped: 0,
        })
        .collect();
    service_all(&mut instances);

    let pacing = Pacing {
        in_process: AtomicUsize::new(0),
        max_concurrent: AtomicUsize::new(0),
        offline: config.offline,
        block: config.block,
        rate: config.rate,
        blocks: config.total_blocks(),
        latency: u64::from(latency),
        // A moment for every thread to start before the first deadline.
        start_ns: monotonic_ns() + 20_000_000,
        quirks: config.quirks,
        input: &input,
        notes: &notes,
        dialect: config.note_dialect,
        hold: AtomicBool::new(config.gui.is_some()),
    };
    let mut gui = None;
    let results: Result<Vec<LaneResult>, String> = std::thread::scope(|scope| {
        let handles: Vec<_> = lanes
            .into_iter()
            .enumerate()
            .map(|(i, lane)| {
                let pacing = &pacing;
                std::thread::Builder::new()
                    .name(format!("outboard-host-{i}"))
                    .spawn_scoped(scope, move || audio_thread(lane, pacing))
                    .expect("spawning an audio thread")
            })
            .collect();
        // The editor, while they play; then let them end.
        if let (Some(gui_config), Some(x11)) = (&config.gui, x11.as_mut()) {
            // Every thread has started its first block.
            while monotonic_ns() < pacing.start_ns {
                service_all(&mut instances);
                std::thread::sleep(Duration::from_millis(2));
            }
            if memory_locked {
                lock_current_memory_only();
            }
            gui = Some(crate::editor::run_session(gui_config, &mut instances, x11));
            pacing.hold.store(false, Ordering::Relaxed);
        }
        // Serve the plugins' main-thread requests while they play.
        while !handles.iter().all(|h| h.is_finished()) {
            service_all(&mut instances);
            std::thread::sleep(Duration::from_millis(2));
        }
        handles.into_iter().map(|h| h.join().map_err(|_| "an audio thread panicked".to_string())).collect()
    });
    // (On a panic the instances are destroyed as they drop: clack deactivates
    // an instance whose processor is gone.)
    let results = results?;

    // Main thread again: what the plugins asked for after the last block,
    // then read what is left to read while active, then deactivate and
    // destroy.
    drain_main_thread(&mut instances, DRAIN_QUIET, DRAIN_LIMIT);
    // What the plugins started while active (Outboard: its script workers).
    let children = crate::procfs::children();
    let child_processes = children.len();
    let mut children_rss_kib: Vec<u64> = children.iter().map(|&(pid, _)| crate::procfs::rss_kib(pid)).collect();
    children_rss_kib.sort_unstable();
    let mut per_instance = Vec::with_capacity(results.len());
    let process_us = Histogram::new();
    let mut capture = None;
    let mut start_errors = Vec::new();
    let mut params = Vec::new();
    for (i, mut result) in results.into_iter().enumerate() {
        if let Some(e) = result.start_error {
            start_errors.push(format!("instance {i}: {e}"));
        }
        process_us.merge(&result.lane.histogram);
        let dry_blocks =
            dry_blocks_at_start(&result.lane.head, latency as usize, config.block as usize, &input, config.rate);
        per_instance.push(InstanceReport {
            blocks: result.blocks,
            process_calls: result.process_calls,
            resets: result.resets,
            deadline_misses: result.deadline_misses,
            process_errors: result.process_errors,
            output_peak: result.output_peak,
            nan_samples: result.nan_samples,
            late_results: late_results(&mut instances[i]),
            realtime: result.realtime,
            process_us: result.lane.histogram.percentiles(),
            dry_blocks_at_start: dry_blocks,
            notes_sent: result.lane.notes_sent,
            input_events_dropped: result.lane.processor.dropped_events(),
            output_events: std::mem::take(&mut result.lane.output_events),
            output_events_dropped: result.lane.output_events_dropped,
            output_events_refused: result.lane.processor.refused_output_events(),
            ..Default::default()
        });
        if i == 0 {
            params = ParamReport::collect(&mut instances[0]);
        }
        if result.lane.capture.is_some() {
            capture = result.lane.capture;
        }
        instances[i].deactivate(result.lane.processor);
        service_all(&mut instances);
    }
    drain_main_thread(&mut instances, DRAIN_QUIET, DRAIN_LIMIT);
    let mut host_callbacks = CountersSnapshot::default();
    for (instance, report) in instances.iter().zip(&mut per_instance) {
        let counters = instance.counters_snapshot();
        report.logs = counters.logs;
        report.error_logs = counters.error_logs;
        host_callbacks.add(&counters);
    }
    drop(instances);
    if !start_errors.is_empty() {
        return Err(start_errors.join("; "));
    }
    let gui = gui.transpose()?;
    let panics = crate::panics::hook_panics() - panics_before + host_callbacks.reported_panics;

    if let (Some(path), Some(capture)) = (&config.output_wav, &capture) {
        write_wav(path, config.rate, capture)?;
    }
    if let Some(path) = &config.write_input {
        let [left, right] = input.stereo(frames, config.rate);
        let interleaved: Vec<f32> = left.iter().zip(&right).flat_map(|(l, r)| [*l, *r]).collect();
        write_wav(path, config.rate, &interleaved)?;
    }
    let report = Report {
        plugin: config.plugin.clone(),
        plugin_id,
        instances: config.tracks,
        block: config.block,
        rate: config.rate,
        seconds: config.seconds,
        offline: config.offline,
        script: config.script.clone(),
        input: input.path().map(Path::to_path_buf),
        automate: config.automate.clone(),
        host_quirks: config.quirks,
        memory_locked,
        latency_samples: latency,
        input_peak: if fed { input.peak(frames, config.rate) } else { 0.0 },
        process_us: process_us.percentiles(),
        max_concurrent_process: pacing.max_concurrent.load(Ordering::Relaxed),
        child_processes,
        children_rss_kib,
        activate_ms,
        panics,
        dry_window_frames: kept.saturating_sub(latency as usize),
        per_instance,
        host_callbacks,
        transport: (!config.quirks.contains(Quirk::NoTransport) && !config.quirks.contains(Quirk::ZeroedTransport))
            .then_some((config.tempo, config.time_signature, !config.stopped)),
        notes: config.notes.clone(),
        note_dialect: config.note_dialect,
        params_sent,
        params,
        gui,
    };
    if let Some(path) = &config.json {
        let text = serde_json::to_string_pretty(&report.to_json()).expect("serialisable");
        std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wav(path: &Path, channels: u16, rate: u32, bits: u16, float: bool, frames: &[[f32; 2]]) {
        let spec = hound::WavSpec {
            channels,
            sample_rate: rate,
            bits_per_sample: bits,
            sample_format: if float { hound::SampleFormat::Float } else { hound::SampleFormat::Int },
        };
        let mut w = hound::WavWriter::create(path, spec).unwrap();
        for f in frames {
            for s in &f[..usize::from(channels)] {
                if float {
                    w.write_sample(*s).unwrap();
                } else {
                    w.write_sample((f64::from(*s) * (1u64 << (bits - 1)) as f64) as i32).unwrap();
                }
            }
        }
        w.finalize().unwrap();
    }

    fn temp(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("outboard-host-run-{}-{name}", std::process::id()))
    }

    #[test]
    fn input_wavs_are_read_in_every_supported_format() {
        let frames = [[0.5, -0.25], [-1.0, 0.75], [0.125, 0.0]];
        for (channels, bits, float) in [(1, 16, false), (2, 16, false), (2, 24, false), (1, 32, false), (2, 32, true)] {
            let path = temp(&format!("{channels}-{bits}-{float}.wav"));
            wav(&path, channels, 48_000, bits, float, &frames);
            let read = read_input_wav(&path, 48_000, 5);
            let _ = std::fs::remove_file(&path);
            let [l, r] = read.unwrap();
            let right = |f: &[f32; 2]| if channels == 1 { f[0] } else { f[1] };
            assert_eq!(l, [0.5, -1.0, 0.125, 0.0, 0.0], "{channels} ch {bits} bits: silence follows");
            assert_eq!(r[..3], frames.iter().map(right).collect::<Vec<_>>()[..], "{channels} ch {bits} bits");
            assert_eq!(r[3..], [0.0, 0.0]);
        }
        // Longer than the run: cut.
        let path = temp("long.wav");
        wav(&path, 2, 48_000, 16, false, &frames);
        let [l, r] = read_input_wav(&path, 48_000, 2).unwrap();
        let _ = std::fs::remove_file(&path);
        assert_eq!((l, r), (vec![0.5, -1.0], vec![-0.25, 0.75]));
    }

    #[test]
    fn input_wavs_at_another_rate_or_with_more_channels_are_refused() {
        let path = temp("rate.wav");
        wav(&path, 2, 44_100, 16, false, &[[0.0, 0.0]]);
        let err = read_input_wav(&path, 48_000, 10).unwrap_err();
        assert!(err.contains("44100 Hz") && err.contains("48000 Hz"), "{err}");
        let spec = hound::WavSpec {
            channels: 3,
            sample_rate: 48_000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::create(&path, spec).unwrap();
        for _ in 0..3 {
            w.write_sample(0i16).unwrap();
        }
        w.finalize().unwrap();
        let err = read_input_wav(&path, 48_000, 10).unwrap_err();
        assert!(err.contains("3 channels"), "{err}");
        wav(&path, 1, 48_000, 8, false, &[[0.0, 0.0]]);
        let err = read_input_wav(&path, 48_000, 10).unwrap_err();
        assert!(err.contains("8-bit integer"), "{err}");
        let _ = std::fs::remove_file(&path);
        let err = read_input_wav(&path, 48_000, 10).unwrap_err();
        assert!(err.contains("--input-wav"), "{err}");
    }

    #[test]
    fn automation_is_a_triangle_with_up_to_four_events_a_block() {
        let a = Automation { id: 3, min: 0.0, max: 1.0, stepped: false };
        assert_eq!(a.value(0, 48_000), 0.0);
        assert_eq!(a.value(24_000, 48_000), 1.0);
        assert_eq!(a.value(12_000, 48_000), 0.5);
        assert_eq!(a.value(48_000, 48_000), 0.0);
        let s = Automation { id: 3, min: 0.0, max: 1.0, stepped: true };
        assert_eq!(s.value(11_000, 48_000), 0.0);
        assert_eq!(s.value(13_000, 48_000), 1.0);
        assert_eq!(Automation::offsets(64).collect::<Vec<_>>(), [0, 16, 32, 48]);
        assert_eq!(Automation::offsets(2).collect::<Vec<_>>(), [0, 1]);
        assert_eq!(Automation::offsets(1).collect::<Vec<_>>(), [0]);
    }

    #[test]
    fn dry_blocks_count_leading_pass_through_blocks_after_the_latency() {
        let input = Input::Signal;
        let (latency, block, rate) = (3usize, 4usize, 48_000);
        // Frame 0 of the signal is 0 but the rest of the first block is not.
        let mut head = vec![0.0f32; 2 * 40];
        for t in latency..40 {
            for c in 0..2 {
                head[2 * t + c] = input.sample(c, (t - latency) as u64, rate);
            }
        }
        assert_eq!(dry_blocks_at_start(&head, latency, block, &input, rate), 9, "(40 - 3) / 4 whole blocks");
        // Wet from frame latency + 2 * block + 1 on.
        for t in latency + 2 * block + 1..40 {
            head[2 * t] *= 0.5;
        }
        assert_eq!(dry_blocks_at_start(&head, latency, block, &input, rate), 2);
        // Silent input blocks neither count nor stop the count.
        let silent = Input::Wav { path: "x".into(), channels: [vec![0.0; 40], vec![0.0; 40]] };
        assert_eq!(dry_blocks_at_start(&vec![0.0; 80], latency, block, &silent, rate), 0);
    }
}
