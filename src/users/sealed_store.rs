//! The event repository of the write side: postgres-es, with the personal
//! fields of every event sealed on the way in and opened on the way out, so
//! that the aggregate sees clear values and the store holds none.

use std::sync::Arc;

use accountable_vault::{EventFields, Vault};
use cqrs_es::persist::{
    PersistedEventRepository, PersistenceError, ReplayStream, SerializedEvent, SerializedSnapshot,
};
use cqrs_es::Aggregate;
use postgres_es::PostgresEventRepository;
use serde_json::{Map, Value};
use sqlx::PgPool;
use uuid::Uuid;

const SELECT_AGGREGATE_IDS: &str =
    "SELECT DISTINCT aggregate_id FROM events WHERE aggregate_type = $1 ORDER BY aggregate_id";

pub struct SealedRepository {
    inner: PostgresEventRepository,
    pool: PgPool,
    vault: Arc<Vault>,
}

impl SealedRepository {
    pub fn new(pool: PgPool, vault: Arc<Vault>) -> Self {
        Self {
            inner: PostgresEventRepository::new(pool.clone()),
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

fn unknown(error: impl std::error::Error + Send + Sync + 'static) -> PersistenceError {
    PersistenceError::UnknownError(Box::new(error))
}

/// Snapshots would hold an aggregate's personal data in clear.
#[derive(Debug, thiserror::Error)]
#[error("snapshots are not kept: they would hold personal data in clear")]
struct NoSnapshots;

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

    async fn get_snapshot<A: Aggregate>(
        &self,
        _aggregate_id: &str,
    ) -> Result<Option<SerializedSnapshot>, PersistenceError> {
        Ok(None)
    }

    async fn persist<A: Aggregate>(
        &self,
        events: &[SerializedEvent],
        snapshot_update: Option<(String, Value, usize)>,
    ) -> Result<(), PersistenceError> {
        if snapshot_update.is_some() {
            return Err(unknown(NoSnapshots));
        }
        let mut sealed = events.to_vec();
        let mut fields = event_fields(&mut sealed)?;
        self.vault.seal(&mut fields).await.map_err(unknown)?;
        self.inner.persist::<A>(&sealed, None).await
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
