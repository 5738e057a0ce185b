//! `outboard-bench soak`: many tracks running the well-behaved example
//! scripts for a long time, paced in real time like `latency`: what slowly
//! goes wrong shows here. Reports deadline misses, late results, script
//! errors, restarts, round trips, and memory (the bench's and each worker's
//! resident set) and descriptors at the start and at the end.
//!
//! The scripts are the realtime examples: gain.py and tremolo.py (audio
//! rate), melody.py (control rate, on a plucked voice), pad.py (both rates,
//! a saw voice) and drone.py (both, a sine voice), one per track in turn.
//! gil_hog.py (a hog by design) and part_sum.py (a job, no hooks) are not
//! among them. The supervisor runs with its defaults: up to 2 × cores
//! workers, so tracks share workers.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use outboard_engine::measurement::histogram::Histogram;
use outboard_engine::realtime::graph::{Graph, GraphConfig, GraphTrack, Source};
use outboard_engine::realtime::track::{Track, TrackConfig, TrackStats};
use outboard_engine::realtime::voice::Waveform;
use outboard_engine::workers::process::locate_scripts_host;
use outboard_engine::workers::supervisor::{ScriptedTrack, Supervisor, SupervisorConfig};
use serde_json::{Value, json};

use outboard_host::procfs;

/// The realtime example scripts, and the voice each track plays.
const SCRIPTS: [(&str, Option<Waveform>); 5] = [
    ("gain.py", None),
    ("tremolo.py", None),
    ("melody.py", Some(Waveform::Pluck)),
    ("pad.py", Some(Waveform::Saw)),
    ("drone.py", Some(Waveform::Sine)),
];

#[derive(Args, Debug)]
pub struct SoakArgs {
    #[arg(long, default_value_t = 16)]
    tracks: usize,
    #[arg(long, default_value_t = 600.0)]
    seconds: f64,
    /// L: blocks between pushing a block and playing its result.
    #[arg(long, default_value_t = 2)]
    latency_blocks: usize,
    /// Folder with the example scripts.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts"))]
    scripts: PathBuf,
    /// Copy the workers' log to stderr as it comes.
    #[arg(long)]
    verbose: bool,
    #[arg(long)]
    json: Option<PathBuf>,
}

/// Counters summed over the tracks, and what the processes hold, at one moment.
#[derive(Clone, Debug)]
struct Snapshot {
    at_s: f64,
    periods: u64,
    deadline_misses: u64,
    late: u64,
    errors: u64,
    faults: u64,
    restarts: u64,
    bench_rss_kib: u64,
    fds: usize,
    /// Resident set of each worker, by pid.
    workers: Vec<(u32, u64)>,
}

impl Snapshot {
    fn take(began: Instant, graph: &Graph, stats: &[Arc<TrackStats>], supervisor: &Supervisor) -> Snapshot {
        let sum = |f: fn(&TrackStats) -> &AtomicU64| stats.iter().map(|s| f(s).load(Ordering::Relaxed)).sum();
        Snapshot {
            at_s: began.elapsed().as_secs_f64(),
            periods: graph.stats().periods.load(Ordering::Relaxed),
            deadline_misses: graph.stats().deadline_misses.load(Ordering::Relaxed),
            late: sum(|s| &s.late_results),
            errors: sum(|s| &s.script_errors),
            faults: sum(|s| &s.faults),
            restarts: supervisor.restarts(),
            bench_rss_kib: procfs::rss_kib(procfs::own_pid()),
            fds: procfs::fd_count(),
            workers: supervisor.worker_pids().into_iter().map(|pid| (pid, procfs::rss_kib(pid))).collect(),
        }
    }

    fn workers_rss_kib(&self) -> u64 {
        self.workers.iter().map(|(_, rss)| rss).sum()
    }

    fn to_json(&self) -> Value {
        json!({
            "at_s": self.at_s,
            "bench_rss_kib": self.bench_rss_kib,
            "workers_rss_kib": self.workers.iter().map(|(pid, rss)| json!({"pid": pid, "rss_kib": rss})).collect::<Vec<_>>(),
            "workers_rss_kib_total": self.workers_rss_kib(),
            "fds": self.fds,
        })
    }
}

pub fn run(args: SoakArgs) -> Result<(), String> {
    if args.tracks == 0 || args.seconds <= 0.0 || args.latency_blocks == 0 {
        return Err("need --tracks, --seconds and --latency-blocks above zero".into());
    }
    let scripts = std::fs::canonicalize(&args.scripts).map_err(|e| format!("{}: {e}", args.scripts.display()))?;
    let config_of = |i: usize| {
        let mut cfg = TrackConfig::new(i as u32, format!("{} {i}", SCRIPTS[i % SCRIPTS.len()].0));
        cfg.latency_blocks = args.latency_blocks;
        cfg.voice = SCRIPTS[i % SCRIPTS.len()].1;
        cfg
    };
    let mut config = SupervisorConfig::new(locate_scripts_host(None)?, &config_of(0));
    config.echo_log = args.verbose;
    let workers_cap = config.max_workers;
    let supervisor = Supervisor::start(config);
    let (mut stats, mut tracks) = (Vec::new(), Vec::new());
    for i in 0..args.tracks {
        let (track, port) = Track::new(config_of(i));
        stats.push(track.stats().clone());
        let params = ["mix", "gain", "rate_hz", "depth"].map(String::from).to_vec();
        supervisor.add_track(ScriptedTrack::new(port, scripts.join(SCRIPTS[i % SCRIPTS.len()].0), params));
        tracks.push(GraphTrack {
            name: format!("track {i}"),
            processor: Box::new(track),
            source: Source::Sine { freq: 110.0 * (1 + i % 8) as f32, gain: 0.05 },
        });
    }
    println!(
        "{} tracks running {} in turn, 64 frames at 48000 Hz, L = {} blocks, up to {workers_cap} workers, {} s\n",
        args.tracks,
        SCRIPTS.map(|(s, _)| s).join(", "),
        args.latency_blocks,
        args.seconds
    );
    let master_bad = Arc::new(AtomicU64::new(0));
    let sink_bad = master_bad.clone();
    let mut graph = Graph::start(
        &GraphConfig { rate: 48_000.0, period: 64, priority: Some(80), master_channels: 2 },
        tracks,
        Box::new(move |master| {
            let bad = master.iter().filter(|s| !s.is_finite()).count();
            sink_bad.fetch_add(bad as u64, Ordering::Relaxed);
        }),
    );
    // The measurement starts once every track hears back from its script,
    // and the workers have settled (see `latency`).
    let began = Instant::now();
    while !stats.iter().all(|s| s.roundtrip.count() > 20) {
        if began.elapsed() > Duration::from_secs(60) {
            return Err("the script workers did not answer within 60 s".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(1500));
    for s in &stats {
        s.roundtrip.reset();
    }
    let began = Instant::now();
    let start = Snapshot::take(began, &graph, &stats, &supervisor);
    let at_start: Vec<(u64, u64)> = stats
        .iter()
        .map(|s| (s.late_results.load(Ordering::Relaxed), s.script_errors.load(Ordering::Relaxed)))
        .collect();
    let mut samples = vec![start.clone()];
    println!(
        "{:>8} {:>10} {:>8} {:>8} {:>8} {:>9} {:>13} {:>16}",
        "seconds", "periods", "misses", "late", "errors", "restarts", "bench RSS MiB", "workers RSS MiB"
    );
    print_row(&start, &start);
    let report_every = Duration::from_secs_f64((args.seconds / 10.0).clamp(1.0, 60.0));
    let mut next_report = report_every;
    while began.elapsed().as_secs_f64() < args.seconds {
        std::thread::sleep(Duration::from_millis(100).min(next_report.saturating_sub(began.elapsed())));
        if began.elapsed() >= next_report || began.elapsed().as_secs_f64() >= args.seconds {
            let now = Snapshot::take(began, &graph, &stats, &supervisor);
            print_row(&start, &now);
            samples.push(now);
            next_report += report_every;
        }
    }
    let end = samples.last().expect("the start at least").clone();
    let roundtrip = Histogram::new();
    for s in &stats {
        roundtrip.merge(&s.roundtrip);
    }
    let per_track: Vec<Value> = stats
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let p = s.roundtrip.percentiles();
            let (late, errors) = at_start[i];
            json!({
                "track": i,
                "script": SCRIPTS[i % SCRIPTS.len()].0,
                "late_results": s.late_results.load(Ordering::Relaxed) - late,
                "script_errors": s.script_errors.load(Ordering::Relaxed) - errors,
                "events": s.events.load(Ordering::Relaxed),
                "late_events": s.late_events.load(Ordering::Relaxed),
                "roundtrip_us": {"p50": p.p50, "p99": p.p99, "max": p.max},
            })
        })
        .collect();
    graph.stop();
    let p = roundtrip.percentiles();
    let workers_same = start.workers.iter().map(|w| w.0).eq(end.workers.iter().map(|w| w.0));
    println!(
        "\nover {:.0} s: {} deadline misses, {} late results, {} script errors, {} link faults, {} restarts \
         ({}), {} non-finite master samples",
        end.at_s,
        end.deadline_misses - start.deadline_misses,
        end.late - start.late,
        end.errors - start.errors,
        end.faults - start.faults,
        end.restarts - start.restarts,
        if workers_same { "the same worker processes throughout" } else { "worker processes changed" },
        master_bad.load(Ordering::Relaxed)
    );
    println!("round trip µs p50 / p99 / p99.9 / max: {:.1} / {:.1} / {:.1} / {:.1}", p.p50, p.p99, p.p999, p.max);
    println!(
        "memory: bench {:.1} → {:.1} MiB, workers {:.1} → {:.1} MiB ({} workers); descriptors {} → {}",
        start.bench_rss_kib as f64 / 1024.0,
        end.bench_rss_kib as f64 / 1024.0,
        start.workers_rss_kib() as f64 / 1024.0,
        end.workers_rss_kib() as f64 / 1024.0,
        end.workers.len(),
        start.fds,
        end.fds
    );
    if let Some(path) = &args.json {
        let doc = json!({
            "tracks": args.tracks,
            "seconds": end.at_s,
            "block": 64,
            "rate": 48000,
            "latency_blocks": args.latency_blocks,
            "workers": end.workers.len(),
            "periods": end.periods - start.periods,
            "deadline_misses": end.deadline_misses - start.deadline_misses,
            "late_results": end.late - start.late,
            "script_errors": end.errors - start.errors,
            "link_faults": end.faults - start.faults,
            "restarts": end.restarts - start.restarts,
            "same_workers": workers_same,
            "master_non_finite": master_bad.load(Ordering::Relaxed),
            "roundtrip_us": {"p50": p.p50, "p99": p.p99, "p999": p.p999, "max": p.max},
            "start": start.to_json(),
            "end": end.to_json(),
            "timeline": samples.iter().map(|s| json!({
                "at_s": s.at_s, "deadline_misses": s.deadline_misses - start.deadline_misses,
                "late_results": s.late - start.late, "bench_rss_kib": s.bench_rss_kib,
                "workers_rss_kib": s.workers_rss_kib(),
            })).collect::<Vec<_>>(),
            "per_track": per_track,
        });
        std::fs::write(path, serde_json::to_string_pretty(&doc).expect("serialisable"))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

fn print_row(start: &Snapshot, now: &Snapshot) {
    println!(
        "{:>8.0} {:>10} {:>8} {:>8} {:>8} {:>9} {:>13.1} {:>16.1}",
        now.at_s,
        now.periods - start.periods,
        now.deadline_misses - start.deadline_misses,
        now.late - start.late,
        now.errors - start.errors,
        now.restarts - start.restarts,
        now.bench_rss_kib as f64 / 1024.0,
        now.workers_rss_kib() as f64 / 1024.0
    );
}
