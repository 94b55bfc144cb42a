//! The hash chain of the event store, recomputed here independently of the
//! database's own `event_hash` function, so that verification trusts
//! nothing the database says about itself.

use sha2::{Digest, Sha256};

pub use crate::store::ChainedEvent;

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256_hex(text: &str) -> String {
    hex(&Sha256::digest(text.as_bytes()))
}

impl ChainedEvent {
    /// SHA-256 of the canonical encoding: these lines joined by `\n`:
    /// `accountable.event.v1`, aggregate type, aggregate id, sequence, event
    /// type, event version, position, recording time in microseconds, hex
    /// SHA-256 of the payload text, hex SHA-256 of the metadata text, and
    /// the previous event's hash in hex (empty for a stream's first event).
    pub fn expected_hash(&self, prev: Option<&[u8]>) -> [u8; 32] {
        let encoding = [
            "accountable.event.v1".to_owned(),
            self.aggregate_type.clone(),
            self.aggregate_id.clone(),
            self.sequence.to_string(),
            self.event_type.clone(),
            self.event_version.clone(),
            self.position.to_string(),
            self.recorded_micros.to_string(),
            sha256_hex(&self.payload),
            sha256_hex(&self.metadata),
            prev.map(hex).unwrap_or_default(),
        ]
        .join("\n");
        Sha256::digest(encoding.as_bytes()).into()
    }
}

/// Where a stream's chain first breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Break {
    pub stream: String,
    pub sequence: Option<i64>,
    pub reason: String,
}

/// Follows one stream's chain, event by event, in sequence order.
pub struct StreamCheck {
    stream: String,
    next_sequence: i64,
    last_hash: Option<Vec<u8>>,
}

impl StreamCheck {
    pub fn new(stream: String) -> Self {
        Self {
            stream,
            next_sequence: 1,
            last_hash: None,
        }
    }

    /// The stream's last hash checked, and its sequence.
    pub fn head(&self) -> Option<(i64, &[u8])> {
        self.last_hash
            .as_deref()
            .map(|hash| (self.next_sequence - 1, hash))
    }

    /// Checks the next event of the stream.
    pub fn check(&mut self, event: &ChainedEvent) -> Result<(), Break> {
        let broken = |reason: String| Break {
            stream: self.stream.clone(),
            sequence: Some(event.sequence),
            reason,
        };
        if event.sequence != self.next_sequence {
            return Err(broken(format!(
                "expected sequence {}, found {}: an event was deleted, inserted or moved",
                self.next_sequence, event.sequence
            )));
        }
        if event.prev_hash != self.last_hash {
            return Err(broken(
                "does not link to the event before it: an earlier event was changed, deleted or replaced".into(),
            ));
        }
        if event.expected_hash(self.last_hash.as_deref())[..] != event.hash[..] {
            return Err(broken(
                "its content does not match its hash: the event was changed".into(),
            ));
        }
        self.next_sequence += 1;
        self.last_hash = Some(event.hash.clone());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(sequence: i64, prev: Option<Vec<u8>>) -> ChainedEvent {
        let mut event = ChainedEvent {
            aggregate_type: "User".into(),
            aggregate_id: "u".into(),
            sequence,
            event_type: "X".into(),
            event_version: "1.0".into(),
            position: sequence * 10,
            recorded_micros: 1_800_000_000_000_000,
            payload: "{\"a\": 1}".into(),
            metadata: "{}".into(),
            prev_hash: prev,
            hash: Vec::new(),
        };
        event.hash = event.expected_hash(event.prev_hash.as_deref()).to_vec();
        event
    }

    #[test]
    fn an_intact_chain_checks_and_each_kind_of_change_breaks_it() {
        let first = event(1, None);
        let second = event(2, Some(first.hash.clone()));
        let mut check = StreamCheck::new("User/u".into());
        assert!(check.check(&first).is_ok());
        assert!(check.check(&second).is_ok());
        assert_eq!(check.head(), Some((2, &second.hash[..])));

        let mut edited = first.clone();
        edited.payload = "{\"a\": 2}".into();
        assert!(StreamCheck::new("s".into()).check(&edited).is_err());

        let mut check = StreamCheck::new("s".into());
        assert!(check.check(&second).is_err(), "the first one is missing");

        let mut check = StreamCheck::new("s".into());
        check.check(&first).unwrap();
        let unlinked = event(2, Some(vec![0; 32]));
        assert!(check.check(&unlinked).is_err());
    }
}
