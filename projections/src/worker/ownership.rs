//! Which worker owns which partition: session advisory locks on one
//! PostgreSQL connection, claimed while free, released by a worker's death.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use rdkafka::consumer::Consumer;
use rdkafka::{Offset, TopicPartitionList};
use sqlx::PgConnection;

use super::checkpoints::SELECT_CHECKPOINTS;
use super::*;

/// How often a worker looks for partitions no live worker owns.
pub(super) const CLAIM_EVERY: Duration = Duration::from_secs(2);

/// Claims one partition of a projection for this session, if free.
pub(super) const TRY_CLAIM: &str = "SELECT pg_try_advisory_lock(hashtext($1), $2)";

/// The partitions this worker owns: session advisory locks on one
/// PostgreSQL connection. When the worker dies, its connection closes, the
/// locks go with it, and other workers claim the partitions.
#[derive(Default)]
pub(super) struct Ownership {
    pub(super) conn: Option<PgConnection>,
    pub(super) partitions: BTreeSet<i32>,
    /// The generation each owned partition's offsets refer to.
    pub(super) generations: HashMap<i32, i64>,
}

impl Worker {
    /// Claims the partitions of the topic that no live worker owns, and
    /// consumes every owned partition from the offset after the last batch
    /// applied to the database, which is kept with the rows.
    pub(super) async fn claim(&self, ownership: &mut Ownership) -> anyhow::Result<()> {
        let partitions = self.partition_count().await?;
        if ownership.conn.is_none() {
            ownership.conn = Some(self.applier.pool.acquire().await?.detach());
            ownership.partitions.clear();
        }
        let Some(conn) = ownership.conn.as_mut() else {
            return Ok(());
        };
        // The locks live as long as this session: if it has ended (the
        // database restarted, the session was terminated), so has the
        // ownership, and another worker may hold the partitions by now.
        sqlx::query("SELECT 1").execute(&mut *conn).await?;
        let mut claimed = Vec::new();
        for partition in 0..partitions {
            if ownership.partitions.contains(&partition) {
                continue;
            }
            let free: bool = sqlx::query_scalar(TRY_CLAIM)
                .bind(&self.config.group_id)
                .bind(partition)
                .fetch_one(&mut *conn)
                .await?;
            if free {
                ownership.partitions.insert(partition);
                claimed.push(partition);
            }
        }
        if claimed.is_empty() {
            return Ok(());
        }
        self.assign(ownership).await?;
        tracing::info!(claimed = ?claimed, owned = ?ownership.partitions, "partitions claimed");
        Ok(())
    }

    /// Consumes every owned partition from the offset after the last batch
    /// applied to the database.
    pub(super) async fn assign(&self, ownership: &mut Ownership) -> anyhow::Result<()> {
        let Some(conn) = ownership.conn.as_mut() else {
            return Ok(());
        };
        let checkpoints: Vec<(i32, i64, i64)> = sqlx::query_as(SELECT_CHECKPOINTS)
            .bind(USERS)
            .bind(&self.config.topic)
            .fetch_all(&mut *conn)
            .await?;
        let checkpoints: HashMap<i32, (i64, i64)> = checkpoints
            .into_iter()
            .map(|(partition, next, generation)| (partition, (next, generation)))
            .collect();
        let mut assignment = TopicPartitionList::new();
        ownership.generations.clear();
        for partition in &ownership.partitions {
            let offset = match checkpoints.get(partition) {
                Some((next, generation)) => {
                    ownership.generations.insert(*partition, *generation);
                    Offset::Offset(*next)
                }
                None => Offset::Beginning,
            };
            assignment.add_partition_offset(&self.config.topic, *partition, offset)?;
        }
        self.consumer.assign(&assignment)?;
        Ok(())
    }

    /// How many partitions the topic has (0 while it does not exist).
    pub(super) async fn partition_count(&self) -> anyhow::Result<i32> {
        let consumer = self.consumer.clone();
        let topic = self.config.topic.clone();
        let metadata = tokio::task::spawn_blocking(move || {
            consumer.fetch_metadata(Some(&topic), Duration::from_secs(5))
        })
        .await??;
        let count = metadata
            .topics()
            .iter()
            .find(|t| t.name() == self.config.topic && t.error().is_none())
            .map_or(0, |t| t.partitions().len());
        Ok(i32::try_from(count)?)
    }
}
