//! The `User` aggregate: state + command → events, or a domain rejection.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};

use crate::account::{
    Account, ClientSecret, MailKind, Passkey, Pending, PendingEmail, Role, Service, Totp,
    UserStatus,
};
use crate::commands::{FactorFlow, LinkFlow, RegisterUser, ServiceFlow, UserCommand, UserError};
use crate::events::*;
use crate::policy::{LockoutPolicy, MAX_LIVE_SECRETS, MAX_PASSKEYS, MAX_RESET_FAILURES};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// `None` until registered.
    pub account: Option<Account>,
    /// How many events were applied: the sequence of the last one.
    #[serde(default)]
    pub version: u64,
}

impl Aggregate for User {
    const TYPE: &'static str = "User";
    type Command = UserCommand;
    type Event = UserEvent;
    type Error = UserError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let event = match (command, &self.account) {
            (UserCommand::Register(_), Some(_)) => return Err(UserError::AlreadyRegistered),
            (UserCommand::Register(cmd), None) => {
                for event in register(cmd) {
                    sink.write(event, self).await;
                }
                return Ok(());
            }
            (UserCommand::Link(flow), account) => {
                for event in link(flow, account.as_ref())? {
                    sink.write(event, self).await;
                }
                return Ok(());
            }
            (UserCommand::CreateServiceAccount { .. }, Some(_)) => {
                return Err(UserError::AlreadyRegistered)
            }
            (
                UserCommand::CreateServiceAccount {
                    name,
                    owner,
                    mut roles,
                    at,
                },
                None,
            ) => {
                roles.insert(Role::User);
                UserEvent::ServiceAccountCreated(ServiceAccountCreated {
                    at,
                    name,
                    owner,
                    roles,
                })
            }
            (UserCommand::Service(flow), account) => {
                for event in service(flow, account.as_ref())? {
                    sink.write(event, self).await;
                }
                return Ok(());
            }
            (UserCommand::Factor(flow), account) => {
                for event in factor(flow, account.as_ref())? {
                    sink.write(event, self).await;
                }
                return Ok(());
            }
            (_, None) => return Err(UserError::NotRegistered),
            (UserCommand::Erase { .. }, Some(account)) if account.status == UserStatus::Erased => {
                return Ok(())
            }
            (_, Some(account)) if account.status == UserStatus::Erased => {
                return Err(UserError::Erased)
            }
            (UserCommand::Erase { reason }, Some(account)) => UserEvent::UserErased(UserErased {
                reason,
                fields: ERASED_FIELDS.iter().map(|f| (*f).to_owned()).collect(),
                through_sequence: self.version,
                status: account.status,
                roles: account.roles.clone(),
            }),
            (_, Some(account)) if account.status == UserStatus::Deleted => {
                return Err(UserError::Deleted)
            }
            (UserCommand::Deactivate { reason }, Some(account)) => {
                if account.status == UserStatus::Deactivated {
                    return Ok(());
                }
                UserEvent::UserDeactivated(UserDeactivated { reason })
            }
            (UserCommand::Reactivate { reason }, Some(account)) => {
                if account.status == UserStatus::Active {
                    return Ok(());
                }
                UserEvent::UserReactivated(UserReactivated { reason })
            }
            (UserCommand::Delete { reason, own_reason }, Some(account)) => {
                UserEvent::UserDeleted(UserDeleted {
                    reason,
                    personal: own_reason.map(|reason| DeletionPersonal { reason }),
                    previous_status: account.status,
                    roles: account.roles.clone(),
                })
            }
            (UserCommand::AttemptLogin { at, policy }, Some(account)) => {
                attempt_login(account, at, policy)?
            }
            (UserCommand::Unlock { at }, Some(account)) => {
                if !account.is_locked(at) && account.failed_attempts == 0 {
                    return Ok(());
                }
                UserEvent::AccountUnlocked(AccountUnlocked { at })
            }
            (UserCommand::CompleteLogin { at }, Some(_)) => {
                UserEvent::LoginSucceeded(LoginSucceeded { at })
            }
            (UserCommand::RehashPassword { password_hash }, Some(_)) => {
                UserEvent::PasswordRehashed(PasswordRehashed {
                    password_hash: Some(password_hash),
                })
            }
            (UserCommand::AssignRole { role }, Some(account)) => {
                if account.roles.contains(&role) {
                    return Ok(());
                }
                UserEvent::RoleAssigned(RoleAssigned { role })
            }
            (UserCommand::RevokeRole { role: Role::User }, Some(_)) => {
                return Err(UserError::BaseRole)
            }
            (UserCommand::RevokeRole { role }, Some(account)) => {
                if !account.roles.contains(&role) {
                    return Ok(());
                }
                UserEvent::RoleRevoked(RoleRevoked { role })
            }
            (UserCommand::ChangePassword { password_hash }, Some(_)) => {
                UserEvent::PasswordChanged(PasswordChanged {
                    password_hash: Some(password_hash),
                })
            }
            (
                UserCommand::UpdateProfile {
                    display_name,
                    locale,
                    time_zone,
                },
                Some(account),
            ) => {
                let changed = ProfilePersonal {
                    display_name: display_name.filter(|name| {
                        account.personal.as_ref().map(|p| &p.display_name) != Some(name)
                    }),
                    locale: locale.filter(|l| Some(l) != account.locale.as_ref()),
                    time_zone: time_zone.filter(|t| Some(t) != account.time_zone.as_ref()),
                };
                if changed.display_name.is_none()
                    && changed.locale.is_none()
                    && changed.time_zone.is_none()
                {
                    return Ok(());
                }
                UserEvent::ProfileUpdated(ProfileUpdated {
                    personal: Some(changed),
                })
            }
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        self.version += 1;
        if let UserEvent::ServiceAccountCreated(e) = event {
            self.account = Some(Account {
                service: Some(Service {
                    name: e.name,
                    owner: e.owner,
                    created_at: e.at,
                    secrets: Vec::new(),
                }),
                ..Account::opened(e.roles, UserStatus::Active)
            });
            return;
        }
        if let UserEvent::UserRegistered(e) = event {
            self.account = Some(Account {
                personal: e.personal,
                password_hash: e.password_hash,
                email_verified: e.email_verified,
                pending_verification: e.verification.as_ref().map(pending),
                ..Account::opened(e.roles, e.status)
            });
            return;
        }
        let Some(account) = self.account.as_mut() else {
            return;
        };
        match event {
            UserEvent::UserRegistered(_) => {}
            UserEvent::LoginAttempted(e) => {
                account.failed_attempts = e.failures;
                account.last_failure_at = Some(e.at);
            }
            UserEvent::LoginSucceeded(_) => {
                account.failed_attempts = 0;
                account.last_failure_at = None;
                account.lockouts = 0;
            }
            UserEvent::AccountLocked(e) => {
                account.failed_attempts = 0;
                account.lockouts += 1;
                account.locked_until = Some(e.until);
            }
            UserEvent::AccountUnlocked(_) => {
                account.failed_attempts = 0;
                account.last_failure_at = None;
                account.lockouts = 0;
                account.locked_until = None;
            }
            UserEvent::PasswordRehashed(PasswordRehashed { password_hash }) => {
                account.password_hash = password_hash;
            }
            UserEvent::PasswordChanged(PasswordChanged { password_hash }) => {
                account.password_hash = password_hash;
                account.pending_reset = None;
            }
            UserEvent::EmailChanged(e) => {
                if let (Some(personal), Some(changed)) = (account.personal.as_mut(), e.personal) {
                    personal.email = changed.email;
                }
                // Links mailed for the old address, or for this change, are spent.
                account.pending_verification = None;
                account.pending_email = None;
            }
            UserEvent::UserErased(_) => {
                account.status = UserStatus::Erased;
                account.personal = None;
                account.password_hash = None;
                account.locale = None;
                account.time_zone = None;
                account.pending_verification = None;
                account.pending_reset = None;
                account.pending_email = None;
                account.totp = None;
                account.passkeys.clear();
                if let Some(service) = account.service.as_mut() {
                    for secret in &mut service.secrets {
                        secret.hash = None;
                    }
                }
            }
            UserEvent::EmailVerificationRequested(e) => {
                account.note_mail_request(e.at, MailKind::Verification);
                account.pending_verification = Some(pending(&e.issued));
            }
            UserEvent::EmailVerified(_) => {
                account.email_verified = true;
                account.pending_verification = None;
            }
            UserEvent::PasswordResetRequested(e) => {
                account.note_mail_request(e.at, MailKind::Reset);
                account.pending_reset = Some(pending(&e.issued));
            }
            UserEvent::PasswordResetRefused(e) => {
                account.pending_reset = account
                    .pending_reset
                    .take()
                    .map(|reset| Pending {
                        failures: e.failures,
                        ..reset
                    })
                    .filter(|reset| reset.failures < MAX_RESET_FAILURES);
            }
            UserEvent::PasswordReset(e) => {
                account.password_hash = e.password_hash;
                account.pending_reset = None;
                account.failed_attempts = 0;
                account.last_failure_at = None;
                account.lockouts = 0;
                account.locked_until = None;
            }
            UserEvent::EmailChangeRequested(e) => {
                account.note_mail_request(e.at, MailKind::EmailChange);
                account.pending_email = e.personal.map(|personal| PendingEmail {
                    email: personal.email,
                    token: pending(&e.issued),
                });
            }
            UserEvent::TotpEnrollmentStarted(e) => {
                account.totp = Some(Totp {
                    secret: e.secret,
                    enabled: false,
                    last_step: 0,
                    recovery_codes: Vec::new(),
                });
            }
            UserEvent::TotpEnabled(e) => {
                if let Some(totp) = account.totp.as_mut() {
                    totp.enabled = true;
                    totp.last_step = e.step;
                    totp.recovery_codes = e.recovery_codes.unwrap_or_default();
                }
            }
            UserEvent::TotpDisabled(_) => account.totp = None,
            UserEvent::TotpCodeAccepted(e) => {
                if let Some(totp) = account.totp.as_mut() {
                    totp.last_step = totp.last_step.max(e.step);
                }
            }
            UserEvent::RecoveryCodeUsed(e) => {
                if let Some(totp) = account.totp.as_mut() {
                    if e.index < totp.recovery_codes.len() {
                        totp.recovery_codes.remove(e.index);
                    }
                }
            }
            UserEvent::PasskeyRegistered(e) => account.passkeys.push(Passkey {
                id: e.passkey_id,
                name: e.passkey_name,
                credential: e.credential,
                counter: 0,
                created_at: e.at,
                last_used_at: None,
            }),
            UserEvent::PasskeyRenamed(e) => {
                if let Some(passkey) = passkey_mut(account, e.passkey_id) {
                    passkey.name = e.passkey_name;
                }
            }
            UserEvent::PasskeyRemoved(e) => account
                .passkeys
                .retain(|passkey| passkey.id != e.passkey_id),
            UserEvent::PasskeyUsed(e) => {
                if let Some(passkey) = passkey_mut(account, e.passkey_id) {
                    passkey.counter = passkey.counter.max(e.counter);
                    passkey.last_used_at = Some(e.at);
                    if e.credential.is_some() {
                        passkey.credential = e.credential;
                    }
                }
            }
            UserEvent::PasskeyCounterRegressed(_) => {}
            UserEvent::ServiceAccountCreated(_) => {}
            UserEvent::ClientSecretIssued(e) => {
                if let Some(service) = account.service.as_mut() {
                    service.secrets.push(ClientSecret {
                        id: e.secret_id,
                        prefix: e.prefix,
                        hash: e.secret_hash,
                        created_at: e.at,
                        expires_at: e.expires_at,
                        revoked_at: None,
                    });
                }
            }
            UserEvent::ClientSecretRevoked(e) => {
                let secret = account
                    .service
                    .as_mut()
                    .and_then(|service| service.secrets.iter_mut().find(|s| s.id == e.secret_id));
                if let Some(secret) = secret {
                    secret.revoked_at = Some(e.at);
                }
            }
            UserEvent::RegistrationAttempted(e) => {
                account.note_mail_request(e.at, MailKind::RegistrationNotice)
            }
            UserEvent::UserDeactivated(_) => account.status = UserStatus::Deactivated,
            UserEvent::UserReactivated(_) => account.status = UserStatus::Active,
            UserEvent::UserDeleted(_) => account.status = UserStatus::Deleted,
            UserEvent::RoleAssigned(e) => {
                account.roles.insert(e.role);
            }
            UserEvent::RoleRevoked(e) => {
                account.roles.remove(&e.role);
            }
            UserEvent::ProfileUpdated(ProfileUpdated {
                personal: Some(changed),
            }) => {
                if let (Some(personal), Some(name)) =
                    (account.personal.as_mut(), changed.display_name)
                {
                    personal.display_name = name;
                }
                if changed.locale.is_some() {
                    account.locale = changed.locale;
                }
                if changed.time_zone.is_some() {
                    account.time_zone = changed.time_zone;
                }
            }
            UserEvent::ProfileUpdated(ProfileUpdated { personal: None }) => {}
        }
    }
}

fn pending(issued: &IssuedToken) -> Pending {
    Pending {
        token_hash: issued.token_hash.clone(),
        expires_at: issued.expires_at,
        failures: 0,
    }
}

/// The account as a mail may be sent to it and a link followed: registered,
/// neither erased, deleted nor deactivated, with its personal data.
fn reachable(account: Option<&Account>) -> Result<(&Account, &PersonalData), UserError> {
    let account = active(account)?;
    let personal = account.personal.as_ref().ok_or(UserError::Erased)?;
    Ok((account, personal))
}

/// The account, when it exists and is active.
fn active(account: Option<&Account>) -> Result<&Account, UserError> {
    let account = account.ok_or(UserError::NotRegistered)?;
    match account.status {
        UserStatus::Erased => Err(UserError::Erased),
        UserStatus::Deleted => Err(UserError::Deleted),
        UserStatus::Deactivated => Err(UserError::Deactivated),
        UserStatus::Active => Ok(account),
    }
}

fn recipient(personal: &PersonalData) -> Option<Recipient> {
    Some(Recipient {
        email: personal.email.clone(),
        display_name: personal.display_name.clone(),
    })
}

/// A registration: the account, with the link that verifies its address.
fn register(cmd: RegisterUser) -> Vec<UserEvent> {
    vec![UserEvent::UserRegistered(UserRegistered {
        personal: Some(PersonalData {
            email: cmd.email,
            display_name: cmd.display_name,
        }),
        roles: BTreeSet::from([Role::User]),
        status: UserStatus::Active,
        password_hash: Some(cmd.password_hash),
        email_verified: false,
        verification: Some(cmd.verification),
    })]
}

/// The flows that mail a link and take it back.
fn link(flow: LinkFlow, account: Option<&Account>) -> Result<Vec<UserEvent>, UserError> {
    let events = match flow {
        LinkFlow::RequestEmailVerification { issued, at, policy } => {
            let (account, personal) = reachable(account)?;
            if account.email_verified {
                return Ok(Vec::new());
            }
            if !account.may_request_mail(at, MailKind::Verification, policy) {
                return Err(UserError::TooManyRequests);
            }
            vec![UserEvent::EmailVerificationRequested(
                EmailVerificationRequested {
                    at,
                    personal: recipient(personal),
                    issued,
                },
            )]
        }
        LinkFlow::VerifyEmail { token_hash, at } => {
            let (account, _) = reachable(account).map_err(|_| UserError::InvalidToken)?;
            let valid = account
                .pending_verification
                .as_ref()
                .is_some_and(|pending| pending.accepts(&token_hash, at));
            if !valid {
                return Err(UserError::InvalidToken);
            }
            vec![UserEvent::EmailVerified(EmailVerified { at })]
        }
        LinkFlow::RequestPasswordReset { issued, at, policy } => {
            let (account, personal) = reachable(account)?;
            if !account.may_request_mail(at, MailKind::Reset, policy) {
                return Err(UserError::TooManyRequests);
            }
            vec![UserEvent::PasswordResetRequested(PasswordResetRequested {
                at,
                personal: recipient(personal),
                issued,
            })]
        }
        LinkFlow::ResetPassword {
            token_hash,
            password_hash,
            at,
        } => {
            let (account, _) = reachable(account).map_err(|_| UserError::InvalidToken)?;
            let Some(reset) = account
                .pending_reset
                .as_ref()
                .filter(|reset| at < reset.expires_at)
            else {
                return Err(UserError::InvalidToken);
            };
            if reset.token_hash != token_hash {
                vec![UserEvent::PasswordResetRefused(PasswordResetRefused {
                    at,
                    failures: reset.failures + 1,
                })]
            } else {
                vec![UserEvent::PasswordReset(PasswordReset {
                    at,
                    password_hash: Some(password_hash),
                })]
            }
        }
        LinkFlow::ChangeEmail {
            email,
            issued,
            at,
            policy,
        } => {
            let (account, personal) = reachable(account)?;
            if personal.email == email {
                return Ok(Vec::new());
            }
            if !account.may_request_mail(at, MailKind::EmailChange, policy) {
                return Err(UserError::TooManyRequests);
            }
            vec![UserEvent::EmailChangeRequested(EmailChangeRequested {
                at,
                personal: Some(EmailChangePersonal {
                    email,
                    previous_email: personal.email.clone(),
                    display_name: personal.display_name.clone(),
                }),
                issued,
            })]
        }
        LinkFlow::ConfirmEmailChange { token_hash, at } => {
            let (account, _) = reachable(account).map_err(|_| UserError::InvalidToken)?;
            let Some(change) = account
                .pending_email
                .as_ref()
                .filter(|change| change.token.accepts(&token_hash, at))
            else {
                return Err(UserError::InvalidToken);
            };
            vec![
                UserEvent::EmailChanged(EmailChanged {
                    personal: Some(EmailPersonal {
                        email: change.email.clone(),
                    }),
                }),
                UserEvent::EmailVerified(EmailVerified { at }),
            ]
        }
        LinkFlow::NoteRegistrationAttempt { at, policy } => {
            let (account, personal) = reachable(account)?;
            if !account.may_request_mail(at, MailKind::RegistrationNotice, policy) {
                return Err(UserError::TooManyRequests);
            }
            vec![UserEvent::RegistrationAttempted(RegistrationAttempted {
                at,
                personal: recipient(personal),
            })]
        }
    };
    Ok(events)
}

/// The second factor's commands, on an active account.
fn factor(flow: FactorFlow, account: Option<&Account>) -> Result<Vec<UserEvent>, UserError> {
    let (account, _) = reachable(account)?;
    let totp = account.totp.as_ref();
    let enabled = totp.filter(|totp| totp.enabled);
    let events = match flow {
        FactorFlow::StartTotp { secret, at } => {
            if enabled.is_some() {
                return Err(UserError::TotpAlreadyEnabled);
            }
            vec![UserEvent::TotpEnrollmentStarted(TotpEnrollmentStarted {
                at,
                secret: Some(secret),
            })]
        }
        FactorFlow::EnableTotp {
            step,
            recovery_codes,
            at,
        } => {
            if enabled.is_some() {
                return Err(UserError::TotpAlreadyEnabled);
            }
            if totp.is_none() {
                return Err(UserError::NoTotpEnrollment);
            }
            vec![UserEvent::TotpEnabled(TotpEnabled {
                at,
                step,
                recovery_codes: Some(recovery_codes),
            })]
        }
        FactorFlow::DisableTotp { at } => match totp {
            Some(_) => vec![UserEvent::TotpDisabled(TotpDisabled { at })],
            None => Vec::new(),
        },
        FactorFlow::AcceptTotp { step, at } => {
            let totp = enabled.ok_or(UserError::InvalidCode)?;
            if step <= totp.last_step {
                return Err(UserError::InvalidCode);
            }
            vec![UserEvent::TotpCodeAccepted(TotpCodeAccepted { at, step })]
        }
        FactorFlow::UseRecoveryCode { code_hash, at } => {
            let totp = enabled.ok_or(UserError::InvalidCode)?;
            let index = totp
                .recovery_codes
                .iter()
                .position(|hash| *hash == code_hash)
                .ok_or(UserError::InvalidCode)?;
            vec![UserEvent::RecoveryCodeUsed(RecoveryCodeUsed {
                at,
                index,
                remaining: totp.recovery_codes.len() - 1,
            })]
        }
        FactorFlow::RegisterPasskey {
            passkey_id,
            name,
            credential,
            at,
        } => {
            if account.passkeys.len() >= MAX_PASSKEYS {
                return Err(UserError::TooManyPasskeys);
            }
            vec![UserEvent::PasskeyRegistered(PasskeyRegistered {
                at,
                passkey_id,
                passkey_name: Some(name),
                credential: Some(credential),
            })]
        }
        FactorFlow::RenamePasskey {
            passkey_id,
            name,
            at,
        } => {
            let passkey = account
                .passkey(passkey_id)
                .ok_or(UserError::PasskeyNotFound)?;
            if passkey.name.as_ref() == Some(&name) {
                return Ok(Vec::new());
            }
            vec![UserEvent::PasskeyRenamed(PasskeyRenamed {
                at,
                passkey_id,
                passkey_name: Some(name),
            })]
        }
        FactorFlow::RemovePasskey { passkey_id, at } => {
            account
                .passkey(passkey_id)
                .ok_or(UserError::PasskeyNotFound)?;
            if account.ways_to_sign_in() <= 1 {
                return Err(UserError::LastWayToSignIn);
            }
            vec![UserEvent::PasskeyRemoved(PasskeyRemoved { at, passkey_id })]
        }
        FactorFlow::UsePasskey {
            passkey_id,
            counter,
            credential,
            at,
        } => {
            let passkey = account.passkey(passkey_id).ok_or(UserError::InvalidCode)?;
            if !passkey.accepts_counter(counter) {
                return Err(UserError::InvalidCode);
            }
            vec![UserEvent::PasskeyUsed(PasskeyUsed {
                at,
                passkey_id,
                counter,
                credential: Some(credential),
            })]
        }
        FactorFlow::RefusePasskeyCounter { passkey_id, at } => {
            let passkey = account
                .passkey(passkey_id)
                .ok_or(UserError::PasskeyNotFound)?;
            vec![UserEvent::PasskeyCounterRegressed(
                PasskeyCounterRegressed {
                    at,
                    passkey_id,
                    stored_counter: passkey.counter,
                },
            )]
        }
    };
    Ok(events)
}

/// A service account's secrets, on an active service account.
fn service(flow: ServiceFlow, account: Option<&Account>) -> Result<Vec<UserEvent>, UserError> {
    let service = active(account)?
        .service
        .as_ref()
        .ok_or(UserError::NotAServiceAccount)?;
    let events = match flow {
        ServiceFlow::IssueSecret {
            secret_id,
            prefix,
            hash,
            expires_at,
            at,
        } => {
            let live = service.secrets.iter().filter(|s| s.is_live(at)).count();
            if live >= MAX_LIVE_SECRETS {
                return Err(UserError::TooManySecrets);
            }
            vec![UserEvent::ClientSecretIssued(ClientSecretIssued {
                at,
                secret_id,
                prefix,
                expires_at,
                secret_hash: Some(hash),
            })]
        }
        ServiceFlow::RevokeSecret { secret_id, at } => {
            let secret = service
                .secrets
                .iter()
                .find(|s| s.id == secret_id)
                .ok_or(UserError::SecretNotFound)?;
            if secret.revoked_at.is_some() {
                return Ok(Vec::new());
            }
            vec![UserEvent::ClientSecretRevoked(ClientSecretRevoked {
                at,
                secret_id,
            })]
        }
    };
    Ok(events)
}

fn passkey_mut(account: &mut Account, id: uuid::Uuid) -> Option<&mut Passkey> {
    account.passkeys.iter_mut().find(|passkey| passkey.id == id)
}

/// Counts the attempt, or locks the account when the failures before it
/// reached the limit.
fn attempt_login(
    account: &Account,
    at: DateTime<Utc>,
    policy: LockoutPolicy,
) -> Result<UserEvent, UserError> {
    if account.status == UserStatus::Deactivated {
        return Err(UserError::Deactivated);
    }
    if account.is_locked(at) {
        return Err(UserError::Locked);
    }
    let recent = account
        .last_failure_at
        .is_some_and(|last| at - last < policy.failure_memory);
    let failures = if recent { account.failed_attempts } else { 0 };
    if failures < policy.max_failures {
        return Ok(UserEvent::LoginAttempted(LoginAttempted {
            at,
            failures: failures + 1,
        }));
    }
    let steps = i32::try_from(account.lockouts.saturating_add(1)).unwrap_or(i32::MAX);
    Ok(UserEvent::AccountLocked(AccountLocked {
        at,
        until: at + (policy.lock_step * steps).min(policy.max_lock),
        failures,
    }))
}

#[cfg(test)]
mod tests {
    use chrono::Duration;
    use cqrs_es::test::TestFramework;
    use serde_json::json;

    use super::*;
    use crate::account::PasswordHash;
    use crate::commands::RegisterUser;
    use crate::policy::MailPolicy;
    use crate::values::{DisplayName, Email, Locale, TimeZone};

    fn register() -> RegisterUser {
        RegisterUser {
            email: Email::parse("ada@example.com").unwrap(),
            display_name: DisplayName::parse("Ada").unwrap(),
            password_hash: PasswordHash::new("$argon2id$v=19$m=64,t=1,p=1$c2FsdA$aGFzaA".into()),
            verification: issued("v1", at(0) + Duration::hours(24)),
        }
    }

    fn issued(hash: &str, expires_at: DateTime<Utc>) -> IssuedToken {
        IssuedToken {
            token_hash: hash.into(),
            token: Some(crate::account::MailToken::new(format!("token-{hash}"))),
            expires_at,
        }
    }

    fn ada() -> Option<Recipient> {
        Some(Recipient {
            email: Email::parse("ada@example.com").unwrap(),
            display_name: DisplayName::parse("Ada").unwrap(),
        })
    }

    fn verification_requested() -> UserEvent {
        UserEvent::EmailVerificationRequested(EmailVerificationRequested {
            at: at(0),
            personal: ada(),
            issued: issued("v1", at(0) + Duration::hours(24)),
        })
    }

    fn registered() -> UserEvent {
        let cmd = register();
        UserEvent::UserRegistered(UserRegistered {
            personal: Some(PersonalData {
                email: cmd.email,
                display_name: cmd.display_name,
            }),
            roles: BTreeSet::from([Role::User]),
            status: UserStatus::Active,
            password_hash: Some(cmd.password_hash),
            email_verified: false,
            verification: Some(cmd.verification),
        })
    }

    #[test]
    fn given_nothing_when_register_then_registered_as_an_active_user_with_a_verification_due() {
        TestFramework::<User>::with(())
            .given_no_previous_events()
            .when(UserCommand::Register(register()))
            .then_expect_events(vec![registered()]);
    }

    #[test]
    fn given_registered_when_register_then_already_registered() {
        TestFramework::<User>::with(())
            .given(vec![registered()])
            .when(UserCommand::Register(register()))
            .then_expect_error(UserError::AlreadyRegistered);
    }

    #[test]
    fn the_stored_form_is_stable() {
        let stored = serde_json::to_value(registered()).unwrap();
        assert_eq!(
            stored["UserRegistered"]["personal"]["display_name"],
            json!("Ada")
        );
        let back: UserEvent = serde_json::from_value(stored).unwrap();
        assert_eq!(back, registered());
    }

    fn at(minute: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap() + Duration::minutes(minute)
    }

    fn policy() -> LockoutPolicy {
        LockoutPolicy {
            max_failures: 3,
            ..LockoutPolicy::default()
        }
    }

    fn attempted(minute: i64, failures: u32) -> UserEvent {
        UserEvent::LoginAttempted(LoginAttempted {
            at: at(minute),
            failures,
        })
    }

    fn attempt(minute: i64) -> UserCommand {
        UserCommand::AttemptLogin {
            at: at(minute),
            policy: policy(),
        }
    }

    #[test]
    fn given_registered_when_attempt_login_then_the_attempt_counts() {
        TestFramework::<User>::with(())
            .given(vec![registered(), attempted(0, 1)])
            .when(attempt(1))
            .then_expect_events(vec![attempted(1, 2)]);
    }

    #[test]
    fn given_the_limit_of_failures_when_attempt_login_then_locked_for_one_step() {
        TestFramework::<User>::with(())
            .given(vec![
                registered(),
                attempted(0, 1),
                attempted(0, 2),
                attempted(0, 3),
            ])
            .when(attempt(1))
            .then_expect_events(vec![UserEvent::AccountLocked(AccountLocked {
                at: at(1),
                until: at(2),
                failures: 3,
            })]);
    }

    #[test]
    fn given_a_lock_when_attempt_login_before_it_ends_then_locked() {
        let lock = UserEvent::AccountLocked(AccountLocked {
            at: at(1),
            until: at(2),
            failures: 3,
        });
        TestFramework::<User>::with(())
            .given(vec![registered(), lock.clone()])
            .when(attempt(1))
            .then_expect_error(UserError::Locked);
        TestFramework::<User>::with(())
            .given(vec![registered(), lock])
            .when(attempt(3))
            .then_expect_events(vec![attempted(3, 1)]);
    }

    #[test]
    fn given_a_lock_when_unlock_then_unlocked_and_signing_in_counts_from_zero() {
        let lock = UserEvent::AccountLocked(AccountLocked {
            at: at(1),
            until: at(2),
            failures: 3,
        });
        TestFramework::<User>::with(())
            .given(vec![registered(), lock.clone()])
            .when(UserCommand::Unlock { at: at(1) })
            .then_expect_events(vec![UserEvent::AccountUnlocked(AccountUnlocked {
                at: at(1),
            })]);
        TestFramework::<User>::with(())
            .given(vec![
                registered(),
                lock,
                UserEvent::AccountUnlocked(AccountUnlocked { at: at(1) }),
            ])
            .when(attempt(1))
            .then_expect_events(vec![attempted(1, 1)]);
    }

    #[test]
    fn given_no_lock_and_no_failures_when_unlock_then_nothing() {
        TestFramework::<User>::with(())
            .given(vec![registered()])
            .when(UserCommand::Unlock { at: at(1) })
            .then_expect_events(vec![]);
    }

    #[test]
    fn given_a_second_lock_then_it_lasts_longer_up_to_the_maximum() {
        let mut given = vec![registered()];
        for lock in 0..20 {
            let minute = lock * 100;
            given.extend((1..=3).map(|n| attempted(minute, n)));
            given.push(UserEvent::AccountLocked(AccountLocked {
                at: at(minute),
                until: at(minute + 1),
                failures: 3,
            }));
        }
        given.extend((1..=3).map(|n| attempted(5000, n)));
        TestFramework::<User>::with(())
            .given(given)
            .when(attempt(5000))
            .then_expect_events(vec![UserEvent::AccountLocked(AccountLocked {
                at: at(5000),
                until: at(5015),
                failures: 3,
            })]);
    }

    #[test]
    fn given_old_failures_when_attempt_login_then_they_are_forgotten() {
        TestFramework::<User>::with(())
            .given(vec![
                registered(),
                attempted(0, 1),
                attempted(0, 2),
                attempted(0, 3),
            ])
            .when(attempt(13 * 60))
            .then_expect_events(vec![attempted(13 * 60, 1)]);
    }

    #[test]
    fn given_failures_when_login_succeeds_then_the_count_starts_over() {
        TestFramework::<User>::with(())
            .given(vec![
                registered(),
                attempted(0, 1),
                attempted(0, 2),
                UserEvent::LoginSucceeded(LoginSucceeded { at: at(0) }),
            ])
            .when(attempt(1))
            .then_expect_events(vec![attempted(1, 1)]);
    }

    #[test]
    fn given_nothing_when_attempt_login_then_not_registered() {
        TestFramework::<User>::with(())
            .given_no_previous_events()
            .when(attempt(0))
            .then_expect_error(UserError::NotRegistered);
    }

    #[test]
    fn given_registered_when_rehash_then_the_new_hash_is_recorded() {
        let password_hash = PasswordHash::new("$argon2id$v=19$m=19456,t=2,p=1$bmV3$bmV3".into());
        let event = UserEvent::PasswordRehashed(PasswordRehashed {
            password_hash: Some(password_hash.clone()),
        });
        TestFramework::<User>::with(())
            .given(vec![registered()])
            .when(UserCommand::RehashPassword { password_hash })
            .then_expect_events(vec![event.clone()]);
    }

    fn update(name: Option<&str>, locale: Option<&str>, zone: Option<&str>) -> UserCommand {
        UserCommand::UpdateProfile {
            display_name: name.map(|n| DisplayName::parse(n).unwrap()),
            locale: locale.map(|l| Locale::parse(l).unwrap()),
            time_zone: zone.map(|z| TimeZone::parse(z).unwrap()),
        }
    }

    #[test]
    fn given_registered_when_update_profile_then_only_the_changes_are_recorded() {
        TestFramework::<User>::with(())
            .given(vec![registered()])
            .when(update(Some("Ada"), Some("en-GB"), Some("Europe/London")))
            .then_expect_events(vec![UserEvent::ProfileUpdated(ProfileUpdated {
                personal: Some(ProfilePersonal {
                    display_name: None,
                    locale: Some(Locale::parse("en-GB").unwrap()),
                    time_zone: Some(TimeZone::parse("Europe/London").unwrap()),
                }),
            })]);
    }

    #[test]
    fn given_a_profile_when_it_is_set_to_what_it_is_then_nothing_is_written() {
        let set = UserEvent::ProfileUpdated(ProfileUpdated {
            personal: Some(ProfilePersonal {
                display_name: Some(DisplayName::parse("Ada Lovelace").unwrap()),
                locale: Some(Locale::parse("en-GB").unwrap()),
                time_zone: None,
            }),
        });
        TestFramework::<User>::with(())
            .given(vec![registered(), set])
            .when(update(Some("Ada Lovelace"), Some("en-GB"), None))
            .then_expect_events(vec![]);
    }

    #[test]
    fn given_nothing_when_update_profile_then_not_registered() {
        TestFramework::<User>::with(())
            .given_no_previous_events()
            .when(update(Some("Ada"), None, None))
            .then_expect_error(UserError::NotRegistered);
    }

    #[test]
    fn given_registered_when_change_password_then_changed() {
        let password_hash = PasswordHash::new("$argon2id$v=19$m=19456,t=2,p=1$bmV3$bmV3".into());
        let event = UserEvent::PasswordChanged(PasswordChanged {
            password_hash: Some(password_hash.clone()),
        });
        TestFramework::<User>::with(())
            .given(vec![registered()])
            .when(UserCommand::ChangePassword { password_hash })
            .then_expect_events(vec![event.clone()]);
    }

    #[test]
    fn roles_are_assigned_and_revoked_once_and_user_stays() {
        let assigned = UserEvent::RoleAssigned(RoleAssigned { role: Role::Admin });
        TestFramework::<User>::with(())
            .given(vec![registered()])
            .when(UserCommand::AssignRole { role: Role::Admin })
            .then_expect_events(vec![assigned.clone()]);
        TestFramework::<User>::with(())
            .given(vec![registered(), assigned.clone()])
            .when(UserCommand::AssignRole { role: Role::Admin })
            .then_expect_events(vec![]);
        TestFramework::<User>::with(())
            .given(vec![registered(), assigned])
            .when(UserCommand::RevokeRole { role: Role::Admin })
            .then_expect_events(vec![UserEvent::RoleRevoked(RoleRevoked {
                role: Role::Admin,
            })]);
        TestFramework::<User>::with(())
            .given(vec![registered()])
            .when(UserCommand::RevokeRole {
                role: Role::Auditor,
            })
            .then_expect_events(vec![]);
        TestFramework::<User>::with(())
            .given(vec![registered()])
            .when(UserCommand::RevokeRole { role: Role::User })
            .then_expect_error(UserError::BaseRole);
    }

    fn deactivated() -> UserEvent {
        UserEvent::UserDeactivated(UserDeactivated {
            reason: "abuse".into(),
        })
    }

    #[test]
    fn deactivation_stops_sign_in_until_reactivation() {
        TestFramework::<User>::with(())
            .given(vec![registered()])
            .when(UserCommand::Deactivate {
                reason: "abuse".into(),
            })
            .then_expect_events(vec![deactivated()]);
        TestFramework::<User>::with(())
            .given(vec![registered(), deactivated()])
            .when(attempt(0))
            .then_expect_error(UserError::Deactivated);
        TestFramework::<User>::with(())
            .given(vec![registered(), deactivated()])
            .when(UserCommand::Deactivate {
                reason: "again".into(),
            })
            .then_expect_events(vec![]);
        TestFramework::<User>::with(())
            .given(vec![registered(), deactivated()])
            .when(UserCommand::Reactivate {
                reason: "appeal".into(),
            })
            .then_expect_events(vec![UserEvent::UserReactivated(UserReactivated {
                reason: "appeal".into(),
            })]);
        TestFramework::<User>::with(())
            .given(vec![registered()])
            .when(UserCommand::Reactivate {
                reason: "nothing to do".into(),
            })
            .then_expect_events(vec![]);
    }

    #[test]
    fn deletion_says_what_was_deleted_and_ends_every_command() {
        let deleted = UserEvent::UserDeleted(UserDeleted {
            reason: "asked".into(),
            personal: None,
            previous_status: UserStatus::Deactivated,
            roles: BTreeSet::from([Role::User]),
        });
        TestFramework::<User>::with(())
            .given(vec![registered(), deactivated()])
            .when(UserCommand::Delete {
                reason: "asked".into(),
                own_reason: None,
            })
            .then_expect_events(vec![deleted.clone()]);
        TestFramework::<User>::with(())
            .given(vec![registered(), deleted.clone()])
            .when(update(Some("Ghost"), None, None))
            .then_expect_error(UserError::Deleted);
        TestFramework::<User>::with(())
            .given(vec![registered(), deleted])
            .when(attempt(0))
            .then_expect_error(UserError::Deleted);
    }

    fn change_to(email: &str, minute: i64) -> UserCommand {
        UserCommand::Link(LinkFlow::ChangeEmail {
            email: Email::parse(email).unwrap(),
            issued: issued("c1", at(minute) + Duration::hours(24)),
            at: at(minute),
            policy: MailPolicy::default(),
        })
    }

    fn change_requested(minute: i64) -> UserEvent {
        UserEvent::EmailChangeRequested(EmailChangeRequested {
            at: at(minute),
            personal: Some(EmailChangePersonal {
                email: Email::parse("ada@lovelace.example").unwrap(),
                previous_email: Email::parse("ada@example.com").unwrap(),
                display_name: DisplayName::parse("Ada").unwrap(),
            }),
            issued: issued("c1", at(minute) + Duration::hours(24)),
        })
    }

    fn confirm(hash: &str, minute: i64) -> UserCommand {
        UserCommand::Link(LinkFlow::ConfirmEmailChange {
            token_hash: hash.into(),
            at: at(minute),
        })
    }

    #[test]
    fn an_email_change_waits_for_the_new_address_and_a_same_one_writes_nothing() {
        TestFramework::<User>::with(())
            .given(vec![registered()])
            .when(change_to("ada@lovelace.example", 5))
            .then_expect_events(vec![change_requested(5)]);
        TestFramework::<User>::with(())
            .given(vec![registered()])
            .when(change_to("ada@example.com", 5))
            .then_expect_events(vec![]);
    }

    #[test]
    fn a_confirmed_change_moves_the_address_and_verifies_it_once() {
        let changed = vec![
            UserEvent::EmailChanged(EmailChanged {
                personal: Some(EmailPersonal {
                    email: Email::parse("ada@lovelace.example").unwrap(),
                }),
            }),
            UserEvent::EmailVerified(EmailVerified { at: at(6) }),
        ];
        TestFramework::<User>::with(())
            .given(vec![registered(), change_requested(5)])
            .when(confirm("c1", 6))
            .then_expect_events(changed.clone());
        let mut spent = vec![registered(), change_requested(5)];
        spent.extend(changed);
        for (hash, minute) in [("c1", 7), ("other", 6)] {
            TestFramework::<User>::with(())
                .given(spent.clone())
                .when(confirm(hash, minute))
                .then_expect_error(UserError::InvalidToken);
        }
        TestFramework::<User>::with(())
            .given(vec![registered(), change_requested(5)])
            .when(confirm("c1", 5 + 24 * 60))
            .then_expect_error(UserError::InvalidToken);
    }

    fn verify(hash: &str, minute: i64) -> UserCommand {
        UserCommand::Link(LinkFlow::VerifyEmail {
            token_hash: hash.into(),
            at: at(minute),
        })
    }

    fn request_verification(hash: &str, minute: i64) -> UserCommand {
        UserCommand::Link(LinkFlow::RequestEmailVerification {
            issued: issued(hash, at(minute) + Duration::hours(24)),
            at: at(minute),
            policy: MailPolicy::default(),
        })
    }

    #[test]
    fn the_latest_verification_link_verifies_once_before_it_expires() {
        // The registration's own link verifies.
        TestFramework::<User>::with(())
            .given(vec![registered()])
            .when(verify("v1", 1))
            .then_expect_events(vec![UserEvent::EmailVerified(EmailVerified { at: at(1) })]);
        let given = vec![registered(), verification_requested()];
        TestFramework::<User>::with(())
            .given(given.clone())
            .when(verify("v1", 10))
            .then_expect_events(vec![UserEvent::EmailVerified(EmailVerified { at: at(10) })]);
        TestFramework::<User>::with(())
            .given(given.clone())
            .when(verify("v1", 24 * 60))
            .then_expect_error(UserError::InvalidToken);
        let mut used = given.clone();
        used.push(UserEvent::EmailVerified(EmailVerified { at: at(10) }));
        TestFramework::<User>::with(())
            .given(used.clone())
            .when(verify("v1", 11))
            .then_expect_error(UserError::InvalidToken);
        TestFramework::<User>::with(())
            .given(used)
            .when(request_verification("v2", 20))
            .then_expect_events(vec![]);
        let mut superseded = given;
        superseded.push(UserEvent::EmailVerificationRequested(
            EmailVerificationRequested {
                at: at(2),
                personal: ada(),
                issued: issued("v2", at(2) + Duration::hours(24)),
            },
        ));
        TestFramework::<User>::with(())
            .given(superseded.clone())
            .when(verify("v1", 3))
            .then_expect_error(UserError::InvalidToken);
        TestFramework::<User>::with(())
            .given(superseded)
            .when(verify("v2", 3))
            .then_expect_events(vec![UserEvent::EmailVerified(EmailVerified { at: at(3) })]);
    }

    #[test]
    fn mail_is_asked_for_at_most_once_a_minute_and_ten_times_a_day() {
        TestFramework::<User>::with(())
            .given(vec![registered(), verification_requested()])
            .when(request_verification("v2", 0))
            .then_expect_error(UserError::TooManyRequests);
        // The minute is per kind of mail: a change of address right after
        // signing up goes through.
        TestFramework::<User>::with(())
            .given(vec![registered(), verification_requested()])
            .when(change_to("ada@lovelace.example", 0))
            .then_expect_events(vec![change_requested(0)]);
        let mut day = vec![registered()];
        for minute in 0..10 {
            day.push(UserEvent::EmailVerificationRequested(
                EmailVerificationRequested {
                    at: at(minute * 10),
                    personal: ada(),
                    issued: issued("v", at(minute * 10) + Duration::hours(24)),
                },
            ));
        }
        TestFramework::<User>::with(())
            .given(day.clone())
            .when(request_verification("v2", 200))
            .then_expect_error(UserError::TooManyRequests);
        TestFramework::<User>::with(())
            .given(day)
            .when(request_verification("v2", 24 * 60 + 1))
            .then_expect_events(vec![UserEvent::EmailVerificationRequested(
                EmailVerificationRequested {
                    at: at(24 * 60 + 1),
                    personal: ada(),
                    issued: issued("v2", at(24 * 60 + 1) + Duration::hours(24)),
                },
            )]);
    }

    fn reset_requested(minute: i64) -> UserEvent {
        UserEvent::PasswordResetRequested(PasswordResetRequested {
            at: at(minute),
            personal: ada(),
            issued: issued("r1", at(minute) + Duration::minutes(30)),
        })
    }

    fn reset(hash: &str, minute: i64) -> UserCommand {
        UserCommand::Link(LinkFlow::ResetPassword {
            token_hash: hash.into(),
            password_hash: PasswordHash::new("new".into()),
            at: at(minute),
        })
    }

    #[test]
    fn a_reset_sets_the_password_and_lifts_a_lock() {
        let lock = UserEvent::AccountLocked(AccountLocked {
            at: at(1),
            until: at(20),
            failures: 3,
        });
        let mut user = User::default();
        for event in [registered(), lock, reset_requested(2)] {
            user.apply(event);
        }
        user.apply(UserEvent::PasswordReset(PasswordReset {
            at: at(3),
            password_hash: Some(PasswordHash::new("new".into())),
        }));
        let account = user.account.unwrap();
        assert!(!account.is_locked(at(4)));
        assert_eq!(account.password_hash, Some(PasswordHash::new("new".into())));
        assert_eq!(account.pending_reset, None);
        assert!(UserEvent::PasswordReset(PasswordReset {
            at: at(3),
            password_hash: None
        })
        .changes_sessions());
    }

    #[test]
    fn a_reset_link_works_once_dies_with_time_a_new_password_or_five_wrong_tries() {
        let given = vec![registered(), reset_requested(0)];
        TestFramework::<User>::with(())
            .given(given.clone())
            .when(reset("r1", 29))
            .then_expect_events(vec![UserEvent::PasswordReset(PasswordReset {
                at: at(29),
                password_hash: Some(PasswordHash::new("new".into())),
            })]);
        TestFramework::<User>::with(())
            .given(given.clone())
            .when(reset("r1", 30))
            .then_expect_error(UserError::InvalidToken);
        let mut changed = given.clone();
        changed.push(UserEvent::PasswordChanged(PasswordChanged {
            password_hash: Some(PasswordHash::new("other".into())),
        }));
        TestFramework::<User>::with(())
            .given(changed)
            .when(reset("r1", 1))
            .then_expect_error(UserError::InvalidToken);
        let mut tried = given;
        for failures in 1..=4 {
            TestFramework::<User>::with(())
                .given(tried.clone())
                .when(reset("wrong", 1))
                .then_expect_events(vec![UserEvent::PasswordResetRefused(
                    PasswordResetRefused {
                        at: at(1),
                        failures,
                    },
                )]);
            tried.push(UserEvent::PasswordResetRefused(PasswordResetRefused {
                at: at(1),
                failures,
            }));
        }
        TestFramework::<User>::with(())
            .given(tried.clone())
            .when(reset("r1", 2))
            .then_expect_events(vec![UserEvent::PasswordReset(PasswordReset {
                at: at(2),
                password_hash: Some(PasswordHash::new("new".into())),
            })]);
        tried.push(UserEvent::PasswordResetRefused(PasswordResetRefused {
            at: at(1),
            failures: 5,
        }));
        TestFramework::<User>::with(())
            .given(tried)
            .when(reset("r1", 2))
            .then_expect_error(UserError::InvalidToken);
    }

    #[test]
    fn no_mail_is_asked_for_a_closed_account() {
        let deactivated = UserEvent::UserDeactivated(UserDeactivated {
            reason: "staff".into(),
        });
        TestFramework::<User>::with(())
            .given(vec![registered(), deactivated])
            .when(UserCommand::Link(LinkFlow::RequestPasswordReset {
                issued: issued("r1", at(30)),
                at: at(0),
                policy: MailPolicy::default(),
            }))
            .then_expect_error(UserError::Deactivated);
        TestFramework::<User>::with(())
            .given(vec![
                registered(),
                reset_requested(0),
                erased(2, UserStatus::Active),
            ])
            .when(reset("r1", 1))
            .then_expect_error(UserError::InvalidToken);
    }

    fn erased(through_sequence: u64, status: UserStatus) -> UserEvent {
        UserEvent::UserErased(UserErased {
            reason: "asked to".into(),
            fields: ERASED_FIELDS.iter().map(|f| (*f).to_owned()).collect(),
            through_sequence,
            status,
            roles: BTreeSet::from([Role::User]),
        })
    }

    #[test]
    fn given_registered_when_erase_then_erased_through_the_last_event() {
        let deleted = UserEvent::UserDeleted(UserDeleted {
            reason: "deleted by the user".into(),
            personal: Some(DeletionPersonal {
                reason: "asked to".into(),
            }),
            previous_status: UserStatus::Active,
            roles: BTreeSet::from([Role::User]),
        });
        TestFramework::<User>::with(())
            .given(vec![registered()])
            .when(UserCommand::Erase {
                reason: "asked to".into(),
            })
            .then_expect_events(vec![erased(1, UserStatus::Active)]);
        TestFramework::<User>::with(())
            .given(vec![registered(), deleted])
            .when(UserCommand::Erase {
                reason: "asked to".into(),
            })
            .then_expect_events(vec![erased(2, UserStatus::Deleted)]);
    }

    #[test]
    fn given_erased_when_erase_again_then_nothing_is_written() {
        TestFramework::<User>::with(())
            .given(vec![registered(), erased(1, UserStatus::Active)])
            .when(UserCommand::Erase {
                reason: "asked to".into(),
            })
            .then_expect_events(vec![]);
    }

    #[test]
    fn given_erased_when_anything_else_then_erased() {
        for command in [
            UserCommand::Delete {
                reason: "x".into(),
                own_reason: None,
            },
            UserCommand::AssignRole { role: Role::Admin },
            update(Some("Ada"), None, None),
            attempt(0),
        ] {
            TestFramework::<User>::with(())
                .given(vec![registered(), erased(1, UserStatus::Active)])
                .when(command)
                .then_expect_error(UserError::Erased);
        }
    }

    #[test]
    fn events_whose_personal_fields_were_erased_still_load() {
        let stored = json!({"UserRegistered": {
            "personal": null, "roles": ["USER"], "status": "ACTIVE", "password_hash": null
        }});
        let event: UserEvent = serde_json::from_value(stored).unwrap();
        let mut user = User::default();
        user.apply(event);
        user.apply(erased(1, UserStatus::Active));
        let account = user.account.unwrap();
        assert_eq!(account.status, UserStatus::Erased);
        assert_eq!(account.personal, None);
        assert_eq!(account.password_hash, None);
    }

    fn totp_command(flow: FactorFlow) -> UserCommand {
        UserCommand::Factor(flow)
    }

    fn enrolled() -> UserEvent {
        UserEvent::TotpEnrollmentStarted(TotpEnrollmentStarted {
            at: at(0),
            secret: Some(crate::account::TotpSecret::new("JBSWY3DPEHPK3PXP".into())),
        })
    }

    fn enabled(step: u64) -> UserEvent {
        UserEvent::TotpEnabled(TotpEnabled {
            at: at(1),
            step,
            recovery_codes: Some(vec!["r0".into(), "r1".into()]),
        })
    }

    #[test]
    fn an_app_is_enabled_by_a_first_code_and_then_sign_in_needs_it() {
        TestFramework::<User>::with(())
            .given(vec![registered()])
            .when(totp_command(FactorFlow::EnableTotp {
                step: 5,
                recovery_codes: Vec::new(),
                at: at(1),
            }))
            .then_expect_error(UserError::NoTotpEnrollment);
        TestFramework::<User>::with(())
            .given(vec![registered(), enrolled()])
            .when(totp_command(FactorFlow::EnableTotp {
                step: 5,
                recovery_codes: vec!["r0".into(), "r1".into()],
                at: at(1),
            }))
            .then_expect_events(vec![enabled(5)]);
        TestFramework::<User>::with(())
            .given(vec![registered(), enrolled(), enabled(5)])
            .when(totp_command(FactorFlow::StartTotp {
                secret: crate::account::TotpSecret::new("X".into()),
                at: at(2),
            }))
            .then_expect_error(UserError::TotpAlreadyEnabled);
        let mut user = User::default();
        for event in [registered(), enrolled()] {
            user.apply(event);
        }
        assert!(!user.account.as_ref().unwrap().needs_second_factor());
        user.apply(enabled(5));
        assert!(user.account.unwrap().needs_second_factor());
    }

    #[test]
    fn a_code_is_accepted_once_and_only_forward_in_time() {
        let given = vec![registered(), enrolled(), enabled(5)];
        for step in [4, 5] {
            TestFramework::<User>::with(())
                .given(given.clone())
                .when(totp_command(FactorFlow::AcceptTotp { step, at: at(2) }))
                .then_expect_error(UserError::InvalidCode);
        }
        TestFramework::<User>::with(())
            .given(given)
            .when(totp_command(FactorFlow::AcceptTotp { step: 6, at: at(2) }))
            .then_expect_events(vec![UserEvent::TotpCodeAccepted(TotpCodeAccepted {
                at: at(2),
                step: 6,
            })]);
    }

    #[test]
    fn a_recovery_code_works_once_and_erasure_forgets_the_app() {
        let used = UserEvent::RecoveryCodeUsed(RecoveryCodeUsed {
            at: at(2),
            index: 1,
            remaining: 1,
        });
        TestFramework::<User>::with(())
            .given(vec![registered(), enrolled(), enabled(5)])
            .when(totp_command(FactorFlow::UseRecoveryCode {
                code_hash: "r1".into(),
                at: at(2),
            }))
            .then_expect_events(vec![used.clone()]);
        TestFramework::<User>::with(())
            .given(vec![registered(), enrolled(), enabled(5), used])
            .when(totp_command(FactorFlow::UseRecoveryCode {
                code_hash: "r1".into(),
                at: at(3),
            }))
            .then_expect_error(UserError::InvalidCode);
        let mut user = User::default();
        for event in [
            registered(),
            enrolled(),
            enabled(5),
            erased(3, UserStatus::Active),
        ] {
            user.apply(event);
        }
        assert_eq!(user.account.unwrap().totp, None);
    }

    fn passkey_id(n: u128) -> uuid::Uuid {
        uuid::Uuid::from_u128(n)
    }

    fn passkey_registered(n: u128) -> UserEvent {
        UserEvent::PasskeyRegistered(PasskeyRegistered {
            at: at(1),
            passkey_id: passkey_id(n),
            passkey_name: Some(crate::values::PasskeyName::parse("Laptop").unwrap()),
            credential: Some(crate::account::PasskeyCredential::new("{}".into())),
        })
    }

    fn use_passkey(n: u128, counter: u32) -> UserCommand {
        UserCommand::Factor(FactorFlow::UsePasskey {
            passkey_id: passkey_id(n),
            counter,
            credential: crate::account::PasskeyCredential::new("{}".into()),
            at: at(2),
        })
    }

    #[test]
    fn a_passkey_signs_only_with_a_counter_that_goes_up() {
        let used = |counter| {
            UserEvent::PasskeyUsed(PasskeyUsed {
                at: at(2),
                passkey_id: passkey_id(1),
                counter,
                credential: Some(crate::account::PasskeyCredential::new("{}".into())),
            })
        };
        TestFramework::<User>::with(())
            .given(vec![registered(), passkey_registered(1)])
            .when(use_passkey(1, 5))
            .then_expect_events(vec![used(5)]);
        for stale in [5, 4] {
            TestFramework::<User>::with(())
                .given(vec![registered(), passkey_registered(1), used(5)])
                .when(use_passkey(1, stale))
                .then_expect_error(UserError::InvalidCode);
        }
        TestFramework::<User>::with(())
            .given(vec![registered(), passkey_registered(1), used(0)])
            .when(use_passkey(1, 0))
            .then_expect_events(vec![used(0)]);
        TestFramework::<User>::with(())
            .given(vec![registered(), passkey_registered(1)])
            .when(use_passkey(2, 1))
            .then_expect_error(UserError::InvalidCode);
        TestFramework::<User>::with(())
            .given(vec![registered(), passkey_registered(1), used(5)])
            .when(UserCommand::Factor(FactorFlow::RefusePasskeyCounter {
                passkey_id: passkey_id(1),
                at: at(3),
            }))
            .then_expect_events(vec![UserEvent::PasskeyCounterRegressed(
                PasskeyCounterRegressed {
                    at: at(3),
                    passkey_id: passkey_id(1),
                    stored_counter: 5,
                },
            )]);
    }

    #[test]
    fn the_last_way_to_sign_in_stays() {
        let remove = |n| {
            UserCommand::Factor(FactorFlow::RemovePasskey {
                passkey_id: passkey_id(n),
                at: at(2),
            })
        };
        TestFramework::<User>::with(())
            .given(vec![registered(), passkey_registered(1)])
            .when(remove(1))
            .then_expect_events(vec![UserEvent::PasskeyRemoved(PasskeyRemoved {
                at: at(2),
                passkey_id: passkey_id(1),
            })]);
        TestFramework::<User>::with(())
            .given(vec![registered(), passkey_registered(1)])
            .when(remove(2))
            .then_expect_error(UserError::PasskeyNotFound);
        let UserEvent::UserRegistered(mut without_password) = registered() else {
            unreachable!()
        };
        without_password.password_hash = None;
        let without_password = UserEvent::UserRegistered(without_password);
        TestFramework::<User>::with(())
            .given(vec![without_password.clone(), passkey_registered(1)])
            .when(remove(1))
            .then_expect_error(UserError::LastWayToSignIn);
        TestFramework::<User>::with(())
            .given(vec![
                without_password,
                passkey_registered(1),
                passkey_registered(2),
            ])
            .when(remove(1))
            .then_expect_events(vec![UserEvent::PasskeyRemoved(PasskeyRemoved {
                at: at(2),
                passkey_id: passkey_id(1),
            })]);
    }

    #[test]
    fn an_account_holds_a_bounded_number_of_passkeys_and_erasure_forgets_them() {
        let full: Vec<UserEvent> = std::iter::once(registered())
            .chain((0..crate::policy::MAX_PASSKEYS as u128).map(passkey_registered))
            .collect();
        TestFramework::<User>::with(())
            .given(full.clone())
            .when(UserCommand::Factor(FactorFlow::RegisterPasskey {
                passkey_id: passkey_id(99),
                name: crate::values::PasskeyName::parse("One more").unwrap(),
                credential: crate::account::PasskeyCredential::new("{}".into()),
                at: at(2),
            }))
            .then_expect_error(UserError::TooManyPasskeys);
        let mut user = User::default();
        for event in full {
            user.apply(event);
        }
        user.apply(erased(21, UserStatus::Active));
        assert!(user.account.unwrap().passkeys.is_empty());
    }

    fn service_created() -> UserEvent {
        UserEvent::ServiceAccountCreated(ServiceAccountCreated {
            at: at(0),
            name: DisplayName::parse("billing").unwrap(),
            owner: uuid::Uuid::from_u128(7),
            roles: BTreeSet::from([Role::User]),
        })
    }

    fn issue(n: u128) -> UserCommand {
        UserCommand::Service(ServiceFlow::IssueSecret {
            secret_id: uuid::Uuid::from_u128(n),
            prefix: "acs_abcd".into(),
            hash: crate::account::ClientSecretHash::new(format!("{n:064x}")),
            expires_at: None,
            at: at(1),
        })
    }

    #[test]
    fn a_service_account_is_created_once_with_the_user_role_and_no_password() {
        TestFramework::<User>::with(())
            .given_no_previous_events()
            .when(UserCommand::CreateServiceAccount {
                name: DisplayName::parse("billing").unwrap(),
                owner: uuid::Uuid::from_u128(7),
                roles: BTreeSet::new(),
                at: at(0),
            })
            .then_expect_events(vec![service_created()]);
        TestFramework::<User>::with(())
            .given(vec![registered()])
            .when(UserCommand::CreateServiceAccount {
                name: DisplayName::parse("billing").unwrap(),
                owner: uuid::Uuid::from_u128(7),
                roles: BTreeSet::new(),
                at: at(0),
            })
            .then_expect_error(UserError::AlreadyRegistered);
        let mut user = User::default();
        user.apply(service_created());
        let account = user.account.unwrap();
        assert_eq!(account.password_hash, None);
        assert_eq!(account.ways_to_sign_in(), 0);
    }

    #[test]
    fn secrets_are_issued_to_service_accounts_only_and_revoked_once() {
        TestFramework::<User>::with(())
            .given(vec![registered()])
            .when(issue(1))
            .then_expect_error(UserError::NotAServiceAccount);
        let issued = |n: u128| {
            UserEvent::ClientSecretIssued(ClientSecretIssued {
                at: at(1),
                secret_id: uuid::Uuid::from_u128(n),
                prefix: "acs_abcd".into(),
                expires_at: None,
                secret_hash: Some(crate::account::ClientSecretHash::new(format!("{n:064x}"))),
            })
        };
        TestFramework::<User>::with(())
            .given(vec![service_created()])
            .when(issue(1))
            .then_expect_events(vec![issued(1)]);
        let full: Vec<UserEvent> = std::iter::once(service_created())
            .chain((0..crate::policy::MAX_LIVE_SECRETS as u128).map(issued))
            .collect();
        TestFramework::<User>::with(())
            .given(full)
            .when(issue(99))
            .then_expect_error(UserError::TooManySecrets);
        let revoke = |n| {
            UserCommand::Service(ServiceFlow::RevokeSecret {
                secret_id: uuid::Uuid::from_u128(n),
                at: at(2),
            })
        };
        let revoked = UserEvent::ClientSecretRevoked(ClientSecretRevoked {
            at: at(2),
            secret_id: uuid::Uuid::from_u128(1),
        });
        assert!(revoked.changes_sessions(), "its tokens are cut off");
        TestFramework::<User>::with(())
            .given(vec![service_created(), issued(1)])
            .when(revoke(1))
            .then_expect_events(vec![revoked.clone()]);
        TestFramework::<User>::with(())
            .given(vec![service_created(), issued(1), revoked])
            .when(revoke(1))
            .then_expect_events(vec![]);
        TestFramework::<User>::with(())
            .given(vec![service_created(), issued(1)])
            .when(revoke(2))
            .then_expect_error(UserError::SecretNotFound);
    }
}
