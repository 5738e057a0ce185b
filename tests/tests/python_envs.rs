//! Scripts with the user's own Python packages: a virtual environment beside
//! the script, named by the instance, or in `$OUTBOARD_PYTHON_ENV`; one for
//! another Python version refused with both versions named; a missing
//! package reported at its import's line; workers shared only within an
//! environment; and, where scipy installs, the scipy example against
//! `scipy.signal.lfilter` on the whole signal.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use outboard_engine::realtime::track::{Track, TrackConfig};
use outboard_engine::workers::supervisor::{ScriptedTrack, Supervisor, SupervisorConfig};
use outboard_tests::plugin::{PluginBundle, assert_delayed, read_wav, run_host as host};
use outboard_tests::{ScriptDir, scripts_host};

/// The Python the workers embed (what pyo3 was built against).
fn python() -> String {
    std::env::var("PYO3_PYTHON").unwrap_or_else(|_| "python3".into())
}

fn python_version() -> String {
    let out = Command::new(python())
        .args(["-c", "import sys; print(f'{sys.version_info[0]}.{sys.version_info[1]}')"])
        .output()
        .expect("run python3");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A virtual environment made with the workers' Python, holding a package
/// of this test's own making: `outboard_test_pkg.GAIN`.
fn make_venv(dir: &Path, gain: f32) -> PathBuf {
    let status = Command::new(python()).args(["-m", "venv", "--without-pip"]).arg(dir).status().expect("venv");
    assert!(status.success(), "python3 -m venv");
    let package = dir.join(format!("lib/python{}/site-packages/outboard_test_pkg", python_version()));
    std::fs::create_dir_all(&package).unwrap();
    std::fs::write(package.join("__init__.py"), format!("GAIN = {gain}\n")).unwrap();
    dir.to_path_buf()
}

const USES_PACKAGE: &str =
    "import outboard_test_pkg\n\ndef process(block, ctx):\n    block *= outboard_test_pkg.GAIN\n";

/// Runs the bundle offline on `script` with `args`; checks the output is
/// the input times `gain`, delayed; returns the report and stderr.
fn run_expecting(
    bundle: &PluginBundle,
    script: &str,
    args: &[&str],
    env: &[(&str, &str)],
    gain: f32,
) -> (serde_json::Value, String) {
    let wavs = bundle.wavs();
    let mut all = vec!["--seconds", "0.3", "--offline", "--script", script];
    all.extend_from_slice(args);
    let (report, stderr) = host(bundle, &wavs.after(&all), env);
    eprintln!("{stderr}");
    assert_delayed(&wavs.input, &wavs.output, report["latency_samples"].as_u64().unwrap() as usize, gain);
    (report, stderr)
}

#[test]
fn a_venv_beside_the_script_is_its_environment() {
    let bundle = PluginBundle::new("env-beside", true);
    let folder = ScriptDir::new("env-beside-scripts");
    make_venv(&folder.path().join(".venv"), 0.25);
    let script = folder.write("uses_package.py", USES_PACKAGE);
    let (report, stderr) = run_expecting(&bundle, &script, &[], &[], 0.25);
    assert_eq!(report["error_logs"], 0, "{stderr}");
}

#[test]
fn an_environment_named_by_the_instance_or_outboard_python_env() {
    let bundle = PluginBundle::new("env-named", true);
    let envs = ScriptDir::new("env-named-venvs");
    let named = make_venv(&envs.path().join("named"), 0.5);
    let from_var = make_venv(&envs.path().join("from-var"), 0.125);
    let script = bundle.write("uses_package.py", USES_PACKAGE);
    run_expecting(&bundle, &script, &["--python-env", named.to_str().unwrap()], &[], 0.5);
    let var = [("OUTBOARD_PYTHON_ENV", from_var.to_str().unwrap())];
    run_expecting(&bundle, &script, &[], &var, 0.125);
    // The instance's own choice comes first.
    run_expecting(&bundle, &script, &["--python-env", named.to_str().unwrap()], &var, 0.5);
}

#[test]
fn an_environment_for_another_python_is_refused_naming_both_versions() {
    let bundle = PluginBundle::new("env-version", true);
    let env = ScriptDir::new("env-version-venv");
    std::fs::write(env.path().join("pyvenv.cfg"), "home = /usr/bin\nversion = 3.9.18\n").unwrap();
    std::fs::create_dir_all(env.path().join("lib/python3.9/site-packages/outboard_test_pkg")).unwrap();
    std::fs::write(env.path().join("lib/python3.9/site-packages/outboard_test_pkg/__init__.py"), "GAIN = 0.5\n")
        .unwrap();
    let script = bundle.write("uses_package.py", USES_PACKAGE);
    // Its packages are not used: the script fails on its import and plays dry.
    let (_, stderr) = run_expecting(&bundle, &script, &["--python-env", env.path().to_str().unwrap()], &[], 1.0);
    let ours = python_version();
    assert!(
        stderr.contains("is for Python 3.9.18") && stderr.contains(&format!("embed Python {ours}")),
        "both versions named:\n{stderr}"
    );
    assert!(stderr.contains(&format!("python{ours} -m venv")), "says what to do:\n{stderr}");
}

#[test]
fn a_missing_package_is_a_script_error_at_its_import() {
    let bundle = PluginBundle::new("env-missing", true);
    let script = bundle.write(
        "needs_package.py",
        "import numpy as np\nimport outboard_no_such_package\n\ndef process(block, ctx):\n    pass\n",
    );
    let (report, stderr) = run_expecting(&bundle, &script, &[], &[], 1.0);
    assert!(
        stderr.contains(&format!("{script}:2")) && stderr.contains("ModuleNotFoundError"),
        "the import's file and line:\n{stderr}"
    );
    assert!(report["error_logs"].as_u64().unwrap() >= 1);
}

#[test]
fn workers_are_shared_only_between_tracks_of_the_same_environment() {
    let dir = ScriptDir::new("env-sharing");
    let env = make_venv(&dir.path().join("venv"), 0.5);
    let script = dir.write("plain.py", "def process(block, ctx):\n    pass\n");
    let template = TrackConfig::new(0, "template");
    let mut config = SupervisorConfig::new(scripts_host(), &template);
    // One worker at most: past the cap, tracks share, but only within an environment.
    config.max_workers = 1;
    config.echo_log = false;
    let supervisor = Supervisor::start(config);
    let mut tracks = Vec::new();
    for (id, python_env) in [(1, None), (2, Some(env.clone())), (3, None), (4, Some(env.clone()))] {
        let (track, port) = Track::new(TrackConfig::new(id, format!("t{id}")));
        let mut scripted = ScriptedTrack::new(port, PathBuf::from(&script), vec!["mix".into()]);
        scripted.python_env = python_env;
        supervisor.add_track(scripted);
        tracks.push(track);
    }
    let give_up = Instant::now() + Duration::from_secs(30);
    while !tracks.iter_mut().all(|t| t.wait_ready(Duration::from_millis(10))) {
        assert!(Instant::now() < give_up, "scripts loaded: {:?}", supervisor.log_lines());
    }
    assert!(tracks.iter().all(|t| t.stats().script_ready.load(Ordering::Acquire)));
    assert_eq!(supervisor.worker_pids().len(), 2, "one worker per environment: {:?}", supervisor.log_lines());
}

/// A venv with scipy, kept under target/ between runs; None if scipy does
/// not install here (no network to the package index).
fn scipy_venv() -> Option<PathBuf> {
    let target = scripts_host().parent()?.parent()?.to_path_buf();
    let venv = target.join(format!("test-venvs/scipy-py{}", python_version()));
    let venv_python = venv.join("bin/python");
    let has_scipy =
        || Command::new(&venv_python).args(["-c", "import scipy.signal"]).status().is_ok_and(|s| s.success());
    if has_scipy() {
        return Some(venv);
    }
    let _ = std::fs::remove_dir_all(&venv);
    let made = Command::new(python()).args(["-m", "venv"]).arg(&venv).status().is_ok_and(|s| s.success());
    let installed = made
        && Command::new(&venv_python)
            .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r"])
            .arg(outboard_tests::workspace_root().join("examples/scripts/scipy_biquad.requirements.txt"))
            .status()
            .is_ok_and(|s| s.success());
    (installed && has_scipy()).then_some(venv)
}

#[test]
fn the_scipy_example_equals_lfilter_on_the_whole_signal() {
    let Some(venv) = scipy_venv() else {
        eprintln!("scipy does not install here (no package index?): the scipy example is not checked");
        return;
    };
    let bundle = PluginBundle::new("env-scipy", true);
    let script = outboard_tests::example_script("scipy_biquad.py");
    let wavs = bundle.wavs();
    let (input, output) = (&wavs.input, &wavs.output);
    let args =
        ["--seconds", "1", "--block", "100", "--offline", "--python-env", venv.to_str().unwrap(), "--script", &script];
    let (report, stderr) = host(&bundle, &wavs.after(&args), &[]);
    assert_eq!(report["error_logs"], 0, "{stderr}");
    assert_eq!(report["late_results"], 0, "{stderr}");
    let latency = report["latency_samples"].as_u64().unwrap() as usize;
    let (x, y) = (read_wav(input), read_wav(output));
    // The reference: scipy.signal.lfilter over each whole channel, in the venv's Python.
    let raw_in = bundle.file("x.f32");
    let raw_ref = bundle.file("ref.f32");
    for c in 0..2 {
        std::fs::write(&raw_in, x[c].iter().flat_map(|s| s.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
        let program = format!(
            "import numpy as np\nfrom scipy import signal\nb, a = signal.butter(2, 1000.0, fs=48000)\n\
             x = np.fromfile({:?}, dtype='<f4').astype(np.float64)\n\
             signal.lfilter(b, a, x).astype('<f4').tofile({:?})\n",
            raw_in.to_str().unwrap(),
            raw_ref.to_str().unwrap()
        );
        let status = Command::new(venv.join("bin/python")).args(["-c", &program]).status().unwrap();
        assert!(status.success());
        let reference: Vec<f32> = std::fs::read(&raw_ref)
            .unwrap()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        for t in latency..y[c].len() {
            let (got, want) = (y[c][t], reference[t - latency]);
            assert!((got - want).abs() <= 1e-5, "channel {c}, frame {t}: {got} vs lfilter's {want}");
        }
    }
}
