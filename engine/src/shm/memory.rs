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
    // A page apart from the first value, and the last value: the buffer
    // need not start on a page, so its last page may hold less than a page
    // of it (a large allocation starts 16 bytes into one).
    for i in (0..buf.len()).step_by(per_page).chain(buf.len().checked_sub(1)) {
        let value = buf[i];
        // SAFETY: `i` is in bounds; a volatile write of the same value, so
        // the compiler keeps the write that maps the page.
        unsafe { std::ptr::write_volatile(&mut buf[i], value) };
    }
}

/// An empty `Vec` with room for `capacity` values, every page of that room
/// already written: for a realtime thread that pushes into it (up to
/// `capacity`, so it never reallocates).
pub fn present_vec<T>(capacity: usize) -> Vec<T> {
    let mut values = Vec::with_capacity(capacity);
    let room = values.spare_capacity_mut();
    let bytes = std::mem::size_of_val(room);
    let base = room.as_mut_ptr().cast::<u8>();
    // A page apart from the first byte, and the last byte (as in `touch_pages`).
    for offset in (0..bytes).step_by(4096).chain(bytes.checked_sub(1)) {
        // SAFETY: `offset` < the room's size in bytes, inside the Vec's own
        // allocation; the room is uninitialised memory the Vec owns and
        // does not read (its length stays 0), so any byte may be written.
        // Volatile, so the write that maps the page is kept.
        unsafe { base.add(offset).write_volatile(0) };
    }
    values
}

/// `vec![value; len]` with every page written (a zeroed allocation may
/// come from pages the kernel has not given yet).
pub fn present_filled<T: Copy>(value: T, len: usize) -> Vec<T> {
    let mut values = vec![value; len];
    touch_pages(&mut values);
    values
}
