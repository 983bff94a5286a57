//! One trace from Meta's POST to every event (docs/contract.md, "Trace context"): the W3C
//! trace context in the AMQP headers, and the spans exported over OTLP (HTTP and gRPC) to
//! receivers of the test's own (decoded with OpenTelemetry's protobuf definitions).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::Router;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message;

use crate::support::*;

const SECS: Duration = Duration::from_secs(1);

/// The trace id of a `traceparent`.
fn trace_id(traceparent: &str) -> &str {
    traceparent.split('-').nth(1).unwrap_or("")
}

async fn post_with(addr: std::net::SocketAddr, body: &str, traceparent: Option<&str>) -> u16 {
    let mut headers = vec![(
        "X-Hub-Signature-256",
        coexist::services::ingress::sign(SECRET, body.as_bytes()),
    )];
    if let Some(tp) = traceparent {
        headers.push(("traceparent", tp.to_owned()));
    }
    http(addr, "POST", "/webhook", &headers, body.as_bytes())
        .await
        .0
}

#[tokio::test]
async fn a_webhooks_events_carry_its_trace_and_two_webhooks_two_traces() {
    let stack = Stack::start("trace-context", 1, &[]).await;
    let t = t0();
    let given = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let addr = stack.ingress.addr;
    assert_eq!(
        post_with(
            addr,
            &customer_text(ANA, "wamid.TR1", t, "hola"),
            Some(given)
        )
        .await,
        200
    );
    // A human's reply: three events from one webhook, on both exchanges.
    assert_eq!(
        post_with(
            addr,
            &echo_text(ANA, "wamid.TR2", t + 1, "te atiendo"),
            None
        )
        .await,
        200
    );
    let bot = take_distinct(&stack.ns, "bot", 2, 10 * SECS).await.0;
    let human = take_distinct(&stack.ns, "human_chat", 2, 10 * SECS).await.0;
    let first = bot[0]
        .header("traceparent")
        .expect("the event carries traceparent");
    assert_eq!(
        trace_id(&first),
        trace_id(given),
        "the proxy's trace continued"
    );
    assert_ne!(first, given, "its own span");
    let second: Vec<String> = bot[1..]
        .iter()
        .chain(&human)
        .map(|e| e.header("traceparent").expect("traceparent"))
        .collect();
    assert!(
        second.iter().all(|tp| trace_id(tp) == trace_id(&second[0])),
        "one trace: {second:?}"
    );
    assert_ne!(
        trace_id(&second[0]),
        trace_id(given),
        "another webhook, another trace"
    );
    assert_eq!(trace_id(&second[0]).len(), 32);
    stack.stop().await;
}

/// An OTLP receiver (over HTTP or gRPC): every span it was sent, with its `service.name`.
#[derive(Default, Clone)]
struct Received(Arc<Mutex<Vec<(String, opentelemetry_proto::tonic::trace::v1::Span)>>>);

impl Received {
    fn record(&self, request: ExportTraceServiceRequest) {
        for resource in request.resource_spans {
            let service = resource
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|a| a.key == "service.name")
                .and_then(|a| a.value.as_ref()?.value.clone())
                .map(|v| match v {
                    AnyValue::StringValue(s) => s,
                    other => format!("{other:?}"),
                })
                .unwrap_or_default();
            for scope in resource.scope_spans {
                for span in scope.spans {
                    self.0.lock().unwrap().push((service.clone(), span));
                }
            }
        }
    }

    /// The spans of the trace that holds a span named `first`, once spans named `then` have
    /// arrived in it too (waits up to 10 s).
    async fn trace_of(
        &self,
        first: &str,
        then: &[&dyn Fn(&str) -> bool],
    ) -> Vec<(String, opentelemetry_proto::tonic::trace::v1::Span)> {
        let mut spans = Vec::new();
        for _ in 0..100 {
            spans = self.0.lock().unwrap().clone();
            if let Some((_, root)) = spans.iter().find(|(_, s)| s.name == first) {
                let trace = root.trace_id.clone();
                let in_trace: Vec<_> = spans
                    .iter()
                    .filter(|(_, s)| s.trace_id == trace)
                    .cloned()
                    .collect();
                if then
                    .iter()
                    .all(|wanted| in_trace.iter().any(|(_, s)| wanted(&s.name)))
                {
                    return in_trace;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        spans
    }
}

async fn receive(State(r): State<Received>, body: Bytes) -> &'static str {
    r.record(ExportTraceServiceRequest::decode(body).expect("OTLP protobuf"));
    ""
}

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;

#[tonic::async_trait]
impl TraceService for Received {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.record(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

type Spans = Vec<(String, opentelemetry_proto::tonic::trace::v1::Span)>;

/// One webhook through `coexist serve` exporting to `endpoint` (with `extra` variables).
struct Traced {
    ns: String,
    /// The spans of its trace, once the process, settle and event spans have come.
    spans: Spans,
    _serve: Process,
    _guards: (NsGuard, AmqpNsGuard),
}

async fn one_webhook_traced(
    received: &Received,
    endpoint: &str,
    extra: &[(&str, &str)],
    wamid: &str,
    text: &str,
) -> Traced {
    let ns = unique_ns("trace-otlp");
    let guards = (NsGuard(ns.clone()), AmqpNsGuard(ns.clone()));
    let mut env = vec![
        ("COEXIST_NAMESPACE", ns.as_str()),
        ("COEXIST_APP_SECRET", SECRET),
        ("COEXIST_PARTITIONS", "2"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];
    env.extend_from_slice(extra);
    let (serve, listen) = Process::serving(&env).await;
    let body = customer_text(ANA, wamid, t0(), text);
    accepted_within(listen, &body, 30 * SECS, "the webhook accepted").await;
    let bot = format!("send {ns}.bot");
    let process = format!("process {ns}.inbound.");
    // The process span ends after the settle span: both awaited, they may come in two batches.
    let spans = received
        .trace_of(
            "POST /webhook",
            &[
                &|n: &str| n.starts_with("settle "),
                &|n: &str| n.starts_with(&process),
                &|n: &str| n == bot,
            ],
        )
        .await;
    Traced {
        ns,
        spans,
        _serve: serve,
        _guards: guards,
    }
}

#[tokio::test]
async fn over_grpc_the_same_trace_reaches_an_otlp_grpc_receiver() {
    let received = Received::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let server = tonic::transport::Server::builder()
        .add_service(TraceServiceServer::new(received.clone()))
        .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener));
    tokio::spawn(server);
    let extra = [
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ("OTEL_SERVICE_NAME", "shop-coexist"),
    ];
    let traced = one_webhook_traced(&received, &endpoint, &extra, "wamid.GRPC1", "hola").await;
    let (ns, spans) = (&traced.ns, &traced.spans);
    let (bot, process) = (format!("send {ns}.bot"), format!("process {ns}.inbound."));
    let names: Vec<&str> = spans.iter().map(|(_, s)| s.name.as_str()).collect();
    for wanted in [
        "POST /webhook".to_owned(),
        format!("send {ns}.inbound"),
        bot.clone(),
    ] {
        assert!(names.contains(&wanted.as_str()), "{wanted} in {names:?}");
    }
    assert!(names.iter().any(|n| n.starts_with(&process)), "{names:?}");
    assert!(
        spans.iter().all(|(service, _)| service == "shop-coexist"),
        "OTEL_SERVICE_NAME wins"
    );
}

#[tokio::test]
async fn spans_reach_an_otlp_receiver_in_one_trace_without_the_customers_data() {
    let received = Received::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let app = Router::new()
        .route("/v1/traces", axum::routing::post(receive))
        .with_state(received.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let text = "mi pedido 4471";
    let traced = one_webhook_traced(&received, &endpoint, &[], "wamid.OTLP1", text).await;
    let (ns, spans) = (&traced.ns, &traced.spans);
    let names: Vec<&str> = spans.iter().map(|(_, s)| s.name.as_str()).collect();
    let kind = |name: &str| {
        spans
            .iter()
            .find(|(_, s)| s.name == name)
            .map(|(_, s)| s.kind)
    };
    use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
    assert_eq!(
        kind("POST /webhook"),
        Some(SpanKind::Server as i32),
        "{names:?}"
    );
    assert_eq!(
        kind(&format!("send {ns}.inbound")),
        Some(SpanKind::Producer as i32),
        "{names:?}"
    );
    let process = spans
        .iter()
        .find(|(_, s)| s.name.starts_with(&format!("process {ns}.inbound.")))
        .unwrap_or_else(|| panic!("a process span: {names:?}"));
    assert_eq!(process.1.kind, SpanKind::Consumer as i32);
    assert_eq!(process.1.links.len(), 1, "linked to the producer's context");
    assert_eq!(
        kind(&format!("send {ns}.bot")),
        Some(SpanKind::Producer as i32),
        "{names:?}"
    );
    assert!(
        spans.iter().all(|(service, _)| service == "coexist-serve"),
        "service.name per role"
    );
    // The conventions' attributes, and nothing of the customer's anywhere.
    let attribute = |span: &opentelemetry_proto::tonic::trace::v1::Span, key: &str| {
        span.attributes
            .iter()
            .find(|a| a.key == key)
            .and_then(|a| a.value.as_ref()?.value.clone())
    };
    assert_eq!(
        attribute(&process.1, "messaging.system"),
        Some(AnyValue::StringValue("rabbitmq".into()))
    );
    assert_eq!(
        attribute(&process.1, "messaging.operation.name"),
        Some(AnyValue::StringValue("process".into()))
    );
    for (_, span) in spans {
        let all = format!("{} {:?}", span.name, span.attributes);
        for secret in [ANA, "wamid.OTLP1", text, "4471"] {
            assert!(!all.contains(secret), "{secret:?} in span {all}");
        }
    }
}
