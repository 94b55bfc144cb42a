-- The service accounts, for admins to page through: kept by the event that
-- creates each, in its own transaction (the name is no personal data and
-- is stored in clear in that event).
CREATE TABLE service_accounts (
    id         uuid PRIMARY KEY,
    name       text        NOT NULL,
    owner      uuid        NOT NULL,
    created_at timestamptz NOT NULL
);

CREATE FUNCTION events_list_service_accounts() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO service_accounts (id, name, owner, created_at)
    VALUES (NEW.aggregate_id::uuid,
            NEW.payload -> 'ServiceAccountCreated' ->> 'name',
            (NEW.payload -> 'ServiceAccountCreated' ->> 'owner')::uuid,
            (NEW.payload -> 'ServiceAccountCreated' ->> 'at')::timestamptz)
    ON CONFLICT (id) DO NOTHING;
    RETURN NULL;
END
$$;

CREATE TRIGGER events_list_service_accounts
    AFTER INSERT ON events
    FOR EACH ROW
    WHEN (NEW.aggregate_type = 'User' AND NEW.event_type = 'ServiceAccountCreated')
    EXECUTE FUNCTION events_list_service_accounts();

-- A revoked client secret cuts off every access token its service account
-- holds, as a new password does a person's, in the event's transaction.
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
            WHEN 'ClientSecretRevoked' THEN 'secret-revoked'
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
        'UserReactivated', 'UserDeleted', 'UserErased', 'ClientSecretRevoked'))
    EXECUTE FUNCTION events_end_sessions();
