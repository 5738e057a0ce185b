//! `outboard-bench latency`: the headline comparison. The same tracks, the
//! same script, paced in real time, run three ways:
//!
//! - `outboard`: each track's realtime thread talks to script worker
//!   processes through the shared-memory rings, never waiting;
//! - `inproc-gil`: the naive design: CPython embedded in this process, each
//!   track's realtime thread takes the GIL and calls the script every block;
//! - `native`: no scripts at all, the lower bound.
//!
//! `--hog` adds a GIL-heavy Python script alongside: in `inproc-gil` a Python
//! thread of this process, in `outboard` a worker process of its own.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use outboard_engine::measurement::histogram::{Histogram, Percentiles};
use outboard_engine::realtime::graph::{BlockProcessor, Graph, GraphConfig, GraphTrack, Source};
use outboard_engine::realtime::track::{Track, TrackConfig, TrackStats};
use outboard_engine::wire::control::ScriptSpec;
use outboard_engine::workers::process::locate_scripts_host;
use outboard_engine::workers::supervisor::{ScriptedTrack, Supervisor, SupervisorConfig};
use outboard_scripts_host::{BlockIn, RealtimeRuntime};
use serde_json::json;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    Outboard,
    InprocGil,
    Native,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Outboard => "outboard",
            Mode::InprocGil => "inproc-gil",
            Mode::Native => "native",
        }
    }
}

#[derive(Args, Debug)]
pub struct LatencyArgs {
    /// Modes to run, one after the other, in this order.
    #[arg(long, value_delimiter = ',', default_value = "native,outboard,inproc-gil")]
    mode: Vec<Mode>,
    #[arg(long, default_value_t = 8)]
    tracks: usize,
    /// Frames per block (and per period of the paced clock).
    #[arg(long, default_value_t = 64)]
    block: usize,
    #[arg(long, default_value_t = 48_000)]
    rate: u32,
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// L: blocks between pushing a block and playing its result (outboard).
    #[arg(long, default_value_t = 2)]
    latency_blocks: usize,
    /// Run a GIL-hogging Python script alongside.
    #[arg(long)]
    hog: bool,
    /// The script every track runs.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/tremolo.py"))]
    script: PathBuf,
    /// The hog script (`run()` never returns).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/gil_hog.py"))]
    hog_script: PathBuf,
    /// Promote script workers that keep up to SCHED_FIFO at this priority
    /// (the supervisor's `worker_priority`; off by default).
    #[arg(long)]
    worker_priority: Option<i32>,
    /// Write a JSON array with one object per mode here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write an SVG histogram of callback times and round trips here.
    #[arg(long)]
    plot: Option<PathBuf>,
}

struct RunResult {
    mode: Mode,
    blocks: u64,
    deadline_misses: u64,
    late_results: u64,
    callback: Histogram,
    roundtrip: Histogram,
    realtime: bool,
}

pub fn run(args: LatencyArgs) -> Result<(), String> {
    if args.tracks == 0 || args.block == 0 || args.seconds <= 0.0 || args.latency_blocks == 0 {
        return Err("need --tracks, --block, --seconds and --latency-blocks above zero".into());
    }
    let script = std::fs::canonicalize(&args.script).map_err(|e| format!("{}: {e}", args.script.display()))?;
    let hog_script =
        std::fs::canonicalize(&args.hog_script).map_err(|e| format!("{}: {e}", args.hog_script.display()))?;
    println!(
        "{} tracks, {} frames at {} Hz ({:.3} ms per block), {} s per mode, L = {} blocks{}, script {}\n",
        args.tracks,
        args.block,
        args.rate,
        args.block as f64 * 1000.0 / f64::from(args.rate),
        args.seconds,
        args.latency_blocks,
        if args.hog { ", with a GIL hog" } else { "" },
        script.display()
    );
    let mut results = Vec::new();
    for &mode in &args.mode {
        results.push(run_mode(mode, &args, &script, &hog_script)?);
    }
    print_table(&results);
    if let Some(path) = &args.json {
        let runs: Vec<_> = results.iter().map(|r| to_json(r, &args)).collect();
        std::fs::write(path, serde_json::to_string_pretty(&runs).expect("serialisable"))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        println!("wrote {}", path.display());
    }
    if let Some(path) = &args.plot {
        plot(path, &results)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

fn track_config(i: usize, args: &LatencyArgs, scripted: bool) -> TrackConfig {
    let mut cfg = TrackConfig::new(i as u32, format!("track {i}"));
    cfg.block = args.block;
    cfg.sample_rate = f64::from(args.rate);
    cfg.latency_blocks = args.latency_blocks;
    cfg.scripted = scripted;
    cfg
}

fn param_names() -> Vec<String> {
    ["mix", "rate_hz", "depth"].iter().map(|s| s.to_string()).collect()
}

fn source(i: usize) -> Source {
    Source::Sine { freq: 110.0 * (i + 1) as f32, gain: 0.1 }
}

fn run_mode(mode: Mode, args: &LatencyArgs, script: &Path, hog_script: &Path) -> Result<RunResult, String> {
    let graph_config =
        GraphConfig { rate: f64::from(args.rate), period: args.block, priority: Some(80), master_channels: 2 };
    let mut supervisor = None;
    let mut stats = Vec::new();
    let tracks: Vec<GraphTrack> = match mode {
        Mode::Outboard => {
            let template = track_config(0, args, true);
            let mut config = SupervisorConfig::new(locate_scripts_host(None)?, &template);
            config.echo_log = true;
            config.worker_priority = args.worker_priority;
            let sup = Supervisor::start(config);
            if args.hog {
                sup.add_hog(hog_script.to_path_buf(), "run");
            }
            let tracks = (0..args.tracks)
                .map(|i| {
                    let (track, port) = Track::new(track_config(i, args, true));
                    stats.push(track.stats().clone());
                    sup.add_track(ScriptedTrack::new(port, script.to_path_buf(), param_names()));
                    GraphTrack { name: format!("track {i}"), processor: Box::new(track), source: source(i) }
                })
                .collect();
            supervisor = Some(sup);
            tracks
        }
        Mode::Native => (0..args.tracks)
            .map(|i| {
                let (track, _port) = Track::new(track_config(i, args, false));
                stats.push(track.stats().clone());
                GraphTrack { name: format!("track {i}"), processor: Box::new(track), source: source(i) }
            })
            .collect(),
        Mode::InprocGil => {
            let runtime = Arc::new(RealtimeRuntime::new(None, None)?);
            for i in 0..args.tracks {
                let cfg = track_config(i, args, true);
                runtime.load(&ScriptSpec {
                    slot: i,
                    track: i as u32,
                    name: cfg.name.clone(),
                    path: script.to_path_buf(),
                    channels: cfg.channels,
                    frames: cfg.block,
                    rate: cfg.sample_rate,
                    latency_blocks: 0,
                    params: param_names(),
                    values: Vec::new(),
                    hints: Vec::new(),
                    instrument: false,
                });
            }
            if args.hog {
                start_inproc_hog(hog_script)?;
            }
            (0..args.tracks)
                .map(|i| GraphTrack {
                    name: format!("track {i}"),
                    processor: Box::new(InprocTrack::new(runtime.clone(), i, 2, args.block)),
                    source: source(i),
                })
                .collect()
        }
    };
    let mut graph = Graph::start(&graph_config, tracks, Box::new(|_| {}));
    // Outboard's workers need a moment to start Python and load the script:
    // the measurement starts once every track has heard back from its script.
    if mode == Mode::Outboard {
        let began = Instant::now();
        while !stats.iter().all(|s| s.roundtrip.count() > 20) {
            if began.elapsed() > Duration::from_secs(20) {
                return Err("the script workers did not answer within 20 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Steady state: new workers run on probation until they have kept up
        // for a second, then earn realtime priority (see the supervisor).
        std::thread::sleep(Duration::from_millis(1500));
    } else {
        std::thread::sleep(Duration::from_millis(200));
    }
    let late = |stats: &[Arc<TrackStats>]| stats.iter().map(|s| s.late_results.load(Ordering::Relaxed)).sum::<u64>();
    let base_late = late(&stats);
    let base_misses = graph.stats().deadline_misses.load(Ordering::Relaxed);
    let base_periods = graph.stats().periods.load(Ordering::Relaxed);
    graph.stats().callback.reset();
    for s in &stats {
        s.roundtrip.reset();
    }
    let bar = ProgressBar::new((args.seconds * 10.0) as u64);
    bar.set_style(ProgressStyle::with_template("{bar:30} {msg} [{elapsed}]").expect("valid template"));
    bar.set_message(mode.name());
    let began = Instant::now();
    while began.elapsed().as_secs_f64() < args.seconds {
        std::thread::sleep(Duration::from_millis(100));
        bar.set_position((began.elapsed().as_secs_f64() * 10.0) as u64);
    }
    let periods = graph.stats().periods.load(Ordering::Relaxed) - base_periods;
    let deadline_misses = graph.stats().deadline_misses.load(Ordering::Relaxed) - base_misses;
    let late_results = late(&stats) - base_late;
    let callback = Histogram::new();
    callback.merge(&graph.stats().callback);
    let realtime = graph.stats().realtime.load(Ordering::Relaxed);
    graph.stop();
    bar.finish_and_clear();
    let roundtrip = Histogram::new();
    for s in &stats {
        roundtrip.merge(&s.roundtrip);
    }
    drop(supervisor);
    Ok(RunResult {
        mode,
        blocks: periods * args.tracks as u64,
        deadline_misses,
        late_results,
        callback,
        roundtrip,
        realtime,
    })
}

/// A track whose realtime thread calls Python in this process, under the GIL.
struct InprocTrack {
    runtime: Arc<RealtimeRuntime>,
    slot: usize,
    channels: usize,
    seq: u64,
    samples: Vec<f32>,
    out: Vec<f32>,
    params: [f32; 3],
}

impl InprocTrack {
    fn new(runtime: Arc<RealtimeRuntime>, slot: usize, channels: usize, block: usize) -> InprocTrack {
        InprocTrack {
            runtime,
            slot,
            channels,
            seq: 0,
            samples: vec![0.0; channels * block],
            out: vec![0.0; channels * block],
            params: [1.0, 5.0, 0.5],
        }
    }
}

/// Gives the calling thread a Python thread state that outlives each call, as
/// a careful embedding does: without it every `Python::attach` on a thread
/// Python did not create makes and destroys a thread state, which would make
/// the baseline look worse than the GIL alone makes it.
fn keep_thread_state() {
    // SAFETY: Python is initialised (the runtime exists). PyGILState_Ensure
    // creates this thread's state and takes the GIL; PyEval_SaveThread
    // releases the GIL and keeps the state, which later Ensure/Release pairs
    // (inside Python::attach) reuse instead of deleting it.
    unsafe {
        let _ = pyo3::ffi::PyGILState_Ensure();
        let _ = pyo3::ffi::PyEval_SaveThread();
    }
}

impl BlockProcessor for InprocTrack {
    fn process(&mut self, inputs: &[&[f32]], outputs: &mut [&mut [f32]], frames: usize) {
        if self.seq == 0 {
            keep_thread_state();
        }
        for (c, input) in inputs.iter().enumerate().take(self.channels) {
            self.samples[c * frames..(c + 1) * frames].copy_from_slice(&input[..frames]);
        }
        let block = BlockIn {
            slot: self.slot,
            seq: self.seq,
            sample_time: self.seq * frames as u64,
            channels: self.channels,
            params: &self.params,
            transport: &outboard_engine::wire::block::Transport::default(),
            events: &[],
            samples: &self.samples,
        };
        let outcome = self.runtime.process(&block, &mut self.out);
        let wet = outcome.status == outboard_engine::wire::block::ResultStatus::Processed;
        for c in 0..self.channels {
            let src = if wet { &self.out } else { &self.samples };
            outputs[c][..frames].copy_from_slice(&src[c * frames..(c + 1) * frames]);
        }
        self.seq += 1;
    }

    fn channels(&self) -> usize {
        self.channels
    }
}

/// Starts the hog on a Python thread of this process's interpreter.
fn start_inproc_hog(path: &Path) -> Result<(), String> {
    use pyo3::prelude::*;
    let path = path.to_str().ok_or("hog path is not UTF-8")?.to_string();
    Python::attach(|py| -> PyResult<()> {
        let locals = pyo3::types::PyDict::new(py);
        locals.set_item("path", path)?;
        py.run(
            c"import importlib.util, threading\nspec = importlib.util.spec_from_file_location('gil_hog', path)\nhog = importlib.util.module_from_spec(spec)\nspec.loader.exec_module(hog)\nthreading.Thread(target=hog.run, name='gil-hog', daemon=True).start()\n",
            None,
            Some(&locals),
        )
    })
    .map_err(|e| format!("cannot start the in-process hog: {e}"))
}

fn to_json(r: &RunResult, args: &LatencyArgs) -> serde_json::Value {
    let p = |p: Percentiles| json!({"p50": p.p50, "p99": p.p99, "p999": p.p999, "max": p.max});
    json!({
        "mode": r.mode.name(),
        "tracks": args.tracks,
        "block": args.block,
        "rate": args.rate,
        "seconds": args.seconds,
        "latency_blocks": if r.mode == Mode::Outboard { args.latency_blocks } else { 0 },
        "hog": args.hog,
        "realtime_priority": r.realtime,
        "blocks": r.blocks,
        "deadline_misses": r.deadline_misses,
        "late_results": r.late_results,
        "callback_us": p(r.callback.percentiles()),
        "roundtrip_us": p(r.roundtrip.percentiles()),
    })
}

fn print_table(results: &[RunResult]) {
    println!(
        "{:<11} {:>8} {:>9} {:>8} | {:>38} | {:>38}",
        "mode",
        "blocks",
        "misses",
        "late",
        "callback µs  p50 / p99 / p99.9 / max",
        "round trip µs  p50 / p99 / p99.9 / max"
    );
    let fmt = |p: Percentiles| format!("{:>7.1} / {:>7.1} / {:>7.1} / {:>7.1}", p.p50, p.p99, p.p999, p.max);
    for r in results {
        let roundtrip = if r.roundtrip.count() > 0 { fmt(r.roundtrip.percentiles()) } else { "—".into() };
        println!(
            "{:<11} {:>8} {:>9} {:>8} | {:>38} | {:>38}",
            r.mode.name(),
            r.blocks,
            r.deadline_misses,
            r.late_results,
            fmt(r.callback.percentiles()),
            roundtrip
        );
    }
    let by = |m: Mode| results.iter().find(|r| r.mode == m);
    if let (Some(o), Some(g)) = (by(Mode::Outboard), by(Mode::InprocGil)) {
        let (o, g) = (o.callback.percentiles(), g.callback.percentiles());
        println!("\ninproc-gil vs outboard, callback p99.9: {:.0}x", g.p999 / o.p999.max(1e-3));
    }
    if let (Some(o), Some(n)) = (by(Mode::Outboard), by(Mode::Native)) {
        let (o, n) = (o.callback.percentiles(), n.callback.percentiles());
        println!("outboard engine overhead per track per block (callback p50 minus native's): {:.2} µs", o.p50 - n.p50);
    }
}

fn plot(path: &Path, results: &[RunResult]) -> Result<(), String> {
    use plotters::prelude::*;
    let root = SVGBackend::new(path, (1100, 460)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let panels = root.split_evenly((1, 2));
    let colors = [RGBColor(0x1f, 0x77, 0xb4), RGBColor(0xd6, 0x27, 0x28), RGBColor(0x2c, 0xa0, 0x2c)];
    for (panel, (title, pick)) in panels.iter().zip([
        ("callback time per track per block (µs)", 0usize),
        ("round trip: block pushed → result published (µs)", 1usize),
    ]) {
        let mut chart = ChartBuilder::on(panel)
            .caption(title, ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(55)
            .build_cartesian_2d((0.1f64..100_000f64).log_scale(), (1e-7f64..1.0f64).log_scale())
            .map_err(|e| e.to_string())?;
        chart.configure_mesh().x_desc("µs").y_desc("fraction of blocks").draw().map_err(|e| e.to_string())?;
        for (i, r) in results.iter().enumerate() {
            let h = if pick == 0 { &r.callback } else { &r.roundtrip };
            let total = h.count().max(1) as f64;
            let points: Vec<(f64, f64)> =
                h.buckets().into_iter().map(|(edge, n)| ((edge as f64 / 1000.0).max(0.1), n as f64 / total)).collect();
            if points.is_empty() {
                continue;
            }
            let color = colors[i % colors.len()];
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(2)))
                .map_err(|e| e.to_string())?
                .label(r.mode.name())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| e.to_string())?;
    }
    root.present().map_err(|e| e.to_string())
}
