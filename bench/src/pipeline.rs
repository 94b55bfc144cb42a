//! Pipeline rates on a backlog: events appended straight to the store,
//! sealed as commands seal them, while the relay and the projection are
//! stopped; then the relay alone, the projection alone, and `projections
//! rebuild`, each timed to the end of the backlog. Beside them, the limits
//! of the parts: the broker serving and taking the same messages, and a
//! direct batched upsert of the same rows into the same table.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use accountable::store::variant_fields;
use accountable_vault::{EventFields, MasterKey, Vault};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Message, OwnedHeaders};
use rdkafka::producer::future_producer::OwnedDeliveryResult;
use rdkafka::producer::{DeliveryFuture, FutureRecord};
use serde::Serialize;
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

use crate::cpu::Usage;
use crate::load::{PerSecond, Versus};
use crate::stack::Stack;

/// Events appended per transaction while the backlog is made.
const CHUNK: usize = 2_000;
/// Events per projection batch (the worker's `max_batch`), so per upsert.
const BATCH: usize = 500;
/// Partitions of the events topic (the service's default).
const PARTITIONS: i32 = 6;
/// How long any one stage may take before the benchmark gives up.
const STAGE_LIMIT: Duration = Duration::from_secs(1_800);

/// A number of events handled in a time.
#[derive(Debug, Clone, Serialize)]
pub struct Rate {
    pub name: String,
    pub events: u64,
    pub seconds: f64,
    pub per_second: f64,
}

impl PerSecond for Rate {
    fn per_second(&self) -> f64 {
        self.per_second
    }
}

impl Rate {
    fn new(name: &str, events: u64, elapsed: Duration) -> Self {
        let seconds = elapsed.as_secs_f64();
        Self {
            name: name.to_owned(),
            events,
            seconds,
            per_second: events as f64 / seconds.max(f64::MIN_POSITIVE),
        }
    }
}

/// What the pipeline measurements came to.
#[derive(Debug, Serialize)]
pub struct Pipeline {
    pub backlog: u64,
    /// Against the broker taking the messages with normal batching.
    pub relay_batched: Versus<Rate>,
    /// Against the broker taking them in record batches as the relay's.
    pub relay: Versus<Rate>,
    pub projection: Versus<Rate>,
    pub projection_consume: Versus<Rate>,
    pub rebuild: Rate,
    /// CPU per event of the relay and of the projection stage.
    #[serde(skip)]
    pub cpu: Vec<crate::cpu::PerOperation>,
}

/// Makes a backlog of `total` events, then times the relay, the projection
/// and a rebuild through it, and the limits beside them.
pub async fn measure(stack: &mut Stack, total: usize) -> anyhow::Result<Pipeline> {
    let pool = PgPool::connect(&stack.database_url).await?;
    wait_for("everything published and projected", || async {
        Ok(unpublished(&pool, &stack.events_topic).await? == 0 && unprojected(&pool).await? == 0)
    })
    .await?;
    stack.stop_part("relay").await?;
    stack.stop_part("project").await?;

    eprintln!("appending a backlog of {total} events");
    let vault = Vault::open(pool.clone(), MasterKey::from_base64(&stack.master_key)?).await?;
    append_backlog(&pool, &vault, total).await?;
    let backlog = u64::try_from(unpublished(&pool, &stack.events_topic).await?)?;

    eprintln!("relay: publishing {backlog} events");
    let started = Instant::now();
    stack.start_part("relay")?;
    let before = Usage::now(&stack.parts());
    wait_for("the relay to publish the backlog", || {
        all_published(&pool, &stack.events_topic)
    })
    .await?;
    let relay = Rate::new("relay", backlog, started.elapsed());
    let mut cpu = vec![Usage::now(&stack.parts()).since(&before, "relay, per event", backlog)];

    eprintln!("projection: applying {backlog} events");
    let started = Instant::now();
    stack.start_part("project")?;
    let before = Usage::now(&stack.parts());
    wait_for("the projection to apply the backlog", || {
        all_projected(&pool, &stack.events_topic)
    })
    .await?;
    anyhow::ensure!(
        unprojected(&pool).await? == 0,
        "the projection's offsets are at the end, but not its rows"
    );
    let projection = Rate::new("projection", backlog, started.elapsed());
    cpu.push(Usage::now(&stack.parts()).since(&before, "projection, per event", backlog));

    eprintln!("projections rebuild users");
    let stored: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_type = 'User'")
            .fetch_one(&pool)
            .await?;
    let started = Instant::now();
    stack.run(&["projections", "rebuild", "users"]).await?;
    let rebuild = Rate::new(
        "projections rebuild users",
        u64::try_from(stored)?,
        started.elapsed(),
    );

    eprintln!("limits: the broker, a batched upsert");
    let bootstrap = stack.bootstrap_servers.clone();
    let (consume, messages) = consume_all(&bootstrap, &stack.events_topic).await?;
    let produce = produce_all(
        &bootstrap,
        &format!("{}.limit", stack.events_topic),
        &messages,
        crate::stack::BATCH_MESSAGES,
        "broker: produce, the relay's batches (limit)",
    )
    .await?;
    let produce_batched = produce_all(
        &bootstrap,
        &format!("{}.batched", stack.events_topic),
        &messages,
        NORMAL_BATCH_MESSAGES,
        "broker: produce, batched (limit)",
    )
    .await?;
    let upsert = batched_upsert(&pool, backlog).await?;
    Ok(Pipeline {
        backlog,
        relay_batched: Versus::new(relay.clone(), produce_batched, Some(0.5)),
        relay: Versus::new(relay, produce, None),
        projection: Versus::new(projection.clone(), upsert, Some(0.5)),
        projection_consume: Versus::new(projection, consume, None),
        rebuild,
        cpu,
    })
}

/// Polls `done` until it holds.
async fn wait_for<F, Fut>(what: &str, done: F) -> anyhow::Result<()>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let until = Instant::now() + STAGE_LIMIT;
    while !done().await? {
        anyhow::ensure!(Instant::now() < until, "gave up waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

async fn unpublished(pool: &PgPool, topic: &str) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT count(*) FROM events e
          WHERE e.aggregate_type = 'User'
            AND (e.transaction_id, e.position) > coalesce(
                (SELECT (c.transaction_id, c.position) FROM relay_cursors c WHERE c.name = $1),
                ('0'::xid8, 0::bigint))",
    )
    .bind(topic)
    .fetch_one(pool)
    .await?)
}

/// Whether the relay has published everything: one step of the relay's
/// index, where counting would read the whole backlog at every look.
async fn all_published(pool: &PgPool, topic: &str) -> anyhow::Result<bool> {
    Ok(sqlx::query_scalar(
        "SELECT NOT EXISTS (SELECT 1 FROM events e
          WHERE e.aggregate_type = 'User'
            AND (e.transaction_id, e.position) > coalesce(
                (SELECT (c.transaction_id, c.position) FROM relay_cursors c WHERE c.name = $1),
                ('0'::xid8, 0::bigint)))",
    )
    .bind(topic)
    .fetch_one(pool)
    .await?)
}

/// Whether the projection has applied every message the relay published:
/// its lag in `/metrics` is 0 (and it has read the topic at all).
async fn all_projected(pool: &PgPool, topic: &str) -> anyhow::Result<bool> {
    Ok(accountable::observe::projection_lag(pool, topic)
        .await?
        .iter()
        .any(|(projection, behind)| projection == "users" && *behind == 0))
}

/// Events of the store not yet in the read table (every event of a user
/// moves its row's version to its sequence): read once, before stages.
async fn unprojected(pool: &PgPool) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT ((SELECT coalesce(sum(last), 0) FROM
                    (SELECT max(sequence) AS last FROM events WHERE aggregate_type = 'User'
                      GROUP BY aggregate_id) AS heads)
               - (SELECT coalesce(sum(version), 0) FROM users))::bigint",
    )
    .fetch_one(pool)
    .await?)
}

/// Appends `total` `ProfileUpdated` events, round robin over the registered
/// users, each sealed with its user's key as a command would seal it.
async fn append_backlog(pool: &PgPool, vault: &Vault, total: usize) -> anyhow::Result<()> {
    let heads: Vec<(String, i64)> = sqlx::query_as(
        "SELECT aggregate_id, max(sequence) FROM events WHERE aggregate_type = 'User'
          GROUP BY aggregate_id ORDER BY aggregate_id",
    )
    .fetch_all(pool)
    .await?;
    anyhow::ensure!(!heads.is_empty(), "no users to append to");
    let (version, metadata): (String, Value) = sqlx::query_as(
        "SELECT event_version, metadata FROM events WHERE event_type = 'ProfileUpdated' LIMIT 1",
    )
    .fetch_one(pool)
    .await?;
    let mut next: Vec<i64> = heads.iter().map(|(_, last)| last + 1).collect();
    let mut written = 0;
    while written < total {
        let count = CHUNK.min(total - written);
        let (mut ids, mut sequences, mut payloads) = (
            Vec::with_capacity(count),
            Vec::with_capacity(count),
            Vec::with_capacity(count),
        );
        for n in written..written + count {
            let user = n % heads.len();
            ids.push(heads[user].0.clone());
            sequences.push(next[user]);
            next[user] += 1;
            payloads.push(json!({"ProfileUpdated": {"personal": {
                "display_name": format!("Backlog {n}"), "locale": null, "time_zone": null}}}));
        }
        let mut fields = Vec::with_capacity(count);
        for ((id, sequence), payload) in ids.iter().zip(&sequences).zip(&mut payloads) {
            if let Some(fields_of_event) = variant_fields(payload) {
                fields.push(EventFields {
                    user_id: Uuid::parse_str(id)?,
                    sequence: *sequence,
                    fields: fields_of_event,
                });
            }
        }
        vault.seal(&mut fields).await?;
        drop(fields);
        let payloads: Vec<String> = payloads.iter().map(Value::to_string).collect();
        sqlx::query(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
             SELECT 'User', id, sequence, 'ProfileUpdated', $4, payload::json, $5::text::json
               FROM unnest($1::text[], $2::bigint[], $3::text[]) AS t(id, sequence, payload)",
        )
        .bind(&ids)
        .bind(&sequences)
        .bind(&payloads)
        .bind(&version)
        .bind(metadata.to_string())
        .execute(pool)
        .await?;
        written += count;
    }
    Ok(())
}

/// A message as the relay published it.
struct Published {
    key: Vec<u8>,
    payload: Vec<u8>,
    headers: Option<OwnedHeaders>,
}

/// The broker serving the whole events topic to a plain consumer that
/// does nothing with the messages.
async fn consume_all(bootstrap: &str, topic: &str) -> anyhow::Result<(Rate, Vec<Published>)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("{topic}.bench.{}", Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()?;
    let mut expected = 0;
    for partition in 0..PARTITIONS {
        let (low, high) = consumer.fetch_watermarks(topic, partition, Duration::from_secs(10))?;
        expected += high - low;
    }
    let expected = usize::try_from(expected)?;
    consumer.subscribe(&[topic])?;
    let mut messages = Vec::with_capacity(expected);
    let until = Instant::now() + STAGE_LIMIT;
    let started = Instant::now();
    tokio::task::block_in_place(|| -> anyhow::Result<()> {
        while messages.len() < expected {
            anyhow::ensure!(Instant::now() < until, "gave up reading {topic}");
            if let Some(message) = consumer.poll(Duration::from_millis(100)) {
                let message = message?;
                messages.push(Published {
                    key: message.key().unwrap_or_default().to_vec(),
                    payload: message.payload().unwrap_or_default().to_vec(),
                    headers: message
                        .headers()
                        .map(rdkafka::message::BorrowedHeaders::detach),
                });
            }
        }
        Ok(())
    })?;
    let rate = Rate::new(
        "broker: consume (limit)",
        u64::try_from(messages.len())?,
        started.elapsed(),
    );
    Ok((rate, messages))
}

/// Messages per record batch as a Kafka user would set them (librdkafka's
/// default), with the relay's `linger.ms`.
const NORMAL_BATCH_MESSAGES: u32 = 10_000;

/// The broker taking the same messages from a producer set up as the
/// relay's (idempotent, `batch_messages` per record batch), as fast as it
/// can.
async fn produce_all(
    bootstrap: &str,
    topic: &str,
    messages: &[Published],
    batch_messages: u32,
    name: &str,
) -> anyhow::Result<Rate> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()?;
    admin
        .create_topics(
            &[NewTopic::new(topic, PARTITIONS, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await?;
    let producer = accountable::kafka::idempotent_producer(
        bootstrap,
        Duration::from_secs(120),
        batch_messages,
    )?;
    let started = Instant::now();
    let mut in_flight: VecDeque<DeliveryFuture> = VecDeque::new();
    let count = u64::try_from(messages.len())?;
    for message in messages {
        let mut record = FutureRecord::to(topic)
            .key(&message.key)
            .payload(&message.payload);
        if let Some(headers) = &message.headers {
            record = record.headers(headers.clone());
        }
        loop {
            match producer.send_result(record) {
                Ok(delivery) => {
                    in_flight.push_back(delivery);
                    break;
                }
                Err((_, returned)) => {
                    record = returned;
                    let oldest = in_flight
                        .pop_front()
                        .ok_or_else(|| anyhow::anyhow!("the producer takes no message"))?;
                    delivered(oldest.await)?;
                }
            }
        }
    }
    for delivery in in_flight {
        delivered(delivery.await)?;
    }
    Ok(Rate::new(name, count, started.elapsed()))
}

fn delivered<E>(outcome: Result<OwnedDeliveryResult, E>) -> anyhow::Result<()> {
    match outcome {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((error, _))) => Err(error.into()),
        Err(_) => Err(anyhow::anyhow!("the producer dropped a delivery")),
    }
}

/// The rows the projection wrote, upserted again in one statement per
/// batch of [`BATCH`] events, one transaction per batch, as many batches
/// as the backlog makes.
async fn batched_upsert(pool: &PgPool, backlog: u64) -> anyhow::Result<Rate> {
    let rows: Value = sqlx::query_scalar("SELECT jsonb_agg(u) FROM users u")
        .fetch_one(pool)
        .await?;
    let batches = backlog.div_ceil(BATCH as u64);
    let started = Instant::now();
    for _ in 0..batches {
        let mut tx = pool.begin().await?;
        sqlx::query(
            "INSERT INTO users (id, email, display_name, status, roles, locale, time_zone, email_verified, version, created_at, updated_at)
             SELECT id, email, display_name, status, roles, locale, time_zone, email_verified, version, created_at, updated_at
               FROM jsonb_to_recordset($1) AS r(id uuid, email text, display_name text, status text,
                    roles text[], locale text, time_zone text, email_verified boolean, version bigint,
                    created_at timestamptz, updated_at timestamptz)
             ON CONFLICT (id) DO UPDATE SET
                 email = EXCLUDED.email, display_name = EXCLUDED.display_name,
                 status = EXCLUDED.status, roles = EXCLUDED.roles, locale = EXCLUDED.locale,
                 time_zone = EXCLUDED.time_zone, email_verified = EXCLUDED.email_verified, version = EXCLUDED.version,
                 updated_at = EXCLUDED.updated_at",
        )
        .bind(&rows)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
    }
    Ok(Rate::new(
        "direct batched upsert (limit)",
        backlog,
        started.elapsed(),
    ))
}
