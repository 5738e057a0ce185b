//! The doorbell: how a thread sleeps until another has work for it, and
//! how the other wakes it. The engine's one sleeping primitive, written
//! once for every sleeper:
//!
//! - a ring's consumer, and a worker process over all its rings at once
//!   (in shared memory: [`Shared`]; see `ring`);
//! - the graph runner's track threads, between periods ([`Private`]);
//! - the job server's worker threads, and a thread waiting for a job.
//!
//! # The hand-shake
//!
//! The sleeper announces itself (`asleep = 1`), checks its condition once
//! more, and waits on the futex word `seq` (with the value it read before
//! announcing). A waker publishes its work first, then rings: only if the
//! sleeper announced itself does it bump `seq` and make one FUTEX_WAKE.
//! Both put a `SeqCst` fence between their store and their load (Dekker's
//! pattern), so at least one sees the other: the sleeper sees the work, or
//! the waker sees the sleeper.
//!
//! One waker, [`Doorbell::ring_first`], also claims the announcement
//! (`asleep` back to 0 by compare-and-swap), so that a burst of work wakes
//! one sleeper per piece of work rather than the same sleeper each time.
//! Claiming keeps the hand-shake: a sleeper whose announcement is claimed
//! is woken by the bump of `seq`, whatever round it is in. So that one
//! order of `asleep`'s writes exists for loom too, the sleeper writes it
//! with read-modify-writes (loom orders plain stores of different threads
//! only by causality, and would let a waker read an announcement claimed
//! long ago: a false alarm of its incomplete memory model).
//!
//! The `loom` model at the end of this module checks the hand-shake for
//! every user: one sleeper and a waker, and a piece of work rung to the
//! first of two sleepers.
//!
//! # Realtime
//!
//! [`Doorbell::ring`] (and [`Doorbell::ring_each`], [`Doorbell::ring_first`])
//! never blocks: at most one non-blocking FUTEX_WAKE per doorbell, and only
//! when its sleeper said it is asleep, the one syscall a realtime thread may
//! make (DESIGN.md §1). Sleeping blocks: never on a realtime thread.

use std::marker::PhantomData;
use std::time::Instant;

use super::sync::{AtomicU32, Ordering, fence};

/// Where a doorbell lives: in memory shared with another process
/// ([`Shared`]: the kernel keys the futex on the physical page) or seen by
/// this process only ([`Private`]: cheaper).
pub trait Scope: sealed::Sealed {
    #[doc(hidden)]
    const PRIVATE: bool;
}

/// A doorbell in memory another process maps too (a region).
pub enum Shared {}

/// A doorbell seen by this process only.
pub enum Private {}

impl Scope for Shared {
    const PRIVATE: bool = false;
}

impl Scope for Private {
    const PRIVATE: bool = true;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::Shared {}
    impl Sealed for super::Private {}
}

/// Where one sleeper sleeps, and how wakers wake it (see the module docs).
///
/// `#[repr(C)]` and all-zero when new: a [`Shared`] one lives in a region,
/// where the peer may write either word at any time (a garbled word costs
/// a spurious or a missed wake-up of its own sleeper, nothing else).
#[repr(C)]
pub struct Doorbell<S: Scope = Shared> {
    /// 1 while the sleeper is (about to be) asleep. Set by the sleeper,
    /// claimed back to 0 by the waker that wakes it.
    asleep: AtomicU32,
    /// The futex word. Bumped by a waker before waking.
    seq: AtomicU32,
    #[cfg(loom)]
    futex: loom_futex::Emulated,
    scope: PhantomData<S>,
}

/// Where the `asleep` word sits, for tests that play a hostile peer.
#[cfg(all(test, not(loom)))]
pub(crate) const ASLEEP_OFFSET: usize = std::mem::offset_of!(Doorbell<Shared>, asleep);

impl<S: Scope> Default for Doorbell<S> {
    fn default() -> Self {
        Doorbell::new()
    }
}

impl<S: Scope> Doorbell<S> {
    /// A doorbell with nobody asleep: both words zero, as in a fresh region.
    pub fn new() -> Self {
        Doorbell {
            asleep: AtomicU32::new(0),
            seq: AtomicU32::new(0),
            #[cfg(loom)]
            futex: loom_futex::Emulated::new(),
            scope: PhantomData,
        }
    }

    /// Waker side, after publishing: wakes the sleeper if, and only if, it
    /// said it is asleep. Realtime-safe: at most one non-blocking FUTEX_WAKE.
    pub fn ring(&self) {
        // Dekker: the waker's publication, then the sleeper's flag.
        fence(Ordering::SeqCst);
        self.wake_if_asleep();
    }

    /// Rings every doorbell of `bells` after one fence (a driver releasing
    /// all its track threads at once). Realtime-safe.
    pub fn ring_each<'a>(bells: impl IntoIterator<Item = &'a Doorbell<S>>)
    where
        S: 'a,
    {
        fence(Ordering::SeqCst);
        for bell in bells {
            bell.wake_if_asleep();
        }
    }

    /// Wakes the first sleeper of `bells` whose announcement no other call
    /// has claimed yet, after one fence (work that any one of several
    /// sleepers can take: each piece of a burst wakes another sleeper).
    /// Returns whether one was woken. Realtime-safe.
    pub fn ring_first<'a>(bells: impl IntoIterator<Item = &'a Doorbell<S>>) -> bool
    where
        S: 'a,
    {
        fence(Ordering::SeqCst);
        bells.into_iter().any(|bell| {
            // A load first: the common case (nobody asleep) writes nothing.
            let claimed = bell.asleep.load(Ordering::Relaxed) == 1
                && bell.asleep.compare_exchange(1, 0, Ordering::AcqRel, Ordering::Relaxed).is_ok();
            if claimed {
                bell.wake();
            }
            claimed
        })
    }

    /// The sleeper says it is (about to be) asleep. A read-modify-write, as
    /// every write of `asleep` is (see the module docs).
    fn announce(&self) {
        self.asleep.swap(1, Ordering::Relaxed);
    }

    /// The sleeper is awake again.
    fn awake(&self) {
        self.asleep.swap(0, Ordering::Relaxed);
    }

    /// After a fence that orders the caller's publication before it.
    fn wake_if_asleep(&self) {
        if self.asleep.load(Ordering::Relaxed) != 0 {
            self.wake();
        }
    }

    fn wake(&self) {
        self.seq.fetch_add(1, Ordering::Relaxed);
        #[cfg(not(loom))]
        futex::wake(&self.seq, S::PRIVATE);
        #[cfg(loom)]
        self.futex.wake();
    }

    /// Sleeper side: announces sleep, then sleeps unless `ready()` says
    /// there is work, until a waker rings or `deadline` passes. Returns
    /// whether `ready()` was seen true. Blocks: never on a realtime thread.
    pub fn sleep_unless(&self, mut ready: impl FnMut() -> bool, deadline: Option<Instant>) -> bool {
        let seen = self.seq.load(Ordering::Acquire);
        self.announce();
        // Dekker: our flag, then the wakers' publications.
        fence(Ordering::SeqCst);
        if ready() {
            self.awake();
            return true;
        }
        let timeout = match deadline {
            None => None,
            Some(deadline) => match deadline.checked_duration_since(Instant::now()) {
                Some(left) if !left.is_zero() => Some(left),
                _ => {
                    self.awake();
                    return false;
                }
            },
        };
        #[cfg(not(loom))]
        futex::wait(&self.seq, seen, timeout, S::PRIVATE);
        #[cfg(loom)]
        {
            let _ = timeout;
            self.futex.wait(&self.seq, seen);
        }
        self.awake();
        ready()
    }

    /// [`Doorbell::sleep_unless`] over several doorbells at once: announces
    /// sleep on every one of `bells`, then sleeps unless `ready()` says there
    /// is work, until any of them is rung or `deadline` passes (one
    /// FUTEX_WAITV covers them all). Returns whether `ready()` was seen
    /// true. Each doorbell's sleeper must be this thread alone. Blocks:
    /// never on a realtime thread.
    #[cfg(not(loom))]
    pub fn sleep_any(bells: &[&Doorbell<S>], mut ready: impl FnMut() -> bool, deadline: Option<Instant>) -> bool {
        let seen: Vec<u32> = bells.iter().map(|b| b.seq.load(Ordering::Acquire)).collect();
        for bell in bells {
            bell.announce();
        }
        // Dekker, as in sleep_unless: our flags, then the publications.
        fence(Ordering::SeqCst);
        let mut woke_ready = ready();
        if !woke_ready {
            let timeout = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if timeout != Some(std::time::Duration::ZERO) {
                let words: Vec<(&AtomicU32, u32)> = bells.iter().zip(&seen).map(|(b, &v)| (&b.seq, v)).collect();
                futex::wait_any(&words, timeout, S::PRIVATE);
            }
            woke_ready = ready();
        }
        for bell in bells {
            bell.awake();
        }
        woke_ready
    }
}

/// FUTEX_WAIT, FUTEX_WAKE and FUTEX_WAITV on a 32-bit word: the system calls
/// under the doorbell, used nowhere else.
#[cfg(not(loom))]
mod futex {
    use std::sync::atomic::AtomicU32;
    use std::time::Duration;

    use rustix::thread::futex;

    fn flags(private: bool) -> futex::Flags {
        if private { futex::Flags::PRIVATE } else { futex::Flags::empty() }
    }

    /// Sleeps while `word` holds `expected`, for at most `timeout`.
    ///
    /// Returns when woken, when the word no longer holds `expected`, on a
    /// signal, or on time-out; callers re-check their condition in a loop, so
    /// which of these it was does not matter. Not for realtime threads.
    pub fn wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>, private: bool) {
        let timeout = timeout.map(|t| futex::Timespec {
            tv_sec: t.as_secs().min(i64::MAX as u64) as i64,
            tv_nsec: i64::from(t.subsec_nanos()),
        });
        // Every outcome (woken, EAGAIN, EINTR, ETIMEDOUT) sends the caller back
        // to its condition check, so the result carries no information we need.
        let _ = futex::wait(word, flags(private), expected, timeout.as_ref());
    }

    /// Wake every sleeper. FUTEX_WAKE takes a signed count, so `u32::MAX`
    /// would read as -1 and wake just one.
    const WAKE_ALL: u32 = i32::MAX as u32;

    /// Wakes every thread sleeping on `word`. Never blocks; realtime-safe.
    pub fn wake(word: &AtomicU32, private: bool) {
        // FUTEX_WAKE cannot block; the only failures are EFAULT/EINVAL on a
        // bad address, impossible for a reference, and nothing useful could
        // be done.
        let _ = futex::wake(word, flags(private), WAKE_ALL);
    }

    /// Most words [`wait_any`] sleeps on at once (the kernel's FUTEX_WAITV_MAX).
    const WAIT_ANY_MAX: usize = 128;

    /// Sleeps until any of `words` no longer holds its expected value, or is
    /// woken, for at most `timeout` (FUTEX_WAITV, Linux 5.16 and later).
    /// Where the kernel lacks it, or there are more than [`WAIT_ANY_MAX`]
    /// words, sleeps on the first word for at most a millisecond instead:
    /// callers re-check their condition in a loop either way. Not for
    /// realtime threads.
    pub fn wait_any(words: &[(&AtomicU32, u32)], timeout: Option<Duration>, private: bool) {
        let Some(&(first, expected)) = words.first() else {
            if let Some(timeout) = timeout {
                std::thread::sleep(timeout);
            }
            return;
        };
        if words.len() <= WAIT_ANY_MAX {
            let mut flags = futex::WaitFlags::SIZE_U32;
            if private {
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
        wait(first, expected, Some(timeout.map_or(slice, |t| t.min(slice))), private);
    }
}

#[cfg(loom)]
mod loom_futex {
    //! A futex for the loom model: a mutex and a condition variable. A lost
    //! wake-up shows up as a deadlock, which loom reports.
    use loom::sync::{Condvar, Mutex};

    use super::super::sync::{AtomicU32, Ordering};

    pub struct Emulated {
        lock: Mutex<()>,
        cond: Condvar,
    }

    impl Emulated {
        pub fn new() -> Self {
            Emulated { lock: Mutex::new(()), cond: Condvar::new() }
        }

        pub fn wait(&self, word: &AtomicU32, expected: u32) {
            let guard = self.lock.lock().unwrap();
            if word.load(Ordering::SeqCst) == expected {
                drop(self.cond.wait(guard).unwrap());
            }
        }

        pub fn wake(&self) {
            let _guard = self.lock.lock().unwrap();
            self.cond.notify_all();
        }
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    //! The hand-shake for every user at once: a sleeper waiting for work a
    //! waker publishes is always woken (a lost wake-up would leave it asleep
    //! forever, which loom reports as a deadlock), whether the waker rings
    //! one doorbell or the first of several.
    use std::sync::Arc;

    use loom::sync::atomic::AtomicBool;
    use loom::thread;

    use super::*;

    #[test]
    fn a_sleeper_is_always_woken_for_work_published_before_the_ring() {
        loom::model(|| {
            let bell = Arc::new(Doorbell::<Private>::new());
            let work = Arc::new(AtomicBool::new(false));
            let waker = {
                let (bell, work) = (bell.clone(), work.clone());
                thread::spawn(move || {
                    work.store(true, Ordering::Relaxed);
                    bell.ring();
                })
            };
            while !bell.sleep_unless(|| work.load(Ordering::Relaxed), None) {}
            waker.join().unwrap();
        });
    }

    /// Two sleepers, one job rung to the first announced of them (the job
    /// server's submit, claiming the announcement): the job is taken, and
    /// the taker then stops the other (rung as a driver rings all).
    #[test]
    fn the_first_sleeper_rung_takes_the_job() {
        // Three threads: bounded preemptions keep the search to seconds
        // (every interleaving with up to four preemptions is explored).
        let mut model = loom::model::Builder::new();
        model.preemption_bound = Some(4);
        model.check(|| {
            let bells = Arc::new([Doorbell::<Private>::new(), Doorbell::<Private>::new()]);
            let published = Arc::new(AtomicBool::new(false));
            let taken = Arc::new(AtomicBool::new(false));
            let stop = Arc::new(AtomicBool::new(false));
            let sleeper = |index: usize| {
                let (bells, published, taken, stop) = (bells.clone(), published.clone(), taken.clone(), stop.clone());
                thread::spawn(move || {
                    loop {
                        if stop.load(Ordering::Relaxed) {
                            return;
                        }
                        if published.load(Ordering::Relaxed)
                            && taken.compare_exchange(false, true, Ordering::Relaxed, Ordering::Relaxed).is_ok()
                        {
                            stop.store(true, Ordering::Relaxed);
                            Doorbell::ring_each(bells.iter());
                            return;
                        }
                        let ready = || {
                            stop.load(Ordering::Relaxed)
                                || (published.load(Ordering::Relaxed) && !taken.load(Ordering::Relaxed))
                        };
                        bells[index].sleep_unless(ready, None);
                    }
                })
            };
            let sleepers = [sleeper(0), sleeper(1)];
            published.store(true, Ordering::Relaxed);
            Doorbell::ring_first(bells.iter());
            for sleeper in sleepers {
                sleeper.join().unwrap();
            }
            assert!(taken.load(Ordering::Relaxed));
        });
    }
}
