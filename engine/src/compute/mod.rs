//! The compute core: the partial-sum DSP load and the job server that spreads
//! it over cores (DESIGN.md §5).

pub mod job_server;
pub mod kernel;

pub use job_server::{JobId, JobServer, JobServerError};
pub use kernel::{partial_sum, partial_sum_scalar, seed_parts};
