//! The plugin as a host sees it: a bundle folder with `outboard.clap` (the
//! freshly built cdylib) and, unless a test says otherwise, the scripts host
//! beside it, exactly as `cargo xtask bundle` lays them out.

use std::path::PathBuf;

use crate::{ScriptDir, workspace_bin};

pub struct PluginBundle {
    dir: ScriptDir,
}

impl PluginBundle {
    pub fn new(label: &str, with_sidecar: bool) -> PluginBundle {
        let dir = ScriptDir::new(label);
        std::fs::copy(workspace_bin("liboutboard_plugin.so"), dir.path().join("outboard.clap"))
            .expect("copy the plugin");
        if with_sidecar {
            let sidecar = dir.path().join("outboard-scripts-host");
            std::fs::copy(workspace_bin("outboard-scripts-host"), sidecar).expect("copy the scripts host");
        }
        PluginBundle { dir }
    }

    pub fn clap(&self) -> PathBuf {
        self.dir.path().join("outboard.clap")
    }

    /// A scratch file path inside the bundle's folder.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn write(&self, name: &str, source: &str) -> String {
        self.dir.write(name, source)
    }
}

/// Reads a 32-bit float WAV (as outboard-host writes it) into planar channels.
pub fn read_wav(path: &std::path::Path) -> Vec<Vec<f32>> {
    let mut reader = hound::WavReader::open(path).expect("open WAV");
    let channels = reader.spec().channels as usize;
    let samples: Vec<f32> = reader.samples::<f32>().map(|s| s.expect("sample")).collect();
    (0..channels).map(|c| samples.iter().skip(c).step_by(channels).copied().collect()).collect()
}
