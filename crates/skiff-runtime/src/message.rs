//! One queue message through one component: the queue trigger's unit of work, for a component
//! that exports `wasi:messaging/incoming-handler`. Like a request, it runs in a fresh instance
//! from the component's grants and limits, admitted by the same permits, metered into the same
//! usage, logged under its own id; the store is dropped when the handler returns. (Messages
//! delivered as an HTTP `POST` are requests, and go through [`LoadedComponent::handle_http`].)

use crate::capabilities::messaging;
use crate::error::InvokeError;
use crate::invoke::{RequestInfo, classify, component_span, instantiate};
use crate::load::LoadedComponent;

impl LoadedComponent {
    /// Calls the component's `wasi:messaging/incoming-handler` with `message`, received from
    /// the app's queue `queue` (the message's topic, as the app names it). `Ok` once the
    /// handler returned `ok`; an error when it returned one (`InvokeError::Guest`), trapped or
    /// hit a limit, or was not admitted (`InvokeError::Overloaded`: nothing ran, try later).
    pub async fn handle_message(
        &self,
        queue: &str,
        message: skiff_store::Message,
        info: RequestInfo,
    ) -> Result<(), InvokeError> {
        let Some(indices) = &self.message_handler else {
            return Err(InvokeError::Instantiate(format!(
                "component `{}` exports no `wasi:messaging/incoming-handler`",
                self.id
            )));
        };
        let (pre, indices) = (self.linked.instance_pre().clone(), indices.clone());
        let (limits, sandboxes) = (self.limits, self.sandboxes.clone());
        let metrics = self.metrics.clone();
        let (component, queue) = (self.id.clone(), queue.to_string());
        let trace = info.trace.clone();
        let bytes_in = message.data.len();
        self.run_in_fresh_store(&self.grants, &info, bytes_in, move |store| {
            Box::pin(async move {
                let span = component_span(&trace, "instantiate", &component);
                let instance =
                    instantiate(pre.instantiate_async(&mut *store), span, &metrics).await?;
                let handler = indices
                    .load(&mut *store, &instance)
                    .map_err(|err| InvokeError::Instantiate(format!("{err:#}")))?;
                let message = messaging::incoming(store.data_mut(), &queue, message)
                    .map_err(|err| InvokeError::Trap(format!("{err:#}")))?;
                let span =
                    component_span(&trace, "wasi:messaging/incoming-handler.handle", &component);
                // The guest's own calls (publishing, key-value) are spans below this.
                store.data_mut().set_trace(span.clone());
                let result = handler
                    .wasi_messaging_incoming_handler()
                    .call_handle(&mut *store, message)
                    .await
                    .map_err(|err| classify(err, store, limits, &sandboxes))
                    .and_then(|answer| {
                        answer.map_err(|error| {
                            InvokeError::Guest(messaging::describe_handler_error(&error))
                        })
                    });
                if let Err(err) = &result {
                    span.set_error(err.to_string());
                }
                span.end();
                result
            })
        })
        .await
    }
}
