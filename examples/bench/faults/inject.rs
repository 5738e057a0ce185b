//! Running a scenario: a fresh graph and supervisor (the rig), the fault
//! injected into track 0, and its effects watched until the faulty track
//! recovers or the time is up.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use outboard_engine::realtime::clock::monotonic_ns;
use outboard_engine::realtime::graph::{Graph, GraphConfig, GraphTrack, Source};
use outboard_engine::realtime::track::{Track, TrackConfig, TrackPort, TrackStats};
use outboard_engine::workers::process::locate_scripts_host;
use outboard_engine::workers::supervisor::{ScriptedTrack, Supervisor, SupervisorConfig};
use outboard_host::procfs;
use serde_json::{Value, json};

use super::measurement::{Counts, Holdings, Probe, ProbeStats, ms_between, poll, realtime_thread_faults};
use super::report::Report;
use super::scenarios::{ExeFault, Expect, FileFault, Inject, Scenario};
use super::{CONTROL_WINDOW, HUGE_SCRIPT_BYTES, INPUT_GAIN, RSS_SLACK_KIB, Settings};

/// A folder for one scenario's scripts, removed when dropped.
pub(super) struct TempDir(PathBuf);

impl TempDir {
    pub(super) fn new(label: &str) -> Result<TempDir, String> {
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

pub(super) fn copy(from: &Path, to: &Path) -> Result<(), String> {
    std::fs::copy(from, to).map(|_| ()).map_err(|e| format!("copying {} to {}: {e}", from.display(), to.display()))
}

pub(super) fn write(path: &Path, contents: &[u8]) -> Result<(), String> {
    std::fs::write(path, contents).map_err(|e| format!("{}: {e}", path.display()))
}

/// A running graph of probed tracks and the supervisors behind them.
pub(super) struct Rig {
    pub(super) graph: Graph,
    pub(super) supervisor: Supervisor,
    /// The faulty track's own supervisor, when it is given a broken scripts host.
    pub(super) side_supervisor: Option<Supervisor>,
    pub(super) stats: Vec<Arc<TrackStats>>,
    pub(super) probes: Vec<Arc<ProbeStats>>,
    pub(super) master_bad: Arc<AtomicU64>,
    /// Deadline misses before any worker was started: the machine's.
    pub(super) control_misses: u64,
}

impl Rig {
    /// Starts the graph (at SCHED_FIFO if `realtime`) with one track per
    /// script, lets it run alone for `CONTROL_WINDOW`, then hands the tracks
    /// to their supervisors: track 0 to one of its own running `side_exe`
    /// when that is given.
    pub(super) fn start(
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
        config.fork_workers = settings.fork;
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

    pub(super) fn counts(&self, track: usize) -> Counts {
        Counts::of(&self.stats[track], &self.probes[track])
    }

    pub(super) fn others(&self, faulty: Option<usize>) -> Counts {
        (0..self.stats.len()).filter(|&i| Some(i) != faulty).fold(Counts::default(), |sum, i| sum.add(self.counts(i)))
    }

    pub(super) fn log(&self) -> Vec<String> {
        let mut lines = self.supervisor.log_lines();
        if let Some(side) = &self.side_supervisor {
            lines.extend(side.log_lines());
        }
        lines
    }

    pub(super) fn restarts(&self) -> u64 {
        self.supervisor.restarts() + self.side_supervisor.as_ref().map_or(0, Supervisor::restarts)
    }

    /// Waits until every track in `tracks` plays processed periods steadily.
    pub(super) fn wait_until_wet(&self, tracks: &[usize], limit: Duration) -> Result<(), String> {
        let steady = |i: &usize| self.probes[*i].wet_since(0).is_some();
        if poll(limit, || tracks.iter().all(steady).then_some(())).is_some() {
            return Ok(());
        }
        let stuck: Vec<usize> = tracks.iter().copied().filter(|i| !steady(i)).collect();
        Err(format!("tracks {stuck:?} were not processed within {limit:?}"))
    }
}

pub(super) fn scripted(port: TrackPort, script: &Path) -> ScriptedTrack {
    ScriptedTrack::new(port, script.to_path_buf(), vec!["mix".into(), "gain".into()])
}

pub(super) fn run_scenario(scenario: &Scenario, settings: &Settings) -> Result<Report, String> {
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
    let rt_faults_at_injection = realtime_thread_faults();
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
    let rt_page_faults = realtime_thread_faults().saturating_sub(rt_faults_at_injection);
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
        rt_page_faults,
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
pub(super) struct Outcome {
    pub(super) recovered: bool,
    pub(super) recovery_ms: Option<f64>,
    pub(super) detect_ms: Option<f64>,
    pub(super) leaks: Vec<String>,
    pub(super) notes: Vec<String>,
}

/// Injects the fault into track 0 at `t0` and follows it to its end.
pub(super) fn inject_and_watch(
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
pub(super) fn write_huge_script(path: &Path) -> Result<(), String> {
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
pub(super) fn host_killed(settings: &Settings) -> Result<Outcome, String> {
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

/// The first log line holding `needle`, or one of its `|`-separated
/// alternatives.
fn find_line(log: &[String], needle: &str) -> Option<String> {
    if needle.is_empty() {
        return None;
    }
    log.iter().find(|line| needle.split('|').any(|n| line.contains(n))).map(|line| line.chars().take(300).collect())
}
