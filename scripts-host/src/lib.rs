//! # outboard-scripts-host
//!
//! The scripting worker: CPython embedded with pyo3, one interpreter (and one
//! GIL) per process, attached to its host through a shared region (see
//! `outboard_engine::region`). This library holds the Python side; `main.rs`
//! is the worker process around it.
//!
//! ## What it guarantees
//!
//! - A script that fails (missing file, syntax error, missing function, an
//!   exception, a result JSON cannot carry) produces a [`JobReply`] error that
//!   names the file and, where there is one, the line, with Python's traceback;
//!   the interpreter keeps serving the next job.
//! - A script file is loaded again when it changes (mtime or size), so edits
//!   take effect at the next job.
//!
//! Nothing here is realtime: it holds the GIL, allocates and does I/O. It runs
//! in its own process precisely so that none of that reaches an audio thread.

use std::sync::Once;
use std::sync::atomic::{AtomicUsize, Ordering};

use outboard_engine::protocol::{JobError, JobReply};
use outboard_engine::stats::StatsRow;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

/// The runtime's Python source, compiled into the binary.
const JOBS_PY: &std::ffi::CStr = pyo3::ffi::c_str!(include_str!("../python/outboard_jobs.py"));

/// Index of this worker, as `outboard.worker_index` shows it to scripts.
static WORKER_INDEX: AtomicUsize = AtomicUsize::new(usize::MAX);

/// The `outboard` module scripts can import.
#[pymodule]
mod outboard {
    use super::*;

    /// Writes a line to the host's log (the worker's stderr), tagged with the worker.
    #[pyfunction]
    fn log(message: &str) {
        eprintln!("[outboard worker {}] {message}", worker_label());
    }

    #[pymodule_init]
    fn init(module: &Bound<'_, PyModule>) -> PyResult<()> {
        let index = WORKER_INDEX.load(Ordering::Relaxed);
        module.add("worker_index", if index == usize::MAX { None } else { Some(index) })?;
        module.add("__version__", env!("CARGO_PKG_VERSION"))?;
        Ok(())
    }
}

fn worker_label() -> String {
    match WORKER_INDEX.load(Ordering::Relaxed) {
        usize::MAX => format!("pid {}", std::process::id()),
        index => format!("{index} pid {}", std::process::id()),
    }
}

/// Starts the interpreter once per process, with the `outboard` module registered.
fn start_python(worker_index: Option<usize>) {
    static START: Once = Once::new();
    START.call_once(|| {
        if let Some(index) = worker_index {
            WORKER_INDEX.store(index, Ordering::Relaxed);
        }
        pyo3::append_to_inittab!(outboard);
        Python::initialize();
    });
}

/// The embedded interpreter's job runner.
pub struct JobRuntime {
    run_job: Py<PyAny>,
    run_threads: Py<PyAny>,
}

/// Outcome of the in-process threads baseline.
#[derive(Debug)]
pub struct ThreadsRun {
    pub results: Vec<serde_json::Value>,
    pub stats: Vec<StatsRow>,
    pub seconds: f64,
}

impl JobRuntime {
    /// Starts Python (once per process) and loads the runtime.
    pub fn new(worker_index: Option<usize>) -> Result<JobRuntime, String> {
        start_python(worker_index);
        Python::attach(|py| {
            let module = PyModule::from_code(py, JOBS_PY, c"outboard_jobs.py", c"outboard_jobs")?;
            Ok(JobRuntime {
                run_job: module.getattr("run_job")?.unbind(),
                run_threads: module.getattr("run_threads")?.unbind(),
            })
        })
        .map_err(|e: PyErr| format!("cannot start the Python job runtime: {e}"))
    }

    /// Runs one job request (JSON, as the host sent it) and returns the reply
    /// JSON to send back. Never fails: every error becomes an error reply.
    pub fn run(&self, request_json: &[u8]) -> Vec<u8> {
        Python::attach(|py| {
            let reply = self
                .run_job
                .call1(py, (PyBytes::new(py, request_json),))
                .and_then(|reply| reply.extract::<String>(py));
            match reply {
                Ok(json) => json.into_bytes(),
                Err(e) => JobReply {
                    result: Err(JobError::new("RuntimeError", format!("the job runtime failed: {e}"))),
                    seconds: 0.0,
                }
                .to_json(),
            }
        })
    }

    /// The GIL baseline: `function(*args)` for every args list, on `nthreads`
    /// Python threads of this process's one interpreter.
    pub fn run_threads(
        &self,
        file: &str,
        function: &str,
        arg_lists: &[Vec<serde_json::Value>],
        nthreads: usize,
    ) -> Result<ThreadsRun, String> {
        let args_json = serde_json::to_string(arg_lists).expect("JSON values serialise");
        let out: String = Python::attach(|py| {
            let json = py.import("json")?;
            let arg_lists = json.call_method1("loads", (args_json,))?;
            self.run_threads.call1(py, (file, function, arg_lists, nthreads))?.extract::<String>(py)
        })
        .map_err(|e: PyErr| format!("threads baseline failed: {e}"))?;
        let value: serde_json::Value = serde_json::from_str(&out).map_err(|e| e.to_string())?;
        let stats = value["stats"]
            .as_array()
            .map(|rows| {
                rows.iter()
                    .map(|r| StatsRow {
                        worker: r["worker"].as_str().unwrap_or_default().to_string(),
                        jobs: r["jobs"].as_u64().unwrap_or(0),
                        seconds: r["seconds"].as_f64().unwrap_or(0.0),
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(ThreadsRun {
            results: value["results"].as_array().cloned().unwrap_or_default(),
            stats,
            seconds: value["seconds"].as_f64().unwrap_or(0.0),
        })
    }
}
