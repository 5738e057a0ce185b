//! Driving a track in real time from a test: blocks paced by the clock, the
//! way an audio callback would call it.

use std::time::{Duration, Instant};

use outboard_engine::track::Track;

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
    let start = Instant::now();
    for k in 0..blocks {
        let due = start + period * k as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let input: Vec<Vec<f32>> = (0..cfg.channels).map(|c| (k * b..(k + 1) * b).map(|f| signal(f, c)).collect()).collect();
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
