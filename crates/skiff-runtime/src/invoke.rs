//! One HTTP request through one component: a fresh store from the component's grants and
//! limits, a fresh instance from its `InstancePre`, the guest's `handle` export, and the store
//! dropped when the guest is done. Bodies stream both ways: nothing here buffers a body.

use std::time::Duration;

use bytes::Bytes;
use tokio::sync::oneshot;
use wasmtime::{Store, Trap};
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::http::types::{ErrorCode, Scheme};

use crate::app::LoadedComponent;
use crate::capabilities::{self, InstanceIdentity};
use crate::error::{InvokeError, OverloadScope};
use crate::host::Host;

/// The body of a response produced by a guest (or by skiff on a guest's behalf).
pub type ResponseBody = wasmtime_wasi_http::p2::body::HyperOutgoingBody;

/// Facts about the request that the runtime needs and the trigger knows.
#[derive(Debug, Clone, Copy)]
pub struct RequestInfo {
    pub request_id: u64,
    /// `http` or `https`: what the client used to reach skiff.
    pub https: bool,
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
        let host_permit = self
            .runtime
            .instances
            .clone()
            .try_acquire_owned()
            .map_err(|_| {
                InvokeError::Overloaded(OverloadScope::Host(self.runtime.config.max_instances))
            })?;

        let identity = InstanceIdentity {
            app: self.app.clone(),
            component: self.id.clone(),
            request_id: info.request_id,
        };
        let host = capabilities::instance_state(&self.grants, &identity, self.memory_limit)
            .map_err(|err| InvokeError::Instantiate(format!("{err:#}")))?;
        let mut store = Store::new(self.runtime.engine(), host);
        store.limiter(|host| &mut host.limiter);
        store.set_epoch_deadline(self.runtime.deadline_ticks(self.timeout));
        store.epoch_deadline_trap();

        let scheme = if info.https {
            Scheme::Https
        } else {
            Scheme::Http
        };
        let (sender, receiver) = oneshot::channel();
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
        let memory_limit = self.memory_limit;
        // The guest runs in its own task: after it has sent the response head it goes on
        // writing the body while this function has already returned the response to hyper.
        let guest = tokio::spawn(async move {
            let _permits = (component_permit, host_permit);
            let run = async {
                let proxy = pre
                    .instantiate_async(&mut store)
                    .await
                    .map_err(|err| InvokeError::Instantiate(format!("{err:#}")))?;
                proxy
                    .wasi_http_incoming_handler()
                    .call_handle(&mut store, incoming, outparam)
                    .await
                    .map_err(|err| classify(err, &store, timeout, memory_limit))
            };
            // The epoch deadline stops guest code; this timer also stops a guest that waits
            // on the host (a slow outbound call, a stalled body) for too long.
            match tokio::time::timeout(timeout, run).await {
                Ok(result) => result,
                Err(_) => Err(InvokeError::Deadline(timeout)),
            }
        });

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
                Ok(response)
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

fn classify(
    err: wasmtime::Error,
    store: &Store<Host>,
    timeout: Duration,
    memory_limit: Option<u64>,
) -> InvokeError {
    match err.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => return InvokeError::Deadline(timeout),
        Some(Trap::StackOverflow) => return InvokeError::Trap("stack overflow".into()),
        _ => {}
    }
    if let Some(limit) = memory_limit.filter(|_| store.data().limiter.refused) {
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
