//! Futex wait and wake on a 32-bit word, the one sleeping primitive the engine uses.
//!
//! `wake` is the only syscall a realtime thread may make (DESIGN.md §1), and only
//! after the peer said it is asleep. It never blocks: FUTEX_WAKE returns at once.
//! `wait` blocks and is for non-realtime threads only.
//!
//! Words in memory shared with another process use [`Scope::Shared`] (the kernel
//! keys the wait queue on the physical page); words private to this process use
//! [`Scope::Private`], which is cheaper.

use std::sync::atomic::AtomicU32;
use std::time::Duration;

use rustix::thread::futex;

/// Whether the word lives in memory shared with another process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Mapped by another process too (a memfd region).
    Shared,
    /// Seen by this process only.
    Private,
}

impl Scope {
    fn flags(self) -> futex::Flags {
        match self {
            Scope::Shared => futex::Flags::empty(),
            Scope::Private => futex::Flags::PRIVATE,
        }
    }
}

/// Sleeps while `word` holds `expected`, for at most `timeout`.
///
/// Returns when woken, when the word no longer holds `expected`, on a signal, or
/// on time-out; callers re-check their condition in a loop, so which of these it
/// was does not matter. Not for realtime threads.
pub fn wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>, scope: Scope) {
    let timeout = timeout.map(|t| futex::Timespec {
        tv_sec: t.as_secs().min(i64::MAX as u64) as i64,
        tv_nsec: i64::from(t.subsec_nanos()),
    });
    // Every outcome (woken, EAGAIN, EINTR, ETIMEDOUT) sends the caller back to its
    // condition check, so the result carries no information we need.
    let _ = futex::wait(word, scope.flags(), expected, timeout.as_ref());
}

/// Wake every sleeper. FUTEX_WAKE takes a signed count, so `u32::MAX` would
/// read as -1 and wake just one.
pub const WAKE_ALL: u32 = i32::MAX as u32;

/// Wakes up to `count` threads sleeping on `word`. Never blocks; realtime-safe.
pub fn wake(word: &AtomicU32, count: u32, scope: Scope) {
    // FUTEX_WAKE cannot block; the only failures are EFAULT/EINVAL on a bad
    // address, impossible for a reference, and nothing useful could be done.
    let _ = futex::wake(word, scope.flags(), count);
}

/// Most words [`wait_any`] sleeps on at once (the kernel's FUTEX_WAITV_MAX).
pub const WAIT_ANY_MAX: usize = 128;

/// Sleeps until any of `words` no longer holds its expected value, or is
/// woken, for at most `timeout` (FUTEX_WAITV, Linux 5.16 and later). Where
/// the kernel lacks it, or there are more than [`WAIT_ANY_MAX`] words, sleeps
/// on the first word for at most a millisecond instead: callers re-check
/// their condition in a loop either way. Not for realtime threads.
pub fn wait_any(words: &[(&AtomicU32, u32)], timeout: Option<Duration>, scope: Scope) {
    let Some(&(first, expected)) = words.first() else {
        if let Some(timeout) = timeout {
            std::thread::sleep(timeout);
        }
        return;
    };
    if words.len() <= WAIT_ANY_MAX {
        let mut flags = futex::WaitFlags::SIZE_U32;
        if scope == Scope::Private {
            flags |= futex::WaitFlags::PRIVATE;
        }
        let waiters: Vec<futex::Wait> = words
            .iter()
            .map(|&(word, value)| {
                let mut wait = futex::Wait::new();
                wait.val = u64::from(value);
                wait.uaddr = futex::WaitPtr::new(word.as_ptr().cast());
                wait.flags = flags;
                wait
            })
            .collect();
        // FUTEX_WAITV takes an absolute deadline on the clock it is given.
        let deadline = timeout.map(|t| {
            let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
            let nanos = now.tv_nsec as u64 + u64::from(t.subsec_nanos());
            futex::Timespec {
                tv_sec: now
                    .tv_sec
                    .saturating_add(t.as_secs().min(i64::MAX as u64 / 2) as i64 + (nanos / 1_000_000_000) as i64),
                tv_nsec: (nanos % 1_000_000_000) as i64,
            }
        });
        match futex::waitv(&waiters, futex::WaitvFlags::empty(), deadline.as_ref(), futex::ClockId::Monotonic) {
            Err(rustix::io::Errno::NOSYS) => {}
            // Woken, a word changed (EAGAIN), a signal, or the time-out.
            _ => return,
        }
    }
    let slice = Duration::from_millis(1);
    wait(first, expected, Some(timeout.map_or(slice, |t| t.min(slice))), scope);
}
