-- A broker can lose what it acknowledged (an in-memory broker restarted, a
-- topic deleted). The relay keeps the last offset Kafka acknowledged on each
-- partition; a later acknowledgement at or below it, or a partition whose
-- end is below it, means the topic lost messages. The relay then publishes
-- the whole store again under the next generation, which every message
-- carries (`generation`, `ce_generation`).
ALTER TABLE relay_cursors ADD COLUMN generation bigint NOT NULL DEFAULT 1;

CREATE TABLE relay_partitions (
    name        text    NOT NULL REFERENCES relay_cursors (name) ON DELETE CASCADE,
    partition   integer NOT NULL,
    last_offset bigint  NOT NULL,
    PRIMARY KEY (name, partition)
);

-- The generation of the messages a projection's offsets refer to: a message
-- of a later generation means the topic was written anew, and the
-- projection reads the partition again from its start.
ALTER TABLE projection_checkpoints ADD COLUMN generation bigint NOT NULL DEFAULT 1;
