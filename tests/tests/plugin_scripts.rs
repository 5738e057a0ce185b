//! Scripts in outboard.clap as a user meets them through a host
//! (`outboard-host`): files that are followed and import their neighbours,
//! errors that reach the host's log, no hidden calls, offline renders that
//! do not stall.

use std::time::{Duration, Instant};

use outboard_tests::plugin::{PluginBundle, read_wav, run_host as host};

/// A 1 kHz ring modulator whose phase lives in the script's state: any
/// call the user did not ask for (a warm-up on a silent block) would
/// shift it for good.
const RING_MOD: &str = r#"
import numpy as np

def setup(ctx):
    ctx.state["n"] = 0

def process(block, ctx):
    frames = block.shape[1]
    n = ctx.state["n"] + np.arange(frames)
    block *= np.sin(2.0 * np.pi * 1000.0 * n / ctx.rate).astype(np.float32)
    ctx.state["n"] += frames
"#;

#[test]
fn a_phase_accumulating_script_matches_its_offline_reference_from_the_first_sample_at_any_block_size() {
    let bundle = PluginBundle::new("plugin-ringmod", true);
    let script = bundle.write("ringmod.py", RING_MOD);
    for block in ["37", "64", "100", "512"] {
        let wavs = bundle.wavs();
        let (input, output) = (&wavs.input, &wavs.output);
        let args = ["--block", block, "--seconds", "0.5", "--offline", "--script", &script];
        let args = wavs.after(&args);
        let (report, _) = host(&bundle, &args, &[]);
        assert_eq!(report["late_results"], 0, "block {block}: {report}");
        let latency = report["latency_samples"].as_u64().unwrap() as usize;
        let (x, y) = (read_wav(input), read_wav(output));
        for c in 0..2 {
            for t in latency..y[c].len() {
                let n = (t - latency) as f64;
                let expected =
                    f64::from(x[c][t - latency]) * (2.0 * std::f64::consts::PI * 1000.0 * n / 48_000.0).sin();
                let got = f64::from(y[c][t]);
                assert!((got - expected).abs() <= 1e-5, "block {block}, channel {c}, frame {t}: {got} vs {expected}");
            }
        }
    }
}

#[test]
fn a_script_imports_the_module_beside_its_file() {
    let bundle = PluginBundle::new("plugin-sibling", true);
    bundle.write("gains.py", "FACTOR = 0.25\n");
    let script =
        bundle.write("uses_sibling.py", "import gains\n\ndef process(block, ctx):\n    block *= gains.FACTOR\n");
    let wavs = bundle.wavs();
    let (input, output) = (&wavs.input, &wavs.output);
    let args = ["--seconds", "0.3", "--offline", "--script", &script];
    let args = wavs.after(&args);
    let (report, stderr) = host(&bundle, &args, &[]);
    assert_eq!(report["error_logs"], 0, "{stderr}");
    outboard_tests::plugin::assert_delayed(input, output, report["latency_samples"].as_u64().unwrap() as usize, 0.25);
}

#[test]
fn a_followed_file_edited_while_playing_is_heard() {
    let bundle = PluginBundle::new("plugin-follow", true);
    // The first version marks its setup: the edit comes a second after the
    // script is loaded, not after a fixed time (Python may take seconds to
    // start on a busy machine), and the host waits for that load before it
    // plays (OUTBOARD_WET_START_MS), so the first version is heard first.
    let marker = bundle.file("loaded");
    let script = bundle.write(
        "gain.py",
        &format!(
            "def setup(ctx):\n    open({:?}, 'w').close()\n\ndef process(block, ctx):\n    block *= 0.5\n",
            marker.display().to_string()
        ),
    );
    let wavs = bundle.wavs();
    let (input, output) = (&wavs.input, &wavs.output);
    let edit = {
        let script = script.clone();
        std::thread::spawn(move || {
            outboard_tests::eventually(Duration::from_secs(60), || marker.exists());
            std::thread::sleep(Duration::from_millis(1000));
            std::fs::write(&script, "def process(block, ctx):\n    block *= 0.125\n").unwrap();
        })
    };
    // Paced in real time, long enough for the edit to be picked up (within a second).
    let args = ["--seconds", "4", "--script", &script];
    let args = wavs.after(&args);
    let (report, stderr) = host(&bundle, &args, &[("OUTBOARD_WET_START_MS", "60000")]);
    edit.join().unwrap();
    let latency = report["latency_samples"].as_u64().unwrap() as usize;
    let (x, y) = (read_wav(input), read_wav(output));
    // The gain heard in each block: 0.5 before the edit, 0.125 after (dry
    // blocks, if the machine stalls, read as 1 and are neither).
    let gains: Vec<f32> = (latency..y[0].len() - 64)
        .step_by(64)
        .filter_map(|t| {
            let (num, den) = (t..t + 64).fold((0.0, 0.0), |(n, d), i| {
                (n + y[0][i] * x[0][i - latency], d + x[0][i - latency] * x[0][i - latency])
            });
            (den > 0.0).then(|| num / den)
        })
        .collect();
    let near = |g: f32, target: f32| (g - target).abs() < 1e-4;
    let first_new = gains.iter().position(|&g| near(g, 0.125)).unwrap_or_else(|| panic!("edit never heard: {stderr}"));
    // The old version until the edit is heard, the new one after: never
    // the old one again (dry blocks, late on a busy machine, are neither).
    assert!(gains[..first_new].iter().any(|&g| near(g, 0.5)), "old gain first");
    assert!(!gains[first_new..].iter().any(|&g| near(g, 0.5)), "new gain after");
    assert!(stderr.contains("reloaded"), "the reload is on the log:\n{stderr}");
}

#[test]
fn a_raising_script_puts_its_file_and_line_on_the_hosts_log() {
    let bundle = PluginBundle::new("plugin-raises", true);
    let script = bundle.write("raises.py", "def process(block, ctx):\n    x = 1\n    raise ValueError('no good')\n");
    let (report, stderr) = host(&bundle, &["--seconds", "0.3", "--offline", "--tracks", "2", "--script", &script], &[]);
    let at = format!("{script}:3");
    assert!(
        stderr.contains(&at) && stderr.contains("ValueError: no good"),
        "file and line on the host's log:\n{stderr}"
    );
    for instance in 0..2 {
        assert!(stderr.contains(&format!("plugin #{instance} [")), "instance {instance} is named:\n{stderr}");
    }
    assert!(report["error_logs"].as_u64().unwrap() >= 2, "{report}");
    // Repeats are counted, not repeated: a handful of lines, not one per block.
    assert!(report["logs"].as_u64().unwrap() <= 12, "{report}\n{stderr}");
}

#[test]
fn offline_renders_with_resets_do_not_wait_for_results_that_cannot_come() {
    let bundle = PluginBundle::new("plugin-offline-reset", true);
    let script = bundle.write("half.py", "def process(block, ctx):\n    block *= 0.5\n");
    let run = |quirks: &[&str]| {
        let began = Instant::now();
        let args: Vec<&str> =
            ["--seconds", "2", "--offline", "--script", &script].into_iter().chain(quirks.iter().copied()).collect();
        let (report, stderr) = host(&bundle, &args, &[]);
        (began.elapsed(), report, stderr)
    };
    let (control, _, _) = run(&[]);
    let (with_resets, report, stderr) = run(&["--host-quirks", "reset-while-offline"]);
    assert_eq!(report["panics"], 0, "{stderr}");
    // A stall is a full offline wait (seconds) per reset; this run has dozens.
    assert!(
        with_resets < control * 3 + Duration::from_secs(2),
        "resets made the render wait: {with_resets:?} against {control:?} without them\n{stderr}"
    );
}

#[test]
fn a_bad_parameter_declaration_is_a_script_error_with_file_and_line_and_the_script_still_runs() {
    let bundle = PluginBundle::new("plugin-bad-params", true);
    let script = bundle.write(
        "bad_params.py",
        "import numpy as np\n\nPARAMS = {\n    \"gain\": dict(min=1.0, max=0.0),\n}\n\n\
         def process(block, ctx):\n    block *= 0.5\n",
    );
    let wavs = bundle.wavs();
    let (input, output) = (&wavs.input, &wavs.output);
    let args = ["--seconds", "0.3", "--offline", "--script", &script];
    let args = wavs.after(&args);
    let (report, stderr) = host(&bundle, &args, &[]);
    let at = format!("{script}:3");
    assert!(
        stderr.contains(&at) && stderr.contains("PARAMS") && stderr.contains("min (1.0) must be below max (0.0)"),
        "the error names the file and the line of PARAMS:\n{stderr}"
    );
    assert!(report["error_logs"].as_u64().unwrap() >= 1);
    // Without declared parameters, but running.
    outboard_tests::plugin::assert_delayed(input, output, report["latency_samples"].as_u64().unwrap() as usize, 0.5);
}
