//! The plugin as a host sees it: a bundle folder with `outboard.clap` (the
//! freshly built cdylib) and, unless a test says otherwise, the scripts host
//! beside it, exactly as `cargo xtask bundle` lays them out.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::{ScriptDir, scripts_host, workspace_bin};

/// A CLAP bundle in a temporary folder: `outboard.clap` and, optionally, the scripts host beside it. The folder is
/// removed when this is dropped.
pub struct PluginBundle {
    dir: ScriptDir,
}

impl PluginBundle {
    /// Copies the built plugin into a fresh folder named after `label`; with `with_sidecar`, also copies the
    /// scripts host in as `outboard-scripts-host`, where the plugin looks for it.
    pub fn new(label: &str, with_sidecar: bool) -> PluginBundle {
        let dir = ScriptDir::new(label);
        std::fs::copy(workspace_bin("liboutboard_plugin.so"), dir.path().join("outboard.clap"))
            .expect("copy the plugin");
        if with_sidecar {
            let sidecar = dir.path().join("outboard-scripts-host");
            std::fs::copy(scripts_host(), sidecar).expect("copy the scripts host");
        }
        PluginBundle { dir }
    }

    /// The path of `outboard.clap`, the file a CLAP host loads.
    pub fn clap(&self) -> PathBuf {
        self.dir.path().join("outboard.clap")
    }

    /// A scratch file path inside the bundle's folder.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `source` to `name` in the bundle's folder and returns its path (see [`ScriptDir::write`]).
    pub fn write(&self, name: &str, source: &str) -> String {
        self.dir.write(name, source)
    }

    /// The input and output WAV files of an `outboard-host` run, in the bundle's folder.
    pub fn wavs(&self) -> Wavs {
        Wavs { input: self.file("in.wav"), output: self.file("out.wav") }
    }
}

/// Where an `outboard-host` run writes what it played in and what came out
/// (made by [`PluginBundle::wavs`]).
pub struct Wavs {
    /// The input the host generated and played, written by `--write-input`.
    pub input: PathBuf,
    /// The plugin's output, written by `--output-wav`.
    pub output: PathBuf,
}

impl Wavs {
    /// `args` followed by `--write-input INPUT --output-wav OUTPUT`.
    pub fn after<'a>(&'a self, args: &[&'a str]) -> Vec<&'a str> {
        let path = |p: &'a PathBuf| p.to_str().expect("a UTF-8 path");
        let files = ["--write-input", path(&self.input), "--output-wav", path(&self.output)];
        args.iter().copied().chain(files).collect()
    }
}

/// The VST3 bundle as `cargo xtask bundle` lays it out, from this profile's
/// build: `Outboard.vst3/Contents/<arch>-linux/Outboard.so` (the library must
/// carry the bundle's name) with the scripts host beside it, where the
/// plugin looks for it.
pub struct Vst3Bundle {
    dir: ScriptDir,
}

impl Vst3Bundle {
    /// Lays out `Outboard.vst3` with the built plugin and the scripts host in a fresh folder named after `label`.
    pub fn new(label: &str) -> Vst3Bundle {
        let dir = ScriptDir::new(label);
        let bundle = Vst3Bundle { dir };
        let binaries = bundle.binaries();
        std::fs::create_dir_all(&binaries).expect("create the VST3 bundle");
        std::fs::copy(workspace_bin("liboutboard_plugin.so"), binaries.join("Outboard.so")).expect("copy the plugin");
        std::fs::copy(scripts_host(), binaries.join("outboard-scripts-host")).expect("copy the scripts host");
        bundle
    }

    /// The `Outboard.vst3` folder a host loads.
    pub fn vst3(&self) -> PathBuf {
        self.dir.path().join("Outboard.vst3")
    }

    /// `Contents/<arch>-linux`, the VST3 SDK's folder for Linux binaries.
    pub fn binaries(&self) -> PathBuf {
        self.vst3().join("Contents").join(format!("{}-linux", std::env::consts::ARCH))
    }

    /// A scratch folder beside the bundle (not inside it).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `source` to `name` in the scratch folder beside the bundle and returns its path.
    pub fn write(&self, name: &str, source: &str) -> String {
        self.dir.write(name, source)
    }
}

/// The Python the scripts run on and `cargo xtask setup` installs packages
/// into: `$PYO3_PYTHON`, else `python3`.
pub fn python() -> String {
    std::env::var("PYO3_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Reads a 32-bit float WAV (as outboard-host writes it) into planar channels.
pub fn read_wav(path: &std::path::Path) -> Vec<Vec<f32>> {
    let mut reader = hound::WavReader::open(path).expect("open WAV");
    let channels = reader.spec().channels as usize;
    let samples: Vec<f32> = reader.samples::<f32>().map(|s| s.expect("sample")).collect();
    (0..channels).map(|c| samples.iter().skip(c).step_by(channels).copied().collect()).collect()
}

/// Runs outboard-host; returns its JSON report and its stderr.
pub fn run_host(bundle: &PluginBundle, args: &[&str], env: &[(&str, &str)]) -> (Value, String) {
    let json = bundle.file("report.json");
    let mut command = Command::new(workspace_bin("outboard-host"));
    command.arg(bundle.clap()).args(args).arg("--json").arg(&json).env_remove("OUTBOARD_SCRIPTS_HOST");
    for (key, value) in env {
        command.env(key, value);
    }
    let output = command.output().expect("run outboard-host");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{}\n{stderr}", String::from_utf8_lossy(&output.stdout));
    (serde_json::from_slice(&std::fs::read(&json).expect("report")).expect("JSON report"), stderr)
}

/// Asserts out(t) = gain · in(t − latency) exactly, and silence before.
pub fn assert_delayed(input: &Path, output: &Path, latency: usize, gain: f32) {
    let (x, y) = (read_wav(input), read_wav(output));
    assert_eq!(x.len(), 2);
    assert_eq!(y.len(), 2);
    for c in 0..2 {
        assert!(y[c][..latency].iter().all(|s| *s == 0.0), "silence for the latency");
        for t in latency..y[c].len() {
            assert_eq!(y[c][t], gain * x[c][t - latency], "channel {c}, frame {t}");
        }
    }
}
