//! Helpers for Outboard's cross-process tests: finding the workspace's
//! programs and writing throw-away scripts.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A program built in this workspace (same profile as the running test).
/// `cargo xtask test` builds them all before testing.
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    for dir in exe.ancestors().skip(1).take(2) {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "{name} is not built next to {}; run `cargo build --workspace --bins` (cargo xtask test does)",
        exe.display()
    );
}

/// The scripts host, found the way every program finds it
/// (`outboard_engine::workers::process::locate_scripts_host`:
/// `$OUTBOARD_SCRIPTS_HOST`, else beside the test executable, else in the
/// workspace's target folder).
pub fn scripts_host() -> PathBuf {
    outboard_engine::workers::process::locate_scripts_host(None)
        .unwrap_or_else(|e| panic!("{e} (cargo xtask test builds it)"))
}

/// Polls `f` (every 5 ms) until it holds or `limit` has passed; whether it
/// held. What another process or thread does comes when it comes: tests
/// wait for it with a generous limit instead of sleeping a fixed time.
pub fn eventually(limit: std::time::Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    f()
}

/// The workspace's root folder (where the example scripts are).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ is in the workspace").to_path_buf()
}

/// The path of `examples/scripts/NAME`, one of the example scripts.
pub fn example_script(name: &str) -> String {
    workspace_root().join("examples/scripts").join(name).to_str().expect("UTF-8 path").to_string()
}

/// A temporary folder of scripts, removed when dropped.
pub struct ScriptDir {
    path: PathBuf,
}

impl ScriptDir {
    /// Creates a fresh, empty folder in the system temp folder, named after `label`, this process and a
    /// per-process counter so that concurrent tests never share one.
    pub fn new(label: &str) -> ScriptDir {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "outboard-test-{label}-{}-{}",
            std::process::id(),
            COUNT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).expect("create script folder");
        ScriptDir { path }
    }

    /// Writes `source` to `name` in the folder and returns its path.
    pub fn write(&self, name: &str, source: &str) -> String {
        let file = self.path.join(name);
        std::fs::write(&file, source).expect("write script");
        file.to_str().expect("UTF-8 temp path").to_string()
    }

    /// The folder's path; it exists until this `ScriptDir` is dropped.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ScriptDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

pub mod jack;
pub mod plugin;
pub mod realtime;
pub mod rt_safety;
