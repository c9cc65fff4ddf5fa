//! What one sandbox may use: its [`Limits`] (deadline, memory, fuel), and the
//! [`InstanceLimiter`] that enforces its memory cap and measures its peak.

use std::sync::Arc;
use std::time::Duration;

use crate::usage::UsageCell;

/// The limits of one unit of work, whatever started it (a request, a command).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Limits {
    /// How long it may run, guest code and host calls alike; `None`: as long as it likes.
    pub timeout: Option<Duration>,
    /// The most its instance's linear memories may add up to, in bytes.
    pub memory: Option<u64>,
    /// Its fuel budget, when the runtime meters fuel.
    pub fuel: Option<u64>,
}

/// The state of a store that skiff makes: it has an [`InstanceLimiter`] for its memory.
pub(crate) trait Sandboxed: Send + 'static {
    fn limiter(&mut self) -> &mut InstanceLimiter;
}

/// Caps the memory of the whole instance: the sum of all its linear memories, not each one
/// alone (a component made of several core modules could otherwise multiply its limit).
/// It also keeps the highest sum reached, the request's peak memory for usage accounting.
#[derive(Default)]
pub(crate) struct InstanceLimiter {
    limit: Option<usize>,
    used: usize,
    peak: usize,
    /// Set when a growth was refused, so a trap that follows can be reported as what it most
    /// likely is: running out of memory.
    pub(crate) refused: bool,
    /// Where the peak goes when the instance is dropped, if the request is metered.
    usage: Option<Arc<UsageCell>>,
}

impl InstanceLimiter {
    pub(crate) fn new(limit: Option<u64>) -> Self {
        InstanceLimiter {
            limit: limit.map(|l| usize::try_from(l).unwrap_or(usize::MAX)),
            used: 0,
            peak: 0,
            refused: false,
            usage: None,
        }
    }

    /// Reports the peak to `usage` when the store goes: however the request ends (a trap, a
    /// deadline, a guest task aborted), the store is dropped.
    pub(crate) fn report_peak_to(&mut self, usage: Option<Arc<UsageCell>>) {
        self.usage = usage;
    }

    /// The largest total of the instance's linear memories so far, in bytes.
    #[cfg(test)]
    fn peak(&self) -> usize {
        self.peak
    }

    /// A new request starts on this (reused) instance: its peak starts from what the
    /// instance holds now.
    pub(crate) fn next_request(&mut self, usage: Option<Arc<UsageCell>>) {
        self.peak = self.used;
        self.refused = false;
        self.usage = usage;
    }

    /// Reports the request's peak, once.
    pub(crate) fn report_peak(&mut self) {
        if let Some(usage) = self.usage.take() {
            usage.memory_peak(self.peak as u64);
        }
    }
}

impl Drop for InstanceLimiter {
    fn drop(&mut self) {
        self.report_peak();
    }
}

impl std::fmt::Debug for InstanceLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstanceLimiter")
            .field("limit", &self.limit)
            .field("used", &self.used)
            .field("peak", &self.peak)
            .field("refused", &self.refused)
            .finish_non_exhaustive()
    }
}

impl wasmtime::ResourceLimiter for InstanceLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Each memory's calls start from 0 at its creation, so the running sum of the deltas
        // is the total across all memories of the instance.
        let total = self.used.saturating_sub(current).saturating_add(desired);
        if self.limit.is_some_and(|limit| total > limit) {
            self.refused = true;
            return Ok(false);
        }
        self.used = total;
        self.peak = self.peak.max(total);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        _desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Tables are bounded by the pooling allocator's per-table element limit.
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::ResourceLimiter;

    #[test]
    fn limit_applies_to_the_sum_of_memories() {
        let mut limiter = InstanceLimiter::new(Some(100));
        assert!(limiter.memory_growing(0, 60, None).unwrap());
        // A second memory of 60 would bring the instance to 120.
        assert!(!limiter.memory_growing(0, 60, None).unwrap());
        assert!(limiter.refused);
        assert!(limiter.memory_growing(0, 40, None).unwrap());
        // Growing the first memory by any amount is now over the limit.
        assert!(!limiter.memory_growing(60, 61, None).unwrap());
        assert_eq!(limiter.peak(), 100);
    }

    #[test]
    fn no_limit_means_no_refusal() {
        let mut limiter = InstanceLimiter::new(None);
        assert!(limiter.memory_growing(0, usize::MAX / 2, None).unwrap());
        assert!(!limiter.refused);
    }
}
