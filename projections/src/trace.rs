//! The W3C trace context that each event carries (its `traceparent`, kept
//! in the event's metadata and sent as a Kafka header): the spans that
//! publish and apply an event continue the trace of the request that
//! caused it. Without an OpenTelemetry layer installed these do nothing.

use std::collections::HashMap;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

const HEADER: &str = "traceparent";

/// Makes `span` a child of the span `traceparent` names. Call it before the
/// span is first entered.
pub fn follow(span: &tracing::Span, traceparent: &str) {
    let carrier = HashMap::from([(HEADER.to_owned(), traceparent.to_owned())]);
    let parent = TraceContextPropagator::new().extract(&carrier);
    // Refused only when no OpenTelemetry layer is installed: nothing to join.
    let _ = span.set_parent(parent);
}

/// The `traceparent` of `span`, when traces are on.
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    let context = span.context();
    if !context.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&context, &mut carrier);
    carrier.remove(HEADER)
}
