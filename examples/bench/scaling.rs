//! `outboard-bench scaling`: the seed's experiment (Parallel Python's
//! `dynamic_ncpus.py`), with three engines in one run:
//!
//! - `native`: the engine's job server running the vectorised kernel;
//! - `workers`: the same Python `part_sum` in scripts-host worker processes,
//!   one interpreter each (the Parallel Python equivalent);
//! - `threads`: that Python function on ncpus Python threads inside one
//!   embedded interpreter (the GIL baseline).

use std::path::PathBuf;
use std::time::Instant;

use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use outboard_engine::compute::{JobServer, partial_sum, partial_sum_scalar, seed_parts};
use outboard_engine::measurement::stats::JobStats;
use outboard_engine::wire::control::JobRequest;
use outboard_engine::workers::pool::WorkerPool;
use outboard_engine::workers::process::locate_scripts_host;
use outboard_scripts_host::JobRuntime;
use serde_json::json;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Engine {
    Native,
    Workers,
    Threads,
}

impl Engine {
    fn name(self) -> &'static str {
        match self {
            Engine::Native => "native",
            Engine::Workers => "workers",
            Engine::Threads => "threads",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Engine::Native => "native: Outboard's job server, vectorised partial sum",
            Engine::Workers => "workers: Python part_sum in outboard-scripts-host processes (Parallel Python's way)",
            Engine::Threads => "threads: Python part_sum on Python threads in one interpreter (the GIL)",
        }
    }
}

#[derive(Args, Debug)]
pub struct ScalingArgs {
    /// Terms of the partial sum: x runs from 1 to TERMS - 1, as in the seed.
    #[arg(long, default_value_t = 20_000_000)]
    terms: u64,
    /// Jobs the range is cut into.
    #[arg(long, default_value_t = 64)]
    parts: u64,
    /// Worker counts to run, in order.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8,16,1")]
    ncpus: Vec<usize>,
    /// Engines to compare.
    #[arg(long, value_delimiter = ',', default_value = "native,workers,threads")]
    engines: Vec<Engine>,
    /// Times each native row this many times and keeps the median: a native
    /// row takes milliseconds, so one descheduling would swamp a single sample.
    /// The Python rows take seconds and run once, as in the seed.
    #[arg(long, default_value_t = 5)]
    native_repeat: usize,
    /// The Python script with `part_sum(start, end)`.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/part_sum.py"))]
    script: PathBuf,
    /// Write the runs as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

struct Run {
    engine: Engine,
    ncpus: usize,
    seconds: f64,
    sum: f64,
}

pub fn run(args: ScalingArgs) -> Result<(), String> {
    if args.terms < 2 || args.parts == 0 || args.ncpus.is_empty() || args.ncpus.contains(&0) {
        return Err("need --terms >= 2, --parts >= 1 and every --ncpus >= 1".into());
    }
    let script = std::fs::canonicalize(&args.script).map_err(|e| format!("script {}: {e}", args.script.display()))?;
    let script = script.to_str().ok_or("script path is not UTF-8")?.to_string();
    let parts = seed_parts(1, args.terms, args.parts);
    let max_ncpus = *args.ncpus.iter().max().expect("non-empty");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "Partial sum of {} terms in {} parts, ncpus {:?}, on {cores} cores (native rows: median of {})\n",
        args.terms - 1,
        parts.len(),
        args.ncpus,
        args.native_repeat.max(1)
    );

    let bar = ProgressBar::new((args.engines.len() * args.ncpus.len()) as u64);
    bar.set_style(ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} [{elapsed}]").expect("valid template"));
    let mut runs = Vec::new();
    let mut tables = Vec::new();
    for &engine in &args.engines {
        let mut engine_runs = Vec::new();
        let stats = match engine {
            Engine::Native => {
                let mut server = JobServer::new(1, max_ncpus, parts.len().max(64));
                for &ncpus in &args.ncpus {
                    bar.set_message(format!("{} on {ncpus}", engine.name()));
                    server.set_ncpus(ncpus);
                    let mut samples = Vec::new();
                    let mut sum = 0.0;
                    for _ in 0..args.native_repeat.max(1) {
                        let began = Instant::now();
                        let jobs: Vec<_> = parts
                            .iter()
                            .map(|&(s, e)| server.submit(s, e).map_err(|e| format!("{e:?}")))
                            .collect::<Result<_, _>>()?;
                        sum = jobs
                            .into_iter()
                            .map(|j| server.wait(j).map_err(|e| format!("{e:?}")))
                            .sum::<Result<f64, _>>()?;
                        samples.push(began.elapsed().as_secs_f64());
                    }
                    samples.sort_by(f64::total_cmp);
                    engine_runs.push(Run { engine, ncpus, seconds: samples[samples.len() / 2], sum });
                    bar.inc(1);
                }
                server.stats()
            }
            Engine::Workers => {
                let exe = locate_scripts_host(None)?;
                let pool = WorkerPool::new(exe, 1).map_err(|e| e.to_string())?;
                for &ncpus in &args.ncpus {
                    bar.set_message(format!("{} on {ncpus}", engine.name()));
                    // Starting processes is Parallel Python's set_ncpus too; not timed.
                    pool.set_ncpus(ncpus).map_err(|e| e.to_string())?;
                    // Each worker imports the script before the clock starts, as
                    // Parallel Python's workers are up before its timing starts.
                    let warm = (0..ncpus * 2).map(|_| JobRequest::new(&script, "part_sum", vec![json!(1), json!(2)]));
                    for result in pool.run_all(warm) {
                        result.map_err(|e| e.to_string())?;
                    }
                    let began = Instant::now();
                    let jobs =
                        parts.iter().map(|&(s, e)| JobRequest::new(&script, "part_sum", vec![json!(s), json!(e)]));
                    let mut sum = 0.0;
                    for result in pool.run_all(jobs) {
                        sum += result.map_err(|e| e.to_string())?.as_f64().ok_or("part_sum returned a non-number")?;
                    }
                    engine_runs.push(Run { engine, ncpus, seconds: began.elapsed().as_secs_f64(), sum });
                    bar.inc(1);
                }
                pool.stats()
            }
            Engine::Threads => {
                let runtime = JobRuntime::new(None)?;
                let arg_lists: Vec<Vec<serde_json::Value>> =
                    parts.iter().map(|&(s, e)| vec![json!(s), json!(e)]).collect();
                let created = Instant::now();
                let mut stats = JobStats::default();
                for &ncpus in &args.ncpus {
                    bar.set_message(format!("{} on {ncpus}", engine.name()));
                    let began = Instant::now();
                    let out = runtime.run_threads(&script, "part_sum", &arg_lists, ncpus)?;
                    let seconds = began.elapsed().as_secs_f64();
                    let sum = out.results.iter().map(|v| v.as_f64().unwrap_or(f64::NAN)).sum();
                    engine_runs.push(Run { engine, ncpus, seconds, sum });
                    merge_rows(&mut stats, out.stats);
                    bar.inc(1);
                }
                stats.elapsed = created.elapsed();
                stats
            }
        };
        tables.push((engine, engine_runs.len(), stats));
        runs.extend(engine_runs);
    }
    bar.finish_and_clear();

    for (engine, _, stats) in &tables {
        println!("Using {}", engine.describe());
        let engine_runs: Vec<&Run> = runs.iter().filter(|r| r.engine == *engine).collect();
        let base = engine_runs[0].seconds;
        for run in &engine_runs {
            println!(
                "Starting {:>2} workers | partial sum is {:.11} | diff = {:+.11e} | time elapsed: {:>9.4} s | speedup {:>5.2}x",
                run.ncpus,
                run.sum,
                std::f64::consts::LN_2 - run.sum,
                run.seconds,
                base / run.seconds
            );
        }
        println!("{stats}\n");
    }

    // Baselines measured in this same run, on one core.
    let terms = (args.terms - 1) as f64;
    let began = Instant::now();
    let scalar = partial_sum_scalar(1, args.terms);
    let scalar_ns = began.elapsed().as_secs_f64() * 1e9 / terms;
    let began = Instant::now();
    let vector = partial_sum(1, args.terms);
    let vector_ns = began.elapsed().as_secs_f64() * 1e9 / terms;
    assert!((scalar - vector).abs() < 1e-12, "kernels disagree");
    println!(
        "Kernel on one core, whole range: scalar loop {scalar_ns:.3} ns/term, vectorised {vector_ns:.3} ns/term ({:.2}x)",
        scalar_ns / vector_ns
    );
    let first =
        |engine: Engine, ncpus: usize| runs.iter().find(|r| r.engine == engine && r.ncpus == ncpus).map(|r| r.seconds);
    if let (Some(one), Some(two)) = (first(Engine::Native, 1), first(Engine::Native, 2)) {
        println!("native: {:.3} ns/term on 1 core; 2 cores {:.2}x faster than 1", one * 1e9 / terms, one / two);
    }
    if let (Some(one), Some(two)) = (first(Engine::Workers, 1), first(Engine::Workers, 2)) {
        println!("workers: 2 processes {:.2}x faster than 1", one / two);
    }
    if let (Some(one), Some(two)) = (first(Engine::Threads, 1), first(Engine::Threads, 2)) {
        println!("threads: 2 threads {:.2}x faster than 1 (the GIL)", one / two);
    }
    if let (Some(native), Some(python)) = (first(Engine::Native, 1), first(Engine::Workers, 1)) {
        println!("native vs Python on one core: {:.0}x faster", python / native);
    }

    if let Some(path) = &args.json {
        let json = json!({
            "terms": args.terms,
            "parts": parts.len(),
            "cores": cores,
            "kernel_ns_per_term": {"scalar": scalar_ns, "vectorised": vector_ns},
            "runs": runs.iter().map(|r| json!({
                "engine": r.engine.name(), "ncpus": r.ncpus, "seconds": r.seconds, "sum": r.sum,
            })).collect::<Vec<_>>(),
        });
        std::fs::write(path, serde_json::to_string_pretty(&json).expect("serialisable"))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// Adds per-thread rows into a running table (thread names repeat across runs).
fn merge_rows(stats: &mut JobStats, rows: Vec<outboard_engine::measurement::stats::StatsRow>) {
    for row in rows {
        match stats.rows.iter_mut().find(|r| r.worker == row.worker) {
            Some(existing) => {
                existing.jobs += row.jobs;
                existing.seconds += row.seconds;
            }
            None => stats.rows.push(row),
        }
    }
}
