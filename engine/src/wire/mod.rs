//! The wire format between the host and a worker: which ring of a region
//! carries what, the block messages on a track's rings, and the control
//! messages on the worker's control rings.
//!
//! Everything both sides must agree on is here, and nothing else: the
//! worker (`outboard-scripts-host`) imports this module and [`crate::shm`]
//! from the engine, and nothing of the host's tracks or workers.
//!
//! - [`rings`]: the ring map of a worker's region, and every ring's shape;
//! - [`block`]: the block messages on a track slot's rings (headers, the
//!   `Process` layout, the transport, events), and the checks of both
//!   directions (`BlockHeader::check_process`, `BlockHeader::check_reply`);
//! - [`control`]: the control messages, [`control::Request`] (host →
//!   worker) and [`control::Reply`] (worker → host), with typed bodies;
//! - [`declared`]: what a script declares, read from its worker's
//!   `ScriptDeclared` reply;
//! - [`launch`]: the worker's command line, and what it does first;
//! - [`log`]: the log records a worker writes on its stderr.

pub mod block;
pub mod control;
pub mod declared;
pub mod launch;
pub mod log;
pub mod rings;
