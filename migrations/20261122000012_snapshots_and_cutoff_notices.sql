-- Snapshots of aggregates, so that a command reads one row and the few
-- events after it instead of its user's whole history. A snapshot holds
-- the aggregate's state, personal data included, so it is stored sealed
-- whole under its user's data key (`{"snapshot": <sealed>}`), bound to its
-- user and sequence. Snapshots are a cache of the events: any row may be
-- deleted at any time, and the next command writes it again.
DROP TABLE snapshots;
CREATE TABLE snapshots (
    aggregate_type text   NOT NULL,
    aggregate_id   text   NOT NULL,
    -- The sequence of the last event folded into the snapshot.
    last_sequence  bigint NOT NULL CHECK (last_sequence > 0),
    payload        jsonb  NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id)
);

-- Erasure also drops the user's snapshot in the same transaction (its
-- ciphertext would no longer open anyway once the key is destroyed).
CREATE OR REPLACE FUNCTION erase_user_data() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO user_data_keys (key_id, user_id, wrapped, destroyed_at)
    VALUES (gen_random_uuid(), NEW.aggregate_id::uuid, NULL, now())
    ON CONFLICT (user_id) DO UPDATE
        SET wrapped = NULL,
            destroyed_at = coalesce(user_data_keys.destroyed_at, now());
    DELETE FROM user_emails WHERE user_id = NEW.aggregate_id::uuid;
    DELETE FROM snapshots
     WHERE aggregate_type = NEW.aggregate_type AND aggregate_id = NEW.aggregate_id;
    RETURN NULL;
END
$$;

-- Every change of a user's token cutoff is announced, so that API processes
-- may remember cutoffs and forget one the moment it changes.
CREATE FUNCTION notify_token_cutoff() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- A statement trigger (TRUNCATE) has no row: '*' forgets every cutoff.
    PERFORM pg_notify('token_cutoffs', coalesce(NEW.user_id::text, OLD.user_id::text, '*'));
    RETURN NULL;
END
$$;

CREATE TRIGGER user_token_cutoffs_notify
    AFTER INSERT OR UPDATE OR DELETE ON user_token_cutoffs
    FOR EACH ROW EXECUTE FUNCTION notify_token_cutoff();

CREATE TRIGGER user_token_cutoffs_truncate_notify
    AFTER TRUNCATE ON user_token_cutoffs
    FOR EACH STATEMENT EXECUTE FUNCTION notify_token_cutoff();

-- The state publisher looks for rows whose state the topic lacks after
-- every projected batch: an index of those alone, not a scan of the table.
-- (Named as PostgreSQL names the copy a rebuild makes, `users_rebuild_id_idx`,
-- so that the rebuild's rename gives this name back.)
CREATE INDEX users_id_idx ON users (id)
    WHERE state_version IS DISTINCT FROM version;
