-- Which account holds each passkey: a credential id belongs to one account.
-- The key is the hex SHA-256 of the credential id. A registration claims
-- it before its event is written; the primary key makes two claims
-- race-free (one wins). A claim whose event never came (a crash between
-- the two) stays with its user, who may register that passkey again.
CREATE TABLE passkey_credentials (
    credential_key text PRIMARY KEY,
    user_id        uuid        NOT NULL,
    passkey_id     uuid        NOT NULL,
    claimed_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX passkey_credentials_user ON passkey_credentials (user_id);

-- A WebAuthn ceremony between its begin and its finish: the library's
-- state (its challenge), taken once, within minutes. A sign-in's second
-- step also names the login challenge it completes.
CREATE TABLE passkey_ceremonies (
    id              uuid PRIMARY KEY,
    purpose         text        NOT NULL,
    user_id         uuid,
    login_challenge uuid,
    state           jsonb       NOT NULL,
    expires_at      timestamptz NOT NULL
);
CREATE INDEX passkey_ceremonies_expiry ON passkey_ceremonies (expires_at);

-- A removed passkey frees its credential, and an erased user every one of
-- theirs, in the event's own transaction.
CREATE FUNCTION events_release_passkeys() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.event_type = 'UserErased' THEN
        DELETE FROM passkey_credentials WHERE user_id = NEW.aggregate_id::uuid;
        DELETE FROM passkey_ceremonies WHERE user_id = NEW.aggregate_id::uuid;
    ELSE
        DELETE FROM passkey_credentials
         WHERE user_id = NEW.aggregate_id::uuid
           AND passkey_id = (NEW.payload -> 'PasskeyRemoved' ->> 'passkey_id')::uuid;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER events_release_passkeys
    AFTER INSERT ON events
    FOR EACH ROW
    WHEN (NEW.aggregate_type = 'User' AND NEW.event_type IN ('UserErased', 'PasskeyRemoved'))
    EXECUTE FUNCTION events_release_passkeys();
