//! What auditors need: the tamper-evident chain of the event store, signed
//! checkpoints, and their verification.

pub mod chain;
pub mod checkpoint;
pub mod export;
pub mod history;

use futures::TryStreamExt;
use sqlx::PgPool;

use chain::StreamCheck;

/// The first place where the history does not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broken {
    /// `User/<id>`, when one stream is at fault.
    pub stream: Option<String>,
    pub sequence: Option<i64>,
    pub checkpoint: Option<i64>,
    pub reason: String,
}

impl std::fmt::Display for Broken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(checkpoint) = self.checkpoint {
            write!(f, "checkpoint {checkpoint}: ")?;
        }
        if let Some(stream) = &self.stream {
            write!(f, "{stream}")?;
            if let Some(sequence) = self.sequence {
                write!(f, " event {sequence}")?;
            }
            write!(f, ": ")?;
        }
        f.write_str(&self.reason)
    }
}

/// What a verification looked at, and the first break if any.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub events: u64,
    pub streams: u64,
    pub checkpoints: u64,
    pub broken: Option<Broken>,
}

/// Recomputes every event's hash and link, then checks the whole chain of
/// signed checkpoints against the store; with `user`, that user's stream
/// alone, against the latest checkpoint alone (work bounded by the stream).
/// Stops at the first break.
pub async fn verify(pool: &PgPool, user: Option<&str>) -> anyhow::Result<Report> {
    let mut report = Report::default();
    let mut events = crate::store::streams::chained(pool, user);
    let mut current: Option<StreamCheck> = None;
    let mut current_stream = String::new();
    while let Some(event) = events.try_next().await? {
        let stream = format!("{}/{}", event.aggregate_type, event.aggregate_id);
        if current.is_none() || stream != current_stream {
            current = Some(StreamCheck::new(stream.clone()));
            current_stream = stream;
            report.streams += 1;
        }
        let Some(check) = current.as_mut() else {
            continue;
        };
        if let Err(broken) = check.check(&event) {
            report.broken = Some(Broken {
                stream: Some(broken.stream),
                sequence: broken.sequence,
                checkpoint: None,
                reason: broken.reason,
            });
            return Ok(report);
        }
        report.events += 1;
    }
    drop(events);
    let checked = match user {
        Some(id) => checkpoint::verify_stream(pool, "User", id).await?,
        None => checkpoint::verify(pool).await?,
    };
    match checked {
        Ok(checkpoints) => report.checkpoints = checkpoints,
        Err(broken) => {
            report.broken = Some(Broken {
                stream: broken.stream,
                sequence: None,
                checkpoint: Some(broken.checkpoint),
                reason: broken.reason,
            });
        }
    }
    Ok(report)
}
