//! Shared memory: the region a worker shares with its host, the lock-free
//! rings in it, the doorbell a sleeper waits on, and buffers made present
//! before a realtime thread writes them.
//!
//! The bottom layer: it knows nothing of audio, tracks or messages. Only
//! `ring` and `doorbell` are built for the loom model.

pub mod doorbell;
#[cfg(not(loom))]
pub mod memory;
#[cfg(not(loom))]
pub mod region;
pub mod ring;
mod sync;
