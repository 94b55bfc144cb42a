//! Stored events in their published form: the JSON envelope and the
//! CloudEvents headers that go to Kafka, built from rows of the event store.

use accountable_domain::UserEvent;
use accountable_projections::contract::{self, Envelope};
use accountable_vault::{is_sealed, Vault, PERSONAL, SEALED_FIELDS};
use chrono::SecondsFormat;
use serde_json::json;

use crate::store::{upcast, variant_fields, StoredEvent};

/// The CloudEvents `source` of every account event.
pub const SOURCE: &str = "urn:accountable:users";

/// An event as the public contract shows it: its CloudEvents type and the
/// data that may leave the store (secrets removed).
#[derive(Debug, Clone, PartialEq)]
pub struct PublicEvent {
    pub cloud_type: &'static str,
    pub data: serde_json::Value,
}

/// The public form of a stored event: the contract's type, and no secret.
pub fn public(event: &UserEvent) -> PublicEvent {
    let (cloud_type, data) = match event {
        UserEvent::UserRegistered(e) => (
            contract::REGISTERED_V1,
            json!({
                "personal": e.personal,
                "roles": e.roles,
                "status": e.status,
                "email_verified": e.email_verified,
            }),
        ),
        UserEvent::LoginAttempted(e) => (
            contract::LOGIN_ATTEMPTED_V1,
            json!({"at": e.at, "failures": e.failures}),
        ),
        UserEvent::LoginSucceeded(e) => (contract::LOGIN_SUCCEEDED_V1, json!({"at": e.at})),
        UserEvent::AccountLocked(e) => (
            contract::LOCKED_V1,
            json!({"at": e.at, "until": e.until, "failures": e.failures}),
        ),
        UserEvent::AccountUnlocked(e) => (contract::UNLOCKED_V1, json!({"at": e.at})),
        UserEvent::PasswordRehashed(_) => (contract::PASSWORD_REHASHED_V1, json!({})),
        UserEvent::EmailChanged(e) => (contract::EMAIL_CHANGED_V1, json!({"personal": e.personal})),
        UserEvent::UserDeactivated(e) => (contract::DEACTIVATED_V1, json!({"reason": e.reason})),
        UserEvent::UserReactivated(e) => (contract::REACTIVATED_V1, json!({"reason": e.reason})),
        UserEvent::UserDeleted(e) => (
            contract::DELETED_V2,
            json!({
                "reason": e.reason,
                "personal": e.personal,
                "previous_status": e.previous_status,
                "roles": e.roles,
            }),
        ),
        UserEvent::RoleAssigned(e) => (contract::ROLE_ASSIGNED_V1, json!({"role": e.role})),
        UserEvent::RoleRevoked(e) => (contract::ROLE_REVOKED_V1, json!({"role": e.role})),
        UserEvent::PasswordChanged(_) => (contract::PASSWORD_CHANGED_V1, json!({})),
        UserEvent::ProfileUpdated(e) => (
            contract::PROFILE_UPDATED_V1,
            json!({"personal": e.personal}),
        ),
        UserEvent::UserErased(e) => (
            contract::ERASED_V1,
            json!({
                "reason": e.reason,
                "fields": e.fields,
                "through_sequence": e.through_sequence,
                "status": e.status,
                "roles": e.roles,
            }),
        ),
        // The mail flows: what was asked for and until when; the address,
        // the token and its hash stay in the store.
        UserEvent::EmailVerificationRequested(e) => (
            contract::EMAIL_VERIFICATION_REQUESTED_V1,
            json!({"at": e.at, "expires_at": e.issued.expires_at}),
        ),
        UserEvent::EmailVerified(e) => (contract::EMAIL_VERIFIED_V1, json!({"at": e.at})),
        UserEvent::PasswordResetRequested(e) => (
            contract::PASSWORD_RESET_REQUESTED_V1,
            json!({"at": e.at, "expires_at": e.issued.expires_at}),
        ),
        UserEvent::PasswordResetRefused(e) => (
            contract::PASSWORD_RESET_REFUSED_V1,
            json!({"at": e.at, "failures": e.failures}),
        ),
        UserEvent::PasswordReset(e) => (contract::PASSWORD_RESET_V1, json!({"at": e.at})),
        UserEvent::EmailChangeRequested(e) => (
            contract::EMAIL_CHANGE_REQUESTED_V1,
            json!({"at": e.at, "expires_at": e.issued.expires_at}),
        ),
        UserEvent::RegistrationAttempted(e) => {
            (contract::REGISTRATION_ATTEMPTED_V1, json!({"at": e.at}))
        }
        // The second factor: what happened and when; never a secret, a
        // code, a hash or a time step.
        UserEvent::TotpEnrollmentStarted(e) => {
            (contract::TOTP_ENROLLMENT_STARTED_V1, json!({"at": e.at}))
        }
        UserEvent::TotpEnabled(e) => (contract::TOTP_ENABLED_V1, json!({"at": e.at})),
        UserEvent::TotpDisabled(e) => (contract::TOTP_DISABLED_V1, json!({"at": e.at})),
        UserEvent::TotpCodeAccepted(e) => (contract::TOTP_CODE_ACCEPTED_V1, json!({"at": e.at})),
        UserEvent::RecoveryCodeUsed(e) => (
            contract::RECOVERY_CODE_USED_V1,
            json!({"at": e.at, "remaining": e.remaining}),
        ),
        // A passkey: which one and when; never its name, its credential
        // or its counter but the one a refusal was measured against.
        UserEvent::PasskeyRegistered(e) => (
            contract::PASSKEY_REGISTERED_V1,
            json!({"at": e.at, "passkey_id": e.passkey_id}),
        ),
        UserEvent::PasskeyRenamed(e) => (
            contract::PASSKEY_RENAMED_V1,
            json!({"at": e.at, "passkey_id": e.passkey_id}),
        ),
        UserEvent::PasskeyRemoved(e) => (
            contract::PASSKEY_REMOVED_V1,
            json!({"at": e.at, "passkey_id": e.passkey_id}),
        ),
        UserEvent::PasskeyUsed(e) => (
            contract::PASSKEY_USED_V1,
            json!({"at": e.at, "passkey_id": e.passkey_id}),
        ),
        UserEvent::PasskeyCounterRegressed(e) => (
            contract::PASSKEY_COUNTER_REGRESSED_V1,
            json!({"at": e.at, "passkey_id": e.passkey_id, "stored_counter": e.stored_counter}),
        ),
        // A service account: its name is no person's; a secret is told by
        // its id and prefix, never by its hash.
        UserEvent::ServiceAccountCreated(e) => (
            contract::SERVICE_ACCOUNT_CREATED_V1,
            json!({"at": e.at, "name": e.name.as_str(), "owner": e.owner, "roles": e.roles}),
        ),
        UserEvent::ClientSecretIssued(e) => (
            contract::CLIENT_SECRET_ISSUED_V1,
            json!({"at": e.at, "secret_id": e.secret_id, "prefix": e.prefix, "expires_at": e.expires_at}),
        ),
        UserEvent::ClientSecretRevoked(e) => (
            contract::CLIENT_SECRET_REVOKED_V1,
            json!({"at": e.at, "secret_id": e.secret_id}),
        ),
    };
    PublicEvent { cloud_type, data }
}

/// A Kafka message ready to send.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The user id.
    pub key: String,
    pub value: Vec<u8>,
    pub headers: Vec<(&'static str, String)>,
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("event {aggregate_id}/{sequence} cannot be read: {source}")]
    Unreadable {
        aggregate_id: String,
        sequence: i64,
        source: serde_json::Error,
    },
    /// Personal data is published sealed or not at all.
    #[error("event {aggregate_id}/{sequence} holds {field} in clear")]
    InClear {
        aggregate_id: String,
        sequence: i64,
        field: &'static str,
    },
}

impl StoredEvent {
    /// The public envelope: CloudEvents attributes, the event's place in its
    /// stream and in the store, who caused it, and its public data.
    ///
    /// Sealed fields are taken out before the event is read and the sealed
    /// `personal` is put back into the public data as it is: the relay never
    /// sees personal data in clear, and refuses to publish it so.
    pub fn envelope(&self) -> Result<serde_json::Value, PublishError> {
        let mut payload = self.payload.clone();
        let mut sealed_personal = None;
        if let Some(fields) = variant_fields(&mut payload) {
            for field in SEALED_FIELDS {
                match fields.get_mut(field) {
                    Some(value) if is_sealed(value) => {
                        let sealed = value.take();
                        if field == PERSONAL {
                            sealed_personal = Some(sealed);
                        }
                    }
                    Some(value) if !value.is_null() => {
                        return Err(PublishError::InClear {
                            aggregate_id: self.aggregate_id.clone(),
                            sequence: self.sequence,
                            field,
                        })
                    }
                    _ => {}
                }
            }
        }
        let payload = upcast::stored(&self.event_type, &self.event_version, payload);
        let event: UserEvent =
            serde_json::from_value(payload).map_err(|source| PublishError::Unreadable {
                aggregate_id: self.aggregate_id.clone(),
                sequence: self.sequence,
                source,
            })?;
        let mut public = public(&event);
        if let (Some(sealed), Some(slot)) = (sealed_personal, public.data.get_mut(PERSONAL)) {
            *slot = sealed;
        }
        let mut envelope = json!({
            "specversion": "1.0",
            "id": self.cloud_event_id(),
            "type": public.cloud_type,
            "source": SOURCE,
            "subject": self.aggregate_id,
            "time": self.time(),
            "datacontenttype": "application/json",
            "sequence": self.sequence,
            "position": self.position,
            "metadata": self.metadata,
            "data": public.data,
        });
        if let (Some(traceparent), Some(attributes)) =
            (self.traceparent(), envelope.as_object_mut())
        {
            attributes.insert("traceparent".into(), json!(traceparent));
        }
        Ok(envelope)
    }

    /// The Kafka message: key = user id, value = envelope, CloudEvents
    /// binary-mode headers plus the sequence, the global position and the
    /// relay's `generation` (raised each time the topic is written anew).
    pub fn to_message(&self, generation: i64) -> Result<Outgoing, PublishError> {
        let mut envelope = self.envelope()?;
        if let Some(attributes) = envelope.as_object_mut() {
            attributes.insert("generation".into(), json!(generation));
        }
        let cloud_type = envelope["type"].as_str().unwrap_or_default().to_owned();
        let mut headers = vec![
            ("ce_specversion", "1.0".to_owned()),
            ("ce_id", self.cloud_event_id()),
            ("ce_type", cloud_type),
            ("ce_source", SOURCE.to_owned()),
            ("ce_time", self.time()),
            ("ce_subject", self.aggregate_id.clone()),
            ("content-type", "application/json".to_owned()),
            ("ce_sequence", self.sequence.to_string()),
            ("ce_position", self.position.to_string()),
            ("ce_generation", generation.to_string()),
        ];
        if let Some(traceparent) = self.traceparent() {
            headers.push(("traceparent", traceparent.to_owned()));
        }
        Ok(Outgoing {
            key: self.aggregate_id.clone(),
            value: envelope.to_string().into_bytes(),
            headers,
        })
    }

    /// The W3C trace context of the request that caused the event.
    fn traceparent(&self) -> Option<&str> {
        self.metadata["traceparent"].as_str()
    }

    /// Stable across re-deliveries, so consumers can de-duplicate by it.
    fn cloud_event_id(&self) -> String {
        format!("{}/{}", self.aggregate_id, self.sequence)
    }

    fn time(&self) -> String {
        self.recorded_at
            .to_rfc3339_opts(SecondsFormat::Micros, true)
    }
}

/// The public envelopes of `events`, their sealed fields opened (`null`
/// once erased): what a projection reads, for those that fold the store
/// itself.
pub async fn opened_envelopes(
    vault: &Vault,
    events: &[StoredEvent],
) -> anyhow::Result<Vec<Envelope>> {
    let mut envelopes = Vec::with_capacity(events.len());
    for event in events {
        envelopes.push(serde_json::from_value::<Envelope>(event.envelope()?)?);
    }
    let mut fields: Vec<_> = envelopes
        .iter_mut()
        .filter_map(Envelope::sealed_fields)
        .collect();
    vault.unseal(&mut fields).await?;
    drop(fields);
    Ok(envelopes)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use chrono::{TimeZone, Utc};
    use serde_json::Value;
    use uuid::Uuid;

    use super::*;
    use accountable_domain::events::{
        AccountLocked, AccountUnlocked, DeletionPersonal, EmailChangePersonal,
        EmailChangeRequested, EmailChanged, EmailPersonal, EmailVerificationRequested,
        EmailVerified, IssuedToken, LoginAttempted, LoginSucceeded, PasswordChanged,
        PasswordRehashed, PasswordReset, PasswordResetRefused, PasswordResetRequested,
        PersonalData, ProfilePersonal, ProfileUpdated, Recipient, RecoveryCodeUsed,
        RegistrationAttempted, RoleAssigned, RoleRevoked, TotpCodeAccepted, TotpDisabled,
        TotpEnabled, TotpEnrollmentStarted, UserDeactivated, UserDeleted, UserErased,
        UserReactivated, UserRegistered, ERASED_FIELDS,
    };
    use accountable_domain::events::{
        ClientSecretIssued, ClientSecretRevoked, PasskeyCounterRegressed, PasskeyRegistered,
        PasskeyRemoved, PasskeyRenamed, PasskeyUsed, ServiceAccountCreated,
    };
    use accountable_domain::values::{DisplayName, Email, Locale, PasskeyName};
    use accountable_domain::{ClientSecretHash, PasskeyCredential, PasswordHash, Role, UserStatus};

    /// One event of every type the domain can emit.
    fn every_event() -> Vec<UserEvent> {
        let at = Utc.with_ymd_and_hms(2026, 11, 21, 10, 0, 0).unwrap();
        let hash = PasswordHash::new("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into());
        vec![
            UserEvent::UserRegistered(UserRegistered {
                personal: Some(PersonalData {
                    email: Email::parse("ada@example.com").unwrap(),
                    display_name: DisplayName::parse("Ada").unwrap(),
                }),
                roles: [Role::User].into(),
                status: UserStatus::Active,
                password_hash: Some(hash.clone()),
                email_verified: false,
                verification: Some(issued(at)),
            }),
            UserEvent::LoginAttempted(LoginAttempted { at, failures: 1 }),
            UserEvent::LoginSucceeded(LoginSucceeded { at }),
            UserEvent::AccountLocked(AccountLocked {
                at,
                until: at,
                failures: 10,
            }),
            UserEvent::AccountUnlocked(AccountUnlocked { at }),
            UserEvent::PasswordRehashed(PasswordRehashed {
                password_hash: Some(hash.clone()),
            }),
            UserEvent::PasswordChanged(PasswordChanged {
                password_hash: Some(hash),
            }),
            UserEvent::RoleAssigned(RoleAssigned { role: Role::Admin }),
            UserEvent::RoleRevoked(RoleRevoked { role: Role::Admin }),
            UserEvent::UserDeactivated(UserDeactivated {
                reason: "abuse".into(),
            }),
            UserEvent::UserReactivated(UserReactivated {
                reason: "appeal".into(),
            }),
            UserEvent::EmailChanged(EmailChanged {
                personal: Some(EmailPersonal {
                    email: Email::parse("ada@lovelace.example").unwrap(),
                }),
            }),
            UserEvent::UserDeleted(UserDeleted {
                reason: "deleted by the user".into(),
                personal: Some(DeletionPersonal {
                    reason: "asked".into(),
                }),
                previous_status: UserStatus::Active,
                roles: [Role::User].into(),
            }),
            UserEvent::ProfileUpdated(ProfileUpdated {
                personal: Some(ProfilePersonal {
                    display_name: Some(DisplayName::parse("Ada Lovelace").unwrap()),
                    locale: Some(Locale::parse("en-GB").unwrap()),
                    time_zone: None,
                }),
            }),
            UserEvent::UserErased(UserErased {
                reason: "GDPR request".into(),
                fields: ERASED_FIELDS.iter().map(|f| (*f).to_owned()).collect(),
                through_sequence: 13,
                status: UserStatus::Deleted,
                roles: [Role::User].into(),
            }),
            UserEvent::EmailVerificationRequested(EmailVerificationRequested {
                at,
                personal: Some(recipient()),
                issued: issued(at),
            }),
            UserEvent::EmailVerified(EmailVerified { at }),
            UserEvent::PasswordResetRequested(PasswordResetRequested {
                at,
                personal: Some(recipient()),
                issued: issued(at),
            }),
            UserEvent::PasswordResetRefused(PasswordResetRefused { at, failures: 1 }),
            UserEvent::PasswordReset(PasswordReset {
                at,
                password_hash: Some(PasswordHash::new(
                    "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
                )),
            }),
            UserEvent::EmailChangeRequested(EmailChangeRequested {
                at,
                personal: Some(EmailChangePersonal {
                    email: Email::parse("ada@lovelace.example").unwrap(),
                    previous_email: Email::parse("ada@example.com").unwrap(),
                    display_name: DisplayName::parse("Ada").unwrap(),
                }),
                issued: issued(at),
            }),
            UserEvent::RegistrationAttempted(RegistrationAttempted {
                at,
                personal: Some(recipient()),
            }),
            UserEvent::TotpEnrollmentStarted(TotpEnrollmentStarted {
                at,
                secret: Some(accountable_domain::TotpSecret::new("secret-token".into())),
            }),
            UserEvent::TotpEnabled(TotpEnabled {
                at,
                step: 59_000_000,
                recovery_codes: Some(vec!["9f86d081884c7d659a2feaa0c55ad015".into()]),
            }),
            UserEvent::TotpDisabled(TotpDisabled { at }),
            UserEvent::TotpCodeAccepted(TotpCodeAccepted {
                at,
                step: 59_000_001,
            }),
            UserEvent::RecoveryCodeUsed(RecoveryCodeUsed {
                at,
                index: 0,
                remaining: 9,
            }),
            UserEvent::PasskeyRegistered(PasskeyRegistered {
                at,
                passkey_id: PASSKEY,
                passkey_name: Some(PasskeyName::parse("Ada's laptop").unwrap()),
                credential: Some(PasskeyCredential::new(r#"{"cred":"secret-token"}"#.into())),
            }),
            UserEvent::PasskeyRenamed(PasskeyRenamed {
                at,
                passkey_id: PASSKEY,
                passkey_name: Some(PasskeyName::parse("Ada's phone").unwrap()),
            }),
            UserEvent::PasskeyUsed(PasskeyUsed {
                at,
                passkey_id: PASSKEY,
                counter: 59_000_000,
                credential: Some(PasskeyCredential::new(r#"{"cred":"secret-token"}"#.into())),
            }),
            UserEvent::PasskeyCounterRegressed(PasskeyCounterRegressed {
                at,
                passkey_id: PASSKEY,
                stored_counter: 7,
            }),
            UserEvent::PasskeyRemoved(PasskeyRemoved {
                at,
                passkey_id: PASSKEY,
            }),
            UserEvent::ServiceAccountCreated(ServiceAccountCreated {
                at,
                name: DisplayName::parse("billing").unwrap(),
                owner: PASSKEY,
                roles: BTreeSet::from([Role::User, Role::Auditor]),
            }),
            UserEvent::ClientSecretIssued(ClientSecretIssued {
                at,
                secret_id: PASSKEY,
                prefix: "acs_Q2xp".into(),
                expires_at: Some(at),
                secret_hash: Some(ClientSecretHash::new("secret-token".into())),
            }),
            UserEvent::ClientSecretRevoked(ClientSecretRevoked {
                at,
                secret_id: PASSKEY,
            }),
        ]
    }

    const PASSKEY: uuid::Uuid = uuid::Uuid::from_u128(0x0190_a3c2_0000_7000_8000_0000_0000_00aa);

    fn recipient() -> Recipient {
        Recipient {
            email: Email::parse("ada@example.com").unwrap(),
            display_name: DisplayName::parse("Ada").unwrap(),
        }
    }

    fn issued(at: chrono::DateTime<Utc>) -> IssuedToken {
        IssuedToken {
            token_hash: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into(),
            token: Some(accountable_domain::MailToken::new("secret-token".into())),
            expires_at: at,
        }
    }

    /// A mail's secrets and its recipient stay in the store: the published
    /// form of a mail event has neither the token, nor its hash, nor the
    /// address.
    #[test]
    fn no_mail_event_publishes_its_token_its_hash_or_its_recipient() {
        for (n, event) in every_event().into_iter().enumerate() {
            let published = stored(n, stored_form(&event)).to_message(1).unwrap();
            let text = String::from_utf8(published.value).unwrap();
            for secret in [
                "secret-token",
                "9f86d081884c7d659a2feaa0c55ad015",
                "\"token\":",
                "token_hash",
                "\"secret\":",
                "\"recovery_codes\":",
                "\"credential\":",
                "\"passkey_name\":",
                "Ada's",
                "59000000",
                "59000001",
            ] {
                assert!(!text.contains(secret), "{secret} in {text}");
            }
            if !matches!(
                event,
                UserEvent::UserRegistered(_)
                    | UserEvent::EmailChanged(_)
                    | UserEvent::UserDeleted(_)
                    | UserEvent::ProfileUpdated(_)
            ) {
                assert!(!text.contains("\"personal\""), "{text}");
            }
        }
    }

    /// The contract test: every domain event, as the relay publishes it,
    /// is read by the projections' own declaration of the contract, and
    /// carries no secret.
    #[test]
    fn the_public_form_carries_no_password_hash() {
        let events = every_event();
        let registered = public(&events[0]);
        assert_eq!(registered.cloud_type, contract::REGISTERED_V1);
        assert_eq!(registered.data["personal"]["email"], "ada@example.com");
        assert_eq!(registered.data["roles"], json!(["USER"]));
        for event in &events {
            assert!(
                !public(event).data.to_string().contains("argon2"),
                "{event:?}"
            );
        }
    }

    #[test]
    fn the_samples_cover_every_event_type() {
        // A new variant fails to compile here until it has a sample.
        let covered: std::collections::BTreeSet<u8> = every_event()
            .iter()
            .map(|event| match event {
                UserEvent::UserRegistered(_) => 0,
                UserEvent::LoginAttempted(_) => 1,
                UserEvent::LoginSucceeded(_) => 2,
                UserEvent::AccountLocked(_) => 3,
                UserEvent::PasswordRehashed(_) => 4,
                UserEvent::ProfileUpdated(_) => 5,
                UserEvent::PasswordChanged(_) => 6,
                UserEvent::RoleAssigned(_) => 7,
                UserEvent::RoleRevoked(_) => 8,
                UserEvent::UserDeactivated(_) => 9,
                UserEvent::UserReactivated(_) => 10,
                UserEvent::UserDeleted(_) => 11,
                UserEvent::EmailChanged(_) => 12,
                UserEvent::UserErased(_) => 13,
                UserEvent::AccountUnlocked(_) => 14,
                UserEvent::EmailVerificationRequested(_) => 15,
                UserEvent::EmailVerified(_) => 16,
                UserEvent::PasswordResetRequested(_) => 17,
                UserEvent::PasswordResetRefused(_) => 18,
                UserEvent::PasswordReset(_) => 19,
                UserEvent::EmailChangeRequested(_) => 20,
                UserEvent::RegistrationAttempted(_) => 21,
                UserEvent::TotpEnrollmentStarted(_) => 22,
                UserEvent::TotpEnabled(_) => 23,
                UserEvent::TotpDisabled(_) => 24,
                UserEvent::TotpCodeAccepted(_) => 25,
                UserEvent::RecoveryCodeUsed(_) => 26,
                UserEvent::PasskeyRegistered(_) => 27,
                UserEvent::PasskeyRenamed(_) => 28,
                UserEvent::PasskeyRemoved(_) => 29,
                UserEvent::PasskeyUsed(_) => 30,
                UserEvent::PasskeyCounterRegressed(_) => 31,
                UserEvent::ServiceAccountCreated(_) => 32,
                UserEvent::ClientSecretIssued(_) => 33,
                UserEvent::ClientSecretRevoked(_) => 34,
            })
            .collect();
        assert_eq!(covered.len(), 35);
    }

    /// A stand-in for the vault's seal (its cipher is tested in its crate):
    /// the shape of a sealed field, with the clear JSON readable back here.
    fn sealed_stand_in(value: &Value) -> Value {
        json!({"alg": "A256GCM", "kid": Uuid::nil(), "iv": "AAAAAAAAAAAAAAAA",
               "ct": URL_SAFE_NO_PAD.encode(value.to_string())})
    }

    /// `event` as the store holds it: its sealed fields stood in for.
    fn stored_form(event: &UserEvent) -> Value {
        let mut payload = serde_json::to_value(event).unwrap();
        for field in SEALED_FIELDS {
            if let Some(value) = variant_fields(&mut payload)
                .and_then(|fields| fields.get_mut(field))
                .filter(|value| !value.is_null())
            {
                *value = sealed_stand_in(value);
            }
        }
        payload
    }

    fn stored(n: usize, payload: Value) -> StoredEvent {
        StoredEvent {
            aggregate_id: "0190a3c2-0000-7000-8000-000000000001".into(),
            sequence: i64::try_from(n).unwrap() + 1,
            event_type: "Any".into(),
            event_version: "1.0".into(),
            payload,
            metadata: json!({"actor": "self"}),
            position: 42,
            transaction_id: "1000".into(),
            recorded_at: Utc::now(),
        }
    }

    #[test]
    fn the_projections_read_every_published_event_once_opened() {
        for (n, event) in every_event().into_iter().enumerate() {
            let payload = stored_form(&event);
            let message = stored(n, payload).to_message(1).unwrap();
            let text = String::from_utf8_lossy(&message.value);
            assert!(!text.contains("argon2"), "{text}");
            assert!(!text.contains("example"), "{text}");
            assert!(!text.contains("Ada"), "{text}");

            let mut envelope = Envelope::from_slice(&message.value).unwrap();
            if let Some(sealed) = envelope.data.get_mut(PERSONAL).filter(|v| !v.is_null()) {
                assert!(is_sealed(sealed), "{sealed}");
                let clear = URL_SAFE_NO_PAD
                    .decode(sealed["ct"].as_str().unwrap())
                    .unwrap();
                *sealed = serde_json::from_slice(&clear).unwrap();
            }
            envelope
                .event()
                .unwrap_or_else(|e| panic!("{event:?} does not read: {e}"));
        }
    }

    #[test]
    fn personal_data_in_clear_is_never_published() {
        let clear = serde_json::to_value(&every_event()[0]).unwrap();
        assert!(matches!(
            stored(0, clear).to_message(1),
            Err(PublishError::InClear {
                field: "personal",
                ..
            })
        ));
    }

    fn contract_file(path: &str) -> Value {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("contract")
            .join(path);
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        serde_json::from_str(&text).unwrap()
    }

    fn validator(schema: &Value) -> jsonschema::Validator {
        jsonschema::options()
            .should_validate_formats(true)
            .build(schema)
            .unwrap_or_else(|e| panic!("not a valid schema: {e}"))
    }

    #[test]
    fn every_published_event_matches_the_json_schema_of_its_type_and_version() {
        for (n, event) in every_event().into_iter().enumerate() {
            let payload = stored_form(&event);
            let mut stored = stored(n, payload);
            stored.metadata = json!({"actor": "self", "correlation_id": "c", "causation_id": "r",
                "request_id": "r", "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"});
            let message = stored.to_message(1).unwrap();
            let value: Value = serde_json::from_slice(&message.value).unwrap();
            let cloud_type = value["type"].as_str().unwrap();
            let schema = contract_file(&format!("schemas/{cloud_type}.json"));
            let errors: Vec<String> = validator(&schema)
                .iter_errors(&value)
                .map(|e| format!("{} at {}", e, e.instance_path()))
                .collect();
            assert!(errors.is_empty(), "{cloud_type}: {errors:?}\n{value}");
            // And the schema is not a blank cheque: a wrong type fails it.
            let mut wrong = value.clone();
            wrong["data"] = json!({"unexpected": true});
            assert!(!validator(&schema).is_valid(&wrong), "{cloud_type}");
        }
    }

    #[test]
    fn the_asyncapi_document_is_valid_asyncapi_3_and_lists_every_event_type() {
        let spec = contract_file("asyncapi-3.0.0.schema.json");
        let document = contract_file("asyncapi.json");
        let asyncapi = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft7)
            .build(&spec)
            .unwrap();
        let errors: Vec<String> = asyncapi
            .iter_errors(&document)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{errors:?}");
        let mut broken = document.clone();
        broken["operations"]["receiveUserEvents"]["action"] = json!("eat");
        assert!(!asyncapi.is_valid(&broken), "the validation can fail");

        let messages = document["components"]["messages"].as_object().unwrap();
        for event in every_event() {
            let cloud_type = public(&event).cloud_type;
            let message = messages
                .values()
                .find(|m| m["name"] == cloud_type)
                .unwrap_or_else(|| panic!("{cloud_type} is not in asyncapi.json"));
            let schema = message["payload"]["schema"]["$ref"].as_str().unwrap();
            assert_eq!(schema, format!("./schemas/{cloud_type}.json"));
        }
    }
}
