//! The graph runner: a track that misses its period is played as silence and
//! counted, and is never waited for.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use outboard_engine::realtime::graph::{BlockProcessor, Graph, GraphConfig, GraphTrack, Source};

/// Outputs a constant; stalls for `stall` once, at period `at`.
struct Constant {
    value: f32,
    at: u64,
    stall: Duration,
    calls: Arc<AtomicU64>,
}

impl BlockProcessor for Constant {
    fn process(&mut self, _inputs: &[&[f32]], outputs: &mut [&mut [f32]], frames: usize) {
        let call = self.calls.fetch_add(1, Ordering::Relaxed);
        if call == self.at {
            // A test stand-in for a track overrunning its deadline.
            std::thread::sleep(self.stall);
        }
        for out in outputs.iter_mut() {
            out[..frames].fill(self.value);
        }
    }

    fn channels(&self) -> usize {
        1
    }
}

#[test]
fn a_late_track_is_silence_for_that_period_and_a_counted_miss() {
    let _turn = outboard_tests::realtime::one_at_a_time();
    let calls = [Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0))];
    let tracks = vec![
        GraphTrack {
            name: "steady".into(),
            processor: Box::new(Constant { value: 1.0, at: u64::MAX, stall: Duration::ZERO, calls: calls[0].clone() }),
            source: Source::Silence,
        },
        GraphTrack {
            name: "stalls".into(),
            processor: Box::new(Constant {
                value: 100.0,
                at: 200,
                stall: Duration::from_millis(20),
                calls: calls[1].clone(),
            }),
            source: Source::Silence,
        },
    ];
    let masters = Arc::new(Mutex::new(Vec::new()));
    let sink = masters.clone();
    let config = GraphConfig { master_channels: 1, ..GraphConfig::default() };
    let mut graph = Graph::start(&config, tracks, Box::new(move |master: &[f32]| sink.lock().unwrap().push(master[0])));
    // About a second of periods, the stall (at period 200) well inside it.
    outboard_tests::eventually(Duration::from_secs(20), || {
        graph.stats().periods.load(Ordering::Relaxed) >= 750 && calls[1].load(Ordering::Acquire) >= 216
    });
    // The stalled track processes every period it was released, so it comes
    // back level with the steady one. Checked while the graph still runs:
    // at `stop` one thread may already have taken the last released period
    // and the other not (or, on a loaded machine, be a few behind), so the
    // counts after `stop` are not a measure of catching up.
    let gap = || calls[0].load(Ordering::Acquire).abs_diff(calls[1].load(Ordering::Acquire));
    let caught_up = outboard_tests::eventually(Duration::from_secs(10), || gap() <= 1);
    let gap = gap();
    graph.stop();
    let masters = masters.lock().unwrap();
    let stats = graph.stats();
    let stalled_misses = stats.track_misses[1].load(Ordering::Relaxed);
    // The stall covers 15 periods: at least 10 of them were played without it.
    assert!(stalled_misses >= 10, "missed periods counted ({stalled_misses})");
    // Without it: the steady track alone (1), or nothing where the steady
    // one missed too (0: a loaded machine, beside a compile, delays both).
    let without_stalled = masters.iter().filter(|&&m| m == 1.0 || m == 0.0).count() as u64;
    assert!(without_stalled >= stalled_misses, "each missed period is silence from that track");
    assert!(masters.iter().all(|&m| m == 0.0 || m == 1.0 || m == 101.0 || m == 100.0), "only whole periods mix");
    assert!(stats.periods.load(Ordering::Relaxed) >= 750, "the driver ran on through the stall");
    assert!(caught_up, "the late track caught up, period by period (still {gap} periods apart)");
}
