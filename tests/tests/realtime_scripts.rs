//! Tracks processed by Python scripts in worker processes, in real time.

use std::path::PathBuf;
use std::sync::atomic::Ordering;

use outboard_engine::supervisor::{ScriptedTrack, Supervisor, SupervisorConfig};
use outboard_engine::track::{Track, TrackConfig};
use outboard_tests::realtime::{classify_blocks, run_paced};
use outboard_tests::{ScriptDir, workspace_bin};

fn supervisor(template: &TrackConfig) -> Supervisor {
    let mut config = SupervisorConfig::new(workspace_bin("outboard-scripts-host"), template);
    config.echo_log = true;
    Supervisor::start(config)
}

fn scripted(config: TrackConfig, script: &str, supervisor: &Supervisor) -> Track {
    let (track, port) = Track::new(config);
    supervisor.add_track(ScriptedTrack { port, script: PathBuf::from(script), params: vec!["mix".into(), "gain".into()] });
    track
}

#[test]
fn a_script_processes_audio_with_exactly_l_blocks_of_latency() {
    let dir = ScriptDir::new("rt-gain");
    let script = dir.write("double.py", "def process(block, ctx):\n    block *= 2.0\n");
    let cfg = TrackConfig::new(1, "double");
    let sup = supervisor(&cfg);
    let mut track = scripted(cfg.clone(), &script, &sup);
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
