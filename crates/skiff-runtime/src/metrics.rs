//! Prometheus metrics of the sandbox itself, per tenant, app and component: how long
//! instantiation takes, and the outbound HTTP and key-value calls guests make. (The HTTP
//! trigger counts requests and their outcomes; these are what happens inside one.)
//!
//! Labels are bounded: components are what is deployed, and outcomes and operations are fixed
//! sets, never guest-chosen strings.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ComponentLabels {
    tenant: String,
    app: String,
    component: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutboundLabels {
    tenant: String,
    app: String,
    component: String,
    /// `response`, `denied` or `failed`.
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KeyValueLabels {
    tenant: String,
    app: String,
    component: String,
    /// `get`, `set`, `delete`, `exists`, `list_keys`, `increment`, `get_many`, `set_many`,
    /// `delete_many`, `compare_and_swap`, `open`.
    operation: &'static str,
    /// `ok`, `denied` or `error`.
    outcome: &'static str,
}

/// How an outbound HTTP call ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutboundOutcome {
    /// A response head came back (whatever its status).
    Response,
    /// Refused by the component's grant, or by the address it resolved to.
    Denied,
    /// DNS, connection, TLS or protocol failure, or a timeout.
    Failed,
}

/// How a key-value call ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyValueOutcome {
    Ok,
    /// The label is not in the component's `key_value_stores`.
    Denied,
    /// The backend refused or failed (too large, not a number, unavailable).
    Error,
}

impl OutboundOutcome {
    const ALL: [OutboundOutcome; 3] = [Self::Response, Self::Denied, Self::Failed];

    fn label(self) -> &'static str {
        match self {
            Self::Response => "response",
            Self::Denied => "denied",
            Self::Failed => "failed",
        }
    }
}

impl KeyValueOutcome {
    const ALL: [KeyValueOutcome; 3] = [Self::Ok, Self::Denied, Self::Error];

    fn label(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Denied => "denied",
            Self::Error => "error",
        }
    }
}

/// The runtime's metric families, registered once per host.
pub struct RuntimeMetrics {
    instantiate: Family<ComponentLabels, Histogram, fn() -> Histogram>,
    outbound: Family<OutboundLabels, Counter>,
    key_value: Family<KeyValueLabels, Counter>,
    /// Components that have series, so that an app's can be dropped when it goes.
    known: Mutex<HashSet<ComponentLabels>>,
}

fn instantiate_histogram() -> Histogram {
    // 5 µs (a pooled slot, a small component) to about 80 ms (a big one mapped cold).
    Histogram::new(exponential_buckets(0.000_005, 2.0, 15))
}

const OPERATIONS: [&str; 11] = [
    "open",
    "get",
    "set",
    "delete",
    "exists",
    "list_keys",
    "increment",
    "get_many",
    "set_many",
    "delete_many",
    "compare_and_swap",
];

impl RuntimeMetrics {
    /// Registers the families in `registry`, under the `skiff_` prefix.
    pub fn register(registry: &mut Registry) -> Arc<RuntimeMetrics> {
        let metrics = RuntimeMetrics {
            instantiate: Family::new_with_constructor(instantiate_histogram),
            outbound: Family::default(),
            key_value: Family::default(),
            known: Mutex::default(),
        };
        let registry = registry.sub_registry_with_prefix("skiff");
        registry.register(
            "instantiate_seconds",
            "Time to make a fresh instance of a component for one request",
            metrics.instantiate.clone(),
        );
        registry.register(
            "outbound_requests",
            "Outbound HTTP requests made by guests, by outcome",
            metrics.outbound.clone(),
        );
        registry.register(
            "keyvalue_operations",
            "Key-value calls made by guests, by operation and outcome",
            metrics.key_value.clone(),
        );
        Arc::new(metrics)
    }

    /// The handles one component's instances update.
    pub fn for_component(
        self: &Arc<Self>,
        tenant: &str,
        app: &str,
        component: &str,
    ) -> ComponentMetrics {
        let labels = ComponentLabels {
            tenant: tenant.to_string(),
            app: app.to_string(),
            component: component.to_string(),
        };
        self.known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(labels.clone());
        ComponentMetrics {
            instantiate: self.instantiate.get_or_create(&labels).clone(),
            labels: Arc::new(labels),
            metrics: self.clone(),
        }
    }

    /// Drops every series of one app (it was deleted).
    pub fn forget_app(&self, tenant: &str, app: &str) {
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        known.retain(|labels| {
            if labels.tenant != tenant || labels.app != app {
                return true;
            }
            self.instantiate.remove(labels);
            for outcome in OutboundOutcome::ALL {
                self.outbound.remove(&labels.outbound(outcome));
            }
            for operation in OPERATIONS {
                for outcome in KeyValueOutcome::ALL {
                    self.key_value.remove(&labels.key_value(operation, outcome));
                }
            }
            false
        });
    }
}

impl ComponentLabels {
    fn outbound(&self, outcome: OutboundOutcome) -> OutboundLabels {
        OutboundLabels {
            tenant: self.tenant.clone(),
            app: self.app.clone(),
            component: self.component.clone(),
            outcome: outcome.label(),
        }
    }

    fn key_value(&self, operation: &'static str, outcome: KeyValueOutcome) -> KeyValueLabels {
        KeyValueLabels {
            tenant: self.tenant.clone(),
            app: self.app.clone(),
            component: self.component.clone(),
            operation,
            outcome: outcome.label(),
        }
    }
}

/// Where an app's components count: the families, and the tenant the app belongs to (empty
/// for none).
#[derive(Clone)]
pub struct MetricsScope {
    pub metrics: Arc<RuntimeMetrics>,
    pub tenant: Arc<str>,
}

impl MetricsScope {
    pub(crate) fn for_component(&self, app: &str, component: &str) -> ComponentMetrics {
        self.metrics.for_component(&self.tenant, app, component)
    }
}

impl std::fmt::Debug for MetricsScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("MetricsScope").field(&self.tenant).finish()
    }
}

/// One component's metric handles. Instantiation, on every request, updates its own
/// histogram without a lookup; outbound and key-value calls, each costing far more than a
/// lookup, find their counter in the family.
#[derive(Clone)]
pub struct ComponentMetrics {
    instantiate: Histogram,
    labels: Arc<ComponentLabels>,
    metrics: Arc<RuntimeMetrics>,
}

impl std::fmt::Debug for ComponentMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ComponentMetrics")
            .field(&self.labels)
            .finish()
    }
}

impl ComponentMetrics {
    pub(crate) fn instantiated(&self, seconds: f64) {
        self.instantiate.observe(seconds);
    }

    pub(crate) fn outbound(&self, outcome: OutboundOutcome) {
        self.metrics
            .outbound
            .get_or_create(&self.labels.outbound(outcome))
            .inc();
    }

    pub(crate) fn key_value(&self, operation: &'static str, outcome: KeyValueOutcome) {
        debug_assert!(OPERATIONS.contains(&operation), "{operation}");
        self.metrics
            .key_value
            .get_or_create(&self.labels.key_value(operation, outcome))
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrape(registry: &Registry) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
        text
    }

    #[test]
    fn calls_are_counted_per_component_and_forgotten_with_their_app() {
        let mut registry = Registry::default();
        let metrics = RuntimeMetrics::register(&mut registry);
        let web = metrics.for_component("acme", "shop", "web");
        let other = metrics.for_component("acme", "blog", "web");
        web.instantiated(0.000_02);
        web.outbound(OutboundOutcome::Response);
        web.outbound(OutboundOutcome::Response);
        web.outbound(OutboundOutcome::Denied);
        web.key_value("get", KeyValueOutcome::Ok);
        other.key_value("open", KeyValueOutcome::Denied);
        let text = scrape(&registry);
        assert!(text.contains(
            r#"skiff_outbound_requests_total{tenant="acme",app="shop",component="web",outcome="response"} 2"#
        ), "{text}");
        assert!(text.contains(
            r#"skiff_keyvalue_operations_total{tenant="acme",app="shop",component="web",operation="get",outcome="ok"} 1"#
        ), "{text}");
        assert!(
            text.contains(
                r#"skiff_instantiate_seconds_count{tenant="acme",app="shop",component="web"} 1"#
            ),
            "{text}"
        );

        metrics.forget_app("acme", "shop");
        let text = scrape(&registry);
        assert!(!text.contains(r#"app="shop""#), "{text}");
        assert!(text.contains(r#"app="blog""#), "{text}");
    }
}
