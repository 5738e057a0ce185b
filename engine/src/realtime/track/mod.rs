//! A track: the realtime half of one scripted audio channel strip.
//!
//! # Guarantees
//!
//! [`Track::process`] is realtime-safe: no lock, no allocation or free, no
//! blocking syscall, no I/O, no panic on anything the script side sends,
//! bounded time. Its only syscall is the ring's FUTEX_WAKE of a worker that
//! said it is asleep. Everything it needs is allocated in [`Track::new`].
//!
//! # Latency model (DESIGN.md §3)
//!
//! Audio is cut into internal blocks of `block` frames whatever size the
//! caller hands in. Input block k is pushed to the script when its last frame
//! arrives; output block k is chosen when its first frame is due, and is the
//! script's result for block k − L. If that result is not back, the track
//! plays block k − L of its dry input instead and counts a late result: the
//! output is always the input delayed by exactly L blocks, processed or not,
//! and nothing ever waits. A result that turns up after its turn is dropped.
//!
//! # Thread model
//!
//! [`Track`] lives on its realtime thread (it is `Send`, not `Sync`). The
//! non-realtime side talks to it only through its [`TrackPort`]: new script
//! links arrive over an rtrb ring (a worker restart swaps them in without a
//! lock), old links go back over another to be dropped off the realtime
//! thread, and statistics and parameters are atomics.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use crate::compute::partial_sum;
use crate::measurement::histogram::Histogram;
use crate::realtime::clock::monotonic_ns;
use crate::realtime::voice::{Voice, Waveform};
use crate::shm::ring::{Consumer, PopError, Producer, PushError};
use crate::wire::block::{
    self, BlockHeader, BlockKind, CONTEXT_BYTES, EVENT_BYTES, Event, EventAction, HEADER_BYTES, MAX_BLOCK_EVENTS,
    MAX_EVENTS_PER_REPLY, MAX_PARAMS, ProcessLayout, ResultStatus, Transport,
};
use crate::wire::declared::Declaration;
use crate::wire::rings::SlotRings;

/// Events a track can hold waiting for their time.
pub const MAX_PENDING_EVENTS: usize = 256;
/// Host events a track holds for its coming blocks (see [`Track::push_event`]).
pub const MAX_INBOX_EVENTS: usize = 1024;
/// Events a track hands its caller per call (see [`Track::output_events`]).
pub const MAX_OUTBOX_EVENTS: usize = 1024;
/// Parameter 0 is the wet/dry mix every track has.
pub const PARAM_MIX: usize = 0;

/// What a track is.
#[derive(Clone, Debug)]
pub struct TrackConfig {
    pub id: u32,
    pub name: String,
    pub channels: usize,
    /// Frames per internal block.
    pub block: usize,
    /// L: blocks between pushing a block and playing its result.
    pub latency_blocks: usize,
    pub sample_rate: f64,
    /// A native voice the script's notes play, added to the input.
    pub voice: Option<Waveform>,
    /// Whether a script is meant to process this track (if not, the track is
    /// the native lower bound: dry, delayed by the same L blocks).
    pub scripted: bool,
    /// The script's notes, MIDI and parameter moves go out to the caller
    /// ([`Track::output_events`], a plugin's host) L blocks after their
    /// time, like the audio. Without it (the demo), notes play the voice
    /// and parameter moves set the track's own parameters.
    pub events_out: bool,
    /// An instrument's track: no audio comes in (the script fills silence).
    pub instrument: bool,
}

impl TrackConfig {
    pub fn new(id: u32, name: impl Into<String>) -> TrackConfig {
        TrackConfig {
            id,
            name: name.into(),
            channels: 2,
            block: 64,
            latency_blocks: 2,
            sample_rate: 48_000.0,
            voice: None,
            scripted: true,
            events_out: false,
            instrument: false,
        }
    }

    /// The latency this track adds, in frames.
    pub fn latency_frames(&self) -> usize {
        self.block * self.latency_blocks
    }

    /// Samples in one block (all channels).
    pub fn block_samples(&self) -> usize {
        self.block * self.channels
    }

    /// Shapes of the rings between this track and its script.
    pub fn slot_rings(&self) -> SlotRings {
        SlotRings::for_track(self.channels, self.block, self.latency_blocks)
    }

    fn is_valid(&self) -> bool {
        (1..=8).contains(&self.channels)
            && (1..=4096).contains(&self.block)
            && (1..=64).contains(&self.latency_blocks)
            && self.sample_rate > 0.0
    }
}

/// Counters the realtime side keeps and anyone may read.
#[derive(Default)]
pub struct TrackStats {
    /// Internal blocks processed.
    pub blocks: AtomicU64,
    /// Blocks whose result was not back in time (dry played instead).
    pub late_results: AtomicU64,
    /// The block index of the latest late result (for diagnosis).
    pub last_late_block: AtomicU64,
    /// Results that arrived after their turn and were dropped.
    pub stale_results: AtomicU64,
    /// Blocks the script failed on (error reported by the worker, or a
    /// sample that is not finite or beyond ±`block::MAX_SAMPLE` caught here):
    /// dry played.
    pub script_errors: AtomicU64,
    /// Malformed messages or ring faults from the script side.
    pub faults: AtomicU64,
    /// Blocks that could not be pushed because the ring was full.
    pub ring_full: AtomicU64,
    /// Events applied, and events that came after their time (applied at once).
    pub events: AtomicU64,
    pub late_events: AtomicU64,
    /// Events dropped for want of room: more host events than a block
    /// carries, or more script events than the track holds or hands out.
    pub dropped_events: AtomicU64,
    /// Set when the link to the worker faulted; the supervisor restarts it.
    pub link_faulted: AtomicBool,
    /// Generation of the link in use (0: none yet).
    pub link_generation: AtomicU32,
    /// Set by the supervisor once the worker has loaded this track's script
    /// (whether it loaded cleanly or not): from then on its blocks are answered.
    pub script_ready: AtomicBool,
    /// Push → result published, on CLOCK_MONOTONIC (ns).
    pub roundtrip: Histogram,
    /// Keeps the DSP load's result observable, so it is computed.
    pub dsp_sink: AtomicU64,
}

/// Parameters the non-realtime side sets and the track reads each block.
pub struct TrackParams {
    values: [AtomicU32; MAX_PARAMS],
    /// Partial-sum terms computed per block: the stand-in DSP load.
    dsp_terms: AtomicU64,
}

impl Default for TrackParams {
    fn default() -> Self {
        let params = TrackParams { values: std::array::from_fn(|_| AtomicU32::new(0)), dsp_terms: AtomicU64::new(0) };
        params.set(PARAM_MIX, 1.0);
        params
    }
}

impl TrackParams {
    pub fn set(&self, index: usize, value: f32) {
        if let Some(slot) = self.values.get(index) {
            slot.store(value.to_bits(), Ordering::Relaxed);
        }
    }

    pub fn get(&self, index: usize) -> f32 {
        self.values.get(index).map_or(0.0, |v| f32::from_bits(v.load(Ordering::Relaxed)))
    }

    pub fn set_dsp_terms(&self, terms: u64) {
        self.dsp_terms.store(terms, Ordering::Relaxed);
    }

    pub fn dsp_terms(&self) -> u64 {
        self.dsp_terms.load(Ordering::Relaxed)
    }
}

/// The rings between a track and its worker, for one worker incarnation.
pub struct ScriptLink {
    pub to_script: Producer,
    pub from_script: Consumer,
    /// The worker incarnation these rings belong to.
    pub generation: u32,
}

/// A track's latest declaration, shared by the supervisor (which writes it
/// when the worker reports one) and whoever runs the track (a plugin's main
/// thread reads it). Not for a realtime thread: it locks.
#[derive(Default)]
pub struct DeclaredCell {
    latest: std::sync::Mutex<Option<Arc<Declaration>>>,
    generation: AtomicU64,
}

impl DeclaredCell {
    pub fn set(&self, declaration: Declaration) {
        *self.latest.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(declaration));
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// The latest declaration (None before the script first loaded).
    pub fn get(&self) -> Option<Arc<Declaration>> {
        self.latest.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Counts the declarations set: a reader compares it with the last it saw.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }
}

/// The non-realtime side's handle on a track.
pub struct TrackPort {
    pub config: TrackConfig,
    pub stats: Arc<TrackStats>,
    pub params: Arc<TrackParams>,
    /// What the track's script declares, once its worker has said.
    pub declared: Arc<DeclaredCell>,
    links: rtrb::Producer<ScriptLink>,
    graveyard: rtrb::Consumer<ScriptLink>,
}

impl TrackPort {
    /// Hands the track a new link; it switches at its next block. If the track
    /// has not taken the previous ones yet, the new one waits behind them;
    /// false (and the link is dropped here) if four are already waiting.
    pub fn send_link(&mut self, link: ScriptLink) -> bool {
        self.links.push(link).is_ok()
    }

    /// Drops the links the track has finished with (off the realtime thread).
    pub fn collect_garbage(&mut self) -> usize {
        let mut dropped = 0;
        while self.graveyard.pop().is_ok() {
            dropped += 1;
        }
        dropped
    }
}

/// The realtime half of a track.
pub struct Track {
    cfg: TrackConfig,
    stats: Arc<TrackStats>,
    params: Arc<TrackParams>,
    links: rtrb::Consumer<ScriptLink>,
    graveyard: rtrb::Producer<ScriptLink>,
    link: Option<ScriptLink>,
    /// The input block being filled, planar.
    input: Box<[f32]>,
    /// Frames of `input` filled (and of `output` played).
    fill: usize,
    /// The output block being played, planar.
    output: Box<[f32]>,
    /// The last L input blocks (block j at j % L), for the dry fallback.
    dry: Box<[f32]>,
    /// Results waiting for their turn (block j at j % L), tagged j + 1.
    results: Box<[f32]>,
    result_tag: Box<[u64]>,
    result_status: Box<[u32]>,
    /// CLOCK_MONOTONIC when block j was pushed (at j % L), for round trips.
    sent_at: Box<[u64]>,
    /// Block j is in flight on the current link (at j % L, tagged j + 1):
    /// pushed, and neither answered, nor lost with a replaced link, nor
    /// forgotten by a reset. Only such a block is worth an offline wait.
    in_flight: Box<[u64]>,
    /// Results for blocks before this one are from before the last reset:
    /// dropped, like stale ones.
    first_wanted: u64,
    /// The block being filled: k.
    seq: u64,
    voice: Option<Voice>,
    /// One block of one channel, for rendering the voice.
    voice_scratch: Box<[f32]>,
    /// Script events waiting for their time on the input side (the voice's
    /// notes, parameter moves that set the track's own parameters).
    pending: Vec<Event>,
    param_overrides: [Option<f32>; MAX_PARAMS],
    /// Host events for the coming blocks (times on the track's timeline).
    inbox: Vec<Event>,
    /// Script events waiting to go out, with their arrival order (times on
    /// the input side: they leave at time + latency).
    outgoing: Vec<(Event, u32)>,
    arrivals: u32,
    /// Events due in the current call: (frame in the call, arrival, action).
    outbox: Vec<(u32, u32, EventAction)>,
    /// Where the current call began on the track's timeline.
    call_start: u64,
    /// The host's transport at `call_start` (None: it sent none).
    transport: Option<Transport>,
    /// What the block being filled carries: parameters and transport as
    /// they were at its first frame.
    block_params: [f32; MAX_PARAMS],
    block_transport: Transport,
    /// Offline rendering: how long to wait for each result (see `set_offline`).
    offline_wait_ns: Option<u64>,
    /// An offline wait timed out: stop waiting until a result is on time again.
    offline_stalled: bool,
}

impl Track {
    /// Creates a track and its port. Allocates everything the realtime side
    /// will ever use. Panics on a configuration out of range.
    pub fn new(cfg: TrackConfig) -> (Track, TrackPort) {
        assert!(cfg.is_valid(), "track configuration out of range: {cfg:?}");
        // The first clock read finds the vDSO (a syscall, once per process):
        // do it here, not on the realtime thread. The same for the kernel
        // choice of the DSP load.
        let _ = monotonic_ns();
        let _ = partial_sum(1, 2);
        let samples = cfg.block_samples();
        let l = cfg.latency_blocks;
        let (link_tx, link_rx) = rtrb::RingBuffer::new(4);
        let (grave_tx, grave_rx) = rtrb::RingBuffer::new(16);
        let stats = Arc::new(TrackStats::default());
        let params = Arc::new(TrackParams::default());
        let track = Track {
            voice: cfg.voice.map(|w| Voice::new(w, cfg.sample_rate, 0.3)),
            voice_scratch: vec![0.0; cfg.block].into(),
            stats: stats.clone(),
            params: params.clone(),
            links: link_rx,
            graveyard: grave_tx,
            link: None,
            input: vec![0.0; samples].into(),
            fill: 0,
            output: vec![0.0; samples].into(),
            dry: vec![0.0; samples * l].into(),
            results: vec![0.0; samples * l].into(),
            result_tag: vec![0; l].into(),
            result_status: vec![0; l].into(),
            sent_at: vec![0; l].into(),
            in_flight: vec![0; l].into(),
            first_wanted: 0,
            seq: 0,
            pending: Vec::with_capacity(MAX_PENDING_EVENTS),
            param_overrides: [None; MAX_PARAMS],
            inbox: Vec::with_capacity(MAX_INBOX_EVENTS),
            outgoing: Vec::with_capacity(MAX_OUTBOX_EVENTS),
            arrivals: 0,
            outbox: Vec::with_capacity(MAX_OUTBOX_EVENTS),
            call_start: 0,
            transport: None,
            block_params: [0.0; MAX_PARAMS],
            block_transport: Transport::default(),
            offline_wait_ns: None,
            offline_stalled: false,
            cfg: cfg.clone(),
        };
        let port =
            TrackPort { config: cfg, stats, params, declared: Default::default(), links: link_tx, graveyard: grave_rx };
        (track, port)
    }

    pub fn config(&self) -> &TrackConfig {
        &self.cfg
    }

    /// The track's counters (the same ones its port shows).
    pub fn stats(&self) -> &Arc<TrackStats> {
        &self.stats
    }

    /// The track's parameters (the same ones its port sets).
    pub fn params(&self) -> &Arc<TrackParams> {
        &self.params
    }

    /// Processes `frames` frames: `inputs[c][i]` in, `outputs[c][i]` out, for
    /// each of the track's channels (missing input channels read as silence,
    /// extra output channels are left alone). Any `frames`, any call pattern.
    /// Realtime-safe.
    pub fn process(&mut self, inputs: &[&[f32]], outputs: &mut [&mut [f32]], frames: usize) {
        let b = self.cfg.block;
        let mut pos = 0;
        while pos < frames {
            if self.fill == 0 {
                self.start_block();
            }
            let n = (frames - pos).min(b - self.fill);
            for c in 0..self.cfg.channels {
                let dst = &mut self.input[c * b + self.fill..c * b + self.fill + n];
                match inputs.get(c).and_then(|ch| ch.get(pos..pos + n)) {
                    Some(src) => dst.copy_from_slice(src),
                    None => dst.fill(0.0),
                }
                if let Some(out) = outputs.get_mut(c).and_then(|ch| ch.get_mut(pos..pos + n)) {
                    out.copy_from_slice(&self.output[c * b + self.fill..c * b + self.fill + n]);
                }
            }
            self.fill += n;
            pos += n;
            if self.fill == b {
                self.end_block();
                self.fill = 0;
            }
        }
    }

    /// Where the track is on its timeline: frames taken in so far.
    pub fn position(&self) -> u64 {
        self.seq * self.cfg.block as u64 + self.fill as u64
    }

    /// Starts a host call (a plugin's `process`): events pushed from now on
    /// are timed from here, [`Track::output_events`] lists what the calls
    /// to [`Track::process`] until the next `begin_call` emit, and
    /// `transport` (None: the host sent none) is what the blocks starting
    /// in this call see, advanced to their first frame. Realtime-safe.
    pub fn begin_call(&mut self, transport: Option<Transport>) {
        self.call_start = self.position();
        self.transport = transport.map(Transport::sanitized);
        self.outbox.clear();
    }

    /// Queues a host event (a note, MIDI, a parameter change) `offset`
    /// frames after the start of the current call (see
    /// [`Track::begin_call`]); it travels to the script with the block it
    /// falls in. Push in time order. False (and counted) when the track
    /// holds [`MAX_INBOX_EVENTS`] already. Realtime-safe.
    pub fn push_event(&mut self, offset: u32, action: EventAction) -> bool {
        if self.inbox.len() == self.inbox.capacity() {
            self.stats.dropped_events.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        self.inbox.push(Event { time: self.call_start + u64::from(offset), action });
        true
    }

    /// The script's events due in this call (up to the frames processed
    /// since [`Track::begin_call`]), as (frame in the call, action), in
    /// time order: each leaves at its time plus the track's latency, like
    /// the audio it came with; one whose turn had passed when it arrived
    /// leaves at the call's first frame (counted late). Call once per call,
    /// after the last [`Track::process`] of it. Realtime-safe (sorts in
    /// place).
    pub fn output_events(&mut self) -> impl Iterator<Item = (u32, EventAction)> + '_ {
        if self.cfg.events_out {
            self.emit_due();
        }
        self.outbox.sort_unstable_by_key(|&(frame, order, _)| (frame, order));
        self.outbox.iter().map(|&(frame, _, action)| (frame, action))
    }

    /// Moves the outgoing events whose output time has come into the outbox.
    fn emit_due(&mut self) {
        let now = self.position();
        let latency = self.cfg.latency_frames() as u64;
        let mut i = 0;
        while i < self.outgoing.len() {
            let (event, order) = self.outgoing[i];
            let due = event.time.saturating_add(latency);
            if due >= now {
                i += 1;
                continue;
            }
            self.outgoing.swap_remove(i);
            if due < self.call_start {
                self.stats.late_events.fetch_add(1, Ordering::Relaxed);
            }
            if self.outbox.len() < self.outbox.capacity() {
                let frame = due.saturating_sub(self.call_start).min(u64::from(u32::MAX)) as u32;
                self.outbox.push((frame, order, event.action));
                self.stats.events.fetch_add(1, Ordering::Relaxed);
            } else {
                self.stats.dropped_events.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Offline rendering (a DAW bouncing a track, not playing it): with
    /// `Some(wait)`, the track waits up to `wait` for each script result,
    /// and for its worker's link before sending a block, so the render
    /// contains the script's output however slow the script is. NOT
    /// realtime-safe while set (it sleeps); `None` (the default) restores
    /// the realtime rule: never wait, play dry. If a wait times out (a dead
    /// or hung script) the track stops waiting until results are on time
    /// again, so a broken script cannot stall a render block after block.
    pub fn set_offline(&mut self, wait: Option<std::time::Duration>) {
        self.offline_wait_ns = wait.map(|w| w.as_nanos().min(u128::from(u64::MAX)) as u64);
        if wait.is_none() {
            self.offline_stalled = false;
        }
    }

    /// Waits, up to `timeout`, until the track's worker has loaded its script
    /// (and run its `setup`) and the track holds the rings to it, so that
    /// its first blocks are answered instead of played dry. For the main
    /// thread before the track starts playing (a plugin's activation): NOT
    /// realtime-safe (it sleeps). True if the track is ready; a track that
    /// is not scripted is ready at once.
    pub fn wait_ready(&mut self, timeout: std::time::Duration) -> bool {
        let give_up = std::time::Instant::now() + timeout;
        loop {
            self.adopt_new_link();
            if !self.cfg.scripted || (self.link.is_some() && self.stats.script_ready.load(Ordering::Acquire)) {
                return true;
            }
            if std::time::Instant::now() >= give_up {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    /// Offline only: waits until `ready` holds or the wait times out.
    fn wait_offline(&mut self, ready: impl Fn(&Track) -> bool) {
        let Some(wait) = self.offline_wait_ns.filter(|_| self.cfg.scripted && !self.offline_stalled) else { return };
        let give_up = monotonic_ns().saturating_add(wait);
        loop {
            self.adopt_new_link();
            self.drain_replies();
            if ready(self) {
                return;
            }
            if monotonic_ns() > give_up {
                self.offline_stalled = true;
                return;
            }
            std::thread::sleep(std::time::Duration::from_micros(50));
        }
    }

    /// Forgets all audio in flight (CLAP reset): silence for L blocks again.
    /// Results still on their way for blocks sent before the reset are
    /// dropped when they come, and an offline render does not wait for them.
    pub fn reset(&mut self) {
        self.fill = 0;
        self.input.fill(0.0);
        self.output.fill(0.0);
        self.dry.fill(0.0);
        self.result_tag.fill(0);
        self.in_flight.fill(0);
        self.first_wanted = self.seq;
        self.pending.clear();
        self.inbox.clear();
        self.outgoing.clear();
        self.outbox.clear();
    }

    /// The first frame of output block k is due: take in what the script sent
    /// and choose what block k plays.
    fn start_block(&mut self) {
        self.adopt_new_link();
        self.drain_replies();
        let k = self.seq;
        // What input block k carries to the script: the parameters and the
        // transport at its first frame (changes inside it go as events).
        for i in 0..MAX_PARAMS {
            self.block_params[i] = self.param(i);
        }
        let start = k * self.cfg.block as u64;
        self.block_transport = match self.transport {
            Some(host) => host.advanced(start.saturating_sub(self.call_start), self.cfg.sample_rate),
            None => Transport::default().advanced(start, self.cfg.sample_rate),
        };
        let l = self.cfg.latency_blocks as u64;
        let n = self.cfg.block_samples();
        if k < l {
            self.output.fill(0.0);
            return;
        }
        let j = k - l;
        let slot = (j % l) as usize;
        // Offline, wait for the result only while it can still come.
        self.wait_offline(|t| t.result_tag[slot] == j + 1 || t.in_flight[slot] != j + 1);
        self.in_flight[slot] = 0;
        let dry = &self.dry[slot * n..(slot + 1) * n];
        let tagged = self.result_tag[slot] == j + 1;
        if tagged {
            self.offline_stalled = false;
        }
        self.result_tag[slot] = 0;
        let wet = &self.results[slot * n..(slot + 1) * n];
        let status = self.result_status[slot];
        let use_wet = if !self.cfg.scripted || j < self.first_wanted {
            // Not scripted, or forgotten by a reset: dry by design, not late.
            false
        } else if !tagged {
            self.stats.late_results.fetch_add(1, Ordering::Relaxed);
            self.stats.last_late_block.store(k, Ordering::Relaxed);
            false
        } else if status == ResultStatus::Processed as u32 && block::samples_playable(wet) {
            true
        } else {
            if status != ResultStatus::NoProcess as u32 {
                self.stats.script_errors.fetch_add(1, Ordering::Relaxed);
            }
            false
        };
        if use_wet {
            let mix = self.param(PARAM_MIX).clamp(0.0, 1.0);
            for ((out, &w), &d) in self.output.iter_mut().zip(wet).zip(dry) {
                *out = mix * w + (1.0 - mix) * d;
            }
        } else {
            self.output.copy_from_slice(dry);
        }
    }

    fn param(&self, index: usize) -> f32 {
        self.param_overrides[index].unwrap_or_else(|| self.params.get(index))
    }

    /// The last frame of input block k arrived: add the voice, run the DSP
    /// load, push the block to the script, keep it for the dry path.
    fn end_block(&mut self) {
        let k = self.seq;
        let b = self.cfg.block as u64;
        let l = self.cfg.latency_blocks as u64;
        self.render_events_and_voice(k * b, (k + 1) * b);
        let terms = self.params.dsp_terms();
        if terms > 0 {
            let sum = partial_sum(1, 1 + terms);
            self.stats.dsp_sink.store(sum.to_bits(), Ordering::Relaxed);
        }
        let n = self.cfg.block_samples();
        if self.cfg.scripted {
            self.push_block(k);
        }
        // The block's host events are spent, sent or not (in place: no
        // allocation).
        let end = (k + 1) * b;
        self.inbox.retain(|e| e.time >= end);
        let slot = (k % l) as usize;
        self.dry[slot * n..(slot + 1) * n].copy_from_slice(&self.input);
        self.seq += 1;
        self.stats.blocks.fetch_add(1, Ordering::Relaxed);
    }

    /// Writes block k straight into the next slot of the ring to the script
    /// (no scratch message): header, context, parameters, the block's host
    /// events, then the samples.
    fn push_block(&mut self, k: u64) {
        self.wait_offline(|t| t.link.is_some());
        let n = self.cfg.block_samples();
        let end = (k + 1) * self.cfg.block as u64;
        let due = self.inbox.iter().filter(|e| e.time < end).count();
        let carried = due.min(MAX_BLOCK_EVENTS);
        if due > carried {
            self.stats.dropped_events.fetch_add((due - carried) as u64, Ordering::Relaxed);
        }
        let layout = ProcessLayout::new(MAX_PARAMS, carried, n);
        let sent = monotonic_ns();
        let header = BlockHeader {
            kind: BlockKind::Process as u32,
            track: self.cfg.id,
            seq: k,
            frames: self.cfg.block as u32,
            channels: self.cfg.channels as u32,
            sample_time: k * self.cfg.block as u64,
            status: 0,
            count: MAX_PARAMS as u32,
            sent_ns: sent,
            done_ns: 0,
        };
        let mut head = [0u8; HEADER_BYTES];
        header.encode(&mut head);
        let mut context = [0u8; CONTEXT_BYTES];
        self.block_transport.encode(carried as u32, &mut context);
        let pushed = match self.link.as_mut().map(|link| link.to_script.reserve()) {
            None => Ok(false),
            Some(Ok(mut slot)) => {
                slot.put_bytes(0, &head);
                slot.put_bytes(layout.context, &context);
                slot.put_f32s(layout.params, &self.block_params);
                for (i, event) in self.inbox.iter().filter(|e| e.time < end).take(carried).enumerate() {
                    let mut bytes = [0u8; EVENT_BYTES];
                    event.encode(&mut bytes);
                    slot.put_bytes(layout.event(i), &bytes);
                }
                slot.put_f32s(layout.samples, &self.input);
                slot.commit(layout.len).map(|()| true)
            }
            Some(Err(e)) => Err(e),
        };
        let pushed = match pushed {
            Ok(false) => return,
            Ok(true) => Ok(()),
            Err(e) => Err(e),
        };
        match pushed {
            Ok(()) => {
                let slot = (k % self.cfg.latency_blocks as u64) as usize;
                self.sent_at[slot] = sent;
                self.in_flight[slot] = k + 1;
            }
            Err(PushError::Full) => {
                self.stats.ring_full.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => self.link_fault(),
        }
    }

    fn link_fault(&mut self) {
        self.stats.faults.fetch_add(1, Ordering::Relaxed);
        self.stats.link_faulted.store(true, Ordering::Release);
        self.in_flight.fill(0);
        // Keep the link (dropping it would free on this thread); stop using it.
        if let Some(link) = self.link.take() {
            if let Err(rtrb::PushError::Full(link)) = self.graveyard.push(link) {
                self.link = Some(link);
            }
        }
    }

    fn adopt_new_link(&mut self) {
        if self.graveyard.slots() == 0 {
            return; // the old link could not be disposed of; try next block
        }
        let Ok(new) = self.links.pop() else { return };
        self.stats.link_generation.store(new.generation, Ordering::Relaxed);
        self.stats.link_faulted.store(false, Ordering::Release);
        self.result_tag.fill(0);
        // What was sent on the old link is lost with it.
        self.in_flight.fill(0);
        if let Some(old) = self.link.replace(new) {
            // Cannot fail: a slot was free above and only this thread pushes.
            let _ = self.graveyard.push(old);
        }
    }

    /// Takes in every reply waiting, reading each in place in its ring slot:
    /// the header is copied out and validated, then events or samples are
    /// copied to where they are used (and validated there), then the slot is
    /// released.
    fn drain_replies(&mut self) {
        let k = self.seq;
        let l = self.cfg.latency_blocks as u64;
        let n = self.cfg.block_samples();
        loop {
            let Some(link) = self.link.as_mut() else { return };
            let message = match link.from_script.read() {
                Ok(message) => message,
                Err(PopError::Empty) => return,
                Err(_) => return self.link_fault(),
            };
            let checked = BlockHeader::read_from(&message).and_then(|h| {
                h.check_reply(message.len(), self.cfg.id, self.cfg.block, self.cfg.channels, MAX_EVENTS_PER_REPLY)
            });
            let Ok(h) = checked else {
                return self.link_fault();
            };
            if h.kind == BlockKind::Events as u32 {
                // Copied out first: the slot borrows the ring, and routing
                // an event needs the whole track.
                let mut events = [None; MAX_EVENTS_PER_REPLY];
                for (i, event) in events.iter_mut().enumerate().take(h.count as usize) {
                    let mut bytes = [0u8; EVENT_BYTES];
                    *event = message.copy_to(block::events_len(i), &mut bytes).then(|| Event::decode(&bytes));
                }
                message.release();
                for event in events.into_iter().take(h.count as usize) {
                    match event.flatten() {
                        Some(event) => self.take_script_event(event),
                        None => {
                            self.stats.faults.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                continue;
            }
            let j = h.seq;
            if j >= k {
                // A result for a block we never sent: the peer is lying.
                return self.link_fault();
            }
            if j + l < k || j < self.first_wanted {
                message.release();
                self.stats.stale_results.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let slot = (j % l) as usize;
            // The length was checked above: the samples are all there. They
            // are checked for playability when played (`start_block`).
            message.copy_f32s_to(HEADER_BYTES, &mut self.results[slot * n..(slot + 1) * n]);
            message.release();
            self.result_tag[slot] = j + 1;
            self.result_status[slot] = h.status;
            let sent = self.sent_at[slot];
            if sent != 0 && h.done_ns >= sent && h.done_ns <= monotonic_ns() {
                self.stats.roundtrip.record(h.done_ns - sent);
            }
        }
    }

    /// Routes one of the script's events: out to the caller (L blocks after
    /// its time), to the voice, or to the track's own parameters.
    fn take_script_event(&mut self, event: Event) {
        let (to_voice, out) = match event.action {
            EventAction::NoteOn { .. } | EventAction::NoteOff { .. } | EventAction::NoteChoke { .. } => {
                (self.voice.is_some(), self.cfg.events_out)
            }
            EventAction::Midi { .. } => (false, self.cfg.events_out),
            EventAction::SetParam { .. } => (!self.cfg.events_out, self.cfg.events_out),
            // The host's kind of event, sent back: not the script's to send.
            EventAction::ParamChange { .. } => {
                self.stats.faults.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        if to_voice {
            if self.pending.len() < self.pending.capacity() {
                self.pending.push(event);
            } else {
                self.stats.dropped_events.fetch_add(1, Ordering::Relaxed);
            }
        }
        if out {
            if self.outgoing.len() < self.outgoing.capacity() {
                self.arrivals = self.arrivals.wrapping_add(1);
                self.outgoing.push((event, self.arrivals));
            } else {
                self.stats.dropped_events.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Applies the events due in `[start, end)` at their exact frames and adds
    /// the voice into the input block.
    fn render_events_and_voice(&mut self, start: u64, end: u64) {
        let b = self.cfg.block;
        let mut offset = 0usize;
        loop {
            // The earliest pending event before `end`.
            let next = self
                .pending
                .iter()
                .enumerate()
                .filter(|(_, e)| e.time < end)
                .min_by_key(|(_, e)| e.time)
                .map(|(i, e)| (i, *e));
            let at = next.map_or(b, |(_, e)| e.time.saturating_sub(start) as usize);
            if at > offset {
                self.render_voice(offset, at);
                offset = at;
            }
            let Some((index, event)) = next else { break };
            self.pending.swap_remove(index);
            self.stats.events.fetch_add(1, Ordering::Relaxed);
            if event.time < start {
                self.stats.late_events.fetch_add(1, Ordering::Relaxed);
            }
            match (event.action, self.voice.as_mut()) {
                (EventAction::NoteOn { key, velocity, .. }, Some(voice)) => {
                    voice.note_on(f32::from(key), velocity, f32::INFINITY)
                }
                (EventAction::NoteOff { key, .. } | EventAction::NoteChoke { key, .. }, Some(voice)) => {
                    voice.note_off(f32::from(key))
                }
                (EventAction::SetParam { index, value }, _) => {
                    if let Some(slot) = self.param_overrides.get_mut(index as usize) {
                        *slot = Some(value);
                    }
                }
                _ => {}
            }
        }
    }

    /// Adds the voice for frames `from..to` of the block to every channel.
    fn render_voice(&mut self, from: usize, to: usize) {
        let Some(voice) = self.voice.as_mut() else { return };
        let b = self.cfg.block;
        let scratch = &mut self.voice_scratch[from..to];
        scratch.fill(0.0);
        voice.render_add(scratch);
        for c in 0..self.cfg.channels {
            for (dst, &v) in self.input[c * b + from..c * b + to].iter_mut().zip(scratch.iter()) {
                *dst += v;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shm::region::Region;

    /// The script's end of a track's rings, played by the test itself.
    struct FakeScript {
        _region: Region,
        from_host: Consumer,
        to_host: Producer,
        buf: Vec<u8>,
    }

    fn track_with_script(cfg: TrackConfig) -> (Track, TrackPort, FakeScript) {
        let (track, mut port) = Track::new(cfg.clone());
        let mut region = Region::create(&[cfg.slot_rings().to_script, cfg.slot_rings().from_script]).unwrap();
        let link = ScriptLink {
            to_script: region.producer(0).unwrap(),
            from_script: region.consumer(1).unwrap(),
            generation: 1,
        };
        let script = FakeScript {
            from_host: region.consumer(0).unwrap(),
            to_host: region.producer(1).unwrap(),
            _region: region,
            buf: vec![0; 8192],
        };
        assert!(port.send_link(link));
        (track, port, script)
    }

    impl FakeScript {
        /// Answers every waiting block with `f` applied to each sample,
        /// for the blocks `answer` accepts.
        fn serve(&mut self, f: impl Fn(f32) -> f32, answer: impl Fn(u64) -> bool) {
            while let Ok(len) = self.from_host.try_pop(&mut self.buf) {
                let h = BlockHeader::read(&self.buf[..len]).unwrap();
                if !answer(h.seq) {
                    continue;
                }
                let n = (h.frames * h.channels) as usize;
                let mut samples = vec![0.0f32; n];
                block::read_samples(&self.buf, len - n * 4, &mut samples);
                let reply = BlockHeader { kind: BlockKind::Result as u32, done_ns: monotonic_ns(), count: 0, ..h };
                let mut out = vec![0u8; HEADER_BYTES + n * 4];
                reply.encode(&mut out);
                let processed: Vec<f32> = samples.iter().map(|&s| f(s)).collect();
                block::write_samples(&mut out, HEADER_BYTES, &processed);
                self.to_host.try_push(&out).unwrap();
            }
        }

        fn send_raw(&mut self, msg: &[u8]) {
            self.to_host.try_push(msg).unwrap();
        }
    }

    /// A test signal: distinct, non-zero values per frame and channel.
    fn signal(frame: usize, channel: usize) -> f32 {
        ((frame * 7 + channel * 3) % 101) as f32 / 101.0 - 0.4
    }

    /// Feeds `total` frames in chunks of varying size; returns the output, planar.
    fn run(
        track: &mut Track,
        script: &mut FakeScript,
        total: usize,
        serve: impl FnMut(&mut FakeScript),
    ) -> Vec<Vec<f32>> {
        run_chunked(track, script, total, |step| 1 + (step * 37) % 64, serve)
    }

    /// Feeds `total` frames in chunks of `chunk(call number)` frames.
    fn run_chunked(
        track: &mut Track,
        script: &mut FakeScript,
        total: usize,
        chunk: impl Fn(usize) -> usize,
        mut serve: impl FnMut(&mut FakeScript),
    ) -> Vec<Vec<f32>> {
        let ch = track.config().channels;
        let mut out = vec![vec![0.0f32; total]; ch];
        let mut pos = 0;
        let mut step = 0;
        while pos < total {
            let n = chunk(step).min(total - pos);
            step += 1;
            let input: Vec<Vec<f32>> = (0..ch).map(|c| (pos..pos + n).map(|f| signal(f, c)).collect()).collect();
            let inputs: Vec<&[f32]> = input.iter().map(|v| v.as_slice()).collect();
            let mut outputs: Vec<&mut [f32]> = out.iter_mut().map(|v| &mut v[pos..pos + n]).collect();
            track.process(&inputs, &mut outputs, n);
            serve(script);
            pos += n;
        }
        out
    }

    #[test]
    fn output_is_the_script_applied_to_the_input_delayed_by_exactly_l_blocks() {
        for (channels, latency) in [(2, 2), (1, 1), (2, 3)] {
            let mut cfg = TrackConfig::new(7, "t");
            cfg.channels = channels;
            cfg.latency_blocks = latency;
            let (mut track, port, mut script) = track_with_script(cfg.clone());
            let delay = cfg.latency_frames();
            // With L = 1 a result has no time to come back unless calls end on
            // block boundaries; with L >= 2 any chunking works.
            let chunk = move |step: usize| if latency == 1 { 64 } else { 1 + (step * 37) % 64 };
            let out = run_chunked(&mut track, &mut script, 64 * 50 + 13, chunk, |s| s.serve(|x| 2.0 * x, |_| true));
            for (c, channel) in out.iter().enumerate() {
                for (i, &y) in channel.iter().enumerate() {
                    let expected = if i < delay { 0.0 } else { 2.0 * signal(i - delay, c) };
                    assert_eq!(y, expected, "channel {c} frame {i} (L = {latency})");
                }
            }
            assert_eq!(port.stats.late_results.load(Ordering::Relaxed), 0);
            assert!(port.stats.roundtrip.count() >= 45);
        }
    }

    #[test]
    fn a_slow_script_gives_the_dry_input_delayed_by_the_same_l_blocks() {
        let cfg = TrackConfig::new(1, "slow");
        let (mut track, port, mut script) = track_with_script(cfg.clone());
        // Odd blocks are never answered; even ones are, tripled.
        let out = run(&mut track, &mut script, 64 * 40, |s| s.serve(|x| 3.0 * x, |seq| seq % 2 == 0));
        let delay = cfg.latency_frames();
        for (i, &y) in out[0].iter().enumerate().skip(delay) {
            let block = (i - delay) / 64;
            let gain = if block % 2 == 0 { 3.0 } else { 1.0 };
            assert_eq!(y, gain * signal(i - delay, 0), "frame {i}");
        }
        // Blocks 0..38 were due; the 19 odd ones were late.
        assert_eq!(port.stats.late_results.load(Ordering::Relaxed), 19);
    }

    #[test]
    fn a_result_after_its_turn_is_dropped_not_played() {
        let cfg = TrackConfig::new(1, "stale");
        let (mut track, port, mut script) = track_with_script(cfg.clone());
        // Hold every reply back by four blocks: all arrive too late.
        let mut held: Vec<Vec<u8>> = Vec::new();
        let out = run(&mut track, &mut script, 64 * 20, |s| {
            while let Ok(len) = s.from_host.try_pop(&mut s.buf) {
                let h = BlockHeader::read(&s.buf[..len]).unwrap();
                let mut reply = vec![0u8; HEADER_BYTES + 128 * 4];
                BlockHeader { kind: BlockKind::Result as u32, ..h }.encode(&mut reply);
                held.push(reply);
            }
            if held.len() > 4 {
                let msg = held.remove(0);
                s.send_raw(&msg);
            }
        });
        let delay = cfg.latency_frames();
        for (i, &y) in out[1].iter().enumerate().skip(delay) {
            assert_eq!(y, signal(i - delay, 1), "dry at frame {i}");
        }
        assert!(port.stats.stale_results.load(Ordering::Relaxed) >= 10);
    }

    #[test]
    fn hostile_replies_fault_the_link_and_audio_goes_on_dry() {
        let bad_replies: Vec<Box<dyn Fn(BlockHeader) -> Vec<u8>>> = vec![
            Box::new(|h| {
                let mut m = vec![0u8; HEADER_BYTES + 128 * 4];
                BlockHeader { kind: BlockKind::Result as u32, track: 99, ..h }.encode(&mut m);
                m
            }),
            Box::new(|h| {
                let mut m = vec![0u8; HEADER_BYTES + 10];
                BlockHeader { kind: BlockKind::Result as u32, ..h }.encode(&mut m);
                m
            }),
            Box::new(|h| {
                let mut m = vec![0u8; HEADER_BYTES + 128 * 4];
                BlockHeader { kind: BlockKind::Result as u32, seq: h.seq + 1000, ..h }.encode(&mut m);
                m
            }),
            Box::new(|h| {
                let mut m = vec![0u8; HEADER_BYTES + 128 * 4];
                BlockHeader { kind: BlockKind::Result as u32, frames: 1 << 30, ..h }.encode(&mut m);
                m
            }),
        ];
        for make in bad_replies {
            let cfg = TrackConfig::new(1, "hostile");
            let (mut track, port, mut script) = track_with_script(cfg.clone());
            let out = run(&mut track, &mut script, 64 * 10, |s| {
                while let Ok(len) = s.from_host.try_pop(&mut s.buf) {
                    let h = BlockHeader::read(&s.buf[..len]).unwrap();
                    let _ = s.to_host.try_push(&make(h));
                }
            });
            assert!(port.stats.faults.load(Ordering::Relaxed) >= 1);
            assert!(port.stats.link_faulted.load(Ordering::Relaxed));
            let delay = cfg.latency_frames();
            for (i, &y) in out[0].iter().enumerate().skip(delay) {
                assert_eq!(y, signal(i - delay, 0));
            }
        }
    }

    #[test]
    fn non_finite_or_absurdly_loud_results_are_not_played() {
        for bad in [f32::NAN, f32::INFINITY, -f32::INFINITY, 1e30, -1001.0] {
            let cfg = TrackConfig::new(1, "bad");
            let (mut track, port, mut script) = track_with_script(cfg.clone());
            // Every other sample bad: one is enough to refuse a block.
            let out = run(&mut track, &mut script, 64 * 10, |s| s.serve(|x| if x > 0.0 { bad } else { x }, |_| true));
            let delay = cfg.latency_frames();
            for (i, &y) in out[0].iter().enumerate().skip(delay) {
                assert_eq!(y, signal(i - delay, 0), "{bad}: dry at frame {i}");
            }
            assert!(port.stats.script_errors.load(Ordering::Relaxed) >= 7, "{bad}");
        }
        // Loud but within +60 dBFS is the script's business: played.
        let (mut track, port, mut script) = track_with_script(TrackConfig::new(1, "loud"));
        let out = run(&mut track, &mut script, 64 * 10, |s| s.serve(|x| x * 1000.0, |_| true));
        assert!(out[0].iter().any(|y| y.abs() > 100.0));
        assert_eq!(port.stats.script_errors.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn events_land_on_their_exact_sample() {
        let mut cfg = TrackConfig::new(4, "voice");
        cfg.voice = Some(Waveform::Sine);
        let (mut track, port, mut script) = track_with_script(cfg.clone());
        let note_at = 64 * 6 + 37;
        let mut sent = false;
        let total = 64 * 12;
        let mut out = vec![vec![0.0f32; total]; 2];
        let silence = vec![0.0f32; 64];
        for k in 0..12 {
            let inputs: Vec<&[f32]> = vec![&silence, &silence];
            let mut outputs: Vec<&mut [f32]> = out.iter_mut().map(|v| &mut v[k * 64..(k + 1) * 64]).collect();
            track.process(&inputs, &mut outputs, 64);
            script.serve(|x| x, |_| true);
            if !sent {
                let header = BlockHeader { kind: BlockKind::Events as u32, track: 4, count: 2, ..Default::default() };
                let mut msg = vec![0u8; HEADER_BYTES + 2 * EVENT_BYTES];
                header.encode(&mut msg);
                let on = Event {
                    time: note_at as u64,
                    action: EventAction::NoteOn { channel: 0, key: 69, velocity: 1.0, note_id: -1 },
                };
                let off = Event {
                    time: note_at as u64 + 2400,
                    action: EventAction::NoteOff { channel: 0, key: 69, velocity: 0.0, note_id: -1 },
                };
                on.encode(&mut msg[HEADER_BYTES..]);
                off.encode(&mut msg[HEADER_BYTES + EVENT_BYTES..]);
                script.send_raw(&msg);
                sent = true;
            }
        }
        let first = out[0].iter().position(|&s| s != 0.0).expect("the note sounds");
        assert_eq!(first, note_at + cfg.latency_frames(), "onset on the event's sample, delayed by the latency");
        assert_eq!(out[0], out[1]);
        assert_eq!(port.stats.events.load(Ordering::Relaxed), 1, "the note off is not due yet");
        assert_eq!(port.stats.late_events.load(Ordering::Relaxed), 0);
    }

    /// The events and transport of every Process message waiting, by block.
    fn take_blocks(script: &mut FakeScript) -> Vec<(BlockHeader, Transport, Vec<Event>, [f32; MAX_PARAMS])> {
        let mut blocks = Vec::new();
        while let Ok(len) = script.from_host.try_pop(&mut script.buf) {
            let h = BlockHeader::read(&script.buf[..len]).unwrap();
            let context: [u8; CONTEXT_BYTES] =
                script.buf[HEADER_BYTES..HEADER_BYTES + CONTEXT_BYTES].try_into().unwrap();
            let (transport, count) = Transport::decode(&context);
            let layout = ProcessLayout::new(h.count as usize, count as usize, (h.frames * h.channels) as usize);
            assert_eq!(layout.len, len, "the message is exactly as long as its layout");
            let events = (0..count as usize)
                .map(|i| Event::decode(&script.buf[layout.events + i * EVENT_BYTES..]).expect("a valid event"))
                .collect();
            let mut params = [0.0f32; MAX_PARAMS];
            block::read_samples(&script.buf, layout.params, &mut params);
            blocks.push((h, transport, events, params));
        }
        blocks
    }

    #[test]
    fn host_events_travel_with_the_block_they_fall_in_with_the_transport_and_parameters() {
        let cfg = TrackConfig::new(2, "events");
        let (mut track, port, mut script) = track_with_script(cfg.clone());
        let silence = vec![0.0f32; 100];
        let mut out = vec![vec![0.0f32; 100]; 2];
        let on = EventAction::NoteOn { channel: 1, key: 60, velocity: 0.5, note_id: 3 };
        let change = EventAction::ParamChange { index: 5, value: 0.25 };
        let host = Transport { flags: Transport::FROM_HOST | Transport::PLAYING, tempo: 90.0, ..Transport::default() };
        // Calls of 100 frames: the second starts at frame 100, inside block 1.
        port.params.set(5, 0.75);
        for call in 0..3u32 {
            track.begin_call(Some(host));
            if call == 1 {
                assert!(track.push_event(10, on));
                assert!(track.push_event(40, change));
            }
            let mut outputs: Vec<&mut [f32]> = out.iter_mut().map(|v| v.as_mut_slice()).collect();
            track.process(&[&silence, &silence], &mut outputs, 100);
        }
        let blocks = take_blocks(&mut script);
        assert_eq!(blocks.len(), 4, "blocks 0-3 are complete after 300 frames");
        let (h, _, events, _) = &blocks[1];
        assert_eq!(h.seq, 1);
        assert_eq!(events.as_slice(), &[Event { time: 110, action: on }], "frame 10 of the call: sample 110, block 1");
        let (_, transport, events, params) = &blocks[2];
        assert_eq!(events.as_slice(), &[Event { time: 140, action: change }]);
        assert_eq!(params[5], 0.75, "a block carries the values at its first frame");
        // Block 2 starts at frame 128, 28 frames into the second call.
        let expected = host.advanced(28, cfg.sample_rate);
        assert_eq!(*transport, expected);
        assert!(blocks[0].2.is_empty() && blocks[3].2.is_empty());
        // No host transport: the defaults, counted from the track's start.
        track.begin_call(None);
        let mut outputs: Vec<&mut [f32]> = out.iter_mut().map(|v| v.as_mut_slice()).collect();
        track.process(&[&silence, &silence], &mut outputs, 100);
        // Block 5 starts at frame 320, inside this call (block 4 began in the last).
        let blocks = take_blocks(&mut script);
        let (h, transport, _, _) = blocks.last().expect("block 5");
        assert_eq!(h.seq, 5);
        assert_eq!(*transport, Transport::default().advanced(h.seq * 64, cfg.sample_rate));
        assert!(!transport.has(Transport::FROM_HOST));
    }

    #[test]
    fn script_events_leave_at_their_time_plus_the_latency() {
        let mut cfg = TrackConfig::new(3, "out");
        cfg.events_out = true;
        let (mut track, port, mut script) = track_with_script(cfg.clone());
        let latency = cfg.latency_frames() as u64;
        let send = |script: &mut FakeScript, events: &[Event]| {
            let header = BlockHeader {
                kind: BlockKind::Events as u32,
                track: 3,
                count: events.len() as u32,
                ..Default::default()
            };
            let mut msg = vec![0u8; HEADER_BYTES + events.len() * EVENT_BYTES];
            header.encode(&mut msg);
            for (i, e) in events.iter().enumerate() {
                e.encode(&mut msg[HEADER_BYTES + i * EVENT_BYTES..]);
            }
            script.send_raw(&msg);
        };
        let on = EventAction::NoteOn { channel: 0, key: 64, velocity: 1.0, note_id: 9 };
        let off = EventAction::NoteOff { channel: 0, key: 64, velocity: 0.0, note_id: 9 };
        let moved = EventAction::SetParam { index: 2, value: 0.5 };
        send(
            &mut script,
            &[Event { time: 70, action: on }, Event { time: 300, action: off }, Event { time: 70, action: moved }],
        );
        let silence = vec![0.0f32; 50];
        let mut out = vec![vec![0.0f32; 50]; 2];
        let mut seen = Vec::new();
        for call in 0..12u64 {
            track.begin_call(None);
            let mut outputs: Vec<&mut [f32]> = out.iter_mut().map(|v| v.as_mut_slice()).collect();
            track.process(&[&silence, &silence], &mut outputs, 50);
            seen.extend(track.output_events().map(|(frame, action)| (call * 50 + u64::from(frame), action)));
        }
        assert_eq!(seen, vec![(70 + latency, on), (70 + latency, moved), (300 + latency, off)]);
        // Out, not applied: the track's own parameter is the host's.
        assert_eq!(track.param(2), port.params.get(2));
        assert_eq!(port.stats.late_events.load(Ordering::Relaxed), 0);
        // One whose turn has passed leaves at the next call's first frame, late.
        send(&mut script, &[Event { time: 10, action: on }]);
        let mut late = Vec::new();
        for _ in 0..2 {
            track.begin_call(None);
            let mut outputs: Vec<&mut [f32]> = out.iter_mut().map(|v| v.as_mut_slice()).collect();
            track.process(&[&silence, &silence], &mut outputs, 50);
            late.extend(track.output_events());
        }
        assert_eq!(late, vec![(0, on)]);
        assert_eq!(port.stats.late_events.load(Ordering::Relaxed), 1);
        // The host's kind of event from the script is a fault, not applied.
        send(&mut script, &[Event { time: 700, action: EventAction::ParamChange { index: 1, value: 1.0 } }]);
        track.begin_call(None);
        let mut outputs: Vec<&mut [f32]> = out.iter_mut().map(|v| v.as_mut_slice()).collect();
        track.process(&[&silence, &silence], &mut outputs, 50);
        assert_eq!(port.stats.faults.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_new_link_is_adopted_and_the_old_one_handed_back() {
        let cfg = TrackConfig::new(1, "relink");
        let (mut track, mut port, mut script) = track_with_script(cfg.clone());
        let _ = run(&mut track, &mut script, 64 * 4, |s| s.serve(|x| x, |_| true));
        let mut region = Region::create(&[cfg.slot_rings().to_script, cfg.slot_rings().from_script]).unwrap();
        let link = ScriptLink {
            to_script: region.producer(0).unwrap(),
            from_script: region.consumer(1).unwrap(),
            generation: 2,
        };
        assert!(port.send_link(link));
        let _ = run(&mut track, &mut script, 64 * 2, |_| {});
        assert_eq!(port.stats.link_generation.load(Ordering::Relaxed), 2);
        assert_eq!(port.collect_garbage(), 1);
    }
}

#[cfg(test)]
mod proptests {
    //! A hostile worker writes anything into a track's from-script ring (bytes,
    //! replies with fields off, NaN samples, lies about sequence numbers, bad
    //! events) and scribbles over both rings' positions. The track never
    //! panics, its output is always finite, every output block is exactly the
    //! dry input delayed by L blocks or exactly a well-formed processed reply
    //! for that block, and it faults its link exactly when it read something
    //! malformed.
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;
    use crate::shm::region::Region;

    const ID: u32 = 5;

    #[derive(Clone, Debug)]
    enum Hostile {
        /// Arbitrary bytes.
        Bytes(Vec<u8>),
        /// A processed block, with fields possibly off.
        Result {
            kind: u32,
            track: u32,
            /// The reply's block number, counted back from the block about to play.
            seq_back: i64,
            frames_off: u32,
            channels_off: u32,
            status: u32,
            len_off: isize,
            samples: Vec<f32>,
        },
        /// Events from `tick`, possibly malformed.
        Events {
            track: u32,
            count: u32,
            len_off: isize,
            events: Vec<(u64, u32, u32, f32, f32)>,
        },
        /// The worker overwrites the from-script ring's tail (a step from its
        /// value), or the to-script ring's head.
        Tail(i8),
        Head(i8),
    }

    /// `good`, or with probability `rate` a value from `bad`.
    fn sometimes<T: Clone + std::fmt::Debug + 'static>(
        rate: f64,
        good: T,
        bad: impl Strategy<Value = T> + 'static,
    ) -> BoxedStrategy<T> {
        (prop::bool::weighted(rate), bad).prop_map(move |(off, v)| if off { v } else { good.clone() }).boxed()
    }

    /// What the worker sends: well-formed replies with each field off with
    /// probability `rate`, garbage and scribbles in proportion.
    fn hostile(rate: f64) -> impl Strategy<Value = Hostile> {
        let off = move || sometimes(rate, 0u32, prop_oneof![Just(1u32), any::<u32>()]);
        let len_off = move || sometimes(rate, 0isize, -5..=5isize);
        let result = (
            sometimes(rate, BlockKind::Result as u32, prop_oneof![0..5u32, any::<u32>()]),
            sometimes(rate, ID, any::<u32>()),
            sometimes(rate, 1..=4i64, prop_oneof![(-2..=0i64).prop_map(|b| b..=b), any::<i64>().prop_map(|b| b..=b)])
                .prop_flat_map(|r| r),
            off(),
            off(),
            prop_oneof![6 => Just(0u32), 2 => 1..=2u32],
            sometimes(rate, None, any::<u32>().prop_map(Some)),
            len_off(),
            prop::collection::vec(prop_oneof![8 => -2.0f32..2.0, 1 => proptest::num::f32::ANY], 32),
        )
            .prop_map(
                |(kind, track, seq_back, frames_off, channels_off, status, bad_status, len_off, samples)| {
                    Hostile::Result {
                        kind,
                        track,
                        seq_back,
                        frames_off,
                        channels_off,
                        status: bad_status.unwrap_or(status),
                        len_off,
                        samples,
                    }
                },
            );
        // Any event but one setting the mix (parameter 0), which would make
        // the output a blend rather than exactly wet or dry.
        let event = (
            any::<u64>(),
            prop_oneof![0..4u32, any::<u32>()],
            // A parameter index, or a pitch's bits.
            prop_oneof![1..10u32, 1..u32::MAX, proptest::num::f32::ANY.prop_map(|p| p.to_bits().max(1))],
            proptest::num::f32::ANY,
            proptest::num::f32::ANY,
        );
        let events = (
            sometimes(rate, ID, any::<u32>()),
            (0..=MAX_EVENTS_PER_REPLY as u32, sometimes(rate, None, any::<u32>().prop_map(Some)))
                .prop_map(|(count, bad)| bad.unwrap_or(count)),
            len_off(),
            prop::collection::vec(event, MAX_EVENTS_PER_REPLY + 1),
        )
            .prop_map(|(track, count, len_off, events)| Hostile::Events { track, count, len_off, events });
        // Garbage and scribbles in proportion to the rate (none at rate 0).
        let weight = (rate * 1000.0) as u32;
        prop_oneof![
            weight => prop::collection::vec(any::<u8>(), 0..200).prop_map(Hostile::Bytes),
            8000 => result,
            2000 => events,
            weight => any::<i8>().prop_map(Hostile::Tail),
            weight => any::<i8>().prop_map(Hostile::Head),
        ]
    }

    /// A track's shape, its voice if it has one, and, per block, what the
    /// worker does before it: one case in four well-behaved, the others
    /// hostile at some rate.
    fn case() -> impl Strategy<Value = (usize, usize, usize, Option<Waveform>, Vec<Vec<Hostile>>)> {
        let steps = prop::sample::select(vec![0.0, 0.01, 0.05, 0.3])
            .prop_flat_map(|rate| prop::collection::vec(prop::collection::vec(hostile(rate), 0..3), 1..24));
        let voice = prop::option::weighted(
            0.2,
            prop::sample::select(vec![Waveform::Sine, Waveform::Saw, Waveform::Noise, Waveform::Pluck]),
        );
        (1..=2usize, 1..=16usize, 1..=3usize, voice, steps)
    }

    fn encode(h: &Hostile, k: u64, cfg: &TrackConfig) -> Vec<u8> {
        match h {
            Hostile::Bytes(bytes) => bytes.clone(),
            Hostile::Result { kind, track, seq_back, frames_off, channels_off, status, len_off, samples } => {
                let n = cfg.block_samples();
                let len = (HEADER_BYTES + n * 4).saturating_add_signed(*len_off);
                let mut msg = vec![0u8; len.max(HEADER_BYTES)];
                let header = BlockHeader {
                    kind: *kind,
                    track: *track,
                    seq: (k as i64).wrapping_sub(*seq_back) as u64,
                    frames: (cfg.block as u32).wrapping_add(*frames_off),
                    channels: (cfg.channels as u32).wrapping_add(*channels_off),
                    status: *status,
                    ..Default::default()
                };
                header.encode(&mut msg);
                let room = (len.max(HEADER_BYTES) - HEADER_BYTES) / 4;
                block::write_samples(&mut msg, HEADER_BYTES, &samples[..n.min(room)]);
                msg.truncate(len);
                msg
            }
            Hostile::Events { track, count, len_off, events } => {
                let shown = (*count as usize).min(events.len());
                let len = (HEADER_BYTES + shown * EVENT_BYTES).saturating_add_signed(*len_off);
                let mut msg = vec![0u8; HEADER_BYTES + shown * EVENT_BYTES];
                let header =
                    BlockHeader { kind: BlockKind::Events as u32, track: *track, count: *count, ..Default::default() };
                header.encode(&mut msg);
                for (i, &(time, kind, a, b, c)) in events[..shown].iter().enumerate() {
                    let at = HEADER_BYTES + i * EVENT_BYTES;
                    msg[at..at + 8].copy_from_slice(&time.to_le_bytes());
                    for (w, word) in [kind, a, b.to_bits(), c.to_bits()].into_iter().enumerate() {
                        msg[at + 8 + 4 * w..at + 12 + 4 * w].copy_from_slice(&word.to_le_bytes());
                    }
                }
                msg.resize(len, 0);
                msg
            }
            Hostile::Tail(_) | Hostile::Head(_) => unreachable!("not a message"),
        }
    }

    /// What the track should make of a message read before block `k`: `None`
    /// if it is malformed (a fault), else the processed samples it may play
    /// for block `j`, if any.
    fn judge(msg: &[u8], k: u64, cfg: &TrackConfig) -> Option<Option<(u64, Vec<f32>)>> {
        let h = BlockHeader::read(msg).ok()?;
        if h.track != ID {
            return None;
        }
        match h.kind {
            2 => {
                let n = cfg.block_samples();
                let ok = h.frames as usize == cfg.block
                    && h.channels as usize == cfg.channels
                    && h.status <= 2
                    && msg.len() == HEADER_BYTES + n * 4
                    && h.seq < k;
                if !ok {
                    return None;
                }
                let mut samples = vec![0.0f32; n];
                block::read_samples(msg, HEADER_BYTES, &mut samples);
                let playable = h.status == 0 && samples.iter().all(|s| s.is_finite());
                Some(playable.then_some((h.seq, samples)))
            }
            3 => {
                let ok = h.count as usize <= MAX_EVENTS_PER_REPLY
                    && msg.len() == HEADER_BYTES + h.count as usize * EVENT_BYTES;
                ok.then_some(None)
            }
            _ => None,
        }
    }

    fn signal(frame: usize, channel: usize) -> f32 {
        ((frame * 7 + channel * 3) % 101) as f32 / 101.0 - 0.4
    }

    proptest! {
        #![proptest_config(crate::proptest_config::cases(128))]

        #[test]
        fn hostile_replies_give_dry_or_exact_wet_audio((channels, block, latency, voice, steps) in case()) {
            let mut cfg = TrackConfig::new(ID, "hostile");
            cfg.channels = channels;
            cfg.block = block;
            cfg.latency_blocks = latency;
            // The script's notes play on the voice, added to the input: then
            // the output is only checked for being finite.
            cfg.voice = voice;
            let (mut track, mut port) = Track::new(cfg.clone());
            let mut region = Region::create(&[cfg.slot_rings().to_script, cfg.slot_rings().from_script]).unwrap();
            let link = ScriptLink {
                to_script: region.producer(0).unwrap(),
                from_script: region.consumer(1).unwrap(),
                generation: 1,
            };
            prop_assert!(port.send_link(link));
            let mut from_host = region.consumer(0).unwrap();
            let mut to_host = region.producer(1).unwrap();
            let mut scratch = vec![0u8; cfg.slot_rings().to_script.payload];
            let mut wet: HashMap<u64, Vec<Vec<f32>>> = HashMap::new();
            let (mut malformed, mut scribbled) = (false, false);
            let n = cfg.block_samples();
            let blocks = steps.len() + 1;
            for k in 0..blocks {
                for h in steps.get(k).into_iter().flatten() {
                    let word = match h {
                        Hostile::Tail(d) => Some((region.ring_offset(1), d)),
                        Hostile::Head(d) => Some((region.ring_offset(0) + 128, d)),
                        _ => None,
                    };
                    if let Some((at, d)) = word {
                        let old = u64::from_le_bytes(region.peek(at, 8).try_into().unwrap());
                        region.scribble(at, &old.wrapping_add_signed(*d as i64).to_le_bytes());
                        scribbled |= *d != 0;
                        continue;
                    }
                    if let Hostile::Result { seq_back: 1..=4, .. } = h
                        && let Hostile::Result { seq_back, .. } = h
                        && (k as i64) < *seq_back
                    {
                        continue; // a reply to a block not yet sent: only a lying worker sends it
                    }
                    let msg = encode(h, k as u64, &cfg);
                    if msg.len() > to_host.shape().payload || to_host.try_push(&msg).is_err() {
                        continue;
                    }
                    match judge(&msg, k as u64, &cfg) {
                        None => malformed = true,
                        Some(Some((j, samples))) => wet.entry(j).or_default().push(samples),
                        Some(None) => {}
                    }
                }
                let input: Vec<Vec<f32>> =
                    (0..channels).map(|c| (k * block..(k + 1) * block).map(|f| signal(f, c)).collect()).collect();
                let inputs: Vec<&[f32]> = input.iter().map(Vec::as_slice).collect();
                let mut out = vec![vec![f32::NAN; block]; channels];
                let mut outputs: Vec<&mut [f32]> = out.iter_mut().map(Vec::as_mut_slice).collect();
                track.process(&inputs, &mut outputs, block);
                while from_host.try_pop(&mut scratch).is_ok() {}
                prop_assert!(out.iter().flatten().all(|s| s.is_finite()), "block {}: {:?}", k, out);
                let Some(j) = k.checked_sub(latency).filter(|_| voice.is_none()) else {
                    prop_assert!(voice.is_some() || out.iter().flatten().all(|&s| s == 0.0), "silence at first");
                    continue;
                };
                let planar: Vec<f32> = out.concat();
                let dry: Vec<f32> = (0..channels).flat_map(|c| (j * block..(j + 1) * block).map(move |f| signal(f, c))).collect();
                let is_wet = wet.get(&(j as u64)).is_some_and(|all| all.iter().any(|w| w[..] == planar[..]));
                prop_assert!(planar == dry || is_wet, "block {} is neither dry nor a reply for block {}", k, j);
                prop_assert_eq!(planar.len(), n);
            }
            let stats = &port.stats;
            if malformed && !scribbled {
                prop_assert!(stats.link_faulted.load(Ordering::Relaxed));
                prop_assert!(stats.faults.load(Ordering::Relaxed) >= 1);
            }
            if !malformed && !scribbled {
                prop_assert!(!stats.link_faulted.load(Ordering::Relaxed), "faulted on well-formed replies");
            }
        }
    }
}
