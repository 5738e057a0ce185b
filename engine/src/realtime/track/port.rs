//! The non-realtime side's handle on a track ([`TrackPort`]) and what the
//! two sides share: counters ([`TrackStats`]), parameters
//! ([`TrackParams`]), the script's declaration ([`DeclaredCell`]), and the
//! rings to the track's worker ([`ScriptLink`]), handed over without a lock.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use super::{PARAM_MIX, TrackConfig};
use crate::measurement::histogram::Histogram;
use crate::shm::ring::{Consumer, Producer};
use crate::wire::block::MAX_PARAMS;
use crate::wire::declared::Declaration;

/// Counters the realtime side keeps and anyone may read.
#[derive(Default)]
pub struct TrackStats {
    /// Internal blocks processed.
    pub blocks: AtomicU64,
    /// Blocks whose result was not back in time (dry played instead).
    pub late_results: AtomicU64,
    /// The block index of the latest late result (for diagnosis).
    pub last_late_block: AtomicU64,
    /// Results that arrived after their turn and were dropped.
    pub stale_results: AtomicU64,
    /// Blocks the script failed on (error reported by the worker, or a
    /// sample that is not finite or beyond ±`block::MAX_SAMPLE` caught here):
    /// dry played.
    pub script_errors: AtomicU64,
    /// Malformed messages or ring faults from the script side.
    pub faults: AtomicU64,
    /// Blocks that could not be pushed because the ring was full.
    pub ring_full: AtomicU64,
    /// Events applied, and events that came after their time (applied at once).
    pub events: AtomicU64,
    /// Events that came after their time, applied (or handed out) at once.
    pub late_events: AtomicU64,
    /// Events dropped for want of room: more host events than a block
    /// carries, or more script events than the track holds or hands out.
    pub dropped_events: AtomicU64,
    /// Set when the link to the worker faulted; the supervisor restarts it.
    pub link_faulted: AtomicBool,
    /// Generation of the link in use (0: none yet).
    pub link_generation: AtomicU32,
    /// Set by the supervisor once the worker has loaded this track's script
    /// (whether it loaded cleanly or not): from then on its blocks are answered.
    pub script_ready: AtomicBool,
    /// Push → result published, on CLOCK_MONOTONIC (ns).
    pub roundtrip: Histogram,
    /// Keeps the DSP load's result observable, so it is computed.
    pub dsp_sink: AtomicU64,
}

/// Parameters the non-realtime side sets and the track reads each block.
pub struct TrackParams {
    values: [AtomicU32; MAX_PARAMS],
    /// Partial-sum terms computed per block: the stand-in DSP load.
    dsp_terms: AtomicU64,
}

impl Default for TrackParams {
    fn default() -> Self {
        let params = TrackParams { values: std::array::from_fn(|_| AtomicU32::new(0)), dsp_terms: AtomicU64::new(0) };
        params.set(PARAM_MIX, 1.0);
        params
    }
}

impl TrackParams {
    /// Sets parameter `index` (below [`MAX_PARAMS`]; 0 is the mix) to
    /// `value`; the track takes it at its next block. An index out of range
    /// is ignored.
    pub fn set(&self, index: usize, value: f32) {
        if let Some(slot) = self.values.get(index) {
            slot.store(value.to_bits(), Ordering::Relaxed);
        }
    }

    /// Parameter `index`'s current value (0 for an index out of range).
    pub fn get(&self, index: usize) -> f32 {
        self.values.get(index).map_or(0.0, |v| f32::from_bits(v.load(Ordering::Relaxed)))
    }

    /// Sets the stand-in DSP load: partial-sum terms the track computes per block (0: none).
    pub fn set_dsp_terms(&self, terms: u64) {
        self.dsp_terms.store(terms, Ordering::Relaxed);
    }

    /// Partial-sum terms the track computes per block (see [`TrackParams::set_dsp_terms`]).
    pub fn dsp_terms(&self) -> u64 {
        self.dsp_terms.load(Ordering::Relaxed)
    }
}

/// The rings between a track and its worker, for one worker incarnation.
pub struct ScriptLink {
    /// Track → script: the track's `Process` blocks, pushed by its realtime thread.
    pub to_script: Producer,
    /// Script → track: the script's `Result` and `Events` replies, read by
    /// the track's realtime thread.
    pub from_script: Consumer,
    /// The worker incarnation these rings belong to.
    pub generation: u32,
}

/// A track's latest declaration, shared by the supervisor (which writes it
/// when the worker reports one) and whoever runs the track (a plugin's main
/// thread reads it). Not for a realtime thread: it locks.
#[derive(Default)]
pub struct DeclaredCell {
    latest: std::sync::Mutex<Option<Arc<Declaration>>>,
    generation: AtomicU64,
}

impl DeclaredCell {
    /// Stores a new declaration and bumps [`DeclaredCell::generation`] (the
    /// supervisor, when the worker reports one). Locks.
    pub fn set(&self, declaration: Declaration) {
        *self.latest.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(declaration));
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// The latest declaration (None before the script first loaded).
    pub fn get(&self) -> Option<Arc<Declaration>> {
        self.latest.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Counts the declarations set: a reader compares it with the last it saw.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }
}

/// The non-realtime side's handle on a track.
pub struct TrackPort {
    /// What the track was created with (a copy of the track's own).
    pub config: TrackConfig,
    /// The track's counters, shared with its realtime side.
    pub stats: Arc<TrackStats>,
    /// The track's parameters: set here, read by the track each block.
    pub params: Arc<TrackParams>,
    /// What the track's script declares, once its worker has said.
    pub declared: Arc<DeclaredCell>,
    pub(super) links: rtrb::Producer<ScriptLink>,
    pub(super) graveyard: rtrb::Consumer<ScriptLink>,
}

impl TrackPort {
    /// Hands the track a new link; it switches at its next block. If the track
    /// has not taken the previous ones yet, the new one waits behind them;
    /// false (and the link is dropped here) if four are already waiting.
    pub fn send_link(&mut self, link: ScriptLink) -> bool {
        self.links.push(link).is_ok()
    }

    /// Drops the links the track has finished with (off the realtime thread).
    pub fn collect_garbage(&mut self) -> usize {
        let mut dropped = 0;
        while self.graveyard.pop().is_ok() {
            dropped += 1;
        }
        dropped
    }
}
