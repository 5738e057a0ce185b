//! Driving a track in real time from a test: blocks paced by the clock, the
//! way an audio callback would call it.

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use outboard_engine::realtime::track::Track;

/// Realtime tests in one test binary take turns: each paces a track against
/// the clock and starts worker processes, and on a 2-core machine two of them
/// at once would measure each other, not the code.
pub fn one_at_a_time() -> MutexGuard<'static, ()> {
    static TURN: Mutex<()> = Mutex::new(());
    TURN.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Gives the calling thread SCHED_FIFO priority 80 where permitted, as an
/// audio thread would have (script workers run at 10, below it).
pub fn make_realtime() {
    use thread_priority::*;
    let _ = set_thread_priority_and_policy(
        thread_native_id(),
        ThreadPriority::Crossplatform(80u8.try_into().expect("valid priority")),
        ThreadSchedulePolicy::Realtime(RealtimeThreadSchedulePolicy::Fifo),
    );
}

/// A test signal: distinct, non-zero values per frame and channel.
pub fn signal(frame: usize, channel: usize) -> f32 {
    ((frame * 7 + channel * 3) % 101) as f32 / 101.0 - 0.4
}

/// Runs `blocks` blocks of `track` paced at its sample rate, feeding
/// [`signal`]; calls `each` after every block with the block index. Returns
/// the output, planar.
pub fn run_paced(track: &mut Track, blocks: usize, mut each: impl FnMut(usize, &mut Track)) -> Vec<Vec<f32>> {
    let cfg = track.config().clone();
    let b = cfg.block;
    let period = Duration::from_secs_f64(b as f64 / cfg.sample_rate);
    let mut out = vec![vec![0.0f32; blocks * b]; cfg.channels];
    make_realtime();
    let start = Instant::now();
    for k in 0..blocks {
        let due = start + period * k as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let input: Vec<Vec<f32>> =
            (0..cfg.channels).map(|c| (k * b..(k + 1) * b).map(|f| signal(f, c)).collect()).collect();
        let inputs: Vec<&[f32]> = input.iter().map(Vec::as_slice).collect();
        let mut outputs: Vec<&mut [f32]> = out.iter_mut().map(|v| &mut v[k * b..(k + 1) * b]).collect();
        track.process(&inputs, &mut outputs, b);
        each(k, track);
    }
    out
}

/// For each output block at or after the latency: `Some(true)` if it is
/// exactly `gain` × the input delayed by the latency, `Some(false)` if it is
/// exactly the dry input delayed by the latency, `None` if it is neither.
pub fn classify_blocks(out: &[Vec<f32>], block: usize, latency: usize, gain: f32) -> Vec<Option<bool>> {
    let blocks = out[0].len() / block;
    (latency / block..blocks)
        .map(|k| {
            let frames = k * block..(k + 1) * block;
            let matches = |g: f32| {
                out.iter().enumerate().all(|(c, ch)| frames.clone().all(|i| ch[i] == g * signal(i - latency, c)))
            };
            if matches(gain) {
                Some(true)
            } else if matches(1.0) {
                Some(false)
            } else {
                None
            }
        })
        .collect()
}
