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
//! then a body: for `Process`, `count` parameter values (f32) and the samples;
//! for `Result`, the samples; for `Events`, `count` [`Event`]s of 24 bytes.
//! Samples are f32, planar (channel 0's frames, then channel 1's).
//!
//! [`BlockHeader::decode_reply`] checks every field against what the reader expects
//! and the bytes it holds; a message that fails is a fault of the peer.

/// Bytes of the header.
pub const HEADER_BYTES: usize = 56;
/// Bytes of one encoded event.
pub const EVENT_BYTES: usize = 24;
/// Parameters a block carries to its script.
pub const MAX_PARAMS: usize = 8;
/// Loudest sample a result may carry: ±1000, +60 dBFS, far beyond any mix's
/// headroom. A script that returns more (1e30, say) returns no audio anyone
/// meant to hear, and a few such tracks summed overflow the mix to Inf.
pub const MAX_SAMPLE: f32 = 1000.0;

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
    pub kind: u32,
    pub track: u32,
    pub seq: u64,
    pub frames: u32,
    pub channels: u32,
    pub sample_time: u64,
    pub status: u32,
    pub count: u32,
    pub sent_ns: u64,
    pub done_ns: u64,
}

/// Why a message was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockError {
    TooShort,
    WrongKind(u32),
    WrongTrack(u32),
    WrongShape { frames: u32, channels: u32 },
    BadStatus(u32),
    BadCount(u32),
    BadLength { expected: usize, got: usize },
}

impl BlockHeader {
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
        if h.track != track {
            return Err(BlockError::WrongTrack(h.track));
        }
        let expected = match h.kind {
            k if k == BlockKind::Result as u32 => {
                if h.frames as usize != frames || h.channels as usize != channels {
                    return Err(BlockError::WrongShape { frames: h.frames, channels: h.channels });
                }
                if h.status > ResultStatus::NoProcess as u32 {
                    return Err(BlockError::BadStatus(h.status));
                }
                HEADER_BYTES + frames * channels * 4
            }
            k if k == BlockKind::Events as u32 => {
                if h.count as usize > max_events {
                    return Err(BlockError::BadCount(h.count));
                }
                HEADER_BYTES + h.count as usize * EVENT_BYTES
            }
            other => return Err(BlockError::WrongKind(other)),
        };
        if len != expected {
            return Err(BlockError::BadLength { expected, got: len });
        }
        Ok(h)
    }
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

/// What an event does.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum EventAction {
    /// Start a note on the track's voice.
    Note { pitch: f32, velocity: f32, duration: f32 },
    /// Set parameter `index` to `value`.
    SetParam { index: u32, value: f32 },
}

/// A timestamped event from a script's `tick`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Event {
    /// Sample on the track's timeline (the input side) where it takes effect.
    pub time: u64,
    pub action: EventAction,
}

impl Event {
    pub fn encode(&self, out: &mut [u8]) {
        out[0..8].copy_from_slice(&self.time.to_le_bytes());
        let (kind, a, b, c) = match self.action {
            EventAction::Note { pitch, velocity, duration } => (1u32, pitch.to_bits(), velocity, duration),
            EventAction::SetParam { index, value } => (2u32, index, value, 0.0),
        };
        out[8..12].copy_from_slice(&kind.to_le_bytes());
        out[12..16].copy_from_slice(&a.to_le_bytes());
        out[16..20].copy_from_slice(&b.to_le_bytes());
        out[20..24].copy_from_slice(&c.to_le_bytes());
    }

    /// Decodes an event; `None` for fewer than [`EVENT_BYTES`] bytes, an unknown
    /// kind, a parameter index out of range or a non-finite number (a script's
    /// bad event is dropped, not played).
    pub fn decode(bytes: &[u8]) -> Option<Event> {
        let bytes: &[u8; EVENT_BYTES] = bytes.get(..EVENT_BYTES)?.try_into().ok()?;
        let word = |i: usize| [bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]];
        let time = u64::from_le_bytes(bytes[0..8].try_into().expect("8 bytes"));
        let kind = u32::from_le_bytes(word(8));
        let a = u32::from_le_bytes(word(12));
        let b = f32::from_le_bytes(word(16));
        let c = f32::from_le_bytes(word(20));
        let action = match kind {
            1 => {
                let pitch = f32::from_bits(a);
                if !(pitch.is_finite() && b.is_finite() && c.is_finite() && (0.0..=1000.0).contains(&c)) {
                    return None;
                }
                EventAction::Note { pitch, velocity: b.clamp(0.0, 1.0), duration: c }
            }
            2 if (a as usize) < MAX_PARAMS && b.is_finite() => EventAction::SetParam { index: a, value: b },
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
            EventAction::Note { pitch: 60.5, velocity: 0.5, duration: 0.25 },
            EventAction::SetParam { index: 7, value: -3.0 },
        ] {
            let event = Event { time: 1 << 40, action };
            let mut bytes = [0u8; EVENT_BYTES];
            event.encode(&mut bytes);
            assert_eq!(Event::decode(&bytes), Some(event));
        }
        let bad = Event { time: 0, action: EventAction::SetParam { index: 8, value: 1.0 } };
        let mut bytes = [0u8; EVENT_BYTES];
        bad.encode(&mut bytes);
        assert_eq!(Event::decode(&bytes), None, "parameter index out of range");
        let nan = Event { time: 0, action: EventAction::Note { pitch: f32::NAN, velocity: 1.0, duration: 1.0 } };
        nan.encode(&mut bytes);
        assert_eq!(Event::decode(&bytes), None);
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
                prop::collection::vec(any::<u8>(), 0..40),
                (
                    any::<u64>(),
                    0..4u32,
                    // A parameter index, or a pitch's bits.
                    prop_oneof![0..10u32, any::<u32>(), proptest::num::f32::ANY.prop_map(f32::to_bits)],
                    proptest::num::f32::ANY,
                    proptest::num::f32::ANY,
                )
                    .prop_map(|(time, kind, a, b, c)| {
                        let mut v = time.to_le_bytes().to_vec();
                        for w in [kind, a, b.to_bits(), c.to_bits()] {
                            v.extend_from_slice(&w.to_le_bytes());
                        }
                        v
                    }),
            ]
        ) {
            let Some(event) = Event::decode(&bytes) else { return Ok(()) };
            prop_assert!(bytes.len() >= EVENT_BYTES);
            match event.action {
                EventAction::Note { pitch, velocity, duration } => {
                    prop_assert!(pitch.is_finite() && (0.0..=1.0).contains(&velocity));
                    prop_assert!((0.0..=1000.0).contains(&duration));
                }
                EventAction::SetParam { index, value } => {
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
