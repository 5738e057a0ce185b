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
//! Scripts are files. An instance whose script came from a file runs that
//! file where it exists: the worker follows it (an edit is heard within a
//! second) and its folder is on `sys.path`, so modules beside it import.
//! Where it does not exist (a project opened on another machine), or for a
//! script that never was a file, the worker runs a copy of the source
//! saved in the plugin's state, written by this module (one per instance,
//! in a private folder removed with the supervisor). Rewriting that copy,
//! or pointing the track at another file, is how a state loaded while the
//! instance runs reaches the worker; the old script plays until the new
//! one has loaded.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use outboard_engine::realtime::track::{TrackConfig, TrackPort};
use outboard_engine::workers::process::{self, SCRIPTS_HOST_BIN, SCRIPTS_HOST_ENV};
use outboard_engine::workers::script_log::LogListener;
use outboard_engine::workers::supervisor::DeclaredListener;
use outboard_engine::workers::supervisor::{ScriptedTrack, Supervisor, SupervisorConfig};

/// Frames per internal block: every instance runs the engine at this size
/// whatever the host's block size.
pub const BLOCK: usize = 64;
/// The deepest pipeline an instance may ask for (the engine's limit).
pub const MAX_LATENCY_BLOCKS: usize = 64;

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
    /// Tracks taken off the supervisor, and when: their script copies are
    /// removed a while later (their worker may still be looking at them
    /// until it hears of the removal), or with the folder.
    retired: Vec<(u32, Instant)>,
}

static SERVICE: Mutex<Service> =
    Mutex::new(Service { users: 0, supervisor: None, unavailable: None, script_dir: None, retired: Vec::new() });

/// How long a retired track's script copies are kept.
const KEEP_RETIRED_COPIES: Duration = Duration::from_secs(5);

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
        service.retired.clear();
        (service.supervisor.take(), service.script_dir.take())
    };
    drop(supervisor);
    if let Some(dir) = dir {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// The path of this library, from the address of one of its functions.
pub(crate) fn library_path() -> Option<PathBuf> {
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

/// A scripts host named by the program that links the plugin (tests),
/// before `$OUTBOARD_SCRIPTS_HOST`.
static SCRIPTS_HOST: Mutex<Option<PathBuf>> = Mutex::new(None);

/// Names the scripts host for every instance of this process started from
/// now on (a program that links the plugin, as the tests do, rather than
/// setting the environment while threads run).
pub fn use_scripts_host(path: PathBuf) {
    *SCRIPTS_HOST.lock().unwrap_or_else(|e| e.into_inner()) = Some(path);
}

/// Where the scripts host is, or why it cannot be used: the one the program
/// named, else the engine's search beside this library (unless
/// `OUTBOARD_SCRIPTS_HOST` names it).
pub fn locate_scripts_host() -> Result<PathBuf, String> {
    if let Some(named) = SCRIPTS_HOST.lock().unwrap_or_else(|e| e.into_inner()).clone() {
        return process::usable_scripts_host(named, "named by the program");
    }
    if std::env::var_os(SCRIPTS_HOST_ENV).is_some() {
        return process::locate_scripts_host(None);
    }
    let library = library_path().ok_or("cannot find where outboard.clap was loaded from")?;
    process::locate_scripts_host(Some(&library))
}

fn make_script_dir() -> std::io::Result<PathBuf> {
    let base = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
    let dir = base.join(format!("outboard-plugin-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
    Ok(dir)
}

/// A script as an instance holds it (and its state saves it).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ScriptSource {
    /// A name for logs, e.g. its file name.
    pub name: String,
    /// The Python source, as last read or loaded.
    pub source: String,
    /// The file it came from (absolute); empty if it never was a file.
    pub path: String,
    /// The Python environment the instance names for it (a virtual
    /// environment's folder); empty: the usual choice (a `.venv` beside the
    /// file, `$OUTBOARD_PYTHON_ENV`, the built-in one).
    pub python_env: String,
}

impl ScriptSource {
    /// The file this script follows, if it names one that exists here.
    pub fn followed_file(&self) -> Option<PathBuf> {
        let path = PathBuf::from(&self.path);
        (!self.path.is_empty() && path.is_file()).then_some(path)
    }

    /// What the log says when the state names a file that is not here (the
    /// saved copy runs instead); `None` if it is here or none is named.
    pub fn missing_file_note(&self) -> Option<String> {
        (!self.path.is_empty() && self.followed_file().is_none()).then(|| {
            format!(
                "outboard: the script's file {} is not on this machine; running the copy saved with the project",
                self.path
            )
        })
    }

    /// The followed file's current text, if it can be read and is not too
    /// long to be a script.
    pub fn read_followed(&self) -> Option<String> {
        let path = self.followed_file()?;
        let text = std::fs::read_to_string(path).ok()?;
        (text.len() <= crate::state::MAX_SCRIPT_BYTES).then_some(text)
    }
}

/// The file an instance's copy of its script is written to.
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
    /// The engine track's id (unique in this process, from [`next_track_id`]).
    pub track: u32,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut service = service();
        if let Some(supervisor) = &service.supervisor {
            supervisor.remove_track(self.track);
        }
        service.retired.push((self.track, Instant::now()));
    }
}

/// Removes the script copies of tracks retired long enough ago.
fn remove_old_copies(service: &mut Service) {
    let Some(dir) = service.script_dir.clone() else { return };
    service.retired.retain(|&(track, since)| {
        let old = since.elapsed() >= KEEP_RETIRED_COPIES;
        if old {
            remove_copies(&dir, track);
        }
        !old
    });
}

/// Removes the copies of scripts written for `track`.
fn remove_copies(dir: &Path, track: u32) {
    let prefix = format!("track{track}_");
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// The file the worker should run for `script` on `track`: the file it
/// came from, where that exists; else a copy of its source (written now).
/// The note says when a file named by the state is missing.
fn file_to_run(service: &mut Service, track: u32, script: &ScriptSource) -> Result<(PathBuf, Option<String>), String> {
    if let Some(path) = script.followed_file() {
        return Ok((path, None));
    }
    if service.script_dir.is_none() {
        service.script_dir = Some(make_script_dir().map_err(|e| format!("cannot create a folder for scripts: {e}"))?);
    }
    let dir = service.script_dir.as_deref().expect("made above");
    let copy = script_file(dir, track, &script.name);
    write_script(&copy, &script.source).map_err(|e| format!("cannot write {}: {e}", copy.display()))?;
    Ok((copy, script.missing_file_note()))
}

/// What a track's worker runs.
#[derive(Clone, Debug, PartialEq)]
pub struct Running {
    /// The script file the worker runs: the file the script follows where it exists, else a copy of its source
    /// written to this process's script folder.
    pub file: PathBuf,
    /// The Python environment it imports from (None: the built-in one).
    pub python_env: Option<PathBuf>,
}

fn running(file: PathBuf, script: &ScriptSource) -> Running {
    let named = (!script.python_env.is_empty()).then(|| Path::new(&script.python_env));
    let python_env = outboard_engine::workers::python_env::resolve(named, Some(&file));
    Running { file, python_env }
}

/// Points a registered track at `script` (a state loaded while active).
/// Returns what the worker now runs and a note for the log.
pub fn retarget(track: u32, script: &ScriptSource, current: &Running) -> Result<(Running, Option<String>), String> {
    let mut service = service();
    let (file, note) = file_to_run(&mut service, track, script)?;
    let new = running(file, script);
    if new != *current
        && let Some(supervisor) = &service.supervisor
    {
        supervisor.set_script(track, new.file.clone(), new.python_env.clone());
    }
    Ok((new, note))
}

/// Makes the worker of a registered track load its script again (the
/// editor's Reload): the same file, re-read now; a copy of a script that
/// is no file is written again first. The current version plays until the
/// new one has loaded.
pub fn reload(track: u32, script: &ScriptSource) -> Result<Running, String> {
    let mut service = service();
    let (file, _) = file_to_run(&mut service, track, script)?;
    let now = running(file, script);
    if let Some(supervisor) = &service.supervisor {
        supervisor.set_script(track, now.file.clone(), now.python_env.clone());
    }
    Ok(now)
}

/// The pid of the worker serving `track`, once it is placed.
pub fn worker_of(track: u32) -> Option<u32> {
    service().supervisor.as_ref().and_then(|s| s.worker_of(track))
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

/// What registering a track gave.
pub struct Registered {
    /// Keeps the track on the supervisor; drop it (on the main thread) to take the track off.
    pub registration: Registration,
    /// What the worker runs.
    pub running: Running,
    /// Worth a line on the log (a followed file that is missing).
    pub note: Option<String>,
}

/// Why a track plays dry.
pub struct Unavailable {
    /// The reason, as a sentence for the host's log (no scripts host found, no folder for script copies).
    pub why: String,
    /// The first instance of the process to hear it (it is said once).
    pub first: bool,
}

/// Hands a track to the shared supervisor (starting it if needed), with its
/// script. `Err` says why the track will play dry.
/// `hints` are the script slots' names by wire index (empty for a free
/// slot): the worker puts the parameters it declares again back on them.
pub fn register(port: TrackPort, script: &ScriptSource, hints: Vec<String>) -> Result<Registered, Unavailable> {
    let mut service = service();
    if let Some(why) = &service.unavailable {
        return Err(Unavailable { why: why.clone(), first: false });
    }
    if service.supervisor.is_none() {
        let exe = match locate_scripts_host() {
            Ok(exe) => exe,
            Err(why) => {
                let why = format!(
                    "no scripts host: {why}; set {SCRIPTS_HOST_ENV} or put {SCRIPTS_HOST_BIN} beside the .clap"
                );
                service.unavailable = Some(why.clone());
                return Err(Unavailable { why: format!("{why}. Audio passes through dry."), first: true });
            }
        };
        let mut config = SupervisorConfig::new(exe, &template());
        // A DAW's stderr is nobody's console: messages go to each
        // instance's host log (crate::messages).
        config.echo_log = false;
        config.on_log = Some(LogListener::new(crate::messages::route));
        config.on_declared = Some(DeclaredListener::new(crate::messages::poke));
        service.supervisor = Some(Supervisor::start(config));
    }
    let track = port.config.id;
    remove_old_copies(&mut service);
    let (file, note) = file_to_run(&mut service, track, script).map_err(|why| Unavailable { why, first: true })?;
    let running = running(file, script);
    let supervisor = service.supervisor.as_ref().expect("started above");
    // The plugin's track has no parameters of its own for the script: its
    // Mix is applied after the script.
    let mut scripted = ScriptedTrack::new(port, running.file.clone(), Vec::new());
    scripted.hints = hints;
    scripted.python_env = running.python_env.clone();
    supervisor.add_track(scripted);
    Ok(Registered { registration: Registration { track }, running, note })
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
