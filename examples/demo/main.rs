//! `outboard-demo`: Outboard as a standalone instrument. Four tracks, each a
//! native voice played and processed by a Python script in worker processes,
//! mixed to the sound card through cpal (JACK when a server runs, else ALSA),
//! with a live status, WAV capture and a JSON report.
//!
//! The audio callback is the graph's driver: each callback ticks the graph
//! (collects the tracks' previous period, releases the next) and copies the
//! master mix out. It never waits, locks or allocates.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
use outboard_engine::measurement::histogram::Histogram;
use outboard_engine::realtime::graph::{Graph, GraphConfig, GraphStats, GraphTrack, Source};
use outboard_engine::realtime::track::{Track, TrackConfig, TrackStats};
use outboard_engine::realtime::voice::Waveform;
use outboard_engine::workers::process::locate_scripts_host;
use outboard_engine::workers::supervisor::{ScriptedTrack, Supervisor, SupervisorConfig};
use serde_json::json;

#[derive(Parser, Debug)]
#[command(name = "outboard-demo", version, about = "Outboard's standalone audio demo")]
struct Args {
    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long)]
    seconds: Option<f64>,
    /// Capture the master output to this WAV file (32-bit float).
    #[arg(long)]
    wav: Option<PathBuf>,
    /// Write a JSON report here at the end.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Partial-sum terms per block on the dsp-load track (the stand-in DSP load).
    #[arg(long, default_value_t = 20_000)]
    dsp_terms: u64,
    /// L: blocks between a block and its script's result. Three, one more
    /// than the engine's default: the demo runs a deliberate CPU hog beside
    /// the other scripts, and until the supervisor has spotted and demoted it
    /// (a few blocks after the music starts) the others need the headroom.
    #[arg(long, default_value_t = 3)]
    latency_blocks: usize,
    /// Folder with the scripts (melody.py, pad.py, drone.py, gil_hog.py).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts"))]
    scripts: PathBuf,
    /// Audio backend: auto (JACK if a server runs, else ALSA), jack, alsa.
    #[arg(long, default_value = "auto")]
    backend: String,
}

struct DemoTrack {
    name: &'static str,
    script: &'static str,
    voice: Waveform,
}

const TRACKS: [DemoTrack; 4] = [
    DemoTrack { name: "melody", script: "melody.py", voice: Waveform::Pluck },
    DemoTrack { name: "pad", script: "pad.py", voice: Waveform::Saw },
    DemoTrack { name: "dsp-load", script: "drone.py", voice: Waveform::Sine },
    DemoTrack { name: "gil-hog", script: "gil_hog.py", voice: Waveform::Noise },
];

/// Frames per internal block and per graph period.
const PERIOD: usize = 64;

fn main() -> std::process::ExitCode {
    match run(Args::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("outboard-demo: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn pick_device(backend: &str) -> Result<(cpal::Device, &'static str), String> {
    let want_jack = backend == "jack" || backend == "auto";
    if want_jack {
        if let Ok(host) = cpal::host_from_id(cpal::HostId::Jack)
            && let Some(device) = host.default_output_device()
        {
            return Ok((device, "JACK"));
        }
        if backend == "jack" {
            return Err("no JACK server answered (start one, e.g. `jackd -d dummy -r 48000 -p 64`)".into());
        }
    }
    let host = cpal::host_from_id(cpal::HostId::Alsa).map_err(|e| format!("ALSA: {e}"))?;
    let device = host.default_output_device().ok_or("no ALSA output device (and no JACK server)")?;
    Ok((device, "ALSA"))
}

fn run(args: Args) -> Result<(), String> {
    if !outboard_engine::realtime::graph::lock_memory() {
        eprintln!("outboard-demo: warning: cannot lock memory (mlockall); a page fault could cause a dropout");
    }
    let (device, backend) = pick_device(&args.backend)?;
    let supported = device.default_output_config().map_err(|e| format!("output config: {e}"))?;
    let rate = supported.sample_rate();
    let channels = supported.channels().max(1) as usize;
    let config = cpal::StreamConfig {
        channels: supported.channels(),
        sample_rate: rate,
        buffer_size: cpal::BufferSize::Default,
    };

    // Tracks and their scripts.
    let template = track_config(0, "template", Waveform::Sine, f64::from(rate), args.latency_blocks);
    let mut sup_config = SupervisorConfig::new(locate_scripts_host(None)?, &template);
    sup_config.echo_log = false;
    let supervisor = Supervisor::start(sup_config);
    let mut graph_tracks = Vec::new();
    let mut stats = Vec::new();
    for (i, t) in TRACKS.iter().enumerate() {
        let (track, port) = Track::new(track_config(i as u32, t.name, t.voice, f64::from(rate), args.latency_blocks));
        if t.name == "dsp-load" {
            track.params().set_dsp_terms(args.dsp_terms);
        }
        stats.push(track.stats().clone());
        let script = args.scripts.join(t.script);
        if !script.is_file() {
            return Err(format!("script {} not found", script.display()));
        }
        supervisor.add_track(ScriptedTrack::new(port, script, vec!["mix".into()]));
        graph_tracks.push(GraphTrack { name: t.name.into(), processor: Box::new(track), source: Source::Silence });
    }
    let graph_config = GraphConfig { rate: f64::from(rate), period: PERIOD, priority: Some(70), master_channels: 2 };
    let (graph, mut driver) = Graph::start_with_driver(&graph_config, graph_tracks);

    // The WAV writer takes master samples from the callback over a ring.
    let (mut capture_tx, mut capture_rx) = rtrb::RingBuffer::<f32>::new(rate as usize * 2 * 2);
    let capture_on = args.wav.is_some();
    let dropped = Arc::new(AtomicU64::new(0));
    let xruns = Arc::new(AtomicU64::new(0));
    let callback_load = Arc::new(Histogram::new());
    let stop = Arc::new(AtomicBool::new(false));

    let (cb_dropped, cb_xruns, cb_load) = (dropped.clone(), xruns.clone(), callback_load.clone());
    let mut master = [0.0f32; PERIOD * 2];
    let mut master_pos = PERIOD;
    let stream = device
        .build_output_stream(
            config,
            move |data: &mut [f32], _: &cpal::OutputCallbackInfo| {
                let began = outboard_engine::realtime::clock::monotonic_ns();
                let frames = data.len() / channels;
                for f in 0..frames {
                    if master_pos == PERIOD {
                        driver.tick(&mut master, 2);
                        master_pos = 0;
                    }
                    let (l, r) = (master[master_pos * 2], master[master_pos * 2 + 1]);
                    for (c, out) in data[f * channels..(f + 1) * channels].iter_mut().enumerate() {
                        *out = if c % 2 == 0 { l } else { r };
                    }
                    if capture_on && (capture_tx.push(l).is_err() || capture_tx.push(r).is_err()) {
                        cb_dropped.fetch_add(1, Ordering::Relaxed);
                    }
                    master_pos += 1;
                }
                // Load: time spent here as a share of the buffer's duration (per mille).
                let spent = outboard_engine::realtime::clock::monotonic_ns().saturating_sub(began);
                let budget = (frames as u64 * 1_000_000_000 / u64::from(rate)).max(1);
                cb_load.record(spent * 1000 / budget);
            },
            move |err: cpal::Error| {
                if err.kind() == cpal::ErrorKind::Xrun {
                    cb_xruns.fetch_add(1, Ordering::Relaxed);
                }
            },
            None,
        )
        .map_err(|e| format!("cannot open the {backend} output: {e}"))?;
    // Start the sound once every worker has Python, numpy and its script
    // loaded, so the first blocks are not played dry for want of a worker.
    print!("outboard-demo: starting the script workers ...");
    let _ = std::io::stdout().flush();
    let waited = Instant::now();
    while !stats.iter().all(|s| s.script_ready.load(Ordering::Acquire)) {
        if waited.elapsed() > Duration::from_secs(30) {
            return Err("the script workers did not load their scripts within 30 s".into());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    println!(" ready in {:.2} s", waited.elapsed().as_secs_f64());
    stream.play().map_err(|e| format!("cannot start the {backend} output: {e}"))?;

    let flag = stop.clone();
    let _ = ctrlc::set_handler(move || flag.store(true, Ordering::Release));
    let writer = args.wav.clone().map(|path| {
        let stop = stop.clone();
        std::thread::spawn(move || write_wav(&path, rate, &mut capture_rx, &stop))
    });

    println!(
        "outboard-demo: {} tracks through Python scripts, {backend} at {rate} Hz, {PERIOD}-frame blocks (L = {} blocks, {:.1} ms). Ctrl-C stops.",
        TRACKS.len(),
        template.latency_blocks,
        template.latency_frames() as f64 * 1000.0 / f64::from(rate)
    );
    let began = Instant::now();
    let tty = std::io::stdout().is_terminal();
    let mut drawn = 0;
    let mut last_plain = Instant::now();
    while !stop.load(Ordering::Acquire) && args.seconds.is_none_or(|s| began.elapsed().as_secs_f64() < s) {
        std::thread::sleep(Duration::from_millis(100));
        let text = status(&stats, graph.stats(), &xruns, &callback_load, &supervisor, args.dsp_terms, began.elapsed());
        if tty {
            let mut out = std::io::stdout().lock();
            if drawn > 0 {
                let _ = write!(out, "\x1b[{drawn}A");
            }
            for line in text.lines() {
                let _ = writeln!(out, "\x1b[2K{line}");
            }
            let _ = out.flush();
            drawn = text.lines().count();
        } else if last_plain.elapsed() >= Duration::from_secs(1) {
            last_plain = Instant::now();
            println!("{}", text.lines().last().unwrap_or_default());
        }
    }
    let seconds = began.elapsed().as_secs_f64();
    stop.store(true, Ordering::Release);
    drop(stream);
    let deadline_misses = graph.stats().deadline_misses.load(Ordering::Relaxed);
    drop(graph);
    let report = report(seconds, deadline_misses, &stats, &xruns);
    drop(supervisor);
    if let Some(writer) = writer {
        match writer.join() {
            Ok(Ok(())) => println!("wrote the master output to {}", args.wav.as_ref().expect("wav").display()),
            Ok(Err(e)) => eprintln!("outboard-demo: WAV: {e}"),
            Err(_) => eprintln!("outboard-demo: the WAV writer failed"),
        }
        if dropped.load(Ordering::Relaxed) > 0 {
            eprintln!("outboard-demo: {} frames did not fit the capture ring", dropped.load(Ordering::Relaxed));
        }
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report).expect("serialisable"))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

fn track_config(id: u32, name: &str, voice: Waveform, rate: f64, latency_blocks: usize) -> TrackConfig {
    let mut cfg = TrackConfig::new(id, name);
    cfg.latency_blocks = latency_blocks.clamp(1, 64);
    cfg.block = PERIOD;
    cfg.sample_rate = rate;
    cfg.voice = Some(voice);
    cfg
}

fn status(
    stats: &[Arc<TrackStats>],
    graph: &GraphStats,
    xruns: &AtomicU64,
    load: &Histogram,
    supervisor: &Supervisor,
    dsp_terms: u64,
    elapsed: Duration,
) -> String {
    let log = supervisor.log_lines();
    let mut text = format!(
        "{:<9} {:<11} {:>16} {:>6} {:>7} {:>9}  {}\n",
        "track", "script", "round trip p50/p99", "late", "errors", "DSP load", "last message"
    );
    for (t, s) in TRACKS.iter().zip(stats) {
        let p = s.roundtrip.percentiles();
        let last = log
            .iter()
            .rev()
            .find(|l| {
                l.contains(&format!("({}, ", t.name))
                    || l.contains(&format!("[{}]", t.name))
                    || l.ends_with(&format!(" for {}", t.name))
            })
            .map(|l| short_message(l, t.script))
            .unwrap_or_default();
        text += &format!(
            "{:<9} {:<11} {:>7.0} /{:>5.0} µs {:>6} {:>7} {:>9}  {}\n",
            t.name,
            t.script,
            p.p50,
            p.p99,
            s.late_results.load(Ordering::Relaxed),
            s.script_errors.load(Ordering::Relaxed),
            if t.name == "dsp-load" { format!("{dsp_terms} t") } else { "—".into() },
            last
        );
    }
    let l = load.percentiles();
    text += &format!(
        "{:>5.1} s | callback load p50 {:.1}% max {:.1}% | xruns {} | deadline misses {} | restarts {}",
        elapsed.as_secs_f64(),
        l.p50 / 10.0 * 1000.0,
        l.max / 10.0 * 1000.0,
        xruns.load(Ordering::Relaxed),
        graph.deadline_misses.load(Ordering::Relaxed),
        supervisor.restarts()
    );
    text
}

/// A log line made to fit the status: no prefix, the script's bare file name.
fn short_message(line: &str, script: &str) -> String {
    let mut text = line.trim_start_matches("outboard: ").replace("script error in ", "");
    if let Some(start) = text.find('/')
        && let Some(end) = text[start..].find(script)
    {
        text.replace_range(start..start + end, "");
    }
    text.chars().take(90).collect()
}

fn report(seconds: f64, deadline_misses: u64, stats: &[Arc<TrackStats>], xruns: &AtomicU64) -> serde_json::Value {
    let tracks: Vec<_> = TRACKS
        .iter()
        .zip(stats)
        .map(|(t, s)| {
            let p = s.roundtrip.percentiles();
            json!({
                "name": t.name,
                "script": t.script,
                "late_results": s.late_results.load(Ordering::Relaxed),
                "last_late_block": s.last_late_block.load(Ordering::Relaxed),
                "script_errors": s.script_errors.load(Ordering::Relaxed),
                "roundtrip_us": {"p50": p.p50, "p99": p.p99, "max": p.max},
            })
        })
        .collect();
    json!({
        "seconds": seconds,
        "xruns": xruns.load(Ordering::Relaxed),
        "deadline_misses": deadline_misses,
        "tracks": tracks,
    })
}

fn write_wav(path: &Path, rate: u32, rx: &mut rtrb::Consumer<f32>, stop: &AtomicBool) -> Result<(), String> {
    let spec = hound::WavSpec {
        channels: 2,
        sample_rate: rate,
        bits_per_sample: 32,
        sample_format: hound::SampleFormat::Float,
    };
    let mut writer = hound::WavWriter::create(path, spec).map_err(|e| format!("{}: {e}", path.display()))?;
    loop {
        let stopping = stop.load(Ordering::Acquire);
        while let Ok(sample) = rx.pop() {
            writer.write_sample(sample).map_err(|e| e.to_string())?;
        }
        if stopping {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    writer.finalize().map_err(|e| e.to_string())
}
