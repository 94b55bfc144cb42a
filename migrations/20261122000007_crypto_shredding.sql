-- Crypto-shredding. Personal fields of events are sealed with a data key of
-- their user; the key is kept here wrapped by the master key (which never
-- enters the database). Destroying the wrapped key makes every stored and
-- published copy of the user's personal fields unreadable for good.
CREATE TABLE user_data_keys (
    key_id       uuid PRIMARY KEY,
    user_id      uuid        NOT NULL UNIQUE,
    -- nonce ‖ AES-256-GCM(master-derived key, data key); NULL once destroyed.
    wrapped      bytea,
    created_at   timestamptz NOT NULL DEFAULT now(),
    destroyed_at timestamptz,
    CHECK ((wrapped IS NULL) = (destroyed_at IS NOT NULL))
);

-- A one-way value derived from the master key the database was first used
-- with: a process holding another key refuses to start.
CREATE TABLE vault_settings (
    id               boolean PRIMARY KEY DEFAULT true CHECK (id),
    master_key_check bytea NOT NULL
);

-- One-time data migrations that need the master key (done by the service).
CREATE TABLE vault_migrations (
    name    text PRIMARY KEY,
    done_at timestamptz NOT NULL DEFAULT now()
);

-- Erasure commits with its event or not at all: the same transaction that
-- appends `UserErased` destroys the user's data key (recording that it was
-- destroyed, even for a user who never had one) and frees their address.
CREATE FUNCTION erase_user_data() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO user_data_keys (key_id, user_id, wrapped, destroyed_at)
    VALUES (gen_random_uuid(), NEW.aggregate_id::uuid, NULL, now())
    ON CONFLICT (user_id) DO UPDATE
        SET wrapped = NULL,
            destroyed_at = coalesce(user_data_keys.destroyed_at, now());
    DELETE FROM user_emails WHERE user_id = NEW.aggregate_id::uuid;
    RETURN NULL;
END
$$;

CREATE TRIGGER events_erase_user_data
    AFTER INSERT ON events
    FOR EACH ROW
    WHEN (NEW.aggregate_type = 'User' AND NEW.event_type = 'UserErased')
    EXECUTE FUNCTION erase_user_data();

-- The read side keeps no personal data of an erased user.
ALTER TABLE users
    ALTER COLUMN email DROP NOT NULL,
    ALTER COLUMN display_name DROP NOT NULL;
