//! `accountable audit export`: the event store as JSON Lines, in commit
//! order, with everything needed to check the chain offline, resumable.

use std::io::Write;

use chrono::{DateTime, SecondsFormat, Utc};
use futures::TryStreamExt;
use serde_json::json;
use sqlx::PgPool;

use super::chain::hex;
use super::history::{push_filters, StreamFilter};
use crate::store::{CommittedRead, StreamCursor};
use crate::telemetry;

/// One exported line: the stored columns as they are (payload and metadata
/// as their stored text, sealed fields still sealed) and the chain.
#[derive(Debug, sqlx::FromRow)]
struct ExportRow {
    transaction_id: String,
    position: i64,
    aggregate_type: String,
    aggregate_id: String,
    sequence: i64,
    event_type: String,
    event_version: String,
    recorded_at: DateTime<Utc>,
    recorded_micros: i64,
    payload: String,
    metadata: String,
    prev_hash: Option<Vec<u8>>,
    hash: Vec<u8>,
}

const COLUMNS: &str = "transaction_id::text AS transaction_id, position, aggregate_type, \
    aggregate_id, sequence, event_type, event_version, recorded_at, \
    (extract(epoch FROM recorded_at) * 1000000)::bigint AS recorded_micros, \
    payload::text AS payload, metadata::text AS metadata, prev_hash, hash";

/// Writes every event that `filter` selects after `after`, one JSON object
/// a line, in commit order (transaction id, then position), flushing as it
/// goes; shows a progress bar on a terminal. Answers how many it wrote.
pub async fn export(
    pool: &PgPool,
    filter: &StreamFilter,
    after: Option<&StreamCursor>,
    out: &mut impl Write,
) -> anyhow::Result<u64> {
    let mut count = CommittedRead::select("count(*)").after(after);
    push_filters(count.and(), filter);
    let total: i64 = count.fetch_scalar(pool).await?;
    let progress = telemetry::event_progress(total);

    let mut read = CommittedRead::select(COLUMNS).after(after);
    push_filters(read.and(), filter);
    let mut read = read.in_commit_order(None);
    let mut rows = read.fetch::<ExportRow>(pool);
    let mut written = 0;
    while let Some(row) = rows.try_next().await? {
        let line = json!({
            "transaction_id": row.transaction_id,
            "position": row.position,
            "aggregate_type": row.aggregate_type,
            "aggregate_id": row.aggregate_id,
            "sequence": row.sequence,
            "event_type": row.event_type,
            "event_version": row.event_version,
            "recorded_at": row.recorded_at.to_rfc3339_opts(SecondsFormat::Micros, true),
            "recorded_micros": row.recorded_micros,
            "payload": row.payload,
            "metadata": row.metadata,
            "prev_hash": row.prev_hash.as_deref().map(hex),
            "hash": hex(&row.hash),
        });
        writeln!(out, "{line}")?;
        written += 1;
        if written % 1000 == 0 {
            out.flush()?;
        }
        progress.inc(1);
    }
    out.flush()?;
    progress.finish_and_clear();
    Ok(written)
}

/// Where an export in `file` stopped: the cursor of its last complete line.
/// A partly written last line is cut off.
pub fn resume_point(file: &std::path::Path) -> anyhow::Result<Option<StreamCursor>> {
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error.into()),
    };
    let complete = text.rfind('\n').map_or(0, |end| end + 1);
    if complete < text.len() {
        std::fs::OpenOptions::new()
            .write(true)
            .open(file)?
            .set_len(u64::try_from(complete)?)?;
    }
    let Some(last) = text[..complete].lines().last() else {
        return Ok(None);
    };
    let line: serde_json::Value = serde_json::from_str(last)?;
    let cursor = line["transaction_id"]
        .as_str()
        .zip(line["position"].as_i64())
        .map(|(transaction_id, position)| StreamCursor {
            transaction_id: transaction_id.to_owned(),
            position,
        });
    anyhow::ensure!(
        cursor.is_some(),
        "the last line of {} is not an exported event",
        file.display()
    );
    Ok(cursor)
}
