//! The messaging capability (`wasi:messaging@0.2.0-draft`: the `client` and `message`
//! resources and `producer.send`). A component publishes only to the queues its manifest lists
//! in `publish`; sending to any other is refused with `permission-denied` and logged. Queue
//! names are the app's words: the host puts them in its tenant's space (`TENANT/orders`), so
//! tenants never reach each other's queues. A backend failure (Redis down, a full queue) reaches
//! the guest as `error::connection`, never as a trap.
//!
//! The consuming side: the queue trigger hands a received message to a fresh instance
//! ([`incoming`]) and calls the component's `incoming-handler` export with it
//! ([`HandlerIndices`], found at load).
//!
//! Messages a guest builds live in the host until sent or dropped, outside the guest's memory
//! limit, so an instance may hold at most [`MAX_HELD_BYTES`] of them: past that, making or
//! growing one traps.

use std::collections::HashMap;
use std::sync::Arc;

use skiff_manifest::Component;
use skiff_store::{Queues, StoreError};
use wasmtime::component::{Linker, Resource};

use super::{
    Capability, CapabilityCtx, Ctx, HasCapability, InstanceIdentity, LoadContext, warn_for,
};
use crate::error::LoadError;

mod bindings {
    wasmtime::component::bindgen!({
        path: "wit",
        world: "skiff:host/messaging",
        imports: { default: async | trappable },
        exports: { default: async },
        with: {
            "wasi:messaging/types@0.2.0-draft.client": super::Client,
            "wasi:messaging/types@0.2.0-draft.message": super::Message,
        },
    });
}
use bindings::wasi::messaging::{producer, types};

/// Where a component's `wasi:messaging/incoming-handler` export is, found once at load.
pub(crate) use bindings::MessagingIndices as HandlerIndices;

/// The most bytes of messages (data and metadata) one instance may hold at once.
pub const MAX_HELD_BYTES: usize = 16 << 20;

/// Where an app's queues are: a backend and the app's place in it (its tenant's name, or the
/// app's own for `skiff up`).
#[derive(Clone)]
pub struct QueueSpace {
    pub queues: Arc<dyn Queues>,
    pub owner: String,
}

impl std::fmt::Debug for QueueSpace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueSpace")
            .field("queues", &self.queues.describe())
            .field("owner", &self.owner)
            .finish()
    }
}

impl QueueSpace {
    /// The backend's name of the app's queue `queue`.
    pub fn queue(&self, queue: &str) -> String {
        format!("{}/{queue}", self.owner)
    }
}

pub(crate) struct Messaging;

impl Capability for Messaging {
    type AppGrant = ();
    type Grant = MessagingGrant;
    type Instance = MessagingState;

    fn grant(
        _: &(),
        load: &LoadContext<'_>,
        component: &Component,
    ) -> Result<MessagingGrant, LoadError> {
        Ok(MessagingGrant {
            space: load.queues.cloned(),
            publish: component.publish.clone().into(),
        })
    }

    fn instance(grant: &MessagingGrant, _: &InstanceIdentity) -> MessagingState {
        MessagingState {
            grant: grant.clone(),
            held_bytes: 0,
        }
    }
}

/// The queues one component may publish to, and where they are.
#[derive(Clone, Default, Debug)]
pub(crate) struct MessagingGrant {
    space: Option<QueueSpace>,
    publish: Arc<[String]>,
}

/// One instance's messaging: its grant, and the bytes of the messages it holds.
pub(crate) struct MessagingState {
    grant: MessagingGrant,
    held_bytes: usize,
}

/// Links `wasi:messaging`'s types and producer.
pub(crate) fn add_to_linker<T: HasCapability<MessagingState> + Send + 'static>(
    linker: &mut Linker<T>,
) -> wasmtime::Result<()> {
    types::add_to_linker::<T, Ctx<MessagingState>>(linker, T::capability)?;
    producer::add_to_linker::<T, Ctx<MessagingState>>(linker, T::capability)
}

/// A connection as the guest sees it. Every client reaches the same queues (those of the
/// component's app), whatever name it was made with.
pub struct Client;

/// A message a guest built, or received.
#[derive(Debug, Default)]
pub struct Message {
    pub(crate) topic: Option<String>,
    pub(crate) inner: skiff_store::Message,
}

impl Message {
    /// What the message holds in the host: its data, content type and metadata, each
    /// metadata entry with its own size too, so that empty entries are not free.
    fn bytes(&self) -> usize {
        self.inner.data.len()
            + self.inner.content_type.as_ref().map_or(0, String::len)
            + metadata_bytes(&self.inner.metadata)
    }
}

fn metadata_bytes(metadata: &[(String, String)]) -> usize {
    metadata
        .iter()
        .map(|(k, v)| ENTRY_BYTES + k.len() + v.len())
        .sum()
}

/// What one metadata entry takes in the host besides its text.
const ENTRY_BYTES: usize = std::mem::size_of::<(String, String)>();

/// Sets `key` to `value`: a key once, its last value.
fn upsert(metadata: &mut Vec<(String, String)>, key: String, value: String) {
    match metadata.iter_mut().find(|(k, _)| *k == key) {
        Some(entry) => entry.1 = value,
        None => metadata.push((key, value)),
    }
}

/// Puts `message`, received from the app's queue `queue`, in a fresh instance's table, for
/// its handler to be called with. It counts toward what the instance may hold, as a message
/// the guest built does.
pub(crate) fn incoming<T: HasCapability<MessagingState>>(
    state: &mut T,
    queue: &str,
    message: skiff_store::Message,
) -> wasmtime::Result<Resource<Message>> {
    let mut ctx = state.capability();
    let message = Message {
        topic: Some(queue.to_string()),
        inner: message,
    };
    ctx.hold(0, message.bytes())?;
    Ok(ctx.table.push(message)?)
}

/// The metadata key that carries a message's place in its trace, as the `traceparent` header
/// does a request's (W3C Trace Context).
pub const TRACEPARENT: &str = "traceparent";

/// Where a received message's producer was in its trace (its `traceparent` metadata), as a
/// header value for the consumer's trace to continue from; `None` if it carries none usable.
pub fn message_traceparent(metadata: &[(String, String)]) -> Option<http::HeaderValue> {
    metadata
        .iter()
        .find(|(key, _)| key == TRACEPARENT)
        .and_then(|(_, value)| http::HeaderValue::from_str(value).ok())
}

/// Puts the publishing call's place in its trace into the message's metadata, unless the guest
/// set one itself (or the message has no room left): its consumer's trace continues from it.
fn carry_trace(trace: &crate::TraceContext, metadata: &mut Vec<(String, String)>) {
    if metadata.len() >= skiff_store::queue::MAX_METADATA_ENTRIES
        || metadata.iter().any(|(key, _)| key == TRACEPARENT)
    {
        return;
    }
    let mut headers = http::HeaderMap::new();
    trace.inject(&mut headers);
    if let Some(value) = headers.get(TRACEPARENT).and_then(|v| v.to_str().ok()) {
        metadata.push((TRACEPARENT.to_string(), value.to_string()));
    }
}

/// What the guest's handler said, for a log line: its error's case and text.
pub(crate) fn describe_handler_error(error: &types::Error) -> String {
    match error {
        types::Error::Timeout => "timeout".to_string(),
        types::Error::Connection(why) => format!("connection: {why}"),
        types::Error::PermissionDenied(why) => format!("permission denied: {why}"),
        types::Error::Other(why) => why.clone(),
    }
}

type Outcome<T> = wasmtime::Result<Result<T, types::Error>>;

impl CapabilityCtx<'_, MessagingState> {
    /// Changes message `handle` by `change`, keeping what the instance holds in bounds.
    fn change(
        &mut self,
        handle: &Resource<Message>,
        change: impl FnOnce(&mut Message),
    ) -> wasmtime::Result<()> {
        let message = self.table.get_mut(handle)?;
        let before = message.bytes();
        change(message);
        let after = message.bytes();
        self.hold(before, after)
    }

    /// Accounts for a message going from `before` to `after` bytes; traps past the bound.
    fn hold(&mut self, before: usize, after: usize) -> wasmtime::Result<()> {
        self.state.held_bytes = self.fits(before, after)?;
        Ok(())
    }

    /// What the instance would hold with a message going from `before` to `after` bytes;
    /// an error (a trap) past the bound.
    fn fits(&self, before: usize, after: usize) -> wasmtime::Result<usize> {
        let held = self
            .state
            .held_bytes
            .saturating_sub(before)
            .saturating_add(after);
        if held > MAX_HELD_BYTES {
            return Err(wasmtime::format_err!(
                "the instance holds {held} bytes of messages, more than the {MAX_HELD_BYTES} \
                 it may: send or drop messages before making more"
            ));
        }
        Ok(held)
    }
}

impl types::Host for CapabilityCtx<'_, MessagingState> {}

impl types::HostClient for CapabilityCtx<'_, MessagingState> {
    async fn connect(&mut self, _name: String) -> Outcome<Resource<Client>> {
        Ok(Ok(self.table.push(Client)?))
    }

    async fn disconnect(&mut self, _client: Resource<Client>) -> Outcome<()> {
        Ok(Ok(()))
    }

    async fn drop(&mut self, client: Resource<Client>) -> wasmtime::Result<()> {
        self.table.delete(client)?;
        Ok(())
    }
}

impl types::HostMessage for CapabilityCtx<'_, MessagingState> {
    async fn new(&mut self, data: Vec<u8>) -> wasmtime::Result<Resource<Message>> {
        self.hold(0, data.len())?;
        let message = Message {
            topic: None,
            inner: skiff_store::Message {
                data,
                ..Default::default()
            },
        };
        Ok(self.table.push(message)?)
    }

    async fn topic(&mut self, message: Resource<Message>) -> wasmtime::Result<Option<String>> {
        Ok(self.table.get(&message)?.topic.clone())
    }

    async fn content_type(
        &mut self,
        message: Resource<Message>,
    ) -> wasmtime::Result<Option<String>> {
        Ok(self.table.get(&message)?.inner.content_type.clone())
    }

    async fn set_content_type(
        &mut self,
        message: Resource<Message>,
        content_type: String,
    ) -> wasmtime::Result<()> {
        self.change(&message, |m| m.inner.content_type = Some(content_type))
    }

    async fn data(&mut self, message: Resource<Message>) -> wasmtime::Result<Vec<u8>> {
        Ok(self.table.get(&message)?.inner.data.clone())
    }

    async fn set_data(
        &mut self,
        message: Resource<Message>,
        data: Vec<u8>,
    ) -> wasmtime::Result<()> {
        self.change(&message, |m| m.inner.data = data)
    }

    async fn metadata(
        &mut self,
        message: Resource<Message>,
    ) -> wasmtime::Result<Option<types::Metadata>> {
        let metadata = &self.table.get(&message)?.inner.metadata;
        Ok((!metadata.is_empty()).then(|| metadata.clone()))
    }

    async fn add_metadata(
        &mut self,
        message: Resource<Message>,
        key: String,
        value: String,
    ) -> wasmtime::Result<()> {
        self.change(&message, |m| upsert(&mut m.inner.metadata, key, value))
    }

    async fn set_metadata(
        &mut self,
        message: Resource<Message>,
        meta: types::Metadata,
    ) -> wasmtime::Result<()> {
        // Bounded before any work on what the guest handed in: the list may be long.
        let before = self.table.get(&message)?.bytes();
        self.fits(before, before.saturating_add(metadata_bytes(&meta)))?;
        self.change(&message, |m| {
            // A key once, its last value, in the order keys first came: as `add-metadata`
            // would leave it, in one pass.
            let mut at: HashMap<String, usize> = HashMap::with_capacity(meta.len());
            let mut metadata: Vec<(String, String)> = Vec::with_capacity(meta.len());
            for (key, value) in meta {
                match at.get(&key) {
                    Some(&i) => metadata[i].1 = value,
                    None => {
                        at.insert(key.clone(), metadata.len());
                        metadata.push((key, value));
                    }
                }
            }
            m.inner.metadata = metadata;
        })
    }

    async fn remove_metadata(
        &mut self,
        message: Resource<Message>,
        key: String,
    ) -> wasmtime::Result<()> {
        self.change(&message, |m| m.inner.metadata.retain(|(k, _)| *k != key))
    }

    async fn drop(&mut self, message: Resource<Message>) -> wasmtime::Result<()> {
        let message = self.table.delete(message)?;
        self.hold(message.bytes(), 0)
    }
}

impl producer::Host for CapabilityCtx<'_, MessagingState> {
    async fn send(
        &mut self,
        _client: Resource<Client>,
        topic: String,
        message: Resource<Message>,
    ) -> Outcome<()> {
        let mut message = self.table.delete(message)?;
        self.hold(message.bytes(), 0)?;
        if !self.state.grant.publish.contains(&topic) {
            warn_for!(
                self.call.identity,
                "denied publishing to queue `{topic}`: it is not in the component's publish list"
            );
            return Ok(Err(types::Error::PermissionDenied(format!(
                "this component may not publish to `{topic}`: list it in the component's \
                 `publish` in skiff.toml"
            ))));
        }
        let Some(space) = self.state.grant.space.clone() else {
            return Ok(Err(types::Error::Connection(
                "this host has no queues for this app".to_string(),
            )));
        };
        carry_trace(&self.call.trace, &mut message.inner.metadata);
        match space
            .queues
            .publish(&space.queue(&topic), &message.inner)
            .await
        {
            Ok(()) => Ok(Ok(())),
            Err(StoreError::Unavailable(why)) => {
                warn_for!(
                    self.call.identity,
                    "publishing to queue `{topic}` failed: {why}"
                );
                Ok(Err(types::Error::Connection(why)))
            }
            Err(StoreError::Invalid(why)) => Ok(Err(types::Error::Other(why))),
        }
    }
}
