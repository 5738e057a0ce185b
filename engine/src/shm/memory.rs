//! Memory the realtime side will write, made present before it runs.
//!
//! A buffer from a zeroed allocation (`vec![0.0; n]`) may be pages the
//! kernel has not given yet: the first write to each is a page fault, taken
//! by whichever thread writes first. Buffers a realtime thread uses are
//! touched here, on the thread that allocates them (never a realtime one),
//! so that thread is the one that faults.

/// Writes each page of `buf` once (its current values, unchanged).
pub fn touch_pages<T: Copy>(buf: &mut [T]) {
    let per_page = (4096 / std::mem::size_of::<T>().max(1)).max(1);
    for i in (0..buf.len()).step_by(per_page) {
        let value = buf[i];
        // SAFETY: `i` is in bounds; a volatile write of the same value, so
        // the compiler keeps the write that maps the page.
        unsafe { std::ptr::write_volatile(&mut buf[i], value) };
    }
}
