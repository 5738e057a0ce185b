//! Worker priority: workers with tracks run raised (nice -10, or
//! SCHED_FIFO when configured and permitted), below the running ones while
//! they start, and demoted (nice 15) while they hog their CPU or are stuck
//! in a script call, until they keep up again.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::Watcher;
use super::lifecycle::Worker;
use crate::workers::script_log::{LogLevel, LogRecord};

/// Nice value of a worker demoted for hogging.
pub(super) const DEMOTED_NICE: i32 = 15;

/// Nice value of a raised worker where SCHED_FIFO is not permitted.
pub(super) const RAISED_NICE: i32 = -10;

/// Nice value of a worker until its first script has loaded: starting CPython
/// and numpy is a burst of CPU (and kernel work) that must not delay the
/// running workers' blocks, as it did at their nice -10.
pub(super) const STARTING_NICE: i32 = 0;

/// Nice value of the spare worker while it warms up and waits.
pub(super) const SPARE_NICE: i32 = 10;

/// Sets a worker's scheduling policy and nice value; false if not permitted.
pub(super) fn set_scheduling(pid: u32, policy: libc::c_int, priority: i32, nice: i32) -> bool {
    let param = libc::sched_param { sched_priority: priority };
    // SAFETY: plain syscall wrappers on a process id we own; `param` outlives the call.
    unsafe {
        libc::sched_setscheduler(pid as libc::pid_t, policy, &param) == 0
            && (policy != libc::SCHED_OTHER || libc::setpriority(libc::PRIO_PROCESS, pid as libc::id_t, nice) == 0)
    }
}

/// Sets a worker's nice value (at the normal policy); false if not permitted.
pub(super) fn set_nice(pid: u32, nice: i32) -> bool {
    set_scheduling(pid, libc::SCHED_OTHER, 0, nice)
}

impl Worker {
    /// Moves the worker to `standing` at that standing's nice value; to
    /// `Raised` only through `Watcher::raise_priority`, which knows the
    /// priority.
    pub(super) fn stand(&mut self, standing: Standing) {
        self.standing = standing;
        if standing == Standing::Demoted {
            self.demoted_at = Some(Instant::now());
            self.demotions = self.demotions.saturating_add(1);
        } else {
            self.demoted_at = None;
        }
        let nice = match standing {
            Standing::Starting => STARTING_NICE,
            Standing::Probation => RAISED_NICE,
            Standing::Demoted => DEMOTED_NICE,
            Standing::Raised => return,
        };
        set_nice(self.process.pid(), nice);
    }
}

/// How often workers are checked for hogging: a hog is caught within a few
/// blocks, before the scheduler's wake-up granularity lets it delay others.
pub(super) const POLICING_WINDOW: Duration = Duration::from_millis(20);

/// Windows of keeping up (one second) before a worker gets realtime priority.
pub(super) const PROMOTE_AFTER_WINDOWS: u32 = 50;

/// A demoted worker that is beating (not stuck in a call) is tried at its
/// raised priority again this long after its demotion, doubled for each
/// demotion in a row up to [`RETRY_LATEST`]: demoted on a loaded machine
/// (stuck a moment, or starved), it falls behind at nice 15 and stays late
/// however well it would keep up, so lateness alone could keep it down for
/// good; a real hog is caught again within a window and waits longer.
pub(super) const RETRY_FIRST: Duration = Duration::from_millis(500);
/// The longest a demoted, beating worker waits for its next try.
pub(super) const RETRY_LATEST: Duration = Duration::from_secs(8);
/// A worker that beat this recently is not stuck in a script call.
pub(super) const BEATING_WITHIN: Duration = Duration::from_millis(100);

/// How long after its script loaded a track's lateness starts to count.
pub(super) const SETTLE_AFTER_LOAD: Duration = Duration::from_millis(100);

/// A worker that has not beaten for this long while its tracks went on
/// handing it blocks is stuck in a script call (a worker serving tracks
/// beats at every block): it is demoted at once (see `Watcher::demote_if_stuck`).
pub(super) const STUCK_AFTER: Duration = Duration::from_millis(8);

/// A worker's standing in the priority policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Standing {
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

impl Watcher {
    /// A worker that has not beaten for [`STUCK_AFTER`] while its tracks
    /// went on handing it blocks (`blocks` now) is stuck in a script call.
    /// If that is a busy loop, at the running workers' priority it delays
    /// their blocks until the lateness accounting (`police_hogs`, tens of
    /// ms) catches it: it is demoted now, and raised again once it keeps up.
    pub(super) fn demote_if_stuck(&mut self, index: usize, now: Instant, blocks: u64) {
        let worker = &mut self.workers[index];
        if matches!(worker.standing, Standing::Probation | Standing::Raised)
            && now.duration_since(worker.last_beat_at) >= STUCK_AFTER
            && blocks > worker.blocks_at_last_beat + 2
        {
            worker.stand(Standing::Demoted);
            worker.kept_up = 0;
            let pid = worker.process.pid();
            let text = format!("outboard: worker {index} (pid {pid}) is stuck in a script call; lowering its priority");
            self.say(Some(index), LogLevel::Warning, text);
        }
    }

    /// Tries a demoted worker that beats again at its raised priority once
    /// its back-off has passed (see [`RETRY_FIRST`]), its tracks' lateness
    /// not counted while it catches up (as after a script's load).
    fn retry_if_demoted(&mut self, index: usize, now: Instant) {
        let worker = &mut self.workers[index];
        let backoff = RETRY_FIRST.saturating_mul(1 << worker.demotions.saturating_sub(1).min(4)).min(RETRY_LATEST);
        let due = worker.demoted_at.is_some_and(|at| now.duration_since(at) >= backoff);
        if worker.standing != Standing::Demoted || worker.hog || !due {
            return;
        }
        if now.duration_since(worker.last_beat_at) >= BEATING_WITHIN {
            return;
        }
        worker.stand(Standing::Probation);
        worker.kept_up = 0;
        for track in self.tracks.iter_mut().filter(|t| t.worker == index) {
            if track.ready_since.is_some() {
                track.ready_since = Some(now);
            }
        }
    }

    pub(super) fn raise_priority(&mut self, pid: u32, priority: i32) {
        if set_scheduling(pid, libc::SCHED_FIFO, priority, 0) {
            return;
        }
        let fifo_error = std::io::Error::last_os_error();
        let niced = set_nice(pid, RAISED_NICE);
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

    /// A worker whose tracks were late for most of their last blocks is
    /// hogging its CPU (a busy script): it is demoted to a low priority, so it
    /// delays only its own tracks and not the workers sharing its cores; it is
    /// raised again once it keeps up.
    pub(super) fn police_hogs(&mut self) {
        let now = Instant::now();
        for index in 0..self.workers.len() {
            self.retry_if_demoted(index, now);
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
            let pid = worker.process.pid();
            let (hogging, keeping_up) = (late * 2 > blocks, late == 0);
            worker.kept_up = if keeping_up { worker.kept_up + 1 } else { 0 };
            if hogging && worker.standing != Standing::Demoted {
                worker.stand(Standing::Demoted);
                self.say(
                    Some(index),
                    LogLevel::Warning,
                    format!("outboard: worker {index} (pid {pid}) is late for most blocks; lowering its priority"),
                );
            } else if worker.kept_up >= PROMOTE_AFTER_WINDOWS && worker.standing != Standing::Raised {
                worker.demotions = 0;
                match self.config.worker_priority {
                    Some(priority) => {
                        worker.stand(Standing::Raised);
                        self.raise_priority(pid, priority);
                    }
                    None if worker.standing == Standing::Demoted => worker.stand(Standing::Probation),
                    None => {}
                }
            }
        }
    }
}
