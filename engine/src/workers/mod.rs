//! Worker processes: the job pool, the supervisor of realtime tracks'
//! workers, the Python environment a worker runs, and what workers say.

pub mod pool;
pub mod process;
pub mod python_env;
pub mod script_log;
pub mod supervisor;
