//! Logging (human-readable in development, JSON lines in production, each
//! carrying the trace and span ids when traces are on; `RUST_LOG`
//! filters), OpenTelemetry traces over OTLP, W3C trace contexts, and
//! progress bars for long command-line runs.
//!
//! Traces are off unless `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set; the exporter speaks OTLP
//! over HTTP (protobuf) and reads the standard `OTEL_*` variables
//! (`OTEL_SERVICE_NAME`, `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_BSP_*`,
//! `OTEL_TRACES_SAMPLER`…). A mutation's request, its command and append,
//! and then the relay's publish and each projection's apply of its events
//! are one trace, joined through the `traceparent` every event keeps.

use std::fmt;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing::Subscriber;
use tracing_opentelemetry::{OpenTelemetrySpanExt as _, OtelData};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::{Layer as _, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

use crate::config::Environment;

/// The traces of this process; [`Traces::shutdown`] sends what is left.
#[must_use = "shut it down at the end, or the last spans are lost"]
pub struct Traces(Option<SdkTracerProvider>);

impl Traces {
    /// Exports the spans still buffered and stops the exporter.
    pub fn shutdown(self) {
        if let Some(provider) = self.0 {
            if let Err(error) = provider.shutdown() {
                tracing::warn!(error = %error, "the last spans were not exported");
            }
        }
    }
}

/// What is traced: our spans and the libraries' at `info`; never the
/// exporter's own HTTP client, whose spans would be exported in turn.
const TRACED: &str = "info,sqlx=warn,rdkafka=warn,reqwest=off,hyper=off,hyper_util=off,h2=off";

/// Whether the standard variables ask for traces.
fn traces_wanted() -> bool {
    let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.trim().is_empty());
    let disabled = std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true"))
        || std::env::var("OTEL_TRACES_EXPORTER").is_ok_and(|v| v == "none");
    !disabled && (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
}

/// An OTLP/HTTP exporter behind a batching processor; `service.name` is
/// `OTEL_SERVICE_NAME`, else `accountable-<process>`.
fn provider(process: &str) -> anyhow::Result<SdkTracerProvider> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()?;
    let mut resource = Resource::builder();
    if std::env::var("OTEL_SERVICE_NAME").is_err() {
        resource = resource.with_service_name(format!("accountable-{process}"));
    }
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build())
}

/// Installs logging, and traces when asked for. A second init (tests start
/// several apps) keeps the first.
pub fn init(env: Environment, process: &str) -> Traces {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,rdkafka=warn"));
    let (provider, failed) = match traces_wanted().then(|| provider(process)) {
        Some(Ok(provider)) => {
            accountable_projections::trace::turn_on();
            (Some(provider), None)
        }
        Some(Err(error)) => (None, Some(error)),
        None => (None, None),
    };
    // Spans are exported at `info` whatever `RUST_LOG` logs.
    let traces = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("accountable"))
            .with_filter(EnvFilter::new(TRACED))
    });
    let registry = tracing_subscriber::registry().with(traces);
    let _ = match env {
        Environment::Development => registry
            .with(tracing_subscriber::fmt::layer().with_filter(filter))
            .try_init(),
        Environment::Production => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .event_format(WithTraceIds(tracing_subscriber::fmt::format().json()))
                    .with_filter(filter),
            )
            .try_init(),
    };
    if let Some(error) = failed {
        tracing::error!(error = %error, "traces are off: the OTLP exporter cannot be built");
    }
    Traces(provider)
}

/// Renames the current span's trace span (its name is known only once the
/// span runs, as a GraphQL operation's after parsing).
pub fn rename_current_span(name: impl FnOnce() -> String) {
    if accountable_projections::trace::on() {
        tracing::Span::current()
            .context()
            .span()
            .update_name(name());
    }
}

/// A JSON line with the current span's `trace_id` and `span_id` added, as
/// log tools join logs to traces by them.
struct WithTraceIds<F>(F);

impl<S, N, F> FormatEvent<S, N> for WithTraceIds<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> fmt::Result {
        let ids = ctx.lookup_current().and_then(|span| {
            let extensions = span.extensions();
            let data = extensions.get::<OtelData>()?;
            Some((data.trace_id()?, data.span_id()?))
        });
        let Some((trace_id, span_id)) = ids else {
            return self.0.format_event(ctx, writer, event);
        };
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        match serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&line) {
            Ok(mut object) => {
                object.insert("trace_id".into(), trace_id.to_string().into());
                object.insert("span_id".into(), span_id.to_string().into());
                writeln!(writer, "{}", serde_json::Value::Object(object))
            }
            Err(_) => writer.write_str(&line),
        }
    }
}

/// A progress bar over `total` events on standard error, drawn only when
/// that is a terminal.
pub fn event_progress(total: i64) -> ProgressBar {
    let progress = ProgressBar::with_draw_target(
        Some(u64::try_from(total).unwrap_or_default()),
        ProgressDrawTarget::stderr(),
    );
    progress.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} events, {per_sec}, {eta} left")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    progress
}

/// A new W3C trace context: version 00, a random trace id and parent id,
/// sampled.
pub fn new_traceparent() -> String {
    let trace = uuid::Uuid::new_v4().simple().to_string();
    let span = uuid::Uuid::new_v4().simple().to_string();
    format!("00-{trace}-{}-01", &span[..16])
}

/// Whether `value` is a W3C `traceparent` of version 00 (lower-case hex,
/// trace and parent ids not all zero).
pub fn is_traceparent(value: &str) -> bool {
    let parts: Vec<&str> = value.split('-').collect();
    let hex = |part: &str, len: usize| {
        part.len() == len
            && part
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let nonzero = |part: &str| part.bytes().any(|b| b != b'0');
    matches!(parts.as_slice(), [version, trace, parent, flags]
        if *version == "00" && hex(trace, 32) && nonzero(trace)
            && hex(parent, 16) && nonzero(parent) && hex(flags, 2))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Where the formatter writes, to be read after.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .expect("not poisoned")
                .extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_json_line_logged_in_a_traced_span_carries_its_trace_and_span_ids() {
        let provider = SdkTracerProvider::builder().build();
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")))
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .event_format(WithTraceIds(tracing_subscriber::fmt::format().json()))
                    .with_writer(move || writer.clone()),
            );
        let ids = tracing::subscriber::with_default(subscriber, || {
            tracing::info!("outside any span");
            let span = tracing::info_span!("work");
            let _entered = span.enter();
            tracing::info!("inside");
            let context = span.context();
            let ids = context.span().span_context().clone();
            (ids.trace_id().to_string(), ids.span_id().to_string())
        });
        let written =
            String::from_utf8(lines.0.lock().expect("not poisoned").clone()).expect("UTF-8");
        let lines: Vec<serde_json::Value> = written
            .lines()
            .map(|line| serde_json::from_str(line).expect("a JSON line"))
            .collect();
        assert_eq!(lines.len(), 2, "{written}");
        assert!(lines[0].get("trace_id").is_none(), "{written}");
        assert_eq!(lines[1]["fields"]["message"], "inside");
        assert_eq!(lines[1]["trace_id"], ids.0.as_str());
        assert_eq!(lines[1]["span_id"], ids.1.as_str());
        assert_ne!(ids.0, opentelemetry::TraceId::INVALID.to_string());
    }

    #[test]
    fn trace_contexts_are_recognised_and_made() {
        assert!(is_traceparent(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        ));
        assert!(is_traceparent(&new_traceparent()));
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert!(!is_traceparent(bad), "{bad}");
        }
    }

    proptest::proptest! {
        #[test]
        fn any_header_value_is_judged_without_a_panic(value in "\\PC{0,80}|00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}") {
            if is_traceparent(&value) {
                proptest::prop_assert_eq!(value.len(), 55);
            }
        }
    }
}
