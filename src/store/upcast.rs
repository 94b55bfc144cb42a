//! Stored events of earlier versions, read as the current ones. The store
//! is never rewritten (its hash chain covers the stored bytes): every
//! reader upcasts on read — the aggregate through cqrs-es, the relay and
//! the auditors through [`stored`].
//!
//! The rules for changing an event: adding an optional field is compatible
//! and keeps the version; renaming, removing or retyping a field, or adding
//! a required one, is breaking: the event gets a new version (its
//! `event_version`, and `vN+1` in its CloudEvents type), an upcaster from the
//! previous version here, and a new JSON Schema beside the old one.

use cqrs_es::persist::{EventUpcaster, SemanticVersionEventUpcaster, SerializedEvent};
use serde_json::Value;

use super::sealed::variant_fields;

/// Every upcaster, oldest change first.
pub fn upcasters() -> Vec<Box<dyn EventUpcaster>> {
    vec![Box::new(SemanticVersionEventUpcaster::new(
        "UserDeleted",
        "2.0",
        Box::new(user_deleted_1_to_2),
    ))]
}

/// `UserDeleted` 1.0 → 2.0: `status` became `previous_status`.
fn user_deleted_1_to_2(mut payload: Value) -> Value {
    if let Some(fields) = variant_fields(&mut payload) {
        if let Some(status) = fields.remove("status") {
            fields.insert("previous_status".to_owned(), status);
        }
    }
    payload
}

/// A stored payload of `event_type` at `event_version`, as the current
/// version of that event.
pub fn stored(event_type: &str, event_version: &str, payload: Value) -> Value {
    let mut event = SerializedEvent::new(
        String::new(),
        0,
        String::new(),
        event_type.to_owned(),
        event_version.to_owned(),
        payload,
        Value::Null,
    );
    for upcaster in upcasters() {
        if upcaster.can_upcast(&event.event_type, &event.event_version) {
            event = upcaster.upcast(event);
        }
    }
    event.payload
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use accountable_domain::UserEvent;

    #[test]
    fn a_stored_version_1_deletion_reads_as_version_2() {
        let v1 = json!({"UserDeleted": {"reason": "asked", "status": "ACTIVE", "roles": ["USER"]}});
        let current = stored("UserDeleted", "1.0", v1);
        assert_eq!(
            current,
            json!({"UserDeleted": {"reason": "asked", "previous_status": "ACTIVE", "roles": ["USER"]}})
        );
        let event: UserEvent = serde_json::from_value(current).unwrap();
        assert_eq!(
            crate::events::public(&event).cloud_type,
            "accountable.user.deleted.v2"
        );
    }

    #[test]
    fn current_versions_and_other_types_are_left_alone() {
        let v2 = json!({"UserDeleted": {"reason": "a", "previous_status": "ACTIVE", "roles": []}});
        assert_eq!(stored("UserDeleted", "2.0", v2.clone()), v2);
        let other = json!({"RoleAssigned": {"role": "ADMIN", "status": "x"}});
        assert_eq!(stored("RoleAssigned", "1.0", other.clone()), other);
    }
}
