//! The scripts host shared by every instance in the host process.
//!
//! One supervisor per process, however many instances: it starts workers up
//! to its cap (2 × cores) and shares them beyond, so sixteen instances do
//! not start sixteen times the cores in processes. It is created on the
//! main thread at the first activation, not when the plugin is scanned (a
//! scan creates instances and must stay fast), and dropped, with its workers
//! and its thread, when the last instance is destroyed: nothing of the
//! plugin runs after that, so the host may unload the library.
//!
//! The sidecar `outboard-scripts-host` is looked for beside the `.clap`
//! (found with `dladdr` on a symbol of this library), unless
//! `OUTBOARD_SCRIPTS_HOST` names it. Without it every instance passes its
//! audio dry, delayed by its latency as always, and the reason is said once
//! on stderr.
//!
//! Scripts travel in the plugin's state; the worker reads them from a file
//! this module writes (one per instance, in a private folder removed with
//! the supervisor). Rewriting that file is how a state loaded while the
//! instance runs reaches the worker: the worker reloads a changed script.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use outboard_engine::supervisor::{ScriptedTrack, Supervisor, SupervisorConfig};
use outboard_engine::track::{TrackConfig, TrackPort};

/// The environment variable naming the scripts host, overriding the search.
pub const SCRIPTS_HOST_ENV: &str = "OUTBOARD_SCRIPTS_HOST";
pub const SCRIPTS_HOST_NAME: &str = "outboard-scripts-host";

/// Frames per internal block: every instance runs the engine at this size
/// whatever the host's block size.
pub const BLOCK: usize = 64;
/// The deepest pipeline an instance may ask for (the engine's limit).
pub const MAX_LATENCY_BLOCKS: usize = 64;

/// Names under which the script sees the track's parameters (index 0 is
/// the engine's own wet level, which the plugin keeps at 1: the Mix knob is
/// applied after the script, sample-accurately).
pub const SCRIPT_PARAM_NAMES: [&str; 5] = ["wet", "p1", "p2", "p3", "p4"];

static NEXT_TRACK_ID: AtomicU32 = AtomicU32::new(1);

/// A process-unique track id for a new instance.
pub fn next_track_id() -> u32 {
    NEXT_TRACK_ID.fetch_add(1, Ordering::Relaxed)
}

struct Service {
    /// Instances alive.
    users: usize,
    supervisor: Option<Supervisor>,
    /// Why there is no supervisor, once we know there cannot be one.
    unavailable: Option<String>,
    script_dir: Option<PathBuf>,
}

static SERVICE: Mutex<Service> =
    Mutex::new(Service { users: 0, supervisor: None, unavailable: None, script_dir: None });

fn service() -> std::sync::MutexGuard<'static, Service> {
    // A panic while holding the lock leaves plain data behind: keep going.
    SERVICE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Counts an instance in (cheap: starts nothing).
pub fn enter() {
    service().users += 1;
}

/// Counts an instance out; the last one stops the supervisor (joining its
/// threads and killing its workers) and removes the script folder.
pub fn leave() {
    let (supervisor, dir) = {
        let mut service = service();
        service.users = service.users.saturating_sub(1);
        if service.users > 0 {
            return;
        }
        service.unavailable = None;
        (service.supervisor.take(), service.script_dir.take())
    };
    drop(supervisor);
    if let Some(dir) = dir {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// The path of this library, from the address of one of its functions.
fn library_path() -> Option<PathBuf> {
    let mut info = std::mem::MaybeUninit::<libc::Dl_info>::zeroed();
    let symbol = library_path as *const libc::c_void;
    // SAFETY: dladdr only reads the address and fills `info`; on success
    // `dli_fname` points to a NUL-terminated string owned by the loader,
    // copied out before we return.
    unsafe {
        if libc::dladdr(symbol, info.as_mut_ptr()) == 0 {
            return None;
        }
        let info = info.assume_init();
        if info.dli_fname.is_null() {
            return None;
        }
        let name = std::ffi::CStr::from_ptr(info.dli_fname);
        Some(PathBuf::from(std::ffi::OsStr::from_encoded_bytes_unchecked(name.to_bytes())))
    }
}

/// Where the scripts host is, or why it cannot be used.
pub fn locate_scripts_host() -> Result<PathBuf, String> {
    let (path, how) = match std::env::var_os(SCRIPTS_HOST_ENV) {
        Some(path) => (PathBuf::from(path), format!("from {SCRIPTS_HOST_ENV}")),
        None => {
            let library = library_path().ok_or("cannot find where outboard.clap was loaded from")?;
            let dir = library.parent().map(Path::to_path_buf).unwrap_or_default();
            (dir.join(SCRIPTS_HOST_NAME), format!("beside {}", library.display()))
        }
    };
    match std::fs::metadata(&path) {
        Ok(meta) if meta.is_file() && meta.permissions().mode() & 0o111 != 0 => Ok(path),
        Ok(_) => Err(format!("{} ({how}) is not an executable file", path.display())),
        Err(e) => Err(format!("{} ({how}): {e}", path.display())),
    }
}

fn make_script_dir() -> std::io::Result<PathBuf> {
    let base = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
    let dir = base.join(format!("outboard-plugin-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
    Ok(dir)
}

/// The file an instance's script is written to.
fn script_file(dir: &Path, track: u32, name: &str) -> PathBuf {
    let stem: String = Path::new(name)
        .file_stem()
        .map(|s| s.to_string_lossy().chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_').take(40).collect())
        .unwrap_or_default();
    let stem = if stem.is_empty() { "script".to_string() } else { stem };
    dir.join(format!("track{track}_{stem}.py"))
}

/// Writes the script atomically (a reader sees the old or the new file,
/// never half of one).
pub fn write_script(path: &Path, source: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("py.tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(source.as_bytes())?;
    file.sync_data()?;
    std::fs::rename(tmp, path)
}

/// A track the supervisor runs; removed from it when dropped.
pub struct Registration {
    pub track: u32,
    pub script_path: PathBuf,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(supervisor) = &service().supervisor {
            supervisor.remove_track(self.track);
        }
        let _ = std::fs::remove_file(&self.script_path);
    }
}

/// The shape every track of this process fits (the supervisor's rings are
/// sized once, for the deepest pipeline).
fn template() -> TrackConfig {
    let mut template = TrackConfig::new(0, "template");
    template.block = BLOCK;
    template.channels = 2;
    template.latency_blocks = MAX_LATENCY_BLOCKS;
    template
}

/// Hands a track to the shared supervisor (starting it if needed), with its
/// script. `Err` says why the track will play dry; it is also said once on
/// stderr.
pub fn register(port: TrackPort, script_name: &str, source: &str) -> Result<Registration, String> {
    let mut service = service();
    if let Some(why) = &service.unavailable {
        return Err(why.clone());
    }
    if service.supervisor.is_none() {
        let exe = match locate_scripts_host() {
            Ok(exe) => exe,
            Err(why) => {
                let why = format!(
                    "no scripts host: {why}; set {SCRIPTS_HOST_ENV} or put {SCRIPTS_HOST_NAME} beside the .clap"
                );
                eprintln!("outboard.clap: {why}. Audio passes through dry.");
                service.unavailable = Some(why.clone());
                return Err(why);
            }
        };
        let mut config = SupervisorConfig::new(exe, &template());
        // A DAW's stderr is nobody's console: keep the log in memory.
        config.echo_log = false;
        service.supervisor = Some(Supervisor::start(config));
    }
    if service.script_dir.is_none() {
        service.script_dir = Some(make_script_dir().map_err(|e| format!("cannot create a folder for scripts: {e}"))?);
    }
    let dir = service.script_dir.clone().expect("just made");
    let track = port.config.id;
    let script_path = script_file(&dir, track, script_name);
    write_script(&script_path, source).map_err(|e| format!("cannot write {}: {e}", script_path.display()))?;
    let supervisor = service.supervisor.as_ref().expect("started above");
    supervisor.add_track(ScriptedTrack {
        port,
        script: script_path.clone(),
        params: SCRIPT_PARAM_NAMES.iter().map(|s| s.to_string()).collect(),
    });
    Ok(Registration { track, script_path })
}

/// Recent lines of the scripts' log (errors with file and line, reloads,
/// restarts), for diagnosis.
pub fn log_lines() -> Vec<String> {
    service().supervisor.as_ref().map(Supervisor::log_lines).unwrap_or_default()
}

/// Process ids of the live workers (none before the first activation).
pub fn worker_pids() -> Vec<u32> {
    service().supervisor.as_ref().map(Supervisor::worker_pids).unwrap_or_default()
}
