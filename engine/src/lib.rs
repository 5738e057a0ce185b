//! # outboard-engine
//!
//! The host side of Outboard: shared-memory rings to script worker processes,
//! the messages over them, realtime tracks and the graph runner that drives
//! them, the supervisor and the job pool that own the worker processes, and
//! the compute core that carries the native DSP load.
//!
//! Two choices go a step beyond DESIGN.md §2: each worker gets a shared region
//! of its own (a hostile worker can only garble its own rings), and a restarted
//! worker gets a fresh region rather than resynchronising the old one's
//! positions (nothing a dying worker left behind reaches its successor, and no
//! position word is ever written by two parties); the track adopts the new
//! rings lock-free at its next block (see `supervisor` and `track`).
//!
//! ## What it guarantees
//!
//! Realtime-safe (no lock, no allocation or free, no blocking syscall, no I/O,
//! no panic on any input, bounded time; the only syscall is a non-blocking
//! futex wake of a peer that said it is asleep):
//!
//! - [`track::Track::process`] and [`track::Track::reset`], the track's whole
//!   per-block path (proven under `assert_no_alloc` and a seccomp allowlist in
//!   `tests/tests/realtime_safety.rs`) — unless [`track::Track::set_offline`]
//!   asked it to wait for results, which only an offline render may do;
//! - [`graph::Driver::tick`], and the graph's track threads between their
//!   period waits (proven the same way; the wait on their own futex word is
//!   their one blocking call, where a DAW's audio thread would be back in
//!   its driver);
//! - [`ring::Producer::try_push`], [`ring::Consumer::try_pop`],
//!   [`ring::Consumer::has_message`], [`ring::Producer::free_slots`],
//!   [`ring::Doorbell::ring`]; writing and reading in place:
//!   [`ring::Producer::reserve`], the [`ring::WriteSlot`] `put_*` methods and
//!   [`ring::WriteSlot::commit`], [`ring::Consumer::read`], the
//!   [`ring::ReadSlot`] copies and [`ring::ReadSlot::release`];
//! - [`histogram::Histogram::record`], [`clock::monotonic_ns`] (after the
//!   process's first call, which locates the vDSO);
//! - [`compute::partial_sum`], [`compute::JobServer::submit`] and
//!   [`compute::JobServer::try_result`].
//!
//! Everything else (creating regions, spawning workers, the job pool, waiting)
//! runs on non-realtime threads and may allocate, block and log.
//!
//! ## What it assumes
//!
//! The worker process is untrusted: every byte read back from shared memory is
//! validated (header at attach, positions when an endpoint is made and at
//! every read, lengths per slot, messages as they are reassembled) and a bad
//! value faults the ring or fails the job; it never panics the host or reads
//! out of bounds. Property tests (`proptests` modules, `PROPTEST_CASES` to run
//! more cases) feed every such reader arbitrary bytes.
//!
//! Linux only (memfd, futex, parent-death signal). Model-checked with loom:
//! `RUSTFLAGS="--cfg loom" cargo test -p outboard-engine --release --lib loom`
//! (`cargo xtask test` runs it).

pub mod ring;
mod sync;

#[cfg(not(loom))]
pub mod block;
#[cfg(not(loom))]
pub mod clock;
#[cfg(not(loom))]
pub mod compute;
/// What a script declares (its parameters), as its worker reports it.
#[cfg(not(loom))]
pub mod declared;
#[cfg(not(loom))]
pub mod futex;
#[cfg(not(loom))]
pub mod graph;
#[cfg(not(loom))]
pub mod histogram;
/// Buffers a realtime thread writes, made present before it runs.
pub mod memory;
#[cfg(not(loom))]
pub mod protocol;
/// Which Python environment a script imports from.
pub mod python_env;
#[cfg(not(loom))]
pub mod region;
/// Messages from scripts and workers, attributed to their tracks.
pub mod script_log;
#[cfg(not(loom))]
pub mod stats;
#[cfg(not(loom))]
pub mod supervisor;
#[cfg(not(loom))]
pub mod track;
#[cfg(not(loom))]
pub mod voice;
#[cfg(not(loom))]
pub mod workers;

/// Settings shared by the property tests of what the engine reads from shared
/// memory (`proptests` modules beside the code they test).
#[cfg(all(test, not(loom)))]
mod proptest_config {
    /// `PROPTEST_CASES` if set, else `default`: expensive properties (a memfd
    /// per case, a whole track) run fewer cases than proptest's 256.
    pub(crate) fn cases(default: u32) -> proptest::test_runner::Config {
        let mut config = proptest::test_runner::Config::default();
        if std::env::var_os("PROPTEST_CASES").is_none() {
            config.cases = default;
        }
        config
    }
}
