//! One HTTP request through one component: a fresh store from the component's grants and
//! limits, a fresh instance from its `InstancePre`, the guest's `handle` export, and the store
//! dropped when the guest is done. Bodies stream both ways: nothing here buffers a body.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use opentelemetry::KeyValue;
use opentelemetry::trace::SpanKind;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use tokio::task::{AbortHandle, JoinHandle};
use wasmtime::{Store, Trap, UpdateDeadline};
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::Proxy;
use wasmtime_wasi_http::p2::bindings::http::types::{ErrorCode, Scheme};

use crate::app::LoadedComponent;
use crate::capabilities::{self, InstanceIdentity};
use crate::error::{InvokeError, OverloadScope};
use crate::host::Host;
use crate::trace::TraceContext;
use crate::usage::{CountedBody, CpuTimed, UsageCell};

/// The body of a response produced by a guest (or by skiff on a guest's behalf).
pub type ResponseBody = wasmtime_wasi_http::p2::body::HyperOutgoingBody;

/// Facts about the request that the runtime needs and the trigger knows.
#[derive(Debug, Clone)]
pub struct RequestInfo {
    pub request_id: u64,
    /// `http` or `https`: what the client used to reach skiff.
    pub https: bool,
    /// The request's place in its trace: instantiation and the guest call are spans below it.
    pub trace: TraceContext,
}

impl LoadedComponent {
    /// Serves one request in a fresh instance. Returns once the guest has sent its response
    /// head; the body keeps streaming from the guest afterwards, bounded by the same deadline.
    pub async fn handle_http<B>(
        &self,
        request: http::Request<B>,
        info: RequestInfo,
    ) -> Result<http::Response<ResponseBody>, InvokeError>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        // An instance kept from an earlier request comes with the permits that admitted it.
        // Otherwise admission comes first, before any work: over a limit the client hears so
        // at once, and nothing queues without bound. The permits live as long as the instance.
        let slot = match self.reuse.as_ref().and_then(|reuse| reuse.take()) {
            Some(warm) => Slot::Warm(warm),
            None => Slot::Fresh(self.admit()?),
        };
        // Admitted: from here on the request is metered, if its app is. A request refused
        // above used nothing worth billing and reports nothing.
        let usage = self.usage.as_ref().map(UsageCell::new);

        let identity = InstanceIdentity {
            app: self.app.clone(),
            component: self.id.clone(),
            request_id: info.request_id,
            trace_id: info.trace.trace_id(),
            log_sink: self.log_sink.clone(),
            metrics: self.metrics.clone(),
        };
        let (mut instance, proxy, served) = match slot {
            Slot::Warm(warm) => {
                let mut instance = warm.instance;
                instance
                    .store
                    .data_mut()
                    .next_request(identity, usage.clone());
                (instance, Some(warm.proxy), warm.served)
            }
            Slot::Fresh(permits) => {
                let mut host =
                    capabilities::instance_state(&self.grants, &identity, self.memory_limit)
                        .map_err(|err| InvokeError::Instantiate(format!("{err:#}")))?;
                host.limiter.report_peak_to(usage.clone());
                let mut store = Store::new(self.runtime.engine(), host);
                store.limiter(|host| &mut host.limiter);
                (Instance { store, permits }, None, 0)
            }
        };
        let store = &mut instance.store;
        // Guest code checks in at every epoch tick: past the deadline it is interrupted, and
        // before it, it yields to the executor, so a guest that computes for long (or forever)
        // shares its worker thread instead of stalling the other requests queued on it.
        // A host that is stopping interrupts every guest the same way, at its next tick.
        let deadline = Instant::now() + self.timeout;
        let stopping = self.runtime.stopping.clone();
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            if Instant::now() >= deadline || stopping.load(Ordering::Relaxed) {
                Ok(UpdateDeadline::Interrupt)
            } else {
                Ok(UpdateDeadline::YieldCustom(
                    1,
                    Box::pin(tokio::task::yield_now()),
                ))
            }
        });
        self.runtime.fill_fuel(store, self.fuel);

        let scheme = if info.https {
            Scheme::Https
        } else {
            Scheme::Http
        };
        let (sender, receiver) = oneshot::channel();
        let request = request.map(|body| CountedBody::new(body, usage.clone()));
        let (incoming, outparam) = {
            let mut http = store.data_mut().http();
            let incoming = http
                .new_incoming_request(scheme, request)
                .map_err(|err| InvokeError::Instantiate(format!("{err:#}")))?;
            let outparam = http
                .new_response_outparam(sender)
                .map_err(|err| InvokeError::Instantiate(format!("{err:#}")))?;
            (incoming, outparam)
        };

        let pre = self.pre.clone();
        let timeout = self.timeout;
        let failed = Arc::new(AtomicBool::new(false));
        let failed_in_guest = failed.clone();
        let limits = Limits {
            timeout: self.timeout,
            memory: self.memory_limit,
            fuel: self.fuel,
        };
        let stopping = self.runtime.stopping.clone();
        let metrics = self.metrics.clone();
        let trace = info.trace;
        let reuse = self.reuse.clone();
        let component = self.id.clone();
        let span_of = move |name: &'static str| {
            let component = component.clone();
            move || {
                let attributes = vec![KeyValue::new("skiff.component", component.to_string())];
                (name.into(), attributes)
            }
        };
        // The guest call's span starts once the instance exists; the deadline, outside the
        // call, still needs to reach it.
        let guest_span = OnceLock::<TraceContext>::new();
        // The guest runs in its own task: after it has sent the response head it goes on
        // writing the body while this function has already returned the response to hyper.
        // Its polls are timed in CPU time when metered: instantiation, the guest's code and
        // the host calls it makes, and the store's tear-down at the end.
        let guest = tokio::spawn(CpuTimed::new(
            async move {
                let store = &mut instance.store;
                let run = async {
                    let proxy = match proxy {
                        Some(proxy) => proxy,
                        None => {
                            let span = trace.child(SpanKind::Internal, span_of("instantiate"));
                            let started = Instant::now();
                            let proxy = pre.instantiate_async(&mut *store).await;
                            if let Some(metrics) = &metrics {
                                metrics.instantiated(started.elapsed().as_secs_f64());
                            }
                            let proxy = proxy.map_err(|err| {
                                span.set_error(format!("{err:#}"));
                                InvokeError::Instantiate(format!("{err:#}"))
                            })?;
                            span.end();
                            proxy
                        }
                    };
                    let span = guest_span.get_or_init(|| {
                        let span = trace.child(
                            SpanKind::Internal,
                            span_of("wasi:http/incoming-handler.handle"),
                        );
                        span.set_attribute(KeyValue::new(
                            "skiff.instance.requests",
                            i64::from(served + 1),
                        ));
                        span
                    });
                    // The guest's own calls (outbound HTTP, key-value) are spans below this.
                    let host = store.data_mut();
                    host.trace = span.clone();
                    host.outbound.trace = span.clone();
                    proxy
                        .wasi_http_incoming_handler()
                        .call_handle(&mut *store, incoming, outparam)
                        .await
                        .map_err(|err| classify(err, store, limits, &stopping))?;
                    Ok(proxy)
                };
                // The epoch deadline stops guest code; this timer also stops a guest that waits
                // on the host (a slow outbound call, a stalled body) for too long.
                let result = match tokio::time::timeout(timeout, run).await {
                    Ok(result) => result,
                    Err(_) => Err(InvokeError::Deadline(timeout)),
                };
                if let Some(span) = guest_span.get() {
                    if let Err(err) = &result {
                        span.set_error(err.to_string());
                    }
                    span.end();
                }
                // Set before the store (and with it the body's sender) is dropped, so the body
                // sees the failure by the time it sees its end.
                failed_in_guest.store(result.is_err(), Ordering::Release);
                match (result, reuse) {
                    // A component that allows it keeps an instance that served well for its
                    // next request; one that failed in any way goes with its store.
                    (Ok(proxy), Some(reuse)) => {
                        instance.store.data_mut().request_done();
                        reuse.keep(instance, proxy, served + 1);
                        Ok(())
                    }
                    (result, _) => {
                        drop(instance);
                        result.map(drop)
                    }
                }
            },
            usage.clone(),
        ));
        // Until the response head, this request (the future awaiting it) is what holds the
        // guest: hyper drops it when the client goes away, and the guest stops with it.
        let mut stop_guest = StopGuest::new(&guest, info.request_id);

        match receiver.await {
            Ok(Ok(response)) => {
                // Errors after the head was sent can no longer change the status: log them.
                let (app, component, request_id) =
                    (self.app.clone(), self.id.clone(), info.request_id);
                tokio::spawn(async move {
                    if let Ok(Err(err)) = guest.await {
                        tracing::warn!(
                            %app, %component, request_id,
                            "component failed while streaming its response body: {err}"
                        );
                    }
                });
                Ok(response.map(|body| {
                    CutOffOnFailure {
                        body,
                        failed,
                        usage,
                        stop_guest: stop_guest.take(),
                        polled: false,
                    }
                    .boxed_unsync()
                }))
            }
            Ok(Err(code)) => {
                stop_guest.disarm();
                guest.abort();
                Err(InvokeError::Guest(describe_error_code(&code)))
            }
            // The guest dropped the outparam without setting it: it returned, trapped or ran
            // out of time. Its own result says which.
            Err(_) => match guest.await {
                Ok(Ok(())) => Err(InvokeError::NoResponse),
                Ok(Err(err)) => Err(err),
                Err(join) => Err(InvokeError::Trap(format!("the guest task failed: {join}"))),
            },
        }
    }
}

impl LoadedComponent {
    /// Takes the permits a fresh instance needs: the component's, the shared (tenant) one, the
    /// host's, in that order, or says which limit is reached.
    fn admit(&self) -> Result<Permits, InvokeError> {
        let component = match &self.concurrency {
            Some((permits, limit)) => Some(
                permits
                    .clone()
                    .try_acquire_owned()
                    .map_err(|_| InvokeError::Overloaded(OverloadScope::Component(*limit)))?,
            ),
            None => None,
        };
        let shared = match &self.shared_concurrency {
            Some(shared) => Some(shared.acquire()?),
            None => None,
        };
        let host = self
            .runtime
            .idle_instances
            .acquire(&self.runtime.instances)
            .ok_or(InvokeError::Overloaded(OverloadScope::Host(
                self.runtime.config.max_instances,
            )))?;
        Ok(Permits {
            _component: component,
            _shared: shared,
            host,
        })
    }
}

/// What admitted one instance: the host's permit and, where set, the component's and the
/// shared (tenant) one. An instance kept for reuse keeps them all, so that idle instances count
/// against every limit that running ones do. Held for their drop, which gives them back.
struct Permits {
    _component: Option<OwnedSemaphorePermit>,
    _shared: Option<OwnedSemaphorePermit>,
    host: OwnedSemaphorePermit,
}

/// A store with the permits that admitted it. The fields drop in this order however the
/// instance ends (served, failed, dropped idle, or its task aborted): the store, and with it
/// the pool slot, goes back before the permit that counts it, so a request admitted by a freed
/// permit always finds a free slot.
struct Instance {
    store: Store<Host>,
    permits: Permits,
}

/// Where a request's instance comes from: one kept from an earlier request (admitted then), or
/// a fresh one under permits just taken.
enum Slot {
    Warm(WarmInstance),
    Fresh(Permits),
}

struct WarmInstance {
    instance: Instance,
    proxy: Proxy,
    /// Requests it has served.
    served: u32,
    /// When it last finished a request.
    idle_since: Instant,
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
    fn take(&self) -> Option<WarmInstance> {
        self.idle().instances.pop()
    }

    /// The instance that has waited longest, to free its permits for another request.
    fn take_oldest(&self) -> Option<WarmInstance> {
        let mut idle = self.idle();
        (!idle.instances.is_empty()).then(|| idle.instances.remove(0))
    }

    fn keep(self: &Arc<Self>, instance: Instance, proxy: Proxy, served: u32) {
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
            proxy,
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
pub(crate) struct IdlePools(Mutex<Vec<Weak<InstanceReuse>>>);

impl IdlePools {
    pub(crate) fn register(&self, pool: &Arc<InstanceReuse>) {
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
/// instances kept for reuse hold one each (see [`InstanceReuse`]), so that a tenant's idle
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

/// Stops a request's guest when dropped, unless the request is over. The request holds it
/// until the guest's response head, its response body after that: when a client goes away,
/// hyper drops both, and a guest that would go on computing for nobody (until its deadline,
/// or for ever) is stopped at its next epoch tick instead.
struct StopGuest {
    guest: Option<AbortHandle>,
    request_id: u64,
}

impl StopGuest {
    fn new<T>(guest: &JoinHandle<T>, request_id: u64) -> StopGuest {
        StopGuest {
            guest: Some(guest.abort_handle()),
            request_id,
        }
    }

    /// Hands the duty on (to the response body).
    fn take(&mut self) -> StopGuest {
        StopGuest {
            guest: self.guest.take(),
            request_id: self.request_id,
        }
    }

    /// The request is over as far as the client is concerned: the guest may finish on its own.
    fn disarm(&mut self) {
        self.guest = None;
    }
}

impl Drop for StopGuest {
    fn drop(&mut self) {
        if let Some(guest) = self.guest.take()
            && !guest.is_finished()
        {
            tracing::debug!(
                request_id = self.request_id,
                "the client went away: stopping its guest"
            );
            guest.abort();
        }
    }
}

/// A response body that ends in an error, not a clean end, when the guest failed while
/// streaming it. wasi:http ends the body cleanly when the store goes away without the guest
/// finishing it (a deadline, a trap), which would let a client take a truncated response for
/// a whole one; this way hyper breaks the connection off instead of writing the last chunk.
/// When the request is metered it also counts the body bytes sent, and holds the request's
/// usage open until the body is finished (or dropped).
///
/// It also stops the guest if the client goes away while the body is still streaming: hyper
/// drops a body it has started sending only when the connection is gone. (A body hyper never
/// polls, that of a HEAD request or a 204, leaves the guest to finish: it may still be working
/// after answering, and no client is waiting on it.)
struct CutOffOnFailure {
    body: ResponseBody,
    failed: Arc<AtomicBool>,
    usage: Option<Arc<UsageCell>>,
    stop_guest: StopGuest,
    polled: bool,
}

impl Drop for CutOffOnFailure {
    fn drop(&mut self) {
        if !self.polled {
            self.stop_guest.disarm();
        }
    }
}

impl http_body::Body for CutOffOnFailure {
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        self.polled = true;
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if !matches!(polled, Poll::Pending | Poll::Ready(Some(Ok(_)))) || self.body.is_end_stream()
        {
            // The body is complete, or broken off: nothing is left for the client to wait on.
            self.stop_guest.disarm();
        }
        match polled {
            Poll::Ready(None) if self.failed.load(Ordering::Acquire) => {
                Poll::Ready(Some(Err(wasmtime_wasi_http::Error::HttpResponseIncomplete)))
            }
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(usage), Some(data)) = (&self.usage, frame.data_ref()) {
                    usage.sent(data.len());
                }
                Poll::Ready(Some(Ok(frame)))
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream() && !self.failed.load(Ordering::Acquire)
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// The limits a failure is judged against.
#[derive(Clone, Copy)]
struct Limits {
    timeout: Duration,
    memory: Option<u64>,
    fuel: Option<u64>,
}

fn classify(
    err: wasmtime::Error,
    store: &Store<Host>,
    limits: Limits,
    stopping: &AtomicBool,
) -> InvokeError {
    match err.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) if stopping.load(Ordering::Relaxed) => return InvokeError::Stopped,
        Some(Trap::Interrupt) => return InvokeError::Deadline(limits.timeout),
        Some(Trap::StackOverflow) => return InvokeError::Trap("stack overflow".into()),
        Some(Trap::OutOfFuel) => {
            return InvokeError::OutOfFuel {
                budget: limits.fuel.unwrap_or(u64::MAX),
            };
        }
        _ => {}
    }
    if let Some(limit) = limits.memory.filter(|_| store.data().limiter.refused) {
        return InvokeError::OutOfMemory { limit };
    }
    if let Some(exit) = err.downcast_ref::<wasmtime_wasi::I32Exit>() {
        return InvokeError::Trap(format!("the component called exit({})", exit.0));
    }
    InvokeError::Trap(format!("{err:#}"))
}

fn describe_error_code(code: &ErrorCode) -> String {
    format!("{code:?}")
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
