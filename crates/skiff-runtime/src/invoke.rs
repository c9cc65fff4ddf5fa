//! One HTTP request through one component: a fresh store from the component's grants and
//! limits, a fresh instance from its `InstancePre`, the guest's `handle` export, and the store
//! dropped when the guest is done. Bodies stream both ways: nothing here buffers a body.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use opentelemetry::KeyValue;
use opentelemetry::trace::SpanKind;
use tokio::sync::{OwnedSemaphorePermit, oneshot};
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
        // Admission first, before any work: over a limit the client hears so at once, and
        // nothing queues without bound. The permits live as long as the guest task.
        let component_permit = match &self.concurrency {
            Some((permits, limit)) => Some(
                permits
                    .clone()
                    .try_acquire_owned()
                    .map_err(|_| InvokeError::Overloaded(OverloadScope::Component(*limit)))?,
            ),
            None => None,
        };
        let shared_permit = match &self.shared_concurrency {
            Some((permits, limit)) => Some(
                permits
                    .clone()
                    .try_acquire_owned()
                    .map_err(|_| InvokeError::Overloaded(OverloadScope::Tenant(*limit)))?,
            ),
            None => None,
        };
        // An instance kept from an earlier request holds its slot (and permit) already.
        let slot = match self.reuse.as_ref().and_then(InstanceReuse::take) {
            Some(warm) => Slot::Warm(warm),
            None => Slot::Fresh(self.runtime.instances.clone().try_acquire_owned().map_err(
                |_| InvokeError::Overloaded(OverloadScope::Host(self.runtime.config.max_instances)),
            )?),
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
        let (mut store, proxy, served, host_permit) = match slot {
            Slot::Warm(warm) => {
                let mut store = warm.store;
                store.data_mut().next_request(identity, usage.clone());
                (store, Some(warm.proxy), warm.served, warm.host_permit)
            }
            Slot::Fresh(host_permit) => {
                let mut host =
                    capabilities::instance_state(&self.grants, &identity, self.memory_limit)
                        .map_err(|err| InvokeError::Instantiate(format!("{err:#}")))?;
                host.limiter.report_peak_to(usage.clone());
                let mut store = Store::new(self.runtime.engine(), host);
                store.limiter(|host| &mut host.limiter);
                (store, None, 0, host_permit)
            }
        };
        // Guest code checks in at every epoch tick: past the deadline it is interrupted, and
        // before it, it yields to the executor, so a guest that computes for long (or forever)
        // shares its worker thread instead of stalling the other requests queued on it.
        let deadline = Instant::now() + self.timeout;
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            if Instant::now() >= deadline {
                Ok(UpdateDeadline::Interrupt)
            } else {
                Ok(UpdateDeadline::YieldCustom(
                    1,
                    Box::pin(tokio::task::yield_now()),
                ))
            }
        });
        self.runtime.fill_fuel(&mut store, self.fuel);

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
                let _permits = (component_permit, shared_permit);
                let run = async {
                    let proxy = match proxy {
                        Some(proxy) => proxy,
                        None => {
                            let span = trace.child(SpanKind::Internal, span_of("instantiate"));
                            let started = Instant::now();
                            let proxy = pre.instantiate_async(&mut store).await;
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
                        .call_handle(&mut store, incoming, outparam)
                        .await
                        .map_err(|err| classify(err, &store, limits))?;
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
                        store.data_mut().request_done();
                        reuse.keep(store, proxy, served + 1, host_permit);
                        Ok(())
                    }
                    (result, _) => {
                        // The slot goes back to the pool before the permit that counts it.
                        drop(store);
                        drop(host_permit);
                        result.map(drop)
                    }
                }
            },
            usage.clone(),
        ));

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
                    }
                    .boxed_unsync()
                }))
            }
            Ok(Err(code)) => {
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

/// Instances kept for the next requests of a component whose `requests_per_instance` is more
/// than one. Each holds its pool slot and the host permit that counts it, as a running
/// instance does. At most [`InstanceReuse::MAX_IDLE`] wait, and only while a quarter of the
/// host's instances are free: idle instances of one app never crowd out others' requests.
pub(crate) struct InstanceReuse {
    requests_per_instance: u32,
    /// Free host permits below which a finished instance is dropped rather than kept.
    keep_while_free: usize,
    idle: Mutex<Vec<WarmInstance>>,
}

/// Where a request's instance comes from: one kept from an earlier request (holding its slot
/// and permit already), or a fresh one under a permit just taken.
enum Slot {
    Warm(WarmInstance),
    Fresh(OwnedSemaphorePermit),
}

struct WarmInstance {
    store: Store<Host>,
    proxy: Proxy,
    /// Requests it has served.
    served: u32,
    host_permit: OwnedSemaphorePermit,
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
    ) -> Option<Arc<InstanceReuse>> {
        match requests_per_instance {
            Some(n) if n > 1 => Some(Arc::new(InstanceReuse {
                requests_per_instance: n,
                keep_while_free: (max_instances as usize).div_ceil(4),
                idle: Mutex::new(Vec::new()),
            })),
            _ => None,
        }
    }

    /// The instance used last, whose memory is likeliest still in the CPU's caches.
    fn take(self: &Arc<Self>) -> Option<WarmInstance> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop()
    }

    fn keep(
        &self,
        store: Store<Host>,
        proxy: Proxy,
        served: u32,
        host_permit: OwnedSemaphorePermit,
    ) {
        let host_free = host_permit.semaphore().available_permits();
        if served < self.requests_per_instance && host_free >= self.keep_while_free {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            if idle.len() < Self::MAX_IDLE {
                idle.push(WarmInstance {
                    store,
                    proxy,
                    served,
                    host_permit,
                });
                return;
            }
        }
        // The slot goes back to the pool before the permit that counts it.
        drop(store);
        drop(host_permit);
    }
}

/// A response body that ends in an error, not a clean end, when the guest failed while
/// streaming it. wasi:http ends the body cleanly when the store goes away without the guest
/// finishing it (a deadline, a trap), which would let a client take a truncated response for
/// a whole one; this way hyper breaks the connection off instead of writing the last chunk.
/// When the request is metered it also counts the body bytes sent, and holds the request's
/// usage open until the body is finished (or dropped).
struct CutOffOnFailure {
    body: ResponseBody,
    failed: Arc<AtomicBool>,
    usage: Option<Arc<UsageCell>>,
}

impl http_body::Body for CutOffOnFailure {
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        match Pin::new(&mut self.body).poll_frame(cx) {
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

fn classify(err: wasmtime::Error, store: &Store<Host>, limits: Limits) -> InvokeError {
    match err.downcast_ref::<Trap>() {
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
