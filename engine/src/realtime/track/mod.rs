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
//!
//! Here: the configuration and the block path (cutting blocks, pushing them
//! to the script, choosing what each output block plays, taking replies in).
//! Beside it: `port` (the handle and what both sides share), `events` (the
//! event queues, host events in and script events out) and `tests`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::compute::partial_sum;
use crate::realtime::clock::monotonic_ns;
use crate::realtime::voice::{Voice, Waveform};
use crate::shm::memory::{present_filled, present_vec};
use crate::shm::ring::{PopError, PushError};
use crate::wire::block::{
    self, BlockHeader, BlockKind, CONTEXT_BYTES, EVENT_BYTES, Event, EventAction, HEADER_BYTES, MAX_BLOCK_EVENTS,
    MAX_EVENTS_PER_REPLY, MAX_PARAMS, ProcessLayout, ResultStatus, Transport,
};
use crate::wire::rings::SlotRings;

mod events;
mod port;
#[cfg(test)]
mod tests;

pub use events::{MAX_INBOX_EVENTS, MAX_OUTBOX_EVENTS, MAX_PENDING_EVENTS};
pub use port::{DeclaredCell, ScriptLink, TrackParams, TrackPort, TrackStats};

/// Parameter 0 is the wet/dry mix every track has.
pub const PARAM_MIX: usize = 0;

/// What a track is.
#[derive(Clone, Debug)]
pub struct TrackConfig {
    /// The track's id: every block header to its script carries it, every
    /// reply must, and the supervisor names the track by it (give each track
    /// its own).
    pub id: u32,
    /// A name for people: log messages about the track use it, and its script sees it (`ctx.name`).
    pub name: String,
    /// Audio channels, 1..=8.
    pub channels: usize,
    /// Frames per internal block.
    pub block: usize,
    /// L: blocks between pushing a block and playing its result.
    pub latency_blocks: usize,
    /// Sample rate, in Hz (frames per second); positive.
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
    /// Track `id` named `name`, with the defaults: stereo, blocks of 64
    /// frames, a latency of 2 blocks, 48 kHz, scripted, no voice, no events
    /// out, not an instrument.
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
        // Buffers the realtime thread writes are written here first, so its
        // first block takes no page fault (see `crate::shm::memory`).
        let track = Track {
            voice: cfg.voice.map(|w| Voice::new(w, cfg.sample_rate, 0.3)),
            voice_scratch: present_filled(0.0, cfg.block).into(),
            stats: stats.clone(),
            params: params.clone(),
            links: link_rx,
            graveyard: grave_tx,
            link: None,
            input: present_filled(0.0, samples).into(),
            fill: 0,
            output: present_filled(0.0, samples).into(),
            dry: present_filled(0.0, samples * l).into(),
            results: present_filled(0.0, samples * l).into(),
            result_tag: vec![0; l].into(),
            result_status: vec![0; l].into(),
            sent_at: vec![0; l].into(),
            in_flight: vec![0; l].into(),
            first_wanted: 0,
            seq: 0,
            pending: present_vec(MAX_PENDING_EVENTS),
            param_overrides: [None; MAX_PARAMS],
            inbox: present_vec(MAX_INBOX_EVENTS),
            outgoing: present_vec(MAX_OUTBOX_EVENTS),
            arrivals: 0,
            outbox: present_vec(MAX_OUTBOX_EVENTS),
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

    /// What the track was created with.
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
            // The mix now: read with the other parameters just above.
            let mix = self.block_params[PARAM_MIX].clamp(0.0, 1.0);
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
        let Some(link) = self.link.as_mut() else { return };
        let pushed = match link.to_script.reserve() {
            Ok(mut slot) => {
                slot.put_bytes(0, &head);
                slot.put_bytes(layout.context, &context);
                slot.put_f32s(layout.params, &self.block_params);
                for (i, event) in self.inbox.iter().filter(|e| e.time < end).take(carried).enumerate() {
                    let mut bytes = [0u8; EVENT_BYTES];
                    event.encode(&mut bytes);
                    slot.put_bytes(layout.event(i), &bytes);
                }
                slot.put_f32s(layout.samples, &self.input);
                slot.commit(layout.len)
            }
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
}
