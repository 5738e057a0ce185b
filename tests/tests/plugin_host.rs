//! outboard.clap driven by `outboard-host`, as a DAW would drive it: the
//! bundle laid out as `cargo xtask bundle` makes it, instances on their own
//! threads, the script applied through the plugin's state.

use outboard_tests::plugin::{PluginBundle, assert_delayed, run_host as host};
use outboard_tests::scripts_host;

const HALF: &str = "def process(block, ctx):\n    block *= 0.5\n";

#[test]
fn the_output_is_the_script_applied_to_the_input_delayed_by_the_reported_latency() {
    let bundle = PluginBundle::new("plugin-exact", true);
    let script = bundle.write("half.py", HALF);
    let wavs = bundle.wavs();
    let (input, output) = (&wavs.input, &wavs.output);
    // 100 frames: not a multiple of the internal block, so calls straddle blocks.
    let args =
        ["--tracks", "2", "--block", "100", "--rate", "44100", "--seconds", "1.5", "--offline", "--script", &script];
    let (report, _) = host(&bundle, &wavs.after(&args), &[]);
    for key in ["plugin", "instances", "block", "rate", "blocks", "deadline_misses", "late_results"] {
        assert!(!report[key].is_null(), "{key} in {report}");
    }
    for key in ["input_peak", "output_peak", "nan_samples"] {
        assert!(report[key].is_number(), "{key} in {report}");
    }
    for p in ["p50", "p99", "p999", "max"] {
        assert!(report["process_us"][p].is_number(), "process_us.{p} in {report}");
    }
    assert_eq!(report["instances"], 2);
    assert_eq!(report["blocks"].as_array().unwrap().len(), 2);
    // Two 64-frame blocks cover a 100-frame call, plus one of margin.
    let latency = report["latency_samples"].as_u64().unwrap() as usize;
    assert_eq!(latency, 3 * 64);
    assert_eq!(report["late_results"], 0, "offline, every result is waited for: {report}");
    assert_eq!(report["nan_samples"], 0);
    let (peak_in, peak_out) = (report["input_peak"].as_f64().unwrap(), report["output_peak"].as_f64().unwrap());
    assert!((peak_out - 0.5 * peak_in).abs() < 1e-6, "{peak_in} -> {peak_out}");
    assert_delayed(input, output, latency, 0.5);
}

#[test]
fn many_instances_run_in_parallel_threads_and_share_one_set_of_workers() {
    let bundle = PluginBundle::new("plugin-many", true);
    let script = bundle.write("half.py", HALF);
    let (report, _) =
        host(&bundle, &["--tracks", "16", "--block", "64", "--seconds", "1", "--offline", "--script", &script], &[]);
    assert_eq!(report["instances"], 16);
    assert!(report["max_concurrent_process"].as_u64().unwrap() >= 2, "instances overlapped: {report}");
    let cores = std::thread::available_parallelism().unwrap().get() as u64;
    let workers = report["child_processes"].as_u64().unwrap();
    // At most 2 x cores serving, and the warm spare.
    assert!((1..=2 * cores + 1).contains(&workers), "{workers} worker processes for 16 instances on {cores} cores");
    assert_eq!(report["late_results"], 0);
    let (peak_in, peak_out) = (report["input_peak"].as_f64().unwrap(), report["output_peak"].as_f64().unwrap());
    assert!((peak_out - 0.5 * peak_in).abs() < 1e-6, "every instance ran the script: {peak_in} -> {peak_out}");
}

#[test]
fn paced_in_real_time_every_block_is_processed_and_reported() {
    let _turn = outboard_tests::realtime::one_at_a_time();
    let bundle = PluginBundle::new("plugin-paced", true);
    let script = bundle.write("half.py", HALF);
    let (report, _) = host(&bundle, &["--tracks", "4", "--block", "64", "--seconds", "2", "--script", &script], &[]);
    // 2 s of 64-frame blocks at 48 kHz.
    assert!(report["blocks"].as_array().unwrap().iter().all(|b| b == 1500), "{report}");
    assert_eq!(report["nan_samples"], 0);
    assert_eq!(report["process_errors"], 0);
    assert!(report["deadline_misses"].is_u64() && report["late_results"].is_u64());
    // Late results there may be (scripts start within the run), but once
    // running, the script is heard.
    let (peak_in, peak_out) = (report["input_peak"].as_f64().unwrap(), report["output_peak"].as_f64().unwrap());
    assert!(peak_out <= peak_in + 1e-6);
}

#[test]
fn without_its_scripts_host_the_plugin_passes_audio_dry_and_says_why_once() {
    let bundle = PluginBundle::new("plugin-nosidecar", false);
    let script = bundle.write("half.py", HALF);
    let wavs = bundle.wavs();
    let (input, output) = (&wavs.input, &wavs.output);
    let args = wavs.after(&["--tracks", "3", "--block", "64", "--seconds", "0.5", "--offline", "--script", &script]);
    let (report, stderr) = host(&bundle, &args, &[]);
    assert_eq!(stderr.matches("no scripts host").count(), 1, "said once for three instances:\n{stderr}");
    assert!(stderr.contains("outboard-scripts-host"), "names what is missing:\n{stderr}");
    assert_eq!(report["child_processes"], 0);
    assert_eq!(report["late_results"], 0, "dry by design is not late");
    let latency = report["latency_samples"].as_u64().unwrap() as usize;
    assert_delayed(input, output, latency, 1.0);

    // OUTBOARD_SCRIPTS_HOST points the same bundle at a scripts host elsewhere.
    let sidecar = scripts_host();
    let (report, stderr) = host(&bundle, &args, &[("OUTBOARD_SCRIPTS_HOST", sidecar.to_str().unwrap())]);
    assert!(!stderr.contains("no scripts host"), "{stderr}");
    assert!(report["child_processes"].as_u64().unwrap() >= 1);
    assert_delayed(input, output, latency, 0.5);
}

#[test]
fn new_instances_start_with_the_script_named_by_outboard_default_script() {
    let bundle = PluginBundle::new("plugin-default-script", true);
    let script = bundle.write("half.py", HALF);
    let wavs = bundle.wavs();
    let (input, output) = (&wavs.input, &wavs.output);
    let args = wavs.after(&["--seconds", "0.5", "--offline"]);
    let (report, _) = host(&bundle, &args, &[("OUTBOARD_DEFAULT_SCRIPT", &script)]);
    assert_delayed(input, output, report["latency_samples"].as_u64().unwrap() as usize, 0.5);
    // Unset: the pass-through.
    let (report, _) = host(&bundle, &args, &[]);
    assert_delayed(input, output, report["latency_samples"].as_u64().unwrap() as usize, 1.0);
}
