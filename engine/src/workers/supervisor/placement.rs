//! Placement: which worker (and which of its slots) runs a track: a worker
//! of its own up to the cap, then shared round-robin within one Python
//! environment; loading the track's script there and handing the track
//! its link.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::lifecycle::Worker;
use super::{ScriptedTrack, Watcher};
use crate::realtime::track::{ScriptLink, TrackPort};
use crate::wire::block::MAX_PARAMS;
use crate::wire::control::{Request, ScriptSpec};
use crate::wire::rings::{slot_ring_from_script, slot_ring_to_script};
use crate::workers::script_log::{LogLevel, LogRecord};

pub(super) struct TrackEntry {
    /// When the track's script was first seen loaded (for the demotion check).
    pub(super) ready_since: Option<Instant>,
    /// Late results counted at the last look, for the demotion check.
    pub(super) late_seen: u64,
    pub(super) blocks_seen: u64,
    pub(super) port: TrackPort,
    pub(super) script: PathBuf,
    pub(super) params: Vec<String>,
    pub(super) hints: Vec<String>,
    pub(super) python_env: Option<PathBuf>,
    pub(super) worker: usize,
    pub(super) slot: usize,
}

/// What a worker slot holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Slot {
    Free,
    Track(u32),
    /// Held a track that was removed: not reused until the worker restarts
    /// with a fresh region.
    Retired,
}

impl Watcher {
    pub(super) fn remove_track(&mut self, id: u32) {
        let Some(index) = self.tracks.iter().position(|t| t.port.config.id == id) else { return };
        self.unplace(index);
        self.publish_pids();
    }

    /// Restarts, with a fresh region, every track worker whose tracks were
    /// all removed but whose slots are used up: it is as good as new after.
    pub(super) fn recycle_spent_workers(&mut self) {
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

    pub(super) fn add_track(&mut self, track: ScriptedTrack) {
        self.recycle_spent_workers();
        let cfg = &track.port.config;
        if !self.config.slot_rings.hold(cfg.slot_rings()) {
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
    pub(super) fn place(&mut self, mut entry: TrackEntry) {
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
        let (id, pid) = (entry.port.config.id, self.workers[worker].process.pid());
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
    pub(super) fn unplace(&mut self, index: usize) -> TrackEntry {
        let entry = self.tracks.swap_remove(index);
        let worker = &mut self.workers[entry.worker];
        worker.process.send(&Request::UnloadScript { slot: entry.slot });
        worker.slots[entry.slot] = Slot::Retired;
        entry
    }

    /// Loads the track's script on its worker and sends the track its link.
    pub(super) fn connect(worker: &mut Worker, entry: &mut TrackEntry) {
        Self::load_script(worker, entry);
        let link = ScriptLink {
            to_script: worker.process.region.producer(slot_ring_to_script(entry.slot)).expect("slot rings exist once"),
            from_script: worker
                .process
                .region
                .consumer(slot_ring_from_script(entry.slot))
                .expect("slot rings exist once"),
            generation: worker.generation,
        };
        entry.port.send_link(link);
    }

    /// Asks the track's worker to load its script into the track's slot.
    pub(super) fn load_script(worker: &mut Worker, entry: &TrackEntry) {
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
            values: (0..MAX_PARAMS).map(|i| entry.port.params.get(i)).collect(),
            instrument: cfg.instrument,
        };
        worker.process.send(&Request::LoadScript(spec));
    }
}
