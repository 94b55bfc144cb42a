-- Verified addresses, password resets and confirmed email changes, and the
-- mail they send.

-- Whether the owner proved the address. Accounts from before verification
-- existed count as verified: they signed up under rules that did not ask.
ALTER TABLE users ADD COLUMN email_verified boolean NOT NULL DEFAULT true;
ALTER TABLE users ALTER COLUMN email_verified DROP DEFAULT;

-- Where each mailer has read the event store up to, in commit order (like
-- `relay_cursors`). Moved in the same transaction as the deliveries it found.
CREATE TABLE mailer_cursors (
    name           text PRIMARY KEY,
    transaction_id xid8        NOT NULL DEFAULT '0'::xid8,
    position       bigint      NOT NULL DEFAULT 0,
    updated_at     timestamptz NOT NULL DEFAULT now()
);

-- One row per message an event calls for (an email change calls for two:
-- the link to the new address and a notice to the old one). The message is
-- made from the event at each attempt; nothing of it is kept here.
--   due      waiting for its next attempt;
--   sent     the mail server took it;
--   parked   it failed every attempt (`last_error` says why); retryable;
--   dropped  nobody to send it to any more (the user was erased).
CREATE TABLE mail_deliveries (
    user_id         uuid        NOT NULL,
    sequence        bigint      NOT NULL,
    kind            text        NOT NULL,
    position        bigint      NOT NULL,
    state           text        NOT NULL DEFAULT 'due'
                    CHECK (state IN ('due', 'sent', 'parked', 'dropped')),
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    sent_at         timestamptz,
    PRIMARY KEY (user_id, sequence, kind)
);
CREATE INDEX mail_deliveries_due ON mail_deliveries (next_attempt_at) WHERE state = 'due';
CREATE INDEX mail_deliveries_parked ON mail_deliveries (created_at) WHERE state = 'parked';

-- The signal a mailer waits on when a delivery is due sooner than it looks.
CREATE FUNCTION notify_mail_due() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('accountable_mail', '');
    RETURN NULL;
END
$$;
CREATE TRIGGER mail_deliveries_notify
    AFTER INSERT OR UPDATE OF state ON mail_deliveries
    FOR EACH STATEMENT EXECUTE FUNCTION notify_mail_due();

-- A password reset ends every session, like a password change.
CREATE OR REPLACE FUNCTION events_end_sessions() RETURNS trigger
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
            WHEN 'PasswordReset' THEN 'password-reset'
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

DROP TRIGGER events_end_sessions ON events;
CREATE TRIGGER events_end_sessions
    AFTER INSERT ON events
    FOR EACH ROW
    WHEN (NEW.aggregate_type = 'User' AND NEW.event_type IN (
        'PasswordChanged', 'PasswordReset', 'RoleRevoked', 'UserDeactivated',
        'UserReactivated', 'UserDeleted', 'UserErased'))
    EXECUTE FUNCTION events_end_sessions();
