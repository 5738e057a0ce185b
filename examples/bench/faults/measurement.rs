//! What is measured: each track's output checked period by period (the
//! probe), the counters read before and after a fault, and what a scenario
//! leaves behind (processes, descriptors, regions, memory).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use outboard_engine::realtime::clock::monotonic_ns;
use outboard_engine::realtime::graph::BlockProcessor;
use outboard_engine::realtime::track::{Track, TrackStats};
use outboard_host::procfs;
use serde_json::{Value, json};

use super::{INPUT_GAIN, SCRIPT_GAIN, STABLE_PERIODS};

/// What one track's output looked like, period by period, judged against
/// its input delayed by the track's latency. Written by the track's
/// realtime thread, read by the bench.
#[derive(Default)]
pub(super) struct ProbeStats {
    /// Periods that were exactly the script's result (×0.5 of the delayed input).
    pub(super) wet: AtomicU64,
    /// Periods that were exactly the delayed input.
    pub(super) dry: AtomicU64,
    /// Periods that were neither (the script's own idea of audio).
    pub(super) other: AtomicU64,
    /// Samples that were non-finite or louder than any correct output.
    pub(super) bad_samples: AtomicU64,
    /// Consecutive wet periods up to now, and when that run began (CLOCK_MONOTONIC ns).
    pub(super) wet_streak: AtomicU64,
    pub(super) wet_since_ns: AtomicU64,
}

impl ProbeStats {
    pub(super) fn not_wet(&self) -> u64 {
        self.dry.load(Ordering::Relaxed) + self.other.load(Ordering::Relaxed)
    }

    /// When the track's current steady run of processed periods began, if it
    /// began after `t_ns`.
    pub(super) fn wet_since(&self, t_ns: u64) -> Option<u64> {
        let since = self.wet_since_ns.load(Ordering::Acquire);
        (self.wet_streak.load(Ordering::Acquire) >= STABLE_PERIODS && since > t_ns).then_some(since)
    }
}

/// A track with its output checked. Realtime-safe: everything is allocated
/// in `new`; per period it compares, counts and reads the clock.
pub(super) struct Probe {
    pub(super) track: Track,
    pub(super) stats: Arc<ProbeStats>,
    /// Each channel's input over the last `latency` frames, a ring per channel.
    pub(super) delay: Box<[f32]>,
    pub(super) latency: usize,
    pub(super) pos: usize,
}

impl Probe {
    pub(super) fn new(track: Track, stats: Arc<ProbeStats>) -> Probe {
        let latency = track.config().latency_frames();
        let delay = vec![0.0; latency * track.config().channels].into();
        Probe { track, stats, delay, latency, pos: 0 }
    }
}

impl BlockProcessor for Probe {
    fn process(&mut self, inputs: &[&[f32]], outputs: &mut [&mut [f32]], frames: usize) {
        self.track.process(inputs, outputs, frames);
        let (mut dry, mut wet, mut bad) = (true, true, 0u64);
        for (c, (input, output)) in inputs.iter().zip(outputs.iter()).enumerate() {
            let ring = &mut self.delay[c * self.latency..(c + 1) * self.latency];
            for f in 0..frames {
                let slot = (self.pos + f) % self.latency;
                let (expected, got) = (ring[slot], output[f]);
                ring[slot] = input[f];
                dry &= got == expected;
                wet &= got == SCRIPT_GAIN * expected;
                if !got.is_finite() || got.abs() > INPUT_GAIN * 1.01 {
                    bad += 1;
                }
            }
        }
        self.pos = (self.pos + frames) % self.latency;
        let s = &self.stats;
        s.bad_samples.fetch_add(bad, Ordering::Relaxed);
        if wet && dry {
            return; // silence in, silence out: tells nothing
        }
        if wet {
            if s.wet_streak.load(Ordering::Relaxed) == 0 {
                s.wet_since_ns.store(monotonic_ns(), Ordering::Release);
            }
            s.wet_streak.fetch_add(1, Ordering::Release);
            s.wet.fetch_add(1, Ordering::Relaxed);
        } else {
            s.wet_streak.store(0, Ordering::Release);
            if dry { &s.dry } else { &s.other }.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn channels(&self) -> usize {
        self.track.config().channels
    }
}

/// Counters of one track (or a sum of tracks) at one moment.
#[derive(Clone, Copy, Default)]
pub(super) struct Counts {
    pub(super) late: u64,
    pub(super) errors: u64,
    pub(super) faults: u64,
    pub(super) wet: u64,
    pub(super) dry: u64,
    pub(super) other: u64,
    pub(super) bad: u64,
}

impl Counts {
    pub(super) fn of(stats: &TrackStats, probe: &ProbeStats) -> Counts {
        Counts {
            late: stats.late_results.load(Ordering::Relaxed),
            errors: stats.script_errors.load(Ordering::Relaxed),
            faults: stats.faults.load(Ordering::Relaxed),
            wet: probe.wet.load(Ordering::Relaxed),
            dry: probe.dry.load(Ordering::Relaxed),
            other: probe.other.load(Ordering::Relaxed),
            bad: probe.bad_samples.load(Ordering::Relaxed),
        }
    }

    pub(super) fn since(self, earlier: Counts) -> Counts {
        Counts {
            late: self.late - earlier.late,
            errors: self.errors - earlier.errors,
            faults: self.faults - earlier.faults,
            wet: self.wet - earlier.wet,
            dry: self.dry - earlier.dry,
            other: self.other - earlier.other,
            bad: self.bad - earlier.bad,
        }
    }

    pub(super) fn add(self, other: Counts) -> Counts {
        Counts {
            late: self.late + other.late,
            errors: self.errors + other.errors,
            faults: self.faults + other.faults,
            wet: self.wet + other.wet,
            dry: self.dry + other.dry,
            other: self.other + other.other,
            bad: self.bad + other.bad,
        }
    }

    pub(super) fn to_json(self) -> Value {
        json!({"late": self.late, "script_errors": self.errors, "link_faults": self.faults,
               "wet_periods": self.wet, "dry_periods": self.dry, "other_periods": self.other,
               "bad_samples": self.bad})
    }
}

/// What this process holds, to compare before and after a scenario.
pub(super) struct Holdings {
    pub(super) fds: usize,
    pub(super) rss_kib: u64,
    pub(super) regions: usize,
    pub(super) dev_shm: Vec<String>,
    pub(super) children: Vec<(u32, char)>,
}

impl Holdings {
    pub(super) fn now() -> Holdings {
        let me = procfs::own_pid();
        Holdings {
            fds: procfs::fd_count(),
            rss_kib: procfs::rss_kib(me),
            regions: procfs::region_mappings(me),
            dev_shm: procfs::dev_shm_held(me),
            children: procfs::children(),
        }
    }
}

/// Page faults (minor and major) taken so far by this process's realtime
/// threads: the graph's track threads and its clock, found by name.
pub(super) fn realtime_thread_faults() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return 0 };
    tasks
        .filter_map(|task| {
            let path = task.ok()?.path();
            let name = std::fs::read_to_string(path.join("comm")).ok()?;
            if !name.starts_with("outboard-track") && !name.starts_with("outboard-clock") {
                return None;
            }
            let stat = std::fs::read_to_string(path.join("stat")).ok()?;
            // After the command name (which may hold spaces): minflt is
            // field 10, majflt field 12, counting the state as field 3.
            let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
            Some(fields.get(7)?.parse::<u64>().ok()? + fields.get(9)?.parse::<u64>().ok()?)
        })
        .sum()
}

/// Polls `f` every 2 ms until it gives a value or `limit` passes.
pub(super) fn poll<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = f() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

pub(super) fn ms_between(from_ns: u64, to_ns: u64) -> f64 {
    to_ns.saturating_sub(from_ns) as f64 / 1e6
}
