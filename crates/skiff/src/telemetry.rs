//! Exporting traces: with `--otlp-endpoint URL` (or `OTEL_EXPORTER_OTLP_ENDPOINT`), every
//! request's spans go to an OpenTelemetry collector over OTLP/HTTP (protobuf), batched on a
//! thread of their own so that a slow collector never slows a request. Off by default.
//! `https://` endpoints are verified against the system's trust store (`SSL_CERT_FILE` and
//! `SSL_CERT_DIR` apply).

use anyhow::{Result, bail};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{SpanExporter, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;

/// The OTLP path of traces, added to an endpoint given as the collector's base URL.
const TRACES_PATH: &str = "/v1/traces";

/// Spans being exported; [`TraceExport::shutdown`] sends what is still queued.
pub struct TraceExport {
    provider: SdkTracerProvider,
    url: String,
}

/// Starts exporting spans to the collector at `endpoint`: its base URL, as
/// `OTEL_EXPORTER_OTLP_ENDPOINT` has it (`http://localhost:4318`), or the full URL of its
/// traces (ending in `/v1/traces`).
pub fn export_traces(endpoint: &str) -> Result<TraceExport> {
    let url = traces_url(endpoint)?;
    // The exporter's TLS takes the process's crypto provider: ring, installed by `main`.
    let exporter = SpanExporter::builder()
        .with_http()
        .with_endpoint(url.clone())
        .build()
        .map_err(|err| anyhow::anyhow!("cannot export traces to {url}: {err}"))?;
    // The service is `skiff` unless `OTEL_SERVICE_NAME` or `OTEL_RESOURCE_ATTRIBUTES` names it
    // (the SDK reads both; without either it says `unknown_service`).
    let detected = Resource::builder().build();
    let unnamed = detected
        .get(&opentelemetry::Key::new("service.name"))
        .is_none_or(|name| name.as_str().starts_with("unknown_service"));
    let resource = if unnamed {
        Resource::builder().with_service_name("skiff").build()
    } else {
        detected
    };
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build();
    skiff_runtime::trace::install_tracer(provider.tracer("skiff"));
    Ok(TraceExport { provider, url })
}

impl TraceExport {
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Sends the spans still queued and stops. Blocks until the collector has answered or the
    /// export timed out.
    pub fn shutdown(self) {
        if let Err(err) = self.provider.shutdown() {
            tracing::warn!("exporting the last spans to {} failed: {err}", self.url);
        }
    }
}

fn traces_url(endpoint: &str) -> Result<String> {
    let endpoint = endpoint.trim();
    let url = match reqwest::Url::parse(endpoint) {
        Ok(url) => url,
        Err(err) => {
            bail!("--otlp-endpoint `{endpoint}` is not a URL ({err}); e.g. http://127.0.0.1:4318")
        }
    };
    if !matches!(url.scheme(), "http" | "https") {
        bail!(
            "--otlp-endpoint `{endpoint}` must be the http:// or https:// URL of an OTLP/HTTP \
             collector, e.g. http://127.0.0.1:4318"
        );
    }
    let base = endpoint.trim_end_matches('/');
    Ok(if base.ends_with(TRACES_PATH) {
        base.to_string()
    } else {
        format!("{base}{TRACES_PATH}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endpoint_is_the_collectors_base_url_or_its_traces_url() {
        assert_eq!(
            traces_url("http://127.0.0.1:4318").unwrap(),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(
            traces_url("http://collector:4318/").unwrap(),
            "http://collector:4318/v1/traces"
        );
        assert_eq!(
            traces_url("http://collector:4318/v1/traces").unwrap(),
            "http://collector:4318/v1/traces"
        );
        assert_eq!(
            traces_url("https://otlp.example.com").unwrap(),
            "https://otlp.example.com/v1/traces"
        );
        let grpc = traces_url("grpc://collector:4317").unwrap_err().to_string();
        assert!(grpc.contains("http:// or https://"), "{grpc}");
        let nonsense = traces_url("collector 4318").unwrap_err().to_string();
        assert!(nonsense.contains("not a URL"), "{nonsense}");
    }
}
