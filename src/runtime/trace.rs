//! Traces (docs/contract.md, "Trace context"): one trace from Meta's POST through the worker to
//! every event it produced. W3C trace context travels in HTTP headers and in the AMQP headers
//! `traceparent` / `tracestate` of units and events; spans follow OpenTelemetry's messaging
//! conventions for RabbitMQ ([`CONVENTIONS`]): `send` (producer), `process` (consumer, parented
//! to the producer and linked to it), `settle` (the acknowledgement). No span name or attribute
//! holds a phone number, a business-scoped id, a wamid or a message's text.
//!
//! Spans are exported over OTLP (HTTP/protobuf, or gRPC with `OTEL_EXPORTER_OTLP_PROTOCOL=grpc`)
//! only when `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, with
//! the standard `OTEL_*` variables. Without it, spans are not recorded (sampled off): only their
//! ids are made, so the trace context still travels, at the cost of a few random numbers per
//! webhook.

use std::sync::OnceLock;

use axum::http::HeaderMap;
use lapin::types::{AMQPValue, FieldTable};
use opentelemetry::global::{self, BoxedTracer};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{Link, SpanKind, Status, TraceContextExt, Tracer};
use opentelemetry::{Context, InstrumentationScope, KeyValue};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};

/// The version of OpenTelemetry's semantic conventions the spans follow (messaging, RabbitMQ).
pub const CONVENTIONS: &str = "1.30.0";

/// The HTTP header that carries the trace context to Meta.
const TRACEPARENT: &str = "traceparent";

static PROVIDER: OnceLock<(SdkTracerProvider, bool)> = OnceLock::new();

/// Why tracing could not be set up: one line.
#[derive(Debug, thiserror::Error)]
#[error("tracing: {0}")]
pub struct Error(String);

/// Sets up tracing for this process as `service` (`OTEL_SERVICE_NAME` wins): exporting over OTLP
/// when the standard variables say where, else making ids only. Once per process; later calls
/// keep the first setup.
pub fn init(service: &str) -> Result<(), Error> {
    let mut failed = None;
    PROVIDER.get_or_init(|| {
        let (provider, exporting) = match build(service) {
            Ok(built) => built,
            Err(e) => {
                failed = Some(e);
                (quiet(), false)
            }
        };
        global::set_tracer_provider(provider.clone());
        global::set_text_map_propagator(TraceContextPropagator::new());
        (provider, exporting)
    });
    match failed {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// A provider that records nothing: ids only.
fn quiet() -> SdkTracerProvider {
    SdkTracerProvider::builder()
        .with_sampler(Sampler::AlwaysOff)
        .build()
}

fn build(service: &str) -> Result<(SdkTracerProvider, bool), Error> {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
    let endpoint = var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or(var("OTEL_EXPORTER_OTLP_ENDPOINT"));
    let disabled = var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let provider = match (&endpoint, disabled) {
        (Some(_), false) => {
            let protocol = var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                .or(var("OTEL_EXPORTER_OTLP_PROTOCOL"))
                .unwrap_or_else(|| "http/protobuf".into());
            let exporter = match protocol.as_str() {
                "http/protobuf" => {
                    use opentelemetry_otlp::WithHttpConfig;
                    let https = hyper_rustls::HttpsConnectorBuilder::new()
                        .with_webpki_roots()
                        .https_or_http()
                        .enable_http1()
                        .build();
                    let client = opentelemetry_http::hyper::HyperClient::new(
                        https,
                        std::time::Duration::from_secs(10),
                        None,
                    );
                    opentelemetry_otlp::SpanExporter::builder()
                        .with_http()
                        .with_http_client(client)
                        .build()
                }
                "grpc" => {
                    use opentelemetry_otlp::tonic_types::transport::ClientTlsConfig;
                    use opentelemetry_otlp::WithTonicConfig;
                    let builder = opentelemetry_otlp::SpanExporter::builder().with_tonic();
                    // An https endpoint is verified against the Web PKI roots, as over HTTP.
                    match endpoint.as_deref().is_some_and(|e| e.starts_with("https:")) {
                        true => builder
                            .with_tls_config(ClientTlsConfig::new().with_webpki_roots())
                            .build(),
                        false => builder.build(),
                    }
                }
                other => {
                    return Err(Error(format!(
                        "OTEL_EXPORTER_OTLP_PROTOCOL={other:?}: coexist exports over \"http/protobuf\" (the default) or \"grpc\""
                    )))
                }
            }
            .map_err(|e| Error(e.to_string()))?;
            let processor = opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor::builder(
                exporter,
                opentelemetry_sdk::runtime::Tokio,
            )
            .build();
            let name = var("OTEL_SERVICE_NAME").unwrap_or_else(|| service.to_owned());
            let resource = opentelemetry_sdk::Resource::builder()
                .with_service_name(name)
                .build();
            let provider = SdkTracerProvider::builder()
                .with_span_processor(processor)
                .with_resource(resource)
                .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)))
                .build();
            (provider, true)
        }
        _ => (quiet(), false),
    };
    Ok(provider)
}

/// Sends the spans still held (at shutdown).
pub fn flush() {
    if let Some((provider, true)) = PROVIDER.get() {
        let _ = provider.force_flush();
    }
}

/// coexist's tracer, made once (after the provider is set up).
fn tracer() -> &'static BoxedTracer {
    static TRACER: OnceLock<BoxedTracer> = OnceLock::new();
    TRACER.get_or_init(|| {
        if PROVIDER.get().is_none() {
            let _ = init("coexist");
        }
        let scope = InstrumentationScope::builder("coexist")
            .with_version(env!("CARGO_PKG_VERSION"))
            .with_schema_url(format!("https://opentelemetry.io/schemas/{CONVENTIONS}"))
            .build();
        global::tracer_with_scope(scope)
    })
}

/// The trace context an HTTP request carries (an empty context when none).
pub fn from_http(headers: &HeaderMap) -> Context {
    struct Headers<'a>(&'a HeaderMap);
    impl Extractor for Headers<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            self.0.get(key).and_then(|v| v.to_str().ok())
        }
        fn keys(&self) -> Vec<&str> {
            self.0.keys().map(|k| k.as_str()).collect()
        }
    }
    TraceContextPropagator::new().extract(&Headers(headers))
}

/// The trace context an AMQP message carries.
pub fn from_amqp(headers: &Option<FieldTable>) -> Context {
    struct Headers<'a>(&'a Option<FieldTable>);
    impl Extractor for Headers<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            match crate::adapters::broker::message::header(self.0, key)? {
                AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok(),
                AMQPValue::ShortString(s) => Some(s.as_str()),
                _ => None,
            }
        }
        fn keys(&self) -> Vec<&str> {
            self.0
                .as_ref()
                .map(|t| t.inner().keys().map(|k| k.as_str()).collect())
                .unwrap_or_default()
        }
    }
    TraceContextPropagator::new().extract(&Headers(headers))
}

/// Writes a context's `traceparent` (and `tracestate`) into AMQP headers.
pub fn into_amqp(cx: &Context, headers: &mut FieldTable) {
    struct Headers<'a>(&'a mut FieldTable);
    impl Injector for Headers<'_> {
        fn set(&mut self, key: &str, value: String) {
            self.0.insert(
                key.to_owned().into(),
                crate::adapters::broker::topology::long(&value),
            );
        }
    }
    TraceContextPropagator::new().inject_context(cx, &mut Headers(headers));
}

/// The `traceparent` of a context, if it has a valid span.
pub fn traceparent(cx: &Context) -> Option<String> {
    let mut headers = std::collections::HashMap::new();
    TraceContextPropagator::new().inject_context(cx, &mut headers);
    headers.remove(TRACEPARENT)
}

fn messaging(operation: &'static str, destination: &str) -> Vec<KeyValue> {
    vec![
        KeyValue::new("messaging.system", "rabbitmq"),
        KeyValue::new("messaging.operation.name", operation),
        KeyValue::new("messaging.operation.type", operation),
        KeyValue::new("messaging.destination.name", destination.to_owned()),
    ]
}

/// The server span of an HTTP request (`route` is the route's template, never a path with ids),
/// continuing the trace the request carries.
pub fn server(method: &'static str, route: &'static str, headers: &HeaderMap) -> Context {
    let parent = from_http(headers);
    let span = tracer()
        .span_builder(format!("{method} {route}"))
        .with_kind(SpanKind::Server)
        .with_attributes([
            KeyValue::new("http.request.method", method),
            KeyValue::new("http.route", route),
        ])
        .start_with_context(tracer(), &parent);
    parent.with_span(span)
}

/// A producer span `send {destination}` under `parent`; `routing_key` is a partition number or an
/// event type (never anything of a customer's).
pub fn send(
    parent: &Context,
    destination: &str,
    routing_key: Option<&str>,
    count: usize,
) -> Context {
    let mut attributes = messaging("send", destination);
    if let Some(key) = routing_key {
        attributes.push(KeyValue::new(
            "messaging.rabbitmq.destination.routing_key",
            key.to_owned(),
        ));
    }
    if count > 1 {
        attributes.push(KeyValue::new("messaging.batch.message_count", count as i64));
    }
    let span = tracer()
        .span_builder(format!("send {destination}"))
        .with_kind(SpanKind::Producer)
        .with_attributes(attributes)
        .start_with_context(tracer(), parent);
    parent.with_span(span)
}

/// The consumer span `process {queue}` of a delivery: a child of the context it carries (the
/// producer's), and linked to it.
pub fn process(carried: &Context, queue: &str) -> Context {
    let producer = carried.span().span_context().clone();
    let mut builder = tracer()
        .span_builder(format!("process {queue}"))
        .with_kind(SpanKind::Consumer)
        .with_attributes(messaging("process", queue));
    if producer.is_valid() {
        builder = builder.with_links(vec![Link::with_context(producer)]);
    }
    let span = builder.start_with_context(tracer(), carried);
    carried.with_span(span)
}

/// The `settle {queue}` span of an acknowledgement, under the processing.
pub fn settle(parent: &Context, queue: &str) -> Context {
    let span = tracer()
        .span_builder(format!("settle {queue}"))
        .with_kind(SpanKind::Consumer)
        .with_attributes(messaging("settle", queue))
        .start_with_context(tracer(), parent);
    parent.with_span(span)
}

/// Ends the span of `cx`, as failed when `error` says why.
pub fn end(cx: &Context, error: Option<&str>) {
    let span = cx.span();
    if let Some(e) = error {
        span.set_status(Status::error(e.to_owned()));
    }
    span.end();
}

/// Ends the server span of `cx` with the response's status (failed, saying `why`, on a 5xx).
pub fn end_server(cx: &Context, status: axum::http::StatusCode, why: &str) {
    cx.span().set_attribute(KeyValue::new(
        "http.response.status_code",
        status.as_u16() as i64,
    ));
    end(cx, status.is_server_error().then_some(why));
}
