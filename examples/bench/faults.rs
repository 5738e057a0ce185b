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

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use outboard_engine::realtime::clock::monotonic_ns;
use outboard_engine::realtime::graph::{BlockProcessor, Graph, GraphConfig, GraphTrack, Source};
use outboard_engine::realtime::track::{Track, TrackConfig, TrackPort, TrackStats};
use outboard_engine::workers::process::locate_scripts_host;
use outboard_engine::workers::supervisor::{ScriptedTrack, Supervisor, SupervisorConfig};
use serde_json::{Value, json};

use outboard_host::procfs;

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
    /// List the scenarios and exit.
    #[arg(long)]
    list: bool,
    /// Write `{"scenarios": [...]}` here.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// How a scenario injects its fault.
#[derive(Clone, Copy, Debug)]
enum Inject {
    /// SIGKILL to the faulty track's worker (`Supervisor::kill_worker_of`).
    Kill,
    /// The track runs `faults/<script>`; the bench arms it, writing `kind` into the arm file.
    Arm { script: &'static str, kind: &'static str },
    /// The running script's file is deleted or replaced (by a rename, as an
    /// editor saves: the new file is written before the graph starts, so that
    /// writing 50 MB is not part of what is measured); it is restored later.
    Replace(FileFault),
    /// The faulty track's supervisor is given a broken `outboard-scripts-host`.
    Exe(ExeFault),
    /// A host (this program, `faults-host`) is SIGKILLed with its workers running.
    HostKilled,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FileFault {
    Delete,
    SyntaxError,
    Huge,
    SetupRaises,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ExeFault {
    Missing,
    NotExecutable,
}

/// What should happen, and so what "recovered" means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// The worker is replaced; the track plays dry until its successor
    /// answers. Recovery: injection → first processed period.
    Restart,
    /// As `Restart`, and the track itself must have found its rings
    /// corrupt: the host's validation caught the hostile data, not only the
    /// worker's own reaction to it.
    RestartOnBadRings,
    /// The fault shows (the track plays dry), then the track is processed
    /// again, whether its worker was restarted or lived through it.
    /// Recovery: injection → first processed period.
    Recovers,
    /// Dry, with a script error per block, while armed; processed again once
    /// disarmed. Recovery: disarm → first processed period.
    DryWhileArmed,
    /// The script's own (finite, in-range) output is played while armed.
    /// Recovery: disarm → first period at the usual gain.
    PlayedWhileArmed,
    /// The previous version keeps running, never a dry period. Recovery:
    /// the file restored → the reload logged.
    KeepsRunning,
    /// No worker can be started: dry throughout, no crash, said on the log.
    DryThroughout,
    /// The host is killed: its workers die with it. Recovery: kill → the
    /// last worker gone.
    WorkersDieWithHost,
}

struct Scenario {
    name: &'static str,
    about: &'static str,
    inject: Inject,
    expect: Expect,
    /// What the log must say for the fault to count as diagnosed ("" for
    /// faults that are not errors).
    log_says: &'static str,
}

const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "worker-killed",
        about: "SIGKILL to the worker mid-stream",
        inject: Inject::Kill,
        expect: Expect::Restart,
        log_says: "SIGKILL",
    },
    Scenario {
        name: "worker-exits",
        about: "os._exit(1) from process()",
        inject: Inject::Arm { script: "exit_self.py", kind: "" },
        expect: Expect::Restart,
        log_says: "exited (exit status: 1)",
    },
    Scenario {
        name: "hang-busy",
        about: "while True: pass in process()",
        inject: Inject::Arm { script: "hang_busy.py", kind: "" },
        expect: Expect::Restart,
        log_says: "stopped beating",
    },
    Scenario {
        name: "hang-sleep",
        about: "time.sleep(60) in process(): hung in a C call",
        inject: Inject::Arm { script: "hang_sleep.py", kind: "" },
        expect: Expect::Restart,
        log_says: "stopped beating",
    },
    Scenario {
        name: "raise-every-call",
        about: "process() raises on every block",
        inject: Inject::Arm { script: "raise_always.py", kind: "" },
        expect: Expect::DryWhileArmed,
        log_says: "RuntimeError: raise_always.py is armed",
    },
    Scenario {
        name: "raise-in-setup",
        about: "a new version whose setup() raises",
        inject: Inject::Replace(FileFault::SetupRaises),
        expect: Expect::KeepsRunning,
        log_says: "setup failed on purpose",
    },
    Scenario {
        name: "segfault",
        about: "ctypes.string_at(0): SIGSEGV in the worker",
        inject: Inject::Arm { script: "segfault.py", kind: "" },
        expect: Expect::Restart,
        log_says: "SIGSEGV",
    },
    Scenario {
        name: "memory-bomb",
        about: "hoards memory until the worker's limit",
        inject: Inject::Arm { script: "memory_bomb.py", kind: "" },
        expect: Expect::Recovers,
        // The limit raises MemoryError; on a loaded machine the hoarding
        // worker (demoted) can miss its beats first and be restarted as
        // hung: either way the track recovers and the log says why.
        log_says: "MemoryError|stopped beating",
    },
    Scenario {
        name: "output-nan",
        about: "NaN samples",
        inject: Inject::Arm { script: "bad_output.py", kind: "nan" },
        expect: Expect::DryWhileArmed,
        log_says: "non-finite",
    },
    Scenario {
        name: "output-inf",
        about: "+/-Inf samples",
        inject: Inject::Arm { script: "bad_output.py", kind: "inf" },
        expect: Expect::DryWhileArmed,
        log_says: "non-finite",
    },
    Scenario {
        name: "output-denormal",
        about: "subnormal samples (finite: played)",
        inject: Inject::Arm { script: "bad_output.py", kind: "denormal" },
        expect: Expect::PlayedWhileArmed,
        log_says: "",
    },
    Scenario {
        name: "output-huge",
        about: "samples of 1e30",
        inject: Inject::Arm { script: "bad_output.py", kind: "huge" },
        expect: Expect::DryWhileArmed,
        log_says: "out of range",
    },
    Scenario {
        name: "output-shape",
        about: "an array of the wrong shape",
        inject: Inject::Arm { script: "bad_output.py", kind: "shape" },
        expect: Expect::DryWhileArmed,
        log_says: "returned shape",
    },
    Scenario {
        name: "output-dtype",
        about: "float64 instead of float32",
        inject: Inject::Arm { script: "bad_output.py", kind: "dtype" },
        expect: Expect::DryWhileArmed,
        log_says: "dtype float64",
    },
    Scenario {
        name: "hostile-scribble",
        about: "the worker writes random bytes over its whole shared region",
        inject: Inject::Arm { script: "scribble.py", kind: "" },
        expect: Expect::RestartOnBadRings,
        log_says: "sent malformed data",
    },
    Scenario {
        name: "script-deleted",
        about: "the running script's file is deleted",
        inject: Inject::Replace(FileFault::Delete),
        expect: Expect::KeepsRunning,
        log_says: "cannot read it",
    },
    Scenario {
        name: "script-syntax-error",
        about: "the running script is replaced by one with a syntax error",
        inject: Inject::Replace(FileFault::SyntaxError),
        expect: Expect::KeepsRunning,
        log_says: "SyntaxError",
    },
    Scenario {
        name: "script-huge",
        about: "the running script is replaced by a 50 MB one",
        inject: Inject::Replace(FileFault::Huge),
        expect: Expect::KeepsRunning,
        log_says: "larger than",
    },
    Scenario {
        name: "host-exe-missing",
        about: "outboard-scripts-host is not there",
        inject: Inject::Exe(ExeFault::Missing),
        expect: Expect::DryThroughout,
        log_says: "No such file",
    },
    Scenario {
        name: "host-exe-not-executable",
        about: "outboard-scripts-host is not executable",
        inject: Inject::Exe(ExeFault::NotExecutable),
        expect: Expect::DryThroughout,
        log_says: "Permission denied",
    },
    Scenario {
        name: "host-killed",
        about: "a host process SIGKILLed with its workers running",
        inject: Inject::HostKilled,
        expect: Expect::WorkersDieWithHost,
        log_says: "",
    },
];

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

/// What one track's output looked like, period by period, judged against
/// its input delayed by the track's latency. Written by the track's
/// realtime thread, read by the bench.
#[derive(Default)]
struct ProbeStats {
    /// Periods that were exactly the script's result (×0.5 of the delayed input).
    wet: AtomicU64,
    /// Periods that were exactly the delayed input.
    dry: AtomicU64,
    /// Periods that were neither (the script's own idea of audio).
    other: AtomicU64,
    /// Samples that were non-finite or louder than any correct output.
    bad_samples: AtomicU64,
    /// Consecutive wet periods up to now, and when that run began (CLOCK_MONOTONIC ns).
    wet_streak: AtomicU64,
    wet_since_ns: AtomicU64,
}

impl ProbeStats {
    fn not_wet(&self) -> u64 {
        self.dry.load(Ordering::Relaxed) + self.other.load(Ordering::Relaxed)
    }

    /// When the track's current steady run of processed periods began, if it
    /// began after `t_ns`.
    fn wet_since(&self, t_ns: u64) -> Option<u64> {
        let since = self.wet_since_ns.load(Ordering::Acquire);
        (self.wet_streak.load(Ordering::Acquire) >= STABLE_PERIODS && since > t_ns).then_some(since)
    }
}

/// A track with its output checked. Realtime-safe: everything is allocated
/// in `new`; per period it compares, counts and reads the clock.
struct Probe {
    track: Track,
    stats: Arc<ProbeStats>,
    /// Each channel's input over the last `latency` frames, a ring per channel.
    delay: Box<[f32]>,
    latency: usize,
    pos: usize,
}

impl Probe {
    fn new(track: Track, stats: Arc<ProbeStats>) -> Probe {
        let latency = track.config().latency_frames();
        let delay = vec![0.0; latency * track.config().channels].into();
        Probe { track, stats, delay, latency, pos: 0 }
    }
}

impl BlockProcessor for Probe {
    fn process(&mut self, inputs: &[&[f32]], outputs: &mut [&mut [f32]], frames: usize) {
        self.track.process(inputs, outputs, frames);
        let (mut dry, mut wet, mut bad) = (true, true, 0u64);
        for (c, (input, output)) in inputs.iter().zip(outputs.iter()).enumerate() {
            let ring = &mut self.delay[c * self.latency..(c + 1) * self.latency];
            for f in 0..frames {
                let slot = (self.pos + f) % self.latency;
                let (expected, got) = (ring[slot], output[f]);
                ring[slot] = input[f];
                dry &= got == expected;
                wet &= got == SCRIPT_GAIN * expected;
                if !got.is_finite() || got.abs() > INPUT_GAIN * 1.01 {
                    bad += 1;
                }
            }
        }
        self.pos = (self.pos + frames) % self.latency;
        let s = &self.stats;
        s.bad_samples.fetch_add(bad, Ordering::Relaxed);
        if wet && dry {
            return; // silence in, silence out: tells nothing
        }
        if wet {
            if s.wet_streak.load(Ordering::Relaxed) == 0 {
                s.wet_since_ns.store(monotonic_ns(), Ordering::Release);
            }
            s.wet_streak.fetch_add(1, Ordering::Release);
            s.wet.fetch_add(1, Ordering::Relaxed);
        } else {
            s.wet_streak.store(0, Ordering::Release);
            if dry { &s.dry } else { &s.other }.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn channels(&self) -> usize {
        self.track.config().channels
    }
}

/// Counters of one track (or a sum of tracks) at one moment.
#[derive(Clone, Copy, Default)]
struct Counts {
    late: u64,
    errors: u64,
    faults: u64,
    wet: u64,
    dry: u64,
    other: u64,
    bad: u64,
}

impl Counts {
    fn of(stats: &TrackStats, probe: &ProbeStats) -> Counts {
        Counts {
            late: stats.late_results.load(Ordering::Relaxed),
            errors: stats.script_errors.load(Ordering::Relaxed),
            faults: stats.faults.load(Ordering::Relaxed),
            wet: probe.wet.load(Ordering::Relaxed),
            dry: probe.dry.load(Ordering::Relaxed),
            other: probe.other.load(Ordering::Relaxed),
            bad: probe.bad_samples.load(Ordering::Relaxed),
        }
    }

    fn since(self, earlier: Counts) -> Counts {
        Counts {
            late: self.late - earlier.late,
            errors: self.errors - earlier.errors,
            faults: self.faults - earlier.faults,
            wet: self.wet - earlier.wet,
            dry: self.dry - earlier.dry,
            other: self.other - earlier.other,
            bad: self.bad - earlier.bad,
        }
    }

    fn add(self, other: Counts) -> Counts {
        Counts {
            late: self.late + other.late,
            errors: self.errors + other.errors,
            faults: self.faults + other.faults,
            wet: self.wet + other.wet,
            dry: self.dry + other.dry,
            other: self.other + other.other,
            bad: self.bad + other.bad,
        }
    }

    fn to_json(self) -> Value {
        json!({"late": self.late, "script_errors": self.errors, "link_faults": self.faults,
               "wet_periods": self.wet, "dry_periods": self.dry, "other_periods": self.other,
               "bad_samples": self.bad})
    }
}

/// What this process holds, to compare before and after a scenario.
struct Holdings {
    fds: usize,
    rss_kib: u64,
    regions: usize,
    dev_shm: Vec<String>,
    children: Vec<(u32, char)>,
}

impl Holdings {
    fn now() -> Holdings {
        let me = procfs::own_pid();
        Holdings {
            fds: procfs::fd_count(),
            rss_kib: procfs::rss_kib(me),
            regions: procfs::region_mappings(me),
            dev_shm: procfs::dev_shm_held(me),
            children: procfs::children(),
        }
    }
}

struct Report {
    name: &'static str,
    about: &'static str,
    /// From the fault's injection to the end.
    deadline_misses: u64,
    /// While the workers started, and before, with the graph alone.
    warmup_misses: u64,
    control_misses: u64,
    faulty: Counts,
    others: Counts,
    master_bad: u64,
    restarts: u64,
    recovered: bool,
    recovery_ms: Option<f64>,
    detect_ms: Option<f64>,
    others_affected: bool,
    diagnosed: bool,
    log_line: Option<String>,
    leaks: Vec<String>,
    notes: Vec<String>,
    holdings: Value,
}

impl Report {
    fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "about": self.about,
            "deadline_misses": self.deadline_misses,
            "warmup_misses": self.warmup_misses,
            "control_misses": self.control_misses,
            "late_results": {"faulty": self.faulty.late, "others": self.others.late},
            "script_errors": {"faulty": self.faulty.errors, "others": self.others.errors},
            "recovered": self.recovered,
            "recovery_ms": self.recovery_ms,
            "detect_ms": self.detect_ms,
            "others_affected": self.others_affected,
            "diagnosed": self.diagnosed,
            "log": self.log_line,
            "restarts": self.restarts,
            "leaks": self.leaks,
            "notes": self.notes,
            "faulty": self.faulty.to_json(),
            "others": self.others.to_json(),
            "master_bad_samples": self.master_bad,
            "holdings": self.holdings,
        })
    }
}

/// A folder for one scenario's scripts, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(label: &str) -> Result<TempDir, String> {
        let path = std::env::temp_dir().join(format!("outboard-faults-{}-{label}", procfs::own_pid()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(TempDir(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn copy(from: &Path, to: &Path) -> Result<(), String> {
    std::fs::copy(from, to).map(|_| ()).map_err(|e| format!("copying {} to {}: {e}", from.display(), to.display()))
}

fn write(path: &Path, contents: &[u8]) -> Result<(), String> {
    std::fs::write(path, contents).map_err(|e| format!("{}: {e}", path.display()))
}

/// A running graph of probed tracks and the supervisors behind them.
struct Rig {
    graph: Graph,
    supervisor: Supervisor,
    /// The faulty track's own supervisor, when it is given a broken scripts host.
    side_supervisor: Option<Supervisor>,
    stats: Vec<Arc<TrackStats>>,
    probes: Vec<Arc<ProbeStats>>,
    master_bad: Arc<AtomicU64>,
    /// Deadline misses before any worker was started: the machine's.
    control_misses: u64,
}

impl Rig {
    /// Starts the graph (at SCHED_FIFO if `realtime`) with one track per
    /// script, lets it run alone for `CONTROL_WINDOW`, then hands the tracks
    /// to their supervisors: track 0 to one of its own running `side_exe`
    /// when that is given.
    fn start(
        settings: &Settings,
        scripts: &[PathBuf],
        side_exe: Option<PathBuf>,
        realtime: bool,
    ) -> Result<Rig, String> {
        let template = TrackConfig::new(0, "template");
        let mut config = SupervisorConfig::new(locate_scripts_host(None)?, &template);
        config.heartbeat_timeout = settings.hang_timeout;
        config.max_workers = settings.tracks;
        config.memory_limit = Some(settings.memory_limit);
        config.echo_log = settings.verbose;
        config.spare_worker = settings.spare;
        let side_supervisor = side_exe.map(|exe| Supervisor::start(SupervisorConfig { exe, ..config.clone() }));
        let supervisor = Supervisor::start(config);
        let (mut stats, mut probes, mut tracks, mut ports) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for i in 0..scripts.len() {
            let (track, port) = Track::new(TrackConfig::new(i as u32, format!("track {i}")));
            let probe_stats = Arc::new(ProbeStats::default());
            stats.push(track.stats().clone());
            probes.push(probe_stats.clone());
            ports.push(port);
            tracks.push(GraphTrack {
                name: format!("track {i}"),
                processor: Box::new(Probe::new(track, probe_stats)),
                source: Source::Sine { freq: 110.0 * (i + 1) as f32, gain: INPUT_GAIN },
            });
        }
        let master_bad = Arc::new(AtomicU64::new(0));
        let sink_bad = master_bad.clone();
        let limit = INPUT_GAIN * scripts.len() as f32 * 1.01;
        let graph = Graph::start(
            &GraphConfig { rate: 48_000.0, period: 64, priority: realtime.then_some(80), master_channels: 2 },
            tracks,
            Box::new(move |master| {
                let bad = master.iter().filter(|s| !s.is_finite() || s.abs() > limit).count();
                sink_bad.fetch_add(bad as u64, Ordering::Relaxed);
            }),
        );
        std::thread::sleep(CONTROL_WINDOW);
        let control_misses = graph.stats().deadline_misses.load(Ordering::Relaxed);
        for (i, (port, script)) in ports.into_iter().zip(scripts).enumerate() {
            let owner = match (&side_supervisor, i) {
                (Some(side), 0) => side,
                _ => &supervisor,
            };
            owner.add_track(scripted(port, script));
        }
        Ok(Rig { graph, supervisor, side_supervisor, stats, probes, master_bad, control_misses })
    }

    fn counts(&self, track: usize) -> Counts {
        Counts::of(&self.stats[track], &self.probes[track])
    }

    fn others(&self, faulty: Option<usize>) -> Counts {
        (0..self.stats.len()).filter(|&i| Some(i) != faulty).fold(Counts::default(), |sum, i| sum.add(self.counts(i)))
    }

    fn log(&self) -> Vec<String> {
        let mut lines = self.supervisor.log_lines();
        if let Some(side) = &self.side_supervisor {
            lines.extend(side.log_lines());
        }
        lines
    }

    fn restarts(&self) -> u64 {
        self.supervisor.restarts() + self.side_supervisor.as_ref().map_or(0, Supervisor::restarts)
    }

    /// Waits until every track in `tracks` plays processed periods steadily.
    fn wait_until_wet(&self, tracks: &[usize], limit: Duration) -> Result<(), String> {
        let steady = |i: &usize| self.probes[*i].wet_since(0).is_some();
        if poll(limit, || tracks.iter().all(steady).then_some(())).is_some() {
            return Ok(());
        }
        let stuck: Vec<usize> = tracks.iter().copied().filter(|i| !steady(i)).collect();
        Err(format!("tracks {stuck:?} were not processed within {limit:?}"))
    }
}

fn scripted(port: TrackPort, script: &Path) -> ScriptedTrack {
    ScriptedTrack::new(port, script.to_path_buf(), vec!["mix".into(), "gain".into()])
}

/// Polls `f` every 2 ms until it gives a value or `limit` passes.
fn poll<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = f() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn ms_between(from_ns: u64, to_ns: u64) -> f64 {
    to_ns.saturating_sub(from_ns) as f64 / 1e6
}

/// The first log line holding `needle`, or one of its `|`-separated
/// alternatives.
fn find_line(log: &[String], needle: &str) -> Option<String> {
    if needle.is_empty() {
        return None;
    }
    log.iter().find(|line| needle.split('|').any(|n| line.contains(n))).map(|line| line.chars().take(300).collect())
}

fn run_scenario(scenario: &Scenario, settings: &Settings) -> Result<Report, String> {
    let before = Holdings::now();
    let dir = TempDir::new(scenario.name)?;
    let gain = settings.scripts.join("gain.py");
    let faulty_script = dir.0.join(match scenario.inject {
        Inject::Arm { script, .. } => script,
        _ => "track.py",
    });
    match scenario.inject {
        Inject::Arm { script, .. } => copy(&settings.scripts.join("faults").join(script), &faulty_script)?,
        _ => copy(&gain, &faulty_script)?,
    }
    let armed = PathBuf::from(format!("{}.armed", faulty_script.display()));
    let replacement = PathBuf::from(format!("{}.new", faulty_script.display()));
    match scenario.inject {
        Inject::Replace(FileFault::SyntaxError) => write(&replacement, b"def process(block, ctx)\n    block *= 0.5\n")?,
        Inject::Replace(FileFault::Huge) => {
            // Writing, writing back and freeing 50 MB is kernel work that
            // stalls this machine's realtime threads for milliseconds (as any
            // 50 MB file written or deleted here does), and it is not the
            // engine's doing: the file is on disk before the graph starts,
            // and a second name keeps it alive until the scenario is over.
            write_huge_script(&replacement)?;
            std::fs::hard_link(&replacement, dir.0.join("huge.keep")).map_err(|e| e.to_string())?;
        }
        Inject::Replace(FileFault::SetupRaises) => {
            copy(&settings.scripts.join("faults").join("raise_in_setup.py"), &replacement)?
        }
        _ => {}
    }
    let side_exe = match scenario.inject {
        Inject::Exe(ExeFault::Missing) => Some(dir.0.join("no-such-outboard-scripts-host")),
        Inject::Exe(ExeFault::NotExecutable) => {
            let path = dir.0.join("outboard-scripts-host");
            copy(&locate_scripts_host(None)?, &path)?;
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644))
                .map_err(|e| e.to_string())?;
            Some(path)
        }
        _ => None,
    };
    let faulty = match scenario.inject {
        Inject::HostKilled => None,
        _ => Some(0),
    };
    let mut scripts = vec![gain.clone(); settings.tracks];
    if faulty.is_some() {
        scripts[0] = faulty_script.clone();
    }
    let started = Instant::now();
    let rig = Rig::start(settings, &scripts, side_exe.clone(), true)?;
    // Tracks that have a worker: all but a faulty one whose scripts host cannot start.
    let served: Vec<usize> = (0..settings.tracks).filter(|&i| !(side_exe.is_some() && i == 0)).collect();
    let warm = rig.wait_until_wet(&served, Duration::from_secs(30));
    let mut notes = Vec::new();
    if let Err(e) = &warm {
        notes.push(format!("warm-up failed: {e}"));
    }
    std::thread::sleep(Duration::from_millis(300));
    let base_faulty = faulty.map(|f| rig.counts(f)).unwrap_or_default();
    let base_others = rig.others(faulty);
    // Workers are spawned in the order tracks were added, one per track.
    let victim = faulty.and_then(|f| rig.supervisor.worker_pids().get(f).copied());
    let misses_at_injection = rig.graph.stats().deadline_misses.load(Ordering::Relaxed);
    let t0 = monotonic_ns();
    let mut outcome = Outcome::default();
    if warm.is_ok() {
        outcome = match scenario.inject {
            Inject::HostKilled => host_killed(settings)?,
            _ => inject_and_watch(scenario, settings, &rig, &faulty_script, &armed, &replacement, t0)?,
        };
    }
    // Let the graph run on: what matters is also that the fault stays gone.
    let min_end = started + Duration::from_secs_f64(settings.seconds);
    std::thread::sleep(min_end.saturating_duration_since(Instant::now()).max(settings.observe));
    let faulty_counts = faulty.map(|f| rig.counts(f).since(base_faulty)).unwrap_or_default();
    let others = rig.others(faulty).since(base_others);
    let control_misses = rig.control_misses;
    let warmup_misses = misses_at_injection - control_misses;
    let deadline_misses = rig.graph.stats().deadline_misses.load(Ordering::Relaxed) - misses_at_injection;
    let master_bad = rig.master_bad.load(Ordering::Relaxed);
    let restarts = rig.restarts();
    let log = rig.log();
    let log_line = find_line(&log, scenario.log_says);

    // Processes while the graph still runs: the victim is gone, and one live
    // worker per track that has one.
    let mut leaks = Vec::new();
    if matches!(scenario.expect, Expect::Restart | Expect::RestartOnBadRings)
        && let Some(pid) = victim.filter(|&pid| procfs::state_and_parent(pid).is_some())
    {
        leaks.push(format!("the faulty worker (pid {pid}) is still there"));
    }
    let workers = rig.supervisor.worker_pids();
    // What the faulty track's worker (the victim's successor, if restarted)
    // holds now: after a memory bomb, up to its address-space limit.
    let faulty_worker_rss_kib = match (faulty, &side_exe) {
        (Some(f), None) => workers.get(f).map(|&pid| procfs::rss_kib(pid)),
        _ => None,
    };
    let children = procfs::children();
    // The warm spare (if one stands by, or is starting) is the one child
    // beyond the serving workers.
    let spare = children.len().saturating_sub(workers.len());
    if workers.len() != served.len() || spare > 1 {
        leaks.push(format!(
            "{} workers and {} child processes {children:?}, expected {} (and at most a spare)",
            workers.len(),
            children.len(),
            served.len()
        ));
    }
    if !before.children.is_empty() {
        notes.push(format!("child processes before the scenario: {:?}", before.children));
    }
    drop(rig);
    // Workers are reaped and their log pipes closed by other threads: give them a moment.
    let settled = poll(Duration::from_secs(3), || {
        let now = Holdings::now();
        (now.children.is_empty() && now.fds <= before.fds && now.regions <= before.regions).then_some(())
    });
    let after = Holdings::now();
    if settled.is_none() {
        if !after.children.is_empty() {
            leaks.push(format!("child processes left after teardown: {:?}", after.children));
        }
        if after.fds > before.fds {
            leaks.push(format!("{} file descriptors more than before", after.fds - before.fds));
        }
        if after.regions > before.regions {
            leaks.push(format!("{} shared regions still mapped", after.regions - before.regions));
        }
    }
    if !after.dev_shm.is_empty() {
        leaks.push(format!("holds /dev/shm files {:?}", after.dev_shm));
    }
    if after.rss_kib > before.rss_kib + RSS_SLACK_KIB {
        leaks.push(format!("resident memory grew by {:.1} MiB", (after.rss_kib - before.rss_kib) as f64 / 1024.0));
    }
    leaks.extend(outcome.leaks);
    let others_affected = others.late > 0 || others.errors > 0 || others.dry + others.other > 0 || others.bad > 0;
    let diagnosed = scenario.log_says.is_empty() || log_line.is_some();
    if !diagnosed {
        notes.push(format!("the log never said {:?}", scenario.log_says));
    }
    let recovered = warm.is_ok() && outcome.recovered && faulty_counts.bad == 0 && master_bad == 0;
    notes.extend(outcome.notes);
    Ok(Report {
        name: scenario.name,
        about: scenario.about,
        deadline_misses,
        warmup_misses,
        control_misses,
        faulty: faulty_counts,
        others,
        master_bad,
        restarts,
        recovered,
        recovery_ms: outcome.recovery_ms,
        detect_ms: outcome.detect_ms,
        others_affected,
        diagnosed,
        log_line,
        leaks,
        notes,
        holdings: json!({
            "fds": [before.fds, after.fds],
            "rss_kib": [before.rss_kib, after.rss_kib],
            "regions_mapped": [before.regions, after.regions],
            "children": [before.children.len(), after.children.len()],
            "faulty_worker_rss_kib": faulty_worker_rss_kib,
        }),
    })
}

/// How the faulty track fared.
#[derive(Default)]
struct Outcome {
    recovered: bool,
    recovery_ms: Option<f64>,
    detect_ms: Option<f64>,
    leaks: Vec<String>,
    notes: Vec<String>,
}

/// Injects the fault into track 0 at `t0` and follows it to its end.
fn inject_and_watch(
    scenario: &Scenario,
    settings: &Settings,
    rig: &Rig,
    script: &Path,
    armed: &Path,
    replacement: &Path,
    t0: u64,
) -> Result<Outcome, String> {
    let rename = |from: &Path| std::fs::rename(from, script).map_err(|e| format!("{}: {e}", from.display()));
    let probe = &rig.probes[0];
    let not_wet_at_start = probe.not_wet();
    let counts_at_start = rig.counts(0);
    let restarts_at_start = rig.restarts();
    let mut outcome = Outcome::default();
    match scenario.inject {
        Inject::Kill => {
            if rig.supervisor.kill_worker_of(0).is_none() {
                outcome.notes.push("kill_worker_of found no worker".into());
            }
        }
        Inject::Arm { kind, .. } => write(armed, kind.as_bytes())?,
        Inject::Replace(FileFault::Delete) => std::fs::remove_file(script).map_err(|e| e.to_string())?,
        Inject::Replace(_) => rename(replacement)?,
        Inject::Exe(_) | Inject::HostKilled => {}
    }
    let fault_seen = |limit: Duration| poll(limit, || (probe.not_wet() > not_wet_at_start).then_some(()));
    match scenario.expect {
        Expect::Restart | Expect::RestartOnBadRings | Expect::Recovers => {
            // Bounded by the heartbeat timeout, a restart with back-off, and
            // Python starting on a busy machine.
            let limit = settings.hang_timeout + Duration::from_secs(10);
            let began = Instant::now();
            if fault_seen(limit).is_none() {
                outcome.notes.push("the fault never showed in the audio".into());
                return Ok(outcome);
            }
            let restarted = poll(limit.saturating_sub(began.elapsed()), || {
                (rig.restarts() > restarts_at_start || scenario.expect == Expect::Recovers).then(monotonic_ns)
            });
            if rig.restarts() > restarts_at_start {
                outcome.detect_ms = restarted.map(|t| ms_between(t0, t));
            }
            let recovered = poll(limit.saturating_sub(began.elapsed()), || probe.wet_since(t0));
            outcome.recovery_ms = recovered.map(|t| ms_between(t0, t));
            outcome.recovered = restarted.is_some() && recovered.is_some();
            if scenario.expect == Expect::RestartOnBadRings && rig.counts(0).faults == 0 {
                outcome.recovered = false;
                outcome.notes.push("the track never found its rings faulted".into());
            }
        }
        Expect::DryWhileArmed | Expect::PlayedWhileArmed => {
            if fault_seen(Duration::from_secs(3)).is_none() {
                outcome.notes.push("the fault never showed in the audio".into());
                return Ok(outcome);
            }
            let during = rig.counts(0);
            std::thread::sleep(settings.hold);
            let held = rig.counts(0).since(during);
            // Each dry period is a late result or a script error.
            let as_expected = if scenario.expect == Expect::DryWhileArmed {
                held.wet == 0 && held.other == 0 && held.errors > 0 && held.errors + held.late >= held.dry
            } else {
                // The script's own output, but for blocks that came late
                // (played dry, as any track's may on a busy machine).
                held.wet == 0 && held.other > 0 && held.dry <= held.late
            };
            if !as_expected {
                outcome.notes.push(format!("while armed: {}", held.to_json()));
            }
            let t1 = monotonic_ns();
            std::fs::remove_file(armed).map_err(|e| e.to_string())?;
            let recovered = poll(Duration::from_secs(5), || probe.wet_since(t1));
            outcome.recovery_ms = recovered.map(|t| ms_between(t1, t));
            outcome.recovered = as_expected && recovered.is_some() && rig.restarts() == restarts_at_start;
        }
        Expect::KeepsRunning => {
            let seen = poll(Duration::from_secs(5), || find_line(&rig.log(), scenario.log_says));
            std::thread::sleep(settings.hold);
            let reloads = |log: &[String]| log.iter().filter(|l| l.contains("outboard: reloaded")).count();
            let reloads_before = reloads(&rig.log());
            copy(&settings.scripts.join("gain.py"), replacement)?;
            let t1 = monotonic_ns();
            rename(replacement)?;
            let reloaded = poll(Duration::from_secs(5), || (reloads(&rig.log()) > reloads_before).then(monotonic_ns));
            outcome.recovery_ms = reloaded.map(|t| ms_between(t1, t));
            // The previous version kept running: no block failed, and any
            // block not processed was a late result (the machine, e.g. the
            // 50 MB write), not the script dropped (which would leave
            // every block dry). The strict figure is in the note.
            let during = rig.counts(0).since(counts_at_start);
            let not_processed = probe.not_wet() - not_wet_at_start;
            let kept = during.errors == 0 && not_processed <= during.late;
            if not_processed > 0 {
                outcome.notes.push(format!("{not_processed} periods not processed ({} late results)", during.late));
            }
            if reloaded.is_none() {
                outcome.notes.push("the restored file was not reloaded".into());
            }
            outcome.recovered = seen.is_some() && kept && reloaded.is_some() && rig.restarts() == restarts_at_start;
        }
        Expect::DryThroughout => {
            std::thread::sleep(settings.hold);
            let c = rig.counts(0);
            outcome.recovered = c.wet == 0 && c.other == 0 && c.dry > 0 && c.late >= c.dry;
            if !outcome.recovered {
                outcome.notes.push(format!("faulty track: {}", c.to_json()));
            }
        }
        Expect::WorkersDieWithHost => unreachable!("host-killed runs apart"),
    }
    Ok(outcome)
}

/// Writes a 50 MB script: a working process() and a data literal that takes
/// CPython many seconds (and much memory) to compile, as an accidental paste
/// would. Streamed, and synced: no 50 MB buffer to free and no write-back
/// left to happen while the graph runs.
fn write_huge_script(path: &Path) -> Result<(), String> {
    let file = std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = std::io::BufWriter::new(file);
    let line = b"    0.123456789, 0.987654321, 0.555555555, 0.111111111, 0.999999999,\n";
    let body = out
        .write_all(b"def process(block, ctx):\n    block *= 0.5\n\n\nTABLE = [\n")
        .and_then(|()| (0..HUGE_SCRIPT_BYTES / line.len()).try_for_each(|_| out.write_all(line)))
        .and_then(|()| out.write_all(b"]\n"));
    body.and_then(|()| out.into_inner().map_err(|e| e.into_error())?.sync_all())
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Starts a host (this program's `faults-host`) with scripted tracks, kills
/// it with SIGKILL, and checks that its workers die with it.
fn host_killed(settings: &Settings) -> Result<Outcome, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut child = Command::new(exe)
        .args(["faults-host", "--tracks", "2", "--script"])
        .arg(settings.scripts.join("gain.py"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(if settings.verbose { Stdio::inherit() } else { Stdio::null() })
        .spawn()
        .map_err(|e| format!("cannot start the host to kill: {e}"))?;
    let stdout = child.stdout.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_default();
    let mut outcome = Outcome::default();
    let Ok(ready) = serde_json::from_str::<Value>(&line) else {
        let _ = child.kill();
        let _ = child.wait();
        outcome.notes.push(format!("the host did not report its workers: {line:?}"));
        return Ok(outcome);
    };
    let host = child.id();
    let workers: Vec<u32> =
        ready["workers"].as_array().into_iter().flatten().filter_map(|p| p.as_u64().map(|p| p as u32)).collect();
    // Named shared memory would outlive the kill; the engine's memfds cannot.
    let mut held = procfs::dev_shm_held(host);
    for &pid in &workers {
        held.extend(procfs::dev_shm_held(pid));
    }
    if !held.is_empty() {
        outcome.leaks.push(format!("the host and its workers held /dev/shm files {held:?}"));
    }
    let regions = procfs::region_mappings(host);
    let t0 = monotonic_ns();
    child.kill().map_err(|e| e.to_string())?;
    let _ = child.wait();
    let gone = poll(Duration::from_secs(5), || workers.iter().all(|&pid| !procfs::alive(pid)).then(monotonic_ns));
    outcome.recovery_ms = gone.map(|t| ms_between(t0, t));
    let survivors: Vec<u32> = workers.iter().copied().filter(|&pid| procfs::alive(pid)).collect();
    if !survivors.is_empty() {
        outcome.leaks.push(format!("workers {survivors:?} outlived their host by 5 s"));
    }
    outcome.recovered = workers.len() == 2 && gone.is_some();
    outcome.notes.push(format!("host pid {host} with workers {workers:?} and {regions} shared regions mapped, killed"));
    Ok(outcome)
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

fn print_table(reports: &[Report]) {
    println!(
        "{:<24} {:>16} {:>14} {:>7} {:>8} {:>9} {:>11} {:>8}  leaks",
        "scenario", "misses (wu/ctl)", "late faulty/o", "errors", "restarts", "recovered", "recovery ms", "others"
    );
    for r in reports {
        println!(
            "{:<24} {:>16} {:>14} {:>7} {:>8} {:>9} {:>11} {:>8}  {}",
            r.name,
            format!("{} ({}/{})", r.deadline_misses, r.warmup_misses, r.control_misses),
            format!("{}/{}", r.faulty.late, r.others.late),
            r.faulty.errors,
            r.restarts,
            if r.recovered { "yes" } else { "NO" },
            r.recovery_ms.map_or("—".into(), |ms| format!("{ms:.0}")),
            if r.others_affected { "AFFECTED" } else { "fine" },
            if r.leaks.is_empty() { "none".into() } else { r.leaks.join("; ") },
        );
    }
    let notes: Vec<String> =
        reports.iter().flat_map(|r| r.notes.iter().map(move |n| format!("  {}: {n}", r.name))).collect();
    if !notes.is_empty() {
        println!("\nnotes:\n{}", notes.join("\n"));
    }
}
