//! A job server in Parallel Python's shape (`set_ncpus`, `submit`, results,
//! statistics) for the native partial-sum kernel.
//!
//! # Guarantees
//!
//! - [`JobServer::submit`] and [`JobServer::try_result`] are wait-free and
//!   allocation-free: a job is two integers written into a pre-allocated slot
//!   and published with one atomic store; the only syscall is a non-blocking
//!   futex wake, and only when a worker said it is asleep. A realtime thread may
//!   call them (DESIGN.md §5).
//! - Worker threads claim jobs with a compare-and-swap on a shared counter (no
//!   lock), spin briefly when idle, then sleep on a doorbell of their own
//!   (`crate::shm::doorbell`), as the waiter does.
//! - [`JobServer::wait`] may sleep; realtime callers poll `try_result` instead.
//! - `set_ncpus`, creation and drop spawn and join threads: not realtime-safe.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering, fence};
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_utils::CachePadded;

use super::kernel::partial_sum;
use crate::measurement::stats::{JobStats, StatsRow};
use crate::shm::doorbell::{Doorbell, Private};

/// Idle polls before a worker parks.
const SPINS_BEFORE_PARKING: u32 = 2_000;
/// Polls before a waiter sleeps: short, since on a small machine a spinning
/// waiter takes a core from the workers it waits for.
const WAITER_SPINS: u32 = 100;

/// A submitted job: its sequence number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct JobId(u64);

/// Why a job's result cannot be had.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobServerError {
    /// `capacity` jobs are outstanding; collect some first.
    Full,
    /// The job's slot has been reused by a later job; its result is gone.
    Expired,
}

struct JobSlot {
    start: AtomicU64,
    end: AtomicU64,
    result: AtomicU64,
    /// `seq + 1` once job `seq` is done: tagged, so a reused slot is told apart.
    done: AtomicU64,
}

/// `waiting_for` when no waiter is asleep.
const NOBODY: u64 = u64::MAX;

#[derive(Default)]
struct WorkerCounters {
    jobs: AtomicU64,
    nanos: AtomicU64,
}

struct Shared {
    slots: Box<[JobSlot]>,
    /// Jobs `0..published` are submitted.
    published: CachePadded<AtomicU64>,
    /// Jobs `0..claimed` are taken by a worker.
    claimed: CachePadded<AtomicU64>,
    /// Workers with an index below this take jobs (`set_ncpus`).
    active: AtomicUsize,
    /// One doorbell per worker thread, so a submit wakes one sleeper, not all.
    parking: Box<[CachePadded<Doorbell<Private>>]>,
    /// Where the waiter in [`JobServer::wait`] sleeps.
    waiter: Doorbell<Private>,
    /// The job the waiter sleeps for (`NOBODY` when it is not asleep): only
    /// that job's completion rings its doorbell.
    waiting_for: AtomicU64,
    shutdown: AtomicBool,
    counters: Box<[CachePadded<WorkerCounters>]>,
}

impl Shared {
    fn has_work_for(&self, index: usize) -> bool {
        index < self.active.load(Ordering::Acquire)
            && self.claimed.load(Ordering::Acquire) < self.published.load(Ordering::Acquire)
    }

    /// Wakes one sleeping active worker, if any: called after publishing a job.
    /// Bounded by the thread count; the only syscall is one FUTEX_WAKE.
    fn wake_one_worker(&self) {
        let active = self.active.load(Ordering::Relaxed).min(self.parking.len());
        Doorbell::ring_first(self.parking[..active].iter().map(|park| &**park));
    }

    /// Wakes every sleeping worker (ncpus changed, or shutting down): each
    /// looks again at what it should do. Not realtime.
    fn wake_all_workers(&self) {
        Doorbell::ring_each(self.parking.iter().map(|park| &**park));
    }
}

/// The native job server. Owned by one thread (submission takes `&mut self`).
pub struct JobServer {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    next: u64,
    created: Instant,
}

impl JobServer {
    /// A server with room for `capacity` outstanding jobs and up to `max_threads`
    /// worker threads, starting `ncpus` of them.
    ///
    /// ```
    /// use outboard_engine::compute::{JobServer, partial_sum_scalar};
    ///
    /// // Parallel Python's example: the sum split into parts, one job each.
    /// let mut server = JobServer::new(2, 2, 16);
    /// let jobs: Vec<_> = [(1, 25_000), (25_000, 50_000)]
    ///     .into_iter()
    ///     .map(|(start, end)| server.submit(start, end).unwrap())
    ///     .collect();
    /// let total: f64 = jobs.into_iter().map(|job| server.wait(job).unwrap()).sum();
    /// assert!((total - partial_sum_scalar(1, 50_000)).abs() < 1e-9);
    /// ```
    pub fn new(ncpus: usize, max_threads: usize, capacity: usize) -> JobServer {
        let max_threads = max_threads.max(1);
        let slots = (0..capacity.max(1))
            .map(|_| JobSlot {
                start: AtomicU64::new(0),
                end: AtomicU64::new(0),
                result: AtomicU64::new(0),
                done: AtomicU64::new(0),
            })
            .collect();
        let counters = (0..max_threads).map(|_| CachePadded::new(WorkerCounters::default())).collect();
        let parking = (0..max_threads).map(|_| CachePadded::new(Doorbell::new())).collect();
        let shared = Arc::new(Shared {
            slots,
            published: CachePadded::new(AtomicU64::new(0)),
            claimed: CachePadded::new(AtomicU64::new(0)),
            active: AtomicUsize::new(0),
            parking,
            waiter: Doorbell::new(),
            waiting_for: AtomicU64::new(NOBODY),
            shutdown: AtomicBool::new(false),
            counters,
        });
        let mut server = JobServer { shared, threads: Vec::new(), next: 0, created: Instant::now() };
        server.set_ncpus(ncpus);
        server
    }

    /// Sets how many worker threads take jobs (at least 1, at most the maximum
    /// given at creation), starting threads as needed. Not realtime-safe.
    ///
    /// ```
    /// # use outboard_engine::compute::JobServer;
    /// let mut server = JobServer::new(1, 4, 8);
    /// server.set_ncpus(3);
    /// assert_eq!(server.ncpus(), 3);
    /// server.set_ncpus(99); // at most the maximum given at creation
    /// assert_eq!(server.ncpus(), 4);
    /// ```
    pub fn set_ncpus(&mut self, ncpus: usize) {
        let ncpus = ncpus.clamp(1, self.shared.counters.len());
        while self.threads.len() < ncpus {
            let index = self.threads.len();
            let shared = self.shared.clone();
            let handle = std::thread::Builder::new()
                .name(format!("outboard-compute-{index}"))
                .spawn(move || worker_loop(&shared, index))
                .expect("spawning a compute thread");
            self.threads.push(handle);
        }
        self.shared.active.store(ncpus, Ordering::Release);
        self.shared.wake_all_workers();
    }

    /// Worker threads taking jobs.
    pub fn ncpus(&self) -> usize {
        self.shared.active.load(Ordering::Acquire)
    }

    /// Submits the partial sum over `start..end`. Wait-free and allocation-free.
    /// `Full` while `capacity` submitted jobs are unfinished.
    ///
    /// ```
    /// # use outboard_engine::compute::{JobServer, JobServerError};
    /// let mut server = JobServer::new(1, 1, 2);
    /// let first = server.submit(1, 1_000_000).unwrap();
    /// let second = server.submit(1, 1_000_000).unwrap();
    /// // Room for two: a third waits until the first is done.
    /// server.wait(first).unwrap();
    /// let third = loop {
    ///     match server.submit(1, 10) {
    ///         Ok(job) => break job,
    ///         Err(JobServerError::Full) => std::thread::yield_now(),
    ///         Err(e) => panic!("{e:?}"),
    ///     }
    /// };
    /// server.wait(second).unwrap();
    /// server.wait(third).unwrap();
    /// ```
    pub fn submit(&mut self, start: u64, end: u64) -> Result<JobId, JobServerError> {
        let seq = self.next;
        let capacity = self.shared.slots.len() as u64;
        let slot = &self.shared.slots[(seq % capacity) as usize];
        // The slot's previous job (seq - capacity) must be finished before reuse.
        if seq >= capacity && slot.done.load(Ordering::Acquire) != seq - capacity + 1 {
            return Err(JobServerError::Full);
        }
        slot.start.store(start, Ordering::Relaxed);
        slot.end.store(end, Ordering::Relaxed);
        self.next += 1;
        // Release: a worker that sees `published` > seq sees the slot's fields.
        self.shared.published.store(self.next, Ordering::Release);
        self.shared.wake_one_worker();
        Ok(JobId(seq))
    }

    /// The job's result if it is done. Wait-free: a realtime thread polls
    /// here, once per period, rather than waiting. `Expired` once
    /// `capacity` later jobs have reused its slot.
    ///
    /// ```
    /// # use outboard_engine::compute::{JobServer, partial_sum};
    /// let mut server = JobServer::new(1, 1, 4);
    /// let job = server.submit(1, 10_000).unwrap();
    /// let result = loop {
    ///     if let Some(result) = server.try_result(job).unwrap() {
    ///         break result;
    ///     }
    ///     std::thread::yield_now(); // a realtime caller: the next period
    /// };
    /// assert_eq!(result, partial_sum(1, 10_000));
    /// ```
    pub fn try_result(&self, job: JobId) -> Result<Option<f64>, JobServerError> {
        let capacity = self.shared.slots.len() as u64;
        let slot = &self.shared.slots[(job.0 % capacity) as usize];
        if self.next > job.0 + capacity {
            return Err(JobServerError::Expired);
        }
        if slot.done.load(Ordering::Acquire) == job.0 + 1 {
            Ok(Some(f64::from_bits(slot.result.load(Ordering::Relaxed))))
        } else {
            Ok(None)
        }
    }

    /// Waits for the job's result: spins briefly, then sleeps until that job is
    /// done. Not for realtime threads (they poll [`JobServer::try_result`]).
    pub fn wait(&self, job: JobId) -> Result<f64, JobServerError> {
        for _ in 0..WAITER_SPINS {
            if let Some(value) = self.try_result(job)? {
                return Ok(value);
            }
            std::hint::spin_loop();
        }
        let shared = &self.shared;
        loop {
            // Said before the doorbell's announcement, so a worker that sees
            // the announcement sees which job it is for.
            shared.waiting_for.store(job.0, Ordering::Relaxed);
            shared.waiter.sleep_unless(|| !matches!(self.try_result(job), Ok(None)), None);
            shared.waiting_for.store(NOBODY, Ordering::Relaxed);
            if let Some(value) = self.try_result(job)? {
                return Ok(value);
            }
        }
    }

    /// The statistics table: one row per worker thread.
    ///
    /// ```
    /// # use outboard_engine::compute::JobServer;
    /// let mut server = JobServer::new(2, 2, 8);
    /// for _ in 0..4 {
    ///     let job = server.submit(1, 1_000).unwrap();
    ///     server.wait(job).unwrap();
    /// }
    /// let stats = server.stats();
    /// assert_eq!(stats.rows.len(), 2);
    /// assert_eq!(stats.rows.iter().map(|row| row.jobs).sum::<u64>(), 4);
    /// ```
    pub fn stats(&self) -> JobStats {
        let rows = self
            .shared
            .counters
            .iter()
            .take(self.threads.len())
            .enumerate()
            .map(|(i, c)| StatsRow {
                worker: format!("native thread {i}"),
                jobs: c.jobs.load(Ordering::Relaxed),
                seconds: c.nanos.load(Ordering::Relaxed) as f64 * 1e-9,
            })
            .collect();
        JobStats { rows, elapsed: self.created.elapsed() }
    }
}

impl Drop for JobServer {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::Release);
        self.shared.wake_all_workers();
        for handle in self.threads.drain(..) {
            let _ = handle.join();
        }
    }
}

fn worker_loop(shared: &Shared, index: usize) {
    let mut idle = 0u32;
    loop {
        if shared.shutdown.load(Ordering::Acquire) {
            return;
        }
        if index < shared.active.load(Ordering::Acquire) {
            let claimed = shared.claimed.load(Ordering::Acquire);
            if claimed < shared.published.load(Ordering::Acquire) {
                if shared
                    .claimed
                    .compare_exchange_weak(claimed, claimed + 1, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
                {
                    run_job(shared, index, claimed);
                    idle = 0;
                }
                continue;
            }
        }
        if idle < SPINS_BEFORE_PARKING {
            idle += 1;
            std::hint::spin_loop();
            continue;
        }
        shared.parking[index]
            .sleep_unless(|| shared.has_work_for(index) || shared.shutdown.load(Ordering::Acquire), None);
        idle = 0;
    }
}

fn run_job(shared: &Shared, index: usize, seq: u64) {
    let slot = &shared.slots[(seq % shared.slots.len() as u64) as usize];
    // Acquire of `published` (> seq) in the caller made these visible.
    let start = slot.start.load(Ordering::Relaxed);
    let end = slot.end.load(Ordering::Relaxed);
    let began = Instant::now();
    let sum = partial_sum(start, end);
    let nanos = began.elapsed().as_nanos() as u64;
    slot.result.store(sum.to_bits(), Ordering::Relaxed);
    slot.done.store(seq + 1, Ordering::Release);
    let counters = &shared.counters[index];
    counters.jobs.fetch_add(1, Ordering::Relaxed);
    counters.nanos.fetch_add(nanos, Ordering::Relaxed);
    // Dekker with the waiter's `waiting_for` store (made before its
    // doorbell's announcement): our result, then what it waits for.
    fence(Ordering::SeqCst);
    if shared.waiting_for.load(Ordering::Relaxed) == seq {
        shared.waiter.ring();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compute::kernel::{partial_sum_scalar, seed_parts};

    #[test]
    fn parts_sum_to_the_whole_for_every_ncpus() {
        let mut server = JobServer::new(1, 4, 128);
        let expected = partial_sum_scalar(1, 200_000);
        for ncpus in [1, 2, 4, 3, 1] {
            server.set_ncpus(ncpus);
            let jobs: Vec<JobId> =
                seed_parts(1, 200_000, 64).into_iter().map(|(s, e)| server.submit(s, e).unwrap()).collect();
            let sum: f64 = jobs.into_iter().map(|j| server.wait(j).unwrap()).sum();
            assert!((sum - expected).abs() < 1e-12, "ncpus {ncpus}");
        }
        let stats = server.stats();
        assert_eq!(stats.total_jobs(), 5 * 64);
        assert_eq!(stats.rows.len(), 4);
    }

    #[test]
    fn a_full_server_says_so_and_old_results_expire() {
        let mut server = JobServer::new(1, 1, 4);
        let first: Vec<JobId> = (0..4).map(|i| server.submit(1, 10 + i).unwrap()).collect();
        for &job in &first {
            server.wait(job).unwrap();
        }
        let fifth = server.submit(1, 3).unwrap();
        assert_eq!(server.try_result(first[0]), Err(JobServerError::Expired));
        assert_eq!(server.wait(fifth), Ok(0.5));
        assert!(server.wait(first[3]).is_ok(), "not yet reused");
    }

    /// Thousands of tiny bursts with workers parking in between: a lost
    /// wake-up would leave a job unclaimed, which the deadline turns into a
    /// failure instead of a hang.
    #[test]
    fn tiny_bursts_never_stall() {
        let mut server = JobServer::new(2, 3, 16);
        for round in 0..3_000u64 {
            if round % 500 == 0 {
                server.set_ncpus(1 + (round / 500) as usize % 3);
            }
            let jobs: Vec<JobId> = (0..1 + round % 3).map(|i| server.submit(1, 2 + i).unwrap()).collect();
            if round % 7 == 0 {
                // Let the workers park between some bursts.
                std::thread::sleep(std::time::Duration::from_micros(300));
            }
            for job in jobs {
                let deadline = Instant::now() + std::time::Duration::from_secs(10);
                loop {
                    if let Some(value) = server.try_result(job).unwrap() {
                        assert!(value > 0.0);
                        break;
                    }
                    assert!(Instant::now() < deadline, "job stalled in round {round}");
                    std::thread::yield_now();
                }
            }
        }
    }
}
