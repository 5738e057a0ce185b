//! One worker process: how the engine finds the worker program, starts a
//! worker, talks to it over its control rings, and stops it. The job pool
//! and the supervisor both start and stop their workers here, and nowhere
//! else.
//!
//! A worker is started on a region of its own ([`crate::wire::rings`]
//! lays it out) with:
//!
//! - the region's memfd as its standard input (`Region::pass_to_child`),
//!   and no other descriptor but its standard output and error (the worker
//!   closes any other it inherited first thing:
//!   [`crate::wire::launch::settle_worker`]);
//! - death with the host: the parent-death signal, which Linux sends when
//!   the *thread* that started the worker ends, so workers are started on a
//!   thread that lives as long as they should (the supervisor's own, or a
//!   [`Launcher`]'s);
//! - a process group of its own (Ctrl-C at the terminal is for the host,
//!   which stops its workers itself);
//! - optionally an address-space limit (a memory bomb fails there) and its
//!   stderr captured line by line ([`LogCapture`]), else inherited.
//!
//! The host runs no code in the child between fork and exec, so the
//! standard library spawns with posix_spawn (the child borrows the host's
//! memory until exec) rather than fork (which would write-protect all of
//! the host's memory, and every realtime thread would then take a
//! copy-on-write page fault on each page it writes next). The worker arms
//! the parent-death signal, closes stray descriptors and sets its memory
//! limit itself, first thing ([`crate::wire::launch::settle_worker`]).
//!
//! Everything here runs on non-realtime threads: it spawns, allocates and
//! sleeps.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::shm::region::Region;
use crate::shm::ring::{Consumer, PopError, Producer};
use crate::wire::control::{Reassembler, Reply, Request};
use crate::wire::launch::WorkerArgs;
use crate::wire::rings::{CONTROL_RING, REPLY_RING, REQUEST_RING, SlotRings, region_rings};

/// The name of the worker program.
pub const SCRIPTS_HOST_BIN: &str = "outboard-scripts-host";
/// Environment variable naming the worker program, overriding the search.
pub const SCRIPTS_HOST_ENV: &str = "OUTBOARD_SCRIPTS_HOST";

/// Finds `outboard-scripts-host`: `$OUTBOARD_SCRIPTS_HOST` if set; else,
/// given `beside` (a plugin's own library), in the folder of that file and
/// nowhere else; else beside the running executable, or one or two folders
/// up (cargo puts test binaries in `deps/` and examples in `examples/`),
/// then in the target folder of the workspace the engine was built in
/// (`$CARGO_TARGET_DIR` at build time, else the workspace's `target/`), the
/// engine's build profile first, so a program in any crate that depends on
/// the engine finds the workspace's build. Only an executable file is
/// taken; the error says where it was looked for.
pub fn locate_scripts_host(beside: Option<&Path>) -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os(SCRIPTS_HOST_ENV) {
        return usable_scripts_host(PathBuf::from(path), &format!("from {SCRIPTS_HOST_ENV}"));
    }
    if let Some(file) = beside {
        let dir = file.parent().unwrap_or(Path::new(""));
        return usable_scripts_host(dir.join(SCRIPTS_HOST_BIN), &format!("beside {}", file.display()));
    }
    let mut candidates = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        candidates.extend(exe.ancestors().skip(1).take(3).map(|dir| dir.join(SCRIPTS_HOST_BIN)));
    }
    let profiles = if cfg!(debug_assertions) { ["debug", "release"] } else { ["release", "debug"] };
    candidates.extend(profiles.iter().map(|p| build_target_dir().join(p).join(SCRIPTS_HOST_BIN)));
    if let Some(found) = candidates.iter().find(|c| usable_scripts_host((*c).clone(), "").is_ok()) {
        return Ok(found.clone());
    }
    let tried: Vec<String> = candidates.iter().map(|c| c.display().to_string()).collect();
    Err(format!(
        "{SCRIPTS_HOST_BIN} not found (tried {}); build it with `cargo build --workspace --bins` or set {SCRIPTS_HOST_ENV}",
        tried.join(", ")
    ))
}

/// The target folder of the workspace the engine was built in.
fn build_target_dir() -> PathBuf {
    match option_env!("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("target"),
    }
}

/// `path` if it is an executable file; else why not (`how`: where it came
/// from, for the message). [`locate_scripts_host`] takes only such a file;
/// so must a program that names the scripts host itself.
pub fn usable_scripts_host(path: PathBuf, how: &str) -> Result<PathBuf, String> {
    match std::fs::metadata(&path) {
        Ok(meta) if meta.is_file() && meta.permissions().mode() & 0o111 != 0 => Ok(path),
        Ok(_) => Err(format!("{} ({how}) is not an executable file", path.display())),
        Err(e) => Err(format!("{} ({how}): {e}", path.display())),
    }
}

/// What went wrong starting a worker.
#[derive(Debug)]
pub struct SpawnError(pub String);

impl std::fmt::Display for SpawnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SpawnError {}

/// Hears one line a worker wrote on its stderr, with the worker's pid;
/// false stops the capture of that worker.
type LineSink = dyn Fn(u32, &str) -> bool + Send + Sync;

/// Where workers' stderr goes, line by line: to a sink that hears each line
/// with the pid of the worker that wrote it, from a thread per worker.
/// [`LogCapture::join`] waits for those threads, so that none outlives its
/// owner (a plugin may be unloaded right after).
#[derive(Clone)]
pub struct LogCapture {
    sink: Arc<LineSink>,
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl LogCapture {
    /// `sink` hears each line (without its newline); returning false stops
    /// the capture of that worker.
    pub fn new(sink: impl Fn(u32, &str) -> bool + Send + Sync + 'static) -> LogCapture {
        LogCapture { sink: Arc::new(sink), threads: Arc::default() }
    }

    fn capture(&self, pid: u32, stderr: std::process::ChildStderr) {
        let sink = self.sink.clone();
        let thread = std::thread::Builder::new().name(format!("outboard-log-{pid}")).spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if !sink(pid, &line) {
                    break;
                }
            }
        });
        let mut threads = self.threads.lock().unwrap_or_else(|e| e.into_inner());
        threads.retain(|t| !t.is_finished());
        threads.extend(thread.ok());
    }

    /// Waits for every capture thread: call it once the workers are gone
    /// (their stderr is then at end of file).
    pub fn join(&self) {
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        for thread in threads {
            let _ = thread.join();
        }
    }
}

/// How workers are started.
#[derive(Clone)]
pub struct Launch {
    /// The `outboard-scripts-host` program.
    pub exe: PathBuf,
    /// Address-space limit per worker, in bytes.
    pub memory_limit: Option<u64>,
    /// Where the workers' stderr goes (None: this process's stderr).
    pub log: Option<LogCapture>,
    /// Start workers with fork and exec rather than posix_spawn: only as the
    /// baseline that shows what posix_spawn saves the realtime threads (a
    /// fork write-protects the host's memory, and each realtime thread's
    /// next write to each page it uses is a copy-on-write page fault).
    pub fork: bool,
}

impl Launch {
    /// Workers of `exe`, without a memory limit, writing on this process's stderr.
    pub fn new(exe: impl Into<PathBuf>) -> Launch {
        Launch { exe: exe.into(), memory_limit: None, log: None, fork: false }
    }
}

/// One running worker: the process, its region, and the host's ends of its
/// control rings. Dropping it kills the worker (if it still runs) and
/// reaps it.
pub struct WorkerProcess {
    pub(crate) child: Child,
    pub(crate) region: Region,
    pub(crate) requests: Producer,
    replies: Consumer,
    reassembler: Reassembler,
    /// One control ring slot, for reading replies.
    buf: Vec<u8>,
}

impl WorkerProcess {
    /// Creates a region (at `generation`) with a track slot of each of the
    /// shapes `slots`, and starts worker `index` on it, running scripts in
    /// `python_env` (None: the built-in environment). The parent-death
    /// signal follows the calling thread (see the module docs).
    pub fn start(
        launch: &Launch,
        index: usize,
        generation: u32,
        slots: impl IntoIterator<Item = SlotRings>,
        python_env: Option<&Path>,
    ) -> Result<WorkerProcess, SpawnError> {
        let mut region = Region::create_with(&region_rings(slots), generation)
            .map_err(|e| SpawnError(format!("cannot create the shared region: {e}")))?;
        let requests = region.producer(REQUEST_RING).expect("fresh region");
        let replies = region.consumer(REPLY_RING).expect("fresh region");
        let mut command = Command::new(&launch.exe);
        region.pass_to_child(&mut command).map_err(|e| SpawnError(format!("cannot pass the shared region on: {e}")))?;
        command.args(
            WorkerArgs {
                worker: index,
                generation,
                parent_pid: std::process::id(),
                memory_limit: launch.memory_limit,
                python_env: python_env.map(Path::to_path_buf),
            }
            .to_args(),
        );
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        if launch.fork {
            // SAFETY: an empty closure: nothing runs between fork and exec
            // but the standard library's own set-up. Its presence is what
            // makes the standard library fork.
            unsafe { std::os::unix::process::CommandExt::pre_exec(&mut command, || Ok(())) };
        }
        if launch.log.is_some() {
            command.stderr(Stdio::piped());
        }
        let mut child =
            command.spawn().map_err(|e| SpawnError(format!("cannot start {}: {e}", launch.exe.display())))?;
        if let (Some(log), Some(stderr)) = (&launch.log, child.stderr.take()) {
            log.capture(child.id(), stderr);
        }
        Ok(WorkerProcess {
            child,
            region,
            requests,
            replies,
            reassembler: Reassembler::default(),
            buf: vec![0; CONTROL_RING.payload],
        })
    }

    /// The worker's process id, as the host started it (not as the worker claims).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The worker's region (its status words, its track slots' rings).
    pub fn region(&mut self) -> &mut Region {
        &mut self.region
    }

    /// Sends a control request, as far as the ring has room: it is far
    /// larger than any request but a job's, so a full ring means the worker
    /// is wedged, which its owner's watch catches. (The job pool, which
    /// must never drop a job, pushes its fragments itself, as ring space
    /// frees.)
    pub fn send(&mut self, request: &Request) {
        for fragment in request.fragments() {
            let _ = self.requests.try_push(&fragment);
        }
    }

    /// The next whole reply waiting, if any. Never blocks. An error means
    /// the worker broke the protocol (its ring faulted, or it sent what no
    /// worker sends).
    pub fn try_reply(&mut self) -> Result<Option<Reply>, String> {
        loop {
            let len = match self.replies.try_pop(&mut self.buf) {
                Ok(len) => len,
                Err(PopError::Empty) => return Ok(None),
                Err(e) => return Err(format!("reply ring: {e:?}")),
            };
            if let Some(message) = self.reassembler.push(&self.buf[..len]).map_err(|e| e.to_string())? {
                return Reply::decode(message).map(Some).map_err(|e| e.to_string());
            }
        }
    }

    /// The host's watch on the reply ring (see `crate::shm::ring::RingWatch`).
    pub(crate) fn reply_watch(&self) -> crate::shm::ring::RingWatch {
        self.replies.watch()
    }

    /// How the worker ended, if it has.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Sends SIGKILL, as a crash would, without waiting.
    pub fn signal_kill(&mut self) {
        let _ = self.child.kill();
    }

    /// Kills the worker now (if it still runs) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Stops workers: asks each to exit, gives them `grace` (all together) to
/// do so, then kills and reaps those still running.
pub fn shut_down<'a>(workers: impl IntoIterator<Item = &'a mut WorkerProcess>, grace: Duration) {
    let mut workers: Vec<&mut WorkerProcess> = workers.into_iter().collect();
    for worker in &mut workers {
        worker.send(&Request::Shutdown);
    }
    let deadline = Instant::now() + grace;
    for worker in &mut workers {
        while Instant::now() < deadline && worker.exited().is_none() {
            std::thread::sleep(Duration::from_millis(2));
        }
        worker.kill();
    }
}

/// A thread that starts worker processes, for an owner whose callers'
/// threads may end before its workers should (the job pool, used from any
/// thread): the parent-death signal follows the thread that started a
/// worker, so workers are started here, on a thread that lives as long as
/// the launcher.
pub struct Launcher {
    requests: Option<mpsc::Sender<Box<dyn FnOnce() + Send>>>,
    thread: Option<JoinHandle<()>>,
}

impl Launcher {
    /// Starts the launcher's thread; it lives until the launcher is dropped.
    pub fn start() -> Result<Launcher, SpawnError> {
        let (tx, rx) = mpsc::channel::<Box<dyn FnOnce() + Send>>();
        let thread = std::thread::Builder::new()
            .name("outboard-launcher".into())
            .spawn(move || {
                for start in rx {
                    start();
                }
            })
            .map_err(|e| SpawnError(format!("cannot start the launcher thread: {e}")))?;
        Ok(Launcher { requests: Some(tx), thread: Some(thread) })
    }

    /// [`WorkerProcess::start`], on the launcher's thread.
    pub fn start_worker(
        &self,
        launch: &Launch,
        index: usize,
        generation: u32,
        slots: Vec<SlotRings>,
        python_env: Option<PathBuf>,
    ) -> Result<WorkerProcess, SpawnError> {
        let (tx, rx) = mpsc::channel();
        let launch = launch.clone();
        let start = Box::new(move || {
            let _ = tx.send(WorkerProcess::start(&launch, index, generation, slots, python_env.as_deref()));
        });
        let gone = || SpawnError("the launcher thread is gone".into());
        self.requests.as_ref().ok_or_else(gone)?.send(start).map_err(|_| gone())?;
        rx.recv().map_err(|_| gone())?
    }
}

impl Drop for Launcher {
    fn drop(&mut self) {
        drop(self.requests.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scripts_host_is_looked_for_in_the_workspace_target_folder() {
        if std::env::var_os(SCRIPTS_HOST_ENV).is_some() {
            return; // set by the environment: that file or an error, not ours to test
        }
        match locate_scripts_host(None) {
            Ok(path) => assert!(path.ends_with(SCRIPTS_HOST_BIN) && path.is_file(), "{}", path.display()),
            // Not built: the message says where it was looked for, the workspace's target folder included.
            Err(message) => assert!(message.contains(&build_target_dir().display().to_string()), "{message}"),
        }
    }

    #[test]
    fn beside_a_library_means_in_its_folder_only() {
        if std::env::var_os(SCRIPTS_HOST_ENV).is_some() {
            return;
        }
        let dir = std::env::temp_dir().join(format!("outboard-locate-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let library = dir.join("outboard.clap");
        let missing = locate_scripts_host(Some(&library)).unwrap_err();
        assert!(missing.contains(SCRIPTS_HOST_BIN) && missing.contains("beside"), "{missing}");
        let host = dir.join(SCRIPTS_HOST_BIN);
        std::fs::write(&host, "#!/bin/sh\n").unwrap();
        let not_executable = locate_scripts_host(Some(&library)).unwrap_err();
        assert!(not_executable.contains("not an executable file"), "{not_executable}");
        std::fs::set_permissions(&host, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(locate_scripts_host(Some(&library)), Ok(host));
        let _ = std::fs::remove_dir_all(dir);
    }
}
