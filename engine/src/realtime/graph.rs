//! The graph runner: one realtime thread per track, driven by a clock or a
//! device callback, coordinated without locks (DESIGN.md §1).
//!
//! Every period the driver (a [`Driver`] called from a device callback, or
//! the paced clock thread of [`Graph::start`], which sleeps to absolute times
//! at SCHED_FIFO) collects what each track thread produced for the previous
//! period, mixes it into the master output, and releases every track thread
//! for the next period. A track that has not finished its previous period by
//! then is played as silence for it and counted as a deadline miss: the
//! driver never waits for a track.
//!
//! Track threads sleep between periods (spin briefly, then on a doorbell of
//! their own, `crate::shm::doorbell`); the driver wakes only those that
//! said they are asleep. Outputs pass through
//! double buffers of atomics indexed by period parity, published with a
//! Release store of the period number.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;

use crate::measurement::histogram::Histogram;
use crate::realtime::track::Track;
use crate::shm::doorbell::{Doorbell, Private};

/// Channels a graph track has at most (a processor asking for more gets these).
pub const MAX_TRACK_CHANNELS: usize = 8;

/// Anything that turns one period of input into output on a realtime thread.
pub trait BlockProcessor: Send {
    /// Processes `frames` frames, planar. Must be realtime-safe.
    fn process(&mut self, inputs: &[&[f32]], outputs: &mut [&mut [f32]], frames: usize);
    /// Channels in and out (the graph gives a track at most [`MAX_TRACK_CHANNELS`]).
    fn channels(&self) -> usize;
}

impl BlockProcessor for Track {
    fn process(&mut self, inputs: &[&[f32]], outputs: &mut [&mut [f32]], frames: usize) {
        Track::process(self, inputs, outputs, frames)
    }

    fn channels(&self) -> usize {
        self.config().channels
    }
}

/// What a track thread feeds its processor.
#[derive(Clone, Copy, Debug)]
pub enum Source {
    /// Zeros: the processor hears no input.
    Silence,
    /// A sine tone, the same on every channel.
    Sine {
        /// Frequency, in Hz.
        freq: f32,
        /// Peak amplitude, linear (1.0 is full scale).
        gain: f32,
    },
}

/// One track of the graph.
pub struct GraphTrack {
    /// A label for the track, for its owner: the graph itself does not use
    /// it (its threads are named by index).
    pub name: String,
    /// What turns the track's input into its output, on the track's own realtime thread.
    pub processor: Box<dyn BlockProcessor>,
    /// What the processor is fed as input each period.
    pub source: Source,
}

/// How the graph runs.
#[derive(Clone, Debug)]
pub struct GraphConfig {
    /// Sample rate, in Hz: paces the clock thread and a [`Source::Sine`].
    pub rate: f64,
    /// Frames per period.
    pub period: usize,
    /// SCHED_FIFO priority of the driver and track threads, where permitted.
    pub priority: Option<u8>,
    /// Master channels (track channels are mixed into these, modulo).
    pub master_channels: usize,
}

impl Default for GraphConfig {
    fn default() -> Self {
        GraphConfig { rate: 48_000.0, period: 64, priority: Some(80), master_channels: 2 }
    }
}

/// Counters of the whole graph, readable any time.
pub struct GraphStats {
    /// Periods the driver ran.
    pub periods: AtomicU64,
    /// Track-periods played as silence because the track was late.
    pub deadline_misses: AtomicU64,
    /// Per track.
    pub track_misses: Box<[AtomicU64]>,
    /// Time one track thread spends on one period (all tracks).
    pub callback: Histogram,
    /// Per track.
    pub track_callback: Box<[Histogram]>,
    /// How late the clock thread woke, past each period's start.
    pub wake_late: Histogram,
    /// Whether realtime priority could be had.
    pub realtime: AtomicBool,
}

struct Lane {
    /// Period the track may process up to (the low 32 bits of the period).
    go: CachePadded<AtomicU32>,
    /// Where the track thread sleeps between periods.
    bell: CachePadded<Doorbell<Private>>,
    /// Last period the track finished.
    done: CachePadded<AtomicU64>,
    /// Two periods of output, planar, as f32 bits.
    out: Box<[AtomicU32]>,
    channels: usize,
}

struct Shared {
    lanes: Box<[Lane]>,
    stop: AtomicBool,
    stats: GraphStats,
    period: usize,
}

/// The realtime driver: call [`Driver::tick`] once per period from the
/// device callback (or let [`Graph::start`]'s clock thread do it).
pub struct Driver {
    shared: Arc<Shared>,
    period_index: u64,
}

impl Driver {
    /// Runs one period: mixes the tracks' previous period into `master`
    /// (interleaved, `master_channels` wide, `period` frames), then releases
    /// the tracks for the next. Realtime-safe; never waits for a track.
    pub fn tick(&mut self, master: &mut [f32], master_channels: usize) {
        let shared = &*self.shared;
        // Tick n collects period n - 1, released one tick ago, and releases period n.
        let n = self.period_index;
        master.fill(0.0);
        if n >= 2 {
            let finished = n - 1;
            for (t, lane) in shared.lanes.iter().enumerate() {
                if lane.done.load(Ordering::Acquire) >= finished {
                    let half = (finished % 2) as usize * lane.channels * shared.period;
                    for c in 0..lane.channels {
                        let mc = c % master_channels.max(1);
                        for f in 0..shared.period {
                            let s = f32::from_bits(lane.out[half + c * shared.period + f].load(Ordering::Relaxed));
                            // A master shorter than a period: what fits.
                            if let Some(m) = master.get_mut(f * master_channels + mc) {
                                *m += s;
                            }
                        }
                    }
                } else {
                    shared.stats.deadline_misses.fetch_add(1, Ordering::Relaxed);
                    shared.stats.track_misses[t].fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        for lane in shared.lanes.iter() {
            lane.go.store(n as u32, Ordering::Release);
        }
        Doorbell::ring_each(shared.lanes.iter().map(|lane| &*lane.bell));
        self.period_index = n + 1;
        shared.stats.periods.fetch_add(1, Ordering::Relaxed);
    }
}

/// Called on the clock thread with each period's master mix (interleaved).
/// It runs on a realtime thread: it must not block or allocate.
pub type MasterSink = Box<dyn FnMut(&[f32]) + Send>;

/// A running graph.
pub struct Graph {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    clock: Option<JoinHandle<()>>,
}

/// Sets SCHED_FIFO at `priority` on the calling thread; false where not permitted.
pub fn make_thread_realtime(priority: u8) -> bool {
    use thread_priority::*;
    let Ok(priority) = priority.try_into() else { return false };
    set_thread_priority_and_policy(
        thread_native_id(),
        ThreadPriority::Crossplatform(priority),
        ThreadSchedulePolicy::Realtime(RealtimeThreadSchedulePolicy::Fifo),
    )
    .is_ok()
}

/// Locks this process's memory (current and future) so that no realtime thread
/// ever waits for a page fault; false where not permitted. Call it once at
/// start-up, before the audio starts.
pub fn lock_memory() -> bool {
    use rustix::mm::{MlockAllFlags, mlockall};
    mlockall(MlockAllFlags::CURRENT | MlockAllFlags::FUTURE).is_ok()
}

/// Warns once per process that realtime priority is not available.
pub fn warn_no_realtime() {
    static WARNED: std::sync::Once = std::sync::Once::new();
    WARNED.call_once(|| {
        eprintln!(
            "outboard: warning: SCHED_FIFO is not permitted here (run as root, or grant rtprio in \
             /etc/security/limits.conf); audio threads run at normal priority and may drop out under load"
        );
    });
}

impl Graph {
    /// Starts the track threads, and no driver: call the returned [`Driver`]
    /// from a device callback.
    pub fn start_with_driver(config: &GraphConfig, tracks: Vec<GraphTrack>) -> (Graph, Driver) {
        let lanes: Box<[Lane]> = tracks
            .iter()
            .map(|t| {
                let channels = t.processor.channels().min(MAX_TRACK_CHANNELS);
                Lane {
                    go: CachePadded::new(AtomicU32::new(0)),
                    bell: CachePadded::new(Doorbell::new()),
                    done: CachePadded::new(AtomicU64::new(0)),
                    out: (0..2 * channels * config.period).map(|_| AtomicU32::new(0)).collect(),
                    channels,
                }
            })
            .collect();
        let n = tracks.len();
        let shared = Arc::new(Shared {
            lanes,
            stop: AtomicBool::new(false),
            stats: GraphStats {
                periods: AtomicU64::new(0),
                deadline_misses: AtomicU64::new(0),
                track_misses: (0..n).map(|_| AtomicU64::new(0)).collect(),
                callback: Histogram::new(),
                track_callback: (0..n).map(|_| Histogram::new()).collect(),
                wake_late: Histogram::new(),
                realtime: AtomicBool::new(true),
            },
            period: config.period,
        });
        let threads = tracks
            .into_iter()
            .enumerate()
            .map(|(index, track)| {
                let shared = shared.clone();
                let config = config.clone();
                std::thread::Builder::new()
                    .name(format!("outboard-track-{index}"))
                    .spawn(move || track_thread(&shared, index, track, &config))
                    .expect("spawning a track thread")
            })
            .collect();
        let driver = Driver { shared: shared.clone(), period_index: 1 };
        (Graph { shared, threads, clock: None }, driver)
    }

    /// Starts the graph driven by its own clock thread, paced in real time.
    pub fn start(config: &GraphConfig, tracks: Vec<GraphTrack>, mut on_master: MasterSink) -> Graph {
        let (mut graph, mut driver) = Graph::start_with_driver(config, tracks);
        let shared = graph.shared.clone();
        let config = config.clone();
        graph.clock = Some(
            std::thread::Builder::new()
                .name("outboard-clock".into())
                .spawn(move || {
                    if let Some(priority) = config.priority {
                        if !make_thread_realtime(priority.saturating_add(5).min(99)) {
                            shared.stats.realtime.store(false, Ordering::Relaxed);
                            warn_no_realtime();
                        }
                    }
                    let mut master = vec![0.0f32; config.period * config.master_channels];
                    let period_ns = (config.period as f64 / config.rate * 1e9) as u64;
                    let start = crate::realtime::clock::monotonic_ns() + 5_000_000;
                    let mut n = 0u64;
                    while !shared.stop.load(Ordering::Acquire) {
                        let due = start + n * period_ns;
                        crate::realtime::clock::sleep_until_ns(due);
                        shared.stats.wake_late.record(crate::realtime::clock::monotonic_ns().saturating_sub(due));
                        driver.tick(&mut master, config.master_channels);
                        on_master(&master);
                        n += 1;
                    }
                })
                .expect("spawning the clock thread"),
        );
        graph
    }

    /// The graph's counters: live while it runs, still readable after [`Graph::stop`].
    pub fn stats(&self) -> &GraphStats {
        &self.shared.stats
    }

    /// Stops and joins every thread (also done on drop); counters stay readable.
    pub fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(clock) = self.clock.take() {
            let _ = clock.join();
        }
        Doorbell::ring_each(self.shared.lanes.iter().map(|lane| &*lane.bell));
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl Drop for Graph {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Spins this long waiting for the next period before sleeping. Short: the
/// next period is a whole period away, and a realtime thread spinning at high
/// priority would keep a script worker woken onto its core from running.
const TRACK_SPIN: Duration = Duration::from_micros(2);

fn track_thread(shared: &Shared, index: usize, mut track: GraphTrack, config: &GraphConfig) {
    if let Some(priority) = config.priority {
        if !make_thread_realtime(priority) {
            shared.stats.realtime.store(false, Ordering::Relaxed);
            warn_no_realtime();
        }
    }
    let lane = &shared.lanes[index];
    let channels = lane.channels;
    let period = shared.period;
    let mut input = vec![vec![0.0f32; period]; channels];
    let mut output = vec![vec![0.0f32; period]; channels];
    let mut phase = 0.0f64;
    let mut next: u64 = 1;
    loop {
        // Wait for the driver to release period `next`.
        let spin_until = Instant::now() + TRACK_SPIN;
        loop {
            if shared.stop.load(Ordering::Acquire) {
                return;
            }
            let go = lane.go.load(Ordering::Acquire);
            if released(go, next) {
                break;
            }
            if Instant::now() < spin_until {
                std::hint::spin_loop();
                continue;
            }
            let ready = || shared.stop.load(Ordering::Acquire) || released(lane.go.load(Ordering::Acquire), next);
            lane.bell.sleep_unless(ready, Some(Instant::now() + Duration::from_millis(100)));
        }
        // The input.
        match track.source {
            Source::Silence => input.iter_mut().for_each(|c| c.fill(0.0)),
            Source::Sine { freq, gain } => {
                let step = f64::from(freq) / config.rate;
                for f in 0..period {
                    let s = (std::f64::consts::TAU * phase).sin() as f32 * gain;
                    for ch in input.iter_mut() {
                        ch[f] = s;
                    }
                    phase = (phase + step) % 1.0;
                }
            }
        }
        let began = crate::realtime::clock::monotonic_ns();
        {
            let inputs: [&[f32]; MAX_TRACK_CHANNELS] =
                std::array::from_fn(|c| input.get(c).map_or(&[][..], |v| v.as_slice()));
            let mut outs = output.iter_mut();
            let mut outputs: [&mut [f32]; MAX_TRACK_CHANNELS] =
                std::array::from_fn(|_| outs.next().map_or(&mut [][..], |v| v.as_mut_slice()));
            track.processor.process(&inputs[..channels], &mut outputs[..channels], period);
        }
        let spent = crate::realtime::clock::monotonic_ns().saturating_sub(began);
        shared.stats.callback.record(spent);
        shared.stats.track_callback[index].record(spent);
        let half = (next % 2) as usize * channels * period;
        for (c, ch) in output.iter().enumerate() {
            for (f, &s) in ch.iter().enumerate() {
                lane.out[half + c * period + f].store(s.to_bits(), Ordering::Relaxed);
            }
        }
        lane.done.store(next, Ordering::Release);
        next += 1;
    }
}

/// Whether the go word (the low 32 bits of a period number) has reached `next`.
fn released(go: u32, next: u64) -> bool {
    (go.wrapping_sub(next as u32) as i32) >= 0
}
