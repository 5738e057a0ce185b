//! `outboard-bench events`: what notes cost the host's audio thread. The
//! plugin (`outboard.clap`) runs a script that answers every note it gets
//! with a note of its own (examples/scripts/transposer.py), paced in real
//! time at 64 frames / 48 kHz, with 0, 16 and 128 note events per 64-frame
//! call (half note-ons, half note-offs): each event travels to the script
//! in the block's message and its answer back out through the plugin's
//! output list. The same run without events (0) is the baseline; the
//! counts run in turn, twice, in mirrored order (0, 16, 128, 128, 16, 0) so
//! a drift of the machine weighs on all of them alike.
//!
//! The figure is `process()`'s time per call as the host measures it
//! (outboard-host's `process_us`), with the late results and the events
//! that came back.

use std::io::Write as _;
use std::path::PathBuf;

use clap::Args;
use outboard_host::{RunConfig, run};
use serde_json::{Value, json};

#[derive(Args, Debug)]
pub struct EventsArgs {
    /// The plugin to load (a bundle made by `cargo xtask bundle`).
    #[arg(long, default_value = "target/bundled/outboard.clap")]
    plugin: PathBuf,
    /// Events per 64-frame call, each run in turn.
    #[arg(long, value_delimiter = ',', default_value = "0,16,128")]
    counts: Vec<usize>,
    /// Seconds per run.
    #[arg(long, default_value_t = 20.0)]
    seconds: f64,
    /// The script (it should answer notes; the default answers each one).
    #[arg(long)]
    script: Option<PathBuf>,
    /// Write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

const BLOCK: usize = 64;

/// A notes file with `count` events in every 64-frame block: note-ons and
/// note-offs of distinct keys, spread over the block.
fn notes_file(dir: &std::path::Path, count: usize, seconds: f64) -> Result<PathBuf, String> {
    let path = dir.join(format!("notes-{count}.txt"));
    let mut out = std::io::BufWriter::new(std::fs::File::create(&path).map_err(|e| e.to_string())?);
    let blocks = (seconds * 48_000.0 / BLOCK as f64).ceil() as usize;
    let pairs = count / 2;
    for block in 0..blocks {
        for i in 0..pairs {
            // A note on early in the block, its note off later in it.
            let on = block * BLOCK + i * (BLOCK / 2) / pairs.max(1);
            let key = 24 + (i + block) % 80;
            writeln!(out, "{on} on {key} 0.8 {}", i % 16).map_err(|e| e.to_string())?;
            writeln!(out, "{} off {key} 0 {}", on + BLOCK / 2, i % 16).map_err(|e| e.to_string())?;
        }
    }
    out.flush().map_err(|e| e.to_string())?;
    Ok(path)
}

pub fn run_bench(args: EventsArgs) -> Result<(), String> {
    if !args.plugin.exists() {
        return Err(format!("{} not found: run `cargo xtask bundle` first", args.plugin.display()));
    }
    let script =
        args.script.clone().unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/transposer.py"));
    let dir = std::env::temp_dir().join(format!("outboard-bench-events-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let mut order = args.counts.clone();
    order.extend(args.counts.iter().rev());
    let mut rows: Vec<Value> = Vec::new();
    for &count in &order {
        let mut config = RunConfig::new(&args.plugin);
        config.seconds = args.seconds;
        config.block = BLOCK as u32;
        config.script = Some(script.clone());
        config.lock_memory = true;
        config.echo_log = false;
        if count > 0 {
            config.notes = Some(notes_file(&dir, count, args.seconds)?.to_string_lossy().into_owned());
        }
        let report = run(&config)?;
        let instance = &report.per_instance[0];
        let p = instance.process_us;
        // Every event the script sent out (the host keeps the first 100 000).
        let answered = instance.output_events.len() as u64 + instance.output_events_dropped;
        eprintln!(
            "{count:>4} events/call: process p50 {:.2} µs p99 {:.2} µs p99.9 {:.2} µs, {} late results, \
             {} notes sent, {answered} answered",
            p.p50,
            p.p99,
            p.p999,
            instance.late_results.unwrap_or(0),
            instance.notes_sent,
        );
        rows.push(json!({
            "events_per_call": count,
            "process_us": {"p50": p.p50, "p99": p.p99, "p999": p.p999, "max": p.max},
            "late_results": instance.late_results,
            "calls": instance.process_calls,
            "notes_sent": instance.notes_sent,
            "answered": answered,
            "input_events_dropped": instance.input_events_dropped,
            "output_events_refused": instance.output_events_refused,
        }));
    }
    let _ = std::fs::remove_dir_all(&dir);
    // The median over the runs of each count, and its ratio to no events.
    let median_of = |count: usize, key: &str| {
        let mut v: Vec<f64> = rows
            .iter()
            .filter(|r| r["events_per_call"] == count)
            .filter_map(|r| r["process_us"][key].as_f64())
            .collect();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    };
    let base = args.counts.first().copied().unwrap_or(0);
    println!("| events per 64-frame call | process() p50 µs | p99 µs | p50 vs {base} events |");
    println!("| --- | --- | --- | --- |");
    let mut summary = Vec::new();
    for &count in &args.counts {
        let (p50, p99) = (median_of(count, "p50"), median_of(count, "p99"));
        let ratio = p50 / median_of(base, "p50");
        println!("| {count} | {p50:.2} | {p99:.2} | {ratio:.2}x |");
        summary.push(json!({"events_per_call": count, "p50": p50, "p99": p99, "p50_ratio": ratio}));
    }
    if let Some(path) = &args.json {
        let body = json!({"runs": rows, "summary": summary, "seconds": args.seconds, "script": script});
        std::fs::write(path, serde_json::to_string_pretty(&body).map_err(|e| e.to_string())?)
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}
