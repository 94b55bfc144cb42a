-- Where each relay has published up to: the (transaction_id, position) of the
-- last event Kafka acknowledged. Moved only after the acknowledgement.
CREATE TABLE relay_cursors (
    name           text PRIMARY KEY,
    transaction_id xid8        NOT NULL DEFAULT '0'::xid8,
    position       bigint      NOT NULL DEFAULT 0,
    published      bigint      NOT NULL DEFAULT 0,
    updated_at     timestamptz NOT NULL DEFAULT now()
);
