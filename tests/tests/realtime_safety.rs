//! Proof that the realtime entry points (track processing, the graph driver,
//! the graph track threads, the plugin's process) are realtime-safe: they run under
//! `assert_no_alloc` (no allocation or free) and under a per-thread seccomp
//! filter that allows no syscall but FUTEX_WAKE, with a real script worker on
//! the other end, through late results, tick events and a worker restart.

use std::path::PathBuf;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use assert_no_alloc::{AllocDisabler, assert_no_alloc, reset_violation_count, violation_count};
use outboard_engine::realtime::graph::{Graph, GraphConfig, GraphTrack, Source};
use outboard_engine::realtime::track::{Track, TrackConfig};
use outboard_engine::realtime::voice::Waveform;
use outboard_engine::workers::supervisor::{ScriptedTrack, Supervisor, SupervisorConfig};
use outboard_tests::rt_safety::{
    assert_child_ok, current_tid, forbid_syscalls_but_wake, page_faults, run_child, scenario,
};
use outboard_tests::{ScriptDir, scripts_host};

#[global_allocator]
static ALLOCATOR: AllocDisabler = AllocDisabler;

const SCRIPT: &str = "import numpy as np\n\ndef process(block, ctx):\n    block *= 0.5\n\ndef tick(ctx):\n    if ctx.block % 50 == 0:\n        ctx.note(60 + ctx.block % 12, 0.8, 0.05)\n";

/// The plugin's script: declared parameters applied on their frames,
/// every note and MIDI message answered (so the plugin's output event path
/// runs), a parameter moved now and then, notes from `tick`.
const PLUGIN_SCRIPT: &str = r#"
import numpy as np

PARAMS = {"gain": dict(min=0.0, max=1.0, default=0.5), "mode": dict(choices=["a", "b"])}

def process(block, ctx):
    for start, end, p in ctx.segments():
        block[:, start:end] *= np.float32(p["gain"])
    for e in ctx.events:
        if e.kind == "note_on":
            ctx.note_on(min(127, e.key + 12), e.velocity, at=e.time, channel=e.channel)
        elif e.kind == "note_off":
            ctx.note_off(min(127, e.key + 12), at=e.time, channel=e.channel)
        else:
            ctx.midi(e.data, at=e.time)
    if ctx.block % 200 == 0:
        ctx.set_param("mode", "b" if ctx.transport.playing else "a")

def tick(ctx):
    if ctx.block % 50 == 0:
        ctx.note(60 + ctx.block % 12, 0.8, 0.05)
"#;

/// Events the plugin handed the host in the plugin scenario (its notes,
/// MIDI, parameter gestures): proof the output path ran.
static OUTPUT_EVENTS: AtomicU64 = AtomicU64::new(0);

/// What a realtime test thread reports to the test while it runs: blocks
/// done, wet blocks heard, and (at the end) its allocation violations.
#[derive(Clone, Default)]
struct Progress {
    /// The realtime thread's kernel id, for reading its page faults.
    tid: Arc<AtomicI32>,
    done: Arc<AtomicBool>,
    processed: Arc<AtomicU64>,
    wet: Arc<AtomicU64>,
    violations: Arc<AtomicU32>,
}

impl Progress {
    /// On the realtime thread, first (before any filter): who it is.
    fn started(&self) {
        self.tid.store(current_tid(), Ordering::Release);
    }

    /// On the test's thread: the realtime thread's page faults so far.
    fn page_faults(&self) -> u64 {
        page_faults(self.tid.load(Ordering::Acquire))
    }

    /// On the realtime thread: block `k` is done. Atomics only.
    fn block_done(&self, k: u64, wet: bool) {
        if wet {
            self.wet.fetch_add(1, Ordering::Relaxed);
        }
        self.processed.store(k + 1, Ordering::Release);
    }

    /// On the realtime thread, last: reports and, under the filter (where
    /// even a thread's exit would be a syscall), spins until the process ends.
    fn finish(&self, seccomp: bool) {
        self.violations.store(violation_count(), Ordering::Release);
        self.done.store(true, Ordering::Release);
        if seccomp {
            loop {
                std::hint::spin_loop();
            }
        }
    }

    /// On the test's thread: waits until `blocks` are done.
    fn wait_for(&self, blocks: u64) {
        while self.processed.load(Ordering::Acquire) < blocks {
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn wait_done(&self) {
        while !self.done.load(Ordering::Acquire) {
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn blocks(&self) -> u64 {
        self.processed.load(Ordering::Acquire)
    }

    fn violations(&self) -> u32 {
        self.violations.load(Ordering::Acquire)
    }

    fn wet_blocks(&self) -> u64 {
        self.wet.load(Ordering::Relaxed)
    }
}

struct Outcome {
    /// Page faults the realtime thread took from the end of the warm-up
    /// until well after the worker's restart (the DSP load raised in
    /// between). Regions are pre-faulted when they are created (see
    /// `Region::create_with`), and workers are started without fork (see
    /// `Region::pass_to_child`), so neither a fresh region nor a restart
    /// costs the realtime thread a fault. Nothing here calls `mlockall`.
    page_faults: u64,
    blocks: u64,
    violations: u32,
    wet_blocks: u64,
    events: u64,
    generation: u32,
    dsp_sum: f64,
}

/// A scripted track with a voice, processed block by block on a thread of its
/// own paced by busy-waiting on the clock (a syscall-free wait), with the
/// worker killed half-way. With `seccomp`, the thread runs under the filter.
fn track_scenario(seccomp: bool) -> Outcome {
    let dir = ScriptDir::new("rt-safety");
    let script = dir.write("safe.py", SCRIPT);
    let mut cfg = TrackConfig::new(1, "safe");
    cfg.voice = Some(Waveform::Saw);
    let mut config = SupervisorConfig::new(scripts_host(), &cfg);
    config.echo_log = false;
    let supervisor = Supervisor::start(config);
    let (mut track, port) = Track::new(cfg.clone());
    let stats = track.stats().clone();
    let dsp = track.params().clone();
    supervisor.add_track(ScriptedTrack::new(port, PathBuf::from(script), vec!["mix".into()]));
    // Served before the measured run: how long Python takes to start on a
    // busy machine is not what this measures.
    assert!(track.wait_ready(Duration::from_secs(60)), "the worker loaded the script");

    let blocks = 3000u64;
    let progress = Progress::default();
    let rt_progress = progress.clone();
    let _rt = std::thread::spawn(move || {
        let b = cfg.block;
        let input = vec![vec![0.25f32; b]; 2];
        let mut output = vec![vec![0.0f32; b]; 2];
        let period = Duration::from_secs_f64(b as f64 / cfg.sample_rate);
        rt_progress.started();
        if seccomp {
            forbid_syscalls_but_wake();
        }
        reset_violation_count();
        let start = Instant::now();
        for k in 0..blocks {
            // Busy-wait: Instant::now reads the vDSO clock, no syscall.
            while start.elapsed() < period * k as u32 {
                std::hint::spin_loop();
            }
            assert_no_alloc(|| {
                let inputs: [&[f32]; 2] = [&input[0], &input[1]];
                let (left, right) = output.split_at_mut(1);
                let mut outputs: [&mut [f32]; 2] = [&mut left[0], &mut right[0]];
                track.process(&inputs, &mut outputs, b);
            });
            // Wet blocks are the input halved (plus the voice): below 0.25 somewhere.
            rt_progress.block_done(k, output[1].iter().any(|&s| s != 0.25 && s != 0.0));
        }
        rt_progress.finish(seccomp);
    });
    // Raise the DSP load a third of the way (the track computes it on its
    // thread), and kill the worker half-way: the track must adopt the new
    // link on its own.
    progress.wait_for(blocks / 6);
    let faults_before = progress.page_faults();
    progress.wait_for(blocks / 3);
    dsp.set_dsp_terms(5_000);
    progress.wait_for(blocks / 2);
    let steady_faults = progress.page_faults() - faults_before;
    supervisor.kill_worker_of(1).expect("the track had a worker");
    progress.wait_for(blocks * 9 / 10);
    let page_faults = progress.page_faults() - faults_before;
    eprintln!(
        "page faults on the realtime thread: {steady_faults} steady, {} around the worker restart",
        page_faults - steady_faults
    );
    progress.wait_done();
    Outcome {
        page_faults,
        blocks: progress.blocks(),
        violations: progress.violations(),
        wet_blocks: progress.wet_blocks(),
        events: stats.events.load(Ordering::Relaxed),
        generation: stats.link_generation.load(Ordering::Relaxed),
        dsp_sum: f64::from_bits(stats.dsp_sink.load(Ordering::Relaxed)),
    }
}

fn check(outcome: &Outcome) {
    assert_eq!(outcome.blocks, 3000);
    assert_eq!(outcome.page_faults, 0, "the realtime thread took page faults (steady, or around the restart)");
    assert_eq!(outcome.violations, 0, "the track allocated or freed on its realtime thread");
    // That the script ran at all (how often it was on time is a bench figure:
    // a loaded machine makes more of its results late).
    assert!(outcome.wet_blocks > 100, "the script's output was played ({} blocks)", outcome.wet_blocks);
    assert!(outcome.events > 10, "tick events arrived ({})", outcome.events);
    assert!(outcome.generation >= 2, "the track moved to the restarted worker's rings");
    let expected = outboard_engine::compute::partial_sum_scalar(1, 5_001);
    assert!((outcome.dsp_sum - expected).abs() < 1e-12, "the DSP load ran: {}", outcome.dsp_sum);
}

#[test]
fn track_processing_never_allocates() {
    if scenario().is_some() {
        return;
    }
    // The scenarios busy-wait a core each: one at a time on a 2-core machine.
    let _turn = outboard_tests::realtime::one_at_a_time();
    check(&track_scenario(false));
}

#[test]
fn track_processing_makes_no_syscall_but_a_wake() {
    if scenario().as_deref() == Some("track") {
        let outcome = track_scenario(true);
        check(&outcome);
        std::process::exit(0);
    }
    if scenario().is_some() {
        return;
    }
    let _turn = outboard_tests::realtime::one_at_a_time();
    assert_child_ok(run_child("track_processing_makes_no_syscall_but_a_wake", "track"), "track processing");
}

/// The graph driver's tick: mixing and releasing track threads, under both checks.
#[test]
fn the_graph_driver_tick_is_realtime_safe() {
    if scenario().as_deref() == Some("driver") {
        let tracks: Vec<GraphTrack> = (0..3)
            .map(|i| {
                let mut cfg = TrackConfig::new(i, format!("t{i}"));
                cfg.scripted = false;
                let (track, _port) = Track::new(cfg);
                GraphTrack {
                    name: format!("t{i}"),
                    processor: Box::new(track),
                    source: Source::Sine { freq: 220.0, gain: 0.1 },
                }
            })
            .collect();
        let config = GraphConfig { priority: None, ..GraphConfig::default() };
        let (_graph, mut driver) = Graph::start_with_driver(&config, tracks);
        let ok = Arc::new(AtomicBool::new(false));
        let flag = ok.clone();
        std::thread::spawn(move || {
            let mut master = vec![0.0f32; 128];
            forbid_syscalls_but_wake();
            reset_violation_count();
            let mut heard = false;
            let start = Instant::now();
            for n in 0..2000u32 {
                while start.elapsed() < Duration::from_micros(1333) * n {
                    std::hint::spin_loop();
                }
                assert_no_alloc(|| driver.tick(&mut master, 2));
                heard |= master.iter().any(|&s| s != 0.0);
            }
            flag.store(heard && violation_count() == 0, Ordering::Release);
            loop {
                std::hint::spin_loop();
            }
        });
        std::thread::sleep(Duration::from_secs(4));
        std::process::exit(if ok.load(Ordering::Acquire) { 0 } else { 1 });
    }
    if scenario().is_some() {
        return;
    }
    let _turn = outboard_tests::realtime::one_at_a_time();
    assert_child_ok(run_child("the_graph_driver_tick_is_realtime_safe", "driver"), "graph driver");
}

/// The filter is real: a thread under it that sleeps is killed.
#[test]
fn the_filter_kills_a_thread_that_makes_another_syscall() {
    if scenario().as_deref() == Some("forbidden") {
        forbid_syscalls_but_wake();
        std::thread::sleep(Duration::from_millis(1));
        std::process::exit(0);
    }
    if scenario().is_some() {
        return;
    }
    use std::os::unix::process::ExitStatusExt;
    let status = run_child("the_filter_kills_a_thread_that_makes_another_syscall", "forbidden");
    assert_eq!(status.signal(), Some(libc::SIGSYS), "nanosleep under the filter must be fatal ({status})");
}

/// The page-fault count is real: a thread writing a ring of a region whose
/// pages were left untouched takes faults that the count sees (and that
/// would fail the scenarios above); the same writes to a region made as the
/// engine makes them take none (the control, in the same run).
#[test]
fn the_fault_count_catches_an_untouched_region() {
    use outboard_engine::shm::region::Region;
    use outboard_engine::shm::ring::RingShape;
    if scenario().is_some() {
        return;
    }
    // 64 slots of 4 KiB: one page each.
    let shape = RingShape { capacity: 64, payload: 4000 };
    let faults_writing = |region: Region| -> u64 {
        let mut warm_up = Region::create(&[shape]).expect("region");
        let mut warm_up = warm_up.producer(0).expect("ring");
        let mut region = region;
        let mut producer = region.producer(0).expect("ring");
        let progress = Progress::default();
        let go = Arc::new(AtomicBool::new(false));
        let thread = {
            let (progress, go) = (progress.clone(), go.clone());
            std::thread::spawn(move || {
                progress.started();
                let message = [7u8; 4000];
                // The same writes to another (pre-faulted) region first: the
                // thread's stack and the code are then no longer new.
                while warm_up.try_push(&message).is_ok() {}
                progress.block_done(0, false);
                while !go.load(Ordering::Acquire) {
                    std::hint::spin_loop();
                }
                while producer.try_push(&message).is_ok() {}
                progress.block_done(1, false);
                // Stay (the count is read from the thread's /proc entry).
                while go.load(Ordering::Acquire) {
                    std::hint::spin_loop();
                }
            })
        };
        progress.wait_for(1);
        let before = progress.page_faults();
        go.store(true, Ordering::Release);
        progress.wait_for(2);
        let faults = progress.page_faults() - before;
        go.store(false, Ordering::Release);
        thread.join().expect("writer");
        faults
    };
    let untouched = faults_writing(Region::create_untouched(&[shape]).expect("region"));
    let engine_made = faults_writing(Region::create(&[shape]).expect("region"));
    eprintln!("page faults writing 64 ring pages: {untouched} untouched, {engine_made} pre-faulted");
    assert!(untouched >= 32, "an untouched region's pages fault on first write ({untouched})");
    assert_eq!(engine_made, 0, "the engine's regions are pre-faulted");
}

/// The allocation check is real: an allocation inside it is counted.
#[test]
fn the_allocation_check_catches_an_allocation() {
    if scenario().is_some() {
        return;
    }
    reset_violation_count();
    assert_no_alloc(|| std::hint::black_box(vec![1u8; 16]).len());
    assert!(violation_count() >= 1);
}

/// What the plugin scenario saw.
struct PluginOutcome {
    /// Page faults the processing thread took from the end of the warm-up
    /// until well after the workers' restart (see `Outcome::page_faults`).
    page_faults: u64,
    blocks: u64,
    violations: u32,
    wet_blocks: u64,
    restarted: bool,
    output_events: u64,
}

/// outboard.clap's `process`, called through the CLAP ABI by outboard-host's
/// processor on a thread of its own, as a DAW's audio thread would: varying
/// block sizes, parameter events, the worker killed half-way. The plugin is
/// linked into this test binary (its `clap_entry`), so the allocation check
/// sees its allocations too. With `seccomp`, the thread runs under the filter.
fn plugin_scenario(seccomp: bool) -> PluginOutcome {
    use clack_host::events::event_types::{MidiEvent, NoteOffEvent, NoteOnEvent};
    use clack_host::events::{Match, Pckn};
    use outboard_host::{ActivateConfig, Bundle, Transport};
    let dir = ScriptDir::new("rt-safety-plugin");
    // SAFETY: this runs in a child process started for this scenario, before
    // it starts any thread that could read the environment.
    unsafe { std::env::set_var("OUTBOARD_SCRIPTS_HOST", scripts_host()) };
    // SAFETY: the entry is outboard.clap's own, linked in.
    let bundle = unsafe { Bundle::from_entry(&outboard_plugin::clap_entry, &dir.path().join("outboard.clap")) }
        .expect("the linked plugin");
    let mut instance = bundle.instantiate_with(outboard_plugin::PLUGIN_ID, false).expect("an instance");
    outboard_host::run::apply_script(&mut instance, "safe.py", PLUGIN_SCRIPT).expect("script");
    let mix = instance.params().iter().find(|p| p.name == "Mix").expect("Mix").id;
    let mut processor =
        instance.activate(ActivateConfig { min_frames: 1, ..ActivateConfig::new(48_000.0, 128) }).expect("activate");
    // The script's declared parameter, there once activation has seen it load.
    let gain = instance.params().iter().find(|p| p.name == "gain").expect("the declared gain").id;
    processor.start_processing().expect("start");
    // Host input as real hosts send it: Qtractor's zeroed transport header,
    // events out of order and past the end of the call. The plugin's guard
    // and its event ordering run on this thread too.
    processor.set_quirks(
        outboard_host::Quirks::parse("zeroed-transport,unsorted-events,events-past-end").expect("quirk names"),
    );

    let blocks = 3000u64;
    let progress = Progress::default();
    let rt_progress = progress.clone();
    std::thread::spawn(move || {
        let input = [0.25f32; 128];
        let mut output = [0.0f32; 128];
        rt_progress.started();
        if seccomp {
            forbid_syscalls_but_wake();
        }
        reset_violation_count();
        let start = Instant::now();
        let mut frames = 0u64;
        for k in 0..blocks {
            // 32, 64 or 96 frames: calls that straddle the internal blocks.
            let n = 32 * (1 + k % 3) as u32;
            while start.elapsed() < Duration::from_secs_f64(frames as f64 / 48_000.0) {
                std::hint::spin_loop();
            }
            assert_no_alloc(|| {
                processor.write_input(0, 0, &input[..n as usize]);
                processor.write_input(0, 1, &input[..n as usize]);
                if k % 100 == 50 {
                    let mix_value = if k % 200 == 50 { 0.9 } else { 1.0 };
                    processor.push_param_value(n / 4, mix, 0.95);
                    processor.push_param_value(n / 2, mix, mix_value);
                }
                // Notes, MIDI, a declared parameter and the transport: the
                // paths to the script and back out run on this thread too.
                let key = Pckn::new(0u16, (k % 16) as u16, (36 + k % 48) as u16, Match::All);
                match k % 10 {
                    0 => processor.push_event(&NoteOnEvent::new(n / 3, key, 0.8)),
                    5 => processor.push_event(&NoteOffEvent::new(n / 3, key, 0.0)),
                    7 => processor.push_event(&MidiEvent::new(n / 2, 0, [0xB0, 1, (k % 128) as u8])),
                    _ => true,
                };
                if k % 100 == 25 {
                    processor.push_param_value(n / 3, gain, 0.4 + (k % 3) as f64 * 0.05);
                }
                processor.set_transport(Some(Transport { tempo: 90.0 + (k % 60) as f64, playing: k % 500 < 400 }));
                processor.process(n).expect("process");
                processor.read_output(0, 1, &mut output[..n as usize]);
                OUTPUT_EVENTS.fetch_add(u64::from(processor.output_events().len()), Ordering::Relaxed);
            });
            frames += u64::from(n);
            // Wet: the input halved (mixed 90 % or 100 %), not the dry 0.25.
            rt_progress.block_done(k, output[..n as usize].iter().any(|&s| s < 0.2 && s != 0.0));
        }
        rt_progress.finish(seccomp);
    });
    progress.wait_for(blocks / 6);
    let faults_before = progress.page_faults();
    progress.wait_for(blocks / 2);
    // The plugin's own process-wide supervisor (this binary links the plugin).
    let before = outboard_plugin::scripting::worker_pids();
    for pid in &before {
        let _ = rustix::process::kill_process(
            rustix::process::Pid::from_raw(*pid as i32).expect("pid"),
            rustix::process::Signal::KILL,
        );
    }
    progress.wait_for(blocks * 9 / 10);
    let page_faults = progress.page_faults() - faults_before;
    eprintln!("page faults on the plugin's processing thread, the restart included: {page_faults}");
    progress.wait_done();
    let after = outboard_plugin::scripting::worker_pids();
    PluginOutcome {
        page_faults,
        blocks: progress.blocks(),
        violations: progress.violations(),
        wet_blocks: progress.wet_blocks(),
        restarted: !before.is_empty() && !after.is_empty() && before.iter().all(|p| !after.contains(p)),
        output_events: OUTPUT_EVENTS.load(Ordering::Relaxed),
    }
}

fn check_plugin(outcome: &PluginOutcome) {
    assert_eq!(outcome.blocks, 3000);
    assert_eq!(outcome.violations, 0, "the plugin's process allocated or freed");
    assert_eq!(outcome.page_faults, 0, "the plugin's process took page faults (steady, or around the restart)");
    // That the script ran at all (how often it was on time is a bench figure:
    // a loaded machine makes more of its results late).
    assert!(outcome.wet_blocks > 100, "the script's output was played ({} blocks)", outcome.wet_blocks);
    assert!(outcome.restarted, "the killed worker was replaced");
    // 3000 calls: 300 notes and 300 note offs in, answered, plus the
    // script's own notes and parameter gestures (how many came back in
    // time is a bench figure: late ones are dropped with their block).
    assert!(outcome.output_events > 100, "the script's events reached the host ({})", outcome.output_events);
}

// Both plugin scenarios run in a child process: they set the environment
// (where the scripts host is), which must not race other tests' threads.
#[test]
fn the_plugins_process_never_allocates() {
    if scenario().as_deref() == Some("plugin-alloc") {
        check_plugin(&plugin_scenario(false));
        std::process::exit(0);
    }
    if scenario().is_some() {
        return;
    }
    let _turn = outboard_tests::realtime::one_at_a_time();
    assert_child_ok(run_child("the_plugins_process_never_allocates", "plugin-alloc"), "the plugin's process");
}

#[test]
fn the_plugins_process_makes_no_syscall_but_a_wake() {
    if scenario().as_deref() == Some("plugin") {
        check_plugin(&plugin_scenario(true));
        std::process::exit(0);
    }
    if scenario().is_some() {
        return;
    }
    let _turn = outboard_tests::realtime::one_at_a_time();
    assert_child_ok(run_child("the_plugins_process_makes_no_syscall_but_a_wake", "plugin"), "the plugin's process");
}

/// A graph track as the graph runner's track thread calls it, checked from
/// inside: its first call puts the thread under the filter (allowing the
/// period wait too), every call runs under the allocation check.
struct Guarded {
    track: Track,
    filtered: bool,
    /// The track thread's kernel id, for reading its page faults.
    tid: Arc<AtomicI32>,
    violations: Arc<AtomicU32>,
    calls: Arc<AtomicU64>,
}

impl outboard_engine::realtime::graph::BlockProcessor for Guarded {
    fn process(&mut self, inputs: &[&[f32]], outputs: &mut [&mut [f32]], frames: usize) {
        if !self.filtered {
            self.filtered = true;
            self.tid.store(current_tid(), Ordering::Release);
            outboard_tests::rt_safety::forbid_syscalls_but_wake_and_period_wait();
            reset_violation_count();
        }
        assert_no_alloc(|| self.track.process(inputs, outputs, frames));
        self.violations.store(violation_count(), Ordering::Relaxed);
        self.calls.fetch_add(1, Ordering::Relaxed);
    }

    fn channels(&self) -> usize {
        self.track.config().channels
    }
}

/// The graph runner's track threads: each runs its scripted track under the
/// filter (only wakes, and its own period wait) and the allocation check,
/// for the whole run, the thread loop included from its first period on;
/// none takes a page fault after the warm-up, through a worker's restart.
#[test]
fn the_graph_track_threads_are_realtime_safe() {
    if scenario().as_deref() == Some("track-threads") {
        let dir = ScriptDir::new("rt-safety-graph");
        let script = dir.write("safe.py", SCRIPT);
        let template = TrackConfig::new(0, "template");
        let mut config = SupervisorConfig::new(scripts_host(), &template);
        config.echo_log = false;
        let supervisor = Supervisor::start(config);
        let violations = Arc::new(AtomicU32::new(0));
        let mut counters = Vec::new();
        let tracks: Vec<GraphTrack> = (0..3)
            .map(|i| {
                let (track, port) = Track::new(TrackConfig::new(i, format!("t{i}")));
                supervisor.add_track(ScriptedTrack::new(port, PathBuf::from(&script), vec!["mix".into()]));
                let calls = Arc::new(AtomicU64::new(0));
                let tid = Arc::new(AtomicI32::new(0));
                counters.push((track.stats().clone(), calls.clone(), tid.clone()));
                let guarded = Guarded { track, filtered: false, tid, violations: violations.clone(), calls };
                GraphTrack {
                    name: format!("t{i}"),
                    processor: Box::new(guarded),
                    source: Source::Sine { freq: 220.0, gain: 0.1 },
                }
            })
            .collect();
        let config = GraphConfig { priority: None, ..GraphConfig::default() };
        let (_graph, mut driver) = Graph::start_with_driver(&config, tracks);
        let faults = || -> u64 { counters.iter().map(|(_, _, tid)| page_faults(tid.load(Ordering::Acquire))).sum() };
        let mut master = vec![0.0f32; 128];
        let mut faults_before = 0;
        let mut fault_count = 0;
        let start = Instant::now();
        for n in 0..3000u32 {
            if let Some(wait) = (start + Duration::from_micros(1333) * n).checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            driver.tick(&mut master, 2);
            match n {
                500 => faults_before = faults(),
                1500 => {
                    supervisor.kill_worker_of(1).expect("track 1 had a worker");
                }
                2900 => fault_count = faults() - faults_before,
                _ => {}
            }
        }
        let all_ran = counters.iter().all(|(_, calls, _)| calls.load(Ordering::Relaxed) > 2000);
        let scripted = counters.iter().all(|(stats, _, _)| stats.script_ready.load(Ordering::Acquire));
        let restarted = counters[1].0.link_generation.load(Ordering::Relaxed) >= 2;
        let clean = violations.load(Ordering::Relaxed) == 0;
        eprintln!(
            "track threads: all ran {all_ran}, scripts loaded {scripted}, restarted {restarted}, \
             no allocation {clean}, page faults {fault_count}"
        );
        // Exit from here: a filtered track thread may not even exit.
        let ok = all_ran && scripted && restarted && clean && fault_count == 0;
        std::process::exit(if ok { 0 } else { 1 });
    }
    if scenario().is_some() {
        return;
    }
    let _turn = outboard_tests::realtime::one_at_a_time();
    assert_child_ok(run_child("the_graph_track_threads_are_realtime_safe", "track-threads"), "graph track threads");
}
