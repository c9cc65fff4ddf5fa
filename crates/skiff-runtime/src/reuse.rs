//! Admission and instance reuse: the permits that bound how many instances run (host-wide,
//! per tenant, per component), and the instances a component keeps between requests.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime::Store;
use wasmtime_wasi_http::p2::bindings::Proxy;
use wasmtime_wasi_http::p3::bindings::Service;

use crate::error::{InvokeError, OverloadScope};
use crate::host::Host;

/// The host's own permits: one per instance allowed to run at once, across every app, and the
/// reuse pools that may give one back.
pub(crate) struct HostPermits {
    permits: Arc<Semaphore>,
    max: u32,
    /// Every component's pool of instances kept for reuse, which hold host permits while idle.
    idle: IdlePools,
}

impl HostPermits {
    pub(crate) fn new(max: u32) -> Self {
        HostPermits {
            permits: Arc::new(Semaphore::new(max as usize)),
            max,
            idle: IdlePools::default(),
        }
    }

    /// Instances running (or kept idle) now.
    pub(crate) fn in_use(&self) -> u32 {
        let free = self.permits.available_permits();
        self.max
            .saturating_sub(u32::try_from(free).unwrap_or(u32::MAX))
    }

    pub(crate) fn register(&self, pool: &Arc<InstanceReuse>) {
        self.idle.register(pool);
    }

    fn acquire(&self) -> Result<OwnedSemaphorePermit, InvokeError> {
        self.idle
            .acquire(&self.permits)
            .ok_or(InvokeError::Overloaded(OverloadScope::Host(self.max)))
    }
}

/// What admitted one instance: the host's permit and, where set, the component's and the
/// shared (tenant) one. An instance kept for reuse keeps them all, so that idle instances count
/// against every limit that running ones do. Held for their drop, which gives them back.
pub(crate) struct Permits {
    _component: Option<OwnedSemaphorePermit>,
    _shared: Option<OwnedSemaphorePermit>,
    host: OwnedSemaphorePermit,
}

impl Permits {
    /// Takes the permits a fresh instance needs: the component's (with its limit), the shared
    /// (tenant) one, the host's, in that order, or says which limit is reached.
    pub(crate) fn take(
        component: Option<&(Arc<Semaphore>, u32)>,
        shared: Option<&SharedPermits>,
        host: &HostPermits,
    ) -> Result<Permits, InvokeError> {
        let component = match component {
            Some((permits, limit)) => Some(
                permits
                    .clone()
                    .try_acquire_owned()
                    .map_err(|_| InvokeError::Overloaded(OverloadScope::Component(*limit)))?,
            ),
            None => None,
        };
        let shared = match shared {
            Some(shared) => Some(shared.acquire()?),
            None => None,
        };
        Ok(Permits {
            _component: component,
            _shared: shared,
            host: host.acquire()?,
        })
    }
}

/// A store with the permits that admitted it. The fields drop in this order however the
/// instance ends (served, failed, dropped idle, or its task aborted): the store, and with it
/// the pool slot, goes back before the permit that counts it, so a request admitted by a freed
/// permit always finds a free slot.
pub(crate) struct Instance {
    pub(crate) store: Store<Host>,
    pub(crate) permits: Permits,
}

/// Where a request's instance comes from: one kept from an earlier request (admitted then), or
/// a fresh one under permits just taken.
pub(crate) enum Slot {
    Warm(WarmInstance),
    Fresh(Permits),
}

pub(crate) struct WarmInstance {
    pub(crate) instance: Instance,
    pub(crate) exports: Exports,
    /// Requests it has served.
    pub(crate) served: u32,
    /// When it last finished a request.
    idle_since: Instant,
}

/// The handler a kept instance serves requests with: a component's pool holds instances of
/// its own kind only.
pub(crate) enum Exports {
    /// `wasi:http/incoming-handler@0.2`.
    Wasip2(Proxy),
    /// `wasi:http/handler@0.3`.
    Wasi03(Service),
}

/// Instances kept for the next requests of a component whose `requests_per_instance` is more
/// than one.
///
/// One tenant's idle instances must not take what belongs to all. So a kept instance holds
/// every permit that admitted it, as a running one does: the host's (a pool slot), the
/// component's (`max_concurrency`) and its tenant's (`max_in_flight`). A tenant's running and
/// idle instances together therefore never exceed its own quota, whatever the number of its
/// components; and so that its idle instances never turn away the tenant's own requests, a
/// request that finds the tenant's permits all taken reclaims one from an idle instance of any
/// of its components ([`SharedPermits`]). Host-wide the same: a request that finds the host's
/// instances all taken reclaims an idle one of any component. Instances are kept only while a
/// quarter of the host's permits are free (so that reclaiming stays the exception, off the fast
/// path), at most [`InstanceReuse::MAX_IDLE`] per component, and for at most the runtime's
/// `reuse_idle_timeout`, after which they are dropped with their memory.
pub(crate) struct InstanceReuse {
    requests_per_instance: u32,
    /// Free host permits below which a finished instance is dropped rather than kept.
    keep_while_free: usize,
    idle_timeout: Duration,
    idle: Mutex<Idle>,
}

struct Idle {
    /// Oldest first: instances are kept at the end and taken from the end.
    instances: Vec<WarmInstance>,
    /// Whether a task is on its way to drop the instances that have waited too long.
    sweeping: bool,
}

impl InstanceReuse {
    /// Enough for the requests a host takes up at once under load: a single-threaded host
    /// reads every ready connection's request before it runs their guests, so at 32
    /// connections 32 instances are in use together (with 16 kept, half of those requests
    /// made a fresh instance: 58k req/s against 64k with 64). Few enough that idle instances
    /// do not crowd the pool; `keep_while_free` bounds them host-wide too.
    const MAX_IDLE: usize = 64;

    pub(crate) fn new(
        requests_per_instance: Option<u32>,
        max_instances: u32,
        idle_timeout: Duration,
    ) -> Option<Arc<InstanceReuse>> {
        match requests_per_instance {
            Some(n) if n > 1 => Some(Arc::new(InstanceReuse {
                requests_per_instance: n,
                keep_while_free: (max_instances as usize).div_ceil(4),
                idle_timeout,
                idle: Mutex::new(Idle {
                    instances: Vec::new(),
                    sweeping: false,
                }),
            })),
            _ => None,
        }
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Idle> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The instance used last, whose memory is likeliest still in the CPU's caches.
    pub(crate) fn take(&self) -> Option<WarmInstance> {
        self.idle().instances.pop()
    }

    /// The instance that has waited longest, to free its permits for another request.
    fn take_oldest(&self) -> Option<WarmInstance> {
        let mut idle = self.idle();
        (!idle.instances.is_empty()).then(|| idle.instances.remove(0))
    }

    pub(crate) fn keep(self: &Arc<Self>, instance: Instance, exports: Exports, served: u32) {
        let host_free = instance.permits.host.semaphore().available_permits();
        if served >= self.requests_per_instance || host_free < self.keep_while_free {
            return;
        }
        let mut idle = self.idle();
        if idle.instances.len() >= Self::MAX_IDLE {
            return;
        }
        idle.instances.push(WarmInstance {
            instance,
            exports,
            served,
            idle_since: Instant::now(),
        });
        if !idle.sweeping {
            idle.sweeping = true;
            tokio::spawn(Self::sweep(Arc::downgrade(self), self.idle_timeout));
        }
    }

    /// Drops the instances that have waited longer than `idle_timeout`, until none is left
    /// waiting. It holds the pool only weakly: a component that is unloaded drops its idle
    /// instances at once, and this task ends at its next wake-up.
    async fn sweep(pool: Weak<InstanceReuse>, idle_timeout: Duration) {
        loop {
            let next = {
                let Some(pool) = pool.upgrade() else { return };
                let mut idle = pool.idle();
                let now = Instant::now();
                let expired = idle
                    .instances
                    .partition_point(|warm| warm.idle_since + idle_timeout <= now);
                // Dropped outside the lock: tearing a store down is not free, and the lock is
                // on the path of every request of the component.
                let expired: Vec<WarmInstance> = idle.instances.drain(..expired).collect();
                let next = match idle.instances.first() {
                    Some(oldest) => Some(oldest.idle_since + idle_timeout),
                    None => {
                        idle.sweeping = false;
                        None
                    }
                };
                drop(idle);
                drop(expired);
                next
            };
            match next {
                Some(next) => tokio::time::sleep_until(next.into()).await,
                None => return,
            }
        }
    }
}

/// The reuse pools of the components that share some permits (the host's, a tenant's), to
/// take an idle instance from when those permits run out: an instance waiting for a request
/// that may never come is worth less than a request waiting now. Locked at load, and when the
/// permits run out; never on the way of a request that gets its permit.
#[derive(Default)]
struct IdlePools(Mutex<Vec<Weak<InstanceReuse>>>);

impl IdlePools {
    fn register(&self, pool: &Arc<InstanceReuse>) {
        let mut pools = self.0.lock().unwrap_or_else(|e| e.into_inner());
        pools.retain(|pool| pool.strong_count() > 0);
        pools.push(Arc::downgrade(pool));
    }

    /// A permit of `permits`, if one is free or an idle instance gives its up.
    fn acquire(&self, permits: &Arc<Semaphore>) -> Option<OwnedSemaphorePermit> {
        if let Ok(permit) = permits.clone().try_acquire_owned() {
            return Some(permit);
        }
        let reclaimed = {
            let pools = self.0.lock().unwrap_or_else(|e| e.into_inner());
            pools
                .iter()
                .filter_map(Weak::upgrade)
                .find_map(|pool| pool.take_oldest())
        };
        // Dropped outside the lock; the store before the permits, which then are free.
        drop(reclaimed?);
        permits.clone().try_acquire_owned().ok()
    }
}

/// Permits shared by the components of several apps: a tenant's `max_in_flight` quota. Idle
/// instances kept for reuse hold one each (see `InstanceReuse`), so that a tenant's idle
/// instances count against its own quota, not against what the host's other tenants share;
/// when a request finds the permits all taken, an idle instance of the tenant gives its up.
pub struct SharedPermits {
    permits: Arc<Semaphore>,
    /// The ceiling; it may change while requests run (see [`SharedPermits::resize`]).
    limit: AtomicU32,
    /// The reuse pools of the components under these permits.
    idle: IdlePools,
}

impl std::fmt::Debug for SharedPermits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedPermits")
            .field("limit", &self.limit())
            .field("available", &self.available())
            .finish()
    }
}

impl SharedPermits {
    pub fn new(limit: u32) -> Arc<SharedPermits> {
        Arc::new(SharedPermits {
            permits: Arc::new(Semaphore::new(limit as usize)),
            limit: AtomicU32::new(limit),
            idle: IdlePools::default(),
        })
    }

    pub fn limit(&self) -> u32 {
        self.limit.load(Ordering::Relaxed)
    }

    /// Moves the ceiling to `to`. A higher one applies at once. Permits held by requests in
    /// flight (or idle instances) cannot be taken back, so a lower one takes what is free now
    /// and the rest as those requests end. Call it within a tokio runtime.
    pub fn resize(&self, to: u32) {
        let from = self.limit.swap(to, Ordering::Relaxed);
        if to >= from {
            self.permits.add_permits((to - from) as usize);
            return;
        }
        let excess = from - to;
        let forgotten = self.permits.forget_permits(excess as usize) as u32;
        if forgotten < excess {
            let permits = self.permits.clone();
            tokio::spawn(async move {
                if let Ok(held) = permits.acquire_many_owned(excess - forgotten).await {
                    held.forget();
                }
            });
        }
    }

    /// Permits not held by a running or idle instance.
    pub fn available(&self) -> usize {
        self.permits.available_permits()
    }

    pub(crate) fn register(&self, pool: &Arc<InstanceReuse>) {
        self.idle.register(pool);
    }

    fn acquire(&self) -> Result<OwnedSemaphorePermit, InvokeError> {
        self.idle
            .acquire(&self.permits)
            .ok_or(InvokeError::Overloaded(OverloadScope::Tenant(self.limit())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_lower_ceiling_takes_held_permits_as_they_come_back() {
        let shared = SharedPermits::new(4);
        let held = shared.permits.clone().acquire_many_owned(3).await.unwrap();
        shared.resize(2);
        assert_eq!((shared.limit(), shared.available()), (2, 0));
        drop(held);
        for _ in 0..100 {
            if shared.available() == 2 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(shared.available(), 2);
        shared.resize(5);
        assert_eq!((shared.limit(), shared.available()), (5, 5));
    }
}
