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
//! Nothing in the per-block loop allocates or locks: buffers, event lists,
//! the capture of instance 0's output and the timing histogram are all made
//! before the thread starts.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use outboard_engine::clock::{monotonic_ns, sleep_until_ns};
use outboard_engine::graph::{lock_memory, make_thread_realtime, warn_no_realtime};
use outboard_engine::histogram::Histogram;
use outboard_plugin::state::PluginState as OutboardState;

use crate::handlers::CountersSnapshot;
use crate::plugin_instance::{ActivateConfig, Bundle, Instance};
use crate::processor::Processor;
use crate::report::{InstanceReport, Report};
use crate::signal;

/// SCHED_FIFO priority of the audio threads (as the engine's tracks).
pub const PRIORITY: u8 = 80;

/// Everything a run needs; the CLI builds one.
#[derive(Clone, Debug, PartialEq)]
pub struct RunConfig {
    pub plugin: PathBuf,
    /// None: the first plugin in the factory.
    pub plugin_id: Option<String>,
    pub tracks: usize,
    pub block: u32,
    pub rate: u32,
    pub seconds: f64,
    /// A Python script to put in every instance's state before activation.
    pub script: Option<PathBuf>,
    pub offline: bool,
    pub json: Option<PathBuf>,
    /// Instance 0's output (the first two channels of its first output
    /// port), f32 stereo.
    pub output_wav: Option<PathBuf>,
    /// The test signal as fed, f32 stereo.
    pub input_wav: Option<PathBuf>,
    /// mlockall before the audio starts (the binary does; tests need not).
    pub lock_memory: bool,
    /// Print the plugins' log messages.
    pub echo_log: bool,
}

impl RunConfig {
    pub fn new(plugin: impl Into<PathBuf>) -> RunConfig {
        RunConfig {
            plugin: plugin.into(),
            plugin_id: None,
            tracks: 1,
            block: 64,
            rate: 48_000,
            seconds: 1.0,
            script: None,
            offline: false,
            json: None,
            output_wav: None,
            input_wav: None,
            lock_memory: false,
            echo_log: true,
        }
    }

    /// Blocks each instance processes: enough to cover `seconds`.
    pub fn total_blocks(&self) -> u64 {
        (self.seconds * f64::from(self.rate) / f64::from(self.block)).ceil().max(0.0) as u64
    }

    pub fn total_frames(&self) -> usize {
        self.total_blocks() as usize * self.block as usize
    }

    fn validate(&self) -> Result<(), String> {
        let seconds_ok = self.seconds.is_finite() && self.seconds > 0.0;
        if self.tracks == 0 || self.block == 0 || self.rate == 0 || !seconds_ok {
            return Err("need --tracks, --block, --rate and --seconds above zero".into());
        }
        Ok(())
    }
}

/// Puts `script` (named `name`) into the instance's Outboard state: saves the
/// state, replaces the script, loads it back. Fails if the plugin's state is
/// not an Outboard state.
pub fn apply_script(instance: &mut Instance, name: &str, script: &str) -> Result<(), String> {
    let bytes = instance.save_state().map_err(|e| format!("--script: saving the plugin's state: {e}"))?;
    let mut state = OutboardState::decode(&bytes).map_err(|e| {
        format!(
            "--script needs outboard.clap: plugin {:?} saved a state that is not Outboard's: {e}",
            instance.plugin_id()
        )
    })?;
    state.script = script.to_string();
    state.script_name = name.to_string();
    instance.load_state(&state.encode()).map_err(|e| format!("--script: the plugin refused the new state: {e}"))
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
    histogram: Histogram,
}

/// What one audio thread gives back.
struct LaneResult {
    lane: Lane,
    start_error: Option<String>,
    blocks: u64,
    deadline_misses: u64,
    process_errors: u64,
    output_peak: f32,
    nan_samples: u64,
    realtime: bool,
}

struct Pacing {
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
}

impl Pacing {
    /// When block k must be done: k + 1 periods after the start, in whole
    /// nanoseconds from the start so that no rounding accumulates.
    fn deadline(&self, k: u64) -> u64 {
        let ns = u128::from(k + 1) * u128::from(self.block) * 1_000_000_000 / u128::from(self.rate);
        self.start_ns + ns as u64
    }
}

/// One audio thread: start processing, then block after block.
fn audio_thread(lane: Lane, pacing: &Pacing) -> LaneResult {
    let realtime = !pacing.offline && make_thread_realtime(PRIORITY);
    if !pacing.offline && !realtime {
        warn_no_realtime();
    }
    let mut result = LaneResult {
        lane,
        start_error: None,
        blocks: 0,
        deadline_misses: 0,
        process_errors: 0,
        output_peak: 0.0,
        nan_samples: 0,
        realtime,
    };
    let lane = &mut result.lane;
    if let Err(e) = lane.processor.start_processing() {
        result.start_error = Some(format!("start_processing failed: {e}"));
        return result;
    }
    let block = pacing.block as usize;
    // The last allocation of this thread: one block of input scratch.
    let mut input = vec![0.0f32; block];
    let in_channels = lane.processor.input_ports().first().copied().unwrap_or(0);
    let out_ports: Vec<usize> = lane.processor.output_ports().to_vec();
    if !pacing.offline {
        sleep_until_ns(pacing.start_ns);
    }
    for k in 0..pacing.blocks {
        let first_frame = k * u64::from(pacing.block);
        // The test signal goes to the first input port; other ports
        // (side chains) stay silent.
        for c in 0..in_channels {
            signal::fill(c, first_frame, pacing.rate, &mut input);
            lane.processor.write_input(0, c, &input);
        }
        let began = monotonic_ns();
        let now = pacing.in_process.fetch_add(1, Ordering::Relaxed) + 1;
        pacing.max_concurrent.fetch_max(now, Ordering::Relaxed);
        let status = lane.processor.process(pacing.block);
        pacing.in_process.fetch_sub(1, Ordering::Relaxed);
        let ended = monotonic_ns();
        lane.histogram.record(ended - began);
        result.blocks += 1;
        if status.is_err() {
            result.process_errors += 1;
        }
        if !pacing.offline && ended > pacing.deadline(k) {
            result.deadline_misses += 1;
        }
        // Measure: every output channel of every port.
        for (port, &channels) in out_ports.iter().enumerate() {
            for c in 0..channels {
                let Some(out) = lane.processor.output_f32(port, c) else { continue };
                for (i, s) in out[..block].iter().enumerate() {
                    if !s.is_finite() {
                        result.nan_samples += 1;
                    } else if first_frame + i as u64 >= pacing.latency {
                        result.output_peak = result.output_peak.max(s.abs());
                    }
                }
            }
        }
        if let Some(capture) = lane.capture.as_mut() {
            let at = first_frame as usize * 2;
            let left = lane.processor.output_f32(0, 0);
            let right = lane.processor.output_f32(0, 1).or(left);
            if let (Some(left), Some(right)) = (left, right) {
                for (i, frame) in capture[at..at + 2 * block].chunks_exact_mut(2).enumerate() {
                    frame[0] = left[i];
                    frame[1] = right[i];
                }
            }
        }
        if !pacing.offline {
            sleep_until_ns(pacing.deadline(k));
        }
    }
    lane.processor.stop_processing();
    result
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

/// Runs the plugin as configured; writes the WAVs and the JSON report if
/// asked, and returns the report.
pub fn run(config: &RunConfig) -> Result<Report, String> {
    config.validate()?;
    let memory_locked = config.lock_memory && memory_lock_is_safe() && lock_memory();
    let bundle = Bundle::load(&config.plugin)?;
    let plugin_id = match &config.plugin_id {
        Some(id) => id.clone(),
        None => bundle
            .first_plugin_id()
            .ok_or_else(|| format!("{}: the factory has no plugins", config.plugin.display()))?,
    };
    let script = match &config.script {
        Some(path) => {
            let source = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            Some((name, source))
        }
        None => None,
    };

    // Main thread: create, configure and activate every instance.
    let mut instances = Vec::with_capacity(config.tracks);
    for _ in 0..config.tracks {
        let mut instance = bundle.instantiate_with(&plugin_id, config.echo_log)?;
        if let Some((name, source)) = &script {
            apply_script(&mut instance, name, source)?;
        }
        if config.offline {
            // A plugin with the render extension may then take longer than
            // real time (Outboard waits for its scripts instead of playing dry).
            instance.set_render_offline(true);
        }
        instance.service_main_thread();
        instances.push(instance);
    }
    let mut lanes = Vec::with_capacity(config.tracks);
    for (i, instance) in instances.iter_mut().enumerate() {
        let processor = instance.activate(ActivateConfig::new(f64::from(config.rate), config.block))?;
        let capture = (i == 0 && config.output_wav.is_some()).then(|| vec![0.0f32; config.total_frames() * 2]);
        lanes.push(Lane { processor, capture, histogram: Histogram::new() });
    }
    // CLAP lets the host ask for the latency once active.
    let latency = instances[0].latency();
    for instance in &mut instances {
        instance.service_main_thread();
    }

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
    };
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
        // Serve the plugins' main-thread requests while they play.
        while !handles.iter().all(|h| h.is_finished()) {
            for instance in &mut instances {
                instance.service_main_thread();
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        handles.into_iter().map(|h| h.join().map_err(|_| "an audio thread panicked".to_string())).collect()
    });
    // (On a panic the instances are destroyed as they drop: clack deactivates
    // an instance whose processor is gone.)
    let results = results?;

    // Main thread again: read what is left to read while active, then
    // deactivate and destroy.
    // What the plugins started while active (Outboard: its script workers).
    let child_processes = crate::procfs::children().len();
    let mut per_instance = Vec::with_capacity(results.len());
    let process_us = Histogram::new();
    let mut capture = None;
    let mut start_errors = Vec::new();
    for (i, (instance, result)) in instances.iter_mut().zip(results).enumerate() {
        instance.service_main_thread();
        if let Some(e) = result.start_error {
            start_errors.push(format!("instance {i}: {e}"));
        }
        process_us.merge(&result.lane.histogram);
        per_instance.push(InstanceReport {
            blocks: result.blocks,
            deadline_misses: result.deadline_misses,
            process_errors: result.process_errors,
            output_peak: result.output_peak,
            nan_samples: result.nan_samples,
            late_results: late_results(instance),
            realtime: result.realtime,
            process_us: result.lane.histogram.percentiles(),
        });
        if result.lane.capture.is_some() {
            capture = result.lane.capture;
        }
        instance.deactivate(result.lane.processor);
        instance.service_main_thread();
    }
    let mut host_callbacks = CountersSnapshot::default();
    for instance in &instances {
        host_callbacks.add(&instance.counters_snapshot());
    }
    drop(instances);
    if !start_errors.is_empty() {
        return Err(start_errors.join("; "));
    }

    let frames = config.total_frames();
    if let (Some(path), Some(capture)) = (&config.output_wav, &capture) {
        write_wav(path, config.rate, capture)?;
    }
    if let Some(path) = &config.input_wav {
        let [left, right] = signal::generate(frames, config.rate);
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
        memory_locked,
        latency_samples: latency,
        input_peak: signal::peak(frames, config.rate),
        process_us: process_us.percentiles(),
        max_concurrent_process: pacing.max_concurrent.load(Ordering::Relaxed),
        child_processes,
        per_instance,
        host_callbacks,
    };
    if let Some(path) = &config.json {
        let text = serde_json::to_string_pretty(&report.to_json()).expect("serialisable");
        std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(report)
}
