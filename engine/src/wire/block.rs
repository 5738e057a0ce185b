//! Audio messages between a track and its script: fixed-size slots on the
//! track's two rings, encoded and decoded without allocation.
//!
//! Every message starts with a 56-byte little-endian header:
//!
//! | bytes | field | meaning |
//! | --- | --- | --- |
//! | 0..4 | kind | [`BlockKind`] |
//! | 4..8 | track | the track's id |
//! | 8..16 | seq | block number k |
//! | 16..20 | frames | frames per channel |
//! | 20..24 | channels | channel count |
//! | 24..32 | sample_time | the block's first frame on the track's timeline |
//! | 32..36 | status | for results: [`ResultStatus`] |
//! | 36..40 | count | parameters (process) or events (events) that follow |
//! | 40..48 | sent_ns | CLOCK_MONOTONIC when the host pushed the block |
//! | 48..56 | done_ns | CLOCK_MONOTONIC when the script pushed its reply |
//!
//! then a body: for `Process`, the block context ([`CONTEXT_BYTES`]: the
//! host's [`Transport`] and the number of events), `count` parameter values
//! (f32), the block's [`Event`]s (host notes, MIDI, parameter changes) and
//! the samples, as [`ProcessLayout`] places them; for `Result`, the samples;
//! for `Events`, `count` [`Event`]s of [`EVENT_BYTES`] bytes (the script's
//! notes, MIDI and parameter moves).
//! Samples are f32, planar (channel 0's frames, then channel 1's).
//!
//! Both readers judge what they read before using it: the track checks
//! every reply with [`BlockHeader::check_reply`], the worker every block
//! with [`BlockHeader::check_process`], each against what it expects and
//! the bytes it holds; a message that fails is a fault of the peer.

use crate::shm::ring::ReadSlot;

/// Bytes of the header.
pub const HEADER_BYTES: usize = 56;
/// Bytes of one encoded event.
pub const EVENT_BYTES: usize = 32;
/// Parameter values a block carries to its script: index 0 is the track's
/// wet level, the plugin's declared parameters are 1..=32.
pub const MAX_PARAMS: usize = 40;
/// Loudest sample a result may carry: ±1000, +60 dBFS, far beyond any mix's
/// headroom. A script that returns more (1e30, say) returns no audio anyone
/// meant to hear, and a few such tracks summed overflow the mix to Inf.
pub const MAX_SAMPLE: f32 = 1000.0;
/// Events one `Events` message (a reply) may carry.
pub const MAX_EVENTS_PER_REPLY: usize = 32;

/// Whether every sample is a number within ±[`MAX_SAMPLE`] (NaN and ±Inf are
/// not): what a result must be to be played. Realtime-safe.
pub fn samples_playable(samples: &[f32]) -> bool {
    // `abs() <= MAX` is false for NaN, so one comparison covers all three.
    samples.iter().all(|s| s.abs() <= MAX_SAMPLE)
}

/// What a message is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockKind {
    /// Host → script: an input block to process (and a tick to run).
    Process = 1,
    /// Script → host: the processed block.
    Result = 2,
    /// Script → host: events from `tick`, for future blocks.
    Events = 3,
}

/// How the script fared with a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResultStatus {
    /// The samples are the script's output.
    Processed = 0,
    /// The script failed on this block (reported on the log); play dry.
    ScriptError = 1,
    /// The script has no `process` hook; play dry.
    NoProcess = 2,
}

/// The fixed header of a block message.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockHeader {
    /// What the message is: a [`BlockKind`] as a number (a reader refuses any other).
    pub kind: u32,
    /// The id of the track the message belongs to: a reply carries its block's.
    pub track: u32,
    /// Block number k on the track (0 for its first block); a reply carries its block's.
    pub seq: u64,
    /// Frames per channel.
    pub frames: u32,
    /// Channel count.
    pub channels: u32,
    /// The block's first frame on the track's timeline (k × frames).
    pub sample_time: u64,
    /// For a `Result`: a [`ResultStatus`] as a number; 0 for the other kinds.
    pub status: u32,
    /// For `Process`: the f32 parameter values after the block context (the
    /// track sends [`MAX_PARAMS`]); for `Events`: the events after the
    /// header; 0 for `Result`.
    pub count: u32,
    /// CLOCK_MONOTONIC, in ns, when the track pushed the block (set by the
    /// host; replies carry it back).
    pub sent_ns: u64,
    /// CLOCK_MONOTONIC, in ns, when the script pushed its result (set by the
    /// worker on a `Result`; 0 from the host): `done_ns − sent_ns` is the
    /// round trip.
    pub done_ns: u64,
}

/// Why a message was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockError {
    /// Shorter than a header ([`HEADER_BYTES`]).
    TooShort,
    /// A kind the reader does not take here (the kind read).
    WrongKind(u32),
    /// For another track (the id read).
    WrongTrack(u32),
    /// Not the reader's frames × channels (the shape read).
    WrongShape {
        /// Frames per channel, as the message says.
        frames: u32,
        /// Channels, as the message says.
        channels: u32,
    },
    /// A result status that is no [`ResultStatus`] (the status read).
    BadStatus(u32),
    /// More parameter values than [`MAX_PARAMS`] (a block) or more events
    /// than the reader takes (a reply): the count read.
    BadCount(u32),
    /// A block carrying more host events than [`MAX_BLOCK_EVENTS`].
    TooManyEvents(u32),
    /// A message length other than the one its header implies.
    BadLength {
        /// Bytes a message with this header has.
        expected: usize,
        /// Bytes the message has.
        got: usize,
    },
}

impl BlockHeader {
    /// Writes the header into the first [`HEADER_BYTES`] bytes of `out`
    /// (panics if `out` is shorter).
    pub fn encode(&self, out: &mut [u8]) {
        out[0..4].copy_from_slice(&self.kind.to_le_bytes());
        out[4..8].copy_from_slice(&self.track.to_le_bytes());
        out[8..16].copy_from_slice(&self.seq.to_le_bytes());
        out[16..20].copy_from_slice(&self.frames.to_le_bytes());
        out[20..24].copy_from_slice(&self.channels.to_le_bytes());
        out[24..32].copy_from_slice(&self.sample_time.to_le_bytes());
        out[32..36].copy_from_slice(&self.status.to_le_bytes());
        out[36..40].copy_from_slice(&self.count.to_le_bytes());
        out[40..48].copy_from_slice(&self.sent_ns.to_le_bytes());
        out[48..56].copy_from_slice(&self.done_ns.to_le_bytes());
    }

    /// Reads a header without judging it.
    pub fn read(msg: &[u8]) -> Result<BlockHeader, BlockError> {
        if msg.len() < HEADER_BYTES {
            return Err(BlockError::TooShort);
        }
        let u32_at = |i: usize| u32::from_le_bytes(msg[i..i + 4].try_into().expect("4 bytes"));
        let u64_at = |i: usize| u64::from_le_bytes(msg[i..i + 8].try_into().expect("8 bytes"));
        Ok(BlockHeader {
            kind: u32_at(0),
            track: u32_at(4),
            seq: u64_at(8),
            frames: u32_at(16),
            channels: u32_at(20),
            sample_time: u64_at(24),
            status: u32_at(32),
            count: u32_at(36),
            sent_ns: u64_at(40),
            done_ns: u64_at(48),
        })
    }

    /// Reads and validates a message from the script for `track`, whose blocks
    /// have `frames` × `channels` samples and whose events fit `max_events`.
    pub fn decode_reply(
        msg: &[u8],
        track: u32,
        frames: usize,
        channels: usize,
        max_events: usize,
    ) -> Result<BlockHeader, BlockError> {
        BlockHeader::read(msg)?.check_reply(msg.len(), track, frames, channels, max_events)
    }

    /// Copies the header out of a message read in place (see
    /// [`crate::shm::ring::Consumer::read`]), without judging it.
    pub fn read_from(message: &ReadSlot<'_>) -> Result<BlockHeader, BlockError> {
        let mut head = [0u8; HEADER_BYTES];
        if message.copy_to(0, &mut head) { BlockHeader::read(&head) } else { Err(BlockError::TooShort) }
    }

    fn check_track(&self, track: u32) -> Result<(), BlockError> {
        if self.track == track { Ok(()) } else { Err(BlockError::WrongTrack(self.track)) }
    }

    /// The block is `frames` × `channels`.
    fn check_shape(&self, frames: usize, channels: usize) -> Result<(), BlockError> {
        if self.frames as usize == frames && self.channels as usize == channels {
            Ok(())
        } else {
            Err(BlockError::WrongShape { frames: self.frames, channels: self.channels })
        }
    }

    /// Validates a header read from a reply of `len` bytes (header included),
    /// as [`BlockHeader::decode_reply`] does: for readers that copy the header
    /// out of a ring slot without copying the whole message.
    pub fn check_reply(
        self,
        len: usize,
        track: u32,
        frames: usize,
        channels: usize,
        max_events: usize,
    ) -> Result<BlockHeader, BlockError> {
        let h = self;
        if len < HEADER_BYTES {
            return Err(BlockError::TooShort);
        }
        h.check_track(track)?;
        let expected = match h.kind {
            k if k == BlockKind::Result as u32 => {
                h.check_shape(frames, channels)?;
                if h.status > ResultStatus::NoProcess as u32 {
                    return Err(BlockError::BadStatus(h.status));
                }
                result_len(frames * channels)
            }
            k if k == BlockKind::Events as u32 => {
                if h.count as usize > max_events {
                    return Err(BlockError::BadCount(h.count));
                }
                events_len(h.count as usize)
            }
            other => return Err(BlockError::WrongKind(other)),
        };
        if len != expected {
            return Err(BlockError::BadLength { expected, got: len });
        }
        Ok(h)
    }

    /// Validates a `Process` header read from a message of `len` bytes
    /// whose block context says it carries `events` events, for the track
    /// the reader serves (`track`, blocks of `frames` × `channels`): where
    /// the message's parts are, if it is exactly such a block. What the
    /// worker checks of every block, as [`BlockHeader::check_reply`] is
    /// what the track checks of every reply.
    pub fn check_process(
        self,
        len: usize,
        events: u32,
        track: u32,
        frames: usize,
        channels: usize,
    ) -> Result<ProcessLayout, BlockError> {
        let h = self;
        if h.kind != BlockKind::Process as u32 {
            return Err(BlockError::WrongKind(h.kind));
        }
        h.check_track(track)?;
        h.check_shape(frames, channels)?;
        if h.count as usize > MAX_PARAMS {
            return Err(BlockError::BadCount(h.count));
        }
        if events as usize > MAX_BLOCK_EVENTS {
            return Err(BlockError::TooManyEvents(events));
        }
        // Computed only for a shape within bounds (the reader's): no overflow.
        let layout = ProcessLayout::new(h.count as usize, events as usize, frames * channels);
        if len != layout.len {
            return Err(BlockError::BadLength { expected: layout.len, got: len });
        }
        Ok(layout)
    }
}

/// Length of a `Result` message of `samples` samples (they follow the header).
pub const fn result_len(samples: usize) -> usize {
    HEADER_BYTES + samples * 4
}

/// Length of an `Events` message of `count` events (they follow the
/// header): event `i` starts at `events_len(i)`.
pub const fn events_len(count: usize) -> usize {
    HEADER_BYTES + count * EVENT_BYTES
}

/// Writes planar samples after the header (and after `skip` bytes of body).
pub fn write_samples(out: &mut [u8], offset: usize, samples: &[f32]) {
    for (chunk, s) in out[offset..offset + samples.len() * 4].chunks_exact_mut(4).zip(samples) {
        chunk.copy_from_slice(&s.to_le_bytes());
    }
}

/// Reads planar samples starting at `offset` into `out`.
pub fn read_samples(msg: &[u8], offset: usize, out: &mut [f32]) {
    let bytes = &msg[offset..offset + out.len() * 4];
    for (s, chunk) in out.iter_mut().zip(bytes.chunks_exact(4)) {
        *s = f32::from_le_bytes(chunk.try_into().expect("4 bytes"));
    }
}

/// Bytes of the block context that follows a `Process` header.
pub const CONTEXT_BYTES: usize = 64;
/// Events one block carries to its script (host notes, MIDI and parameter
/// changes inside the block); past this many a block's further events are
/// dropped and counted.
pub const MAX_BLOCK_EVENTS: usize = 128;

/// Where the parts of a `Process` message with `params` parameter values
/// and `events` events start, and its length: the one place the layout is
/// computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcessLayout {
    /// Where the block context (transport and event count) starts: right after the header.
    pub context: usize,
    /// Where the f32 parameter values start.
    pub params: usize,
    /// Where the first event starts.
    pub events: usize,
    /// Where the planar f32 samples start.
    pub samples: usize,
    /// The whole message's length, in bytes.
    pub len: usize,
}

impl ProcessLayout {
    /// The layout of a message of `params` parameter values, `events` events
    /// and `samples` samples (all channels).
    pub const fn new(params: usize, events: usize, samples: usize) -> ProcessLayout {
        let context = HEADER_BYTES;
        let p = context + CONTEXT_BYTES;
        let e = p + params * 4;
        let s = e + events * EVENT_BYTES;
        ProcessLayout { context, params: p, events: e, samples: s, len: s + samples * 4 }
    }

    /// Where event `i` starts.
    pub const fn event(&self, i: usize) -> usize {
        self.events + i * EVENT_BYTES
    }

    /// The largest `Process` message for blocks of `samples` samples.
    pub const fn max_len(samples: usize) -> usize {
        ProcessLayout::new(MAX_PARAMS, MAX_BLOCK_EVENTS, samples).len
    }
}

/// The host's transport at a block's first sample, as the script sees it
/// (`ctx.transport`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Transport {
    /// [`Transport::FROM_HOST`], [`Transport::MALFORMED`], ...
    pub flags: u32,
    /// Beats (quarter notes) per minute.
    pub tempo: f64,
    /// Song position in beats, and in seconds.
    pub beats: f64,
    /// Song position in seconds.
    pub seconds: f64,
    /// The current bar's start, in beats, and its number (0 for the first).
    pub bar_start: f64,
    /// The current bar's number (0 for the first).
    pub bar_number: i32,
    /// Where the loop starts, in beats (0 when the host has no beats timeline).
    pub loop_start: f64,
    /// Where the loop ends, in beats (not before `loop_start`).
    pub loop_end: f64,
    /// Time signature: beats per bar, 1..=64.
    pub numerator: u16,
    /// Time signature: the note value of a beat, a power of two in 1..=64.
    pub denominator: u16,
}

impl Default for Transport {
    /// No host transport: 120 BPM, 4/4, playing, at the start.
    fn default() -> Transport {
        Transport {
            flags: Transport::PLAYING,
            tempo: 120.0,
            beats: 0.0,
            seconds: 0.0,
            bar_start: 0.0,
            bar_number: 0,
            loop_start: 0.0,
            loop_end: 0.0,
            numerator: 4,
            denominator: 4,
        }
    }
}

impl Transport {
    /// The host sent this transport (else these are the defaults).
    pub const FROM_HOST: u32 = 1;
    /// The host sent one with impossible values; defaults stand in for them.
    pub const MALFORMED: u32 = 2;
    /// The transport is playing: positions advance.
    pub const PLAYING: u32 = 4;
    /// The host is recording.
    pub const RECORDING: u32 = 8;
    /// The host loops between `loop_start` and `loop_end`.
    pub const LOOPING: u32 = 16;
    /// The host's transport has a beats timeline (else beats are counted
    /// from the seconds, or from the track's start).
    pub const HAS_BEATS: u32 = 32;
    /// The host's transport has a seconds timeline.
    pub const HAS_SECONDS: u32 = 64;
    const KNOWN: u32 = 127;

    /// Whether `flag` (one of the flag constants above) is set.
    pub fn has(&self, flag: u32) -> bool {
        self.flags & flag != 0
    }

    /// This transport with every impossible value replaced by its default
    /// (and [`Transport::MALFORMED`] set if any was): a tempo that is not a
    /// positive number below 10 000 BPM, a time signature that is not n/2^k
    /// with n and 2^k in 1..=64, positions that are not finite. Realtime-safe.
    pub fn sanitized(mut self) -> Transport {
        let d = Transport::default();
        let mut bad = self.flags & !Transport::KNOWN != 0;
        self.flags &= Transport::KNOWN;
        if !(self.tempo.is_finite() && self.tempo > 0.0 && self.tempo < 10_000.0) {
            self.tempo = d.tempo;
            bad = true;
        }
        if !((1..=64).contains(&self.numerator)
            && (1..=64).contains(&self.denominator)
            && self.denominator.is_power_of_two())
        {
            (self.numerator, self.denominator) = (d.numerator, d.denominator);
            bad = true;
        }
        for v in [&mut self.beats, &mut self.seconds, &mut self.bar_start, &mut self.loop_start, &mut self.loop_end] {
            if !(v.is_finite() && v.abs() < 1e12) {
                *v = 0.0;
                bad = true;
            }
        }
        if self.loop_end < self.loop_start {
            self.flags &= !Transport::LOOPING;
            bad = true;
        }
        if bad {
            self.flags |= Transport::MALFORMED;
        }
        self
    }

    /// The same transport `frames` later at `rate` (positions advance only
    /// while playing; the bar follows the beats).
    pub fn advanced(&self, frames: u64, rate: f64) -> Transport {
        let mut t = *self;
        if !t.has(Transport::PLAYING) || frames == 0 {
            return t;
        }
        let seconds = frames as f64 / rate;
        t.seconds += seconds;
        t.beats += seconds * t.tempo / 60.0;
        let bar = f64::from(t.numerator) * 4.0 / f64::from(t.denominator);
        if bar > 0.0 && t.beats >= t.bar_start + bar {
            let bars = ((t.beats - t.bar_start) / bar).floor();
            t.bar_start += bars * bar;
            t.bar_number = t.bar_number.saturating_add(bars as i32);
        }
        t
    }

    /// Writes the transport and the block's event count (the block context).
    pub fn encode(&self, events: u32, out: &mut [u8; CONTEXT_BYTES]) {
        out[0..4].copy_from_slice(&self.flags.to_le_bytes());
        out[4..8].copy_from_slice(&self.bar_number.to_le_bytes());
        out[8..10].copy_from_slice(&self.numerator.to_le_bytes());
        out[10..12].copy_from_slice(&self.denominator.to_le_bytes());
        out[12..16].copy_from_slice(&events.to_le_bytes());
        for (i, v) in
            [self.tempo, self.beats, self.seconds, self.bar_start, self.loop_start, self.loop_end].iter().enumerate()
        {
            out[16 + i * 8..24 + i * 8].copy_from_slice(&v.to_le_bytes());
        }
    }

    /// Reads a block context: the transport (sanitised: the other side may
    /// write anything) and the event count, unchecked.
    pub fn decode(bytes: &[u8; CONTEXT_BYTES]) -> (Transport, u32) {
        let u32_at = |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        let u16_at = |i: usize| u16::from_le_bytes([bytes[i], bytes[i + 1]]);
        let f64_at = |i: usize| f64::from_le_bytes(bytes[i..i + 8].try_into().expect("8 bytes"));
        let t = Transport {
            flags: u32_at(0),
            bar_number: u32_at(4) as i32,
            numerator: u16_at(8),
            denominator: u16_at(10),
            tempo: f64_at(16),
            beats: f64_at(24),
            seconds: f64_at(32),
            bar_start: f64_at(40),
            loop_start: f64_at(48),
            loop_end: f64_at(56),
        };
        (t.sanitized(), u32_at(12))
    }
}

/// What an event does. The same events travel both ways: the host's notes,
/// MIDI and parameter changes to the script with its block, and the
/// script's notes, MIDI and parameter moves back to the host.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum EventAction {
    /// A note starts (velocity 0..=1; `note_id` -1 when there is none).
    NoteOn {
        /// MIDI channel, 0..=15.
        channel: u8,
        /// MIDI key, 0..=127 (60 is middle C).
        key: u8,
        /// Velocity, 0..=1.
        velocity: f32,
        /// The note's id, or -1 when there is none.
        note_id: i32,
    },
    /// A note is released (velocity 0..=1; `note_id` -1 when there is none).
    NoteOff {
        /// MIDI channel, 0..=15.
        channel: u8,
        /// MIDI key, 0..=127.
        key: u8,
        /// Release velocity, 0..=1.
        velocity: f32,
        /// The note's id, or -1 when there is none.
        note_id: i32,
    },
    /// A note is cut at once.
    NoteChoke {
        /// MIDI channel, 0..=15.
        channel: u8,
        /// MIDI key, 0..=127.
        key: u8,
        /// The note's id, or -1 when there is none.
        note_id: i32,
    },
    /// A MIDI 1.0 channel message of `len` (2 or 3) bytes.
    Midi {
        /// The message's bytes, status byte first; those past `len` are 0.
        data: [u8; 3],
        /// Bytes of `data` in use: what [`midi_message_len`] gives for its status byte.
        len: u8,
    },
    /// Host → script: parameter `index` takes `value` from this sample on.
    ParamChange {
        /// The parameter's index, below [`MAX_PARAMS`] (0 is the track's wet level).
        index: u32,
        /// The new value, as the host holds it (finite).
        value: f32,
    },
    /// Script → host: the script moves parameter `index` to `value`.
    SetParam {
        /// The parameter's index, below [`MAX_PARAMS`].
        index: u32,
        /// The new value, as the host holds it (finite).
        value: f32,
    },
}

/// A timestamped event.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Event {
    /// Sample on the track's timeline (the input side) where it takes effect.
    pub time: u64,
    /// What happens at `time`.
    pub action: EventAction,
}

/// The bytes a MIDI 1.0 channel message with this status byte has, or 0 if
/// it is not the status byte of a channel message.
pub fn midi_message_len(status: u8) -> u8 {
    match status {
        0x80..=0xBF | 0xE0..=0xEF => 3,
        0xC0..=0xDF => 2,
        _ => 0,
    }
}

impl Event {
    /// Encodes into [`EVENT_BYTES`] bytes: time u64, kind u8, channel u8,
    /// key u8, MIDI length u8, note id i32, value f32, index u32, MIDI
    /// bytes, then zeros.
    pub fn encode(&self, out: &mut [u8]) {
        let (kind, channel, key, len, note_id, value, index, data) = match self.action {
            EventAction::NoteOn { channel, key, velocity, note_id } => {
                (1u8, channel, key, 0, note_id, velocity, 0, [0; 3])
            }
            EventAction::NoteOff { channel, key, velocity, note_id } => {
                (2, channel, key, 0, note_id, velocity, 0, [0; 3])
            }
            EventAction::NoteChoke { channel, key, note_id } => (3, channel, key, 0, note_id, 0.0, 0, [0; 3]),
            EventAction::Midi { data, len } => (4, 0, 0, len, -1, 0.0, 0, data),
            EventAction::ParamChange { index, value } => (5, 0, 0, 0, -1, value, index, [0; 3]),
            EventAction::SetParam { index, value } => (6, 0, 0, 0, -1, value, index, [0; 3]),
        };
        out[0..8].copy_from_slice(&self.time.to_le_bytes());
        out[8..12].copy_from_slice(&[kind, channel, key, len]);
        out[12..16].copy_from_slice(&note_id.to_le_bytes());
        out[16..20].copy_from_slice(&value.to_le_bytes());
        out[20..24].copy_from_slice(&index.to_le_bytes());
        out[24..27].copy_from_slice(&data);
        out[27..EVENT_BYTES].fill(0);
    }

    /// Decodes an event; `None` for fewer than [`EVENT_BYTES`] bytes, an
    /// unknown kind, a channel, key or parameter index out of range, a
    /// MIDI message that is not one whole channel message, or a value that
    /// is not a number (a bad event is dropped, not played). Velocities are
    /// clamped to 0..=1.
    pub fn decode(bytes: &[u8]) -> Option<Event> {
        let bytes: &[u8; EVENT_BYTES] = bytes.get(..EVENT_BYTES)?.try_into().ok()?;
        let word = |i: usize| [bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]];
        let time = u64::from_le_bytes(bytes[0..8].try_into().expect("8 bytes"));
        let [kind, channel, key, len] = word(8);
        let note_id = i32::from_le_bytes(word(12));
        let value = f32::from_le_bytes(word(16));
        let index = u32::from_le_bytes(word(20));
        let note = channel < 16 && key < 128 && note_id >= -1 && value.is_finite();
        let velocity = value.clamp(0.0, 1.0);
        let action = match kind {
            1 if note => EventAction::NoteOn { channel, key, velocity, note_id },
            2 if note => EventAction::NoteOff { channel, key, velocity, note_id },
            3 if note => EventAction::NoteChoke { channel, key, note_id },
            4 => {
                let data = [bytes[24], bytes[25], bytes[26]];
                let whole =
                    len > 0 && midi_message_len(data[0]) == len && data[1..len as usize].iter().all(|&b| b < 0x80);
                if !whole {
                    return None;
                }
                let mut data = data;
                data[len as usize..].fill(0);
                EventAction::Midi { data, len }
            }
            5 if (index as usize) < MAX_PARAMS && value.is_finite() => EventAction::ParamChange { index, value },
            6 if (index as usize) < MAX_PARAMS && value.is_finite() => EventAction::SetParam { index, value },
            _ => return None,
        };
        Some(Event { time, action })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_and_replies_are_checked() {
        let h = BlockHeader {
            kind: BlockKind::Result as u32,
            track: 3,
            seq: 99,
            frames: 4,
            channels: 2,
            sample_time: 396,
            status: 0,
            count: 0,
            sent_ns: 12345,
            done_ns: 12400,
        };
        let mut msg = vec![0u8; HEADER_BYTES + 4 * 2 * 4];
        h.encode(&mut msg);
        assert_eq!(BlockHeader::decode_reply(&msg, 3, 4, 2, 8), Ok(h));
        assert_eq!(BlockHeader::decode_reply(&msg, 4, 4, 2, 8), Err(BlockError::WrongTrack(3)));
        assert!(matches!(BlockHeader::decode_reply(&msg, 3, 8, 2, 8), Err(BlockError::WrongShape { .. })));
        assert!(matches!(BlockHeader::decode_reply(&msg[..60], 3, 4, 2, 8), Err(BlockError::BadLength { .. })));
        assert_eq!(BlockHeader::decode_reply(&msg[..10], 3, 4, 2, 8), Err(BlockError::TooShort));
        let mut bad = msg.clone();
        bad[32] = 9;
        assert_eq!(BlockHeader::decode_reply(&bad, 3, 4, 2, 8), Err(BlockError::BadStatus(9)));
        bad[0] = 7;
        assert_eq!(BlockHeader::decode_reply(&bad, 3, 4, 2, 8), Err(BlockError::WrongKind(7)));
        let events = BlockHeader { kind: BlockKind::Events as u32, track: 3, count: 9, ..h };
        let mut msg = vec![0u8; HEADER_BYTES + 9 * EVENT_BYTES];
        events.encode(&mut msg);
        assert_eq!(BlockHeader::decode_reply(&msg, 3, 4, 2, 8), Err(BlockError::BadCount(9)));
        assert!(BlockHeader::decode_reply(&msg, 3, 4, 2, 9).is_ok());
    }

    #[test]
    fn samples_and_events_round_trip() {
        let mut msg = vec![0u8; 64];
        write_samples(&mut msg, 8, &[1.5, -2.0, 0.25]);
        let mut out = [0.0f32; 3];
        read_samples(&msg, 8, &mut out);
        assert_eq!(out, [1.5, -2.0, 0.25]);
        for action in [
            EventAction::NoteOn { channel: 3, key: 60, velocity: 0.5, note_id: 7 },
            EventAction::NoteOff { channel: 0, key: 127, velocity: 0.0, note_id: -1 },
            EventAction::NoteChoke { channel: 15, key: 0, note_id: 1 << 30 },
            EventAction::Midi { data: [0xB0, 7, 100], len: 3 },
            EventAction::Midi { data: [0xC1, 5, 0], len: 2 },
            EventAction::ParamChange { index: 39, value: -3.0 },
            EventAction::SetParam { index: 7, value: 0.25 },
        ] {
            let event = Event { time: 1 << 40, action };
            let mut bytes = [0u8; EVENT_BYTES];
            event.encode(&mut bytes);
            assert_eq!(Event::decode(&bytes), Some(event));
        }
        let refused = [
            EventAction::SetParam { index: MAX_PARAMS as u32, value: 1.0 },
            EventAction::NoteOn { channel: 16, key: 60, velocity: 1.0, note_id: -1 },
            EventAction::NoteOn { channel: 0, key: 128, velocity: 1.0, note_id: -1 },
            EventAction::NoteOff { channel: 0, key: 1, velocity: f32::NAN, note_id: -1 },
            EventAction::Midi { data: [0xF0, 1, 2], len: 3 },
            EventAction::Midi { data: [0x90, 60, 0x80], len: 3 },
            EventAction::Midi { data: [0x90, 60, 1], len: 2 },
            EventAction::Midi { data: [0x40, 0, 0], len: 0 },
        ];
        for action in refused {
            let mut bytes = [0u8; EVENT_BYTES];
            Event { time: 0, action }.encode(&mut bytes);
            assert_eq!(Event::decode(&bytes), None, "{action:?}");
        }
    }

    #[test]
    fn transports_round_trip_and_impossible_values_are_replaced() {
        let t = Transport {
            flags: Transport::FROM_HOST | Transport::PLAYING | Transport::LOOPING,
            tempo: 93.5,
            beats: 17.25,
            seconds: 11.07,
            bar_start: 16.0,
            bar_number: 4,
            loop_start: 8.0,
            loop_end: 24.0,
            numerator: 7,
            denominator: 8,
        };
        let mut bytes = [0u8; CONTEXT_BYTES];
        t.encode(12, &mut bytes);
        assert_eq!(Transport::decode(&bytes), (t, 12));
        for bad in [
            Transport { tempo: f64::NAN, ..t },
            Transport { tempo: -1.0, ..t },
            Transport { numerator: 0, ..t },
            Transport { denominator: 6, ..t },
            Transport { beats: f64::INFINITY, ..t },
            Transport { loop_end: 1.0, ..t },
            Transport { flags: 1 << 20, ..t },
        ] {
            let fixed = bad.sanitized();
            assert!(fixed.has(Transport::MALFORMED), "{bad:?}");
            assert!(fixed.tempo > 0.0 && fixed.beats.is_finite() && fixed.denominator.is_power_of_two());
        }
        assert!(!t.sanitized().has(Transport::MALFORMED));
        // 4/4 at 120 BPM: one second is two beats; the bar moves at four.
        let mut playing = Transport::default();
        playing = playing.advanced(48_000 * 2 + 1, 48_000.0);
        assert!((playing.beats - 4.0).abs() < 1e-3 && playing.bar_number == 1 && playing.bar_start == 4.0);
        let stopped = Transport { flags: 0, ..Transport::default() };
        assert_eq!(stopped.advanced(1000, 48_000.0), stopped);
    }

    #[test]
    fn blocks_are_accepted_exactly_when_shaped_for_the_track() {
        let layout = ProcessLayout::new(MAX_PARAMS, 3, 2 * 64);
        let h = BlockHeader {
            kind: BlockKind::Process as u32,
            track: 5,
            frames: 64,
            channels: 2,
            count: MAX_PARAMS as u32,
            ..Default::default()
        };
        assert_eq!(h.check_process(layout.len, 3, 5, 64, 2), Ok(layout));
        assert_eq!(h.check_process(layout.len, 3, 6, 64, 2), Err(BlockError::WrongTrack(5)));
        assert!(matches!(h.check_process(layout.len, 3, 5, 32, 2), Err(BlockError::WrongShape { .. })));
        assert!(matches!(h.check_process(layout.len - 4, 3, 5, 64, 2), Err(BlockError::BadLength { .. })));
        assert!(matches!(h.check_process(layout.len, 2, 5, 64, 2), Err(BlockError::BadLength { .. })));
        let too_many = MAX_BLOCK_EVENTS as u32 + 1;
        assert_eq!(h.check_process(layout.len, too_many, 5, 64, 2), Err(BlockError::TooManyEvents(too_many)));
        let params = BlockHeader { count: MAX_PARAMS as u32 + 1, ..h };
        assert_eq!(params.check_process(layout.len, 3, 5, 64, 2), Err(BlockError::BadCount(MAX_PARAMS as u32 + 1)));
        let result = BlockHeader { kind: BlockKind::Result as u32, ..h };
        assert_eq!(result.check_process(layout.len, 3, 5, 64, 2), Err(BlockError::WrongKind(2)));
    }

    #[test]
    fn the_process_layout_is_contiguous() {
        let l = ProcessLayout::new(3, 2, 128);
        assert_eq!(l.context, HEADER_BYTES);
        assert_eq!(l.params, HEADER_BYTES + CONTEXT_BYTES);
        assert_eq!(l.events, l.params + 12);
        assert_eq!(l.samples, l.events + 2 * EVENT_BYTES);
        assert_eq!(l.len, l.samples + 512);
    }
}

#[cfg(test)]
mod proptests {
    //! Whatever bytes a script's worker puts in a reply, decoding returns an
    //! error or a header that matches the reader's expectations and the bytes
    //! it has: never a panic, never a length that reads past the message.
    use proptest::prelude::*;

    use super::*;

    /// Track shape the reader expects: id, frames, channels, events per reply.
    fn expectation() -> impl Strategy<Value = (u32, usize, usize, usize)> {
        (0..4u32, 1..=64usize, 1..=8usize, 0..=40usize)
    }

    /// A reply close to what the reader expects, often exactly right, else
    /// with fields off, and a body of about the right length (arbitrary bytes:
    /// samples may be NaN).
    fn reply(e: (u32, usize, usize, usize)) -> impl Strategy<Value = Vec<u8>> {
        let (track, frames, channels, max_events) = e;
        let near = |v: u32| prop_oneof![6 => Just(v), 1 => v.saturating_sub(1)..=v + 1, 1 => any::<u32>()];
        let fields = (
            any::<bool>(),
            prop_oneof![6 => Just(None), 1 => (0..5u32).prop_map(Some), 1 => any::<u32>().prop_map(Some)],
            near(track),
            near(frames as u32),
            near(channels as u32),
            prop_oneof![6 => 0..=2u32, 1 => any::<u32>()],
            prop_oneof![6 => 0..=max_events as u32 + 1, 1 => any::<u32>()],
            prop_oneof![6 => Just(0isize), 1 => -2..=2isize],
        );
        (fields, any::<u64>()).prop_flat_map(
            move |((events, kind, track, frames, channels, status, count, off), seq)| {
                let kind = kind.unwrap_or(if events { BlockKind::Events } else { BlockKind::Result } as u32);
                let h = BlockHeader { kind, track, seq, frames, channels, status, count, ..Default::default() };
                let body = if events {
                    (count as usize).saturating_mul(EVENT_BYTES)
                } else {
                    (frames as usize).saturating_mul(channels as usize).saturating_mul(4)
                };
                let len = (HEADER_BYTES + body.min(1 << 16)).saturating_add_signed(off);
                prop::collection::vec(any::<u8>(), len).prop_map(move |mut msg| {
                    if msg.len() >= HEADER_BYTES {
                        h.encode(&mut msg);
                    }
                    msg
                })
            },
        )
    }

    proptest! {
        #![proptest_config(crate::proptest_config::cases(256))]

        #[test]
        fn any_bytes_read_as_a_header_or_too_short(msg in prop::collection::vec(any::<u8>(), 0..80)) {
            match BlockHeader::read(&msg) {
                Ok(h) => {
                    prop_assert!(msg.len() >= HEADER_BYTES);
                    let mut again = [0u8; HEADER_BYTES];
                    h.encode(&mut again);
                    prop_assert_eq!(&again[..], &msg[..HEADER_BYTES]);
                }
                Err(e) => prop_assert!(e == BlockError::TooShort && msg.len() < HEADER_BYTES),
            }
        }

        /// decode_reply accepts exactly the well-formed replies, and what it
        /// accepts can be read without leaving the message.
        #[test]
        fn replies_are_accepted_exactly_when_well_formed(
            (e, msg) in expectation().prop_flat_map(|e| (Just(e), reply(e)))
        ) {
            let (track, frames, channels, max_events) = e;
            let decoded = BlockHeader::decode_reply(&msg, track, frames, channels, max_events);
            let well_formed = BlockHeader::read(&msg).is_ok_and(|h| {
                h.track == track
                    && match h.kind {
                        2 => {
                            h.frames as usize == frames
                                && h.channels as usize == channels
                                && h.status <= 2
                                && msg.len() == HEADER_BYTES + frames * channels * 4
                        }
                        3 => h.count as usize <= max_events && msg.len() == HEADER_BYTES + h.count as usize * EVENT_BYTES,
                        _ => false,
                    }
            });
            prop_assert_eq!(decoded.is_ok(), well_formed, "{:?}", decoded);
            if let Ok(h) = decoded {
                if h.kind == BlockKind::Result as u32 {
                    let mut samples = vec![0.0f32; frames * channels];
                    read_samples(&msg, HEADER_BYTES, &mut samples);
                } else {
                    for i in 0..h.count as usize {
                        let at = HEADER_BYTES + i * EVENT_BYTES;
                        let _ = Event::decode(&msg[at..at + EVENT_BYTES]);
                    }
                }
            }
        }

        #[test]
        fn headers_round_trip(
            h in (any::<[u32; 6]>(), any::<[u64; 4]>()).prop_map(|(a, b)| BlockHeader {
                kind: a[0], track: a[1], frames: a[2], channels: a[3], status: a[4], count: a[5],
                seq: b[0], sample_time: b[1], sent_ns: b[2], done_ns: b[3],
            })
        ) {
            let mut msg = [0u8; HEADER_BYTES];
            h.encode(&mut msg);
            prop_assert_eq!(BlockHeader::read(&msg), Ok(h));
        }

        /// Any bytes decode to no event or to one that is safe to play, and
        /// that survives re-encoding unchanged.
        #[test]
        fn events_decode_to_playable_values_or_nothing(
            bytes in prop_oneof![
                prop::collection::vec(any::<u8>(), 0..48),
                (
                    any::<u64>(),
                    (0..8u8, 0..20u8, 0..140u8, 0..5u8),
                    prop_oneof![-3..5i32, any::<i32>()],
                    proptest::num::f32::ANY,
                    prop_oneof![0..48u32, any::<u32>()],
                    any::<[u8; 8]>(),
                )
                    .prop_map(|(time, (kind, channel, key, len), note_id, value, index, tail)| {
                        let mut v = time.to_le_bytes().to_vec();
                        v.extend_from_slice(&[kind, channel, key, len]);
                        v.extend_from_slice(&note_id.to_le_bytes());
                        v.extend_from_slice(&value.to_le_bytes());
                        v.extend_from_slice(&index.to_le_bytes());
                        v.extend_from_slice(&tail);
                        v
                    }),
            ]
        ) {
            let Some(event) = Event::decode(&bytes) else { return Ok(()) };
            prop_assert!(bytes.len() >= EVENT_BYTES);
            match event.action {
                EventAction::NoteOn { channel, key, velocity, note_id }
                | EventAction::NoteOff { channel, key, velocity, note_id } => {
                    prop_assert!(channel < 16 && key < 128 && note_id >= -1 && (0.0..=1.0).contains(&velocity));
                }
                EventAction::NoteChoke { channel, key, note_id } => {
                    prop_assert!(channel < 16 && key < 128 && note_id >= -1);
                }
                EventAction::Midi { data, len } => {
                    prop_assert!(len == midi_message_len(data[0]) && len > 0);
                    prop_assert!(data[1..].iter().all(|&b| b < 0x80));
                }
                EventAction::ParamChange { index, value } | EventAction::SetParam { index, value } => {
                    prop_assert!((index as usize) < MAX_PARAMS && value.is_finite());
                }
            }
            let mut again = [0u8; EVENT_BYTES];
            event.encode(&mut again);
            prop_assert_eq!(Event::decode(&again), Some(event));
        }
    }

    /// Regression: fewer than EVENT_BYTES bytes panicked on slicing.
    #[test]
    fn short_events_are_refused() {
        for len in 0..EVENT_BYTES {
            assert_eq!(Event::decode(&[1; EVENT_BYTES][..len]), None);
        }
    }
}
