//! Outboard.vst3 in a VST3 host nobody here wrote: Spotify's pedalboard
//! (PyPI; `cargo xtask setup` installs it into the scripts' Python). The
//! bundle is laid out as `cargo xtask bundle` makes it, from this profile's
//! build, and loaded without `OUTBOARD_SCRIPTS_HOST`: the plugin finds its
//! scripts host inside the bundle. The checks themselves are Python
//! (tests/python/vst3_pedalboard.py, one per test here); the README's
//! pedalboard example is run as written.

use std::ffi::CString;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use outboard_plugin::params;
use outboard_plugin::state::PluginState;
use outboard_tests::plugin::{Vst3Bundle, python};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace").to_path_buf()
}

/// `python3 -c CODE` (or a file) with pedalboard's environment: the state
/// helper importable, no scripts host named.
fn python_command(bundle: &Vst3Bundle) -> Command {
    let mut command = Command::new(python());
    command
        .env("PYTHONPATH", root().join("examples/python"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env_remove("OUTBOARD_SCRIPTS_HOST")
        .env_remove("OUTBOARD_DEFAULT_SCRIPT")
        .current_dir(bundle.dir());
    command
}

/// How long one check may take: the Python side gives up after 240 s
/// (`CHECK_SECONDS`, printing every thread's stack); this is the backstop
/// for a process that cannot even do that.
const CHECK_TIMEOUT: Duration = Duration::from_secs(300);

/// Runs one check of tests/python/vst3_pedalboard.py; returns its stderr.
/// A check that hangs (the plugin and pedalboard deadlocked) fails.
fn check(bundle: &Vst3Bundle, name: &str) -> String {
    let script = root().join("tests/python/vst3_pedalboard.py");
    let mut child = python_command(bundle)
        .arg(&script)
        .arg(name)
        .arg(bundle.vst3())
        .arg(bundle.dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python3");
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            String::from_utf8_lossy(&bytes).into_owned()
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("stdout")));
    let stderr = drain(Box::new(child.stderr.take().expect("stderr")));
    let deadline = Instant::now() + CHECK_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for python3") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let (stdout, stderr) = (stdout.join().expect("stdout"), stderr.join().expect("stderr"));
    let Some(status) = status else {
        panic!("check {name} did not end within {CHECK_TIMEOUT:?} (killed):\n{stdout}\n{stderr}");
    };
    assert!(
        !stderr.contains("No module named 'pedalboard'"),
        "pedalboard is not installed for {}: run `cargo xtask setup` (or `{} -m pip install pedalboard`)",
        python(),
        python()
    );
    assert!(status.success(), "check {name} failed ({status}):\n{stdout}\n{stderr}");
    // Nothing but the check's own line: the wrapper was built quiet
    // (CLAP_WRAPPER_LOGLEVEL=0, .cargo/config.toml), and the plugin writes
    // to stderr only.
    assert!(stdout.lines().count() == 1 && stdout.starts_with(&format!("{name}: ok")), "stdout: {stdout}");
    assert!(!stderr.contains("no scripts host"), "the plugin found its scripts host in the bundle:\n{stderr}");
    stderr
}

#[test]
fn the_bundled_library_exports_the_vst3_entry_points_beside_clap_entry() {
    let bundle = Vst3Bundle::new("vst3-symbols");
    let library = bundle.binaries().join("Outboard.so");
    assert!(bundle.binaries().join("outboard-scripts-host").is_file());
    let path = CString::new(library.to_str().unwrap()).unwrap();
    // SAFETY: loading the plugin runs no code of its own but static
    // initialisers (the VST3 SDK registers its module hooks); the handle
    // is closed below and no symbol is called.
    unsafe {
        let handle = libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL);
        assert!(!handle.is_null(), "dlopen {}", library.display());
        for symbol in ["GetPluginFactory", "ModuleEntry", "ModuleExit", "clap_entry"] {
            let name = CString::new(symbol).unwrap();
            assert!(!libc::dlsym(handle, name.as_ptr()).is_null(), "{symbol} is exported by {}", library.display());
        }
        libc::dlclose(handle);
    }
}

#[test]
fn a_script_given_through_the_state_is_heard_exactly_at_the_reported_latency() {
    let bundle = Vst3Bundle::new("vst3-state-script");
    // The same states, written by the plugin's own Rust code: the Python
    // helper must produce these bytes. The first is played: SHAPER and
    // what its worker declares (nothing); the second has declared
    // parameters with values on their slots (ids 3 and 5).
    let state = PluginState {
        params: vec![(params::MIX, 1.0), (params::BYPASS, 0.0)],
        script_name: "shaper.py".into(),
        script: SHAPER.into(),
        script_path: String::new(),
        python_env: String::new(),
        declared: SHAPER_DECLARED.into(),
    };
    std::fs::write(bundle.dir().join("rust_state.bin"), state.encode()).unwrap();
    let declared = PluginState {
        params: vec![(params::MIX, 0.5), (params::BYPASS, 0.0), (params::slot_id(0), 0.25), (params::slot_id(2), 2.0)],
        script_name: "shaper.py".into(),
        script: SHAPER.into(),
        script_path: "/a/shaper.py".into(),
        python_env: "/a/venv".into(),
        declared: DECLARED_FOR_BYTES.into(),
    };
    let bytes = declared.encode();
    let names: Vec<String> = outboard_engine::wire::declared::Declaration::from_json(DECLARED_FOR_BYTES.as_bytes())
        .expect("a declaration the plugin reads")
        .params
        .iter()
        .map(|p| format!("{}@{}", p.name, params::slot_id(p.index - 1)))
        .collect();
    assert_eq!(names, ["cutoff@3", "mode@5"]);
    assert_eq!(PluginState::decode(&bytes).as_ref(), Ok(&declared));
    std::fs::write(bundle.dir().join("rust_state_declared.bin"), bytes).unwrap();
    check(&bundle, "script_through_state");
}

/// tests/python/vst3_pedalboard.py's SHAPER, byte for byte.
const SHAPER: &str =
    "import numpy as np\n\ndef process(block, ctx):\n    block[0] *= 0.5\n    block[1] = np.tanh(2.0 * block[1])\n";
/// Its SHAPER_DECLARED and DECLARED_FOR_BYTES, byte for byte.
const SHAPER_DECLARED: &str = r#"{"params":[],"instrument":false,"doc":"","slot":0}"#;
const DECLARED_FOR_BYTES: &str = concat!(
    r#"{"params":[{"index":1,"name":"cutoff","min":20.0,"max":20000.0,"default":1000.0,"unit":"Hz","#,
    r#""scale":"log","step":null,"choices":null},{"index":3,"name":"mode","min":0.0,"max":2.0,"default":1,"#,
    r#""unit":"","scale":"linear","step":null,"choices":["low","band","high"]}],"instrument":false,"#,
    r#""doc":"","slot":0}"#
);

#[test]
fn a_script_file_named_by_the_state_is_followed() {
    let bundle = Vst3Bundle::new("vst3-followed");
    check(&bundle, "followed_file");
}

#[test]
fn declared_parameters_are_reached_by_name_with_their_text_mix_and_bypass_exact() {
    let bundle = Vst3Bundle::new("vst3-params");
    check(&bundle, "parameters");
}

#[test]
fn raw_state_carries_the_plugins_state_unchanged_both_ways() {
    let bundle = Vst3Bundle::new("vst3-state");
    check(&bundle, "state_round_trip");
    // What pedalboard saved is the plugin's own format.
    let saved = std::fs::read(bundle.dir().join("saved_state.bin")).expect("the state pedalboard saved");
    let state = PluginState::decode(&saved).expect("an Outboard state");
    assert_eq!(state.script_name, "levels.py");
    assert!(state.script.contains(r#"ctx.params["level"]"#));
    let declared =
        outboard_engine::wire::declared::Declaration::from_json(state.declared.as_bytes()).expect("declared");
    let slots: Vec<(&str, usize)> = declared.params.iter().map(|p| (p.name.as_str(), p.index - 1)).collect();
    assert_eq!(slots, [("drive", 0), ("level", 1)], "the declaration names the slots");
    let value = |id| state.params.iter().find(|(i, _)| *i == id).map(|(_, v)| *v);
    assert_eq!(value(params::MIX), Some(0.75));
    assert_eq!(value(params::slot_id(1)), Some(0.5), "level (slot 1) as set by name from Python");
    assert_eq!(value(params::slot_id(0)), Some(1.0), "drive (slot 0) as the state gave it");
    assert_eq!(value(params::slot_id(2)), None, "an unused slot has no value");
    assert_eq!(state.encode(), saved, "the bytes are the plugin's, re-encoded identically");
}

#[test]
fn outboard_in_a_pedalboard_chain_between_pedalboards_own_effects() {
    let bundle = Vst3Bundle::new("vst3-chain");
    check(&bundle, "chain");
}

#[test]
fn pedalboard_renders_offline_and_a_slow_script_is_waited_for() {
    let bundle = Vst3Bundle::new("vst3-offline");
    check(&bundle, "offline_waits");
}

#[test]
fn script_errors_reach_stderr_where_the_vst3_wrapper_drops_the_log() {
    let bundle = Vst3Bundle::new("vst3-errors");
    let stderr = check(&bundle, "errors_are_said");
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("outboard.clap [error]") && l.contains("broken.py:1") && l.contains("SyntaxError")),
        "the error, with its file and line, on stderr:\n{stderr}"
    );
}

/// The README's pedalboard example, as written: its code block is the one
/// after the `tested by tests/tests/vst3_pedalboard.rs` marker. It runs
/// with HOME pointing at a folder holding `.vst3/Outboard.vst3`, and the
/// files it names (an input WAV, examples/scripts/tremolo.py) in its
/// working folder.
#[test]
fn the_readme_pedalboard_example_runs_as_written() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let marker = "<!-- tested by tests/tests/vst3_pedalboard.rs -->";
    let after = &readme[readme.find(marker).expect("the marker in README.md") + marker.len()..];
    let start = after.find("```python\n").expect("a python block after the marker") + "```python\n".len();
    let code = &after[start..start + after[start..].find("```").expect("the block's end")];
    assert!(code.lines().count() <= 14, "a short example:\n{code}");

    let bundle = Vst3Bundle::new("vst3-readme");
    let home = bundle.dir().join("home");
    std::fs::create_dir_all(home.join(".vst3")).unwrap();
    std::os::unix::fs::symlink(bundle.vst3(), home.join(".vst3/Outboard.vst3")).unwrap();
    std::fs::copy(root().join("examples/scripts/tremolo.py"), bundle.dir().join("tremolo.py")).unwrap();
    // Two seconds of a stereo 440/660 Hz tone, 16-bit, 44.1 kHz.
    let spec = hound::WavSpec {
        channels: 2,
        sample_rate: 44100,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut wav = hound::WavWriter::create(bundle.dir().join("in.wav"), spec).unwrap();
    for t in 0..88200 {
        let s = |hz: f64| ((2.0 * std::f64::consts::PI * hz * t as f64 / 44100.0).sin() * 12000.0) as i16;
        wav.write_sample(s(440.0)).unwrap();
        wav.write_sample(s(660.0)).unwrap();
    }
    wav.finalize().unwrap();

    // Another HOME must not hide packages installed per user (pip --user).
    let user_base = Command::new(python()).args(["-c", "import site; print(site.getuserbase())"]).output().unwrap();
    let user_base = String::from_utf8_lossy(&user_base.stdout).trim().to_string();
    let output = python_command(&bundle)
        .env("HOME", &home)
        .env("PYTHONUSERBASE", user_base)
        .arg("-c")
        .arg(code)
        .output()
        .expect("run python3");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the README example failed:\n{code}\n{stderr}");
    // No error, and the script named was found (a relative path would not
    // be: pedalboard loads a VST3 from inside its folder).
    assert!(
        !stderr.contains("no scripts host")
            && !stderr.contains("[error]")
            && !stderr.contains("OUTBOARD_DEFAULT_SCRIPT"),
        "{stderr}"
    );

    // The output: as long as the input, and the tremolo heard (its gain
    // swings between 0.5 and 1 at 5 Hz, so 50 ms windows differ in level).
    let out = read_any_wav(&bundle.dir().join("out.wav"));
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].len(), 88200);
    let rms = |w: &[f32]| (w.iter().map(|s| s * s).sum::<f32>() / w.len() as f32).sqrt();
    let levels: Vec<f32> = out[0].chunks(2205).map(rms).collect();
    let (lo, hi) = levels.iter().fold((f32::MAX, 0f32), |(lo, hi), &l| (lo.min(l), hi.max(l)));
    assert!(hi > 0.0 && lo / hi < 0.8, "a tremolo's level swings: {levels:?}");
}

/// A WAV as planar f32, whatever its sample format (pedalboard writes the
/// input's bit depth).
fn read_any_wav(path: &Path) -> Vec<Vec<f32>> {
    let mut reader = hound::WavReader::open(path).expect("open WAV");
    let spec = reader.spec();
    let samples: Vec<f32> = match spec.sample_format {
        hound::SampleFormat::Float => reader.samples::<f32>().map(|s| s.unwrap()).collect(),
        hound::SampleFormat::Int => {
            let scale = (1u64 << (spec.bits_per_sample - 1)) as f32;
            reader.samples::<i32>().map(|s| s.unwrap() as f32 / scale).collect()
        }
    };
    let channels = spec.channels as usize;
    (0..channels).map(|c| samples.iter().skip(c).step_by(channels).copied().collect()).collect()
}
