//! The W3C trace context that each event carries (its `traceparent`, kept
//! in the event's metadata and sent as a Kafka header): the spans that
//! publish and apply an event continue the trace of the request that
//! caused it. Without an OpenTelemetry layer installed these do nothing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

const HEADER: &str = "traceparent";

/// Whether this process exports traces: set once at its start, so that the
/// hot paths name and join their spans only then.
static ON: AtomicBool = AtomicBool::new(false);

/// Marks traces as exported in this process.
pub fn turn_on() {
    ON.store(true, Ordering::Relaxed);
}

/// Whether spans are exported, so worth naming and joining.
pub fn on() -> bool {
    ON.load(Ordering::Relaxed)
}

/// Names `span` for its trace (`otel.name`, declared `Empty`), when traces
/// are on: the name is made only then.
pub fn name(span: &tracing::Span, name: impl FnOnce() -> String) {
    if on() {
        span.record("otel.name", name());
    }
}

/// Makes `span` a child of the span `traceparent` names. Call it before the
/// span is first entered.
pub fn follow(span: &tracing::Span, traceparent: &str) {
    if !on() {
        return;
    }
    let carrier = HashMap::from([(HEADER.to_owned(), traceparent.to_owned())]);
    let parent = TraceContextPropagator::new().extract(&carrier);
    // Refused only when no OpenTelemetry layer is installed: nothing to join.
    let _ = span.set_parent(parent);
}

/// The `traceparent` of `span`, when traces are on.
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    if !on() {
        return None;
    }
    let context = span.context();
    if !context.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&context, &mut carrier);
    carrier.remove(HEADER)
}
