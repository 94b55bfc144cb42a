-- Sessions end in the same transaction as the event that ends them, and no
-- refresh can outrun that end.
--
-- Every change to a user's sessions (a new session, a refresh, a logout,
-- the end of all sessions) runs under one transaction-scoped lock per user,
-- taken by `lock_user_sessions`. The event that ends sessions takes it too
-- (the trigger below), so a refresh either committed before it, and its new
-- token is revoked with the others, or runs after it, and finds the account
-- closed or its token revoked. (Two-key advisory locks do not share the key
-- space of the one-key locks used elsewhere.)

-- Whether the user's account is closed (deactivated, deleted, erased): no
-- session may start or be refreshed while it is.
ALTER TABLE user_token_cutoffs
    ADD COLUMN account_closed boolean NOT NULL DEFAULT false;

-- Accounts already closed when this migration runs.
INSERT INTO user_token_cutoffs (user_id, not_before, account_closed)
SELECT user_id, now(), true
  FROM (SELECT DISTINCT ON (aggregate_id) aggregate_id::uuid AS user_id, event_type
          FROM events
         WHERE aggregate_type = 'User'
           AND event_type IN ('UserDeactivated', 'UserReactivated', 'UserDeleted', 'UserErased')
         ORDER BY aggregate_id, sequence DESC) latest
 WHERE event_type <> 'UserReactivated'
ON CONFLICT (user_id) DO UPDATE SET account_closed = true;

-- Takes the user's session lock until the end of the transaction and
-- answers whether sessions may start or be refreshed. The answer is read
-- after the lock is granted (a statement of its own, so a fresh snapshot):
-- whatever ended sessions before has committed by then.
CREATE FUNCTION lock_user_sessions(who uuid) RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('accountable.sessions'), hashtext(who::text));
    RETURN NOT coalesce(
        (SELECT account_closed FROM user_token_cutoffs WHERE user_id = who), false);
END
$$;

-- Ends every session of the user: refresh tokens revoked, access tokens
-- issued before `at` refused; `closed` (when not NULL) opens or closes the
-- account for new sessions.
CREATE FUNCTION end_user_sessions(who uuid, at timestamptz, why text, closed boolean)
RETURNS void LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM lock_user_sessions(who);
    INSERT INTO user_token_cutoffs (user_id, not_before, account_closed)
    VALUES (who, at, coalesce(closed, false))
    ON CONFLICT (user_id) DO UPDATE
        SET not_before = GREATEST(user_token_cutoffs.not_before, EXCLUDED.not_before),
            account_closed = coalesce(closed, user_token_cutoffs.account_closed);
    UPDATE refresh_tokens SET revoked_at = at, revoked_reason = why
     WHERE user_id = who AND revoked_at IS NULL;
END
$$;

-- The events that end sessions, and reactivation, which opens the account
-- again (without reviving any session).
CREATE FUNCTION events_end_sessions() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    who uuid := NEW.aggregate_id::uuid;
BEGIN
    IF NEW.event_type = 'UserReactivated' THEN
        PERFORM lock_user_sessions(who);
        UPDATE user_token_cutoffs SET account_closed = false WHERE user_id = who;
        RETURN NULL;
    END IF;
    PERFORM end_user_sessions(
        who,
        clock_timestamp(),
        CASE NEW.event_type
            WHEN 'PasswordChanged' THEN 'password-change'
            WHEN 'RoleRevoked' THEN 'role-revoked'
            WHEN 'UserDeactivated' THEN 'deactivated'
            WHEN 'UserDeleted' THEN 'deleted'
            ELSE 'erased'
        END,
        CASE WHEN NEW.event_type IN ('UserDeactivated', 'UserDeleted', 'UserErased')
             THEN true END);
    RETURN NULL;
END
$$;

CREATE TRIGGER events_end_sessions
    AFTER INSERT ON events
    FOR EACH ROW
    WHEN (NEW.aggregate_type = 'User' AND NEW.event_type IN (
        'PasswordChanged', 'RoleRevoked', 'UserDeactivated', 'UserReactivated',
        'UserDeleted', 'UserErased'))
    EXECUTE FUNCTION events_end_sessions();

-- A cutoff is announced only when it moves or the account opens or closes.
DROP TRIGGER user_token_cutoffs_notify ON user_token_cutoffs;
CREATE TRIGGER user_token_cutoffs_notify
    AFTER INSERT OR DELETE ON user_token_cutoffs
    FOR EACH ROW EXECUTE FUNCTION notify_token_cutoff();
CREATE TRIGGER user_token_cutoffs_update_notify
    AFTER UPDATE ON user_token_cutoffs
    FOR EACH ROW
    WHEN (OLD.not_before IS DISTINCT FROM NEW.not_before
          OR OLD.account_closed IS DISTINCT FROM NEW.account_closed)
    EXECUTE FUNCTION notify_token_cutoff();
