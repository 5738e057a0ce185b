//! outboard.clap under host behaviour seen in the field (DESIGN.md §9: the
//! host is untrusted input): `outboard-host --host-quirks` replays each quirk
//! (examples/host/quirks.rs says which host does what), and the run must
//! complete without a panic, without flooding the log, and with exactly the
//! audio of the same run without the quirk. Also: `--input-wav` reads real
//! files.
//!
//! Every run is offline (the plugin waits for each script result), so two
//! runs of the same input give the same samples.

use std::path::Path;
use std::process::Command;

use outboard_tests::plugin::{PluginBundle, read_wav};
use outboard_tests::workspace_bin;
use serde_json::{Value, json};

const HALF: &str = "def process(block, ctx):\n    block *= 0.5\n";
const TRACKS: usize = 2;
const BLOCK: usize = 64;
/// 0.5 s at 48 kHz in 64-frame blocks.
const BLOCKS: u64 = 375;
/// Log messages one instance may send over a whole run (a quirk may be
/// reported, once; not once per call).
const MAX_LOGS: u64 = 5;
/// As examples/host/quirks.rs: a reset before every 7th call.
const RESET_EVERY: usize = 7;

struct Run {
    report: Value,
    /// Instance 0's output, planar stereo.
    output: Vec<Vec<f32>>,
    stderr: String,
}

/// Runs outboard-host on the bundle; Err(stdout and stderr) if it failed.
fn host(bundle: &PluginBundle, args: &[&str]) -> Result<(Value, String), String> {
    let json = bundle.file("report.json");
    let _ = std::fs::remove_file(&json);
    let output = Command::new(workspace_bin("outboard-host"))
        .arg(bundle.clap())
        .args(args)
        .arg("--json")
        .arg(&json)
        .env_remove("OUTBOARD_SCRIPTS_HOST")
        .env_remove("OUTBOARD_DEFAULT_SCRIPT")
        .output()
        .expect("run outboard-host");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    if !output.status.success() {
        return Err(format!("{}\n{stderr}", String::from_utf8_lossy(&output.stdout)));
    }
    let report = serde_json::from_slice(&std::fs::read(&json).expect("report")).expect("JSON report");
    Ok((report, stderr))
}

/// A 0.5 s offline run of the half-gain script with Mix automated, on
/// TRACKS instances, with these quirks (if any).
fn run(bundle: &PluginBundle, label: &str, quirks: Option<&str>) -> Run {
    let script = bundle.write("half.py", HALF);
    let out = bundle.file(&format!("out-{label}.wav"));
    let mut args = vec!["--tracks", "2", "--block", "64", "--rate", "48000", "--seconds", "0.5", "--offline"];
    args.extend(["--script", &script, "--automate", "mix", "--output-wav", out.to_str().unwrap()]);
    if let Some(quirks) = quirks {
        args.extend(["--host-quirks", quirks]);
    }
    let (report, stderr) = host(bundle, &args).unwrap_or_else(|e| panic!("the {label} run failed:\n{e}"));
    Run { report, output: read_wav(&out), stderr }
}

/// What every run must show, quirk or not.
fn assert_clean(run: &Run, label: &str) {
    let r = &run.report;
    let stderr = &run.stderr;
    assert_eq!(r["panics"], 0, "{label}: no panic anywhere in the process\n{stderr}");
    assert_eq!(r["blocks"], json!(vec![BLOCKS; TRACKS]), "{label}: the run completed: {r}");
    assert_eq!(r["process_errors"], 0, "{label}: {r}\n{stderr}");
    assert_eq!(r["nan_samples"], 0, "{label}: {r}");
    for (i, instance) in r["per_instance"].as_array().unwrap().iter().enumerate() {
        let logs = instance["logs"].as_u64().unwrap();
        assert!(logs <= MAX_LOGS, "{label}: instance {i} logged {logs} messages (a flood):\n{stderr}");
    }
    let lines = stderr.lines().count();
    assert!(lines as u64 <= MAX_LOGS * TRACKS as u64, "{label}: {lines} lines on stderr (a flood):\n{stderr}");
    // Offline the script is waited for from the first block: no block
    // played dry.
    assert_eq!(r["dry_blocks_at_start"], 0, "{label}: {r}");
}

/// Exact equality of two planar outputs, naming the first difference.
fn assert_same_audio(expected: &[Vec<f32>], actual: &[Vec<f32>], label: &str) {
    assert_eq!(expected.len(), actual.len(), "{label}: channels");
    for (c, (e, a)) in expected.iter().zip(actual).enumerate() {
        assert_eq!(e.len(), a.len(), "{label}: length of channel {c}");
        if let Some(t) = (0..e.len()).find(|&t| e[t].to_bits() != a[t].to_bits()) {
            let differing = (0..e.len()).filter(|&t| e[t].to_bits() != a[t].to_bits()).count();
            panic!(
                "{label}: channel {c} differs from frame {t} on ({differing} frames in all): {} instead of {}",
                a[t], e[t]
            );
        }
    }
}

/// The control run, then the run with `quirk`; both clean, the audio equal.
fn quirk_keeps_the_audio_exact(quirk: &str) -> (Run, Run) {
    let bundle = PluginBundle::new(&format!("quirk-{quirk}"), true);
    let control = run(&bundle, "control", None);
    let quirky = run(&bundle, quirk, Some(quirk));
    assert_clean(&control, "without quirks");
    assert_clean(&quirky, quirk);
    for (r, label) in [(&control.report, "without quirks"), (&quirky.report, quirk)] {
        assert_eq!(r["late_results"], 0, "{label}: offline, every result is waited for: {r}");
    }
    assert_eq!(quirky.report["host_quirks"], json!([quirk]));
    assert!(control.report["output_peak"].as_f64().unwrap() > 0.1, "the run made sound: {}", control.report);
    assert_same_audio(&control.output, &quirky.output, quirk);
    (control, quirky)
}

#[test]
fn a_zeroed_transport_as_qtractor_sends_changes_nothing() {
    quirk_keeps_the_audio_exact("zeroed-transport");
}

#[test]
fn no_transport_changes_nothing() {
    quirk_keeps_the_audio_exact("no-transport");
}

#[test]
fn unsorted_events_change_nothing() {
    quirk_keeps_the_audio_exact("unsorted-events");
}

#[test]
fn an_event_past_the_end_of_the_call_changes_nothing() {
    quirk_keeps_the_audio_exact("events-past-end");
}

#[test]
fn calls_of_zero_frames_change_nothing() {
    let (_, quirky) = quirk_keeps_the_audio_exact("zero-frames");
    assert_eq!(quirky.report["process_calls"], json!(vec![2 * BLOCKS; TRACKS]), "an empty call before each block");
}

#[test]
fn calls_larger_than_announced_change_nothing() {
    let (control, quirky) = quirk_keeps_the_audio_exact("huge-block");
    assert_eq!(control.report["process_calls"], json!(vec![BLOCKS; TRACKS]));
    let calls = quirky.report["process_calls"][0].as_u64().unwrap();
    assert!(calls < BLOCKS, "some calls covered several blocks: {calls} calls for {BLOCKS} blocks");
}

#[test]
fn resets_while_rendering_offline_drop_only_the_audio_in_flight() {
    let bundle = PluginBundle::new("quirk-reset", true);
    let control = run(&bundle, "control", None);
    let quirky = run(&bundle, "reset", Some("reset-while-offline"));
    assert_clean(&control, "without quirks");
    assert_clean(&quirky, "reset-while-offline");
    // (Not checked here: `late_results`. Whether the blocks a reset drops
    // count as late is the plugin's definition; the audio is checked below.)
    assert_eq!(control.report["late_results"], 0, "{}", control.report);
    let latency = quirky.report["latency_samples"].as_u64().unwrap() as usize;
    assert_eq!(latency, 2 * BLOCK, "one host block and one internal block");
    let resets = quirky.report["per_instance"][0]["resets"].as_u64().unwrap() as usize;
    assert_eq!(resets, BLOCKS as usize / RESET_EVERY);
    // A reset before call c (c + 1 a multiple of 7) at frame 64c: what was
    // in flight is gone, so the latency after it is silence; the rest is
    // the control run's audio, exactly.
    let reset_at: Vec<usize> = (0..BLOCKS as usize).filter(|c| (c + 1) % RESET_EVERY == 0).map(|c| c * BLOCK).collect();
    assert_eq!(reset_at.len(), resets);
    let mut expected = control.output.clone();
    for channel in &mut expected {
        for &r in &reset_at {
            let end = (r + latency).min(channel.len());
            channel[r..end].fill(0.0);
        }
    }
    assert_same_audio(&expected, &quirky.output, "reset-while-offline");
}

#[test]
fn unknown_quirks_are_refused_with_the_list_of_valid_ones() {
    let bundle = PluginBundle::new("quirk-unknown", false);
    let err = host(&bundle, &["--host-quirks", "zero-frames,sideways", "--seconds", "0.1"]).unwrap_err();
    assert!(err.contains("unknown host quirk \"sideways\""), "{err}");
    for name in [
        "zeroed-transport",
        "no-transport",
        "unsorted-events",
        "events-past-end",
        "zero-frames",
        "huge-block",
        "reset-while-offline",
    ] {
        assert!(err.contains(name), "lists {name}: {err}");
    }
}

// ---- --input-wav ----

/// Writes an integer WAV: `frames[t][c]` are the integer samples.
fn write_int_wav(path: &Path, rate: u32, bits: u16, frames: &[Vec<i32>]) {
    let spec = hound::WavSpec {
        channels: frames[0].len() as u16,
        sample_rate: rate,
        bits_per_sample: bits,
        sample_format: hound::SampleFormat::Int,
    };
    let mut writer = hound::WavWriter::create(path, spec).expect("create WAV");
    for frame in frames {
        for &s in frame {
            writer.write_sample(s).expect("write sample");
        }
    }
    writer.finalize().expect("finalize WAV");
}

/// A deterministic test tone, quantised to `bits`.
fn tone(frame: usize, freq: f64, amplitude: f64, bits: u16) -> i32 {
    let full = f64::from(1u32 << (bits - 1));
    let x = amplitude * (std::f64::consts::TAU * freq * frame as f64 / 48_000.0).sin();
    (x * full).round() as i32
}

/// Feeds `wav` (no script: the plugin passes it through) and checks that
/// the host fed `expected` (planar, then silence) and that the output is
/// that input delayed by the latency.
fn assert_fed_and_passed_through(label: &str, wav: &Path, expected: &[Vec<f32>; 2]) {
    let bundle = PluginBundle::new(label, true);
    let (fed, out) = (bundle.file("fed.wav"), bundle.file("out.wav"));
    let args = [
        "--seconds",
        "0.5",
        "--offline",
        "--input-wav",
        wav.to_str().unwrap(),
        "--write-input",
        fed.to_str().unwrap(),
        "--output-wav",
        out.to_str().unwrap(),
    ];
    let (report, stderr) = host(&bundle, &args).unwrap_or_else(|e| panic!("{label}: {e}"));
    assert_eq!(report["input"], wav.to_str().unwrap(), "{report}");
    assert_eq!(report["panics"], 0, "{stderr}");
    let (fed, out) = (read_wav(&fed), read_wav(&out));
    assert_eq!(fed.len(), 2);
    let frames = fed[0].len();
    assert_eq!(frames, 24_000, "the whole run");
    for (c, (fed, expected)) in fed.iter().zip(expected).enumerate() {
        for (t, sample) in fed.iter().enumerate() {
            let want = expected.get(t).copied().unwrap_or(0.0);
            assert_eq!(*sample, want, "{label}: channel {c}, frame {t} as fed");
        }
    }
    let peak = expected.iter().flatten().fold(0.0f32, |p, s| p.max(s.abs()));
    assert_eq!(report["input_peak"].as_f64().unwrap() as f32, peak, "{report}");
    let latency = report["latency_samples"].as_u64().unwrap() as usize;
    for c in 0..2 {
        assert!(out[c][..latency].iter().all(|s| *s == 0.0), "{label}: silence for the latency");
        for t in latency..frames {
            assert_eq!(out[c][t], fed[c][t - latency], "{label}: channel {c}, frame {t}: the input, delayed");
        }
    }
    // Passed through: every block after the latency is dry.
    let dry = report["dry_blocks_at_start"].as_u64().unwrap();
    assert!(dry > 0, "{label}: a pass-through is dry from the start: {report}");
}

#[test]
fn a_16_bit_mono_wav_is_fed_to_both_channels_and_followed_by_silence() {
    let dir = PluginBundle::new("wav16-source", false);
    let wav = dir.file("mono16.wav");
    // 0.3 s of a 0.5 s run; the extremes of the format included.
    let mut samples: Vec<i32> = (0..14_400).map(|t| tone(t, 440.0, 0.6, 16)).collect();
    samples[100] = i32::from(i16::MAX);
    samples[101] = i32::from(i16::MIN);
    write_int_wav(&wav, 48_000, 16, &samples.iter().map(|s| vec![*s]).collect::<Vec<_>>());
    let as_float: Vec<f32> = samples.iter().map(|&s| s as f32 / 32_768.0).collect();
    assert_fed_and_passed_through("wav16", &wav, &[as_float.clone(), as_float]);
}

#[test]
fn a_24_bit_stereo_wav_is_read_exactly() {
    let dir = PluginBundle::new("wav24-source", false);
    let wav = dir.file("stereo24.wav");
    let frames: Vec<Vec<i32>> =
        (0..24_000).map(|t| vec![tone(t, 300.0, 0.45, 24), tone(t, 1234.0, 0.3, 24) + (t as i32 % 7) - 3]).collect();
    write_int_wav(&wav, 48_000, 24, &frames);
    let channel = |c: usize| frames.iter().map(|f| f[c] as f32 / 8_388_608.0).collect::<Vec<f32>>();
    assert_fed_and_passed_through("wav24", &wav, &[channel(0), channel(1)]);
}

#[test]
fn a_wav_at_another_rate_is_refused_naming_both_rates() {
    let bundle = PluginBundle::new("wav-rate", true);
    let wav = bundle.file("cd.wav");
    write_int_wav(&wav, 44_100, 16, &vec![vec![0, 0]; 441]);
    let err =
        host(&bundle, &["--rate", "48000", "--seconds", "0.1", "--offline", "--input-wav", wav.to_str().unwrap()])
            .unwrap_err();
    assert!(err.contains("44100 Hz") && err.contains("48000 Hz"), "names both rates: {err}");
    assert!(err.contains("cd.wav"), "names the file: {err}");
}
