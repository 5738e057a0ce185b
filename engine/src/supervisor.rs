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
//! each ([`crate::python_env`]); tracks share workers only within one.
//! Everything workers say reaches the log listener attributed to the tracks
//! it concerns ([`crate::script_log`]).
//!
//! A fresh region per incarnation, rather than resetting positions in the old
//! one, means nothing a dying (possibly hostile) worker left in shared memory
//! can reach its successor, and no position is ever written by two parties.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::protocol::{self, JobRequest, Kind, Reassembler, ScriptSpec};
use crate::python_env;
use crate::region::{Region, Wake};
use crate::ring::{Consumer, Producer, RingShape};
use crate::script_log::{LogLevel, LogListener, LogRecord, WorkerLine};
use crate::track::{ScriptLink, TrackPort};
use crate::workers::{
    CONTROL_RING, REPLY_RING, REQUEST_RING, slot_ring_from_script, slot_ring_to_script, worker_command,
};

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
    pub slot_rings: (RingShape, RingShape),
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
    pub on_declared: Option<crate::declared::DeclaredListener>,
    /// Keep a spare worker started and idle (interpreter, numpy, no
    /// script) while any track is scripted: a worker that crashes or hangs
    /// is replaced by it at once instead of by a cold start (about 150 ms
    /// of interpreter start), and a new spare is started in the background.
    /// It costs one idle process (its memory is in BENCHMARKS.md).
    pub spare_worker: bool,
}

impl SupervisorConfig {
    /// Defaults for tracks shaped like `template`.
    pub fn new(exe: PathBuf, template: &crate::track::TrackConfig) -> SupervisorConfig {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        SupervisorConfig {
            exe,
            max_workers: 2 * cores,
            slots_per_worker: 8,
            slot_rings: (template.to_script_ring(), template.from_script_ring()),
            heartbeat_timeout: Duration::from_secs(1),
            worker_priority: None,
            memory_limit: Some(2 << 30),
            echo_log: true,
            on_log: None,
            on_declared: None,
            spare_worker: true,
        }
    }
}

/// A track to run a script on.
pub struct ScriptedTrack {
    pub port: TrackPort,
    pub script: PathBuf,
    /// Parameter names by index; index 0 should be "mix".
    pub params: Vec<String>,
    /// Where the script's declared parameters were placed before (names by
    /// index): the worker puts a name it declares again back on its index,
    /// so a host slot keeps its parameter across restarts and edits.
    pub hints: Vec<String>,
    /// The Python environment its script imports from (None: the built-in
    /// one); see [`crate::python_env`].
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

enum Request {
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
/// Nice value of a worker demoted for hogging.
const DEMOTED_NICE: i32 = 15;
/// Nice value of a raised worker where SCHED_FIFO is not permitted.
const RAISED_NICE: i32 = -10;
/// Nice value of a worker until its first script has loaded: starting CPython
/// and numpy is a burst of CPU (and kernel work) that must not delay the
/// running workers' blocks, as it did at their nice -10.
const STARTING_NICE: i32 = 0;
/// Nice value of the spare worker while it warms up and waits.
const SPARE_NICE: i32 = 10;

/// Sets a worker's scheduling policy and nice value; false if not permitted.
fn set_scheduling(pid: u32, policy: libc::c_int, priority: i32, nice: i32) -> bool {
    let param = libc::sched_param { sched_priority: priority };
    // SAFETY: plain syscall wrappers on a process id we own; `param` outlives the call.
    unsafe {
        libc::sched_setscheduler(pid as libc::pid_t, policy, &param) == 0
            && (policy != libc::SCHED_OTHER || libc::setpriority(libc::PRIO_PROCESS, pid as libc::id_t, nice) == 0)
    }
}
/// How often workers are checked for hogging: a hog is caught within a few
/// blocks, before the scheduler's wake-up granularity lets it delay others.
const POLICING_WINDOW: Duration = Duration::from_millis(20);
/// Windows of keeping up (one second) before a worker gets realtime priority.
const PROMOTE_AFTER_WINDOWS: u32 = 50;
/// How long after its script loaded a track's lateness starts to count.
const SETTLE_AFTER_LOAD: Duration = Duration::from_millis(100);
/// A worker that has not beaten for this long while its tracks went on
/// handing it blocks is stuck in a script call (a worker serving tracks
/// beats at every block): it is demoted at once (see `watch`).
const STUCK_AFTER: Duration = Duration::from_millis(8);

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
    commands: Sender<Request>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Supervisor {
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
        let _ = self.commands.send(Request::AddTrack(Box::new(track)));
    }

    /// Starts a worker with no track that runs `function()` from `script`
    /// until it is stopped (the benchmark's GIL hog).
    pub fn add_hog(&self, script: PathBuf, function: &str) {
        let _ = self.commands.send(Request::AddHog(script, function.to_string()));
    }

    /// Takes track `id` off its worker (its script is unloaded and the port
    /// dropped). The slot is not reused by this worker incarnation: a late
    /// block of the old track can never reach a new one. A worker left with
    /// no tracks is recycled (fresh region, all slots free) when a new track
    /// needs it.
    pub fn remove_track(&self, id: u32) {
        let _ = self.commands.send(Request::RemoveTrack(id));
    }

    /// Points track `id` at another script file, in the Python environment
    /// `python_env` (see [`crate::python_env`]): its worker loads it (the
    /// current script keeps running until the new one has loaded, and if
    /// it fails to load), and restarts use it from now on. A new
    /// environment moves the track to a worker running it.
    pub fn set_script(&self, id: u32, script: PathBuf, python_env: Option<PathBuf>) {
        let _ = self.commands.send(Request::SetScript(id, script, python_env));
    }

    /// Kills (SIGKILL) the worker serving track `id`, as a crash would; returns its pid.
    pub fn kill_worker_of(&self, track: u32) -> Option<u32> {
        let (tx, rx) = channel();
        self.commands.send(Request::KillWorkerOf(track, tx)).ok()?;
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

struct TrackEntry {
    /// When the track's script was first seen loaded (for the demotion check).
    ready_since: Option<Instant>,
    /// Late results counted at the last look, for the demotion check.
    late_seen: u64,
    blocks_seen: u64,
    port: TrackPort,
    script: PathBuf,
    params: Vec<String>,
    hints: Vec<String>,
    python_env: Option<PathBuf>,
    worker: usize,
    slot: usize,
}

struct Worker {
    generation: u32,
    /// The Python environment its scripts import from (None: built-in).
    python_env: Option<PathBuf>,
    child: Child,
    region: Region,
    requests: Producer,
    replies: Consumer,
    reassembler: Reassembler,
    slots: Vec<Slot>,
    hog: bool,
    last_beat: u64,
    last_beat_at: Instant,
    /// Blocks its tracks had been handed when its last beat was seen.
    blocks_at_last_beat: u64,
    recent_restarts: VecDeque<Instant>,
    restart_not_before: Option<Instant>,
    /// Where the worker stands in the priority policy (see `police_hogs`).
    standing: Standing,
    /// Consecutive policing windows in which its tracks kept up.
    kept_up: u32,
}

/// What a worker slot holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    Free,
    Track(u32),
    /// Held a track that was removed: not reused until the worker restarts
    /// with a fresh region.
    Retired,
}

/// A worker's standing in the priority policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Standing {
    /// Starting its interpreter: nice 0, below the running workers, until
    /// its first script has loaded.
    Starting,
    /// New: nice -10 until its tracks have kept up for a while.
    Probation,
    /// Kept up: SCHED_FIFO at the configured priority.
    Raised,
    /// Late for most blocks: nice 15.
    Demoted,
}

struct Watcher {
    config: SupervisorConfig,
    shared: Arc<Shared>,
    commands: Receiver<Request>,
    /// Cloned into each worker's log thread, which forwards its lines here.
    log_tx: Sender<Request>,
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
    /// Scratch for one control message from a worker.
    reply_buf: Vec<u8>,
    /// The threads copying workers' stderr: joined at shutdown, so no thread
    /// of this library outlives the supervisor (a plugin may be unloaded
    /// right after).
    log_threads: Vec<JoinHandle<()>>,
}

impl Watcher {
    fn new(
        config: SupervisorConfig,
        shared: Arc<Shared>,
        commands: Receiver<Request>,
        log_tx: Sender<Request>,
    ) -> Watcher {
        Watcher {
            config,
            shared,
            commands,
            log_tx,
            workers: Vec::new(),
            spare: None,
            spare_not_before: None,
            retired: VecDeque::new(),
            tracks: Vec::new(),
            next_shared_worker: 0,
            priority_warned: false,
            reply_buf: vec![0; CONTROL_RING.payload],
            log_threads: Vec::new(),
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
        for worker in &mut self.workers {
            let bye = protocol::fragments(Kind::Shutdown, 0, &[], CONTROL_RING.payload);
            let _ = worker.requests.try_push(&bye[0]);
        }
        std::thread::sleep(Duration::from_millis(20));
        for worker in &mut self.workers {
            let _ = worker.child.kill();
            let _ = worker.child.wait();
        }
        // The workers are gone, so their stderr pipes are at end of file.
        for thread in self.log_threads.drain(..) {
            let _ = thread.join();
        }
        // Their last words (a crash report) are worth keeping.
        while let Ok(command) = self.commands.try_recv() {
            if let Request::WorkerLog { .. } = command {
                self.handle(command);
            }
        }
        self.shared.pids.lock().expect("pids lock").clear();
        self.shared.track_pids.lock().expect("pids lock").clear();
    }

    fn handle(&mut self, command: Request) {
        match command {
            Request::AddTrack(track) => self.add_track(*track),
            Request::AddHog(script, function) => match self.spawn(0, true, None) {
                Ok(mut worker) => {
                    let job = JobRequest::new(script, function, vec![]);
                    for fragment in protocol::fragments(Kind::JobRequest, 1, &job.to_json(), CONTROL_RING.payload) {
                        let _ = worker.requests.try_push(&fragment);
                    }
                    self.workers.push(worker);
                    self.publish_pids();
                }
                Err(e) => self.say(None, LogLevel::Error, format!("outboard: cannot start the hog worker: {e}")),
            },
            Request::RemoveTrack(id) => self.remove_track(id),
            Request::SetScript(id, script, python_env) => {
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
            Request::KillWorkerOf(track, reply) => {
                let pid = self.tracks.iter().find(|t| t.port.config.id == track).map(|t| {
                    let child = &mut self.workers[t.worker].child;
                    let _ = child.kill();
                    child.id()
                });
                let _ = reply.send(pid);
            }
            Request::WorkerLog { pid, line } => {
                // A line from an incarnation since replaced still concerns
                // the tracks of that worker slot; one from the spare, none.
                let current = self.workers.iter().position(|w| w.child.id() == pid);
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

    fn remove_track(&mut self, id: u32) {
        let Some(index) = self.tracks.iter().position(|t| t.port.config.id == id) else { return };
        self.unplace(index);
        self.publish_pids();
    }

    /// Restarts, with a fresh region, every track worker whose tracks were
    /// all removed but whose slots are used up: it is as good as new after.
    fn recycle_spent_workers(&mut self) {
        for index in 0..self.workers.len() {
            let worker = &self.workers[index];
            let spent = !worker.hog && !worker.slots.is_empty() && worker.slots.iter().all(|s| *s == Slot::Retired);
            if spent {
                let slots = worker.slots.len();
                self.workers[index].slots = vec![Slot::Free; slots];
                self.restart(index, "has no tracks left");
            }
        }
    }

    fn add_track(&mut self, track: ScriptedTrack) {
        self.recycle_spent_workers();
        let cfg = &track.port.config;
        let (to, from) = self.config.slot_rings;
        if cfg.to_script_ring().payload > to.payload || cfg.from_script_ring().payload > from.payload {
            let text = format!("outboard: track {} does not fit the supervisor's ring shapes; it plays dry", cfg.name);
            self.emit(LogRecord { level: LogLevel::Error, tracks: vec![cfg.id], text });
            return;
        }
        let entry = TrackEntry {
            ready_since: None,
            late_seen: 0,
            blocks_seen: 0,
            port: track.port,
            script: track.script,
            params: track.params,
            hints: track.hints,
            python_env: track.python_env,
            worker: usize::MAX,
            slot: 0,
        };
        self.place(entry);
    }

    /// Finds (or starts) a worker for the track, in its Python environment,
    /// loads its script there and sends it its link.
    fn place(&mut self, mut entry: TrackEntry) {
        let env = entry.python_env.clone();
        let same_env = |w: &Worker| !w.hog && w.python_env == env;
        let track_workers = self.workers.iter().filter(|w| !w.hog).count();
        // A worker whose tracks were all removed takes the next track before
        // any new process is started (restarted first if it runs another
        // environment).
        let idle = (0..self.workers.len()).find(|&i| {
            let w = &self.workers[i];
            !w.hog && w.slots.contains(&Slot::Free) && !w.slots.iter().any(|s| matches!(s, Slot::Track(_)))
        });
        let mut started = false;
        let shared: Vec<usize> = (0..self.workers.len())
            .filter(|&i| same_env(&self.workers[i]) && self.workers[i].slots.contains(&Slot::Free))
            .collect();
        let worker = if let Some(idle) = idle {
            if self.workers[idle].python_env != env {
                self.workers[idle].python_env = env.clone();
                self.restart(idle, "is taken by a track in another Python environment");
            }
            idle
        } else if track_workers < self.config.max_workers || shared.is_empty() {
            // Past the cap, a new environment still gets a worker of its own:
            // workers are shared only between tracks of the same environment.
            match self.spawn(self.config.slots_per_worker, false, env.clone()) {
                Ok(worker) => {
                    self.workers.push(worker);
                    self.publish_pids();
                    started = true;
                    self.workers.len() - 1
                }
                Err(e) => {
                    let cfg = &entry.port.config;
                    let text = format!("outboard: cannot start a worker for {}: {e}; it plays dry", cfg.name);
                    self.emit(LogRecord { level: LogLevel::Error, tracks: vec![cfg.id], text });
                    return;
                }
            }
        } else {
            // Past the cap: share, round-robin over workers of the same
            // environment with a free slot.
            self.next_shared_worker += 1;
            shared[self.next_shared_worker % shared.len()]
        };
        let slot = self.workers[worker].slots.iter().position(|s| *s == Slot::Free).expect("a free slot");
        self.workers[worker].slots[slot] = Slot::Track(entry.port.config.id);
        entry.worker = worker;
        entry.slot = slot;
        entry.ready_since = None;
        entry.port.stats.script_ready.store(false, Ordering::Release);
        Self::connect(&mut self.workers[worker], &mut entry);
        let (id, pid) = (entry.port.config.id, self.workers[worker].child.id());
        let text = format!("outboard: started worker {worker} (pid {pid}) for {}", entry.port.config.name);
        self.tracks.push(entry);
        self.publish_pids();
        // A worker's start is news; a track joining a running one is not
        // (a host that reactivates on every call would repeat it forever).
        if started {
            self.emit(LogRecord { level: LogLevel::Info, tracks: vec![id], text });
        }
    }

    /// Takes a track off its worker's slot (retired until that worker
    /// restarts) and returns it.
    fn unplace(&mut self, index: usize) -> TrackEntry {
        let entry = self.tracks.swap_remove(index);
        let worker = &mut self.workers[entry.worker];
        let body = serde_json::json!({ "slot": entry.slot }).to_string();
        for fragment in protocol::fragments(Kind::UnloadScript, 0, body.as_bytes(), CONTROL_RING.payload) {
            let _ = worker.requests.try_push(&fragment);
        }
        worker.slots[entry.slot] = Slot::Retired;
        entry
    }

    /// Loads the track's script on its worker and sends the track its link.
    fn connect(worker: &mut Worker, entry: &mut TrackEntry) {
        Self::load_script(worker, entry);
        let link = ScriptLink {
            to_script: worker.region.producer(slot_ring_to_script(entry.slot)).expect("slot rings exist once"),
            from_script: worker.region.consumer(slot_ring_from_script(entry.slot)).expect("slot rings exist once"),
            generation: worker.generation,
        };
        entry.port.send_link(link);
    }

    /// Asks the track's worker to load its script into the track's slot.
    fn load_script(worker: &mut Worker, entry: &TrackEntry) {
        let cfg = &entry.port.config;
        let spec = ScriptSpec {
            slot: entry.slot,
            track: cfg.id,
            name: cfg.name.clone(),
            path: entry.script.clone(),
            channels: cfg.channels,
            frames: cfg.block,
            rate: cfg.sample_rate,
            latency_blocks: cfg.latency_blocks,
            params: entry.params.clone(),
            hints: entry.hints.clone(),
            values: (0..crate::block::MAX_PARAMS).map(|i| entry.port.params.get(i)).collect(),
            instrument: cfg.instrument,
        };
        for fragment in protocol::fragments(Kind::LoadScript, 0, &spec.to_json(), CONTROL_RING.payload) {
            // The control ring is far larger than any script spec; a full ring
            // means the worker is wedged, which the watch will catch.
            let _ = worker.requests.try_push(&fragment);
        }
    }

    /// Starts a new worker, to be pushed at the end of `workers`.
    fn spawn(&mut self, slots: usize, hog: bool, python_env: Option<PathBuf>) -> Result<Worker, String> {
        self.spawn_generation(self.workers.len(), slots, hog, 1, python_env)
    }

    /// Starts incarnation `generation` of worker `index`.
    fn spawn_generation(
        &mut self,
        index: usize,
        slots: usize,
        hog: bool,
        generation: u32,
        python_env: Option<PathBuf>,
    ) -> Result<Worker, String> {
        let (to, from) = self.config.slot_rings;
        let mut rings = vec![(CONTROL_RING, Wake::Worker), (CONTROL_RING, Wake::Own)];
        for _ in 0..slots {
            rings.push((to, Wake::Worker));
            rings.push((from, Wake::Own));
        }
        let mut region = Region::create_with(&rings, generation).map_err(|e| format!("shared region: {e}"))?;
        let requests = region.producer(REQUEST_RING).expect("fresh region");
        let replies = region.consumer(REPLY_RING).expect("fresh region");
        let mut command = worker_command(&self.config.exe, &region, index);
        if let Some(env) = &python_env {
            command.arg("--python-env").arg(env);
        }
        command.stderr(Stdio::piped());
        if let Some(limit) = self.config.memory_limit {
            // SAFETY: runs in the child between fork and exec; setrlimit is
            // async-signal-safe and touches only the integer `limit`.
            unsafe {
                std::os::unix::process::CommandExt::pre_exec(&mut command, move || {
                    let rlimit = rustix::process::Rlimit { current: Some(limit), maximum: Some(limit) };
                    rustix::process::setrlimit(rustix::process::Resource::As, rlimit)?;
                    Ok(())
                });
            }
        }
        let mut child = command.spawn().map_err(|e| format!("cannot start {}: {e}", self.config.exe.display()))?;
        let pid = child.id();
        if let Some(stderr) = child.stderr.take() {
            let tx = self.log_tx.clone();
            let thread = std::thread::Builder::new().name(format!("outboard-log-{pid}")).spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    let line = WorkerLine::parse(&line);
                    if tx.send(Request::WorkerLog { pid, line }).is_err() {
                        break;
                    }
                }
            });
            self.log_threads.retain(|t| !t.is_finished());
            self.log_threads.extend(thread.ok());
        }
        if !hog {
            set_scheduling(pid, libc::SCHED_OTHER, 0, STARTING_NICE);
        }
        let beat = region.status().heartbeat.load(Ordering::Relaxed);
        Ok(Worker {
            generation,
            python_env,
            child,
            region,
            requests,
            replies,
            reassembler: Reassembler::default(),
            slots: vec![Slot::Free; slots],
            hog,
            last_beat: beat,
            last_beat_at: Instant::now(),
            blocks_at_last_beat: 0,
            recent_restarts: VecDeque::new(),
            restart_not_before: None,
            standing: Standing::Starting,
            kept_up: 0,
        })
    }

    fn raise_priority(&mut self, pid: u32, priority: i32) {
        if set_scheduling(pid, libc::SCHED_FIFO, priority, 0) {
            return;
        }
        let fifo_error = std::io::Error::last_os_error();
        let niced = set_scheduling(pid, libc::SCHED_OTHER, 0, RAISED_NICE);
        if !self.priority_warned {
            self.priority_warned = true;
            let fallback =
                if niced { format!("they run at nice {RAISED_NICE}") } else { "they run at normal priority".into() };
            let text =
                format!("outboard: warning: cannot give script workers realtime priority ({fifo_error}); {fallback}");
            // Said on this process's stderr even when the log is not echoed.
            if !self.config.echo_log {
                eprintln!("{text}");
            }
            self.emit(LogRecord { level: LogLevel::Warning, tracks: Vec::new(), text });
        }
    }

    fn publish_pids(&self) {
        *self.shared.pids.lock().expect("pids lock") = self.workers.iter().map(|w| w.child.id()).collect();
        *self.shared.track_pids.lock().expect("pids lock") =
            self.tracks.iter().map(|t| (t.port.config.id, self.workers[t.worker].child.id())).collect();
    }

    /// Reads what workers report on their control rings: scripts loaded,
    /// what they declare.
    fn read_replies(&mut self) {
        let mut declared = Vec::new();
        let buf = &mut self.reply_buf;
        if let Some((spare, ready)) = &mut self.spare {
            while let Ok(len) = spare.replies.try_pop(buf) {
                if let Ok(Some(message)) = spare.reassembler.push(&buf[..len])
                    && message.kind == Kind::ScriptLoaded
                {
                    *ready = true;
                    self.shared.spare_ready.store(spare.child.id(), Ordering::Release);
                }
            }
        }
        for (index, worker) in self.workers.iter_mut().enumerate() {
            while let Ok(len) = worker.replies.try_pop(buf) {
                let Ok(Some(message)) = worker.reassembler.push(&buf[..len]) else { continue };
                if message.kind == Kind::ScriptDeclared {
                    declared.push((index, message.body));
                    continue;
                }
                if message.kind != Kind::ScriptLoaded {
                    continue;
                }
                // Its interpreter is up: from now on it serves blocks, at the
                // priority that keeps them on time.
                if worker.standing == Standing::Starting {
                    worker.standing = Standing::Probation;
                    set_scheduling(worker.child.id(), libc::SCHED_OTHER, 0, RAISED_NICE);
                }
                let body: serde_json::Value = serde_json::from_slice(&message.body).unwrap_or_default();
                let Some(slot) = body["slot"].as_u64() else { continue };
                for track in self.tracks.iter().filter(|t| t.worker == index && t.slot as u64 == slot) {
                    track.port.stats.script_ready.store(true, Ordering::Release);
                }
            }
        }
        for (worker, body) in declared {
            self.take_declaration(worker, &body);
        }
    }

    /// A worker says what a slot's script declares: the track keeps it (and
    /// the names, so a restarted worker places them on the same indices),
    /// and whoever listens hears of it. A malformed one is refused.
    fn take_declaration(&mut self, worker: usize, body: &[u8]) {
        let slot = serde_json::from_slice::<serde_json::Value>(body).ok().and_then(|v| v["slot"].as_u64());
        let parsed = crate::declared::Declaration::from_json(body);
        let Some(entry) = self.tracks.iter_mut().find(|t| t.worker == worker && Some(t.slot as u64) == slot) else {
            return;
        };
        let id = entry.port.config.id;
        let declaration = match parsed {
            Ok(declaration) => declaration,
            Err(why) => {
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

    /// A worker whose tracks were late for most of their last blocks is
    /// hogging its CPU (a busy script): it is demoted to a low priority, so it
    /// delays only its own tracks and not the workers sharing its cores; it is
    /// raised again once it keeps up.
    fn police_hogs(&mut self) {
        for index in 0..self.workers.len() {
            let (mut late, mut blocks) = (0, 0);
            for track in self.tracks.iter_mut().filter(|t| t.worker == index) {
                let now_late = track.port.stats.late_results.load(Ordering::Relaxed);
                let now_blocks = track.port.stats.blocks.load(Ordering::Relaxed);
                // Blocks before the script was loaded (and the first few after,
                // pushed while it loaded) are late for want of a script, not
                // because the worker hogs: judge only from a settled start.
                let settled = match (track.port.stats.script_ready.load(Ordering::Acquire), track.ready_since) {
                    (false, _) => false,
                    (true, None) => {
                        track.ready_since = Some(Instant::now());
                        false
                    }
                    (true, Some(since)) => since.elapsed() > SETTLE_AFTER_LOAD,
                };
                if settled {
                    late += now_late - track.late_seen.min(now_late);
                    blocks += now_blocks - track.blocks_seen.min(now_blocks);
                }
                track.late_seen = now_late;
                track.blocks_seen = now_blocks;
            }
            if blocks < 8 || self.workers[index].hog {
                continue;
            }
            let worker = &mut self.workers[index];
            let pid = worker.child.id();
            let (hogging, keeping_up) = (late * 2 > blocks, late == 0);
            worker.kept_up = if keeping_up { worker.kept_up + 1 } else { 0 };
            if hogging && worker.standing != Standing::Demoted {
                worker.standing = Standing::Demoted;
                set_scheduling(pid, libc::SCHED_OTHER, 0, DEMOTED_NICE);
                self.say(
                    Some(index),
                    LogLevel::Warning,
                    format!("outboard: worker {index} (pid {pid}) is late for most blocks; lowering its priority"),
                );
            } else if worker.kept_up >= PROMOTE_AFTER_WINDOWS && worker.standing != Standing::Raised {
                match self.config.worker_priority {
                    Some(priority) => {
                        worker.standing = Standing::Raised;
                        self.raise_priority(pid, priority);
                    }
                    None if worker.standing == Standing::Demoted => {
                        worker.standing = Standing::Probation;
                        set_scheduling(pid, libc::SCHED_OTHER, 0, RAISED_NICE);
                    }
                    None => {}
                }
            }
        }
    }

    /// Restarts workers that died, hang or whose rings faulted.
    fn watch(&mut self) {
        let now = Instant::now();
        for index in 0..self.workers.len() {
            let blocks: u64 = self
                .tracks
                .iter()
                .filter(|t| t.worker == index)
                .map(|t| t.port.stats.blocks.load(Ordering::Relaxed))
                .sum();
            let worker = &mut self.workers[index];
            let beat = worker.region.status().heartbeat.load(Ordering::Relaxed);
            if beat != worker.last_beat {
                worker.last_beat = beat;
                worker.last_beat_at = now;
                worker.blocks_at_last_beat = blocks;
            } else if matches!(worker.standing, Standing::Probation | Standing::Raised)
                && now.duration_since(worker.last_beat_at) >= STUCK_AFTER
                && blocks > worker.blocks_at_last_beat + 2
            {
                // Stuck in a script call. If that is a busy loop, at the
                // running workers' priority it delays their blocks until the
                // lateness accounting (`police_hogs`, tens of ms) catches it:
                // demote it now; it is raised again once it keeps up.
                worker.standing = Standing::Demoted;
                worker.kept_up = 0;
                let pid = worker.child.id();
                set_scheduling(pid, libc::SCHED_OTHER, 0, DEMOTED_NICE);
                let text =
                    format!("outboard: worker {index} (pid {pid}) is stuck in a script call; lowering its priority");
                self.say(Some(index), LogLevel::Warning, text);
            }
            let worker = &mut self.workers[index];
            let why = if let Ok(Some(status)) = worker.child.try_wait() {
                Some(format!("exited ({status})"))
            } else if !worker.hog
                && worker.slots.iter().any(|s| matches!(s, Slot::Track(_)))
                && now.duration_since(worker.last_beat_at) > self.config.heartbeat_timeout
            {
                Some(format!("stopped beating for {:?}", now.duration_since(worker.last_beat_at)))
            } else if self.tracks.iter().any(|t| t.worker == index && t.port.stats.link_faulted.load(Ordering::Acquire))
            {
                Some("sent malformed data".to_string())
            } else {
                None
            };
            if let Some(why) = why {
                if worker.hog {
                    continue;
                }
                if worker.restart_not_before.is_some_and(|t| now < t) {
                    continue;
                }
                self.restart(index, &why);
            }
        }
    }

    /// Keeps a spare started while any track is scripted (and none while
    /// none is: scanning a plugin starts nothing); replaces one that died.
    fn keep_spare(&mut self) {
        if let Some((spare, _)) = &mut self.spare
            && !matches!(spare.child.try_wait(), Ok(None))
        {
            // It died idle (killed from outside, out of memory): start
            // another, but not in a loop.
            self.spare = None;
            self.shared.spare_ready.store(0, Ordering::Release);
            self.spare_not_before = Some(Instant::now() + Duration::from_secs(1));
        }
        let wanted = self.config.spare_worker && !self.tracks.is_empty();
        if !wanted {
            if let Some((mut spare, _)) = self.spare.take() {
                self.shared.spare_ready.store(0, Ordering::Release);
                let _ = spare.child.kill();
                let _ = spare.child.wait();
            }
            return;
        }
        // Not while a worker with tracks is starting: the spare must not
        // delay a first wet block.
        let starting = self.workers.iter().any(|w| !w.hog && w.standing == Standing::Starting);
        if self.spare.is_some() || starting || self.spare_not_before.is_some_and(|t| Instant::now() < t) {
            return;
        }
        match self.spawn(self.config.slots_per_worker, false, None) {
            Ok(mut spare) => {
                // Warming up is background work, below every worker that serves.
                set_scheduling(spare.child.id(), libc::SCHED_OTHER, 0, SPARE_NICE);
                for fragment in protocol::fragments(Kind::Warm, 0, &[], CONTROL_RING.payload) {
                    let _ = spare.requests.try_push(&fragment);
                }
                self.spare = Some((spare, false));
            }
            Err(e) => {
                self.shared.keep(&format!("outboard: cannot start a spare worker: {e}"), self.config.echo_log);
                self.spare_not_before = Some(Instant::now() + Duration::from_secs(5));
            }
        }
    }

    /// The spare, if it is warm, runs `python_env` and has `slots` slots.
    fn take_spare(&mut self, python_env: &Option<PathBuf>, slots: usize) -> Option<Worker> {
        match &self.spare {
            Some((spare, true)) if spare.python_env == *python_env && spare.slots.len() == slots => {}
            _ => return None,
        }
        let (mut spare, _) = self.spare.take()?;
        self.shared.spare_ready.store(0, Ordering::Release);
        // Its interpreter is up: it serves blocks from now on.
        spare.standing = Standing::Probation;
        set_scheduling(spare.child.id(), libc::SCHED_OTHER, 0, RAISED_NICE);
        spare.last_beat_at = Instant::now();
        Some(spare)
    }

    fn restart(&mut self, index: usize, why: &str) {
        let now = Instant::now();
        let old_pid = self.workers[index].child.id();
        let _ = self.workers[index].child.kill();
        let _ = self.workers[index].child.wait();
        let generation = self.workers[index].generation + 1;
        let slots = self.workers[index].slots.clone();
        let mut recent = std::mem::take(&mut self.workers[index].recent_restarts);
        recent.retain(|t| now.duration_since(*t) < Duration::from_secs(10));
        recent.push_back(now);
        self.retired.push_back((old_pid, index));
        if self.retired.len() > 16 {
            self.retired.pop_front();
        }
        let env = self.workers[index].python_env.clone();
        let warm = self.take_spare(&env, slots.len());
        let from_spare = warm.is_some();
        let spawned = match warm {
            Some(spare) => Ok(spare),
            None => self.spawn_generation(index, slots.len(), false, generation, env),
        };
        let mut fresh = match spawned {
            Ok(worker) => worker,
            Err(e) => {
                self.say(Some(index), LogLevel::Error, format!("outboard: cannot restart worker {index}: {e}"));
                self.workers[index].restart_not_before = Some(now + Duration::from_secs(1));
                self.workers[index].recent_restarts = recent;
                return;
            }
        };
        fresh.slots = slots;
        fresh.generation = generation;
        // Crash-looping: back off 0.5 s, 1 s, 2 s ... up to 10 s.
        if recent.len() >= 3 {
            let backoff = Duration::from_millis(500 << (recent.len() - 3).min(5)).min(Duration::from_secs(10));
            fresh.restart_not_before = Some(now + backoff);
        }
        fresh.recent_restarts = recent;
        let new_pid = fresh.child.id();
        self.workers[index] = fresh;
        for entry in self.tracks.iter_mut().filter(|t| t.worker == index) {
            entry.port.stats.link_faulted.store(false, Ordering::Release);
            entry.port.stats.script_ready.store(false, Ordering::Release);
            entry.ready_since = None;
            Self::connect(&mut self.workers[index], entry);
        }
        self.shared.restarts.fetch_add(1, Ordering::Relaxed);
        self.publish_pids();
        let spare = if from_spare { " (the warm spare)" } else { "" };
        let backing_off = match self.workers[index].restart_not_before {
            Some(t) => format!("; it keeps failing, so the next restart waits {:.1} s", (t - now).as_secs_f64()),
            None => String::new(),
        };
        self.say(
            Some(index),
            LogLevel::Warning,
            format!(
                "outboard: worker {index} (pid {old_pid}) {why}; restarted as pid {new_pid}{spare} (generation {generation}){backing_off}"
            ),
        );
    }
}
