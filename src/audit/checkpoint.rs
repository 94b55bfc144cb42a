//! Signed checkpoints of the heads of all streams: what makes a deleted
//! tail, a deleted stream or a rewritten chain detectable.

use std::collections::BTreeMap;

use jsonwebtoken::{Algorithm, DecodingKey};
use sha2::{Digest, Sha256};
use sqlx::PgPool;

use super::chain::hex;
use crate::auth::keys::KeyRing;
use crate::auth::Clock;
use crate::background::Background;
use crate::store::{Bound, CommittedRead};

/// A stream's head: its last sequence and that event's hash.
pub type Heads = BTreeMap<String, (i64, Vec<u8>)>;

const LOCK: &str = "SELECT pg_advisory_xact_lock(hashtext('accountable.audit.checkpoint'))";
const LAST: &str =
    "SELECT id, xid_bound::text, signature FROM audit_checkpoints ORDER BY id DESC LIMIT 1";
/// The head of every stream: its last event.
const HEAD_COLUMNS: &str =
    "DISTINCT ON (aggregate_type, aggregate_id) aggregate_type || '/' || aggregate_id, sequence, hash";
const HEAD_ORDER: &str = " ORDER BY aggregate_type, aggregate_id, sequence DESC";
const INSERT: &str = "
INSERT INTO audit_checkpoints (id, xid_bound, streams, heads_digest, previous_signature, kid, signature)
VALUES ($1, $2::xid8, $3, $4, $5, $6, $7)";
const INSERT_HEAD: &str = "
INSERT INTO audit_checkpoint_heads (checkpoint_id, aggregate_type, aggregate_id, sequence, hash)
VALUES ($1, $2, $3, $4, $5)";

#[derive(Debug, sqlx::FromRow)]
pub struct Checkpoint {
    pub id: i64,
    pub xid_bound: String,
    pub streams: i64,
    pub heads_digest: Vec<u8>,
    pub previous_signature: Option<String>,
    pub kid: String,
    pub signature: String,
}

/// SHA-256 over `stream:sequence:hex hash\n` of every head, in stream order.
pub fn digest(heads: &Heads) -> Vec<u8> {
    let mut hasher = Sha256::new();
    for (stream, (sequence, hash)) in heads {
        hasher.update(format!("{stream}:{sequence}:{}\n", hex(hash)).as_bytes());
    }
    hasher.finalize().to_vec()
}

/// What a checkpoint's signature covers.
pub fn signed_message(
    id: i64,
    xid_bound: &str,
    streams: i64,
    heads_digest: &[u8],
    previous_signature: Option<&str>,
) -> String {
    format!(
        "accountable.checkpoint.v1\n{id}\n{xid_bound}\n{streams}\n{}\n{}",
        hex(heads_digest),
        previous_signature.unwrap_or_default()
    )
}

pub async fn heads_below(conn: impl sqlx::PgExecutor<'_>, xid_bound: &str) -> sqlx::Result<Heads> {
    Ok(heads_from(
        CommittedRead::select_below(HEAD_COLUMNS, &Bound::from_text(xid_bound.to_owned()))
            .then(HEAD_ORDER)
            .fetch_all(conn)
            .await?,
    ))
}

fn heads_from(rows: Vec<(String, i64, Vec<u8>)>) -> Heads {
    rows.into_iter()
        .map(|(stream, sequence, hash)| (stream, (sequence, hash)))
        .collect()
}

/// Seals the heads of every stream whose events have all committed, signed
/// with the current signing key. Answers the checkpoint's number, or `None`
/// when nothing moved since the last one.
pub async fn make(pool: &PgPool, keys: &KeyRing, clock: &Clock) -> anyhow::Result<Option<i64>> {
    let mut connection = crate::db::for_transaction(pool).await?;
    let mut tx = connection.begin().await?;
    sqlx::query(LOCK).execute(&mut *tx).await?;
    let last: Option<(i64, String, String)> = sqlx::query_as(LAST).fetch_optional(&mut *tx).await?;
    let bound = Bound::now(&mut *tx).await?;
    if let Some((_, previous_bound, _)) = &last {
        // Nothing committed since the last checkpoint: no head moved, and
        // the scan of every stream's head is spared.
        let moved: Option<(i32,)> = CommittedRead::select_below("1", &bound)
            .since(&Bound::from_text(previous_bound.clone()))
            .then(" LIMIT 1")
            .fetch_optional(&mut *tx)
            .await?;
        if moved.is_none() {
            return Ok(None);
        }
    }
    // The heads sealed last time, moved by what committed since: every
    // event below the previous bound was committed then (it was the oldest
    // running transaction), so only the events between the bounds are read,
    // and a head once sealed is never taken from a store that changed since.
    let (heads, previous) = match &last {
        Some((id, previous_bound, _)) => {
            let previous = previous_heads(&mut *tx, *id).await?;
            let mut heads = previous.clone();
            heads.extend(heads_from(
                CommittedRead::select_below(HEAD_COLUMNS, &bound)
                    .since(&Bound::from_text(previous_bound.clone()))
                    .then(HEAD_ORDER)
                    .fetch_all(&mut *tx)
                    .await?,
            ));
            (heads, Some(previous))
        }
        None => (heads_below(&mut *tx, bound.as_text()).await?, None),
    };
    let moved: Vec<(&String, &(i64, Vec<u8>))> = heads
        .iter()
        .filter(|(stream, head)| previous.as_ref().and_then(|p| p.get(*stream)) != Some(*head))
        .collect();
    if moved.is_empty() && last.is_some() {
        return Ok(None);
    }
    let id = last.as_ref().map_or(1, |(id, ..)| id + 1);
    let streams = i64::try_from(heads.len())?;
    let heads_digest = digest(&heads);
    let previous_signature = last.as_ref().map(|(.., signature)| signature.clone());
    let (kid, key) = keys
        .signing_key(clock.now())
        .ok_or_else(|| anyhow::anyhow!("no signing key to sign the checkpoint with"))?;
    let message = signed_message(
        id,
        bound.as_text(),
        streams,
        &heads_digest,
        previous_signature.as_deref(),
    );
    let signature = jsonwebtoken::crypto::sign(message.as_bytes(), &key, Algorithm::EdDSA)?;
    sqlx::query(INSERT)
        .bind(id)
        .bind(bound.as_text())
        .bind(streams)
        .bind(&heads_digest)
        .bind(&previous_signature)
        .bind(&kid)
        .bind(&signature)
        .execute(&mut *tx)
        .await?;
    for (stream, (sequence, hash)) in moved {
        let (aggregate_type, aggregate_id) = stream.split_once('/').unwrap_or(("", stream));
        sqlx::query(INSERT_HEAD)
            .bind(id)
            .bind(aggregate_type)
            .bind(aggregate_id)
            .bind(sequence)
            .bind(hash)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(Some(id))
}

/// The heads as of checkpoint `id`, folded from the recorded moves of every
/// checkpoint up to it (the signature check of each is `verify`'s job).
async fn previous_heads(conn: impl sqlx::PgExecutor<'_>, id: i64) -> sqlx::Result<Heads> {
    let rows: Vec<(String, i64, Vec<u8>)> = sqlx::query_as(
        "SELECT aggregate_type || '/' || aggregate_id, sequence, hash
           FROM audit_checkpoint_heads WHERE checkpoint_id <= $1 ORDER BY checkpoint_id",
    )
    .bind(id)
    .fetch_all(conn)
    .await?;
    let mut heads = Heads::new();
    for (stream, sequence, hash) in rows {
        heads.insert(stream, (sequence, hash));
    }
    Ok(heads)
}

/// A checkpoint that does not hold, or a store that no longer matches one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointBreak {
    pub checkpoint: i64,
    pub stream: Option<String>,
    pub reason: String,
}

/// Whether `checkpoint` is signed by `public_key`, or why not.
fn signature_holds(
    checkpoint: &Checkpoint,
    public_key: Option<&Vec<u8>>,
) -> Result<(), &'static str> {
    let Some(public_key) = public_key else {
        return Err("is signed with an unknown key");
    };
    let message = signed_message(
        checkpoint.id,
        &checkpoint.xid_bound,
        checkpoint.streams,
        &checkpoint.heads_digest,
        checkpoint.previous_signature.as_deref(),
    );
    let valid = jsonwebtoken::crypto::verify(
        &checkpoint.signature,
        message.as_bytes(),
        &DecodingKey::from_ed_der(public_key),
        Algorithm::EdDSA,
    )
    .unwrap_or(false);
    if valid {
        Ok(())
    } else {
        Err("its signature does not verify: the checkpoint was changed")
    }
}

const LATEST_CHECKPOINT: &str = "
SELECT id, xid_bound::text AS xid_bound, streams, heads_digest, previous_signature, kid, signature
  FROM audit_checkpoints ORDER BY id DESC LIMIT 1";
const KEY_OF: &str = "SELECT public_key FROM signing_keys WHERE kid = $1";
/// The head of the stream as the latest checkpoint up to `$3` sealed it.
const SEALED_HEAD: &str = "
SELECT sequence, hash FROM audit_checkpoint_heads
 WHERE aggregate_type = $1 AND aggregate_id = $2 AND checkpoint_id <= $3
 ORDER BY checkpoint_id DESC LIMIT 1";

/// Checks one stream against the latest checkpoint alone: its signature,
/// and that the stream still ends, below its bound, at the head it sealed.
/// The work is bounded by that one stream; the whole chain of checkpoints
/// is [`verify`]'s (the CLI's) job. Answers the checkpoints checked (0 or 1).
pub async fn verify_stream(
    pool: &PgPool,
    aggregate_type: &str,
    aggregate_id: &str,
) -> anyhow::Result<Result<u64, CheckpointBreak>> {
    let Some(last) = sqlx::query_as::<_, Checkpoint>(LATEST_CHECKPOINT)
        .fetch_optional(pool)
        .await?
    else {
        return Ok(Ok(0));
    };
    let public_key: Option<Vec<u8>> = sqlx::query_scalar(KEY_OF)
        .bind(&last.kid)
        .fetch_optional(pool)
        .await?;
    let stream = format!("{aggregate_type}/{aggregate_id}");
    let broken = |reason: &str, stream: Option<&String>| {
        Ok(Err(CheckpointBreak {
            checkpoint: last.id,
            stream: stream.cloned(),
            reason: reason.to_owned(),
        }))
    };
    if let Err(reason) = signature_holds(&last, public_key.as_ref()) {
        return broken(reason, None);
    }
    let sealed: Option<(i64, Vec<u8>)> = sqlx::query_as(SEALED_HEAD)
        .bind(aggregate_type)
        .bind(aggregate_id)
        .bind(last.id)
        .fetch_optional(pool)
        .await?;
    let Some(sealed) = sealed else {
        return Ok(Ok(1));
    };
    let mut read =
        CommittedRead::select_below("sequence, hash", &Bound::from_text(last.xid_bound.clone()));
    read.and()
        .push(" AND aggregate_type = ")
        .push_bind(aggregate_type.to_owned())
        .push(" AND aggregate_id = ")
        .push_bind(aggregate_id.to_owned());
    let now: Option<(i64, Vec<u8>)> = read
        .then(" ORDER BY sequence DESC LIMIT 1")
        .fetch_optional(pool)
        .await?;
    match head_against_seal(now.as_ref(), &sealed) {
        Some(reason) => broken(reason, Some(&stream)),
        None => Ok(Ok(1)),
    }
}

/// What is wrong with a stream's head now against the head a checkpoint
/// sealed, if anything.
fn head_against_seal(
    now: Option<&(i64, Vec<u8>)>,
    sealed: &(i64, Vec<u8>),
) -> Option<&'static str> {
    match now {
        None => Some("was sealed by the checkpoint and is gone: the stream was deleted"),
        Some(head) if head.0 < sealed.0 => {
            Some("ends before the head the checkpoint sealed: its last events were deleted")
        }
        Some(head) if head != sealed => {
            Some("no longer ends at the hash the checkpoint sealed: its history was rewritten")
        }
        Some(_) => None,
    }
}

/// Checks every checkpoint's signature and link, folds their heads, and
/// compares the last one with the store: each stream it sealed must still
/// end, below its bound, at the sealed sequence and hash. Answers the number
/// of checkpoints checked.
pub async fn verify(pool: &PgPool) -> anyhow::Result<Result<u64, CheckpointBreak>> {
    let checkpoints: Vec<Checkpoint> = sqlx::query_as(
        "SELECT id, xid_bound::text AS xid_bound, streams, heads_digest, previous_signature, kid, signature
           FROM audit_checkpoints ORDER BY id",
    )
    .fetch_all(pool)
    .await?;
    let public_keys: BTreeMap<String, Vec<u8>> =
        sqlx::query_as::<_, (String, Vec<u8>)>("SELECT kid, public_key FROM signing_keys")
            .fetch_all(pool)
            .await?
            .into_iter()
            .collect();
    let mut heads = Heads::new();
    let mut previous: Option<&Checkpoint> = None;
    for checkpoint in &checkpoints {
        let broken = |reason: &str| {
            Ok(Err(CheckpointBreak {
                checkpoint: checkpoint.id,
                stream: None,
                reason: reason.to_owned(),
            }))
        };
        if checkpoint.id != previous.map_or(1, |p| p.id + 1)
            || checkpoint.previous_signature.as_deref() != previous.map(|p| p.signature.as_str())
        {
            return broken(
                "does not follow the checkpoint before it: a checkpoint was removed or replaced",
            );
        }
        if let Err(reason) = signature_holds(checkpoint, public_keys.get(&checkpoint.kid)) {
            return broken(reason);
        }
        let moved: Vec<(String, i64, Vec<u8>)> = sqlx::query_as(
            "SELECT aggregate_type || '/' || aggregate_id, sequence, hash
               FROM audit_checkpoint_heads WHERE checkpoint_id = $1",
        )
        .bind(checkpoint.id)
        .fetch_all(pool)
        .await?;
        for (stream, sequence, hash) in moved {
            heads.insert(stream, (sequence, hash));
        }
        if digest(&heads) != checkpoint.heads_digest
            || i64::try_from(heads.len()).ok() != Some(checkpoint.streams)
        {
            return broken("the heads it lists do not match its signed digest");
        }
        previous = Some(checkpoint);
    }
    let Some(last) = previous else {
        return Ok(Ok(0));
    };
    let now = heads_below(pool, &last.xid_bound).await?;
    for (sealed_stream, sealed) in &heads {
        let Some(reason) = head_against_seal(now.get(sealed_stream), sealed) else {
            continue;
        };
        return Ok(Err(CheckpointBreak {
            checkpoint: last.id,
            stream: Some(sealed_stream.clone()),
            reason: reason.to_owned(),
        }));
    }
    Ok(Ok(u64::try_from(checkpoints.len())?))
}

/// Makes a checkpoint every `interval` until `shutdown`; a failure is
/// logged and tried again at the next tick.
pub fn every(
    pool: PgPool,
    keys: std::sync::Arc<KeyRing>,
    clock: Clock,
    interval: std::time::Duration,
    background: &Background,
) {
    let shutdown = background.shutdown();
    background.spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = ticks.tick() => match make(&pool, &keys, &clock).await {
                    Ok(Some(id)) => tracing::debug!(checkpoint = id, "history checkpoint signed"),
                    Ok(None) => {}
                    Err(error) => tracing::warn!(error = %error, "cannot make a history checkpoint"),
                },
            }
        }
    });
}
