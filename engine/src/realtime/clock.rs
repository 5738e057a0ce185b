//! The one clock every process agrees on: CLOCK_MONOTONIC in nanoseconds.
//! Read through the vDSO: no syscall, realtime-safe.

/// Nanoseconds on CLOCK_MONOTONIC, the same clock in every process of the machine.
pub fn monotonic_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// Sleeps until CLOCK_MONOTONIC reads `due` (nanoseconds, as
/// [`monotonic_ns`]), through signals. A blocking syscall: for pacing
/// threads between periods, never inside one.
pub fn sleep_until_ns(due: u64) {
    let ts = rustix::time::Timespec { tv_sec: (due / 1_000_000_000) as i64, tv_nsec: (due % 1_000_000_000) as i64 };
    while let Err(rustix::io::Errno::INTR) =
        rustix::thread::clock_nanosleep_absolute(rustix::thread::ClockId::Monotonic, &ts)
    {}
}
