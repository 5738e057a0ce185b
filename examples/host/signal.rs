//! The test signal every instance is fed: deterministic, so a test can
//! regenerate it (or read it back from `--write-input`) and compare.
//!
//! Stereo, two sines per channel, starting at phase zero on frame 0:
//!
//! | channel | tones                                    | peak   |
//! | ------- | ---------------------------------------- | ------ |
//! | left    | 0.3 · sin(2π·220 t) + 0.2 · sin(2π·1250 t) | ≤ 0.5 |
//! | right   | 0.3 · sin(2π·330 t) + 0.2 · sin(2π·1875 t) | ≤ 0.5 |
//!
//! Frequencies are whole hertz and the phase of tone f at frame n is taken as
//! (f·n mod rate) / rate of a turn, computed in integers: frame n has the same
//! value whatever the block size or run length, and the signal is exactly
//! periodic (every 0.1 s on the left, 1/15 s on the right, at any whole rate
//! divisible by 10). Channels past the second repeat the first two (channel
//! c plays tone set c mod 2).

/// (frequency in Hz, amplitude) of each channel's two tones.
pub const TONES: [[(u64, f64); 2]; 2] = [[(220, 0.3), (1250, 0.2)], [(330, 0.3), (1875, 0.2)]];

/// No sample's magnitude exceeds this.
pub const MAX_PEAK: f32 = 0.5;

/// Sample `frame` of `channel` at `rate` Hz.
pub fn sample(channel: usize, frame: u64, rate: u32) -> f32 {
    let rate = u64::from(rate.max(1));
    let mut sum = 0.0f64;
    for &(freq, amplitude) in &TONES[channel % 2] {
        // f·n mod rate without overflow for any realistic n.
        let k = (freq % rate) * (frame % rate) % rate;
        sum += amplitude * (std::f64::consts::TAU * k as f64 / rate as f64).sin();
    }
    sum as f32
}

/// Fills `out` with frames `start..start + out.len()` of `channel`.
/// Realtime-safe (no allocation).
pub fn fill(channel: usize, start: u64, rate: u32, out: &mut [f32]) {
    for (i, s) in out.iter_mut().enumerate() {
        *s = sample(channel, start + i as u64, rate);
    }
}

/// The first `frames` frames of both channels.
pub fn generate(frames: usize, rate: u32) -> [Vec<f32>; 2] {
    std::array::from_fn(|c| {
        let mut v = vec![0.0; frames];
        fill(c, 0, rate, &mut v);
        v
    })
}

/// The largest magnitude over the first `frames` frames of both channels.
pub fn peak(frames: usize, rate: u32) -> f32 {
    generate(frames, rate).iter().flatten().fold(0.0f32, |p, s| p.max(s.abs()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_frames_whatever_the_block_size() {
        let whole = generate(4800, 48_000);
        for block in [1usize, 7, 64, 1000] {
            for (c, channel) in whole.iter().enumerate() {
                let mut at = 0;
                let mut buf = vec![0.0; block];
                while at < channel.len() {
                    let n = block.min(channel.len() - at);
                    fill(c, at as u64, 48_000, &mut buf[..n]);
                    assert_eq!(&buf[..n], &channel[at..at + n], "block {block}, channel {c}, frame {at}");
                    at += n;
                }
            }
        }
    }

    #[test]
    fn known_values_and_period() {
        assert_eq!(sample(0, 0, 48_000), 0.0);
        assert_eq!(sample(1, 0, 48_000), 0.0);
        // 220 Hz at 48 kHz: a quarter turn of the first tone at n = 48000 / 880.
        let n = 48_000 / 880 * 11; // whole periods of neither tone: just a spot check
        let t = n as f64 / 48_000.0;
        let expected =
            0.3 * (std::f64::consts::TAU * 220.0 * t).sin() + 0.2 * (std::f64::consts::TAU * 1250.0 * t).sin();
        assert!((f64::from(sample(0, n, 48_000)) - expected).abs() < 1e-6);
        // Periodic every 0.1 s on the left and 1/15 s on the right.
        for n in [1u64, 17, 999, 4321] {
            assert_eq!(sample(0, n, 48_000), sample(0, n + 4800, 48_000));
            assert_eq!(sample(1, n, 48_000), sample(1, n + 3200, 48_000));
        }
        // Far into a run, still exact.
        assert_eq!(sample(0, 17 + 4800 * 2_000_000_000, 48_000), sample(0, 17, 48_000));
        assert_eq!(sample(2, 123, 48_000), sample(0, 123, 48_000), "channel 2 repeats channel 0");
    }

    #[test]
    fn peak_is_about_half() {
        let p = peak(48_000, 48_000);
        assert!(p <= MAX_PEAK && p > 0.4, "{p}");
        let [left, right] = generate(48_000, 44_100);
        assert_ne!(left, right);
    }
}
