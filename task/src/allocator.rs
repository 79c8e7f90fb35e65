//! The allocator every binary of the project uses, and how it is set up.
//!
//! Training allocates and frees a tensor per operation. The system allocator handed large buffers
//! back to the kernel and took them again on the next step, and so does mimalloc with its default
//! purge delay (1 s in the bundled mimalloc 3): each step then faulted in and zeroed fresh pages
//! again (100,000 page faults and 7-10% of the samples in twelve tiny-lm steps, BENCHMARKS.md).
//! Holding freed memory for longer than a window's steps keeps those pages; an idle process still
//! returns them.

pub use mimalloc::MiMalloc;

/// How long freed memory stays with the process before it is returned to the kernel.
pub const PURGE_DELAY_MS: i64 = 10_000;

/// `mi_option_purge_delay` in mimalloc 3's `mi_option_t` (mimalloc.h), which the Rust bindings do
/// not name.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Sets mimalloc's purge delay to `PURGE_DELAY_MS`. Call it first thing in `main` of a binary whose
/// global allocator is `MiMalloc`; it only changes when freed memory is returned, never what a
/// computation yields. `MIMALLOC_PURGE_DELAY` in the environment still wins.
pub fn hold_freed_memory() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    // SAFETY: `mi_option_set` only stores the value in mimalloc's option table; any thread may
    // call it at any time.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS as _) }
}

/// The purge delay mimalloc uses now, in milliseconds.
pub fn purge_delay_ms() -> i64 {
    // SAFETY: reads mimalloc's option table.
    unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) as i64 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_option_set_is_the_purge_delay() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return;
        }
        // Before it is set the option holds mimalloc 3's documented default purge delay: 1,000 ms
        // (what `MIMALLOC_VERBOSE=1` prints as `purge_delay`), which no neighbouring option has.
        assert_eq!(purge_delay_ms(), 1_000);
        hold_freed_memory();
        assert_eq!(purge_delay_ms(), PURGE_DELAY_MS);
    }
}
