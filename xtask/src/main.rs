//! `cargo xtask`: Outboard's set-up, test, demo and bench driver.
//!
//! - `cargo xtask setup`: installs what a fresh Debian machine lacks (ALSA and
//!   JACK headers, pkg-config, the JACK server, numpy for the Python pyo3 links,
//!   and for the editor's tests an X server without a screen, xdotool and
//!   Mesa's software OpenGL) and says what it installs; fails with the exact
//!   command when it cannot.
//! - `cargo xtask test`: setup, then the whole test suite: unit and
//!   cross-process tests (among them Outboard.vst3 in pedalboard), the loom
//!   model of the ring, and the release bundle of the plugin loaded by
//!   `outboard-host` (the CLAP) and by pedalboard (the VST3).
//! - `cargo xtask demo [ARGS]`: setup, then `outboard-demo` in release mode,
//!   through a running JACK server, else the sound card, else a private JACK
//!   server with the dummy driver that it starts and stops; the master output
//!   goes to `target/demo/outboard-demo.wav` unless `--wav` says otherwise.
//! - `cargo xtask bench ARGS...`: setup, then `outboard-bench ARGS...` in release mode.
//! - `cargo xtask bundle`: setup, then a release build of the plugin, written
//!   as `target/bundled/outboard.clap` with `outboard-scripts-host` beside it
//!   (the plugin looks for its sidecar there), ready to copy into `~/.clap`,
//!   and as the VST3 bundle `target/bundled/Outboard.vst3` (the same library,
//!   `Contents/x86_64-linux/Outboard.so`, with the scripts host beside it),
//!   ready to copy into `~/.vst3`.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

/// Debian packages the build and the tests need. The editor's tests
/// (tests/tests/editor_window.rs) open the plugin's window through
/// outboard-host under Xvfb and click in it with xdotool; the editor
/// (baseview, egui) loads X11, xcb, xkbcommon and EGL (GLX where EGL fails)
/// at run time, and draws with Mesa's software OpenGL (llvmpipe, in
/// libgl1-mesa-dri). No -dev package: nothing of it is linked at build time.
const APT_PACKAGES: &[&str] = &[
    "pkg-config",
    "libasound2-dev",
    "libjack-jackd2-dev",
    "jackd2",
    "xvfb",
    "xdotool",
    "libx11-6",
    "libx11-xcb1",
    "libxcb1",
    "libxkbcommon-x11-0",
    "libegl1",
    "libegl-mesa0",
    "libgl1",
    "libglx-mesa0",
    "libgl1-mesa-dri",
];
/// Python packages: (import name, pip requirement, Debian package). numpy
/// for the scripts; pedalboard (Spotify's VST3 host, PyPI only), which the
/// tests and the benchmark load Outboard.vst3 into (0.9.12 reports plugin
/// latency; the tests were written against 0.9.26).
const PYTHON_PACKAGES: &[(&str, &str, Option<&str>)] =
    &[("numpy", "numpy", Some("python3-numpy")), ("pedalboard", "pedalboard>=0.9.12,<0.10", None)];

type Result<T = ()> = std::result::Result<T, String>;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (command, rest) = match args.split_first() {
        Some((command, rest)) => (command.as_str(), rest),
        None => ("help", &[][..]),
    };
    let outcome = match command {
        "setup" => setup(),
        "test" => setup().and_then(|()| test()),
        "demo" => setup().and_then(|()| demo(rest)),
        "bench" => setup().and_then(|()| bench(rest)),
        "bundle" => setup().and_then(|()| bundle().map(|_| ())),
        _ => {
            eprintln!("usage: cargo xtask <setup | test | demo [ARGS] | bench ARGS | bundle>");
            return ExitCode::from(if command == "help" { 0 } else { 2 });
        }
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("\nxtask: {e}");
            ExitCode::FAILURE
        }
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask sits in the workspace").to_path_buf()
}

/// Cargo's target folder: `$CARGO_TARGET_DIR` (relative to the workspace
/// if relative) when set, else the workspace's `target/`.
fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => root().join(dir),
        None => root().join("target"),
    }
}

fn cargo() -> Command {
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command.current_dir(root());
    command
}

fn run(command: &mut Command) -> Result {
    let shown = format!("{command:?}");
    let status = command.status().map_err(|e| format!("cannot run {shown}: {e}"))?;
    if status.success() { Ok(()) } else { Err(format!("{shown} failed ({status})")) }
}

fn succeeds(program: &str, args: &[&str]) -> bool {
    Command::new(program).args(args).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// The Python that pyo3 builds against: `$PYO3_PYTHON`, else `python3` on PATH.
fn python() -> String {
    std::env::var("PYO3_PYTHON").unwrap_or_else(|_| "python3".into())
}

fn setup() -> Result {
    if !cfg!(target_os = "linux") {
        return Err("Outboard runs on Linux (memfd, futex, JACK); this is not Linux".into());
    }
    install_apt_packages()?;
    install_python_packages()?;
    Ok(())
}

fn install_apt_packages() -> Result {
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .copied()
        .filter(|p| {
            !Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", p])
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let list = missing.join(" ");
    let manual = format!(
        "echo 'jackd2 jackd/tweak_rt_limits boolean false' | sudo debconf-set-selections && \
         sudo apt-get update && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends {list}"
    );
    if !is_root() {
        return Err(format!("missing Debian packages: {list}\nInstall them as root, then run this again:\n  {manual}"));
    }
    eprintln!("xtask: installing Debian packages: {list}");
    // jackd2 asks whether to enable realtime limits; answer for it.
    let mut preseed = Command::new("debconf-set-selections");
    preseed.stdin(Stdio::piped());
    let mut child = preseed.spawn().map_err(|e| format!("cannot run debconf-set-selections: {e}"))?;
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(b"jackd2 jackd/tweak_rt_limits boolean false\n")
        .map_err(|e| e.to_string())?;
    child.wait().map_err(|e| e.to_string())?;
    let fail =
        |e: String| format!("{e}\nInstall them by hand (needs network access to the Debian mirrors):\n  {manual}");
    run(Command::new("apt-get").args(["update", "-qq"]).env("DEBIAN_FRONTEND", "noninteractive")).map_err(fail)?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
    .map_err(fail)?;
    Ok(())
}

fn install_python_packages() -> Result {
    let python = python();
    if !succeeds(&python, &["--version"]) {
        return Err(format!("{python} not found: Outboard embeds CPython 3; install python3 (or set PYO3_PYTHON)"));
    }
    let imports = |python: &str, name: &str| succeeds(python, &["-c", &format!("import {name}")]);
    let missing = || -> Vec<(&str, &str, Option<&str>)> {
        PYTHON_PACKAGES.iter().copied().filter(|(name, _, _)| !imports(&python, name)).collect()
    };
    let first = missing();
    if first.is_empty() {
        return Ok(());
    }
    let specs: Vec<&str> = first.iter().map(|(_, spec, _)| *spec).collect();
    eprintln!("xtask: installing Python packages for {python}: {}", specs.join(" "));
    let pip = |extra: &[&str], specs: &[&str]| {
        run(Command::new(&python)
            .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check"])
            .args(extra)
            .args(specs)
            .env("PIP_ROOT_USER_ACTION", "ignore"))
    };
    if pip(&[], &specs).is_ok() && missing().is_empty() {
        return Ok(());
    }
    // Debian's own python3 refuses pip (PEP 668): its packages come from
    // apt, and what Debian does not package goes to the user's site folder.
    let debian: Vec<&str> = missing().iter().filter_map(|(_, _, deb)| *deb).collect();
    if is_root() && !debian.is_empty() {
        let _ = run(Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&debian)
            .env("DEBIAN_FRONTEND", "noninteractive"));
    }
    let rest: Vec<&str> = missing().iter().map(|(_, spec, _)| *spec).collect();
    if !rest.is_empty() {
        eprintln!("xtask: pip refused; installing {} for this user only (pip --user)", rest.join(" "));
        let _ = pip(&["--user", "--break-system-packages"], &rest);
    }
    let left = missing();
    if left.is_empty() {
        return Ok(());
    }
    let specs: Vec<String> = left.iter().map(|(_, spec, _)| format!("'{spec}'")).collect();
    let debian: Vec<&str> = left.iter().filter_map(|(_, _, deb)| *deb).collect();
    let mut how = format!("  {python} -m pip install {}", specs.join(" "));
    if !debian.is_empty() {
        how.push_str(&format!("\n  sudo apt-get install {}", debian.join(" ")));
    }
    Err(format!("cannot install {} for {python}; run:\n{how}", specs.join(" ")))
}

fn test() -> Result {
    eprintln!("xtask: building every program (the cross-process tests start them)");
    run(cargo().args(["build", "--workspace", "--bins"]))?;
    eprintln!("xtask: unit, integration and cross-process tests");
    run(cargo().args(["test", "--workspace"]))?;
    eprintln!("xtask: loom model of the shared-memory ring (--cfg loom)");
    run(cargo()
        .args(["test", "-p", "outboard-engine", "--release", "--lib", "--target-dir"])
        .arg(target_dir().join("loom"))
        .arg("loom")
        .env("RUSTFLAGS", "--cfg loom"))?;
    eprintln!("xtask: the release bundle, loaded by outboard-host");
    let bundled = bundle()?;
    run(Command::new(target_dir().join("debug/outboard-host"))
        .arg(bundled.join("outboard.clap"))
        .args(["--tracks", "2", "--seconds", "1", "--offline", "--script"])
        .arg(root().join("examples/scripts/gain.py"))
        .arg("--json")
        .arg(bundled.join("smoke.json")))?;
    eprintln!("xtask: the release VST3 bundle, loaded by pedalboard (the benchmark, briefly)");
    run(Command::new(python())
        .arg(root().join("examples/bench/pedalboard_bench.py"))
        .arg("--bundle")
        .arg(bundled.join("Outboard.vst3"))
        .args(["--seconds", "2", "--repeat", "1", "--check"])
        .env_remove("OUTBOARD_SCRIPTS_HOST"))?;
    eprintln!("xtask: all tests passed");
    Ok(())
}

fn build_release() -> Result {
    run(cargo().args(["build", "--release", "--workspace", "--bins"]))
}

fn demo(args: &[String]) -> Result {
    build_release()?;
    // Ctrl-C reaches the whole foreground group: the demo stops cleanly on
    // it, and xtask must live on to stop the JACK server it started.
    let _ = ctrlc::set_handler(|| {});
    let mut command = Command::new(target_dir().join("release/outboard-demo"));
    command.args(args);
    if !args.iter().any(|a| a == "--wav") {
        let wav = target_dir().join("demo/outboard-demo.wav");
        std::fs::create_dir_all(wav.parent().expect("a folder")).map_err(|e| e.to_string())?;
        command.arg("--wav").arg(wav);
    }
    let server = if jack_is_running(None) {
        eprintln!("xtask: a JACK server is running; the demo plays through it");
        None
    } else if has_sound_card() {
        eprintln!("xtask: no JACK server; the demo plays through the default ALSA device");
        None
    } else {
        let server = PrivateJack::start()?;
        eprintln!(
            "xtask: no sound card here; started a private JACK server `{}` (dummy driver, 48 kHz, 64 frames)",
            server.name
        );
        command.env("JACK_DEFAULT_SERVER", &server.name).args(["--backend", "jack"]);
        Some(server)
    };
    let outcome = run(&mut command);
    drop(server);
    outcome
}

/// Whether a playback PCM exists (ALSA names them /dev/snd/pcmC*D*p).
fn has_sound_card() -> bool {
    std::fs::read_dir("/dev/snd")
        .map(|dir| dir.flatten().any(|e| e.file_name().to_string_lossy().ends_with('p')))
        .unwrap_or(false)
}

fn jack_is_running(name: Option<&str>) -> bool {
    let mut command = Command::new("jack_lsp");
    command.env("JACK_NO_START_SERVER", "1").stdout(Stdio::null()).stderr(Stdio::null());
    if let Some(name) = name {
        command.env("JACK_DEFAULT_SERVER", name);
    }
    command.status().is_ok_and(|s| s.success())
}

/// `jackd -d dummy`, paced in real time without a sound card; stopped on drop.
struct PrivateJack {
    name: String,
    child: std::process::Child,
}

impl PrivateJack {
    fn start() -> Result<PrivateJack> {
        let name = format!("outboard-demo-{}", std::process::id());
        let child = Command::new("jackd")
            .args(["-n", &name, "-R", "-P", "85", "-d", "dummy", "-r", "48000", "-p", "64"])
            .env("JACK_NO_AUDIO_RESERVATION", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start jackd ({e}); install jackd2"))?;
        let server = PrivateJack { name, child };
        for _ in 0..100 {
            if jack_is_running(Some(&server.name)) {
                return Ok(server);
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        Err("the private JACK server did not start within 10 s".into())
    }
}

impl Drop for PrivateJack {
    fn drop(&mut self) {
        // SIGTERM lets jackd clean up; it may already have gone on Ctrl-C.
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                eprintln!("xtask: stopped the private JACK server");
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(30));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Builds the plugin and its sidecar in release mode and lays them out as
/// hosts expect, as a CLAP and as a VST3; returns the bundle folder.
fn bundle() -> Result<PathBuf> {
    run(cargo().args(["build", "--release", "-p", "outboard-plugin", "-p", "outboard-scripts-host"]))?;
    let release = target_dir().join("release");
    let bundled = target_dir().join("bundled");
    // The VST3 bundle layout for Linux: the library is named after the
    // bundle (hosts look for Contents/<arch>-linux/<name>.so), and the
    // plugin finds its scripts host beside the library it was loaded from.
    let vst3 = bundled.join("Outboard.vst3");
    let vst3_binaries = vst3.join("Contents").join(format!("{}-linux", std::env::consts::ARCH));
    for dir in [&bundled, &vst3_binaries] {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let copies = [
        ("liboutboard_plugin.so", bundled.join("outboard.clap")),
        ("outboard-scripts-host", bundled.join("outboard-scripts-host")),
        ("liboutboard_plugin.so", vst3_binaries.join("Outboard.so")),
        ("outboard-scripts-host", vst3_binaries.join("outboard-scripts-host")),
    ];
    for (from, to) in copies {
        let from = release.join(from);
        // Replace, not overwrite in place: a host may have the old file mapped.
        let _ = std::fs::remove_file(&to);
        std::fs::copy(&from, &to).map_err(|e| format!("cannot copy {} to {}: {e}", from.display(), to.display()))?;
    }
    // The example scripts, where the preset browser (CLAP preset
    // discovery) looks: `scripts/` beside the library.
    for dir in [bundled.join("scripts"), vst3_binaries.join("scripts")] {
        std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let examples = root().join("examples/scripts");
        let entries = std::fs::read_dir(&examples).map_err(|e| format!("cannot read {}: {e}", examples.display()))?;
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "py") {
                let to = dir.join(entry.file_name());
                std::fs::copy(&path, &to).map_err(|e| format!("cannot copy {}: {e}", path.display()))?;
            }
        }
    }
    eprintln!(
        "xtask: bundled {0}/outboard.clap with {0}/outboard-scripts-host and the example scripts ({0}/scripts) beside it, and {0}/Outboard.vst3\n\
         xtask: install the CLAP with: mkdir -p ~/.clap && cp -r {0}/outboard.clap {0}/outboard-scripts-host {0}/scripts ~/.clap/\n\
         xtask: install the VST3 with: mkdir -p ~/.vst3 && rm -rf ~/.vst3/Outboard.vst3 && cp -r {0}/Outboard.vst3 ~/.vst3/",
        bundled.display()
    );
    Ok(bundled)
}

fn bench(args: &[String]) -> Result {
    build_release()?;
    run(Command::new(target_dir().join("release/outboard-bench")).args(args))
}
