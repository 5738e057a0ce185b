//! The scripting surface of outboard.clap as a host drives it through
//! `outboard-host`: declared parameters (names, ranges, texts, hidden
//! slots), automation on its exact sample, notes and MIDI in (both
//! dialects) and out, the transport, Outboard Instrument's pitch, and a
//! script's own parameter moves.
//!
//! Every run is offline (the plugin waits for each script result), so
//! positions are exact: an event at input sample s is heard, or leaves the
//! plugin, at output sample s + latency (the latency the report gives).

use outboard_tests::example_script;
use outboard_tests::plugin::{PluginBundle, read_wav, run_host};
use serde_json::Value;

const RATE: f64 = 48_000.0;

fn host(bundle: &PluginBundle, args: &[&str]) -> (Value, String) {
    let (report, stderr) = run_host(bundle, args, &[]);
    assert_eq!(report["panics"], 0, "{stderr}");
    assert_eq!(report["process_errors"], 0, "{stderr}");
    assert_eq!(report["late_results"], 0, "offline, every result is waited for: {stderr}");
    (report, stderr)
}

fn latency(report: &Value) -> u64 {
    report["latency_samples"].as_u64().expect("latency_samples")
}

/// Instance 0's output events.
fn output_events(report: &Value) -> &Vec<Value> {
    report["output_events"][0].as_array().expect("output_events[0]")
}

fn of_kind<'a>(report: &'a Value, kind: &str) -> Vec<&'a Value> {
    output_events(report).iter().filter(|e| e["kind"] == kind).collect()
}

/// The parameter named `name` in the report's `params`.
fn param<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["params"]
        .as_array()
        .expect("params")
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no parameter {name:?} in {}", report["params"]))
}

fn text<'a>(p: &'a Value, key: &str) -> &'a str {
    p[key].as_str().unwrap_or_else(|| panic!("{key} of {p}"))
}

/// A number printed at the start of a text ("20.00 Hz" -> 20.0).
fn leading_number(text: &str) -> f64 {
    text.split_whitespace().next().and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("{text:?}"))
}

// ---- (a) declared parameters ------------------------------------------------

#[test]
fn declared_parameters_appear_with_their_names_ranges_and_texts_and_unused_slots_are_hidden() {
    let bundle = PluginBundle::new("surface-params", true);
    let filter = example_script("filter.py");
    let (report, stderr) = host(
        &bundle,
        &[
            "--seconds",
            "0.2",
            "--offline",
            "--script",
            &filter,
            "--param",
            "mode=highpass@0",
            "--param",
            "cutoff=500 Hz@0",
        ],
    );
    let params = report["params"].as_array().unwrap();
    let slots: Vec<&Value> = params.iter().filter(|p| p["module"] == "Script").collect();
    // Declaration order, on the first slots (ids 3, 4, 5).
    let visible: Vec<(&str, u64)> =
        slots.iter().filter(|p| p["hidden"] == false).map(|p| (text(p, "name"), p["id"].as_u64().unwrap())).collect();
    assert_eq!(visible, [("cutoff", 3), ("resonance", 4), ("mode", 5)], "{stderr}");

    // cutoff: continuous (0..1 to the host, on a log scale), 20 Hz to 20 kHz.
    let cutoff = param(&report, "cutoff");
    assert_eq!((cutoff["min"].as_f64(), cutoff["max"].as_f64()), (Some(0.0), Some(1.0)));
    assert_eq!(
        (&cutoff["stepped"], &cutoff["enum"], &cutoff["automatable"]),
        (&false.into(), &false.into(), &true.into())
    );
    let (min, max) = (text(cutoff, "text_min"), text(cutoff, "text_max"));
    assert!(min.ends_with(" Hz") && (leading_number(min) - 20.0).abs() < 1e-6, "{min:?}");
    assert!(max.ends_with(" kHz") && (leading_number(max) - 20.0).abs() < 1e-6, "{max:?}");
    // The default, 1 kHz, half-way between on the log scale... (log(50)/log(1000)).
    let default = cutoff["default"].as_f64().unwrap();
    assert!((default - 50f64.ln() / 1000f64.ln()).abs() < 1e-9, "{default}");
    // ... and the value --param set, through the plugin's text_to_value.
    assert!(text(cutoff, "text_value").starts_with("500"), "{cutoff}");
    assert!((cutoff["value"].as_f64().unwrap() - 25f64.ln() / 1000f64.ln()).abs() < 1e-9, "{cutoff}");
    let sent = report["params_sent"].as_array().unwrap();
    assert_eq!(sent.len(), 2);
    assert_eq!((&sent[1]["name"], &sent[1]["id"], &sent[1]["sample"]), (&"cutoff".into(), &3.into(), &0.into()));

    // resonance: 0.1 to 10, linear.
    let q = param(&report, "resonance");
    assert!((leading_number(text(q, "text_min")) - 0.1).abs() < 1e-9, "{q}");
    assert!((leading_number(text(q, "text_max")) - 10.0).abs() < 1e-9, "{q}");
    assert!((leading_number(text(q, "text_default")) - 0.707).abs() < 1e-9, "{q}");

    // mode: a choice, as an enum of steps 0..2 with the choices' names.
    let mode = param(&report, "mode");
    assert_eq!((&mode["stepped"], &mode["enum"]), (&true.into(), &true.into()), "{mode}");
    assert_eq!(
        (mode["min"].as_f64(), mode["max"].as_f64(), mode["default"].as_f64()),
        (Some(0.0), Some(2.0), Some(0.0))
    );
    assert_eq!(
        (text(mode, "text_min"), text(mode, "text_default"), text(mode, "text_max")),
        ("lowpass", "lowpass", "bandpass")
    );
    assert_eq!((mode["value"].as_f64(), text(mode, "text_value")), (Some(1.0), "highpass"), "{mode}");

    // Every other slot is hidden, named for its slot.
    let hidden: Vec<&&Value> = slots.iter().filter(|p| p["hidden"] == true).collect();
    assert!(slots.len() >= 4, "{}", report["params"]);
    assert_eq!(hidden.len(), slots.len() - 3);
    for p in hidden {
        let k = p["id"].as_u64().unwrap() - 3;
        assert_eq!(p["name"], format!("Script {}", k + 1), "{p}");
    }
    // The plugin's own parameters are still there.
    for name in ["Mix", "Bypass"] {
        assert_eq!(param(&report, name)["hidden"], false);
    }
}

// ---- (b) automation on its sample ---------------------------------------------

const GAIN: &str = r#"
PARAMS = {"gain": dict(min=0.0, max=1.0, default=1.0)}

def process(block, ctx):
    for start, end, params in ctx.segments():
        block[:, start:end] *= params["gain"]
"#;

#[test]
fn an_automation_point_changes_the_output_exactly_at_its_sample_plus_the_latency() {
    let bundle = PluginBundle::new("surface-automation", true);
    let script = bundle.write("gain.py", GAIN);
    let (input, output) = (bundle.file("in.wav"), bundle.file("out.wav"));
    let files = ["--write-input", input.to_str().unwrap(), "--output-wav", output.to_str().unwrap()];
    // (block, --param settings, the gain from each sample on)
    type Case<'a> = (&'a str, &'a [&'a str], &'a [(usize, f32)]);
    let cases: [Case; 2] = [
        ("64", &["gain=0@1000"], &[(0, 1.0), (1000, 0.0)]),
        // By name in any case, then by id with a plain value; mid-call with 100-frame calls.
        ("100", &["GAIN=0.5@777", "3=0@1234"], &[(0, 1.0), (777, 0.5), (1234, 0.0)]),
    ];
    for (block, settings, gains) in cases {
        let mut args = vec!["--block", block, "--seconds", "0.3", "--offline", "--script", &script];
        for s in settings {
            args.extend(["--param", s]);
        }
        args.extend(files);
        let (report, stderr) = host(&bundle, &args);
        let l = latency(&report) as usize;
        let (x, y) = (read_wav(&input), read_wav(&output));
        for c in 0..2 {
            assert!(y[c][..l].iter().all(|s| *s == 0.0), "silence for the latency");
            for (at, (&out, &dry)) in y[c][l..].iter().zip(&x[c]).enumerate() {
                let gain = gains.iter().rev().find(|(from, _)| at >= *from).unwrap().1;
                assert_eq!(
                    out,
                    gain * dry,
                    "block {block}, channel {c}, output frame {} (input {at}): {stderr}",
                    at + l
                );
            }
        }
    }
}

// ---- (c) notes in -------------------------------------------------------------

/// Writes each event into the block at its own frame: a note on adds
/// key/128 on the left and its velocity on the right, a note off subtracts
/// key/128 on the left, any other MIDI subtracts 0.25 on the right. An
/// event whose time is not ctx.time + offset, or whose offset is outside
/// the block, raises (an error on the log, the block dry).
const SPIKES: &str = r#"
def process(block, ctx):
    block[:] = 0.0
    for e in ctx.events:
        if e.time != ctx.time + e.offset or not 0 <= e.offset < ctx.frames:
            raise ValueError(f"bad event time {e!r} at {ctx.time}")
        if e.kind == "note_on":
            block[0, e.offset] += e.key / 128.0
            block[1, e.offset] += e.velocity
        elif e.kind == "note_off":
            block[0, e.offset] -= e.key / 128.0
        elif e.kind == "midi":
            block[1, e.offset] -= 0.25
"#;

const NOTES_IN: &str = "# notes for the spike script\n\
                        100 on 60 0.5\n\
                        1000 on 64 1\n\
                        1000 midi b0 07 64   # a CC on the same frame\n\
                        2345 off 60\n\
                        3000 off 64 0.25\n\
                        4000 midi e0 00 40   # pitch bend\n";

#[test]
fn notes_and_midi_in_reach_the_script_on_their_frames_in_both_dialects() {
    let bundle = PluginBundle::new("surface-notes-in", true);
    let script = bundle.write("spikes.py", SPIKES);
    let notes = bundle.write("notes.txt", NOTES_IN);
    let output = bundle.file("out.wav");
    for (dialect, block) in [("clap", "64"), ("midi", "64"), ("clap", "100"), ("midi", "37")] {
        let args = [
            "--block",
            block,
            "--seconds",
            "0.2",
            "--offline",
            "--script",
            &script,
            "--notes",
            &notes,
            "--note-dialect",
            dialect,
            "--output-wav",
            output.to_str().unwrap(),
        ];
        let (report, stderr) = host(&bundle, &args);
        assert_eq!(report["error_logs"], 0, "{stderr}");
        assert_eq!(report["note_dialect"], dialect);
        assert_eq!(report["per_instance"][0]["notes_sent"], 6);
        let l = latency(&report) as usize;
        let y = read_wav(&output);
        // MIDI carries 7-bit velocities: 0.5 -> 64/127.
        let velocity = |v: f32| if dialect == "midi" { (v * 127.0).round() / 127.0 } else { v };
        let mut left = vec![0.0f32; y[0].len()];
        let mut right = vec![0.0f32; y[1].len()];
        left[100 + l] = 60.0 / 128.0;
        right[100 + l] = velocity(0.5);
        left[1000 + l] = 64.0 / 128.0;
        right[1000 + l] = velocity(1.0) - 0.25;
        left[2345 + l] = -60.0 / 128.0;
        left[3000 + l] = -64.0 / 128.0;
        right[4000 + l] = -0.25;
        for (c, expected) in [left, right].iter().enumerate() {
            for (t, (&got, &want)) in y[c].iter().zip(expected).enumerate() {
                assert!(
                    (got - want).abs() < 1e-6,
                    "{dialect}, block {block}, channel {c}, frame {t}: {got} vs {want}\n{stderr}"
                );
            }
        }
    }
}

// ---- (d) notes out --------------------------------------------------------------

const NOTES_TRANSPOSED: &str = "1000 on 60 0.5\n\
                                1500 on 64 0.75 2\n\
                                2000 midi b0 07 64\n\
                                3000 off 60\n\
                                3100 off 64 0 2\n\
                                4000 on 67 1\n\
                                4600 off 67\n";

#[test]
fn notes_out_leave_at_their_input_sample_plus_the_latency() {
    let bundle = PluginBundle::new("surface-notes-out", true);
    let transposer = example_script("transposer.py");
    let notes = bundle.write("notes.txt", NOTES_TRANSPOSED);
    for dialect in ["clap", "midi"] {
        // An octave up (the default), then an octave down from sample 3500.
        let args = [
            "--seconds",
            "0.2",
            "--offline",
            "--script",
            &transposer,
            "--notes",
            &notes,
            "--note-dialect",
            dialect,
            "--param",
            "semitones=-12@3500",
        ];
        let (report, stderr) = host(&bundle, &args);
        assert_eq!(report["error_logs"], 0, "{stderr}");
        let l = latency(&report);
        let velocity = |v: f64| if dialect == "midi" { (v * 127.0).round() / 127.0 } else { v };
        let events = output_events(&report);
        let got: Vec<(u64, &str, Option<u64>, Option<u64>)> = events
            .iter()
            .map(|e| {
                (e["sample"].as_u64().unwrap(), e["kind"].as_str().unwrap(), e["key"].as_u64(), e["channel"].as_u64())
            })
            .collect();
        assert_eq!(
            got,
            [
                (1000 + l, "note_on", Some(72), Some(0)),
                (1500 + l, "note_on", Some(76), Some(2)),
                (2000 + l, "midi", None, None),
                (3000 + l, "note_off", Some(72), Some(0)),
                (3100 + l, "note_off", Some(76), Some(2)),
                (4000 + l, "note_on", Some(55), Some(0)),
                (4600 + l, "note_off", Some(55), Some(0)),
            ],
            "{dialect}: {events:?}\n{stderr}"
        );
        for (i, v) in [(0, 0.5), (1, 0.75), (5, 1.0)] {
            let got = events[i]["velocity"].as_f64().unwrap();
            assert!((got - velocity(v)).abs() < 1e-6, "{dialect}: velocity {got} for {v}");
        }
        assert_eq!(events[2]["data"], serde_json::json!([0xb0, 0x07, 0x64]));
        // Each note off ends the note its note on started.
        for (on, off) in [(0, 3), (1, 4), (5, 6)] {
            assert!(events[on]["note_id"].is_u64(), "{}", events[on]);
            assert_eq!(events[on]["note_id"], events[off]["note_id"], "{dialect}: {} / {}", events[on], events[off]);
        }
        assert_eq!(report["per_instance"][0]["output_events_dropped"], 0);
        assert_eq!(report["per_instance"][0]["output_events_refused"], 0);
    }
}

// ---- (e) the instrument's pitch ---------------------------------------------------

/// `x` under a Hann window.
fn hann(x: &[f32]) -> Vec<f64> {
    let n = x.len() as f64;
    x.iter()
        .enumerate()
        .map(|(i, &v)| f64::from(v) * (0.5 - 0.5 * (std::f64::consts::TAU * i as f64 / n).cos()))
        .collect()
}

/// Power of `x` at `freq` Hz (Goertzel).
fn power(x: &[f64], freq: f64) -> f64 {
    let coefficient = 2.0 * (std::f64::consts::TAU * freq / RATE).cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &v in x {
        let s = v + coefficient * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    s1 * s1 + s2 * s2 - coefficient * s1 * s2
}

/// The strongest frequency in `x` (a 1 s window: 1 Hz bins), searched
/// coarsely on its first 0.1 s (5 Hz steps), then in 0.1 Hz steps around
/// the coarse peak.
fn peak_frequency(x: &[f32]) -> f64 {
    let argmax = |window: &[f64], freqs: &mut dyn Iterator<Item = f64>| {
        freqs.map(|f| (f, power(window, f))).fold((0.0, -1.0), |best, (f, p)| if p > best.1 { (f, p) } else { best }).0
    };
    let coarse = argmax(&hann(&x[..4800]), &mut (10..=800).map(|i| f64::from(i) * 5.0));
    argmax(&hann(x), &mut (-200..=200).map(|i| coarse + f64::from(i) * 0.1))
}

#[test]
fn the_instrument_plays_the_pitch_of_the_note() {
    let bundle = PluginBundle::new("surface-instrument", true);
    let synth = example_script("polysynth.py");
    let output = bundle.file("out.wav");
    for (key, hz) in [(69, 440.0), (81, 880.0), (57, 220.0)] {
        let notes = bundle.write("notes.txt", &format!("0 on {key} 0.8\n"));
        let args = [
            "--plugin-id",
            "dev.outboard.instrument",
            "--seconds",
            "1.4",
            "--offline",
            "--script",
            &synth,
            "--notes",
            &notes,
            "--output-wav",
            output.to_str().unwrap(),
        ];
        let (report, stderr) = host(&bundle, &args);
        assert_eq!(report["plugin_id"], "dev.outboard.instrument");
        assert_eq!(report["input_peak"], 0.0, "no audio input: nothing fed");
        assert_eq!(report["error_logs"], 0, "{stderr}");
        let l = latency(&report) as usize;
        let y = read_wav(&output);
        assert!(y[0][..l].iter().all(|s| *s == 0.0), "silence for the latency");
        // One second from 0.3 s in (the attack and the decay are over).
        let window = &y[0][l + 14_400..l + 14_400 + 48_000];
        let level = window.iter().fold(0.0f32, |p, s| p.max(s.abs()));
        assert!(level > 0.1, "key {key}: the note sounds ({level})\n{stderr}");
        let f = peak_frequency(window);
        assert!((f - hz).abs() <= 1.0, "key {key}: peak at {f} Hz, expected {hz} Hz");
    }
}

// ---- (f) the arpeggiator and the tempo ------------------------------------------------

#[test]
fn the_arpeggiator_steps_on_the_hosts_tempo_and_cycles_the_held_chord() {
    let bundle = PluginBundle::new("surface-arp", true);
    let arp = example_script("arpeggiator.py");
    // (100-frame calls straddle the plugin's internal blocks.)
    for (tempo, block) in [(90u32, "64"), (150, "64"), (150, "100")] {
        let tempo_arg = tempo.to_string();
        let args = [
            "--seconds",
            "2",
            "--offline",
            "--block",
            block,
            "--script",
            &arp,
            "--notes",
            "pattern:chord",
            "--tempo",
            &tempo_arg,
        ];
        let (report, stderr) = host(&bundle, &args);
        assert_eq!(report["transport"]["tempo"], f64::from(tempo));
        let l = latency(&report);
        // Its default rate is 1/8: two steps a beat.
        let step = RATE * 60.0 / f64::from(tempo) / 2.0;
        let ons = of_kind(&report, "note_on");
        let samples: Vec<u64> = ons.iter().map(|e| e["sample"].as_u64().unwrap()).collect();
        let expected_steps = ((96_000 - l) as f64 / step).ceil() as usize;
        assert_eq!(ons.len(), expected_steps, "{tempo} BPM: {samples:?}\n{stderr}");
        assert_eq!(samples[0], l, "the first step is on the first beat");
        for (i, pair) in samples.windows(2).enumerate() {
            let spacing = (pair[1] - pair[0]) as f64;
            assert!((spacing - step.round()).abs() <= 1.0, "{tempo} BPM: step {i}: {spacing} samples, expected {step}");
            let exact = l as f64 + (i + 1) as f64 * step;
            assert!((pair[1] as f64 - exact).abs() <= 1.0, "{tempo} BPM: no drift: {} vs {exact}", pair[1]);
        }
        let keys: Vec<u64> = ons.iter().map(|e| e["key"].as_u64().unwrap()).collect();
        for (i, key) in keys.iter().enumerate() {
            assert_eq!(*key, [60, 64, 67][i % 3], "{tempo} BPM: keys {keys:?}");
        }
        // Each note is released half a step later (its gate), same key and id.
        let offs = of_kind(&report, "note_off");
        for on in &ons {
            let at = on["sample"].as_u64().unwrap() as f64 + (step / 2.0).round();
            if at >= 96_000.0 {
                continue;
            }
            let off = offs.iter().find(|e| e["note_id"] == on["note_id"]).unwrap_or_else(|| panic!("no off for {on}"));
            assert_eq!(off["key"], on["key"]);
            assert!((off["sample"].as_u64().unwrap() as f64 - at).abs() <= 1.0, "{on} -> {off}");
        }
    }
    // A stopped transport: no steps.
    let args = ["--seconds", "1", "--offline", "--script", &arp, "--notes", "pattern:chord", "--stopped"];
    let (report, stderr) = host(&bundle, &args);
    assert_eq!(report["transport"]["playing"], false);
    assert!(
        report["per_instance"][0]["notes_sent"].as_u64().unwrap() > 0,
        "the chord was played to the plugin: {report}"
    );
    assert!(of_kind(&report, "note_on").is_empty(), "{:?}\n{stderr}", output_events(&report));
}

// ---- (g) the transport -------------------------------------------------------------------

/// Writes what ctx.transport says into the first frames of the left channel.
const TRANSPORT: &str = r#"
def process(block, ctx):
    t = ctx.transport
    block[:] = 0.0
    block[0, :10] = [t.tempo, t.time_signature[0], t.time_signature[1], float(t.playing), float(t.from_host),
                     t.beats, t.bar_number, t.bar_start, t.seconds, float(t.malformed)]
    block[1, 0] = t.samples_per_beat / 1e5  # within the +/-1000 a block may hold
"#;

/// What the script saw at each of its 64-frame blocks: (tempo, numerator,
/// denominator, playing, from host, beats, bar number, bar start, seconds,
/// malformed, samples per beat).
fn transports(bundle: &PluginBundle, script: &str, seconds: &str, extra: &[&str]) -> (Vec<[f64; 11]>, Value) {
    let output = bundle.file("out.wav");
    let mut args =
        vec!["--seconds", seconds, "--offline", "--script", script, "--output-wav", output.to_str().unwrap()];
    args.extend(extra);
    let (report, stderr) = host(bundle, &args);
    assert_eq!(report["error_logs"], 0, "{stderr}");
    let l = latency(&report) as usize;
    let y = read_wav(&output);
    let seen = (0..)
        .map(|k| l + 64 * k)
        .take_while(|t| t + 64 <= y[0].len())
        .map(|t| {
            let mut v = [0.0; 11];
            for (i, x) in y[0][t..t + 10].iter().enumerate() {
                v[i] = f64::from(*x);
            }
            v[10] = f64::from(y[1][t]) * 1e5;
            v
        })
        .collect();
    (seen, report)
}

#[test]
fn the_hosts_transport_reaches_the_script() {
    let bundle = PluginBundle::new("surface-transport", true);
    let script = bundle.write("transport.py", TRANSPORT);
    let close = |a: f64, b: f64, what: &str, k: usize| {
        assert!((a - b).abs() <= 1e-4 * b.abs().max(1.0), "block {k}: {what} {a} vs {b}")
    };

    // Playing at 133 BPM in 7/8: a bar is 3.5 quarter notes (1.58 s).
    let (seen, report) = transports(&bundle, &script, "2", &["--tempo", "133", "--time-signature", "7/8"]);
    assert_eq!(report["transport"]["time_signature"], serde_json::json!([7, 8]));
    assert!(seen.len() > 1400);
    let mut bars = 0;
    for (k, v) in seen.iter().enumerate() {
        let seconds = (64 * k) as f64 / RATE;
        let beats = seconds * 133.0 / 60.0;
        assert_eq!(v[..5], [133.0, 7.0, 8.0, 1.0, 1.0], "block {k}");
        close(v[5], beats, "beats", k);
        close(v[8], seconds, "seconds", k);
        let bar = (beats / 3.5).floor();
        if ((beats / 3.5) - bar).abs() > 1e-6 {
            assert_eq!(v[6], bar, "block {k}: bar number at {beats} beats");
            close(v[7], bar * 3.5, "bar start", k);
        }
        bars = bars.max(v[6] as u64);
        assert_eq!(v[9], 0.0, "block {k}: not malformed");
        close(v[10], RATE * 60.0 / 133.0, "samples per beat", k);
    }
    assert!(bars >= 1, "the bar number advanced");

    // Stopped: the same tempo and signature, positions stay at zero.
    let (seen, report) =
        transports(&bundle, &script, "0.5", &["--tempo", "133", "--time-signature", "7/8", "--stopped"]);
    assert_eq!(report["transport"]["playing"], false);
    for (k, v) in seen.iter().enumerate() {
        assert_eq!(v[..10], [133.0, 7.0, 8.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0], "block {k}");
    }

    // No transport from the host: the defaults (120 BPM, 4/4, playing),
    // positions counted from the track's start.
    let (seen, report) = transports(&bundle, &script, "0.5", &["--tempo", "133", "--host-quirks", "no-transport"]);
    assert!(report["transport"].is_null());
    for (k, v) in seen.iter().enumerate() {
        let seconds = (64 * k) as f64 / RATE;
        assert_eq!(v[..5], [120.0, 4.0, 4.0, 1.0, 0.0], "block {k}");
        close(v[5], seconds * 2.0, "beats", k);
        close(v[8], seconds, "seconds", k);
        assert_eq!(v[9], 0.0);
    }
}

// ---- (h) a script moves its own parameter ----------------------------------------------------

const SETS_GAIN: &str = r#"
PARAMS = {"gain": dict(min=0.0, max=1.0, default=1.0)}

def process(block, ctx):
    if ctx.time <= 1000 < ctx.time + ctx.frames:
        ctx.set_param("gain", 0.5, at=1000)
    for start, end, params in ctx.segments():
        block[:, start:end] *= params["gain"]
"#;

#[test]
fn a_scripts_set_param_reaches_the_host_as_a_gesture_at_its_sample_plus_the_latency() {
    let bundle = PluginBundle::new("surface-set-param", true);
    let script = bundle.write("sets_gain.py", SETS_GAIN);
    let wavs = bundle.wavs();
    let (input, output) = (&wavs.input, &wavs.output);
    let args = wavs.after(&["--seconds", "0.3", "--offline", "--script", &script]);
    let (report, stderr) = host(&bundle, &args);
    assert_eq!(report["error_logs"], 0, "{stderr}");
    let l = latency(&report);
    let gain = param(&report, "gain");
    let id = gain["id"].as_u64().unwrap();
    let got: Vec<(u64, &str, Option<u64>, Option<f64>)> = output_events(&report)
        .iter()
        .map(|e| {
            (e["sample"].as_u64().unwrap(), e["kind"].as_str().unwrap(), e["param_id"].as_u64(), e["value"].as_f64())
        })
        .collect();
    assert_eq!(
        got,
        [
            (1000 + l, "gesture_begin", Some(id), None),
            (1000 + l, "param_value", Some(id), Some(0.5)),
            (1000 + l, "gesture_end", Some(id), None),
        ],
        "{stderr}"
    );
    // The plugin took the value: the host reads it back, and the script
    // plays it (by the end of the run).
    assert_eq!((gain["value"].as_f64(), text(gain, "text_value")), (Some(0.5), "0.500"), "{gain}");
    let (x, y) = (read_wav(input), read_wav(output));
    let l = l as usize;
    for c in 0..2 {
        for t in l..1000 + l {
            assert_eq!(y[c][t], x[c][t - l], "channel {c}, frame {t}: full gain before the move");
        }
        for t in y[c].len() - 1000..y[c].len() {
            assert_eq!(y[c][t], 0.5 * x[c][t - l], "channel {c}, frame {t}: the moved gain at the end");
        }
    }
}
