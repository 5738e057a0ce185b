//! `outboard-bench faults`: every fault a script can commit, injected into a
//! running graph, and what it costs the audio.
//!
//! Each scenario starts a fresh graph: 8 tracks, 64 frames at 48 kHz, paced in
//! real time by the graph's clock thread at SCHED_FIFO (as `latency` runs
//! them). Track 0 gets the faulty script, the other seven run
//! `examples/scripts/gain.py`; every track has a worker of its own (a fault's
//! reach is its worker, see DESIGN.md §4), so "others affected" means the
//! fault got past its own worker. Every track's output is checked period by
//! period against its input delayed by exactly L blocks: it must be the
//! script's result (×0.5, the gain every script here applies) or the dry
//! input, finite and in range, nothing else.
//!
//! The faulty scripts are in `examples/scripts/faults/`: each plays like
//! gain.py until the bench arms it by creating `<script>.armed` beside it.
//! File faults (deleted, broken, huge script) and a broken scripts host need
//! no script of their own, and the killed host is a child process running
//! the hidden `faults-host` subcommand.
//!
//! Per scenario: deadline misses from the fault's injection on (and apart:
//! while the workers started, and in a moment before that with the graph
//! alone, where misses can only be the machine's), late results and script
//! errors on the faulty track and on the others (from warm-up on), whether
//! and how fast the faulty track recovered, whether the others were
//! affected, what the log said, and leftovers: processes, descriptors, shared
//! regions, /dev/shm, resident memory.
//!
//! Here: the arguments, the run over the scenarios and the hidden
//! `faults-host`. Beside it: `scenarios` (the table of faults and what each
//! is expected to do), `inject` (the rig each scenario runs on, injecting
//! the fault and watching the recovery), `measurement` (the probe on every
//! track's output, the counters, the leftovers) and `report` (what a
//! scenario found, and the table).

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::json;

use outboard_host::procfs;

mod inject;
mod measurement;
mod report;
mod scenarios;

use inject::{Rig, run_scenario};
use report::{Report, print_table};
use scenarios::{SCENARIOS, Scenario};

/// The gain every script in this bench applies to its block.
const SCRIPT_GAIN: f32 = 0.5;
/// Amplitude of the tracks' input sines; no correct output exceeds it.
const INPUT_GAIN: f32 = 0.1;
/// Consecutive processed periods that count as "recovered" (about 67 ms).
const STABLE_PERIODS: u64 = 50;
/// Size of the huge script (`script-huge`).
const HUGE_SCRIPT_BYTES: usize = 50 << 20;
/// How long each graph runs before its workers are started.
const CONTROL_WINDOW: Duration = Duration::from_millis(250);
/// Resident memory a scenario may leave behind without it counting as a
/// leak: the allocator keeps some of what 8 tracks and their threads freed.
const RSS_SLACK_KIB: u64 = 16 << 10;

#[derive(Args, Debug)]
pub struct FaultsArgs {
    /// Seconds each scenario runs at least (it also waits for its recovery,
    /// up to a bound). Default 6, or 1.5 with --short.
    #[arg(long)]
    seconds_per_scenario: Option<f64>,
    /// Run only these scenarios (repeatable, or a comma list; see --list).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// The short form the tests run: 1.5 s per scenario, brief fault phases.
    #[arg(long)]
    short: bool,
    /// The supervisor's heartbeat timeout: a worker that stops beating this
    /// long is restarted.
    #[arg(long, default_value_t = 1000)]
    hang_timeout_ms: u64,
    #[arg(long, default_value_t = 8)]
    tracks: usize,
    /// Address-space limit of each worker, in MiB, where the memory bomb
    /// stops. Lower than the supervisor's default (2 GiB) so that the bomb
    /// meets it (a worker takes ~210 MiB) before the heartbeat timeout does.
    #[arg(long, default_value_t = 512)]
    memory_limit_mib: u64,
    /// Folder with gain.py and faults/*.py.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts"))]
    scripts: PathBuf,
    /// Copy the workers' log to stderr as it comes.
    #[arg(long)]
    verbose: bool,
    /// Run without the supervisor's warm spare worker (a crashed or hung
    /// worker is then replaced by a cold start): the baseline for the spare.
    #[arg(long)]
    no_spare: bool,
    /// Start workers with fork instead of posix_spawn: the baseline for the
    /// page faults a worker's start costs the realtime threads.
    #[arg(long)]
    fork: bool,
    /// List the scenarios and exit.
    #[arg(long)]
    list: bool,
    /// Write `{"scenarios": [...]}` here.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// The run's settings, resolved from the arguments.
struct Settings {
    seconds: f64,
    /// How long a persistent fault is held before it is removed.
    hold: Duration,
    /// How long the graph keeps running after the faulty track recovered.
    observe: Duration,
    hang_timeout: Duration,
    tracks: usize,
    memory_limit: u64,
    scripts: PathBuf,
    verbose: bool,
    spare: bool,
    fork: bool,
}

pub fn run(args: FaultsArgs) -> Result<(), String> {
    if args.list {
        for s in SCENARIOS {
            println!("{:<24} {}", s.name, s.about);
        }
        return Ok(());
    }
    let unknown: Vec<&String> = args.only.iter().filter(|n| !SCENARIOS.iter().any(|s| s.name == *n)).collect();
    if !unknown.is_empty() {
        return Err(format!("no scenario {unknown:?}; --list shows them"));
    }
    if args.tracks < 2 {
        return Err("need --tracks 2 or more: one faulty track and others to watch".into());
    }
    let seconds = args.seconds_per_scenario.unwrap_or(if args.short { 1.5 } else { 6.0 });
    let scripts = std::fs::canonicalize(&args.scripts).map_err(|e| format!("{}: {e}", args.scripts.display()))?;
    let settings = Settings {
        seconds,
        hold: Duration::from_secs_f64((seconds / 3.0).max(0.4)),
        observe: Duration::from_secs_f64((seconds / 3.0).max(0.4)),
        hang_timeout: Duration::from_millis(args.hang_timeout_ms),
        tracks: args.tracks,
        memory_limit: args.memory_limit_mib << 20,
        scripts,
        verbose: args.verbose,
        spare: !args.no_spare,
        fork: args.fork,
    };
    let chosen: Vec<&Scenario> =
        SCENARIOS.iter().filter(|s| args.only.is_empty() || args.only.iter().any(|n| n == s.name)).collect();
    println!(
        "{} scenarios, {} tracks (track 0 faulty, the others gain.py), 64 frames at 48000 Hz, L = 2 blocks, \
         heartbeat timeout {} ms, worker memory limit {} MiB, {} s per scenario\n",
        chosen.len(),
        settings.tracks,
        args.hang_timeout_ms,
        args.memory_limit_mib,
        settings.seconds
    );
    let rss_at_start = procfs::rss_kib(procfs::own_pid());
    let mut reports = Vec::new();
    for scenario in chosen {
        eprint!("{:<24} ...", scenario.name);
        let report = run_scenario(scenario, &settings)?;
        eprintln!(" {}", if report.recovered { "recovered" } else { "NOT RECOVERED" });
        reports.push(report);
    }
    print_table(&reports);
    let rss_at_end = procfs::rss_kib(procfs::own_pid());
    println!(
        "\nbench RSS {:.1} MiB at start, {:.1} MiB after all scenarios",
        rss_at_start as f64 / 1024.0,
        rss_at_end as f64 / 1024.0
    );
    if let Some(path) = &args.json {
        let doc = json!({
            "tracks": settings.tracks,
            "block": 64,
            "rate": 48000,
            "seconds_per_scenario": settings.seconds,
            "hang_timeout_ms": args.hang_timeout_ms,
            "memory_limit_mib": args.memory_limit_mib,
            "rss_kib": {"start": rss_at_start, "end": rss_at_end},
            "scenarios": reports.iter().map(Report::to_json).collect::<Vec<_>>(),
        });
        std::fs::write(path, serde_json::to_string_pretty(&doc).expect("serialisable"))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

#[derive(Args, Debug)]
pub struct HostArgs {
    #[arg(long, default_value_t = 2)]
    tracks: usize,
    #[arg(long)]
    script: PathBuf,
}

/// The hidden `faults-host`: a host with scripted tracks that prints
/// `{"pid": P, "workers": [...]}` once every track is processed, then runs
/// until it is killed (or, as a safety net, its parent goes or a minute passes).
pub fn host(args: HostArgs) -> Result<(), String> {
    let parent = rustix::process::getppid();
    let settings = Settings {
        seconds: 0.0,
        hold: Duration::ZERO,
        observe: Duration::ZERO,
        hang_timeout: Duration::from_secs(1),
        tracks: args.tracks,
        memory_limit: 2 << 30,
        scripts: PathBuf::new(),
        verbose: false,
        spare: true,
        fork: false,
    };
    // Not at realtime priority: its audio is not what is measured, and its
    // threads must not compete with the measured graph's.
    let rig = Rig::start(&settings, &vec![args.script; args.tracks], None, false)?;
    rig.wait_until_wet(&(0..args.tracks).collect::<Vec<_>>(), Duration::from_secs(30))?;
    let ready = json!({"pid": procfs::own_pid(), "workers": rig.supervisor.worker_pids()});
    let mut stdout = std::io::stdout();
    writeln!(stdout, "{ready}").and_then(|()| stdout.flush()).map_err(|e| e.to_string())?;
    let began = Instant::now();
    while began.elapsed() < Duration::from_secs(60) && rustix::process::getppid() == parent {
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}
