//! The track's tests: a fake script on the other end of its rings, and a
//! hostile one (`proptests`).

use super::*;
use crate::shm::region::Region;
use crate::shm::ring::{Consumer, Producer};

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
    let link =
        ScriptLink { to_script: region.producer(0).unwrap(), from_script: region.consumer(1).unwrap(), generation: 1 };
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
            // Checked as the worker checks every block.
            let context: &[u8; CONTEXT_BYTES] = self.buf[HEADER_BYTES..][..CONTEXT_BYTES].try_into().unwrap();
            let (_, events) = Transport::decode(context);
            let layout = h.check_process(len, events, h.track, h.frames as usize, h.channels as usize).unwrap();
            let mut samples = vec![0.0f32; n];
            block::read_samples(&self.buf, layout.samples, &mut samples);
            let reply = BlockHeader { kind: BlockKind::Result as u32, done_ns: monotonic_ns(), count: 0, ..h };
            let mut out = vec![0u8; block::result_len(n)];
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
fn run(track: &mut Track, script: &mut FakeScript, total: usize, serve: impl FnMut(&mut FakeScript)) -> Vec<Vec<f32>> {
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
        let context: [u8; CONTEXT_BYTES] = script.buf[HEADER_BYTES..HEADER_BYTES + CONTEXT_BYTES].try_into().unwrap();
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
        let header =
            BlockHeader { kind: BlockKind::Events as u32, track: 3, count: events.len() as u32, ..Default::default() };
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
    let link =
        ScriptLink { to_script: region.producer(0).unwrap(), from_script: region.consumer(1).unwrap(), generation: 2 };
    assert!(port.send_link(link));
    let _ = run(&mut track, &mut script, 64 * 2, |_| {});
    assert_eq!(port.stats.link_generation.load(Ordering::Relaxed), 2);
    assert_eq!(port.collect_garbage(), 1);
}

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

    use super::super::*;
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
