//! Clocks: the kernel stamps with CLOCK_MONOTONIC; records carry wall time.

use std::time::{SystemTime, UNIX_EPOCH};

/// CLOCK_MONOTONIC in nanoseconds (what bpf_ktime_get_ns returns).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid out-pointer; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

/// Unix time in nanoseconds.
pub fn unix_ns() -> i128 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    }
}

/// A moment on a source's clock: monotonic for the kernel's stamps and the
/// correlator, Unix time for the records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Monotonic nanoseconds (the kernel's and the correlator's clock).
    pub mono_ns: u64,
    /// Unix nanoseconds (the records' timestamps).
    pub unix_ns: i128,
}

/// This host's clocks now.
pub fn now() -> Now {
    Now {
        mono_ns: monotonic_ns(),
        unix_ns: unix_ns(),
    }
}
