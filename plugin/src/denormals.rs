//! Flush-to-zero for the span of one `process` call.
//!
//! Denormal floats (below ~1e-38) are hundreds of times slower on x86 and
//! inaudible. Hosts are not required to set the FPU's flush-to-zero and
//! denormals-are-zero modes for their plugins, so the plugin sets them on
//! entry to `process` and restores the host's modes on exit (the thread is
//! the host's, and so is its FPU state).

/// Restores the previous floating-point mode when dropped.
pub struct FlushToZero {
    #[cfg(target_arch = "x86_64")]
    saved: u32,
}

#[cfg(target_arch = "x86_64")]
const FTZ_DAZ: u32 = (1 << 15) | (1 << 6);

impl FlushToZero {
    /// Sets flush-to-zero and denormals-are-zero. Realtime-safe (two
    /// register instructions).
    #[inline]
    pub fn enable() -> FlushToZero {
        #[cfg(target_arch = "x86_64")]
        {
            let saved = read_mxcsr();
            write_mxcsr(saved | FTZ_DAZ);
            FlushToZero { saved }
        }
        #[cfg(not(target_arch = "x86_64"))]
        FlushToZero {}
    }
}

impl Drop for FlushToZero {
    #[inline]
    fn drop(&mut self) {
        #[cfg(target_arch = "x86_64")]
        write_mxcsr(self.saved);
    }
}

#[cfg(target_arch = "x86_64")]
fn read_mxcsr() -> u32 {
    let mut value = 0u32;
    // SAFETY: stmxcsr stores the 32-bit MXCSR register into `value`, a valid,
    // writable, 4-byte location; it has no other effect.
    unsafe { std::arch::asm!("stmxcsr [{}]", in(reg) &mut value, options(nostack, preserves_flags)) };
    value
}

#[cfg(target_arch = "x86_64")]
fn write_mxcsr(value: u32) {
    // SAFETY: ldmxcsr loads MXCSR from `value`; the only bits we ever change
    // from a value the CPU gave us are FTZ and DAZ, which are valid on every
    // x86_64 CPU, so it cannot fault.
    unsafe { std::arch::asm!("ldmxcsr [{}]", in(reg) &value, options(nostack, preserves_flags, readonly)) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flushes_denormals_inside_and_restores_outside() {
        let tiny = std::hint::black_box(f32::MIN_POSITIVE / 4.0);
        assert!(tiny.is_subnormal());
        let before = std::hint::black_box(tiny) * std::hint::black_box(1.0f32);
        assert!(before.is_subnormal());
        {
            let _ftz = FlushToZero::enable();
            let inside = std::hint::black_box(tiny) * std::hint::black_box(1.0f32);
            assert_eq!(inside, 0.0);
        }
        let after = std::hint::black_box(tiny) * std::hint::black_box(1.0f32);
        assert!(after.is_subnormal());
    }
}
