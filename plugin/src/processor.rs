//! The audio half of an instance: what runs inside the host's `process`.
//!
//! Everything here is realtime-safe: it allocates only in [`Processor::new`]
//! (at activation, on the main thread), takes no lock, makes no system call
//! but the engine's wake of a sleeping worker, and does bounded work per
//! frame. Any host block size works, changing from call to call: the engine
//! track re-chunks into its fixed internal block. Parameter changes take
//! effect on the exact frame their event names: Mix and Bypass on that
//! sample, the DSP load at the engine's next internal block, a script's
//! declared parameter wherever the script applies it (it gets the change
//! with its frame, `ctx.param_changes`). Notes and MIDI from the host go to
//! the script with the block they fall in, at their frame; the script's
//! notes, MIDI and parameter moves come back out λ after their time, like
//! its audio. Parameters moved in the editor reach the host from here too
//! (gesture begin, value, gesture end at the call's first frame), through
//! a wait-free ring from the main thread ([`send_gestures`]).
//!
//! Signal path per channel, with λ the reported latency:
//!
//! ```text
//! in ──► engine track (script, or dry on a late result) ──► wet(t) = script(in)(t − λ)
//!  └───► delay line of λ frames ──────────────────────────► dry(t) = in(t − λ)
//! out(t) = m·wet(t) + (1 − m)·dry(t),   m = 0 when bypassed, else Mix
//! ```

use clack_plugin::events::event_types::{
    MidiEvent, NoteChokeEvent, NoteOffEvent, NoteOnEvent, ParamGestureBeginEvent, ParamGestureEndEvent,
    ParamValueEvent, TransportEvent, TransportFlags,
};
use clack_plugin::events::spaces::CoreEventSpace;
use clack_plugin::events::{Match, Pckn};
use clack_plugin::prelude::*;
use clack_plugin::process::audio::PairedChannels;
use outboard_engine::realtime::track::Track;
use outboard_engine::wire::block::{EventAction, Transport, midi_message_len};

use crate::editor::ParamGesture;
use crate::guard::{self, HostQuirk};
use crate::params::{self, ParamValues};
use crate::scripting::{BLOCK, MAX_LATENCY_BLOCKS, Registration};

/// Audio channels of each audio port and of the engine track: stereo. Both plugins have one port out, the effect
/// also one in.
pub const CHANNELS: usize = 2;
/// Events per host call put in time order when a host sends them out of
/// order; past this many, the rest take effect at the end of the call.
pub const MAX_SORTED_EVENTS: usize = 4096;

/// The engine's pipeline depth for a host that sends at most `max_frames`
/// per call: a result must be able to come back before the call that plays
/// it, so the depth covers one host block plus one internal block of margin
/// (2 blocks, the engine's default, for 64-frame hosts).
pub fn latency_blocks(max_frames: u32) -> usize {
    (max_frames.max(1) as usize).div_ceil(BLOCK).saturating_add(1).min(MAX_LATENCY_BLOCKS)
}

/// A sample format the host may give us.
pub trait Sample: Copy {
    /// Converts to the engine's 32-bit float (rounding a 64-bit sample).
    fn to_f32(self) -> f32;
    /// Converts from the engine's 32-bit float, without loss.
    fn from_f32(value: f32) -> Self;
}

impl Sample for f32 {
    #[inline]
    fn to_f32(self) -> f32 {
        self
    }
    #[inline]
    fn from_f32(value: f32) -> Self {
        value
    }
}

impl Sample for f64 {
    #[inline]
    fn to_f32(self) -> f32 {
        self as f32
    }
    #[inline]
    fn from_f32(value: f32) -> Self {
        f64::from(value)
    }
}

/// The audio thread's state of an active instance: the engine track, the dry delay line and scratch buffers.
/// Made and dropped on the main thread (activate, deactivate); every other method is realtime-safe.
pub struct Processor {
    track: Track,
    /// Kept so the track stays on the supervisor while active; dropped (on
    /// the main thread, in `deactivate`) to take it off.
    registration: Option<Registration>,
    latency: usize,
    /// Frames handled per pass (the host's maximum block).
    capacity: usize,
    input: [Box<[f32]>; CHANNELS],
    /// The engine's output, then the mixed output.
    wet: [Box<[f32]>; CHANNELS],
    /// The last `latency` input frames, a ring at `delay_at`.
    delay: [Box<[f32]>; CHANNELS],
    delay_at: usize,
    /// The call's readable events as (time, index in the host's list, a
    /// parameter change), in the order they take effect. Only parameter
    /// changes split the call into segments (notes go to the script with
    /// their frames).
    order: Box<[(u32, u32, bool)]>,
    /// The editor's parameter moves (the main thread's ring; handed over
    /// at activation, given back at deactivation).
    gestures: Option<rtrb::Consumer<ParamGesture>>,
}

impl Processor {
    /// Allocates everything `process` will use. Not realtime-safe.
    pub fn new(track: Track, registration: Option<Registration>, max_frames: u32) -> Processor {
        let latency = track.config().latency_frames();
        let capacity = (max_frames.max(1) as usize).min(1 << 16);
        // Touched here (the main thread), so the audio thread's first
        // writes are not page faults.
        let buffer = |n: usize| -> [Box<[f32]>; CHANNELS] {
            std::array::from_fn(|_| outboard_engine::shm::memory::present_filled(0.0, n).into())
        };
        Processor {
            track,
            registration,
            latency,
            capacity,
            input: buffer(capacity),
            wet: buffer(capacity),
            delay: buffer(latency),
            delay_at: 0,
            order: vec![(0, 0, false); MAX_SORTED_EVENTS].into(),
            gestures: None,
        }
    }

    /// Takes the editor's ring of parameter moves (main thread, at activation).
    pub fn set_gestures(&mut self, gestures: Option<rtrb::Consumer<ParamGesture>>) {
        self.gestures = gestures;
    }

    /// Gives the ring back (main thread, at deactivation).
    pub fn take_gestures(&mut self) -> Option<rtrb::Consumer<ParamGesture>> {
        self.gestures.take()
    }

    /// Hands the host the editor's parameter moves without processing
    /// audio (a flush, or a call without audio). Realtime-safe.
    pub fn flush_gestures(&mut self, values: &ParamValues, output: &mut OutputEvents) {
        if let Some(gestures) = self.gestures.as_mut() {
            send_gestures(values, gestures, output, |_, _| {});
        }
    }

    /// The latency λ in frames (the track's pipeline depth times its block): what the host is told, and the
    /// dry delay line's length.
    pub fn latency(&self) -> usize {
        self.latency
    }

    /// The track's counters (late results, round trips).
    pub fn stats(&self) -> &std::sync::Arc<outboard_engine::realtime::track::TrackStats> {
        self.track.stats()
    }

    /// Takes the track's registration with the supervisor, so that it can be dropped on the main thread (in
    /// `deactivate`), which takes the track off the supervisor. `None` when already taken or never registered.
    pub fn take_registration(&mut self) -> Option<Registration> {
        self.registration.take()
    }

    /// Offline rendering: wait up to `wait` for each script result (see
    /// `Track::set_offline`). Cheap; called every `process`.
    pub fn set_offline(&mut self, wait: Option<std::time::Duration>) {
        self.track.set_offline(wait);
    }

    /// Forgets all audio in flight: silence for λ frames again.
    pub fn reset(&mut self) {
        self.track.reset();
        for line in &mut self.delay {
            line.fill(0.0);
        }
        self.delay_at = 0;
    }

    /// Processes one host call. Realtime-safe.
    pub fn process<S: Sample>(
        &mut self,
        values: &ParamValues,
        mut channels: PairedChannels<'_, S>,
        events: &InputEvents,
        output: &mut OutputEvents,
        transport: Option<&TransportEvent>,
    ) {
        let frames = channels.frames_count() as usize;
        let mut pairs: [Option<ChannelPair<'_, S>>; CHANNELS] = std::array::from_fn(|c| channels.channel_pair(c));
        let (queued, overflow) = self.order_events(events, frames);
        self.track.begin_call(transport.map(host_transport));
        // The editor's moves first, at frame 0: the script hears them as
        // parameter changes, the host as gestures.
        if let Some(gestures) = self.gestures.as_mut() {
            let track = &mut self.track;
            send_gestures(values, gestures, output, |k, value| {
                let index = params::wire_index(k) as u32;
                track.push_event(0, EventAction::ParamChange { index, value: value as f32 });
            });
        }
        // The script's share of the host's events, at their frames.
        for &(time, index, _) in &self.order[..queued] {
            if let Some(action) = events.get(index).and_then(|e| script_action(values, e)) {
                self.track.push_event(time, action);
            }
        }
        let mut next_event = 0;
        let mut base = 0;
        // The host must not pass more than its maximum; if it does, the call
        // is handled in passes rather than refused.
        while base < frames {
            let n = (frames - base).min(self.capacity);
            for (c, pair) in pairs.iter().enumerate() {
                let dst = &mut self.input[c][..n];
                match pair {
                    Some(ChannelPair::InputOnly(i)) | Some(ChannelPair::InputOutput(i, _)) => {
                        read(dst, i.get(base..base + n))
                    }
                    Some(ChannelPair::InPlace(io)) => read(dst, io.get(base..base + n)),
                    Some(ChannelPair::OutputOnly(_)) | None => dst.fill(0.0),
                }
            }
            // Segments between events: each event applies from its own frame.
            let mut start = 0;
            while start < n {
                while let Some(&(time, index, param)) = self.order[..queued].get(next_event) {
                    if (time as usize).saturating_sub(base) > start {
                        break;
                    }
                    if let Some(event) = events.get(index).filter(|_| param) {
                        apply(values, event);
                    }
                    next_event += 1;
                }
                let end = self.order[next_event..queued]
                    .iter()
                    .find(|&&(_, _, param)| param)
                    .map_or(n, |&(time, _, _)| (time as usize).saturating_sub(base).clamp(start + 1, n));
                self.render(values, start, end);
                start = end;
            }
            for (c, pair) in pairs.iter_mut().enumerate() {
                let out = match pair {
                    Some(ChannelPair::OutputOnly(o)) | Some(ChannelPair::InputOutput(_, o)) => o,
                    Some(ChannelPair::InPlace(io)) => io,
                    Some(ChannelPair::InputOnly(_)) | None => continue,
                };
                if let Some(out) = out.get_mut(base..base + n) {
                    for (o, &w) in out.iter_mut().zip(&self.wet[c][..n]) {
                        *o = S::from_f32(w);
                    }
                }
            }
            base += n;
        }
        // Events past the end of the call (a host bug) still take effect,
        // and so do those beyond what could be sorted.
        for &(_, index, _) in self.order[next_event..queued].iter().filter(|e| e.2) {
            if let Some(event) = events.get(index) {
                apply(values, event);
            }
        }
        for index in overflow..events.len() {
            if let Some(event) = events.get(index) {
                apply(values, event);
            }
        }
        let late = self.track.stats().late_results.load(std::sync::atomic::Ordering::Relaxed);
        values.report(params::LATE_RESULTS, late as f64);
        self.emit(values, output, frames);
    }

    /// Hands the host the script's events due in this call, at their frames
    /// (a parameter move as a gesture: begin, value, end).
    fn emit(&mut self, values: &ParamValues, output: &mut OutputEvents, frames: usize) {
        let last = frames.saturating_sub(1) as u32;
        for (frame, action) in self.track.output_events() {
            let t = frame.min(last);
            let note = |channel: u8, key: u8, note_id: i32| {
                let id = if note_id < 0 { Match::All } else { Match::Specific(note_id as u32) };
                Pckn::new(0u16, u16::from(channel), u16::from(key), id)
            };
            let pushed = match action {
                EventAction::NoteOn { channel, key, velocity, note_id } => {
                    output.try_push(NoteOnEvent::new(t, note(channel, key, note_id), f64::from(velocity)))
                }
                EventAction::NoteOff { channel, key, velocity, note_id } => {
                    output.try_push(NoteOffEvent::new(t, note(channel, key, note_id), f64::from(velocity)))
                }
                EventAction::NoteChoke { channel, key, note_id } => {
                    output.try_push(NoteChokeEvent::new(t, note(channel, key, note_id)))
                }
                EventAction::Midi { data, .. } => output.try_push(MidiEvent::new(t, 0, data)),
                EventAction::SetParam { index, value } => {
                    let Some(k) = (index as usize).checked_sub(1).filter(|&k| k < params::SLOTS) else { continue };
                    let id = params::slot_id(k);
                    values.set(id, f64::from(value));
                    let value = values.slot(k);
                    let id = ClapId::new(id);
                    output
                        .try_push(ParamGestureBeginEvent::new(t, id))
                        .and_then(|()| output.try_push(ParamValueEvent::new(t, id, Pckn::match_all(), value)))
                        .and_then(|()| output.try_push(ParamGestureEndEvent::new(t, id)))
                }
                EventAction::ParamChange { .. } => continue,
            };
            if pushed.is_err() {
                guard::note(HostQuirk::OutputEventsFull);
            }
        }
    }

    /// Lists the call's readable events in `order`, by time (then by their
    /// place in the host's list, so equal times keep the host's order).
    /// Returns how many are listed and the host index from which events
    /// did not fit. Never asks the host for an index past its `len()`.
    fn order_events(&mut self, events: &InputEvents, frames: usize) -> (usize, u32) {
        let mut queued = 0;
        let (mut sorted, mut past_end, mut last) = (true, false, 0);
        for index in 0..events.len() {
            let Some(event) = events.get(index) else { continue };
            let Some(slot) = self.order.get_mut(queued) else {
                guard::note(HostQuirk::TooManyEvents);
                return (queued, index);
            };
            let time = event.header().time();
            sorted &= time >= last;
            past_end |= time as usize >= frames;
            last = time;
            *slot = (time, index, event.as_event::<ParamValueEvent>().is_some());
            queued += 1;
        }
        if !sorted {
            guard::note(HostQuirk::UnsortedEvents);
            // In place, no allocation.
            self.order[..queued].sort_unstable();
        }
        if past_end {
            guard::note(HostQuirk::EventPastEnd);
        }
        (queued, events.len())
    }

    /// Frames `start..end` of the current pass: engine, then the mix.
    fn render(&mut self, values: &ParamValues, start: usize, end: usize) {
        let engine = self.track.params();
        engine.set_dsp_terms(values.get_fixed(DSP_LOAD_INDEX) as u64);
        for k in 0..params::SLOTS {
            engine.set(params::wire_index(k), values.slot(k) as f32);
        }
        let [in_l, in_r] = &self.input;
        let [wet_l, wet_r] = &mut self.wet;
        self.track.process(
            &[&in_l[start..end], &in_r[start..end]],
            &mut [&mut wet_l[start..end], &mut wet_r[start..end]],
            end - start,
        );
        let bypassed = values.get_fixed(BYPASS_INDEX) >= 0.5;
        let m = if bypassed { 0.0 } else { values.get_fixed(MIX_INDEX) as f32 };
        if self.latency == 0 {
            return;
        }
        let at = self.delay_at;
        for c in 0..CHANNELS {
            let line = &mut self.delay[c];
            let mut pos = at;
            for t in start..end {
                let dry = line[pos];
                line[pos] = self.input[c][t];
                // Arithmetic even at m = 1: under flush-to-zero it also
                // clears denormals the script may have produced.
                self.wet[c][t] = m * self.wet[c][t] + (1.0 - m) * dry;
                pos += 1;
                if pos == line.len() {
                    pos = 0;
                }
            }
        }
        self.delay_at = (at + (end - start)) % self.latency;
    }
}

const MIX_INDEX: usize = 0;
const DSP_LOAD_INDEX: usize = 1;
const BYPASS_INDEX: usize = 2;

// The indices above are positions in the parameter table; check they match.
const _: () = {
    assert!(params::FIXED[MIX_INDEX].id == params::MIX);
    assert!(params::FIXED[DSP_LOAD_INDEX].id == params::DSP_LOAD);
    assert!(params::FIXED[BYPASS_INDEX].id == params::BYPASS);
};

/// The host's transport as the script sees it: what the host says it has,
/// defaults for the rest (the track replaces impossible values, and flags
/// them, in `Track::begin_call`).
fn host_transport(t: &TransportEvent) -> Transport {
    let f = t.flags;
    let mut flags = Transport::FROM_HOST;
    for (host, ours) in [
        (TransportFlags::IS_PLAYING, Transport::PLAYING),
        (TransportFlags::IS_RECORDING, Transport::RECORDING),
        (TransportFlags::IS_LOOP_ACTIVE, Transport::LOOPING),
        (TransportFlags::HAS_BEATS_TIMELINE, Transport::HAS_BEATS),
        (TransportFlags::HAS_SECONDS_TIMELINE, Transport::HAS_SECONDS),
    ] {
        if f.contains(host) {
            flags |= ours;
        }
    }
    let default = Transport::default();
    let tempo = if f.contains(TransportFlags::HAS_TEMPO) { t.tempo } else { default.tempo };
    let has_beats = f.contains(TransportFlags::HAS_BEATS_TIMELINE);
    let has_seconds = f.contains(TransportFlags::HAS_SECONDS_TIMELINE);
    let (beats, seconds) = match (has_beats, has_seconds) {
        (true, true) => (t.song_pos_beats.to_float(), t.song_pos_seconds.to_float()),
        (true, false) => (t.song_pos_beats.to_float(), t.song_pos_beats.to_float() * 60.0 / tempo),
        (false, true) => (t.song_pos_seconds.to_float() * tempo / 60.0, t.song_pos_seconds.to_float()),
        (false, false) => (0.0, 0.0),
    };
    let (numerator, denominator) = if f.contains(TransportFlags::HAS_TIME_SIGNATURE) {
        (t.time_signature_numerator, t.time_signature_denominator)
    } else {
        (default.numerator, default.denominator)
    };
    Transport {
        flags,
        tempo,
        beats,
        seconds,
        bar_start: if has_beats { t.bar_start.to_float() } else { 0.0 },
        bar_number: if has_beats { t.bar_number } else { 0 },
        loop_start: if has_beats { t.loop_start_beats.to_float() } else { 0.0 },
        loop_end: if has_beats { t.loop_end_beats.to_float() } else { 0.0 },
        numerator,
        denominator,
    }
}

/// What of a host event goes to the script: notes, MIDI channel messages,
/// changes of a declared parameter (as the value the plugin takes). Notes
/// that name no key or channel (wildcards) and system messages do not.
fn script_action(values: &ParamValues, event: &UnknownEvent) -> Option<EventAction> {
    let specific = |pckn: Pckn| -> Option<(u8, u8, i32)> {
        let channel = u8::try_from(pckn.channel.into_specific()?).ok().filter(|&c| c < 16)?;
        let key = u8::try_from(pckn.key.into_specific()?).ok().filter(|&k| k < 128)?;
        let note_id = pckn.note_id.into_specific().and_then(|id| i32::try_from(id).ok()).unwrap_or(-1);
        Some((channel, key, note_id))
    };
    let velocity = |v: f64| if v.is_finite() { v.clamp(0.0, 1.0) as f32 } else { 0.0 };
    Some(match event.as_core_event()? {
        CoreEventSpace::NoteOn(e) => {
            let (channel, key, note_id) = specific(e.pckn())?;
            EventAction::NoteOn { channel, key, velocity: velocity(e.velocity()), note_id }
        }
        CoreEventSpace::NoteOff(e) => {
            let (channel, key, note_id) = specific(e.pckn())?;
            EventAction::NoteOff { channel, key, velocity: velocity(e.velocity()), note_id }
        }
        CoreEventSpace::NoteChoke(e) => {
            let (channel, key, note_id) = specific(e.pckn())?;
            EventAction::NoteChoke { channel, key, note_id }
        }
        CoreEventSpace::Midi(e) => {
            let mut data = e.data();
            let len = midi_message_len(data[0]);
            if len == 0 || data[1..len as usize].iter().any(|&b| b >= 0x80) {
                return None;
            }
            data[len as usize..].fill(0);
            EventAction::Midi { data, len }
        }
        CoreEventSpace::ParamValue(e) => {
            let k = params::slot_of(e.param_id()?.get())?;
            let value = values.slot_value_for(k, e.value())?;
            EventAction::ParamChange { index: params::wire_index(k) as u32, value: value as f32 }
        }
        _ => return None,
    })
}

fn read<S: Sample>(dst: &mut [f32], src: Option<&[S]>) {
    match src {
        Some(src) => {
            for (d, &s) in dst.iter_mut().zip(src) {
                *d = s.to_f32();
            }
        }
        None => dst.fill(0.0),
    }
}

/// Hands the host the editor's parameter moves waiting in `gestures` (at
/// frame 0) and takes their values; `slot_moved(k, value)` hears each
/// script slot's new value. Realtime-safe: the ring is preallocated, the
/// host's list takes what fits (the rest is counted as a quirk).
pub fn send_gestures(
    values: &ParamValues,
    gestures: &mut rtrb::Consumer<ParamGesture>,
    output: &mut OutputEvents,
    mut slot_moved: impl FnMut(usize, f64),
) {
    while let Ok(gesture) = gestures.pop() {
        let pushed = match gesture {
            ParamGesture::Begin(id) => output.try_push(ParamGestureBeginEvent::new(0, ClapId::new(id))),
            ParamGesture::End(id) => output.try_push(ParamGestureEndEvent::new(0, ClapId::new(id))),
            ParamGesture::Value(id, value) => {
                if !values.set(id, value) {
                    continue;
                }
                let Some(value) = values.get(id) else { continue };
                if let Some(k) = params::slot_of(id) {
                    slot_moved(k, value);
                }
                output.try_push(ParamValueEvent::new(0, ClapId::new(id), Pckn::match_all(), value))
            }
        };
        if pushed.is_err() {
            guard::note(HostQuirk::OutputEventsFull);
        }
    }
}

/// Applies a parameter event to the shared values (others are ignored).
pub fn apply(values: &ParamValues, event: &UnknownEvent) {
    if let Some(event) = event.as_event::<ParamValueEvent>()
        && let Some(id) = event.param_id()
    {
        values.set(id.get(), event.value());
    }
}

/// Applies every parameter event of a flush.
pub fn apply_all(values: &ParamValues, events: &InputEvents) {
    for index in 0..events.len() {
        if let Some(event) = events.get(index) {
            apply(values, event);
        }
    }
}
