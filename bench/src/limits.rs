//! The limits of the parts the service stands on, measured the way the
//! service uses them: PostgreSQL appending the same event rows in the same
//! transaction shape (to a bare table, and to our `events` with its
//! triggers), and a minimal axum + sqlx endpoint reading the same row.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use uuid::Uuid;

use crate::load::{closed_loop, Measurement};

/// A stored `ProfileUpdated` row: what a command appends.
#[derive(Clone, sqlx::FromRow)]
pub struct EventRow {
    event_type: String,
    event_version: String,
    payload: serde_json::Value,
    metadata: serde_json::Value,
}

pub async fn sample_event(pool: &PgPool) -> anyhow::Result<EventRow> {
    Ok(sqlx::query_as(
        "SELECT event_type, event_version, payload, metadata FROM events
          WHERE event_type = 'ProfileUpdated' LIMIT 1",
    )
    .fetch_one(pool)
    .await?)
}

/// Where an append goes.
#[derive(Debug, Clone, Copy)]
pub enum AppendTo {
    /// A table shaped as `events` (columns, keys, indexes) without its
    /// triggers (the hash chain, the relay's wake-up, the session ends):
    /// what PostgreSQL itself takes.
    Bare,
    /// `events` itself, triggers and all.
    Events,
}

impl AppendTo {
    fn table(self) -> &'static str {
        match self {
            Self::Bare => "bench_bare_append",
            Self::Events => "events",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Bare => "PostgreSQL bare append (limit)",
            Self::Events => "PostgreSQL append to events (limit)",
        }
    }
}

/// One event row per transaction, each worker on a stream of its own (a
/// type the relay does not publish), through a pool as large as the
/// service's.
pub async fn append(
    database_url: &str,
    pool_size: u32,
    event: EventRow,
    to: AppendTo,
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<Measurement> {
    let pool = PgPoolOptions::new()
        .max_connections(pool_size)
        .connect(database_url)
        .await?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS bench_bare_append
           (LIKE events INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING INDEXES INCLUDING IDENTITY)",
    )
    .execute(&pool)
    .await?;
    // The bare table gets the chain's hash as a writer that computes it
    // would give it; `events` computes it in its trigger.
    let insert = match to {
        AppendTo::Bare => format!(
            "INSERT INTO {} (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, hash)
             VALUES ('BenchAppend', $1, $2, $3, $4, $5, $6, sha256(convert_to($5::text, 'UTF8')))",
            to.table()
        ),
        AppendTo::Events => format!(
            "INSERT INTO {} (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
             VALUES ('BenchAppend', $1, $2, $3, $4, $5, $6)",
            to.table()
        ),
    };
    let streams: Arc<Vec<String>> = Arc::new(
        (0..concurrency)
            .map(|_| Uuid::new_v4().to_string())
            .collect(),
    );
    let event = Arc::new(event);
    let insert = Arc::new(insert);
    let measured = closed_loop(to.name(), concurrency, duration, {
        let pool = pool.clone();
        move |worker, n| {
            let (pool, streams, event, insert) =
                (pool.clone(), streams.clone(), event.clone(), insert.clone());
            async move {
                let append = async {
                    let mut tx = pool.begin().await?;
                    sqlx::query(&insert)
                        .bind(&streams[worker])
                        .bind(i64::try_from(n).unwrap_or(i64::MAX - 1) + 1)
                        .bind(&event.event_type)
                        .bind(&event.event_version)
                        .bind(&event.payload)
                        .bind(&event.metadata)
                        .execute(&mut *tx)
                        .await?;
                    tx.commit().await
                };
                append.await.is_ok()
            }
        }
    })
    .await;
    // The rows appended to `events` go: left there, every later batch of
    // the relay, the mailer and the live feed would walk past them (their
    // streams are of a type none of them follows), which no real store
    // holds.
    if let AppendTo::Events = to {
        sqlx::query("DELETE FROM events WHERE aggregate_type = 'BenchAppend'")
            .execute(&pool)
            .await?;
        sqlx::query("VACUUM events").execute(&pool).await?;
    }
    // A limit that failed is no limit: say so rather than compare with it.
    anyhow::ensure!(
        measured.failures == 0,
        "{}: {} appends failed",
        to.name(),
        measured.failures
    );
    Ok(measured)
}

/// A minimal axum + sqlx endpoint: `GET /users/{id}` answers the row as JSON.
pub async fn minimal_endpoint(database_url: &str, pool_size: u32) -> anyhow::Result<String> {
    let pool = PgPoolOptions::new()
        .max_connections(pool_size)
        .connect(database_url)
        .await?;
    let app = Router::new()
        .route("/users/{id}", get(user))
        .with_state(pool);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(url)
}

async fn user(State(pool): State<PgPool>, Path(id): Path<Uuid>) -> Json<serde_json::Value> {
    let row: Option<serde_json::Value> =
        sqlx::query_scalar("SELECT to_jsonb(u) FROM users u WHERE id = $1")
            .bind(id)
            .fetch_optional(&pool)
            .await
            .ok()
            .flatten();
    Json(row.unwrap_or(serde_json::Value::Null))
}
