//! Queues: `publish` (the queues a component may send to through `wasi:messaging`'s producer)
//! and `[component.<id>.consume]` (the queue a component consumes, and how). Checked here like
//! every other field, so a bad name, a zero concurrency or a redelivery time shorter than the
//! component's timeout is a manifest error naming the field and the fix.
//!
//! Queue names are an app's own words (`orders`); the host places them in its tenant's space,
//! so two tenants' `orders` are two queues.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::component::ComponentCx;
use crate::raw::RawConsume;
use crate::units::parse_timeout;
use crate::{Limits, Location, ManifestError};

/// The longest queue name.
pub const MAX_QUEUE_NAME: usize = 63;
/// The most messages one component handles at once on one host.
pub const MAX_CONSUME_CONCURRENCY: u32 = 256;
/// The most messages fetched in one read.
pub const MAX_CONSUME_BATCH: u32 = 1000;
/// The most attempts at one message.
pub const MAX_ATTEMPTS: u32 = 100;

/// `[component.<id>.consume]`, validated: a component consuming a queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Consume {
    /// Index into [`crate::App::components`].
    pub component: usize,
    pub queue: String,
    /// Deliver each message as an HTTP `POST` to this path (for toolchains without
    /// `wasi:messaging` bindings); `None`: call the component's
    /// `wasi:messaging/incoming-handler`.
    pub path: Option<String>,
    /// Messages handled at once, per host.
    pub concurrency: u32,
    /// Messages fetched from the queue in one read, at most.
    pub batch: u32,
    /// Attempts at a message before it goes to `dead_letter`.
    pub max_attempts: u32,
    /// A message whose handler has neither succeeded nor failed this long after it was
    /// delivered (its host died, or hangs) is delivered again.
    pub retry_after: Duration,
    /// A message whose handler failed is delivered again this long after, doubled at each
    /// further failure, never later than `retry_after`.
    #[serde(default = "default_retry_delay")]
    pub retry_delay: Duration,
    /// Where messages go after `max_attempts` failures.
    pub dead_letter: String,
    /// Where the table is written, for errors found later.
    pub location: Location,
}

/// The wait before a failed message's next attempt, unless the table says: one second, then
/// two, four...
pub const DEFAULT_RETRY_DELAY: Duration = Duration::from_secs(1);

fn default_retry_delay() -> Duration {
    DEFAULT_RETRY_DELAY
}

impl Consume {
    /// How long after its `attempt`-th delivery failed a message is delivered again:
    /// `retry_delay`, doubled at each further failure, never later than `retry_after`.
    pub fn retry_delay_after(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(30);
        self.retry_delay
            .saturating_mul(1 << doublings)
            .min(self.retry_after)
    }
}

/// Whether `name` is a queue name: lowercase letters, digits, `-`, `_` and `.`, starting with
/// a letter or digit, at most [`MAX_QUEUE_NAME`] bytes.
pub fn is_queue_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && name.len() <= MAX_QUEUE_NAME
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
}

const QUEUE_NAME_HELP: &str =
    "use lowercase letters, digits, `-`, `_` and `.` (at most 63), e.g. \"orders\" or \"results\"";

impl ComponentCx<'_> {
    /// The `publish` list: queue names, each once.
    pub(crate) fn publish(&self, raw: Vec<Spanned<String>>) -> Result<Vec<String>, ManifestError> {
        let mut out: Vec<String> = Vec::with_capacity(raw.len());
        for (i, name) in raw.into_iter().enumerate() {
            let field = format!("component.{}.publish[{i}]", self.id);
            if !is_queue_name(name.get_ref()) {
                return Err(self.err(
                    name.span(),
                    &field,
                    format!("`{}` is not a queue name", name.get_ref()),
                    QUEUE_NAME_HELP,
                ));
            }
            if out.contains(name.get_ref()) {
                return Err(self.err(
                    name.span(),
                    &field,
                    format!("`{}` is listed twice", name.get_ref()),
                    "list each queue once",
                ));
            }
            out.push(name.into_inner());
        }
        Ok(out)
    }

    /// `[component.<id>.consume]`; `component` is its index in the app, `limits` its limits
    /// (a redelivery must not come while a handler may still be running).
    pub(crate) fn consume(
        &self,
        raw: Spanned<RawConsume>,
        component: usize,
        limits: &Limits,
    ) -> Result<Consume, ManifestError> {
        let field = format!("component.{}.consume", self.id);
        let span = raw.span();
        let location = Location::from_offset(self.src.text, span.start);
        let raw = raw.into_inner();
        let Some(queue) = raw.queue else {
            return Err(self.err(
                span,
                &format!("{field}.queue"),
                "missing `queue` (the queue to consume)",
                "e.g. queue = \"orders\"",
            ));
        };
        if !is_queue_name(queue.get_ref()) {
            return Err(self.err(
                queue.span(),
                &format!("{field}.queue"),
                format!("`{}` is not a queue name", queue.get_ref()),
                QUEUE_NAME_HELP,
            ));
        }
        let queue_name = queue.get_ref().clone();
        let bounded = |value: Option<Spanned<u32>>, name: &str, default: u32, max: u32| match value
        {
            None => Ok(default),
            Some(v) if (1..=max).contains(v.get_ref()) => Ok(*v.get_ref()),
            Some(v) => Err(self.err(
                v.span(),
                &format!("{field}.{name}"),
                format!("{} is out of range", v.get_ref()),
                format!("write a number from 1 to {max}"),
            )),
        };
        let concurrency = bounded(raw.concurrency, "concurrency", 1, MAX_CONSUME_CONCURRENCY)?;
        let batch = bounded(raw.batch, "batch", concurrency.min(10), MAX_CONSUME_BATCH)?;
        let max_attempts = bounded(raw.max_attempts, "max_attempts", 5, MAX_ATTEMPTS)?;
        let retry_after = match raw.retry_after {
            None => limits.timeout.map_or(Duration::from_secs(30), |t| {
                (t + Duration::from_secs(5)).max(Duration::from_secs(30))
            }),
            Some(text) => {
                let at = format!("{field}.retry_after");
                let parsed = parse_timeout(text.get_ref()).map_err(|why| {
                    self.err(
                        text.span(),
                        &at,
                        format!("`{}`: {why}", text.get_ref()),
                        "write a duration such as \"30s\" or \"5m\"",
                    )
                })?;
                if let Some(timeout) = limits.timeout
                    && parsed <= timeout
                {
                    return Err(self.err(
                        text.span(),
                        &at,
                        format!(
                            "{} is not longer than the component's timeout ({}): a message \
                             would be delivered again while its handler may still run",
                            text.get_ref(),
                            humantime::format_duration(timeout)
                        ),
                        "make retry_after longer than limits.timeout, e.g. a few seconds more",
                    ));
                }
                parsed
            }
        };
        let retry_delay = match raw.retry_delay {
            None => DEFAULT_RETRY_DELAY,
            Some(text) if text.get_ref().trim() == "0" || text.get_ref().trim() == "0s" => {
                Duration::ZERO
            }
            Some(text) => parse_timeout(text.get_ref()).map_err(|why| {
                self.err(
                    text.span(),
                    &format!("{field}.retry_delay"),
                    format!("`{}`: {why}", text.get_ref()),
                    "write a duration such as \"1s\" or \"500ms\", or \"0s\" to retry at once",
                )
            })?,
        };
        let dead_letter = match raw.dead_letter {
            None => format!("{queue_name}-dead"),
            Some(name) => {
                let at = format!("{field}.dead_letter");
                if !is_queue_name(name.get_ref()) {
                    return Err(self.err(
                        name.span(),
                        &at,
                        format!("`{}` is not a queue name", name.get_ref()),
                        QUEUE_NAME_HELP,
                    ));
                }
                if *name.get_ref() == queue_name {
                    return Err(self.err(
                        name.span(),
                        &at,
                        "the dead-letter queue is the queue itself: a failing message would \
                         come back for ever",
                        format!("name another queue, e.g. \"{queue_name}-dead\""),
                    ));
                }
                name.into_inner()
            }
        };
        let path = match raw.path {
            None => None,
            Some(path) => {
                let p = path.get_ref();
                if !p.starts_with('/') || !p.chars().all(|c| c.is_ascii_graphic()) || p.len() > 1024
                {
                    return Err(self.err(
                        path.span(),
                        &format!("{field}.path"),
                        format!("`{p}` is not a request path"),
                        "write the path each message is POSTed to, starting with `/`, e.g. \
                         path = \"/consume\"",
                    ));
                }
                Some(path.into_inner())
            }
        };
        Ok(Consume {
            component,
            queue: queue.into_inner(),
            path,
            concurrency,
            batch,
            max_attempts,
            retry_after,
            retry_delay,
            dead_letter,
            location,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_names() {
        for good in [
            "orders",
            "a",
            "results.v2",
            "dead_letters",
            "0-queue",
            &"q".repeat(63),
        ] {
            assert!(is_queue_name(good), "{good}");
        }
        for bad in ["", "Orders", "-x", ".x", "a b", "a/b", "ü", &"q".repeat(64)] {
            assert!(!is_queue_name(bad), "{bad}");
        }
    }
}
