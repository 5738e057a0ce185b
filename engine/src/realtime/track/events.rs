//! A track's events: host events waiting for the block they travel in
//! (the inbox), the script's events waiting for their time on the input
//! side (pending: the voice's notes, the track's own parameter moves), and
//! the script's events going out to the caller L blocks after their time
//! (outgoing, then the call's outbox). Every queue is allocated once, in
//! `Track::new`; nothing here allocates.

use std::sync::atomic::Ordering;

use super::Track;
use crate::wire::block::{Event, EventAction};

/// Events a track can hold waiting for their time.
pub const MAX_PENDING_EVENTS: usize = 256;
/// Host events a track holds for its coming blocks (see [`Track::push_event`]).
pub const MAX_INBOX_EVENTS: usize = 1024;
/// Events a track hands its caller per call (see [`Track::output_events`]).
pub const MAX_OUTBOX_EVENTS: usize = 1024;

impl Track {
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

    /// Routes one of the script's events: out to the caller (L blocks after
    /// its time), to the voice, or to the track's own parameters.
    pub(super) fn take_script_event(&mut self, event: Event) {
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
    pub(super) fn render_events_and_voice(&mut self, start: u64, end: u64) {
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
