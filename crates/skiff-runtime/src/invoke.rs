//! One HTTP request through one component: a fresh store from the component's grants and
//! limits, a fresh instance from its `InstancePre`, the guest's `handle` export, and the store
//! dropped when the guest is done. Bodies stream both ways: nothing here buffers a body.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use opentelemetry::KeyValue;
use opentelemetry::trace::SpanKind;
use tokio::sync::oneshot;
use tokio::task::{AbortHandle, JoinHandle};
use wasmtime::{Store, Trap};
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p3;
use wasmtime_wasi_http::p3::bindings::ServicePre;
use wasmtime_wasi_http::{FieldMap, WasiHttpView};

use crate::capabilities::InstanceIdentity;
use crate::capabilities::outbound_http::InProcessCalls;
use crate::engine::Sandboxes;
use crate::error::InvokeError;
use crate::host::{Grants, Host};
use crate::limits::{Limits, Sandboxed};
use crate::load::{Linked, LoadedComponent};
use crate::metrics::ComponentMetrics;
use crate::reuse::{Exports, Instance, InstanceReuse, Permits, Slot};
use crate::trace::TraceContext;
use crate::usage::{CountedBody, CpuTimed, UsageCell};

/// The body of a response produced by a guest (or by skiff on a guest's behalf).
pub type ResponseBody = wasmtime_wasi_http::p2::body::HyperOutgoingBody;

/// The guest's part of a unit of work run by [`LoadedComponent::run_in_fresh_store`].
pub(crate) type GuestWork<'s, T> =
    Pin<Box<dyn std::future::Future<Output = Result<T, InvokeError>> + Send + 's>>;

/// Facts about the request that the runtime needs and the trigger knows.
#[derive(Debug, Clone)]
pub struct RequestInfo {
    pub request_id: u64,
    /// `http` or `https`: what the client used to reach skiff.
    pub https: bool,
    /// The request's place in its trace: instantiation and the guest call are spans below it.
    pub trace: TraceContext,
    /// Where the guest's in-process requests go (other components of its app, the next hop of
    /// its middleware chain); `None`: nowhere, they fail.
    pub calls: Option<InProcessCalls>,
}

impl LoadedComponent {
    /// Admission of one unit of work: the component's, its tenant's and the host's permits,
    /// or the refusal to answer at once.
    pub(crate) fn admit(&self) -> Result<Permits, InvokeError> {
        Permits::take(
            self.concurrency.as_ref(),
            self.shared_concurrency.as_deref(),
            &self.sandboxes.permits,
        )
    }

    /// One unit of work that is not an HTTP request (a command's run, a queue message), in a
    /// fresh instance with `grants` and the component's limits: admitted first, metered when
    /// the app is (`bytes_in` is what it was handed), and stopped at the deadline. `work`
    /// gets the new store; the store, and with it the admission, is gone when `work` ends.
    pub(crate) async fn run_in_fresh_store<T>(
        &self,
        grants: &Grants,
        info: &RequestInfo,
        bytes_in: usize,
        work: impl for<'s> FnOnce(&'s mut Store<Host>) -> GuestWork<'s, T>,
    ) -> Result<T, InvokeError> {
        let permits = self.admit()?;
        let usage = self.usage.as_ref().map(UsageCell::new);
        if let Some(usage) = &usage {
            usage.received(bytes_in);
        }
        let mut host = Host::new(grants, self.identity(info), self.limits.memory);
        host.limiter().report_peak_to(usage.clone());
        host.set_calls(info.calls.clone());
        // On the engine the component's code was compiled for.
        let engine = self.linked.instance_pre().engine();
        let mut store = self.sandboxes.new_store_on(engine, host, &self.limits);
        let timeout = self.timeout();
        let run = async move {
            // The epoch deadline stops guest code; this stops a guest waiting on the host.
            let result = tokio::time::timeout(timeout, work(&mut store))
                .await
                .unwrap_or(Err(InvokeError::Deadline(timeout)));
            // Admission lasts as long as the store.
            drop(store);
            drop(permits);
            result
        };
        CpuTimed::new(run, usage).await
    }

    /// Who an instance runs for: on its log lines, and in its counters.
    pub(crate) fn identity(&self, info: &RequestInfo) -> InstanceIdentity {
        InstanceIdentity {
            app: self.app.clone(),
            component: self.id.clone(),
            request_id: info.request_id,
            trace_id: info.trace.trace_id(),
            log_sink: self.log_sink.clone(),
            metrics: self.metrics.clone(),
        }
    }

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
        let pre = match &self.linked {
            Linked::Http(pre) => pre,
            Linked::Service(pre) => return self.handle_http_0_3(pre.clone(), request, info).await,
            _ => {
                return Err(InvokeError::Instantiate(format!(
                    "component `{}` is a command, not an HTTP component",
                    self.id
                )));
            }
        };
        let RequestInstance {
            mut instance,
            kept,
            served,
            usage,
        } = self.request_instance(&info)?;
        let store = &mut instance.store;

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

        let pre = pre.clone();
        let timeout = self.timeout();
        let failed = Arc::new(AtomicBool::new(false));
        let failed_in_guest = failed.clone();
        let limits = self.limits;
        let sandboxes = self.sandboxes.clone();
        let metrics = self.metrics.clone();
        let trace = info.trace;
        let reuse = self.reuse.clone();
        let component = self.id.clone();
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
                    let proxy = match kept {
                        Some(Exports::Wasip2(proxy)) => proxy,
                        _ => {
                            let span = component_span(&trace, "instantiate", &component);
                            instantiate(pre.instantiate_async(&mut *store), span, &metrics).await?
                        }
                    };
                    let span = guest_span.get_or_init(|| {
                        let span =
                            component_span(&trace, "wasi:http/incoming-handler.handle", &component);
                        span.set_attribute(KeyValue::new(
                            "skiff.instance.requests",
                            i64::from(served + 1),
                        ));
                        span
                    });
                    // The guest's own calls (outbound HTTP, key-value) are spans below this.
                    store.data_mut().set_trace(span.clone());
                    proxy
                        .wasi_http_incoming_handler()
                        .call_handle(&mut *store, incoming, outparam)
                        .await
                        .map_err(|err| classify(err, store, limits, &sandboxes))?;
                    Ok(Exports::Wasip2(proxy))
                };
                // Before the store (and with it the body's sender) is dropped.
                let result = run_to_deadline(run, timeout, &guest_span, &failed_in_guest).await;
                keep_or_drop(instance, result, reuse, served)
            },
            usage.clone(),
        ));
        self.response_or_failure(receiver, guest, failed, usage, info.request_id)
            .await
    }

    /// The instance a request runs in: one kept from an earlier request, which comes with the
    /// permits that admitted it, or else a fresh store under permits taken now. Admission
    /// comes before any work: over a limit the client hears so at once, and nothing queues
    /// without bound. The permits live as long as the instance.
    fn request_instance(&self, info: &RequestInfo) -> Result<RequestInstance, InvokeError> {
        let slot = match self.reuse.as_ref().and_then(|reuse| reuse.take()) {
            Some(warm) => Slot::Warm(warm),
            None => Slot::Fresh(self.admit()?),
        };
        // Admitted: from here on the request is metered, if its app is. A request refused
        // above used nothing worth billing and reports nothing.
        let usage = self.usage.as_ref().map(UsageCell::new);
        let identity = self.identity(info);
        let mut request = match slot {
            Slot::Warm(warm) => {
                let mut instance = warm.instance;
                instance
                    .store
                    .data_mut()
                    .next_request(identity, usage.clone());
                // Its clock starts again for this request.
                self.sandboxes.arm(&mut instance.store, &self.limits);
                RequestInstance {
                    instance,
                    kept: Some(warm.exports),
                    served: warm.served,
                    usage,
                }
            }
            Slot::Fresh(permits) => {
                let mut host = Host::new(&self.grants, identity, self.limits.memory);
                host.limiter().report_peak_to(usage.clone());
                // On the engine the component's code was compiled for.
                let engine = self.linked.instance_pre().engine();
                let store = self.sandboxes.new_store_on(engine, host, &self.limits);
                RequestInstance {
                    instance: Instance { store, permits },
                    kept: None,
                    served: 0,
                    usage,
                }
            }
        };
        request
            .instance
            .store
            .data_mut()
            .set_calls(info.calls.clone());
        Ok(request)
    }

    /// What the client gets once the guest's task (`guest`) has sent its response head on
    /// `head`, or has ended without one: the response, its body cut off if the guest fails
    /// while writing it (`failed`), or the failure.
    async fn response_or_failure<E: std::fmt::Debug>(
        &self,
        head: oneshot::Receiver<Result<http::Response<ResponseBody>, E>>,
        guest: JoinHandle<Result<(), InvokeError>>,
        failed: Arc<AtomicBool>,
        usage: Option<Arc<UsageCell>>,
        request_id: u64,
    ) -> Result<http::Response<ResponseBody>, InvokeError> {
        // Until the response head, this request (the future awaiting it) is what holds the
        // guest: hyper drops it when the client goes away, and the guest stops with it.
        let mut stop_guest = StopGuest::new(&guest, request_id);
        match head.await {
            Ok(Ok(response)) => {
                // Errors after the head was sent can no longer change the status: log them.
                let (app, component) = (self.app.clone(), self.id.clone());
                tokio::spawn(async move {
                    if let Ok(Err(err)) = guest.await {
                        tracing::warn!(
                            %app, %component, request_id,
                            "component failed after sending its response head: {err}"
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
                Err(InvokeError::Guest(format!("{code:?}")))
            }
            // The guest dropped the sender without a response: it returned, trapped or ran
            // out of time. Its own result says which.
            Err(_) => match guest.await {
                Ok(Ok(())) => Err(InvokeError::NoResponse),
                Ok(Err(err)) => Err(err),
                Err(join) => Err(InvokeError::Trap(format!("the guest task failed: {join}"))),
            },
        }
    }
}

/// The instance a request runs in, from [`LoadedComponent::request_instance`].
struct RequestInstance {
    instance: Instance,
    /// The handler of an instance kept from an earlier request; `None`: still to instantiate.
    kept: Option<Exports>,
    /// Requests the instance served before this one.
    served: u32,
    usage: Option<Arc<UsageCell>>,
}

/// The end of a request's instance: a component that allows it keeps an instance that served
/// well for its next request; one that failed in any way goes with its store.
fn keep_or_drop(
    mut instance: Instance,
    result: Result<Exports, InvokeError>,
    reuse: Option<Arc<InstanceReuse>>,
    served: u32,
) -> Result<(), InvokeError> {
    match (result, reuse) {
        (Ok(exports), Some(reuse)) => {
            instance.store.data_mut().request_done();
            reuse.keep(instance, exports, served + 1);
            Ok(())
        }
        (result, _) => {
            drop(instance);
            result.map(drop)
        }
    }
}

/// A span for one step of a component's request, below the request's own.
pub(crate) fn component_span(
    trace: &TraceContext,
    name: &'static str,
    component: &Arc<str>,
) -> TraceContext {
    let component = component.to_string();
    trace.child(SpanKind::Internal, move || {
        let attributes = vec![KeyValue::new("skiff.component", component)];
        (name.into(), attributes)
    })
}

/// Awaits an instantiation: timed into the metrics, its failure on its span.
pub(crate) async fn instantiate<T>(
    instantiating: impl std::future::Future<Output = wasmtime::Result<T>>,
    span: TraceContext,
    metrics: &Option<ComponentMetrics>,
) -> Result<T, InvokeError> {
    let started = Instant::now();
    let instance = instantiating.await;
    if let Some(metrics) = metrics {
        metrics.instantiated(started.elapsed().as_secs_f64());
    }
    let instance = instance.map_err(|err| {
        span.set_error(format!("{err:#}"));
        InvokeError::Instantiate(format!("{err:#}"))
    })?;
    span.end();
    Ok(instance)
}

/// Runs a request's guest work to its end or its deadline, ends the guest call's span with
/// the outcome, and marks the request `failed` for its response body, which then ends in an
/// error rather than cleanly. The epoch deadline stops guest code; this timer also stops a
/// guest that waits on the host (a slow outbound call, a stalled body) for too long.
async fn run_to_deadline<T>(
    run: impl std::future::Future<Output = Result<T, InvokeError>>,
    timeout: Duration,
    guest_span: &OnceLock<TraceContext>,
    failed: &AtomicBool,
) -> Result<T, InvokeError> {
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
    failed.store(result.is_err(), Ordering::Release);
    result
}

impl LoadedComponent {
    /// [`LoadedComponent::handle_http`] for a WASI 0.3 component (`wasi:http/handler@0.3`).
    /// Its `handle` returns the response, and the guest's tasks go on writing the body
    /// afterwards, and may go on working once it is written: they run only while the store's
    /// event loop does, so the guest's task keeps the loop running until the body is finished
    /// (or dropped) and no task of the guest is left, or until the deadline. Only then is the
    /// store dropped, or kept for the next request: a kept instance has nothing running.
    async fn handle_http_0_3<B>(
        &self,
        pre: Arc<ServicePre<Host>>,
        request: http::Request<B>,
        info: RequestInfo,
    ) -> Result<http::Response<ResponseBody>, InvokeError>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let RequestInstance {
            mut instance,
            kept,
            served,
            usage,
        } = self.request_instance(&info)?;

        let (parts, body) = request.into_parts();
        let authority = match parts.uri.authority() {
            Some(authority) => Some(authority.clone()),
            None => parts
                .headers
                .get(http::header::HOST)
                .and_then(|host| host.to_str().ok())
                .and_then(|host| host.parse().ok()),
        };
        let scheme = if info.https {
            http::uri::Scheme::HTTPS
        } else {
            http::uri::Scheme::HTTP
        };
        let hooks = instance.store.data_mut().http().hooks;
        let headers = FieldMap::new_immutable(hooks, parts.headers);
        let (request, request_body_done) = p3::Request::new(
            parts.method,
            Some(scheme),
            authority,
            parts.uri.path_and_query().cloned(),
            headers,
            None,
            CountedBody::new(body, usage.clone()),
        );

        let (sender, receiver) = oneshot::channel();
        let timeout = self.timeout();
        let failed = Arc::new(AtomicBool::new(false));
        let failed_in_guest = failed.clone();
        let (limits, sandboxes, metrics) =
            (self.limits, self.sandboxes.clone(), self.metrics.clone());
        let trace = info.trace;
        let reuse = self.reuse.clone();
        let component = self.id.clone();
        let guest = tokio::spawn(CpuTimed::new(
            async move {
                let guest_span = OnceLock::<TraceContext>::new();
                let store = &mut instance.store;
                let run = async {
                    let service = match kept {
                        Some(Exports::Wasi03(service)) => service,
                        _ => {
                            let span = component_span(&trace, "instantiate", &component);
                            instantiate(pre.instantiate_async(&mut *store), span, &metrics).await?
                        }
                    };
                    let guest = guest_span.get_or_init(|| {
                        let span = component_span(&trace, "wasi:http/handler.handle", &component);
                        span.set_attribute(KeyValue::new(
                            "skiff.instance.requests",
                            i64::from(served + 1),
                        ));
                        span
                    });
                    store.data_mut().set_trace(guest.clone());
                    store
                        .run_concurrent(async |accessor| {
                            match service.handle(accessor, request).await? {
                                Ok(response) => {
                                    let response = accessor.with(|mut store| {
                                        response.into_http(&mut store, request_body_done)
                                    })?;
                                    let (finished, body_finished) = oneshot::channel();
                                    let response = response.map(|body| {
                                        NotifyWhenFinished {
                                            body,
                                            finished: Some(finished),
                                        }
                                        .boxed_unsync()
                                    });
                                    if sender.send(Ok(response)).is_ok() {
                                        // The guest's tasks write the body while the loop runs.
                                        let _ = body_finished.await;
                                    }
                                }
                                Err(code) => {
                                    let _ = sender.send(Err(code));
                                }
                            }
                            // What the guest still does after its response (a task that logs,
                            // or calls out, once it has answered) runs to its end here. A store
                            // dropped with a guest task still in it would also cost a
                            // backtrace per request where RUST_BACKTRACE is set.
                            std::future::poll_fn(|cx| accessor.poll_no_interesting_tasks(cx)).await;
                            wasmtime::Result::Ok(())
                        })
                        .await
                        .and_then(|result| result)
                        .map_err(|err| classify(err, store, limits, &sandboxes))?;
                    Ok(Exports::Wasi03(service))
                };
                let result = run_to_deadline(run, timeout, &guest_span, &failed_in_guest).await;
                keep_or_drop(instance, result, reuse, served)
            },
            usage.clone(),
        ));
        self.response_or_failure(receiver, guest, failed, usage, info.request_id)
            .await
    }
}

/// A WASI 0.3 guest's response body, which says when it is finished: at its end, at an
/// error, or when dropped unfinished (the client went away, or never reads it, as for HEAD).
/// Until then the store's event loop runs, and with it the guest tasks that write the body.
struct NotifyWhenFinished {
    body: ResponseBody,
    finished: Option<oneshot::Sender<()>>,
}

impl http_body::Body for NotifyWhenFinished {
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if matches!(polled, Poll::Ready(None | Some(Err(_)))) {
            self.finished.take();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
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

/// What a guest's failure was, judged against its limits.
pub(crate) fn classify(
    err: wasmtime::Error,
    store: &mut Store<Host>,
    limits: Limits,
    sandboxes: &Sandboxes,
) -> InvokeError {
    match err.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) if sandboxes.stopping() => return InvokeError::Stopped,
        Some(Trap::Interrupt) => {
            return InvokeError::Deadline(limits.timeout.unwrap_or(Duration::MAX));
        }
        Some(Trap::StackOverflow) => return InvokeError::Trap("stack overflow".into()),
        Some(Trap::OutOfFuel) => {
            return InvokeError::OutOfFuel {
                budget: limits.fuel.unwrap_or(u64::MAX),
            };
        }
        _ => {}
    }
    if let Some(limit) = limits.memory.filter(|_| store.data_mut().limiter().refused) {
        return InvokeError::OutOfMemory { limit };
    }
    if let Some(exit) = err.downcast_ref::<wasmtime_wasi::I32Exit>() {
        return InvokeError::Trap(format!("the component called exit({})", exit.0));
    }
    InvokeError::Trap(format!("{err:#}"))
}
