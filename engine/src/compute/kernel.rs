//! The stand-in DSP load: the seed's partial sum
//! Σ_{x=start}^{end-1} (+1/x for odd x, −1/x for even x), which tends to ln 2.
//!
//! One real IEEE division per term, as in the seed's code: no pairing of terms,
//! no digamma, no approximate reciprocal. The fast path does the same divisions
//! four at a time in 256-bit AVX vectors, with four independent accumulators so
//! the divider, not the adder's latency, is the bound.
//!
//! Realtime-safe: no allocation, no lock, no syscall, bounded by `end - start`.

/// Largest `x` the vector path represents exactly as an f64 (2^53).
const EXACT_LIMIT: u64 = 1 << 53;

/// The partial sum over `start..end`, the fastest way this CPU allows.
/// `x = 0` has no term and is skipped.
pub fn partial_sum(start: u64, end: u64) -> f64 {
    let start = start.max(1);
    if start >= end {
        return 0.0;
    }
    #[cfg(target_arch = "x86_64")]
    {
        if end <= EXACT_LIMIT && std::arch::is_x86_feature_detected!("avx") {
            // SAFETY: the CPU supports AVX (checked just above).
            return unsafe { partial_sum_avx(start, end) };
        }
    }
    partial_sum_scalar(start, end)
}

/// The seed's loop, term by term: the reference and the fallback.
pub fn partial_sum_scalar(start: u64, end: u64) -> f64 {
    let mut sum = 0.0;
    for x in start.max(1)..end {
        if x % 2 == 0 {
            sum -= 1.0 / x as f64;
        } else {
            sum += 1.0 / x as f64;
        }
    }
    sum
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
fn partial_sum_avx(start: u64, end: u64) -> f64 {
    use std::arch::x86_64::*;
    const STEP: u64 = 16; // 4 vectors of 4 lanes
    let blocks = (end - start) / STEP;
    let s = start as f64;
    // Lane k holds x = start + k (+ 4j for vector j): odd x adds, even x subtracts.
    // The pattern repeats every 2 terms and each vector starts 4 terms later,
    // so one numerator vector serves all four.
    let sign = if start % 2 == 1 { 1.0 } else { -1.0 };
    let num = _mm256_setr_pd(sign, -sign, sign, -sign);
    let four = _mm256_set1_pd(4.0);
    let step = _mm256_set1_pd(STEP as f64);
    let mut x0 = _mm256_setr_pd(s, s + 1.0, s + 2.0, s + 3.0);
    let mut x1 = _mm256_add_pd(x0, four);
    let mut x2 = _mm256_add_pd(x1, four);
    let mut x3 = _mm256_add_pd(x2, four);
    let mut a0 = _mm256_setzero_pd();
    let mut a1 = _mm256_setzero_pd();
    let mut a2 = _mm256_setzero_pd();
    let mut a3 = _mm256_setzero_pd();
    for _ in 0..blocks {
        a0 = _mm256_add_pd(a0, _mm256_div_pd(num, x0));
        a1 = _mm256_add_pd(a1, _mm256_div_pd(num, x1));
        a2 = _mm256_add_pd(a2, _mm256_div_pd(num, x2));
        a3 = _mm256_add_pd(a3, _mm256_div_pd(num, x3));
        x0 = _mm256_add_pd(x0, step);
        x1 = _mm256_add_pd(x1, step);
        x2 = _mm256_add_pd(x2, step);
        x3 = _mm256_add_pd(x3, step);
    }
    let total = _mm256_add_pd(_mm256_add_pd(a0, a1), _mm256_add_pd(a2, a3));
    let mut lanes = [0.0f64; 4];
    // SAFETY: `lanes` is 4 f64s, exactly what an unaligned 256-bit store writes.
    unsafe { _mm256_storeu_pd(lanes.as_mut_ptr(), total) };
    let vector_sum = (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]);
    vector_sum + partial_sum_scalar(start + blocks * STEP, end)
}

/// The seed's experiment: the sum of 1..`end` cut into `parts` ranges, as
/// `(start, end)` pairs, exactly as `dynamic_ncpus.py` cuts it.
pub fn seed_parts(start: u64, end: u64, parts: u64) -> Vec<(u64, u64)> {
    let parts = parts.max(1);
    let step = (end - start) / parts + 1;
    (0..parts).map(|i| (start + i * step, (start + (i + 1) * step).min(end))).filter(|(s, e)| s < e).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Σ for x in 1..20_000_000, computed to high precision (the seed's S),
    /// written with all the digits the issue gives.
    #[allow(clippy::excessive_precision)]
    const SEED_SUM: f64 = 0.693_147_205_559_945_93;

    #[test]
    fn matches_the_exact_seed_sum_whole_and_in_parts() {
        let whole = partial_sum(1, 20_000_000);
        assert!((whole - SEED_SUM).abs() < 1e-12, "{whole} vs {SEED_SUM}");
        let parts: f64 = seed_parts(1, 20_000_000, 64).iter().map(|&(s, e)| partial_sum(s, e)).sum();
        assert!((parts - SEED_SUM).abs() < 1e-12, "{parts} vs {SEED_SUM}");
        let reversed: f64 = seed_parts(1, 20_000_000, 7).iter().rev().map(|&(s, e)| partial_sum(s, e)).sum();
        assert!((reversed - SEED_SUM).abs() < 1e-12);
    }

    #[test]
    fn vector_path_agrees_with_the_scalar_loop_at_every_alignment() {
        for start in 1..40u64 {
            for len in [0u64, 1, 2, 3, 15, 16, 17, 33, 1000] {
                let end = start + len;
                let v = partial_sum(start, end);
                let s = partial_sum_scalar(start, end);
                assert!((v - s).abs() <= 1e-14, "start {start} len {len}: {v} vs {s}");
            }
        }
    }

    #[test]
    fn edge_ranges() {
        assert_eq!(partial_sum(5, 5), 0.0);
        assert_eq!(partial_sum(9, 3), 0.0);
        assert_eq!(partial_sum(0, 3), 0.5, "x = 0 is skipped: 1/1 - 1/2");
        assert_eq!(partial_sum(1, 2), 1.0);
    }

    #[test]
    fn seed_parts_cover_the_range_once() {
        let parts = seed_parts(1, 20_000_000, 64);
        assert_eq!(parts.len(), 64);
        assert_eq!(parts[0].0, 1);
        assert_eq!(parts.last().unwrap().1, 20_000_000);
        assert!(parts.windows(2).all(|w| w[0].1 == w[1].0));
    }
}
