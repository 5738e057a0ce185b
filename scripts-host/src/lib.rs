//! # outboard-scripts-host
//!
//! The scripting worker: CPython embedded with pyo3, one interpreter (and one
//! GIL) per process, attached to its host through a shared region (see
//! `outboard_engine::shm::region`). This library holds the Python side; `main.rs`
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
//! - A track script's hooks are called only as `python/outboard_rt.py` lists:
//!   `setup` at each (re)load, before the load is answered; `process` and
//!   `tick` once per block the track sent, in order. Nothing calls a hook to
//!   warm up or probe a script.
//! - Every message about a track (its errors, reloads, `ctx.log`,
//!   `outboard.log` from its code) is one stderr line: 0x1E, then JSON
//!   `{"track":ID|null,"level":"error"|"warning"|"info","text":"..."}`
//!   (`outboard_rt.emit` writes them all; the format, and the levels'
//!   spellings, are `outboard_engine::wire::log`'s); any other stderr line
//!   is about the worker as a whole.
//!
//! Nothing here is realtime: it holds the GIL, allocates and does I/O. It runs
//! in its own process precisely so that none of that reaches an audio thread.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Once, OnceLock};

use outboard_engine::measurement::stats::StatsRow;
use outboard_engine::wire::control::{JobError, JobReply, JobRequest, Json, Reply};
use outboard_engine::wire::log::LogLevel;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

/// The runtime's Python source, compiled into the binary.
const JOBS_PY: &std::ffi::CStr = pyo3::ffi::c_str!(include_str!("../python/outboard_jobs.py"));

/// Index of this worker, as `outboard.worker_index` shows it to scripts.
static WORKER_INDEX: AtomicUsize = AtomicUsize::new(usize::MAX);

/// Where `outboard.log` sends its messages once the realtime runtime runs:
/// `outboard_rt.log_from_script`, which writes a record attributed to the
/// track whose code is running.
static LOG_SINK: OnceLock<Py<PyAny>> = OnceLock::new();

/// The `outboard` module scripts can import.
#[pymodule]
mod outboard {
    use super::*;

    /// Writes a message to the host's log (the worker's stderr). In a worker
    /// running track scripts it is a record attributed to the track whose
    /// code is running (see `outboard_rt.emit`); elsewhere (jobs) a plain
    /// line tagged with the worker.
    #[pyfunction]
    fn log(py: Python<'_>, message: &str) -> PyResult<()> {
        match LOG_SINK.get() {
            Some(sink) => sink.call1(py, (message,)).map(drop),
            None => {
                eprintln!("[outboard worker {}] {message}", worker_label());
                Ok(())
            }
        }
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
    /// Each call's return value, in the order of the args lists given.
    pub results: Vec<serde_json::Value>,
    /// One row per Python thread that ran calls: its name, how many calls it ran and the seconds spent in them.
    pub stats: Vec<StatsRow>,
    /// Wall-clock seconds for the whole run, all threads together.
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

    /// Runs one job request (its JSON as the host sent it: the runtime
    /// reads it) and returns the reply to send back (the runtime writes
    /// it). Never fails: every error becomes an error reply.
    pub fn run(&self, request: &Json<JobRequest>) -> Json<JobReply> {
        Python::attach(|py| {
            let reply = self
                .run_job
                .call1(py, (PyBytes::new(py, request.as_bytes()),))
                .and_then(|reply| reply.extract::<String>(py));
            match reply {
                Ok(json) => Json::from_bytes(json.into_bytes()),
                Err(e) => Json::new(&JobReply {
                    result: Err(JobError::new("RuntimeError", format!("the job runtime failed: {e}"))),
                    seconds: 0.0,
                }),
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

/// The realtime runtime's Python source.
const RT_PY: &std::ffi::CStr = pyo3::ffi::c_str!(include_str!("../python/outboard_rt.py"));
const ENV_PY: &std::ffi::CStr = pyo3::ffi::c_str!(include_str!("../python/outboard_env.py"));

/// The embedded interpreter's realtime side: per-track scripts and their hooks
/// (`python/outboard_rt.py` says which hook is called when).
pub struct RealtimeRuntime {
    load: Py<PyAny>,
    unload: Py<PyAny>,
    process: Py<PyAny>,
    warm_up: Py<PyAny>,
    check_reloads: Py<PyAny>,
    declaration: Py<PyAny>,
    report_bad_samples: Py<PyAny>,
    emit: Py<PyAny>,
    emit_for_slot: Py<PyAny>,
    /// Why the worker's Python environment was refused (said on each load).
    env_problem: Option<String>,
}

/// One block for a track's script.
#[derive(Clone, Copy)]
pub struct BlockIn<'a> {
    /// The track's slot in this worker.
    pub slot: usize,
    /// Block number (ctx.block) and its first sample (ctx.time).
    pub seq: u64,
    /// The block's first sample's position in the track's stream, in frames (ctx.time).
    pub sample_time: u64,
    /// Number of channels in `samples`; each has `samples.len() / channels` frames.
    pub channels: usize,
    /// The track's parameter values, by index, at the block's first frame.
    pub params: &'a [f32],
    /// The host's transport at the block's first frame.
    pub transport: &'a outboard_engine::wire::block::Transport,
    /// The host's events in the block, in time order.
    pub events: &'a [outboard_engine::wire::block::Event],
    /// The samples, planar: channel 0's frames, then channel 1's.
    pub samples: &'a [f32],
}

/// An event as the Python runtime passes it, both ways: (time, kind,
/// channel, key, value, note id, parameter index, MIDI bytes); kinds as
/// `outboard_engine::wire::block::Event::encode` numbers them.
type PyEvent = (i64, u8, i64, i64, f64, i64, i64, Vec<u8>);

/// What `outboard_rt.process` returns: status, the array (if any), and the
/// events.
type ProcessReply<'py> = (u32, Option<Bound<'py, PyAny>>, Vec<PyEvent>);

/// A host event as the Python runtime takes it.
fn py_event(event: &outboard_engine::wire::block::Event) -> PyEvent {
    use outboard_engine::wire::block::EventAction as A;
    let time = event.time.min(i64::MAX as u64) as i64;
    match event.action {
        A::NoteOn { channel, key, velocity, note_id } => (
            time,
            1,
            channel.into(),
            key.into(),
            velocity.into(),
            note_id.into(),
            0,
            vec![0x90 | channel, key, (velocity * 127.0).round().clamp(1.0, 127.0) as u8],
        ),
        A::NoteOff { channel, key, velocity, note_id } => (
            time,
            2,
            channel.into(),
            key.into(),
            velocity.into(),
            note_id.into(),
            0,
            vec![0x80 | channel, key, (velocity * 127.0).round() as u8],
        ),
        A::NoteChoke { channel, key, note_id } => {
            (time, 3, channel.into(), key.into(), 0.0, note_id.into(), 0, vec![0xB0 | channel, 120, 0])
        }
        A::Midi { data, len } => (time, 4, -1, -1, 0.0, -1, 0, data[..len as usize].to_vec()),
        A::ParamChange { index, value } => (time, 5, -1, -1, value.into(), -1, index.into(), Vec::new()),
        A::SetParam { index, value } => (time, 6, -1, -1, value.into(), -1, index.into(), Vec::new()),
    }
}

/// A script's event, checked as the track will check it (an event the
/// track would refuse is dropped here).
fn script_event(
    (time, kind, channel, key, value, note_id, index, data): PyEvent,
) -> Option<outboard_engine::wire::block::Event> {
    use outboard_engine::wire::block::{EVENT_BYTES, Event, EventAction as A};
    let time = u64::try_from(time).ok()?;
    let note = || Some((u8::try_from(channel).ok()?, u8::try_from(key).ok()?, i32::try_from(note_id).ok()?));
    let value = value as f32;
    let action = match kind {
        1 => {
            let (channel, key, note_id) = note()?;
            A::NoteOn { channel, key, velocity: value, note_id }
        }
        2 => {
            let (channel, key, note_id) = note()?;
            A::NoteOff { channel, key, velocity: value, note_id }
        }
        3 => {
            let (channel, key, note_id) = note()?;
            A::NoteChoke { channel, key, note_id }
        }
        4 => {
            let mut bytes = [0u8; 3];
            let len = data.len().min(3);
            bytes[..len].copy_from_slice(&data[..len]);
            A::Midi { data: bytes, len: u8::try_from(data.len()).ok()? }
        }
        6 => A::SetParam { index: u32::try_from(index).ok()?, value },
        _ => return None,
    };
    let mut bytes = [0u8; EVENT_BYTES];
    Event { time, action }.encode(&mut bytes);
    Event::decode(&bytes)
}

/// What one block's script run produced.
pub struct BlockOutcome {
    /// How the script fared: only with `Processed` does the output buffer hold the script's samples; otherwise
    /// the track plays dry.
    pub status: outboard_engine::wire::block::ResultStatus,
    /// Events from `tick`, in the order the script scheduled them.
    pub events: Vec<outboard_engine::wire::block::Event>,
}

impl RealtimeRuntime {
    /// Starts Python (once per process) and loads the realtime runtime; fails
    /// clearly when numpy is missing. With `python_env`, that environment's
    /// packages come first on `sys.path` (before numpy is imported); an
    /// environment that cannot be used is reported on every script loaded.
    pub fn new(worker_index: Option<usize>, python_env: Option<&std::path::Path>) -> Result<RealtimeRuntime, String> {
        start_python(worker_index);
        Python::attach(|py| {
            let env_problem = match python_env {
                None => None,
                Some(env) => {
                    let module = PyModule::from_code(py, ENV_PY, c"outboard_env.py", c"outboard_env")
                        .map_err(|e| format!("cannot start the environment loader: {e}"))?;
                    let why = module.getattr("use").and_then(|f| f.call1((env.to_string_lossy().into_owned(),)));
                    match why {
                        Ok(why) => why.extract::<Option<String>>().map_err(|e| e.to_string())?,
                        Err(e) => {
                            Some(format!("outboard: the Python environment {} cannot be used: {e}", env.display()))
                        }
                    }
                }
            };
            if let Err(e) = py.import("numpy") {
                return Err(format!("numpy is not installed for this Python ({e}); `cargo xtask setup` installs it"));
            }
            let module = PyModule::from_code(py, RT_PY, c"outboard_rt.py", c"outboard_rt")
                .map_err(|e| format!("cannot start the realtime runtime: {e}"))?;
            let get = |name: &str| module.getattr(name).map(Bound::unbind).map_err(|e| e.to_string());
            // From now on outboard.log writes records attributed to tracks.
            let _ = LOG_SINK.set(get("log_from_script")?);
            Ok(RealtimeRuntime {
                load: get("load")?,
                unload: get("unload")?,
                process: get("process")?,
                warm_up: get("warm_up")?,
                check_reloads: get("check_reloads")?,
                declaration: get("declaration")?,
                report_bad_samples: get("report_bad_samples")?,
                emit: get("emit")?,
                emit_for_slot: get("emit_for_slot")?,
                env_problem,
            })
        })
    }

    /// Starts a track's script and runs its `setup` (errors go to the log;
    /// the track plays dry). Returns whether the script loaded.
    pub fn load(&self, spec: &outboard_engine::wire::control::ScriptSpec) -> bool {
        self.load_with_values(spec, &[])
    }

    /// [`load`](Self::load), with the parameters' current values (by index)
    /// for `setup` to see in `ctx.params`; those missing are 0.
    ///
    /// After the script's own setup, the runtime's path for a block (numpy
    /// arrays made and read back, the result checks) runs once on a
    /// throwaway silent block without calling any of the script's hooks, so
    /// that the first real block does not pay for first calls.
    pub fn load_with_values(&self, spec: &outboard_engine::wire::control::ScriptSpec, values: &[f32]) -> bool {
        if let Some(why) = &self.env_problem {
            self.report(Some(spec.track), LogLevel::Error, why);
        }
        let loaded = Python::attach(|py| {
            let path = spec.path.to_string_lossy().into_owned();
            let args = (
                spec.slot,
                spec.track,
                spec.name.as_str(),
                path,
                spec.channels,
                spec.frames,
                spec.rate,
                spec.latency_blocks,
                spec.params.clone(),
                values.to_vec(),
                spec.instrument,
                spec.hints.clone(),
            );
            self.load.call1(py, args).and_then(|ok| ok.extract::<bool>(py))
        });
        match loaded {
            Ok(true) => {
                let silent = vec![0.0f32; spec.channels * spec.frames];
                let mut out = vec![0.0f32; silent.len()];
                let params = [0.0f32; outboard_engine::wire::block::MAX_PARAMS];
                let block = BlockIn {
                    slot: spec.slot,
                    seq: 0,
                    sample_time: 0,
                    channels: spec.channels,
                    params: &params,
                    transport: &outboard_engine::wire::block::Transport::default(),
                    events: &[],
                    samples: &silent,
                };
                self.run_block(&self.warm_up, &block, &mut out);
                true
            }
            Ok(false) => false,
            Err(e) => {
                let text = format!("outboard: cannot load {} for {}: {e}", spec.path.display(), spec.name);
                self.report(Some(spec.track), LogLevel::Error, &text);
                false
            }
        }
    }

    /// Writes a message on the host's log as a record (see
    /// `outboard_rt.emit`), about `track` or, with `None`, the worker.
    pub fn report(&self, track: Option<u32>, level: LogLevel, text: &str) {
        Python::attach(|py| {
            if self.emit.call1(py, (track, level.as_str(), text)).is_err() {
                eprintln!("{text}");
            }
        });
    }

    /// Drops the script in `slot` and forgets its repeated-error counts (`outboard_rt.unload`), leaving the slot
    /// empty. Errors are ignored, and unloading an empty slot does nothing.
    pub fn unload(&self, slot: usize) {
        Python::attach(|py| {
            let _ = self.unload.call1(py, (slot,));
        });
    }

    /// Reloads scripts whose files changed (checked at most every 250 ms
    /// each), running their `setup` again. Returns the slots reloaded.
    pub fn check_reloads(&self) -> Vec<usize> {
        let checked = Python::attach(|py| self.check_reloads.call0(py)?.extract::<Vec<usize>>(py));
        checked.unwrap_or_else(|e| {
            self.report(None, LogLevel::Error, &format!("outboard: reload check failed: {e}"));
            Vec::new()
        })
    }

    /// What the script in `slot` declares, as the `ScriptDeclared` reply
    /// to send (its body is `outboard_rt.declaration`'s JSON); `None` for
    /// an empty slot.
    pub fn declaration(&self, slot: usize) -> Option<Reply> {
        Python::attach(|py| self.declaration.call1(py, (slot,)).and_then(|d| d.extract::<Option<String>>(py)).ok())
            .flatten()
            .map(|json| Reply::ScriptDeclared { slot, body: Json::from_bytes(json.into_bytes()) })
    }

    /// Runs a track's hooks on one block (its `process`, then its `tick`);
    /// the processed block lands in `out` when the status is Processed.
    pub fn process(&self, block: &BlockIn<'_>, out: &mut [f32]) -> BlockOutcome {
        self.run_block(&self.process, block, out)
    }

    /// Calls `function` (`outboard_rt.process` or `warm_up`) on one block
    /// and reads back what it returns.
    fn run_block(&self, function: &Py<PyAny>, block: &BlockIn<'_>, out: &mut [f32]) -> BlockOutcome {
        let BlockIn { slot, seq, sample_time, channels, params, transport, events, samples } = *block;
        use numpy::{PyArray1, PyArray2, PyArrayMethods};
        use outboard_engine::wire::block::{MAX_SAMPLE, ResultStatus, samples_playable};
        let frames = samples.len() / channels.max(1);
        let outcome: PyResult<BlockOutcome> = Python::attach(|py| {
            let block = PyArray1::from_slice(py, samples).reshape([channels, frames])?;
            let params = pyo3::types::PyTuple::new(py, params)?;
            let events: Vec<PyEvent> = events.iter().map(py_event).collect();
            let t = transport;
            let transport = (
                t.flags,
                t.tempo,
                t.beats,
                t.seconds,
                t.bar_start,
                t.bar_number,
                t.loop_start,
                t.loop_end,
                t.numerator,
                t.denominator,
            );
            let reply = function.call1(py, (slot, block, seq, sample_time, params, events, transport))?;
            let (status, array, raw_events): ProcessReply<'_> = reply.extract(py)?;
            let mut status = match status {
                0 => ResultStatus::Processed,
                2 => ResultStatus::NoProcess,
                _ => ResultStatus::ScriptError,
            };
            if status == ResultStatus::Processed {
                match array.as_ref().map(|a| a.cast::<PyArray2<f32>>()) {
                    Some(Ok(array)) => {
                        // SAFETY: we hold the GIL, so no Python code runs while
                        // we read, and no Rust borrow of this array exists (it
                        // came from the script just now). This skips numpy's
                        // dynamic borrow tracking, a measurable cost per block.
                        match unsafe { array.as_slice() } {
                            Ok(slice) if slice.len() == out.len() => out.copy_from_slice(slice),
                            _ => status = ResultStatus::ScriptError,
                        }
                    }
                    _ => status = ResultStatus::ScriptError,
                }
                // The track would refuse the block anyway (see block::MAX_SAMPLE);
                // said here, the script's author learns why, with file and line.
                if status == ResultStatus::Processed && !samples_playable(out) {
                    status = ResultStatus::ScriptError;
                    let what = if out.iter().all(|s| s.is_finite()) {
                        format!("samples out of range (beyond +/-{MAX_SAMPLE}, +60 dBFS)")
                    } else {
                        "non-finite samples (NaN or Inf)".to_string()
                    };
                    self.report_bad_samples.call1(py, (slot, what))?;
                }
            }
            let events = raw_events.into_iter().filter_map(script_event).collect();
            Ok(BlockOutcome { status, events })
        });
        outcome.unwrap_or_else(|e| {
            let text = format!("outboard: the realtime runtime failed: {e}");
            let reported =
                Python::attach(|py| self.emit_for_slot.call1(py, (slot, LogLevel::Error.as_str(), &text)).is_ok());
            if !reported {
                eprintln!("{text}");
            }
            BlockOutcome { status: ResultStatus::ScriptError, events: Vec::new() }
        })
    }
}
