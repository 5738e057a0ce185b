//! When a script's hooks are called, what they see, and how the worker
//! reports on them (scripts-host/python/outboard_rt.py states the rules).
//!
//! Every test here is deterministic: results are waited for (offline
//! tracks), and the catch-up test makes the worker fall behind by a
//! handshake with the script, not by the clock.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use outboard_engine::realtime::track::{ScriptLink, Track, TrackConfig, TrackPort};
use outboard_engine::wire::control::{Request, ScriptSpec};
use outboard_engine::wire::rings::{slot_ring_from_script, slot_ring_to_script};
use outboard_engine::workers::process::{Launch, LogCapture, WorkerProcess};
use outboard_engine::workers::supervisor::{ScriptedTrack, Supervisor, SupervisorConfig};
use outboard_tests::realtime::{one_at_a_time, signal};
use outboard_tests::{ScriptDir, eventually, scripts_host};

/// Long enough for any result on a busy machine (the worker starting included).
const WAIT: Duration = Duration::from_secs(60);

fn supervisor(template: &TrackConfig, adjust: impl FnOnce(&mut SupervisorConfig)) -> Supervisor {
    let mut config = SupervisorConfig::new(scripts_host(), template);
    config.echo_log = true;
    adjust(&mut config);
    Supervisor::start(config)
}

fn scripted(config: TrackConfig, script: &str, supervisor: &Supervisor) -> Track {
    let (track, port) = Track::new(config);
    supervisor.add_track(ScriptedTrack::new(port, PathBuf::from(script), vec!["mix".into(), "gain".into()]));
    track
}

/// Runs blocks `blocks` of `track` as fast as it goes (waiting for results
/// if the track is offline), feeding [`signal`]; their output lands in `out`
/// (planar, indexed by frame from block 0).
fn run_blocks(track: &mut Track, blocks: std::ops::Range<usize>, out: &mut [Vec<f32>]) {
    let cfg = track.config().clone();
    let b = cfg.block;
    for k in blocks {
        let input: Vec<Vec<f32>> =
            (0..cfg.channels).map(|c| (k * b..(k + 1) * b).map(|f| signal(f, c)).collect()).collect();
        let inputs: Vec<&[f32]> = input.iter().map(Vec::as_slice).collect();
        let mut outputs: Vec<&mut [f32]> = out.iter_mut().map(|v| &mut v[k * b..(k + 1) * b]).collect();
        track.process(&inputs, &mut outputs, b);
    }
}

/// A path as a Python string literal.
fn py_str(path: &Path) -> String {
    format!("{:?}", path.to_str().expect("UTF-8 temp path"))
}

#[test]
fn a_phase_accumulating_ring_modulator_matches_the_same_math_from_the_first_wet_sample() {
    let _turn = one_at_a_time();
    let dir = ScriptDir::new("hooks-ringmod");
    // The phase lives in ctx.state and advances by one block per call: any
    // call the script did not ask for would shift it for good.
    let script = dir.write(
        "ringmod.py",
        "import numpy as np\n\
         \n\
         def setup(ctx):\n\
         \x20   ctx.state['phase'] = 0.0\n\
         \n\
         def process(block, ctx):\n\
         \x20   frames = block.shape[1]\n\
         \x20   step = 2.0 * np.pi * 1000.0 / ctx.rate\n\
         \x20   phase = ctx.state['phase'] + step * np.arange(frames)\n\
         \x20   block *= np.sin(phase).astype(np.float32)\n\
         \x20   ctx.state['phase'] = float((ctx.state['phase'] + step * frames) % (2.0 * np.pi))\n",
    );
    let cfg = TrackConfig::new(1, "ringmod");
    let sup = supervisor(&cfg, |_| {});
    let mut track = scripted(cfg.clone(), &script, &sup);
    track.set_offline(Some(WAIT));
    let blocks = 400;
    let mut out = vec![vec![0.0f32; blocks * cfg.block]; cfg.channels];
    run_blocks(&mut track, 0..blocks, &mut out);
    let latency = cfg.latency_frames();
    let mut worst = 0.0f64;
    for (c, channel) in out.iter().enumerate() {
        assert!(channel[..latency].iter().all(|&s| s == 0.0), "silence for the first L blocks");
        for (n, &got) in channel.iter().enumerate().skip(latency) {
            let m = n - latency;
            let carrier = (2.0 * std::f64::consts::PI * 1000.0 * m as f64 / cfg.sample_rate).sin();
            let want = signal(m, c) as f64 * carrier;
            let error = (got as f64 - want).abs();
            worst = worst.max(error);
            assert!(error < 1e-5, "channel {c} frame {n}: {got} != {want} (the first wet frame is {latency})");
        }
    }
    eprintln!("worst error {worst:e} over {} frames", blocks * cfg.block - latency);
    assert_eq!(track.stats().late_results.load(Ordering::Relaxed), 0, "offline: every result waited for");
}

#[test]
fn setup_runs_once_at_load_and_process_once_per_block_in_order() {
    let _turn = one_at_a_time();
    let dir = ScriptDir::new("hooks-order");
    let mark = dir.path().join("setup.txt");
    // Each output block reports the script's counters in its first samples
    // (small integers: exact in float32, playable).
    let script = dir.write(
        "order.py",
        &format!(
            "MARK = {mark}\n\
             \n\
             def setup(ctx):\n\
             \x20   s = ctx.state\n\
             \x20   s['setups'] = s.get('setups', 0) + 1\n\
             \x20   with open(MARK, 'w') as f:\n\
             \x20       f.write(f\"{{s['setups']}} {{ctx.block}} {{ctx.time}} {{ctx.skipped}} {{sorted(ctx.params)}} {{s.get('calls', 0)}}\")\n\
             \n\
             def process(block, ctx):\n\
             \x20   s = ctx.state\n\
             \x20   if s.get('setups', 0) == 0:\n\
             \x20       s['early'] = s.get('early', 0) + 1\n\
             \x20   if ctx.block != s.get('calls', 0):\n\
             \x20       s['disorder'] = s.get('disorder', 0) + 1\n\
             \x20   if s.get('ticks', 0) != s.get('calls', 0):\n\
             \x20       s['tick_bad'] = s.get('tick_bad', 0) + 1\n\
             \x20   s['calls'] = s.get('calls', 0) + 1\n\
             \x20   block[:] = 0.0\n\
             \x20   block[0, :7] = [ctx.block, s['calls'], s.get('setups', 0), s.get('disorder', 0),\n\
             \x20                   s.get('tick_bad', 0), ctx.skipped, s.get('early', 0)]\n\
             \n\
             def tick(ctx):\n\
             \x20   s = ctx.state\n\
             \x20   if ctx.block != s['calls'] - 1 + ctx.latency_blocks or ctx.time != ctx.block * ctx.frames:\n\
             \x20       s['tick_bad'] = s.get('tick_bad', 0) + 1\n\
             \x20   s['ticks'] = s.get('ticks', 0) + 1\n",
            mark = py_str(&mark)
        ),
    );
    let cfg = TrackConfig::new(2, "order");
    let sup = supervisor(&cfg, |_| {});
    let mut track = scripted(cfg.clone(), &script, &sup);
    // Setup runs before the worker answers that the script is loaded: with
    // no block sent yet, it has run already, once, at block 0 and time 0.
    assert!(eventually(WAIT, || track.stats().script_ready.load(Ordering::Acquire)), "the script loaded");
    let setup = std::fs::read_to_string(&mark).expect("setup ran before the load was answered");
    assert_eq!(setup, "1 0 0 0 ['gain', 'mix'] 0");
    track.set_offline(Some(WAIT));
    let blocks = 300;
    let b = cfg.block;
    let l = cfg.latency_blocks;
    let mut out = vec![vec![0.0f32; blocks * b]; cfg.channels];
    run_blocks(&mut track, 0..blocks, &mut out);
    for k in l..blocks {
        let j = (k - l) as f32;
        let report = &out[0][k * b..k * b + 7];
        assert_eq!(
            report,
            [j, j + 1.0, 1.0, 0.0, 0.0, 0.0, 0.0],
            "output block {k} (block, calls, setups, disorder, tick errors, skipped, calls before setup)"
        );
    }
    assert_eq!(std::fs::read_to_string(&mark).expect("mark"), setup, "setup ran once");
}

/// What the catch-up script reports in the output at `frame`: (block,
/// process calls, total skipped, disorder).
fn catch_up_report(out: &[Vec<f32>], frame: usize) -> [f32; 4] {
    out[0][frame..frame + 4].try_into().expect("four samples")
}

/// Makes the worker fall `behind` blocks behind at block 20 (the script
/// waits for the test while the track sends `behind` more blocks), lets it
/// catch up, and returns the last report and the track's events and stale
/// results: ((block, calls, skipped, disorder), events, stale). With
/// `big_rings`, the ring to the worker holds all those blocks; without, it
/// has the engine's shape (L + 6 blocks) and the track cannot send the rest.
fn run_catch_up(behind: usize, id: u32, big_rings: bool) -> ([f32; 4], u64, u64, usize) {
    const STALL_AT: usize = 20;
    let dir = ScriptDir::new("hooks-catch-up");
    let cfg = TrackConfig::new(id, "catch-up");
    let (b, l) = (cfg.block, cfg.latency_blocks);
    // Blocks 0..=STALL_AT + 1 are sent before the stall (offline, the track
    // is L - 1 ahead of the script), `behind` during it.
    let newest = STALL_AT + 1 + behind;
    // The newest block sure to reach the script: with the engine's rings,
    // STALL_AT + 1 and the L + 5 after it fit (one more if the worker took
    // STALL_AT + 1 off the ring before it stalled).
    let caught_up = if big_rings { newest } else { STALL_AT + 1 + cfg.slot_rings().to_script.capacity - 1 };
    let script = dir.write(
        "catch_up.py",
        &format!(
            "import os, time\n\
             DIR = {dir}\n\
             \n\
             def setup(ctx):\n\
             \x20   ctx.state.update(calls=0, skipped=0, disorder=0, last=None)\n\
             \n\
             def process(block, ctx):\n\
             \x20   s = ctx.state\n\
             \x20   if s['last'] is not None and ctx.block != s['last'] + 1 + ctx.skipped:\n\
             \x20       s['disorder'] += 1\n\
             \x20   s['last'] = ctx.block\n\
             \x20   s['calls'] += 1\n\
             \x20   s['skipped'] += ctx.skipped\n\
             \x20   if ctx.block == {STALL_AT}:\n\
             \x20       open(os.path.join(DIR, 'stalled'), 'w').close()\n\
             \x20       give_up = time.monotonic() + 60\n\
             \x20       while not os.path.exists(os.path.join(DIR, 'release')) and time.monotonic() < give_up:\n\
             \x20           time.sleep(0.001)\n\
             \x20   if ctx.block >= {caught_up}:\n\
             \x20       open(os.path.join(DIR, 'caught-up'), 'w').close()\n\
             \x20   block[:] = 0.0\n\
             \x20   block[0, :4] = [ctx.block, s['calls'], s['skipped'], s['disorder']]\n\
             \n\
             def tick(ctx):\n\
             \x20   ctx.set_param('gain', 0.5)\n",
            dir = py_str(dir.path())
        ),
    );
    // Rings that hold every block sent during the stall (the engine's hold
    // L + 6, and a full ring is a gap of its own), and no restart of a
    // worker that waits on the test.
    let sup = supervisor(&cfg, |config| {
        if big_rings {
            config.slot_rings.to_script.capacity = 64;
        }
        config.heartbeat_timeout = Duration::from_secs(120);
    });
    let mut track = scripted(cfg.clone(), &script, &sup);
    let total = newest + 1 + 40;
    let mut out = vec![vec![0.0f32; total * b]; cfg.channels];
    track.set_offline(Some(WAIT));
    run_blocks(&mut track, 0..STALL_AT + 2, &mut out);
    assert!(eventually(WAIT, || dir.path().join("stalled").exists()), "the script reached block {STALL_AT}");
    // The worker is held in block STALL_AT: these pile up in its ring.
    track.set_offline(None);
    run_blocks(&mut track, STALL_AT + 2..newest + 1, &mut out);
    std::fs::write(dir.path().join("release"), b"").expect("release");
    assert!(eventually(WAIT, || dir.path().join("caught-up").exists()), "the script reached block {caught_up}");
    track.set_offline(Some(WAIT));
    run_blocks(&mut track, newest + 1..total - 1, &mut out);
    // Let the last results and their events arrive; the next block drains
    // them all and applies the events due before its end.
    std::thread::sleep(Duration::from_millis(300));
    run_blocks(&mut track, total - 1..total, &mut out);
    let last = catch_up_report(&out, (total - 1) * b);
    assert_eq!(last[0] as usize, total - 1 - l, "the last block played is the script's, on time");
    // (Without big rings, the first L blocks after the stall play blocks
    // that were never sent: dry.)
    for k in newest + 1 + if big_rings { 0 } else { l }..total {
        let report = catch_up_report(&out, k * b);
        assert_eq!(report[0] as usize, k - l, "block {k} after the catch-up plays the script's result");
    }
    let stats = track.stats();
    (last, stats.events.load(Ordering::Relaxed), stats.stale_results.load(Ordering::Relaxed), l)
}

#[test]
fn a_worker_that_fell_behind_runs_every_waiting_block_in_order() {
    let _turn = one_at_a_time();
    // 12 blocks waiting after the stall: within L + 16.
    let ([block, calls, skipped, disorder], events, stale, _) = run_catch_up(10, 3, true);
    eprintln!("block {block} calls {calls} skipped {skipped} disorder {disorder} events {events} stale {stale}");
    assert_eq!(calls, block + 1.0, "every block was run, once");
    assert_eq!((skipped, disorder), (0.0, 0.0), "no gap, nothing out of order");
    // Results that could no longer be played were not sent...
    assert_eq!(stale, 0, "no stale result reached the track");
    // ... but their events were: one per block run (those due by the end).
    assert!(events + 1 >= calls as u64 && events <= calls as u64 + 1, "events {events} for {calls} blocks");
}

#[test]
fn a_worker_far_behind_skips_the_oldest_blocks_and_says_so() {
    let _turn = one_at_a_time();
    // 41 blocks waiting after the stall (21..=61): past L + 16 = 18, so the
    // oldest 23 are skipped unseen.
    let behind = 40;
    let ([block, calls, skipped, disorder], events, stale, l) = run_catch_up(behind, 4, true);
    eprintln!("block {block} calls {calls} skipped {skipped} disorder {disorder} events {events} stale {stale}");
    let expected_skip = (behind + 1 - (l + 16)) as f32;
    assert_eq!(skipped, expected_skip, "ctx.skipped counted the blocks never run");
    assert_eq!(calls + skipped, block + 1.0, "every other block was run, once");
    assert_eq!(disorder, 0.0, "in order: each block is the previous + 1 + ctx.skipped");
    assert_eq!(stale, 0, "no stale result reached the track");
}

/// A worker started the way the supervisor starts one, with tracks wired to
/// it by hand, whose raw stderr lines the test reads.
struct BareWorker {
    lines: Arc<Mutex<Vec<String>>>,
    /// Killed when dropped.
    _process: WorkerProcess,
    _ports: Vec<TrackPort>,
}

impl BareWorker {
    /// Starts a worker running `scripts` (track config and path) on slots 0..n.
    fn start(scripts: &[(TrackConfig, PathBuf)]) -> (BareWorker, Vec<Track>) {
        let template = &scripts[0].0;
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let mut launch = Launch::new(scripts_host());
        launch.log = Some(LogCapture::new(move |_, line| {
            eprintln!("worker: {line:?}");
            sink.lock().expect("lines").push(line.to_string());
            true
        }));
        let slots = scripts.iter().map(|_| template.slot_rings());
        let mut process = WorkerProcess::start(&launch, 0, 1, slots, None).expect("start the worker");
        let mut tracks = Vec::new();
        let mut ports = Vec::new();
        for (slot, (cfg, path)) in scripts.iter().enumerate() {
            let spec = ScriptSpec {
                slot,
                track: cfg.id,
                name: cfg.name.clone(),
                path: path.clone(),
                channels: cfg.channels,
                frames: cfg.block,
                rate: cfg.sample_rate,
                latency_blocks: cfg.latency_blocks,
                params: vec!["mix".into(), "gain".into()],
                values: Vec::new(),
                hints: Vec::new(),
                instrument: false,
            };
            process.send(&Request::LoadScript(spec));
            let (track, mut port) = Track::new(cfg.clone());
            let link = ScriptLink {
                to_script: process.region().producer(slot_ring_to_script(slot)).expect("fresh region"),
                from_script: process.region().consumer(slot_ring_from_script(slot)).expect("fresh region"),
                generation: 1,
            };
            assert!(port.send_link(link));
            tracks.push(track);
            ports.push(port);
        }
        (BareWorker { lines, _process: process, _ports: ports }, tracks)
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().expect("lines").clone()
    }

    /// The records among the lines: (raw line, parsed JSON).
    fn records(&self) -> Vec<(String, serde_json::Value)> {
        self.lines()
            .into_iter()
            .filter_map(|line| {
                let json = line.strip_prefix('\u{1e}')?;
                let value = serde_json::from_str(json).unwrap_or_else(|e| panic!("record {line:?} is not JSON: {e}"));
                Some((line.clone(), value))
            })
            .collect()
    }
}

#[test]
fn worker_messages_are_one_line_records_attributed_to_their_track() {
    let _turn = one_at_a_time();
    let dir = ScriptDir::new("hooks-records");
    let raises = dir.write(
        "raises.py",
        "def helper(x):\n    raise ValueError(f'boom {x}')\n\ndef process(block, ctx):\n    helper(ctx.block % 1)\n",
    );
    let logs_source = "import outboard\n\
                       outboard.log('imported')\n\
                       \n\
                       def setup(ctx):\n\
                       \x20   ctx.log('set up', 'v1', 'multi\\nline é \"quoted\"')\n\
                       \n\
                       def process(block, ctx):\n\
                       \x20   if ctx.block == 3:\n\
                       \x20       outboard.log(f'block {ctx.block}')\n";
    let logs = dir.write("logs.py", logs_source);
    let missing = dir.path().join("missing.py");
    let configs: Vec<(TrackConfig, PathBuf)> =
        [(41, "raises", raises.into()), (42, "logs", logs.into()), (43, "missing", missing)]
            .into_iter()
            .map(|(id, name, path): (u32, &str, PathBuf)| (TrackConfig::new(id, name), path))
            .collect();
    let (worker, mut tracks) = BareWorker::start(&configs);
    let b = configs[0].0.block;
    let blocks = 200;
    let mut outs: Vec<Vec<Vec<f32>>> =
        tracks.iter().map(|t| vec![vec![0.0; blocks * b]; t.config().channels]).collect();
    for (track, out) in tracks.iter_mut().zip(&mut outs).take(2) {
        track.set_offline(Some(WAIT));
        run_blocks(track, 0..blocks, out);
    }
    // The repeat count comes after REPEAT_REPORT_SECONDS (2 s) of the same error.
    let mut k = blocks;
    let warned = eventually(WAIT, || {
        let mut out = vec![vec![0.0; (k + 1) * b]; 2];
        run_blocks(&mut tracks[0], k..k + 1, &mut out);
        k += 1;
        worker.records().iter().any(|(_, r)| r["track"] == 41 && r["level"] == "warning")
    });
    assert!(warned, "a repeated error is counted");
    // An edit is reloaded (and set up again).
    std::fs::write(dir.path().join("logs.py"), logs_source.replace("v1", "v2!")).expect("edit");
    let reloaded = eventually(WAIT, || {
        worker.records().iter().any(|(_, r)| r["text"].as_str().is_some_and(|t| t.contains("set up v2!")))
    });
    assert!(reloaded, "the edited script was set up again");

    let records = worker.records();
    for (line, record) in &records {
        assert!(line.is_ascii(), "a record is plain ASCII: {line:?}");
        let keys: Vec<&str> = record.as_object().expect("an object").keys().map(String::as_str).collect();
        assert_eq!(keys.len(), 3, "{line}");
        assert!(["error", "warning", "info"].contains(&record["level"].as_str().expect("level")), "{line}");
        assert!(record["track"].is_null() || record["track"].is_u64(), "{line}");
        assert!(line.starts_with("\u{1e}{\"track\":"), "compact JSON, track first: {line:?}");
    }
    let find = |track: u32, level: &str, needle: &str| {
        records
            .iter()
            .find(|(_, r)| {
                r["track"] == track && r["level"] == level && r["text"].as_str().expect("text").contains(needle)
            })
            .unwrap_or_else(|| panic!("no {level} record of track {track} with {needle:?} in\n{records:#?}"))
    };
    // An error: the head line, then the traceback's frames, ending with the user's.
    let (_, error) = find(41, "error", "ValueError: boom 0");
    let text = error["text"].as_str().expect("text");
    let head = text.lines().next().expect("a head line");
    assert!(
        head.starts_with("outboard: script error in ")
            && head.contains("raises.py:2 (raises, process): ValueError: boom 0"),
        "{head}"
    );
    assert!(text.contains("\nTraceback (most recent call last):\n"), "{text}");
    assert!(text.contains("line 5, in process") && text.contains("line 2, in helper"), "{text}");
    assert!(!text.contains("outboard_rt.py"), "the runtime's own frames are left out: {text}");
    let (_, repeat) = find(41, "warning", "the same error");
    assert!(repeat["text"].as_str().expect("text").contains("raises.py:2"), "{repeat}");
    // ctx.log and outboard.log: info records of the track whose code ran.
    let (line, said) = find(42, "info", "set up v1");
    assert_eq!(said["text"], "[logs] set up v1 multi\nline é \"quoted\"");
    assert!(!line.contains('\n'), "one line");
    find(42, "info", "[logs] imported");
    find(42, "info", "[logs] block 3");
    find(42, "info", "outboard: reloaded");
    find(42, "info", "set up v2!");
    // A file that cannot be read.
    find(43, "error", "cannot read it");
    // Nothing about a track is written as plain text.
    let plain: Vec<String> = worker.lines().into_iter().filter(|l| !l.starts_with('\u{1e}')).collect();
    for line in &plain {
        assert!(
            !line.contains("raises.py") && !line.contains("[logs]") && !line.contains("missing.py"),
            "plain line about a track: {line}"
        );
    }
    let errors = records.iter().filter(|(_, r)| r["track"] == 41 && r["level"] == "error").count();
    assert_eq!(errors, 1, "the same error is reported once, then counted");
}

#[test]
fn blocks_a_full_ring_never_sent_are_counted_as_skipped() {
    let _turn = one_at_a_time();
    // The engine's ring holds L + 6 = 8 blocks: of the 20 sent during the
    // stall, about a dozen never reach the worker.
    let ([block, calls, skipped, disorder], _, _, _) = run_catch_up(20, 5, false);
    eprintln!("block {block} calls {calls} skipped {skipped} disorder {disorder}");
    assert!(skipped >= 10.0, "ctx.skipped counted the blocks never sent ({skipped})");
    assert_eq!(calls + skipped, block + 1.0, "every block sent was run, once");
    assert_eq!(disorder, 0.0, "in order: each block is the previous + 1 + ctx.skipped");
}
