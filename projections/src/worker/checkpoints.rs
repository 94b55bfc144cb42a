//! The offsets kept with the rows: read to resume, written with each
//! batch, read again from the start when the relay wrote a partition anew
//! (a later generation), and committed to Kafka for lag tools.

use std::collections::{BTreeMap, HashMap};

use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::message::{Headers, Message, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};
use sqlx::PgConnection;

use super::*;

pub(super) const SELECT_CHECKPOINTS: &str = "
SELECT partition, next_offset, generation FROM projection_checkpoints
 WHERE projection = $1 AND topic = $2";

/// A partition written anew (a later generation): read from its start.
pub(super) const READ_AGAIN: &str = "
INSERT INTO projection_checkpoints (projection, topic, partition, next_offset, generation)
VALUES ($1, $2, $3, 0, $4)
ON CONFLICT (projection, topic, partition) DO UPDATE
   SET next_offset = 0, generation = EXCLUDED.generation, updated_at = now()";

impl Worker {
    /// The relay wrote these partitions anew (a later generation): their
    /// offsets refer to messages that are gone, so they are read again from
    /// their start; re-applying what is already applied changes nothing.
    pub(super) async fn read_again(
        &self,
        ownership: &mut Ownership,
        rewritten: &BTreeMap<i32, i64>,
    ) -> anyhow::Result<()> {
        let Some(conn) = ownership.conn.as_mut() else {
            return Ok(());
        };
        for (partition, generation) in rewritten {
            tracing::warn!(
                partition,
                generation,
                "the topic was written anew; reading the partition again"
            );
            sqlx::query(READ_AGAIN)
                .bind(USERS)
                .bind(&self.config.topic)
                .bind(partition)
                .bind(generation)
                .execute(&mut *conn)
                .await?;
        }
        self.assign(ownership).await
    }

    /// Commits the offsets after what the database holds to Kafka.
    pub(super) fn commit_offsets(
        &self,
        next: &BTreeMap<(String, i32), i64>,
        mode: CommitMode,
    ) -> anyhow::Result<()> {
        let mut offsets = TopicPartitionList::new();
        for ((topic, partition), next) in next {
            offsets.add_partition_offset(topic, *partition, Offset::Offset(*next))?;
        }
        if let Err(error) = self.consumer.commit(&offsets, mode) {
            // The rows are committed; a lost offset commit only means a
            // harmless re-delivery.
            tracing::warn!(error = %error, "offset commit failed");
        }
        Ok(())
    }
}

/// The largest `value` of the batch's messages, per topic and partition.
pub(super) fn per_partition_max(
    batch: &[OwnedMessage],
    value: impl Fn(&OwnedMessage) -> i64,
) -> BTreeMap<(String, i32), i64> {
    let mut largest = BTreeMap::new();
    for message in batch {
        let value = value(message);
        largest
            .entry((message.topic().to_owned(), message.partition()))
            .and_modify(|largest: &mut i64| *largest = (*largest).max(value))
            .or_insert(value);
    }
    largest
}

/// The offset after the last message of each partition in the batch.
pub(super) fn next_offsets(batch: &[OwnedMessage]) -> BTreeMap<(String, i32), i64> {
    per_partition_max(batch, |message| message.offset() + 1)
}

/// The generation a message carries (`ce_generation`; 1 when absent).
pub(super) fn generation(message: &OwnedMessage) -> i64 {
    message
        .headers()
        .and_then(|headers| {
            headers
                .iter()
                .find(|header| header.key == "ce_generation")
                .and_then(|header| std::str::from_utf8(header.value?).ok()?.parse().ok())
        })
        .unwrap_or(1)
}

/// The latest generation of a batch's messages, per topic and partition.
pub(super) type Generations = BTreeMap<(String, i32), i64>;

/// The latest generation in the batch, per partition.
pub(super) fn generations(batch: &[OwnedMessage]) -> Generations {
    per_partition_max(batch, generation)
}

/// The partitions whose messages carry (`latest`) a later generation than
/// the one their offsets refer to (`known`), with that generation.
pub(super) fn rewritten_partitions(
    latest: &Generations,
    known: &HashMap<i32, i64>,
) -> BTreeMap<i32, i64> {
    latest
        .iter()
        .filter(|((_, partition), latest)| {
            known.get(partition).is_some_and(|known| *latest > known)
        })
        .map(|((_, partition), latest)| (*partition, *latest))
        .collect()
}

pub(super) async fn save_checkpoints(
    conn: &mut PgConnection,
    batch: &[OwnedMessage],
    latest: &Generations,
) -> sqlx::Result<()> {
    for ((topic, partition), next) in next_offsets(batch) {
        let generation = latest
            .get(&(topic.clone(), partition))
            .copied()
            .unwrap_or(1);
        sqlx::query(
            "INSERT INTO projection_checkpoints (projection, topic, partition, next_offset, generation)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (projection, topic, partition) DO UPDATE
                SET next_offset = GREATEST(projection_checkpoints.next_offset, EXCLUDED.next_offset),
                    generation = GREATEST(projection_checkpoints.generation, EXCLUDED.generation),
                    updated_at = now()",
        )
        .bind(USERS)
        .bind(&topic)
        .bind(partition)
        .bind(next)
        .bind(generation)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::Timestamp;

    use super::*;

    pub(super) fn message(partition: i32, offset: i64, generation: Option<&str>) -> OwnedMessage {
        let headers = generation.map(|value| {
            OwnedHeaders::new().insert(Header {
                key: "ce_generation",
                value: Some(value),
            })
        });
        OwnedMessage::new(
            None,
            None,
            "t".into(),
            Timestamp::NotAvailable,
            partition,
            offset,
            headers,
        )
    }

    #[test]
    pub(super) fn a_later_generation_on_a_partition_with_offsets_means_reading_it_again() {
        let known = HashMap::from([(0, 1), (1, 1), (2, 3)]);
        let batch = [
            message(0, 7, Some("1")),
            message(1, 8, Some("1")),
            message(1, 0, Some("2")),
            message(2, 0, Some("3")),
            // No offsets kept yet: nothing to read again.
            message(3, 0, Some("5")),
            // Without the header (earlier relays): generation 1.
            message(0, 8, None),
        ];
        let latest = generations(&batch);
        assert_eq!(
            rewritten_partitions(&latest, &known),
            BTreeMap::from([(1, 2)])
        );
        assert_eq!(latest[&("t".to_owned(), 3)], 5);
        assert_eq!(latest[&("t".to_owned(), 0)], 1);
    }
}
