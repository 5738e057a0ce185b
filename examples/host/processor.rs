//! The audio-thread side of an active plugin instance: its buffers, its
//! event lists, and the process call.
//!
//! Everything is allocated by [`crate::Instance::activate`] on the main
//! thread. Afterwards nothing here allocates, locks or makes a syscall:
//! writing inputs, queueing events (up to the preallocated capacity; more are
//! dropped and counted), processing and reading outputs are realtime-safe.
//! What the plugin does inside its own `process` is the plugin's business —
//! that is what the host measures.

use clack_extensions::params::PluginParams;
use clack_host::events::event_types::{ParamValueEvent, TransportEvent, TransportFlags};
use clack_host::events::io::{InputEventBuffer, OutputEventBuffer, TryPushError};
use clack_host::events::{EventFlags, EventHeader};
use clack_host::prelude::*;
use clack_host::utils::{BeatTime, SecondsTime};
use clap_sys::audio_buffer::clap_audio_buffer;
use clap_sys::events::clap_event_transport;
use clap_sys::process::clap_process;

use std::sync::atomic::Ordering;

use crate::handlers::{OutboardHost, mark_audio_thread};
use crate::plugin_instance::{ActivateConfig, ParamChange, PortInfo};
use crate::quirks::{Quirk, Quirks};

/// The sample format of the audio buffers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SampleType {
    /// 32-bit floats (the buffers' `data32`).
    F32,
    /// 64-bit floats (the buffers' `data64`).
    F64,
}

/// The most ports per side and channels per side a processor handles: the
/// per-call pointer tables live on the stack, so that a processor holds no
/// raw pointers between calls (and is plainly `Send`).
pub const MAX_PORTS: usize = 16;
/// The most channels per side, over all its ports (see [`MAX_PORTS`]).
pub const MAX_CHANNELS: usize = 64;

/// Why a block was not processed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProcessError {
    /// `start_processing` has not succeeded.
    NotStarted,
    /// More frames than the activation's maximum (or, with the `huge-block`
    /// quirk, than the buffers hold).
    TooManyFrames,
    /// The plugin returned CLAP_PROCESS_ERROR (or has no process function).
    Plugin(PluginInstanceError),
}

impl std::fmt::Display for ProcessError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProcessError::NotStarted => write!(f, "processing has not been started"),
            ProcessError::TooManyFrames => write!(f, "more frames than the maximum the plugin was activated for"),
            ProcessError::Plugin(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ProcessError {}

/// A transport to send with every block (optional): a timeline at a fixed
/// tempo that starts at zero when processing starts and advances with the
/// frames processed while playing (stopped, it stays where it is), with
/// its time signature ([`Processor::set_time_signature`], 4/4 unless set),
/// tempo, beats and seconds timelines, and the bar's start and number.
/// (The quirks `zeroed-transport` and `no-transport` replace it.)
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Transport {
    /// Beats (quarter notes) per minute.
    pub tempo: f64,
    /// Whether the transport plays (CLAP_TRANSPORT_IS_PLAYING): the timeline advances only then.
    pub playing: bool,
}

/// The transport's time signature: `numerator` beats of 1/`denominator`
/// notes a bar (a bar is `4 * numerator / denominator` quarter notes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeSignature {
    /// Beats a bar (at least 1).
    pub numerator: u16,
    /// The note value of a beat: 4 for quarter notes, 8 for eighths (at least 1).
    pub denominator: u16,
}

impl Default for TimeSignature {
    fn default() -> TimeSignature {
        TimeSignature { numerator: 4, denominator: 4 }
    }
}

impl TimeSignature {
    /// Parses `N/D` (both at least 1).
    pub fn parse(text: &str) -> Result<TimeSignature, String> {
        let bad = || format!("{text:?}: expected a time signature N/D, e.g. 4/4 or 7/8");
        let (n, d) = text.split_once('/').ok_or_else(bad)?;
        let numerator = n.trim().parse::<u16>().ok().filter(|&n| n >= 1).ok_or_else(bad)?;
        let denominator = d.trim().parse::<u16>().ok().filter(|&d| d >= 1).ok_or_else(bad)?;
        Ok(TimeSignature { numerator, denominator })
    }

    /// Quarter notes per bar.
    pub fn bar_beats(self) -> f64 {
        4.0 * f64::from(self.numerator) / f64::from(self.denominator)
    }
}

impl std::fmt::Display for TimeSignature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.numerator, self.denominator)
    }
}

impl std::str::FromStr for TimeSignature {
    type Err = String;

    fn from_str(s: &str) -> Result<TimeSignature, String> {
        TimeSignature::parse(s)
    }
}

/// Planar buffers for the channels of one side (every port, flattened).
struct Side {
    /// Channel count per port.
    ports: Vec<usize>,
    /// Index of each port's first channel in the flat list.
    first: Vec<usize>,
    /// The samples: one of the two, by sample type.
    wide: bool,
    f32: Vec<Vec<f32>>,
    f64: Vec<Vec<f64>>,
}

impl Side {
    fn new(ports: &[PortInfo], sample_type: SampleType, frames: usize) -> Side {
        let ports: Vec<usize> = ports.iter().map(|p| p.channels as usize).collect();
        let first = ports.iter().scan(0, |at, &n| Some(std::mem::replace(at, *at + n))).collect();
        let total = ports.iter().sum();
        let (f32, f64) = match sample_type {
            SampleType::F32 => (vec![vec![0.0; frames]; total], Vec::new()),
            SampleType::F64 => (Vec::new(), vec![vec![0.0; frames]; total]),
        };
        Side { ports, first, wide: sample_type == SampleType::F64, f32, f64 }
    }

    fn channels(&self) -> usize {
        self.ports.iter().sum()
    }

    fn flat(&self, port: usize, channel: usize) -> Option<usize> {
        (channel < *self.ports.get(port)?).then(|| self.first[port] + channel)
    }

    /// A pointer to channel `flat`'s samples (as `f32` whatever the type, the
    /// way clap_audio_buffer's tables are built). Taken from the Vec without
    /// making a reference to its contents, fresh for every call.
    fn ptr(&mut self, flat: usize) -> *mut f32 {
        if self.wide { self.f64[flat].as_mut_ptr().cast() } else { self.f32[flat].as_mut_ptr() }
    }
}

/// The plugin's output event list: refuses events past its capacity instead
/// of growing, which would allocate on the audio thread. Capacity is in
/// standard CLAP events (the buffer has room for that many of the largest).
struct BoundedEvents {
    events: EventBuffer,
    capacity: usize,
    refused: u64,
}

impl OutputEventBuffer for BoundedEvents {
    fn try_push(&mut self, event: &UnknownEvent) -> Result<(), TryPushError> {
        if self.events.len() as usize >= self.capacity {
            self.refused += 1;
            return Err(TryPushError::new());
        }
        self.events.push(event);
        Ok(())
    }
}

/// The input events in reverse order (the `unsorted-events` quirk): a view of
/// the sorted list, nothing copied.
struct Reversed<'a>(&'a EventBuffer);

impl InputEventBuffer for Reversed<'_> {
    fn len(&self) -> u32 {
        self.0.len()
    }

    fn get(&self, index: u32) -> Option<&UnknownEvent> {
        let len = self.0.len();
        if index >= len {
            return None;
        }
        self.0.get(len - 1 - index)
    }
}

const NO_BUFFER: clap_audio_buffer = clap_audio_buffer {
    data32: std::ptr::null_mut(),
    data64: std::ptr::null_mut(),
    channel_count: 0,
    latency: 0,
    constant_mask: 0,
};

/// An active plugin instance's audio side. `Send`: move it to the audio
/// thread, and back to [`crate::Instance::deactivate`] when done.
pub struct Processor {
    processor: PluginAudioProcessor<OutboardHost>,
    params: Option<PluginParams>,
    sample_type: SampleType,
    rate: f64,
    /// The maximum announced at activation ...
    max_frames: usize,
    /// ... and what the buffers hold (more with the `huge-block` quirk).
    buffer_frames: usize,
    inputs: Side,
    outputs: Side,
    /// For each flat input channel, the flat output channel it shares a
    /// buffer with when processing in place.
    in_place: Vec<Option<usize>>,
    in_events: EventBuffer,
    out_events: BoundedEvents,
    queued_events: usize,
    event_capacity: usize,
    dropped_events: u64,
    steady_time: u64,
    transport: Option<Transport>,
    /// A transport sent as it is instead (fuzzing: any field, any flag).
    raw_transport: Option<TransportEvent>,
    time_signature: TimeSignature,
    /// Frames played while the transport was playing.
    transport_frames: u64,
    quirks: Quirks,
    /// What `zeroed-transport` points to: all zeros, header included.
    zeroed_transport: clap_event_transport,
}

impl Processor {
    pub(crate) fn new(
        processor: StoppedPluginAudioProcessor<OutboardHost>,
        inputs: &[PortInfo],
        outputs: &[PortInfo],
        config: &ActivateConfig,
        params: Option<PluginParams>,
    ) -> Processor {
        let frames = config.max_frames.max(config.buffer_frames) as usize;
        let in_side = Side::new(inputs, config.sample_type, frames);
        let out_side = Side::new(outputs, config.sample_type, frames);
        let mut in_place = vec![None; in_side.channels()];
        if config.in_place {
            for (i, port) in inputs.iter().enumerate() {
                let Some(pair) = port.in_place_pair else { continue };
                let Some(o) = outputs.iter().position(|out| out.id == pair && out.channels == port.channels) else {
                    continue;
                };
                for c in 0..port.channels as usize {
                    in_place[in_side.first[i] + c] = Some(out_side.first[o] + c);
                }
            }
        }
        Processor {
            processor: processor.into(),
            params,
            sample_type: config.sample_type,
            rate: config.rate,
            max_frames: config.max_frames as usize,
            buffer_frames: frames,
            inputs: in_side,
            outputs: out_side,
            in_place,
            in_events: EventBuffer::with_capacity(config.event_capacity),
            out_events: BoundedEvents {
                events: EventBuffer::with_capacity(config.event_capacity),
                capacity: config.event_capacity,
                refused: 0,
            },
            queued_events: 0,
            event_capacity: config.event_capacity,
            dropped_events: 0,
            steady_time: 0,
            transport: None,
            raw_transport: None,
            time_signature: TimeSignature::default(),
            transport_frames: 0,
            quirks: Quirks::NONE,
            // SAFETY: clap_event_transport is plain integers and floats, for
            // which all-zero bytes are a valid value.
            zeroed_transport: unsafe { std::mem::zeroed() },
        }
    }

    /// Whether the buffers fit the stack tables of [`Processor::process`].
    pub(crate) fn check_layout(inputs: &[PortInfo], outputs: &[PortInfo]) -> Result<(), String> {
        for (side, ports) in [("input", inputs), ("output", outputs)] {
            let channels: usize = ports.iter().map(|p| p.channels as usize).sum();
            if ports.len() > MAX_PORTS || channels > MAX_CHANNELS {
                return Err(format!(
                    "{} {side} ports with {channels} channels: this host handles at most {MAX_PORTS} ports and \
                     {MAX_CHANNELS} channels per side",
                    ports.len()
                ));
            }
        }
        Ok(())
    }

    /// Whether the buffers hold 32- or 64-bit samples.
    pub fn sample_type(&self) -> SampleType {
        self.sample_type
    }

    /// The maximum frame count announced at activation.
    pub fn max_frames(&self) -> usize {
        self.max_frames
    }

    /// The frames each buffer holds: `max_frames`, or more where the
    /// activation asked for room (`ActivateConfig::buffer_frames`).
    pub fn buffer_frames(&self) -> usize {
        self.buffer_frames
    }

    /// Makes the following process calls misbehave as real hosts do (see
    /// [`crate::quirks`]). The processor itself produces `zeroed-transport`,
    /// `no-transport`, `unsorted-events` and, for `huge-block`, accepts
    /// calls up to `buffer_frames`; the others are the caller's to produce
    /// ([`crate::run()`] does).
    pub fn set_quirks(&mut self, quirks: Quirks) {
        self.quirks = quirks;
    }

    /// The quirks set with [`Processor::set_quirks`] (none unless set).
    pub fn quirks(&self) -> Quirks {
        self.quirks
    }

    /// Channel count of each input port.
    pub fn input_ports(&self) -> &[usize] {
        &self.inputs.ports
    }

    /// Channel count of each output port.
    pub fn output_ports(&self) -> &[usize] {
        &self.outputs.ports
    }

    /// How many input channels share their buffer with an output channel.
    pub fn in_place_channels(&self) -> usize {
        self.in_place.iter().flatten().count()
    }

    /// Whether processing has been started ([`Processor::start_processing`] succeeded, not yet stopped).
    pub fn is_started(&self) -> bool {
        self.processor.is_started()
    }

    /// Tells the plugin continuous processing starts; call it on the audio
    /// thread (which it marks as such for the thread-check extension).
    pub fn start_processing(&mut self) -> Result<(), PluginInstanceError> {
        mark_audio_thread();
        self.processor.ensure_processing_started().map(|_| ())
    }

    /// Tells the plugin processing stops; call it on the audio thread.
    pub fn stop_processing(&mut self) {
        self.processor.ensure_processing_stopped();
    }

    /// Clears the plugin's processing state (`reset`); the steady time and
    /// the transport start again from zero.
    pub fn reset(&mut self) {
        self.processor.reset();
        self.steady_time = 0;
        self.transport_frames = 0;
    }

    /// Sends this transport with every block from now on (`None`: none).
    pub fn set_transport(&mut self, transport: Option<Transport>) {
        self.transport = transport;
    }

    /// Sends this transport event, exactly as given, with every block from
    /// now on instead of [`Processor::set_transport`]'s (`None`: back to
    /// that one): for fuzzing a plugin with transports no timeline makes.
    pub fn set_raw_transport(&mut self, transport: Option<TransportEvent>) {
        self.raw_transport = transport;
    }

    /// The time signature the transport carries from now on (4/4 unless set).
    pub fn set_time_signature(&mut self, time_signature: TimeSignature) {
        self.time_signature = time_signature;
    }

    // ---- audio ----

    /// Input samples of one channel (the whole buffer), if 32-bit.
    pub fn input_f32_mut(&mut self, port: usize, channel: usize) -> Option<&mut [f32]> {
        let flat = self.inputs.flat(port, channel)?;
        self.inputs.f32.get_mut(flat).map(|v| v.as_mut_slice())
    }

    /// Input samples of one channel (the whole buffer), if 64-bit.
    pub fn input_f64_mut(&mut self, port: usize, channel: usize) -> Option<&mut [f64]> {
        let flat = self.inputs.flat(port, channel)?;
        self.inputs.f64.get_mut(flat).map(|v| v.as_mut_slice())
    }

    /// Output samples of one channel (the whole buffer), if 32-bit.
    pub fn output_f32(&self, port: usize, channel: usize) -> Option<&[f32]> {
        let flat = self.outputs.flat(port, channel)?;
        self.outputs.f32.get(flat).map(|v| v.as_slice())
    }

    /// Output samples of one channel (the whole buffer), if 64-bit.
    pub fn output_f64(&self, port: usize, channel: usize) -> Option<&[f64]> {
        let flat = self.outputs.flat(port, channel)?;
        self.outputs.f64.get(flat).map(|v| v.as_slice())
    }

    /// Copies `samples` (at most `buffer_frames`) into an input channel,
    /// whatever the sample type. False if there is no such channel.
    pub fn write_input(&mut self, port: usize, channel: usize, samples: &[f32]) -> bool {
        let Some(flat) = self.inputs.flat(port, channel) else { return false };
        let n = samples.len().min(self.buffer_frames);
        match self.sample_type {
            SampleType::F32 => self.inputs.f32[flat][..n].copy_from_slice(&samples[..n]),
            SampleType::F64 => {
                for (d, s) in self.inputs.f64[flat][..n].iter_mut().zip(&samples[..n]) {
                    *d = f64::from(*s);
                }
            }
        }
        true
    }

    /// Copies an output channel into `out` (at most `buffer_frames`
    /// samples), whatever the sample type. False if there is no such channel.
    pub fn read_output(&self, port: usize, channel: usize, out: &mut [f32]) -> bool {
        let Some(flat) = self.outputs.flat(port, channel) else { return false };
        let n = out.len().min(self.buffer_frames);
        match self.sample_type {
            SampleType::F32 => out[..n].copy_from_slice(&self.outputs.f32[flat][..n]),
            SampleType::F64 => {
                for (d, s) in out[..n].iter_mut().zip(&self.outputs.f64[flat][..n]) {
                    *d = *s as f32;
                }
            }
        }
        true
    }

    // ---- events ----

    /// Queues a parameter value change for the next block, at a sample
    /// offset. False (and counted as dropped) if the event list is full or
    /// the id is invalid.
    pub fn push_param_value(&mut self, offset: u32, id: u32, value: f64) -> bool {
        let Some(id) = ClapId::from_raw(id) else {
            self.dropped_events += 1;
            return false;
        };
        self.push_event(&ParamValueEvent::new(offset, id, Pckn::match_all(), value))
    }

    /// Queues any event for the next block. Events are sorted by time before
    /// the call. False (and counted as dropped) if the list is full.
    pub fn push_event<E: AsRef<UnknownEvent> + ?Sized>(&mut self, event: &E) -> bool {
        // The buffer is preallocated for event_capacity events; refusing
        // more keeps the push from allocating on the audio thread.
        if self.queued_events >= self.event_capacity {
            self.dropped_events += 1;
            return false;
        }
        self.in_events.push(event);
        self.queued_events += 1;
        true
    }

    /// Input events refused because the list was full (or their id invalid).
    pub fn dropped_events(&self) -> u64 {
        self.dropped_events
    }

    /// What the plugin sent in the last block (or flush).
    pub fn output_events(&self) -> &EventBuffer {
        &self.out_events.events
    }

    /// Output events the plugin tried to send past the list's capacity
    /// (refused: the plugin saw its push fail).
    pub fn refused_output_events(&self) -> u64 {
        self.out_events.refused
    }

    /// The parameter values among the last block's output events.
    pub fn output_param_values(&self) -> impl Iterator<Item = ParamChange> + '_ {
        param_values(&self.out_events.events)
    }

    /// Sends the queued events through `params.flush` without processing
    /// audio (allowed while active and not processing); the plugin's output
    /// events are in [`Processor::output_events`].
    pub fn flush_params(&mut self) {
        self.out_events.events.clear();
        if let Some(params) = self.params {
            self.in_events.sort();
            let mut handle = self.processor.plugin_handle();
            params.flush_active(
                &mut handle,
                &InputEvents::from_buffer(&self.in_events),
                &mut OutputEvents::from_buffer(&mut self.out_events),
            );
        }
        self.in_events.clear();
        self.queued_events = 0;
        self.processor.access_shared_handler(|s| s.flush_pending.store(false, Ordering::Release));
    }

    // ---- processing ----

    /// Processes `frames` frames: the inputs as written, the queued events
    /// (then cleared), the transport if set, and the quirks if any
    /// ([`Processor::set_quirks`]). Realtime-safe on the host side.
    ///
    /// The `clap_process` is built here, at the ABI level, rather than
    /// through clack-host's typed `process`: that is what lets a quirk pass
    /// what the typed API would not (a zeroed transport, unsorted events, a
    /// call larger than announced). Without quirks it is the same struct
    /// clack-host builds.
    pub fn process(&mut self, frames: u32) -> Result<ProcessStatus, ProcessError> {
        let n = frames as usize;
        let limit = if self.quirks.contains(Quirk::HugeBlock) { self.buffer_frames } else { self.max_frames };
        if n > limit {
            return Err(ProcessError::TooManyFrames);
        }
        // In place: the plugin reads its input from the output buffer.
        for (i, pair) in self.in_place.iter().enumerate() {
            let Some(o) = *pair else { continue };
            match self.sample_type {
                SampleType::F32 => self.outputs.f32[o][..n].copy_from_slice(&self.inputs.f32[i][..n]),
                SampleType::F64 => self.outputs.f64[o][..n].copy_from_slice(&self.inputs.f64[i][..n]),
            }
        }

        // The tables CLAP wants: per port, a pointer to a list of channel
        // pointers. Built afresh on the stack for every call, so no pointer
        // outlives it.
        let mut in_ptrs = [std::ptr::null_mut::<f32>(); MAX_CHANNELS];
        let mut out_ptrs = [std::ptr::null_mut::<f32>(); MAX_CHANNELS];
        for (i, p) in in_ptrs.iter_mut().enumerate().take(self.inputs.channels()) {
            *p = match self.in_place[i] {
                Some(o) => self.outputs.ptr(o),
                None => self.inputs.ptr(i),
            };
        }
        for (o, p) in out_ptrs.iter_mut().enumerate().take(self.outputs.channels()) {
            *p = self.outputs.ptr(o);
        }
        let wide = self.sample_type == SampleType::F64;
        let describe = |side: &Side, table: *mut *mut f32, descriptors: &mut [clap_audio_buffer; MAX_PORTS]| {
            for (port, &channels) in side.ports.iter().enumerate() {
                // wrapping_add: plain address arithmetic, in bounds (first +
                // channels <= MAX_CHANNELS, checked at activation).
                let list = table.wrapping_add(side.first[port]);
                descriptors[port] = clap_audio_buffer {
                    data32: if wide { std::ptr::null_mut() } else { list },
                    data64: if wide { list.cast() } else { std::ptr::null_mut() },
                    channel_count: channels as u32,
                    latency: 0,
                    constant_mask: 0,
                };
            }
        };
        let mut in_desc = [NO_BUFFER; MAX_PORTS];
        let mut out_desc = [NO_BUFFER; MAX_PORTS];
        describe(&self.inputs, in_ptrs.as_mut_ptr(), &mut in_desc);
        describe(&self.outputs, out_ptrs.as_mut_ptr(), &mut out_desc);

        // The transport: ours, none, or the zeroed one Qtractor sends.
        let transport = self.raw_transport.or_else(|| self.transport.map(|t| self.transport_event(t)));
        let transport_ptr: *const clap_event_transport = if self.quirks.contains(Quirk::ZeroedTransport) {
            &self.zeroed_transport
        } else if self.quirks.contains(Quirk::NoTransport) {
            std::ptr::null()
        } else {
            transport.as_ref().map_or(std::ptr::null(), |t| t.as_raw())
        };
        self.in_events.sort();
        self.out_events.events.clear();
        let reversed = Reversed(&self.in_events);
        let in_events = if self.quirks.contains(Quirk::UnsortedEvents) {
            InputEvents::from_buffer(&reversed)
        } else {
            InputEvents::from_buffer(&self.in_events)
        };
        let mut out_events = OutputEvents::from_buffer(&mut self.out_events);
        let process = clap_process {
            // A wrapping conversion, as clack-host makes it.
            steady_time: (self.steady_time & i64::MAX as u64) as i64,
            frames_count: frames,
            transport: transport_ptr,
            audio_inputs: in_desc.as_ptr(),
            audio_outputs: out_desc.as_mut_ptr(),
            audio_inputs_count: self.inputs.ports.len() as u32,
            audio_outputs_count: self.outputs.ports.len() as u32,
            in_events: in_events.as_raw(),
            out_events: out_events.as_raw(),
        };
        let started = self.processor.as_started_mut().map_err(|_| ProcessError::NotStarted)?;
        let handle = started.plugin_handle();
        let plugin = handle.as_raw();
        let process_fn = plugin.process.ok_or(ProcessError::Plugin(PluginInstanceError::NullProcessFunction))?;
        // SAFETY: the plugin is active and processing (as_started_mut), and
        // this is its audio thread. Every descriptor points to a channel
        // table on this stack frame, and every channel pointer into a buffer
        // of buffer_frames >= frames samples of the declared type, owned by
        // self and not otherwise borrowed until the call returns (in-place
        // pairs alias on purpose: that is what in-place processing means in
        // CLAP). The event lists, the transport and the struct itself live
        // until the call returns.
        let status = unsafe { process_fn(plugin, &process) };
        self.in_events.clear();
        self.queued_events = 0;
        // A process call is a flush: a pending request_flush is answered.
        self.processor.access_shared_handler(|s| s.flush_pending.store(false, Ordering::Release));
        self.steady_time += u64::from(frames);
        if self.transport.is_some_and(|t| t.playing) {
            self.transport_frames += u64::from(frames);
        }
        match ProcessStatus::from_raw(status) {
            Some(Ok(status)) => Ok(status),
            None | Some(Err(())) => Err(ProcessError::Plugin(PluginInstanceError::ProcessingFailed)),
        }
    }

    fn transport_event(&self, t: Transport) -> TransportEvent {
        let seconds = self.transport_frames as f64 / self.rate;
        let beats = seconds * t.tempo / 60.0;
        let signature = self.time_signature;
        let bar_beats = signature.bar_beats();
        let bar = (beats / bar_beats).floor();
        let mut flags = TransportFlags::HAS_TEMPO
            | TransportFlags::HAS_BEATS_TIMELINE
            | TransportFlags::HAS_SECONDS_TIMELINE
            | TransportFlags::HAS_TIME_SIGNATURE;
        if t.playing {
            flags |= TransportFlags::IS_PLAYING;
        }
        TransportEvent {
            header: EventHeader::new_core(0, EventFlags::empty()),
            flags,
            song_pos_beats: BeatTime::from_float(beats),
            song_pos_seconds: SecondsTime::from_float(seconds),
            tempo: t.tempo,
            tempo_inc: 0.0,
            loop_start_beats: BeatTime::from_int(0),
            loop_end_beats: BeatTime::from_int(0),
            loop_start_seconds: SecondsTime::from_int(0),
            loop_end_seconds: SecondsTime::from_int(0),
            bar_start: BeatTime::from_float(bar * bar_beats),
            bar_number: bar as i32,
            time_signature_numerator: signature.numerator,
            time_signature_denominator: signature.denominator,
        }
    }

    /// The stopped processor, for deactivation (stops processing first if
    /// needed).
    pub(crate) fn into_stopped(self) -> StoppedPluginAudioProcessor<OutboardHost> {
        self.processor.into_stopped()
    }
}

/// The parameter value events in an event list.
pub(crate) fn param_values(events: &EventBuffer) -> impl Iterator<Item = ParamChange> + '_ {
    events.iter().filter_map(|e| {
        let value = e.as_event::<ParamValueEvent>()?;
        Some(ParamChange { offset: e.header().time(), id: value.param_id()?.get(), value: value.value() })
    })
}
