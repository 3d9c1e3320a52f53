//! The process heap.

/// Gives freed heap memory back to the system (after evictions shrank the
/// tables): glibc keeps freed small blocks otherwise.
pub fn trim_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}
