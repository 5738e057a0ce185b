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
//! rings lock-free at its next block (see [`workers::supervisor`] and
//! [`realtime::track`]). The region still reaches the worker by inheritance
//! at spawn, as its standard input, and workers are started with
//! posix_spawn, not fork ([`wire::launch`], [`shm::region::Region::pass_to_child`]).
//!
//! ## What lives where
//!
//! Each folder is one concern; imports run downward only, from the folders
//! at the bottom of this list to those above them, never the other way:
//!
//! | folder | what | imports |
//! | --- | --- | --- |
//! | [`workers`] | worker processes: [`workers::process`] (the one spawn and shutdown path, finding the scripts host), [`workers::pool`] (the job pool), [`workers::supervisor`] (tracks' workers: placement, lifecycle, priority), [`workers::python_env`], [`workers::script_log`] | everything below |
//! | [`realtime`] | the realtime side: [`realtime::track`] (the track, its port, its events), [`realtime::graph`] (the graph runner), [`realtime::clock`], [`realtime::voice`] | compute, measurement, wire, shm |
//! | [`compute`] | the partial-sum kernel and the job server | measurement, shm (the doorbell) |
//! | [`measurement`] | histograms, job statistics | nothing |
//! | [`wire`] | the format both processes agree on: [`wire::rings`] (the ring map), [`wire::block`] (block messages), [`wire::control`] (control messages, by direction), [`wire::declared`], [`wire::launch`] (the worker's command line and first duties), [`wire::log`] (the worker's log records) | shm |
//! | [`shm`] | shared memory: [`shm::region`], [`shm::ring`], [`shm::doorbell`] (the one sleep/wake hand-shake), [`shm::memory`] | nothing |
//!
//! The worker (`outboard-scripts-host`) uses [`wire`] and [`shm`] from here
//! (and [`realtime::clock`], the clock block timestamps are read on, and
//! [`measurement::stats`], the job statistics it reports), no module of the
//! host's tracks or workers.
//!
//! ## What it guarantees
//!
//! Realtime-safe (no lock, no allocation or free, no blocking syscall, no I/O,
//! no panic on any input, bounded time; the only syscall is a non-blocking
//! futex wake of a peer that said it is asleep):
//!
//! - [`realtime::track::Track::process`] and [`realtime::track::Track::reset`],
//!   the track's whole per-block path (proven under `assert_no_alloc` and a
//!   seccomp allowlist in `tests/tests/realtime_safety.rs`) — unless
//!   [`realtime::track::Track::set_offline`] asked it to wait for results,
//!   which only an offline render may do;
//! - [`realtime::graph::Driver::tick`], and the graph's track threads
//!   between their period waits (proven the same way; the wait on their own
//!   doorbell is their one blocking call, where a DAW's audio thread would
//!   be back in its driver);
//! - [`shm::ring::Producer::try_push`], [`shm::ring::Consumer::try_pop`],
//!   [`shm::ring::Consumer::has_message`], [`shm::ring::Producer::free_slots`];
//!   writing and reading in place: [`shm::ring::Producer::reserve`], the
//!   [`shm::ring::WriteSlot`] `put_*` methods and
//!   [`shm::ring::WriteSlot::commit`], [`shm::ring::Consumer::read`], the
//!   [`shm::ring::ReadSlot`] copies and [`shm::ring::ReadSlot::release`];
//! - [`shm::doorbell::Doorbell::ring`], [`shm::doorbell::Doorbell::ring_each`]
//!   and [`shm::doorbell::Doorbell::ring_first`];
//! - [`measurement::histogram::Histogram::record`],
//!   [`realtime::clock::monotonic_ns`] (after the process's first call,
//!   which locates the vDSO);
//! - [`compute::partial_sum`], [`compute::JobServer::submit`] and
//!   [`compute::JobServer::try_result`].
//!
//! Everything else (creating regions, spawning workers, the job pool, waiting)
//! runs on non-realtime threads and may allocate, block and log.
//!
//! No page faults on the realtime threads, without `mlockall` (which a DAW
//! does not call): regions are populated when they are created (on the
//! supervisor's thread), buffers a realtime thread writes are touched where
//! they are allocated ([`shm::memory`]), and workers are started without
//! fork, which would write-protect the host's memory and make every
//! realtime thread's next write to each page a copy-on-write fault. The
//! realtime-safety tests count the realtime threads' page faults through a
//! worker restart and require none, with a negative control.
//!
//! ## What it assumes
//!
//! The worker process is untrusted: every byte read back from shared memory is
//! validated (header at attach, positions when an endpoint is made and at
//! every read, lengths per slot, messages as they are reassembled and
//! decoded) and a bad value faults the ring or fails the job; it never panics
//! the host or reads out of bounds. Property tests (`proptests` modules,
//! `PROPTEST_CASES` to run more cases) feed every such reader arbitrary bytes.
//!
//! Linux only (memfd, futex, parent-death signal). Model-checked with loom
//! (the ring and the doorbell):
//! `RUSTFLAGS="--cfg loom" cargo test -p outboard-engine --release --lib loom`
//! (`cargo xtask test` runs it).

pub mod shm;

#[cfg(not(loom))]
pub mod compute;
#[cfg(not(loom))]
pub mod measurement;
#[cfg(not(loom))]
pub mod realtime;
#[cfg(not(loom))]
pub mod wire;
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
