//! The state of one sandbox: what a `Store<Host>` holds for the length of one unit of work.
//! Everything here is built fresh per instance from the component's grants and dropped with the
//! store, so nothing of one request can leak into the next.

use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::capabilities::InstanceIdentity;
use crate::capabilities::config::ConfigGrant;
use crate::capabilities::guest_log::GuestOutputs;
use crate::capabilities::keyvalue::KeyValueGrant;
use crate::capabilities::outbound_http::OutboundHttp;
use crate::trace::TraceContext;
use crate::usage::UsageCell;

pub struct Host {
    pub(crate) table: ResourceTable,
    pub(crate) wasi: WasiCtx,
    pub(crate) http: WasiHttpCtx,
    pub(crate) outbound: OutboundHttp,
    pub(crate) key_value: KeyValueGrant,
    pub(crate) config: ConfigGrant,
    /// Who this sandbox works for, for the log lines of capabilities.
    pub(crate) identity: InstanceIdentity,
    /// The guest call's place in the request's trace: key-value calls are spans below it.
    pub(crate) trace: TraceContext,
    /// The guest's stdout and stderr, when they go to the log.
    pub(crate) outputs: Option<GuestOutputs>,
    pub(crate) limiter: InstanceLimiter,
}

impl Host {
    /// Readies a reused instance for its next request: log lines, denials and metrics name
    /// that request, and its usage starts from the instance's memory as it is now.
    pub(crate) fn next_request(
        &mut self,
        identity: InstanceIdentity,
        usage: Option<Arc<UsageCell>>,
    ) {
        if let Some(outputs) = &self.outputs {
            outputs.retag(&identity);
        }
        self.outbound.identity = identity.clone();
        self.identity = identity;
        self.limiter.next_request(usage);
    }

    /// The request is over and the instance is kept: its output and usage are final now.
    pub(crate) fn request_done(&mut self) {
        if let Some(outputs) = &self.outputs {
            outputs.flush();
        }
        self.limiter.report_peak();
    }
}

impl WasiView for Host {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for Host {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.outbound,
        }
    }
}

/// Caps the memory of the whole instance: the sum of all its linear memories, not each one
/// alone (a component made of several core modules could otherwise multiply its limit).
/// It also keeps the highest sum reached, the request's peak memory for usage accounting.
#[derive(Default)]
pub struct InstanceLimiter {
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
    pub fn new(limit: Option<u64>) -> Self {
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
    pub fn peak(&self) -> usize {
        self.peak
    }

    /// A new request starts on this (reused) instance: its peak starts from what the
    /// instance holds now.
    fn next_request(&mut self, usage: Option<Arc<UsageCell>>) {
        self.peak = self.used;
        self.refused = false;
        self.usage = usage;
    }

    /// Reports the request's peak, once.
    fn report_peak(&mut self) {
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
