//! The audio half of an instance: what runs inside the host's `process`.
//!
//! Everything here is realtime-safe: it allocates only in [`Processor::new`]
//! (at activation, on the main thread), takes no lock, makes no system call
//! but the engine's wake of a sleeping worker, and does bounded work per
//! frame. Any host block size works, changing from call to call: the engine
//! track re-chunks into its fixed internal block. Parameter changes take
//! effect on the exact frame their event names (Mix and Bypass on that
//! sample; the DSP load and the script knobs at the engine's next internal
//! block, as the script sees a block at a time).
//!
//! Signal path per channel, with λ the reported latency:
//!
//! ```text
//! in ──► engine track (script, or dry on a late result) ──► wet(t) = script(in)(t − λ)
//!  └───► delay line of λ frames ──────────────────────────► dry(t) = in(t − λ)
//! out(t) = m·wet(t) + (1 − m)·dry(t),   m = 0 when bypassed, else Mix
//! ```

use clack_plugin::events::event_types::ParamValueEvent;
use clack_plugin::prelude::*;
use clack_plugin::process::audio::PairedChannels;
use outboard_engine::track::Track;

use crate::guard::{self, HostQuirk};
use crate::params::{self, ParamValues};
use crate::scripting::{BLOCK, MAX_LATENCY_BLOCKS, Registration};

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
    fn to_f32(self) -> f32;
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
    /// The call's readable events as (time, index in the host's list), in
    /// the order they take effect.
    order: Box<[(u32, u32)]>,
}

impl Processor {
    /// Allocates everything `process` will use. Not realtime-safe.
    pub fn new(track: Track, registration: Option<Registration>, max_frames: u32) -> Processor {
        let latency = track.config().latency_frames();
        let capacity = (max_frames.max(1) as usize).min(1 << 16);
        // Touched here (the main thread), so the audio thread's first
        // writes are not page faults.
        let buffer = |n: usize| -> [Box<[f32]>; CHANNELS] {
            std::array::from_fn(|_| {
                let mut line: Box<[f32]> = vec![0.0; n].into();
                outboard_engine::memory::touch_pages(&mut line);
                line
            })
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
            order: vec![(0, 0); MAX_SORTED_EVENTS].into(),
        }
    }

    pub fn latency(&self) -> usize {
        self.latency
    }

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
    ) {
        let frames = channels.frames_count() as usize;
        let mut pairs: [Option<ChannelPair<'_, S>>; CHANNELS] = std::array::from_fn(|c| channels.channel_pair(c));
        let (queued, overflow) = self.order_events(events, frames);
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
                while let Some(&(time, index)) = self.order[..queued].get(next_event) {
                    if (time as usize).saturating_sub(base) > start {
                        break;
                    }
                    if let Some(event) = events.get(index) {
                        apply(values, event);
                    }
                    next_event += 1;
                }
                let end = self.order[..queued]
                    .get(next_event)
                    .map_or(n, |&(time, _)| (time as usize).saturating_sub(base).clamp(start + 1, n));
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
        for &(_, index) in &self.order[next_event..queued] {
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
            *slot = (time, index);
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
        engine.set_dsp_terms(values.get_index(DSP_LOAD_INDEX) as u64);
        for (slot, index) in KNOB_INDICES.iter().enumerate() {
            engine.set(1 + slot, values.get_index(*index) as f32);
        }
        let [in_l, in_r] = &self.input;
        let [wet_l, wet_r] = &mut self.wet;
        self.track.process(
            &[&in_l[start..end], &in_r[start..end]],
            &mut [&mut wet_l[start..end], &mut wet_r[start..end]],
            end - start,
        );
        let bypassed = values.get_index(BYPASS_INDEX) >= 0.5;
        let m = if bypassed { 0.0 } else { values.get_index(MIX_INDEX) as f32 };
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
const KNOB_INDICES: [usize; 4] = [3, 4, 5, 6];

// The indices above are positions in the parameter table; check they match.
const _: () = {
    assert!(params::PARAMS[MIX_INDEX].id == params::MIX);
    assert!(params::PARAMS[DSP_LOAD_INDEX].id == params::DSP_LOAD);
    assert!(params::PARAMS[BYPASS_INDEX].id == params::BYPASS);
    assert!(params::PARAMS[KNOB_INDICES[0]].id == params::SCRIPT_KNOBS[0]);
    assert!(params::PARAMS[KNOB_INDICES[3]].id == params::SCRIPT_KNOBS[3]);
};

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
