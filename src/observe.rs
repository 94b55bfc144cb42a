//! `/metrics` in the Prometheus text format: counters of this process
//! (through the `metrics` facade and its Prometheus recorder), and gauges
//! read from the database at each scrape, so that any process tells the
//! state of the whole pipeline (the relay and the workers run elsewhere).

use std::fmt::Write as _;
use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use sqlx::PgPool;

use crate::mail::deliveries;
use crate::store::backlog;

/// The process's recorder, installed once.
pub fn recorder() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("another metrics recorder is installed; this one only renders");
        }
        handle
    })
}

/// Seconds the oldest event the relay has not published has waited (0 when
/// everything is published): read from the store, so any process can tell.
pub async fn relay_lag(pool: &PgPool, events_topic: &str) -> sqlx::Result<f64> {
    backlog::oldest_age(pool, events_topic).await
}

/// Messages each projection has yet to apply: what the relay has had
/// acknowledged on each partition of the topic, past the offset the
/// projection keeps with its rows (a partition it never read counts whole).
const PROJECTION_LAG: &str = "
SELECT names.projection, coalesce(sum(greatest(p.last_offset + 1 - coalesce(c.next_offset, 0), 0)), 0)::bigint
  FROM (SELECT DISTINCT projection FROM projection_checkpoints WHERE topic = $1) AS names
  CROSS JOIN relay_partitions p
  LEFT JOIN projection_checkpoints c
         ON c.projection = names.projection AND c.topic = p.name AND c.partition = p.partition
 WHERE p.name = $1
 GROUP BY names.projection ORDER BY names.projection";

/// Messages each projection that has read the topic has yet to apply.
pub async fn projection_lag(pool: &PgPool, events_topic: &str) -> sqlx::Result<Vec<(String, i64)>> {
    sqlx::query_as(PROJECTION_LAG)
        .bind(events_topic)
        .fetch_all(pool)
        .await
}

const DEAD_LETTERS: &str =
    "SELECT projection, count(*) FROM projection_dead_letters GROUP BY projection ORDER BY projection";
const GENERATION: &str = "SELECT coalesce(max(generation), 1) FROM relay_cursors WHERE name = $1";
const PARKED: &str = "SELECT count(*) FROM relay_parked_events WHERE topic = $1";
const STATES_PENDING: &str =
    "SELECT count(*) FROM users WHERE state_version IS DISTINCT FROM version";

/// Messages each projection parked.
pub async fn dead_letters(pool: &PgPool) -> sqlx::Result<Vec<(String, i64)>> {
    sqlx::query_as(DEAD_LETTERS).fetch_all(pool).await
}

/// Events the relay set aside because it could not read them.
pub async fn relay_parked(pool: &PgPool, events_topic: &str) -> sqlx::Result<i64> {
    sqlx::query_scalar(PARKED)
        .bind(events_topic)
        .fetch_one(pool)
        .await
}

/// The generation the relay publishes the topic under.
pub async fn relay_generation(pool: &PgPool, events_topic: &str) -> sqlx::Result<i64> {
    sqlx::query_scalar(GENERATION)
        .bind(events_topic)
        .fetch_one(pool)
        .await
}

/// The Prometheus text of this process's counters and of the pipeline's
/// gauges.
pub async fn render(pool: &PgPool, events_topic: &str) -> sqlx::Result<String> {
    let lag = relay_lag(pool, events_topic).await?;
    let dead = dead_letters(pool).await?;
    let behind = projection_lag(pool, events_topic).await?;
    let unpublished = backlog::count(pool, events_topic).await?;
    let parked = relay_parked(pool, events_topic).await?;
    let states: i64 = sqlx::query_scalar(STATES_PENDING).fetch_one(pool).await?;
    let mail = mail_states(pool).await?;
    let mail_waiting = deliveries::oldest_due(pool).await?;
    let generation = relay_generation(pool, events_topic).await?;
    let mut text = recorder().render();
    let mut gauge = |name: &str, help: &str, samples: &[(String, String)]| {
        let _ = writeln!(text, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (labels, value) in samples {
            let _ = writeln!(text, "{name}{labels} {value}");
        }
    };
    gauge(
        "accountable_dead_letters",
        "Messages a projection parked because it could not apply them.",
        &per_projection(&dead),
    );
    gauge(
        "accountable_projection_lag_messages",
        "Messages on the events topic a projection has yet to apply.",
        &per_projection(&behind),
    );
    gauge(
        "accountable_relay_unpublished_events",
        "Committed events the relay has not yet published.",
        &[(String::new(), unpublished.to_string())],
    );
    gauge(
        "accountable_relay_parked_events",
        "Events the relay could not read and parked (see `accountable relay republish`).",
        &[(String::new(), parked.to_string())],
    );
    gauge(
        "accountable_relay_lag_seconds",
        "How long the oldest unpublished event has waited.",
        &[(String::new(), format!("{lag}"))],
    );
    gauge(
        "accountable_relay_generation",
        "The generation the relay publishes under: one more each time it wrote the topic anew after the broker lost messages.",
        &[(String::new(), generation.to_string())],
    );
    gauge(
        "accountable_mail_messages",
        "Messages of the mail outbox per state: due, sent, parked (failed every attempt; see `accountable mailer retry`), dropped (the recipient was erased, or the link expired unsent).",
        &mail
            .iter()
            .map(|(state, count)| (format!("{{state=\"{state}\"}}"), count.to_string()))
            .collect::<Vec<_>>(),
    );
    gauge(
        "accountable_mail_oldest_due_seconds",
        "How long the oldest message still due has waited.",
        &[(String::new(), format!("{mail_waiting}"))],
    );
    gauge(
        "accountable_state_topic_pending_users",
        "Users whose latest state the state topic does not have yet.",
        &[(String::new(), states.to_string())],
    );
    Ok(text)
}

/// Messages of the mail outbox in each state, every state present.
pub async fn mail_states(pool: &PgPool) -> sqlx::Result<Vec<(&'static str, i64)>> {
    let counts = deliveries::counts(pool).await?;
    Ok(["due", "sent", "parked", "dropped"]
        .into_iter()
        .map(|state| (state, count_of(&counts, state)))
        .collect())
}

/// The count `name` has among `counts` (0 when it has none).
pub fn count_of(counts: &[(String, i64)], name: &str) -> i64 {
    counts
        .iter()
        .find(|(n, _)| n == name)
        .map_or(0, |(_, count)| *count)
}

/// `{projection="…"}` samples; the label value is made safe to print.
fn per_projection(counts: &[(String, i64)]) -> Vec<(String, String)> {
    counts
        .iter()
        .map(|(projection, count)| {
            (
                format!(
                    "{{projection=\"{}\"}}",
                    projection.replace(['"', '\\', '\n'], "_")
                ),
                count.to_string(),
            )
        })
        .collect()
}
