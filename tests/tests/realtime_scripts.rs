//! Tracks processed by Python scripts in worker processes, in real time.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

use outboard_engine::realtime::track::{Track, TrackConfig};
use outboard_engine::workers::supervisor::{ScriptedTrack, Supervisor, SupervisorConfig};
use outboard_tests::realtime::{classify_blocks, run_paced};
use outboard_tests::{ScriptDir, eventually, scripts_host};

fn supervisor(template: &TrackConfig) -> Supervisor {
    let mut config = SupervisorConfig::new(scripts_host(), template);
    config.echo_log = true;
    Supervisor::start(config)
}

fn scripted(config: TrackConfig, script: &str, supervisor: &Supervisor) -> Track {
    let (track, port) = Track::new(config);
    supervisor.add_track(ScriptedTrack::new(port, PathBuf::from(script), vec!["mix".into(), "gain".into()]));
    track
}

#[test]
fn a_script_processes_audio_with_exactly_l_blocks_of_latency() {
    let _turn = outboard_tests::realtime::one_at_a_time();
    let dir = ScriptDir::new("rt-gain");
    let script = dir.write("double.py", "def process(block, ctx):\n    block *= 2.0\n");
    let cfg = TrackConfig::new(1, "double");
    let sup = supervisor(&cfg);
    let mut track = scripted(cfg.clone(), &script, &sup);
    wait_until_served(&mut track, &sup);
    let out = run_paced(&mut track, 1500, |_, _| {});
    let blocks = classify_blocks(&out, cfg.block, cfg.latency_frames(), 2.0);
    assert!(blocks.iter().all(Option::is_some), "every block is exactly wet or exactly dry, L blocks late");
    let first_wet = blocks.iter().position(|b| *b == Some(true)).expect("the script's output is heard");
    let dry_after = blocks[first_wet..].iter().filter(|b| **b == Some(false)).count();
    let late = track.stats().late_results.load(Ordering::Relaxed) as usize;
    assert!(first_wet < 1000, "script took over after {first_wet} blocks");
    assert_eq!(late, first_wet + dry_after, "each dry block was counted late");
    eprintln!("first wet block {first_wet}, dry after that {dry_after}, late {late}");
}

/// Waits until the track's worker has loaded its script. Tests whose subject
/// is not the start wait for it first: until then the track's blocks fill the
/// ring and later ones are dropped (counted late), so what a script does at a
/// given block would depend on how fast Python starts on a busy machine.
fn wait_until_served(track: &mut Track, sup: &Supervisor) {
    assert!(track.wait_ready(Duration::from_secs(60)), "the worker loaded the script: {:?}", sup.log_lines());
}

#[test]
fn a_slow_script_is_never_waited_for() {
    let _turn = outboard_tests::realtime::one_at_a_time();
    let dir = ScriptDir::new("rt-slow");
    // Every eighth block takes 4 ms, three periods: it comes back too late.
    let script = dir.write(
        "slow.py",
        "import time\n\ndef process(block, ctx):\n    if ctx.block % 8 == 0:\n        time.sleep(0.004)\n    block *= 2.0\n",
    );
    let cfg = TrackConfig::new(2, "slow");
    let sup = supervisor(&cfg);
    let mut track = scripted(cfg.clone(), &script, &sup);
    wait_until_served(&mut track, &sup);
    let out = run_paced(&mut track, 1200, |_, _| {});
    let blocks = classify_blocks(&out, cfg.block, cfg.latency_frames(), 2.0);
    assert!(blocks.iter().all(Option::is_some), "late blocks are the dry input, delayed by exactly L");
    let dry = blocks.iter().filter(|b| **b == Some(false)).count();
    let late = track.stats().late_results.load(Ordering::Relaxed) as usize;
    assert_eq!(late, dry);
    assert!(dry > 100, "the slow blocks were played dry ({dry})");
    // The others were processed (how many on time is a bench figure: on a
    // loaded machine the worker is late more often).
    assert!(blocks.contains(&Some(true)), "the others were processed");
}

#[test]
fn script_errors_are_reported_with_file_and_line_and_the_track_plays_dry() {
    let _turn = outboard_tests::realtime::one_at_a_time();
    let dir = ScriptDir::new("rt-errors");
    let cases = [
        ("syntax.py", "def process(block, ctx):\n    return block +\n", "syntax.py:2", "SyntaxError"),
        (
            "raises.py",
            "def process(block, ctx):\n    x = 1\n    raise ValueError('boom')\n",
            "raises.py:3",
            "ValueError: boom",
        ),
        (
            "shape.py",
            "import numpy as np\n\ndef process(block, ctx):\n    return np.zeros((1, 3), dtype=np.float32)\n",
            "shape.py:3",
            "returned shape (1, 3), expected (2, 64)",
        ),
        (
            "dtype.py",
            "def process(block, ctx):\n    return block.astype('float64')\n",
            "dtype.py:1",
            "dtype float64, expected float32",
        ),
        ("nan.py", "def process(block, ctx):\n    block[0, 0] = float('nan')\n", "nan.py:1", "non-finite samples"),
        ("kind.py", "def process(block, ctx):\n    return [1, 2]\n", "kind.py:1", "returned list"),
        ("nohooks.py", "x = 1\n", "nohooks.py", "defines none of the hooks"),
        ("loud.py", "def process(block, ctx):\n    block[:] = 1e30\n", "loud.py:1", "samples out of range"),
    ];
    let cfg = TrackConfig::new(0, "template");
    let sup = supervisor(&cfg);
    let mut tracks = Vec::new();
    for (i, (name, source, _, _)) in cases.iter().enumerate() {
        let path = dir.write(name, source);
        let mut c = TrackConfig::new(10 + i as u32, *name);
        c.latency_blocks = 2;
        tracks.push(scripted(c, &path, &sup));
    }
    // The scripts that load (all but the syntax error and the one without
    // hooks) are served before the tracks play, so their errors are counted.
    for track in tracks.iter_mut().filter(|t| !["syntax.py", "nohooks.py"].contains(&t.config().name.as_str())) {
        wait_until_served(track, &sup);
    }
    for track in &mut tracks {
        let out = run_paced(track, 300, |_, _| {});
        let blocks = classify_blocks(&out, 64, 128, 2.0);
        assert!(blocks.iter().all(|b| *b == Some(false)), "{}: plays exactly dry", track.config().name);
    }
    // Log lines come over each worker's stderr: polled.
    let reported =
        |place: &str, message: &str| sup.log_lines().iter().any(|l| l.contains(place) && l.contains(message));
    eventually(Duration::from_secs(10), || cases.iter().all(|(_, _, place, message)| reported(place, message)));
    let log = sup.log_lines().join("\n");
    for (_, _, place, message) in cases {
        let line = log.lines().find(|l| l.contains(place) && l.contains(message));
        assert!(line.is_some(), "no report of {place} / {message} in the log:\n{log}");
    }
    let errors: u64 = tracks[1..6].iter().map(|t| t.stats().script_errors.load(Ordering::Relaxed)).sum();
    assert!(errors > 5 * 100, "failing blocks are counted ({errors})");
    assert!(log.contains("Traceback"), "exceptions come with their traceback");
}

#[test]
fn an_edited_script_is_reloaded_and_a_broken_edit_keeps_the_old_one() {
    let _turn = outboard_tests::realtime::one_at_a_time();
    let dir = ScriptDir::new("rt-reload");
    let path = dir.write("live.py", "def process(block, ctx):\n    block *= 2.0\n");
    let cfg = TrackConfig::new(3, "live");
    let sup = supervisor(&cfg);
    let mut track = scripted(cfg.clone(), &path, &sup);
    wait_until_served(&mut track, &sup);
    let mut phase = 0;
    let out = run_paced(&mut track, 2400, |k, _| {
        if k == 600 {
            dir.write("live.py", "def process(block, ctx):\n    block *= 3.0\n");
            phase = 1;
        }
        if k == 1400 {
            dir.write("live.py", "def process(block, ctx)\n    block *= 5.0\n");
            phase = 2;
        }
    });
    assert_eq!(phase, 2);
    // Each block's gain, where it is a clean multiple of the delayed input.
    let gains: Vec<Option<f32>> = (0..2400)
        .map(|k| {
            let i = k * 64 + 5;
            (k >= 2).then(|| out[0][i] / outboard_tests::realtime::signal(i - 128, 0))
        })
        .collect();
    let share = |range: std::ops::Range<usize>, gain: f32| {
        let hits = gains[range.clone()].iter().filter(|g| g.is_some_and(|g| (g - gain).abs() < 1e-5)).count();
        hits as f64 / range.len() as f64
    };
    eprintln!(
        "gains 300..600: 2x {:.2} 1x {:.2}; sample {:?}",
        share(300..600, 2.0),
        share(300..600, 1.0),
        &gains[300..310]
    );
    // Which version played where (dry blocks, late on a busy machine, are
    // neither: how many come late is a bench figure).
    let hits = |range: std::ops::Range<usize>, gain: f32| {
        gains[range].iter().filter(|g| g.is_some_and(|g| (g - gain).abs() < 1e-5)).count()
    };
    assert_eq!(hits(600..2400, 2.0) + hits(600..2400, 3.0) + hits(600..2400, 1.0), 1800, "only wet or dry");
    assert!(hits(300..600, 2.0) > 0 && hits(300..600, 3.0) == 0, "before the edit: the first version");
    assert!(
        hits(1350..1400, 3.0) > 0 && hits(1350..1400, 2.0) == 0,
        "the edit took effect within a second (750 blocks)"
    );
    assert!(hits(1500..2400, 3.0) > 0 && hits(1500..2400, 2.0) == 0, "the broken edit left the running version alone");
    assert_eq!(hits(0..2400, 5.0), 0, "the broken version never ran");
    let log = sup.log_lines().join("\n");
    assert!(log.contains("reloaded"), "{log}");
    assert!(
        log.contains("live.py:1") && log.contains("SyntaxError") && log.contains("previous version keeps running"),
        "{log}"
    );
}

#[test]
fn a_script_too_big_to_be_code_is_refused_and_the_previous_version_keeps_running() {
    let _turn = outboard_tests::realtime::one_at_a_time();
    let dir = ScriptDir::new("rt-big");
    let path = dir.write("grows.py", "def process(block, ctx):\n    block *= 2.0\n");
    let cfg = TrackConfig::new(9, "grows");
    let sup = supervisor(&cfg);
    let mut track = scripted(cfg.clone(), &path, &sup);
    wait_until_served(&mut track, &sup);
    // A working new version, 600 KB with its pasted data: over the limit.
    let big = format!("def process(block, ctx):\n    block *= 3.0\n\n{}", "# 0.1, 0.2, 0.3, 0.4\n".repeat(30_000));
    let out = run_paced(&mut track, 1500, |k, _| {
        if k == 600 {
            dir.write("grows.py", &big);
        }
    });
    let blocks = classify_blocks(&out, cfg.block, cfg.latency_frames(), 2.0);
    assert!(blocks.iter().all(Option::is_some), "only the first version or dry, never the big one");
    // Wet here can only be the first version (the big one would be neither).
    assert!(blocks[1000..].contains(&Some(true)), "the first version kept running");
    let log = sup.log_lines().join("\n");
    assert!(
        log.contains("grows.py") && log.contains("larger than") && log.contains("previous version keeps running"),
        "{log}"
    );
    assert_eq!(sup.restarts(), 0);
}

#[test]
fn tick_events_land_on_their_sample() {
    let _turn = outboard_tests::realtime::one_at_a_time();
    let dir = ScriptDir::new("rt-tick");
    // One note, scheduled well ahead (50 blocks past the tick's window, 37
    // frames into a block), as a generative script schedules ahead.
    let script = dir.write(
        "notes.py",
        "def setup(ctx):\n    ctx.state['sent'] = False\n\ndef tick(ctx):\n    if not ctx.state['sent'] and ctx.block >= 100:\n        ctx.state['sent'] = True\n        at = ctx.time + 50 * ctx.frames + 37\n        ctx.note(69, 1.0, 0.05, at=at)\n        ctx.log('note at', at)\n",
    );
    let mut cfg = TrackConfig::new(4, "notes");
    cfg.voice = Some(outboard_engine::realtime::voice::Waveform::Sine);
    let sup = supervisor(&cfg);
    let (mut track, port) = Track::new(cfg.clone());
    sup.add_track(ScriptedTrack::new(port, PathBuf::from(&script), vec!["mix".into()]));
    wait_until_served(&mut track, &sup);
    // Silent input: only the voice can make sound.
    let b = cfg.block;
    let blocks = 1200;
    let mut out = vec![vec![0.0f32; blocks * b]; 2];
    let silence = vec![0.0f32; b];
    outboard_tests::realtime::make_realtime();
    let start = std::time::Instant::now();
    for k in 0..blocks {
        let due = start + std::time::Duration::from_secs_f64(k as f64 * b as f64 / cfg.sample_rate);
        if let Some(w) = due.checked_duration_since(std::time::Instant::now()) {
            std::thread::sleep(w);
        }
        let inputs: Vec<&[f32]> = vec![&silence, &silence];
        let mut outputs: Vec<&mut [f32]> = out.iter_mut().map(|v| &mut v[k * b..(k + 1) * b]).collect();
        track.process(&inputs, &mut outputs, b);
    }
    let log = sup.log_lines().join("\n");
    let at: usize = log
        .lines()
        .find_map(|l| l.split("note at ").nth(1))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("the script logged its note time:\n{log}"));
    assert_eq!(track.stats().late_events.load(Ordering::Relaxed), 0, "the event arrived before its time");
    let first = out[0].iter().position(|&s| s != 0.0).expect("the note sounds");
    assert_eq!(first, at + cfg.latency_frames(), "onset exactly at the event's sample (plus the track's latency)");
}

#[test]
fn a_killed_worker_is_restarted_while_the_track_keeps_playing() {
    let _turn = outboard_tests::realtime::one_at_a_time();
    let dir = ScriptDir::new("rt-kill");
    let script = dir.write("double.py", "def process(block, ctx):\n    block *= 2.0\n");
    let cfg = TrackConfig::new(5, "victim");
    let sup = supervisor(&cfg);
    let mut track = scripted(cfg.clone(), &script, &sup);
    wait_until_served(&mut track, &sup);
    let mut killed = None;
    let out = run_paced(&mut track, 2400, |k, _| {
        if k == 800 {
            killed = sup.kill_worker_of(5);
        }
    });
    let old = killed.expect("the track had a worker");
    assert!(eventually(Duration::from_secs(2), || sup.restarts() >= 1), "the supervisor restarted the worker");
    assert!(!sup.worker_pids().contains(&old));
    let blocks = classify_blocks(&out, cfg.block, cfg.latency_frames(), 2.0);
    assert!(blocks.iter().all(Option::is_some), "audio stayed sample-exact through the crash");
    // Processed again (how many on time is a bench figure: a busy machine
    // makes more late).
    let wet_after = blocks[1600..].iter().filter(|b| **b == Some(true)).count();
    assert!(wet_after > 0, "the new worker processes again ({wet_after} of 798)");
    assert!(track.stats().link_generation.load(Ordering::Relaxed) >= 2);
    let log = sup.log_lines().join("\n");
    assert!(log.contains(&format!("(pid {old})")) && log.contains("restarted as pid"), "{log}");
}

#[test]
fn a_crashed_worker_is_replaced_by_the_warm_spare_and_a_new_spare_is_started() {
    let _turn = outboard_tests::realtime::one_at_a_time();
    let dir = ScriptDir::new("rt-spare");
    let script = dir.write("double.py", "def process(block, ctx):\n    block *= 2.0\n");
    let cfg = TrackConfig::new(9, "spared");
    let sup = supervisor(&cfg);
    let mut track = scripted(cfg.clone(), &script, &sup);
    assert!(track.wait_ready(Duration::from_secs(20)), "{:?}", sup.log_lines());
    assert!(
        eventually(Duration::from_secs(20), || sup.spare_ready().is_some()),
        "a spare stands by: {:?}",
        sup.log_lines()
    );
    let spare = sup.spare_ready().unwrap();
    let old = sup.kill_worker_of(9).expect("the track had a worker");
    assert!(
        eventually(Duration::from_secs(10), || sup.worker_pids().contains(&spare)),
        "the spare took over: {:?}",
        sup.log_lines()
    );
    assert!(!sup.worker_pids().contains(&old));
    let log = sup.log_lines().join("\n");
    assert!(log.contains(&format!("restarted as pid {spare} (the warm spare)")), "{log}");
    // The track is served by it (offline: waits for each result).
    track.set_offline(Some(Duration::from_secs(5)));
    let out = run_paced(&mut track, 200, |_, _| {});
    let blocks = classify_blocks(&out, cfg.block, cfg.latency_frames(), 2.0);
    assert!(blocks[100..].iter().all(|b| *b == Some(true)), "wet again: {blocks:?}");
    // And another spare is started in the background.
    assert!(
        eventually(Duration::from_secs(20), || sup.spare_ready().is_some_and(|p| p != spare)),
        "{:?}",
        sup.log_lines()
    );
}

#[test]
fn a_hung_script_gets_its_worker_restarted_after_the_heartbeat_timeout() {
    let _turn = outboard_tests::realtime::one_at_a_time();
    let dir = ScriptDir::new("rt-hang");
    // Hangs once, at the first block from 300 on that it is handed (a busy
    // machine may drop block 300 itself, the ring being full); the marker
    // file keeps the restarted worker from hanging again.
    let marker = dir.path().join("hung");
    let script = dir.write(
        "hang.py",
        &format!(
            "import os\n\ndef process(block, ctx):\n    if ctx.block >= 300 and not os.path.exists({marker:?}):\n        open({marker:?}, 'w').close()\n        while True:\n            pass\n    block *= 2.0\n",
            marker = marker.display().to_string()
        ),
    );
    let cfg = TrackConfig::new(6, "hangs");
    let sup = supervisor(&cfg);
    let mut track = scripted(cfg.clone(), &script, &sup);
    wait_until_served(&mut track, &sup);
    let out = run_paced(&mut track, 2400, |_, _| {});
    assert!(marker.exists(), "the script hung");
    assert!(
        eventually(Duration::from_secs(30), || sup.restarts() >= 1),
        "the hung worker was replaced: {:?}",
        sup.log_lines()
    );
    let log = sup.log_lines().join("\n");
    assert!(log.contains("stopped beating"), "{log}");
    // Long before that, as soon as it missed its beats, its priority went down
    // (a busy loop at the running workers' priority would delay their blocks).
    assert!(log.contains("is stuck in a script call; lowering its priority"), "{log}");
    let blocks = classify_blocks(&out, cfg.block, cfg.latency_frames(), 2.0);
    assert!(blocks.iter().all(Option::is_some), "audio stayed sample-exact through the hang");
    // Processed again after the restart (how often on time: a bench figure).
    wait_until_served(&mut track, &sup);
    let out = run_paced(&mut track, 400, |_, _| {});
    let blocks = classify_blocks(&out, cfg.block, cfg.latency_frames(), 2.0);
    assert!(blocks.contains(&Some(true)), "processed again after the restart: {blocks:?}");
}

/// The nice value of process `pid`.
fn nice_of(pid: u32) -> i32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("the worker runs");
    // Field 19, counted after "pid (comm)" (comm may hold spaces).
    stat[stat.rfind(')').unwrap() + 2..].split(' ').nth(16).unwrap().parse().unwrap()
}

#[test]
fn a_slow_interpreter_start_is_not_taken_for_a_hang_nor_put_ahead_of_running_workers() {
    let _turn = outboard_tests::realtime::one_at_a_time();
    let dir = ScriptDir::new("rt-slow-start");
    let script = dir.write("double.py", "def process(block, ctx):\n    block *= 2.0\n");
    // Python imports sitecustomize while it starts: this one makes the start
    // take 1.5 s, three heartbeat timeouts, as several workers starting at
    // once on a busy machine can. The worker is started through a wrapper
    // that puts it on the path.
    dir.write("sitecustomize.py", "import time\ntime.sleep(1.5)\n");
    let wrapper = dir.write(
        "slow-start-host",
        &format!("#!/bin/sh\nPYTHONPATH={} exec {} \"$@\"\n", dir.path().display(), scripts_host().display()),
    );
    std::fs::set_permissions(&wrapper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let cfg = TrackConfig::new(8, "slow-start");
    let mut config = SupervisorConfig::new(PathBuf::from(&wrapper), &cfg);
    config.heartbeat_timeout = std::time::Duration::from_millis(500);
    let sup = Supervisor::start(config);
    let mut track = scripted(cfg.clone(), &script, &sup);
    let mut nice_while_starting = None;
    let out = run_paced(&mut track, 2400, |k, _| {
        if k == 400 {
            nice_while_starting = sup.worker_pids().first().map(|&pid| nice_of(pid));
        }
    });
    let log = sup.log_lines().join("\n");
    assert_eq!(sup.restarts(), 0, "the starting worker was taken for hung:\n{log}");
    // Starting Python is a burst of CPU: below the running workers' priority
    // until the script has loaded, then raised (where permitted: as root).
    assert_eq!(nice_while_starting, Some(0));
    // (A burst of late blocks may demote it for a while: polled.)
    if rustix::process::geteuid().is_root() {
        assert!(
            eventually(Duration::from_secs(20), || nice_of(sup.worker_pids()[0]) == -10),
            "raised once loaded:\n{log}"
        );
    }
    let blocks = classify_blocks(&out, cfg.block, cfg.latency_frames(), 2.0);
    let wet_at_end = blocks[1800..].iter().filter(|b| **b == Some(true)).count();
    assert!(wet_at_end > 0, "processed once started ({wet_at_end} of the last 598 blocks)");
}

#[test]
fn a_crash_looping_worker_is_restarted_with_back_off() {
    let _turn = outboard_tests::realtime::one_at_a_time();
    let dir = ScriptDir::new("rt-crashloop");
    let script = dir.write("dies.py", "import os\n\ndef process(block, ctx):\n    os._exit(1)\n");
    let cfg = TrackConfig::new(7, "dies");
    let sup = supervisor(&cfg);
    let mut track = scripted(cfg.clone(), &script, &sup);
    // Five seconds of a worker that dies on every block it sees.
    let out = run_paced(&mut track, 3750, |_, _| {});
    let restarts = sup.restarts();
    // Without back-off it would restart every ~0.1 s (the time to start
    // Python): about 50 times. With 0.5, 1, 2 s pauses after the third:
    assert!((3..=12).contains(&restarts), "restarts: {restarts}");
    let blocks = classify_blocks(&out, cfg.block, cfg.latency_frames(), 2.0);
    assert!(blocks.iter().all(|b| *b == Some(false)), "the track played dry throughout");
}

#[test]
fn removed_tracks_free_their_workers_for_new_ones() {
    let _turn = outboard_tests::realtime::one_at_a_time();
    let dir = ScriptDir::new("rt-churn");
    let script = dir.write("double.py", "def process(block, ctx):\n    block *= 2.0\n");
    let template = TrackConfig::new(0, "template");
    let mut config = SupervisorConfig::new(scripts_host(), &template);
    config.max_workers = 2;
    config.slots_per_worker = 2;
    let sup = Supervisor::start(config);
    // Instances come and go, as in a DAW: never more than the cap in
    // processes, and the tracks added last are served.
    for round in 0..6u32 {
        let tracks: Vec<Track> =
            (0..2).map(|i| scripted(TrackConfig::new(100 + round * 2 + i, "churn"), &script, &sup)).collect();
        assert!(eventually(Duration::from_secs(60), || tracks
            .iter()
            .all(|t| t.stats().script_ready.load(Ordering::Acquire))));
        assert!(sup.worker_pids().len() <= 2, "round {round}: {:?}", sup.worker_pids());
        for track in &tracks {
            sup.remove_track(track.config().id);
        }
    }
    let mut track = scripted(TrackConfig::new(999, "last"), &script, &sup);
    wait_until_served(&mut track, &sup);
    let out = run_paced(&mut track, 600, |_, _| {});
    let blocks = classify_blocks(&out, 64, 128, 2.0);
    assert!(blocks.iter().all(Option::is_some));
    // Processed (how many blocks on time is a bench figure).
    assert!(blocks[300..].contains(&Some(true)), "the last track is processed by a recycled worker");
    assert!(sup.worker_pids().len() <= 2);
}

#[test]
fn offline_rendering_waits_for_a_slow_script() {
    let _turn = outboard_tests::realtime::one_at_a_time();
    let dir = ScriptDir::new("rt-offline");
    // 3 ms per block: twice the real-time budget of a 64-frame block.
    let script =
        dir.write("slow.py", "import time\n\ndef process(block, ctx):\n    time.sleep(0.003)\n    block *= 2.0\n");
    let cfg = TrackConfig::new(7, "offline");
    let sup = supervisor(&cfg);
    let mut track = scripted(cfg.clone(), &script, &sup);
    track.set_offline(Some(std::time::Duration::from_secs(10)));
    // As fast as the track lets us: no pacing.
    let blocks = 200;
    let mut out = vec![vec![0.0f32; blocks * 64]; 2];
    for k in 0..blocks {
        let input: Vec<Vec<f32>> =
            (0..2).map(|c| (k * 64..(k + 1) * 64).map(|f| outboard_tests::realtime::signal(f, c)).collect()).collect();
        let (l, r) = out.split_at_mut(1);
        track.process(
            &[&input[0], &input[1]],
            &mut [&mut l[0][k * 64..(k + 1) * 64], &mut r[0][k * 64..(k + 1) * 64]],
            64,
        );
    }
    let classified = classify_blocks(&out, 64, cfg.latency_frames(), 2.0);
    assert!(classified.iter().all(|b| *b == Some(true)), "every block is the script's: {classified:?}");
    assert_eq!(track.stats().late_results.load(Ordering::Relaxed), 0);
}
