//! The supervisor: a non-realtime thread that owns the script worker
//! processes of realtime tracks (DESIGN.md §4).
//!
//! It spawns workers (one per scripted track up to a cap, then tracks share
//! workers round-robin), loads each track's script, hands each track the
//! rings to its worker, and watches: a worker that exits, stops beating for
//! longer than the heartbeat timeout, or whose rings a track found faulted is
//! killed and replaced by a new incarnation with fresh rings (the region's
//! generation goes up), its scripts are sent again, and each track is handed
//! its new link through its port. The realtime side never waits for any of
//! this: until the new link arrives it plays dry and counts late results.
//! A worker that keeps dying is restarted with exponential back-off.
//!
//! While any track is scripted, one spare worker stands by, started and idle
//! (interpreter, numpy, no script): a failed worker is replaced by it at once
//! (tens of milliseconds instead of an interpreter's cold start), and a new
//! spare is started in the background. Workers run one Python environment
//! each ([`crate::workers::python_env`]); tracks share workers only within one.
//! Everything workers say reaches the log listener attributed to the tracks
//! it concerns ([`crate::workers::script_log`]).
//!
//! A fresh region per incarnation, rather than resetting positions in the old
//! one, means nothing a dying (possibly hostile) worker left in shared memory
//! can reach its successor, and no position is ever written by two parties.
//!
//! Here: the handle ([`Supervisor`]), its thread's loop and what workers
//! report (messages, declarations). Beside it: `placement` (which worker and
//! slot runs a track), `lifecycle` (starting, watching and restarting
//! workers, the spare) and `priority` (the workers' scheduling policy).
//! Worker processes themselves are started and stopped by
//! [`crate::workers::process`].

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::realtime::track::TrackPort;
use crate::wire::control::{JobRequest, Json, ProtocolError, Reply, Request};
use crate::wire::declared::Declaration;
use crate::wire::rings::SlotRings;
use crate::workers::process::{Launch, LogCapture, shut_down};
use crate::workers::python_env;
use crate::workers::script_log::{LogLevel, LogListener, LogRecord, WorkerLine};

mod lifecycle;
mod placement;
mod priority;

use lifecycle::Worker;
use placement::TrackEntry;
use priority::{POLICING_WINDOW, Standing};

/// How the supervisor runs its workers.
#[derive(Clone, Debug)]
pub struct SupervisorConfig {
    /// The `outboard-scripts-host` binary.
    pub exe: PathBuf,
    /// Workers serving tracks, at most (default: 2 × cores).
    pub max_workers: usize,
    /// Tracks one worker can hold.
    pub slots_per_worker: usize,
    /// Shapes of every slot's rings (to the script, back from it); every track
    /// handed to this supervisor must fit them.
    pub slot_rings: SlotRings,
    /// A worker with tracks that does not beat for this long is restarted.
    pub heartbeat_timeout: Duration,
    /// Workers with tracks run at nice -10 (nice 0 while they start, until
    /// their first script has loaded); a worker whose tracks are late
    /// for most blocks (a CPU hog: a busy or hung script), or that is stuck
    /// in a script call (no beat for 8 ms while its tracks run), is demoted
    /// to nice 15 until it keeps up again. With `Some(priority)`, a worker that has
    /// kept up for a second is promoted to SCHED_FIFO at that priority (below
    /// the audio threads'): lower tail latency, but a script that turns into
    /// a hog after promotion holds its core at realtime priority until it is
    /// demoted, and on a small machine that can stall the audio (seen here as
    /// rare JACK xruns). Off by default.
    pub worker_priority: Option<i32>,
    /// Address-space limit per worker, in bytes (a memory bomb fails there).
    pub memory_limit: Option<u64>,
    /// Copy worker log lines to this process's stderr too.
    pub echo_log: bool,
    /// Hears every message (script errors, `ctx.log` lines, worker
    /// lifecycle) with the tracks it concerns, on the supervisor's thread.
    pub on_log: Option<LogListener>,
    /// Hears which track's script declared (new) parameters, on the
    /// supervisor's thread; the declaration is in the track's
    /// `TrackPort::declared`.
    pub on_declared: Option<DeclaredListener>,
    /// Keep a spare worker started and idle (interpreter, numpy, no
    /// script) while any track is scripted: a worker that crashes or hangs
    /// is replaced by it at once instead of by a cold start (about 150 ms
    /// of interpreter start), and a new spare is started in the background.
    /// It costs one idle process (its memory is in BENCHMARKS.md).
    pub spare_worker: bool,
    /// Start workers with fork rather than posix_spawn (`Launch::fork`):
    /// a benchmark's baseline, off by default and never better.
    pub fork_workers: bool,
}

impl SupervisorConfig {
    /// Defaults for tracks shaped like `template`.
    pub fn new(exe: PathBuf, template: &crate::realtime::track::TrackConfig) -> SupervisorConfig {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        SupervisorConfig {
            exe,
            max_workers: 2 * cores,
            slots_per_worker: 8,
            slot_rings: template.slot_rings(),
            heartbeat_timeout: Duration::from_secs(1),
            worker_priority: None,
            memory_limit: Some(2 << 30),
            echo_log: true,
            on_log: None,
            on_declared: None,
            spare_worker: true,
            fork_workers: false,
        }
    }
}

/// Hears the id of each track whose declaration changed (on the
/// supervisor's thread: it must not block).
#[derive(Clone)]
pub struct DeclaredListener(pub Arc<dyn Fn(u32) + Send + Sync>);

impl DeclaredListener {
    /// A listener that calls `f` with the id of each track whose declaration
    /// changed.
    pub fn new(f: impl Fn(u32) + Send + Sync + 'static) -> DeclaredListener {
        DeclaredListener(Arc::new(f))
    }
}

impl std::fmt::Debug for DeclaredListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DeclaredListener")
    }
}

/// A track to run a script on.
pub struct ScriptedTrack {
    /// The track's port: how the supervisor hands the track its links and
    /// reads its configuration and counters.
    pub port: TrackPort,
    /// The script file the track runs.
    pub script: PathBuf,
    /// Parameter names by index; index 0 should be "mix".
    pub params: Vec<String>,
    /// Where the script's declared parameters were placed before (names by
    /// index): the worker puts a name it declares again back on its index,
    /// so a host slot keeps its parameter across restarts and edits.
    pub hints: Vec<String>,
    /// The Python environment its script imports from (None: the built-in
    /// one); see [`crate::workers::python_env`].
    pub python_env: Option<PathBuf>,
}

impl ScriptedTrack {
    /// A track running `script` in the environment [`python_env::resolve`]
    /// chooses for it when the track names none: a `.venv` beside the
    /// script, else `$OUTBOARD_PYTHON_ENV`, else the built-in one.
    pub fn new(port: TrackPort, script: impl Into<PathBuf>, params: Vec<String>) -> ScriptedTrack {
        let script = script.into();
        let python_env = python_env::resolve(None, Some(&script));
        ScriptedTrack { port, script, params, hints: Vec::new(), python_env }
    }

    /// The same, in the environment the track names (if `named` is `Some`).
    pub fn with_python_env(mut self, named: Option<&Path>) -> ScriptedTrack {
        self.python_env = python_env::resolve(named, Some(&self.script));
        self
    }
}

enum Command {
    AddTrack(Box<ScriptedTrack>),
    AddHog(PathBuf, String),
    RemoveTrack(u32),
    SetScript(u32, PathBuf, Option<PathBuf>),
    KillWorkerOf(u32, Sender<Option<u32>>),
    /// A line a worker wrote on its stderr (sent by its log thread).
    WorkerLog {
        pid: u32,
        line: WorkerLine,
    },
}

/// What the supervisor shares with its owner.
#[derive(Default)]
struct Shared {
    log: Mutex<VecDeque<String>>,
    restarts: AtomicU64,
    /// Pid of the spare worker once it is warm (0: none ready).
    spare_ready: AtomicU32,
    stop: AtomicBool,
    pids: Mutex<Vec<u32>>,
    /// (track id, pid of the worker serving it).
    track_pids: Mutex<Vec<(u32, u32)>>,
}

const LOG_LINES: usize = 2000;

impl Shared {
    /// Keeps a message's lines for [`Supervisor::log_lines`].
    fn keep(&self, text: &str, echo: bool) {
        if echo {
            eprintln!("{text}");
        }
        let mut log = self.log.lock().expect("log lock");
        for line in text.lines() {
            if log.len() == LOG_LINES {
                log.pop_front();
            }
            log.push_back(line.to_string());
        }
    }
}

/// The handle on the supervisor thread. Dropping it stops the thread and
/// kills every worker.
pub struct Supervisor {
    commands: Sender<Command>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Supervisor {
    /// Starts the supervisor's thread, configured by `config`; it starts
    /// workers as tracks are given to it.
    pub fn start(config: SupervisorConfig) -> Supervisor {
        let (tx, rx) = channel();
        let shared = Arc::new(Shared::default());
        let thread_shared = shared.clone();
        let log_tx = tx.clone();
        let thread = std::thread::Builder::new()
            .name("outboard-supervisor".into())
            .spawn(move || Watcher::new(config, thread_shared, rx, log_tx).run())
            .expect("spawning the supervisor thread");
        Supervisor { commands: tx, shared, thread: Some(thread) }
    }

    /// Gives the supervisor a track: it starts or picks a worker, loads the
    /// script and sends the track its link.
    pub fn add_track(&self, track: ScriptedTrack) {
        let _ = self.commands.send(Command::AddTrack(Box::new(track)));
    }

    /// Starts a worker with no track that runs `function()` from `script`
    /// until it is stopped (the benchmark's GIL hog).
    pub fn add_hog(&self, script: PathBuf, function: &str) {
        let _ = self.commands.send(Command::AddHog(script, function.to_string()));
    }

    /// Takes track `id` off its worker (its script is unloaded and the port
    /// dropped). The slot is not reused by this worker incarnation: a late
    /// block of the old track can never reach a new one. A worker left with
    /// no tracks is recycled (fresh region, all slots free) when a new track
    /// needs it.
    pub fn remove_track(&self, id: u32) {
        let _ = self.commands.send(Command::RemoveTrack(id));
    }

    /// Points track `id` at another script file, in the Python environment
    /// `python_env` (see [`crate::workers::python_env`]): its worker loads it (the
    /// current script keeps running until the new one has loaded, and if
    /// it fails to load), and restarts use it from now on. A new
    /// environment moves the track to a worker running it.
    pub fn set_script(&self, id: u32, script: PathBuf, python_env: Option<PathBuf>) {
        let _ = self.commands.send(Command::SetScript(id, script, python_env));
    }

    /// Kills (SIGKILL) the worker serving track `id`, as a crash would; returns its pid.
    pub fn kill_worker_of(&self, track: u32) -> Option<u32> {
        let (tx, rx) = channel();
        self.commands.send(Command::KillWorkerOf(track, tx)).ok()?;
        rx.recv_timeout(Duration::from_secs(5)).ok().flatten()
    }

    /// The most recent lines of the workers' log (script errors, reloads, restarts).
    pub fn log_lines(&self) -> Vec<String> {
        self.shared.log.lock().expect("log lock").iter().cloned().collect()
    }

    /// The spare worker's pid, once it is warm and standing by.
    pub fn spare_ready(&self) -> Option<u32> {
        Some(self.shared.spare_ready.load(Ordering::Acquire)).filter(|&pid| pid != 0)
    }

    /// Workers restarted so far.
    pub fn restarts(&self) -> u64 {
        self.shared.restarts.load(Ordering::Relaxed)
    }

    /// Process ids of the live workers.
    pub fn worker_pids(&self) -> Vec<u32> {
        self.shared.pids.lock().expect("pids lock").clone()
    }

    /// The pid of the worker serving track `id` (None: not placed yet).
    pub fn worker_of(&self, id: u32) -> Option<u32> {
        self.shared.track_pids.lock().expect("pids lock").iter().find(|t| t.0 == id).map(|t| t.1)
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct Watcher {
    config: SupervisorConfig,
    shared: Arc<Shared>,
    commands: Receiver<Command>,
    /// How workers are started (their stderr lines come back as
    /// `Command::WorkerLog`).
    launch: Launch,
    workers: Vec<Worker>,
    /// The spare (see `SupervisorConfig::spare_worker`), and whether it has
    /// answered that it is warm.
    spare: Option<(Worker, bool)>,
    /// Not before this is a spare started again (one that keeps dying).
    spare_not_before: Option<Instant>,
    /// (pid, worker index) of recently replaced incarnations, so their last
    /// words reach their tracks' logs.
    retired: VecDeque<(u32, usize)>,
    tracks: Vec<TrackEntry>,
    next_shared_worker: usize,
    priority_warned: bool,
}

impl Watcher {
    fn new(
        config: SupervisorConfig,
        shared: Arc<Shared>,
        commands: Receiver<Command>,
        log_tx: Sender<Command>,
    ) -> Watcher {
        let launch = Launch {
            exe: config.exe.clone(),
            memory_limit: config.memory_limit,
            fork: config.fork_workers,
            log: Some(LogCapture::new(move |pid, line| {
                log_tx.send(Command::WorkerLog { pid, line: WorkerLine::parse(line) }).is_ok()
            })),
        };
        Watcher {
            config,
            shared,
            commands,
            launch,
            workers: Vec::new(),
            spare: None,
            spare_not_before: None,
            retired: VecDeque::new(),
            tracks: Vec::new(),
            next_shared_worker: 0,
            priority_warned: false,
        }
    }

    fn run(mut self) {
        let mut last_policing = Instant::now();
        while !self.shared.stop.load(Ordering::Acquire) {
            match self.commands.recv_timeout(Duration::from_millis(10)) {
                Ok(command) => {
                    self.handle(command);
                    while let Ok(command) = self.commands.try_recv() {
                        self.handle(command);
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            }
            self.read_replies();
            self.watch();
            self.keep_spare();
            if last_policing.elapsed() >= POLICING_WINDOW {
                last_policing = Instant::now();
                self.police_hogs();
            }
            for track in &mut self.tracks {
                track.port.collect_garbage();
            }
        }
        if let Some((spare, _)) = self.spare.take() {
            self.workers.push(spare);
        }
        shut_down(self.workers.iter_mut().map(|w| &mut w.process), Duration::from_millis(20));
        // The workers are gone, so their stderr pipes are at end of file.
        if let Some(log) = &self.launch.log {
            log.join();
        }
        // Their last words (a crash report) are worth keeping.
        while let Ok(command) = self.commands.try_recv() {
            if let Command::WorkerLog { .. } = command {
                self.handle(command);
            }
        }
        self.shared.pids.lock().expect("pids lock").clear();
        self.shared.track_pids.lock().expect("pids lock").clear();
    }

    fn handle(&mut self, command: Command) {
        match command {
            Command::AddTrack(track) => self.add_track(*track),
            Command::AddHog(script, function) => match self.spawn(0, true, None) {
                Ok(mut worker) => {
                    let job = JobRequest::new(script, function, vec![]);
                    worker.process.send(&Request::Job { id: 1, body: Json::new(&job) });
                    self.workers.push(worker);
                    self.publish_pids();
                }
                Err(e) => self.say(None, LogLevel::Error, format!("outboard: cannot start the hog worker: {e}")),
            },
            Command::RemoveTrack(id) => self.remove_track(id),
            Command::SetScript(id, script, python_env) => {
                let Some(index) = self.tracks.iter().position(|t| t.port.config.id == id) else { return };
                if self.tracks[index].python_env == python_env {
                    let entry = &mut self.tracks[index];
                    entry.script = script;
                    Self::load_script(&mut self.workers[entry.worker], entry);
                } else {
                    // Another environment: another worker. The track plays
                    // dry for the few blocks in flight on the old one.
                    let mut entry = self.unplace(index);
                    entry.script = script;
                    entry.python_env = python_env;
                    self.recycle_spent_workers();
                    self.place(entry);
                }
            }
            Command::KillWorkerOf(track, reply) => {
                let pid = self.tracks.iter().find(|t| t.port.config.id == track).map(|t| {
                    let process = &mut self.workers[t.worker].process;
                    process.signal_kill();
                    process.pid()
                });
                let _ = reply.send(pid);
            }
            Command::WorkerLog { pid, line } => {
                // A line from an incarnation since replaced still concerns
                // the tracks of that worker slot; one from the spare, none.
                let current = self.workers.iter().position(|w| w.process.pid() == pid);
                let Some(worker) = current.or_else(|| self.retired.iter().find(|r| r.0 == pid).map(|r| r.1)) else {
                    self.shared.keep(&line.text, self.config.echo_log);
                    return;
                };
                let current = current.is_some();
                let own = |t: &&TrackEntry| t.worker == worker;
                let tracks = match line.track {
                    // Only a track on that worker: no script writes into
                    // another track's log.
                    Some(track) if current && self.tracks.iter().filter(own).any(|t| t.port.config.id == track) => {
                        vec![track]
                    }
                    // A track that is not (or no longer) on that worker: a
                    // removed track's last words, or a script pretending to
                    // be another track. Kept, heard by nobody.
                    Some(_) => {
                        self.shared.keep(&line.text, self.config.echo_log);
                        return;
                    }
                    None => self.tracks.iter().filter(own).map(|t| t.port.config.id).collect(),
                };
                if tracks.is_empty() {
                    // A worker no track uses: not every track's business.
                    self.shared.keep(&line.text, self.config.echo_log);
                    return;
                }
                self.emit(LogRecord { level: line.level, tracks, text: line.text });
            }
        }
    }

    /// Puts a message on the log: kept for `log_lines`, echoed if asked,
    /// and handed to the listener.
    fn emit(&self, record: LogRecord) {
        self.shared.keep(&record.text, self.config.echo_log);
        if let Some(listener) = &self.config.on_log {
            (listener.0)(&record);
        }
    }

    /// A message of the supervisor's own about `worker`'s tracks (or about
    /// every track, with `None`).
    fn say(&self, worker: Option<usize>, level: LogLevel, text: String) {
        let tracks: Vec<u32> = match worker {
            Some(worker) => self.tracks.iter().filter(|t| t.worker == worker).map(|t| t.port.config.id).collect(),
            None => Vec::new(),
        };
        if worker.is_some() && tracks.is_empty() {
            // About a worker no track uses: nobody's business but the log's.
            self.shared.keep(&text, self.config.echo_log);
            return;
        }
        self.emit(LogRecord { level, tracks, text });
    }

    /// Reads what workers report on their control rings: scripts loaded,
    /// what they declare.
    fn read_replies(&mut self) {
        let mut declared = Vec::new();
        if let Some((spare, ready)) = &mut self.spare {
            loop {
                match spare.process.try_reply() {
                    Ok(Some(Reply::Warm)) => {
                        *ready = true;
                        self.shared.spare_ready.store(spare.process.pid(), Ordering::Release);
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    // A spare that breaks its ring is of no use: `keep_spare`
                    // replaces it once it is gone.
                    Err(_) => {
                        spare.process.signal_kill();
                        break;
                    }
                }
            }
        }
        for (index, worker) in self.workers.iter_mut().enumerate() {
            loop {
                let reply = match worker.process.try_reply() {
                    Ok(Some(reply)) => reply,
                    Ok(None) => break,
                    // Restarted for it by `watch`.
                    Err(fault) => {
                        worker.control_fault.get_or_insert(fault);
                        break;
                    }
                };
                let slot = match reply {
                    Reply::ScriptDeclared { slot, body } => {
                        declared.push((index, slot, body));
                        continue;
                    }
                    Reply::ScriptLoaded { slot, .. } => slot,
                    _ => continue,
                };
                // Its interpreter is up: from now on it serves blocks, at the
                // priority that keeps them on time.
                if worker.standing == Standing::Starting {
                    worker.stand(Standing::Probation);
                }
                for track in self.tracks.iter().filter(|t| t.worker == index && t.slot == slot) {
                    track.port.stats.script_ready.store(true, Ordering::Release);
                }
            }
        }
        for (worker, slot, body) in declared {
            self.take_declaration(worker, slot, &body);
        }
    }

    /// A worker says what a slot's script declares: the track keeps it (and
    /// the names, so a restarted worker places them on the same indices),
    /// and whoever listens hears of it. A malformed one is refused.
    fn take_declaration(&mut self, worker: usize, slot: usize, body: &Json<Declaration>) {
        let Some(entry) = self.tracks.iter_mut().find(|t| t.worker == worker && t.slot == slot) else {
            return;
        };
        let id = entry.port.config.id;
        let declaration = match body.decode() {
            Ok(declaration) => declaration,
            Err(ProtocolError(why)) => {
                let text =
                    format!("outboard: the worker sent a malformed declaration for {}: {why}", entry.port.config.name);
                entry.port.stats.faults.fetch_add(1, Ordering::Relaxed);
                self.emit(LogRecord { level: LogLevel::Error, tracks: vec![id], text });
                return;
            }
        };
        for p in &declaration.params {
            if entry.hints.len() <= p.index {
                entry.hints.resize(p.index + 1, String::new());
            }
            entry.hints[p.index].clone_from(&p.name);
        }
        entry.port.declared.set(declaration);
        if let Some(listener) = &self.config.on_declared {
            (listener.0)(id);
        }
    }
}
