//! Script worker processes in job mode: the Parallel Python equivalent.
//!
//! A [`WorkerPool`] spawns `outboard-scripts-host` processes, one CPython
//! interpreter (and one GIL) each, hands each a shared region of its own, and
//! spreads [`JobRequest`]s over the first `ncpus` of them. It runs on a
//! non-realtime thread: it allocates, spawns and sleeps.
//!
//! The host never blocks on sending: request fragments wait in a per-worker
//! outbox and go out as ring space frees, while replies are drained on every
//! pass. So a worker stuck sending a large reply can always make progress,
//! and a worker that stops reading cannot stall the pool.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::protocol::{self, JobError, JobReply, JobRequest, Kind, Reassembler};
use crate::region::{Region, Wake};
use crate::ring::{Consumer, PopError, Producer, PushError, RingShape};
use crate::stats::{JobStats, StatsRow};

/// The name of the worker binary.
pub const SCRIPTS_HOST_BIN: &str = "outboard-scripts-host";
/// Environment variable that overrides where the worker binary is.
pub const SCRIPTS_HOST_ENV: &str = "OUTBOARD_SCRIPTS_HOST";
/// Ring 0 of a worker's region carries host → worker control messages.
pub const REQUEST_RING: usize = 0;
/// Ring 1 carries worker → host control messages.
pub const REPLY_RING: usize = 1;
/// Ring carrying blocks of track slot `slot` to the worker.
pub fn slot_ring_to_script(slot: usize) -> usize {
    2 + 2 * slot
}

/// Ring carrying results and events of track slot `slot` back.
pub fn slot_ring_from_script(slot: usize) -> usize {
    3 + 2 * slot
}

/// Shape of both control rings.
pub const CONTROL_RING: RingShape = RingShape { capacity: 32, payload: 4096 - 8 };
/// Jobs a worker holds at once: one running, one ready to start.
const JOBS_PER_WORKER: usize = 2;
/// How long the pool sleeps on one worker's replies before looking at the others.
const POLL_SLICE: Duration = Duration::from_millis(2);

/// Finds `outboard-scripts-host`: `$OUTBOARD_SCRIPTS_HOST`, else beside the
/// running executable, else one folder up (where cargo puts test binaries).
pub fn locate_scripts_host() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os(SCRIPTS_HOST_ENV) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!("{SCRIPTS_HOST_ENV}={} does not name a file", path.display()))
        };
    }
    let exe = std::env::current_exe().map_err(|e| format!("cannot find the running executable: {e}"))?;
    let mut tried = Vec::new();
    for dir in exe.ancestors().skip(1).take(2) {
        let candidate = dir.join(SCRIPTS_HOST_BIN);
        if candidate.is_file() {
            return Ok(candidate);
        }
        tried.push(candidate.display().to_string());
    }
    Err(format!(
        "{SCRIPTS_HOST_BIN} not found (tried {}); build it with `cargo build --workspace --bins` or set {SCRIPTS_HOST_ENV}",
        tried.join(", ")
    ))
}

/// The command that starts worker `index` on `region`: the region's memfd
/// inherited (and only it), the worker's arguments, death with the host, and
/// a process group of its own (Ctrl-C at the terminal is for the host, which
/// stops its workers itself; it must not kill them behind its back).
pub fn worker_command(exe: &Path, region: &Region, index: usize) -> Command {
    let generation = region.status().generation.load(Ordering::Acquire);
    let mut command = Command::new(exe);
    let fd = region.pass_to_child(&mut command);
    command.args(["--shm-fd", &fd.to_string(), "--worker", &index.to_string()]).args([
        "--generation",
        &generation.to_string(),
        "--parent-pid",
        &std::process::id().to_string(),
    ]);
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    command
}

/// A job handed to the pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct JobTicket(u64);

/// What went wrong starting a worker.
#[derive(Debug)]
pub struct SpawnError(pub String);

impl fmt::Display for SpawnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SpawnError {}

/// One worker process and the host's ends of its rings.
struct Worker {
    index: usize,
    child: Child,
    requests: Producer,
    replies: Consumer,
    reassembler: Reassembler,
    /// Fragments not yet pushed, oldest first.
    outbox: VecDeque<Vec<u8>>,
    /// Jobs sent to this worker and not yet answered, oldest first.
    running: VecDeque<u64>,
    jobs_done: u64,
    job_seconds: f64,
}

impl Worker {
    fn spawn(exe: &Path, index: usize) -> Result<Worker, SpawnError> {
        let mut region = Region::create_with(&[(CONTROL_RING, Wake::Worker), (CONTROL_RING, Wake::Own)], 1)
            .map_err(|e| SpawnError(format!("cannot create the shared region: {e}")))?;
        let requests = region.producer(REQUEST_RING).expect("fresh region");
        let replies = region.consumer(REPLY_RING).expect("fresh region");
        let child = worker_command(exe, &region, index)
            .spawn()
            .map_err(|e| SpawnError(format!("cannot start {}: {e}", exe.display())))?;
        Ok(Worker {
            index,
            child,
            requests,
            replies,
            reassembler: Reassembler::default(),
            outbox: VecDeque::new(),
            running: VecDeque::new(),
            jobs_done: 0,
            job_seconds: 0.0,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Pushes what the ring has room for. Never blocks.
    fn flush(&mut self) -> Result<(), String> {
        while let Some(fragment) = self.outbox.front() {
            match self.requests.try_push(fragment) {
                Ok(()) => {
                    self.outbox.pop_front();
                }
                Err(PushError::Full) => return Ok(()),
                Err(e) => return Err(format!("request ring: {e:?}")),
            }
        }
        Ok(())
    }

    /// Takes every complete reply waiting. Never blocks.
    fn drain(&mut self, buf: &mut [u8], done: &mut Vec<(u64, Result<Value, JobError>)>) -> Result<(), String> {
        loop {
            let len = match self.replies.try_pop(buf) {
                Ok(len) => len,
                Err(PopError::Empty) => return Ok(()),
                Err(e) => return Err(format!("reply ring: {e:?}")),
            };
            let Some(message) = self.reassembler.push(&buf[..len]).map_err(|e| e.to_string())? else {
                continue;
            };
            if message.kind != Kind::JobReply {
                return Err(format!("unexpected {:?} from the worker", message.kind));
            }
            let Some(pos) = self.running.iter().position(|&id| id == message.id) else {
                return Err(format!("reply to job {} that this worker was not running", message.id));
            };
            self.running.remove(pos);
            let reply = JobReply::from_json(&message.body).map_err(|e| e.to_string())?;
            self.jobs_done += 1;
            self.job_seconds += reply.seconds;
            done.push((message.id, reply.result));
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A pool of script worker processes running jobs, Parallel Python style.
///
/// A worker is killed when the thread that started it ends (the parent-death
/// signal follows the spawning thread: see [`Region::pass_to_child`]), and
/// workers are started by `new`, `set_ncpus` and restarts in `wait`: keep a
/// pool on one thread that outlives it.
pub struct WorkerPool {
    exe: PathBuf,
    workers: Vec<Worker>,
    ncpus: usize,
    queue: VecDeque<(u64, JobRequest)>,
    results: HashMap<u64, Result<Value, JobError>>,
    next_id: u64,
    created: Instant,
    restarts: u64,
    buf: Vec<u8>,
}

impl WorkerPool {
    /// A pool using the worker binary at `exe`, with `ncpus` workers started.
    pub fn new(exe: impl Into<PathBuf>, ncpus: usize) -> Result<WorkerPool, SpawnError> {
        let mut pool = WorkerPool {
            exe: exe.into(),
            workers: Vec::new(),
            ncpus: 0,
            queue: VecDeque::new(),
            results: HashMap::new(),
            next_id: 1,
            created: Instant::now(),
            restarts: 0,
            buf: vec![0; CONTROL_RING.payload],
        };
        pool.set_ncpus(ncpus)?;
        Ok(pool)
    }

    /// Sets how many workers take new jobs, starting processes as needed.
    pub fn set_ncpus(&mut self, ncpus: usize) -> Result<(), SpawnError> {
        let ncpus = ncpus.max(1);
        while self.workers.len() < ncpus {
            let worker = Worker::spawn(&self.exe, self.workers.len())?;
            self.workers.push(worker);
        }
        self.ncpus = ncpus;
        Ok(())
    }

    pub fn ncpus(&self) -> usize {
        self.ncpus
    }

    /// Worker process ids, in worker order.
    pub fn pids(&self) -> Vec<u32> {
        self.workers.iter().map(Worker::pid).collect()
    }

    /// Workers restarted after they died.
    pub fn restarts(&self) -> u64 {
        self.restarts
    }

    /// Queues a job; it starts as soon as one of the first `ncpus` workers has room.
    pub fn submit(&mut self, job: JobRequest) -> JobTicket {
        let id = self.next_id;
        self.next_id += 1;
        self.queue.push_back((id, job));
        self.pump();
        JobTicket(id)
    }

    /// Waits for a job's outcome: its JSON value, or the error with file and line.
    pub fn wait(&mut self, ticket: JobTicket) -> Result<Value, JobError> {
        let mut turn = 0usize;
        loop {
            if let Some(result) = self.results.remove(&ticket.0) {
                return result;
            }
            if !self.queue.iter().any(|(id, _)| *id == ticket.0)
                && !self.workers.iter().any(|w| w.running.contains(&ticket.0))
            {
                return Err(JobError::new(
                    "UnknownJob",
                    format!("job {} was never submitted or already collected", ticket.0),
                ));
            }
            if self.pump() {
                continue;
            }
            // Nothing moved: sleep on one busy worker's replies for a slice,
            // taking turns so every worker is looked at.
            let busy: Vec<usize> = self.workers.iter().filter(|w| !w.running.is_empty()).map(|w| w.index).collect();
            if busy.is_empty() {
                std::thread::sleep(POLL_SLICE);
                continue;
            }
            let index = busy[turn % busy.len()];
            turn += 1;
            let worker = &mut self.workers[index];
            worker.replies.wait_for_message(0, Some(Instant::now() + POLL_SLICE));
            self.reap_dead();
        }
    }

    /// Submits all jobs and waits for all, in order.
    pub fn run_all(&mut self, jobs: impl IntoIterator<Item = JobRequest>) -> Vec<Result<Value, JobError>> {
        let tickets: Vec<JobTicket> = jobs.into_iter().map(|job| self.submit(job)).collect();
        tickets.into_iter().map(|t| self.wait(t)).collect()
    }

    /// Moves messages both ways without blocking; true if anything moved.
    fn pump(&mut self) -> bool {
        let mut moved = false;
        let mut done = Vec::new();
        let mut broken = Vec::new();
        for worker in &mut self.workers {
            let before = done.len();
            if let Err(why) = worker.drain(&mut self.buf, &mut done) {
                broken.push((worker.index, why));
                continue;
            }
            moved |= done.len() > before;
        }
        for (id, result) in done {
            self.results.insert(id, result);
        }
        // Hand queued jobs to the least busy of the first `ncpus` workers.
        while let Some((id, _)) = self.queue.front() {
            let id = *id;
            let Some(worker) = self.workers[..self.ncpus]
                .iter_mut()
                .filter(|w| w.running.len() < JOBS_PER_WORKER)
                .min_by_key(|w| w.running.len())
            else {
                break;
            };
            let (_, job) = self.queue.pop_front().expect("front exists");
            worker.outbox.extend(protocol::fragments(Kind::JobRequest, id, &job.to_json(), CONTROL_RING.payload));
            worker.running.push_back(id);
            moved = true;
        }
        for worker in &mut self.workers {
            if let Err(why) = worker.flush() {
                broken.push((worker.index, why));
            }
        }
        for (index, why) in broken {
            self.replace_worker(index, &format!("faulted ({why})"));
            moved = true;
        }
        moved
    }

    /// Replaces workers whose process has exited, failing their jobs.
    fn reap_dead(&mut self) {
        let dead: Vec<(usize, String)> = self
            .workers
            .iter_mut()
            .filter_map(|w| match w.child.try_wait() {
                Ok(Some(status)) => Some((w.index, format!("died ({status})"))),
                _ => None,
            })
            .collect();
        for (index, why) in dead {
            self.replace_worker(index, &why);
        }
    }

    /// Kills worker `index`, fails its running jobs with `why`, starts a new one.
    fn replace_worker(&mut self, index: usize, why: &str) {
        let old = &mut self.workers[index];
        let pid = old.pid();
        old.kill();
        for id in old.running.drain(..) {
            self.results.insert(
                id,
                Err(JobError::new("WorkerDied", format!("worker {index} (pid {pid}) {why} while running this job"))),
            );
        }
        let (jobs_done, job_seconds) = (old.jobs_done, old.job_seconds);
        match Worker::spawn(&self.exe, index) {
            Ok(mut fresh) => {
                fresh.jobs_done = jobs_done;
                fresh.job_seconds = job_seconds;
                self.workers[index] = fresh;
                self.restarts += 1;
            }
            Err(e) => {
                // Keep the dead worker's slot; its next job fails the same way.
                eprintln!("outboard: cannot restart worker {index}: {e}");
            }
        }
    }

    /// The statistics table: one row per worker process.
    pub fn stats(&self) -> JobStats {
        let rows = self
            .workers
            .iter()
            .map(|w| StatsRow {
                worker: format!("python worker {} (pid {})", w.index, w.pid()),
                jobs: w.jobs_done,
                seconds: w.job_seconds,
            })
            .collect();
        JobStats { rows, elapsed: self.created.elapsed() }
    }
}

impl Drop for WorkerPool {
    fn drop(&mut self) {
        for worker in &mut self.workers {
            let bye = protocol::fragments(Kind::Shutdown, 0, &[], CONTROL_RING.payload);
            let _ = worker.requests.try_push(&bye[0]);
        }
        let deadline = Instant::now() + Duration::from_millis(500);
        for worker in &mut self.workers {
            while Instant::now() < deadline {
                if let Ok(Some(_)) = worker.child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            worker.kill();
        }
    }
}
