//! The manifest as written: serde structs that keep spans, checked afterwards by `validate`.
//!
//! Required fields are `Option` here so that a missing one is reported by us, with the table
//! it belongs to and a fix, rather than by serde.

use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawManifest {
    pub app: Option<Spanned<RawApp>>,
    pub variables: Option<OrderedMap<Spanned<RawVariable>>>,
    pub component: Option<OrderedMap<Spanned<RawComponent>>>,
    pub upstream: Option<OrderedMap<Spanned<RawUpstream>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawVariable {
    pub default: Option<String>,
    pub required: Option<bool>,
    pub secret: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawApp {
    pub name: Option<Spanned<String>>,
    pub version: Option<Spanned<String>>,
    pub description: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawComponent {
    pub source: Option<Spanned<String>>,
    pub route: Option<Spanned<RawRoutes>>,
    pub middleware: Option<Spanned<Vec<Spanned<String>>>>,
    pub environment: Option<OrderedMap<String>>,
    pub files: Option<Vec<Spanned<RawFile>>>,
    pub allowed_outbound_hosts: Option<Vec<Spanned<String>>>,
    pub key_value_stores: Option<Vec<Spanned<String>>>,
    pub variables: Option<OrderedMap<Spanned<String>>>,
    pub limits: Option<Spanned<RawLimits>>,
    pub schedule: Option<Vec<Spanned<RawSchedule>>>,
    pub publish: Option<Vec<Spanned<String>>>,
    pub consume: Option<Spanned<RawConsume>>,
    pub build: Option<Spanned<RawBuild>>,
}

/// `[component.<id>.build]`: `command`, `workdir`, `watch`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBuild {
    pub command: Option<Spanned<String>>,
    pub workdir: Option<Spanned<String>>,
    pub watch: Option<Vec<Spanned<String>>>,
}

/// `[upstream.<name>]`: an HTTP service outside the app that routes send requests to.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawUpstream {
    pub url: Option<Spanned<String>>,
    pub urls: Option<Spanned<Vec<Spanned<String>>>>,
    pub route: Option<Spanned<RawRoutes>>,
    pub middleware: Option<Spanned<Vec<Spanned<String>>>>,
    pub connect_timeout: Option<Spanned<String>>,
    pub timeout: Option<Spanned<String>>,
    pub retries: Option<Spanned<u32>>,
    pub health_check: Option<Spanned<RawHealthCheck>>,
    pub body_idle_timeout: Option<Spanned<String>>,
    pub websocket_limit: Option<Spanned<u32>>,
    pub websocket_idle_timeout: Option<Spanned<String>>,
    pub tls: Option<Spanned<RawUpstreamTls>>,
}

/// `tls = { ca = "certs/ca.pem", server_name = "orders.internal" }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawUpstreamTls {
    pub ca: Option<Spanned<String>>,
    pub server_name: Option<Spanned<String>>,
}

/// `health_check = { path = "/healthz", interval = "5s", timeout = "2s" }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHealthCheck {
    pub path: Option<Spanned<String>>,
    pub interval: Option<Spanned<String>>,
    pub timeout: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSchedule {
    pub cron: Option<Spanned<String>>,
    pub timezone: Option<Spanned<String>>,
    pub path: Option<Spanned<String>>,
    pub args: Option<Vec<String>>,
    pub overlap: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConsume {
    pub queue: Option<Spanned<String>>,
    pub path: Option<Spanned<String>>,
    pub concurrency: Option<Spanned<u32>>,
    pub batch: Option<Spanned<u32>>,
    pub max_attempts: Option<Spanned<u32>>,
    pub retry_after: Option<Spanned<String>>,
    pub retry_delay: Option<Spanned<String>>,
    pub dead_letter: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLimits {
    pub memory: Option<Spanned<RawMemory>>,
    pub timeout: Option<Spanned<String>>,
    pub max_concurrency: Option<Spanned<u32>>,
    pub fuel: Option<Spanned<u64>>,
    pub requests_per_instance: Option<Spanned<u32>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFileTable {
    pub source: Option<Spanned<String>>,
    pub destination: Option<Spanned<String>>,
    pub writable: Option<bool>,
}

/// A TOML table whose keys are user-chosen (component ids, env var names), kept in file order
/// and with the span of each key.
#[derive(Debug)]
pub(crate) struct OrderedMap<V>(pub Vec<(Spanned<String>, V)>);

impl<'de, V: Deserialize<'de>> Deserialize<'de> for OrderedMap<V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V_<V>(PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for V_<V> {
            type Value = OrderedMap<V>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a table")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries = Vec::new();
                while let Some(key) = map.next_key::<Spanned<String>>()? {
                    entries.push((key, map.next_value()?));
                }
                // toml hands tables over sorted by key; errors should come in file order.
                entries.sort_by_key(|(k, _): &(Spanned<String>, V)| k.span().start);
                Ok(OrderedMap(entries))
            }
        }
        d.deserialize_map(V_(PhantomData))
    }
}

/// `route = "/x"` or `route = ["/x", "/y"]`. A single string takes the span of the field.
#[derive(Debug)]
pub(crate) enum RawRoutes {
    One(String),
    Many(Vec<Spanned<String>>),
}

impl<'de> Deserialize<'de> for RawRoutes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V_;
        impl<'de> Visitor<'de> for V_ {
            type Value = RawRoutes;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a route string or an array of route strings")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawRoutes, E> {
                Ok(RawRoutes::One(v.to_string()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawRoutes, A::Error> {
                let mut routes = Vec::new();
                while let Some(r) = seq.next_element()? {
                    routes.push(r);
                }
                Ok(RawRoutes::Many(routes))
            }
        }
        d.deserialize_any(V_)
    }
}

/// A `files` entry: `"static"` or `{ source = "data", destination = "/data", writable = true }`.
#[derive(Debug)]
pub(crate) enum RawFile {
    Short(String),
    Full(RawFileTable),
}

impl<'de> Deserialize<'de> for RawFile {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V_;
        impl<'de> Visitor<'de> for V_ {
            type Value = RawFile;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a path string or a table { source, destination, writable }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawFile, E> {
                Ok(RawFile::Short(v.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawFile, A::Error> {
                // Deserialising through the map access keeps toml's per-key spans.
                RawFileTable::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(RawFile::Full)
            }
        }
        d.deserialize_any(V_)
    }
}

/// `memory = 67108864` or `memory = "64MiB"`.
#[derive(Debug)]
pub(crate) enum RawMemory {
    Bytes(i64),
    Text(String),
}

impl<'de> Deserialize<'de> for RawMemory {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V_;
        impl<'de> Visitor<'de> for V_ {
            type Value = RawMemory;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number of bytes or a size string such as \"64MiB\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawMemory, E> {
                Ok(RawMemory::Bytes(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawMemory, E> {
                Ok(RawMemory::Bytes(i64::try_from(v).unwrap_or(i64::MAX)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawMemory, E> {
                Ok(RawMemory::Text(v.to_string()))
            }
        }
        d.deserialize_any(V_)
    }
}
