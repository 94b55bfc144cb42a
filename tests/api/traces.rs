//! Traces over OTLP: `serve`, `relay` and `project` run as processes with
//! `OTEL_EXPORTER_OTLP_ENDPOINT` pointed at a receiver on loopback, which
//! decodes what they export with the official protobuf definitions
//! (`opentelemetry-proto`). One registration must be one trace: the
//! request and its mutation, the command and its append, the relay's
//! publish and the projection's apply of the event.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{header, StatusCode};
use axum::routing::post;
use axum::Router;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message;

use crate::helpers::*;

/// A span as exported, with the service that sent it.
#[derive(Debug, Clone)]
struct Exported {
    service: String,
    name: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
}

/// An OTLP/HTTP receiver of traces (`POST /v1/traces`, protobuf).
struct Receiver {
    endpoint: String,
    spans: Arc<Mutex<Vec<Exported>>>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn decode(body: &[u8]) -> Vec<Exported> {
    let request = ExportTraceServiceRequest::decode(body).expect("an OTLP trace export");
    let mut spans = Vec::new();
    for resource in request.resource_spans {
        let service = resource
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|a| a.key == "service.name")
            .and_then(|a| a.value.as_ref()?.value.clone())
            .map(|value| match value {
                AnyValue::StringValue(name) => name,
                other => format!("{other:?}"),
            })
            .unwrap_or_default();
        for span in resource.scope_spans.into_iter().flat_map(|s| s.spans) {
            spans.push(Exported {
                service: service.clone(),
                name: span.name,
                trace_id: hex(&span.trace_id),
                span_id: hex(&span.span_id),
                parent_span_id: hex(&span.parent_span_id),
            });
        }
    }
    spans
}

impl Receiver {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let spans = Arc::new(Mutex::new(Vec::new()));
        let kept = spans.clone();
        let app = Router::new().route(
            "/v1/traces",
            post(move |body: Bytes| async move {
                kept.lock().unwrap().extend(decode(&body));
                (
                    StatusCode::OK,
                    [(header::CONTENT_TYPE, "application/x-protobuf")],
                    ExportTraceServiceResponse::default().encode_to_vec(),
                )
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { endpoint, spans }
    }

    fn spans(&self) -> Vec<Exported> {
        self.spans.lock().unwrap().clone()
    }
}

#[tokio::test]
async fn one_trace_holds_the_mutation_its_append_the_relays_publish_and_the_projections_apply() {
    let receiver = Receiver::start().await;
    let stack = TestStack::new().await;
    let otel = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint.clone()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
    ];
    let (_serve, api) = stack.serve_process_with(&otel).await;
    let _relay = stack.process_command_with("relay", &otel);
    let _project = stack.process_command_with("project", &otel);

    let ada = api.register("ada@example.test", "Ada").await;
    let publish = format!("publish {}", stack.config.kafka.events_topic);
    let trace = eventually(
        "one trace from the mutation to the projection",
        Duration::from_secs(60),
        || async {
            let spans = receiver.spans();
            let mutation = spans.iter().find(|s| s.name == "mutation register")?;
            let trace: Vec<Exported> = spans
                .iter()
                .filter(|s| s.trace_id == mutation.trace_id)
                .cloned()
                .collect();
            ["command", "append", publish.as_str(), "apply users"]
                .iter()
                .all(|name| trace.iter().any(|s| s.name == *name))
                .then_some(trace)
        },
    )
    .await;

    let named = |name: &str| trace.iter().find(|s| s.name == name).unwrap().clone();
    let (mutation, command, append) = (
        named("mutation register"),
        named("command"),
        named("append"),
    );
    let (published, applied) = (named(&publish), named("apply users"));
    let request = trace
        .iter()
        .find(|s| s.span_id == mutation.parent_span_id)
        .expect("the mutation's parent is the request's span");
    assert_eq!(request.name, "POST /graphql");
    assert_eq!(command.parent_span_id, mutation.span_id);
    assert_eq!(append.parent_span_id, command.span_id);
    assert!(trace.iter().any(|s| s.span_id == published.parent_span_id));
    assert!(trace.iter().any(|s| s.span_id == applied.parent_span_id));
    assert_eq!(mutation.service, "accountable-serve");
    assert_eq!(published.service, "accountable-relay");
    assert_eq!(applied.service, "accountable-project");

    // The event keeps that trace in its metadata, for any consumer.
    let traceparent: String = sqlx::query_scalar(
        "SELECT metadata->>'traceparent' FROM events WHERE aggregate_id = $1 AND sequence = 1",
    )
    .bind(&ada.id)
    .fetch_one(&stack.pool)
    .await
    .unwrap();
    assert!(traceparent.contains(&mutation.trace_id), "{traceparent}");
}
