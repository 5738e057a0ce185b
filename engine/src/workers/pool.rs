//! Script worker processes in job mode: the Parallel Python equivalent.
//!
//! A [`WorkerPool`] spawns `outboard-scripts-host` processes, one CPython
//! interpreter (and one GIL) each, hands each a shared region of its own, and
//! spreads [`JobRequest`]s over the first `ncpus` of them. It runs on
//! non-realtime threads: it allocates, spawns and sleeps.
//!
//! # Threads
//!
//! `WorkerPool` is `Send` and `Sync`, and every method takes `&self`: one
//! pool can be shared (in an `Arc`, or borrowed by scoped threads) and used
//! from any number of threads at once, and moved to another thread. Its
//! state sits behind one mutex, held only for non-blocking work (encoding,
//! pushing and draining rings); no thread holds it while it sleeps. A thread
//! in [`WorkerPool::wait`] whose job is not done either drives the pool
//! (sleeps on every busy worker's reply ring at once, then collects what
//! came) or, while another thread drives, waits to be told that results came
//! in. [`JobTicket`] is `Copy`, `Send` and `Sync`: a job submitted on one
//! thread can be waited for on another. Workers are started by a thread of
//! the pool's own, which lives as long as the pool: a worker's parent-death
//! signal follows the thread that started it, so no caller's thread ending
//! can take the workers with it.
//!
//! # Scheduling
//!
//! Jobs wait in the pool's queue until a worker has room; each worker holds
//! a queue of its own, as deep as about [`QUEUED_WORK`] of work (from the
//! job times seen so far), between 2 (one running, one ready) and
//! [`MAX_JOBS_PER_WORKER`]: trivial jobs stream without a round trip each,
//! long ones are not stuck behind each other on one worker while another is
//! idle. A job goes to the least busy worker, ties taken in turn, so jobs
//! submitted one at a time spread over the workers too. Results are kept by
//! job id until collected; nothing is scanned per job.
//!
//! The host never blocks on sending: request fragments wait in a per-worker
//! outbox and go out as ring space frees, while replies are drained on every
//! pass. So a worker stuck sending a large reply can always make progress,
//! and a worker that stops reading cannot stall the pool.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::process::{Launch, Launcher, SpawnError, WorkerProcess, shut_down};
use crate::measurement::stats::{JobStats, StatsRow};
use crate::shm::ring::{PushError, RingWatch, sleep_until_any};
use crate::wire::control::{JobError, JobReply, JobRequest, Json, Reply, Request};

/// Most jobs one worker holds at once (running, and queued in its rings).
pub const MAX_JOBS_PER_WORKER: usize = 64;
/// Fewest: one running, one ready to start the moment it ends.
const MIN_JOBS_PER_WORKER: usize = 2;
/// How much work (by the job times seen) a worker's own queue holds: enough
/// that it never waits for the host between trivial jobs, little enough
/// that long jobs are not queued behind each other while a worker idles.
pub const QUEUED_WORK: Duration = Duration::from_millis(2);
/// The longest a driving waiter sleeps before looking for dead workers.
const POLL_SLICE: Duration = Duration::from_millis(20);
/// Jobs' worth of time a waiter sleeps on a timer while every busy worker
/// holds twice as many queued (see `State::batch_nap`), and the bounds on
/// that sleep: longer jobs are waited for with a wake-up each.
const BATCH_JOBS: usize = 16;
const MIN_BATCH_NAP: Duration = Duration::from_micros(50);
const MAX_BATCH_NAP: Duration = Duration::from_micros(500);
/// How long a waiter polls before sleeping, when a core is free for it:
/// a job's round trip is shorter than a sleep and a wake-up.
const SPIN: Duration = Duration::from_micros(30);

/// A job handed to the pool: its id. `Copy`, and good on any thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct JobTicket(u64);

impl JobTicket {
    /// The job's id: 1 for the pool's first job, then counting up.
    pub fn id(self) -> u64 {
        self.0
    }
}

/// One worker process and what the pool knows of it.
struct Worker {
    index: usize,
    process: WorkerProcess,
    watch: RingWatch,
    /// Fragments not yet pushed, oldest first.
    outbox: VecDeque<Vec<u8>>,
    /// Jobs sent to this worker and not yet answered, oldest first.
    running: VecDeque<u64>,
    jobs_done: u64,
    job_seconds: f64,
}

impl Worker {
    fn spawn(launcher: &Launcher, launch: &Launch, index: usize) -> Result<Worker, SpawnError> {
        let process = launcher.start_worker(launch, index, 1, Vec::new(), None)?;
        Ok(Worker {
            index,
            watch: process.reply_watch(),
            process,
            outbox: VecDeque::new(),
            running: VecDeque::new(),
            jobs_done: 0,
            job_seconds: 0.0,
        })
    }

    fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Pushes what the ring has room for. Never blocks.
    fn flush(&mut self) -> Result<(), String> {
        while let Some(fragment) = self.outbox.front() {
            match self.process.requests.try_push(fragment) {
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
    fn drain(&mut self, done: &mut Vec<(u64, JobReply)>) -> Result<(), String> {
        while let Some(reply) = self.process.try_reply()? {
            let (id, body) = match reply {
                Reply::Job { id, body } => (id, body),
                other => return Err(format!("unexpected {other:?} from the worker")),
            };
            // Replies come in order: the answered job is the oldest, unless
            // the worker lies.
            let Some(pos) = self.running.iter().position(|&running| running == id) else {
                return Err(format!("reply to job {id} that this worker was not running"));
            };
            self.running.remove(pos);
            let reply = body.decode().map_err(|e| e.to_string())?;
            self.jobs_done += 1;
            self.job_seconds += reply.seconds;
            done.push((id, reply));
        }
        Ok(())
    }
}
/// Where a submitted job stands.
enum JobState {
    /// Queued in the pool or sent to a worker.
    Pending,
    Done(Result<Value, JobError>),
    /// Handed to a waiter.
    Collected,
}

/// Every job from the oldest not yet collected on, by id: ids count up from
/// 1, so a job's entry is found by subtraction (no hashing, no search), and
/// the entries of collected jobs are dropped from the front as it clears.
struct JobTable {
    /// The id of `states[0]`.
    first: u64,
    states: VecDeque<JobState>,
}

impl JobTable {
    fn get_mut(&mut self, id: u64) -> Option<&mut JobState> {
        let index = usize::try_from(id.checked_sub(self.first)?).ok()?;
        self.states.get_mut(index).filter(|s| !matches!(s, JobState::Collected))
    }

    /// Appends the next job's entry; its id is `first + len` (the caller's next id).
    fn push(&mut self) {
        self.states.push_back(JobState::Pending);
    }

    /// Takes a finished job's result, marking it collected.
    fn collect(&mut self, id: u64) -> Option<Result<Value, JobError>> {
        let state = self.get_mut(id)?;
        let JobState::Done(result) = std::mem::replace(state, JobState::Collected) else {
            unreachable!("only done jobs are collected")
        };
        while matches!(self.states.front(), Some(JobState::Collected)) {
            self.states.pop_front();
            self.first += 1;
        }
        Some(result)
    }
}

/// Everything behind the pool's mutex.
struct State {
    workers: Vec<Worker>,
    ncpus: usize,
    /// Jobs no worker had room for yet, oldest first, encoded.
    queue: VecDeque<(u64, Json<JobRequest>)>,
    /// Every job submitted and not yet collected, by id.
    jobs: JobTable,
    next_id: u64,
    /// Where the search for the next job's worker starts (ties go in turn).
    next_worker: usize,
    /// Smoothed seconds per job, from the workers' replies (None: none yet).
    job_seconds: Option<f64>,
    restarts: u64,
    /// A waiter is asleep on the workers' replies, without the lock.
    driving: bool,
    /// Bumped whenever results are stored, for waiters that do not drive.
    results_seen: u64,
    /// When workers were last checked for death.
    last_reap: Instant,
    done: Vec<(u64, JobReply)>,
}

impl State {
    /// Jobs one worker may hold, from the job times seen so far.
    fn depth(&self) -> usize {
        match self.job_seconds {
            None => MIN_JOBS_PER_WORKER,
            Some(seconds) => {
                let fit = QUEUED_WORK.as_secs_f64() / seconds.max(1e-9);
                (fit as usize).clamp(MIN_JOBS_PER_WORKER, MAX_JOBS_PER_WORKER)
            }
        }
    }

    /// Moves messages both ways without blocking; true if any result came
    /// in. Workers whose rings fault are replaced.
    fn pump(&mut self, launcher: &Launcher, launch: &Launch) -> bool {
        let mut broken = Vec::new();
        for worker in &mut self.workers {
            if let Err(why) = worker.drain(&mut self.done) {
                broken.push((worker.index, why));
            }
        }
        let got = !self.done.is_empty();
        for (id, reply) in self.done.drain(..) {
            // Smoothed over about the last 16 jobs.
            let seconds = reply.seconds.max(0.0);
            self.job_seconds = Some(self.job_seconds.map_or(seconds, |s| s + (seconds - s) / 16.0));
            if let Some(state) = self.jobs.get_mut(id) {
                *state = JobState::Done(reply.result);
            }
        }
        self.dispatch();
        for worker in &mut self.workers {
            if let Err(why) = worker.flush() {
                broken.push((worker.index, why));
            }
        }
        for (index, why) in broken {
            self.replace_worker(launcher, launch, index, &format!("faulted ({why})"));
        }
        if got {
            self.results_seen += 1;
        }
        got
    }

    /// Hands queued jobs to the least busy of the first `ncpus` workers,
    /// ties in turn, each up to the current depth.
    fn dispatch(&mut self) {
        let depth = self.depth();
        let n = self.ncpus.min(self.workers.len());
        while !self.queue.is_empty() && n > 0 {
            let mut best: Option<(usize, usize)> = None;
            for k in 0..n {
                let index = (self.next_worker + k) % n;
                let load = self.workers[index].running.len();
                if load < depth && best.is_none_or(|(_, least)| load < least) {
                    best = Some((index, load));
                }
            }
            let Some((index, _)) = best else { break };
            self.next_worker = (index + 1) % n;
            let (id, body) = self.queue.pop_front().expect("not empty");
            let worker = &mut self.workers[index];
            worker.outbox.extend(Request::Job { id, body }.fragments());
            worker.running.push_back(id);
        }
    }

    /// Replaces workers whose process has exited, failing their jobs.
    fn reap_dead(&mut self, launcher: &Launcher, launch: &Launch) {
        self.last_reap = Instant::now();
        let dead: Vec<(usize, String)> = self
            .workers
            .iter_mut()
            .filter_map(|w| w.process.exited().map(|status| (w.index, format!("died ({status})"))))
            .collect();
        for (index, why) in dead {
            self.replace_worker(launcher, launch, index, &why);
        }
    }

    /// Kills worker `index`, fails its running jobs with `why`, starts a new one.
    fn replace_worker(&mut self, launcher: &Launcher, launch: &Launch, index: usize, why: &str) {
        let old = &mut self.workers[index];
        let pid = old.pid();
        old.process.kill();
        old.outbox.clear();
        for id in old.running.drain(..) {
            if let Some(state) = self.jobs.get_mut(id) {
                *state = JobState::Done(Err(JobError::new(
                    "WorkerDied",
                    format!("worker {index} (pid {pid}) {why} while running this job"),
                )));
            }
        }
        self.results_seen += 1;
        let (jobs_done, job_seconds) = (old.jobs_done, old.job_seconds);
        match Worker::spawn(launcher, launch, index) {
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

    /// How long to sleep on a timer instead of being woken by each result:
    /// while every busy worker holds a queue of short jobs, about
    /// [`BATCH_JOBS`] jobs' time (by the job times seen), so results are
    /// collected a batch at a time and the queues refilled long before they
    /// (or the reply rings, 32 slots) run out. `None`: sleep until woken.
    fn batch_nap(&self) -> Option<Duration> {
        let seconds = self.job_seconds?;
        let busy = self.workers.iter().filter(|w| !w.running.is_empty());
        let deep = busy.clone().count() > 0 && busy.clone().all(|w| w.running.len() >= 2 * BATCH_JOBS);
        let nap = Duration::from_secs_f64(seconds * BATCH_JOBS as f64);
        (deep && nap <= MAX_BATCH_NAP).then(|| nap.max(MIN_BATCH_NAP))
    }

    /// Jobs sent to workers and not answered yet.
    fn in_flight(&self) -> usize {
        self.workers.iter().map(|w| w.running.len()).sum()
    }
}

/// A pool of script worker processes running jobs, Parallel Python style.
/// `Send + Sync`: see the module docs for using it from many threads.
pub struct WorkerPool {
    launch: Launch,
    state: Mutex<State>,
    /// Signalled when results are stored or the driver steps down.
    changed: Condvar,
    launcher: Launcher,
    created: Instant,
    /// Cores on this machine: whether a waiter may poll instead of sleeping.
    cores: usize,
}

impl WorkerPool {
    /// A pool using the worker binary at `exe`, with `ncpus` workers started
    /// (no memory limit; their stderr is this process's).
    ///
    /// ```
    /// use outboard_engine::wire::control::JobRequest;
    /// use outboard_engine::workers::pool::WorkerPool;
    /// use outboard_engine::workers::process::locate_scripts_host;
    /// use serde_json::json;
    ///
    /// let dir = std::env::temp_dir().join(format!("outboard-doc-pool-{}", std::process::id()));
    /// std::fs::create_dir_all(&dir)?;
    /// let script = dir.join("jobs.py");
    /// std::fs::write(&script, "def square(x):\n    return x * x\n")?;
    ///
    /// let pool = WorkerPool::new(locate_scripts_host(None)?, 2)?;
    /// let results = pool.run_all((0..4).map(|x| JobRequest::new(&script, "square", vec![json!(x)])));
    /// let squares: Vec<i64> = results.into_iter().map(|r| r.unwrap().as_i64().unwrap()).collect();
    /// assert_eq!(squares, [0, 1, 4, 9]);
    /// # drop(pool);
    /// # std::fs::remove_dir_all(&dir)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new(exe: impl Into<PathBuf>, ncpus: usize) -> Result<WorkerPool, SpawnError> {
        WorkerPool::with_launch(Launch::new(exe), ncpus)
    }

    /// A pool whose workers are started as `launch` says, `ncpus` of them now.
    pub fn with_launch(launch: Launch, ncpus: usize) -> Result<WorkerPool, SpawnError> {
        let pool = WorkerPool {
            launch,
            state: Mutex::new(State {
                workers: Vec::new(),
                ncpus: 0,
                queue: VecDeque::new(),
                jobs: JobTable { first: 1, states: VecDeque::new() },
                next_id: 1,
                next_worker: 0,
                job_seconds: None,
                restarts: 0,
                driving: false,
                results_seen: 0,
                last_reap: Instant::now(),
                done: Vec::new(),
            }),
            changed: Condvar::new(),
            launcher: Launcher::start()?,
            created: Instant::now(),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        pool.set_ncpus(ncpus)?;
        Ok(pool)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the state as consistent as
        // any pass of `pump` does; keep serving.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Sets how many workers take new jobs, starting processes as needed.
    pub fn set_ncpus(&self, ncpus: usize) -> Result<(), SpawnError> {
        let ncpus = ncpus.max(1);
        let mut state = self.lock();
        while state.workers.len() < ncpus {
            let index = state.workers.len();
            let worker = Worker::spawn(&self.launcher, &self.launch, index)?;
            state.workers.push(worker);
        }
        state.ncpus = ncpus;
        state.pump(&self.launcher, &self.launch);
        Ok(())
    }

    /// How many workers take new jobs (see [`WorkerPool::set_ncpus`]).
    pub fn ncpus(&self) -> usize {
        self.lock().ncpus
    }

    /// Worker process ids, in worker order.
    pub fn pids(&self) -> Vec<u32> {
        self.lock().workers.iter().map(Worker::pid).collect()
    }

    /// Workers restarted after they died.
    pub fn restarts(&self) -> u64 {
        self.lock().restarts
    }

    /// Queues a job; it starts as soon as one of the first `ncpus` workers
    /// has room. Never blocks on the workers.
    pub fn submit(&self, job: JobRequest) -> JobTicket {
        let body = Json::new(&job);
        let mut state = self.lock();
        let id = state.next_id;
        state.next_id += 1;
        state.jobs.push();
        state.queue.push_back((id, body));
        if state.pump(&self.launcher, &self.launch) {
            self.changed.notify_all();
        }
        JobTicket(id)
    }

    /// The job's outcome if it is done (it is then collected), else `None`.
    /// Never blocks on the workers.
    pub fn try_result(&self, ticket: JobTicket) -> Option<Result<Value, JobError>> {
        let mut state = self.lock();
        if state.pump(&self.launcher, &self.launch) {
            self.changed.notify_all();
        }
        match Self::take(&mut state, ticket) {
            Ok(outcome) => outcome,
            Err(unknown) => Some(Err(unknown)),
        }
    }

    /// Takes a finished job's result out of the state: Ok(None) while it
    /// is pending, Err for a ticket never submitted or already collected.
    fn take(state: &mut State, ticket: JobTicket) -> Result<Option<Result<Value, JobError>>, JobError> {
        match state.jobs.get_mut(ticket.0) {
            None | Some(JobState::Collected) => {
                Err(JobError::new("UnknownJob", format!("job {} was never submitted or already collected", ticket.0)))
            }
            Some(JobState::Pending) => Ok(None),
            Some(JobState::Done(_)) => Ok(state.jobs.collect(ticket.0)),
        }
    }

    /// Waits for a job's outcome: its JSON value, or the error with file and
    /// line. Any thread may wait for any job; each job's result is handed out
    /// once (a second wait says `UnknownJob`).
    ///
    /// ```
    /// # use outboard_engine::wire::control::JobRequest;
    /// # use outboard_engine::workers::pool::WorkerPool;
    /// # use outboard_engine::workers::process::locate_scripts_host;
    /// # let dir = std::env::temp_dir().join(format!("outboard-doc-wait-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir)?;
    /// let script = dir.join("jobs.py");
    /// std::fs::write(&script, "def ratio(a, b):\n    return a / b\n")?;
    /// let pool = WorkerPool::new(locate_scripts_host(None)?, 1)?;
    /// let ok = pool.submit(JobRequest::new(&script, "ratio", vec![1.into(), 4.into()]));
    /// let bad = pool.submit(JobRequest::new(&script, "ratio", vec![1.into(), 0.into()]));
    /// assert_eq!(pool.wait(ok).unwrap(), 0.25);
    /// // A script's exception comes back as an error, with where it happened.
    /// let error = pool.wait(bad).unwrap_err();
    /// assert_eq!(error.kind, "ZeroDivisionError");
    /// assert_eq!(error.line, Some(2));
    /// // Each result is handed out once.
    /// assert_eq!(pool.wait(ok).unwrap_err().kind, "UnknownJob");
    /// # drop(pool);
    /// # std::fs::remove_dir_all(&dir)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn wait(&self, ticket: JobTicket) -> Result<Value, JobError> {
        let mut state = self.lock();
        loop {
            match Self::take(&mut state, ticket) {
                Ok(Some(result)) => return result,
                Err(e) => return Err(e),
                Ok(None) => {}
            }
            if state.pump(&self.launcher, &self.launch) {
                self.changed.notify_all();
                // Let other threads in (to submit, or collect what came)
                // before looking again.
                drop(state);
                state = self.lock();
                continue;
            }
            if state.driving {
                // Another waiter sleeps on the workers; it tells us when
                // results come in (or when it stops driving).
                let seen = state.results_seen;
                state = self
                    .changed
                    .wait_while(state, |s| s.driving && s.results_seen == seen)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                continue;
            }
            // Drive: sleep on every worker's replies at once, without the lock.
            state.driving = true;
            if let Some(nap) = state.batch_nap() {
                // Every busy worker has a queue: no result is worth a wake-up
                // each (a syscall for the worker, a context switch here).
                // Sleep on a timer and collect them in a batch, long before
                // a worker's queue or its reply ring can run out.
                drop(state);
                std::thread::sleep(nap);
                state = self.lock();
                state.driving = false;
                if state.last_reap.elapsed() >= POLL_SLICE {
                    state.reap_dead(&self.launcher, &self.launch);
                }
                self.changed.notify_all();
                continue;
            }
            let watches: Vec<RingWatch> = state.workers.iter().map(|w| w.watch.clone()).collect();
            // Poll first if a core is free for it: most of a short job's
            // round trip would otherwise go to falling asleep and waking.
            let spin = state.in_flight() < self.cores;
            drop(state);
            let mut ready = false;
            if spin {
                let until = Instant::now() + SPIN;
                while !ready && Instant::now() < until {
                    ready = watches.iter().any(RingWatch::looks_ready);
                    // Yield, not spin: the worker may need this core.
                    std::thread::yield_now();
                }
            }
            if !ready {
                ready = sleep_until_any(&watches, Some(Instant::now() + POLL_SLICE));
            }
            drop(watches);
            state = self.lock();
            state.driving = false;
            if !ready || state.last_reap.elapsed() >= POLL_SLICE {
                state.reap_dead(&self.launcher, &self.launch);
            }
            self.changed.notify_all();
        }
    }

    /// Submits all jobs and waits for all; results in submission order.
    pub fn run_all(&self, jobs: impl IntoIterator<Item = JobRequest>) -> Vec<Result<Value, JobError>> {
        let tickets: Vec<JobTicket> = jobs.into_iter().map(|job| self.submit(job)).collect();
        tickets.into_iter().map(|t| self.wait(t)).collect()
    }

    /// The statistics table: one row per worker process.
    pub fn stats(&self) -> JobStats {
        let state = self.lock();
        let rows = state
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
        let state = self.state.get_mut().unwrap_or_else(|poisoned| poisoned.into_inner());
        shut_down(state.workers.iter_mut().map(|w| &mut w.process), Duration::from_millis(500));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn the_pool_and_its_tickets_can_be_shared_between_threads() {
        assert_send_sync::<WorkerPool>();
        assert_send_sync::<JobTicket>();
        assert_send_sync::<RingWatch>();
    }

    #[test]
    fn the_job_table_finds_jobs_by_id_and_forgets_collected_ones() {
        let mut table = JobTable { first: 1, states: VecDeque::new() };
        for _ in 0..4 {
            table.push();
        }
        for id in [3, 1] {
            *table.get_mut(id).unwrap() = JobState::Done(Ok(Value::from(id)));
        }
        assert!(matches!(table.get_mut(2), Some(JobState::Pending)));
        assert!(table.get_mut(0).is_none() && table.get_mut(5).is_none(), "never submitted");
        assert_eq!(table.collect(3).unwrap().unwrap(), Value::from(3));
        assert!(table.get_mut(3).is_none(), "collected once");
        assert_eq!(table.collect(1).unwrap().unwrap(), Value::from(1));
        assert_eq!((table.first, table.states.len()), (2, 3), "the collected front is dropped");
        *table.get_mut(2).unwrap() = JobState::Done(Ok(Value::Null));
        assert!(table.collect(2).is_some());
        assert_eq!((table.first, table.states.len()), (4, 1), "and everything collected behind it");
    }
}
