//! A lock-free latency histogram that a realtime thread records into and any
//! thread reads: fixed buckets of atomics, no allocation after creation.
//!
//! Buckets are logarithmic with 16 sub-buckets per power of two (about 4 %
//! resolution) from 1 ns to 2^40 ns; percentiles are reported at a bucket's
//! upper edge, so they never understate.

use std::sync::atomic::{AtomicU64, Ordering};

const SUB_BITS: u32 = 4;
const SUB: usize = 1 << SUB_BITS;
const OCTAVES: usize = 41;
const BUCKETS: usize = OCTAVES * SUB;

/// A histogram of nanosecond durations.
pub struct Histogram {
    buckets: Box<[AtomicU64]>,
    max: AtomicU64,
    count: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram::new()
    }
}

fn bucket_of(ns: u64) -> usize {
    let ns = ns.max(1);
    let octave = 63 - ns.leading_zeros();
    if octave < SUB_BITS {
        return ns as usize; // exact for tiny values
    }
    let sub = ((ns >> (octave - SUB_BITS)) as usize) & (SUB - 1);
    (((octave - SUB_BITS + 1) as usize) * SUB + sub).min(BUCKETS - 1)
}

fn upper_edge(bucket: usize) -> u64 {
    if bucket < SUB {
        return bucket as u64;
    }
    let octave = (bucket / SUB) as u32 + SUB_BITS - 1;
    let sub = (bucket % SUB) as u64;
    ((SUB as u64 + sub + 1) << (octave - SUB_BITS)) - 1
}

/// Percentiles of a histogram, in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Percentiles {
    /// Durations recorded (when 0, every other field is 0 too).
    pub count: u64,
    /// The median (50th percentile), in µs.
    pub p50: f64,
    /// The 99th percentile, in µs.
    pub p99: f64,
    /// The 99.9th percentile, in µs.
    pub p999: f64,
    /// The longest duration recorded, in µs (exact, not a bucket's edge).
    pub max: f64,
}

impl Histogram {
    /// An empty histogram. Allocates its buckets: create it before a realtime
    /// thread records into it.
    pub fn new() -> Histogram {
        Histogram {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            max: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    /// Records one duration. Realtime-safe: three relaxed atomic operations.
    pub fn record(&self, ns: u64) {
        self.buckets[bucket_of(ns)].fetch_add(1, Ordering::Relaxed);
        self.max.fetch_max(ns, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Forgets everything recorded (recordings racing with it may survive).
    pub fn reset(&self) {
        for b in self.buckets.iter() {
            b.store(0, Ordering::Relaxed);
        }
        self.max.store(0, Ordering::Relaxed);
        self.count.store(0, Ordering::Relaxed);
    }

    /// Durations recorded (merged ones included) since creation or the last [`Histogram::reset`].
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Bucket counts with each bucket's upper edge in ns (non-empty buckets only).
    pub fn buckets(&self) -> Vec<(u64, u64)> {
        self.buckets
            .iter()
            .enumerate()
            .map(|(i, b)| (upper_edge(i), b.load(Ordering::Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    /// Adds another histogram's counts into this one.
    pub fn merge(&self, other: &Histogram) {
        for (mine, theirs) in self.buckets.iter().zip(other.buckets.iter()) {
            mine.fetch_add(theirs.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        self.max.fetch_max(other.max.load(Ordering::Relaxed), Ordering::Relaxed);
        self.count.fetch_add(other.count.load(Ordering::Relaxed), Ordering::Relaxed);
    }

    /// The median, 99th and 99.9th percentiles and the maximum so far, in µs
    /// (each percentile at its bucket's upper edge, never above the maximum).
    /// Allocates: not for a realtime thread.
    pub fn percentiles(&self) -> Percentiles {
        let counts: Vec<u64> = self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect();
        let total: u64 = counts.iter().sum();
        let max_ns = self.max.load(Ordering::Relaxed);
        let at = |q: f64| -> f64 {
            if total == 0 {
                return 0.0;
            }
            let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
            let mut seen = 0;
            for (i, &n) in counts.iter().enumerate() {
                seen += n;
                if seen >= rank {
                    return upper_edge(i).min(max_ns) as f64 / 1000.0;
                }
            }
            max_ns as f64 / 1000.0
        };
        Percentiles { count: total, p50: at(0.5), p99: at(0.99), p999: at(0.999), max: max_ns as f64 / 1000.0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_tight() {
        let mut last = 0;
        for ns in [1u64, 2, 7, 15, 16, 17, 100, 1000, 12_345, 1 << 30, 1 << 39] {
            let b = bucket_of(ns);
            assert!(b >= last);
            last = b;
            let edge = upper_edge(b);
            assert!(edge >= ns && (edge as f64) <= ns as f64 * 1.07 + 1.0, "{ns} -> {edge}");
        }
    }

    #[test]
    fn percentiles_of_a_known_distribution() {
        let h = Histogram::new();
        for i in 1..=1000u64 {
            h.record(i * 1000); // 1 µs .. 1000 µs
        }
        let p = h.percentiles();
        assert_eq!(p.count, 1000);
        assert!((500.0..=530.0).contains(&p.p50), "{p:?}");
        assert!((990.0..=1000.0).contains(&p.p99), "{p:?}");
        assert_eq!(p.max, 1000.0);
    }
}
