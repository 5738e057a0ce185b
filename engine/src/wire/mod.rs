//! The wire format between the host and a worker: which ring of a region
//! carries what, the block messages on a track's rings, and the control
//! messages on the worker's control rings.

pub mod block;
pub mod control;
pub mod declared;
