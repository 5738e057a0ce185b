//! The one clock every process agrees on: CLOCK_MONOTONIC in nanoseconds.
//! Read through the vDSO: no syscall, realtime-safe.

/// Nanoseconds on CLOCK_MONOTONIC, the same clock in every process of the machine.
pub fn monotonic_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}
