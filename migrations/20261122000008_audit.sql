-- Tamper evidence. Every event carries the SHA-256 hash of a canonical
-- encoding of itself and of the previous event's hash in its user's stream
-- (`event_hash` below; the service recomputes it independently to verify).
-- The heads of all streams are sealed at intervals in signed checkpoints.
ALTER TABLE events ADD COLUMN prev_hash bytea, ADD COLUMN hash bytea;

-- The canonical encoding, one field a line: a version tag, the stream, the
-- sequence, type and version, the global position, the recording time in
-- microseconds since the epoch, the hex SHA-256 of the payload's and of the
-- metadata's stored text (for sealed fields: the ciphertext, so erasure
-- never breaks a chain), and the previous hash in hex (empty for the first).
CREATE FUNCTION event_hash(e events, prev bytea) RETURNS bytea
LANGUAGE sql STABLE AS $$
    SELECT sha256(convert_to(concat_ws(E'\n',
        'accountable.event.v1',
        e.aggregate_type,
        e.aggregate_id,
        e.sequence::text,
        e.event_type,
        e.event_version,
        e.position::text,
        ((extract(epoch FROM e.recorded_at) * 1000000)::bigint)::text,
        encode(sha256(convert_to(e.payload::text, 'UTF8')), 'hex'),
        encode(sha256(convert_to(e.metadata::text, 'UTF8')), 'hex'),
        coalesce(encode(prev, 'hex'), '')), 'UTF8'))
$$;

-- Chains every appended event to the one before it in its stream (earlier
-- rows of the same statement are visible here).
CREATE FUNCTION chain_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.prev_hash := NULL;
    IF NEW.sequence > 1 THEN
        SELECT hash INTO NEW.prev_hash FROM events
         WHERE aggregate_type = NEW.aggregate_type
           AND aggregate_id = NEW.aggregate_id
           AND sequence = NEW.sequence - 1;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'event % of %/% follows no event',
                NEW.sequence, NEW.aggregate_type, NEW.aggregate_id;
        END IF;
    END IF;
    NEW.hash := event_hash(NEW, NEW.prev_hash);
    RETURN NEW;
END
$$;

-- Recomputes one stream's chain: for the one-time sealing of data that
-- earlier versions stored in clear, which rewrites payloads before any
-- checkpoint covers them.
CREATE FUNCTION rechain_stream(stream_type text, stream_id text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    e events;
    prev bytea := NULL;
BEGIN
    FOR e IN SELECT * FROM events
              WHERE aggregate_type = stream_type AND aggregate_id = stream_id
              ORDER BY sequence
    LOOP
        UPDATE events SET prev_hash = prev, hash = event_hash(e, prev)
         WHERE aggregate_type = e.aggregate_type
           AND aggregate_id = e.aggregate_id
           AND sequence = e.sequence
        RETURNING hash INTO prev;
    END LOOP;
END
$$;

DO $$
DECLARE
    stream record;
BEGIN
    FOR stream IN SELECT DISTINCT aggregate_type, aggregate_id FROM events LOOP
        PERFORM rechain_stream(stream.aggregate_type, stream.aggregate_id);
    END LOOP;
END
$$;

ALTER TABLE events ALTER COLUMN hash SET NOT NULL;

CREATE TRIGGER events_chain
    BEFORE INSERT ON events
    FOR EACH ROW EXECUTE FUNCTION chain_event();

-- The audit stream is read in commit order, (transaction_id, position),
-- like the relay, so that a keyset page never skips an event whose
-- transaction committed late; each filter has its index in that order.
CREATE INDEX events_type_order_idx ON events (event_type, transaction_id, position);
CREATE INDEX events_actor_order_idx ON events ((metadata ->> 'actor'), transaction_id, position);
CREATE INDEX events_stream_order_idx ON events (aggregate_id, transaction_id, position);
CREATE INDEX events_recorded_at_idx ON events (recorded_at);

-- Signed checkpoints: checkpoint N covers every event whose transaction id
-- is below `xid_bound` (all of them committed before it was made). It lists
-- the heads of the streams that moved since checkpoint N-1; its signature
-- (Ed25519, a key of `signing_keys`) covers its number, bound, the digest of
-- the heads of all streams, and the previous checkpoint's signature.
CREATE TABLE audit_checkpoints (
    id                 bigint PRIMARY KEY CHECK (id > 0),
    created_at         timestamptz NOT NULL DEFAULT now(),
    xid_bound          xid8        NOT NULL,
    streams            bigint      NOT NULL,
    heads_digest       bytea       NOT NULL,
    previous_signature text,
    kid                text        NOT NULL,
    -- base64url, as JWS signatures are written
    signature          text        NOT NULL
);

CREATE TABLE audit_checkpoint_heads (
    checkpoint_id  bigint NOT NULL REFERENCES audit_checkpoints (id),
    aggregate_type text   NOT NULL,
    aggregate_id   text   NOT NULL,
    sequence       bigint NOT NULL,
    hash           bytea  NOT NULL,
    PRIMARY KEY (checkpoint_id, aggregate_type, aggregate_id)
);
