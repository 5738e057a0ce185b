//! outboard.clap against the rules of the CLAP specification, each checked
//! here ourselves through outboard-host's library (the same code the
//! `outboard-host` binary runs). The rule each test checks is quoted from
//! clap's headers (plugin.h, plugin-features.h, process.h, ext/params.h,
//! ext/state.h, ext/latency.h, ext/audio-ports.h, ext/render.h).

use outboard_host::{ActivateConfig, Bundle, Instance, ParamChange, Processor, SampleType, Transport};
use outboard_plugin::state::PluginState;
use outboard_tests::plugin::PluginBundle;

const CLAP_PARAM_IS_STEPPED: u32 = 1 << 0;
const CLAP_PARAM_IS_READONLY: u32 = 1 << 3;
const CLAP_PARAM_IS_BYPASS: u32 = 1 << 4;
const CLAP_PARAM_IS_AUTOMATABLE: u32 = 1 << 5;

/// xorshift64*: reproducible pseudo-random numbers for fuzzing.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The test input: distinct, exactly representable values per frame and channel.
fn signal(frame: usize, channel: usize) -> f32 {
    ((frame * 13 + channel * 5) % 199) as f32 / 256.0 - 0.35
}

/// A bundle of its own for one test, loaded; the tests take turns (each
/// starts worker processes, and one counts them).
fn load(label: &str) -> (Loaded, Bundle) {
    let turn = outboard_tests::realtime::one_at_a_time();
    let files = PluginBundle::new(label, true);
    let bundle = Bundle::load(&files.clap()).expect("load outboard.clap");
    (Loaded { _files: files, _turn: turn }, bundle)
}

struct Loaded {
    _files: PluginBundle,
    _turn: std::sync::MutexGuard<'static, ()>,
}

fn instance(bundle: &Bundle) -> Instance {
    bundle.instantiate_with(outboard_plugin::PLUGIN_ID, false).expect("create an instance")
}

/// Feeds `sizes` blocks of [`signal`] (starting at frame `from`) with the
/// events `events(block index, frames)` returns, and returns the output.
fn run(
    processor: &mut Processor,
    from: usize,
    sizes: &[u32],
    mut events: impl FnMut(usize, u32, &mut Processor),
) -> [Vec<f32>; 2] {
    let mut out = [Vec::new(), Vec::new()];
    let mut at = from;
    let mut scratch = vec![0.0f32; processor.max_frames()];
    for (k, &n) in sizes.iter().enumerate() {
        let n_usize = n as usize;
        for (c, _) in out.iter().enumerate() {
            let input: Vec<f32> = (at..at + n_usize).map(|f| signal(f, c)).collect();
            assert!(processor.write_input(0, c, &input));
        }
        events(k, n, processor);
        processor.process(n).expect("process");
        for (c, channel) in out.iter_mut().enumerate() {
            assert!(processor.read_output(0, c, &mut scratch[..n_usize]));
            channel.extend_from_slice(&scratch[..n_usize]);
        }
        at += n_usize;
    }
    out
}

/// out(t) == gain · signal(t − latency) for every frame at or past the
/// latency (counted from `from`), silence before it.
fn assert_delayed(out: &[Vec<f32>; 2], latency: usize, gain: f32, what: &str) {
    for (c, channel) in out.iter().enumerate() {
        for (t, &y) in channel.iter().enumerate() {
            let expected = if t < latency { 0.0 } else { gain * signal(t - latency, c) };
            assert_eq!(y, expected, "{what}: channel {c}, frame {t}");
        }
    }
}

fn set_script(instance: &mut Instance, name: &str, source: &str) {
    outboard_host::run::apply_script(instance, name, source).expect("the plugin takes the script");
}

#[test]
fn descriptor_and_features_follow_the_rules() {
    let (_files, bundle) = load("conf-descriptor");
    let descriptors = bundle.descriptors();
    let ids: Vec<&str> = descriptors.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, [outboard_plugin::PLUGIN_ID, outboard_plugin::INSTRUMENT_ID], "the effect and the instrument");
    for d in &descriptors {
        // plugin.h: "id: eg: "com.u-he.diva", mandatory"; name, vendor, version.
        assert!(d.id.contains('.') && !d.id.contains(char::is_whitespace), "{:?}", d.id);
        for (what, value) in [("name", &d.name), ("vendor", &d.vendor), ("version", &d.version)] {
            assert!(!value.trim().is_empty(), "{what} is empty");
        }
        // plugin-features.h: one main category; standard or "$namespace:$feature".
        let main = ["instrument", "audio-effect", "note-effect", "note-detector", "analyzer"];
        assert_eq!(d.features.iter().filter(|f| main.contains(&f.as_str())).count(), 1, "{:?}", d.features);
        let mut unique = d.features.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), d.features.len(), "duplicate features {:?}", d.features);
        let standard = [
            "audio-effect",
            "instrument",
            "synthesizer",
            "utility",
            "stereo",
            "mono",
            "surround",
            "ambisonic",
            "filter",
            "delay",
            "reverb",
            "mixing",
            "mastering",
        ];
        for f in &d.features {
            assert!(
                standard.contains(&f.as_str()) || f.contains(':'),
                "feature {f:?} is neither standard nor namespaced"
            );
        }
    }
    let main_category = |d: &outboard_host::plugin_instance::Descriptor, f: &str| d.features.iter().any(|x| x == f);
    assert!(main_category(&descriptors[0], "audio-effect") && main_category(&descriptors[1], "instrument"));
    // plugin-factory.h: create_plugin with an unknown id returns NULL.
    assert!(bundle.instantiate_with("dev.outboard.no-such-plugin", false).is_err());
}

#[test]
fn audio_ports_are_one_stereo_main_pair_that_can_run_in_place() {
    let (_files, bundle) = load("conf-ports");
    let mut plugin = instance(&bundle);
    for input in [true, false] {
        let ports = plugin.audio_ports(input);
        assert_eq!(ports.len(), 1);
        let port = &ports[0];
        assert_eq!(port.channels, 2);
        assert!(port.is_main());
        assert!(port.supports_64bit());
        // audio-ports.h: in_place_pair names a port of the other direction.
        let other = plugin.audio_ports(!input);
        assert_eq!(port.in_place_pair, Some(other[0].id));
    }
}

#[test]
fn audio_is_exact_at_basic_random_and_varying_block_sizes_in_and_out_of_place_f32_and_f64() {
    let (_files, bundle) = load("conf-audio");
    let mut plugin = instance(&bundle);
    let mut rng = Rng(0x5eed);
    for (sample_type, in_place) in
        [(SampleType::F32, false), (SampleType::F32, true), (SampleType::F64, false), (SampleType::F64, true)]
    {
        for max in [1u32, 64, 100, 512] {
            let config = ActivateConfig {
                min_frames: 1,
                max_frames: max,
                sample_type,
                in_place,
                ..ActivateConfig::new(48_000.0, max)
            };
            let mut processor = plugin.activate(config).expect("activate");
            let latency = plugin.latency() as usize;
            assert_eq!(latency, 64 * (max as usize).div_ceil(64) + 64, "latency for at most {max} frames");
            assert_eq!(processor.in_place_channels() > 0, in_place);
            processor.start_processing().unwrap();
            // Basic: full blocks; random: any size up to the maximum, every call.
            let full = vec![max; (4096 / max as usize).max(40)];
            let random: Vec<u32> = (0..200).map(|_| 1 + rng.below(u64::from(max)) as u32).collect();
            let mut sizes = full;
            sizes.extend(random);
            // The default script passes audio through: wet or dry (if a result
            // is late), the output is the input delayed by the latency.
            let out = run(&mut processor, 0, &sizes, |_, _, _| {});
            assert_delayed(&out, latency, 1.0, &format!("{sample_type:?} in place {in_place} max {max}"));
            processor.stop_processing();
            plugin.deactivate(processor);
        }
    }
}

#[test]
fn denormals_are_flushed_and_the_hosts_fpu_mode_is_left_alone() {
    let (_files, bundle) = load("conf-denormals");
    let mut plugin = instance(&bundle);
    for sample_type in [SampleType::F32, SampleType::F64] {
        let mut processor =
            plugin.activate(ActivateConfig { sample_type, ..ActivateConfig::new(48_000.0, 64) }).unwrap();
        processor.start_processing().unwrap();
        let tiny = f32::MIN_POSITIVE / 8.0;
        assert!(tiny.is_subnormal());
        for _ in 0..50 {
            for c in 0..2 {
                match sample_type {
                    SampleType::F32 => processor.input_f32_mut(0, c).unwrap().fill(tiny),
                    SampleType::F64 => processor.input_f64_mut(0, c).unwrap().fill(1e-310),
                }
            }
            processor.process(64).unwrap();
            for c in 0..2 {
                let mut out = [0.0f32; 64];
                processor.read_output(0, c, &mut out);
                assert!(out.iter().all(|s| s.is_finite() && !s.is_subnormal()), "{sample_type:?}: {out:?}");
            }
        }
        // The plugin restores the host thread's floating-point mode.
        let after = std::hint::black_box(tiny) * std::hint::black_box(1.0f32);
        assert!(after.is_subnormal(), "flush-to-zero leaked out of process()");
        processor.stop_processing();
        plugin.deactivate(processor);
    }
}

#[test]
fn reactivation_at_other_rates_and_block_sizes_starts_clean_and_reports_the_new_latency() {
    let (_files, bundle) = load("conf-reactivate");
    let mut plugin = instance(&bundle);
    let mut last_latency = None;
    for (rate, max) in [(44_100.0, 64u32), (96_000.0, 512), (22_050.0, 32), (192_000.0, 256), (48_000.0, 64)] {
        let changes_before = plugin.counters_snapshot().latency_changes;
        let mut processor =
            plugin.activate(ActivateConfig { min_frames: 1, ..ActivateConfig::new(rate, max) }).unwrap();
        let latency = plugin.latency() as usize;
        // latency.h: the plugin tells the host in activate() when it changed.
        if last_latency.is_some_and(|last| last != latency) {
            assert!(plugin.counters_snapshot().latency_changes > changes_before, "latency change not announced");
        }
        last_latency = Some(latency);
        processor.start_processing().unwrap();
        let out = run(&mut processor, 0, &vec![max; 3000 / max as usize + 10], |_, _, _| {});
        // No audio from the previous activation: silence, then this input.
        assert_delayed(&out, latency, 1.0, &format!("{rate} Hz, {max} frames"));
        processor.stop_processing();
        plugin.deactivate(processor);
    }
}

#[test]
fn reset_forgets_audio_in_flight() {
    let (_files, bundle) = load("conf-reset");
    let mut plugin = instance(&bundle);
    let mut processor = plugin.activate(ActivateConfig::new(48_000.0, 64)).unwrap();
    let latency = plugin.latency() as usize;
    processor.start_processing().unwrap();
    run(&mut processor, 0, &[64; 20], |_, _, _| {});
    processor.reset();
    // After reset the pipeline is empty: silence for the latency, then the
    // input from the reset on.
    let out = run(&mut processor, 0, &[64; 20], |_, _, _| {});
    assert_delayed(&out, latency, 1.0, "after reset");
    processor.stop_processing();
    plugin.deactivate(processor);
}

#[test]
fn parameters_are_described_consistently_and_convert_to_text_and_back() {
    let (_files, bundle) = load("conf-params");
    let mut plugin = instance(&bundle);
    let params = plugin.params();
    assert_eq!(params.len() as u32, plugin.param_count());
    let mut ids: Vec<u32> = params.iter().map(|p| p.id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), params.len(), "parameter ids are unique");
    for p in &params {
        assert!(!p.name.is_empty());
        assert!(p.min.is_finite() && p.max.is_finite() && p.min <= p.default && p.default <= p.max, "{p:?}");
        let value = plugin.param_value(p.id).expect("every parameter has a value");
        assert!((p.min..=p.max).contains(&value), "{p:?} = {value}");
        if p.flags & CLAP_PARAM_IS_READONLY == 0 {
            assert_eq!(value, p.default, "{} starts at its default", p.name);
            assert!(p.flags & CLAP_PARAM_IS_AUTOMATABLE != 0);
        }
        // params.h: value_to_text / text_to_value, and they agree.
        for step in 0..=10 {
            let mut v = p.min + (p.max - p.min) * f64::from(step) / 10.0;
            if p.flags & CLAP_PARAM_IS_STEPPED != 0 {
                v = v.round();
            }
            let text = plugin.value_to_text(p.id, v).unwrap_or_else(|| panic!("{}: no text for {v}", p.name));
            let back = plugin.text_to_value(p.id, &text).unwrap_or_else(|| panic!("{}: cannot parse {text:?}", p.name));
            assert_eq!(plugin.value_to_text(p.id, back).as_deref(), Some(text.as_str()), "{}: {v}", p.name);
        }
        assert_eq!(plugin.text_to_value(p.id, "certainly not a number"), None);
    }
    let bypass: Vec<_> = params.iter().filter(|p| p.flags & CLAP_PARAM_IS_BYPASS != 0).collect();
    assert_eq!(bypass.len(), 1, "one bypass parameter");
    assert!(bypass[0].flags & CLAP_PARAM_IS_STEPPED != 0 && bypass[0].min == 0.0 && bypass[0].max == 1.0);
    // Unknown ids: no value, no text.
    assert_eq!(plugin.param_value(4242), None);
    assert_eq!(plugin.value_to_text(4242, 0.0), None);
    assert_eq!(plugin.text_to_value(4242, "0"), None);
}

/// A script for fuzzing: declared parameters of every kind applied on
/// their frames, every note and MIDI message answered, parameters moved.
const FUZZ_SCRIPT: &str = r#"
import numpy as np

PARAMS = {
    "gain": dict(min=0.0, max=1.0, default=0.5),
    "cutoff": dict(min=20.0, max=20000.0, default=1000.0, unit="Hz", scale="log"),
    "steps": dict(min=1, max=16, default=4, step=1),
    "mode": dict(choices=["a", "b", "c"]),
}

def process(block, ctx):
    t = ctx.transport
    assert t.tempo > 0 and np.isfinite(t.beats) and t.time_signature[1] > 0
    for start, end, p in ctx.segments():
        block[:, start:end] *= np.float32(p["gain"])
    for e in ctx.events:
        assert 0 <= e.offset < ctx.frames and e.time == ctx.time + e.offset
        if e.kind == "note_on":
            ctx.note_on(e.key, e.velocity, at=e.time, channel=e.channel)
        elif e.kind in ("note_off", "note_choke"):
            ctx.note_off(e.key, at=e.time, channel=e.channel)
        else:
            ctx.midi(e.data, at=e.time)
    if ctx.block % 7 == 0:
        ctx.set_param("mode", "c")
        ctx.set_param("cutoff", 440.0, at=ctx.time + ctx.frames - 1)
"#;

#[test]
fn parameter_note_and_transport_fuzzing_never_breaks_the_audio() {
    use clack_host::events::event_types::{
        MidiEvent, NoteChokeEvent, NoteOffEvent, NoteOnEvent, TransportEvent, TransportFlags,
    };
    use clack_host::events::{EventFlags, EventHeader, Match, Pckn};
    use clack_host::utils::{BeatTime, SecondsTime};
    let (_files, bundle) = load("conf-fuzz");
    let mut plugin = instance(&bundle);
    set_script(&mut plugin, "fuzz.py", FUZZ_SCRIPT);
    let mut rng = Rng(0xf00d);
    let mut processor =
        plugin.activate(ActivateConfig { min_frames: 1, ..ActivateConfig::new(48_000.0, 256) }).unwrap();
    // The declared parameters are among them once activation saw the script load.
    let params = plugin.params();
    assert!(params.iter().any(|p| p.name == "cutoff"), "{params:?}");
    processor.start_processing().unwrap();
    let mut scratch = [0.0f32; 256];
    let mut answered = 0;
    // Anything a number can be, and numbers in range.
    let any = |rng: &mut Rng| match rng.below(8) {
        0 => f64::NAN,
        1 => f64::INFINITY,
        2 => -1e300,
        3 => 0.0,
        _ => rng.unit() * 400.0 - 50.0,
    };
    for block in 0..600 {
        let n = 1 + rng.below(256) as u32;
        match rng.below(4) {
            0 => {
                processor.set_raw_transport(None);
                processor.set_transport(None);
            }
            1 => {
                processor.set_raw_transport(None);
                processor
                    .set_transport(Some(Transport { tempo: 20.0 + rng.unit() * 300.0, playing: rng.below(2) == 0 }));
            }
            // Whatever a host could put in a transport.
            _ => processor.set_raw_transport(Some(TransportEvent {
                header: EventHeader::new_core(0, EventFlags::empty()),
                flags: TransportFlags::from_bits_truncate(rng.next() as u32),
                song_pos_beats: BeatTime::from_float(any(&mut rng)),
                song_pos_seconds: SecondsTime::from_float(any(&mut rng)),
                tempo: any(&mut rng),
                tempo_inc: any(&mut rng),
                loop_start_beats: BeatTime::from_float(any(&mut rng)),
                loop_end_beats: BeatTime::from_float(any(&mut rng)),
                loop_start_seconds: SecondsTime::from_float(any(&mut rng)),
                loop_end_seconds: SecondsTime::from_float(any(&mut rng)),
                bar_start: BeatTime::from_float(any(&mut rng)),
                bar_number: rng.next() as i32,
                time_signature_numerator: rng.below(70) as u16,
                time_signature_denominator: rng.below(70) as u16,
            })),
        }
        for c in 0..2 {
            let input: Vec<f32> = (0..n as usize).map(|i| signal(block * 256 + i, c)).collect();
            processor.write_input(0, c, &input);
        }
        // Events at sorted random offsets: parameter values anywhere in
        // range, some past it, some not numbers, some for unknown or
        // read-only params; notes with keys and channels in and out of
        // range and wildcards; MIDI of any bytes.
        let mut offsets: Vec<u32> = (0..rng.below(12)).map(|_| rng.below(u64::from(n)) as u32).collect();
        offsets.sort();
        for offset in offsets {
            let wild = |rng: &mut Rng, max: u64| -> Match<u16> {
                if rng.below(8) == 0 { Match::All } else { Match::Specific(rng.below(max) as u16) }
            };
            let pckn =
                Pckn::new(0u16, wild(&mut rng, 20), wild(&mut rng, 140), Match::Specific(rng.below(1 << 31) as u32));
            let velocity = if rng.below(10) == 0 { f64::NAN } else { rng.unit() * 1.5 - 0.2 };
            match rng.below(6) {
                0 => processor.push_event(&NoteOnEvent::new(offset, pckn, velocity)),
                1 => processor.push_event(&NoteOffEvent::new(offset, pckn, velocity)),
                2 => processor.push_event(&NoteChokeEvent::new(offset, pckn)),
                3 => processor.push_event(&MidiEvent::new(
                    offset,
                    0,
                    [rng.next() as u8, rng.next() as u8, rng.next() as u8],
                )),
                _ => {
                    let p = &params[rng.below(params.len() as u64) as usize];
                    let value = match rng.below(10) {
                        0 => f64::NAN,
                        1 => p.max * 10.0 + 1.0,
                        2 => -1e9,
                        _ => p.min + (p.max - p.min) * rng.unit(),
                    };
                    // Keep the DSP load modest: fuzzing, not a stress test.
                    let value = if p.name == "DSP load" { value.min(5_000.0) } else { value };
                    let id = if rng.below(20) == 0 { 9999 } else { p.id };
                    processor.push_param_value(offset, id, value)
                }
            };
        }
        processor.process(n).expect("process never fails");
        for c in 0..2 {
            processor.read_output(0, c, &mut scratch[..n as usize]);
            assert!(scratch[..n as usize].iter().all(|s| s.is_finite()), "block {block}");
        }
        // What the plugin sends is in time order and inside the call.
        let mut last = 0;
        for event in processor.output_events().iter() {
            let time = event.header().time();
            assert!(time < n && time >= last, "block {block}: an output event at {time} after {last}, of {n}");
            last = time;
            answered += 1;
        }
    }
    processor.stop_processing();
    plugin.deactivate(processor);
    assert!(answered > 100, "the script's events came out ({answered})");
    for p in &plugin.params() {
        let value = plugin.param_value(p.id).unwrap();
        assert!((p.min..=p.max).contains(&value), "{} = {value} after fuzzing", p.name);
    }
    // The script never failed on what it was given (its asserts hold):
    // deactivation delivers the instance's mail to the host's log.
    assert_eq!(plugin.counters_snapshot().error_logs, 0, "a script error: the plugin passed on something malformed");
}

#[test]
fn mix_and_bypass_change_on_the_exact_sample_of_their_event() {
    let (_files, bundle) = load("conf-sample-accurate");
    let mut plugin = instance(&bundle);
    set_script(&mut plugin, "half.py", "def process(block, ctx):\n    block *= 0.5\n");
    // Offline (render extension): every script result is waited for, so
    // the output is exact, not dry when a result is late.
    assert!(plugin.set_render_offline(true));
    let params = plugin.params();
    let id = |name: &str| params.iter().find(|p| p.name == name).unwrap().id;
    let (mix, bypass) = (id("Mix"), id("Bypass"));
    let mut processor = plugin.activate(ActivateConfig::new(48_000.0, 256)).unwrap();
    let latency = plugin.latency() as usize;
    processor.start_processing().unwrap();
    // Block 10, sample 37: Mix to 0 (dry). Block 20, sample 101: Mix back to
    // 1. Block 30, sample 5: Bypass on. Block 40, sample 200: Bypass off.
    let out = run(&mut processor, 0, &[256; 50], |k, _, p| {
        let _ = match k {
            10 => p.push_param_value(37, mix, 0.0),
            20 => p.push_param_value(101, mix, 1.0),
            30 => p.push_param_value(5, bypass, 1.0),
            40 => p.push_param_value(200, bypass, 0.0),
            _ => true,
        };
    });
    let dry_spans = [(10 * 256 + 37, 20 * 256 + 101), (30 * 256 + 5, 40 * 256 + 200)];
    for (c, channel) in out.iter().enumerate() {
        for (t, &y) in channel.iter().enumerate().skip(latency) {
            let dry = dry_spans.iter().any(|&(from, to)| (from..to).contains(&t));
            let x = signal(t - latency, c);
            assert_eq!(y, if dry { x } else { 0.5 * x }, "channel {c} frame {t} (dry expected: {dry})");
        }
    }
    processor.stop_processing();
    plugin.deactivate(processor);
}

#[test]
fn state_round_trips_byte_for_byte_through_any_stream_and_bad_state_is_refused() {
    let (_files, bundle) = load("conf-state");
    let mut first = instance(&bundle);
    // params.h flush while inactive, then state.h save.
    let params = first.params();
    let id = |name: &str| params.iter().find(|p| p.name == name).unwrap().id;
    first.flush_params(&[
        ParamChange { offset: 0, id: id("Mix"), value: 0.25 },
        ParamChange { offset: 0, id: id("DSP load"), value: 1234.0 },
        ParamChange { offset: 0, id: id("Script 2"), value: 0.75 },
    ]);
    set_script(&mut first, "tremolo.py", "def process(block, ctx):\n    block *= 0.25\n");
    let saved = first.save_state().unwrap();
    // state.h: streams may take or give any number of bytes per call.
    for chunk in [1, 3, 7, 4096] {
        assert_eq!(first.save_state_chunked(chunk).unwrap().0, saved, "saved through {chunk}-byte writes");
        let mut second = instance(&bundle);
        let rescans = second.counters_snapshot().params_rescans;
        second.load_state_chunked(&saved, chunk).expect("load through small reads");
        assert!(second.counters_snapshot().params_rescans > rescans, "loading state asks the host to rescan values");
        assert_eq!(second.save_state().unwrap(), saved, "load-then-save is byte for byte ({chunk}-byte reads)");
        for p in &params {
            assert_eq!(second.param_value(p.id), first.param_value(p.id), "{} after load", p.name);
        }
    }
    let decoded = PluginState::decode(&saved).unwrap();
    assert_eq!(decoded.script_name, "tremolo.py");
    assert!(decoded.params.contains(&(id("DSP load"), 1234.0)));

    // Invalid: empty, short, foreign, random, truncated, damaged, from the future,
    // out of range. Each is refused and changes nothing.
    let mut rng = Rng(7);
    let mut bad: Vec<Vec<u8>> = vec![Vec::new(), b"OUT".to_vec(), b"{\"mix\": 1}".to_vec()];
    bad.push((0..300).map(|_| rng.next() as u8).collect());
    bad.push(saved[..saved.len() / 2].to_vec());
    bad.push(saved[..saved.len() - 1].to_vec());
    let mut flipped = saved.clone();
    flipped[40] ^= 0x55;
    bad.push(flipped);
    let mut future = saved.clone();
    future[8] = 9;
    bad.push(future);
    let mut out_of_range = decoded.clone();
    out_of_range.params[0].1 = 7.0;
    bad.push(out_of_range.encode());
    let mut unknown = decoded.clone();
    unknown.params.push((4242, 0.0));
    bad.push(unknown.encode());
    for (i, bytes) in bad.iter().enumerate() {
        assert!(first.load_state(bytes).is_err(), "bad state {i} was accepted");
        assert_eq!(first.save_state().unwrap(), saved, "bad state {i} changed the instance");
    }
}

#[test]
fn scanning_starts_no_processes() {
    let (_files, bundle) = load("conf-scan");
    // A host scanning plugins creates, queries and destroys instances.
    for _ in 0..5 {
        let mut plugin = instance(&bundle);
        let _ = (plugin.params(), plugin.audio_ports(true), plugin.save_state().unwrap());
    }
    assert_eq!(outboard_host::procfs::children().len(), 0, "no worker was started by a scan");
}

#[test]
fn a_state_loaded_while_active_brings_its_script_in_without_a_restart() {
    let (_files, bundle) = load("conf-live-state");
    let mut plugin = instance(&bundle);
    set_script(&mut plugin, "half.py", "def process(block, ctx):\n    block *= 0.5\n");
    assert!(plugin.set_render_offline(true));
    let mut processor = plugin.activate(ActivateConfig::new(48_000.0, 64)).unwrap();
    let latency = plugin.latency() as usize;
    processor.start_processing().unwrap();
    let out = run(&mut processor, 0, &[64; 100], |_, _, _| {});
    assert_delayed(&out, latency, 0.5, "before");
    // Main thread, while the processor is active (a preset recalled in a DAW).
    set_script(&mut plugin, "quarter.py", "def process(block, ctx):\n    block *= 0.25\n");
    let mut frame = 6400;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let switched = loop {
        let out = run(&mut processor, frame, &[64; 10], |_, _, _| {});
        frame += 640;
        let last = out[0][639];
        if last == 0.25 * signal(frame - 1 - latency, 0) {
            break true;
        }
        assert_eq!(last, 0.5 * signal(frame - 1 - latency, 0), "old script until the new one is in");
        if std::time::Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    assert!(switched, "the new script never took over");
    processor.stop_processing();
    plugin.deactivate(processor);
    assert_eq!(PluginState::decode(&plugin.save_state().unwrap()).unwrap().script_name, "quarter.py");
}

/// The script a declared-parameter test follows, before and after an edit.
const DECLARED_V1: &str = "PARAMS = {\n    \"gain\": dict(min=0.0, max=2.0, default=1.0),\n    \
    \"drive\": dict(min=0.0, max=1.0, default=0.2),\n    \"tone\": dict(choices=[\"dark\", \"bright\"]),\n}\n\n\
    def process(block, ctx):\n    block *= ctx.params[\"gain\"]\n";
/// `drive` renamed `grit`, `tone` removed, `gain`'s range widened.
const DECLARED_V2: &str = "PARAMS = {\n    \"grit\": dict(min=0.0, max=1.0, default=0.3),\n    \
    \"gain\": dict(min=0.0, max=4.0, default=1.0),\n}\n\n\
    def process(block, ctx):\n    block *= ctx.params[\"gain\"]\n";

#[test]
fn declared_parameters_round_trip_through_state_and_keep_their_values_by_name_across_edits() {
    let (files, bundle) = load("conf-declared");
    let path = std::path::PathBuf::from(files._files.write("declared.py", DECLARED_V1));
    let mut first = instance(&bundle);
    outboard_host::run::apply_script_file(&mut first, &path).expect("the plugin takes the script");
    // Activation waits for the script to load: its parameters are there after.
    let processor = first.activate(ActivateConfig::new(48_000.0, 256)).unwrap();
    first.deactivate(processor);
    let params = first.params();
    let find = |params: &[outboard_host::ParamInfo], name: &str| params.iter().find(|p| p.name == name).cloned();
    let (gain, drive, tone) =
        (find(&params, "gain").unwrap(), find(&params, "drive").unwrap(), find(&params, "tone").unwrap());
    let hidden = params.iter().filter(|p| p.name.starts_with("Script ")).count();
    assert_eq!(hidden, 29, "the other 29 slots are unused");
    assert_eq!((tone.min, tone.max), (0.0, 1.0));
    // Values set through the host, in the script's units.
    let set = |instance: &mut Instance, id: u32, text: &str| {
        let value = instance.text_to_value(id, text).unwrap_or_else(|| panic!("{text:?}"));
        instance.flush_params(&[ParamChange { offset: 0, id, value }]);
    };
    set(&mut first, gain.id, "1.5");
    set(&mut first, drive.id, "0.6");
    set(&mut first, tone.id, "bright");
    let saved = first.save_state().unwrap();
    // A second instance has the parameters from the state alone, before any
    // script runs, and saves the same bytes.
    let mut second = instance(&bundle);
    second.load_state(&saved).expect("the state loads");
    assert_eq!(second.save_state().unwrap(), saved, "load-then-save is byte for byte");
    let text = |instance: &mut Instance, id: u32| {
        let value = instance.param_value(id).unwrap();
        instance.value_to_text(id, value).unwrap()
    };
    assert_eq!(text(&mut second, gain.id), "1.500");
    assert_eq!(text(&mut second, tone.id), "bright");
    assert_eq!(second.params().iter().filter(|p| p.name == "drive").count(), 1);

    // The edit: a kept name keeps its value (in its units, the range
    // changed), a renamed one starts at its default, a removed one is gone.
    std::fs::write(&path, DECLARED_V2).unwrap();
    let processor = second.activate(ActivateConfig::new(48_000.0, 256)).unwrap();
    second.deactivate(processor);
    let after = second.params();
    let gain_after = find(&after, "gain").expect("gain kept");
    assert_eq!(gain_after.id, gain.id, "a kept name keeps its slot");
    assert_eq!(text(&mut second, gain.id), "1.500", "and its value");
    let grit = find(&after, "grit").expect("the renamed parameter");
    assert_eq!(text(&mut second, grit.id), "0.300", "a new name starts at its default");
    assert!(find(&after, "drive").is_none() && find(&after, "tone").is_none());
    let decoded = PluginState::decode(&second.save_state().unwrap()).unwrap();
    assert!(decoded.declared.contains("\"grit\"") && !decoded.declared.contains("\"tone\""));
    assert!(!decoded.params.iter().any(|&(id, _)| id == tone.id), "the removed parameter's value is not saved");
}

#[test]
fn a_preset_file_loaded_through_preset_load_becomes_the_followed_script() {
    let (files, bundle) = load("conf-preset");
    let filter = std::path::PathBuf::from(
        files._files.write("filter.py", &std::fs::read_to_string(outboard_tests::example_script("filter.py")).unwrap()),
    );
    let mut plugin = instance(&bundle);
    plugin.load_preset(&filter).expect("preset-load takes a script file");
    let processor = plugin.activate(ActivateConfig::new(48_000.0, 256)).unwrap();
    plugin.deactivate(processor);
    let names: Vec<String> = plugin.params().into_iter().map(|p| p.name).collect();
    assert!(["cutoff", "resonance", "mode"].iter().all(|n| names.iter().any(|m| m == n)), "{names:?}");
    let state = PluginState::decode(&plugin.save_state().unwrap()).unwrap();
    assert_eq!(std::path::Path::new(&state.script_path), filter.as_path(), "the instance follows the file");
    // Not a script: refused, nothing changes.
    let text = std::path::PathBuf::from(files._files.write("notes.txt", "not python"));
    let before = plugin.save_state().unwrap();
    assert!(plugin.load_preset(&text).is_err());
    assert!(plugin.load_preset(std::path::Path::new("/nonexistent/x.py")).is_err());
    assert_eq!(plugin.save_state().unwrap(), before);
}
