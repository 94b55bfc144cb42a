//! The compacted state topic: every user's latest state, keyed by user id,
//! personal data included (for consumers entitled to it), and a tombstone
//! once the user is deleted or erased, so that a new consumer bootstraps
//! without replaying all history.
//!
//! Published from the read table, after the projection: a row whose
//! `state_version` is behind its `version` is (re)published and marked once
//! the broker acknowledged it, so a crash anywhere leaves rows to publish,
//! never lost ones. One publisher leads at a time (a PostgreSQL advisory
//! lock), so a key's values reach the topic in version order.

use std::time::Duration;

use accountable_projections::users::UserRow;
use accountable_projections::worker::PROJECTED_CHANNEL;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use serde_json::json;
use sqlx::{Connection, PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::config::KafkaConfig;
use crate::db;
use crate::kafka::{self, RenewingProducer};

#[derive(Debug, Clone)]
pub struct StateConfig {
    pub bootstrap_servers: String,
    pub topic: String,
    pub partitions: i32,
    pub replication: i32,
    /// The topic's `max.compaction.lag.ms` and `segment.ms`.
    pub max_compaction_lag: Duration,
    pub batch_messages: u32,
    pub poll_interval: Duration,
}

impl From<&KafkaConfig> for StateConfig {
    fn from(kafka: &KafkaConfig) -> Self {
        Self {
            bootstrap_servers: kafka.bootstrap_servers.clone(),
            topic: kafka.state_topic.clone(),
            partitions: kafka.topic_partitions,
            replication: kafka.topic_replication,
            max_compaction_lag: Duration::from_millis(kafka.state_max_compaction_lag_ms),
            batch_messages: kafka.relay_batch_messages,
            poll_interval: Duration::from_millis(kafka.relay_poll_ms.max(100)),
        }
    }
}

const TRY_LEAD: &str = "SELECT pg_try_advisory_lock(hashtext('accountable.state'))";
/// Answers on the session that holds the lead only while it lives.
const STILL_LEADS: &str = "SELECT 1";
const PENDING: &str = "
SELECT id, email, display_name, status, roles, locale, time_zone, email_verified, version, created_at, updated_at
  FROM users WHERE state_version IS DISTINCT FROM version LIMIT 500";
/// Marks a batch's states published, in one statement; a row that moved on
/// meanwhile stays pending.
const MARK: &str = "
UPDATE users u SET state_version = m.version
  FROM unnest($1::uuid[], $2::bigint[]) AS m(id, version)
 WHERE u.id = m.id AND u.version = m.version";
/// How long a tombstone stays for consumers to see the deletion.
const TOMBSTONE_RETENTION_MS: &str = "86400000";

pub struct StatePublisher {
    pool: PgPool,
    config: StateConfig,
    producer: RenewingProducer,
}

/// The state of a user as the topic carries it; `None` is a tombstone.
pub fn state_value(row: &UserRow) -> Option<serde_json::Value> {
    if row.status.is_gone() {
        return None;
    }
    Some(json!({
        "id": row.id,
        "version": row.version,
        "status": row.status,
        "roles": row.roles,
        "email": row.email,
        "display_name": row.display_name,
        "locale": row.locale,
        "time_zone": row.time_zone,
        "email_verified": row.email_verified,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
    }))
}

impl StatePublisher {
    pub fn new(pool: PgPool, config: StateConfig) -> anyhow::Result<Self> {
        let producer = RenewingProducer::new(
            &config.bootstrap_servers,
            Duration::from_secs(120),
            config.batch_messages,
        )?;
        Ok(Self {
            pool,
            config,
            producer,
        })
    }

    /// Publishes until `shutdown`, leading when no other publisher does.
    pub async fn run(mut self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let lag = self.config.max_compaction_lag.as_millis().to_string();
        kafka::ensure_topic_with(
            &self.config.bootstrap_servers,
            &self.config.topic,
            self.config.partitions,
            self.config.replication,
            &[
                ("cleanup.policy", "compact"),
                ("max.compaction.lag.ms", &lag),
                ("segment.ms", &lag),
                ("min.cleanable.dirty.ratio", "0.01"),
                ("delete.retention.ms", TOMBSTONE_RETENTION_MS),
            ],
        )
        .await?;
        let mut listener = db::listener(&self.pool).await?;
        listener.listen(PROJECTED_CHANNEL).await?;
        let mut lead: Option<PgConnection> = None;
        loop {
            if lead.is_none() {
                let mut conn = PgConnection::connect_with(&self.pool.connect_options()).await?;
                let leads: bool = sqlx::query_scalar(TRY_LEAD).fetch_one(&mut conn).await?;
                if leads {
                    lead = Some(conn);
                }
            }
            if let Some(conn) = lead.as_mut() {
                match self.publish_pending(conn).await {
                    Ok(()) => {}
                    Err(Publishing::LostLead(error)) => {
                        tracing::warn!(error = %error, "lost the lead of the state topic");
                        lead = None;
                    }
                    Err(Publishing::Failed(error)) => {
                        tracing::warn!(error = %error, "cannot publish user states; retrying");
                        self.producer.renew()?;
                    }
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = listener.recv() => {}
                _ = tokio::time::sleep(self.config.poll_interval) => {}
            }
        }
    }

    /// Publishes every row whose state the topic does not have yet, making
    /// sure before each batch that this publisher still leads: the lock
    /// lives as long as the session of `lead`, and once that session is
    /// gone another publisher may lead, whose values must not be overtaken
    /// by older ones of ours.
    async fn publish_pending(&self, lead: &mut PgConnection) -> Result<(), Publishing> {
        loop {
            sqlx::query(STILL_LEADS)
                .execute(&mut *lead)
                .await
                .map_err(Publishing::LostLead)?;
            if !self.publish_batch().await.map_err(Publishing::Failed)? {
                return Ok(());
            }
        }
    }

    /// Publishes one batch of pending rows; `false` when none was left.
    async fn publish_batch(&self) -> anyhow::Result<bool> {
        let rows: Vec<UserRow> = sqlx::query_as(PENDING).fetch_all(&self.pool).await?;
        if rows.is_empty() {
            return Ok(false);
        }
        let messages: Vec<(String, Option<String>, String)> = rows
            .iter()
            .map(|row| {
                (
                    row.id.to_string(),
                    state_value(row).map(|v| v.to_string()),
                    row.version.to_string(),
                )
            })
            .collect();
        let mut deliveries = Vec::with_capacity(rows.len());
        for (key, value, version) in &messages {
            let headers = OwnedHeaders::new()
                .insert(Header {
                    key: "content-type",
                    value: Some("application/json"),
                })
                .insert(Header {
                    key: "version",
                    value: Some(version.as_str()),
                });
            let mut record = FutureRecord::<String, String>::to(&self.config.topic)
                .key(key)
                .headers(headers);
            if let Some(value) = value {
                record = record.payload(value);
            }
            deliveries.push(
                self.producer
                    .producer()
                    .send(record, Duration::from_secs(120)),
            );
        }
        for (row, delivery) in rows.iter().zip(futures::future::join_all(deliveries).await) {
            if let Err((error, _)) = delivery {
                anyhow::bail!("the broker refused the state of {}: {error}", row.id);
            }
        }
        let (ids, versions): (Vec<Uuid>, Vec<i64>) =
            rows.iter().map(|row| (row.id, row.version)).unzip();
        sqlx::query(MARK)
            .bind(&ids)
            .bind(&versions)
            .execute(&self.pool)
            .await?;
        Ok(true)
    }
}

/// Why publishing stopped.
enum Publishing {
    /// The session that held the lead is gone.
    LostLead(sqlx::Error),
    Failed(anyhow::Error),
}

#[cfg(test)]
mod tests {
    use accountable_domain::{Role, UserStatus};
    use chrono::Utc;
    use uuid::Uuid;

    use super::*;

    fn row(status: UserStatus) -> UserRow {
        UserRow {
            id: Uuid::now_v7(),
            email: Some("ada@example.com".into()),
            display_name: Some("Ada".into()),
            status,
            roles: vec![Role::User],
            locale: Some("en-GB".into()),
            time_zone: None,
            email_verified: true,
            version: 3,
            created_at: Utc::now(),
            updated_at: Utc::now(),
        }
    }

    #[test]
    fn states_match_their_schema_and_the_gone_are_tombstones() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/contract/schemas/accountable.user.state.v1.json"
        );
        let schema: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let validator = jsonschema::options()
            .should_validate_formats(true)
            .build(&schema)
            .unwrap();
        for status in [UserStatus::Active, UserStatus::Deactivated] {
            let value = state_value(&row(status)).unwrap();
            let errors: Vec<String> = validator
                .iter_errors(&value)
                .map(|e| e.to_string())
                .collect();
            assert!(errors.is_empty(), "{errors:?}");
        }
        for status in [UserStatus::Deleted, UserStatus::Erased] {
            assert_eq!(state_value(&row(status)), None);
        }
        assert!(validator.is_valid(&serde_json::Value::Null), "a tombstone");
        assert!(!validator.is_valid(&json!({"id": "x"})));
    }
}
