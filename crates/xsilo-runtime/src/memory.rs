//! Giving freed value memory back to the operating system (promise L1,
//! RFC 0002 "Object lifetime", "Resident memory").
//!
//! Freeing an object drops its bytes, but glibc's malloc keeps what was
//! freed inside its heaps: it raises its mmap threshold after the first
//! large free, so model-sized buffers come from arenas whose freed middle
//! stays resident. Resident memory then drifts up to a high-water mark that
//! depends on timing (measured: the aggregator of a 4 MiB FedAvg swung
//! between 28 and 55 MiB from round to round). So after enough value bytes
//! were freed, and at most every [`TRIM_INTERVAL`], the party asks malloc to
//! return free pages (`malloc_trim`), on a blocking thread, never on the
//! control thread. Pages returned are faulted in again when reused; at one
//! trim per interval that costs a few milliseconds a second, against 20 ms
//! a round for handing every large buffer to mmap.
//!
//! Only glibc has `malloc_trim`; elsewhere (musl, macOS, a custom global
//! allocator's own heap) [`return_free_memory`] does nothing.

use std::time::{Duration, Instant};

/// At most one trim per this interval.
pub(crate) const TRIM_INTERVAL: Duration = Duration::from_millis(50);

/// A trim is worth it once this many value bytes were freed since the last.
pub(crate) const TRIM_AFTER_BYTES: u64 = 8 << 20;

/// When to trim: plain state, time passed in (unit-tested without a clock).
#[derive(Debug)]
pub(crate) struct TrimPolicy {
    last: Option<Instant>,
    freed_at_last: u64,
}

impl TrimPolicy {
    pub(crate) fn new() -> Self {
        Self {
            last: None,
            freed_at_last: 0,
        }
    }

    /// `freed_total` value bytes were freed since the start; true when a
    /// trim should run now (and it is counted as run).
    pub(crate) fn due(&mut self, freed_total: u64, now: Instant) -> bool {
        if freed_total.saturating_sub(self.freed_at_last) < TRIM_AFTER_BYTES {
            return false;
        }
        if self
            .last
            .is_some_and(|t| now.saturating_duration_since(t) < TRIM_INTERVAL)
        {
            return false;
        }
        self.last = Some(now);
        self.freed_at_last = freed_total;
        true
    }
}

/// Returns the free pages of every malloc arena to the operating system.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub(crate) fn return_free_memory() {
    // SAFETY: malloc_trim has no preconditions: it takes each arena's lock
    // and releases whole free pages; it is safe to call from any thread at
    // any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Returns the free pages of every malloc arena to the operating system.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub(crate) fn return_free_memory() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_after_enough_bytes_and_at_most_once_per_interval() {
        let t0 = Instant::now();
        let mut p = TrimPolicy::new();
        assert!(!p.due(TRIM_AFTER_BYTES - 1, t0), "too few bytes freed");
        assert!(p.due(TRIM_AFTER_BYTES, t0), "first trim");
        let twice = 2 * TRIM_AFTER_BYTES;
        assert!(!p.due(twice, t0 + TRIM_INTERVAL / 2), "within the interval");
        assert!(p.due(twice, t0 + TRIM_INTERVAL), "interval passed");
        assert!(
            !p.due(twice + 1, t0 + 3 * TRIM_INTERVAL),
            "bytes since the last trim, not since the start"
        );
    }
}
