//! The event repository of the write side: postgres-es, with the personal
//! fields of every event sealed on the way in and opened on the way out, so
//! that the aggregate sees clear values and the store holds none.
//!
//! Every commit also keeps a snapshot of the aggregate, sealed whole under
//! its user's key, so that a command reads one row and the events after it
//! rather than the user's whole history. The snapshot is a cache of the
//! events: it is written in the same statement as them, only ever moves
//! forward, an erasure keeps none, and one that does not open is ignored.

use std::sync::Arc;

use accountable_vault::{EventFields, Vault, SNAPSHOT};
use cqrs_es::persist::{
    PersistedEventRepository, PersistenceError, ReplayStream, SerializedEvent, SerializedSnapshot,
};
use cqrs_es::Aggregate;
use postgres_es::PostgresEventRepository;
use serde_json::{Map, Value};
use sqlx::PgPool;
use uuid::Uuid;

use super::wake::Wake;

const SELECT_SNAPSHOT: &str = "
SELECT last_sequence, payload FROM snapshots WHERE aggregate_type = $1 AND aggregate_id = $2";
/// The events of one commit and the snapshot after them, in one statement
/// (so in one transaction and one round trip). A later snapshot replaces
/// an earlier one, never the other way round (two commands may finish in
/// either order); none is written with a `NULL` payload. A second writer of
/// the same sequence fails on the primary key: the optimistic lock.
const APPEND: &str = "
WITH appended AS (
    INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
    SELECT $1, $2, sequence, event_type, event_version, payload::json, metadata::json
      FROM unnest($3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[])
           AS t(sequence, event_type, event_version, payload, metadata)
     ORDER BY sequence
    RETURNING sequence
)
INSERT INTO snapshots (aggregate_type, aggregate_id, last_sequence, payload)
SELECT $1, $2, (SELECT max(sequence) FROM appended), $8
 WHERE $8::jsonb IS NOT NULL
ON CONFLICT (aggregate_type, aggregate_id) DO UPDATE
   SET last_sequence = EXCLUDED.last_sequence, payload = EXCLUDED.payload
 WHERE snapshots.last_sequence < EXCLUDED.last_sequence";
const UNIQUE_VIOLATION: &str = "23505";
const SELECT_AGGREGATE_IDS: &str =
    "SELECT DISTINCT aggregate_id FROM events WHERE aggregate_type = $1 ORDER BY aggregate_id";

pub struct SealedRepository {
    inner: PostgresEventRepository,
    pool: PgPool,
    vault: Arc<Vault>,
    wake: Wake,
}

impl SealedRepository {
    pub fn new(pool: PgPool, vault: Arc<Vault>) -> Self {
        Self {
            inner: PostgresEventRepository::new(pool.clone()),
            wake: Wake::start(pool.clone()),
            pool,
            vault,
        }
    }

    async fn unsealed(
        &self,
        mut events: Vec<SerializedEvent>,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        let mut fields = event_fields(&mut events)?;
        self.vault.unseal(&mut fields).await.map_err(unknown)?;
        Ok(events)
    }
}

/// The variant object of a stored payload (`{"UserRegistered": {...}}`).
pub fn variant_fields(payload: &mut Value) -> Option<&mut Map<String, Value>> {
    payload
        .as_object_mut()
        .and_then(|variant| variant.values_mut().next())
        .and_then(Value::as_object_mut)
}

fn event_fields(events: &mut [SerializedEvent]) -> Result<Vec<EventFields<'_>>, PersistenceError> {
    let mut all = Vec::with_capacity(events.len());
    for event in events.iter_mut() {
        let user_id = Uuid::parse_str(&event.aggregate_id).map_err(unknown)?;
        let sequence = i64::try_from(event.sequence).map_err(unknown)?;
        if let Some(fields) = variant_fields(&mut event.payload) {
            all.push(EventFields {
                user_id,
                sequence,
                fields,
            });
        }
    }
    Ok(all)
}

/// The stored type of an erasure, which keeps no snapshot.
const ERASED: &str = "UserErased";

/// One commit holds the events of one aggregate.
#[derive(Debug, thiserror::Error)]
#[error("a commit held the events of more than one aggregate")]
struct MixedCommit;

fn unknown(error: impl std::error::Error + Send + Sync + 'static) -> PersistenceError {
    PersistenceError::UnknownError(Box::new(error))
}

impl PersistedEventRepository for SealedRepository {
    async fn get_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        let events = self.inner.get_events::<A>(aggregate_id).await?;
        self.unsealed(events).await
    }

    async fn get_last_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
        last_sequence: usize,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        let events = self
            .inner
            .get_last_events::<A>(aggregate_id, last_sequence)
            .await?;
        self.unsealed(events).await
    }

    /// The user's snapshot, opened; `None` when there is none or it does not
    /// open (erased user, or a snapshot that was tampered with): the events
    /// are the truth, and cqrs-es then folds all of them.
    async fn get_snapshot<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Option<SerializedSnapshot>, PersistenceError> {
        let row: Option<(i64, Value)> = sqlx::query_as(SELECT_SNAPSHOT)
            .bind(A::TYPE)
            .bind(aggregate_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(unknown)?;
        let Some((last_sequence, mut payload)) = row else {
            return Ok(None);
        };
        let user_id = Uuid::parse_str(aggregate_id).map_err(unknown)?;
        let Some(fields) = payload.as_object_mut() else {
            return Ok(None);
        };
        let mut snapshot = [EventFields {
            user_id,
            sequence: last_sequence,
            fields,
        }];
        if let Err(error) = self.vault.unseal(&mut snapshot).await {
            tracing::warn!(%user_id, error = %error, "snapshot ignored: it does not open");
            return Ok(None);
        }
        let aggregate = snapshot[0].fields.remove(SNAPSHOT).unwrap_or(Value::Null);
        if aggregate.is_null() {
            return Ok(None);
        }
        Ok(Some(SerializedSnapshot {
            aggregate_id: aggregate_id.to_owned(),
            aggregate,
            current_sequence: usize::try_from(last_sequence).map_err(unknown)?,
            current_snapshot: 0,
        }))
    }

    /// Appends the events and keeps the snapshot after them, both sealed in
    /// one pass (the user's key is read once) and written in one statement.
    /// An erasure keeps no snapshot: its key is gone.
    #[tracing::instrument(name = "append", skip_all, fields(events = events.len()))]
    async fn persist<A: Aggregate>(
        &self,
        events: &[SerializedEvent],
        snapshot_update: Option<(String, Value, usize)>,
    ) -> Result<(), PersistenceError> {
        let Some(last) = events.last() else {
            return Ok(());
        };
        let aggregate_id = last.aggregate_id.clone();
        if events
            .iter()
            .any(|event| event.aggregate_id != aggregate_id)
        {
            return Err(unknown(MixedCommit));
        }
        let user_id = Uuid::parse_str(&aggregate_id).map_err(unknown)?;
        let last_sequence = i64::try_from(last.sequence).map_err(unknown)?;
        let erasing = events.iter().any(|event| event.event_type == ERASED);
        let mut snapshot = snapshot_update
            .filter(|_| !erasing)
            .map(|(_, aggregate, _)| Map::from_iter([(SNAPSHOT.to_owned(), aggregate)]));
        let mut sealed = events.to_vec();
        let mut fields = event_fields(&mut sealed)?;
        if let Some(fields_of_snapshot) = snapshot.as_mut() {
            fields.push(EventFields {
                user_id,
                sequence: last_sequence,
                fields: fields_of_snapshot,
            });
        }
        self.vault.seal(&mut fields).await.map_err(unknown)?;
        drop(fields);
        let mut sequences = Vec::with_capacity(sealed.len());
        for event in &sealed {
            sequences.push(i64::try_from(event.sequence).map_err(unknown)?);
        }
        let texts = |part: fn(&SerializedEvent) -> String| -> Vec<String> {
            sealed.iter().map(part).collect()
        };
        let appended = sqlx::query(APPEND)
            .bind(A::TYPE)
            .bind(&aggregate_id)
            .bind(&sequences)
            .bind(texts(|e| e.event_type.clone()))
            .bind(texts(|e| e.event_version.clone()))
            .bind(texts(|e| e.payload.to_string()))
            .bind(texts(|e| e.metadata.to_string()))
            .bind(snapshot.map(Value::Object))
            .execute(&self.pool)
            .await;
        match appended {
            Ok(_) => {
                self.wake.committed();
                Ok(())
            }
            Err(sqlx::Error::Database(error))
                if error.code().as_deref() == Some(UNIQUE_VIOLATION) =>
            {
                Err(PersistenceError::OptimisticLockError)
            }
            Err(error) => Err(PersistenceError::ConnectionError(Box::new(error))),
        }
    }

    async fn stream_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<ReplayStream, PersistenceError> {
        let events = self.get_events::<A>(aggregate_id).await?;
        let (mut feed, stream) = ReplayStream::new(events.len().max(1));
        for event in events {
            feed.push(Ok(event)).await?;
        }
        Ok(stream)
    }

    /// Every aggregate's events, one aggregate after another.
    async fn stream_all_events<A: Aggregate>(&self) -> Result<ReplayStream, PersistenceError> {
        let ids: Vec<String> = sqlx::query_scalar(SELECT_AGGREGATE_IDS)
            .bind(A::TYPE)
            .fetch_all(&self.pool)
            .await
            .map_err(unknown)?;
        let (mut feed, stream) = ReplayStream::new(100);
        let repository = Self {
            inner: PostgresEventRepository::new(self.pool.clone()),
            pool: self.pool.clone(),
            vault: self.vault.clone(),
            wake: self.wake.clone(),
        };
        tokio::spawn(async move {
            for id in ids {
                let events = match repository.get_events::<A>(&id).await {
                    Ok(events) => events,
                    Err(error) => {
                        let _ = feed.push(Err(error)).await;
                        return;
                    }
                };
                for event in events {
                    if feed.push(Ok(event)).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(stream)
    }
}
