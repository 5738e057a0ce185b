//! Worker lifecycle: starting workers (and the warm spare), watching them
//! (exited, not beating, faulted rings), and restarting them with fresh
//! rings, with back-off for a worker that keeps dying.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::Watcher;
use super::placement::Slot;
use super::priority::{SPARE_NICE, STARTING_NICE, Standing, set_nice};
use crate::wire::control::Request;
use crate::workers::process::WorkerProcess;
use crate::workers::script_log::LogLevel;

pub(super) struct Worker {
    pub(super) generation: u32,
    /// The Python environment its scripts import from (None: built-in).
    pub(super) python_env: Option<PathBuf>,
    pub(super) process: WorkerProcess,
    pub(super) slots: Vec<Slot>,
    pub(super) hog: bool,
    pub(super) last_beat: u64,
    pub(super) last_beat_at: Instant,
    /// Blocks its tracks had been handed when its last beat was seen.
    pub(super) blocks_at_last_beat: u64,
    pub(super) recent_restarts: VecDeque<Instant>,
    pub(super) restart_not_before: Option<Instant>,
    /// Where the worker stands in the priority policy (see `police_hogs`).
    pub(super) standing: Standing,
    /// Consecutive policing windows in which its tracks kept up.
    pub(super) kept_up: u32,
    /// When it was last demoted, while it is.
    pub(super) demoted_at: Option<Instant>,
    /// Demotions since it last kept up for a while (the retry back-off).
    pub(super) demotions: u32,
    /// What its reply ring carried that no worker sends (a faulted ring, a
    /// message that does not decode), if it did: it is restarted for it.
    pub(super) control_fault: Option<String>,
}

impl Watcher {
    /// Starts a new worker, to be pushed at the end of `workers`.
    pub(super) fn spawn(&mut self, slots: usize, hog: bool, python_env: Option<PathBuf>) -> Result<Worker, String> {
        self.spawn_generation(self.workers.len(), slots, hog, 1, python_env)
    }

    /// Starts incarnation `generation` of worker `index`.
    pub(super) fn spawn_generation(
        &mut self,
        index: usize,
        slots: usize,
        hog: bool,
        generation: u32,
        python_env: Option<PathBuf>,
    ) -> Result<Worker, String> {
        let slot_rings = std::iter::repeat_n(self.config.slot_rings, slots);
        let process = WorkerProcess::start(&self.launch, index, generation, slot_rings, python_env.as_deref())
            .map_err(|e| e.0)?;
        if !hog {
            set_nice(process.pid(), STARTING_NICE);
        }
        let beat = process.region.status().heartbeat.load(Ordering::Relaxed);
        Ok(Worker {
            generation,
            python_env,
            process,
            slots: vec![Slot::Free; slots],
            hog,
            last_beat: beat,
            last_beat_at: Instant::now(),
            blocks_at_last_beat: 0,
            recent_restarts: VecDeque::new(),
            restart_not_before: None,
            standing: Standing::Starting,
            kept_up: 0,
            demoted_at: None,
            demotions: 0,
            control_fault: None,
        })
    }

    pub(super) fn publish_pids(&self) {
        *self.shared.pids.lock().expect("pids lock") = self.workers.iter().map(|w| w.process.pid()).collect();
        *self.shared.track_pids.lock().expect("pids lock") =
            self.tracks.iter().map(|t| (t.port.config.id, self.workers[t.worker].process.pid())).collect();
    }

    /// Restarts workers that died, hang or whose rings faulted.
    pub(super) fn watch(&mut self) {
        let now = Instant::now();
        for index in 0..self.workers.len() {
            let blocks: u64 = self
                .tracks
                .iter()
                .filter(|t| t.worker == index)
                .map(|t| t.port.stats.blocks.load(Ordering::Relaxed))
                .sum();
            let worker = &mut self.workers[index];
            let beat = worker.process.region.status().heartbeat.load(Ordering::Relaxed);
            if beat != worker.last_beat {
                worker.last_beat = beat;
                worker.last_beat_at = now;
                worker.blocks_at_last_beat = blocks;
            } else {
                self.demote_if_stuck(index, now, blocks);
            }
            let worker = &mut self.workers[index];
            let why = if let Some(status) = worker.process.exited() {
                Some(format!("exited ({status})"))
            } else if !worker.hog
                && worker.slots.iter().any(|s| matches!(s, Slot::Track(_)))
                && now.duration_since(worker.last_beat_at) > self.config.heartbeat_timeout
            {
                Some(format!("stopped beating for {:?}", now.duration_since(worker.last_beat_at)))
            } else if let Some(fault) = &worker.control_fault {
                Some(format!("sent malformed data (on its reply ring: {fault})"))
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
    pub(super) fn keep_spare(&mut self) {
        if let Some((spare, _)) = &mut self.spare
            && spare.process.exited().is_some()
        {
            // It died idle (killed from outside, out of memory): start
            // another, but not in a loop.
            self.spare = None;
            self.shared.spare_ready.store(0, Ordering::Release);
            self.spare_not_before = Some(Instant::now() + Duration::from_secs(1));
        }
        let wanted = self.config.spare_worker && !self.tracks.is_empty();
        if !wanted {
            if self.spare.take().is_some() {
                // Dropped: killed and reaped.
                self.shared.spare_ready.store(0, Ordering::Release);
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
                set_nice(spare.process.pid(), SPARE_NICE);
                spare.process.send(&Request::Warm);
                self.spare = Some((spare, false));
            }
            Err(e) => {
                self.shared.keep(&format!("outboard: cannot start a spare worker: {e}"), self.config.echo_log);
                self.spare_not_before = Some(Instant::now() + Duration::from_secs(5));
            }
        }
    }

    /// The spare, if it is warm, runs `python_env` and has `slots` slots.
    pub(super) fn take_spare(&mut self, python_env: &Option<PathBuf>, slots: usize) -> Option<Worker> {
        match &self.spare {
            Some((spare, true)) if spare.python_env == *python_env && spare.slots.len() == slots => {}
            _ => return None,
        }
        let (mut spare, _) = self.spare.take()?;
        self.shared.spare_ready.store(0, Ordering::Release);
        // Its interpreter is up: it serves blocks from now on.
        spare.stand(Standing::Probation);
        spare.last_beat_at = Instant::now();
        Some(spare)
    }

    pub(super) fn restart(&mut self, index: usize, why: &str) {
        let now = Instant::now();
        let old_pid = self.workers[index].process.pid();
        self.workers[index].process.kill();
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
        let new_pid = fresh.process.pid();
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
