//! The queue trigger: for each app it is given, one task per `consume` table takes messages
//! from the queue and hands each to the component, at most `concurrency` at once on this host.
//!
//! Delivery is at least once, and nothing is buffered without bound:
//! - the task asks the queue only for as many messages as it has free permits (never more than
//!   `batch`), so a slow handler slows the reading, and unread messages wait in the queue
//!   (whose depth is bounded: a full queue refuses its producers);
//! - a message is acknowledged only after its handler succeeded: the `wasi:messaging` handler
//!   returned `ok`, or the `POST` to the consumer's `path` was answered 2xx;
//! - a handler that fails leaves its message in the queue, which delivers it again (here or on
//!   another host) after `retry_delay`, doubled at each further failure (never later than
//!   `retry_after`); a message whose host died or hung comes back once `retry_after` has
//!   passed;
//! - a message whose attempt `max_attempts` failed, or that was delivered more often than that
//!   without an answer, goes to the `dead_letter` queue with why.
//!
//! A handler is a unit of work like a request: the same admission, limits, grants, logs, usage,
//! metrics and traces. One that is not admitted (the component, its tenant or the host is at
//! its limit) waits for a permit for as long as it can still finish before `retry_after` (that
//! is, `retry_after` less the component's timeout) before counting as failed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use opentelemetry::KeyValue;
use opentelemetry::trace::SpanKind;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use skiff_http::{HostStopping, HttpApp, NotAdmitted, QueuedMessage};
use skiff_manifest::Consume;
use skiff_runtime::{
    InvokeError, QueueSpace, RequestInfo, TRACEPARENT, TraceContext, message_traceparent,
};
use skiff_store::{Consumer, Delivery};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use crate::response::drain;
use crate::running::{RunningApps, app_key};

/// How long one read waits for a message when the queue is empty: how often an idle consumer
/// asks again (and picks up messages whose handlers' hosts died).
const RECEIVE_WAIT: Duration = Duration::from_secs(2);

/// Waits after a failed read (the backend is down): doubling from the first to the last.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_LAST: Duration = Duration::from_secs(5);

/// How much longer than its handler may run a message waits before it is delivered again,
/// when its `retry_after` is not longer than that.
const REDELIVERY_MARGIN: Duration = Duration::from_secs(5);

/// How often a handler that was not admitted tries again.
const ADMISSION_RETRY: Duration = Duration::from_millis(50);

/// Queue messages' request ids start here, above a listener's (which count from 1) and a
/// scheduler's, so a log line's id names one unit of work.
const FIRST_REQUEST_ID: u64 = 2 << 48;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MessageLabels {
    tenant: String,
    app: String,
    component: String,
    queue: String,
    outcome: &'static str,
}

/// `skiff_queue_messages` by outcome, per consumer: `ok` (handled and acknowledged),
/// `failed` (left for another attempt), `dead` (moved to the dead-letter queue). Handlers
/// that are requests (a `path`) count with requests too, under the route `consume[<queue>]`.
pub struct QueueMetrics {
    messages: Family<MessageLabels, Counter>,
}

/// A consumer's series, one per outcome, in the order `ok`, `failed`, `dead`.
type OutcomeLabels = [MessageLabels; 3];

/// The labels of the consumer of table `consume` of `tenant`'s app `app`.
fn outcome_labels(tenant: &str, app: &skiff_manifest::App, consume: &Consume) -> OutcomeLabels {
    ["ok", "failed", "dead"].map(|outcome| MessageLabels {
        tenant: tenant.to_string(),
        app: app.name.clone(),
        component: component_id(app, consume),
        queue: consume.queue.clone(),
        outcome,
    })
}

/// What became of a message, for [`QueueMetrics`]: an index into [`OutcomeLabels`].
#[derive(Clone, Copy)]
enum Outcome {
    Ok = 0,
    Failed = 1,
    Dead = 2,
}

impl QueueMetrics {
    pub fn register(registry: &mut Registry) -> Arc<QueueMetrics> {
        let metrics = QueueMetrics {
            messages: Family::default(),
        };
        registry.sub_registry_with_prefix("skiff_queue").register(
            "messages",
            "Queue messages handled on this host, by outcome",
            metrics.messages.clone(),
        );
        Arc::new(metrics)
    }
}

/// Runs the queue consumers of the apps it is given, until they are taken away or it is
/// dropped.
pub struct Consumers {
    host: Arc<str>,
    metrics: Option<Arc<QueueMetrics>>,
    next_request_id: AtomicU64,
    /// Each app's readers, one per consumer. Handlers already running go on to their
    /// acknowledgement when they stop (they hold the app); only reading stops.
    apps: RunningApps,
    /// Handlers running, of every app, and a wake-up for whoever waits for them to end.
    in_flight: AtomicUsize,
    idle: Notify,
    /// Set by [`Consumers::stop`]: no app is started after it.
    stopped: AtomicBool,
}

/// One handler counted as running, until dropped.
struct InFlight(Arc<Consumers>);

impl InFlight {
    fn start(consumers: &Arc<Consumers>) -> InFlight {
        consumers.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(consumers.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// What one consumer's tasks need.
struct Job {
    consumers: Arc<Consumers>,
    app: Arc<HttpApp>,
    /// Index into the app's `consumers`.
    index: usize,
    consumer: Arc<dyn Consumer>,
    /// The backend's name of the dead-letter queue.
    dead_letter: String,
    /// `<tenant>/<app>/<queue>`, for log lines.
    key: String,
    tenant: String,
    /// Its metric series, made once rather than per message.
    labels: OutcomeLabels,
    /// How long the handler may run: the component's timeout.
    timeout: Duration,
    /// How long after a delivery the message is delivered again if not acknowledged: the
    /// table's `retry_after`, or longer if the component may run longer than that (see
    /// [`redelivery_after`]).
    retry_after: Duration,
}

impl Consumers {
    /// Consumers for host `host`, named after it in the queues.
    pub fn new(host: impl Into<Arc<str>>, metrics: Option<Arc<QueueMetrics>>) -> Arc<Consumers> {
        Arc::new(Consumers {
            host: host.into(),
            metrics,
            next_request_id: AtomicU64::new(FIRST_REQUEST_ID),
            apps: RunningApps::default(),
            in_flight: AtomicUsize::new(0),
            idle: Notify::new(),
            stopped: AtomicBool::new(false),
        })
    }

    /// Runs `app`'s consumers under `tenant` (empty outside a multi-tenant host), on the
    /// queues of `space`, instead of those of the app's earlier version, if any. Giving the
    /// same loaded app again changes nothing. Must be called inside a tokio runtime.
    pub fn set_app(self: &Arc<Self>, tenant: &str, app: Arc<HttpApp>, space: &QueueSpace) {
        if self.stopped.load(Ordering::Acquire) {
            return;
        }
        let name = app.loaded().app().name.clone();
        let key = app_key(tenant, &name);
        let manifest = app.loaded().app().clone();
        let start = || {
            // Checked again here, under the apps' lock that `stop` takes to remove them: an
            // app set while the host stops starts nothing.
            if self.stopped.load(Ordering::Acquire) {
                return Vec::new();
            }
            let mut tasks = Vec::with_capacity(manifest.consumers.len());
            for (index, consume) in manifest.consumers.iter().enumerate() {
                // Unique among the queue's consumers: one per app per host.
                let consumer_name = format!("{}/{name}", self.host);
                let consumer = match space
                    .queues
                    .consumer(&space.queue(&consume.queue), &consumer_name)
                {
                    Ok(consumer) => Arc::from(consumer),
                    Err(why) => {
                        tracing::error!(app = %key, queue = %consume.queue, "cannot consume the queue: {why}");
                        continue;
                    }
                };
                let key = format!("{key}/{}", consume.queue);
                let timeout = app
                    .loaded()
                    .components()
                    .get(consume.component)
                    .map_or(Duration::ZERO, |c| c.timeout());
                let retry_after = redelivery_after(&key, consume.retry_after, timeout);
                let job = Job {
                    consumers: self.clone(),
                    app: app.clone(),
                    index,
                    consumer,
                    dead_letter: space.queue(&consume.dead_letter),
                    key,
                    tenant: tenant.to_string(),
                    labels: outcome_labels(tenant, &manifest, consume),
                    timeout,
                    retry_after,
                };
                tasks.push(tokio::spawn(Arc::new(job).read()));
            }
            tasks
        };
        if self.apps.set(tenant, &app, start) {
            let count = manifest.consumers.len();
            tracing::info!(app = %key, consumers = count, "queue consumers started");
        }
    }

    /// Stops the consumers of `tenant`'s app `name`. With `forget`, its metric series go too
    /// (the app was deleted).
    pub fn remove_app(&self, tenant: &str, name: &str, forget: bool) {
        let Some(removed) = self.apps.remove(tenant, name) else {
            return;
        };
        tracing::info!(app = %app_key(tenant, name), "queue consumers stopped");
        if let (true, Some(metrics)) = (forget, &self.metrics) {
            let manifest = removed.loaded().app();
            for consume in &manifest.consumers {
                for labels in outcome_labels(tenant, manifest, consume) {
                    metrics.messages.remove(&labels);
                }
            }
        }
    }

    /// Stops reading every queue (the host is shutting down), and waits up to `grace` for the
    /// handlers still running to finish and acknowledge their messages. Returns whether they
    /// all did; a message whose handler did not is delivered again later (here after a
    /// restart, or on another host).
    pub async fn stop(&self, grace: Duration) -> bool {
        self.stopped.store(true, Ordering::Release);
        for (tenant, app) in self.apps.list() {
            self.remove_app(&tenant, &app, false);
        }
        let all_done = async {
            loop {
                let notified = self.idle.notified();
                tokio::pin!(notified);
                // Registered before the count is read, so a handler ending in between wakes it.
                notified.as_mut().enable();
                if self.in_flight.load(Ordering::Acquire) == 0 {
                    return;
                }
                notified.await;
            }
        };
        let done = tokio::time::timeout(grace, all_done).await.is_ok();
        if !done {
            tracing::warn!(
                "queue handlers still running after {grace:?} are stopped; their messages are \
                 delivered again"
            );
        }
        done
    }

    /// The apps whose consumers run, as `(tenant, app)`.
    pub fn apps(&self) -> Vec<(String, String)> {
        self.apps.list()
    }
}

/// What a handler's run came to.
enum Handled {
    Ok,
    /// It failed: why, for the log and the dead letter.
    Failed(String),
    /// The host stopped it as it shut down: not the message's fault, and not an attempt that
    /// counts toward the dead letter (it is delivered again, elsewhere or after the restart).
    CutOff,
}

/// Why one try at running a handler did not succeed.
enum Failure {
    /// It was not admitted (the component, its tenant or the host is at its limit): nothing
    /// ran, and it may be tried again soon.
    NotAdmitted(String),
    /// The host is shutting down and stopped it.
    CutOff,
    Failed(String),
}

impl From<InvokeError> for Failure {
    fn from(err: InvokeError) -> Failure {
        match err {
            InvokeError::Overloaded(_) => Failure::NotAdmitted(err.to_string()),
            InvokeError::Stopped => Failure::CutOff,
            err => Failure::Failed(err.to_string()),
        }
    }
}

impl Job {
    fn consume(&self) -> &Consume {
        // `index` was an index of this app's list when the job was made.
        &self.app.loaded().app().consumers[self.index]
    }

    /// Reads messages as permits free up and starts a handler for each, until aborted.
    async fn read(self: Arc<Self>) {
        let consume = self.consume();
        let permits = Arc::new(Semaphore::new(consume.concurrency as usize));
        let batch = consume.batch.max(1) as usize;
        let mut backoff = BACKOFF_FIRST;
        loop {
            // At least one free permit before reading, and as many more as are free now.
            let Ok(first) = permits.clone().acquire_owned().await else {
                return;
            };
            let mut held = vec![first];
            while held.len() < batch {
                match permits.clone().try_acquire_owned() {
                    Ok(permit) => held.push(permit),
                    Err(_) => break,
                }
            }
            let received = self
                .consumer
                .receive(held.len(), self.retry_after, RECEIVE_WAIT)
                .await;
            match received {
                Ok(deliveries) => {
                    backoff = BACKOFF_FIRST;
                    for delivery in deliveries {
                        // A backend that hands back more than asked: the rest are delivered
                        // again after `retry_after`.
                        let Some(permit) = held.pop() else { break };
                        let running = InFlight::start(&self.consumers);
                        tokio::spawn(self.clone().handle(delivery, (permit, running)));
                    }
                }
                Err(why) => {
                    tracing::warn!(consumer = %self.key, "cannot read the queue, trying again in {backoff:?}: {why}");
                    drop(held);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_LAST);
                }
            }
        }
    }

    /// One message: its handler, then its acknowledgement or dead letter. The permit is held,
    /// and the handler counted as running, until all is done.
    async fn handle(
        self: Arc<Self>,
        delivery: Delivery,
        _running: (OwnedSemaphorePermit, InFlight),
    ) {
        let consume = self.consume();
        if delivery.attempt > consume.max_attempts {
            let reason = format!(
                "delivered {} times without an answer (its handler's host died, or it ran past \
                 `retry_after`), more than the {} attempts allowed",
                delivery.attempt, consume.max_attempts
            );
            self.give_up(&delivery, &reason).await;
            return;
        }
        let request_id = self
            .consumers
            .next_request_id
            .fetch_add(1, Ordering::Relaxed);
        let handled = self.run_handler(&delivery, request_id).await;
        match handled {
            Handled::Ok => match self.consumer.ack(&delivery.id).await {
                Ok(()) => {
                    tracing::debug!(consumer = %self.key, request_id, id = %delivery.id, "message handled");
                    self.count(Outcome::Ok);
                }
                Err(why) => {
                    // It will be delivered again: at least once, not exactly once.
                    tracing::warn!(consumer = %self.key, request_id, id = %delivery.id, "the message was handled, but cannot be acknowledged, so it will be delivered again: {why}");
                    self.count(Outcome::Ok);
                }
            },
            Handled::CutOff => {
                tracing::info!(consumer = %self.key, request_id, id = %delivery.id, "the host is shutting down: the message is delivered again after {:?}", self.retry_after);
            }
            Handled::Failed(why) if delivery.attempt >= consume.max_attempts => {
                let reason = format!("attempt {} failed: {why}", delivery.attempt);
                self.give_up(&delivery, &reason).await;
            }
            Handled::Failed(why) => {
                let delay = consume
                    .retry_delay_after(delivery.attempt)
                    .min(self.retry_after);
                let due = match self
                    .consumer
                    .retry_later(&delivery.id, delay, self.retry_after)
                    .await
                {
                    Ok(()) => delay,
                    // It still comes back, once its delivery is `retry_after` old.
                    Err(_) => self.retry_after,
                };
                tracing::warn!(
                    consumer = %self.key, request_id, id = %delivery.id, attempt = delivery.attempt,
                    "the handler failed; the message is delivered again after {due:?}: {why}"
                );
                self.count(Outcome::Failed);
            }
        }
    }

    /// Moves a message to the dead-letter queue.
    async fn give_up(&self, delivery: &Delivery, reason: &str) {
        let dead = &self.consume().dead_letter;
        match self
            .consumer
            .dead_letter(delivery, &self.dead_letter, reason)
            .await
        {
            Ok(()) => {
                tracing::warn!(consumer = %self.key, id = %delivery.id, "message moved to the dead-letter queue `{dead}`: {reason}");
                self.count(Outcome::Dead);
            }
            Err(why) => {
                tracing::error!(consumer = %self.key, id = %delivery.id, "cannot move the message to the dead-letter queue `{dead}`, so it stays: {why}");
                self.count(Outcome::Failed);
            }
        }
    }

    /// Runs the handler, waiting for admission if the component is at its limits.
    async fn run_handler(&self, delivery: &Delivery, request_id: u64) -> Handled {
        let consume = self.consume();
        // Started by then, the handler ends (by its timeout) before the message is due to be
        // delivered again: two hosts never handle one message at once.
        let admission_deadline = Instant::now() + self.retry_after.saturating_sub(self.timeout);
        loop {
            let result = match consume.path {
                Some(_) => self.post(delivery, request_id).await,
                None => self.call_handler(delivery, request_id).await,
            };
            match result {
                Ok(()) => return Handled::Ok,
                Err(Failure::NotAdmitted(_)) if Instant::now() < admission_deadline => {
                    tokio::time::sleep(ADMISSION_RETRY).await;
                }
                Err(Failure::NotAdmitted(why) | Failure::Failed(why)) => {
                    return Handled::Failed(why);
                }
                Err(Failure::CutOff) => return Handled::CutOff,
            }
        }
    }

    /// Calls the component's `wasi:messaging/incoming-handler`.
    async fn call_handler(&self, delivery: &Delivery, request_id: u64) -> Result<(), Failure> {
        let consume = self.consume();
        let Some(component) = self.app.loaded().components().get(consume.component) else {
            return Err(Failure::Failed("no such component".into()));
        };
        // The trace its producer's call carried in the message, or a new one.
        let trace = producer_trace(&delivery.message).child(SpanKind::Consumer, || {
            let mut attributes = vec![
                KeyValue::new("messaging.system", "skiff"),
                KeyValue::new("messaging.operation.type", "process"),
                KeyValue::new("messaging.destination.name", consume.queue.clone()),
                KeyValue::new("messaging.message.id", delivery.id.clone()),
                KeyValue::new(
                    "messaging.message.delivery_attempt",
                    i64::from(delivery.attempt),
                ),
                KeyValue::new("skiff.app", component.app().to_string()),
                KeyValue::new("skiff.component", component.id().to_string()),
                KeyValue::new("skiff.request_id", request_id as i64),
                KeyValue::new("skiff.trigger", "queue"),
            ];
            if !self.tenant.is_empty() {
                attributes.push(KeyValue::new("skiff.tenant", self.tenant.clone()));
            }
            (format!("process {}", consume.queue).into(), attributes)
        });
        let info = RequestInfo {
            request_id,
            https: false,
            trace: trace.clone(),
            calls: Some(self.app.calls()),
        };
        let result = component
            .handle_message(&consume.queue, delivery.message.clone(), info)
            .await;
        if let Err(err) = &result {
            trace.set_error(err.to_string());
        }
        trace.end();
        result.map_err(Failure::from)
    }

    /// Delivers the message as a `POST` to the consumer's `path`: handled if answered 2xx.
    async fn post(&self, delivery: &Delivery, request_id: u64) -> Result<(), Failure> {
        let message = &delivery.message;
        let response = self
            .app
            .deliver_message(QueuedMessage {
                consumer: self.index,
                data: message.data.clone().into(),
                content_type: message.content_type.as_deref(),
                metadata: &message.metadata,
                id: &delivery.id,
                attempt: delivery.attempt,
                request_id,
            })
            .await;
        // Skiff's own refusal (the guest did not run): wait for a permit, as for a handler. A
        // guest's own 503 is a failed attempt like any other.
        let overloaded = response.extensions().get::<NotAdmitted>().is_some();
        if response.extensions().get::<HostStopping>().is_some() {
            return Err(Failure::CutOff);
        }
        let (status, text) = drain(response).await;
        if (200..300).contains(&status) && text.is_none() {
            return Ok(());
        }
        let why = match text {
            Some(text) if (200..300).contains(&status) => text,
            Some(text) => format!("answered {status}: {text}"),
            None => format!("answered {status}"),
        };
        Err(if overloaded {
            Failure::NotAdmitted(why)
        } else {
            Failure::Failed(why)
        })
    }

    fn count(&self, outcome: Outcome) {
        if let Some(metrics) = &self.consumers.metrics {
            metrics
                .messages
                .get_or_create(&self.labels[outcome as usize])
                .inc();
        }
    }
}

/// Where the message's producer was in its trace (its `traceparent` metadata), to continue
/// from; a new trace if it says nothing valid.
fn producer_trace(message: &skiff_store::Message) -> TraceContext {
    let mut headers = http::HeaderMap::new();
    if let Some(value) = message_traceparent(&message.metadata) {
        headers.insert(TRACEPARENT, value);
    }
    TraceContext::inbound(&headers)
}

/// The redelivery time of consumer `key`: its table's `retry_after`, unless the component may
/// run longer than that. The manifest checks `retry_after` against the component's own
/// `limits.timeout`, but a component without one runs under the host's default timeout,
/// which the manifest cannot know: then the message waits that timeout and a margin, so that
/// it is never delivered again while its handler may still run.
fn redelivery_after(key: &str, retry_after: Duration, timeout: Duration) -> Duration {
    if retry_after > timeout {
        return retry_after;
    }
    let longer = timeout.saturating_add(REDELIVERY_MARGIN);
    // The usual case of a component without a timeout (the manifest's check holds for one
    // with), hence no warning.
    tracing::info!(
        consumer = %key,
        "messages are delivered again after {longer:?}: the host's default timeout \
         ({timeout:?}) and {REDELIVERY_MARGIN:?}, as retry_after ({retry_after:?}) is not longer"
    );
    longer
}

fn component_id(app: &skiff_manifest::App, consume: &Consume) -> String {
    app.components
        .get(consume.component)
        .map_or_else(String::new, |c| c.id.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_is_never_due_again_while_its_handler_may_run() {
        let secs = Duration::from_secs;
        // The manifest's own check held: as written.
        assert_eq!(redelivery_after("k", secs(45), secs(40)), secs(45));
        // The host's default timeout is longer than the table's default `retry_after`.
        assert_eq!(redelivery_after("k", secs(30), secs(30)), secs(35));
        assert_eq!(redelivery_after("k", secs(30), secs(60)), secs(65));
    }
}
