//! The one rule that spans accounts: the last active admin stays one.

use accountable_domain::{Account, Role, UserCommand, UserStatus};
use uuid::Uuid;

use super::context::CommandContext;
use super::error::{infrastructure, CommandError};
use super::{Executed, Users};

/// Serialises the changes that can remove an active admin, until the end
/// of the transaction; waiting longer than `lock_timeout` fails (55P03).
const LOCK_ADMINS: &str = "SELECT pg_advisory_xact_lock(hashtext('accountable.admins'))";
/// How long a change that may remove an admin waits for another.
const LOCK_ADMINS_TIMEOUT: &str = "SET LOCAL lock_timeout = '5s'";
impl Users {
    /// Runs a command that may take an active admin away, refusing it when
    /// that admin is the last. What needs no lock is checked first (the
    /// expected version; whether the user is an active admin at all, which
    /// most are not); the commands that remain run one at a time, under a
    /// transaction-scoped lock on a pooled connection that waits at most
    /// five seconds, and admins are counted from the event store, the truth.
    pub(super) async fn keeping_an_admin(
        &self,
        user_id: Uuid,
        command: UserCommand,
        expected_version: Option<i64>,
        ctx: &CommandContext,
    ) -> Result<Executed, CommandError> {
        let (context, current) = self.at_version(user_id, expected_version).await?;
        if !context.aggregate.account.as_ref().is_some_and(active_admin) {
            // At the version checked: should the user have become an admin
            // since, this is a conflict rather than an unguarded change.
            return self.execute(user_id, command, Some(current), ctx).await;
        }
        let mut connection = crate::db::for_transaction(&self.pool)
            .await
            .map_err(infrastructure)?;
        let mut lock = connection.begin().await.map_err(infrastructure)?;
        for statement in [LOCK_ADMINS_TIMEOUT, LOCK_ADMINS] {
            sqlx::query(statement)
                .execute(&mut *lock)
                .await
                .map_err(infrastructure)?;
        }
        let outcome = match self.last_admin(user_id).await {
            Ok(true) => Err(CommandError::LastAdmin),
            Ok(false) => self.execute(user_id, command, expected_version, ctx).await,
            Err(error) => Err(error),
        };
        if let Err(error) = lock.rollback().await {
            tracing::warn!(error = %error, "releasing the admin lock");
        }
        outcome
    }

    /// Whether `user_id` is an active admin and no other is.
    async fn last_admin(&self, user_id: Uuid) -> Result<bool, CommandError> {
        if !self.load(user_id).await?.as_ref().is_some_and(active_admin) {
            return Ok(false);
        }
        let candidates = crate::store::streams::ever_admins(&self.pool)
            .await
            .map_err(infrastructure)?;
        for candidate in candidates {
            let Ok(id) = Uuid::parse_str(&candidate) else {
                continue;
            };
            if id != user_id && self.load(id).await?.as_ref().is_some_and(active_admin) {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

fn active_admin(account: &Account) -> bool {
    account.status == UserStatus::Active && account.roles.contains(&Role::Admin)
}
