-- The `users` read table, built by the `users` projection from Kafka.
-- `version` is the sequence of the last event applied to the row: an event is
-- applied only when its sequence is `version + 1`.
CREATE TABLE users (
    id           uuid PRIMARY KEY,
    email        text        NOT NULL,
    display_name text        NOT NULL,
    status       text        NOT NULL,
    roles        text[]      NOT NULL,
    version      bigint      NOT NULL CHECK (version > 0),
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL
);

-- Per projection and partition: the next Kafka offset to apply, written in
-- the same transaction as the rows, so lag is visible and a restart can
-- tell what was already applied.
CREATE TABLE projection_checkpoints (
    projection  text        NOT NULL,
    topic       text        NOT NULL,
    partition   integer     NOT NULL,
    next_offset bigint      NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (projection, topic, partition)
);

-- Messages a projection could not read (malformed, or of a type it does not
-- know). Parked with their error so the worker goes on; replayable.
CREATE TABLE projection_dead_letters (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    projection text        NOT NULL,
    topic      text        NOT NULL,
    partition  integer     NOT NULL,
    "offset"   bigint      NOT NULL,
    key        bytea,
    payload    bytea,
    error      text        NOT NULL,
    failed_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (projection, topic, partition, "offset")
);
